//! Store benchmark (issue 4): with 1,000,000 stored incidents, list the open incidents of
//! one level (first page of 50) and show one incident with its history, each under 5 ms
//! at the median.
//!
//! Run: `cargo bench -p vigia-collector --bench store` (release build; never part of
//! `cargo test`). `VIGIA_BENCH_INCIDENTS=N` changes the size, `VIGIA_BENCH_RUNS=R` the
//! runs per measurement. A plain harness (`harness = false`) rather than criterion: the
//! figures asked for are medians of many runs of two operations, which a few lines
//! measure without another dependency.
//!
//! Incidents are realistic: each is a clone of one produced by the workflow engine
//! (registered → validated → verifying, then confirmed, escalated, resolved or closed),
//! with its own number, device, subject and time, so the audit trails are the engine's.
//! They are written with [`Store::import`] (one sled batch per tree per 20,000 incidents),
//! in a temporary directory removed at the end, or in `VIGIA_BENCH_DIR` (kept, and
//! topped up to the asked size on the next run). `VIGIA_BENCH_FILL_ONLY=1` stops after
//! the fill.
//!
//! Memory: the resident set is printed after every `VIGIA_BENCH_CHUNK` incidents
//! written (default 100,000) and after the measurements. sled 0.34 keeps much of what a
//! process wrote in memory, beyond its cache capacity (about 4 GiB for 100,000 imported
//! incidents), so a million is filled by several processes, 100,000 each, and measured by
//! a fresh one, as a restarted collector serves it: `bench/store-million`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use vigia_collector::http::IncidentDetail;
use vigia_collector::store::embedded::SledStore;
use vigia_collector::store::{IncidentFilter, StateFilter, Store};
use vigia_collector::workflow::{
    self, Command, DeviceContext, FaultInput, Incident, Level, Person, Policy, Role, MINUTE,
};
use vigia_protocol::{bounded, DeviceId, Evidence, FaultAction, FaultEvent, FaultKind, Severity};

const T0: u64 = 1_800_000_000_000;
const BATCH: usize = 20_000;
const DEVICES: usize = 5_000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A few incidents in different states, straight from the engine.
fn templates(policy: &Policy) -> Vec<Incident> {
    let dev = DeviceId::new("bench-dev").unwrap();
    let fi = FaultInput {
        seq: 1,
        instance: 0,
        ts: T0,
        fault: FaultEvent {
            action: FaultAction::Raised,
            kind: FaultKind::DiskSpace,
            subject: bounded("/var"),
            severity: Severity::Critical,
            evidence: Evidence {
                value: 98.0,
                threshold: 97.0,
                unit: bounded("%"),
                source: bounded("statvfs(/var)"),
            },
            message: bounded("/var is 98 % full"),
        },
    };
    let desk = Person::new("ana", [Role::ServiceDesk]);
    let act = |inc: &Incident, c: Command, at: u64| {
        workflow::apply(
            inc,
            &workflow::Input::Person {
                by: desk.clone(),
                command: c,
            },
            at,
            policy,
        )
        .unwrap()
        .incident
    };
    let verifying =
        workflow::open_fault(1, dev, &fi, DeviceContext::default(), T0, policy).incident;
    let mut routed = act(
        &verifying,
        Command::Confirm {
            note: "seen".into(),
        },
        T0 + MINUTE,
    );
    routed = act(
        &routed,
        Command::Assign {
            assignee: Some("luis".into()),
            group: None,
        },
        T0 + 2 * MINUTE,
    );
    let at = |inc: &Incident, level: Level| {
        if inc.level >= level {
            inc.clone()
        } else {
            act(
                inc,
                Command::Escalate {
                    to: Some(level),
                    why: "needs on-site work".into(),
                },
                T0 + 3 * MINUTE,
            )
        }
    };
    let l1 = routed.clone();
    let l2 = at(&routed, Level::L2);
    let l3 = at(&l2, Level::L3);
    let resolved = act(
        &l2,
        Command::Resolve {
            solution: "cleaned old logs".into(),
        },
        T0 + 4 * MINUTE,
    );
    let closed = act(
        &resolved,
        Command::Close {
            note: "confirmed with the user".into(),
        },
        T0 + 5 * MINUTE,
    );
    // Half closed, the rest spread over the working states.
    vec![
        closed.clone(),
        closed.clone(),
        closed.clone(),
        closed.clone(),
        closed,
        verifying,
        l1,
        l2,
        l3,
        resolved,
    ]
}

fn fill(store: &SledStore, from: usize, n: usize, policy: &Policy) -> Duration {
    let templates = templates(policy);
    let devices: Vec<DeviceId> = (0..DEVICES)
        .map(|i| DeviceId::new(&format!("host-{i:05}")).unwrap())
        .collect();
    let start = Instant::now();
    let mut batch = Vec::with_capacity(BATCH);
    for i in from..n {
        let mut inc = templates[i % templates.len()].clone();
        let number = i as u64 + 1;
        inc.number = number;
        inc.device = Some(devices[i % DEVICES].clone());
        if let workflow::Origin::Fault { subject, .. } = &mut inc.origin {
            *subject = format!("/data{}", i / DEVICES);
        }
        let shift = i as u64 * 1000;
        inc.opened_at += shift;
        inc.sla.started_at += shift;
        for r in &mut inc.audit {
            r.at += shift;
        }
        batch.push(inc);
        if batch.len() == BATCH {
            store.import(&batch, policy).unwrap();
            batch.clear();
        }
    }
    store.import(&batch, policy).unwrap();
    store.flush().unwrap();
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let p = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
    (p(0.5), p(0.9), p(0.99))
}

fn measure(name: &str, runs: usize, mut f: impl FnMut(usize)) {
    for i in 0..runs.min(20) {
        f(i); // warm-up
    }
    let times: Vec<Duration> = (0..runs)
        .map(|i| {
            let t = Instant::now();
            f(i);
            t.elapsed()
        })
        .collect();
    let (p50, p90, p99) = median(times);
    println!(
        "{name:<58} median {:>8.3} ms   p90 {:>8.3} ms   p99 {:>8.3} ms   ({runs} runs)",
        p50.as_secs_f64() * 1e3,
        p90.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
}

fn dir_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// This process's resident set and its peak, in MiB, from `/proc/self/status`.
fn rss() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or_else(
                || "unsupported".to_owned(),
                |kb| format!("{} MiB", kb / 1024),
            )
    };
    format!("RSS {}, peak {}", field("VmRSS:"), field("VmHWM:"))
}

fn stored(store: &SledStore) -> usize {
    let counts = store.incident_counts().unwrap();
    counts.values().sum::<u64>() as usize
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let n = env("VIGIA_BENCH_INCIDENTS", 1_000_000);
    let runs = env("VIGIA_BENCH_RUNS", 1000);
    let chunk = env("VIGIA_BENCH_CHUNK", 100_000).max(BATCH);
    let temp = tempfile::tempdir().unwrap();
    let kept = std::env::var_os("VIGIA_BENCH_DIR").map(std::path::PathBuf::from);
    let dir = kept.as_deref().unwrap_or(temp.path());
    let policy = Policy::default();
    let store = SledStore::open(dir).unwrap();
    let already = stored(&store);
    assert!(
        already <= n,
        "{} holds {already} incidents, more than {n}",
        dir.display()
    );
    println!("opened a store of {already} incidents; {}", rss());
    let mut took = Duration::ZERO;
    let mut at = already;
    while at < n {
        let to = (at + chunk).min(n);
        took += fill(&store, at, to, &policy);
        println!("  {to} incidents written; {}", rss());
        at = to;
    }
    if n > already {
        println!(
            "filled {} incidents in {:.1} s ({:.0} incidents/s)",
            n - already,
            took.as_secs_f64(),
            (n - already) as f64 / took.as_secs_f64(),
        );
    }
    println!(
        "store of {n} incidents: {:.0} MiB ({:.1} KB an incident); {}",
        dir_size(dir) as f64 / (1024.0 * 1024.0),
        dir_size(dir) as f64 / n as f64 / 1000.0,
        rss()
    );
    if std::env::var_os("VIGIA_BENCH_FILL_ONLY").is_some() {
        return;
    }
    let counts = store.incident_counts().unwrap();
    println!(
        "by state: {}",
        counts
            .iter()
            .filter(|(_, c)| **c > 0)
            .map(|(s, c)| format!("{s} {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    for level in [Level::L1, Level::L2, Level::L3] {
        let filter = IncidentFilter {
            state: Some(StateFilter::Open),
            level: Some(level),
            limit: Some(50),
            ..Default::default()
        };
        assert_eq!(store.incidents(&filter).unwrap().len(), 50);
        measure(
            &format!("list open incidents at level {level}, first page of 50"),
            runs,
            |_| {
                let page = store.incidents(&filter).unwrap();
                let json = serde_json::to_vec(&page).unwrap();
                std::hint::black_box(json);
            },
        );
    }
    let deep = IncidentFilter {
        state: Some(StateFilter::Open),
        level: Some(Level::L2),
        offset: 50 * 99,
        limit: Some(50),
        ..Default::default()
    };
    measure(
        "list open incidents at level 2, page 100 of 50",
        (runs / 10).max(1),
        |_| {
            std::hint::black_box(store.incidents(&deep).unwrap());
        },
    );
    let device = IncidentFilter {
        device: Some(DeviceId::new("host-01234").unwrap()),
        limit: Some(50),
        ..Default::default()
    };
    measure(
        "list one device's incidents, first page of 50",
        runs,
        |_| {
            std::hint::black_box(store.incidents(&device).unwrap());
        },
    );

    // Show: random incidents across the whole store (mostly not in the cache's hot set),
    // decoded and rendered as the API's JSON.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    measure(
        "show one incident with its audit trail (random)",
        runs,
        |_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let number = x % n as u64 + 1;
            let inc = store.incident(number).unwrap().unwrap();
            let json = serde_json::to_vec(&IncidentDetail::new(inc, &policy)).unwrap();
            std::hint::black_box(json);
        },
    );
    // The first measurement runs right after the fill, on a cache full of writes: run it
    // again to see warm-up apart from steady state.
    let l1 = IncidentFilter {
        state: Some(StateFilter::Open),
        level: Some(Level::L1),
        limit: Some(50),
        ..Default::default()
    };
    measure(
        "list open incidents at level 1, first page of 50 (again)",
        runs,
        |_| {
            let page = store.incidents(&l1).unwrap();
            std::hint::black_box(serde_json::to_vec(&page).unwrap());
        },
    );
    println!("after the measurements: {}", rss());
    let sample = store.incident(n as u64 / 2).unwrap().unwrap();
    println!(
        "(a shown incident: {} audit records, {} bytes of JSON)",
        sample.audit.len(),
        serde_json::to_vec(&sample).unwrap().len()
    );
}
