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
//!
//! Read-only: a filesystem is a fault when it is read-only while it should be writable,
//! which this module knows two ways: `/etc/fstab` mounts it read-write (a disk-backed
//! type only: [`DISK_FS_TYPES`]; an entry with `noauto` is left to whoever mounted it),
//! or it was read-write earlier in this boot ([`RoTracker`]). So a root that ext4 already
//! remounted read-only before the agent started (`errors=remount-ro`) is reported at the
//! agent's first pass. Read-only by design is never a fault: `ro` in fstab, image
//! filesystems (squashfs, erofs, iso9660: not watched at all), and a mount not in fstab
//! that is read-only when first seen: a live USB's or an image-based system's layers
//! (`/rofs`, `/cdrom`, Silverblue's `/sysroot`, an overlay root's lower layer at
//! `/media/root-ro`), whose writable root is an overlay. Bind mounts of one device are
//! judged once, under the mount point fstab names, else the first one seen writable.
//!
//! ext4 keeps a count of the errors it found in the superblock
//! (`/sys/fs/ext4/<dev>/errors_count`; it survives reboots until e2fsck repairs the
//! filesystem, and the kernel nags about it daily). It is evidence in a read-only fault,
//! and a `disk_io_errors` fault of its own while it is not zero (subject `{mount} (ext4
//! errors)`), updated when it rises: errors an fsck has not repaired are a fault, also
//! when they are older than the agent.
use std::path::Path;

use serde::{Deserialize, Serialize};
use vigia_protocol::{FaultKind, Severity};

use super::baseline::Baselines;
use super::baseline::Scope;
use super::counters::feed_counter;
use super::error::ProbeError;
use super::sysfs::{self, Root};
use crate::detect::config::is_ignored;
use crate::detect::{CounterClear, CounterRule, DetectConfig, Engine, Obs, Severities};

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

/// Filesystem types that live on a local disk: read-only while `/etc/fstab` mounts them
/// read-write is a fault. (FUSE, network and image filesystems, overlay and ntfs-3g are
/// not: their read-only states have other, often harmless, causes.)
pub const DISK_FS_TYPES: &[&str] = &[
    "ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "vfat", "msdos", "exfat", "jfs", "reiserfs",
    "nilfs2", "bcachefs", "hfsplus",
];

/// Whether `fstype` is a disk-backed filesystem ([`DISK_FS_TYPES`]).
pub fn is_disk_fs(fstype: &str) -> bool {
    DISK_FS_TYPES.contains(&fstype)
}

/// One line of `/etc/fstab` that mounts something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FstabEntry {
    /// Mount point, unescaped, without a trailing `/`.
    pub mount: String,
    /// Filesystem type (`auto`, `ext4`...).
    pub fstype: String,
    /// Mounted read-only (the last of `ro`/`rw` wins; `defaults` is read-write).
    pub read_only: bool,
    /// Not mounted at boot (`noauto`): whoever mounts it chooses its options.
    pub noauto: bool,
}

fn normalize_mount(m: &str) -> String {
    let t = m.trim_end_matches('/');
    if t.is_empty() {
        "/".to_string()
    } else {
        t.to_string()
    }
}

/// Parses `/etc/fstab` (fstab(5)): comments and blank lines skipped, `\040` escapes
/// decoded, sources (`UUID=`, `LABEL=`, devices) ignored: entries are matched to mounts
/// by mount point. Swap and lines without a mount point are left out.
pub fn parse_fstab(text: &str) -> Vec<FstabEntry> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let mut f = line.split_ascii_whitespace();
            let _source = f.next()?;
            let mount = unescape(f.next()?);
            let fstype = f.next().unwrap_or("auto").to_string();
            let opts = f.next().unwrap_or("defaults");
            if !mount.starts_with('/') || fstype == "swap" {
                return None;
            }
            let mut read_only = false;
            let mut noauto = false;
            for o in opts.split(',') {
                match o {
                    "ro" => read_only = true,
                    "rw" | "defaults" => read_only = false,
                    "noauto" => noauto = true,
                    "auto" => noauto = false,
                    _ => {}
                }
            }
            Some(FstabEntry {
                mount: normalize_mount(&mount),
                fstype,
                read_only,
                noauto,
            })
        })
        .collect()
}

/// Reads `{root}/etc/fstab`; `None` when there is none (a container, some images): the
/// read-only detector then knows only what it saw read-write itself.
pub fn read_fstab(root: &Root) -> Option<Vec<FstabEntry>> {
    let path = root.path("/etc/fstab");
    match sysfs::read(&path) {
        Ok(text) => Some(parse_fstab(&text)),
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "no fstab; read-only mounts judged by what was seen read-write");
            None
        }
    }
}

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
    /// Source device (`/dev/sda1`); mounts of one device are judged once. Empty: unknown.
    #[serde(default)]
    pub device: String,
    /// Filesystem type.
    #[serde(default)]
    pub fstype: String,
    /// What `/etc/fstab` says of this mount point: `Some(true)` read-write, `Some(false)`
    /// read-only; `None` not listed, `noauto`, or no fstab.
    #[serde(default)]
    pub fstab_rw: Option<bool>,
    /// ext4's `errors_count` for the filesystem, where it has one.
    #[serde(default)]
    pub fs_errors: Option<u64>,
    /// Where `fs_errors` was read (`/sys/fs/ext4/sda1/errors_count`).
    #[serde(default)]
    pub fs_errors_source: String,
}

/// The kernel name of a mount's source device (`sda1`, `dm-0`), following a
/// `/dev/mapper/*` or `/dev/disk/by-*` symlink under `root`.
fn kernel_name(root: &Root, device: &str) -> Option<String> {
    let rest = device.strip_prefix("/dev/")?;
    let name = match std::fs::read_link(root.path(device)) {
        Ok(target) => target.file_name()?.to_string_lossy().into_owned(),
        Err(_) => Path::new(rest).file_name()?.to_string_lossy().into_owned(),
    };
    Some(name)
}

/// The read-only state of every watched mount (bind mounts included: [`RoTracker`] picks
/// one per device), with what `fstab` says of it and ext4's error count.
pub fn mount_states(
    root: &Root,
    mounts: &[MountEntry],
    fstab: Option<&[FstabEntry]>,
) -> Vec<MountState> {
    let mut out: Vec<MountState> = Vec::new();
    for m in mounts.iter().filter(|m| is_watched(m)) {
        if out.iter().any(|o| o.mount == m.mount) {
            continue; // stacked on the same point: the first listed is judged
        }
        let fstab_rw = fstab
            .and_then(|f| {
                f.iter()
                    .rev()
                    .find(|e| e.mount == normalize_mount(&m.mount))
            })
            .filter(|e| !e.noauto)
            .map(|e| !e.read_only);
        let (mut fs_errors, mut fs_errors_source) = (None, String::new());
        if matches!(m.fstype.as_str(), "ext2" | "ext3" | "ext4") {
            if let Some(name) = kernel_name(root, &m.device) {
                let shown = format!("/sys/fs/ext4/{name}/errors_count");
                fs_errors = sysfs::attr_u64(&root.path(&shown));
                if fs_errors.is_some() {
                    fs_errors_source = shown;
                }
            }
        }
        out.push(MountState {
            mount: m.mount.clone(),
            ro: m.read_only,
            device: if m.device.starts_with('/') {
                m.device.clone()
            } else {
                String::new()
            },
            fstype: m.fstype.clone(),
            fstab_rw,
            fs_errors,
            fs_errors_source,
        });
    }
    out
}

/// Judges read-only mounts (see the module doc): a mount is expected writable when
/// `/etc/fstab` mounts it read-write, or when it was read-write earlier in this boot (at
/// agent start, or when mounted later).
///
/// The read-write set is also kept in the baseline store under the kernel's boot id
/// (`/proc/sys/kernel/random/boot_id`), so an agent restarted after the remount still
/// knows the filesystem was writable earlier in this boot; after a reboot it starts over.
#[derive(Debug, Default)]
pub struct RoTracker {
    was_rw: std::collections::BTreeSet<String>,
    seen: std::collections::BTreeSet<String>,
    /// Whether what it learns is kept in the baseline store (a known boot id).
    persist: bool,
}

const RO_BOOT_KEY: &[u8] = b"fs_read_only:boot_id";
const RO_PREFIX: &str = "fs_read_only:rw/";

impl RoTracker {
    /// A tracker that persists what it learns in `baselines`, for the boot `boot_id`.
    pub fn persistent(baselines: &Baselines, boot_id: &str) -> Self {
        let mut t = Self::default();
        let same_boot = baselines.get_raw(RO_BOOT_KEY).as_deref() == Some(boot_id.as_bytes());
        let keys = baselines.scan(RO_PREFIX.as_bytes());
        if same_boot {
            for k in keys {
                if let Some(m) = std::str::from_utf8(&k)
                    .ok()
                    .and_then(|k| k.strip_prefix(RO_PREFIX))
                {
                    t.was_rw.insert(m.to_string());
                    t.seen.insert(m.to_string());
                }
            }
        } else {
            for k in keys {
                baselines.remove(&k);
            }
            baselines.put(RO_BOOT_KEY, boot_id.as_bytes());
        }
        t.persist = true;
        t
    }

    /// How strongly a mount speaks for its device: listed read-write in fstab, then seen
    /// read-write earlier, then read-write now. Stable once a mount was seen writable, so
    /// a device going read-only keeps its subject.
    fn rank(&self, s: &MountState) -> u8 {
        if s.fstab_rw == Some(true) {
            3
        } else if self.was_rw.contains(&s.mount) {
            2
        } else {
            u8::from(!s.ro)
        }
    }

    /// One mount per device (bind mounts share their device's read-only state).
    fn judged<'a>(&self, states: &'a [MountState]) -> Vec<&'a MountState> {
        let mut out: Vec<&MountState> = Vec::new();
        for s in states {
            let same = (!s.device.is_empty())
                .then(|| {
                    out.iter()
                        .position(|o| o.device == s.device && o.fstype == s.fstype)
                })
                .flatten();
            match same {
                Some(i) if self.rank(s) > self.rank(out[i]) => out[i] = s,
                Some(_) => {}
                None => out.push(s),
            }
        }
        out
    }

    /// Feeds one sample of mount states; ext4 error counts go to `baselines`.
    pub fn feed(
        &mut self,
        engine: &mut Engine,
        baselines: &Baselines,
        cfg: &DetectConfig,
        states: &[MountState],
        out: &mut Vec<vigia_protocol::FaultEvent>,
    ) {
        let db = crate::detect::Debounce::IMMEDIATE;
        for s in self.judged(states) {
            if is_ignored(&cfg.fs_read_only.ignore_mounts, &s.mount) {
                continue;
            }
            if cfg.disk_io_errors.enabled {
                feed_fs_errors(engine, baselines, &cfg.disk_io_errors, s, out);
            }
            if !cfg.fs_read_only.enabled || s.fstab_rw == Some(false) {
                continue; // read-only in fstab: by design, whatever happened earlier
            }
            let fstab_says_rw = s.fstab_rw == Some(true) && is_disk_fs(&s.fstype);
            if self.seen.insert(s.mount.clone()) && s.ro && !fstab_says_rw {
                continue; // read-only from the start and not said otherwise: on purpose
            }
            if !s.ro && self.was_rw.insert(s.mount.clone()) && self.persist {
                baselines.put(format!("{RO_PREFIX}{}", s.mount).as_bytes(), &[1u8]);
            }
            let rw_earlier = self.was_rw.contains(&s.mount);
            if !rw_earlier && !fstab_says_rw {
                continue;
            }
            let mut label = if rw_earlier {
                "remounted read-only".to_string()
            } else if s.ro {
                format!(
                    "read-only, but /etc/fstab mounts this {} read-write",
                    s.fstype
                )
            } else {
                "read-only".to_string()
            };
            if let (true, Some(n)) = (s.ro, s.fs_errors.filter(|n| *n > 0)) {
                label.push_str(&format!("; ext4 recorded {n} errors"));
            }
            let source = if rw_earlier {
                "/proc/mounts"
            } else {
                "/proc/mounts, /etc/fstab"
            };
            let obs = Obs {
                kind: FaultKind::FsReadOnly,
                subject: &s.mount,
                source,
                unit: "state",
                label: &label,
            };
            // Evidence: 1 = read-only now, against the expected 0 = read-write.
            let value = if s.ro { 1.0 } else { 0.0 };
            out.extend(engine.flag(obs, s.ro, Severity::Critical, value, 0.0, db));
        }
    }
}

/// Feeds ext4's `errors_count` of one mount: a fault while not zero (see the module doc).
fn feed_fs_errors(
    engine: &mut Engine,
    baselines: &Baselines,
    cfg: &crate::detect::config::CounterConfig,
    s: &MountState,
    out: &mut Vec<vigia_protocol::FaultEvent>,
) {
    let Some(n) = s.fs_errors else { return };
    let subject = format!("{} (ext4 errors)", s.mount);
    let obs = Obs {
        kind: FaultKind::DiskIoErrors,
        subject: &subject,
        source: &s.fs_errors_source,
        unit: "count",
        label: "ext4 filesystem errors",
    };
    let rule = CounterRule {
        severity: Severity::Major,
        min_increase: cfg.min_increase,
        clear: CounterClear::AtBaseline,
        since: "recorded, not yet repaired by e2fsck",
    };
    feed_counter(engine, baselines, Scope::Lifetime, obs, n, rule, out);
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
