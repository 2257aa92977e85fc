//! Limits on password guessing and on registrations, kept in the process (with several server
//! processes each one limits on its own).
//!
//! An attempt is counted *before* its password is checked, so a burst of concurrent guesses
//! gets no more checks than the limit; a successful login gives its attempt back. Counting is
//! over a sliding window of attempt times per key. Three keys limit a login:
//! - the address: one machine guessing across accounts;
//! - the account from that address: the owner's typos and one attacker's guesses;
//! - the account from every address, at a higher bound, which an address that has logged in
//!   to that account before does not count against: many machines guessing one password slow
//!   each other down, but cannot lock the owner out of their own account.
//!
//! Hand-written rather than `governor`: a login must give back its attempt when the password
//! was right, and the account-wide limit must skip the owner's addresses, neither of which a
//! token bucket expresses.

use crate::server::error::ApiError;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many more guesses the account-wide limit allows than the per-address ones.
const ACCOUNT_WIDE_FACTOR: u32 = 10;
/// Addresses remembered per account as its owner's (the most recent ones).
const TRUSTED_PER_ACCOUNT: usize = 16;
/// How long an address that logged in to an account stays its owner's.
const TRUST_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// Attempt times per key over a sliding window.
struct Windows {
    window: Duration,
    times: HashMap<String, VecDeque<Instant>>,
    last_sweep: Instant,
}

impl Windows {
    fn new(window: Duration) -> Self {
        Windows {
            window,
            times: HashMap::new(),
            last_sweep: Instant::now(),
        }
    }

    /// Drops attempts older than the window, for every key now and then (so that keys of
    /// attackers that went away do not pile up) and for `key` always.
    fn expire(&mut self, key: &str, now: Instant) {
        let window = self.window;
        let fresh = |q: &mut VecDeque<Instant>| {
            while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
                q.pop_front();
            }
            !q.is_empty()
        };
        if now.duration_since(self.last_sweep) >= Duration::from_secs(60) {
            self.times.retain(|_, q| fresh(q));
            self.last_sweep = now;
        } else if let Some(q) = self.times.get_mut(key)
            && !fresh(q)
        {
            self.times.remove(key);
        }
    }

    /// `None` if `key` has room for one more attempt; otherwise when it will (seconds, ≥ 1).
    fn full(&mut self, key: &str, max: u32, now: Instant) -> Option<u64> {
        self.expire(key, now);
        let q = self.times.get(key)?;
        if q.len() < max as usize {
            return None;
        }
        // Room comes back when the oldest of the last `max` attempts leaves the window.
        let oldest = q[q.len() - max as usize];
        let left = self.window.saturating_sub(now.duration_since(oldest));
        Some(left.as_secs().max(1))
    }

    fn add(&mut self, key: &str, at: Instant) {
        self.times.entry(key.to_owned()).or_default().push_back(at);
    }

    /// Gives back the attempt made at `at` under `key`.
    fn remove(&mut self, key: &str, at: Instant) {
        if let Some(q) = self.times.get_mut(key) {
            if let Some(i) = q.iter().rposition(|t| *t == at) {
                q.remove(i);
            }
            if q.is_empty() {
                self.times.remove(key);
            }
        }
    }
}

struct LoginState {
    windows: Windows,
    /// Per account, the addresses that logged in to it and when they last did.
    trusted: HashMap<String, Vec<(IpAddr, Instant)>>,
}

/// Failed and in-flight logins per address, per account and address, and per account.
pub struct LoginLimiter {
    max_failures: u32,
    state: Mutex<LoginState>,
}

/// A login attempt that was counted. Dropped without an outcome (the request failed before
/// its password was checked), it is given back.
pub struct LoginAttempt<'a> {
    limiter: &'a LoginLimiter,
    account: String,
    address: Option<IpAddr>,
    keys: Vec<String>,
    at: Instant,
    settled: bool,
}

fn address_key(address: Option<IpAddr>) -> String {
    // In-process callers (tests, embedded servers) have no address: they share one.
    address.map_or_else(|| "in-process".to_owned(), |a| a.to_string())
}

impl LoginLimiter {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        LoginLimiter {
            max_failures,
            state: Mutex::new(LoginState {
                windows: Windows::new(window),
                trusted: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LoginState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a login to `account` from `address`, or refuses it with 429 and when to retry.
    pub fn begin(
        &self,
        account: &str,
        address: Option<IpAddr>,
    ) -> Result<LoginAttempt<'_>, ApiError> {
        let now = Instant::now();
        let addr = address_key(address);
        let mut keys = vec![
            format!("address:{addr}"),
            format!("account:{account}|{addr}"),
        ];
        let mut state = self.lock();
        let owner = address.is_some_and(|a| {
            state.trusted.get(account).is_some_and(|list| {
                list.iter()
                    .any(|(t, at)| *t == a && now.duration_since(*at) < TRUST_FOR)
            })
        });
        if !owner {
            keys.push(format!("account:{account}"));
        }
        let mut wait = None;
        for k in &keys {
            let max = if k.contains('|') || k.starts_with("address:") {
                self.max_failures
            } else {
                self.max_failures.saturating_mul(ACCOUNT_WIDE_FACTOR)
            };
            if let Some(w) = state.windows.full(k, max, now) {
                wait = Some(wait.map_or(w, |x: u64| x.max(w)));
            }
        }
        if let Some(retry_after) = wait {
            return Err(ApiError::RateLimited { retry_after });
        }
        for k in &keys {
            state.windows.add(k, now);
        }
        Ok(LoginAttempt {
            limiter: self,
            account: account.to_owned(),
            address,
            keys,
            at: now,
            settled: false,
        })
    }
}

impl LoginAttempt<'_> {
    /// A wrong password: the attempt stays counted.
    pub fn failed(mut self) {
        self.settled = true;
    }

    /// The right password: the attempt is given back, the account's failures from this address
    /// are forgiven, and the address becomes one of the account's own.
    pub fn succeeded(mut self) {
        self.settled = true;
        let mut state = self.limiter.lock();
        for k in &self.keys {
            state.windows.remove(k, self.at);
        }
        let addr = address_key(self.address);
        state
            .windows
            .times
            .remove(&format!("account:{}|{addr}", self.account));
        if let Some(a) = self.address {
            let list = state.trusted.entry(self.account.clone()).or_default();
            list.retain(|(t, _)| *t != a);
            list.push((a, self.at));
            if list.len() > TRUSTED_PER_ACCOUNT {
                list.remove(0);
            }
        }
    }
}

impl Drop for LoginAttempt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            let mut state = self.limiter.lock();
            for k in &self.keys {
                state.windows.remove(k, self.at);
            }
        }
    }
}

/// Registrations per address over a sliding window; every registration counts.
pub struct RegisterLimiter {
    max: u32,
    windows: Mutex<Windows>,
}

impl RegisterLimiter {
    pub fn new(max: u32, window: Duration) -> Self {
        RegisterLimiter {
            max,
            windows: Mutex::new(Windows::new(window)),
        }
    }

    /// Counts a registration from `address`, or refuses it with 429 and when to retry.
    pub fn count(&self, address: Option<IpAddr>) -> Result<(), ApiError> {
        let now = Instant::now();
        let key = address_key(address);
        let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(retry_after) = w.full(&key, self.max, now) {
            return Err(ApiError::TooManyRegistrations { retry_after });
        }
        w.add(&key, now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn attempts_in_flight_count_before_their_outcome() {
        let l = LoginLimiter::new(3, Duration::from_secs(60));
        let held: Vec<_> = (0..3)
            .map(|_| l.begin("a", ip("10.0.0.1")).unwrap())
            .collect();
        assert!(l.begin("a", ip("10.0.0.1")).is_err(), "three in flight");
        drop(held);
        assert!(l.begin("a", ip("10.0.0.1")).is_ok(), "given back unsettled");
    }

    #[test]
    fn a_locked_account_still_lets_its_owner_in_from_their_address() {
        let l = LoginLimiter::new(2, Duration::from_secs(60));
        l.begin("a", ip("10.0.0.1")).unwrap().succeeded();
        // Many machines guess: each is limited, and the account as a whole too.
        for n in 0..40 {
            let from = ip(&format!("10.1.0.{n}"));
            for _ in 0..2 {
                if let Ok(a) = l.begin("a", from) {
                    a.failed();
                }
            }
        }
        assert!(
            l.begin("a", ip("10.2.0.1")).is_err(),
            "the account-wide bound"
        );
        assert!(l.begin("a", ip("10.0.0.1")).is_ok(), "the owner's address");
    }
}
