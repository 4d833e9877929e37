//! An incident without its audit trail: what lists show, the live feed carries and the
//! store indexes, so a page of 50 never decodes 50 full audit trails.
use serde::{Deserialize, Serialize};
use vigia_protocol::{DeviceId, Millis, Severity};

use super::incident::{Incident, Level, Origin, Priority, State};
use super::policy::Policy;
use super::sla::{next_deadline, resolution_due, response_due};

/// An incident without its audit trail: what lists show and what the store indexes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentSummary {
    /// Its number, under the name people use ("incident 12").
    pub number: u64,
    /// The device; none for a service on something no agent watches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceId>,
    /// `fault`, `report` or `service` (asked of a provider with no incident behind it).
    pub origin: String,
    /// Fault kind or report category.
    pub kind: String,
    /// Fault subject or reporter.
    pub subject: String,
    /// Workflow state.
    pub state: State,
    /// Level working it (or that last worked it).
    pub level: Level,
    /// Priority, once diagnosed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// Category, once diagnosed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Person assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// Group assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// For a fault: the agent last said it is present. For a report: true.
    pub fault_active: bool,
    /// Flagged flapping.
    #[serde(default)]
    pub flapping: bool,
    /// Worst severity seen, for faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// One line.
    pub title: String,
    /// Fault events seen.
    pub occurrences: u32,
    /// Opened at (collector clock).
    pub opened_at: Millis,
    /// Last change (the newest audit record or fault occurrence).
    pub updated_at: Millis,
    /// Closed at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<Millis>,
    /// When the next timer (SLA, verification window, auto-close...) falls due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_deadline: Option<Millis>,
    /// The device's tags at opening (site, role...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The SLA at a glance, for lists.
    #[serde(default)]
    pub sla: SlaBrief,
    /// Its information classification, if it has one (lapsed or not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve: Option<super::reserve::Reserve>,
}

/// The SLA at a glance: when the next target (response, else resolution) falls due while
/// the clocks run, whether they are paused, and whether a target was missed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaBrief {
    /// The next SLA target's deadline; `None` when none is pending or the clocks are
    /// paused (waiting for the user or a provider).
    #[serde(default)]
    pub due: Option<Millis>,
    /// The clocks are paused.
    #[serde(default)]
    pub paused: bool,
    /// A target (response or resolution) was missed.
    #[serde(default)]
    pub breached: bool,
}

impl IncidentSummary {
    /// The summary of `i` under `policy`.
    pub fn of(i: &Incident, policy: &Policy) -> Self {
        let mut s = Self::new(i, next_deadline(i, policy));
        s.sla.due = response_due(i, policy).or_else(|| resolution_due(i, policy));
        s
    }

    /// The summary of `i`, whose next timer falls due at `next_deadline` (without the
    /// SLA's deadline, which needs the policy: see [`Self::of`]).
    pub fn new(i: &Incident, next_deadline: Option<Millis>) -> Self {
        let (origin, kind, subject) = match &i.origin {
            Origin::Fault { kind, subject, .. } => {
                ("fault", kind.as_str().to_string(), subject.clone())
            }
            Origin::Report {
                category, reporter, ..
            } => ("report", category.clone(), reporter.clone()),
            Origin::Service { requester, .. } => (
                "service",
                i.classification
                    .as_ref()
                    .map(|c| c.category.clone())
                    .unwrap_or_default(),
                requester.clone(),
            ),
        };
        let c = i.classification.as_ref();
        Self {
            number: i.number,
            device: i.device.clone(),
            origin: origin.to_string(),
            kind,
            subject,
            state: i.state,
            level: i.level,
            priority: c.map(|c| c.priority),
            category: c.map(|c| c.category.clone()),
            assignee: i.assignee.clone(),
            group: i.group.clone().or_else(|| c.map(|c| c.group.clone())),
            fault_active: i.fault_active,
            flapping: i.flapping,
            severity: i.worst_severity,
            title: i.origin.description(),
            occurrences: i.occurrences,
            opened_at: i.opened_at,
            updated_at: i.updated_at,
            closed_at: i.closure.as_ref().map(|c| c.at),
            next_deadline,
            tags: i.context.tags.clone(),
            sla: SlaBrief {
                due: None,
                paused: i.sla.paused_since.is_some(),
                breached: i.sla.response_breached_at.is_some()
                    || i.sla.resolution_breached_at.is_some(),
            },
            reserve: i.reserve.clone(),
        }
    }
}
