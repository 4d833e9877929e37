//! Shared by the collector's integration tests: a config on ports 0 and a rumqttc client
//! that plays the device, its incoming publishes on a channel.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::mpsc;
use vigia_collector::config::Config;

pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn config(dir: &Path) -> Config {
    let mut c = Config {
        data_dir: dir.join("data"),
        ..Config::default()
    };
    c.mqtt.embedded_port = 0;
    c.http.listen = "127.0.0.1:0".into();
    c
}

/// A test "agent": a connected client whose incoming publishes arrive on a channel.
pub struct TestClient {
    pub client: AsyncClient,
    incoming: mpsc::UnboundedReceiver<(String, Value)>,
    task: tokio::task::JoinHandle<()>,
}

impl TestClient {
    pub async fn connect(mqtt_url: &str, id: &str, subscribe: &[String]) -> Self {
        let addr = mqtt_url.trim_start_matches("mqtt://");
        let (host, port) = addr.rsplit_once(':').unwrap();
        let mut opts = MqttOptions::new(id, host, port.parse::<u16>().unwrap());
        opts.set_max_packet_size(32 * 1024, 32 * 1024);
        let (client, mut el) = AsyncClient::new(opts, 100);
        let (tx, rx) = mpsc::unbounded_channel();
        let (sub_tx, mut sub_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                        let v: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        let _ = tx.send((p.topic.clone(), v));
                    }
                    Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                        let _ = sub_tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        for f in subscribe {
            client
                .subscribe(f.as_str(), QoS::AtLeastOnce)
                .await
                .unwrap();
            tokio::time::timeout(DEADLINE, sub_rx.recv())
                .await
                .expect("suback")
                .expect("suback channel");
        }
        Self {
            client,
            incoming: rx,
            task,
        }
    }

    pub async fn publish(&self, topic: &str, retain: bool, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .unwrap();
    }

    /// Receives until `done` says so, failing after the deadline.
    pub async fn recv_until(&mut self, what: &str, mut done: impl FnMut(&str, &Value) -> bool) {
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.incoming.recv()).await {
                Ok(Some((t, v))) => {
                    if done(&t, &v) {
                        return;
                    }
                }
                _ => panic!("timed out waiting for {what}"),
            }
        }
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The API of a running collector, as the first admin (who also holds the service-desk
/// role) through an API token.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: String,
}

/// Issues a token for `login` with `password` at the API on `base` (`127.0.0.1:port`).
pub fn issue_token(base: &str, login: &str, password: &str, scope: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .post(&format!("http://{base}/api/tokens"))
        .send_json(serde_json::json!({
            "login": login, "password": password, "scope": scope, "name": "test"
        }))
        .unwrap();
    let text = r.body_mut().read_to_string().unwrap();
    assert_eq!(r.status().as_u16(), 201, "token for {login}: {text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    v["token"].as_str().unwrap().to_owned()
}

impl Api {
    /// The first admin of a collector started on an empty store.
    pub async fn admin(running: &vigia_collector::Running) -> Api {
        let base = running.http_addr.to_string();
        let password = running
            .first_admin
            .as_ref()
            .expect("a fresh store makes the first admin")
            .password
            .clone();
        let b = base.clone();
        let token =
            tokio::task::spawn_blocking(move || issue_token(&b, "admin", &password, "admin"))
                .await
                .unwrap();
        Api { base, token }
    }

    /// The same credentials at another run of the collector (the token is stored).
    pub fn at(&self, running: &vigia_collector::Running) -> Api {
        Api {
            base: running.http_addr.to_string(),
            token: self.token.clone(),
        }
    }

    /// A request by `method` to `path`, with the token; the status and the body.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let url = format!("http://{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let mut r = match (method, body) {
            ("POST", Some(b)) => agent.post(&url).header("authorization", &auth).send_json(b),
            ("PATCH", Some(b)) => agent
                .patch(&url)
                .header("authorization", &auth)
                .send_json(b),
            _ => agent.get(&url).header("authorization", &auth).call(),
        }
        .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    }
}
