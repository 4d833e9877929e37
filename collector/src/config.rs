//! The collector's configuration file (TOML) and its validation into runtime settings.
//!
//! Every field has a default in code, so an empty file (or no file) runs a complete
//! collector with an embedded broker on 127.0.0.1. Unknown fields are refused rather than
//! ignored: a typo in a production config must stop start-up, not silently fall back to a
//! default. Validation happens once, here, and errors name the file and the field.
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vigia_protocol::{relative_to, BrokerUrl, Topics};

use crate::auth::SessionLimits;
use crate::store::embedded::StoreOptions;
use crate::workflow::{
    Dur, FlappingConfig, Policy, PolicyConfig, RulesConfig, SlaConfig, TriageRules,
    ValidationConfig,
};

/// The default HTTP listen address of the API and feed page.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:8790";
/// The default port of the embedded broker.
pub const DEFAULT_EMBEDDED_PORT: u16 = 1883;
/// The default (stable) MQTT client id: a persistent session needs the same id every time.
pub const DEFAULT_CLIENT_ID: &str = "vigia-collector";

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the store (sled) lives. One collector process per directory.
    pub data_dir: PathBuf,
    /// The embedded store's tuning.
    pub store: StoreConfig,
    /// The MQTT side: which broker, which topics, which identity.
    pub mqtt: MqttConfig,
    /// The HTTP side: API, metrics and the live feed page.
    pub http: HttpConfig,
    /// The support workflow: triage rules file, SLA targets, windows.
    pub workflow: WorkflowConfig,
    /// The client commands (`incidents`, `user`, `export`...).
    pub cli: CliConfig,
    /// Notifications for people: the mail relay, webhooks, and who gets what.
    pub notify: crate::notify::NotifyConfig,
    /// How long the live store keeps event details and closed incidents.
    pub retention: crate::retention::RetentionConfig,
    /// Self-enrolment of agents (needs `[mqtt] dynamic_security`).
    pub enrolment: EnrolmentConfig,
}

/// `[enrolment]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrolmentConfig {
    /// DMI serials whose enrolment requests are approved without an admin (the rule
    /// "known serials": machines the organisation bought, from its inventory).
    pub known_serials: Vec<String>,
}

/// `[store]`: the embedded store (sled) in `data_dir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The store's page cache, in MiB (1 to 65536). The collector's memory is about this
    /// plus a few tens of MiB, whatever the number of events stored; more cache keeps more
    /// of a large store's incidents and indexes in memory for the console's reads.
    pub cache_mb: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            cache_mb: StoreOptions::DEFAULT_CACHE_BYTES / (1024 * 1024),
        }
    }
}

/// `[workflow]`: the policy of the support workflow (defaults from the engine).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkflowConfig {
    /// Triage rules file (TOML). Absent: the built-in rules (`print-rules` shows them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules: Option<PathBuf>,
    /// An agent fault that clears within this time after it is registered closes as
    /// transient (000 step 3); one still active after it is verified automatically.
    pub verification_window: Dur,
    /// A question to the user unanswered this long is asked again.
    pub info_reminder_after: Dur,
    /// A question unanswered this long sends the incident back to the service desk.
    pub info_timeout: Dur,
    /// A fault that returns within this time after its incident closed reopens it.
    pub reopen_window: Dur,
    /// A resolved incident with no activity for this long is closed automatically.
    pub auto_close_after: Dur,
    /// Flapping thresholds (`cycles` returns within `window`).
    pub flapping: FlappingConfig,
    /// SLA targets per priority (`[workflow.sla.P1]` response, resolution,
    /// escalate_after).
    pub sla: SlaConfig,
    /// Fields a user report must carry (`required`, `by_category`).
    pub validation: ValidationConfig,
}

impl Default for WorkflowConfig {
    fn default() -> Self {
        let p = PolicyConfig::default();
        Self {
            rules: None,
            verification_window: p.verification_window,
            info_reminder_after: p.info_reminder_after,
            info_timeout: p.info_timeout,
            reopen_window: p.reopen_window,
            auto_close_after: p.auto_close_after,
            flapping: p.flapping,
            sla: p.sla,
            validation: p.validation,
        }
    }
}

impl WorkflowConfig {
    /// The engine's policy section.
    pub fn policy_config(&self) -> PolicyConfig {
        PolicyConfig {
            verification_window: self.verification_window,
            info_reminder_after: self.info_reminder_after,
            info_timeout: self.info_timeout,
            reopen_window: self.reopen_window,
            auto_close_after: self.auto_close_after,
            flapping: self.flapping,
            sla: self.sla,
            validation: self.validation.clone(),
        }
    }
}

/// `[mqtt]`
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Broker URL (`mqtt://host:1883`, `mqtts://host:8883`). Absent: start the embedded
    /// broker on 127.0.0.1 (a try-it default without ACLs or persistence, never production).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Port of the embedded broker; 0 picks a free one (the `run` command prints it).
    pub embedded_port: u16,
    /// Topic prefix shared with the agents.
    pub prefix: String,
    /// MQTT client id. Keep it stable: the persistent session that holds events while the
    /// collector is down is keyed by it. Left at its default with a `username` set, it is
    /// the username, as brokers that tie client ids to accounts
    /// (`use_username_as_clientid`, in `broker-config/`) make it anyway.
    pub client_id: String,
    /// Username for the broker, if it requires one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password for the broker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// PEM file with the CA that signed the broker's certificate; required for `mqtts://`
    /// (point it at `/etc/ssl/certs/ca-certificates.crt` to trust the system roots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The broker runs Mosquitto's dynamic-security plugin, administered by this account
    /// (the one `mosquitto_ctrl dynsec init` made): agents can enrol themselves with a
    /// site's token, and revoking a device drops it at once. An account of its own, not
    /// the collector's: the broker ties client ids to user names, so a second connection
    /// as the collector would take over its session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamic_security: Option<DynsecAccount>,
}

/// `[mqtt.dynamic_security]`: the plugin's admin account.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynsecAccount {
    /// Its user name.
    pub username: String,
    /// Its password.
    pub password: String,
}

impl fmt::Debug for DynsecAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynsecAccount")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttConfig")
            .field("url", &self.url)
            .field("embedded_port", &self.embedded_port)
            .field("prefix", &self.prefix)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .field("dynamic_security", &self.dynamic_security)
            .finish()
    }
}

/// `[http]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address the console and API listen on (`127.0.0.1:8790`; port 0 picks a free one).
    /// Every request but sign-in, `/healthz` and `/metrics` needs a session or a token.
    pub listen: String,
    /// PEM certificate chain: with `tls_key`, the console is served over HTTPS only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Host names (as in the browser's address bar, without port) the console answers
    /// to. Empty: on a loopback address, `localhost` and the loopback addresses only (so a
    /// web page elsewhere cannot reach it through DNS rebinding); on any other address,
    /// every host name.
    pub allowed_hosts: Vec<String>,
    /// Addresses of reverse proxies whose `X-Forwarded-For`, `X-Forwarded-Proto` and
    /// `X-Forwarded-Host` are believed. Empty: none are.
    pub trusted_proxies: Vec<String>,
    /// A console session ends after this long without use.
    pub session_idle: Dur,
    /// A console session ends this long after sign-in, used or not.
    pub session_max: Dur,
}

/// `[cli]`: the client commands' own settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CliConfig {
    /// File holding the API token the client commands send (`VIGIA_TOKEN` overrides it;
    /// absent: the file `vigia-collector login` writes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// PEM file with the CA that signed the console's certificate, when it is not one
    /// the public roots know (a site's own CA, a self-signed certificate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            store: StoreConfig::default(),
            mqtt: MqttConfig::default(),
            http: HttpConfig::default(),
            workflow: WorkflowConfig::default(),
            cli: CliConfig::default(),
            notify: crate::notify::NotifyConfig::default(),
            retention: crate::retention::RetentionConfig::default(),
            enrolment: EnrolmentConfig::default(),
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            url: None,
            embedded_port: DEFAULT_EMBEDDED_PORT,
            prefix: vigia_protocol::DEFAULT_PREFIX.to_string(),
            client_id: DEFAULT_CLIENT_ID.to_string(),
            username: None,
            password: None,
            ca_file: None,
            dynamic_security: None,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_HTTP_LISTEN.to_string(),
            tls_cert: None,
            tls_key: None,
            allowed_hosts: Vec::new(),
            trusted_proxies: Vec::new(),
            session_idle: Dur(2 * crate::workflow::HOUR),
            session_max: Dur(12 * crate::workflow::HOUR),
        }
    }
}

#[cfg(unix)]
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // The owner of /proc/self is the process's effective uid (Linux); elsewhere fall back
    // to the environment.
    std::fs::metadata("/proc/self").map_or_else(
        |_| std::env::var_os("USER").is_some_and(|u| u == "root"),
        |m| m.uid() == 0,
    )
}

#[cfg(not(unix))]
fn is_root() -> bool {
    false
}

/// `/var/lib/vigia-collector` for root, else `$XDG_STATE_HOME/vigia-collector` or
/// `~/.local/state/vigia-collector`, else `./vigia-collector-data`.
fn default_data_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/vigia-collector");
    }
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").filter(|s| !s.is_empty()) {
        return PathBuf::from(state).join("vigia-collector");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|s| !s.is_empty()) {
        return PathBuf::from(home).join(".local/state/vigia-collector");
    }
    PathBuf::from("vigia-collector-data")
}

/// A configuration error: which file (if any), which field, what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped fields.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message (names the field and the line).
        message: String,
    },
    /// A field has a value that cannot work.
    #[error("{}field `{field}`: {reason}", file_prefix(.path))]
    Invalid {
        /// The file, when the config came from one.
        path: Option<PathBuf>,
        /// The dotted field name (`mqtt.prefix`).
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

fn file_prefix(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!("config file {}: ", p.display()),
        None => "config ".to_string(),
    }
}

/// Where the broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerTarget {
    /// Start the embedded broker on 127.0.0.1 at this port (0: pick one).
    Embedded {
        /// The port.
        port: u16,
    },
    /// Connect to an external broker.
    External {
        /// `true` for `mqtts://`.
        tls: bool,
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
}

/// The console's validated HTTP settings.
#[derive(Clone)]
pub struct WebSettings {
    /// TLS, when a certificate and key are configured.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Host names the console answers to; empty: any.
    pub allowed_hosts: Vec<String>,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// Session lifetimes.
    pub session: SessionLimits,
}

impl fmt::Debug for WebSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSettings")
            .field("tls", &self.tls.is_some())
            .field("allowed_hosts", &self.allowed_hosts)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("session", &self.session)
            .finish()
    }
}

/// Validated settings: what [`crate::start`] runs on.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Store directory.
    pub data_dir: PathBuf,
    /// How the store is opened.
    pub store: StoreOptions,
    /// Broker to use.
    pub broker: BrokerTarget,
    /// Topics under the configured prefix.
    pub topics: Topics,
    /// MQTT client id.
    pub client_id: String,
    /// Username and password.
    pub credentials: Option<(String, String)>,
    /// CA certificate (PEM bytes), read at validation time.
    pub ca_pem: Option<Vec<u8>>,
    /// HTTP listen address.
    pub http_listen: SocketAddr,
    /// How the console is served and who it trusts.
    pub web: WebSettings,
    /// The validated workflow policy and triage rules.
    pub policy: Policy,
    /// Notification channels and routes (checked).
    pub notify: Arc<crate::notify::NotifyConfig>,
    /// Retention (checked).
    pub retention: crate::retention::RetentionConfig,
    /// The broker's dynamic-security plugin's admin account, when it has the plugin.
    pub dynamic_security: Option<(String, String)>,
    /// Serials approved without an admin.
    pub known_serials: Arc<Vec<String>>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg = Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        cfg.resolve_relative(path.parent().unwrap_or(Path::new("")));
        cfg.validate().map_err(|e| match e {
            ConfigError::Invalid { field, reason, .. } => ConfigError::Invalid {
                path: Some(path.to_path_buf()),
                field,
                reason,
            },
            other => other,
        })?;
        Ok(cfg)
    }

    /// Makes the relative paths (`data_dir`, `mqtt.ca_file`, `workflow.rules`) relative to
    /// `dir`, the config file's directory, as the agent does: a file means the same thing
    /// whatever the working directory.
    pub fn resolve_relative(&mut self, dir: &Path) {
        let fix = |p: &mut PathBuf| *p = relative_to(dir, p);
        fix(&mut self.data_dir);
        for p in [
            &mut self.mqtt.ca_file,
            &mut self.workflow.rules,
            &mut self.http.tls_cert,
            &mut self.http.tls_key,
            &mut self.cli.token_file,
            &mut self.cli.ca_file,
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
        if let Some(e) = &mut self.notify.email {
            fix(&mut e.ca_file);
        }
        for w in &mut self.notify.webhook {
            if let Some(p) = &mut w.ca_file {
                fix(p);
            }
        }
    }

    /// Parses TOML text (no validation beyond the shape).
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    /// The default configuration as commented TOML that parses back to the default.
    pub fn default_toml() -> String {
        let body = toml::to_string_pretty(&Self::default())
            .unwrap_or_else(|e| format!("# cannot render the default config: {e}\n"));
        format!(
            "# vigia-collector configuration. Every field is optional; these are the defaults.\n\
             # Relative paths are relative to this file.\n\
             # Optional [mqtt] fields not shown: url = \"mqtt://broker:1883\" (absent: embedded\n\
             # broker), username, password, ca_file (PEM, required for mqtts://).\n\
             # Optional [workflow] field not shown: rules = \"/etc/vigia/rules.toml\" (triage\n\
             # rules; absent: the built-in ones, which `vigia-collector print-rules` prints).\n\
             # Optional [http] fields not shown: tls_cert, tls_key (PEM files: serve HTTPS).\n\
             # Optional [cli] fields not shown: token_file (the API token the client commands\n\
             # send; absent: VIGIA_TOKEN, else the file `vigia-collector login` writes),\n\
             # ca_file (PEM: the CA of the console's certificate, for https).\n\n{body}"
        )
    }

    /// Checks every field and builds the runtime settings.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let invalid = |field: &'static str, reason: String| ConfigError::Invalid {
            path: None,
            field,
            reason,
        };
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty".into()));
        }
        if !(1..=65536).contains(&self.store.cache_mb) {
            return Err(invalid(
                "store.cache_mb",
                format!("{} is not between 1 and 65536", self.store.cache_mb),
            ));
        }
        let r = &self.retention;
        if r.interval.0 < crate::workflow::SECOND {
            return Err(invalid(
                "retention.interval",
                format!("{} is shorter than 1s", r.interval),
            ));
        }
        if r.incidents_after.0 > 0 && r.incidents_after < self.workflow.reopen_window {
            return Err(invalid(
                "retention.incidents_after",
                format!(
                    "{} is shorter than [workflow] reopen_window ({}): a fault could not \
                     reopen an incident already archived",
                    r.incidents_after, self.workflow.reopen_window
                ),
            ));
        }
        let topics = Topics::new(&self.mqtt.prefix)
            .map_err(|e| invalid("mqtt.prefix", format!("{:?}: {e}", self.mqtt.prefix)))?;
        let id = &self.mqtt.client_id;
        if id.is_empty() || id.len() > 64 || id.contains(['+', '#', '/', '\0']) {
            return Err(invalid(
                "mqtt.client_id",
                format!("{id:?}: must be 1-64 bytes without '+', '#', '/'"),
            ));
        }
        let broker = match &self.mqtt.url {
            None => BrokerTarget::Embedded {
                port: self.mqtt.embedded_port,
            },
            Some(url) => parse_broker_url(url).map_err(|r| invalid("mqtt.url", r))?,
        };
        let credentials = match (&self.mqtt.username, &self.mqtt.password) {
            (Some(u), p) => Some((u.clone(), p.clone().unwrap_or_default())),
            (None, Some(_)) => {
                return Err(invalid(
                    "mqtt.password",
                    "is set but mqtt.username is not".into(),
                ))
            }
            (None, None) => None,
        };
        if let Some(admin) = &self.mqtt.dynamic_security {
            if admin.username.is_empty() || Some(&admin.username) == self.mqtt.username.as_ref() {
                return Err(invalid(
                    "mqtt.dynamic_security.username",
                    "must name the plugin's admin account, not the collector's".into(),
                ));
            }
            if !matches!(broker, BrokerTarget::External { .. }) {
                return Err(invalid(
                    "mqtt.dynamic_security",
                    "needs an external Mosquitto (set mqtt.url); the embedded broker has no \
                     accounts"
                        .into(),
                ));
            }
            if credentials.is_none() {
                return Err(invalid(
                    "mqtt.dynamic_security",
                    "needs mqtt.username and mqtt.password: the collector's own account, \
                     which the plugin's admin creates at start"
                        .into(),
                ));
            }
        }
        for s in &self.enrolment.known_serials {
            if s.trim().is_empty() || s.len() > 64 || s.chars().any(char::is_control) {
                return Err(invalid(
                    "enrolment.known_serials",
                    format!("{s:?} is not a serial (1-64 printable characters)"),
                ));
            }
        }
        let ca_pem = match &self.mqtt.ca_file {
            Some(p) => Some(std::fs::read(p).map_err(|e| {
                invalid("mqtt.ca_file", format!("cannot read {}: {e}", p.display()))
            })?),
            None => None,
        };
        if matches!(broker, BrokerTarget::External { tls: true, .. }) && ca_pem.is_none() {
            return Err(invalid(
                "mqtt.ca_file",
                "is required for an mqtts:// url (use /etc/ssl/certs/ca-certificates.crt \
                 for the system roots)"
                    .into(),
            ));
        }
        let http_listen: SocketAddr = self.http.listen.parse().map_err(|e| {
            invalid(
                "http.listen",
                format!(
                    "{:?} is not an address like 127.0.0.1:8790: {e}",
                    self.http.listen
                ),
            )
        })?;
        let web = self
            .http
            .web(&http_listen)
            .map_err(|(f, r)| invalid(f, r))?;
        let rules = match &self.workflow.rules {
            None => TriageRules::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    invalid(
                        "workflow.rules",
                        format!("cannot read {}: {e}", p.display()),
                    )
                })?;
                RulesConfig::parse(&text, &p.display().to_string())
                    .map_err(|e| invalid("workflow.rules", e.to_string()))?
            }
        };
        let policy = Policy::new(self.workflow.policy_config(), rules, "config")
            .map_err(|e| invalid("workflow", e.to_string()))?;
        crate::notify::validate(&self.notify).map_err(|(field, reason)| invalid(field, reason))?;
        if let Some(e) = &self.notify.email {
            crate::notify::channel::Mailer::new(e)
                .map_err(|reason| invalid("notify.email.ca_file", reason))?;
        }
        for w in &self.notify.webhook {
            if let Some(p) = &w.ca_file {
                std::fs::read(p).map_err(|e| {
                    invalid(
                        "notify.webhook.ca_file",
                        format!("cannot read {}: {e}", p.display()),
                    )
                })?;
            }
        }
        Ok(Settings {
            dynamic_security: self
                .mqtt
                .dynamic_security
                .as_ref()
                .map(|a| (a.username.clone(), a.password.clone())),
            known_serials: Arc::new(self.enrolment.known_serials.clone()),
            policy,
            notify: Arc::new(self.notify.clone()),
            retention: self.retention,
            data_dir: self.data_dir.clone(),
            store: StoreOptions {
                cache_bytes: self.store.cache_mb * 1024 * 1024,
            },
            broker,
            topics,
            client_id: match &self.mqtt.username {
                Some(u) if id == DEFAULT_CLIENT_ID => u.clone(),
                _ => id.clone(),
            },
            credentials,
            ca_pem,
            http_listen,
            web,
        })
    }
}

impl HttpConfig {
    fn web(&self, listen: &SocketAddr) -> Result<WebSettings, (&'static str, String)> {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(Arc::new(
                crate::http::tls::server_config(cert, key).map_err(|e| ("http.tls_cert", e))?,
            )),
            (Some(_), None) => {
                return Err(("http.tls_key", "is required with http.tls_cert".into()))
            }
            (None, Some(_)) => {
                return Err(("http.tls_cert", "is required with http.tls_key".into()))
            }
        };
        let trusted_proxies = self
            .trusted_proxies
            .iter()
            .map(|p| {
                p.trim().parse::<IpAddr>().map_err(|e| {
                    (
                        "http.trusted_proxies",
                        format!("{p:?} is not an IP address: {e}"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut allowed_hosts: Vec<String> = self
            .allowed_hosts
            .iter()
            .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
            .collect();
        if let Some(bad) = allowed_hosts
            .iter()
            .find(|h| h.is_empty() || h.contains([':', '/']) && !h.starts_with('['))
        {
            return Err((
                "http.allowed_hosts",
                format!("{bad:?}: give host names without scheme or port"),
            ));
        }
        if allowed_hosts.is_empty() && listen.ip().is_loopback() {
            allowed_hosts = ["localhost", "127.0.0.1", "[::1]"]
                .map(String::from)
                .to_vec();
        }
        for (field, d) in [
            ("http.session_idle", self.session_idle),
            ("http.session_max", self.session_max),
        ] {
            if d.ms() < crate::workflow::MINUTE {
                return Err((field, format!("{d} is too short (at least 1m)")));
            }
        }
        Ok(WebSettings {
            tls,
            allowed_hosts,
            trusted_proxies,
            session: SessionLimits {
                idle: self.session_idle,
                max: self.session_max,
            },
        })
    }
}

/// The broker a `[mqtt] url` names, by the protocol crate's one URL parser.
fn parse_broker_url(url: &str) -> Result<BrokerTarget, String> {
    let b = BrokerUrl::parse(url)?;
    Ok(BrokerTarget::External {
        tls: b.tls,
        host: b.host,
        port: b.port,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn default_config_prints_and_parses_back() {
        let text = Config::default_toml();
        let back = Config::parse(&text).unwrap();
        assert_eq!(back, Config::default());
        assert!(back.validate().is_ok());
    }

    #[test]
    fn the_store_cache_is_set_in_mib_and_bounded() {
        assert_eq!(
            Config::default().validate().unwrap().store.cache_bytes,
            64 * 1024 * 1024
        );
        let c = Config::parse("[store]\ncache_mb = 16\n").unwrap();
        assert_eq!(c.validate().unwrap().store.cache_bytes, 16 * 1024 * 1024);
        let err = Config::parse("[store]\ncache_mb = 0\n")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("store.cache_mb"), "{err}");
    }

    #[test]
    fn retention_is_checked_against_the_reopen_window() {
        let c = Config::parse("[retention]\nevents_after = \"30d\"\nincidents_after = \"0s\"\n")
            .unwrap();
        let r = c.validate().unwrap().retention;
        assert_eq!(
            (r.events_after.0, r.incidents_after.0),
            (30 * crate::workflow::DAY, 0)
        );
        let err = Config::parse("[retention]\nincidents_after = \"1h\"\n")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("retention.incidents_after"), "{err}");
        let err = Config::parse("[retention]\ninterval = \"10ms\"\n")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("retention.interval"), "{err}");
        assert!(Config::parse("[retention]\nkeep = 1\n").is_err());
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn the_client_id_is_the_account_unless_set_apart() {
        let mut c =
            Config::parse("[mqtt]\nurl = \"mqtt://b:1883\"\nusername = \"vigia-collector-2\"\n")
                .unwrap();
        assert_eq!(c.validate().unwrap().client_id, "vigia-collector-2");
        c.mqtt.client_id = "explicit".into();
        assert_eq!(c.validate().unwrap().client_id, "explicit");
        assert_eq!(
            Config::default().validate().unwrap().client_id,
            DEFAULT_CLIENT_ID
        );
    }

    #[test]
    fn unknown_field_is_refused_and_named() {
        let err = Config::parse("[mqtt]\nprefx = \"a\"\n").unwrap_err();
        assert!(err.contains("prefx"), "{err}");
    }

    #[test]
    fn load_errors_name_the_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("collector.toml");
        std::fs::write(&path, "[http]\nlisten = \"nope\"\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("collector.toml"), "{err}");
        assert!(err.contains("http.listen"), "{err}");

        std::fs::write(&path, "[mqtt]\nembedded_port = \"x\"\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("collector.toml") && err.contains("embedded_port"),
            "{err}"
        );

        let missing = dir.path().join("missing.toml");
        let err = Config::load(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.toml"), "{err}");
    }

    #[test]
    fn relative_paths_are_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/rules.toml"), "").unwrap();
        let path = dir.path().join("etc/collector.toml");
        std::fs::write(
            &path,
            "data_dir = \"../data\"\n[workflow]\nrules = \"rules.toml\"\n",
        )
        .unwrap();
        // Loaded from another working directory, the rules file is still found.
        let cfg = Config::load(&path).unwrap();
        assert_eq!(cfg.data_dir, dir.path().join("etc/../data"));
        assert_eq!(cfg.workflow.rules, Some(dir.path().join("etc/rules.toml")));
        let mut abs = Config {
            data_dir: PathBuf::from("/var/lib/vigia-collector"),
            ..Config::default()
        };
        abs.resolve_relative(dir.path());
        assert_eq!(abs.data_dir, PathBuf::from("/var/lib/vigia-collector"));
    }

    #[test]
    fn broker_urls() {
        assert_eq!(
            parse_broker_url("mqtt://broker.example:1884"),
            Ok(BrokerTarget::External {
                tls: false,
                host: "broker.example".into(),
                port: 1884
            })
        );
        assert_eq!(
            parse_broker_url("mqtts://b"),
            Ok(BrokerTarget::External {
                tls: true,
                host: "b".into(),
                port: 8883
            })
        );
        assert_eq!(
            parse_broker_url("tcp://[::1]:1883"),
            Ok(BrokerTarget::External {
                tls: false,
                host: "::1".into(),
                port: 1883
            })
        );
        assert!(parse_broker_url("http://x").is_err());
        assert!(parse_broker_url("mqtt://u:p@x").is_err());
        assert!(parse_broker_url("x:1883").is_err());
        assert!(parse_broker_url("mqtt://:1883").is_err());
        // One parser for both programs: a fragment is refused here as in the agent.
        assert!(parse_broker_url("mqtt://x#frag").is_err());
    }

    #[test]
    fn validation_catches_bad_values() {
        let mut c = Config::default();
        c.mqtt.prefix = "a/#".into();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("mqtt.prefix"));
        let mut c = Config::default();
        c.mqtt.url = Some("mqtts://b".into());
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("mqtt.ca_file"));
        let mut c = Config::default();
        c.mqtt.password = Some("x".into());
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("mqtt.password"));
        let mut c = Config::default();
        c.http.listen = "127.0.0.1:0".into();
        assert_eq!(c.validate().unwrap().http_listen.port(), 0);
    }
}
