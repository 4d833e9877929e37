//! What the icon shows and what deserves a notification, decided from the agent's
//! `status` answers alone: no I/O here, so every rule is tested with plain values.
//!
//! The agent's socket answers requests and pushes nothing, so the tray polls it and
//! compares each answer with the previous one. The trade-off: a change shows within
//! one poll interval (a few seconds), and the agent gains no subscription protocol.
use std::collections::BTreeSet;

use vigia_agent::ipc::StatusView;

/// The four faces of the icon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Connected, no fault, no question.
    Fine,
    /// The agent sees a fault on this computer.
    Fault,
    /// IT asked the user something that is not answered yet.
    Question,
    /// The agent is not running, or not connected to the server.
    NotConnected,
}

impl Health {
    /// From the last status answer; `None` when the agent did not answer. What the user
    /// must act on comes first: a question, then a fault, then the connection.
    pub fn of(view: Option<&StatusView>) -> Self {
        match view {
            None => Self::NotConnected,
            Some(v) if !v.questions.is_empty() => Self::Question,
            Some(v) if !v.open_faults.is_empty() => Self::Fault,
            Some(v) if !v.connected => Self::NotConnected,
            Some(_) => Self::Fine,
        }
    }

    /// A freedesktop icon name every desktop theme has.
    pub fn icon(self) -> &'static str {
        match self {
            Self::Fine => "security-high",
            Self::Fault => "dialog-warning",
            Self::Question => "dialog-question",
            Self::NotConnected => "network-offline",
        }
    }

    /// Whether the item asks for attention (the host may show it more prominently).
    pub fn needs_attention(self) -> bool {
        matches!(self, Self::Fault | Self::Question)
    }
}

/// Something the desktop should announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The collector gave one of the user's reports its incident number.
    Numbered {
        /// The incident.
        incident: u64,
        /// The report's summary.
        summary: String,
    },
    /// IT asked a question about one of the user's incidents.
    Asked {
        /// The incident.
        incident: u64,
        /// The question.
        question: String,
    },
    /// One of the user's incidents was resolved (or closed).
    Resolved {
        /// The incident.
        incident: u64,
        /// The report's summary.
        summary: String,
        /// IT's note, when there is one.
        note: Option<String>,
    },
}

fn is_done(state: Option<&str>) -> bool {
    matches!(state, Some("resolved" | "closed"))
}

/// What changed between the previous answer `prev` (`None`: this is the first since the
/// tray started) and `next`. At start only pending questions are announced (a user who
/// logs in must learn that IT is waiting for them); numbers and resolutions are news only
/// against an earlier answer. `shown` holds the report ids whose number the user already
/// saw in the report window, so they are not announced twice.
pub fn notices(prev: Option<&StatusView>, next: &StatusView, shown: &BTreeSet<u64>) -> Vec<Notice> {
    let mut out = Vec::new();
    if let Some(prev) = prev {
        for r in &next.reports {
            let before = prev.reports.iter().find(|p| p.report_id == r.report_id);
            if let Some(n) = r.incident {
                if before.is_none_or(|p| p.incident.is_none()) && !shown.contains(&r.report_id) {
                    out.push(Notice::Numbered {
                        incident: n,
                        summary: r.summary.clone(),
                    });
                }
                if let Some(p) = before {
                    if is_done(r.state.as_deref()) && !is_done(p.state.as_deref()) {
                        out.push(Notice::Resolved {
                            incident: n,
                            summary: r.summary.clone(),
                            note: r.note.clone(),
                        });
                    }
                }
            }
        }
    }
    for q in &next.questions {
        let known = prev.is_some_and(|p| p.questions.iter().any(|o| o == q));
        if !known {
            out.push(Notice::Asked {
                incident: q.incident,
                question: q.question.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vigia_agent::ipc::{Question, ReportView};

    fn view() -> StatusView {
        StatusView {
            device: "ws-1".into(),
            connected: true,
            attempts: 0,
            last_error: None,
            enrolment: None,
            spooled: 0,
            held: 0,
            dropped_total: 0,
            open_faults: Vec::new(),
            reports: Vec::new(),
            questions: Vec::new(),
        }
    }

    fn report(id: u64, incident: Option<u64>, state: Option<&str>) -> ReportView {
        ReportView {
            report_id: id,
            reporter: "ana".into(),
            summary: format!("report {id}"),
            ts: 1,
            incident,
            state: state.map(str::to_owned),
            note: None,
        }
    }

    fn fault() -> vigia_protocol::OpenFault {
        serde_json::from_value(serde_json::json!({
            "kind": "disk_space", "subject": "/var", "severity": "major"
        }))
        .unwrap()
    }

    #[test]
    fn the_icon_puts_what_the_user_must_act_on_first() {
        assert_eq!(Health::of(None), Health::NotConnected);
        let mut v = view();
        assert_eq!(Health::of(Some(&v)), Health::Fine);
        v.connected = false;
        assert_eq!(Health::of(Some(&v)), Health::NotConnected);
        v.open_faults.push(fault());
        assert_eq!(Health::of(Some(&v)), Health::Fault);
        v.questions.push(Question {
            incident: 3,
            question: "?".into(),
        });
        assert_eq!(Health::of(Some(&v)), Health::Question);
        let icons: BTreeSet<_> = [
            Health::Fine,
            Health::Fault,
            Health::Question,
            Health::NotConnected,
        ]
        .map(Health::icon)
        .into();
        assert_eq!(icons.len(), 4, "each state has its own icon");
    }

    #[test]
    fn a_number_is_news_once_and_not_when_the_window_showed_it() {
        let mut before = view();
        before.reports = vec![report(1, None, None), report(2, None, None)];
        let mut after = before.clone();
        after.reports = vec![report(1, Some(10), None), report(2, Some(11), None)];
        let shown = BTreeSet::from([2]);
        assert_eq!(
            notices(Some(&before), &after, &shown),
            [Notice::Numbered {
                incident: 10,
                summary: "report 1".into()
            }]
        );
        assert!(notices(Some(&after), &after, &shown).is_empty());
        // At start, numbers already known are not news.
        assert!(notices(None, &after, &BTreeSet::new()).is_empty());
    }

    #[test]
    fn questions_are_news_at_start_and_when_new() {
        let mut v = view();
        v.questions.push(Question {
            incident: 4,
            question: "¿Desde cuándo?".into(),
        });
        let asked = Notice::Asked {
            incident: 4,
            question: "¿Desde cuándo?".into(),
        };
        assert_eq!(notices(None, &v, &BTreeSet::new()), [asked]);
        assert!(notices(Some(&v), &v, &BTreeSet::new()).is_empty());
        let mut again = v.clone();
        again.questions[0].question = "¿Y ahora?".into();
        assert_eq!(notices(Some(&v), &again, &BTreeSet::new()).len(), 1);
    }

    #[test]
    fn resolution_is_news_once() {
        let mut before = view();
        before.reports = vec![report(1, Some(10), Some("in_progress"))];
        let mut after = before.clone();
        after.reports[0].state = Some("resolved".into());
        after.reports[0].note = Some("cable cambiado".into());
        assert_eq!(
            notices(Some(&before), &after, &BTreeSet::new()),
            [Notice::Resolved {
                incident: 10,
                summary: "report 1".into(),
                note: Some("cable cambiado".into())
            }]
        );
        let mut closed = after.clone();
        closed.reports[0].state = Some("closed".into());
        assert!(notices(Some(&after), &closed, &BTreeSet::new()).is_empty());
    }
}
