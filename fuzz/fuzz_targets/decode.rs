//! Feeds arbitrary bytes to every decoder the collector and agent run on network input,
//! and checks that whatever decodes re-encodes to something that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigia_protocol::{decode, encode, peek_header, Ack, Birth, Cmd, Event, Status, Topics};

fn round_trip<T>(data: &[u8])
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + core::fmt::Debug,
{
    if let Ok(value) = decode::<T>(data) {
        let again = encode(&value).expect("a decoded value must re-encode");
        let back = decode::<T>(&again).expect("a re-encoded value must decode");
        assert_eq!(back, value);
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = peek_header(data);
    round_trip::<Event>(data);
    round_trip::<Status>(data);
    round_trip::<Birth>(data);
    round_trip::<Ack>(data);
    round_trip::<Cmd>(data);
    if let Ok(topic) = core::str::from_utf8(data) {
        let _ = Topics::default().parse(topic);
    }
});
