//! The task that delivers the notification outbox: routes new entries, sends what is due,
//! records each result before the next send, retries temporary failures with backoff.
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tracing::{info, warn};
use vigia_protocol::Millis;

use super::channel::{self, Mailer, Outcome};
use super::{
    digest_of, render, route, Channel, Delivery, DeliveryState, NotifyConfig, NotifyEntry,
};
use crate::clock::Clock;
use crate::store::SharedStore;

/// How often the sender looks for due retries when nothing wakes it.
const POLL: Duration = Duration::from_millis(500);

/// When to try again after a delivery's `attempts`-th failure: `first`, doubling, at most
/// `max`, and never sooner than the receiver asked.
pub fn retry_wait(
    attempts: u32,
    first: Duration,
    max: Duration,
    asked: Option<Duration>,
) -> Duration {
    let doublings = attempts.saturating_sub(1).min(20);
    let backoff = first.saturating_mul(1u32 << doublings).min(max);
    asked.map_or(backoff, |a| backoff.max(a))
}

/// Delivers the notification outbox. Cheap to share: [`NotifySender::wake`] is what a
/// stored change calls.
pub struct NotifySender {
    /// The store holding the outbox.
    pub store: SharedStore,
    /// Channels and routes.
    pub config: Arc<NotifyConfig>,
    /// The collector's clock.
    pub clock: Arc<dyn Clock>,
    /// Woken when a change queued notifications.
    pub wake: Arc<Notify>,
}

impl NotifySender {
    /// Runs until `stop` turns true.
    pub fn spawn(self, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mailer = match &self.config.email {
                Some(c) => match Mailer::new(c) {
                    Ok(m) => Some(Arc::new(m)),
                    Err(e) => {
                        warn!(error = %e, "email notifications are off: the relay's settings do not work");
                        None
                    }
                },
                None => None,
            };
            loop {
                self.send_due(mailer.as_ref()).await;
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(POLL) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        })
    }

    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&SharedStore) -> Result<R, crate::store::StoreError> + Send + 'static,
    ) -> Option<R> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(Ok(r)) => Some(r),
            Ok(Err(e)) => {
                warn!(error = %e, "notification outbox: store failed");
                None
            }
            Err(e) => {
                warn!(error = %e, "notification outbox task failed");
                None
            }
        }
    }

    async fn send_due(&self, mailer: Option<&Arc<Mailer>>) {
        let now = self.clock.now();
        let Some(entries) = self.blocking(move |s| s.notify_due(now, 64)).await else {
            return;
        };
        let mut digests: Vec<(Channel, String, super::Lang)> = Vec::new();
        for mut e in entries {
            if !e.routed {
                let Some(routed) = self.route_one(e, now).await else {
                    continue;
                };
                e = routed;
            }
            for d in &e.deliveries {
                if d.state == DeliveryState::Held
                    && d.next_at <= now
                    && !digests
                        .iter()
                        .any(|(c, to, _)| *c == d.channel && *to == d.to)
                {
                    digests.push((d.channel, d.to.clone(), d.lang));
                }
            }
            for i in 0..e.deliveries.len() {
                let d = &e.deliveries[i];
                if d.state != DeliveryState::Pending || d.next_at > self.clock.now() {
                    continue;
                }
                let outcome = self.send_one(&e, i, mailer).await;
                let now = self.clock.now();
                let key = e.key(i);
                let d = &mut e.deliveries[i];
                d.attempts = d.attempts.saturating_add(1);
                self.record(d, &key, e.incident, outcome, now);
                let snapshot = e.clone();
                // Written down before the next send: a restart resends only what this
                // does not record.
                self.blocking(move |s| s.notify_put(&snapshot).and_then(|()| s.flush()))
                    .await;
            }
        }
        for (channel, to, lang) in digests {
            self.queue_digest(channel, to, lang).await;
        }
    }

    /// Routes a new entry: its recipients, each delivery held for the digest when it
    /// repeats a fault its recipient was told of less than the digest's period ago.
    /// Written down with the recipients' last-told times before anything is sent.
    /// `None` when the store failed (the entry stays unrouted, to be routed again).
    async fn route_one(&self, mut e: NotifyEntry, now: Millis) -> Option<NotifyEntry> {
        let to_provider = e.provider.clone().filter(|_| self.config.email.is_some());
        let accounts =
            if to_provider.is_some() || self.config.route.iter().any(|r| !r.accounts.is_empty()) {
                // Read at routing time: an address changed in the API counts from then on.
                self.blocking(|s| s.accounts()).await?
            } else {
                Vec::new()
            };
        let provider = match to_provider {
            Some(name) => {
                let n = name.clone();
                let p = self.blocking(move |s| s.provider(&n)).await?;
                crate::notify::provider_addresses(&name, p.as_ref(), &accounts)
            }
            None => Vec::new(),
        };
        e.deliveries = route(&e, &self.config, &accounts, &provider, now);
        e.routed = true;
        let period = self.config.digest.ms();
        let keys: Vec<Option<String>> = e.deliveries.iter().map(|d| e.repeat_key(d)).collect();
        let lookup = keys.clone();
        let told = if period == 0 {
            vec![None; keys.len()]
        } else {
            self.blocking(move |s| {
                lookup
                    .iter()
                    .map(|k| match k {
                        Some(k) => s.notify_recent(k),
                        None => Ok(None),
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?
        };
        let mut marks = Vec::new();
        for ((d, key), told) in e.deliveries.iter_mut().zip(keys).zip(told) {
            let Some(key) = key else { continue };
            match told {
                Some(at) if period > 0 && now < at.saturating_add(period) => {
                    d.state = DeliveryState::Held;
                    d.next_at = at.saturating_add(period);
                    info!(incident = e.incident, channel = ?d.channel, to = %d.to,
                        event = e.event.name(), "notification held for the digest");
                }
                _ => marks.push((key, now)),
            }
        }
        let snapshot = e.clone();
        self.blocking(move |s| s.notify_route(&snapshot, &marks).and_then(|()| s.flush()))
            .await?;
        Some(e)
    }

    /// Gathers every delivery held for (`channel`, `to`) into one digest, queued in the
    /// same transaction that marks them sent in it; the digest is then delivered like
    /// any notification (retries, its own key). The recipient is not told of those
    /// faults again on their own until a period after the digest.
    async fn queue_digest(&self, channel: Channel, to: String, lang: super::Lang) {
        let now = self.clock.now();
        let t = to.clone();
        let Some(held) = self.blocking(move |s| s.notify_held(channel, &t)).await else {
            return;
        };
        let Some(digest) = digest_of(&held, channel, &to, lang, now) else {
            return;
        };
        let marks: Vec<(String, Millis)> = held
            .iter()
            .flat_map(|e| {
                e.deliveries
                    .iter()
                    .filter(|d| {
                        d.state == DeliveryState::Held && d.channel == channel && d.to == to
                    })
                    .filter_map(|d| e.repeat_key(d))
                    .collect::<Vec<_>>()
            })
            .map(|k| (k, now))
            .collect();
        let n = digest.items.len();
        if let Some(d) = self
            .blocking(move |s| {
                s.notify_digest(&digest, &held, &marks)
                    .and_then(|d| s.flush().map(|()| d))
            })
            .await
        {
            info!(digest = d.id, channel = ?channel, to = %to, held = n, "digest queued");
            self.wake.notify_one();
        }
    }

    fn record(&self, d: &mut Delivery, key: &str, incident: u64, outcome: Outcome, now: Millis) {
        match outcome {
            Outcome::Sent => {
                info!(incident, channel = ?d.channel, to = %d.to, key, "notification sent");
                d.state = DeliveryState::Sent;
                d.done_at = Some(now);
                d.error = None;
            }
            Outcome::Permanent(err) => {
                warn!(incident, channel = ?d.channel, to = %d.to, error = %err,
                    "notification refused for good");
                d.state = DeliveryState::Failed;
                d.done_at = Some(now);
                d.error = Some(err);
            }
            Outcome::Temporary { error, after } => {
                if d.attempts >= self.config.max_attempts {
                    warn!(incident, channel = ?d.channel, to = %d.to, error = %error,
                        attempts = d.attempts, "notification given up");
                    d.state = DeliveryState::Failed;
                    d.done_at = Some(now);
                    d.error = Some(format!("gave up after {} attempts: {error}", d.attempts));
                } else {
                    let wait = retry_wait(
                        d.attempts,
                        self.config.retry_first.duration(),
                        self.config.retry_max.duration(),
                        after,
                    );
                    warn!(incident, channel = ?d.channel, to = %d.to, error = %error,
                        retry_in_ms = wait.as_millis() as u64, "notification not delivered yet");
                    d.next_at =
                        now.saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
                    d.error = Some(error);
                }
            }
        }
    }

    async fn send_one(&self, e: &NotifyEntry, i: usize, mailer: Option<&Arc<Mailer>>) -> Outcome {
        let d = &e.deliveries[i];
        let (subject, body) = render(e, d.lang, self.config.console_url.as_deref());
        let key = e.key(i);
        let to = d.to.clone();
        match d.channel {
            Channel::Email => {
                let Some(m) = mailer.cloned() else {
                    return Outcome::Permanent("no working [notify.email] relay".into());
                };
                run_blocking(move || m.send(&to, &subject, &body, &key)).await
            }
            Channel::Webhook => {
                let Some(w) = self.config.webhook.iter().find(|w| w.name == to).cloned() else {
                    return Outcome::Permanent(format!("no webhook named {to:?} any more"));
                };
                let e = e.clone();
                run_blocking(move || channel::post_webhook(&w, &e, &key, &subject, &body)).await
            }
        }
    }
}

async fn run_blocking(f: impl FnOnce() -> Outcome + Send + 'static) -> Outcome {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Outcome::Temporary {
            error: format!("send task failed: {e}"),
            after: None,
        })
}

/// Sends a test message through one channel now, outside the outbox (the "send a test"
/// action): `Ok` once the relay or the webhook accepted it.
pub async fn send_test(
    config: Arc<NotifyConfig>,
    channel: Channel,
    to: String,
) -> Result<(), String> {
    let e = NotifyEntry {
        id: 0,
        incident: 0,
        event: super::NotifyEvent::Opened,
        text: match config.lang {
            super::Lang::Es => "Mensaje de prueba de Vigía: este canal funciona.".into(),
            super::Lang::En => "Vigía test message: this channel works.".into(),
        },
        title: "test".into(),
        device: None,
        priority: None,
        level: crate::workflow::Level::L1,
        group: None,
        fault: None,
        items: Vec::new(),
        provider: None,
        at: crate::clock::now_ms(),
        routed: true,
        deliveries: Vec::new(),
    };
    let key = format!("vigia-test-{}", crate::clock::now_ms());
    let (subject, body) = match config.lang {
        super::Lang::Es => ("Vigía: prueba de notificación".to_string(), e.text.clone()),
        super::Lang::En => ("Vigía: notification test".to_string(), e.text.clone()),
    };
    let outcome = match channel {
        Channel::Email => {
            let c = config
                .email
                .clone()
                .ok_or("no [notify.email] relay is configured")?;
            run_blocking(move || match Mailer::new(&c) {
                Ok(m) => m.send(&to, &subject, &body, &key),
                Err(e) => Outcome::Permanent(e),
            })
            .await
        }
        Channel::Webhook => {
            let w = config
                .webhook
                .iter()
                .find(|w| w.name == to)
                .cloned()
                .ok_or_else(|| format!("no [[notify.webhook]] named {to:?}"))?;
            run_blocking(move || channel::post_webhook(&w, &e, &key, &subject, &body)).await
        }
    };
    match outcome {
        Outcome::Sent => Ok(()),
        Outcome::Permanent(e) => Err(e),
        Outcome::Temporary { error, .. } => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_their_cap_and_honour_retry_after() {
        let (f, m) = (Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(retry_wait(1, f, m, None), f);
        assert_eq!(retry_wait(3, f, m, None), Duration::from_secs(4));
        assert_eq!(retry_wait(30, f, m, None), m);
        assert_eq!(
            retry_wait(1, f, m, Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
        assert_eq!(
            retry_wait(4, f, m, Some(Duration::from_secs(2))),
            Duration::from_secs(8)
        );
    }
}
