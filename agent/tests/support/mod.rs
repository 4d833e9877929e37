//! What the tests against a real Mosquitto share: finding it (and failing under CI when
//! it is missing), starting it on a free port, and a stand-in collector that forwards
//! every device message to the test.
#![allow(clippy::unwrap_used, dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use tokio::sync::{mpsc, oneshot};

pub const DEADLINE: Duration = Duration::from_secs(15);

pub fn mosquitto_bin() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
}

/// Says a test cannot run here because `what` is missing, and returns. Under CI (`CI`
/// set), where `.ci/run` installs everything, a missing tool fails the test instead: a
/// test that skips there proves nothing.
pub fn skip_unless_ci(what: &str) {
    if std::env::var_os("CI").is_some() {
        panic!(
            "{what} not installed, and CI is set: install it \
             (apt-get install mosquitto mosquitto-clients openssl)"
        );
    }
    eprintln!("{what} not installed: test skipped");
}

/// Mosquitto's binary, or `None` after [`skip_unless_ci`].
pub fn mosquitto_or_skip() -> Option<PathBuf> {
    let bin = mosquitto_bin();
    if bin.is_none() {
        skip_unless_ci("mosquitto");
    }
    bin
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Broker {
    child: Child,
}

impl Broker {
    /// Starts Mosquitto on `port` with its store in `dir` and waits until it accepts.
    pub fn start(bin: &Path, dir: &Path, port: u16) -> Self {
        let conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n",
            dir.display()
        );
        Self::start_with(bin, dir, port, &conf)
    }

    /// Starts Mosquitto with the given config text; waits for `port` to accept.
    pub fn start_with(bin: &Path, dir: &Path, port: u16, conf_text: &str) -> Self {
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
    pub fn stop(mut self) {
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
pub async fn watcher(port: u16) -> (AsyncClient, mpsc::UnboundedReceiver<(String, Vec<u8>)>) {
    watcher_with(port, None).await
}

pub async fn watcher_with(
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

pub async fn next_on(rx: &mut mpsc::UnboundedReceiver<(String, Vec<u8>)>, topic: &str) -> Vec<u8> {
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
