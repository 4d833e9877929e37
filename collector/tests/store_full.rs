//! The collector's store on a full disk, for real: its data directory is on a small tmpfs
//! that the test fills. Events that cannot be stored are released to the broker but not
//! acknowledged to their devices (so the broker's in-flight window never fills up and
//! stalls every device); the collector says it is stalled; once space is freed it reopens
//! its store, announces itself online again so devices resend, and every event is stored
//! exactly once.
//!
//! Mounting needs root. Without it the test fails saying so: it never passes without
//! having run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{config, Api, TestClient, DEADLINE};
use serde_json::{json, Value};

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run mount (this test needs root): {e}"));
        assert!(
            out.status.success(),
            "cannot mount a tmpfs at {} (this test needs root): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Self(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Fills the filesystem holding `path` with the file `path`.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5au8; 64 * 1024];
    loop {
        if let Err(e) = f.write_all(&chunk).and_then(|()| f.sync_data()) {
            assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
            break;
        }
    }
    // Whatever a smaller write can still take.
    while f
        .write_all(&[0u8; 512])
        .and_then(|()| f.sync_data())
        .is_ok()
    {}
}

const DEV: &str = "full-dev-1";

fn event(seq: u64) -> Vec<u8> {
    json!({"v": 1, "device": DEV, "seq": seq, "boot": 1, "ts": seq,
        "body": {"type": "fault", "action": "raised", "kind": "disk_space",
                 "subject": format!("/data{seq}"), "severity": "warning",
                 "evidence": {"value": 91.0, "threshold": 90.0, "unit": "%",
                              "source": "statvfs"}}})
    .to_string()
    .into_bytes()
}

/// The seqs an application ack names as stored.
fn acked(v: &Value) -> Vec<u64> {
    v["stored"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["from"].as_u64().unwrap()..=r["to"].as_u64().unwrap())
        .collect()
}

async fn metric(api: &Api, name: &str) -> Option<u64> {
    let api = api.clone();
    let (status, text) = tokio::task::spawn_blocking(move || api.call("GET", "/metrics", None))
        .await
        .unwrap();
    assert_eq!(
        status, 200,
        "/metrics answers even while the store fails: {text}"
    );
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.trim().parse().ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stalls_ingest_without_losing_an_event_and_it_resumes_when_freed() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let _tmpfs = Tmpfs::mount(&mnt, "24m");
    let mut cfg = config(dir.path());
    cfg.data_dir = mnt.join("data");
    let running = vigia_collector::start(cfg).await.unwrap();
    let api = Api::admin(&running).await;
    let subs = [
        format!("vigia/v1/down/{DEV}/ack"),
        "vigia/v1/svc/collector/status".to_string(),
    ];
    let mut dev = TestClient::connect(&running.mqtt_url, "full-agent", &subs).await;
    let topic = format!("vigia/v1/up/{DEV}/event");
    let mut unacked: BTreeSet<u64> = BTreeSet::new();
    let mut seq = 0;

    // Ten events stored and acknowledged.
    for _ in 0..10 {
        seq += 1;
        unacked.insert(seq);
        dev.publish(&topic, false, event(seq)).await;
    }
    dev.recv_until("the first acks", |t, v| {
        if t.ends_with("/ack") {
            for s in acked(v) {
                unacked.remove(&s);
            }
        }
        unacked.is_empty()
    })
    .await;

    // The disk fills; events keep coming until the collector says it is stalled.
    fill(&mnt.join("filler"));
    let end = tokio::time::Instant::now() + DEADLINE;
    while metric(&api, "vigia_ingest_stalled").await != Some(1) {
        assert!(
            tokio::time::Instant::now() < end,
            "ingest never stalled on a full disk"
        );
        for _ in 0..5 {
            seq += 1;
            unacked.insert(seq);
            dev.publish(&topic, false, event(seq)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // More while it is stalled than the broker lets the collector hold unacknowledged
    // (its in-flight window is 500): they all reach the collector only if each one is
    // released to the broker although it could not be stored.
    for _ in 0..600 {
        seq += 1;
        unacked.insert(seq);
        dev.publish(&topic, false, event(seq)).await;
    }
    let sent = seq;
    let end = tokio::time::Instant::now() + DEADLINE;
    // All of them reached the collector (and, by the end, none is lost).
    while metric(&api, "vigia_messages_in_total{kind=\"event\"}")
        .await
        .unwrap_or(0)
        < sent
    {
        assert!(
            tokio::time::Instant::now() < end,
            "the events never reached the collector"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(metric(&api, "vigia_store_errors_total").await.unwrap_or(0) > 0);
    assert_eq!(
        metric(&api, "vigia_ingest_stalled").await,
        Some(1),
        "still stalled"
    );

    // Room again: the collector reopens its store and says it is online; the device
    // resends what was never acknowledged, and all of it is stored.
    std::fs::remove_file(mnt.join("filler")).unwrap();
    let mut online = false;
    let mut resent = false;
    while !(online && resent && unacked.is_empty()) {
        let mut got_online = false;
        dev.recv_until("the collector back online, then the acks", |t, v| {
            if t.ends_with("/ack") {
                for s in acked(v) {
                    unacked.remove(&s);
                }
            }
            if t.ends_with("collector/status") && v["online"] == true {
                got_online = true;
            }
            got_online || (resent && unacked.is_empty())
        })
        .await;
        if got_online {
            online = true;
            for s in unacked.clone() {
                dev.publish(&topic, false, event(s)).await;
            }
            resent = true;
        }
    }
    assert_eq!(metric(&api, "vigia_ingest_stalled").await, Some(0));
    assert!(metric(&api, "vigia_store_reopens_total").await.unwrap_or(0) >= 1);
    let api2 = api.clone();
    let (status, text) = tokio::task::spawn_blocking(move || {
        api2.call("GET", &format!("/api/devices/{DEV}/events"), None)
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["count"], sent, "every event stored once: {v}");
    assert_eq!(v["missing"], json!([]), "{v}");
    running.shutdown().await.unwrap();
}
