//! The embedded MQTT broker (rumqttd): the zero-setup default when no broker URL is set.
//!
//! rumqttd's `Broker::start` blocks forever, has no shutdown handle and does not report
//! the port it bound, so: it runs on its own thread for the life of the process; for port 0
//! we bind 127.0.0.1:0 with std to learn a free port, release it and hand it to rumqttd,
//! then confirm by connecting, retrying with a new port if something took it in between.
//! It keeps everything in memory and has no ACLs: a try-it default, never production.
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use tokio::sync::oneshot;
use tracing::{info, warn};
use vigia_protocol::MAX_PACKET;

/// How long to wait for the broker to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How many fresh ports to try when port 0 was asked for and the chosen one was taken.
const PORT_ATTEMPTS: usize = 5;

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No free port could be found.
    #[error("cannot find a free port for the embedded broker: {0}")]
    FreePort(#[source] std::io::Error),
    /// The broker thread could not be spawned.
    #[error("cannot spawn the embedded broker thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The broker stopped right away (usually: the port is in use).
    #[error("the embedded broker could not listen on {addr} (is the port in use?)")]
    NotListening {
        /// Where it tried to listen.
        addr: SocketAddr,
    },
}

/// A running embedded broker. It lives until the process exits.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedBroker {
    /// The address it listens on.
    pub addr: SocketAddr,
}

impl EmbeddedBroker {
    /// The URL clients use to reach it.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }
}

/// rumqttd's config, built in code: one MQTT 3.1.1 server on `addr`.
pub fn rumqttd_config(addr: SocketAddr) -> Config {
    let connections = ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: MAX_PACKET,
        // Per-connection QoS 1 window; the collector acks manually after each durable
        // write, so this bounds how much it holds unacknowledged.
        max_inflight_count: 500,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "vigia-v4".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let router = RouterConfig {
        max_connections: 10_010,
        max_outgoing_packet_count: 200,
        // The commit log is in memory: 16 segments of 8 MiB bound it to 128 MiB.
        max_segment_size: 8 * 1024 * 1024,
        max_segment_count: 16,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    };
    Config {
        id: 0,
        router,
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Default::default()
    }
}

/// Starts the embedded broker on 127.0.0.1:`port` (0: a free port) and returns once it
/// accepts connections.
pub async fn start(port: u16) -> Result<EmbeddedBroker, BrokerError> {
    let attempts = if port == 0 { PORT_ATTEMPTS } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let chosen = if port == 0 { free_port()? } else { port };
        let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, chosen));
        match start_on(addr).await {
            Ok(b) => return Ok(b),
            Err(e @ BrokerError::NotListening { .. }) => {
                warn!(%addr, "embedded broker could not listen, trying another port");
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(BrokerError::NotListening {
        addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)),
    }))
}

fn free_port() -> Result<u16, BrokerError> {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(BrokerError::FreePort)?;
    let port = l.local_addr().map_err(BrokerError::FreePort)?.port();
    drop(l);
    Ok(port)
}

async fn start_on(addr: SocketAddr) -> Result<EmbeddedBroker, BrokerError> {
    // rumqttd only logs a failed bind, so find out first whether the port is free: a
    // listener we can bind and release now is one rumqttd can bind a moment later.
    match std::net::TcpListener::bind(addr) {
        Ok(l) => drop(l),
        Err(_) => return Err(BrokerError::NotListening { addr }),
    }
    let (exited_tx, mut exited_rx) = oneshot::channel::<()>();
    let cfg = rumqttd_config(addr);
    std::thread::Builder::new()
        .name("vigia-broker".into())
        .spawn(move || {
            let mut broker = Broker::new(cfg);
            // `start` only returns when its server threads end, i.e. when it failed.
            if let Err(e) = broker.start() {
                warn!(error = %e, "embedded broker stopped");
            }
            let _ = exited_tx.send(());
        })
        .map_err(BrokerError::Spawn)?;

    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        if exited_rx.try_recv().is_ok() {
            return Err(BrokerError::NotListening { addr });
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            info!(%addr, "embedded broker listening");
            return Ok(EmbeddedBroker { addr });
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BrokerError::NotListening { addr });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starts_on_a_free_port_and_accepts_connections() {
        let b = start(0).await.unwrap();
        assert_ne!(b.addr.port(), 0);
        assert!(tokio::net::TcpStream::connect(b.addr).await.is_ok());
        assert_eq!(b.url(), format!("mqtt://127.0.0.1:{}", b.addr.port()));
    }

    #[tokio::test]
    async fn a_taken_port_is_an_error_not_a_hang() {
        let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        // Something else owns the port: rumqttd's bind fails and we must say so.
        let err = start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .await
            .err();
        drop(l);
        assert!(
            matches!(err, Some(BrokerError::NotListening { .. })),
            "{err:?}"
        );
    }
}
