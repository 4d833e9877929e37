//! The support workflow end to end (issue 4) with real processes: a report missing a
//! required field goes to needs_info, the question reaches the user's `vigia agent status`,
//! `vigia agent reply` answers it and the incident resumes.
mod common;

use common::*;

#[test]
fn needs_info_round_trip_through_a_real_agent() {
    let dir = tempdir();
    let collector = start_collector(dir.path(), None);
    let replay = dir.path().join("readings.jsonl");
    append_lines(&replay, &disk_line("/", 30), 1);
    let agent = start_agent(dir.path(), "e2e-info", &collector.mqtt_url, &replay, "");
    poll("agent connected", || {
        agent_status(&agent.config).filter(|s| s["connected"] == true)
    });

    // A network problem must say what happens (`text`); this report does not.
    let (code, out) = agent_cmd(
        &agent.config,
        &[
            "report",
            "--category",
            "network",
            "--summary",
            "Sin internet",
            "--contact",
            "ext 5",
            "--urgency",
            "high",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let number = reported_incident(&out);
    let path = format!("/api/incidents/{number}");
    poll("the incident in needs_info", || {
        collector.get(&path).filter(|i| i["state"] == "needs_info")
    });

    // The question reaches the user, who answers it.
    let st = poll("the question in the user's status", || {
        agent_status(&agent.config).filter(|s| {
            s["questions"]
                .as_array()
                .is_some_and(|q| q.iter().any(|q| q["incident"] == number))
        })
    });
    let question = st["questions"][0]["question"]
        .as_str()
        .unwrap_or("")
        .to_lowercase();
    assert!(!question.is_empty(), "{st}");
    let (code, out) = agent_cmd(
        &agent.config,
        &[
            "reply",
            &number.to_string(),
            "Desde las 9, ningún equipo del piso 3 navega",
        ],
    );
    assert_eq!(code, 0, "{out}");

    // The answer resumes the workflow: validated now, the incident moves on.
    let incident = poll("the incident to leave needs_info", || {
        collector
            .get(&path)
            .filter(|i| i["state"] != "needs_info" && i["state"] != "validating")
    });
    let text = incident.to_string();
    assert!(
        text.contains("ningún equipo del piso 3"),
        "reply not recorded: {incident}"
    );
    collector.proc.terminate();
}
