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
//! One batch is written at a time, in arrival order; the messages that arrive meanwhile
//! make the next one, which goes to the store as soon as the one before is flushed, before
//! that one's acks and publishes are sent, so the store is not idle while they go out.
//!
//! Events go through the workflow in the store's transaction ([`workflow::route`](crate::workflow::route));
//! the commands and notifications a decision emits leave only after the batch's flush,
//! through the [outbox](crate::outbox), which the API and the timers share. `decode`
//! turns a publish into a [`Decoded`] message, `poller` drives the connection, `acks`
//! builds the application acks.
//!
//! The session is persistent (`clean_session = false`, stable client id) so the broker
//! keeps messages while the collector is down; when the broker says the session is gone
//! (`session_present = false`) the worker subscribes again. The enrolment filter is
//! subscribed at every connection, so a session older than the enrolment setting gets it.
//!
//! **When the store fails** (a full disk, an I/O error): a message that could not be
//! stored is still acknowledged to the broker, but not to the device. Holding its PUBACK
//! back would keep one of the broker's in-flight slots per message, and once those are
//! used up the broker would send nothing more, from any device, even after the disk has
//! room again. The device keeps the event in its spool until the collector's `Ack` names
//! it, so nothing is lost: the worker marks ingest stalled (`vigia_ingest_stalled`), asks
//! the store to recover with backoff (the embedded one reopens once the disk has room),
//! and when it has, publishes the collector's retained `online` status again, which makes
//! every agent replay what is still unacknowledged.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, LastWill, MqttOptions, Publish, QoS, TlsConfiguration, Transport};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};
use vigia_protocol::{
    encode, CmdBody, CollectorStatus, DeviceId, DownKind, Millis, Rejection, Topics, MAX_PACKET,
    VERSION,
};

use crate::clock::{now_ms, Clock};
use crate::metrics::Metrics;
use crate::outbox::{deliver, Downlink, FeedEvent, FeedHub};
use crate::store::{SharedStore, StatusOutcome, Store, StoreError};
use crate::workflow::{Decision, Policy};

mod acks;
mod decode;
pub use decode::{decode_message, Decoded};
mod poller;

pub use acks::build_acks;
use decode::decode_publish;
use poller::{poll_loop, PollerEvent};

/// Most messages handled in one store batch (one flush).
const MAX_BATCH: usize = 256;

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
    /// Also subscribe to agents' enrolment requests (the broker has the
    /// dynamic-security plugin).
    pub enrolment: bool,
}

/// What ingest needs besides the broker: the workflow policy, the clock, the feed and the
/// timer task's wake-up.
#[derive(Clone)]
pub struct IngestDeps {
    /// The store.
    pub store: SharedStore,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Feed events.
    pub feed: FeedHub,
    /// The workflow policy.
    pub policy: Arc<Policy>,
    /// The collector's clock.
    pub clock: Arc<dyn Clock>,
    /// Poked after every write that may move the earliest timer.
    pub wake: Arc<Notify>,
    /// Serials whose enrolment requests a rule approves.
    pub known_serials: Arc<Vec<String>>,
    /// Where requests a rule approves go (the enrolment service), when enrolment is on.
    pub approve: Option<mpsc::UnboundedSender<String>>,
}

/// The running ingest.
pub struct Ingest {
    downlink: Downlink,
    ready: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    worker: JoinHandle<()>,
    poller: JoinHandle<()>,
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
        let (client, mut eventloop) = AsyncClient::new(opts, 1024);
        // Acks and commands are small packets: sent at once, not held by Nagle's
        // algorithm behind the broker's delayed ACK (up to 40 ms on Linux).
        let mut net = eventloop.network_options();
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        let (work_tx, work_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = watch::channel(false);
        let poller = tokio::spawn(poll_loop(
            eventloop,
            work_tx,
            stop_rx.clone(),
            format!("{}:{}", cfg.host, cfg.port),
        ));
        let downlink = Downlink::new(client.clone(), cfg.topics.clone());
        let worker = tokio::spawn(
            Worker {
                client,
                enrolment: cfg.enrolment,
                topics: cfg.topics,
                downlink: downlink.clone(),
                deps,
                ready: ready_tx,
                stall: None,
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

/// Sleeps until `at`, or forever when there is none.
async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// A batch being written to the store.
struct Storing {
    publishes: Vec<Publish>,
    /// The collector's time the batch is stored at.
    now: Millis,
    task: JoinHandle<Result<Vec<Result<Outcome, StoreError>>, StoreError>>,
}

/// How writing a batch ended: each message's outcome, unless the flush (or the task)
/// failed.
type StoreResult =
    Result<Result<Vec<Result<Outcome, StoreError>>, StoreError>, tokio::task::JoinError>;

/// Waits for the batch being stored, if there is one (forever otherwise).
async fn stored(storing: &mut Option<Storing>) -> StoreResult {
    match storing {
        Some(s) => (&mut s.task).await,
        None => std::future::pending().await,
    }
}

/// What woke the worker.
enum Wake {
    Packet(PollerEvent),
    Stored(StoreResult),
    Recover,
    Stop,
}

/// What the store made of a decoded message.
// One per message of a batch, consumed at once: size does not matter here.
#[allow(clippy::large_enum_variant)]
enum Outcome {
    Stored {
        device: DeviceId,
        instance: u64,
        seq: u64,
        duplicate: bool,
        cmds: Vec<CmdBody>,
        decision: Option<Box<(Decision, bool)>>,
    },
    Rejected {
        device: DeviceId,
        instance: u64,
        rejection: Rejection,
    },
    Feed(FeedEvent),
    CmdAcked(u64),
    Enrol(Box<crate::enrolment::Seen>),
    Nothing,
}

/// What storing a batch needs besides the store.
struct Ctx<'a> {
    policy: &'a Policy,
    topics: &'a Topics,
    known_serials: &'a [String],
}

struct Worker {
    client: AsyncClient,
    enrolment: bool,
    topics: Topics,
    downlink: Downlink,
    deps: IngestDeps,
    ready: watch::Sender<bool>,
    /// Since when the store has been failing writes, and when to try recovering next.
    stall: Option<Stall>,
}

/// Ingest while the store fails.
struct Stall {
    since: std::time::Instant,
    backoff: vigia_protocol::Backoff,
    next_try: tokio::time::Instant,
    unstored: u64,
}

/// Recovery attempts while stalled: quick at first, at most every 30 s.
const RECOVER_MIN: Duration = Duration::from_millis(250);
const RECOVER_MAX: Duration = Duration::from_secs(30);

impl Worker {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<PollerEvent>,
        mut stop: watch::Receiver<bool>,
    ) {
        // The batch being stored, and the messages that came meanwhile (the next batch).
        let mut storing: Option<Storing> = None;
        let mut next: Vec<Publish> = Vec::new();
        loop {
            // The store is free: the next batch goes, unless recovering it comes first
            // (a steady stream must not keep a stalled store from being reopened).
            if storing.is_none() && !next.is_empty() && !self.recovery_due() {
                storing = Some(self.store(std::mem::take(&mut next)));
            }
            let retry_at = self.stall.as_ref().map(|s| s.next_try);
            let woke = tokio::select! {
                w = rx.recv(), if next.len() < MAX_BATCH => match w {
                    Some(w) => Wake::Packet(w),
                    None => Wake::Stop,
                },
                done = stored(&mut storing) => Wake::Stored(done),
                _ = stop.wait_for(|s| *s) => Wake::Stop,
                () = sleep_until_opt(retry_at), if storing.is_none() => Wake::Recover,
            };
            match woke {
                Wake::Packet(first) => {
                    self.take(first, &mut next).await;
                    while next.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(w) => self.take(w, &mut next).await,
                            Err(_) => break,
                        }
                    }
                }
                Wake::Stored(done) => {
                    let Some(batch) = storing.take() else {
                        continue;
                    };
                    // The next batch goes to the store at once, so that it is written
                    // while this one's acks go out (its messages are already here).
                    if !next.is_empty() && !self.recovery_due() {
                        storing = Some(self.store(std::mem::take(&mut next)));
                    }
                    self.finish_batch(batch, done).await;
                }
                // Never while a batch is being stored: reopening between its writes and
                // its flush would ack writes the old handle may not have kept.
                Wake::Recover => self.try_recover().await,
                Wake::Stop => break,
            }
        }
        // What is being stored is acknowledged once stored; what only arrived is not,
        // and stays with the broker's persistent session.
        if let Some(mut batch) = storing.take() {
            let done = (&mut batch.task).await;
            self.finish_batch(batch, done).await;
        }
        // Clean shutdown: say so (retained), then disconnect. Unacked messages stay with
        // the broker's persistent session and come back on the next start.
        if let Err(e) = self.publish_status(false).await {
            debug!(error = %e, "could not queue the offline status");
        }
        let _ = self.client.disconnect().await;
        info!("ingest stopped");
    }

    /// Takes one packet from the poller: a message joins the next batch, a connection
    /// or subscription is handled at once.
    async fn take(&self, w: PollerEvent, next: &mut Vec<Publish>) {
        match w {
            PollerEvent::Connected { session_present } => {
                self.on_connected(session_present).await;
            }
            PollerEvent::SubAck => {
                info!(filter = %self.topics.up_filter(), "subscribed");
                let _ = self.ready.send(true);
            }
            PollerEvent::Publish(p) => next.push(p),
        }
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
        // At every connection, not only a new session's: a session made before
        // self-enrolment was configured lacks this filter, and resubscribing it costs
        // nothing (requests are never retained, so none comes again).
        if self.enrolment {
            let filter = self.topics.enrol_request_filter();
            if let Err(e) = self
                .client
                .subscribe(filter.as_str(), QoS::AtLeastOnce)
                .await
            {
                error!(error = %e, "cannot queue the enrolment subscription");
            }
        }
        if let Err(e) = self.publish_status(true).await {
            warn!(error = %e, "cannot queue the online status");
        }
    }

    /// Queues the collector's retained online/offline status.
    async fn publish_status(&self, online: bool) -> Result<(), rumqttc::ClientError> {
        let topic = self.topics.collector_status();
        self.client
            .publish(
                topic.as_str(),
                QoS::AtLeastOnce,
                true,
                collector_status(online),
            )
            .await
    }

    /// Acknowledges `publishes` to the broker only (their devices keep them).
    async fn release(&self, publishes: &[Publish]) {
        for p in publishes {
            if let Err(e) = self.client.ack(p).await {
                warn!(error = %e, "cannot queue the MQTT ack");
            }
        }
    }

    /// Whether the store is stalled and its next recovery attempt is due.
    fn recovery_due(&self) -> bool {
        self.stall
            .as_ref()
            .is_some_and(|s| s.next_try <= tokio::time::Instant::now())
    }

    /// The store failed `n` writes: ingest is stalled until it recovers.
    fn stalled(&mut self, n: u64) {
        self.deps.metrics.ingest_stalled(true);
        let stall = self.stall.get_or_insert_with(|| {
            error!(
                "the store is failing writes: events are acknowledged to the broker but \
                not to their devices, which keep them until the store recovers"
            );
            Stall {
                since: std::time::Instant::now(),
                backoff: vigia_protocol::Backoff::new(RECOVER_MIN, RECOVER_MAX, now_ms()),
                next_try: tokio::time::Instant::now(),
                unstored: 0,
            }
        });
        stall.unstored += n;
    }

    /// Asks the store to recover; when it did (or writes work again), asks every agent
    /// to replay what the collector has not acknowledged.
    async fn try_recover(&mut self) {
        let store = self.deps.store.clone();
        let r = tokio::task::spawn_blocking(move || {
            let reopened = store.recover()?;
            // A flush that works says the store takes writes again.
            store.flush().map(|()| reopened)
        })
        .await;
        let Some(stall) = self.stall.as_mut() else {
            return;
        };
        match r {
            Ok(Ok(reopened)) => {
                if reopened {
                    self.deps.metrics.store_reopened();
                }
                warn!(
                    stalled_s = stall.since.elapsed().as_secs(),
                    unstored = stall.unstored,
                    reopened,
                    "the store takes writes again: asking the devices to resend"
                );
                self.stall = None;
                self.deps.metrics.ingest_stalled(false);
                if let Err(e) = self.publish_status(true).await {
                    warn!(error = %e, "cannot queue the online status");
                }
            }
            Ok(Err(e)) => {
                let wait = stall.backoff.next_delay();
                stall.next_try = tokio::time::Instant::now() + wait;
                if stall.backoff.attempts() == 1 || stall.backoff.attempts().is_multiple_of(10) {
                    warn!(error = %e, retry_in_ms = wait.as_millis() as u64,
                        "the store has not recovered yet");
                }
            }
            Err(e) => {
                error!(error = %e, "store recovery task failed");
                stall.next_try = tokio::time::Instant::now() + RECOVER_MAX;
            }
        }
    }

    /// Decodes a batch and starts writing it to the store (blocking, off the async
    /// threads): one transaction for its events, then one flush.
    fn store(&self, publishes: Vec<Publish>) -> Storing {
        let decoded: Vec<Decoded> = publishes
            .iter()
            .map(|p| decode_publish(&self.topics, &self.deps.metrics, p))
            .collect();
        let store = self.deps.store.clone();
        let policy = self.deps.policy.clone();
        let now = self.deps.clock.now();
        let (topics, serials) = (self.topics.clone(), self.deps.known_serials.clone());
        let task = tokio::task::spawn_blocking(move || {
            let ctx = Ctx {
                policy: &policy,
                topics: &topics,
                known_serials: &serials,
            };
            let done = store_batch(store.as_ref(), &ctx, decoded, now);
            // One flush for the whole batch: nothing is acked before it returns.
            store.flush().map(|()| done)
        });
        Storing {
            publishes,
            now,
            task,
        }
    }

    /// Acknowledges a stored batch (to the broker, then to each device) and sends what
    /// its decisions call for; a batch the store failed is released to the broker only.
    async fn finish_batch(&mut self, batch: Storing, result: StoreResult) {
        let Storing { publishes, now, .. } = batch;
        let done = match result {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => {
                self.deps.metrics.store_error();
                error!(error = %e, batch = publishes.len(),
                    "store flush failed: nothing in this batch is acknowledged to its devices");
                self.release(&publishes).await;
                self.stalled(publishes.len() as u64);
                return;
            }
            Err(e) => {
                error!(error = %e, "store task failed: nothing in this batch is acknowledged");
                self.release(&publishes).await;
                self.stalled(publishes.len() as u64);
                return;
            }
        };

        let mut acks: BTreeMap<(DeviceId, u64), (Vec<u64>, Vec<Rejection>)> = BTreeMap::new();
        let mut cmds = Vec::new();
        let mut feed = Vec::new();
        let mut decisions = Vec::new();
        let mut failed = 0u64;
        let mut enrol_replies = Vec::new();
        for (p, d) in publishes.iter().zip(done) {
            let d = match d {
                Ok(d) => d,
                Err(e) => {
                    // Released to the broker, not acknowledged to the device, which
                    // resends it: see the module's doc.
                    self.deps.metrics.store_error();
                    error!(topic = %p.topic, error = %e,
                        "store write failed; not acknowledged to the device");
                    if let Err(e) = self.client.ack(p).await {
                        warn!(error = %e, "cannot queue the MQTT ack");
                    }
                    failed += 1;
                    continue;
                }
            };
            if let Err(e) = self.client.ack(p).await {
                warn!(error = %e, "cannot queue the MQTT ack");
            }
            match d {
                Outcome::Stored {
                    device,
                    instance,
                    seq,
                    duplicate,
                    cmds: c,
                    decision,
                } => {
                    self.deps.metrics.event_stored(duplicate);
                    cmds.extend(c.into_iter().map(|c| (device.clone(), c)));
                    decisions.extend(decision.map(|d| *d));
                    acks.entry((device, instance)).or_default().0.push(seq);
                }
                Outcome::Rejected {
                    device,
                    instance,
                    rejection,
                } => {
                    acks.entry((device, instance))
                        .or_default()
                        .1
                        .push(rejection);
                }
                Outcome::Feed(f) => {
                    if matches!(f, FeedEvent::Device { online: true, .. }) {
                        self.downlink.commands_queued();
                    }
                    feed.push(f);
                }
                Outcome::CmdAcked(n) => self.deps.metrics.commands_acked(n),
                Outcome::Enrol(seen) => enrol_replies.push(seen),
                Outcome::Nothing => {}
            }
        }
        for ((device, instance), (seqs, rejected)) in acks {
            for ack in build_acks(&device, instance, seqs, rejected) {
                self.downlink.publish(&device, DownKind::Ack, &ack).await;
                self.deps.metrics.ack_sent();
            }
        }
        // Repeats for redelivered events, sent once; new commands are in the outbox.
        for (device, body) in cmds {
            self.downlink.cmd(&device, 0, body, now).await;
        }
        for f in feed {
            self.deps.feed.publish(f);
        }
        for seen in enrol_replies {
            if let Some((topic, payload)) = seen.reply {
                self.downlink.publish_retained(&topic, payload).await;
            }
            if let (Some(request), Some(tx)) = (seen.auto_approve, &self.deps.approve) {
                let _ = tx.send(request);
            }
        }
        if failed > 0 {
            self.stalled(failed);
        }
        deliver(
            &decisions,
            &self.downlink,
            &self.deps.feed,
            &self.deps.policy,
        );
        if !decisions.is_empty() {
            self.deps.wake.notify_one();
        }
    }
}

/// Runs a batch of decoded messages through the store (blocking), in order, one outcome
/// per message. Consecutive events go to the store together ([`Store::record_events`]:
/// one transaction for them all); births, statuses and command acks one by one between
/// them, so an event still sees the birth that came before it.
fn store_batch(
    store: &dyn Store,
    ctx: &Ctx<'_>,
    decoded: Vec<Decoded>,
    now: Millis,
) -> Vec<Result<Outcome, StoreError>> {
    let mut done = Vec::with_capacity(decoded.len());
    let mut run: Vec<vigia_protocol::Event> = Vec::new();
    let flush_run = |run: &mut Vec<vigia_protocol::Event>,
                     done: &mut Vec<Result<Outcome, StoreError>>| {
        if run.is_empty() {
            return;
        }
        let outs = store.record_events(run, now, ctx.policy);
        for (e, out) in run.drain(..).zip(outs) {
            done.push(out.map(|out| event_outcome(e, out)));
        }
    };
    for m in decoded {
        match m {
            Decoded::Event(e) => run.push(*e),
            other => {
                flush_run(&mut run, &mut done);
                done.push(store_decoded(store, ctx, other, now));
            }
        }
    }
    flush_run(&mut run, &mut done);
    done
}

/// What ingest makes of a stored event.
fn event_outcome(e: vigia_protocol::Event, out: crate::store::EventOutcome) -> Outcome {
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
    Outcome::Stored {
        device: e.device,
        instance: e.instance,
        seq: e.seq,
        duplicate: out.duplicate,
        cmds: out.cmds,
        decision: out.decision.map(Box::new),
    }
}

/// Runs one decoded message through the store (blocking).
fn store_decoded(
    store: &dyn Store,
    ctx: &Ctx<'_>,
    msg: Decoded,
    now: Millis,
) -> Result<Outcome, StoreError> {
    let policy = ctx.policy;
    Ok(match msg {
        Decoded::Enrol(m) => {
            let (site, request, req) = *m;
            Outcome::Enrol(Box::new(crate::enrolment::record_request(
                store,
                ctx.topics,
                &site,
                &request,
                &req,
                ctx.known_serials,
                now,
            )?))
        }
        Decoded::Birth(b) => {
            store.record_birth(&b, now)?;
            debug!(device = %b.device, boot = b.boot, "birth stored");
            Outcome::Nothing
        }
        Decoded::Status(s) => match store.record_status(&s, now)? {
            StatusOutcome::Applied { changed } => {
                debug!(device = %s.device, online = s.online, boot = s.boot, "status stored");
                if changed {
                    info!(device = %s.device, online = s.online, boot = s.boot, "device status changed");
                    // Back online: what it may have missed goes out again now.
                    if s.online && store.outbox_retry(&s.device, now)? > 0 {
                        debug!(device = %s.device, "queued commands due again");
                    }
                    Outcome::Feed(FeedEvent::Device {
                        device: s.device,
                        online: s.online,
                        boot: s.boot,
                    })
                } else {
                    Outcome::Nothing
                }
            }
            StatusOutcome::Stale => {
                debug!(device = %s.device, online = s.online, boot = s.boot, "stale status ignored");
                Outcome::Nothing
            }
        },
        Decoded::Event(e) => {
            let out = store.record_event(&e, now, policy)?;
            event_outcome(*e, out)
        }
        Decoded::Rejected {
            device,
            instance,
            seq: Some(seq),
            reason,
        } => Outcome::Rejected {
            device,
            instance,
            rejection: Rejection { seq, reason },
        },
        Decoded::CmdAck { device, ids } => {
            let n = store.outbox_acked(&device, &ids)?;
            debug!(device = %device, acked = n, "commands acknowledged");
            Outcome::CmdAcked(n as u64)
        }
        Decoded::Rejected { seq: None, .. } | Decoded::Nothing => Outcome::Nothing,
    })
}
