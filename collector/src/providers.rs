//! The providers registry (000 step 5, 003): who the organisation contracts support
//! from, how to reach them, what they cover, and the contract for the period
//! (*vigencia*) with its agreed conditions and its response and resolution times per
//! priority; the coordination meetings' minutes (*actas*, 003 item 1) are kept with it.
//!
//! Pure: the records and their checks. The store keeps them by name; the API and the CLI
//! (`vigia-collector provider ...`) are how an administrator registers them. When a
//! provider request names no provider and the asset has no warranty in force,
//! [`contract_providers_for`] says which providers have a contract in force that covers
//! the incident's kind of asset.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vigia_protocol::{Dur, Millis};

use crate::workflow::Priority;

/// A person to call or write at the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    /// Their name.
    pub name: String,
    /// Email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Phone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// The contract for a period (*vigencia*).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    /// From.
    pub start: Millis,
    /// Until (inclusive).
    pub end: Millis,
    /// The agreed conditions (003 item 3).
    #[serde(default)]
    pub conditions: String,
    /// Time to respond to a request, per priority.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub response: BTreeMap<Priority, Dur>,
    /// Time to resolve it, per priority.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resolution: BTreeMap<Priority, Dur>,
}

impl Contract {
    /// Whether it is in force at `now`.
    pub fn in_force(&self, now: Millis) -> bool {
        (self.start..=self.end).contains(&now)
    }
}

/// The minutes of a coordination meeting with the provider (*acta*).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Minutes {
    /// When the meeting was.
    pub date: Millis,
    /// Who took part.
    pub participants: Vec<String>,
    /// What was agreed.
    pub text: String,
    /// Who recorded them.
    #[serde(default)]
    pub recorded_by: String,
}

/// A provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// Its name, as requests name it; unique, compared without case.
    pub name: String,
    /// People there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contacts: Vec<Contact>,
    /// Its service address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Its service phone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Its portal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal: Option<String>,
    /// The services it provides ("on-site repair", "cabling").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    /// The kinds of asset it covers, as incident categories begin ("hardware",
    /// "network") or as device tags name them ("printer").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub covers: Vec<String>,
    /// Its contract for the period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract: Option<Contract>,
    /// Coordination meetings' minutes, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub minutes: Vec<Minutes>,
}

fn one_line(field: &str, v: &str, max: usize) -> Result<(), String> {
    if v.chars().any(char::is_control) {
        return Err(format!("{field}: one line, without control characters"));
    }
    if v.chars().count() > max {
        return Err(format!("{field}: at most {max} characters"));
    }
    Ok(())
}

impl Provider {
    /// Checks every field; the error names it.
    pub fn check(&self) -> Result<(), String> {
        if self.name.trim().is_empty() || self.name.trim() != self.name {
            return Err("name: must not be empty nor start or end with spaces".into());
        }
        one_line("name", &self.name, 120)?;
        for c in &self.contacts {
            one_line("contacts.name", &c.name, 120)?;
            for v in [&c.email, &c.phone].into_iter().flatten() {
                one_line("contacts", v, 120)?;
            }
            if let Some(e) = &c.email {
                crate::notify::channel::mailbox(e).map_err(|e| format!("contacts.email: {e}"))?;
            }
        }
        if let Some(e) = &self.email {
            crate::notify::channel::mailbox(e).map_err(|e| format!("email: {e}"))?;
        }
        for v in [&self.phone, &self.portal].into_iter().flatten() {
            one_line("phone/portal", v, 200)?;
        }
        if let Some(p) = &self.portal {
            if !p.starts_with("https://") && !p.starts_with("http://") {
                return Err(format!("portal: {p:?} is not an http(s) address"));
            }
        }
        for s in self.services.iter().chain(&self.covers) {
            one_line("services/covers", s, 60)?;
        }
        if let Some(c) = &self.contract {
            if c.end < c.start {
                return Err("contract: it ends before it starts".into());
            }
            if c.conditions.chars().count() > 4000 {
                return Err("contract.conditions: at most 4000 characters".into());
            }
        }
        for m in &self.minutes {
            if m.participants.is_empty() {
                return Err("minutes: name who took part".into());
            }
            for p in &m.participants {
                one_line("minutes.participants", p, 120)?;
            }
            if m.text.trim().is_empty() || m.text.chars().count() > 20_000 {
                return Err("minutes.text: 1 to 20000 characters".into());
            }
        }
        Ok(())
    }

    /// Whether it covers an incident of `category` ("hardware/storage") on a device
    /// tagged `tags`.
    pub fn covers(&self, category: Option<&str>, tags: &[String]) -> bool {
        let head = category.and_then(|c| c.split('/').next()).unwrap_or("");
        self.covers.iter().any(|k| {
            k.eq_ignore_ascii_case(head)
                || category.is_some_and(|c| k.eq_ignore_ascii_case(c))
                || tags.iter().any(|t| k.eq_ignore_ascii_case(t))
        })
    }
}

/// The key a provider is stored under: its name without case.
pub fn key(name: &str) -> String {
    name.trim().to_lowercase()
}

/// The providers with a contract in force at `now` that cover an incident of `category`
/// on a device tagged `tags`, by name.
pub fn contract_providers_for<'a>(
    providers: &'a [Provider],
    category: Option<&str>,
    tags: &[String],
    now: Millis,
) -> Vec<&'a Provider> {
    providers
        .iter()
        .filter(|p| p.contract.as_ref().is_some_and(|c| c.in_force(now)))
        .filter(|p| p.covers(category, tags))
        .collect()
}

/// Fills the deadlines `spec` leaves out from its provider's contract in force at `now`
/// (the named provider, or the warranty's that the workflow will suggest): the response
/// and resolution times for the request's priority (the incident's when the request names
/// none). A provider without a registered contract, or without a time for the priority,
/// leaves them out: the request then has no deadline of its own.
pub fn contract_deadlines(
    spec: &mut crate::workflow::ProviderRequestSpec,
    inc: &crate::workflow::Incident,
    providers: &[Provider],
    now: Millis,
) {
    let suggested = crate::workflow::suggested_provider(inc, now).map(str::to_owned);
    fill_deadlines(spec, suggested, inc.priority(), providers, now);
}

/// [`contract_deadlines`] for a request with no incident: `suggested` is the warranty
/// provider the workflow will take when the request names none, `priority` the one a
/// request naming none has.
pub fn fill_deadlines(
    spec: &mut crate::workflow::ProviderRequestSpec,
    suggested: Option<String>,
    priority: Option<Priority>,
    providers: &[Provider],
    now: Millis,
) {
    let name = spec.provider.clone().or(suggested);
    let Some(contract) = name
        .and_then(|n| providers.iter().find(|p| key(&p.name) == key(&n)))
        .and_then(|p| p.contract.as_ref())
        .filter(|c| c.in_force(now))
    else {
        return;
    };
    let priority = spec.priority.or(priority).unwrap_or(Priority::P3);
    spec.respond_within = spec
        .respond_within
        .or_else(|| contract.response.get(&priority).copied());
    spec.resolve_within = spec
        .resolve_within
        .or_else(|| contract.resolution.get(&priority).copied());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn provider(name: &str, covers: &[&str], start: Millis, end: Millis) -> Provider {
        Provider {
            name: name.into(),
            contacts: vec![Contact {
                name: "Ana".into(),
                email: Some("ana@example.org".into()),
                phone: None,
            }],
            email: Some("soporte@example.org".into()),
            phone: None,
            portal: Some("https://portal.example.org".into()),
            services: vec!["on-site repair".into()],
            covers: covers.iter().map(|s| s.to_string()).collect(),
            contract: Some(Contract {
                start,
                end,
                conditions: "8x5".into(),
                response: BTreeMap::from([(Priority::P1, Dur(4 * 3_600_000))]),
                resolution: BTreeMap::new(),
            }),
            minutes: Vec::new(),
        }
    }

    #[test]
    fn contract_providers_cover_by_category_or_tag_while_in_force() {
        let all = [
            provider("Hardware SA", &["hardware"], 0, 1_000),
            provider("Printers Ltd", &["printer"], 0, 1_000),
            provider("Old Network Co", &["network"], 0, 10),
        ];
        let names = |v: Vec<&Provider>| v.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(contract_providers_for(
                &all,
                Some("hardware/storage"),
                &[],
                500
            )),
            ["Hardware SA"]
        );
        assert_eq!(
            names(contract_providers_for(&all, None, &["printer".into()], 500)),
            ["Printers Ltd"]
        );
        assert!(contract_providers_for(&all, Some("network"), &[], 500).is_empty());
        assert!(contract_providers_for(&all, Some("hardware"), &[], 1_001).is_empty());
    }

    #[test]
    fn bad_records_are_refused_with_their_field() {
        let ok = provider("Hardware SA", &["hardware"], 0, 1);
        ok.check().unwrap();
        let mut p = ok.clone();
        p.email = Some("no address".into());
        assert!(p.check().unwrap_err().starts_with("email"));
        let mut p = ok.clone();
        p.name = "Evil\u{1b}[2J".into();
        assert!(p.check().unwrap_err().starts_with("name"));
        let mut p = ok.clone();
        p.contract.as_mut().unwrap().end = 0;
        p.contract.as_mut().unwrap().start = 5;
        assert!(p.check().unwrap_err().starts_with("contract"));
        let mut p = ok;
        p.portal = Some("javascript:alert(1)".into());
        assert!(p.check().unwrap_err().starts_with("portal"));
    }
}
