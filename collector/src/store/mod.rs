//! The collector's durable store: what it keeps, and the interface every backend
//! implements.
//!
//! [`Store`] is narrow on purpose: devices, events exactly once per `(device, instance,
//! seq)`, incidents with their audit trails and list summaries, the timer queue and the
//! export. It makes no workflow decision: a change to an incident is loaded, handed to the
//! pure workflow ([`workflow::route`] for device events, [`workflow::apply`] for people,
//! [`workflow::tick`] for timers) and the result persisted with its summary, indexes and
//! timer in one transaction. What a device event costs must not depend on its incident's
//! history: a backend loads an incident for a device event or a timer without its audit
//! trail (the engine numbers new records from [`Incident::audit_len`]) and appends the
//! decision's new records, never rewriting the old ones. So a second backend (PostgreSQL, for larger sites) implements
//! this trait and nothing in the workflow, ingest or HTTP code changes.
//!
//! The interface is blocking: callers run it on tokio's blocking pool
//! (`spawn_blocking`), which suits sled, and a PostgreSQL backend can use a synchronous
//! client pool the same way. Writes are durable only after [`Store::flush`]: ingest,
//! the API and the timers flush before they acknowledge or send anything.
//!
//! [`embedded::SledStore`] is the embedded backend.
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vigia_protocol::{Birth, CmdBody, DeviceId, Dropped, Event, Millis, Severity, Status};

use crate::auth::{Account, SessionRecord, TokenRecord};
use crate::enrolment::{EnrolmentRecord, SiteRecord};
use crate::notify::NotifyEntry;
use crate::workflow::{
    Command, Decision, DeviceContext, ExportRow, Incident, IncidentNo, IncidentSummary, Level,
    Period, Person, Policy, Priority, ProviderRequestSpec, ServiceOrder, State, WorkflowError,
};

pub mod embedded;
mod keys;

/// A store shared by the collector's tasks.
pub type SharedStore = Arc<dyn Store>;

/// What a reader may have of an incident in an export: itself narrowed, or nothing.
pub type ExportView<'a> = dyn Fn(Incident) -> Option<Incident> + Send + Sync + 'a;

/// What every store backend does. See the module documentation for the contract.
pub trait Store: Send + Sync + 'static {
    /// Makes every write so far durable. Call before acknowledging or sending anything.
    fn flush(&self) -> Result<(), StoreError>;

    /// After an I/O error: make the store usable again if the backend needs it (the
    /// embedded one reopens its database once the disk has room). Returns whether it did
    /// anything; an error says why not yet.
    fn recover(&self) -> Result<bool, StoreError>;

    /// Stores an event once per `(device, instance, seq)` and persists what the workflow makes of
    /// it ([`workflow::route`]), all in one transaction. `now` is the collector's clock.
    fn record_event(
        &self,
        ev: &Event,
        now: Millis,
        policy: &Policy,
    ) -> Result<EventOutcome, StoreError>;

    /// [`Self::record_event`] for a batch, in order, one outcome per event: the embedded
    /// backend writes the whole batch in one transaction (an event later in the batch sees
    /// what the earlier ones wrote). Durable, like every write, only after [`Self::flush`].
    fn record_events(
        &self,
        evs: &[Event],
        now: Millis,
        policy: &Policy,
    ) -> Vec<Result<EventOutcome, StoreError>> {
        evs.iter()
            .map(|ev| self.record_event(ev, now, policy))
            .collect()
    }

    /// Stores a birth (inventory) by [`DeviceRecord::apply_birth`]; returns whether it
    /// was applied.
    fn record_birth(&self, birth: &Birth, now: Millis) -> Result<bool, StoreError>;

    /// Stores a status by [`DeviceRecord::apply_status`].
    fn record_status(&self, st: &Status, now: Millis) -> Result<StatusOutcome, StoreError>;

    /// Applies a person's command to incident `number` in one transaction. A refusal by
    /// the workflow writes nothing and comes back as [`StoreError::Workflow`].
    fn apply_command(
        &self,
        number: IncidentNo,
        by: &Person,
        command: &Command,
        now: Millis,
        policy: &Policy,
    ) -> Result<Decision, StoreError>;

    /// Registers a service asked of a provider with no incident behind it
    /// ([`workflow::open_service`]) under the next incident number, in one transaction,
    /// with the device's facts when it names one. A refusal writes nothing.
    fn open_service(
        &self,
        order: &ServiceOrder,
        spec: &ProviderRequestSpec,
        by: &Person,
        now: Millis,
        policy: &Policy,
    ) -> Result<Decision, StoreError>;

    /// The earliest pending timer, if any.
    fn next_timer(&self) -> Result<Option<Millis>, StoreError>;

    /// Runs the workflow's timers of every incident due at `now` (at most `max`
    /// incidents), each in its own transaction; returns the decisions taken. An incident
    /// whose timer moved (policy changed, already handled) just gets its timer rewritten.
    fn tick_due(
        &self,
        now: Millis,
        policy: &Policy,
        max: usize,
    ) -> Result<Vec<Decision>, StoreError>;

    /// Recomputes every pending timer with `policy` (at start-up: the SLA targets in the
    /// config may have changed since the timers were written). Returns how many moved.
    fn reschedule_timers(&self, policy: &Policy) -> Result<usize, StoreError>;

    /// One incident, with its whole audit trail (the one read whose cost grows with the
    /// incident's history).
    fn incident(&self, number: IncidentNo) -> Result<Option<Incident>, StoreError>;

    /// One incident's list summary.
    fn summary(&self, number: IncidentNo) -> Result<Option<IncidentSummary>, StoreError>;

    /// Incidents matching `filter`, newest (highest number) first, one page.
    fn incidents(&self, filter: &IncidentFilter) -> Result<Vec<IncidentSummary>, StoreError>;

    /// How many incidents are in each state.
    fn incident_counts(&self) -> Result<BTreeMap<State, u64>, StoreError>;

    /// The *Servicios soporte* rows of the incidents registered in `period`, each
    /// incident as `view` lets its reader have it (`None` leaves it out): the store
    /// never writes a row its reader may not read.
    fn export(&self, period: &Period, view: &ExportView<'_>) -> Result<Vec<ExportRow>, StoreError>;

    /// The verifications of providers' services made in `period`, through `view` like
    /// [`Store::export`].
    fn verifications(
        &self,
        period: &Period,
        view: &ExportView<'_>,
    ) -> Result<Vec<crate::workflow::VerificationRow>, StoreError>;

    /// One device.
    fn device(&self, id: &DeviceId) -> Result<Option<DeviceRecord>, StoreError>;

    /// Every device, by id.
    fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError>;

    /// One stored event of an agent instance.
    fn event(
        &self,
        device: &DeviceId,
        instance: u64,
        seq: u64,
    ) -> Result<Option<StoredEvent>, StoreError>;

    /// The seqs stored for one agent instance of a device, ascending.
    fn event_seqs(&self, device: &DeviceId, instance: u64) -> Result<Vec<u64>, StoreError>;

    /// How many events are stored, all devices.
    fn event_count(&self) -> usize;

    /// Retention: drops the details of at most `max` events stored before `before`,
    /// keeping each one's `(device, instance, seq)`, so counts, gaps and duplicate
    /// detection are unchanged; [`Self::event`] no longer finds a compacted event.
    /// Returns how many it compacted.
    fn compact_events(&self, before: Millis, max: usize) -> Result<usize, StoreError>;

    /// Retention: at most `max` incidents closed before `before`, whole (trail
    /// included), to archive.
    fn closed_before(&self, before: Millis, max: usize) -> Result<Vec<Incident>, StoreError>;

    /// Retention: removes these incidents (head, trail, summary, indexes, counts) once
    /// they are archived; one still closed only (a reopened one stays). Returns how many
    /// it removed.
    fn remove_incidents(&self, numbers: &[IncidentNo]) -> Result<usize, StoreError>;

    // Accounts, sessions and API tokens: small records outside the incident
    // transactions (a sign-in never waits for ingest).

    /// The account `login`.
    fn account(&self, login: &str) -> Result<Option<Account>, StoreError>;

    /// Every account, by login.
    fn accounts(&self) -> Result<Vec<Account>, StoreError>;

    /// How many accounts exist.
    fn account_count(&self) -> Result<usize, StoreError>;

    /// Creates `account`; `false` (and nothing written) if the login is taken.
    fn insert_account(&self, account: &Account) -> Result<bool, StoreError>;

    /// Writes `account` over the stored one.
    fn put_account(&self, account: &Account) -> Result<(), StoreError>;

    /// The session stored under `key` (the digest of its cookie).
    fn session(&self, key: &str) -> Result<Option<SessionRecord>, StoreError>;

    /// Stores a session under `key`.
    fn put_session(&self, key: &str, session: &SessionRecord) -> Result<(), StoreError>;

    /// Ends the session under `key`.
    fn remove_session(&self, key: &str) -> Result<(), StoreError>;

    /// Removes the sessions expired at `now`; returns how many.
    fn prune_sessions(&self, now: Millis) -> Result<usize, StoreError>;

    /// The API token with public id `id`.
    fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError>;

    /// Every API token.
    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;

    /// Stores a token.
    fn put_token(&self, token: &TokenRecord) -> Result<(), StoreError>;

    /// Revokes the token `id`; `false` if there was none.
    fn remove_token(&self, id: &str) -> Result<bool, StoreError>;

    // The outbox of device commands: written in the transaction of the change that causes
    // them, sent by `outbox::CommandSender` until the device acknowledges them.

    /// Commands due to be sent at `now` (at most `max`), oldest first.
    fn outbox_due(&self, now: Millis, max: usize) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Writes back an entry's attempts and next time, if it is still queued.
    fn outbox_put(&self, entry: &OutboxEntry) -> Result<(), StoreError>;

    /// Drops the command `id` (given up on); `false` if it was not queued.
    fn outbox_remove(&self, id: u64) -> Result<bool, StoreError>;

    /// The device acknowledged `ids`: they leave the outbox. Returns how many did (a
    /// device's ack never removes another device's command).
    fn outbox_acked(&self, device: &DeviceId, ids: &[u64]) -> Result<usize, StoreError>;

    /// How many commands wait for their device.
    fn outbox_len(&self) -> usize;

    /// The device came online: its queued commands are due at `now` (it may have missed
    /// them while away). Returns how many.
    fn outbox_retry(&self, device: &DeviceId, now: Millis) -> Result<usize, StoreError>;

    // The notification outbox: written in the transaction of the change that causes
    // them, delivered by `notify::sender::NotifySender`; finished ones are kept with
    // their incident.

    /// Notifications with something due at `now` (at most `max`), oldest first.
    fn notify_due(&self, now: Millis, max: usize) -> Result<Vec<NotifyEntry>, StoreError>;

    /// Writes back a notification's routing and deliveries; a finished one leaves the
    /// queue for its incident's record.
    fn notify_put(&self, entry: &NotifyEntry) -> Result<(), StoreError>;

    /// Every notification about `incident`, sent or not, oldest first.
    fn notifications_of(&self, incident: IncidentNo) -> Result<Vec<NotifyEntry>, StoreError>;

    /// How many notifications wait to be delivered.
    fn notify_len(&self) -> usize;

    /// When a recipient was last told of a fault on its own (or in a digest): the
    /// time stored under a [`NotifyEntry::repeat_key`].
    fn notify_recent(&self, key: &str) -> Result<Option<Millis>, StoreError>;

    /// Writes a notification just routed, and the recipients' last-told times `marks`
    /// for what it sends on its own, in one transaction.
    fn notify_route(
        &self,
        entry: &NotifyEntry,
        marks: &[(String, Millis)],
    ) -> Result<(), StoreError>;

    /// The notifications holding a delivery to (`channel`, `to`) for its digest.
    fn notify_held(
        &self,
        channel: crate::notify::Channel,
        to: &str,
    ) -> Result<Vec<NotifyEntry>, StoreError>;

    /// In one transaction: numbers and queues `digest` (for the recipient of its one
    /// delivery), marks that recipient's held deliveries in `held` as sent in it, and
    /// writes `marks`. Returns the digest with its number.
    fn notify_digest(
        &self,
        digest: &NotifyEntry,
        held: &[NotifyEntry],
        marks: &[(String, Millis)],
    ) -> Result<NotifyEntry, StoreError>;

    /// Sets (or, with `None`, clears) the warranties of existing devices, all in one
    /// transaction. Returns the ids that are not devices here (then nothing is set).
    fn set_warranties(
        &self,
        items: &[(DeviceId, Option<WarrantyRecord>)],
    ) -> Result<Vec<DeviceId>, StoreError>;

    /// Every registered provider, by name.
    fn providers(&self) -> Result<Vec<crate::providers::Provider>, StoreError>;

    /// The provider `name` (without case).
    fn provider(&self, name: &str) -> Result<Option<crate::providers::Provider>, StoreError>;

    /// Registers or replaces a provider (keyed by its name without case).
    fn put_provider(&self, p: &crate::providers::Provider) -> Result<(), StoreError>;

    /// Removes the provider `name`; `false` if there was none.
    fn remove_provider(&self, name: &str) -> Result<bool, StoreError>;

    /// A self-enrolment request.
    fn enrolment(&self, request: &str) -> Result<Option<EnrolmentRecord>, StoreError>;

    /// Every self-enrolment request.
    fn enrolments(&self) -> Result<Vec<EnrolmentRecord>, StoreError>;

    /// Stores (or replaces) a self-enrolment request.
    fn put_enrolment(&self, r: &EnrolmentRecord) -> Result<(), StoreError>;

    /// The sites that have an enrolment token.
    fn enrol_sites(&self) -> Result<Vec<SiteRecord>, StoreError>;

    /// Records that a site has a token.
    fn put_enrol_site(&self, r: &SiteRecord) -> Result<(), StoreError>;

    /// Forgets a site's token; whether it was there.
    fn remove_enrol_site(&self, site: &str) -> Result<bool, StoreError>;
}

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (disk full, I/O error, corrupt file).
    #[error("store I/O error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A stored value could not be (de)serialized.
    #[error("store value for {what} is unreadable: {source}")]
    Codec {
        /// Which value.
        what: &'static str,
        /// Why.
        source: serde_json::Error,
    },
    /// A stored key or counter has the wrong length, or a compressed value does not
    /// decompress.
    #[error("store data for {0} is corrupt")]
    Corrupt(&'static str),
    /// No such incident.
    #[error("no incident {0}")]
    NotFound(IncidentNo),
    /// No such device.
    #[error("no device {0} is known")]
    UnknownDevice(DeviceId),
    /// The store is being reopened after an I/O error.
    #[error("the store is being reopened after an I/O error; try again")]
    Unavailable,
    /// Not enough free space to reopen the store safely.
    #[error("the disk holding {} is still full: free some space", .0.display())]
    NoRoom(std::path::PathBuf),
    /// The workflow refused the change; nothing was written.
    #[error(transparent)]
    Workflow(#[from] WorkflowError),
}

impl StoreError {
    /// The same failure again, for the other events of a batch that failed as a whole.
    pub fn again(&self) -> Self {
        match self {
            Self::Backend(e) => Self::Backend(e.to_string().into()),
            Self::Codec { what, .. } => Self::Corrupt(what),
            Self::Corrupt(what) => Self::Corrupt(what),
            Self::NotFound(n) => Self::NotFound(*n),
            Self::UnknownDevice(d) => Self::UnknownDevice(d.clone()),
            Self::Unavailable => Self::Unavailable,
            Self::NoRoom(p) => Self::NoRoom(p.clone()),
            Self::Workflow(e) => Self::Workflow(e.clone()),
        }
    }
}

/// A command waiting for its device's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Its id, which the device names in its `cmdack`.
    pub id: u64,
    /// For which device.
    pub device: DeviceId,
    /// What it says.
    pub body: CmdBody,
    /// Queued at.
    pub created_at: Millis,
    /// When to send it (again).
    pub next_at: Millis,
    /// Sent so far.
    pub attempts: u32,
}

/// A device's last known online state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStatus {
    /// Online or not.
    pub online: bool,
    /// The agent instance it came from.
    #[serde(default)]
    pub instance: u64,
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
    /// Events lost: dropped by the agent and never stored here, all notices summed (an
    /// event evicted after it was published and stored is not lost).
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
    /// The asset's warranty, set by hand or imported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warranty: Option<WarrantyRecord>,
}

/// A device's warranty (004 4.4), as set by hand or imported from a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarrantyRecord {
    /// Who honours it.
    pub provider: String,
    /// The last moment it covers.
    pub until: Millis,
    /// Who set it.
    pub set_by: String,
    /// When.
    pub set_at: Millis,
}

impl DeviceRecord {
    /// A record first seen at `now`.
    pub fn new(device: DeviceId, now: Millis) -> Self {
        Self {
            device,
            first_seen: now,
            last_seen: now,
            birth: None,
            status: None,
            dropped: None,
            warranty: None,
        }
    }

    /// The agent instance the device speaks with now (its newest status or birth).
    pub fn instance(&self) -> u64 {
        self.status
            .as_ref()
            .map(|s| s.instance)
            .or(self.birth.as_ref().map(|b| b.instance))
            .unwrap_or(0)
    }

    /// Whether the device's newest session is online.
    pub fn online(&self) -> bool {
        self.status.as_ref().is_some_and(|s| s.online)
    }

    /// A message arrived at `now`: last seen moves on (never back).
    pub fn seen(&mut self, now: Millis) {
        self.last_seen = self.last_seen.max(now);
    }

    /// Takes a birth unless it is older than the one on file (an older `boot` of the same
    /// agent instance, or an older device time from another instance); returns whether it
    /// was taken.
    pub fn apply_birth(&mut self, birth: &Birth) -> bool {
        if let Some(cur) = &self.birth {
            let older = if cur.instance == birth.instance {
                cur.boot > birth.boot
            } else {
                cur.ts > birth.ts
            };
            if older {
                return false;
            }
        }
        self.birth = Some(birth.clone());
        true
    }

    /// Takes a status by `boot` order within one agent instance (between instances, by the
    /// device's time): a newer boot always wins; within one boot, offline is final (a late "online" of a session that already went offline is stale); an
    /// older boot never overrides a newer one, so a retained Last Will from an old session
    /// cannot mark a newer session offline.
    pub fn apply_status(&mut self, st: &Status, now: Millis) -> StatusOutcome {
        let apply = match &self.status {
            None => true,
            // A reinstalled agent starts a new instance with `boot` back at 1: between
            // instances the device's clock orders the messages.
            Some(cur) if cur.instance != st.instance => st.ts >= cur.ts,
            Some(cur) => st.boot > cur.boot || (st.boot == cur.boot && cur.online),
        };
        if !apply {
            return StatusOutcome::Stale;
        }
        let changed = self.status.as_ref().is_none_or(|c| c.online != st.online);
        self.status = Some(DeviceStatus {
            online: st.online,
            instance: st.instance,
            boot: st.boot,
            ts: st.ts,
            received_at: now,
        });
        StatusOutcome::Applied { changed }
    }

    /// Adds a spool overflow notice, of which `stored` listed events were stored here
    /// before the agent evicted them (see [`dropped_already_stored`]).
    pub fn note_dropped(&mut self, d: &Dropped, stored: u64, now: Millis) {
        let rec = self.dropped.get_or_insert(DroppedRecord {
            total: 0,
            worst: d.worst,
            last_at: now,
        });
        rec.total = rec.total.saturating_add(d.count.saturating_sub(stored));
        rec.worst = rec.worst.max(d.worst);
        rec.last_at = now;
    }
}

/// The most listed seqs a drop notice has checked against the store; a notice listing
/// more (an agent's spool lists at most its 16 ranges, but a device can claim anything) is
/// counted whole, as if none were stored.
pub const DROPPED_CHECK_MAX: u64 = 10_000;

/// How many of the seqs that drop notice `d` lists are already stored, by asking `has`
/// for each. A notice whose ranges are malformed (a range backwards, more listed than it
/// counts, or more than [`DROPPED_CHECK_MAX`]) is not checked: 0, every drop counts.
pub fn dropped_already_stored<E>(
    d: &Dropped,
    mut has: impl FnMut(u64) -> Result<bool, E>,
) -> Result<u64, E> {
    let listed = d.listed();
    if listed > d.count || listed > DROPPED_CHECK_MAX || d.seqs.iter().any(|r| r.from > r.to) {
        return Ok(0);
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut stored = 0;
    for r in &d.seqs {
        for seq in r.from..=r.to {
            if seen.insert(seq) && has(seq)? {
                stored += 1;
            }
        }
    }
    Ok(stored)
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
    /// Commands to send the device once, after the flush, outside the outbox: on a
    /// duplicate report, its `ReportAccepted` (and pending question) again, since the first
    /// answer may be what got lost. A new decision's commands go to the outbox instead.
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

/// The device facts triage reads, from the device's newest birth.
pub fn device_context(rec: Option<&DeviceRecord>) -> DeviceContext {
    DeviceContext {
        tags: rec
            .and_then(|r| r.birth.as_ref())
            .map(|b| b.tags.iter().map(|t| t.as_str().to_owned()).collect())
            .unwrap_or_default(),
        warranty: rec
            .and_then(|r| r.warranty.as_ref())
            .map(|w| crate::workflow::Warranty {
                provider: w.provider.clone(),
                until: w.until,
            }),
    }
}
