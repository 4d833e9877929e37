//! Text rendering of the API's answers: aligned tables and the incident sheet.
use serde_json::Value;

use crate::http::DeviceSummary;
use crate::workflow::{self, IncidentSummary};

/// `s` made harmless for a terminal: control characters (escape sequences, bells,
/// carriage returns that overwrite a line) and the bidirectional overrides that reorder
/// what is shown become `�`; line breaks (a CSV file's CRLF too: a carriage return just
/// before a line feed overwrites nothing) and tabs stay. Everything a device or a person
/// typed goes through this before it is printed.
pub fn terminal_safe(s: &str) -> String {
    let mut chars = s.chars().peekable();
    let mut out = String::with_capacity(s.len());
    while let Some(c) = chars.next() {
        let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        let line_end = c == '\r' && chars.peek() == Some(&'\n');
        if (c.is_control() && c != '\n' && c != '\t' && !line_end) || bidi {
            out.push('\u{fffd}');
        } else {
            out.push(c);
        }
    }
    out
}

/// Prints `s` through [`terminal_safe`].
pub(super) fn out(s: &str) {
    print!("{}", terminal_safe(s));
}

pub(super) fn ago(now: u64, then: u64) -> String {
    if then == 0 {
        return "-".into();
    }
    let s = now.saturating_sub(then) / 1000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86_399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

pub(super) fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(n.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// Renders rows as left-aligned columns.
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(w - c.chars().count() + 2));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

pub(super) fn incidents_table(list: &[IncidentSummary], now: u64) -> String {
    if list.is_empty() {
        return "no incidents\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|i| {
            vec![
                i.number.to_string(),
                i.state.as_str().to_string(),
                format!("L{}", i.level),
                i.priority.map_or("-".into(), |p| p.to_string()),
                i.assignee.clone().unwrap_or_else(|| "-".into()),
                i.severity.map_or("-".into(), |s| s.as_str().to_string()),
                i.device.as_ref().map_or("-".into(), ToString::to_string),
                clip(&format!("{} {}", i.kind, i.subject), 32),
                i.occurrences.to_string(),
                ago(now, i.updated_at),
                clip(&i.title, 50),
            ]
        })
        .collect();
    table(
        &[
            "#", "STATE", "LEVEL", "PRIO", "ASSIGNEE", "SEVERITY", "DEVICE", "WHAT", "SEEN",
            "UPDATED", "TITLE",
        ],
        &rows,
    )
}

pub(super) fn devices_table(list: &[DeviceSummary], now: u64) -> String {
    if list.is_empty() {
        return "no devices\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|d| {
            vec![
                d.device.to_string(),
                if d.online { "online" } else { "offline" }.to_string(),
                ago(now, d.last_seen),
                d.hostname.clone().unwrap_or_else(|| "-".into()),
                clip(d.os.as_deref().unwrap_or("-"), 28),
                clip(d.model.as_deref().unwrap_or("-"), 28),
                d.agent_version.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &[
            "DEVICE",
            "STATUS",
            "LAST SEEN",
            "HOST",
            "OS",
            "MODEL",
            "AGENT",
        ],
        &rows,
    )
}

pub(super) fn when(v: &Value) -> String {
    v.as_u64().map_or_else(|| "-".into(), workflow::rfc3339)
}

/// The record's information classification, in the procedures' words, and what of it
/// the server hid from this reader.
fn reserve_text(v: &Value) -> String {
    let r = &v["reserve"];
    let mut out = match r["level"].as_str() {
        Some(level) => {
            let spanish = match level {
                "reserved" => "reservada",
                "classified" => "clasificada",
                _ => "",
            };
            let fields: Vec<&str> = r["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let lapsed = v["information"] == "public";
            format!(
                "information: {level} ({spanish}){} for {} year(s) from {} until {}{}; set by {}: {}\n",
                if r["partial"] == true {
                    format!(", partial: {}", fields.join(", "))
                } else {
                    String::new()
                },
                r["years"],
                when(&r["since"]),
                when(&r["until"]),
                if lapsed { " (lapsed: public now)" } else { "" },
                r["by"].as_str().unwrap_or("-"),
                r["justification"].as_str().unwrap_or(""),
            )
        }
        None => "information: public (sin reserva)\n".to_owned(),
    };
    let hidden: Vec<&str> = v["hidden"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !hidden.is_empty() {
        out.push_str(&format!(
            "reserved, not shown to you: {} (they read {})\n",
            hidden.join(", "),
            workflow::RESERVED
        ));
    }
    out
}

pub(super) fn incident_text(v: &Value) -> String {
    let s = |k: &str| match &v[k] {
        Value::String(x) => x.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    let mut out = format!(
        "incident {}  [{}]  level {}  priority {}  {}\ndevice: {}  assignee: {}  group: {}\n",
        v["number"],
        s("state"),
        s("level"),
        s("priority"),
        s("title"),
        s("device"),
        s("assignee"),
        s("group"),
    );
    let o = &v["origin"];
    match o["type"].as_str() {
        Some("fault") => out.push_str(&format!(
            "fault: {} on {}  severity: {}  occurrences: {}  active: {}{}\n",
            o["kind"].as_str().unwrap_or("-"),
            o["subject"].as_str().unwrap_or("-"),
            s("severity"),
            v["occurrences"],
            v["fault_active"],
            if v["flapping"] == true {
                "  FLAPPING"
            } else {
                ""
            },
        )),
        Some("report") => out.push_str(&format!(
            "report by {} ({}), urgency {}, category {}\n{}\n",
            o["reporter"].as_str().unwrap_or("-"),
            o["contact"].as_str().unwrap_or("-"),
            o["urgency"].as_str().unwrap_or("-"),
            o["category"].as_str().unwrap_or("-"),
            o["text"].as_str().unwrap_or("")
        )),
        _ => {}
    }
    let c = &v["classification"];
    if c.is_object() {
        out.push_str(&format!(
            "classified: {} impact {} urgency {} -> {}, level {}, group {} (rule {})\n",
            c["category"].as_str().unwrap_or("-"),
            c["impact"].as_str().unwrap_or("-"),
            c["urgency"].as_str().unwrap_or("-"),
            c["priority"].as_str().unwrap_or("-"),
            c["level"],
            c["group"].as_str().unwrap_or("-"),
            c["rule"].as_str().unwrap_or("-"),
        ));
    }
    out.push_str(&format!(
        "opened {}  next timer {}\n",
        when(&v["opened_at"]),
        when(&v["next_deadline"])
    ));
    out.push_str(&reserve_text(v));
    if let Some(sol) = v["solution"].as_str() {
        out.push_str(&format!("solution: {sol}\n"));
    }
    out.push_str("audit trail:\n");
    for r in v["audit"].as_array().into_iter().flatten() {
        let actor = match r["actor"]["type"].as_str() {
            Some("person") => r["actor"]["name"].as_str().unwrap_or("-").to_string(),
            Some("device") => format!("device {}", r["actor"]["device"].as_str().unwrap_or("-")),
            _ => "system".to_string(),
        };
        let (from, to) = (
            r["from"].as_str().unwrap_or("-"),
            r["to"].as_str().unwrap_or("-"),
        );
        let arrow = if from == to {
            from.to_string()
        } else {
            format!("{from} -> {to}")
        };
        out.push_str(&format!(
            "  {}  {:<14} {:<16} {:<30} {}\n",
            when(&r["at"]),
            clip(&actor, 14),
            r["action"].as_str().unwrap_or("-"),
            arrow,
            r["why"].as_str().unwrap_or("")
        ));
    }
    for n in v["notes"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "note from {} at {}: {}\n",
            n["author"].as_str().unwrap_or("-"),
            when(&n["at"]),
            n["text"].as_str().unwrap_or("")
        ));
    }
    let sent: Vec<_> = v["notifications"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    if !sent.is_empty() {
        out.push_str("notifications:\n");
    }
    for n in sent {
        for d in n["deliveries"].as_array().into_iter().flatten() {
            let state = d["state"].as_str().unwrap_or("-");
            let at = if state == "pending" {
                format!("next try {}", when(&d["next_at"]))
            } else if state == "held" {
                format!("in the digest of {}", when(&d["next_at"]))
            } else if state == "digested" {
                format!("digest {} at {}", d["digest"], when(&d["done_at"]))
            } else {
                when(&d["done_at"])
            };
            out.push_str(&format!(
                "  {}  {:<16} {:<8} {:<30} {:<8} {} attempt(s)  {}\n",
                when(&n["at"]),
                n["event"].as_str().unwrap_or("-"),
                d["channel"].as_str().unwrap_or("-"),
                clip(d["to"].as_str().unwrap_or("-"), 30),
                state,
                d["attempts"],
                if d["error"].is_string() {
                    format!("{at}: {}", d["error"].as_str().unwrap_or(""))
                } else {
                    at
                }
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::terminal_safe;

    #[test]
    fn escapes_and_overrides_never_reach_the_terminal() {
        assert_eq!(terminal_safe("ok\n\tline"), "ok\n\tline");
        assert_eq!(
            terminal_safe("\u{1b}]0;pwned\u{7}x"),
            "\u{fffd}]0;pwned\u{fffd}x"
        );
        assert_eq!(terminal_safe("a\rb"), "a\u{fffd}b");
        assert_eq!(terminal_safe("a,b\r\nc\r"), "a,b\r\nc\u{fffd}");
        assert_eq!(terminal_safe("\u{9b}31m"), "\u{fffd}31m");
        assert_eq!(terminal_safe("abc\u{202e}fed"), "abc\u{fffd}fed");
    }
}
