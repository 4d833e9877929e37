//! `vigia-collector`: turns device events into support incidents and runs the workflow of
//! the seed procedures. Pure logic (workflow, triage, SLA) lives in [`workflow`]; ingest,
//! store, broker and API are the I/O edges around it.

pub mod api;
pub mod broker;
pub mod cli;
pub mod config;
pub mod feed;
pub mod ingest;
pub mod metrics;
pub mod run;
pub mod store;
pub mod timers;
pub mod workflow;

pub use run::{start, CollectorError, Running};
