//! The Vigía wire: topic names, payload types and their JSON encoding.
//!
//! Shared by the agent and the collector so the two can never drift (rumqtt keeps two
//! copies of its packet code; we keep one). It also holds the conventions both programs
//! share, each in one copy: the duration grammar and civil-date arithmetic ([`time`]), the
//! broker-URL parser ([`BrokerUrl`]), the reconnect [`Backoff`], the packet limit
//! ([`MAX_PACKET`]) and the rule for relative paths in config files ([`relative_to`]). The crate is `no_std` and bounds every
//! variable-length field with `heapless` types, so a payload that decodes is a payload
//! whose size is known; encoding and decoding need `alloc` only for the JSON buffer.
#![no_std]
#![deny(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod backoff;
mod codec;
mod device;
#[cfg(feature = "std")]
pub mod disk;
pub mod enrol;
#[cfg(all(feature = "std", unix))]
pub mod journal;
#[cfg(feature = "std")]
mod paths;
mod payload;
#[cfg(all(feature = "std", unix))]
pub mod systemd;
pub mod time;
mod topic;
mod url;

pub use backoff::Backoff;
pub use codec::{
    decode, encode, peek_header, CodecError, Header, MAX_PACKET, MAX_PAYLOAD, VERSION,
};
pub use device::{bounded, DeviceId, DeviceIdError, MAX_DEVICE_ID};
#[cfg(feature = "std")]
pub use paths::relative_to;
pub use payload::*;
#[cfg(feature = "std")]
pub use time::now_ms;
pub use time::{Dur, DurError};
pub use topic::{DownKind, Topic, TopicError, Topics, UpKind, DEFAULT_PREFIX};
pub use url::BrokerUrl;
