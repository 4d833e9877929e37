//! The HTTP side: the console (a small single-page app built into the binary), its JSON
//! API, Prometheus metrics, and the live feed (Server-Sent Events).
//!
//! The server takes an already bound listener and a shutdown future, so tests bind port 0
//! and the caller decides when it stops; with `[http] tls_cert`/`tls_key` it serves HTTPS
//! (`tls`). Every request passes `auth::guard` (allowed hosts, the origin of changes,
//! security headers), and every API handler but sign-in takes an authenticated caller
//! (`auth::Authed`: a session cookie with its CSRF token, or an API token) and asks
//! `crate::auth::access` before it reads or changes anything. `/healthz` and `/metrics`
//! are open, for probes and scrapers (they tell counts, never contents).
//!
//! Actions (`POST /api/incidents/{n}/{action}`, where `{action}` is a workflow
//! [`Command`](crate::workflow::Command)'s name and the body its fields) run the workflow
//! in one store transaction, flush, and only then send what the decision emits (device
//! commands, notifications, the feed). A transition the workflow refuses is `409
//! Conflict` with the engine's text, which names the state and the action; one the caller
//! may not take is `403` with a stable `code`.
//!
//! `incidents` serves the incident lists, counts, details and actions; `devices` the
//! fleet; `export` the *Servicios soporte* record; `requests` provider requests across
//! incidents; `feed` the live stream; `auth` the
//! guard, sessions, tokens and accounts; the page and its assets are built into the
//! binary from `assets/`.
use std::future::Future;

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use tokio::net::TcpListener;

pub mod auth;
mod devices;
mod enrolments;
mod export;
mod feed;
mod incidents;
mod providers;
mod requests;
mod state;
pub mod tls;

pub use devices::DeviceSummary;
pub use export::ExportQuery;
pub use incidents::{command_of, Counts, IncidentDetail, IncidentQuery, DEFAULT_LIMIT, MAX_LIMIT};
pub use state::{ApiError, HttpState};

/// The console's files, built into the binary (no CDN, no build step): the path each is
/// served at, its content type, and its text.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "/assets/console.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    ),
    (
        "/assets/i18n.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/i18n.js"),
    ),
    (
        "/assets/console.css",
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    ),
];

/// The console's shell page; the app routes `/login`, `/incidents/{n}`, `/devices/{id}`,
/// `/fleet` and `/providers` itself.
const INDEX: &str = include_str!("assets/index.html");

/// The routes.
pub fn router(state: HttpState) -> Router {
    let mut r = Router::new();
    for path in [
        "/",
        "/login",
        "/fleet",
        "/providers",
        "/enrolments",
        "/incidents/{n}",
        "/devices/{id}",
    ] {
        r = r.route(path, get(index));
    }
    for (path, kind, body) in ASSETS {
        r = r.route(
            path,
            get(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, *kind),
                        (header::CACHE_CONTROL, "no-cache"),
                    ],
                    *body,
                )
            }),
        );
    }
    r.route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route(
            "/api/session",
            get(auth::whoami).post(auth::login).delete(auth::logout),
        )
        .route("/api/me/preferences", put(auth::preferences))
        .route("/api/me/password", put(auth::change_password))
        .route(
            "/api/tokens",
            get(auth::list_tokens).post(auth::issue_token),
        )
        .route(
            "/api/tokens/{id}",
            axum::routing::delete(auth::revoke_token),
        )
        .route("/api/users", get(auth::list_users).post(auth::create_user))
        .route(
            "/api/users/{login}",
            axum::routing::patch(auth::update_user),
        )
        .route("/api/incidents", get(incidents::list))
        .route("/api/incidents/bulk", post(incidents::bulk))
        .route("/api/incidents/{id}", get(incidents::show))
        .route("/api/incidents/{id}/{action}", post(incidents::act))
        .route("/api/counts", get(incidents::counts))
        .route("/api/export", get(export::export))
        .route("/api/archive", get(export::archive))
        .route("/api/devices", get(devices::list))
        .route("/api/devices/{id}", get(devices::show))
        .route("/api/devices/{id}/events", get(devices::events))
        .route(
            "/api/devices/{id}/warranty",
            put(devices::set_warranty).delete(devices::clear_warranty),
        )
        .route("/api/devices/{id}/revoke", post(enrolments::revoke))
        .route("/api/enrolments", get(enrolments::list))
        .route("/api/enrolments/sites", post(enrolments::site_token))
        .route(
            "/api/enrolments/sites/{site}",
            axum::routing::delete(enrolments::remove_site),
        )
        .route("/api/enrolments/{request}/{action}", post(enrolments::act))
        .route("/api/warranties", post(devices::import_warranties))
        .route("/api/providers", get(providers::list))
        .route(
            "/api/providers/{name}",
            get(providers::show)
                .put(providers::put)
                .delete(providers::remove),
        )
        .route(
            "/api/providers/{name}/minutes",
            post(providers::add_minutes),
        )
        .route("/api/requests", get(requests::list).post(requests::create))
        .route("/api/requests/{id}", get(requests::show))
        .route("/api/requests/{id}/{action}", post(requests::act))
        .route("/api/feed", get(feed::stream))
        .route("/api/notify/test", post(notify_test))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        .with_state(state)
}

/// Serves the console and API on `listener` until `shutdown` completes: over TLS when
/// the settings have a certificate.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = state.web.tls.clone();
    let app = router(state);
    match tls {
        Some(cfg) => tls::serve(listener, app, cfg, shutdown).await,
        None => {
            // The live feed's events and the API's answers are small writes: each goes
            // out at once instead of waiting on the browser's delayed ACK (Nagle).
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "TCP_NODELAY not set");
                }
            });
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
        }
    }
}

async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX,
    )
}

/// The counters always answer; the store's gauges only when the store does (a failing
/// store is when operators look).
async fn metrics(State(st): State<HttpState>) -> Result<Response, ApiError> {
    let store = st.store.clone();
    let (counts, devices, outbox) = state::blocking(move || {
        Ok((
            // Not shown: counts by state only, no record.
            store.incident_counts().ok(),
            store.devices().ok(),
            store.outbox_len() as u64,
        ))
    })
    .await?;
    let counts = counts.unwrap_or_default();
    let by_state: Vec<(&str, u64)> = counts.iter().map(|(s, n)| (s.as_str(), *n)).collect();
    let devices = devices.unwrap_or_default();
    let online = devices.iter().filter(|d| d.online()).count() as u64;
    let text = st
        .metrics
        .render(&by_state, devices.len() as u64, online, outbox);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// `POST /api/notify/test` `{"channel": "email", "to": "it@example.org"}` or
/// `{"channel": "webhook", "to": "chat"}` (admins): sends a test message now, outside the
/// outbox, and says whether the relay or the webhook took it.
async fn notify_test(
    axum::extract::State(st): axum::extract::State<HttpState>,
    a: auth::Authed,
    axum::Json(req): axum::Json<NotifyTest>,
) -> Result<axum::Json<serde_json::Value>, state::ApiError> {
    a.caller.may_admin()?;
    tracing::info!(by = %a.caller.account.login, channel = ?req.channel, to = %req.to,
        "notification test requested");
    match crate::notify::sender::send_test(st.notify.clone(), req.channel, req.to.clone()).await {
        Ok(()) => Ok(axum::Json(serde_json::json!({"sent": true, "to": req.to}))),
        Err(e) => Err(state::ApiError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            "not_delivered",
            format!("the test to {} was not delivered: {e}", req.to),
        )),
    }
}

/// The body of `POST /api/notify/test`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyTest {
    channel: crate::notify::Channel,
    to: String,
}

#[cfg(test)]
mod narrowing_tests {
    /// The HTTP layer's sources, every file that could answer with incidents.
    const SOURCES: [(&str, &str); 9] = [
        ("auth.rs", include_str!("auth.rs")),
        ("devices.rs", include_str!("devices.rs")),
        ("export.rs", include_str!("export.rs")),
        ("feed.rs", include_str!("feed.rs")),
        ("incidents.rs", include_str!("incidents.rs")),
        ("mod.rs", include_str!("mod.rs")),
        ("providers.rs", include_str!("providers.rs")),
        ("requests.rs", include_str!("requests.rs")),
        ("state.rs", include_str!("state.rs")),
    ];

    /// The store's reads of incidents (whole, summaries, rows, the archive, their
    /// notifications).
    const READS: [&str; 7] = [
        ".incident(",
        ".incidents(",
        ".export(",
        ".verifications(",
        "archive.read(",
        ".notifications_of(",
        ".incident_counts(",
    ];

    /// What a read must be followed by (within a few lines) or preceded by: the caller's
    /// narrowing (`Caller::narrow`, `narrow_summary`, `narrow_text`), its visibility check
    /// (`may_see`), the export's view built from them, or a comment saying it is not shown.
    const NARROWED: [&str; 4] = ["narrow", "may_see", "&view", "Not shown:"];

    /// A tripwire for information classification: every place the HTTP layer reads
    /// incidents goes through the caller's narrowing, so no new answer can forget to
    /// hide reserved fields or classified records. A new read without it fails here,
    /// naming its file and line.
    #[test]
    fn every_read_of_incidents_goes_through_the_callers_narrowing() {
        let mut reads = 0;
        for (file, text) in SOURCES {
            let code = text.split("#[cfg(test)]").next().unwrap_or(text);
            let lines: Vec<&str> = code.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                if line.trim_start().starts_with("//") || !READS.iter().any(|r| line.contains(r)) {
                    continue;
                }
                reads += 1;
                let near = lines[i.saturating_sub(3)..(i + 12).min(lines.len())].join("\n");
                assert!(
                    NARROWED.iter().any(|m| near.contains(m)),
                    "http/{file}:{}: a read of incidents that no narrowing follows: {}",
                    i + 1,
                    line.trim()
                );
            }
        }
        assert!(reads >= 15, "the scan lost the reads it looks for: {reads}");
    }
}
