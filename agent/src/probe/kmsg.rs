//! Disk I/O errors from the kernel log (`/dev/kmsg`): the only per-device I/O error
//! source for NVMe and virtio disks, which have no `ioerr_cnt`.
//!
//! The log is opened once, non-blocking, and kept open: the first read returns what the
//! ring buffer still holds since boot, later reads only new records. Matching records are
//! counted per device, and the counts go through the same since-boot counter as
//! `ioerr_cnt` (subject `{device} (kernel log)`, zero baseline per kernel boot): the
//! errors the ring still holds at the agent's first start in a boot are reported, an
//! agent restarted within the boot re-reads the same history and sees no rise, a reboot
//! starts from zero. The trade-off: errors that scrolled out of the ring before the agent
//! read them are not counted. Reading needs root (or `kernel.dmesg_restrict = 0`).
//!
//! Counted messages (the forms the block layer and libata print):
//! `I/O error, dev sda, sector ...` (also after `blk_update_request: `), `critical medium
//! error, dev nvme0n1, ...`, `Buffer I/O error on dev sda1, ...` (counted for the
//! partition), and `ata3.00: failed command: READ FPDMA QUEUED` (counted for `ata3`).
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use super::counters::IoErrors;
use super::error::ProbeError;
use super::sysfs::Root;

fn first_word(s: &str) -> Option<&str> {
    let w = s.split([',', ' ', ':']).next()?;
    (!w.is_empty()).then_some(w)
}

/// The device a kernel log message reports an I/O error for, if it is one.
pub fn io_error_device(msg: &str) -> Option<&str> {
    let after = |pat: &str| msg.find(pat).map(|i| &msg[i + pat.len()..]);
    if msg.contains("I/O error, dev ") || msg.contains("critical medium error, dev ") {
        return after(", dev ").and_then(first_word);
    }
    if let Some(rest) = after("Buffer I/O error on dev ") {
        return first_word(rest);
    }
    if msg.contains(": failed command: ") && msg.starts_with("ata") {
        return msg.split(['.', ':']).next();
    }
    None
}

/// The message part of one `/dev/kmsg` record (`prio,seq,ts,flags;message`); `None` for
/// continuation lines (` KEY=value`) and garbage.
pub fn record_message(line: &str) -> Option<&str> {
    if line.starts_with(' ') {
        return None;
    }
    let (head, msg) = line.split_once(';')?;
    head.split(',').next()?.parse::<u32>().ok()?;
    Some(msg)
}

/// The open kernel log and the counts so far.
#[derive(Debug)]
pub struct KernelLog {
    path: PathBuf,
    file: File,
    partial: String,
    counts: BTreeMap<String, u64>,
}

impl KernelLog {
    /// Opens `{root}/dev/kmsg` non-blocking.
    pub fn open(root: &Root) -> Result<Self, ProbeError> {
        let path = root.path("/dev/kmsg");
        let nonblock = rustix::fs::OFlags::NONBLOCK.bits() as i32;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nonblock)
            .open(&path)
            .map_err(|source| ProbeError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(Self {
            path,
            file,
            partial: String::new(),
            counts: BTreeMap::new(),
        })
    }

    /// Reads what is new and returns the counts per device since the log was opened
    /// (which includes the ring buffer's history since boot).
    pub fn read(&mut self) -> Result<Vec<IoErrors>, ProbeError> {
        // One record per read() on /dev/kmsg; a buffer smaller than a record is EINVAL.
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match self.file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.partial.push_str(&String::from_utf8_lossy(&buf[..n]));
                    self.consume_lines();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                // EPIPE: records were overwritten before we read them; go on from the next.
                Err(e) if e.raw_os_error() == Some(32) => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(ProbeError::Io {
                        path: self.path.clone(),
                        source,
                    })
                }
            }
        }
        Ok(self
            .counts
            .iter()
            .map(|(dev, n)| IoErrors {
                device: format!("{dev} (kernel log)"),
                count: *n,
                source: "/dev/kmsg".into(),
            })
            .collect())
    }

    fn consume_lines(&mut self) {
        while let Some(nl) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=nl).collect();
            if let Some(dev) = record_message(line.trim_end_matches('\n')).and_then(io_error_device)
            {
                *self.counts.entry(dev.to_string()).or_default() += 1;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn recognises_the_kernel_forms() {
        let cases = [
            ("blk_update_request: I/O error, dev sda, sector 2048 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0", Some("sda")),
            ("I/O error, dev nvme0n1, sector 1953525000 op 0x0:(READ) flags 0x80700 phys_seg 1 prio class 2", Some("nvme0n1")),
            ("critical medium error, dev sdb, sector 123456 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0", Some("sdb")),
            ("Buffer I/O error on dev sda1, logical block 0, async page read", Some("sda1")),
            ("ata3.00: failed command: READ FPDMA QUEUED", Some("ata3")),
            ("ata3: SATA link up 6.0 Gbps (SStatus 133 SControl 300)", None),
            ("EXT4-fs (sda1): mounted filesystem with ordered data mode", None),
            ("", None),
        ];
        for (msg, want) in cases {
            assert_eq!(io_error_device(msg), want, "{msg}");
        }
        assert_eq!(
            record_message("3,1234,5678901,-;I/O error, dev sda, sector 1"),
            Some("I/O error, dev sda, sector 1")
        );
        assert_eq!(record_message(" SUBSYSTEM=block"), None);
        assert_eq!(record_message("garbage"), None);
    }

    #[test]
    fn counts_from_a_captured_log_and_follows_growth() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("dev")).unwrap();
        let src =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/disk_io_errors/kmsg/dev/kmsg");
        std::fs::copy(&src, dir.path().join("dev/kmsg")).unwrap();
        let mut log = KernelLog::open(&Root::new(dir.path())).unwrap();
        let v = log.read().unwrap();
        let got: Vec<_> = v.iter().map(|e| (e.device.as_str(), e.count)).collect();
        assert_eq!(
            got,
            [
                ("ata3 (kernel log)", 2),
                ("nvme0n1 (kernel log)", 3),
                ("sda (kernel log)", 1),
                ("sda1 (kernel log)", 1)
            ]
        );
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("dev/kmsg"))
            .unwrap();
        writeln!(f, "3,900,99999999,-;I/O error, dev nvme0n1, sector 8 op 0x1:(WRITE) flags 0x0 phys_seg 1 prio class 2").unwrap();
        let v = log.read().unwrap();
        assert_eq!(v[1].count, 4);
        assert!(KernelLog::open(&Root::new(&dir.path().join("missing"))).is_err());
    }
}
