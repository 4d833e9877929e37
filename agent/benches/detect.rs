//! Detection engine benchmark (issue 12): samples per second through [`Engine::level`] and
//! [`Engine::counter`], and the allocations the sampling loop makes, which must be zero
//! (the engine is `no_std` and allocation-free by design; this proves it on the real code).
//!
//! Run: `cargo bench -p vigia-agent --bench detect`. Criterion measures the rate (its
//! median, with the confidence interval, under `target/criterion/`); before that, the
//! allocation check runs 10,000 passes under a counting global allocator and fails the
//! bench if any allocation happened inside the loop.
//!
//! A pass is what a busy machine feeds the engine every interval: 32 mounts (space and
//! inodes), 64 temperature sensors and 32 interfaces' error counters, with values that
//! cross the thresholds back and forth, so raises, updates and clears (and their messages)
//! are part of the work.
// A global allocator is an `unsafe impl`: the one place in the workspace that needs it,
// and only in this benchmark.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{criterion_group, Criterion, Throughput};
use vigia_agent::detect::{
    CounterClear, CounterRule, CounterStart, Debounce, Engine, Levels, Obs, Severities,
};
use vigia_protocol::{FaultKind, Severity};

/// Counts every allocation and reallocation, then hands it to the system allocator.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to `System`, which upholds the contract.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same layout, as the caller promised for us.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const MOUNTS: usize = 32;
const SENSORS: usize = 64;
const NICS: usize = 32;
/// Readings fed per pass.
const SAMPLES: usize = MOUNTS * 2 + SENSORS + NICS;

/// Subject names, made once, outside the loop.
struct Subjects {
    mounts: Vec<String>,
    sensors: Vec<String>,
    nics: Vec<String>,
}

impl Subjects {
    fn new() -> Self {
        Self {
            mounts: (0..MOUNTS).map(|i| format!("/srv/vol{i:02}")).collect(),
            sensors: (0..SENSORS)
                .map(|i| format!("hwmon{}/temp{}", i / 8, i % 8))
                .collect(),
            nics: (0..NICS).map(|i| format!("enp{i}s0")).collect(),
        }
    }
}

const DISK: Levels = Levels::above(90.0, 97.0, 5.0);
const TEMP: Levels = Levels::above(85.0, 95.0, 5.0);
const DB: Debounce = Debounce {
    raise_after: 2,
    clear_after: 2,
    critical_after: 0,
};
const ERRORS: CounterRule = CounterRule {
    severity: Severity::Warning,
    min_increase: 10,
    clear: CounterClear::Quiet(3),
    since: "since boot",
};

/// One sampling pass at step `t`; returns the events emitted.
fn pass(e: &mut Engine, s: &Subjects, t: u64) -> usize {
    let mut events = 0;
    e.begin_pass();
    for (i, m) in s.mounts.iter().enumerate() {
        // A slow wave through the warn and critical levels, each mount at its own phase.
        let v = 80.0 + ((t + i as u64 * 7) % 20) as f64;
        let obs = Obs {
            kind: FaultKind::DiskSpace,
            subject: m,
            source: "statvfs",
            unit: "%",
            label: "space used",
        };
        events += usize::from(e.level(obs, v, &DISK, Severities::DEFAULT, DB).is_some());
        let obs = Obs {
            kind: FaultKind::DiskInodes,
            label: "inodes used",
            ..obs
        };
        events += usize::from(
            e.level(obs, v - 10.0, &DISK, Severities::DEFAULT, DB)
                .is_some(),
        );
    }
    for (i, name) in s.sensors.iter().enumerate() {
        let v = 70.0 + ((t * 3 + i as u64) % 30) as f64;
        let obs = Obs {
            kind: FaultKind::Overheating,
            subject: name,
            source: "hwmon",
            unit: "°C",
            label: "temperature",
        };
        events += usize::from(e.level(obs, v, &TEMP, Severities::DEFAULT, DB).is_some());
    }
    for (i, nic) in s.nics.iter().enumerate() {
        // Errors grow in bursts on some interfaces, and stay quiet on the others.
        let value = if i % 4 == 0 { t * 25 } else { t / 10 };
        let obs = Obs {
            kind: FaultKind::NicErrors,
            subject: nic,
            source: "/sys/class/net",
            unit: "errors",
            label: "receive errors",
        };
        events += usize::from(
            e.counter(obs, value, CounterStart::Zero, ERRORS)
                .event
                .is_some(),
        );
    }
    for kind in [
        FaultKind::DiskSpace,
        FaultKind::DiskInodes,
        FaultKind::Overheating,
        FaultKind::NicErrors,
    ] {
        e.end_pass(kind, &mut |_| events += 1);
    }
    events
}

/// Fails the bench if the sampling loop allocates at all.
fn allocations_in_the_loop() {
    // The counter itself must see allocations, or a zero below would prove nothing.
    let probe = ALLOCATIONS.load(Ordering::SeqCst);
    drop(black_box(vec![0u8; 64]));
    assert!(
        ALLOCATIONS.load(Ordering::SeqCst) > probe,
        "the counting allocator is not in use"
    );
    let s = Subjects::new();
    let mut e = Engine::new();
    // The first passes fill the engine's table (fixed capacity: no allocation either, but
    // the check should be about the steady loop and the first sight alike).
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    let mut events = 0;
    for t in 0..10_000 {
        events += pass(&mut e, &s, t);
    }
    let allocs = ALLOCATIONS.load(Ordering::SeqCst) - before;
    println!(
        "detect: 10000 passes, {} samples, {events} events, {allocs} allocations in the loop",
        10_000 * SAMPLES
    );
    assert!(events > 1000, "the passes must raise and clear faults");
    assert_eq!(allocs, 0, "the detection loop allocated");
}

fn bench(c: &mut Criterion) {
    let s = Subjects::new();
    let mut g = c.benchmark_group("detect");
    g.throughput(Throughput::Elements(SAMPLES as u64));
    g.bench_function("pass of 160 samples", |b| {
        let mut e = Engine::new();
        let mut t = 0;
        b.iter(|| {
            t += 1;
            black_box(pass(&mut e, &s, t))
        });
    });
    g.finish();
}

criterion_group!(benches, bench);

fn main() {
    allocations_in_the_loop();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
