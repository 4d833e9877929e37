//! Store ingest benchmark (issue 12): device events written the way ingest writes them (a
//! batch of up to 256 in one [`Store::record_events`] call, then one flush), at 10 and at
//! 800 events per incident, and what the store grows by per event. The ingest cost must
//! not depend on the incident's history: the rate at 800 within 20 % of the rate at 10, and
//! under 1 KB of disk per stored event.
//!
//! Run: `cargo bench -p vigia-collector --bench store_ingest` (release build; never part of
//! `cargo test`). `VIGIA_BENCH_EVENTS=N` events per run (default 40,000),
//! `VIGIA_BENCH_RUNS=R` runs per figure (default 5). Prints the machine, then per figure the
//! median of the runs with min and max.
//!
//! The events are a fleet's: devices with five subjects each (a disk filling, say), each
//! subject raised once and then updated, so an incident gets `per_incident` events; the
//! device count follows from the total. Every run writes a fresh store in a temporary
//! directory, removed at the end. Disk use is the size of the store's files after a flush
//! and a clean close, divided by the events stored; live data is what its trees hold (keys
//! and values), the rest being sled's own overhead and not yet reclaimed space.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use vigia_collector::store::embedded::SledStore;
use vigia_collector::store::Store;
use vigia_collector::workflow::Policy;
use vigia_protocol::{
    bounded, DeviceId, Event, EventBody, Evidence, FaultAction, FaultEvent, FaultKind, Severity,
    VERSION,
};

const T0: u64 = 1_800_000_000_000;
const BATCH: usize = 256;
const SUBJECTS: [&str; 5] = ["/", "/var", "/home", "/srv", "/tmp"];

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The fleet's events in arrival order: every device sends its next event in turn.
fn events(total: usize, per_incident: usize) -> Vec<Event> {
    let per_device = per_incident * SUBJECTS.len();
    let devices = total.div_ceil(per_device).max(1);
    let mut out = Vec::with_capacity(total);
    let mut seq = vec![0u64; devices];
    'all: for round in 0..per_device {
        for (d, seq) in seq.iter_mut().enumerate() {
            if out.len() >= total {
                break 'all;
            }
            *seq += 1;
            let subject = SUBJECTS[round % SUBJECTS.len()];
            let action = if round < SUBJECTS.len() {
                FaultAction::Raised
            } else {
                FaultAction::Updated
            };
            let value = 90.0 + (round % 7) as f64;
            out.push(Event {
                v: VERSION,
                device: DeviceId::new(&format!("bench-{d:05}")).unwrap(),
                instance: 0x5eed_0000 + d as u64,
                seq: *seq,
                boot: 1,
                ts: T0 + *seq * 1000,
                body: EventBody::Fault(FaultEvent {
                    action,
                    kind: FaultKind::DiskSpace,
                    subject: bounded(subject),
                    severity: Severity::Major,
                    evidence: Evidence {
                        value,
                        threshold: 90.0,
                        unit: bounded("%"),
                        source: bounded(&format!("statvfs({subject})")),
                    },
                    message: bounded(&format!("{subject} is {value} % full")),
                }),
            });
        }
    }
    out
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
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

/// Key and value bytes per tree, largest first: what the store holds, as opposed to what
/// its files take.
fn live_bytes(dir: &std::path::Path) -> Vec<(String, u64)> {
    let db = vigia_collector::store::embedded::sled_config(dir)
        .open()
        .unwrap();
    let mut out: Vec<(String, u64)> = db
        .tree_names()
        .into_iter()
        .map(|name| {
            let tree = db.open_tree(&name).unwrap();
            let bytes = tree
                .iter()
                .map(|kv| {
                    let (k, v) = kv.unwrap();
                    (k.len() + v.len()) as u64
                })
                .sum();
            (String::from_utf8_lossy(&name).into_owned(), bytes)
        })
        .filter(|(_, b)| *b > 0)
        .collect();
    out.sort_by_key(|(_, bytes)| std::cmp::Reverse(*bytes));
    out
}

/// One run: (events per second, bytes on disk per event, live bytes per event by tree).
fn run(evs: &[Event], policy: &Policy) -> (f64, f64, Vec<(String, u64)>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let start = Instant::now();
    let mut now = T0;
    for batch in evs.chunks(BATCH) {
        now += 100;
        for out in store.record_events(batch, now, policy) {
            out.unwrap();
        }
        store.flush().unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(store.event_count(), evs.len());
    drop(store);
    let bytes = dir_bytes(dir.path()) as f64;
    let live = live_bytes(dir.path());
    (evs.len() as f64 / secs, bytes / evs.len() as f64, live)
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
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
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores")
}

fn main() {
    let total = env("VIGIA_BENCH_EVENTS", 40_000);
    let runs = env("VIGIA_BENCH_RUNS", 5).max(1);
    let policy = Policy::default();
    println!("store ingest: {total} events per run, {runs} runs, batches of {BATCH}");
    println!("machine: {}", machine());
    let mut rates = Vec::new();
    for per_incident in [10, 800] {
        let evs = events(total, per_incident);
        let (mut rate, mut bytes, mut live) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let (r, b, l) = run(&evs, &policy);
            rate.push(r);
            bytes.push(b);
            live = l;
        }
        let (rm, rmin, rmax) = stats(rate);
        let (bm, bmin, bmax) = stats(bytes);
        println!(
            "{per_incident:>4} events/incident: {rm:>8.0} events/s (min {rmin:.0}, max {rmax:.0}); \
             {bm:>6.0} B/event on disk (min {bmin:.0}, max {bmax:.0})"
        );
        let held: u64 = live.iter().map(|(_, b)| b).sum();
        let trees: Vec<String> = live
            .iter()
            .take(5)
            .map(|(t, b)| format!("{t} {:.0}", *b as f64 / evs.len() as f64))
            .collect();
        println!(
            "      live data {:.0} B/event ({})",
            held as f64 / evs.len() as f64,
            trees.join(", ")
        );
        rates.push(rm);
    }
    println!(
        "rate at 800 / rate at 10: {:.2} (target: at least 0.80)",
        rates[1] / rates[0]
    );
}
