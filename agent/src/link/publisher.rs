//! The publisher's state, without I/O (in the way rumqttc's `MqttState` is built): what
//! the session task publishes next, given what happened.
//!
//! Inputs are the connection coming up (with its `boot`) or going down, the session's
//! start (subscriptions, birth, `online`) succeeding or failing, an event published, the
//! collector announcing itself `online`, and the resend timer's tick with the spool's
//! oldest unacknowledged seq. The output is a cursor: the next seq to publish from the
//! spool, or none while there is no session to publish on. Every reconnect and every
//! collector `online` replays the whole spool from its start, on purpose: the collector
//! deduplicates on `(device, instance, seq)`, while rumqttc's in-memory queue and a
//! broker restarted without persistence both lose messages, so only the spool is trusted.
//! The timer is ticks, not clocks, so tests drive it by calling [`Publisher::resend_tick`].

/// What the session task publishes next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Publisher {
    /// The session's `boot`, once connected.
    boot: Option<u64>,
    /// Whether the session's start (subscriptions, birth, online status) went out.
    started: bool,
    /// The next seq to publish from, while started.
    cursor: Option<u64>,
    /// The oldest unacked seq at the previous resend tick.
    oldest_seen: Option<u64>,
}

impl Publisher {
    /// A publisher with no connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// The connection is up, as session `boot`: the session must be started (subscribe,
    /// birth, `online`) before anything else is published.
    pub fn connected(&mut self, boot: u64) {
        *self = Self {
            boot: Some(boot),
            oldest_seen: self.oldest_seen,
            ..Self::default()
        };
    }

    /// The session's start went out: publish the whole spool from its start.
    pub fn started(&mut self) {
        if self.boot.is_some() {
            self.started = true;
            self.cursor = Some(0);
        }
    }

    /// The session's start failed: nothing is published until the next connection.
    pub fn start_failed(&mut self) {
        self.started = false;
        self.cursor = None;
    }

    /// The connection is down: nothing can be published until it is back.
    pub fn disconnected(&mut self) {
        self.boot = None;
        self.started = false;
        self.cursor = None;
    }

    /// The collector came (back) online: it may have lost what was published before (a
    /// broker restarted without persistence forgets its session), so replay everything.
    pub fn collector_online(&mut self) {
        if self.cursor.is_some() {
            self.cursor = Some(0);
        }
    }

    /// The resend timer ticked and the spool's oldest unacked seq is `oldest`. If the same
    /// event was already published and is still the oldest a whole interval later, its
    /// ack is not coming (a broker dropped it): replay from the start. Returns whether it
    /// replays.
    pub fn resend_tick(&mut self, oldest: Option<u64>) -> bool {
        let stuck = matches!(
            (oldest, self.oldest_seen, self.cursor),
            (Some(o), Some(seen), Some(c)) if o == seen && o < c
        );
        self.oldest_seen = oldest;
        if stuck {
            self.cursor = Some(0);
        }
        stuck
    }

    /// The seq to publish from next (the spool gives the first event at or after it), or
    /// `None` while there is no started session.
    pub fn next_from(&self) -> Option<u64> {
        self.cursor
    }

    /// Event `seq` was published: go on after it.
    pub fn published(&mut self, seq: u64) {
        if self.cursor.is_some() {
            self.cursor = Some(seq.saturating_add(1));
        }
    }

    /// The `boot` whose `offline` status a clean shutdown must send, when there is a
    /// started session to send it on.
    pub fn goodbye(&self) -> Option<u64> {
        self.boot.filter(|_| self.started)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Publishes every seq the spool holds from the cursor on, as the session task does.
    fn drain(p: &mut Publisher, spool: &[u64]) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(from) = p.next_from() {
            let Some(&seq) = spool.iter().find(|s| **s >= from) else {
                break;
            };
            out.push(seq);
            p.published(seq);
        }
        out
    }

    #[test]
    fn nothing_is_published_before_the_session_starts() {
        let mut p = Publisher::new();
        assert_eq!(p.next_from(), None);
        p.started(); // no connection: no effect
        assert_eq!(p.next_from(), None);
        p.connected(3);
        assert_eq!(p.next_from(), None, "birth and online go first");
        assert_eq!(p.goodbye(), None);
        p.started();
        assert_eq!(drain(&mut p, &[4, 5, 9]), vec![4, 5, 9]);
        assert_eq!(p.goodbye(), Some(3));
    }

    #[test]
    fn every_reconnect_replays_the_spool_from_its_start() {
        let mut p = Publisher::new();
        p.connected(1);
        p.started();
        assert_eq!(drain(&mut p, &[1, 2]), vec![1, 2]);
        p.disconnected();
        assert_eq!(p.next_from(), None);
        assert_eq!(p.goodbye(), None, "no session to say goodbye on");
        p.connected(2);
        p.started();
        // 3 arrived meanwhile; 1 and 2 are still unacked: all go again.
        assert_eq!(drain(&mut p, &[1, 2, 3]), vec![1, 2, 3]);
        assert_eq!(p.goodbye(), Some(2));
    }

    #[test]
    fn a_failed_start_publishes_nothing_until_the_next_connection() {
        let mut p = Publisher::new();
        p.connected(1);
        p.start_failed();
        assert_eq!(p.next_from(), None);
        assert_eq!(p.goodbye(), None);
        p.connected(2);
        p.started();
        assert_eq!(p.next_from(), Some(0));
    }

    #[test]
    fn the_collector_coming_online_replays_only_on_a_live_session() {
        let mut p = Publisher::new();
        p.collector_online();
        assert_eq!(p.next_from(), None);
        p.connected(1);
        p.started();
        assert_eq!(drain(&mut p, &[7, 8]), vec![7, 8]);
        assert_eq!(p.next_from(), Some(9));
        p.collector_online();
        assert_eq!(drain(&mut p, &[7, 8]), vec![7, 8]);
    }

    #[test]
    fn an_event_unacked_for_a_whole_interval_is_published_again() {
        let mut p = Publisher::new();
        p.connected(1);
        p.started();
        assert_eq!(drain(&mut p, &[3, 4]), vec![3, 4]);
        // First tick: 3 is the oldest; remember it.
        assert!(!p.resend_tick(Some(3)));
        // A whole interval later 3 is still the oldest and was published: replay.
        assert!(p.resend_tick(Some(3)));
        assert_eq!(drain(&mut p, &[3, 4]), vec![3, 4]);
        // Acked meanwhile (the oldest moves on), or nothing unacked: no replay.
        assert!(!p.resend_tick(Some(4)));
        assert!(!p.resend_tick(None));
        assert!(!p.resend_tick(None));
    }

    #[test]
    fn an_event_not_yet_published_is_not_resent() {
        let mut p = Publisher::new();
        p.connected(1);
        p.started();
        // 5 is in the spool but the cursor has not reached it (it was just pushed).
        assert!(!p.resend_tick(Some(5)));
        assert!(!p.resend_tick(Some(5)));
        assert_eq!(p.next_from(), Some(0));
    }
}
