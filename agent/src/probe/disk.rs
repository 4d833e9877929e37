//! Filesystems: space and inodes (statvfs over `/proc/mounts`) and read-only remounts.
//!
//! Which mounts count: block-backed and local filesystems only. Skipped, by type:
//! kernel pseudo filesystems (proc, sysfs, cgroup, devpts, ...), memory-backed ones
//! (tmpfs, ramfs, devtmpfs: their fullness is a memory matter, not a disk fault),
//! read-only images and media (squashfs, erofs, iso9660, udf: always "100 % full"),
//! network and FUSE filesystems (nfs, cifs, fuse.*: `statvfs` on a hung server blocks the
//! whole sampling pass), and `overlay` except at `/` (container layers repeat the host's
//! disk dozens of times; a container's own root is still watched). Bind mounts of the
//! same device are checked once, under the first mount point listed.
//!
//! Space used is measured against what a non-root user can use (`f_bavail`), as `df`
//! does, so the 5 % root reserve shows up as "full" before root's writes start failing.
use std::path::Path;

use serde::{Deserialize, Serialize};
use vigia_protocol::{FaultKind, Severity};

use super::sysfs::{self, Root};
use super::ProbeError;
use crate::detect::config::is_ignored;
use crate::detect::{DetectConfig, Engine, Obs, Severities};

/// Filesystem types never watched (see the module doc).
pub const SKIP_TYPES: &[&str] = &[
    "proc",
    "sysfs",
    "tmpfs",
    "ramfs",
    "devtmpfs",
    "devpts",
    "cgroup",
    "cgroup2",
    "securityfs",
    "pstore",
    "bpf",
    "tracefs",
    "debugfs",
    "configfs",
    "fusectl",
    "mqueue",
    "hugetlbfs",
    "autofs",
    "rpc_pipefs",
    "binfmt_misc",
    "nsfs",
    "efivarfs",
    "selinuxfs",
    "squashfs",
    "erofs",
    "iso9660",
    "udf",
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "ceph",
    "glusterfs",
    "9p",
    "virtiofs",
    "sshfs",
    "fuse",
    "ramfs",
    "zram",
    "rootfs",
    "none",
];

/// One line of `/proc/mounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Source device (`/dev/sda1`).
    pub device: String,
    /// Mount point, unescaped.
    pub mount: String,
    /// Filesystem type.
    pub fstype: String,
    /// Mounted read-only (`ro` in the options).
    pub read_only: bool,
}

/// Decodes the octal escapes `/proc/mounts` uses for space, tab, newline and backslash.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `/proc/mounts`; malformed lines are skipped.
pub fn parse_mounts(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_ascii_whitespace();
            let device = f.next()?;
            let mount = f.next()?;
            let fstype = f.next()?;
            let opts = f.next()?;
            Some(MountEntry {
                device: unescape(device),
                mount: unescape(mount),
                fstype: fstype.to_string(),
                read_only: opts.split(',').any(|o| o == "ro"),
            })
        })
        .collect()
}

/// Whether a mount is a real local filesystem worth watching (see the module doc).
pub fn is_watched(m: &MountEntry) -> bool {
    if m.fstype == "overlay" {
        return m.mount == "/";
    }
    !(SKIP_TYPES.contains(&m.fstype.as_str()) || m.fstype.starts_with("fuse."))
}

/// The watched mounts, bind mounts of one device kept once (first listed wins).
pub fn watched_mounts(all: &[MountEntry]) -> Vec<MountEntry> {
    let mut out: Vec<MountEntry> = Vec::new();
    for m in all.iter().filter(|m| is_watched(m)) {
        let dup = m.device.starts_with('/')
            && out
                .iter()
                .any(|o| o.device == m.device && o.fstype == m.fstype);
        if !dup && !out.iter().any(|o| o.mount == m.mount) {
            out.push(m.clone());
        }
    }
    out
}

/// Reads and parses `{root}/proc/mounts`.
pub fn read_mounts(root: &Root) -> Result<Vec<MountEntry>, ProbeError> {
    let path = root.path("/proc/mounts");
    let text = sysfs::read(&path).map_err(|source| ProbeError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(parse_mounts(&text))
}

/// Space and inode counts of one filesystem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskUsage {
    /// Mount point.
    pub mount: String,
    /// Size in bytes.
    pub total_bytes: u64,
    /// Bytes available to non-root users.
    pub avail_bytes: u64,
    /// Inodes in total (0 on filesystems without a fixed inode table, e.g. btrfs).
    #[serde(default)]
    pub files: u64,
    /// Inodes free.
    #[serde(default)]
    pub files_free: u64,
}

impl DiskUsage {
    /// Percent of space used, against what non-root users can use (as `df` shows it).
    pub fn used_pct(&self) -> Option<f64> {
        (self.total_bytes > 0).then(|| {
            let avail = self.avail_bytes.min(self.total_bytes) as f64;
            100.0 * (1.0 - avail / self.total_bytes as f64)
        })
    }

    /// Percent of inodes used; `None` where the filesystem has no inode limit.
    pub fn inodes_used_pct(&self) -> Option<f64> {
        (self.files > 0).then(|| {
            let free = self.files_free.min(self.files) as f64;
            100.0 * (1.0 - free / self.files as f64)
        })
    }
}

/// `statvfs` of one mount point under `root`.
pub fn statvfs(root: &Root, mount: &str) -> Result<DiskUsage, ProbeError> {
    let path = root.path(mount);
    let st = rustix::fs::statvfs(&path).map_err(|e| ProbeError::Io {
        path: path.clone(),
        source: e.into(),
    })?;
    let frsize = if st.f_frsize > 0 {
        st.f_frsize
    } else {
        st.f_bsize
    };
    Ok(DiskUsage {
        mount: mount.to_string(),
        total_bytes: st.f_blocks.saturating_mul(frsize),
        avail_bytes: st.f_bavail.saturating_mul(frsize),
        files: st.f_files,
        files_free: st.f_ffree,
    })
}

/// Reads space and inodes of every watched mount. A mount `statvfs` cannot read
/// (permission, gone between the two reads) is left out, not reported as empty.
pub fn read_usage(root: &Root, mounts: &[MountEntry]) -> Vec<DiskUsage> {
    watched_mounts(mounts)
        .iter()
        .filter_map(|m| match statvfs(root, &m.mount) {
            Ok(u) => Some(u),
            Err(e) => {
                tracing::debug!(mount = %m.mount, error = %e, "statvfs failed; mount skipped");
                None
            }
        })
        .collect()
}

/// Feeds space and inode readings to the engine.
pub fn feed_usage(
    engine: &mut Engine,
    cfg: &DetectConfig,
    usage: &[DiskUsage],
    out: &mut Vec<vigia_protocol::FaultEvent>,
) {
    let mut source = String::new();
    for u in usage {
        source.clear();
        source.push_str("statvfs ");
        source.push_str(&u.mount);
        let (levels, db, on) = cfg.disk_space.for_subject(&u.mount);
        if let (true, Some(pct)) = (on, u.used_pct()) {
            let obs = Obs {
                kind: FaultKind::DiskSpace,
                subject: &u.mount,
                source: &source,
                unit: "%",
                label: "space used",
            };
            out.extend(engine.level(obs, pct, &levels, Severities::DEFAULT, db));
        }
        let (levels, db, on) = cfg.disk_inodes.for_subject(&u.mount);
        if let (true, Some(pct)) = (on, u.inodes_used_pct()) {
            let obs = Obs {
                kind: FaultKind::DiskInodes,
                subject: &u.mount,
                source: &source,
                unit: "%",
                label: "inodes used",
            };
            out.extend(engine.level(obs, pct, &levels, Severities::DEFAULT, db));
        }
    }
}

/// Read-only state of one mount, for the remount detector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountState {
    /// Mount point.
    pub mount: String,
    /// Mounted read-only now.
    pub ro: bool,
}

/// The read-only state of every watched mount.
pub fn mount_states(mounts: &[MountEntry]) -> Vec<MountState> {
    watched_mounts(mounts)
        .into_iter()
        .map(|m| MountState {
            mount: m.mount,
            ro: m.read_only,
        })
        .collect()
}

/// Remembers which mounts were read-write when first seen (at agent start, or when
/// mounted later): only those can be "remounted read-only". A filesystem mounted
/// read-only on purpose is never a fault.
///
/// The read-write set is also kept in the baseline store under the kernel's boot id
/// (`/proc/sys/kernel/random/boot_id`), so an agent restarted after the remount still
/// knows the filesystem was writable earlier in this boot; after a reboot it starts over.
#[derive(Debug, Default)]
pub struct RoTracker {
    was_rw: std::collections::BTreeSet<String>,
    seen: std::collections::BTreeSet<String>,
    store: Option<sled::Tree>,
}

const RO_BOOT_KEY: &[u8] = b"fs_read_only:boot_id";
const RO_PREFIX: &str = "fs_read_only:rw/";

impl RoTracker {
    /// A tracker that persists what it learns in `tree`, for the boot `boot_id`.
    pub fn persistent(tree: sled::Tree, boot_id: &str) -> Self {
        let mut t = Self::default();
        let same_boot =
            matches!(tree.get(RO_BOOT_KEY), Ok(Some(v)) if v.as_ref() == boot_id.as_bytes());
        if same_boot {
            for (k, _) in tree.scan_prefix(RO_PREFIX).flatten() {
                if let Some(m) = std::str::from_utf8(&k)
                    .ok()
                    .and_then(|k| k.strip_prefix(RO_PREFIX))
                {
                    t.was_rw.insert(m.to_string());
                    t.seen.insert(m.to_string());
                }
            }
        } else {
            for (k, _) in tree.scan_prefix(RO_PREFIX).flatten() {
                let _ = tree.remove(k);
            }
            if let Err(e) = tree.insert(RO_BOOT_KEY, boot_id.as_bytes()) {
                tracing::warn!(error = %e, "cannot store the boot id for remount detection");
            }
        }
        t.store = Some(tree);
        t
    }

    /// Feeds one sample of mount states.
    pub fn feed(
        &mut self,
        engine: &mut Engine,
        cfg: &DetectConfig,
        states: &[MountState],
        out: &mut Vec<vigia_protocol::FaultEvent>,
    ) {
        let db = crate::detect::Debounce::IMMEDIATE;
        for s in states {
            if is_ignored(&cfg.fs_read_only.ignore_mounts, &s.mount) {
                continue;
            }
            if self.seen.insert(s.mount.clone()) && s.ro {
                continue; // read-only from the start: on purpose
            }
            if !s.ro && self.was_rw.insert(s.mount.clone()) {
                if let Some(tree) = &self.store {
                    let key = format!("{RO_PREFIX}{}", s.mount);
                    if let Err(e) = tree.insert(key.as_bytes(), &[1u8][..]) {
                        tracing::warn!(mount = %s.mount, error = %e, "cannot store the mount's read-write state");
                    }
                }
            }
            if !self.was_rw.contains(&s.mount) {
                continue;
            }
            let obs = Obs {
                kind: FaultKind::FsReadOnly,
                subject: &s.mount,
                source: "/proc/mounts",
                unit: "state",
                label: "remounted read-only",
            };
            let value = if s.ro { 1.0 } else { 0.0 };
            out.extend(engine.flag(obs, s.ro, Severity::Critical, value, 1.0, db));
        }
    }
}

/// Whether `path` is a mount point listed in `mounts` (used by tests and `check`).
pub fn is_mount(mounts: &[MountEntry], path: &Path) -> bool {
    mounts.iter().any(|m| Path::new(&m.mount) == path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const MOUNTS: &str = include_str!("../../fixtures/disk/workstation/proc/mounts");

    #[test]
    fn parses_real_mounts_and_skips_pseudo() {
        let all = parse_mounts(MOUNTS);
        assert!(all.len() > 20);
        let w: Vec<_> = watched_mounts(&all).into_iter().map(|m| m.mount).collect();
        assert_eq!(
            w,
            [
                "/",
                "/boot",
                "/boot/efi",
                "/home",
                "/var/lib/my data",
                "/media/usb"
            ]
        );
        assert!(is_mount(&all, Path::new("/proc")));
    }

    #[test]
    fn read_only_flag_and_escapes() {
        let all = parse_mounts("/dev/sdb1 /mnt/a\\040b ext4 ro,relatime 0 0\ngarbage\n");
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].mount, "/mnt/a b");
        assert!(all[0].read_only);
    }

    #[test]
    fn odd_and_empty_mounts_files() {
        let fx = |c: &str| {
            Root::new(
                &Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("fixtures/disk")
                    .join(c),
            )
        };
        let m = read_mounts(&fx("odd")).unwrap();
        let points: Vec<_> = m.iter().map(|m| m.mount.as_str()).collect();
        assert_eq!(
            points,
            ["/", "/data"],
            "blank, truncated and binary lines skipped"
        );
        assert!(read_mounts(&fx("empty")).unwrap().is_empty());
        assert!(read_mounts(&fx("missing")).is_err());
    }

    #[test]
    fn container_root_overlay_is_watched_layers_are_not() {
        let all = parse_mounts(
            "overlay / overlay rw 0 0\noverlay /var/lib/docker/overlay2/x/merged overlay rw 0 0\n",
        );
        let w = watched_mounts(&all);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].mount, "/");
    }

    #[test]
    fn percentages() {
        let u = DiskUsage {
            mount: "/".into(),
            total_bytes: 100,
            avail_bytes: 5,
            files: 10,
            files_free: 5,
        };
        assert_eq!(u.used_pct(), Some(95.0));
        assert_eq!(u.inodes_used_pct(), Some(50.0));
        let btrfs = DiskUsage {
            files: 0,
            files_free: 0,
            ..u.clone()
        };
        assert_eq!(btrfs.inodes_used_pct(), None);
        let empty = DiskUsage {
            total_bytes: 0,
            ..u
        };
        assert_eq!(empty.used_pct(), None);
    }

    #[test]
    fn statvfs_reads_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        let u = statvfs(&Root::new(dir.path()), "/").unwrap();
        assert!(u.total_bytes > 0);
        assert!(u.avail_bytes <= u.total_bytes);
        assert!(statvfs(&Root::new(dir.path()), "/does/not/exist").is_err());
    }
}
