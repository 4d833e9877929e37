//! Bad input through the broker: a corpus of malformed, truncated, oversized, wrong-version,
//! wrong-type and hostile payloads and topics from one device. Each is refused with its
//! counted reason (or, for a newer version, deferred), the collector keeps serving the
//! other devices, and the texts a hostile device slips into a valid report reach neither a
//! terminal nor a spreadsheet able to act: the CLI prints no escape sequence and the export
//! starts no cell with a formula.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{config, Api, TestClient, DEADLINE};
use serde_json::{json, Value};

const BAD: &str = "bad-dev";
const GOOD: &str = "good-dev";

fn event(dev: &str, seq: u64, body: Value) -> Value {
    json!({"v": 1, "device": dev, "seq": seq, "boot": 1, "ts": 1_700_000_000_000u64 + seq,
           "body": body})
}

fn fault(seq: u64) -> Value {
    json!({"type": "fault", "action": "raised", "kind": "disk_space",
           "subject": format!("/d{seq}"), "severity": "warning",
           "evidence": {"value": 91.0, "threshold": 90.0, "unit": "%", "source": "statvfs"}})
}

async fn metrics(api: &Api) -> String {
    let api = api.clone();
    tokio::task::spawn_blocking(move || api.call("GET", "/metrics", None).1)
        .await
        .unwrap()
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.trim().parse().ok()))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_payloads_are_refused_by_reason_and_hostile_texts_are_defused() {
    let dir = tempfile::tempdir().unwrap();
    let running = vigia_collector::start(config(dir.path())).await.unwrap();
    let api = Api::admin(&running).await;
    let bad = TestClient::connect(&running.mqtt_url, "bad-agent", &[]).await;
    let up = |d: &str, k: &str| format!("vigia/v1/up/{d}/{k}");

    let valid = event(BAD, 1, fault(1)).to_string();
    let nested = "[".repeat(1_000) + &"]".repeat(1_000);
    let mut huge_text = event(BAD, 2, fault(2));
    huge_text["body"]["message"] = json!("x".repeat(20_000));
    let mut unknown = event(BAD, 3, fault(3));
    unknown["evil"] = json!({"__proto__": 1});
    let mut wrong_type = event(BAD, 4, fault(4));
    wrong_type["seq"] = json!("four");
    let corpus: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not JSON", b"hello".to_vec(), "malformed"),
        (
            "truncated",
            valid.as_bytes()[..valid.len() / 2].to_vec(),
            "malformed",
        ),
        (
            "invalid UTF-8",
            b"{\"v\":1,\"device\":\"\xff\xfe\"}".to_vec(),
            "malformed",
        ),
        ("deeply nested", nested.into_bytes(), "malformed"),
        (
            "a number too big",
            valid.replace("\"seq\":1", "\"seq\":1e400").into_bytes(),
            "malformed",
        ),
        (
            "wrong type",
            wrong_type.to_string().into_bytes(),
            "malformed",
        ),
        (
            "version 0",
            valid.replace("\"v\":1", "\"v\":0").into_bytes(),
            "bad_version",
        ),
        ("oversized", huge_text.to_string().into_bytes(), "too_large"),
        (
            "another device's id",
            event("good-dev", 5, fault(5)).to_string().into_bytes(),
            "device_mismatch",
        ),
    ];
    for (what, payload, _) in &corpus {
        bad.publish(&up(BAD, "event"), false, payload.clone()).await;
        let _ = what;
    }
    // An unknown field is ignored (newer agents may add fields): the event is stored,
    // without it.
    bad.publish(&up(BAD, "event"), false, unknown.to_string().into_bytes())
        .await;
    // An unknown topic kind, and a newer version (deferred, not refused).
    bad.publish(&up(BAD, "nonsense"), false, b"{}".to_vec())
        .await;
    bad.publish(
        &up(BAD, "event"),
        false,
        valid.replace("\"v\":1", "\"v\":9").into_bytes(),
    )
    .await;

    // A valid report whose texts try to act on a terminal and a spreadsheet.
    let hostile = "\u{1b}]0;pwned\u{7}\u{1b}[2J=HYPERLINK(\"http://evil\";\"x\")\u{202e}";
    let report = event(
        BAD,
        10,
        json!({"type": "report", "report_id": 10, "category": "hardware",
               "summary": hostile, "text": format!("+cmd|'/C calc'!A0 {hostile}"),
               "reporter": "-2+3", "contact": "@SUM(1)", "urgency": "high"}),
    );
    bad.publish(&up(BAD, "event"), false, report.to_string().into_bytes())
        .await;

    // Every refusal is counted by its reason.
    let mut want: std::collections::BTreeMap<&str, u64> = Default::default();
    for (_, _, reason) in &corpus {
        *want.entry(reason).or_default() += 1;
    }
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        let text = metrics(&api).await;
        let got: Vec<(&str, u64, u64)> = want
            .iter()
            .map(|(r, n)| {
                (
                    *r,
                    *n,
                    metric(&text, &format!("vigia_rejected_total{{reason=\"{r}\"}}")),
                )
            })
            .collect();
        let topic = metric(&text, "vigia_rejected_total{reason=\"unknown_topic\"}");
        let deferred = metric(&text, "vigia_events_deferred_total");
        if got.iter().all(|(_, w, g)| w == g) && topic == 1 && deferred == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "refusals by reason (reason, want, got): {got:?}, unknown_topic {topic}, deferred {deferred}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The collector keeps serving: another device's event is stored and opens its incident.
    let good = TestClient::connect(&running.mqtt_url, "good-agent", &[]).await;
    good.publish(
        &up(GOOD, "event"),
        false,
        event(GOOD, 1, fault(1)).to_string().into_bytes(),
    )
    .await;
    let end = tokio::time::Instant::now() + DEADLINE;
    let reports = loop {
        let a = api.clone();
        let (_, text) =
            tokio::task::spawn_blocking(move || a.call("GET", "/api/incidents?limit=100", None))
                .await
                .unwrap();
        let list: Value = serde_json::from_str(&text).unwrap();
        let list = list.as_array().cloned().unwrap_or_default();
        let good_one = list.iter().any(|i| i["device"] == GOOD);
        let reports: Vec<Value> = list
            .into_iter()
            .filter(|i| i["origin"] == "report")
            .collect();
        if good_one && !reports.is_empty() {
            break reports;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "the good device's incident or the report"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(reports.len(), 1);
    // Of the bad device's events, exactly the one with an unknown field and the report
    // are stored.
    let a = api.clone();
    let (_, text) = tokio::task::spawn_blocking(move || {
        a.call("GET", &format!("/api/devices/{BAD}/events"), None)
    })
    .await
    .unwrap();
    let stored: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (
            stored["count"].as_u64(),
            stored["first_seq"].as_u64(),
            stored["last_seq"].as_u64()
        ),
        (Some(2), Some(3), Some(10)),
        "{stored}"
    );

    // The hostile texts through the CLI and the export.
    let base = format!("http://{}", running.http_addr);
    let token = api.token.clone();
    let n = reports[0]["number"].as_u64().unwrap().to_string();
    let outputs = tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| {
            let out = Command::new(env!("CARGO_BIN_EXE_vigia-collector"))
                .env("VIGIA_TOKEN", &token)
                .args(["--api", &base])
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        vec![
            run(&["incidents"]),
            run(&["incidents", "show", &n]),
            run(&["export", "--format", "csv"]),
        ]
    })
    .await
    .unwrap();
    for text in &outputs[..2] {
        assert!(
            !text
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t')
                && !text.contains('\u{202e}'),
            "a control character reached the terminal:\n{text:?}"
        );
        assert!(
            text.contains("pwned"),
            "the text is shown, defused: {text:?}"
        );
    }
    let csv = &outputs[2];
    assert!(!csv.contains('\u{1b}') && !csv.contains('\u{7}'), "{csv:?}");
    let row = csv
        .lines()
        .find(|l| l.contains("pwned"))
        .unwrap_or_else(|| panic!("{csv}"));
    // Split the row on every separator a spreadsheet might use, quotes ignored: no part
    // (but inside a quoted cell, which importers keep whole) starts a formula.
    for cell in split_csv(row) {
        let first = cell.trim_start().chars().next();
        assert!(
            !matches!(first, Some('=' | '+' | '-' | '@')),
            "cell {cell:?} of {row:?} starts a formula"
        );
    }
    drop((bad, good));
    running.shutdown().await.unwrap();
}

/// The cells of one RFC 4180 line.
fn split_csv(line: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cells.last_mut().unwrap().push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => cells.push(String::new()),
            (c, _) => cells.last_mut().unwrap().push(c),
        }
    }
    cells
}
