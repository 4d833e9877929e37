//! Decoding what devices publish: topic, version, size, shape, and that the device in
//! the payload is the one the topic (and so the broker account) says. What is refused is
//! counted and logged by reason here, and an event refused with a readable seq is acked
//! as rejected so the agent stops resending it.
use rumqttc::Publish;
use tracing::warn;
use vigia_protocol::{
    decode, peek_header, Birth, CmdAck, CodecError, DeviceId, Event, RejectReason, Status, Topic,
    Topics, UpKind, MAX_PACKET, VERSION,
};

use crate::metrics::{Metrics, Rejected};

/// What one incoming publish turned into, before the store.
#[derive(Debug)]
pub enum Decoded {
    /// An inventory.
    Birth(Box<Birth>),
    /// Online or offline.
    Status(Status),
    /// A fault, report, reply or drop notice.
    Event(Box<Event>),
    /// An event refused: acked as rejected when its seq is known.
    Rejected {
        /// The device, from the topic.
        device: DeviceId,
        /// The agent instance that sent it, when it could be read (else 0).
        instance: u64,
        /// The event's seq, when it could be read.
        seq: Option<u64>,
        /// Why.
        reason: RejectReason,
    },
    /// The device got these commands.
    CmdAck {
        /// Which device.
        device: DeviceId,
        /// The command ids.
        ids: Vec<u64>,
    },
    /// A request to join (self-enrolment): the site and request id from the topic.
    Enrol(Box<(String, String, vigia_protocol::enrol::EnrolRequest)>),
    /// Nothing to store (refused birth/status, unknown topic): acked to the broker only.
    Nothing,
}

/// Decodes a publish on `topics`. Counting and logging of refusals happen here.
pub(super) fn decode_publish(topics: &Topics, metrics: &Metrics, p: &Publish) -> Decoded {
    decode_message(topics, metrics, &p.topic, &p.payload)
}

/// Decodes a message published on `topic`: what [`decode_publish`] does, without the
/// MQTT packet (the fuzz target calls it with arbitrary bytes).
pub fn decode_message(topics: &Topics, metrics: &Metrics, topic: &str, payload: &[u8]) -> Decoded {
    let (device, kind) = match topics.parse(topic) {
        Ok(Topic::Up(d, k)) => (d, k),
        Ok(Topic::EnrolRequest { site, request }) => {
            metrics.message_in(None);
            return match decode::<vigia_protocol::enrol::EnrolRequest>(payload) {
                Ok(r) => Decoded::Enrol(Box::new((site.to_string(), request.to_string(), r))),
                Err(e) => {
                    metrics.rejected(Rejected::Payload(e.reason()));
                    warn!(site = %site, request = %request, reason = e.reason().as_str(),
                        detail = %e, "enrolment request rejected");
                    Decoded::Nothing
                }
            };
        }
        Ok(_) | Err(_) => {
            metrics.message_in(None);
            metrics.rejected(Rejected::UnknownTopic);
            warn!(topic = %topic, reason = "unknown_topic", "message rejected");
            return Decoded::Nothing;
        }
    };
    metrics.message_in(Some(kind));
    let reject = |reason: RejectReason, detail: &dyn std::fmt::Display| {
        metrics.rejected(Rejected::Payload(reason));
        warn!(device = %device, kind = kind.as_str(), reason = reason.as_str(),
            detail = %detail, "message rejected");
    };
    match kind {
        UpKind::Birth => match decode::<Birth>(payload) {
            Ok(b) if b.device == device => Decoded::Birth(Box::new(b)),
            Ok(b) => {
                reject(RejectReason::DeviceMismatch, &b.device);
                Decoded::Nothing
            }
            Err(e) => {
                reject(e.reason(), &e);
                Decoded::Nothing
            }
        },
        UpKind::CmdAck => match decode::<CmdAck>(payload) {
            Ok(a) if a.device == device => Decoded::CmdAck {
                device,
                ids: a.ids.iter().copied().collect(),
            },
            Ok(a) => {
                reject(RejectReason::DeviceMismatch, &a.device);
                Decoded::Nothing
            }
            Err(e) => {
                reject(e.reason(), &e);
                Decoded::Nothing
            }
        },
        UpKind::Status => match decode::<Status>(payload) {
            Ok(s) if s.device == device => Decoded::Status(s),
            Ok(s) => {
                reject(RejectReason::DeviceMismatch, &s.device);
                Decoded::Nothing
            }
            Err(e) => {
                reject(e.reason(), &e);
                Decoded::Nothing
            }
        },
        UpKind::Event => match decode::<Event>(payload) {
            Ok(e) if e.device == device => Decoded::Event(Box::new(e)),
            Ok(e) => {
                reject(RejectReason::DeviceMismatch, &e.device);
                Decoded::Rejected {
                    device,
                    instance: e.instance,
                    seq: Some(e.seq),
                    reason: RejectReason::DeviceMismatch,
                }
            }
            // A newer agent's event is not refused for good: left unacknowledged, it stays
            // in the agent's spool and arrives once this collector is upgraded.
            Err(CodecError::UnsupportedVersion(v)) if v > u64::from(VERSION) => {
                metrics.event_deferred();
                warn!(device = %device, version = v, seq = peek_header(payload).and_then(|h| h.seq),
                    "event of a newer protocol version left for an upgraded collector");
                Decoded::Nothing
            }
            Err(e) => {
                reject(e.reason(), &e);
                let header = match &e {
                    // `peek_header` refuses oversized input; the broker already bounds
                    // packets to MAX_PACKET, so reading the seq here is still bounded,
                    // and without it the agent would resend the event forever.
                    CodecError::TooLarge { .. } if payload.len() <= MAX_PACKET => {
                        serde_json::from_slice::<serde_json::Value>(payload)
                            .ok()
                            .map(|v| {
                                let field = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
                                (field("instance").unwrap_or(0), field("seq"))
                            })
                    }
                    CodecError::TooLarge { .. } => None,
                    _ => peek_header(payload).map(|h| (h.instance, h.seq)),
                };
                let (instance, seq) = header.unwrap_or((0, None));
                Decoded::Rejected {
                    device,
                    instance,
                    seq,
                    reason: e.reason(),
                }
            }
        },
    }
}
