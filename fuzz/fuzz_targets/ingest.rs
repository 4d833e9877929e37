//! The collector's ingest path on arbitrary input: a run of messages (topic, newline,
//! payload; messages separated by a 0xFF byte, which never occurs in UTF-8 or JSON) is
//! decoded and validated as ingest does, and every event that passes is routed into the
//! workflow against a small in-memory store of the incidents earlier messages opened.
//! Checked on every message: a device speaks only for itself (the payload's device is the
//! topic's, and a decision changes only that device's incidents and commands only it), a
//! new incident takes the number offered, an update keeps its incident's number, and every
//! incident survives the store's codec unchanged.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use vigia_collector::ingest::{decode_message, Decoded};
use vigia_collector::metrics::Metrics;
use vigia_collector::workflow::{
    device_commands, related, route, DeviceContext, Incident, Outgoing, Plan, Policy, Related,
};
use vigia_protocol::Topics;

/// What earlier messages of the same input stored.
#[derive(Default)]
struct Stored {
    incidents: BTreeMap<u64, Incident>,
    /// The newest incident per fault key, as `related` names it.
    by_key: BTreeMap<String, u64>,
    next: u64,
}

impl Stored {
    fn related(&self, r: &Related) -> Option<&Incident> {
        match r {
            Related::Fault(key) => self
                .by_key
                .get(&key.to_string())
                .and_then(|n| self.incidents.get(n)),
            Related::Incident(n) => self.incidents.get(n),
            Related::Nothing => None,
        }
    }
}

fn codec_round_trip(inc: &Incident) {
    let bytes = serde_json::to_vec(inc).expect("an incident must encode");
    let back: Incident = serde_json::from_slice(&bytes).expect("an encoded incident must decode");
    assert_eq!(&back, inc);
}

fuzz_target!(|data: &[u8]| {
    let topics = Topics::default();
    let metrics = Metrics::default();
    let policy = Policy::default();
    let mut stored = Stored {
        next: 1,
        ..Stored::default()
    };
    for (i, message) in data.split(|b| *b == 0xFF).take(64).enumerate() {
        let (topic, payload) = match message.iter().position(|b| *b == b'\n') {
            Some(at) => (&message[..at], &message[at + 1..]),
            None => (message, &[][..]),
        };
        let Ok(topic) = std::str::from_utf8(topic) else {
            continue;
        };
        let ev = match decode_message(&topics, &metrics, topic, payload) {
            Decoded::Event(ev) => ev,
            Decoded::Birth(b) => {
                assert!(topic.contains(&format!("/{}/", b.device)));
                continue;
            }
            Decoded::Status(s) => {
                assert!(topic.contains(&format!("/{}/", s.device)));
                continue;
            }
            Decoded::Rejected { device, .. } | Decoded::CmdAck { device, .. } => {
                assert!(topic.contains(&format!("/{device}/")));
                continue;
            }
            // A request to join names its site and request id, both from the topic.
            Decoded::Enrol(m) => {
                let (site, request, _) = &*m;
                assert!(topic.contains(&format!("/enrol/{site}/{request}/")));
                continue;
            }
            Decoded::Nothing => continue,
        };
        assert!(
            topic.contains(&format!("/{}/", ev.device)),
            "device {} on {topic}",
            ev.device
        );
        let rel = related(&ev);
        let before = stored.related(&rel).cloned();
        let now = 1_000_000 + i as u64 * 60_000;
        let plan = route(
            &ev,
            before.as_ref(),
            DeviceContext::default(),
            stored.next,
            now,
            &policy,
        );
        if let Some((decision, opened)) = plan.decision() {
            let inc = &decision.incident;
            assert_eq!(
                inc.device.as_ref(),
                Some(&ev.device),
                "a device changed another's incident"
            );
            if opened {
                assert_eq!(inc.number, stored.next);
                stored.next += 1;
            } else {
                let before = before
                    .as_ref()
                    .expect("an update has an incident to update");
                assert_eq!(inc.number, before.number);
                assert_eq!(before.device.as_ref(), Some(&ev.device));
            }
            // A device's event sends commands to that device only.
            let to_devices = decision
                .messages
                .iter()
                .filter(|m| matches!(m, Outgoing::Device { .. }))
                .count();
            assert_eq!(to_devices, device_commands(decision, &ev.device).len());
            codec_round_trip(inc);
            if let Related::Fault(key) = &rel {
                stored.by_key.insert(key.to_string(), inc.number);
            }
            stored.incidents.insert(inc.number, inc.clone());
        }
        // A reply about an incident of another device changes nothing.
        if let (Related::Incident(_), Some(inc)) = (&rel, &before) {
            if inc.device.as_ref() != Some(&ev.device) {
                assert!(matches!(plan, Plan::Nothing), "{plan:?}");
            }
        }
    }
});
