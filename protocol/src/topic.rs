//! Topic names. Devices write only under `{prefix}/up/{id}/` and read only under
//! `{prefix}/down/{id}/`, so one broker ACL pattern per direction pins a device to its
//! own topics (`pattern write vigia/v1/up/%u/#`).
use core::fmt::{self, Write};

use heapless::String;

use crate::device::{DeviceId, DeviceIdError};

/// The default topic prefix.
pub const DEFAULT_PREFIX: &str = "vigia/v1";

/// Longest topic (or prefix) we build, in bytes.
const MAX_TOPIC: usize = 160;
const MAX_PREFIX: usize = 64;

/// A device-to-server topic kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpKind {
    /// Retained inventory.
    Birth,
    /// Retained online/offline state (and the Last Will).
    Status,
    /// Fault events and user reports.
    Event,
    /// The device got these commands (their ids): the collector stops resending them.
    CmdAck,
}

/// A server-to-device topic kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DownKind {
    /// Application-level acknowledgement of stored events.
    Ack,
    /// Commands: incident numbers, questions, re-check requests.
    Cmd,
}

impl UpKind {
    /// The last topic level for this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Birth => "birth",
            Self::Status => "status",
            Self::Event => "event",
            Self::CmdAck => "cmdack",
        }
    }
}

impl DownKind {
    /// The last topic level for this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ack => "ack",
            Self::Cmd => "cmd",
        }
    }
}

/// A parsed topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic {
    /// `{prefix}/up/{id}/{kind}`
    Up(DeviceId, UpKind),
    /// `{prefix}/down/{id}/{kind}`
    Down(DeviceId, DownKind),
    /// `{prefix}/svc/collector/status`
    CollectorStatus,
    /// `{prefix}/enrol/{site}/{request}/request`: an agent asking to join.
    EnrolRequest {
        /// The site of the token it used.
        site: String<{ crate::enrol::MAX_SITE }>,
        /// The request id (derived from the agent's key).
        request: String<{ crate::enrol::REQUEST_ID_LEN }>,
    },
    /// `{prefix}/enrol/{site}/{request}/reply`: the collector's answer.
    EnrolReply {
        /// The site.
        site: String<{ crate::enrol::MAX_SITE }>,
        /// The request id.
        request: String<{ crate::enrol::REQUEST_ID_LEN }>,
    },
}

/// Why a topic was not understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicError {
    /// The topic does not start with the configured prefix.
    WrongPrefix,
    /// The levels after the prefix are not a known topic.
    Unknown,
    /// The device id level is not a valid id.
    BadDevice(DeviceIdError),
    /// The prefix given to [`Topics::new`] is empty, too long, or has wildcards.
    BadPrefix,
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongPrefix => f.write_str("topic is outside the configured prefix"),
            Self::Unknown => f.write_str("unknown topic"),
            Self::BadDevice(e) => write!(f, "bad device id in topic: {e}"),
            Self::BadPrefix => f.write_str(
                "topic prefix must be 1-64 bytes, without '+', '#', a leading or trailing '/'",
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for TopicError {}

/// Builds and parses topics under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String<MAX_PREFIX>,
}

impl Default for Topics {
    fn default() -> Self {
        let mut prefix = String::new();
        let _ = prefix.push_str(DEFAULT_PREFIX);
        Self { prefix }
    }
}

impl Topics {
    /// A topic set under `prefix` (for example `vigia/v1`).
    pub fn new(prefix: &str) -> Result<Self, TopicError> {
        if prefix.is_empty()
            || prefix.starts_with('/')
            || prefix.ends_with('/')
            || prefix.contains(['+', '#', '\0'])
        {
            return Err(TopicError::BadPrefix);
        }
        let mut p = String::new();
        p.push_str(prefix).map_err(|_| TopicError::BadPrefix)?;
        Ok(Self { prefix: p })
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn build(&self, parts: &[&str]) -> String<MAX_TOPIC> {
        let mut s = String::new();
        // Prefix ≤ 64, id ≤ 64, fixed words ≤ 16 : always fits in MAX_TOPIC.
        let _ = s.push_str(&self.prefix);
        for p in parts {
            let _ = s.push('/');
            let _ = s.push_str(p);
        }
        s
    }

    /// `{prefix}/up/{id}/{kind}`
    pub fn up(&self, id: &DeviceId, kind: UpKind) -> String<MAX_TOPIC> {
        self.build(&["up", id.as_str(), kind.as_str()])
    }

    /// `{prefix}/down/{id}/{kind}`
    pub fn down(&self, id: &DeviceId, kind: DownKind) -> String<MAX_TOPIC> {
        self.build(&["down", id.as_str(), kind.as_str()])
    }

    /// `{prefix}/svc/collector/status`
    pub fn collector_status(&self) -> String<MAX_TOPIC> {
        self.build(&["svc", "collector", "status"])
    }

    /// The filter the collector subscribes to: every device's up topics.
    pub fn up_filter(&self) -> String<MAX_TOPIC> {
        self.build(&["up", "+", "+"])
    }

    /// The same filter as a shared subscription, so several collectors split the stream.
    pub fn shared_up_filter(&self, group: &str) -> String<MAX_TOPIC> {
        let mut s = String::new();
        let _ = write!(s, "$share/{group}/{}/up/+/+", self.prefix);
        s
    }

    /// The filter a device subscribes to: its own down topics.
    pub fn down_filter(&self, id: &DeviceId) -> String<MAX_TOPIC> {
        self.build(&["down", id.as_str(), "+"])
    }

    /// `{prefix}/enrol/{site}/{request}/request`
    pub fn enrol_request(&self, site: &str, request: &str) -> String<MAX_TOPIC> {
        self.build(&["enrol", site, request, "request"])
    }

    /// `{prefix}/enrol/{site}/{request}/reply`
    pub fn enrol_reply(&self, site: &str, request: &str) -> String<MAX_TOPIC> {
        self.build(&["enrol", site, request, "reply"])
    }

    /// The filter the collector subscribes to: every site's enrolment requests.
    pub fn enrol_request_filter(&self) -> String<MAX_TOPIC> {
        self.build(&["enrol", "+", "+", "request"])
    }

    /// The filter a site's enrolment account may publish to (for its broker role).
    pub fn enrol_site_requests(&self, site: &str) -> String<MAX_TOPIC> {
        self.build(&["enrol", site, "+", "request"])
    }

    /// The filter a site's enrolment account may read (for its broker role).
    pub fn enrol_site_replies(&self, site: &str) -> String<MAX_TOPIC> {
        self.build(&["enrol", site, "+", "reply"])
    }

    /// Parses a topic under this prefix.
    pub fn parse(&self, topic: &str) -> Result<Topic, TopicError> {
        let rest = topic
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .ok_or(TopicError::WrongPrefix)?;
        let mut it = rest.split('/');
        if let Some(tail) = rest.strip_prefix("enrol/") {
            return parse_enrol(tail);
        }
        let (a, b, c, extra) = (it.next(), it.next(), it.next(), it.next());
        if extra.is_some() {
            return Err(TopicError::Unknown);
        }
        match (a, b, c) {
            (Some("svc"), Some("collector"), Some("status")) => Ok(Topic::CollectorStatus),
            (Some(dir @ ("up" | "down")), Some(id), Some(kind)) => {
                let id = DeviceId::new(id).map_err(TopicError::BadDevice)?;
                match (dir, kind) {
                    ("up", "birth") => Ok(Topic::Up(id, UpKind::Birth)),
                    ("up", "status") => Ok(Topic::Up(id, UpKind::Status)),
                    ("up", "event") => Ok(Topic::Up(id, UpKind::Event)),
                    ("up", "cmdack") => Ok(Topic::Up(id, UpKind::CmdAck)),
                    ("down", "ack") => Ok(Topic::Down(id, DownKind::Ack)),
                    ("down", "cmd") => Ok(Topic::Down(id, DownKind::Cmd)),
                    _ => Err(TopicError::Unknown),
                }
            }
            _ => Err(TopicError::Unknown),
        }
    }
}

fn parse_enrol(tail: &str) -> Result<Topic, TopicError> {
    let mut it = tail.split('/');
    let (Some(site), Some(request), Some(kind), None) =
        (it.next(), it.next(), it.next(), it.next())
    else {
        return Err(TopicError::Unknown);
    };
    if !crate::enrol::site_ok(site) || !crate::enrol::request_id_ok(request) {
        return Err(TopicError::Unknown);
    }
    // Both bounded by the checks above.
    let (mut s, mut r) = (String::new(), String::new());
    let _ = s.push_str(site);
    let _ = r.push_str(request);
    match kind {
        "request" => Ok(Topic::EnrolRequest {
            site: s,
            request: r,
        }),
        "reply" => Ok(Topic::EnrolReply {
            site: s,
            request: r,
        }),
        _ => Err(TopicError::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(s: &str) -> DeviceId {
        DeviceId::new(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn builds_every_topic() {
        let t = Topics::default();
        let d = id("ws-1");
        assert_eq!(t.up(&d, UpKind::Birth).as_str(), "vigia/v1/up/ws-1/birth");
        assert_eq!(t.up(&d, UpKind::Status).as_str(), "vigia/v1/up/ws-1/status");
        assert_eq!(t.up(&d, UpKind::Event).as_str(), "vigia/v1/up/ws-1/event");
        assert_eq!(t.down(&d, DownKind::Ack).as_str(), "vigia/v1/down/ws-1/ack");
        assert_eq!(t.down(&d, DownKind::Cmd).as_str(), "vigia/v1/down/ws-1/cmd");
        assert_eq!(
            t.collector_status().as_str(),
            "vigia/v1/svc/collector/status"
        );
        assert_eq!(t.up_filter().as_str(), "vigia/v1/up/+/+");
        assert_eq!(t.down_filter(&d).as_str(), "vigia/v1/down/ws-1/+");
        assert_eq!(
            t.shared_up_filter("collectors").as_str(),
            "$share/collectors/vigia/v1/up/+/+"
        );
    }

    #[test]
    fn enrolment_topics_build_and_parse() {
        let t = Topics::default();
        let rid = "0123456789abcdef0123456789abcdef";
        let req = t.enrol_request("bcn", rid);
        assert_eq!(
            req.as_str(),
            "vigia/v1/enrol/bcn/0123456789abcdef0123456789abcdef/request"
        );
        assert!(matches!(
            t.parse(&req),
            Ok(Topic::EnrolRequest { site, request }) if site == "bcn" && request == rid
        ));
        assert!(matches!(
            t.parse(&t.enrol_reply("bcn", rid)),
            Ok(Topic::EnrolReply { .. })
        ));
        assert_eq!(
            t.enrol_request_filter().as_str(),
            "vigia/v1/enrol/+/+/request"
        );
        assert_eq!(
            t.enrol_site_replies("bcn").as_str(),
            "vigia/v1/enrol/bcn/+/reply"
        );
        for bad in [
            "vigia/v1/enrol/bcn/short/request",
            "vigia/v1/enrol/BCN/0123456789abcdef0123456789abcdef/request",
            "vigia/v1/enrol/bcn/0123456789abcdef0123456789abcdef/other",
            "vigia/v1/enrol/bcn/0123456789abcdef0123456789abcdef/request/x",
            "vigia/v1/enrol/bcn",
        ] {
            assert_eq!(t.parse(bad), Err(TopicError::Unknown), "{bad}");
        }
    }

    #[test]
    fn rejects_unknown_and_foreign_topics() {
        let t = Topics::default();
        assert_eq!(t.parse("other/v1/up/a/event"), Err(TopicError::WrongPrefix));
        assert_eq!(t.parse("vigia/v1up/a/event"), Err(TopicError::WrongPrefix));
        assert_eq!(t.parse("vigia/v1/up/a/nope"), Err(TopicError::Unknown));
        assert_eq!(t.parse("vigia/v1/up/a/event/x"), Err(TopicError::Unknown));
        assert_eq!(t.parse("vigia/v1/down/a/birth"), Err(TopicError::Unknown));
        assert!(matches!(
            t.parse("vigia/v1/up/a+b/event"),
            Err(TopicError::BadDevice(_))
        ));
        assert_eq!(
            t.parse("vigia/v1/svc/collector/status"),
            Ok(Topic::CollectorStatus)
        );
    }

    #[test]
    fn rejects_bad_prefixes() {
        assert_eq!(Topics::new(""), Err(TopicError::BadPrefix));
        assert_eq!(Topics::new("a/#"), Err(TopicError::BadPrefix));
        assert_eq!(Topics::new("a/"), Err(TopicError::BadPrefix));
        assert!(Topics::new("acme/vigia/v1").is_ok());
    }

    proptest! {
        #[test]
        fn up_and_down_round_trip(raw in "[A-Za-z0-9_][A-Za-z0-9._-]{0,63}", prefix in "[a-z]{1,8}(/[a-z0-9]{1,8}){0,3}") {
            let t = Topics::new(&prefix).unwrap_or_else(|e| panic!("{e}"));
            let d = id(&raw);
            for k in [UpKind::Birth, UpKind::Status, UpKind::Event, UpKind::CmdAck] {
                prop_assert_eq!(t.parse(&t.up(&d, k)), Ok(Topic::Up(d.clone(), k)));
            }
            for k in [DownKind::Ack, DownKind::Cmd] {
                prop_assert_eq!(t.parse(&t.down(&d, k)), Ok(Topic::Down(d.clone(), k)));
            }
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,200}") {
            let _ = Topics::default().parse(&s);
        }
    }
}
