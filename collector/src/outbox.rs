//! What leaves the collector because of a stored change: commands to devices
//! (`down/{id}/cmd`, `down/{id}/ack` over MQTT) and the live feed for people (incidents
//! opened or changed, devices going online or offline, the workflow's notifications).
//!
//! Everything here is sent only after the change that causes it is flushed to the store,
//! by [`deliver`], which ingest, the API and the timers share. The feed is a [`FeedHub`]:
//! every event gets the next number, is kept in a ring of the [`FEED_HISTORY`] most recent
//! ones and broadcast on a bounded channel that the HTTP side turns into Server-Sent
//! Events. A browser that reconnects names the last number it saw and gets exactly what
//! followed from the ring; one that fell further behind (or lagged on the channel: a slow
//! browser never slows ingest down) is told to reload its lists.
//!
//! Device commands (incident numbers, questions, state changes) are written to the store's
//! outbox in the same transaction as the change that causes them, numbered, and sent by
//! the [`CommandSender`] task until the device names them in a `cmdack`: at start
//! (everything queued, since a restart may have lost what was in flight), as soon as a
//! change queues one, and again with backoff while unacknowledged; past
//! [`MAX_ATTEMPTS`] a command is given up and counted.
use rumqttc::{AsyncClient, QoS};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch, Notify};
use tracing::{debug, error, info, warn};
use vigia_protocol::{encode, Cmd, CmdBody, DeviceId, DownKind, Millis, Topics, VERSION};

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::{OutboxEntry, SharedStore};

use crate::workflow::{self, Decision, IncidentSummary, Notification, Policy};

/// How many feed events are buffered for slow subscribers.
pub const FEED_CAPACITY: usize = 256;
/// How many recent feed events a reconnecting stream can resume from.
pub const FEED_HISTORY: usize = 2048;

/// A feed event.
// Short-lived values on a bounded channel; boxing would only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FeedEvent {
    /// An incident was opened (`opened`) or changed.
    Incident {
        /// Opened by this event, rather than updated.
        opened: bool,
        /// The incident after the change.
        incident: IncidentSummary,
    },
    /// A device went online or offline.
    Device {
        /// The device.
        device: DeviceId,
        /// Its new state.
        online: bool,
        /// Its session counter.
        boot: u64,
    },
    /// A workflow notification for people (escalation, SLA breach, provider notice...).
    Notification(Notification),
}

impl FeedEvent {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Incident { .. } => "incident",
            Self::Device { .. } => "device",
            Self::Notification(_) => "notification",
        }
    }
}

/// Sends messages to devices (`down/{id}/cmd`, `down/{id}/ack`). Cheap to clone; any task
/// may use it (publishing only queues into rumqttc; ingest's poller task sends).
#[derive(Clone)]
pub struct Downlink {
    client: AsyncClient,
    topics: Topics,
    queued: Arc<Notify>,
    notifications: Arc<Notify>,
}

impl Downlink {
    /// A downlink publishing through `client` under `topics`.
    pub fn new(client: AsyncClient, topics: Topics) -> Self {
        Self {
            client,
            topics,
            queued: Arc::new(Notify::new()),
            notifications: Arc::new(Notify::new()),
        }
    }

    /// What wakes the notification sender (`notify::sender::NotifySender`) when a stored
    /// change queued notifications for people.
    pub fn notifications(&self) -> Arc<Notify> {
        self.notifications.clone()
    }

    /// Tells the [`CommandSender`] that a change queued commands.
    pub fn commands_queued(&self) {
        self.queued.notify_one();
    }

    /// Publishes `msg` on the device's `kind` topic (QoS 1).
    pub async fn publish<T: Serialize>(&self, device: &DeviceId, kind: DownKind, msg: &T) {
        let bytes = match encode(msg) {
            Ok(b) => b,
            Err(e) => {
                error!(device = %device, error = %e, "cannot encode a message to the device");
                return;
            }
        };
        let topic = self.topics.down(device, kind);
        if let Err(e) = self
            .client
            .publish(topic.as_str(), QoS::AtLeastOnce, false, bytes)
            .await
        {
            warn!(device = %device, error = %e, "cannot queue a message to the device");
        }
    }

    /// Publishes `payload` on `topic`, QoS 1 and retained (enrolment replies, which an
    /// agent that was away must find when it comes back).
    pub async fn publish_retained(&self, topic: &str, payload: Vec<u8>) {
        if let Err(e) = self
            .client
            .publish(topic, QoS::AtLeastOnce, true, payload)
            .await
        {
            warn!(topic, error = %e, "cannot queue a retained message");
        }
    }

    /// Sends a command to a device: `id` 0 for one sent once and not kept (a repeat for a
    /// redelivered event), else its outbox id, which the device acknowledges.
    pub async fn cmd(&self, device: &DeviceId, id: u64, body: CmdBody, now: Millis) {
        let cmd = Cmd {
            v: VERSION,
            device: device.clone(),
            id,
            ts: now,
            body,
        };
        debug!(device = %device, "command sent");
        self.publish(device, DownKind::Cmd, &cmd).await;
    }
}

/// Sends what stored decisions emit: notifications (logged and put on the feed), each
/// changed incident on the feed (`opened` says the decision opened its incident), and a
/// nudge to the [`CommandSender`] for the device commands and to the notification sender
/// for the mails and webhooks the store queued with them. Call only after the store is
/// flushed.
pub fn deliver(
    decisions: &[(Decision, bool)],
    downlink: &Downlink,
    feed: &FeedHub,
    policy: &Policy,
) {
    for (d, opened) in decisions {
        for m in &d.messages {
            match m {
                workflow::Outgoing::Device { .. } => downlink.commands_queued(),
                workflow::Outgoing::Notify(n) => {
                    info!(incident = n.incident, audience = ?n.audience, text = %n.text,
                        "notification");
                    feed.publish_about(
                        FeedEvent::Notification(n.clone()),
                        d.incident.reserve.clone(),
                    );
                }
            }
        }
        downlink.notifications.notify_one();
        let inc = &d.incident;
        feed.publish(FeedEvent::Incident {
            opened: *opened,
            incident: IncidentSummary::of(inc, policy),
        });
    }
}

/// A command unacknowledged this many times is given up (about two days at the cap).
pub const MAX_ATTEMPTS: u32 = 300;
/// The first resend waits this long; each next one twice as long, up to [`RESEND_CAP`].
pub const RESEND_FIRST: Duration = Duration::from_secs(15);
/// The longest wait between resends.
pub const RESEND_CAP: Duration = Duration::from_secs(600);
/// How often the sender looks for due resends when nothing wakes it.
const POLL: Duration = Duration::from_secs(1);

/// When to send a command again after its `attempts`-th send.
pub fn resend_after(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    RESEND_FIRST
        .saturating_mul(1u32 << doublings)
        .min(RESEND_CAP)
}

/// The task that sends the outbox's device commands until they are acknowledged.
pub struct CommandSender {
    /// The store holding the outbox.
    pub store: SharedStore,
    /// Where commands go.
    pub downlink: Downlink,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The collector's clock.
    pub clock: Arc<dyn Clock>,
}

impl CommandSender {
    /// Runs until `stop` turns true.
    pub fn spawn(self, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            // At start everything queued goes out: a restart may have lost what was in
            // flight, whatever its next time says.
            let mut horizon = Some(Millis::MAX);
            loop {
                let now = self.clock.now();
                self.send_due(horizon.take().unwrap_or(now), now).await;
                tokio::select! {
                    () = self.downlink.queued.notified() => {}
                    () = tokio::time::sleep(POLL) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        })
    }

    /// Sends every command due at `due` (and records when to try again).
    async fn send_due(&self, due: Millis, now: Millis) {
        let store = self.store.clone();
        let entries = match tokio::task::spawn_blocking(move || store.outbox_due(due, 512)).await {
            Ok(Ok(e)) => e,
            Ok(Err(e)) => return warn!(error = %e, "cannot read the command outbox"),
            Err(e) => return warn!(error = %e, "command outbox task failed"),
        };
        if entries.is_empty() {
            return;
        }
        let mut updates: Vec<(OutboxEntry, bool)> = Vec::with_capacity(entries.len());
        for mut e in entries {
            self.downlink
                .cmd(&e.device, e.id, e.body.clone(), now)
                .await;
            self.metrics.command_sent();
            e.attempts = e.attempts.saturating_add(1);
            let expired = e.attempts >= MAX_ATTEMPTS;
            if expired {
                warn!(device = %e.device, id = e.id, attempts = e.attempts,
                    "device never acknowledged the command: giving up");
                self.metrics.command_expired();
            } else {
                let wait = u64::try_from(resend_after(e.attempts).as_millis()).unwrap_or(u64::MAX);
                e.next_at = now.saturating_add(wait);
            }
            updates.push((e, expired));
        }
        let store = self.store.clone();
        let r = tokio::task::spawn_blocking(move || {
            for (e, expired) in &updates {
                if *expired {
                    store.outbox_remove(e.id)?;
                } else {
                    store.outbox_put(e)?;
                }
            }
            store.flush()
        })
        .await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "cannot record the commands sent"),
            Err(e) => warn!(error = %e, "command outbox task failed"),
        }
    }
}

/// One numbered feed event.
#[derive(Debug)]
pub struct FeedEntry {
    /// Its number in this collector's run.
    pub id: u64,
    /// When it was published (after its change was stored): the feed's latency is
    /// measured from here to the moment a stream writes it.
    pub at: Instant,
    /// The event.
    pub event: FeedEvent,
    /// The information classification of the incident a notification is about, for
    /// the stream to narrow it for each reader (a summary carries its own).
    pub reserve: Option<workflow::Reserve>,
}

/// Where a stream starts.
#[derive(Debug)]
pub enum Resume {
    /// After these events, which the caller missed.
    Replay(Vec<Arc<FeedEntry>>),
    /// The position is unknown (another run of the collector) or too old: reload.
    Reset,
}

#[derive(Debug)]
struct Ring {
    next: u64,
    recent: VecDeque<Arc<FeedEntry>>,
}

#[derive(Debug)]
struct Hub {
    run: String,
    ring: Mutex<Ring>,
    tx: broadcast::Sender<Arc<FeedEntry>>,
}

/// The live feed: numbered events, their recent past, and the channel streams follow.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct FeedHub(Arc<Hub>);

impl Default for FeedHub {
    fn default() -> Self {
        Self::new()
    }
}

impl FeedHub {
    /// A hub for one run of the collector: positions are `run-number`, so a position
    /// from an earlier run is never mistaken for one of this run.
    pub fn new() -> Self {
        let run = format!("{:x}", crate::clock::now_ms());
        let (tx, _) = broadcast::channel(FEED_CAPACITY);
        Self(Arc::new(Hub {
            run,
            ring: Mutex::new(Ring {
                next: 1,
                recent: VecDeque::with_capacity(FEED_HISTORY),
            }),
            tx,
        }))
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.0
            .ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Numbers `event`, keeps it, and sends it to every stream.
    pub fn publish(&self, event: FeedEvent) {
        self.publish_about(event, None);
    }

    /// Publishes `event` about a record classified as `reserve`.
    pub fn publish_about(&self, event: FeedEvent, reserve: Option<workflow::Reserve>) {
        let mut ring = self.ring();
        let entry = Arc::new(FeedEntry {
            id: ring.next,
            at: Instant::now(),
            event,
            reserve,
        });
        ring.next += 1;
        if ring.recent.len() == FEED_HISTORY {
            ring.recent.pop_front();
        }
        ring.recent.push_back(entry.clone());
        // Sent under the lock, so the ring and the channel agree on the order; no
        // subscriber is fine.
        let _ = self.0.tx.send(entry);
    }

    /// The position of the newest event, as a stream's event id (`run-number`).
    pub fn position(&self) -> String {
        let next = self.ring().next;
        self.id_of(next - 1)
    }

    /// The event id of number `id`.
    pub fn id_of(&self, id: u64) -> String {
        format!("{}-{id}", self.0.run)
    }

    /// Subscribes after position `after` (an event id a stream sent, or `None` for "from
    /// now"): what was missed since, and the channel for what follows, with nothing lost
    /// or repeated between the two.
    pub fn subscribe(
        &self,
        after: Option<&str>,
    ) -> (Resume, u64, broadcast::Receiver<Arc<FeedEntry>>) {
        let ring = self.ring();
        let rx = self.0.tx.subscribe();
        let newest = ring.next - 1;
        let resume = match after {
            None => Resume::Replay(Vec::new()),
            Some(pos) => match pos
                .split_once('-')
                .filter(|(run, _)| *run == self.0.run)
                .and_then(|(_, n)| n.parse::<u64>().ok())
            {
                Some(n) if n == newest => Resume::Replay(Vec::new()),
                Some(n)
                    if n < newest
                        && ring.recent.front().is_some_and(|oldest| oldest.id <= n + 1) =>
                {
                    Resume::Replay(ring.recent.iter().filter(|e| e.id > n).cloned().collect())
                }
                _ => Resume::Reset,
            },
        };
        (resume, newest, rx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod feed_tests {
    use super::*;

    fn dev(n: u64) -> FeedEvent {
        FeedEvent::Device {
            device: DeviceId::new("d").unwrap(),
            online: true,
            boot: n,
        }
    }

    fn boots(v: &[Arc<FeedEntry>]) -> Vec<u64> {
        v.iter()
            .map(|e| match &e.event {
                FeedEvent::Device { boot, .. } => *boot,
                _ => 0,
            })
            .collect()
    }

    #[test]
    fn resends_back_off_to_their_cap() {
        assert_eq!(resend_after(1), RESEND_FIRST);
        assert_eq!(resend_after(2), RESEND_FIRST * 2);
        assert_eq!(resend_after(3), RESEND_FIRST * 4);
        assert_eq!(resend_after(40), RESEND_CAP);
        assert_eq!(resend_after(u32::MAX), RESEND_CAP);
    }

    #[test]
    fn a_stream_resumes_after_its_last_event_without_gap_or_repeat() {
        let hub = FeedHub::new();
        for n in 1..=5 {
            hub.publish(dev(n));
        }
        let pos = hub.id_of(3);
        let (resume, newest, mut rx) = hub.subscribe(Some(&pos));
        assert_eq!(newest, 5);
        let Resume::Replay(missed) = resume else {
            panic!("reset")
        };
        assert_eq!(boots(&missed), [4, 5]);
        hub.publish(dev(6));
        assert_eq!(rx.try_recv().unwrap().id, 6);
        // Up to date: nothing to replay.
        let (resume, _, _) = hub.subscribe(Some(&hub.position()));
        assert!(matches!(resume, Resume::Replay(v) if v.is_empty()));
    }

    #[test]
    fn an_unknown_or_too_old_position_means_reload() {
        let hub = FeedHub::new();
        for n in 0..(FEED_HISTORY as u64 + 10) {
            hub.publish(dev(n));
        }
        assert!(matches!(
            hub.subscribe(Some(&hub.id_of(2))).0,
            Resume::Reset
        ));
        assert!(matches!(
            hub.subscribe(Some("other-run-3")).0,
            Resume::Reset
        ));
        assert!(matches!(hub.subscribe(Some("garbage")).0, Resume::Reset));
        // The oldest kept position still resumes.
        let oldest = hub.ring().recent.front().unwrap().id;
        assert!(matches!(
            hub.subscribe(Some(&hub.id_of(oldest - 1))).0,
            Resume::Replay(v) if v.len() == FEED_HISTORY
        ));
    }
}
