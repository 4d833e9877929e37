//! The fault matrix (issue 11): Vigía's promise — a fault detected on a device becomes
//! exactly one stored event and one incident, whatever breaks in between — measured case
//! by case against real processes.
//!
//! Every case runs a real Mosquitto on the production files in `broker-config/` (TLS from a
//! CA made here, one account per device made by `enroll-device`, the ACL; paths and port
//! rewritten for a temp dir, as `tests/broker_config.rs` does), a real `vigia collector`,
//! and several real `vigia agent` processes whose readings are replayed from files the
//! test appends to: every line flips every one of a device's mounts between 95 % and 50 %
//! used, so each line the agent reads raises or clears one `disk_space` fault per mount.
//! The fault is injected while those events are in flight, more are produced during it,
//! and once it is healed the case waits (polling, with a deadline) until every agent's
//! spool is empty and the collector holds what was sent.
//!
//! "Sent" comes from the agents' side only: each agent logs `fault event spooled seq=…`
//! once its spool has taken an event (flushed), so the set of `(instance, seq)` per device
//! is read from the agents' own output, and the set of fault keys they raised gives the
//! incidents expected. "Stored" is read from the collector's API: the seqs of each
//! instance (`/api/devices/{id}/events`, gaps included) and every incident
//! (`/api/incidents?limit=1000`, then each one's audit trail). A case fails on any event
//! lost, any stored event no agent sent, any incident opened twice or never, and any
//! event applied to its incident more than once.
//!
//! Each case prints one row (also appended to `target/fault-matrix.md`); a case that
//! finds a defect prints FAILING with the reason and fails. Cases run one at a time (a
//! shared lock): they are timing-sensitive and share two cores in CI.
//!
//! Needs `mosquitto`, `mosquitto_passwd` and `openssl`; the clock cases libfaketime
//! (`faketime`); the disk-full and partition cases root and `mount` / `ip`. A missing one
//! fails the case with the command that installs it, inside and outside CI: a case never
//! passes without having run.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Agents per case.
const AGENTS: usize = 3;
/// Mounts per agent: every replayed line is one event per mount.
const MOUNTS: usize = 6;
/// Lines fed per phase (before, during and after a fault); even, so a phase ends with
/// every fault cleared.
const PHASE: usize = 20;
/// How long the broker stays down in the outage case: a minute, as long as the agents'
/// resend timer, four keep-alives and past where their reconnect backoff caps.
const OUTAGE: Duration = Duration::from_secs(60);
/// How long a partition lasts: longer than 1.5 keep-alives, so the broker notices.
const PARTITION: Duration = Duration::from_secs(12);
/// How long a case may take to converge after its fault is healed. The agents resend
/// anything unacknowledged after 60 s at the latest, so this leaves room for one such
/// round and the ingest behind it.
const CONVERGE: Duration = Duration::from_secs(120);
/// The agents' MQTT keep-alive.
const KEEP_ALIVE: &str = "3s";

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn have_tool(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// libfaketime's multi-threaded build, preloaded into an agent to move its wall clock.
fn libfaketime() -> Option<PathBuf> {
    let dirs = std::fs::read_dir("/usr/lib").ok()?;
    dirs.flatten()
        .map(|d| d.path().join("faketime/libfaketimeMT.so.1"))
        .chain([PathBuf::from("/usr/lib/faketime/libfaketimeMT.so.1")])
        .find(|p| p.exists())
}

/// Fails (never skips) when something a case needs is missing: `tools`, libfaketime
/// (`faketime`), root (`root`).
fn require(tools: &[&str], faketime: bool, root: bool) {
    let mut missing: Vec<&str> = tools.iter().copied().filter(|t| !have_tool(t)).collect();
    if faketime && libfaketime().is_none() {
        missing.push("libfaketime");
    }
    assert!(
        missing.is_empty(),
        "this case needs {missing:?}: apt-get install mosquitto mosquitto-clients openssl \
         iproute2 mount faketime (.ci/run installs them)"
    );
    if root {
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        assert_eq!(
            uid, "0",
            "this case needs root (a tmpfs mount or a network namespace); .ci/run runs as root"
        );
    }
}

/// A CA and a server certificate for 127.0.0.1 (and `extra_ip`). `backdate`: made with
/// the clock a day back, so a device whose clock is hours behind still finds it valid.
fn make_pki_dated(dir: &Path, extra_ip: Option<&str>, backdate: bool) {
    let pre = match (backdate, libfaketime()) {
        (true, Some(lib)) => format!("LD_PRELOAD={} FAKETIME=-1d ", lib.display()),
        _ => String::new(),
    };
    make_pki(dir, extra_ip, &pre);
}

/// Runs `enroll-device` and returns the password it generated.
fn enroll(dir: &Path, id: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("broker-config/enroll-device");
    let out = Command::new(&script)
        .arg(id)
        .arg(dir.join("vigia.passwd"))
        .output()
        .unwrap_or_else(|e| panic!("enroll-device: {e}"));
    enrolled_password(id, &out)
}

/// Mosquitto on the production config, rewritten for `dir`, listening on `bind:port`.
struct Broker {
    conf: PathBuf,
    bind: String,
    port: u16,
    proc: Option<Proc>,
}

impl Broker {
    fn start(dir: &Path, bind: &str, persistence: bool) -> Broker {
        let port = free_port();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("broker-config");
        let conf = std::fs::read_to_string(root.join("mosquitto.conf"))
            .unwrap_or_else(|e| panic!("read mosquitto.conf: {e}"));
        assert!(conf.contains("\npersistence true\n"), "{conf}");
        let d = dir.display();
        let mut conf = conf
            .replace("listener 8883", &format!("listener {port} {bind}"))
            .replace("/etc/mosquitto/certs/", &format!("{d}/"))
            .replace("/etc/mosquitto/vigia.passwd", &format!("{d}/vigia.passwd"))
            .replace("/etc/mosquitto/vigia.acl", &format!("{d}/vigia.acl"))
            .replace("log_dest syslog", "log_dest stderr");
        if !persistence {
            conf = conf.replace("\npersistence true\n", "\npersistence false\n");
        }
        let unrewritten = conf
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .any(|l| l.contains("/etc/") || l.contains("/var/"));
        assert!(!unrewritten, "unrewritten path:\n{conf}");
        std::fs::copy(root.join("vigia.acl"), dir.join("vigia.acl"))
            .unwrap_or_else(|e| panic!("copy acl: {e}"));
        // Where Debian's main file includes it (read after it: its `persistence` wins).
        let (path, conf_d) = debian_mosquitto_main(dir);
        std::fs::write(conf_d.join("vigia.conf"), conf).unwrap_or_else(|e| panic!("write: {e}"));
        let mut b = Broker {
            conf: path,
            bind: bind.into(),
            port,
            proc: None,
        };
        b.up();
        b
    }

    fn url(&self) -> String {
        format!("mqtts://{}:{}", self.bind, self.port)
    }

    fn up(&mut self) {
        let mut cmd = Command::new("mosquitto");
        cmd.arg("-c").arg(&self.conf);
        let mut proc = Proc::spawn("mosquitto", cmd);
        let addr = format!("{}:{}", self.bind, self.port);
        poll("mosquitto listening", || {
            if let Some(status) = proc.try_status() {
                panic!("mosquitto exited with {status}:\n{}", proc.output());
            }
            std::net::TcpStream::connect(&addr).ok()
        });
        self.proc = Some(proc);
    }

    /// A crash: SIGKILL, nothing saved.
    fn kill9(&mut self) {
        if let Some(p) = self.proc.take() {
            p.kill9();
        }
    }

    /// A clean stop (SIGTERM): with persistence on, Mosquitto saves its store.
    fn stop(&mut self) {
        if let Some(p) = self.proc.take() {
            let status = p.terminate();
            assert!(status.success(), "mosquitto exit: {status}");
        }
    }
}

/// How an agent process is started.
#[derive(Clone)]
enum Wrap {
    Plain,
    /// A wall clock moved by a fixed offset (`FAKETIME`, e.g. `+4h`).
    Clock(String),
    /// A wall clock read from a file the test rewrites (libfaketime's timestamp file).
    ClockFile(PathBuf),
    /// Inside a network namespace.
    Netns(String),
}

/// One run of an agent process: its output, and whether it ended with SIGKILL.
struct RunLog {
    generation: u32,
    proc: Proc,
    killed: bool,
}

/// One spooled fault event, from the agent's log.
#[derive(Debug, Clone)]
struct Spooled {
    seq: u64,
    subject: String,
    kind: String,
    action: String,
}

fn parse_spooled(output: &str) -> Vec<Spooled> {
    output
        .lines()
        .filter(|l| l.contains("fault event spooled"))
        .filter_map(|l| {
            let field = |name: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(name))
                    // tracing writes string fields quoted, Display fields bare
                    .map(|v| v.trim_matches('"').to_owned())
            };
            Some(Spooled {
                seq: field("seq=")?.parse().ok()?,
                subject: field("subject=")?,
                kind: field("kind=")?,
                action: field("action=")?,
            })
        })
        .collect()
}

/// The seqs a run handed to its MQTT client (`event published`, a debug line).
fn published(output: &str) -> BTreeSet<u64> {
    output
        .lines()
        .filter(|l| l.contains("event published"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("seq="))
                .and_then(|v| v.parse().ok())
        })
        .collect()
}

/// A device: its account, config, runs and the readings it is fed.
struct Dev {
    id: String,
    password: String,
    dir: PathBuf,
    config: PathBuf,
    data_dir: PathBuf,
    url: String,
    ca: PathBuf,
    wrap: Wrap,
    /// Extra top-level TOML sections (e.g. `[spool]`).
    extra: String,
    /// Sampling interval: one replayed line per interval.
    interval: &'static str,
    /// The agent instance: raised by a reinstall (a new data directory).
    generation: u32,
    run: u32,
    replay: PathBuf,
    /// Lines appended to the current run's replay file.
    fed: usize,
    finished: Vec<RunLog>,
    proc: Option<Proc>,
    /// The collector's id of each generation's instance (a lookup key, nothing more).
    instances: BTreeMap<u32, u64>,
}

fn disks_line(used: u64) -> String {
    let disks: Vec<String> = (0..MOUNTS)
        .map(|m| {
            format!(
                "{{\"mount\":\"/m{m}\",\"total_bytes\":1000000,\"avail_bytes\":{},\"files\":1000,\"files_free\":900}}",
                (100 - used) * 10_000
            )
        })
        .collect();
    format!("{{\"disk\":[{}]}}\n", disks.join(","))
}

impl Dev {
    fn write_config(&self, interval: &str) {
        let text = format!(
            "interval = \"{interval}\"\ndata_dir = \"{data}\"\n\n[device]\nid = \"{id}\"\n\n\
             [mqtt]\nurl = \"{url}\"\nusername = \"{id}\"\npassword = \"{pw}\"\n\
             ca_file = \"{ca}\"\nkeep_alive = \"{KEEP_ALIVE}\"\n\n{extra}\n\
             [detect]\nreplay = \"{replay}\"\n\n\
             [detect.disk_space]\nraise_after = 1\nclear_after = 1\n",
            data = self.data_dir.display(),
            id = self.id,
            url = self.url,
            pw = self.password,
            ca = self.ca.display(),
            extra = self.extra,
            replay = self.replay.display(),
        );
        std::fs::write(&self.config, text).unwrap_or_else(|e| panic!("write agent config: {e}"));
    }

    /// Starts a new run on a fresh (empty) replay file: a restarted agent reads its file
    /// from the start, and its detectors start with no fault open.
    fn start(&mut self) {
        assert!(self.proc.is_none(), "{} already running", self.id);
        self.run += 1;
        self.replay = self.dir.join(format!(
            "readings-{}-g{}-r{}.jsonl",
            self.id, self.generation, self.run
        ));
        std::fs::write(&self.replay, "").unwrap_or_else(|e| panic!("{e}"));
        self.fed = 0;
        self.write_config(self.interval);
        let bin = env!("CARGO_BIN_EXE_vigia");
        let cfg = self.config.display().to_string();
        // `env` sets what `Proc::spawn` would override (RUST_LOG), then execs the agent:
        // the process id stays the agent's. Debug for the session shows what it published.
        let mut args: Vec<String> = Vec::new();
        match &self.wrap {
            Wrap::Netns(ns) => args.extend(["ip", "netns", "exec", ns].map(String::from)),
            Wrap::Plain | Wrap::Clock(_) | Wrap::ClockFile(_) => {}
        }
        args.push("env".into());
        args.push("RUST_LOG=info,vigia_agent::link::session=debug".into());
        let lib = || {
            libfaketime()
                .unwrap_or_else(|| panic!("libfaketime missing"))
                .display()
                .to_string()
        };
        match &self.wrap {
            Wrap::Clock(offset) => {
                args.push(format!("LD_PRELOAD={}", lib()));
                args.push(format!("FAKETIME={offset}"));
                args.push("FAKETIME_DONT_FAKE_MONOTONIC=1".into());
            }
            Wrap::ClockFile(file) => {
                args.push(format!("LD_PRELOAD={}", lib()));
                args.push(format!("FAKETIME_TIMESTAMP_FILE={}", file.display()));
                args.push("FAKETIME_NO_CACHE=1".into());
                args.push("FAKETIME_DONT_FAKE_MONOTONIC=1".into());
            }
            Wrap::Plain | Wrap::Netns(_) => {}
        }
        args.extend([bin.to_string(), "agent".into(), "--config".into(), cfg]);
        args.push("run".into());
        let mut cmd = Command::new(&args[0]);
        cmd.args(&args[1..]);
        self.proc = Some(Proc::spawn(&self.id, cmd));
    }

    /// Appends `n` lines (even), starting with every mount over its threshold.
    fn feed(&mut self, n: usize) {
        assert!(n.is_multiple_of(2));
        let text: String = (0..n)
            .map(|i| disks_line(if i % 2 == 0 { 95 } else { 50 }))
            .collect();
        append_lines(&self.replay, &text, 1);
        self.fed += n;
    }

    /// Ends the current run: SIGKILL (`killed`) or SIGTERM and a clean exit. The process
    /// is kept (reaped) so its output is read to the end later, pipe included.
    fn end_run(&mut self, killed: bool) {
        if let Some(mut p) = self.proc.take() {
            let signal = if killed { "-KILL" } else { "-TERM" };
            let _ = Command::new("kill")
                .args([signal, &p.pid().to_string()])
                .status();
            let id = self.id.clone();
            let status = poll(&format!("{id} to exit"), || p.try_status());
            if !killed {
                assert!(status.success(), "{id} exit: {status}\n{}", p.output());
            }
            self.finished.push(RunLog {
                generation: self.generation,
                proc: p,
                killed,
            });
        }
    }

    fn kill9(&mut self) {
        self.end_run(true);
    }

    /// The current run's output so far.
    fn output(&self) -> String {
        self.proc.as_ref().map(Proc::output).unwrap_or_default()
    }

    /// Whether the current run has read every line fed to it and spooled what they make.
    fn caught_up(&self) -> bool {
        parse_spooled(&self.output()).len() == self.fed * MOUNTS
    }

    fn status(&self) -> Option<Value> {
        agent_status(&self.config)
    }

    /// Everything it spooled, per generation, with the seq a SIGKILL may have cut out
    /// of the log (spooled, its log line not yet written): one per killed run.
    fn sent(&self) -> BTreeMap<u32, (Vec<Spooled>, BTreeSet<u64>)> {
        let mut out: BTreeMap<u32, (Vec<Spooled>, BTreeSet<u64>)> = BTreeMap::new();
        let current = self
            .proc
            .as_ref()
            .map(|p| (self.generation, p.output(), false));
        let runs = self
            .finished
            .iter()
            .map(|r| (r.generation, r.proc.output(), r.killed));
        for (generation, output, killed) in runs.chain(current) {
            let entry = out.entry(generation).or_default();
            entry.0.extend(parse_spooled(&output));
            if killed {
                let max = entry.0.iter().map(|s| s.seq).max().unwrap_or(0);
                entry.1.insert(max + 1);
            }
        }
        out
    }

    /// The collector's id of the instance the device speaks with now.
    fn note_instance(&mut self, c: &Collector) {
        let g = self.generation;
        let id = self.id.clone();
        let instance = poll(&format!("{id}'s instance at the collector"), || {
            c.device(&id)
                .and_then(|d| d["status"]["instance"].as_u64())
                .filter(|i| *i != 0 && !self.instances.values().any(|v| v == i))
        });
        self.instances.insert(g, instance);
    }
}

/// One row of the table.
#[derive(Default)]
struct Row {
    sent: usize,
    stored: usize,
    extra: usize,
    duplicated: usize,
    lost: usize,
    incidents_expected: usize,
    incidents_opened: usize,
    /// Fault events the incidents' audit trails show applied (a clear that finds its
    /// incident closed changes nothing and is not counted).
    applied: usize,
    /// Events the agents dropped from a full spool, by design and announced.
    dropped: usize,
    /// Events sent and not stored, announced drops included.
    missing: usize,
    /// Seconds from the fault healed to everything stored.
    settled: f64,
    notes: Vec<String>,
    problems: Vec<String>,
}

/// What the agents sent for one fault key.
#[derive(Default, Clone)]
struct KeyStat {
    events: usize,
    raises: usize,
    seqs: BTreeMap<u64, usize>,
}

/// One case: its directory, broker, collector and devices.
struct Case {
    name: &'static str,
    started: Instant,
    dir: tempfile::TempDir,
    broker: Broker,
    collector: Option<Collector>,
    collector_config: PathBuf,
    devs: Vec<Dev>,
    /// The collector's data directory, on its own tmpfs (the disk-full case).
    tmpfs: Option<Tmpfs>,
    /// The network namespace one agent runs in (the partition case).
    netns: Option<Netns>,
}

impl Drop for Case {
    /// Every process first (SIGKILL, reaped), then the mount and the namespace they may
    /// hold, then the directory: also on a panic.
    fn drop(&mut self) {
        self.devs.clear();
        self.collector = None;
        self.broker.kill9();
        self.tmpfs = None;
        self.netns = None;
    }
}

/// A tmpfs mounted for one case, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap_or_else(|e| panic!("mount: {e}"));
        assert!(
            out.status.success(),
            "cannot mount a tmpfs at {} (needs root): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// A network namespace joined to this one by a veth pair: `host_ip` on this side,
/// `ns_ip` inside. Deleted (with the pair) when dropped.
struct Netns {
    name: String,
    host_if: String,
    host_ip: String,
}

impl Netns {
    fn create() -> Netns {
        let tag = std::process::id() % 100_000;
        let name = format!("vigia-fm-{tag}");
        let (host_if, ns_if) = (format!("vfmh{tag}"), format!("vfmn{tag}"));
        let net = 16 + std::process::id() % 200;
        let host_ip = format!("10.231.{net}.1");
        let ns_ip = format!("10.231.{net}.2");
        // Leftovers of a run that was itself killed.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        let n = Netns {
            name: name.clone(),
            host_if: host_if.clone(),
            host_ip: host_ip.clone(),
        };
        for args in [
            vec!["netns", "add", &name],
            vec![
                "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
            ],
            vec!["link", "set", &ns_if, "netns", &name],
            vec!["addr", "add", &format!("{host_ip}/30"), "dev", &host_if],
            vec!["link", "set", &host_if, "up"],
            vec![
                "-n",
                &name,
                "addr",
                "add",
                &format!("{ns_ip}/30"),
                "dev",
                &ns_if,
            ],
            vec!["-n", &name, "link", "set", &ns_if, "up"],
            vec!["-n", &name, "link", "set", "lo", "up"],
        ] {
            let out = Command::new("ip")
                .args(&args)
                .output()
                .unwrap_or_else(|e| panic!("ip: {e}"));
            assert!(
                out.status.success(),
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        n
    }

    /// Cuts (`false`) or restores (`true`) the link: packets are dropped, nothing is
    /// refused, as on a real partition.
    fn link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        let ok = Command::new("ip")
            .args(["link", "set", &self.host_if, state])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip link set {} {state}", self.host_if);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}

#[derive(Default)]
struct Setup {
    /// Mosquitto persistence off (the production file has it on).
    no_persistence: bool,
    /// A PKI valid from a day back (devices whose clock is behind).
    backdate: bool,
    /// The collector's data directory on a tmpfs of this size.
    tmpfs: Option<&'static str>,
    /// A network namespace for one agent; the broker listens on its veth.
    netns: bool,
}

impl Case {
    fn new(name: &'static str, setup: Setup) -> Case {
        let mut tools = vec!["mosquitto", "mosquitto_passwd", "openssl"];
        if setup.netns {
            tools.push("ip");
        }
        if setup.tmpfs.is_some() {
            tools.extend(["mount", "umount"]);
        }
        require(&tools, setup.backdate, setup.netns || setup.tmpfs.is_some());
        let dir = tempfile::Builder::new()
            .prefix("vigia-fm-")
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        let d = dir.path().to_path_buf();
        let netns = setup.netns.then(Netns::create);
        let bind = netns
            .as_ref()
            .map_or("127.0.0.1".to_string(), |n| n.host_ip.clone());
        make_pki_dated(
            &d,
            netns.as_ref().map(|n| n.host_ip.as_str()),
            setup.backdate,
        );
        let ids: Vec<String> = (1..=AGENTS).map(|i| format!("fm-{i}")).collect();
        let passwords: Vec<String> = ids.iter().map(|id| enroll(&d, id)).collect();
        sh(
            &d,
            "mosquitto_passwd -b vigia.passwd vigia-collector collector-secret",
        );
        let broker = Broker::start(&d, &bind, !setup.no_persistence);
        let tmpfs = setup.tmpfs.map(|size| Tmpfs::mount(&d.join("mnt"), size));
        let data = match &tmpfs {
            Some(t) => t.0.join("data"),
            None => d.join("collector-data"),
        };
        let collector_config = d.join("collector.toml");
        std::fs::write(
            &collector_config,
            format!(
                "data_dir = \"{}\"\n\n[mqtt]\nurl = \"{}\"\nusername = \"vigia-collector\"\n\
                 password = \"collector-secret\"\nca_file = \"{}\"\n\n\
                 [http]\nlisten = \"127.0.0.1:0\"\n",
                data.display(),
                broker.url(),
                d.join("ca.crt").display()
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let collector = start_collector_with(&collector_config);
        let devs = ids
            .into_iter()
            .zip(passwords)
            .map(|(id, password)| Dev {
                config: d.join(format!("agent-{id}.toml")),
                data_dir: d.join(format!("agent-{id}-data")),
                replay: PathBuf::new(),
                id,
                password,
                dir: d.clone(),
                url: broker.url(),
                ca: d.join("ca.crt"),
                wrap: Wrap::Plain,
                extra: String::new(),
                interval: "50ms",
                generation: 0,
                run: 0,
                fed: 0,
                finished: Vec::new(),
                proc: None,
                instances: BTreeMap::new(),
            })
            .collect();
        Case {
            name,
            started: Instant::now(),
            dir,
            broker,
            collector: Some(collector),
            collector_config,
            devs,
            tmpfs,
            netns,
        }
    }

    fn collector(&self) -> &Collector {
        self.collector
            .as_ref()
            .unwrap_or_else(|| panic!("the collector is down"))
    }

    fn start_agents(&mut self) {
        for d in &mut self.devs {
            d.start();
        }
        let c = self.collector.as_ref();
        let url = self.broker.url();
        for d in self.devs.iter_mut().filter(|d| d.url == url) {
            if let Some(c) = c {
                let id = d.id.clone();
                poll(&format!("{id} online"), || {
                    c.device(&id).filter(|v| v["online"] == true)
                });
                d.note_instance(c);
            }
        }
    }

    fn feed_all(&mut self, n: usize) {
        for d in &mut self.devs {
            d.feed(n);
        }
    }

    /// Events stored so far for every device's current instance.
    fn stored_now(&self) -> u64 {
        let Some(c) = self.collector.as_ref() else {
            return 0;
        };
        self.devs
            .iter()
            .map(|d| {
                c.get(&format!("/api/devices/{}/events", d.id))
                    .and_then(|v| v["count"].as_u64())
                    .unwrap_or(0)
            })
            .sum()
    }

    /// Waits until the collector stored at least `n` events: the stream is in flight.
    fn wait_stored(&self, n: u64) {
        poll(&format!("{n} events stored"), || {
            (self.stored_now() >= n).then_some(())
        });
    }

    fn wait_caught_up(&self) {
        for d in &self.devs {
            poll_for(
                &format!("{} to read its readings", d.id),
                DEADLINE,
                &mut || d.caught_up().then_some(()),
            );
        }
    }

    fn restart_collector(&mut self) {
        self.collector = Some(start_collector_with(&self.collector_config));
    }

    /// Waits until every agent read all it was fed and has nothing left unacknowledged,
    /// and the collector holds as many events as were sent; then compares exactly.
    fn settle_and_check(&mut self) -> Row {
        let healed = Instant::now();
        let end = healed + CONVERGE;
        let mut converged = false;
        while Instant::now() < end {
            let agents_done = self.devs.iter().all(|d| {
                d.caught_up()
                    && d.status()
                        .is_some_and(|s| s["spooled"] == 0 && s["held"] == 0)
            });
            if agents_done {
                let row = self.compare();
                if row.problems.is_empty() && row.stored + row.missing == row.sent {
                    converged = true;
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let mut row = self.compare();
        row.settled = healed.elapsed().as_secs_f64();
        if !converged {
            let spools: Vec<String> = self
                .devs
                .iter()
                .map(|d| {
                    format!(
                        "{}: caught up {}, status {}",
                        d.id,
                        d.caught_up(),
                        d.status()
                            .map(|s| format!(
                                "spooled {} held {} connected {}",
                                s["spooled"], s["held"], s["connected"]
                            ))
                            .unwrap_or_else(|| "not answering".into())
                    )
                })
                .collect();
            row.problems.push(format!(
                "did not converge within {CONVERGE:?} ({})",
                spools.join("; ")
            ));
        }
        row
    }

    /// What was sent (agents' logs) against what is stored (the collector's API).
    fn compare(&self) -> Row {
        let c = self.collector();
        let mut row = Row::default();
        // Fault keys sent, and per key: events, raises, and how often each seq was sent
        // (a seq repeats only across instances of one device).
        let mut keys: BTreeMap<(String, String, String), KeyStat> = BTreeMap::new();
        // Per device: seqs a SIGKILL may have cut from the log (their key unknown).
        let mut cuts: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        // The last event each agent sent per fault key: what its incident must show.
        let mut last: BTreeMap<(String, String, String), (u32, u64, bool)> = BTreeMap::new();
        let mut dropping: BTreeSet<String> = BTreeSet::new();
        for d in &self.devs {
            let dropped = d
                .status()
                .and_then(|s| s["dropped_total"].as_u64())
                .unwrap_or(0) as usize;
            let mut dev_lost: Vec<u64> = Vec::new();
            for (generation, (events, cut)) in d.sent() {
                let seqs: BTreeSet<u64> = events.iter().map(|e| e.seq).collect();
                if seqs.len() != events.len() {
                    row.problems.push(format!(
                        "{} spooled a seq twice (instance {generation})",
                        d.id
                    ));
                }
                for e in &events {
                    let key = (d.id.clone(), e.kind.clone(), e.subject.clone());
                    let k = keys.entry(key.clone()).or_default();
                    k.events += 1;
                    *k.seqs.entry(e.seq).or_default() += 1;
                    if e.action != "cleared" {
                        k.raises += 1;
                    }
                    let l = last.entry(key).or_insert((generation, e.seq, false));
                    if (generation, e.seq) >= (l.0, l.1) {
                        *l = (generation, e.seq, e.action != "cleared");
                    }
                }
                let query = match d.instances.get(&generation) {
                    Some(i) if generation != d.generation => format!("?instance={i}"),
                    _ => String::new(),
                };
                let stored = stored_seqs(c, &d.id, &query);
                cuts.entry(d.id.clone())
                    .or_default()
                    .extend(cut.iter().filter(|s| stored.contains(s)));
                row.sent += seqs.len();
                row.stored += seqs.intersection(&stored).count();
                dev_lost.extend(seqs.difference(&stored).copied());
                let max = seqs.iter().max().copied().unwrap_or(0);
                let extra: Vec<u64> = stored
                    .difference(&seqs)
                    .copied()
                    .filter(|s| {
                        if cut.contains(s) {
                            return false; // spooled just before a SIGKILL cut its log line
                        }
                        // A seq no fault event took is a drop notice (not a fault event);
                        // allowed only when the agent dropped some.
                        !(dropped > 0 && *s <= max + 1)
                    })
                    .collect();
                row.extra += extra.len();
                if !extra.is_empty() {
                    row.problems.push(format!(
                        "{} instance {generation}: stored seqs never sent {}",
                        d.id,
                        ranges(&extra)
                    ));
                }
            }
            if dropped > 0 {
                dropping.insert(d.id.clone());
                row.dropped += dropped;
                // The collector counts as lost what the drop notices name and it never
                // stored: exactly the events it does not have.
                let counted = c
                    .device(&d.id)
                    .and_then(|v| v["dropped"]["total"].as_u64())
                    .unwrap_or(0) as usize;
                if counted != dev_lost.len() {
                    row.problems.push(format!(
                        "{} dropped {dropped} events from its full spool, {} of them never stored; the collector counts {counted} lost",
                        d.id,
                        dev_lost.len()
                    ));
                }
            }
            // A full spool evicts its oldest events, some of them perhaps published and
            // stored already: every event not stored must be among those it announced.
            let unannounced = dev_lost.len().saturating_sub(dropped);
            row.lost += unannounced;
            row.missing += dev_lost.len();
            if unannounced > 0 {
                row.problems.push(format!(
                    "{}: seqs {} not stored ({} dropped by its full spool)",
                    d.id,
                    ranges(&dev_lost),
                    dropped
                ));
            } else if dropped > dev_lost.len() {
                row.notes.push(format!(
                    "{} of the {dropped} announced drops were lost (the rest had been stored before the spool evicted them), and the collector counts exactly those",
                    dev_lost.len()
                ));
            } else if dropped > 0 {
                row.notes.push(format!(
                    "all {dropped} announced drops were lost, and the collector counts them"
                ));
            }
        }
        // Incidents: one per fault key raised, none else; no event applied twice.
        let devices: BTreeSet<&str> = self.devs.iter().map(|d| d.id.as_str()).collect();
        let incidents: Vec<Value> = c
            .incidents()
            .into_iter()
            .filter(|i| i["device"].as_str().is_some_and(|d| devices.contains(d)))
            .collect();
        let expected: BTreeSet<_> = keys
            .iter()
            .filter(|(_, v)| v.raises > 0)
            .map(|(k, _)| k)
            .collect();
        row.incidents_expected = expected.len();
        row.incidents_opened = incidents.len();
        let mut per_key: BTreeMap<(String, String, String), Vec<&Value>> = BTreeMap::new();
        for i in &incidents {
            let key = (
                i["device"].as_str().unwrap_or("").to_string(),
                i["kind"].as_str().unwrap_or("").to_string(),
                i["subject"].as_str().unwrap_or("").to_string(),
            );
            per_key.entry(key).or_default().push(i);
        }
        for (key, list) in &per_key {
            if !expected.contains(key) {
                row.duplicated += list.len();
                row.problems
                    .push(format!("incident for {key:?}, which no agent raised"));
                continue;
            }
            if list.len() > 1 {
                row.duplicated += list.len() - 1;
                row.problems
                    .push(format!("{} incidents for {key:?}", list.len()));
            }
            let stat = keys.get(key).cloned().unwrap_or_default();
            let cut = cuts.get(&key.0).cloned().unwrap_or_default();
            let raises = stat.raises + cut.len();
            for i in list {
                if let Some(&(_, seq, active)) = last.get(key) {
                    if !dropping.contains(&key.0) && i["fault_active"] != active {
                        row.problems.push(format!(
                            "incident {} shows fault_active {}, but the agent's last event \
                             for it (seq {seq}) says {active}",
                            i["number"], i["fault_active"]
                        ));
                    }
                }
                let occ = i["occurrences"].as_u64().unwrap_or(0) as usize;
                if occ > raises {
                    row.duplicated += occ - raises;
                    row.problems.push(format!(
                        "incident {} counts {occ} occurrences of {raises} raises",
                        i["number"]
                    ));
                }
                let n = i["number"].as_u64().unwrap_or(0);
                let Some(detail) = c.get(&format!("/api/incidents/{n}")) else {
                    row.problems.push(format!("incident {n} unreadable"));
                    continue;
                };
                let (applied, unknown) = applied_seqs(&detail);
                row.applied += applied.values().sum::<usize>() + unknown;
                for (seq, times) in &applied {
                    let sent =
                        stat.seqs.get(seq).copied().unwrap_or(0) + usize::from(cut.contains(seq));
                    if *times > sent {
                        row.duplicated += times - sent;
                        row.problems.push(format!(
                            "incident {n} applied seq {seq} {times} times (sent {sent})"
                        ));
                    }
                }
            }
        }
        for key in &expected {
            if !per_key.contains_key(*key) {
                row.problems.push(format!("no incident for {key:?}"));
            }
        }
        row
    }

    /// Prints the row and fails the case on any problem; then stops everything cleanly.
    fn finish(mut self, row: Row) {
        emit(self.name, &row, self.started.elapsed().as_secs_f64());
        if !row.problems.is_empty() {
            for d in &self.devs {
                let _ = std::io::stderr().write_all(
                    format!("--- {} output (tail)\n{}\n", d.id, tail(&d.output(), 40)).as_bytes(),
                );
            }
            if let Some(c) = &self.collector {
                let _ = std::io::stderr().write_all(
                    format!(
                        "--- collector output (tail)\n{}\n",
                        tail(&c.proc.output(), 60)
                    )
                    .as_bytes(),
                );
            }
        }
        assert!(
            row.problems.is_empty(),
            "{}: FAILING: {}",
            self.name,
            row.problems.join("; ")
        );
        for d in &mut self.devs {
            d.end_run(false);
        }
        if let Some(c) = self.collector.take() {
            c.proc.terminate();
        }
        self.broker.stop();
    }
}

/// Prints one row of the table (past the test harness's capture, so CI logs show every
/// row) and appends it to `target/fault-matrix.md`.
fn emit(name: &str, row: &Row, secs: f64) {
    let verdict = if row.problems.is_empty() {
        "ok".to_string()
    } else {
        format!("FAILING: {}", row.problems.join("; "))
    };
    let notes = if row.notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", row.notes.join("; "))
    };
    let line = format!(
        "| {name}{notes} | {} | {} | {} | {} | {} | {} | {}/{} | {} | {:.1} s | {secs:.0} s | {verdict} |\n",
        row.sent,
        row.stored,
        row.duplicated,
        row.lost,
        row.extra,
        row.dropped,
        row.incidents_expected,
        row.incidents_opened,
        row.applied,
        row.settled,
    );
    let _ = std::io::stderr().write_all(format!("fault matrix {line}").as_bytes());
    // CARGO_TARGET_TMPDIR is `<target>/tmp`, so this follows CARGO_TARGET_DIR.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let table = target.parent().unwrap_or(target).join("fault-matrix.md");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&table)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Per seq, how many times a fault event was applied to an incident, read from its
/// audit trail (each applied event records `last_fault_seq` old → new; a late one says
/// "(seq N)"; the opening event is the first record's old value); and how many applied
/// events it shows without a seq (an incident opened by its only event).
fn applied_seqs(detail: &Value) -> (BTreeMap<u64, usize>, usize) {
    let mut out: BTreeMap<u64, usize> = BTreeMap::new();
    let mut opening: Option<u64> = None;
    let mut first = true;
    for r in detail["audit"].as_array().into_iter().flatten() {
        let action = r["action"].as_str().unwrap_or("");
        if !action.starts_with("fault_") {
            continue;
        }
        if action == "fault_late" {
            let why = r["why"].as_str().unwrap_or("");
            if let Some(seq) = why
                .split("(seq ")
                .nth(1)
                .and_then(|t| t.split(')').next())
                .and_then(|t| t.parse().ok())
            {
                *out.entry(seq).or_default() += 1;
            }
            continue;
        }
        let change = r["changes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["field"] == "last_fault_seq");
        if let Some(c) = change {
            if first {
                opening = c["from"].as_str().and_then(|v| v.parse().ok());
                first = false;
            }
            if let Some(seq) = c["to"].as_str().and_then(|v| v.parse().ok()) {
                *out.entry(seq).or_default() += 1;
            }
        }
    }
    match opening {
        Some(seq) => {
            *out.entry(seq).or_default() += 1;
            (out, 0)
        }
        None => (out, 1),
    }
}

/// The seqs the collector stored for `device` (`query`: which instance).
fn stored_seqs(c: &Collector, device: &str, query: &str) -> BTreeSet<u64> {
    let Some(v) = c.get(&format!("/api/devices/{device}/events{query}")) else {
        return BTreeSet::new();
    };
    let (Some(first), Some(last)) = (v["first_seq"].as_u64(), v["last_seq"].as_u64()) else {
        return BTreeSet::new();
    };
    let mut set: BTreeSet<u64> = (first..=last).collect();
    for gap in v["missing"].as_array().into_iter().flatten() {
        if let (Some(a), Some(b)) = (gap[0].as_u64(), gap[1].as_u64()) {
            for s in a..=b {
                set.remove(&s);
            }
        }
    }
    let count = v["count"].as_u64().unwrap_or(0) as usize;
    assert_eq!(
        set.len(),
        count,
        "more gaps than the API lists for {device}: {v}"
    );
    set
}

/// `1-3, 7` for a sorted list.
fn ranges(seqs: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < seqs.len() {
        let mut j = i;
        while j + 1 < seqs.len() && seqs[j + 1] == seqs[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            seqs[i].to_string()
        } else {
            format!("{}-{}", seqs[i], seqs[j])
        });
        i = j + 1;
    }
    out.join(", ")
}

// ---------------------------------------------------------------------------------------
// The cases.

/// Broker restarted (SIGTERM, start again on the same port) while events are in flight.
fn broker_restart(name: &'static str, persistence: bool) {
    let _serial = serial();
    let mut case = Case::new(
        name,
        Setup {
            no_persistence: !persistence,
            ..Setup::default()
        },
    );
    case.start_agents();
    case.feed_all(PHASE * 2);
    case.wait_stored(50);
    case.broker.stop();
    case.broker.up();
    case.feed_all(PHASE);
    let row = case.settle_and_check();
    case.finish(row);
}

#[test]
fn broker_restarted_mid_stream_with_persistence() {
    broker_restart("broker restarted mid-stream, persistence on", true);
}

#[test]
fn broker_restarted_mid_stream_without_persistence() {
    broker_restart("broker restarted mid-stream, persistence off", false);
}

/// A counter or gauge from the collector's `/metrics`.
fn metric(c: &Collector, name: &str) -> Option<u64> {
    let mut r = ureq::get(&format!("{}/metrics", c.http))
        .header("authorization", &format!("Bearer {}", c.token))
        .call()
        .ok()?;
    let text = r.body_mut().read_to_string().ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.trim().parse().ok()))
}

/// Broker down (SIGKILL) for [`OUTAGE`] while the agents keep detecting: faults raised
/// and cleared meanwhile reach the collector once it is back.
#[test]
fn broker_down_for_a_while_while_agents_keep_detecting() {
    let _serial = serial();
    let mut case = Case::new(
        "broker down a minute (SIGKILL) while faults are raised and cleared",
        Setup::default(),
    );
    case.start_agents();
    case.feed_all(PHASE * 2);
    case.wait_stored(50);
    case.broker.kill9();
    let down = Instant::now();
    case.feed_all(PHASE * 2);
    case.wait_caught_up();
    // The outage is the point of the case: its length is deliberate.
    std::thread::sleep(OUTAGE.saturating_sub(down.elapsed()));
    case.broker.up();
    case.feed_all(PHASE);
    let row = case.settle_and_check();
    case.finish(row);
}

/// The collector killed with SIGKILL while events are in flight, down while more are
/// produced, then started again on the same data.
#[test]
fn collector_killed_mid_stream() {
    let _serial = serial();
    let mut case = Case::new("collector SIGKILL mid-stream", Setup::default());
    case.start_agents();
    case.feed_all(PHASE * 2);
    case.wait_stored(50);
    if let Some(c) = case.collector.take() {
        c.proc.kill9();
    }
    case.feed_all(PHASE);
    case.wait_caught_up();
    case.restart_collector();
    case.feed_all(PHASE);
    let row = case.settle_and_check();
    case.finish(row);
}

/// POSTs one action; `Ok(status)` when the collector answered.
fn post_action(http: &str, token: &str, path: &str, body: &Value) -> Result<u16, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    agent
        .post(&format!("{http}{path}"))
        .header("authorization", &format!("Bearer {token}"))
        .send_json(body)
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

/// The collector killed with SIGKILL while a person's actions (notes, posted in a loop)
/// and the agents' events are both in flight. Every note the API acknowledged is on the
/// incident exactly once; one whose request failed with the kill is there at most once.
#[test]
fn collector_killed_mid_action_from_the_api() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let _serial = serial();
    let mut case = Case::new(
        "collector SIGKILL mid-stream and mid-action",
        Setup::default(),
    );
    let started = Instant::now();
    case.start_agents();
    case.feed_all(PHASE * 2);
    case.wait_stored(50);
    let number = poll("an incident to act on", || {
        case.collector()
            .incidents()
            .first()
            .and_then(|i| i["number"].as_u64())
    });
    let c = case.collector();
    let target = Arc::new(Mutex::new(Some((c.http.clone(), c.token.clone()))));
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Vec::<(usize, bool)>::new()));
    let poster = {
        let (target, stop, outcomes) = (target.clone(), stop.clone(), outcomes.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let t = target.lock().map(|t| t.clone()).unwrap_or(None);
                let Some((http, token)) = t else {
                    // Polling for the collector to come back.
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                i += 1;
                let body = serde_json::json!({"text": format!("fm-note-{i}")});
                let r = post_action(
                    &http,
                    &token,
                    &format!("/api/incidents/{number}/note"),
                    &body,
                );
                let acked = matches!(r, Ok(200..=299));
                if let Ok(mut o) = outcomes.lock() {
                    o.push((i, acked));
                }
                if matches!(r, Ok(s) if !(200..=299).contains(&s)) {
                    panic!("note {i} refused: {r:?}");
                }
            }
        })
    };
    let acked = |o: &Arc<Mutex<Vec<(usize, bool)>>>| {
        o.lock()
            .map(|v| v.iter().filter(|(_, a)| *a).count())
            .unwrap_or(0)
    };
    poll("20 notes acknowledged", || {
        (acked(&outcomes) >= 20).then_some(())
    });
    if let Some(c) = case.collector.take() {
        c.proc.kill9();
    }
    if let Ok(mut t) = target.lock() {
        *t = None;
    }
    let before = acked(&outcomes);
    case.feed_all(PHASE);
    case.restart_collector();
    let c = case.collector();
    if let Ok(mut t) = target.lock() {
        *t = Some((c.http.clone(), c.token.clone()));
    }
    poll("20 more notes acknowledged", || {
        (acked(&outcomes) >= before + 20).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    assert!(poster.join().is_ok(), "the poster failed");
    case.feed_all(PHASE);
    let mut row = case.settle_and_check();

    // The actions' own row: what the API acknowledged against what the incident shows.
    let detail = case
        .collector()
        .get(&format!("/api/incidents/{number}"))
        .unwrap_or_else(|| panic!("incident {number}"));
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for n in detail["notes"].as_array().into_iter().flatten() {
        *seen
            .entry(n["text"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
    }
    let outcomes = outcomes.lock().map(|o| o.clone()).unwrap_or_default();
    let mut actions = Row::default();
    let mut unacked_applied = 0;
    for (i, ok) in &outcomes {
        let n = seen.get(&format!("fm-note-{i}")).copied().unwrap_or(0);
        if n > 1 {
            actions.duplicated += n - 1;
            actions.problems.push(format!("note {i} applied {n} times"));
        }
        if *ok {
            actions.sent += 1;
            if n == 0 {
                actions.lost += 1;
                actions
                    .problems
                    .push(format!("acknowledged note {i} is gone"));
            } else {
                actions.stored += 1;
            }
        } else if n > 0 {
            unacked_applied += 1;
        }
    }
    let unacked = outcomes.iter().filter(|(_, a)| !a).count();
    actions.notes.push(format!(
        "{unacked} requests cut by the kill, {unacked_applied} of them applied"
    ));
    emit(
        "collector SIGKILL mid-action: API notes acknowledged",
        &actions,
        started.elapsed().as_secs_f64(),
    );
    row.problems.extend(actions.problems);
    case.finish(row);
}

/// An agent that cannot reach the broker fills its (small) spool until it drops the
/// oldest events, announcing it; it is killed with SIGKILL while full and still
/// detecting, and started again with the broker in reach. Everything it still held is
/// stored once, and the collector counts as lost exactly the dropped events it never
/// stored (some it evicted after they were published and stored).
#[test]
fn agent_killed_with_a_full_spool() {
    let _serial = serial();
    let mut case = Case::new("agent SIGKILL with a full spool (32 KiB)", Setup::default());
    let reachable = case.broker.url();
    case.devs[0].url = format!("mqtts://127.0.0.1:{}", free_port());
    case.devs[0].extra = "[spool]\nmax_bytes = 32768\n".into();
    case.start_agents();
    case.feed_all(PHASE * 2);
    let d = &mut case.devs[0];
    poll("fm-1's spool full and dropping", || {
        d.status()
            .filter(|s| s["dropped_total"].as_u64().unwrap_or(0) > 0)
    });
    // Killed while full and still detecting: part way through these lines.
    let before = parse_spooled(&d.output()).len();
    d.feed(PHASE);
    poll("fm-1 detecting again", || {
        (parse_spooled(&d.output()).len() >= before + 2 * MOUNTS).then_some(())
    });
    d.kill9();
    d.url = reachable;
    d.start();
    case.feed_all(PHASE);
    let row = case.settle_and_check();
    case.finish(row);
}

/// sled, under the spool, compacts on its own (segment cleaning in its flusher); there
/// is no hook to kill it exactly then, so the agent is killed with SIGKILL five times
/// while it writes and deletes at full speed (10 ms passes, six events each, acks
/// deleting them meanwhile), each time at a different point, and started again.
#[test]
fn agent_killed_repeatedly_during_heavy_spool_activity() {
    let _serial = serial();
    let mut case = Case::new(
        "agent SIGKILL x5 during heavy spool writes and deletes",
        Setup::default(),
    );
    case.devs[0].interval = "10ms";
    case.start_agents();
    case.feed_all(PHASE);
    for round in 0..5 {
        let d = &mut case.devs[0];
        d.feed(120);
        let at = 100 + round * 97 % 300;
        poll(&format!("round {round}: {at} events spooled"), || {
            (parse_spooled(&d.output()).len() >= at).then_some(())
        });
        d.kill9();
        d.start();
    }
    case.feed_all(PHASE);
    let mut row = case.settle_and_check();
    row.notes.push("5 kills".into());
    case.finish(row);
}

/// An agent reinstalled (its data directory removed: a new instance, seqs from 1 again)
/// while the events of its old instance sit unacknowledged at the broker, queued for a
/// collector that is down. Both instances' events are stored, each once, under its own
/// instance.
#[test]
fn agent_reinstalled_while_its_old_events_are_unacknowledged() {
    let _serial = serial();
    let mut case = Case::new(
        "agent reinstalled while its old events are unacknowledged",
        Setup::default(),
    );
    case.start_agents();
    case.feed_all(PHASE);
    case.wait_stored(30);
    if let Some(c) = case.collector.take() {
        c.proc.kill9();
    }
    case.feed_all(PHASE * 2);
    case.wait_caught_up();
    let d = &mut case.devs[0];
    // Everything it spooled is handed to its MQTT client; a clean stop then writes its
    // DISCONNECT after them, so all of it is at the broker, queued for the collector.
    poll("fm-1 to publish all it spooled", || {
        let out = d.output();
        let spooled: BTreeSet<u64> = parse_spooled(&out).iter().map(|e| e.seq).collect();
        spooled.is_subset(&published(&out)).then_some(())
    });
    d.end_run(false);
    let out = d
        .finished
        .last()
        .map(|r| r.proc.output())
        .unwrap_or_default();
    assert!(
        !out.contains("did not take the offline status"),
        "fm-1 did not reach the broker at shutdown:\n{out}"
    );
    std::fs::remove_dir_all(&d.data_dir).unwrap_or_else(|e| panic!("reinstall: {e}"));
    d.generation += 1;
    d.start();
    d.feed(PHASE);
    case.restart_collector();
    let c = case
        .collector
        .as_ref()
        .unwrap_or_else(|| panic!("collector"));
    case.devs[0].note_instance(c);
    case.feed_all(PHASE);
    let mut row = case.settle_and_check();
    row.notes.push("2 instances".into());
    case.finish(row);
}

/// Fills the filesystem holding `path` with the file `path`.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap_or_else(|e| panic!("{e}"));
    let chunk = vec![0x5au8; 64 * 1024];
    while f.write_all(&chunk).and_then(|()| f.sync_data()).is_ok() {}
    while f
        .write_all(&[0u8; 512])
        .and_then(|()| f.sync_data())
        .is_ok()
    {}
}

/// The collector's data directory on a small tmpfs, filled while events stream in:
/// ingest stalls (and says so), the agents keep their events; the disk is freed and
/// everything is stored once.
#[test]
fn collector_disk_full_then_freed() {
    let _serial = serial();
    let mut case = Case::new(
        "collector's disk full (tmpfs), then freed",
        Setup {
            tmpfs: Some("24m"),
            ..Setup::default()
        },
    );
    case.start_agents();
    case.feed_all(PHASE * 2);
    case.wait_stored(50);
    let filler = case
        .tmpfs
        .as_ref()
        .map(|t| t.0.join("filler"))
        .unwrap_or_else(|| panic!("no tmpfs"));
    fill(&filler);
    case.feed_all(PHASE);
    poll("ingest to say it is stalled", || {
        (metric(case.collector(), "vigia_ingest_stalled") == Some(1)).then_some(())
    });
    case.feed_all(PHASE);
    case.wait_caught_up();
    std::fs::remove_file(&filler).unwrap_or_else(|e| panic!("{e}"));
    case.feed_all(PHASE);
    let mut row = case.settle_and_check();
    let c = case.collector();
    row.notes.push(format!(
        "store errors {}, reopens {}",
        metric(c, "vigia_store_errors_total").unwrap_or(0),
        metric(c, "vigia_store_reopens_total").unwrap_or(0)
    ));
    if metric(c, "vigia_ingest_stalled") != Some(0) {
        row.problems
            .push("ingest still stalled after the disk was freed".into());
    }
    case.finish(row);
}

/// Two devices whose clocks are hours off (one 5 h ahead, one 5 h behind; the PKI is
/// valid from a day back, as a real one is), streaming through a collector SIGKILL.
#[test]
fn device_clocks_hours_off() {
    let _serial = serial();
    let mut case = Case::new(
        "device clocks 5 h ahead and 5 h behind, collector SIGKILL",
        Setup {
            backdate: true,
            ..Setup::default()
        },
    );
    case.devs[0].wrap = Wrap::Clock("+5h".into());
    case.devs[1].wrap = Wrap::Clock("-5h".into());
    case.start_agents();
    // The clocks are really off: the devices' own statuses carry their time.
    let now = vigia_protocol_now();
    for (i, sign) in [(0, 1i64), (1, -1i64)] {
        let id = case.devs[i].id.clone();
        let ts = case
            .collector()
            .device(&id)
            .and_then(|d| d["status"]["ts"].as_i64())
            .unwrap_or(0);
        let off = (ts - now) * sign;
        assert!(
            off > 4 * 3_600_000,
            "{id}'s clock is not off: ts {ts}, now {now}"
        );
    }
    case.feed_all(PHASE * 2);
    case.wait_stored(50);
    if let Some(c) = case.collector.take() {
        c.proc.kill9();
    }
    case.feed_all(PHASE);
    case.restart_collector();
    case.feed_all(PHASE);
    let row = case.settle_and_check();
    case.finish(row);
}

fn vigia_protocol_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A device whose clock jumps 3 h backwards mid-stream (its later events are older by
/// their time, newer by their seq), then a broker restart makes it reconnect and replay
/// under the jumped clock.
#[test]
fn device_clock_jumps_backwards() {
    let _serial = serial();
    let mut case = Case::new(
        "device clock jumps back 3 h mid-stream, then a broker restart",
        Setup {
            backdate: true,
            ..Setup::default()
        },
    );
    let clock = case.dir.path().join("fm-1.clock");
    std::fs::write(&clock, "+0\n").unwrap_or_else(|e| panic!("{e}"));
    case.devs[0].wrap = Wrap::ClockFile(clock.clone());
    case.start_agents();
    case.feed_all(PHASE * 2);
    case.wait_stored(50);
    std::fs::write(&clock, "-3h\n").unwrap_or_else(|e| panic!("{e}"));
    case.feed_all(PHASE);
    case.wait_caught_up();
    case.broker.stop();
    case.broker.up();
    let now = vigia_protocol_now();
    poll("fm-1's new session stamped 3 h back", || {
        case.collector()
            .device("fm-1")
            .and_then(|d| d["status"]["ts"].as_i64())
            .filter(|ts| now - ts > 2 * 3_600_000)
    });
    case.feed_all(PHASE);
    let row = case.settle_and_check();
    case.finish(row);
}

/// One agent in its own network namespace, joined by a veth pair; the link is cut for
/// [`PARTITION`] (packets dropped, nothing refused) while it keeps detecting, long
/// enough for the broker to declare it gone, then healed.
#[test]
fn network_partition_between_agent_and_broker() {
    let _serial = serial();
    let mut case = Case::new(
        "network partition agent-broker 12 s (netns), healed",
        Setup {
            netns: true,
            ..Setup::default()
        },
    );
    let ns = case
        .netns
        .as_ref()
        .map(|n| n.name.clone())
        .unwrap_or_else(|| panic!("no netns"));
    case.devs[0].wrap = Wrap::Netns(ns);
    case.start_agents();
    case.feed_all(PHASE * 2);
    case.wait_stored(50);
    if let Some(n) = &case.netns {
        n.link(false);
    }
    let cut = Instant::now();
    case.feed_all(PHASE * 2);
    case.wait_caught_up();
    poll_for("fm-1 offline (its Last Will)", PARTITION, &mut || {
        case.collector()
            .device("fm-1")
            .filter(|d| d["online"] == false)
    });
    // The partition's length is the point of the case.
    std::thread::sleep(PARTITION.saturating_sub(cut.elapsed()));
    if let Some(n) = &case.netns {
        n.link(true);
    }
    case.feed_all(PHASE);
    let row = case.settle_and_check();
    case.finish(row);
}
