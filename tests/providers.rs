//! A provider's service with real processes: the request takes its deadline from the
//! provider's registered contract; the provider's own account accepts it, proposes another
//! date and reports the work done, while another provider's account neither sees nor
//! answers it; a rejected verification opens the request again, an accepted one sends
//! the incident back to its level; both verifications are in the export, as the record
//! of the service (the *acta*). One request for several incidents is answered, done and
//! verified once for all of them.
// A test: a failed unwrap is the failure, with its location.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::Value;

fn show_as(c: &Collector, token: &str, n: u64) -> Option<Value> {
    http_get_json_as(&format!("{}/api/incidents/{n}", c.http), token)
}

/// A collector with a short verification window, so disk incidents reach level 1 soon.
fn collector(d: &std::path::Path) -> Collector {
    let config = d.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[mqtt]\nembedded_port = 0\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [workflow]\nverification_window = \"1s\"\n",
            d.join("collector-data").display()
        ),
    )
    .unwrap();
    start_collector_with(&config)
}

/// An agent whose `/var` is 95 % full, and its incident's number once at level 1.
fn disk_incident(d: &std::path::Path, c: &Collector, id: &str) -> (Agent, u64) {
    let replay = d.join(format!("{id}.jsonl"));
    append_lines(&replay, &disk_line("/var", 50), 3);
    append_lines(&replay, &disk_line("/var", 95), 40);
    let agent = start_agent(d, id, &c.mqtt_url, &replay, "");
    let n = poll("the disk incident at level 1", || {
        device_incidents(c, id)
            .into_iter()
            .find(|i| i["kind"] == "disk_space" && i["state"] == "level1")
            .and_then(|i| i["number"].as_u64())
    });
    (agent, n)
}

#[test]
fn a_provider_answers_its_own_request_and_a_rejected_verification_reopens_it() {
    let dir = tempdir();
    let d = dir.path();
    let c = collector(d);
    let (_agent, n) = disk_incident(d, &c, "ws-redes");
    let priority = c.get(&format!("/api/incidents/{n}")).unwrap()["priority"]
        .as_str()
        .unwrap()
        .to_owned();

    // The provider and its contract: 2 hours to respond, a day to finish, at this priority.
    let (code, out) = c.cli(&[
        "provider",
        "add",
        "Redes SAS",
        "--covers",
        "capacity",
        "--contract-start",
        "2026-01-01",
        "--contract-end",
        "2099-12-31",
        "--response",
        &format!("{priority}=2h"),
        "--resolution",
        &format!("{priority}=1d"),
    ]);
    assert_eq!(code, 0, "{out}");
    let redes = c.provider_account("redes", "Redes SAS");
    let otro = c.provider_account("otro", "Otro Proveedor");
    let number = n.to_string();
    let num = number.as_str();

    // Another provider learns nothing of the incident before or after the request.
    assert!(show_as(&c, &otro, n).is_none());
    let (code, out) = c.cli(&[
        "incidents",
        "provider",
        num,
        "--provider",
        "Redes SAS",
        "--kind",
        "scheduled",
        "--at",
        "8d",
        "--affects-network",
        "--conditions",
        "cambio del switch del piso 3",
    ]);
    assert_eq!(code, 0, "{out}");
    let inc = c.get(&format!("/api/incidents/{n}")).unwrap();
    let req = &inc["provider_requests"][0];
    assert_eq!(inc["state"], "waiting_provider", "{inc}");
    let requested = req["requested_at"].as_u64().unwrap();
    assert_eq!(
        req["respond_by"].as_u64(),
        Some(requested + 2 * 3_600_000),
        "the response deadline comes from the contract: {req}"
    );
    let agreed = req["agreed_at"].as_u64().unwrap();
    assert_eq!(
        req["resolve_by"].as_u64(),
        Some(agreed + 86_400_000),
        "{req}"
    );

    assert!(
        show_as(&c, &otro, n).is_none(),
        "another provider's contact sees the request"
    );
    let (code, out) = c.cli_as(&otro, &["incidents", "provider-accept", num]);
    assert_ne!(code, 0, "another provider accepted: {out}");
    assert!(
        show_as(&c, &redes, n).unwrap()["provider_requests"][0]["accepted"].is_null(),
        "the refused accept changed something"
    );

    // Its own contact sees it, proposes another date (a week's notice still holds)...
    let seen = show_as(&c, &redes, n).unwrap();
    assert_eq!(seen["provider_requests"][0]["provider"], "Redes SAS");
    assert!(seen["info_requests"]
        .as_array()
        .is_none_or(|a| a.is_empty()));
    let (code, out) = c.cli_as(
        &redes,
        &["incidents", "provider-propose", num, "--date", "3d"],
    );
    assert_ne!(code, 0, "a proposal without a week's notice: {out}");
    assert!(out.contains("one week's notice"), "{out}");
    let (code, out) = c.cli_as(
        &redes,
        &[
            "incidents",
            "provider-propose",
            num,
            "--date",
            "10d",
            "--note",
            "sin técnico esa semana",
        ],
    );
    assert_eq!(code, 0, "{out}");
    // ...which the coordinator agrees...
    let proposed = c.get(&format!("/api/incidents/{n}")).unwrap()["provider_requests"][0]
        ["proposed"]["date"]
        .as_u64()
        .unwrap();
    let (code, out) = c.cli(&[
        "incidents",
        "provider-reschedule",
        num,
        "--at",
        &proposed.to_string(),
    ]);
    assert_eq!(code, 0, "{out}");
    let req = c.get(&format!("/api/incidents/{n}")).unwrap()["provider_requests"][0].clone();
    assert_eq!(req["agreed_at"].as_u64(), Some(proposed), "{req}");
    assert_eq!(req["accepted"]["by"], "redes", "{req}");
    // ...and the staff-only actions stay staff-only.
    let (code, out) = c.cli_as(&redes, &["incidents", "provider-delivered", num]);
    assert_ne!(code, 0, "a provider verified its own work: {out}");

    // The work done, with a report that would be a formula in a spreadsheet.
    let (code, out) = c.cli_as(
        &redes,
        &[
            "incidents",
            "provider-done",
            num,
            "--report",
            "=HYPERLINK(\"http://x\") switch cambiado",
        ],
    );
    assert_eq!(code, 0, "{out}");
    // Rejected, with the reason: the request is open again.
    let (code, out) = c.cli(&[
        "incidents",
        "provider-delivered",
        num,
        "--not-as-agreed",
        "--note",
        "el puerto 12 sigue sin enlace",
    ]);
    assert_eq!(code, 0, "{out}");
    let inc = c.get(&format!("/api/incidents/{n}")).unwrap();
    assert_eq!(inc["state"], "waiting_provider", "{inc}");
    let req = &inc["provider_requests"][0];
    assert!(req["delivery"].is_null() && req["done"].is_null(), "{req}");
    assert_eq!(
        req["rejections"][0]["verification"]["note"], "el puerto 12 sigue sin enlace",
        "{req}"
    );
    // Done again, and accepted: back to level 1, where it was asked from.
    let (code, out) = c.cli_as(
        &redes,
        &[
            "incidents",
            "provider-done",
            num,
            "--report",
            "puerto 12 reparado",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = c.cli(&[
        "incidents",
        "provider-delivered",
        num,
        "--note",
        "todos los puertos con enlace",
    ]);
    assert_eq!(code, 0, "{out}");
    let inc = c.get(&format!("/api/incidents/{n}")).unwrap();
    assert_eq!(inc["state"], "level1", "{inc}");
    let actions: Vec<&str> = inc["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["action"].as_str())
        .filter(|a| a.starts_with("provider_"))
        .collect();
    assert_eq!(
        actions,
        [
            "provider_propose",
            "provider_reschedule",
            "provider_done",
            "provider_delivered",
            "provider_done",
            "provider_delivered"
        ],
        "{inc}"
    );

    // The record of the verifications: both, the formula defused.
    let (code, csv) = c.cli(&["export", "--record", "verifications"]);
    assert_eq!(code, 0, "{csv}");
    let lines: Vec<&str> = csv.lines().map(str::trim_end).collect();
    assert!(
        lines[0].starts_with("verified_at,incident,device,provider"),
        "{csv}"
    );
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(
        lines[1].contains("not_as_agreed") && lines[1].contains("el puerto 12"),
        "{csv}"
    );
    assert!(lines[1].contains("\"'=HYPERLINK("), "{csv}");
    assert!(
        lines[2].contains(",as_agreed,") && lines[2].ends_with(",2"),
        "{csv}"
    );
    let (code, json) = c.cli(&["export", "--record", "verifications", "--format", "json"]);
    assert_eq!(code, 0, "{json}");
    let rows: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(rows[1]["report"], "puerto 12 reparado", "{rows}");
    // A provider's contact exports nothing.
    let (code, _) = c.cli_as(&redes, &["export", "--record", "verifications"]);
    assert_ne!(code, 0);
    // The other provider still sees nothing of it.
    assert!(show_as(&c, &otro, n).is_none());
}

#[test]
fn one_request_for_several_incidents_is_answered_and_verified_once_for_all() {
    let dir = tempdir();
    let d = dir.path();
    let c = collector(d);
    let (_a1, first) = disk_incident(d, &c, "ws-piso3-a");
    let (_a2, second) = disk_incident(d, &c, "ws-piso3-b");
    let redes = c.provider_account("redes", "Redes SAS");
    let otro = c.provider_account("otro", "Otro Proveedor");
    let (a, b) = (first.to_string(), second.to_string());
    let (code, out) = c.cli(&[
        "request",
        "create",
        "--incident",
        &a,
        "--incident",
        &b,
        "--provider",
        "Redes SAS",
        "--kind",
        "unplanned",
        "--at",
        "1d",
        "--conditions",
        "revisar el switch del piso 3",
    ]);
    assert_eq!(code, 0, "{out}");
    let id = format!("{first}-1");
    assert!(out.contains(&format!("request {id}")), "{out}");
    for n in [first, second] {
        let inc = c.get(&format!("/api/incidents/{n}")).unwrap();
        assert_eq!(inc["state"], "waiting_provider", "{inc}");
        assert_eq!(inc["provider_requests"][0]["id"], id.as_str(), "{inc}");
    }
    // One line for the request, with both incidents; nothing for another provider.
    let (code, out) = c.cli_as(&redes, &["request", "list"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains(&format!("incidents {first}, {second}")),
        "{out}"
    );
    let (code, out) = c.cli_as(&otro, &["request", "list"]);
    assert_eq!((code, out.trim()), (0, "no pending provider requests"));
    let (code, out) = c.cli_as(&otro, &["request", "accept", &id]);
    assert_ne!(code, 0, "another provider accepted: {out}");

    // Accepted and done once, by the provider's contact; verified once, by the desk.
    let (code, out) = c.cli_as(&redes, &["request", "accept", &id]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = c.cli_as(
        &redes,
        &["request", "done", &id, "--report", "switch reiniciado"],
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = c.cli_as(&redes, &["request", "verify", &id]);
    assert_ne!(code, 0, "a provider verified its own work: {out}");
    let (code, out) = c.cli(&["request", "verify", &id, "--note", "enlace en ambos"]);
    assert_eq!(code, 0, "{out}");
    for n in [first, second] {
        let inc = c.get(&format!("/api/incidents/{n}")).unwrap();
        assert_eq!(inc["state"], "level1", "{inc}");
        let req = &inc["provider_requests"][0];
        assert_eq!(req["accepted"]["by"], "redes", "{req}");
        assert_eq!(req["done"]["note"], "switch reiniciado", "{req}");
        assert_eq!(req["delivery"]["as_agreed"], true, "{req}");
    }
    let (code, out) = c.cli(&["request", "list"]);
    assert_eq!((code, out.trim()), (0, "no pending provider requests"));
}
