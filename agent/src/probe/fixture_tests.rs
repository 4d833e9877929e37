//! Fixture tests of every detector through the [`Detectors`] façade: the real probe code
//! reads a copy of a committed fixture tree, the test changes files between passes, and
//! the events are checked for raise, update, clear and "unsupported".
use std::path::{Path, PathBuf};

use vigia_protocol::{FaultAction, FaultEvent, FaultKind, Severity};

use super::{names, testutil, Detectors};
use crate::detect::DetectConfig;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        let ft = e.file_type().unwrap();
        if ft.is_symlink() {
            // `/dev/mapper/*` links to `../dm-0`, which need not exist in the tree.
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).unwrap(), &to).unwrap();
        } else if ft.is_dir() {
            copy_tree(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// A writable copy of a fixture tree.
fn tree(rel: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture(rel), dir.path());
    dir
}

fn set(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// Defaults, with smartctl pointed nowhere so tests never run the machine's own.
fn cfg() -> DetectConfig {
    let mut c = DetectConfig::default();
    c.disk_health.smartctl = vigia_protocol::bounded("/nonexistent/smartctl");
    c
}

fn new(root: &Path, cfg: &DetectConfig, baselines: &sled::Tree) -> Detectors {
    Detectors::new(cfg, root, baselines.clone()).unwrap()
}

/// One pass; the events of `kind` only.
fn pass(d: &mut Detectors, kind: FaultKind) -> Vec<FaultEvent> {
    let mut out = Vec::new();
    d.tick(0, &mut out);
    // As the agent does once the pass's events are in the spool.
    d.persist().unwrap();
    out.into_iter().filter(|e| e.kind == kind).collect()
}

fn passes(d: &mut Detectors, kind: FaultKind, n: usize) -> Vec<FaultEvent> {
    (0..n).flat_map(|_| pass(d, kind)).collect()
}

fn unsupported(d: &Detectors, name: &str) -> Option<String> {
    d.unsupported()
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, r)| r.clone())
}

fn summary(ev: &[FaultEvent]) -> Vec<(FaultAction, &str, Severity)> {
    ev.iter()
        .map(|e| (e.action, e.subject.as_str(), e.severity))
        .collect()
}

#[test]
fn every_detector_unsupported_on_an_empty_root() {
    let d = new(&fixture("empty"), &cfg(), &testutil::tree());
    let mut got: Vec<_> = d.unsupported().iter().map(|(n, _)| *n).collect();
    got.sort_unstable();
    let mut want = vec![
        names::DISK_SPACE,
        names::FS_READ_ONLY,
        names::DISK_IO_ERRORS,
        names::DISK_HEALTH,
        names::RAID_DEGRADED,
        names::MEMORY_PRESSURE,
        names::MEMORY_ECC,
        names::PCIE_AER,
        names::OVERHEATING,
        names::FAN_FAILURE,
        names::BATTERY_WEAR,
        names::NIC_ERRORS,
        names::NIC_LINK_LOST,
    ];
    want.sort_unstable();
    assert_eq!(got, want);
    // And a pass reads nothing: no event, no reading, never a zero.
    let mut d = d;
    let mut out = Vec::new();
    d.tick(0, &mut out);
    assert!(out.is_empty());
    assert!(d.snapshot().is_empty());
}

#[test]
fn disabled_detectors_are_neither_run_nor_unsupported() {
    let mut c = cfg();
    c.raid_degraded.enabled = false;
    c.disk_health.enabled = false;
    let d = new(&fixture("empty"), &c, &testutil::tree());
    assert!(unsupported(&d, names::RAID_DEGRADED).is_none());
    assert!(unsupported(&d, names::DISK_HEALTH).is_none());
}

#[test]
fn fs_read_only_raise_and_clear() {
    let t = tree("fs_read_only/workstation");
    let mut d = new(t.path(), &cfg(), &testutil::tree());
    assert!(unsupported(&d, names::FS_READ_ONLY).is_none());
    assert!(pass(&mut d, FaultKind::FsReadOnly).is_empty());
    let mounts = std::fs::read_to_string(t.path().join("proc/mounts")).unwrap();
    let ro = mounts.replace(
        "/dev/sda1 /home ext4 rw,relatime",
        "/dev/sda1 /home ext4 ro,relatime",
    );
    set(t.path(), "/proc/mounts", &ro);
    let ev = pass(&mut d, FaultKind::FsReadOnly);
    assert_eq!(
        summary(&ev),
        [(FaultAction::Raised, "/home", Severity::Critical)]
    );
    assert_eq!(ev[0].evidence.source.as_str(), "/proc/mounts");
    assert_eq!(ev[0].message.as_str(), "/home: remounted read-only");
    assert!(
        pass(&mut d, FaultKind::FsReadOnly).is_empty(),
        "raised once"
    );
    set(t.path(), "/proc/mounts", &mounts);
    assert_eq!(
        summary(&pass(&mut d, FaultKind::FsReadOnly)),
        [(FaultAction::Cleared, "/home", Severity::Critical)]
    );
}

#[test]
fn fs_read_only_survives_an_agent_restart_within_one_boot() {
    let t = tree("fs_read_only/workstation");
    set(
        t.path(),
        "/proc/sys/kernel/random/boot_id",
        "6c1f2a5e-boot-1\n",
    );
    let store = testutil::tree();
    let mut d = new(t.path(), &cfg(), &store);
    assert!(pass(&mut d, FaultKind::FsReadOnly).is_empty());
    drop(d);
    let mounts = std::fs::read_to_string(t.path().join("proc/mounts")).unwrap();
    let ro = mounts.replace("/dev/sda1 /home ext4 rw,", "/dev/sda1 /home ext4 ro,");
    set(t.path(), "/proc/mounts", &ro);
    let mut d = new(t.path(), &cfg(), &store);
    let ev = pass(&mut d, FaultKind::FsReadOnly);
    assert_eq!(
        summary(&ev),
        [(FaultAction::Raised, "/home", Severity::Critical)]
    );
    drop(d);
    // After a reboot, read-only at start is on purpose again.
    set(
        t.path(),
        "/proc/sys/kernel/random/boot_id",
        "0b9e77d0-boot-2\n",
    );
    let mut d = new(t.path(), &cfg(), &store);
    assert!(passes(&mut d, FaultKind::FsReadOnly, 2).is_empty());
}

#[test]
fn fs_read_only_from_the_start_is_not_a_fault() {
    let t = tree("fs_read_only/workstation");
    let mounts = std::fs::read_to_string(t.path().join("proc/mounts")).unwrap();
    set(
        t.path(),
        "/proc/mounts",
        &mounts.replace("/boot ext4 rw,", "/boot ext4 ro,"),
    );
    let mut d = new(t.path(), &cfg(), &testutil::tree());
    assert!(passes(&mut d, FaultKind::FsReadOnly, 3).is_empty());
}

#[test]
fn disk_io_errors_raise_clear_and_survive_restart() {
    let t = tree("disk_io_errors/sata");
    let store = testutil::tree();
    let mut c = cfg();
    c.disk_io_errors.clear_after = 2;
    let mut d = new(t.path(), &c, &store);
    assert!(
        pass(&mut d, FaultKind::DiskIoErrors).is_empty(),
        "first sight sets the baseline"
    );
    set(t.path(), "/sys/block/sdb/device/ioerr_cnt", "0x1e\n");
    let ev = pass(&mut d, FaultKind::DiskIoErrors);
    assert_eq!(
        summary(&ev),
        [(FaultAction::Raised, "sdb", Severity::Major)]
    );
    assert_eq!(
        (ev[0].evidence.value, ev[0].evidence.threshold),
        (30.0, 26.0)
    );
    assert_eq!(
        ev[0].evidence.source.as_str(),
        "/sys/block/sdb/device/ioerr_cnt"
    );
    let ev = passes(&mut d, FaultKind::DiskIoErrors, 2);
    assert_eq!(
        summary(&ev),
        [(FaultAction::Cleared, "sdb", Severity::Major)]
    );
    // Errors while the agent is stopped are reported at the next start.
    drop(d);
    set(t.path(), "/sys/block/sdb/device/ioerr_cnt", "0x20\n");
    let mut d = new(t.path(), &c, &store);
    let ev = pass(&mut d, FaultKind::DiskIoErrors);
    assert_eq!(
        summary(&ev),
        [(FaultAction::Raised, "sdb", Severity::Major)]
    );
    assert_eq!(
        ev[0].evidence.threshold, 30.0,
        "from the persisted baseline"
    );
}

#[test]
fn disk_io_errors_from_the_kernel_log_on_nvme() {
    let t = tree("disk_io_errors/kmsg");
    copy_tree(&fixture("disk_io_errors/nvme_only"), t.path());
    let mut d = new(t.path(), &cfg(), &testutil::tree());
    assert!(
        unsupported(&d, names::DISK_IO_ERRORS).is_none(),
        "{:?}",
        d.unsupported()
    );
    assert!(
        pass(&mut d, FaultKind::DiskIoErrors).is_empty(),
        "history since boot is the baseline"
    );
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(t.path().join("dev/kmsg"))
        .unwrap();
    writeln!(f, "3,9000,99999999,-;I/O error, dev nvme0n1, sector 8 op 0x1:(WRITE) flags 0x0 phys_seg 1 prio class 2").unwrap();
    let ev = pass(&mut d, FaultKind::DiskIoErrors);
    assert_eq!(
        summary(&ev),
        [(FaultAction::Raised, "nvme0n1 (kernel log)", Severity::Major)]
    );
    assert_eq!(ev[0].evidence.source.as_str(), "/dev/kmsg");
    assert_eq!((ev[0].evidence.value, ev[0].evidence.threshold), (4.0, 3.0));
}

#[test]
fn disk_io_errors_unsupported_on_nvme_only() {
    let d = new(
        &fixture("disk_io_errors/nvme_only"),
        &cfg(),
        &testutil::tree(),
    );
    assert!(unsupported(&d, names::DISK_IO_ERRORS)
        .unwrap()
        .contains("ioerr_cnt"));
}

fn smart_dir() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    for f in ["fake-smartctl.sh", "scan.json"] {
        std::fs::copy(fixture("disk_health").join(f), t.path().join(f)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        t.path().join("fake-smartctl.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    smart_disks(t.path(), "sda-ata-healthy.json", "nvme0-healthy.json");
    t
}

fn smart_disks(dir: &Path, sda: &str, nvme0: &str) {
    std::fs::copy(fixture("disk_health").join(sda), dir.join("sda.json")).unwrap();
    std::fs::copy(fixture("disk_health").join(nvme0), dir.join("nvme0.json")).unwrap();
}

fn smart_cfg(dir: &Path) -> DetectConfig {
    let mut c = cfg();
    c.disk_health.smartctl =
        vigia_protocol::bounded(dir.join("fake-smartctl.sh").to_str().unwrap());
    c.disk_health.every = 1;
    c.disk_health.clear_after = 2;
    c
}

#[test]
fn disk_health_raise_update_clear_and_replaced_disk() {
    let s = smart_dir();
    let store = testutil::tree();
    let mut d = new(&fixture("empty"), &smart_cfg(s.path()), &store);
    assert!(
        unsupported(&d, names::DISK_HEALTH).is_none(),
        "{:?}",
        d.unsupported()
    );
    assert!(
        pass(&mut d, FaultKind::DiskHealth).is_empty(),
        "healthy disks, baselines set"
    );
    smart_disks(s.path(), "sda-ata-rising.json", "nvme0-worn.json");
    let ev = pass(&mut d, FaultKind::DiskHealth);
    let mut got = summary(&ev);
    got.sort_by(|a, b| (a.1, a.2).cmp(&(b.1, b.2)));
    assert_eq!(
        got,
        [
            (FaultAction::Raised, "S4EWNX0R123456", Severity::Critical),
            (
                FaultAction::Raised,
                "S4EWNX0R123456 critical_warning",
                Severity::Critical
            ),
            (
                FaultAction::Raised,
                "S4EWNX0R123456 media_errors",
                Severity::Major
            ),
            (
                FaultAction::Raised,
                "S4EWNX0R123456 percentage_used",
                Severity::Major
            ),
            (
                FaultAction::Raised,
                "Z4Y7SJBD Current_Pending_Sector",
                Severity::Major
            ),
            (
                FaultAction::Raised,
                "Z4Y7SJBD Reallocated_Sector_Ct",
                Severity::Major
            ),
        ]
    );
    let realloc = ev
        .iter()
        .find(|e| e.subject.ends_with("Reallocated_Sector_Ct"))
        .unwrap();
    assert_eq!(
        (realloc.evidence.value, realloc.evidence.threshold),
        (8.0, 0.0)
    );
    assert_eq!(
        realloc.evidence.source.as_str(),
        "smartctl /dev/sda Reallocated_Sector_Ct"
    );
    smart_disks(s.path(), "sda-ata-failed.json", "nvme0-worn.json");
    let ev = pass(&mut d, FaultKind::DiskHealth);
    assert_eq!(
        summary(&ev),
        [(FaultAction::Raised, "Z4Y7SJBD", Severity::Critical)]
    );
    assert_eq!(
        ev[0].message.as_str(),
        "Z4Y7SJBD: SMART overall health failed"
    );
    // The disk is replaced: a new serial starts from its own baseline, and the old
    // serial's faults clear once it has been gone for a few passes.
    smart_disks(s.path(), "sda-ata-replaced.json", "nvme0-healthy.json");
    let ev = passes(&mut d, FaultKind::DiskHealth, 4);
    let mut got = summary(&ev);
    got.sort_by(|a, b| (a.1, a.2).cmp(&(b.1, b.2)));
    assert_eq!(
        got,
        [
            (FaultAction::Cleared, "S4EWNX0R123456", Severity::Critical),
            (
                FaultAction::Cleared,
                "S4EWNX0R123456 critical_warning",
                Severity::Critical
            ),
            (
                FaultAction::Cleared,
                "S4EWNX0R123456 media_errors",
                Severity::Major
            ),
            (
                FaultAction::Cleared,
                "S4EWNX0R123456 percentage_used",
                Severity::Major
            ),
            (FaultAction::Cleared, "Z4Y7SJBD", Severity::Critical),
            (
                FaultAction::Cleared,
                "Z4Y7SJBD Current_Pending_Sector",
                Severity::Major
            ),
            (
                FaultAction::Cleared,
                "Z4Y7SJBD Reallocated_Sector_Ct",
                Severity::Major
            ),
        ],
        "media_errors clears after clear_after (2) passes without a new rise"
    );
    assert!(d.open_faults().is_empty());
    assert!(
        !d.engine()
            .knows(FaultKind::DiskHealth, "Z4Y7SJBD Reallocated_Sector_Ct"),
        "old serial forgotten"
    );
    assert!(d
        .engine()
        .knows(FaultKind::DiskHealth, "ZA1NEW99 Reallocated_Sector_Ct"));
}

#[test]
fn disk_health_baseline_survives_restart() {
    let s = smart_dir();
    let store = testutil::tree();
    let mut d = new(&fixture("empty"), &smart_cfg(s.path()), &store);
    assert!(pass(&mut d, FaultKind::DiskHealth).is_empty());
    drop(d);
    smart_disks(s.path(), "sda-ata-rising.json", "nvme0-healthy.json");
    let mut d = new(&fixture("empty"), &smart_cfg(s.path()), &store);
    assert_eq!(
        pass(&mut d, FaultKind::DiskHealth).len(),
        2,
        "reallocated and pending rose while stopped"
    );
}

#[test]
fn disk_health_unsupported_without_smartctl_or_permission() {
    let d = new(&fixture("empty"), &cfg(), &testutil::tree());
    assert!(unsupported(&d, names::DISK_HEALTH)
        .unwrap()
        .contains("not installed"));
    let s = smart_dir();
    smart_disks(
        s.path(),
        "sda-permission-denied.json",
        "sda-permission-denied.json",
    );
    let d = new(&fixture("empty"), &smart_cfg(s.path()), &testutil::tree());
    let why = unsupported(&d, names::DISK_HEALTH).unwrap();
    assert!(why.contains("Permission denied"), "{why}");
}

#[test]
fn raid_degraded_raise_and_clear() {
    let t = tree("raid_degraded/none");
    let mut d = new(t.path(), &cfg(), &testutil::tree());
    assert!(unsupported(&d, names::RAID_DEGRADED).is_none());
    let healthy = std::fs::read_to_string(fixture("raid_degraded/degraded/proc/mdstat"))
        .unwrap()
        .replace("[3/2] [_UU]", "[3/3] [UUU]")
        .replace("[2/1] [U_]", "[2/2] [UU]");
    set(t.path(), "/proc/mdstat", &healthy);
    assert!(pass(&mut d, FaultKind::RaidDegraded).is_empty());
    std::fs::copy(
        fixture("raid_degraded/degraded/proc/mdstat"),
        t.path().join("proc/mdstat"),
    )
    .unwrap();
    assert!(
        pass(&mut d, FaultKind::RaidDegraded).is_empty(),
        "debounce: 2 passes"
    );
    let ev = pass(&mut d, FaultKind::RaidDegraded);
    assert_eq!(
        summary(&ev),
        [
            (FaultAction::Raised, "md2", Severity::Critical),
            (FaultAction::Raised, "md0", Severity::Critical)
        ]
    );
    assert_eq!((ev[0].evidence.value, ev[0].evidence.threshold), (2.0, 3.0));
    assert_eq!(
        ev[0].message.as_str(),
        "md2: raid5 degraded [_UU], 2 of 3 members up"
    );
    set(t.path(), "/proc/mdstat", &healthy);
    let ev = passes(&mut d, FaultKind::RaidDegraded, 2);
    assert_eq!(
        summary(&ev),
        [
            (FaultAction::Cleared, "md2", Severity::Critical),
            (FaultAction::Cleared, "md0", Severity::Critical)
        ]
    );
}

#[test]
fn raid_unsupported_without_mdstat() {
    let d = new(&fixture("empty"), &cfg(), &testutil::tree());
    assert!(unsupported(&d, names::RAID_DEGRADED)
        .unwrap()
        .contains("mdstat"));
}

fn meminfo(avail_kb: u64, swap_free_kb: u64, corrupted_kb: u64) -> String {
    format!(
        "MemTotal:       1000000 kB\nMemFree:          10000 kB\nMemAvailable:   {avail_kb} kB\nSwapTotal:       200000 kB\nSwapFree:        {swap_free_kb} kB\nHardwareCorrupted: {corrupted_kb} kB\n"
    )
}

#[test]
fn memory_pressure_sustained_raise_and_clear() {
    let t = tree("memory_pressure/laptop");
    let mut d = new(t.path(), &cfg(), &testutil::tree());
    assert!(unsupported(&d, names::MEMORY_PRESSURE).is_none());
    set(t.path(), "/proc/meminfo", &meminfo(40_000, 200_000, 0));
    let ev = passes(&mut d, FaultKind::MemoryPressure, 4);
    assert!(ev.is_empty(), "not sustained yet (5 passes)");
    let ev = pass(&mut d, FaultKind::MemoryPressure);
    assert_eq!(
        summary(&ev),
        [(FaultAction::Raised, "memory", Severity::Major)]
    );
    assert_eq!((ev[0].evidence.value, ev[0].evidence.threshold), (4.0, 5.0));
    assert_eq!(ev[0].evidence.unit.as_str(), "%");
    set(t.path(), "/proc/meminfo", &meminfo(65_000, 0, 0));
    let ev = passes(&mut d, FaultKind::MemoryPressure, 5);
    assert_eq!(
        summary(&ev),
        [(FaultAction::Raised, "swap", Severity::Major)],
        "6.5 % is inside the 2-point band: memory holds"
    );
    set(t.path(), "/proc/meminfo", &meminfo(500_000, 200_000, 0));
    let ev = passes(&mut d, FaultKind::MemoryPressure, 3);
    assert_eq!(
        summary(&ev),
        [
            (FaultAction::Cleared, "memory", Severity::Major),
            (FaultAction::Cleared, "swap", Severity::Major)
        ]
    );
}

#[test]
fn memory_pressure_unsupported_without_mem_available() {
    let d = new(
        &fixture("memory_pressure/old_kernel"),
        &cfg(),
        &testutil::tree(),
    );
    assert!(unsupported(&d, names::MEMORY_PRESSURE)
        .unwrap()
        .contains("MemAvailable"));
    let d = new(
        &fixture("memory_pressure/garbage"),
        &cfg(),
        &testutil::tree(),
    );
    assert!(unsupported(&d, names::MEMORY_PRESSURE)
        .unwrap()
        .contains("MemTotal"));
}

#[test]
fn memory_ecc_corrected_minor_uncorrected_critical_poisoned_critical() {
    let t = tree("memory_ecc/edac");
    let mut c = cfg();
    c.memory_ecc.clear_after = 1;
    let mut d = new(t.path(), &c, &testutil::tree());
    assert!(
        unsupported(&d, names::MEMORY_ECC).is_none(),
        "{:?}",
        d.unsupported()
    );
    assert!(pass(&mut d, FaultKind::MemoryEcc).is_empty());
    let mc0 = "/sys/devices/system/edac/mc/mc0";
    set(t.path(), &format!("{mc0}/ce_count"), "5\n");
    set(t.path(), &format!("{mc0}/ue_count"), "1\n");
    let mut ev = pass(&mut d, FaultKind::MemoryEcc);
    ev.sort_by(|a, b| a.subject.cmp(&b.subject));
    assert_eq!(
        summary(&ev),
        [
            (FaultAction::Raised, "mc0 corrected", Severity::Minor),
            (FaultAction::Raised, "mc0 uncorrected", Severity::Critical)
        ]
    );
    assert_eq!(
        ev[1].evidence.source.as_str(),
        "/sys/devices/system/edac/mc/mc0/ue_count"
    );
    let ev = pass(&mut d, FaultKind::MemoryEcc);
    assert_eq!(ev.len(), 2, "quiet for clear_after passes: both clear");
    assert!(ev.iter().all(|e| e.action == FaultAction::Cleared));
    let mut mi = std::fs::read_to_string(t.path().join("proc/meminfo")).unwrap();
    mi = mi.replace("HardwareCorrupted:     0 kB", "HardwareCorrupted:     8 kB");
    set(t.path(), "/proc/meminfo", &mi);
    let ev = pass(&mut d, FaultKind::MemoryEcc);
    assert_eq!(
        summary(&ev),
        [(FaultAction::Raised, "HardwareCorrupted", Severity::Critical)]
    );
    assert_eq!(ev[0].evidence.value, 8.0);
}

#[test]
fn memory_ecc_unsupported_without_edac() {
    let d = new(&fixture("memory_ecc/no_edac"), &cfg(), &testutil::tree());
    assert!(unsupported(&d, names::MEMORY_ECC)
        .unwrap()
        .contains("no EDAC"));
    // With /proc/meminfo but no EDAC: still listed, saying what is watched instead.
    let d = new(
        &fixture("memory_pressure/laptop"),
        &cfg(),
        &testutil::tree(),
    );
    assert!(unsupported(&d, names::MEMORY_ECC)
        .unwrap()
        .contains("only HardwareCorrupted"));
}

#[test]
fn pcie_aer_fatal_critical_correctable_minor() {
    let t = tree("pcie_aer/server");
    let mut d = new(t.path(), &cfg(), &testutil::tree());
    assert!(unsupported(&d, names::PCIE_AER).is_none());
    assert!(
        pass(&mut d, FaultKind::PcieAer).is_empty(),
        "existing counts are the baseline"
    );
    let dev = "/sys/bus/pci/devices/0000:01:00.0";
    let fatal = std::fs::read_to_string(t.path().join(&dev[1..]).join("aer_dev_fatal")).unwrap();
    set(
        t.path(),
        &format!("{dev}/aer_dev_fatal"),
        &fatal.replace("TOTAL_ERR_FATAL 2", "TOTAL_ERR_FATAL 3"),
    );
    let cor = "/sys/bus/pci/devices/0000:00:1c.0/aer_dev_correctable";
    let text = std::fs::read_to_string(t.path().join(&cor[1..])).unwrap();
    set(
        t.path(),
        cor,
        &text.replace("TOTAL_ERR_COR 4", "TOTAL_ERR_COR 9"),
    );
    let mut ev = pass(&mut d, FaultKind::PcieAer);
    ev.sort_by(|a, b| a.subject.cmp(&b.subject));
    assert_eq!(
        summary(&ev),
        [
            (
                FaultAction::Raised,
                "0000:00:1c.0 correctable",
                Severity::Minor
            ),
            (
                FaultAction::Raised,
                "0000:01:00.0 fatal",
                Severity::Critical
            )
        ]
    );
    assert_eq!(
        ev[1].evidence.source.as_str(),
        "/sys/bus/pci/devices/0000:01:00.0/aer_dev_fatal TOTAL_ERR_FATAL"
    );
    let ev = passes(&mut d, FaultKind::PcieAer, 60);
    assert_eq!(ev.len(), 2, "default clear_after: 60 quiet passes");
    assert!(ev.iter().all(|e| e.action == FaultAction::Cleared));
}

#[test]
fn pcie_aer_unsupported_without_aer() {
    let d = new(&fixture("pcie_aer/no_aer"), &cfg(), &testutil::tree());
    assert!(unsupported(&d, names::PCIE_AER)
        .unwrap()
        .contains("aer_dev"));
}

#[test]
fn overheating_near_critical_sustained_then_critical_then_clear() {
    let t = tree("overheating/desktop");
    let mut d = new(t.path(), &cfg(), &testutil::tree());
    assert!(unsupported(&d, names::OVERHEATING).is_none());
    let ev = pass(&mut d, FaultKind::Overheating);
    assert_eq!(
        summary(&ev),
        [(
            FaultAction::Raised,
            "nvme.hwmon2/Composite alarm",
            Severity::Critical
        )],
        "the chip's alarm is immediate"
    );
    let ev = passes(&mut d, FaultKind::Overheating, 2);
    assert_eq!(
        summary(&ev),
        [(FaultAction::Raised, "coretemp/Core 0", Severity::Major)],
        "97 °C within 5 °C of 100 for 3 passes"
    );
    assert_eq!(
        (ev[0].evidence.value, ev[0].evidence.threshold),
        (97.0, 95.0)
    );
    assert_eq!(ev[0].evidence.unit.as_str(), "°C");
    assert_eq!(
        ev[0].evidence.source.as_str(),
        "/sys/class/hwmon/hwmon0/temp2_input"
    );
    set(t.path(), "/sys/class/hwmon/hwmon0/temp2_input", "100000\n");
    let ev = passes(&mut d, FaultKind::Overheating, 3);
    assert_eq!(
        summary(&ev),
        [(FaultAction::Updated, "coretemp/Core 0", Severity::Critical)]
    );
    set(t.path(), "/sys/class/hwmon/hwmon0/temp2_input", "60000\n");
    set(t.path(), "/sys/class/hwmon/hwmon2/temp1_alarm", "0\n");
    let ev = passes(&mut d, FaultKind::Overheating, 3);
    assert_eq!(
        summary(&ev),
        [
            (
                FaultAction::Cleared,
                "nvme.hwmon2/Composite alarm",
                Severity::Critical
            ),
            (FaultAction::Cleared, "coretemp/Core 0", Severity::Critical)
        ]
    );
}

#[test]
fn overheating_thermal_zone_critical_trip() {
    let t = tree("overheating/desktop");
    set(
        t.path(),
        "/sys/class/thermal/thermal_zone0/temp",
        "119500\n",
    );
    let mut d = new(t.path(), &cfg(), &testutil::tree());
    let ev: Vec<_> = passes(&mut d, FaultKind::Overheating, 3)
        .into_iter()
        .filter(|e| e.subject.starts_with("thermal/"))
        .collect();
    assert_eq!(
        summary(&ev),
        [(
            FaultAction::Raised,
            "thermal/thermal_zone0:acpitz",
            Severity::Critical
        )]
    );
}

#[test]
fn overheating_unsupported_without_sensors() {
    let d = new(&fixture("overheating/odd"), &cfg(), &testutil::tree());
    assert!(unsupported(&d, names::OVERHEATING)
        .unwrap()
        .contains("no readable temperature"));
}

#[test]
fn fan_failure_stopped_or_faulted_raise_and_clear() {
    let t = tree("fan_failure/desktop");
    let mut d = new(t.path(), &cfg(), &testutil::tree());
    assert!(unsupported(&d, names::FAN_FAILURE).is_none());
    assert!(pass(&mut d, FaultKind::FanFailure).is_empty());
    let ev = pass(&mut d, FaultKind::FanFailure);
    assert_eq!(
        summary(&ev),
        [(FaultAction::Raised, "nct6775/fan2", Severity::Critical)],
        "0 rpm at full duty; fan3 has no control to judge by"
    );
    assert_eq!(
        ev[0].message.as_str(),
        "nct6775/fan2: stopped at 0 rpm, expected spinning (pwm2_enable = 0: full speed)"
    );
    assert_eq!(
        (ev[0].evidence.value, ev[0].evidence.threshold),
        (0.0, 1.0),
        "0 rpm against spinning at all, not 0 rpm vs 0 rpm"
    );
    set(t.path(), "/sys/class/hwmon/hwmon0/fan4_alarm", "1\n");
    let ev = passes(&mut d, FaultKind::FanFailure, 2);
    assert_eq!(
        summary(&ev),
        [(FaultAction::Raised, "nct6775/fan4", Severity::Critical)]
    );
    set(t.path(), "/sys/class/hwmon/hwmon0/fan2_input", "1400\n");
    set(t.path(), "/sys/class/hwmon/hwmon0/fan4_alarm", "0\n");
    let ev = passes(&mut d, FaultKind::FanFailure, 2);
    assert_eq!(
        summary(&ev),
        [
            (FaultAction::Cleared, "nct6775/fan2", Severity::Critical),
            (FaultAction::Cleared, "nct6775/fan4", Severity::Critical)
        ]
    );
}

#[test]
fn fan_stopped_by_auto_control_is_not_a_fault() {
    let mut d = new(&fixture("fan_failure/thinkpad"), &cfg(), &testutil::tree());
    assert!(passes(&mut d, FaultKind::FanFailure, 4).is_empty());
}

#[test]
fn fan_failure_unsupported_without_fans() {
    let d = new(&fixture("fan_failure/no_fans"), &cfg(), &testutil::tree());
    assert!(unsupported(&d, names::FAN_FAILURE)
        .unwrap()
        .contains("no fan"));
    assert!(unsupported(&d, names::OVERHEATING).is_none());
}

#[test]
fn battery_wear_and_dead_raise_and_clear() {
    let t = tree("battery_wear/laptop");
    let mut d = new(t.path(), &cfg(), &testutil::tree());
    assert!(unsupported(&d, names::BATTERY_WEAR).is_none());
    assert!(pass(&mut d, FaultKind::BatteryWear).is_empty());
    let ev = pass(&mut d, FaultKind::BatteryWear);
    assert_eq!(
        summary(&ev),
        [
            (FaultAction::Raised, "BAT0", Severity::Minor),
            (FaultAction::Raised, "BAT1 health", Severity::Major)
        ]
    );
    assert_eq!(
        (ev[0].evidence.value, ev[0].evidence.threshold),
        (55.0, 60.0)
    );
    assert_eq!(
        ev[0].evidence.source.as_str(),
        "/sys/class/power_supply/BAT0/energy_full"
    );
    // Batteries replaced.
    set(
        t.path(),
        "/sys/class/power_supply/BAT0/energy_full",
        "56000000\n",
    );
    set(t.path(), "/sys/class/power_supply/BAT1/health", "Good\n");
    let ev = passes(&mut d, FaultKind::BatteryWear, 2);
    assert_eq!(
        summary(&ev),
        [
            (FaultAction::Cleared, "BAT0", Severity::Minor),
            (FaultAction::Cleared, "BAT1 health", Severity::Major)
        ]
    );
}

#[test]
fn battery_unsupported_on_desktop() {
    let d = new(&fixture("battery_wear/desktop"), &cfg(), &testutil::tree());
    assert!(unsupported(&d, names::BATTERY_WEAR)
        .unwrap()
        .contains("no system battery"));
}

fn net_dev(enp_rx: u64, enp_errs: u64) -> String {
    format!(
        "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo: 100 10 0 0 0 0 0 0 100 10 0 0 0 0 0 0\nenp3s0: 1000 {enp_rx} {enp_errs} 0 0 0 0 0 1000 1000 0 0 0 0 0 0\n"
    )
}

#[test]
fn nic_errors_rate_raise_and_clear() {
    let t = tree("nic_errors/workstation");
    set(t.path(), "/proc/net/dev", &net_dev(1000, 0));
    let mut d = new(t.path(), &cfg(), &testutil::tree());
    assert!(unsupported(&d, names::NIC_ERRORS).is_none());
    assert!(
        pass(&mut d, FaultKind::NicErrors).is_empty(),
        "first pass: no interval yet"
    );
    let mut ev = Vec::new();
    let (mut rx, mut errs) = (1000, 0);
    for _ in 0..3 {
        rx += 1000;
        errs += 30; // 3 % of the interval's packets
        set(t.path(), "/proc/net/dev", &net_dev(rx, errs));
        ev.extend(pass(&mut d, FaultKind::NicErrors));
    }
    assert_eq!(
        summary(&ev),
        [(FaultAction::Raised, "enp3s0", Severity::Minor)]
    );
    assert_eq!((ev[0].evidence.value, ev[0].evidence.threshold), (3.0, 1.0));
    ev.clear();
    for _ in 0..3 {
        rx += 1000;
        set(t.path(), "/proc/net/dev", &net_dev(rx, errs));
        ev.extend(pass(&mut d, FaultKind::NicErrors));
    }
    assert_eq!(
        summary(&ev),
        [(FaultAction::Cleared, "enp3s0", Severity::Minor)]
    );
}

#[test]
fn nic_link_lost_only_after_it_was_up() {
    let t = tree("nic_link_lost/laptop");
    let mut d = new(t.path(), &cfg(), &testutil::tree());
    assert!(unsupported(&d, names::NIC_LINK_LOST).is_none());
    assert!(
        passes(&mut d, FaultKind::NicLinkLost, 3).is_empty(),
        "enp0s31f6 never had a carrier: unplugged, not lost"
    );
    set(t.path(), "/sys/class/net/wlp0s20f3/carrier", "0\n");
    assert!(
        pass(&mut d, FaultKind::NicLinkLost).is_empty(),
        "debounce: 2 passes"
    );
    let ev = pass(&mut d, FaultKind::NicLinkLost);
    assert_eq!(
        summary(&ev),
        [(FaultAction::Raised, "wlp0s20f3", Severity::Major)]
    );
    assert_eq!(
        ev[0].evidence.source.as_str(),
        "/sys/class/net/wlp0s20f3/carrier"
    );
    set(t.path(), "/sys/class/net/wlp0s20f3/carrier", "1\n");
    assert_eq!(
        summary(&pass(&mut d, FaultKind::NicLinkLost)),
        [(FaultAction::Cleared, "wlp0s20f3", Severity::Major)]
    );
    // Taken down on purpose: not a fault.
    set(t.path(), "/sys/class/net/wlp0s20f3/flags", "0x1002\n");
    set(t.path(), "/sys/class/net/wlp0s20f3/carrier", "0\n");
    assert!(passes(&mut d, FaultKind::NicLinkLost, 3).is_empty());
}

#[test]
fn nic_unsupported_without_sources() {
    let d = new(&fixture("empty"), &cfg(), &testutil::tree());
    assert!(unsupported(&d, names::NIC_ERRORS)
        .unwrap()
        .contains("net/dev"));
    assert!(unsupported(&d, names::NIC_LINK_LOST).is_some());
}

#[test]
fn permission_denied_source_is_unsupported_not_zero() {
    let t = tree("memory_pressure/laptop");
    let p = t.path().join("proc/meminfo");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000)).unwrap();
    let d = new(t.path(), &cfg(), &testutil::tree());
    // root reads through chmod 000; only an unprivileged run can check the denial.
    if std::fs::read(&p).is_err() {
        assert!(unsupported(&d, names::MEMORY_PRESSURE)
            .unwrap()
            .contains("Permission denied"));
    }
}

#[test]
fn snapshot_and_open_faults_reflect_readings() {
    let t = tree("battery_wear/laptop");
    let mut d = new(t.path(), &cfg(), &testutil::tree());
    passes(&mut d, FaultKind::BatteryWear, 2);
    let open = d.open_faults();
    assert_eq!(open.len(), 2);
    assert_eq!(open[0].severity, Severity::Major, "most severe first");
    let snap = d.snapshot();
    assert!(snap
        .iter()
        .any(|r| r.name.as_str() == "battery_wear BAT0" && r.unit.as_str() == "%"));
}

// --- Since-boot kernel counters: a zero baseline per kernel boot ---------------------

const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
const SINCE_BOOT: [FaultKind; 3] = [
    FaultKind::MemoryEcc,
    FaultKind::PcieAer,
    FaultKind::DiskIoErrors,
];

/// One pass; the events of the since-boot kinds, sorted by subject.
fn since_boot_pass(d: &mut Detectors) -> Vec<FaultEvent> {
    let mut out = Vec::new();
    d.tick(0, &mut out);
    d.persist().unwrap();
    let mut ev: Vec<_> = out
        .into_iter()
        .filter(|e| SINCE_BOOT.contains(&e.kind))
        .collect();
    ev.sort_by(|a, b| a.subject.cmp(&b.subject));
    ev
}

fn message<'a>(ev: &'a [FaultEvent], subject: &str) -> &'a str {
    ev.iter()
        .find(|e| e.subject.as_str() == subject)
        .map(|e| e.message.as_str())
        .unwrap_or_else(|| panic!("no event for {subject}: {ev:#?}"))
}

#[test]
fn uncorrected_ecc_fatal_aer_and_io_errors_counted_before_the_first_start_are_reported() {
    let t = tree("since_boot/server");
    let mut d = new(t.path(), &cfg(), &testutil::tree());
    assert!(matches!(d.boot(), super::Boot::Id(id) if id.starts_with("3f0b6c1e")));
    let ev = since_boot_pass(&mut d);
    assert_eq!(
        summary(&ev),
        [
            (
                FaultAction::Raised,
                "0000:3a:00.0 correctable",
                Severity::Minor
            ),
            (
                FaultAction::Raised,
                "0000:3a:00.0 fatal",
                Severity::Critical
            ),
            (FaultAction::Raised, "mc0 corrected", Severity::Minor),
            (FaultAction::Raised, "mc0 uncorrected", Severity::Critical),
            (FaultAction::Raised, "sda", Severity::Major),
        ],
        "sdb and mc1 count zero; sr0 has no disc, its polling errors are not watched"
    );
    assert_eq!(
        message(&ev, "mc0 uncorrected"),
        "mc0 uncorrected: 1 uncorrected ECC errors since boot"
    );
    assert_eq!(
        message(&ev, "0000:3a:00.0 fatal"),
        "0000:3a:00.0 fatal: 1 PCIe fatal errors since boot"
    );
    assert_eq!(message(&ev, "sda"), "sda: 3 I/O errors since boot");
    let sda = ev.iter().find(|e| e.subject.as_str() == "sda").unwrap();
    assert_eq!((sda.evidence.value, sda.evidence.threshold), (3.0, 0.0));
    assert!(since_boot_pass(&mut d).is_empty(), "reported once");
}

#[test]
fn since_boot_errors_are_not_reported_again_after_an_agent_restart_in_the_same_boot() {
    let t = tree("since_boot/server");
    let store = testutil::tree();
    let mut d = new(t.path(), &cfg(), &store);
    assert_eq!(since_boot_pass(&mut d).len(), 5);
    drop(d);
    let mut d = new(t.path(), &cfg(), &store);
    assert!(
        since_boot_pass(&mut d).is_empty(),
        "the same counts after a restart are not new"
    );
    assert!(
        d.open_faults()
            .iter()
            .any(|f| f.subject.as_str() == "mc0 uncorrected" && f.severity == Severity::Critical),
        "still open, not forgotten: {:?}",
        d.open_faults()
    );
    // Errors while the agent was stopped are new: only they are reported.
    drop(d);
    set(t.path(), "/sys/devices/system/edac/mc/mc0/ue_count", "2\n");
    set(t.path(), "/sys/devices/system/edac/mc/mc1/ce_count", "1\n");
    let mut d = new(t.path(), &cfg(), &store);
    let ev = since_boot_pass(&mut d);
    assert_eq!(
        summary(&ev),
        [
            (FaultAction::Updated, "mc0 uncorrected", Severity::Critical),
            (FaultAction::Raised, "mc1 corrected", Severity::Minor),
        ]
    );
    assert_eq!(
        message(&ev, "mc0 uncorrected"),
        "mc0 uncorrected: uncorrected ECC errors rose again from 1 to 2 (baseline 0)"
    );
}

#[test]
fn a_fault_whose_event_never_reached_the_spool_is_reported_again_after_a_restart() {
    // The disk was full: the pass raised its faults, but their events waited in memory
    // and the agent stopped before they were written. The counters' "open, reported"
    // state must not have been stored either, or nothing would ever report them.
    let t = tree("since_boot/server");
    let store = testutil::tree();
    let mut d = new(t.path(), &cfg(), &store);
    let mut out = Vec::new();
    d.tick(0, &mut out);
    let raised = out.iter().filter(|e| SINCE_BOOT.contains(&e.kind)).count();
    assert_eq!(raised, 5);
    assert!(
        d.baselines_staged() > 0,
        "the pass's counter state waits for the spool"
    );
    drop(d); // no persist(): the events were not queued durably
    let mut d = new(t.path(), &cfg(), &store);
    assert_eq!(
        since_boot_pass(&mut d).len(),
        5,
        "raised again, since they were never delivered"
    );
    // Persisted now: a further restart does not report them again.
    drop(d);
    let mut d = new(t.path(), &cfg(), &store);
    assert!(since_boot_pass(&mut d).is_empty());
}

#[test]
fn since_boot_errors_are_reported_again_after_a_new_boot_id() {
    let t = tree("since_boot/server");
    let store = testutil::tree();
    let mut d = new(t.path(), &cfg(), &store);
    assert_eq!(since_boot_pass(&mut d).len(), 5);
    drop(d);
    // Rebooted: the kernel counted again, from zero; a counter now at zero is quiet.
    set(t.path(), BOOT_ID, "71d5e2a0-6c3b-4f8e-b1d9-2a4c6e8f0b13\n");
    set(t.path(), "/sys/devices/system/edac/mc/mc0/ce_count", "0\n");
    let mut d = new(t.path(), &cfg(), &store);
    let ev = since_boot_pass(&mut d);
    assert_eq!(
        summary(&ev),
        [
            (
                FaultAction::Raised,
                "0000:3a:00.0 correctable",
                Severity::Minor
            ),
            (
                FaultAction::Raised,
                "0000:3a:00.0 fatal",
                Severity::Critical
            ),
            (FaultAction::Raised, "mc0 uncorrected", Severity::Critical),
            (FaultAction::Raised, "sda", Severity::Major),
        ]
    );
    assert_eq!(
        store.scan_prefix("boot/3f0b6c1e").count(),
        0,
        "the old boot's records are gone"
    );
}

#[test]
fn without_a_boot_id_since_boot_counters_take_their_first_reading_and_say_why() {
    let t = tree("since_boot/server");
    std::fs::remove_file(t.path().join(&BOOT_ID[1..])).unwrap();
    let mut d = new(t.path(), &cfg(), &testutil::tree());
    match d.boot() {
        super::Boot::Unknown(why) => assert!(why.contains("boot_id"), "{why}"),
        b => panic!("{b:?}"),
    }
    assert!(
        since_boot_pass(&mut d).is_empty(),
        "today's first-sight baseline"
    );
    set(t.path(), "/sys/devices/system/edac/mc/mc0/ue_count", "2\n");
    assert_eq!(
        summary(&since_boot_pass(&mut d)),
        [(FaultAction::Raised, "mc0 uncorrected", Severity::Critical)]
    );
    // Garbage in the file is not a boot id either.
    set(t.path(), BOOT_ID, "../../etc\n");
    let d = new(t.path(), &cfg(), &testutil::tree());
    assert!(matches!(d.boot(), super::Boot::Unknown(_)));
}

#[test]
fn kernel_log_errors_since_boot_are_reported_at_first_start_not_after_a_restart() {
    let t = tree("disk_io_errors/kmsg");
    copy_tree(&fixture("disk_io_errors/nvme_only"), t.path());
    set(t.path(), BOOT_ID, "0c6a2e4b-8d1f-4a3c-9e5b-7f0d2c4e6a81\n");
    let store = testutil::tree();
    let mut d = new(t.path(), &cfg(), &store);
    let ev = since_boot_pass(&mut d);
    assert_eq!(
        summary(&ev),
        [
            (FaultAction::Raised, "ata3 (kernel log)", Severity::Major),
            (FaultAction::Raised, "nvme0n1 (kernel log)", Severity::Major),
            (FaultAction::Raised, "sda (kernel log)", Severity::Major),
            (FaultAction::Raised, "sda1 (kernel log)", Severity::Major),
        ]
    );
    assert_eq!(
        message(&ev, "nvme0n1 (kernel log)"),
        "nvme0n1 (kernel log): 3 I/O errors since boot"
    );
    drop(d);
    let mut d = new(t.path(), &cfg(), &store);
    assert!(
        passes(&mut d, FaultKind::DiskIoErrors, 2).is_empty(),
        "the ring buffer read again holds nothing new"
    );
}

// --- Read-only filesystems: fstab and the state earlier in this boot -------------------

fn ro_events(d: &mut Detectors) -> Vec<FaultEvent> {
    let mut out = Vec::new();
    d.tick(0, &mut out);
    d.persist().unwrap();
    out.into_iter()
        .filter(|e| {
            e.kind == FaultKind::FsReadOnly
                || (e.kind == FaultKind::DiskIoErrors && e.subject.ends_with("(ext4 errors)"))
        })
        .collect()
}

#[test]
fn root_already_read_only_at_start_while_fstab_mounts_it_read_write_is_reported() {
    let t = tree("fs_read_only/ro_root_at_start");
    let mut d = new(t.path(), &cfg(), &testutil::tree());
    let ev = ro_events(&mut d);
    assert_eq!(
        summary(&ev),
        [
            (FaultAction::Raised, "/ (ext4 errors)", Severity::Major),
            (FaultAction::Raised, "/", Severity::Critical),
        ],
        "/mnt/archive is ro in fstab and /mnt/usb noauto: by design"
    );
    assert_eq!(
        ev[1].message.as_str(),
        "/: read-only, but /etc/fstab mounts this ext4 read-write; ext4 recorded 3 errors"
    );
    assert_eq!(ev[1].evidence.source.as_str(), "/proc/mounts, /etc/fstab");
    assert_eq!(
        ev[0].message.as_str(),
        "/ (ext4 errors): 3 ext4 filesystem errors recorded, not yet repaired by e2fsck"
    );
    assert_eq!(
        ev[0].evidence.source.as_str(),
        "/sys/fs/ext4/dm-0/errors_count",
        "found through the /dev/mapper symlink"
    );
    assert!(ro_events(&mut d).is_empty(), "raised once");
    // A mount point with a space, read-write in fstab, read-only at the next start.
    let mounts = std::fs::read_to_string(t.path().join("proc/mounts")).unwrap();
    set(
        t.path(),
        "/proc/mounts",
        &mounts.replace(
            "/media/backup\\040disk ext4 rw,",
            "/media/backup\\040disk ext4 ro,",
        ),
    );
    let mut d = new(t.path(), &cfg(), &testutil::tree());
    let ev: Vec<_> = ro_events(&mut d)
        .into_iter()
        .filter(|e| e.kind == FaultKind::FsReadOnly)
        .collect();
    assert_eq!(
        summary(&ev),
        [
            (FaultAction::Raised, "/", Severity::Critical),
            (
                FaultAction::Raised,
                "/media/backup disk",
                Severity::Critical
            ),
        ]
    );
    // e2fsck repaired the root and it is writable again: all clear.
    set(
        t.path(),
        "/proc/mounts",
        &mounts.replace("/ ext4 ro,", "/ ext4 rw,"),
    );
    set(t.path(), "/sys/fs/ext4/dm-0/errors_count", "0\n");
    let mut d2 = new(t.path(), &cfg(), &testutil::tree());
    assert!(ro_events(&mut d2).is_empty());
    let ev = ro_events(&mut d);
    let mut got = summary(&ev);
    got.sort_by(|a, b| a.1.cmp(b.1));
    assert_eq!(
        got,
        [
            (FaultAction::Cleared, "/", Severity::Critical),
            (FaultAction::Cleared, "/ (ext4 errors)", Severity::Major),
            (
                FaultAction::Cleared,
                "/media/backup disk",
                Severity::Critical
            ),
        ]
    );
}

#[test]
fn ext4_errors_rising_update_the_fault_and_a_clean_fsck_clears_it() {
    let t = tree("fs_read_only/ro_root_at_start");
    let store = testutil::tree();
    let mut d = new(t.path(), &cfg(), &store);
    assert_eq!(ro_events(&mut d).len(), 2);
    drop(d);
    // Restarted: the count is the same, not reported again; then it rises.
    let mut d = new(t.path(), &cfg(), &store);
    let ev: Vec<_> = ro_events(&mut d)
        .into_iter()
        .filter(|e| e.kind == FaultKind::DiskIoErrors)
        .collect();
    assert!(ev.is_empty(), "{ev:#?}");
    set(t.path(), "/sys/fs/ext4/dm-0/errors_count", "5\n");
    let ev = ro_events(&mut d);
    assert_eq!(
        summary(&ev),
        [(FaultAction::Updated, "/ (ext4 errors)", Severity::Major)]
    );
    for _ in 0..70 {
        assert!(ro_events(&mut d).is_empty(), "steady errors stay a fault");
    }
    set(t.path(), "/sys/fs/ext4/dm-0/errors_count", "0\n");
    let ev = ro_events(&mut d);
    assert_eq!(
        summary(&ev),
        [(FaultAction::Cleared, "/ (ext4 errors)", Severity::Major)]
    );
    assert_eq!(
        ev[0].message.as_str(),
        "/ (ext4 errors): ext4 filesystem errors back to 0"
    );
}

#[test]
fn read_only_by_design_mounts_are_not_faults() {
    // A live USB (squashfs, iso9660, an overlay root, a disk mounted read-only by hand),
    // Silverblue (composefs root, read-only /sysroot), a Raspberry Pi with an overlay
    // root and `ro` in fstab for its boot partition.
    for case in ["live_usb", "silverblue", "overlayroot"] {
        let t = tree(&format!("fs_read_only/{case}"));
        let mut d = new(t.path(), &cfg(), &testutil::tree());
        assert!(unsupported(&d, names::FS_READ_ONLY).is_none(), "{case}");
        for _ in 0..3 {
            let ev = ro_events(&mut d);
            assert!(ev.is_empty(), "{case}: {ev:#?}");
        }
    }
    // `ro` in fstab stays by design even after someone remounted it read-write.
    let t = tree("fs_read_only/ro_root_at_start");
    let mut d = new(t.path(), &cfg(), &testutil::tree());
    ro_events(&mut d);
    let mounts = std::fs::read_to_string(t.path().join("proc/mounts")).unwrap();
    set(
        t.path(),
        "/proc/mounts",
        &mounts.replace("/mnt/archive ext4 ro,", "/mnt/archive ext4 rw,"),
    );
    assert!(ro_events(&mut d).is_empty());
    set(t.path(), "/proc/mounts", &mounts);
    assert!(ro_events(&mut d).is_empty());
}

#[test]
fn silverblue_btrfs_going_read_only_is_reported_under_its_fstab_mount_point() {
    let t = tree("fs_read_only/silverblue");
    let mut d = new(t.path(), &cfg(), &testutil::tree());
    assert!(ro_events(&mut d).is_empty());
    // The kernel forces the btrfs read-only: every bind mount of it shows `ro`.
    let mounts = std::fs::read_to_string(t.path().join("proc/mounts")).unwrap();
    set(
        t.path(),
        "/proc/mounts",
        &mounts.replace(" btrfs rw,", " btrfs ro,"),
    );
    let ev = ro_events(&mut d);
    assert_eq!(
        summary(&ev),
        [(FaultAction::Raised, "/var", Severity::Critical)],
        "one fault for the device, not one per bind mount"
    );
    assert_eq!(ev[0].message.as_str(), "/var: remounted read-only");
}

#[test]
fn fstab_parsing_comments_escapes_defaults_and_last_option_wins() {
    let f = super::disk::parse_fstab(
        "# comment\n\n  \tUUID=1 / ext4 errors=remount-ro 0 1\nLABEL=x /mnt/a\\040b/ xfs defaults,ro 0 2\n/dev/sdb1 /mnt/c ext4 ro,rw\n/dev/sdc1 none swap sw 0 0\nproc /proc proc\n/dev/sdd1 /mnt/d vfat noauto,user\n",
    );
    let got: Vec<_> = f
        .iter()
        .map(|e| (e.mount.as_str(), e.fstype.as_str(), e.read_only, e.noauto))
        .collect();
    assert_eq!(
        got,
        [
            ("/", "ext4", false, false),
            ("/mnt/a b", "xfs", true, false),
            ("/mnt/c", "ext4", false, false),
            ("/proc", "proc", false, false),
            ("/mnt/d", "vfat", false, true),
        ]
    );
}

// --- SMART lifetime counters ------------------------------------------------------------

#[test]
fn smart_pending_sectors_non_zero_at_first_sight_are_reported() {
    let s = smart_dir();
    smart_disks(s.path(), "sda-ata-rising.json", "nvme0-healthy.json");
    let store = testutil::tree();
    let mut d = new(&fixture("empty"), &smart_cfg(s.path()), &store);
    let ev = pass(&mut d, FaultKind::DiskHealth);
    assert_eq!(
        summary(&ev),
        [(
            FaultAction::Raised,
            "Z4Y7SJBD Current_Pending_Sector",
            Severity::Major
        )],
        "reallocated 8 on first sight is the baseline, not a fault"
    );
    assert_eq!(
        ev[0].message.as_str(),
        "Z4Y7SJBD Current_Pending_Sector: 2 sectors pending reallocation (0 on a healthy disk)"
    );
    for _ in 0..5 {
        assert!(
            pass(&mut d, FaultKind::DiskHealth).is_empty(),
            "steady: still open, not repeated"
        );
    }
    assert_eq!(d.open_faults().len(), 1);
    drop(d);
    let mut d = new(&fixture("empty"), &smart_cfg(s.path()), &store);
    assert!(
        pass(&mut d, FaultKind::DiskHealth).is_empty(),
        "not reported again after a restart"
    );
    smart_disks(s.path(), "sda-ata-healthy.json", "nvme0-healthy.json");
    let ev = pass(&mut d, FaultKind::DiskHealth);
    let cleared: Vec<_> = summary(&ev)
        .into_iter()
        .filter(|e| e.1 == "Z4Y7SJBD Current_Pending_Sector")
        .collect();
    assert_eq!(
        cleared,
        [(
            FaultAction::Cleared,
            "Z4Y7SJBD Current_Pending_Sector",
            Severity::Major
        )],
        "the sectors were remapped or rewritten"
    );
}

#[test]
fn smart_reallocated_rising_is_reported_stable_is_not() {
    let s = smart_dir();
    smart_disks(s.path(), "sda-ata-rising.json", "nvme0-healthy.json");
    let mut d = new(&fixture("empty"), &smart_cfg(s.path()), &testutil::tree());
    pass(&mut d, FaultKind::DiskHealth);
    let realloc = |ev: Vec<FaultEvent>| -> Vec<FaultEvent> {
        ev.into_iter()
            .filter(|e| e.subject.ends_with("Reallocated_Sector_Ct"))
            .collect()
    };
    assert!(
        realloc(passes(&mut d, FaultKind::DiskHealth, 3)).is_empty(),
        "stable at 8: not a fault"
    );
    smart_disks(s.path(), "sda-ata-reallocating.json", "nvme0-healthy.json");
    let ev = realloc(pass(&mut d, FaultKind::DiskHealth));
    assert_eq!(
        summary(&ev),
        [(
            FaultAction::Raised,
            "Z4Y7SJBD Reallocated_Sector_Ct",
            Severity::Major
        )]
    );
    assert_eq!(
        ev[0].message.as_str(),
        "Z4Y7SJBD Reallocated_Sector_Ct: reallocated sectors rose from 8 to 16"
    );
    assert_eq!(
        (ev[0].evidence.value, ev[0].evidence.threshold),
        (16.0, 8.0)
    );
}

// --- Evidence that reads as evidence ----------------------------------------------------

#[test]
fn fan_stopped_evidence_says_what_was_expected() {
    let t = tree("fan_failure/desktop");
    set(t.path(), "/sys/class/hwmon/hwmon0/fan1_min", "600\n");
    set(t.path(), "/sys/class/hwmon/hwmon0/fan1_input", "0\n");
    let mut d = new(t.path(), &cfg(), &testutil::tree());
    let mut ev = passes(&mut d, FaultKind::FanFailure, 2);
    ev.sort_by(|a, b| a.subject.cmp(&b.subject));
    let got: Vec<_> = ev
        .iter()
        .map(|e| {
            (
                e.message.as_str(),
                e.evidence.value,
                e.evidence.threshold,
                e.evidence.unit.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "nct6775/fan1: stopped at 0 rpm, expected at least 600 rpm (fan1_min)",
                0.0,
                600.0,
                "rpm"
            ),
            (
                "nct6775/fan2: stopped at 0 rpm, expected spinning (pwm2_enable = 0: full speed)",
                0.0,
                1.0,
                "rpm"
            ),
        ]
    );
    set(t.path(), "/sys/class/hwmon/hwmon0/fan1_input", "1150\n");
    let ev = passes(&mut d, FaultKind::FanFailure, 2);
    assert_eq!(
        ev[0].message.as_str(),
        "nct6775/fan1: no longer stopped or faulted, now 1150 rpm"
    );
}

#[test]
fn threshold_evidence_names_the_level_and_its_unit() {
    let t = tree("memory_pressure/laptop");
    set(t.path(), "/proc/meminfo", &meminfo(40_000, 200_000, 8));
    let mut c = cfg();
    c.memory_pressure.raise_after = 1;
    let mut d = new(t.path(), &c, &testutil::tree());
    let mut out = Vec::new();
    d.tick(0, &mut out);
    let msgs: Vec<_> = out.iter().map(|e| e.message.as_str()).collect();
    assert!(
        msgs.contains(&"memory: available 4 %, major at or below 5 %"),
        "{msgs:?}"
    );
    assert!(
        msgs.contains(&"HardwareCorrupted: 8 kB of memory poisoned after uncorrectable errors"),
        "{msgs:?}"
    );
}

/// Runs every probe once against this machine's `/` (run with `--nocapture` to see which
/// are supported here). What it can check everywhere: a readable source is never listed
/// as unsupported, reasons are never empty, and readings are plausible, never invented.
#[test]
fn this_machine() {
    let mut d = new(Path::new("/"), &cfg(), &testutil::tree());
    for (name, why) in d.unsupported() {
        println!("unsupported here: {name}: {why}");
        assert!(!why.is_empty());
    }
    let s = d.read_machine();
    if std::fs::read_to_string("/proc/mounts").is_ok() {
        assert!(unsupported(&d, names::DISK_SPACE).is_none());
        for u in s.disk.as_deref().unwrap_or_default() {
            println!(
                "disk {}: {:.1} % used, inodes {:?}",
                u.mount,
                u.used_pct().unwrap_or(f64::NAN),
                u.inodes_used_pct()
            );
            assert!(u.avail_bytes <= u.total_bytes);
        }
    }
    if let Some(m) = &s.memory {
        println!("memory: {m:?}");
        assert!(m.total_kb > 0);
    }
    for t in s.temps.as_deref().unwrap_or_default() {
        println!("temp {}: {} °C (crit {:?})", t.subject, t.celsius, t.crit);
    }
    for f in s.fans.as_deref().unwrap_or_default() {
        println!("fan {}: {:?} rpm", f.subject, f.rpm);
    }
    for n in s.nics.as_deref().unwrap_or_default() {
        println!("nic {}: {:?}", n.iface, n.counters());
    }
    for l in s.links.as_deref().unwrap_or_default() {
        println!("link {l:?}");
    }
    println!(
        "io_errors {:?}\nraid {:?}\necc {:?}\naer {:?}\nbatteries {:?}",
        s.io_errors, s.raid, s.ecc, s.aer, s.batteries
    );
    let mut out = Vec::new();
    d.feed(&s, 0, &mut out);
    println!("events on the first pass: {out:?}");
}
