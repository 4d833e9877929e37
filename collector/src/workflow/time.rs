//! Time in the workflow: the protocol crate's one duration grammar and civil-date
//! arithmetic, re-exported so the engine speaks of `Dur` and `rfc3339` in one place.
pub use vigia_protocol::time::{rfc3339, Dur, DurError, Millis, DAY, HOUR, MINUTE, SECOND, WEEK};
