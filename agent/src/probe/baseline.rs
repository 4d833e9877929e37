//! Counter baselines that survive an agent restart, in the `sled::Tree` the agent passes.
//!
//! Key: `{detector}/{subject}` (for SMART the subject starts with the disk serial, so a
//! replaced disk starts from its own first reading). Value: the baseline as 8 big-endian
//! bytes. A store error is logged and the detector runs on its in-memory baseline: losing
//! a baseline costs at most one missed or repeated alert, never a crash.
use vigia_protocol::FaultKind;

/// The baseline store.
#[derive(Debug, Clone)]
pub struct Baselines {
    tree: sled::Tree,
    dirty: std::cell::Cell<bool>,
}

fn key(kind: FaultKind, subject: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(kind.as_str().len() + 1 + subject.len());
    k.extend_from_slice(kind.as_str().as_bytes());
    k.push(b'/');
    k.extend_from_slice(subject.as_bytes());
    k
}

impl Baselines {
    /// Wraps a tree.
    pub fn new(tree: sled::Tree) -> Self {
        Self {
            tree,
            dirty: std::cell::Cell::new(false),
        }
    }

    /// The stored baseline of `kind`/`subject`.
    pub fn get(&self, kind: FaultKind, subject: &str) -> Option<u64> {
        match self.tree.get(key(kind, subject)) {
            Ok(Some(v)) => <[u8; 8]>::try_from(v.as_ref()).ok().map(u64::from_be_bytes),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(kind = %kind, subject, error = %e, "baseline read failed");
                None
            }
        }
    }

    /// Stores a baseline.
    pub fn set(&self, kind: FaultKind, subject: &str, value: u64) {
        if let Err(e) = self.tree.insert(key(kind, subject), &value.to_be_bytes()) {
            tracing::warn!(kind = %kind, subject, error = %e, "baseline write failed");
        }
        self.dirty.set(true);
    }

    /// The underlying tree (other detectors keep small state beside the baselines).
    pub fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// Writes pending changes to disk, if there are any (once per sampling pass, so a
    /// `kill -9` right after a pass loses no baseline).
    pub fn flush(&self) {
        if !self.dirty.replace(false) {
            return;
        }
        if let Err(e) = self.tree.flush() {
            tracing::warn!(error = %e, "baseline flush failed");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let t = crate::probe::testutil::tree();
        let b = Baselines::new(t.clone());
        assert_eq!(b.get(FaultKind::DiskIoErrors, "sda"), None);
        b.set(FaultKind::DiskIoErrors, "sda", 7);
        assert_eq!(b.get(FaultKind::DiskIoErrors, "sda"), Some(7));
        assert_eq!(b.get(FaultKind::DiskIoErrors, "sdb"), None);
        t.insert("disk_io_errors/sdc", &b"xx"[..]).unwrap();
        assert_eq!(b.get(FaultKind::DiskIoErrors, "sdc"), None);
    }
}
