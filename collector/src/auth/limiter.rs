//! Sign-in attempts, limited per account and per address so that guessing passwords is
//! slow without letting one attacker lock everybody out: an account accepts
//! [`PER_ACCOUNT`] failures in [`WINDOW`], an address [`PER_ADDRESS`]; past that, attempts
//! are refused without checking the password until the oldest failure ages out. A
//! successful sign-in clears the account's failures.
//!
//! In memory: a restart forgets the counts, which costs an attacker a restart of the
//! collector to gain a few more guesses. The maps are bounded: old entries are swept as
//! new failures arrive.
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window failures are counted in.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Failures an account accepts in the window.
pub const PER_ACCOUNT: usize = 5;
/// Failures an address accepts in the window.
pub const PER_ADDRESS: usize = 20;
/// Keys tracked at most (accounts plus addresses); past it the oldest are forgotten.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    Address(IpAddr),
}

/// The failures of recent sign-ins.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<Key, VecDeque<Instant>>>,
}

impl LoginLimiter {
    /// `Err(wait)` when `login` or `addr` has used its attempts: try again after `wait`.
    pub fn check(&self, login: &str, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut map = self.lock();
        let mut wait = Duration::ZERO;
        for (key, max) in [
            (Key::Account(login.to_owned()), PER_ACCOUNT),
            (Key::Address(addr), PER_ADDRESS),
        ] {
            if let Some(q) = map.get_mut(&key) {
                prune(q, now);
                if q.len() >= max {
                    if let Some(oldest) = q.front() {
                        wait = wait.max(WINDOW.saturating_sub(now - *oldest));
                    }
                }
            }
        }
        if wait.is_zero() {
            Ok(())
        } else {
            Err(wait.max(Duration::from_secs(1)))
        }
    }

    /// A sign-in failed.
    pub fn failed(&self, login: &str, addr: IpAddr, now: Instant) {
        let mut map = self.lock();
        if map.len() >= MAX_KEYS {
            map.retain(|_, q| {
                prune(q, now);
                !q.is_empty()
            });
            if map.len() >= MAX_KEYS {
                map.clear();
            }
        }
        for key in [Key::Account(login.to_owned()), Key::Address(addr)] {
            map.entry(key).or_default().push_back(now);
        }
    }

    /// A sign-in succeeded: the account starts afresh (the address keeps its count).
    pub fn succeeded(&self, login: &str) {
        self.lock().remove(&Key::Account(login.to_owned()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, VecDeque<Instant>>> {
        // A panic while holding it leaves plain data behind: keep using it.
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn prune(q: &mut VecDeque<Instant>, now: Instant) {
    while q.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
        q.pop_front();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn an_account_is_held_after_its_failures_until_they_age_out() {
        let l = LoginLimiter::default();
        let t0 = Instant::now();
        for i in 0..PER_ACCOUNT {
            assert!(l.check("ana", A, t0).is_ok(), "attempt {i}");
            l.failed("ana", A, t0);
        }
        let wait = l.check("ana", B, t0).unwrap_err();
        assert_eq!(wait, WINDOW, "from any address");
        assert!(
            l.check("luis", A, t0).is_ok(),
            "other accounts are not held"
        );
        assert!(l.check("ana", A, t0 + WINDOW).is_ok(), "the window passed");
    }

    #[test]
    fn an_address_is_held_after_failures_across_accounts() {
        let l = LoginLimiter::default();
        let t0 = Instant::now();
        for i in 0..PER_ADDRESS {
            l.failed(&format!("user{i}"), A, t0);
        }
        assert!(l.check("nobody", A, t0).is_err());
        assert!(l.check("nobody", B, t0).is_ok());
    }

    #[test]
    fn success_clears_the_account() {
        let l = LoginLimiter::default();
        let t0 = Instant::now();
        for _ in 0..PER_ACCOUNT {
            l.failed("ana", A, t0);
        }
        l.succeeded("ana");
        assert!(l.check("ana", B, t0).is_ok());
    }
}
