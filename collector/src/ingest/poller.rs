//! The poller: polls rumqttc's event loop continuously (publishing from this task could
//! deadlock), reconnects with backoff and jitter, and hands packets to the worker.
use std::time::Duration;

use rumqttc::{ConnectionError, Event as MqttEvent, EventLoop, Outgoing, Packet, Publish};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};
use vigia_protocol::{now_ms, Backoff};

/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What the poller hands the worker.
pub(super) enum PollerEvent {
    /// Connected; the broker kept (or lost) the persistent session.
    Connected { session_present: bool },
    /// The subscription is in place.
    SubAck,
    /// A message from a device.
    Publish(Publish),
}

pub(super) async fn poll_loop(
    mut eventloop: EventLoop,
    work: mpsc::UnboundedSender<PollerEvent>,
    mut stop: watch::Receiver<bool>,
    broker: String,
) {
    // Seeded per process, so several collectors (or a restarted broker's clients) do not
    // reconnect in lockstep.
    let seed = now_ms() ^ u64::from(std::process::id()).rotate_left(32);
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX, seed);
    loop {
        match eventloop.poll().await {
            Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                info!(%broker, session_present = ack.session_present, "connected to broker");
                backoff.reset();
                let _ = work.send(PollerEvent::Connected {
                    session_present: ack.session_present,
                });
            }
            Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                let _ = work.send(PollerEvent::SubAck);
            }
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                if work.send(PollerEvent::Publish(p)).is_err() {
                    return;
                }
            }
            Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) => {
                debug!("disconnect sent");
                return;
            }
            Ok(_) => {}
            Err(e) => {
                if *stop.borrow() {
                    return;
                }
                let wait = backoff.next_delay();
                let failures = backoff.attempts();
                if failures == 1 || failures.is_multiple_of(10) {
                    warn!(%broker, error = %e, retry_in_ms = wait.as_millis() as u64, failures,
                        "broker connection failed");
                } else {
                    debug!(%broker, error = %e, "broker connection failed again");
                }
                if matches!(e, ConnectionError::RequestsDone) {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}
