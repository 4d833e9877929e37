//! `/proc/mdstat`: Linux software RAID arrays that lost a member.
//!
//! An array is degraded when its `[n/m]` shows fewer members up than expected, or its
//! status map (`[UU_]`) has a `_`. Arrays without a status line (inactive containers such
//! as Intel RST's `external:imsm`, or an array being assembled) are not judged: the file
//! says nothing about their health.
use serde::{Deserialize, Serialize};
use vigia_protocol::{FaultEvent, FaultKind, Severity};

use super::error::ProbeError;
use super::sysfs::{self, Root};
use crate::detect::config::FlagConfig;
use crate::detect::{Engine, Obs};

/// One array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaidArray {
    /// `md0`.
    pub name: String,
    /// `raid1`, `raid5`...
    #[serde(default)]
    pub level: String,
    /// Members the array should have.
    pub expected: u32,
    /// Members working.
    pub up: u32,
    /// The status map (`[UU_]`).
    #[serde(default)]
    pub status: String,
}

impl RaidArray {
    /// Missing a member.
    pub fn degraded(&self) -> bool {
        self.up < self.expected || self.status.contains('_')
    }
}

fn member_counts(line: &str) -> Option<(u32, u32, String)> {
    // "... [2/1] [U_]"
    let mut counts = None;
    let mut status = None;
    for tok in line.split_whitespace() {
        let Some(inner) = tok.strip_prefix('[').and_then(|t| t.strip_suffix(']')) else {
            continue;
        };
        if let Some((n, m)) = inner.split_once('/') {
            if let (Ok(n), Ok(m)) = (n.parse(), m.parse()) {
                counts = Some((n, m));
            }
        } else if !inner.is_empty() && inner.chars().all(|c| c == 'U' || c == '_') {
            status = Some(tok.to_string());
        }
    }
    let (n, m) = counts?;
    Some((n, m, status.unwrap_or_default()))
}

/// Parses `/proc/mdstat`.
pub fn parse_mdstat(text: &str) -> Vec<RaidArray> {
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((name, rest)) = line.split_once(" : ") else {
            continue;
        };
        let name = name.trim();
        if !name.starts_with("md") {
            continue;
        }
        let level = rest
            .split_whitespace()
            .find(|t| t.starts_with("raid") || *t == "linear" || *t == "multipath")
            .unwrap_or("")
            .to_string();
        // The status is on the following indented lines, before the next blank line.
        while let Some(next) = lines.peek() {
            if next.trim().is_empty() || !next.starts_with(char::is_whitespace) {
                break;
            }
            let next = lines.next().unwrap_or_default();
            if let Some((expected, up, status)) = member_counts(next) {
                out.push(RaidArray {
                    name: name.to_string(),
                    level: level.clone(),
                    expected,
                    up,
                    status,
                });
            }
        }
    }
    out
}

/// Reads `{root}/proc/mdstat` (missing: the md driver is not loaded, "unsupported").
pub fn read_mdstat(root: &Root) -> Result<Vec<RaidArray>, ProbeError> {
    let path = root.path("/proc/mdstat");
    let text = sysfs::read(&path).map_err(|source| ProbeError::Io { path, source })?;
    Ok(parse_mdstat(&text))
}

/// Feeds arrays.
pub fn feed(
    engine: &mut Engine,
    cfg: &FlagConfig,
    arrays: &[RaidArray],
    out: &mut Vec<FaultEvent>,
) {
    for a in arrays {
        let label = if a.degraded() {
            format!(
                "{} degraded {}, {} of {} members up",
                a.level, a.status, a.up, a.expected
            )
        } else {
            format!(
                "{} degraded, now {} of {} members up",
                a.level, a.up, a.expected
            )
        };
        let obs = Obs {
            kind: FaultKind::RaidDegraded,
            subject: &a.name,
            source: "/proc/mdstat",
            unit: "members",
            label: label.trim(),
        };
        out.extend(engine.flag(
            obs,
            a.degraded(),
            Severity::Critical,
            f64::from(a.up),
            f64::from(a.expected),
            cfg.debounce(),
        ));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fixture(name: &str) -> Root {
        Root::new(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures/raid_degraded")
                .join(name),
        )
    }

    #[test]
    fn healthy_and_degraded_arrays() {
        let v = read_mdstat(&fixture("degraded")).unwrap();
        let summary: Vec<_> = v
            .iter()
            .map(|a| {
                (
                    a.name.as_str(),
                    a.level.as_str(),
                    a.expected,
                    a.up,
                    a.degraded(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("md2", "raid5", 3, 2, true),
                ("md1", "raid1", 2, 2, false),
                ("md0", "raid1", 2, 1, true),
            ]
        );
        assert_eq!(v[0].status, "[_UU]");
    }

    #[test]
    fn inactive_container_is_not_judged_and_no_arrays_is_fine() {
        assert!(read_mdstat(&fixture("imsm_container")).unwrap().is_empty());
        assert!(read_mdstat(&fixture("none")).unwrap().is_empty());
        assert!(parse_mdstat("garbage\n\n : \n").is_empty());
        assert!(read_mdstat(&fixture("missing")).is_err());
    }
}
