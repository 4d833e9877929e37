//! The MQTT link: one rumqttc connection that carries the spool to the collector and
//! brings back its acks and commands.
//!
//! Two tasks, because rumqttc deadlocks when the task polling its event loop also
//! publishes (`docs/design.md`): the *driver* polls the event loop continuously, handles
//! incoming acks and commands, and owns reconnects (exponential backoff with jitter,
//! capped; rumqttc itself has none); the *session* task publishes through the
//! `AsyncClient`: on every ConnAck it subscribes to `down/{id}/+`, publishes the retained
//! birth and status, then replays the spool from its first unacked seq, and afterwards
//! publishes each new event as the spool wakes it. Replaying everything after every
//! reconnect sends duplicates on purpose: the collector deduplicates on `(device, seq)`,
//! and rumqttc's in-memory queue is lost on restart anyway, so only the spool is trusted.
//!
//! A reconnect of this agent is not the only time events can be lost on the way: a broker
//! that restarts without persistence forgets the collector's session, so what the agent
//! replays before the collector has resubscribed goes nowhere. So the agent also follows
//! the collector's retained status and replays when a new `online` arrives, and replays
//! events that stay unacked for a whole [`RESEND_AFTER`] (a broker that overflowed).
//!
//! `boot` is raised and persisted before a connect that follows a session that reached
//! ConnAck, so the Last Will registered with the broker always carries the same `boot` as
//! the `online` status of that session (an older `boot` never overrides a newer one).
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ConnectionError, Event, Incoming, LastWill, MqttOptions, Outgoing, QoS, Transport,
};
use tokio::sync::{broadcast, mpsc, watch, Notify};
use vigia_protocol::{
    decode, encode, Ack, Cmd, CmdBody, CodecError, CollectorStatus, DeviceId, DownKind, Status,
    Topic, Topics, UpKind, VERSION,
};

pub use vigia_protocol::now_ms;
use vigia_protocol::{Backoff, MAX_PACKET};

use crate::config::Config;
use crate::inventory::{self, HostFacts};
use crate::spool::{Spool, SpoolError};

/// First reconnect delay.
pub const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Longest reconnect delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A connection that lived this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// How long a clean shutdown waits for the offline status to go out.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Events published but still unacked after this long are published again.
pub const RESEND_AFTER: Duration = Duration::from_secs(60);
/// The system CA bundle used for `mqtts://` without `ca_file`.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Commands kept for `vigia-agent status`.
const MAX_INBOX: usize = 32;

/// Why the link could not start.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The CA file could not be read.
    #[error("cannot read CA file {path}: {source}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The spool failed (raising `boot`).
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// A message could not be encoded.
    #[error("cannot encode: {0}")]
    Encode(CodecError),
}

/// Connection state, for `vigia-agent status` and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected yet, or between attempts; the last error when there was one.
    Connecting {
        /// Failed attempts since the last connection.
        attempts: u32,
        /// The last error.
        last_error: Option<String>,
    },
    /// Connected since this time (ms since the epoch).
    Connected {
        /// When the ConnAck arrived.
        since: u64,
    },
    /// Shut down.
    Stopped,
}

/// What the collector has told this device (`cmd` messages), for `status` and `report`.
#[derive(Debug, Clone, Default)]
pub struct Inbox {
    /// The latest commands, oldest first.
    pub recent: std::collections::VecDeque<Cmd>,
}

impl Inbox {
    fn push(&mut self, cmd: Cmd) {
        if self.recent.len() == MAX_INBOX {
            self.recent.pop_front();
        }
        self.recent.push_back(cmd);
    }
}

/// State shared by the link, the sampling loop and the IPC server.
pub struct Shared {
    /// The device.
    pub device: DeviceId,
    /// The spool (sled calls are short; a std mutex, never held across an await).
    pub spool: Mutex<Spool>,
    /// Wakes the session task when the spool has something new.
    pub wake: Notify,
    /// Wakes the sampling loop for a `Recheck` command.
    pub recheck: Notify,
    /// Whether a session is up (set by the driver).
    pub connected: AtomicBool,
    /// Connection state.
    pub state: Mutex<LinkState>,
    /// Commands received.
    pub inbox: Mutex<Inbox>,
    /// Every command as it arrives (the IPC server waits here for incident numbers).
    pub cmds: broadcast::Sender<Cmd>,
    /// Set when the whole spool must be published again (the collector came online).
    pub replay: AtomicBool,
    /// The `ts` of the last collector `online` status seen, to ignore re-deliveries of
    /// the same retained message.
    pub collector_online_ts: Mutex<Option<u64>>,
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it (the data are
/// plain values, consistent after every statement).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Shared state around an open spool.
    pub fn new(spool: Spool) -> Self {
        let (cmds, _) = broadcast::channel(16);
        Self {
            device: spool.device().clone(),
            spool: Mutex::new(spool),
            wake: Notify::new(),
            recheck: Notify::new(),
            connected: AtomicBool::new(false),
            state: Mutex::new(LinkState::Connecting {
                attempts: 0,
                last_error: None,
            }),
            inbox: Mutex::new(Inbox::default()),
            cmds,
            replay: AtomicBool::new(false),
            collector_online_ts: Mutex::new(None),
        }
    }
}

/// What the link needs from the config.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Device id (client id).
    pub device: DeviceId,
    /// Topics.
    pub topics: Topics,
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// CA bundle (PEM) when TLS.
    pub tls_ca: Option<Vec<u8>>,
    /// Username and password.
    pub credentials: Option<(String, String)>,
    /// Keep-alive (≥ 1 s).
    pub keep_alive: Duration,
    /// Tags for the birth message.
    pub tags: Vec<heapless::String<32>>,
    /// Probe root for the inventory.
    pub root: PathBuf,
    /// The agent instance (the spool's id), carried by the birth and every status.
    pub instance: u64,
}

impl LinkConfig {
    /// From the agent config; reads the CA file for `mqtts://`.
    pub fn from_config(cfg: &Config) -> Result<Self, LinkError> {
        let tls_ca = if cfg.mqtt.broker.tls {
            let path = cfg
                .mqtt
                .ca_file
                .clone()
                .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE));
            Some(std::fs::read(&path).map_err(|source| LinkError::Ca { path, source })?)
        } else {
            None
        };
        Ok(Self {
            // Set from the spool by the caller, which owns it.
            instance: 0,
            device: cfg.device.clone(),
            topics: cfg.mqtt.topics.clone(),
            host: cfg.mqtt.broker.host.clone(),
            port: cfg.mqtt.broker.port,
            tls_ca,
            credentials: cfg.mqtt.credentials.clone(),
            keep_alive: cfg.mqtt.keep_alive,
            tags: cfg.tags.iter().cloned().collect(),
            root: cfg.root.clone(),
        })
    }

    fn options(&self, boot: u64, now: u64) -> Result<MqttOptions, LinkError> {
        let mut o = MqttOptions::new(self.device.as_str(), self.host.clone(), self.port);
        // Validated ≥ 1 s in config; clamp anyway, rumqttc panics below a second.
        o.set_keep_alive(self.keep_alive.max(Duration::from_secs(1)));
        o.set_clean_session(false);
        o.set_max_packet_size(MAX_PACKET, MAX_PACKET);
        o.set_inflight(32);
        if let Some((u, p)) = &self.credentials {
            o.set_credentials(u.clone(), p.clone());
        }
        if let Some(ca) = &self.tls_ca {
            o.set_transport(Transport::tls(ca.clone(), None, None));
        }
        o.set_last_will(self.will(boot, now)?);
        Ok(o)
    }

    fn status(&self, online: bool, boot: u64, ts: u64) -> Result<Vec<u8>, LinkError> {
        encode(&Status {
            v: VERSION,
            device: self.device.clone(),
            instance: self.instance,
            online,
            boot,
            ts,
        })
        .map_err(LinkError::Encode)
    }

    fn will(&self, boot: u64, now: u64) -> Result<LastWill, LinkError> {
        Ok(LastWill::new(
            self.topics.up(&self.device, UpKind::Status).as_str(),
            self.status(false, boot, now)?,
            QoS::AtLeastOnce,
            true,
        ))
    }
}

enum SessionMsg {
    Up { boot: u64 },
    Down,
    Shutdown,
}

/// Runs the link until `shutdown` turns true: connects, reconnects, publishes, and on
/// shutdown sends the offline status and disconnects.
pub async fn run(
    shared: Arc<Shared>,
    cfg: LinkConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), LinkError> {
    let host = tokio::task::spawn_blocking(inventory::host_facts)
        .await
        .unwrap_or_default();
    let mut boot = lock(&shared.spool).raise_boot()?;
    let (client, mut eventloop) = AsyncClient::new(cfg.options(boot, now_ms())?, 64);
    let (tx, rx) = mpsc::unbounded_channel();
    let mut session = tokio::spawn(session(
        client.clone(),
        Arc::clone(&shared),
        cfg.clone(),
        host,
        rx,
    ));
    let seed = now_ms() ^ u64::from(std::process::id()).rotate_left(32);
    let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP, seed);
    let mut session_used = false;
    let mut up_since: Option<Instant> = None;
    tracing::info!(broker = %format!("{}:{}", cfg.host, cfg.port), device = %cfg.device, boot, "mqtt link starting");

    loop {
        let polled = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => break,
            p = eventloop.poll() => p,
        };
        match polled {
            Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                session_used = true;
                up_since = Some(Instant::now());
                shared.connected.store(true, Ordering::SeqCst);
                *lock(&shared.state) = LinkState::Connected { since: now_ms() };
                tracing::info!(
                    boot,
                    session_present = ack.session_present,
                    "connected to the broker"
                );
                let _ = tx.send(SessionMsg::Up { boot });
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                handle_down(&shared, &cfg, &p.topic, &p.payload);
            }
            Ok(_) => {}
            Err(e) => {
                shared.connected.store(false, Ordering::SeqCst);
                let _ = tx.send(SessionMsg::Down);
                if up_since.take().is_some_and(|t| t.elapsed() >= STABLE_AFTER) {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                let attempts = backoff.attempts();
                log_failure(&e, attempts, delay, session_used);
                *lock(&shared.state) = LinkState::Connecting {
                    attempts,
                    last_error: Some(e.to_string()),
                };
                if session_used {
                    // A new session gets a new boot, and its Last Will must say so.
                    boot = lock(&shared.spool).raise_boot()?;
                    eventloop
                        .mqtt_options
                        .set_last_will(cfg.will(boot, now_ms())?);
                    session_used = false;
                }
                tokio::select! {
                    biased;
                    _ = shutdown.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }

    // Clean shutdown: the session task sends `offline` and DISCONNECT if connected; keep
    // polling so they reach the broker, within a grace period.
    let _ = tx.send(SessionMsg::Shutdown);
    let deadline = tokio::time::sleep(SHUTDOWN_GRACE);
    tokio::pin!(deadline);
    let mut session_done = false;
    loop {
        tokio::select! {
            _ = &mut deadline => {
                tracing::warn!("shutdown: broker did not take the offline status in time");
                break;
            }
            r = &mut session, if !session_done => {
                session_done = true;
                if !matches!(r, Ok(true)) {
                    break; // not connected: nothing to flush
                }
            }
            p = eventloop.poll() => match p {
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(_) => break,
            },
        }
    }
    if !session_done {
        session.abort();
    }
    shared.connected.store(false, Ordering::SeqCst);
    *lock(&shared.state) = LinkState::Stopped;
    tracing::info!("mqtt link stopped");
    Ok(())
}

fn log_failure(e: &ConnectionError, attempts: u32, delay: Duration, was_connected: bool) {
    let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    if let ConnectionError::ConnectionRefused(code) = e {
        // Credentials or ACLs: retrying will not fix it, a person must.
        tracing::error!(code = ?code, attempts, retry_in_ms = delay_ms, "the broker refused the connection; check mqtt.username/password and the broker's ACLs");
    } else if was_connected {
        tracing::warn!(error = %e, retry_in_ms = delay_ms, "connection to the broker lost");
    } else if attempts == 1 || attempts.is_multiple_of(10) {
        tracing::warn!(error = %e, attempts, retry_in_ms = delay_ms, "cannot reach the broker; events stay in the spool");
    } else {
        tracing::debug!(error = %e, attempts, retry_in_ms = delay_ms, "broker still unreachable");
    }
}

/// Handles a message on a `down/` topic: acks leave the spool, commands are kept.
fn handle_down(shared: &Shared, cfg: &LinkConfig, topic: &str, payload: &[u8]) {
    match cfg.topics.parse(topic) {
        Ok(Topic::Down(id, DownKind::Ack)) if id == cfg.device => match decode::<Ack>(payload) {
            Ok(ack) if ack.device == cfg.device => {
                let mut spool = lock(&shared.spool);
                match spool.ack(&ack, now_ms()) {
                    Ok(n) => {
                        tracing::debug!(removed = n, left = spool.len(), "ack");
                        // Acking a drop notice may have enqueued the next one.
                        if n > 0 {
                            shared.wake.notify_one();
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "spool: cannot apply ack"),
                }
            }
            Ok(ack) => tracing::warn!(device = %ack.device, "ack for another device ignored"),
            Err(e) => tracing::warn!(error = %e, "malformed ack ignored"),
        },
        Ok(Topic::Down(id, DownKind::Cmd)) if id == cfg.device => match decode::<Cmd>(payload) {
            Ok(cmd) if cmd.device == cfg.device => {
                tracing::info!(cmd = ?cmd.body, "command from the collector");
                if matches!(cmd.body, CmdBody::Recheck) {
                    shared.recheck.notify_one();
                }
                lock(&shared.inbox).push(cmd.clone());
                let _ = shared.cmds.send(cmd);
            }
            Ok(cmd) => tracing::warn!(device = %cmd.device, "command for another device ignored"),
            Err(e) => tracing::warn!(error = %e, "malformed command ignored"),
        },
        Ok(Topic::CollectorStatus) => match decode::<CollectorStatus>(payload) {
            Ok(status) if status.online => {
                let new = lock(&shared.collector_online_ts).replace(status.ts) != Some(status.ts);
                if new {
                    tracing::info!(ts = status.ts, "collector online: replaying unacked events");
                    shared.replay.store(true, Ordering::SeqCst);
                    shared.wake.notify_one();
                }
            }
            Ok(_) => tracing::info!("collector offline; events wait in the spool"),
            Err(e) => tracing::warn!(error = %e, "malformed collector status ignored"),
        },
        _ => tracing::warn!(topic, "message on an unexpected topic ignored"),
    }
}

/// The publishing side. Returns whether it sent the offline status and DISCONNECT.
async fn session(
    client: AsyncClient,
    shared: Arc<Shared>,
    cfg: LinkConfig,
    host: HostFacts,
    mut rx: mpsc::UnboundedReceiver<SessionMsg>,
) -> bool {
    let event_topic = cfg.topics.up(&cfg.device, UpKind::Event).to_string();
    let mut boot = 0;
    let mut cursor: Option<u64> = None; // Some(next seq to publish) while connected
    let mut resend = tokio::time::interval(RESEND_AFTER);
    resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first unacked seq at the previous resend tick: still first (and already
    // published) a whole interval later means its ack is not coming.
    let mut oldest_seen: Option<u64> = None;
    loop {
        let msg = tokio::select! {
            m = rx.recv() => Some(m),
            _ = shared.wake.notified() => None,
            _ = resend.tick() => {
                let first = lock(&shared.spool).next_from(0).ok().flatten().map(|(seq, _)| seq);
                if let (Some(f), Some(c)) = (first, cursor) {
                    if oldest_seen == Some(f) && f < c {
                        tracing::info!(seq = f, "events unacked for too long: replaying");
                        cursor = Some(0);
                    }
                }
                oldest_seen = first;
                None
            }
        };
        if shared.replay.swap(false, Ordering::SeqCst) && cursor.is_some() {
            cursor = Some(0);
        }
        match msg {
            Some(Some(SessionMsg::Up { boot: b })) => {
                boot = b;
                cursor = None;
                if let Err(e) = session_start(&client, &cfg, &host, boot).await {
                    tracing::warn!(error = %e, "could not start the session; retrying on reconnect");
                    continue;
                }
                cursor = Some(0);
            }
            Some(Some(SessionMsg::Down)) => cursor = None,
            Some(Some(SessionMsg::Shutdown)) | Some(None) => {
                if cursor.is_none() || !shared.connected.load(Ordering::SeqCst) {
                    return false;
                }
                let sent = match cfg.status(false, boot, now_ms()) {
                    Ok(payload) => client
                        .publish(
                            cfg.topics.up(&cfg.device, UpKind::Status).as_str(),
                            QoS::AtLeastOnce,
                            true,
                            payload,
                        )
                        .await
                        .is_ok(),
                    Err(_) => false,
                };
                let disconnected = client.disconnect().await.is_ok();
                tracing::info!(boot, "offline status sent, disconnecting");
                return sent && disconnected;
            }
            None => {}
        }
        // Publish everything from the cursor on, stopping if the link drops.
        while let Some(from) = cursor {
            if !shared.connected.load(Ordering::SeqCst) {
                break;
            }
            let next = lock(&shared.spool).next_from(from);
            match next {
                Ok(Some((seq, bytes))) => {
                    if client
                        .publish(event_topic.as_str(), QoS::AtLeastOnce, false, bytes)
                        .await
                        .is_err()
                    {
                        break;
                    }
                    tracing::debug!(seq, "event published");
                    cursor = Some(seq + 1);
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "spool: cannot read for replay");
                    break;
                }
            }
        }
    }
}

/// Subscribe, birth, online status: what every new session starts with.
async fn session_start(
    client: &AsyncClient,
    cfg: &LinkConfig,
    host: &HostFacts,
    boot: u64,
) -> Result<(), String> {
    // Always resubscribe: harmless when the broker kept the session, needed when not.
    client
        .subscribe(
            cfg.topics.down_filter(&cfg.device).as_str(),
            QoS::AtLeastOnce,
        )
        .await
        .map_err(|e| e.to_string())?;
    client
        .subscribe(cfg.topics.collector_status().as_str(), QoS::AtLeastOnce)
        .await
        .map_err(|e| e.to_string())?;
    let now = now_ms();
    let birth = inventory::birth(
        &cfg.device,
        cfg.instance,
        boot,
        now,
        &cfg.tags,
        &cfg.root,
        host,
    );
    let birth = encode(&birth).map_err(|e| e.to_string())?;
    client
        .publish(
            cfg.topics.up(&cfg.device, UpKind::Birth).as_str(),
            QoS::AtLeastOnce,
            true,
            birth,
        )
        .await
        .map_err(|e| e.to_string())?;
    let status = cfg.status(true, boot, now).map_err(|e| e.to_string())?;
    client
        .publish(
            cfg.topics.up(&cfg.device, UpKind::Status).as_str(),
            QoS::AtLeastOnce,
            true,
            status,
        )
        .await
        .map_err(|e| e.to_string())?;
    tracing::debug!(boot, "birth and online status published");
    Ok(())
}

/// Builds the event loop's options; exposed for tests of the will and limits.
pub fn options_for(cfg: &LinkConfig, boot: u64, now: u64) -> Result<MqttOptions, LinkError> {
    cfg.options(boot, now)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn link_cfg() -> LinkConfig {
        LinkConfig {
            device: DeviceId::new("ws-1").unwrap(),
            topics: Topics::default(),
            host: "127.0.0.1".into(),
            port: 1883,
            tls_ca: None,
            credentials: Some(("ws-1".into(), "pw".into())),
            keep_alive: Duration::from_secs(30),
            tags: Vec::new(),
            root: PathBuf::from("/"),
            instance: 42,
        }
    }

    #[test]
    fn options_carry_the_will_with_the_session_boot_and_a_persistent_session() {
        let o = options_for(&link_cfg(), 7, 1234).unwrap();
        assert!(!o.clean_session());
        assert_eq!(o.client_id(), "ws-1");
        assert_eq!(o.max_packet_size(), MAX_PACKET);
        assert_eq!(
            o.credentials().map(|l| l.username),
            Some("ws-1".to_string())
        );
        let will = o.last_will().unwrap();
        assert_eq!(will.topic, "vigia/v1/up/ws-1/status");
        assert!(will.retain);
        let s: Status = decode(&will.message).unwrap();
        assert_eq!((s.online, s.boot, s.ts), (false, 7, 1234));
    }

    fn shared_with(n: usize) -> (Arc<Shared>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), DeviceId::new("ws-1").unwrap(), 1 << 20).unwrap();
        for i in 0..n {
            let body = vigia_protocol::EventBody::Reply(vigia_protocol::Reply {
                incident: i as u64,
                text: vigia_protocol::bounded("x"),
            });
            spool.push(1, body).unwrap();
        }
        (Arc::new(Shared::new(spool)), dir)
    }

    #[test]
    fn an_ack_removes_exactly_its_seqs_from_the_spool() {
        let (shared, _dir) = shared_with(5);
        let cfg = link_cfg();
        let ack = br#"{"v":1,"device":"ws-1","stored":[{"from":1,"to":2}],"rejected":[{"seq":4,"reason":"malformed"}]}"#;
        handle_down(&shared, &cfg, "vigia/v1/down/ws-1/ack", ack);
        assert_eq!(lock(&shared.spool).seqs().collect::<Vec<_>>(), [3, 5]);
    }

    #[test]
    fn acks_for_another_device_or_malformed_change_nothing() {
        let (shared, _dir) = shared_with(3);
        let cfg = link_cfg();
        let other = br#"{"v":1,"device":"ws-2","stored":[{"from":1,"to":3}]}"#;
        handle_down(&shared, &cfg, "vigia/v1/down/ws-1/ack", other);
        handle_down(&shared, &cfg, "vigia/v1/down/ws-2/ack", other);
        handle_down(&shared, &cfg, "vigia/v1/down/ws-1/ack", b"{not json");
        handle_down(
            &shared,
            &cfg,
            "vigia/v1/down/ws-1/ack",
            br#"{"device":"ws-1","stored":[{"from":1,"to":3}]}"#,
        );
        assert_eq!(lock(&shared.spool).len(), 3);
    }

    #[tokio::test]
    async fn commands_are_kept_broadcast_and_recheck_wakes_the_sampler() {
        let (shared, _dir) = shared_with(0);
        let cfg = link_cfg();
        let mut rx = shared.cmds.subscribe();
        let cmd = br#"{"v":1,"device":"ws-1","ts":5,"body":{"type":"report_accepted","report_id":9,"incident":42}}"#;
        handle_down(&shared, &cfg, "vigia/v1/down/ws-1/cmd", cmd);
        let got = rx.try_recv().unwrap();
        assert_eq!(
            got.body,
            CmdBody::ReportAccepted {
                report_id: 9,
                incident: 42
            }
        );
        assert_eq!(lock(&shared.inbox).recent.len(), 1);
        let recheck = br#"{"v":1,"device":"ws-1","ts":6,"body":{"type":"recheck"}}"#;
        handle_down(&shared, &cfg, "vigia/v1/down/ws-1/cmd", recheck);
        // The permit is stored: the sampler's next wait returns at once.
        tokio::time::timeout(Duration::from_secs(1), shared.recheck.notified())
            .await
            .unwrap();
    }
}
