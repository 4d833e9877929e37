//! `vigia-agent run`: wires the parts together and runs them until shutdown.
//!
//! Three tasks share one [`Shared`] state: the sampling loop (every interval, one
//! detector pass; each fault transition becomes an event in the spool and wakes the
//! link), the MQTT link (see [`crate::link`]) and the local IPC server (see
//! [`crate::ipc`]). An event is in the spool, flushed, before anything tries to publish
//! it, so a broker that is down at start only means the spool fills and drains later.
//! Detector passes run on the blocking pool: a slow probe (`smartctl`) must not stall
//! the MQTT keep-alive.
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use vigia_protocol::EventBody;

use crate::config::Config;
use crate::link::{self, lock, now_ms, LinkConfig, LinkError, Shared};
use crate::probe::{Detectors, ProbeError};
use crate::spool::{Spool, SpoolError};

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The data directory could not be created or used.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The spool database is held by another process.
    #[error("{path} is in use by another vigia-agent (sled allows one process per database)")]
    InUse {
        /// The database directory.
        path: PathBuf,
    },
    /// The spool failed.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The detectors could not start.
    #[error("detectors: {0}")]
    Probe(#[from] ProbeError),
    /// The MQTT link failed for good.
    #[error("mqtt link: {0}")]
    Link(#[from] LinkError),
    /// The IPC socket could not be opened.
    #[error(transparent)]
    Ipc(#[from] crate::ipc::BindError),
    /// A task ended abnormally.
    #[error("internal task failed: {0}")]
    Task(String),
}

/// Opens the data directory's sled database, naming a concurrent owner clearly.
pub fn open_db(cfg: &Config) -> Result<sled::Db, AgentError> {
    std::fs::create_dir_all(&cfg.data_dir).map_err(|source| AgentError::DataDir {
        path: cfg.data_dir.clone(),
        source,
    })?;
    let path = cfg.db_path();
    match crate::spool::open_db(&path, Duration::from_secs(3)) {
        Ok(db) => Ok(db),
        Err(SpoolError::Locked(path)) => Err(AgentError::InUse { path }),
        Err(e) => Err(AgentError::Spool(e)),
    }
}

/// Runs the agent until `shutdown` completes (or a part fails for good): samples,
/// spools, publishes; then sends the offline status and disconnects.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let db = open_db(&cfg)?;
    let spool = Spool::with_db(db.clone(), cfg.device.clone(), cfg.spool_max_bytes)?;
    let baselines = db
        .open_tree("baselines")
        .map_err(|e| AgentError::Spool(SpoolError::Db(e)))?;
    let detectors = Detectors::new(&cfg.detect, &cfg.root, baselines)?;
    for (name, reason) in detectors.unsupported() {
        tracing::warn!(detector = name, reason = %reason, "probe unsupported here; not watched");
    }
    let detectors = Arc::new(Mutex::new(detectors));
    tracing::info!(
        device = %cfg.device,
        interval_ms = u64::try_from(cfg.interval.as_millis()).unwrap_or(u64::MAX),
        spooled = spool.len(),
        data_dir = %cfg.data_dir.display(),
        "vigia-agent starting"
    );
    let instance = spool.instance();
    let shared = Arc::new(Shared::new(spool));
    let mut link_cfg = LinkConfig::from_config(&cfg)?;
    link_cfg.instance = instance;
    let (stop_tx, stop_rx) = watch::channel(false);

    let ipc = crate::ipc::Server::bind(&cfg, Arc::clone(&shared), Arc::clone(&detectors))?;
    let ipc = tokio::spawn(ipc.serve(stop_rx.clone()));
    let mut link = tokio::spawn(link::run(Arc::clone(&shared), link_cfg, stop_rx.clone()));
    let sampler = tokio::spawn(sample_loop(
        Arc::clone(&shared),
        detectors,
        cfg.interval,
        stop_rx,
    ));

    tokio::pin!(shutdown);
    let early = tokio::select! {
        _ = &mut shutdown => None,
        r = &mut link => Some(r),
    };
    tracing::info!("vigia-agent stopping");
    let _ = stop_tx.send(true);
    let link_result = match early {
        Some(r) => r,
        None => link.await,
    };
    let _ = sampler.await;
    let _ = ipc.await;
    let flushed = lock(&shared.spool).db().flush();
    if let Err(e) = flushed {
        tracing::error!(error = %e, "spool: final flush failed");
    }
    match link_result {
        Ok(r) => r.map_err(AgentError::from),
        Err(e) => Err(AgentError::Task(e.to_string())),
    }
}

/// Every `interval` (or on a `Recheck` command): one detector pass; its fault
/// transitions go to the spool, then the link is woken.
async fn sample_loop(
    shared: Arc<Shared>,
    detectors: Arc<Mutex<Detectors>>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            _ = ticker.tick() => {}
            _ = shared.recheck.notified() => {}
        }
        let now = now_ms();
        let det = Arc::clone(&detectors);
        let pass = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            lock(&det).tick(now, &mut out);
            out
        })
        .await;
        let faults = match pass {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "detector pass failed");
                continue;
            }
        };
        if faults.is_empty() {
            continue;
        }
        {
            let mut spool = lock(&shared.spool);
            for f in faults {
                let (kind, subject, action, severity) =
                    (f.kind, f.subject.clone(), f.action, f.severity);
                match spool.push(now, EventBody::Fault(f)) {
                    Ok(p) => tracing::info!(
                        seq = p.seq,
                        kind = %kind,
                        subject = %subject,
                        action = action.as_str(),
                        severity = %severity,
                        "fault event spooled"
                    ),
                    Err(e) => {
                        tracing::error!(error = %e, kind = %kind, subject = %subject, "spool: cannot store a fault event")
                    }
                }
            }
        }
        shared.wake.notify_one();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The agent against a real Mosquitto, started on a free port for each test. Skipped
    //! (with a note on stderr) where `mosquitto` is not installed.
    use super::*;
    use crate::ipc::{self, Request, Response, StatusView};
    use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;
    use tokio::sync::{mpsc, oneshot};
    use vigia_protocol::{decode, Birth, Event as WireEvent, Status};

    const DEADLINE: Duration = Duration::from_secs(15);

    fn mosquitto_bin() -> Option<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
            .map(|d| d.join("mosquitto"))
            .find(|p| p.is_file())
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    struct Broker {
        child: Child,
    }

    impl Broker {
        /// Starts Mosquitto on `port` with its store in `dir` and waits until it accepts.
        fn start(bin: &Path, dir: &Path, port: u16) -> Self {
            let conf = format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n",
                dir.display()
            );
            Self::start_with(bin, dir, port, &conf)
        }

        /// Starts Mosquitto with the given config text; waits for `port` to accept.
        fn start_with(bin: &Path, dir: &Path, port: u16, conf_text: &str) -> Self {
            let conf = dir.join("mosquitto.conf");
            std::fs::write(&conf, conf_text).unwrap();
            let child = Command::new(bin)
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let start = Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(start.elapsed() < DEADLINE, "mosquitto did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            Self { child }
        }

        /// SIGTERM (Mosquitto saves its sessions) and wait.
        fn stop(mut self) {
            let _ = Command::new("kill")
                .arg(self.child.id().to_string())
                .status();
            let _ = self.child.wait();
        }
    }

    impl Drop for Broker {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// A stand-in collector: a persistent session subscribed to every device topic,
    /// forwarding (topic, payload) to the test.
    async fn watcher(port: u16) -> (AsyncClient, mpsc::UnboundedReceiver<(String, Vec<u8>)>) {
        watcher_with(port, None).await
    }

    async fn watcher_with(
        port: u16,
        login: Option<(&str, &str)>,
    ) -> (AsyncClient, mpsc::UnboundedReceiver<(String, Vec<u8>)>) {
        let mut o = MqttOptions::new("test-collector", "127.0.0.1", port);
        if let Some((u, p)) = login {
            o.set_credentials(u, p);
        }
        o.set_clean_session(false);
        o.set_max_packet_size(64 * 1024, 64 * 1024);
        let (client, mut el) = AsyncClient::new(o, 64);
        let (tx, rx) = mpsc::unbounded_channel();
        let (subscribed_tx, subscribed_rx) = oneshot::channel();
        let mut subscribed_tx = Some(subscribed_tx);
        client
            .subscribe("vigia/v1/up/+/+", QoS::AtLeastOnce)
            .await
            .unwrap();
        tokio::spawn(async move {
            // Ends when the test drops its receiver, so an old watcher never fights a new
            // one for the same client id.
            while !tx.is_closed() {
                match el.poll().await {
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        if let Some(t) = subscribed_tx.take() {
                            let _ = t.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(DEADLINE, subscribed_rx)
            .await
            .unwrap()
            .unwrap();
        (client, rx)
    }

    async fn next_on(rx: &mut mpsc::UnboundedReceiver<(String, Vec<u8>)>, topic: &str) -> Vec<u8> {
        tokio::time::timeout(DEADLINE, async {
            loop {
                let (t, p) = rx.recv().await.unwrap();
                if t == topic {
                    return p;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("nothing on {topic}"))
    }

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
        let Some(bin) = mosquitto_bin() else {
            eprintln!("mosquitto not installed: test skipped");
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
        let offline: Status =
            decode(&next_on(&mut rx, "vigia/v1/up/ws-test/status").await).unwrap();
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
            let ev: WireEvent =
                decode(&next_on(&mut rx, "vigia/v1/up/ws-test/event").await).unwrap();
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
        let Some(bin) = mosquitto_bin() else {
            eprintln!("mosquitto not installed: test skipped");
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
            eprintln!("mosquitto, openssl or mosquitto_passwd missing: test skipped");
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
        let offline: Status =
            decode(&next_on(&mut rx, "vigia/v1/up/ws-test/status").await).unwrap();
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
}
