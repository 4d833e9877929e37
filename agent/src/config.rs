//! The agent's configuration: a TOML file ([`ConfigToml`], what the operator writes) and
//! the validated runtime form ([`Config`], what the agent runs with).
//!
//! Every section has its defaults in code, so an empty file (or no file) is a working
//! configuration for a device next to a local broker, and `vigia-agent print-config`
//! prints them. Unknown keys are errors, not silently ignored typos. Validation happens
//! once, at start-up, and every error names the file and the dotted field
//! (`/etc/vigia/agent.toml: mqtt.url: ...`). The trade-off: two structs to keep in step,
//! in exchange for runtime code that never re-checks a value.
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vigia_protocol::enrol::Token;
use vigia_protocol::{relative_to, DeviceId, Dur, Topics, DEFAULT_PREFIX};

use crate::detect::DetectConfig;
use crate::spool::MIN_MAX_BYTES;

/// Where the agent looks for its config when neither `--config` nor
/// `VIGIA_AGENT_CONFIG` names one (used only when it exists).
pub const SYSTEM_CONFIG: &str = "/etc/vigia/agent.toml";
/// The data directory of an agent running as root.
pub const SYSTEM_DATA_DIR: &str = "/var/lib/vigia-agent";
/// The IPC socket's file name inside the data directory.
pub const SOCKET_NAME: &str = "agent.sock";
/// Tags kept per device (the protocol's bound).
pub const MAX_TAGS: usize = 8;

/// The config file as written. Every field is optional; see [`ConfigToml::default`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigToml {
    /// How often the detectors sample: a number with a unit, `ms`, `s`, `m` or `h`
    /// ("30s", "50ms"). Default 30 s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// The same in milliseconds, for generated configs; set one of the two, not both.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    /// The filesystem root the probes read (`/` in production, a fixture tree in tests).
    pub root: PathBuf,
    /// Where the spool, counters and IPC socket live. Default: `/var/lib/vigia-agent` when
    /// running as root, else `$XDG_STATE_HOME/vigia-agent` or `~/.local/state/vigia-agent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// This device.
    pub device: DeviceToml,
    /// The MQTT broker.
    pub mqtt: MqttToml,
    /// The durable event spool.
    pub spool: SpoolToml,
    /// The local socket `vigia-agent report` and `status` talk to.
    pub ipc: IpcToml,
    /// Self-enrolment, for a device without `[mqtt] username`.
    #[serde(skip_serializing_if = "EnrolToml::is_empty")]
    pub enrol: EnrolToml,
    /// Detector thresholds, hysteresis and debounce.
    pub detect: DetectConfig,
}

/// `[device]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceToml {
    /// The device id (also the MQTT client id and username): ASCII letters, digits, `-`,
    /// `_`, `.`, at most 64 bytes. Default: the host name, lowercased and sanitized.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Free tags for triage rules ("site-bogota", "role-server"): at most 8 of 32 bytes.
    pub tags: Vec<String>,
}

/// `[mqtt]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttToml {
    /// Broker URL: `mqtt://host:port` (default port 1883) or `mqtts://host:port` (TLS,
    /// default port 8883).
    pub url: String,
    /// Topic prefix shared with the collector.
    pub prefix: String,
    /// Username, when the broker requires one (normally the device id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password for `username`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// PEM file with the CA certificate(s) that signed the broker's certificate, for
    /// `mqtts://`. Default: the system bundle (`/etc/ssl/certs/ca-certificates.crt`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// MQTT keep-alive ("30s"); whole seconds, at least 1 s.
    pub keep_alive: String,
}

/// `[enrol]`
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrolToml {
    /// The site's enrolment token, `<site>:<secret>`, from the collector's admin. Used
    /// only when `[mqtt] username` is not set: the agent asks to join and, once an admin
    /// approves, keeps its device credentials in `enrolment/` under the data directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// How often to ask again while waiting for a decision (`60s`). Each ask is a short
    /// session: the broker ties client ids to user names, and every agent of a site
    /// shares the site's account, so a session held open would be taken over by the next
    /// agent that asks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poll: Option<String>,
}

impl EnrolToml {
    fn is_empty(&self) -> bool {
        self.token.is_none() && self.poll.is_none()
    }
}

// By hand: the token's secret is a broker password and must not reach a log.
impl std::fmt::Debug for EnrolToml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrolToml")
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// `[spool]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolToml {
    /// Most bytes of unacknowledged events kept; when full, the least severe, oldest
    /// events are dropped first (and a notice says so).
    pub max_bytes: u64,
}

/// `[ipc]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IpcToml {
    /// Path of the Unix socket. Default: `agent.sock` in the data directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// Who may use the socket (send reports, see their status, reply): `"everyone"`
    /// (mode 0666: every local user; a single-user workstation, or any machine whose
    /// users should all be able to report), `"group"` (0660, group `group`: only its
    /// members; shared machines and servers), `"owner"` (0600: only the agent's user,
    /// root in production). Default `"everyone"`.
    pub access: String,
    /// The group for `access = "group"`: a name from `/etc/group` or a number. Default
    /// `"vigia"` (`groupadd --system vigia`, then `usermod -aG vigia NAME` per user).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// The group `access = "group"` uses when `[ipc] group` is not set.
pub const DEFAULT_SOCKET_GROUP: &str = "vigia";

/// Who may use the local socket, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketAccess {
    /// Mode 0666.
    Everyone,
    /// Mode 0660, owned by this group (a name or a number, resolved when the socket is
    /// bound, so a missing group is an error of the agent that needs it).
    Group(String),
    /// Mode 0600.
    Owner,
}

impl SocketAccess {
    /// The socket's file mode.
    pub fn mode(&self) -> u32 {
        match self {
            Self::Everyone => 0o666,
            Self::Group(_) => 0o660,
            Self::Owner => 0o600,
        }
    }
}

/// The default broker URL.
pub const DEFAULT_URL: &str = "mqtt://127.0.0.1:1883";
/// How often a waiting enrolment asks again.
pub const DEFAULT_ENROL_POLL: Duration = Duration::from_secs(60);
/// The default sampling interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// The default spool bound: 8 MiB.
pub const DEFAULT_SPOOL_BYTES: u64 = 8 * 1024 * 1024;

impl Default for ConfigToml {
    fn default() -> Self {
        Self {
            interval: None,
            interval_ms: None,
            root: PathBuf::from("/"),
            data_dir: None,
            device: DeviceToml::default(),
            mqtt: MqttToml::default(),
            spool: SpoolToml::default(),
            ipc: IpcToml::default(),
            enrol: EnrolToml::default(),
            detect: DetectConfig::default(),
        }
    }
}

impl Default for MqttToml {
    fn default() -> Self {
        Self {
            url: DEFAULT_URL.into(),
            prefix: DEFAULT_PREFIX.into(),
            username: None,
            password: None,
            ca_file: None,
            keep_alive: "30s".into(),
        }
    }
}

impl Default for SpoolToml {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_SPOOL_BYTES,
        }
    }
}

impl Default for IpcToml {
    fn default() -> Self {
        Self {
            socket: None,
            access: "everyone".into(),
            group: None,
        }
    }
}

/// A config error. Its text names the file (or `<defaults>`) and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key or a value of the wrong type.
    #[error("{origin}: {field}{message}")]
    Parse {
        /// The file.
        origin: String,
        /// The dotted key at fault followed by ": ", when it could be located.
        field: String,
        /// The parser's message.
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{origin}: {field}: {message}")]
    Invalid {
        /// The file.
        origin: String,
        /// The dotted key.
        field: String,
        /// Why.
        message: String,
    },
}

/// How to reach the broker: the protocol crate's one broker-URL type.
pub use vigia_protocol::BrokerUrl as Broker;

/// Validated MQTT settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttSettings {
    /// The broker.
    pub broker: Broker,
    /// Topic names under the configured prefix.
    pub topics: Topics,
    /// Username and password, when set.
    pub credentials: Option<(String, String)>,
    /// CA bundle for TLS, when set.
    pub ca_file: Option<PathBuf>,
    /// Keep-alive.
    pub keep_alive: Duration,
}

/// The validated configuration the agent runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where it came from (a path or `<defaults>`), for messages.
    pub origin: String,
    /// This device.
    pub device: DeviceId,
    /// Its tags.
    pub tags: heapless::Vec<heapless::String<32>, MAX_TAGS>,
    /// The broker and topics.
    pub mqtt: MqttSettings,
    /// The spool bound.
    pub spool_max_bytes: u64,
    /// Sampling interval.
    pub interval: Duration,
    /// Probe root.
    pub root: PathBuf,
    /// Data directory (spool database, socket).
    pub data_dir: PathBuf,
    /// IPC socket path.
    pub socket: PathBuf,
    /// Who may use the socket.
    pub socket_access: SocketAccess,
    /// The site's enrolment token, when set (its `Debug` hides the secret).
    pub enrol: Option<Token>,
    /// How often to ask again while an enrolment waits.
    pub enrol_poll: Duration,
    /// Detector settings (validated).
    pub detect: DetectConfig,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let origin = path.display().to_string();
        let mut file = ConfigToml::parse(&text, &origin)?;
        if let Some(dir) = path.parent() {
            file.resolve_relative(dir, &origin)?;
        }
        file.validate(&origin)
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let file = ConfigToml::parse(text, origin)?;
        file.validate(origin)
    }

    /// The defaults for this host, as if from an empty file.
    pub fn defaults() -> Result<Self, ConfigError> {
        ConfigToml::default().validate("<defaults>")
    }

    /// The path of the spool database inside the data directory.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("db")
    }
}

impl ConfigToml {
    /// Parses TOML text, naming the key at fault when the parser reports where it was.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let field = e
                .span()
                .and_then(|span| key_at(text, span.start))
                .map(|k| format!("{k}: "))
                .unwrap_or_default();
            ConfigError::Parse {
                origin: origin.to_string(),
                field,
                message: e.message().to_string(),
            }
        })
    }

    /// The default config as TOML, with a header documenting the optional keys. Parses
    /// back to [`ConfigToml::default`].
    pub fn default_toml() -> Result<String, toml::ser::Error> {
        let d = ConfigToml {
            interval: Some(Dur::from(DEFAULT_INTERVAL).to_string()),
            ..ConfigToml::default()
        };
        let body = toml::to_string_pretty(&d)?;
        Ok(format!("{DEFAULT_HEADER}\n{body}"))
    }

    /// Makes relative paths (`root`, `data_dir`, `mqtt.ca_file`, `ipc.socket`,
    /// `detect.replay`) relative to `dir`, the config file's directory, so a file means
    /// the same thing whatever the working directory.
    pub fn resolve_relative(&mut self, dir: &Path, origin: &str) -> Result<(), ConfigError> {
        let fix = |p: &mut PathBuf| *p = relative_to(dir, p);
        fix(&mut self.root);
        if let Some(p) = self.data_dir.as_mut() {
            fix(p);
        }
        if let Some(p) = self.mqtt.ca_file.as_mut() {
            fix(p);
        }
        if let Some(p) = self.ipc.socket.as_mut() {
            fix(p);
        }
        if let Some(r) = self.detect.replay.as_mut() {
            let mut p = PathBuf::from(r.as_str());
            fix(&mut p);
            let text = p.to_str().unwrap_or_default();
            *r = heapless::String::try_from(text).map_err(|_| ConfigError::Invalid {
                origin: origin.to_string(),
                field: "detect.replay".into(),
                message: format!("{} is longer than 256 bytes", p.display()),
            })?;
        }
        Ok(())
    }

    /// Checks every value and builds the runtime [`Config`].
    pub fn validate(self, origin: &str) -> Result<Config, ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            field: field.to_string(),
            message,
        };

        let interval = match (&self.interval, self.interval_ms) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "interval_ms",
                    "set either `interval` or `interval_ms`, not both".into(),
                ))
            }
            (Some(s), None) => parse_duration(s).map_err(|m| invalid("interval", m))?,
            (None, Some(ms)) => Duration::from_millis(ms),
            (None, None) => DEFAULT_INTERVAL,
        };
        if interval < Duration::from_millis(10) {
            let field = if self.interval_ms.is_some() {
                "interval_ms"
            } else {
                "interval"
            };
            return Err(invalid(field, "must be at least 10 ms".into()));
        }

        let device = match &self.device.id {
            Some(id) => DeviceId::new(id).map_err(|e| invalid("device.id", e.to_string()))?,
            None => {
                let host = crate::inventory::host_name().ok_or_else(|| {
                    invalid(
                        "device.id",
                        "not set and the host name could not be read; set it".into(),
                    )
                })?;
                DeviceId::sanitize(&host).ok_or_else(|| {
                    invalid(
                        "device.id",
                        format!("not set and the host name {host:?} cannot be made an id"),
                    )
                })?
            }
        };

        let mut tags = heapless::Vec::new();
        if self.device.tags.len() > MAX_TAGS {
            return Err(invalid(
                "device.tags",
                format!("at most {MAX_TAGS} tags, got {}", self.device.tags.len()),
            ));
        }
        for tag in &self.device.tags {
            let t = heapless::String::try_from(tag.as_str())
                .map_err(|_| invalid("device.tags", format!("tag {tag:?} is over 32 bytes")))?;
            if tag.is_empty() {
                return Err(invalid("device.tags", "a tag is empty".into()));
            }
            // Bounded by the length check above.
            let _ = tags.push(t);
        }

        let broker = Broker::parse(&self.mqtt.url).map_err(|m| invalid("mqtt.url", m))?;
        let topics =
            Topics::new(&self.mqtt.prefix).map_err(|e| invalid("mqtt.prefix", e.to_string()))?;
        let credentials = match (&self.mqtt.username, &self.mqtt.password) {
            (Some(u), p) if !u.is_empty() => Some((u.clone(), p.clone().unwrap_or_default())),
            (Some(_), _) => return Err(invalid("mqtt.username", "is empty".into())),
            (None, Some(_)) => {
                return Err(invalid(
                    "mqtt.password",
                    "is set but mqtt.username is not".into(),
                ))
            }
            (None, None) => None,
        };
        if let Some(ca) = &self.mqtt.ca_file {
            if !broker.tls {
                return Err(invalid(
                    "mqtt.ca_file",
                    "is set but mqtt.url is not mqtts://".into(),
                ));
            }
            if let Err(e) = std::fs::metadata(ca) {
                return Err(invalid("mqtt.ca_file", format!("{}: {e}", ca.display())));
            }
        }
        let keep_alive =
            parse_duration(&self.mqtt.keep_alive).map_err(|m| invalid("mqtt.keep_alive", m))?;
        if keep_alive < Duration::from_secs(1) || keep_alive.subsec_nanos() != 0 {
            return Err(invalid(
                "mqtt.keep_alive",
                "must be whole seconds, at least 1 s".into(),
            ));
        }

        let floor = (2 * vigia_protocol::MAX_PAYLOAD as u64).max(MIN_MAX_BYTES);
        if self.spool.max_bytes < floor {
            return Err(invalid(
                "spool.max_bytes",
                format!("must be at least {floor} (two maximum-size events)"),
            ));
        }

        if self.root.as_os_str().is_empty() {
            return Err(invalid("root", "is empty".into()));
        }

        let data_dir = match self.data_dir {
            Some(d) if d.as_os_str().is_empty() => {
                return Err(invalid("data_dir", "is empty".into()))
            }
            Some(d) => d,
            None => default_data_dir().ok_or_else(|| {
                invalid(
                    "data_dir",
                    "not set and neither XDG_STATE_HOME nor HOME is set; set it".into(),
                )
            })?,
        };
        let socket = self
            .ipc
            .socket
            .clone()
            .unwrap_or_else(|| data_dir.join(SOCKET_NAME));

        // A string checked here rather than a serde enum: the same message, less code.
        let socket_access = match (self.ipc.access.as_str(), &self.ipc.group) {
            ("group", Some(g)) if g.trim().is_empty() => {
                return Err(invalid("ipc.group", "is empty".into()))
            }
            ("group", g) => SocketAccess::Group(
                g.clone()
                    .unwrap_or_else(|| DEFAULT_SOCKET_GROUP.to_string()),
            ),
            ("everyone" | "owner", Some(_)) => {
                return Err(invalid(
                    "ipc.group",
                    "is set but ipc.access is not \"group\"".into(),
                ))
            }
            ("everyone", None) => SocketAccess::Everyone,
            ("owner", None) => SocketAccess::Owner,
            (other, _) => {
                return Err(invalid(
                    "ipc.access",
                    format!("{other:?} is not one of \"everyone\", \"group\", \"owner\""),
                ))
            }
        };

        let enrol = match &self.enrol.token {
            // The message says what is wrong, never the value: it holds a password.
            Some(t) => Some(Token::parse(t).map_err(|e| invalid("enrol.token", e.to_string()))?),
            None => None,
        };
        let enrol_poll = match &self.enrol.poll {
            Some(p) => parse_duration(p).map_err(|m| invalid("enrol.poll", m))?,
            None => DEFAULT_ENROL_POLL,
        };
        if enrol_poll < Duration::from_millis(100) {
            return Err(invalid("enrol.poll", "must be at least 100ms".into()));
        }

        self.detect.validate().map_err(|e| ConfigError::Invalid {
            origin: origin.to_string(),
            field: format!("detect.{}", e.field),
            message: e.reason.to_string(),
        })?;

        Ok(Config {
            origin: origin.to_string(),
            device,
            tags,
            mqtt: MqttSettings {
                broker,
                topics,
                credentials,
                ca_file: self.mqtt.ca_file,
                keep_alive,
            },
            spool_max_bytes: self.spool.max_bytes,
            interval,
            root: self.root,
            data_dir,
            socket,
            socket_access,
            enrol,
            enrol_poll,
            detect: self.detect,
        })
    }
}

const DEFAULT_HEADER: &str = "\
# vigia-agent configuration (the defaults; every key is optional).
#
# Optional keys not shown below:
#   interval_ms = 50            # instead of `interval`, in milliseconds
#   data_dir = \"/var/lib/vigia-agent\"   # default: that when root, else ~/.local/state/vigia-agent
#   [device] id = \"ws-042\"      # default: the host name, sanitized
#   [mqtt] username, password   # when the broker requires them
#   [enrol] token = \"<site>:<secret>\"   # without [mqtt] username: ask to join, wait for approval
#   [enrol] poll = \"60s\"       # how often to ask again while waiting
#   [mqtt] ca_file = \"/etc/vigia/ca.pem\"   # for mqtts:// (default: the system bundle)
#   [ipc] socket = \"/run/vigia-agent.sock\" # default: agent.sock in data_dir
#   [ipc] group = \"vigia\"      # with access = \"group\": who may report (default vigia)
#   [detect] replay = \"samples.jsonl\"     # read samples from a file instead of this machine
";

/// Whether this process runs as root (`/proc/self` is owned by the effective uid).
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// The default data directory for this process (see [`ConfigToml::data_dir`]).
pub fn default_data_dir() -> Option<PathBuf> {
    if running_as_root() {
        return Some(PathBuf::from(SYSTEM_DATA_DIR));
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|s| !s.is_empty())
                .map(|h| PathBuf::from(h).join(".local/state"))
        })?;
    Some(state.join("vigia-agent"))
}

/// Parses a duration in the one grammar of both config files ([`Dur`]).
fn parse_duration(s: &str) -> Result<Duration, String> {
    s.parse::<Dur>()
        .map(Duration::from)
        .map_err(|e| e.to_string())
}

/// The dotted key (`mqtt.url`) defined on the line holding byte `offset`, from the last
/// `[table]` header above it. A best effort for error messages only.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let before = text.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let line = text.get(line_start..line_end)?.trim();
    let mut table = None;
    for l in before[..line_start].lines().rev() {
        let l = l.trim();
        if l.starts_with('[') {
            table = Some(l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
            break;
        }
    }
    if line.starts_with('[') {
        return Some(
            line.trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string(),
        );
    }
    let key = line.split_once('=')?.0.trim().trim_matches('"');
    if key.is_empty() {
        return None;
    }
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match Config::from_toml(text, "/etc/vigia/agent.toml") {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn ok(text: &str) -> Config {
        Config::from_toml(text, "t.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn printed_default_parses_back_to_the_default() {
        let text = ConfigToml::default_toml().unwrap();
        let parsed = ConfigToml::parse(&text, "printed").unwrap();
        let expected = ConfigToml {
            interval: Some("30s".into()),
            ..ConfigToml::default()
        };
        assert_eq!(parsed, expected);
        // And it validates to the same runtime config as no file at all.
        let data = "data_dir = \"/tmp/x\"\n";
        let a = Config::from_toml(&format!("{data}{text}"), "a").unwrap();
        let b = Config::from_toml(data, "a").unwrap();
        assert_eq!(a, b);
        assert!(text.contains("[mqtt]") && text.contains("[detect"));
    }

    #[test]
    fn a_full_file_is_read_into_runtime_types() {
        let c = ok(r#"
            interval = "50ms"
            root = "/srv/fixture"
            data_dir = "/tmp/vigia-test"
            [device]
            id = "ws-042"
            tags = ["site-bogota", "role-desk"]
            [mqtt]
            url = "mqtts://broker.example:9883"
            prefix = "acme/vigia/v1"
            username = "ws-042"
            password = "s3cret"
            keep_alive = "20s"
            [spool]
            max_bytes = 65536
            [ipc]
            access = "group"
            group = "staff"
            [detect.disk_space]
            warn = 80.0
        "#);
        assert_eq!(c.interval, Duration::from_millis(50));
        assert_eq!(c.root, PathBuf::from("/srv/fixture"));
        assert_eq!(c.device.as_str(), "ws-042");
        assert_eq!(c.tags.len(), 2);
        assert_eq!(
            c.mqtt.broker,
            Broker {
                host: "broker.example".into(),
                port: 9883,
                tls: true
            }
        );
        assert_eq!(c.mqtt.topics.prefix(), "acme/vigia/v1");
        assert_eq!(c.mqtt.credentials, Some(("ws-042".into(), "s3cret".into())));
        assert_eq!(c.mqtt.keep_alive, Duration::from_secs(20));
        assert_eq!(c.spool_max_bytes, 65536);
        assert_eq!(c.socket, PathBuf::from("/tmp/vigia-test/agent.sock"));
        assert_eq!(c.socket_access, SocketAccess::Group("staff".into()));
        assert_eq!(c.socket_access.mode(), 0o660);
        assert_eq!(c.detect.disk_space.warn, 80.0);
    }

    #[test]
    fn socket_access_defaults_to_everyone_and_bad_values_name_the_field() {
        let d = ok("data_dir = \"/x\"");
        assert_eq!(d.socket_access, SocketAccess::Everyone);
        assert_eq!(d.socket_access.mode(), 0o666);
        let g = ok("data_dir = \"/x\"\n[ipc]\naccess = \"group\"");
        assert_eq!(g.socket_access, SocketAccess::Group("vigia".into()));
        let o = ok("data_dir = \"/x\"\n[ipc]\naccess = \"owner\"");
        assert_eq!(o.socket_access.mode(), 0o600);
        // The old key is an unknown field, and the message lists what there is instead.
        let e = err("[ipc]\nallow_all_users = false");
        assert!(
            e.starts_with("/etc/vigia/agent.toml: ipc.allow_all_users: ") && e.contains("access"),
            "{e}"
        );
        assert_eq!(
            err("[ipc]\ngroup = \"vigia\""),
            "/etc/vigia/agent.toml: ipc.group: is set but ipc.access is not \"group\""
        );
        assert_eq!(
            err("[ipc]\naccess = \"group\"\ngroup = \" \""),
            "/etc/vigia/agent.toml: ipc.group: is empty"
        );
        assert_eq!(
            err("[ipc]\naccess = \"all\""),
            "/etc/vigia/agent.toml: ipc.access: \"all\" is not one of \"everyone\", \"group\", \"owner\""
        );
    }

    #[test]
    fn interval_ms_is_accepted_but_not_with_interval() {
        assert_eq!(
            ok("interval_ms = 75\ndata_dir = \"/x\"").interval,
            Duration::from_millis(75)
        );
        assert_eq!(
            err("interval_ms = 75\ninterval = \"1s\""),
            "/etc/vigia/agent.toml: interval_ms: set either `interval` or `interval_ms`, not both"
        );
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        assert_eq!(
            err("[mqtt]\nurl = \"http://x\""),
            "/etc/vigia/agent.toml: mqtt.url: scheme \"http\" is not supported; use mqtt:// or mqtts://"
        );
        let e = err("[mqtt]\nurl = 5");
        assert!(e.starts_with("/etc/vigia/agent.toml: mqtt.url: "), "{e}");
        let e = err("[mqtt]\nurl = \"mqtt://h\"\nurll = \"x\"");
        assert!(
            e.starts_with("/etc/vigia/agent.toml: mqtt.urll: ") && e.contains("unknown field"),
            "{e}"
        );
        let e = err("[device]\nid = \"a/b\"");
        assert!(e.starts_with("/etc/vigia/agent.toml: device.id: "), "{e}");
        let e = err("interval = \"5 parsecs\"");
        assert!(e.starts_with("/etc/vigia/agent.toml: interval: "), "{e}");
        let e = err("[spool]\nmax_bytes = 100");
        assert!(
            e.starts_with("/etc/vigia/agent.toml: spool.max_bytes: "),
            "{e}"
        );
        let e = err("[mqtt]\nkeep_alive = \"500ms\"");
        assert!(
            e.starts_with("/etc/vigia/agent.toml: mqtt.keep_alive: "),
            "{e}"
        );
        let e = err("[mqtt]\npassword = \"x\"");
        assert!(
            e.starts_with("/etc/vigia/agent.toml: mqtt.password: "),
            "{e}"
        );
        let e = err("[detect.disk_space]\nwarn = 150.0");
        assert!(
            e.starts_with("/etc/vigia/agent.toml: detect.disk_space.warn: "),
            "{e}"
        );
        let e = err("[mqtt\nurl = 1");
        assert!(e.starts_with("/etc/vigia/agent.toml: "), "{e}");
    }

    #[test]
    fn relative_paths_are_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("agent.toml");
        std::fs::write(
            &f,
            "root = \"fixture\"\ndata_dir = \"/abs/data\"\n[detect]\nreplay = \"r.jsonl\"\n",
        )
        .unwrap();
        let c = Config::load(&f).unwrap();
        assert_eq!(c.root, dir.path().join("fixture"));
        assert_eq!(c.data_dir, PathBuf::from("/abs/data"));
        assert_eq!(
            c.detect.replay.as_deref(),
            dir.path().join("r.jsonl").to_str()
        );
        assert_eq!(c.origin, f.display().to_string());
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let e = Config::load(Path::new("/nonexistent/vigia.toml"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with("/nonexistent/vigia.toml: cannot read: "),
            "{e}"
        );
    }

    #[test]
    fn durations_and_urls_use_the_shared_grammar() {
        // The grammar itself is tested in the protocol crate; here, that the agent's
        // fields take it, units the agent did not read before included.
        let c = ok("interval = \"1.5s\"\n[mqtt]\nurl = \"mqtt://[::1]\"\nkeep_alive = \"1m30s\"");
        assert_eq!(c.interval, Duration::from_millis(1500));
        assert_eq!(c.mqtt.keep_alive, Duration::from_secs(90));
        assert_eq!(c.mqtt.broker.to_string(), "mqtt://[::1]:1883");
        assert!(err("[mqtt]\nurl = \"mqtt://h#x\"").contains("mqtt.url"));
        assert!(err("interval = \"30\"").contains("interval"));
    }

    #[test]
    fn an_enrolment_token_is_checked_and_its_secret_never_printed() {
        let text = "data_dir = \"/x\"\n[enrol]\ntoken = \"madrid-hq:0123456789abcdefSECRET\"";
        let c = ok(text);
        let t = c.enrol.as_ref().unwrap();
        assert_eq!(t.site.as_str(), "madrid-hq");
        assert_eq!(t.secret.as_str(), "0123456789abcdefSECRET");
        assert_eq!(t.username().as_str(), "vigia-enrol-madrid-hq");
        assert!(!format!("{c:?}").contains("SECRET"), "{c:?}");
        let file = ConfigToml::parse(text, "t").unwrap();
        assert!(!format!("{file:?}").contains("SECRET"), "{file:?}");
        assert_eq!(ok("data_dir = \"/x\"").enrol, None);

        assert_eq!(
            err("[enrol]\ntoken = \"madrid-hq:SECRET\""),
            "/etc/vigia/agent.toml: enrol.token: the token's secret must be 16 to 64 printable characters"
        );
        let e = err("[enrol]\ntoken = \"Madrid:0123456789abcdefSECRET\"");
        assert!(
            e.starts_with("/etc/vigia/agent.toml: enrol.token: ") && !e.contains("SECRET"),
            "{e}"
        );
        let e = err("[enrol]\ntoken = \"0123456789abcdefSECRET\"");
        assert!(e.starts_with("/etc/vigia/agent.toml: enrol.token: "), "{e}");
        let e = err("[enrol]\nsecret = \"x\"");
        assert!(
            e.starts_with("/etc/vigia/agent.toml: enrol.secret: "),
            "{e}"
        );

        // Documented in the printed default, which has no `[enrol]` table of its own.
        let printed = ConfigToml::default_toml().unwrap();
        assert!(printed.contains("#   [enrol] token = "), "{printed}");
        assert!(!printed.contains("\n[enrol]"), "{printed}");
    }

    #[test]
    fn device_id_defaults_to_the_sanitized_host_name() {
        let c = ok("data_dir = \"/x\"");
        let host = crate::inventory::host_name().unwrap();
        assert_eq!(Some(c.device), DeviceId::sanitize(&host));
    }
}
