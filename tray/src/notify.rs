//! Desktop notifications through `org.freedesktop.Notifications` on the session bus,
//! the one interface every desktop's notification daemon serves.
//!
//! The summary is plain text by the specification; the body may be read as markup,
//! so it is escaped when (and only when) the server says it reads markup: escaping for
//! a server that does not would show `&amp;` to the user.
use std::collections::HashMap;

use zbus::zvariant::Value;

use crate::state::Notice;
use crate::text::{markup, printable, say, Lang, Say};

#[zbus::proxy(
    interface = "org.freedesktop.Notifications",
    default_service = "org.freedesktop.Notifications",
    default_path = "/org/freedesktop/Notifications"
)]
trait Notifications {
    /// Shows a notification; returns its id.
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app_name: &str,
        replaces_id: u32,
        app_icon: &str,
        summary: &str,
        body: &str,
        actions: &[&str],
        hints: HashMap<&str, Value<'_>>,
        expire_timeout: i32,
    ) -> zbus::Result<u32>;

    /// What the server supports (`body`, `body-markup`...).
    fn get_capabilities(&self) -> zbus::Result<Vec<String>>;
}

/// A notification as the user will read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    /// The one-line summary (plain text).
    pub summary: String,
    /// The body, as plain text (escaped on sending when the server reads markup).
    pub body: String,
    /// A freedesktop icon name.
    pub icon: &'static str,
    /// Whether it should stay until the user sees it (a question from IT).
    pub critical: bool,
}

/// The words of `n` in `lang`.
pub fn words(lang: Lang, n: &Notice) -> Shown {
    match n {
        Notice::Numbered { incident, summary } => Shown {
            summary: format!("{} {incident}", say(lang, Say::NotifyNumbered)),
            body: printable(summary),
            icon: "dialog-information",
            critical: false,
        },
        Notice::Asked { incident, question } => Shown {
            summary: format!("{} {incident}", say(lang, Say::NotifyAsked)),
            body: printable(question),
            icon: "dialog-question",
            critical: true,
        },
        Notice::Resolved {
            incident,
            summary,
            note,
        } => Shown {
            summary: format!("{} {incident}", say(lang, Say::NotifyResolved)),
            body: printable(note.as_deref().unwrap_or(summary)),
            icon: "emblem-default",
            critical: false,
        },
    }
}

/// Sends notifications on the session bus.
#[derive(Debug, Clone)]
pub struct Notifier {
    conn: zbus::Connection,
}

impl Notifier {
    /// Connects to the session bus (`DBUS_SESSION_BUS_ADDRESS`).
    pub async fn connect() -> zbus::Result<Self> {
        Ok(Self {
            conn: zbus::Connection::session().await?,
        })
    }

    /// Shows `n`; returns the server's id for it.
    pub async fn show(&self, n: &Shown) -> zbus::Result<u32> {
        let proxy = NotificationsProxy::new(&self.conn).await?;
        // Asked each time: the daemon may be replaced while the tray runs.
        let reads_markup = proxy
            .get_capabilities()
            .await?
            .iter()
            .any(|c| c == "body-markup");
        let body = if reads_markup {
            markup(&n.body)
        } else {
            n.body.clone()
        };
        let mut hints = HashMap::new();
        hints.insert("urgency", Value::U8(if n.critical { 2 } else { 1 }));
        hints.insert("desktop-entry", Value::from("vigia-tray"));
        proxy
            .notify(
                "Vigía",
                0,
                n.icon,
                &printable(&n.summary),
                &body,
                &[],
                hints,
                -1,
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_notice_names_its_incident_in_the_summary() {
        let asked = words(
            Lang::Es,
            &Notice::Asked {
                incident: 7,
                question: "¿Desde cuándo?\u{1b}[2J".into(),
            },
        );
        assert_eq!(asked.summary, "Soporte pregunta sobre el incidente 7");
        assert_eq!(asked.body, "¿Desde cuándo?[2J");
        assert!(asked.critical);
        let done = words(
            Lang::En,
            &Notice::Resolved {
                incident: 8,
                summary: "screen".into(),
                note: None,
            },
        );
        assert_eq!(done.summary, "Resolved: incident 8");
        assert_eq!(done.body, "screen");
    }
}
