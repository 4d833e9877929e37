//! Disk health through `smartctl --json` (smartmontools 7.0+), when it is installed.
//!
//! `smartctl --scan --json` lists the disks; `smartctl --json -i -H -A -d TYPE DEV` reads
//! each. What counts: overall health failed (critical); NVMe `critical_warning` ≠ 0
//! (critical) and `percentage_used` ≥ 90 (major); and the counters (major):
//! - current pending (197) and offline uncorrectable (198) sectors are sectors the disk
//!   cannot read now: any is a fault, also on first sight (as smartd's `-C`/`-U` and the
//!   usual SMART templates treat them); the fault stays open while the count is not zero
//!   and is updated when it rises;
//! - reallocated (5), reported uncorrectable (187), UDMA CRC (199) and NVMe
//!   `media_errors` are lifetime totals: a used disk carries some, so they alert on a rise
//!   from the baseline taken when the disk is first seen.
//!
//! Counter state persists across agent restarts ([`Scope::Lifetime`]: the disk keeps the
//! counts across boots). Subjects start with the disk serial, so a replaced disk (new
//! serial) starts from its own baseline and the old serial's faults clear as "no longer
//! present".
//!
//! smartctl is slow (it wakes sleeping disks' electronics) and needs root to open them, so
//! it runs every `every` passes, under a timeout, through [`SmartRunner`] (tests point it
//! at a script printing captured JSON). Its exit status is a bit mask that is non-zero for
//! healthy-but-noteworthy disks, so the JSON is read whatever the status.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use vigia_protocol::{FaultEvent, FaultKind, Severity};

use super::baseline::Baselines;
use super::baseline::Scope;
use super::counters::feed_counter;
use super::error::ProbeError;
use crate::detect::config::SmartConfig;
use crate::detect::{CounterClear, CounterRule, Debounce, Engine, Num, Obs};

/// ATA attributes watched for a rise: (id, name used in subjects).
pub const ATA_COUNTERS: &[(u64, &str)] = &[
    (5, "Reallocated_Sector_Ct"),
    (187, "Reported_Uncorrect"),
    (197, "Current_Pending_Sector"),
    (198, "Offline_Uncorrectable"),
    (199, "UDMA_CRC_Error_Count"),
];

/// How a counter reads in messages, and whether it is a count of sectors bad now (a
/// fault while not zero) rather than a lifetime total (a fault when it rises).
struct CounterKind {
    label: &'static str,
    bad_now: bool,
}

fn counter_kind(name: &str) -> CounterKind {
    let (label, bad_now) = match name {
        "Reallocated_Sector_Ct" => ("reallocated sectors", false),
        "Reported_Uncorrect" => ("uncorrectable errors reported", false),
        "Current_Pending_Sector" => ("sectors pending reallocation", true),
        "Offline_Uncorrectable" => ("sectors found uncorrectable offline", true),
        "UDMA_CRC_Error_Count" => ("UDMA CRC errors (cable or connector)", false),
        "media_errors" => ("NVMe media errors", false),
        _ => ("", false),
    };
    CounterKind { label, bad_now }
}

/// The NVMe `critical_warning` bits (NVMe base specification, SMART / Health log).
fn critical_warning_text(bits: u64) -> String {
    const BITS: [&str; 6] = [
        "spare capacity below threshold",
        "temperature out of range",
        "reliability degraded by media or internal errors",
        "media read-only",
        "volatile memory backup failed",
        "persistent memory region read-only",
    ];
    let set: Vec<&str> = BITS
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, t)| *t)
        .collect();
    if set.is_empty() {
        format!("0x{bits:02x}")
    } else {
        format!("0x{bits:02x}: {}", set.join(", "))
    }
}

/// One counter of one disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmartCounter {
    /// Attribute name.
    pub name: String,
    /// Raw value.
    pub value: u64,
}

/// What smartctl said about one disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmartDisk {
    /// Device path (`/dev/sda`).
    pub device: String,
    /// Serial number.
    pub serial: String,
    /// Model.
    #[serde(default)]
    pub model: String,
    /// `smart_status.passed`.
    #[serde(default)]
    pub passed: Option<bool>,
    /// Counters watched for a rise.
    #[serde(default)]
    pub counters: Vec<SmartCounter>,
    /// NVMe `critical_warning` bit field.
    #[serde(default)]
    pub nvme_critical_warning: Option<u64>,
    /// NVMe `percentage_used`.
    #[serde(default)]
    pub nvme_percentage_used: Option<f64>,
}

/// A device from `smartctl --scan`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanEntry {
    /// `/dev/sda`.
    pub name: String,
    /// `-d` type (`sat`, `nvme`).
    pub kind: String,
}

/// Parses `smartctl --scan --json`.
pub fn parse_scan(json: &[u8]) -> Result<Vec<ScanEntry>, String> {
    let v: Value = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    let devs = v
        .get("devices")
        .and_then(Value::as_array)
        .ok_or("no \"devices\" list")?;
    Ok(devs
        .iter()
        .filter_map(|d| {
            Some(ScanEntry {
                name: d.get("name")?.as_str()?.to_string(),
                kind: d
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("auto")
                    .to_string(),
            })
        })
        .collect())
}

/// Parses one disk's `smartctl --json -i -H -A` output. `Err` carries smartctl's own
/// error message (e.g. "Permission denied") when it could not read the disk.
pub fn parse_disk(device: &str, json: &[u8]) -> Result<SmartDisk, String> {
    let v: Value = serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
    let serial = v
        .get("serial_number")
        .and_then(Value::as_str)
        .map(str::trim)
        .unwrap_or("");
    if serial.is_empty() {
        let msg = v
            .pointer("/smartctl/messages/0/string")
            .and_then(Value::as_str)
            .unwrap_or("no serial number in smartctl output");
        return Err(msg.to_string());
    }
    let mut counters = Vec::new();
    if let Some(table) = v
        .pointer("/ata_smart_attributes/table")
        .and_then(Value::as_array)
    {
        for a in table {
            let id = a.get("id").and_then(Value::as_u64);
            let Some((_, name)) = ATA_COUNTERS.iter().find(|(i, _)| Some(*i) == id) else {
                continue;
            };
            // Some vendors pack extra data in the high bytes of raw values; the counter
            // itself is in the low 32 bits.
            if let Some(raw) = a.pointer("/raw/value").and_then(Value::as_u64) {
                counters.push(SmartCounter {
                    name: (*name).to_string(),
                    value: raw & 0xffff_ffff,
                });
            }
        }
    }
    let nvme = v.get("nvme_smart_health_information_log");
    if let Some(me) = nvme
        .and_then(|n| n.get("media_errors"))
        .and_then(Value::as_u64)
    {
        counters.push(SmartCounter {
            name: "media_errors".into(),
            value: me,
        });
    }
    Ok(SmartDisk {
        device: device.to_string(),
        serial: serial.to_string(),
        model: v
            .get("model_name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim()
            .to_string(),
        passed: v.pointer("/smart_status/passed").and_then(Value::as_bool),
        counters,
        nvme_critical_warning: nvme
            .and_then(|n| n.get("critical_warning"))
            .and_then(Value::as_u64),
        nvme_percentage_used: nvme
            .and_then(|n| n.get("percentage_used"))
            .and_then(Value::as_f64),
    })
}

/// What one scan found: the disks read, and (device, smartctl's message) for the others.
pub type ScanResult = (Vec<SmartDisk>, Vec<(String, String)>);

/// Runs smartctl with a timeout.
#[derive(Debug, Clone)]
pub struct SmartRunner {
    program: PathBuf,
    timeout: Duration,
}

/// Finds `name` in `PATH` or the sbin directories (often missing from a service's PATH).
fn locate(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl SmartRunner {
    /// Finds the program; `Err` when it is not installed.
    pub fn new(program: &str, timeout: Duration) -> Result<Self, ProbeError> {
        let program = locate(program).ok_or_else(|| ProbeError::Unusable {
            what: program.to_string(),
            reason: "not installed (install smartmontools 7.0+ for disk health)".into(),
        })?;
        Ok(Self { program, timeout })
    }

    /// The program run.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Runs it with `args` and returns its stdout, whatever its exit status.
    pub fn run(&self, args: &[&str]) -> Result<Vec<u8>, ProbeError> {
        let io = |source| ProbeError::Io {
            path: self.program.clone(),
            source,
        };
        let mut child = Command::new(&self.program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io)?;
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| io(std::io::Error::other("no stdout")))?;
        // Read on a thread so a chatty child never blocks on a full pipe while we wait.
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            stdout.read_to_end(&mut buf).map(|_| buf)
        });
        let deadline = Instant::now() + self.timeout;
        loop {
            match child.try_wait().map_err(io)? {
                Some(_) => break,
                None if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(ProbeError::Unusable {
                        what: format!("{} {}", self.program.display(), args.join(" ")),
                        reason: format!("no answer within {:?}; killed", self.timeout),
                    });
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        reader
            .join()
            .map_err(|_| io(std::io::Error::other("reader thread panicked")))?
            .map_err(io)
    }

    /// Scans and reads every disk. Disks smartctl cannot read are returned as errors
    /// (device, message) beside the ones it could.
    pub fn read_all(&self) -> Result<ScanResult, ProbeError> {
        let scan = self.run(&["--scan", "--json"])?;
        let devices = parse_scan(&scan).map_err(|reason| ProbeError::Unusable {
            what: "smartctl --scan --json".into(),
            reason,
        })?;
        let mut disks = Vec::new();
        let mut failed = Vec::new();
        for d in devices {
            let out = self.run(&["--json", "-i", "-H", "-A", "-d", &d.kind, &d.name])?;
            match parse_disk(&d.name, &out) {
                Ok(disk) => disks.push(disk),
                Err(msg) => failed.push((d.name, msg)),
            }
        }
        Ok((disks, failed))
    }
}

/// Feeds disks.
pub fn feed(
    engine: &mut Engine,
    baselines: &Baselines,
    cfg: &SmartConfig,
    disks: &[SmartDisk],
    out: &mut Vec<FaultEvent>,
) {
    let db = Debounce::IMMEDIATE;
    for d in disks {
        let source = format!("smartctl {}", d.device);
        if let Some(passed) = d.passed {
            let obs = Obs {
                kind: FaultKind::DiskHealth,
                subject: &d.serial,
                source: &format!("{source} smart_status.passed"),
                unit: "state",
                label: if passed {
                    "failing its SMART overall health check"
                } else {
                    "SMART overall health failed"
                },
            };
            out.extend(engine.flag(
                obs,
                !passed,
                Severity::Critical,
                if passed { 1.0 } else { 0.0 },
                1.0,
                db,
            ));
        }
        if let Some(w) = d.nvme_critical_warning {
            let subject = format!("{} critical_warning", d.serial);
            let label = if w != 0 {
                format!("NVMe critical warning {}", critical_warning_text(w))
            } else {
                "reporting an NVMe critical warning".to_string()
            };
            let obs = Obs {
                kind: FaultKind::DiskHealth,
                subject: &subject,
                source: &format!("{source} nvme_smart_health_information_log.critical_warning"),
                unit: "bits",
                label: &label,
            };
            out.extend(engine.flag(obs, w != 0, Severity::Critical, w as f64, 0.0, db));
        }
        if let Some(used) = d.nvme_percentage_used {
            let subject = format!("{} percentage_used", d.serial);
            let worn = used >= cfg.percentage_used;
            let label = if worn {
                format!(
                    "worn out: {} % of its rated endurance used, major at {} %",
                    Num(used),
                    Num(cfg.percentage_used)
                )
            } else {
                format!("worn out ({} % of its rated endurance used)", Num(used))
            };
            let obs = Obs {
                kind: FaultKind::DiskHealth,
                subject: &subject,
                source: &format!("{source} nvme_smart_health_information_log.percentage_used"),
                unit: "%",
                label: &label,
            };
            out.extend(engine.flag(obs, worn, Severity::Major, used, cfg.percentage_used, db));
        }
        for c in &d.counters {
            let subject = format!("{} {}", d.serial, c.name);
            let kind = counter_kind(&c.name);
            let obs = Obs {
                kind: FaultKind::DiskHealth,
                subject: &subject,
                source: &format!("{source} {}", c.name),
                unit: "count",
                label: if kind.label.is_empty() {
                    &c.name
                } else {
                    kind.label
                },
            };
            let rule = CounterRule {
                severity: Severity::Major,
                min_increase: cfg.min_increase,
                clear: if kind.bad_now {
                    CounterClear::AtBaseline
                } else {
                    CounterClear::Quiet(cfg.clear_after)
                },
                since: if kind.bad_now {
                    "(0 on a healthy disk)"
                } else {
                    ""
                },
            };
            feed_counter(engine, baselines, Scope::Lifetime, obs, c.value, rule, out);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures/disk_health")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn parses_ata() {
        let d = parse_disk("/dev/sda", &fixture("sda-ata-healthy.json")).unwrap();
        assert_eq!(d.serial, "Z4Y7SJBD");
        assert_eq!(d.model, "ST2000DM008-2FR102");
        assert_eq!(d.passed, Some(true));
        let c: Vec<_> = d
            .counters
            .iter()
            .map(|c| (c.name.as_str(), c.value))
            .collect();
        assert_eq!(
            c,
            [
                ("Reallocated_Sector_Ct", 0),
                ("Reported_Uncorrect", 0),
                ("Current_Pending_Sector", 0),
                ("Offline_Uncorrectable", 0),
                ("UDMA_CRC_Error_Count", 0),
            ]
        );
        assert_eq!(d.nvme_critical_warning, None);
    }

    #[test]
    fn parses_nvme() {
        let d = parse_disk("/dev/nvme0", &fixture("nvme0-worn.json")).unwrap();
        assert_eq!(d.serial, "S4EWNX0R123456");
        assert_eq!(d.nvme_critical_warning, Some(4));
        assert_eq!(d.nvme_percentage_used, Some(93.0));
        assert_eq!(
            d.counters,
            [SmartCounter {
                name: "media_errors".into(),
                value: 2
            }]
        );
    }

    #[test]
    fn permission_denied_and_garbage() {
        let e = parse_disk("/dev/sda", &fixture("sda-permission-denied.json")).unwrap_err();
        assert!(e.contains("Permission denied"), "{e}");
        assert!(parse_disk("/dev/sda", b"").is_err());
        assert!(parse_disk("/dev/sda", b"{\"serial_number\": 7}").is_err());
        let scan = parse_scan(&fixture("scan.json")).unwrap();
        assert_eq!(
            scan,
            [
                ScanEntry {
                    name: "/dev/sda".into(),
                    kind: "sat".into()
                },
                ScanEntry {
                    name: "/dev/nvme0".into(),
                    kind: "nvme".into()
                },
            ]
        );
        assert!(parse_scan(b"[]").is_err());
    }

    #[test]
    fn missing_program_is_unsupported() {
        let e = SmartRunner::new("/nonexistent/smartctl", Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("not installed"), "{e}");
    }

    #[test]
    fn runner_kills_a_hung_program() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("hang.sh");
        std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let r = SmartRunner::new(script.to_str().unwrap(), Duration::from_millis(200)).unwrap();
        let started = Instant::now();
        let e = r.run(&["--scan"]).unwrap_err();
        assert!(e.to_string().contains("killed"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
