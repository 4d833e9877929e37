//! The embedded store's key encodings: big-endian numbers so byte order is number order,
//! `\0` between variable parts (never in a device id, a fault kind or a state name), and
//! index keys ending in the incident number inverted, so a forward prefix scan (sled's
//! fast direction) yields the newest first.
use std::collections::BTreeSet;

use vigia_protocol::{DeviceId, FaultKind, Millis};

use super::StoreError;
use crate::workflow::{IncidentSummary, Priority, State};

/// The meta key of the incident counter.
pub(super) const NEXT_INCIDENT: &[u8] = b"next_incident";
/// `meta` key of the next device command id.
pub(super) const NEXT_CMD: &[u8] = b"next_cmd";
/// `meta` key of the next notification id.
pub(super) const NEXT_NOTIFY: &[u8] = b"next_notify";
/// `meta` key of the record layout the store is written in (absent: layout 1).
pub(super) const LAYOUT: &[u8] = b"layout";
const COUNT_PREFIX: &str = "count/";

pub(super) fn u64_of(what: &'static str, b: &[u8]) -> Result<u64, StoreError> {
    let arr: [u8; 8] = b.try_into().map_err(|_| StoreError::Corrupt(what))?;
    Ok(u64::from_be_bytes(arr))
}

/// The number at the end of a timer key.
pub(super) fn tail_number(k: &[u8]) -> Result<u64, StoreError> {
    let start = k
        .len()
        .checked_sub(8)
        .ok_or(StoreError::Corrupt("timer key"))?;
    u64_of("timer key", &k[start..])
}

/// The number at the end of an `idx` key, stored inverted so that a forward scan (fast
/// in sled, unlike a reverse one) is newest first.
pub(super) fn idx_number(k: &[u8]) -> Result<u64, StoreError> {
    let start = k
        .len()
        .checked_sub(8)
        .ok_or(StoreError::Corrupt("index key"))?;
    Ok(!u64_of("index key", &k[start..])?)
}

/// The key of an event: `device \0 instance seq`, so one agent instance's events are one
/// prefix, in seq order.
pub(super) fn event_key(device: &DeviceId, instance: u64, seq: u64) -> Vec<u8> {
    let mut k = event_prefix(device, instance);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The key of an audit record: the incident number, then the record's `seq`, so one
/// incident's trail is one prefix, in order.
pub(super) fn audit_key(number: u64, seq: u32) -> [u8; 12] {
    let mut k = [0; 12];
    k[..8].copy_from_slice(&number.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The prefix of every event key of one agent instance.
pub(super) fn event_prefix(device: &DeviceId, instance: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(device.as_str().len() + 17);
    k.extend_from_slice(device.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(&instance.to_be_bytes());
    k
}

pub(super) fn fault_key_bytes(device: &DeviceId, kind: FaultKind, subject: &str) -> Vec<u8> {
    let mut k = Vec::new();
    k.extend_from_slice(device.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(kind.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(subject.as_bytes());
    k
}

pub(super) fn state_byte(s: State) -> u8 {
    State::ALL.iter().position(|x| *x == s).unwrap_or(0) as u8
}

pub(super) fn priority_byte(p: Priority) -> u8 {
    match p {
        Priority::P1 => 1,
        Priority::P2 => 2,
        Priority::P3 => 3,
        Priority::P4 => 4,
    }
}

pub(super) fn count_key(state: State) -> Vec<u8> {
    format!("{COUNT_PREFIX}{}", state.as_str()).into_bytes()
}

pub(super) fn timer_key(deadline: Millis, number: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(16);
    k.extend_from_slice(&deadline.to_be_bytes());
    k.extend_from_slice(&number.to_be_bytes());
    k
}

/// An `idx` key: the parts, then the number inverted (see [`idx_number`]).
pub(super) fn key(parts: &[&[u8]], number: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>() + 8);
    for p in parts {
        k.extend_from_slice(p);
    }
    k.extend_from_slice(&(!number).to_be_bytes());
    k
}

/// Every `idx` key of an incident, from its summary.
pub(super) fn index_keys(s: &IncidentSummary) -> BTreeSet<Vec<u8>> {
    let n = s.number;
    let open = s.state.is_open();
    let dev = s.device.as_ref().map(|d| {
        let mut k = d.as_str().as_bytes().to_vec();
        k.push(0);
        k
    });
    let mut out = BTreeSet::new();
    out.insert(key(&[b"S", &[state_byte(s.state)]], n));
    out.insert(key(&[b"T", &s.opened_at.to_be_bytes()], n));
    for (scope, on) in [(b"a", true), (b"o", open)] {
        if !on {
            continue;
        }
        out.insert(key(&[b"L", scope, &[s.level.number()]], n));
        if let Some(p) = s.priority {
            out.insert(key(&[b"P", scope, &[priority_byte(p)]], n));
        }
        if let Some(dev) = &dev {
            out.insert(key(&[b"D", scope, dev], n));
        }
        out.insert(key(&[b"O", scope], n));
    }
    out
}
