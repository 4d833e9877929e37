//! The session task: the publishing side of the link. It runs the sans-IO
//! [`Publisher`] and does what it says, through the `AsyncClient`: on every connection it
//! subscribes to `down/{id}/+` and the collector's status and publishes the retained birth
//! and `online` status, then publishes the spool from the publisher's cursor; it wakes
//! when the spool has something new, when the collector comes back, and on the resend
//! timer; and on shutdown it sends `offline` and DISCONNECT.
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rumqttc::{AsyncClient, QoS};
use tokio::sync::mpsc;
use vigia_protocol::{encode, now_ms, UpKind};

use super::publisher::Publisher;
use super::state::{lock, AgentState, LinkConfig, RESEND_AFTER};
use crate::inventory::{self, HostFacts};

/// What the driver tells the session task.
pub(super) enum SessionMsg {
    /// Connected, as session `boot`.
    Up {
        /// The session's boot.
        boot: u64,
    },
    /// The connection is gone.
    Down,
    /// Say goodbye and stop.
    Shutdown,
}

/// Runs the session task. Returns whether it sent the offline status and DISCONNECT.
pub(super) async fn run(
    client: AsyncClient,
    shared: Arc<AgentState>,
    cfg: LinkConfig,
    host: HostFacts,
    mut rx: mpsc::UnboundedReceiver<SessionMsg>,
) -> bool {
    let event_topic = cfg.topics.up(&cfg.device, UpKind::Event).to_string();
    let mut publisher = Publisher::new();
    let mut resend = tokio::time::interval(RESEND_AFTER);
    resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let msg = tokio::select! {
            m = rx.recv() => Some(m),
            _ = shared.wake.notified() => None,
            _ = resend.tick() => {
                let oldest = lock(&shared.spool).next_from(0).ok().flatten().map(|(seq, _)| seq);
                if publisher.resend_tick(oldest) {
                    tracing::info!(seq = oldest, "events unacked for too long: replaying");
                }
                None
            }
        };
        if shared.replay.swap(false, Ordering::SeqCst) {
            publisher.collector_online();
        }
        match msg {
            Some(Some(SessionMsg::Up { boot })) => {
                publisher.connected(boot);
                match session_start(&client, &cfg, &host, boot).await {
                    Ok(()) => publisher.started(),
                    Err(e) => {
                        publisher.start_failed();
                        tracing::warn!(error = %e, "could not start the session; retrying on reconnect");
                        continue;
                    }
                }
            }
            Some(Some(SessionMsg::Down)) => publisher.disconnected(),
            Some(Some(SessionMsg::Shutdown)) | Some(None) => {
                let Some(boot) = publisher
                    .goodbye()
                    .filter(|_| shared.connected.load(Ordering::SeqCst))
                else {
                    return false;
                };
                let sent = match cfg.status(false, boot, now_ms()) {
                    Ok(payload) => client
                        .publish(
                            cfg.topics.up(&cfg.device, UpKind::Status).as_str(),
                            QoS::AtLeastOnce,
                            true,
                            payload,
                        )
                        .await
                        .is_ok(),
                    Err(_) => false,
                };
                let disconnected = client.disconnect().await.is_ok();
                tracing::info!(boot, "offline status sent, disconnecting");
                return sent && disconnected;
            }
            None => {}
        }
        // Publish everything from the cursor on, stopping if the link drops.
        while let Some(from) = publisher.next_from() {
            if !shared.connected.load(Ordering::SeqCst) {
                break;
            }
            let next = lock(&shared.spool).next_from(from);
            match next {
                Ok(Some((seq, bytes))) => {
                    if client
                        .publish(event_topic.as_str(), QoS::AtLeastOnce, false, bytes)
                        .await
                        .is_err()
                    {
                        break;
                    }
                    tracing::debug!(seq, "event published");
                    publisher.published(seq);
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "spool: cannot read for replay");
                    break;
                }
            }
        }
    }
}

/// Subscribe, birth, online status: what every new session starts with.
async fn session_start(
    client: &AsyncClient,
    cfg: &LinkConfig,
    host: &HostFacts,
    boot: u64,
) -> Result<(), String> {
    // Always resubscribe: harmless when the broker kept the session, needed when not.
    client
        .subscribe(
            cfg.topics.down_filter(&cfg.device).as_str(),
            QoS::AtLeastOnce,
        )
        .await
        .map_err(|e| e.to_string())?;
    client
        .subscribe(cfg.topics.collector_status().as_str(), QoS::AtLeastOnce)
        .await
        .map_err(|e| e.to_string())?;
    let now = now_ms();
    let birth = inventory::birth(
        &cfg.device,
        cfg.instance,
        boot,
        now,
        &cfg.tags,
        &cfg.root,
        host,
    );
    let birth = encode(&birth).map_err(|e| e.to_string())?;
    client
        .publish(
            cfg.topics.up(&cfg.device, UpKind::Birth).as_str(),
            QoS::AtLeastOnce,
            true,
            birth,
        )
        .await
        .map_err(|e| e.to_string())?;
    let status = cfg.status(true, boot, now).map_err(|e| e.to_string())?;
    client
        .publish(
            cfg.topics.up(&cfg.device, UpKind::Status).as_str(),
            QoS::AtLeastOnce,
            true,
            status,
        )
        .await
        .map_err(|e| e.to_string())?;
    tracing::debug!(boot, "birth and online status published");
    Ok(())
}
