//! Notifications reach people: a report opens an incident, and its notification is
//! delivered to a real SMTP server (Debian's `python3-aiosmtpd`, STARTTLS required, with a
//! test CA) and to a webhook receiver that is down at first, then asks to wait
//! (`503`, `Retry-After: 3`), then takes it. A collector killed with SIGKILL while a
//! delivery is in flight resends it once with the same `Idempotency-Key`, and never
//! resends a delivery it recorded as sent. A flapping fault's returns reach each
//! recipient once, in a digest, after the first notice of it.
// A test: a failed unwrap is the failure, with its location.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::webhook::{Answer, Hit, Receiver};
use common::*;
use serde_json::Value;

/// The SMTP server: aiosmtpd's `SMTP` on a port the OS picks, STARTTLS required; each
/// message is printed as one JSON line.
const SMTP_SERVER: &str = r#"
import asyncio, email, email.policy, json, ssl, sys
from aiosmtpd.smtp import SMTP

class Keep:
    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        print("MAIL " + json.dumps({
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "tls": server._tls_protocol is not None,
            "subject": str(msg["subject"]),
            "message_id": str(msg["message-id"]),
            "data": msg.get_body().get_content(),
        }), flush=True)
        return "250 OK"

ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])

async def main():
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(
        lambda: SMTP(Keep(), tls_context=ctx, require_starttls=True, hostname="localhost"),
        "127.0.0.1", 0)
    print("listening on", srv.sockets[0].getsockname()[1], flush=True)
    await srv.serve_forever()

asyncio.run(main())
"#;

/// Debian's Python, whose packages hold aiosmtpd (a `python3` earlier on the PATH, from
/// pyenv say, would not have it).
const PYTHON: &str = "/usr/bin/python3";

/// True when the test must be skipped for want of Python's aiosmtpd (never under `CI`,
/// where `.ci/run` installs `python3-aiosmtpd`, and this fails instead).
fn skip_without_smtp_server() -> bool {
    if skip_without(&["openssl"]) {
        return true;
    }
    let ok = Command::new(PYTHON)
        .args(["-c", "import aiosmtpd"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return false;
    }
    assert!(
        std::env::var("CI").is_err(),
        "CI must install python3-aiosmtpd (see .ci/run)"
    );
    eprintln!("skipped: python3-aiosmtpd is not installed");
    true
}

struct Smtp {
    proc: Proc,
    port: u16,
}

fn start_smtp(dir: &Path) -> Smtp {
    let script = dir.join("smtp.py");
    std::fs::write(&script, SMTP_SERVER).unwrap();
    let mut cmd = Command::new(PYTHON);
    cmd.arg(&script)
        .arg(dir.join("server.crt"))
        .arg(dir.join("server.key"));
    let proc = Proc::spawn("smtp", cmd);
    let line = proc.wait_line("listening on");
    let port = line
        .rsplit(' ')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    Smtp { proc, port }
}

impl Smtp {
    fn mails(&self) -> Vec<Value> {
        self.proc
            .output()
            .lines()
            .filter_map(|l| l.strip_prefix("MAIL "))
            .filter_map(|j| serde_json::from_str(j).ok())
            .collect()
    }
}

/// A collector that mails over STARTTLS through the test's SMTP server, in `lang`, with
/// `rest` (webhooks and routes) after the relay's section.
fn notify_config(dir: &Path, smtp: u16, lang: &str, rest: &str) -> std::path::PathBuf {
    let config = dir.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{data}"

[mqtt]
embedded_port = 0

[http]
listen = "127.0.0.1:0"

[notify]
lang = "{lang}"
console_url = "https://vigia.example.org"
retry_first = "200ms"
retry_max = "2s"

[notify.email]
relay = "127.0.0.1"
port = {smtp}
ca_file = "{ca}"
from = "Vigía <vigia@example.org>"
{rest}"#,
            data = dir.join("collector-data").display(),
            ca = dir.join("ca.crt").display(),
        ),
    )
    .unwrap();
    config
}

fn write_config(dir: &Path, smtp: u16, hook: u16) -> std::path::PathBuf {
    notify_config(
        dir,
        smtp,
        "en",
        &format!(
            r#"
[[notify.webhook]]
name = "chat"
url = "http://127.0.0.1:{hook}/hook"

[[notify.route]]
on = ["opened"]
email = ["it-oncall@example.org"]
webhook = ["chat"]
lang = "es"

# The technicians, at the addresses their accounts keep.
[[notify.route]]
on = ["opened"]
accounts = ["technician"]
"#
        ),
    )
}

/// A user report from a new agent; returns the incident's number.
fn report(dir: &Path, c: &Collector, id: &str, summary: &str) -> u64 {
    let replay = dir.join(format!("{id}.jsonl"));
    append_lines(&replay, &disk_line("/", 30), 1);
    let agent = start_agent(dir, id, &c.mqtt_url, &replay, "");
    poll("agent connected", || {
        agent_status(&agent.config).filter(|s| s["connected"] == true)
    });
    let (code, out) = agent_cmd(
        &agent.config,
        &[
            "report",
            "--category",
            "hardware",
            "--summary",
            summary,
            "--text",
            "La pantalla parpadea",
            "--contact",
            "ext 5",
            "--urgency",
            "high",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let n = reported_incident(&out);
    agent.proc.terminate();
    n
}

fn deliveries(c: &Collector, n: u64) -> Vec<Value> {
    c.get(&format!("/api/incidents/{n}"))
        .and_then(|v| v["notifications"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .flat_map(|e| e["deliveries"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn state_of(c: &Collector, n: u64, channel: &str) -> Option<Value> {
    deliveries(c, n)
        .into_iter()
        .find(|d| d["channel"] == channel)
}

#[test]
fn notifications_reach_a_real_mail_server_and_a_webhook_that_was_down() {
    if skip_without_smtp_server() {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    make_pki(d, None, "");
    let smtp = start_smtp(d);
    // The webhook's port, with nothing listening yet: the receiver is down.
    let port_holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let hook_port = port_holder.local_addr().unwrap().port();
    drop(port_holder);
    let c = start_collector_with(&write_config(d, smtp.port, hook_port));
    // A technician with an address on her account, and one without.
    for (login, email) in [
        ("tecnica", Some("tecnica@example.org")),
        ("sin-correo", None),
    ] {
        let mut args = vec!["user", "add", login, "--role", "technician", "--level", "1"];
        if let Some(e) = email {
            args.extend(["--email", e]);
        }
        let (code, out) = c.cli(&args);
        assert_eq!(code, 0, "{out}");
    }
    let (code, out) = c.cli(&["user", "list"]);
    assert!(code == 0 && out.contains("tecnica@example.org"), "{out}");
    let (code, out) = c.cli(&["user", "set", "sin-correo", "--email", "not an address"]);
    assert!(code != 0 && out.contains("not an email address"), "{out}");

    let n = report(d, &c, "ws-notify", "Pantalla\u{1b}[2J parpadea");

    // The mail: over STARTTLS, in the route's language, with the incident's link and
    // without the escape sequence the report carried.
    let mail = poll("the mail at the SMTP server", || {
        smtp.mails()
            .into_iter()
            .find(|m| m["to"][0] == "it-oncall@example.org")
    });
    // The technician's, in the default language, to her account's address alone.
    let hers = poll("the technician's mail", || {
        smtp.mails()
            .into_iter()
            .find(|m| m["to"][0] == "tecnica@example.org")
    });
    assert!(
        hers["subject"]
            .as_str()
            .is_some_and(|s| s.starts_with(&format!("Incident {n} opened"))),
        "{hers}"
    );
    assert_eq!(hers["to"].as_array().map(Vec::len), Some(1), "{hers}");
    assert_eq!(mail["tls"], true, "{mail}");
    assert_eq!(mail["to"][0], "it-oncall@example.org", "{mail}");
    let data = mail["data"].as_str().unwrap_or("");
    assert!(data.contains(&format!("Incidencia {n} abierta")), "{data}");
    assert!(
        data.contains(&format!("https://vigia.example.org/incidents/{n}")),
        "{data}"
    );
    assert!(!data.contains('\u{1b}'), "{data:?}");
    assert!(
        mail["message_id"]
            .as_str()
            .is_some_and(|m| m.starts_with(&format!("<vigia-{n}-"))),
        "the delivery's key is the Message-ID: {mail}"
    );
    assert!(
        mail["subject"]
            .as_str()
            .is_some_and(|s| s.starts_with(&format!("Incidencia {n} abierta"))),
        "{mail}"
    );
    let sent = poll("the mail recorded as sent", || {
        state_of(&c, n, "email").filter(|d| d["state"] == "sent")
    });
    assert_eq!(sent["to"], "it-oncall@example.org");

    // The webhook was refused while down: pending, with the error shown.
    let pending = poll("the webhook's failure recorded", || {
        state_of(&c, n, "webhook").filter(|d| d["attempts"].as_u64() >= Some(2))
    });
    assert_eq!(pending["state"], "pending", "{pending}");
    assert!(pending["error"].is_string(), "{pending}");

    // Up again, it first asks to wait 3 s (longer than any backoff here), then takes it.
    let rx = Receiver::serve(
        TcpListener::bind(("127.0.0.1", hook_port)).unwrap(),
        vec![Answer::Busy],
    );
    let done = poll("the webhook delivered", || {
        state_of(&c, n, "webhook").filter(|d| d["state"] == "sent")
    });
    let hits = rx.hits();
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert_eq!(hits[0].answered, 503);
    assert!(
        hits[1].at.duration_since(hits[0].at) >= Duration::from_secs(3),
        "Retry-After: 3 (longer than retry_max) was not honoured: {:?}",
        hits[1].at.duration_since(hits[0].at)
    );
    assert_eq!(hits[0].key, hits[1].key, "a retry keeps its key");
    assert_eq!(hits[1].body["incident"], n);
    assert_eq!(hits[1].body["event"], "opened");
    assert!(
        done["attempts"].as_u64() >= Some(4),
        "refused twice or more while down, once busy, then sent: {done}"
    );

    // The CLI shows what went to whom.
    let (code, text) = c.cli(&["incident", &n.to_string()]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("notifications:"), "{text}");
    assert!(text.contains("it-oncall@example.org"), "{text}");

    // A provider asked for a service is told at its service address (the registry's),
    // though no route names it.
    let (code, out) = c.cli(&[
        "provider",
        "add",
        "Redes SAS",
        "--email",
        "mesa@redes.example",
        "--covers",
        "hardware",
    ]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = c.cli(&["incidents", "verify", &n.to_string(), "--confirm"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = c.cli(&[
        "incidents",
        "provider",
        &n.to_string(),
        "--provider",
        "Redes SAS",
        "--kind",
        "unplanned",
        "--at",
        "1d",
    ]);
    assert_eq!(code, 0, "{out}");
    let theirs = poll("the provider's mail", || {
        smtp.mails()
            .into_iter()
            .find(|m| m["to"][0] == "mesa@redes.example")
    });
    assert!(
        theirs["data"]
            .as_str()
            .is_some_and(|d| d.contains("Redes SAS")),
        "{theirs}"
    );

    // "Send a test" reaches the mail server now, and a bad address is refused clearly.
    let (code, out) = c.cli(&["notify", "test", "--email", "admin@example.org"]);
    assert_eq!(code, 0, "{out}");
    poll("the test mail", || {
        smtp.mails()
            .into_iter()
            .find(|m| m["to"][0] == "admin@example.org")
    });
    let (code, out) = c.cli(&["notify", "test", "--webhook", "nope"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("no [[notify.webhook]] named \"nope\""),
        "{out}"
    );
    c.proc.terminate();
}

#[test]
fn a_collector_killed_mid_delivery_repeats_only_what_it_had_not_recorded() {
    if skip_without_smtp_server() {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    make_pki(d, None, "");
    let smtp = start_smtp(d);
    // The receiver holds the first request open: the delivery is in flight when the
    // collector dies.
    let rx = Receiver::serve(
        TcpListener::bind("127.0.0.1:0").unwrap(),
        vec![Answer::Hold],
    );
    let config = write_config(d, smtp.port, rx.port);
    let c = start_collector_with(&config);
    let first = report(d, &c, "ws-kill", "Sin imagen");
    poll("the webhook request in flight", || {
        (rx.hits().len() == 1).then_some(())
    });
    c.proc.kill9();

    let c = start_collector_with(&config);
    poll(
        "the first incident's webhook sent after the restart",
        || state_of(&c, first, "webhook").filter(|d| d["state"] == "sent"),
    );
    poll("its mail recorded as sent", || {
        state_of(&c, first, "email").filter(|d| d["state"] == "sent")
    });
    // Killed again once everything of the first incident is recorded as sent.
    c.proc.kill9();
    let c = start_collector_with(&config);
    let second = report(d, &c, "ws-kill-2", "Teclado");
    poll("the second incident's webhook", || {
        rx.hits()
            .iter()
            .any(|h| h.body["incident"] == second && h.answered == 200)
            .then_some(())
    });
    poll("the second incident's mail", || {
        smtp.mails()
            .iter()
            .any(|m| {
                m["data"]
                    .as_str()
                    .is_some_and(|d| d.contains(&format!("Incidencia {second} abierta")))
            })
            .then_some(())
    });
    let hits = rx.hits();
    let of_first: Vec<&Hit> = hits
        .iter()
        .filter(|h| h.body["incident"] == first)
        .collect();
    assert_eq!(
        of_first.len(),
        2,
        "the one in flight at the kill is repeated once, then never again: {hits:?}"
    );
    assert_eq!(
        of_first[0].key, of_first[1].key,
        "the repeat has the same key"
    );
    let mails_of_first = smtp
        .mails()
        .iter()
        .filter(|m| {
            m["data"]
                .as_str()
                .is_some_and(|d| d.contains(&format!("Incidencia {first} abierta")))
        })
        .count();
    assert_eq!(
        mails_of_first, 1,
        "a mail recorded as sent is not sent again"
    );
    c.proc.terminate();
}

#[test]
fn a_flapping_faults_returns_come_in_one_digest_after_its_first_notice() {
    if skip_without_smtp_server() {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    make_pki(d, None, "");
    let smtp = start_smtp(d);
    let rx = Receiver::serve(TcpListener::bind("127.0.0.1:0").unwrap(), Vec::new());
    let config = write_config(d, smtp.port, rx.port);
    // Returns and flapping routed too, and a digest period long enough for every return
    // below to arrive inside it, however slow the machine.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("retry_max = \"2s\"", "retry_max = \"2s\"\ndigest = \"8s\"")
        .replace(
            "on = [\"opened\"]",
            "on = [\"opened\", \"reopened\", \"flapping\"]",
        );
    std::fs::write(&config, text).unwrap();
    let c = start_collector_with(&config);

    // The disk over and under its threshold four times: opened, then each return
    // reopens the incident the clearing closed, and the third return flags it flapping.
    let replay = d.join("flap.jsonl");
    for i in 0..8 {
        append_lines(
            &replay,
            &disk_line("/", if i % 2 == 0 { 95 } else { 50 }),
            1,
        );
    }
    let agent = start_agent(
        d,
        "ws-flap",
        &c.mqtt_url,
        &replay,
        "\n[detect.disk_space]\nraise_after = 1\nclear_after = 1\n",
    );
    let inc = poll("the incident flagged flapping", || {
        device_incidents(&c, "ws-flap")
            .into_iter()
            .next()
            .and_then(|i| c.get(&format!("/api/incidents/{}", i["number"])))
            .filter(|i| i["flapping"] == true)
    });
    let n = inc["number"].as_u64().unwrap();
    agent.proc.terminate();

    let digest = poll("the digest mail", || {
        smtp.mails().into_iter().find(|m| {
            m["subject"]
                .as_str()
                .is_some_and(|s| s.starts_with("Resumen:"))
        })
    });
    let mails = smtp.mails();
    let about = |m: &Value, what: &str| {
        m["subject"]
            .as_str()
            .is_some_and(|s| s.starts_with(&format!("Incidencia {n}{what}")))
    };
    assert_eq!(
        mails.iter().filter(|m| about(m, " abierta")).count(),
        1,
        "the opening goes out on its own: {mails:?}"
    );
    assert!(
        !mails
            .iter()
            .any(|m| about(m, " reabierta") || about(m, ": la falla se repite")),
        "no return goes out on its own: {mails:?}"
    );
    let data = digest["data"].as_str().unwrap_or("");
    assert!(
        data.contains(&format!("Incidencia {n} reabierta")),
        "{data}"
    );
    assert!(
        data.contains(&format!("Incidencia {n} la falla se repite")),
        "{data}"
    );
    assert!(
        data.contains(&format!("https://vigia.example.org/incidents/{n}")),
        "{data}"
    );

    // The incident shows every held return as sent in that one digest, on both channels.
    let held = poll("the returns recorded as digested", || {
        let all = deliveries(&c, n);
        let returns: Vec<Value> = c.get(&format!("/api/incidents/{n}"))?["notifications"]
            .as_array()?
            .iter()
            .filter(|e| e["event"] != "opened")
            .flat_map(|e| e["deliveries"].as_array().cloned().unwrap_or_default())
            .collect();
        (!returns.is_empty() && returns.iter().all(|d| d["state"] == "digested"))
            .then_some((all, returns))
    });
    let (all, returns) = held;
    assert!(
        returns.len() >= 4,
        "3 returns and the flapping, by mail and chat: {returns:?}"
    );
    for channel in ["email", "webhook"] {
        let ids: std::collections::BTreeSet<String> = returns
            .iter()
            .filter(|d| d["channel"] == channel)
            .map(|d| d["digest"].to_string())
            .collect();
        assert_eq!(ids.len(), 1, "one digest per recipient: {returns:?}");
    }
    assert_eq!(
        all.iter().filter(|d| d["state"] == "sent").count(),
        2,
        "only the opening was sent on its own, by mail and chat: {all:?}"
    );
    let hook = poll("the digest at the webhook", || {
        rx.hits().into_iter().find(|h| h.body["event"] == "digest")
    });
    assert_eq!(
        hook.body["incidents"],
        serde_json::json!([n]),
        "{:?}",
        hook.body
    );
    assert!(hook.body.get("incident").is_none(), "{:?}", hook.body);
    assert_eq!(
        rx.hits().len(),
        2,
        "the chat got the opening and the digest: {:?}",
        rx.hits()
    );
    c.proc.terminate();
}

/// The collector for a planned service: the week's notice to the all-staff list (the
/// provider is told of its request at its service address without a route).
fn service_config(dir: &Path, smtp: u16) -> std::path::PathBuf {
    notify_config(
        dir,
        smtp,
        "es",
        r#"
[[notify.route]]
on = ["staff_notice"]
email = ["todo-el-personal@example.org"]
"#,
    )
}

fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// The whole of a planned network service that no incident is behind, as a coordinator
/// does it from the CLI: the provider and its contract registered, the visit refused
/// with 6 days 23 hours of notice and accepted with 7, the week's notice mailed to all
/// staff over STARTTLS, the provider's contact accepting and reporting the work, a
/// rejected then an accepted verification, and the record in the requests, the audit
/// trail and the export of verifications.
#[test]
fn a_planned_network_service_with_no_incident_gives_the_weeks_notice_by_mail() {
    if skip_without_smtp_server() {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    make_pki(d, None, "");
    let smtp = start_smtp(d);
    let c = start_collector_with(&service_config(d, smtp.port));
    let (code, out) = c.cli(&[
        "provider",
        "add",
        "Redes SAS",
        "--covers",
        "network",
        "--email",
        "soporte@redes.example.org",
        "--contract-start",
        "2026-01-01",
        "--contract-end",
        "2099-12-31",
        "--response",
        "P2=4h",
        "--resolution",
        "P2=1d",
    ]);
    assert_eq!(code, 0, "{out}");
    let redes = c.provider_account("redes", "Redes SAS");
    let as_redes = |args: &[&str]| c.cli_as(&redes, args);

    // A provider's contact asks nobody for services.
    let (code, out) = as_redes(&[
        "request",
        "create",
        "--service",
        "x",
        "--category",
        "network",
        "--provider",
        "Redes SAS",
        "--at",
        "8d",
    ]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("may not ask a provider for a service"),
        "{out}"
    );

    let ask = |at: &str| {
        c.cli(&[
            "request",
            "create",
            "--service",
            "Cambio del switch del piso 2",
            "--category",
            "network",
            "--text",
            "switch nuevo y latiguillos; el piso queda sin red dos horas",
            "--provider",
            "Redes SAS",
            "--kind",
            "scheduled",
            "--priority",
            "P2",
            "--at",
            at,
            "--affects-network",
            "--conditions",
            "sábado de 08:00 a 10:00",
        ])
    };
    // Six days and 23 hours of notice: refused, with the date it could be from; nothing
    // registered.
    let (code, out) = ask("6d23h");
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("one week's notice") && out.contains("at or after"),
        "{out}"
    );
    assert!(!out.contains("incident"), "no record was made: {out}");
    assert!(c.incidents().is_empty(), "{:?}", c.incidents());
    // Seven days (and a few seconds, so the notice falls due while the test watches).
    const WEEK: u64 = 7 * 86_400_000;
    let agreed = now_ms() + WEEK + 3_000;
    let (code, out) = ask(&agreed.to_string());
    assert_eq!(code, 0, "{out}");
    let list = c.incidents();
    assert_eq!(list.len(), 1, "{list:?}");
    let n = list[0]["number"].as_u64().unwrap();
    assert!(out.contains(&format!("request {n}-1")), "{out}");
    assert_eq!(list[0]["origin"], "service", "{list:?}");
    assert!(list[0]["device"].is_null(), "{list:?}");
    let inc = c.get(&format!("/api/incidents/{n}")).unwrap();
    assert_eq!(inc["state"], "waiting_provider", "{inc}");
    assert_eq!(inc["level"], 2, "{inc}");
    let req = &inc["provider_requests"][0];
    assert_eq!(req["agreed_at"].as_u64(), Some(agreed), "{req}");
    assert_eq!(
        req["respond_by"].as_u64(),
        Some(req["requested_at"].as_u64().unwrap() + 4 * 3_600_000),
        "the contract's response time: {req}"
    );

    // The week's notice, when it falls due, to all staff over STARTTLS.
    let notice = poll("the week's notice at the SMTP server", || {
        smtp.mails()
            .into_iter()
            .find(|m| m["to"][0] == "todo-el-personal@example.org")
    });
    assert_eq!(notice["tls"], true, "{notice}");
    let body = notice["data"].as_str().unwrap_or("");
    assert!(
        notice["subject"]
            .as_str()
            .is_some_and(|s| s.starts_with("Aviso al personal")),
        "{notice}"
    );
    assert!(body.contains("Redes SAS"), "{body}");
    assert!(
        body.contains(&format!("https://vigia.example.org/incidents/{n}")),
        "{body}"
    );
    // The provider, told at its service address.
    poll("the provider's mail", || {
        smtp.mails()
            .into_iter()
            .find(|m| m["to"][0] == "soporte@redes.example.org")
    });
    let notice_sent = poll("the notice recorded as sent", || {
        deliveries(&c, n)
            .into_iter()
            .find(|d| d["to"] == "todo-el-personal@example.org" && d["state"] == "sent")
    });
    assert!(notice_sent["done_at"].is_u64(), "{notice_sent}");

    // The provider's contact sees the request and works it.
    let id = format!("{n}-1");
    let (code, out) = as_redes(&["request", "list"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&id) && out.contains(&format!("incidents {n}")),
        "{out}"
    );
    let (code, out) = as_redes(&["request", "accept", &id]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = as_redes(&["request", "done", &id, "--report", "switch cambiado"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = c.cli(&[
        "request",
        "verify",
        &id,
        "--not-as-agreed",
        "--note",
        "el puerto 14 sin enlace",
    ]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        c.get(&format!("/api/incidents/{n}")).unwrap()["state"],
        "waiting_provider"
    );
    let (code, out) = as_redes(&["request", "done", &id, "--report", "puerto 14 reparado"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = c.cli(&[
        "request",
        "verify",
        &id,
        "--note",
        "todos los puertos con enlace",
    ]);
    assert_eq!(code, 0, "{out}");
    let inc = c.get(&format!("/api/incidents/{n}")).unwrap();
    assert_eq!(
        inc["state"], "level2",
        "back to the level that follows it up: {inc}"
    );
    let actions: Vec<&str> = inc["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "register",
            "route",
            "request_provider",
            "network_notice",
            "provider_accept",
            "provider_done",
            "provider_delivered",
            "provider_done",
            "provider_delivered"
        ],
        "{inc}"
    );

    // The record of both verifications, with no device.
    let (code, csv) = c.cli(&["export", "--record", "verifications"]);
    assert_eq!(code, 0, "{csv}");
    let lines: Vec<&str> = csv.lines().map(str::trim_end).collect();
    assert_eq!(lines.len(), 3, "{csv}");
    let cells: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(
        cells[1..5],
        [n.to_string().as_str(), "", "Redes SAS", "scheduled"],
        "{csv}"
    );
    assert!(
        lines[1].contains("not_as_agreed") && lines[1].contains("puerto 14"),
        "{csv}"
    );
    assert!(lines[2].contains(",as_agreed,"), "{csv}");
    // And the Servicios soporte record has it, its requester the coordinator.
    let (code, csv) = c.cli(&["export"]);
    assert_eq!(code, 0, "{csv}");
    assert!(
        csv.lines().any(|l| l.contains(&format!(
            ",{n},,admin,network,Cambio del switch del piso 2,"
        ))),
        "{csv}"
    );
}
