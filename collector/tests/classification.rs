//! Information classification end to end, on a manual clock: a reported incident worked
//! with a note, a provider's report and verdict and a solution is marked reserved (with
//! the CLI) and another classified (with the API). An account without clearance then
//! reads placeholders, never the texts, in every output (API detail and lists, the live
//! feed, bulk results, requests, the CLI, the CSV and JSON exports, the verifications
//! record, the archive) and does not find the classified one at all; a cleared account
//! reads them; and once the years have passed, everyone does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::{config, issue_token, Api, TestClient, DEADLINE};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigia_collector::clock::ManualClock;
use vigia_collector::workflow::{Dur, DAY};

const DEV: &str = "cls-dev-1";
const T0: u64 = 1_800_000_000_000;
/// Every text the reserve must hide from the uncleared.
const SECRETS: [&str; 8] = [
    "SECRET-SUMMARY",
    "SECRET-TEXT",
    "ana.secreta",
    "ext-99-secreta",
    "SECRET-NOTE",
    "SECRET-REPORT",
    "SECRET-VERDICT",
    "SECRET-SOLUTION",
];

fn assert_hidden(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} shows {s}:\n{text}");
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

async fn call(api: &Api, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
    let (api, method, path) = (api.clone(), method.to_owned(), path.to_owned());
    blocking(move || api.call(&method, &path, body.as_ref())).await
}

async fn ok(api: &Api, method: &str, path: &str, body: Option<Value>) -> String {
    let (status, text) = call(api, method, path, body).await;
    assert_eq!(status, 200, "{method} {path}: {text}");
    text
}

async fn act(api: &Api, n: u64, action: &str, body: Value) {
    ok(
        api,
        "POST",
        &format!("/api/incidents/{n}/{action}"),
        Some(body),
    )
    .await;
}

/// The CLI as `token`: its stdout, after checking it succeeded.
async fn cli(base: &str, token: &str, args: &[&str], stdin: Option<&str>) -> String {
    let mut all = vec!["--api".to_owned(), format!("http://{base}")];
    all.extend(args.iter().map(|a| a.to_string()));
    let (token, stdin) = (token.to_owned(), stdin.map(str::to_owned));
    blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vigia-collector"))
            .args(&all)
            .env("VIGIA_TOKEN", token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(s) = stdin {
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{all:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
}

/// A report from the test device, with the secret texts or public ones; returns its
/// incident's number.
async fn report(dev: &mut TestClient, seq: u64, secret: bool) -> u64 {
    let (summary, text, reporter, contact) = if secret {
        (
            "SECRET-SUMMARY",
            "SECRET-TEXT",
            "ana.secreta",
            "ext-99-secreta",
        )
    } else {
        ("the printer jams", "every morning", "pepe", "ext 12")
    };
    let ev = json!({"v": 1, "device": DEV, "seq": seq, "boot": 1, "ts": T0 + seq,
        "body": {"type": "report", "report_id": seq, "category": "hardware",
                 "summary": summary, "text": text,
                 "reporter": reporter, "contact": contact, "urgency": "medium"}});
    dev.publish(
        &format!("vigia/v1/up/{DEV}/event"),
        false,
        ev.to_string().into_bytes(),
    )
    .await;
    let mut n = 0;
    dev.recv_until("report accepted", |t, v| {
        if t.ends_with("/cmd") && v["body"]["report_id"] == seq {
            n = v["body"]["incident"].as_u64().unwrap();
            return true;
        }
        false
    })
    .await;
    n
}

/// Reads the SSE stream `sse` until `done` holds of what came so far.
async fn read_feed(
    sse: &mut tokio::net::TcpStream,
    seen: &mut String,
    done: impl Fn(&str) -> bool,
) {
    let mut buf = [0u8; 8192];
    let end = tokio::time::Instant::now() + DEADLINE;
    while !done(seen) {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        let n = tokio::time::timeout(left, sse.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("feed; so far:\n{seen}"))
            .unwrap();
        assert!(n > 0, "feed closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_fields_and_classified_records_are_hidden_in_every_output_until_they_lapse() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.retention.incidents_after = Dur(30 * DAY);
    let clock = Arc::new(ManualClock::new(T0));
    let running = vigia_collector::run::start_with_clock(cfg, clock.clone())
        .await
        .unwrap();
    let base = running.http_addr.to_string();
    let admin = Api::admin(&running).await;
    let mut dev = TestClient::connect(
        &running.mqtt_url,
        "cls-agent",
        &[format!("vigia/v1/down/{DEV}/+")],
    )
    .await;

    // Accounts: a technician with the default clearance (public), one cleared for
    // reserved information by the CLI, and the service desk (reserved by default).
    let password = "correct horse battery";
    for (login, extra) in [
        ("tomas", vec![]),
        ("luisa", vec!["--clearance", "reservada"]),
    ] {
        let mut args = vec!["user", "add", login, "--role", "technician", "--level", "1"];
        args.extend(extra);
        args.push("--password-stdin");
        cli(&base, &admin.token, &args, Some(password)).await;
    }
    cli(
        &base,
        &admin.token,
        &[
            "user",
            "add",
            "marta",
            "--role",
            "service_desk",
            "--password-stdin",
        ],
        Some(password),
    )
    .await;
    let users = ok(&admin, "GET", "/api/users", None).await;
    let users: Value = serde_json::from_str(&users).unwrap();
    let clearance = |login: &str| {
        users
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["login"] == login)
            .map(|u| u["clearance"].clone())
            .unwrap()
    };
    assert_eq!(clearance("tomas"), "public");
    assert_eq!(clearance("luisa"), "reserved");
    assert_eq!(clearance("marta"), "reserved");
    assert_eq!(clearance("admin"), "classified");
    let token = |login: &'static str| {
        let b = base.clone();
        blocking(move || issue_token(&b, login, password, "act"))
    };
    let tomas = Api {
        base: base.clone(),
        token: token("tomas").await,
    };
    let luisa = Api {
        base: base.clone(),
        token: token("luisa").await,
    };
    let marta = Api {
        base: base.clone(),
        token: token("marta").await,
    };

    // Incident 1: worked through a provider to its solution. Incident 2: just open.
    let one = report(&mut dev, 1, true).await;
    let two = report(&mut dev, 2, true).await;
    for n in [one, two] {
        act(&admin, n, "confirm", json!({})).await;
    }
    act(&admin, one, "note", json!({"text": "SECRET-NOTE"})).await;
    act(
        &admin,
        one,
        "request_provider",
        json!({"provider": "Acme", "kind": "unplanned", "agreed_at": T0}),
    )
    .await;
    act(
        &admin,
        one,
        "provider_done",
        json!({"report": "SECRET-REPORT"}),
    )
    .await;
    act(
        &admin,
        one,
        "provider_delivered",
        json!({"as_agreed": true, "note": "SECRET-VERDICT"}),
    )
    .await;
    act(
        &admin,
        one,
        "resolve",
        json!({"solution": "SECRET-SOLUTION"}),
    )
    .await;

    // The uncleared technician follows the feed from here.
    let mut sse = tokio::net::TcpStream::connect(running.http_addr)
        .await
        .unwrap();
    let head = format!(
        "GET /api/feed HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Accept: text/event-stream\r\n\r\n",
        tomas.token
    );
    sse.write_all(head.as_bytes()).await.unwrap();
    let mut feed = String::new();
    read_feed(&mut sse, &mut feed, |s| s.contains("event: ready")).await;

    // Reserved with the CLI; classified with the API.
    let out = cli(
        &base,
        &admin.token,
        &[
            "incidents",
            "reserve",
            &one.to_string(),
            "--level",
            "reserved",
            "--years",
            "5",
            "--why",
            "names a person's health",
        ],
        None,
    )
    .await;
    assert!(out.contains("reserve"), "{out}");
    act(
        &admin,
        two,
        "reserve",
        json!({"level": "classified", "years": 2, "justification": "security of the site"}),
    )
    .await;
    // Something new on each, for the feed.
    act(&admin, one, "note", json!({"text": "SECRET-NOTE again"})).await;
    act(&admin, two, "note", json!({"text": "SECRET-NOTE on two"})).await;
    let three = report(&mut dev, 3, false).await;
    // The feed: incident 1 with placeholders, nothing at all of incident 2.
    read_feed(&mut sse, &mut feed, |s| {
        s.contains(&format!("\"number\":{three},"))
    })
    .await;
    assert!(feed.contains(&format!("\"number\":{one},")), "{feed}");
    assert!(feed.contains("[reserved]"), "{feed}");
    assert!(!feed.contains(&format!("\"number\":{two},")), "{feed}");
    assert!(!feed.contains(&format!("\"incident\":{two},")), "{feed}");
    assert_hidden("the feed", &feed);

    // The API: detail with placeholders and what is hidden, list, search, counts.
    let detail = ok(&tomas, "GET", &format!("/api/incidents/{one}"), None).await;
    assert_hidden("the detail", &detail);
    let d: Value = serde_json::from_str(&detail).unwrap();
    assert_eq!(d["notes"][0]["text"], "[reserved]", "{detail}");
    assert_eq!(d["solution"], "[reserved]", "{detail}");
    assert_eq!(d["origin"]["reporter"], "[reserved]", "{detail}");
    assert!(
        d["hidden"].as_array().is_some_and(|h| h.len() == 7),
        "{detail}"
    );
    assert_eq!(d["reserve"]["level"], "reserved", "{detail}");
    assert_eq!(d["reserve"]["justification"], "names a person's health");
    assert_eq!(
        call(&tomas, "GET", &format!("/api/incidents/{two}"), None)
            .await
            .0,
        404
    );
    let list = ok(&tomas, "GET", "/api/incidents?state=all", None).await;
    let rows: Value = serde_json::from_str(&list).unwrap();
    let numbers: Vec<u64> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["number"].as_u64().unwrap())
        .collect();
    assert!(numbers.contains(&one) && !numbers.contains(&two), "{list}");
    assert_hidden("the list", &list);
    let found = ok(
        &tomas,
        "GET",
        "/api/incidents?state=all&q=SECRET-SUMMARY",
        None,
    )
    .await;
    let found: Value = serde_json::from_str(&found).unwrap();
    assert_eq!(
        found.as_array().unwrap().len(),
        0,
        "a search never matches a reserved text: {found}"
    );
    // Bulk: the classified one is not there; the answer carries nothing of either.
    let (_, bulk) = call(
        &tomas,
        "POST",
        "/api/incidents/bulk",
        Some(json!({"numbers": [one, two], "action": "note", "fields": {"text": "x"}})),
    )
    .await;
    let b: Value = serde_json::from_str(&bulk).unwrap();
    assert_eq!(b["results"][1]["code"], "not_found", "{bulk}");
    assert_hidden("bulk results", &bulk);
    // The device page lists it with placeholders, and not the classified one.
    let device = ok(&tomas, "GET", &format!("/api/devices/{DEV}"), None).await;
    assert_hidden("the device page", &device);
    assert!(!device.contains(&format!("\"number\":{two},")), "{device}");

    // The CLI renders what the API gives.
    let sheet = cli(&base, &tomas.token, &["incident", &one.to_string()], None).await;
    assert_hidden("the CLI", &sheet);
    assert!(
        sheet.contains("information: reserved (reservada)"),
        "{sheet}"
    );
    assert!(sheet.contains("not shown to you"), "{sheet}");
    let table = cli(
        &base,
        &tomas.token,
        &["incidents", "list", "--state", "all"],
        None,
    )
    .await;
    assert_hidden("the CLI list", &table);

    // The exports: services as CSV and JSON, verifications as CSV and JSON.
    for (record, format) in [
        ("services", "csv"),
        ("services", "json"),
        ("verifications", "csv"),
        ("verifications", "json"),
    ] {
        let text = ok(
            &tomas,
            "GET",
            &format!("/api/export?record={record}&format={format}"),
            None,
        )
        .await;
        assert_hidden(&format!("the {record} {format} export"), &text);
        assert!(text.contains("[reserved]"), "{record} {format}: {text}");
    }
    let csv = cli(&base, &tomas.token, &["export", "--format", "csv"], None).await;
    assert_hidden("the CLI export", &csv);
    // The header, incident 1 and incident 3: not the classified one.
    assert_eq!(csv.lines().count(), 3, "{csv}");

    // Cleared accounts read it all: luisa the reserved one (not the classified one),
    // the admin both.
    let detail = ok(&luisa, "GET", &format!("/api/incidents/{one}"), None).await;
    for s in SECRETS {
        assert!(detail.contains(s), "luisa is cleared for {s}: {detail}");
    }
    assert_eq!(
        call(&luisa, "GET", &format!("/api/incidents/{two}"), None)
            .await
            .0,
        404
    );
    let verifications = ok(&luisa, "GET", "/api/export?record=verifications", None).await;
    assert!(verifications.contains("SECRET-REPORT"), "{verifications}");
    let secret = ok(&admin, "GET", &format!("/api/incidents/{two}"), None).await;
    assert!(secret.contains("SECRET-NOTE on two"), "{secret}");
    // The service desk, cleared for reserved, may not classify.
    let (status, body) = call(
        &marta,
        "POST",
        &format!("/api/incidents/{one}/reserve"),
        Some(json!({"level": "classified", "years": 1, "justification": "x"})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("\"clearance\""), "{body}");

    // The archive carries the whole incident: hidden there too.
    act(&admin, one, "close", json!({})).await;
    clock.advance(31 * DAY);
    let pass = running.run_retention().await.unwrap();
    assert_eq!(pass.archived, 1);
    let archive = ok(&tomas, "GET", "/api/archive", None).await;
    assert!(archive.contains("[reserved]"), "{archive}");
    assert_hidden("the archive", &archive);

    // Past the years, the reserves lapse: everyone reads everything.
    clock.advance(5 * 366 * DAY);
    let archive = ok(&tomas, "GET", "/api/archive", None).await;
    assert!(archive.contains("SECRET-NOTE"), "lapsed: {archive}");
    let secret = ok(&tomas, "GET", &format!("/api/incidents/{two}"), None).await;
    assert!(secret.contains("SECRET-NOTE on two"), "lapsed: {secret}");
    let d: Value = serde_json::from_str(&secret).unwrap();
    assert_eq!(d["information"], "public", "{secret}");
    drop(sse);
    running.shutdown().await.unwrap();
}
