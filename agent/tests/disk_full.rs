//! A full disk on the device (the likeliest moment: `/var` at 100 %), for real: the
//! agent's data directory is on a small tmpfs that the test fills. The agent keeps
//! running and answering its socket; the fault raised while the disk is full gets in
//! through the spool's reserve; what cannot be written waits in memory, is never
//! published before it is written, and is delivered once space is freed; nothing is lost.
//!
//! Mounting needs root. Without it (or when the mount fails) the test fails with a
//! message saying so: it never passes without having run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{free_port, mosquitto_or_skip, watcher, Broker};
use tokio::sync::{mpsc, oneshot};
use vigia_agent::config::Config;
use vigia_agent::ipc::{self, Request, Response, StatusView};
use vigia_agent::run;
use vigia_agent::spool::{reserve_path, Spool};
use vigia_protocol::{decode, DeviceId, Event as WireEvent, EventBody, FaultAction, Severity};

const DEADLINE: Duration = Duration::from_secs(60);
const MOUNTS: usize = 30;

/// A tmpfs mounted for one test, unmounted when dropped (lazily, should a failed test
/// leave a file open on it).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(parent: &Path, size: &str) -> Self {
        let dir = parent.join("tmpfs");
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(&dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Self { dir },
            Ok(o) => panic!(
                "cannot mount a tmpfs at {} (this test needs root): {}",
                dir.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!("cannot run mount (this test needs root and mount(8)): {e}"),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Fills the filesystem holding `path` with the file `path`, until it is full.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0xa5u8; 4096];
    loop {
        if let Err(e) = f.write_all(&chunk) {
            assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
            break;
        }
    }
    // Whatever a partial write left: the filesystem is full now.
    let _ = f.sync_all();
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One replay line: every mount at `avail` % free.
fn line(avail: u64) -> String {
    let disks: Vec<String> = (0..MOUNTS)
        .map(|i| {
            format!(
                r#"{{"mount":"/m{i}","total_bytes":100,"avail_bytes":{avail},"files":10,"files_free":5}}"#
            )
        })
        .collect();
    format!("{{\"disk\":[{}]}}\n", disks.join(","))
}

fn append(path: &Path, lines: &[String]) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    for l in lines {
        f.write_all(l.as_bytes()).unwrap();
    }
}

/// Full for three passes (every mount raises a critical fault), then free again for
/// three (every one clears): one cycle is 2 × MOUNTS events.
fn cycle(replay: &Path) {
    let mut lines = vec![line(0); 3];
    lines.extend(vec![line(50); 3]);
    append(replay, &lines);
}

/// What the stand-in collector received, by seq (duplicates are expected and merged).
#[derive(Default)]
struct Received {
    events: BTreeMap<u64, WireEvent>,
}

impl Received {
    fn drain(&mut self, rx: &mut mpsc::UnboundedReceiver<(String, Vec<u8>)>) {
        while let Ok((topic, payload)) = rx.try_recv() {
            if topic == "vigia/v1/up/ws-full/event" {
                let ev: WireEvent = decode(&payload).unwrap();
                self.events.insert(ev.seq, ev);
            }
        }
    }

    fn count(&self, action: FaultAction) -> usize {
        self.events
            .values()
            .filter(|e| matches!(&e.body, EventBody::Fault(f) if f.action == action))
            .count()
    }
}

async fn status(cfg: &Config) -> StatusView {
    match ipc::request(&cfg.socket, &Request::Status).await {
        Ok(Response::Status(v)) => v,
        other => panic!("the agent did not answer status: {other:?}"),
    }
}

/// Polls, draining what the collector received, until `f` holds or the deadline passes.
async fn until(
    what: &str,
    rx: &mut mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    got: &mut Received,
    agent: &tokio::task::JoinHandle<Result<(), vigia_agent::AgentError>>,
    mut f: impl FnMut(&Received) -> bool,
) {
    let start = Instant::now();
    loop {
        got.drain(rx);
        assert!(!agent.is_finished(), "the agent stopped while {what}");
        if f(got) {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_data_directory_loses_nothing_and_stops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(dir.path(), "16m");
    let Some(bin) = mosquitto_or_skip() else {
        return;
    };
    let port = free_port();
    let _broker = Broker::start(&bin, dir.path(), port);
    let (_collector, mut rx) = watcher(port).await;
    let replay = dir.path().join("replay.jsonl");
    std::fs::write(&replay, line(50)).unwrap();
    let cfg = Config::from_toml(
        &format!(
            "interval = \"50ms\"\ndata_dir = \"{}\"\n[device]\nid = \"ws-full\"\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nkeep_alive = \"5s\"\n\
             [detect]\nreplay = \"{}\"\n",
            fs.dir.join("data").display(),
            replay.display()
        ),
        "test",
    )
    .unwrap();
    let reserve = reserve_path(&cfg.db_path());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let agent = tokio::spawn(run(cfg.clone(), async {
        let _ = stop_rx.await;
    }));
    let mut got = Received::default();
    let start = Instant::now();
    while !(cfg.socket.exists() && status(&cfg).await.connected) {
        assert!(start.elapsed() < DEADLINE, "the agent did not connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reserve.exists(), "the spool keeps a reserve");

    // The disk fills up. Faults come and go until the database finds no room: the spool
    // gives up its reserve, and the events go on arriving, written in the reserve.
    let filler = fs.dir.join("filler-1");
    fill(&filler);
    let mut cycles = 0;
    while reserve.exists() {
        assert!(cycles < 40, "the database never ran out of room");
        cycles += 1;
        cycle(&replay);
        let want = 2 * MOUNTS * cycles;
        until("a cycle's events", &mut rx, &mut got, &agent, |g| {
            g.count(FaultAction::Cleared) >= want / 2
        })
        .await;
    }
    // Still full (the reserve is spent on the database): the fault that says so gets in.
    append(&replay, &[line(0), line(0), line(0)]);
    let raised = MOUNTS * (cycles + 1);
    until(
        "the faults raised while full",
        &mut rx,
        &mut got,
        &agent,
        |g| g.count(FaultAction::Raised) >= raised,
    )
    .await;
    assert!(got.events.values().all(|e| match &e.body {
        EventBody::Fault(f) => f.action != FaultAction::Raised || f.severity == Severity::Critical,
        _ => false,
    }));

    // Full again, reserve gone: events now wait in memory, and the agent still answers.
    let filler2 = fs.dir.join("filler-2");
    fill(&filler2);
    append(&replay, &[line(50), line(50), line(50)]);
    let mut more = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if status(&cfg).await.held > 0 {
            break;
        }
        assert!(more < 40, "events never had to wait in memory");
        more += 1;
        cycle(&replay);
    }
    let report = Request::Report {
        category: "hardware".into(),
        summary: "the disk is full".into(),
        text: "nothing saves".into(),
        urgency: vigia_protocol::Urgency::High,
        contact: "ext 9".into(),
        wait_ms: 0,
    };
    let (report_seq, report_held) = match ipc::request(&cfg.socket, &report).await.unwrap() {
        Response::Reported { seq, held, .. } => (seq, held),
        other => panic!("{other:?}"),
    };
    assert!(
        report_held,
        "the report waits in memory, and the user is told"
    );
    let waiting = status(&cfg).await;
    assert!(waiting.held > 0 && !agent.is_finished());
    got.drain(&mut rx);
    assert!(
        !got.events.contains_key(&report_seq),
        "nothing is published before it is written"
    );

    // Space is freed: everything held is written and delivered, in order, with no gap.
    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(&filler2).unwrap();
    until(
        "everything up to the report",
        &mut rx,
        &mut got,
        &agent,
        |g| (1..=report_seq).all(|s| g.events.contains_key(&s)),
    )
    .await;
    assert!(matches!(
        &got.events[&report_seq].body,
        EventBody::Report(r) if r.summary.as_str() == "the disk is full"
    ));
    assert!(
        !got.events
            .values()
            .any(|e| matches!(e.body, EventBody::Dropped(_))),
        "nothing was dropped"
    );
    let after = status(&cfg).await;
    assert_eq!(after.held, 0);
    assert_eq!(after.dropped_total, 0);
    wait_for("the reserve to be written again", || reserve.exists());

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[test]
fn the_spool_holds_events_on_a_full_disk_and_survives_an_open_that_found_no_room() {
    // The same at the spool's level, without a broker: the write that finds the disk
    // full spends the reserve; after a reopen the held events are on disk.
    let dir = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(dir.path(), "16m");
    let db = fs.dir.join("db");
    let dev = DeviceId::new("ws-full").unwrap();
    let fault = |i: usize| {
        EventBody::Fault(vigia_protocol::FaultEvent {
            action: FaultAction::Raised,
            kind: vigia_protocol::FaultKind::DiskSpace,
            subject: vigia_protocol::bounded(&format!("/m{i}")),
            severity: Severity::Critical,
            evidence: vigia_protocol::Evidence {
                value: 100.0,
                threshold: 97.0,
                unit: vigia_protocol::bounded("%"),
                source: vigia_protocol::bounded("statvfs"),
            },
            message: vigia_protocol::bounded(&"x".repeat(300)),
        })
    };
    // A spool with some history (a few MiB of sled log), as on a device that has run.
    let mut pushed = Vec::new();
    let mut s = Spool::open(&db, dev.clone(), 8 << 20).unwrap();
    for i in 0..3000 {
        pushed.push(s.push(1, fault(i)).unwrap());
    }
    drop(s);
    let mut s = Spool::open(&db, dev.clone(), 8 << 20).unwrap();
    assert!(reserve_path(&db).exists());
    fill(&fs.dir.join("filler"));
    let mut i = 3000;
    while !s.needs_reopen() {
        assert!(i < 8000, "the database never ran out of room");
        pushed.push(s.push(1, fault(i)).unwrap());
        i += 1;
    }
    assert!(pushed.last().unwrap().held);
    assert!(
        !reserve_path(&db).exists(),
        "the full disk spent the reserve"
    );
    // sled stays failed after an I/O error: even with room, only a reopen writes.
    assert!(!s.retry(2));
    drop(s.close());
    // Full again before the reopen: opening now fails, and sled 0.34 leaves an
    // unfinished snapshot that made every later open read the database as corrupt.
    fill(&fs.dir.join("filler-2"));
    assert!(!vigia_agent::spool::room_to_reopen(&db));
    assert!(vigia_agent::spool::open_db(&db, Duration::from_secs(5)).is_err());
    std::fs::remove_file(fs.dir.join("filler")).unwrap();
    std::fs::remove_file(fs.dir.join("filler-2")).unwrap();
    assert!(vigia_agent::spool::room_to_reopen(&db));
    let reopened = vigia_agent::spool::open_db(&db, Duration::from_secs(5))
        .expect("the database opens once there is room again");
    s.attach(reopened, 3).unwrap();
    assert_eq!(s.held(), 0);
    let seqs: Vec<u64> = pushed.iter().map(|p| p.seq).collect();
    assert_eq!(s.seqs().collect::<Vec<_>>(), seqs);
    drop(s);
    let s = Spool::open(&db, dev, 8 << 20).unwrap();
    assert_eq!(s.seqs().collect::<Vec<_>>(), seqs, "on disk, in order");
    assert!(
        reserve_path(&db).exists(),
        "the reserve is back once there is room"
    );
}
