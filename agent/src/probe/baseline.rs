//! Counter state that survives an agent restart, in the `sled::Tree` the agent passes.
//!
//! Two scopes, because counters differ in what their zero means:
//! - [`Scope::Boot`]: kernel counters that start at zero with every boot (EDAC, AER,
//!   `ioerr_cnt`, counts from the kernel log). Key `boot/{boot_id}/{detector}/{subject}`.
//!   A subject without a record in this boot starts from zero, so what the kernel counted
//!   before the agent's first start in this boot is reported; records of other boots are
//!   deleted when the store is opened. Without a boot id (unreadable, or a replay) these
//!   counters fall back to the lifetime key and to "the first reading is the baseline".
//! - [`Scope::Lifetime`]: counters kept by the device itself (SMART attributes, ext4's
//!   `errors_count` in the superblock). Key `{detector}/{subject}`; for SMART the subject
//!   starts with the disk serial, so a replaced disk starts from its own first reading.
//!
//! Value: the counter's baseline, last value and whether its fault is open (17 bytes), so
//! a fault open at a restart stays open without being reported twice. A record of the
//! older format (the baseline alone, 8 big-endian bytes) still reads. A store error is
//! logged and the detector runs on its in-memory state: losing a record costs at most one
//! missed or repeated alert, never a crash.
//!
//! Changes are staged in memory and written by [`Baselines::commit`], which the agent
//! calls only once the events of the passes that made them are in the spool: a counter
//! must never be stored as "open, reported" while its event waits in memory for a full
//! disk, or an agent restarted then would never report it. Until then reads see the
//! staged changes. The database may also be let go of ([`Baselines::detach`]) while the
//! spool reopens it.
use std::cell::RefCell;

use vigia_protocol::FaultKind;

use crate::detect::{CounterClear, CounterMemo, CounterStart};

/// Which record a counter's state is kept under (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Zero at every kernel boot.
    Boot,
    /// Kept by the device across boots.
    Lifetime,
}

/// A staged change: the key, and its value or `None` for a deletion.
type Staged = (Vec<u8>, Option<Vec<u8>>);

/// The baseline store.
#[derive(Debug)]
pub struct Baselines {
    tree: Option<sled::Tree>,
    boot: Option<String>,
    /// Changes not written yet, one per key: a value, or `None` for a deletion. A list,
    /// not a map: a pass stages a handful, and every map instance costs binary size.
    staged: RefCell<Vec<Staged>>,
}

const BOOT_PREFIX: &str = "boot/";

fn lifetime_key(kind: FaultKind, subject: &str) -> Vec<u8> {
    format!("{}/{subject}", kind.as_str()).into_bytes()
}

fn encode(m: CounterMemo) -> [u8; 17] {
    let mut v = [0u8; 17];
    v[..8].copy_from_slice(&m.baseline.to_be_bytes());
    v[8..16].copy_from_slice(&m.last.to_be_bytes());
    v[16] = u8::from(m.open);
    v
}

/// A stored record: the state, and whether it is of the older, baseline-only format.
fn decode(v: &[u8]) -> Option<(CounterMemo, bool)> {
    let word = |b: &[u8]| <[u8; 8]>::try_from(b).ok().map(u64::from_be_bytes);
    match v.len() {
        8 => {
            let baseline = word(v)?;
            let m = CounterMemo {
                baseline,
                last: baseline,
                open: false,
            };
            Some((m, true))
        }
        17 => Some((
            CounterMemo {
                baseline: word(&v[..8])?,
                last: word(&v[8..16])?,
                open: v[16] == 1,
            },
            false,
        )),
        _ => None,
    }
}

impl Baselines {
    /// Wraps a tree for the kernel boot `boot` (its `boot_id`, or `None` when unknown):
    /// boot-scoped records of any other boot are deleted.
    pub fn new(tree: sled::Tree, boot: Option<&str>) -> Self {
        let b = Self {
            tree: Some(tree.clone()),
            boot: boot.map(str::to_string),
            staged: RefCell::new(Vec::new()),
        };
        if let Some(id) = boot {
            let current = format!("{BOOT_PREFIX}{id}/");
            let stale: Vec<_> = tree
                .scan_prefix(BOOT_PREFIX)
                .keys()
                .flatten()
                .filter(|k| !k.starts_with(current.as_bytes()))
                .collect();
            if !stale.is_empty() {
                tracing::debug!(
                    records = stale.len(),
                    "new kernel boot: since-boot counters start from zero"
                );
            }
            for k in stale {
                b.remove(&k);
            }
        }
        b
    }

    /// The kernel boot the boot-scoped records belong to.
    pub fn boot(&self) -> Option<&str> {
        self.boot.as_deref()
    }

    /// The key of a counter; a boot-scoped one without a boot id falls back to the
    /// lifetime key.
    fn key(&self, scope: Scope, kind: FaultKind, subject: &str) -> Vec<u8> {
        match (scope, &self.boot) {
            (Scope::Boot, Some(id)) => {
                format!("{BOOT_PREFIX}{id}/{}/{subject}", kind.as_str()).into_bytes()
            }
            _ => lifetime_key(kind, subject),
        }
    }

    fn stage(&self, key: &[u8], value: Option<Vec<u8>>) {
        let mut staged = self.staged.borrow_mut();
        match staged.iter_mut().find(|(k, _)| k.as_slice() == key) {
            Some(entry) => entry.1 = value,
            None => staged.push((key.to_vec(), value)),
        }
    }

    /// Stages a deletion.
    pub fn remove(&self, key: &[u8]) {
        self.stage(key, None);
    }

    /// Stages a raw record (other detectors keep small state beside the baselines).
    pub fn put(&self, key: &[u8], value: &[u8]) {
        self.stage(key, Some(value.to_vec()));
    }

    /// A raw record, staged or stored.
    pub fn get_raw(&self, key: &[u8]) -> Option<Vec<u8>> {
        if let Some((_, v)) = self
            .staged
            .borrow()
            .iter()
            .find(|(k, _)| k.as_slice() == key)
        {
            return v.clone();
        }
        match self.tree.as_ref()?.get(key) {
            Ok(v) => v.map(|v| v.to_vec()),
            Err(e) => {
                tracing::warn!(error = %e, "baseline read failed");
                None
            }
        }
    }

    fn read(&self, key: &[u8], _kind: FaultKind, _subject: &str) -> Option<(CounterMemo, bool)> {
        decode(&self.get_raw(key)?)
    }

    /// The stored state of `kind`/`subject`, if any.
    pub fn get(&self, scope: Scope, kind: FaultKind, subject: &str) -> Option<CounterMemo> {
        self.read(&self.key(scope, kind, subject), kind, subject)
            .map(|(m, _)| m)
    }

    /// Where a counter seen for the first time since the agent started begins: its
    /// stored state, else zero for a boot-scoped counter in a known boot and for a
    /// count that is a fault whenever it is not zero ([`CounterClear::AtBaseline`]),
    /// else its first reading.
    pub fn start(
        &self,
        scope: Scope,
        kind: FaultKind,
        subject: &str,
        clear: CounterClear,
    ) -> CounterStart {
        let key = self.key(scope, kind, subject);
        let since_boot = scope == Scope::Boot && self.boot.is_some();
        if since_boot {
            // The record of an older agent, keyed without the boot: a first-sight
            // baseline that hid what the kernel had counted. Not read again.
            self.remove(&lifetime_key(kind, subject));
        }
        match self.read(&key, kind, subject) {
            // An old baseline-only record of a count that should be zero was taken at
            // first sight: it hid a non-zero count. Start from zero instead.
            Some((_, true)) if clear == CounterClear::AtBaseline => CounterStart::Zero,
            Some((m, _)) => CounterStart::Saved(m),
            None if since_boot || clear == CounterClear::AtBaseline => CounterStart::Zero,
            None => CounterStart::FirstSight,
        }
    }

    /// Stores a counter's state.
    pub fn set(&self, scope: Scope, kind: FaultKind, subject: &str, memo: CounterMemo) {
        self.put(&self.key(scope, kind, subject), &encode(memo));
    }

    /// Deletes the state of `kind`/`subject` in both scopes (a subject gone while its
    /// fault was open, cleared as "no longer present").
    pub fn forget(&self, kind: FaultKind, subject: &str) {
        for scope in [Scope::Boot, Scope::Lifetime] {
            self.remove(&self.key(scope, kind, subject));
        }
    }

    /// The keys of the records under `prefix`, staged changes included (in no order).
    pub fn scan(&self, prefix: &[u8]) -> Vec<Vec<u8>> {
        let mut keys: Vec<Vec<u8>> = self
            .tree
            .iter()
            .flat_map(|t| t.scan_prefix(prefix).keys().flatten())
            .map(|k| k.to_vec())
            .collect();
        for (k, v) in self.staged.borrow().iter() {
            if k.starts_with(prefix) {
                keys.retain(|x| x != k);
                if v.is_some() {
                    keys.push(k.clone());
                }
            }
        }
        keys
    }

    /// Writes the staged changes in one batch and flushes (call it once the events of
    /// the passes that staged them are in the spool, so a `kill -9` after that loses no
    /// baseline). A failure keeps them staged for the next call; without a database
    /// (detached) they stay staged and this is not an error.
    pub fn commit(&self) -> Result<(), sled::Error> {
        if self.staged.borrow().is_empty() {
            return Ok(());
        }
        let Some(tree) = &self.tree else {
            return Ok(());
        };
        let mut batch = sled::Batch::default();
        for (k, v) in self.staged.borrow().iter() {
            match v {
                Some(v) => batch.insert(k.as_slice(), v.as_slice()),
                None => batch.remove(k.as_slice()),
            }
        }
        match tree
            .apply_batch(batch)
            .and_then(|()| tree.flush().map(|_| ()))
        {
            Ok(()) => {
                self.staged.borrow_mut().clear();
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "baseline write failed; kept in memory for the next pass");
                Err(e)
            }
        }
    }

    /// Changes staged and not written yet.
    pub fn staged(&self) -> usize {
        self.staged.borrow().len()
    }

    /// Lets go of the database (the spool is reopening it); changes stay staged.
    pub fn detach(&mut self) {
        self.tree = None;
    }

    /// Takes the reopened database's tree.
    pub fn attach(&mut self, tree: sled::Tree) {
        self.tree = Some(tree);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const Q: CounterClear = CounterClear::Quiet(60);

    fn memo(baseline: u64, last: u64, open: bool) -> CounterMemo {
        CounterMemo {
            baseline,
            last,
            open,
        }
    }

    #[test]
    fn round_trip_legacy_records_and_garbage() {
        let t = crate::probe::testutil::tree();
        let b = Baselines::new(t.clone(), None);
        let k = FaultKind::DiskHealth;
        assert_eq!(b.get(Scope::Lifetime, k, "S1 x"), None);
        b.set(Scope::Lifetime, k, "S1 x", memo(7, 9, true));
        assert_eq!(b.get(Scope::Lifetime, k, "S1 x"), Some(memo(7, 9, true)));
        assert_eq!(b.get(Scope::Lifetime, k, "S2 x"), None);
        t.insert("disk_health/S3 x", &7u64.to_be_bytes()[..])
            .unwrap();
        assert_eq!(b.get(Scope::Lifetime, k, "S3 x"), Some(memo(7, 7, false)));
        assert_eq!(
            b.start(Scope::Lifetime, k, "S3 x", Q),
            CounterStart::Saved(memo(7, 7, false))
        );
        assert_eq!(
            b.start(Scope::Lifetime, k, "S3 x", CounterClear::AtBaseline),
            CounterStart::Zero,
            "an old first-sight baseline of a should-be-zero count is not trusted"
        );
        t.insert("disk_health/S4 x", &b"xx"[..]).unwrap();
        assert_eq!(b.get(Scope::Lifetime, k, "S4 x"), None);
        assert_eq!(
            b.start(Scope::Lifetime, k, "S4 x", Q),
            CounterStart::FirstSight
        );
    }

    #[test]
    fn boot_scope_is_zero_per_boot_and_forgets_other_boots() {
        let t = crate::probe::testutil::tree();
        let k = FaultKind::MemoryEcc;
        // An older agent's first-sight baseline, keyed without the boot.
        t.insert("memory_ecc/mc0 uncorrected", &1u64.to_be_bytes()[..])
            .unwrap();
        let b = Baselines::new(t.clone(), Some("boot-a"));
        assert_eq!(
            b.start(Scope::Boot, k, "mc0 uncorrected", Q),
            CounterStart::Zero
        );
        b.commit().unwrap();
        assert!(t.get("memory_ecc/mc0 uncorrected").unwrap().is_none());
        b.set(Scope::Boot, k, "mc0 uncorrected", memo(0, 1, true));
        assert_eq!(
            Baselines::new(t.clone(), Some("boot-a")).start(Scope::Boot, k, "mc0 uncorrected", Q),
            CounterStart::Zero,
            "nothing is stored before commit (its event may not be in the spool yet)"
        );
        b.commit().unwrap();
        let b = Baselines::new(t.clone(), Some("boot-a"));
        assert_eq!(
            b.start(Scope::Boot, k, "mc0 uncorrected", Q),
            CounterStart::Saved(memo(0, 1, true))
        );
        let b = Baselines::new(t.clone(), Some("boot-b"));
        assert_eq!(
            b.start(Scope::Boot, k, "mc0 uncorrected", Q),
            CounterStart::Zero
        );
        b.commit().unwrap();
        assert_eq!(t.scan_prefix("boot/boot-a/").count(), 0, "old boot deleted");
        // Without a boot id: the first reading is the baseline, as before.
        let b = Baselines::new(t.clone(), None);
        assert_eq!(
            b.start(Scope::Boot, k, "mc1 corrected", Q),
            CounterStart::FirstSight
        );
        // Forgotten: gone from both scopes.
        let b = Baselines::new(t, Some("boot-b"));
        b.set(Scope::Boot, k, "mc0 uncorrected", memo(0, 1, true));
        b.set(Scope::Lifetime, k, "mc0 uncorrected", memo(0, 1, true));
        b.forget(k, "mc0 uncorrected");
        assert_eq!(b.get(Scope::Boot, k, "mc0 uncorrected"), None);
        assert_eq!(b.get(Scope::Lifetime, k, "mc0 uncorrected"), None);
    }
}
