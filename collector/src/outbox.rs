//! What leaves the collector because of a stored change: commands to devices
//! (`down/{id}/cmd`, `down/{id}/ack` over MQTT) and the live feed for people (incidents
//! opened or changed, devices going online or offline, the workflow's notifications).
//!
//! Everything here is sent only after the change that causes it is flushed to the store,
//! by [`deliver`], which ingest, the API and the timers share. The feed is a
//! `tokio::sync::broadcast` channel that the HTTP side turns into Server-Sent Events: a
//! slow browser misses events (the channel is bounded and lagging receivers skip) rather
//! than slowing ingest down, and the page reloads its lists when told it lagged.
//! Device commands live only in the MQTT client's queue for now; a durable outbox that
//! survives restarts is planned (see `docs/design.md`).
use rumqttc::{AsyncClient, QoS};
use serde::Serialize;
use tokio::sync::broadcast;
use tracing::{debug, error, info, warn};
use vigia_protocol::{encode, Cmd, CmdBody, DeviceId, DownKind, Millis, Topics, VERSION};

use crate::workflow::{self, Decision, IncidentSummary, Notification, Policy};

/// How many feed events are buffered for slow subscribers.
pub const FEED_CAPACITY: usize = 256;

/// A feed event.
// Short-lived values on a bounded channel; boxing would only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FeedEvent {
    /// An incident was opened (`opened`) or changed.
    Incident {
        /// Opened by this event, rather than updated.
        opened: bool,
        /// The incident after the change.
        incident: IncidentSummary,
    },
    /// A device went online or offline.
    Device {
        /// The device.
        device: DeviceId,
        /// Its new state.
        online: bool,
        /// Its session counter.
        boot: u64,
    },
    /// A workflow notification for people (escalation, SLA breach, provider notice...).
    Notification(Notification),
}

impl FeedEvent {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Incident { .. } => "incident",
            Self::Device { .. } => "device",
            Self::Notification(_) => "notification",
        }
    }
}

/// Sends messages to devices (`down/{id}/cmd`, `down/{id}/ack`). Cheap to clone; any task
/// may use it (publishing only queues into rumqttc; ingest's poller task sends).
#[derive(Clone)]
pub struct Downlink {
    client: AsyncClient,
    topics: Topics,
}

impl Downlink {
    /// A downlink publishing through `client` under `topics`.
    pub fn new(client: AsyncClient, topics: Topics) -> Self {
        Self { client, topics }
    }

    /// Publishes `msg` on the device's `kind` topic (QoS 1).
    pub async fn publish<T: Serialize>(&self, device: &DeviceId, kind: DownKind, msg: &T) {
        let bytes = match encode(msg) {
            Ok(b) => b,
            Err(e) => {
                error!(device = %device, error = %e, "cannot encode a message to the device");
                return;
            }
        };
        let topic = self.topics.down(device, kind);
        if let Err(e) = self
            .client
            .publish(topic.as_str(), QoS::AtLeastOnce, false, bytes)
            .await
        {
            warn!(device = %device, error = %e, "cannot queue a message to the device");
        }
    }

    /// Sends a command to a device.
    pub async fn cmd(&self, device: &DeviceId, body: CmdBody, now: Millis) {
        let cmd = Cmd {
            v: VERSION,
            device: device.clone(),
            ts: now,
            body,
        };
        debug!(device = %device, "command sent");
        self.publish(device, DownKind::Cmd, &cmd).await;
    }
}

/// Whether [`deliver`] sends the decisions' device commands too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceCommands {
    /// Send them (the API and the timers).
    Send,
    /// The caller already sent them with its acks (ingest).
    AlreadySent,
}

/// Sends what stored decisions emit: device commands (unless already sent),
/// notifications (logged and put on the feed), and each changed incident on the feed;
/// `opened` says the decision opened its incident. Call only after the store is flushed.
pub async fn deliver(
    decisions: &[(Decision, bool)],
    downlink: &Downlink,
    feed: &broadcast::Sender<FeedEvent>,
    policy: &Policy,
    now: Millis,
    commands: DeviceCommands,
) {
    for (d, opened) in decisions {
        for m in &d.messages {
            match m {
                workflow::Outgoing::Device { device, body } => {
                    if commands == DeviceCommands::Send {
                        downlink.cmd(device, body.clone(), now).await;
                    }
                }
                workflow::Outgoing::Notify(n) => {
                    info!(incident = n.incident, audience = ?n.audience, text = %n.text,
                        "notification");
                    let _ = feed.send(FeedEvent::Notification(n.clone()));
                }
            }
        }
        let inc = &d.incident;
        let _ = feed.send(FeedEvent::Incident {
            opened: *opened,
            incident: IncidentSummary::new(inc, workflow::next_deadline(inc, policy)),
        });
    }
}
