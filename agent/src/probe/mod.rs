//! Probes: read this machine (or a fixture tree, or a replay file) and feed the detection
//! engine. [`Detectors`] is the façade the agent's loop calls once per interval.
//!
//! Each probe module keeps reading apart from parsing: `read_*` takes the root directory
//! and does the I/O, `parse_*` takes text and is tested on committed captures of real
//! files (`agent/fixtures/`). A probe whose source cannot be read at start-up is listed in
//! [`Detectors::unsupported`] once and not run; it never reports a zero. The trade-off:
//! a source that appears later (a module loaded after start) is only picked up at the
//! next agent start.
//!
//! Readings of one pass are collected into a [`Sample`] (the same type a replay line
//! deserializes into), then fed to the engine: real and replayed readings share one path.
//!
//! The kernel's boot id ([`Boot`], `/proc/sys/kernel/random/boot_id` under the root) keys
//! what holds for one boot only: the zero baselines of since-boot counters
//! ([`baseline::Scope::Boot`]) and the mounts seen read-write ([`disk::RoTracker`]).
//! Without it both fall back to what the agent sees itself, and [`Detectors::boot`] and a
//! warning at start say why.
use std::path::{Path, PathBuf};

use vigia_protocol::{FaultEvent, FaultKind, OpenFault, Reading};

use crate::detect::{DetectConfig, Engine};

pub mod baseline;
pub mod battery;
pub mod counters;
pub mod disk;
mod error;
pub mod hwmon;
pub mod kmsg;
pub mod memory;
pub mod net;
pub mod raid;
pub mod replay;
pub mod sample;
pub mod smart;
pub mod sysfs;

pub use baseline::Baselines;
pub use battery::Battery;
pub use counters::{AerDevice, EdacMc, IoErrors};
pub use disk::{DiskUsage, MountState};
pub use error::ProbeError;
pub use hwmon::{FanReading, TempReading};
pub use memory::MemInfo;
pub use net::{Link, Nic};
pub use raid::RaidArray;
pub use replay::Replay;
pub use sample::Sample;
pub use smart::{SmartDisk, SmartRunner};

use sysfs::Root;

/// Detector names as [`Detectors::unsupported`] reports them (the fault kinds' wire
/// names; disk space and inodes share one probe, reported as `disk_space`).
pub mod names {
    /// Disk space and inodes.
    pub const DISK_SPACE: &str = "disk_space";
    /// Read-only remounts.
    pub const FS_READ_ONLY: &str = "fs_read_only";
    /// I/O error counters.
    pub const DISK_IO_ERRORS: &str = "disk_io_errors";
    /// SMART / NVMe.
    pub const DISK_HEALTH: &str = "disk_health";
    /// md RAID.
    pub const RAID_DEGRADED: &str = "raid_degraded";
    /// Memory pressure.
    pub const MEMORY_PRESSURE: &str = "memory_pressure";
    /// ECC.
    pub const MEMORY_ECC: &str = "memory_ecc";
    /// PCIe AER.
    pub const PCIE_AER: &str = "pcie_aer";
    /// Temperatures.
    pub const OVERHEATING: &str = "overheating";
    /// Fans.
    pub const FAN_FAILURE: &str = "fan_failure";
    /// Batteries.
    pub const BATTERY_WEAR: &str = "battery_wear";
    /// NIC error rate.
    pub const NIC_ERRORS: &str = "nic_errors";
    /// NIC carrier.
    pub const NIC_LINK_LOST: &str = "nic_link_lost";
}

/// The kernel boot the agent runs in, as since-boot counters and the remount detector
/// need it (`/proc/sys/kernel/random/boot_id`, read under the probes' root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// The boot id.
    Id(String),
    /// Why it is not known; since-boot counters then take their first reading as the
    /// baseline, so errors counted before the agent started are not reported.
    Unknown(String),
}

/// Reads the boot id under `root`. Its value is a UUID; anything else (empty, too long,
/// odd characters) is refused rather than used as a key.
pub fn read_boot_id(root: &Root) -> Boot {
    let path = root.path("/proc/sys/kernel/random/boot_id");
    match sysfs::read(&path) {
        Ok(text) => {
            let id = text.trim();
            let ok = !id.is_empty()
                && id.len() <= 64
                && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if ok {
                Boot::Id(id.to_string())
            } else {
                Boot::Unknown(format!(
                    "{} does not hold a boot id",
                    sysfs::shown(root, &path)
                ))
            }
        }
        Err(e) => Boot::Unknown(format!("cannot read {}: {e}", sysfs::shown(root, &path))),
    }
}

/// All detectors of one agent: probes, engine, baselines.
pub struct Detectors {
    cfg: DetectConfig,
    boot: Boot,
    root: Root,
    baselines: Baselines,
    engine: Box<Engine>,
    unsupported: Vec<(&'static str, String)>,
    replay: Option<Replay>,
    on: Enabled,
    smart: Option<SmartRunner>,
    kmsg: Option<kmsg::KernelLog>,
    passes: u64,
    ro: disk::RoTracker,
    net: net::NetTracker,
    failing: Vec<&'static str>,
    overflow_told: [bool; FaultKind::ALL.len()],
}

impl std::fmt::Debug for Detectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detectors")
            .field("root", &self.root.dir())
            .field("replay", &self.replay.is_some())
            .field("unsupported", &self.unsupported)
            .finish()
    }
}

/// Which probes run.
#[derive(Debug, Clone, Copy, Default)]
struct Enabled {
    disk: bool,
    mounts: bool,
    io_errors: bool,
    raid: bool,
    memory: bool,
    ecc: bool,
    aer: bool,
    temps: bool,
    fans: bool,
    batteries: bool,
    nics: bool,
    links: bool,
}

impl Detectors {
    /// `root` is the filesystem root probes read (`/` in production, a fixture tree in
    /// tests). `baselines` persists counter baselines (SMART, ECC, I/O errors, AER).
    pub fn new(cfg: &DetectConfig, root: &Path, baselines: sled::Tree) -> Result<Self, ProbeError> {
        cfg.validate()?;
        let replay = match &cfg.replay {
            Some(p) => Some(Replay::open(Path::new(p.as_str()))?),
            None => None,
        };
        let root = Root::new(root);
        let boot = if replay.is_some() {
            Boot::Unknown("samples are replayed, not read from a kernel".into())
        } else {
            read_boot_id(&root)
        };
        let boot_id = match &boot {
            Boot::Id(id) => Some(id.as_str()),
            Boot::Unknown(why) => {
                if replay.is_none() {
                    tracing::warn!(
                        reason = %why,
                        "no kernel boot id: ECC, AER and I/O errors counted before the agent started are not reported, and read-only remounts are judged by /etc/fstab and what this run saw"
                    );
                }
                None
            }
        };
        let mut d = Self {
            cfg: cfg.clone(),
            baselines: Baselines::new(baselines, boot_id),
            boot: boot.clone(),
            root,
            engine: Box::new(Engine::new()),
            unsupported: Vec::new(),
            replay,
            on: Enabled::default(),
            smart: None,
            kmsg: None,
            passes: 0,
            ro: disk::RoTracker::default(),
            net: net::NetTracker::default(),
            failing: Vec::new(),
            overflow_told: [false; FaultKind::ALL.len()],
        };
        if d.replay.is_none() {
            d.discover();
            // Without a boot id (not Linux, or a fixture tree without one) the remount
            // detector still works, from /etc/fstab and what it sees since the agent started.
            if let Boot::Id(id) = &boot {
                d.ro = disk::RoTracker::persistent(&d.baselines, id);
            }
        }
        Ok(d)
    }

    /// The kernel boot since-boot counters are counted in, or why it is unknown.
    pub fn boot(&self) -> &Boot {
        &self.boot
    }

    /// Tries every enabled probe once; those that cannot read their source are listed
    /// as unsupported and not run.
    fn discover(&mut self) {
        let cfg = self.cfg.clone();
        let root = self.root.clone();
        let mut unsupported: Vec<(&'static str, String)> = Vec::new();
        let mut check = |name: &'static str, wanted: bool, r: Result<(), String>| -> bool {
            match (wanted, r) {
                (false, _) => false,
                (true, Ok(())) => true,
                (true, Err(e)) => {
                    unsupported.push((name, e));
                    false
                }
            }
        };
        let on = &mut self.on;
        let mounts = disk::read_mounts(&root)
            .map(|_| ())
            .map_err(|e| e.to_string());
        on.disk = check(
            names::DISK_SPACE,
            cfg.disk_space.enabled || cfg.disk_inodes.enabled,
            mounts.clone(),
        );
        on.mounts = check(names::FS_READ_ONLY, cfg.fs_read_only.enabled, mounts);
        if cfg.disk_io_errors.enabled {
            let sysfs = counters::read_io_errors(&root).map(|_| ());
            let log = kmsg::KernelLog::open(&root);
            let r = match (&sysfs, &log) {
                (Ok(()), Ok(_)) => Ok(()),
                (Err(e), Ok(_)) => {
                    tracing::debug!(error = %e, "no ioerr_cnt; I/O errors come from the kernel log only");
                    Ok(())
                }
                (Ok(()), Err(e)) => Err(format!("{e}; only ioerr_cnt is watched")),
                (Err(a), Err(b)) => Err(format!("{a}; {b}")),
            };
            on.io_errors = sysfs.is_ok();
            self.kmsg = log.ok();
            check(names::DISK_IO_ERRORS, true, r);
        }
        on.raid = check(
            names::RAID_DEGRADED,
            cfg.raid_degraded.enabled,
            raid::read_mdstat(&root)
                .map(|_| ())
                .map_err(|e| e.to_string()),
        );
        let mem = memory::read_meminfo(&root);
        let mem_ok = mem.as_ref().map(|_| ()).map_err(|e| e.to_string());
        let available = match &mem {
            Ok(m) if m.available_kb.is_none() => {
                Err("/proc/meminfo has no MemAvailable (kernel older than 3.14)".to_string())
            }
            _ => mem_ok.clone(),
        };
        let pressure = check(
            names::MEMORY_PRESSURE,
            cfg.memory_pressure.enabled,
            available,
        );
        let corrupted = mem
            .as_ref()
            .is_ok_and(|m| m.hardware_corrupted_kb.is_some())
            && cfg.memory_ecc.enabled;
        let edac = counters::read_edac(&root)
            .map(|_| ())
            .map_err(|e| e.to_string());
        on.ecc = match (&edac, corrupted) {
            (Err(e), true) => check(
                names::MEMORY_ECC,
                cfg.memory_ecc.enabled,
                Err(format!(
                    "{e}; only HardwareCorrupted in /proc/meminfo is watched"
                )),
            ),
            _ => check(names::MEMORY_ECC, cfg.memory_ecc.enabled, edac.clone()),
        };
        on.memory = pressure || corrupted;
        on.aer = check(
            names::PCIE_AER,
            cfg.pcie_aer.enabled,
            counters::read_aer(&root)
                .map(|_| ())
                .map_err(|e| e.to_string()),
        );
        let sensors = hwmon::read(&root);
        let temps = match &sensors {
            Ok((t, _)) if t.is_empty() => Err(
                "no readable temperature sensor in /sys/class/hwmon or /sys/class/thermal".into(),
            ),
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
        let fans = match &sensors {
            Ok((_, f)) if f.is_empty() => Err("no fan sensor (hwmon fan*_input)".into()),
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
        on.temps = check(names::OVERHEATING, cfg.overheating.enabled, temps);
        on.fans = check(names::FAN_FAILURE, cfg.fan_failure.enabled, fans);
        on.batteries = check(
            names::BATTERY_WEAR,
            cfg.battery_wear.enabled,
            battery::read(&root).map(|_| ()).map_err(|e| e.to_string()),
        );
        on.nics = check(
            names::NIC_ERRORS,
            cfg.nic_errors.enabled,
            net::read_net_dev(&root)
                .map(|_| ())
                .map_err(|e| e.to_string()),
        );
        let links = match net::read_links(&root) {
            Ok(l) if l.is_empty() => Err("no physical network interface in /sys/class/net".into()),
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
        on.links = check(names::NIC_LINK_LOST, cfg.nic_link_lost.enabled, links);
        if cfg.disk_health.enabled {
            let timeout = std::time::Duration::from_secs(u64::from(cfg.disk_health.timeout_secs));
            let runner = SmartRunner::new(&cfg.disk_health.smartctl, timeout).and_then(|r| {
                let (disks, failed) = r.read_all()?;
                if disks.is_empty() {
                    let reason = match failed.first() {
                        Some((dev, msg)) => format!("cannot read {dev}: {msg}"),
                        None => "smartctl --scan found no disk".into(),
                    };
                    return Err(ProbeError::Unusable {
                        what: r.program().display().to_string(),
                        reason,
                    });
                }
                Ok(r)
            });
            match runner {
                Ok(r) => self.smart = Some(r),
                Err(e) => unsupported.push((names::DISK_HEALTH, e.to_string())),
            }
        }
        self.unsupported = unsupported;
    }

    /// Probes that cannot read their source: (detector name, reason). The caller logs
    /// them once.
    pub fn unsupported(&self) -> &[(&'static str, String)] {
        &self.unsupported
    }

    /// One sampling pass at `now` (ms since the Unix epoch): reads every enabled probe,
    /// feeds the engine, pushes fault transitions (raised/updated/cleared) into `out`.
    pub fn tick(&mut self, now: u64, out: &mut Vec<FaultEvent>) {
        let sample = match self.replay.as_mut() {
            Some(r) => r.next_sample().clone(),
            None => self.read_machine(),
        };
        self.feed(&sample, now, out);
    }

    /// Reads every enabled probe from the machine.
    pub fn read_machine(&mut self) -> Sample {
        let mut s = Sample::default();
        let root = self.root.clone();
        let on = self.on;
        if on.disk || on.mounts {
            let r = disk::read_mounts(&root);
            if let Some(m) = self.check(names::DISK_SPACE, r) {
                if on.disk {
                    s.disk = Some(disk::read_usage(&root, &m));
                }
                if on.mounts {
                    let fstab = disk::read_fstab(&root);
                    s.mounts = Some(disk::mount_states(&root, &m, fstab.as_deref()));
                }
            }
        }
        if on.io_errors {
            s.io_errors = self.check(names::DISK_IO_ERRORS, counters::read_io_errors(&root));
        }
        if let Some(log) = self.kmsg.as_mut() {
            let r = log.read();
            if let Some(mut v) = self.check(names::DISK_IO_ERRORS, r) {
                s.io_errors.get_or_insert_with(Vec::new).append(&mut v);
            }
        }
        if on.raid {
            s.raid = self.check(names::RAID_DEGRADED, raid::read_mdstat(&root));
        }
        if on.memory {
            s.memory = self.check(names::MEMORY_PRESSURE, memory::read_meminfo(&root));
        }
        if on.ecc {
            s.ecc = self.check(names::MEMORY_ECC, counters::read_edac(&root));
        }
        if on.aer {
            s.aer = self.check(names::PCIE_AER, counters::read_aer(&root));
        }
        if on.temps || on.fans {
            if let Some((t, f)) = self.check(names::OVERHEATING, hwmon::read(&root)) {
                s.temps = on.temps.then_some(t);
                s.fans = on.fans.then_some(f);
            }
        }
        if on.batteries {
            s.batteries = self.check(names::BATTERY_WEAR, battery::read(&root));
        }
        if on.nics {
            s.nics = self.check(names::NIC_ERRORS, net::read_net_dev(&root));
        }
        if on.links {
            s.links = self.check(names::NIC_LINK_LOST, net::read_links(&root));
        }
        let every = u64::from(self.cfg.disk_health.every.max(1));
        if self.passes.is_multiple_of(every) {
            if let Some(r) = self.smart.clone() {
                s.smart = self.check(names::DISK_HEALTH, r.read_all()).map(|(disks, failed)| {
                    for (dev, msg) in failed {
                        tracing::debug!(device = %dev, error = %msg, "smartctl could not read a disk");
                    }
                    disks
                });
            }
        }
        self.passes += 1;
        s
    }

    fn check<T>(&mut self, name: &'static str, r: Result<T, ProbeError>) -> Option<T> {
        match r {
            Ok(v) => {
                if let Some(i) = self.failing.iter().position(|n| *n == name) {
                    tracing::info!(detector = name, "probe reads again");
                    self.failing.swap_remove(i);
                }
                Some(v)
            }
            Err(e) => {
                if !self.failing.contains(&name) {
                    tracing::warn!(detector = name, error = %e, "probe failed; its faults are held until it reads again");
                    self.failing.push(name);
                }
                None
            }
        }
    }

    /// Feeds one sample (from the machine or a replay) to the engine.
    pub fn feed(&mut self, s: &Sample, _now: u64, out: &mut Vec<FaultEvent>) {
        let Self {
            cfg,
            baselines,
            engine,
            ro,
            net,
            overflow_told,
            on,
            kmsg,
            ..
        } = self;
        let engine = &mut **engine;
        engine.begin_pass();
        let mut gone = Vec::new();
        let mut end =
            |engine: &mut Engine, kind: FaultKind| engine.end_pass(kind, &mut |e| gone.push(e));
        if let Some(v) = &s.disk {
            disk::feed_usage(engine, cfg, v, out);
            end(engine, FaultKind::DiskSpace);
            end(engine, FaultKind::DiskInodes);
        }
        if let Some(v) = &s.mounts {
            ro.feed(engine, baselines, cfg, v, out);
            end(engine, FaultKind::FsReadOnly);
        }
        if let Some(v) = &s.io_errors {
            counters::feed_io_errors(engine, baselines, &cfg.disk_io_errors, v, out);
        }
        // disk_io_errors subjects come from two probes (block devices and the kernel log;
        // ext4 error counts, read with the mounts): a pass that missed one of them must
        // not count its subjects as gone.
        let io_probe = on.io_errors || kmsg.is_some();
        let read_all = (s.io_errors.is_some() || !io_probe) && (s.mounts.is_some() || !on.mounts);
        if read_all && (s.io_errors.is_some() || s.mounts.is_some()) {
            end(engine, FaultKind::DiskIoErrors);
        }
        if let Some(v) = &s.smart {
            smart::feed(engine, baselines, &cfg.disk_health, v, out);
            end(engine, FaultKind::DiskHealth);
        }
        if let Some(v) = &s.raid {
            raid::feed(engine, &cfg.raid_degraded, v, out);
            end(engine, FaultKind::RaidDegraded);
        }
        if let Some(m) = &s.memory {
            if cfg.memory_pressure.enabled {
                memory::feed_pressure(engine, &cfg.memory_pressure, m, out);
            }
            if cfg.memory_ecc.enabled {
                memory::feed_hardware_corrupted(engine, m, out);
            }
        }
        if let Some(v) = &s.ecc {
            counters::feed_edac(engine, baselines, &cfg.memory_ecc, v, out);
        }
        if let Some(v) = &s.aer {
            counters::feed_aer(engine, baselines, &cfg.pcie_aer, v, out);
            end(engine, FaultKind::PcieAer);
        }
        if let Some(v) = &s.temps {
            hwmon::feed_temps(engine, &cfg.overheating, v, out);
            end(engine, FaultKind::Overheating);
        }
        if let Some(v) = &s.fans {
            hwmon::feed_fans(engine, &cfg.fan_failure, v, out);
            end(engine, FaultKind::FanFailure);
        }
        if let Some(v) = &s.batteries {
            battery::feed(engine, &cfg.battery_wear, v, out);
            end(engine, FaultKind::BatteryWear);
        }
        if let Some(v) = &s.nics {
            net.feed_errors(engine, &cfg.nic_errors, v, out);
            end(engine, FaultKind::NicErrors);
        }
        if let Some(v) = &s.links {
            net.feed_links(engine, &cfg.nic_link_lost, v, out);
            end(engine, FaultKind::NicLinkLost);
        }
        // A counter forgotten while its fault was open was just cleared as "no longer
        // present": if it comes back, it starts afresh rather than silently open.
        for e in &gone {
            if matches!(
                e.kind,
                FaultKind::DiskIoErrors
                    | FaultKind::MemoryEcc
                    | FaultKind::PcieAer
                    | FaultKind::DiskHealth
            ) {
                baselines.forget(e.kind, &e.subject);
            }
        }
        out.append(&mut gone);
        for (i, kind) in FaultKind::ALL.into_iter().enumerate() {
            let n = engine.overflowed(kind);
            if n > 0 && !overflow_told[i] {
                overflow_told[i] = true;
                tracing::warn!(
                    kind = %kind,
                    watched = engine.watched(kind),
                    capacity = crate::detect::engine::capacity(kind),
                    "more subjects than the engine can watch; the rest are not watched"
                );
            }
        }
    }

    /// Writes the counter state of the passes so far (see [`Baselines::commit`]): call it
    /// once their events are in the spool. On an error the state stays in memory.
    pub fn persist(&self) -> Result<(), sled::Error> {
        self.baselines.commit()
    }

    /// Counter state changes waiting for [`Detectors::persist`].
    pub fn baselines_staged(&self) -> usize {
        self.baselines.staged()
    }

    /// Lets go of the database while the spool reopens it; state changes stay in memory.
    pub fn detach_store(&mut self) {
        self.baselines.detach();
    }

    /// Takes the reopened database's `baselines` tree.
    pub fn attach_store(&mut self, baselines: sled::Tree) {
        self.baselines.attach(baselines);
    }

    /// Current readings for a user report's snapshot.
    pub fn snapshot(&self) -> heapless::Vec<Reading, 32> {
        self.engine.readings()
    }

    /// The faults open now.
    pub fn open_faults(&self) -> heapless::Vec<OpenFault, 16> {
        self.engine.open_faults()
    }

    /// Subjects not watched because a kind's table is full: (kind, readings refused).
    pub fn overflowed(&self) -> Vec<(FaultKind, u32)> {
        FaultKind::ALL
            .into_iter()
            .map(|k| (k, self.engine.overflowed(k)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// The engine, for inspection (`check`, tests).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The replay file in use, if any.
    pub fn replay_path(&self) -> Option<PathBuf> {
        self.cfg.replay.as_ref().map(|p| PathBuf::from(p.as_str()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod fixture_tests;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod testutil {
    /// A throwaway baseline tree.
    pub fn tree() -> sled::Tree {
        let db = sled::Config::new().temporary(true).open().unwrap();
        db.open_tree("baselines").unwrap()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::io::Write;
    use vigia_protocol::{FaultAction, Severity};

    fn replay_detectors(
        lines: &[&str],
        tweak: impl FnOnce(&mut DetectConfig),
    ) -> (Detectors, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay.jsonl");
        let mut f = std::fs::File::create(&path).unwrap();
        for l in lines {
            writeln!(f, "{l}").unwrap();
        }
        let mut cfg = DetectConfig {
            replay: Some(vigia_protocol::bounded(path.to_str().unwrap())),
            ..DetectConfig::default()
        };
        tweak(&mut cfg);
        let d = Detectors::new(&cfg, Path::new("/nonexistent-root"), testutil::tree()).unwrap();
        (d, dir)
    }

    const FULL: &str = r#"{"disk":[{"mount":"/var","total_bytes":100,"avail_bytes":5,"files":10,"files_free":5}]}"#;
    const OK: &str = r#"{"disk":[{"mount":"/var","total_bytes":100,"avail_bytes":50,"files":10,"files_free":5}]}"#;

    #[test]
    fn replayed_disk_raises_once_then_clears() {
        let mut lines = vec![FULL; 5];
        lines.extend([OK; 4]);
        let (mut d, _dir) = replay_detectors(&lines, |_| {});
        assert!(d.unsupported().is_empty(), "replay reads no machine source");
        let mut all = Vec::new();
        for i in 0..12 {
            let mut out = Vec::new();
            d.tick(i, &mut out);
            all.extend(out.into_iter().map(|e| (i, e)));
        }
        let raised: Vec<_> = all
            .iter()
            .filter(|(_, e)| e.action == FaultAction::Raised)
            .collect();
        assert_eq!(raised.len(), 1, "{all:#?}");
        let (at, ev) = raised[0];
        assert_eq!(*at, 2, "default debounce: 3 samples over");
        assert_eq!(ev.kind, FaultKind::DiskSpace);
        assert_eq!(ev.subject.as_str(), "/var");
        assert_eq!(ev.severity, Severity::Warning);
        assert_eq!(ev.evidence.value, 95.0);
        assert_eq!(ev.evidence.threshold, 90.0);
        assert_eq!(ev.evidence.source.as_str(), "statvfs /var");
        let cleared: Vec<_> = all
            .iter()
            .filter(|(_, e)| e.action == FaultAction::Cleared)
            .collect();
        assert_eq!(cleared.len(), 1);
        assert_eq!(cleared[0].0, 7, "default debounce: 3 samples under");
        assert!(d.open_faults().is_empty());
        assert_eq!(d.snapshot()[0].name.as_str(), "disk_space /var");
    }

    #[test]
    fn replay_overrides_per_mount() {
        let (mut d, _dir) = replay_detectors(&[OK], |c| {
            c.disk_space
                .overrides
                .push(crate::detect::config::SubjectOverride {
                    subject: vigia_protocol::bounded("/var"),
                    enabled: None,
                    warn: Some(40.0),
                    critical: Some(45.0),
                    hysteresis: None,
                    raise_after: Some(1),
                    clear_after: None,
                })
                .unwrap();
        });
        let mut out = Vec::new();
        d.tick(0, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].severity, Severity::Critical);
        assert_eq!(out[0].evidence.threshold, 45.0);
    }

    #[test]
    fn more_mounts_than_capacity_are_counted_not_a_panic() {
        let disks: Vec<String> = (0..40)
            .map(|i| format!(r#"{{"mount":"/m{i}","total_bytes":100,"avail_bytes":50}}"#))
            .collect();
        let line = format!(r#"{{"disk":[{}]}}"#, disks.join(","));
        let (mut d, _dir) = replay_detectors(&[&line], |_| {});
        let mut out = Vec::new();
        d.tick(0, &mut out);
        assert_eq!(d.overflowed(), [(FaultKind::DiskSpace, 8)]);
        assert_eq!(d.engine().watched(FaultKind::DiskSpace), 32);
    }

    #[test]
    fn snapshot_shows_levels_and_open_flags_only() {
        let line = r#"{"disk":[{"mount":"/","total_bytes":100,"avail_bytes":50}],"mounts":[{"mount":"/","ro":false}],"raid":[{"name":"md0","expected":2,"up":1}]}"#;
        let (mut d, _dir) = replay_detectors(&[line], |c| c.raid_degraded.raise_after = 1);
        let mut out = Vec::new();
        d.tick(0, &mut out);
        let names: Vec<_> = d.snapshot().iter().map(|r| r.name.to_string()).collect();
        assert_eq!(
            names,
            ["raid_degraded md0", "disk_space /"],
            "open first; the closed read-only flag is not listed"
        );
    }

    #[test]
    fn disk_unsupported_without_proc_mounts() {
        let dir = tempfile::tempdir().unwrap();
        let d = Detectors::new(&DetectConfig::default(), dir.path(), testutil::tree()).unwrap();
        let names: Vec<_> = d.unsupported().iter().map(|(n, _)| *n).collect();
        assert!(names.contains(&names::DISK_SPACE), "{names:?}");
        assert!(names.contains(&names::FS_READ_ONLY));
        assert!(d.unsupported()[0].1.contains("proc/mounts"));
    }

    #[test]
    fn disk_reads_fixture_mounts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        std::fs::write(
            dir.path().join("proc/mounts"),
            "/dev/vda / ext4 rw 0 0\n/dev/vdb /gone ext4 rw 0 0\n",
        )
        .unwrap();
        let mut d = Detectors::new(&DetectConfig::default(), dir.path(), testutil::tree()).unwrap();
        assert!(!d.unsupported().iter().any(|(n, _)| *n == names::DISK_SPACE));
        let s = d.read_machine();
        let disk = s.disk.unwrap();
        assert_eq!(
            disk.len(),
            1,
            "the missing mount point is skipped, not a zero"
        );
        assert_eq!(disk[0].mount, "/");
        assert!(disk[0].total_bytes > 0);
    }

    #[test]
    fn invalid_config_is_refused() {
        let mut cfg = DetectConfig::default();
        cfg.disk_space.critical = 150.0;
        let err = Detectors::new(&cfg, Path::new("/"), testutil::tree()).unwrap_err();
        assert!(err.to_string().contains("disk_space.critical"), "{err}");
    }
}
