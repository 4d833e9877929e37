//! Retention: what the live store keeps, and for how long.
//!
//! Two rules, `[retention]` in the config, run by one periodic task: events stored longer
//! ago than `events_after` are **compacted** (each keeps its `(device, instance, seq)`, so
//! a device's counts, gaps and duplicate detection do not change; its details go), and
//! incidents closed longer ago than `incidents_after` are **archived**: appended whole,
//! trail included, as JSON lines to `archive/closed-YYYY-MM.jsonl` in the data directory
//! (the month they closed), the file synced, and only then removed from the live store.
//! A crash between the two leaves an incident in both, and the next pass archives it
//! again, so [`Archive::read`] keeps one line per incident number (the last).
//! The trade-off: each pass scans every event and every summary rather than keeping an
//! index by age, which would cost each ingested event one more write; passes are seldom
//! (hourly by default) and bounded per round.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info};
use vigia_protocol::time::civil_from_days;
use vigia_protocol::Millis;

use crate::clock::Clock;
use crate::store::{SharedStore, Store, StoreError};
use crate::workflow::{Dur, Incident, DAY, HOUR};

/// Events compacted per store call.
const COMPACT_ROUND: usize = 10_000;
/// Incidents archived per round (one archive write, one removal, one flush).
const ARCHIVE_ROUND: usize = 256;

/// `[retention]`: how long the live store keeps details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Events stored longer ago than this are compacted: counted still (a device's
    /// event count and gaps, duplicates recognised), their contents dropped. `0s`:
    /// never.
    pub events_after: Dur,
    /// Incidents closed longer ago than this are moved to the archive
    /// (`archive/` in the data directory, `vigia-collector archive export`) and removed
    /// from the live lists. `0s`: never. At least `[workflow] reopen_window`, so a fault
    /// that may still reopen its incident finds it.
    pub incidents_after: Dur,
    /// How often the retention pass runs.
    pub interval: Dur,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            events_after: Dur(90 * DAY),
            incidents_after: Dur(365 * DAY),
            interval: Dur(HOUR),
        }
    }
}

/// Why retention failed.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The archive could not be written or read.
    #[error("archive {path}: {source}")]
    Archive {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An archive line is not an incident.
    #[error("archive {path}, line {line}: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Its line, from 1.
        line: usize,
        /// Why.
        source: serde_json::Error,
    },
    /// The blocking task running the pass failed.
    #[error("retention task failed: {0}")]
    Task(String),
}

/// The archive of closed incidents: JSON lines, one file per month of closing.
#[derive(Debug, Clone)]
pub struct Archive {
    dir: PathBuf,
}

/// The file of incidents closed in `ms`'s month (UTC).
fn month_file(ms: Millis) -> String {
    let days = i64::try_from(ms / DAY).unwrap_or(i64::MAX);
    let (y, m, _) = civil_from_days(days);
    format!("closed-{y:04}-{m:02}.jsonl")
}

impl Archive {
    /// The archive under `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("archive"),
        }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io(&self, path: &Path) -> impl Fn(std::io::Error) -> RetentionError + '_ {
        let path = path.to_path_buf();
        move |source| RetentionError::Archive {
            path: path.clone(),
            source,
        }
    }

    /// Appends `incidents` to the files of the months they closed in, and syncs them:
    /// when this returns, they are on the disk.
    pub fn append(&self, incidents: &[Incident]) -> Result<(), RetentionError> {
        std::fs::create_dir_all(&self.dir).map_err(self.io(&self.dir))?;
        let mut by_file: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for inc in incidents {
            let buf = by_file
                .entry(month_file(
                    inc.closure.as_ref().map_or(inc.opened_at, |c| c.at),
                ))
                .or_default();
            serde_json::to_writer(&mut *buf, inc).map_err(|e| RetentionError::Archive {
                path: self.dir.clone(),
                source: e.into(),
            })?;
            buf.push(b'\n');
        }
        for (name, buf) in by_file {
            let path = self.dir.join(name);
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(self.io(&path))?;
            f.write_all(&buf).map_err(self.io(&path))?;
            f.sync_all().map_err(self.io(&path))?;
        }
        // A new file's name is durable once its directory is.
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(self.io(&self.dir))?;
        Ok(())
    }

    /// Every archived incident, by number, each once (the last copy written).
    pub fn read(&self) -> Result<Vec<Incident>, RetentionError> {
        let mut out: BTreeMap<u64, Incident> = BTreeMap::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io(&self.dir)(e)),
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("closed-") && n.ends_with(".jsonl"))
            })
            .collect();
        files.sort();
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(self.io(&path))?;
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let inc: Incident =
                    serde_json::from_str(line).map_err(|source| RetentionError::Corrupt {
                        path: path.clone(),
                        line: i + 1,
                        source,
                    })?;
                out.insert(inc.number, inc);
            }
        }
        Ok(out.into_values().collect())
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Events compacted.
    pub compacted: usize,
    /// Incidents archived and removed from the live store.
    pub archived: usize,
}

/// One retention pass at `now`: compaction, then archiving, each flushed. Blocking.
pub fn run_once(
    store: &dyn Store,
    archive: &Archive,
    cfg: &RetentionConfig,
    now: Millis,
) -> Result<Pass, RetentionError> {
    let mut pass = Pass::default();
    if cfg.events_after.0 > 0 {
        let before = now.saturating_sub(cfg.events_after.0);
        loop {
            let n = store.compact_events(before, COMPACT_ROUND)?;
            pass.compacted += n;
            if n < COMPACT_ROUND {
                break;
            }
        }
        store.flush()?;
    }
    if cfg.incidents_after.0 > 0 {
        let before = now.saturating_sub(cfg.incidents_after.0);
        loop {
            let batch = store.closed_before(before, ARCHIVE_ROUND)?;
            if batch.is_empty() {
                break;
            }
            // On the disk first: an incident is never only in neither place.
            archive.append(&batch)?;
            let numbers: Vec<u64> = batch.iter().map(|i| i.number).collect();
            let removed = store.remove_incidents(&numbers)?;
            pass.archived += removed;
            store.flush()?;
            // None removed (all reopened meanwhile): the next pass looks again.
            if batch.len() < ARCHIVE_ROUND || removed == 0 {
                break;
            }
        }
    }
    Ok(pass)
}

/// The periodic retention task.
#[derive(Clone)]
pub struct Retention {
    /// The store.
    pub store: SharedStore,
    /// Where archived incidents go.
    pub archive: Archive,
    /// The rules.
    pub config: RetentionConfig,
    /// The clock.
    pub clock: Arc<dyn Clock>,
}

impl Retention {
    /// One pass now, on the blocking pool (the task's path; tests call it after moving
    /// a manual clock).
    pub async fn run(&self) -> Result<Pass, RetentionError> {
        let (store, archive, cfg, now) = (
            self.store.clone(),
            self.archive.clone(),
            self.config,
            self.clock.now(),
        );
        tokio::task::spawn_blocking(move || run_once(store.as_ref(), &archive, &cfg, now))
            .await
            .map_err(|e| RetentionError::Task(e.to_string()))?
    }

    /// Runs a pass every `interval` until `stop` turns true.
    pub fn spawn(self, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let every = Duration::from_millis(self.config.interval.0.max(1000));
            loop {
                match self.run().await {
                    Ok(p) if p.compacted + p.archived > 0 => {
                        info!(
                            compacted = p.compacted,
                            archived = p.archived,
                            "retention pass"
                        )
                    }
                    Ok(_) => {}
                    Err(e) => error!(error = %e, "retention pass failed"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_files_are_named_by_the_month_of_closing() {
        // 2026-12-02T08:00:00Z
        assert_eq!(month_file(1_796_198_400_000), "closed-2026-12.jsonl");
        assert_eq!(month_file(0), "closed-1970-01.jsonl");
    }
}
