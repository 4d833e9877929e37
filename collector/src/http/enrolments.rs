//! Self-enrolment over HTTP, for admins: the sites' tokens, the requests waiting with
//! what each agent said about its machine, approval, refusal, and revoking a device.
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use vigia_protocol::{DeviceId, Millis};

use super::auth::Authed;
use super::state::{blocking, invalid, not_found, ApiError, HttpState};
use crate::enrolment::{Decision, EnrolError, Enrolment, EnrolmentRecord, SiteRecord};

impl From<EnrolError> for ApiError {
    fn from(e: EnrolError) -> Self {
        let (status, code) = match &e {
            EnrolError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            EnrolError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            EnrolError::AccountExists(_) => (StatusCode::CONFLICT, "account_exists"),
            EnrolError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            EnrolError::Broker(_) => (StatusCode::BAD_GATEWAY, "broker"),
            EnrolError::Store(_) | EnrolError::Internal(_) => {
                tracing::warn!(error = %e, "enrolment failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

fn service(st: &HttpState) -> Result<Arc<Enrolment>, ApiError> {
    st.enrolment.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "not_enabled",
            "self-enrolment needs Mosquitto's dynamic-security plugin: set \
             [mqtt] dynamic_security = true (see the README's \"deploying for real\")",
        )
    })
}

/// A request as the console shows it (no key, no sealed reply).
#[derive(Debug, Serialize)]
pub(super) struct RequestView {
    request: String,
    site: String,
    device: DeviceId,
    hostname: String,
    os: String,
    arch: String,
    agent_version: String,
    vendor: Option<String>,
    product: Option<String>,
    serial: Option<String>,
    tags: Vec<String>,
    first_seen: Millis,
    last_seen: Millis,
    asked: u64,
    decision: Decision,
    decided_by: Option<String>,
    decided_at: Option<Millis>,
    reason: Option<String>,
}

impl From<EnrolmentRecord> for RequestView {
    fn from(r: EnrolmentRecord) -> Self {
        Self {
            request: r.request,
            site: r.site,
            device: r.device,
            hostname: r.hostname,
            os: r.os,
            arch: r.arch,
            agent_version: r.agent_version,
            vendor: r.vendor,
            product: r.product,
            serial: r.serial,
            tags: r.tags,
            first_seen: r.first_seen,
            last_seen: r.last_seen,
            asked: r.asked,
            decision: r.decision,
            decided_by: r.decided_by,
            decided_at: r.decided_at,
            reason: r.reason,
        }
    }
}

/// `GET /api/enrolments`.
#[derive(Debug, Serialize)]
pub(super) struct Overview {
    /// Whether self-enrolment is on (the broker has the plugin).
    enabled: bool,
    sites: Vec<SiteRecord>,
    /// Pending first, then the most recent.
    requests: Vec<RequestView>,
}

/// `GET /api/enrolments` (admins).
pub(super) async fn list(
    State(st): State<HttpState>,
    a: Authed,
) -> Result<Json<Overview>, ApiError> {
    a.caller.may_admin()?;
    let store = st.store.clone();
    let (sites, mut recs) =
        blocking(move || Ok((store.enrol_sites()?, store.enrolments()?))).await?;
    recs.sort_by_key(|r| {
        (
            r.decision != Decision::Pending,
            std::cmp::Reverse(r.last_seen),
        )
    });
    Ok(Json(Overview {
        enabled: st.enrolment.is_some(),
        sites,
        requests: recs.into_iter().map(RequestView::from).collect(),
    }))
}

/// The body of `POST /api/enrolments/sites`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewSite {
    site: String,
}

/// The answer: the token, shown once.
#[derive(Debug, Serialize)]
pub(super) struct SiteToken {
    site: String,
    token: String,
}

/// `POST /api/enrolments/sites` (admins): makes or rotates a site's token.
pub(super) async fn site_token(
    State(st): State<HttpState>,
    a: Authed,
    Json(b): Json<NewSite>,
) -> Result<(StatusCode, Json<SiteToken>), ApiError> {
    a.caller.may_admin()?;
    let token = service(&st)?
        .site_token(&b.site, &a.caller.account.login)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(SiteToken {
            site: b.site,
            token,
        }),
    ))
}

/// `DELETE /api/enrolments/sites/{site}` (admins): the token stops working.
pub(super) async fn remove_site(
    State(st): State<HttpState>,
    a: Authed,
    Path(site): Path<String>,
) -> Result<StatusCode, ApiError> {
    a.caller.may_admin()?;
    service(&st)?
        .remove_site(&site, &a.caller.account.login)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The body of `POST /api/enrolments/{request}/{action}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Act {
    #[serde(default)]
    reason: Option<String>,
    /// Approve even though the broker has an account with the device's id: it is
    /// revoked first (a reinstalled agent).
    #[serde(default)]
    replace: bool,
}

/// `POST /api/enrolments/{request}/approve|refuse` (admins).
pub(super) async fn act(
    State(st): State<HttpState>,
    a: Authed,
    Path((request, action)): Path<(String, String)>,
    body: Option<Json<Act>>,
) -> Result<Json<RequestView>, ApiError> {
    a.caller.may_admin()?;
    let svc = service(&st)?;
    let by = a.caller.account.login.clone();
    let rec = match action.as_str() {
        "approve" => {
            let replace = body.as_ref().is_some_and(|b| b.0.replace);
            svc.approve(&request, &by, replace).await?
        }
        "refuse" => {
            let reason = body.and_then(|b| b.0.reason).unwrap_or_default();
            svc.refuse(&request, &by, &reason).await?
        }
        other => {
            return Err(not_found(format!(
                "no enrolment action {other:?} (approve, refuse)"
            )))
        }
    };
    Ok(Json(rec.into()))
}

/// The answer of a revocation.
#[derive(Debug, Serialize)]
pub(super) struct Revoked {
    device: DeviceId,
    revoked: bool,
}

/// `POST /api/devices/{id}/revoke` (admins): deletes the device's broker account, which
/// drops its connection at once.
pub(super) async fn revoke(
    State(st): State<HttpState>,
    a: Authed,
    Path(id): Path<String>,
) -> Result<Json<Revoked>, ApiError> {
    a.caller.may_admin()?;
    let device = DeviceId::new(&id).map_err(|e| invalid(format!("{id:?}: {e}")))?;
    let found = service(&st)?
        .revoke(&device, &a.caller.account.login)
        .await?;
    if !found {
        return Err(not_found(format!(
            "the broker has no account {id:?} and no enrolment approved it"
        )));
    }
    Ok(Json(Revoked {
        device,
        revoked: true,
    }))
}
