//! `vigia-collector`: turns device events into support incidents and runs the workflow of
//! the support procedures.
//!
//! The modules, from the wire inwards (`docs/design.md` draws them):
//! - [`ingest`]: the MQTT session with manual acks; decodes, batches, stores, acks.
//! - [`store`]: the [`Store`](store::Store) interface and its embedded backend (sled).
//! - [`workflow`]: the pure engine: routing, transitions, triage, SLA, providers, export.
//! - [`timers`]: the task that runs the workflow's deadlines.
//! - [`outbox`]: what leaves after a change is stored: device commands, the live feed.
//! - [`http`]: the JSON API, metrics, the live feed (SSE) and the console page.
//! - [`cli`]: the command line, a client of the HTTP API; [`enroll`] enrols a fleet's
//!   broker accounts from a devices file.
//! - [`run`]: starts and stops all of it; [`broker`] is the embedded MQTT broker,
//!   [`clock`] the one reader of the wall clock, [`config`] the configuration file.
//!
//! No module imports a module that imports it back: the dependencies point from the
//! edges (ingest, http, cli, timers) through the store and the outbox to the workflow.

pub mod auth;
pub mod broker;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dynsec;
pub mod enroll;
pub mod enrolment;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod notify;
pub mod outbox;
pub mod providers;
pub mod retention;
pub mod run;
pub mod store;
pub mod timers;
pub mod warranty;
pub mod workflow;

pub use run::{start, CollectorError, Running};

/// The default log filter of a collector process (`RUST_LOG` overrides it). The embedded
/// broker (rumqttd 0.20) is kept to warnings, and its per-connection errors are off: it
/// logs every client's disconnect as an ERROR ("no-connection id N is already gone",
/// "router-drop", a readiness probe's "connection closed by peer"), which would put false
/// alarms on the first screen of every run. Connection failures that matter are logged by
/// the collector's and the agent's own clients, and a broker that cannot listen is an
/// error of [`broker::start`].
pub const LOG_FILTER: &str =
    "info,rumqttd=warn,rumqttd::router::routing=off,rumqttd::server::broker=off";
