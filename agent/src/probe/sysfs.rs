//! Small readers for `/sys` and `/proc` files under a root directory.
//!
//! Every path a probe reads goes through [`Root::path`], so a fixture tree stands in for
//! the machine. Values are parsed by the callers' pure functions; these only read, trim
//! and list, and return `None`/errors instead of defaults so nothing is ever invented.
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The filesystem root probes read (`/` in production).
#[derive(Debug, Clone)]
pub struct Root(PathBuf);

impl Root {
    /// Wraps a root directory.
    pub fn new(root: &Path) -> Self {
        Self(root.to_path_buf())
    }

    /// `abs` (an absolute path like `/proc/mounts`) under this root.
    pub fn path(&self, abs: &str) -> PathBuf {
        self.0.join(abs.trim_start_matches('/'))
    }

    /// The root itself.
    pub fn dir(&self) -> &Path {
        &self.0
    }
}

/// Reads a whole file as text.
pub fn read(path: &Path) -> io::Result<String> {
    fs::read_to_string(path)
}

/// Reads a one-value sysfs attribute, trimmed. `None` when missing, unreadable or empty.
pub fn attr(path: &Path) -> Option<String> {
    let s = fs::read_to_string(path).ok()?;
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// Parses an unsigned integer, decimal or `0x` hex (as `ioerr_cnt` prints it).
pub fn parse_u64(s: &str) -> Option<u64> {
    let t = s.trim();
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()
    } else {
        t.parse().ok()
    }
}

/// Parses a signed integer (temperatures can be negative).
pub fn parse_i64(s: &str) -> Option<i64> {
    s.trim().parse().ok()
}

/// A numeric attribute, `None` when missing, unreadable or garbage.
pub fn attr_u64(path: &Path) -> Option<u64> {
    attr(path).and_then(|s| parse_u64(&s))
}

/// A signed numeric attribute.
pub fn attr_i64(path: &Path) -> Option<i64> {
    attr(path).and_then(|s| parse_i64(&s))
}

/// Entries of `dir` whose names start with `prefix`, sorted by name (natural order for
/// the trailing number, so `hwmon10` follows `hwmon9`).
pub fn entries(dir: &Path, prefix: &str) -> io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let Ok(e) = e else { continue };
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) {
            out.push((name, e.path()));
        }
    }
    out.sort_by(|a, b| natural(&a.0).cmp(&natural(&b.0)));
    Ok(out)
}

fn natural(s: &str) -> (&str, u64, &str) {
    let digits_at = s
        .char_indices()
        .find(|(_, c)| c.is_ascii_digit())
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    let (head, rest) = s.split_at(digits_at);
    let end = rest
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit())
        .map(|(i, _)| i)
        .unwrap_or(rest.len());
    (head, rest[..end].parse().unwrap_or(0), &rest[end..])
}

/// The path as shown in evidence: relative to the root, written as absolute.
pub fn shown(root: &Root, path: &Path) -> String {
    match path.strip_prefix(root.dir()) {
        Ok(rel) => format!("/{}", rel.display()),
        Err(_) => path.display().to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn numbers_hex_decimal_garbage() {
        assert_eq!(parse_u64("0x1f\n"), Some(31));
        assert_eq!(parse_u64(" 42 "), Some(42));
        assert_eq!(parse_u64("abc"), None);
        assert_eq!(parse_u64(""), None);
        assert_eq!(parse_i64("-5000"), Some(-5000));
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["hwmon10", "hwmon9", "hwmon1"];
        v.sort_by(|a, b| natural(a).cmp(&natural(b)));
        assert_eq!(v, ["hwmon1", "hwmon9", "hwmon10"]);
    }

    #[test]
    fn root_joins_absolute_paths() {
        let r = Root::new(Path::new("/tmp/fx"));
        assert_eq!(r.path("/proc/mounts"), PathBuf::from("/tmp/fx/proc/mounts"));
        assert_eq!(shown(&r, &r.path("/proc/mounts")), "/proc/mounts");
    }
}
