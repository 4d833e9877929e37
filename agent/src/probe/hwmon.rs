//! Temperatures and fans: hwmon (`/sys/class/hwmon/hwmon*/{temp,fan,pwm}*`) and thermal
//! zones (`/sys/class/thermal/thermal_zone*`, the `critical` trip point).
//!
//! A temperature is judged against its own critical point (`tempN_crit`, else
//! `tempN_max`; a zone's `critical` trip): at it is critical, within the configured margin
//! (5 °C) sustained is a warning. A sensor without any critical point is read for the
//! snapshot but never judged: the agent does not guess what is too hot for a chip.
//! `tempN_alarm`/`tempN_crit_alarm` set by the chip is a fault of its own.
//!
//! A fan is failed when the chip says so (`fanN_fault`, `fanN_alarm`), or when it reads
//! 0 rpm although it should spin: `fanN_enable` = 1, its `pwmN` > 0, or `pwmN_enable` = 0
//! (full speed). Without any of those, 0 rpm is not judged: many laptop and desktop fans
//! stop on purpose when cool. The evidence is the speed against what was expected: the
//! chip's minimum (`fanN_min`, when set), else "spinning" (1 rpm), with what says so.
use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use vigia_protocol::{FaultEvent, FaultKind, Severity};

use super::error::ProbeError;
use super::sysfs::{self, Root};
use crate::detect::config::{is_ignored, FanConfig, TempConfig};
use crate::detect::{Debounce, Engine, Num, Obs, Severities};

/// One temperature reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TempReading {
    /// `chip/label` (`coretemp/Package id 0`) or `thermal/zone:type`.
    pub subject: String,
    /// The file read.
    #[serde(default)]
    pub source: String,
    /// Degrees Celsius.
    pub celsius: f64,
    /// Critical point, °C, if the sensor has one.
    #[serde(default)]
    pub crit: Option<f64>,
    /// The chip's own alarm flag, where it has one.
    #[serde(default)]
    pub alarm: Option<bool>,
}

/// One fan reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FanReading {
    /// `chip/label` (`nct6775/fan2`).
    pub subject: String,
    /// The file read.
    #[serde(default)]
    pub source: String,
    /// Speed, rpm.
    #[serde(default)]
    pub rpm: Option<u64>,
    /// Whether the fan should be spinning (`None`: cannot tell).
    #[serde(default)]
    pub should_spin: Option<bool>,
    /// `fanN_fault` or `fanN_alarm` set.
    #[serde(default)]
    pub fault: bool,
    /// The chip's minimum (`fanN_min`), when one is set (0 means none).
    #[serde(default)]
    pub min_rpm: Option<u64>,
    /// What says the fan should spin (`pwm2 = 255`), for the message.
    #[serde(default)]
    pub spin_because: String,
    /// Which flag reported the fault (`fan4_alarm`), for the message.
    #[serde(default)]
    pub fault_flag: String,
}

/// Millidegrees to degrees; absurd values (sensor errors read as -273 or 255 °C) are None.
fn milli(v: i64) -> Option<f64> {
    let c = v as f64 / 1000.0;
    (-60.0..=200.0).contains(&c).then_some(c)
}

/// Indices N of files named `{prefix}N{suffix}` in a directory listing.
fn indices(names: &[String], prefix: &str, suffix: &str) -> Vec<u32> {
    let mut v: Vec<u32> = names
        .iter()
        .filter_map(|n| n.strip_prefix(prefix)?.strip_suffix(suffix)?.parse().ok())
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn flag(dir: &Path, name: &str) -> bool {
    sysfs::attr_u64(&dir.join(name)) == Some(1)
}

/// Sensors and fans of one hwmon directory.
fn read_chip(
    root: &Root,
    chip: &str,
    dir: &Path,
    temps: &mut Vec<TempReading>,
    fans: &mut Vec<FanReading>,
) {
    let names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => return,
    };
    for n in indices(&names, "temp", "_input") {
        let input = dir.join(format!("temp{n}_input"));
        let Some(celsius) = sysfs::attr_i64(&input).and_then(milli) else {
            continue; // unreadable (sensor asleep) or garbage: no reading, not a zero
        };
        let label =
            sysfs::attr(&dir.join(format!("temp{n}_label"))).unwrap_or_else(|| format!("temp{n}"));
        let crit = sysfs::attr_i64(&dir.join(format!("temp{n}_crit")))
            .and_then(milli)
            .or_else(|| sysfs::attr_i64(&dir.join(format!("temp{n}_max"))).and_then(milli))
            .filter(|c| *c > 0.0);
        let alarms = [format!("temp{n}_alarm"), format!("temp{n}_crit_alarm")];
        let alarm = alarms
            .iter()
            .any(|a| dir.join(a).exists())
            .then(|| alarms.iter().any(|a| flag(dir, a)));
        temps.push(TempReading {
            subject: format!("{chip}/{label}"),
            source: sysfs::shown(root, &input),
            celsius,
            crit,
            alarm,
        });
    }
    for n in indices(&names, "fan", "_input") {
        let input = dir.join(format!("fan{n}_input"));
        let rpm = sysfs::attr_u64(&input);
        let fault_flag = [format!("fan{n}_fault"), format!("fan{n}_alarm")]
            .into_iter()
            .find(|f| flag(dir, f))
            .unwrap_or_default();
        let fault = !fault_flag.is_empty();
        let enable = sysfs::attr_u64(&dir.join(format!("fan{n}_enable")));
        let pwm = sysfs::attr_u64(&dir.join(format!("pwm{n}")));
        let pwm_enable = sysfs::attr_u64(&dir.join(format!("pwm{n}_enable")));
        let (should_spin, spin_because) = match (enable, pwm, pwm_enable) {
            (Some(1), _, _) => (Some(true), format!("fan{n}_enable = 1")),
            (_, _, Some(0)) => (Some(true), format!("pwm{n}_enable = 0: full speed")),
            (_, Some(p), _) => (Some(p > 0), format!("pwm{n} = {p}")),
            (Some(0), None, None) => (Some(false), String::new()),
            _ => (None, String::new()),
        };
        let min_rpm = sysfs::attr_u64(&dir.join(format!("fan{n}_min"))).filter(|m| *m > 0);
        if rpm.is_none() && !fault {
            continue;
        }
        let label =
            sysfs::attr(&dir.join(format!("fan{n}_label"))).unwrap_or_else(|| format!("fan{n}"));
        fans.push(FanReading {
            subject: format!("{chip}/{label}"),
            source: sysfs::shown(root, &input),
            rpm,
            should_spin,
            fault,
            min_rpm,
            spin_because,
            fault_flag,
        });
    }
}

/// Critical trip point of a thermal zone, °C.
fn zone_crit(dir: &Path) -> Option<f64> {
    let names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    indices(&names, "trip_point_", "_type")
        .into_iter()
        .find_map(|i| {
            let t = sysfs::attr(&dir.join(format!("trip_point_{i}_type")))?;
            (t == "critical").then(|| {
                sysfs::attr_i64(&dir.join(format!("trip_point_{i}_temp"))).and_then(milli)
            })?
        })
}

/// Reads every hwmon chip and thermal zone. `Err` when neither exists.
pub fn read(root: &Root) -> Result<(Vec<TempReading>, Vec<FanReading>), ProbeError> {
    let mut temps = Vec::new();
    let mut fans = Vec::new();
    let hwmon = root.path("/sys/class/hwmon");
    let thermal = root.path("/sys/class/thermal");
    let chips = sysfs::entries(&hwmon, "hwmon");
    let zones = sysfs::entries(&thermal, "thermal_zone");
    if chips.is_err() && zones.is_err() {
        return Err(ProbeError::Unusable {
            what: "/sys/class/hwmon, /sys/class/thermal".into(),
            reason: "neither exists".into(),
        });
    }
    let chips = chips.unwrap_or_default();
    // Chip names repeat (two NVMe drives are both "nvme"); the hwmon index tells them apart.
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for (_, dir) in &chips {
        if let Some(n) = sysfs::attr(&dir.join("name")) {
            *seen.entry(n).or_default() += 1;
        }
    }
    for (hw, dir) in &chips {
        let name = sysfs::attr(&dir.join("name")).unwrap_or_else(|| hw.clone());
        let chip = if seen.get(&name).copied().unwrap_or(0) > 1 {
            format!("{name}.{hw}")
        } else {
            name
        };
        read_chip(root, &chip, dir, &mut temps, &mut fans);
    }
    for (zone, dir) in zones.unwrap_or_default() {
        let file = dir.join("temp");
        let Some(celsius) = sysfs::attr_i64(&file).and_then(milli) else {
            continue;
        };
        let kind = sysfs::attr(&dir.join("type")).unwrap_or_default();
        temps.push(TempReading {
            subject: format!("thermal/{zone}:{kind}"),
            source: sysfs::shown(root, &file),
            celsius,
            crit: zone_crit(&dir),
            alarm: None,
        });
    }
    Ok((temps, fans))
}

/// Feeds temperatures.
pub fn feed_temps(
    engine: &mut Engine,
    cfg: &TempConfig,
    temps: &[TempReading],
    out: &mut Vec<FaultEvent>,
) {
    for t in temps {
        let (levels, db, on) = cfg.for_sensor(&t.subject, t.crit);
        if !on {
            continue;
        }
        let obs = Obs {
            kind: FaultKind::Overheating,
            subject: &t.subject,
            source: &t.source,
            unit: "°C",
            label: "temperature",
        };
        let sev = Severities {
            warn: Severity::Major,
            critical: Severity::Critical,
        };
        if levels.critical.is_some() {
            out.extend(engine.level(obs, t.celsius, &levels, sev, db));
        }
        let Some(alarm) = t.alarm else { continue };
        let alarm_subject = format!("{} alarm", t.subject);
        let label = match (alarm, t.crit) {
            (true, Some(crit)) => format!(
                "alarm set by the chip at {} °C, critical at {} °C",
                Num(t.celsius),
                Num(crit)
            ),
            (true, None) => format!("alarm set by the chip at {} °C", Num(t.celsius)),
            (false, _) => format!("in chip alarm, now {} °C", Num(t.celsius)),
        };
        let obs = Obs {
            subject: &alarm_subject,
            label: &label,
            ..obs
        };
        let crit = t.crit.unwrap_or(f64::NAN);
        out.extend(engine.flag(
            obs,
            alarm,
            Severity::Critical,
            t.celsius,
            crit,
            Debounce::IMMEDIATE,
        ));
    }
}

/// Feeds fans.
pub fn feed_fans(
    engine: &mut Engine,
    cfg: &FanConfig,
    fans: &[FanReading],
    out: &mut Vec<FaultEvent>,
) {
    for f in fans {
        if is_ignored(&cfg.ignore_fans, &f.subject) {
            continue;
        }
        let stopped = f.rpm == Some(0) && f.should_spin == Some(true);
        // What the fan should do: its minimum when the chip has one, else spin at all.
        let expected = match f.min_rpm {
            Some(min) => format!("expected at least {min} rpm ({})", fan_min_file(&f.source)),
            None if f.spin_because.is_empty() => "expected spinning".to_string(),
            None => format!("expected spinning ({})", f.spin_because),
        };
        let speed = f.rpm.map(|r| format!("{r} rpm"));
        let label = if f.fault {
            let flag = if f.fault_flag.is_empty() {
                "fault"
            } else {
                &f.fault_flag
            };
            match (&speed, f.min_rpm) {
                (Some(s), Some(min)) => {
                    format!("{flag} set by the chip at {s}, minimum {min} rpm")
                }
                (Some(s), None) => format!("{flag} set by the chip at {s}"),
                (None, _) => format!("{flag} set by the chip"),
            }
        } else if stopped {
            format!("stopped at 0 rpm, {expected}")
        } else {
            match &speed {
                Some(s) => format!("stopped or faulted, now {s}"),
                None => "stopped or faulted".to_string(),
            }
        };
        let obs = Obs {
            kind: FaultKind::FanFailure,
            subject: &f.subject,
            source: &f.source,
            unit: "rpm",
            label: &label,
        };
        // Evidence: the speed against the minimum (or 1 rpm: spinning at all) when
        // readable, else the chip's fault flag itself.
        let (obs, value, threshold) = match f.rpm {
            Some(rpm) => (obs, rpm as f64, f.min_rpm.unwrap_or(1) as f64),
            None => (
                Obs {
                    unit: "flag",
                    ..obs
                },
                1.0,
                0.0,
            ),
        };
        let failed = f.fault || stopped;
        out.extend(engine.flag(
            obs,
            failed,
            Severity::Critical,
            value,
            threshold,
            cfg.debounce(),
        ));
    }
}

/// `fan2_min` for the source `/sys/class/hwmon/hwmon0/fan2_input`.
fn fan_min_file(source: &str) -> String {
    let file = source.rsplit('/').next().unwrap_or(source);
    match file.strip_suffix("_input") {
        Some(fan) => format!("{fan}_min"),
        None => "its minimum".to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Root {
        Root::new(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures/overheating")
                .join(name),
        )
    }

    #[test]
    fn desktop_sensors_fans_and_zones() {
        let (temps, fans) = read(&fixture("desktop")).unwrap();
        let t: Vec<_> = temps
            .iter()
            .map(|t| (t.subject.as_str(), t.celsius, t.crit, t.alarm))
            .collect();
        assert_eq!(
            t,
            [
                ("coretemp/Package id 0", 52.0, Some(100.0), Some(false)),
                ("coretemp/Core 0", 97.0, Some(100.0), Some(false)),
                ("nvme.hwmon1/Composite", 38.85, Some(84.85), Some(false)),
                ("nvme.hwmon2/Composite", 41.85, Some(84.85), Some(true)),
                ("nct6775/SYSTIN", 30.0, None, None),
                ("thermal/thermal_zone0:acpitz", 27.8, Some(119.0), None),
                ("thermal/thermal_zone1:x86_pkg_temp", 52.0, None, None),
            ]
        );
        assert_eq!(temps[0].source, "/sys/class/hwmon/hwmon0/temp1_input");
        let f: Vec<_> = fans
            .iter()
            .map(|f| (f.subject.as_str(), f.rpm, f.should_spin, f.fault))
            .collect();
        assert_eq!(
            f,
            [
                ("nct6775/fan1", Some(1150), Some(true), false),
                ("nct6775/fan2", Some(0), Some(true), false),
                ("nct6775/fan3", Some(0), None, false),
                ("nct6775/fan4", Some(0), Some(false), true),
            ]
        );
    }

    #[test]
    fn garbage_and_missing_values_are_skipped() {
        let (temps, fans) = read(&fixture("odd")).unwrap();
        // temp1: garbage, temp2: -273150 (sensor error), temp3: empty file: none read.
        assert!(temps.is_empty(), "{temps:?}");
        assert!(fans.is_empty());
    }

    #[test]
    fn unsupported_without_hwmon_or_thermal() {
        assert!(read(&fixture("missing")).is_err());
    }

    #[test]
    fn permission_denied_sensor_is_skipped_not_zero() {
        let dir = tempfile::tempdir().unwrap();
        let chip = dir.path().join("sys/class/hwmon/hwmon0");
        std::fs::create_dir_all(&chip).unwrap();
        std::fs::write(chip.join("name"), "k10temp\n").unwrap();
        std::fs::write(chip.join("temp1_input"), "45000\n").unwrap();
        std::fs::write(chip.join("temp2_input"), "46000\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            chip.join("temp2_input"),
            std::fs::Permissions::from_mode(0o000),
        )
        .unwrap();
        let (temps, _) = read(&Root::new(dir.path())).unwrap();
        assert_eq!(temps[0].subject, "k10temp/temp1");
        // root reads through chmod 000; only an unprivileged run can check the denial.
        if std::fs::read(chip.join("temp2_input")).is_err() {
            assert_eq!(temps.len(), 1, "an unreadable sensor is left out");
        }
    }
}
