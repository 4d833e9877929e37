//! Self-enrolment, the agent's side: a device configured with only the broker and a
//! site's `[enrol] token` asks to join, waits for an admin (or a rule) to approve, and
//! then runs the normal link with the device account it was given.
//!
//! The flow: the agent keeps an X25519 key in `<data_dir>/enrolment/key` (made once, so
//! the request id derived from it, and the request an admin sees, survive restarts). It
//! connects with the site's shared enrolment account (`vigia-enrol-<site>`, the token's
//! secret as password; clean session, client id `vigia-enrol-<request>`), and on every
//! ConnAck subscribes to its `enrol/<site>/<request>/reply` and publishes its
//! `.../request` (key, device id, host facts for the admin to check). The reply is
//! retained, so a decision taken while the agent was away is there when it comes back.
//! An approval carries the device's password sealed to the agent's key: every agent of
//! the site can read every reply on the shared account, and only the asking agent can
//! open its own. The opened credentials go to `<data_dir>/enrolment/credentials.json`
//! (0600), and the next start uses them without asking again.
//!
//! Meanwhile the sampler, the spool and the local socket run as usual: faults found
//! before the approval wait in the spool and leave once the link is up. A refusal or a
//! revocation is logged and shown by `vigia-agent status`. Each ask is a short session:
//! connect, subscribe, publish the request, read the (retained) reply, disconnect, and
//! ask again after `[enrol] poll` (60 s, jittered). The production broker ties client
//! ids to user names, and every agent of a site shares the site's account, so a session
//! held open would be taken over by the next agent that asks. What a reply means is decided by
//! [`on_reply`], without I/O; [`run`] is the thin loop around rumqttc.
use std::fs::{File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Incoming, MqttOptions, Outgoing, QoS, Transport,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use vigia_protocol::enrol::seal::{AgentKey, SealError};
use vigia_protocol::enrol::{Credentials, EnrolReply, EnrolRequest, EnrolState, Token};
use vigia_protocol::{bounded, decode, encode, now_ms, Backoff, DeviceId, MAX_PACKET, VERSION};

use crate::config::Config;
use crate::i18n::{t, Lang, Msg};
use crate::inventory;
use crate::link::{
    lock, AgentState, LinkConfig, LinkError, LinkState, BACKOFF_BASE, BACKOFF_CAP, STABLE_AFTER,
};

/// The directory, inside the data directory, that holds the key and the credentials.
pub const ENROL_DIR: &str = "enrolment";
/// The agent's private key: 32 raw bytes, mode 0600.
pub const KEY_FILE: &str = "key";
/// The device credentials an approval gave: `{"device": ..., "password": ...}`, 0600.
pub const CREDENTIALS_FILE: &str = "credentials.json";
/// How long a goodbye to the broker may take.
const GOODBYE: Duration = Duration::from_secs(1);

/// `<data_dir>/enrolment`.
pub fn dir_of(data_dir: &Path) -> PathBuf {
    data_dir.join(ENROL_DIR)
}

/// Why the key or the credentials could not be read or kept.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    /// A file or the directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file is not 32 bytes.
    #[error("{path}: not an enrolment key ({len} bytes, not 32); move it away and a new key is made (its request must then be approved again)")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// The credentials file is not credentials.
    #[error("{path}: not enrolment credentials ({message})")]
    BadCredentials {
        /// The file.
        path: PathBuf,
        /// Where the parser stopped (never the text, which may hold the password).
        message: String,
    },
    /// The credentials file is for another device id.
    #[error("{path}: the credentials are for device {found}, not {expected}")]
    OtherDevice {
        /// The file.
        path: PathBuf,
        /// The device in the file.
        found: String,
        /// The configured device.
        expected: String,
    },
    /// No key could be made.
    #[error("cannot make an enrolment key: {0}")]
    Seal(SealError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EnrolError + '_ {
    move |source| EnrolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` (0700), or narrows an existing one to 0700.
fn make_dir(dir: &Path) -> Result<(), EnrolError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    narrow(dir, 0o700);
    Ok(())
}

/// Narrows `path` to `mode` when others could read it (a copy made carelessly). A
/// failure (a read-only file system) is only logged: the file itself is still good.
fn narrow(path: &Path, mode: u32) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let now = meta.permissions().mode() & 0o777;
    if now & !mode == 0 {
        return;
    }
    match std::fs::set_permissions(path, Permissions::from_mode(mode)) {
        Ok(()) => {
            tracing::warn!(path = %path.display(), mode = format!("{now:o}"), "enrolment file was readable by others: narrowed")
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), mode = format!("{now:o}"), error = %e, "enrolment file readable by others and cannot be narrowed")
        }
    }
}

/// Writes `bytes` to `path` (0600) all or nothing: a temporary file, fsync, rename, and
/// fsync of the directory, so a crash leaves the old file or the new one.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), EnrolError> {
    let tmp = path.with_extension("tmp");
    let written = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // The mode above applies only to a file it creates, not to a stale one.
        f.set_permissions(Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(path)(e)
    })
}

/// The agent's key from `dir`, made and kept there (atomically, 0600) the first time.
pub fn load_or_create_key(dir: &Path) -> Result<AgentKey, EnrolError> {
    let path = dir.join(KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let raw = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| EnrolError::BadKey {
                path: path.clone(),
                len: bytes.len(),
            })?;
            narrow(&path, 0o600);
            Ok(AgentKey::from_bytes(raw))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            make_dir(dir)?;
            let key = AgentKey::generate().map_err(EnrolError::Seal)?;
            write_atomic(&path, &key.secret_bytes())?;
            tracing::info!(path = %path.display(), request = %key.request_id(), "enrolment key made");
            Ok(key)
        }
        Err(source) => Err(EnrolError::Io { path, source }),
    }
}

/// The credentials kept in `dir` for `device`: `None` when there are none yet, an error
/// when the file is unreadable, malformed or for another device.
pub fn read_credentials(dir: &Path, device: &DeviceId) -> Result<Option<Credentials>, EnrolError> {
    let path = dir.join(CREDENTIALS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(EnrolError::Io { path, source }),
    };
    let c: Credentials =
        serde_json::from_slice(&bytes).map_err(|e| EnrolError::BadCredentials {
            path: path.clone(),
            message: format!(
                "{:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ),
        })?;
    if c.device != *device {
        return Err(EnrolError::OtherDevice {
            path,
            found: c.device.to_string(),
            expected: device.to_string(),
        });
    }
    narrow(&path, 0o600);
    Ok(Some(c))
}

/// Keeps `c` in `dir` (atomically, 0600).
pub fn write_credentials(dir: &Path, c: &Credentials) -> Result<(), EnrolError> {
    make_dir(dir)?;
    let path = dir.join(CREDENTIALS_FILE);
    let json = serde_json::to_vec(c).map_err(|e| EnrolError::BadCredentials {
        path: path.clone(),
        message: e.to_string(),
    })?;
    write_atomic(&path, &json)
}

/// What the agent does about its device account at start.
#[derive(Debug, PartialEq, Eq)]
pub enum Start {
    /// Nothing: `[mqtt] username` is set, or there is no `[enrol] token`.
    Configured,
    /// Enrolled on an earlier run: these credentials, and the token to ask again with
    /// should the broker refuse them.
    Enrolled(Credentials, Token),
    /// Ask to join with this token.
    Enrol(Token),
}

/// Decides [`Start`] from the config and what `<data_dir>/enrolment` holds. Credentials
/// that cannot be used (unreadable, another device's) mean asking again, which an
/// approved key's retained reply answers at once.
pub fn start(cfg: &Config) -> Start {
    let Some(token) = cfg.enrol.clone() else {
        return Start::Configured;
    };
    if cfg.mqtt.credentials.is_some() {
        tracing::debug!("mqtt.username is set: enrol.token is not used");
        return Start::Configured;
    }
    let dir = dir_of(&cfg.data_dir);
    match read_credentials(&dir, &cfg.device) {
        Ok(Some(c)) => {
            tracing::info!(device = %c.device, "using the device credentials of an earlier enrolment");
            Start::Enrolled(c, token)
        }
        Ok(None) => Start::Enrol(token),
        Err(e) => {
            tracing::warn!(error = %e, device = %cfg.device, "enrolment credentials not used; asking to enrol again");
            Start::Enrol(token)
        }
    }
}

/// What a reply means for the agent.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// No decision yet: keep waiting.
    Wait,
    /// Approved: connect with these.
    Use(Credentials),
    /// An approval this agent cannot use (not sealed to its key, altered, malformed, or
    /// for another device): someone must look; keep waiting for another reply.
    Unusable(String),
    /// Refused, with the reason: stay (events are spooled), listening for a new decision.
    Refused(String),
    /// The device was enrolled and has been revoked: the same.
    Revoked,
}

/// What `reply` means for the agent holding `key` that asked as `device`.
pub fn on_reply(reply: &EnrolReply, key: &AgentKey, device: &DeviceId) -> Next {
    match &reply.state {
        EnrolState::Pending => Next::Wait,
        EnrolState::Approved { sealed } => {
            let plain = match key.open(sealed) {
                Ok(p) => p,
                Err(e) => return Next::Unusable(format!("the approval cannot be opened: {e}")),
            };
            match serde_json::from_slice::<Credentials>(&plain) {
                Ok(c) if c.device == *device => Next::Use(c),
                Ok(c) => Next::Unusable(format!(
                    "the approval is for device {}, not {device}",
                    c.device
                )),
                Err(e) => Next::Unusable(format!(
                    "the approval holds no credentials ({:?} error)",
                    e.classify()
                )),
            }
        }
        EnrolState::Refused { reason } => Next::Refused(reason.to_string()),
        EnrolState::Revoked => Next::Revoked,
    }
}

/// Where a request stands, for `vigia-agent status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum EnrolView {
    /// Asked (or about to), no decision yet.
    Waiting {
        /// The request id (empty until the key could be read).
        request: String,
    },
    /// Refused by an admin.
    Refused {
        /// The request id.
        request: String,
        /// Why.
        reason: String,
    },
    /// The device was revoked.
    Revoked {
        /// The request id.
        request: String,
    },
}

impl EnrolView {
    /// One line for a terminal: "enrolling: waiting for approval (request …)",
    /// "enrolment refused: …" or "device revoked". The reason, written by an admin, is
    /// stripped of control characters.
    pub fn text(&self, lang: Lang) -> String {
        let clean = |s: &str| s.chars().filter(|c| !c.is_control()).collect::<String>();
        match self {
            Self::Waiting { request } if request.is_empty() => t(lang, Msg::EnrolWaiting).into(),
            Self::Waiting { request } => format!(
                "{} ({} {})",
                t(lang, Msg::EnrolWaiting),
                t(lang, Msg::EnrolRequest),
                clean(request)
            ),
            Self::Refused { reason, .. } => {
                format!("{} {}", t(lang, Msg::EnrolRefused), clean(reason))
            }
            Self::Revoked { .. } => t(lang, Msg::EnrolRevoked).into(),
        }
    }
}

fn show(shared: &AgentState, view: &EnrolView, attempts: u32, last_error: Option<String>) {
    *lock(&shared.state) = LinkState::Enrolling {
        view: view.clone(),
        attempts,
        last_error,
    };
}

/// The request this agent sends, from its host facts.
pub fn request(
    key: &AgentKey,
    device: &DeviceId,
    tags: &[heapless::String<32>],
    host: &inventory::HostFacts,
    dmi: vigia_protocol::Dmi,
    ts: u64,
) -> EnrolRequest {
    let os = match (&host.os, &host.os_version) {
        (Some(o), Some(v)) => format!("{o} {v}"),
        (Some(o), None) => o.clone(),
        (None, _) => String::new(),
    };
    EnrolRequest {
        v: VERSION,
        key: bounded(&key.public_hex()),
        device: device.clone(),
        ts,
        agent_version: bounded(inventory::AGENT_VERSION),
        hostname: bounded(host.hostname.as_deref().unwrap_or_default()),
        os: bounded(&os),
        arch: bounded(&host.arch),
        dmi,
        tags: tags.iter().take(8).cloned().collect(),
    }
}

/// Asks to join until approved or `stop` turns true. Returns the device credentials
/// (already kept in `dir` when the disk allowed), or `None` on shutdown. Errors the
/// broker or the disk make are logged, shown by `status`, and retried with the link's
/// backoff; only a request that cannot be encoded is an error.
pub async fn run(
    shared: &AgentState,
    link: &LinkConfig,
    token: &Token,
    dir: &Path,
    poll: Duration,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<Credentials>, LinkError> {
    let seed = now_ms() ^ u64::from(std::process::id()).rotate_left(32);
    let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP, seed);
    let waiting = EnrolView::Waiting {
        request: String::new(),
    };
    show(shared, &waiting, 0, None);
    // A full or read-only data directory must not stop the agent: retry, spooling.
    let key = loop {
        match load_or_create_key(dir) {
            Ok(k) => break k,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::error!(error = %e, retry_in_ms = millis(delay), "cannot read or keep the enrolment key; retrying");
                show(shared, &waiting, backoff.attempts(), Some(e.to_string()));
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => return Ok(None),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    };
    backoff.reset();
    let id = key.request_id();
    let reply_topic = link.topics.enrol_reply(&token.site, &id).to_string();
    let request_topic = link.topics.enrol_request(&token.site, &id).to_string();
    let root = link.root.clone();
    let (host, dmi) =
        tokio::task::spawn_blocking(move || (inventory::host_facts(), inventory::read_dmi(&root)))
            .await
            .unwrap_or_default();

    let mut o = MqttOptions::new(format!("vigia-enrol-{id}"), link.host.clone(), link.port);
    o.set_keep_alive(link.keep_alive.max(Duration::from_secs(1)));
    o.set_clean_session(true);
    o.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    o.set_credentials(token.username().as_str(), token.secret.as_str());
    if let Some(ca) = &link.tls_ca {
        o.set_transport(Transport::tls(ca.clone(), None, None));
    }
    let (client, mut eventloop) = AsyncClient::new(o, 8);
    let mut net = eventloop.network_options();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);

    let mut view = EnrolView::Waiting {
        request: id.clone(),
    };
    show(shared, &view, 0, None);
    tracing::info!(site = %token.site, request = %id, device = %link.device, broker = %format!("{}:{}", link.host, link.port), "no device account yet: asking to enrol");
    let mut up_since: Option<Instant> = None;
    let mut reply_by: Option<tokio::time::Instant> = None;
    let mut last: Option<std::mem::Discriminant<Next>> = None;
    loop {
        // The watch guard `wait_for` returns must be gone before the goodbye's await.
        let polled = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => None,
            p = eventloop.poll() => Some(Some(p)),
            () = until(reply_by) => Some(None),
        };
        // No reply in time (the collector is away and nothing was decided yet): leave,
        // and ask again later.
        let polled = match polled {
            Some(None) => {
                reply_by = None;
                goodbye(&client, &mut eventloop).await;
                up_since = None;
                tracing::debug!(request = %id, "no enrolment reply yet; asking again later");
                let wait = backoff.spread(poll);
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => return Ok(None),
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            Some(Some(p)) => Some(p),
            None => None,
        };
        let Some(polled) = polled else {
            if up_since.is_some() {
                goodbye(&client, &mut eventloop).await;
            }
            return Ok(None);
        };
        match polled {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                up_since = Some(Instant::now());
                reply_by = Some(tokio::time::Instant::now() + REPLY_WAIT);
                show(shared, &view, 0, None);
                // Queued, not awaited: this task polls the event loop (see crate::link).
                if let Err(e) = client.try_subscribe(reply_topic.as_str(), QoS::AtLeastOnce) {
                    tracing::warn!(error = %e, "enrolment: subscription not queued");
                }
                let req = request(&key, &link.device, &link.tags, &host, dmi.clone(), now_ms());
                let bytes = encode(&req).map_err(LinkError::Encode)?;
                match client.try_publish(request_topic.as_str(), QoS::AtLeastOnce, false, bytes) {
                    Ok(()) => tracing::debug!(request = %id, "enrolment request sent"),
                    Err(e) => tracing::warn!(error = %e, "enrolment request not queued"),
                }
            }
            Ok(Event::Incoming(Incoming::Publish(p))) if p.topic == reply_topic => {
                let reply = match decode::<EnrolReply>(&p.payload) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "malformed enrolment reply ignored");
                        continue;
                    }
                };
                let next = on_reply(&reply, &key, &link.device);
                let changed = last.replace(std::mem::discriminant(&next))
                    != Some(std::mem::discriminant(&next));
                match next {
                    Next::Wait => {
                        if changed {
                            tracing::info!(request = %id, "waiting for an administrator to approve (request {id})");
                        }
                        view = EnrolView::Waiting {
                            request: id.clone(),
                        };
                    }
                    Next::Use(c) => {
                        match write_credentials(dir, &c) {
                            Ok(()) => {
                                tracing::info!(device = %c.device, "enrolment approved: device credentials kept")
                            }
                            // Still usable now; after a restart the retained reply gives them again.
                            Err(e) => {
                                tracing::error!(error = %e, device = %c.device, "enrolment approved but the credentials cannot be kept")
                            }
                        }
                        goodbye(&client, &mut eventloop).await;
                        *lock(&shared.state) = LinkState::Connecting {
                            attempts: 0,
                            last_error: None,
                        };
                        return Ok(Some(c));
                    }
                    Next::Unusable(why) => {
                        tracing::error!(request = %id, reason = %why, "enrolment approval not usable; still waiting");
                    }
                    Next::Refused(reason) => {
                        if changed {
                            tracing::error!(request = %id, reason = %reason, "enrolment refused by an administrator; events stay in the spool");
                        }
                        view = EnrolView::Refused {
                            request: id.clone(),
                            reason,
                        };
                    }
                    Next::Revoked => {
                        if changed {
                            tracing::error!(request = %id, device = %link.device, "this device was revoked; events stay in the spool");
                        }
                        view = EnrolView::Revoked {
                            request: id.clone(),
                        };
                    }
                }
                show(shared, &view, 0, None);
                // No decision yet (or one that may change): leave the site's shared
                // account to the next agent, and ask again later.
                reply_by = None;
                goodbye(&client, &mut eventloop).await;
                up_since = None;
                let wait = backoff.spread(poll);
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => return Ok(None),
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                tracing::warn!(topic = %p.topic, "enrolment: message on an unexpected topic ignored");
            }
            Ok(_) => {}
            Err(e) => {
                reply_by = None;
                let was_up = up_since.take();
                if was_up.is_some_and(|t| t.elapsed() >= STABLE_AFTER) {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                log_failure(&e, backoff.attempts(), delay, was_up.is_some());
                show(shared, &view, backoff.attempts(), Some(e.to_string()));
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => return Ok(None),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// How long a session waits for its reply.
const REPLY_WAIT: Duration = Duration::from_secs(10);

/// Sleeps until `at`, or forever without one.
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn log_failure(e: &ConnectionError, attempts: u32, delay: Duration, was_connected: bool) {
    let retry_in_ms = millis(delay);
    if let ConnectionError::ConnectionRefused(code) = e {
        tracing::error!(code = ?code, attempts, retry_in_ms, "the enrolment token was refused by the broker; check enrol.token and the site's enrolment account");
    } else if was_connected {
        tracing::warn!(error = %e, retry_in_ms, "enrolment: connection to the broker lost");
    } else if attempts == 1 || attempts.is_multiple_of(10) {
        tracing::warn!(error = %e, attempts, retry_in_ms, "enrolment: cannot reach the broker; events stay in the spool");
    } else {
        tracing::debug!(error = %e, attempts, retry_in_ms, "enrolment: broker still unreachable");
    }
}

/// A polite DISCONNECT (and the ack of the reply just read), within [`GOODBYE`].
async fn goodbye(client: &AsyncClient, eventloop: &mut EventLoop) {
    if client.try_disconnect().is_err() {
        return;
    }
    let _ = tokio::time::timeout(GOODBYE, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vigia_protocol::enrol::seal::{public_from_hex, seal};

    fn device(s: &str) -> DeviceId {
        DeviceId::new(s).unwrap()
    }

    fn creds(dev: &str, pw: &str) -> Credentials {
        Credentials {
            device: device(dev),
            password: bounded(pw),
        }
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    fn approved_for(key: &AgentKey, c: &Credentials) -> EnrolReply {
        let public = public_from_hex(&key.public_hex()).unwrap();
        let sealed = seal(&public, &serde_json::to_vec(c).unwrap()).unwrap();
        EnrolReply {
            v: VERSION,
            ts: 1,
            state: EnrolState::Approved {
                sealed: bounded(&sealed),
            },
        }
    }

    #[test]
    fn the_key_is_made_once_kept_private_and_read_back() {
        let data = tempfile::tempdir().unwrap();
        let dir = dir_of(data.path());
        let first = load_or_create_key(&dir).unwrap();
        let path = dir.join(KEY_FILE);
        assert_eq!(std::fs::read(&path).unwrap().len(), 32);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir), 0o700);
        let again = load_or_create_key(&dir).unwrap();
        assert_eq!(first.public_hex(), again.public_hex());
        assert_eq!(first.request_id(), again.request_id());
        // Nothing left over from the atomic write.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [KEY_FILE]);

        // A key made readable by others is narrowed, and still the same key.
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            load_or_create_key(&dir).unwrap().public_hex(),
            first.public_hex()
        );
        assert_eq!(mode(&path), 0o600);

        // A damaged key is an error naming the file, not silently a new identity.
        std::fs::write(&path, [0u8; 31]).unwrap();
        let e = load_or_create_key(&dir).err().unwrap().to_string();
        assert!(e.contains("key") && e.contains("31 bytes"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap().len(), 31);
    }

    #[test]
    fn credentials_round_trip_private_and_only_for_their_device() {
        let data = tempfile::tempdir().unwrap();
        let dir = dir_of(data.path());
        assert_eq!(read_credentials(&dir, &device("ws-042")).unwrap(), None);
        let c = creds("ws-042", "pw-0123456789");
        write_credentials(&dir, &c).unwrap();
        let path = dir.join(CREDENTIALS_FILE);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir), 0o700);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, r#"{"device":"ws-042","password":"pw-0123456789"}"#);
        assert_eq!(read_credentials(&dir, &device("ws-042")).unwrap(), Some(c));

        match read_credentials(&dir, &device("ws-043")) {
            Err(EnrolError::OtherDevice {
                found, expected, ..
            }) => {
                assert_eq!((found.as_str(), expected.as_str()), ("ws-042", "ws-043"));
            }
            other => panic!("{other:?}"),
        }

        // A damaged file is an error that does not repeat the password.
        std::fs::write(&path, r#"{"device":"ws-042","password":"pw-0123456789""#).unwrap();
        let e = read_credentials(&dir, &device("ws-042"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains(CREDENTIALS_FILE) && !e.contains("pw-0123"),
            "{e}"
        );
    }

    #[test]
    fn start_uses_kept_credentials_and_enrols_otherwise() {
        let data = tempfile::tempdir().unwrap();
        let base = format!(
            "data_dir = {:?}\n[device]\nid = \"ws-042\"\n",
            data.path().display().to_string()
        );
        let token = "[enrol]\ntoken = \"madrid-hq:0123456789abcdefSECRET\"\n";
        let cfg = |extra: &str| Config::from_toml(&format!("{base}{extra}"), "t").unwrap();
        assert_eq!(start(&cfg("")), Start::Configured);
        let with_user = cfg(&format!("{token}[mqtt]\nusername = \"ws-042\"\n"));
        assert_eq!(start(&with_user), Start::Configured);
        let enrolling = cfg(token);
        let Start::Enrol(t) = start(&enrolling) else {
            panic!("not enrolling")
        };
        assert_eq!(t.site.as_str(), "madrid-hq");
        let dir = dir_of(data.path());
        write_credentials(&dir, &creds("ws-043", "pw-0123456789")).unwrap();
        assert!(matches!(start(&enrolling), Start::Enrol(_)));
        write_credentials(&dir, &creds("ws-042", "pw-0123456789")).unwrap();
        assert_eq!(
            start(&enrolling),
            Start::Enrolled(creds("ws-042", "pw-0123456789"), t.clone())
        );
    }

    #[test]
    fn an_approval_sealed_to_this_key_gives_the_credentials() {
        let key = AgentKey::generate().unwrap();
        let c = creds("ws-042", "pw-0123456789");
        let reply = approved_for(&key, &c);
        assert_eq!(on_reply(&reply, &key, &device("ws-042")), Next::Use(c));
    }

    #[test]
    fn an_approval_sealed_to_another_key_is_not_usable() {
        let key = AgentKey::generate().unwrap();
        let other = AgentKey::generate().unwrap();
        let reply = approved_for(&other, &creds("ws-042", "pw-0123456789"));
        let Next::Unusable(why) = on_reply(&reply, &key, &device("ws-042")) else {
            panic!("accepted")
        };
        assert!(why.contains("cannot be opened"), "{why}");
        // Nor is one that was altered, or that is no sealed box at all.
        let EnrolState::Approved { sealed } = approved_for(&key, &creds("ws-042", "p")).state
        else {
            panic!()
        };
        let mut s = sealed.to_string();
        let flipped = if s.ends_with('0') { '1' } else { '0' };
        s.pop();
        s.push(flipped);
        for bad in [s.as_str(), "zz"] {
            let r = EnrolReply {
                v: VERSION,
                ts: 1,
                state: EnrolState::Approved {
                    sealed: bounded(bad),
                },
            };
            assert!(matches!(
                on_reply(&r, &key, &device("ws-042")),
                Next::Unusable(_)
            ));
        }
    }

    #[test]
    fn an_approval_for_another_device_is_not_usable() {
        let key = AgentKey::generate().unwrap();
        let reply = approved_for(&key, &creds("ws-999", "pw-0123456789"));
        let Next::Unusable(why) = on_reply(&reply, &key, &device("ws-042")) else {
            panic!("accepted")
        };
        assert!(why.contains("ws-999") && !why.contains("pw-0123"), "{why}");
        // Sealed text that is not credentials.
        let public = public_from_hex(&key.public_hex()).unwrap();
        let r = EnrolReply {
            v: VERSION,
            ts: 1,
            state: EnrolState::Approved {
                sealed: bounded(&seal(&public, b"not json").unwrap()),
            },
        };
        assert!(matches!(
            on_reply(&r, &key, &device("ws-042")),
            Next::Unusable(_)
        ));
    }

    #[test]
    fn pending_refused_and_revoked_replies() {
        let key = AgentKey::generate().unwrap();
        let d = device("ws-042");
        let reply = |state| EnrolReply {
            v: VERSION,
            ts: 1,
            state,
        };
        assert_eq!(on_reply(&reply(EnrolState::Pending), &key, &d), Next::Wait);
        assert_eq!(
            on_reply(
                &reply(EnrolState::Refused {
                    reason: bounded("unknown machine")
                }),
                &key,
                &d
            ),
            Next::Refused("unknown machine".into())
        );
        assert_eq!(
            on_reply(&reply(EnrolState::Revoked), &key, &d),
            Next::Revoked
        );
    }

    #[test]
    fn the_request_carries_the_key_the_device_and_the_host() {
        let key = AgentKey::generate().unwrap();
        let host = inventory::HostFacts {
            hostname: Some("ws-042.example".into()),
            os: Some("Debian GNU/Linux".into()),
            os_version: Some("12".into()),
            arch: "x86_64".into(),
            ..Default::default()
        };
        let tags = [bounded::<32>("site-madrid")];
        let r = request(&key, &device("ws-042"), &tags, &host, Default::default(), 7);
        assert_eq!(r.key.as_str(), key.public_hex());
        assert_eq!(
            vigia_protocol::enrol::seal::request_id_of(&public_from_hex(&r.key).unwrap()),
            key.request_id()
        );
        assert_eq!(r.device.as_str(), "ws-042");
        assert_eq!(r.os.as_str(), "Debian GNU/Linux 12");
        assert_eq!(r.hostname.as_str(), "ws-042.example");
        assert_eq!(r.tags.len(), 1);
        assert_eq!(r.ts, 7);
        // And it encodes within the protocol's limits.
        let back: EnrolRequest = decode(&encode(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn the_status_line_says_where_the_request_stands() {
        let w = EnrolView::Waiting {
            request: "0a1b".into(),
        };
        assert_eq!(
            w.text(Lang::En),
            "enrolling: waiting for approval (request 0a1b)"
        );
        let r = EnrolView::Refused {
            request: "0a1b".into(),
            reason: "unknown\u{1b}[2J machine".into(),
        };
        assert_eq!(r.text(Lang::En), "enrolment refused: unknown[2J machine");
        let v = EnrolView::Revoked {
            request: "0a1b".into(),
        };
        assert_eq!(v.text(Lang::En), "device revoked");
        assert!(w.text(Lang::Es).contains("0a1b"));
        // The JSON `status --json` prints.
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"state":"refused","request":"0a1b","reason":"unknown\u001b[2J machine"}"#
        );
    }
}
