//! JSON encode/decode with the version check and the hard size limit.
//!
//! Decoding checks, in order: size, that the payload is a JSON object, that `v` is present
//! and a known major, then the shape. Each failure is its own [`CodecError`] so the
//! collector can count rejections by reason. [`peek_header`] reads `seq` and `device`
//! leniently, so even a malformed event can be acknowledged as rejected and the agent
//! stops resending it.
use alloc::string::ToString;
use alloc::vec::Vec;
use core::fmt;

use heapless::String;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::device::bounded;
use crate::payload::RejectReason;

/// The major version every payload carries as `"v"`. A different major is rejected.
pub const VERSION: u8 = 1;

/// The MQTT packet limit, both ways, in every client and broker of the system (rumqttc
/// in both programs, the embedded rumqttd, `broker-config/mosquitto.conf`): a payload of
/// [`MAX_PAYLOAD`] plus room for the topic and headers. A larger packet is refused by the
/// broker before anyone decodes it.
pub const MAX_PACKET: usize = 32 * 1024;

/// The largest payload accepted or produced, in bytes. Brokers and rumqttc must allow
/// packets at least this large plus the topic (the agent and collector set 32 KiB).
pub const MAX_PAYLOAD: usize = 16 * 1024;

/// Why a payload could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// The payload is larger than [`MAX_PAYLOAD`].
    TooLarge {
        /// Its size.
        size: usize,
    },
    /// The payload has no `"v"` field.
    MissingVersion,
    /// The payload's `"v"` is not a major version we speak.
    UnsupportedVersion(u64),
    /// Not JSON, not an object, or the wrong shape; the text says where.
    Malformed(String<96>),
}

impl CodecError {
    /// The rejection reason to send back in an ack.
    pub fn reason(&self) -> RejectReason {
        match self {
            Self::TooLarge { .. } => RejectReason::TooLarge,
            Self::MissingVersion | Self::UnsupportedVersion(_) => RejectReason::BadVersion,
            Self::Malformed(_) => RejectReason::Malformed,
        }
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { size } => {
                write!(
                    f,
                    "payload of {size} bytes exceeds the {MAX_PAYLOAD}-byte limit"
                )
            }
            Self::MissingVersion => f.write_str("payload has no \"v\" field"),
            Self::UnsupportedVersion(v) => {
                write!(
                    f,
                    "payload version {v} is not supported (expected {VERSION})"
                )
            }
            Self::Malformed(m) => write!(f, "malformed payload: {m}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for CodecError {}

fn malformed(e: &serde_json::Error) -> CodecError {
    CodecError::Malformed(bounded(&e.to_string()))
}

/// Encodes a message as JSON, refusing anything over [`MAX_PAYLOAD`].
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    let buf = serde_json::to_vec(msg).map_err(|e| malformed(&e))?;
    if buf.len() > MAX_PAYLOAD {
        return Err(CodecError::TooLarge { size: buf.len() });
    }
    Ok(buf)
}

/// What can be read from a payload without trusting its shape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// `"v"`, when it is an unsigned integer.
    pub v: Option<u64>,
    /// `"seq"`, when it is an unsigned integer.
    pub seq: Option<u64>,
    /// `"instance"`, when it is an unsigned integer (absent: 0, an agent from before
    /// instances).
    pub instance: u64,
    /// `"device"`, when it is a string of at most 64 bytes.
    pub device: Option<String<64>>,
}

/// Reads `v`, `seq`, `instance` and `device` from a JSON object, ignoring everything else and any
/// field of the wrong type. Returns `None` when the payload is too large or not a JSON
/// object at all.
pub fn peek_header(bytes: &[u8]) -> Option<Header> {
    if bytes.len() > MAX_PAYLOAD {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let obj = value.as_object()?;
    Some(Header {
        v: obj.get("v").and_then(serde_json::Value::as_u64),
        seq: obj.get("seq").and_then(serde_json::Value::as_u64),
        instance: obj
            .get("instance")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0),
        device: obj
            .get("device")
            .and_then(serde_json::Value::as_str)
            .and_then(|s| String::try_from(s).ok()),
    })
}

/// Decodes a message: size limit, version check, then shape.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() > MAX_PAYLOAD {
        return Err(CodecError::TooLarge { size: bytes.len() });
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| malformed(&e))?;
    let Some(obj) = value.as_object() else {
        return Err(CodecError::Malformed(bounded(
            "payload is not a JSON object",
        )));
    };
    match obj.get("v") {
        None => return Err(CodecError::MissingVersion),
        Some(v) => match v.as_u64() {
            Some(v) if v == u64::from(VERSION) => {}
            Some(v) => return Err(CodecError::UnsupportedVersion(v)),
            None => return Err(CodecError::Malformed(bounded("\"v\" is not an integer"))),
        },
    }
    serde_json::from_value(value).map_err(|e| malformed(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;
    use alloc::format;
    use proptest::prelude::*;

    fn id(s: &str) -> DeviceId {
        DeviceId::new(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn fault_event(seq: u64) -> Event {
        Event {
            v: VERSION,
            device: id("ws-1"),
            instance: 0x5eed_1234_abcd_0001,
            seq,
            boot: 3,
            ts: 1_700_000_000_000,
            body: EventBody::Fault(FaultEvent {
                action: FaultAction::Raised,
                kind: FaultKind::DiskSpace,
                subject: bounded("/var"),
                severity: Severity::Warning,
                evidence: Evidence {
                    value: 91.5,
                    threshold: 90.0,
                    unit: bounded("%"),
                    source: bounded("statvfs(/var)"),
                },
                message: bounded("/var is 91.5 % full"),
            }),
        }
    }

    fn ok<T, E: core::fmt::Display>(r: Result<T, E>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn event_round_trips_and_has_the_documented_shape() {
        let e = fault_event(7);
        let bytes = ok(encode(&e));
        let json: serde_json::Value = ok(serde_json::from_slice(&bytes));
        assert_eq!(json["v"], 1);
        assert_eq!(json["seq"], 7);
        assert_eq!(json["body"]["type"], "fault");
        assert_eq!(json["body"]["kind"], "disk_space");
        assert_eq!(json["body"]["action"], "raised");
        assert_eq!(ok(decode::<Event>(&bytes)), e);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let raw = br#"{"v":1,"device":"ws-1","online":true,"boot":2,"ts":5,"future":{"x":1}}"#;
        let s: Status = ok(decode(raw));
        assert!(s.online);
        assert_eq!(s.boot, 2);
    }

    #[test]
    fn version_is_required_and_checked() {
        let raw = br#"{"device":"ws-1","online":true,"boot":2,"ts":5}"#;
        assert_eq!(decode::<Status>(raw), Err(CodecError::MissingVersion));
        let raw = br#"{"v":2,"device":"ws-1","online":true,"boot":2,"ts":5}"#;
        assert_eq!(
            decode::<Status>(raw),
            Err(CodecError::UnsupportedVersion(2))
        );
        assert_eq!(
            decode::<Status>(raw).map_err(|e| e.reason()),
            Err(RejectReason::BadVersion)
        );
    }

    #[test]
    fn size_limit_is_enforced_both_ways() {
        let big = alloc::vec![b' '; MAX_PAYLOAD + 1];
        assert_eq!(
            decode::<Status>(&big),
            Err(CodecError::TooLarge {
                size: MAX_PAYLOAD + 1
            })
        );
        assert_eq!(peek_header(&big), None);
    }

    #[test]
    fn malformed_payloads_are_rejected_with_a_reason() {
        for raw in [&b"not json"[..], b"[1,2]", b"{\"v\":1}", b"{\"v\":\"1\"}"] {
            let err = decode::<Event>(raw).err();
            assert!(
                matches!(err, Some(CodecError::Malformed(_))),
                "{raw:?}: {err:?}"
            );
        }
        // A device id that breaks the charset is a shape error too.
        let raw = br#"{"v":1,"device":"a/b","online":true,"boot":2,"ts":5}"#;
        assert!(matches!(
            decode::<Status>(raw),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn oversized_fields_are_rejected_not_truncated() {
        let long = "x".repeat(200);
        let raw = format!(
            r#"{{"v":1,"device":"ws-1","seq":1,"boot":1,"ts":1,"body":{{"type":"reply","incident":1,"text":"{}"}}}}"#,
            "y".repeat(2001)
        );
        assert!(matches!(
            decode::<Event>(raw.as_bytes()),
            Err(CodecError::Malformed(_))
        ));
        let raw = format!(r#"{{"v":1,"device":"{long}","online":true,"boot":1,"ts":1}}"#);
        assert!(matches!(
            decode::<Status>(raw.as_bytes()),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn header_is_read_from_malformed_events() {
        let raw = br#"{"v":1,"device":"ws-1","seq":41,"body":"garbage"}"#;
        assert!(decode::<Event>(raw).is_err());
        let h = peek_header(raw);
        assert_eq!(h.as_ref().and_then(|h| h.seq), Some(41));
        assert_eq!(h.and_then(|h| h.device).as_deref(), Some("ws-1"));
    }

    #[test]
    fn an_agent_from_before_instances_is_instance_zero() {
        let mut v: serde_json::Value =
            serde_json::from_slice(&ok(encode(&fault_event(4)))).unwrap_or_default();
        assert_eq!(v["instance"], 0x5eed_1234_abcd_0001_u64);
        if let Some(o) = v.as_object_mut() {
            o.remove("instance");
        }
        let old = ok(serde_json::to_vec(&v).map_err(|e| e.to_string()));
        let e: Event = ok(decode(&old));
        assert_eq!((e.instance, e.seq), (0, 4));
    }

    #[test]
    fn escaped_and_unicode_text_survives() {
        let e = Event {
            body: EventBody::Reply(Reply {
                incident: 12,
                text: bounded("línea 1\n\"comillas\" \\ y tildes: áéíóú ñ 🖨"),
            }),
            ..fault_event(1)
        };
        assert_eq!(ok(decode::<Event>(&ok(encode(&e)))), e);
    }

    #[test]
    fn ack_covers_ranges_and_rejections() {
        let mut a = Ack {
            v: 1,
            device: id("d"),
            instance: 7,
            stored: heapless::Vec::new(),
            rejected: heapless::Vec::new(),
        };
        ok(a.stored
            .push(SeqRange { from: 3, to: 5 })
            .map_err(|_| "full"));
        ok(a.rejected
            .push(Rejection {
                seq: 9,
                reason: RejectReason::Malformed,
            })
            .map_err(|_| "full"));
        assert!(!a.covers(2));
        assert!(a.covers(3) && a.covers(5) && a.covers(9));
        assert!(!a.covers(6));
        assert_eq!(ok(decode::<Ack>(&ok(encode(&a)))), a);
    }

    fn arb_text<const N: usize>() -> impl Strategy<Value = heapless::String<N>> {
        "\\PC{0,40}".prop_map(|s| bounded::<N>(&s))
    }

    prop_compose! {
        fn arb_report()(
            report_id in any::<u64>(),
            category in arb_text::<32>(),
            summary in arb_text::<120>(),
            text in arb_text::<2000>(),
            urgency in prop::sample::select(Urgency::ALL.to_vec()),
            value in -1e12f64..1e12,
        ) -> UserReport {
            let mut snapshot = heapless::Vec::new();
            let _ = snapshot.push(Reading { name: bounded("temp"), value, unit: bounded("°C") });
            UserReport { report_id, category, summary, text, reporter: bounded("ana"),
                contact: bounded("ext 123"), urgency, snapshot, open_faults: heapless::Vec::new() }
        }
    }

    proptest! {
        #[test]
        fn events_round_trip(seq in any::<u64>(), boot in any::<u64>(), report in arb_report(),
                             kind in prop::sample::select(FaultKind::ALL.to_vec()),
                             sev in prop::sample::select(Severity::ALL.to_vec()),
                             value in -1e12f64..1e12, subject in arb_text::<96>()) {
            let mut e = fault_event(seq);
            e.boot = boot;
            if let EventBody::Fault(f) = &mut e.body {
                f.kind = kind; f.severity = sev; f.subject = subject; f.evidence.value = value;
            }
            prop_assert_eq!(decode::<Event>(&encode(&e).unwrap_or_default()), Ok(e.clone()));
            e.body = EventBody::Report(report);
            prop_assert_eq!(decode::<Event>(&encode(&e).unwrap_or_default()), Ok(e));
        }

        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Event>(&bytes);
            let _ = peek_header(&bytes);
        }

        #[test]
        fn decode_never_panics_on_near_json(s in r#"\{"v":1,"device":"[a-z]{1,3}","seq":[0-9]{1,3},"body":\{"type":"(fault|report|reply|dropped)"[ -~]{0,60}\}\}"#) {
            let _ = decode::<Event>(s.as_bytes());
        }
    }
}
