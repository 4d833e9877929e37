//! The embedded store backend (sled): devices, events exactly once per `(device, seq)`,
//! workflow incidents with their audit trails, the indexes the feed and the API read, and
//! the timer queue, all in one directory of one process.
//!
//! Every change to an incident is ONE sled transaction: the incident's head (the record
//! without its audit trail), the audit records the change adds, its list summary, every
//! index entry, its timer, the per-state counters and, for device events, the event
//! itself; a batch of device events is one transaction for the whole batch. The audit
//! records are written with the state they explain, and appended, never rewritten: a
//! change reads and writes the same few small values whatever the incident's history, so
//! an event costs the same on an incident's first occurrence and its thousandth (the
//! head's own history is bounded: see [`workflow::Occurrences`]). The caller then
//! [`Store::flush`]es before it acks or sends a command (sled's own flush timer is not
//! durability). Values are JSON (serde): some bytes and CPU against a binary format, in
//! exchange for serde migrations. A value of [`COMPRESS_FROM`] bytes or more is stored compressed
//! instead, when that is shorter: zstd with a dictionary of typical records
//! ([`DICTIONARY`]), which takes an incident's head of 2.6 KB of JSON to about 200 bytes
//! and an event's 350 to about 80 (compressed alone they would take 660 and 260). A
//! compressed value starts with a tag byte no JSON text starts with ([`dec`] tells the two
//! apart by it), so a store written before values were compressed reads as it is.
//!
//! Trees: `devices`; `events` (`device\0instance seq`); `incidents` (number, big-endian, so
//! number order is opening order → the head, `audit` empty); `audit` (`number seq` → one
//! [`AuditRecord`], so a trail is one prefix scan, read only to show the incident);
//! `summaries` (number → [`IncidentSummary`], so a list page never
//! decodes audit trails); `fault_index` (`device\0kind\0subject` → the latest incident of
//! that key, open or closed, for correlation); `idx` (secondary indexes, key only, each
//! ending in the number so a reverse prefix scan is newest first); `timers` (`deadline,
//! number` → (), the earliest first); `meta` (incident counter, per-state counts, layout).
//!
//! **Layouts.** Layout 1 kept the whole audit trail inside the incident. A store opened
//! without the `layout` key in `meta` is migrated on open, once: each incident's trail
//! moves to `audit` (its `audit_len` and `updated_at` filled from it), one transaction per
//! incident, idempotent if interrupted; then `layout` = 2 is written. Nothing else changed
//! shape (new incident fields have serde defaults).
//!
//! `idx` prefixes: `S state`, `La level` / `Lo level` (all / open only), `Pa p` / `Po p`,
//! `Da device\0` / `Do device\0`, `Oa` / `Oo` (every / every open incident), `T opened_at`
//! (for the export's period), each followed by the number inverted (`!n`), so a forward
//! prefix scan — sled's fast direction — yields the newest first. The trade-off: about
//! ten small keys per incident and a read of the old summary on every write, so that
use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;
use vigia_protocol::{Birth, DeviceId, Event, EventBody, Millis, Status};

use super::keys::{
    audit_key, count_key, event_key, event_prefix, fault_key_bytes, idx_number, index_keys,
    priority_byte, state_byte, tail_number, timer_key, u64_of, LAYOUT, NEXT_CMD, NEXT_INCIDENT,
    NEXT_NOTIFY,
};
use super::{
    device_context, DeviceRecord, EventOutcome, ExportView, IncidentFilter, OutboxEntry,
    StateFilter, StatusOutcome, Store, StoreError, StoredEvent, WarrantyRecord,
};
use crate::auth::{Account, SessionRecord, TokenRecord};
use crate::enrolment::{EnrolmentRecord, SiteRecord};
use crate::notify::NotifyEntry;
use crate::workflow::{
    self, AuditRecord, Command, Decision, DeviceContext, ExportRow, Incident, IncidentNo,
    IncidentSummary, Input, Period, Person, Plan, Policy, ProviderRequestSpec, Related,
    ServiceOrder, State,
};

/// zstd's fastest level, for the store's values (and the pages of a store sled
/// compressed): higher levels cost more time for no less disk (issue 12, `cargo bench -p
/// vigia-collector --bench store_ingest`).
const COMPRESSION_LEVEL: i32 = 1;

/// How the store in `dir` is opened. The store compresses its larger values itself
/// ([`enc`]), so sled's own page compression, which makes a new zstd context for every
/// page it writes, is off for a new store. sled refuses to open a store with another
/// compression setting than the one it was made with (it keeps it in the store's `conf`
/// file), so a store made while the store had sled compress its pages (12-03 to 12-06)
/// stays so.
pub fn sled_config(dir: &Path) -> sled::Config {
    let compressed = match std::fs::read(dir.join("conf")) {
        // sled treats a missing or truncated `conf` as a new store's.
        Ok(b) if b.len() > 8 => String::from_utf8_lossy(&b)
            .lines()
            .any(|l| l.trim() == "use_compression: true"),
        _ => false,
    };
    sled::Config::new()
        .path(dir)
        .use_compression(compressed)
        .compression_factor(COMPRESSION_LEVEL)
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        Self::Backend(Box::new(e))
    }
}

/// How long [`SledStore::open`] waits for a previous owner to release the store's lock.
const OPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The record layout this code writes (see the module documentation).
const LAYOUT_VERSION: u64 = 2;

/// How the embedded store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// sled's page cache, in bytes (sled's own default is 1 GiB, far more than a
    /// collector needs: the hot data is the open incidents and recent events).
    pub cache_bytes: u64,
}

impl StoreOptions {
    /// The default cache: 64 MiB.
    pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_bytes: Self::DEFAULT_CACHE_BYTES,
        }
    }
}

/// The open database and its trees.
#[derive(Clone)]
struct Handles {
    db: sled::Db,
    devices: sled::Tree,
    events: sled::Tree,
    incidents: sled::Tree,
    audit: sled::Tree,
    summaries: sled::Tree,
    fault_index: sled::Tree,
    idx: sled::Tree,
    timers: sled::Tree,
    meta: sled::Tree,
    accounts: sled::Tree,
    sessions: sled::Tree,
    tokens: sled::Tree,
    outbox: sled::Tree,
    notify: sled::Tree,
    notify_log: sled::Tree,
    /// A recipient's last message about a fault: `NotifyEntry::repeat_key` → the time
    /// (8 bytes, big-endian). One key per recipient and fault on a device, so bounded by
    /// the fleet and the routes, not by history.
    notify_recent: sled::Tree,
    providers: sled::Tree,
    /// Self-enrolment requests by request id, and the sites with a token.
    enrolments: sled::Tree,
    enrol_sites: sled::Tree,
}

/// The embedded store: the open database, and what it takes to open it again after an
/// I/O error, which sled never recovers from by itself (see [`vigia_protocol::disk`]).
///
/// Every call holds a read lock for its duration; [`Store::recover`] takes the write lock,
/// so it drops the database only when no call is using it, then opens it again (only with
/// room on the disk, removing an unfinished snapshot a full disk left behind). Calls made
/// while it reopens wait for it.
pub struct SledStore {
    dir: std::path::PathBuf,
    options: StoreOptions,
    current: std::sync::RwLock<Option<Handles>>,
    failed: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

/// Values at least this long (as JSON) are stored compressed, when that is shorter.
const COMPRESS_FROM: usize = 32;

/// The first byte of a value compressed with [`DICTIONARY`] (see [`enc`]). JSON text never
/// starts with a control character, so every other value is JSON.
const PACKED_V1: u8 = 0x01;

/// zstd's magic number, which starts every frame; [`enc`] leaves it out of the value.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Largest value [`dec`] inflates: a frame claiming more is corrupt.
const MAX_VALUE: u64 = 64 * 1024 * 1024;

/// The dictionary values are compressed with: typical records of each tree (a device, a
/// notification, a summary, audit records, an incident's head, an event), as zstd's raw
/// content dictionary, so that a value of a few hundred bytes compresses to what it does
/// not share with them (its field names and usual words are references into it). It is
/// part of the stored format: never edit it; another one takes a new tag.
const DICTIONARY: &[u8] = include_bytes!("values-v1.dict");

/// The dictionary, prepared once for compressing and for decompressing.
static DICTIONARIES: std::sync::LazyLock<(
    zstd::zstd_safe::CDict<'static>,
    zstd::zstd_safe::DDict<'static>,
)> = std::sync::LazyLock::new(|| {
    (
        zstd::zstd_safe::create_cdict(DICTIONARY, COMPRESSION_LEVEL),
        zstd::zstd_safe::create_ddict(DICTIONARY),
    )
});

thread_local! {
    /// One compression and one decompression context per store thread, reused: sled's own
    /// compression makes a new context for every page it writes, which cost a third of the
    /// collector's CPU (issue 12).
    static ZSTD: std::cell::RefCell<(zstd::zstd_safe::CCtx<'static>, zstd::zstd_safe::DCtx<'static>)> =
        std::cell::RefCell::new((zstd::zstd_safe::create_cctx(), zstd::zstd_safe::create_dctx()));
}

/// A value as stored: its JSON, or, when shorter, [`PACKED_V1`] and the zstd frame of its
/// JSON compressed with [`DICTIONARY`], without the frame's magic number.
fn enc<T: Serialize>(what: &'static str, v: &T) -> Result<Vec<u8>, StoreError> {
    let json = serde_json::to_vec(v).map_err(|source| StoreError::Codec { what, source })?;
    if json.len() < COMPRESS_FROM {
        return Ok(json);
    }
    let mut frame = Vec::with_capacity(zstd::zstd_safe::compress_bound(json.len()));
    let packed = ZSTD.with(|z| {
        z.borrow_mut()
            .0
            .compress_using_cdict(&mut frame, &json, &DICTIONARIES.0)
    });
    Ok(match packed {
        Ok(_) if frame.starts_with(&ZSTD_MAGIC) && frame.len() - 3 < json.len() => {
            frame[3] = PACKED_V1;
            frame.drain(..3);
            frame
        }
        _ => json,
    })
}

/// A stored value: JSON, or JSON compressed by [`enc`].
fn dec<T: serde::de::DeserializeOwned>(what: &'static str, b: &[u8]) -> Result<T, StoreError> {
    let codec = |source| StoreError::Codec { what, source };
    let Some(packed) = b.strip_prefix(&[PACKED_V1]) else {
        return serde_json::from_slice(b).map_err(codec);
    };
    let mut frame = Vec::with_capacity(ZSTD_MAGIC.len() + packed.len());
    frame.extend_from_slice(&ZSTD_MAGIC);
    frame.extend_from_slice(packed);
    let len = zstd::zstd_safe::get_frame_content_size(&frame);
    if len > MAX_VALUE {
        return Err(StoreError::Corrupt(what));
    }
    let mut json = Vec::with_capacity(len as usize);
    ZSTD.with(|z| {
        z.borrow_mut()
            .1
            .decompress_using_ddict(&mut json, &frame, &DICTIONARIES.1)
    })
    .map_err(|_| StoreError::Corrupt(what))?;
    serde_json::from_slice(&json).map_err(codec)
}

fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

/// The transactional view of the trees an incident change touches.
struct Trees<'a> {
    events: &'a TransactionalTree,
    incidents: &'a TransactionalTree,
    audit: &'a TransactionalTree,
    summaries: &'a TransactionalTree,
    fault_index: &'a TransactionalTree,
    idx: &'a TransactionalTree,
    timers: &'a TransactionalTree,
    meta: &'a TransactionalTree,
    devices: &'a TransactionalTree,
    outbox: &'a TransactionalTree,
    notify: &'a TransactionalTree,
    /// The heads, summaries and device records this transaction has read or changed,
    /// decoded (see [`Pending`]).
    pending: std::cell::RefCell<Pending>,
}

/// What a transaction has read or changed of the values a device event rewrites: a batch
/// of events often touches one incident and one device many times, and decoding and
/// encoding them (JSON, compression) is most of an event's cost in our code. Each is read
/// and decoded once, changed here, and encoded and written once, by [`Trees::write_back`]
/// before the commit.
#[derive(Default)]
struct Pending {
    /// Heads as the `incidents` tree holds them: without their trail.
    heads: Cached<u64, Incident>,
    summaries: Cached<u64, IncidentSummary>,
    devices: Cached<DeviceId, DeviceRecord>,
}

/// One tree's values in [`Pending`]: each with whether the transaction changed it.
type Cached<K, T> = std::collections::HashMap<K, (T, bool)>;

/// Writes the values of `cached` the transaction changed to `tree`, each encoded once.
fn write_changed<'a, K, T: Serialize, R: AsRef<[u8]>>(
    tree: &TransactionalTree,
    cached: &'a Cached<K, T>,
    key: impl Fn(&'a K) -> R,
    what: &'static str,
) -> TxResult<()> {
    for (k, (v, changed)) in cached {
        if *changed {
            tree.insert(key(k).as_ref(), enc(what, v).map_err(abort)?)?;
        }
    }
    Ok(())
}

impl Trees<'_> {
    /// `key`'s value in `tree` (stored under `raw`), decoded once per transaction: from
    /// [`Pending`] (`slot`) when the transaction read or changed it before, else from the
    /// tree, and kept in `slot`.
    fn read_through<K: std::hash::Hash + Eq + Clone, T: serde::de::DeserializeOwned + Clone>(
        &self,
        slot: fn(&mut Pending) -> &mut Cached<K, T>,
        tree: &TransactionalTree,
        key: &K,
        raw: &[u8],
        what: &'static str,
    ) -> TxResult<Option<T>> {
        let mut pending = self.pending.borrow_mut();
        let cached = slot(&mut pending);
        if let Some((v, _)) = cached.get(key) {
            return Ok(Some(v.clone()));
        }
        let Some(b) = tree.get(raw)? else {
            return Ok(None);
        };
        let v: T = dec(what, &b).map_err(abort)?;
        cached.insert(key.clone(), (v.clone(), false));
        Ok(Some(v))
    }

    /// An incident's head (its audit trail is not read: see [`Incident::audit`]).
    fn load_incident(&self, n: u64) -> TxResult<Option<Incident>> {
        let raw = n.to_be_bytes();
        self.read_through(|p| &mut p.heads, self.incidents, &n, &raw, "incident")
    }

    /// An incident's summary.
    fn load_summary(&self, n: u64) -> TxResult<Option<IncidentSummary>> {
        let raw = n.to_be_bytes();
        self.read_through(|p| &mut p.summaries, self.summaries, &n, &raw, "summary")
    }

    /// Removes an incident's head and summary (its trail and indexes are the caller's).
    fn remove_incident(&self, n: u64) -> TxResult<()> {
        let mut pending = self.pending.borrow_mut();
        pending.heads.remove(&n);
        pending.summaries.remove(&n);
        self.incidents.remove(&n.to_be_bytes())?;
        self.summaries.remove(&n.to_be_bytes())?;
        Ok(())
    }

    /// Encodes and writes what [`Pending`] holds changed: once per value, however many
    /// times the transaction changed it.
    fn write_back(&self) -> TxResult<()> {
        let pending = self.pending.borrow();
        write_changed(
            self.incidents,
            &pending.heads,
            |n| n.to_be_bytes(),
            "incident",
        )?;
        write_changed(
            self.summaries,
            &pending.summaries,
            |n| n.to_be_bytes(),
            "summary",
        )?;
        write_changed(self.devices, &pending.devices, |d| d.as_str(), "device")
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

    /// The number the next new incident takes.
    fn peek_number(&self) -> TxResult<u64> {
        match self.meta.get(NEXT_INCIDENT)? {
            Some(b) => Ok(u64_of("incident counter", &b).map_err(abort)?),
            None => Ok(1),
        }
    }

    /// Takes number `n` (from [`Self::peek_number`]) for a new incident.
    fn take_number(&self, n: u64) -> TxResult<()> {
        self.meta.insert(NEXT_INCIDENT, &(n + 1).to_be_bytes())?;
        Ok(())
    }

    /// Writes an incident with its summary, index entries, timer and counts.
    /// Puts every device command of `d` in the outbox, and every notification for people
    /// it calls for in the notification outbox, numbered, in this transaction: a command
    /// or a notification exists exactly when the change that causes it does.
    fn enqueue(&self, d: &Decision, now: Millis, policy: &Policy) -> TxResult<()> {
        let mut entries = crate::notify::entries_of(d, policy, now);
        if !entries.is_empty() {
            // Most changes notify nobody: the counter is read only when one does.
            let mut next = match self.meta.get(NEXT_NOTIFY)? {
                Some(b) => u64_of("notification counter", &b).map_err(abort)?,
                None => 1,
            };
            for e in &mut entries {
                e.id = next;
                next += 1;
                self.notify
                    .insert(&e.id.to_be_bytes(), enc("notification", e).map_err(abort)?)?;
            }
            self.meta.insert(NEXT_NOTIFY, &next.to_be_bytes())?;
        }
        for m in &d.messages {
            let workflow::Outgoing::Device { device, body } = m else {
                continue;
            };
            let id = match self.meta.get(NEXT_CMD)? {
                Some(b) => u64_of("command counter", &b).map_err(abort)?,
                None => 1,
            };
            self.meta.insert(NEXT_CMD, &(id + 1).to_be_bytes())?;
            let entry = OutboxEntry {
                id,
                device: device.clone(),
                body: body.clone(),
                created_at: now,
                next_at: now,
                attempts: 0,
            };
            self.outbox.insert(
                &id.to_be_bytes(),
                enc("outbox entry", &entry).map_err(abort)?,
            )?;
        }
        Ok(())
    }

    /// Writes an incident's head with its summary, index entries, timer and counts, and
    /// appends `records` (the change's new audit records) to its trail.
    fn save(
        &self,
        inc: &Incident,
        records: &[AuditRecord],
        policy: &Policy,
    ) -> TxResult<IncidentSummary> {
        let n = inc.number;
        for r in records {
            self.audit
                .insert(&audit_key(n, r.seq), enc("audit record", r).map_err(abort)?)?;
        }
        let old = self.load_summary(n)?;
        let new = IncidentSummary::of(inc, policy);
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
            let current = match self.fault_index.get(&fk)? {
                Some(b) => Some(u64_of("fault index", &b).map_err(abort)?),
                None => None,
            };
            if current.is_none_or(|c| c < n) {
                self.fault_index.insert(fk, &n.to_be_bytes())?;
            }
        }
        // The head as the `incidents` tree holds it, without the trail.
        let mut head = inc.clone();
        head.audit = Vec::new();
        let mut pending = self.pending.borrow_mut();
        pending.heads.insert(n, (head, true));
        pending.summaries.insert(n, (new.clone(), true));
        Ok(new)
    }

    fn load_device(&self, device: &DeviceId, now: Millis) -> TxResult<DeviceRecord> {
        let raw = device.as_str().as_bytes();
        let mut rec = self
            .read_through(|p| &mut p.devices, self.devices, device, raw, "device")?
            .unwrap_or_else(|| DeviceRecord::new(device.clone(), now));
        rec.seen(now);
        Ok(rec)
    }

    fn save_device(&self, rec: &DeviceRecord) -> TxResult<()> {
        self.pending
            .borrow_mut()
            .devices
            .insert(rec.device.clone(), (rec.clone(), true));
        Ok(())
    }

    fn record_event(&self, ev: &Event, now: Millis, policy: &Policy) -> TxResult<EventOutcome> {
        let key = event_key(&ev.device, ev.instance, ev.seq);
        if let Some(b) = self.events.get(&key)? {
            if b.is_empty() {
                // Compacted by retention: seen long ago, its details dropped.
                return Ok(EventOutcome {
                    duplicate: true,
                    decision: None,
                    cmds: Vec::new(),
                    refused: None,
                });
            }
            let stored: StoredEvent = dec("event", &b).map_err(abort)?;
            let incident = match stored.incident {
                Some(n) => self.load_incident(n)?,
                None => None,
            };
            return Ok(EventOutcome {
                duplicate: true,
                decision: None,
                cmds: workflow::repeat_commands(&stored.event, incident.as_ref()),
                refused: None,
            });
        }
        let mut device = self.load_device(&ev.device, now)?;
        let related = match workflow::related(ev) {
            Related::Fault(k) => match self
                .fault_index
                .get(fault_key_bytes(&k.device, k.kind, &k.subject))?
            {
                Some(b) => self.load_incident(u64_of("fault index", &b).map_err(abort)?)?,
                None => None,
            },
            Related::Incident(n) => self.load_incident(n)?,
            Related::Nothing => None,
        };
        let next = self.peek_number()?;
        let plan = workflow::route(
            ev,
            related.as_ref(),
            device_context(Some(&device)),
            next,
            now,
            policy,
        );
        let mut out = EventOutcome {
            duplicate: false,
            decision: None,
            cmds: Vec::new(),
            refused: None,
        };
        match plan {
            Plan::Open(d) => {
                self.take_number(next)?;
                self.save(&d.incident, &d.records, policy)?;
                self.enqueue(&d, now, policy)?;
                out.decision = Some((d, true));
            }
            Plan::Update(d) => {
                self.save(&d.incident, &d.records, policy)?;
                self.enqueue(&d, now, policy)?;
                out.decision = Some((d, false));
            }
            Plan::Refused(e) => out.refused = Some(e),
            Plan::Nothing => {}
        }
        if let EventBody::Dropped(d) = &ev.body {
            let stored = super::dropped_already_stored(d, |seq| {
                self.events
                    .get(event_key(&ev.device, ev.instance, seq))
                    .map(|v| v.is_some())
            })?;
            device.note_dropped(d, stored, now);
        }
        self.save_device(&device)?;
        let stored = StoredEvent {
            event: ev.clone(),
            received_at: now,
            incident: out.decision.as_ref().map(|(d, _)| d.incident.number),
        };
        self.events
            .insert(key, enc("event", &stored).map_err(abort)?)?;
        Ok(out)
    }
}

fn tx_err(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => e.into(),
    }
}

impl Handles {
    /// Opens (or creates) the store in `dir`, migrating an older layout. Fails if another
    /// process holds it.
    fn open(dir: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        // A previous owner may still be letting go of the lock: a collector still exiting
        // (a quick restart), or a dropped handle in this process whose background flusher
        // holds it a moment longer. Past the wait, another collector owns the store.
        let deadline = std::time::Instant::now() + OPEN_WAIT;
        let db = loop {
            match sled_config(dir).cache_capacity(options.cache_bytes).open() {
                Err(sled::Error::Io(e))
                    if e.to_string().contains("acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                other => break other?,
            }
        };
        let h = Self {
            devices: db.open_tree("devices")?,
            events: db.open_tree("events")?,
            incidents: db.open_tree("incidents")?,
            audit: db.open_tree("audit")?,
            summaries: db.open_tree("summaries")?,
            fault_index: db.open_tree("fault_index")?,
            idx: db.open_tree("idx")?,
            timers: db.open_tree("timers")?,
            meta: db.open_tree("meta")?,
            accounts: db.open_tree("accounts")?,
            sessions: db.open_tree("sessions")?,
            tokens: db.open_tree("tokens")?,
            outbox: db.open_tree("outbox")?,
            notify: db.open_tree("notify")?,
            notify_log: db.open_tree("notify_log")?,
            notify_recent: db.open_tree("notify_recent")?,
            providers: db.open_tree("providers")?,
            enrolments: db.open_tree("enrolments")?,
            enrol_sites: db.open_tree("enrol_sites")?,
            db,
        };
        h.migrate()?;
        Ok(h)
    }

    /// Brings a store written in an older layout to [`LAYOUT_VERSION`] (see the module
    /// documentation). Returns how many incidents moved.
    fn migrate(&self) -> Result<usize, StoreError> {
        let layout = match self.meta.get(LAYOUT)? {
            Some(b) => u64_of("layout", &b)?,
            None => 1,
        };
        if layout >= LAYOUT_VERSION {
            return Ok(0);
        }
        let mut moved = 0;
        for kv in self.incidents.iter() {
            let (k, b) = kv?;
            let mut inc: Incident = dec("incident", &b)?;
            if inc.audit.is_empty() {
                // Moved by an earlier, interrupted migration.
                continue;
            }
            let n = u64_of("incident key", &k)?;
            let records = std::mem::take(&mut inc.audit);
            inc.audit_len = u32::try_from(records.len()).unwrap_or(u32::MAX);
            inc.updated_at = records.last().map_or(inc.opened_at, |r| r.at);
            let head = enc("incident", &inc)?;
            let values = records
                .iter()
                .map(|r| Ok((audit_key(n, r.seq), enc("audit record", r)?)))
                .collect::<Result<Vec<_>, StoreError>>()?;
            (&self.incidents, &self.audit)
                .transaction(|(incidents, audit)| {
                    for (key, v) in &values {
                        audit.insert(key, v.as_slice())?;
                    }
                    incidents.insert(&k, head.as_slice())?;
                    Ok::<_, ConflictableTransactionError<StoreError>>(())
                })
                .map_err(tx_err)?;
            moved += 1;
        }
        self.meta.insert(LAYOUT, &LAYOUT_VERSION.to_be_bytes())?;
        self.db.flush()?;
        if moved > 0 {
            tracing::info!(
                incidents = moved,
                from = layout,
                to = LAYOUT_VERSION,
                "store layout migrated: audit trails moved to their own tree"
            );
        }
        Ok(moved)
    }

    fn transact<R>(&self, f: impl Fn(&Trees<'_>) -> TxResult<R>) -> Result<R, StoreError> {
        (
            &self.events,
            &self.incidents,
            &self.audit,
            &self.summaries,
            &self.fault_index,
            &self.idx,
            &self.timers,
            &self.meta,
            &self.devices,
            &self.outbox,
            &self.notify,
        )
            .transaction(
                |(
                    events,
                    incidents,
                    audit,
                    summaries,
                    fault_index,
                    idx,
                    timers,
                    meta,
                    devices,
                    outbox,
                    notify,
                )| {
                    let trees = Trees {
                        events,
                        incidents,
                        audit,
                        summaries,
                        fault_index,
                        idx,
                        timers,
                        meta,
                        devices,
                        outbox,
                        notify,
                        pending: Default::default(),
                    };
                    let r = f(&trees)?;
                    trees.write_back()?;
                    Ok(r)
                },
            )
            .map_err(tx_err)
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
                rec.seen(now);
                let applied = f(&mut rec);
                t.insert(device.as_str(), enc("device", &rec).map_err(abort)?)?;
                Ok(applied)
            })
            .map_err(tx_err)
    }

    /// Writes many new incidents at once, without transactions: one sled batch per tree.
    /// For filling a fresh store (benchmarks, imports); the incidents must not exist yet
    /// and the batch is not atomic across trees, so never use it on a live collector.
    fn import(&self, incidents: &[Incident], policy: &Policy) -> Result<(), StoreError> {
        let mut inc_b = sled::Batch::default();
        let mut aud_b = sled::Batch::default();
        let mut sum_b = sled::Batch::default();
        let mut idx_b = sled::Batch::default();
        let mut tim_b = sled::Batch::default();
        let mut fk_b = sled::Batch::default();
        let mut counts: BTreeMap<State, i64> = BTreeMap::new();
        let mut max = 0;
        for inc in incidents {
            let n = inc.number;
            max = max.max(n);
            let s = IncidentSummary::of(inc, policy);
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
            let mut head = inc.clone();
            for r in std::mem::take(&mut head.audit) {
                aud_b.insert(&audit_key(n, r.seq), enc("audit record", &r)?);
            }
            head.audit_len = head
                .audit_len
                .max(u32::try_from(inc.audit.len()).unwrap_or(0));
            inc_b.insert(&n.to_be_bytes(), enc("incident", &head)?);
            sum_b.insert(&n.to_be_bytes(), enc("summary", &s)?);
        }
        self.incidents.apply_batch(inc_b)?;
        self.audit.apply_batch(aud_b)?;
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
}

impl Handles {
    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    fn record_event(
        &self,
        ev: &Event,
        now: Millis,
        policy: &Policy,
    ) -> Result<EventOutcome, StoreError> {
        self.transact(|tx| tx.record_event(ev, now, policy))
    }

    fn record_events(
        &self,
        evs: &[Event],
        now: Millis,
        policy: &Policy,
    ) -> Vec<Result<EventOutcome, StoreError>> {
        if evs.is_empty() {
            return Vec::new();
        }
        let all = self.transact(|tx| {
            evs.iter()
                .map(|ev| tx.record_event(ev, now, policy))
                .collect::<TxResult<Vec<_>>>()
        });
        match all {
            Ok(outs) => outs.into_iter().map(Ok).collect(),
            // One unreadable record must not hold back the rest of the batch: each event
            // again in its own transaction, so only the one that touches it fails.
            Err(StoreError::Codec { .. } | StoreError::Corrupt(_)) if evs.len() > 1 => evs
                .iter()
                .map(|ev| self.record_event(ev, now, policy))
                .collect(),
            // The batch failed as a whole (the disk, most likely): so did every event.
            Err(e) => {
                let mut out: Vec<_> = evs.iter().skip(1).map(|_| Err(e.again())).collect();
                out.insert(0, Err(e));
                out
            }
        }
    }

    fn apply_command(
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
        let mut d = self.transact(|tx| {
            let mut inc = tx
                .load_incident(number)?
                .ok_or_else(|| abort(StoreError::NotFound(number)))?;
            // The warranty as the inventory knows it now, not when the incident opened:
            // a warranty set or imported since is what a provider request must see.
            let stored = match &inc.device {
                Some(id) => tx.devices.get(id.as_str())?,
                None => None,
            };
            if let Some(b) = stored {
                let rec: DeviceRecord = dec("device", &b).map_err(abort)?;
                inc.context.warranty = device_context(Some(&rec)).warranty;
            }
            let d = workflow::apply(&inc, &input, now, policy)
                .map_err(|e| abort(StoreError::Workflow(e)))?;
            tx.save(&d.incident, &d.records, policy)?;
            tx.enqueue(&d, now, policy)?;
            Ok(d)
        })?;
        // A person's change returns the whole incident, trail included (the API shows it
        // at once): read after the commit, up to this change's last record (records are
        // only appended, so a later change cannot alter these).
        let len = usize::try_from(d.incident.audit_len).unwrap_or(usize::MAX);
        d.incident.audit = self.trail(number)?.into_iter().take(len).collect();
        Ok(d)
    }

    fn open_service(
        &self,
        order: &ServiceOrder,
        spec: &ProviderRequestSpec,
        by: &Person,
        now: Millis,
        policy: &Policy,
    ) -> Result<Decision, StoreError> {
        let d = self.transact(|tx| {
            let context = match &order.device {
                Some(id) => match tx.devices.get(id.as_str())? {
                    Some(b) => device_context(Some(&dec("device", &b).map_err(abort)?)),
                    None => return Err(abort(StoreError::UnknownDevice(id.clone()))),
                },
                None => DeviceContext::default(),
            };
            let number = tx.peek_number()?;
            let d = workflow::open_service(number, order, spec, context, by, now, policy)
                .map_err(|e| abort(StoreError::Workflow(e)))?;
            tx.take_number(number)?;
            tx.save(&d.incident, &d.records, policy)?;
            tx.enqueue(&d, now, policy)?;
            Ok(d)
        })?;
        Ok(d)
    }

    fn next_timer(&self) -> Result<Option<Millis>, StoreError> {
        match self.timers.first()? {
            Some((k, _)) => Ok(Some(u64_of("timer key", &k[..8.min(k.len())])?)),
            None => Ok(None),
        }
    }

    fn tick_due(
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
                        tx.save(&d.incident, &d.records, policy)?;
                        tx.enqueue(&d, now, policy)?;
                        Ok(Some(d))
                    }
                    None => {
                        tx.save(&inc, &[], policy)?;
                        Ok(None)
                    }
                }
            })?;
            out.extend(d);
        }
        Ok(out)
    }

    fn reschedule_timers(&self, policy: &Policy) -> Result<usize, StoreError> {
        let mut numbers = Vec::new();
        for kv in self.timers.iter() {
            let (k, _) = kv?;
            numbers.push(tail_number(&k)?);
        }
        let mut moved = 0;
        for n in numbers {
            // Read first: most timers do not move, and those cost no write.
            let (Some(inc), Some(s)) = (self.head(n)?, self.summary(n)?) else {
                continue;
            };
            if workflow::next_deadline(&inc, policy) == s.next_deadline {
                continue;
            }
            self.transact(|tx| {
                if let Some(inc) = tx.load_incident(n)? {
                    tx.save(&inc, &[], policy)?;
                }
                Ok(())
            })?;
            moved += 1;
        }
        Ok(moved)
    }

    fn record_birth(&self, birth: &Birth, now: Millis) -> Result<bool, StoreError> {
        self.update_device(&birth.device, now, |rec| rec.apply_birth(birth))
    }

    fn record_status(&self, st: &Status, now: Millis) -> Result<StatusOutcome, StoreError> {
        self.update_device(&st.device, now, |rec| rec.apply_status(st, now))
    }

    /// An incident's head, without its audit trail.
    fn head(&self, number: IncidentNo) -> Result<Option<Incident>, StoreError> {
        match self.incidents.get(number.to_be_bytes())? {
            Some(b) => Ok(Some(dec("incident", &b)?)),
            None => Ok(None),
        }
    }

    /// An incident's audit trail, oldest first.
    fn trail(&self, number: IncidentNo) -> Result<Vec<AuditRecord>, StoreError> {
        self.audit
            .scan_prefix(number.to_be_bytes())
            .map(|kv| {
                let (_, v) = kv?;
                dec("audit record", &v)
            })
            .collect()
    }

    fn incident(&self, number: IncidentNo) -> Result<Option<Incident>, StoreError> {
        let Some(mut inc) = self.head(number)? else {
            return Ok(None);
        };
        let trail = self.trail(number)?;
        // Records past the head's count belong to a change whose head is not written yet
        // (never the case within a transaction; a torn read between trees at most).
        let len = usize::try_from(inc.audit_len).unwrap_or(usize::MAX);
        inc.audit = trail.into_iter().take(len).collect();
        Ok(Some(inc))
    }

    fn summary(&self, number: IncidentNo) -> Result<Option<IncidentSummary>, StoreError> {
        match self.summaries.get(number.to_be_bytes())? {
            Some(b) => Ok(Some(dec("summary", &b)?)),
            None => Ok(None),
        }
    }

    fn incidents(&self, filter: &IncidentFilter) -> Result<Vec<IncidentSummary>, StoreError> {
        // Served from the most selective index the filter names; the other filters are
        // checked on the summaries read, so the cost is one page plus what they skip.
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
                && filter
                    .device
                    .as_ref()
                    .is_none_or(|d| s.device.as_ref() == Some(d));
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

    fn incident_counts(&self) -> Result<BTreeMap<State, u64>, StoreError> {
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

    fn export(&self, period: &Period, view: &ExportView<'_>) -> Result<Vec<ExportRow>, StoreError> {
        // From the time index: only the period is read.
        // A bare `T time` sorts before every key of that millisecond.
        let from = [&b"T"[..], &period.from.unwrap_or(0).to_be_bytes()].concat();
        let to = match period.to {
            Some(t) => [&b"T"[..], &t.to_be_bytes()].concat(),
            None => vec![b'T' + 1],
        };
        let mut incidents = Vec::new();
        for kv in self.idx.range(from..to) {
            let (k, _) = kv?;
            if let Some(i) = self.head(idx_number(&k)?)?.and_then(view) {
                incidents.push(i);
            }
        }
        Ok(workflow::rows(&incidents, period))
    }

    fn verifications(
        &self,
        period: &Period,
        view: &ExportView<'_>,
    ) -> Result<Vec<workflow::VerificationRow>, StoreError> {
        // A service is verified after its incident was opened: every incident opened
        // before the period's end may have one in it.
        let to = match period.to {
            Some(t) => [&b"T"[..], &t.to_be_bytes()].concat(),
            None => vec![b'T' + 1],
        };
        let mut incidents = Vec::new();
        for kv in self.idx.range(b"T".to_vec()..to) {
            let (k, _) = kv?;
            if let Some(i) = self.head(idx_number(&k)?)? {
                if !i.provider_requests.is_empty() {
                    if let Some(i) = view(i) {
                        incidents.push(i);
                    }
                }
            }
        }
        Ok(workflow::verification_rows(&incidents, period))
    }

    fn device(&self, id: &DeviceId) -> Result<Option<DeviceRecord>, StoreError> {
        match self.devices.get(id.as_str())? {
            Some(b) => Ok(Some(dec("device", &b)?)),
            None => Ok(None),
        }
    }

    fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        self.devices
            .iter()
            .map(|kv| {
                let (_, v) = kv?;
                dec("device", &v)
            })
            .collect()
    }

    fn event(
        &self,
        device: &DeviceId,
        instance: u64,
        seq: u64,
    ) -> Result<Option<StoredEvent>, StoreError> {
        match self.events.get(event_key(device, instance, seq))? {
            // Compacted: the seq counts, the details are gone.
            Some(b) if b.is_empty() => Ok(None),
            Some(b) => Ok(Some(dec("event", &b)?)),
            None => Ok(None),
        }
    }

    fn compact_events(&self, before: Millis, max: usize) -> Result<usize, StoreError> {
        // A scan of every event: retention runs seldom (hourly by default), and an index
        // by age would cost every ingested event one more write.
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for kv in self.events.iter() {
            let (k, v) = kv?;
            if v.is_empty() {
                continue;
            }
            let stored: StoredEvent = dec("event", &v)?;
            if stored.received_at < before {
                // The key stays: counts, gaps and duplicate detection need only the seq.
                batch.insert(k, sled::IVec::default());
                n += 1;
                if n >= max {
                    break;
                }
            }
        }
        self.events.apply_batch(batch)?;
        Ok(n)
    }

    fn closed_before(&self, before: Millis, max: usize) -> Result<Vec<Incident>, StoreError> {
        let mut out = Vec::new();
        for kv in self.summaries.iter() {
            let (k, v) = kv?;
            let s: IncidentSummary = dec("summary", &v)?;
            if s.state == State::Closed && s.closed_at.is_some_and(|c| c < before) {
                if let Some(inc) = self.incident(u64_of("summary key", &k)?)? {
                    out.push(inc);
                }
                if out.len() >= max {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn remove_incidents(&self, numbers: &[IncidentNo]) -> Result<usize, StoreError> {
        let mut removed = 0;
        for &n in numbers {
            // Read outside the transaction (sled's transactional trees cannot scan);
            // records are only appended, and a closed incident gains none unless it
            // reopens, which the transaction checks below.
            let trail: Vec<sled::IVec> = self
                .audit
                .scan_prefix(n.to_be_bytes())
                .keys()
                .collect::<Result<_, _>>()?;
            let done = self.transact(|tx| {
                let Some(b) = tx.summaries.get(n.to_be_bytes())? else {
                    return Ok(false);
                };
                let s: IncidentSummary = dec("summary", &b).map_err(abort)?;
                if s.state != State::Closed {
                    return Ok(false);
                }
                for k in &trail {
                    tx.audit.remove(k)?;
                }
                for k in index_keys(&s) {
                    tx.idx.remove(k.as_slice())?;
                }
                if let Some(t) = s.next_deadline {
                    tx.timers.remove(timer_key(t, n))?;
                }
                tx.bump_count(s.state, -1)?;
                if let Some(inc) = tx.load_incident(n)? {
                    if let Some(k) = inc.fault_key() {
                        let fk = fault_key_bytes(&k.device, k.kind, &k.subject);
                        if tx.fault_index.get(&fk)?.as_deref() == Some(&n.to_be_bytes()[..]) {
                            tx.fault_index.remove(fk)?;
                        }
                    }
                }
                tx.remove_incident(n)?;
                Ok(true)
            })?;
            removed += usize::from(done);
        }
        Ok(removed)
    }

    fn event_seqs(&self, device: &DeviceId, instance: u64) -> Result<Vec<u64>, StoreError> {
        let prefix = event_prefix(device, instance);
        self.events
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, _) = kv?;
                u64_of("event key", &k[prefix.len()..])
            })
            .collect()
    }

    fn event_count(&self) -> usize {
        self.events.len()
    }

    fn account(&self, login: &str) -> Result<Option<Account>, StoreError> {
        get(&self.accounts, "account", login)
    }

    fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        all(&self.accounts, "account")
    }

    fn account_count(&self) -> Result<usize, StoreError> {
        Ok(self.accounts.len())
    }

    fn insert_account(&self, account: &Account) -> Result<bool, StoreError> {
        let v = enc("account", account)?;
        let swapped =
            self.accounts
                .compare_and_swap(account.login.as_str(), None::<&[u8]>, Some(v))?;
        Ok(swapped.is_ok())
    }

    fn put_account(&self, account: &Account) -> Result<(), StoreError> {
        self.accounts
            .insert(account.login.as_str(), enc("account", account)?)?;
        Ok(())
    }

    fn session(&self, key: &str) -> Result<Option<SessionRecord>, StoreError> {
        get(&self.sessions, "session", key)
    }

    fn put_session(&self, key: &str, session: &SessionRecord) -> Result<(), StoreError> {
        self.sessions.insert(key, enc("session", session)?)?;
        Ok(())
    }

    fn remove_session(&self, key: &str) -> Result<(), StoreError> {
        self.sessions.remove(key)?;
        Ok(())
    }

    fn prune_sessions(&self, now: Millis) -> Result<usize, StoreError> {
        let mut gone = 0;
        for kv in self.sessions.iter() {
            let (k, v) = kv?;
            // An unreadable record signs no one in: drop it too.
            let expired = dec::<SessionRecord>("session", &v).map_or(true, |s| s.expired(now));
            if expired {
                self.sessions.remove(k)?;
                gone += 1;
            }
        }
        Ok(gone)
    }

    fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        get(&self.tokens, "token", id)
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        all(&self.tokens, "token")
    }

    fn put_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        self.tokens
            .insert(token.id.as_str(), enc("token", token)?)?;
        Ok(())
    }

    fn remove_token(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.tokens.remove(id)?.is_some())
    }

    fn outbox_due(&self, now: Millis, max: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut out = Vec::new();
        for kv in self.outbox.iter() {
            let (_, v) = kv?;
            let e: OutboxEntry = dec("outbox entry", &v)?;
            if e.next_at <= now {
                out.push(e);
                if out.len() >= max {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn outbox_put(&self, entry: &OutboxEntry) -> Result<(), StoreError> {
        // Only while it is still there: an ack may have removed it meanwhile.
        let key = entry.id.to_be_bytes();
        if let Some(old) = self.outbox.get(key)? {
            let new = enc("outbox entry", entry)?;
            let _ = self.outbox.compare_and_swap(key, Some(old), Some(new))?;
        }
        Ok(())
    }

    fn outbox_remove(&self, id: u64) -> Result<bool, StoreError> {
        Ok(self.outbox.remove(id.to_be_bytes())?.is_some())
    }

    fn outbox_acked(&self, device: &DeviceId, ids: &[u64]) -> Result<usize, StoreError> {
        let mut n = 0;
        for id in ids {
            let key = id.to_be_bytes();
            if let Some(v) = self.outbox.get(key)? {
                let e: OutboxEntry = dec("outbox entry", &v)?;
                // A device acknowledges only its own commands.
                if &e.device == device && self.outbox.remove(key)?.is_some() {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    fn outbox_retry(&self, device: &DeviceId, now: Millis) -> Result<usize, StoreError> {
        let mut n = 0;
        for kv in self.outbox.iter() {
            let (k, v) = kv?;
            let mut e: OutboxEntry = dec("outbox entry", &v)?;
            if &e.device == device && e.next_at > now {
                e.next_at = now;
                let _ = self
                    .outbox
                    .compare_and_swap(k, Some(v), Some(enc("outbox entry", &e)?))?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn notify_due(&self, now: Millis, max: usize) -> Result<Vec<NotifyEntry>, StoreError> {
        let mut out = Vec::new();
        for kv in self.notify.iter() {
            let (_, v) = kv?;
            let e: NotifyEntry = dec("notification", &v)?;
            if e.next_due().is_some_and(|at| at <= now) {
                out.push(e);
                if out.len() >= max {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn notify_put(&self, e: &NotifyEntry) -> Result<(), StoreError> {
        let key = e.id.to_be_bytes();
        let bytes = enc("notification", e)?;
        if e.finished() {
            // Kept with its incident for the record, out of the queue the sender scans.
            let mut log_key = e.incident.to_be_bytes().to_vec();
            log_key.extend_from_slice(&key);
            (&self.notify, &self.notify_log)
                .transaction(|(q, log)| {
                    q.remove(&key)?;
                    log.insert(log_key.as_slice(), bytes.as_slice())?;
                    Ok(())
                })
                .map_err(tx_err)?;
        } else {
            self.notify.insert(key, bytes)?;
        }
        Ok(())
    }

    fn notify_recent(&self, key: &str) -> Result<Option<Millis>, StoreError> {
        match self.notify_recent.get(key.as_bytes())? {
            Some(b) => Ok(Some(u64_of("notification time", &b)?)),
            None => Ok(None),
        }
    }

    fn notify_route(&self, e: &NotifyEntry, marks: &[(String, Millis)]) -> Result<(), StoreError> {
        let bytes = enc("notification", e)?;
        let key = e.id.to_be_bytes();
        let mut log_key = e.incident.to_be_bytes().to_vec();
        log_key.extend_from_slice(&key);
        let finished = e.finished();
        (&self.notify, &self.notify_log, &self.notify_recent)
            .transaction(|(q, log, recent)| {
                if finished {
                    q.remove(&key)?;
                    log.insert(log_key.as_slice(), bytes.as_slice())?;
                } else {
                    q.insert(&key, bytes.as_slice())?;
                }
                for (k, at) in marks {
                    recent.insert(k.as_bytes(), &at.to_be_bytes())?;
                }
                Ok(())
            })
            .map_err(tx_err)
    }

    fn notify_held(
        &self,
        channel: crate::notify::Channel,
        to: &str,
    ) -> Result<Vec<NotifyEntry>, StoreError> {
        let mut out = Vec::new();
        for kv in self.notify.iter() {
            let (_, v) = kv?;
            let e: NotifyEntry = dec("notification", &v)?;
            if e.deliveries.iter().any(|d| {
                d.state == crate::notify::DeliveryState::Held && d.channel == channel && d.to == to
            }) {
                out.push(e);
            }
        }
        Ok(out)
    }

    fn notify_digest(
        &self,
        digest: &NotifyEntry,
        held: &[NotifyEntry],
        marks: &[(String, Millis)],
    ) -> Result<NotifyEntry, StoreError> {
        let (channel, to) = digest
            .deliveries
            .first()
            .map(|d| (d.channel, d.to.clone()))
            .ok_or_else(|| StoreError::Corrupt("a digest without its recipient"))?;
        let out = (
            &self.meta,
            &self.notify,
            &self.notify_log,
            &self.notify_recent,
        )
            .transaction(|(meta, q, log, recent)| {
                let id = match meta.get(NEXT_NOTIFY)? {
                    Some(b) => u64_of("notification counter", &b).map_err(abort)?,
                    None => 1,
                };
                meta.insert(NEXT_NOTIFY, &(id + 1).to_be_bytes())?;
                let mut d = digest.clone();
                d.id = id;
                q.insert(&id.to_be_bytes(), enc("notification", &d).map_err(abort)?)?;
                let mut sources = held.to_vec();
                crate::notify::mark_digested(&mut sources, channel, &to, id, d.at);
                for e in &sources {
                    let key = e.id.to_be_bytes();
                    let bytes = enc("notification", e).map_err(abort)?;
                    if e.finished() {
                        let mut log_key = e.incident.to_be_bytes().to_vec();
                        log_key.extend_from_slice(&key);
                        q.remove(&key)?;
                        log.insert(log_key, bytes)?;
                    } else {
                        q.insert(&key, bytes)?;
                    }
                }
                for (k, at) in marks {
                    recent.insert(k.as_bytes(), &at.to_be_bytes())?;
                }
                Ok(d)
            })
            .map_err(tx_err)?;
        Ok(out)
    }

    fn notifications_of(&self, incident: IncidentNo) -> Result<Vec<NotifyEntry>, StoreError> {
        let mut out = Vec::new();
        for kv in self.notify_log.scan_prefix(incident.to_be_bytes()) {
            let (_, v) = kv?;
            out.push(dec("notification", &v)?);
        }
        for kv in self.notify.iter() {
            let (_, v) = kv?;
            let e: NotifyEntry = dec("notification", &v)?;
            if e.incident == incident {
                out.push(e);
            }
        }
        out.sort_by_key(|e: &NotifyEntry| e.id);
        Ok(out)
    }

    fn notify_len(&self) -> usize {
        self.notify.len()
    }

    fn providers(&self) -> Result<Vec<crate::providers::Provider>, StoreError> {
        let mut out = Vec::new();
        for kv in self.providers.iter() {
            let (_, v) = kv?;
            out.push(dec("provider", &v)?);
        }
        Ok(out)
    }

    fn provider(&self, name: &str) -> Result<Option<crate::providers::Provider>, StoreError> {
        match self.providers.get(crate::providers::key(name))? {
            Some(v) => Ok(Some(dec("provider", &v)?)),
            None => Ok(None),
        }
    }

    fn put_provider(&self, p: &crate::providers::Provider) -> Result<(), StoreError> {
        self.providers
            .insert(crate::providers::key(&p.name), enc("provider", p)?)?;
        Ok(())
    }

    fn remove_provider(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .providers
            .remove(crate::providers::key(name))?
            .is_some())
    }

    fn enrolment(&self, request: &str) -> Result<Option<EnrolmentRecord>, StoreError> {
        match self.enrolments.get(request)? {
            Some(v) => Ok(Some(dec("enrolment", &v)?)),
            None => Ok(None),
        }
    }

    fn enrolments(&self) -> Result<Vec<EnrolmentRecord>, StoreError> {
        let mut out = Vec::new();
        for kv in self.enrolments.iter() {
            out.push(dec("enrolment", &kv?.1)?);
        }
        Ok(out)
    }

    fn put_enrolment(&self, r: &EnrolmentRecord) -> Result<(), StoreError> {
        self.enrolments
            .insert(r.request.as_bytes(), enc("enrolment", r)?)?;
        Ok(())
    }

    fn enrol_sites(&self) -> Result<Vec<SiteRecord>, StoreError> {
        let mut out = Vec::new();
        for kv in self.enrol_sites.iter() {
            out.push(dec("enrolment site", &kv?.1)?);
        }
        Ok(out)
    }

    fn put_enrol_site(&self, r: &SiteRecord) -> Result<(), StoreError> {
        self.enrol_sites
            .insert(r.site.as_bytes(), enc("enrolment site", r)?)?;
        Ok(())
    }

    fn remove_enrol_site(&self, site: &str) -> Result<bool, StoreError> {
        Ok(self.enrol_sites.remove(site)?.is_some())
    }

    fn set_warranties(
        &self,
        items: &[(DeviceId, Option<WarrantyRecord>)],
    ) -> Result<Vec<DeviceId>, StoreError> {
        self.devices
            .transaction(|t| {
                let mut unknown = Vec::new();
                let mut recs = Vec::with_capacity(items.len());
                for (id, w) in items {
                    match t.get(id.as_str())? {
                        Some(b) => {
                            let mut rec: DeviceRecord = dec("device", &b).map_err(abort)?;
                            rec.warranty.clone_from(w);
                            recs.push(rec);
                        }
                        None => unknown.push(id.clone()),
                    }
                }
                if unknown.is_empty() {
                    for rec in &recs {
                        t.insert(rec.device.as_str(), enc("device", rec).map_err(abort)?)?;
                    }
                }
                Ok(unknown)
            })
            .map_err(tx_err)
    }
}

impl SledStore {
    /// Opens (or creates) the store in `dir` with the default options. Fails if another
    /// process holds it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, StoreOptions::default())
    }

    /// Opens (or creates) the store in `dir`; a store written in an older layout is
    /// migrated first (see the module documentation). Fails if another process holds it.
    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        Ok(Self {
            dir: dir.to_path_buf(),
            options,
            current: std::sync::RwLock::new(Some(Handles::open(dir, options)?)),
            failed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Option<Handles>> {
        // A panic in a call leaves sled's own state consistent: keep using it.
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` on the open database; an I/O error marks the store for reopening.
    fn with<R>(&self, f: impl FnOnce(&Handles) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let guard = self.read();
        let h = guard.as_ref().ok_or(StoreError::Unavailable)?;
        let r = f(h);
        if matches!(r, Err(StoreError::Backend(_))) {
            self.failed.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        r
    }

    /// Writes many new incidents at once, without transactions: one sled batch per tree.
    /// For filling a fresh store (benchmarks, imports); the incidents must not exist yet
    /// and the batch is not atomic across trees, so never use it on a live collector.
    pub fn import(&self, incidents: &[Incident], policy: &Policy) -> Result<(), StoreError> {
        self.with(|h| h.import(incidents, policy))
    }
}

impl Store for SledStore {
    fn flush(&self) -> Result<(), StoreError> {
        self.with(|h| h.flush())
    }

    fn record_event(
        &self,
        ev: &Event,
        now: Millis,
        policy: &Policy,
    ) -> Result<EventOutcome, StoreError> {
        self.with(|h| h.record_event(ev, now, policy))
    }

    fn record_events(
        &self,
        evs: &[Event],
        now: Millis,
        policy: &Policy,
    ) -> Vec<Result<EventOutcome, StoreError>> {
        let guard = self.read();
        let Some(h) = guard.as_ref() else {
            return evs.iter().map(|_| Err(StoreError::Unavailable)).collect();
        };
        let out = h.record_events(evs, now, policy);
        if out.iter().any(|r| matches!(r, Err(StoreError::Backend(_)))) {
            self.failed.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        out
    }

    fn record_birth(&self, birth: &Birth, now: Millis) -> Result<bool, StoreError> {
        self.with(|h| h.record_birth(birth, now))
    }

    fn record_status(&self, st: &Status, now: Millis) -> Result<StatusOutcome, StoreError> {
        self.with(|h| h.record_status(st, now))
    }

    fn apply_command(
        &self,
        number: IncidentNo,
        by: &Person,
        command: &Command,
        now: Millis,
        policy: &Policy,
    ) -> Result<Decision, StoreError> {
        self.with(|h| h.apply_command(number, by, command, now, policy))
    }

    fn open_service(
        &self,
        order: &ServiceOrder,
        spec: &ProviderRequestSpec,
        by: &Person,
        now: Millis,
        policy: &Policy,
    ) -> Result<Decision, StoreError> {
        self.with(|h| h.open_service(order, spec, by, now, policy))
    }

    fn next_timer(&self) -> Result<Option<Millis>, StoreError> {
        self.with(|h| h.next_timer())
    }

    fn tick_due(
        &self,
        now: Millis,
        policy: &Policy,
        max: usize,
    ) -> Result<Vec<Decision>, StoreError> {
        self.with(|h| h.tick_due(now, policy, max))
    }

    fn reschedule_timers(&self, policy: &Policy) -> Result<usize, StoreError> {
        self.with(|h| h.reschedule_timers(policy))
    }

    fn incident(&self, number: IncidentNo) -> Result<Option<Incident>, StoreError> {
        self.with(|h| h.incident(number))
    }

    fn summary(&self, number: IncidentNo) -> Result<Option<IncidentSummary>, StoreError> {
        self.with(|h| h.summary(number))
    }

    fn incidents(&self, filter: &IncidentFilter) -> Result<Vec<IncidentSummary>, StoreError> {
        self.with(|h| h.incidents(filter))
    }

    fn incident_counts(&self) -> Result<BTreeMap<State, u64>, StoreError> {
        self.with(|h| h.incident_counts())
    }

    fn export(&self, period: &Period, view: &ExportView<'_>) -> Result<Vec<ExportRow>, StoreError> {
        self.with(|h| h.export(period, view))
    }

    fn verifications(
        &self,
        period: &Period,
        view: &ExportView<'_>,
    ) -> Result<Vec<workflow::VerificationRow>, StoreError> {
        self.with(|h| h.verifications(period, view))
    }

    fn device(&self, id: &DeviceId) -> Result<Option<DeviceRecord>, StoreError> {
        self.with(|h| h.device(id))
    }

    fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        self.with(|h| h.devices())
    }

    fn event(
        &self,
        device: &DeviceId,
        instance: u64,
        seq: u64,
    ) -> Result<Option<StoredEvent>, StoreError> {
        self.with(|h| h.event(device, instance, seq))
    }

    fn event_seqs(&self, device: &DeviceId, instance: u64) -> Result<Vec<u64>, StoreError> {
        self.with(|h| h.event_seqs(device, instance))
    }

    fn compact_events(&self, before: Millis, max: usize) -> Result<usize, StoreError> {
        self.with(|h| h.compact_events(before, max))
    }

    fn closed_before(&self, before: Millis, max: usize) -> Result<Vec<Incident>, StoreError> {
        self.with(|h| h.closed_before(before, max))
    }

    fn remove_incidents(&self, numbers: &[IncidentNo]) -> Result<usize, StoreError> {
        self.with(|h| h.remove_incidents(numbers))
    }

    fn event_count(&self) -> usize {
        self.read().as_ref().map_or(0, |h| h.event_count())
    }

    fn account(&self, login: &str) -> Result<Option<Account>, StoreError> {
        self.with(|h| h.account(login))
    }

    fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.with(|h| h.accounts())
    }

    fn account_count(&self) -> Result<usize, StoreError> {
        self.with(|h| h.account_count())
    }

    fn insert_account(&self, account: &Account) -> Result<bool, StoreError> {
        self.with(|h| h.insert_account(account))
    }

    fn put_account(&self, account: &Account) -> Result<(), StoreError> {
        self.with(|h| h.put_account(account))
    }

    fn session(&self, key: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.with(|h| h.session(key))
    }

    fn put_session(&self, key: &str, session: &SessionRecord) -> Result<(), StoreError> {
        self.with(|h| h.put_session(key, session))
    }

    fn remove_session(&self, key: &str) -> Result<(), StoreError> {
        self.with(|h| h.remove_session(key))
    }

    fn prune_sessions(&self, now: Millis) -> Result<usize, StoreError> {
        self.with(|h| h.prune_sessions(now))
    }

    fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.with(|h| h.token(id))
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.with(|h| h.tokens())
    }

    fn put_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        self.with(|h| h.put_token(token))
    }

    fn remove_token(&self, id: &str) -> Result<bool, StoreError> {
        self.with(|h| h.remove_token(id))
    }

    fn outbox_due(&self, now: Millis, max: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        self.with(|h| h.outbox_due(now, max))
    }

    fn outbox_put(&self, entry: &OutboxEntry) -> Result<(), StoreError> {
        self.with(|h| h.outbox_put(entry))
    }

    fn outbox_remove(&self, id: u64) -> Result<bool, StoreError> {
        self.with(|h| h.outbox_remove(id))
    }

    fn outbox_acked(&self, device: &DeviceId, ids: &[u64]) -> Result<usize, StoreError> {
        self.with(|h| h.outbox_acked(device, ids))
    }

    fn outbox_len(&self) -> usize {
        self.read().as_ref().map_or(0, |h| h.outbox_len())
    }

    fn outbox_retry(&self, device: &DeviceId, now: Millis) -> Result<usize, StoreError> {
        self.with(|h| h.outbox_retry(device, now))
    }

    fn notify_due(&self, now: Millis, max: usize) -> Result<Vec<NotifyEntry>, StoreError> {
        self.with(|h| h.notify_due(now, max))
    }

    fn notify_put(&self, entry: &NotifyEntry) -> Result<(), StoreError> {
        self.with(|h| h.notify_put(entry))
    }

    fn notifications_of(&self, incident: IncidentNo) -> Result<Vec<NotifyEntry>, StoreError> {
        self.with(|h| h.notifications_of(incident))
    }

    fn notify_recent(&self, key: &str) -> Result<Option<Millis>, StoreError> {
        self.with(|h| h.notify_recent(key))
    }

    fn notify_route(&self, e: &NotifyEntry, marks: &[(String, Millis)]) -> Result<(), StoreError> {
        self.with(|h| h.notify_route(e, marks))
    }

    fn notify_held(
        &self,
        channel: crate::notify::Channel,
        to: &str,
    ) -> Result<Vec<NotifyEntry>, StoreError> {
        self.with(|h| h.notify_held(channel, to))
    }

    fn notify_digest(
        &self,
        digest: &NotifyEntry,
        held: &[NotifyEntry],
        marks: &[(String, Millis)],
    ) -> Result<NotifyEntry, StoreError> {
        self.with(|h| h.notify_digest(digest, held, marks))
    }

    fn notify_len(&self) -> usize {
        self.read().as_ref().map_or(0, |h| h.notify_len())
    }

    fn providers(&self) -> Result<Vec<crate::providers::Provider>, StoreError> {
        self.with(|h| h.providers())
    }

    fn provider(&self, name: &str) -> Result<Option<crate::providers::Provider>, StoreError> {
        self.with(|h| h.provider(name))
    }

    fn put_provider(&self, p: &crate::providers::Provider) -> Result<(), StoreError> {
        self.with(|h| h.put_provider(p))
    }

    fn remove_provider(&self, name: &str) -> Result<bool, StoreError> {
        self.with(|h| h.remove_provider(name))
    }

    fn enrolment(&self, request: &str) -> Result<Option<EnrolmentRecord>, StoreError> {
        self.with(|h| h.enrolment(request))
    }

    fn enrolments(&self) -> Result<Vec<EnrolmentRecord>, StoreError> {
        self.with(|h| h.enrolments())
    }

    fn put_enrolment(&self, r: &EnrolmentRecord) -> Result<(), StoreError> {
        self.with(|h| h.put_enrolment(r))
    }

    fn enrol_sites(&self) -> Result<Vec<SiteRecord>, StoreError> {
        self.with(|h| h.enrol_sites())
    }

    fn put_enrol_site(&self, r: &SiteRecord) -> Result<(), StoreError> {
        self.with(|h| h.put_enrol_site(r))
    }

    fn remove_enrol_site(&self, site: &str) -> Result<bool, StoreError> {
        self.with(|h| h.remove_enrol_site(site))
    }

    fn set_warranties(
        &self,
        items: &[(DeviceId, Option<WarrantyRecord>)],
    ) -> Result<Vec<DeviceId>, StoreError> {
        self.with(|h| h.set_warranties(items))
    }

    fn recover(&self) -> Result<bool, StoreError> {
        use std::sync::atomic::Ordering;
        if !self.failed.load(Ordering::SeqCst) {
            return Ok(false);
        }
        if !vigia_protocol::disk::has_room(&self.dir, vigia_protocol::disk::REOPEN_FREE_BYTES) {
            return Err(StoreError::NoRoom(self.dir.clone()));
        }
        let mut cur = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Every handle goes first: sled holds one lock per database.
        drop(cur.take());
        let reopened = match Handles::open(&self.dir, self.options) {
            Err(StoreError::Backend(_)) => {
                let (removed, _) = vigia_protocol::disk::remove_unfinished_snapshots(&self.dir);
                for f in &removed {
                    tracing::warn!(file = %f.display(),
                        "store: removed an unfinished snapshot a full disk left behind");
                }
                Handles::open(&self.dir, self.options)
            }
            other => other,
        }?;
        *cur = Some(reopened);
        self.failed.store(false, Ordering::SeqCst);
        tracing::info!(dir = %self.dir.display(), "store reopened after an I/O error");
        Ok(true)
    }
}

fn get<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    what: &'static str,
    key: &str,
) -> Result<Option<T>, StoreError> {
    tree.get(key)?.map(|b| dec(what, &b)).transpose()
}

fn all<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    what: &'static str,
) -> Result<Vec<T>, StoreError> {
    tree.iter()
        .map(|kv| {
            let (_, v) = kv?;
            dec(what, &v)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeSet, HashMap};
    use vigia_protocol::{
        bounded, CmdBody, Dropped, Evidence, FaultAction, FaultEvent, FaultKind, Reply, SeqRange,
        Severity, Urgency, UserReport, VERSION,
    };
    use workflow::{
        ClosureReason, Correlation, DeviceContext, DeviceEvent, FaultInput, Level, Priority, Role,
        WorkflowError, MINUTE,
    };

    fn id(s: &str) -> DeviceId {
        DeviceId::new(s).unwrap()
    }

    fn fault(dev: &str, seq: u64, action: FaultAction, kind: FaultKind, subject: &str) -> Event {
        Event {
            v: VERSION,
            device: id(dev),
            instance: 1,
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
            instance: 1,
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
            instance: 1,
            online,
            boot,
            ts: 5,
        }
    }

    fn desk() -> Person {
        Person::new("ana", [Role::ServiceDesk])
    }

    /// The bodies of the commands waiting in the outbox.
    fn queued(s: &SledStore) -> Vec<CmdBody> {
        s.outbox_due(u64::MAX, 1000)
            .unwrap()
            .into_iter()
            .map(|e| e.body)
            .collect()
    }

    fn numbers(v: &[IncidentSummary]) -> Vec<u64> {
        v.iter().map(|s| s.number).collect()
    }

    const T0: Millis = 1_800_000_000_000;

    #[test]
    fn fault_opens_one_incident_and_a_quick_clear_closes_it_as_transient() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
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
    fn retention_compacts_old_events_keeping_counts_and_archives_old_closed_incidents() {
        use crate::retention::{run_once, Archive, RetentionConfig};
        use crate::workflow::{Dur, DAY};
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(&dir.path().join("db")).unwrap();
        let archive = Archive::new(dir.path());
        let p = Policy::default();
        let k = FaultKind::DiskSpace;
        // Incident 1 opens and closes (transient) on day 0; incident 2 opens on day 20
        // and stays open.
        s.record_event(&fault("a", 1, FaultAction::Raised, k, "/var"), T0, &p)
            .unwrap();
        s.record_event(&fault("a", 2, FaultAction::Cleared, k, "/var"), T0 + 1, &p)
            .unwrap();
        let day20 = T0 + 20 * DAY;
        s.record_event(&fault("a", 3, FaultAction::Raised, k, "/home"), day20, &p)
            .unwrap();
        let cfg = RetentionConfig {
            events_after: Dur(10 * DAY),
            incidents_after: Dur(30 * DAY),
            ..RetentionConfig::default()
        };
        // Day 25: the first two events are old, incident 1 is not old enough.
        let pass = run_once(&s, &archive, &cfg, T0 + 25 * DAY).unwrap();
        assert_eq!((pass.compacted, pass.archived), (2, 0));
        let d = id("a");
        // Counts and seqs are kept, details are gone, and a resend is still a duplicate.
        assert_eq!(s.event_seqs(&d, 1).unwrap(), vec![1, 2, 3]);
        assert_eq!(s.event_count(), 3);
        assert_eq!(s.event(&d, 1, 1).unwrap(), None);
        assert!(s.event(&d, 1, 3).unwrap().is_some());
        let again = s
            .record_event(
                &fault("a", 1, FaultAction::Raised, k, "/var"),
                T0 + 25 * DAY,
                &p,
            )
            .unwrap();
        assert!(again.duplicate && again.decision.is_none());
        assert_eq!(s.incident(1).unwrap().unwrap().occurrences, 1);
        // Day 31: event 3 is old too; incident 1 goes to the archive and leaves the
        // live store whole.
        let pass = run_once(&s, &archive, &cfg, T0 + 31 * DAY).unwrap();
        assert_eq!((pass.compacted, pass.archived), (1, 1));
        assert_eq!(s.incident(1).unwrap(), None);
        assert_eq!(s.summary(1).unwrap(), None);
        assert_eq!(
            numbers(&s.incidents(&IncidentFilter::default()).unwrap()),
            vec![2]
        );
        let closed = s
            .incidents(&IncidentFilter {
                state: Some(StateFilter::Is(State::Closed)),
                ..Default::default()
            })
            .unwrap();
        assert!(closed.is_empty(), "{closed:?}");
        assert_eq!(s.incident_counts().unwrap().get(&State::Closed), Some(&0));
        let archived = archive.read().unwrap();
        assert_eq!(archived.len(), 1);
        assert_eq!(archived[0].number, 1);
        assert_eq!(archived[0].state, State::Closed);
        assert!(!archived[0].audit.is_empty(), "the trail goes with it");
        // The same fault again is a new incident, numbered after the others.
        let o = s
            .record_event(
                &fault("a", 4, FaultAction::Raised, k, "/var"),
                T0 + 31 * DAY,
                &p,
            )
            .unwrap();
        assert_eq!(o.decision.unwrap().0.incident.number, 3);
        // Archiving twice (a crash between the archive and the removal) exports once.
        archive.append(&archived).unwrap();
        assert_eq!(archive.read().unwrap().len(), 1);
    }

    #[test]
    fn a_change_and_its_notifications_are_stored_together_and_kept_once_sent() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let p = Policy::default();
        s.record_event(&report("a", 1, "ext 5"), T0, &p).unwrap();
        s.record_event(&report("a", 1, "ext 5"), T0 + 1, &p)
            .unwrap();
        let due = s.notify_due(T0, 10).unwrap();
        assert_eq!(
            due.len(),
            1,
            "one opening, the duplicate adds nothing: {due:?}"
        );
        let mut e = due[0].clone();
        assert_eq!(
            (e.event, e.incident, e.routed),
            (crate::notify::NotifyEvent::Opened, 1, false)
        );
        assert!(
            s.notify_due(T0 - 1, 10).unwrap().is_empty(),
            "not due before its change"
        );
        // Routed to one recipient, failed once: still queued, due at its retry.
        e.routed = true;
        e.deliveries = vec![crate::notify::Delivery {
            channel: crate::notify::Channel::Email,
            to: "it@example.org".into(),
            lang: crate::notify::Lang::Es,
            state: crate::notify::DeliveryState::Pending,
            attempts: 1,
            next_at: T0 + 500,
            done_at: None,
            error: Some("421 busy".into()),
            digest: None,
        }];
        s.notify_put(&e).unwrap();
        assert!(s.notify_due(T0 + 499, 10).unwrap().is_empty());
        assert_eq!(s.notify_due(T0 + 500, 10).unwrap().len(), 1);
        // Sent: out of the queue, still shown with its incident.
        e.deliveries[0].state = crate::notify::DeliveryState::Sent;
        s.notify_put(&e).unwrap();
        assert!(s.notify_due(u64::MAX, 10).unwrap().is_empty());
        assert_eq!(s.notify_len(), 0);
        assert_eq!(s.notifications_of(1).unwrap(), vec![e]);
        assert!(s.notifications_of(2).unwrap().is_empty());
    }

    #[test]
    fn a_drop_notice_counts_as_lost_only_what_was_never_stored() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let p = Policy::default();
        let k = FaultKind::DiskSpace;
        // Seqs 1 and 2 were published and stored; then the agent's spool evicted 1 to 4
        // (3 and 4 never reached the collector) and refused one more before writing it.
        for seq in 1..=2 {
            s.record_event(&fault("a", seq, FaultAction::Updated, k, "/var"), T0, &p)
                .unwrap();
        }
        let notice = |seq: u64, count: u64, ranges: &[(u64, u64)]| Event {
            body: EventBody::Dropped(Dropped {
                count,
                worst: Severity::Warning,
                seqs: ranges
                    .iter()
                    .map(|&(from, to)| SeqRange { from, to })
                    .collect(),
            }),
            ..report("a", seq, "")
        };
        s.record_event(&notice(5, 5, &[(1, 4)]), T0 + 1, &p)
            .unwrap();
        let lost = |s: &SledStore| s.device(&id("a")).unwrap().unwrap().dropped.unwrap().total;
        assert_eq!(
            lost(&s),
            3,
            "1 and 2 are stored: 3, 4 and the unwritten one are lost"
        );
        // Another instance's seqs are not this one's: a notice from instance 2 naming 1..2
        // finds none of them.
        let other = Event {
            instance: 2,
            ..notice(1, 2, &[(1, 2)])
        };
        s.record_event(&other, T0 + 2, &p).unwrap();
        assert_eq!(lost(&s), 5);
        // A notice that lists more than it counts, or a range backwards, is not believed:
        // all of its count is lost.
        s.record_event(&notice(6, 1, &[(1, 2)]), T0 + 3, &p)
            .unwrap();
        assert_eq!(lost(&s), 6);
        s.record_event(&notice(7, 2, &[(2, 1)]), T0 + 4, &p)
            .unwrap();
        assert_eq!(lost(&s), 8);
    }

    /// The raw head of incident `n` and the number of audit records stored, all incidents.
    fn layout_of(s: &SledStore, n: u64) -> (usize, usize) {
        let g = s.read();
        let h = g.as_ref().unwrap();
        let head = h.incidents.get(n.to_be_bytes()).unwrap().unwrap();
        (head.len(), h.audit.len())
    }

    #[test]
    fn an_event_costs_the_same_whatever_its_incidents_history() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let p = Policy::default();
        let ev = |seq, action| fault("a", seq, action, FaultKind::DiskSpace, "/");
        s.record_event(&ev(1, FaultAction::Raised), T0, &p).unwrap();
        for seq in 2..=20 {
            s.record_event(&ev(seq, FaultAction::Updated), T0 + seq, &p)
                .unwrap();
        }
        let (head20, audit20) = layout_of(&s, 1);
        for seq in 21..=600 {
            s.record_event(&ev(seq, FaultAction::Updated), T0 + seq, &p)
                .unwrap();
        }
        let (head600, audit600) = layout_of(&s, 1);
        let inc = s.incident(1).unwrap().unwrap();
        assert_eq!(inc.occurrences, 600);
        assert_eq!(s.event_count(), 600);
        // What an event reads and rewrites does not grow with the history: the head
        // differs by the digits of its counters at most, the trail by nothing.
        assert!(head600 <= head20 + 16, "head {head20} → {head600} bytes");
        assert_eq!(audit600, audit20, "repeats appended audit records");
        assert_eq!(inc.audit.len(), inc.audit_len as usize);
        assert_eq!(inc.recent.last().map(|o| o.seq), Some(600));
        assert_eq!(inc.recent.first.as_ref().map(|o| o.seq), Some(1));
        // The summary the lists read says the same.
        let sum = s.summary(1).unwrap().unwrap();
        assert_eq!(sum.occurrences, 600);
        assert_eq!(sum.updated_at, T0 + 600);
    }

    #[test]
    fn large_values_are_stored_compressed_and_a_store_sled_compressed_still_opens() {
        let p = Policy::default();
        let conf = |d: &Path| {
            String::from_utf8_lossy(&std::fs::read(d.join("conf")).unwrap()).into_owned()
        };
        let raw_head = |s: &SledStore| {
            let g = s.read();
            let h = g.as_ref().unwrap();
            h.incidents
                .get(1u64.to_be_bytes())
                .unwrap()
                .unwrap()
                .to_vec()
        };
        let ev = fault("a", 1, FaultAction::Raised, FaultKind::DiskSpace, "/");

        // A new store: sled's pages as they are, the store's larger values compressed.
        let new = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(new.path()).unwrap();
            s.record_event(&ev, T0, &p).unwrap();
            s.flush().unwrap();
            let head = raw_head(&s);
            assert_eq!(head[0], PACKED_V1, "{}", String::from_utf8_lossy(&head));
            let json = serde_json::to_vec(&dec::<Incident>("incident", &head).unwrap()).unwrap();
            assert!(head.len() < json.len(), "{} vs {}", head.len(), json.len());
        }
        assert!(
            conf(new.path()).contains("use_compression: false"),
            "{}",
            conf(new.path())
        );
        let s = SledStore::open(new.path()).unwrap();
        assert_eq!(s.incident(1).unwrap().unwrap().occurrences, 1);
        drop(s);

        // A store whose pages sled compressed (as the store did from 12-03 to 12-06): it
        // stays so, and opens and takes writes as before.
        let old = tempfile::tempdir().unwrap();
        {
            let db = sled::Config::new()
                .path(old.path())
                .use_compression(true)
                .compression_factor(COMPRESSION_LEVEL)
                .open()
                .unwrap();
            db.flush().unwrap();
        }
        assert!(conf(old.path()).contains("use_compression: true"));
        {
            let s = SledStore::open(old.path()).unwrap();
            s.record_event(&ev, T0, &p).unwrap();
            s.flush().unwrap();
        }
        let s = SledStore::open(old.path()).unwrap();
        assert_eq!(s.incident(1).unwrap().unwrap().occurrences, 1);
        assert!(conf(old.path()).contains("use_compression: true"));
    }

    #[test]
    fn a_value_that_is_not_a_whole_frame_is_refused_as_corrupt() {
        let inc = serde_json::json!({ "message": "x".repeat(4 * COMPRESS_FROM) });
        let packed = enc("incident", &inc).unwrap();
        assert_eq!(packed[0], PACKED_V1);
        assert_eq!(dec::<serde_json::Value>("incident", &packed).unwrap(), inc);
        let cut = &packed[..packed.len() - 3];
        assert!(matches!(
            dec::<serde_json::Value>("incident", cut),
            Err(StoreError::Corrupt("incident"))
        ));
        // Short values stay JSON.
        assert_eq!(enc("incident", &1u8).unwrap(), b"1");
    }

    #[test]
    fn a_value_compressed_with_the_dictionary_decodes_as_it_did_when_written() {
        // A device record in the stored format (the tag, then the zstd frame against
        // values-v1.dict without its magic), made once by another zstd: the dictionary is
        // part of the format, and an edited one would not inflate this to the record.
        let packed = [
            0x01, 0x20, 0x49, 0x6d, 0x00, 0x00, 0x10, 0x7b, 0x7d, 0x02, 0x00, 0xfa, 0x21, 0x3c,
            0x41, 0x15, 0x1e, 0xbc, 0x02,
        ];
        let rec: DeviceRecord = dec("device", &packed).unwrap();
        let want = r#"{"device":"ws-0001","first_seen":1800000000100,"last_seen":1800000007900}"#;
        assert_eq!(serde_json::to_string(&rec).unwrap(), want);
        let again = enc("device", &rec).unwrap();
        assert_eq!(again[0], PACKED_V1);
        assert_eq!(dec::<DeviceRecord>("device", &again).unwrap(), rec);
    }

    #[test]
    fn a_store_in_the_first_layout_is_migrated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let p = Policy::default();
        let want = {
            let s = SledStore::open(dir.path()).unwrap();
            s.record_event(
                &fault("a", 1, FaultAction::Raised, FaultKind::DiskSpace, "/"),
                T0,
                &p,
            )
            .unwrap();
            s.apply_command(
                1,
                &desk(),
                &Command::Note {
                    text: "looked".into(),
                },
                T0 + 1,
                &p,
            )
            .unwrap();
            let mut want = s.incident(1).unwrap().unwrap();
            assert!(want.audit.len() >= 3, "{:?}", want.audit);
            // Rewrite it as layout 1 stored it: the trail inside, none of the new fields.
            let g = s.read();
            let h = g.as_ref().unwrap();
            let mut old = serde_json::to_value(&want).unwrap();
            let obj = old.as_object_mut().unwrap();
            for field in ["audit_len", "updated_at", "recent"] {
                obj.remove(field);
            }
            h.incidents
                .insert(1u64.to_be_bytes(), serde_json::to_vec(&old).unwrap())
                .unwrap();
            h.audit.clear().unwrap();
            h.meta.remove(LAYOUT).unwrap();
            drop(g);
            s.flush().unwrap();
            // Layout 1 had no ring of occurrences to migrate.
            want.recent = Default::default();
            want
        };
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.incident(1).unwrap().unwrap(), want);
        let (_, records) = layout_of(&s, 1);
        assert_eq!(records, want.audit.len());
        {
            let g = s.read();
            let head: Incident = dec(
                "incident",
                &g.as_ref()
                    .unwrap()
                    .incidents
                    .get(1u64.to_be_bytes())
                    .unwrap()
                    .unwrap(),
            )
            .unwrap();
            assert!(head.audit.is_empty(), "the trail stayed in the head");
        }
        // And it goes on from where the trail ended.
        let d = s
            .apply_command(
                1,
                &desk(),
                &Command::Note {
                    text: "again".into(),
                },
                T0 + 2,
                &p,
            )
            .unwrap();
        assert_eq!(d.records[0].seq as usize, want.audit.len());
        assert_eq!(d.incident.audit.len(), want.audit.len() + 1);
        assert_eq!(d.incident.audit[..want.audit.len()], want.audit[..]);
        // Opened again: nothing left to migrate, nothing moved twice.
        drop(s);
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.incident(1).unwrap().unwrap(), d.incident);
    }

    #[test]
    fn a_batch_stores_what_one_event_at_a_time_does() {
        let p = Policy::default();
        // Raises, repeats, clears, a report, and redeliveries inside one batch and
        // across batches.
        let mut evs = Vec::new();
        for seq in 1..=40u64 {
            let action = match seq % 7 {
                0 => FaultAction::Cleared,
                1 => FaultAction::Raised,
                _ => FaultAction::Updated,
            };
            let subject = if seq % 3 == 0 { "/var" } else { "/" };
            evs.push(fault("a", seq, action, FaultKind::DiskSpace, subject));
            if seq % 5 == 0 {
                evs.push(fault(
                    "a",
                    seq - 2,
                    FaultAction::Updated,
                    FaultKind::DiskSpace,
                    "/",
                ));
            }
            if seq % 11 == 0 {
                evs.push(report("b", seq, "ext 1"));
            }
        }
        let one = tempfile::tempdir().unwrap();
        let many = tempfile::tempdir().unwrap();
        let s1 = SledStore::open(one.path()).unwrap();
        let sn = SledStore::open(many.path()).unwrap();
        let mut now = T0;
        for chunk in evs.chunks(9) {
            now += MINUTE;
            let want: Vec<_> = chunk
                .iter()
                .map(|e| s1.record_event(e, now, &p).unwrap())
                .collect();
            let got: Vec<_> = sn
                .record_events(chunk, now, &p)
                .into_iter()
                .map(|r| r.unwrap())
                .collect();
            assert_eq!(got, want);
        }
        assert_eq!(sn.event_count(), s1.event_count());
        let n = s1.incidents(&IncidentFilter::default()).unwrap().len() as u64;
        assert!(n >= 3, "{n} incidents");
        for i in 1..=n + 1 {
            assert_eq!(
                sn.incident(i).unwrap(),
                s1.incident(i).unwrap(),
                "incident {i}"
            );
        }
        assert_eq!(sn.incident_counts().unwrap(), s1.incident_counts().unwrap());
        assert_eq!(sn.outbox_len(), s1.outbox_len());
        // What a batch keeps decoded until its commit (heads, summaries, devices) is
        // written as one event at a time writes it.
        let all = IncidentFilter::default();
        assert_eq!(sn.incidents(&all).unwrap(), s1.incidents(&all).unwrap());
        assert_eq!(sn.devices().unwrap(), s1.devices().unwrap());
        drop((s1, sn));
        let (s1, sn) = (
            SledStore::open(one.path()).unwrap(),
            SledStore::open(many.path()).unwrap(),
        );
        assert_eq!(sn.incidents(&all).unwrap(), s1.incidents(&all).unwrap());
        assert_eq!(sn.devices().unwrap(), s1.devices().unwrap());
    }

    #[test]
    fn duplicate_seq_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
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
    fn a_reinstalled_agent_is_a_new_instance_not_a_stream_of_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let p = Policy::default();
        let d = id("a");
        // The first install reported, and went offline at boot 3.
        let old = report("a", 1, "ext 1");
        assert!(!s.record_event(&old, T0, &p).unwrap().duplicate);
        s.record_status(&status("a", false, 3), T0).unwrap();
        // Reinstalled: a new spool, so seq 1 and boot 1 again, later on the device's clock.
        let new = Event {
            instance: 2,
            ts: 50,
            body: EventBody::Report(UserReport {
                report_id: 1,
                summary: bounded("screen flickers"),
                ..match report("a", 1, "ext 2").body {
                    EventBody::Report(r) => r,
                    _ => unreachable!(),
                }
            }),
            ..report("a", 1, "ext 2")
        };
        let out = s.record_event(&new, T0 + 1, &p).unwrap();
        assert!(!out.duplicate, "a new instance's seq 1 is a new event");
        assert!(
            queued(&s).iter().any(|c| matches!(
                c,
                CmdBody::ReportAccepted {
                    report_id: 1,
                    incident: 2
                }
            )),
            "{:?}",
            out.cmds
        );
        assert_eq!(s.event_count(), 2);
        assert_eq!(s.event_seqs(&d, 1).unwrap(), vec![1]);
        assert_eq!(s.event_seqs(&d, 2).unwrap(), vec![1]);
        // Its boot 1 online is not stale next to the old instance's boot 3.
        let online = Status {
            instance: 2,
            ts: 60,
            ..status("a", true, 1)
        };
        assert_eq!(
            s.record_status(&online, T0 + 2).unwrap(),
            StatusOutcome::Applied { changed: true }
        );
        let rec = s.device(&d).unwrap().unwrap();
        assert!(rec.online());
        assert_eq!(rec.instance(), 2);
        // A late message of the old instance, older on the device's clock, changes nothing.
        let late = Status {
            ts: 4,
            ..status("a", false, 3)
        };
        assert_eq!(
            s.record_status(&late, T0 + 3).unwrap(),
            StatusOutcome::Stale
        );
    }

    #[test]
    fn report_missing_contact_asks_and_the_reply_resumes_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let p = Policy::default();
        let o = s.record_event(&report("a", 1, ""), T0, &p).unwrap();
        assert_eq!(
            o.decision.as_ref().unwrap().0.incident.state,
            State::NeedsInfo
        );
        assert!(queued(&s).iter().any(|c| matches!(
            c,
            CmdBody::ReportAccepted {
                report_id: 77,
                incident: 1
            }
        )));
        assert!(queued(&s)
            .iter()
            .any(|c| matches!(c, CmdBody::RequestInfo { incident: 1, .. })));
        assert!(o.cmds.is_empty(), "new commands go through the outbox");
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
        let s = SledStore::open(dir.path()).unwrap();
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
        let s = SledStore::open(dir.path()).unwrap();
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
            .export(
                &Period {
                    from: Some(T0 + MINUTE),
                    to: Some(T0 + 2 * MINUTE),
                },
                &Some,
            )
            .unwrap();
        assert_eq!(rows.iter().map(|r| r.incident).collect::<Vec<_>>(), vec![2]);
        assert_eq!(s.export(&Period::default(), &Some).unwrap().len(), 3);
        // The view decides what each reader gets: here, nothing but incident 3.
        let only3 = |i: Incident| (i.number == 3).then_some(i);
        assert_eq!(s.export(&Period::default(), &only3).unwrap().len(), 1);
    }

    #[test]
    fn status_respects_boot_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
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
            let ev = fault(DEVS[dev], seq, action, kind, subject);
            let EventBody::Fault(f) = ev.body else {
                unreachable!()
            };
            let fi = FaultInput {
                instance: ev.instance,
                seq,
                ts: ev.ts,
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
            let mut store = Some(SledStore::open(dir.path()).unwrap());
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
                        store = Some(SledStore::open(dir.path()).unwrap());
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
                            && f.device.as_ref().is_none_or(|d| i.device.as_ref() == Some(d))
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
