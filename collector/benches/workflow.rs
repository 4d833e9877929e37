//! Workflow engine benchmark (issue 12): transitions per second of the pure engine, with
//! no store and no I/O.
//!
//! Run: `cargo bench -p vigia-collector --bench workflow`. Criterion prints each rate (the
//! median estimate with its confidence interval; details under `target/criterion/`):
//!
//! - `route fault update`: what ingest asks of the engine for every device event of an
//!   open incident ([`workflow::route`]: correlation, then the transition), on an incident
//!   as the store loads it for an event (its head, without the audit trail).
//! - `person command cycle`: a service desk's round (assign, note, resolve, reopen: four
//!   transitions), repeated on the same incident, as the API applies them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vigia_collector::workflow::{
    self, Command, DeviceContext, FaultInput, Incident, Input, Person, Plan, Policy, Role, MINUTE,
};
use vigia_protocol::{
    bounded, DeviceId, Event, EventBody, Evidence, FaultAction, FaultEvent, FaultKind, Severity,
    VERSION,
};

const T0: u64 = 1_800_000_000_000;

fn fault(action: FaultAction) -> FaultEvent {
    FaultEvent {
        action,
        kind: FaultKind::DiskSpace,
        subject: bounded("/var"),
        severity: Severity::Major,
        evidence: Evidence {
            value: 93.0,
            threshold: 90.0,
            unit: bounded("%"),
            source: bounded("statvfs(/var)"),
        },
        message: bounded("/var is 93 % full"),
    }
}

fn person(inc: &Incident, by: &Person, command: Command, at: u64, p: &Policy) -> Incident {
    let input = Input::Person {
        by: by.clone(),
        command,
    };
    workflow::apply(inc, &input, at, p).unwrap().incident
}

/// An incident at level 1, confirmed and assigned, loaded without its trail.
fn at_level1(p: &Policy, desk: &Person) -> Incident {
    let dev = DeviceId::new("bench-dev").unwrap();
    let fi = FaultInput {
        instance: 0,
        seq: 1,
        ts: T0,
        fault: fault(FaultAction::Raised),
    };
    let inc = workflow::open_fault(1, dev, &fi, DeviceContext::default(), T0, p).incident;
    let inc = person(
        &inc,
        desk,
        Command::Confirm {
            note: String::new(),
        },
        T0 + MINUTE,
        p,
    );
    let mut inc = person(
        &inc,
        desk,
        Command::Assign {
            assignee: Some("luis".into()),
            group: None,
        },
        T0 + 2 * MINUTE,
        p,
    );
    inc.audit.clear();
    inc
}

fn bench(c: &mut Criterion) {
    let p = Policy::default();
    let desk = Person::new("ana", [Role::ServiceDesk]);
    let start = at_level1(&p, &desk);
    let mut g = c.benchmark_group("workflow");

    g.throughput(Throughput::Elements(1));
    g.bench_function("route fault update", |b| {
        let mut inc = start.clone();
        let mut seq = 1;
        b.iter(|| {
            seq += 1;
            let ev = Event {
                v: VERSION,
                device: inc.device.clone().expect("a fault's incident has a device"),
                instance: 0,
                seq,
                boot: 1,
                ts: T0 + seq,
                body: EventBody::Fault(fault(FaultAction::Updated)),
            };
            let plan = workflow::route(
                &ev,
                Some(&inc),
                DeviceContext::default(),
                2,
                T0 + 3 * MINUTE + seq,
                &p,
            );
            let Plan::Update(d) = plan else {
                panic!("an update of an open incident must update it: {plan:?}");
            };
            inc = d.incident;
            // As the store keeps it: the head, new records appended elsewhere.
            inc.audit.clear();
            black_box(&inc);
        });
    });

    g.throughput(Throughput::Elements(4));
    g.bench_function("person command cycle", |b| {
        let mut inc = start.clone();
        let mut now = T0 + 3 * MINUTE;
        b.iter(|| {
            let cycle = [
                Command::Assign {
                    assignee: Some("marta".into()),
                    group: None,
                },
                Command::Note {
                    text: "called the user".into(),
                },
                Command::Resolve {
                    solution: "cleaned old logs".into(),
                },
                Command::Reopen {
                    why: "full again".into(),
                },
            ];
            for c in cycle {
                now += 1000;
                inc = person(&inc, &desk, c, now, &p);
                inc.audit.clear();
            }
            // A desk writes a few notes on an incident, not one per round of a loop run
            // millions of times: without this the rate would measure copying a growing
            // list of notes, not transitions.
            inc.notes.clear();
            black_box(&inc);
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
