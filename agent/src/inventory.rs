//! The device's inventory for the retained `birth` message: who this machine is.
//!
//! Host facts that only the running kernel knows (host name, OS, kernel, CPU, RAM) come
//! from sysinfo; identity that lives in sysfs (DMI vendor/model/serial, disks with model,
//! serial and size, NIC MACs) is read under the probe root, so a fixture tree exercises
//! the same code as a real machine. Whatever cannot be read is absent, never an empty or
//! made-up value; the vendor placeholders firmware writers leave behind ("To Be Filled
//! By O.E.M.") count as unreadable. The trade-off: the inventory is read once per
//! session, so a hot-plugged disk appears at the next reconnect or restart.
use std::path::Path;

use heapless::Vec as HVec;
use vigia_protocol::{bounded, Birth, DeviceId, DiskInfo, Dmi, NicInfo, VERSION};

/// The agent's version, as published in `birth`.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Facts about the running host that come from the kernel through sysinfo.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// Host name.
    pub hostname: Option<String>,
    /// OS name ("Debian GNU/Linux").
    pub os: Option<String>,
    /// OS version ("12").
    pub os_version: Option<String>,
    /// Kernel release.
    pub kernel: Option<String>,
    /// CPU architecture.
    pub arch: String,
    /// CPU brand string.
    pub cpu_model: Option<String>,
    /// Logical CPUs.
    pub cpu_cores: u16,
    /// Installed RAM in bytes (0 when unknown).
    pub ram_bytes: u64,
    /// MACs from sysinfo, used only when `/sys/class/net` cannot be read.
    pub nics: Vec<(String, String)>,
}

/// The host name, from sysinfo or `/proc/sys/kernel/hostname`.
pub fn host_name() -> Option<String> {
    sysinfo::System::host_name()
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Reads [`HostFacts`] from the running system.
pub fn host_facts() -> HostFacts {
    use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};
    let nonempty = |s: String| {
        let s = s.trim().to_string();
        (!s.is_empty()).then_some(s)
    };
    let sys = System::new_with_specifics(
        RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing())
            .with_memory(MemoryRefreshKind::nothing().with_ram()),
    )
    .ok();
    let cpus = sys.as_ref().map(|s| s.cpus()).unwrap_or_default();
    let nics = sysinfo::Networks::new_with_refreshed_list()
        .map(|n| {
            let mut v: Vec<(String, String)> = n
                .iter()
                .filter(|(_, d)| !d.mac_address().is_unspecified())
                .map(|(name, d)| {
                    (
                        name.to_string_lossy().into_owned(),
                        d.mac_address().to_string(),
                    )
                })
                .collect();
            v.sort();
            v
        })
        .unwrap_or_default();
    HostFacts {
        hostname: host_name(),
        os: System::name().ok().and_then(nonempty),
        os_version: System::os_version().ok().and_then(nonempty),
        kernel: System::kernel_version().ok().and_then(nonempty),
        arch: System::cpu_arch(),
        cpu_model: cpus
            .first()
            .map(|c| c.brand().to_string())
            .and_then(nonempty),
        cpu_cores: u16::try_from(cpus.len()).unwrap_or(u16::MAX),
        ram_bytes: sys.as_ref().map_or(0, |s| s.total_memory()),
        nics,
    }
}

/// Builds the birth message for this device from host facts and the tree under `root`.
pub fn birth(
    device: &DeviceId,
    instance: u64,
    boot: u64,
    ts: u64,
    tags: &[heapless::String<32>],
    root: &Path,
    host: &HostFacts,
) -> Birth {
    let nics = read_nics(root).unwrap_or_else(|| {
        host.nics
            .iter()
            .take(16)
            .map(|(n, m)| NicInfo {
                name: bounded(n),
                mac: bounded(m),
            })
            .collect()
    });
    Birth {
        v: VERSION,
        device: device.clone(),
        instance,
        boot,
        ts,
        agent_version: bounded(AGENT_VERSION),
        hostname: opt(&host.hostname),
        os: opt(&host.os),
        os_version: opt(&host.os_version),
        kernel: opt(&host.kernel),
        arch: bounded(&host.arch),
        cpu_model: opt(&host.cpu_model),
        cpu_cores: host.cpu_cores,
        ram_bytes: host.ram_bytes,
        dmi: read_dmi(root),
        disks: read_disks(root),
        nics,
        tags: tags.iter().cloned().collect(),
    }
}

/// A bounded copy of an optional fact; empty when unknown (the field is required).
fn opt<const N: usize>(s: &Option<String>) -> heapless::String<N> {
    s.as_deref().map(bounded).unwrap_or_default()
}

/// Values firmware leaves in DMI fields nobody filled in.
const DMI_PLACEHOLDERS: &[&str] = &[
    "to be filled by o.e.m.",
    "default string",
    "system serial number",
    "system product name",
    "system manufacturer",
    "not specified",
    "not applicable",
    "none",
    "0123456789",
    "oem",
    "o.e.m.",
];

/// Reads a sysfs text file: trimmed, `None` when absent, unreadable or empty.
fn read_text(path: &Path) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// Parses one DMI field: `None` for placeholders and empty values.
pub fn parse_dmi_value(raw: &str) -> Option<heapless::String<64>> {
    let v = raw.trim();
    if v.is_empty() || DMI_PLACEHOLDERS.contains(&v.to_ascii_lowercase().as_str()) {
        return None;
    }
    Some(bounded(v))
}

/// Reads `{root}/sys/class/dmi/id/*`; fields that cannot be read are `None`.
pub fn read_dmi(root: &Path) -> Dmi {
    let dir = root.join("sys/class/dmi/id");
    let field = |name: &str| read_text(&dir.join(name)).and_then(|s| parse_dmi_value(&s));
    Dmi {
        vendor: field("sys_vendor"),
        product: field("product_name"),
        serial: field("product_serial"),
        board: field("board_name"),
        bios_version: field("bios_version"),
    }
}

/// Block devices that are not disks.
fn is_virtual_block(name: &str) -> bool {
    ["loop", "ram", "zram", "dm-", "md", "nbd", "sr", "fd"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// Reads `{root}/sys/block/*`: real disks (no loop, RAM, device-mapper or md devices,
/// nothing of size 0), with size (`size` × 512), model and serial where readable.
pub fn read_disks(root: &Path) -> HVec<DiskInfo, 16> {
    let mut names: Vec<String> = match std::fs::read_dir(root.join("sys/block")) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !is_virtual_block(n))
            .collect(),
        Err(_) => return HVec::new(),
    };
    names.sort();
    let mut out = HVec::new();
    for name in names {
        let dir = root.join("sys/block").join(&name);
        let Some(sectors) = read_text(&dir.join("size")).and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        if sectors == 0 {
            continue;
        }
        let serial = read_text(&dir.join("device/serial"))
            .or_else(|| read_text(&dir.join("serial")))
            .or_else(|| read_text(&dir.join("wwid")))
            .or_else(|| read_text(&dir.join("device/wwid")));
        let disk = DiskInfo {
            name: bounded(&name),
            model: read_text(&dir.join("device/model")).map(|s| bounded(&s)),
            serial: serial.map(|s| bounded(&s)),
            size_bytes: sectors.saturating_mul(512),
        };
        if out.push(disk).is_err() {
            break;
        }
    }
    out
}

/// Reads `{root}/sys/class/net/*/address`: interfaces with a real MAC, physical ones
/// (those with a `device` link) when there are any, else every non-loopback one.
/// `None` when the directory cannot be read.
pub fn read_nics(root: &Path) -> Option<HVec<NicInfo, 16>> {
    let dir = root.join("sys/class/net");
    let mut found: Vec<(bool, String, String)> = Vec::new();
    for entry in std::fs::read_dir(&dir).ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "lo" {
            continue;
        }
        let Some(mac) = read_text(&dir.join(&name).join("address")) else {
            continue;
        };
        if mac.len() != 17 || mac == "00:00:00:00:00:00" {
            continue;
        }
        let physical = dir.join(&name).join("device").exists();
        found.push((physical, name, mac));
    }
    let any_physical = found.iter().any(|(p, _, _)| *p);
    found.retain(|(p, _, _)| *p || !any_physical);
    found.sort();
    Some(
        found
            .into_iter()
            .take(16)
            .map(|(_, name, mac)| NicInfo {
                name: bounded(&name),
                mac: bounded(&mac),
            })
            .collect(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/inventory")
            .join(name)
    }

    #[test]
    fn dmi_from_a_fixture_with_placeholders_and_missing_files() {
        let dmi = read_dmi(&fixture("workstation"));
        assert_eq!(dmi.vendor.as_deref(), Some("LENOVO"));
        assert_eq!(dmi.product.as_deref(), Some("20XW0055US"));
        // "To Be Filled By O.E.M." is firmware's way of saying nothing.
        assert_eq!(dmi.serial, None);
        assert_eq!(dmi.board.as_deref(), Some("20XW0055US"));
        // bios_version is absent from the fixture.
        assert_eq!(dmi.bios_version, None);
    }

    #[test]
    fn dmi_unreadable_is_all_absent() {
        assert_eq!(read_dmi(Path::new("/nonexistent")), Dmi::default());
    }

    #[test]
    fn disks_skip_virtual_devices_and_read_model_serial_size() {
        let disks = read_disks(&fixture("workstation"));
        let names: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["nvme0n1", "sda", "vda"]);
        let nvme = &disks[0];
        assert_eq!(nvme.model.as_deref(), Some("SAMSUNG MZVL2512HCJQ-00BL7"));
        assert_eq!(nvme.serial.as_deref(), Some("S64KNX0T123456"));
        assert_eq!(nvme.size_bytes, 1_000_215_216 * 512);
        let sda = &disks[1];
        // No device/serial: the wwid stands in.
        assert_eq!(
            sda.serial.as_deref(),
            Some("t10.ATA     WDC WD10EZEX-08WN4A0   WD-WCC6Y1234567")
        );
        assert_eq!(sda.model.as_deref(), Some("WDC WD10EZEX-08W"));
        // Virtio: no model, serial in /sys/block/vda/serial.
        assert_eq!(disks[2].model, None);
        assert_eq!(disks[2].serial.as_deref(), Some("overlayblk"));
    }

    #[test]
    fn nics_prefer_physical_interfaces_and_skip_loopback() {
        let nics = read_nics(&fixture("workstation")).unwrap();
        let got: Vec<(&str, &str)> = nics
            .iter()
            .map(|n| (n.name.as_str(), n.mac.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("enp3s0", "54:e1:ad:12:34:56"),
                ("wlp4s0", "a4:c3:f0:ab:cd:ef")
            ]
        );
        assert_eq!(read_nics(Path::new("/nonexistent")), None);
    }

    #[test]
    fn placeholder_values_are_absent() {
        assert_eq!(parse_dmi_value("  Default string \n"), None);
        assert_eq!(parse_dmi_value(""), None);
        assert_eq!(parse_dmi_value("Dell Inc.").as_deref(), Some("Dell Inc."));
    }

    #[test]
    fn birth_carries_host_facts_and_the_tree() {
        let host = host_facts();
        let dev = DeviceId::new("ws-1").unwrap();
        let tags = [bounded::<32>("site-a")];
        let b = birth(&dev, 9, 7, 1000, &tags, &fixture("workstation"), &host);
        assert_eq!((b.instance, b.boot), (9, 7));
        assert_eq!(b.agent_version.as_str(), AGENT_VERSION);
        assert_eq!(b.dmi.vendor.as_deref(), Some("LENOVO"));
        assert_eq!(b.disks.len(), 3);
        assert_eq!(b.tags.len(), 1);
        // This machine: at least one CPU and some RAM are always visible on Linux.
        assert!(b.cpu_cores >= 1);
        assert!(b.ram_bytes > 0);
        assert!(!b.kernel.is_empty());
        assert_eq!(b.arch.as_str(), host.arch);
        // And it is a valid wire message.
        let bytes = vigia_protocol::encode(&b).unwrap();
        assert_eq!(vigia_protocol::decode::<Birth>(&bytes).unwrap(), b);
    }
}
