//! The Vigía wire: topic names, payload types and their JSON encoding.
//!
//! Shared by the agent and the collector so the two can never drift (rumqtt keeps two
//! copies of its packet code; we keep one). The crate is `no_std` and bounds every
//! variable-length field with `heapless` types, so a payload that decodes is a payload
//! whose size is known; encoding and decoding need `alloc` only for the JSON buffer.
#![no_std]
#![deny(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod codec;
mod device;
mod payload;
mod topic;

pub use codec::{decode, encode, peek_header, CodecError, Header, MAX_PAYLOAD};
pub use device::{bounded, DeviceId, DeviceIdError, MAX_DEVICE_ID};
pub use payload::*;
pub use topic::{DownKind, Topic, TopicError, Topics, UpKind, DEFAULT_PREFIX};

/// The major version every payload carries as `"v"`. A different major is rejected.
pub const VERSION: u8 = 1;
