//! The agent against a real Mosquitto, started on a free port for each test: delivery and
//! the goodbye, a broker down at start, TLS with a CA file and a password. Where Mosquitto
//! is missing a test says so and passes, except under CI, where it fails.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::QoS;
use support::{
    free_port, mosquitto_bin, mosquitto_or_skip, next_on, skip_unless_ci, watcher, watcher_with,
    Broker, DEADLINE,
};
use tokio::sync::oneshot;
use vigia_agent::config::Config;
use vigia_agent::ipc::{self, Request, Response, StatusView};
use vigia_agent::run;
use vigia_protocol::{decode, Birth, Event as WireEvent, EventBody, Status};

fn config(dir: &Path, port: u16, replay: &Path) -> Config {
    Config::from_toml(
        &format!(
            r#"
            interval = "50ms"
            data_dir = "{}"
            [device]
            id = "ws-test"
            [mqtt]
            url = "mqtt://127.0.0.1:{port}"
            keep_alive = "5s"
            [detect]
            replay = "{}"
            "#,
            dir.join("data").display(),
            replay.display()
        ),
        "test",
    )
    .unwrap()
}

fn write_replay(path: &Path, avail: u64) {
    let line = format!(
        "{{\"disk\":[{{\"mount\":\"/var\",\"total_bytes\":100,\"avail_bytes\":{avail},\"files\":10,\"files_free\":5}}]}}\n"
    );
    std::fs::write(path, line).unwrap();
}

async fn status(cfg: &Config) -> StatusView {
    match ipc::request(&cfg.socket, &Request::Status).await.unwrap() {
        Response::Status(v) => v,
        other => panic!("{other:?}"),
    }
}

async fn wait_for_status(cfg: &Config, what: &str, f: impl Fn(&StatusView) -> bool) {
    let start = Instant::now();
    loop {
        if cfg.socket.exists() {
            if let Ok(Response::Status(v)) = ipc::request(&cfg.socket, &Request::Status).await {
                if f(&v) {
                    return;
                }
            }
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_through_a_real_broker_and_says_goodbye() {
    let Some(bin) = mosquitto_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Broker::start(&bin, dir.path(), port);
    let (collector, mut rx) = watcher(port).await;
    let replay = dir.path().join("replay.jsonl");
    write_replay(&replay, 5); // 95 % used: a disk_space warning after the debounce
    let cfg = config(dir.path(), port, &replay);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let agent = tokio::spawn(run(cfg.clone(), async {
        let _ = stop_rx.await;
    }));

    let birth: Birth = decode(&next_on(&mut rx, "vigia/v1/up/ws-test/birth").await).unwrap();
    let online: Status = decode(&next_on(&mut rx, "vigia/v1/up/ws-test/status").await).unwrap();
    assert!(online.online);
    assert_eq!(online.boot, birth.boot);
    assert!(birth.cpu_cores >= 1);
    let ev: WireEvent = decode(&next_on(&mut rx, "vigia/v1/up/ws-test/event").await).unwrap();
    assert_eq!(ev.seq, 1);
    assert_eq!(ev.boot, birth.boot);
    assert!(matches!(ev.body, EventBody::Fault(ref f) if f.subject.as_str() == "/var"));

    // Unacked, it stays in the spool; the collector's ack takes it out.
    assert_eq!(status(&cfg).await.spooled, 1);
    collector
        .publish(
            "vigia/v1/down/ws-test/ack",
            QoS::AtLeastOnce,
            false,
            br#"{"v":1,"device":"ws-test","stored":[{"from":1,"to":1}]}"#.to_vec(),
        )
        .await
        .unwrap();
    wait_for_status(&cfg, "the ack to empty the spool", |v| v.spooled == 0).await;

    // A user report through the socket comes back with its incident number when the
    // collector answers in time; the report carries the snapshot and open faults.
    let ask = tokio::spawn({
        let socket = cfg.socket.clone();
        async move {
            let req = Request::Report {
                category: "hardware".into(),
                summary: "fan noise".into(),
                text: "loud since Monday".into(),
                urgency: vigia_protocol::Urgency::High,
                contact: "ext 123".into(),
                wait_ms: 10_000,
            };
            ipc::request(&socket, &req).await
        }
    });
    let ev: WireEvent = decode(&next_on(&mut rx, "vigia/v1/up/ws-test/event").await).unwrap();
    let EventBody::Report(report) = &ev.body else {
        panic!("not a report: {ev:?}");
    };
    assert_eq!(report.summary.as_str(), "fan noise");
    assert!(!report.reporter.is_empty());
    assert_eq!(report.open_faults.len(), 1);
    assert!(report.snapshot.iter().any(|r| r.name.contains("/var")));
    let cmd = format!(
        r#"{{"v":1,"device":"ws-test","ts":1,"body":{{"type":"report_accepted","report_id":{},"incident":77}}}}"#,
        report.report_id
    );
    collector
        .publish(
            "vigia/v1/down/ws-test/cmd",
            QoS::AtLeastOnce,
            false,
            cmd.into_bytes(),
        )
        .await
        .unwrap();
    let answer = tokio::time::timeout(DEADLINE, ask)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(answer, Response::Reported { incident: Some(77), seq, .. } if seq == ev.seq),
        "{answer:?}"
    );
    let v = status(&cfg).await;
    assert_eq!(v.reports.len(), 1);
    assert_eq!(v.reports[0].incident, Some(77));

    // IT asks a question: `status` shows it until the user replies.
    let ask = br#"{"v":1,"device":"ws-test","ts":2,"body":{"type":"request_info","incident":77,"question":"Which fan?"}}"#;
    collector
        .publish(
            "vigia/v1/down/ws-test/cmd",
            QoS::AtLeastOnce,
            false,
            ask.to_vec(),
        )
        .await
        .unwrap();
    wait_for_status(&cfg, "the question", |v| {
        v.questions.len() == 1 && v.questions[0].question == "Which fan?"
    })
    .await;

    // A clean stop says offline, with this session's boot.
    stop_tx.send(()).unwrap();
    let offline: Status = decode(&next_on(&mut rx, "vigia/v1/up/ws-test/status").await).unwrap();
    assert!(!offline.online);
    assert_eq!(offline.boot, online.boot);
    tokio::time::timeout(DEADLINE, agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!cfg.socket.exists(), "socket left behind");

    // Restarted, the agent still knows the report's incident and the open question;
    // a reply answers it.
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let agent = tokio::spawn(run(cfg.clone(), async {
        let _ = stop_rx.await;
    }));
    wait_for_status(&cfg, "reports and questions after restart", |v| {
        v.reports.first().and_then(|r| r.incident) == Some(77) && v.questions.len() == 1
    })
    .await;
    let r = ipc::request(
        &cfg.socket,
        &Request::Reply {
            incident: 77,
            text: "the CPU fan".into(),
        },
    )
    .await
    .unwrap();
    assert!(matches!(r, Response::Replied { .. }), "{r:?}");
    assert!(status(&cfg).await.questions.is_empty());
    let ev = loop {
        let ev: WireEvent = decode(&next_on(&mut rx, "vigia/v1/up/ws-test/event").await).unwrap();
        if matches!(ev.body, EventBody::Reply(_)) {
            break ev;
        }
    };
    assert!(
        matches!(&ev.body, EventBody::Reply(r) if r.incident == 77 && r.text.as_str() == "the CPU fan")
    );
    stop_tx.send(()).unwrap();
    tokio::time::timeout(DEADLINE, agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_at_start_spools_then_delivers_with_a_new_boot() {
    let Some(bin) = mosquitto_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Register the collector's persistent session, then take the broker down (it
    // saves the session and its subscription).
    let broker = Broker::start(&bin, dir.path(), port);
    let (collector, rx) = watcher(port).await;
    drop(rx);
    broker.stop();

    let replay = dir.path().join("replay.jsonl");
    write_replay(&replay, 5);
    let cfg = config(dir.path(), port, &replay);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let agent = tokio::spawn(run(cfg.clone(), async {
        let _ = stop_rx.await;
    }));
    // Sampling goes on without a broker: the fault waits in the spool.
    wait_for_status(&cfg, "a spooled fault while offline", |v| {
        !v.connected && v.spooled == 1 && v.attempts >= 1
    })
    .await;

    let _broker = Broker::start(&bin, dir.path(), port);
    let (_collector2, mut rx) = {
        // The old client reconnects by itself; a fresh receiver reads what it gets.
        drop(collector);
        watcher(port).await
    };
    // Everything up to the replayed event: birth, status, then the event itself.
    let mut seen: Vec<(String, Vec<u8>)> = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while let Some((t, p)) = rx.recv().await {
            let done = t == "vigia/v1/up/ws-test/event";
            seen.push((t, p));
            if done {
                break;
            }
        }
    })
    .await
    .unwrap();
    let (_, last) = seen.last().unwrap();
    let ev: WireEvent = decode(last).unwrap();
    assert_eq!(ev.seq, 1);
    let online: Status = seen
        .iter()
        .rev()
        .find(|(t, _)| t == "vigia/v1/up/ws-test/status")
        .map(|(_, p)| decode(p).unwrap())
        .unwrap();
    assert!(online.online);
    // The first session never connected: its boot was not used, so no gap is needed,
    // but the boot must be at least 1 and the event must carry a real boot.
    assert!(online.boot >= 1);
    stop_tx.send(()).unwrap();
    tokio::time::timeout(DEADLINE, agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

fn run_tool(cmd: &mut Command) {
    let st = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "{cmd:?} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_ca_file_and_a_password() {
    let (Some(bin), true, true) = (
        mosquitto_bin(),
        Command::new("openssl").arg("version").output().is_ok(),
        Command::new("mosquitto_passwd").arg("-h").output().is_ok(),
    ) else {
        skip_unless_ci("mosquitto, openssl or mosquitto_passwd");
        return;
    };
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Mosquitto started as root drops to its own user: it must read these files.
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = |f: &str| d.join(f);
    run_tool(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=vigia test CA",
                "-keyout",
            ])
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p("ca.pem")),
    );
    run_tool(
        Command::new("openssl")
            .args([
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
            ])
            .arg(p("srv.key"))
            .arg("-out")
            .arg(p("srv.csr")),
    );
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run_tool(
        Command::new("openssl")
            .args(["x509", "-req", "-days", "1", "-CAcreateserial", "-in"])
            .arg(p("srv.csr"))
            .arg("-CA")
            .arg(p("ca.pem"))
            .arg("-CAkey")
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p("srv.pem"))
            .arg("-extfile")
            .arg(p("ext.cnf")),
    );
    run_tool(
        Command::new("mosquitto_passwd")
            .args(["-b", "-c"])
            .arg(p("pw"))
            .args(["ws-test", "s3cret"]),
    );
    run_tool(
        Command::new("mosquitto_passwd")
            .args(["-b"])
            .arg(p("pw"))
            .args(["collector", "c0llector"]),
    );
    for f in ["srv.key", "srv.pem", "ca.pem", "pw"] {
        std::fs::set_permissions(p(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let (tls_port, plain_port) = (free_port(), free_port());
    let conf = format!(
        "per_listener_settings false\nallow_anonymous false\npassword_file {pw}\npersistence false\n\
         listener {plain_port} 127.0.0.1\n\
         listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n",
        pw = p("pw").display(),
        ca = p("ca.pem").display(),
        cert = p("srv.pem").display(),
        key = p("srv.key").display(),
    );
    let _broker = Broker::start_with(&bin, d, tls_port, &conf);
    let (_c, mut rx) = watcher_with(plain_port, Some(("collector", "c0llector"))).await;

    let replay = p("replay.jsonl");
    write_replay(&replay, 50);
    let agent_toml = |data: &str, password: &str| {
        format!(
            "interval = \"50ms\"\ndata_dir = \"{}\"\n[device]\nid = \"ws-test\"\n\
             [mqtt]\nurl = \"mqtts://127.0.0.1:{tls_port}\"\nca_file = \"{}\"\n\
             username = \"ws-test\"\npassword = \"{password}\"\n[detect]\nreplay = \"{}\"\n",
            p(data).display(),
            p("ca.pem").display(),
            replay.display()
        )
    };

    // A wrong password: refused, the agent says so and keeps running.
    let bad = Config::from_toml(&agent_toml("bad", "wrong"), "bad").unwrap();
    let (stop_bad, stop_rx) = oneshot::channel::<()>();
    let agent_bad = tokio::spawn(run(bad.clone(), async {
        let _ = stop_rx.await;
    }));
    wait_for_status(&bad, "the refusal", |v| {
        !v.connected
            && v.last_error
                .as_deref()
                .is_some_and(|e| e.contains("NotAuthorized"))
    })
    .await;
    stop_bad.send(()).unwrap();
    tokio::time::timeout(DEADLINE, agent_bad)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    // The right one, over TLS checked against the CA file.
    let good = Config::from_toml(&agent_toml("good", "s3cret"), "good").unwrap();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let agent = tokio::spawn(run(good.clone(), async {
        let _ = stop_rx.await;
    }));
    let birth: Birth = decode(&next_on(&mut rx, "vigia/v1/up/ws-test/birth").await).unwrap();
    assert_eq!(birth.device.as_str(), "ws-test");
    wait_for_status(&good, "a TLS session", |v| v.connected).await;
    stop_tx.send(()).unwrap();
    let offline: Status = decode(&next_on(&mut rx, "vigia/v1/up/ws-test/status").await).unwrap();
    // The online status may come first; the last one must be offline.
    let offline = if offline.online {
        decode::<Status>(&next_on(&mut rx, "vigia/v1/up/ws-test/status").await).unwrap()
    } else {
        offline
    };
    assert!(!offline.online);
    tokio::time::timeout(DEADLINE, agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
