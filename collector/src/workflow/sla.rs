//! SLA clocks and deadlines: when the next thing will be due ([`next_deadline`]), so the
//! collector sleeps until then instead of polling; [`tick`](super::tick) acts on them.
//!
//! All SLA time is "active" time: wall time since registration minus the time spent
//! waiting for the user or a provider (or resolved). While running, a target `t` falls due
//! at `started_at + paused_ms + t`; while paused nothing SLA-related is due. The trade-off:
//! an escalation noticed late (the collector was down) is dated at the budget boundary for
//! the next level's budget, so a long outage cascades L1 → L2 → L3 in one tick, as the
//! clock says it should, rather than granting every level a fresh budget from restart.
use super::incident::{Incident, Level, SlaClock, State};
use super::policy::Policy;
use super::time::Millis;

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

pub(super) fn verification_due(inc: &Incident, policy: &Policy) -> Option<Millis> {
    (inc.state == State::Verifying && inc.origin.is_fault())
        .then(|| inc.opened_at.saturating_add(policy.verification_window()))
}

pub(super) fn response_due(inc: &Incident, policy: &Policy) -> Option<Millis> {
    let p = inc.priority()?;
    if inc.sla.responded_at.is_some() || inc.sla.response_breached_at.is_some() {
        return None;
    }
    inc.sla.due_at(policy.sla(p).response.ms())
}

pub(super) fn resolution_due(inc: &Incident, policy: &Policy) -> Option<Millis> {
    let p = inc.priority()?;
    if inc.sla.resolution_breached_at.is_some() || !inc.state.is_open() {
        return None;
    }
    inc.sla.due_at(policy.sla(p).resolution.ms())
}

pub(super) fn level_budget_due(inc: &Incident, policy: &Policy) -> Option<Millis> {
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

/// The unanswered question of an incident waiting for its user.
fn waiting_question(inc: &Incident) -> Option<&super::incident::InfoRequest> {
    (inc.state == State::NeedsInfo)
        .then(|| inc.pending_question())
        .flatten()
}

pub(super) fn info_reminder_due(inc: &Incident, policy: &Policy) -> Option<Millis> {
    let q = waiting_question(inc)?;
    (q.reminded_at.is_none() && policy.info_reminder_after() < policy.info_timeout())
        .then(|| q.asked_at.saturating_add(policy.info_reminder_after()))
}

pub(super) fn info_timeout_due(inc: &Incident, policy: &Policy) -> Option<Millis> {
    waiting_question(inc).map(|q| q.asked_at.saturating_add(policy.info_timeout()))
}

pub(super) fn notice_due(inc: &Incident) -> Option<Millis> {
    let r = inc.pending_provider()?;
    if r.notice_sent_at.is_some() {
        return None;
    }
    r.notice_due_at
}

/// When the pending provider request's `deadline` falls due (from its contract), unless
/// the provider met it or it was already escalated.
pub(super) fn provider_deadline_due(
    inc: &Incident,
    deadline: super::incident::Deadline,
) -> Option<Millis> {
    if inc.state != State::WaitingProvider {
        return None;
    }
    inc.pending_provider()?.deadline_due(deadline)
}

pub(super) fn auto_close_due(inc: &Incident, policy: &Policy) -> Option<Millis> {
    if inc.state != State::Resolved {
        return None;
    }
    Some(inc.updated_at.saturating_add(policy.auto_close_after()))
}

/// When the next timer of `incident` falls due (verification window, SLA targets, level
/// budget, network notice, a provider's deadlines, auto-close), or `None` when nothing is pending. [`tick`](super::tick) at or
/// after this time acts; before it, it does nothing.
pub fn next_deadline(incident: &Incident, policy: &Policy) -> Option<Millis> {
    [
        verification_due(incident, policy),
        response_due(incident, policy),
        resolution_due(incident, policy),
        level_budget_due(incident, policy),
        notice_due(incident),
        provider_deadline_due(incident, super::incident::Deadline::Response),
        provider_deadline_due(incident, super::incident::Deadline::Resolution),
        auto_close_due(incident, policy),
        info_reminder_due(incident, policy),
        info_timeout_due(incident, policy),
    ]
    .into_iter()
    .flatten()
    .min()
}
