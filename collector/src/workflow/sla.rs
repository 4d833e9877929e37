//! SLA clocks and timers: what is due at `now` ([`tick`]) and when the next thing will be
//! due ([`next_deadline`]), so the collector sleeps until then instead of polling.
//!
//! All SLA time is "active" time: wall time since registration minus the time spent
//! waiting for the user or a provider (or resolved). While running, a target `t` falls due
//! at `started_at + paused_ms + t`; while paused nothing SLA-related is due. The trade-off:
//! an escalation noticed late (the collector was down) is dated at the budget boundary for
//! the next level's budget, so a long outage cascades L1 → L2 → L3 in one tick, as the
//! clock says it should, rather than granting every level a fresh budget from restart.
use super::engine::{Audience, Decision, NotificationKind, Tx};
use super::incident::{
    Actor, ClosureReason, FieldChange, Incident, Level, Priority, SlaClock, State,
};
use super::policy::Policy;
use super::time::{rfc3339, Dur, Millis};

impl SlaClock {
    /// Active (unpaused) milliseconds between the start and `now`. Never negative: a clock
    /// that went backwards reads as no time.
    pub fn active(&self, now: Millis) -> u64 {
        let running = self
            .paused_since
            .map_or(0, |since| now.saturating_sub(since));
        now.saturating_sub(self.started_at)
            .saturating_sub(self.paused_ms.saturating_add(running))
    }

    /// Paused milliseconds up to `now`, including a pause still running.
    pub fn paused(&self, now: Millis) -> u64 {
        self.paused_ms.saturating_add(
            self.paused_since
                .map_or(0, |since| now.saturating_sub(since)),
        )
    }

    /// The wall time at which the active time reaches `target`, if the clock is running.
    pub fn due_at(&self, target: u64) -> Option<Millis> {
        if self.paused_since.is_some() {
            return None;
        }
        Some(
            self.started_at
                .saturating_add(self.paused_ms)
                .saturating_add(target),
        )
    }
}

/// The SLA picture of an incident at `now`, for the API and the feed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SlaStatus {
    /// Worked time so far, ms.
    pub active_ms: u64,
    /// Time paused so far (waiting for the user or a provider, or resolved), ms.
    pub paused_ms: u64,
    /// Whether the clocks are paused now.
    pub paused: bool,
    /// Response target, ms (once diagnosed).
    pub response_target_ms: Option<u64>,
    /// Resolution target, ms (once diagnosed).
    pub resolution_target_ms: Option<u64>,
    /// When the response is due, if still pending and the clock runs.
    pub response_due_at: Option<Millis>,
    /// When the resolution is due, if still pending and the clock runs.
    pub resolution_due_at: Option<Millis>,
    /// When the first response came.
    pub responded_at: Option<Millis>,
    /// When the response target was breached.
    pub response_breached_at: Option<Millis>,
    /// When the resolution target was breached.
    pub resolution_breached_at: Option<Millis>,
    /// When the current level's budget runs out (escalation), if the clock runs.
    pub escalation_due_at: Option<Millis>,
}

/// The SLA picture of `incident` at `now`.
pub fn sla_status(incident: &Incident, now: Millis, policy: &Policy) -> SlaStatus {
    let targets = incident.priority().map(|p| *policy.sla(p));
    let sla = &incident.sla;
    SlaStatus {
        active_ms: sla.active(now),
        paused_ms: sla.paused(now),
        paused: sla.paused_since.is_some(),
        response_target_ms: targets.map(|t| t.response.ms()),
        resolution_target_ms: targets.map(|t| t.resolution.ms()),
        response_due_at: response_due(incident, policy),
        resolution_due_at: resolution_due(incident, policy)
            .filter(|_| incident.state != State::Resolved),
        responded_at: sla.responded_at,
        response_breached_at: sla.response_breached_at,
        resolution_breached_at: sla.resolution_breached_at,
        escalation_due_at: level_budget_due(incident, policy),
    }
}

/// Which SLA target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// First response.
    Response,
    /// Resolution.
    Resolution,
}

fn verification_due(inc: &Incident, policy: &Policy) -> Option<Millis> {
    (inc.state == State::Verifying && inc.origin.is_fault())
        .then(|| inc.opened_at.saturating_add(policy.verification_window()))
}

fn response_due(inc: &Incident, policy: &Policy) -> Option<Millis> {
    let p = inc.priority()?;
    if inc.sla.responded_at.is_some() || inc.sla.response_breached_at.is_some() {
        return None;
    }
    inc.sla.due_at(policy.sla(p).response.ms())
}

fn resolution_due(inc: &Incident, policy: &Policy) -> Option<Millis> {
    let p = inc.priority()?;
    if inc.sla.resolution_breached_at.is_some() || !inc.state.is_open() {
        return None;
    }
    inc.sla.due_at(policy.sla(p).resolution.ms())
}

fn level_budget_due(inc: &Incident, policy: &Policy) -> Option<Millis> {
    let level = inc.state.level()?;
    let p = inc.priority()?;
    if level == Level::L3 && inc.sla.level_budget_notified {
        return None;
    }
    inc.sla.due_at(
        inc.sla
            .level_started_active
            .saturating_add(policy.sla(p).escalate_after.ms()),
    )
}

fn notice_due(inc: &Incident) -> Option<Millis> {
    let r = inc.pending_provider()?;
    if r.notice_sent_at.is_some() {
        return None;
    }
    r.notice_due_at
}

fn auto_close_due(inc: &Incident, policy: &Policy) -> Option<Millis> {
    if inc.state != State::Resolved {
        return None;
    }
    let last = inc.audit.last().map_or(inc.opened_at, |r| r.at);
    Some(last.saturating_add(policy.auto_close_after()))
}

/// When the next timer of `incident` falls due (verification window, SLA targets, level
/// budget, network notice, auto-close), or `None` when nothing is pending. [`tick`] at or
/// after this time acts; before it, it does nothing.
pub fn next_deadline(incident: &Incident, policy: &Policy) -> Option<Millis> {
    [
        verification_due(incident, policy),
        response_due(incident, policy),
        resolution_due(incident, policy),
        level_budget_due(incident, policy),
        notice_due(incident),
        auto_close_due(incident, policy),
    ]
    .into_iter()
    .flatten()
    .min()
}

/// Runs every timer of `incident` that is due at `now`, earliest first: automatic
/// verification of a fault still active after the verification window, SLA breaches (the
/// resolution breach escalates one level), level budgets (escalation L1 → L2 → L3, and at
/// level 3 a notification), the all-staff network notice, and auto-close after the quiet
/// period. Each is dated at the moment it fell due, so a late tick (the collector was down)
/// reaches the same state as punctual ones would have. Returns `None` when nothing was due.
pub fn tick(incident: &Incident, now: Millis, policy: &Policy) -> Option<Decision> {
    let mut tx = Tx::new(incident, Actor::System, now, policy);
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
    AutoClose,
}

fn earliest_due(inc: &Incident, policy: &Policy, now: Millis) -> Option<(Millis, Timer)> {
    [
        (verification_due(inc, policy), Timer::Verify),
        (response_due(inc, policy), Timer::Response),
        (resolution_due(inc, policy), Timer::Resolution),
        (level_budget_due(inc, policy), Timer::LevelBudget),
        (notice_due(inc), Timer::Notice),
        (auto_close_due(inc, policy), Timer::AutoClose),
    ]
    .into_iter()
    .filter_map(|(t, timer)| t.filter(|t| *t <= now).map(|t| (t, timer)))
    .min_by_key(|(t, _)| *t)
}

fn tick_once(tx: &mut Tx<'_>) -> bool {
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
