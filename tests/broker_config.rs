//! The production broker files in `broker-config/` work as documented: a real Mosquitto
//! runs `mosquitto.conf` and `vigia.acl` (paths and port rewritten for a temp dir), with
//! TLS from a CA made here and device accounts made by `enroll-device`. Anonymous and
//! wrong-password clients are refused; a device can write only its own up topics and read
//! only its own down topics.
//!
//! Needs `mosquitto`, `mosquitto_passwd` and `openssl`; skipped with a message when they
//! are missing outside CI, and a failure in CI (`CI=true`), which installs them.
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS,
    TlsConfiguration, Transport,
};
use tokio::sync::mpsc;

/// The production config with its paths and port moved into `dir`, installed into the
/// directory Debian's main file includes; returns the main file to start Mosquitto with.
fn rewrite_config(dir: &Path, port: u16) -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("broker-config");
    let conf = std::fs::read_to_string(root.join("mosquitto.conf"))
        .unwrap_or_else(|e| panic!("read mosquitto.conf: {e}"));
    let d = dir.display();
    let conf = conf
        .replace("listener 8883", &format!("listener {port} 127.0.0.1"))
        .replace("/etc/mosquitto/certs/", &format!("{d}/"))
        .replace("/etc/mosquitto/vigia.passwd", &format!("{d}/vigia.passwd"))
        .replace("/etc/mosquitto/vigia.acl", &format!("{d}/vigia.acl"))
        .replace("log_dest syslog", "log_dest stderr");
    let unrewritten = conf
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .any(|l| l.contains("/etc/") || l.contains("/var/"));
    assert!(!unrewritten, "unrewritten path:\n{conf}");
    std::fs::copy(root.join("vigia.acl"), dir.join("vigia.acl"))
        .unwrap_or_else(|e| panic!("copy acl: {e}"));
    let (main, conf_d) = debian_mosquitto_main(dir);
    std::fs::write(conf_d.join("vigia.conf"), conf).unwrap_or_else(|e| panic!("write: {e}"));
    main
}

/// `enroll-device` with `mosquitto_passwd` replaced by a shim that records its arguments
/// and umask (in `mosquitto_passwd.log`) before running the real one.
fn enroll_cmd(dir: &Path, args: &[&str]) -> Command {
    let shim_dir = dir.join("shim");
    if !shim_dir.exists() {
        std::fs::create_dir_all(&shim_dir).unwrap_or_else(|e| panic!("{e}"));
        let real = String::from_utf8_lossy(
            &Command::new("sh")
                .args(["-c", "command -v mosquitto_passwd"])
                .output()
                .unwrap_or_else(|e| panic!("{e}"))
                .stdout,
        )
        .trim()
        .to_string();
        let shim = shim_dir.join("mosquitto_passwd");
        std::fs::write(
            &shim,
            format!(
                "#!/bin/sh\necho \"argv: $*\" >> '{}'\necho \"umask: $(umask)\" >> '{}'\nexec '{real}' \"$@\"\n",
                dir.join("mosquitto_passwd.log").display(),
                dir.join("mosquitto_passwd.log").display()
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("broker-config/enroll-device");
    let mut cmd = Command::new(&script);
    let path = format!(
        "{}:{}",
        shim_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    cmd.env("PATH", path)
        .args(args)
        .arg(dir.join("vigia.passwd"));
    cmd
}

/// Runs `enroll-device` and returns the password it generated.
fn enroll(dir: &Path, id: &str) -> String {
    let out = enroll_cmd(dir, &[id])
        .output()
        .unwrap_or_else(|e| panic!("enroll-device: {e}"));
    enrolled_password(id, &out)
}

struct Client {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
}

fn options(id: &str, port: u16, ca: &[u8], creds: Option<(&str, &str)>) -> MqttOptions {
    let mut o = MqttOptions::new(id, "localhost", port);
    o.set_keep_alive(Duration::from_secs(5));
    if let Some((u, p)) = creds {
        o.set_credentials(u, p);
    }
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
        ca: ca.to_vec(),
        alpn: None,
        client_auth: None,
    }));
    o
}

/// Connects and returns the ConnAck outcome: Ok(()) or the refusal code.
async fn first_connack(ev: &mut EventLoop) -> Result<(), ConnectReturnCode> {
    loop {
        match tokio::time::timeout(DEADLINE, ev.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(ConnectionError::ConnectionRefused(code))) => return Err(code),
            Ok(Err(e)) => panic!("connection error: {e:?}"),
            Err(_) => panic!("no ConnAck within {DEADLINE:?}"),
        }
    }
}

async fn connect(id: &str, port: u16, ca: &[u8], creds: (&str, &str)) -> Client {
    let (client, mut ev) = AsyncClient::new(options(id, port, ca, Some(creds)), 100);
    first_connack(&mut ev)
        .await
        .unwrap_or_else(|c| panic!("{id} refused: {c:?}"));
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = ev.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event {
                let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
            }
        }
    });
    Client { client, rx }
}

async fn subscribe(c: &Client, filter: &str) {
    c.client
        .subscribe(filter, QoS::AtLeastOnce)
        .await
        .unwrap_or_else(|e| panic!("subscribe: {e}"));
}

async fn publish(c: &Client, topic: &str, body: &str) {
    c.client
        .publish(topic, QoS::AtLeastOnce, false, body.as_bytes().to_vec())
        .await
        .unwrap_or_else(|e| panic!("publish: {e}"));
}

/// Receives messages until one has payload `marker`; returns the ones before it.
async fn until_marker(c: &mut Client, marker: &str) -> Vec<(String, String)> {
    let mut before = Vec::new();
    loop {
        let (topic, payload) = tokio::time::timeout(DEADLINE, c.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("marker {marker} not received; got {before:?}"))
            .unwrap_or_else(|| panic!("client closed waiting for {marker}; got {before:?}"));
        let payload = String::from_utf8_lossy(&payload).to_string();
        if payload == marker {
            return before;
        }
        before.push((topic, payload));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_broker_config_pins_devices_to_their_topics() {
    if skip_without(&["mosquitto", "mosquitto_passwd", "openssl"]) {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    make_pki(d, None, "");
    let port = free_port();
    let conf = rewrite_config(d, port);
    let pw_a = enroll(d, "ws-a");
    let pw_b = enroll(d, "ws-b");
    sh(
        d,
        "mosquitto_passwd -b vigia.passwd vigia-collector collector-secret",
    );
    // enroll-device refuses ids that would break the topic scheme.
    let bad =
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("broker-config/enroll-device"))
            .args(["ws/+", &d.join("vigia.passwd").display().to_string()])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bad.status.code(), Some(2));
    // ...and the collector's own account.
    let out = enroll_cmd(d, &["vigia-collector"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An enrolled device keeps its password unless asked to rotate it.
    let line = |id: &str| {
        std::fs::read_to_string(d.join("vigia.passwd"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with(&format!("{id}:")))
            .map(str::to_owned)
    };
    let before = line("ws-a");
    let out = enroll_cmd(d, &["ws-a"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(line("ws-a"), before, "a second enroll rotated the password");
    let pw_c = enroll(d, "ws-c");
    let rotated = String::from_utf8_lossy(
        &enroll_cmd(d, &["--rotate", "ws-c"])
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
            .stdout,
    )
    .to_string();
    assert!(
        !rotated.contains(&pw_c) && rotated.contains("password = "),
        "{rotated}"
    );
    // The passwords never were in a process's arguments, and the file never readable by
    // others: mosquitto_passwd ran under umask 027.
    let log = std::fs::read_to_string(d.join("mosquitto_passwd.log")).unwrap_or_default();
    for pw in [&pw_a, &pw_b, &pw_c] {
        assert!(!log.contains(pw.as_str()), "a password in argv:\n{log}");
    }
    assert!(
        log.lines()
            .filter(|l| l.starts_with("umask"))
            .all(|l| l == "umask: 0027"),
        "{log}"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("vigia.passwd"))
            .unwrap_or_else(|e| panic!("{e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640, "{mode:o}");
    }

    let mut cmd = Command::new("mosquitto");
    cmd.arg("-c").arg(&conf);
    let mut broker = Proc::spawn("mosquitto", cmd);
    poll("mosquitto listening", || {
        if let Some(status) = broker.try_status() {
            panic!("mosquitto exited with {status}:\n{}", broker.output());
        }
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let ca = std::fs::read(d.join("ca.crt")).unwrap_or_else(|e| panic!("{e}"));

    // Anonymous and wrong-password clients are refused.
    let (_c, mut ev) = AsyncClient::new(options("anon", port, &ca, None), 10);
    assert!(
        first_connack(&mut ev).await.is_err(),
        "anonymous client was accepted"
    );
    let (_c, mut ev) = AsyncClient::new(options("ws-a", port, &ca, Some(("ws-a", "wrong"))), 10);
    assert!(
        first_connack(&mut ev).await.is_err(),
        "wrong password was accepted"
    );

    let mut collector = connect(
        "vigia-collector",
        port,
        &ca,
        ("vigia-collector", "collector-secret"),
    )
    .await;
    subscribe(&collector, "vigia/v1/up/#").await;
    let mut a = connect("ws-a", port, &ca, ("ws-a", &pw_a)).await;
    subscribe(&a, "vigia/v1/down/ws-a/#").await;
    subscribe(&a, "vigia/v1/down/ws-b/#").await; // allowed to ask, must receive nothing
    let b = connect("ws-b", port, &ca, ("ws-b", &pw_b)).await;

    // ws-a writes its own topic (delivered) and ws-b's (dropped by the ACL); the marker,
    // published last by the same client, proves anything allowed would have arrived.
    publish(&a, "vigia/v1/up/ws-a/event", "a-own").await;
    publish(&a, "vigia/v1/up/ws-b/event", "a-forged").await;
    publish(&a, "vigia/v1/down/ws-a/cmd", "a-writes-down").await;
    publish(&a, "vigia/v1/up/ws-a/event", "marker-1").await;
    let got = until_marker(&mut collector, "marker-1").await;
    assert_eq!(
        got,
        vec![("vigia/v1/up/ws-a/event".to_string(), "a-own".to_string())]
    );

    // The collector writes both devices' down topics; ws-a hears only its own.
    publish(&collector, "vigia/v1/down/ws-b/cmd", "for-b").await;
    publish(&collector, "vigia/v1/down/ws-a/cmd", "for-a").await;
    publish(&collector, "vigia/v1/down/ws-a/cmd", "marker-2").await;
    let got = until_marker(&mut a, "marker-2").await;
    assert_eq!(
        got,
        vec![("vigia/v1/down/ws-a/cmd".to_string(), "for-a".to_string())]
    );

    // ws-b's own up topic works too.
    publish(&b, "vigia/v1/up/ws-b/status", "b-own").await;
    publish(&b, "vigia/v1/up/ws-b/status", "marker-3").await;
    let got = until_marker(&mut collector, "marker-3").await;
    assert_eq!(
        got,
        vec![("vigia/v1/up/ws-b/status".to_string(), "b-own".to_string())]
    );

    // A device connecting with the collector's client id and a persistent session does
    // not take the collector's session over: the broker gives it its own username as id.
    let mut o = options("vigia-collector", port, &ca, Some(("ws-b", &pw_b)));
    o.set_clean_session(false);
    let (_thief, mut ev) = AsyncClient::new(o, 10);
    first_connack(&mut ev)
        .await
        .unwrap_or_else(|c| panic!("ws-b refused: {c:?}"));
    tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    publish(&a, "vigia/v1/up/ws-a/event", "after-takeover").await;
    publish(&a, "vigia/v1/up/ws-a/event", "marker-4").await;
    let got = until_marker(&mut collector, "marker-4").await;
    assert_eq!(
        got,
        vec![(
            "vigia/v1/up/ws-a/event".to_string(),
            "after-takeover".to_string()
        )],
        "the collector lost its session to a device"
    );
    drop(broker);
}

/// Every name in `dir` whose name starts with a dot: what a failed run could leave behind.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

fn fleet_enroll(d: &Path, csv: &Path, out: &str) -> std::process::Output {
    vigia(&[
        "collector",
        "device",
        "enroll",
        "--from",
        &csv.display().to_string(),
        "--out",
        &d.join(out).display().to_string(),
        "--broker-url",
        "mqtts://localhost:8883",
        "--ca-file",
        &d.join("ca.crt").display().to_string(),
        "--passwd-file",
        &d.join("vigia.passwd").display().to_string(),
        "--acl",
        &d.join("vigia.acl").display().to_string(),
    ])
    .output()
    .unwrap_or_else(|e| panic!("device enroll: {e}"))
}

/// `vigia-collector device enroll --from devices.csv`: a malformed row is reported with its
/// line number and nothing is created; then 200 devices get their accounts in one run
/// against a real Mosquitto on the production files, and each connects with the config
/// written for it (read by the agent's own config loader) and reaches only its own topics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::unwrap_used)]
async fn a_fleet_enrolled_from_a_csv_reaches_only_its_own_topics() {
    use std::os::unix::fs::PermissionsExt;
    if skip_without(&["mosquitto", "mosquitto_passwd", "openssl"]) {
        return;
    }
    const N: usize = 200;
    let dir = tempdir();
    let d = dir.path();
    make_pki(d, None, "");
    let port = free_port();
    let conf = rewrite_config(d, port);
    sh(
        d,
        "umask 027; mosquitto_passwd -c -b vigia.passwd vigia-collector collector-secret",
    );
    let mut cmd = Command::new("mosquitto");
    cmd.arg("-c").arg(&conf);
    let broker = Proc::spawn("mosquitto", cmd);
    poll("mosquitto to accept connections", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });

    let ids: Vec<String> = (0..N).map(|i| format!("ws-{i:04}")).collect();
    let rows: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            format!(
                "{id},{id}.example.org,{},desk;floor-{},user{i}",
                ["bogota", "medellin"][i % 2],
                i % 5
            )
        })
        .collect();
    let header = "id,hostname,site,tags,owner";
    let passwd_before = std::fs::read(d.join("vigia.passwd")).unwrap_or_default();

    // Malformed rows (a bad id on line 152, the collector's account on line 181) leave
    // everything as it was and are reported by line.
    let mut bad = rows.clone();
    bad[150] = "ws 150,ws-150.example.org,bogota,,".into();
    bad[179] = "vigia-collector,collector.example.org,,,".into();
    let bad_csv = d.join("bad.csv");
    std::fs::write(&bad_csv, format!("{header}\n{}\n", bad.join("\n"))).unwrap();
    let out = fleet_enroll(d, &bad_csv, "configs-bad");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a malformed file was accepted");
    assert!(err.contains("line 152:"), "{err}");
    assert!(
        err.contains("nothing was created"),
        "parse errors come first: {err}"
    );
    // The reserved name is found once the file parses.
    bad[150] = rows[150].clone();
    std::fs::write(&bad_csv, format!("{header}\n{}\n", bad.join("\n"))).unwrap();
    let out = fleet_enroll(d, &bad_csv, "configs-bad");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("line 181:") && err.contains("reserved"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(d.join("vigia.passwd")).unwrap_or_default(),
        passwd_before,
        "a refused run changed the password file"
    );
    assert!(
        !d.join("configs-bad").exists(),
        "a refused run wrote configs"
    );
    assert_eq!(leftovers(d), Vec::<String>::new());

    // The whole fleet in one run.
    let csv = d.join("devices.csv");
    std::fs::write(&csv, format!("{header}\n{}\n", rows.join("\n"))).unwrap();
    let out = fleet_enroll(d, &csv, "configs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passwd = std::fs::read_to_string(d.join("vigia.passwd")).unwrap_or_default();
    assert_eq!(passwd.lines().count(), N + 1, "{passwd}");
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&d.join("vigia.passwd")), 0o640);
    assert_eq!(mode(&d.join("configs")), 0o700);
    let index = std::fs::read_to_string(d.join("configs/index.csv")).unwrap();
    assert_eq!(index.lines().count(), N + 1);
    assert!(
        index
            .lines()
            .any(|l| l == "ws-0007.example.org,ws-0007,medellin,user7,ws-0007.toml"),
        "{index}"
    );
    for id in &ids {
        let text = std::fs::read_to_string(d.join(format!("configs/{id}.toml"))).unwrap();
        let pw = text
            .lines()
            .find_map(|l| l.strip_prefix("password = \""))
            .unwrap_or_else(|| panic!("no password for {id}"));
        assert!(
            !passwd.contains(pw.trim_end_matches('"')),
            "plain password in the file"
        );
    }
    // Enrolled again without --rotate: refused, every line named, nothing changed.
    let out = fleet_enroll(d, &csv, "configs-again");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("line 2:") && err.contains(&format!("line {}:", N + 1)),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("vigia.passwd")).unwrap_or_default(),
        passwd
    );
    assert!(!d.join("configs-again").exists());

    // Mosquitto reads the new accounts on a reload.
    sh(d, &format!("kill -HUP {}", broker.pid()));
    let ca = std::fs::read(d.join("ca.crt")).unwrap();
    let first_pw = std::fs::read_to_string(d.join("configs/ws-0000.toml"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("password = \""))
        .map(|p| p.trim_end_matches('"').to_string())
        .unwrap();
    let mut pause = Duration::from_millis(10);
    let reload_deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let (_c, mut ev) = AsyncClient::new(
            options("ws-0000", port, &ca, Some(("ws-0000", &first_pw))),
            10,
        );
        if first_connack(&mut ev).await.is_ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < reload_deadline,
            "Mosquitto never took the new accounts"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
    let mut collector = connect(
        "vigia-collector",
        port,
        &ca,
        ("vigia-collector", "collector-secret"),
    )
    .await;
    subscribe(&collector, "vigia/v1/up/#").await;

    // Every device, with the config written for it (as the agent reads it): it subscribes
    // to its neighbour's down topics and its own, then writes a forged message under its
    // neighbour's id and one under its own. One connection's packets are handled in order,
    // so once the collector has every device's own message, every subscription is in
    // place and every forged message would have arrived.
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(20));
    let mut tasks = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let path = d.join(format!("configs/{id}.toml"));
        assert_eq!(mode(&path), 0o600, "{id}");
        let cfg = vigia_agent::config::Config::load(&path)
            .unwrap_or_else(|e| panic!("the agent refuses {}: {e}", path.display()));
        assert_eq!(cfg.device.as_str(), id);
        assert_eq!(cfg.tags.len(), 3, "{id}: site, desk, floor");
        assert!(cfg.mqtt.broker.tls && cfg.mqtt.broker.host == "localhost");
        let (user, pw) = cfg.mqtt.credentials.clone().unwrap_or_default();
        let ca_file = std::fs::read(cfg.mqtt.ca_file.clone().unwrap_or_default()).unwrap();
        let (sem, id, next) = (sem.clone(), id.clone(), ids[(i + 1) % N].clone());
        tasks.push(tokio::spawn(async move {
            let permit = sem.acquire_owned().await.unwrap();
            let mut device = connect(&id, port, &ca_file, (&user, &pw)).await;
            subscribe(&device, &format!("vigia/v1/down/{next}/#")).await;
            subscribe(&device, &format!("vigia/v1/down/{id}/#")).await;
            publish(
                &device,
                &format!("vigia/v1/up/{next}/event"),
                &format!("forged by {id}"),
            )
            .await;
            publish(
                &device,
                &format!("vigia/v1/up/{id}/event"),
                &format!("own {id}"),
            )
            .await;
            drop(permit);
            let got = until_marker(&mut device, &format!("down {id}")).await;
            let mine = format!("vigia/v1/down/{id}/");
            assert!(
                got.iter().all(|(t, _)| t.starts_with(&mine)),
                "{id} read another device's topics: {got:?}"
            );
        }));
    }
    let mut own = std::collections::BTreeSet::new();
    while own.len() < N {
        let (topic, payload) = tokio::time::timeout(DEADLINE, collector.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{} of {N} devices published", own.len()))
            .unwrap_or_else(|| panic!("collector connection closed"));
        let payload = String::from_utf8_lossy(&payload).to_string();
        let id = payload
            .strip_prefix("own ")
            .unwrap_or_else(|| panic!("{topic}: {payload:?} got through"));
        assert_eq!(topic, format!("vigia/v1/up/{id}/event"));
        own.insert(id.to_string());
    }
    // To each device's neighbour, then to the device: it must get only the second.
    for (i, id) in ids.iter().enumerate() {
        let next = &ids[(i + 1) % N];
        publish(
            &collector,
            &format!("vigia/v1/down/{next}/cmd"),
            &format!("for {next}"),
        )
        .await;
        publish(
            &collector,
            &format!("vigia/v1/down/{id}/cmd"),
            &format!("down {id}"),
        )
        .await;
    }
    for t in tasks {
        t.await.unwrap_or_else(|e| panic!("device task: {e}"));
    }
}

/// `vigia-collector device revoke`: a refused revocation (an id not enrolled) changes
/// nothing; a revoked device's open connection is dropped at Mosquitto's reload and it
/// cannot connect again, while the devices not revoked keep connecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::unwrap_used)]
async fn a_revoked_device_is_dropped_at_the_reload_and_refused() {
    if skip_without(&["mosquitto", "mosquitto_passwd", "openssl"]) {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    make_pki(d, None, "");
    let port = free_port();
    let conf = rewrite_config(d, port);
    sh(
        d,
        "umask 027; mosquitto_passwd -c -b vigia.passwd vigia-collector collector-secret",
    );
    let csv = d.join("devices.csv");
    std::fs::write(&csv, "id\nws-1\nws-2\n").unwrap();
    let out = fleet_enroll(d, &csv, "configs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cmd = Command::new("mosquitto");
    cmd.arg("-c").arg(&conf);
    let broker = Proc::spawn("mosquitto", cmd);
    poll("mosquitto to accept connections", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let ca = std::fs::read(d.join("ca.crt")).unwrap();
    let password = |id: &str| {
        std::fs::read_to_string(d.join(format!("configs/{id}.toml")))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("password = \""))
            .map(|p| p.trim_end_matches('"').to_string())
            .unwrap()
    };
    let (pw1, pw2) = (password("ws-1"), password("ws-2"));
    let mut ws1 = connect("ws-1", port, &ca, ("ws-1", &pw1)).await;
    let revoke = |ids: &[&str]| {
        let mut args = vec!["collector", "device", "revoke"];
        args.extend_from_slice(ids);
        let passwd = d.join("vigia.passwd").display().to_string();
        let acl = d.join("vigia.acl").display().to_string();
        args.extend_from_slice(&["--passwd-file", &passwd, "--acl", &acl]);
        vigia(&args).output().unwrap()
    };

    // A typo among the ids, or the collector's account: nothing is revoked.
    let before = std::fs::read(d.join("vigia.passwd")).unwrap();
    let out = revoke(&["ws-1", "ws-9"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("ws-9"), "{err}");
    let out = revoke(&["vigia-collector"]);
    assert!(!out.status.success());
    assert_eq!(std::fs::read(d.join("vigia.passwd")).unwrap(), before);
    assert_eq!(leftovers(d), Vec::<String>::new());

    let out = revoke(&["ws-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passwd = std::fs::read_to_string(d.join("vigia.passwd")).unwrap();
    assert!(!passwd.lines().any(|l| l.starts_with("ws-1:")), "{passwd}");
    assert!(passwd.lines().any(|l| l.starts_with("ws-2:")), "{passwd}");
    sh(d, &format!("kill -HUP {}", broker.pid()));

    // The open connection ends (the receiver closes when its event loop fails).
    loop {
        match tokio::time::timeout(DEADLINE, ws1.rx.recv()).await {
            Ok(None) => break,
            Ok(Some(_)) => {}
            Err(_) => panic!("ws-1 still connected {DEADLINE:?} after the reload"),
        }
    }
    let (_c, mut ev) = AsyncClient::new(options("ws-1", port, &ca, Some(("ws-1", &pw1))), 10);
    let refused = first_connack(&mut ev).await;
    assert!(
        matches!(
            refused,
            Err(ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized)
        ),
        "revoked ws-1 connected: {refused:?}"
    );
    connect("ws-2", port, &ca, ("ws-2", &pw2)).await;
}
