//! The console in a real headless Chromium (issue 9): sign in, a fault from a real agent
//! arriving live, a technician escalating it from the page, a viewer without buttons
//! whose forged POST is refused, a POST without the CSRF token refused, the page in
//! Spanish, and the phone layout. Screenshots go to `target/screenshots/`.
//!
//! Each test runs its own collector (embedded broker), agent and browser on ports picked
//! at run time. The tests take turns: two Chromiums and two collectors on a 2-core CI
//! machine would only make every deadline flaky.
mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Mutex, MutexGuard};

use common::webdriver::{decode_base64, Browser, BrowserOptions};
use common::*;
use serde_json::{json, Value};

const DEVICE: &str = "ws-contabilidad-07";
const PASSWORD: &str = "correct horse battery staple";

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn turn() -> MutexGuard<'static, ()> {
    // A test that failed while holding the lock leaves it poisoned; the next still runs.
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// A collector with accounts, an agent whose readings come from a file, and the API as
/// one signed-in person sees it.
struct World {
    dir: tempfile::TempDir,
    collector: Collector,
    replay: PathBuf,
    agent: Option<Agent>,
}

impl World {
    /// A collector whose faults are verified after one second, with the accounts of the
    /// tests: a level-1 technician of the service-desk group, a viewer, the service desk.
    fn start() -> World {
        Self::start_with("")
    }

    /// [`World::start`] with `extra` TOML at the end of the collector's config.
    fn start_with(extra: &str) -> World {
        let dir = tempdir();
        let config = dir.path().join("collector.toml");
        let text = format!(
            "data_dir = \"{data}\"\n\n[mqtt]\nembedded_port = 0\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n\
             [workflow]\nverification_window = \"1s\"\n\n[cli]\ntoken_file = \"{token}\"\n{extra}\n",
            data = dir.path().join("collector-data").display(),
            token = dir.path().join("cli-token").display(),
        );
        std::fs::write(&config, text).unwrap_or_else(|e| panic!("write config: {e}"));
        let collector = start_collector_with(&config);
        let replay = dir.path().join("readings.jsonl");
        let w = World {
            dir,
            collector,
            replay,
            agent: None,
        };
        // The first start made an admin and left its password beside the data.
        let first = w
            .dir
            .path()
            .join("collector-data")
            .join("initial-admin-password");
        let admin_password = poll("the first admin's password file", || {
            std::fs::read_to_string(&first)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        });
        w.cli_ok(
            &["login", "--user", "admin", "--password-stdin"],
            &admin_password,
        );
        w.add_user(
            "tecnico",
            &[
                "--role",
                "technician",
                "--level",
                "1",
                "--group",
                "service-desk",
                "--name",
                "Tomás Técnico",
            ],
        );
        w.add_user("consulta", &["--role", "viewer", "--name", "Vera Consulta"]);
        w.add_user("mesa", &["--role", "service_desk", "--name", "Marta Mesa"]);
        w
    }

    /// `vigia collector --config C --api URL <args>` with `stdin`; (exit code, output).
    fn cli(&self, args: &[&str], stdin: &str) -> (i32, String) {
        let cfg = self.collector.config.display().to_string();
        let mut full = vec![
            "collector",
            "--config",
            cfg.as_str(),
            "--api",
            self.collector.http.as_str(),
        ];
        full.extend_from_slice(args);
        let mut child = vigia(&full)
            .env("LANG", "en_US.UTF-8")
            .env_remove("VIGIA_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("vigia collector {args:?}: {e}"));
        if let Some(mut input) = child.stdin.take() {
            input
                .write_all(format!("{stdin}\n").as_bytes())
                .unwrap_or_else(|e| panic!("stdin: {e}"));
        }
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("vigia collector {args:?}: {e}"));
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    fn cli_ok(&self, args: &[&str], stdin: &str) -> String {
        let (code, out) = self.cli(args, stdin);
        assert_eq!(code, 0, "vigia collector {args:?}:\n{out}");
        out
    }

    fn add_user(&self, login: &str, args: &[&str]) {
        let mut full = vec!["user", "add", login];
        full.extend_from_slice(args);
        full.push("--password-stdin");
        self.cli_ok(&full, PASSWORD);
    }

    /// Starts the agent, whose `/var` is 95 % full: a disk-space fault.
    fn start_agent(&mut self) {
        append_lines(&self.replay, &disk_line("/var", 50), 3);
        append_lines(&self.replay, &disk_line("/var", 95), 40);
        let dir = self.dir.path().to_path_buf();
        self.agent = Some(start_agent(
            &dir,
            DEVICE,
            &self.collector.mqtt_url,
            &self.replay,
            "",
        ));
    }

    /// The API signed in as `login`.
    fn api(&self, login: &str) -> Api {
        Api::sign_in(&self.collector.http, login)
    }

    /// The device's disk incident once it is `state`, as the service desk sees it.
    fn incident_in(&self, state: &str) -> Value {
        let api = self.api("mesa");
        poll(&format!("the disk incident in {state}"), || {
            api.get(&format!("/api/incidents?state=all&device={DEVICE}"))?
                .as_array()?
                .iter()
                .find(|i| i["kind"] == "disk_space" && i["state"] == state)
                .cloned()
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.collector.http)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        drop(self.agent.take());
    }
}

/// The JSON API with a session cookie, as a browser would hold it.
struct Api {
    base: String,
    cookie: String,
    csrf: String,
    http: ureq::Agent,
}

impl Api {
    fn sign_in(base: &str, login: &str) -> Api {
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = http
            .post(&format!("{base}/api/session"))
            .header("Origin", base)
            .send_json(json!({ "login": login, "password": PASSWORD }))
            .unwrap_or_else(|e| panic!("sign in as {login}: {e}"));
        assert_eq!(resp.status(), 200, "sign in as {login}");
        let cookie = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with("vigia_session="))
            .and_then(|c| c.split(';').next())
            .unwrap_or_else(|| panic!("no vigia_session cookie for {login}"))
            .to_string();
        let body: Value = resp
            .body_mut()
            .read_json()
            .unwrap_or_else(|e| panic!("session body: {e}"));
        Api {
            base: base.to_string(),
            cookie,
            csrf: body["csrf"].as_str().unwrap_or_default().to_string(),
            http,
        }
    }

    /// POSTs `body` with the session's CSRF token, as the page does; the answer's JSON.
    fn post(&self, path: &str, body: Value) -> Value {
        let mut r = self
            .http
            .post(&format!("{}{path}", self.base))
            .header("Cookie", &self.cookie)
            .header("Origin", &self.base)
            .header("X-CSRF-Token", &self.csrf)
            .send_json(body)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        assert_eq!(r.status(), 200, "POST {path}");
        r.body_mut()
            .read_json()
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    fn get(&self, path: &str) -> Option<Value> {
        let mut r = self
            .http
            .get(&format!("{}{path}", self.base))
            .header("Cookie", &self.cookie)
            .call()
            .ok()?;
        if r.status() != 200 {
            return None;
        }
        r.body_mut().read_json().ok()
    }
}

/// A browser signed in to the console as `login`, on the incident list.
/// This test's turn, a world with a real agent, and the number of the incident its
/// fault opened once it reached level 1.
fn with_an_incident_at_level1() -> (MutexGuard<'static, ()>, World, u64) {
    let turn = turn();
    let mut w = World::start();
    w.start_agent();
    let n = w.incident_in("level1")["number"]
        .as_u64()
        .unwrap_or_else(|| panic!("no number"));
    (turn, w, n)
}

fn signed_in(w: &World, login: &str, opts: BrowserOptions) -> Browser {
    let b = Browser::start(opts);
    b.goto(&w.url("/"));
    // Signed out, every page leads to the sign-in form.
    b.wait_visible("#login-form");
    assert!(
        b.url().contains("/login"),
        "not sent to sign in: {}",
        b.url()
    );
    b.send_keys(&b.wait("#login-name"), login);
    b.send_keys(&b.wait("#login-password"), PASSWORD);
    b.click(&b.wait("#login-submit"));
    b.wait("#rows");
    b
}

/// Problems the page itself reported: CSP violations and uncaught script errors.
/// (Refused requests are logged too, and some tests make them on purpose.)
fn page_errors(b: &Browser) -> Vec<String> {
    b.console_log()
        .into_iter()
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .filter(|m| {
            m.contains("Content Security Policy")
                || m.contains("Uncaught")
                || m.contains("TypeError")
        })
        .collect()
}

/// The text of the list row of incident `n`, once it satisfies `ok`.
fn row_text(b: &Browser, n: u64, what: &str, ok: impl Fn(&str) -> bool) -> String {
    b.wait_text(&format!("#rows tr[data-number='{n}']"), what, ok)
}

/// A `fetch` from the page (the page's cookie goes with it): `{status, body}`.
fn page_fetch(b: &Browser, method: &str, path: &str, headers: Value, body: Value) -> Value {
    b.exec_async(
        "const [method, path, headers, body, done] = arguments;
         const init = { method, headers, credentials: 'same-origin' };
         if (body !== null) init.body = JSON.stringify(body);
         fetch(path, init)
           .then(async (r) => done({ status: r.status, body: await r.json().catch(() => null) }))
           .catch((e) => done({ status: 0, body: String(e) }));",
        json!([method, path, headers, body]),
    )
}

fn open_incident(b: &Browser, n: u64) {
    b.click(&b.wait(&format!("#rows tr[data-number='{n}'] a.num")));
    b.wait("#inc-audit tr");
}

#[test]
fn sign_in_then_a_fault_from_a_real_agent_appears_without_a_reload() {
    let _turn = turn();
    let mut w = World::start();
    let b = Browser::start(BrowserOptions::default());
    b.goto(&w.url("/incidents/1"));
    b.wait_visible("#login-form");

    // A wrong password is refused, and says so.
    b.send_keys(&b.wait("#login-name"), "tecnico");
    b.send_keys(&b.wait("#login-password"), "not the password");
    b.click(&b.wait("#login-submit"));
    b.wait_text("#login-error", "the bad-credentials message", |t| {
        t.contains("Wrong")
    });
    assert!(b.url().contains("/login"), "{}", b.url());

    b.send_keys(&b.wait("#login-password"), PASSWORD);
    b.click(&b.wait("#login-submit"));
    // Back where the link pointed, then to the list; the technician's default is "mine".
    b.until("the page the link pointed to", || {
        (b.url().ends_with("/incidents/1") && b.find("#login-form").is_none()).then_some(())
    });
    b.goto(&w.url("/"));
    b.wait("#rows");
    let url = b.url();
    assert!(
        url.contains("mine=true") && url.contains("state=open"),
        "{url}"
    );
    b.wait_text("#who", "the signed-in person", |t| {
        t.contains("Tomás Técnico")
    });
    b.wait_text("#live", "the live indicator", |t| t == "live");
    assert!(b.find("#rows tr").is_none(), "no incident yet");

    // The page must not reload for what follows.
    b.exec("window.__vigiaNoReload = 'still here';", json!([]));
    w.start_agent();
    let first = row_text(&b, 1, "the agent's fault in the list", |t| {
        t.contains(DEVICE)
    });
    assert!(first.contains("/var"), "{first}");
    // It moves on from verification to the service desk, in place.
    row_text(&b, 1, "the row to reach level 1", |t| {
        t.contains("With the service desk")
    });
    assert_eq!(
        b.exec("return window.__vigiaNoReload;", json!([])),
        json!("still here"),
        "the page reloaded"
    );
    b.wait_text("#counts-level", "the level counts", |t| {
        t.contains("Level 1")
    });
    let shot = b.screenshot("console-list-live");
    eprintln!("screenshot: {}", shot.display());
    assert_eq!(page_errors(&b), Vec::<String>::new());
}

#[test]
fn a_technician_escalates_from_the_page_and_the_service_desk_closes_it() {
    let (_turn, w, n) = with_an_incident_at_level1();
    let b = signed_in(&w, "tecnico", BrowserOptions::default());
    open_incident(&b, n);
    b.wait_text("#inc-state", "the state", |t| t == "With the service desk");
    // The evidence as the agent read it.
    let evidence = b.wait_text("#inc-origin", "the evidence", |t| t.contains("statvfs"));
    assert!(
        evidence.contains("95") && evidence.contains("90") && evidence.contains('%'),
        "{evidence}"
    );

    // `e` opens the escalation form, with the fields the server says escalation takes,
    // the required ones marked.
    b.press("e");
    let why = b.wait("#form-escalate textarea[name=why]");
    let spec = w
        .api("tecnico")
        .get(&format!("/api/incidents/{n}"))
        .and_then(|d| {
            d["allowed"]
                .as_array()?
                .iter()
                .find(|a| a["action"] == "escalate")
                .cloned()
        })
        .unwrap_or_else(|| panic!("the technician may not escalate incident {n}"));
    let fields = spec["fields"].as_array().cloned().unwrap_or_default();
    let required = fields.iter().filter(|f| f["required"] == true).count();
    assert_eq!(
        b.find_all("#form-escalate .field").len(),
        fields.len(),
        "{spec}"
    );
    assert_eq!(b.find_all("#form-escalate .req").len(), required, "{spec}");
    b.send_keys(&why, "necesita un técnico en sitio");
    b.click(&b.wait("#action-submit"));
    b.wait_text("#inc-state", "the new state", |t| {
        t == "With on-site support"
    });
    let top = b.wait_text(
        "#inc-audit tbody tr:first-child",
        "the escalation in the audit trail",
        |t| t.contains("Escalate"),
    );
    assert!(
        top.contains("tecnico") && top.contains("necesita un técnico en sitio"),
        "{top}"
    );

    // The server recorded the same: the signed-in technician, not a name from the page.
    let api = w.api("mesa");
    let detail = poll("the incident at level 2", || {
        api.get(&format!("/api/incidents/{n}"))
            .filter(|d| d["state"] == "level2")
    });
    let last = detail["audit"]
        .as_array()
        .and_then(|a| a.iter().rev().find(|r| r["action"] == "escalate"))
        .cloned()
        .unwrap_or_else(|| panic!("no escalate record: {detail}"));
    assert_eq!(last["actor"]["type"], "person", "{last}");
    assert_eq!(last["actor"]["name"], "tecnico", "{last}");
    let wide = b.exec(
        "return [...document.querySelectorAll('body *')]
           .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1)
           .map((e) => e.tagName + '#' + e.id + '.' + e.className);",
        json!([]),
    );
    assert_eq!(wide, json!([]), "wider than the window");
    let shot = b.screenshot("console-incident-escalated");
    eprintln!("screenshot: {}", shot.display());
    assert_eq!(page_errors(&b), Vec::<String>::new());

    // The service desk resolves it and closes it definitively, from its own page; the
    // technician's page follows live and offers neither.
    let desk = signed_in(&w, "mesa", BrowserOptions::default());
    open_incident(&desk, n);
    desk.click_css("#action-buttons button[data-action=resolve]");
    let solution = desk.wait("#form-resolve textarea[name=solution]");
    desk.send_keys(&solution, "disco cambiado en sitio");
    desk.click_css("#form-resolve #action-submit");
    desk.wait_text("#inc-state", "resolved", |t| t == "Resolved");
    desk.click_css("#action-buttons button[data-action=close]");
    desk.click_css("#form-close #action-submit");
    desk.wait_text("#inc-state", "closed", |t| t == "Closed");
    b.wait_text("#inc-state", "the technician's page, live", |t| {
        t == "Closed"
    });
    assert!(
        b.find_all("#action-buttons button[data-action=close]")
            .is_empty(),
        "a technician was offered to close"
    );
    let closed = api
        .get(&format!("/api/incidents/{n}"))
        .unwrap_or_else(|| panic!("incident {n}"));
    let close = closed["audit"]
        .as_array()
        .and_then(|a| a.iter().rev().find(|r| r["to"] == "closed"))
        .cloned()
        .unwrap_or_else(|| panic!("no close record: {closed}"));
    assert_eq!(close["actor"]["name"], "mesa", "{close}");
    let shot = desk.screenshot("console-incident-closed");
    eprintln!("screenshot: {}", shot.display());
    assert_eq!(page_errors(&desk), Vec::<String>::new());
}

#[test]
fn a_viewer_sees_no_action_buttons_and_a_forged_post_is_refused() {
    let (_turn, w, n) = with_an_incident_at_level1();
    let b = signed_in(&w, "consulta", BrowserOptions::default());
    // A viewer is no technician: the list shows everything open, not "mine".
    assert!(!b.url().contains("mine=true"), "{}", b.url());
    open_incident(&b, n);
    b.wait_visible("#no-actions");
    assert!(
        b.find_all("#action-buttons button").is_empty(),
        "a viewer got buttons"
    );

    // The viewer's own cookie and CSRF token, a well-formed escalation: refused anyway.
    let csrf = page_fetch(&b, "GET", "/api/session", json!({}), Value::Null);
    let token = csrf["body"]["csrf"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!token.is_empty(), "{csrf}");
    let forged = page_fetch(
        &b,
        "POST",
        &format!("/api/incidents/{n}/escalate"),
        json!({ "content-type": "application/json", "x-csrf-token": token }),
        json!({ "to": 3, "why": "forged" }),
    );
    assert_eq!(forged["status"], 403, "{forged}");
    assert_eq!(forged["body"]["code"], "forbidden", "{forged}");
    let bulk = page_fetch(
        &b,
        "POST",
        "/api/incidents/bulk",
        json!({ "content-type": "application/json", "x-csrf-token": token }),
        json!({ "numbers": [n], "action": "note", "fields": { "text": "forged" } }),
    );
    let refused = bulk["status"] == 403
        || bulk["body"]["results"][0]["ok"] == false
            && bulk["body"]["results"][0]["code"] == "forbidden";
    assert!(refused, "{bulk}");
    let detail = w
        .api("mesa")
        .get(&format!("/api/incidents/{n}"))
        .unwrap_or_else(|| panic!("incident {n}"));
    assert_eq!(
        detail["state"], "level1",
        "the forged escalation changed it"
    );
    assert!(!detail.to_string().contains("forged"), "{detail}");
    let shot = b.screenshot("console-viewer");
    eprintln!("screenshot: {}", shot.display());
}

#[test]
fn a_post_without_the_csrf_token_is_refused() {
    let (_turn, w, n) = with_an_incident_at_level1();
    let b = signed_in(&w, "tecnico", BrowserOptions::default());
    let path = format!("/api/incidents/{n}/note");
    let json_only = json!({ "content-type": "application/json" });
    let none = page_fetch(&b, "POST", &path, json_only, json!({ "text": "sin token" }));
    assert_eq!(none["status"], 403, "{none}");
    assert_eq!(none["body"]["code"], "csrf", "{none}");
    let wrong = page_fetch(
        &b,
        "POST",
        &path,
        json!({ "content-type": "application/json", "x-csrf-token": "0000" }),
        json!({ "text": "token falso" }),
    );
    assert_eq!(wrong["status"], 403, "{wrong}");
    assert_eq!(wrong["body"]["code"], "csrf", "{wrong}");
    // The same request with the session's token goes through: the refusals were the token's.
    let session = page_fetch(&b, "GET", "/api/session", json!({}), Value::Null);
    let token = session["body"]["csrf"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ok = page_fetch(
        &b,
        "POST",
        &path,
        json!({ "content-type": "application/json", "x-csrf-token": token }),
        json!({ "text": "con token" }),
    );
    assert_eq!(ok["status"], 200, "{ok}");
    let detail = w
        .api("mesa")
        .get(&format!("/api/incidents/{n}"))
        .unwrap_or_else(|| panic!("incident {n}"));
    let notes: Vec<&str> = detail["notes"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["text"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(notes, vec!["con token"], "{detail}");
}

#[test]
fn the_console_in_spanish_by_the_browser_then_in_english_by_choice() {
    let (_turn, w, n) = with_an_incident_at_level1();
    let opts = BrowserOptions {
        lang: "es-ES".into(),
        ..BrowserOptions::default()
    };
    let b = Browser::start(opts);
    b.goto(&w.url("/"));
    b.wait_text("#login-form h1", "the sign-in form in Spanish", |t| {
        t == "Entrar en Vigía"
    });
    b.send_keys(&b.wait("#login-name"), "tecnico");
    b.send_keys(&b.wait("#login-password"), PASSWORD);
    b.click(&b.wait("#login-submit"));
    row_text(&b, n, "the row in Spanish", |t| {
        t.contains("En mesa de servicio")
    });
    b.wait_text("#counts-level", "the levels by their names", |t| {
        t.contains("Nivel 1 · Mesa de servicio") && t.contains("Nivel 2 · Soporte en sitio")
    });
    b.wait_text("#live", "the live indicator", |t| t == "en vivo");
    assert_eq!(
        b.exec("return document.documentElement.lang;", json!([])),
        json!("es")
    );
    let shot = b.screenshot("console-es-list");
    eprintln!("screenshot: {}", shot.display());
    open_incident(&b, n);
    let page = b.page_text();
    for words in [
        "Evidencia",
        "Historial",
        "Escalar",
        "Umbral",
        "Espacio en disco",
    ] {
        assert!(page.contains(words), "no {words:?} in:\n{page}");
    }
    // Dates in Spanish: "2 dic 2026" rather than "Dec 2, 2026".
    let opened = b.wait_text("#inc-facts", "the dates", |t| !t.is_empty());
    let month_es = [
        "ene", "feb", "mar", "abr", "may", "jun", "jul", "ago", "sept", "oct", "nov", "dic",
    ];
    assert!(month_es.iter().any(|m| opened.contains(m)), "{opened}");
    let shot = b.screenshot("console-es-incident");
    eprintln!("screenshot: {}", shot.display());

    // The switch in the header changes it, and the choice is kept with the account.
    b.exec(
        "const s = document.getElementById('lang'); s.value = 'en'; s.dispatchEvent(new Event('change'));",
        json!([]),
    );
    b.wait_text("#inc-audit h2", "the page in English", |t| {
        t == "Audit trail"
    });
    poll("the preference saved", || {
        w.api("tecnico")
            .get("/api/session")
            .filter(|s| s["locale"] == "en")
    });
    b.goto(&w.url("/"));
    row_text(&b, n, "the list in English after a reload", |t| {
        t.contains("With the service desk")
    });
    // The time zone is the account's too: chosen in the header, kept with the session.
    b.wait_visible("#tz");
    b.exec(
        "const s = document.getElementById('tz'); s.value = 'Asia/Tokyo'; s.dispatchEvent(new Event('change'));",
        json!([]),
    );
    poll("the time zone saved", || {
        w.api("tecnico")
            .get("/api/session")
            .filter(|s| s["time_zone"] == "Asia/Tokyo")
    });
    b.goto(&w.url("/"));
    b.until("the zone kept after a reload", || {
        (b.exec("return document.getElementById('tz').value;", json!([])) == json!("Asia/Tokyo"))
            .then_some(())
    });
    assert_eq!(page_errors(&b), Vec::<String>::new());
}

#[test]
fn the_phone_layout_stacks_without_sideways_scrolling() {
    let (_turn, w, n) = with_an_incident_at_level1();
    let opts = BrowserOptions {
        size: (390, 844),
        ..BrowserOptions::default()
    };
    let b = signed_in(&w, "tecnico", opts);
    row_text(&b, n, "the row", |t| t.contains(DEVICE));
    let overflow = "return document.documentElement.scrollWidth - window.innerWidth;";
    let layout = b.exec(
        "const w = window.innerWidth;
         const row = document.querySelector('#rows tr');
         const cells = [...row.cells].map((c) => c.getBoundingClientRect());
         return {
           width: w,
           header: getComputedStyle(document.querySelector('table.incidents thead')).position,
           // stacked: each cell below the one before, all within the screen
           stacked: cells.slice(1).every((c, i) => c.top >= cells[i].bottom - 1),
           inside: cells.every((c) => c.left >= 0 && c.right <= w + 1),
         };",
        json!([]),
    );
    assert!(layout["width"].as_u64().unwrap_or(9999) < 720, "{layout}");
    assert_eq!(
        layout["header"], "absolute",
        "the column headers are not folded: {layout}"
    );
    assert_eq!(layout["stacked"], true, "{layout}");
    assert_eq!(layout["inside"], true, "{layout}");
    assert!(
        b.exec(overflow, json!([])).as_i64().unwrap_or(1) <= 0,
        "the list scrolls sideways"
    );
    let shot = b.screenshot("console-phone-list");
    eprintln!("screenshot: {}", shot.display());

    open_incident(&b, n);
    b.wait("#action-buttons button");
    assert!(
        b.exec(overflow, json!([])).as_i64().unwrap_or(1) <= 0,
        "the incident page scrolls sideways"
    );
    let side = b.exec(
        "const a = document.getElementById('inc-actions').getBoundingClientRect();
         const d = document.getElementById('inc-device').getBoundingClientRect();
         return d.top >= a.bottom;",
        json!([]),
    );
    assert_eq!(
        side,
        json!(true),
        "the device card is not below the actions"
    );
    let shot = b.screenshot("console-phone-incident");
    eprintln!("screenshot: {}", shot.display());
    assert_eq!(page_errors(&b), Vec::<String>::new());
}

#[test]
fn changes_reach_the_open_page_within_a_second() {
    let (_turn, w, n) = with_an_incident_at_level1();
    let b = signed_in(&w, "mesa", BrowserOptions::default());
    row_text(&b, n, "the row", |t| t.contains(DEVICE));
    b.wait_text("#live", "the live indicator", |t| t == "live");
    // Each time the row shows a newer change, how long after the server made it (the
    // collector's clock and the browser's are this machine's).
    b.exec(
        "window.__delays = [];
         const seen = new Set();
         new MutationObserver(() => {
           const tr = document.querySelector(`#rows tr[data-number='${arguments[0]}']`);
           const at = tr && Number(tr.dataset.updated);
           if (at && !seen.has(at)) { seen.add(at); window.__delays.push(Date.now() - at); }
         }).observe(document.getElementById('rows'), { subtree: true, childList: true, attributes: true });",
        json!([n]),
    );
    let api = w.api("mesa");
    const NOTES: usize = 40;
    let mut last = 0;
    for i in 0..NOTES {
        let d = api.post(
            &format!("/api/incidents/{n}/note"),
            json!({ "text": format!("nota {i}") }),
        );
        last = d["updated_at"].as_u64().unwrap_or(0);
    }
    let mut delays: Vec<u64> = b.until("the last note on the page", || {
        let at = b.exec(
            "const tr = document.querySelector(`#rows tr[data-number='${arguments[0]}']`);
             return tr ? Number(tr.dataset.updated) : 0;",
            json!([n]),
        );
        (at.as_u64()? >= last).then_some(())?;
        serde_json::from_value(b.exec("return window.__delays;", json!([]))).ok()
    });
    assert!(
        delays.len() >= NOTES / 2,
        "the page showed only {} of {NOTES} changes: {delays:?}",
        delays.len()
    );
    delays.sort_unstable();
    let pct = |p: usize| delays[(delays.len() * p / 100).min(delays.len() - 1)];
    eprintln!(
        "feed latency, stored to page updated, {} changes: p50 {} ms, p99 {} ms",
        delays.len(),
        pct(50),
        pct(99)
    );
    assert!(pct(99) < 1000, "slower than a second: {delays:?}");
}

#[test]
fn bulk_note_from_the_keyboard_then_the_device_and_the_fleet() {
    let (_turn, w, n) = with_an_incident_at_level1();
    let b = signed_in(&w, "mesa", BrowserOptions::default());
    row_text(&b, n, "the row", |t| t.contains(DEVICE));
    // j marks the first row, x selects it: the bulk form appears.
    b.press("jx");
    b.wait_text("#bulk .bulk-count", "the selection", |t| {
        t.contains("1 selected")
    });
    // Markup in a note is text: shown as typed, never run or rendered.
    let note = "<img src=x id=inyectado> revisado en bloque";
    b.send_keys(&b.wait("#bulk textarea[name=text]"), note);
    b.click(&b.wait("#bulk-apply"));
    b.wait_text("#toast", "the bulk result", |t| {
        t.contains("1 done, 0 refused")
    });
    let detail = w
        .api("mesa")
        .get(&format!("/api/incidents/{n}"))
        .unwrap_or_else(|| panic!("incident {n}"));
    assert!(
        detail.to_string().contains("revisado en bloque"),
        "{detail}"
    );
    open_incident(&b, n);
    b.wait_text("#inc-notes", "the note as typed", |t| t.contains(note));
    assert_eq!(
        b.exec("return document.getElementById('inyectado');", json!([])),
        Value::Null,
        "the note's markup became an element"
    );

    // The device page: online, its inventory, the active fault and the history.
    b.click(&b.wait(&format!("#inc-device a[href='/devices/{DEVICE}']")));
    b.wait_text("#dev-badge", "the device online", |t| t.contains("online"));
    b.wait_text("#dev-inventory", "the inventory", |t| {
        t.contains("Host name")
    });
    b.wait_text("#dev-faults", "the active fault", |t| {
        t.contains("Disk space")
    });
    b.wait(&format!("#dev-history-table a[href='/incidents/{n}']"));
    let shot = b.screenshot("console-device");
    eprintln!("screenshot: {}", shot.display());

    // The fleet: the device is among those with open incidents, and none is offline.
    b.press("f");
    b.wait_text("#fleet-incidents", "the device with open incidents", |t| {
        t.contains(DEVICE)
    });
    b.wait_text("#fleet-offline", "no device offline", |t| {
        t.contains("Every device is online")
    });
    let shot = b.screenshot("console-fleet");
    eprintln!("screenshot: {}", shot.display());
    assert_eq!(page_errors(&b), Vec::<String>::new());
}

#[test]
fn the_incident_page_shows_who_was_notified_and_what_failed() {
    let _turn = turn();
    // A gateway that takes every request.
    let up = common::webhook::Receiver::serve(
        std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}")),
        Vec::new(),
    )
    .port;
    // A port nothing listens on: that gateway is down.
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut w = World::start_with(&format!(
        "[notify]\nretry_first = \"200ms\"\nretry_max = \"1s\"\n\n\
         [[notify.webhook]]\nname = \"chat\"\nurl = \"http://127.0.0.1:{up}/hook\"\n\n\
         [[notify.webhook]]\nname = \"whatsapp\"\nurl = \"http://127.0.0.1:{down}/hook\"\n\n\
         [[notify.route]]\non = [\"opened\"]\nwebhook = [\"chat\", \"whatsapp\"]\n"
    ));
    w.start_agent();
    let n = w.incident_in("level1")["number"]
        .as_u64()
        .unwrap_or_else(|| panic!("no number"));
    let b = signed_in(&w, "mesa", BrowserOptions::default());
    open_incident(&b, n);
    let rows = b.wait_text("#inc-notify table", "both deliveries listed", |t| {
        t.contains("delivered") && t.contains("pending (")
    });
    assert!(rows.contains("incident opened"), "{rows}");
    assert!(rows.contains("channel chat"), "{rows}");
    assert!(rows.contains("channel whatsapp"), "{rows}");
    assert!(
        rows.contains("Connection refused") || rows.contains("refused"),
        "{rows}"
    );
    b.exec(
        "document.getElementById('inc-notify').scrollIntoView()",
        json!([]),
    );
    b.screenshot("console-notifications-en");
    assert!(page_errors(&b).is_empty(), "{:?}", page_errors(&b));
}

#[test]
fn screenshots_are_decoded_from_webdriver_base64() {
    assert_eq!(decode_base64("iVBORw0KGgo="), b"\x89PNG\r\n\x1a\n");
    assert_eq!(decode_base64("aGk="), b"hi");
    assert!(decode_base64("").is_empty());
}

#[test]
fn a_providers_contact_accepts_and_reports_its_request_from_the_page() {
    let (_turn, w, n) = with_an_incident_at_level1();
    w.add_user(
        "redes",
        &[
            "--role",
            "provider",
            "--provider",
            "Redes SAS",
            "--name",
            "Rita Redes",
        ],
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    w.api("mesa").post(
        &format!("/api/incidents/{n}/request_provider"),
        json!({"provider": "Redes SAS", "kind": "unplanned", "agreed_at": now + 86_400_000,
               "conditions": "cambiar el disco"}),
    );
    let b = signed_in(&w, "redes", BrowserOptions::default());
    open_incident(&b, n);
    // Its own request's actions and a note; nothing that works the incident itself.
    let actions = b.until("the provider's buttons", || {
        let a = b.exec(
            "return [...document.querySelectorAll('#action-buttons button')]
               .map((e) => e.dataset.action);",
            json!([]),
        );
        a.as_array().filter(|a| !a.is_empty()).cloned()
    });
    assert_eq!(
        actions,
        [
            "provider_accept",
            "provider_propose",
            "provider_done",
            "note"
        ],
        "offered to a provider's contact"
    );
    b.click_css("#action-buttons button[data-action=provider_accept]");
    b.click_css("#form-provider_accept #action-submit");
    b.wait_text("#inc-providers", "the acceptance", |t| {
        t.contains("Accepted by the provider") && t.contains("redes")
    });
    // The report is shown as the text it is.
    b.click_css("#action-buttons button[data-action=provider_done]");
    let report = b.wait("#form-provider_done textarea[name=report]");
    b.send_keys(&report, "<img src=x onerror=alert(1)> disco cambiado");
    b.click_css("#form-provider_done #action-submit");
    b.wait_text("#inc-providers", "the report", |t| {
        t.contains("<img src=x onerror=alert(1)> disco cambiado")
    });
    assert!(b.find_all("#inc-providers img").is_empty(), "markup ran");
    assert!(
        !b.displayed(&b.wait("#inc-notify")),
        "a provider's contact is shown the staff's notifications section"
    );
    // Reported done: nothing left to accept, propose or report.
    b.until("the buttons after the report", || {
        let a = b.exec(
            "return [...document.querySelectorAll('#action-buttons button')]
               .map((e) => e.dataset.action);",
            json!([]),
        );
        (a == json!(["note"])).then_some(())
    });
    let detail = w
        .api("mesa")
        .get(&format!("/api/incidents/{n}"))
        .unwrap_or_else(|| panic!("incident {n}"));
    let req = &detail["provider_requests"][0];
    assert_eq!(req["accepted"]["by"], "redes", "{req}");
    assert_eq!(req["done"]["by"], "redes", "{req}");
    b.exec(
        "document.getElementById('inc-providers').scrollIntoView();",
        json!([]),
    );
    let shot = b.screenshot("console-provider-request");
    eprintln!("screenshot: {}", shot.display());
    assert_eq!(page_errors(&b), Vec::<String>::new());
}

#[test]
fn an_admin_registers_a_provider_its_contract_and_minutes_from_the_page() {
    let _turn = turn();
    let w = World::start();
    w.add_user("jefa", &["--role", "admin", "--name", "Ana Admin"]);
    w.add_user("redes", &["--role", "provider", "--provider", "Redes SAS"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let day = |ms: u64| vigia_protocol::time::rfc3339(ms)[..10].to_string();
    let (start, end) = (day(now - 30 * 86_400_000), day(now + 365 * 86_400_000));

    let b = signed_in(&w, "jefa", BrowserOptions::default());
    b.click_css("#nav a[href='/providers']");
    b.wait_text("#prov-list", "the empty register", |t| {
        t.contains("No provider registered")
    });
    let fill = |css: &str, text: &str| b.send_keys(&b.wait(css), text);
    // Clear of the sticky header.
    let press = |css: &str| {
        b.wait(css);
        b.exec(
            "document.querySelector(arguments[0]).scrollIntoView({ block: 'center' });",
            json!([css]),
        );
        b.click_css(css);
    };
    fill("#pf-name", "Redes SAS");
    fill("#pf-email", "soporte@redes.example.org");
    fill("#pf-portal", "https://portal.redes.example.org/");
    fill("#pf-services", "Cableado estructurado");
    fill("#pf-covers", "network, hardware");
    fill(
        "#pf-contacts",
        "Rita Redes, rita@redes.example.org, 555 0101",
    );
    fill("#pf-conditions", "<b>sábados</b> de 8 a 12");
    // Date inputs take their value in the page's format whatever the browser's locale.
    b.exec(
        "document.getElementById('pf-start').value = arguments[0];
         document.getElementById('pf-end').value = arguments[1];",
        json!([start, end]),
    );
    fill("#provider-form input[name=response-P1]", "4h");
    fill("#provider-form input[name=resolution-P1]", "1d");
    press("#provider-submit");
    let card = "#prov-list section[data-provider='Redes SAS']";
    let text = b.wait_text(card, "the registered provider", |t| t.contains("in force"));
    assert!(text.contains("<b>sábados</b> de 8 a 12"), "{text}");
    assert!(
        text.contains("Rita Redes · rita@redes.example.org · 555 0101"),
        "{text}"
    );
    assert!(b.find_all(&format!("{card} b")).is_empty(), "markup ran");
    assert_eq!(
        b.find_all(&format!(
            "{card} a[href='https://portal.redes.example.org/']"
        ))
        .len(),
        1,
        "the portal is a link"
    );
    let api = w.api("mesa");
    let p = poll("the provider in the API", || {
        api.get("/api/providers/Redes%20SAS")
    });
    assert_eq!(p["covers"], json!(["network", "hardware"]), "{p}");
    assert_eq!(p["contacts"][0]["email"], "rita@redes.example.org", "{p}");
    assert_eq!(p["contract"]["response"]["P1"], "4h", "{p}");
    assert_eq!(p["contract"]["resolution"]["P1"], "1d", "{p}");

    // The minutes of a coordination meeting, kept with the contract.
    press(&format!("{card} button.add-minutes"));
    b.wait(&format!("{card} .minutes-form input[name=date]"));
    b.exec(
        "document.querySelector(arguments[0]).value = arguments[1];",
        json!([format!("{card} .minutes-form input[name=date]"), day(now)]),
    );
    fill(
        &format!("{card} .minutes-form textarea[name=participants]"),
        "Ana Admin\nRita Redes",
    );
    fill(
        &format!("{card} .minutes-form textarea[name=text]"),
        "Ventana de los sábados acordada",
    );
    press(&format!("{card} .minutes-submit"));
    b.wait_text(card, "the minutes", |t| {
        t.contains("Ventana de los sábados acordada") && t.contains("recorded by jefa")
    });

    // Changing the provider keeps its minutes.
    press(&format!("{card} button.edit"));
    let form_value = |name: &str| {
        b.exec(
            "return document.getElementById('provider-form').elements[arguments[0]].value;",
            json!([name]),
        )
    };
    assert_eq!(form_value("name"), "Redes SAS");
    assert_eq!(form_value("response-P1"), "4h");
    assert_eq!(form_value("start"), json!(start));
    let cond = b.wait("#pf-conditions");
    b.clear(&cond);
    b.send_keys(&cond, "domingos");
    press("#provider-submit");
    b.wait_text(card, "the changed conditions", |t| t.contains("domingos"));
    let p = poll("the change in the API", || {
        api.get("/api/providers/Redes%20SAS")
            .filter(|p| p["contract"]["conditions"] == "domingos")
    });
    assert_eq!(p["minutes"][0]["recorded_by"], "jefa", "{p}");
    assert_eq!(
        p["minutes"][0]["participants"],
        json!(["Ana Admin", "Rita Redes"])
    );
    b.exec("window.scrollTo(0, 0);", json!([]));
    let shot = b.screenshot("console-providers");
    eprintln!("screenshot: {}", shot.display());
    assert_eq!(page_errors(&b), Vec::<String>::new());
    drop(b);

    // A technician reads the register but has nothing to change it with.
    let b = signed_in(&w, "tecnico", BrowserOptions::default());
    b.click_css("#nav a[href='/providers']");
    b.wait_text("#prov-list", "the register", |t| t.contains("Redes SAS"));
    assert!(
        b.find("#provider-form").is_none(),
        "a form for a technician"
    );
    assert!(
        b.find_all("#prov-list button").is_empty(),
        "buttons for a technician"
    );
    drop(b);

    // A provider's contact is not shown the register.
    let b = signed_in(&w, "redes", BrowserOptions::default());
    let nav = b.wait("#nav a[href='/providers']");
    assert!(!b.displayed(&nav), "the register in a provider's menu");
}

/// Information classification in the page: the service desk reserves an incident's notes
/// and device data; a viewer, not cleared, sees the locked mark where they were and not
/// their text, while the service desk, cleared for reserved information, reads them.
#[test]
fn a_reserved_note_is_a_locked_mark_for_the_uncleared_and_text_for_the_cleared() {
    let (_turn, w, n) = with_an_incident_at_level1();
    const SECRET: &str = "Ana pidió baja médica por su tratamiento";
    let mesa = w.api("mesa");
    mesa.post(
        &format!("/api/incidents/{n}/note"),
        json!({ "text": SECRET }),
    );
    mesa.post(
        &format!("/api/incidents/{n}/reserve"),
        json!({
            "level": "reserved", "years": 5, "fields": ["notes", "device"],
            "justification": "names a person's health",
        }),
    );

    let b = signed_in(&w, "consulta", BrowserOptions::default());
    open_incident(&b, n);
    let note = b.wait_text("#inc-notes", "the viewer's notes", |t| t.contains("🔒"));
    assert!(!note.contains(SECRET), "{note}");
    let page = b.page_text();
    assert!(!page.contains(SECRET), "the viewer read the note: {page}");
    // Where the device's data was, the mark; and a note saying what is hidden.
    assert!(
        !b.find_all("span.reserved").is_empty(),
        "no locked mark:\n{page}"
    );
    assert!(!b.find_all("p.reserved[role='note']").is_empty(), "{page}");
    let device = b.wait_text("#inc-device", "the device box", |t| t.contains("🔒"));
    assert!(
        !device.contains("Memory") && !device.contains("Host name"),
        "the reserved inventory beside the incident: {device}"
    );
    let shot = b.screenshot("console-reserved-viewer");
    eprintln!("screenshot: {}", shot.display());
    assert_eq!(page_errors(&b), Vec::<String>::new());
    drop(b);

    let b = signed_in(&w, "mesa", BrowserOptions::default());
    open_incident(&b, n);
    let note = b.wait_text("#inc-notes", "the service desk's notes", |t| {
        t.contains(SECRET)
    });
    assert!(!note.contains("🔒"), "{note}");
    b.wait_text("#inc-device", "the cleared device box", |t| {
        t.contains("Host name")
    });
    let shot = b.screenshot("console-reserved-cleared");
    eprintln!("screenshot: {}", shot.display());
}

/// A user's report, with the readings and faults its agent attached, reads as text on
/// its incident's page: the snapshot and the open faults as lists, nothing of the page's
/// own making ("null", "[object ...]") in between.
#[test]
fn a_users_report_shows_its_snapshot_and_faults_as_text() {
    let (_turn, w, _n) = with_an_incident_at_level1();
    let config = w
        .agent
        .as_ref()
        .map(|a| a.config.clone())
        .unwrap_or_else(|| panic!("no agent"));
    let (code, out) = agent_cmd(
        &config,
        &[
            "report",
            "--category",
            "network",
            "--summary",
            "Sin red en el piso 3",
            "--text",
            "El switch parpadea",
            "--contact",
            "ext 5",
            "--urgency",
            "high",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let n = reported_incident(&out);
    let b = signed_in(&w, "mesa", BrowserOptions::default());
    b.goto(&w.url(&format!("/incidents/{n}")));
    let origin = b.wait_text("#inc-origin", "the report", |t| {
        t.contains("El switch parpadea")
    });
    for junk in ["null", "[object", "undefined"] {
        assert!(!origin.contains(junk), "{junk:?} on the page:\n{origin}");
    }
    // The agent's /var fault travelled with the report.
    assert!(origin.contains("/var"), "{origin}");
    let shot = b.screenshot("console-report");
    eprintln!("screenshot: {}", shot.display());
    assert_eq!(page_errors(&b), Vec::<String>::new());
}

/// Planned maintenance from the page: the service desk asks the provider for a service
/// no incident is behind; too little notice for network work is refused with the reason
/// shown, a week and more is registered and opens as a record with no device, its text
/// shown as text. A viewer has no such form.
#[test]
fn the_service_desk_asks_for_a_planned_service_from_the_providers_page() {
    let _turn = turn();
    let w = World::start();
    w.cli_ok(
        &[
            "provider",
            "add",
            "Redes SAS",
            "--covers",
            "network",
            "--contract-start",
            "2026-01-01",
            "--contract-end",
            "2099-12-31",
        ],
        "",
    );
    let b = signed_in(&w, "mesa", BrowserOptions::default());
    b.click_css("#nav a[href='/providers']");
    b.wait("#service-form");
    let fill = |css: &str, text: &str| b.send_keys(&b.wait(css), text);
    fill("#fld-service_summary", "Cambio del switch <b>piso 2</b>");
    fill("#fld-service_category", "network");
    fill("#fld-service_text", "switch nuevo y latiguillos");
    fill("#fld-provider", "Redes SAS");
    // A new record has no priority to keep: the empty choice says what it gets.
    let blank = b.exec(
        "return document.querySelector('#service-form #fld-priority option').textContent;",
        json!([]),
    );
    assert_eq!(blank, json!("P3 (the default)"));
    b.exec(
        "document.getElementById('fld-priority').scrollIntoView({ block: 'center' });",
        json!([]),
    );
    b.screenshot("service-form");
    b.exec(
        "document.getElementById('fld-affects_network').checked = true;",
        json!([]),
    );
    // The agreed time in the browser's own zone, `ms` from now.
    let agree_in = |ms: u64| {
        b.exec(
            "const d = new Date(Date.now() + arguments[0]);
             const p = (n) => String(n).padStart(2, '0');
             document.getElementById('fld-agreed_at').value = d.getFullYear() + '-' +
               p(d.getMonth() + 1) + '-' + p(d.getDate()) + 'T' + p(d.getHours()) + ':' +
               p(d.getMinutes());",
            json!([ms]),
        );
    };
    let press = |css: &str| {
        b.exec(
            "document.querySelector(arguments[0]).scrollIntoView({ block: 'center' });",
            json!([css]),
        );
        b.click_css(css);
    };
    const HOUR: u64 = 3_600_000;
    agree_in(6 * 24 * HOUR + 23 * HOUR);
    press("#service-submit");
    let err = b.wait_text("#service-form .error", "the refusal", |t| {
        t.contains("one week's notice")
    });
    assert!(err.contains("at or after"), "{err}");
    assert!(w
        .api("mesa")
        .get("/api/incidents")
        .is_some_and(|l| l.as_array().is_some_and(Vec::is_empty)));

    agree_in(8 * 24 * HOUR);
    press("#service-submit");
    b.until("the new record's page", || {
        b.url().contains("/incidents/").then_some(())
    });
    let origin = b.wait_text("#inc-origin", "the service", |t| {
        t.contains("Service asked of the provider")
    });
    assert!(
        origin.contains("Cambio del switch <b>piso 2</b>"),
        "{origin}"
    );
    assert!(origin.contains("switch nuevo y latiguillos"), "{origin}");
    assert!(b.find_all("#inc-origin b").is_empty(), "markup ran");
    b.wait_text("#inc-device", "no device", |t| t.contains("No device"));
    b.wait_text("#inc-state", "waiting", |t| t.contains("provider"));
    let list = poll("the list", || w.api("mesa").get("/api/incidents"));
    let n = list[0]["number"]
        .as_u64()
        .unwrap_or_else(|| panic!("no number in {list}"));
    assert_eq!(list[0]["origin"], "service", "{list}");
    assert_eq!(list[0]["subject"], "mesa", "{list}");
    // In the list: what it is, and no device.
    b.goto(&w.url("/"));
    let row = row_text(&b, n, "the service's row", |t| {
        t.contains("requested service")
    });
    assert!(row.contains("network") && row.contains("—"), "{row}");
    assert_eq!(page_errors(&b), Vec::<String>::new());
    drop(b);

    // A viewer reads the register, with no form to ask for services.
    let b = signed_in(&w, "consulta", BrowserOptions::default());
    b.click_css("#nav a[href='/providers']");
    b.wait_text("#prov-list", "the register", |t| t.contains("Redes SAS"));
    assert!(
        b.find("#service-form").is_none(),
        "a service form for a viewer"
    );
}
