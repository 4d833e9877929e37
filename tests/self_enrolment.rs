//! Self-enrolment end to end (issue 14): Mosquitto with its dynamic-security plugin, set
//! up by `broker-config/dynsec-setup` from the production config; a collector that makes
//! its own account at start; agents that have only the broker's address and a site's
//! token. An admin approves one in the console (a real Chromium): it connects with the
//! credentials sealed to it and its fault, found before the approval, arrives. Another is
//! refused and cannot publish; the approved one, revoked, is dropped and refused.
mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::webdriver::{Browser, BrowserOptions};
use common::*;
use serde_json::Value;

const ADMIN: &str = "vigia-admin";
const ADMIN_PASSWORD: &str = "plugin admin password";
const COLLECTOR_PASSWORD: &str = "collector broker password";
const PASSWORD: &str = "correct horse battery staple";

/// The production broker config, plain TCP on `port` in `dir`, moved to the plugin.
fn dynsec_broker(dir: &Path, port: u16) -> Proc {
    dynsec_broker_with(dir, port, |_| {})
}

/// The same, with `before_start` run between the move and the broker's start.
fn dynsec_broker_with(dir: &Path, port: u16, before_start: impl FnOnce(&Path)) -> Proc {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("broker-config");
    let conf = std::fs::read_to_string(root.join("mosquitto.conf"))
        .unwrap_or_else(|e| panic!("read mosquitto.conf: {e}"));
    // TLS is the broker tests' subject; here the listener is plain, everything else kept
    // (client ids tied to user names included).
    let conf: String = conf
        .lines()
        .filter(|l| {
            !["cafile", "certfile", "keyfile", "tls_version"]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .collect::<Vec<_>>()
        .join("\n")
        .replace("listener 8883", &format!("listener {port} 127.0.0.1"))
        .replace("/etc/mosquitto/", &format!("{}/", dir.display()))
        .replace("log_dest syslog", "log_dest stderr");
    // Installed where Debian's main file includes it, as the README says.
    let (main, conf_d) = debian_mosquitto_main(dir);
    let path = conf_d.join("vigia.conf");
    std::fs::write(&path, conf).unwrap_or_else(|e| panic!("write: {e}"));
    let mut setup = Command::new(root.join("dynsec-setup"))
        .args(["--conf", &path.display().to_string()])
        .args([
            "--state",
            &dir.join("dynamic-security.json").display().to_string(),
        ])
        .args(["--admin", ADMIN])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("dynsec-setup: {e}"));
    if let Some(mut i) = setup.stdin.take() {
        i.write_all(format!("{ADMIN_PASSWORD}\n").as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let out = setup.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "dynsec-setup: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    before_start(dir);
    let mut cmd = Command::new("mosquitto");
    cmd.arg("-c").arg(&main);
    let mut proc = Proc::spawn("mosquitto", cmd);
    poll("mosquitto to accept connections", || {
        if let Some(status) = proc.try_status() {
            panic!("mosquitto exited with {status}: {}", proc.output());
        }
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    proc
}

/// A collector config in `dir` on the broker at `port`, with the plugin's admin account.
fn plugin_collector_config(dir: &Path, port: u16) -> std::path::PathBuf {
    let config = dir.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{data}\"\n\n[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\n\
             username = \"vigia-collector\"\npassword = \"{COLLECTOR_PASSWORD}\"\n\n\
             [mqtt.dynamic_security]\nusername = \"{ADMIN}\"\npassword = \"{ADMIN_PASSWORD}\"\n\n\
             [http]\nlisten = \"127.0.0.1:0\"\n",
            data = dir.join("collector-data").display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    config
}

/// `mosquitto_pub` of one QoS 1 message over MQTT 5 (whose PUBACK says when the ACL
/// refused it); whether it connected, and what it said.
fn publish(port: u16, user: &str, password: &str, topic: &str, payload: &str) -> (bool, String) {
    let out = Command::new("mosquitto_pub")
        .args([
            "-V",
            "mqttv5",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
        ])
        .args(["-u", user, "-P", password, "-t", topic, "-m", payload])
        .output()
        .unwrap_or_else(|e| panic!("mosquitto_pub: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn request_of(c: &Collector, device: &str) -> Option<Value> {
    c.get("/api/enrolments")?["requests"]
        .as_array()?
        .iter()
        .find(|r| r["device"] == device)
        .cloned()
}

fn cli_stdin(c: &Collector, args: &[&str], stdin: &str) -> (i32, String) {
    let mut full = vec!["collector", "--api", c.http.as_str()];
    full.extend_from_slice(args);
    let mut child = vigia(&full)
        .env("VIGIA_TOKEN", &c.token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(format!("{stdin}\n").as_bytes());
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn an_agent_with_a_site_token_joins_once_approved_and_is_dropped_when_revoked() {
    if skip_without(&["mosquitto", "mosquitto_ctrl", "mosquitto_pub"]) {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let port = free_port();
    let _broker = dynsec_broker(d, port);

    let config = plugin_collector_config(d, port);
    let c = start_collector_with(&config);
    // A broker session from before self-enrolment was configured: the collector's
    // persistent session without the enrolment filter (taken out of it here). Started
    // again, the collector must subscribe it though the broker keeps the session.
    poll("the collector's first session", || {
        c.proc.output().contains("subscribed filter").then_some(())
    });
    drop(c);
    let out = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-i",
            "vigia-collector",
            "-c",
        ])
        .args(["-u", "vigia-collector", "-P", COLLECTOR_PASSWORD])
        // Exit once the broker has taken it (the unsubscription goes first).
        .args([
            "-U",
            "vigia/v1/enrol/+/+/request",
            "-t",
            "vigia/v1/up/+/+",
            "-E",
        ])
        .output()
        .unwrap_or_else(|e| panic!("mosquitto_sub: {e}"));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!said.contains("rror"), "{said}");
    let c = start_collector_with(&config);
    poll("the collector's session back", || {
        c.proc
            .output()
            .contains("session_present=true")
            .then_some(())
    });

    // A site's token, shown once.
    let (code, out) = c.cli(&["enrolment", "token", "--site", "bcn"]);
    assert_eq!(code, 0, "{out}");
    let token = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("bcn:"))
        .unwrap_or_else(|| panic!("no token in:\n{out}"))
        .to_string();

    // An agent with nothing but the broker's address and the token; its /var is full
    // from the start, so a fault waits in its spool while it waits for approval.
    let replay = d.join("readings.jsonl");
    append_lines(&replay, &disk_line("/var", 97), 3);
    let enrol = format!("[enrol]\ntoken = \"{token}\"\npoll = \"200ms\"\n");
    let broker = format!("mqtt://127.0.0.1:{port}");
    let a = start_agent(d, "ws-bcn-1", &broker, &replay, &enrol);
    let req = poll("the agent's request in the console's list", || {
        request_of(&c, "ws-bcn-1")
    });
    assert_eq!(req["decision"], "pending", "{req}");
    assert_eq!(req["site"], "bcn");
    let rid = req["request"].as_str().unwrap_or_default().to_string();
    // Not yet a device: nothing of it reached the workflow.
    assert!(c.device("ws-bcn-1").is_none());

    // An admin approves it in the console.
    let (code, out) = cli_stdin(
        &c,
        &[
            "user",
            "add",
            "jefa",
            "--role",
            "admin",
            "--name",
            "Jefa TI",
            "--password-stdin",
        ],
        PASSWORD,
    );
    assert_eq!(code, 0, "{out}");
    let b = Browser::start(BrowserOptions::default());
    b.goto(&format!("{}/enrolments", c.http));
    b.send_keys(&b.wait("#login-name"), "jefa");
    b.send_keys(&b.wait("#login-password"), PASSWORD);
    b.click(&b.wait("#login-submit"));
    let row = format!("tr[data-request=\"{rid}\"]");
    b.wait_visible(&format!("{row} button.approve"));
    let page = b.page_text();
    assert!(page.contains("ws-bcn-1") && page.contains("bcn"), "{page}");
    b.screenshot("enrolments-pending");
    b.click_css(&format!("{row} button.approve"));
    b.wait_text(&format!("{row} .decision"), "the approved state", |t| {
        t.contains("Approved")
    });
    b.screenshot("enrolments-approved");

    // The agent opened its sealed credentials, connected as itself, and its fault from
    // before the approval arrived.
    poll("the enrolled device's birth", || c.device("ws-bcn-1"));
    let incidents = poll("the fault found before approval", || {
        let v = device_incidents(&c, "ws-bcn-1");
        (!v.is_empty()).then_some(v)
    });
    assert!(
        incidents
            .iter()
            .any(|i| i["kind"] == "disk_space" && i["subject"] == "/var"),
        "{incidents:?}"
    );
    let creds_file = d.join("agent-ws-bcn-1-data/enrolment/credentials.json");
    let creds: Value = serde_json::from_str(
        &std::fs::read_to_string(&creds_file).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let password = creds["password"].as_str().unwrap_or_default().to_string();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&creds_file).map(|m| m.permissions().mode() & 0o777);
    assert_eq!(mode.ok(), Some(0o600));
    // Its account writes its own topics only.
    let own = publish(port, "ws-bcn-1", &password, "vigia/v1/up/ws-bcn-1/x", "{}");
    assert!(own.0 && !own.1.contains("Not authorized"), "{own:?}");
    let other = publish(
        port,
        "ws-bcn-1",
        &password,
        "vigia/v1/up/ws-bcn-2/birth",
        "{}",
    );
    assert!(other.1.contains("Not authorized"), "{other:?}");

    // A second agent is refused: told why, and it has no account to publish with.
    let b2 = start_agent(d, "ws-bcn-2", &broker, &replay, &enrol);
    let req2 = poll("the second request", || request_of(&c, "ws-bcn-2"));
    let rid2 = req2["request"].as_str().unwrap_or_default().to_string();
    let (code, out) = c.cli(&["enrolment", "refuse", &rid2, "--reason", "not one of ours"]);
    assert_eq!(code, 0, "{out}");
    poll("the refusal in the agent's status", || {
        agent_status(&b2.config).filter(|s| s.to_string().contains("not one of ours"))
    });
    let (ok, err) = publish(
        port,
        "ws-bcn-2",
        "anything",
        "vigia/v1/up/ws-bcn-2/event",
        "{}",
    );
    assert!(!ok, "a refused device connected: {err}");
    // With the site's token it may only ask to join: a birth under a device's name is
    // refused by the broker.
    let (_, secret) = token.split_once(':').unwrap_or_default();
    let forged = publish(
        port,
        "vigia-enrol-bcn",
        secret,
        "vigia/v1/up/ws-bcn-2/birth",
        "{}",
    );
    assert!(
        forged.0 && forged.1.contains("Not authorized"),
        "{forged:?}"
    );
    let (code, out) = c.cli(&["enrolment", "list"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("refused") && out.contains("approved"), "{out}");
    assert!(c.device("ws-bcn-2").is_none());

    // Reinstalled (its data directory gone): a new key asks under the same id. Approval
    // is refused while the old account exists, and replaces it when asked to.
    a.proc.terminate();
    std::fs::remove_dir_all(d.join("agent-ws-bcn-1-data")).unwrap_or_else(|e| panic!("{e}"));
    let a = start_agent_with(&a.config);
    let again = poll("the reinstalled agent's request", || {
        c.get("/api/enrolments")?["requests"]
            .as_array()?
            .iter()
            .find(|r| r["device"] == "ws-bcn-1" && r["request"] != rid.as_str())
            .cloned()
    });
    let rid2 = again["request"].as_str().unwrap_or_default().to_string();
    let (code, out) = c.cli(&["enrolment", "approve", &rid2]);
    assert!(code != 0 && out.contains("already has an account"), "{out}");
    let (ok, _) = publish(port, "ws-bcn-1", &password, "vigia/v1/up/ws-bcn-1/x", "{}");
    assert!(ok, "a refused replacement took the old account away");
    let (code, out) = c.cli(&["enrolment", "approve", &rid2, "--replace"]);
    assert_eq!(code, 0, "{out}");
    let (ok, err) = publish(port, "ws-bcn-1", &password, "vigia/v1/up/ws-bcn-1/x", "{}");
    assert!(
        !ok && err.contains("Not authorized"),
        "the old password: {err}"
    );
    poll("the reinstalled agent connected", || {
        agent_status(&a.config).filter(|s| s["connected"] == true)
    });
    let password: String = poll("its new credentials", || {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&creds_file).ok()?).ok()?;
        v["password"].as_str().map(str::to_string)
    });
    let old_req = poll("the old request revoked", || {
        c.get("/api/enrolments")?["requests"]
            .as_array()?
            .iter()
            .find(|r| r["request"] == rid.as_str() && r["decision"] == "revoked")
            .cloned()
    });
    assert_eq!(old_req["decided_by"], "admin");

    // Revoked: the connection is dropped at once and the account refused.
    let (code, out) = c.cli(&["enrolment", "revoke", "ws-bcn-1"]);
    assert_eq!(code, 0, "{out}");
    let (ok, err) = publish(port, "ws-bcn-1", &password, "vigia/v1/up/ws-bcn-1/x", "{}");
    assert!(!ok, "a revoked device connected");
    assert!(err.contains("Not authorized"), "{err}");
    poll("the revoked agent to lose its connection", || {
        agent_status(&a.config).filter(|s| s["connected"] == false)
    });
    // Refused at its reconnections, it asks the collector again and is told why.
    let status = poll("the revocation in the agent's status", || {
        agent_status(&a.config).filter(|s| s.to_string().contains("revoked"))
    });
    assert_eq!(status["connected"], false, "{status}");
    let req = poll("the revoked state", || {
        request_of(&c, "ws-bcn-1").filter(|r| r["decision"] == "revoked")
    });
    // Dropped by the plugin without its Last Will, it is offline in the console all the
    // same.
    let dev = c.device("ws-bcn-1").unwrap_or_default();
    assert_eq!(dev["online"], false, "{dev}");
    assert_eq!(req["decided_by"], "admin");
    drop(b);
}

/// `device enroll --from devices.csv` through the plugin (issue 14): checked against the
/// broker's accounts first (a malformed row, a reserved name and the broker's own names
/// are reported by line, and nothing is created); then 200 accounts made in one run,
/// usable at once with no reload, each writing only its own topics; a real agent with
/// its written config reaches the collector; `--rotate` gives new passwords that work at
/// once while the old ones stop.
#[test]
fn a_fleet_enrolled_from_a_csv_into_the_plugin_connects_at_once() {
    if skip_without(&["mosquitto", "mosquitto_ctrl", "mosquitto_pub"]) {
        return;
    }
    const N: usize = 200;
    let dir = tempdir();
    let d = dir.path();
    let port = free_port();
    let _broker = dynsec_broker(d, port);
    let config = plugin_collector_config(d, port);
    // The collector makes its own account at start: a name the file may not take.
    let c = start_collector_with(&config);
    let (code, out) = c.cli(&["enrolment", "token", "--site", "bog"]);
    assert_eq!(code, 0, "{out}");
    // Its account and role were set up at start without a complaint from the plugin.
    let log = c.proc.output();
    assert!(log.contains("collector role in place"), "{log}");
    let clients = || {
        let out = Command::new("mosquitto_ctrl")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-u", ADMIN, "-P", ADMIN_PASSWORD, "dynsec", "listClients"])
            .output()
            .unwrap_or_else(|e| panic!("mosquitto_ctrl: {e}"));
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        v.sort();
        v
    };
    let before = clients();
    assert!(
        before.contains(&"vigia-collector".to_string())
            && before.contains(&"vigia-enrol-bog".to_string()),
        "{before:?}"
    );
    let enroll = |csv: &Path, out: &str, more: &[&str]| {
        let cfg = config.display().to_string();
        let csv = csv.display().to_string();
        let out = d.join(out).display().to_string();
        let broker = format!("mqtt://127.0.0.1:{port}");
        let mut args = vec![
            "collector",
            "--config",
            &cfg,
            "device",
            "enroll",
            "--from",
            &csv,
            "--out",
            &out,
            "--broker-url",
            &broker,
            "--ca-file",
            "",
        ];
        args.extend_from_slice(more);
        let o = vigia(&args)
            .output()
            .unwrap_or_else(|e| panic!("device enroll: {e}"));
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    let ids: Vec<String> = (0..N).map(|i| format!("ws-{i:04}")).collect();
    let rows: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| format!("{id},{id}.example.org,bog,desk,user{i}"))
        .collect();
    let header = "id,hostname,site,tags,owner";

    // A bad id (line 152): reported, nothing created.
    let mut bad = rows.clone();
    bad[150] = "ws 150,,bog,,".into();
    let bad_csv = d.join("bad.csv");
    std::fs::write(&bad_csv, format!("{header}\n{}\n", bad.join("\n")))
        .unwrap_or_else(|e| panic!("{e}"));
    let (ok, out) = enroll(&bad_csv, "configs-bad", &[]);
    assert!(!ok && out.contains("line 152:"), "{out}");
    // The collector's account (line 181) and a broker name (line 31): reported by line
    // once the file parses.
    bad[150] = rows[150].clone();
    bad[179] = "vigia-collector,,bog,,".into();
    bad[29] = "vigia-enrol-x,,bog,,".into();
    std::fs::write(&bad_csv, format!("{header}\n{}\n", bad.join("\n")))
        .unwrap_or_else(|e| panic!("{e}"));
    let (ok, out) = enroll(&bad_csv, "configs-bad", &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("line 181:") && out.contains("reserved") && out.contains("line 31:"),
        "{out}"
    );
    assert!(out.contains("nothing was created"), "{out}");
    assert_eq!(clients(), before, "a refused run made accounts");
    assert!(!d.join("configs-bad").exists());

    // The whole fleet: usable at once, no reload.
    let csv = d.join("devices.csv");
    std::fs::write(&csv, format!("{header}\n{}\n", rows.join("\n")))
        .unwrap_or_else(|e| panic!("{e}"));
    let (ok, out) = enroll(&csv, "configs", &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains("200 new") && out.contains("dynamic-security plugin"),
        "{out}"
    );
    let after = clients();
    assert_eq!(after.len(), before.len() + N, "{after:?}");
    let password_of = |out: &str, id: &str| {
        std::fs::read_to_string(d.join(format!("{out}/{id}.toml")))
            .unwrap_or_else(|e| panic!("{id}: {e}"))
            .lines()
            .find_map(|l| l.strip_prefix("password = \""))
            .map(|p| p.trim_end_matches('"').to_string())
            .unwrap_or_else(|| panic!("no password for {id}"))
    };
    for (i, id) in ids.iter().enumerate() {
        let pw = password_of("configs", id);
        let own = publish(port, id, &pw, &format!("vigia/v1/up/{id}/x"), "{}");
        assert!(own.0 && !own.1.contains("Not authorized"), "{id}: {own:?}");
        // Every tenth, its neighbour's topic too (a process each: the whole fleet is
        // checked on its own topic, the refusal on a sample).
        if i % 10 == 0 {
            let next = &ids[(i + 1) % N];
            let other = publish(port, id, &pw, &format!("vigia/v1/up/{next}/birth"), "{}");
            assert!(other.1.contains("Not authorized"), "{id}: {other:?}");
        }
    }

    // A real agent with its written config reaches the collector.
    let written =
        std::fs::read_to_string(d.join("configs/ws-0007.toml")).unwrap_or_else(|e| panic!("{e}"));
    let replay = d.join("readings.jsonl");
    append_lines(&replay, &disk_line("/var", 97), 3);
    let agent_cfg = d.join("agent-ws-0007.toml");
    std::fs::write(
        &agent_cfg,
        format!(
            "interval = \"50ms\"\ndata_dir = \"{}\"\n{written}\n[detect]\nreplay = \"{}\"\n",
            d.join("agent-ws-0007-data").display(),
            replay.display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let _agent = start_agent_with(&agent_cfg);
    poll("the enrolled agent's birth", || c.device("ws-0007"));
    poll("its fault", || {
        device_incidents(&c, "ws-0007")
            .into_iter()
            .find(|i| i["kind"] == "disk_space" && i["subject"] == "/var")
    });

    // Again without --rotate: every line refused, nothing changed.
    let (ok, out) = enroll(&csv, "configs-again", &[]);
    assert!(
        !ok && out.contains("line 2:") && out.contains("already enrolled"),
        "{out}"
    );
    assert!(!d.join("configs-again").exists());
    // Rotated: the new password works at once, the old one no longer.
    let two = d.join("two.csv");
    std::fs::write(&two, format!("{header}\n{}\n{}\n", rows[1], rows[2]))
        .unwrap_or_else(|e| panic!("{e}"));
    let old = password_of("configs", "ws-0001");
    let (ok, out) = enroll(&two, "configs-rotated", &["--rotate"]);
    assert!(ok && out.contains("2 given a new password"), "{out}");
    let new = password_of("configs-rotated", "ws-0001");
    assert_ne!(old, new);
    let (ok, err) = publish(port, "ws-0001", &old, "vigia/v1/up/ws-0001/x", "{}");
    assert!(
        !ok && err.contains("Not authorized"),
        "the old password: {err}"
    );
    let (ok, err) = publish(port, "ws-0001", &new, "vigia/v1/up/ws-0001/x", "{}");
    assert!(ok, "the new password: {err}");
    assert_eq!(clients().len(), before.len() + N);

    // Revocation of a device enrolled from the file is the plugin's, at once.
    let (code, out) = c.cli(&["enrolment", "revoke", "ws-0002"]);
    assert_eq!(code, 0, "{out}");
    let pw = password_of("configs-rotated", "ws-0002");
    let (ok, _) = publish(port, "ws-0002", &pw, "vigia/v1/up/ws-0002/x", "{}");
    assert!(!ok, "a revoked device connected");
    let o = vigia(&[
        "collector",
        "--config",
        &config.display().to_string(),
        "device",
        "revoke",
        "ws-0003",
    ])
    .output()
    .unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("enrolment revoke"),
        "{err}"
    );
}

/// A fleet enrolled in the password file moves to the plugin with its passwords
/// (`device import-passwd` between `dynsec-setup` and the restart): every device
/// connects as before and still reaches only its own topics; the collector's account and
/// hashes the plugin cannot take are left out and said so.
#[test]
fn devices_of_the_password_file_keep_their_passwords_in_the_plugin() {
    if skip_without(&[
        "mosquitto",
        "mosquitto_ctrl",
        "mosquitto_pub",
        "mosquitto_passwd",
    ]) {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let port = free_port();
    let passwd = d.join("vigia.passwd");
    let devices = [
        ("ws-0001", "first password 1"),
        ("ws-0002", "second password 2"),
        ("srv-db1", "third password 3"),
    ];
    for (i, (user, pw)) in std::iter::once(("vigia-collector", COLLECTOR_PASSWORD))
        .chain(devices)
        .enumerate()
    {
        let mut cmd = Command::new("mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let out = cmd
            .args(["-b", &passwd.display().to_string(), user, pw])
            .output()
            .unwrap_or_else(|e| panic!("mosquitto_passwd: {e}"));
        assert!(out.status.success(), "{out:?}");
    }
    // A hash from before Mosquitto 2, which the plugin cannot hold.
    let mut text = std::fs::read_to_string(&passwd).unwrap_or_else(|e| panic!("{e}"));
    text.push_str("ws-old:$6$c2FsdA==$aGFzaA==\n");
    std::fs::write(&passwd, text).unwrap_or_else(|e| panic!("{e}"));

    let mut said = String::new();
    let _broker = dynsec_broker_with(d, port, |d| {
        let o = vigia(&[
            "collector",
            "device",
            "import-passwd",
            "--passwd-file",
            &d.join("vigia.passwd").display().to_string(),
            "--state",
            &d.join("dynamic-security.json").display().to_string(),
            "--acl",
            &d.join("vigia.acl").display().to_string(),
        ])
        .output()
        .unwrap_or_else(|e| panic!("import-passwd: {e}"));
        said = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "{said}");
    });
    assert!(said.contains("moved 3 device accounts"), "{said}");
    assert!(
        said.contains("left out vigia-collector") && said.contains("left out ws-old"),
        "{said}"
    );
    for (i, (user, pw)) in devices.iter().enumerate() {
        let own = publish(port, user, pw, &format!("vigia/v1/up/{user}/x"), "{}");
        assert!(
            own.0 && !own.1.contains("Not authorized"),
            "{user}: {own:?}"
        );
        let next = devices[(i + 1) % devices.len()].0;
        let other = publish(port, user, pw, &format!("vigia/v1/up/{next}/birth"), "{}");
        assert!(other.1.contains("Not authorized"), "{user}: {other:?}");
        let (ok, _) = publish(
            port,
            user,
            "a wrong password",
            &format!("vigia/v1/up/{user}/x"),
            "{}",
        );
        assert!(!ok, "{user} connected with a wrong password");
    }
}
