//! Broker accounts through Mosquitto's dynamic-security plugin: created, changed and
//! deleted while the broker runs, with no password file to rewrite and no reload, and a
//! deleted account's open connection dropped at once.
//!
//! The plugin is driven by JSON commands published to `$CONTROL/dynamic-security/v1`;
//! it answers the sender alone on `.../response`. Each call here opens its own short
//! connection with the plugin's admin account (the one `mosquitto_ctrl dynsec init`
//! made), waits for the subscription, sends one message with all its commands and waits
//! for their answers: approvals and revocations are rare, and a connection of their own
//! keeps them out of ingest's manual-ack stream. The admin is not the collector's
//! account: the broker ties client ids to user names, so a second connection as the
//! collector would take over ingest's session. One call at a time.
//!
//! Mosquitto 2.0's plugin has no `%u` substitution in its ACLs, so every account gets a
//! role of its own with its topics spelled out: a device `vigia-device-<id>` (write its
//! `up/<id>/#`, subscribe its `down/<id>/#` and the collector's status), a site's
//! enrolment account `vigia-enrol-<site>` (write `enrol/<site>/+/request`, subscribe
//! `enrol/<site>/+/reply`). At start the collector makes its own account (or brings it
//! to the config's password) with the role `vigia-collector`.
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;
use tracing::debug;
use vigia_protocol::{DeviceId, Topics};

const CONTROL: &str = "$CONTROL/dynamic-security/v1";
const RESPONSE: &str = "$CONTROL/dynamic-security/v1/response";
/// How long one call may take, connection included.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call to the plugin failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DynsecError {
    /// The broker could not be reached, refused the account, or did not answer in time.
    #[error("the broker's dynamic-security plugin did not answer: {0}")]
    Broker(String),
    /// The plugin refused a command.
    #[error("the broker refused {command}: {error}")]
    Refused {
        /// The command.
        command: String,
        /// The plugin's words.
        error: String,
    },
}

impl DynsecError {
    /// Whether the plugin said the thing already exists.
    pub fn exists(&self) -> bool {
        matches!(self, Self::Refused { error, .. } if error.contains("already exists"))
    }
}

/// Where the broker is and who the collector is there.
#[derive(Clone)]
pub struct DynsecConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// CA (PEM) for TLS, or plain TCP.
    pub tls_ca: Option<Vec<u8>>,
    /// The plugin's admin account.
    pub credentials: (String, String),
    /// Topic names.
    pub topics: Topics,
}

/// The plugin's client.
pub struct Dynsec {
    cfg: DynsecConfig,
    one_at_a_time: Mutex<()>,
}

#[derive(Debug, Deserialize)]
struct Responses {
    responses: Vec<Response>,
}

#[derive(Debug, Deserialize)]
struct Response {
    command: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Value,
}

/// The largest message sent to the plugin: well under the production broker's
/// `max_packet_size` (32 KiB), the topic and the MQTT header included.
const MAX_MESSAGE: usize = 24 * 1024;
/// Names asked for per list command (the answer stays a few kilobytes per hundred).
const LIST_PAGE: usize = 500;
/// The largest answer taken (a list page, or many results).
const MAX_ANSWER: usize = 1 << 20;

fn acl(acltype: &str, topic: &str) -> Value {
    json!({ "acltype": acltype, "topic": topic, "allow": true, "priority": 0 })
}

/// The role of a device's account.
pub fn device_role(id: &DeviceId) -> String {
    device_role_of(id.as_str())
}

fn device_role_of(account: &str) -> String {
    format!("vigia-device-{account}")
}

/// What a device's role allows: write its `up/<id>/#`, subscribe its `down/<id>/#` and
/// the collector's status.
fn device_acls(topics: &Topics, id: &DeviceId) -> Vec<Value> {
    let p = topics.prefix();
    vec![
        acl("publishClientSend", &format!("{p}/up/{id}/#")),
        acl("subscribePattern", &format!("{p}/down/{id}/#")),
        acl("subscribePattern", topics.collector_status().as_str()),
    ]
}

/// What [`import_passwd`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Imported {
    /// Device accounts added, with their own role.
    pub devices: Vec<String>,
    /// Accounts left out, and why.
    pub skipped: Vec<(String, String)>,
}

/// Moves the accounts of a Mosquitto password file into the plugin's saved state (its
/// `dynamic-security.json`, edited while the broker does not run it): every device keeps
/// its password, since Mosquitto 2's `$7$` lines and the plugin's clients hold the same
/// PBKDF2-SHA512 hash, salt and iteration count, and gets its device role. Accounts in
/// `skip` (the collector's, the ACL's users: they get their own accounts), names the
/// plugin already has, names that are no device id, and hashes of another kind (older
/// `$6$` lines: give those devices new passwords) are left out and reported.
pub fn import_passwd(
    state: &mut Value,
    passwd: &str,
    topics: &Topics,
    skip: &std::collections::BTreeSet<String>,
) -> Result<Imported, String> {
    let mut have: std::collections::BTreeSet<String> = state["clients"]
        .as_array()
        .ok_or("the plugin's state has no \"clients\" list")?
        .iter()
        .filter_map(|c| c["username"].as_str().map(str::to_string))
        .collect();
    let roles: std::collections::BTreeSet<String> = state["roles"]
        .as_array()
        .ok_or("the plugin's state has no \"roles\" list")?
        .iter()
        .filter_map(|r| r["rolename"].as_str().map(str::to_string))
        .collect();
    let mut out = Imported::default();
    let (mut clients, mut new_roles) = (Vec::new(), Vec::new());
    for line in passwd
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let Some((user, hash)) = line.split_once(':') else {
            continue;
        };
        let why = if skip.contains(user) {
            Some("a reserved account (it gets its own in the plugin)")
        } else if have.contains(user) {
            Some("the plugin has this account already")
        } else if user.starts_with("vigia-") || DeviceId::new(user).is_err() {
            Some("not a device id")
        } else {
            None
        };
        if let Some(why) = why {
            out.skipped.push((user.to_string(), why.to_string()));
            continue;
        }
        let parts: Vec<&str> = hash.split('$').collect();
        let (iterations, salt, pbkdf2) = match parts.as_slice() {
            ["", "7", it, salt, h] => match it.parse::<u64>() {
                Ok(it) => (it, *salt, *h),
                Err(_) => {
                    out.skipped
                        .push((user.to_string(), "an unreadable $7$ hash".into()));
                    continue;
                }
            },
            _ => {
                out.skipped.push((
                    user.to_string(),
                    "not a Mosquitto 2 ($7$) hash: give it a new password (device enroll --rotate)"
                        .into(),
                ));
                continue;
            }
        };
        let Ok(id) = DeviceId::new(user) else {
            continue;
        };
        let role = device_role(&id);
        if !roles.contains(&role) {
            new_roles.push(json!({"rolename": role, "acls": device_acls(topics, &id)}));
        }
        clients.push(json!({
            "username": user, "clientid": user, "password": pbkdf2, "salt": salt,
            "iterations": iterations, "roles": [{"rolename": role}],
        }));
        have.insert(user.to_string());
        out.devices.push(user.to_string());
    }
    if let Some(c) = state["clients"].as_array_mut() {
        c.extend(clients);
    }
    if let Some(r) = state["roles"].as_array_mut() {
        r.extend(new_roles);
    }
    Ok(out)
}

/// The role and the account of a device, as plugin commands.
fn device_commands(topics: &Topics, id: &DeviceId, password: &str) -> [Value; 2] {
    let role = device_role(id);
    let acls = device_acls(topics, id);
    [
        json!({"command": "createRole", "rolename": role, "acls": acls}),
        json!({
            "command": "createClient", "username": id.as_str(), "password": password,
            "clientid": id.as_str(), "roles": [{"rolename": role}],
        }),
    ]
}

/// The broker's accounts, as the plugin lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounts {
    /// Accounts with their device role (`vigia-device-<name>`): devices.
    pub devices: std::collections::BTreeSet<String>,
    /// Every other account (the plugin's admin, the collector, the sites' enrolment
    /// accounts): names no device may take.
    pub others: std::collections::BTreeSet<String>,
}

impl Dynsec {
    /// A client of the plugin behind `cfg`.
    pub fn new(cfg: DynsecConfig) -> Self {
        Self {
            cfg,
            one_at_a_time: Mutex::new(()),
        }
    }

    /// Sends `commands` in one message; one result per command, in order.
    async fn call(
        &self,
        commands: Vec<Value>,
    ) -> Result<Vec<Result<(), DynsecError>>, DynsecError> {
        Ok(self
            .call_data(commands)
            .await?
            .into_iter()
            .map(|r| r.map(drop))
            .collect())
    }

    /// Sends `commands` in one message; one result per command, in order, with the
    /// data the plugin answered.
    async fn call_data(
        &self,
        commands: Vec<Value>,
    ) -> Result<Vec<Result<Value, DynsecError>>, DynsecError> {
        let _one = self.one_at_a_time.lock().await;
        tokio::time::timeout(CALL_TIMEOUT, self.exchange(&commands))
            .await
            .map_err(|_| DynsecError::Broker(format!("no answer within {CALL_TIMEOUT:?}")))?
    }

    /// Sends any number of commands, in as many messages as the broker's packet limit
    /// needs, one after the other; one result per command, in order. Stops at the first
    /// message not answered; the error says how many commands were answered before it.
    async fn call_many(
        &self,
        commands: Vec<Value>,
    ) -> Result<Vec<Result<(), DynsecError>>, DynsecError> {
        let total = commands.len();
        let mut batches: Vec<Vec<Value>> = vec![Vec::new()];
        let mut size = 0;
        for c in commands {
            let len = c.to_string().len() + 1;
            if size + len > MAX_MESSAGE && batches.last().is_some_and(|b| !b.is_empty()) {
                batches.push(Vec::new());
                size = 0;
            }
            size += len;
            if let Some(b) = batches.last_mut() {
                b.push(c);
            }
        }
        let mut results = Vec::with_capacity(total);
        for batch in batches.into_iter().filter(|b| !b.is_empty()) {
            let answered = results.len();
            let r = self.call(batch).await.map_err(|e| {
                DynsecError::Broker(format!("{e} ({answered} of {total} commands answered)"))
            })?;
            results.extend(r);
        }
        Ok(results)
    }

    /// Every name a list command (`listClients`, `listRoles`) gives, a page at a time.
    async fn list(&self, command: &str, key: &str) -> Result<Vec<String>, DynsecError> {
        let mut names = Vec::new();
        loop {
            let page = self
                .call_data(vec![
                    json!({"command": command, "verbose": false, "count": LIST_PAGE, "offset": names.len()}),
                ])
                .await?
                .into_iter()
                .next()
                .unwrap_or_else(|| Err(DynsecError::Broker("no answer".into())))?;
            let got: Vec<String> = page[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let total = page["totalCount"].as_u64().unwrap_or(0) as usize;
            let empty = got.is_empty();
            names.extend(got);
            if empty || names.len() >= total {
                return Ok(names);
            }
        }
    }

    /// The broker's accounts: devices (those with their device role) and the others.
    pub async fn accounts(&self) -> Result<Accounts, DynsecError> {
        let clients = self.list("listClients", "clients").await?;
        let roles: std::collections::BTreeSet<String> =
            self.list("listRoles", "roles").await?.into_iter().collect();
        let mut a = Accounts::default();
        for c in clients {
            if roles.contains(&device_role_of(&c)) {
                a.devices.insert(c);
            } else {
                a.others.insert(c);
            }
        }
        Ok(a)
    }

    /// Creates many devices' accounts, each with its own role, in as few messages as the
    /// broker takes. One result per device: an account that already exists is an error
    /// of its device (a role left over from an earlier account is reused).
    pub async fn create_devices(
        &self,
        devices: &[(DeviceId, String)],
    ) -> Result<Vec<Result<(), DynsecError>>, DynsecError> {
        let commands = devices
            .iter()
            .flat_map(|(id, pw)| device_commands(&self.cfg.topics, id, pw))
            .collect();
        let results = self.call_many(commands).await?;
        Ok(results
            .chunks(2)
            .map(|pair| match pair {
                [role, client] => {
                    match role {
                        Err(e) if !e.exists() => return Err(e.clone()),
                        _ => {}
                    }
                    client.clone()
                }
                _ => Err(DynsecError::Broker("an answer is missing".into())),
            })
            .collect())
    }

    /// Gives existing device accounts new passwords; one result per device.
    pub async fn set_passwords(
        &self,
        devices: &[(DeviceId, String)],
    ) -> Result<Vec<Result<(), DynsecError>>, DynsecError> {
        self.call_many(
            devices
                .iter()
                .map(|(id, pw)| {
                    json!({"command": "setClientPassword", "username": id.as_str(), "password": pw})
                })
                .collect(),
        )
        .await
    }

    /// Deletes many devices' accounts (their connections are dropped at once) and their
    /// roles; an account already gone is not an error.
    pub async fn delete_devices(&self, ids: &[DeviceId]) -> Result<(), DynsecError> {
        let commands = ids
            .iter()
            .flat_map(|id| {
                [
                    json!({"command": "deleteClient", "username": id.as_str()}),
                    json!({"command": "deleteRole", "rolename": device_role(id)}),
                ]
            })
            .collect();
        for r in self.call_many(commands).await? {
            match r {
                Err(DynsecError::Refused { error, .. }) if error.contains("not found") => {}
                other => other?,
            }
        }
        Ok(())
    }

    async fn exchange(
        &self,
        commands: &[Value],
    ) -> Result<Vec<Result<Value, DynsecError>>, DynsecError> {
        let suffix = crate::auth::secret::random_bytes::<6>()
            .map_err(|e| DynsecError::Broker(e.to_string()))?;
        let id = crate::auth::secret::hex(&suffix);
        let mut opts = MqttOptions::new(format!("vigia-ctl-{id}"), &self.cfg.host, self.cfg.port);
        opts.set_clean_session(true)
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(MAX_ANSWER, MAX_MESSAGE + 1024)
            .set_credentials(&self.cfg.credentials.0, &self.cfg.credentials.1);
        if let Some(ca) = &self.cfg.tls_ca {
            opts.set_transport(Transport::Tls(TlsConfiguration::Simple {
                ca: ca.clone(),
                alpn: None,
                client_auth: None,
            }));
        }
        let (client, mut events) = AsyncClient::new(opts, 8);
        let body = serde_json::to_vec(&json!({ "commands": commands }))
            .map_err(|e| DynsecError::Broker(e.to_string()))?;
        let answer = loop {
            let ev = events
                .poll()
                .await
                .map_err(|e| DynsecError::Broker(e.to_string()))?;
            match ev {
                Event::Incoming(Packet::ConnAck(_)) => client
                    .try_subscribe(RESPONSE, QoS::AtLeastOnce)
                    .map_err(|e| DynsecError::Broker(e.to_string()))?,
                Event::Incoming(Packet::SubAck(s)) => {
                    if s.return_codes
                        .iter()
                        .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                    {
                        return Err(DynsecError::Broker(format!(
                            "the account {:?} may not administer the dynamic-security \
                             plugin (run `mosquitto_ctrl dynsec init` with it)",
                            self.cfg.credentials.0
                        )));
                    }
                    client
                        .try_publish(CONTROL, QoS::AtLeastOnce, false, body.clone())
                        .map_err(|e| DynsecError::Broker(e.to_string()))?;
                }
                Event::Incoming(Packet::Publish(p)) if p.topic == RESPONSE => break p.payload,
                _ => {}
            }
        };
        let _ = client.try_disconnect();
        // Let the DISCONNECT go out; the connection is dropped either way.
        let _ = tokio::time::timeout(Duration::from_millis(200), events.poll()).await;
        let parsed: Responses = serde_json::from_slice(&answer)
            .map_err(|e| DynsecError::Broker(format!("unreadable answer: {e}")))?;
        if parsed.responses.len() != commands.len() {
            return Err(DynsecError::Broker(format!(
                "{} answers to {} commands",
                parsed.responses.len(),
                commands.len()
            )));
        }
        Ok(parsed
            .responses
            .into_iter()
            .map(|r| match r.error {
                None => Ok(r.data),
                Some(error) => Err(DynsecError::Refused {
                    command: r.command,
                    error,
                }),
            })
            .collect())
    }

    /// Runs commands that set up something which may already be there: "already
    /// exists" is fine, anything else is an error.
    async fn ensure(&self, commands: Vec<Value>) -> Result<(), DynsecError> {
        for r in self.call(commands).await? {
            match r {
                Err(e) if e.exists() => debug!(error = %e, "already there"),
                other => other?,
            }
        }
        Ok(())
    }

    /// Makes the collector's own account (user name, password) with client id
    /// `client_id` and the topics it needs, or brings an existing one to that password and
    /// role (at every start; the collector's config is the source of truth).
    pub async fn ensure_collector(
        &self,
        own: &(String, String),
        client_id: &str,
    ) -> Result<(), DynsecError> {
        let t = &self.cfg.topics;
        let p = t.prefix();
        let role = "vigia-collector";
        let mut cmds = vec![json!({"command": "createRole", "rolename": role})];
        for (kind, topic) in [
            ("subscribePattern", format!("{p}/up/#")),
            ("publishClientSend", format!("{p}/down/#")),
            ("subscribePattern", format!("{p}/svc/collector/#")),
            ("publishClientSend", format!("{p}/svc/collector/#")),
            ("subscribePattern", t.enrol_request_filter().to_string()),
            ("publishClientSend", format!("{p}/enrol/#")),
        ] {
            let mut a = acl(kind, &topic);
            a["command"] = json!("addRoleACL");
            a["rolename"] = json!(role);
            cmds.push(a);
        }
        cmds.push(json!({
            "command": "createClient", "username": own.0, "password": own.1,
            "clientid": client_id, "roles": [{"rolename": role}],
        }));
        self.ensure(cmds).await?;
        // Already there: the password and the client id of the config, whatever they were,
        // and the role unless it has it (Mosquitto 2.0 answers a second `addClientRole`
        // with "Internal error", so it is asked first).
        let got = self
            .call_data(vec![json!({"command": "getClient", "username": own.0})])
            .await?
            .into_iter()
            .next()
            .unwrap_or_else(|| Err(DynsecError::Broker("no answer".into())))?;
        let has_role = got["client"]["roles"]
            .as_array()
            .is_some_and(|roles| roles.iter().any(|r| r["rolename"] == role));
        let mut fix = vec![
            json!({"command": "setClientPassword", "username": own.0, "password": own.1}),
            json!({"command": "setClientId", "username": own.0, "clientid": client_id}),
        ];
        if !has_role {
            fix.push(json!({"command": "addClientRole", "username": own.0, "rolename": role}));
        }
        self.call(fix).await?.into_iter().try_for_each(|r| r)
    }

    /// Creates a device's account with its own role. Refused when the account exists.
    pub async fn create_device(&self, id: &DeviceId, password: &str) -> Result<(), DynsecError> {
        let [role, client] = device_commands(&self.cfg.topics, id, password);
        // The role first: an account that exists without its role could not publish.
        self.ensure(vec![role]).await?;
        self.call(vec![client])
            .await?
            .into_iter()
            .try_for_each(|r| r)
    }

    /// Deletes a device's account (its connection is dropped at once) and its role.
    /// Returns whether the account existed.
    pub async fn delete_device(&self, id: &DeviceId) -> Result<bool, DynsecError> {
        let mut r = self
            .call(vec![
                json!({"command": "deleteClient", "username": id.as_str()}),
                json!({"command": "deleteRole", "rolename": device_role(id)}),
            ])
            .await?
            .into_iter();
        let existed = match r.next() {
            Some(Ok(())) => true,
            Some(Err(DynsecError::Refused { error, .. })) if error.contains("not found") => false,
            Some(Err(e)) => return Err(e),
            None => false,
        };
        Ok(existed)
    }

    /// Creates a site's enrolment account with `secret` as its password, or gives the
    /// existing one that password (a rotated token).
    pub async fn set_enrol_account(&self, site: &str, secret: &str) -> Result<(), DynsecError> {
        let t = &self.cfg.topics;
        let user = vigia_protocol::enrol::enrol_user(site);
        let acls = vec![
            acl("publishClientSend", t.enrol_site_requests(site).as_str()),
            acl("subscribePattern", t.enrol_site_replies(site).as_str()),
        ];
        self.ensure(vec![
            json!({"command": "createRole", "rolename": user.as_str(), "acls": acls}),
        ])
        .await?;
        let r = self
            .call(vec![json!({
                "command": "createClient", "username": user.as_str(), "password": secret,
                "roles": [{"rolename": user.as_str()}],
            })])
            .await?;
        match r.into_iter().next() {
            Some(Err(e)) if e.exists() => self
                .call(vec![json!({
                    "command": "setClientPassword", "username": user.as_str(), "password": secret,
                })])
                .await?
                .into_iter()
                .try_for_each(|r| r),
            Some(r) => r,
            None => Ok(()),
        }
    }

    /// Deletes a site's enrolment account: its token stops working at once.
    pub async fn delete_enrol_account(&self, site: &str) -> Result<(), DynsecError> {
        let user = vigia_protocol::enrol::enrol_user(site);
        let r = self
            .call(vec![
                json!({"command": "deleteClient", "username": user.as_str()}),
                json!({"command": "deleteRole", "rolename": user.as_str()}),
            ])
            .await?;
        match r.into_iter().next() {
            Some(Err(DynsecError::Refused { error, .. })) if error.contains("not found") => Ok(()),
            Some(r) => r,
            None => Ok(()),
        }
    }
}
