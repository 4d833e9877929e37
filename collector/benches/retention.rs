//! Retention benchmark (issue 12): disk use per device per month, from a simulated month
//! on an injected clock (the store and [`retention::run_once`] take the time as an
//! argument, so a month takes seconds).
//!
//! Run: `cargo bench -p vigia-collector --bench retention` (release build; never part of
//! `cargo test`). `VIGIA_BENCH_DEVICES=N` devices (default 200), `VIGIA_BENCH_RUNS=R`
//! runs (default 3). Prints the machine, then the median of the runs with min and max.
//!
//! The month: every device has one fault a day (a new subject each day), raised, updated
//! eight times 20 s apart and cleared within the verification window, so it closes as
//! transient: ten events and one closed incident a device a day. The workflow's timers
//! and the retention pass run at the end of every day. Two settings: the defaults (events compacted after 90 days,
//! incidents archived after 365, so nothing leaves in a first month: the growth before
//! retention starts) and short ones (7 days for both), the steady state of a site that
//! keeps a week live. Disk use is the store's files after a flush and a clean close plus
//! the archive's, divided by the devices.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use vigia_collector::retention::{run_once, Archive, RetentionConfig};
use vigia_collector::store::embedded::SledStore;
use vigia_collector::store::Store;
use vigia_collector::workflow::{Dur, Policy, DAY, SECOND};
use vigia_protocol::{
    bounded, DeviceId, Event, EventBody, Evidence, FaultAction, FaultEvent, FaultKind, Severity,
    VERSION,
};

const T0: u64 = 1_800_000_000_000;
const DAYS: u64 = 30;
const PER_DAY: u64 = 10;
/// Between one device's events: the fault clears within the verification window (5 min).
const STEP: u64 = 20 * SECOND;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for entry in entries {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

fn event(device: &DeviceId, seq: u64, day: u64, i: u64) -> Event {
    let action = match i {
        0 => FaultAction::Raised,
        i if i == PER_DAY - 1 => FaultAction::Cleared,
        _ => FaultAction::Updated,
    };
    Event {
        v: VERSION,
        device: device.clone(),
        instance: 1,
        seq,
        boot: 1,
        ts: T0 + day * DAY + i * STEP,
        body: EventBody::Fault(FaultEvent {
            action,
            kind: FaultKind::DiskSpace,
            subject: bounded(&format!("/data{day}")),
            severity: Severity::Warning,
            evidence: Evidence {
                value: 95.0,
                threshold: 90.0,
                unit: bounded("%"),
                source: bounded("statvfs"),
            },
            message: bounded("disk filling"),
        }),
    }
}

/// One month; returns (bytes per device, store bytes, archive bytes, events compacted,
/// incidents archived).
fn month(devices: usize, cfg: &RetentionConfig) -> (f64, u64, u64, usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store");
    let ids: Vec<DeviceId> = (0..devices)
        .map(|d| DeviceId::new(&format!("ws-{d:05}")).unwrap())
        .collect();
    let archive = Archive::new(dir.path());
    let (mut compacted, mut archived) = (0, 0);
    {
        let s = SledStore::open(&db).unwrap();
        let p = Policy::default();
        for day in 0..DAYS {
            for i in 0..PER_DAY {
                let now = T0 + day * DAY + i * STEP;
                let batch: Vec<Event> = ids
                    .iter()
                    .map(|d| event(d, day * PER_DAY + i + 1, day, i))
                    .collect();
                for chunk in batch.chunks(256) {
                    for r in s.record_events(chunk, now, &p) {
                        r.unwrap();
                    }
                }
                s.flush().unwrap();
            }
            // The workflow's timers (auto-close of resolved incidents), then retention.
            let end = T0 + (day + 1) * DAY;
            s.tick_due(end, &p, usize::MAX).unwrap();
            let pass = run_once(&s, &archive, cfg, end).unwrap();
            compacted += pass.compacted;
            archived += pass.archived;
        }
        s.flush().unwrap();
    }
    let (store, arch) = (dir_bytes(&db), dir_bytes(archive.dir()));
    (
        (store + arch) as f64 / devices as f64,
        store,
        arch,
        compacted,
        archived,
    )
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{cpu}, {} cores, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

fn main() {
    // `cargo bench` passes --bench; nothing else is read from the command line.
    let devices = env("VIGIA_BENCH_DEVICES", 200);
    let runs = env("VIGIA_BENCH_RUNS", 3).max(1);
    println!("machine: {}", machine());
    println!(
        "{devices} devices, {DAYS} days, {PER_DAY} events and one closed incident a device a day; {runs} runs"
    );
    let short = RetentionConfig {
        events_after: Dur(7 * DAY),
        incidents_after: Dur(7 * DAY),
        ..RetentionConfig::default()
    };
    for (name, cfg) in [
        ("defaults (90 d / 365 d)", RetentionConfig::default()),
        ("7 d / 7 d", short),
    ] {
        let mut per_device = Vec::new();
        let mut last = (0, 0, 0, 0);
        let t = Instant::now();
        for _ in 0..runs {
            let (b, store, arch, c, a) = month(devices, &cfg);
            per_device.push(b);
            last = (store, arch, c, a);
        }
        per_device.sort_by(f64::total_cmp);
        let kib = |b: f64| b / 1024.0;
        println!(
            "retention {name}: disk per device per month {:.1} KiB ({:.1}-{:.1}); last run: store {:.1} MiB, archive {:.1} MiB, {} events compacted, {} incidents archived ({:.1} s a run)",
            kib(per_device[per_device.len() / 2]),
            kib(per_device[0]),
            kib(per_device[per_device.len() - 1]),
            last.0 as f64 / 1048576.0,
            last.1 as f64 / 1048576.0,
            last.2,
            last.3,
            t.elapsed().as_secs_f64() / runs as f64
        );
    }
}
