//! Correlation: which incident a fault event belongs to.
//!
//! One open incident per (device, fault, subject): repeats add occurrences, a fault that
//! returns within the reopen window after closing reopens its incident, and one that keeps
//! coming back is flagged flapping and kept open. The store only has to index the latest
//! incident per [`FaultKey`](super::incident::FaultKey); this function decides, and
//! [`apply`](super::engine::apply) (or [`open`](super::engine::open) for a new one) then
//! makes the change, so the decision and the change can never disagree about state.
use serde::{Deserialize, Serialize};
use vigia_protocol::FaultAction;

use super::engine::FaultInput;

use super::incident::{Incident, IncidentNo, State};
use super::policy::Policy;
use super::time::Millis;

/// What to do with a fault event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "incident", rename_all = "snake_case")]
pub enum Correlation {
    /// No incident to attach it to: open a new one.
    OpenNew,
    /// The fault repeats on an open incident: add an occurrence.
    AddOccurrence(IncidentNo),
    /// The fault returns once too often: the open incident becomes flapping.
    MarkFlapping(IncidentNo),
    /// The fault returns to a resolved incident, or within the reopen window after its
    /// incident closed: reopen it.
    Reopen(IncidentNo),
    /// The fault cleared on an open incident.
    Clear(IncidentNo),
    /// An event older than the newest one the incident applied (resent after a loss):
    /// apply it so the history shows it; it changes nothing else.
    Late(IncidentNo),
    /// Nothing to attach a clear to.
    Ignore,
}

impl Correlation {
    /// The incident to apply the event to, if any.
    pub fn incident(self) -> Option<IncidentNo> {
        match self {
            Self::AddOccurrence(n)
            | Self::MarkFlapping(n)
            | Self::Reopen(n)
            | Self::Clear(n)
            | Self::Late(n) => Some(n),
            Self::OpenNew | Self::Ignore => None,
        }
    }
}

/// Decides what `input` means given `latest`, the most recent incident with the event's
/// (device, fault, subject) key, open or closed.
pub fn correlate(
    latest: Option<&Incident>,
    input: &FaultInput,
    now: Millis,
    policy: &Policy,
) -> Correlation {
    let event = &input.fault;
    let Some(inc) = latest else {
        return match event.action {
            FaultAction::Cleared => Correlation::Ignore,
            FaultAction::Raised | FaultAction::Updated => Correlation::OpenNew,
        };
    };
    if input.is_stale_for(inc) {
        return Correlation::Late(inc.number);
    }
    match (inc.state, event.action) {
        (State::Closed, FaultAction::Cleared) => Correlation::Ignore,
        (State::Closed, _) => {
            let closed_at = inc.closure.as_ref().map_or(inc.opened_at, |c| c.at);
            if now.saturating_sub(closed_at) <= policy.reopen_window() {
                Correlation::Reopen(inc.number)
            } else {
                Correlation::OpenNew
            }
        }
        (_, FaultAction::Cleared) => Correlation::Clear(inc.number),
        (State::Resolved, _) => Correlation::Reopen(inc.number),
        (_, _) => {
            let (threshold, window) = policy.flapping();
            let recent = inc
                .cycles
                .iter()
                .filter(|t| now.saturating_sub(**t) < window && **t <= now)
                .count();
            if !inc.fault_active && !inc.flapping && recent + 1 >= threshold as usize {
                Correlation::MarkFlapping(inc.number)
            } else {
                Correlation::AddOccurrence(inc.number)
            }
        }
    }
}
