//! Routing a device event into the workflow: which incident it concerns, and what storing
//! it changes.
//!
//! The store used to make these decisions inside its transaction; now it asks
//! [`related`] which incident to load, loads it, calls [`route`] and persists the [`Plan`]
//! it gets back, so a second store backend persists the same decisions without repeating
//! a line of them. A redelivered event changes nothing, but the answers it caused may be
//! what got lost, so [`repeat_commands`] says what to send the device again.
use vigia_protocol::{bounded, CmdBody, DeviceId, Event, EventBody};

use super::correlate::{correlate, Correlation};
use super::engine::{
    apply, open, open_fault, Decision, DeviceEvent, FaultInput, Input, Outgoing, WorkflowError,
};
use super::incident::{Actor, DeviceContext, FaultKey, Incident, IncidentNo, Origin, State};
use super::policy::Policy;
use super::time::Millis;

/// The stored incident an event may concern, which the store loads before [`route`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Related {
    /// The newest incident, open or closed, of this fault key.
    Fault(FaultKey),
    /// The incident a reply answers.
    Incident(IncidentNo),
    /// None: a report opens a new incident, a drop notice touches none.
    Nothing,
}

/// Which stored incident `ev` may concern.
pub fn related(ev: &Event) -> Related {
    match &ev.body {
        EventBody::Fault(f) => Related::Fault(FaultKey {
            device: ev.device.clone(),
            kind: f.kind,
            subject: f.subject.as_str().to_owned(),
        }),
        EventBody::Reply(r) => Related::Incident(r.incident),
        EventBody::Report(_) | EventBody::Dropped(_) => Related::Nothing,
    }
}

/// What storing a new event changes.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Write the new incident the decision holds; it took the number the caller offered.
    Open(Decision),
    /// Rewrite the related incident as the decision holds it.
    Update(Decision),
    /// The workflow refused the event: keep the event, change no incident.
    Refused(WorkflowError),
    /// No incident changes: a clear with nothing to clear, a reply about an incident
    /// that is not this device's (or does not exist), a drop notice.
    Nothing,
}

impl Plan {
    /// The decision to persist, and whether it opens its incident.
    pub fn decision(&self) -> Option<(&Decision, bool)> {
        match self {
            Self::Open(d) => Some((d, true)),
            Self::Update(d) => Some((d, false)),
            Self::Refused(_) | Self::Nothing => None,
        }
    }
}

/// Decides what a new (never stored) event changes. `related` is the incident that
/// [`related`] named, as stored, or `None`; `next_number` is the number a new incident
/// would take (the caller advances its counter only on [`Plan::Open`]); `ctx` is what the
/// collector knows of the device.
pub fn route(
    ev: &Event,
    related: Option<&Incident>,
    ctx: DeviceContext,
    next_number: IncidentNo,
    now: Millis,
    policy: &Policy,
) -> Plan {
    let decided = |r: Result<Decision, WorkflowError>| match r {
        Ok(d) => Plan::Update(d),
        Err(e) => Plan::Refused(e),
    };
    match &ev.body {
        EventBody::Fault(f) => {
            let fi = FaultInput {
                instance: ev.instance,
                seq: ev.seq,
                ts: ev.ts,
                fault: f.clone(),
            };
            match (correlate(related, &fi, now, policy), related) {
                (Correlation::Ignore, _) => Plan::Nothing,
                (Correlation::OpenNew, _) => Plan::Open(open_fault(
                    next_number,
                    ev.device.clone(),
                    &fi,
                    ctx,
                    now,
                    policy,
                )),
                (_, Some(inc)) => decided(apply(
                    inc,
                    &Input::Device {
                        device: ev.device.clone(),
                        event: DeviceEvent::Fault(fi),
                    },
                    now,
                    policy,
                )),
                // Correlation names an incident only when it was given one.
                (_, None) => Plan::Nothing,
            }
        }
        EventBody::Report(r) => Plan::Open(open(
            next_number,
            ev.device.clone(),
            Origin::from_report(r),
            ctx,
            Actor::Device {
                device: ev.device.clone(),
            },
            now,
            policy,
        )),
        EventBody::Reply(r) => match related {
            // A device answers only for its own incidents.
            Some(inc) if inc.number == r.incident && inc.device.as_ref() == Some(&ev.device) => {
                decided(apply(
                    inc,
                    &Input::Device {
                        device: ev.device.clone(),
                        event: DeviceEvent::Reply {
                            text: r.text.as_str().to_owned(),
                        },
                    },
                    now,
                    policy,
                ))
            }
            _ => Plan::Nothing,
        },
        EventBody::Dropped(_) => Plan::Nothing,
    }
}

/// The commands a decision sends to `device` (the one whose event caused it): ingest
/// sends them with the event's ack, after the flush.
pub fn device_commands(decision: &Decision, device: &DeviceId) -> Vec<CmdBody> {
    decision
        .messages
        .iter()
        .filter_map(|m| match m {
            Outgoing::Device { device: to, body } if to == device => Some(body.clone()),
            _ => None,
        })
        .collect()
}

/// What to send the device again when it redelivers an event already stored: for a
/// report, its incident number and, while the incident waits for the user, the pending
/// question. `incident` is the incident the stored event touched, as stored now.
pub fn repeat_commands(stored: &Event, incident: Option<&Incident>) -> Vec<CmdBody> {
    let (EventBody::Report(r), Some(inc)) = (&stored.body, incident) else {
        return Vec::new();
    };
    let mut cmds = vec![CmdBody::ReportAccepted {
        report_id: r.report_id,
        incident: inc.number,
    }];
    if let (State::NeedsInfo, Some(q)) = (inc.state, inc.pending_question()) {
        cmds.push(CmdBody::RequestInfo {
            incident: inc.number,
            question: bounded(&q.question),
        });
    }
    cmds
}
