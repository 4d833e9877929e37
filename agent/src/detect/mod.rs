//! The pure detection engine: readings and the current time in, fault transitions out.
//!
//! `no_std` and allocation-free by design (`docs/design.md`): every buffer is a `heapless`
//! container with a documented capacity, so the agent's memory does not grow with the
//! machine it runs on and the engine can be tested to the sample without a clock or a
//! filesystem. The price is fixed limits ([`engine::capacity`]); a subject past them is
//! counted as overflow, not watched, and never a panic.
//!
//! - [`threshold`]: the two state machines (levels with hysteresis and debounce; counter
//!   rise against a baseline).
//! - [`engine`]: one state machine per (fault kind, subject), turning steps into
//!   [`vigia_protocol::FaultEvent`]s with their evidence.
//! - [`config`]: [`DetectConfig`], the `[detect]` section, with the defaults of `docs/design.md`.
pub mod config;
pub mod engine;
pub mod threshold;

pub use config::{DetectConfig, InvalidConfig};
pub use engine::{
    CounterMemo, CounterOutcome, CounterRule, CounterStart, Engine, Num, Obs, Severities,
};
pub use threshold::{
    Counter, CounterClear, CounterStep, Debounce, Hysteresis, Level, Levels, Step,
};
