//! Accounts and access: who signs in, with what, and what they may do.
//!
//! - `account`: accounts and their roles (viewer, technician, service desk, provider,
//!   admin), with a technician's level and groups;
//! - `secret`: Argon2id password hashes, random session ids and API tokens, digests;
//! - `access`: the authorisation rules, the one place the server decides who may do what;
//! - `limiter`: sign-in attempts per account and per address.
//!
//! [`Auth`] ties them to the store: sign-in (a new session id every time, stored only as
//! its digest, with a CSRF token), session and token checks (the account is read afresh
//! each time, so disabling it or changing its password ends its sessions and tokens at
//! once), and the first admin of a fresh install. HTTP concerns (cookies, headers,
//! origins) are in `crate::http::auth`.
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use vigia_protocol::Millis;

use crate::clock::Clock;
use crate::store::{SharedStore, StoreError};
use crate::workflow::Dur;

pub mod access;
pub mod account;
pub mod limiter;
pub mod secret;

pub use access::{Caller, Denied, Scope};
pub use account::{Account, AccountError, AccountRole};
pub use limiter::LoginLimiter;
pub use secret::SecretError;

/// The login of the account a fresh install creates.
pub const FIRST_ADMIN: &str = "admin";
/// The file, in the data directory, that holds the first admin's password until it is
/// changed.
pub const FIRST_ADMIN_FILE: &str = "initial-admin-password";
/// The environment variable that sets the first admin's password (unattended installs,
/// tests) instead of a random one.
pub const FIRST_ADMIN_ENV: &str = "VIGIA_INITIAL_ADMIN_PASSWORD";

/// A signed-in browser session, stored under the digest of its cookie.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Whose.
    pub login: String,
    /// The account's generation at sign-in (a password change ends older sessions).
    pub generation: u64,
    /// The CSRF token the page sends back with every change.
    pub csrf: String,
    /// Signed in at.
    pub created_at: Millis,
    /// Last used (updated at most once a minute).
    pub last_seen: Millis,
    /// Idle timeout.
    pub idle_ms: u64,
    /// Ends at the latest.
    pub expires_at: Millis,
}

impl SessionRecord {
    /// Whether it has expired at `now` (idle too long, or past its end).
    pub fn expired(&self, now: Millis) -> bool {
        now >= self.expires_at || now >= self.last_seen.saturating_add(self.idle_ms)
    }
}

/// An API token, stored under its public id with the digest of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id (what lists show and revocation names).
    pub id: String,
    /// The account it acts as.
    pub login: String,
    /// What it is for ("nightly export", "cli on ana-laptop").
    pub name: String,
    /// What it may do, within the account's roles.
    pub scope: Scope,
    /// SHA-256 of the secret.
    pub digest: String,
    /// The account's generation when issued.
    pub generation: u64,
    /// Created at.
    pub created_at: Millis,
}

/// How long sessions last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Idle time after which a session ends.
    pub idle: Dur,
    /// Longest life of a session.
    pub max: Dur,
}

/// Why a sign-in was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Wrong login or password, or a disabled account (indistinguishable on purpose).
    #[error("wrong login or password")]
    BadCredentials,
    /// Too many failures: try again later.
    #[error("too many failed sign-ins; try again in {} s", .0.as_secs())]
    RateLimited(std::time::Duration),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No randomness.
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// A session just opened: the cookie value the browser keeps, and the record.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The cookie's value (the only copy of the secret).
    pub cookie: String,
    /// The stored record.
    pub record: SessionRecord,
    /// The account.
    pub account: Account,
}

/// Sign-in, sessions and tokens over the store.
pub struct Auth {
    store: SharedStore,
    clock: Arc<dyn Clock>,
    limits: SessionLimits,
    limiter: LoginLimiter,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A hash to verify against when the login does not exist, so that a wrong login takes
/// as long as a wrong password and timing tells nothing about which accounts exist.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| secret::hash_password("decoy password").unwrap_or_default())
}

impl Auth {
    /// Sign-in and sessions on `store`, timed by `clock`.
    pub fn new(store: SharedStore, clock: Arc<dyn Clock>, limits: SessionLimits) -> Self {
        Self {
            store,
            clock,
            limits,
            limiter: LoginLimiter::default(),
        }
    }

    /// The collector's time now.
    pub fn now(&self) -> Millis {
        self.clock.now()
    }

    /// Checks `login` and `password` from `addr` and opens a session. Blocking (Argon2 and
    /// the store): run it on the blocking pool.
    pub fn login(
        &self,
        login: &str,
        password: &str,
        addr: IpAddr,
    ) -> Result<NewSession, LoginError> {
        let account = self.check_password(login, password, addr)?;
        let now = self.clock.now();
        let cookie = secret::random_token()?;
        let record = SessionRecord {
            login: account.login.clone(),
            generation: account.generation,
            csrf: secret::random_token()?,
            created_at: now,
            last_seen: now,
            idle_ms: self.limits.idle.ms(),
            expires_at: now.saturating_add(self.limits.max.ms()),
        };
        // Expired sessions go when new ones come: the tree holds live sessions only.
        if let Err(e) = self.store.prune_sessions(now) {
            warn!(error = %e, "cannot prune expired sessions");
        }
        self.store.put_session(&secret::digest(&cookie), &record)?;
        self.store.flush()?;
        Ok(NewSession {
            cookie,
            record,
            account,
        })
    }

    /// The account whose `password` this is, counting failures per account and address.
    pub fn check_password(
        &self,
        login: &str,
        password: &str,
        addr: IpAddr,
    ) -> Result<Account, LoginError> {
        let login = login.trim().to_lowercase();
        let started = std::time::Instant::now();
        self.limiter
            .check(&login, addr, started)
            .map_err(LoginError::RateLimited)?;
        let account = self.store.account(&login)?;
        let hash = account
            .as_ref()
            .map_or_else(|| decoy_hash(), |a| a.password.as_str());
        let ok = secret::verify_password(password, hash);
        match account {
            Some(a) if ok && !a.disabled => {
                self.limiter.succeeded(&login);
                Ok(a)
            }
            _ => {
                self.limiter.failed(&login, addr, started);
                Err(LoginError::BadCredentials)
            }
        }
    }

    /// The caller a session cookie stands for, with the session; `None` when it is
    /// unknown, expired, or its account is disabled or changed its password since.
    pub fn session(&self, cookie: &str) -> Result<Option<(Caller, SessionRecord)>, StoreError> {
        let key = secret::digest(cookie);
        let Some(mut s) = self.store.session(&key)? else {
            return Ok(None);
        };
        let now = self.clock.now();
        if s.expired(now) {
            self.store.remove_session(&key)?;
            return Ok(None);
        }
        let Some(account) = self.live_account(&s.login, s.generation)? else {
            self.store.remove_session(&key)?;
            return Ok(None);
        };
        if now.saturating_sub(s.last_seen) >= 60_000 {
            s.last_seen = now;
            self.store.put_session(&key, &s)?;
        }
        Ok(Some((
            Caller {
                account,
                scope: Scope::Admin,
                now,
            },
            s,
        )))
    }

    /// Ends the session of `cookie`.
    pub fn logout(&self, cookie: &str) -> Result<(), StoreError> {
        self.store.remove_session(&secret::digest(cookie))?;
        self.store.flush()
    }

    /// The caller an API token stands for, with its record.
    pub fn token(&self, token: &str) -> Result<Option<(Caller, TokenRecord)>, StoreError> {
        let Some(id) = secret::token_id(token) else {
            return Ok(None);
        };
        let Some(rec) = self.store.token(id)? else {
            return Ok(None);
        };
        if !secret::same(&rec.digest, &secret::digest(token)) {
            return Ok(None);
        }
        let Some(account) = self.live_account(&rec.login, rec.generation)? else {
            return Ok(None);
        };
        let scope = rec.scope;
        let now = self.clock.now();
        Ok(Some((
            Caller {
                account,
                scope,
                now,
            },
            rec,
        )))
    }

    /// Issues a token for `account`; returns the record and the secret (shown once).
    pub fn issue_token(
        &self,
        account: &Account,
        name: &str,
        scope: Scope,
    ) -> Result<(TokenRecord, String), LoginError> {
        let (id, token) = secret::new_api_token()?;
        let rec = TokenRecord {
            id,
            login: account.login.clone(),
            name: name.trim().to_owned(),
            scope,
            digest: secret::digest(&token),
            generation: account.generation,
            created_at: self.clock.now(),
        };
        self.store.put_token(&rec)?;
        self.store.flush()?;
        Ok((rec, token))
    }

    fn live_account(&self, login: &str, generation: u64) -> Result<Option<Account>, StoreError> {
        Ok(self
            .store
            .account(login)?
            .filter(|a| !a.disabled && a.generation == generation))
    }
}

/// The first admin a fresh install gets.
#[derive(Debug, Clone)]
pub struct FirstAdmin {
    /// Its login.
    pub login: String,
    /// Its password (random unless set by [`FIRST_ADMIN_ENV`]).
    pub password: String,
    /// The file that holds the password until it is changed.
    pub file: PathBuf,
}

/// Creates the first admin when no account exists: `admin`, holding the admin and service
/// desk roles, with the password from [`FIRST_ADMIN_ENV`] or a random one, written to
/// [`FIRST_ADMIN_FILE`] in `data_dir` (mode 0600) for whoever runs the collector. Returns
/// it, or `None` when accounts exist.
pub fn ensure_first_admin(
    store: &SharedStore,
    data_dir: &Path,
    now: Millis,
    password: Option<String>,
) -> Result<Option<FirstAdmin>, FirstAdminError> {
    if store.account_count()? > 0 {
        return Ok(None);
    }
    let password = match password.filter(|p| !p.is_empty()) {
        Some(p) => {
            account::check_password(&p).map_err(FirstAdminError::Password)?;
            p
        }
        None => secret::random_password()?,
    };
    let mut admin = Account::new(
        FIRST_ADMIN,
        [AccountRole::Admin, AccountRole::ServiceDesk],
        now,
    );
    admin.name = "Administrator".into();
    admin.password = secret::hash_password(&password)?;
    if !store.insert_account(&admin)? {
        return Ok(None);
    }
    store.flush()?;
    let file = data_dir.join(FIRST_ADMIN_FILE);
    write_private(&file, &format!("{password}\n")).map_err(|source| FirstAdminError::File {
        file: file.clone(),
        source,
    })?;
    info!(login = FIRST_ADMIN, file = %file.display(),
        "first start: created the admin account; its password is in the file");
    Ok(Some(FirstAdmin {
        login: FIRST_ADMIN.into(),
        password,
        file,
    }))
}

/// Writes `text` to `path` readable by its owner only.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// Removes the first admin's password file once that password changed (it is wrong now).
pub fn forget_first_password(data_dir: &Path) {
    let file = data_dir.join(FIRST_ADMIN_FILE);
    match std::fs::remove_file(&file) {
        Ok(()) => info!(file = %file.display(), "removed the first admin's password file"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            warn!(file = %file.display(), error = %e, "cannot remove the first admin's password file")
        }
    }
}

/// Why the first admin could not be created.
#[derive(Debug, thiserror::Error)]
pub enum FirstAdminError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No randomness, or Argon2 failed.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The password set in the environment is unacceptable.
    #[error("{FIRST_ADMIN_ENV}: {0}")]
    Password(AccountError),
    /// The password file could not be written.
    #[error("cannot write the first admin's password to {file}: {source}")]
    File {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}
