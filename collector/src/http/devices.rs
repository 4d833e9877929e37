//! Devices: the fleet list, one device with its incidents, and whether every event a
//! device sent arrived.
use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use vigia_protocol::{DeviceId, Millis};

use super::auth::Authed;
use super::incidents::{parse_device, reads_all, DEFAULT_LIMIT, MAX_SCAN};
use super::state::{bad_request, invalid};
use super::state::{blocking, not_found, ApiError, HttpState};
use crate::store::{DeviceRecord, IncidentFilter, StateFilter, WarrantyRecord};
use crate::warranty::{match_rows, parse_csv, parse_until, Unmatched, WarrantyView};
use crate::workflow::IncidentSummary;

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
    /// Open incidents of the device (in lists; 0 elsewhere).
    #[serde(default)]
    pub open_incidents: u64,
    /// The asset's warranty, and whether it is in force now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warranty: Option<WarrantyView>,
}

impl DeviceSummary {
    /// Its inventory (host name, OS, kernel, CPU, RAM, model) as placeholders: what an
    /// incident whose device fields are reserved shows a reader without clearance.
    pub fn hide_inventory(&mut self) {
        for f in [
            &mut self.hostname,
            &mut self.os,
            &mut self.kernel,
            &mut self.cpu_model,
            &mut self.model,
        ] {
            if f.is_some() {
                *f = Some(crate::workflow::RESERVED.to_owned());
            }
        }
        self.ram_bytes = None;
    }

    /// The summary of `r` at `now` (the warranty's standing depends on the day).
    pub fn at(r: &DeviceRecord, now: Millis) -> Self {
        let mut s = Self::from(r);
        s.warranty = r.warranty.as_ref().map(|w| WarrantyView::of(w, now));
        s
    }
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
            open_incidents: 0,
            warranty: None,
        }
    }
}

pub(super) async fn list(
    State(st): State<HttpState>,
    a: Authed,
) -> Result<Json<Vec<DeviceSummary>>, ApiError> {
    reads_all(&a.caller)?;
    let store = st.store.clone();
    let now = st.clock.now();
    let caller = a.caller;
    let list = blocking(move || {
        // One pass over the open incidents (bounded by what is open, not by history);
        // a classified one the caller may not see is not counted either.
        let mut open: HashMap<DeviceId, u64> = HashMap::new();
        for s in store
            .incidents(&IncidentFilter {
                state: Some(StateFilter::Open),
                limit: Some(MAX_SCAN),
                ..Default::default()
            })?
            .into_iter()
            .filter_map(|s| caller.narrow_summary(s))
        {
            if let Some(d) = s.device {
                *open.entry(d).or_default() += 1;
            }
        }
        Ok(store
            .devices()?
            .iter()
            .map(|r| {
                let mut d = DeviceSummary::at(r, now);
                d.open_incidents = open.get(&r.device).copied().unwrap_or(0);
                d
            })
            .collect())
    })
    .await?;
    Ok(Json(list))
}

/// `GET /api/devices/{id}`: the full record, whether it is online, and its incidents.
#[derive(Debug, Serialize)]
struct DeviceDetail {
    #[serde(flatten)]
    record: DeviceRecord,
    online: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    warranty_in_force: Option<bool>,
    incidents: Vec<IncidentSummary>,
}

/// A device's stored events, summarised: how many, the first and last seq, and the gaps
/// between them (at most 100 ranges), of the agent instance the device speaks with now
/// (`?instance=N` for another). What an operator asks after an outage: did everything the
/// device sent arrive?
pub(super) async fn events(
    State(st): State<HttpState>,
    a: Authed,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    reads_all(&a.caller)?;
    let device = parse_device(&id)?;
    let instance = match q.instance {
        Some(i) => i,
        None => st.store.device(&device)?.map_or(0, |r| r.instance()),
    };
    let seqs = st.store.event_seqs(&device, instance)?;
    let missing: Vec<[u64; 2]> = seqs
        .windows(2)
        .filter(|w| w[1] > w[0] + 1)
        .map(|w| [w[0] + 1, w[1] - 1])
        .take(100)
        .collect();
    Ok(Json(serde_json::json!({
        "device": device.as_str(),
        "instance": instance,
        "count": seqs.len(),
        "first_seq": seqs.first(),
        "last_seq": seqs.last(),
        "missing": missing,
    }))
    .into_response())
}

/// Query of `GET /api/devices/{id}/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    /// The agent instance (default: the one the device speaks with now).
    instance: Option<u64>,
}

pub(super) async fn show(
    State(st): State<HttpState>,
    a: Authed,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    reads_all(&a.caller)?;
    let device = parse_device(&id)?;
    let Some(record) = st.store.device(&device)? else {
        return Err(not_found(format!("no device {device}")));
    };
    let incidents = st
        .store
        .incidents(&IncidentFilter {
            device: Some(device),
            limit: Some(DEFAULT_LIMIT),
            ..Default::default()
        })?
        .into_iter()
        .filter_map(|s| a.caller.narrow_summary(s))
        .collect();
    let now = st.clock.now();
    Ok(Json(DeviceDetail {
        online: record.online(),
        warranty_in_force: record.warranty.as_ref().map(|w| w.until >= now),
        record,
        incidents,
    })
    .into_response())
}

/// The body of `PUT /api/devices/{id}/warranty`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WarrantyChange {
    provider: String,
    /// A date (`2027-05-31`, covering that whole day) or a UTC time.
    until: String,
}

fn provider_name(p: &str) -> Result<String, ApiError> {
    let p = p.trim();
    if p.is_empty() || p.chars().any(char::is_control) || p.chars().count() > 120 {
        return Err(invalid(
            "the provider must be one line of 1 to 120 characters".into(),
        ));
    }
    Ok(p.to_string())
}

/// Sets (`Some`) or clears the warranty of device `id`, as `a` asks; the device as it is
/// then.
async fn change_warranty(
    st: &HttpState,
    a: &Authed,
    id: &str,
    change: Option<WarrantyChange>,
) -> Result<Json<DeviceSummary>, ApiError> {
    a.caller.may_admin()?;
    let device = parse_device(id)?;
    let now = st.clock.now();
    let w = match change {
        Some(c) => Some(WarrantyRecord {
            provider: provider_name(&c.provider)?,
            until: parse_until(&c.until).map_err(|e| invalid(format!("until: {e}")))?,
            set_by: a.caller.account.login.clone(),
            set_at: now,
        }),
        None => None,
    };
    let store = st.store.clone();
    let rec = blocking(move || {
        if !store.set_warranties(&[(device.clone(), w)])?.is_empty() {
            return Err(not_found(format!("no device {device}")));
        }
        store.flush()?;
        store
            .device(&device)?
            .ok_or_else(|| not_found(format!("no device {device}")))
    })
    .await?;
    tracing::info!(by = %a.caller.account.login, device = %rec.device,
        set = rec.warranty.is_some(), "warranty changed");
    Ok(Json(DeviceSummary::at(&rec, now)))
}

/// `PUT /api/devices/{id}/warranty` (admins): sets the asset's warranty by hand.
pub(super) async fn set_warranty(
    State(st): State<HttpState>,
    a: Authed,
    Path(id): Path<String>,
    Json(c): Json<WarrantyChange>,
) -> Result<Json<DeviceSummary>, ApiError> {
    change_warranty(&st, &a, &id, Some(c)).await
}

/// `DELETE /api/devices/{id}/warranty` (admins).
pub(super) async fn clear_warranty(
    State(st): State<HttpState>,
    a: Authed,
    Path(id): Path<String>,
) -> Result<Json<DeviceSummary>, ApiError> {
    change_warranty(&st, &a, &id, None).await
}

/// What `POST /api/warranties` did.
#[derive(Debug, Serialize)]
pub(super) struct ImportReport {
    /// Rows applied: their line and device.
    applied: Vec<serde_json::Value>,
    /// Rows that matched no device (or several), skipped.
    unmatched: Vec<Unmatched>,
}

/// `POST /api/warranties` (admins), a CSV file as the body (columns `device` or
/// `serial`, `vendor`, `provider`, `until`): a malformed file is refused whole with every
/// bad line; otherwise the rows that find their device are applied together and the
/// others reported.
pub(super) async fn import_warranties(
    State(st): State<HttpState>,
    a: Authed,
    body: String,
) -> Result<Json<ImportReport>, ApiError> {
    a.caller.may_admin()?;
    let rows = parse_csv(&body).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        bad_request(format!(
            "the file was not imported (nothing changed): {}",
            lines.join("; ")
        ))
    })?;
    let (now, by) = (st.clock.now(), a.caller.account.login.clone());
    let store = st.store.clone();
    let report = blocking(move || {
        let (ok, unmatched) = match_rows(&rows, &store.devices()?);
        let items: Vec<(DeviceId, Option<WarrantyRecord>)> = ok
            .iter()
            .map(|m| {
                (
                    m.device.clone(),
                    Some(WarrantyRecord {
                        provider: m.provider.clone(),
                        until: m.until,
                        set_by: by.clone(),
                        set_at: now,
                    }),
                )
            })
            .collect();
        store.set_warranties(&items)?;
        store.flush()?;
        Ok(ImportReport {
            applied: ok
                .iter()
                .map(|m| serde_json::json!({"line": m.line, "device": m.device.as_str()}))
                .collect(),
            unmatched,
        })
    })
    .await?;
    tracing::info!(by = %a.caller.account.login, applied = report.applied.len(),
        unmatched = report.unmatched.len(), "warranties imported");
    Ok(Json(report))
}
