//! Device identifiers: the MQTT username and the `{id}` segment of every topic.
//!
//! The charset is deliberately narrow (ASCII letters, digits, `-`, `_`, `.`) so an id can
//! never contain the MQTT wildcards `+` and `#`, a level separator `/`, or start a `$SYS`
//! style topic, and so broker ACL patterns built from it stay exact.
use core::fmt;
use core::str::FromStr;

use heapless::String;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest device id accepted, in bytes.
pub const MAX_DEVICE_ID: usize = 64;

/// A validated device id.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(String<MAX_DEVICE_ID>);

/// Why a string is not a valid device id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceIdError {
    /// The id is empty.
    Empty,
    /// The id is longer than [`MAX_DEVICE_ID`] bytes.
    TooLong,
    /// The id contains a character outside `[A-Za-z0-9._-]`.
    BadChar(char),
    /// The id starts with `.` or `-`, which file names and command lines treat specially.
    BadStart,
}

impl fmt::Display for DeviceIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("device id is empty"),
            Self::TooLong => write!(f, "device id is longer than {MAX_DEVICE_ID} bytes"),
            Self::BadChar(c) => write!(
                f,
                "device id contains {c:?}; only ASCII letters, digits, '-', '_' and '.' are allowed"
            ),
            Self::BadStart => f.write_str("device id must not start with '.' or '-'"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DeviceIdError {}

impl DeviceId {
    /// Validates `s` as a device id.
    pub fn new(s: &str) -> Result<Self, DeviceIdError> {
        if s.is_empty() {
            return Err(DeviceIdError::Empty);
        }
        if s.len() > MAX_DEVICE_ID {
            return Err(DeviceIdError::TooLong);
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(DeviceIdError::BadChar(c));
        }
        if s.starts_with('.') || s.starts_with('-') {
            return Err(DeviceIdError::BadStart);
        }
        let mut out = String::new();
        // Length was checked above, so this cannot fail.
        out.push_str(s).map_err(|_| DeviceIdError::TooLong)?;
        Ok(Self(out))
    }

    /// Builds a valid id from any text (a hostname, say): lowercases it, replaces every
    /// character outside the charset with `-` and truncates. Returns `None` when nothing
    /// usable is left.
    pub fn sanitize(s: &str) -> Option<Self> {
        let mut out: String<MAX_DEVICE_ID> = String::new();
        for c in s.chars() {
            let c = if c.is_ascii_alphanumeric() || matches!(c, '_' | '.') {
                c.to_ascii_lowercase()
            } else {
                '-'
            };
            if out.push(c).is_err() {
                break;
            }
        }
        let trimmed = out.trim_start_matches(['.', '-']);
        Self::new(trimmed).ok()
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DeviceId {
    type Err = DeviceIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({})", self.0)
    }
}

impl AsRef<str> for DeviceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for DeviceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: String<MAX_DEVICE_ID> = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// Copies `s` into a bounded string, cutting at a character boundary when it is too long.
/// For text that comes from the machine (model names, hostnames), where losing the tail
/// beats losing the whole message.
pub fn bounded<const N: usize>(s: &str) -> String<N> {
    let mut out = String::new();
    for c in s.chars() {
        if out.push(c).is_err() {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_charset() {
        assert!(DeviceId::new("ws-042.bogota_01").is_ok());
    }

    #[test]
    fn rejects_wildcards_separators_and_bad_starts() {
        assert_eq!(DeviceId::new("a+b"), Err(DeviceIdError::BadChar('+')));
        assert_eq!(DeviceId::new("a#"), Err(DeviceIdError::BadChar('#')));
        assert_eq!(DeviceId::new("a/b"), Err(DeviceIdError::BadChar('/')));
        assert_eq!(DeviceId::new("$SYS"), Err(DeviceIdError::BadChar('$')));
        assert_eq!(DeviceId::new(""), Err(DeviceIdError::Empty));
        assert_eq!(DeviceId::new(".x"), Err(DeviceIdError::BadStart));
        assert_eq!(DeviceId::new("ñandú"), Err(DeviceIdError::BadChar('ñ')));
        let long = "a".repeat(MAX_DEVICE_ID + 1);
        assert_eq!(DeviceId::new(&long), Err(DeviceIdError::TooLong));
        assert!(DeviceId::new(&long[..MAX_DEVICE_ID]).is_ok());
    }

    #[test]
    fn sanitize_makes_hostnames_usable() {
        assert_eq!(
            DeviceId::sanitize("Portátil de Ana").map(|d| alloc::string::String::from(d.as_str())),
            Some("port-til-de-ana".into())
        );
        assert_eq!(DeviceId::sanitize("///"), None);
    }

    #[test]
    fn bounded_cuts_on_char_boundary() {
        let s: String<4> = bounded("añoz");
        assert_eq!(s.as_str(), "año");
    }
}
