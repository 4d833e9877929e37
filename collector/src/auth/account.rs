//! Accounts: who may sign in to the console or hold an API token, with the roles the
//! support procedures give people.
use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use vigia_protocol::Millis;

use crate::workflow::{Level, Person, Role, Secrecy};

/// The longest login accepted.
pub const MAX_LOGIN: usize = 64;
/// The shortest password accepted (NIST SP 800-63B's floor for chosen passwords).
pub const MIN_PASSWORD: usize = 8;
/// The longest password accepted (Argon2 takes any length; this bounds the work).
pub const MAX_PASSWORD: usize = 1024;

/// What an account may do. An account may hold several (a service-desk person who also
/// administers Vigía holds `service_desk` and `admin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountRole {
    /// Sees incidents and devices; changes nothing.
    Viewer,
    /// Works the incidents of their groups at their level (level 1 at the service desk,
    /// level 2 on site or as a specialist, level 3).
    Technician,
    /// The *Mesa de servicio*: triage, classification, definitive closure, reopening; acts
    /// on every incident.
    ServiceDesk,
    /// A provider's contact: sees and updates only the requests addressed to its provider.
    Provider,
    /// Manages accounts, groups and tokens.
    Admin,
}

impl AccountRole {
    /// Every role, in the order they are listed.
    pub const ALL: [AccountRole; 5] = [
        Self::Viewer,
        Self::Technician,
        Self::ServiceDesk,
        Self::Provider,
        Self::Admin,
    ];

    /// The role's name on the wire and in the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Technician => "technician",
            Self::ServiceDesk => "service_desk",
            Self::Provider => "provider",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for AccountRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AccountRole {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown role {s:?}; use viewer, technician, service_desk, provider or admin"
                )
            })
    }
}

/// An account as stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The login (lower case letters, digits, `.`, `_`, `-`).
    pub login: String,
    /// The person's name, for the console.
    #[serde(default)]
    pub name: String,
    /// What they may do.
    pub roles: BTreeSet<AccountRole>,
    /// A technician's level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
    /// Support groups they belong to.
    #[serde(default)]
    pub groups: BTreeSet<String>,
    /// For a provider's contact: the provider they speak for (as named in requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Where the notifications of routes naming the account's roles go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The Argon2id hash (PHC string); empty when the account has no password yet.
    #[serde(default)]
    pub password: String,
    /// A disabled account cannot sign in, and its sessions and tokens stop working.
    #[serde(default)]
    pub disabled: bool,
    /// Console language (`es`, `en`); `None` follows the browser.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// Time zone for dates (IANA name); `None` follows the browser.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Created at (collector clock).
    pub created_at: Millis,
    /// Bumped by every password change and disable: sessions and tokens issued before
    /// the current generation stop working.
    #[serde(default)]
    pub generation: u64,
    /// The most restricted information it may read (public, reserved, classified);
    /// `None` takes its roles' default ([`Account::clearance`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clearance: Option<Secrecy>,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("login", &self.login)
            .field("roles", &self.roles)
            .field("level", &self.level)
            .field("groups", &self.groups)
            .field("provider", &self.provider)
            .field("email", &self.email)
            .field("disabled", &self.disabled)
            .field("clearance", &self.clearance)
            .finish_non_exhaustive()
    }
}

/// Why an account's fields are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// A login outside the allowed characters or length.
    #[error("login {0:?}: use 1 to 64 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit")]
    Login(String),
    /// No role.
    #[error("account {0}: give it at least one role")]
    NoRole(String),
    /// A technician without a level.
    #[error("account {0}: a technician needs a level (1, 2 or 3)")]
    NoLevel(String),
    /// A provider's contact without a provider.
    #[error("account {0}: a provider's contact needs the provider it speaks for")]
    NoProvider(String),
    /// A group name that is empty or too long.
    #[error("group {0:?}: use 1 to 64 characters")]
    Group(String),
    /// A password too short or too long.
    #[error("the password must have {MIN_PASSWORD} to {MAX_PASSWORD} characters")]
    Password,
    /// A locale the console does not have.
    #[error("locale {0:?}: the console speaks es and en")]
    Locale(String),
    /// An email address that does not parse.
    #[error("{0}")]
    Email(String),
}

/// Whether `login` is an acceptable login.
pub fn valid_login(login: &str) -> bool {
    !login.is_empty()
        && login.len() <= MAX_LOGIN
        && login
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && login
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

/// Checks a password's length (in characters, as people count them).
pub fn check_password(password: &str) -> Result<(), AccountError> {
    let n = password.chars().count();
    if (MIN_PASSWORD..=MAX_PASSWORD).contains(&n) {
        Ok(())
    } else {
        Err(AccountError::Password)
    }
}

/// Checks a console locale.
pub fn check_locale(locale: Option<&str>) -> Result<(), AccountError> {
    match locale {
        None | Some("es") | Some("en") => Ok(()),
        Some(other) => Err(AccountError::Locale(other.to_owned())),
    }
}

impl Account {
    /// A new account with `roles` and no password.
    pub fn new(
        login: impl Into<String>,
        roles: impl IntoIterator<Item = AccountRole>,
        now: Millis,
    ) -> Self {
        Self {
            login: login.into(),
            name: String::new(),
            roles: roles.into_iter().collect(),
            level: None,
            groups: BTreeSet::new(),
            provider: None,
            email: None,
            password: String::new(),
            disabled: false,
            locale: None,
            time_zone: None,
            created_at: now,
            generation: 0,
            clearance: None,
        }
    }

    /// The default clearance of `roles`: an admin is cleared for classified records (it
    /// sets every account's clearance, its own included, so less would protect nothing);
    /// the service desk, which sets records' classification, for reserved ones; everyone
    /// else reads public information only.
    pub fn default_clearance(roles: &BTreeSet<AccountRole>) -> Secrecy {
        if roles.contains(&AccountRole::Admin) {
            Secrecy::Classified
        } else if roles.contains(&AccountRole::ServiceDesk) {
            Secrecy::Reserved
        } else {
            Secrecy::Public
        }
    }

    /// The most restricted information the account may read: the one set on it, else its
    /// roles' default; an admin is always cleared for everything.
    pub fn clearance(&self) -> Secrecy {
        let default = Self::default_clearance(&self.roles);
        if self.has(AccountRole::Admin) {
            return default;
        }
        self.clearance.unwrap_or(default)
    }

    /// Checks the fields together.
    pub fn validate(&self) -> Result<(), AccountError> {
        if !valid_login(&self.login) {
            return Err(AccountError::Login(self.login.clone()));
        }
        if self.roles.is_empty() {
            return Err(AccountError::NoRole(self.login.clone()));
        }
        if self.has(AccountRole::Technician) && self.level.is_none() {
            return Err(AccountError::NoLevel(self.login.clone()));
        }
        if self.has(AccountRole::Provider)
            && self.provider.as_deref().is_none_or(|p| p.trim().is_empty())
        {
            return Err(AccountError::NoProvider(self.login.clone()));
        }
        if let Some(g) = self
            .groups
            .iter()
            .find(|g| g.trim().is_empty() || g.chars().count() > 64)
        {
            return Err(AccountError::Group(g.clone()));
        }
        if let Some(e) = &self.email {
            // A bare address: a display name would let a user's text into a mail header.
            if e.len() > 254 || e.contains(['<', '>', ',', '"']) {
                return Err(AccountError::Email(format!(
                    "{e:?}: give a bare address (name@example.org)"
                )));
            }
            crate::notify::channel::mailbox(e).map_err(AccountError::Email)?;
        }
        check_locale(self.locale.as_deref())
    }

    /// Whether the account holds `role`.
    pub fn has(&self, role: AccountRole) -> bool {
        self.roles.contains(&role)
    }

    /// The name the console shows: the person's name, else the login.
    pub fn display_name(&self) -> &str {
        if self.name.trim().is_empty() {
            &self.login
        } else {
            &self.name
        }
    }

    /// The person the workflow records in the audit trail: the login, with the workflow
    /// roles the account's roles and level stand for.
    pub fn person(&self) -> Person {
        let mut roles = Vec::new();
        if self.has(AccountRole::ServiceDesk) {
            roles.push(Role::ServiceDesk);
        }
        if self.has(AccountRole::Technician) {
            match self.level {
                Some(Level::L2) => roles.push(Role::OnSite),
                Some(Level::L3) => roles.push(Role::Specialist),
                _ => {}
            }
        }
        if self.has(AccountRole::Provider) {
            roles.push(Role::Provider);
        }
        Person::new(self.login.clone(), roles)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn logins_are_plain_lower_case_names() {
        for ok in ["ana", "luis.perez", "tec_2", "9lives", "a-b"] {
            assert!(valid_login(ok), "{ok}");
        }
        for bad in [
            "",
            "Ana",
            "-ana",
            ".x",
            "ana perez",
            "ana@x",
            &"a".repeat(65),
        ] {
            assert!(!valid_login(bad), "{bad}");
        }
    }

    #[test]
    fn a_technician_needs_a_level_and_a_provider_contact_its_provider() {
        let mut a = Account::new("tec", [AccountRole::Technician], 0);
        assert_eq!(a.validate(), Err(AccountError::NoLevel("tec".into())));
        a.level = Some(Level::L2);
        a.validate().unwrap();
        let mut p = Account::new("acme", [AccountRole::Provider], 0);
        assert!(matches!(p.validate(), Err(AccountError::NoProvider(_))));
        p.provider = Some("Acme".into());
        p.validate().unwrap();
        assert!(matches!(
            Account::new("x", [], 0).validate(),
            Err(AccountError::NoRole(_))
        ));
    }

    #[test]
    fn the_workflow_sees_the_login_and_the_roles_it_checks() {
        let mut a = Account::new("marta", [AccountRole::ServiceDesk], 0);
        assert!(a.person().has(Role::ServiceDesk));
        assert_eq!(a.person().name, "marta");
        a.roles = [AccountRole::Technician].into();
        a.level = Some(Level::L2);
        let p = a.person();
        assert!(
            !p.has(Role::ServiceDesk),
            "a technician is not the service desk"
        );
        assert!(p.has(Role::OnSite));
    }

    #[test]
    fn roles_parse_from_their_names() {
        for r in AccountRole::ALL {
            assert_eq!(r.as_str().parse::<AccountRole>().unwrap(), r);
        }
        assert_eq!(
            "service-desk".parse::<AccountRole>().unwrap(),
            AccountRole::ServiceDesk
        );
        assert!("root".parse::<AccountRole>().is_err());
    }
}
