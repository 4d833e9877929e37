//! `/proc/meminfo`: memory pressure (`MemAvailable` low, swap exhausted) and
//! `HardwareCorrupted` (pages the kernel poisoned after uncorrectable memory errors).
//!
//! `MemAvailable` is the kernel's own estimate of what can be allocated without swapping,
//! so it is used as is rather than recomputed from free + cache; a kernel without it
//! (before 3.14) is "unsupported" rather than estimated.
use serde::{Deserialize, Serialize};
use vigia_protocol::{FaultEvent, FaultKind, Severity};

use super::error::ProbeError;
use super::sysfs::{self, Root};
use crate::detect::config::MemoryConfig;
use crate::detect::{Debounce, Engine, Levels, Obs, Severities};

/// The fields of `/proc/meminfo` the detectors use, in kB.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemInfo {
    /// `MemTotal`.
    pub total_kb: u64,
    /// `MemAvailable`.
    pub available_kb: Option<u64>,
    /// `SwapTotal`.
    pub swap_total_kb: u64,
    /// `SwapFree`.
    pub swap_free_kb: u64,
    /// `HardwareCorrupted` (absent without `CONFIG_MEMORY_FAILURE`).
    pub hardware_corrupted_kb: Option<u64>,
}

/// Parses `/proc/meminfo`. `None` without `MemTotal`.
pub fn parse_meminfo(text: &str) -> Option<MemInfo> {
    let mut m = MemInfo::default();
    let mut total = None;
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let Some(v) = rest.split_whitespace().next().and_then(sysfs::parse_u64) else {
            continue;
        };
        match key.trim() {
            "MemTotal" => total = Some(v),
            "MemAvailable" => m.available_kb = Some(v),
            "SwapTotal" => m.swap_total_kb = v,
            "SwapFree" => m.swap_free_kb = v,
            "HardwareCorrupted" => m.hardware_corrupted_kb = Some(v),
            _ => {}
        }
    }
    m.total_kb = total.filter(|t| *t > 0)?;
    Some(m)
}

/// Reads `{root}/proc/meminfo`.
pub fn read_meminfo(root: &Root) -> Result<MemInfo, ProbeError> {
    let path = root.path("/proc/meminfo");
    let text = sysfs::read(&path).map_err(|source| ProbeError::Io {
        path: path.clone(),
        source,
    })?;
    parse_meminfo(&text).ok_or_else(|| ProbeError::Unusable {
        what: sysfs::shown(root, &path),
        reason: "no MemTotal".into(),
    })
}

/// Feeds memory pressure.
pub fn feed_pressure(
    engine: &mut Engine,
    cfg: &MemoryConfig,
    m: &MemInfo,
    out: &mut Vec<FaultEvent>,
) {
    let db = Debounce {
        raise_after: cfg.raise_after,
        clear_after: cfg.clear_after,
        critical_after: 0,
    };
    let levels = |pct: f64| Levels {
        warn: None,
        critical: Some(pct),
        hysteresis: cfg.hysteresis,
        below: true,
    };
    if let Some(avail) = m.available_kb {
        let pct = 100.0 * avail.min(m.total_kb) as f64 / m.total_kb as f64;
        let obs = Obs {
            kind: FaultKind::MemoryPressure,
            subject: "memory",
            source: "/proc/meminfo MemAvailable",
            unit: "%",
            label: "available",
        };
        out.extend(engine.level(
            obs,
            pct,
            &levels(cfg.available_below_pct),
            Severities::only(Severity::Major),
            db,
        ));
    }
    if m.swap_total_kb > 0 {
        let pct = 100.0 * m.swap_free_kb.min(m.swap_total_kb) as f64 / m.swap_total_kb as f64;
        let obs = Obs {
            kind: FaultKind::MemoryPressure,
            subject: "swap",
            source: "/proc/meminfo SwapFree",
            unit: "%",
            label: "swap free",
        };
        out.extend(engine.level(
            obs,
            pct,
            &levels(cfg.swap_free_below_pct),
            Severities::only(Severity::Major),
            db,
        ));
    }
}

/// Feeds `HardwareCorrupted`: any poisoned memory is critical, and clears only when the
/// count is back to zero (after a reboot).
pub fn feed_hardware_corrupted(engine: &mut Engine, m: &MemInfo, out: &mut Vec<FaultEvent>) {
    let Some(kb) = m.hardware_corrupted_kb else {
        return;
    };
    let label = if kb > 0 {
        format!("{kb} kB of memory poisoned after uncorrectable errors")
    } else {
        "memory poisoned (now 0 kB)".to_string()
    };
    let obs = Obs {
        kind: FaultKind::MemoryEcc,
        subject: "HardwareCorrupted",
        source: "/proc/meminfo HardwareCorrupted",
        unit: "kB",
        label: &label,
    };
    out.extend(engine.flag(
        obs,
        kb > 0,
        Severity::Critical,
        kb as f64,
        1.0,
        Debounce::IMMEDIATE,
    ));
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fixture(name: &str) -> Root {
        Root::new(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures/memory_pressure")
                .join(name),
        )
    }

    #[test]
    fn parses_real_meminfo() {
        let m = read_meminfo(&fixture("laptop")).unwrap();
        assert_eq!(m.total_kb, 16_318_412);
        assert_eq!(m.available_kb, Some(9_912_340));
        assert_eq!((m.swap_total_kb, m.swap_free_kb), (2_097_148, 2_097_148));
        assert_eq!(m.hardware_corrupted_kb, Some(0));
    }

    #[test]
    fn old_kernel_without_mem_available() {
        let m = read_meminfo(&fixture("old_kernel")).unwrap();
        assert_eq!(m.available_kb, None);
        assert_eq!(m.hardware_corrupted_kb, None);
    }

    #[test]
    fn garbage_and_empty_are_unusable() {
        assert_eq!(parse_meminfo(""), None);
        assert_eq!(parse_meminfo("MemTotal: lots kB\n"), None);
        assert!(read_meminfo(&fixture("garbage")).is_err());
        assert!(read_meminfo(&fixture("missing")).is_err());
    }
}
