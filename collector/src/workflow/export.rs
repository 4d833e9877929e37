//! The "Servicios soporte" record (004 activities 2 and 5): one row per attended service,
//! as CSV (RFC 4180) or JSON.
//!
//! Rows are a pure function of the incidents, so the export can never say something the
//! audit trail does not. A period selects incidents *opened* in `[from, to)`, which is how
//! the paper form was filed; an incident still open shows empty closing date and duration.
//! CSV cells that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, CR at the
//! start) get a leading `'`: the cost is a visible quote on text like "-5 °C", the gain is
//! that a user's report cannot execute in the coordinator's spreadsheet.
use serde::{Deserialize, Serialize};

use super::incident::Incident;
use super::time::{rfc3339, Dur, Millis};

/// One row of the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportRow {
    /// Date the request was registered (RFC 3339 UTC).
    pub date: String,
    /// Incident number.
    pub incident: u64,
    /// Device.
    pub device: String,
    /// Who asked: the reporter, or "agent" for detected faults.
    pub requester: String,
    /// Category (empty until diagnosed).
    pub category: String,
    /// Description.
    pub description: String,
    /// Priority (empty until diagnosed).
    pub priority: String,
    /// Level that worked it last.
    pub level: u8,
    /// Person assigned.
    pub assignee: String,
    /// Solution given.
    pub solution: String,
    /// Closing date (RFC 3339 UTC), empty while open.
    pub closing_date: String,
    /// Time from registration to closing ("2d3h"), empty while open.
    pub duration: String,
    /// Same, in milliseconds.
    pub duration_ms: Option<u64>,
    /// Current state.
    pub state: String,
    /// Why it closed, empty while open.
    pub closure_reason: String,
}

/// A period of registration dates, `[from, to)`; `None` is unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    /// First instant included.
    pub from: Option<Millis>,
    /// First instant excluded.
    pub to: Option<Millis>,
}

impl Period {
    /// Whether `t` is in the period.
    pub fn contains(&self, t: Millis) -> bool {
        self.from.is_none_or(|f| t >= f) && self.to.is_none_or(|e| t < e)
    }
}

/// The row of one incident.
pub fn row(inc: &Incident) -> ExportRow {
    let c = inc.classification.as_ref();
    let closed = inc.closure.as_ref();
    let duration_ms = closed.map(|c| c.at.saturating_sub(inc.opened_at));
    ExportRow {
        date: rfc3339(inc.opened_at),
        incident: inc.number,
        device: inc
            .device
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        requester: inc.origin.requester().to_owned(),
        category: c.map(|c| c.category.clone()).unwrap_or_default(),
        description: inc.origin.description(),
        priority: c.map(|c| c.priority.to_string()).unwrap_or_default(),
        level: inc.level.number(),
        assignee: inc.assignee.clone().unwrap_or_default(),
        solution: inc.solution.clone().unwrap_or_default(),
        closing_date: closed.map(|c| rfc3339(c.at)).unwrap_or_default(),
        duration: duration_ms.map(|d| Dur(d).to_string()).unwrap_or_default(),
        duration_ms,
        state: inc.state.as_str().to_owned(),
        closure_reason: closed
            .map(|c| c.reason.as_str().to_owned())
            .unwrap_or_default(),
    }
}

/// The rows of the incidents registered in `period`, oldest first.
pub fn rows<'a>(
    incidents: impl IntoIterator<Item = &'a Incident>,
    period: &Period,
) -> Vec<ExportRow> {
    let mut out: Vec<ExportRow> = incidents
        .into_iter()
        .filter(|i| period.contains(i.opened_at))
        .map(row)
        .collect();
    out.sort_by(|a, b| (&a.date, a.incident).cmp(&(&b.date, b.incident)));
    out
}

/// The CSV header.
pub const CSV_HEADER: [&str; 14] = [
    "date",
    "incident",
    "device",
    "requester",
    "category",
    "description",
    "priority",
    "level",
    "assignee",
    "solution",
    "closing_date",
    "duration",
    "state",
    "closure_reason",
];

/// One CSV cell, safe in any spreadsheet whatever separator it splits on: control
/// characters (terminal escapes included) become spaces, but for line breaks; a cell
/// holding a comma, semicolon, tab, pipe, quote or line break is quoted (quotes doubled),
/// so no importer splits it; and one a spreadsheet would read as a formula (its first
/// non-blank character `=`, `+`, `-` or `@`) starts with `'`.
pub fn csv_cell(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\r' {
                ' '
            } else {
                c
            }
        })
        .collect();
    let formula = clean
        .trim_start_matches([' ', '\r', '\n'])
        .starts_with(['=', '+', '-', '@']);
    let cell = if formula { format!("'{clean}") } else { clean };
    if cell.contains([',', ';', '\t', '|', '"', '\r', '\n']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell
    }
}

/// The rows as CSV with a header line, CRLF line ends (RFC 4180).
pub fn to_csv(rows: &[ExportRow]) -> String {
    let mut out = CSV_HEADER.join(",");
    out.push_str("\r\n");
    for r in rows {
        let level = r.level.to_string();
        let number = r.incident.to_string();
        let cells = [
            r.date.as_str(),
            &number,
            &r.device,
            &r.requester,
            &r.category,
            &r.description,
            &r.priority,
            &level,
            &r.assignee,
            &r.solution,
            &r.closing_date,
            &r.duration,
            &r.state,
            &r.closure_reason,
        ];
        let line: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

/// The rows as a JSON array.
pub fn to_json(rows: &[ExportRow]) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(rows)
}

/// One verification of a provider's service (003 item 5), as the seed's *acta* records
/// it: what was asked of whom and when, what the provider reported, and the verdict. A
/// request verified twice (rejected, then accepted) has one row per verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationRow {
    /// When it was verified (RFC 3339 UTC).
    pub verified_at: String,
    /// Incident number.
    pub incident: u64,
    /// Device.
    pub device: String,
    /// The provider.
    pub provider: String,
    /// `scheduled` or `unplanned`.
    pub kind: String,
    /// Priority asked of the provider.
    pub priority: String,
    /// Whether the work affected the network.
    pub affects_network: bool,
    /// When it was requested, and by whom.
    pub requested_at: String,
    /// Who requested it.
    pub requested_by: String,
    /// The agreed date and time.
    pub agreed_at: String,
    /// The agreed conditions.
    pub conditions: String,
    /// When the provider reported the work done, empty if it did not.
    pub reported_at: String,
    /// The provider's report.
    pub report: String,
    /// Who verified it.
    pub verified_by: String,
    /// `as_agreed` or `not_as_agreed`.
    pub verdict: String,
    /// What was found; the reason, when not as agreed.
    pub note: String,
    /// 1 for the first verification of the request, 2 after one rejection...
    pub attempt: usize,
}

/// The verifications made in `period`, oldest first.
pub fn verification_rows<'a>(
    incidents: impl IntoIterator<Item = &'a Incident>,
    period: &Period,
) -> Vec<VerificationRow> {
    let mut out = Vec::new();
    for inc in incidents {
        for r in &inc.provider_requests {
            let accepted = r.delivery.as_ref().map(|d| (d, r.done.as_ref()));
            let rejected = r
                .rejections
                .iter()
                .map(|x| (&x.verification, x.report.as_ref()));
            for (attempt, (v, report)) in rejected.chain(accepted).enumerate() {
                if !period.contains(v.verified_at) {
                    continue;
                }
                out.push(VerificationRow {
                    verified_at: rfc3339(v.verified_at),
                    incident: inc.number,
                    device: inc
                        .device
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    provider: r.provider.clone(),
                    kind: match r.kind {
                        super::ServiceKind::Scheduled => "scheduled",
                        super::ServiceKind::Unplanned => "unplanned",
                    }
                    .to_owned(),
                    priority: r.priority.to_string(),
                    affects_network: r.affects_network,
                    requested_at: rfc3339(r.requested_at),
                    requested_by: r.requested_by.clone(),
                    agreed_at: rfc3339(r.agreed_at),
                    conditions: r.conditions.clone(),
                    reported_at: report.map(|s| rfc3339(s.at)).unwrap_or_default(),
                    report: report.map(|s| s.note.clone()).unwrap_or_default(),
                    verified_by: v.verified_by.clone(),
                    verdict: if v.as_agreed {
                        "as_agreed"
                    } else {
                        "not_as_agreed"
                    }
                    .to_owned(),
                    note: v.note.clone(),
                    attempt: attempt + 1,
                });
            }
        }
    }
    out.sort_by(|a, b| (&a.verified_at, a.incident).cmp(&(&b.verified_at, b.incident)));
    out
}

/// The verifications' CSV header.
pub const VERIFICATION_HEADER: [&str; 17] = [
    "verified_at",
    "incident",
    "device",
    "provider",
    "kind",
    "priority",
    "affects_network",
    "requested_at",
    "requested_by",
    "agreed_at",
    "conditions",
    "reported_at",
    "report",
    "verified_by",
    "verdict",
    "note",
    "attempt",
];

/// The verifications as CSV, like [`to_csv`].
pub fn verifications_csv(rows: &[VerificationRow]) -> String {
    let mut out = VERIFICATION_HEADER.join(",");
    out.push_str("\r\n");
    for r in rows {
        let (number, attempt) = (r.incident.to_string(), r.attempt.to_string());
        let network = if r.affects_network { "yes" } else { "no" };
        let cells = [
            r.verified_at.as_str(),
            &number,
            &r.device,
            &r.provider,
            &r.kind,
            &r.priority,
            network,
            &r.requested_at,
            &r.requested_by,
            &r.agreed_at,
            &r.conditions,
            &r.reported_at,
            &r.report,
            &r.verified_by,
            &r.verdict,
            &r.note,
            &attempt,
        ];
        let line: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_per_rfc4180() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_cell("cr\rhere"), "\"cr\rhere\"");
        assert_eq!(csv_cell(""), "");
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_cell("@sum"), "'@sum");
        // Whatever the separator a spreadsheet splits on, no part starts a formula.
        assert_eq!(
            csv_cell("ok;=cmd|' /C calc'!A0"),
            "\"ok;=cmd|' /C calc'!A0\""
        );
        assert_eq!(csv_cell("  =1+1"), "'  =1+1");
        assert_eq!(csv_cell("\n-2"), "\"'\n-2\"");
        // Terminal escapes and other control characters do not survive.
        assert_eq!(csv_cell("\u{1b}[31mred\u{7}"), " [31mred ");
        assert_eq!(csv_cell("a\tb"), "a b");
    }

    #[test]
    fn csv_rows_parse_back_to_the_same_cells() {
        let r = ExportRow {
            date: "2026-11-22T02:45:00Z".into(),
            incident: 7,
            device: "ws-1".into(),
            requester: "Ana, \"la jefa\"".into(),
            category: "network".into(),
            description: "no hay red\r\nen el piso 3".into(),
            priority: "P2".into(),
            level: 2,
            assignee: String::new(),
            solution: "cambiar, cable".into(),
            closing_date: String::new(),
            duration: String::new(),
            duration_ms: None,
            state: "level2".into(),
            closure_reason: String::new(),
        };
        let csv = to_csv(std::slice::from_ref(&r));
        // A small RFC 4180 reader: enough to prove the quoting round-trips.
        let mut records = vec![vec![String::new()]];
        let mut chars = csv.chars().peekable();
        let mut quoted = false;
        while let Some(c) = chars.next() {
            let rec = records.last_mut().unwrap();
            match (quoted, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    rec.last_mut().unwrap().push('"');
                }
                (true, '"') => quoted = false,
                (true, c) => rec.last_mut().unwrap().push(c),
                (false, '"') => quoted = true,
                (false, ',') => rec.push(String::new()),
                (false, '\r') => {
                    assert_eq!(chars.next(), Some('\n'));
                    records.push(vec![String::new()]);
                }
                (false, c) => rec.last_mut().unwrap().push(c),
            }
        }
        records.pop(); // after the final CRLF
        assert_eq!(records.len(), 2);
        assert_eq!(records[0], CSV_HEADER.map(String::from).to_vec());
        assert_eq!(records[1][3], r.requester);
        assert_eq!(records[1][5], r.description);
        assert_eq!(records[1][9], r.solution);
        assert_eq!(records[1].len(), CSV_HEADER.len());
    }

    #[test]
    fn period_is_half_open() {
        let p = Period {
            from: Some(10),
            to: Some(20),
        };
        assert!(!p.contains(9));
        assert!(p.contains(10));
        assert!(p.contains(19));
        assert!(!p.contains(20));
        assert!(Period::default().contains(0));
    }
}
