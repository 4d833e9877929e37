//! The HTTP side: a JSON API over the store, Prometheus metrics, and a live incident feed
//! (a self-contained page fed by Server-Sent Events).
//!
//! The server takes an already bound listener and a shutdown future, so tests bind port 0
//! and the caller decides when it stops. It reads the store directly (sled reads are
//! in-memory for hot data and short), trading a little latency under heavy ingest for not
//! keeping a second copy of anything. It has no authentication: it listens on loopback by
//! default, and a real deployment puts it behind a proxy that adds it. Who acts is named
//! in each action's JSON body (`"as"` and `"roles"`) and trusted as given — the audit
//! trail records it, but nothing checks it yet.
//!
//! Actions (`POST /api/incidents/{n}/{action}`, where `{action}` is a workflow
//! [`Command`](crate::workflow::Command)'s name and the body its fields) run the workflow
//! in one store transaction, flush, and only then send what the decision emits (device commands,
//! notifications). A transition the workflow refuses is `409 Conflict` with the engine's
//! text, which names the state and the action.
//!
//! `incidents` serves the incident lists, details and actions; `devices` the fleet;
//! `export` the *Servicios soporte* record; `feed` the live stream; the page and its
//! assets are built into the binary from `assets/`.
use std::future::Future;

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

mod devices;
mod export;
mod feed;
mod incidents;
mod state;

pub use devices::DeviceSummary;
pub use export::ExportQuery;
pub use incidents::{
    command_of, ActionBody, IncidentDetail, IncidentQuery, DEFAULT_LIMIT, MAX_LIMIT,
};
pub use state::{ApiError, HttpState};

/// The console page, built into the binary (no CDN, no build step).
const CONSOLE_PAGE: &str = include_str!("assets/console.html");

/// The API's routes.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/api/incidents", get(incidents::list))
        .route("/api/incidents/{id}", get(incidents::show))
        .route("/api/incidents/{id}/{action}", post(incidents::act))
        .route("/api/export", get(export::export))
        .route("/api/devices", get(devices::list))
        .route("/api/devices/{id}", get(devices::show))
        .route("/api/devices/{id}/events", get(devices::events))
        .route("/api/feed", get(feed::stream))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn page() -> Html<&'static str> {
    Html(CONSOLE_PAGE)
}

async fn metrics(State(st): State<HttpState>) -> Result<Response, ApiError> {
    let counts = st.store.incident_counts()?;
    let by_state: Vec<(&str, u64)> = counts.iter().map(|(s, n)| (s.as_str(), *n)).collect();
    let devices = st.store.devices()?;
    let online = devices.iter().filter(|d| d.online()).count() as u64;
    let text = st.metrics.render(&by_state, devices.len() as u64, online);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
