//! The README walkthrough, run as a test: the files in `demo/` (timers shortened from
//! seconds to fractions, ports picked at run time), the same CLI commands, and the same
//! story — a replayed fault becomes an incident, is verified and diagnosed at level 1,
//! escalates to level 2 when its SLA is breached, goes to a provider and back, is
//! resolved and closed by the service desk, and every step is in the audit trail and the
//! Servicios soporte export.
mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

fn demo(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("demo")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The service desk's API token (the first admin, who holds that role too), as
/// `vigia collector login` would keep it.
static DESK: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// `vigia collector --api URL <args>` as the README runs it, signed in as the service
/// desk; returns stdout.
fn cli(api: &str, args: &[&str]) -> String {
    let mut full = vec!["collector", "--api", api];
    full.extend_from_slice(args);
    let out = vigia(&full)
        .env("VIGIA_TOKEN", DESK.get().map_or("", String::as_str))
        .output()
        .unwrap_or_else(|e| panic!("vigia collector: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "vigia collector {args:?} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Incident `n` as `incidents list --json` shows it, when it is in `state`.
fn listed_in(api: &str, n: u64, state: &str) -> Option<Value> {
    let listed = cli(api, &["incidents", "list", "--json"]);
    let v: Value = serde_json::from_str(&listed).ok()?;
    let found = v.as_array()?.iter().find(|i| i["number"] == n)?.clone();
    (found["state"] == state).then_some(found)
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "demo file no longer has {from:?}");
    text.replacen(from, to, 1)
}

#[test]
fn readme_walkthrough_from_fault_to_closure() {
    let dir = tempdir();
    let d = dir.path();

    // demo/collector.toml with free ports, a temp data dir and second-scale timers.
    let mut c = demo("collector.toml");
    c = replace_once(&c, "embedded_port = 1884", "embedded_port = 0");
    c = replace_once(
        &c,
        "listen = \"127.0.0.1:8791\"",
        "listen = \"127.0.0.1:0\"",
    );
    c = replace_once(
        &c,
        "data_dir = \"../.vigia-demo/collector\"",
        &format!("data_dir = \"{}\"", d.join("collector").display()),
    );
    c = replace_once(
        &c,
        "verification_window = \"10s\"",
        "verification_window = \"1s\"",
    );
    c = c.replace("escalate_after = \"1m\"", "escalate_after = \"2s\"");
    std::fs::write(d.join("collector.toml"), c).unwrap_or_else(|e| panic!("{e}"));
    let collector = start_collector_with(&d.join("collector.toml"));
    let api = collector.http.clone();
    DESK.get_or_init(|| collector.token.clone());
    // A technician at level 2, as the README adds one.
    let added = cli(
        &api,
        &[
            "user",
            "add",
            "tecnico",
            "--role",
            "technician",
            "--level",
            "2",
        ],
    );
    let tech_password = added
        .lines()
        .find_map(|l| l.strip_prefix("password (shown once): "))
        .unwrap_or_else(|| panic!("no password in {added}"))
        .to_owned();
    let tech = issue_token(&api, "tecnico", &tech_password, "act");

    // demo/agent.toml and its readings, pointed at that collector.
    std::fs::write(d.join("readings.jsonl"), demo("readings.jsonl"))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut a = demo("agent.toml");
    a = replace_once(
        &a,
        "url = \"mqtt://127.0.0.1:1884\"",
        &format!("url = \"{}\"", collector.mqtt_url),
    );
    a = replace_once(&a, "interval = \"1s\"", "interval = \"100ms\"");
    a = replace_once(
        &a,
        "data_dir = \"../.vigia-demo/agent\"",
        "data_dir = \"agent\"",
    );
    std::fs::write(d.join("agent.toml"), a).unwrap_or_else(|e| panic!("{e}"));
    let _agent = start_agent_with(&d.join("agent.toml"));

    // The fault becomes incident 1, is verified and diagnosed at level 1...
    let show = |n: u64| -> Value {
        serde_json::from_str(&cli(&api, &["incidents", "show", &n.to_string(), "--json"]))
            .unwrap_or_else(|e| panic!("show --json: {e}"))
    };
    let l1 = poll("incident 1 at level 1", || listed_in(&api, 1, "level1"));
    assert_eq!(l1["device"], "ws-contabilidad-07");
    assert_eq!(l1["kind"], "disk_space");
    let table = cli(&api, &["incidents"]);
    assert!(table.contains("ws-contabilidad-07"), "{table}");
    let diagnosed = show(1);
    assert!(
        diagnosed["priority"].is_string(),
        "no priority: {diagnosed}"
    );
    assert_eq!(
        diagnosed["classification"]["category"], "capacity",
        "{diagnosed}"
    );

    // ...escalates to level 2 when its SLA is breached...
    poll("the SLA escalation to level 2", || {
        listed_in(&api, 1, "level2")
    });

    // ...goes to a provider and back...
    cli(
        &api,
        &[
            "incidents",
            "provider",
            "1",
            "--provider",
            "Dell ProSupport",
            "--kind",
            "unplanned",
            "--at",
            "1d",
        ],
    );
    assert_eq!(show(1)["state"], "waiting_provider");
    cli(
        &api,
        &[
            "incidents",
            "provider-delivered",
            "1",
            "--note",
            "disco reemplazado en garantía",
        ],
    );
    assert_eq!(show(1)["state"], "level2");

    // ...is resolved, and closed by the service desk only.
    cli(
        &api,
        &[
            "incidents",
            "resolve",
            "1",
            "--solution",
            "Disco reemplazado; /var movido al disco nuevo",
        ],
    );
    assert_eq!(show(1)["state"], "resolved");
    let mut refused = vigia(&["collector", "--api", &api, "incidents", "close", "1"]);
    let refused = refused
        .env("VIGIA_TOKEN", &tech)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !refused.status.success(),
        "a non-service-desk close was accepted"
    );
    let why = String::from_utf8_lossy(&refused.stderr).to_string()
        + &String::from_utf8_lossy(&refused.stdout);
    assert!(
        why.contains("only the service desk"),
        "refused for another reason: {why}"
    );
    assert_eq!(show(1)["state"], "resolved", "the refused close changed it");
    cli(&api, &["incidents", "close", "1"]);
    let closed = show(1);
    assert_eq!(closed["state"], "closed");
    // The audit trail names the signed-in account, not a name from the request.
    let close = closed["audit"]
        .as_array()
        .and_then(|a| a.iter().rev().find(|r| r["to"] == "closed"))
        .unwrap_or_else(|| panic!("no close record in {closed}"));
    assert_eq!(close["actor"]["name"], "admin", "{close}");

    // Every step is in the audit trail...
    let visited: Vec<&str> = closed["audit"]
        .as_array()
        .unwrap_or_else(|| panic!("no audit: {closed}"))
        .iter()
        .filter_map(|r| r["to"].as_str())
        .collect();
    for s in [
        "verifying",
        "level1",
        "level2",
        "waiting_provider",
        "resolved",
        "closed",
    ] {
        assert!(
            visited.contains(&s),
            "{s} missing from the trail {visited:?}"
        );
    }
    let escalation = closed["audit"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["from"] == "level1" && r["to"] == "level2")
        .unwrap_or_else(|| panic!("no level1 -> level2 record in {closed}"));
    assert!(
        escalation.to_string().to_lowercase().contains("sla"),
        "escalation not attributed to the SLA: {escalation}"
    );

    // ...and in the Servicios soporte export.
    let csv = cli(&api, &["export", "--format", "csv"]);
    let row = csv
        .lines()
        .find(|l| l.contains("ws-contabilidad-07"))
        .unwrap_or_else(|| panic!("no row for the device in:\n{csv}"));
    assert!(row.contains("Disco reemplazado"), "{row}");
    collector.proc.terminate();
}
