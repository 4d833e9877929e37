//! Durations as people write them in config files ("15m", "4h", "7d") and UTC timestamps
//! rendered as RFC 3339, both without a date-time crate.
//!
//! The workflow only needs milliseconds since the Unix epoch and whole-second UTC rendering
//! for exports, so a 30-line civil-date conversion (Howard Hinnant's algorithm) replaces a
//! dependency; time zones are left to whoever reads the export.
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds since the Unix epoch, UTC (the wire's `Millis`).
pub type Millis = vigia_protocol::Millis;

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

/// A length of time, written in config files as a number and a unit: `500ms`, `90s`,
/// `15m`, `4h`, `3d`, `1w`, or combined, `1h30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub u64);

impl Dur {
    /// Milliseconds.
    pub fn ms(self) -> u64 {
        self.0
    }
}

/// Why a duration string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {why} (write e.g. \"90s\", \"15m\", \"4h\", \"3d\", \"1w\", \"1h30m\")")]
pub struct DurError {
    text: String,
    why: &'static str,
}

impl FromStr for Dur {
    type Err = DurError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| DurError {
            text: s.to_owned(),
            why,
        };
        let t = s.trim();
        if t.is_empty() {
            return Err(err("empty"));
        }
        let mut total: u64 = 0;
        let mut rest = t;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(err("expected a number"));
            }
            let n: u64 = rest[..digits]
                .parse()
                .map_err(|_| err("number too large"))?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let unit = match &rest[..unit_len] {
                "ms" => 1,
                "s" => SECOND,
                "m" => MINUTE,
                "h" => HOUR,
                "d" => DAY,
                "w" => WEEK,
                "" => return Err(err("missing unit")),
                _ => return Err(err("unknown unit")),
            };
            rest = &rest[unit_len..];
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| err("too large"))?;
        }
        Ok(Dur(total))
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

/// Renders `ms` as RFC 3339 UTC with whole seconds: `2026-11-22T02:45:00Z`.
pub fn rfc3339(ms: Millis) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!("500ms".parse::<Dur>().unwrap().ms(), 500);
        assert_eq!("90s".parse::<Dur>().unwrap().ms(), 90 * SECOND);
        assert_eq!("15m".parse::<Dur>().unwrap().ms(), 15 * MINUTE);
        assert_eq!("1h30m".parse::<Dur>().unwrap().ms(), 90 * MINUTE);
        assert_eq!("1w".parse::<Dur>().unwrap().ms(), 7 * DAY);
        for bad in ["", "h", "5", "5x", "-5m", "99999999999999999999d"] {
            assert!(bad.parse::<Dur>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["0s", "1w2d3h4m5s6ms", "15m", "4h"] {
            let d: Dur = s.parse().unwrap();
            assert_eq!(d.to_string(), s);
        }
    }

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        // 2000-02-29 (a leap day) 12:34:56 UTC
        assert_eq!(rfc3339(951_827_696_000), "2000-02-29T12:34:56Z");
        // 2026-11-22T02:45:00Z
        assert_eq!(rfc3339(1_795_315_500_000), "2026-11-22T02:45:00Z");
    }
}
