//! The two state machines every detector is built from: a level detector with hysteresis
//! and debounce, and a counter-rise detector against a baseline.
//!
//! Both are plain `Copy` structs of a few bytes that take one sample at a time and say
//! what changed; they know nothing about subjects, units or time, so the property tests
//! can drive them with millions of samples. The trade-off: debounce counts samples, not
//! seconds, so its real duration scales with the sampling interval.

/// Which level a value is at. Ordered: `Warn < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// The lower level (disk 90 % full).
    Warn,
    /// The upper level (disk 97 % full).
    Critical,
}

/// Where the levels are and which side of them is bad.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Levels {
    /// Warn level, if any.
    pub warn: Option<f64>,
    /// Critical level, if any.
    pub critical: Option<f64>,
    /// How far back past a level a value must go before that level is left (the
    /// "clear 5 points lower" of `docs/design.md`).
    pub hysteresis: f64,
    /// `true` when lower is worse (available memory), `false` when higher is worse.
    pub below: bool,
}

impl Levels {
    /// Higher is worse, with both levels.
    pub const fn above(warn: f64, critical: f64, hysteresis: f64) -> Self {
        Self {
            warn: Some(warn),
            critical: Some(critical),
            hysteresis,
            below: false,
        }
    }

    /// A single level: a boolean condition encoded as 0/1 reaches it at 1 and leaves it
    /// at 0.
    pub const fn flag() -> Self {
        Self {
            warn: None,
            critical: Some(1.0),
            hysteresis: 1.0,
            below: false,
        }
    }

    /// The value of `level`, if configured.
    pub fn at(&self, level: Level) -> Option<f64> {
        match level {
            Level::Warn => self.warn,
            Level::Critical => self.critical,
        }
    }

    /// The value at which `level` is left again.
    pub fn leave_at(&self, level: Level) -> Option<f64> {
        self.at(level).map(|l| {
            if self.below {
                l + self.hysteresis
            } else {
                l - self.hysteresis
            }
        })
    }

    fn reaches(&self, v: f64, level: f64) -> bool {
        if self.below {
            v <= level
        } else {
            v >= level
        }
    }

    fn holds(&self, v: f64, level: f64) -> bool {
        if self.below {
            v < level + self.hysteresis
        } else {
            v > level - self.hysteresis
        }
    }

    /// The highest level `v` reaches.
    pub fn reached(&self, v: f64) -> Option<Level> {
        if self.critical.is_some_and(|l| self.reaches(v, l)) {
            Some(Level::Critical)
        } else if self.warn.is_some_and(|l| self.reaches(v, l)) {
            Some(Level::Warn)
        } else {
            None
        }
    }

    /// The highest level `v` still holds once reached (within the hysteresis band).
    pub fn held(&self, v: f64) -> Option<Level> {
        if self.critical.is_some_and(|l| self.holds(v, l)) {
            Some(Level::Critical)
        } else if self.warn.is_some_and(|l| self.holds(v, l)) {
            Some(Level::Warn)
        } else {
            None
        }
    }
}

/// Debounce: how many consecutive samples a change needs before it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Debounce {
    /// Samples at or past a level before it is raised (or escalated to). 0 acts as 1.
    pub raise_after: u16,
    /// Samples back past the hysteresis band before a level is left. 0 acts as 1.
    pub clear_after: u16,
    /// Samples at the critical level before it is raised (or escalated to); 0 means the
    /// same as `raise_after`. Lets "at critical" act at once while "near it" must be
    /// sustained (overheating).
    pub critical_after: u16,
}

impl Debounce {
    /// Act on the first sample.
    pub const IMMEDIATE: Debounce = Debounce {
        raise_after: 1,
        clear_after: 1,
        critical_after: 0,
    };
}

/// What one sample changed in a [`Hysteresis`] machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing.
    Hold,
    /// The fault opened at this level.
    Raise(Level),
    /// The open fault moved to another level.
    Change(Level),
    /// The fault closed.
    Clear,
}

/// Level detector with hysteresis and debounce.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hysteresis {
    open: Option<Level>,
    up: u16,
    down: u16,
    /// The highest level held during the current `down` streak: leaving goes only as far
    /// as every sample of the streak allows, so a clear needs `clear_after` samples all
    /// past the clear level.
    down_to: Option<Level>,
}

impl Hysteresis {
    /// The level the fault is open at, if it is open.
    pub fn open(&self) -> Option<Level> {
        self.open
    }

    /// Feeds one sample. Non-finite values (a garbage reading) change nothing.
    pub fn step(&mut self, v: f64, levels: &Levels, db: Debounce) -> Step {
        if !v.is_finite() {
            return Step::Hold;
        }
        let clear_after = db.clear_after.max(1);
        let reached = levels.reached(v);
        let raise_after = match (reached, db.critical_after) {
            (Some(Level::Critical), n) if n > 0 => n,
            _ => db.raise_after.max(1),
        };
        match self.open {
            None => match reached {
                Some(level) => {
                    self.up = self.up.saturating_add(1);
                    if self.up >= raise_after {
                        self.open = Some(level);
                        self.up = 0;
                        self.down = 0;
                        Step::Raise(level)
                    } else {
                        Step::Hold
                    }
                }
                None => {
                    self.up = 0;
                    Step::Hold
                }
            },
            Some(open) => {
                let held = levels.held(v);
                if reached > Some(open) {
                    self.down = 0;
                    self.up = self.up.saturating_add(1);
                    if self.up >= raise_after {
                        self.up = 0;
                        self.open = reached;
                        if let Some(level) = reached {
                            return Step::Change(level);
                        }
                    }
                    Step::Hold
                } else if held < Some(open) {
                    self.up = 0;
                    self.down_to = if self.down == 0 {
                        held
                    } else {
                        self.down_to.max(held)
                    };
                    self.down = self.down.saturating_add(1);
                    if self.down >= clear_after {
                        self.down = 0;
                        let to = self.down_to;
                        self.open = to;
                        match to {
                            Some(level) => Step::Change(level),
                            None => Step::Clear,
                        }
                    } else {
                        Step::Hold
                    }
                } else {
                    self.up = 0;
                    self.down = 0;
                    Step::Hold
                }
            }
        }
    }
}

/// What one sample changed in a [`Counter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterStep {
    /// Nothing.
    Hold,
    /// The counter rose from its baseline: the fault opened.
    Raise,
    /// The counter rose again while the fault was open.
    Rise,
    /// No rise for the configured samples: the fault closed and the baseline moved up to
    /// the current value.
    Clear,
    /// The counter went below its baseline (reboot, device replaced): the baseline moved
    /// down to the current value; an open fault closed.
    Reset {
        /// Whether a fault was open and is now closed.
        was_open: bool,
    },
}

/// How an open counter fault closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterClear {
    /// After this many samples without a further rise (0 acts as 1); closing accepts the
    /// value as the new baseline. For counts of events that happened and stopped (I/O
    /// errors, ECC, AER, reallocations).
    Quiet(u16),
    /// Only once the counter is back at its baseline. For counts of things wrong now
    /// (sectors pending reallocation, filesystem errors not yet repaired by fsck): a
    /// steady non-zero count is still the fault.
    AtBaseline,
}

/// Counter-rise detector: any rise of at least `min_increase` over the baseline opens a
/// fault, which closes as [`CounterClear`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    baseline: u64,
    last: u64,
    quiet: u16,
    open: bool,
}

impl Counter {
    /// Starts from a baseline (persisted, or the first value read).
    pub fn new(baseline: u64) -> Self {
        Self {
            baseline,
            last: baseline,
            quiet: 0,
            open: false,
        }
    }

    /// Resumes a state persisted before a restart: `last` is the value last read and
    /// `open` whether its fault was open (and already reported).
    pub fn resume(baseline: u64, last: u64, open: bool) -> Self {
        Self {
            baseline,
            last: last.max(baseline),
            quiet: 0,
            open,
        }
    }

    /// The value rises are measured from.
    pub fn baseline(&self) -> u64 {
        self.baseline
    }

    /// The last value read.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Whether the fault is open.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Feeds one sample; the fault closes after `quiet_after` samples without a rise.
    pub fn step(&mut self, value: u64, min_increase: u64, quiet_after: u16) -> CounterStep {
        self.step_with(value, min_increase, CounterClear::Quiet(quiet_after))
    }

    /// Feeds one sample.
    pub fn step_with(&mut self, value: u64, min_increase: u64, clear: CounterClear) -> CounterStep {
        let min_increase = min_increase.max(1);
        if value < self.baseline {
            let was_open = self.open;
            *self = Self::new(value);
            return CounterStep::Reset { was_open };
        }
        if !self.open {
            self.last = value;
            if value - self.baseline >= min_increase {
                self.open = true;
                self.quiet = 0;
                return CounterStep::Raise;
            }
            return CounterStep::Hold;
        }
        if value > self.last {
            self.last = value;
            self.quiet = 0;
            return CounterStep::Rise;
        }
        match clear {
            CounterClear::Quiet(quiet_after) => {
                // `value < last` while still above the baseline: steady at the lower value.
                self.last = value;
                self.quiet = self.quiet.saturating_add(1);
                if self.quiet >= quiet_after.max(1) {
                    *self = Self::new(value);
                    return CounterStep::Clear;
                }
                CounterStep::Hold
            }
            CounterClear::AtBaseline => {
                if value == self.baseline {
                    *self = Self::new(value);
                    return CounterStep::Clear;
                }
                self.last = value;
                CounterStep::Hold
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DISK: Levels = Levels::above(90.0, 97.0, 5.0);

    fn run(h: &mut Hysteresis, db: Debounce, values: &[f64]) -> std::vec::Vec<Step> {
        values.iter().map(|&v| h.step(v, &DISK, db)).collect()
    }

    #[test]
    fn one_spike_opens_nothing_with_debounce() {
        let mut h = Hysteresis::default();
        let db = Debounce {
            raise_after: 3,
            clear_after: 3,
            critical_after: 0,
        };
        let steps = run(&mut h, db, &[95.0, 50.0, 95.0, 95.0, 50.0]);
        assert!(steps.iter().all(|s| *s == Step::Hold), "{steps:?}");
        let steps = run(&mut h, db, &[91.0, 92.0, 93.0]);
        assert_eq!(steps[2], Step::Raise(Level::Warn));
    }

    #[test]
    fn hysteresis_clears_five_points_lower() {
        let mut h = Hysteresis::default();
        let db = Debounce::IMMEDIATE;
        assert_eq!(h.step(90.0, &DISK, db), Step::Raise(Level::Warn));
        assert_eq!(h.step(89.0, &DISK, db), Step::Hold);
        assert_eq!(h.step(85.1, &DISK, db), Step::Hold);
        assert_eq!(h.step(85.0, &DISK, db), Step::Clear);
        assert_eq!(h.open(), None);
    }

    #[test]
    fn escalates_and_deescalates_through_the_band() {
        let mut h = Hysteresis::default();
        let db = Debounce::IMMEDIATE;
        assert_eq!(h.step(91.0, &DISK, db), Step::Raise(Level::Warn));
        assert_eq!(h.step(98.0, &DISK, db), Step::Change(Level::Critical));
        assert_eq!(
            h.step(93.0, &DISK, db),
            Step::Hold,
            "inside critical's band"
        );
        assert_eq!(h.step(92.0, &DISK, db), Step::Change(Level::Warn));
        assert_eq!(h.step(60.0, &DISK, db), Step::Clear);
    }

    #[test]
    fn below_levels_for_available_memory() {
        let levels = Levels {
            warn: None,
            critical: Some(5.0),
            hysteresis: 2.0,
            below: true,
        };
        let mut h = Hysteresis::default();
        let db = Debounce::IMMEDIATE;
        assert_eq!(h.step(6.0, &levels, db), Step::Hold);
        assert_eq!(h.step(4.0, &levels, db), Step::Raise(Level::Critical));
        assert_eq!(h.step(6.5, &levels, db), Step::Hold);
        assert_eq!(h.step(7.0, &levels, db), Step::Clear);
    }

    #[test]
    fn critical_can_act_before_warn_is_sustained() {
        let mut h = Hysteresis::default();
        let db = Debounce {
            raise_after: 3,
            clear_after: 1,
            critical_after: 1,
        };
        assert_eq!(h.step(95.0, &DISK, db), Step::Hold);
        assert_eq!(h.step(98.0, &DISK, db), Step::Raise(Level::Critical));
        let mut h = Hysteresis::default();
        assert_eq!(h.step(91.0, &DISK, db), Step::Hold);
        assert_eq!(h.step(91.0, &DISK, db), Step::Hold);
        assert_eq!(h.step(91.0, &DISK, db), Step::Raise(Level::Warn));
        assert_eq!(h.step(99.0, &DISK, db), Step::Change(Level::Critical));
    }

    #[test]
    fn garbage_values_change_nothing() {
        let mut h = Hysteresis::default();
        let db = Debounce {
            raise_after: 2,
            clear_after: 1,
            critical_after: 0,
        };
        assert_eq!(h.step(95.0, &DISK, db), Step::Hold);
        assert_eq!(h.step(f64::NAN, &DISK, db), Step::Hold);
        assert_eq!(h.step(95.0, &DISK, db), Step::Raise(Level::Warn));
        assert_eq!(h.step(f64::INFINITY, &DISK, db), Step::Hold);
        assert_eq!(h.open(), Some(Level::Warn));
    }

    #[test]
    fn counter_rises_updates_clears_and_resets() {
        let mut c = Counter::new(3);
        assert_eq!(c.step(3, 1, 2), CounterStep::Hold);
        assert_eq!(c.step(5, 1, 2), CounterStep::Raise);
        assert_eq!(c.step(6, 1, 2), CounterStep::Rise);
        assert_eq!(c.step(6, 1, 2), CounterStep::Hold);
        assert_eq!(c.step(6, 1, 2), CounterStep::Clear);
        assert_eq!(c.baseline(), 6);
        assert_eq!(c.step(6, 1, 2), CounterStep::Hold);
        assert_eq!(c.step(7, 1, 2), CounterStep::Raise);
        assert_eq!(c.step(0, 1, 2), CounterStep::Reset { was_open: true });
        assert_eq!(c.baseline(), 0);
        assert!(!c.is_open());
    }

    #[test]
    fn counter_at_baseline_stays_open_while_non_zero() {
        let mut c = Counter::new(0);
        let at = CounterClear::AtBaseline;
        assert_eq!(c.step_with(2, 1, at), CounterStep::Raise);
        for _ in 0..100 {
            assert_eq!(
                c.step_with(2, 1, at),
                CounterStep::Hold,
                "steady is still a fault"
            );
        }
        assert_eq!(c.step_with(5, 1, at), CounterStep::Rise);
        assert_eq!(c.step_with(1, 1, at), CounterStep::Hold, "fewer, not none");
        assert_eq!(c.step_with(3, 1, at), CounterStep::Rise);
        assert_eq!(c.step_with(0, 1, at), CounterStep::Clear);
        assert!(!c.is_open());
        assert_eq!(c.baseline(), 0);
    }

    #[test]
    fn counter_resumed_open_clears_without_raising_again() {
        let mut c = Counter::resume(0, 3, true);
        assert_eq!(c.step(3, 1, 2), CounterStep::Hold);
        assert_eq!(c.step(3, 1, 2), CounterStep::Clear);
        assert_eq!(c.baseline(), 3);
        let mut c = Counter::resume(0, 3, true);
        assert_eq!(
            c.step(4, 1, 2),
            CounterStep::Rise,
            "new errors while stopped"
        );
        let mut c = Counter::resume(3, 3, false);
        assert_eq!(c.step(3, 1, 2), CounterStep::Hold);
    }

    #[test]
    fn counter_min_increase() {
        let mut c = Counter::new(10);
        assert_eq!(c.step(14, 5, 1), CounterStep::Hold);
        assert_eq!(c.step(15, 5, 1), CounterStep::Raise);
    }

    fn debounce() -> impl Strategy<Value = Debounce> {
        (1u16..6, 1u16..6).prop_map(|(raise_after, clear_after)| Debounce {
            raise_after,
            clear_after,
            critical_after: 0,
        })
    }

    proptest! {
        /// A flapping input produces at most one raise per hysteresis cycle: between two
        /// raises the value must have gone back to the clear level `clear_after` times in a row.
        #[test]
        fn flapping_raises_at_most_once_per_cycle(
            values in proptest::collection::vec(prop_oneof![80.0f64..100.0, 84.0f64..92.0], 1..400),
            db in debounce(),
        ) {
            let mut h = Hysteresis::default();
            let clear_level = 85.0;
            let mut below_run = 0u16;
            let mut cycle_done = true;
            for v in values {
                if v <= clear_level { below_run += 1 } else { below_run = 0 }
                if below_run >= db.clear_after { cycle_done = true }
                match h.step(v, &DISK, db) {
                    Step::Raise(_) => {
                        prop_assert!(cycle_done, "raised twice in one hysteresis cycle");
                        cycle_done = false;
                    }
                    Step::Clear => prop_assert!(below_run >= db.clear_after),
                    _ => {}
                }
            }
        }

        /// A steady input above the threshold raises exactly once, after `raise_after` samples.
        #[test]
        fn steady_input_raises_exactly_once(
            v in 90.0f64..96.9,
            n in 1usize..300,
            db in debounce(),
        ) {
            let mut h = Hysteresis::default();
            let mut raises = 0;
            for i in 0..n {
                if let Step::Raise(level) = h.step(v, &DISK, db) {
                    prop_assert_eq!(level, Level::Warn);
                    prop_assert_eq!(i + 1, usize::from(db.raise_after));
                    raises += 1;
                }
            }
            let expected = usize::from(n >= usize::from(db.raise_after));
            prop_assert_eq!(raises, expected);
        }

        /// Clear happens only after `clear_after` consecutive samples at or below the clear level.
        #[test]
        fn clears_only_after_configured_samples_below(
            values in proptest::collection::vec(0.0f64..100.0, 1..300),
            db in debounce(),
        ) {
            let mut h = Hysteresis::default();
            let mut below_run = 0u16;
            for v in values {
                if v <= 85.0 { below_run = below_run.saturating_add(1) } else { below_run = 0 }
                if h.step(v, &DISK, db) == Step::Clear {
                    prop_assert!(below_run >= db.clear_after, "cleared after {below_run} samples below");
                }
            }
        }

        /// A counter never raises without a rise of `min_increase` over its baseline.
        #[test]
        fn counter_raises_only_on_rise(
            start in 0u64..1000,
            deltas in proptest::collection::vec(0u64..3, 1..100),
        ) {
            let mut c = Counter::new(start);
            let mut value = start;
            for d in deltas {
                let before = c.baseline();
                value += d;
                if c.step(value, 1, 5) == CounterStep::Raise {
                    prop_assert!(value > before);
                }
            }
        }
    }
}
