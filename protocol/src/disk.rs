//! What the agent and the collector both know about keeping a sled database alive on a
//! disk that fills up (found on a full tmpfs, `agent/tests/disk_full.rs`):
//!
//! - after one I/O error (`ENOSPC`) every later write fails too, even with room again, so
//!   the database must be dropped and opened again;
//! - an open on a full disk fails and leaves an empty `snap.<lsn>.generating` behind, and
//!   from then on every open reads the database as corrupt; so reopen only with
//!   [`REOPEN_FREE_BYTES`] free, and when an open reports corruption, remove that
//!   unfinished snapshot (it is unfinished by its name; the next open recovers from the
//!   log) and try once more.
use std::path::{Path, PathBuf};
use std::vec::Vec;

/// Free space a reopen needs: sled writes a snapshot and may start a 512 KiB segment when
/// it opens.
pub const REOPEN_FREE_BYTES: u64 = 1024 * 1024;

/// Whether the filesystem holding `path` (or its parent, if `path` does not exist yet)
/// has at least `bytes` available to this process.
pub fn has_room(path: &Path, bytes: u64) -> bool {
    let dir = if path.exists() {
        path
    } else {
        path.parent().unwrap_or(Path::new("."))
    };
    rustix::fs::statvfs(dir).is_ok_and(|st| st.f_bavail.saturating_mul(st.f_frsize) >= bytes)
}

/// Removes the unfinished sled snapshots (`snap.*.generating`) in `dir`. Call only after
/// an open failed past the database's lock, so that no live sled instance writes them.
/// Returns what was removed and what could not be.
pub fn remove_unfinished_snapshots(dir: &Path) -> (Vec<PathBuf>, Vec<(PathBuf, std::io::Error)>) {
    let mut removed = Vec::new();
    let mut failed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (removed, failed);
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed.push(entry.path()),
                Err(e) => failed.push((entry.path(), e)),
            }
        }
    }
    (removed, failed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::{format, vec};

    #[test]
    fn only_unfinished_snapshots_are_removed() {
        let dir = std::env::temp_dir().join(format!("vigia-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["snap.00000001.generating", "snap.00000002", "conf", "db"] {
            std::fs::write(dir.join(f), b"").unwrap();
        }
        let (removed, failed) = remove_unfinished_snapshots(&dir);
        assert_eq!(removed, vec![dir.join("snap.00000001.generating")]);
        assert!(failed.is_empty());
        assert!(dir.join("snap.00000002").exists() && dir.join("db").exists());
        assert!(has_room(&dir, 1));
        assert!(!has_room(&dir, u64::MAX));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
