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
//! - [`cli`]: the command line, a client of the HTTP API.
//! - [`run`]: starts and stops all of it; [`broker`] is the embedded MQTT broker,
//!   [`clock`] the one reader of the wall clock, [`config`] the configuration file.
//!
//! No module imports a module that imports it back: the dependencies point from the
//! edges (ingest, http, cli, timers) through the store and the outbox to the workflow.

pub mod broker;
pub mod cli;
pub mod clock;
pub mod config;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod outbox;
pub mod run;
pub mod store;
pub mod timers;
pub mod workflow;

pub use run::{start, CollectorError, Running};
