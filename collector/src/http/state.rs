//! What every handler shares: the state, and the API's error answer.
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use tokio::sync::{broadcast, watch, Notify};
use tracing::warn;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::outbox::{Downlink, FeedEvent};
use crate::store::{SharedStore, StoreError};
use crate::workflow::{Policy, WorkflowError};

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    /// The store.
    pub store: SharedStore,
    /// Ingest counters.
    pub metrics: Arc<Metrics>,
    /// Feed events from ingest.
    pub feed: broadcast::Sender<FeedEvent>,
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
}

/// An API error: a status and a message, as JSON `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError(pub(super) StatusCode, pub(super) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        (self.0, Json(Body { error: self.1 })).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::Workflow(w) => match w {
                WorkflowError::Illegal { .. }
                | WorkflowError::NotHigher { .. }
                | WorkflowError::WrongSubject { .. }
                | WorkflowError::ReopenWindowPassed { .. } => StatusCode::CONFLICT,
                WorkflowError::NotServiceDesk { .. } => StatusCode::FORBIDDEN,
                WorkflowError::Empty { .. } | WorkflowError::Provider { .. } => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
            },
            _ => {
                warn!(error = %e, "store failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Self(status, e.to_string())
    }
}

pub(super) fn task_failed(e: tokio::task::JoinError) -> ApiError {
    ApiError(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("store task failed: {e}"),
    )
}

pub(super) fn bad_request(msg: String) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg)
}

pub(super) fn not_found(msg: String) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, msg)
}
