//! The collector's clock: the one place that reads the wall clock.
//!
//! The workflow, the store and the timers are given the time; the I/O edges ask a
//! [`Clock`] for it, so tests drive SLA time by hand with a [`ManualClock`] instead of
//! sleeping.
use std::sync::atomic::{AtomicU64, Ordering};

pub use vigia_protocol::now_ms;
use vigia_protocol::Millis;

/// The collector's idea of "now", in ms since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Millis;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        now_ms()
    }
}

/// A clock that moves only when told to (tests, simulations).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `now`.
    pub fn new(now: Millis) -> Self {
        Self(AtomicU64::new(now))
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock.
    pub fn set(&self, now: Millis) {
        self.0.store(now, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}
