//! A small W3C WebDriver client for the browser tests: Debian's `chromedriver` on a
//! free port driving one headless Chromium, and the few commands the tests need
//! (navigate, find, click, type, read, run a script, screenshot, the console log).
//!
//! It speaks the protocol over `ureq` rather than pulling in a WebDriver crate and an
//! async runtime for a dozen JSON requests. Every wait is a poll with a deadline.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{free_port, poll_for, Proc, DEADLINE};

/// The key WebDriver sends for Enter.
pub const ENTER: &str = "\u{E007}";

/// Where screenshots go: `target/screenshots/`, kept by CI as artifacts.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("screenshots")
}

fn find_tool(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    names.iter().find_map(|n| {
        let out = Command::new("sh")
            .args(["-c", &format!("command -v {n}")])
            .output()
            .ok()?;
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
    })
}

/// The browser binaries, or a failure that says how to install them. Browser tests never
/// pass by skipping: under CI `.ci/run` installs them, and elsewhere a missing browser
/// is a clear failure rather than a silent pass.
fn tools() -> (PathBuf, PathBuf) {
    let driver = find_tool("VIGIA_CHROMEDRIVER", &["chromedriver"]);
    let chromium = find_tool(
        "VIGIA_CHROMIUM",
        &["chromium", "chromium-browser", "google-chrome"],
    );
    match (driver, chromium) {
        (Some(d), Some(c)) => (d, c),
        (d, c) => {
            let missing: Vec<&str> = [(d.is_none(), "chromedriver"), (c.is_none(), "chromium")]
                .into_iter()
                .filter_map(|(m, n)| m.then_some(n))
                .collect();
            let hint = if std::env::var_os("CI").is_some() {
                "CI must install them (.ci/run)"
            } else {
                "install them with `apt-get install chromium chromium-driver`, or point \
                 VIGIA_CHROMEDRIVER and VIGIA_CHROMIUM at them"
            };
            panic!("the browser tests need {missing:?}: {hint}");
        }
    }
}

/// How to start the browser.
#[derive(Debug, Clone)]
pub struct BrowserOptions {
    /// Window width and height in CSS pixels.
    pub size: (u32, u32),
    /// The browser's language (`navigator.language`), e.g. "en-US" or "es-ES".
    pub lang: String,
}

impl Default for BrowserOptions {
    fn default() -> Self {
        Self {
            size: (1280, 900),
            lang: "en-US".into(),
        }
    }
}

/// An error a WebDriver command answered with.
#[derive(Debug)]
pub struct WdError {
    /// The W3C error code ("no such element", "javascript error"...).
    pub error: String,
    /// The driver's message.
    pub message: String,
}

/// A found element (its WebDriver reference).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element(pub String);

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One headless Chromium session behind its own chromedriver; both end when dropped.
pub struct Browser {
    driver: Option<Proc>,
    base: String,
    session: String,
    http: ureq::Agent,
}

impl Browser {
    /// Starts chromedriver on a free port (retrying if another process takes the port
    /// first) and opens a headless Chromium session.
    pub fn start(opts: BrowserOptions) -> Browser {
        let (driver_bin, chromium) = tools();
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let mut last = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let mut cmd = Command::new(&driver_bin);
            cmd.arg(format!("--port={port}"));
            let mut proc = Proc::spawn("chromedriver", cmd);
            let base = format!("http://127.0.0.1:{port}");
            let ready = poll_for("chromedriver to answer /status", DEADLINE, &mut || {
                if proc.try_status().is_some() {
                    return Some(false); // exited: most likely the port was taken
                }
                let mut r = http.get(&format!("{base}/status")).call().ok()?;
                let v: Value = r.body_mut().read_json().ok()?;
                (v["value"]["ready"] == true).then_some(true)
            });
            if !ready {
                last = proc.output();
                continue;
            }
            let mut b = Browser {
                driver: Some(proc),
                base,
                session: String::new(),
                http: http.clone(),
            };
            b.session = b.new_session(&chromium, &opts);
            return b;
        }
        panic!("chromedriver did not start after 5 ports; last output:\n{last}");
    }

    fn new_session(&self, chromium: &Path, opts: &BrowserOptions) -> String {
        let (w, h) = opts.size;
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": chromium.display().to_string(),
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--no-first-run",
                            "--password-store=basic",
                            format!("--window-size={w},{h}"),
                            format!("--lang={}", opts.lang),
                        ],
                        "prefs": { "intl.accept_languages": opts.lang },
                    },
                    "goog:loggingPrefs": { "browser": "ALL" },
                }
            }
        });
        let v = self
            .raw("POST", "/session", Some(caps))
            .unwrap_or_else(|e| panic!("new WebDriver session: {e:?}"));
        v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {v}"))
            .to_string()
    }

    /// One command; `Ok(value)` or the driver's error.
    fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, WdError> {
        let url = format!("{}{path}", self.base);
        let resp = match (method, body) {
            ("GET", _) => self.http.get(&url).call(),
            ("DELETE", _) => self.http.delete(&url).call(),
            (_, b) => self
                .http
                .post(&url)
                .send_json(b.unwrap_or_else(|| json!({}))),
        };
        let mut resp = resp.map_err(|e| WdError {
            error: "transport".into(),
            message: e.to_string(),
        })?;
        let text = resp
            .body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| WdError {
                error: "transport".into(),
                message: e.to_string(),
            })?;
        let v: Value = serde_json::from_str(&text).map_err(|e| WdError {
            error: "bad json".into(),
            message: format!("{e}: {text}"),
        })?;
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if resp.status().is_success() {
            // New sessions answer {"value": {"sessionId", "capabilities"}}.
            Ok(value)
        } else {
            Err(WdError {
                error: value["error"].as_str().unwrap_or("unknown").to_string(),
                message: value["message"].as_str().unwrap_or("").to_string(),
            })
        }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let full = format!("/session/{}{path}", self.session);
        self.raw(method, &full, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {}: {}", e.error, e.message))
    }

    /// Opens `url` and waits for its document to load.
    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    /// The current address.
    pub fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Sets the window's outer size.
    pub fn set_size(&self, w: u32, h: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({ "width": w, "height": h })),
        );
    }

    /// The first element matching `css`, if any.
    pub fn find(&self, css: &str) -> Option<Element> {
        let path = format!("/session/{}/element", self.session);
        match self.raw(
            "POST",
            &path,
            Some(json!({ "using": "css selector", "value": css })),
        ) {
            Ok(v) => v[ELEMENT_KEY].as_str().map(|s| Element(s.to_string())),
            Err(e) if e.error == "no such element" => None,
            Err(e) => panic!("find {css:?}: {}: {}", e.error, e.message),
        }
    }

    /// Every element matching `css`.
    pub fn find_all(&self, css: &str) -> Vec<Element> {
        let v = self.cmd(
            "POST",
            "/elements",
            Some(json!({ "using": "css selector", "value": css })),
        );
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT_KEY].as_str().map(|s| Element(s.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Polls `f` until it returns `Some`, like [`super::poll`], but a timeout says where the
    /// page was and what it showed, and saves a screenshot of it.
    pub fn until<T>(&self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let end = Instant::now() + DEADLINE;
        let mut pause = Duration::from_millis(10);
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() >= end {
                let shot = self.screenshot("timed-out");
                panic!(
                    "timed out after {DEADLINE:?} waiting for {what}\nat {}\nscreenshot {}\n\
                     page:\n{}\nconsole: {:?}",
                    self.url(),
                    shot.display(),
                    self.page_text(),
                    self.console_log()
                );
            }
            std::thread::sleep(pause); // polling a condition, not waiting for time to pass
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Waits for an element matching `css` and returns it.
    pub fn wait(&self, css: &str) -> Element {
        self.until(&format!("an element matching {css:?}"), || self.find(css))
    }

    /// Waits for an element matching `css` that is displayed.
    pub fn wait_visible(&self, css: &str) -> Element {
        self.until(&format!("a visible element matching {css:?}"), || {
            self.find(css).filter(|e| self.displayed(e))
        })
    }

    /// Waits until the text of the element matching `css` satisfies `ok`; returns it.
    pub fn wait_text(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        self.until(&format!("{what} (in {css:?})"), || {
            let e = self.find(css)?;
            let text = self.try_text(&e)?;
            ok(&text).then_some(text)
        })
    }

    /// Clicks the element matching `css` once it is there, finding it again if the page
    /// redrew it between finding and clicking (a live update replacing a button).
    pub fn click_css(&self, css: &str) {
        self.until(&format!("a clickable element matching {css:?}"), || {
            let e = self.find(css)?;
            match self.raw(
                "POST",
                &format!("/session/{}/element/{}/click", self.session, e.0),
                None,
            ) {
                Ok(_) => Some(()),
                Err(err) if err.error == "stale element reference" => None,
                Err(err) => panic!("click {css:?}: {}: {}", err.error, err.message),
            }
        });
    }

    /// Clicks an element.
    pub fn click(&self, e: &Element) {
        self.cmd("POST", &format!("/element/{}/click", e.0), None);
    }

    /// Types `text` into an element.
    pub fn send_keys(&self, e: &Element, text: &str) {
        self.cmd(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({ "text": text })),
        );
    }

    /// Presses keys on whatever has the focus (the page's keyboard shortcuts).
    pub fn press(&self, keys: &str) {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|c| {
                let k = c.to_string();
                [
                    json!({ "type": "keyDown", "value": k }),
                    json!({ "type": "keyUp", "value": k }),
                ]
            })
            .collect();
        self.cmd(
            "POST",
            "/actions",
            Some(json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": actions }] })),
        );
    }

    /// Empties an input.
    pub fn clear(&self, e: &Element) {
        self.cmd("POST", &format!("/element/{}/clear", e.0), None);
    }

    /// The rendered text of an element.
    pub fn text(&self, e: &Element) -> String {
        self.cmd("GET", &format!("/element/{}/text", e.0), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The text of an element, or `None` if it went away (the page redrew it).
    pub fn try_text(&self, e: &Element) -> Option<String> {
        let path = format!("/session/{}/element/{}/text", self.session, e.0);
        self.raw("GET", &path, None)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
    }

    /// Whether an element is displayed.
    pub fn displayed(&self, e: &Element) -> bool {
        let path = format!("/session/{}/element/{}/displayed", self.session, e.0);
        self.raw("GET", &path, None).ok() == Some(Value::Bool(true))
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns its value.
    pub fn exec(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Runs an asynchronous `script`, which calls `arguments[arguments.length - 1]`
    /// with its result (a fetch from the page, with the page's cookie).
    pub fn exec_async(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/async",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// The text of the whole page.
    pub fn page_text(&self) -> String {
        self.exec("return document.body.innerText;", json!([]))
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Saves a PNG screenshot as `target/screenshots/{name}.png` and returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let v = self.cmd("GET", "/screenshot", None);
        let png = decode_base64(v.as_str().unwrap_or_default());
        assert!(
            png.starts_with(b"\x89PNG"),
            "the screenshot is not a PNG ({} bytes)",
            png.len()
        );
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }

    /// The browser console's entries since the last call (Chromium's log endpoint):
    /// each `{level, message}`. CSP violations and uncaught errors land here.
    pub fn console_log(&self) -> Vec<Value> {
        let path = format!("/session/{}/se/log", self.session);
        match self.raw("POST", &path, Some(json!({ "type": "browser" }))) {
            Ok(Value::Array(a)) => a,
            Ok(_) => Vec::new(),
            Err(e) => panic!("browser log: {}: {}", e.error, e.message),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session makes chromedriver stop Chromium; then the driver goes.
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = self.raw("DELETE", &path, None);
        }
        drop(self.driver.take());
    }
}

/// Standard base64 (the screenshot's encoding), without a dependency for it.
pub fn decode_base64(s: &str) -> Vec<u8> {
    fn val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
