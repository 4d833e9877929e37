//! Provider requests across incidents (000 step 5, 003): one visit for several incidents
//! (the same switch behind three reports), listed and worked as one.
//!
//! A request made for several incidents is a provider request on each of them that
//! carries the same id, so each incident keeps its own trail, SLA pause and return level
//! while the request is answered, done and verified once for all: every action here is
//! the incident action applied to each incident whose pending request has that id, each
//! authorised and recorded on its own.
//!
//! A request with no incident behind it (planned maintenance, work on the network) is a
//! record of its own: `POST /api/requests` with a `service` instead of `incidents`
//! registers it under the next incident number, already waiting for its provider, so
//! accepting, the work, the week's notice, the verification and the export go as on any
//! incident.
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::Authed;
use super::incidents::{command_of, run_command, BulkResult, MAX_BULK};
use super::state::{bad_request, blocking, not_found, ApiError, HttpState};
use crate::outbox::deliver;
use crate::providers::{contract_providers_for, fill_deadlines};
use crate::store::{device_context, IncidentFilter, StateFilter, StoreError};
use crate::workflow::{
    warranty_provider, Command, Incident, ProviderError, ProviderRequest, ProviderRequestSpec,
    ServiceOrder, State as WfState, WorkflowError,
};
use tracing::info;

/// `POST /api/requests`: one request for several incidents, or for a service with none.
#[derive(Debug, Deserialize)]
pub struct NewRequest {
    /// The incidents it is for.
    #[serde(default)]
    pub incidents: Vec<u64>,
    /// The service, when no incident is behind it.
    #[serde(default)]
    pub service: Option<ServiceOrder>,
    /// What is asked, as for one incident's `request_provider`.
    #[serde(flatten)]
    pub spec: ProviderRequestSpec,
}

/// A request as lists show it: the pending request's facts and its incidents.
#[derive(Debug, Serialize)]
pub struct RequestView {
    /// Its id.
    pub id: String,
    /// The request, as the first of its incidents carries it.
    #[serde(flatten)]
    pub request: ProviderRequest,
    /// The incidents waiting for it.
    pub incidents: Vec<u64>,
}

/// The pending requests `caller` may see, by id, oldest first.
fn pending(st: &HttpState, caller: &crate::auth::Caller) -> Result<Vec<RequestView>, ApiError> {
    let waiting = st.store.incidents(&IncidentFilter {
        state: Some(StateFilter::Is(WfState::WaitingProvider)),
        ..IncidentFilter::default()
    })?;
    let mut out: Vec<RequestView> = Vec::new();
    for s in waiting {
        let Some(inc) = st.store.incident(s.number)?.filter(|i| caller.may_see(i)) else {
            continue;
        };
        let inc: Incident = caller.narrow(inc);
        let Some(r) = inc.pending_provider() else {
            continue;
        };
        let id = request_id(&inc, r);
        match out.iter_mut().find(|v| v.id == id) {
            Some(v) => v.incidents.push(inc.number),
            None => out.push(RequestView {
                id,
                request: r.clone(),
                incidents: vec![inc.number],
            }),
        }
    }
    for v in &mut out {
        v.incidents.sort_unstable();
    }
    out.sort_by_key(|v| (v.request.requested_at, v.incidents.first().copied()));
    Ok(out)
}

/// A request's id; requests stored before ids existed get their incident's.
fn request_id(inc: &Incident, r: &ProviderRequest) -> String {
    if r.id.is_empty() {
        format!("{}-{}", inc.number, inc.provider_requests.len())
    } else {
        r.id.clone()
    }
}

/// `GET /api/requests`: the pending provider requests, one entry per request.
pub(super) async fn list(
    State(st): State<HttpState>,
    a: Authed,
) -> Result<Json<Vec<RequestView>>, ApiError> {
    let st2 = st.clone();
    Ok(Json(blocking(move || pending(&st2, &a.caller)).await?))
}

/// `GET /api/requests/{id}`: one pending request.
pub(super) async fn show(
    State(st): State<HttpState>,
    a: Authed,
    Path(id): Path<String>,
) -> Result<Json<RequestView>, ApiError> {
    let st2 = st.clone();
    let all = blocking(move || pending(&st2, &a.caller)).await?;
    all.into_iter()
        .find(|v| v.id == id)
        .map(Json)
        .ok_or_else(|| not_found(format!("no pending request {id}")))
}

/// `POST /api/requests`: asks one provider for one service for several incidents: a
/// `request_provider` on each, sharing one id (the first incident's number and rank).
pub(super) async fn create(
    State(st): State<HttpState>,
    a: Authed,
    Json(mut b): Json<NewRequest>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    if let Some(order) = b.service.take() {
        if !b.incidents.is_empty() {
            return Err(bad_request(
                "a request is for incidents or for a service with none behind it, not both".into(),
            ));
        }
        return create_service(&st, &a.caller, order, b.spec).await;
    }
    let mut numbers = b.incidents.clone();
    numbers.dedup();
    if numbers.is_empty() || numbers.len() > MAX_BULK {
        return Err(bad_request(format!(
            "a request is for 1 to {MAX_BULK} incidents, or for a service (`service`: its \
             summary and category) when no incident is behind it"
        )));
    }
    if b.spec.provider.is_none() && numbers.len() > 1 {
        return Err(bad_request(
            "name the provider: a request for several incidents cannot take each one's warranty"
                .into(),
        ));
    }
    let first = numbers[0];
    let (st2, c) = (st.clone(), a.caller.clone());
    let rank = blocking(move || {
        Ok::<_, ApiError>(
            st2.store
                .incident(first)?
                // Nothing of an incident the caller may not see, not even its count.
                .filter(|i| c.may_see(i))
                .map_or(0, |i| i.provider_requests.len()),
        )
    })
    .await?;
    let id = format!("{first}-{}", rank + 1);
    b.spec.request = Some(id.clone());
    let results = apply_each(&st, &a.caller, &numbers, Command::RequestProvider(b.spec)).await;
    let status = if results.iter().any(|r| r.ok) {
        StatusCode::CREATED
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok((
        status,
        Json(serde_json::json!({ "id": id, "results": results })),
    ))
}

/// `POST /api/requests/{id}/{action}`: an action on every incident the pending request
/// `id` is for (`provider_accept`, `provider_propose`, `provider_reschedule`,
/// `provider_done`, `provider_delivered`, `note`).
pub(super) async fn act(
    State(st): State<HttpState>,
    a: Authed,
    Path((id, action)): Path<(String, String)>,
    Json(fields): Json<serde_json::Map<String, serde_json::Value>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let command = command_of(&action, fields).map_err(bad_request)?;
    if !matches!(
        command,
        Command::ProviderAccept { .. }
            | Command::ProviderPropose { .. }
            | Command::ProviderReschedule { .. }
            | Command::ProviderDone { .. }
            | Command::ProviderDelivered { .. }
            | Command::Note { .. }
    ) {
        return Err(bad_request(format!(
            "{action} is not an action on a provider request; use the incident's"
        )));
    }
    let st2 = st.clone();
    let caller = a.caller.clone();
    let view = blocking(move || pending(&st2, &caller))
        .await?
        .into_iter()
        .find(|v| v.id == id)
        .ok_or_else(|| not_found(format!("no pending request {id}")))?;
    let results = apply_each(&st, &a.caller, &view.incidents, command).await;
    Ok(Json(serde_json::json!({ "id": id, "results": results })))
}

/// Registers a service with no incident behind it, waiting for its provider from the
/// start, with the contract's deadlines filled in as for an incident's request.
async fn create_service(
    st: &HttpState,
    caller: &crate::auth::Caller,
    mut order: ServiceOrder,
    mut spec: ProviderRequestSpec,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    caller.may_order_service(&mut order)?;
    spec.request = None;
    let now = st.clock.now();
    let (store, policy, person) = (st.store.clone(), st.policy.clone(), caller.account.person());
    let d = blocking(move || {
        let device = match &order.device {
            Some(id) => Some(
                store
                    .device(id)?
                    .ok_or_else(|| StoreError::UnknownDevice(id.clone()))?,
            ),
            None => None,
        };
        let context = device_context(device.as_ref());
        let providers = store.providers()?;
        let suggested = warranty_provider(&context, now).map(str::to_owned);
        fill_deadlines(&mut spec, suggested, None, &providers, now);
        let d = match store.open_service(&order, &spec, &person, now, &policy) {
            Ok(d) => d,
            Err(StoreError::Workflow(e)) => {
                return Err(refusal(&e, &order, &context.tags, &providers, now))
            }
            Err(e) => return Err(e.into()),
        };
        // Durable before anything leaves.
        store.flush()?;
        Ok::<_, ApiError>(d)
    })
    .await?;
    st.metrics.action("request_provider");
    info!(incident = d.incident.number, actor = %caller.account.login,
        action = "request_provider", "service asked of a provider with no incident");
    let n = d.incident.number;
    let id = d
        .incident
        .pending_provider()
        .map(|r| r.id.clone())
        .unwrap_or_default();
    let state = d.incident.state;
    deliver(&[(d, false)], &st.downlink, &st.feed, &st.policy);
    st.wake.notify_one();
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({
            "id": id,
            "incident": n,
            "results": [BulkResult { number: n, ok: true, code: None, error: None, state: Some(state) }],
        })),
    ))
}

/// The workflow's refusal of a new service, in its terms (no number was taken), with the
/// providers whose contract covers it when it named none.
fn refusal(
    e: &WorkflowError,
    order: &ServiceOrder,
    tags: &[String],
    providers: &[crate::providers::Provider],
    now: vigia_protocol::Millis,
) -> ApiError {
    let message = match e {
        WorkflowError::Empty { field, .. } => format!("a service needs a non-empty {field}"),
        WorkflowError::Provider {
            source: ProviderError::NoProvider,
            ..
        } => {
            let found = contract_providers_for(providers, Some(&order.category), tags, now);
            let names: Vec<&str> = found.iter().map(|p| p.name.as_str()).collect();
            if names.is_empty() {
                format!(
                    "name the provider: {}; no registered provider has a contract in force \
                     covering {}",
                    ProviderError::NoProvider,
                    order.category
                )
            } else {
                format!(
                    "name the provider: {}; with a contract in force covering {}: {}",
                    ProviderError::NoProvider,
                    order.category,
                    names.join(", ")
                )
            }
        }
        WorkflowError::Provider { source, .. } => source.to_string(),
        other => other.to_string(),
    };
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
}

async fn apply_each(
    st: &HttpState,
    caller: &crate::auth::Caller,
    numbers: &[u64],
    command: Command,
) -> Vec<BulkResult> {
    let mut results = Vec::with_capacity(numbers.len());
    for &n in numbers {
        results.push(match run_command(st, caller, n, command.clone()).await {
            Ok(d) => BulkResult {
                number: n,
                ok: true,
                code: None,
                error: None,
                state: Some(d.incident.state),
            },
            Err(e) => BulkResult {
                number: n,
                ok: false,
                code: Some(e.code),
                error: Some(e.message),
                state: None,
            },
        });
    }
    results
}
