//! Warranties with real processes: imported from a CSV file through the CLI (the row that
//! matches no device reported, a malformed file refused whole), set and cleared by hand;
//! a provider request on a device under warranty goes to its warranty provider, and one
//! on a device whose warranty has expired is refused until a provider is named.
// A test: a failed unwrap is the failure, with its location.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

/// An agent whose `/var` is 95 % full; returns its disk incident's number once the
/// incident reached level 1.
fn disk_incident(dir: &Path, c: &Collector, id: &str) -> (Agent, u64) {
    let replay = dir.join(format!("{id}.jsonl"));
    append_lines(&replay, &disk_line("/var", 50), 3);
    append_lines(&replay, &disk_line("/var", 95), 40);
    let agent = start_agent(dir, id, &c.mqtt_url, &replay, "");
    let n = poll("the disk incident at level 1", || {
        device_incidents(c, id)
            .into_iter()
            .find(|i| i["kind"] == "disk_space" && i["state"] == "level1")
            .and_then(|i| i["number"].as_u64())
    });
    (agent, n)
}

fn request_provider(c: &Collector, n: u64, provider: Option<&str>) -> (i32, String) {
    let n = n.to_string();
    let mut args = vec!["incidents", "provider", n.as_str(), "--at", "2d"];
    if let Some(p) = provider {
        args.extend(["--provider", p]);
    }
    c.cli(&args)
}

#[test]
fn a_device_under_warranty_gets_its_warranty_provider_and_an_expired_one_does_not() {
    let dir = tempdir();
    let d = dir.path();
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
    let c = start_collector_with(&config);
    let (_a1, covered) = disk_incident(d, &c, "ws-garantia");
    let (_a2, expired) = disk_incident(d, &c, "ws-vencida");

    // A malformed file changes nothing, and says which lines are wrong.
    let bad = d.join("bad.csv");
    std::fs::write(
        &bad,
        "device,provider,until\nws-garantia,Dell ProSupport,2099-12-31\nws-vencida,HP Care,someday\n",
    )
    .unwrap();
    let (code, out) = c.cli(&["warranty", "import", "--from", bad.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("line 3: until:"), "{out}");
    assert!(out.contains("nothing changed"), "{out}");
    let dev = c.device("ws-garantia").unwrap();
    assert!(dev["warranty"].is_null(), "{dev}");

    // A good one: the row for an unknown serial is reported and skipped.
    let good = d.join("warranties.csv");
    std::fs::write(
        &good,
        "device,serial,provider,until\n\
         ws-garantia,,Dell ProSupport,2099-12-31\n\
         ,NO-SUCH-SERIAL,Lenovo Premier,2099-12-31\n",
    )
    .unwrap();
    let (code, out) = c.cli(&["warranty", "import", "--from", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("1 warranty set; 1 row matched no device"),
        "{out}"
    );
    assert!(
        out.contains("line 3: no device matches serial \"NO-SUCH-SERIAL\""),
        "{out}"
    );
    let dev = c.device("ws-garantia").unwrap();
    assert_eq!(dev["warranty"]["provider"], "Dell ProSupport", "{dev}");
    assert_eq!(dev["warranty"]["set_by"], "admin", "{dev}");
    assert_eq!(dev["warranty_in_force"], true, "{dev}");

    // By hand: an expired warranty, then it shows as expired with the incident.
    let (code, out) = c.cli(&[
        "warranty",
        "set",
        "ws-vencida",
        "--provider",
        "HP Care",
        "--until",
        "2020-06-30",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("(already expired)"), "{out}");
    let inc: Value = c.get(&format!("/api/incidents/{expired}")).unwrap();
    assert_eq!(inc["device_info"]["warranty"]["in_force"], false, "{inc}");

    // The request on the device under warranty goes to its warranty provider...
    let (code, out) = request_provider(&c, covered, None);
    assert_eq!(code, 0, "{out}");
    let inc: Value = c.get(&format!("/api/incidents/{covered}")).unwrap();
    let req = &inc["provider_requests"][0];
    assert_eq!(req["provider"], "Dell ProSupport", "{inc}");
    assert_eq!(req["under_warranty"], true, "{inc}");
    assert_eq!(inc["state"], "waiting_provider", "{inc}");

    // The registry: a provider with a contract in force for this kind of asset, and the
    // minutes of a coordination meeting.
    let (code, out) = c.cli(&[
        "provider",
        "add",
        "Soporte Regional S.A.",
        "--email",
        "mesa@soporte-regional.example",
        "--contact",
        "Ana Ruiz <ana@soporte-regional.example>",
        "--covers",
        "capacity",
        "--service",
        "on-site repair",
        "--contract-start",
        "2026-01-01",
        "--contract-end",
        "2099-12-31",
        "--conditions",
        "8x5, repuestos incluidos",
        "--response",
        "P1=4h",
        "--resolution",
        "P1=1d",
    ]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = c.cli(&[
        "provider",
        "minutes",
        "soporte regional s.a.",
        "--date",
        "2026-11-30",
        "--participant",
        "Ana Ruiz",
        "--participant",
        "Marta Mesa",
        "--text",
        "Se acuerdan los tiempos de respuesta.",
    ]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = c.cli(&["provider", "list"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Soporte Regional S.A."), "{out}");
    let p: Value = c.get("/api/providers/Soporte%20Regional%20S.A.").unwrap();
    assert_eq!(p["contract"]["response"]["P1"], "4h", "{p}");
    assert_eq!(p["minutes"][0]["participants"][1], "Marta Mesa", "{p}");
    assert_eq!(p["minutes"][0]["recorded_by"], "admin", "{p}");
    let (code, out) = c.cli(&["provider", "add", "Bad", "--portal", "javascript:alert(1)"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("portal"), "{out}");

    // ...while the expired one's needs a provider named (the one with a contract is
    // suggested), and then is not under warranty.
    let (code, out) = request_provider(&c, expired, None);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("with a contract in force covering this asset: Soporte Regional S.A."),
        "{out}"
    );
    assert!(
        out.contains("warranty with HP Care expired on 2020-06-30"),
        "{out}"
    );
    let (code, out) = request_provider(&c, expired, Some("Soporte Regional S.A."));
    assert_eq!(code, 0, "{out}");
    let inc: Value = c.get(&format!("/api/incidents/{expired}")).unwrap();
    assert_eq!(
        inc["provider_requests"][0]["under_warranty"], false,
        "{inc}"
    );

    // Cleared by hand.
    let (code, out) = c.cli(&["warranty", "clear", "ws-garantia"]);
    assert_eq!(code, 0, "{out}");
    assert!(c.device("ws-garantia").unwrap()["warranty"].is_null());
    // An unknown device is a clear error.
    let (code, out) = c.cli(&[
        "warranty",
        "set",
        "ws-nadie",
        "--provider",
        "X",
        "--until",
        "2030-01-01",
    ]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("no device ws-nadie"), "{out}");
    c.proc.terminate();
}
