//! The tray's loop and what each menu entry does: poll the agent's socket, update the
//! icon, announce what changed, and run the windows a menu entry asks for.
//!
//! Everything goes through the agent's local socket ([`vigia_agent::ipc`]), never to the
//! broker: the tray needs no credentials, and the agent names the reporter from the
//! socket's peer credentials, so the tray cannot report as anyone but its user.
use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ksni::TrayMethods;
use tokio::sync::mpsc;
use vigia_agent::ipc::{self, IpcError, Request, Response, StatusView};

use crate::dialog::{DialogError, Dialogs, ReportForm};
use crate::notify::{words, Notifier};
use crate::state::notices;
use crate::text::{agent_says, say, Lang, Msg, Say};
use crate::tray::{Action, VigiaTray};

/// Longest summary, details, contact and category the agent's wire carries (bytes), as
/// `vigia-agent report` checks them.
const LIMITS: [(&str, usize); 4] = [
    ("summary", 120),
    ("text", 2000),
    ("contact", 96),
    ("category", 32),
];

/// How the tray runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The agent's socket.
    pub socket: PathBuf,
    /// The language of everything shown.
    pub lang: Lang,
    /// How often the agent is asked for its status.
    pub interval: Duration,
    /// How long a report waits for its incident number.
    pub wait: Duration,
}

/// Why the tray stopped.
#[derive(Debug, thiserror::Error)]
pub enum TrayError {
    /// The item could not be put on the session bus.
    #[error("cannot show the tray icon: {0}")]
    Item(#[from] ksni::Error),
    /// No session bus to send notifications on.
    #[error("cannot reach the session bus: {0}")]
    Bus(#[from] zbus::Error),
}

/// The agent's status, or `None` while it does not answer.
async fn status(socket: &Path) -> Option<StatusView> {
    match ipc::request(socket, &Request::Status).await {
        Ok(Response::Status(v)) => Some(v),
        Ok(other) => {
            tracing::warn!(answer = ?other, "unexpected status answer");
            None
        }
        Err(e) => {
            tracing::debug!(error = %e, "agent status");
            None
        }
    }
}

/// Runs the tray until `shutdown` resolves.
pub async fn run(opts: Options, shutdown: impl Future<Output = ()>) -> Result<(), TrayError> {
    tokio::pin!(shutdown);
    let (act_tx, mut act_rx) = mpsc::unbounded_channel();
    let (shown_tx, mut shown_rx) = mpsc::unbounded_channel::<u64>();
    let notifier = Notifier::connect().await?;
    let handle = VigiaTray::new(opts.lang, act_tx)
        .assume_sni_available(true)
        .spawn()
        .await?;
    tracing::info!(socket = %opts.socket.display(), "tray started");
    let dialogs = Dialogs::find(opts.lang);
    let mut prev: Option<StatusView> = None;
    let mut shown = BTreeSet::new();
    let mut tick = tokio::time::interval(opts.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = tick.tick() => {
                let view = status(&opts.socket).await;
                if let Some(v) = &view {
                    for n in notices(prev.as_ref(), v, &shown) {
                        let w = words(opts.lang, &n);
                        match notifier.show(&w).await {
                            Ok(id) => tracing::info!(id, summary = %w.summary, "notified"),
                            Err(e) => tracing::warn!(error = %e, "cannot show a notification"),
                        }
                    }
                    // Kept while the agent is away, so its return is not news.
                    prev = Some(v.clone());
                }
                let health = crate::state::Health::of(view.as_ref());
                let changed = handle
                    .update(|t| {
                        let old = crate::state::Health::of(t.view.as_ref());
                        t.view = view;
                        old != health
                    })
                    .await;
                if changed == Some(true) {
                    tracing::info!(icon = health.icon(), "tray state changed");
                }
            }
            Some(a) = act_rx.recv() => {
                tracing::info!(action = ?a, "menu");
                let (socket, lang, wait) = (opts.socket.clone(), opts.lang, opts.wait);
                let (dialogs, notifier, shown_tx) = (dialogs.clone(), notifier.clone(), shown_tx.clone());
                tokio::spawn(async move {
                    let Some(d) = dialogs else {
                        let w = crate::notify::Shown {
                            summary: "Vigía".into(),
                            body: say(lang, Say::NoDialogTool).into(),
                            icon: "dialog-error",
                            critical: false,
                        };
                        let _ = notifier.show(&w).await;
                        return;
                    };
                    let done = match a {
                        Action::Report => report(&d, &socket, wait).await.map(|id| {
                            if let Some(id) = id {
                                let _ = shown_tx.send(id);
                            }
                        }),
                        Action::Mine => mine(&d, &socket).await,
                        Action::Answer => answer(&d, &socket).await,
                        Action::About => about(&d, &socket).await,
                    };
                    if let Err(e) = done {
                        tracing::warn!(error = %e, action = ?a, "dialog");
                    }
                });
            }
            Some(id) = shown_rx.recv() => {
                shown.insert(id);
                // The report changed the state: show it now, not at the next tick.
                tick.reset_immediately();
            }
        }
    }
    handle.shutdown().await;
    tracing::info!("tray stopped");
    Ok(())
}

/// The checks `vigia-agent report` makes, in the user's language.
pub fn check_form(lang: Lang, f: &ReportForm) -> Result<(), String> {
    if f.summary.trim().is_empty() {
        return Err(agent_says(lang, Msg::SummaryRequired).into());
    }
    let values = [
        f.summary.as_str(),
        f.text.as_str(),
        f.contact.as_str(),
        f.category,
    ];
    for ((field, max), value) in LIMITS.iter().zip(values) {
        if value.len() > *max {
            return Err(format!("{field} {} {max}", agent_says(lang, Msg::TooLong)));
        }
    }
    Ok(())
}

fn not_running(lang: Lang, e: &IpcError) -> String {
    match e {
        IpcError::NotRunning(_) => agent_says(lang, Msg::NotRunning).into(),
        other => other.to_string(),
    }
}

/// The report window: the form (again, while it is not valid), then the incident
/// number or what became of the report. Returns the report id when the user saw its
/// number here.
pub async fn report(
    d: &Dialogs,
    socket: &Path,
    wait: Duration,
) -> Result<Option<u64>, DialogError> {
    let lang = d.lang();
    let form = loop {
        let Some(f) = d.report_form().await? else {
            return Ok(None);
        };
        match check_form(lang, &f) {
            Ok(()) => break f,
            Err(why) => d.error(say(lang, Say::FormTitle), &why).await?,
        }
    };
    let req = Request::Report {
        category: form.category.into(),
        summary: form.summary,
        text: form.text,
        urgency: form.urgency,
        contact: form.contact,
        wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
    };
    let title = say(lang, Say::FormTitle);
    match ipc::request(socket, &req).await {
        Ok(Response::Reported {
            report_id,
            incident: Some(n),
            ..
        }) => {
            tracing::info!(report_id, incident = n, "report numbered");
            // The number is in the title too, so the window says it even folded.
            let title = format!("Vigía: {} {n}", say(lang, Say::IncidentWord));
            let text = format!("{} {n}", agent_says(lang, Msg::Incident));
            d.info(&title, &text).await?;
            Ok(Some(report_id))
        }
        Ok(Response::Reported { held: true, .. }) => {
            d.info(title, agent_says(lang, Msg::HeldInMemory)).await?;
            Ok(None)
        }
        Ok(Response::Reported { .. }) => {
            d.info(title, say(lang, Say::Queued)).await?;
            Ok(None)
        }
        Ok(Response::Error { message }) => {
            let text = format!("{}\n{message}", say(lang, Say::NotSent));
            d.error(title, &text).await?;
            Ok(None)
        }
        Ok(other) => {
            let text = format!("{}\n{other:?}", say(lang, Say::NotSent));
            d.error(title, &text).await?;
            Ok(None)
        }
        Err(e) => {
            d.error(title, &not_running(lang, &e)).await?;
            Ok(None)
        }
    }
}

/// The user's reports and IT's questions, as plain text.
pub fn mine_text(lang: Lang, v: &StatusView) -> String {
    let mut out = String::new();
    if v.reports.is_empty() {
        out.push_str(agent_says(lang, Msg::NoReports));
        out.push('\n');
    } else {
        out.push_str(agent_says(lang, Msg::Reports));
        out.push('\n');
        for r in v.reports.iter().rev() {
            let number = r.incident.map_or_else(
                || agent_says(lang, Msg::AwaitingIncident).to_owned(),
                |i| format!("#{i}"),
            );
            let state = r.state.as_deref().unwrap_or("");
            out.push_str(&format!("\n{number}  {state}\n  {}\n", r.summary));
            if let Some(n) = &r.note {
                out.push_str(&format!("  {n}\n"));
            }
        }
    }
    if !v.questions.is_empty() {
        out.push('\n');
        out.push_str(agent_says(lang, Msg::Questions));
        out.push('\n');
        for q in &v.questions {
            out.push_str(&format!("  #{}: {}\n", q.incident, q.question));
        }
    }
    crate::text::printable(&out)
}

async fn mine(d: &Dialogs, socket: &Path) -> Result<(), DialogError> {
    let lang = d.lang();
    let title = say(lang, Say::MineTitle);
    match ipc::request(socket, &Request::Status).await {
        Ok(Response::Status(v)) => d.text_view(title, &mine_text(lang, &v)).await,
        Ok(other) => d.error(title, &format!("{other:?}")).await,
        Err(e) => d.error(title, &not_running(lang, &e)).await,
    }
}

/// Asks each pending question in turn and sends the answers.
async fn answer(d: &Dialogs, socket: &Path) -> Result<(), DialogError> {
    let lang = d.lang();
    let title = say(lang, Say::AnswerTitle);
    let questions = match ipc::request(socket, &Request::Status).await {
        Ok(Response::Status(v)) => v.questions,
        Ok(other) => return d.error(title, &format!("{other:?}")).await,
        Err(e) => return d.error(title, &not_running(lang, &e)).await,
    };
    if questions.is_empty() {
        return d.info(title, say(lang, Say::NoQuestions)).await;
    }
    for q in questions {
        let prompt = format!(
            "{} {}:\n{}\n\n{}",
            say(lang, Say::NotifyAsked),
            q.incident,
            q.question,
            say(lang, Say::AnswerPrompt)
        );
        let Some(text) = d.entry(title, &prompt).await? else {
            return Ok(());
        };
        if text.trim().is_empty() {
            continue;
        }
        let req = Request::Reply {
            incident: q.incident,
            text,
        };
        match ipc::request(socket, &req).await {
            Ok(Response::Replied { .. }) => {
                tracing::info!(incident = q.incident, "reply sent");
                d.info(title, agent_says(lang, Msg::ReplySent)).await?;
            }
            Ok(Response::Error { message }) => d.error(title, &message).await?,
            Ok(other) => d.error(title, &format!("{other:?}")).await?,
            Err(e) => d.error(title, &not_running(lang, &e)).await?,
        }
    }
    Ok(())
}

async fn about(d: &Dialogs, socket: &Path) -> Result<(), DialogError> {
    let lang = d.lang();
    let mut text = format!(
        "Vigía {}\n\n{}\n",
        env!("CARGO_PKG_VERSION"),
        say(lang, Say::About)
    );
    match status(socket).await {
        Some(v) => {
            let link = if v.connected {
                agent_says(lang, Msg::Connected)
            } else {
                agent_says(lang, Msg::Disconnected)
            };
            text.push_str(&format!(
                "\n{} {}\n{link}",
                agent_says(lang, Msg::Device),
                v.device
            ));
        }
        None => text.push_str(&format!("\n{}", say(lang, Say::TipNoAgent))),
    }
    d.info(say(lang, Say::AboutTitle), &text).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vigia_agent::ipc::{Question, ReportView};
    use vigia_protocol::Urgency;

    #[test]
    fn the_form_is_checked_as_the_terminal_prompt_checks_it() {
        let mut f = ReportForm {
            category: "hardware",
            summary: " ".into(),
            text: String::new(),
            urgency: Urgency::Low,
            contact: String::new(),
        };
        assert_eq!(
            check_form(Lang::Es, &f).unwrap_err(),
            "El resumen es obligatorio."
        );
        f.summary = "x".repeat(121);
        assert!(check_form(Lang::En, &f)
            .unwrap_err()
            .starts_with("summary is too long"));
        f.summary = "Pantalla".into();
        assert!(check_form(Lang::En, &f).is_ok());
    }

    #[test]
    fn my_reports_show_numbers_states_notes_and_questions() {
        let v = StatusView {
            device: "ws-1".into(),
            connected: true,
            attempts: 0,
            last_error: None,
            enrolment: None,
            spooled: 0,
            held: 0,
            dropped_total: 0,
            open_faults: Vec::new(),
            reports: vec![ReportView {
                report_id: 1,
                reporter: "ana".into(),
                summary: "Pantalla".into(),
                ts: 1,
                incident: Some(12),
                state: Some("needs_info".into()),
                note: Some("vamos en camino".into()),
            }],
            questions: vec![Question {
                incident: 12,
                question: "¿Desde cuándo?\u{1b}[31m".into(),
            }],
        };
        let text = mine_text(Lang::Es, &v);
        assert!(
            text.contains("#12  needs_info\n  Pantalla\n  vamos en camino"),
            "{text}"
        );
        assert!(text.contains("#12: ¿Desde cuándo?[31m"), "{text}");
        assert!(!text.contains('\u{1b}'));
    }
}
