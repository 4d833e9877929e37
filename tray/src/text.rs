//! What the tray says to the person at the keyboard, in Spanish and English, and the
//! escaping that keeps text from the agent (IT's questions, notes, summaries) from being
//! read as markup, escapes or mnemonics by the dialog program or the notification server.
//!
//! A match per message, as in the agent's `i18n` (whose `Lang` and sentences are reused
//! where they fit): the compiler checks that every sentence has both languages.

pub use vigia_agent::i18n::{t as agent_says, Lang, Msg};

/// Every sentence the tray says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Say {
    TipFine,
    TipFault,
    TipQuestion,
    TipOffline,
    TipNoAgent,
    MenuReport,
    MenuMine,
    MenuAnswer,
    MenuAbout,
    FormTitle,
    FormIntro,
    FieldCategory,
    FieldSummary,
    FieldDescription,
    FieldUrgency,
    FieldContact,
    Queued,
    IncidentWord,
    NotifyNumbered,
    NotifyAsked,
    NotifyResolved,
    AnswerTitle,
    AnswerPrompt,
    NoQuestions,
    MineTitle,
    AboutTitle,
    About,
    NotSent,
    NoDialogTool,
    Send,
    Cancel,
    Ok,
    Close,
}

/// The text of `s` in `lang`.
pub fn say(lang: Lang, s: Say) -> &'static str {
    use Lang::*;
    use Say::*;
    match (s, lang) {
        (TipFine, En) => "All fine: no fault detected on this computer",
        (TipFine, Es) => "Todo bien: no se detectan fallas en este equipo",
        (TipFault, En) => "A fault was detected on this computer; IT has been told",
        (TipFault, Es) => "Se detectó una falla en este equipo; soporte ya fue avisado",
        (TipQuestion, En) => "IT asked you something: choose “Answer IT's question”",
        (TipQuestion, Es) => "Soporte le hizo una pregunta: elija «Responder a soporte»",
        (TipOffline, En) => "Not connected to the server: reports wait on this computer",
        (TipOffline, Es) => "Sin conexión con el servidor: los reportes esperan en este equipo",
        (TipNoAgent, En) => "The Vigía agent is not running on this computer",
        (TipNoAgent, Es) => "El agente Vigía no está en ejecución en este equipo",
        (MenuReport, En) => "Report a problem…",
        (MenuReport, Es) => "Reportar un problema…",
        (MenuMine, En) => "My reports",
        (MenuMine, Es) => "Mis reportes",
        (MenuAnswer, En) => "Answer IT's question…",
        (MenuAnswer, Es) => "Responder a soporte…",
        (MenuAbout, En) => "About Vigía",
        (MenuAbout, Es) => "Acerca de Vigía",
        (FormTitle, En) => "Vigía: report a problem to IT",
        (FormTitle, Es) => "Vigía: reportar un problema a soporte",
        (FormIntro, En) => "Tell IT what is wrong. Vigía attaches what this computer detects.",
        (FormIntro, Es) => "Cuente a soporte qué falla. Vigía adjunta lo que detecta este equipo.",
        (FieldCategory, En) => "Category",
        (FieldCategory, Es) => "Categoría",
        (FieldSummary, En) => "What is wrong (one line)",
        (FieldSummary, Es) => "Qué falla (una línea)",
        (FieldDescription, En) => "Details",
        (FieldDescription, Es) => "Detalles",
        (FieldUrgency, En) => "Urgency",
        (FieldUrgency, Es) => "Urgencia",
        (FieldContact, En) => "How IT can reach you",
        (FieldContact, Es) => "Cómo lo contacta soporte",
        (Queued, En) => "The report is saved and queued; it will reach IT as soon as the connection allows. Its incident number will appear under “My reports”.",
        (Queued, Es) => "El reporte quedó guardado en cola; llegará a soporte en cuanto la conexión lo permita. Su número de incidente aparecerá en «Mis reportes».",
        (IncidentWord, En) => "incident",
        (IncidentWord, Es) => "incidente",
        (NotifyNumbered, En) => "Report received: incident number",
        (NotifyNumbered, Es) => "Reporte recibido: incidente número",
        (NotifyAsked, En) => "IT asks about incident",
        (NotifyAsked, Es) => "Soporte pregunta sobre el incidente",
        (NotifyResolved, En) => "Resolved: incident",
        (NotifyResolved, Es) => "Resuelto: incidente",
        (AnswerTitle, En) => "Vigía: answer IT",
        (AnswerTitle, Es) => "Vigía: responder a soporte",
        (AnswerPrompt, En) => "Your answer:",
        (AnswerPrompt, Es) => "Su respuesta:",
        (NoQuestions, En) => "IT has no question for you now.",
        (NoQuestions, Es) => "Soporte no tiene preguntas para usted ahora.",
        (MineTitle, En) => "Vigía: my reports",
        (MineTitle, Es) => "Vigía: mis reportes",
        (AboutTitle, En) => "About Vigía",
        (AboutTitle, Es) => "Acerca de Vigía",
        (About, En) => "Vigía watches this computer's hardware (disks, memory, temperature, battery, network) and tells IT when something fails. Use this icon to report a problem yourself.",
        (About, Es) => "Vigía vigila el hardware de este equipo (discos, memoria, temperatura, batería, red) y avisa a soporte cuando algo falla. Use este ícono para reportar un problema usted mismo.",
        (NotSent, En) => "The report could not be sent:",
        (NotSent, Es) => "No se pudo enviar el reporte:",
        (Send, En) => "Send",
        (Send, Es) => "Enviar",
        (Cancel, En) => "Cancel",
        (Cancel, Es) => "Cancelar",
        (Ok, En) => "OK",
        (Ok, Es) => "Aceptar",
        (Close, En) => "Close",
        (Close, Es) => "Cerrar",
        (NoDialogTool, En) => "No dialog program (zenity, kdialog or yad) is installed: ask IT to install zenity, or use `vigia-agent report` in a terminal.",
        (NoDialogTool, Es) => "No hay programa de diálogos (zenity, kdialog o yad) instalado: pida a soporte que instale zenity, o use `vigia-agent report` en una terminal.",
    }
}

/// A report category: its value on the wire and its label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Category {
    /// What the agent sends (`hardware`, `network`...), which the triage rules match.
    pub value: &'static str,
    /// English label.
    pub en: &'static str,
    /// Spanish label.
    pub es: &'static str,
}

impl Category {
    /// The label in `lang`.
    pub fn label(&self, lang: Lang) -> &'static str {
        match lang {
            Lang::En => self.en,
            Lang::Es => self.es,
        }
    }
}

/// The categories the form offers, in order (the first is the default).
pub const CATEGORIES: [Category; 5] = [
    Category {
        value: "hardware",
        en: "Hardware (screen, keyboard, disk...)",
        es: "Hardware (pantalla, teclado, disco...)",
    },
    Category {
        value: "network",
        en: "Network or internet",
        es: "Red o internet",
    },
    Category {
        value: "printer",
        en: "Printer",
        es: "Impresora",
    },
    Category {
        value: "software",
        en: "A program",
        es: "Un programa",
    },
    Category {
        value: "other",
        en: "Something else",
        es: "Otra cosa",
    },
];

/// The urgency labels, in [`vigia_protocol::Urgency::ALL`]'s order.
pub fn urgency_labels(lang: Lang) -> [&'static str; 4] {
    match lang {
        Lang::En => ["Low", "Medium", "High", "Critical: I cannot work"],
        Lang::Es => ["Baja", "Media", "Alta", "Crítica: no puedo trabajar"],
    }
}

/// `s` without control characters (a newline and a tab stay): text from the network
/// must not move a cursor or ring a bell anywhere it is shown.
pub fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect()
}

/// `s` as literal text inside Pango or HTML markup (`&`, `<`, `>`, quotes escaped), for a
/// notification server that says it reads markup in the body.
pub fn markup(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in printable(s).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` as literal text for a zenity `--text` that reads Pango markup and then C escapes
/// (`\n`, `\\`: GLib's `g_strcompress`), as `--forms` does (zenity 3.44): markup
/// escaped, backslashes doubled.
pub fn zenity_markup(s: &str) -> String {
    markup(s).replace('\\', "\\\\")
}

/// `s` as literal text for a zenity `--text` that reads C escapes and mnemonics (`_x`
/// underlines x and hides the underscore) but no markup, as `--entry` does (zenity
/// 3.44): backslashes and underscores doubled.
pub fn zenity_mnemonic(s: &str) -> String {
    printable(s).replace('\\', "\\\\").replace('_', "__")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn markup_from_the_network_stays_text() {
        let q = "¿Desde <b>cuándo</b>? A & B \"x\" 'y'\u{7}\u{1b}[2J";
        assert_eq!(
            markup(q),
            "¿Desde &lt;b&gt;cuándo&lt;/b&gt;? A &amp; B &quot;x&quot; &#39;y&#39;[2J"
        );
        // zenity would turn "\n" into a line break and "\\" into one backslash.
        assert_eq!(zenity_markup(r"C:\new <i>"), r"C:\\new &lt;i&gt;");
        assert_eq!(zenity_mnemonic(r"C:\new <i> a_b"), r"C:\\new <i> a__b");
        assert_eq!(printable("a\tb\nc\u{0}d"), "a\tb\ncd");
    }

    #[test]
    fn both_languages_are_there_and_differ() {
        for s in [
            Say::TipFine,
            Say::MenuReport,
            Say::FormTitle,
            Say::NotifyAsked,
        ] {
            assert_ne!(say(Lang::En, s), say(Lang::Es, s));
        }
        for c in CATEGORIES {
            assert_ne!(c.label(Lang::En), c.label(Lang::Es));
            // Labels travel through zenity's combo values, split on '|'.
            assert!(!c.en.contains('|') && !c.es.contains('|'));
        }
        assert_eq!(CATEGORIES[0].value, "hardware");
    }
}
