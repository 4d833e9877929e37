//! `vigia-agent`: finds hardware faults on this device and delivers them to the collector.
//!
//! The detection engine ([`detect`]) is pure and `no_std`: it takes readings and the time
//! and returns fault transitions. Everything that touches the machine or the network
//! (probes, spool, MQTT link, local IPC) needs the `std` feature.
#![cfg_attr(not(feature = "std"), no_std)]

pub mod detect;

#[cfg(feature = "std")]
pub mod cli;
#[cfg(feature = "std")]
pub mod config;
#[cfg(feature = "std")]
pub mod enrol;
#[cfg(feature = "std")]
pub mod i18n;
#[cfg(feature = "std")]
pub mod inventory;
#[cfg(feature = "std")]
pub mod ipc;
#[cfg(feature = "std")]
pub mod link;
#[cfg(feature = "std")]
pub mod probe;
#[cfg(feature = "std")]
pub mod run;
#[cfg(feature = "std")]
pub mod service;
#[cfg(feature = "std")]
pub mod spool;
#[cfg(feature = "std")]
pub use run::{run, AgentError};
