//! The one reconnect backoff, for the agent's link and the collector's ingest.
//!
//! Exponential with "equal jitter": the delay for attempt `n` is drawn from `[d/2, d]`
//! where `d = min(cap, base · 2ⁿ)`, so retries never spin and a fleet reconnecting after a
//! broker restart spreads out instead of arriving in lockstep. The jitter comes from a
//! seeded xorshift generator, so a test fixes the seed and gets the same delays.
use core::time::Duration;

/// A reconnect backoff.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    /// A backoff from `base` to `cap`; `seed` feeds the jitter (any value works; give
    /// each process its own, e.g. the time and the process id).
    pub fn new(base: Duration, cap: Duration, seed: u64) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
            rng: seed | 1,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        exp.mul_f64(0.5 + 0.5 * self.unit())
    }

    /// `d` give or take a quarter, from the same generator: a steady period that many
    /// devices started together do not keep in step (the attempt count is untouched).
    pub fn spread(&mut self, d: Duration) -> Duration {
        d.mul_f64(0.75 + 0.5 * self.unit())
    }

    /// The next number in [0, 1).
    fn unit(&mut self) -> f64 {
        // xorshift64: plenty for jitter, no dependency.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Back to the first delay (after a stable connection).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spread_period_stays_within_a_quarter_and_varies() {
        let mut b = Backoff::new(BASE, BASE * 8, 42);
        let p = Duration::from_secs(60);
        let spread: alloc::vec::Vec<_> = (0..100).map(|_| b.spread(p)).collect();
        assert!(
            spread.iter().all(|d| *d >= p * 3 / 4 && *d < p * 5 / 4),
            "{spread:?}"
        );
        assert!(spread.iter().any(|d| *d != spread[0]));
        assert_eq!(b.attempts(), 0);
    }

    const BASE: Duration = Duration::from_millis(500);
    const CAP: Duration = Duration::from_secs(30);

    #[test]
    fn backoff_grows_within_bounds_and_resets() {
        let mut b = Backoff::new(BASE, CAP, 42);
        let mut prev_cap = Duration::ZERO;
        for n in 0..40u32 {
            let d = b.next_delay();
            let exp = BASE.saturating_mul(1u32 << n.min(20)).min(CAP);
            assert!(
                d >= exp / 2 && d <= exp,
                "attempt {n}: {d:?} not in [{:?}, {exp:?}]",
                exp / 2
            );
            assert!(exp >= prev_cap);
            prev_cap = exp;
        }
        assert!(b.next_delay() >= CAP / 2);
        b.reset();
        assert!(b.next_delay() <= BASE);
    }

    #[test]
    fn backoff_jitter_spreads_a_fleet() {
        let delays: alloc::collections::BTreeSet<Duration> = (1..50u64)
            .map(|seed| {
                let mut b = Backoff::new(BASE, CAP, seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                for _ in 0..5 {
                    b.next_delay();
                }
                b.next_delay()
            })
            .collect();
        assert!(delays.len() > 40, "{} distinct delays", delays.len());
    }
}
