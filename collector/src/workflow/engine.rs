//! The transitions: `(incident, input, now, policy) -> Decision` and nothing else.
//!
//! Every change goes through [`Change`], which appends an audit record for it (who, when,
//! from → to, action, why, old and new field values), keeps the SLA pause and level
//! bookkeeping in one place, and gathers the messages to send. Automatic follow-ups (a
//! validated report goes on to verification, a confirmed incident is diagnosed and routed
//! to its level) happen inside the same decision, each with its own record, so the store
//! writes one incident per input and the trail still shows every step.
use serde::{Deserialize, Serialize};
use vigia_protocol::{bounded, CmdBody, DeviceId, FaultAction, FaultEvent, Urgency, UserReport};

use super::incident::{
    Actor, AuditRecord, Classification, Closure, ClosureReason, DeviceContext, FaultSeq,
    FieldChange, Impact, Incident, IncidentNo, InfoRequest, Level, Note, Origin, Person, Priority,
    Role, SlaClock, SpecialisedPath, State,
};
use super::incident::{
    Deadline, Delivery, Occurrence, Occurrences, Proposal, ProviderRequest, ProviderRequestSpec,
    Rejection, ServiceKind, ServiceOrder, Stamp,
};
use super::policy::{Policy, ReportField};
use super::provider::{build_request, reschedule, ProviderError};
use super::reserve::{ReserveError, ReserveSpec};
use super::sla::Target;
use super::time::{rfc3339, Dur, Millis};
use super::triage::urgency_of;

/// A person's command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Check that the information needed is there (000 step 2).
    Validate,
    /// Ask the user for more information (000 step 2); the device gets a `RequestInfo`.
    RequestInfo {
        /// The question.
        question: String,
    },
    /// The user's answer arrived by another channel (phone, chat).
    InfoReceived {
        /// The answer.
        text: String,
    },
    /// The problem is confirmed (000 step 3): diagnose by the triage rules and route.
    Confirm {
        /// What was seen.
        #[serde(default)]
        note: String,
    },
    /// The problem could not be reproduced: close (000 step 3).
    NotReproduced {
        /// What was tried.
        #[serde(default)]
        note: String,
    },
    /// Change the classification by hand.
    Classify(ClassifyChange),
    /// Assign to a person and/or a group.
    Assign {
        /// The person; `None` leaves it as it is.
        #[serde(default)]
        assignee: Option<String>,
        /// The group; `None` leaves it as it is.
        #[serde(default)]
        group: Option<String>,
    },
    /// Escalate to a higher level (default: the next one). At level 3 this notifies the
    /// platform owner (000 step 6).
    Escalate {
        /// Target level.
        #[serde(default)]
        to: Option<Level>,
        /// Why.
        #[serde(default)]
        why: String,
    },
    /// Ask a provider for a service (000 step 5, 003, 004 4.4).
    RequestProvider(ProviderRequestSpec),
    /// The provider accepts the request as agreed (its contact, or staff on its behalf).
    ProviderAccept {
        /// What it says.
        #[serde(default)]
        note: String,
    },
    /// The provider proposes another date for the service.
    ProviderPropose {
        /// The date it proposes.
        date: Millis,
        /// Why.
        #[serde(default)]
        note: String,
    },
    /// The coordinator agrees a new date with the provider (its proposal, or another).
    ProviderReschedule {
        /// The new agreed date and time.
        agreed_at: Millis,
        /// Why.
        #[serde(default)]
        note: String,
    },
    /// The provider says the work is done, with its report: verification is due.
    ProviderDone {
        /// What was done.
        report: String,
    },
    /// The provider's service was verified (003 item 5): accepted, back to the level that
    /// asked; or rejected with the reason, which reopens the request.
    ProviderDelivered {
        /// Whether it was delivered as agreed.
        as_agreed: bool,
        /// What was found (the reason, when rejected).
        #[serde(default)]
        note: String,
    },
    /// The problem is solved.
    Resolve {
        /// The solution, for the record and the export.
        solution: String,
    },
    /// Close definitively (service desk only, 001 activity 11).
    Close {
        /// A closing note.
        #[serde(default)]
        note: String,
    },
    /// Not definitively closed: back to level 1 (001 activity 11).
    Reopen {
        /// Why.
        why: String,
    },
    /// Add a note.
    Note {
        /// The note.
        text: String,
    },
    /// Set the record's information classification (reserved, classified, with the
    /// years and the justification), or lift it (public).
    Reserve(ReserveSpec),
}

impl Command {
    /// The action name used in errors and the audit trail.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Validate => "validate",
            Self::RequestInfo { .. } => "request_info",
            Self::InfoReceived { .. } => "info_received",
            Self::Confirm { .. } => "confirm",
            Self::NotReproduced { .. } => "not_reproduced",
            Self::Classify(_) => "classify",
            Self::Assign { .. } => "assign",
            Self::Escalate { .. } => "escalate",
            Self::RequestProvider(_) => "request_provider",
            Self::ProviderAccept { .. } => "provider_accept",
            Self::ProviderPropose { .. } => "provider_propose",
            Self::ProviderReschedule { .. } => "provider_reschedule",
            Self::ProviderDone { .. } => "provider_done",
            Self::ProviderDelivered { .. } => "provider_delivered",
            Self::Resolve { .. } => "resolve",
            Self::Close { .. } => "close",
            Self::Reopen { .. } => "reopen",
            Self::Note { .. } => "note",
            Self::Reserve(_) => "reserve",
        }
    }
}

/// A hand-made classification change; absent fields stay as they are. Changing impact or
/// urgency without a priority recomputes the priority from the matrix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyChange {
    /// Category.
    #[serde(default)]
    pub category: Option<String>,
    /// Impact.
    #[serde(default)]
    pub impact: Option<Impact>,
    /// Urgency.
    #[serde(default)]
    pub urgency: Option<Urgency>,
    /// Priority.
    #[serde(default)]
    pub priority: Option<Priority>,
    /// Required resources (replaces the list).
    #[serde(default)]
    pub resources: Option<Vec<String>>,
    /// Specialised path; `Some(None)` removes it.
    #[serde(default)]
    pub path: Option<Option<SpecialisedPath>>,
}

/// Something a device sent about an incident. Kept unboxed like the wire's `EventBody`:
/// these values live for one call.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum DeviceEvent {
    /// A fault raised, updated or cleared (after correlation picked this incident).
    Fault(FaultInput),
    /// The user's answer to a request for information.
    Reply {
        /// The answer.
        text: String,
    },
}

impl DeviceEvent {
    fn name(&self) -> &'static str {
        match self {
            Self::Fault(f) => match f.fault.action {
                FaultAction::Raised => "fault_raised",
                FaultAction::Updated => "fault_updated",
                FaultAction::Cleared => "fault_cleared",
            },
            Self::Reply { .. } => "reply",
        }
    }
}

/// A fault event with its place in the device's sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultInput {
    /// The agent instance that sent it.
    #[serde(default)]
    pub instance: u64,
    /// The event's per-device `seq`.
    pub seq: u64,
    /// The event's device timestamp (`Event::ts`).
    pub ts: Millis,
    /// The fault.
    pub fault: FaultEvent,
}

impl FaultInput {
    /// The fault of a wire event, if it is one.
    pub fn from_event(ev: &vigia_protocol::Event) -> Option<Self> {
        match &ev.body {
            vigia_protocol::EventBody::Fault(f) => Some(Self {
                instance: ev.instance,
                seq: ev.seq,
                ts: ev.ts,
                fault: f.clone(),
            }),
            _ => None,
        }
    }

    /// Its place in the sequence.
    pub fn position(&self) -> FaultSeq {
        FaultSeq {
            instance: self.instance,
            seq: self.seq,
            ts: self.ts,
        }
    }

    /// Its details, applied at `now`, for the incident's [`Occurrences`].
    pub fn occurrence(&self, now: Millis) -> Occurrence {
        Occurrence {
            seq: self.seq,
            ts: self.ts,
            at: now,
            action: self.fault.action,
            severity: self.fault.severity,
            evidence: self.fault.evidence.clone(),
            message: self.fault.message.as_str().to_owned(),
        }
    }

    /// Whether it is older than the newest fault event `inc` has applied.
    pub fn is_stale_for(&self, inc: &Incident) -> bool {
        inc.last_fault
            .is_some_and(|last| self.position().is_stale_after(last))
    }
}

/// An input to [`apply`].
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum Input {
    /// A person's command (API, CLI).
    Person {
        /// Who.
        by: Person,
        /// What.
        command: Command,
    },
    /// A device's event.
    Device {
        /// Which device.
        device: DeviceId,
        /// What.
        event: DeviceEvent,
    },
}

impl Input {
    /// The action name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Person { command, .. } => command.name(),
            Self::Device { event, .. } => event.name(),
        }
    }
}

/// Who a notification is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "name", rename_all = "snake_case")]
pub enum Audience {
    /// The group working the incident.
    Group(String),
    /// The service desk.
    ServiceDesk,
    /// The owner of the platform (000 step 6): escalation beyond level 3.
    PlatformOwner,
    /// The coordinator who deals with providers (003).
    Coordinator,
    /// A provider.
    Provider(String),
    /// Every member of staff (003 item 4).
    AllStaff,
    /// The administrators: a provider that misses its contract's deadline.
    Admins,
}

/// What a notification is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NotificationKind {
    /// Escalated to a higher level.
    Escalated {
        /// From.
        from: Level,
        /// To.
        to: Level,
    },
    /// Escalation requested or due at level 3: nobody higher in the levels.
    EscalationFromL3,
    /// An SLA target was breached.
    SlaBreached {
        /// Which.
        target: Target,
    },
    /// A provider service was requested.
    ProviderRequested,
    /// Network work by a provider: notice to all staff (003 item 4).
    NetworkNotice {
        /// When the work happens.
        agreed_at: Millis,
    },
    /// The provider did not deliver as agreed (003 item 5).
    ProviderNotAsAgreed,
    /// The provider answered a request: accepted it, or proposed another date.
    ProviderAnswered {
        /// Whether it accepted (otherwise it proposed another date).
        accepted: bool,
    },
    /// The provider says the work is done: verify it (003 item 5).
    VerificationDue,
    /// The provider missed a deadline of its contract.
    ProviderOverdue {
        /// Which.
        deadline: super::incident::Deadline,
    },
    /// A fault keeps coming back.
    Flapping,
    /// An incident came back to level 1.
    Reopened,
    /// The user did not answer a question in time: back to the service desk.
    InfoUnanswered,
}

/// A notification for people; the collector decides how it travels (feed, mail).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// The incident.
    pub incident: IncidentNo,
    /// About what.
    pub kind: NotificationKind,
    /// For whom.
    pub audience: Audience,
    /// In words.
    pub text: String,
}

/// A message the collector must send because of a decision.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outgoing {
    /// A command for the device's `down/{id}/cmd` topic.
    Device {
        /// To which device.
        device: DeviceId,
        /// What.
        body: CmdBody,
    },
    /// A notification for people.
    Notify(Notification),
}

/// The result of a transition: the new incident (its `audit` already extended by
/// `records`), the new records alone, and the messages to send once it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The incident after the change.
    pub incident: Incident,
    /// The audit records this change added, in order.
    pub records: Vec<AuditRecord>,
    /// What to send, after the incident is durably stored.
    pub messages: Vec<Outgoing>,
}

/// Why a transition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkflowError {
    /// The action does not apply in this state.
    #[error("incident {incident} is {state}: cannot {action}")]
    Illegal {
        /// The incident.
        incident: IncidentNo,
        /// Its state.
        state: State,
        /// The action attempted.
        action: &'static str,
    },
    /// Only the service desk closes definitively (001 activity 11).
    #[error(
        "incident {incident}: only the service desk closes incidents definitively, and {actor} does not have the service_desk role"
    )]
    NotServiceDesk {
        /// The incident.
        incident: IncidentNo,
        /// Who tried.
        actor: String,
    },
    /// Escalation must go up.
    #[error("incident {incident}: cannot escalate from level {from} to level {to}")]
    NotHigher {
        /// The incident.
        incident: IncidentNo,
        /// Current level.
        from: Level,
        /// Requested level.
        to: Level,
    },
    /// A required text was empty.
    #[error("incident {incident}: {action} needs a non-empty {field}")]
    Empty {
        /// The incident.
        incident: IncidentNo,
        /// The action.
        action: &'static str,
        /// The field.
        field: &'static str,
    },
    /// The provider request cannot be made as asked.
    #[error("incident {incident}: {source}")]
    Provider {
        /// The incident.
        incident: IncidentNo,
        /// Why.
        source: ProviderError,
    },
    /// The event is about another device or fault than this incident.
    #[error("incident {incident} is about {expected}, not {got}")]
    WrongSubject {
        /// The incident.
        incident: IncidentNo,
        /// What the incident is about.
        expected: String,
        /// What the event is about.
        got: String,
    },
    /// The information classification cannot be set as asked.
    #[error("incident {incident}: {source}")]
    Reserve {
        /// The incident.
        incident: IncidentNo,
        /// Why.
        source: ReserveError,
    },
    /// A fault came back after the reopen window: it needs a new incident.
    #[error(
        "incident {incident} closed at {closed_at}, more than the reopen window ago; open a new incident"
    )]
    ReopenWindowPassed {
        /// The incident.
        incident: IncidentNo,
        /// When it closed (RFC 3339).
        closed_at: String,
    },
}

/// A change in progress: the incident being rewritten plus what it will emit.
pub(crate) struct Change<'p> {
    inc: Incident,
    start_state: State,
    records: Vec<AuditRecord>,
    messages: Vec<Outgoing>,
    now: Millis,
    actor: Actor,
    policy: &'p Policy,
}

fn change(field: &str, from: impl Into<String>, to: impl Into<String>) -> FieldChange {
    FieldChange {
        field: field.to_owned(),
        from: from.into(),
        to: to.into(),
    }
}

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_default()
}

impl<'p> Change<'p> {
    pub(crate) fn new(inc: &Incident, actor: Actor, now: Millis, policy: &'p Policy) -> Self {
        Self {
            start_state: inc.state,
            inc: inc.clone(),
            records: Vec::new(),
            messages: Vec::new(),
            now,
            actor,
            policy,
        }
    }

    pub(crate) fn now(&self) -> Millis {
        self.now
    }

    pub(crate) fn policy(&self) -> &'p Policy {
        self.policy
    }

    pub(crate) fn incident(&self) -> &Incident {
        &self.inc
    }

    pub(crate) fn sla_mut(&mut self) -> &mut SlaClock {
        &mut self.inc.sla
    }

    /// The questions asked of the user, for the timers' bookkeeping.
    /// The pending provider request; callers check first that there is one.
    pub(crate) fn pending_request_mut(&mut self) -> &mut ProviderRequest {
        let i = self.inc.provider_requests.len().saturating_sub(1);
        &mut self.inc.provider_requests[i]
    }

    pub(crate) fn info_requests_mut(&mut self) -> &mut Vec<super::incident::InfoRequest> {
        &mut self.inc.info_requests
    }

    pub(crate) fn changed(&self) -> bool {
        !self.records.is_empty()
    }

    /// The group to notify about this incident.
    pub(crate) fn group(&self) -> String {
        self.inc
            .group
            .clone()
            .or_else(|| self.inc.classification.as_ref().map(|c| c.group.clone()))
            .unwrap_or_else(|| "service-desk".to_owned())
    }

    /// Moves to `to` (which may equal the current state) and records it.
    pub(crate) fn record(
        &mut self,
        to: State,
        action: &str,
        why: String,
        changes: Vec<FieldChange>,
    ) {
        let from = self.inc.state;
        self.enter(to);
        let seq = self.inc.audit_len;
        self.inc.audit_len = seq.saturating_add(1);
        self.inc.updated_at = self.inc.updated_at.max(self.now);
        let rec = AuditRecord {
            seq,
            at: self.now,
            actor: self.actor.clone(),
            from,
            to,
            action: action.to_owned(),
            why,
            changes,
        };
        self.inc.audit.push(rec.clone());
        self.records.push(rec);
    }

    fn goto(&mut self, to: State, action: &str, why: String) {
        self.record(to, action, why, Vec::new());
    }

    /// State bookkeeping shared by every transition: SLA pauses and the level clock.
    fn enter(&mut self, to: State) {
        let from = self.inc.state;
        let now = self.now;
        let sla = &mut self.inc.sla;
        match (from.sla_paused(), to.sla_paused()) {
            (false, true) => sla.paused_since = Some(now),
            (true, false) => {
                if let Some(since) = sla.paused_since.take() {
                    sla.paused_ms = sla.paused_ms.saturating_add(now.saturating_sub(since));
                }
            }
            _ => {}
        }
        if let Some(level) = to.level() {
            let back_from_provider = from == State::WaitingProvider && self.inc.level == level;
            if from != to && !back_from_provider {
                sla.level_started_active = sla.active(now);
                sla.level_budget_notified = false;
            }
            self.inc.level = level;
        }
        self.inc.state = to;
    }

    pub(crate) fn notify(&mut self, kind: NotificationKind, audience: Audience, text: String) {
        self.messages.push(Outgoing::Notify(Notification {
            incident: self.inc.number,
            kind,
            audience,
            text,
        }));
    }

    /// Sends `body` to the incident's device; a service with no device has nobody to tell.
    pub(crate) fn send_device(&mut self, body: CmdBody) {
        if let Some(device) = self.inc.device.clone() {
            self.messages.push(Outgoing::Device { device, body });
        }
    }

    pub(crate) fn finish(mut self) -> Decision {
        // A person who reported the problem hears about every change of state, once per
        // decision, with the final state.
        if self.inc.state != self.start_state {
            if let Origin::Report { .. } = self.inc.origin {
                let body = CmdBody::IncidentState {
                    incident: self.inc.number,
                    state: bounded(self.inc.state.as_str()),
                    note: bounded(&user_note(&self.inc)),
                };
                self.send_device(body);
            }
        }
        Decision {
            incident: self.inc,
            records: self.records,
            messages: self.messages,
        }
    }

    /// Validating → needs_info (missing fields) or verifying.
    fn run_validation(&mut self) {
        let answered: Vec<ReportField> = self
            .inc
            .info_requests
            .iter()
            .filter(|q| q.answer.as_deref().is_some_and(|a| !a.trim().is_empty()))
            .flat_map(|q| q.fields.iter().filter_map(|f| field_from_name(f)))
            .collect();
        let missing: Vec<ReportField> = self
            .policy
            .missing_fields(&self.inc.origin)
            .into_iter()
            .filter(|f| !answered.contains(f))
            .collect();
        if missing.is_empty() {
            let why = if self.inc.origin.is_fault() {
                "agent fault carries its evidence".to_owned()
            } else {
                "the report has the information required for its category".to_owned()
            };
            self.goto(State::Verifying, "validated", why);
            return;
        }
        let wanted: Vec<&str> = missing.iter().map(|f| f.question()).collect();
        let question = format!(
            "To work on incident {} we need: {}. Please answer in one reply.",
            self.inc.number,
            wanted.join("; ")
        );
        let names: Vec<String> = missing.iter().map(|f| f.as_str().to_owned()).collect();
        self.ask(question, names);
    }

    fn ask(&mut self, question: String, fields: Vec<String>) {
        self.inc.info_requests.push(InfoRequest {
            asked_at: self.now,
            question: question.clone(),
            fields: fields.clone(),
            answer: None,
            answered_at: None,
            reminded_at: None,
        });
        let why = if fields.is_empty() {
            format!("asked the user: {question}")
        } else {
            format!("missing {}; asked the user", fields.join(", "))
        };
        self.record(
            State::NeedsInfo,
            "request_info",
            why,
            vec![change("info_requests", "", question.clone())],
        );
        let body = CmdBody::RequestInfo {
            incident: self.inc.number,
            question: bounded(&question),
        };
        self.send_device(body);
    }

    fn answer(&mut self, text: &str, action: &str) {
        if let Some(q) = self.inc.info_requests.last_mut() {
            if q.answer.is_none() {
                q.answer = Some(text.to_owned());
                q.answered_at = Some(self.now);
            }
        }
        self.record(
            State::Validating,
            action,
            "the user answered; validating again".to_owned(),
            vec![change("info_requests.answer", "", text)],
        );
        self.run_validation();
    }

    /// Verifying → diagnosed (triage rules) → the level the rules say.
    pub(crate) fn confirm_and_route(&mut self, action: &str, why: String) {
        self.goto(State::Diagnosed, action, why);
        let c = self.classify_by_rules();
        let level = c.level;
        let rule = c.rule.clone();
        self.goto(
            level.state(),
            "route",
            format!("level {level} as triage rule {rule:?} says"),
        );
    }

    /// Applies the triage rules, recording the classification as field changes.
    fn classify_by_rules(&mut self) -> Classification {
        let c = self.policy.rules().classify(
            &self.inc.origin,
            self.inc.worst_severity,
            &self.inc.context,
        );
        let mut changes = classification_changes(self.inc.classification.as_ref(), &c);
        if self.inc.group.is_none() {
            changes.push(change("group", "", c.group.clone()));
            self.inc.group = Some(c.group.clone());
        }
        let why = format!("classified by triage rule {:?}", c.rule);
        self.inc.classification = Some(c.clone());
        let state = self.inc.state;
        self.record(state, "diagnose", why, changes);
        c
    }

    /// Escalates one level from `level`, or at level 3 notifies the platform owner.
    pub(crate) fn escalate_from(&mut self, level: Level, why: String) {
        match level.up() {
            Some(next) => self.escalate_to(level, next, why),
            None => {
                self.inc.sla.level_budget_notified = true;
                self.record(
                    State::Level3,
                    "escalate",
                    format!("{why}; no level above 3: platform owner notified"),
                    vec![change("sla.level_budget_notified", "false", "true")],
                );
                self.notify(
                    NotificationKind::EscalationFromL3,
                    Audience::PlatformOwner,
                    format!(
                        "incident {} needs escalation beyond level 3: {why}",
                        self.inc.number
                    ),
                );
            }
        }
    }

    fn escalate_to(&mut self, from: Level, to: Level, why: String) {
        self.goto(to.state(), "escalate", why.clone());
        self.notify(
            NotificationKind::Escalated { from, to },
            Audience::Group(self.group()),
            format!(
                "incident {} escalated from level {from} to level {to}: {why}",
                self.inc.number
            ),
        );
    }

    pub(crate) fn send_network_notice(&mut self) {
        let now = self.now;
        let Some(req) = self.inc.provider_requests.last_mut() else {
            return;
        };
        req.notice_sent_at = Some(now);
        let agreed_at = req.agreed_at;
        let provider = req.provider.clone();
        let state = self.inc.state;
        self.record(
            state,
            "network_notice",
            format!(
                "notice to all staff: {provider} works on the network at {}",
                rfc3339(agreed_at)
            ),
            vec![change("provider.notice_sent_at", "", rfc3339(now))],
        );
        self.notify(
            NotificationKind::NetworkNotice { agreed_at },
            Audience::AllStaff,
            format!(
                "Network service by {provider} on {}: the network may be affected (incident {}).",
                rfc3339(agreed_at),
                self.inc.number
            ),
        );
    }

    pub(crate) fn close(&mut self, reason: ClosureReason, action: &str, why: String) {
        self.inc.closure = Some(Closure {
            at: self.now,
            reason,
        });
        self.record(
            State::Closed,
            action,
            why,
            vec![change("closure", "", reason.as_str())],
        );
    }

    /// Back to level 1 through `reopened` (001 activity 11), classifying first if the
    /// incident never was (a transient fault that came back).
    fn reopen(&mut self, action: &str, why: String) {
        let mut changes = Vec::new();
        if let Some(c) = self.inc.closure.take() {
            changes.push(change("closure", c.reason.as_str(), ""));
        }
        if let Some(s) = self.inc.solution.take() {
            changes.push(change("solution", s, ""));
        }
        self.inc.resolved_at = None;
        self.inc.reopen_count = self.inc.reopen_count.saturating_add(1);
        self.record(State::Reopened, action, why.clone(), changes);
        if self.inc.classification.is_none() {
            self.classify_by_rules();
        }
        self.goto(
            State::Level1,
            "route",
            "reopened incidents go back to the service desk".to_owned(),
        );
        self.notify(
            NotificationKind::Reopened,
            Audience::ServiceDesk,
            format!("incident {} reopened: {why}", self.inc.number),
        );
    }
}

/// What the person who reported the problem is told about its new state.
fn user_note(inc: &Incident) -> String {
    match inc.state {
        State::Registered | State::Validating => "your report was received".to_owned(),
        State::NeedsInfo => inc.pending_question().map_or_else(
            || "IT needs more information".to_owned(),
            |q| q.question.clone(),
        ),
        State::Verifying => "IT is checking the problem".to_owned(),
        State::Diagnosed => "IT has classified the problem".to_owned(),
        State::Level1 => "the service desk is working on it".to_owned(),
        State::Level2 => "on-site support or a specialist is working on it".to_owned(),
        State::Level3 => "a specialist or the provider is working on it".to_owned(),
        State::WaitingProvider => inc.pending_provider().map_or_else(
            || "waiting for a provider".to_owned(),
            |r| {
                format!(
                    "waiting for {}, agreed for {}",
                    r.provider,
                    rfc3339(r.agreed_at)
                )
            },
        ),
        State::Resolved => format!("resolved: {}", inc.solution.as_deref().unwrap_or("")),
        State::Closed => match inc.closure.as_ref().map(|c| c.reason) {
            Some(ClosureReason::NotReproduced) => "closed: IT could not reproduce the problem",
            Some(ClosureReason::Transient) => "closed: the problem went away by itself",
            _ => "closed",
        }
        .to_owned(),
        State::Reopened => "reopened".to_owned(),
    }
}

fn field_from_name(name: &str) -> Option<ReportField> {
    [
        ReportField::Category,
        ReportField::Summary,
        ReportField::Text,
        ReportField::Reporter,
        ReportField::Contact,
        ReportField::Snapshot,
    ]
    .into_iter()
    .find(|f| f.as_str() == name)
}

fn classification_changes(old: Option<&Classification>, new: &Classification) -> Vec<FieldChange> {
    let o = |f: fn(&Classification) -> String| old.map(f).unwrap_or_default();
    type Getter = fn(&Classification) -> String;
    let fields: [(&str, Getter); 9] = [
        ("category", |c| c.category.clone()),
        ("impact", |c| c.impact.as_str().to_owned()),
        ("urgency", |c| c.urgency.as_str().to_owned()),
        ("priority", |c| c.priority.to_string()),
        ("classification.level", |c| c.level.to_string()),
        ("classification.group", |c| c.group.clone()),
        ("resources", |c| c.resources.join(", ")),
        ("path", |c| {
            c.path.map(|p| p.as_str().to_owned()).unwrap_or_default()
        }),
        ("rule", |c| c.rule.clone()),
    ];
    fields
        .into_iter()
        .filter_map(|(name, f)| {
            let (from, to) = (o(f), f(new));
            (from != to).then(|| change(name, from, to))
        })
        .collect()
}

impl Origin {
    /// The origin of an incident opened by a fault event.
    pub fn from_fault(ev: &FaultEvent) -> Self {
        Self::Fault {
            kind: ev.kind,
            subject: ev.subject.as_str().to_owned(),
            severity: ev.severity,
            evidence: ev.evidence.clone(),
            message: ev.message.as_str().to_owned(),
        }
    }

    /// The origin of an incident opened by a user report.
    pub fn from_report(r: &UserReport) -> Self {
        Self::Report {
            report_id: r.report_id,
            category: r.category.as_str().to_owned(),
            summary: r.summary.as_str().to_owned(),
            text: r.text.as_str().to_owned(),
            reporter: r.reporter.as_str().to_owned(),
            contact: r.contact.as_str().to_owned(),
            urgency: r.urgency,
            snapshot: r.snapshot.iter().cloned().collect(),
            open_faults: r.open_faults.iter().cloned().collect(),
        }
    }
}

/// Records a new incident in `registered` (000 step 1). A user report is answered with
/// `ReportAccepted`. Most callers want [`open`], which also validates.
pub fn register(
    number: IncidentNo,
    device: DeviceId,
    origin: Origin,
    context: DeviceContext,
    actor: Actor,
    now: Millis,
    policy: &Policy,
) -> Decision {
    register_at(
        number,
        Some(device),
        origin,
        None,
        context,
        actor,
        now,
        policy,
    )
}

#[allow(clippy::too_many_arguments)] // the private form of `register` and `open_fault`
fn register_at(
    number: IncidentNo,
    device: Option<DeviceId>,
    origin: Origin,
    last_fault: Option<FaultSeq>,
    context: DeviceContext,
    actor: Actor,
    now: Millis,
    policy: &Policy,
) -> Decision {
    let (severity, active) = match &origin {
        Origin::Fault { severity, .. } => (Some(*severity), true),
        Origin::Report { .. } | Origin::Service { .. } => (None, true),
    };
    let report_id = match &origin {
        Origin::Report { report_id, .. } => Some(*report_id),
        Origin::Fault { .. } | Origin::Service { .. } => None,
    };
    let blank = Incident {
        number,
        device,
        origin,
        context,
        state: State::Registered,
        level: Level::L1,
        classification: None,
        assignee: None,
        group: None,
        provider_requests: Vec::new(),
        occurrences: u32::from(severity.is_some()),
        last_seen: now,
        worst_severity: severity,
        fault_active: active,
        last_fault,
        cycles: Vec::new(),
        flapping: false,
        info_requests: Vec::new(),
        sla: SlaClock {
            started_at: now,
            ..SlaClock::default()
        },
        notes: Vec::new(),
        solution: None,
        resolved_at: None,
        opened_at: now,
        closure: None,
        reopen_count: 0,
        audit_len: 0,
        updated_at: now,
        recent: Occurrences::default(),
        reserve: None,
        audit: Vec::new(),
    };
    let mut tx = Change::new(&blank, actor, now, policy);
    let why = format!("registered: {}", blank.origin.description());
    tx.goto(State::Registered, "register", why);
    if let Some(report_id) = report_id {
        tx.send_device(CmdBody::ReportAccepted {
            report_id,
            incident: number,
        });
    }
    tx.finish()
}

/// Registers a new incident and validates it at once (000 steps 1-2): an agent fault goes
/// on to `verifying`; a report missing required fields goes to `needs_info` with a
/// question sent to the device.
pub fn open(
    number: IncidentNo,
    device: DeviceId,
    origin: Origin,
    context: DeviceContext,
    actor: Actor,
    now: Millis,
    policy: &Policy,
) -> Decision {
    open_at(number, device, origin, None, context, actor, now, policy)
}

/// [`open`] for a fault event from `device`: also remembers the event's place in the
/// device's sequence, so a late older event cannot undo a newer one.
pub fn open_fault(
    number: IncidentNo,
    device: DeviceId,
    fault: &FaultInput,
    context: DeviceContext,
    now: Millis,
    policy: &Policy,
) -> Decision {
    let actor = Actor::Device {
        device: device.clone(),
    };
    let mut d = open_at(
        number,
        device,
        Origin::from_fault(&fault.fault),
        Some(fault.position()),
        context,
        actor,
        now,
        policy,
    );
    d.incident.recent.push(fault.occurrence(now));
    d
}

/// Registers a service asked of a provider with no incident behind it (003 item 2) and
/// makes its request at once: the record is classified as staff say, assigned to whoever
/// asked, placed at the level that follows it up, and waits for the provider from its
/// first moment. The request is checked as on any incident (the week's notice, a provider
/// or a warranty to suggest one); when it is refused, nothing is registered.
#[allow(clippy::too_many_arguments)] // the facts of a new record, each its own
pub fn open_service(
    number: IncidentNo,
    order: &ServiceOrder,
    spec: &ProviderRequestSpec,
    context: DeviceContext,
    by: &Person,
    now: Millis,
    policy: &Policy,
) -> Result<Decision, WorkflowError> {
    for (field, value) in [("summary", &order.summary), ("category", &order.category)] {
        if value.trim().is_empty() {
            return Err(WorkflowError::Empty {
                incident: number,
                action: "request_provider",
                field,
            });
        }
    }
    let actor = Actor::Person(by.clone());
    let origin = Origin::Service {
        summary: order.summary.trim().to_owned(),
        text: order.text.trim().to_owned(),
        requester: by.name.clone(),
    };
    let reg = register_at(
        number,
        order.device.clone(),
        origin,
        None,
        context,
        actor.clone(),
        now,
        policy,
    );
    let mut tx = Change::new(&reg.incident, actor, now, policy);
    tx.start_state = State::Registered;
    let level = order.level.unwrap_or(Level::L2);
    let rules = policy.rules().config();
    let priority = spec.priority.unwrap_or(Priority::P3);
    let c = Classification {
        category: order.category.trim().to_owned(),
        impact: Impact::Medium,
        urgency: Urgency::Medium,
        priority,
        level,
        group: order
            .group
            .clone()
            .unwrap_or_else(|| rules.fallback.group.clone()),
        resources: Vec::new(),
        path: None,
        rule: "manual".to_owned(),
    };
    let mut changes = classification_changes(None, &c);
    changes.push(change("group", "", c.group.clone()));
    changes.push(change("assignee", "", by.name.clone()));
    tx.inc.group = Some(c.group.clone());
    tx.inc.assignee = Some(by.name.clone());
    tx.inc.classification = Some(c);
    tx.record(
        level.state(),
        "route",
        format!(
            "service asked of a provider by {}, with no incident behind it; level {level} \
             follows it up",
            by.name
        ),
        changes,
    );
    let placed = tx.finish();
    let mut asked = apply_command(
        &placed.incident,
        by,
        &Command::RequestProvider(spec.clone()),
        now,
        policy,
    )?;
    let mut records = reg.records;
    records.extend(placed.records);
    records.append(&mut asked.records);
    let mut messages = reg.messages;
    messages.extend(placed.messages);
    messages.append(&mut asked.messages);
    Ok(Decision {
        incident: asked.incident,
        records,
        messages,
    })
}

#[allow(clippy::too_many_arguments)] // the private form of `open` and `open_fault`
fn open_at(
    number: IncidentNo,
    device: DeviceId,
    origin: Origin,
    last_fault: Option<FaultSeq>,
    context: DeviceContext,
    actor: Actor,
    now: Millis,
    policy: &Policy,
) -> Decision {
    let reg = register_at(
        number,
        Some(device),
        origin,
        last_fault,
        context,
        actor.clone(),
        now,
        policy,
    );
    let mut tx = Change::new(&reg.incident, actor, now, policy);
    tx.start_state = State::Registered;
    tx.goto(
        State::Validating,
        "validate",
        "checking the information needed".to_owned(),
    );
    tx.run_validation();
    let mut d = tx.finish();
    let mut records = reg.records;
    records.append(&mut d.records);
    let mut messages = reg.messages;
    messages.append(&mut d.messages);
    Decision {
        incident: d.incident,
        records,
        messages,
    }
}

/// Applies one input to an incident at `now`.
pub fn apply(
    incident: &Incident,
    input: &Input,
    now: Millis,
    policy: &Policy,
) -> Result<Decision, WorkflowError> {
    match input {
        Input::Person { by, command } => apply_command(incident, by, command, now, policy),
        Input::Device { device, event } => apply_device(incident, device, event, now, policy),
    }
}

fn non_empty(
    inc: &Incident,
    action: &'static str,
    field: &'static str,
    text: &str,
) -> Result<(), WorkflowError> {
    if text.trim().is_empty() {
        Err(WorkflowError::Empty {
            incident: inc.number,
            action,
            field,
        })
    } else {
        Ok(())
    }
}

/// The incident's pending provider request, which `action` needs.
fn pending_request<'a>(
    inc: &'a Incident,
    action: &'static str,
) -> Result<&'a ProviderRequest, WorkflowError> {
    inc.pending_provider()
        .filter(|_| inc.state == State::WaitingProvider)
        .ok_or(WorkflowError::Illegal {
            incident: inc.number,
            state: inc.state,
            action,
        })
}

/// `why`, then the person's note when there is one.
fn with_note(why: String, note: &str) -> String {
    let note = note.trim();
    if note.is_empty() {
        why
    } else {
        format!("{why}: {note}")
    }
}

fn apply_command(
    inc: &Incident,
    by: &Person,
    command: &Command,
    now: Millis,
    policy: &Policy,
) -> Result<Decision, WorkflowError> {
    use State::*;
    let action = command.name();
    let illegal = || WorkflowError::Illegal {
        incident: inc.number,
        state: inc.state,
        action,
    };
    let mut tx = Change::new(inc, Actor::Person(by.clone()), now, policy);
    let state = inc.state;
    match command {
        Command::Validate => {
            if !matches!(state, Registered | Validating) {
                return Err(illegal());
            }
            tx.goto(Validating, "validate", format!("{} validates", by.name));
            tx.run_validation();
        }
        Command::RequestInfo { question } => {
            if !matches!(state, Validating | Verifying) {
                return Err(illegal());
            }
            non_empty(inc, action, "question", question)?;
            tx.ask(question.clone(), Vec::new());
        }
        Command::InfoReceived { text } => {
            if state != NeedsInfo {
                return Err(illegal());
            }
            non_empty(inc, action, "text", text)?;
            tx.answer(text, "info_received");
        }
        Command::Confirm { note } => {
            if state != Verifying {
                return Err(illegal());
            }
            let why = if note.trim().is_empty() {
                format!("{} confirmed the problem", by.name)
            } else {
                format!("{} confirmed the problem: {note}", by.name)
            };
            tx.confirm_and_route("verify", why);
        }
        Command::NotReproduced { note } => {
            if state != Verifying {
                return Err(illegal());
            }
            let why = if note.trim().is_empty() {
                "the problem could not be reproduced".to_owned()
            } else {
                format!("the problem could not be reproduced: {note}")
            };
            tx.close(ClosureReason::NotReproduced, "not_reproduced", why);
        }
        Command::Classify(ch) => {
            if !matches!(
                state,
                Diagnosed | Level1 | Level2 | Level3 | WaitingProvider
            ) {
                return Err(illegal());
            }
            let Some(old) = inc.classification.clone() else {
                return Err(illegal());
            };
            let mut new = old.clone();
            if let Some(c) = &ch.category {
                non_empty(inc, action, "category", c)?;
                new.category = c.clone();
            }
            if let Some(i) = ch.impact {
                new.impact = i;
            }
            if let Some(u) = ch.urgency {
                new.urgency = u;
            }
            new.priority = match ch.priority {
                Some(p) => p,
                None if ch.impact.is_some() || ch.urgency.is_some() => policy
                    .rules()
                    .config()
                    .matrix
                    .priority(new.impact, new.urgency),
                None => old.priority,
            };
            if let Some(r) = &ch.resources {
                new.resources = r.clone();
            }
            if let Some(p) = ch.path {
                new.path = p;
            }
            new.rule = "manual".to_owned();
            let changes = classification_changes(Some(&old), &new);
            tx.inc.classification = Some(new);
            tx.record(
                state,
                "classify",
                format!("{} reclassified", by.name),
                changes,
            );
        }
        Command::Assign { assignee, group } => {
            if state == Closed {
                return Err(illegal());
            }
            if assignee.is_none() && group.is_none() {
                return Err(WorkflowError::Empty {
                    incident: inc.number,
                    action,
                    field: "assignee or group",
                });
            }
            let mut changes = Vec::new();
            if let Some(a) = assignee {
                non_empty(inc, action, "assignee", a)?;
                changes.push(change("assignee", opt(&inc.assignee), a.clone()));
                tx.inc.assignee = Some(a.clone());
            }
            if let Some(g) = group {
                non_empty(inc, action, "group", g)?;
                changes.push(change("group", opt(&inc.group), g.clone()));
                tx.inc.group = Some(g.clone());
            }
            tx.record(state, "assign", format!("assigned by {}", by.name), changes);
        }
        Command::Escalate { to, why } => {
            let Some(level) = state.level() else {
                return Err(illegal());
            };
            let why = if why.trim().is_empty() {
                format!("escalated by {}", by.name)
            } else {
                format!("escalated by {}: {why}", by.name)
            };
            match (to, level.up()) {
                (Some(t), _) if *t <= level => {
                    return Err(WorkflowError::NotHigher {
                        incident: inc.number,
                        from: level,
                        to: *t,
                    })
                }
                (Some(t), _) => tx.escalate_to(level, *t, why),
                (None, _) => tx.escalate_from(level, why),
            }
        }
        Command::RequestProvider(spec) => {
            let Some(level) = state.level() else {
                return Err(illegal());
            };
            let req = build_request(inc, spec, &by.name, level, now).map_err(|source| {
                WorkflowError::Provider {
                    incident: inc.number,
                    source,
                }
            })?;
            let mut why = format!(
                "{} request to {} for {} ({}), priority {}",
                match req.kind {
                    ServiceKind::Scheduled => "scheduled",
                    ServiceKind::Unplanned => "unplanned",
                },
                req.provider,
                rfc3339(req.agreed_at),
                if req.affects_network {
                    "affects the network"
                } else {
                    "network not affected"
                },
                req.priority
            );
            if req.under_warranty {
                why.push_str("; asset under warranty with this provider");
            }
            let provider = req.provider.clone();
            let immediate_notice = req.notice_due_at.is_some_and(|t| t <= now);
            tx.inc.provider_requests.push(req);
            tx.record(
                WaitingProvider,
                "request_provider",
                why.clone(),
                vec![change("provider", "", provider.clone())],
            );
            tx.notify(
                NotificationKind::ProviderRequested,
                Audience::Provider(provider),
                format!("incident {}: {why}", inc.number),
            );
            if immediate_notice {
                tx.send_network_notice();
            }
        }
        Command::ProviderAccept { note } => {
            // Once accepted, or once the work is reported done, there is nothing to accept.
            let req = pending_request(inc, action)?;
            if req.accepted.is_some() || req.done.is_some() {
                return Err(illegal());
            }
            let provider = req.provider.clone();
            tx.pending_request_mut().accepted = Some(Stamp {
                at: now,
                by: by.name.clone(),
                note: note.clone(),
            });
            let why = with_note(
                format!("{provider} accepted the request ({})", by.name),
                note,
            );
            tx.record(
                WaitingProvider,
                action,
                why.clone(),
                vec![change("provider.accepted", "", rfc3339(now))],
            );
            tx.notify(
                NotificationKind::ProviderAnswered { accepted: true },
                Audience::Coordinator,
                format!("incident {}: {why}", inc.number),
            );
        }
        Command::ProviderPropose { date, note } => {
            let req = pending_request(inc, action)?;
            if req.done.is_some() {
                return Err(illegal());
            }
            let provider = req.provider.clone();
            let agreed = req.agreed_at;
            super::provider::notice_due(req.kind, req.affects_network, *date, now).map_err(
                |source| WorkflowError::Provider {
                    incident: inc.number,
                    source,
                },
            )?;
            tx.pending_request_mut().proposed = Some(Proposal {
                date: *date,
                stamp: Stamp {
                    at: now,
                    by: by.name.clone(),
                    note: note.clone(),
                },
            });
            let why = with_note(
                format!(
                    "{provider} proposes {} instead of {} ({})",
                    rfc3339(*date),
                    rfc3339(agreed),
                    by.name
                ),
                note,
            );
            tx.record(
                WaitingProvider,
                action,
                why.clone(),
                vec![change("provider.proposed", "", rfc3339(*date))],
            );
            tx.notify(
                NotificationKind::ProviderAnswered { accepted: false },
                Audience::Coordinator,
                format!("incident {}: {why}", inc.number),
            );
        }
        Command::ProviderReschedule { agreed_at, note } => {
            let req = pending_request(inc, action)?;
            let (provider, before) = (req.provider.clone(), req.agreed_at);
            let stamp = Stamp {
                at: now,
                by: by.name.clone(),
                note: note.clone(),
            };
            reschedule(tx.pending_request_mut(), *agreed_at, stamp).map_err(|source| {
                WorkflowError::Provider {
                    incident: inc.number,
                    source,
                }
            })?;
            let accepted = tx
                .incident()
                .pending_provider()
                .is_some_and(|r| r.accepted.is_some());
            let why = with_note(
                format!(
                    "service by {provider} moved to {}{}",
                    rfc3339(*agreed_at),
                    if accepted {
                        ", the date it proposed"
                    } else {
                        "; waiting for the provider to accept it"
                    }
                ),
                note,
            );
            tx.record(
                WaitingProvider,
                action,
                why.clone(),
                vec![change(
                    "provider.agreed_at",
                    rfc3339(before),
                    rfc3339(*agreed_at),
                )],
            );
            tx.notify(
                NotificationKind::ProviderRequested,
                Audience::Provider(provider),
                format!("incident {}: {why}", inc.number),
            );
            if tx
                .incident()
                .pending_provider()
                .and_then(|r| r.notice_due_at)
                .is_some_and(|t| t <= now)
            {
                tx.send_network_notice();
            }
        }
        Command::ProviderDone { report } => {
            let req = pending_request(inc, action)?;
            if req.done.is_some() {
                return Err(illegal());
            }
            let provider = req.provider.clone();
            non_empty(inc, action, "report", report)?;
            tx.pending_request_mut().done = Some(Stamp {
                at: now,
                by: by.name.clone(),
                note: report.clone(),
            });
            let why = format!("{provider} reports the work done ({}): {report}", by.name);
            tx.record(
                WaitingProvider,
                action,
                why.clone(),
                vec![change("provider.done", "", rfc3339(now))],
            );
            tx.notify(
                NotificationKind::VerificationDue,
                Audience::Group(tx.group()),
                format!(
                    "incident {}: {provider} reports the work done; verify it: {report}",
                    inc.number
                ),
            );
        }
        Command::ProviderDelivered { as_agreed, note } => {
            let req = pending_request(inc, action)?;
            let back = req.return_level;
            let provider = req.provider.clone();
            let verification = Delivery {
                verified_at: now,
                verified_by: by.name.clone(),
                as_agreed: *as_agreed,
                note: note.clone(),
            };
            if *as_agreed {
                tx.pending_request_mut().delivery = Some(verification);
                tx.record(
                    back.state(),
                    action,
                    with_note(
                        format!(
                            "{} verified the service of {provider}: delivered as agreed",
                            by.name
                        ),
                        note,
                    ),
                    vec![change("provider.delivery", "", "delivered as agreed")],
                );
            } else {
                non_empty(
                    inc,
                    action,
                    "note (the reason it was not delivered as agreed)",
                    note,
                )?;
                let r = tx.pending_request_mut();
                let report = r.done.take();
                r.accepted = None;
                r.rejections.push(Rejection {
                    verification,
                    report,
                });
                // The work must be done again: its deadline starts again now.
                if let Some(within) = r
                    .resolve_by
                    .map(|t| t.saturating_sub(r.agreed_at.max(r.requested_at)))
                {
                    r.resolve_by = Some(now.saturating_add(within));
                    r.overdue.retain(|o| o.deadline != Deadline::Resolution);
                }
                let n = r.rejections.len();
                tx.record(
                    WaitingProvider,
                    action,
                    format!(
                        "{} verified the service of {provider}: NOT delivered as agreed, the \
                         request is open again: {note}",
                        by.name
                    ),
                    vec![change(
                        "provider.rejections",
                        (n - 1).to_string(),
                        n.to_string(),
                    )],
                );
                let text = format!(
                    "incident {}: {provider} did not deliver as agreed, the request is open \
                     again: {note}",
                    inc.number
                );
                tx.notify(
                    NotificationKind::ProviderNotAsAgreed,
                    Audience::Coordinator,
                    text.clone(),
                );
                tx.notify(
                    NotificationKind::ProviderNotAsAgreed,
                    Audience::Provider(provider),
                    text,
                );
            }
        }
        Command::Resolve { solution } => {
            if state.level().is_none() {
                return Err(illegal());
            }
            non_empty(inc, action, "solution", solution)?;
            tx.inc.solution = Some(solution.clone());
            tx.inc.resolved_at = Some(now);
            let mut why = format!("resolved by {}", by.name);
            if inc.origin.is_fault() && inc.fault_active {
                why.push_str(" (the agent still reports the fault active)");
            }
            tx.record(
                Resolved,
                "resolve",
                why,
                vec![change("solution", opt(&inc.solution), solution.clone())],
            );
        }
        Command::Close { note } => {
            if state != Resolved {
                return Err(illegal());
            }
            if !by.has(Role::ServiceDesk) {
                return Err(WorkflowError::NotServiceDesk {
                    incident: inc.number,
                    actor: by.name.clone(),
                });
            }
            let why = if note.trim().is_empty() {
                "closed definitively by the service desk".to_owned()
            } else {
                format!("closed definitively by the service desk: {note}")
            };
            tx.close(ClosureReason::Resolved, "close", why);
        }
        Command::Reopen { why } => {
            if state != Resolved {
                return Err(illegal());
            }
            non_empty(inc, action, "why", why)?;
            tx.reopen("reopen", format!("{} reopened: {why}", by.name));
        }
        Command::Note { text } => {
            non_empty(inc, action, "text", text)?;
            tx.inc.notes.push(Note {
                at: now,
                author: by.name.clone(),
                text: text.clone(),
            });
            tx.record(state, "note", text.clone(), Vec::new());
        }
        Command::Reserve(spec) => {
            let new = super::reserve::build(inc, spec, &by.name, now).map_err(|source| {
                WorkflowError::Reserve {
                    incident: inc.number,
                    source,
                }
            })?;
            let describe = |r: &Option<super::reserve::Reserve>| {
                r.as_ref()
                    .filter(|r| r.in_force(now))
                    .map_or_else(|| "public".to_owned(), |r| r.describe())
            };
            let (from, to) = (describe(&inc.reserve), describe(&new));
            let why = format!(
                "{} marked the record {to}: {}",
                by.name,
                spec.justification.trim()
            );
            tx.inc.reserve = new;
            tx.record(state, "reserve", why, vec![change("reserve", from, to)]);
            // Classifying the record is not a response to the person who asked.
            return Ok(tx.finish());
        }
    }
    // The first thing a person does is the response (SLA "response" target).
    if tx.inc.sla.responded_at.is_none() {
        tx.inc.sla.responded_at = Some(now);
        if let Some(last) = tx.records.last_mut() {
            last.changes
                .push(change("sla.responded_at", "", rfc3339(now)));
            if let Some(a) = tx.inc.audit.last_mut() {
                *a = last.clone();
            }
        }
    }
    Ok(tx.finish())
}

fn apply_device(
    inc: &Incident,
    device: &DeviceId,
    event: &DeviceEvent,
    now: Millis,
    policy: &Policy,
) -> Result<Decision, WorkflowError> {
    if inc.device.as_ref() != Some(device) {
        return Err(WorkflowError::WrongSubject {
            incident: inc.number,
            expected: inc
                .device
                .as_ref()
                .map_or_else(|| "no device".to_owned(), |d| format!("device {d}")),
            got: format!("device {device}"),
        });
    }
    let mut tx = Change::new(
        inc,
        Actor::Device {
            device: device.clone(),
        },
        now,
        policy,
    );
    match event {
        DeviceEvent::Reply { text } => {
            if inc.state == State::NeedsInfo && !text.trim().is_empty() {
                tx.answer(text, "reply");
            } else {
                // Never drop what a user wrote: keep it as a note.
                tx.inc.notes.push(Note {
                    at: now,
                    author: format!("device {device}"),
                    text: text.clone(),
                });
                tx.record(
                    inc.state,
                    "reply",
                    format!("reply kept as a note (incident is {}): {text}", inc.state),
                    Vec::new(),
                );
            }
        }
        DeviceEvent::Fault(fi) => fault_event(&mut tx, inc, fi)?,
    }
    Ok(tx.finish())
}

fn fault_event(tx: &mut Change<'_>, inc: &Incident, fi: &FaultInput) -> Result<(), WorkflowError> {
    let ev = &fi.fault;
    let now = tx.now;
    let policy = tx.policy;
    let Some(key) = inc.fault_key() else {
        return Err(WorkflowError::WrongSubject {
            incident: inc.number,
            expected: "a user report".to_owned(),
            got: format!("fault {}", ev.kind),
        });
    };
    if key.kind != ev.kind || key.subject != ev.subject.as_str() {
        return Err(WorkflowError::WrongSubject {
            incident: inc.number,
            expected: format!("fault {} on {}", key.kind, key.subject),
            got: format!("fault {} on {}", ev.kind, ev.subject),
        });
    }
    let state = inc.state;
    if fi.is_stale_for(inc) {
        let last = inc.last_fault.unwrap_or(fi.position());
        let after = if last.instance == fi.instance {
            format!("seq {}", last.seq)
        } else {
            "a newer event from a later installation of the agent".to_owned()
        };
        tx.record(
            state,
            "fault_late",
            format!(
                "{} {} (seq {}) arrived after {after}: kept in the history, nothing changed",
                ev.kind,
                ev.action.as_str(),
                fi.seq
            ),
            Vec::new(),
        );
        return Ok(());
    }
    let seq_change = change(
        "last_fault_seq",
        inc.last_fault
            .map(|l| l.seq.to_string())
            .unwrap_or_default(),
        fi.seq.to_string(),
    );
    tx.inc.last_fault = Some(fi.position());
    tx.inc.recent.push(fi.occurrence(now));
    tx.inc.updated_at = tx.inc.updated_at.max(now);
    match ev.action {
        FaultAction::Cleared => {
            tx.inc.fault_active = false;
            let changes = vec![
                change("fault_active", inc.fault_active.to_string(), "false"),
                seq_change,
            ];
            let in_window = now.saturating_sub(inc.opened_at) <= policy.verification_window();
            if state == State::Verifying && in_window && !inc.flapping {
                tx.record(
                    state,
                    "fault_cleared",
                    format!("the agent cleared the fault: {}", ev.message),
                    changes,
                );
                tx.close(
                    ClosureReason::Transient,
                    "transient",
                    format!(
                        "the fault cleared within the {} verification window",
                        Dur(policy.verification_window())
                    ),
                );
            } else {
                tx.record(
                    state,
                    "fault_cleared",
                    format!("the agent cleared the fault: {}", ev.message),
                    changes,
                );
            }
        }
        FaultAction::Raised | FaultAction::Updated => {
            if state == State::Closed {
                let closed_at = inc.closure.as_ref().map_or(inc.opened_at, |c| c.at);
                if now.saturating_sub(closed_at) > policy.reopen_window() {
                    return Err(WorkflowError::ReopenWindowPassed {
                        incident: inc.number,
                        closed_at: rfc3339(closed_at),
                    });
                }
            }
            let returned = !inc.fault_active;
            let mut changes = vec![
                change(
                    "occurrences",
                    inc.occurrences.to_string(),
                    inc.occurrences.saturating_add(1).to_string(),
                ),
                seq_change,
            ];
            tx.inc.occurrences = inc.occurrences.saturating_add(1);
            tx.inc.last_seen = now;
            tx.inc.fault_active = true;
            if returned {
                changes.push(change("fault_active", "false", "true"));
            }
            let worse = inc.worst_severity.is_none_or(|w| ev.severity > w);
            if worse {
                changes.push(change(
                    "worst_severity",
                    inc.worst_severity
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                    ev.severity.to_string(),
                ));
                tx.inc.worst_severity = Some(ev.severity);
            }
            // A repeat of a fault that is active, no worse and not reopening anything is
            // an occurrence: counted, its details in the ring, the event itself in the
            // event store. Only what changes the incident's course is an audit record, so
            // a chatty device does not grow the trail by one record per event.
            let notable = returned || worse || matches!(state, State::Closed | State::Resolved);
            if notable {
                let action = if ev.action == FaultAction::Raised {
                    "fault_raised"
                } else {
                    "fault_updated"
                };
                tx.record(
                    state,
                    action,
                    format!(
                        "{} ({} {})",
                        ev.message, ev.evidence.value, ev.evidence.unit
                    )
                    .trim()
                    .to_owned(),
                    changes,
                );
            }
            if returned {
                count_cycle(tx, now, policy);
            }
            raise_priority(tx, ev);
            match state {
                State::Closed | State::Resolved => {
                    tx.reopen(
                        "reopen",
                        "the fault came back after the incident was resolved".to_owned(),
                    );
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// A return after a clear: counts toward flapping.
fn count_cycle(tx: &mut Change<'_>, now: Millis, policy: &Policy) {
    let (threshold, window) = policy.flapping();
    tx.inc
        .cycles
        .retain(|t| now.saturating_sub(*t) < window && *t <= now);
    tx.inc.cycles.push(now);
    let n = tx.inc.cycles.len();
    if !tx.inc.flapping && n >= threshold as usize {
        tx.inc.flapping = true;
        let state = tx.inc.state;
        let why = format!(
            "the fault came back {n} times within {}: kept open and flagged instead of opening new incidents",
            Dur(window)
        );
        tx.record(
            state,
            "flapping",
            why.clone(),
            vec![change("flapping", "false", "true")],
        );
        tx.notify(
            NotificationKind::Flapping,
            Audience::Group(tx.group()),
            format!("incident {}: {why}", tx.inc.number),
        );
    }
}

/// A fault that got worse after diagnosis raises the urgency (never lowers it), unless a
/// person classified the incident by hand.
fn raise_priority(tx: &mut Change<'_>, ev: &FaultEvent) {
    let Some(old) = tx.inc.classification.clone() else {
        return;
    };
    if old.rule == "manual" {
        return;
    }
    let urgency = urgency_of(ev.severity);
    if urgency <= old.urgency {
        return;
    }
    let mut new = old.clone();
    new.urgency = urgency;
    new.priority = tx
        .policy
        .rules()
        .config()
        .matrix
        .priority(new.impact, urgency)
        .min(old.priority);
    let changes = classification_changes(Some(&old), &new);
    tx.inc.classification = Some(new);
    let state = tx.inc.state;
    tx.record(
        state,
        "reprioritise",
        format!("the fault worsened to {}", ev.severity),
        changes,
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
#[path = "engine_tests.rs"]
mod tests;
