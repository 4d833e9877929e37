//! Counters operators ask about, rendered in the Prometheus text format.
//!
//! Message and rejection counters live in memory (atomics, reset on restart, as
//! Prometheus counters are expected to); incident and device gauges are read from the
//! store when scraped, so they are always true to what is on disk.
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use vigia_protocol::{RejectReason, UpKind};

/// Why a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejected {
    /// A payload the protocol refuses.
    Payload(RejectReason),
    /// A topic outside the ones we know.
    UnknownTopic,
}

impl Rejected {
    /// Every reason, in the order they are reported.
    pub const ALL: [Rejected; 5] = [
        Self::Payload(RejectReason::Malformed),
        Self::Payload(RejectReason::BadVersion),
        Self::Payload(RejectReason::TooLarge),
        Self::Payload(RejectReason::DeviceMismatch),
        Self::UnknownTopic,
    ];

    /// The counter label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Payload(r) => r.as_str(),
            Self::UnknownTopic => "unknown_topic",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Payload(RejectReason::Malformed) => 0,
            Self::Payload(RejectReason::BadVersion) => 1,
            Self::Payload(RejectReason::TooLarge) => 2,
            Self::Payload(RejectReason::DeviceMismatch) => 3,
            Self::UnknownTopic => 4,
        }
    }
}

/// The kind of topic a message came in on, as a counter label.
pub fn kind_label(kind: Option<UpKind>) -> &'static str {
    kind.map_or("unknown", UpKind::as_str)
}

const KINDS: [Option<UpKind>; 5] = [
    Some(UpKind::Birth),
    Some(UpKind::Status),
    Some(UpKind::Event),
    Some(UpKind::CmdAck),
    None,
];

fn kind_index(kind: Option<UpKind>) -> usize {
    match kind {
        Some(UpKind::Birth) => 0,
        Some(UpKind::Status) => 1,
        Some(UpKind::Event) => 2,
        Some(UpKind::CmdAck) => 3,
        None => 4,
    }
}

/// The in-memory counters.
#[derive(Debug, Default)]
pub struct Metrics {
    messages_in: [AtomicU64; 5],
    rejected: [AtomicU64; 5],
    events_stored: AtomicU64,
    events_duplicate: AtomicU64,
    events_deferred: AtomicU64,
    store_errors: AtomicU64,
    acks_sent: AtomicU64,
    logins: [AtomicU64; 3],
    actions: [AtomicU64; ACTION_SLOTS],
    forbidden: AtomicU64,
    unauthenticated: AtomicU64,
    live_clients: AtomicU64,
    feed_latency: Histogram,
    ingest_stalled: AtomicU64,
    store_reopens: AtomicU64,
    commands_sent: AtomicU64,
    commands_acked: AtomicU64,
    commands_expired: AtomicU64,
}

/// The outcome of a sign-in, as a counter label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    /// Signed in (or a token issued against a password).
    Ok,
    /// Wrong login or password.
    Failed,
    /// Refused by the rate limit without checking.
    Limited,
}

impl Login {
    const ALL: [Login; 3] = [Self::Ok, Self::Failed, Self::Limited];

    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Limited => "rate_limited",
        }
    }
}

const ACTION_SLOTS: usize = 16;

/// Upper bounds (seconds) of the feed latency buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A Prometheus histogram of durations, in microseconds inside.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    fn render(&self, s: &mut String, name: &str, help: &str) {
        let _ = writeln!(s, "# HELP {name} {help}");
        let _ = writeln!(s, "# TYPE {name} histogram");
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            let n = self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(s, "{name}_bucket{{le=\"{le}\"}} {n}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(s, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(s, "{name}_sum {sum}");
        let _ = writeln!(s, "{name}_count {count}");
    }
}

fn action_slot(name: &str) -> usize {
    crate::workflow::actions::ACTIONS
        .iter()
        .position(|a| a.action == name)
        .unwrap_or(ACTION_SLOTS - 1)
        .min(ACTION_SLOTS - 1)
}

/// Decrements the live-client gauge when a stream ends.
#[derive(Debug)]
pub struct LiveClientOwned(std::sync::Arc<Metrics>);

impl Drop for LiveClientOwned {
    fn drop(&mut self) {
        self.0.live_clients.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// A message arrived on a topic of this kind (`None`: unknown topic).
    pub fn message_in(&self, kind: Option<UpKind>) {
        self.messages_in[kind_index(kind)].fetch_add(1, Ordering::Relaxed);
    }

    /// A message was refused.
    pub fn rejected(&self, why: Rejected) {
        self.rejected[why.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// How many were refused for this reason.
    pub fn rejected_count(&self, why: Rejected) -> u64 {
        self.rejected[why.index()].load(Ordering::Relaxed)
    }

    /// An event was stored (`duplicate`: it was already).
    pub fn event_stored(&self, duplicate: bool) {
        let c = if duplicate {
            &self.events_duplicate
        } else {
            &self.events_stored
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// An event of a newer protocol version was left for a later collector.
    pub fn event_deferred(&self) {
        self.events_deferred.fetch_add(1, Ordering::Relaxed);
    }

    /// The store failed a write.
    pub fn store_error(&self) {
        self.store_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// An application ack was published.
    pub fn ack_sent(&self) {
        self.acks_sent.fetch_add(1, Ordering::Relaxed);
    }

    /// A sign-in ended so.
    pub fn login(&self, outcome: Login) {
        let i = Login::ALL.iter().position(|l| *l == outcome).unwrap_or(0);
        self.logins[i].fetch_add(1, Ordering::Relaxed);
    }

    /// A workflow action was taken through the API.
    pub fn action(&self, name: &str) {
        self.actions[action_slot(name)].fetch_add(1, Ordering::Relaxed);
    }

    /// A request was refused as forbidden (role, CSRF, origin, host).
    pub fn forbidden(&self) {
        self.forbidden.fetch_add(1, Ordering::Relaxed);
    }

    /// Ingest is stalled by a failing store (or no longer is).
    pub fn ingest_stalled(&self, stalled: bool) {
        self.ingest_stalled
            .store(u64::from(stalled), Ordering::Relaxed);
    }

    /// A device command was published (first time or again).
    pub fn command_sent(&self) {
        self.commands_sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Devices acknowledged `n` commands.
    pub fn commands_acked(&self, n: u64) {
        self.commands_acked.fetch_add(n, Ordering::Relaxed);
    }

    /// A command was given up on after its attempts.
    pub fn command_expired(&self) {
        self.commands_expired.fetch_add(1, Ordering::Relaxed);
    }

    /// The store was reopened after an I/O error.
    pub fn store_reopened(&self) {
        self.store_reopens.fetch_add(1, Ordering::Relaxed);
    }

    /// A request came without valid credentials.
    pub fn unauthenticated(&self) {
        self.unauthenticated.fetch_add(1, Ordering::Relaxed);
    }

    /// A live stream opened; the gauge goes down when the returned guard drops.
    pub fn live_client(self: &std::sync::Arc<Self>) -> LiveClientOwned {
        self.live_clients.fetch_add(1, Ordering::Relaxed);
        LiveClientOwned(self.clone())
    }

    /// A feed event reached a stream this long after it was stored.
    pub fn feed_latency(&self, d: std::time::Duration) {
        self.feed_latency.observe(d);
    }

    /// The Prometheus text exposition, with the store's gauges.
    pub fn render(
        &self,
        incidents_by_state: &[(&str, u64)],
        devices: u64,
        online: u64,
        outbox: u64,
    ) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# HELP vigia_messages_in_total MQTT messages received, by topic kind."
        );
        let _ = writeln!(s, "# TYPE vigia_messages_in_total counter");
        for k in KINDS {
            let _ = writeln!(
                s,
                "vigia_messages_in_total{{kind=\"{}\"}} {}",
                kind_label(k),
                self.messages_in[kind_index(k)].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            s,
            "# HELP vigia_rejected_total Messages refused, by reason."
        );
        let _ = writeln!(s, "# TYPE vigia_rejected_total counter");
        for r in Rejected::ALL {
            let _ = writeln!(
                s,
                "vigia_rejected_total{{reason=\"{}\"}} {}",
                r.as_str(),
                self.rejected_count(r)
            );
        }
        let simple = [
            (
                "vigia_events_stored_total",
                "Events stored for the first time.",
                &self.events_stored,
            ),
            (
                "vigia_events_duplicate_total",
                "Events received again (acked, not stored twice).",
                &self.events_duplicate,
            ),
            (
                "vigia_events_deferred_total",
                "Events of a newer protocol version, left unacknowledged in the agent's spool.",
                &self.events_deferred,
            ),
            (
                "vigia_store_errors_total",
                "Store writes that failed (not acked; redelivered later).",
                &self.store_errors,
            ),
            (
                "vigia_acks_sent_total",
                "Application acks published to devices.",
                &self.acks_sent,
            ),
        ];
        for (name, help, c) in simple {
            let _ = writeln!(s, "# HELP {name} {help}");
            let _ = writeln!(s, "# TYPE {name} counter");
            let _ = writeln!(s, "{name} {}", c.load(Ordering::Relaxed));
        }
        let _ = writeln!(s, "# HELP vigia_logins_total Console sign-ins, by outcome.");
        let _ = writeln!(s, "# TYPE vigia_logins_total counter");
        for l in Login::ALL {
            let i = Login::ALL.iter().position(|x| *x == l).unwrap_or(0);
            let _ = writeln!(
                s,
                "vigia_logins_total{{outcome=\"{}\"}} {}",
                l.as_str(),
                self.logins[i].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            s,
            "# HELP vigia_actions_total Workflow actions taken by people, by action."
        );
        let _ = writeln!(s, "# TYPE vigia_actions_total counter");
        for a in crate::workflow::actions::ACTIONS {
            let n = self.actions[action_slot(a.action)].load(Ordering::Relaxed);
            let _ = writeln!(s, "vigia_actions_total{{action=\"{}\"}} {n}", a.action);
        }
        for (name, help, c) in [
            (
                "vigia_forbidden_total",
                "Requests refused as forbidden (role, CSRF token, origin or host).",
                &self.forbidden,
            ),
            (
                "vigia_unauthenticated_total",
                "Requests without a valid session or token.",
                &self.unauthenticated,
            ),
            (
                "vigia_commands_sent_total",
                "Device commands published from the outbox (resends included).",
                &self.commands_sent,
            ),
            (
                "vigia_commands_acked_total",
                "Device commands their device acknowledged.",
                &self.commands_acked,
            ),
            (
                "vigia_commands_expired_total",
                "Device commands given up on, never acknowledged.",
                &self.commands_expired,
            ),
        ] {
            let _ = writeln!(s, "# HELP {name} {help}");
            let _ = writeln!(s, "# TYPE {name} counter");
            let _ = writeln!(s, "{name} {}", c.load(Ordering::Relaxed));
        }
        let _ = writeln!(
            s,
            "# HELP vigia_ingest_stalled 1 while the store fails writes (devices keep their events)."
        );
        let _ = writeln!(s, "# TYPE vigia_ingest_stalled gauge");
        let _ = writeln!(
            s,
            "vigia_ingest_stalled {}",
            self.ingest_stalled.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP vigia_store_reopens_total Store reopened after an I/O error."
        );
        let _ = writeln!(s, "# TYPE vigia_store_reopens_total counter");
        let _ = writeln!(
            s,
            "vigia_store_reopens_total {}",
            self.store_reopens.load(Ordering::Relaxed)
        );
        let _ = writeln!(s, "# HELP vigia_live_clients Live feed streams open.");
        let _ = writeln!(s, "# TYPE vigia_live_clients gauge");
        let _ = writeln!(
            s,
            "vigia_live_clients {}",
            self.live_clients.load(Ordering::Relaxed)
        );
        self.feed_latency.render(
            &mut s,
            "vigia_feed_latency_seconds",
            "Time from a change being stored to its feed event being written to a stream.",
        );
        let _ = writeln!(s, "# HELP vigia_incidents Incidents, by state.");
        let _ = writeln!(s, "# TYPE vigia_incidents gauge");
        for (state, n) in incidents_by_state {
            let _ = writeln!(s, "vigia_incidents{{state=\"{state}\"}} {n}");
        }
        let _ = writeln!(s, "# HELP vigia_devices Devices known.");
        let _ = writeln!(s, "# TYPE vigia_devices gauge");
        let _ = writeln!(s, "vigia_devices {devices}");
        let _ = writeln!(
            s,
            "# HELP vigia_devices_online Devices whose newest session is online."
        );
        let _ = writeln!(s, "# TYPE vigia_devices_online gauge");
        let _ = writeln!(s, "vigia_devices_online {online}");
        let _ = writeln!(
            s,
            "# HELP vigia_outbox_pending Device commands waiting for their device's acknowledgement."
        );
        let _ = writeln!(s, "# TYPE vigia_outbox_pending gauge");
        let _ = writeln!(s, "vigia_outbox_pending {outbox}");
        s
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_labels() {
        let m = Metrics::default();
        m.message_in(Some(UpKind::Event));
        m.message_in(Some(UpKind::Event));
        m.message_in(None);
        m.rejected(Rejected::Payload(RejectReason::Malformed));
        m.rejected(Rejected::UnknownTopic);
        let text = m.render(&[("open", 3), ("cleared", 1)], 2, 1, 0);
        assert!(
            text.contains("vigia_messages_in_total{kind=\"event\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("vigia_messages_in_total{kind=\"unknown\"} 1\n"));
        assert!(text.contains("vigia_rejected_total{reason=\"malformed\"} 1\n"));
        assert!(text.contains("vigia_rejected_total{reason=\"bad_version\"} 0\n"));
        assert!(text.contains("vigia_rejected_total{reason=\"unknown_topic\"} 1\n"));
        assert!(text.contains("vigia_incidents{state=\"open\"} 3\n"));
        assert!(text.contains("vigia_devices_online 1\n"));
    }

    #[test]
    fn renders_the_console_counters_and_the_feed_latency_histogram() {
        let m = std::sync::Arc::new(Metrics::default());
        m.login(Login::Ok);
        m.login(Login::Failed);
        m.login(Login::Failed);
        m.action("escalate");
        m.forbidden();
        let guard = m.live_client();
        m.feed_latency(std::time::Duration::from_millis(3));
        m.feed_latency(std::time::Duration::from_millis(300));
        let text = m.render(&[], 0, 0, 0);
        assert!(
            text.contains("vigia_logins_total{outcome=\"failed\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("vigia_actions_total{action=\"escalate\"} 1\n"));
        assert!(text.contains("vigia_actions_total{action=\"close\"} 0\n"));
        assert!(text.contains("vigia_forbidden_total 1\n"));
        assert!(text.contains("vigia_live_clients 1\n"));
        assert!(text.contains("vigia_feed_latency_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("vigia_feed_latency_seconds_bucket{le=\"0.5\"} 2\n"));
        assert!(text.contains("vigia_feed_latency_seconds_count 2\n"));
        drop(guard);
        assert!(m.render(&[], 0, 0, 0).contains("vigia_live_clients 0\n"));
    }
}
