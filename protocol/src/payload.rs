//! Payload types: what travels on each topic.
//!
//! Every variable-length field is a `heapless` string or vector with a fixed capacity, so
//! decoding can never allocate without bound and the agent can build messages without
//! the heap. Unknown fields are ignored (a newer minor version may add some); `v` is
//! required and checked by [`crate::decode`].
use core::fmt;
use core::str::FromStr;

use heapless::{String, Vec};
use serde::{Deserialize, Serialize};

use crate::device::DeviceId;

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = u64;

/// How bad a fault is. Ordered: `Info < Warning < Minor < Major < Critical`; the spool
/// drops the least severe first when it is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth recording, nothing to do yet.
    Info,
    /// A threshold crossed that will become a problem (disk 90 % full).
    Warning,
    /// Degraded but working (a corrected ECC error, a worn battery).
    Minor,
    /// Failing (a dead battery, a disk with pending sectors).
    Major,
    /// Down or about to lose data (read-only filesystem, uncorrected ECC, fan stopped).
    Critical,
}

impl Severity {
    /// Every severity, least severe first.
    pub const ALL: [Severity; 5] = [
        Self::Info,
        Self::Warning,
        Self::Minor,
        Self::Major,
        Self::Critical,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Minor => "minor",
            Self::Major => "major",
            Self::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for parsing an enum from its wire name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownName;

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown name")
    }
}

#[cfg(feature = "std")]
impl std::error::Error for UnknownName {}

impl FromStr for Severity {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or(UnknownName)
    }
}

/// The faults the agent detects (`docs/design.md`, "Faults the agent detects").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// A filesystem is filling up (bytes).
    DiskSpace,
    /// A filesystem is running out of inodes.
    DiskInodes,
    /// A filesystem was remounted read-only after boot.
    FsReadOnly,
    /// A block device reports I/O errors.
    DiskIoErrors,
    /// SMART / NVMe health failed or its error counters rose.
    DiskHealth,
    /// A software RAID array lost a member.
    RaidDegraded,
    /// Available memory stayed very low, or swap is exhausted.
    MemoryPressure,
    /// The memory controller reported ECC errors or poisoned pages.
    MemoryEcc,
    /// PCIe Advanced Error Reporting counters rose.
    PcieAer,
    /// A temperature sensor is at or near its critical point.
    Overheating,
    /// A fan stopped or reports a fault.
    FanFailure,
    /// A battery is worn or dead.
    BatteryWear,
    /// A network interface has a high error rate.
    NicErrors,
    /// A network interface that was up lost its carrier.
    NicLinkLost,
}

impl FaultKind {
    /// Every fault kind.
    pub const ALL: [FaultKind; 14] = [
        Self::DiskSpace,
        Self::DiskInodes,
        Self::FsReadOnly,
        Self::DiskIoErrors,
        Self::DiskHealth,
        Self::RaidDegraded,
        Self::MemoryPressure,
        Self::MemoryEcc,
        Self::PcieAer,
        Self::Overheating,
        Self::FanFailure,
        Self::BatteryWear,
        Self::NicErrors,
        Self::NicLinkLost,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DiskSpace => "disk_space",
            Self::DiskInodes => "disk_inodes",
            Self::FsReadOnly => "fs_read_only",
            Self::DiskIoErrors => "disk_io_errors",
            Self::DiskHealth => "disk_health",
            Self::RaidDegraded => "raid_degraded",
            Self::MemoryPressure => "memory_pressure",
            Self::MemoryEcc => "memory_ecc",
            Self::PcieAer => "pcie_aer",
            Self::Overheating => "overheating",
            Self::FanFailure => "fan_failure",
            Self::BatteryWear => "battery_wear",
            Self::NicErrors => "nic_errors",
            Self::NicLinkLost => "nic_link_lost",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FaultKind {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or(UnknownName)
    }
}

/// Retained inventory, published on every new session (`up/{id}/birth`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Birth {
    /// Protocol major version.
    pub v: u8,
    /// The device.
    pub device: DeviceId,
    /// The agent instance: a random id created with the agent's spool and kept for its
    /// life, so a reinstalled agent (new spool, `seq` and `boot` back to 1) is told apart
    /// from the old one. 0 is an agent from before instances existed.
    #[serde(default)]
    pub instance: u64,
    /// Session counter: raised on every new MQTT session of this agent.
    pub boot: u64,
    /// When this was sent.
    pub ts: Millis,
    /// `vigia-agent` version.
    pub agent_version: String<32>,
    /// Host name.
    pub hostname: String<64>,
    /// Operating system name ("Debian GNU/Linux").
    pub os: String<64>,
    /// Operating system version ("12").
    pub os_version: String<32>,
    /// Kernel release.
    pub kernel: String<64>,
    /// CPU architecture.
    pub arch: String<16>,
    /// CPU brand string.
    pub cpu_model: String<96>,
    /// Logical CPUs.
    pub cpu_cores: u16,
    /// Installed memory, bytes.
    pub ram_bytes: u64,
    /// Vendor, model and serial from DMI, where readable.
    #[serde(default)]
    pub dmi: Dmi,
    /// Disks.
    #[serde(default)]
    pub disks: Vec<DiskInfo, 16>,
    /// Network interfaces.
    #[serde(default)]
    pub nics: Vec<NicInfo, 16>,
    /// Tags from the agent config (site, role...), used by triage rules.
    #[serde(default)]
    pub tags: Vec<String<32>, 8>,
}

/// System identity from `/sys/class/dmi/id`. Fields the agent could not read are absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dmi {
    /// `sys_vendor`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String<64>>,
    /// `product_name`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String<64>>,
    /// `product_serial` (root-only on most systems)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String<64>>,
    /// `board_name`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board: Option<String<64>>,
    /// `bios_version`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bios_version: Option<String<64>>,
}

/// One disk in the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskInfo {
    /// Kernel name (`sda`, `nvme0n1`).
    pub name: String<32>,
    /// Model, where readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String<64>>,
    /// Serial, where readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String<64>>,
    /// Size in bytes.
    pub size_bytes: u64,
}

/// One network interface in the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicInfo {
    /// Interface name.
    pub name: String<32>,
    /// MAC address.
    pub mac: String<17>,
}

/// Retained online state (`up/{id}/status`); `online: false` is also the Last Will.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Protocol major version.
    pub v: u8,
    /// The device.
    pub device: DeviceId,
    /// The agent instance: a random id created with the agent's spool and kept for its
    /// life, so a reinstalled agent (new spool, `seq` and `boot` back to 1) is told apart
    /// from the old one. 0 is an agent from before instances existed.
    #[serde(default)]
    pub instance: u64,
    /// Online or not.
    pub online: bool,
    /// The session this state belongs to: an older `boot` never overrides a newer one.
    pub boot: u64,
    /// When this was produced (for a Last Will, when the session started).
    pub ts: Millis,
}

/// Retained collector state (`svc/collector/status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectorStatus {
    /// Protocol major version.
    pub v: u8,
    /// Online or not.
    pub online: bool,
    /// When this was produced.
    pub ts: Millis,
}

/// An event from a device (`up/{id}/event`). `(device, instance, seq)` is the
/// idempotency key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Protocol major version.
    pub v: u8,
    /// The device; must match the topic.
    pub device: DeviceId,
    /// The agent instance: a random id created with the agent's spool and kept for its
    /// life, so a reinstalled agent (new spool, `seq` and `boot` back to 1) is told apart
    /// from the old one. 0 is an agent from before instances existed.
    #[serde(default)]
    pub instance: u64,
    /// Per-device sequence number, strictly increasing, persisted by the agent.
    pub seq: u64,
    /// The agent session that produced it.
    pub boot: u64,
    /// When it happened.
    pub ts: Millis,
    /// What happened.
    pub body: EventBody,
}

/// What an event says.
///
/// `Report` is much larger than the other variants; it stays inline on purpose so an event
/// can be built without the heap, and its size is bounded by its fields' capacities.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// A detector raised, updated or cleared a fault.
    Fault(FaultEvent),
    /// The person at the keyboard reported a problem.
    Report(UserReport),
    /// The user answered a request for more information.
    Reply(Reply),
    /// The agent's spool was full and dropped events.
    Dropped(Dropped),
}

/// What happened to a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultAction {
    /// The fault started (after its debounce).
    Raised,
    /// The fault is still there and changed severity or value notably.
    Updated,
    /// The fault is gone (after its hysteresis and debounce).
    Cleared,
}

impl FaultAction {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raised => "raised",
            Self::Updated => "updated",
            Self::Cleared => "cleared",
        }
    }
}

/// A fault raised, updated or cleared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultEvent {
    /// Raised, updated or cleared.
    pub action: FaultAction,
    /// Which fault.
    pub kind: FaultKind,
    /// What it concerns: mount point, disk serial, sensor label, interface name.
    pub subject: String<96>,
    /// How bad.
    pub severity: Severity,
    /// Why the agent thinks so.
    pub evidence: Evidence,
    /// A one-line human summary.
    #[serde(default)]
    pub message: String<160>,
}

/// The reading behind a fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The value read.
    pub value: f64,
    /// The threshold it crossed (or the baseline it rose from).
    pub threshold: f64,
    /// Unit of `value` and `threshold` ("%", "°C", "count", "rpm").
    pub unit: String<12>,
    /// Where it was read: a path, a SMART attribute, a sysinfo field.
    pub source: String<128>,
}

/// How urgent the reporter says the problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Urgency {
    /// It can wait.
    Low,
    /// Work is slowed down.
    Medium,
    /// Work is stopped.
    High,
    /// Many people or a critical service are stopped.
    Critical,
}

impl Urgency {
    /// Every urgency, lowest first.
    pub const ALL: [Urgency; 4] = [Self::Low, Self::Medium, Self::High, Self::Critical];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

impl FromStr for Urgency {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or(UnknownName)
    }
}

/// A problem reported by a person with `vigia-agent report`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserReport {
    /// The agent's local number for this report, echoed in the collector's answer.
    pub report_id: u64,
    /// Category chosen by the user ("hardware", "network", "printer"...).
    #[serde(default)]
    pub category: String<32>,
    /// One-line summary.
    #[serde(default)]
    pub summary: String<120>,
    /// Free text.
    #[serde(default)]
    pub text: String<2000>,
    /// Who reports (login name).
    #[serde(default)]
    pub reporter: String<64>,
    /// How to reach them (phone, extension, e-mail).
    #[serde(default)]
    pub contact: String<96>,
    /// How urgent they say it is.
    pub urgency: Urgency,
    /// The device's readings when the report was made.
    #[serde(default)]
    pub snapshot: Vec<Reading, 32>,
    /// The faults open on the device when the report was made.
    #[serde(default)]
    pub open_faults: Vec<OpenFault, 16>,
}

/// One reading in a report's snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// What was read ("disk / used", "cpu temp").
    pub name: String<48>,
    /// The value.
    pub value: f64,
    /// Its unit.
    pub unit: String<12>,
}

/// A fault open on the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenFault {
    /// Which fault.
    pub kind: FaultKind,
    /// What it concerns.
    pub subject: String<96>,
    /// How bad.
    pub severity: Severity,
}

/// The user's answer to a request for information.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The incident asked about.
    pub incident: u64,
    /// The answer.
    pub text: String<2000>,
}

/// How many seq ranges a [`Dropped`] notice lists at most.
pub const DROPPED_RANGES: usize = 16;

/// Notice that the agent's spool overflowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    /// Events dropped since the last notice.
    pub count: u64,
    /// The most severe severity among them.
    pub worst: Severity,
    /// The seqs (of the sending instance) of dropped events that had been written to the
    /// spool, and so may have been published and stored before they were evicted: the
    /// collector counts as lost only those it does not have. Events dropped before they
    /// were written are counted in `count` but never listed, nor are those past the first
    /// [`DROPPED_RANGES`] ranges. Absent from agents older than this field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seqs: Vec<SeqRange, DROPPED_RANGES>,
}

impl Dropped {
    /// Adds `seq` to [`Self::seqs`]: it extends a range it touches, or starts a new one
    /// while there is room. Returns whether it is listed.
    pub fn list(seqs: &mut Vec<SeqRange, DROPPED_RANGES>, seq: u64) -> bool {
        for r in seqs.iter_mut() {
            if (r.from..=r.to).contains(&seq) {
                return true;
            }
            if r.to.checked_add(1) == Some(seq) {
                r.to = seq;
                return true;
            }
            if seq.checked_add(1) == Some(r.from) {
                r.from = seq;
                return true;
            }
        }
        seqs.push(SeqRange { from: seq, to: seq }).is_ok()
    }

    /// How many seqs [`Self::seqs`] names (ranges are inclusive; overlaps count twice).
    pub fn listed(&self) -> u64 {
        self.seqs
            .iter()
            .map(|r| r.to.saturating_sub(r.from).saturating_add(1))
            .fold(0, u64::saturating_add)
    }
}

/// An inclusive range of sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqRange {
    /// First seq.
    pub from: u64,
    /// Last seq (inclusive).
    pub to: u64,
}

/// Why the collector refused an event. It is acknowledged all the same, so the agent
/// stops resending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Not JSON, or JSON of the wrong shape.
    Malformed,
    /// `v` missing or an unknown major version.
    BadVersion,
    /// Larger than [`crate::MAX_PAYLOAD`].
    TooLarge,
    /// The `device` in the payload is not the one in the topic.
    DeviceMismatch,
}

impl RejectReason {
    /// Every reason.
    pub const ALL: [RejectReason; 4] = [
        Self::Malformed,
        Self::BadVersion,
        Self::TooLarge,
        Self::DeviceMismatch,
    ];

    /// The wire name, also used as a counter label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::BadVersion => "bad_version",
            Self::TooLarge => "too_large",
            Self::DeviceMismatch => "device_mismatch",
        }
    }
}

/// A refused event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// Its seq.
    pub seq: u64,
    /// Why.
    pub reason: RejectReason,
}

/// The collector's application-level acknowledgement (`down/{id}/ack`).
///
/// It names the exact seqs it covers rather than a cumulative "everything up to N": an
/// agent whose spool dropped an event, or a broker that lost one, would otherwise see a
/// later ack delete events the collector never got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Protocol major version.
    pub v: u8,
    /// The device.
    pub device: DeviceId,
    /// The agent instance whose seqs these are (see [`Event::instance`]): an agent ignores
    /// an ack for another instance, so a reinstalled agent never deletes its own new events
    /// on an ack meant for its predecessor. 0 from a collector from before instances.
    #[serde(default)]
    pub instance: u64,
    /// Seqs durably stored (now or before: duplicates are acked again).
    #[serde(default)]
    pub stored: Vec<SeqRange, 16>,
    /// Seqs refused, with the reason; the agent drops them too.
    #[serde(default)]
    pub rejected: Vec<Rejection, 16>,
}

/// The device got these commands (`up/{id}/cmdack`): the collector stops resending them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmdAck {
    /// Protocol major version.
    pub v: u8,
    /// The device.
    pub device: DeviceId,
    /// The command ids.
    pub ids: Vec<u64, 32>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Ack {
    /// Whether this ack covers `seq`, stored or rejected.
    pub fn covers(&self, seq: u64) -> bool {
        self.stored.iter().any(|r| r.from <= seq && seq <= r.to)
            || self.rejected.iter().any(|r| r.seq == seq)
    }
}

/// A command to a device (`down/{id}/cmd`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cmd {
    /// Protocol major version.
    pub v: u8,
    /// The device.
    pub device: DeviceId,
    /// The collector's id of this command, kept in its durable outbox until the device
    /// names it in a [`CmdAck`]; 0 for a command sent once, not kept (a repeat).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub id: u64,
    /// When it was sent.
    pub ts: Millis,
    /// What it says.
    pub body: CmdBody,
}

/// What a command says. Kept inline (not boxed) for the same reason as [`EventBody`].
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CmdBody {
    /// A user report became (or joined) an incident.
    ReportAccepted {
        /// The agent's report number.
        report_id: u64,
        /// The incident number.
        incident: u64,
    },
    /// IT needs more information about an incident from the user.
    RequestInfo {
        /// The incident.
        incident: u64,
        /// What they ask.
        question: String<500>,
    },
    /// An incident the user reported changed state.
    IncidentState {
        /// The incident.
        incident: u64,
        /// Its new state.
        state: String<24>,
        /// A note for the user.
        #[serde(default)]
        note: String<200>,
    },
    /// Run every detector now and report.
    Recheck,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dropped_seqs_grow_ranges_and_stop_listing_when_full() {
        let mut seqs: Vec<SeqRange, DROPPED_RANGES> = Vec::new();
        for s in [5, 6, 7, 4, 9] {
            assert!(Dropped::list(&mut seqs, s));
        }
        assert_eq!(
            seqs.as_slice(),
            [SeqRange { from: 4, to: 7 }, SeqRange { from: 9, to: 9 }]
        );
        assert!(Dropped::list(&mut seqs, 6), "already listed");
        for i in 0..(DROPPED_RANGES as u64 - 2) {
            assert!(Dropped::list(&mut seqs, 100 + 2 * i));
        }
        assert!(
            !Dropped::list(&mut seqs, 1_000),
            "no room: counted, not listed"
        );
        assert!(
            Dropped::list(&mut seqs, 10),
            "extending a range needs no room"
        );
        let d = Dropped {
            count: 30,
            worst: Severity::Warning,
            seqs,
        };
        assert_eq!(d.listed(), 4 + 2 + (DROPPED_RANGES as u64 - 2));
    }

    #[test]
    fn a_drop_notice_without_seqs_still_decodes() {
        let old: Dropped = serde_json::from_str(r#"{"count":3,"worst":"minor"}"#).unwrap();
        assert_eq!(old.listed(), 0);
        let json = serde_json::to_string(&old).unwrap();
        assert!(!json.contains("seqs"), "{json}");
    }
}
