//! The durable spool: every event the agent produces is written here (and flushed) before
//! it is published, and leaves only when the collector's [`Ack`] names its `seq`.
//!
//! One sled tree holds the events, keyed `b'e'` + big-endian `seq` so iteration is in `seq`
//! order, and the counters (`next_seq`, `boot`, drop bookkeeping) under `b'm'` keys; every
//! change is one atomic batch followed by a flush, so a `kill -9` loses nothing that
//! [`Spool::push`] returned for. The same sled database is shared with the detectors
//! (`db().open_tree("baselines")`).
//!
//! The spool is bounded by `max_bytes` (key + value bytes, not sled's on-disk size, which
//! is larger and reclaimed lazily). When an event does not fit, the least severe, oldest
//! events go first (the new one included, if it is the least severe). Dropped events are
//! counted and announced with one [`EventBody::Dropped`] notice; while that notice waits
//! for its ack, further drops accumulate and a new notice follows its ack, so a flood
//! while offline leaves one notice in the spool, not thousands. The trade-off: the drop
//! policy keeps an index of `(rank, seq, size)` in memory, a few dozen bytes per event.
//!
//! A full disk (the likeliest moment being `/var` at 100 %) must not lose the event that
//! says so. The spool keeps a reserve file beside the database ([`RESERVE_BYTES`], written
//! out, not sparse); when a write fails for lack of space it deletes the reserve, so the
//! database gets room again once reopened. sled stays failed after any I/O error, so
//! after one the spool is [closed](Spool::close) and [reopened](Spool::attach) by its
//! owner. Meanwhile, and whenever a write fails, events wait in memory in seq order
//! (at most [`MAX_HELD_BYTES`], least severe and oldest dropped first, and counted like
//! any other drop) and are written on the next attempt; nothing is published before it
//! is written. The reserve is written again once the filesystem has room for it twice.
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use vigia_protocol::{
    encode, Ack, CodecError, DeviceId, Dropped, Event, EventBody, RejectReason, SeqRange, Severity,
    DROPPED_RANGES,
};

/// Why the spool failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// sled could not open, read, write or flush the database.
    #[error("spool database: {0}")]
    Db(#[from] sled::Error),
    /// An event could not be encoded (it is larger than the protocol allows).
    #[error("cannot encode event: {0}")]
    Encode(CodecError),
    /// Another process (or a handle not yet released in this one) holds the database.
    #[error("{0} is in use by another vigia-agent (sled allows one process per database)")]
    Locked(std::path::PathBuf),
    /// `max_bytes` is too small to hold even one event.
    #[error("spool max_bytes {0} is below the minimum of {MIN_MAX_BYTES}")]
    TooSmall(u64),
    /// The database failed a write and is closed until it is reopened; events wait in
    /// memory meanwhile.
    #[error("spool database closed after a failed write (disk full?); events wait in memory")]
    Closed,
}

/// Whether a sled error says the filesystem is full (or the quota spent).
pub fn is_disk_full(e: &sled::Error) -> bool {
    match e {
        sled::Error::Io(io) => {
            matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) || matches!(io.raw_os_error(), Some(28 | 122))
        }
        _ => false,
    }
}

/// Bytes of events kept in memory while the database cannot take them: a few dozen
/// events, enough for a pass's faults and a user's report while the disk is full.
pub const MAX_HELD_BYTES: u64 = 256 * 1024;

/// The reserve file beside the database: deleted when a write finds the disk full, so
/// the database has room for the events that say so. Four of sled's 512 KiB segments.
pub const RESERVE_BYTES: u64 = 2 * 1024 * 1024;

/// The reserve file of the database at `db_path` (`db` → `db.reserve`).
pub fn reserve_path(db_path: &Path) -> PathBuf {
    let mut name = db_path.file_name().unwrap_or_default().to_os_string();
    name.push(".reserve");
    db_path.with_file_name(name)
}

/// Writes the reserve file when it is missing and the filesystem has room for it twice
/// over (so it never takes the last free space). Returns whether it exists afterwards.
fn ensure_reserve(path: &Path) -> bool {
    use std::io::Write;
    if path.exists() {
        return true;
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let free = rustix::fs::statvfs(dir)
        .map(|st| st.f_bavail.saturating_mul(st.f_frsize))
        .unwrap_or(0);
    if free < 2 * RESERVE_BYTES {
        return false;
    }
    let tmp = path.with_extension("reserve.tmp");
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        // Real blocks, not a sparse file: a hole frees nothing when deleted.
        let chunk = [0u8; 64 * 1024];
        for _ in 0..RESERVE_BYTES / chunk.len() as u64 {
            f.write_all(&chunk)?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    match written {
        Ok(()) => true,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            tracing::debug!(error = %e, "spool: cannot write the reserve file yet");
            false
        }
    }
}

/// sled's page cache for the agent's database. sled's default is 1 GiB; the agent's
/// working set (the spool's tail, a few baselines) is tiny, and RSS is a budget here.
pub const CACHE_BYTES: u64 = 2 * 1024 * 1024;

/// Opens the agent's sled database at `path`, waiting up to `wait` for a previous owner
/// to release its lock: a process still exiting (a quick restart), or a dropped handle in
/// this process whose background flusher has not let go yet.
pub fn open_db(path: &Path, wait: std::time::Duration) -> Result<sled::Db, SpoolError> {
    let start = std::time::Instant::now();
    let mut cleaned = false;
    loop {
        match sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .open()
        {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e)) if is_lock_error(&e) => {
                if start.elapsed() >= wait {
                    return Err(SpoolError::Locked(path.to_path_buf()));
                }
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            Err(sled::Error::Corruption { .. })
                if !cleaned && remove_unfinished_snapshots(path) =>
            {
                cleaned = true;
            }
            Err(e) => return Err(SpoolError::Db(e)),
        }
    }
}

/// Removes the unfinished snapshots a full disk left behind (see [`vigia_protocol::disk`]);
/// whether any was.
fn remove_unfinished_snapshots(path: &Path) -> bool {
    let (removed, failed) = vigia_protocol::disk::remove_unfinished_snapshots(path);
    for f in &removed {
        tracing::warn!(file = %f.display(), "spool: removed an unfinished snapshot a full disk left behind");
    }
    for (f, e) in &failed {
        tracing::warn!(file = %f.display(), error = %e, "spool: cannot remove an unfinished snapshot");
    }
    !removed.is_empty()
}

/// Free space a reopen needs (see [`vigia_protocol::disk`]).
pub const REOPEN_FREE_BYTES: u64 = vigia_protocol::disk::REOPEN_FREE_BYTES;

/// Whether the filesystem holding the database at `path` has room for a reopen.
pub fn room_to_reopen(path: &Path) -> bool {
    vigia_protocol::disk::has_room(path, REOPEN_FREE_BYTES)
}

fn is_lock_error(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("acquire lock")
}

/// The smallest `max_bytes` accepted: room for a few small events and a drop notice.
pub const MIN_MAX_BYTES: u64 = 1024;

const EVENT_PREFIX: u8 = b'e';
const META_NEXT_SEQ: &[u8] = b"m:next_seq";
const META_BOOT: &[u8] = b"m:boot";
const META_INSTANCE: &[u8] = b"m:instance";
const META_DROPS_PENDING: &[u8] = b"m:drops_pending";
const META_DROPS_WORST: &[u8] = b"m:drops_worst";
const META_DROPS_SEQS: &[u8] = b"m:drops_seqs";
const META_NOTICE_SEQ: &[u8] = b"m:notice_seq";
const META_DROPPED_TOTAL: &[u8] = b"m:dropped_total";

/// Eviction rank: lower goes first. Faults rank by severity; user reports and replies
/// rank between major and critical (a person asked for help); the drop notice last.
const RANK_INFO: u8 = 0;
const RANK_REPORT: u8 = 4;
const RANK_CRITICAL: u8 = 5;
const RANK_NOTICE: u8 = 6;

/// The eviction rank of an event body (lower is dropped first).
pub fn rank(body: &EventBody) -> u8 {
    match body {
        EventBody::Fault(f) => severity_rank(f.severity),
        EventBody::Report(_) | EventBody::Reply(_) => RANK_REPORT,
        EventBody::Dropped(_) => RANK_NOTICE,
    }
}

fn severity_rank(s: Severity) -> u8 {
    match s {
        Severity::Info => RANK_INFO,
        Severity::Warning => 1,
        Severity::Minor => 2,
        Severity::Major => 3,
        Severity::Critical => RANK_CRITICAL,
    }
}

/// The severity a dropped event of this rank is reported as.
fn rank_severity(rank: u8) -> Severity {
    match rank {
        0 => Severity::Info,
        1 => Severity::Warning,
        2 => Severity::Minor,
        3 | RANK_REPORT => Severity::Major,
        _ => Severity::Critical,
    }
}

/// A random, non-zero 64-bit id. std's `RandomState` keys its hasher from the operating
/// system's random source, so hashing the time and the process id with a fresh one gives
/// an unpredictable value without a random-number crate.
fn new_instance_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish().max(1)
}

fn event_key(seq: u64) -> [u8; 9] {
    let mut k = [EVENT_PREFIX; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn key_seq(key: &[u8]) -> Option<u64> {
    let rest: [u8; 8] = key.get(1..9)?.try_into().ok()?;
    (key.len() == 9 && key[0] == EVENT_PREFIX).then(|| u64::from_be_bytes(rest))
}

fn u64_value(v: Option<sled::IVec>) -> Option<u64> {
    let bytes: [u8; 8] = v?.as_ref().try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// Seq ranges as stored: 16 bytes each, `from` and `to` big-endian.
fn ranges_bytes(seqs: &[SeqRange]) -> Vec<u8> {
    seqs.iter()
        .flat_map(|r| r.from.to_be_bytes().into_iter().chain(r.to.to_be_bytes()))
        .collect()
}

fn ranges_value(v: Option<sled::IVec>) -> heapless::Vec<SeqRange, DROPPED_RANGES> {
    let mut out = heapless::Vec::new();
    for chunk in v.as_deref().unwrap_or_default().chunks_exact(16) {
        let (from, to) = chunk.split_at(8);
        let (Ok(from), Ok(to)) = (from.try_into(), to.try_into()) else {
            break;
        };
        let r = SeqRange {
            from: u64::from_be_bytes(from),
            to: u64::from_be_bytes(to),
        };
        if out.push(r).is_err() {
            break;
        }
    }
    out
}

/// What one stored event costs against `max_bytes`: key, rank byte and payload.
fn entry_size(payload_len: usize) -> u64 {
    9 + 1 + payload_len as u64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    rank: u8,
    size: u64,
}

/// The result of [`Spool::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// The seq given to the event.
    pub seq: u64,
    /// Whether the event itself was stored (false when it was the least severe and the
    /// spool was full, or when it waits in memory).
    pub stored: bool,
    /// Whether the event waits in memory because the database could not take it (a
    /// full disk): it is written, in order, on the next attempt.
    pub held: bool,
    /// How many events this push evicted (the new one included when not stored).
    pub dropped: u64,
    /// The seq of a drop notice enqueued by this push, if any.
    pub notice: Option<u64>,
}

/// The open database and the spool's tree in it.
struct Store {
    db: sled::Db,
    tree: sled::Tree,
}

/// An event given its seq but not written yet.
struct Held {
    seq: u64,
    rank: u8,
    payload: Vec<u8>,
}

/// The durable, bounded event spool. See the module doc.
pub struct Spool {
    store: Option<Store>,
    /// The database directory, when the spool opened it (needed to reopen it).
    path: Option<PathBuf>,
    /// Events not written yet, oldest first.
    held: VecDeque<Held>,
    held_bytes: u64,
    /// Events dropped from memory, not yet counted in the database.
    held_drops: u64,
    held_worst: Option<Severity>,
    /// A write failed with an I/O error: sled stays failed, the database must be reopened.
    broken: bool,
    /// The failure was logged; quiet until a write succeeds again.
    told: bool,
    device: DeviceId,
    max_bytes: u64,
    index: BTreeMap<u64, Slot>,
    by_rank: BTreeSet<(u8, u64)>,
    bytes: u64,
    next_seq: u64,
    boot: u64,
    instance: u64,
    drops_pending: u64,
    drops_worst: Option<Severity>,
    /// The seqs of pending drops that had been written (see [`Dropped::seqs`]).
    drops_seqs: heapless::Vec<SeqRange, DROPPED_RANGES>,
    notice_seq: Option<u64>,
    dropped_total: u64,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("device", &self.device)
            .field("events", &self.index.len())
            .field("bytes", &self.bytes)
            .field("max_bytes", &self.max_bytes)
            .field("next_seq", &self.next_seq)
            .field("boot", &self.boot)
            .field("held", &self.held.len())
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl Spool {
    /// Opens (or creates) the spool database in directory `path`, waiting up to 2 s for
    /// a previous owner to let go of it, and writes its reserve file when there is room.
    pub fn open(path: &Path, device: DeviceId, max_bytes: u64) -> Result<Self, SpoolError> {
        let db = open_db(path, std::time::Duration::from_secs(2))?;
        let mut spool = Self::with_db(db, device, max_bytes)?;
        spool.path = Some(path.to_path_buf());
        ensure_reserve(&reserve_path(path));
        Ok(spool)
    }

    /// Uses an already open sled database (the spool lives in its `spool` tree). Such a
    /// spool cannot reopen its database itself: [`Spool::open`] is what the agent uses.
    pub fn with_db(db: sled::Db, device: DeviceId, max_bytes: u64) -> Result<Self, SpoolError> {
        if max_bytes < MIN_MAX_BYTES {
            return Err(SpoolError::TooSmall(max_bytes));
        }
        let tree = db.open_tree("spool")?;
        let mut spool = Self {
            store: Some(Store { db, tree }),
            path: None,
            held: VecDeque::new(),
            held_bytes: 0,
            held_drops: 0,
            held_worst: None,
            broken: false,
            told: false,
            device,
            max_bytes,
            index: BTreeMap::new(),
            by_rank: BTreeSet::new(),
            bytes: 0,
            next_seq: 1,
            boot: 0,
            instance: 0,
            drops_pending: 0,
            drops_worst: None,
            drops_seqs: heapless::Vec::new(),
            notice_seq: None,
            dropped_total: 0,
        };
        spool.reload()?;
        if spool.instance == 0 {
            // A new spool is a new agent instance (a reinstall included): its seqs and
            // boots start again at 1, and the id tells the collector they are new.
            let instance = new_instance_id();
            let tree = spool.tree()?;
            tree.insert(META_INSTANCE, &instance.to_be_bytes())?;
            tree.flush()?;
            spool.instance = instance;
        }
        Ok(spool)
    }

    fn store(&self) -> Result<&Store, SpoolError> {
        self.store.as_ref().ok_or(SpoolError::Closed)
    }

    fn tree(&self) -> Result<&sled::Tree, SpoolError> {
        Ok(&self.store()?.tree)
    }

    /// Rebuilds the in-memory state from the database (at open, and after a failed write
    /// so memory never disagrees with disk). What only memory knows is kept: seqs already
    /// given to events held in memory, and a session counter not yet written.
    fn reload(&mut self) -> Result<(), SpoolError> {
        let (mem_next, mem_boot) = (self.next_seq, self.boot);
        let result = self.reload_from_disk();
        self.next_seq = self.next_seq.max(mem_next);
        self.boot = self.boot.max(mem_boot);
        result
    }

    fn reload_from_disk(&mut self) -> Result<(), SpoolError> {
        let tree = self.tree()?.clone();
        self.index.clear();
        self.by_rank.clear();
        self.bytes = 0;
        for item in tree.scan_prefix([EVENT_PREFIX]) {
            let (k, v) = item?;
            let (Some(seq), Some(&rank)) = (key_seq(&k), v.first()) else {
                tracing::warn!(key = ?k, "spool: skipping an entry with a malformed key");
                continue;
            };
            let size = entry_size(v.len() - 1);
            self.index.insert(seq, Slot { rank, size });
            self.by_rank.insert((rank, seq));
            self.bytes += size;
        }
        let last = self.index.keys().next_back().copied().unwrap_or(0);
        self.next_seq = u64_value(tree.get(META_NEXT_SEQ)?)
            .unwrap_or(1)
            .max(last + 1);
        self.boot = u64_value(tree.get(META_BOOT)?).unwrap_or(0);
        self.instance = u64_value(tree.get(META_INSTANCE)?).unwrap_or(0);
        self.drops_pending = u64_value(tree.get(META_DROPS_PENDING)?).unwrap_or(0);
        self.drops_worst = u64_value(tree.get(META_DROPS_WORST)?)
            .and_then(|r| u8::try_from(r).ok())
            .map(rank_severity);
        self.drops_seqs = ranges_value(tree.get(META_DROPS_SEQS)?);
        self.notice_seq =
            u64_value(tree.get(META_NOTICE_SEQ)?).filter(|s| self.index.contains_key(s));
        self.dropped_total = u64_value(tree.get(META_DROPPED_TOTAL)?).unwrap_or(0);
        Ok(())
    }

    /// Whether a write failed with an I/O error, or the database is closed: it must be
    /// [closed](Spool::close) and [reopened](Spool::attach) before it takes anything
    /// again (sled stays failed after an I/O error).
    pub fn needs_reopen(&self) -> bool {
        self.broken || self.store.is_none()
    }

    /// Events waiting in memory for the database.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The database directory, when this spool opened it.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Lets go of the database so it can be reopened, returning the handle for the
    /// caller to drop (with every tree it opened from it) before [`open_db`]. Until
    /// [`Spool::attach`], events wait in memory and reads say [`SpoolError::Closed`].
    pub fn close(&mut self) -> Option<sled::Db> {
        self.store.take().map(|s| s.db)
    }

    /// Takes the reopened database: reloads from it, keeping what only memory knows, and
    /// writes the events held in memory. An error leaves the spool closed.
    /// `ts` stamps a drop notice this may enqueue.
    pub fn attach(&mut self, db: sled::Db, ts: u64) -> Result<(), SpoolError> {
        let tree = db.open_tree("spool")?;
        self.store = Some(Store { db, tree });
        self.broken = false;
        if let Err(e) = self.reload() {
            self.store = None;
            return Err(e);
        }
        tracing::debug!(held = self.held.len(), "spool database reopened");
        self.write_held(ts);
        if self.broken {
            return Err(SpoolError::Closed);
        }
        Ok(())
    }

    /// Writes what waits in memory, if the database takes it now. Returns whether
    /// nothing waits any more. `ts` stamps a drop notice this may enqueue.
    pub fn retry(&mut self, ts: u64) -> bool {
        if !self.needs_reopen() {
            self.write_held(ts);
        }
        self.held.is_empty() && !self.needs_reopen()
    }

    /// This spool's agent instance id: random, created with the spool, never 0.
    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// The sled database, for other trees (the detectors' baselines, the local socket's
    /// reports); [`SpoolError::Closed`] while it is being reopened. Callers open their
    /// trees from it when they need them, so a reopen is not held up by old handles.
    pub fn db(&self) -> Result<&sled::Db, SpoolError> {
        Ok(&self.store()?.db)
    }

    /// The device whose events these are.
    pub fn device(&self) -> &DeviceId {
        &self.device
    }

    /// The current session counter (0 before the first session).
    pub fn boot(&self) -> u64 {
        self.boot
    }

    /// Raises the session counter and returns the new value. It is written at once when
    /// the database takes it, else with the next write that succeeds: a full disk must
    /// not keep the link from connecting.
    pub fn raise_boot(&mut self) -> u64 {
        self.boot += 1;
        let boot = self.boot;
        let written = self.store().and_then(|s| {
            s.tree.insert(META_BOOT, &boot.to_be_bytes())?;
            s.db.flush()?;
            Ok(())
        });
        if let Err(e) = written {
            tracing::warn!(boot, error = %e, "spool: cannot write the session counter yet");
            self.failed(&e);
        }
        boot
    }

    /// The seq the next pushed event will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Events in the database waiting for an ack (not those held in memory).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether nothing waits for an ack.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Bytes held, as counted against `max_bytes`.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The bound.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Events dropped since the spool was created.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    /// Drops not yet announced by a notice.
    pub fn drops_pending(&self) -> u64 {
        self.drops_pending
    }

    /// The seqs waiting for an ack, in order.
    pub fn seqs(&self) -> impl Iterator<Item = u64> + '_ {
        self.index.keys().copied()
    }

    /// The first event waiting for an ack with `seq >= from`: its seq and encoded bytes.
    pub fn next_from(&self, from: u64) -> Result<Option<(u64, Vec<u8>)>, SpoolError> {
        let Some((&seq, _)) = self.index.range(from..).next() else {
            return Ok(None);
        };
        match self.tree()?.get(event_key(seq))? {
            Some(v) => Ok(Some((seq, v.get(1..).unwrap_or_default().to_vec()))),
            None => Ok(None),
        }
    }

    /// Gives `body` the next seq, stores it (making room by the drop policy), flushes,
    /// and returns what happened. Only after this returns with the event stored may it be
    /// published. When the database cannot take it, the event waits in memory
    /// ([`Pushed::held`]) and is written, in seq order, by a later push, [`Spool::retry`]
    /// or [`Spool::attach`]. The only error is an event that cannot be encoded.
    pub fn push(&mut self, ts: u64, body: EventBody) -> Result<Pushed, SpoolError> {
        let seq = self.next_seq;
        let rank = rank(&body);
        let payload = self.encode(seq, ts, body)?;
        self.next_seq += 1;
        let held_before = self.held_drops;
        self.hold(Held { seq, rank, payload });
        let (stored, mut dropped, notice) = self.write_held(ts);
        let held = self.held.iter().any(|h| h.seq == seq);
        dropped += self.held_drops.saturating_sub(held_before);
        Ok(Pushed {
            seq,
            stored: stored.contains(&seq),
            held,
            dropped,
            notice,
        })
    }

    /// Queues an event in memory, dropping the least severe, oldest held events (the new
    /// one included) past [`MAX_HELD_BYTES`].
    fn hold(&mut self, h: Held) {
        self.held_bytes += entry_size(h.payload.len());
        self.held.push_back(h);
        while self.held_bytes > MAX_HELD_BYTES && self.held.len() > 1 {
            let Some(i) = self
                .held
                .iter()
                .enumerate()
                .min_by_key(|(i, h)| (h.rank, *i))
                .map(|(i, _)| i)
            else {
                break;
            };
            if let Some(gone) = self.held.remove(i) {
                self.held_bytes -= entry_size(gone.payload.len());
                self.held_drops += 1;
                let sev = rank_severity(gone.rank);
                self.held_worst = Some(self.held_worst.map_or(sev, |w| w.max(sev)));
                tracing::warn!(seq = gone.seq, "spool: memory queue full, dropped an event");
            }
        }
    }

    /// Writes held events in order until one fails. Returns the seqs stored, the events
    /// evicted to make room, and the drop notice enqueued (only once nothing is held, so
    /// the notice never takes a seq before an older event's).
    fn write_held(&mut self, ts: u64) -> (Vec<u64>, u64, Option<u64>) {
        let mut stored = Vec::new();
        let (mut dropped, mut notice) = (0, None);
        while let Some(front) = self.held.front() {
            if self.needs_reopen() {
                return (stored, dropped, notice);
            }
            let last = self.held.len() == 1;
            let (seq, rank) = (front.seq, front.rank);
            let payload = std::mem::take(&mut self.held[0].payload);
            match self.write_one(ts, seq, rank, &payload, last) {
                Ok(w) => {
                    self.held.pop_front();
                    self.held_bytes -= entry_size(payload.len());
                    if w.stored {
                        stored.push(seq);
                    }
                    dropped += w.dropped;
                    notice = notice.or(w.notice);
                }
                Err(e) => {
                    self.held[0].payload = payload;
                    // Memory may be ahead of disk; disk is the truth (what only memory
                    // knows is kept).
                    if let Err(r) = self.reload() {
                        tracing::debug!(error = %r, "spool: reload after a failed write failed");
                    }
                    self.failed(&e);
                    return (stored, dropped, notice);
                }
            }
        }
        if self.held_drops > 0 && self.store.is_some() && !self.broken {
            // Drops from memory with nothing left to write: the notice says so.
            if let Ok(w) = self.write_notice(ts) {
                notice = notice.or(w);
            }
        }
        (stored, dropped, notice)
    }

    /// Counts the drops from memory as drops, in memory only (undone by a reload).
    fn fold_held_drops(&mut self) {
        if self.held_drops > 0 {
            self.drops_pending += self.held_drops;
            self.dropped_total += self.held_drops;
            if let Some(w) = self.held_worst {
                self.drops_worst = Some(self.drops_worst.map_or(w, |d| d.max(w)));
            }
        }
    }

    fn write_notice(&mut self, ts: u64) -> Result<Option<u64>, SpoolError> {
        let mut batch = sled::Batch::default();
        self.fold_held_drops();
        let r = self
            .maybe_notice(&mut batch, ts)
            .and_then(|n| self.commit(batch).map(|()| n.0));
        match r {
            Ok(n) => {
                self.held_drops = 0;
                self.held_worst = None;
                Ok(n)
            }
            Err(e) => {
                let _ = self.reload();
                self.failed(&e);
                Err(e)
            }
        }
    }

    /// Another user of the database (the detectors' baselines) saw `e`: the spool's
    /// writes fail too from now on, so it is treated as its own failed write.
    pub fn write_failed(&mut self, e: &sled::Error) {
        self.failed(&SpoolError::Db(e.clone()));
    }

    /// A write failed: with an I/O error sled stays failed, so the database must be
    /// reopened; with a full disk the reserve makes room for that.
    fn failed(&mut self, e: &SpoolError) {
        let SpoolError::Db(db) = e else {
            return;
        };
        if matches!(db, sled::Error::Io(_)) {
            if !self.told {
                tracing::error!(error = %db, held = self.held.len(), "spool: cannot write to the data directory; events wait in memory until it can");
                self.told = true;
            }
            self.broken = true;
        }
        if is_disk_full(db) {
            if let Some(path) = &self.path {
                let reserve = reserve_path(path);
                match std::fs::remove_file(&reserve) {
                    Ok(()) => {
                        tracing::warn!(reserve = %reserve.display(), "disk full: released the spool's reserve")
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => tracing::warn!(error = %e, "cannot release the spool's reserve"),
                }
            }
        }
    }

    fn write_one(
        &mut self,
        ts: u64,
        seq: u64,
        rank: u8,
        payload: &[u8],
        notice_allowed: bool,
    ) -> Result<Written, SpoolError> {
        let mut batch = sled::Batch::default();
        self.fold_held_drops();
        let size = entry_size(payload.len());
        let mut dropped = 0;
        let mut stored = false;
        loop {
            if self.bytes + size <= self.max_bytes {
                self.insert(&mut batch, seq, rank, payload);
                stored = true;
                break;
            }
            // The new event is the newest, so among equal ranks the old ones go first.
            match self.by_rank.first().copied() {
                Some((r, victim)) if r <= rank && r < RANK_NOTICE => {
                    self.evict(&mut batch, victim);
                    dropped += 1;
                }
                _ => {
                    self.count_drop(rank);
                    dropped += 1;
                    break;
                }
            }
        }
        let notice = if notice_allowed {
            self.maybe_notice(&mut batch, ts)?
        } else {
            (None, 0)
        };
        dropped += notice.1;
        self.commit(batch)?;
        self.held_drops = 0;
        self.held_worst = None;
        if std::mem::take(&mut self.told) {
            tracing::info!(seq, "spool: the data directory takes events again");
        }
        if dropped > 0 {
            tracing::warn!(
                seq,
                dropped,
                spool_bytes = self.bytes,
                "spool full: dropped the least severe, oldest events"
            );
        }
        if let Some(path) = &self.path {
            // Space came back after the reserve was spent: put it back.
            let reserve = reserve_path(path);
            if !reserve.exists() {
                ensure_reserve(&reserve);
            }
        }
        Ok(Written {
            stored,
            dropped,
            notice: notice.0,
        })
    }

    /// Removes every event the ack covers (stored or rejected). Returns how many left.
    /// If the drop notice was among them and more drops happened since, a new notice is
    /// enqueued (with timestamp `ts`).
    pub fn ack(&mut self, ack: &Ack, ts: u64) -> Result<usize, SpoolError> {
        if self.needs_reopen() {
            // Acked events are published again after the reopen and acked again.
            return Err(SpoolError::Closed);
        }
        let result = self.ack_inner(ack, ts);
        if let Err(e) = &result {
            if let Err(r) = self.reload() {
                tracing::debug!(error = %r, "spool: reload after a failed write failed");
            }
            self.failed(e);
        }
        result
    }

    fn ack_inner(&mut self, ack: &Ack, ts: u64) -> Result<usize, SpoolError> {
        // An ack for another instance (this device's agent before a reinstall) names seqs
        // of events this spool never had; 0 is a collector from before instances.
        if ack.instance != 0 && ack.instance != self.instance {
            return Ok(0);
        }
        let mut covered: Vec<u64> = Vec::new();
        for r in &ack.stored {
            if r.from <= r.to {
                covered.extend(self.index.range(r.from..=r.to).map(|(s, _)| *s));
            }
        }
        covered.extend(
            ack.rejected
                .iter()
                // A collector older than this agent refuses its newer protocol version:
                // that is "not yet", so the event waits here for the upgraded collector.
                .filter(|r| r.reason != RejectReason::BadVersion)
                .map(|r| r.seq)
                .filter(|s| self.index.contains_key(s)),
        );
        covered.sort_unstable();
        covered.dedup();
        if covered.is_empty() {
            return Ok(0);
        }
        let mut batch = sled::Batch::default();
        for &seq in &covered {
            self.remove(&mut batch, seq);
        }
        if self.held.is_empty() {
            self.maybe_notice(&mut batch, ts)?;
        }
        self.commit(batch)?;
        Ok(covered.len())
    }

    fn encode(&self, seq: u64, ts: u64, body: EventBody) -> Result<Vec<u8>, SpoolError> {
        let event = Event {
            v: vigia_protocol::VERSION,
            device: self.device.clone(),
            instance: self.instance,
            seq,
            boot: self.boot,
            ts,
            body,
        };
        encode(&event).map_err(SpoolError::Encode)
    }

    fn insert(&mut self, batch: &mut sled::Batch, seq: u64, rank: u8, payload: &[u8]) {
        let mut value = Vec::with_capacity(payload.len() + 1);
        value.push(rank);
        value.extend_from_slice(payload);
        batch.insert(&event_key(seq), value);
        let size = entry_size(payload.len());
        self.index.insert(seq, Slot { rank, size });
        self.by_rank.insert((rank, seq));
        self.bytes += size;
    }

    fn remove(&mut self, batch: &mut sled::Batch, seq: u64) {
        if let Some(slot) = self.index.remove(&seq) {
            self.by_rank.remove(&(slot.rank, seq));
            self.bytes -= slot.size;
            batch.remove(&event_key(seq));
            if self.notice_seq == Some(seq) {
                self.notice_seq = None;
            }
        }
    }

    fn evict(&mut self, batch: &mut sled::Batch, seq: u64) {
        if let Some(slot) = self.index.get(&seq).copied() {
            self.remove(batch, seq);
            self.count_drop(slot.rank);
            // It was written, so it may have been published and stored: list it, and the
            // collector counts it as lost only if it does not have it.
            Dropped::list(&mut self.drops_seqs, seq);
        }
    }

    fn count_drop(&mut self, rank: u8) {
        self.drops_pending += 1;
        self.dropped_total += 1;
        let sev = rank_severity(rank);
        self.drops_worst = Some(self.drops_worst.map_or(sev, |w| w.max(sev)));
    }

    /// Enqueues a drop notice when drops are pending and none waits for its ack.
    /// Returns the notice's seq and how many more events were evicted to fit it.
    fn maybe_notice(
        &mut self,
        batch: &mut sled::Batch,
        ts: u64,
    ) -> Result<(Option<u64>, u64), SpoolError> {
        if self.drops_pending == 0 || self.notice_seq.is_some() {
            return Ok((None, 0));
        }
        let mut evicted = 0;
        loop {
            let body = EventBody::Dropped(Dropped {
                count: self.drops_pending,
                worst: self.drops_worst.unwrap_or(Severity::Info),
                seqs: self.drops_seqs.clone(),
            });
            let seq = self.next_seq;
            let payload = self.encode(seq, ts, body)?;
            let size = entry_size(payload.len());
            if self.bytes + size <= self.max_bytes {
                self.next_seq += 1;
                self.insert(batch, seq, RANK_NOTICE, &payload);
                self.notice_seq = Some(seq);
                self.drops_pending = 0;
                self.drops_worst = None;
                self.drops_seqs.clear();
                return Ok((Some(seq), evicted));
            }
            // A notice never costs an event more severe than those it announces: it
            // would trade a critical fault for the news that a warning was lost.
            let announces = severity_rank(self.drops_worst.unwrap_or(Severity::Info));
            match self.by_rank.first().copied() {
                Some((r, victim)) if r < RANK_NOTICE && r <= announces => {
                    self.evict(batch, victim);
                    evicted += 1;
                }
                // Nothing left to evict: the count stays pending for a later notice.
                _ => return Ok((None, evicted)),
            }
        }
    }

    fn commit(&mut self, mut batch: sled::Batch) -> Result<(), SpoolError> {
        batch.insert(META_NEXT_SEQ, &self.next_seq.to_be_bytes());
        batch.insert(META_DROPS_PENDING, &self.drops_pending.to_be_bytes());
        let worst = self
            .drops_worst
            .map_or(u64::MAX, |s| u64::from(severity_rank(s)));
        batch.insert(META_DROPS_WORST, &worst.to_be_bytes());
        batch.insert(META_DROPS_SEQS, ranges_bytes(&self.drops_seqs));
        batch.insert(META_NOTICE_SEQ, &self.notice_seq.unwrap_or(0).to_be_bytes());
        batch.insert(META_DROPPED_TOTAL, &self.dropped_total.to_be_bytes());
        // A session counter raised while the disk was full is written with this batch.
        batch.insert(META_BOOT, &self.boot.to_be_bytes());
        let store = self.store()?;
        store.tree.apply_batch(batch)?;
        store.db.flush()?;
        Ok(())
    }

    /// Makes the next writes fail as an I/O error would (tests of the held queue).
    #[cfg(test)]
    fn break_for_test(&mut self) {
        self.broken = true;
    }
}

/// What writing one event did.
struct Written {
    stored: bool,
    dropped: u64,
    notice: Option<u64>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use vigia_protocol::{
        bounded, decode, Evidence, FaultAction, FaultEvent, FaultKind, RejectReason, Rejection,
        SeqRange,
    };

    fn dev() -> DeviceId {
        DeviceId::new("ws-1").unwrap()
    }

    fn fault(sev: Severity, pad: usize) -> EventBody {
        EventBody::Fault(FaultEvent {
            action: FaultAction::Raised,
            kind: FaultKind::DiskSpace,
            subject: bounded("/var"),
            severity: sev,
            evidence: Evidence {
                value: 91.0,
                threshold: 90.0,
                unit: bounded("%"),
                source: bounded("statvfs(/var)"),
            },
            message: bounded(&"x".repeat(pad)),
        })
    }

    fn ack(stored: &[(u64, u64)], rejected: &[u64]) -> Ack {
        let mut a = Ack {
            v: 1,
            device: dev(),
            instance: 0,
            stored: heapless::Vec::new(),
            rejected: heapless::Vec::new(),
        };
        for &(from, to) in stored {
            a.stored.push(SeqRange { from, to }).unwrap();
        }
        for &seq in rejected {
            a.rejected
                .push(Rejection {
                    seq,
                    reason: RejectReason::Malformed,
                })
                .unwrap();
        }
        a
    }

    fn all(spool: &Spool) -> Vec<Event> {
        let mut out = Vec::new();
        let mut from = 0;
        while let Some((seq, bytes)) = spool.next_from(from).unwrap() {
            out.push(decode::<Event>(&bytes).unwrap());
            from = seq + 1;
        }
        out
    }

    #[test]
    fn push_assigns_increasing_seqs_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(&dir.path().join("db"), dev(), 1 << 20).unwrap();
            assert_eq!(s.raise_boot(), 1);
            assert_eq!(s.push(10, fault(Severity::Warning, 0)).unwrap().seq, 1);
            assert_eq!(s.push(11, fault(Severity::Critical, 0)).unwrap().seq, 2);
        }
        let mut s = Spool::open(&dir.path().join("db"), dev(), 1 << 20).unwrap();
        assert_eq!(s.boot(), 1);
        let events = all(&s);
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(events[0].boot, 1);
        assert_eq!(events[1].ts, 11);
        assert_eq!(s.push(12, fault(Severity::Info, 0)).unwrap().seq, 3);
    }

    #[test]
    fn seqs_are_never_reused_after_everything_is_acked() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(&dir.path().join("db"), dev(), 1 << 20).unwrap();
            s.push(1, fault(Severity::Minor, 0)).unwrap();
            s.push(1, fault(Severity::Minor, 0)).unwrap();
            assert_eq!(s.ack(&ack(&[(1, 2)], &[]), 2).unwrap(), 2);
            assert!(s.is_empty());
        }
        let mut s = Spool::open(&dir.path().join("db"), dev(), 1 << 20).unwrap();
        assert_eq!(s.push(3, fault(Severity::Minor, 0)).unwrap().seq, 3);
    }

    #[test]
    fn ack_removes_exactly_the_covered_seqs() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(&dir.path().join("db"), dev(), 1 << 20).unwrap();
        for _ in 0..6 {
            s.push(1, fault(Severity::Warning, 0)).unwrap();
        }
        // 2..=3 stored, 5 rejected, 9 unknown: 1, 4 and 6 stay.
        assert_eq!(s.ack(&ack(&[(2, 3), (9, 9)], &[5]), 2).unwrap(), 3);
        assert_eq!(s.seqs().collect::<Vec<_>>(), [1, 4, 6]);
        // An ack for nothing we hold changes nothing.
        assert_eq!(s.ack(&ack(&[(2, 3)], &[]), 3).unwrap(), 0);
        // An inverted range is ignored rather than trusted.
        assert_eq!(s.ack(&ack(&[(6, 1)], &[]), 3).unwrap(), 0);
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn a_spool_is_one_instance_for_life_and_ignores_acks_of_another() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(&dir.path().join("db"), dev(), 1 << 20).unwrap();
        let me = s.instance();
        assert_ne!(me, 0);
        s.push(1, fault(Severity::Warning, 0)).unwrap();
        s.push(1, fault(Severity::Warning, 0)).unwrap();
        assert_eq!(all(&s)[0].instance, me);
        // The agent before a reinstall had other events under the same seqs.
        let other = Ack {
            instance: me.wrapping_add(1).max(1),
            ..ack(&[(1, 2)], &[])
        };
        assert_eq!(s.ack(&other, 2).unwrap(), 0);
        assert_eq!(s.len(), 2);
        let mine = Ack {
            instance: me,
            ..ack(&[(1, 1)], &[])
        };
        assert_eq!(s.ack(&mine, 2).unwrap(), 1);
        drop(s);
        let s = Spool::open(&dir.path().join("db"), dev(), 1 << 20).unwrap();
        assert_eq!(s.instance(), me, "the instance survives a restart");
        // A new spool (a reinstall) is a new instance.
        let fresh = tempfile::tempdir().unwrap();
        let t = Spool::open(&fresh.path().join("db"), dev(), 1 << 20).unwrap();
        assert_ne!(t.instance(), me);
    }

    #[test]
    fn an_event_refused_for_its_version_waits_for_an_upgraded_collector() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(&dir.path().join("db"), dev(), 1 << 20).unwrap();
        s.push(1, fault(Severity::Warning, 0)).unwrap();
        s.push(1, fault(Severity::Warning, 0)).unwrap();
        let mut a = ack(&[], &[1]);
        a.rejected
            .push(Rejection {
                seq: 2,
                reason: RejectReason::BadVersion,
            })
            .unwrap();
        assert_eq!(s.ack(&a, 2).unwrap(), 1);
        assert_eq!(s.seqs().collect::<Vec<_>>(), [2]);
    }

    /// The spool size of one 300-byte fault event, with the longest instance id (so a
    /// spool sized from it holds at least as many real events).
    fn largest_entry(severity: Severity) -> u64 {
        entry_of(severity, u64::MAX)
    }

    /// The size of one `severity` entry of an agent whose instance is `instance` (its
    /// digits count: a spool's instance is random).
    fn entry_of(severity: Severity, instance: u64) -> u64 {
        let e = Event {
            v: 1,
            device: dev(),
            instance,
            seq: 1,
            boot: 0,
            ts: 1,
            body: fault(severity, 300),
        };
        entry_size(encode(&e).unwrap().len())
    }

    #[test]
    fn a_drop_notice_never_evicts_an_event_more_severe_than_it_announces() {
        let dir = tempfile::tempdir().unwrap();
        // Room for three critical events and no more (measured with the longest instance).
        let one = largest_entry(Severity::Critical);
        let mut s = Spool::open(&dir.path().join("db"), dev(), one * 3 + 10).unwrap();
        let criticals: Vec<u64> = (0..3)
            .map(|_| s.push(1, fault(Severity::Critical, 300)).unwrap().seq)
            .collect();
        assert_eq!(s.seqs().collect::<Vec<_>>(), criticals);
        // A warning finds no room and is dropped; the notice saying so would need the room
        // of a critical event, and must not take it.
        let p = s.push(2, fault(Severity::Warning, 300)).unwrap();
        assert!(!p.stored);
        assert_eq!(s.seqs().collect::<Vec<_>>(), criticals);
        assert_eq!(s.drops_pending(), 1);
        // Room again (one acked): the notice goes in, announcing a warning.
        s.ack(&ack(&[(criticals[0], criticals[0])], &[]), 3)
            .unwrap();
        assert_eq!(s.drops_pending(), 0);
        assert!(all(&s).iter().any(|e| matches!(
            &e.body,
            EventBody::Dropped(Dropped {
                count: 1,
                worst: Severity::Warning,
                seqs,
            }) if seqs.is_empty()
        )));
    }

    #[test]
    fn overflow_drops_least_severe_oldest_first_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        // Measure one event to size the spool for exactly four of them plus a notice.
        let one = largest_entry(Severity::Info);
        let max = one * 4 + 200;
        let mut s = Spool::open(&dir.path().join("db"), dev(), max).unwrap();
        let critical = s.push(1, fault(Severity::Critical, 300)).unwrap().seq; // 1
        let warn_old = s.push(2, fault(Severity::Warning, 300)).unwrap().seq; // 2
        let minor = s.push(3, fault(Severity::Minor, 300)).unwrap().seq; // 3
        let warn_new = s.push(4, fault(Severity::Warning, 300)).unwrap().seq; // 4
        assert_eq!(s.len(), 4);
        // A fifth event does not fit: the oldest warning goes, and a notice says so.
        let p = s.push(5, fault(Severity::Major, 300)).unwrap();
        assert!(p.stored);
        assert!(p.dropped >= 1);
        let seqs: Vec<u64> = s.seqs().collect();
        assert!(!seqs.contains(&warn_old), "{seqs:?}");
        assert!(seqs.contains(&critical) && seqs.contains(&p.seq));
        let notice = p.notice.unwrap();
        let events = all(&s);
        let dropped: Vec<&Dropped> = events
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::Dropped(d) => Some(d),
                _ => None,
            })
            .collect();
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].count, p.dropped);
        assert_eq!(dropped[0].worst, Severity::Warning);
        // Every event it evicted had been written, so each is listed for the collector to
        // check against what it stored.
        assert_eq!(dropped[0].listed(), p.dropped);
        assert!(dropped[0]
            .seqs
            .iter()
            .any(|r| r.from <= warn_old && warn_old <= r.to));
        assert!(s.bytes() <= max);
        // Fitting the notice cost one more: the other warning went before the minor.
        if p.dropped == 2 {
            assert!(!seqs.contains(&warn_new));
            assert!(seqs.contains(&minor));
        }
        assert_eq!(s.dropped_total(), p.dropped);

        // An info event is now the least severe of all: it is the one dropped, and the
        // count waits for the notice's ack instead of piling up notices.
        let before: Vec<u64> = s.seqs().collect();
        let p2 = s.push(6, fault(Severity::Info, 300)).unwrap();
        assert!(!p2.stored);
        assert_eq!(p2.notice, None);
        assert_eq!(s.seqs().collect::<Vec<_>>(), before);
        assert_eq!(s.drops_pending(), 1);

        // Acking the notice brings a new notice with the pending count.
        s.ack(&ack(&[(notice, notice)], &[]), 7).unwrap();
        let events = all(&s);
        let last = events.last().unwrap();
        assert_eq!(
            last.body,
            EventBody::Dropped(Dropped {
                count: 1,
                worst: Severity::Info,
                // The info event was refused, never written: counted, not listed.
                seqs: heapless::Vec::new(),
            })
        );
        assert_eq!(s.drops_pending(), 0);
    }

    #[test]
    fn drop_bookkeeping_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let max = 2048;
        let notice;
        let listed;
        {
            let mut s = Spool::open(&dir.path().join("db"), dev(), max).unwrap();
            let mut last = None;
            for i in 0..10 {
                let p = s.push(i, fault(Severity::Warning, 300)).unwrap();
                last = p.notice.or(last);
            }
            notice = last.unwrap();
            assert!(s.drops_pending() > 0);
            listed = s.drops_seqs.clone();
            assert!(!listed.is_empty());
        }
        let mut s = Spool::open(&dir.path().join("db"), dev(), max).unwrap();
        let pending = s.drops_pending();
        assert!(pending > 0);
        assert_eq!(s.drops_seqs, listed);
        let total = s.dropped_total();
        s.ack(&ack(&[(notice, notice)], &[]), 99).unwrap();
        let events = all(&s);
        assert!(matches!(
            events.last().map(|e| &e.body),
            Some(EventBody::Dropped(Dropped { count, seqs, .. })) if *count == pending && *seqs == listed
        ));
        assert_eq!(s.dropped_total(), total);
    }

    /// What a reopen after a failed write does: let go of the database, open it again.
    fn reopen(s: &mut Spool, path: &Path) {
        drop(s.close());
        let db = open_db(path, std::time::Duration::from_secs(5)).unwrap();
        s.attach(db, 50).unwrap();
    }

    #[test]
    fn events_the_database_cannot_take_wait_in_memory_and_are_written_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(&dir.path().join("db"), dev(), 1 << 20).unwrap();
        assert!(
            reserve_path(&dir.path().join("db")).exists(),
            "a reserve beside the database"
        );
        assert_eq!(
            std::fs::metadata(reserve_path(&dir.path().join("db")))
                .unwrap()
                .len(),
            RESERVE_BYTES
        );
        let first = s.push(1, fault(Severity::Warning, 0)).unwrap();
        assert!(first.stored && !first.held);
        s.break_for_test();
        assert!(s.needs_reopen());
        let held: Vec<Pushed> = [Severity::Critical, Severity::Info, Severity::Major]
            .into_iter()
            .map(|sev| s.push(2, fault(sev, 0)).unwrap())
            .collect();
        assert!(held.iter().all(|p| p.held && !p.stored));
        assert_eq!(held.iter().map(|p| p.seq).collect::<Vec<_>>(), [2, 3, 4]);
        // Not written, so not publishable: the link sees only the first.
        assert_eq!(s.seqs().collect::<Vec<_>>(), [1]);
        assert_eq!(s.next_from(2).unwrap(), None);
        assert_eq!(s.held(), 3);
        // A session counter raised meanwhile is kept and written later.
        assert_eq!(s.raise_boot(), 1);
        assert!(!s.retry(3), "still failed until reopened");
        reopen(&mut s, &dir.path().join("db"));
        assert_eq!(s.held(), 0);
        assert_eq!(s.seqs().collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(s.push(5, fault(Severity::Minor, 0)).unwrap().seq, 5);
        drop(s);
        let s = Spool::open(&dir.path().join("db"), dev(), 1 << 20).unwrap();
        assert_eq!(s.seqs().collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        assert_eq!(s.boot(), 1);
        let sev: Vec<Severity> = all(&s)
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::Fault(f) => Some(f.severity),
                _ => None,
            })
            .collect();
        assert_eq!(
            sev,
            [
                Severity::Warning,
                Severity::Critical,
                Severity::Info,
                Severity::Major,
                Severity::Minor
            ]
        );
    }

    #[test]
    fn memory_held_past_its_bound_drops_the_least_severe_and_says_so_after_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(&dir.path().join("db"), dev(), 8 << 20).unwrap();
        s.break_for_test();
        let critical = s.push(1, fault(Severity::Critical, 300)).unwrap().seq;
        // Measured with this spool's own instance: with the longest one instead, a
        // spool whose random instance has fewer digits holds a few more than `fit`.
        let one = entry_of(Severity::Warning, s.instance());
        let fit = (MAX_HELD_BYTES / one) as usize;
        let mut dropped = 0;
        for _ in 0..fit + 5 {
            dropped += s.push(2, fault(Severity::Warning, 300)).unwrap().dropped;
        }
        assert!(dropped >= 5, "{dropped}");
        assert!(s.held_bytes <= MAX_HELD_BYTES);
        assert!(
            s.held.iter().any(|h| h.seq == critical),
            "the critical one stays"
        );
        let last_held = s.held.back().unwrap().seq;
        reopen(&mut s, &dir.path().join("db"));
        let events = all(&s);
        assert_eq!(events[0].seq, critical);
        let notice = events.last().unwrap();
        assert!(
            notice.seq > last_held,
            "the notice comes after every held event"
        );
        assert_eq!(
            notice.body,
            EventBody::Dropped(Dropped {
                count: dropped,
                worst: Severity::Warning,
                // Held in memory, never written: certainly lost, so not listed.
                seqs: heapless::Vec::new(),
            })
        );
        assert_eq!(s.dropped_total(), dropped);
    }

    #[test]
    fn rejects_a_uselessly_small_bound() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Spool::open(&dir.path().join("db"), dev(), 10),
            Err(SpoolError::TooSmall(10))
        ));
    }

    /// The model: what the spool should hold, by the policy in the module doc, written
    /// the slow obvious way (scan everything, no index).
    #[derive(Debug, Default)]
    struct Model {
        events: BTreeMap<u64, (u8, u64)>,
        next_seq: u64,
        pending: u64,
        worst: Option<Severity>,
        notice: Option<u64>,
        max: u64,
        instance: u64,
        seqs: heapless::Vec<SeqRange, DROPPED_RANGES>,
    }

    fn size_of(instance: u64, seq: u64, body: EventBody) -> u64 {
        let e = Event {
            v: 1,
            device: dev(),
            instance,
            seq,
            boot: 0,
            ts: 7,
            body,
        };
        entry_size(encode(&e).unwrap().len())
    }

    impl Model {
        fn bytes(&self) -> u64 {
            self.events.values().map(|(_, size)| size).sum()
        }
        fn victim(&self, at_most: u8) -> Option<u64> {
            self.events
                .iter()
                .filter(|(_, (r, _))| *r <= at_most && *r < RANK_NOTICE)
                .min_by_key(|(seq, (r, _))| (*r, **seq))
                .map(|(seq, _)| *seq)
        }
        fn drop_one(&mut self, rank: u8) {
            self.pending += 1;
            let sev = rank_severity(rank);
            self.worst = Some(self.worst.map_or(sev, |w| w.max(sev)));
        }
        fn evict(&mut self, seq: u64) {
            if let Some((rank, _)) = self.events.remove(&seq) {
                self.drop_one(rank);
                Dropped::list(&mut self.seqs, seq);
            }
        }
        fn notice(&mut self) {
            if self.pending == 0 || self.notice.is_some() {
                return;
            }
            loop {
                let body = EventBody::Dropped(Dropped {
                    count: self.pending,
                    worst: self.worst.unwrap_or(Severity::Info),
                    seqs: self.seqs.clone(),
                });
                let size = size_of(self.instance, self.next_seq, body);
                if self.bytes() + size <= self.max {
                    self.events.insert(self.next_seq, (RANK_NOTICE, size));
                    self.notice = Some(self.next_seq);
                    self.next_seq += 1;
                    self.pending = 0;
                    self.worst = None;
                    self.seqs.clear();
                    return;
                }
                match self.victim(severity_rank(self.worst.unwrap_or(Severity::Info))) {
                    Some(v) => self.evict(v),
                    None => return,
                }
            }
        }
        fn push(&mut self, body: EventBody) {
            let seq = self.next_seq;
            self.next_seq += 1;
            let rank = rank(&body);
            let size = size_of(self.instance, seq, body);
            loop {
                if self.bytes() + size <= self.max {
                    self.events.insert(seq, (rank, size));
                    break;
                }
                match self.victim(rank) {
                    Some(v) => self.evict(v),
                    None => {
                        self.drop_one(rank);
                        break;
                    }
                }
            }
            self.notice();
        }
        fn ack(&mut self, seqs: &[u64]) {
            for s in seqs {
                if self.events.remove(s).is_some() && self.notice == Some(*s) {
                    self.notice = None;
                }
            }
            self.notice();
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(Severity, usize),
        Ack(Vec<u64>),
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (prop::sample::select(Severity::ALL.to_vec()), 0usize..400)
                .prop_map(|(s, p)| Op::Push(s, p)),
            2 => prop::collection::vec(1u64..60, 0..6).prop_map(Op::Ack),
            1 => Just(Op::Restart),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn spool_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
            let dir = tempfile::tempdir().unwrap();
            let max = 3000;
            let mut s = Spool::open(&dir.path().join("db"), dev(), max).unwrap();
            let mut m = Model { next_seq: 1, max, instance: s.instance(), ..Model::default() };
            for op in ops {
                match op {
                    Op::Push(sev, pad) => {
                        let p = s.push(7, fault(sev, pad)).unwrap();
                        prop_assert_eq!(p.seq, m.next_seq);
                        m.push(fault(sev, pad));
                    }
                    Op::Ack(seqs) => {
                        let mut a = ack(&[], &[]);
                        for &q in &seqs {
                            a.stored.push(SeqRange { from: q, to: q }).unwrap();
                        }
                        s.ack(&a, 7).unwrap();
                        m.ack(&seqs);
                    }
                    Op::Restart => {
                        drop(s);
                        s = Spool::open(&dir.path().join("db"), dev(), max).unwrap();
                    }
                }
                prop_assert_eq!(s.seqs().collect::<Vec<_>>(), m.events.keys().copied().collect::<Vec<_>>());
                prop_assert_eq!(s.bytes(), m.bytes());
                prop_assert!(s.bytes() <= max);
                prop_assert_eq!(s.drops_pending(), m.pending);
                // Everything stored decodes, in seq order, with the seq it is keyed by.
                let events = all(&s);
                prop_assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
            }
        }
    }
}
