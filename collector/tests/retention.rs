//! Retention end to end, on a manual clock (no sleeping): a device's fault opens and
//! closes an incident; a month later the retention pass compacts its events (the API
//! still counts them) and moves the incident to the archive, which the API and the CLI
//! export, while the live lists no longer show it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::sync::Arc;

use common::{config, Api, TestClient};
use serde_json::{json, Value};
use vigia_collector::clock::ManualClock;
use vigia_collector::workflow::{Dur, DAY};

const DEV: &str = "ret-dev-1";
const T0: u64 = 1_800_000_000_000;

fn fault(seq: u64, action: &str) -> Vec<u8> {
    json!({
        "v": 1, "device": DEV, "seq": seq, "boot": 1, "ts": T0 + seq,
        "body": {"type": "fault", "action": action, "kind": "disk_space", "subject": "/var",
                 "severity": "warning",
                 "evidence": {"value": 95.0, "threshold": 90.0, "unit": "%", "source": "statvfs"},
                 "message": "/var is 95 % full"}
    })
    .to_string()
    .into_bytes()
}

async fn get(api: &Api, path: &str) -> (u16, String) {
    let (api, path) = (api.clone(), path.to_owned());
    tokio::task::spawn_blocking(move || api.call("GET", &path, None))
        .await
        .unwrap()
}

async fn get_json(api: &Api, path: &str) -> Value {
    let (status, body) = get(api, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_events_are_compacted_and_old_closed_incidents_leave_for_the_archive() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.retention.events_after = Dur(7 * DAY);
    cfg.retention.incidents_after = Dur(30 * DAY);
    let clock = Arc::new(ManualClock::new(T0));
    let running = vigia_collector::run::start_with_clock(cfg, clock.clone())
        .await
        .unwrap();
    let api = Api::admin(&running).await;
    let mut agent = TestClient::connect(
        &running.mqtt_url,
        DEV,
        &[format!("vigia/v1/down/{DEV}/ack")],
    )
    .await;
    let up = format!("vigia/v1/up/{DEV}/event");
    // Raised and cleared at once: closed as transient.
    agent.publish(&up, false, fault(1, "raised")).await;
    agent.publish(&up, false, fault(2, "cleared")).await;
    let mut acked = std::collections::BTreeSet::new();
    agent
        .recv_until("acks of both events", |_, v| {
            for r in v["stored"].as_array().into_iter().flatten() {
                acked.extend(r["from"].as_u64().unwrap()..=r["to"].as_u64().unwrap());
            }
            acked.len() == 2
        })
        .await;
    let inc = get_json(&api, "/api/incidents/1").await;
    assert_eq!(inc["state"], "closed", "{inc}");

    // Not old enough yet: nothing moves.
    clock.advance(2 * DAY);
    let pass = running.run_retention().await.unwrap();
    assert_eq!((pass.compacted, pass.archived), (0, 0));

    clock.advance(30 * DAY);
    let pass = running.run_retention().await.unwrap();
    assert_eq!((pass.compacted, pass.archived), (2, 1));

    // Counted still, gaps and all.
    let ev = get_json(&api, &format!("/api/devices/{DEV}/events?instance=0")).await;
    assert_eq!(ev["count"], 2, "{ev}");
    assert_eq!(ev["missing"], json!([]), "{ev}");
    // Gone from the live store and its lists.
    assert_eq!(get(&api, "/api/incidents/1").await.0, 404);
    let list = get_json(&api, "/api/incidents?state=closed").await;
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
    // In the archive, whole.
    let (status, text) = get(&api, "/api/archive").await;
    assert_eq!(status, 200, "{text}");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert_eq!(lines[0]["number"], 1);
    assert_eq!(lines[0]["state"], "closed");
    assert!(
        lines[0]["audit"].as_array().is_some_and(|a| !a.is_empty()),
        "the trail is archived too: {text}"
    );
    // The CLI exports the same.
    let (base, token) = (format!("http://{}", running.http_addr), api.token.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_vigia-collector"))
            .args(["--api", &base, "archive", "export"])
            .env("VIGIA_TOKEN", token)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), text.trim());

    // A redelivery of a compacted event is still a duplicate: no new incident.
    agent.publish(&up, false, fault(1, "raised")).await;
    agent
        .recv_until("the ack of the resend", |_, v| {
            v["stored"]
                .as_array()
                .is_some_and(|a| a.iter().any(|r| r["from"] == 1))
        })
        .await;
    let all = get_json(&api, "/api/incidents?state=all").await;
    assert_eq!(all.as_array().map(Vec::len), Some(0), "{all}");
    running.shutdown().await.unwrap();
}
