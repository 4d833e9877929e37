//! Devices' warranties (004 4.4: "en caso de garantías comunicarse con el proveedor"): set
//! by hand or imported from a CSV file, matched to devices by id or by the serial number
//! of their inventory (DMI). The workflow suggests the warranty provider for a provider
//! request while the warranty is in force.
//!
//! Import is two steps, both pure: [`parse_csv`] checks the whole file (a malformed row
//! refuses the file, every bad row named by its line), then [`match_rows`] finds each
//! row's device; rows that match no device (or several) are reported and skipped, the
//! others applied together.
use std::fmt;

use serde::{Deserialize, Serialize};
use vigia_protocol::time::{parse_instant, DAY};
use vigia_protocol::{DeviceId, Millis};

use crate::enroll::{header_columns, split_record, LineError};
use crate::store::{DeviceRecord, WarrantyRecord};

/// The columns a warranties file may have (a header line names them, in any order).
pub const COLUMNS: [&str; 5] = ["device", "serial", "vendor", "provider", "until"];

/// One checked row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Its line in the file.
    pub line: usize,
    /// The device's id, if given.
    pub device: Option<String>,
    /// The asset's serial number, if given.
    pub serial: Option<String>,
    /// Its vendor, checked against the inventory's when given.
    pub vendor: Option<String>,
    /// Who honours the warranty.
    pub provider: String,
    /// The last moment it covers (the end of the `until` day, UTC).
    pub until: Millis,
}

/// The end of `text`'s day (a date `2027-05-31` covers that whole day), or an instant.
pub fn parse_until(text: &str) -> Result<Millis, String> {
    let t = parse_instant(text)?;
    Ok(if text.trim().len() == 10 {
        t + DAY - 1
    } else {
        t
    })
}

/// Parses and checks a warranties file: a header naming the columns, then one warranty
/// per line; each row names a `device` or a `serial`, a `provider` and an `until` date.
pub fn parse_csv(text: &str) -> Result<Vec<Row>, Vec<LineError>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let err = |line, message: String| vec![LineError { line, message }];
    let Some((hl, header)) = records.next() else {
        return Err(err(
            1,
            format!(
                "the file is empty; its first line names the columns ({})",
                COLUMNS.join(",")
            ),
        ));
    };
    let names = split_record(header).map_err(|m| err(hl, m))?;
    let mut header_errors = Vec::new();
    let cols = header_columns(hl, &names, &COLUMNS, &mut header_errors);
    if let Some(first) = header_errors.into_iter().next() {
        return Err(vec![first]);
    }
    if cols[0] == usize::MAX && cols[1] == usize::MAX {
        return Err(err(hl, "name a device or a serial column".into()));
    }
    for (k, c) in [(3, "provider"), (4, "until")] {
        if cols[k] == usize::MAX {
            return Err(err(hl, format!("no {c} column")));
        }
    }
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for (line, rec) in records {
        let cells = match split_record(rec) {
            Ok(c) => c,
            Err(message) => {
                errors.push(LineError { line, message });
                continue;
            }
        };
        let cell = |k: usize| {
            cells
                .get(cols[k])
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let bad = |m: String| LineError { line, message: m };
        let (device, serial, vendor) = (cell(0), cell(1), cell(2));
        if let Some(d) = &device {
            if let Err(e) = DeviceId::new(d) {
                errors.push(bad(format!("device {d:?}: {e}")));
                continue;
            }
        }
        if device.is_none() && serial.is_none() {
            errors.push(bad("neither a device nor a serial".into()));
            continue;
        }
        let Some(provider) = cell(3) else {
            errors.push(bad("no provider".into()));
            continue;
        };
        if provider.chars().any(char::is_control) || provider.chars().count() > 120 {
            errors.push(bad(
                "the provider must be one line of at most 120 characters".into(),
            ));
            continue;
        }
        let until = match cell(4).map(|u| parse_until(&u)) {
            Some(Ok(u)) => u,
            Some(Err(e)) => {
                errors.push(bad(format!("until: {e}")));
                continue;
            }
            None => {
                errors.push(bad("no until date".into()));
                continue;
            }
        };
        rows.push(Row {
            line,
            device,
            serial,
            vendor,
            provider,
            until,
        });
    }
    if errors.is_empty() {
        Ok(rows)
    } else {
        Err(errors)
    }
}

/// A row that found its device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    /// Its line.
    pub line: usize,
    /// The device.
    pub device: DeviceId,
    /// The warranty.
    pub provider: String,
    /// Until.
    pub until: Millis,
}

/// A row that did not, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unmatched {
    /// Its line.
    pub line: usize,
    /// Why.
    pub reason: String,
}

impl fmt::Display for Unmatched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Finds each row's device among `devices`: by id when the row names one (its serial and
/// vendor, if given, must then agree with the inventory), else by the inventory's serial
/// (and vendor, if given), which must name exactly one device.
pub fn match_rows(rows: &[Row], devices: &[DeviceRecord]) -> (Vec<Matched>, Vec<Unmatched>) {
    let serial_of = |r: &DeviceRecord| {
        r.birth
            .as_ref()
            .and_then(|b| b.dmi.serial.as_deref().map(str::to_string))
    };
    let vendor_of = |r: &DeviceRecord| {
        r.birth
            .as_ref()
            .and_then(|b| b.dmi.vendor.as_deref().map(str::to_string))
    };
    let same = |a: &str, b: &str| a.trim().eq_ignore_ascii_case(b.trim());
    let (mut ok, mut no) = (Vec::new(), Vec::new());
    for row in rows {
        let mut miss = |reason: String| {
            no.push(Unmatched {
                line: row.line,
                reason,
            })
        };
        let found: Vec<&DeviceRecord> = match (&row.device, &row.serial) {
            (Some(id), _) => devices.iter().filter(|r| r.device.as_str() == id).collect(),
            (None, Some(s)) => devices
                .iter()
                .filter(|r| serial_of(r).is_some_and(|x| same(&x, s)))
                .collect(),
            (None, None) => Vec::new(),
        };
        let what = match (&row.device, &row.serial) {
            (Some(id), _) => format!("device {id:?}"),
            (None, Some(s)) => format!("serial {s:?}"),
            (None, None) => "the row".into(),
        };
        let rec = match found.as_slice() {
            [] => {
                miss(format!("no device matches {what}"));
                continue;
            }
            [one] => *one,
            many => {
                let ids: Vec<&str> = many.iter().map(|r| r.device.as_str()).collect();
                miss(format!(
                    "{what} matches several devices: {}",
                    ids.join(", ")
                ));
                continue;
            }
        };
        if let (Some(_), Some(s)) = (&row.device, &row.serial) {
            match serial_of(rec) {
                Some(x) if !same(&x, s) => {
                    miss(format!(
                        "{what} has serial {x:?} in its inventory, not {s:?}"
                    ));
                    continue;
                }
                _ => {}
            }
        }
        if let Some(v) = &row.vendor {
            match vendor_of(rec) {
                Some(x) if !same(&x, v) => {
                    miss(format!(
                        "{what} is made by {x:?} in its inventory, not {v:?}"
                    ));
                    continue;
                }
                _ => {}
            }
        }
        ok.push(Matched {
            line: row.line,
            device: rec.device.clone(),
            provider: row.provider.clone(),
            until: row.until,
        });
    }
    (ok, no)
}

/// A warranty as people see it: who, until when, and whether it is in force at `now`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarrantyView {
    /// Who honours it.
    pub provider: String,
    /// Until.
    pub until: Millis,
    /// Whether `until` is still ahead.
    pub in_force: bool,
    /// Set by whom.
    pub set_by: String,
    /// When.
    pub set_at: Millis,
}

impl WarrantyView {
    /// The view of `w` at `now`.
    pub fn of(w: &WarrantyRecord, now: Millis) -> Self {
        Self {
            provider: w.provider.clone(),
            until: w.until,
            in_force: w.until >= now,
            set_by: w.set_by.clone(),
            set_at: w.set_at,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vigia_protocol::{bounded, Birth, Dmi, VERSION};

    fn dev(id: &str, vendor: &str, serial: &str) -> DeviceRecord {
        let mut r = DeviceRecord::new(DeviceId::new(id).unwrap(), 1);
        r.birth = Some(Birth {
            v: VERSION,
            device: DeviceId::new(id).unwrap(),
            instance: 1,
            boot: 1,
            ts: 1,
            agent_version: bounded("0.1.0"),
            hostname: bounded(id),
            os: bounded("Debian"),
            os_version: bounded("12"),
            kernel: bounded("6.1"),
            arch: bounded("x86_64"),
            cpu_model: bounded("cpu"),
            cpu_cores: 2,
            ram_bytes: 1,
            dmi: Dmi {
                vendor: Some(bounded(vendor)),
                serial: (!serial.is_empty()).then(|| bounded(serial)),
                ..Dmi::default()
            },
            disks: Default::default(),
            nics: Default::default(),
            tags: Default::default(),
        });
        r
    }

    #[test]
    fn a_date_covers_its_whole_day() {
        let d = parse_until("2027-05-31").unwrap();
        assert_eq!(d % DAY, DAY - 1);
        assert_eq!(
            parse_until("2027-05-31T10:00:00Z").unwrap() % DAY,
            10 * 3_600_000
        );
        assert!(parse_until("31/05/2027").is_err());
    }

    #[test]
    fn a_malformed_file_is_refused_with_every_bad_line() {
        let e = parse_csv(
            "device,provider,until\nws-1,Dell,2027-01-01\nws 2,Dell,2027-01-01\nws-3,,2027-01-01\nws-4,HP,someday\n",
        )
        .unwrap_err();
        let lines: Vec<usize> = e.iter().map(|e| e.line).collect();
        assert_eq!(lines, [3, 4, 5], "{e:?}");
        assert!(e[2].message.contains("until"), "{e:?}");
        assert!(
            parse_csv("device,until\nws-1,2027-01-01\n").is_err(),
            "no provider column"
        );
        assert!(
            parse_csv("owner,provider,until\n").is_err(),
            "unknown column"
        );
        assert!(parse_csv("").is_err());
    }

    #[test]
    fn rows_find_their_device_by_id_or_serial_and_the_rest_are_reported() {
        let fleet = [
            dev("ws-1", "Dell Inc.", "SN-1"),
            dev("ws-2", "HP", "SN-2"),
            dev("ws-3", "HP", "SN-DUP"),
            dev("ws-4", "HP", "sn-dup"),
        ];
        let rows = parse_csv(
            "serial,device,vendor,provider,until\n\
             ,ws-1,,Dell ProSupport,2027-01-01\n\
             sn-2,,hp,HP Care,2026-01-01\n\
             SN-9,,,X,2027-01-01\n\
             SN-DUP,,,X,2027-01-01\n\
             SN-1,ws-2,,X,2027-01-01\n\
             SN-1,,Lenovo,X,2027-01-01\n\
             ,ws-9,,X,2027-01-01\n",
        )
        .unwrap();
        let (ok, no) = match_rows(&rows, &fleet);
        let got: Vec<(usize, &str, &str)> = ok
            .iter()
            .map(|m| (m.line, m.device.as_str(), m.provider.as_str()))
            .collect();
        assert_eq!(
            got,
            [(2, "ws-1", "Dell ProSupport"), (3, "ws-2", "HP Care")]
        );
        let why: Vec<String> = no.iter().map(ToString::to_string).collect();
        assert_eq!(why.len(), 5, "{why:?}");
        assert!(
            why[0].starts_with("line 4: no device matches serial \"SN-9\""),
            "{why:?}"
        );
        assert!(why[1].contains("several devices: ws-3, ws-4"), "{why:?}");
        assert!(why[2].contains("has serial \"SN-2\""), "{why:?}");
        assert!(why[3].contains("made by \"Dell Inc.\""), "{why:?}");
        assert!(
            why[4].contains("no device matches device \"ws-9\""),
            "{why:?}"
        );
    }
}
