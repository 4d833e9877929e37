//! The live feed: the outbox's feed events as Server-Sent Events.
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use tokio::sync::broadcast;

use super::state::HttpState;

/// The SSE stream: every feed event as `event: incident|device` with JSON data; a
/// `lagged` event when this subscriber fell behind (the page then reloads its lists).
/// Ends at shutdown so the server's graceful stop is not held open by browsers.
pub(super) async fn stream(
    State(st): State<HttpState>,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = st.feed.subscribe();
    let stopping = st.stopping.clone();
    let stream =
        futures_util::stream::unfold((rx, stopping), |(mut rx, mut stopping)| async move {
            if *stopping.borrow() {
                return None;
            }
            let ev = tokio::select! {
                r = rx.recv() => r,
                _ = stopping.wait_for(|s| *s) => return None,
            };
            let sse = match ev {
                Ok(ev) => {
                    let name = ev.name();
                    match SseEvent::default().event(name).json_data(&ev) {
                        Ok(e) => e,
                        Err(e) => SseEvent::default().comment(format!("unencodable event: {e}")),
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    SseEvent::default().event("lagged").data(n.to_string())
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((Ok(sse), (rx, stopping)))
        });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
