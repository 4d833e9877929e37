//! The detection engine: one [`Hysteresis`] or [`Counter`] per (fault kind, subject),
//! kept in a fixed-capacity table, turning readings into [`FaultEvent`]s with evidence.
//!
//! Everything here is `no_std` and allocation-free: subjects, units and sources are
//! copied into `heapless` strings (cut at their capacity rather than refused), and the
//! table holds at most [`SLOTS`] subjects with a per-kind cap ([`capacity`]). A subject
//! past its kind's cap is not watched; the overflow is counted ([`Engine::overflowed`])
//! so the caller can report it, never a panic. The trade-off is that a machine with more
//! than, say, 32 mounts has its extra mounts unwatched, and says so.
use core::fmt::Write as _;

use heapless::index_map::FnvIndexMap;
use heapless::String;
use vigia_protocol::{
    bounded, Evidence, FaultAction, FaultEvent, FaultKind, OpenFault, Reading, Severity,
};

use super::threshold::{
    Counter, CounterClear, CounterStep, Debounce, Hysteresis, Level, Levels, Step,
};

/// Total subjects the engine watches at once (a power of two: the index map needs it).
pub const SLOTS: usize = 512;

/// Longest subject kept (the wire's limit).
pub const MAX_SUBJECT: usize = 96;

/// After this many passes without a reading, a subject is forgotten (and its open fault
/// cleared): an unmounted filesystem or an unplugged disk is no longer a problem here.
pub const FORGET_AFTER_PASSES: u8 = 3;

/// How many subjects of each kind are watched at most: 32 mounts (space, inodes,
/// read-only each), 32 I/O error sources (block devices and kernel-log devices), 16 RAID
/// arrays, 96 SMART subjects (16 disks × up to 6 aspects), 4 memory subjects, 17 ECC
/// subjects (8 controllers × 2 + poisoned pages), 96 AER subjects (32 devices × 3), 64
/// temperature subjects (sensors and their alarms), 32 fans, 8 battery subjects, 32
/// interfaces for errors and 32 for carrier.
pub const fn capacity(kind: FaultKind) -> u16 {
    match kind {
        FaultKind::DiskSpace | FaultKind::DiskInodes | FaultKind::FsReadOnly => 32,
        FaultKind::DiskIoErrors => 32,
        FaultKind::RaidDegraded => 16,
        FaultKind::DiskHealth => 96,
        FaultKind::MemoryPressure => 4,
        FaultKind::MemoryEcc => 17,
        FaultKind::PcieAer => 96,
        FaultKind::Overheating => 64,
        FaultKind::FanFailure => 32,
        FaultKind::BatteryWear => 8,
        FaultKind::NicErrors | FaultKind::NicLinkLost => 32,
    }
}

fn kind_index(kind: FaultKind) -> usize {
    FaultKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

/// What the caller read, with what the event needs to explain it.
#[derive(Debug, Clone, Copy)]
pub struct Obs<'a> {
    /// Which fault this reading can raise.
    pub kind: FaultKind,
    /// What it concerns (mount point, disk serial, sensor label, interface).
    pub subject: &'a str,
    /// Where it was read (a path, a SMART attribute).
    pub source: &'a str,
    /// Unit of the value ("%", "°C", "count").
    pub unit: &'a str,
    /// A few words naming the quantity, for the message ("space used", "temp1").
    pub label: &'a str,
}

/// Severities for the two levels of a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Severities {
    /// At the warn level.
    pub warn: Severity,
    /// At the critical level.
    pub critical: Severity,
}

impl Severities {
    /// Warn → Warning, critical → Critical.
    pub const DEFAULT: Severities = Severities {
        warn: Severity::Warning,
        critical: Severity::Critical,
    };

    /// The same severity at both levels.
    pub const fn only(s: Severity) -> Self {
        Severities {
            warn: s,
            critical: s,
        }
    }

    fn of(&self, level: Level) -> Severity {
        match level {
            Level::Warn => self.warn,
            Level::Critical => self.critical,
        }
    }
}

/// A counter rule: how much of a rise opens the fault and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterRule {
    /// Severity of the fault the rise opens.
    pub severity: Severity,
    /// Smallest rise over the baseline that counts (1 = any increase).
    pub min_increase: u64,
    /// When the fault closes.
    pub clear: CounterClear,
    /// How a count from a zero baseline reads in the message ("since boot": "3 I/O
    /// errors since boot"); empty gives "rose from 0 to 3".
    pub since: &'static str,
}

/// A counter's state as the caller persists it between agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterMemo {
    /// The value rises are measured from.
    pub baseline: u64,
    /// The value last read.
    pub last: u64,
    /// Whether its fault was open, so already reported.
    pub open: bool,
}

impl CounterMemo {
    fn of(c: &Counter) -> Self {
        Self {
            baseline: c.baseline(),
            last: c.last(),
            open: c.is_open(),
        }
    }
}

/// Where a counter starts the first time its subject is seen since the agent started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterStart {
    /// Nothing known: the first value read is the baseline and is not reported.
    FirstSight,
    /// From zero: everything the counter holds is new (a kernel counter in a boot the
    /// agent has not seen yet, a count that is a fault whenever it is not zero).
    Zero,
    /// From the state persisted before the agent restarted: an open fault stays open
    /// without being reported again; only a rise past `last` is new.
    Saved(CounterMemo),
}

/// The result of feeding a counter.
#[derive(Debug, Clone, PartialEq)]
pub struct CounterOutcome {
    /// A fault transition, if any.
    pub event: Option<FaultEvent>,
    /// The counter's new state, which the caller must persist, if it changed.
    pub persist: Option<CounterMemo>,
}

/// A number as evidence reads it: one decimal, none when it is whole ("97", "41.9").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Num(pub f64);

impl core::fmt::Display for Num {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut s: String<40> = String::new();
        if write!(s, "{:.1}", self.0).is_err() {
            return write!(f, "{:e}", self.0);
        }
        let t = s.strip_suffix(".0").unwrap_or(&s);
        f.write_str(if t == "-0" { "0" } else { t })
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    Level(Hysteresis, Severities),
    Count(Counter, Severity),
}

#[derive(Debug, Clone)]
struct Slot {
    state: State,
    /// Shown in snapshots while closed (levels and counters are; yes/no flags only
    /// while open, or a report would list every mount's "not read-only").
    show: bool,
    severity: Option<Severity>,
    seen: u32,
    missing: u8,
    value: f64,
    unit: String<12>,
}

type Key = (FaultKind, String<MAX_SUBJECT>);

/// The engine: all detector state of one agent.
pub struct Engine {
    slots: FnvIndexMap<Key, Slot, SLOTS>,
    counts: [u16; FaultKind::ALL.len()],
    overflow: [u32; FaultKind::ALL.len()],
    pass: u32,
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for Engine {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Engine")
            .field("subjects", &self.slots.len())
            .field("pass", &self.pass)
            .finish()
    }
}

impl Engine {
    /// An engine watching nothing yet.
    pub fn new() -> Self {
        Self {
            slots: FnvIndexMap::new(),
            counts: [0; FaultKind::ALL.len()],
            overflow: [0; FaultKind::ALL.len()],
            pass: 0,
        }
    }

    /// Starts a sampling pass; see [`Engine::end_pass`].
    pub fn begin_pass(&mut self) {
        self.pass = self.pass.wrapping_add(1);
    }

    /// Subjects of `kind` that could not be watched because its table was full, counted
    /// once per reading.
    pub fn overflowed(&self, kind: FaultKind) -> u32 {
        self.overflow[kind_index(kind)]
    }

    /// Subjects of `kind` watched now.
    pub fn watched(&self, kind: FaultKind) -> u16 {
        self.counts[kind_index(kind)]
    }

    fn slot(&mut self, kind: FaultKind, subject: &str, init: State) -> Option<&mut Slot> {
        let key: Key = (kind, bounded(subject));
        let idx = kind_index(kind);
        if !self.slots.contains_key(&key) {
            if self.counts[idx] >= capacity(kind) || self.slots.len() >= SLOTS {
                self.overflow[idx] = self.overflow[idx].saturating_add(1);
                return None;
            }
            let slot = Slot {
                show: true,
                state: init,
                severity: None,
                seen: self.pass,
                missing: 0,
                value: f64::NAN,
                unit: String::new(),
            };
            if self.slots.insert(key.clone(), slot).is_err() {
                self.overflow[idx] = self.overflow[idx].saturating_add(1);
                return None;
            }
            self.counts[idx] += 1;
        }
        let pass = self.pass;
        let slot = self.slots.get_mut(&key)?;
        slot.seen = pass;
        slot.missing = 0;
        Some(slot)
    }

    /// Feeds a reading to the level detector of `obs.kind`/`obs.subject`.
    pub fn level(
        &mut self,
        obs: Obs<'_>,
        value: f64,
        levels: &Levels,
        severities: Severities,
        db: Debounce,
    ) -> Option<FaultEvent> {
        let slot = self.slot(
            obs.kind,
            obs.subject,
            State::Level(Hysteresis::default(), severities),
        )?;
        if value.is_finite() {
            slot.value = value;
            slot.unit = bounded(obs.unit);
        }
        let State::Level(h, sev) = &mut slot.state else {
            return None;
        };
        *sev = severities;
        let step = h.step(value, levels, db);
        let at = if levels.below { "at or below " } else { "at " };
        let (action, severity, threshold, msg) = match step {
            Step::Hold => return None,
            Step::Raise(level) | Step::Change(level) => {
                let severity = severities.of(level);
                let threshold = levels.at(level).unwrap_or(f64::NAN);
                let mut msg: String<160> = String::new();
                let _ = write!(
                    msg,
                    "{}: {} {} {}, {} {}{} {}",
                    obs.subject,
                    obs.label,
                    Num(value),
                    obs.unit,
                    severity,
                    at,
                    Num(threshold),
                    obs.unit
                );
                let action = if matches!(step, Step::Raise(_)) {
                    FaultAction::Raised
                } else {
                    FaultAction::Updated
                };
                (action, severity, threshold, msg)
            }
            Step::Clear => {
                let severity = slot.severity.unwrap_or(severities.warn);
                let back = if levels.below {
                    "at or above"
                } else {
                    "at or below"
                };
                let threshold = levels
                    .leave_at(Level::Warn)
                    .or(levels.leave_at(Level::Critical))
                    .unwrap_or(f64::NAN);
                let mut msg: String<160> = String::new();
                let _ = write!(
                    msg,
                    "{}: {} back to {} {}, clears {} {} {}",
                    obs.subject,
                    obs.label,
                    Num(value),
                    obs.unit,
                    back,
                    Num(threshold),
                    obs.unit
                );
                (FaultAction::Cleared, severity, threshold, msg)
            }
        };
        slot.severity = match action {
            FaultAction::Cleared => None,
            _ => Some(severity),
        };
        Some(event(action, &obs, severity, value, threshold, msg))
    }

    /// Feeds a yes/no condition (read-only, degraded, fan stopped) with debounce. `value`
    /// and `threshold` are the evidence shown (e.g. members up and members expected).
    #[allow(clippy::too_many_arguments)]
    pub fn flag(
        &mut self,
        obs: Obs<'_>,
        active: bool,
        severity: Severity,
        value: f64,
        threshold: f64,
        db: Debounce,
    ) -> Option<FaultEvent> {
        let slot = self.slot(
            obs.kind,
            obs.subject,
            State::Level(Hysteresis::default(), Severities::only(severity)),
        )?;
        slot.value = value;
        slot.unit = bounded(obs.unit);
        slot.show = false;
        let State::Level(h, _) = &mut slot.state else {
            return None;
        };
        let step = h.step(if active { 1.0 } else { 0.0 }, &Levels::flag(), db);
        let mut msg: String<160> = String::new();
        let action = match step {
            Step::Raise(_) => {
                let _ = write!(msg, "{}: {}", obs.subject, obs.label);
                FaultAction::Raised
            }
            Step::Clear => {
                let _ = write!(msg, "{}: no longer {}", obs.subject, obs.label);
                FaultAction::Cleared
            }
            Step::Hold | Step::Change(_) => return None,
        };
        slot.severity = (action != FaultAction::Cleared).then_some(severity);
        Some(event(action, &obs, severity, value, threshold, msg))
    }

    /// Feeds a counter. `start` says where it starts when this subject is first seen
    /// since the agent started (later calls ignore it).
    pub fn counter(
        &mut self,
        obs: Obs<'_>,
        value: u64,
        start: CounterStart,
        rule: CounterRule,
    ) -> CounterOutcome {
        let initial = match start {
            CounterStart::FirstSight => Counter::new(value),
            CounterStart::Zero => Counter::new(0),
            CounterStart::Saved(m) => Counter::resume(m.baseline, m.last, m.open),
        };
        let none = CounterOutcome {
            event: None,
            persist: None,
        };
        let Some(slot) = self.slot(obs.kind, obs.subject, State::Count(initial, rule.severity))
        else {
            return none;
        };
        let fresh = slot.value.is_nan();
        if fresh && initial.is_open() {
            // Reported before the restart: open, and not reported again.
            slot.severity = Some(rule.severity);
        }
        slot.value = value as f64;
        slot.unit = bounded(obs.unit);
        let State::Count(c, sev) = &mut slot.state else {
            return none;
        };
        *sev = rule.severity;
        let was = CounterMemo::of(c);
        let before = c.baseline();
        let last = c.last();
        let step = c.step_with(value, rule.min_increase, rule.clear);
        let now = CounterMemo::of(c);
        let saved = matches!(start, CounterStart::Saved(_));
        let persist = (now != was || (fresh && !saved)).then_some(now);
        let mut msg: String<160> = String::new();
        let (action, threshold) = match step {
            CounterStep::Hold => {
                return CounterOutcome {
                    event: None,
                    persist,
                }
            }
            CounterStep::Raise => {
                let _ = if before == 0 && !rule.since.is_empty() {
                    write!(
                        msg,
                        "{}: {} {} {}",
                        obs.subject, value, obs.label, rule.since
                    )
                } else {
                    write!(
                        msg,
                        "{}: {} rose from {} to {}",
                        obs.subject, obs.label, before, value
                    )
                };
                (FaultAction::Raised, before)
            }
            CounterStep::Rise => {
                let _ = write!(
                    msg,
                    "{}: {} rose again from {} to {} (baseline {})",
                    obs.subject, obs.label, last, value, before
                );
                (FaultAction::Updated, before)
            }
            CounterStep::Clear => {
                let _ = match rule.clear {
                    CounterClear::Quiet(n) => write!(
                        msg,
                        "{}: {} steady at {} for {} samples",
                        obs.subject, obs.label, value, n
                    ),
                    CounterClear::AtBaseline => {
                        write!(msg, "{}: {} back to {}", obs.subject, obs.label, value)
                    }
                };
                (FaultAction::Cleared, now.baseline)
            }
            CounterStep::Reset { was_open } => {
                if !was_open {
                    return CounterOutcome {
                        event: None,
                        persist,
                    };
                }
                let _ = write!(
                    msg,
                    "{}: {} reset from {} to {} (device reset or replaced)",
                    obs.subject, obs.label, last, value
                );
                (FaultAction::Cleared, before)
            }
        };
        slot.severity = (action != FaultAction::Cleared).then_some(rule.severity);
        CounterOutcome {
            event: Some(event(
                action,
                &obs,
                rule.severity,
                value as f64,
                threshold as f64,
                msg,
            )),
            persist,
        }
    }

    /// Ends a pass over `kind` whose source was read successfully: subjects of that kind
    /// not seen for [`FORGET_AFTER_PASSES`] passes are forgotten, and their open faults
    /// cleared through `emit`. Do not call it when the source could not be read: a probe
    /// that failed once must not clear everything it watched.
    pub fn end_pass(&mut self, kind: FaultKind, emit: &mut impl FnMut(FaultEvent)) {
        let pass = self.pass;
        let mut gone: heapless::Vec<Key, 16> = heapless::Vec::new();
        for (key, slot) in self.slots.iter_mut() {
            if key.0 != kind || slot.seen == pass {
                continue;
            }
            slot.seen = pass;
            slot.missing = slot.missing.saturating_add(1);
            if slot.missing >= FORGET_AFTER_PASSES && gone.push(key.clone()).is_err() {
                break; // the rest go on a later pass
            }
        }
        for key in gone {
            let Some(slot) = self.slots.swap_remove(&key) else {
                continue;
            };
            let idx = kind_index(kind);
            self.counts[idx] = self.counts[idx].saturating_sub(1);
            if let Some(severity) = slot.severity {
                let mut msg: String<160> = String::new();
                let _ = write!(msg, "{}: no longer present", key.1);
                let obs = Obs {
                    kind,
                    subject: &key.1,
                    source: "",
                    unit: &slot.unit,
                    label: "",
                };
                emit(event(
                    FaultAction::Cleared,
                    &obs,
                    severity,
                    slot.value,
                    f64::NAN,
                    msg,
                ));
            }
        }
    }

    /// The faults open now, most severe first (at most 16, the wire's limit).
    pub fn open_faults(&self) -> heapless::Vec<OpenFault, 16> {
        let mut all: heapless::Vec<(Severity, FaultKind, &str), 64> = heapless::Vec::new();
        for (key, slot) in self.slots.iter() {
            if let Some(s) = slot.severity {
                if all.push((s, key.0, key.1.as_str())).is_err() {
                    break;
                }
            }
        }
        all.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(b.2)));
        let mut out = heapless::Vec::new();
        for (severity, kind, subject) in all {
            let f = OpenFault {
                kind,
                subject: bounded(subject),
                severity,
            };
            if out.push(f).is_err() {
                break;
            }
        }
        out
    }

    /// Whether `kind`/`subject` is watched already (a counter's stored baseline is only
    /// needed the first time).
    pub fn knows(&self, kind: FaultKind, subject: &str) -> bool {
        self.slots.contains_key(&(kind, bounded(subject)))
    }

    /// Whether a fault is open for `kind`/`subject`, and at which severity.
    pub fn open_severity(&self, kind: FaultKind, subject: &str) -> Option<Severity> {
        self.slots
            .get(&(kind, bounded(subject)))
            .and_then(|s| s.severity)
    }

    /// Last readings, for a report's snapshot: open faults first, then the rest in kind
    /// order, at most `N`.
    pub fn readings<const N: usize>(&self) -> heapless::Vec<Reading, N> {
        let mut out = heapless::Vec::new();
        for open_first in [true, false] {
            for kind in FaultKind::ALL {
                for (key, slot) in self.slots.iter() {
                    if key.0 != kind
                        || slot.severity.is_some() != open_first
                        || (!open_first && !slot.show)
                        || !slot.value.is_finite()
                    {
                        continue;
                    }
                    let mut name: String<48> = String::new();
                    for c in kind
                        .as_str()
                        .chars()
                        .chain(core::iter::once(' '))
                        .chain(key.1.chars())
                    {
                        if name.push(c).is_err() {
                            break;
                        }
                    }
                    let r = Reading {
                        name,
                        value: slot.value,
                        unit: slot.unit.clone(),
                    };
                    if out.push(r).is_err() {
                        return out;
                    }
                }
            }
        }
        out
    }
}

fn event(
    action: FaultAction,
    obs: &Obs<'_>,
    severity: Severity,
    value: f64,
    threshold: f64,
    message: String<160>,
) -> FaultEvent {
    // JSON has no NaN or infinity (serde_json writes `null`, which then fails to decode
    // as a number): an unknown threshold is shown as the value itself, and the message
    // says what was seen.
    let value = if value.is_finite() { value } else { 0.0 };
    let threshold = if threshold.is_finite() {
        threshold
    } else {
        value
    };
    FaultEvent {
        action,
        kind: obs.kind,
        subject: bounded(obs.subject),
        severity,
        evidence: Evidence {
            value,
            threshold,
            unit: bounded(obs.unit),
            source: bounded(obs.source),
        },
        message,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn disk(subject: &str) -> Obs<'_> {
        Obs {
            kind: FaultKind::DiskSpace,
            subject,
            source: "statvfs /var",
            unit: "%",
            label: "space used",
        }
    }

    const LV: Levels = Levels::above(90.0, 97.0, 5.0);
    const DB: Debounce = Debounce {
        raise_after: 2,
        clear_after: 2,
        critical_after: 0,
    };

    #[test]
    fn raise_update_clear_with_evidence() {
        let mut e = Engine::new();
        assert!(e
            .level(disk("/var"), 93.0, &LV, Severities::DEFAULT, DB)
            .is_none());
        let ev = e
            .level(disk("/var"), 93.0, &LV, Severities::DEFAULT, DB)
            .unwrap();
        assert_eq!(ev.action, FaultAction::Raised);
        assert_eq!(ev.severity, Severity::Warning);
        assert_eq!(ev.subject.as_str(), "/var");
        assert_eq!(ev.evidence.value, 93.0);
        assert_eq!(ev.evidence.threshold, 90.0);
        assert_eq!(ev.evidence.unit.as_str(), "%");
        assert_eq!(ev.evidence.source.as_str(), "statvfs /var");
        assert_eq!(
            ev.message.as_str(),
            "/var: space used 93 %, warning at 90 %"
        );
        assert_eq!(e.open_faults().len(), 1);
        e.level(disk("/var"), 98.0, &LV, Severities::DEFAULT, DB);
        let ev = e
            .level(disk("/var"), 98.0, &LV, Severities::DEFAULT, DB)
            .unwrap();
        assert_eq!(ev.action, FaultAction::Updated);
        assert_eq!(ev.severity, Severity::Critical);
        assert_eq!(e.open_faults()[0].severity, Severity::Critical);
        e.level(disk("/var"), 10.0, &LV, Severities::DEFAULT, DB);
        let ev = e
            .level(disk("/var"), 10.0, &LV, Severities::DEFAULT, DB)
            .unwrap();
        assert_eq!(ev.action, FaultAction::Cleared);
        assert_eq!(ev.severity, Severity::Critical);
        assert_eq!(ev.evidence.threshold, 85.0);
        assert!(e.open_faults().is_empty());
    }

    #[test]
    fn subjects_are_independent() {
        let mut e = Engine::new();
        let db = Debounce::IMMEDIATE;
        assert!(e
            .level(disk("/"), 95.0, &LV, Severities::DEFAULT, db)
            .is_some());
        assert!(e
            .level(disk("/home"), 50.0, &LV, Severities::DEFAULT, db)
            .is_none());
        assert_eq!(
            e.open_severity(FaultKind::DiskSpace, "/"),
            Some(Severity::Warning)
        );
        assert_eq!(e.open_severity(FaultKind::DiskSpace, "/home"), None);
        let r: heapless::Vec<Reading, 32> = e.readings();
        assert_eq!(r[0].name.as_str(), "disk_space /");
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn overflow_is_counted_not_a_panic() {
        let mut e = Engine::new();
        let mut name: String<8> = String::new();
        for i in 0..40 {
            name.clear();
            let _ = write!(name, "/m{i}");
            e.level(
                disk(&name),
                99.0,
                &LV,
                Severities::DEFAULT,
                Debounce::IMMEDIATE,
            );
        }
        assert_eq!(e.watched(FaultKind::DiskSpace), 32);
        assert_eq!(e.overflowed(FaultKind::DiskSpace), 8);
        assert_eq!(e.open_faults().len(), 16, "capped at the wire's limit");
    }

    #[test]
    fn vanished_subject_clears_after_passes() {
        let mut e = Engine::new();
        e.begin_pass();
        assert!(e
            .level(
                disk("/mnt"),
                99.0,
                &LV,
                Severities::DEFAULT,
                Debounce::IMMEDIATE
            )
            .is_some());
        let mut out = std::vec::Vec::new();
        e.end_pass(FaultKind::DiskSpace, &mut |ev| out.push(ev));
        for _ in 0..FORGET_AFTER_PASSES {
            e.begin_pass();
            e.end_pass(FaultKind::DiskSpace, &mut |ev| out.push(ev));
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].action, FaultAction::Cleared);
        assert_eq!(out[0].message.as_str(), "/mnt: no longer present");
        assert_eq!(out[0].evidence.threshold, 99.0, "no NaN on the wire");
        let json = serde_json::to_string(&out[0]).unwrap();
        let back: FaultEvent = serde_json::from_str(&json).unwrap();
        assert_eq!(back, out[0]);
        assert_eq!(e.watched(FaultKind::DiskSpace), 0);
    }

    fn io_obs() -> Obs<'static> {
        Obs {
            kind: FaultKind::DiskIoErrors,
            subject: "sda",
            source: "/sys/block/sda/device/ioerr_cnt",
            unit: "count",
            label: "I/O errors",
        }
    }

    const IO_RULE: CounterRule = CounterRule {
        severity: Severity::Major,
        min_increase: 1,
        clear: CounterClear::Quiet(2),
        since: "since boot",
    };

    #[test]
    fn counter_persists_its_state() {
        let mut e = Engine::new();
        let (obs, rule) = (io_obs(), IO_RULE);
        let memo = |baseline, last, open| {
            Some(CounterMemo {
                baseline,
                last,
                open,
            })
        };
        // First sight, nothing stored: the value is the baseline, to be persisted.
        let o = e.counter(obs, 4, CounterStart::FirstSight, rule);
        assert_eq!(
            o,
            CounterOutcome {
                event: None,
                persist: memo(4, 4, false)
            }
        );
        let o = e.counter(obs, 6, CounterStart::FirstSight, rule);
        let ev = o.event.unwrap();
        assert_eq!(ev.action, FaultAction::Raised);
        assert_eq!((ev.evidence.value, ev.evidence.threshold), (6.0, 4.0));
        assert_eq!(ev.message.as_str(), "sda: I/O errors rose from 4 to 6");
        assert_eq!(o.persist, memo(4, 6, true), "open is persisted at once");
        assert_eq!(
            e.counter(obs, 6, CounterStart::FirstSight, rule).persist,
            None
        );
        let o = e.counter(obs, 6, CounterStart::FirstSight, rule);
        assert_eq!(o.event.unwrap().action, FaultAction::Cleared);
        assert_eq!(o.persist, memo(6, 6, false));
        // A stored baseline below the current value raises at once (errors while down).
        let mut e = Engine::new();
        let o = e.counter(
            obs,
            9,
            CounterStart::Saved(CounterMemo {
                baseline: 6,
                last: 6,
                open: false,
            }),
            rule,
        );
        assert_eq!(o.event.unwrap().action, FaultAction::Raised);
        assert_eq!(o.persist, memo(6, 9, true));
    }

    #[test]
    fn counter_from_zero_reports_what_is_there() {
        let mut e = Engine::new();
        let o = e.counter(io_obs(), 3, CounterStart::Zero, IO_RULE);
        let ev = o.event.unwrap();
        assert_eq!(ev.action, FaultAction::Raised);
        assert_eq!(ev.message.as_str(), "sda: 3 I/O errors since boot");
        assert_eq!((ev.evidence.value, ev.evidence.threshold), (3.0, 0.0));
        let mut e = Engine::new();
        let o = e.counter(io_obs(), 0, CounterStart::Zero, IO_RULE);
        assert_eq!(o.event, None, "zero is nothing to report");
    }

    #[test]
    fn counter_resumed_open_is_open_and_not_reported_again() {
        let mut e = Engine::new();
        let saved = CounterStart::Saved(CounterMemo {
            baseline: 0,
            last: 3,
            open: true,
        });
        let o = e.counter(io_obs(), 3, saved, IO_RULE);
        assert_eq!(
            o,
            CounterOutcome {
                event: None,
                persist: None
            }
        );
        assert_eq!(
            e.open_severity(FaultKind::DiskIoErrors, "sda"),
            Some(Severity::Major)
        );
        let o = e.counter(io_obs(), 3, saved, IO_RULE);
        let ev = o.event.unwrap();
        assert_eq!(ev.action, FaultAction::Cleared, "its lifecycle goes on");
        assert_eq!(
            ev.message.as_str(),
            "sda: I/O errors steady at 3 for 2 samples"
        );
    }

    #[test]
    fn numbers_read_as_evidence() {
        let mut s: String<32> = String::new();
        let _ = write!(
            s,
            "{} {} {} {} {}",
            Num(97.0),
            Num(41.85),
            Num(-0.01),
            Num(3.04),
            Num(1e3)
        );
        assert_eq!(s.as_str(), "97 41.9 0 3 1000");
    }

    proptest::proptest! {
        /// Through the engine: a flapping reading opens at most one fault per hysteresis
        /// cycle, and every Raised is followed by a Cleared before the next Raised.
        #[test]
        fn engine_flapping_alternates_raise_and_clear(
            values in proptest::collection::vec(proptest::prop_oneof![80.0f64..100.0, 84.0f64..92.0], 1..300),
        ) {
            let mut e = Engine::new();
            let mut open = false;
            for v in values {
                if let Some(ev) = e.level(disk("/"), v, &LV, Severities::DEFAULT, DB) {
                    match ev.action {
                        FaultAction::Raised => { proptest::prop_assert!(!open); open = true; }
                        FaultAction::Cleared => { proptest::prop_assert!(open); open = false; }
                        FaultAction::Updated => proptest::prop_assert!(open),
                    }
                }
            }
            proptest::prop_assert_eq!(e.open_faults().len(), usize::from(open));
        }
    }

    #[test]
    fn flag_raises_and_clears() {
        let mut e = Engine::new();
        let obs = Obs {
            kind: FaultKind::FsReadOnly,
            subject: "/data",
            source: "/proc/mounts",
            unit: "state",
            label: "remounted read-only",
        };
        let db = Debounce::IMMEDIATE;
        assert!(e
            .flag(obs, false, Severity::Critical, 0.0, 1.0, db)
            .is_none());
        let ev = e.flag(obs, true, Severity::Critical, 1.0, 1.0, db).unwrap();
        assert_eq!(ev.message.as_str(), "/data: remounted read-only");
        assert!(e
            .flag(obs, true, Severity::Critical, 1.0, 1.0, db)
            .is_none());
        let ev = e
            .flag(obs, false, Severity::Critical, 0.0, 1.0, db)
            .unwrap();
        assert_eq!(ev.action, FaultAction::Cleared);
        assert_eq!(ev.message.as_str(), "/data: no longer remounted read-only");
    }
}
