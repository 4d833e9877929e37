//! A JSON-lines file of samples that stands in for the machine (end-to-end tests, demos).
//!
//! One line is one sampling pass: a JSON object whose keys name sources, each holding what
//! that source's probe would have read. Keys left out are "not read this pass" (their
//! faults neither raise nor clear). Every key is optional:
//!
//! ```text
//! {"disk":[{"mount":"/var","total_bytes":100,"avail_bytes":5,"files":10,"files_free":5}]}
//! {"mounts":[{"mount":"/var","ro":true}]}
//! {"io_errors":[{"device":"sda","count":3}]}
//! {"smart":[{"device":"/dev/sda","serial":"S1","model":"M","passed":false,
//!            "counters":[{"name":"Reallocated_Sector_Ct","value":8}],
//!            "nvme_critical_warning":0,"nvme_percentage_used":12}]}
//! {"raid":[{"name":"md0","level":"raid1","expected":2,"up":1,"status":"[U_]"}]}
//! {"memory":{"total_kb":1000,"available_kb":20,"swap_total_kb":0,"swap_free_kb":0,"hardware_corrupted_kb":0}}
//! {"ecc":[{"mc":"mc0","ce":0,"ue":0}]}
//! {"aer":[{"device":"0000:00:1c.0","correctable":0,"nonfatal":0,"fatal":1}]}
//! {"temps":[{"subject":"coretemp/Core 0","celsius":99.0,"crit":100.0}]}
//! {"fans":[{"subject":"nct6775/fan1","rpm":0,"should_spin":true,"fault":false}]}
//! {"batteries":[{"name":"BAT0","full":40,"design":100,"health":"Good"}]}
//! {"nics":[{"iface":"eth0","rx_packets":1000,"tx_packets":1000,"rx_errs":0,"tx_errs":0}]}
//! {"links":[{"iface":"eth0","admin_up":true,"carrier":false}]}
//! ```
//!
//! Each pass consumes the next complete line; once the file is exhausted the last sample
//! is held (so a steady state stays steady), and lines appended later are read as they
//! come. A line that does not parse is logged and skipped, and the previous sample is
//! held. Replayed samples go through exactly the detector path the machine's do.
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::error::ProbeError;
use super::sample::Sample;

/// The replay source.
#[derive(Debug)]
pub struct Replay {
    path: PathBuf,
    file: File,
    pending: Vec<u8>,
    last: Sample,
}

impl Replay {
    /// Opens the file; it must exist (it may be empty and grow later).
    pub fn open(path: &Path) -> Result<Self, ProbeError> {
        let file = File::open(path).map_err(|source| ProbeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            pending: Vec::new(),
            last: Sample::default(),
        })
    }

    /// The sample for this pass.
    pub fn next_sample(&mut self) -> &Sample {
        if let Err(e) = self.file.read_to_end(&mut self.pending) {
            tracing::warn!(path = %self.path.display(), error = %e, "replay file unreadable; holding the last sample");
        }
        while let Some(nl) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            match serde_json::from_str::<Sample>(text) {
                Ok(s) => {
                    self.last = s;
                    break;
                }
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "replay line skipped");
                }
            }
        }
        &self.last
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn consumes_lines_holds_the_last_and_follows_growth() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let mut f = File::create(&path).unwrap();
        writeln!(
            f,
            r#"{{"disk":[{{"mount":"/a","total_bytes":100,"avail_bytes":50}}]}}"#
        )
        .unwrap();
        writeln!(f, "not json").unwrap();
        writeln!(f).unwrap();
        writeln!(
            f,
            r#"{{"disk":[{{"mount":"/b","total_bytes":100,"avail_bytes":5}}]}}"#
        )
        .unwrap();
        let mut r = Replay::open(&path).unwrap();
        let mount = |s: &Sample| s.disk.as_ref().unwrap()[0].mount.clone();
        assert_eq!(mount(r.next_sample()), "/a");
        assert_eq!(mount(r.next_sample()), "/b", "bad and empty lines skipped");
        assert_eq!(mount(r.next_sample()), "/b", "last sample held");
        // A partial line waits for its newline.
        write!(f, r#"{{"disk":[{{"mount":"/c","total_bytes":1,"#).unwrap();
        f.flush().unwrap();
        assert_eq!(mount(r.next_sample()), "/b");
        writeln!(f, r#""avail_bytes":1}}]}}"#).unwrap();
        assert_eq!(mount(r.next_sample()), "/c");
    }

    /// Every example line of the module doc parses, so the documented format is the real one.
    #[test]
    fn documented_lines_parse() {
        let src = include_str!("replay.rs");
        let block: Vec<&str> = src
            .lines()
            .skip_while(|l| *l != "//! ```text")
            .skip(1)
            .take_while(|l| *l != "//! ```")
            .map(|l| l.trim_start_matches("//!").trim())
            .collect();
        let mut lines: Vec<String> = Vec::new();
        for l in block {
            match lines.last_mut() {
                Some(last) if !l.starts_with('{') => last.push_str(l),
                _ => lines.push(l.to_string()),
            }
        }
        assert_eq!(lines.len(), 13);
        let mut all = Sample::default();
        for l in &lines {
            let s: Sample = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
            assert_ne!(s, Sample::default(), "{l}");
            let j = serde_json::to_value(&s).unwrap();
            let key = j.as_object().unwrap().keys().next().unwrap().clone();
            all = serde_json::from_value({
                let mut a = serde_json::to_value(&all).unwrap();
                a.as_object_mut()
                    .unwrap()
                    .insert(key, j.as_object().unwrap().values().next().unwrap().clone());
                a
            })
            .unwrap();
        }
        // Every source has an example.
        let j = serde_json::to_value(&all).unwrap();
        assert_eq!(j.as_object().unwrap().len(), 13);
    }

    #[test]
    fn missing_file_is_an_error() {
        assert!(Replay::open(Path::new("/nonexistent/replay.jsonl")).is_err());
    }
}
