//! The *Servicios soporte* record of a period, or the verifications of providers'
//! services made in it (the *actas*), as CSV or JSON.
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use vigia_protocol::time::parse_instant;

use super::auth::Authed;
use super::state::{bad_request, internal, task_failed, ApiError, HttpState};
use crate::workflow::{self, Period};

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
    /// `services` (default: the *Servicios soporte* record) or `verifications`.
    pub record: Option<String>,
}

/// `GET /api/archive`: every archived incident (closed, past `[retention]
/// incidents_after`, no longer in the live store), whole, as JSON lines by number.
pub(super) async fn archive(State(st): State<HttpState>, a: Authed) -> Result<Response, ApiError> {
    super::incidents::reads_all(&a.caller)?;
    let archive = crate::retention::Archive::new(&st.data_dir);
    let caller = a.caller;
    let text = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for inc in archive.read()? {
            if !caller.may_see(&inc) {
                continue;
            }
            let inc = caller.narrow(inc);
            serde_json::to_writer(&mut out, &inc).map_err(|e| {
                crate::retention::RetentionError::Archive {
                    path: archive.dir().to_path_buf(),
                    source: e.into(),
                }
            })?;
            out.push(b'\n');
        }
        Ok::<_, crate::retention::RetentionError>(out)
    })
    .await
    .map_err(task_failed)?
    .map_err(|e| internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], text).into_response())
}

pub(super) async fn export(
    State(st): State<HttpState>,
    a: Authed,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    super::incidents::reads_all(&a.caller)?;
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
    let json = match q.format.as_deref().unwrap_or("csv") {
        "csv" => false,
        "json" => true,
        other => {
            return Err(bad_request(format!(
                "unknown format {other:?}; use csv or json"
            )))
        }
    };
    let store = st.store.clone();
    // Each incident as the caller may read it: classified ones beyond its clearance left
    // out, reserved fields as placeholders.
    let caller = a.caller;
    let view = move |inc: workflow::Incident| caller.may_see(&inc).then(|| caller.narrow(inc));
    let text = match q.record.as_deref().unwrap_or("services") {
        "services" => {
            let rows = tokio::task::spawn_blocking(move || store.export(&period, &view))
                .await
                .map_err(task_failed)??;
            if json {
                workflow::to_json(&rows).map_err(|e| internal(format!("export: {e}")))?
            } else {
                workflow::to_csv(&rows)
            }
        }
        "verifications" => {
            let rows = tokio::task::spawn_blocking(move || store.verifications(&period, &view))
                .await
                .map_err(task_failed)??;
            if json {
                serde_json::to_string_pretty(&rows).map_err(|e| internal(format!("export: {e}")))?
            } else {
                workflow::verifications_csv(&rows)
            }
        }
        other => {
            return Err(bad_request(format!(
                "unknown record {other:?}; use services (the Servicios soporte record) or \
                 verifications"
            )))
        }
    };
    let kind = if json {
        "application/json"
    } else {
        "text/csv; charset=utf-8"
    };
    Ok(([(header::CONTENT_TYPE, kind)], text).into_response())
}
