//! Self-enrolment with approval: an agent installed with only the broker's address and
//! its site's enrolment token asks to join; an admin approves it in the console (or a
//! rule approves a known serial); the collector creates its broker account and sends it
//! its password sealed to the agent's own key. A revoked device's account is deleted,
//! which drops its connection at once.
//!
//! The flow, with the wire in `vigia_protocol::enrol`:
//! - `vigia-collector enrolment token --site S` (an admin, through the API) creates the
//!   site's broker account `vigia-enrol-S`, whose password is the token's secret; only
//!   the broker keeps it (hashed), the collector records that the site has a token.
//! - The agent, connected with that account, publishes an [`EnrolRequest`] on
//!   `enrol/S/<request>/request`; ingest stores it here ([`record_request`]) in its batch
//!   and answers `pending` on `.../reply` (retained, so an agent that was away finds the
//!   answer when it comes back). A request is one record per agent key, updated when the
//!   agent asks again; at most [`MAX_PENDING`] wait per site, so a leaked token cannot
//!   fill the store.
//! - Approval ([`Enrolment::approve`]) creates the device account through the broker's
//!   dynamic-security plugin ([`crate::dynsec`]), seals the password to the agent's key,
//!   and keeps only the sealed reply: the collector never stores a device password.
//! - Refusal answers `refused` with the reason; revocation deletes the account (and its
//!   connection) and answers `revoked`.
//!
//! Self-enrolment needs the plugin (`[mqtt.dynamic_security]`). Devices can also be
//! enrolled from a CSV (`crate::enroll`), into the plugin or a password file.
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use vigia_protocol::enrol::{seal, Credentials, EnrolReply, EnrolRequest, EnrolState};
use vigia_protocol::{encode, DeviceId, Millis, Topics, VERSION};

use crate::clock::Clock;
use crate::dynsec::{Dynsec, DynsecError};
use crate::outbox::Downlink;
use crate::store::{SharedStore, Store, StoreError};

/// Requests that may wait for a decision per site; more are dropped (and logged).
pub const MAX_PENDING: usize = 1000;

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Waiting for an admin.
    Pending,
    /// Its device account exists.
    Approved,
    /// Refused by an admin.
    Refused,
    /// Approved, then revoked.
    Revoked,
}

impl Decision {
    /// Its name, as the API and the CLI show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Refused => "refused",
            Self::Revoked => "revoked",
        }
    }
}

/// One agent's request to join, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolmentRecord {
    /// The request id (from the agent's key).
    pub request: String,
    /// The site whose token it used.
    pub site: String,
    /// The agent's public key (hex).
    pub key: String,
    /// The device id the agent will use.
    pub device: DeviceId,
    /// What the agent said about itself.
    pub hostname: String,
    /// Operating system.
    pub os: String,
    /// CPU architecture.
    pub arch: String,
    /// `vigia-agent` version.
    pub agent_version: String,
    /// DMI vendor, product and serial, where the agent could read them.
    #[serde(default)]
    pub vendor: Option<String>,
    /// DMI product name.
    #[serde(default)]
    pub product: Option<String>,
    /// DMI serial.
    #[serde(default)]
    pub serial: Option<String>,
    /// Tags from the agent's config.
    #[serde(default)]
    pub tags: Vec<String>,
    /// When it first asked.
    pub first_seen: Millis,
    /// When it last asked.
    pub last_seen: Millis,
    /// How many times it asked.
    pub asked: u64,
    /// The decision.
    pub decision: Decision,
    /// Who decided (an account, or `rule:known-serial`).
    #[serde(default)]
    pub decided_by: Option<String>,
    /// When.
    #[serde(default)]
    pub decided_at: Option<Millis>,
    /// A refusal's reason.
    #[serde(default)]
    pub reason: Option<String>,
    /// The reply sent (and re-sent when the agent asks again), sealed when approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
}

/// A site that has an enrolment token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteRecord {
    /// The site.
    pub site: String,
    /// Who made (or last rotated) its token.
    pub by: String,
    /// When.
    pub at: Millis,
}

/// A control character or a byte beyond the bound: device text is kept printable and
/// short before it reaches a page or a terminal.
fn printable(s: &str, max: usize) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).collect();
    if out.len() > max {
        let mut end = max;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

/// What ingest does after storing a request: the reply to publish (retained), and
/// whether a rule approves it.
#[derive(Debug)]
pub struct Seen {
    /// `(topic, payload)`.
    pub reply: Option<(String, Vec<u8>)>,
    /// The request id, when its serial is a known one and it is still pending.
    pub auto_approve: Option<String>,
}

fn reply_bytes(state: EnrolState, now: Millis) -> Option<Vec<u8>> {
    encode(&EnrolReply {
        v: VERSION,
        ts: now,
        state,
    })
    .ok()
}

/// Stores a request seen on `enrol/<site>/<request>/request` (blocking; in ingest's
/// batch). A request whose id is not its key's, or from a site without a token, is
/// dropped with a warning (the broker let it through, so it is ours to refuse).
pub fn record_request(
    store: &dyn Store,
    topics: &Topics,
    site: &str,
    request: &str,
    req: &EnrolRequest,
    known_serials: &[String],
    now: Millis,
) -> Result<Seen, StoreError> {
    let none = Seen {
        reply: None,
        auto_approve: None,
    };
    let Some(key) = seal::public_from_hex(&req.key) else {
        warn!(
            site,
            request, "enrolment request with a malformed key: dropped"
        );
        return Ok(none);
    };
    if seal::request_id_of(&key) != request {
        warn!(
            site,
            request, "enrolment request whose id is not its key's: dropped"
        );
        return Ok(none);
    }
    if !store.enrol_sites()?.iter().any(|s| s.site == site) {
        warn!(
            site,
            request, "enrolment request for a site without a token: dropped"
        );
        return Ok(none);
    }
    let topic = topics.enrol_reply(site, request).to_string();
    let rec = match store.enrolment(request)? {
        Some(mut r) => {
            r.last_seen = now;
            r.asked += 1;
            if r.decision == Decision::Pending {
                fill(&mut r, req);
            }
            r
        }
        None => {
            let pending = store
                .enrolments()?
                .iter()
                .filter(|r| r.site == site && r.decision == Decision::Pending)
                .count();
            if pending >= MAX_PENDING {
                warn!(
                    site,
                    request, pending, "too many enrolment requests waiting: dropped"
                );
                return Ok(none);
            }
            let mut r = EnrolmentRecord {
                request: request.to_string(),
                site: site.to_string(),
                key: req.key.to_string(),
                device: req.device.clone(),
                hostname: String::new(),
                os: String::new(),
                arch: String::new(),
                agent_version: String::new(),
                vendor: None,
                product: None,
                serial: None,
                tags: Vec::new(),
                first_seen: now,
                last_seen: now,
                asked: 1,
                decision: Decision::Pending,
                decided_by: None,
                decided_at: None,
                reason: None,
                reply: None,
            };
            fill(&mut r, req);
            info!(site, request, device = %r.device, hostname = %r.hostname, "enrolment requested");
            r
        }
    };
    let reply = match &rec.reply {
        Some(sent) => sent.clone().into_bytes(),
        None => reply_bytes(EnrolState::Pending, now).unwrap_or_default(),
    };
    let auto_approve = (rec.decision == Decision::Pending
        && rec
            .serial
            .as_ref()
            .is_some_and(|s| known_serials.iter().any(|k| k.eq_ignore_ascii_case(s))))
    .then(|| rec.request.clone());
    store.put_enrolment(&rec)?;
    Ok(Seen {
        reply: Some((topic, reply)),
        auto_approve,
    })
}

/// What the agent says about itself, taken while the request is pending.
fn fill(r: &mut EnrolmentRecord, req: &EnrolRequest) {
    r.device = req.device.clone();
    r.hostname = printable(&req.hostname, 64);
    r.os = printable(&req.os, 96);
    r.arch = printable(&req.arch, 16);
    r.agent_version = printable(&req.agent_version, 32);
    let opt = |v: &Option<heapless::String<64>>| {
        v.as_ref()
            .map(|s| printable(s, 64))
            .filter(|s| !s.is_empty())
    };
    r.vendor = opt(&req.dmi.vendor);
    r.product = opt(&req.dmi.product);
    r.serial = opt(&req.dmi.serial);
    r.tags = req.tags.iter().map(|t| printable(t, 32)).collect();
}

/// Why an enrolment action did not happen.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    /// No such request, site or device.
    #[error("{0}")]
    NotFound(String),
    /// The action does not fit the request's state, or the name is taken.
    #[error("{0}")]
    Conflict(String),
    /// The broker has an account with the device's id already (a reinstalled agent,
    /// whose new key made a new request): approve with `replace` to revoke it first.
    #[error("{0}")]
    AccountExists(String),
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// The broker's plugin failed.
    #[error(transparent)]
    Broker(#[from] DynsecError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Sealing failed, or a task died.
    #[error("{0}")]
    Internal(String),
}

/// The enrolment service: the store, the broker's plugin and the reply channel.
pub struct Enrolment {
    /// The store.
    pub store: SharedStore,
    /// The broker's dynamic-security plugin.
    pub dynsec: Dynsec,
    /// Publishes replies.
    pub downlink: Downlink,
    /// Topic names.
    pub topics: Topics,
    /// The collector's clock.
    pub clock: Arc<dyn Clock>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, EnrolError> + Send + 'static,
) -> Result<T, EnrolError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EnrolError::Internal(e.to_string()))?
}

/// Whether `id` may be a device account: not the broker's own names.
fn device_name_ok(id: &DeviceId) -> Result<(), EnrolError> {
    if id.as_str().starts_with("vigia-") {
        return Err(EnrolError::Invalid(format!(
            "{id:?}: names starting with \"vigia-\" are the broker's own accounts; \
             give the device another id in its agent config"
        )));
    }
    Ok(())
}

impl Enrolment {
    fn request(&self, request: &str) -> Result<EnrolmentRecord, EnrolError> {
        self.store
            .enrolment(request)?
            .ok_or_else(|| EnrolError::NotFound(format!("no enrolment request {request:?}")))
    }

    async fn decide(
        &self,
        mut rec: EnrolmentRecord,
        decision: Decision,
        state: EnrolState,
        by: &str,
        reason: Option<String>,
    ) -> Result<EnrolmentRecord, EnrolError> {
        let now = self.clock.now();
        let bytes = reply_bytes(state, now)
            .ok_or_else(|| EnrolError::Internal("cannot encode the reply".into()))?;
        rec.decision = decision;
        rec.decided_by = Some(by.to_string());
        rec.decided_at = Some(now);
        rec.reason = reason;
        rec.reply = Some(String::from_utf8_lossy(&bytes).into_owned());
        let (store, r) = (self.store.clone(), rec.clone());
        blocking(move || {
            store.put_enrolment(&r)?;
            store.flush()?;
            Ok(())
        })
        .await?;
        let topic = self.topics.enrol_reply(&rec.site, &rec.request);
        self.downlink.publish_retained(topic.as_str(), bytes).await;
        Ok(rec)
    }

    /// Approves a pending request: creates the device's broker account and sends its
    /// password sealed to the agent's key. Approving an approved request sends the same
    /// reply again. When the broker has an account with that id already (the agent was
    /// reinstalled, and its new key asked anew), the approval is refused unless
    /// `replace`: the old account is then revoked first (its connection dropped, its
    /// enrolment marked revoked).
    pub async fn approve(
        &self,
        request: &str,
        by: &str,
        replace: bool,
    ) -> Result<EnrolmentRecord, EnrolError> {
        let rec = self.request(request)?;
        match rec.decision {
            Decision::Pending => {}
            Decision::Approved => return Ok(rec),
            d => {
                return Err(EnrolError::Conflict(format!(
                    "the request is {}; the agent must ask again with a new key",
                    d.as_str()
                )))
            }
        }
        device_name_ok(&rec.device)?;
        let key = seal::public_from_hex(&rec.key)
            .ok_or_else(|| EnrolError::Internal("stored key is malformed".into()))?;
        let password =
            crate::auth::secret::random_token().map_err(|e| EnrolError::Internal(e.to_string()))?;
        let creds = Credentials {
            device: rec.device.clone(),
            password: heapless::String::try_from(password.as_str())
                .map_err(|_| EnrolError::Internal("password too long".into()))?,
        };
        let plain = serde_json::to_vec(&creds).map_err(|e| EnrolError::Internal(e.to_string()))?;
        let sealed = seal::seal(&key, &plain).map_err(|e| EnrolError::Internal(e.to_string()))?;
        let sealed = heapless::String::try_from(sealed.as_str())
            .map_err(|_| EnrolError::Internal("sealed reply too long".into()))?;
        match self.dynsec.create_device(&rec.device, &password).await {
            Ok(()) => {}
            Err(e) if e.exists() && replace => {
                self.revoke(&rec.device, by).await?;
                info!(request, device = %rec.device, by, "old account revoked for its replacement");
                self.dynsec.create_device(&rec.device, &password).await?;
            }
            Err(e) if e.exists() => {
                return Err(EnrolError::AccountExists(format!(
                    "the broker already has an account {:?} (a reinstalled agent asks with \
                     a new key): approve replacing it, which revokes the old one, or give \
                     this one another id",
                    rec.device.as_str()
                )))
            }
            Err(e) => return Err(e.into()),
        }
        let device = rec.device.clone();
        let rec = self
            .decide(
                rec,
                Decision::Approved,
                EnrolState::Approved { sealed },
                by,
                None,
            )
            .await?;
        info!(request, device = %device, by, "enrolment approved: broker account created");
        Ok(rec)
    }

    /// Refuses a pending request, with the reason the agent is told.
    pub async fn refuse(
        &self,
        request: &str,
        by: &str,
        reason: &str,
    ) -> Result<EnrolmentRecord, EnrolError> {
        let reason = reason.trim();
        if reason.is_empty() || reason.len() > 200 || reason.chars().any(char::is_control) {
            return Err(EnrolError::Invalid(
                "a refusal needs a reason of at most 200 characters, on one line".into(),
            ));
        }
        let rec = self.request(request)?;
        if rec.decision != Decision::Pending {
            return Err(EnrolError::Conflict(
                "only a pending request can be refused (revoke an approved device)".into(),
            ));
        }
        let state = EnrolState::Refused {
            reason: heapless::String::try_from(reason).unwrap_or_default(),
        };
        let rec = self
            .decide(rec, Decision::Refused, state, by, Some(reason.to_string()))
            .await?;
        info!(request, by, reason, "enrolment refused");
        Ok(rec)
    }

    /// Revokes a device: deletes its broker account (dropping its connection) and marks
    /// its enrolment revoked. Works for devices enrolled by hand or from a CSV too, as
    /// long as the plugin holds their account.
    pub async fn revoke(&self, device: &DeviceId, by: &str) -> Result<bool, EnrolError> {
        device_name_ok(device)?;
        let existed = self.dynsec.delete_device(device).await?;
        let (store, d) = (self.store.clone(), device.clone());
        let recs = blocking(move || {
            Ok(store
                .enrolments()?
                .into_iter()
                .filter(|r| r.device == d && r.decision == Decision::Approved)
                .collect::<Vec<_>>())
        })
        .await?;
        let found = existed || !recs.is_empty();
        for r in recs {
            self.decide(r, Decision::Revoked, EnrolState::Revoked, by, None)
                .await?;
        }
        // The plugin drops the connection without its Last Will: say offline here, or
        // the device would show online for ever.
        let (store, d, now) = (self.store.clone(), device.clone(), self.clock.now());
        blocking(move || {
            let online = store
                .device(&d)?
                .and_then(|r| r.status)
                .filter(|s| s.online);
            if let Some(st) = online {
                let offline = vigia_protocol::Status {
                    v: VERSION,
                    device: d,
                    instance: st.instance,
                    online: false,
                    boot: st.boot,
                    ts: st.ts,
                };
                store.record_status(&offline, now)?;
                store.flush()?;
            }
            Ok(())
        })
        .await?;
        if found {
            info!(device = %device, by, "device revoked: broker account deleted");
        }
        Ok(found)
    }

    /// Creates (or rotates) a site's enrolment token and returns it, once.
    pub async fn site_token(&self, site: &str, by: &str) -> Result<String, EnrolError> {
        if !vigia_protocol::enrol::site_ok(site) {
            return Err(EnrolError::Invalid(format!(
                "{site:?} is not a site name: 1 to 32 lowercase letters, digits and '-'"
            )));
        }
        let secret =
            crate::auth::secret::random_token().map_err(|e| EnrolError::Internal(e.to_string()))?;
        self.dynsec.set_enrol_account(site, &secret).await?;
        let rec = SiteRecord {
            site: site.to_string(),
            by: by.to_string(),
            at: self.clock.now(),
        };
        let store = self.store.clone();
        blocking(move || {
            store.put_enrol_site(&rec)?;
            store.flush()?;
            Ok(())
        })
        .await?;
        info!(site, by, "site enrolment token made");
        Ok(format!("{site}:{secret}"))
    }

    /// Withdraws a site's token: its account is deleted, so the token stops working.
    pub async fn remove_site(&self, site: &str, by: &str) -> Result<(), EnrolError> {
        let (store, s) = (self.store.clone(), site.to_string());
        let known =
            blocking(move || Ok(store.enrol_sites()?.into_iter().any(|r| r.site == s))).await?;
        if !known {
            return Err(EnrolError::NotFound(format!(
                "site {site:?} has no enrolment token"
            )));
        }
        self.dynsec.delete_enrol_account(site).await?;
        let (store, s) = (self.store.clone(), site.to_string());
        blocking(move || {
            store.remove_enrol_site(&s)?;
            store.flush()?;
            Ok(())
        })
        .await?;
        info!(site, by, "site enrolment token withdrawn");
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::store::embedded::SledStore;

    fn request(key: &seal::AgentKey, device: &str, serial: Option<&str>) -> EnrolRequest {
        EnrolRequest {
            v: VERSION,
            key: heapless::String::try_from(key.public_hex().as_str()).unwrap(),
            device: DeviceId::new(device).unwrap(),
            ts: 1,
            agent_version: "0.1.0".try_into().unwrap(),
            hostname: "ws\u{1b}[31m-1".try_into().unwrap(),
            os: "Debian 12".try_into().unwrap(),
            arch: "x86_64".try_into().unwrap(),
            dmi: vigia_protocol::Dmi {
                serial: serial.map(|s| s.try_into().unwrap()),
                ..Default::default()
            },
            tags: heapless::Vec::new(),
        }
    }

    #[test]
    fn requests_are_kept_per_key_bounded_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let topics = Topics::default();
        let key = seal::AgentKey::generate().unwrap();
        let rid = key.request_id();
        let req = request(&key, "ws-1", Some("SN-1"));

        // No token for the site yet: dropped.
        let seen = record_request(&store, &topics, "bcn", &rid, &req, &[], 5).unwrap();
        assert!(seen.reply.is_none());
        assert!(store.enrolment(&rid).unwrap().is_none());

        store
            .put_enrol_site(&SiteRecord {
                site: "bcn".into(),
                by: "admin".into(),
                at: 1,
            })
            .unwrap();
        let seen = record_request(&store, &topics, "bcn", &rid, &req, &[], 5).unwrap();
        let (topic, payload) = seen.reply.unwrap();
        assert_eq!(topic, format!("vigia/v1/enrol/bcn/{rid}/reply"));
        let reply: EnrolReply = vigia_protocol::decode(&payload).unwrap();
        assert_eq!(reply.state, EnrolState::Pending);
        assert!(seen.auto_approve.is_none());
        let rec = store.enrolment(&rid).unwrap().unwrap();
        assert_eq!((rec.asked, rec.decision), (1, Decision::Pending));
        // What the device typed reaches the console without its escape sequence.
        assert_eq!(rec.hostname, "ws[31m-1");

        // Asking again updates the same record; a known serial is approved by the rule.
        let seen = record_request(&store, &topics, "bcn", &rid, &req, &["sn-1".into()], 9).unwrap();
        assert_eq!(seen.auto_approve.as_deref(), Some(rid.as_str()));
        let rec = store.enrolment(&rid).unwrap().unwrap();
        assert_eq!((rec.asked, rec.first_seen, rec.last_seen), (2, 5, 9));

        // Someone else's id with their own key: dropped.
        let other = seal::AgentKey::generate().unwrap();
        let forged = request(&other, "ws-1", None);
        let seen = record_request(&store, &topics, "bcn", &rid, &forged, &[], 10).unwrap();
        assert!(seen.reply.is_none());
        assert_eq!(
            store.enrolment(&rid).unwrap().unwrap().key,
            key.public_hex()
        );
        assert_eq!(store.enrolments().unwrap().len(), 1);
    }
}
