//! Network interfaces: error rate from `/proc/net/dev`, carrier from
//! `/sys/class/net/*/{carrier,operstate,flags}`.
//!
//! The error rate is judged per sampling interval: the rise of rx + tx errors over the
//! rise of rx + tx packets; an interval with fewer packets than `min_packets` is not judged (three
//! errors in ten packets is noise, not a rate). A counter that went backwards (driver
//! reload) starts a new interval.
//!
//! Carrier loss is watched only on physical interfaces (those with a `device` link in
//! sysfs: bridges, tunnels and veths come and go on purpose), only once the interface has
//! had a carrier since the agent started, and only while it is administratively up
//! (`flags` & IFF_UP): `ip link set down` is not a fault.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vigia_protocol::{FaultEvent, FaultKind, Severity};

use super::error::ProbeError;
use super::sysfs::{self, Root};
use crate::detect::config::{is_ignored, NicErrorsConfig, NicLinkConfig};
use crate::detect::{Debounce, Engine, Levels, Obs, Severities};

/// Counters of one interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicCounters {
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errs: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Transmit errors.
    pub tx_errs: u64,
}

/// One interface's counters, named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    /// Interface name.
    pub iface: String,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errs: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Transmit errors.
    pub tx_errs: u64,
}

impl Nic {
    /// The counters alone.
    pub fn counters(&self) -> NicCounters {
        NicCounters {
            rx_packets: self.rx_packets,
            rx_errs: self.rx_errs,
            tx_packets: self.tx_packets,
            tx_errs: self.tx_errs,
        }
    }
}

/// Parses `/proc/net/dev` (two header lines, then `iface: 16 numbers`).
pub fn parse_net_dev(text: &str) -> Vec<Nic> {
    text.lines()
        .filter_map(|line| {
            let (iface, rest) = line.split_once(':')?;
            let n: Vec<u64> = rest
                .split_whitespace()
                .map(|t| t.parse().ok())
                .collect::<Option<_>>()?;
            if n.len() < 16 {
                return None;
            }
            Some(Nic {
                iface: iface.trim().to_string(),
                rx_packets: n[1],
                rx_errs: n[2],
                tx_packets: n[9],
                tx_errs: n[10],
            })
        })
        .collect()
}

/// Reads `{root}/proc/net/dev`.
pub fn read_net_dev(root: &Root) -> Result<Vec<Nic>, ProbeError> {
    let path = root.path("/proc/net/dev");
    let text = sysfs::read(&path).map_err(|source| ProbeError::Io { path, source })?;
    Ok(parse_net_dev(&text))
}

/// Error percent over one interval, `None` when it cannot be judged.
pub fn error_pct(prev: &NicCounters, cur: &NicCounters, min_packets: u64) -> Option<f64> {
    let packets = cur.rx_packets.checked_sub(prev.rx_packets)?
        + cur.tx_packets.checked_sub(prev.tx_packets)?;
    let errs = cur.rx_errs.checked_sub(prev.rx_errs)? + cur.tx_errs.checked_sub(prev.tx_errs)?;
    (packets >= min_packets.max(1)).then(|| 100.0 * errs as f64 / packets as f64)
}

/// Link state of one physical interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// Interface name.
    pub iface: String,
    /// Administratively up (`flags` & 0x1).
    pub admin_up: bool,
    /// Carrier, where readable (`carrier` errors out while the interface is down; then
    /// `operstate` is used).
    pub carrier: Option<bool>,
}

/// Reads the link state of every physical interface. `Err` without `/sys/class/net`.
pub fn read_links(root: &Root) -> Result<Vec<Link>, ProbeError> {
    let dir = root.path("/sys/class/net");
    let entries = sysfs::entries(&dir, "").map_err(|source| ProbeError::Io {
        path: dir.clone(),
        source,
    })?;
    let mut out = Vec::new();
    for (iface, p) in entries {
        if !p.join("device").exists() {
            continue;
        }
        let admin_up = sysfs::attr(&p.join("flags"))
            .and_then(|f| sysfs::parse_u64(&f))
            .is_some_and(|f| f & 0x1 != 0);
        let carrier = match sysfs::attr(&p.join("carrier")).as_deref() {
            Some("1") => Some(true),
            Some("0") => Some(false),
            _ => match sysfs::attr(&p.join("operstate")).as_deref() {
                Some("up") => Some(true),
                Some("down") | Some("lowerlayerdown") => Some(false),
                _ => None,
            },
        };
        out.push(Link {
            iface,
            admin_up,
            carrier,
        });
    }
    Ok(out)
}

/// Previous counters and "has had a carrier" memory across passes.
#[derive(Debug, Default)]
pub struct NetTracker {
    prev: BTreeMap<String, NicCounters>,
    had_carrier: std::collections::BTreeSet<String>,
}

impl NetTracker {
    /// Feeds counters: judges the interval since the previous pass.
    pub fn feed_errors(
        &mut self,
        engine: &mut Engine,
        cfg: &NicErrorsConfig,
        nics: &[Nic],
        out: &mut Vec<FaultEvent>,
    ) {
        let levels = Levels {
            warn: None,
            critical: Some(cfg.error_pct),
            hysteresis: cfg.hysteresis,
            below: false,
        };
        let db = Debounce {
            raise_after: cfg.raise_after,
            clear_after: cfg.clear_after,
            critical_after: 0,
        };
        // Only interfaces present now are kept, so churning veths do not pile up.
        let mut last = std::mem::take(&mut self.prev);
        for n in nics {
            if is_ignored(&cfg.ignore_interfaces, &n.iface) {
                continue;
            }
            let cur = n.counters();
            let prev = last.remove(&n.iface);
            self.prev.insert(n.iface.clone(), cur);
            let Some(pct) = prev.and_then(|p| error_pct(&p, &cur, cfg.min_packets)) else {
                continue;
            };
            let obs = Obs {
                kind: FaultKind::NicErrors,
                subject: &n.iface,
                source: "/proc/net/dev errs/packets",
                unit: "%",
                label: "errors per packet",
            };
            out.extend(engine.level(obs, pct, &levels, Severities::only(Severity::Minor), db));
        }
    }

    /// Feeds link states.
    pub fn feed_links(
        &mut self,
        engine: &mut Engine,
        cfg: &NicLinkConfig,
        links: &[Link],
        out: &mut Vec<FaultEvent>,
    ) {
        let db = Debounce {
            raise_after: cfg.raise_after,
            clear_after: cfg.clear_after,
            critical_after: 0,
        };
        for l in links {
            if is_ignored(&cfg.ignore_interfaces, &l.iface) {
                continue;
            }
            if l.carrier == Some(true) {
                self.had_carrier.insert(l.iface.clone());
            }
            if !self.had_carrier.contains(&l.iface) {
                continue;
            }
            let lost = l.admin_up && l.carrier == Some(false);
            let source = format!("/sys/class/net/{}/carrier", l.iface);
            let obs = Obs {
                kind: FaultKind::NicLinkLost,
                subject: &l.iface,
                source: &source,
                unit: "carrier",
                label: "carrier lost",
            };
            let v = if l.carrier == Some(true) { 1.0 } else { 0.0 };
            out.extend(engine.flag(obs, lost, Severity::Major, v, 1.0, db));
        }
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
                .join("fixtures")
                .join(name),
        )
    }

    #[test]
    fn parses_real_net_dev() {
        let v = read_net_dev(&fixture("nic_errors/workstation")).unwrap();
        let names: Vec<_> = v.iter().map(|n| n.iface.as_str()).collect();
        assert_eq!(
            names,
            ["lo", "enp3s0", "wlp2s0", "docker0"],
            "the garbage line is skipped"
        );
        assert_eq!(
            v[1].counters(),
            NicCounters {
                rx_packets: 8_123_456,
                rx_errs: 12,
                tx_packets: 4_567_890,
                tx_errs: 0
            }
        );
    }

    #[test]
    fn error_rate_per_interval() {
        let a = NicCounters {
            rx_packets: 1000,
            rx_errs: 0,
            tx_packets: 1000,
            tx_errs: 0,
        };
        let b = NicCounters {
            rx_packets: 1900,
            rx_errs: 20,
            tx_packets: 1100,
            tx_errs: 0,
        };
        assert_eq!(error_pct(&a, &b, 100), Some(2.0));
        assert_eq!(error_pct(&a, &a, 100), None, "no traffic, no rate");
        assert_eq!(error_pct(&b, &a, 100), None, "counter reset");
    }

    #[test]
    fn links_physical_only() {
        let v = read_links(&fixture("nic_link_lost/laptop")).unwrap();
        assert_eq!(
            v,
            [
                Link { iface: "enp0s31f6".into(), admin_up: true, carrier: Some(false) },
                Link { iface: "enp5s0".into(), admin_up: false, carrier: Some(false) },
                Link { iface: "wlp0s20f3".into(), admin_up: true, carrier: Some(true) },
            ],
            "lo, virbr0 and veth are virtual; enp5s0's carrier is unreadable (EINVAL), operstate says down"
        );
        assert!(read_links(&fixture("empty")).is_err());
    }
}
