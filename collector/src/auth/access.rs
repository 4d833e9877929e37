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
use serde::{Deserialize, Serialize};

use super::account::{Account, AccountRole};
use crate::workflow::{Command, Incident, IncidentSummary, Level, Millis};

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

    /// Whether the caller may see `inc`.
    pub fn may_see(&self, inc: &Incident) -> bool {
        self.reads_all() || self.addressed_to_my_provider(inc)
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

    /// What of `inc` a provider's contact may read: its own provider's requests, and the
    /// notes and trail of the time each was the incident's latest. Another provider's
    /// requests (and what happened in their time), the user's answers to IT's questions
    /// and what came before are left out. Staff see everything, so this leaves their view as it is.
    pub fn narrow(&self, mut inc: Incident) -> Incident {
        if self.reads_all() {
            return inc;
        }
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
            assert!(admin.may_act(&mine, &c).is_err(), "admin alone {a}");
            assert!(desk.may_act(&mine, &c).is_ok(), "desk {a}");
            assert!(desk.may_act(&others, &c).is_ok(), "desk on any {a}");
            // Not addressed to the provider: nothing at all.
            assert!(provider.may_act(&mine, &c).is_err(), "provider {a}");
            let desk_only = matches!(a, "classify" | "close" | "reopen");
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
}
