//! The collector's durable store (sled): devices, events exactly once per `(device, seq)`,
//! workflow incidents with their audit trails, the indexes the feed and the API read, and
//! the timer queue.
//!
//! Every change to an incident is ONE sled transaction: the incident (which carries its
//! own audit trail, so the records can never be written without the state they explain),
//! its list summary, every index entry, its timer, the per-state counters and, for device
//! events, the event itself. The caller then [`Store::flush`]es before it acks or sends a
//! command (sled's own flush timer is not durability). Values are JSON (serde): some bytes
//! and CPU against a binary format, in exchange for serde migrations and a database any
//! sled tool can read.
//!
//! Trees: `devices`; `events` (`device\0seq`); `incidents` (number, big-endian, so number
//! order is opening order); `summaries` (number → [`IncidentSummary`], so a list page never
//! decodes audit trails); `fault_index` (`device\0kind\0subject` → the latest incident of
//! that key, open or closed, for correlation); `idx` (secondary indexes, key only, each
//! ending in the number so a reverse prefix scan is newest first); `timers` (`deadline,
//! number` → (), the earliest first); `meta` (incident counter, per-state counts).
//!
//! `idx` prefixes: `S state`, `La level` / `Lo level` (all / open only), `Pa p` / `Po p`,
//! `Da device\0` / `Do device\0`, `Oa` / `Oo` (every / every open incident), `T opened_at`
//! (for the export's period), each followed by the number inverted (`!n`), so a forward
//! prefix scan — sled's fast direction — yields the newest first. The trade-off: about
//! ten small keys per incident and a read of the old summary on every write, so that
//! every list the API serves is a prefix scan that stops after one page.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;
use vigia_protocol::{
    Birth, CmdBody, DeviceId, Event, EventBody, FaultKind, Millis, Severity, Status,
};

use crate::feed::IncidentSummary;
use crate::workflow::{
    self, Actor, Command, Correlation, Decision, DeviceContext, DeviceEvent, ExportRow, FaultInput,
    Incident, IncidentNo, Input, Level, Origin, Period, Person, Policy, Priority, State,
    WorkflowError,
};

const NEXT_INCIDENT: &[u8] = b"next_incident";
const COUNT_PREFIX: &str = "count/";

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (disk full, I/O error, corrupt file).
    #[error("store I/O error: {0}")]
    Sled(#[from] sled::Error),
    /// A stored value could not be (de)serialized.
    #[error("store value for {what} is unreadable: {source}")]
    Codec {
        /// Which value.
        what: &'static str,
        /// Why.
        source: serde_json::Error,
    },
    /// A stored key or counter has the wrong length.
    #[error("store key or counter {0} is corrupt")]
    Corrupt(&'static str),
    /// No such incident.
    #[error("no incident {0}")]
    NotFound(IncidentNo),
    /// The workflow refused the change; nothing was written.
    #[error(transparent)]
    Workflow(#[from] WorkflowError),
}

/// A device's last known online state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStatus {
    /// Online or not.
    pub online: bool,
    /// The agent session this belongs to.
    pub boot: u64,
    /// The device's timestamp on the status message.
    pub ts: Millis,
    /// When the collector stored it.
    pub received_at: Millis,
}

/// What the agent said it dropped from a full spool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedRecord {
    /// Events dropped, all notices summed.
    pub total: u64,
    /// The worst severity among them.
    pub worst: Severity,
    /// When the last notice arrived.
    pub last_at: Millis,
}

/// Everything known about a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// The device.
    pub device: DeviceId,
    /// First message seen (collector clock).
    pub first_seen: Millis,
    /// Last message seen (collector clock).
    pub last_seen: Millis,
    /// The newest inventory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth: Option<Birth>,
    /// Online or not, by `boot` order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DeviceStatus>,
    /// Spool overflow notices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<DroppedRecord>,
}

impl DeviceRecord {
    fn new(device: DeviceId, now: Millis) -> Self {
        Self {
            device,
            first_seen: now,
            last_seen: now,
            birth: None,
            status: None,
            dropped: None,
        }
    }

    /// Whether the device's newest session is online.
    pub fn online(&self) -> bool {
        self.status.as_ref().is_some_and(|s| s.online)
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// The event as received.
    pub event: Event,
    /// When the collector stored it.
    pub received_at: Millis,
    /// The incident it opened or touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<u64>,
}

/// What storing an event did.
#[derive(Debug, Clone, PartialEq)]
pub struct EventOutcome {
    /// The `(device, seq)` was already stored: nothing changed (ack it again).
    pub duplicate: bool,
    /// The workflow decision the event caused, and whether it opened the incident.
    pub decision: Option<(Decision, bool)>,
    /// Commands to send the device, after the flush. On a duplicate report this is the
    /// `ReportAccepted` again, since the first answer may be what got lost.
    pub cmds: Vec<CmdBody>,
    /// The workflow refused the event (it is stored, nothing else changed).
    pub refused: Option<WorkflowError>,
}

/// Whether a status message changed the device's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusOutcome {
    /// Applied; `changed` when online/offline flipped (or it is the first status).
    Applied {
        /// Online/offline flipped or first seen.
        changed: bool,
    },
    /// Older than what is on file (an older `boot`, or an online after this session's
    /// offline): ignored.
    Stale,
}

/// Which states a list selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateFilter {
    /// Every state but closed.
    Open,
    /// One state.
    Is(State),
}

/// Filters for [`Store::incidents`]; all given filters must match.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    /// States.
    pub state: Option<StateFilter>,
    /// Level.
    pub level: Option<Level>,
    /// Priority.
    pub priority: Option<Priority>,
    /// Device.
    pub device: Option<DeviceId>,
    /// Incidents to skip (page × limit).
    pub offset: usize,
    /// At most this many (newest first); `None` is no limit.
    pub limit: Option<usize>,
}

/// The store. Cheap to clone (sled handles are reference counted).
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    devices: sled::Tree,
    events: sled::Tree,
    incidents: sled::Tree,
    summaries: sled::Tree,
    fault_index: sled::Tree,
    idx: sled::Tree,
    timers: sled::Tree,
    meta: sled::Tree,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn enc<T: Serialize>(what: &'static str, v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|source| StoreError::Codec { what, source })
}

fn dec<T: serde::de::DeserializeOwned>(what: &'static str, b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|source| StoreError::Codec { what, source })
}

fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

fn u64_of(what: &'static str, b: &[u8]) -> Result<u64, StoreError> {
    let arr: [u8; 8] = b.try_into().map_err(|_| StoreError::Corrupt(what))?;
    Ok(u64::from_be_bytes(arr))
}

/// The number at the end of a timer key.
fn tail_number(k: &[u8]) -> Result<u64, StoreError> {
    let start = k
        .len()
        .checked_sub(8)
        .ok_or(StoreError::Corrupt("timer key"))?;
    u64_of("timer key", &k[start..])
}

/// The number at the end of an `idx` key, stored inverted so that a forward scan (fast
/// in sled, unlike a reverse one) is newest first.
fn idx_number(k: &[u8]) -> Result<u64, StoreError> {
    let start = k
        .len()
        .checked_sub(8)
        .ok_or(StoreError::Corrupt("index key"))?;
    Ok(!u64_of("index key", &k[start..])?)
}

fn event_key(device: &DeviceId, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(device.as_str().len() + 9);
    k.extend_from_slice(device.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn fault_key_bytes(device: &DeviceId, kind: FaultKind, subject: &str) -> Vec<u8> {
    let mut k = Vec::new();
    k.extend_from_slice(device.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(kind.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(subject.as_bytes());
    k
}

fn state_byte(s: State) -> u8 {
    State::ALL.iter().position(|x| *x == s).unwrap_or(0) as u8
}

fn priority_byte(p: Priority) -> u8 {
    match p {
        Priority::P1 => 1,
        Priority::P2 => 2,
        Priority::P3 => 3,
        Priority::P4 => 4,
    }
}

fn count_key(state: State) -> Vec<u8> {
    format!("{COUNT_PREFIX}{}", state.as_str()).into_bytes()
}

fn timer_key(deadline: Millis, number: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(16);
    k.extend_from_slice(&deadline.to_be_bytes());
    k.extend_from_slice(&number.to_be_bytes());
    k
}

/// An `idx` key: the parts, then the number inverted (see [`idx_number`]).
fn key(parts: &[&[u8]], number: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>() + 8);
    for p in parts {
        k.extend_from_slice(p);
    }
    k.extend_from_slice(&(!number).to_be_bytes());
    k
}

/// Every `idx` key of an incident, from its summary.
fn index_keys(s: &IncidentSummary) -> BTreeSet<Vec<u8>> {
    let n = s.number;
    let open = s.state.is_open();
    let mut dev = s.device.as_str().as_bytes().to_vec();
    dev.push(0);
    let mut out = BTreeSet::new();
    out.insert(key(&[b"S", &[state_byte(s.state)]], n));
    out.insert(key(&[b"T", &s.opened_at.to_be_bytes()], n));
    for (scope, on) in [(b"a", true), (b"o", open)] {
        if !on {
            continue;
        }
        out.insert(key(&[b"L", scope, &[s.level.number()]], n));
        if let Some(p) = s.priority {
            out.insert(key(&[b"P", scope, &[priority_byte(p)]], n));
        }
        out.insert(key(&[b"D", scope, &dev], n));
        out.insert(key(&[b"O", scope], n));
    }
    out
}

/// The device facts triage reads, from the device's newest birth.
pub fn device_context(rec: Option<&DeviceRecord>) -> DeviceContext {
    DeviceContext {
        tags: rec
            .and_then(|r| r.birth.as_ref())
            .map(|b| b.tags.iter().map(|t| t.as_str().to_owned()).collect())
            .unwrap_or_default(),
        // The inventory does not carry warranties yet.
        warranty: None,
    }
}

/// The transactional view of the trees an incident change touches.
struct Tx<'a> {
    events: &'a TransactionalTree,
    incidents: &'a TransactionalTree,
    summaries: &'a TransactionalTree,
    fault_index: &'a TransactionalTree,
    idx: &'a TransactionalTree,
    timers: &'a TransactionalTree,
    meta: &'a TransactionalTree,
    devices: &'a TransactionalTree,
}

impl Tx<'_> {
    fn load_incident(&self, n: u64) -> TxResult<Option<Incident>> {
        match self.incidents.get(n.to_be_bytes())? {
            Some(b) => Ok(Some(dec("incident", &b).map_err(abort)?)),
            None => Ok(None),
        }
    }

    fn bump_count(&self, state: State, delta: i64) -> TxResult<()> {
        let key = count_key(state);
        let cur = match self.meta.get(&key)? {
            Some(b) => u64_of("incident count", &b).map_err(abort)?,
            None => 0,
        };
        let next = cur.saturating_add_signed(delta);
        self.meta.insert(key, &next.to_be_bytes())?;
        Ok(())
    }

    fn next_number(&self) -> TxResult<u64> {
        let n = match self.meta.get(NEXT_INCIDENT)? {
            Some(b) => u64_of("incident counter", &b).map_err(abort)?,
            None => 1,
        };
        self.meta.insert(NEXT_INCIDENT, &(n + 1).to_be_bytes())?;
        Ok(n)
    }

    /// Writes an incident with its summary, index entries, timer and counts.
    fn save(&self, inc: &Incident, policy: &Policy) -> TxResult<IncidentSummary> {
        let n = inc.number;
        let old: Option<IncidentSummary> = match self.summaries.get(n.to_be_bytes())? {
            Some(b) => Some(dec("summary", &b).map_err(abort)?),
            None => None,
        };
        let new = IncidentSummary::new(inc, workflow::next_deadline(inc, policy));
        let old_keys = old.as_ref().map(index_keys).unwrap_or_default();
        let new_keys = index_keys(&new);
        for k in old_keys.difference(&new_keys) {
            self.idx.remove(k.as_slice())?;
        }
        for k in new_keys.difference(&old_keys) {
            self.idx.insert(k.as_slice(), &[])?;
        }
        let old_timer = old.as_ref().and_then(|o| o.next_deadline);
        if old_timer != new.next_deadline {
            if let Some(t) = old_timer {
                self.timers.remove(timer_key(t, n))?;
            }
            if let Some(t) = new.next_deadline {
                self.timers.insert(timer_key(t, n), &[])?;
            }
        }
        let old_state = old.as_ref().map(|o| o.state);
        if old_state != Some(inc.state) {
            if let Some(s) = old_state {
                self.bump_count(s, -1)?;
            }
            self.bump_count(inc.state, 1)?;
        }
        if let Some(k) = inc.fault_key() {
            let fk = fault_key_bytes(&k.device, k.kind, &k.subject);
            // The newest incident of a key is the one correlation must see.
            let newer = match self.fault_index.get(&fk)? {
                Some(b) => u64_of("fault index", &b).map_err(abort)? > n,
                None => false,
            };
            if !newer {
                self.fault_index.insert(fk, &n.to_be_bytes())?;
            }
        }
        self.incidents
            .insert(&n.to_be_bytes(), enc("incident", inc).map_err(abort)?)?;
        self.summaries
            .insert(&n.to_be_bytes(), enc("summary", &new).map_err(abort)?)?;
        Ok(new)
    }

    fn load_device(&self, device: &DeviceId, now: Millis) -> TxResult<DeviceRecord> {
        let mut rec = match self.devices.get(device.as_str())? {
            Some(b) => dec::<DeviceRecord>("device", &b).map_err(abort)?,
            None => DeviceRecord::new(device.clone(), now),
        };
        rec.last_seen = rec.last_seen.max(now);
        Ok(rec)
    }

    fn save_device(&self, rec: &DeviceRecord) -> TxResult<()> {
        self.devices
            .insert(rec.device.as_str(), enc("device", rec).map_err(abort)?)?;
        Ok(())
    }

    fn record_event(&self, ev: &Event, now: Millis, policy: &Policy) -> TxResult<EventOutcome> {
        let key = event_key(&ev.device, ev.seq);
        let mut out = EventOutcome {
            duplicate: false,
            decision: None,
            cmds: Vec::new(),
            refused: None,
        };
        if let Some(b) = self.events.get(&key)? {
            let stored: StoredEvent = dec("event", &b).map_err(abort)?;
            if let (EventBody::Report(r), Some(incident)) = (&stored.event.body, stored.incident) {
                out.cmds.push(CmdBody::ReportAccepted {
                    report_id: r.report_id,
                    incident,
                });
                // The question may be what got lost too: ask again while it is pending.
                if let Some(inc) = self.load_incident(incident)? {
                    if let (State::NeedsInfo, Some(q)) = (inc.state, inc.pending_question()) {
                        out.cmds.push(CmdBody::RequestInfo {
                            incident,
                            question: vigia_protocol::bounded(&q.question),
                        });
                    }
                }
            }
            out.duplicate = true;
            return Ok(out);
        }
        let mut device = self.load_device(&ev.device, now)?;
        let ctx = device_context(Some(&device));
        let actor = Actor::Device {
            device: ev.device.clone(),
        };
        let mut result: Option<(Result<Decision, WorkflowError>, bool)> = None;
        match &ev.body {
            EventBody::Fault(f) => {
                let fi = FaultInput {
                    seq: ev.seq,
                    ts: ev.ts,
                    fault: f.clone(),
                };
                let fk = fault_key_bytes(&ev.device, f.kind, &f.subject);
                let latest = match self.fault_index.get(&fk)? {
                    Some(b) => self.load_incident(u64_of("fault index", &b).map_err(abort)?)?,
                    None => None,
                };
                match workflow::correlate(latest.as_ref(), &fi, now, policy) {
                    Correlation::Ignore => {}
                    Correlation::OpenNew => {
                        let n = self.next_number()?;
                        let d = workflow::open_fault(n, ev.device.clone(), &fi, ctx, now, policy);
                        result = Some((Ok(d), true));
                    }
                    _ => {
                        if let Some(inc) = latest {
                            let input = Input::Device {
                                device: ev.device.clone(),
                                event: DeviceEvent::Fault(fi),
                            };
                            result = Some((workflow::apply(&inc, &input, now, policy), false));
                        }
                    }
                }
            }
            EventBody::Report(r) => {
                let n = self.next_number()?;
                let d = workflow::open(
                    n,
                    ev.device.clone(),
                    Origin::from_report(r),
                    ctx,
                    actor,
                    now,
                    policy,
                );
                result = Some((Ok(d), true));
            }
            EventBody::Reply(r) => {
                // A reply to an unknown incident, or to another device's, is kept as an
                // event but touches nothing.
                if let Some(inc) = self.load_incident(r.incident)? {
                    if inc.device == ev.device {
                        let input = Input::Device {
                            device: ev.device.clone(),
                            event: DeviceEvent::Reply {
                                text: r.text.as_str().to_owned(),
                            },
                        };
                        result = Some((workflow::apply(&inc, &input, now, policy), false));
                    }
                }
            }
            EventBody::Dropped(d) => {
                let rec = device.dropped.get_or_insert(DroppedRecord {
                    total: 0,
                    worst: d.worst,
                    last_at: now,
                });
                rec.total = rec.total.saturating_add(d.count);
                rec.worst = rec.worst.max(d.worst);
                rec.last_at = now;
            }
        }
        let mut touched = None;
        match result {
            Some((Ok(d), opened)) => {
                self.save(&d.incident, policy)?;
                touched = Some(d.incident.number);
                for m in &d.messages {
                    if let workflow::Outgoing::Device { device, body } = m {
                        if *device == ev.device {
                            out.cmds.push(body.clone());
                        }
                    }
                }
                out.decision = Some((d, opened));
            }
            Some((Err(e), _)) => out.refused = Some(e),
            None => {}
        }
        self.save_device(&device)?;
        let stored = StoredEvent {
            event: ev.clone(),
            received_at: now,
            incident: touched,
        };
        self.events
            .insert(key, enc("event", &stored).map_err(abort)?)?;
        Ok(out)
    }
}

fn tx_err(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Sled(e),
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`. Fails if another process holds it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir).open()?;
        Ok(Self {
            devices: db.open_tree("devices")?,
            events: db.open_tree("events")?,
            incidents: db.open_tree("incidents")?,
            summaries: db.open_tree("summaries")?,
            fault_index: db.open_tree("fault_index")?,
            idx: db.open_tree("idx")?,
            timers: db.open_tree("timers")?,
            meta: db.open_tree("meta")?,
            db,
        })
    }

    /// Makes every write so far durable. Call before acknowledging or sending anything.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    fn transact<R>(&self, f: impl Fn(&Tx<'_>) -> TxResult<R>) -> Result<R, StoreError> {
        (
            &self.events,
            &self.incidents,
            &self.summaries,
            &self.fault_index,
            &self.idx,
            &self.timers,
            &self.meta,
            &self.devices,
        )
            .transaction(
                |(events, incidents, summaries, fault_index, idx, timers, meta, devices)| {
                    f(&Tx {
                        events,
                        incidents,
                        summaries,
                        fault_index,
                        idx,
                        timers,
                        meta,
                        devices,
                    })
                },
            )
            .map_err(tx_err)
    }

    /// Stores an event once per `(device, seq)` and applies its workflow change (correlate,
    /// then open or apply), all in one transaction. `now` is the collector's clock.
    pub fn record_event(
        &self,
        ev: &Event,
        now: Millis,
        policy: &Policy,
    ) -> Result<EventOutcome, StoreError> {
        self.transact(|tx| tx.record_event(ev, now, policy))
    }

    /// Applies a person's command to incident `number` in one transaction. A refusal by
    /// the workflow writes nothing and comes back as [`StoreError::Workflow`].
    pub fn apply_command(
        &self,
        number: IncidentNo,
        by: &Person,
        command: &Command,
        now: Millis,
        policy: &Policy,
    ) -> Result<Decision, StoreError> {
        let input = Input::Person {
            by: by.clone(),
            command: command.clone(),
        };
        self.transact(|tx| {
            let inc = tx
                .load_incident(number)?
                .ok_or_else(|| abort(StoreError::NotFound(number)))?;
            let d = workflow::apply(&inc, &input, now, policy)
                .map_err(|e| abort(StoreError::Workflow(e)))?;
            tx.save(&d.incident, policy)?;
            Ok(d)
        })
    }

    /// The earliest pending timer, if any.
    pub fn next_timer(&self) -> Result<Option<Millis>, StoreError> {
        match self.timers.first()? {
            Some((k, _)) => Ok(Some(u64_of("timer key", &k[..8.min(k.len())])?)),
            None => Ok(None),
        }
    }

    /// Runs the workflow's timers of every incident due at `now` (at most `max`
    /// incidents), each in its own transaction; returns the decisions taken. An
    /// incident whose timer moved (policy changed, already handled) just gets its timer
    /// rewritten.
    pub fn tick_due(
        &self,
        now: Millis,
        policy: &Policy,
        max: usize,
    ) -> Result<Vec<Decision>, StoreError> {
        let mut due = Vec::new();
        for kv in self.timers.range(..timer_key(now, u64::MAX)).take(max) {
            let (k, _) = kv?;
            due.push(tail_number(&k)?);
        }
        let mut out = Vec::new();
        for n in due {
            let d = self.transact(|tx| {
                let Some(inc) = tx.load_incident(n)? else {
                    return Ok(None);
                };
                match workflow::tick(&inc, now, policy) {
                    Some(d) => {
                        tx.save(&d.incident, policy)?;
                        Ok(Some(d))
                    }
                    None => {
                        tx.save(&inc, policy)?;
                        Ok(None)
                    }
                }
            })?;
            out.extend(d);
        }
        Ok(out)
    }

    /// Recomputes every pending timer with `policy` (at start-up: the SLA targets in the
    /// config may have changed since the timers were written). Returns how many moved.
    pub fn reschedule_timers(&self, policy: &Policy) -> Result<usize, StoreError> {
        let mut numbers = Vec::new();
        for kv in self.timers.iter() {
            let (k, _) = kv?;
            numbers.push(tail_number(&k)?);
        }
        let mut moved = 0;
        for n in numbers {
            // Read first: most timers do not move, and those cost no write.
            let (Some(inc), Some(s)) = (self.incident(n)?, self.summary(n)?) else {
                continue;
            };
            if workflow::next_deadline(&inc, policy) == s.next_deadline {
                continue;
            }
            self.transact(|tx| {
                if let Some(inc) = tx.load_incident(n)? {
                    tx.save(&inc, policy)?;
                }
                Ok(())
            })?;
            moved += 1;
        }
        Ok(moved)
    }

    /// Stores a birth (inventory). A birth from an older `boot` than the one on file is
    /// ignored; returns whether it was applied.
    pub fn record_birth(&self, birth: &Birth, now: Millis) -> Result<bool, StoreError> {
        self.update_device(&birth.device, now, |rec| {
            if rec.birth.as_ref().is_some_and(|b| b.boot > birth.boot) {
                return false;
            }
            rec.birth = Some(birth.clone());
            true
        })
    }

    /// Stores a status by `boot` order: a newer boot always wins; within one boot,
    /// offline is final (a late "online" of a session that already went offline is
    /// stale); an older boot never overrides a newer one, so a retained Last Will from an
    /// old session cannot mark a newer session offline.
    pub fn record_status(&self, st: &Status, now: Millis) -> Result<StatusOutcome, StoreError> {
        self.update_device(&st.device, now, |rec| {
            let apply = match &rec.status {
                None => true,
                Some(cur) => st.boot > cur.boot || (st.boot == cur.boot && cur.online),
            };
            if !apply {
                return StatusOutcome::Stale;
            }
            let changed = rec.status.as_ref().is_none_or(|c| c.online != st.online);
            rec.status = Some(DeviceStatus {
                online: st.online,
                boot: st.boot,
                ts: st.ts,
                received_at: now,
            });
            StatusOutcome::Applied { changed }
        })
    }

    /// Read-modify-write of one device record; `f` says what it did. The record is
    /// written either way (last seen moves on).
    fn update_device<R>(
        &self,
        device: &DeviceId,
        now: Millis,
        f: impl Fn(&mut DeviceRecord) -> R,
    ) -> Result<R, StoreError> {
        self.devices
            .transaction(|t| {
                let mut rec = match t.get(device.as_str())? {
                    Some(b) => dec::<DeviceRecord>("device", &b).map_err(abort)?,
                    None => DeviceRecord::new(device.clone(), now),
                };
                rec.last_seen = rec.last_seen.max(now);
                let applied = f(&mut rec);
                t.insert(device.as_str(), enc("device", &rec).map_err(abort)?)?;
                Ok(applied)
            })
            .map_err(tx_err)
    }

    /// One incident, with its whole audit trail.
    pub fn incident(&self, number: IncidentNo) -> Result<Option<Incident>, StoreError> {
        match self.incidents.get(number.to_be_bytes())? {
            Some(b) => Ok(Some(dec("incident", &b)?)),
            None => Ok(None),
        }
    }

    /// One incident's list summary.
    pub fn summary(&self, number: IncidentNo) -> Result<Option<IncidentSummary>, StoreError> {
        match self.summaries.get(number.to_be_bytes())? {
            Some(b) => Ok(Some(dec("summary", &b)?)),
            None => Ok(None),
        }
    }

    /// Incidents matching `filter`, newest (highest number) first. Served from the most
    /// selective index the filter names; the other filters are checked on the summaries
    /// read, so the cost is one page plus what those filters skip.
    pub fn incidents(&self, filter: &IncidentFilter) -> Result<Vec<IncidentSummary>, StoreError> {
        let scope: &[u8] = if filter.state == Some(StateFilter::Open) {
            b"o"
        } else {
            b"a"
        };
        // Whether the index alone answers every filter given, so skipped entries (pages
        // after the first) need not be read.
        let given = usize::from(filter.state.is_some())
            + usize::from(filter.level.is_some())
            + usize::from(filter.priority.is_some())
            + usize::from(filter.device.is_some());
        let open = usize::from(filter.state == Some(StateFilter::Open));
        let covered = given <= 1 + open;
        let prefix: Vec<u8> = if let Some(d) = &filter.device {
            let mut p = [b"D", scope].concat();
            p.extend_from_slice(d.as_str().as_bytes());
            p.push(0);
            p
        } else if let Some(StateFilter::Is(s)) = filter.state {
            vec![b'S', state_byte(s)]
        } else if let Some(l) = filter.level {
            [b"L", scope, &[l.number()]].concat()
        } else if let Some(p) = filter.priority {
            [b"P", scope, &[priority_byte(p)]].concat()
        } else {
            [b"O", scope].concat()
        };
        let limit = filter.limit.unwrap_or(usize::MAX);
        let mut skip = filter.offset;
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        for kv in self.idx.scan_prefix(&prefix) {
            let (k, _) = kv?;
            let n = idx_number(&k)?;
            if covered && skip > 0 {
                skip -= 1;
                continue;
            }
            let Some(s) = self.summary(n)? else {
                return Err(StoreError::Corrupt("index entry without its incident"));
            };
            let ok = match filter.state {
                Some(StateFilter::Open) => s.state.is_open(),
                Some(StateFilter::Is(st)) => s.state == st,
                None => true,
            } && filter.level.is_none_or(|l| s.level == l)
                && filter.priority.is_none_or(|p| s.priority == Some(p))
                && filter.device.as_ref().is_none_or(|d| s.device == *d);
            if !ok {
                continue;
            }
            if skip > 0 {
                skip -= 1;
                continue;
            }
            out.push(s);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// How many incidents are in each state.
    pub fn incident_counts(&self) -> Result<BTreeMap<State, u64>, StoreError> {
        let mut out = BTreeMap::new();
        for s in State::ALL {
            let n = match self.meta.get(count_key(s))? {
                Some(b) => u64_of("incident count", &b)?,
                None => 0,
            };
            out.insert(s, n);
        }
        Ok(out)
    }

    /// The "Servicios soporte" rows (004) of the incidents registered in `period`, from
    /// the time index (only that period is read).
    pub fn export(&self, period: &Period) -> Result<Vec<ExportRow>, StoreError> {
        // A bare `T time` sorts before every key of that millisecond.
        let from = [&b"T"[..], &period.from.unwrap_or(0).to_be_bytes()].concat();
        let to = match period.to {
            Some(t) => [&b"T"[..], &t.to_be_bytes()].concat(),
            None => vec![b'T' + 1],
        };
        let mut incidents = Vec::new();
        for kv in self.idx.range(from..to) {
            let (k, _) = kv?;
            if let Some(i) = self.incident(idx_number(&k)?)? {
                incidents.push(i);
            }
        }
        Ok(workflow::rows(&incidents, period))
    }

    /// Writes many new incidents at once, without transactions: one sled batch per tree.
    /// For filling a fresh store (benchmarks, imports); the incidents must not exist yet
    /// and the batch is not atomic across trees, so never use it on a live collector.
    pub fn import(&self, incidents: &[Incident], policy: &Policy) -> Result<(), StoreError> {
        let mut inc_b = sled::Batch::default();
        let mut sum_b = sled::Batch::default();
        let mut idx_b = sled::Batch::default();
        let mut tim_b = sled::Batch::default();
        let mut fk_b = sled::Batch::default();
        let mut counts: BTreeMap<State, i64> = BTreeMap::new();
        let mut max = 0;
        for inc in incidents {
            let n = inc.number;
            max = max.max(n);
            let s = IncidentSummary::new(inc, workflow::next_deadline(inc, policy));
            for k in index_keys(&s) {
                idx_b.insert(k, &[]);
            }
            if let Some(t) = s.next_deadline {
                tim_b.insert(timer_key(t, n), &[]);
            }
            if let Some(k) = inc.fault_key() {
                fk_b.insert(
                    fault_key_bytes(&k.device, k.kind, &k.subject),
                    &n.to_be_bytes(),
                );
            }
            *counts.entry(inc.state).or_default() += 1;
            inc_b.insert(&n.to_be_bytes(), enc("incident", inc)?);
            sum_b.insert(&n.to_be_bytes(), enc("summary", &s)?);
        }
        self.incidents.apply_batch(inc_b)?;
        self.summaries.apply_batch(sum_b)?;
        self.idx.apply_batch(idx_b)?;
        self.timers.apply_batch(tim_b)?;
        self.fault_index.apply_batch(fk_b)?;
        for (s, d) in counts {
            let key = count_key(s);
            let cur = match self.meta.get(&key)? {
                Some(b) => u64_of("incident count", &b)?,
                None => 0,
            };
            self.meta
                .insert(key, &cur.saturating_add_signed(d).to_be_bytes())?;
        }
        let next = match self.meta.get(NEXT_INCIDENT)? {
            Some(b) => u64_of("incident counter", &b)?,
            None => 1,
        };
        if max >= next {
            self.meta.insert(NEXT_INCIDENT, &(max + 1).to_be_bytes())?;
        }
        Ok(())
    }

    /// One device.
    pub fn device(&self, id: &DeviceId) -> Result<Option<DeviceRecord>, StoreError> {
        match self.devices.get(id.as_str())? {
            Some(b) => Ok(Some(dec("device", &b)?)),
            None => Ok(None),
        }
    }

    /// Every device, by id.
    pub fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        self.devices
            .iter()
            .map(|kv| {
                let (_, v) = kv?;
                dec("device", &v)
            })
            .collect()
    }

    /// One stored event.
    pub fn event(&self, device: &DeviceId, seq: u64) -> Result<Option<StoredEvent>, StoreError> {
        match self.events.get(event_key(device, seq))? {
            Some(b) => Ok(Some(dec("event", &b)?)),
            None => Ok(None),
        }
    }

    /// The seqs stored for a device, ascending.
    pub fn event_seqs(&self, device: &DeviceId) -> Result<Vec<u64>, StoreError> {
        let mut prefix = device.as_str().as_bytes().to_vec();
        prefix.push(0);
        self.events
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, _) = kv?;
                u64_of("event key", &k[prefix.len()..])
            })
            .collect()
    }

    /// How many events are stored, all devices.
    pub fn event_count(&self) -> usize {
        self.events.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use vigia_protocol::{
        bounded, Evidence, FaultAction, FaultEvent, Reply, Severity, Urgency, UserReport, VERSION,
    };
    use workflow::{ClosureReason, Role, MINUTE};

    fn id(s: &str) -> DeviceId {
        DeviceId::new(s).unwrap()
    }

    fn fault(dev: &str, seq: u64, action: FaultAction, kind: FaultKind, subject: &str) -> Event {
        Event {
            v: VERSION,
            device: id(dev),
            seq,
            boot: 1,
            ts: 1000 + seq,
            body: EventBody::Fault(FaultEvent {
                action,
                kind,
                subject: bounded(subject),
                severity: Severity::Warning,
                evidence: Evidence {
                    value: 91.0,
                    threshold: 90.0,
                    unit: bounded("%"),
                    source: bounded("statvfs"),
                },
                message: bounded("disk filling"),
            }),
        }
    }

    fn report(dev: &str, seq: u64, contact: &str) -> Event {
        Event {
            v: VERSION,
            device: id(dev),
            seq,
            boot: 1,
            ts: 1,
            body: EventBody::Report(UserReport {
                report_id: 77,
                category: bounded("printer"),
                summary: bounded("printer jams"),
                text: bounded("every page"),
                reporter: bounded("ana"),
                contact: bounded(contact),
                urgency: Urgency::Medium,
                snapshot: heapless::Vec::new(),
                open_faults: heapless::Vec::new(),
            }),
        }
    }

    fn status(dev: &str, online: bool, boot: u64) -> Status {
        Status {
            v: VERSION,
            device: id(dev),
            online,
            boot,
            ts: 5,
        }
    }

    fn desk() -> Person {
        Person::new("ana", [Role::ServiceDesk])
    }

    fn numbers(v: &[IncidentSummary]) -> Vec<u64> {
        v.iter().map(|s| s.number).collect()
    }

    const T0: Millis = 1_800_000_000_000;

    #[test]
    fn fault_opens_one_incident_and_a_quick_clear_closes_it_as_transient() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let p = Policy::default();
        let k = FaultKind::DiskSpace;
        let o = s
            .record_event(&fault("a", 1, FaultAction::Raised, k, "/var"), T0, &p)
            .unwrap();
        let (d, opened) = o.decision.unwrap();
        assert!(opened);
        assert_eq!(d.incident.number, 1);
        assert_eq!(d.incident.state, State::Verifying);
        s.record_event(&fault("a", 2, FaultAction::Updated, k, "/var"), T0 + 1, &p)
            .unwrap();
        // The verification window is a timer.
        assert_eq!(s.next_timer().unwrap(), Some(T0 + p.verification_window()));
        let o = s
            .record_event(&fault("a", 3, FaultAction::Cleared, k, "/var"), T0 + 2, &p)
            .unwrap();
        let inc = o.decision.unwrap().0.incident;
        assert_eq!(inc.state, State::Closed);
        assert_eq!(
            inc.closure.as_ref().map(|c| c.reason),
            Some(ClosureReason::Transient)
        );
        assert_eq!(inc.occurrences, 2);
        assert!(!inc.fault_active);
        assert_eq!(s.next_timer().unwrap(), None);
        // Another subject is another incident.
        let o = s
            .record_event(&fault("a", 4, FaultAction::Raised, k, "/home"), T0 + 3, &p)
            .unwrap();
        assert_eq!(o.decision.unwrap().0.incident.number, 2);
        let counts = s.incident_counts().unwrap();
        assert_eq!(counts[&State::Verifying], 1);
        assert_eq!(counts[&State::Closed], 1);
        let open = s
            .incidents(&IncidentFilter {
                state: Some(StateFilter::Open),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(numbers(&open), vec![2]);
        let all = s.incidents(&IncidentFilter::default()).unwrap();
        assert_eq!(numbers(&all), vec![2, 1]);
        let closed = s
            .incidents(&IncidentFilter {
                state: Some(StateFilter::Is(State::Closed)),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(numbers(&closed), vec![1]);
    }

    #[test]
    fn duplicate_seq_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let p = Policy::default();
        let e = fault("a", 7, FaultAction::Raised, FaultKind::DiskSpace, "/");
        assert!(!s.record_event(&e, T0, &p).unwrap().duplicate);
        let again = s.record_event(&e, T0 + 1, &p).unwrap();
        assert!(again.duplicate);
        assert_eq!(again.decision, None);
        assert_eq!(s.event_count(), 1);
        assert_eq!(s.incident(1).unwrap().unwrap().occurrences, 1);
    }

    #[test]
    fn report_missing_contact_asks_and_the_reply_resumes_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let p = Policy::default();
        let o = s.record_event(&report("a", 1, ""), T0, &p).unwrap();
        assert_eq!(
            o.decision.as_ref().unwrap().0.incident.state,
            State::NeedsInfo
        );
        assert!(o.cmds.iter().any(|c| matches!(
            c,
            CmdBody::ReportAccepted {
                report_id: 77,
                incident: 1
            }
        )));
        assert!(o
            .cmds
            .iter()
            .any(|c| matches!(c, CmdBody::RequestInfo { incident: 1, .. })));
        // A redelivered report gets its number again, and no second incident.
        let again = s.record_event(&report("a", 1, ""), T0 + 1, &p).unwrap();
        assert!(again.duplicate);
        assert!(matches!(
            again.cmds.as_slice(),
            [
                CmdBody::ReportAccepted { incident: 1, .. },
                CmdBody::RequestInfo { incident: 1, .. }
            ]
        ));
        assert_eq!(s.incidents(&IncidentFilter::default()).unwrap().len(), 1);
        // Another device cannot answer for it.
        let foreign = Event {
            device: id("b"),
            seq: 9,
            body: EventBody::Reply(Reply {
                incident: 1,
                text: bounded("ext 9"),
            }),
            ..report("b", 9, "")
        };
        s.record_event(&foreign, T0 + 2, &p).unwrap();
        assert_eq!(s.incident(1).unwrap().unwrap().state, State::NeedsInfo);
        let reply = Event {
            seq: 2,
            body: EventBody::Reply(Reply {
                incident: 1,
                text: bounded("ext 123"),
            }),
            ..report("a", 2, "")
        };
        s.record_event(&reply, T0 + 3, &p).unwrap();
        let inc = s.incident(1).unwrap().unwrap();
        assert_eq!(inc.state, State::Verifying, "{:?}", inc.audit);
        assert_eq!(inc.info_requests[0].answer.as_deref(), Some("ext 123"));
    }

    #[test]
    fn refused_command_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let p = Policy::default();
        s.record_event(
            &fault("a", 1, FaultAction::Raised, FaultKind::DiskSpace, "/"),
            T0,
            &p,
        )
        .unwrap();
        let before = s.incident(1).unwrap().unwrap();
        let err = s
            .apply_command(
                1,
                &desk(),
                &Command::Resolve {
                    solution: "x".into(),
                },
                T0 + 1,
                &p,
            )
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Workflow(WorkflowError::Illegal { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("verifying"), "{err}");
        assert_eq!(s.incident(1).unwrap().unwrap(), before);
        assert!(matches!(
            s.apply_command(9, &desk(), &Command::Validate, T0, &p),
            Err(StoreError::NotFound(9))
        ));
    }

    #[test]
    fn lists_by_level_and_export_by_period() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let p = Policy::default();
        for (i, subject) in ["/a", "/b", "/c"].iter().enumerate() {
            s.record_event(
                &fault(
                    "a",
                    i as u64 + 1,
                    FaultAction::Raised,
                    FaultKind::DiskSpace,
                    subject,
                ),
                T0 + i as u64 * MINUTE,
                &p,
            )
            .unwrap();
        }
        s.apply_command(
            2,
            &desk(),
            &Command::Confirm {
                note: String::new(),
            },
            T0 + 5 * MINUTE,
            &p,
        )
        .unwrap();
        let lvl = s.incident(2).unwrap().unwrap().level;
        let at_level = s
            .incidents(&IncidentFilter {
                state: Some(StateFilter::Open),
                level: Some(lvl),
                ..Default::default()
            })
            .unwrap();
        assert!(numbers(&at_level).contains(&2));
        let page2 = s
            .incidents(&IncidentFilter {
                offset: 1,
                limit: Some(1),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(numbers(&page2), vec![2]);
        let rows = s
            .export(&Period {
                from: Some(T0 + MINUTE),
                to: Some(T0 + 2 * MINUTE),
            })
            .unwrap();
        assert_eq!(rows.iter().map(|r| r.incident).collect::<Vec<_>>(), vec![2]);
        assert_eq!(s.export(&Period::default()).unwrap().len(), 3);
    }

    #[test]
    fn status_respects_boot_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let d = id("a");
        assert_eq!(
            s.record_status(&status("a", true, 2), 1).unwrap(),
            StatusOutcome::Applied { changed: true }
        );
        // The retained Last Will of session 1 arrives late: ignored.
        assert_eq!(
            s.record_status(&status("a", false, 1), 2).unwrap(),
            StatusOutcome::Stale
        );
        assert!(s.device(&d).unwrap().unwrap().online());
        // Session 2 goes offline.
        assert_eq!(
            s.record_status(&status("a", false, 2), 3).unwrap(),
            StatusOutcome::Applied { changed: true }
        );
        // A late "online" of session 2 does not bring it back.
        assert_eq!(
            s.record_status(&status("a", true, 2), 4).unwrap(),
            StatusOutcome::Stale
        );
        assert!(!s.device(&d).unwrap().unwrap().online());
        // Session 3 does.
        s.record_status(&status("a", true, 3), 5).unwrap();
        let rec = s.device(&d).unwrap().unwrap();
        assert!(rec.online());
        assert_eq!(rec.last_seen, 5);
        assert_eq!(rec.first_seen, 1);
    }

    // ---- property test: the store against a simple in-memory model ----
    //
    // The model keeps incidents in a map and runs the same pure engine; the store must
    // agree with it on every incident (audit trail included), every list its indexes
    // serve, the counts and the earliest timer, across restarts.

    #[derive(Debug, Clone)]
    enum Op {
        /// Deliver event `seq` of device `dev` (its body is fixed per (dev, seq), as on
        /// the wire: a redelivery carries the same payload).
        Deliver { dev: usize, seq: u64 },
        /// A person acts on incident `pick` (modulo how many there are).
        Act { pick: usize, cmd: usize },
        /// Run the timers due now.
        Tick,
        /// Let time pass.
        Wait { minutes: u64 },
        /// Drop and reopen the database.
        Restart,
    }

    const DEVS: [&str; 2] = ["d0", "d1"];
    const KINDS: [FaultKind; 2] = [FaultKind::DiskSpace, FaultKind::Overheating];
    const SUBJECTS: [&str; 2] = ["/", "/var"];

    /// The body of (dev, seq): a deterministic function, like a real agent's history.
    fn body_of(dev: usize, seq: u64) -> (FaultAction, FaultKind, &'static str) {
        let h = seq
            .wrapping_mul(2_654_435_761)
            .wrapping_add(dev as u64 * 97)
            >> 3;
        let action = [
            FaultAction::Raised,
            FaultAction::Updated,
            FaultAction::Cleared,
        ][(h % 3) as usize];
        (
            action,
            KINDS[((h / 3) % 2) as usize],
            SUBJECTS[((h / 6) % 2) as usize],
        )
    }

    fn command(i: usize) -> Command {
        match i % 7 {
            0 => Command::Confirm {
                note: String::new(),
            },
            1 => Command::Assign {
                assignee: Some("luis".into()),
                group: None,
            },
            2 => Command::Escalate {
                to: None,
                why: "stuck".into(),
            },
            3 => Command::Resolve {
                solution: "cleaned up".into(),
            },
            4 => Command::Close {
                note: String::new(),
            },
            5 => Command::Reopen { why: "back".into() },
            _ => Command::Note {
                text: "looked".into(),
            },
        }
    }

    #[derive(Default)]
    struct Model {
        stored: BTreeSet<(usize, u64)>,
        incidents: BTreeMap<u64, Incident>,
        latest: HashMap<(usize, FaultKind, &'static str), u64>,
    }

    impl Model {
        fn deliver(&mut self, dev: usize, seq: u64, now: Millis, p: &Policy) {
            if !self.stored.insert((dev, seq)) {
                return;
            }
            let (action, kind, subject) = body_of(dev, seq);
            let EventBody::Fault(f) = fault(DEVS[dev], seq, action, kind, subject).body else {
                unreachable!()
            };
            let fi = FaultInput {
                seq,
                ts: 1000 + seq,
                fault: f,
            };
            let latest = self
                .latest
                .get(&(dev, kind, subject))
                .and_then(|n| self.incidents.get(n));
            match workflow::correlate(latest, &fi, now, p) {
                Correlation::Ignore => {}
                Correlation::OpenNew => {
                    let n = self.incidents.len() as u64 + 1;
                    let d = workflow::open_fault(
                        n,
                        id(DEVS[dev]),
                        &fi,
                        DeviceContext::default(),
                        now,
                        p,
                    );
                    self.incidents.insert(n, d.incident);
                    self.latest.insert((dev, kind, subject), n);
                }
                _ => {
                    let inc = latest.cloned().unwrap();
                    let input = Input::Device {
                        device: id(DEVS[dev]),
                        event: DeviceEvent::Fault(fi),
                    };
                    if let Ok(d) = workflow::apply(&inc, &input, now, p) {
                        self.incidents.insert(inc.number, d.incident);
                    }
                }
            }
        }
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            10 => (0..DEVS.len(), 1u64..25).prop_map(|(dev, seq)| Op::Deliver { dev, seq }),
            5 => (0usize..8, 0usize..7).prop_map(|(pick, cmd)| Op::Act { pick, cmd }),
            2 => Just(Op::Tick),
            3 => (1u64..400).prop_map(|minutes| Op::Wait { minutes }),
            1 => Just(Op::Restart),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]
        #[test]
        fn store_matches_model(ops in prop::collection::vec(arb_op(), 1..50)) {
            let dir = tempfile::tempdir().unwrap();
            let mut store = Some(Store::open(dir.path()).unwrap());
            let p = Policy::default();
            let mut model = Model::default();
            let mut now = T0;
            for op in ops {
                now += 1000;
                match op {
                    Op::Restart => {
                        if let Some(s) = store.take() {
                            s.flush().unwrap();
                        }
                        store = Some(Store::open(dir.path()).unwrap());
                    }
                    Op::Wait { minutes } => now += minutes * MINUTE,
                    Op::Deliver { dev, seq } => {
                        let s = store.as_ref().unwrap();
                        let (action, kind, subject) = body_of(dev, seq);
                        let dup_before = model.stored.contains(&(dev, seq));
                        let out = s.record_event(&fault(DEVS[dev], seq, action, kind, subject), now, &p).unwrap();
                        prop_assert_eq!(out.duplicate, dup_before);
                        model.deliver(dev, seq, now, &p);
                    }
                    Op::Act { pick, cmd } => {
                        let s = store.as_ref().unwrap();
                        if model.incidents.is_empty() {
                            continue;
                        }
                        let n = (pick % model.incidents.len()) as u64 + 1;
                        let c = command(cmd);
                        let input = Input::Person { by: desk(), command: c.clone() };
                        let want = workflow::apply(&model.incidents[&n], &input, now, &p);
                        let got = s.apply_command(n, &desk(), &c, now, &p);
                        match want {
                            Ok(d) => {
                                prop_assert_eq!(&got.unwrap().incident, &d.incident);
                                model.incidents.insert(n, d.incident);
                            }
                            Err(e) => match got {
                                Err(StoreError::Workflow(g)) => prop_assert_eq!(g, e),
                                other => prop_assert!(false, "expected {e}, got {other:?}"),
                            },
                        }
                    }
                    Op::Tick => {
                        let s = store.as_ref().unwrap();
                        let got = s.tick_due(now, &p, usize::MAX).unwrap();
                        let mut want = 0;
                        for inc in model.incidents.values_mut() {
                            if workflow::next_deadline(inc, &p).is_some_and(|t| t <= now) {
                                if let Some(d) = workflow::tick(inc, now, &p) {
                                    *inc = d.incident;
                                    want += 1;
                                }
                            }
                        }
                        prop_assert_eq!(got.len(), want);
                    }
                }
                let s = store.as_ref().unwrap();
                prop_assert_eq!(s.event_count(), model.stored.len());
                // Every incident, audit trail included.
                for (n, inc) in &model.incidents {
                    prop_assert_eq!(&s.incident(*n).unwrap().unwrap(), inc);
                }
                prop_assert_eq!(s.incident(model.incidents.len() as u64 + 1).unwrap(), None);
                // Every list the indexes serve, newest first.
                let mut filters = vec![
                    IncidentFilter::default(),
                    IncidentFilter { state: Some(StateFilter::Open), ..Default::default() },
                    IncidentFilter { device: Some(id("d0")), ..Default::default() },
                    IncidentFilter { state: Some(StateFilter::Open), device: Some(id("d1")), ..Default::default() },
                    IncidentFilter { priority: Some(Priority::P3), ..Default::default() },
                    IncidentFilter { state: Some(StateFilter::Open), limit: Some(2), offset: 1, ..Default::default() },
                ];
                for st in State::ALL {
                    filters.push(IncidentFilter { state: Some(StateFilter::Is(st)), ..Default::default() });
                }
                for l in [Level::L1, Level::L2, Level::L3] {
                    filters.push(IncidentFilter { state: Some(StateFilter::Open), level: Some(l), ..Default::default() });
                    filters.push(IncidentFilter { level: Some(l), ..Default::default() });
                }
                for f in &filters {
                    let want: Vec<u64> = model.incidents.values().rev().filter(|i| {
                        (match f.state {
                            Some(StateFilter::Open) => i.state.is_open(),
                            Some(StateFilter::Is(st)) => i.state == st,
                            None => true,
                        }) && f.level.is_none_or(|l| i.level == l)
                            && f.priority.is_none_or(|p| i.priority() == Some(p))
                            && f.device.as_ref().is_none_or(|d| i.device == *d)
                    }).map(|i| i.number).skip(f.offset).take(f.limit.unwrap_or(usize::MAX)).collect();
                    prop_assert_eq!(numbers(&s.incidents(f).unwrap()), want, "{:?}", f);
                }
                let counts = s.incident_counts().unwrap();
                for st in State::ALL {
                    let want = model.incidents.values().filter(|i| i.state == st).count() as u64;
                    prop_assert_eq!(counts[&st], want, "{}", st);
                }
                let next = model.incidents.values().filter_map(|i| workflow::next_deadline(i, &p)).min();
                prop_assert_eq!(s.next_timer().unwrap(), next);
            }
        }
    }
}
