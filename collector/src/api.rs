//! The HTTP side: a JSON API over the store, Prometheus metrics, and a live incident feed
//! (a self-contained page fed by Server-Sent Events).
//!
//! The server takes an already bound listener and a shutdown future, so tests bind port 0
//! and the caller decides when it stops. It reads the store directly (sled reads are
//! in-memory for hot data and short), trading a little latency under heavy ingest for not
//! keeping a second copy of anything. It has no authentication: it listens on loopback by
//! default, and a real deployment puts it behind a proxy that adds it. Who acts is named
//! in each action's JSON body (`"as"` and `"roles"`) and trusted as given — the audit
//! trail records it, but nothing checks it yet.
//!
//! Actions (`POST /api/incidents/{n}/{action}`) run the workflow in one store
//! transaction, flush, and only then send what the decision emits (device commands,
//! notifications). A transition the workflow refuses is `409 Conflict` with the engine's
//! text, which names the state and the action.
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch, Notify};
use tracing::{info, warn};
use vigia_protocol::{DeviceId, Millis};

use crate::feed::{FeedEvent, IncidentSummary};
use crate::ingest::{dispatch, Downlink};
use crate::metrics::Metrics;
use crate::store::{DeviceRecord, IncidentFilter, StateFilter, Store, StoreError};
use crate::timers::Clock;
use crate::workflow::{
    self, Command, Incident, Level, Period, Person, Policy, Priority, Role, State as WfState,
    WorkflowError,
};

const FEED_PAGE: &str = include_str!("feed.html");
/// Default and largest page of an incident list.
pub const DEFAULT_LIMIT: usize = 50;
/// The largest page.
pub const MAX_LIMIT: usize = 1000;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The store.
    pub store: Store,
    /// Ingest counters.
    pub metrics: Arc<Metrics>,
    /// Feed events from ingest.
    pub feed: broadcast::Sender<FeedEvent>,
    /// Becomes `true` at shutdown, so open feed streams end and the server can stop.
    pub stopping: watch::Receiver<bool>,
    /// The workflow policy.
    pub policy: Arc<Policy>,
    /// The collector's clock.
    pub clock: Arc<dyn Clock>,
    /// Commands to devices.
    pub downlink: Downlink,
    /// Pokes the timer task after a change.
    pub wake: Arc<Notify>,
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/api/incidents", get(list_incidents))
        .route("/api/incidents/{id}", get(show_incident))
        .route("/api/incidents/{id}/{action}", post(act))
        .route("/api/export", get(export))
        .route("/api/devices", get(list_devices))
        .route("/api/devices/{id}", get(show_device))
        .route("/api/devices/{id}/events", get(device_events))
        .route("/api/feed", get(feed))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// An API error: a status and a message, as JSON `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        (self.0, Json(Body { error: self.1 })).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::Workflow(w) => match w {
                WorkflowError::Illegal { .. }
                | WorkflowError::NotHigher { .. }
                | WorkflowError::WrongSubject { .. }
                | WorkflowError::ReopenWindowPassed { .. } => StatusCode::CONFLICT,
                WorkflowError::NotServiceDesk { .. } => StatusCode::FORBIDDEN,
                WorkflowError::Empty { .. } | WorkflowError::Provider { .. } => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
            },
            _ => {
                warn!(error = %e, "store failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Self(status, e.to_string())
    }
}

fn task_failed(e: tokio::task::JoinError) -> ApiError {
    ApiError(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("store task failed: {e}"),
    )
}

fn bad_request(msg: String) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg)
}

fn not_found(msg: String) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, msg)
}

async fn page() -> Html<&'static str> {
    Html(FEED_PAGE)
}

async fn metrics(State(st): State<ApiState>) -> Result<Response, ApiError> {
    let counts = st.store.incident_counts()?;
    let by_state: Vec<(&str, u64)> = counts.iter().map(|(s, n)| (s.as_str(), *n)).collect();
    let devices = st.store.devices()?;
    let online = devices.iter().filter(|d| d.online()).count() as u64;
    let text = st.metrics.render(&by_state, devices.len() as u64, online);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// Query of `GET /api/incidents`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentQuery {
    /// A state name, `open` (every state but closed) or `all`.
    pub state: Option<String>,
    /// A level (1, 2, 3).
    pub level: Option<String>,
    /// A priority (P1..P4).
    pub priority: Option<String>,
    /// A device id.
    pub device: Option<String>,
    /// Page, from 1.
    pub page: Option<usize>,
    /// Page size (default 50, at most 1000), newest first.
    pub limit: Option<usize>,
}

fn parse_device(s: &str) -> Result<DeviceId, ApiError> {
    DeviceId::new(s).map_err(|e| bad_request(format!("device {s:?}: {e}")))
}

impl IncidentQuery {
    /// The store filter this query asks for.
    pub fn filter(&self) -> Result<IncidentFilter, ApiError> {
        let state = match self.state.as_deref() {
            None | Some("") | Some("all") => None,
            Some("open") => Some(StateFilter::Open),
            Some(s) => Some(StateFilter::Is(
                s.parse::<WfState>()
                    .map_err(|e| bad_request(format!("{e}; or open, all")))?,
            )),
        };
        let level = match self.level.as_deref() {
            None | Some("") => None,
            Some(l) => Some(l.parse::<Level>().map_err(|e| bad_request(e.to_string()))?),
        };
        let priority = match self.priority.as_deref() {
            None | Some("") => None,
            Some(p) => Some(
                p.parse::<Priority>()
                    .map_err(|e| bad_request(e.to_string()))?,
            ),
        };
        let device = self.device.as_deref().map(parse_device).transpose()?;
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        let page = self.page.unwrap_or(1).max(1);
        Ok(IncidentFilter {
            state,
            level,
            priority,
            device,
            offset: (page - 1).saturating_mul(limit),
            limit: Some(limit),
        })
    }
}

async fn list_incidents(
    State(st): State<ApiState>,
    Query(q): Query<IncidentQuery>,
) -> Result<Json<Vec<IncidentSummary>>, ApiError> {
    let filter = q.filter()?;
    let store = st.store.clone();
    let list = tokio::task::spawn_blocking(move || store.incidents(&filter))
        .await
        .map_err(task_failed)??;
    Ok(Json(list))
}

/// `GET /api/incidents/{id}`: the whole incident (audit trail, notes, questions,
/// provider requests) with the summary's derived fields.
#[derive(Debug, Serialize)]
pub struct IncidentDetail {
    /// The incident as stored.
    #[serde(flatten)]
    pub incident: Incident,
    /// Its number again, under the issue-2 name.
    pub id: u64,
    /// Fault kind or report category.
    pub kind: String,
    /// Fault subject or reporter.
    pub subject: String,
    /// Worst severity seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<vigia_protocol::Severity>,
    /// Priority, once diagnosed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// One line.
    pub title: String,
    /// Last change.
    pub updated_at: Millis,
    /// When the next timer falls due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_deadline: Option<Millis>,
}

impl IncidentDetail {
    /// The detail of `incident` under `policy`.
    pub fn new(incident: Incident, policy: &Policy) -> Self {
        let s = IncidentSummary::new(&incident, workflow::next_deadline(&incident, policy));
        Self {
            id: s.number,
            kind: s.kind,
            subject: s.subject,
            severity: s.severity,
            priority: s.priority,
            title: s.title,
            updated_at: s.updated_at,
            next_deadline: s.next_deadline,
            incident,
        }
    }
}

fn parse_number(id: &str) -> Result<u64, ApiError> {
    id.trim_start_matches('#')
        .parse()
        .map_err(|_| bad_request(format!("incident id {id:?} is not a number")))
}

async fn show_incident(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<IncidentDetail>, ApiError> {
    let n = parse_number(&id)?;
    let store = st.store.clone();
    match tokio::task::spawn_blocking(move || store.incident(n))
        .await
        .map_err(task_failed)??
    {
        Some(inc) => Ok(Json(IncidentDetail::new(inc, &st.policy))),
        None => Err(not_found(format!("no incident {n}"))),
    }
}

/// The body of `POST /api/incidents/{n}/{action}`: who acts, and the action's fields
/// (those of [`Command`]'s variant, e.g. `{"as": "ana", "roles": ["service_desk"],
/// "solution": "disk replaced"}` for `resolve`).
#[derive(Debug, Deserialize)]
pub struct ActionBody {
    /// Who acts (no authentication yet: trusted as given, recorded in the audit trail).
    #[serde(rename = "as")]
    pub actor: String,
    /// Their roles.
    #[serde(default)]
    pub roles: Vec<Role>,
    /// The action's own fields.
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// The actions the API accepts, and the [`Command`] each one is.
pub const ACTIONS: &[(&str, &str)] = &[
    ("validate", "validate"),
    ("assign", "assign"),
    ("escalate", "escalate"),
    ("resolve", "resolve"),
    ("close", "close"),
    ("reopen", "reopen"),
    ("note", "note"),
    ("request-info", "request_info"),
    ("info-received", "info_received"),
    ("confirm", "confirm"),
    ("not-reproduced", "not_reproduced"),
    ("classify", "classify"),
    ("diagnose", "classify"),
    ("provider", "request_provider"),
    ("provider-request", "request_provider"),
    ("provider-delivered", "provider_delivered"),
];

/// Builds the command of `action` from the body's fields. `verify` takes
/// `"outcome": "confirm" | "not_reproduced"` (000 step 3).
pub fn command_of(
    action: &str,
    mut fields: serde_json::Map<String, serde_json::Value>,
) -> Result<Command, String> {
    let name = if action == "verify" {
        match fields.remove("outcome").as_ref().and_then(|v| v.as_str()) {
            Some("confirm") | Some("confirmed") => "confirm",
            Some("not_reproduced") | Some("not-reproduced") => "not_reproduced",
            other => {
                return Err(format!(
                    "verify needs \"outcome\": \"confirm\" or \"not_reproduced\", not {other:?}"
                ))
            }
        }
    } else {
        ACTIONS
            .iter()
            .find(|(a, _)| *a == action)
            .map(|(_, c)| *c)
            .ok_or_else(|| {
                let known: Vec<&str> = ACTIONS.iter().map(|(a, _)| *a).collect();
                format!(
                    "unknown action {action:?}; known: verify, {}",
                    known.join(", ")
                )
            })?
    };
    fields.insert("command".into(), serde_json::Value::String(name.into()));
    serde_json::from_value(serde_json::Value::Object(fields)).map_err(|e| format!("{action}: {e}"))
}

async fn act(
    State(st): State<ApiState>,
    Path((id, action)): Path<(String, String)>,
    Json(body): Json<ActionBody>,
) -> Result<Json<IncidentDetail>, ApiError> {
    let n = parse_number(&id)?;
    if body.actor.trim().is_empty() {
        return Err(bad_request("\"as\" must name who acts".into()));
    }
    let command = command_of(&action, body.fields).map_err(bad_request)?;
    let by = Person::new(body.actor, body.roles);
    let now = st.clock.now();
    let (store, policy) = (st.store.clone(), st.policy.clone());
    let (who, what) = (by.name.clone(), command.name());
    let decision = tokio::task::spawn_blocking(move || {
        let d = store.apply_command(n, &by, &command, now, &policy)?;
        // Durable before anything leaves.
        store.flush()?;
        Ok::<_, StoreError>(d)
    })
    .await
    .map_err(task_failed)??;
    info!(incident = n, actor = %who, action = what, state = %decision.incident.state,
        "incident action");
    let mut pairs = vec![(decision, false)];
    dispatch(&pairs, &st.downlink, &st.feed, &st.policy, now, true).await;
    st.wake.notify_one();
    let (d, _) = pairs.pop().ok_or_else(|| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "lost the decision".into(),
        )
    })?;
    Ok(Json(IncidentDetail::new(d.incident, &st.policy)))
}

/// Query of `GET /api/export`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// First day or instant included (`2026-11-01`, RFC 3339, or ms since the epoch).
    pub from: Option<String>,
    /// First day or instant excluded.
    pub to: Option<String>,
    /// `csv` (default) or `json`.
    pub format: Option<String>,
}

/// Parses `2026-11-01`, `2026-11-01T10:00:00Z` (UTC only) or ms since the epoch.
pub fn parse_instant(s: &str) -> Result<Millis, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|e| format!("{s:?}: {e}"));
    }
    let bad =
        || format!("{s:?} is not a date (2026-11-01), a UTC time (2026-11-01T10:00:00Z) or ms");
    let (date, time) = match s.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t.trim_end_matches('Z'))),
        None => (s, None),
    };
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>());
    let (Some(Ok(y)), Some(Ok(m)), Some(Ok(day))) = (d.next(), d.next(), d.next()) else {
        return Err(bad());
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || y < 1970 {
        return Err(bad());
    }
    let mut secs = days_from_civil(y, m, day) * 86_400;
    if let Some(t) = time {
        let mut p = t.splitn(3, ':').map(|p| p.parse::<i64>());
        let h = p.next().and_then(Result::ok).ok_or_else(bad)?;
        let mi = p.next().and_then(Result::ok).ok_or_else(bad)?;
        let sec = match p.next() {
            Some(r) => r.map_err(|_| bad())?,
            None => 0,
        };
        if !(0..24).contains(&h) || !(0..60).contains(&mi) || !(0..61).contains(&sec) {
            return Err(bad());
        }
        secs += h * 3600 + mi * 60 + sec;
    }
    u64::try_from(secs).map(|s| s * 1000).map_err(|_| bad())
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

async fn export(
    State(st): State<ApiState>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let parse = |v: &Option<String>| {
        v.as_deref()
            .filter(|s| !s.is_empty())
            .map(parse_instant)
            .transpose()
            .map_err(bad_request)
    };
    let period = Period {
        from: parse(&q.from)?,
        to: parse(&q.to)?,
    };
    let store = st.store.clone();
    let rows = tokio::task::spawn_blocking(move || store.export(&period))
        .await
        .map_err(task_failed)??;
    match q.format.as_deref().unwrap_or("csv") {
        "csv" => Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            workflow::to_csv(&rows),
        )
            .into_response()),
        "json" => {
            let text = workflow::to_json(&rows)
                .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("export: {e}")))?;
            Ok(([(header::CONTENT_TYPE, "application/json")], text).into_response())
        }
        other => Err(bad_request(format!(
            "unknown format {other:?}; use csv or json"
        ))),
    }
}

/// One row of `GET /api/devices`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceSummary {
    /// The device.
    pub device: DeviceId,
    /// Online now (newest session).
    pub online: bool,
    /// Newest session counter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<u64>,
    /// Last message (collector clock, ms).
    pub last_seen: Millis,
    /// First message (collector clock, ms).
    pub first_seen: Millis,
    /// Host name from the birth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// OS name and version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// Kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// CPU model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_model: Option<String>,
    /// RAM in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram_bytes: Option<u64>,
    /// Vendor and product from DMI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Agent version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// Events the agent dropped from a full spool.
    #[serde(default)]
    pub dropped_events: u64,
}

impl From<&DeviceRecord> for DeviceSummary {
    fn from(r: &DeviceRecord) -> Self {
        let b = r.birth.as_ref();
        let model = b.and_then(|b| {
            let parts: Vec<&str> = [b.dmi.vendor.as_deref(), b.dmi.product.as_deref()]
                .into_iter()
                .flatten()
                .collect();
            (!parts.is_empty()).then(|| parts.join(" "))
        });
        Self {
            device: r.device.clone(),
            online: r.online(),
            boot: r.status.as_ref().map(|s| s.boot),
            last_seen: r.last_seen,
            first_seen: r.first_seen,
            hostname: b.map(|b| b.hostname.to_string()),
            os: b.map(|b| format!("{} {}", b.os, b.os_version).trim().to_string()),
            kernel: b.map(|b| b.kernel.to_string()),
            cpu_model: b.map(|b| b.cpu_model.to_string()),
            ram_bytes: b.map(|b| b.ram_bytes),
            model,
            agent_version: b.map(|b| b.agent_version.to_string()),
            dropped_events: r.dropped.as_ref().map_or(0, |d| d.total),
        }
    }
}

async fn list_devices(State(st): State<ApiState>) -> Result<Json<Vec<DeviceSummary>>, ApiError> {
    Ok(Json(
        st.store
            .devices()?
            .iter()
            .map(DeviceSummary::from)
            .collect(),
    ))
}

/// `GET /api/devices/{id}`: the full record, whether it is online, and its incidents.
#[derive(Debug, Serialize)]
struct DeviceDetail {
    #[serde(flatten)]
    record: DeviceRecord,
    online: bool,
    incidents: Vec<IncidentSummary>,
}

/// A device's stored events, summarised: how many, the first and last seq, and the gaps
/// between them (at most 100 ranges). What an operator asks after an outage: did
/// everything the device sent arrive?
async fn device_events(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let device = parse_device(&id)?;
    let seqs = st.store.event_seqs(&device)?;
    let missing: Vec<[u64; 2]> = seqs
        .windows(2)
        .filter(|w| w[1] > w[0] + 1)
        .map(|w| [w[0] + 1, w[1] - 1])
        .take(100)
        .collect();
    Ok(Json(serde_json::json!({
        "device": device.as_str(),
        "count": seqs.len(),
        "first_seq": seqs.first(),
        "last_seq": seqs.last(),
        "missing": missing,
    }))
    .into_response())
}

async fn show_device(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let device = parse_device(&id)?;
    let Some(record) = st.store.device(&device)? else {
        return Err(not_found(format!("no device {device}")));
    };
    let incidents = st.store.incidents(&IncidentFilter {
        device: Some(device),
        limit: Some(DEFAULT_LIMIT),
        ..Default::default()
    })?;
    Ok(Json(DeviceDetail {
        online: record.online(),
        record,
        incidents,
    })
    .into_response())
}

/// The SSE stream: every feed event as `event: incident|device` with JSON data; a
/// `lagged` event when this subscriber fell behind (the page then reloads its lists).
/// Ends at shutdown so the server's graceful stop is not held open by browsers.
async fn feed(
    State(st): State<ApiState>,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = st.feed.subscribe();
    let stopping = st.stopping.clone();
    let stream =
        futures_util::stream::unfold((rx, stopping), |(mut rx, mut stopping)| async move {
            if *stopping.borrow() {
                return None;
            }
            let ev = tokio::select! {
                r = rx.recv() => r,
                _ = stopping.wait_for(|s| *s) => return None,
            };
            let sse = match ev {
                Ok(ev) => {
                    let name = ev.name();
                    match SseEvent::default().event(name).json_data(&ev) {
                        Ok(e) => e,
                        Err(e) => SseEvent::default().comment(format!("unencodable event: {e}")),
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    SseEvent::default().event("lagged").data(n.to_string())
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((Ok(sse), (rx, stopping)))
        });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        match v {
            serde_json::Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn every_action_builds_its_command() {
        let cases = [
            ("validate", json!({}), "validate"),
            ("assign", json!({"assignee": "luis"}), "assign"),
            ("escalate", json!({"to": 3, "why": "x"}), "escalate"),
            ("resolve", json!({"solution": "x"}), "resolve"),
            ("close", json!({}), "close"),
            ("reopen", json!({"why": "x"}), "reopen"),
            ("note", json!({"text": "x"}), "note"),
            ("request-info", json!({"question": "x"}), "request_info"),
            ("info-received", json!({"text": "x"}), "info_received"),
            ("verify", json!({"outcome": "confirm"}), "confirm"),
            (
                "verify",
                json!({"outcome": "not_reproduced"}),
                "not_reproduced",
            ),
            (
                "classify",
                json!({"priority": "P1", "resources": ["disk"]}),
                "classify",
            ),
            ("diagnose", json!({"category": "hardware"}), "classify"),
            (
                "provider",
                json!({"provider": "acme", "kind": "unplanned", "agreed_at": 5}),
                "request_provider",
            ),
            (
                "provider-delivered",
                json!({"as_agreed": true}),
                "provider_delivered",
            ),
        ];
        for (action, body, name) in cases {
            let c = command_of(action, fields(body)).unwrap_or_else(|e| panic!("{action}: {e}"));
            assert_eq!(c.name(), name, "{action}");
        }
        assert!(command_of("verify", fields(json!({}))).is_err());
        assert!(command_of("frobnicate", fields(json!({})))
            .unwrap_err()
            .contains("unknown action"));
        // A mistyped field of a strict command is refused, not ignored.
        assert!(command_of("classify", fields(json!({"priorty": "P1"}))).is_err());
    }

    #[test]
    fn instants_parse() {
        assert_eq!(parse_instant("0").unwrap(), 0);
        assert_eq!(parse_instant("1970-01-02").unwrap(), 86_400_000);
        assert_eq!(
            parse_instant("2026-11-22T02:45:00Z").unwrap(),
            1_795_315_500_000
        );
        assert_eq!(
            parse_instant("2000-02-29T12:34:56Z").unwrap(),
            951_827_696_000
        );
        for bad in ["", "yesterday", "2026-13-01", "2026-11-22T25:00:00Z"] {
            assert!(parse_instant(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn list_query_defaults_to_the_first_page_of_50() {
        let q = IncidentQuery {
            state: Some("open".into()),
            level: Some("2".into()),
            priority: None,
            device: None,
            page: None,
            limit: None,
        };
        let f = q.filter().unwrap();
        assert_eq!((f.offset, f.limit), (0, Some(50)));
        assert_eq!(f.state, Some(StateFilter::Open));
        assert_eq!(f.level, Some(Level::L2));
        let q = IncidentQuery {
            state: Some("bogus".into()),
            level: None,
            priority: None,
            device: None,
            page: Some(3),
            limit: Some(5000),
        };
        assert!(q.filter().is_err());
    }
}
