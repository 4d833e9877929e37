//! Detector settings: one section per detector, defaults from `docs/design.md`, per-subject
//! overrides where a subject can need its own thresholds (a mount point, a sensor).
//!
//! The structs are `no_std` (bounded `heapless` strings and lists) so the engine can hold
//! them without `std`; each section has its own type with its own `Default`, so a file
//! that sets one field of a section keeps the documented defaults of the others.
//! [`DetectConfig::validate`] checks ranges at start-up and names the field at fault.
use heapless::{String, Vec};
use serde::{Deserialize, Serialize};

use super::threshold::{Debounce, Levels};

/// Per-subject overrides kept per detector.
pub const MAX_OVERRIDES: usize = 16;
/// Patterns kept per ignore list.
pub const MAX_IGNORES: usize = 16;

/// All detector settings (`[detect]` in the agent's config file). `Default` gives
/// the defaults of `docs/design.md`, section by section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// A JSON-lines file to read samples from instead of this machine (tests, demos).
    /// Each sampling pass consumes one line; see `probe::replay` for the line format.
    pub replay: Option<String<256>>,
    /// Filesystem space used, percent of the space a non-root user can use.
    pub disk_space: DiskConfig,
    /// Filesystem inodes used, percent.
    pub disk_inodes: DiskConfig,
    /// A disk filesystem read-only while `/etc/fstab` mounts it read-write, or that was
    /// read-write earlier in this boot.
    pub fs_read_only: FsReadOnlyConfig,
    /// Block device I/O errors since boot (`ioerr_cnt`, the kernel log) and ext4's
    /// recorded filesystem errors.
    pub disk_io_errors: CounterConfig,
    /// SMART / NVMe health through `smartctl --json`.
    pub disk_health: SmartConfig,
    /// Software RAID arrays missing members (`/proc/mdstat`).
    pub raid_degraded: FlagConfig,
    /// Low available memory and exhausted swap (`/proc/meminfo`).
    pub memory_pressure: MemoryConfig,
    /// EDAC corrected/uncorrected counters and `HardwareCorrupted`.
    pub memory_ecc: CounterConfig,
    /// PCIe AER counters.
    pub pcie_aer: CounterConfig,
    /// Temperatures at or near their critical point (hwmon, thermal zones).
    pub overheating: TempConfig,
    /// Fans stopped or faulted (hwmon).
    pub fan_failure: FanConfig,
    /// Battery wear and failure (`/sys/class/power_supply/BAT*`).
    pub battery_wear: BatteryConfig,
    /// Network interface error rate (`/proc/net/dev`).
    pub nic_errors: NicErrorsConfig,
    /// Carrier lost on an interface that was up (`/sys/class/net/*/carrier`).
    pub nic_link_lost: NicLinkConfig,
}

/// A configuration value out of range: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidConfig {
    /// Dotted path of the field under `[detect]`, e.g. `disk_space.warn`.
    pub field: &'static str,
    /// What is wrong.
    pub reason: &'static str,
}

impl core::fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "detect.{}: {}", self.field, self.reason)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for InvalidConfig {}

fn pct(field: &'static str, v: f64) -> Result<(), InvalidConfig> {
    if (0.0..=100.0).contains(&v) {
        Ok(())
    } else {
        Err(InvalidConfig {
            field,
            reason: "must be a percentage between 0 and 100",
        })
    }
}

fn non_negative(field: &'static str, v: f64) -> Result<(), InvalidConfig> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(InvalidConfig {
            field,
            reason: "must be a finite number ≥ 0",
        })
    }
}

impl DetectConfig {
    /// Checks ranges; the error names the offending field.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        self.disk_space.validate(
            [
                "disk_space.warn",
                "disk_space.critical",
                "disk_space.hysteresis",
            ],
            "disk_space.overrides",
        )?;
        self.disk_inodes.validate(
            [
                "disk_inodes.warn",
                "disk_inodes.critical",
                "disk_inodes.hysteresis",
            ],
            "disk_inodes.overrides",
        )?;
        pct(
            "memory_pressure.available_below_pct",
            self.memory_pressure.available_below_pct,
        )?;
        pct(
            "memory_pressure.swap_free_below_pct",
            self.memory_pressure.swap_free_below_pct,
        )?;
        non_negative(
            "memory_pressure.hysteresis",
            self.memory_pressure.hysteresis,
        )?;
        pct(
            "disk_health.percentage_used",
            self.disk_health.percentage_used,
        )?;
        if self.disk_health.timeout_secs == 0 {
            return Err(InvalidConfig {
                field: "disk_health.timeout_secs",
                reason: "must be at least 1",
            });
        }
        non_negative("overheating.margin_c", self.overheating.margin_c)?;
        non_negative("overheating.hysteresis_c", self.overheating.hysteresis_c)?;
        pct(
            "battery_wear.wear_below_pct",
            self.battery_wear.wear_below_pct,
        )?;
        pct("nic_errors.error_pct", self.nic_errors.error_pct)?;
        non_negative("nic_errors.hysteresis", self.nic_errors.hysteresis)?;
        Ok(())
    }
}

/// Space or inode thresholds for filesystems.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiskConfig {
    /// Watch at all.
    pub enabled: bool,
    /// Percent used at which a warning opens.
    pub warn: f64,
    /// Percent used at which it becomes critical.
    pub critical: f64,
    /// Points below a level before that level is left ("clear 5 points lower").
    pub hysteresis: f64,
    /// Samples over a level before it is raised.
    pub raise_after: u16,
    /// Samples under the clear level before the fault clears.
    pub clear_after: u16,
    /// Mount points not watched: exact paths, or prefixes ending in `/` (`/snap/`).
    pub ignore_mounts: Vec<String<64>, MAX_IGNORES>,
    /// Mount points with their own thresholds.
    pub overrides: Vec<SubjectOverride, MAX_OVERRIDES>,
}

impl Default for DiskConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            warn: 90.0,
            critical: 97.0,
            hysteresis: 5.0,
            raise_after: 3,
            clear_after: 3,
            ignore_mounts: Vec::new(),
            overrides: Vec::new(),
        }
    }
}

impl DiskConfig {
    fn validate(
        &self,
        fields: [&'static str; 3],
        overrides: &'static str,
    ) -> Result<(), InvalidConfig> {
        pct(fields[0], self.warn)?;
        pct(fields[1], self.critical)?;
        non_negative(fields[2], self.hysteresis)?;
        if self.warn > self.critical {
            return Err(InvalidConfig {
                field: fields[0],
                reason: "must not be above critical",
            });
        }
        for o in &self.overrides {
            let (levels, _, _) = self.for_subject(&o.subject);
            let bad = |v: Option<f64>| v.is_some_and(|v| !(0.0..=100.0).contains(&v));
            if bad(levels.warn) || bad(levels.critical) || levels.hysteresis < 0.0 {
                return Err(InvalidConfig {
                    field: overrides,
                    reason: "warn/critical must be percentages and hysteresis ≥ 0",
                });
            }
        }
        Ok(())
    }

    /// Whether `mount` is watched, and with which levels and debounce.
    pub fn for_subject(&self, mount: &str) -> (Levels, Debounce, bool) {
        let mut levels = Levels::above(self.warn, self.critical, self.hysteresis);
        let mut db = Debounce {
            raise_after: self.raise_after,
            clear_after: self.clear_after,
            critical_after: 0,
        };
        let mut enabled = self.enabled && !is_ignored(&self.ignore_mounts, mount);
        if let Some(o) = self.overrides.iter().find(|o| o.subject == mount) {
            o.apply(&mut levels, &mut db, &mut enabled);
        }
        (levels, db, enabled)
    }
}

/// Whether `subject` matches an ignore list: an exact entry, or a prefix entry ending
/// in `/` or `*`.
pub fn is_ignored<const N: usize, const M: usize>(list: &Vec<String<N>, M>, subject: &str) -> bool {
    list.iter().any(|p| {
        if let Some(prefix) = p.strip_suffix('*') {
            subject.starts_with(prefix)
        } else if p.ends_with('/') && p.len() > 1 {
            subject.starts_with(p.as_str()) || subject == p.trim_end_matches('/')
        } else {
            subject == p.as_str()
        }
    })
}

/// Thresholds for one subject (a mount point, a sensor label, an interface) that differ
/// from the detector's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectOverride {
    /// The subject, exactly as events name it.
    pub subject: String<96>,
    /// Watch it at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Its warn level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warn: Option<f64>,
    /// Its critical level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical: Option<f64>,
    /// Its hysteresis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hysteresis: Option<f64>,
    /// Its raise debounce, in samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raise_after: Option<u16>,
    /// Its clear debounce, in samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_after: Option<u16>,
}

impl SubjectOverride {
    /// Applies the fields that are set.
    pub fn apply(&self, levels: &mut Levels, db: &mut Debounce, enabled: &mut bool) {
        if let Some(e) = self.enabled {
            *enabled = *enabled && e;
        }
        if let Some(w) = self.warn {
            levels.warn = Some(w);
        }
        if let Some(c) = self.critical {
            levels.critical = Some(c);
        }
        if let Some(h) = self.hysteresis {
            levels.hysteresis = h;
        }
        if let Some(r) = self.raise_after {
            db.raise_after = r;
        }
        if let Some(c) = self.clear_after {
            db.clear_after = c;
        }
    }
}

/// Read-only remount detection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FsReadOnlyConfig {
    /// Watch at all.
    pub enabled: bool,
    /// Mount points not watched (exact, or prefixes ending in `/` or `*`), for their
    /// ext4 error counts too.
    pub ignore_mounts: Vec<String<64>, MAX_IGNORES>,
}

impl Default for FsReadOnlyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ignore_mounts: Vec::new(),
        }
    }
}

/// A counter that alerts when it rises from its baseline (zero per kernel boot for the
/// kernel's own counters).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CounterConfig {
    /// Watch at all.
    pub enabled: bool,
    /// Smallest rise over the baseline that opens a fault (1 = any increase).
    pub min_increase: u64,
    /// Samples without a further rise before the fault clears and the baseline moves up
    /// (ext4's error count clears only when fsck has brought it back to zero).
    pub clear_after: u16,
}

impl Default for CounterConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_increase: 1,
            clear_after: 60,
        }
    }
}

/// SMART / NVMe health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmartConfig {
    /// Watch at all (needs `smartctl` 7.0+ for `--json`, and root to open the disks).
    pub enabled: bool,
    /// The `smartctl` program: a name looked up in `PATH`, or a path.
    pub smartctl: String<128>,
    /// Run it every this many sampling passes (SMART reads are slow; 30 × 60 s = 30 min).
    pub every: u32,
    /// Seconds before a hung `smartctl` is killed.
    pub timeout_secs: u32,
    /// NVMe `percentage_used` at which the drive is worn out.
    pub percentage_used: f64,
    /// Smallest rise of a reallocated/pending/uncorrectable/CRC counter that counts.
    pub min_increase: u64,
    /// Runs without a further rise before a counter fault clears (pending and offline
    /// uncorrectable sectors clear only when back to zero).
    pub clear_after: u16,
}

impl Default for SmartConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            smartctl: str_or_empty("smartctl"),
            every: 30,
            timeout_secs: 30,
            percentage_used: 90.0,
            min_increase: 1,
            clear_after: 48,
        }
    }
}

fn str_or_empty<const N: usize>(s: &str) -> String<N> {
    vigia_protocol::bounded(s)
}

/// A yes/no condition with debounce.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlagConfig {
    /// Watch at all.
    pub enabled: bool,
    /// Samples with the condition before it is raised.
    pub raise_after: u16,
    /// Samples without it before it clears.
    pub clear_after: u16,
}

impl Default for FlagConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            raise_after: 2,
            clear_after: 2,
        }
    }
}

impl FlagConfig {
    /// The debounce.
    pub fn debounce(&self) -> Debounce {
        Debounce {
            raise_after: self.raise_after,
            clear_after: self.clear_after,
            critical_after: 0,
        }
    }
}

/// Fan failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FanConfig {
    /// Watch at all.
    pub enabled: bool,
    /// Samples with the fan stopped or faulted before raising.
    pub raise_after: u16,
    /// Samples spinning again before clearing.
    pub clear_after: u16,
    /// Fans not watched, as events name them (`nct6775/fan3`; a prefix ending in `*`),
    /// e.g. a header with nothing plugged in.
    pub ignore_fans: Vec<String<64>, MAX_IGNORES>,
}

impl Default for FanConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            raise_after: 2,
            clear_after: 2,
            ignore_fans: Vec::new(),
        }
    }
}

impl FanConfig {
    /// The debounce.
    pub fn debounce(&self) -> Debounce {
        Debounce {
            raise_after: self.raise_after,
            clear_after: self.clear_after,
            critical_after: 0,
        }
    }
}

/// Memory pressure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// Watch at all.
    pub enabled: bool,
    /// `MemAvailable` as a percent of `MemTotal` at or below which memory is short.
    pub available_below_pct: f64,
    /// Free swap as a percent of total swap at or below which swap is exhausted (only
    /// when the machine has swap).
    pub swap_free_below_pct: f64,
    /// Points above the level before it clears.
    pub hysteresis: f64,
    /// Samples below before raising ("sustained").
    pub raise_after: u16,
    /// Samples above the clear level before clearing.
    pub clear_after: u16,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            available_below_pct: 5.0,
            swap_free_below_pct: 5.0,
            hysteresis: 2.0,
            raise_after: 5,
            clear_after: 3,
        }
    }
}

/// Overheating: levels come from each sensor's own critical point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TempConfig {
    /// Watch at all.
    pub enabled: bool,
    /// Degrees below the critical point at which a sustained reading is a warning.
    pub margin_c: f64,
    /// Degrees below a level before it is left.
    pub hysteresis_c: f64,
    /// Samples within the margin before a warning is raised ("sustained").
    pub raise_after: u16,
    /// Samples at or above the critical point before it is raised (1: at once).
    pub critical_after: u16,
    /// Samples below before it clears.
    pub clear_after: u16,
    /// Sensors (by label, `chip/tempN_label`) with their own levels: `critical` replaces
    /// the sensor's own critical point, `warn` the critical minus the margin.
    pub overrides: Vec<SubjectOverride, MAX_OVERRIDES>,
}

impl Default for TempConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            margin_c: 5.0,
            hysteresis_c: 3.0,
            raise_after: 3,
            critical_after: 1,
            clear_after: 3,
            overrides: Vec::new(),
        }
    }
}

impl TempConfig {
    /// Levels for a sensor whose critical point is `crit`, and whether it is watched.
    pub fn for_sensor(&self, label: &str, crit: Option<f64>) -> (Levels, Debounce, bool) {
        let mut levels = Levels {
            warn: crit.map(|c| c - self.margin_c),
            critical: crit,
            hysteresis: self.hysteresis_c,
            below: false,
        };
        let mut db = Debounce {
            raise_after: self.raise_after,
            clear_after: self.clear_after,
            critical_after: self.critical_after,
        };
        let mut enabled = self.enabled;
        if let Some(o) = self.overrides.iter().find(|o| o.subject == label) {
            if o.critical.is_some() && o.warn.is_none() {
                levels.warn = o.critical.map(|c| c - self.margin_c);
            }
            o.apply(&mut levels, &mut db, &mut enabled);
        }
        (levels, db, enabled)
    }
}

/// Battery wear.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatteryConfig {
    /// Watch at all.
    pub enabled: bool,
    /// Full charge as a percent of design capacity at or below which the battery is worn.
    pub wear_below_pct: f64,
    /// Points above the level before it clears (a recalibration can move it a little).
    pub hysteresis: f64,
    /// Samples before raising.
    pub raise_after: u16,
    /// Samples before clearing.
    pub clear_after: u16,
}

impl Default for BatteryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            wear_below_pct: 60.0,
            hysteresis: 2.0,
            raise_after: 2,
            clear_after: 2,
        }
    }
}

/// Network interface error rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NicErrorsConfig {
    /// Watch at all.
    pub enabled: bool,
    /// Errors as a percent of packets in one interval at or above which it is a fault.
    pub error_pct: f64,
    /// Intervals with fewer packets than this are not judged (too few to be a rate).
    pub min_packets: u64,
    /// Points below the level before it clears.
    pub hysteresis: f64,
    /// Intervals over before raising.
    pub raise_after: u16,
    /// Intervals under before clearing.
    pub clear_after: u16,
    /// Interfaces not watched (exact, or prefixes ending in `*`).
    pub ignore_interfaces: Vec<String<32>, MAX_IGNORES>,
}

impl Default for NicErrorsConfig {
    fn default() -> Self {
        let mut ignore = Vec::new();
        let _ = ignore.push(str_or_empty("lo"));
        Self {
            enabled: true,
            error_pct: 1.0,
            min_packets: 100,
            hysteresis: 0.5,
            raise_after: 3,
            clear_after: 3,
            ignore_interfaces: ignore,
        }
    }
}

/// Carrier loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NicLinkConfig {
    /// Watch at all.
    pub enabled: bool,
    /// Samples without carrier before raising.
    pub raise_after: u16,
    /// Samples with carrier before clearing.
    pub clear_after: u16,
    /// Interfaces not watched (exact, or prefixes ending in `*`). Virtual interfaces
    /// (no `device` link in sysfs) are never watched.
    pub ignore_interfaces: Vec<String<32>, MAX_IGNORES>,
}

impl Default for NicLinkConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            raise_after: 2,
            clear_after: 1,
            ignore_interfaces: Vec::new(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_design() {
        let c = DetectConfig::default();
        assert_eq!((c.disk_space.warn, c.disk_space.critical), (90.0, 97.0));
        assert_eq!(c.disk_space.hysteresis, 5.0);
        assert_eq!(c.memory_pressure.available_below_pct, 5.0);
        assert_eq!(c.disk_health.percentage_used, 90.0);
        assert_eq!(c.battery_wear.wear_below_pct, 60.0);
        assert_eq!(c.nic_errors.error_pct, 1.0);
        assert_eq!(c.overheating.margin_c, 5.0);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn override_and_ignore_per_mount() {
        let mut c = DiskConfig::default();
        let _ = c.ignore_mounts.push(str_or_empty("/snap/"));
        let _ = c.overrides.push(SubjectOverride {
            subject: str_or_empty("/var"),
            enabled: None,
            warn: Some(80.0),
            critical: None,
            hysteresis: None,
            raise_after: Some(1),
            clear_after: None,
        });
        let (l, d, on) = c.for_subject("/var");
        assert_eq!(
            (l.warn, l.critical, d.raise_after, on),
            (Some(80.0), Some(97.0), 1, true)
        );
        let (l, _, on) = c.for_subject("/");
        assert_eq!((l.warn, on), (Some(90.0), true));
        assert!(!c.for_subject("/snap/core/123").2);
        assert!(!c.for_subject("/snap").2);
    }

    #[test]
    fn validate_names_the_field() {
        let mut c = DetectConfig::default();
        c.disk_space.warn = 99.0;
        assert_eq!(c.validate().unwrap_err().field, "disk_space.warn");
        let mut c = DetectConfig::default();
        c.memory_pressure.available_below_pct = 120.0;
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "detect.memory_pressure.available_below_pct: must be a percentage between 0 and 100"
        );
    }

    #[test]
    fn toml_round_trip_of_defaults_and_overrides() {
        let mut c = DetectConfig::default();
        let _ = c.disk_space.overrides.push(SubjectOverride {
            subject: str_or_empty("/var"),
            enabled: None,
            warn: Some(80.0),
            critical: None,
            hysteresis: None,
            raise_after: None,
            clear_after: None,
        });
        let text = toml::to_string(&c).unwrap();
        let back: DetectConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
        let partial: DetectConfig =
            toml::from_str("[disk_space]\nwarn = 85.0\n[[disk_space.overrides]]\nsubject = \"/srv\"\ncritical = 99.0\n").unwrap();
        assert_eq!(partial.disk_space.warn, 85.0);
        assert_eq!(partial.disk_space.overrides[0].critical, Some(99.0));
        assert_eq!(partial.memory_pressure, MemoryConfig::default());
    }

    #[test]
    fn partial_section_keeps_section_defaults() {
        let c: DetectConfig = serde_json::from_str(r#"{"disk_space":{"warn":80.0}}"#).unwrap();
        assert_eq!(c.disk_space.warn, 80.0);
        assert_eq!(c.disk_space.critical, 97.0);
        assert!(serde_json::from_str::<DetectConfig>(r#"{"disk_space":{"wran":80.0}}"#).is_err());
    }
}
