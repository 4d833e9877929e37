//! What every handler shares: the state, and the API's error answer.
use std::path::PathBuf;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use tokio::sync::{watch, Notify};
use tracing::warn;

use crate::auth::{Auth, Denied};
use crate::clock::Clock;
use crate::config::WebSettings;
use crate::metrics::Metrics;
use crate::outbox::Downlink;
use crate::outbox::FeedHub;
use crate::store::{SharedStore, StoreError};
use crate::workflow::{Policy, WorkflowError};

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    /// The store.
    pub store: SharedStore,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The live feed: numbered events and their recent past, for resuming streams.
    pub feed: FeedHub,
    /// Becomes `true` at shutdown, so open feed streams end and the server can stop.
    pub stopping: watch::Receiver<bool>,
    /// The workflow policy.
    pub policy: Arc<Policy>,
    /// The collector's clock.
    pub clock: Arc<dyn Clock>,
    /// Commands to devices.
    pub downlink: Downlink,
    /// Pokes the timer task after a change.
    pub wake: Arc<Notify>,
    /// Sign-in, sessions, tokens.
    pub auth: Arc<Auth>,
    /// TLS, allowed hosts, trusted proxies.
    pub web: Arc<WebSettings>,
    /// The data directory (the first admin's password file lives there).
    pub data_dir: PathBuf,
    /// Notification channels (for "send a test").
    pub notify: Arc<crate::notify::NotifyConfig>,
    /// Self-enrolment, when the broker has the dynamic-security plugin.
    pub enrolment: Option<Arc<crate::enrolment::Enrolment>>,
}

/// An API error: a status, a stable code for scripts, and a message for people, as JSON
/// `{"error": "...", "code": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) message: String,
}

/// The code of an error answer, left in the response's extensions for the guard (which
/// logs and counts refusals).
#[derive(Debug, Clone, Copy)]
pub(super) struct ErrorCode(pub(super) &'static str);

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            error: &'a str,
            code: &'a str,
        }
        let mut resp = (
            self.status,
            Json(Body {
                error: &self.message,
                code: self.code,
            }),
        )
            .into_response();
        resp.extensions_mut().insert(ErrorCode(self.code));
        resp
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> Self {
        Self::new(StatusCode::FORBIDDEN, d.code, d.why)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let (status, code) = match &e {
            StoreError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            StoreError::UnknownDevice(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unknown_device"),
            StoreError::Workflow(w) => match w {
                WorkflowError::Illegal { .. }
                | WorkflowError::NotHigher { .. }
                | WorkflowError::WrongSubject { .. }
                | WorkflowError::ReopenWindowPassed { .. } => (StatusCode::CONFLICT, "conflict"),
                WorkflowError::NotServiceDesk { .. } => (StatusCode::FORBIDDEN, "forbidden"),
                WorkflowError::Empty { .. }
                | WorkflowError::Provider { .. }
                | WorkflowError::Reserve { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            },
            _ => {
                warn!(error = %e, "store failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        Self::new(status, code, e.to_string())
    }
}

pub(super) fn task_failed(e: tokio::task::JoinError) -> ApiError {
    internal(format!("store task failed: {e}"))
}

pub(super) fn internal(msg: String) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", msg)
}

pub(super) fn bad_request(msg: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", msg)
}

pub(super) fn invalid(msg: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", msg)
}

pub(super) fn not_found(msg: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", msg)
}

/// Runs blocking store work on the blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(task_failed)?
}
