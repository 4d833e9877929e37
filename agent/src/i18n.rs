//! The few sentences the agent says to a person (report, status, reply), in English and
//! Spanish. The language comes from `--lang`, else `LC_ALL`, `LC_MESSAGES`, `LANG`.
//!
//! A match per message rather than a catalogue crate: a dozen strings do not earn a
//! dependency, and the compiler checks that every message has both languages. Logs stay
//! in English (they are for operators and log search).

/// A language the agent speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// English.
    En,
    /// Spanish.
    Es,
}

impl Lang {
    /// From a locale string ("es_CO.UTF-8", "en", "C"): Spanish for `es*`, else English.
    pub fn from_locale(s: &str) -> Option<Self> {
        let s = s.trim();
        if s.is_empty() {
            return None;
        }
        Some(if s.to_ascii_lowercase().starts_with("es") {
            Self::Es
        } else {
            Self::En
        })
    }

    /// From `--lang` when given, else the environment (`LC_ALL`, `LC_MESSAGES`, `LANG`).
    pub fn detect(flag: Option<&str>) -> Self {
        if let Some(l) = flag.and_then(Self::from_locale) {
            return l;
        }
        ["LC_ALL", "LC_MESSAGES", "LANG"]
            .iter()
            .find_map(|v| std::env::var(v).ok().and_then(|s| Self::from_locale(&s)))
            .unwrap_or(Self::En)
    }
}

/// Every sentence said to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Msg {
    NotRunning,
    AskCategory,
    AskSummary,
    AskText,
    AskUrgency,
    AskContact,
    SummaryRequired,
    NoTerminal,
    Sending,
    Incident,
    Queued,
    HeldInMemory,
    Held,
    Connected,
    Disconnected,
    Spooled,
    Dropped,
    OpenFaults,
    NoFaults,
    Reports,
    NoReports,
    Questions,
    ReplyHint,
    ReplySent,
    AwaitingIncident,
    Device,
    TooLong,
    EnrolWaiting,
    EnrolRequest,
    EnrolRefused,
    EnrolRevoked,
}

/// The text of `m` in `lang`.
pub fn t(lang: Lang, m: Msg) -> &'static str {
    use Lang::*;
    use Msg::*;
    match (m, lang) {
        (NotRunning, En) => "The Vigía agent is not running on this computer, so the report cannot be sent. Ask IT to start it (systemctl start vigia-agent).",
        (NotRunning, Es) => "El agente Vigía no está en ejecución en este equipo, así que el reporte no se puede enviar. Pida a soporte que lo inicie (systemctl start vigia-agent).",
        (AskCategory, En) => "Category (hardware, network, printer, software, other) [hardware]: ",
        (AskCategory, Es) => "Categoría (hardware, network, printer, software, other) [hardware]: ",
        (AskSummary, En) => "What is the problem, in one line: ",
        (AskSummary, Es) => "¿Cuál es el problema? (una línea): ",
        (AskText, En) => "Details (end with an empty line):",
        (AskText, Es) => "Detalles (termine con una línea vacía):",
        (AskUrgency, En) => "Urgency (low, medium, high, critical) [medium]: ",
        (AskUrgency, Es) => "Urgencia (low = baja, medium = media, high = alta, critical = crítica) [medium]: ",
        (AskContact, En) => "How can IT reach you (phone, extension, e-mail): ",
        (AskContact, Es) => "¿Cómo lo contacta soporte? (teléfono, extensión, correo): ",
        (SummaryRequired, En) => "A summary is required.",
        (SummaryRequired, Es) => "El resumen es obligatorio.",
        (NoTerminal, En) => "No terminal to ask in: give at least --summary.",
        (NoTerminal, Es) => "No hay terminal para preguntar: indique al menos --summary.",
        (Sending, En) => "Sending the report...",
        (Sending, Es) => "Enviando el reporte...",
        (Incident, En) => "Report received: incident number",
        (Incident, Es) => "Reporte recibido: incidente número",
        (Queued, En) => "The report is saved and queued; it will reach IT as soon as the connection allows. `vigia-agent status` will show its incident number.",
        (Queued, Es) => "El reporte quedó guardado en cola; llegará a soporte en cuanto la conexión lo permita. `vigia-agent status` mostrará su número de incidente.",
        (HeldInMemory, En) => "This device's disk is full: the report is kept in memory and will be saved and sent as soon as there is space (a restart of the agent before then loses it). Please tell IT the disk is full.",
        (HeldInMemory, Es) => "El disco de este equipo está lleno: el reporte se guarda en memoria y se guardará y enviará en cuanto haya espacio (si el agente se reinicia antes, se pierde). Avise a soporte que el disco está lleno.",
        (Held, En) => "Events kept in memory (the disk is full):",
        (Held, Es) => "Eventos en memoria (el disco está lleno):",
        (Connected, En) => "Connection to the server: connected",
        (Connected, Es) => "Conexión con el servidor: conectado",
        (Disconnected, En) => "Connection to the server: NOT connected",
        (Disconnected, Es) => "Conexión con el servidor: NO conectado",
        (Spooled, En) => "Events waiting to be delivered:",
        (Spooled, Es) => "Eventos pendientes de entrega:",
        (Dropped, En) => "Events dropped (queue full):",
        (Dropped, Es) => "Eventos descartados (cola llena):",
        (OpenFaults, En) => "Faults detected now:",
        (OpenFaults, Es) => "Fallas detectadas ahora:",
        (NoFaults, En) => "No faults detected.",
        (NoFaults, Es) => "No se detectan fallas.",
        (Reports, En) => "Your recent reports:",
        (Reports, Es) => "Sus reportes recientes:",
        (NoReports, En) => "No reports sent since the agent started.",
        (NoReports, Es) => "No ha enviado reportes desde que inició el agente.",
        (Questions, En) => "IT asks:",
        (Questions, Es) => "Soporte pregunta:",
        (ReplyHint, En) => "Answer with: vigia-agent reply <incident> \"text\"",
        (ReplyHint, Es) => "Responda con: vigia-agent reply <incidente> \"texto\"",
        (ReplySent, En) => "Answer queued for IT.",
        (ReplySent, Es) => "Respuesta enviada a soporte.",
        (AwaitingIncident, En) => "waiting for an incident number",
        (AwaitingIncident, Es) => "esperando número de incidente",
        (Device, En) => "Device:",
        (Device, Es) => "Equipo:",
        (TooLong, En) => "is too long; the limit in characters is",
        (TooLong, Es) => "es demasiado largo; el límite en caracteres es",
        (EnrolWaiting, En) => "enrolling: waiting for approval",
        (EnrolWaiting, Es) => "inscribiendo el equipo: esperando aprobación",
        (EnrolRequest, En) => "request",
        (EnrolRequest, Es) => "solicitud",
        (EnrolRefused, En) => "enrolment refused:",
        (EnrolRefused, Es) => "inscripción rechazada:",
        (EnrolRevoked, En) => "device revoked",
        (EnrolRevoked, Es) => "equipo revocado",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn locale_strings_pick_the_language() {
        assert_eq!(Lang::from_locale("es_CO.UTF-8"), Some(Lang::Es));
        assert_eq!(Lang::from_locale("ES"), Some(Lang::Es));
        assert_eq!(Lang::from_locale("en_US.UTF-8"), Some(Lang::En));
        assert_eq!(Lang::from_locale("C"), Some(Lang::En));
        assert_eq!(Lang::from_locale(""), None);
        assert_eq!(Lang::detect(Some("es")), Lang::Es);
        assert_eq!(Lang::detect(Some("en")), Lang::En);
    }

    #[test]
    fn both_languages_differ_where_it_matters() {
        for m in [Msg::NotRunning, Msg::Incident, Msg::Queued, Msg::Questions] {
            assert_ne!(t(Lang::En, m), t(Lang::Es, m));
        }
    }
}
