//! Error counters in sysfs that only ever rise: block device I/O errors
//! (`/sys/block/*/device/ioerr_cnt`), EDAC memory controllers
//! (`/sys/devices/system/edac/mc/mc*/{ce,ue}_count`) and PCIe AER
//! (`/sys/bus/pci/devices/*/aer_dev_{correctable,nonfatal,fatal}`, the `TOTAL_ERR_*` line).
//!
//! The kernel starts them at zero at every boot, so each alerts on a rise from a zero
//! baseline per boot ([`Scope::Boot`], keyed by `/proc/sys/kernel/random/boot_id`): what
//! the kernel counted before the agent's first start in this boot is reported at that
//! start, an agent restarted within the boot reports only what is new since it stopped,
//! and a new boot starts from zero again. Without a boot id the first reading is the
//! baseline (errors older than the agent are then not reported; the agent says why at
//! start). A counter that drops (a device reset) resets the baseline.
//!
//! `ioerr_cnt` counts every SCSI command that failed, so a device without a medium (an
//! empty card reader or optical drive, `size` 0) is skipped: its media polling fails by
//! design.
use serde::{Deserialize, Serialize};
use vigia_protocol::{FaultEvent, FaultKind, Severity};

use super::baseline::Baselines;
use super::baseline::Scope;
use super::error::ProbeError;
use super::sysfs::{self, Root};
use crate::detect::config::CounterConfig;
use crate::detect::{CounterClear, CounterRule, CounterStart, Engine, Obs};

/// I/O errors of one block device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IoErrors {
    /// Kernel name (`sda`).
    pub device: String,
    /// `ioerr_cnt`, or the count of kernel log messages.
    pub count: u64,
    /// Where it was read; empty means `/sys/block/{device}/device/ioerr_cnt`.
    #[serde(default)]
    pub source: String,
}

/// Reads `ioerr_cnt` of every SCSI/ATA block device. Devices without the attribute
/// (NVMe, virtio, loop) are not listed; none at all is an error ("unsupported").
pub fn read_io_errors(root: &Root) -> Result<Vec<IoErrors>, ProbeError> {
    let dir = root.path("/sys/block");
    let entries = sysfs::entries(&dir, "").map_err(|source| ProbeError::Io {
        path: dir.clone(),
        source,
    })?;
    let mut out = Vec::new();
    let mut present = 0;
    for (name, path) in entries {
        let file = path.join("device/ioerr_cnt");
        if !file.exists() {
            continue;
        }
        present += 1;
        if sysfs::attr_u64(&path.join("size")) == Some(0) {
            tracing::debug!(device = %name, "no medium; ioerr_cnt not watched");
            continue;
        }
        match sysfs::attr_u64(&file) {
            Some(count) => out.push(IoErrors {
                device: name,
                count,
                source: String::new(),
            }),
            None => {
                tracing::debug!(path = %file.display(), "ioerr_cnt unreadable or garbage; skipped")
            }
        }
    }
    if present == 0 {
        return Err(ProbeError::Unusable {
            what: sysfs::shown(root, &dir),
            reason: "no block device exposes device/ioerr_cnt (NVMe and virtio disks do not)"
                .into(),
        });
    }
    Ok(out)
}

/// Counts of one EDAC memory controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdacMc {
    /// Controller (`mc0`).
    pub mc: String,
    /// Corrected errors.
    pub ce: Option<u64>,
    /// Uncorrected errors.
    pub ue: Option<u64>,
}

/// Reads every EDAC memory controller; none is an error.
pub fn read_edac(root: &Root) -> Result<Vec<EdacMc>, ProbeError> {
    let dir = root.path("/sys/devices/system/edac/mc");
    let no_edac = |detail: String| ProbeError::Unusable {
        what: sysfs::shown(root, &dir),
        reason: format!(
            "no EDAC memory controller (no ECC memory, or its driver is not loaded){detail}"
        ),
    };
    let entries = sysfs::entries(&dir, "mc").map_err(|e| no_edac(format!(": {e}")))?;
    let out: Vec<EdacMc> = entries
        .into_iter()
        .filter(|(n, _)| n[2..].chars().all(|c| c.is_ascii_digit()) && n.len() > 2)
        .map(|(mc, p)| EdacMc {
            ce: sysfs::attr_u64(&p.join("ce_count")),
            ue: sysfs::attr_u64(&p.join("ue_count")),
            mc,
        })
        .collect();
    if out.is_empty() {
        return Err(no_edac(String::new()));
    }
    Ok(out)
}

/// AER totals of one PCIe device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AerDevice {
    /// PCI address (`0000:00:1c.0`).
    pub device: String,
    /// `TOTAL_ERR_COR`.
    #[serde(default)]
    pub correctable: Option<u64>,
    /// `TOTAL_ERR_NONFATAL`.
    #[serde(default)]
    pub nonfatal: Option<u64>,
    /// `TOTAL_ERR_FATAL`.
    #[serde(default)]
    pub fatal: Option<u64>,
}

/// Parses an `aer_dev_*` file: the value of its `TOTAL_ERR_*` line.
pub fn parse_aer_total(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.trim().split_once(char::is_whitespace)?;
        k.starts_with("TOTAL_ERR_")
            .then(|| sysfs::parse_u64(v))
            .flatten()
    })
}

/// Reads AER totals of every PCI device that has them; none is an error.
pub fn read_aer(root: &Root) -> Result<Vec<AerDevice>, ProbeError> {
    let dir = root.path("/sys/bus/pci/devices");
    let entries = sysfs::entries(&dir, "").map_err(|source| ProbeError::Io {
        path: dir.clone(),
        source,
    })?;
    let mut out = Vec::new();
    let mut present = false;
    for (device, p) in entries {
        let read = |f: &str| {
            let path = p.join(f);
            sysfs::read(&path).ok().and_then(|t| parse_aer_total(&t))
        };
        if !p.join("aer_dev_correctable").exists() && !p.join("aer_dev_fatal").exists() {
            continue;
        }
        present = true;
        let d = AerDevice {
            correctable: read("aer_dev_correctable"),
            nonfatal: read("aer_dev_nonfatal"),
            fatal: read("aer_dev_fatal"),
            device,
        };
        if d.correctable.is_some() || d.nonfatal.is_some() || d.fatal.is_some() {
            out.push(d);
        }
    }
    if !present {
        return Err(ProbeError::Unusable {
            what: sysfs::shown(root, &dir),
            reason: "no PCI device exposes aer_dev_* (AER not supported or not enabled)".into(),
        });
    }
    Ok(out)
}

/// Feeds one counter, loading its persisted state on first sight and storing changes.
pub fn feed_counter(
    engine: &mut Engine,
    baselines: &Baselines,
    scope: Scope,
    obs: Obs<'_>,
    value: u64,
    rule: CounterRule,
    out: &mut Vec<FaultEvent>,
) {
    let start = if engine.knows(obs.kind, obs.subject) {
        CounterStart::FirstSight // ignored: the engine has its state
    } else {
        baselines.start(scope, obs.kind, obs.subject, rule.clear)
    };
    let o = engine.counter(obs, value, start, rule);
    if let Some(m) = o.persist {
        baselines.set(scope, obs.kind, obs.subject, m);
    }
    out.extend(o.event);
}

fn rule(cfg: &CounterConfig, severity: Severity) -> CounterRule {
    CounterRule {
        severity,
        min_increase: cfg.min_increase,
        clear: CounterClear::Quiet(cfg.clear_after),
        since: "since boot",
    }
}

/// Feeds I/O error counters.
pub fn feed_io_errors(
    engine: &mut Engine,
    baselines: &Baselines,
    cfg: &CounterConfig,
    items: &[IoErrors],
    out: &mut Vec<FaultEvent>,
) {
    for d in items {
        let source = if d.source.is_empty() {
            format!("/sys/block/{}/device/ioerr_cnt", d.device)
        } else {
            d.source.clone()
        };
        let obs = Obs {
            kind: FaultKind::DiskIoErrors,
            subject: &d.device,
            source: &source,
            unit: "count",
            label: "I/O errors",
        };
        let rule = rule(cfg, Severity::Major);
        feed_counter(engine, baselines, Scope::Boot, obs, d.count, rule, out);
    }
}

/// Feeds EDAC counters: corrected rising is minor, uncorrected rising is critical.
pub fn feed_edac(
    engine: &mut Engine,
    baselines: &Baselines,
    cfg: &CounterConfig,
    items: &[EdacMc],
    out: &mut Vec<FaultEvent>,
) {
    for mc in items {
        for (value, what, file, severity) in [
            (mc.ce, "corrected", "ce_count", Severity::Minor),
            (mc.ue, "uncorrected", "ue_count", Severity::Critical),
        ] {
            let Some(value) = value else { continue };
            let subject = format!("{} {}", mc.mc, what);
            let source = format!("/sys/devices/system/edac/mc/{}/{}", mc.mc, file);
            let label = format!("{what} ECC errors");
            let obs = Obs {
                kind: FaultKind::MemoryEcc,
                subject: &subject,
                source: &source,
                unit: "count",
                label: &label,
            };
            let rule = rule(cfg, severity);
            feed_counter(engine, baselines, Scope::Boot, obs, value, rule, out);
        }
    }
}

/// Feeds AER totals: fatal rising is critical, non-fatal and correctable rising minor.
pub fn feed_aer(
    engine: &mut Engine,
    baselines: &Baselines,
    cfg: &CounterConfig,
    items: &[AerDevice],
    out: &mut Vec<FaultEvent>,
) {
    for d in items {
        for (value, what, file, total, severity) in [
            (
                d.fatal,
                "fatal",
                "aer_dev_fatal",
                "TOTAL_ERR_FATAL",
                Severity::Critical,
            ),
            (
                d.nonfatal,
                "nonfatal",
                "aer_dev_nonfatal",
                "TOTAL_ERR_NONFATAL",
                Severity::Minor,
            ),
            (
                d.correctable,
                "correctable",
                "aer_dev_correctable",
                "TOTAL_ERR_COR",
                Severity::Minor,
            ),
        ] {
            let Some(value) = value else { continue };
            let subject = format!("{} {}", d.device, what);
            let source = format!("/sys/bus/pci/devices/{}/{} {}", d.device, file, total);
            let label = format!("PCIe {what} errors");
            let obs = Obs {
                kind: FaultKind::PcieAer,
                subject: &subject,
                source: &source,
                unit: "count",
                label: &label,
            };
            let rule = rule(cfg, severity);
            feed_counter(engine, baselines, Scope::Boot, obs, value, rule, out);
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
                .join("fixtures")
                .join(name),
        )
    }

    #[test]
    fn io_errors_from_fixture_hex_and_garbage() {
        let v = read_io_errors(&fixture("disk_io_errors/sata")).unwrap();
        // sda: 0x0, sdb: 0x1a, sdc: garbage (skipped), nvme0n1 and loop0 have no ioerr_cnt.
        assert_eq!(
            v,
            [
                IoErrors {
                    device: "sda".into(),
                    count: 0,
                    source: String::new()
                },
                IoErrors {
                    device: "sdb".into(),
                    count: 26,
                    source: String::new()
                },
            ]
        );
    }

    #[test]
    fn io_errors_unsupported_on_nvme_only() {
        let e = read_io_errors(&fixture("disk_io_errors/nvme_only")).unwrap_err();
        assert!(e.to_string().contains("ioerr_cnt"), "{e}");
        assert!(read_io_errors(&fixture("empty")).is_err());
    }

    #[test]
    fn edac_from_fixture() {
        let v = read_edac(&fixture("memory_ecc/edac")).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[0],
            EdacMc {
                mc: "mc0".into(),
                ce: Some(3),
                ue: Some(0)
            }
        );
        assert_eq!(
            v[1],
            EdacMc {
                mc: "mc1".into(),
                ce: None,
                ue: Some(0)
            },
            "garbage ce_count is None, not 0"
        );
        assert!(read_edac(&fixture("memory_ecc/no_edac")).is_err());
    }

    #[test]
    fn aer_totals_from_fixture() {
        let text = std::fs::read_to_string(
            fixture("pcie_aer/server")
                .path("/sys/bus/pci/devices/0000:00:1c.0/aer_dev_correctable"),
        )
        .unwrap();
        assert_eq!(parse_aer_total(&text), Some(4));
        let v = read_aer(&fixture("pcie_aer/server")).unwrap();
        assert_eq!(
            v,
            [
                AerDevice {
                    device: "0000:00:1c.0".into(),
                    correctable: Some(4),
                    nonfatal: Some(0),
                    fatal: Some(0)
                },
                AerDevice {
                    device: "0000:01:00.0".into(),
                    correctable: Some(0),
                    nonfatal: Some(1),
                    fatal: Some(2)
                },
            ]
        );
        assert!(read_aer(&fixture("pcie_aer/no_aer")).is_err());
        assert_eq!(parse_aer_total("garbage\n"), None);
        assert_eq!(parse_aer_total(""), None);
    }
}
