//! What systemd hears from a running agent (`Type=notify`, `packaging/vigia-agent.service`).
//!
//! `READY=1` means the first MQTT session is up, so `systemctl start vigia-agent` returning
//! says the device reached its broker. A device whose broker is down must still run and
//! spool its faults, though, and a start job that never ends would hold up boot (targets
//! wait for the services they want): after [`READY_WAIT`] without a session the agent
//! says ready anyway, with a `STATUS=` saying the broker is not reachable (and logs a
//! warning). Every connect and disconnect updates `STATUS=` (`systemctl status` shows it);
//! `STOPPING=1` goes out when shutdown begins. Outside systemd nothing is sent.
use std::sync::Mutex;
use std::time::Duration;

/// How long the agent waits for its first broker session before telling systemd it is
/// ready without one (the unit's `TimeoutStartSec` is longer).
pub const READY_WAIT: Duration = Duration::from_secs(30);

/// The readiness decisions, without I/O: each method returns the datagram to send.
#[derive(Debug, Default)]
pub struct Readiness {
    ready: bool,
}

impl Readiness {
    /// A session came up.
    pub fn connected(&mut self) -> String {
        let first = !std::mem::replace(&mut self.ready, true);
        let status = "STATUS=connected to the broker";
        if first {
            format!("READY=1\n{status}")
        } else {
            status.to_string()
        }
    }

    /// The session failed or could not be set up.
    pub fn disconnected(&mut self, error: &str) -> String {
        let error: String = error
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        format!("STATUS=broker not reachable, events are spooled: {error}")
    }

    /// [`READY_WAIT`] has passed: ready without a session, unless one came up already.
    pub fn waited(&mut self) -> Option<String> {
        if std::mem::replace(&mut self.ready, true) {
            return None;
        }
        Some("READY=1\nSTATUS=running; broker not reachable yet, events are spooled".into())
    }
}

static STATE: Mutex<Readiness> = Mutex::new(Readiness { ready: false });

fn send(state: &str) {
    if let Err(e) = vigia_protocol::systemd::notify(state) {
        tracing::debug!(error = %e, "cannot notify systemd");
    }
}

fn with<T>(f: impl FnOnce(&mut Readiness) -> T) -> T {
    f(&mut STATE.lock().unwrap_or_else(|p| p.into_inner()))
}

/// Called by the link on every broker session.
pub fn connected() {
    send(&with(Readiness::connected));
}

/// Called by the link when a session fails.
pub fn disconnected(error: &str) {
    send(&with(|r| r.disconnected(error)));
}

/// Waits [`READY_WAIT`], then says ready without a session if none came up.
pub async fn ready_after_wait() {
    tokio::time::sleep(READY_WAIT).await;
    if let Some(msg) = with(Readiness::waited) {
        tracing::warn!(
            waited_s = READY_WAIT.as_secs(),
            "no broker session yet; running and spooling events until one comes up"
        );
        send(&msg);
    }
}

/// Shutdown has begun.
pub fn stopping() {
    send("STOPPING=1");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_on_the_first_session_and_never_again() {
        let mut r = Readiness::default();
        assert!(r
            .disconnected("refused")
            .starts_with("STATUS=broker not reachable"));
        assert_eq!(r.connected(), "READY=1\nSTATUS=connected to the broker");
        assert_eq!(r.connected(), "STATUS=connected to the broker");
        assert_eq!(r.waited(), None, "a session came first: no second READY");
    }

    #[test]
    fn ready_without_a_broker_after_the_wait_says_so() {
        let mut r = Readiness::default();
        let msg = r.waited().unwrap_or_default();
        assert!(
            msg.starts_with("READY=1\n") && msg.contains("not reachable"),
            "{msg}"
        );
        assert_eq!(r.connected(), "STATUS=connected to the broker");
    }

    #[test]
    fn an_error_cannot_add_lines_to_the_datagram() {
        let mut r = Readiness::default();
        let msg = r.disconnected("bad\nREADY=1");
        assert_eq!(msg.lines().count(), 1, "{msg}");
    }
}
