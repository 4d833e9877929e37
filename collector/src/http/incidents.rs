//! Incidents: lists (one page, newest first, from the store's indexes, narrowed by the
//! filters the indexes do not cover), counts, one incident with its audit trail and the
//! actions its viewer may take, the workflow actions one at a time or in bulk.
//!
//! Every handler takes an [`Authed`] caller and asks [`crate::auth::access`] before it
//! reads or changes anything; the audit trail records the authenticated account.
use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tracing::info;
use vigia_protocol::{DeviceId, Millis};

use super::auth::Authed;
use super::devices::DeviceSummary;
use super::state::{bad_request, blocking, internal, not_found, ApiError, HttpState};
use crate::auth::{Caller, Denied};
use crate::outbox::deliver;
use crate::store::{IncidentFilter, SharedStore, StateFilter};
use crate::workflow::actions::{available, ActionSpec};
use crate::workflow::{
    self, Command, Decision, Incident, IncidentSummary, Level, Policy, Priority, ReservedField,
    SlaStatus, State as WfState,
};

/// The most summaries one list request reads to apply the filters the indexes do not
/// cover (group, assignee, kind, tag, text, mine): a list over all history with such a
/// filter answers from the newest this many.
pub const MAX_SCAN: usize = 20_000;

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
    /// A support group.
    pub group: Option<String>,
    /// A person's login (`none`: unassigned).
    pub assignee: Option<String>,
    /// A fault kind or report category.
    pub kind: Option<String>,
    /// A device tag (`site=madrid`).
    pub tag: Option<String>,
    /// Words in the title, subject, device, kind, category or assignee.
    pub q: Option<String>,
    /// Only mine: assigned to me, in my groups, or unassigned at my level.
    pub mine: Option<bool>,
    /// Page, from 1.
    pub page: Option<usize>,
    /// Page size (default 50, at most 1000), newest first.
    pub limit: Option<usize>,
}

pub(super) fn parse_device(s: &str) -> Result<DeviceId, ApiError> {
    DeviceId::new(s).map_err(|e| bad_request(format!("device {s:?}: {e}")))
}

impl IncidentQuery {
    /// A query without any filter.
    pub fn empty() -> Self {
        Self {
            state: None,
            level: None,
            priority: None,
            device: None,
            group: None,
            assignee: None,
            kind: None,
            tag: None,
            q: None,
            mine: None,
            page: None,
            limit: None,
        }
    }

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

/// The filters a list applies to summaries after the store's indexes.
#[derive(Debug, Clone, Default)]
struct Narrow {
    group: Option<String>,
    assignee: Option<Option<String>>,
    kind: Option<String>,
    tag: Option<String>,
    words: Vec<String>,
    mine: bool,
}

impl Narrow {
    fn of(q: &IncidentQuery) -> Self {
        let some = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        Self {
            group: some(&q.group),
            assignee: some(&q.assignee).map(|a| (a != "none").then_some(a)),
            kind: some(&q.kind),
            tag: some(&q.tag),
            words: q
                .q
                .as_deref()
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_lowercase)
                .collect(),
            mine: q.mine.unwrap_or(false),
        }
    }

    fn is_empty(&self) -> bool {
        self.group.is_none()
            && self.assignee.is_none()
            && self.kind.is_none()
            && self.tag.is_none()
            && self.words.is_empty()
            && !self.mine
    }

    fn keeps(&self, s: &IncidentSummary, caller: &Caller) -> bool {
        let eq = |a: Option<&str>, b: &str| a.is_some_and(|a| a.eq_ignore_ascii_case(b));
        if self
            .group
            .as_deref()
            .is_some_and(|g| !eq(s.group.as_deref(), g))
        {
            return false;
        }
        if let Some(a) = &self.assignee {
            if s.assignee.as_deref() != a.as_deref() {
                return false;
            }
        }
        if let Some(k) = &self.kind {
            if !s.kind.eq_ignore_ascii_case(k) && !eq(s.category.as_deref(), k) {
                return false;
            }
        }
        if let Some(t) = &self.tag {
            if !s.tags.iter().any(|x| x.eq_ignore_ascii_case(t)) {
                return false;
            }
        }
        if !self.words.is_empty() {
            let hay = format!(
                "{} {} {} {} {} {} #{}",
                s.title,
                s.subject,
                s.device.as_ref().map_or("", |d| d.as_str()),
                s.kind,
                s.category.as_deref().unwrap_or(""),
                s.assignee.as_deref().unwrap_or(""),
                s.number
            )
            .to_lowercase();
            if !self.words.iter().all(|w| hay.contains(w.as_str())) {
                return false;
            }
        }
        !self.mine || caller.is_mine_summary(s)
    }
}

/// The page `filter` and `narrow` select, as `caller` may see it.
fn select(
    store: &SharedStore,
    caller: &Caller,
    mut filter: IncidentFilter,
    narrow: &Narrow,
) -> Result<Vec<IncidentSummary>, ApiError> {
    let providers_view = !caller.reads_all();
    if narrow.is_empty() && !providers_view {
        let page = store.incidents(&filter)?;
        return Ok(page
            .into_iter()
            .filter_map(|s| caller.narrow_summary(s))
            .collect());
    }
    // A provider's contact sees only what is addressed to it, among open incidents.
    if providers_view && filter.state.is_none() {
        filter.state = Some(StateFilter::Open);
    }
    let (offset, limit) = (filter.offset, filter.limit.unwrap_or(MAX_LIMIT));
    let mut out = Vec::new();
    let mut skipped = 0;
    let mut scanned = 0;
    const CHUNK: usize = 500;
    while scanned < MAX_SCAN && out.len() < limit {
        let chunk = store.incidents(&IncidentFilter {
            offset: scanned,
            limit: Some(CHUNK),
            ..filter.clone()
        })?;
        scanned += chunk.len();
        let last = chunk.len() < CHUNK;
        for s in chunk {
            // Filters match what the caller may read, never a reserved field's text.
            let Some(s) = caller.narrow_summary(s) else {
                continue;
            };
            if !narrow.keeps(&s, caller) {
                continue;
            }
            if providers_view {
                match store.incident(s.number)? {
                    Some(inc) if caller.may_see(&inc) => {}
                    _ => continue,
                }
            }
            if skipped < offset {
                skipped += 1;
            } else if out.len() < limit {
                out.push(s);
            }
        }
        if last {
            break;
        }
    }
    Ok(out)
}

pub(super) async fn list(
    State(st): State<HttpState>,
    a: Authed,
    Query(q): Query<IncidentQuery>,
) -> Result<Response, ApiError> {
    let filter = q.filter()?;
    let narrow = Narrow::of(&q);
    // The feed's position before the store is read: a stream started after it misses
    // nothing the list does not show.
    let position = st.feed.position();
    let store = st.store.clone();
    let list = blocking(move || select(&store, &a.caller, filter, &narrow)).await?;
    let mut resp = Json(list).into_response();
    if let Ok(v) = HeaderValue::from_str(&position) {
        resp.headers_mut().insert("x-feed-position", v);
    }
    Ok(resp)
}

/// `GET /api/counts`: open incidents by state and by level, as the caller sees them.
#[derive(Debug, Serialize)]
pub struct Counts {
    /// Open incidents per state.
    pub by_state: BTreeMap<String, u64>,
    /// Open incidents per level.
    pub by_level: BTreeMap<String, u64>,
    /// Mine (assigned to me, my groups', unassigned at my level), open.
    pub mine: u64,
}

pub(super) async fn counts(
    State(st): State<HttpState>,
    a: Authed,
) -> Result<Json<Counts>, ApiError> {
    let store = st.store.clone();
    let open = blocking(move || {
        let filter = IncidentFilter {
            state: Some(StateFilter::Open),
            limit: Some(MAX_SCAN),
            ..Default::default()
        };
        select(&store, &a.caller, filter, &Narrow::default()).map(|v| (v, a))
    })
    .await?;
    let (open, a) = open;
    let mut c = Counts {
        by_state: BTreeMap::new(),
        by_level: BTreeMap::new(),
        mine: 0,
    };
    for s in &open {
        *c.by_state.entry(s.state.to_string()).or_default() += 1;
        *c.by_level.entry(s.level.to_string()).or_default() += 1;
        if a.caller.is_mine_summary(s) {
            c.mine += 1;
        }
    }
    Ok(Json(c))
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
    /// The SLA at a glance (as lists show it).
    pub sla_brief: workflow::SlaBrief,
    /// The SLA in full.
    pub sla_status: SlaStatus,
    /// The device as the collector knows it now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_info: Option<DeviceSummary>,
    /// What the caller may do now (their role, the incident's state), with each action's
    /// fields: the console draws its buttons from this.
    pub allowed: Vec<&'static ActionSpec>,
    /// What was sent to whom about it and when, or is still being tried (staff only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<crate::notify::NotifyEntry>,
    /// The fields its information classification hides from this caller (they read
    /// as `[reserved]`); empty when the caller reads it all.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hidden: Vec<ReservedField>,
    /// Its information classification now: public once a reserve has lapsed.
    pub information: workflow::Secrecy,
}

impl IncidentDetail {
    /// The detail of `incident` under `policy`, without the caller's actions.
    pub fn new(incident: Incident, policy: &Policy) -> Self {
        Self::for_caller(incident, policy, None, 0, None)
    }

    /// The detail of `incident` as `caller` sees it at `now`.
    pub fn for_caller(
        incident: Incident,
        policy: &Policy,
        caller: Option<&Caller>,
        now: Millis,
        mut device_info: Option<DeviceSummary>,
    ) -> Self {
        let hidden = caller
            .and_then(|c| c.hidden_by(incident.reserve.as_ref()))
            .cloned()
            .unwrap_or_default();
        let mut s = IncidentSummary::of(&incident, policy);
        workflow::hide_summary(&mut s, &hidden);
        if hidden.contains(&ReservedField::Device) {
            if let Some(d) = &mut device_info {
                d.hide_inventory();
            }
        }
        let allowed = caller.map_or_else(Vec::new, |c| {
            available(&incident, &c.account.person(), now, policy, |cmd| {
                c.may_act(&incident, cmd).is_ok()
            })
        });
        let sla_status = workflow::sla_status(&incident, now, policy);
        let information = incident.secrecy(now);
        let incident = match caller {
            Some(c) => c.narrow(incident),
            None => incident,
        };
        Self {
            sla_brief: s.sla,
            sla_status,
            device_info,
            allowed,
            kind: s.kind,
            subject: s.subject,
            severity: s.severity,
            priority: s.priority,
            title: s.title,
            updated_at: s.updated_at,
            next_deadline: s.next_deadline,
            incident,
            notifications: Vec::new(),
            hidden: hidden.into_iter().collect(),
            information,
        }
    }
}

fn parse_number(id: &str) -> Result<u64, ApiError> {
    id.trim_start_matches('#')
        .parse()
        .map_err(|_| bad_request(format!("incident id {id:?} is not a number")))
}

/// The detail of incident `n` for `caller`, or 404 when it does not exist or the
/// caller may not see it (a provider's contact learns nothing of other incidents).
fn detail(st: &HttpState, caller: &Caller, n: u64) -> Result<IncidentDetail, ApiError> {
    let inc = st
        .store
        .incident(n)?
        .filter(|i| caller.may_see(i))
        .ok_or_else(|| not_found(format!("no incident {n}")))?;
    let device = match &inc.device {
        Some(id) => st
            .store
            .device(id)?
            .as_ref()
            .map(|r| DeviceSummary::at(r, st.clock.now())),
        None => None,
    };
    let reserve = inc.reserve.clone();
    let mut d = IncidentDetail::for_caller(inc, &st.policy, Some(caller), st.clock.now(), device);
    if caller.reads_all() {
        d.notifications = st
            .store
            .notifications_of(n)?
            .into_iter()
            .filter_map(|mut e| {
                e.text = caller.narrow_text(reserve.as_ref(), &e.text)?;
                if caller
                    .hidden_by(reserve.as_ref())
                    .is_some_and(|f| f.contains(&ReservedField::Description))
                {
                    e.title = workflow::RESERVED.to_owned();
                }
                Some(e)
            })
            .collect();
    }
    Ok(d)
}

pub(super) async fn show(
    State(st): State<HttpState>,
    a: Authed,
    Path(id): Path<String>,
) -> Result<Json<IncidentDetail>, ApiError> {
    let n = parse_number(&id)?;
    let st2 = st.clone();
    Ok(Json(blocking(move || detail(&st2, &a.caller, n)).await?))
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

/// Runs `command` on incident `n` as `caller`: authorised, applied in one store
/// transaction, flushed, and only then delivered.
pub(super) async fn run_command(
    st: &HttpState,
    caller: &Caller,
    n: u64,
    mut command: Command,
) -> Result<Decision, ApiError> {
    let now = st.clock.now();
    let (store, policy, c) = (st.store.clone(), st.policy.clone(), caller.clone());
    let what = command.name();
    let decision = blocking(move || {
        let inc = store
            .incident(n)?
            .filter(|i| c.may_see(i))
            .ok_or_else(|| not_found(format!("no incident {n}")))?;
        c.may_act(&inc, &command)?;
        if let Command::RequestProvider(spec) = &mut command {
            crate::providers::contract_deadlines(spec, &inc, &store.providers()?, now);
        }
        let d = store.apply_command(n, &c.account.person(), &command, now, &policy)?;
        // Durable before anything leaves.
        store.flush()?;
        Ok::<_, ApiError>(d)
    })
    .await?;
    st.metrics.action(what);
    info!(incident = n, actor = %caller.account.login, action = what,
        state = %decision.incident.state, "incident action");
    let pairs = vec![(decision, false)];
    deliver(&pairs, &st.downlink, &st.feed, &st.policy);
    st.wake.notify_one();
    pairs
        .into_iter()
        .next()
        .map(|(d, _)| d)
        .ok_or_else(|| internal("lost the decision".into()))
}

pub(super) async fn act(
    State(st): State<HttpState>,
    a: Authed,
    Path((id, action)): Path<(String, String)>,
    Json(fields): Json<serde_json::Map<String, serde_json::Value>>,
) -> Result<Json<IncidentDetail>, ApiError> {
    let n = parse_number(&id)?;
    // Who may not see the incident learns nothing of it, not even what its body lacks.
    let (store, c) = (st.store.clone(), a.caller.clone());
    blocking(move || {
        store
            .incident(n)?
            .filter(|i| c.may_see(i))
            .map(drop)
            .ok_or_else(|| not_found(format!("no incident {n}")))
    })
    .await?;
    for old in ["as", "roles"] {
        if fields.contains_key(old) {
            return Err(bad_request(format!(
                "the body must not name {old:?}: the actor is the signed-in account"
            )));
        }
    }
    let command = own_request(command_of(&action, fields).map_err(bad_request)?);
    let d = match run_command(&st, &a.caller, n, command).await {
        Ok(d) => d,
        // A provider request that named nobody: say who has a contract for it.
        Err(mut e) if e.message.contains("no provider named") => {
            let st2 = st.clone();
            let hint = blocking(move || super::providers::contract_hint(&st2, n)).await?;
            e.message.push_str(&hint);
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let device = {
        let store = st.store.clone();
        let dev = d.incident.device.clone();
        blocking(move || match dev {
            Some(id) => Ok(store.device(&id)?.as_ref().map(DeviceSummary::from)),
            None => Ok(None),
        })
        .await?
    };
    Ok(Json(IncidentDetail::for_caller(
        d.incident,
        &st.policy,
        Some(&a.caller),
        st.clock.now(),
        device,
    )))
}

/// `POST /api/incidents/bulk`: one action on several incidents.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    /// The incidents.
    pub numbers: Vec<u64>,
    /// The action (`assign`, `escalate`, `note`, `resolve`...).
    pub action: String,
    /// Its fields.
    #[serde(default)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// One incident's result in a bulk action.
#[derive(Debug, Serialize)]
pub struct BulkResult {
    /// The incident.
    pub number: u64,
    /// Whether the action was taken.
    pub ok: bool,
    /// Why not: a stable code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    /// Why not, for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The state after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<WfState>,
}

/// The most incidents one bulk request takes.
pub const MAX_BULK: usize = 200;

pub(super) async fn bulk(
    State(st): State<HttpState>,
    a: Authed,
    Json(b): Json<BulkBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if b.numbers.is_empty() || b.numbers.len() > MAX_BULK {
        return Err(bad_request(format!(
            "give 1 to {MAX_BULK} incident numbers"
        )));
    }
    let command = own_request(command_of(&b.action, b.fields).map_err(bad_request)?);
    let mut results = Vec::with_capacity(b.numbers.len());
    for n in b.numbers {
        let r = match run_command(&st, &a.caller, n, command.clone()).await {
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
        };
        results.push(r);
    }
    Ok(Json(serde_json::json!({ "results": results })))
}

/// `command` as an incident's own: a provider request made on one incident (or on each
/// of a bulk selection) gets its own id; only `POST /api/requests` shares one.
fn own_request(mut command: Command) -> Command {
    if let Command::RequestProvider(spec) = &mut command {
        spec.request = None;
    }
    command
}

/// A forbidden answer for callers who may not read the whole fleet.
pub(super) fn reads_all(caller: &Caller) -> Result<(), ApiError> {
    if caller.reads_all() {
        Ok(())
    } else {
        Err(Denied {
            code: "forbidden",
            why: "a provider's contact sees only the incidents addressed to it".into(),
        }
        .into())
    }
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
            ..IncidentQuery::empty()
        };
        let f = q.filter().unwrap();
        assert_eq!((f.offset, f.limit), (0, Some(50)));
        assert_eq!(f.state, Some(StateFilter::Open));
        assert_eq!(f.level, Some(Level::L2));
        let q = IncidentQuery {
            state: Some("bogus".into()),
            page: Some(3),
            limit: Some(5000),
            ..IncidentQuery::empty()
        };
        assert!(q.filter().is_err());
    }

    fn summary(group: Option<&str>, assignee: Option<&str>, tags: &[&str]) -> IncidentSummary {
        let origin = crate::workflow::Origin::Report {
            report_id: 1,
            category: "printer".into(),
            summary: "Printer jams on floor 3".into(),
            text: "t".into(),
            reporter: "ana".into(),
            contact: "x".into(),
            urgency: vigia_protocol::Urgency::Medium,
            snapshot: vec![],
            open_faults: vec![],
        };
        let mut inc = crate::workflow::open(
            4,
            DeviceId::new("ws-7").unwrap(),
            origin,
            crate::workflow::DeviceContext {
                tags: tags.iter().map(|t| t.to_string()).collect(),
                warranty: None,
            },
            crate::workflow::Actor::System,
            0,
            &Policy::default(),
        )
        .incident;
        inc.group = group.map(str::to_owned);
        inc.assignee = assignee.map(str::to_owned);
        IncidentSummary::of(&inc, &Policy::default())
    }

    #[test]
    fn the_filters_the_indexes_do_not_cover_narrow_a_list() {
        let mut account =
            crate::auth::Account::new("tomas", [crate::auth::AccountRole::Technician], 0);
        account.level = Some(Level::L2);
        account.groups = ["soporte".to_string()].into();
        let tomas = Caller {
            account,
            scope: crate::auth::Scope::Act,
            now: 0,
        };
        let q = |f: &dyn Fn(&mut IncidentQuery)| {
            let mut q = IncidentQuery::empty();
            f(&mut q);
            Narrow::of(&q)
        };
        let s = summary(Some("soporte"), None, &["site=madrid"]);
        let keeps = |n: &Narrow| n.keeps(&s, &tomas);
        assert!(keeps(&q(&|q| q.group = Some("SOPORTE".into()))));
        assert!(!keeps(&q(&|q| q.group = Some("redes".into()))));
        assert!(keeps(&q(&|q| q.assignee = Some("none".into()))));
        assert!(!keeps(&q(&|q| q.assignee = Some("luis".into()))));
        assert!(keeps(&q(&|q| q.kind = Some("printer".into()))));
        assert!(!keeps(&q(&|q| q.kind = Some("disk_space".into()))));
        assert!(keeps(&q(&|q| q.tag = Some("site=madrid".into()))));
        assert!(!keeps(&q(&|q| q.tag = Some("site=sevilla".into()))));
        assert!(keeps(&q(&|q| q.q = Some("floor ws-7".into()))));
        assert!(!keeps(&q(&|q| q.q = Some("floor toner".into()))));
        // Mine: in my group here; not when it is someone else's outside my groups.
        assert!(keeps(&q(&|q| q.mine = Some(true))));
        let other = summary(Some("redes"), Some("luis"), &[]);
        assert!(!q(&|q| q.mine = Some(true)).keeps(&other, &tomas));
        assert!(Narrow::of(&IncidentQuery::empty()).is_empty());
    }
}
