//! The workflow timer task.
//!
//! The engine says when an incident's next timer falls due ([`workflow::next_deadline`]);
//! the store keeps those deadlines in a `timers` tree ordered by time, so this task sleeps
//! until the earliest one (or until a write pokes it), then runs
//! [`Store::tick_due`](crate::store::Store::tick_due) and
//! sends what the decisions emit, after the flush. The clock is a trait so tests drive
//! time by hand ([`ManualClock`](crate::clock::ManualClock)) and call [`Timers::run_due`] — the same path the task
//! takes — instead of sleeping. The trade-off of one task over per-incident timers: a
//! burst of due incidents is handled in order, one transaction each, bounded per round.
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing::{debug, error, info};

use crate::clock::Clock;
use crate::outbox::{deliver, Downlink, FeedHub};
use crate::store::{SharedStore, StoreError};
use crate::workflow::Policy;

/// Incidents ticked per round (one flush per round).
const ROUND: usize = 512;
/// The longest the task sleeps without looking again (a clock jump, a missed wake-up).
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Why a round of timers failed.
#[derive(Debug, thiserror::Error)]
pub enum TimerError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blocking task running the store work failed.
    #[error("timer task failed: {0}")]
    Task(String),
}

/// What the timers need.
#[derive(Clone)]
pub struct Timers {
    /// The store.
    pub store: SharedStore,
    /// The workflow policy.
    pub policy: Arc<Policy>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Where commands to devices go.
    pub downlink: Downlink,
    /// The live feed.
    pub feed: FeedHub,
    /// Poked by writers when a deadline may have moved earlier.
    pub wake: Arc<Notify>,
}

impl Timers {
    /// Runs every timer due now: ticks, flushes, then sends. Returns how many incidents
    /// changed.
    pub async fn run_due(&self) -> Result<usize, TimerError> {
        let mut total = 0;
        loop {
            let now = self.clock.now();
            let store = self.store.clone();
            let policy = self.policy.clone();
            let decisions = tokio::task::spawn_blocking(move || {
                let d = store.tick_due(now, &policy, ROUND)?;
                store.flush()?;
                Ok::<_, StoreError>(d)
            })
            .await
            .map_err(|e| TimerError::Task(e.to_string()))??;
            let n = decisions.len();
            if n > 0 {
                for d in &decisions {
                    info!(incident = d.incident.number, state = %d.incident.state,
                        level = %d.incident.level, "timer acted");
                }
                let pairs: Vec<_> = decisions.into_iter().map(|d| (d, false)).collect();
                deliver(&pairs, &self.downlink, &self.feed, &self.policy);
            }
            total += n;
            if n < ROUND {
                return Ok(total);
            }
        }
    }

    /// Starts the task; it ends when `stop` becomes true.
    pub fn spawn(self, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            // The SLA targets in the config may differ from those the timers were written
            // with; recompute in the background rather than delay start-up.
            let (store, policy) = (self.store.clone(), self.policy.clone());
            match tokio::task::spawn_blocking(move || store.reschedule_timers(&policy)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(moved)) => info!(moved, "timers rescheduled for the configured policy"),
                Ok(Err(e)) => error!(error = %e, "cannot reschedule the timers; keeping them"),
                Err(e) => error!(error = %e, "timer rescheduling task failed"),
            }
            loop {
                if *stop.borrow() {
                    return;
                }
                if let Err(e) = self.run_due().await {
                    error!(error = %e, "workflow timers failed; retrying");
                }
                let wait = match self.store.next_timer() {
                    Ok(Some(t)) => {
                        let now = self.clock.now();
                        // A timer still due after a round (an engine that keeps it due)
                        // must not spin: look again after a second.
                        let ms = if t <= now { 1000 } else { t - now };
                        Duration::from_millis(ms).min(MAX_SLEEP)
                    }
                    Ok(None) => MAX_SLEEP,
                    Err(e) => {
                        error!(error = %e, "cannot read the timer queue");
                        MAX_SLEEP
                    }
                };
                debug!(wait_ms = wait.as_millis() as u64, "timers sleeping");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.wake.notified() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        })
    }
}
