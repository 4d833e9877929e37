//! The live feed: the hub's numbered events as Server-Sent Events.
//!
//! Every event carries its id (`run-number`). A browser's `EventSource` sends the last id
//! it saw as `Last-Event-ID` when it reconnects, and gets exactly the events that followed
//! (from the hub's ring), then the live ones; a page that loaded its lists first passes the
//! lists' `X-Feed-Position` as `?since=` so nothing between the two is lost. When the
//! position cannot be resumed (another run of the collector, too old, or this stream fell
//! behind), a `reset` event tells the page to reload its lists. A fresh stream starts with
//! a `ready` event carrying the current position.
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::broadcast;

use super::auth::Authed;
use super::state::{ApiError, HttpState};
use crate::auth::{Caller, Denied};
use crate::outbox::{FeedEntry, FeedEvent, FeedHub, Resume};

/// Query of `GET /api/feed`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    /// Resume after this position (an event id, or a list's `X-Feed-Position`).
    pub since: Option<String>,
}

/// The event as `caller` may read it (see `Caller::narrow_summary`): `None` for one about
/// a record classified beyond its clearance.
fn view(caller: &Caller, e: &FeedEntry) -> Option<FeedEvent> {
    Some(match &e.event {
        FeedEvent::Incident { opened, incident } => FeedEvent::Incident {
            opened: *opened,
            incident: caller.narrow_summary(incident.clone())?,
        },
        FeedEvent::Notification(n) => {
            let mut n = n.clone();
            n.text = caller.narrow_text(e.reserve.as_ref(), &n.text)?;
            FeedEvent::Notification(n)
        }
        other => other.clone(),
    })
}

fn encode(hub: &FeedHub, caller: &Caller, e: &FeedEntry) -> SseEvent {
    let Some(event) = view(caller, e) else {
        // Keeps the stream's numbering without saying anything of the record.
        return SseEvent::default().id(hub.id_of(e.id)).comment("");
    };
    match SseEvent::default()
        .id(hub.id_of(e.id))
        .event(event.name())
        .json_data(&event)
    {
        Ok(ev) => ev,
        Err(err) => SseEvent::default().comment(format!("unencodable event: {err}")),
    }
}

/// The SSE stream. Ends at shutdown so the server's graceful stop is not held open by
/// browsers.
pub(super) async fn stream(
    State(st): State<HttpState>,
    authed: Authed,
    headers: HeaderMap,
    Query(q): Query<FeedQuery>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    if !authed.caller.reads_all() {
        return Err(Denied {
            code: "forbidden",
            why: "the live feed carries every incident; a provider's contact has none".into(),
        }
        .into());
    }
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(q.since);
    let hub = st.feed.clone();
    let (resume, newest, rx) = hub.subscribe(after.as_deref());
    let first: Vec<SseEvent> = match resume {
        Resume::Replay(missed) if missed.is_empty() => {
            vec![SseEvent::default()
                .id(hub.id_of(newest))
                .event("ready")
                .data("{}")]
        }
        Resume::Replay(missed) => missed
            .iter()
            .map(|e| encode(&hub, &authed.caller, e))
            .collect(),
        Resume::Reset => vec![SseEvent::default()
            .id(hub.id_of(newest))
            .event("reset")
            .data("{}")],
    };
    let live = st.metrics.live_client();
    let metrics = st.metrics.clone();
    struct Follow {
        rx: broadcast::Receiver<Arc<FeedEntry>>,
        stopping: tokio::sync::watch::Receiver<bool>,
        hub: FeedHub,
        caller: Caller,
        metrics: Arc<crate::metrics::Metrics>,
        _live: crate::metrics::LiveClientOwned,
    }
    let follow = Follow {
        rx,
        stopping: st.stopping.clone(),
        hub,
        caller: authed.caller.clone(),
        metrics,
        _live: live,
    };
    let rest = futures_util::stream::unfold(follow, |mut f| async move {
        if *f.stopping.borrow() {
            return None;
        }
        let got = tokio::select! {
            r = f.rx.recv() => r,
            _ = f.stopping.wait_for(|s| *s) => return None,
        };
        let sse = match got {
            Ok(entry) => {
                let ev = encode(&f.hub, &f.caller, &entry);
                f.metrics.feed_latency(entry.at.elapsed());
                ev
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                SseEvent::default().event("reset").data(n.to_string())
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(sse), f))
    });
    let stream = futures_util::stream::iter(first.into_iter().map(Ok)).chain(rest);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
