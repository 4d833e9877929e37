//! What the link shares with the rest of the agent: its configuration, its state for
//! `vigia-agent status`, the commands received, and the [`AgentState`] that the sampling
//! loop, the link and the IPC server hold together.
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rumqttc::{LastWill, MqttOptions, QoS, Transport};
use tokio::sync::{broadcast, Notify};
use vigia_protocol::{
    encode, Cmd, CodecError, DeviceId, Status, Topics, UpKind, MAX_PACKET, VERSION,
};

use vigia_protocol::{OpenFault, Reading};

use crate::config::Config;
use crate::probe::Detectors;
use crate::spool::Spool;

/// First reconnect delay.
pub const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Longest reconnect delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A connection that lived this long resets the backoff.
pub(crate) const STABLE_AFTER: Duration = Duration::from_secs(30);
/// How long a clean shutdown waits for the offline status to go out.
pub(super) const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Events published but still unacked after this long are published again.
pub const RESEND_AFTER: Duration = Duration::from_secs(60);
/// The system CA bundle used for `mqtts://` without `ca_file`.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Commands kept for `vigia-agent status`.
pub(super) const MAX_INBOX: usize = 32;

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
    /// A message could not be encoded.
    #[error("cannot encode: {0}")]
    Encode(CodecError),
    /// The broker refused the account this many times in a row (see
    /// [`LinkConfig::refusals_to_give_up`]).
    #[error("the broker refused this device's account {0} times in a row")]
    AccountRefused(u32),
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
    /// Asking to join before the link can start (see [`crate::enrol`]).
    Enrolling {
        /// Where the request stands.
        view: crate::enrol::EnrolView,
        /// Failed attempts to reach the broker since the last connection.
        attempts: u32,
        /// The last error.
        last_error: Option<String>,
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
    pub(super) fn push(&mut self, cmd: Cmd) {
        // A command the collector sent again (its ack was lost) is kept once.
        if cmd.id != 0 && self.recent.iter().any(|c| c.id == cmd.id) {
            return;
        }
        if self.recent.len() == MAX_INBOX {
            self.recent.pop_front();
        }
        self.recent.push_back(cmd);
    }
}

/// The readings and open faults of the last detector pass.
#[derive(Debug, Clone, Default)]
pub struct PassView {
    /// Current readings (a user report's snapshot).
    pub snapshot: heapless::Vec<Reading, 32>,
    /// The faults open now.
    pub open_faults: heapless::Vec<OpenFault, 16>,
}

impl PassView {
    /// What `detectors` hold now.
    pub fn of(detectors: &Detectors) -> Self {
        Self {
            snapshot: detectors.snapshot(),
            open_faults: detectors.open_faults(),
        }
    }
}

/// State shared by the link, the sampling loop and the IPC server.
pub struct AgentState {
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
    /// What the last detector pass saw, for `status` and a report's snapshot: the IPC
    /// server reads this, never the detectors, which a slow pass may hold for long.
    pub pass: Mutex<PassView>,
    /// The `ts` of the last collector `online` status seen, to ignore re-deliveries of
    /// the same retained message.
    pub collector_online_ts: Mutex<Option<u64>>,
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it (the data are
/// plain values, consistent after every statement).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AgentState {
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
            pass: Mutex::new(PassView::default()),
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
    /// After this many refusals of the account in a row (bad user name or password, not
    /// authorised), with no connection between, the link ends with
    /// [`LinkError::AccountRefused`]. Set for an enrolment's credentials, whose
    /// collector may say why (revoked); `None` keeps trying, as for a configured account.
    pub refusals_to_give_up: Option<u32>,
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
            refusals_to_give_up: None,
        })
    }

    pub(super) fn options(&self, boot: u64, now: u64) -> Result<MqttOptions, LinkError> {
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

    pub(super) fn status(&self, online: bool, boot: u64, ts: u64) -> Result<Vec<u8>, LinkError> {
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

    pub(super) fn will(&self, boot: u64, now: u64) -> Result<LastWill, LinkError> {
        Ok(LastWill::new(
            self.topics.up(&self.device, UpKind::Status).as_str(),
            self.status(false, boot, now)?,
            QoS::AtLeastOnce,
            true,
        ))
    }
}

/// Builds the event loop's options; exposed for tests of the will and limits.
pub fn options_for(cfg: &LinkConfig, boot: u64, now: u64) -> Result<MqttOptions, LinkError> {
    cfg.options(boot, now)
}

/// A config for the link's unit tests.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(super) fn test_config() -> LinkConfig {
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
        refusals_to_give_up: None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vigia_protocol::decode;

    #[test]
    fn options_carry_the_will_with_the_session_boot_and_a_persistent_session() {
        let o = options_for(&test_config(), 7, 1234).unwrap();
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
}
