//! Shared helpers for the end-to-end tests: real processes (`vigia collector run`,
//! `vigia agent run`, `mosquitto`) on ports picked at run time, output read line by line,
//! and polling with a deadline instead of sleeping.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long any single wait in a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `f` until it returns `Some`, failing the test with `what` after `DEADLINE`.
pub fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    poll_for(what, DEADLINE, &mut f)
}

/// [`poll`] with an explicit deadline.
pub fn poll_for<T>(what: &str, limit: Duration, f: &mut impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + limit;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {limit:?} waiting for {what}"
        );
        // Back off gently: this is polling a condition, not waiting for time to pass.
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// A free TCP port on 127.0.0.1, for programs that cannot bind port 0 and report it
/// (Mosquitto). The port is free when returned; a clash is retried by the callers.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    l.local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A child process killed (SIGKILL) and reaped when dropped, with its stdout and stderr
/// collected line by line.
pub struct Proc {
    pub name: String,
    child: Child,
    lines: Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("NO_COLOR", "1")
            .env(
                "RUST_LOG",
                std::env::var("VIGIA_TEST_LOG").unwrap_or_else(|_| "info".into()),
            );
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stdout = child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
        let stderr = child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
        for stream in [stdout, stderr].into_iter().flatten() {
            let tx = tx.clone();
            let log = Arc::clone(&log);
            let tag = name.to_string();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if std::env::var_os("VIGIA_TEST_ECHO").is_some() {
                        eprintln!("[{tag}] {line}");
                    }
                    if let Ok(mut l) = log.lock() {
                        l.push(line.clone());
                    }
                    let _ = tx.send(line);
                }
            });
        }
        Proc {
            name: name.into(),
            child,
            lines: rx,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for an output line containing `needle` and returns it.
    pub fn wait_line(&self, needle: &str) -> String {
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "{}: no line containing {needle:?} within {DEADLINE:?}; output:\n{}",
                    self.name,
                    self.output()
                ),
            }
        }
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let name = self.name.clone();
        let status = poll(&format!("{name} to exit after SIGTERM"), || {
            self.child.try_wait().ok().flatten()
        });
        status
    }

    /// SIGKILL, like a power cut for the process.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn try_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `vigia` binary with a subcommand (`agent`, `collector`).
pub fn vigia(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigia"));
    cmd.args(args);
    cmd
}

/// A running collector process and its addresses, with an API token of its first admin
/// (who also holds the service-desk role).
pub struct Collector {
    pub proc: Proc,
    pub mqtt_url: String,
    pub http: String,
    pub config: PathBuf,
    pub token: String,
}

/// The data directory a collector config names (relative to the file).
fn data_dir_of(config: &Path) -> PathBuf {
    let text = std::fs::read_to_string(config).unwrap_or_else(|e| panic!("read config: {e}"));
    let v: toml::Value = toml::from_str(&text).unwrap_or_else(|e| panic!("config: {e}"));
    let dir = PathBuf::from(
        v.get("data_dir")
            .and_then(|d| d.as_str())
            .unwrap_or_else(|| panic!("no data_dir in {}", config.display())),
    );
    config.parent().unwrap_or(Path::new(".")).join(dir)
}

/// Issues an API token for `login` at `http` (`http://host:port`).
pub fn issue_token(http: &str, login: &str, password: &str, scope: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .post(&format!("{http}/api/tokens"))
        .send_json(serde_json::json!({
            "login": login, "password": password, "scope": scope, "name": "e2e test"
        }))
        .unwrap_or_else(|e| panic!("token request: {e}"));
    let text = r.body_mut().read_to_string().unwrap_or_default();
    assert_eq!(r.status().as_u16(), 201, "token for {login}: {text}");
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    v["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {text}"))
        .to_owned()
}

/// Writes a collector config under `dir` and starts `vigia collector run`. `broker` is an
/// external broker URL, or `None` for the embedded one on a free port.
pub fn start_collector(dir: &Path, broker: Option<&str>) -> Collector {
    let config = dir.join("collector.toml");
    let mqtt = match broker {
        Some(url) => format!("url = \"{url}\"\n"),
        None => "embedded_port = 0\n".to_string(),
    };
    let text = format!(
        "data_dir = \"{}\"\n\n[mqtt]\n{mqtt}\n[http]\nlisten = \"127.0.0.1:0\"\n",
        dir.join("collector-data").display()
    );
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("write config: {e}"));
    start_collector_with(&config)
}

/// Starts `vigia collector run` on an existing config file.
pub fn start_collector_with(config: &Path) -> Collector {
    let proc = Proc::spawn(
        "collector",
        vigia(&[
            "collector",
            "--config",
            &config.display().to_string(),
            "run",
        ]),
    );
    let mqtt_url = url_after(&proc.wait_line("mqtt listening on"), "mqtt listening on");
    let http = url_after(&proc.wait_line("http listening on"), "http listening on");
    // The first admin's password stays in the data directory until it is changed.
    let file = data_dir_of(config).join("initial-admin-password");
    let password =
        std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let token = issue_token(&http, "admin", password.trim(), "admin");
    Collector {
        proc,
        mqtt_url,
        http,
        config: config.to_path_buf(),
        token,
    }
}

fn url_after(line: &str, marker: &str) -> String {
    line.split(marker)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string()
}

impl Collector {
    pub fn get(&self, path: &str) -> Option<Value> {
        http_get_json_as(&format!("{}{path}", self.http), &self.token)
    }

    /// The incidents the collector lists (all states; the API pages by 50 by default,
    /// so ask for its largest page).
    pub fn incidents(&self) -> Vec<Value> {
        self.get("/api/incidents?limit=1000")
            .and_then(|v| match v {
                Value::Array(a) => Some(a),
                Value::Object(mut o) => o.remove("incidents").and_then(|v| match v {
                    Value::Array(a) => Some(a),
                    _ => None,
                }),
                _ => None,
            })
            .unwrap_or_default()
    }

    pub fn device(&self, id: &str) -> Option<Value> {
        self.get(&format!("/api/devices/{id}"))
    }

    /// `vigia collector --api URL <args>` as the first admin, run to completion;
    /// (exit code, stdout and stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String) {
        self.cli_as(&self.token, args)
    }

    /// Adds the contact account `login` of `provider` and returns its API token.
    pub fn provider_account(&self, login: &str, provider: &str) -> String {
        let (code, out) = self.cli(&[
            "user",
            "add",
            login,
            "--role",
            "provider",
            "--provider",
            provider,
        ]);
        assert_eq!(code, 0, "{out}");
        let password = out
            .lines()
            .find_map(|l| l.strip_prefix("password (shown once): "))
            .unwrap_or_else(|| panic!("no password in {out}"));
        issue_token(&self.http, login, password, "act")
    }

    /// [`Self::cli`] with another account's API token.
    pub fn cli_as(&self, token: &str, args: &[&str]) -> (i32, String) {
        let mut full = vec!["collector", "--api", self.http.as_str()];
        full.extend_from_slice(args);
        let out = vigia(&full)
            .env("VIGIA_TOKEN", token)
            .output()
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
}

/// GET a URL and parse JSON; `None` on any failure (the caller polls).
pub fn http_get_json(url: &str) -> Option<Value> {
    let mut resp = ureq::get(url).call().ok()?;
    resp.body_mut().read_json::<Value>().ok()
}

/// [`http_get_json`] with an API token.
pub fn http_get_json_as(url: &str, token: &str) -> Option<Value> {
    let mut resp = ureq::get(url)
        .header("authorization", &format!("Bearer {token}"))
        .call()
        .ok()?;
    resp.body_mut().read_json::<Value>().ok()
}

/// A Mosquitto broker on a free port, killed when dropped.
pub struct Mosquitto {
    pub port: u16,
    pub proc: Option<Proc>,
    conf: PathBuf,
}

impl Mosquitto {
    pub fn start(dir: &Path) -> Mosquitto {
        Self::start_on(dir, free_port())
    }

    /// Starts Mosquitto on `port` (used to bring a broker back on the same address).
    pub fn start_on(dir: &Path, port: u16) -> Mosquitto {
        let conf = dir.join(format!("mosquitto-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_queued_messages 100000\nmax_packet_size 32768\n"
            ),
        )
        .unwrap_or_else(|e| panic!("write mosquitto config: {e}"));
        let mut m = Mosquitto {
            port,
            proc: None,
            conf,
        };
        m.up();
        m
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Starts (again) on the same port.
    pub fn up(&mut self) {
        let mut cmd = Command::new("mosquitto");
        cmd.arg("-c").arg(&self.conf);
        let mut proc = Proc::spawn("mosquitto", cmd);
        let addr = self.addr();
        poll("mosquitto to accept connections", || {
            if let Some(status) = proc.try_status() {
                panic!("mosquitto exited with {status}: {}", proc.output());
            }
            TcpStream::connect(addr).ok()
        });
        self.proc = Some(proc);
    }

    /// Kills the broker (SIGKILL).
    pub fn down(&mut self) {
        if let Some(p) = self.proc.take() {
            p.kill9();
        }
    }
}

/// A fresh temporary directory for one test.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("vigia-e2e-")
        .tempdir()
        .unwrap_or_else(|e| panic!("tempdir: {e}"))
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// True when a test must be skipped because `tools` are missing. Never in CI
/// (`CI` set): there the tools must be installed (`.ci/run` does) and this fails instead.
pub fn skip_without(tools: &[&str]) -> bool {
    let missing: Vec<_> = tools.iter().filter(|t| !have(t)).collect();
    if missing.is_empty() {
        return false;
    }
    assert!(
        std::env::var("CI").is_err(),
        "CI must install {missing:?} (see .ci/run)"
    );
    eprintln!(
        "skipped: {missing:?} not installed (apt-get install mosquitto mosquitto-clients openssl)"
    );
    true
}

/// A running agent process.
pub struct Agent {
    pub proc: Proc,
    pub config: PathBuf,
}

/// Writes an agent config under `dir` whose readings come from the replay file `replay`,
/// and starts `vigia agent run`. `extra` is appended to the config (TOML).
pub fn start_agent(dir: &Path, id: &str, broker: &str, replay: &Path, extra: &str) -> Agent {
    let config = write_agent_config(dir, id, broker, replay, extra);
    start_agent_with(&config)
}

pub fn write_agent_config(
    dir: &Path,
    id: &str,
    broker: &str,
    replay: &Path,
    extra: &str,
) -> PathBuf {
    let config = dir.join(format!("agent-{id}.toml"));
    let text = format!(
        "interval = \"50ms\"\ndata_dir = \"{data}\"\n{extra}\n\n[device]\nid = \"{id}\"\n\n\
         [mqtt]\nurl = \"{broker}\"\n\n[detect]\nreplay = \"{replay}\"\n",
        data = dir.join(format!("agent-{id}-data")).display(),
        replay = replay.display(),
    );
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("write agent config: {e}"));
    config
}

pub fn start_agent_with(config: &Path) -> Agent {
    let proc = Proc::spawn(
        "agent",
        vigia(&["agent", "--config", &config.display().to_string(), "run"]),
    );
    Agent {
        proc,
        config: config.to_path_buf(),
    }
}

/// One replay line: `mount` at `used_pct` % of its bytes used.
pub fn disk_line(mount: &str, used_pct: u64) -> String {
    format!(
        "{{\"disk\":[{{\"mount\":\"{mount}\",\"total_bytes\":1000000,\"avail_bytes\":{},\"files\":1000,\"files_free\":900}}]}}\n",
        (100 - used_pct) * 10_000
    )
}

/// Appends `n` copies of `line` to the replay file.
pub fn append_lines(path: &Path, line: &str, n: usize) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    // One write call per batch keeps lines whole for the reader.
    f.write_all(line.repeat(n).as_bytes())
        .unwrap_or_else(|e| panic!("append: {e}"));
}

/// The incidents of one device.
pub fn device_incidents(c: &Collector, device: &str) -> Vec<Value> {
    c.incidents()
        .into_iter()
        .filter(|i| i["device"] == device)
        .collect()
}

/// `vigia agent --config F <args>`, run to completion in English; returns (exit code,
/// stdout and stderr).
pub fn agent_cmd(config: &Path, args: &[&str]) -> (i32, String) {
    let cfg = config.display().to_string();
    let mut full = vec!["agent", "--config", cfg.as_str()];
    full.extend_from_slice(args);
    let out = vigia(&full)
        .env("LANG", "en_US.UTF-8")
        .output()
        .unwrap_or_else(|e| panic!("vigia agent: {e}"));
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The running agent's `status --json`, or `None` while it cannot answer.
pub fn agent_status(config: &Path) -> Option<Value> {
    let (code, out) = agent_cmd(config, &["status", "--json"]);
    (code == 0)
        .then(|| serde_json::from_str(out.trim()).ok())
        .flatten()
}

/// The number in `report`'s "... incident number N" line.
pub fn reported_incident(out: &str) -> u64 {
    out.split("incident number")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
        .unwrap_or_else(|| panic!("no incident number in:\n{out}"))
}

/// The WebDriver client of the browser tests (`tests/console_browser.rs`).
pub mod webdriver;

/// A scripted webhook receiver (`tests/notify.rs`, `tests/console_browser.rs`).
pub mod webhook;

/// Runs a bash script in `dir`; fails the test with its output if it fails.
pub fn sh(dir: &Path, script: &str) {
    let out = Command::new("bash")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("bash: {e}"));
    assert!(
        out.status.success(),
        "{script}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`ca.crt`) and a server certificate for localhost and 127.0.0.1 (and `extra_ip`)
/// in `dir`, as the production broker files expect them. `pre` prefixes each signing
/// command (a faketime preload, to date them in the past).
pub fn make_pki(dir: &Path, extra_ip: Option<&str>, pre: &str) {
    let san = match extra_ip {
        Some(ip) => format!("DNS:localhost,IP:127.0.0.1,IP:{ip}"),
        None => "DNS:localhost,IP:127.0.0.1".into(),
    };
    sh(
        dir,
        &format!(
            "{pre}openssl req -x509 -newkey rsa:2048 -nodes -days 3 -subj /CN=vigia-test-ca \
               -keyout ca.key -out ca.crt 2>/dev/null
             openssl req -newkey rsa:2048 -nodes -subj /CN=localhost \
               -keyout server.key -out server.csr 2>/dev/null
             printf 'subjectAltName={san}\\nbasicConstraints=CA:FALSE\\n' > ext.cnf
             {pre}openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
               -days 3 -extfile ext.cnf -out server.crt 2>/dev/null
             chmod 644 server.key"
        ),
    );
}

/// The device password `enroll-device` printed (it exited with `out`).
pub fn enrolled_password(id: &str, out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "enroll-device {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("password = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no password in enroll output:\n{text}"))
        .to_string()
}

/// Debian's own `/etc/mosquitto/mosquitto.conf`, as its `mosquitto` package installs it,
/// with its paths moved into `dir`: the production file is installed, as the README says,
/// into the directory it includes, so a setting the two would both make shows here as it
/// would on a server. Returns the main file, to start Mosquitto with, and the included
/// directory, where the production file goes.
pub fn debian_mosquitto_main(dir: &Path) -> (PathBuf, PathBuf) {
    let stock = "/etc/mosquitto/mosquitto.conf";
    let text = std::fs::read_to_string(stock)
        .unwrap_or_else(|e| panic!("{stock} (from Debian's mosquitto package): {e}"));
    let conf_d = dir.join("conf.d");
    std::fs::create_dir_all(&conf_d).unwrap_or_else(|e| panic!("{e}"));
    let main: String = text
        .lines()
        .filter(|l| !l.starts_with("pid_file") && !l.starts_with("log_dest file"))
        .map(|l| {
            if l.starts_with("persistence_location") {
                format!("persistence_location {}/", dir.display())
            } else if l.starts_with("include_dir") {
                format!("include_dir {}", conf_d.display())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        // Started as root, Mosquitto drops to the `mosquitto` user, which cannot enter the
        // test's private temp dir; `user root` keeps it as the test's user.
        + "\nuser root\n";
    assert!(
        main.contains("include_dir"),
        "{stock} no longer includes conf.d:\n{text}"
    );
    let path = dir.join("mosquitto.conf");
    std::fs::write(&path, main).unwrap_or_else(|e| panic!("write: {e}"));
    (path, conf_d)
}
