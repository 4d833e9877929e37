//! A slow probe never blocks the local socket: while smartctl takes its time over a disk
//! (up to 30 s a disk on real machines), `vigia-agent status` is still answered, during a
//! detector pass and at start-up, when the detectors' first read of every disk runs. The agent
//! runs as the binary runs it, on one current-thread runtime of its own; the stand-in
//! smartctl holds the detector pass until the test releases it, so the test says "was it
//! answered during the pass", not "was it fast".
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use vigia_agent::config::Config;
use vigia_agent::ipc::{self, Request, Response};

const DEADLINE: Duration = Duration::from_secs(20);

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/disk_health")
        .join(name)
}

/// A smartctl that answers at once until the file `hold` exists; from then on a disk query
/// says it started and waits for `release` (at most 60 s) before printing the disk's JSON.
fn slow_smartctl(dir: &Path) -> std::path::PathBuf {
    std::fs::copy(fixture("scan.json"), dir.join("scan.json")).unwrap();
    std::fs::copy(fixture("sda-ata-healthy.json"), dir.join("sda.json")).unwrap();
    std::fs::copy(fixture("nvme0-healthy.json"), dir.join("nvme0.json")).unwrap();
    let script = dir.join("smartctl");
    std::fs::write(
        &script,
        "#!/bin/sh\nd=$(dirname \"$0\")\nfor a in \"$@\"; do last=$a; done\n\
         case \" $* \" in\n  *\" --scan \"*) cat \"$d/scan.json\"; exit 0 ;;\nesac\n\
         [ -e \"$d/hold\" ] && touch \"$d/started\"\ni=0\nwhile [ -e \"$d/hold\" ] && [ ! -e \"$d/release\" ] && [ $i -lt 1200 ]; do \
         sleep 0.05; i=$((i+1)); done\ncat \"$d/$(basename \"$last\").json\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An agent config using the stand-in smartctl; no broker listens on its port (the link
/// keeps retrying, which is fine here).
fn config(dir: &Path, script: &Path) -> Config {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    Config::from_toml(
        &format!(
            "interval = \"50ms\"\ndata_dir = \"{}\"\n[device]\nid = \"ws-slow\"\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\n\
             [detect.disk_health]\nsmartctl = \"{}\"\nevery = 1\ntimeout_secs = 60\n",
            dir.join("data").display(),
            script.display()
        ),
        "test",
    )
    .unwrap()
}

/// Asks for `status` from a runtime of the test's own, with its own deadline.
fn status_within(socket: &Path, limit: Duration) -> Option<Result<Response, ipc::IpcError>> {
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    client.block_on(async {
        tokio::time::timeout(limit, ipc::request(socket, &Request::Status))
            .await
            .ok()
    })
}

#[test]
fn status_is_answered_while_smartctl_holds_the_detectors_start() {
    let dir = tempfile::tempdir().unwrap();
    let script = slow_smartctl(dir.path());
    // Held from the very first disk query: the one the detectors make at start.
    std::fs::write(dir.path().join("hold"), "").unwrap();
    let cfg = config(dir.path(), &script);
    let socket = cfg.socket.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(vigia_agent::run(cfg, async {
            let _ = stop_rx.await;
        }))
    });
    wait_for("the detectors' first smartctl read", || {
        dir.path().join("started").exists()
    });
    wait_for("the agent's socket while the detectors start", || {
        socket.exists()
    });
    let answer = status_within(&socket, Duration::from_secs(10));
    let still_held = !dir.path().join("release").exists();
    std::fs::write(dir.path().join("release"), "").unwrap();
    assert!(still_held);
    match answer {
        Some(Ok(Response::Status(s))) => {
            assert_eq!(s.device, "ws-slow");
            assert!(s.open_faults.is_empty(), "no pass has run yet");
        }
        Some(other) => panic!("unexpected answer: {other:?}"),
        None => panic!("status was not answered while the detectors started"),
    }
    let _ = stop_tx.send(());
    agent.join().unwrap().unwrap();
}

#[test]
fn status_is_answered_while_smartctl_holds_a_detector_pass() {
    let dir = tempfile::tempdir().unwrap();
    let script = slow_smartctl(dir.path());
    let cfg = config(dir.path(), &script);
    let socket = cfg.socket.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(vigia_agent::run(cfg, async {
            let _ = stop_rx.await;
        }))
    });

    wait_for("the agent's socket", || socket.exists());
    std::fs::write(dir.path().join("hold"), "").unwrap();
    wait_for("a detector pass inside smartctl", || {
        dir.path().join("started").exists()
    });
    // The pass is held now. The client runs on its own runtime, with its own deadline.
    let answer = status_within(&socket, Duration::from_secs(10));
    let still_held = !dir.path().join("release").exists();
    std::fs::write(dir.path().join("release"), "").unwrap();
    assert!(still_held);
    match answer {
        Some(Ok(Response::Status(s))) => assert_eq!(s.device, "ws-slow"),
        Some(other) => panic!("unexpected answer: {other:?}"),
        None => panic!("status was not answered while a detector pass ran"),
    }
    let _ = stop_tx.send(());
    agent.join().unwrap().unwrap();
}
