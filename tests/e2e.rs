//! One fault travelling end to end (issue 2): real `vigia agent` and `vigia collector`
//! processes, the embedded broker or a real Mosquitto, readings injected through the
//! agent's replay source (the same detector path as the machine's probes).
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

fn open_disk_incident(c: &Collector, device: &str) -> Option<Value> {
    let all = device_incidents(c, device);
    (all.len() == 1 && all[0]["kind"] == "disk_space" && all[0]["subject"] == "/var")
        .then(|| all[0].clone())
}

#[test]
fn disk_fault_opens_one_incident_clears_and_last_will_marks_offline() {
    let dir = tempdir();
    let collector = start_collector(dir.path(), None);
    let replay = dir.path().join("readings.jsonl");
    append_lines(&replay, &disk_line("/var", 50), 3);
    append_lines(&replay, &disk_line("/var", 95), 8);
    let agent = start_agent(dir.path(), "e2e-disk", &collector.mqtt_url, &replay, "");

    // The device appears online with its inventory.
    let device = poll("device e2e-disk online", || {
        collector.device("e2e-disk").filter(|d| d["online"] == true)
    });
    assert!(
        device.to_string().contains("hostname"),
        "no inventory in {device}"
    );

    // Crossing the threshold opens exactly one incident, with its evidence.
    let incident = poll("one disk_space incident", || {
        open_disk_incident(&collector, "e2e-disk")
    });
    assert_eq!(incident["fault_active"], true, "{incident}");
    assert_eq!(incident["severity"], "warning", "{incident}");

    // Back under the threshold: the same incident shows the fault cleared.
    append_lines(&replay, &disk_line("/var", 50), 8);
    let cleared = poll("the incident to show the fault cleared", || {
        open_disk_incident(&collector, "e2e-disk").filter(|i| i["fault_active"] == false)
    });
    assert_eq!(cleared["number"], incident["number"]);
    assert_eq!(device_incidents(&collector, "e2e-disk").len(), 1);

    // kill -9: the broker publishes the Last Will and the device goes offline.
    agent.proc.kill9();
    poll("device e2e-disk offline via its Last Will", || {
        collector
            .device("e2e-disk")
            .filter(|d| d["online"] == false)
    });
    collector.proc.terminate();
}

/// Publishes like an agent: the events in `seqs`, as fault raises with one subject per seq.
async fn publish_events(client: &AsyncClient, device: &str, seqs: impl Iterator<Item = u64>) {
    for seq in seqs {
        let body = serde_json::json!({
            "v": 1, "device": device, "seq": seq, "boot": 1, "ts": 1_700_000_000_000u64 + seq,
            "body": {"type": "fault", "action": "raised", "kind": "disk_space",
                     "subject": format!("/m{seq}"), "severity": "warning",
                     "evidence": {"value": 95.0, "threshold": 90.0, "unit": "%", "source": "test"},
                     "message": "full"}
        });
        client
            .publish(
                format!("vigia/v1/up/{device}/event"),
                QoS::AtLeastOnce,
                false,
                body.to_string().into_bytes(),
            )
            .await
            .unwrap_or_else(|e| panic!("publish: {e}"));
    }
}

/// Adds the seqs an `Ack` lists as stored.
fn absorb_ack(ack: &Value, acked: &mut BTreeSet<u64>) {
    for r in ack["stored"].as_array().into_iter().flatten() {
        if let (Some(from), Some(to)) = (r["from"].as_u64(), r["to"].as_u64()) {
            acked.extend(from..=to);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_killed_mid_stream_loses_and_duplicates_nothing() {
    if skip_without(&["mosquitto"]) {
        return;
    }
    const N: u64 = 400;
    let dir = tempdir();
    let broker = Mosquitto::start(dir.path());
    let collector = start_collector(dir.path(), Some(&broker.url()));

    // A test client plays the agent: publishes, listens for acks, resends what is unacked.
    let device = "e2e-burst";
    let mut opts = MqttOptions::new(device, "127.0.0.1", broker.port);
    opts.set_max_packet_size(32 * 1024, 32 * 1024);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut ev) = AsyncClient::new(opts, 1000);
    client
        .subscribe(format!("vigia/v1/down/{device}/ack"), QoS::AtLeastOnce)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (tx, mut acks) = tokio::sync::mpsc::unbounded_channel::<Value>();
    tokio::spawn(async move {
        while let Ok(event) = ev.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event {
                if let Ok(v) = serde_json::from_slice::<Value>(&p.payload) {
                    let _ = tx.send(v);
                }
            }
        }
    });

    publish_events(&client, device, 1..=N / 2).await;
    // Let the collector get part of the stream, then kill it mid-stream.
    let mut acked = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while acked.len() < 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no acks from the collector"
        );
        if let Ok(Some(a)) = tokio::time::timeout(Duration::from_millis(200), acks.recv()).await {
            absorb_ack(&a, &mut acked);
        }
    }
    collector.proc.kill9();
    // The stream goes on while the collector is down; the broker queues it.
    publish_events(&client, device, N / 2 + 1..=N).await;
    let collector = start_collector_with(&collector.config);

    // Like an agent after the collector comes back: resend whatever is not acked yet,
    // until everything is.
    let deadline = tokio::time::Instant::now() + DEADLINE * 2;
    loop {
        while let Ok(a) = acks.try_recv() {
            absorb_ack(&a, &mut acked);
        }
        if acked.len() as u64 == N {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {N} events acked",
            acked.len()
        );
        if let Ok(Some(a)) = tokio::time::timeout(Duration::from_secs(2), acks.recv()).await {
            absorb_ack(&a, &mut acked);
        } else {
            let missing: Vec<u64> = (1..=N).filter(|s| !acked.contains(s)).collect();
            publish_events(&client, device, missing.into_iter()).await;
        }
    }

    // N events stored, each exactly once: N incidents, one per subject, one occurrence each.
    let incidents = poll("all incidents listed", || {
        let all = device_incidents(&collector, device);
        (all.len() as u64 == N).then_some(all)
    });
    let mut per_subject = BTreeMap::new();
    for i in &incidents {
        *per_subject
            .entry(i["subject"].as_str().unwrap_or("").to_string())
            .or_insert(0) += 1;
        assert_eq!(i["occurrences"], 1, "duplicate stored: {i}");
    }
    assert_eq!(per_subject.len() as u64, N);
    assert!(per_subject.values().all(|&n| n == 1));
    collector.proc.terminate();
}

#[test]
fn agent_stopped_while_broker_down_delivers_its_spool_after_restart() {
    if skip_without(&["mosquitto"]) {
        return;
    }
    let dir = tempdir();
    let mut broker = Mosquitto::start(dir.path());
    let collector = start_collector(dir.path(), Some(&broker.url()));
    broker.down();

    // The fault is detected while the broker is down: the event can only be spooled.
    let replay = dir.path().join("readings.jsonl");
    append_lines(&replay, &disk_line("/var", 96), 8);
    let agent = start_agent(dir.path(), "e2e-spool", &broker.url(), &replay, "");
    agent.proc.wait_line("fault event spooled");
    let status = agent.proc.terminate();
    assert!(status.success(), "agent exit: {status}");

    // Broker back, agent restarted on readings that are fine now: it detects nothing new,
    // so the incident can only come from the spooled event.
    broker.up();
    std::fs::write(&replay, disk_line("/var", 40)).unwrap_or_else(|e| panic!("{e}"));
    let _agent = start_agent_with(&agent.config);
    let incident = poll("the spooled fault to arrive", || {
        open_disk_incident(&collector, "e2e-spool")
    });
    assert_eq!(incident["severity"], "warning");
    collector.proc.terminate();
}

/// The next datagram on a notification socket, as text (fails after [`DEADLINE`]).
#[allow(clippy::unwrap_used)]
fn notified(sock: &std::os::unix::net::UnixDatagram) -> String {
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 1024];
    let n = sock
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no notification within {DEADLINE:?}: {e}"));
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// `Type=notify` (packaging/*.service): systemd hears READY=1 from the collector once its
/// API answers, from the agent once it has a broker session (not before, when the broker
/// is unreachable), and STOPPING=1 when they stop.
#[test]
#[allow(clippy::unwrap_used)]
fn systemd_hears_ready_when_each_program_is_up() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempdir();
    let collector_sock = UnixDatagram::bind(dir.path().join("notify-collector")).unwrap();
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[mqtt]\nembedded_port = 0\n[http]\nlisten = \"127.0.0.1:0\"\n",
            dir.path().join("collector-data").display()
        ),
    )
    .unwrap();
    let mut cmd = vigia(&["collector", "--config", config.to_str().unwrap(), "run"]);
    cmd.env("NOTIFY_SOCKET", dir.path().join("notify-collector"));
    let collector = Proc::spawn("collector", cmd);
    let ready = notified(&collector_sock);
    let http = ready
        .strip_prefix("READY=1\nSTATUS=console on ")
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("collector's first notification: {ready:?}"))
        .to_string();
    let mqtt = ready
        .rsplit("broker ")
        .next()
        .unwrap_or_else(|| panic!("{ready:?}"))
        .to_string();
    let healthz = ureq::get(&format!("{http}/healthz")).call();
    assert!(
        healthz.is_ok_and(|r| r.status() == 200),
        "READY=1 came before {http} answered"
    );

    // An agent whose broker does not answer says why, and is not ready yet.
    let down_sock = UnixDatagram::bind(dir.path().join("notify-down")).unwrap();
    let replay = dir.path().join("readings.jsonl");
    append_lines(&replay, &disk_line("/var", 50), 3);
    let nowhere = format!("mqtt://127.0.0.1:{}", free_port());
    let down = write_agent_config(dir.path(), "notify-down", &nowhere, &replay, "");
    let mut cmd = vigia(&["agent", "--config", down.to_str().unwrap(), "run"]);
    cmd.env("NOTIFY_SOCKET", dir.path().join("notify-down"));
    let agent = Proc::spawn("agent", cmd);
    let first = notified(&down_sock);
    assert!(
        first.starts_with("STATUS=broker not reachable") && !first.contains("READY=1"),
        "{first:?}"
    );
    drop(agent);

    // With its broker there, the agent is ready and says it is connected.
    let agent_sock = UnixDatagram::bind(dir.path().join("notify-up")).unwrap();
    let up = write_agent_config(dir.path(), "notify-up", &mqtt, &replay, "");
    let mut cmd = vigia(&["agent", "--config", up.to_str().unwrap(), "run"]);
    cmd.env("NOTIFY_SOCKET", dir.path().join("notify-up"));
    let agent = Proc::spawn("agent", cmd);
    let msg = notified(&agent_sock);
    assert_eq!(msg, "READY=1\nSTATUS=connected to the broker");
    assert!(agent.terminate().success());
    assert_eq!(notified(&agent_sock), "STOPPING=1");
    assert!(collector.terminate().success());
    assert_eq!(notified(&collector_sock), "STOPPING=1");
}
