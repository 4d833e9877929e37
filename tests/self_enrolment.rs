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
        .replace("/var/lib/mosquitto/", &format!("{}/", dir.display()))
        .replace("log_dest syslog", "log_dest stderr")
        + "\nuser root\n";
    let path = dir.join("vigia.conf");
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
    let mut cmd = Command::new("mosquitto");
    cmd.arg("-c").arg(&path);
    let mut proc = Proc::spawn("mosquitto", cmd);
    poll("mosquitto to accept connections", || {
        if let Some(status) = proc.try_status() {
            panic!("mosquitto exited with {status}: {}", proc.output());
        }
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    proc
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

    let config = d.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{data}\"\n\n[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\n\
             username = \"vigia-collector\"\npassword = \"{COLLECTOR_PASSWORD}\"\n\n\
             [mqtt.dynamic_security]\nusername = \"{ADMIN}\"\npassword = \"{ADMIN_PASSWORD}\"\n\n\
             [http]\nlisten = \"127.0.0.1:0\"\n",
            data = d.join("collector-data").display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let c = start_collector_with(&config);

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

    // Revoked: the connection is dropped at once and the account refused.
    let (code, out) = c.cli(&["enrolment", "revoke", "ws-bcn-1"]);
    assert_eq!(code, 0, "{out}");
    let (ok, err) = publish(port, "ws-bcn-1", &password, "vigia/v1/up/ws-bcn-1/x", "{}");
    assert!(!ok, "a revoked device connected");
    assert!(err.contains("Not authorized"), "{err}");
    poll("the revoked agent to lose its connection", || {
        agent_status(&a.config).filter(|s| s["connected"] == false)
    });
    let req = poll("the revoked state", || {
        request_of(&c, "ws-bcn-1").filter(|r| r["decision"] == "revoked")
    });
    assert_eq!(req["decided_by"], "admin");
    drop(b);
}
