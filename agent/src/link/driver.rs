//! The driver: polls rumqttc's event loop continuously (publishing from the polling task
//! can deadlock, so the session task publishes), reconnects with the protocol's backoff,
//! raises `boot` for every new session so its Last Will says the same `boot` as its
//! `online`, and handles what arrives on `down/`: acks leave the spool, commands are kept
//! and broadcast, the collector's `online` asks for a replay.
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, ConnectionError, Event, Incoming, Outgoing, QoS};
use tokio::sync::{mpsc, watch};
use vigia_protocol::{
    decode, encode, now_ms, Ack, Backoff, Cmd, CmdAck, CmdBody, CollectorStatus, DownKind, Topic,
    UpKind, VERSION,
};

use super::session::{self, SessionMsg};
use super::state::{
    lock, AgentState, LinkConfig, LinkError, LinkState, BACKOFF_BASE, BACKOFF_CAP, SHUTDOWN_GRACE,
    STABLE_AFTER,
};
use crate::inventory;

/// Runs the link until `shutdown` turns true: connects, reconnects, publishes, and on
/// shutdown sends the offline status and disconnects.
pub async fn run(
    shared: Arc<AgentState>,
    cfg: LinkConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), LinkError> {
    let host = tokio::task::spawn_blocking(inventory::host_facts)
        .await
        .unwrap_or_default();
    let mut boot = lock(&shared.spool).raise_boot();
    let (client, mut eventloop) = AsyncClient::new(cfg.options(boot, now_ms())?, 64);
    // An event is one small packet: sent at once, not held by Nagle's algorithm behind
    // the broker's delayed ACK of the previous one (up to 40 ms on Linux).
    let mut net = eventloop.network_options();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    let (tx, rx) = mpsc::unbounded_channel();
    let mut session = tokio::spawn(session::run(
        client.clone(),
        Arc::clone(&shared),
        cfg.clone(),
        host,
        rx,
    ));
    let seed = now_ms() ^ u64::from(std::process::id()).rotate_left(32);
    let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP, seed);
    let mut session_used = false;
    let mut up_since: Option<Instant> = None;
    let mut refusals = 0u32;
    tracing::info!(broker = %format!("{}:{}", cfg.host, cfg.port), device = %cfg.device, boot, "mqtt link starting");

    loop {
        let polled = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => break,
            p = eventloop.poll() => p,
        };
        match polled {
            Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                session_used = true;
                refusals = 0;
                up_since = Some(Instant::now());
                shared.connected.store(true, Ordering::SeqCst);
                *lock(&shared.state) = LinkState::Connected { since: now_ms() };
                tracing::info!(
                    boot,
                    session_present = ack.session_present,
                    "connected to the broker"
                );
                crate::service::connected();
                let _ = tx.send(SessionMsg::Up { boot });
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                if let Some(id) = handle_down(&shared, &cfg, &p.topic, &p.payload, p.retain) {
                    acknowledge_cmd(&client, &cfg, id);
                }
            }
            Ok(_) => {}
            Err(e) => {
                shared.connected.store(false, Ordering::SeqCst);
                let _ = tx.send(SessionMsg::Down);
                if up_since.take().is_some_and(|t| t.elapsed() >= STABLE_AFTER) {
                    backoff.reset();
                }
                refusals = if account_refused(&e) { refusals + 1 } else { 0 };
                if cfg.refusals_to_give_up.is_some_and(|n| refusals >= n) {
                    tracing::warn!(
                        refusals,
                        "the broker keeps refusing this device's account; asking the collector"
                    );
                    crate::service::disconnected(&e.to_string());
                    *lock(&shared.state) = LinkState::Connecting {
                        attempts: refusals,
                        last_error: Some(e.to_string()),
                    };
                    // Not connected: the session has nothing to say goodbye with.
                    session.abort();
                    return Err(LinkError::AccountRefused(refusals));
                }
                let delay = backoff.next_delay();
                let attempts = backoff.attempts();
                log_failure(&e, attempts, delay, session_used);
                crate::service::disconnected(&e.to_string());
                *lock(&shared.state) = LinkState::Connecting {
                    attempts,
                    last_error: Some(e.to_string()),
                };
                if session_used {
                    // A new session gets a new boot, and its Last Will must say so.
                    boot = lock(&shared.spool).raise_boot();
                    eventloop
                        .mqtt_options
                        .set_last_will(cfg.will(boot, now_ms())?);
                    session_used = false;
                }
                tokio::select! {
                    biased;
                    _ = shutdown.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }

    // Clean shutdown: the session task sends `offline` and DISCONNECT if connected; keep
    // polling so they reach the broker, within a grace period.
    let _ = tx.send(SessionMsg::Shutdown);
    let deadline = tokio::time::sleep(SHUTDOWN_GRACE);
    tokio::pin!(deadline);
    let mut session_done = false;
    loop {
        tokio::select! {
            _ = &mut deadline => {
                tracing::warn!("shutdown: broker did not take the offline status in time");
                break;
            }
            r = &mut session, if !session_done => {
                session_done = true;
                if !matches!(r, Ok(true)) {
                    break; // not connected: nothing to flush
                }
            }
            p = eventloop.poll() => match p {
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(_) => break,
            },
        }
    }
    if !session_done {
        session.abort();
    }
    shared.connected.store(false, Ordering::SeqCst);
    *lock(&shared.state) = LinkState::Stopped;
    tracing::info!("mqtt link stopped");
    Ok(())
}

/// Whether the broker refused the account itself (not the network, not the broker's
/// health): the user name and password, or the account's rights.
fn account_refused(e: &ConnectionError) -> bool {
    matches!(
        e,
        ConnectionError::ConnectionRefused(
            rumqttc::ConnectReturnCode::BadUserNamePassword
                | rumqttc::ConnectReturnCode::NotAuthorized
        )
    )
}

fn log_failure(e: &ConnectionError, attempts: u32, delay: Duration, was_connected: bool) {
    let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    if let ConnectionError::ConnectionRefused(code) = e {
        // Credentials or ACLs: retrying will not fix it, a person must.
        tracing::error!(code = ?code, attempts, retry_in_ms = delay_ms, "the broker refused the connection; check mqtt.username/password and the broker's ACLs");
    } else if was_connected {
        tracing::warn!(error = %e, retry_in_ms = delay_ms, "connection to the broker lost");
    } else if attempts == 1 || attempts.is_multiple_of(10) {
        tracing::warn!(error = %e, attempts, retry_in_ms = delay_ms, "cannot reach the broker; events stay in the spool");
    } else {
        tracing::debug!(error = %e, attempts, retry_in_ms = delay_ms, "broker still unreachable");
    }
}

/// Tells the collector this agent got command `id` (`up/{id}/cmdack`), so it stops
/// resending it. Queued without waiting (the polling task must not await a publish);
/// should the queue be full, the collector resends and the next copy is acknowledged.
fn acknowledge_cmd(client: &AsyncClient, cfg: &LinkConfig, id: u64) {
    let mut ids = heapless::Vec::new();
    let _ = ids.push(id);
    let ack = CmdAck {
        v: VERSION,
        device: cfg.device.clone(),
        ids,
    };
    let topic = cfg.topics.up(&cfg.device, UpKind::CmdAck);
    match encode(&ack) {
        Ok(bytes) => {
            if let Err(e) = client.try_publish(topic.as_str(), QoS::AtLeastOnce, false, bytes) {
                tracing::debug!(error = %e, id, "command ack not queued; the collector resends");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot encode a command ack"),
    }
}

/// Handles a message on a `down/` topic: acks leave the spool, commands are kept.
/// `retained` is the MQTT retain flag, which a broker sets only on what it sends because
/// of a new subscription (a live message is forwarded with it cleared). Returns the id of
/// a command to acknowledge.
pub(super) fn handle_down(
    shared: &AgentState,
    cfg: &LinkConfig,
    topic: &str,
    payload: &[u8],
    retained: bool,
) -> Option<u64> {
    match cfg.topics.parse(topic) {
        Ok(Topic::Down(id, DownKind::Ack)) if id == cfg.device => match decode::<Ack>(payload) {
            Ok(ack) if ack.device == cfg.device => {
                let mut spool = lock(&shared.spool);
                match spool.ack(&ack, now_ms()) {
                    Ok(n) => {
                        tracing::debug!(removed = n, left = spool.len(), "ack");
                        // Acking a drop notice may have enqueued the next one.
                        if n > 0 {
                            shared.wake.notify_one();
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "spool: cannot apply ack"),
                }
            }
            Ok(ack) => tracing::warn!(device = %ack.device, "ack for another device ignored"),
            Err(e) => tracing::warn!(error = %e, "malformed ack ignored"),
        },
        Ok(Topic::Down(id, DownKind::Cmd)) if id == cfg.device => match decode::<Cmd>(payload) {
            Ok(cmd) if cmd.device == cfg.device => {
                tracing::info!(cmd = ?cmd.body, id = cmd.id, "command from the collector");
                if matches!(cmd.body, CmdBody::Recheck) {
                    shared.recheck.notify_one();
                }
                // A resend of one already kept is kept once (see the inbox); it is
                // acknowledged again all the same.
                let id = cmd.id;
                lock(&shared.inbox).push(cmd.clone());
                let _ = shared.cmds.send(cmd);
                return (id != 0).then_some(id);
            }
            Ok(cmd) => tracing::warn!(device = %cmd.device, "command for another device ignored"),
            Err(e) => tracing::warn!(error = %e, "malformed command ignored"),
        },
        Ok(Topic::CollectorStatus) => match decode::<CollectorStatus>(payload) {
            Ok(status) if status.online => {
                let new = lock(&shared.collector_online_ts).replace(status.ts) != Some(status.ts);
                // The retained `online` comes with every subscription, right after the
                // session's own start replayed the whole spool: replaying again would
                // publish everything twice. Only a live `online` (the collector started
                // or recovered while this session was up) means it may have lost some.
                if retained {
                    tracing::debug!(ts = status.ts, "collector online (retained)");
                } else if new {
                    tracing::info!(ts = status.ts, "collector online: replaying unacked events");
                    shared.replay.store(true, Ordering::SeqCst);
                    shared.wake.notify_one();
                }
            }
            Ok(_) => tracing::info!("collector offline; events wait in the spool"),
            Err(e) => tracing::warn!(error = %e, "malformed collector status ignored"),
        },
        _ => tracing::warn!(topic, "message on an unexpected topic ignored"),
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::state::test_config;
    use super::*;
    use crate::spool::Spool;
    use vigia_protocol::DeviceId;

    fn shared_with(n: usize) -> (Arc<AgentState>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(
            &dir.path().join("db"),
            DeviceId::new("ws-1").unwrap(),
            1 << 20,
        )
        .unwrap();
        for i in 0..n {
            let body = vigia_protocol::EventBody::Reply(vigia_protocol::Reply {
                incident: i as u64,
                text: vigia_protocol::bounded("x"),
            });
            spool.push(1, body).unwrap();
        }
        (Arc::new(AgentState::new(spool)), dir)
    }

    #[test]
    fn an_ack_removes_exactly_its_seqs_from_the_spool() {
        let (shared, _dir) = shared_with(5);
        let cfg = test_config();
        let ack = br#"{"v":1,"device":"ws-1","stored":[{"from":1,"to":2}],"rejected":[{"seq":4,"reason":"malformed"}]}"#;
        handle_down(&shared, &cfg, "vigia/v1/down/ws-1/ack", ack, false);
        assert_eq!(lock(&shared.spool).seqs().collect::<Vec<_>>(), [3, 5]);
    }

    #[test]
    fn acks_for_another_device_or_malformed_change_nothing() {
        let (shared, _dir) = shared_with(3);
        let cfg = test_config();
        let other = br#"{"v":1,"device":"ws-2","stored":[{"from":1,"to":3}]}"#;
        handle_down(&shared, &cfg, "vigia/v1/down/ws-1/ack", other, false);
        handle_down(&shared, &cfg, "vigia/v1/down/ws-2/ack", other, false);
        handle_down(&shared, &cfg, "vigia/v1/down/ws-1/ack", b"{not json", false);
        handle_down(
            &shared,
            &cfg,
            "vigia/v1/down/ws-1/ack",
            br#"{"device":"ws-1","stored":[{"from":1,"to":3}]}"#,
            false,
        );
        assert_eq!(lock(&shared.spool).len(), 3);
    }

    #[tokio::test]
    async fn commands_are_kept_broadcast_and_recheck_wakes_the_sampler() {
        let (shared, _dir) = shared_with(0);
        let cfg = test_config();
        let mut rx = shared.cmds.subscribe();
        let cmd = br#"{"v":1,"device":"ws-1","ts":5,"body":{"type":"report_accepted","report_id":9,"incident":42}}"#;
        handle_down(&shared, &cfg, "vigia/v1/down/ws-1/cmd", cmd, false);
        let got = rx.try_recv().unwrap();
        assert_eq!(
            got.body,
            CmdBody::ReportAccepted {
                report_id: 9,
                incident: 42
            }
        );
        assert_eq!(lock(&shared.inbox).recent.len(), 1);
        // A command with an id is to be acknowledged; sent again, it is kept once.
        let queued = br#"{"v":1,"device":"ws-1","id":7,"ts":5,"body":{"type":"report_accepted","report_id":10,"incident":43}}"#;
        assert_eq!(
            handle_down(&shared, &cfg, "vigia/v1/down/ws-1/cmd", queued, false),
            Some(7)
        );
        assert_eq!(
            handle_down(&shared, &cfg, "vigia/v1/down/ws-1/cmd", queued, false),
            Some(7)
        );
        assert_eq!(lock(&shared.inbox).recent.len(), 2);
        assert_eq!(
            handle_down(&shared, &cfg, "vigia/v1/down/ws-1/cmd", cmd, false),
            None
        );
        let recheck = br#"{"v":1,"device":"ws-1","ts":6,"body":{"type":"recheck"}}"#;
        handle_down(&shared, &cfg, "vigia/v1/down/ws-1/cmd", recheck, false);
        // The permit is stored: the sampler's next wait returns at once.
        tokio::time::timeout(Duration::from_secs(1), shared.recheck.notified())
            .await
            .unwrap();
    }

    #[test]
    fn only_the_account_refused_counts_as_a_refusal() {
        use rumqttc::ConnectReturnCode as C;
        assert!(account_refused(&ConnectionError::ConnectionRefused(
            C::NotAuthorized
        )));
        assert!(account_refused(&ConnectionError::ConnectionRefused(
            C::BadUserNamePassword
        )));
        assert!(!account_refused(&ConnectionError::ConnectionRefused(
            C::ServiceUnavailable
        )));
        assert!(!account_refused(&ConnectionError::NetworkTimeout));
    }

    #[test]
    fn only_a_live_collector_online_asks_for_a_replay() {
        let (shared, _dir) = shared_with(0);
        let cfg = test_config();
        let status = |ts: u64| format!(r#"{{"v":1,"online":true,"ts":{ts}}}"#);
        let topic = "vigia/v1/svc/collector/status";
        // The retained one every subscription brings: the session's start already replays.
        handle_down(&shared, &cfg, topic, status(10).as_bytes(), true);
        assert!(!shared.replay.load(Ordering::SeqCst));
        // The same status forwarded live again (a queued copy) is not news either.
        handle_down(&shared, &cfg, topic, status(10).as_bytes(), false);
        assert!(!shared.replay.load(Ordering::SeqCst));
        // The collector started again while this session was up.
        handle_down(&shared, &cfg, topic, status(11).as_bytes(), false);
        assert!(shared.replay.load(Ordering::SeqCst));
    }
}
