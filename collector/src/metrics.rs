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

const KINDS: [Option<UpKind>; 4] = [
    Some(UpKind::Birth),
    Some(UpKind::Status),
    Some(UpKind::Event),
    None,
];

fn kind_index(kind: Option<UpKind>) -> usize {
    match kind {
        Some(UpKind::Birth) => 0,
        Some(UpKind::Status) => 1,
        Some(UpKind::Event) => 2,
        None => 3,
    }
}

/// The in-memory counters.
#[derive(Debug, Default)]
pub struct Metrics {
    messages_in: [AtomicU64; 4],
    rejected: [AtomicU64; 5],
    events_stored: AtomicU64,
    events_duplicate: AtomicU64,
    events_deferred: AtomicU64,
    store_errors: AtomicU64,
    acks_sent: AtomicU64,
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

    /// The Prometheus text exposition, with the store's gauges.
    pub fn render(&self, incidents_by_state: &[(&str, u64)], devices: u64, online: u64) -> String {
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
        let text = m.render(&[("open", 3), ("cleared", 1)], 2, 1);
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
}
