//! MQTT ingest: subscribe to every device's `up/` topics, store what arrives exactly once,
//! and only then acknowledge it, to the broker (MQTT PUBACK) and to the device (`Ack`).
//!
//! Two tasks, because rumqttc's event loop must be polled continuously and publishing from
//! the polling task can deadlock: the *poller* only polls, reconnects with backoff and
//! jitter, and forwards packets over an unbounded channel (bounded in practice by the
//! broker's inflight window, since nothing is acked before it is stored); the *worker*
//! decodes, writes a batch to the store in one blocking section, flushes once (group
//! commit: one fsync per batch, not per message), then acks and publishes. The trade-off:
//! a message waits for its batch's fsync, and if the collector dies between the flush and
//! the PUBACK the broker redelivers it, which the store turns into a no-op and acks again.
//!
//! Events go through the workflow in the store's transaction (correlate, then open or
//! apply); the commands and notifications a decision emits leave only after the batch's
//! flush, through [`Downlink`], which the API and the timers share.
//!
//! The session is persistent (`clean_session = false`, stable client id) so the broker
//! keeps messages while the collector is down; when the broker says the session is gone
//! (`session_present = false`) the worker subscribes again.
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumqttc::{
    AsyncClient, ConnectionError, Event as MqttEvent, EventLoop, LastWill, MqttOptions, Outgoing,
    Packet, Publish, QoS, TlsConfiguration, Transport,
};
use tokio::sync::{broadcast, mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};
use vigia_protocol::{
    decode, encode, peek_header, Ack, Birth, Cmd, CmdBody, CodecError, CollectorStatus, DeviceId,
    DownKind, Event, Millis, RejectReason, Rejection, SeqRange, Status, Topic, Topics, UpKind,
    VERSION,
};

use crate::broker::MAX_PACKET;
use crate::feed::{FeedEvent, IncidentSummary};
use crate::metrics::{Metrics, Rejected};
use crate::store::{StatusOutcome, Store, StoreError};
use crate::timers::Clock;
use crate::workflow::{self, Decision, Policy};

/// Most messages handled in one store batch (one flush).
const MAX_BATCH: usize = 256;
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Where and how to connect.
#[derive(Clone)]
pub struct IngestConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// TLS with this CA (PEM), or plain TCP.
    pub tls_ca: Option<Vec<u8>>,
    /// Client id (stable: the persistent session is keyed by it).
    pub client_id: String,
    /// Username and password.
    pub credentials: Option<(String, String)>,
    /// Topic names.
    pub topics: Topics,
}

/// What ingest needs besides the broker: the workflow policy, the clock, the feed and the
/// timer task's wake-up.
#[derive(Clone)]
pub struct IngestDeps {
    /// The store.
    pub store: Store,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Feed events.
    pub feed: broadcast::Sender<FeedEvent>,
    /// The workflow policy.
    pub policy: Arc<Policy>,
    /// The collector's clock.
    pub clock: Arc<dyn Clock>,
    /// Poked after every write that may move the earliest timer.
    pub wake: Arc<Notify>,
}

/// Sends messages to devices (`down/{id}/cmd`, `down/{id}/ack`). Cheap to clone; any task
/// may use it (publishing only queues into rumqttc; the poller task sends).
#[derive(Clone)]
pub struct Downlink {
    client: AsyncClient,
    topics: Topics,
}

impl Downlink {
    /// Publishes `msg` on the device's `kind` topic (QoS 1).
    pub async fn publish<T: serde::Serialize>(&self, device: &DeviceId, kind: DownKind, msg: &T) {
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

    /// Sends a command to a device.
    pub async fn cmd(&self, device: &DeviceId, body: CmdBody, now: Millis) {
        let cmd = Cmd {
            v: VERSION,
            device: device.clone(),
            ts: now,
            body,
        };
        debug!(device = %device, "command sent");
        self.publish(device, DownKind::Cmd, &cmd).await;
    }
}

/// Sends what stored decisions emit: device commands (`cmds` is false when the caller
/// already sent the device commands itself, as ingest does with its acks), notifications
/// (logged and put on the feed), and the changed incidents on the feed. Call only after
/// the store is flushed.
pub async fn dispatch(
    decisions: &[(Decision, bool)],
    downlink: &Downlink,
    feed: &broadcast::Sender<FeedEvent>,
    policy: &Policy,
    now: Millis,
    cmds: bool,
) {
    for (d, opened) in decisions {
        for m in &d.messages {
            match m {
                workflow::Outgoing::Device { device, body } => {
                    if cmds {
                        downlink.cmd(device, body.clone(), now).await;
                    }
                }
                workflow::Outgoing::Notify(n) => {
                    info!(incident = n.incident, audience = ?n.audience, text = %n.text,
                        "notification");
                    let _ = feed.send(FeedEvent::Notification(n.clone()));
                }
            }
        }
        let inc = &d.incident;
        let _ = feed.send(FeedEvent::Incident {
            opened: *opened,
            incident: IncidentSummary::new(inc, workflow::next_deadline(inc, policy)),
        });
    }
}

/// The running ingest.
pub struct Ingest {
    downlink: Downlink,
    ready: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    worker: JoinHandle<()>,
    poller: JoinHandle<()>,
}

/// The collector's wall clock in ms since the epoch (the I/O edge reads the clock; the
/// store is given the time).
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn collector_status(online: bool) -> Vec<u8> {
    encode(&CollectorStatus {
        v: VERSION,
        online,
        ts: now_ms(),
    })
    .unwrap_or_default()
}

impl Ingest {
    /// Connects (in the background) and starts ingesting.
    pub fn spawn(cfg: IngestConfig, deps: IngestDeps) -> Self {
        // rumqttc panics on a persistent session without a client id; config validation
        // refuses an empty one, and this keeps the library call safe as well.
        let client_id = if cfg.client_id.is_empty() {
            crate::config::DEFAULT_CLIENT_ID.to_string()
        } else {
            cfg.client_id.clone()
        };
        let mut opts = MqttOptions::new(client_id, cfg.host.clone(), cfg.port);
        opts.set_clean_session(false)
            .set_manual_acks(true)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET)
            .set_keep_alive(Duration::from_secs(30))
            .set_inflight(100)
            .set_last_will(LastWill::new(
                cfg.topics.collector_status().as_str(),
                collector_status(false),
                QoS::AtLeastOnce,
                true,
            ));
        if let Some((u, p)) = &cfg.credentials {
            opts.set_credentials(u.clone(), p.clone());
        }
        if let Some(ca) = &cfg.tls_ca {
            opts.set_transport(Transport::Tls(TlsConfiguration::Simple {
                ca: ca.clone(),
                alpn: None,
                client_auth: None,
            }));
        }
        let (client, eventloop) = AsyncClient::new(opts, 1024);
        let (work_tx, work_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = watch::channel(false);
        let poller = tokio::spawn(poll_loop(
            eventloop,
            work_tx,
            stop_rx.clone(),
            format!("{}:{}", cfg.host, cfg.port),
        ));
        let downlink = Downlink {
            client: client.clone(),
            topics: cfg.topics.clone(),
        };
        let worker = tokio::spawn(
            Worker {
                client,
                topics: cfg.topics,
                downlink: downlink.clone(),
                deps,
                ready: ready_tx,
            }
            .run(work_rx, stop_rx),
        );
        Self {
            downlink,
            ready: ready_rx,
            stop: stop_tx,
            worker,
            poller,
        }
    }

    /// The device sender, for the API and the timers.
    pub fn downlink(&self) -> Downlink {
        self.downlink.clone()
    }

    /// Waits until the subscription is in place (or `timeout` passes); returns whether it is.
    pub async fn wait_ready(&mut self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.ready.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Publishes "collector offline", disconnects and stops both tasks.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.worker.await {
            warn!(error = %e, "ingest worker ended abnormally");
        }
        // The poller ends when the disconnect goes out; if the broker is unreachable it
        // would retry forever, so give it a bounded time.
        let mut poller = self.poller;
        if tokio::time::timeout(Duration::from_secs(3), &mut poller)
            .await
            .is_err()
        {
            poller.abort();
            let _ = poller.await;
        }
    }
}

enum Work {
    Connected { session_present: bool },
    SubAck,
    Publish(Publish),
}

/// A small random factor in [0.75, 1.25) so many collectors (or a restarted broker's
/// clients) do not reconnect in lockstep.
fn jitter(d: Duration) -> Duration {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(now_ms().into());
    let r = (h.finish() % 1000) as f64 / 1000.0;
    d.mul_f64(0.75 + r * 0.5)
}

async fn poll_loop(
    mut eventloop: EventLoop,
    work: mpsc::UnboundedSender<Work>,
    mut stop: watch::Receiver<bool>,
    broker: String,
) {
    let mut backoff = BACKOFF_MIN;
    let mut failures: u32 = 0;
    loop {
        match eventloop.poll().await {
            Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                info!(%broker, session_present = ack.session_present, "connected to broker");
                backoff = BACKOFF_MIN;
                failures = 0;
                let _ = work.send(Work::Connected {
                    session_present: ack.session_present,
                });
            }
            Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                let _ = work.send(Work::SubAck);
            }
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                if work.send(Work::Publish(p)).is_err() {
                    return;
                }
            }
            Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) => {
                debug!("disconnect sent");
                return;
            }
            Ok(_) => {}
            Err(e) => {
                if *stop.borrow() {
                    return;
                }
                failures += 1;
                let wait = jitter(backoff);
                if failures == 1 || failures.is_multiple_of(10) {
                    warn!(%broker, error = %e, retry_in_ms = wait.as_millis() as u64, failures,
                        "broker connection failed");
                } else {
                    debug!(%broker, error = %e, "broker connection failed again");
                }
                if matches!(e, ConnectionError::RequestsDone) {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// What one incoming publish turned into, before the store.
enum Item {
    Birth(Box<Birth>),
    Status(Status),
    Event(Box<Event>),
    /// An event refused: acked as rejected when its seq is known.
    Rejected {
        device: DeviceId,
        seq: Option<u64>,
        reason: RejectReason,
    },
    /// Nothing to store (refused birth/status, unknown topic): acked to the broker only.
    Nothing,
}

/// What the store made of an item.
// One per message of a batch, consumed at once: size does not matter here.
#[allow(clippy::large_enum_variant)]
enum Done {
    Stored {
        device: DeviceId,
        seq: u64,
        duplicate: bool,
        cmds: Vec<CmdBody>,
        decision: Option<Box<(Decision, bool)>>,
    },
    Rejected {
        device: DeviceId,
        rejection: Rejection,
    },
    Feed(FeedEvent),
    Nothing,
}

struct Worker {
    client: AsyncClient,
    topics: Topics,
    downlink: Downlink,
    deps: IngestDeps,
    ready: watch::Sender<bool>,
}

impl Worker {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Work>, mut stop: watch::Receiver<bool>) {
        loop {
            let first = tokio::select! {
                w = rx.recv() => w,
                _ = stop.wait_for(|s| *s) => None,
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(w) => batch.push(w),
                    Err(_) => break,
                }
            }
            let mut publishes = Vec::new();
            for w in batch {
                match w {
                    Work::Connected { session_present } => self.on_connected(session_present).await,
                    Work::SubAck => {
                        info!(filter = %self.topics.up_filter(), "subscribed");
                        let _ = self.ready.send(true);
                    }
                    Work::Publish(p) => publishes.push(p),
                }
            }
            if !publishes.is_empty() {
                self.handle_batch(publishes).await;
            }
        }
        // Clean shutdown: say so (retained), then disconnect. Unacked messages stay with
        // the broker's persistent session and come back on the next start.
        let topic = self.topics.collector_status();
        if let Err(e) = self
            .client
            .publish(
                topic.as_str(),
                QoS::AtLeastOnce,
                true,
                collector_status(false),
            )
            .await
        {
            debug!(error = %e, "could not queue the offline status");
        }
        let _ = self.client.disconnect().await;
        info!("ingest stopped");
    }

    async fn on_connected(&self, session_present: bool) {
        if session_present {
            let _ = self.ready.send(true);
        } else {
            let filter = self.topics.up_filter();
            info!(filter = %filter, "no session on the broker: subscribing");
            if let Err(e) = self
                .client
                .subscribe(filter.as_str(), QoS::AtLeastOnce)
                .await
            {
                error!(error = %e, "cannot queue the subscription");
            }
        }
        let topic = self.topics.collector_status();
        if let Err(e) = self
            .client
            .publish(
                topic.as_str(),
                QoS::AtLeastOnce,
                true,
                collector_status(true),
            )
            .await
        {
            warn!(error = %e, "cannot queue the online status");
        }
    }

    /// Decodes a publish. Counting and logging of refusals happen here.
    fn classify(&self, p: &Publish) -> Item {
        let (device, kind) = match self.topics.parse(&p.topic) {
            Ok(Topic::Up(d, k)) => (d, k),
            Ok(_) | Err(_) => {
                self.deps.metrics.message_in(None);
                self.deps.metrics.rejected(Rejected::UnknownTopic);
                warn!(topic = %p.topic, reason = "unknown_topic", "message rejected");
                return Item::Nothing;
            }
        };
        self.deps.metrics.message_in(Some(kind));
        let payload = &p.payload[..];
        let reject = |reason: RejectReason, detail: &dyn std::fmt::Display| {
            self.deps.metrics.rejected(Rejected::Payload(reason));
            warn!(device = %device, kind = kind.as_str(), reason = reason.as_str(),
                detail = %detail, "message rejected");
        };
        match kind {
            UpKind::Birth => match decode::<Birth>(payload) {
                Ok(b) if b.device == device => Item::Birth(Box::new(b)),
                Ok(b) => {
                    reject(RejectReason::DeviceMismatch, &b.device);
                    Item::Nothing
                }
                Err(e) => {
                    reject(e.reason(), &e);
                    Item::Nothing
                }
            },
            UpKind::Status => match decode::<Status>(payload) {
                Ok(s) if s.device == device => Item::Status(s),
                Ok(s) => {
                    reject(RejectReason::DeviceMismatch, &s.device);
                    Item::Nothing
                }
                Err(e) => {
                    reject(e.reason(), &e);
                    Item::Nothing
                }
            },
            UpKind::Event => match decode::<Event>(payload) {
                Ok(e) if e.device == device => Item::Event(Box::new(e)),
                Ok(e) => {
                    reject(RejectReason::DeviceMismatch, &e.device);
                    Item::Rejected {
                        device,
                        seq: Some(e.seq),
                        reason: RejectReason::DeviceMismatch,
                    }
                }
                Err(e) => {
                    reject(e.reason(), &e);
                    let seq = match &e {
                        // `peek_header` refuses oversized input; the broker already bounds
                        // packets to MAX_PACKET, so reading the seq here is still bounded,
                        // and without it the agent would resend the event forever.
                        CodecError::TooLarge { .. } if payload.len() <= MAX_PACKET => {
                            serde_json::from_slice::<serde_json::Value>(payload)
                                .ok()
                                .and_then(|v| v.get("seq").and_then(serde_json::Value::as_u64))
                        }
                        CodecError::TooLarge { .. } => None,
                        _ => peek_header(payload).and_then(|h| h.seq),
                    };
                    Item::Rejected {
                        device,
                        seq,
                        reason: e.reason(),
                    }
                }
            },
        }
    }

    async fn handle_batch(&self, publishes: Vec<Publish>) {
        let items: Vec<Item> = publishes.iter().map(|p| self.classify(p)).collect();
        let store = self.deps.store.clone();
        let policy = self.deps.policy.clone();
        let now = self.deps.clock.now();
        let result = tokio::task::spawn_blocking(move || {
            let done: Vec<Result<Done, StoreError>> = items
                .into_iter()
                .map(|i| apply(&store, &policy, i, now))
                .collect();
            // One flush for the whole batch: nothing is acked before it returns.
            store.flush().map(|()| done)
        })
        .await;
        let done = match result {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => {
                self.deps.metrics.store_error();
                error!(error = %e, batch = publishes.len(),
                    "store flush failed: nothing in this batch is acknowledged");
                return;
            }
            Err(e) => {
                error!(error = %e, "store task failed: nothing in this batch is acknowledged");
                return;
            }
        };

        let mut acks: BTreeMap<DeviceId, (Vec<u64>, Vec<Rejection>)> = BTreeMap::new();
        let mut cmds = Vec::new();
        let mut feed = Vec::new();
        let mut decisions = Vec::new();
        for (p, d) in publishes.iter().zip(done) {
            let d = match d {
                Ok(d) => d,
                Err(e) => {
                    // Not acked: the broker redelivers it on the next session.
                    self.deps.metrics.store_error();
                    error!(topic = %p.topic, error = %e, "store write failed; message not acknowledged");
                    continue;
                }
            };
            if let Err(e) = self.client.ack(p).await {
                warn!(error = %e, "cannot queue the MQTT ack");
            }
            match d {
                Done::Stored {
                    device,
                    seq,
                    duplicate,
                    cmds: c,
                    decision,
                } => {
                    self.deps.metrics.event_stored(duplicate);
                    cmds.extend(c.into_iter().map(|c| (device.clone(), c)));
                    decisions.extend(decision.map(|d| *d));
                    acks.entry(device).or_default().0.push(seq);
                }
                Done::Rejected { device, rejection } => {
                    acks.entry(device).or_default().1.push(rejection);
                }
                Done::Feed(f) => feed.push(f),
                Done::Nothing => {}
            }
        }
        for (device, (seqs, rejected)) in acks {
            for ack in build_acks(&device, seqs, rejected) {
                self.downlink.publish(&device, DownKind::Ack, &ack).await;
                self.deps.metrics.ack_sent();
            }
        }
        for (device, body) in cmds {
            self.downlink.cmd(&device, body, now).await;
        }
        for f in feed {
            // No subscriber is fine.
            let _ = self.deps.feed.send(f);
        }
        dispatch(
            &decisions,
            &self.downlink,
            &self.deps.feed,
            &self.deps.policy,
            now,
            false,
        )
        .await;
        if !decisions.is_empty() {
            self.deps.wake.notify_one();
        }
    }
}

/// Runs one item through the store (blocking: sled).
fn apply(store: &Store, policy: &Policy, item: Item, now: Millis) -> Result<Done, StoreError> {
    Ok(match item {
        Item::Birth(b) => {
            store.record_birth(&b, now)?;
            debug!(device = %b.device, boot = b.boot, "birth stored");
            Done::Nothing
        }
        Item::Status(s) => match store.record_status(&s, now)? {
            StatusOutcome::Applied { changed } => {
                debug!(device = %s.device, online = s.online, boot = s.boot, "status stored");
                if changed {
                    info!(device = %s.device, online = s.online, boot = s.boot, "device status changed");
                    Done::Feed(FeedEvent::Device {
                        device: s.device,
                        online: s.online,
                        boot: s.boot,
                    })
                } else {
                    Done::Nothing
                }
            }
            StatusOutcome::Stale => {
                debug!(device = %s.device, online = s.online, boot = s.boot, "stale status ignored");
                Done::Nothing
            }
        },
        Item::Event(e) => {
            let out = store.record_event(&e, now, policy)?;
            debug!(device = %e.device, seq = e.seq, duplicate = out.duplicate, "event stored");
            if let Some(refused) = &out.refused {
                warn!(device = %e.device, seq = e.seq, error = %refused,
                    "event stored but the workflow refused it");
            }
            if let Some((d, true)) = &out.decision {
                info!(device = %e.device, incident = d.incident.number,
                    state = %d.incident.state, title = %d.incident.origin.description(),
                    "incident opened");
            }
            Done::Stored {
                device: e.device,
                seq: e.seq,
                duplicate: out.duplicate,
                cmds: out.cmds,
                decision: out.decision.map(Box::new),
            }
        }
        Item::Rejected {
            device,
            seq: Some(seq),
            reason,
        } => Done::Rejected {
            device,
            rejection: Rejection { seq, reason },
        },
        Item::Rejected { seq: None, .. } | Item::Nothing => Done::Nothing,
    })
}

/// Compresses seqs into ranges and splits them (and the rejections) into acks that fit
/// the protocol's bounded lists.
pub fn build_acks(device: &DeviceId, mut seqs: Vec<u64>, rejected: Vec<Rejection>) -> Vec<Ack> {
    seqs.sort_unstable();
    seqs.dedup();
    let mut ranges: Vec<SeqRange> = Vec::new();
    for s in seqs {
        match ranges.last_mut() {
            Some(r) if r.to.checked_add(1) == Some(s) => r.to = s,
            _ => ranges.push(SeqRange { from: s, to: s }),
        }
    }
    let mut out = Vec::new();
    let mut ranges = ranges.into_iter().peekable();
    let mut rejected = rejected.into_iter().peekable();
    while ranges.peek().is_some() || rejected.peek().is_some() {
        let mut ack = Ack {
            v: VERSION,
            device: device.clone(),
            stored: heapless::Vec::new(),
            rejected: heapless::Vec::new(),
        };
        while !ack.stored.is_full() {
            match ranges.next() {
                Some(r) => {
                    let _ = ack.stored.push(r);
                }
                None => break,
            }
        }
        while !ack.rejected.is_full() {
            match rejected.next() {
                Some(r) => {
                    let _ = ack.rejected.push(r);
                }
                None => break,
            }
        }
        out.push(ack);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn acks_compress_ranges_and_split_when_full() {
        let d = DeviceId::new("a").unwrap();
        let acks = build_acks(&d, vec![5, 3, 4, 9, 3], vec![]);
        assert_eq!(acks.len(), 1);
        assert_eq!(
            acks[0].stored.as_slice(),
            &[SeqRange { from: 3, to: 5 }, SeqRange { from: 9, to: 9 }]
        );
        // 20 isolated seqs need two acks of at most 16 ranges.
        let seqs: Vec<u64> = (0..20).map(|i| i * 2).collect();
        let rej: Vec<Rejection> = (0..3)
            .map(|i| Rejection {
                seq: 100 + i,
                reason: RejectReason::Malformed,
            })
            .collect();
        let acks = build_acks(&d, seqs.clone(), rej);
        assert_eq!(acks.len(), 2);
        for s in seqs {
            assert!(acks.iter().any(|a| a.covers(s)), "{s}");
        }
        assert!(acks.iter().any(|a| a.covers(101)));
        assert!(!acks.iter().any(|a| a.covers(1)));
        assert!(build_acks(&d, vec![], vec![]).is_empty());
    }

    #[test]
    fn jitter_stays_in_bounds() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(1000));
            assert!(j >= Duration::from_millis(750) && j < Duration::from_millis(1250));
        }
    }
}
