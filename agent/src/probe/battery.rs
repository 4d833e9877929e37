//! Batteries: `/sys/class/power_supply/*` with `type` = `Battery` (`BAT0`, `CMB0`...).
//!
//! Wear is the last full charge against the design capacity (`energy_full` /
//! `energy_full_design` in µWh, or `charge_full` / `charge_full_design` in µAh, whichever
//! pair the driver exposes); at or below 60 % it is minor. A `health` of `Dead`,
//! `Unspecified failure`, `Over voltage` or `Overheat` is a failed battery (major).
//! Peripheral batteries (mouse, headset: `scope` = `Device`) and an empty bay
//! (`present` = 0) are not judged. `status` is read for the snapshot but does not make a
//! fault on its own: "Not charging" is a charge-threshold setting as often as a failure.
use serde::{Deserialize, Serialize};
use vigia_protocol::{FaultEvent, FaultKind, Severity};

use super::error::ProbeError;
use super::sysfs::{self, Root};
use crate::detect::config::BatteryConfig;
use crate::detect::{Debounce, Engine, Levels, Obs, Severities};

/// `health` values that mean the battery has failed.
pub const FAILED_HEALTH: &[&str] = &["Dead", "Unspecified failure", "Over voltage", "Overheat"];

/// One battery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Battery {
    /// Power supply name (`BAT0`).
    pub name: String,
    /// Last full capacity (µWh or µAh).
    #[serde(default)]
    pub full: Option<u64>,
    /// Design capacity, same unit.
    #[serde(default)]
    pub design: Option<u64>,
    /// Which files `full`/`design` came from (`energy_full`).
    #[serde(default)]
    pub source: String,
    /// `health`, where the driver has it.
    #[serde(default)]
    pub health: Option<String>,
    /// `status`.
    #[serde(default)]
    pub status: Option<String>,
}

impl Battery {
    /// Full charge as a percent of design.
    pub fn capacity_pct(&self) -> Option<f64> {
        let (f, d) = (self.full?, self.design?);
        (d > 0).then(|| 100.0 * f as f64 / d as f64)
    }

    /// The driver reports a failed battery.
    pub fn failed(&self) -> bool {
        self.health
            .as_deref()
            .is_some_and(|h| FAILED_HEALTH.contains(&h))
    }
}

/// Reads every system battery. `Err` when there is none (a desktop: "unsupported").
pub fn read(root: &Root) -> Result<Vec<Battery>, ProbeError> {
    let dir = root.path("/sys/class/power_supply");
    let entries = sysfs::entries(&dir, "").map_err(|source| ProbeError::Io {
        path: dir.clone(),
        source,
    })?;
    let mut out = Vec::new();
    for (name, p) in entries {
        if sysfs::attr(&p.join("type")).as_deref() != Some("Battery")
            || sysfs::attr(&p.join("scope")).as_deref() == Some("Device")
        {
            continue;
        }
        if sysfs::attr_u64(&p.join("present")) == Some(0) {
            continue;
        }
        let pair =
            |a: &str, b: &str| Some((sysfs::attr_u64(&p.join(a))?, sysfs::attr_u64(&p.join(b))?));
        let (full, design, source) = match pair("energy_full", "energy_full_design") {
            Some((f, d)) => (Some(f), Some(d), "energy_full"),
            None => match pair("charge_full", "charge_full_design") {
                Some((f, d)) => (Some(f), Some(d), "charge_full"),
                None => (None, None, ""),
            },
        };
        out.push(Battery {
            source: if source.is_empty() {
                String::new()
            } else {
                format!("/sys/class/power_supply/{name}/{source}")
            },
            full,
            design,
            health: sysfs::attr(&p.join("health")),
            status: sysfs::attr(&p.join("status")),
            name,
        });
    }
    if out.is_empty() {
        return Err(ProbeError::Unusable {
            what: sysfs::shown(root, &dir),
            reason: "no system battery".into(),
        });
    }
    Ok(out)
}

/// Feeds batteries.
pub fn feed(
    engine: &mut Engine,
    cfg: &BatteryConfig,
    batteries: &[Battery],
    out: &mut Vec<FaultEvent>,
) {
    let db = Debounce {
        raise_after: cfg.raise_after,
        clear_after: cfg.clear_after,
        critical_after: 0,
    };
    for b in batteries {
        if let Some(pct) = b.capacity_pct() {
            let levels = Levels {
                warn: None,
                critical: Some(cfg.wear_below_pct),
                hysteresis: cfg.hysteresis,
                below: true,
            };
            let obs = Obs {
                kind: FaultKind::BatteryWear,
                subject: &b.name,
                source: &b.source,
                unit: "%",
                label: "full charge vs design",
            };
            out.extend(engine.level(obs, pct, &levels, Severities::only(Severity::Minor), db));
        }
        if b.health.is_some() {
            let subject = format!("{} health", b.name);
            let source = format!("/sys/class/power_supply/{}/health", b.name);
            let health = b.health.as_deref().unwrap_or("");
            let label = if b.failed() {
                format!("battery health {health}")
            } else {
                format!("failing (health now {health})")
            };
            let obs = Obs {
                kind: FaultKind::BatteryWear,
                subject: &subject,
                source: &source,
                unit: "state",
                label: &label,
            };
            let v = if b.failed() { 1.0 } else { 0.0 };
            out.extend(engine.flag(obs, b.failed(), Severity::Major, v, 1.0, db));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fixture(name: &str) -> Root {
        Root::new(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures/battery_wear")
                .join(name),
        )
    }

    #[test]
    fn laptop_batteries() {
        let v = read(&fixture("laptop")).unwrap();
        let s: Vec<_> = v
            .iter()
            .map(|b| {
                (
                    b.name.as_str(),
                    b.capacity_pct().map(|p| p.round()),
                    b.failed(),
                )
            })
            .collect();
        // BAT0: energy_* worn to 55 %; BAT1: charge_* and Dead; hidpp mouse and AC skipped.
        assert_eq!(s, [("BAT0", Some(55.0), false), ("BAT1", Some(90.0), true)]);
        assert_eq!(v[0].source, "/sys/class/power_supply/BAT0/energy_full");
        assert_eq!(v[1].source, "/sys/class/power_supply/BAT1/charge_full");
    }

    #[test]
    fn odd_batteries() {
        let v = read(&fixture("odd")).unwrap();
        // BAT0: design 0 (garbage firmware), no health file; BAT1 not present (skipped).
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].capacity_pct(), None);
        assert!(!v[0].failed());
    }

    #[test]
    fn desktop_has_none() {
        assert!(read(&fixture("desktop")).is_err());
        assert!(read(&fixture("missing")).is_err());
    }
}
