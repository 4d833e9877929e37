//! The poller: polls rumqttc's event loop continuously (publishing from this task could
//! deadlock), reconnects with backoff and jitter, and hands packets to the worker.
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use rumqttc::{ConnectionError, Event as MqttEvent, EventLoop, Outgoing, Packet, Publish};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::clock::now_ms;

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

/// A small random factor in [0.75, 1.25) so many collectors (or a restarted broker's
/// clients) do not reconnect in lockstep.
fn jitter(d: Duration) -> Duration {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(now_ms().into());
    let r = (h.finish() % 1000) as f64 / 1000.0;
    d.mul_f64(0.75 + r * 0.5)
}

pub(super) async fn poll_loop(
    mut eventloop: EventLoop,
    work: mpsc::UnboundedSender<PollerEvent>,
    mut stop: watch::Receiver<bool>,
    broker: String,
) {
    let mut backoff = BACKOFF_MIN;
    let mut failures: u32 = 0;
    loop {
        match eventloop.poll().await {
            Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                info!(%broker, session_present = ack.session_present, "connected to broker");
                backoff = BACKOFF_MIN;
                failures = 0;
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
                failures += 1;
                let wait = jitter(backoff);
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
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_bounds() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(1000));
            assert!(j >= Duration::from_millis(750) && j < Duration::from_millis(1250));
        }
    }
}
