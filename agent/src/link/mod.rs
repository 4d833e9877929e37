//! The MQTT link: one rumqttc connection that carries the spool to the collector and
//! brings back its acks and commands. `driver` polls the connection, `session` publishes,
//! `publisher` decides what to publish (without I/O, tested without a broker), `state`
//! is what the link shares with the sampling loop and the IPC server.
//!
//! Two tasks, because rumqttc deadlocks when the task polling its event loop also
//! publishes (`docs/design.md`): the *driver* polls the event loop continuously, handles
//! incoming acks and commands, and owns reconnects (exponential backoff with jitter,
//! capped; rumqttc itself has none); the *session* task publishes through the
//! `AsyncClient`: on every ConnAck it subscribes to `down/{id}/+`, publishes the retained
//! birth and status, then replays the spool from its first unacked seq, and afterwards
//! publishes each new event as the spool wakes it. Replaying everything after every
//! reconnect sends duplicates on purpose: the collector deduplicates on `(device, seq)`,
//! and rumqttc's in-memory queue is lost on restart anyway, so only the spool is trusted.
//!
//! A reconnect of this agent is not the only time events can be lost on the way: a broker
//! that restarts without persistence forgets the collector's session, so what the agent
//! replays before the collector has resubscribed goes nowhere. So the agent also follows
//! the collector's retained status and replays when a new `online` arrives, and replays
//! events that stay unacked for a whole [`RESEND_AFTER`] (a broker that overflowed).
//!
//! `boot` is raised and persisted before a connect that follows a session that reached
//! ConnAck, so the Last Will registered with the broker always carries the same `boot` as
//! the `online` status of that session (an older `boot` never overrides a newer one).

mod driver;
mod publisher;
mod session;
mod state;

pub use driver::run;
pub use publisher::Publisher;
pub(crate) use state::STABLE_AFTER;
pub use state::{
    lock, options_for, AgentState, Inbox, LinkConfig, LinkError, LinkState, PassView, BACKOFF_BASE,
    BACKOFF_CAP, RESEND_AFTER, SYSTEM_CA_BUNDLE,
};
pub use vigia_protocol::now_ms;
