//! Timers: what the workflow does on its own when a deadline from [`next_deadline`](super::next_deadline)
//! passes. Kept apart from the deadlines themselves ([`super::sla`]) because acting is a
//! transition, made with the engine's change builder, while the deadlines are plain
//! arithmetic on the SLA clocks that the engine also reads.
use super::engine::{Audience, Change, Decision, NotificationKind};
use super::incident::State;
use super::incident::{
    Actor, ClosureReason, Deadline, FieldChange, Incident, Level, Overdue, Priority,
};
use super::policy::Policy;
use super::sla::{
    auto_close_due, info_reminder_due, info_timeout_due, level_budget_due, notice_due,
    provider_deadline_due, resolution_due, response_due, verification_due, Target,
};
use super::time::{rfc3339, Dur, Millis};
use vigia_protocol::{bounded, CmdBody};

/// Runs every timer of `incident` that is due at `now`, earliest first: automatic
/// verification of a fault still active after the verification window, SLA breaches (the
/// resolution breach escalates one level), level budgets (escalation L1 → L2 → L3, and at
/// level 3 a notification), the all-staff network notice, a provider's missed deadline
/// (escalated to the administrators), and auto-close after the quiet
/// period. Each is dated at the moment it fell due, so a late tick (the collector was down)
/// reaches the same state as punctual ones would have. Returns `None` when nothing was due.
pub fn tick(incident: &Incident, now: Millis, policy: &Policy) -> Option<Decision> {
    let mut tx = Change::new(incident, Actor::System, now, policy);
    // Every timer either disappears when handled or moves to a later time, and an
    // incident has at most a dozen timers in its life at one level, so this bound is
    // never reached; it only guards against a bug looping forever.
    for _ in 0..32 {
        if !tick_once(&mut tx) {
            break;
        }
    }
    tx.changed().then(|| tx.finish())
}

#[derive(Debug, Clone, Copy)]
enum Timer {
    Verify,
    Response,
    Resolution,
    LevelBudget,
    Notice,
    ProviderDeadline(Deadline),
    AutoClose,
    InfoReminder,
    InfoTimeout,
}

fn earliest_due(inc: &Incident, policy: &Policy, now: Millis) -> Option<(Millis, Timer)> {
    [
        (verification_due(inc, policy), Timer::Verify),
        (response_due(inc, policy), Timer::Response),
        (resolution_due(inc, policy), Timer::Resolution),
        (level_budget_due(inc, policy), Timer::LevelBudget),
        (notice_due(inc), Timer::Notice),
        (
            provider_deadline_due(inc, Deadline::Response),
            Timer::ProviderDeadline(Deadline::Response),
        ),
        (
            provider_deadline_due(inc, Deadline::Resolution),
            Timer::ProviderDeadline(Deadline::Resolution),
        ),
        (auto_close_due(inc, policy), Timer::AutoClose),
        (info_reminder_due(inc, policy), Timer::InfoReminder),
        (info_timeout_due(inc, policy), Timer::InfoTimeout),
    ]
    .into_iter()
    .filter_map(|(t, timer)| t.filter(|t| *t <= now).map(|t| (t, timer)))
    .min_by_key(|(t, _)| *t)
}

fn tick_once(tx: &mut Change<'_>) -> bool {
    let now = tx.now();
    let policy = tx.policy();
    let inc = tx.incident().clone();
    let Some((at, timer)) = earliest_due(&inc, policy, now) else {
        return false;
    };
    let priority = inc.priority().unwrap_or(Priority::P4);
    let targets = *policy.sla(priority);
    match timer {
        Timer::Verify => {
            let why = if inc.fault_active {
                format!(
                    "fault still active after the {} verification window",
                    Dur(policy.verification_window())
                )
            } else {
                "fault kept returning during the verification window (flapping)".to_owned()
            };
            tx.confirm_and_route("verify", why);
            // The level's time started when the window ended, not when we noticed.
            let started = inc.sla.active(at);
            tx.sla_mut().level_started_active = started;
        }
        Timer::Response => {
            tx.sla_mut().response_breached_at = Some(at);
            tx.record(
                inc.state,
                "sla_breach",
                format!(
                    "no response within the {priority} response target of {} (due {})",
                    targets.response,
                    rfc3339(at)
                ),
                vec![FieldChange {
                    field: "sla.response_breached_at".into(),
                    from: String::new(),
                    to: rfc3339(at),
                }],
            );
            tx.notify(
                NotificationKind::SlaBreached {
                    target: Target::Response,
                },
                Audience::Group(tx.group()),
                format!(
                    "incident {}: response target breached ({priority})",
                    inc.number
                ),
            );
        }
        Timer::Resolution => {
            tx.sla_mut().resolution_breached_at = Some(at);
            let why = format!(
                "not resolved within the {priority} resolution target of {} (due {})",
                targets.resolution,
                rfc3339(at)
            );
            tx.record(
                inc.state,
                "sla_breach",
                why.clone(),
                vec![FieldChange {
                    field: "sla.resolution_breached_at".into(),
                    from: String::new(),
                    to: rfc3339(at),
                }],
            );
            tx.notify(
                NotificationKind::SlaBreached {
                    target: Target::Resolution,
                },
                Audience::Group(tx.group()),
                format!(
                    "incident {}: resolution target breached ({priority})",
                    inc.number
                ),
            );
            if let Some(level) = inc.state.level() {
                tx.escalate_from(level, why);
                if level != Level::L3 {
                    tx.sla_mut().level_started_active = targets.resolution.ms();
                }
            }
        }
        Timer::LevelBudget => {
            let Some(level) = inc.state.level() else {
                return false;
            };
            let budget = targets.escalate_after;
            let why = format!(
                "SLA: unresolved after {budget} at level {level} ({priority} escalate_after)"
            );
            let boundary = inc.sla.level_started_active.saturating_add(budget.ms());
            tx.escalate_from(level, why);
            if level != Level::L3 {
                tx.sla_mut().level_started_active = boundary;
            }
        }
        Timer::Notice => tx.send_network_notice(),
        Timer::ProviderDeadline(deadline) => {
            let Some(req) = inc.pending_provider() else {
                return false;
            };
            let provider = req.provider.clone();
            tx.pending_request_mut()
                .overdue
                .push(Overdue { deadline, at });
            let (what, field) = match deadline {
                Deadline::Response => ("respond to the request", "provider.response_overdue"),
                Deadline::Resolution => ("finish the work", "provider.resolution_overdue"),
            };
            let why = format!(
                "{provider} did not {what} by {} as its contract says for {}: escalated to \
                 the administrators",
                rfc3339(at),
                req.priority
            );
            tx.record(
                inc.state,
                "provider_overdue",
                why.clone(),
                vec![FieldChange {
                    field: field.into(),
                    from: String::new(),
                    to: rfc3339(at),
                }],
            );
            tx.notify(
                NotificationKind::ProviderOverdue { deadline },
                Audience::Admins,
                format!("incident {}: {why}", inc.number),
            );
        }
        Timer::InfoReminder => {
            let Some(q) = inc.pending_question().cloned() else {
                return false;
            };
            if let Some(last) = tx.info_requests_mut().last_mut() {
                last.reminded_at = Some(at);
            }
            tx.record(
                State::NeedsInfo,
                "remind",
                format!(
                    "no answer after {}: the question was asked again",
                    Dur(policy.info_reminder_after())
                ),
                Vec::new(),
            );
            // Sent again: also what a device that missed the first one gets.
            tx.send_device(CmdBody::RequestInfo {
                incident: inc.number,
                question: bounded(&q.question),
            });
        }
        Timer::InfoTimeout => {
            let waited = Dur(policy.info_timeout());
            tx.record(
                State::Verifying,
                "info_timeout",
                format!(
                    "no answer from the user within {waited}: back to the service desk to \
                     verify with what it has"
                ),
                Vec::new(),
            );
            tx.notify(
                NotificationKind::InfoUnanswered,
                Audience::ServiceDesk,
                format!(
                    "incident {}: the user did not answer within {waited}",
                    inc.number
                ),
            );
        }
        Timer::AutoClose => tx.close(
            ClosureReason::AutoClosed,
            "auto_close",
            format!(
                "resolved and quiet for {}; closed on behalf of the service desk",
                Dur(policy.auto_close_after())
            ),
        ),
    }
    true
}
