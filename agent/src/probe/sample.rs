//! What one sampling pass read: every probe's readings side by side, which is also the
//! shape of a replay line.
use serde::{Deserialize, Serialize};

use super::battery::Battery;
use super::counters::{AerDevice, EdacMc, IoErrors};
use super::disk::{DiskUsage, MountState};
use super::hwmon::{FanReading, TempReading};
use super::memory::MemInfo;
use super::net::{Link, Nic};
use super::raid::RaidArray;
use super::smart::SmartDisk;

/// What one sampling pass read, per source; `None` means "not read this pass" (a
/// replay line without that key, a probe that is off, unsupported or failed this time).
/// A replay line deserializes into this type: see [`replay`](super::replay) for the format.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sample {
    /// Filesystem space and inodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<Vec<DiskUsage>>,
    /// Filesystem read-only states.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mounts: Option<Vec<MountState>>,
    /// Block device I/O error counters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io_errors: Option<Vec<IoErrors>>,
    /// SMART / NVMe health.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smart: Option<Vec<SmartDisk>>,
    /// Software RAID arrays.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raid: Option<Vec<RaidArray>>,
    /// `/proc/meminfo`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemInfo>,
    /// EDAC memory controllers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ecc: Option<Vec<EdacMc>>,
    /// PCIe AER totals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aer: Option<Vec<AerDevice>>,
    /// Temperatures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temps: Option<Vec<TempReading>>,
    /// Fans.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fans: Option<Vec<FanReading>>,
    /// Batteries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batteries: Option<Vec<Battery>>,
    /// Network interface counters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nics: Option<Vec<Nic>>,
    /// Physical interfaces' link state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub links: Option<Vec<Link>>,
}
