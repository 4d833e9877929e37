//! The collector as one piece: embedded broker on port 0, HTTP on port 0, a real MQTT
//! client playing the agent. Checks what the agent sees (acks, commands) and what IT sees
//! (the HTTP API), and that a restart keeps everything and stores nothing twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{config, Api, TestClient, DEADLINE};
use serde_json::{json, Value};
use vigia_protocol::{bounded, encode, Birth, DeviceId, Dmi, Status, VERSION};

const DEV: &str = "it-dev-1";

fn event(seq: u64, action: &str, severity: &str, value: f64) -> Vec<u8> {
    json!({
        "v": 1, "device": DEV, "seq": seq, "boot": 1, "ts": 1_700_000_000_000u64 + seq,
        "body": {"type": "fault", "action": action, "kind": "disk_space", "subject": "/var",
                 "severity": severity,
                 "evidence": {"value": value, "threshold": 90.0, "unit": "%", "source": "statvfs(/var)"},
                 "message": format!("/var is {value} % full")}
    })
    .to_string()
    .into_bytes()
}

fn birth(boot: u64) -> Vec<u8> {
    encode(&Birth {
        v: VERSION,
        device: DeviceId::new(DEV).unwrap(),
        instance: 0,
        boot,
        ts: 1,
        agent_version: bounded("0.1.0"),
        hostname: bounded("it-host"),
        os: bounded("Debian GNU/Linux"),
        os_version: bounded("12"),
        kernel: bounded("6.1.0"),
        arch: bounded("x86_64"),
        cpu_model: bounded("Test CPU"),
        cpu_cores: 4,
        ram_bytes: 8 << 30,
        dmi: Dmi::default(),
        disks: heapless::Vec::new(),
        nics: heapless::Vec::new(),
        tags: heapless::Vec::new(),
    })
    .unwrap()
}

fn status(online: bool, boot: u64) -> Vec<u8> {
    encode(&Status {
        v: VERSION,
        device: DeviceId::new(DEV).unwrap(),
        instance: 0,
        online,
        boot,
        ts: 2,
    })
    .unwrap()
}

async fn get(base: &Api, path: &str) -> (u16, String) {
    let (api, path) = (base.clone(), path.to_owned());
    tokio::task::spawn_blocking(move || api.call("GET", &path, None))
        .await
        .unwrap()
}

async fn get_json(base: &Api, path: &str) -> Value {
    let (status, body) = get(base, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls the API until `f` accepts what `path` returns.
async fn poll_json(base: &Api, path: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        let v = get_json(base, path).await;
        if f(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}; last: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Collects acks: seq -> how many times acked as stored; seq -> rejection reason.
#[derive(Default)]
struct Acks {
    stored: BTreeMap<u64, u32>,
    rejected: BTreeMap<u64, String>,
}

impl Acks {
    fn add(&mut self, v: &Value) {
        for r in v["stored"].as_array().into_iter().flatten() {
            for s in r["from"].as_u64().unwrap()..=r["to"].as_u64().unwrap() {
                *self.stored.entry(s).or_default() += 1;
            }
        }
        for r in v["rejected"].as_array().into_iter().flatten() {
            self.rejected.insert(
                r["seq"].as_u64().unwrap(),
                r["reason"].as_str().unwrap().to_string(),
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_stored_once_rejections_acked_and_incident_opens_then_clears() {
    let dir = tempfile::tempdir().unwrap();
    let running = vigia_collector::start(config(dir.path())).await.unwrap();
    assert!(running.mqtt_url.starts_with("mqtt://127.0.0.1:"));
    assert_ne!(running.http_addr.port(), 0);
    let http = Api::admin(&running).await;
    assert_eq!(get(&http, "/healthz").await.0, 200);

    let up = |k: &str| format!("vigia/v1/up/{DEV}/{k}");
    let mut agent = TestClient::connect(
        &running.mqtt_url,
        "test-agent",
        &[
            format!("vigia/v1/down/{DEV}/+"),
            "vigia/v1/svc/collector/status".to_string(),
        ],
    )
    .await;

    agent.publish(&up("birth"), true, birth(1)).await;
    agent.publish(&up("status"), true, status(true, 1)).await;
    agent
        .publish(&up("event"), false, event(1, "raised", "warning", 91.0))
        .await;
    let mut acks = Acks::default();
    agent
        .recv_until("the ack of seq 1", |t, v| {
            if t.ends_with("/ack") {
                acks.add(v);
            }
            acks.stored.contains_key(&1)
        })
        .await;
    // Malformed body: the seq is still readable, so it is acked as rejected.
    agent
        .publish(
            &up("event"),
            false,
            br#"{"v":1,"device":"it-dev-1","seq":2,"body":"garbage"}"#.to_vec(),
        )
        .await;
    // The same seq again (a redelivery): acked again, stored once.
    agent
        .publish(&up("event"), false, event(1, "raised", "warning", 91.0))
        .await;
    agent
        .publish(&up("event"), false, event(3, "updated", "critical", 98.0))
        .await;
    // A newer major version (an agent upgraded before its collector): deferred, neither
    // stored nor rejected, so it stays in the agent's spool. No version at all: rejected.
    // And another device's id in this device's topic.
    agent
        .publish(
            &up("event"),
            false,
            br#"{"v":2,"device":"it-dev-1","seq":4}"#.to_vec(),
        )
        .await;
    agent
        .publish(
            &up("event"),
            false,
            br#"{"device":"it-dev-1","seq":6}"#.to_vec(),
        )
        .await;
    agent
        .publish(
            &up("event"),
            false,
            String::from_utf8(event(5, "raised", "warning", 91.0))
                .unwrap()
                .replace("it-dev-1", "someone-else")
                .into_bytes(),
        )
        .await;
    // Over the protocol's 16 KiB limit (but under the broker's 32 KiB packet limit): its
    // seq is still recovered so the agent stops resending it.
    let big = json!({"v": 1, "device": DEV, "seq": 7, "pad": "x".repeat(20_000)});
    agent
        .publish(&up("event"), false, big.to_string().into_bytes())
        .await;
    // An unknown topic under the prefix: counted, and the collector keeps going.
    agent.publish(&up("nonsense"), false, b"{}".to_vec()).await;

    agent
        .recv_until("acks for seqs 1-7", |t, v| {
            if t.ends_with("/ack") {
                acks.add(v);
            }
            acks.stored.get(&1) == Some(&2)
                && acks.stored.contains_key(&3)
                && acks.rejected.len() == 4
        })
        .await;
    assert_eq!(acks.rejected[&2], "malformed");
    assert_eq!(acks.rejected[&6], "bad_version");
    assert!(
        !acks.rejected.contains_key(&4),
        "a newer version is deferred"
    );
    assert_eq!(acks.rejected[&5], "device_mismatch");
    assert_eq!(acks.rejected[&7], "too_large");
    assert_eq!(acks.stored.keys().copied().collect::<Vec<_>>(), vec![1, 3]);

    // Stored exactly once: events 1 and 3, nothing else.
    let id = DeviceId::new(DEV).unwrap();
    assert_eq!(running.store().event_seqs(&id, 0).unwrap(), vec![1, 3]);

    // One incident, validated (agent faults carry their evidence) and being verified,
    // active, with both occurrences and the worst severity.
    let list = get_json(&http, &format!("/api/incidents?device={DEV}")).await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    let inc = &list[0];
    assert_eq!(inc["kind"], "disk_space");
    assert_eq!(inc["subject"], "/var");
    assert_eq!(inc["state"], "verifying");
    assert_eq!(inc["level"], 1);
    assert_eq!(inc["fault_active"], true);
    assert_eq!(inc["severity"], "critical");
    assert_eq!(inc["occurrences"], 2);
    assert!(inc["next_deadline"].as_u64().is_some(), "{inc}");
    let number = inc["number"].as_u64().unwrap();

    // The fault clears within the verification window: same incident, closed as
    // transient (000 step 3), every step in the audit trail.
    agent
        .publish(&up("event"), false, event(6, "cleared", "warning", 80.0))
        .await;
    let detail = poll_json(
        &http,
        &format!("/api/incidents/{number}"),
        "the incident to close as transient",
        |v| v["state"] == "closed",
    )
    .await;
    assert_eq!(detail["fault_active"], false);
    assert_eq!(detail["closure"]["reason"], "transient");
    let audit = detail["audit"].as_array().unwrap();
    let actions: Vec<&str> = audit
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions.first(), Some(&"register"), "{actions:?}");
    assert!(actions.contains(&"validate"), "{actions:?}");
    assert_eq!(audit.last().unwrap()["to"], "closed", "{actions:?}");
    assert!(detail.get("next_deadline").is_none(), "{detail}");
    let open = get_json(&http, "/api/incidents?state=open").await;
    assert_eq!(open.as_array().unwrap().len(), 0);
    assert_eq!(
        get_json(&http, "/api/incidents?state=closed")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(get(&http, "/api/incidents?state=bogus").await.0, 400);
    assert_eq!(get(&http, "/api/incidents/999").await.0, 404);

    // The device: inventory, online.
    let dev = get_json(&http, &format!("/api/devices/{DEV}")).await;
    assert_eq!(dev["online"], true);
    assert_eq!(dev["birth"]["hostname"], "it-host");
    let devs = get_json(&http, "/api/devices").await;
    assert_eq!(devs[0]["device"], DEV);
    assert_eq!(devs[0]["hostname"], "it-host");

    // Counted rejections in the metrics.
    let (_, metrics) = get(&http, "/metrics").await;
    for line in [
        "vigia_rejected_total{reason=\"malformed\"} 1",
        "vigia_rejected_total{reason=\"bad_version\"} 1",
        "vigia_events_deferred_total 1",
        "vigia_rejected_total{reason=\"device_mismatch\"} 1",
        "vigia_rejected_total{reason=\"unknown_topic\"} 1",
        "vigia_rejected_total{reason=\"too_large\"} 1",
        "vigia_events_duplicate_total 1",
        "vigia_incidents{state=\"closed\"} 1",
        "vigia_devices_online 1",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }

    // The retained Last Will of an older session does not mark the newer one offline;
    // this session's own offline does.
    agent.publish(&up("status"), true, status(false, 0)).await;
    agent.publish(&up("status"), true, status(false, 1)).await;
    poll_json(
        &http,
        &format!("/api/devices/{DEV}"),
        "device offline",
        |v| v["online"] == false,
    )
    .await;
    let dev = get_json(&http, &format!("/api/devices/{DEV}")).await;
    assert_eq!(dev["status"]["boot"], 1);

    // The page is served and self-contained: its script is a file of the console's
    // own, never inline, nothing from elsewhere.
    let (status, page) = get(&http, "/").await;
    assert_eq!(status, 200);
    assert!(page.contains("/assets/console.js"), "{page}");
    assert!(
        !page.contains("https://") && !page.contains("<script>"),
        "{page}"
    );
    let (status, script) = get(&http, "/assets/console.js").await;
    assert_eq!(status, 200);
    assert!(
        script.contains("EventSource"),
        "the console follows the feed"
    );

    // Clean shutdown publishes the collector's retained offline status.
    running.shutdown().await.unwrap();
    agent
        .recv_until("collector offline", |t, v| {
            t.ends_with("svc/collector/status") && v["online"] == false
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_incidents_and_redelivery_stays_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let up = format!("vigia/v1/up/{DEV}/event");
    let down = format!("vigia/v1/down/{DEV}/+");

    let running = vigia_collector::start(config(dir.path())).await.unwrap();
    let mut agent =
        TestClient::connect(&running.mqtt_url, "agent-a", std::slice::from_ref(&down)).await;
    for seq in 1..=20u64 {
        let subject_raise = json!({
            "v": 1, "device": DEV, "seq": seq, "boot": 1, "ts": seq,
            "body": {"type": "fault", "action": "raised", "kind": "disk_space",
                     "subject": format!("/m{}", seq % 5), "severity": "warning",
                     "evidence": {"value": 95.0, "threshold": 90.0, "unit": "%", "source": "t"}}
        });
        agent
            .publish(&up, false, subject_raise.to_string().into_bytes())
            .await;
    }
    let mut acked = BTreeSet::new();
    agent
        .recv_until("20 acks", |t, v| {
            if t.ends_with("/ack") {
                let mut a = Acks::default();
                a.add(v);
                acked.extend(a.stored.keys().copied());
            }
            acked.len() == 20
        })
        .await;
    let http = Api::admin(&running).await;
    let before = get_json(&http, "/api/incidents").await;
    assert_eq!(before.as_array().unwrap().len(), 5);
    running.shutdown().await.unwrap();
    drop(agent);

    // Reopen the same store (a new embedded broker: rumqttd cannot be stopped).
    let running = vigia_collector::start(config(dir.path())).await.unwrap();
    let http = http.at(&running);
    assert_eq!(get_json(&http, "/api/incidents").await, before);
    let mut agent = TestClient::connect(&running.mqtt_url, "agent-b", &[down]).await;
    // The agent resends everything (it lost its acks): all acked, nothing stored twice.
    for seq in 1..=20u64 {
        let again = json!({
            "v": 1, "device": DEV, "seq": seq, "boot": 1, "ts": seq,
            "body": {"type": "fault", "action": "raised", "kind": "disk_space",
                     "subject": format!("/m{}", seq % 5), "severity": "warning",
                     "evidence": {"value": 95.0, "threshold": 90.0, "unit": "%", "source": "t"}}
        });
        agent
            .publish(&up, false, again.to_string().into_bytes())
            .await;
    }
    let mut acked = BTreeSet::new();
    agent
        .recv_until("20 acks again", |t, v| {
            if t.ends_with("/ack") {
                let mut a = Acks::default();
                a.add(v);
                acked.extend(a.stored.keys().copied());
            }
            acked.len() == 20
        })
        .await;
    let after = get_json(&http, "/api/incidents").await;
    let after = after.as_array().unwrap();
    assert_eq!(after.len(), 5);
    for i in after {
        assert_eq!(i["occurrences"], 4, "{i}");
    }
    // Numbers are stable and sequential.
    let numbers: BTreeSet<u64> = after
        .iter()
        .map(|i| i["number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (1..=5).collect());
    assert_eq!(
        running
            .store()
            .event_seqs(&DeviceId::new(DEV).unwrap(), 0)
            .unwrap()
            .len(),
        20
    );
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_report_gets_its_incident_number_and_reply_becomes_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let running = vigia_collector::start(config(dir.path())).await.unwrap();
    let http = Api::admin(&running).await;
    let mut agent = TestClient::connect(
        &running.mqtt_url,
        "agent-r",
        &[format!("vigia/v1/down/{DEV}/+")],
    )
    .await;
    let up = format!("vigia/v1/up/{DEV}/event");
    let report = json!({
        "v": 1, "device": DEV, "seq": 1, "boot": 1, "ts": 10,
        "body": {"type": "report", "report_id": 42, "category": "printer",
                 "summary": "Printer jams", "text": "Every second page", "reporter": "ana",
                 "contact": "ext 123", "urgency": "high"}
    });
    agent
        .publish(&up, false, report.to_string().into_bytes())
        .await;
    let mut incident = None;
    agent
        .recv_until("report accepted", |t, v| {
            if t.ends_with("/cmd") && v["body"]["type"] == "report_accepted" {
                assert_eq!(v["body"]["report_id"], 42);
                incident = v["body"]["incident"].as_u64();
                return true;
            }
            false
        })
        .await;
    let n = incident.unwrap();
    let reply = json!({
        "v": 1, "device": DEV, "seq": 2, "boot": 1, "ts": 11,
        "body": {"type": "reply", "incident": n, "text": "It is tray 2"}
    });
    agent
        .publish(&up, false, reply.to_string().into_bytes())
        .await;
    let inc = poll_json(&http, &format!("/api/incidents/{n}"), "the note", |v| {
        v["notes"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    assert_eq!(inc["origin"]["type"], "report");
    assert_eq!(inc["origin"]["reporter"], "ana");
    assert_eq!(inc["notes"][0]["text"], "It is tray 2");
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_feed_streams_incidents_and_devices_and_does_not_block_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let running = vigia_collector::start(config(dir.path())).await.unwrap();
    let api = Api::admin(&running).await;
    // A browser on the feed.
    let mut sse = tokio::net::TcpStream::connect(running.http_addr)
        .await
        .unwrap();
    let head = format!(
        "GET /api/feed HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Accept: text/event-stream\r\n\r\n",
        api.token
    );
    sse.write_all(head.as_bytes()).await.unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    // Wait for the response head so the subscription exists before we publish.
    let end = tokio::time::Instant::now() + DEADLINE;
    while !seen.contains("text/event-stream") {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        let n = tokio::time::timeout(left, sse.read(&mut buf))
            .await
            .expect("feed response")
            .unwrap();
        assert!(n > 0, "feed closed early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }

    let agent = TestClient::connect(&running.mqtt_url, "agent-feed", &[]).await;
    agent
        .publish(&format!("vigia/v1/up/{DEV}/status"), true, status(true, 3))
        .await;
    agent
        .publish(
            &format!("vigia/v1/up/{DEV}/event"),
            false,
            event(1, "raised", "warning", 93.0),
        )
        .await;
    while !(seen.contains("event: device") && seen.contains("event: incident")) {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        let n = tokio::time::timeout(left, sse.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("feed events; got so far:\n{seen}"))
            .unwrap();
        assert!(n > 0, "feed closed early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains("\"opened\":true"), "{seen}");
    assert!(seen.contains("\"online\":true"), "{seen}");

    // The feed connection is still open: shutdown must end it rather than wait on it.
    tokio::time::timeout(DEADLINE, running.shutdown())
        .await
        .expect("shutdown with an open feed")
        .unwrap();
}
