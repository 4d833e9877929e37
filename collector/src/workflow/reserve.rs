//! Information classification of a record: public (*sin reserva*), reserved (*reservada*)
//! or classified (*clasificada*), for a number of years, with its justification; a
//! reserved record names which of its fields are reserved (all of them, or some: the
//! *divulgación parcial* / *excepción parcial* of the procedures).
//!
//! This module holds the data and the pure hiding: [`hide`] rewrites an incident (and
//! [`hide_summary`] a list entry) with every reserved field replaced by [`RESERVED`].
//! Who is cleared to read what is decided in one place, `auth::access` (`Caller::narrow`),
//! which every output path calls. The trade-off: hiding rewrites a copy of the record for
//! each uncleared reader instead of keeping reserved fields apart in the store, so one
//! record stays one record (one transaction, one trail) and lapsing is only a date.
//!
//! A reserve lapses on its own: [`Reserve::in_force`] compares its end with the time the
//! caller reads, so a record reserved for 5 years is public from that day without any
//! change being written.
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use vigia_protocol::time::{civil_from_days, days_from_civil};

use super::incident::{Incident, Origin, UnknownName};
use super::summary::IncidentSummary;
use super::time::{rfc3339, Millis, DAY};

/// What a reserved field reads as for someone not cleared to read it: a placeholder that
/// cannot be taken for data.
pub const RESERVED: &str = "[reserved]";

/// The longest a reserve may last, in years.
pub const MAX_YEARS: u32 = 99;

/// The longest justification accepted, in characters.
pub const MAX_JUSTIFICATION: usize = 2000;

/// How far a record's information may be disclosed; also an account's clearance (the
/// highest it may read). Ordered: public < reserved < classified.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Secrecy {
    /// *Sin reserva*: anyone who may see the record reads all of it.
    #[default]
    Public,
    /// *Reservada*: the reserved fields are hidden from whoever is not cleared for it.
    Reserved,
    /// *Clasificada*: the record is not shown at all to whoever is not cleared for it.
    Classified,
}

impl Secrecy {
    /// Every level, lowest first.
    pub const ALL: [Secrecy; 3] = [Self::Public, Self::Reserved, Self::Classified];

    /// Its name in the API, the CLI and the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Reserved => "reserved",
            Self::Classified => "classified",
        }
    }

    /// The procedures' Spanish term.
    pub fn spanish(self) -> &'static str {
        match self {
            Self::Public => "sin reserva",
            Self::Reserved => "reservada",
            Self::Classified => "clasificada",
        }
    }
}

impl fmt::Display for Secrecy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Secrecy {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_lowercase();
        match s.as_str() {
            "public" | "sin reserva" | "sin_reserva" => Ok(Self::Public),
            "reserved" | "reservada" => Ok(Self::Reserved),
            "classified" | "clasificada" => Ok(Self::Classified),
            _ => Err(UnknownName::new(
                "information level",
                s,
                "public, reserved, classified",
            )),
        }
    }
}

/// A part of an incident that a reserve may hide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservedField {
    /// What the report says (its summary and text), or the fault's message: the title.
    Description,
    /// Who reported it and how to reach them.
    Reporter,
    /// The questions asked of the user and the answers.
    Conversation,
    /// The notes.
    Notes,
    /// The solution.
    Solution,
    /// Provider requests' conditions, the provider's notes and report, verifications'
    /// notes.
    ProviderReport,
    /// The device's inventory as shown with the incident (host name, OS, kernel, CPU,
    /// RAM, model) and the readings and faults a report carried.
    Device,
}

impl ReservedField {
    /// Every field, in the order they are listed.
    pub const ALL: [ReservedField; 7] = [
        Self::Description,
        Self::Reporter,
        Self::Conversation,
        Self::Notes,
        Self::Solution,
        Self::ProviderReport,
        Self::Device,
    ];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Description => "description",
            Self::Reporter => "reporter",
            Self::Conversation => "conversation",
            Self::Notes => "notes",
            Self::Solution => "solution",
            Self::ProviderReport => "provider_report",
            Self::Device => "device",
        }
    }

    /// Whether people write free text in it, which the audit trail's explanations may
    /// quote.
    fn free_text(self) -> bool {
        !matches!(self, Self::Reporter | Self::Device)
    }
}

impl fmt::Display for ReservedField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReservedField {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                UnknownName::new(
                    "reserved field",
                    s,
                    "description, reporter, conversation, notes, solution, provider_report, \
                     device",
                )
            })
    }
}

/// What a person asks: the record's level, for how long, which fields, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveSpec {
    /// Public lifts a reserve; reserved and classified set one.
    pub level: Secrecy,
    /// How many years it lasts (reserved and classified).
    #[serde(default)]
    pub years: Option<u32>,
    /// From when the years count; the incident's registration by default (the record's
    /// date of creation).
    #[serde(default)]
    pub from: Option<Millis>,
    /// Which fields a reserved record hides; all of them when absent. Fewer than all is a
    /// partial disclosure (*divulgación parcial*).
    #[serde(default)]
    pub fields: Option<Vec<ReservedField>>,
    /// Why (*justificación de la reserva / clasificación*); required, also to lift one.
    pub justification: String,
}

/// A record's reserve or classification as set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reserve {
    /// Reserved or classified.
    pub level: Secrecy,
    /// The fields hidden from readers without clearance (a classified record is hidden
    /// whole).
    pub fields: BTreeSet<ReservedField>,
    /// Whether only some fields are reserved (*divulgación parcial*).
    pub partial: bool,
    /// For how many years.
    pub years: u32,
    /// From when.
    pub since: Millis,
    /// Until when: `years` calendar years after `since`. From then on the record is public.
    pub until: Millis,
    /// Why.
    pub justification: String,
    /// Who set it.
    pub by: String,
    /// When it was set.
    pub at: Millis,
}

impl Reserve {
    /// Whether it still holds at `now`.
    pub fn in_force(&self, now: Millis) -> bool {
        now < self.until
    }

    /// The level at `now`: public once it lapsed.
    pub fn level_at(&self, now: Millis) -> Secrecy {
        if self.in_force(now) {
            self.level
        } else {
            Secrecy::Public
        }
    }

    /// In words, for the trail: "reserved (notes, solution) for 5 years, until 2031-...".
    pub fn describe(&self) -> String {
        let fields = if self.level == Secrecy::Classified || !self.partial {
            String::new()
        } else {
            let v: Vec<&str> = self.fields.iter().map(|f| f.as_str()).collect();
            format!(" ({})", v.join(", "))
        };
        format!(
            "{}{fields} for {} year{} from {}, until {}",
            self.level,
            self.years,
            if self.years == 1 { "" } else { "s" },
            rfc3339(self.since),
            rfc3339(self.until)
        )
    }
}

/// `years` calendar years after `t` (29 February becomes 28 February in a common year).
pub fn add_years(t: Millis, years: u32) -> Millis {
    let days = i64::try_from(t / DAY).unwrap_or(i64::MAX);
    let rest = t % DAY;
    let (y, m, d) = civil_from_days(days);
    let y = y.saturating_add(i64::from(years));
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let d = if m == 2 && d == 29 && !leap { 28 } else { d };
    let days = days_from_civil(y, m, d);
    u64::try_from(days)
        .unwrap_or(0)
        .saturating_mul(DAY)
        .saturating_add(rest)
}

/// Why a reserve cannot be set as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReserveError {
    /// No justification.
    #[error("give the justification of the reserve or classification")]
    NoJustification,
    /// The justification is too long.
    #[error("the justification is too long: at most {MAX_JUSTIFICATION} characters")]
    LongJustification,
    /// No number of years, or out of range.
    #[error("give how many years it lasts, 1 to {MAX_YEARS}")]
    Years,
    /// A reserve with no field.
    #[error("a reserved record needs at least one reserved field")]
    NoField,
    /// Years or fields given to lift one.
    #[error("a public record has no years or reserved fields")]
    PublicWithTerms,
    /// Lifting a reserve the record does not have.
    #[error("the record is already public")]
    AlreadyPublic,
    /// The reserve would already have lapsed.
    #[error("counted from {from}, {years} years ended on {until}: the record would be public")]
    Lapsed {
        /// From.
        from: String,
        /// Years.
        years: u32,
        /// Until.
        until: String,
    },
}

/// The reserve `spec` asks for on `inc`, set by `by` at `now`; `None` lifts it.
pub fn build(
    inc: &Incident,
    spec: &ReserveSpec,
    by: &str,
    now: Millis,
) -> Result<Option<Reserve>, ReserveError> {
    let why = spec.justification.trim();
    if why.is_empty() {
        return Err(ReserveError::NoJustification);
    }
    if why.chars().count() > MAX_JUSTIFICATION {
        return Err(ReserveError::LongJustification);
    }
    if spec.level == Secrecy::Public {
        if spec.years.is_some() || spec.fields.is_some() || spec.from.is_some() {
            return Err(ReserveError::PublicWithTerms);
        }
        if inc.secrecy(now) == Secrecy::Public {
            return Err(ReserveError::AlreadyPublic);
        }
        return Ok(None);
    }
    let years = spec
        .years
        .filter(|y| (1..=MAX_YEARS).contains(y))
        .ok_or(ReserveError::Years)?;
    let fields: BTreeSet<ReservedField> = match (&spec.fields, spec.level) {
        // A classified record is hidden whole.
        (_, Secrecy::Classified) | (None, _) => ReservedField::ALL.into_iter().collect(),
        (Some(v), _) => v.iter().copied().collect(),
    };
    if fields.is_empty() {
        return Err(ReserveError::NoField);
    }
    let since = spec.from.unwrap_or(inc.opened_at);
    let until = add_years(since, years);
    if until <= now {
        return Err(ReserveError::Lapsed {
            from: rfc3339(since),
            years,
            until: rfc3339(until),
        });
    }
    Ok(Some(Reserve {
        level: spec.level,
        partial: fields.len() < ReservedField::ALL.len(),
        fields,
        years,
        since,
        until,
        justification: why.to_owned(),
        by: by.to_owned(),
        at: now,
    }))
}

impl Incident {
    /// Its level of disclosure at `now`.
    pub fn secrecy(&self, now: Millis) -> Secrecy {
        self.reserve
            .as_ref()
            .map_or(Secrecy::Public, |r| r.level_at(now))
    }
}

impl IncidentSummary {
    /// Its level of disclosure at `now`.
    pub fn secrecy(&self, now: Millis) -> Secrecy {
        self.reserve
            .as_ref()
            .map_or(Secrecy::Public, |r| r.level_at(now))
    }
}

fn mark(s: &mut String) {
    if !s.is_empty() {
        *s = RESERVED.to_owned();
    }
}

/// `inc` with `fields` replaced by [`RESERVED`]: what a reader without clearance gets.
/// Lists that would look empty (a report's readings) are emptied, and the record's
/// `reserve` says which fields are hidden, so a page shows a placeholder, not "none".
/// When a free-text field is hidden, so is every explanation in the audit trail (any of
/// them may quote it) but the reserve's own, which is the public justification.
pub fn hide(inc: &mut Incident, fields: &BTreeSet<ReservedField>) {
    use ReservedField as F;
    let has = |f: F| fields.contains(&f);
    match &mut inc.origin {
        Origin::Report {
            summary,
            text,
            reporter,
            contact,
            snapshot,
            open_faults,
            ..
        } => {
            if has(F::Description) {
                mark(summary);
                mark(text);
            }
            if has(F::Reporter) {
                mark(reporter);
                mark(contact);
            }
            if has(F::Device) {
                snapshot.clear();
                open_faults.clear();
            }
        }
        Origin::Fault { message, .. } => {
            if has(F::Description) {
                mark(message);
            }
        }
        Origin::Service {
            summary,
            text,
            requester,
        } => {
            if has(F::Description) {
                mark(summary);
                mark(text);
            }
            if has(F::Reporter) {
                mark(requester);
            }
        }
    }
    if has(F::Description) {
        for o in inc
            .recent
            .first
            .iter_mut()
            .chain(inc.recent.recent.iter_mut())
        {
            mark(&mut o.message);
        }
    }
    if has(F::Conversation) {
        for q in &mut inc.info_requests {
            mark(&mut q.question);
            if let Some(a) = &mut q.answer {
                mark(a);
            }
        }
    }
    if has(F::Notes) {
        for n in &mut inc.notes {
            mark(&mut n.text);
        }
    }
    if has(F::Solution) {
        if let Some(s) = &mut inc.solution {
            mark(s);
        }
    }
    if has(F::ProviderReport) {
        for r in &mut inc.provider_requests {
            mark(&mut r.conditions);
            for s in [&mut r.accepted, &mut r.done].into_iter().flatten() {
                mark(&mut s.note);
            }
            if let Some(p) = &mut r.proposed {
                mark(&mut p.stamp.note);
            }
            if let Some(d) = &mut r.delivery {
                mark(&mut d.note);
            }
            for x in &mut r.rejections {
                mark(&mut x.verification.note);
                if let Some(s) = &mut x.report {
                    mark(&mut s.note);
                }
            }
        }
    }
    let free_text = fields.iter().any(|f| f.free_text());
    for rec in &mut inc.audit {
        if free_text && rec.action != "reserve" {
            mark(&mut rec.why);
        }
        for c in &mut rec.changes {
            if change_field(&c.field).is_some_and(has) {
                mark(&mut c.from);
                mark(&mut c.to);
            }
        }
    }
}

/// The reserved field an audit record's field change is about, if any.
fn change_field(name: &str) -> Option<ReservedField> {
    match name {
        "solution" => Some(ReservedField::Solution),
        n if n.starts_with("info_requests") => Some(ReservedField::Conversation),
        _ => None,
    }
}

/// A list entry with `fields` replaced by [`RESERVED`], as [`hide`] does to the incident.
pub fn hide_summary(s: &mut IncidentSummary, fields: &BTreeSet<ReservedField>) {
    if fields.contains(&ReservedField::Description) {
        mark(&mut s.title);
    }
    if s.origin == "report" && fields.contains(&ReservedField::Reporter) {
        mark(&mut s.subject);
    }
}

/// A notification's text for a reader without clearance: hidden when the reserve covers
/// a free-text field (the engine's texts quote notes, reports and reasons).
pub fn hide_text(text: &mut String, fields: &BTreeSet<ReservedField>) {
    if fields.iter().any(|f| f.free_text()) {
        mark(text);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vigia_protocol::time::parse_instant;

    #[test]
    fn years_are_calendar_years() {
        let t = parse_instant("2026-03-01T10:00:00Z").unwrap();
        assert_eq!(rfc3339(add_years(t, 5)), "2031-03-01T10:00:00Z");
        let leap = parse_instant("2028-02-29T00:00:00Z").unwrap();
        assert_eq!(rfc3339(add_years(leap, 1)), "2029-02-28T00:00:00Z");
        assert_eq!(rfc3339(add_years(leap, 4)), "2032-02-29T00:00:00Z");
    }

    #[test]
    fn levels_and_fields_parse_in_english_and_spanish() {
        for s in Secrecy::ALL {
            assert_eq!(s.as_str().parse::<Secrecy>().unwrap(), s);
            assert_eq!(s.spanish().parse::<Secrecy>().unwrap(), s);
        }
        assert!(Secrecy::Public < Secrecy::Reserved && Secrecy::Reserved < Secrecy::Classified);
        for f in ReservedField::ALL {
            assert_eq!(f.as_str().parse::<ReservedField>().unwrap(), f);
        }
        assert!("secret".parse::<Secrecy>().is_err());
        assert!("salary".parse::<ReservedField>().is_err());
    }
}
