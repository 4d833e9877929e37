//! Tests of the transitions, timers and correlation, with an injected clock.
use proptest::prelude::*;
use vigia_protocol::{
    bounded, CmdBody, DeviceId, Evidence, FaultAction, FaultEvent, FaultKind, Severity, Urgency,
};

use super::*;
use crate::workflow::correlate::{correlate, Correlation};
use crate::workflow::incident::*;
use crate::workflow::policy::Policy;
use crate::workflow::provider::ProviderError;
use crate::workflow::reserve::{hide, ReservedField, Secrecy, MAX_YEARS, RESERVED};
use crate::workflow::sla::next_deadline;
use crate::workflow::tick::tick;
use crate::workflow::time::{DAY, HOUR, MINUTE, WEEK};

const T0: Millis = 1_795_315_500_000; // 2026-11-22T02:45:00Z

fn policy() -> Policy {
    Policy::default()
}

fn dev() -> DeviceId {
    DeviceId::new("ws-042").unwrap()
}

fn desk() -> Person {
    Person::new("marta", [Role::ServiceDesk])
}

fn tech() -> Person {
    Person::new("jorge", [Role::OnSite, Role::Specialist])
}

fn by(p: Person, command: Command) -> Input {
    Input::Person { by: p, command }
}

fn device(event: DeviceEvent) -> Input {
    Input::Device {
        device: dev(),
        event,
    }
}

fn fault(action: FaultAction, kind: FaultKind, severity: Severity) -> FaultEvent {
    FaultEvent {
        action,
        kind,
        subject: bounded("/var"),
        severity,
        evidence: Evidence {
            value: 97.5,
            threshold: 97.0,
            unit: bounded("%"),
            source: bounded("statvfs /var"),
        },
        message: bounded("/var is 97.5% full"),
    }
}

fn disk(action: FaultAction) -> FaultEvent {
    fault(action, FaultKind::DiskSpace, Severity::Critical)
}

fn report(category: &str, contact: &str) -> Origin {
    Origin::Report {
        report_id: 9,
        category: category.into(),
        summary: "no network on floor 3".into(),
        text: "since this morning".into(),
        reporter: "ana".into(),
        contact: contact.into(),
        urgency: Urgency::High,
        snapshot: vec![],
        open_faults: vec![],
    }
}

/// Checks that `d` extends `old`'s trail without touching it, that every record is
/// numbered and chained from → to, and that the chain ends in the new state.
fn check_decision(old: &Incident, d: &Decision) {
    let new = &d.incident;
    // Only a repeat of an active fault changes nothing the trail records: it is counted,
    // and kept in the ring of recent occurrences.
    let occurrence = new.occurrences > old.occurrences
        && new.state == old.state
        && new.recent.last() != old.recent.last();
    assert!(
        !d.records.is_empty() || occurrence,
        "a decision without a record"
    );
    assert_eq!(new.audit_len as usize, new.audit.len(), "trail miscounted");
    assert!(new.updated_at >= old.updated_at, "updated_at went back");
    assert_eq!(
        &new.audit[..old.audit.len()],
        &old.audit[..],
        "trail rewritten"
    );
    assert_eq!(
        &new.audit[old.audit.len()..],
        &d.records[..],
        "records missing"
    );
    let mut state = old.state;
    for (i, r) in new.audit.iter().enumerate().skip(old.audit.len()) {
        assert_eq!(r.seq as usize, i);
        assert_eq!(
            r.from, state,
            "record {i} does not start where the last ended"
        );
        state = r.to;
    }
    assert_eq!(state, new.state);
    check_invariants(new);
}

fn check_invariants(inc: &Incident) {
    assert_eq!(
        inc.state == State::Closed,
        inc.closure.is_some(),
        "{inc:#?}"
    );
    if let Some(level) = inc.state.level() {
        assert_eq!(inc.level, level);
    }
    assert!((1..=3).contains(&inc.level.number()));
    assert_eq!(inc.sla.paused_since.is_some(), inc.state.sla_paused());
    if inc.state == State::Resolved {
        assert!(inc.resolved_at.is_some() && inc.solution.is_some());
    }
    for (i, r) in inc.audit.iter().enumerate() {
        assert_eq!(r.seq as usize, i);
    }
    let json = serde_json::to_string(inc).unwrap();
    let back: Incident = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, inc, "does not survive the store");
}

fn step(inc: &Incident, input: Input, now: Millis) -> Incident {
    let d = apply(inc, &input, now, &policy()).unwrap_or_else(|e| panic!("{e}"));
    check_decision(inc, &d);
    d.incident
}

static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1000);

/// A fault event as the device sends it: the next seq and device time.
fn seq(fault: FaultEvent) -> FaultInput {
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    FaultInput {
        instance: 0,
        seq: n,
        ts: n,
        fault,
    }
}

fn flt(fault: FaultEvent) -> DeviceEvent {
    DeviceEvent::Fault(seq(fault))
}

fn fault_incident(ev: &FaultEvent, now: Millis) -> Decision {
    open_fault(
        1,
        dev(),
        &seq(ev.clone()),
        DeviceContext::default(),
        now,
        &policy(),
    )
}

fn open_report(origin: Origin, now: Millis) -> Decision {
    open(
        2,
        dev(),
        origin,
        DeviceContext::default(),
        Actor::Device { device: dev() },
        now,
        &policy(),
    )
}

fn run_tick(inc: &Incident, now: Millis) -> Option<Incident> {
    tick(inc, now, &policy()).map(|d| {
        check_decision(inc, &d);
        d.incident
    })
}

fn notifications(d: &Decision) -> Vec<NotificationKind> {
    d.messages
        .iter()
        .filter_map(|m| match m {
            Outgoing::Notify(n) => Some(n.kind.clone()),
            Outgoing::Device { .. } => None,
        })
        .collect()
}

fn at_level1() -> Incident {
    let d = open_report(report("network", "x1234"), T0);
    step(
        &d.incident,
        by(
            desk(),
            Command::Confirm {
                note: String::new(),
            },
        ),
        T0 + MINUTE,
    )
}

/// An incident in `state`, reached by real transitions where the state can be at rest;
/// the three pass-through states (validating, diagnosed, reopened) are set by hand on an
/// otherwise real incident.
fn incident_in(state: State) -> Incident {
    let t = T0 + 2 * MINUTE;
    match state {
        State::Registered => {
            register(
                2,
                dev(),
                report("network", "x1234"),
                DeviceContext::default(),
                Actor::Device { device: dev() },
                T0,
                &policy(),
            )
            .incident
        }
        State::Validating => {
            let mut i = incident_in(State::Registered);
            i.state = State::Validating;
            i
        }
        State::NeedsInfo => open_report(report("network", ""), T0).incident,
        State::Verifying => open_report(report("network", "x1234"), T0).incident,
        State::Diagnosed => {
            let mut i = at_level1();
            i.state = State::Diagnosed;
            i
        }
        State::Level1 => at_level1(),
        State::Level2 => step(
            &at_level1(),
            by(
                tech(),
                Command::Escalate {
                    to: None,
                    why: String::new(),
                },
            ),
            t,
        ),
        State::Level3 => step(
            &incident_in(State::Level2),
            by(
                tech(),
                Command::Escalate {
                    to: None,
                    why: String::new(),
                },
            ),
            t,
        ),
        State::WaitingProvider => step(&at_level1(), by(tech(), provider_cmd()), t),
        State::Resolved => step(
            &at_level1(),
            by(
                tech(),
                Command::Resolve {
                    solution: "replaced the cable".into(),
                },
            ),
            t,
        ),
        State::Closed => step(
            &incident_in(State::Resolved),
            by(
                desk(),
                Command::Close {
                    note: String::new(),
                },
            ),
            t + MINUTE,
        ),
        State::Reopened => {
            let mut i = incident_in(State::Resolved);
            i.state = State::Reopened;
            i.sla.paused_since = None;
            i.resolved_at = None;
            i
        }
    }
}

fn provider_cmd() -> Command {
    Command::RequestProvider(ProviderRequestSpec {
        provider: Some("Redes SAS".into()),
        kind: ServiceKind::Unplanned,
        priority: None,
        agreed_at: T0 + DAY,
        affects_network: false,
        conditions: "on-site visit".into(),
        respond_within: None,
        resolve_within: None,
        request: None,
    })
}

fn all_commands() -> Vec<Command> {
    vec![
        Command::ProviderAccept {
            note: "we come on Monday".into(),
        },
        Command::ProviderPropose {
            date: T0 + 9 * DAY,
            note: "no technician before".into(),
        },
        Command::ProviderReschedule {
            agreed_at: T0 + 9 * DAY,
            note: String::new(),
        },
        Command::ProviderDone {
            report: "switch replaced".into(),
        },
        Command::Validate,
        Command::RequestInfo {
            question: "which port?".into(),
        },
        Command::InfoReceived {
            text: "call x1234".into(),
        },
        Command::Confirm {
            note: String::new(),
        },
        Command::NotReproduced {
            note: String::new(),
        },
        Command::Classify(ClassifyChange {
            impact: Some(Impact::High),
            ..ClassifyChange::default()
        }),
        Command::Assign {
            assignee: Some("jorge".into()),
            group: None,
        },
        Command::Escalate {
            to: None,
            why: String::new(),
        },
        provider_cmd(),
        Command::ProviderDelivered {
            as_agreed: true,
            note: String::new(),
        },
        Command::Resolve {
            solution: "replaced the cable".into(),
        },
        Command::Close {
            note: String::new(),
        },
        Command::Reopen {
            why: "still no network".into(),
        },
        Command::Note {
            text: "called the user".into(),
        },
        Command::Reserve(ReserveSpec {
            level: Secrecy::Reserved,
            years: Some(5),
            from: None,
            fields: None,
            justification: "personal data of the reporter".into(),
        }),
    ]
}

/// The legal transitions: (state, action) → the state the decision ends in. Everything
/// not listed must be refused with an error naming the state and the action.
fn legal(state: State, action: &str) -> Option<State> {
    use State::*;
    let always = |s| match action {
        "note" | "reserve" => Some(s),
        "assign" if s != Closed => Some(s),
        _ => None,
    };
    let level_work = |s: State| match action {
        "classify" => Some(s),
        "escalate" => Some(match s {
            Level1 => Level2,
            _ => Level3,
        }),
        "request_provider" => Some(WaitingProvider),
        "resolve" => Some(Resolved),
        _ => always(s),
    };
    match (state, action) {
        (Registered | Validating, "validate") => Some(Verifying),
        (Validating | Verifying, "request_info") => Some(NeedsInfo),
        (NeedsInfo, "info_received") => Some(Verifying),
        (Verifying, "confirm") => Some(Level1),
        (Verifying, "not_reproduced") => Some(Closed),
        (Diagnosed | WaitingProvider, "classify") => Some(state),
        (Level1 | Level2 | Level3, _) => level_work(state),
        (WaitingProvider, "provider_delivered") => Some(Level1),
        (
            WaitingProvider,
            "provider_accept" | "provider_propose" | "provider_reschedule" | "provider_done",
        ) => Some(WaitingProvider),
        (Resolved, "close") => Some(Closed),
        (Resolved, "reopen") => Some(Level1),
        _ => always(state),
    }
}

#[test]
fn every_command_in_every_state_is_legal_or_a_named_error() {
    let mut legal_count = 0;
    for state in State::ALL {
        for command in all_commands() {
            let inc = incident_in(state);
            assert_eq!(inc.state, state);
            let action = command.name();
            let res = apply(&inc, &by(desk(), command), T0 + HOUR, &policy());
            match (legal(state, action), res) {
                (Some(want), Ok(d)) => {
                    assert_eq!(d.incident.state, want, "{state} + {action}");
                    check_decision(&inc, &d);
                    legal_count += 1;
                }
                (None, Err(e)) => {
                    assert_eq!(
                        e,
                        WorkflowError::Illegal {
                            incident: inc.number,
                            state,
                            action
                        }
                    );
                    let msg = e.to_string();
                    assert!(
                        msg.contains(state.as_str()) && msg.contains(action),
                        "{msg}"
                    );
                }
                (Some(want), Err(e)) => panic!("{state} + {action} should go to {want}: {e}"),
                (None, Ok(d)) => panic!(
                    "{state} + {action} should be refused, went to {}",
                    d.incident.state
                ),
            }
        }
    }
    assert!(legal_count > 40, "the table lost its legal entries");
}

#[test]
fn replies_resume_needs_info_and_are_kept_as_notes_elsewhere() {
    for state in State::ALL {
        let inc = incident_in(state);
        let d = apply(
            &inc,
            &device(DeviceEvent::Reply {
                text: "ext 1234".into(),
            }),
            T0 + HOUR,
            &policy(),
        )
        .unwrap();
        check_decision(&inc, &d);
        if state == State::NeedsInfo {
            assert_eq!(d.incident.state, State::Verifying);
        } else {
            assert_eq!(d.incident.state, state);
            assert_eq!(
                d.incident.notes.last().map(|n| n.text.as_str()),
                Some("ext 1234")
            );
        }
    }
}

#[test]
fn every_fault_event_in_every_state() {
    use FaultAction::*;
    for state in State::ALL {
        // The same incidents as the command table, but about a fault.
        let mut inc = incident_in(state);
        inc.origin = Origin::from_fault(&disk(Raised));
        inc.worst_severity = Some(Severity::Critical);
        for action in [Raised, Updated, Cleared] {
            let now = T0 + 3 * MINUTE; // inside the verification and reopen windows
            let d = apply(&inc, &device(flt(disk(action))), now, &policy())
                .unwrap_or_else(|e| panic!("{state} + {action:?}: {e}"));
            check_decision(&inc, &d);
            let want = match (state, action) {
                (State::Closed | State::Resolved, Raised | Updated) => State::Level1,
                (State::Verifying, Cleared) => State::Closed,
                _ => state,
            };
            assert_eq!(d.incident.state, want, "{state} + {action:?}");
            let more = u32::from(action != Cleared);
            assert_eq!(
                d.incident.occurrences,
                inc.occurrences + more,
                "{state} + {action:?}"
            );
            assert_eq!(d.incident.fault_active, action != Cleared);
        }
    }
}

#[test]
fn needs_info_round_trip_asks_the_device_and_resumes_validating() {
    let d = open_report(report("network", ""), T0);
    let inc = d.incident;
    assert_eq!(inc.state, State::NeedsInfo);
    let actions: Vec<&str> = inc.audit.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["register", "validate", "request_info"]);
    let question = d
        .messages
        .iter()
        .find_map(|m| match m {
            Outgoing::Device {
                body: CmdBody::RequestInfo { incident, question },
                ..
            } => Some((*incident, question.to_string())),
            _ => None,
        })
        .expect("a RequestInfo command to the device");
    assert_eq!(question.0, 2);
    assert!(question.1.contains("how to reach you"), "{}", question.1);
    assert!(d.messages.iter().any(|m| matches!(
        m,
        Outgoing::Device {
            body: CmdBody::ReportAccepted {
                report_id: 9,
                incident: 2
            },
            ..
        }
    )));

    // The user answers two hours later: validating again, then verifying.
    let t = T0 + 2 * HOUR;
    let d = apply(
        &inc,
        &device(DeviceEvent::Reply {
            text: "ext 1234".into(),
        }),
        t,
        &policy(),
    )
    .unwrap();
    check_decision(&inc, &d);
    let after = &d.incident;
    let tail: Vec<(State, State)> = d.records.iter().map(|r| (r.from, r.to)).collect();
    assert_eq!(
        tail,
        [
            (State::NeedsInfo, State::Validating),
            (State::Validating, State::Verifying)
        ]
    );
    assert_eq!(after.info_requests[0].answer.as_deref(), Some("ext 1234"));
    assert_eq!(after.sla.paused_ms, 2 * HOUR, "needs_info pauses the SLA");
    assert!(d.messages.iter().any(|m| matches!(
        m,
        Outgoing::Device { body: CmdBody::IncidentState { state, note, .. }, .. }
            if state.as_str() == "verifying" && note.as_str() == "IT is checking the problem"
    )));
}

#[test]
fn an_unanswered_question_is_asked_again_then_goes_back_to_the_service_desk() {
    let p = policy();
    let inc = open_report(report("network", ""), T0).incident;
    assert_eq!(inc.state, State::NeedsInfo);
    let remind_at = T0 + p.info_reminder_after();
    assert_eq!(crate::workflow::next_deadline(&inc, &p), Some(remind_at));
    assert!(
        tick(&inc, remind_at - 1, &p).is_none(),
        "nothing before the reminder"
    );

    // The reminder: the same question to the device again, still waiting, SLA paused.
    let d = tick(&inc, remind_at, &p).expect("the reminder");
    check_decision(&inc, &d);
    assert_eq!(d.incident.state, State::NeedsInfo);
    assert_eq!(d.records.last().unwrap().action, "remind");
    assert_eq!(d.incident.info_requests[0].reminded_at, Some(remind_at));
    assert!(d.messages.iter().any(|m| matches!(
        m,
        Outgoing::Device { body: CmdBody::RequestInfo { incident: 2, question }, .. }
            if question.contains("how to reach you")
    )));
    let reminded = d.incident;
    assert!(
        tick(&reminded, remind_at + 1, &p).is_none(),
        "one reminder only"
    );

    // Still no answer at the deadline: back to the service desk, verifying, SLA running.
    let give_up = T0 + p.info_timeout();
    assert_eq!(crate::workflow::next_deadline(&reminded, &p), Some(give_up));
    let d = tick(&reminded, give_up, &p).expect("the timeout");
    check_decision(&reminded, &d);
    assert_eq!(d.incident.state, State::Verifying);
    assert_eq!(d.records.last().unwrap().action, "info_timeout");
    assert_eq!(
        d.incident.sla.paused_ms,
        p.info_timeout(),
        "paused while it waited"
    );
    assert!(d.incident.sla.paused_since.is_none());
    assert!(d.messages.iter().any(|m| matches!(
        m,
        Outgoing::Notify(n) if n.kind == NotificationKind::InfoUnanswered
            && n.audience == Audience::ServiceDesk
    )));

    // An answer before the reminder cancels both timers.
    let d = apply(
        &inc,
        &device(DeviceEvent::Reply {
            text: "ext 1234".into(),
        }),
        T0 + HOUR,
        &p,
    )
    .unwrap();
    let answered = d.incident;
    assert!(tick(&answered, T0 + p.info_timeout(), &p)
        .map(|d| d
            .records
            .iter()
            .all(|r| r.action != "remind" && r.action != "info_timeout"))
        .unwrap_or(true));
}

#[test]
fn an_empty_reply_does_not_answer_the_question() {
    let inc = open_report(report("network", ""), T0).incident;
    let d = apply(
        &inc,
        &device(DeviceEvent::Reply { text: "  ".into() }),
        T0 + 1,
        &policy(),
    )
    .unwrap();
    assert_eq!(d.incident.state, State::NeedsInfo);
    assert!(d.incident.pending_question().is_some());
}

#[test]
fn agent_faults_pass_validation_and_wait_for_verification() {
    let d = fault_incident(&disk(FaultAction::Raised), T0);
    let inc = d.incident;
    assert_eq!(inc.state, State::Verifying);
    assert!(
        d.messages.is_empty(),
        "nothing to tell a device about its own fault"
    );
    assert_eq!(next_deadline(&inc, &policy()), Some(T0 + 5 * MINUTE));
    assert!(run_tick(&inc, T0 + 5 * MINUTE - 1).is_none());
    let inc = run_tick(&inc, T0 + 5 * MINUTE).unwrap();
    assert_eq!(inc.state, State::Level1);
    let c = inc.classification.as_ref().unwrap();
    assert_eq!((c.rule.as_str(), c.priority), ("capacity", Priority::P1));
}

#[test]
fn a_fault_that_clears_within_the_verification_window_closes_as_transient() {
    let inc = fault_incident(&disk(FaultAction::Raised), T0).incident;
    let closed = step(
        &inc,
        device(flt(disk(FaultAction::Cleared))),
        T0 + 4 * MINUTE,
    );
    assert_eq!(closed.state, State::Closed);
    assert_eq!(
        closed.closure.as_ref().unwrap().reason,
        ClosureReason::Transient
    );
    assert!(closed
        .audit
        .last()
        .unwrap()
        .why
        .contains("verification window"));
    assert_eq!(next_deadline(&closed, &policy()), None);

    // Cleared after the window (no tick ran yet): not transient, verified by the timer.
    let late = step(
        &inc,
        device(flt(disk(FaultAction::Cleared))),
        T0 + 6 * MINUTE,
    );
    assert_eq!(late.state, State::Verifying);
    assert!(!late.fault_active);
    assert_eq!(
        run_tick(&late, T0 + 6 * MINUTE).unwrap().state,
        State::Level1
    );
}

#[test]
fn a_report_is_confirmed_or_closed_not_reproduced_by_a_person() {
    let inc = incident_in(State::Verifying);
    assert_eq!(
        next_deadline(&inc, &policy()),
        None,
        "reports are not verified by a timer"
    );
    let closed = step(
        &inc,
        by(
            tech(),
            Command::NotReproduced {
                note: "works here".into(),
            },
        ),
        T0 + HOUR,
    );
    assert_eq!(
        closed.closure.as_ref().unwrap().reason,
        ClosureReason::NotReproduced
    );
    let routed = step(
        &inc,
        by(
            tech(),
            Command::Confirm {
                note: String::new(),
            },
        ),
        T0 + HOUR,
    );
    let c = routed.classification.as_ref().unwrap();
    assert_eq!(
        (c.rule.as_str(), routed.state),
        ("report-network", State::Level1)
    );
    assert_eq!(routed.group.as_deref(), Some("service-desk"));
    assert_eq!(routed.sla.responded_at, Some(T0 + HOUR));
}

#[test]
fn sla_breach_escalates_l1_l2_l3_with_an_injected_clock() {
    // disk 97 % full, critical: "capacity" rule, level 1, medium × critical = P1
    // (response 15m, resolution 4h, one hour per level).
    let p = policy();
    let mut inc = fault_incident(&disk(FaultAction::Raised), T0).incident;
    let mut seen = Vec::new();
    let mut now = T0;
    while let Some(next) = next_deadline(&inc, &p) {
        assert!(next >= now, "deadlines never go back");
        assert!(
            tick(&inc, next - 1, &p).is_none(),
            "nothing before the deadline"
        );
        let d = tick(&inc, next, &p).unwrap();
        check_decision(&inc, &d);
        seen.push((
            (next - T0) / MINUTE,
            d.incident.state,
            d.records.last().unwrap().action.clone(),
            notifications(&d),
        ));
        inc = d.incident;
        now = next;
    }
    use NotificationKind::*;
    use State::*;
    let sla = |target| SlaBreached { target };
    assert_eq!(
        seen,
        vec![
            (5, Level1, "route".into(), vec![]),
            (15, Level1, "sla_breach".into(), vec![sla(Target::Response)]),
            (
                65,
                Level2,
                "escalate".into(),
                vec![Escalated {
                    from: Level::L1,
                    to: Level::L2
                }]
            ),
            (
                125,
                Level3,
                "escalate".into(),
                vec![Escalated {
                    from: Level::L2,
                    to: Level::L3
                }]
            ),
            (185, Level3, "escalate".into(), vec![EscalationFromL3]),
            (
                240,
                Level3,
                "escalate".into(),
                vec![sla(Target::Resolution), EscalationFromL3]
            ),
        ]
    );

    // One late tick (the collector was down for ten hours) reaches the same state with
    // the same breach times.
    let fresh = fault_incident(&disk(FaultAction::Raised), T0).incident;
    let d = tick(&fresh, T0 + 10 * HOUR, &p).unwrap();
    check_decision(&fresh, &d);
    assert_eq!(d.incident.state, Level3);
    assert_eq!(d.incident.sla, inc.sla);
    assert_eq!(notifications(&d).len(), 6);
}

#[test]
fn escalation_by_hand_and_its_limits() {
    let l1 = at_level1();
    let l3 = step(
        &l1,
        by(
            tech(),
            Command::Escalate {
                to: Some(Level::L3),
                why: "needs vendor".into(),
            },
        ),
        T0 + HOUR,
    );
    assert_eq!(l3.state, State::Level3);
    let e = apply(
        &l3,
        &by(
            tech(),
            Command::Escalate {
                to: Some(Level::L2),
                why: String::new(),
            },
        ),
        T0 + HOUR,
        &policy(),
    )
    .unwrap_err();
    assert_eq!(
        e,
        WorkflowError::NotHigher {
            incident: 2,
            from: Level::L3,
            to: Level::L2
        }
    );
    let d = apply(
        &l3,
        &by(
            tech(),
            Command::Escalate {
                to: None,
                why: String::new(),
            },
        ),
        T0 + HOUR,
        &policy(),
    )
    .unwrap();
    assert_eq!(d.incident.state, State::Level3);
    assert_eq!(notifications(&d), vec![NotificationKind::EscalationFromL3]);
    assert!(d
        .messages
        .iter()
        .any(|m| matches!(m, Outgoing::Notify(n) if n.audience == Audience::PlatformOwner)));
}

#[test]
fn sla_clock_pauses_in_needs_info_and_waiting_provider() {
    let p = policy();
    // report, network, high urgency: medium × high = P2 (30m, 8h, 2h per level)
    let asked = open_report(report("network", ""), T0).incident;
    assert!(asked.sla.paused_since.is_some());
    assert_eq!(
        next_deadline(&asked, &p),
        Some(T0 + p.info_reminder_after()),
        "no SLA timer runs while waiting for the user: only the reminder"
    );
    let answered = step(
        &asked,
        device(DeviceEvent::Reply {
            text: "x1234".into(),
        }),
        T0 + 3 * HOUR,
    );
    let l1 = step(
        &answered,
        by(
            tech(),
            Command::Confirm {
                note: String::new(),
            },
        ),
        T0 + 3 * HOUR + 10 * MINUTE,
    );
    assert_eq!(l1.priority(), Some(Priority::P2));
    assert_eq!(l1.sla.paused_ms, 3 * HOUR);
    assert_eq!(l1.sla.active(T0 + 3 * HOUR + 10 * MINUTE), 10 * MINUTE);
    // level budget: 2h of active time from entering level 1 (active 10m)
    assert_eq!(
        next_deadline(&l1, &p),
        Some(T0 + 3 * HOUR + 10 * MINUTE + 2 * HOUR)
    );

    let waiting = step(&l1, by(tech(), provider_cmd()), T0 + 4 * HOUR);
    assert_eq!(waiting.state, State::WaitingProvider);
    assert_eq!(next_deadline(&waiting, &p), None);
    assert!(
        run_tick(&waiting, T0 + 30 * DAY).is_none(),
        "no escalation while waiting"
    );
    let back = step(
        &waiting,
        by(
            tech(),
            Command::ProviderDelivered {
                as_agreed: true,
                note: "switch replaced".into(),
            },
        ),
        T0 + 9 * HOUR,
    );
    assert_eq!(back.state, State::Level1, "back to its level");
    assert_eq!(back.sla.paused_ms, 8 * HOUR);
    assert_eq!(back.sla.active(T0 + 9 * HOUR), HOUR);
    assert_eq!(
        back.sla.level_started_active, l1.sla.level_started_active,
        "same level, same budget"
    );
    assert_eq!(
        next_deadline(&back, &p),
        Some(T0 + 8 * HOUR + 10 * MINUTE + 2 * HOUR)
    );
    let status = crate::workflow::sla::sla_status(&back, T0 + 9 * HOUR, &p);
    assert_eq!(
        (status.active_ms, status.paused_ms, status.paused),
        (HOUR, 8 * HOUR, false)
    );
    assert_eq!(status.resolution_due_at, Some(T0 + 8 * HOUR + 8 * HOUR));
    assert_eq!(
        status.escalation_due_at,
        Some(T0 + 8 * HOUR + 10 * MINUTE + 2 * HOUR)
    );
    assert_eq!(status.response_due_at, None, "responded when confirmed");
    let status = crate::workflow::sla::sla_status(&waiting, T0 + 5 * HOUR, &p);
    assert!(status.paused && status.resolution_due_at.is_none());
    assert_eq!(status.paused_ms, 3 * HOUR + HOUR);
    assert_eq!(
        run_tick(&back, T0 + 10 * HOUR + 10 * MINUTE).unwrap().state,
        State::Level2
    );
}

#[test]
fn provider_requests_follow_003() {
    let l2 = step(
        &at_level1(),
        by(
            tech(),
            Command::Escalate {
                to: None,
                why: String::new(),
            },
        ),
        T0 + HOUR,
    );
    let spec = |kind, agreed_at, provider: Option<&str>| {
        Command::RequestProvider(ProviderRequestSpec {
            provider: provider.map(String::from),
            kind,
            priority: None,
            agreed_at,
            affects_network: true,
            conditions: String::new(),
            respond_within: None,
            resolve_within: None,
            request: None,
        })
    };
    // Scheduled network work needs a week's notice.
    let e = apply(
        &l2,
        &by(
            tech(),
            spec(ServiceKind::Scheduled, T0 + 3 * DAY, Some("Redes SAS")),
        ),
        T0 + HOUR,
        &policy(),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            WorkflowError::Provider {
                source: ProviderError::NoticeTooShort { .. },
                ..
            }
        ),
        "{e}"
    );
    // The week's rule at its boundary: 6 days 23 h ahead is refused, with the first time
    // that could be agreed; exactly 7 days (7 × 24 h, whatever the time zone's clocks do)
    // is accepted.
    let now = T0 + HOUR;
    let e = apply(
        &l2,
        &by(
            tech(),
            spec(
                ServiceKind::Scheduled,
                now + 6 * DAY + 23 * HOUR,
                Some("Redes SAS"),
            ),
        ),
        now,
        &policy(),
    )
    .unwrap_err();
    assert!(
        matches!(
            &e,
            WorkflowError::Provider {
                source: ProviderError::NoticeTooShort { earliest },
                ..
            } if *earliest == now + WEEK
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains(&crate::workflow::rfc3339(now + WEEK)),
        "the refusal names the date from which it could be scheduled: {e}"
    );
    let ok = step(
        &l2,
        by(
            tech(),
            spec(ServiceKind::Scheduled, now + WEEK, Some("Redes SAS")),
        ),
        now,
    );
    assert_eq!(ok.pending_provider().unwrap().notice_due_at, Some(now));
    // Ten days ahead: the notice falls due three days from now, one week before the work.
    let agreed = T0 + HOUR + 10 * DAY;
    let waiting = step(
        &l2,
        by(
            tech(),
            spec(ServiceKind::Scheduled, agreed, Some("Redes SAS")),
        ),
        T0 + HOUR,
    );
    let req = waiting.pending_provider().unwrap();
    assert_eq!(
        (req.return_level, req.notice_due_at),
        (Level::L2, Some(agreed - WEEK))
    );
    assert_eq!(next_deadline(&waiting, &policy()), Some(agreed - WEEK));
    let d = tick(&waiting, agreed - WEEK, &policy()).unwrap();
    assert!(d.messages.iter().any(|m| matches!(
        m,
        Outgoing::Notify(Notification { kind: NotificationKind::NetworkNotice { agreed_at }, audience: Audience::AllStaff, .. }) if *agreed_at == agreed
    )));
    let noticed = d.incident;
    assert_eq!(
        next_deadline(&noticed, &policy()),
        None,
        "the notice is sent once"
    );
    // Not delivered as agreed: the request is open again, the coordinator and the
    // provider hear of it.
    let d = apply(
        &noticed,
        &by(
            desk(),
            Command::ProviderDelivered {
                as_agreed: false,
                note: "came a day late".into(),
            },
        ),
        agreed + DAY,
        &policy(),
    )
    .unwrap();
    assert_eq!(d.incident.state, State::WaitingProvider);
    assert_eq!(
        notifications(&d),
        vec![
            NotificationKind::ProviderNotAsAgreed,
            NotificationKind::ProviderNotAsAgreed
        ]
    );
    let req = d
        .incident
        .pending_provider()
        .expect("the request is open again");
    assert!(req.delivery.is_none());
    assert_eq!(req.rejections.len(), 1);
    assert!(!req.rejections[0].verification.as_agreed);

    // Unplanned network work notifies at once.
    let d = apply(
        &l2,
        &by(
            tech(),
            spec(ServiceKind::Unplanned, T0 + 2 * HOUR, Some("Redes SAS")),
        ),
        T0 + HOUR,
        &policy(),
    )
    .unwrap();
    assert!(
        notifications(&d).contains(&NotificationKind::NetworkNotice {
            agreed_at: T0 + 2 * HOUR
        })
    );

    // No provider named: the warranty provider is suggested when under warranty.
    let e = apply(
        &l2,
        &by(tech(), spec(ServiceKind::Unplanned, T0 + 2 * HOUR, None)),
        T0 + HOUR,
        &policy(),
    )
    .unwrap_err();
    assert!(matches!(
        e,
        WorkflowError::Provider {
            source: ProviderError::NoProvider,
            ..
        }
    ));
    let mut covered = l2.clone();
    covered.context.warranty = Some(Warranty {
        provider: "Dell".into(),
        until: T0 + 365 * DAY,
    });
    let w = step(
        &covered,
        by(tech(), spec(ServiceKind::Unplanned, T0 + 2 * HOUR, None)),
        T0 + HOUR,
    );
    let req = w.pending_provider().unwrap();
    assert_eq!((req.provider.as_str(), req.under_warranty), ("Dell", true));
    covered.context.warranty = Some(Warranty {
        provider: "Dell".into(),
        until: T0,
    });
    assert!(
        apply(
            &covered,
            &by(tech(), spec(ServiceKind::Unplanned, T0 + 2 * HOUR, None)),
            T0 + HOUR,
            &policy()
        )
        .is_err(),
        "expired warranty"
    );
}

#[test]
fn only_the_service_desk_closes_definitively() {
    let resolved = incident_in(State::Resolved);
    let e = apply(
        &resolved,
        &by(
            tech(),
            Command::Close {
                note: String::new(),
            },
        ),
        T0 + HOUR,
        &policy(),
    )
    .unwrap_err();
    assert_eq!(
        e,
        WorkflowError::NotServiceDesk {
            incident: 2,
            actor: "jorge".into()
        }
    );
    assert!(e.to_string().contains("service desk"));
    let closed = step(
        &resolved,
        by(
            desk(),
            Command::Close {
                note: "user confirmed".into(),
            },
        ),
        T0 + HOUR,
    );
    let c = closed.closure.as_ref().unwrap();
    assert_eq!((c.at, c.reason), (T0 + HOUR, ClosureReason::Resolved));
    assert_eq!(closed.audit.last().unwrap().actor, Actor::Person(desk()));
}

#[test]
fn reopen_goes_back_to_level_one() {
    let l3 = step(
        &at_level1(),
        by(
            tech(),
            Command::Escalate {
                to: Some(Level::L3),
                why: String::new(),
            },
        ),
        T0 + HOUR,
    );
    let resolved = step(
        &l3,
        by(
            tech(),
            Command::Resolve {
                solution: "firmware".into(),
            },
        ),
        T0 + 2 * HOUR,
    );
    let reopened = step(
        &resolved,
        by(
            desk(),
            Command::Reopen {
                why: "user says no".into(),
            },
        ),
        T0 + 3 * HOUR,
    );
    assert_eq!((reopened.state, reopened.level), (State::Level1, Level::L1));
    assert_eq!(reopened.solution, None);
    assert_eq!(reopened.reopen_count, 1);
    let path: Vec<_> = reopened
        .audit
        .iter()
        .rev()
        .take(2)
        .map(|r| (r.from, r.to))
        .collect();
    assert_eq!(
        path,
        [
            (State::Reopened, State::Level1),
            (State::Resolved, State::Reopened)
        ]
    );
    // The old solution is in the trail, not lost.
    assert!(reopened.audit.iter().any(|r| r
        .changes
        .iter()
        .any(|c| c.field == "solution" && c.from == "firmware")));
}

#[test]
fn resolved_incidents_auto_close_after_the_quiet_period() {
    let resolved = incident_in(State::Resolved);
    let resolved_at = resolved.resolved_at.unwrap();
    assert_eq!(
        next_deadline(&resolved, &policy()),
        Some(resolved_at + 3 * DAY)
    );
    // A note restarts the quiet period.
    let noted = step(
        &resolved,
        by(
            tech(),
            Command::Note {
                text: "called, all fine".into(),
            },
        ),
        resolved_at + DAY,
    );
    assert!(run_tick(&noted, resolved_at + 3 * DAY).is_none());
    let closed = run_tick(&noted, resolved_at + 4 * DAY).unwrap();
    assert_eq!(
        closed.closure.as_ref().unwrap().reason,
        ClosureReason::AutoClosed
    );
    assert_eq!(closed.audit.last().unwrap().actor, Actor::System);
}

#[test]
fn a_fault_that_returns_within_the_reopen_window_reopens_its_incident() {
    let p = policy();
    let l1 = run_tick(
        &fault_incident(&disk(FaultAction::Raised), T0).incident,
        T0 + 5 * MINUTE,
    )
    .unwrap();
    let cleared = step(&l1, device(flt(disk(FaultAction::Cleared))), T0 + HOUR);
    let resolved = step(
        &cleared,
        by(
            tech(),
            Command::Resolve {
                solution: "cleaned /var/log".into(),
            },
        ),
        T0 + 2 * HOUR,
    );
    let closed = step(
        &resolved,
        by(
            desk(),
            Command::Close {
                note: String::new(),
            },
        ),
        T0 + 3 * HOUR,
    );
    let again = seq(disk(FaultAction::Raised));

    let within = T0 + 3 * HOUR + p.reopen_window();
    assert_eq!(
        correlate(Some(&closed), &again, within, &p),
        Correlation::Reopen(1)
    );
    let reopened = step(&closed, device(DeviceEvent::Fault(again.clone())), within);
    assert_eq!(
        (reopened.state, reopened.closure.clone()),
        (State::Level1, None)
    );
    assert_eq!(reopened.occurrences, 2);

    let after = within + 1;
    assert_eq!(
        correlate(Some(&closed), &again, after, &p),
        Correlation::OpenNew
    );
    let e = apply(
        &closed,
        &device(DeviceEvent::Fault(again.clone())),
        after,
        &p,
    )
    .unwrap_err();
    assert!(
        matches!(e, WorkflowError::ReopenWindowPassed { incident: 1, .. }),
        "{e}"
    );

    // Resolved but not yet closed: a return reopens at once.
    assert_eq!(
        correlate(Some(&resolved), &again, T0 + 2 * HOUR + 1, &p),
        Correlation::Reopen(1)
    );
    assert_eq!(
        step(
            &resolved,
            device(DeviceEvent::Fault(again)),
            T0 + 2 * HOUR + 1
        )
        .state,
        State::Level1
    );

    // Nothing known: open; a clear with nothing open: ignore.
    assert_eq!(
        correlate(None, &seq(disk(FaultAction::Raised)), T0, &p),
        Correlation::OpenNew
    );
    assert_eq!(
        correlate(None, &seq(disk(FaultAction::Cleared)), T0, &p),
        Correlation::Ignore
    );
    assert_eq!(
        correlate(Some(&closed), &seq(disk(FaultAction::Cleared)), T0, &p),
        Correlation::Ignore
    );
    assert_eq!(
        correlate(Some(&l1), &seq(disk(FaultAction::Updated)), T0, &p),
        Correlation::AddOccurrence(1)
    );
    assert_eq!(
        correlate(Some(&l1), &seq(disk(FaultAction::Cleared)), T0, &p),
        Correlation::Clear(1)
    );
}

#[test]
fn a_late_older_fault_event_changes_nothing_but_the_history() {
    let p = policy();
    let raised = seq(disk(FaultAction::Raised));
    let inc = open_fault(1, dev(), &raised, DeviceContext::default(), T0, &p).incident;
    // The broker lost `updated` (seq n+1); `cleared` (n+2) arrives, closing as transient;
    // then the agent resends n+1.
    let lost = FaultInput {
        instance: 0,
        seq: raised.seq + 1,
        ts: raised.ts + 1,
        fault: disk(FaultAction::Updated),
    };
    let cleared = FaultInput {
        instance: 0,
        seq: raised.seq + 2,
        ts: raised.ts + 2,
        fault: disk(FaultAction::Cleared),
    };
    let closed = step(
        &inc,
        device(DeviceEvent::Fault(cleared.clone())),
        T0 + MINUTE,
    );
    assert_eq!(closed.state, State::Closed);
    assert_eq!(
        correlate(Some(&closed), &lost, T0 + 2 * MINUTE, &p),
        Correlation::Late(1)
    );
    let after = step(&closed, device(DeviceEvent::Fault(lost)), T0 + 2 * MINUTE);
    assert_eq!(
        (after.state, after.fault_active, after.occurrences),
        (State::Closed, false, 1)
    );
    assert_eq!(after.audit.last().unwrap().action, "fault_late");
    // The same event twice is late too (the store deduplicates, this is the second line).
    assert_eq!(
        correlate(Some(&closed), &cleared, T0 + 2 * MINUTE, &p),
        Correlation::Late(1)
    );
    // A reinstalled agent (a new instance) restarts its seqs but its clock moves on: not
    // late.
    let fresh = FaultInput {
        instance: 7,
        seq: 1,
        ts: raised.ts + 10,
        fault: disk(FaultAction::Raised),
    };
    assert_eq!(
        correlate(Some(&closed), &fresh, T0 + 3 * MINUTE, &p),
        Correlation::Reopen(1)
    );
}

#[test]
fn a_late_event_of_an_agent_since_reinstalled_changes_nothing() {
    let p = policy();
    // The old installation (instance 1) raised at seq 900.
    let old_raise = FaultInput {
        instance: 1,
        seq: 900,
        ts: 10_000,
        fault: disk(FaultAction::Raised),
    };
    let inc = open_fault(1, dev(), &old_raise, DeviceContext::default(), T0, &p).incident;
    // Reinstalled (instance 2, seqs from 1 again): the fault is still there.
    let new_update = FaultInput {
        instance: 2,
        seq: 3,
        ts: 20_000,
        fault: disk(FaultAction::Updated),
    };
    let inc = step(&inc, device(DeviceEvent::Fault(new_update)), T0 + MINUTE);
    assert!(inc.fault_active);
    // The old installation's clear, sent before the reinstall, arrives late: its seq is
    // higher than the new instance's, but it is older, and must not clear the fault.
    let old_clear = FaultInput {
        instance: 1,
        seq: 901,
        ts: 15_000,
        fault: disk(FaultAction::Cleared),
    };
    let after = step(&inc, device(DeviceEvent::Fault(old_clear)), T0 + 2 * MINUTE);
    assert!(
        after.fault_active,
        "a late event of the old instance cleared the fault"
    );
    assert_eq!(after.state, inc.state);
    let last = after.audit.last().unwrap();
    assert_eq!(last.action, "fault_late");
    assert!(last.why.contains("later installation"), "{}", last.why);
    // Within one instance the seq decides, whatever the clock did: a clear with an
    // earlier timestamp but a later seq (the device clock was set back) applies.
    let set_back = FaultInput {
        instance: 2,
        seq: 4,
        ts: 5_000,
        fault: disk(FaultAction::Cleared),
    };
    let cleared = step(&inc, device(DeviceEvent::Fault(set_back)), T0 + 3 * MINUTE);
    assert!(!cleared.fault_active);
}

#[test]
fn a_flapping_fault_keeps_one_incident_and_is_flagged() {
    let p = policy();
    let mut inc = fault_incident(&disk(FaultAction::Raised), T0).incident;
    let mut now = T0;
    let mut kinds = Vec::new();
    for round in 0..4 {
        now += MINUTE;
        let clear = seq(disk(FaultAction::Cleared));
        assert_eq!(correlate(Some(&inc), &clear, now, &p).incident(), Some(1));
        inc = step(&inc, device(DeviceEvent::Fault(clear)), now);
        if round == 0 {
            assert_eq!(
                inc.closure.as_ref().unwrap().reason,
                ClosureReason::Transient
            );
        }
        now += MINUTE;
        let raise = seq(disk(FaultAction::Raised));
        let c = correlate(Some(&inc), &raise, now, &p);
        kinds.push(c);
        assert_eq!(c.incident(), Some(1), "never a new incident");
        let d = apply(&inc, &device(DeviceEvent::Fault(raise)), now, &p).unwrap();
        check_decision(&inc, &d);
        if c == Correlation::MarkFlapping(1) {
            assert!(notifications(&d).contains(&NotificationKind::Flapping));
        }
        inc = d.incident;
    }
    assert_eq!(
        kinds,
        [
            Correlation::Reopen(1),
            Correlation::AddOccurrence(1),
            Correlation::MarkFlapping(1),
            Correlation::AddOccurrence(1)
        ]
    );
    assert!(inc.flapping);
    assert!(inc.state.is_open());
    assert_eq!(inc.occurrences, 5);
    assert_eq!(
        inc.audit.iter().filter(|r| r.action == "flapping").count(),
        1,
        "flagged once"
    );

    // A flapping fault is never closed as transient.
    let mut flapper = fault_incident(&disk(FaultAction::Raised), T0).incident;
    flapper.flapping = true;
    let kept = step(
        &flapper,
        device(flt(disk(FaultAction::Cleared))),
        T0 + MINUTE,
    );
    assert_eq!(kept.state, State::Verifying);
}

#[test]
fn worse_fault_updates_raise_the_priority() {
    let warn = fault(FaultAction::Raised, FaultKind::DiskSpace, Severity::Warning);
    let l1 = run_tick(&fault_incident(&warn, T0).incident, T0 + 5 * MINUTE).unwrap();
    assert_eq!(l1.priority(), Some(Priority::P4));
    let crit = fault(
        FaultAction::Updated,
        FaultKind::DiskSpace,
        Severity::Critical,
    );
    let worse = step(&l1, device(flt(crit)), T0 + HOUR);
    assert_eq!(worse.priority(), Some(Priority::P1));
    assert_eq!(worse.worst_severity, Some(Severity::Critical));
}

#[test]
fn events_for_another_fault_or_device_are_refused() {
    let inc = fault_incident(&disk(FaultAction::Raised), T0).incident;
    let other = fault(
        FaultAction::Raised,
        FaultKind::FanFailure,
        Severity::Critical,
    );
    let e = apply(&inc, &device(flt(other)), T0, &policy()).unwrap_err();
    assert!(matches!(e, WorkflowError::WrongSubject { .. }));
    let stranger = Input::Device {
        device: DeviceId::new("ws-999").unwrap(),
        event: DeviceEvent::Reply { text: "hi".into() },
    };
    assert!(apply(&inc, &stranger, T0, &policy()).is_err());
    let rep = incident_in(State::Level1);
    assert!(apply(&rep, &device(flt(disk(FaultAction::Raised))), T0, &policy()).is_err());
}

#[test]
fn every_change_has_a_record_with_who_when_and_field_values() {
    let l1 = at_level1();
    let assigned = step(
        &l1,
        by(
            desk(),
            Command::Assign {
                assignee: Some("jorge".into()),
                group: Some("on-site".into()),
            },
        ),
        T0 + HOUR,
    );
    let r = assigned.audit.last().unwrap();
    assert_eq!(
        (r.at, r.actor.clone(), r.action.as_str()),
        (T0 + HOUR, Actor::Person(desk()), "assign")
    );
    assert!(r
        .changes
        .iter()
        .any(|c| c.field == "group" && c.from == "service-desk" && c.to == "on-site"));
    let reclassified = step(
        &assigned,
        by(
            desk(),
            Command::Classify(ClassifyChange {
                impact: Some(Impact::High),
                ..ClassifyChange::default()
            }),
        ),
        T0 + 2 * HOUR,
    );
    let r = reclassified.audit.last().unwrap();
    // high × high = P1, recorded with the old value
    assert!(
        r.changes
            .iter()
            .any(|c| c.field == "priority" && c.from == "P2" && c.to == "P1"),
        "{r:?}"
    );
    assert_eq!(reclassified.classification.as_ref().unwrap().rule, "manual");
    // The diagnosis recorded every classified field.
    let diag = l1.audit.iter().find(|r| r.action == "diagnose").unwrap();
    let fields: Vec<&str> = diag.changes.iter().map(|c| c.field.as_str()).collect();
    for f in [
        "category",
        "impact",
        "urgency",
        "priority",
        "classification.level",
        "group",
    ] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }
}

#[test]
fn export_rows_come_from_the_incidents() {
    use crate::workflow::export::{rows, to_csv, to_json, Period};
    let closed = incident_in(State::Closed);
    let open_one = fault_incident(&disk(FaultAction::Raised), T0 + DAY).incident;
    let all = [closed.clone(), open_one.clone()];
    let r = rows(&all, &Period::default());
    assert_eq!(r.len(), 2);
    let c = &r[0];
    assert_eq!(c.incident, 2);
    assert_eq!(c.date, "2026-11-22T02:45:00Z");
    assert_eq!((c.device.as_str(), c.requester.as_str()), ("ws-042", "ana"));
    assert_eq!(
        (c.category.as_str(), c.priority.as_str(), c.level),
        ("network", "P2", 1)
    );
    assert_eq!(c.description, "no network on floor 3");
    assert_eq!(c.solution, "replaced the cable");
    assert_eq!(c.closing_date, "2026-11-22T02:48:00Z");
    assert_eq!(
        (c.duration.as_str(), c.duration_ms),
        ("3m", Some(3 * MINUTE))
    );
    assert_eq!(c.closure_reason, "resolved");
    let o = &r[1];
    assert_eq!(
        (o.requester.as_str(), o.closing_date.as_str(), o.duration_ms),
        ("agent", "", None)
    );
    // period: registered in [T0 + 1h, ∞) keeps only the second
    let later = rows(
        &all,
        &Period {
            from: Some(T0 + HOUR),
            to: None,
        },
    );
    assert_eq!(later.iter().map(|r| r.incident).collect::<Vec<_>>(), [1]);
    assert!(to_csv(&r).starts_with("date,incident,device,"));
    let json: serde_json::Value = serde_json::from_str(&to_json(&r).unwrap()).unwrap();
    assert_eq!(json[0]["solution"], "replaced the cable");
}

#[test]
fn inputs_and_outputs_have_a_stable_json_shape() {
    let input: Input = serde_json::from_str(
        r#"{"from":"person","by":{"name":"marta","roles":["service_desk"]},
            "command":{"command":"escalate","to":3,"why":"vendor"}}"#,
    )
    .unwrap();
    assert_eq!(
        input,
        by(
            desk(),
            Command::Escalate {
                to: Some(Level::L3),
                why: "vendor".into()
            }
        )
    );
    let provider: Command = serde_json::from_str(
        r#"{"command":"request_provider","provider":"Redes SAS","kind":"scheduled",
            "agreed_at":1,"affects_network":true}"#,
    )
    .unwrap();
    assert!(matches!(
        provider,
        Command::RequestProvider(ProviderRequestSpec {
            affects_network: true,
            ..
        })
    ));
    let bad = serde_json::from_str::<Command>(r#"{"command":"escalate","to":4}"#);
    assert!(bad.is_err(), "level 4 does not exist");
    for c in all_commands() {
        let back: Command = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
    let d = open_report(report("network", ""), T0);
    let json = serde_json::to_value(&d.messages).unwrap();
    assert_eq!(json[0]["type"], "device");
    assert_eq!(json[0]["body"]["type"], "report_accepted");
}

/// The story of issue 4's "done when": a fault becomes an incident, is diagnosed at level
/// 1, escalates to level 2 on its SLA, goes to a provider and back, is resolved and
/// closed, and every step is in the trail and the export.
#[test]
fn full_story_from_fault_to_export() {
    use crate::workflow::export::{rows, Period};
    let p = policy();
    let ctx = DeviceContext {
        tags: vec!["bogota".into()],
        warranty: Some(Warranty {
            provider: "Dell".into(),
            until: T0 + 365 * DAY,
        }),
    };
    let first = seq(disk(FaultAction::Raised));
    let mut inc = open_fault(7, dev(), &first, ctx, T0, &p).incident;
    let mut now = T0;
    let act = |inc: &mut Incident, at: Millis, input: Option<Input>| {
        let d = match input {
            Some(i) => apply(inc, &i, at, &p).unwrap(),
            None => {
                assert_eq!(
                    next_deadline(inc, &p),
                    Some(at),
                    "the timer the collector sets"
                );
                tick(inc, at, &p).unwrap()
            }
        };
        check_decision(inc, &d);
        *inc = d.incident;
        d.messages
    };
    now += 5 * MINUTE;
    act(&mut inc, now, None); // verified: still active after the window
    assert_eq!(
        (inc.state, inc.priority()),
        (State::Level1, Some(Priority::P1))
    );
    now += 5 * MINUTE;
    act(
        &mut inc,
        now,
        Some(by(
            desk(),
            Command::Assign {
                assignee: Some("marta".into()),
                group: None,
            },
        )),
    );
    now = T0 + HOUR + 5 * MINUTE;
    let msgs = act(&mut inc, now, None); // one hour at level 1 (P1 budget)
    assert_eq!(inc.state, State::Level2);
    assert!(msgs.iter().any(|m| matches!(m, Outgoing::Notify(n) if n.kind == NotificationKind::Escalated { from: Level::L1, to: Level::L2 })));
    now += 25 * MINUTE;
    let spec = ProviderRequestSpec {
        provider: None,
        kind: ServiceKind::Unplanned,
        priority: None,
        agreed_at: T0 + DAY,
        affects_network: false,
        conditions: "replace the disk under warranty".into(),
        respond_within: None,
        resolve_within: None,
        request: None,
    };
    act(
        &mut inc,
        now,
        Some(by(tech(), Command::RequestProvider(spec))),
    );
    assert_eq!(
        inc.pending_provider().map(|r| r.provider.as_str()),
        Some("Dell")
    );
    assert_eq!(
        next_deadline(&inc, &p),
        None,
        "the SLA waits with the provider"
    );
    now = T0 + DAY;
    act(
        &mut inc,
        now,
        Some(by(
            tech(),
            Command::ProviderDelivered {
                as_agreed: true,
                note: "disk replaced".into(),
            },
        )),
    );
    assert_eq!(inc.state, State::Level2);
    now += 10 * MINUTE;
    act(&mut inc, now, Some(device(flt(disk(FaultAction::Cleared)))));
    act(
        &mut inc,
        now,
        Some(by(
            tech(),
            Command::Resolve {
                solution: "disk replaced by Dell under warranty".into(),
            },
        )),
    );
    now += HOUR;
    act(
        &mut inc,
        now,
        Some(by(
            desk(),
            Command::Close {
                note: "user confirmed".into(),
            },
        )),
    );

    let trail: Vec<(&str, State)> = inc
        .audit
        .iter()
        .map(|r| (r.action.as_str(), r.to))
        .collect();
    use State::*;
    assert_eq!(
        trail,
        [
            ("register", Registered),
            ("validate", Validating),
            ("validated", Verifying),
            ("verify", Diagnosed),
            ("diagnose", Diagnosed),
            ("route", Level1),
            ("assign", Level1),
            ("escalate", Level2),
            ("request_provider", WaitingProvider),
            ("provider_delivered", Level2),
            ("fault_cleared", Level2),
            ("resolve", Resolved),
            ("close", Closed),
        ]
    );
    assert!(
        inc.sla.resolution_breached_at.is_none(),
        "1h40m of work against 4h"
    );
    // 1h30m until the provider was called, 10m after it delivered; the day in between
    // and the time since resolving do not count.
    assert_eq!(inc.sla.active(now), HOUR + 40 * MINUTE);
    let row = &rows([&inc], &Period::default())[0];
    assert_eq!(
        (
            row.level,
            row.assignee.as_str(),
            row.priority.as_str(),
            row.category.as_str()
        ),
        (2, "marta", "P1", "capacity")
    );
    assert_eq!(row.solution, "disk replaced by Dell under warranty");
    assert_eq!(row.duration, "1d1h10m");
}

// --- property test: random inputs never panic, lose records or break invariants ---

fn arb_person() -> impl Strategy<Value = Person> {
    prop_oneof![Just(desk()), Just(tech()), Just(Person::new("nobody", []))]
}

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("ok".to_owned()),
        "[a-z ,\"]{0,12}"
    ]
}

fn arb_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(Command::Validate),
        arb_text().prop_map(|question| Command::RequestInfo { question }),
        arb_text().prop_map(|text| Command::InfoReceived { text }),
        arb_text().prop_map(|note| Command::Confirm { note }),
        arb_text().prop_map(|note| Command::NotReproduced { note }),
        (
            proptest::option::of(prop_oneof![Just(Impact::Low), Just(Impact::High)]),
            proptest::option::of(Just(Priority::P1))
        )
            .prop_map(|(impact, priority)| Command::Classify(ClassifyChange {
                impact,
                priority,
                ..ClassifyChange::default()
            })),
        (
            proptest::option::of(arb_text()),
            proptest::option::of(arb_text())
        )
            .prop_map(|(assignee, group)| Command::Assign { assignee, group }),
        (
            proptest::option::of(prop_oneof![
                Just(Level::L1),
                Just(Level::L2),
                Just(Level::L3)
            ]),
            arb_text()
        )
            .prop_map(|(to, why)| Command::Escalate { to, why }),
        (
            any::<bool>(),
            any::<bool>(),
            0u64..(20 * DAY),
            any::<bool>()
        )
            .prop_map(|(named, scheduled, ahead, net)| {
                Command::RequestProvider(ProviderRequestSpec {
                    provider: named.then(|| "Redes SAS".to_owned()),
                    kind: if scheduled {
                        ServiceKind::Scheduled
                    } else {
                        ServiceKind::Unplanned
                    },
                    priority: None,
                    agreed_at: T0 + ahead,
                    affects_network: net,
                    conditions: String::new(),
                    respond_within: None,
                    resolve_within: None,
                    request: None,
                })
            }),
        (any::<bool>(), arb_text())
            .prop_map(|(as_agreed, note)| Command::ProviderDelivered { as_agreed, note }),
        arb_text().prop_map(|solution| Command::Resolve { solution }),
        arb_text().prop_map(|note| Command::Close { note }),
        arb_text().prop_map(|why| Command::Reopen { why }),
        arb_text().prop_map(|text| Command::Note { text }),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Input(Box<Input>),
    Tick,
}

fn arb_op() -> impl Strategy<Value = Op> {
    let action = prop_oneof![
        Just(FaultAction::Raised),
        Just(FaultAction::Updated),
        Just(FaultAction::Cleared)
    ];
    let sev = prop_oneof![
        Just(Severity::Warning),
        Just(Severity::Major),
        Just(Severity::Critical)
    ];
    prop_oneof![
        4 => (arb_person(), arb_command()).prop_map(|(p, c)| Op::Input(Box::new(by(p, c)))),
        3 => (action, sev).prop_map(|(a, s)| Op::Input(Box::new(device(flt(fault(a, FaultKind::DiskSpace, s)))))),
        1 => arb_text().prop_map(|text| Op::Input(Box::new(device(DeviceEvent::Reply { text })))),
        1 => (prop_oneof![Just(FaultAction::Raised), Just(FaultAction::Cleared)], 0u64..1000).prop_map(|(a, n)| {
            let fault = fault(a, FaultKind::DiskSpace, Severity::Major);
            Op::Input(Box::new(device(DeviceEvent::Fault(FaultInput {
                instance: 0,
                seq: n,
                ts: n,
                fault,
            }))))
        }),
        2 => Just(Op::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn random_sequences_keep_the_invariants(
        start_with_report in any::<bool>(),
        ops in proptest::collection::vec((arb_op(), 0u64..(6 * HOUR)), 1..60),
    ) {
        let p = policy();
        let mut inc = if start_with_report {
            open_report(report("network", ""), T0).incident
        } else {
            fault_incident(&disk(FaultAction::Raised), T0).incident
        };
        check_invariants(&inc);
        let mut now = T0;
        for (op, dt) in ops {
            now += dt;
            let before = inc.clone();
            let result = match op {
                Op::Input(input) => apply(&inc, &input, now, &p).map(Some),
                Op::Tick => Ok(tick(&inc, now, &p)),
            };
            match result {
                Ok(Some(d)) => {
                    check_decision(&before, &d);
                    inc = d.incident;
                }
                Ok(None) => {}
                Err(e) => {
                    // a refusal changes nothing and says why
                    prop_assert!(!e.to_string().is_empty());
                }
            }
            // tick acts exactly when next_deadline says something is due
            let due = next_deadline(&inc, &p).is_some_and(|d| d <= now);
            prop_assert_eq!(tick(&inc, now, &p).is_some(), due);
            if let Some(d) = tick(&inc, now, &p) {
                inc = d.incident;
            }
            prop_assert!(next_deadline(&inc, &p).is_none_or(|d| d > now));
            prop_assert!(inc.sla.paused(now) <= now.saturating_sub(inc.sla.started_at));
            if inc.state == State::Closed {
                prop_assert!(inc.closure.is_some());
            }
        }
    }
}

#[test]
fn a_repeating_fault_is_counted_not_recorded_and_its_details_stay_bounded() {
    let major = |a| fault(a, FaultKind::DiskSpace, Severity::Major);
    let first = seq(major(FaultAction::Raised));
    let mut inc = open_fault(1, dev(), &first, DeviceContext::default(), T0, &policy()).incident;
    let trail = inc.audit_len;
    let mut seqs = vec![first.seq];
    for i in 1..=50u64 {
        let fi = seq(major(FaultAction::Updated));
        seqs.push(fi.seq);
        inc = step(
            &inc,
            device(DeviceEvent::Fault(fi)),
            T0 + i * crate::workflow::time::SECOND,
        );
    }
    assert_eq!(inc.occurrences, 51);
    assert_eq!(inc.audit_len, trail, "repeats added audit records");
    assert_eq!(inc.updated_at, T0 + 50 * crate::workflow::time::SECOND);
    assert_eq!(inc.last_seen, T0 + 50 * crate::workflow::time::SECOND);
    // The first occurrence and the most recent ones, nothing in between.
    assert_eq!(inc.recent.first.as_ref().map(|o| o.seq), Some(first.seq));
    let kept: Vec<u64> = inc.recent.recent.iter().map(|o| o.seq).collect();
    assert_eq!(kept, seqs[seqs.len() - Occurrences::RECENT..]);
    // What changes the incident's course is still recorded: worse, cleared, back.
    let worse = fault(
        FaultAction::Updated,
        FaultKind::DiskSpace,
        Severity::Critical,
    );
    let before = inc.audit_len;
    inc = step(&inc, device(flt(worse)), T0 + MINUTE);
    assert_eq!(inc.audit_len, before + 1);
    assert_eq!(
        inc.audit.last().map(|r| r.action.as_str()),
        Some("fault_updated")
    );
    // After the verification window, so the clear does not close it as transient.
    inc = step(
        &inc,
        device(flt(disk(FaultAction::Cleared))),
        T0 + 10 * MINUTE,
    );
    assert_eq!(
        inc.audit.last().map(|r| r.action.as_str()),
        Some("fault_cleared")
    );
    inc = step(
        &inc,
        device(flt(disk(FaultAction::Raised))),
        T0 + 11 * MINUTE,
    );
    assert_eq!(
        inc.audit.last().map(|r| r.action.as_str()),
        Some("fault_raised")
    );
    assert_eq!(inc.audit_len as usize, inc.audit.len());
}

/// An incident at level 2 waiting for "Redes SAS", asked at `now` for `agreed_at`, with
/// the given contract deadlines.
fn waiting_for_provider(
    now: Millis,
    agreed_at: Millis,
    respond_within: Option<Dur>,
    resolve_within: Option<Dur>,
) -> Incident {
    let l2 = step(
        &at_level1(),
        by(
            tech(),
            Command::Escalate {
                to: None,
                why: String::new(),
            },
        ),
        T0 + HOUR,
    );
    step(
        &l2,
        by(
            tech(),
            Command::RequestProvider(ProviderRequestSpec {
                provider: Some("Redes SAS".into()),
                kind: ServiceKind::Scheduled,
                priority: None,
                agreed_at,
                affects_network: true,
                conditions: "switch on floor 3".into(),
                respond_within,
                resolve_within,
                request: None,
            }),
        ),
        now,
    )
}

fn provider_contact() -> Person {
    Person::new("redes", [Role::Provider])
}

#[test]
fn a_provider_answers_works_and_a_rejected_verification_reopens_its_request() {
    let now = T0 + 2 * HOUR;
    let agreed = now + 8 * DAY;
    let waiting = waiting_for_provider(now, agreed, None, None);
    assert!(
        waiting.sla.paused_since.is_some(),
        "SLA paused while waiting"
    );
    let contact = provider_contact();
    // It proposes another date: the week's rule holds for proposals too.
    let e = apply(
        &waiting,
        &by(
            contact.clone(),
            Command::ProviderPropose {
                date: now + HOUR + 6 * DAY,
                note: String::new(),
            },
        ),
        now + HOUR,
        &policy(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("one week's notice"), "{e}");
    let later = agreed + 2 * DAY;
    let d = apply(
        &waiting,
        &by(
            contact.clone(),
            Command::ProviderPropose {
                date: later,
                note: "no technician that week".into(),
            },
        ),
        now + HOUR,
        &policy(),
    )
    .unwrap();
    assert_eq!(
        notifications(&d),
        vec![NotificationKind::ProviderAnswered { accepted: false }]
    );
    let proposed = d.incident;
    // The coordinator agrees the proposed date: that counts as the provider's acceptance,
    // and the staff notice is due a week before the new date.
    let moved = step(
        &proposed,
        by(
            desk(),
            Command::ProviderReschedule {
                agreed_at: later,
                note: String::new(),
            },
        ),
        now + 2 * HOUR,
    );
    let req = moved.pending_provider().unwrap();
    assert_eq!(req.agreed_at, later);
    assert_eq!(req.notice_due_at, Some(later - WEEK));
    assert_eq!(req.accepted.as_ref().map(|a| a.by.as_str()), Some("redes"));
    assert!(req.proposed.is_none());
    // A reschedule with too little notice is refused with the first possible date.
    let e = apply(
        &moved,
        &by(
            desk(),
            Command::ProviderReschedule {
                agreed_at: now + 3 * DAY,
                note: String::new(),
            },
        ),
        now + 2 * HOUR,
        &policy(),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains(&crate::workflow::rfc3339(now + 2 * HOUR + WEEK)),
        "{e}"
    );
    // The work is done, with a report: verification is due for the group.
    let e = apply(
        &moved,
        &by(
            contact.clone(),
            Command::ProviderDone {
                report: "  ".into(),
            },
        ),
        later,
        &policy(),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            WorkflowError::Empty {
                field: "report",
                ..
            }
        ),
        "{e}"
    );
    let d = apply(
        &moved,
        &by(
            contact.clone(),
            Command::ProviderDone {
                report: "switch replaced".into(),
            },
        ),
        later + HOUR,
        &policy(),
    )
    .unwrap();
    assert_eq!(notifications(&d), vec![NotificationKind::VerificationDue]);
    let done = d.incident;
    assert_eq!(done.state, State::WaitingProvider);
    // Rejected without a reason: refused. With one: open again, the report kept with it.
    let reject = |note: &str| {
        by(
            desk(),
            Command::ProviderDelivered {
                as_agreed: false,
                note: note.into(),
            },
        )
    };
    assert!(apply(&done, &reject(""), later + 2 * HOUR, &policy()).is_err());
    let reopened = step(&done, reject("port 12 still dead"), later + 2 * HOUR);
    let req = reopened.pending_provider().expect("open again");
    assert_eq!(reopened.state, State::WaitingProvider);
    assert!(req.done.is_none() && req.accepted.is_none());
    assert_eq!(
        req.rejections[0].report.as_ref().map(|r| r.note.as_str()),
        Some("switch replaced")
    );
    assert!(reopened.sla.paused_since.is_some(), "still paused");
    // Done again, accepted: back to level 2, the SLA running again without the wait.
    let again = step(
        &reopened,
        by(
            contact,
            Command::ProviderDone {
                report: "port 12 re-patched".into(),
            },
        ),
        later + DAY,
    );
    let back = step(
        &again,
        by(
            desk(),
            Command::ProviderDelivered {
                as_agreed: true,
                note: "all ports up".into(),
            },
        ),
        later + DAY + HOUR,
    );
    assert_eq!(back.state, State::Level2);
    assert!(back.pending_provider().is_none());
    assert!(back.sla.paused_since.is_none());
    assert!(
        back.sla.paused_ms >= later + DAY + HOUR - now,
        "the whole wait was paused"
    );
    // Both verifications are in the acta export, oldest first.
    let rows = crate::workflow::verification_rows([&back], &crate::workflow::Period::default());
    let v: Vec<(&str, usize, &str)> = rows
        .iter()
        .map(|r| (r.verdict.as_str(), r.attempt, r.report.as_str()))
        .collect();
    assert_eq!(
        v,
        [
            ("not_as_agreed", 1, "switch replaced"),
            ("as_agreed", 2, "port 12 re-patched")
        ]
    );
    // Provider actions need a pending request.
    assert!(apply(
        &back,
        &by(
            provider_contact(),
            Command::ProviderAccept {
                note: String::new()
            }
        ),
        later + 2 * DAY,
        &policy()
    )
    .is_err());
}

#[test]
fn a_provider_that_misses_its_contract_deadlines_is_escalated_to_the_admins_once() {
    let now = T0 + 2 * HOUR;
    let agreed = now + 8 * DAY;
    let waiting = waiting_for_provider(now, agreed, Some(Dur(4 * HOUR)), Some(Dur(DAY)));
    let req = waiting.pending_provider().unwrap();
    assert_eq!(req.respond_by, Some(now + 4 * HOUR));
    assert_eq!(req.resolve_by, Some(agreed + DAY));
    assert_eq!(next_deadline(&waiting, &policy()), Some(now + 4 * HOUR));
    assert!(tick(&waiting, now + 4 * HOUR - 1, &policy()).is_none());
    let d = tick(&waiting, now + 5 * HOUR, &policy()).unwrap();
    assert_eq!(
        notifications(&d),
        vec![NotificationKind::ProviderOverdue {
            deadline: Deadline::Response
        }]
    );
    assert!(d.messages.iter().any(|m| matches!(
        m,
        Outgoing::Notify(Notification {
            audience: Audience::Admins,
            ..
        })
    )));
    let late = d.incident;
    assert_eq!(
        late.audit.last().unwrap().at,
        now + 5 * HOUR,
        "recorded when noticed"
    );
    assert!(
        late.audit
            .last()
            .unwrap()
            .why
            .contains(&crate::workflow::rfc3339(now + 4 * HOUR)),
        "names the deadline"
    );
    // Once: the next deadline is the notice, then the work's.
    assert_eq!(next_deadline(&late, &policy()), Some(agreed - WEEK));
    // Accepted in time: no response escalation at all.
    let accepted = step(
        &waiting,
        by(
            provider_contact(),
            Command::ProviderAccept {
                note: String::new(),
            },
        ),
        now + HOUR,
    );
    let d = tick(&accepted, agreed + 2 * DAY, &policy()).unwrap();
    assert_eq!(
        notifications(&d)
            .into_iter()
            .filter(|k| matches!(k, NotificationKind::ProviderOverdue { .. }))
            .collect::<Vec<_>>(),
        vec![NotificationKind::ProviderOverdue {
            deadline: Deadline::Resolution
        }],
        "only the work's deadline was missed"
    );
    // Done in time: nothing overdue.
    let done = step(
        &accepted,
        by(
            provider_contact(),
            Command::ProviderDone {
                report: "done".into(),
            },
        ),
        agreed + HOUR,
    );
    let d = tick(&done, agreed + 2 * DAY, &policy());
    assert!(d.is_none_or(|d| !notifications(&d)
        .iter()
        .any(|k| matches!(k, NotificationKind::ProviderOverdue { .. }))));
}

#[test]
fn the_weeks_rule_counts_seven_times_24_hours_across_a_change_of_local_time() {
    use vigia_protocol::time::parse_instant;
    // Madrid leaves summer time on 2026-10-25: a request made on Tuesday 20 October at
    // 10:00 local time (08:00 UTC) may schedule the work from Tuesday 27 at 09:00 local
    // time (still 08:00 UTC), not 10:00: a week's notice is 7 × 24 h, whatever the
    // clocks on the wall did meanwhile.
    let now = parse_instant("2026-10-20T10:00:00+02:00").unwrap();
    let l2 = step(
        &at_level1(),
        by(
            tech(),
            Command::Escalate {
                to: None,
                why: String::new(),
            },
        ),
        T0 + HOUR,
    );
    // The incident's own clock starts at T0 (November); build one opened before `now`.
    let mut early = l2.clone();
    early.opened_at = now - DAY;
    early.updated_at = now - DAY;
    for r in &mut early.audit {
        r.at = now - DAY;
    }
    let ask = |at: &str| {
        apply(
            &early,
            &by(
                tech(),
                Command::RequestProvider(ProviderRequestSpec {
                    provider: Some("Redes SAS".into()),
                    kind: ServiceKind::Scheduled,
                    priority: None,
                    agreed_at: parse_instant(at).unwrap(),
                    affects_network: true,
                    conditions: String::new(),
                    respond_within: None,
                    resolve_within: None,
                    request: None,
                }),
            ),
            now,
            &policy(),
        )
    };
    // 6 days 23 hours ahead, though the wall clock reads 8:00 a week later, two hours
    // before the request's 10:00.
    let e = ask("2026-10-27T08:00:00+01:00").unwrap_err();
    assert!(e.to_string().contains("2026-10-27T08:00:00Z"), "{e}");
    assert!(ask("2026-10-27T09:00:00+01:00").is_ok(), "exactly 7 × 24 h");
    assert!(
        ask("2026-10-27T08:00:00Z").is_ok(),
        "the same instant in UTC"
    );
}

// ---- information classification

fn reserve(level: Secrecy, years: Option<u32>, fields: Option<Vec<ReservedField>>) -> Command {
    Command::Reserve(ReserveSpec {
        level,
        years,
        from: None,
        fields,
        justification: "the report names a person's health".into(),
    })
}

/// A resolved report with a note, a question answered and a solution: every kind of
/// free text a reserve may hide.
fn worked_report() -> Incident {
    let d = open_report(report("network", ""), T0);
    let inc = step(
        &d.incident,
        by(
            desk(),
            Command::InfoReceived {
                text: "call Ana on x1234".into(),
            },
        ),
        T0 + MINUTE,
    );
    let inc = step(
        &inc,
        by(
            desk(),
            Command::Confirm {
                note: String::new(),
            },
        ),
        T0 + 2 * MINUTE,
    );
    let inc = step(
        &inc,
        by(
            desk(),
            Command::Note {
                text: "Ana is on sick leave".into(),
            },
        ),
        T0 + 3 * MINUTE,
    );
    step(
        &inc,
        by(
            desk(),
            Command::Resolve {
                solution: "new cable to her desk".into(),
            },
        ),
        T0 + 4 * MINUTE,
    )
}

#[test]
fn a_reserve_is_recorded_and_lapses_after_its_years() {
    let inc = worked_report();
    assert_eq!(inc.secrecy(T0), Secrecy::Public);
    let at = T0 + HOUR;
    let d = apply(
        &inc,
        &by(
            desk(),
            reserve(
                Secrecy::Reserved,
                Some(5),
                Some(vec![ReservedField::Notes, ReservedField::Solution]),
            ),
        ),
        at,
        &policy(),
    )
    .unwrap();
    check_decision(&inc, &d);
    let r = d.incident.reserve.clone().unwrap();
    assert_eq!(r.level, Secrecy::Reserved);
    assert!(r.partial);
    assert_eq!((r.since, r.by.as_str(), r.at), (T0, "marta", at));
    // Five calendar years from the record's registration.
    assert_eq!(rfc3339(r.until), "2031-11-22T02:45:00Z");
    let rec = d.records.last().unwrap();
    assert_eq!(rec.action, "reserve");
    assert!(rec.why.contains("health"), "{}", rec.why);
    assert_eq!(rec.changes[0].field, "reserve");
    assert_eq!(rec.changes[0].from, "public");
    assert!(rec.changes[0]
        .to
        .starts_with("reserved (notes, solution) for 5 years"));
    // In force until the last millisecond, public from then on.
    assert_eq!(d.incident.secrecy(r.until - 1), Secrecy::Reserved);
    assert_eq!(d.incident.secrecy(r.until), Secrecy::Public);
    // Lifting it is recorded too; lifting what is public is refused.
    let lifted = step(
        &d.incident,
        by(
            desk(),
            Command::Reserve(ReserveSpec {
                level: Secrecy::Public,
                years: None,
                from: None,
                fields: None,
                justification: "the person consented".into(),
            }),
        ),
        at + MINUTE,
    );
    assert_eq!(lifted.reserve, None);
    assert_eq!(lifted.audit.last().unwrap().changes[0].to, "public");
    let again = apply(
        &lifted,
        &by(
            desk(),
            Command::Reserve(ReserveSpec {
                level: Secrecy::Public,
                years: None,
                from: None,
                fields: None,
                justification: "again".into(),
            }),
        ),
        at + 2 * MINUTE,
        &policy(),
    );
    assert!(matches!(
        again,
        Err(WorkflowError::Reserve {
            source: ReserveError::AlreadyPublic,
            ..
        })
    ));
}

#[test]
fn a_reserve_needs_its_years_and_justification() {
    let inc = worked_report();
    let refused = |c: Command, now: Millis| match apply(&inc, &by(desk(), c), now, &policy()) {
        Err(WorkflowError::Reserve { source, .. }) => source,
        other => panic!("should be refused: {other:?}"),
    };
    let mut no_why = reserve(Secrecy::Reserved, Some(5), None);
    if let Command::Reserve(s) = &mut no_why {
        s.justification = "  ".into();
    }
    assert_eq!(refused(no_why, T0), ReserveError::NoJustification);
    for years in [None, Some(0), Some(MAX_YEARS + 1)] {
        assert_eq!(
            refused(reserve(Secrecy::Classified, years, None), T0),
            ReserveError::Years
        );
    }
    assert_eq!(
        refused(reserve(Secrecy::Reserved, Some(1), Some(vec![])), T0),
        ReserveError::NoField
    );
    // Counted from the registration, one year is over two years later.
    assert!(matches!(
        refused(
            reserve(Secrecy::Reserved, Some(1), None),
            T0 + 2 * 366 * DAY
        ),
        ReserveError::Lapsed { .. }
    ));
    // A classified record is hidden whole, whatever fields were named.
    let d = step(
        &inc,
        by(
            desk(),
            reserve(
                Secrecy::Classified,
                Some(3),
                Some(vec![ReservedField::Notes]),
            ),
        ),
        T0 + HOUR,
    );
    let r = d.reserve.unwrap();
    assert_eq!(r.fields.len(), ReservedField::ALL.len());
    assert!(!r.partial);
}

#[test]
fn classifying_the_information_is_not_the_response_to_the_user() {
    let d = open_report(report("network", "x1234"), T0);
    let inc = step(
        &d.incident,
        by(desk(), reserve(Secrecy::Reserved, Some(2), None)),
        T0 + MINUTE,
    );
    assert_eq!(inc.sla.responded_at, None);
    assert_eq!(inc.state, d.incident.state);
}

#[test]
fn hiding_replaces_exactly_the_reserved_fields() {
    let inc = worked_report();
    let text = |i: &Incident| serde_json::to_string(i).unwrap();
    let all: std::collections::BTreeSet<ReservedField> = ReservedField::ALL.into_iter().collect();
    let mut whole = inc.clone();
    hide(&mut whole, &all);
    let seen = text(&whole);
    for secret in [
        "no network on floor 3",
        "since this morning",
        "\"ana\"",
        "call Ana on x1234",
        "sick leave",
        "new cable",
    ] {
        assert!(!seen.contains(secret), "{secret} shows: {seen}");
    }
    assert!(seen.contains(RESERVED));
    // State, numbers and the trail's shape stay.
    assert_eq!(whole.state, inc.state);
    assert_eq!(whole.audit.len(), inc.audit.len());
    assert_eq!(whole.notes.len(), 1);
    // Partial: only the notes.
    let mut notes = inc.clone();
    hide(&mut notes, &[ReservedField::Notes].into_iter().collect());
    let seen = text(&notes);
    assert!(!seen.contains("sick leave"), "{seen}");
    assert!(
        seen.contains("new cable") || notes.solution.as_deref() == Some("new cable to her desk")
    );
    assert_eq!(notes.solution.as_deref(), Some("new cable to her desk"));
    assert_eq!(notes.notes[0].text, RESERVED);
    // Reporter only: who and how to reach them, not what they said.
    let mut who = inc.clone();
    hide(&mut who, &[ReservedField::Reporter].into_iter().collect());
    match &who.origin {
        Origin::Report {
            reporter, summary, ..
        } => {
            assert_eq!(reporter, RESERVED);
            assert_eq!(summary, "no network on floor 3");
        }
        Origin::Fault { .. } | Origin::Service { .. } => unreachable!(),
    }
}

fn network_service() -> ServiceOrder {
    ServiceOrder {
        summary: "replace the core switch of floor 2".into(),
        text: "new switch and patch cords; the floor is offline for two hours".into(),
        category: "network".into(),
        device: None,
        level: None,
        group: None,
    }
}

fn scheduled_network(agreed_at: Millis) -> ProviderRequestSpec {
    ProviderRequestSpec {
        provider: Some("Redes SAS".into()),
        kind: ServiceKind::Scheduled,
        priority: Some(Priority::P2),
        agreed_at,
        affects_network: true,
        conditions: "Saturday, 08:00-10:00".into(),
        respond_within: Some(Dur::from(std::time::Duration::from_millis(DAY))),
        resolve_within: None,
        request: None,
    }
}

#[test]
fn a_service_with_no_incident_waits_for_its_provider_from_the_start() {
    let spec = scheduled_network(T0 + WEEK);
    let d = open_service(
        7,
        &network_service(),
        &spec,
        DeviceContext::default(),
        &tech(),
        T0,
        &policy(),
    )
    .unwrap();
    let blank = Incident {
        audit: Vec::new(),
        audit_len: 0,
        state: State::Registered,
        ..d.incident.clone()
    };
    check_decision(&blank, &d);
    check_invariants(&d.incident);
    let inc = &d.incident;
    assert_eq!(inc.state, State::WaitingProvider);
    assert_eq!(inc.level, Level::L2, "the specialists follow it up");
    assert_eq!(inc.device, None);
    assert_eq!(inc.assignee.as_deref(), Some("jorge"), "whoever asked");
    assert!(inc.sla.paused_since.is_some(), "its SLA waits with it");
    let c = inc.classification.as_ref().unwrap();
    assert_eq!((c.category.as_str(), c.priority), ("network", Priority::P2));
    let actions: Vec<&str> = inc.audit.iter().map(|r| r.action.as_str()).collect();
    // Agreed exactly a week ahead: the week's notice is due now, and goes at once.
    assert_eq!(
        actions,
        ["register", "route", "request_provider", "network_notice"]
    );
    assert!(inc.audit.iter().all(|r| r.actor == Actor::Person(tech())));
    assert_eq!(inc.origin.requester(), "jorge");
    assert_eq!(inc.fault_key(), None, "no device event ever joins it");
    let req = inc.pending_provider().unwrap();
    assert_eq!(req.id, "7-1");
    assert_eq!(
        req.notice_due_at,
        Some(T0),
        "the week's notice falls due at once"
    );
    assert_eq!(req.respond_by, Some(T0 + DAY));
    assert!(
        d.messages
            .iter()
            .all(|m| !matches!(m, Outgoing::Device { .. })),
        "there is no device to tell"
    );
    assert_eq!(notifications(&d)[0], NotificationKind::ProviderRequested);
    assert!(inc.pending_provider().unwrap().notice_sent_at.is_some());

    // The week's rule as on any request: refused at 6 days 23 hours, and then nothing
    // is registered.
    let short = open_service(
        8,
        &network_service(),
        &scheduled_network(T0 + WEEK - HOUR),
        DeviceContext::default(),
        &tech(),
        T0,
        &policy(),
    );
    assert!(matches!(
        short,
        Err(WorkflowError::Provider {
            source: ProviderError::NoticeTooShort { earliest },
            ..
        }) if earliest == T0 + WEEK
    ));
    // Naming no provider needs a warranty in force to suggest one.
    let nobody = ProviderRequestSpec {
        provider: None,
        ..spec.clone()
    };
    let refused = open_service(
        9,
        &network_service(),
        &nobody,
        DeviceContext::default(),
        &tech(),
        T0,
        &policy(),
    );
    assert!(matches!(
        refused,
        Err(WorkflowError::Provider {
            source: ProviderError::NoProvider,
            ..
        })
    ));
    let untitled = ServiceOrder {
        summary: " ".into(),
        ..network_service()
    };
    assert!(matches!(
        open_service(
            9,
            &untitled,
            &spec,
            DeviceContext::default(),
            &tech(),
            T0,
            &policy()
        ),
        Err(WorkflowError::Empty {
            field: "summary",
            ..
        })
    ));

    // The provider accepts and does the work; a rejected verification opens the request
    // again, an accepted one hands the record back to level 2 to close.
    let accepted = step(
        inc,
        by(
            tech(),
            Command::ProviderAccept {
                note: "confirmed".into(),
            },
        ),
        T0 + HOUR,
    );
    let done = step(
        &accepted,
        by(
            tech(),
            Command::ProviderDone {
                report: "switch replaced".into(),
            },
        ),
        T0 + WEEK + HOUR,
    );
    let rejected = step(
        &done,
        by(
            tech(),
            Command::ProviderDelivered {
                as_agreed: false,
                note: "floor 2 port 14 dead".into(),
            },
        ),
        T0 + WEEK + 2 * HOUR,
    );
    assert_eq!(rejected.state, State::WaitingProvider);
    assert!(rejected.pending_provider().unwrap().done.is_none());
    let redone = step(
        &rejected,
        by(
            tech(),
            Command::ProviderDone {
                report: "port 14 repatched".into(),
            },
        ),
        T0 + WEEK + 3 * HOUR,
    );
    let verified = step(
        &redone,
        by(
            tech(),
            Command::ProviderDelivered {
                as_agreed: true,
                note: "every port checked".into(),
            },
        ),
        T0 + WEEK + 4 * HOUR,
    );
    assert_eq!(verified.state, State::Level2);
    assert!(verified.sla.paused_since.is_none());
    assert_eq!(verified.provider_requests[0].rejections.len(), 1);
    // A device event naming it is refused: the record has no device.
    assert!(matches!(
        apply(
            &verified,
            &device(flt(disk(FaultAction::Raised))),
            T0 + WEEK + 5 * HOUR,
            &policy()
        ),
        Err(WorkflowError::WrongSubject { .. })
    ));
}
