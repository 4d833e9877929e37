//! Who may do what: the one place the server decides. Every handler asks here, and the
//! console's buttons come from the same answers, so the page offers only what the server
//! will accept.
//!
//! The rules follow the support procedures:
//! - the *Mesa de servicio* (service desk) is the single point of contact: it triages,
//!   classifies, closes definitively and reopens, and may act on every incident;
//! - a technician works the incidents that are theirs (assigned to them, in one of their
//!   groups, or unassigned at their level): verification, notes, escalation, provider
//!   requests, resolution; it may take an incident for itself or for one of its groups, but
//!   not classify, close or reopen;
//! - a provider's contact sees only the incidents with a request addressed to its provider,
//!   and may add notes to them;
//! - a viewer reads; an admin manages accounts and tokens (and acts on incidents only if it
//!   also holds an incident role).
//!
//! A token may narrow its account's rights (`read`, `act`) but never widen them.
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::account::{Account, AccountRole};
use crate::workflow::{
    hide, hide_summary, hide_text, Command, Incident, IncidentSummary, Level, Millis, Reserve,
    ReservedField, Secrecy, ServiceOrder,
};

/// What a credential allows, within its account's roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Read only.
    Read,
    /// Read and work incidents.
    Act,
    /// Everything the account may do, account management included (sessions have this).
    Admin,
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "read" => Ok(Self::Read),
            "act" => Ok(Self::Act),
            "admin" => Ok(Self::Admin),
            other => Err(format!("unknown scope {other:?}; use read, act or admin")),
        }
    }
}

impl Scope {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Act => "act",
            Self::Admin => "admin",
        }
    }
}

/// An authenticated caller: the account (as stored now) and what its credential allows.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The account.
    pub account: Account,
    /// The credential's scope.
    pub scope: Scope,
    /// When the request is served (the collector's clock): a reserve that lapsed before
    /// it no longer hides anything.
    pub now: Millis,
}

/// Why a caller may not do something; the code is stable, the text is for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{why}")]
pub struct Denied {
    /// Stable code for scripts (`forbidden`, `read_only_token`...).
    pub code: &'static str,
    /// What was refused and why.
    pub why: String,
}

impl Denied {
    fn new(code: &'static str, why: impl Into<String>) -> Self {
        Self {
            code,
            why: why.into(),
        }
    }
}

/// The group an incident is with: the one assigned, else the classification's.
fn group_of(inc: &Incident) -> Option<&str> {
    inc.group
        .as_deref()
        .or(inc.classification.as_ref().map(|c| c.group.as_str()))
}

impl Caller {
    fn has(&self, role: AccountRole) -> bool {
        self.account.has(role)
    }

    /// The level "unassigned at my level" means: a technician's own; level 1 for the
    /// service desk.
    fn my_level(&self) -> Option<Level> {
        self.account
            .level
            .or_else(|| self.has(AccountRole::ServiceDesk).then_some(Level::L1))
    }

    /// Whether the caller reads every incident and device.
    pub fn reads_all(&self) -> bool {
        [
            AccountRole::Viewer,
            AccountRole::Technician,
            AccountRole::ServiceDesk,
            AccountRole::Admin,
        ]
        .into_iter()
        .any(|r| self.has(r))
    }

    /// Whether the caller may see `inc`: it reads every incident or the incident is
    /// addressed to its provider, and it is cleared for the record if it is classified.
    pub fn may_see(&self, inc: &Incident) -> bool {
        (self.reads_all() || self.addressed_to_my_provider(inc))
            && self.may_know_of(inc.secrecy(self.now))
    }

    /// Whether the caller may know that a record of `level` exists: one classified
    /// beyond its clearance is hidden whole; a reserved one only in its reserved fields.
    fn may_know_of(&self, level: Secrecy) -> bool {
        level != Secrecy::Classified || self.cleared_for(level)
    }

    /// The most restricted information the caller may read.
    pub fn clearance(&self) -> Secrecy {
        self.account.clearance()
    }

    /// Whether the caller may read information of `level`.
    pub fn cleared_for(&self, level: Secrecy) -> bool {
        self.clearance() >= level
    }

    /// The fields `reserve` hides from the caller now, if it hides any.
    pub fn hidden_by<'r>(
        &self,
        reserve: Option<&'r Reserve>,
    ) -> Option<&'r BTreeSet<ReservedField>> {
        reserve
            .filter(|r| !self.cleared_for(r.level_at(self.now)))
            .map(|r| &r.fields)
    }

    /// A list entry as the caller may read it: `None` when the record is classified
    /// beyond its clearance, its reserved fields replaced by a placeholder when it is not
    /// cleared for them. Lists, the device page and the live feed go through here.
    pub fn narrow_summary(&self, mut s: IncidentSummary) -> Option<IncidentSummary> {
        if !self.may_know_of(s.secrecy(self.now)) {
            return None;
        }
        if let Some(fields) = self.hidden_by(s.reserve.as_ref()) {
            let fields = fields.clone();
            hide_summary(&mut s, &fields);
        }
        Some(s)
    }

    /// A text about the record (a notification's) as the caller may read it: `None`
    /// when the record is classified beyond its clearance, the placeholder when the
    /// reserve covers free text.
    pub fn narrow_text(&self, reserve: Option<&Reserve>, text: &str) -> Option<String> {
        if !self.may_know_of(reserve.map_or(Secrecy::Public, |r| r.level_at(self.now))) {
            return None;
        }
        let mut text = text.to_owned();
        if let Some(fields) = self.hidden_by(reserve) {
            hide_text(&mut text, fields);
        }
        Some(text)
    }

    /// Whether `name` is the caller's provider.
    fn is_my_provider(&self, name: &str) -> bool {
        self.has(AccountRole::Provider)
            && self
                .account
                .provider
                .as_deref()
                .is_some_and(|mine| name.trim().eq_ignore_ascii_case(mine.trim()))
    }

    fn my_pending_request(&self, inc: &Incident) -> bool {
        inc.pending_provider()
            .is_some_and(|r| self.is_my_provider(&r.provider))
    }

    /// What of `inc` the caller may read, the one place every output of an incident
    /// goes through: the fields its reserve covers replaced by a placeholder when the
    /// caller is not cleared for them, and for a provider's contact only its own
    /// provider's requests (see [`Self::narrow_provider`]). A cleared member of staff
    /// reads it as it is.
    pub fn narrow(&self, inc: Incident) -> Incident {
        let mut inc = if self.reads_all() {
            inc
        } else {
            self.narrow_provider(inc)
        };
        if let Some(fields) = self.hidden_by(inc.reserve.as_ref()) {
            let fields = fields.clone();
            hide(&mut inc, &fields);
        }
        inc
    }

    /// What of `inc` a provider's contact may read: its own provider's requests, and the
    /// notes and trail of the time each was the incident's latest. Another provider's
    /// requests (and what happened in their time), the user's answers to IT's questions
    /// and what came before are left out.
    fn narrow_provider(&self, mut inc: Incident) -> Incident {
        // Requests follow one another (only the last can be pending), so the records
        // from one `request_provider` to the next are that request's.
        let mine: Vec<bool> = inc
            .provider_requests
            .iter()
            .map(|r| self.is_my_provider(&r.provider))
            .collect();
        // The times its requests were open: from each one until the next one.
        let starts: Vec<Millis> = inc
            .provider_requests
            .iter()
            .map(|r| r.requested_at)
            .collect();
        let spans: Vec<(Millis, Millis)> = starts
            .iter()
            .enumerate()
            .filter(|(i, _)| mine.get(*i).copied().unwrap_or(false))
            .map(|(i, from)| (*from, starts.get(i + 1).copied().unwrap_or(Millis::MAX)))
            .collect();
        let mut request = None::<usize>;
        inc.audit.retain(|r| {
            if r.action == "request_provider" {
                request = Some(request.map_or(0, |i| i + 1));
            }
            request.is_some_and(|i| mine.get(i).copied().unwrap_or(false))
        });
        let mut i = 0;
        inc.provider_requests.retain(|_| {
            i += 1;
            mine.get(i - 1).copied().unwrap_or(false)
        });
        inc.notes
            .retain(|n| spans.iter().any(|(from, to)| (*from..*to).contains(&n.at)));
        inc.info_requests.clear();
        inc
    }

    fn addressed_to_my_provider(&self, inc: &Incident) -> bool {
        let Some(mine) = self.account.provider.as_deref() else {
            return false;
        };
        self.has(AccountRole::Provider)
            && inc
                .provider_requests
                .iter()
                .any(|r| r.provider.trim().eq_ignore_ascii_case(mine.trim()))
    }

    /// Whether the incident is one of the caller's: assigned to them, in one of their
    /// groups, or unassigned at their level.
    pub fn is_mine(&self, assignee: Option<&str>, group: Option<&str>, level: Level) -> bool {
        assignee == Some(self.account.login.as_str())
            || group.is_some_and(|g| self.account.groups.contains(g))
            || (assignee.is_none() && self.my_level() == Some(level))
    }

    /// [`Self::is_mine`] for a list entry.
    pub fn is_mine_summary(&self, s: &IncidentSummary) -> bool {
        self.is_mine(s.assignee.as_deref(), s.group.as_deref(), s.level)
    }

    /// Whether the caller may ask a provider for a service with no incident behind it,
    /// followed up as `order` says: the service desk at any level and for any group; a
    /// technician at their own level and in their groups, since they follow it up
    /// themselves. Fills in the level a technician's order leaves out (their own).
    pub fn may_order_service(&self, order: &mut ServiceOrder) -> Result<(), Denied> {
        if self.scope == Scope::Read {
            return Err(Denied::new(
                "read_only_token",
                "this token may only read: it cannot ask a provider for a service",
            ));
        }
        if self.has(AccountRole::ServiceDesk) {
            return Ok(());
        }
        if !self.has(AccountRole::Technician) {
            return Err(Denied::new(
                "forbidden",
                format!(
                    "{} ({}) may not ask a provider for a service",
                    self.account.login,
                    self.roles_text()
                ),
            ));
        }
        if let (Some(asked), Some(mine)) = (order.level, self.account.level) {
            if asked != mine {
                return Err(Denied::new(
                    "forbidden",
                    format!(
                        "you work at level {mine}: the service desk places a service at \
                         level {asked}"
                    ),
                ));
            }
        }
        order.level = order.level.or(self.account.level);
        if let Some(g) = order
            .group
            .as_deref()
            .filter(|g| !self.account.groups.contains(*g))
        {
            return Err(Denied::new(
                "forbidden",
                format!("you are not in the group {g:?}"),
            ));
        }
        Ok(())
    }

    /// Whether the caller may take `command` on `inc`.
    pub fn may_act(&self, inc: &Incident, command: &Command) -> Result<(), Denied> {
        let action = command.name();
        if self.scope == Scope::Read {
            return Err(Denied::new(
                "read_only_token",
                format!("this token may only read: it cannot {action}"),
            ));
        }
        if !self.may_see(inc) {
            return Err(Denied::new(
                "forbidden",
                format!("incident {} is not addressed to you", inc.number),
            ));
        }
        if let Command::Reserve(spec) = command {
            return self.may_reserve(inc, spec.level);
        }
        if self.has(AccountRole::ServiceDesk) {
            return Ok(());
        }
        if self.has(AccountRole::Technician) {
            return self.technician_may(inc, command);
        }
        if self.has(AccountRole::Provider) {
            match command {
                Command::Note { .. } => return Ok(()),
                // Its own pending request only: never another provider's, nor one that
                // is over.
                Command::ProviderAccept { .. }
                | Command::ProviderPropose { .. }
                | Command::ProviderDone { .. } => {
                    return if self.my_pending_request(inc) {
                        Ok(())
                    } else {
                        Err(Denied::new(
                            "forbidden",
                            format!(
                                "incident {} has no open request addressed to {}",
                                inc.number,
                                self.account.provider.as_deref().unwrap_or("your provider")
                            ),
                        ))
                    };
                }
                _ => {}
            }
        }
        Err(Denied::new(
            "forbidden",
            format!(
                "{} ({}) may not {action} incidents",
                self.account.login,
                self.roles_text()
            ),
        ))
    }

    fn technician_may(&self, inc: &Incident, command: &Command) -> Result<(), Denied> {
        let action = command.name();
        match command {
            Command::Classify(_) | Command::Close { .. } | Command::Reopen { .. } => {
                return Err(Denied::new(
                    "forbidden",
                    format!("only the service desk may {action} an incident"),
                ));
            }
            Command::Assign { assignee, group } => {
                if assignee.as_deref().is_some_and(|a| a != self.account.login) {
                    return Err(Denied::new(
                        "forbidden",
                        "a technician may take an incident for themselves; the service desk \
                         assigns it to others",
                    ));
                }
                if let Some(g) = group
                    .as_deref()
                    .filter(|g| !self.account.groups.contains(*g))
                {
                    return Err(Denied::new(
                        "forbidden",
                        format!("you are not in the group {g:?}"),
                    ));
                }
            }
            _ => {}
        }
        if self.is_mine(inc.assignee.as_deref(), group_of(inc), inc.level) {
            Ok(())
        } else {
            Err(Denied::new(
                "not_yours",
                format!(
                    "incident {} is not yours: it is not assigned to you, not in your groups \
                     and not unassigned at your level",
                    inc.number
                ),
            ))
        }
    }

    /// Whether the caller may set the record's information classification to `level`:
    /// the service desk and admins, cleared both for what the record is now and for
    /// what it would be (nobody lifts or sets a reserve they could not read).
    fn may_reserve(&self, inc: &Incident, level: Secrecy) -> Result<(), Denied> {
        if !self.has(AccountRole::ServiceDesk) && !self.has(AccountRole::Admin) {
            return Err(Denied::new(
                "forbidden",
                "only the service desk and admins set a record's information classification",
            ));
        }
        let now = inc.secrecy(self.now);
        let needed = now.max(level);
        if !self.cleared_for(needed) {
            return Err(Denied::new(
                "clearance",
                format!(
                    "{} is cleared for {} information, and this needs {} ({})",
                    self.account.login,
                    self.clearance(),
                    needed,
                    needed.spanish()
                ),
            ));
        }
        Ok(())
    }

    /// Whether the caller may manage accounts and other people's tokens.
    pub fn may_admin(&self) -> Result<(), Denied> {
        if self.has(AccountRole::Admin) && self.scope == Scope::Admin {
            Ok(())
        } else if self.has(AccountRole::Admin) {
            Err(Denied::new(
                "token_scope",
                "this token's scope does not include account management",
            ))
        } else {
            Err(Denied::new("forbidden", "only an admin manages accounts"))
        }
    }

    fn roles_text(&self) -> String {
        let v: Vec<&str> = self.account.roles.iter().map(|r| r.as_str()).collect();
        v.join(", ")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::workflow::actions::{sample, ACTIONS};
    use crate::workflow::{Incident, State};

    fn caller(login: &str, roles: &[AccountRole], level: Option<Level>, groups: &[&str]) -> Caller {
        let mut a = Account::new(login, roles.iter().copied(), 0);
        a.level = level;
        a.groups = groups.iter().map(|g| g.to_string()).collect();
        if a.has(AccountRole::Provider) {
            a.provider = Some("Acme".into());
        }
        Caller {
            account: a,
            scope: Scope::Admin,
            now: 0,
        }
    }

    fn incident(level: Level, assignee: Option<&str>, group: Option<&str>) -> Incident {
        let origin = crate::workflow::Origin::Report {
            report_id: 1,
            category: "hardware".into(),
            summary: "s".into(),
            text: "t".into(),
            reporter: "ana".into(),
            contact: "x".into(),
            urgency: vigia_protocol::Urgency::Medium,
            snapshot: vec![],
            open_faults: vec![],
        };
        let mut inc = crate::workflow::open(
            7,
            vigia_protocol::DeviceId::new("ws-1").unwrap(),
            origin,
            Default::default(),
            crate::workflow::Actor::System,
            0,
            &crate::workflow::Policy::default(),
        )
        .incident;
        inc.state = State::Level2;
        inc.level = level;
        inc.assignee = assignee.map(str::to_owned);
        inc.group = group.map(str::to_owned);
        inc
    }

    /// The whole matrix: every role against every action, on an incident that is the
    /// technician's (unassigned at level 2) and on one that is not.
    #[test]
    fn every_role_against_every_action() {
        use AccountRole::*;
        let mine = incident(Level::L2, None, None);
        let others = incident(Level::L3, Some("pepe"), Some("redes"));
        let viewer = caller("vera", &[Viewer], None, &[]);
        let tech = caller("tomas", &[Technician], Some(Level::L2), &["soporte"]);
        let desk = caller("marta", &[ServiceDesk], None, &[]);
        let provider = caller("acme", &[Provider], None, &[]);
        let admin = caller("root", &[Admin], None, &[]);
        for spec in ACTIONS {
            let c = sample(spec.action, 0).unwrap();
            let a = spec.action;
            assert!(viewer.may_act(&mine, &c).is_err(), "viewer {a}");
            // An admin alone sets records' classification and works nothing else.
            assert_eq!(
                admin.may_act(&mine, &c).is_ok(),
                a == "reserve",
                "admin alone {a}"
            );
            assert!(desk.may_act(&mine, &c).is_ok(), "desk {a}");
            assert!(desk.may_act(&others, &c).is_ok(), "desk on any {a}");
            // Not addressed to the provider: nothing at all.
            assert!(provider.may_act(&mine, &c).is_err(), "provider {a}");
            let desk_only = matches!(a, "classify" | "close" | "reopen" | "reserve");
            assert_eq!(
                tech.may_act(&mine, &c).is_ok(),
                !desk_only,
                "technician {a}"
            );
            assert_eq!(
                tech.may_act(&others, &c).unwrap_err().code,
                if desk_only { "forbidden" } else { "not_yours" },
                "technician on another's {a}"
            );
        }
    }

    #[test]
    fn a_technicians_incidents_are_theirs_by_assignee_group_or_level() {
        let tech = caller(
            "tomas",
            &[AccountRole::Technician],
            Some(Level::L2),
            &["soporte"],
        );
        let note = Command::Note { text: "x".into() };
        assert!(tech
            .may_act(&incident(Level::L3, Some("tomas"), None), &note)
            .is_ok());
        assert!(tech
            .may_act(&incident(Level::L3, Some("pepe"), Some("soporte")), &note)
            .is_ok());
        assert!(tech
            .may_act(&incident(Level::L2, None, None), &note)
            .is_ok());
        assert!(tech
            .may_act(&incident(Level::L2, Some("pepe"), None), &note)
            .is_err());
        // Taking for oneself is allowed; assigning to someone else is the desk's.
        let inc = incident(Level::L2, None, None);
        let take = Command::Assign {
            assignee: Some("tomas".into()),
            group: None,
        };
        assert!(tech.may_act(&inc, &take).is_ok());
        let give = Command::Assign {
            assignee: Some("pepe".into()),
            group: None,
        };
        assert!(tech.may_act(&inc, &give).is_err());
        let other_group = Command::Assign {
            assignee: None,
            group: Some("redes".into()),
        };
        assert!(tech.may_act(&inc, &other_group).is_err());
    }

    #[test]
    fn a_provider_sees_and_notes_only_what_is_addressed_to_it() {
        let provider = caller("acme", &[AccountRole::Provider], None, &[]);
        let mut inc = incident(Level::L2, None, None);
        assert!(!provider.may_see(&inc));
        let req = serde_json::json!({
            "provider": "ACME", "under_warranty": false, "kind": "unplanned",
            "priority": "P2", "agreed_at": 0, "affects_network": false, "conditions": "",
            "requested_at": 0, "requested_by": "marta", "return_level": 2
        });
        let req = serde_json::from_value(req)
            .unwrap_or_else(|e| panic!("a provider request's shape changed: {e}"));
        inc.provider_requests.push(req);
        assert!(provider.may_see(&inc));
        assert!(provider
            .may_act(&inc, &Command::Note { text: "x".into() })
            .is_ok());
        assert!(provider
            .may_act(
                &inc,
                &Command::Resolve {
                    solution: "x".into()
                }
            )
            .is_err());
    }

    #[test]
    fn a_provider_acts_on_and_reads_only_its_own_requests() {
        use crate::workflow::{apply, Input, Person, ProviderRequestSpec, Role, ServiceKind};
        let desk = Person::new("marta", [Role::ServiceDesk]);
        let step = |inc: &Incident, command: Command, at: u64| {
            let input = Input::Person {
                by: desk.clone(),
                command,
            };
            apply(inc, &input, at, &crate::workflow::Policy::default())
                .unwrap_or_else(|e| panic!("{e}"))
                .incident
        };
        let ask = |provider: &str| {
            Command::RequestProvider(ProviderRequestSpec {
                provider: Some(provider.into()),
                kind: ServiceKind::Unplanned,
                priority: None,
                agreed_at: 10,
                affects_network: false,
                conditions: format!("for {provider}"),
                respond_within: None,
                resolve_within: None,
                request: None,
            })
        };
        let first = step(&incident(Level::L2, None, None), ask("Beta"), 1);
        let done = step(
            &first,
            Command::ProviderDelivered {
                as_agreed: true,
                note: "Beta's verdict".into(),
            },
            2,
        );
        let inc = step(&done, ask("Acme"), 3);
        let inc = step(
            &inc,
            Command::Note {
                text: "for Acme".into(),
            },
            4,
        );
        let acme = caller("acme", &[AccountRole::Provider], None, &[]);
        let mut beta = caller("beta", &[AccountRole::Provider], None, &[]);
        beta.account.provider = Some("Beta".into());
        let accept = Command::ProviderAccept {
            note: String::new(),
        };
        acme.may_act(&inc, &accept).unwrap();
        // Beta once had a request here, so it sees the incident, but may not answer
        // Acme's.
        assert!(beta.may_see(&inc));
        assert_eq!(beta.may_act(&inc, &accept).unwrap_err().code, "forbidden");
        for (who, mine, theirs) in [(&acme, "Acme", "Beta"), (&beta, "Beta", "Acme")] {
            let seen = who.narrow(inc.clone());
            let names: Vec<&str> = seen
                .provider_requests
                .iter()
                .map(|r| r.provider.as_str())
                .collect();
            assert_eq!(names, [mine]);
            let text = serde_json::to_string(&seen).unwrap();
            assert!(
                !text.contains(&format!("for {theirs}")),
                "{mine} reads of {theirs}'s request: {text}"
            );
            assert!(seen.audit.iter().all(|r| r.at >= 1));
        }
        // Acme's view keeps its request's trail and the note made after it; Beta's keeps
        // its own request's trail and verdict, not what came after.
        let acme_view = acme.narrow(inc.clone());
        assert_eq!(
            acme_view
                .audit
                .iter()
                .map(|r| r.action.as_str())
                .collect::<Vec<_>>(),
            ["request_provider", "note"]
        );
        assert_eq!(acme_view.notes.len(), 1);
        let beta_view = beta.narrow(inc.clone());
        assert_eq!(
            beta_view
                .audit
                .iter()
                .map(|r| r.action.as_str())
                .collect::<Vec<_>>(),
            ["request_provider", "provider_delivered"]
        );
        // Staff read it whole.
        let desk_caller = caller("marta", &[AccountRole::ServiceDesk], None, &[]);
        assert_eq!(desk_caller.narrow(inc.clone()), inc);
    }

    #[test]
    fn a_read_token_acts_on_nothing_and_only_admin_scope_manages_accounts() {
        let mut desk = caller(
            "marta",
            &[AccountRole::ServiceDesk, AccountRole::Admin],
            None,
            &[],
        );
        desk.may_admin().unwrap();
        desk.scope = Scope::Act;
        assert_eq!(desk.may_admin().unwrap_err().code, "token_scope");
        desk.scope = Scope::Read;
        let inc = incident(Level::L2, None, None);
        assert_eq!(
            desk.may_act(&inc, &Command::Note { text: "x".into() })
                .unwrap_err()
                .code,
            "read_only_token"
        );
        assert!(caller("v", &[AccountRole::Viewer], None, &[])
            .may_admin()
            .is_err());
    }

    fn reserved(inc: &Incident, level: Secrecy, at: Millis) -> Incident {
        use crate::workflow::{apply, Input, Person, ReserveSpec, Role};
        let input = Input::Person {
            by: Person::new("marta", [Role::ServiceDesk]),
            command: Command::Reserve(ReserveSpec {
                level,
                years: Some(2),
                from: None,
                fields: None,
                justification: "the reporter's health".into(),
            }),
        };
        apply(inc, &input, at, &crate::workflow::Policy::default())
            .unwrap()
            .incident
    }

    #[test]
    fn clearance_defaults_follow_the_roles_and_an_admin_is_always_cleared() {
        use AccountRole::*;
        let of = |roles: &[AccountRole]| caller("x", roles, Some(Level::L2), &[]).clearance();
        assert_eq!(of(&[Viewer]), Secrecy::Public);
        assert_eq!(of(&[Technician]), Secrecy::Public);
        assert_eq!(of(&[Provider]), Secrecy::Public);
        assert_eq!(of(&[ServiceDesk]), Secrecy::Reserved);
        assert_eq!(of(&[Admin]), Secrecy::Classified);
        let mut tech = caller("t", &[Technician], Some(Level::L2), &[]);
        tech.account.clearance = Some(Secrecy::Classified);
        assert_eq!(tech.clearance(), Secrecy::Classified);
        let mut admin = caller("r", &[Admin, ServiceDesk], None, &[]);
        admin.account.clearance = Some(Secrecy::Public);
        assert_eq!(admin.clearance(), Secrecy::Classified);
    }

    #[test]
    fn only_the_cleared_service_desk_and_admins_set_a_records_classification() {
        use crate::workflow::ReserveSpec;
        use AccountRole::*;
        let inc = incident(Level::L2, None, None);
        let ask = |level| {
            Command::Reserve(ReserveSpec {
                level,
                years: Some(1),
                from: None,
                fields: None,
                justification: "x".into(),
            })
        };
        let tech = caller("tomas", &[Technician], Some(Level::L2), &[]);
        let viewer = caller("vera", &[Viewer], None, &[]);
        let desk = caller("marta", &[ServiceDesk], None, &[]);
        let admin = caller("root", &[Admin], None, &[]);
        assert_eq!(
            tech.may_act(&inc, &ask(Secrecy::Reserved))
                .unwrap_err()
                .code,
            "forbidden"
        );
        assert!(viewer.may_act(&inc, &ask(Secrecy::Reserved)).is_err());
        desk.may_act(&inc, &ask(Secrecy::Reserved)).unwrap();
        // The desk is cleared for reserved, not classified: it may not classify.
        assert_eq!(
            desk.may_act(&inc, &ask(Secrecy::Classified))
                .unwrap_err()
                .code,
            "clearance"
        );
        admin.may_act(&inc, &ask(Secrecy::Classified)).unwrap();
        // Nor lift a classification it could not read.
        let secret = reserved(&inc, Secrecy::Classified, 1);
        assert!(desk.may_act(&secret, &ask(Secrecy::Public)).is_err());
        admin.may_act(&secret, &ask(Secrecy::Public)).unwrap();
    }

    #[test]
    fn a_reserved_record_is_hidden_from_whom_is_not_cleared_until_it_lapses() {
        use crate::workflow::{IncidentSummary, Policy, RESERVED};
        use AccountRole::*;
        let mut inc = incident(Level::L2, None, None);
        inc.notes.push(crate::workflow::Note {
            at: 0,
            author: "marta".into(),
            text: "a private matter".into(),
        });
        let inc = reserved(&inc, Secrecy::Reserved, 1);
        let until = inc.reserve.as_ref().unwrap().until;
        let mut tech = caller("tomas", &[Technician], Some(Level::L2), &[]);
        let desk = caller("marta", &[ServiceDesk], None, &[]);
        assert!(tech.may_see(&inc));
        let seen = tech.narrow(inc.clone());
        assert_eq!(seen.notes[0].text, RESERVED);
        let s = tech
            .narrow_summary(IncidentSummary::of(&inc, &Policy::default()))
            .unwrap();
        assert_eq!((s.title.as_str(), s.subject.as_str()), (RESERVED, RESERVED));
        assert_eq!(desk.narrow(inc.clone()), inc);
        // From the day it lapses the record is public to everyone.
        tech.now = until;
        assert_eq!(tech.narrow(inc.clone()), inc);
        // Classified: not there at all for the uncleared, whole for the cleared.
        let secret = reserved(&inc, Secrecy::Classified, 2);
        tech.now = 3;
        assert!(!tech.may_see(&secret));
        assert!(!desk.may_see(&secret));
        let summary = IncidentSummary::of(&secret, &Policy::default());
        assert!(tech.narrow_summary(summary.clone()).is_none());
        assert_eq!(tech.narrow_text(secret.reserve.as_ref(), "x"), None);
        let admin = caller("root", &[Admin], None, &[]);
        assert!(admin.may_see(&secret));
        assert_eq!(admin.narrow_summary(summary.clone()), Some(summary));
    }
}
