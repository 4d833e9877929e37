//! Incidents: lists (one page, newest first, from the store's indexes), one incident
//! with its audit trail, and the workflow actions.
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use tracing::info;
use vigia_protocol::{DeviceId, Millis};

use super::state::{bad_request, not_found, task_failed, ApiError, HttpState};
use crate::outbox::{deliver, DeviceCommands};
use crate::store::{IncidentFilter, StateFilter, StoreError};
use crate::workflow::{
    self, Command, Incident, IncidentSummary, Level, Person, Policy, Priority, Role,
    State as WfState,
};

/// Default page of an incident list.
pub const DEFAULT_LIMIT: usize = 50;
/// The largest page.
pub const MAX_LIMIT: usize = 1000;

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

pub(super) fn parse_device(s: &str) -> Result<DeviceId, ApiError> {
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

pub(super) async fn list(
    State(st): State<HttpState>,
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

pub(super) async fn show(
    State(st): State<HttpState>,
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

/// The [`Command`] that `action` names (its `command` tag, with `-` for `_` allowed:
/// `request-info` is `request_info`), built from the body's fields. The workflow's
/// `Command` is the one list of actions: the CLI builds one and posts its fields here.
pub fn command_of(
    action: &str,
    mut fields: serde_json::Map<String, serde_json::Value>,
) -> Result<Command, String> {
    if fields.contains_key("command") {
        return Err("the URL names the action; the body must not have a \"command\" field".into());
    }
    let name = action.replace('-', "_");
    fields.insert("command".into(), serde_json::Value::String(name));
    serde_json::from_value(serde_json::Value::Object(fields)).map_err(|e| {
        if e.to_string().starts_with("unknown variant") {
            format!("unknown action {action:?}: {e}")
        } else {
            format!("{action}: {e}")
        }
    })
}

pub(super) async fn act(
    State(st): State<HttpState>,
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
    deliver(
        &pairs,
        &st.downlink,
        &st.feed,
        &st.policy,
        now,
        DeviceCommands::Send,
    )
    .await;
    st.wake.notify_one();
    let (d, _) = pairs.pop().ok_or_else(|| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "lost the decision".into(),
        )
    })?;
    Ok(Json(IncidentDetail::new(d.incident, &st.policy)))
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
    fn every_action_builds_its_command_under_its_own_name() {
        let cases = [
            ("validate", json!({})),
            ("assign", json!({"assignee": "luis"})),
            ("escalate", json!({"to": 3, "why": "x"})),
            ("resolve", json!({"solution": "x"})),
            ("close", json!({})),
            ("reopen", json!({"why": "x"})),
            ("note", json!({"text": "x"})),
            ("request_info", json!({"question": "x"})),
            ("info_received", json!({"text": "x"})),
            ("confirm", json!({})),
            ("not_reproduced", json!({"note": "x"})),
            ("classify", json!({"priority": "P1", "resources": ["disk"]})),
            (
                "request_provider",
                json!({"provider": "acme", "kind": "unplanned", "agreed_at": 5}),
            ),
            ("provider_delivered", json!({"as_agreed": true})),
        ];
        for (action, body) in cases {
            let c = command_of(action, fields(body.clone()))
                .unwrap_or_else(|e| panic!("{action}: {e}"));
            // One vocabulary: the URL's name, the serde tag and `Command::name` agree.
            assert_eq!(c.name(), action);
            assert_eq!(serde_json::to_value(&c).unwrap()["command"], action);
            let kebab = action.replace('_', "-");
            assert_eq!(command_of(&kebab, fields(body)).unwrap(), c, "{kebab}");
        }
        assert!(command_of("frobnicate", fields(json!({})))
            .unwrap_err()
            .contains("unknown action"));
        assert!(command_of("note", fields(json!({"command": "close", "text": "x"}))).is_err());
        // A mistyped field of a strict command is refused, not ignored.
        assert!(command_of("classify", fields(json!({"priorty": "P1"}))).is_err());
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
