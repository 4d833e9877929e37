//! Time as both programs write and read it: the one duration grammar of the config files
//! (`500ms`, `90s`, `1.5h`, `1h30m`, `3d`, `1w`), instants as UTC RFC 3339, and the wall
//! clock in milliseconds.
//!
//! The collector only needs milliseconds since the epoch and whole-second UTC rendering for
//! exports, so a few lines of civil-date arithmetic (Howard Hinnant's algorithms) replace a
//! date-time crate; time zones are left to whoever reads an export. Everything here but
//! [`now_ms`] is pure and builds without `std`.
use alloc::format;
use alloc::string::{String, ToString};
use core::fmt;
use core::str::FromStr;
use core::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::payload::Millis;

/// One second, in milliseconds.
pub const SECOND: u64 = 1_000;
/// One minute, in milliseconds.
pub const MINUTE: u64 = 60 * SECOND;
/// One hour, in milliseconds.
pub const HOUR: u64 = 60 * MINUTE;
/// One day, in milliseconds.
pub const DAY: u64 = 24 * HOUR;
/// One week, in milliseconds.
pub const WEEK: u64 = 7 * DAY;

/// The wall clock in ms since the Unix epoch (0 if the clock is before 1970).
#[cfg(feature = "std")]
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A length of time, written as numbers with units: `500ms`, `90s`, `15m`, `1.5h`, `3d`,
/// `1w`, or combined, `1h30m`; a space may separate a number from its unit. Units: `ms`,
/// `s` (`sec`, `secs`), `m` (`min`, `mins`), `h`, `d`, `w`. Millisecond precision; it
/// prints back in the same grammar (`1h30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub u64);

impl Dur {
    /// Milliseconds.
    pub fn ms(self) -> u64 {
        self.0
    }

    /// As a [`Duration`].
    pub fn duration(self) -> Duration {
        Duration::from_millis(self.0)
    }
}

impl From<Duration> for Dur {
    /// Whole milliseconds (sub-millisecond parts are dropped).
    fn from(d: Duration) -> Self {
        Self(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

impl From<Dur> for Duration {
    fn from(d: Dur) -> Self {
        d.duration()
    }
}

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurError {
    text: String,
    why: &'static str,
}

impl fmt::Display for DurError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid duration {:?}: {} (write e.g. \"90s\", \"15m\", \"1.5h\", \"3d\", \"1w\", \"1h30m\")",
            self.text, self.why
        )
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DurError {}

fn unit_ms(unit: &str) -> Option<u64> {
    Some(match unit {
        "ms" => 1,
        "s" | "sec" | "secs" => SECOND,
        "m" | "min" | "mins" => MINUTE,
        "h" => HOUR,
        "d" => DAY,
        "w" => WEEK,
        _ => return None,
    })
}

impl FromStr for Dur {
    type Err = DurError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| DurError {
            text: s.to_string(),
            why,
        };
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(err("empty"));
        }
        let mut total: u128 = 0;
        while !rest.is_empty() {
            let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            let (int, after) = rest.split_at(int_len);
            let (frac, after) = match after.strip_prefix('.') {
                Some(a) => {
                    let n = a.bytes().take_while(u8::is_ascii_digit).count();
                    a.split_at(n)
                }
                None => ("", after),
            };
            if int.is_empty() && frac.is_empty() {
                return Err(err("expected a number"));
            }
            let after = after.trim_start();
            let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
            let (unit, after) = after.split_at(unit_len);
            let unit = match unit {
                "" => return Err(err("missing unit")),
                u => unit_ms(u).ok_or_else(|| err("unknown unit"))?,
            };
            let whole: u128 = if int.is_empty() {
                0
            } else {
                int.parse().map_err(|_| err("number too large"))?
            };
            // The fraction, in units of 10^-len; more than 9 digits is finer than any
            // millisecond count can hold, and refused below like any sub-ms remainder.
            if frac.len() > 9 {
                return Err(err("finer than a millisecond"));
            }
            let frac_value: u128 = if frac.is_empty() {
                0
            } else {
                frac.parse().map_err(|_| err("number too large"))?
            };
            let scale = 10u128.pow(u32::try_from(frac.len()).unwrap_or(9));
            let frac_ms = frac_value * u128::from(unit);
            if !frac_ms.is_multiple_of(scale) {
                return Err(err("finer than a millisecond"));
            }
            let part = whole
                .checked_mul(u128::from(unit))
                .and_then(|w| w.checked_add(frac_ms / scale))
                .ok_or_else(|| err("too large"))?;
            total = total.checked_add(part).ok_or_else(|| err("too large"))?;
            rest = after.trim_start();
        }
        u64::try_from(total).map(Dur).map_err(|_| err("too large"))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut v = self.0;
        if v == 0 {
            return f.write_str("0s");
        }
        for (unit, name) in [
            (WEEK, "w"),
            (DAY, "d"),
            (HOUR, "h"),
            (MINUTE, "m"),
            (SECOND, "s"),
            (1, "ms"),
        ] {
            if v >= unit {
                write!(f, "{}{name}", v / unit)?;
                v %= unit;
            }
        }
        Ok(())
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let (m, d) = (i64::from(m), i64::from(d));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian (year, month, day) of a day number since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Renders `ms` as RFC 3339 UTC with whole seconds: `2026-11-22T02:45:00Z`.
pub fn rfc3339(ms: Millis) -> String {
    let secs = ms / 1000;
    let sod = secs % 86_400;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

/// Parses an instant: `2026-11-01` (midnight UTC), `2026-11-01T10:00:00Z` (UTC; the
/// seconds may be left out), `2026-11-01T11:00:00+01:00` (a local time with its offset
/// from UTC, as RFC 3339 writes it) or milliseconds since the epoch.
pub fn parse_instant(s: &str) -> Result<Millis, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|e| format!("{s:?}: {e}"));
    }
    let bad = || {
        format!(
            "{s:?} is not a date (2026-11-01), a time in UTC (2026-11-01T10:00:00Z) or with \
             its offset (2026-11-01T11:00:00+01:00), or ms"
        )
    };
    let (date, time) = match s.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    // The offset east of UTC, in seconds: `Z`, `+hh:mm` or `-hh:mm` after the time.
    let (time, offset) = match time {
        None => (None, 0),
        Some(t) if t.ends_with(['Z', 'z']) => (Some(&t[..t.len() - 1]), 0),
        Some(t) => match t.rfind(['+', '-']) {
            Some(i) => {
                let (clock, off) = t.split_at(i);
                let sign = if off.starts_with('-') { -1 } else { 1 };
                let (h, m) = off[1..].split_once(':').ok_or_else(bad)?;
                let (h, m) = (
                    h.parse::<i64>().map_err(|_| bad())?,
                    m.parse::<i64>().map_err(|_| bad())?,
                );
                if !(0..24).contains(&h) || !(0..60).contains(&m) {
                    return Err(bad());
                }
                (Some(clock), sign * (h * 3600 + m * 60))
            }
            None => (Some(t), 0),
        },
    };
    let mut d = date.splitn(3, '-');
    let (Some(Ok(y)), Some(Ok(m)), Some(Ok(day))) = (
        d.next().map(str::parse::<i64>),
        d.next().map(str::parse::<u32>),
        d.next().map(str::parse::<u32>),
    ) else {
        return Err(bad());
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || y < 1970 {
        return Err(bad());
    }
    let mut secs = days_from_civil(y, m, day) * 86_400;
    if let Some(t) = time {
        let mut p = t.splitn(3, ':').map(|p| p.parse::<i64>());
        let h = p.next().and_then(Result::ok).ok_or_else(bad)?;
        let mi = p.next().and_then(Result::ok).ok_or_else(bad)?;
        let sec = match p.next() {
            Some(r) => r.map_err(|_| bad())?,
            None => 0,
        };
        if !(0..24).contains(&h) || !(0..60).contains(&mi) || !(0..61).contains(&sec) {
            return Err(bad());
        }
        secs += h * 3600 + mi * 60 + sec;
    }
    u64::try_from(secs - offset)
        .map(|s| s * 1000)
        .map_err(|_| bad())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(s: &str) -> u64 {
        s.parse::<Dur>()
            .unwrap_or_else(|e| panic!("{s:?}: {e}"))
            .ms()
    }

    #[test]
    fn one_grammar_for_both_config_files() {
        // The collector's forms...
        assert_eq!(ms("500ms"), 500);
        assert_eq!(ms("90s"), 90 * SECOND);
        assert_eq!(ms("15m"), 15 * MINUTE);
        assert_eq!(ms("1h30m"), 90 * MINUTE);
        assert_eq!(ms("3d"), 3 * DAY);
        assert_eq!(ms("1w"), WEEK);
        // ...and the agent's: fractions, a space before the unit, long unit names.
        assert_eq!(ms("1.5h"), 90 * MINUTE);
        assert_eq!(ms("1.5 s"), 1500);
        assert_eq!(ms(".5s"), 500);
        assert_eq!(ms("2 min"), 2 * MINUTE);
        assert_eq!(ms("30secs"), 30 * SECOND);
        assert_eq!(ms("1h 30m"), 90 * MINUTE);
        for bad in [
            "",
            "h",
            "5",
            "5x",
            "-5m",
            "1.5",
            ".s",
            "1..5s",
            "99999999999999999999d",
            "30 s x",
        ] {
            assert!(bad.parse::<Dur>().is_err(), "{bad:?} should not parse");
        }
        let e = "5x".parse::<Dur>().unwrap_err().to_string();
        assert!(e.contains("unknown unit") && e.contains("\"90s\""), "{e}");
    }

    #[test]
    fn display_round_trips() {
        for s in ["0s", "1w2d3h4m5s6ms", "15m", "4h", "30s"] {
            assert_eq!(s.parse::<Dur>().unwrap().to_string(), s);
        }
        assert_eq!(Duration::from(Dur(1500)), Duration::from_millis(1500));
        assert_eq!(Dur::from(Duration::from_micros(2500)), Dur(2));
    }

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_827_696_000), "2000-02-29T12:34:56Z");
        assert_eq!(rfc3339(1_795_315_500_000), "2026-11-22T02:45:00Z");
    }

    #[test]
    fn instants_parse() {
        assert_eq!(parse_instant("0").unwrap(), 0);
        // A local time with its offset is the same instant as its UTC time.
        assert_eq!(
            parse_instant("2026-11-22T03:45:00+01:00").unwrap(),
            parse_instant("2026-11-22T02:45:00Z").unwrap()
        );
        assert_eq!(
            parse_instant("2026-11-21T21:15:00-05:30").unwrap(),
            parse_instant("2026-11-22T02:45:00Z").unwrap()
        );
        assert!(parse_instant("2026-11-22T03:45:00+1").is_err());
        assert!(parse_instant("2026-11-22T03:45:00+25:00").is_err());
        assert_eq!(parse_instant("1970-01-02").unwrap(), 86_400_000);
        assert_eq!(
            parse_instant("2026-11-22T02:45:00Z").unwrap(),
            1_795_315_500_000
        );
        assert_eq!(
            parse_instant("2000-02-29T12:34:56Z").unwrap(),
            951_827_696_000
        );
        for bad in ["", "yesterday", "2026-13-01", "2026-11-22T25:00:00Z"] {
            assert!(parse_instant(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn any_duration_prints_and_parses_back(v in 0u64..u64::MAX / 2) {
            let d = Dur(v);
            prop_assert_eq!(d.to_string().parse::<Dur>().unwrap(), d);
        }

        #[test]
        fn civil_dates_round_trip(day in -1_000_000i64..1_000_000) {
            let (y, m, d) = civil_from_days(day);
            prop_assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            prop_assert_eq!(days_from_civil(y, m, d), day);
        }

        #[test]
        fn rfc3339_parses_back(secs in 0u64..8_000_000_000) {
            let ms = secs * 1000;
            prop_assert_eq!(parse_instant(&rfc3339(ms)).unwrap(), ms);
        }
    }
}
