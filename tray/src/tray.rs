//! The StatusNotifierItem (KDE, XFCE, Cinnamon, MATE, GNOME with the AppIndicator
//! extension), served by `ksni` over a pure-Rust D-Bus: no GTK or Qt in the tray.
//!
//! The item only describes: its icon and tooltip come from the last status answer, and a
//! menu entry only sends an [`Action`] to the loop in [`crate::app`], because ksni calls
//! it with the item locked and a dialog takes as long as the user does.
use ksni::menu::{MenuItem, StandardItem};
use ksni::{Status, ToolTip};
use tokio::sync::mpsc::UnboundedSender;
use vigia_agent::ipc::StatusView;

use crate::state::Health;
use crate::text::{say, Lang, Say};

/// What the user asked for from the menu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Open the report form.
    Report,
    /// Show the user's reports.
    Mine,
    /// Answer IT's question.
    Answer,
    /// About Vigía.
    About,
}

/// The tray item's state.
#[derive(Debug)]
pub struct VigiaTray {
    lang: Lang,
    /// The agent's last answer; `None` while it does not answer.
    pub view: Option<StatusView>,
    actions: UnboundedSender<Action>,
}

impl VigiaTray {
    /// An item speaking `lang` that sends menu choices to `actions`.
    pub fn new(lang: Lang, actions: UnboundedSender<Action>) -> Self {
        Self {
            lang,
            view: None,
            actions,
        }
    }

    fn health(&self) -> Health {
        Health::of(self.view.as_ref())
    }

    /// The tooltip's text.
    pub fn tip(&self) -> String {
        let Some(v) = &self.view else {
            return say(self.lang, Say::TipNoAgent).to_owned();
        };
        match self.health() {
            Health::Fine => say(self.lang, Say::TipFine).to_owned(),
            Health::Fault => {
                let faults: Vec<String> = v
                    .open_faults
                    .iter()
                    .map(|f| format!("{} {}", f.kind.as_str(), f.subject))
                    .collect();
                format!("{} ({})", say(self.lang, Say::TipFault), faults.join(", "))
            }
            Health::Question => say(self.lang, Say::TipQuestion).to_owned(),
            Health::NotConnected => say(self.lang, Say::TipOffline).to_owned(),
        }
    }

    fn item(&self, label: Say, icon: &str, enabled: bool, action: Action) -> MenuItem<Self> {
        StandardItem {
            label: say(self.lang, label).into(),
            icon_name: icon.into(),
            enabled,
            activate: Box::new(move |t: &mut Self| {
                // The loop is gone only while the tray shuts down.
                let _ = t.actions.send(action);
            }),
            ..Default::default()
        }
        .into()
    }
}

impl ksni::Tray for VigiaTray {
    // A left click opens the menu too: the item has no single obvious action.
    const MENU_ON_ACTIVATE: bool = true;

    fn id(&self) -> String {
        "vigia-tray".into()
    }

    fn title(&self) -> String {
        "Vigía".into()
    }

    fn icon_name(&self) -> String {
        self.health().icon().into()
    }

    fn attention_icon_name(&self) -> String {
        self.health().icon().into()
    }

    fn status(&self) -> Status {
        if self.health().needs_attention() {
            Status::NeedsAttention
        } else {
            Status::Active
        }
    }

    fn tool_tip(&self) -> ToolTip {
        ToolTip {
            icon_name: self.health().icon().into(),
            icon_pixmap: Vec::new(),
            title: "Vigía".into(),
            description: crate::text::markup(&self.tip()),
        }
    }

    fn menu(&self) -> Vec<MenuItem<Self>> {
        let questions = self.view.as_ref().is_some_and(|v| !v.questions.is_empty());
        vec![
            self.item(Say::MenuReport, "document-new", true, Action::Report),
            self.item(Say::MenuMine, "view-list", true, Action::Mine),
            self.item(
                Say::MenuAnswer,
                "dialog-question",
                questions,
                Action::Answer,
            ),
            MenuItem::Separator,
            self.item(Say::MenuAbout, "help-about", true, Action::About),
        ]
    }

    fn watcher_offline(&self, reason: ksni::OfflineReason) -> bool {
        // No tray host yet (the session is still starting, or GNOME without the
        // extension): keep running; ksni registers again when a watcher appears.
        tracing::info!(
            ?reason,
            "no StatusNotifierWatcher on the session bus; waiting for one"
        );
        true
    }

    fn watcher_online(&self) {
        tracing::info!("StatusNotifierWatcher appeared; item registered");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ksni::Tray;

    fn tray() -> (VigiaTray, tokio::sync::mpsc::UnboundedReceiver<Action>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (VigiaTray::new(Lang::En, tx), rx)
    }

    #[test]
    fn the_menu_sends_its_action_and_answering_needs_a_question() {
        let (mut t, mut rx) = tray();
        let menu = t.menu();
        let labels: Vec<(String, bool)> = menu
            .iter()
            .filter_map(|m| match m {
                MenuItem::Standard(s) => Some((s.label.clone(), s.enabled)),
                _ => None,
            })
            .collect();
        assert_eq!(
            labels,
            [
                ("Report a problem…".to_string(), true),
                ("My reports".to_string(), true),
                ("Answer IT's question…".to_string(), false),
                ("About Vigía".to_string(), true),
            ]
        );
        if let MenuItem::Standard(s) = &menu[0] {
            (s.activate)(&mut t);
        }
        assert_eq!(rx.try_recv().unwrap(), Action::Report);
        assert_eq!(t.icon_name(), "network-offline");
        assert_eq!(t.tip(), "The Vigía agent is not running on this computer");
    }
}
