//! The incident record: what the store persists and the engine rewrites.
//!
//! An [`Incident`] is plain data (serde both ways). Its size does not grow with its history:
//! fault events are counted ([`Incident::occurrences`]) and their details kept in a bounded
//! ring ([`Occurrences`]: the first, and the most recent [`Occurrences::RECENT`]); raise/clear
//! cycles are kept only inside the flapping window; and the audit trail is numbered by
//! [`Incident::audit_len`] but stored apart, appended record by record, so a change costs
//! the same on the first event and on the thousandth. [`Incident::audit`] holds the records
//! loaded with it: the whole trail when the store shows an incident, only a change's new
//! records after a transition on an incident loaded without its trail.
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use vigia_protocol::{
    DeviceId, Evidence, FaultAction, FaultKind, OpenFault, Reading, Severity, Urgency,
};

use super::time::{Dur, Millis};

/// Incident number, unique per collector.
pub type IncidentNo = u64;

/// Where an incident is in the workflow (`docs/design.md`, "The workflow").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Just recorded (000 step 1).
    Registered,
    /// Checking that the information needed is there (000 step 2).
    Validating,
    /// Waiting for the user to answer a question; SLA clocks paused.
    NeedsInfo,
    /// Checking that the problem is real (000 step 3).
    Verifying,
    /// Classified by the triage rules or a person (001 activity 2, 004 step 3).
    Diagnosed,
    /// With the service desk (001 level 1).
    Level1,
    /// With on-site support, a specialist or a provider (001 level 2).
    Level2,
    /// With a provider or a specialist (001 level 3).
    Level3,
    /// Waiting for a provider's service (000 step 5, 003); SLA clocks paused.
    WaitingProvider,
    /// Solved, waiting for definitive closure by the service desk (001 activity 11).
    Resolved,
    /// Closed; see [`Incident::closure`].
    Closed,
    /// Not definitively closed: on its way back to level 1 (001 activity 11).
    Reopened,
}

impl State {
    /// Every state, in workflow order.
    pub const ALL: [State; 12] = [
        Self::Registered,
        Self::Validating,
        Self::NeedsInfo,
        Self::Verifying,
        Self::Diagnosed,
        Self::Level1,
        Self::Level2,
        Self::Level3,
        Self::WaitingProvider,
        Self::Resolved,
        Self::Closed,
        Self::Reopened,
    ];

    /// The name used in the API, the audit trail and `IncidentState` commands.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::Validating => "validating",
            Self::NeedsInfo => "needs_info",
            Self::Verifying => "verifying",
            Self::Diagnosed => "diagnosed",
            Self::Level1 => "level1",
            Self::Level2 => "level2",
            Self::Level3 => "level3",
            Self::WaitingProvider => "waiting_provider",
            Self::Resolved => "resolved",
            Self::Closed => "closed",
            Self::Reopened => "reopened",
        }
    }

    /// The level this state works at, if it is one of the three level states.
    pub fn level(self) -> Option<Level> {
        match self {
            Self::Level1 => Some(Level::L1),
            Self::Level2 => Some(Level::L2),
            Self::Level3 => Some(Level::L3),
            _ => None,
        }
    }

    /// Whether the SLA clocks stand still in this state: waiting for the user or a provider,
    /// or no longer being worked on.
    pub fn sla_paused(self) -> bool {
        matches!(
            self,
            Self::NeedsInfo | Self::WaitingProvider | Self::Resolved | Self::Closed
        )
    }

    /// Not closed.
    pub fn is_open(self) -> bool {
        self != Self::Closed
    }
}

/// A name that is not one of the enum's names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {name:?}; expected one of: {expected}")]
pub struct UnknownName {
    what: &'static str,
    name: String,
    expected: &'static str,
}

impl UnknownName {
    pub(crate) fn new(what: &'static str, name: impl Into<String>, expected: &'static str) -> Self {
        Self {
            what,
            name: name.into(),
            expected,
        }
    }
}

impl FromStr for State {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "state",
                name: s.to_owned(),
                expected: "registered, validating, needs_info, verifying, diagnosed, level1, \
                           level2, level3, waiting_provider, resolved, closed, reopened",
            })
    }
}

impl FromStr for Level {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim_start_matches(['L', 'l']) {
            "1" => Ok(Self::L1),
            "2" => Ok(Self::L2),
            "3" => Ok(Self::L3),
            _ => Err(UnknownName {
                what: "level",
                name: s.to_owned(),
                expected: "1, 2, 3",
            }),
        }
    }
}

impl FromStr for Priority {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownName {
                what: "priority",
                name: s.to_owned(),
                expected: "P1, P2, P3, P4",
            })
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Support level (001): 1 service desk, 2 on-site / specialist / provider, 3 provider /
/// specialist. Serialized as the number 1, 2 or 3; anything else does not deserialize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum Level {
    /// Service desk, remote.
    L1,
    /// On-site support, specialist or provider.
    L2,
    /// Provider or specialist.
    L3,
}

impl Level {
    /// The level's number.
    pub fn number(self) -> u8 {
        match self {
            Self::L1 => 1,
            Self::L2 => 2,
            Self::L3 => 3,
        }
    }

    /// The next level up, if any.
    pub fn up(self) -> Option<Level> {
        match self {
            Self::L1 => Some(Self::L2),
            Self::L2 => Some(Self::L3),
            Self::L3 => None,
        }
    }

    /// The state that works at this level.
    pub fn state(self) -> State {
        match self {
            Self::L1 => State::Level1,
            Self::L2 => State::Level2,
            Self::L3 => State::Level3,
        }
    }
}

impl From<Level> for u8 {
    fn from(l: Level) -> u8 {
        l.number()
    }
}

impl TryFrom<u8> for Level {
    type Error = String;
    fn try_from(n: u8) -> Result<Self, Self::Error> {
        match n {
            1 => Ok(Self::L1),
            2 => Ok(Self::L2),
            3 => Ok(Self::L3),
            _ => Err(format!("level must be 1, 2 or 3, not {n}")),
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

/// Priority from the impact × urgency matrix; P1 is the most urgent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Priority {
    /// Critical.
    P1,
    /// High.
    P2,
    /// Medium.
    P3,
    /// Low.
    P4,
}

impl Priority {
    /// Every priority, most urgent first.
    pub const ALL: [Priority; 4] = [Self::P1, Self::P2, Self::P3, Self::P4];

    /// "P1".."P4".
    pub fn as_str(self) -> &'static str {
        match self {
            Self::P1 => "P1",
            Self::P2 => "P2",
            Self::P3 => "P3",
            Self::P4 => "P4",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much of the organisation a problem affects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Impact {
    /// One person, with a workaround.
    Low,
    /// One person without a workaround, or a team with one.
    Medium,
    /// A team, a site or a critical service.
    High,
}

impl Impact {
    /// The wire / config name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

/// The specialised paths of 004 activity 4.2, for work beyond a first-level fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpecialisedPath {
    /// "Desarrollo de software".
    SoftwareDevelopment,
    /// "Adquisición de hardware y software".
    Acquisition,
    /// "Ajustes a aplicaciones existentes".
    ApplicationChange,
}

impl SpecialisedPath {
    /// The wire / config name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SoftwareDevelopment => "software_development",
            Self::Acquisition => "acquisition",
            Self::ApplicationChange => "application_change",
        }
    }
}

/// What an incident came from.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Origin {
    /// A fault the agent detected.
    Fault {
        /// Which fault.
        kind: FaultKind,
        /// What it concerns (mount point, disk serial, sensor, interface).
        subject: String,
        /// Severity when opened (raised by later updates; see [`Incident::worst_severity`]).
        severity: Severity,
        /// The reading behind it when opened.
        evidence: Evidence,
        /// The agent's one-line summary.
        message: String,
    },
    /// A person reported a problem with `vigia-agent report`.
    Report {
        /// The agent's local report number.
        report_id: u64,
        /// Category the user chose.
        category: String,
        /// One-line summary.
        summary: String,
        /// Free text.
        text: String,
        /// Who reported.
        reporter: String,
        /// How to reach them.
        contact: String,
        /// How urgent they say it is.
        urgency: Urgency,
        /// The device's readings at report time.
        snapshot: Vec<Reading>,
        /// Faults open on the device at report time.
        open_faults: Vec<OpenFault>,
    },
    /// A service asked of a provider with no incident behind it (003 item 2): planned
    /// maintenance, or work on something no agent watches, such as the network. Staff
    /// register it with its request, so it starts waiting for the provider.
    Service {
        /// What the work is, in one line.
        summary: String,
        /// What is needed (tools, parts, service) and any detail.
        #[serde(default)]
        text: String,
        /// Who asked for it (an account's login).
        requester: String,
    },
}

impl Origin {
    /// Whether this is an agent-detected fault.
    pub fn is_fault(&self) -> bool {
        matches!(self, Self::Fault { .. })
    }

    /// A one-line description for lists and exports.
    pub fn description(&self) -> String {
        match self {
            Self::Fault {
                kind,
                subject,
                message,
                ..
            } => {
                if message.is_empty() {
                    format!("{kind} on {subject}")
                } else {
                    message.clone()
                }
            }
            Self::Report { summary, text, .. } | Self::Service { summary, text, .. } => {
                if summary.is_empty() {
                    text.chars().take(120).collect()
                } else {
                    summary.clone()
                }
            }
        }
    }

    /// Who asked for the service: the reporter, or "agent" for detected faults.
    pub fn requester(&self) -> &str {
        match self {
            Self::Fault { .. } => "agent",
            Self::Report { reporter, .. } => reporter,
            Self::Service { requester, .. } => requester,
        }
    }
}

/// A role a person plays; the service desk alone closes incidents definitively (001).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// "Mesa de servicio": single point of contact, level 1, definitive closure.
    ServiceDesk,
    /// "Soporte en sitio": level 2.
    OnSite,
    /// "Especialista": levels 2 and 3.
    Specialist,
    /// "Proveedor": levels 2 and 3.
    Provider,
    /// The coordinator who talks to contractors (003) and owns the platforms (000 step 6).
    Coordinator,
}

/// Someone acting on an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// Login or name.
    pub name: String,
    /// What they may do.
    #[serde(default)]
    pub roles: BTreeSet<Role>,
}

impl Person {
    /// A person with the given roles.
    pub fn new(name: impl Into<String>, roles: impl IntoIterator<Item = Role>) -> Self {
        Self {
            name: name.into(),
            roles: roles.into_iter().collect(),
        }
    }

    /// Whether they have `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Actor {
    /// A person, through the API or CLI.
    Person(Person),
    /// A device, through an event.
    Device {
        /// Which one.
        device: DeviceId,
    },
    /// The collector itself (timers, triage, correlation).
    System,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Person(p) => f.write_str(&p.name),
            Self::Device { device } => write!(f, "device {device}"),
            Self::System => f.write_str("system"),
        }
    }
}

/// One field that changed, old and new values rendered as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    /// Field name.
    pub field: String,
    /// Value before (empty when it had none).
    pub from: String,
    /// Value after.
    pub to: String,
}

/// One entry of the audit trail: who, when, from → to, what, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the incident's trail, from 0.
    pub seq: u32,
    /// When.
    pub at: Millis,
    /// Who.
    pub actor: Actor,
    /// State before.
    pub from: State,
    /// State after (equal to `from` when only fields changed).
    pub to: State,
    /// What was done ("validate", "escalate", "fault_cleared"...).
    pub action: String,
    /// Why, in words.
    pub why: String,
    /// Fields that changed, with their old and new values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
}

/// How the incident was classified (001 activity 2, 004 steps 3-4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classification {
    /// Service category ("hardware/storage").
    pub category: String,
    /// Impact.
    pub impact: Impact,
    /// Urgency.
    pub urgency: Urgency,
    /// Priority from the matrix (or set by hand).
    pub priority: Priority,
    /// Level it starts at.
    pub level: Level,
    /// Group that works it.
    pub group: String,
    /// Physical and logical resources needed (000 step 4).
    pub resources: Vec<String>,
    /// The specialised path, when a first-level fix is not enough (004 4.2).
    pub path: Option<SpecialisedPath>,
    /// The triage rule that matched, or "manual".
    pub rule: String,
}

/// Why an incident was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClosureReason {
    /// Resolved, and closed definitively by the service desk.
    Resolved,
    /// Resolved, and closed by the quiet-period timer.
    AutoClosed,
    /// An agent fault that cleared within the verification window.
    Transient,
    /// A report IT could not reproduce (000 step 3).
    NotReproduced,
}

impl ClosureReason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Resolved => "resolved",
            Self::AutoClosed => "auto_closed",
            Self::Transient => "transient",
            Self::NotReproduced => "not_reproduced",
        }
    }
}

/// The closing of an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closure {
    /// When.
    pub at: Millis,
    /// Why.
    pub reason: ClosureReason,
}

/// A note on the incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// When.
    pub at: Millis,
    /// Who.
    pub author: String,
    /// What.
    pub text: String,
}

/// A question sent to the user (000 step 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfoRequest {
    /// When it was asked.
    pub asked_at: Millis,
    /// The question.
    pub question: String,
    /// The report fields it asks for (empty for a free question).
    pub fields: Vec<String>,
    /// The answer, once it arrives.
    pub answer: Option<String>,
    /// When the answer arrived.
    pub answered_at: Option<Millis>,
    /// When the user was reminded of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminded_at: Option<Millis>,
}

/// The SLA clocks. Time counts only while the incident is not paused
/// ([`State::sla_paused`]); everything is measured as "active" milliseconds since
/// `started_at`, so a deadline is `started_at + paused_ms + target` while running.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaClock {
    /// When the clocks started (registration).
    pub started_at: Millis,
    /// Paused time accumulated so far, excluding a pause still running.
    pub paused_ms: u64,
    /// Since when the clocks are paused, if they are.
    pub paused_since: Option<Millis>,
    /// First response by a person.
    pub responded_at: Option<Millis>,
    /// When the response target was breached.
    pub response_breached_at: Option<Millis>,
    /// When the resolution target was breached.
    pub resolution_breached_at: Option<Millis>,
    /// Active time at which the current level's budget started.
    pub level_started_active: u64,
    /// Whether the current level's budget expiry was already acted on at level 3
    /// (escalation from level 3 notifies once per stay).
    pub level_budget_notified: bool,
}

/// Device facts the collector knows when it opens an incident.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceContext {
    /// Tags from the agent's birth message (site, role...), used by triage rules.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The asset's warranty, if the inventory knows one.
    #[serde(default)]
    pub warranty: Option<Warranty>,
}

/// An asset's warranty (004 4.4: "en caso de garantías comunicarse con el proveedor").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warranty {
    /// Who honours it.
    pub provider: String,
    /// Until when.
    pub until: Millis,
}

/// A support incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Number.
    pub number: IncidentNo,
    /// The device it concerns; none for a service asked of a provider on its own about
    /// something no agent watches (the network, a UPS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceId>,
    /// What it came from.
    pub origin: Origin,
    /// Device facts at opening.
    #[serde(default)]
    pub context: DeviceContext,
    /// Where it is.
    pub state: State,
    /// The level working it (or that last worked it).
    pub level: Level,
    /// Classification, once diagnosed.
    pub classification: Option<Classification>,
    /// Person assigned.
    pub assignee: Option<String>,
    /// Group assigned (defaults to the classification's group).
    pub group: Option<String>,
    /// Provider requests, oldest first; the last one may be pending.
    #[serde(default)]
    pub provider_requests: Vec<ProviderRequest>,
    /// Fault events seen for this incident (raised and updated).
    pub occurrences: u32,
    /// Last fault event time.
    pub last_seen: Millis,
    /// Worst severity seen (faults).
    pub worst_severity: Option<Severity>,
    /// Whether the fault is active now (agent faults; reports are always "active").
    pub fault_active: bool,
    /// The newest fault event applied, by the device's sequence: an older one arriving
    /// late (resent after a broker dropped it) is kept in the history but changes nothing.
    #[serde(default)]
    pub last_fault: Option<FaultSeq>,
    /// Times the fault came back after clearing, inside the flapping window.
    #[serde(default)]
    pub cycles: Vec<Millis>,
    /// Raised and cleared too often: kept open rather than opened again and again.
    pub flapping: bool,
    /// Questions asked to the user.
    #[serde(default)]
    pub info_requests: Vec<InfoRequest>,
    /// SLA clocks.
    pub sla: SlaClock,
    /// Notes.
    #[serde(default)]
    pub notes: Vec<Note>,
    /// The solution, once resolved.
    pub solution: Option<String>,
    /// When it was resolved (last time).
    pub resolved_at: Option<Millis>,
    /// When it was opened.
    pub opened_at: Millis,
    /// Closing, once closed.
    pub closure: Option<Closure>,
    /// Times it was reopened.
    pub reopen_count: u32,
    /// Audit records in the whole trail so far (the next record's `seq`).
    #[serde(default)]
    pub audit_len: u32,
    /// The last change: the newest audit record or fault occurrence.
    #[serde(default)]
    pub updated_at: Millis,
    /// The first fault event applied and the most recent ones, with their details.
    #[serde(default, skip_serializing_if = "Occurrences::is_empty")]
    pub recent: Occurrences,
    /// Its information classification (*reservada*, *clasificada*); `None` is public.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve: Option<super::reserve::Reserve>,
    /// Audit records, oldest first, as loaded with the incident (see the module
    /// documentation). Never rewritten: new records are appended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit: Vec<AuditRecord>,
}

/// One fault event applied to an incident, with its details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Occurrence {
    /// The event's per-instance `seq`.
    pub seq: u64,
    /// The device's timestamp.
    pub ts: Millis,
    /// When the collector applied it.
    pub at: Millis,
    /// Raised, updated or cleared.
    pub action: FaultAction,
    /// Severity reported.
    pub severity: Severity,
    /// The reading behind it.
    pub evidence: Evidence,
    /// The agent's one-line summary.
    pub message: String,
}

/// The details of an incident's fault events, bounded: the first one and the most recent
/// [`Self::RECENT`] (newest last). Every event is also stored whole in the event store,
/// until retention compacts it; this ring is what the incident itself carries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Occurrences {
    /// The first fault event applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<Occurrence>,
    /// The most recent ones, oldest first; the last is the newest.
    #[serde(default)]
    pub recent: std::collections::VecDeque<Occurrence>,
}

impl Occurrences {
    /// How many recent occurrences are kept.
    pub const RECENT: usize = 8;

    /// Whether none was recorded (a report's incident).
    pub fn is_empty(&self) -> bool {
        self.first.is_none() && self.recent.is_empty()
    }

    /// Adds `o`: the first ever stays, the oldest recent one goes past [`Self::RECENT`].
    pub fn push(&mut self, o: Occurrence) {
        if self.first.is_none() {
            self.first = Some(o.clone());
        }
        if self.recent.len() >= Self::RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(o);
    }

    /// The newest occurrence.
    pub fn last(&self) -> Option<&Occurrence> {
        self.recent.back()
    }
}

impl Incident {
    /// The correlation key of a fault incident: one open incident per
    /// (device, fault, subject). Reports have none.
    pub fn fault_key(&self) -> Option<FaultKey> {
        match &self.origin {
            Origin::Fault { kind, subject, .. } => Some(FaultKey {
                device: self.device.clone()?,
                kind: *kind,
                subject: subject.clone(),
            }),
            Origin::Report { .. } | Origin::Service { .. } => None,
        }
    }

    /// Priority, once diagnosed.
    pub fn priority(&self) -> Option<Priority> {
        self.classification.as_ref().map(|c| c.priority)
    }

    /// The pending provider request, if one is open.
    pub fn pending_provider(&self) -> Option<&ProviderRequest> {
        self.provider_requests
            .last()
            .filter(|r| r.delivery.is_none())
    }

    /// The question still waiting for an answer, if any.
    pub fn pending_question(&self) -> Option<&InfoRequest> {
        self.info_requests.last().filter(|q| q.answer.is_none())
    }
}

/// Where a fault event sits in its device's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultSeq {
    /// The agent instance that sent it (0 in incidents stored before instances existed).
    #[serde(default)]
    pub instance: u64,
    /// The event's per-device `seq`.
    pub seq: u64,
    /// The event's device timestamp.
    pub ts: Millis,
}

impl FaultSeq {
    /// Whether an event at `self` is older than (or the same as) `last`. Within one agent
    /// instance its seq says so, whatever the device clock did meanwhile. Between two
    /// instances seqs say nothing (a reinstalled agent starts again from 1 while its old
    /// instance's events may still arrive late), so the device clock decides, as it does
    /// for births and statuses; a tie keeps what was applied.
    pub fn is_stale_after(self, last: FaultSeq) -> bool {
        if self.instance == last.instance {
            self.seq <= last.seq
        } else {
            self.ts <= last.ts
        }
    }
}

/// The correlation key: one open incident per (device, fault, subject).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FaultKey {
    /// The device.
    pub device: DeviceId,
    /// The fault.
    pub kind: FaultKind,
    /// What it concerns.
    pub subject: String,
}

impl fmt::Display for FaultKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `/` never occurs in a device id or a fault kind, so the first two separators are
        // unambiguous even when the subject (a mount point) contains slashes.
        write!(f, "{}/{}/{}", self.device, self.kind, self.subject)
    }
}

// ---- provider requests (000 step 5, 003, 004 step 4.4); the rules are in `provider` ----

/// Scheduled work or a sudden failure (003 item 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceKind {
    /// "Servicio programado".
    Scheduled,
    /// "Servicio requerido por falla intempestiva".
    Unplanned,
}

/// What a person asks of a provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderRequestSpec {
    /// The provider; `None` uses the asset's warranty provider when under warranty.
    #[serde(default)]
    pub provider: Option<String>,
    /// Scheduled or unplanned.
    pub kind: ServiceKind,
    /// Priority asked of the provider; defaults to the incident's.
    #[serde(default)]
    pub priority: Option<Priority>,
    /// Agreed date and time of the service.
    pub agreed_at: Millis,
    /// Whether the work affects the network (one week's notice to all staff).
    #[serde(default)]
    pub affects_network: bool,
    /// Agreed conditions (003 item 3).
    #[serde(default)]
    pub conditions: String,
    /// Time the provider has to respond (accept or propose another date); the collector
    /// fills it from the provider's contract for the priority when it is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub respond_within: Option<Dur>,
    /// Time the provider has to finish the work, after the agreed time; from the contract
    /// like `respond_within`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve_within: Option<Dur>,
    /// The id of a request made for several incidents at once, which each of them
    /// carries (the collector assigns it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}

/// A service asked of a provider with no incident behind it (003 item 2): planned
/// maintenance, or work on something no agent watches. Staff give what it is, the kind of
/// asset (what the contracts' `covers` match) and who follows it up; the request itself is
/// a [`ProviderRequestSpec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceOrder {
    /// What the work is, in one line.
    pub summary: String,
    /// What is needed (tools, parts, service) and any detail.
    #[serde(default)]
    pub text: String,
    /// The service category (`network`, `hardware/power`): the contracts' `covers` match
    /// its first part.
    pub category: String,
    /// The device it is for, when it is one the collector knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceId>,
    /// The level that follows it up (default 2: the specialists who coordinate providers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
    /// The group that follows it up (default: triage's fallback group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// Who did something about a request, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// When.
    pub at: Millis,
    /// Who (an account's login).
    pub by: String,
    /// What they said.
    #[serde(default)]
    pub note: String,
}

/// Another date the provider proposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The date it proposes.
    pub date: Millis,
    /// Who proposed it, when, and why.
    pub stamp: Stamp,
}

/// The verification that closes a provider request (003 item 5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// When it was verified.
    pub verified_at: Millis,
    /// Who verified it.
    pub verified_by: String,
    /// Whether the service was delivered as agreed.
    pub as_agreed: bool,
    /// What was found.
    pub note: String,
}

/// A provider request on an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderRequest {
    /// The provider.
    pub provider: String,
    /// Whether the provider was suggested by the asset's warranty.
    pub under_warranty: bool,
    /// Scheduled or unplanned.
    pub kind: ServiceKind,
    /// Priority asked of the provider.
    pub priority: Priority,
    /// Agreed date and time.
    pub agreed_at: Millis,
    /// Whether the work affects the network.
    pub affects_network: bool,
    /// Agreed conditions.
    pub conditions: String,
    /// When it was requested.
    pub requested_at: Millis,
    /// Who requested it.
    pub requested_by: String,
    /// The level the incident returns to when the provider is done.
    pub return_level: Level,
    /// When the all-staff network notice is due (network work only).
    pub notice_due_at: Option<Millis>,
    /// When the notice was sent.
    pub notice_sent_at: Option<Millis>,
    /// The verification, once done.
    pub delivery: Option<Delivery>,
    /// Its id: the one shared by every incident of a request made for several, or the
    /// incident's number and the request's rank on it (`12-1`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// When the provider must have responded (accepted or proposed a date).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub respond_by: Option<Millis>,
    /// When the provider must have finished the work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve_by: Option<Millis>,
    /// When a missed deadline was escalated to the administrators (once per deadline).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overdue: Vec<Overdue>,
    /// The provider accepted the request as agreed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<Stamp>,
    /// The provider proposed another date, not yet agreed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposed: Option<Proposal>,
    /// The provider says the work is done, with its report; verification is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<Stamp>,
    /// Verifications that rejected the service, oldest first: each reopened the request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejections: Vec<Rejection>,
}

/// A verification that found the service not delivered as agreed (003 item 5): the
/// request is open again, and the provider's report it answered is kept with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The verification.
    pub verification: Delivery,
    /// The provider's report it rejected, if the provider had marked the work done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<Stamp>,
}

/// Which of a request's deadlines passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deadline {
    /// To respond to the request.
    Response,
    /// To finish the work.
    Resolution,
}

/// A request's deadline that passed, escalated to the administrators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overdue {
    /// Which.
    pub deadline: Deadline,
    /// When it fell due.
    pub at: Millis,
}

impl ProviderRequest {
    /// When `deadline` falls due, unless it was met or already escalated.
    pub fn deadline_due(&self, deadline: Deadline) -> Option<Millis> {
        if self.delivery.is_some() || self.overdue.iter().any(|o| o.deadline == deadline) {
            return None;
        }
        match deadline {
            Deadline::Response if self.accepted.is_none() && self.proposed.is_none() => {
                self.respond_by
            }
            Deadline::Resolution if self.done.is_none() => self.resolve_by,
            _ => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for s in State::ALL {
            assert_eq!(s.as_str().parse::<State>().unwrap(), s);
        }
        for p in Priority::ALL {
            assert_eq!(p.as_str().parse::<Priority>().unwrap(), p);
        }
        assert_eq!("p2".parse::<Priority>().unwrap(), Priority::P2);
        assert_eq!("L3".parse::<Level>().unwrap(), Level::L3);
        assert_eq!("2".parse::<Level>().unwrap(), Level::L2);
        let e = "level4".parse::<State>().unwrap_err().to_string();
        assert!(
            e.contains("level4") && e.contains("waiting_provider"),
            "{e}"
        );
        assert!("4".parse::<Level>().is_err());
        assert!(serde_json::from_str::<Level>("0").is_err());
        assert_eq!(serde_json::to_string(&Level::L2).unwrap(), "2");
    }
}
