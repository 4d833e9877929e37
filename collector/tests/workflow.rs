//! The support workflow through the running collector: embedded broker on port 0, HTTP on
//! port 0, a rumqttc client playing the device, and a manual clock so SLA time passes
//! without sleeping. Checks the needs_info round trip over MQTT, SLA escalation by the
//! timer path, a restart in the middle of the workflow, and the API's refusals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{config, Api, TestClient, DEADLINE};
use serde_json::{json, Value};
use vigia_collector::clock::ManualClock;
use vigia_collector::workflow::{Policy, Priority, MINUTE};

const DEV: &str = "wf-dev-1";
const T0: u64 = 1_800_000_000_000;

/// The device: a test client subscribed to its own cmd topic.
struct Device(TestClient);

impl Device {
    async fn connect(mqtt_url: &str, id: &str) -> Self {
        let cmd = format!("vigia/v1/down/{DEV}/cmd");
        Self(TestClient::connect(mqtt_url, id, &[cmd]).await)
    }

    async fn event(&self, seq: u64, body: Value) {
        let ev =
            json!({"v": 1, "device": DEV, "seq": seq, "boot": 1, "ts": T0 + seq, "body": body});
        self.0
            .publish(
                &format!("vigia/v1/up/{DEV}/event"),
                false,
                ev.to_string().into_bytes(),
            )
            .await;
    }

    /// The next command of type `kind` on the device's cmd topic.
    async fn cmd(&mut self, kind: &str) -> Value {
        self.cmd_with_id(kind).await.1
    }

    /// The next command of type `kind`, with its outbox id.
    async fn cmd_with_id(&mut self, kind: &str) -> (u64, Value) {
        let mut found = (0, Value::Null);
        self.0
            .recv_until(&format!("a {kind} command"), |t, v| {
                let hit = t.ends_with("/cmd") && v["body"]["type"] == kind;
                if hit {
                    found = (v["id"].as_u64().unwrap_or(0), v["body"].clone());
                }
                hit
            })
            .await;
        found
    }

    /// Acknowledges commands, as the agent does.
    async fn ack_cmds(&self, ids: &[u64]) {
        let ack = json!({"v": 1, "device": DEV, "ids": ids});
        self.0
            .publish(
                &format!("vigia/v1/up/{DEV}/cmdack"),
                false,
                ack.to_string().into_bytes(),
            )
            .await;
    }
}

async fn http(method: &'static str, base: &Api, path: &str, body: Option<Value>) -> (u16, Value) {
    let (api, path) = (base.clone(), path.to_owned());
    tokio::task::spawn_blocking(move || {
        let (status, text) = api.call(method, &path, body.as_ref());
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    })
    .await
    .unwrap()
}

async fn get(base: &Api, path: &str) -> Value {
    let (status, v) = http("GET", base, path, None).await;
    assert_eq!(status, 200, "{path}: {v}");
    v
}

async fn poll(base: &Api, path: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (status, v) = http("GET", base, path, None).await;
        if status == 200 && f(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}; last: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn actions(v: &Value) -> Vec<String> {
    v["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_missing_a_field_asks_the_device_and_its_reply_resumes_the_incident() {
    let dir = tempfile::tempdir().unwrap();
    let running = vigia_collector::start(config(dir.path())).await.unwrap();
    let base = Api::admin(&running).await;
    let mut dev = Device::connect(&running.mqtt_url, "wf-agent-1").await;

    // No contact: the default validation requires summary, reporter and contact.
    dev.event(
        1,
        json!({"type": "report", "report_id": 5, "category": "printer",
               "summary": "Printer jams", "text": "Every page", "reporter": "ana",
               "contact": "", "urgency": "medium"}),
    )
    .await;
    let accepted = dev.cmd("report_accepted").await;
    let n = accepted["incident"].as_u64().unwrap();
    let ask = dev.cmd("request_info").await;
    assert_eq!(ask["incident"], n);
    assert!(
        ask["question"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("contact")
            || ask["question"].as_str().unwrap().contains("reach"),
        "{ask}"
    );
    let inc = get(&base, &format!("/api/incidents/{n}")).await;
    assert_eq!(inc["state"], "needs_info");

    // The user answers from the device: back to validating, then on to verifying.
    dev.event(
        2,
        json!({"type": "reply", "incident": n, "text": "ext 4321"}),
    )
    .await;
    let inc = poll(
        &base,
        &format!("/api/incidents/{n}"),
        "validation again",
        |v| v["state"] == "verifying",
    )
    .await;
    assert_eq!(inc["info_requests"][0]["answer"], "ext 4321");
    let acts = actions(&inc);
    assert!(acts.contains(&"reply".to_string()), "{acts:?}");
    let needs = acts.iter().position(|a| a == "request_info").unwrap();
    let reply = acts.iter().position(|a| a == "reply").unwrap();
    assert!(needs < reply, "{acts:?}");

    // A person asks another question through the API: it reaches the device too.
    let (status, v) = http(
        "POST",
        &base,
        &format!("/api/incidents/{n}/request-info"),
        Some(json!({"question": "Which tray?"})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["state"], "needs_info");
    let ask = dev.cmd("request_info").await;
    assert_eq!(ask["question"], "Which tray?");
    running.shutdown().await.unwrap();
}

/// A metric's value, polled until `ok` accepts it.
async fn metric_until(base: &Api, name: &str, ok: impl Fn(u64) -> bool) -> u64 {
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (_, v) = http("GET", base, "/metrics", None).await;
        let text = v.as_str().unwrap_or("").to_owned();
        let n = text
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.trim().parse().ok()))
            .unwrap_or(u64::MAX);
        if ok(n) {
            return n;
        }
        assert!(tokio::time::Instant::now() < end, "{name} is {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_the_device_never_acknowledged_is_sent_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let running = vigia_collector::start(config(dir.path())).await.unwrap();
    let base = Api::admin(&running).await;
    let mut dev = Device::connect(&running.mqtt_url, "wf-agent-4").await;
    dev.event(
        1,
        json!({"type": "report", "report_id": 7, "category": "printer",
               "summary": "Printer jams", "text": "Every page", "reporter": "ana",
               "contact": "", "urgency": "medium"}),
    )
    .await;
    let (accepted_id, accepted) = dev.cmd_with_id("report_accepted").await;
    let n = accepted["incident"].as_u64().unwrap();
    let (ask_id, _) = dev.cmd_with_id("request_info").await;
    assert!(
        accepted_id > 0 && ask_id > accepted_id,
        "{accepted_id} {ask_id}"
    );
    // The device acknowledges the number but nothing else (say the rest was lost).
    let queued = metric_until(&base, "vigia_outbox_pending", |n| n >= 2).await;
    dev.ack_cmds(&[accepted_id]).await;
    metric_until(&base, "vigia_outbox_pending", |n| n == queued - 1).await;

    // A restart: the question is still queued, and goes out again at once.
    running.shutdown().await.unwrap();
    drop(dev);
    let running = vigia_collector::start(config(dir.path())).await.unwrap();
    let base = base.at(&running);
    let mut dev = Device::connect(&running.mqtt_url, "wf-agent-4").await;
    // Its agent says it is online (a new session), as agents do at every connection:
    // what it may have missed while away goes out again then.
    let online = json!({"v": 1, "device": DEV, "online": true, "boot": 2, "ts": T0});
    dev.0
        .publish(
            &format!("vigia/v1/up/{DEV}/status"),
            true,
            online.to_string().into_bytes(),
        )
        .await;
    let mut seen = Vec::new();
    let mut ask = Value::Null;
    dev.0
        .recv_until("the question again", |t, v| {
            if t.ends_with("/cmd") {
                let id = v["id"].as_u64().unwrap_or(0);
                assert_ne!(id, accepted_id, "an acknowledged command was sent again");
                if !seen.contains(&id) {
                    seen.push(id);
                }
                if v["body"]["type"] == "request_info" {
                    assert_eq!(id, ask_id, "the same command, not a new one");
                    ask = v["body"].clone();
                }
            }
            !ask.is_null() && seen.len() as u64 == queued - 1
        })
        .await;
    assert_eq!(ask["incident"], n);
    dev.ack_cmds(&seen).await;
    metric_until(&base, "vigia_outbox_pending", |n| n == 0).await;
    assert_eq!(
        metric_until(&base, "vigia_commands_acked_total", |n| n == queued - 1).await,
        queued - 1
    );
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sla_breach_escalates_by_the_timer_and_a_restart_keeps_incident_trail_and_timers() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let running = vigia_collector::run::start_with_clock(config(dir.path()), clock.clone())
        .await
        .unwrap();
    let base = Api::admin(&running).await;
    let dev = Device::connect(&running.mqtt_url, "wf-agent-2").await;
    dev.event(
        1,
        json!({"type": "fault", "action": "raised", "kind": "disk_space", "subject": "/var",
               "severity": "critical",
               "evidence": {"value": 98.0, "threshold": 97.0, "unit": "%", "source": "statvfs"},
               "message": "/var is 98 % full"}),
    )
    .await;
    let list = poll(
        &base,
        "/api/incidents?state=verifying",
        "the incident",
        |v| v.as_array().is_some_and(|a| a.len() == 1),
    )
    .await;
    let n = list[0]["number"].as_u64().unwrap();
    let path = format!("/api/incidents/{n}");
    assert_eq!(list[0]["opened_at"], T0);

    // Nothing is due before the verification window ends.
    assert_eq!(running.run_timers().await.unwrap(), 0);
    let policy = Policy::default();
    // (The timer task may run the same round first when something woke it: the state
    // is what counts, not which caller ticked.)
    clock.advance(policy.verification_window());
    running.run_timers().await.unwrap();
    let inc = get(&base, &path).await;
    assert_eq!(inc["state"], "level1", "{:?}", actions(&inc));
    let priority: Priority = serde_json::from_value(inc["priority"].clone()).unwrap();

    // The level-1 budget of its priority passes: the timer escalates it to level 2.
    let budget = policy.sla(priority).escalate_after.ms();
    // (The response target may fall due before: a breach notice, no escalation.)
    clock.advance(budget - MINUTE);
    running.run_timers().await.unwrap();
    assert_eq!(get(&base, &path).await["state"], "level1");
    clock.advance(MINUTE);
    running.run_timers().await.unwrap();
    let at_l2 = get(&base, &path).await;
    assert_eq!(at_l2["state"], "level2", "{:?}", actions(&at_l2));
    assert_eq!(at_l2["level"], 2);
    let esc = at_l2["audit"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["to"] == "level2")
        .unwrap();
    assert_eq!(esc["actor"]["type"], "system");
    let l2_list = get(&base, "/api/incidents?state=open&level=2").await;
    assert_eq!(l2_list[0]["number"], n);

    // An action the state does not allow: 409 with the engine's words.
    let (status, err) = http("POST", &base, &format!("{path}/close"), Some(json!({}))).await;
    assert_eq!(status, 409, "{err}");
    let msg = err["error"].as_str().unwrap();
    assert!(msg.contains("level2") && msg.contains("close"), "{msg}");
    let (status, _) = http(
        "POST",
        &base,
        &format!("{path}/frobnicate"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 400);
    // A legal one is recorded with its actor.
    let (status, v) = http(
        "POST",
        &base,
        &format!("{path}/assign"),
        Some(json!({"assignee": "luis"})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["assignee"], "luis");
    let before = get(&base, &path).await;
    let deadline = before["next_deadline"].as_u64().unwrap();

    // Restart in the middle: same incident, same trail, same timer.
    running.shutdown().await.unwrap();
    drop(dev);
    let running = vigia_collector::run::start_with_clock(config(dir.path()), clock.clone())
        .await
        .unwrap();
    let base = base.at(&running);
    // (Whether the device is online may have changed with the restart: compare the rest.)
    let without_device = |mut v: Value| {
        v.as_object_mut().unwrap().remove("device_info");
        v
    };
    assert_eq!(
        without_device(get(&base, &path).await),
        without_device(before.clone())
    );
    assert_eq!(running.store().next_timer().unwrap(), Some(deadline));
    // ...and the timer still fires after the restart.
    clock.set(deadline);
    running.run_timers().await.unwrap();
    let after = get(&base, &path).await;
    assert_ne!(after["audit"], before["audit"]);
    assert_eq!(
        &after["audit"].as_array().unwrap()[..before["audit"].as_array().unwrap().len()],
        before["audit"].as_array().unwrap().as_slice()
    );
    let export = http("GET", &base, "/api/export?format=json", None).await.1;
    assert_eq!(export[0]["incident"], n, "{export}");
    assert_eq!(export[0]["assignee"], "luis");
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timer_task_acts_on_its_own_when_woken_by_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let running = vigia_collector::run::start_with_clock(config(dir.path()), clock.clone())
        .await
        .unwrap();
    let base = Api::admin(&running).await;
    let dev = Device::connect(&running.mqtt_url, "wf-agent-3").await;
    dev.event(
        1,
        json!({"type": "fault", "action": "raised", "kind": "fan_failure", "subject": "fan1",
               "severity": "critical",
               "evidence": {"value": 0.0, "threshold": 1.0, "unit": "rpm", "source": "hwmon"}}),
    )
    .await;
    let list = poll(&base, "/api/incidents", "the incident", |v| {
        v.as_array().is_some_and(|a| a.len() == 1)
    })
    .await;
    let n = list[0]["number"].as_u64().unwrap();
    // Time passes beyond the verification window; a note (any write) wakes the task,
    // which finds the window over and verifies the incident without being called.
    clock.advance(Policy::default().verification_window());
    let (status, v) = http(
        "POST",
        &base,
        &format!("/api/incidents/{n}/note"),
        Some(json!({"text": "fan replaced soon"})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let inc = poll(
        &base,
        &format!("/api/incidents/{n}"),
        "automatic verification",
        |v| v["state"] != "verifying",
    )
    .await;
    assert!(
        inc["audit"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["actor"]["type"] == "system" && r["from"] == "verifying"),
        "{inc}"
    );
    running.shutdown().await.unwrap();
}
