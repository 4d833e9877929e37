//! The providers registry over HTTP: staff read it, admins register providers, their
//! contracts and the minutes of coordination meetings.
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use vigia_protocol::time::parse_instant;

use super::auth::Authed;
use super::incidents::reads_all;
use super::state::{blocking, invalid, not_found, ApiError, HttpState};
use crate::providers::{contract_providers_for, key, Minutes, Provider};

/// `GET /api/providers`.
pub(super) async fn list(
    State(st): State<HttpState>,
    a: Authed,
) -> Result<Json<Vec<Provider>>, ApiError> {
    reads_all(&a.caller)?;
    let store = st.store.clone();
    Ok(Json(blocking(move || Ok(store.providers()?)).await?))
}

/// `GET /api/providers/{name}`.
pub(super) async fn show(
    State(st): State<HttpState>,
    a: Authed,
    Path(name): Path<String>,
) -> Result<Json<Provider>, ApiError> {
    reads_all(&a.caller)?;
    let store = st.store.clone();
    let p = blocking(move || {
        store
            .provider(&name)?
            .ok_or_else(|| not_found(format!("no provider {name:?}")))
    })
    .await?;
    Ok(Json(p))
}

/// `PUT /api/providers/{name}` (admins): registers or replaces the provider; its minutes
/// are kept unless the body gives them.
pub(super) async fn put(
    State(st): State<HttpState>,
    a: Authed,
    Path(name): Path<String>,
    Json(mut p): Json<Provider>,
) -> Result<(StatusCode, Json<Provider>), ApiError> {
    a.caller.may_admin()?;
    if key(&p.name) != key(&name) {
        return Err(invalid(format!(
            "the body names {:?}, the address {name:?}",
            p.name
        )));
    }
    p.check().map_err(invalid)?;
    let store = st.store.clone();
    let by = a.caller.account.login.clone();
    let (created, p) = blocking(move || {
        let old = store.provider(&p.name)?;
        if p.minutes.is_empty() {
            if let Some(o) = &old {
                p.minutes.clone_from(&o.minutes);
            }
        }
        store.put_provider(&p)?;
        store.flush()?;
        Ok((old.is_none(), p))
    })
    .await?;
    tracing::info!(by = %by, provider = %p.name, created, "provider registered");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(p)))
}

/// `DELETE /api/providers/{name}` (admins).
pub(super) async fn remove(
    State(st): State<HttpState>,
    a: Authed,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    a.caller.may_admin()?;
    let store = st.store.clone();
    blocking(move || {
        if !store.remove_provider(&name)? {
            return Err(not_found(format!("no provider {name:?}")));
        }
        store.flush()?;
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The body of `POST /api/providers/{name}/minutes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewMinutes {
    /// When the meeting was (`2026-12-01`).
    date: String,
    participants: Vec<String>,
    text: String,
}

/// `POST /api/providers/{name}/minutes` (admins): the minutes of a coordination meeting
/// (*acta*), kept with the provider's contract.
pub(super) async fn add_minutes(
    State(st): State<HttpState>,
    a: Authed,
    Path(name): Path<String>,
    Json(m): Json<NewMinutes>,
) -> Result<(StatusCode, Json<Provider>), ApiError> {
    a.caller.may_admin()?;
    let date = parse_instant(&m.date).map_err(|e| invalid(format!("date: {e}")))?;
    let minutes = Minutes {
        date,
        participants: m
            .participants
            .iter()
            .map(|p| p.trim().to_string())
            .collect(),
        text: m.text,
        recorded_by: a.caller.account.login.clone(),
    };
    let store = st.store.clone();
    let p = blocking(move || {
        let mut p = store
            .provider(&name)?
            .ok_or_else(|| not_found(format!("no provider {name:?}")))?;
        p.minutes.push(minutes);
        p.minutes.sort_by_key(|m| m.date);
        p.check().map_err(invalid)?;
        store.put_provider(&p)?;
        store.flush()?;
        Ok(p)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(p)))
}

/// What to tell someone whose provider request named no provider on incident `n`: the
/// providers with a contract in force that cover its kind of asset.
pub(super) fn contract_hint(st: &HttpState, n: u64) -> Result<String, ApiError> {
    // Not shown: only the registry's names leave, and only after the caller's action on
    // this incident was authorised.
    let Some(inc) = st.store.incident(n)? else {
        return Ok(String::new());
    };
    let providers = st.store.providers()?;
    let category = inc.classification.as_ref().map(|c| c.category.as_str());
    let found = contract_providers_for(&providers, category, &inc.context.tags, st.clock.now());
    Ok(if found.is_empty() {
        "; no registered provider has a contract in force covering this asset".into()
    } else {
        let names: Vec<&str> = found.iter().map(|p| p.name.as_str()).collect();
        format!(
            "; with a contract in force covering this asset: {}",
            names.join(", ")
        )
    })
}
