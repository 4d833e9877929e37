//! The HTTP side of accounts: the guard every request passes (host, origin, security
//! headers, refusals logged and counted), the [`Authed`] extractor (a session cookie
//! with its CSRF token, or an API token), and the endpoints for sessions, tokens,
//! preferences and accounts.
//!
//! - Sessions: `POST /api/session` signs in and sets the `vigia_session` cookie
//!   (HttpOnly, SameSite=Strict, Secure over TLS), a new random id every time; `GET`
//!   returns the account and the CSRF token the page sends back in `X-CSRF-Token` with
//!   every change; `DELETE` signs out.
//! - Tokens: `POST /api/tokens` issues one (signed in, or with a login and password, for
//!   the CLI's `login`); `GET` lists the caller's (`?all=true`: everyone's, for an admin);
//!   `DELETE /api/tokens/{id}` revokes (`current`: the token making the request).
//! - Accounts (admin): `GET/POST /api/users`, `PATCH /api/users/{login}`.
//! - `PUT /api/me/preferences`, `PUT /api/me/password`.
//!
//! A change made with a cookie needs the CSRF token and, when the browser says where the
//! request comes from (`Origin`, `Sec-Fetch-Site`), the console's own origin; a change
//! made with a token needs neither (a browser never attaches one by itself).
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::state::{
    bad_request, blocking, internal, invalid, not_found, ApiError, ErrorCode, HttpState,
};
use crate::auth::account::{check_locale, check_password};
use crate::auth::{
    forget_first_password, secret, Account, AccountRole, Caller, Denied, LoginError, Scope,
    SessionRecord, FIRST_ADMIN,
};
use crate::config::WebSettings;
use crate::metrics::Login;
use crate::workflow::{Level, Secrecy};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "vigia_session";
/// The header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The Content-Security-Policy of every answer: scripts, styles and connections from the
/// console itself only, no inline script, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; font-src 'self'; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'";

/// Where a request came from, as the guard worked it out.
#[derive(Debug, Clone)]
pub struct Client {
    /// The client's address (the proxy's `X-Forwarded-For` when the proxy is trusted).
    pub addr: IpAddr,
    /// Whether the browser reached us over HTTPS (directly, or through a trusted proxy).
    pub https: bool,
}

fn is_unsafe(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn header_str(h: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// The host part of a `Host` value (`example.org:8790` → `example.org`, `[::1]:80` →
/// `[::1]`), lower case.
fn host_only(host: &str) -> String {
    let h = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    h.trim_end_matches('.').to_ascii_lowercase()
}

fn refuse(status: StatusCode, code: &'static str, msg: &str) -> Response {
    ApiError::new(status, code, msg).into_response()
}

/// The guard: works out the client, checks `Host` against the allowed hosts and the
/// origin of changes, then adds the security headers and logs and counts refusals.
pub async fn guard(State(st): State<HttpState>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let web: &WebSettings = &st.web;
    let trusted = web.trusted_proxies.contains(&peer);
    let headers = req.headers();
    let forwarded = |name: &str| trusted.then(|| header_str(headers, name)).flatten();
    let addr = forwarded("x-forwarded-for")
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(peer);
    let https = web.tls.is_some() || forwarded("x-forwarded-proto") == Some("https");
    let host = forwarded("x-forwarded-host")
        .or_else(|| header_str(headers, header::HOST))
        .unwrap_or("")
        .to_owned();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();

    let refusal = if !web.allowed_hosts.is_empty() && !web.allowed_hosts.contains(&host_only(&host))
    {
        Some(refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "host",
            "this collector does not answer to that host name (see [http] allowed_hosts)",
        ))
    } else if is_unsafe(&method) {
        let origin = header_str(headers, header::ORIGIN);
        let site = header_str(headers, "sec-fetch-site");
        let own = format!("{}://{}", if https { "https" } else { "http" }, host);
        match origin {
            Some(o) if !o.eq_ignore_ascii_case(&own) => Some(refuse(
                StatusCode::FORBIDDEN,
                "origin",
                "a page of another site may not change anything here",
            )),
            None if site == Some("cross-site") => Some(refuse(
                StatusCode::FORBIDDEN,
                "origin",
                "a page of another site may not change anything here",
            )),
            _ => None,
        }
    } else {
        None
    };
    let mut resp = match refusal {
        Some(r) => r,
        None => {
            req.extensions_mut().insert(Client { addr, https });
            next.run(req).await
        }
    };
    let status = resp.status();
    if status == StatusCode::FORBIDDEN || status == StatusCode::MISDIRECTED_REQUEST {
        let code = resp
            .extensions()
            .get::<ErrorCode>()
            .map_or("forbidden", |c| c.0);
        warn!(%method, %path, client = %addr, code, "request refused");
        st.metrics.forbidden();
    } else if status == StatusCode::UNAUTHORIZED {
        st.metrics.unauthenticated();
    }
    let h = resp.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    if path.starts_with("/api/") {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if web.tls.is_some() {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    resp
}

/// How the caller proved who they are.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A console session (the cookie's value, and the record).
    Session(String, SessionRecord),
    /// An API token (its id).
    Token(String),
}

/// An authenticated request: the caller, and the credential it came with.
#[derive(Debug, Clone)]
pub struct Authed {
    /// Who, with what rights.
    pub caller: Caller,
    /// With what.
    pub credential: Credential,
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

fn unauthenticated(code: &'static str, msg: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, msg)
}

impl FromRequestParts<HttpState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &HttpState) -> Result<Self, ApiError> {
        authenticate(st, &parts.headers, &parts.method).await
    }
}

/// Who the request's credentials stand for (see [`Authed`]).
pub async fn authenticate(
    st: &HttpState,
    headers: &HeaderMap,
    method: &Method,
) -> Result<Authed, ApiError> {
    let auth = st.auth.clone();
    if let Some(v) = header_str(headers, header::AUTHORIZATION) {
        let Some(token) = v.strip_prefix("Bearer ").map(str::trim).map(str::to_owned) else {
            return Err(unauthenticated(
                "unauthenticated",
                "use `Authorization: Bearer <token>`",
            ));
        };
        return match blocking(move || auth.token(&token).map_err(ApiError::from)).await? {
            Some((caller, rec)) => Ok(Authed {
                caller,
                credential: Credential::Token(rec.id),
            }),
            None => Err(unauthenticated(
                "bad_token",
                "the token is unknown, revoked, or its account is disabled",
            )),
        };
    }
    let Some(cookie) = cookie_value(headers, SESSION_COOKIE).map(str::to_owned) else {
        return Err(unauthenticated("unauthenticated", "sign in first"));
    };
    let c = cookie.clone();
    let Some((caller, session)) =
        blocking(move || auth.session(&c).map_err(ApiError::from)).await?
    else {
        return Err(unauthenticated(
            "session_expired",
            "the session has ended; sign in again",
        ));
    };
    if is_unsafe(method) {
        let sent = header_str(headers, CSRF_HEADER).unwrap_or("");
        if !secret::same(sent, &session.csrf) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "missing or wrong X-CSRF-Token: reload the page",
            ));
        }
    }
    Ok(Authed {
        caller,
        credential: Credential::Session(cookie, session),
    })
}

/// An account as the API shows it (never its password hash).
#[derive(Debug, Clone, Serialize)]
pub struct AccountView {
    /// Login.
    pub login: String,
    /// Name.
    pub name: String,
    /// Roles.
    pub roles: BTreeSet<AccountRole>,
    /// A technician's level.
    pub level: Option<Level>,
    /// Groups.
    pub groups: BTreeSet<String>,
    /// A provider contact's provider.
    pub provider: Option<String>,
    /// Where its routes' notifications go.
    pub email: Option<String>,
    /// Console language.
    pub locale: Option<String>,
    /// Time zone.
    pub time_zone: Option<String>,
    /// Disabled.
    pub disabled: bool,
    /// Whether a password is set.
    pub has_password: bool,
    /// The most restricted information it reads now (public, reserved, classified).
    pub clearance: Secrecy,
    /// Whether that clearance was set on the account rather than taken from its roles.
    pub clearance_set: bool,
}

impl From<&Account> for AccountView {
    fn from(a: &Account) -> Self {
        Self {
            login: a.login.clone(),
            name: a.display_name().to_owned(),
            roles: a.roles.clone(),
            level: a.level,
            groups: a.groups.clone(),
            provider: a.provider.clone(),
            email: a.email.clone(),
            locale: a.locale.clone(),
            time_zone: a.time_zone.clone(),
            disabled: a.disabled,
            has_password: !a.password.is_empty(),
            clearance: a.clearance(),
            clearance_set: a.clearance.is_some(),
        }
    }
}

/// The answer of `GET /api/session`: the account, and (for a session) its CSRF token.
#[derive(Debug, Serialize)]
pub struct SessionView {
    /// The account.
    #[serde(flatten)]
    pub account: AccountView,
    /// The CSRF token (sessions only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf: Option<String>,
    /// The credential's scope.
    pub scope: Scope,
}

fn session_view(caller: &Caller, csrf: Option<String>) -> SessionView {
    SessionView {
        account: AccountView::from(&caller.account),
        csrf,
        scope: caller.scope,
    }
}

pub(super) async fn whoami(a: Authed) -> Json<SessionView> {
    let csrf = match &a.credential {
        Credential::Session(_, s) => Some(s.csrf.clone()),
        Credential::Token(_) => None,
    };
    Json(session_view(&a.caller, csrf))
}

/// `POST /api/session` and the password form of `POST /api/tokens`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Credentials {
    login: String,
    password: String,
}

fn login_error(st: &HttpState, e: LoginError) -> Response {
    match e {
        LoginError::BadCredentials => {
            st.metrics.login(Login::Failed);
            unauthenticated("bad_credentials", "wrong login or password").into_response()
        }
        LoginError::RateLimited(wait) => {
            st.metrics.login(Login::Limited);
            let mut r = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "too many failed sign-ins; try again in {} s",
                    wait.as_secs()
                ),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&wait.as_secs().to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        LoginError::Store(e) => ApiError::from(e).into_response(),
        LoginError::Secret(e) => internal(e.to_string()).into_response(),
    }
}

fn session_cookie(value: &str, secure: bool, max_age_s: u64) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let v = format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}"
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

pub(super) async fn login(
    State(st): State<HttpState>,
    axum::Extension(client): axum::Extension<Client>,
    Json(c): Json<Credentials>,
) -> Response {
    let auth = st.auth.clone();
    let addr = client.addr;
    let res = tokio::task::spawn_blocking(move || auth.login(&c.login, &c.password, addr)).await;
    let new = match res {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => return login_error(&st, e),
        Err(e) => return super::state::task_failed(e).into_response(),
    };
    st.metrics.login(Login::Ok);
    info!(login = %new.account.login, client = %addr, "signed in");
    let caller = Caller {
        account: new.account.clone(),
        scope: Scope::Admin,
        now: st.clock.now(),
    };
    let max_age = new.record.expires_at.saturating_sub(new.record.created_at) / 1000;
    let mut resp = Json(session_view(&caller, Some(new.record.csrf.clone()))).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&new.cookie, client.https, max_age),
    );
    resp
}

pub(super) async fn logout(
    State(st): State<HttpState>,
    axum::Extension(client): axum::Extension<Client>,
    a: Authed,
) -> Result<Response, ApiError> {
    let Credential::Session(cookie, _) = a.credential else {
        return Err(bad_request(
            "a token has no session to end; revoke it with DELETE /api/tokens/current".into(),
        ));
    };
    let auth = st.auth.clone();
    blocking(move || auth.logout(&cookie).map_err(ApiError::from)).await?;
    info!(login = %a.caller.account.login, "signed out");
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, session_cookie("", client.https, 0));
    Ok(resp)
}

/// `PUT /api/me/preferences`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Preferences {
    #[serde(default)]
    locale: Option<String>,
    #[serde(default)]
    time_zone: Option<String>,
}

pub(super) async fn preferences(
    State(st): State<HttpState>,
    a: Authed,
    Json(p): Json<Preferences>,
) -> Result<Json<SessionView>, ApiError> {
    check_locale(p.locale.as_deref()).map_err(|e| invalid(e.to_string()))?;
    if let Some(tz) = &p.time_zone {
        if tz.is_empty()
            || tz.len() > 64
            || !tz
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c))
        {
            return Err(invalid(format!(
                "time zone {tz:?}: use an IANA name like Europe/Madrid"
            )));
        }
    }
    let store = st.store.clone();
    let login = a.caller.account.login.clone();
    let account = blocking(move || {
        let mut acc = store
            .account(&login)?
            .ok_or_else(|| not_found(format!("no account {login}")))?;
        acc.locale = p.locale;
        acc.time_zone = p.time_zone;
        store.put_account(&acc)?;
        store.flush()?;
        Ok(acc)
    })
    .await?;
    let csrf = match &a.credential {
        Credential::Session(_, s) => Some(s.csrf.clone()),
        Credential::Token(_) => None,
    };
    let caller = Caller {
        account,
        scope: a.caller.scope,
        now: a.caller.now,
    };
    Ok(Json(session_view(&caller, csrf)))
}

/// `PUT /api/me/password`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PasswordChange {
    current: String,
    new: String,
}

pub(super) async fn change_password(
    State(st): State<HttpState>,
    axum::Extension(client): axum::Extension<Client>,
    a: Authed,
    Json(p): Json<PasswordChange>,
) -> Result<Response, ApiError> {
    check_password(&p.new).map_err(|e| invalid(e.to_string()))?;
    let (auth, store, dir) = (st.auth.clone(), st.store.clone(), st.data_dir.clone());
    let login = a.caller.account.login.clone();
    let addr = client.addr;
    let st2 = st.clone();
    let res = tokio::task::spawn_blocking(move || {
        let mut acc = match auth.check_password(&login, &p.current, addr) {
            Ok(acc) => acc,
            Err(e) => return Ok(Err(e)),
        };
        acc.password = secret::hash_password(&p.new).map_err(|e| internal(e.to_string()))?;
        acc.generation += 1;
        store.put_account(&acc)?;
        store.flush()?;
        if acc.login == FIRST_ADMIN {
            forget_first_password(&dir);
        }
        // The change ended every session, this one too: open a new one for the caller.
        let new = match auth.login(&acc.login, &p.new, addr) {
            Ok(n) => n,
            Err(e) => return Ok(Err(e)),
        };
        Ok::<_, ApiError>(Ok(new))
    })
    .await
    .map_err(super::state::task_failed)??;
    let new = match res {
        Ok(n) => n,
        Err(LoginError::BadCredentials) => {
            st2.metrics.login(Login::Failed);
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "bad_credentials",
                "the current password is wrong",
            ));
        }
        Err(e) => return Ok(login_error(&st2, e)),
    };
    info!(login = %new.account.login, "password changed; other sessions ended");
    let caller = Caller {
        account: new.account.clone(),
        scope: Scope::Admin,
        now: st.clock.now(),
    };
    let max_age = new.record.expires_at.saturating_sub(new.record.created_at) / 1000;
    let mut resp = Json(session_view(&caller, Some(new.record.csrf.clone()))).into_response();
    if matches!(a.credential, Credential::Session(..)) {
        resp.headers_mut().insert(
            header::SET_COOKIE,
            session_cookie(&new.cookie, client.https, max_age),
        );
    }
    Ok(resp)
}

/// `POST /api/tokens`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenRequest {
    name: String,
    #[serde(default = "default_scope")]
    scope: Scope,
    #[serde(default)]
    login: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

fn default_scope() -> Scope {
    Scope::Act
}

/// A token as lists show it (never its secret).
#[derive(Debug, Serialize)]
pub struct TokenView {
    id: String,
    login: String,
    name: String,
    scope: Scope,
    created_at: u64,
    /// The secret: only in the answer that issues it.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

impl From<&crate::auth::TokenRecord> for TokenView {
    fn from(r: &crate::auth::TokenRecord) -> Self {
        Self {
            id: r.id.clone(),
            login: r.login.clone(),
            name: r.name.clone(),
            scope: r.scope,
            created_at: r.created_at,
            token: None,
        }
    }
}

pub(super) async fn issue_token(
    State(st): State<HttpState>,
    axum::Extension(client): axum::Extension<Client>,
    method: Method,
    headers: HeaderMap,
    Json(t): Json<TokenRequest>,
) -> Response {
    match issue_token_inner(&st, client, &method, &headers, t).await {
        Ok(r) | Err(r) => r,
    }
}

async fn issue_token_inner(
    st: &HttpState,
    client: Client,
    method: &Method,
    headers: &HeaderMap,
    t: TokenRequest,
) -> Result<Response, Response> {
    if t.name.trim().is_empty() || t.name.chars().count() > 100 {
        return Err(
            invalid("name the token (1 to 100 characters): what is it for?".into()).into_response(),
        );
    }
    let account = match (&t.login, &t.password) {
        (Some(login), Some(password)) => {
            let (auth, login, password) = (st.auth.clone(), login.clone(), password.clone());
            let addr = client.addr;
            match tokio::task::spawn_blocking(move || auth.check_password(&login, &password, addr))
                .await
            {
                Ok(Ok(acc)) => {
                    st.metrics.login(Login::Ok);
                    acc
                }
                Ok(Err(e)) => return Err(login_error(st, e)),
                Err(e) => return Err(super::state::task_failed(e).into_response()),
            }
        }
        (None, None) => {
            let a = authenticate(st, headers, method)
                .await
                .map_err(IntoResponse::into_response)?;
            if t.scope > a.caller.scope {
                return Err(ApiError::from(Denied {
                    code: "token_scope",
                    why: "a token cannot issue one with a wider scope than its own".into(),
                })
                .into_response());
            }
            a.caller.account
        }
        _ => {
            return Err(bad_request(
                "give both login and password, or neither (and sign in)".into(),
            )
            .into_response())
        }
    };
    let auth = st.auth.clone();
    let name = t.name.clone();
    let scope = t.scope;
    let (rec, token) =
        match tokio::task::spawn_blocking(move || auth.issue_token(&account, &name, scope)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(login_error(st, e)),
            Err(e) => return Err(super::state::task_failed(e).into_response()),
        };
    info!(login = %rec.login, token = %rec.id, scope = rec.scope.as_str(), "API token issued");
    let mut view = TokenView::from(&rec);
    view.token = Some(token);
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenListQuery {
    #[serde(default)]
    all: bool,
}

pub(super) async fn list_tokens(
    State(st): State<HttpState>,
    a: Authed,
    Query(q): Query<TokenListQuery>,
) -> Result<Json<Vec<TokenView>>, ApiError> {
    if q.all {
        a.caller.may_admin()?;
    }
    let store = st.store.clone();
    let login = a.caller.account.login.clone();
    let list = blocking(move || Ok(store.tokens()?)).await?;
    Ok(Json(
        list.iter()
            .filter(|t| q.all || t.login == login)
            .map(TokenView::from)
            .collect(),
    ))
}

pub(super) async fn revoke_token(
    State(st): State<HttpState>,
    a: Authed,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = if id == "current" {
        match &a.credential {
            Credential::Token(t) => t.clone(),
            Credential::Session(..) => {
                return Err(bad_request(
                    "`current` names the token making the request".into(),
                ))
            }
        }
    } else {
        id
    };
    let store = st.store.clone();
    let caller = a.caller.clone();
    blocking(move || {
        let rec = store
            .token(&id)?
            .ok_or_else(|| not_found(format!("no token {id}")))?;
        if rec.login != caller.account.login {
            caller.may_admin()?;
        }
        store.remove_token(&id)?;
        store.flush()?;
        info!(token = %id, by = %caller.account.login, "API token revoked");
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn list_users(
    State(st): State<HttpState>,
    a: Authed,
) -> Result<Json<Vec<AccountView>>, ApiError> {
    if !a.caller.reads_all() {
        a.caller.may_admin()?;
    }
    let store = st.store.clone();
    let list = blocking(move || Ok(store.accounts()?)).await?;
    Ok(Json(list.iter().map(AccountView::from).collect()))
}

/// `POST /api/users` and `PATCH /api/users/{login}`: the fields to set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AccountChange {
    #[serde(default)]
    login: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    roles: Option<BTreeSet<AccountRole>>,
    #[serde(default, with = "double_option")]
    level: Option<Option<Level>>,
    #[serde(default)]
    groups: Option<BTreeSet<String>>,
    #[serde(default)]
    add_groups: Vec<String>,
    #[serde(default)]
    remove_groups: Vec<String>,
    #[serde(default, with = "double_option")]
    provider: Option<Option<String>>,
    /// `null` or `""` clears it.
    #[serde(default, with = "double_option")]
    email: Option<Option<String>>,
    /// `null` goes back to the roles' default.
    #[serde(default, with = "double_option")]
    clearance: Option<Option<Secrecy>>,
    #[serde(default)]
    disabled: Option<bool>,
    /// A password to set; `""` on creation generates one and returns it.
    #[serde(default)]
    password: Option<String>,
}

/// `null` (clear) apart from absent (leave as it is).
mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

/// The answer to creating an account or setting a password: the account, and the
/// password when the server made it up.
#[derive(Debug, Serialize)]
pub(super) struct AccountAnswer {
    #[serde(flatten)]
    account: AccountView,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<String>,
}

fn apply_change(acc: &mut Account, c: &AccountChange) -> Result<Option<String>, ApiError> {
    if let Some(n) = &c.name {
        acc.name = n.trim().to_owned();
    }
    if let Some(r) = &c.roles {
        acc.roles = r.clone();
    }
    if let Some(l) = c.level {
        acc.level = l;
    }
    if let Some(g) = &c.groups {
        acc.groups = g.iter().map(|g| g.trim().to_owned()).collect();
    }
    for g in &c.add_groups {
        acc.groups.insert(g.trim().to_owned());
    }
    for g in &c.remove_groups {
        acc.groups.remove(g.trim());
    }
    if let Some(p) = &c.provider {
        acc.provider = p.as_ref().map(|p| p.trim().to_owned());
    }
    if let Some(e) = &c.email {
        acc.email = e
            .as_ref()
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty());
    }
    if let Some(cl) = c.clearance {
        acc.clearance = cl;
    }
    if let Some(d) = c.disabled {
        if d && !acc.disabled {
            acc.generation += 1;
        }
        acc.disabled = d;
    }
    let mut made_up = None;
    if let Some(p) = &c.password {
        let p = if p.is_empty() {
            let p = secret::random_password().map_err(|e| internal(e.to_string()))?;
            made_up = Some(p.clone());
            p
        } else {
            check_password(p).map_err(|e| invalid(e.to_string()))?;
            p.clone()
        };
        acc.password = secret::hash_password(&p).map_err(|e| internal(e.to_string()))?;
        acc.generation += 1;
    }
    acc.validate().map_err(|e| invalid(e.to_string()))?;
    Ok(made_up)
}

/// Refuses a change that would leave no enabled admin.
fn keeps_an_admin(store: &crate::store::SharedStore, changed: &Account) -> Result<(), ApiError> {
    let others = store
        .accounts()?
        .into_iter()
        .filter(|a| a.login != changed.login)
        .any(|a| a.has(AccountRole::Admin) && !a.disabled);
    if others || (changed.has(AccountRole::Admin) && !changed.disabled) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::CONFLICT,
            "last_admin",
            format!(
                "{} is the last enabled admin: make another admin first",
                changed.login
            ),
        ))
    }
}

pub(super) async fn create_user(
    State(st): State<HttpState>,
    a: Authed,
    Json(c): Json<AccountChange>,
) -> Result<(StatusCode, Json<AccountAnswer>), ApiError> {
    a.caller.may_admin()?;
    let login = c
        .login
        .clone()
        .map(|l| l.trim().to_lowercase())
        .ok_or_else(|| invalid("give the new account a login".into()))?;
    let (store, now, by) = (
        st.store.clone(),
        st.clock.now(),
        a.caller.account.login.clone(),
    );
    let answer = blocking(move || {
        let mut acc = Account::new(login.clone(), [], now);
        let mut c = c;
        c.password.get_or_insert_with(String::new);
        let password = apply_change(&mut acc, &c)?;
        if !store.insert_account(&acc)? {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "exists",
                format!("an account {login} exists"),
            ));
        }
        store.flush()?;
        info!(login = %acc.login, by = %by, roles = ?acc.roles, "account created");
        Ok(AccountAnswer {
            account: AccountView::from(&acc),
            password,
        })
    })
    .await?;
    Ok((StatusCode::CREATED, Json(answer)))
}

pub(super) async fn update_user(
    State(st): State<HttpState>,
    a: Authed,
    Path(login): Path<String>,
    Json(c): Json<AccountChange>,
) -> Result<Json<AccountAnswer>, ApiError> {
    a.caller.may_admin()?;
    if c.login.as_deref().is_some_and(|l| l != login) {
        return Err(invalid(
            "a login cannot be changed; create a new account".into(),
        ));
    }
    let (store, dir, by) = (
        st.store.clone(),
        st.data_dir.clone(),
        a.caller.account.login.clone(),
    );
    let answer = blocking(move || {
        let mut acc = store
            .account(&login)?
            .ok_or_else(|| not_found(format!("no account {login}")))?;
        let password = apply_change(&mut acc, &c)?;
        keeps_an_admin(&store, &acc)?;
        store.put_account(&acc)?;
        store.flush()?;
        if c.password.is_some() && acc.login == FIRST_ADMIN {
            forget_first_password(&dir);
        }
        info!(login = %acc.login, by = %by, roles = ?acc.roles, disabled = acc.disabled,
            "account changed");
        Ok(AccountAnswer {
            account: AccountView::from(&acc),
            password,
        })
    })
    .await?;
    Ok(Json(answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_lose_their_port() {
        assert_eq!(host_only("Example.org:8790"), "example.org");
        assert_eq!(host_only("localhost"), "localhost");
        assert_eq!(host_only("[::1]:8790"), "[::1]");
        assert_eq!(host_only("127.0.0.1:1"), "127.0.0.1");
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; vigia_session=abc ; b=2"),
        );
        assert_eq!(cookie_value(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie_value(&h, "c"), None);
        let c = session_cookie("x", true, 60);
        let c = c.to_str().unwrap_or_default();
        for part in [
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Max-Age=60",
            "Path=/",
        ] {
            assert!(c.contains(part), "{c}");
        }
    }
}
