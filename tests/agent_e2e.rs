//! The agent end to end (issue 3): the tray report through the running agent to an
//! incident and back, and a kill -9 with a thousand spooled events. Real `vigia agent`
//! and `vigia collector` processes, the collector's embedded broker.
mod common;

use std::path::Path;

use common::*;

#[test]
fn tray_report_becomes_an_incident_with_its_snapshot_and_number() {
    let dir = tempdir();
    let collector = start_collector(dir.path(), None);
    let replay = dir.path().join("readings.jsonl");
    append_lines(&replay, &disk_line("/home", 42), 1);
    let agent = start_agent(dir.path(), "e2e-tray", &collector.mqtt_url, &replay, "");
    poll("device online", || {
        collector.device("e2e-tray").filter(|d| d["online"] == true)
    });
    // The snapshot is taken from the agent's current readings: wait for a first pass.
    poll("a first detector pass", || {
        agent_status(&agent.config).filter(|s| s["connected"] == true)
    });

    let (code, out) = agent_cmd(
        &agent.config,
        &[
            "report",
            "--category",
            "hardware",
            "--summary",
            "La pantalla parpadea",
            "--text",
            "Desde esta mañana la pantalla parpadea cada pocos segundos.\nYa reinicié.",
            "--urgency",
            "high",
            "--contact",
            "ext 1234",
        ],
    );
    assert_eq!(code, 0, "report failed:\n{out}");
    let number = reported_incident(&out);

    let incident = collector
        .get(&format!("/api/incidents/{number}"))
        .unwrap_or_else(|| panic!("incident {number} not found"));
    let text = incident.to_string();
    assert_eq!(incident["device"], "e2e-tray", "{incident}");
    assert!(text.contains("La pantalla parpadea"), "{incident}");
    assert!(text.contains("ext 1234"), "{incident}");
    // The snapshot carries the agent's readings: the replayed /home at 42 % used.
    assert!(text.contains("/home"), "no snapshot reading in {incident}");
    assert!(text.contains("42"), "no snapshot value in {incident}");

    // The user's status shows the report with its incident number.
    let status = poll("the report in the agent's status", || {
        agent_status(&agent.config).filter(|s| {
            s["reports"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["incident"] == number))
        })
    });
    assert_eq!(status["spooled"], 0, "{status}");
    collector.proc.terminate();
}

#[test]
fn agent_not_running_is_said_plainly() {
    let dir = tempdir();
    let replay = dir.path().join("readings.jsonl");
    append_lines(&replay, &disk_line("/", 10), 1);
    let config = write_agent_config(dir.path(), "e2e-off", "mqtt://127.0.0.1:1", &replay, "");
    let (code, out) = agent_cmd(&config, &["report", "--summary", "x", "--urgency", "low"]);
    assert_ne!(code, 0);
    assert!(out.contains("not running"), "{out}");
}

#[test]
fn kill9_with_a_thousand_spooled_events_loses_none_and_duplicates_none() {
    const MOUNTS: usize = 25;
    const LINES: usize = 40; // alternating over/under: 25 events per line, 1000 in all
    let dir = tempdir();
    let d = dir.path();
    let line = |used: u64| {
        let disks: Vec<String> = (0..MOUNTS)
            .map(|m| {
                format!(
                    "{{\"mount\":\"/m{m}\",\"total_bytes\":1000000,\"avail_bytes\":{},\"files\":1000,\"files_free\":900}}",
                    (100 - used) * 10_000
                )
            })
            .collect();
        format!("{{\"disk\":[{}]}}\n", disks.join(","))
    };
    let replay = d.join("flapping.jsonl");
    for i in 0..LINES {
        append_lines(&replay, &line(if i % 2 == 0 { 95 } else { 50 }), 1);
    }
    // No broker at all: everything stays in the spool.
    let config = d.join("agent.toml");
    let write = |broker: &str, replay: &Path| {
        std::fs::write(
            &config,
            format!(
                "interval = \"10ms\"\ndata_dir = \"{}\"\n\n[device]\nid = \"e2e-kill\"\n\n\
                 [mqtt]\nurl = \"{broker}\"\n\n[detect]\nreplay = \"{}\"\n\n\
                 [detect.disk_space]\nraise_after = 1\nclear_after = 1\n",
                d.join("agent-data").display(),
                replay.display()
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    };
    write(&format!("mqtt://127.0.0.1:{}", free_port()), &replay);
    let agent = start_agent_with(&config);
    poll("1000 events in the spool", || {
        agent_status(&config).filter(|s| s["spooled"] == 1000)
    });
    agent.proc.kill9();

    // A collector now, and the agent back on readings that raise nothing new.
    let collector = start_collector(d, None);
    let calm = d.join("calm.jsonl");
    append_lines(&calm, &line(50), 1);
    write(&collector.mqtt_url, &calm);
    let _agent = start_agent_with(&config);
    poll("the spool to drain", || {
        agent_status(&config).filter(|s| s["spooled"] == 0 && s["connected"] == true)
    });
    let events = poll("the collector's event summary", || {
        collector
            .get("/api/devices/e2e-kill/events")
            .filter(|e| e["count"] == 1000)
    });
    assert_eq!(events["first_seq"], 1, "{events}");
    assert_eq!(events["last_seq"], 1000, "{events}");
    assert_eq!(events["missing"], serde_json::json!([]), "{events}");
    collector.proc.terminate();
}

/// A reinstalled agent (its data directory removed: a new spool, so `seq` and `boot` start
/// again at 1) is a new instance to the collector: its new fault and its new report both
/// arrive as new incidents, the report is answered with its own number, and the device is
/// online.
#[test]
fn reinstalled_agent_is_a_new_instance_whose_fault_and_report_arrive() {
    let dir = tempdir();
    let collector = start_collector(dir.path(), None);
    let id = "e2e-reinstall";
    let first = dir.path().join("first.jsonl");
    append_lines(&first, &disk_line("/", 10), 1);
    let agent = start_agent(dir.path(), id, &collector.mqtt_url, &first, "");
    poll("device online", || {
        collector.device(id).filter(|d| d["online"] == true)
    });
    let report = |summary: &str| {
        let (code, out) = agent_cmd(
            &agent_config(dir.path(), id),
            &[
                "report",
                "--category",
                "hardware",
                "--summary",
                summary,
                "--text",
                "x",
                "--urgency",
                "low",
                "--contact",
                "ext 1",
            ],
        );
        assert_eq!(code, 0, "report failed:\n{out}");
        reported_incident(&out)
    };
    let old = report("Primer informe");
    assert_eq!(agent.proc.terminate().code(), Some(0));
    poll("device offline", || {
        collector.device(id).filter(|d| d["online"] == false)
    });

    // Reinstall: the data directory goes, the config stays; /var is now 98 % full.
    std::fs::remove_dir_all(dir.path().join(format!("agent-{id}-data")))
        .unwrap_or_else(|e| panic!("remove the agent's data: {e}"));
    let second = dir.path().join("second.jsonl");
    append_lines(&second, &disk_line("/var", 98), 1);
    let agent = start_agent(dir.path(), id, &collector.mqtt_url, &second, "");
    poll("the reinstalled device online", || {
        collector.device(id).filter(|d| d["online"] == true)
    });
    let fault = poll("the new fault's incident", || {
        device_incidents(&collector, id)
            .into_iter()
            .find(|i| i["kind"] == "disk_space" && i["subject"] == "/var")
    });
    let new = report("Segundo informe");
    assert_ne!(
        new, old,
        "the new report must not be answered with the old number"
    );
    let incident = collector
        .get(&format!("/api/incidents/{new}"))
        .unwrap_or_else(|| panic!("incident {new} not stored"));
    assert!(
        incident.to_string().contains("Segundo informe"),
        "{incident}"
    );
    assert_ne!(fault["number"], old);
    // Both instances' events are stored, each under its own instance.
    let events = collector
        .get(&format!("/api/devices/{id}/events"))
        .unwrap_or_else(|| panic!("no events summary"));
    assert!(events["count"].as_u64().unwrap_or(0) >= 2, "{events}");
    assert_eq!(events["missing"], serde_json::json!([]), "{events}");
    let device = collector.device(id).unwrap_or_default();
    assert_eq!(device["online"], true, "{device}");
    agent.proc.terminate();
    collector.proc.terminate();
}

fn agent_config(dir: &Path, id: &str) -> std::path::PathBuf {
    dir.join(format!("agent-{id}.toml"))
}
