//! Long-poll waiters: pulls held open until their account changes.
//!
//! A waiter is an entry in a map keyed by account, not a thread or a database connection: a
//! held pull costs its socket, its (suspended) handler and a few words here. A push wakes the
//! waiters of its own account only, through [`LiveHub::wake`], called in this process after the
//! push commits and, on PostgreSQL, by the listener of every process (`server::listen`).

use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// The waiters of one process.
pub struct LiveHub {
    accounts: Mutex<Accounts>,
    max_per_account: usize,
    max_total: usize,
    /// Set once when the server shuts down: held pulls answer at once, and no new one waits.
    closed: watch::Sender<bool>,
    /// Wakes every waiter to read its account again (the listener missed notifications).
    recheck: Notify,
}

#[derive(Default)]
struct Accounts {
    by_user: HashMap<String, Account>,
    total: usize,
}

struct Account {
    /// The highest sequence announced for this account since its first waiter came.
    seq: watch::Sender<i64>,
    /// Counts sign-outs of the account: each has its waiters check their tokens.
    signed_out: watch::Sender<u64>,
    waiters: usize,
}

/// Why a held pull stopped waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Woken {
    /// The account's sequence passed the cursor.
    Changed,
    /// It may have: the listener missed notifications, so every waiter reads its account again.
    Recheck,
    /// A token of the account was revoked: the waiter checks its own.
    SignedOut,
    TimedOut,
    ShuttingDown,
}

impl LiveHub {
    pub fn new(max_per_account: usize, max_total: usize) -> LiveHub {
        LiveHub {
            accounts: Mutex::new(Accounts::default()),
            max_per_account,
            max_total,
            closed: watch::Sender::new(false),
            recheck: Notify::new(),
        }
    }

    fn accounts(&self) -> std::sync::MutexGuard<'_, Accounts> {
        // The map stays consistent whatever panicked while holding it: every change is one step.
        self.accounts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a waiter of `user`, or `None` when the caps are reached or the server is
    /// shutting down (the pull is then answered at once). Register before reading the
    /// account's sequence: every change committed from then on wakes it.
    pub fn waiter(&self, user: &str) -> Option<Waiter<'_>> {
        if *self.closed.borrow() {
            return None;
        }
        let mut accounts = self.accounts();
        let held = accounts.by_user.get(user).map_or(0, |a| a.waiters);
        if accounts.total >= self.max_total || held >= self.max_per_account {
            return None;
        }
        let account = accounts
            .by_user
            .entry(user.to_owned())
            .or_insert_with(|| Account {
                seq: watch::Sender::new(0),
                signed_out: watch::Sender::new(0),
                waiters: 0,
            });
        account.waiters += 1;
        let seq = account.seq.subscribe();
        let signed_out = account.signed_out.subscribe();
        accounts.total += 1;
        Some(Waiter {
            hub: self,
            user: user.to_owned(),
            seq,
            signed_out,
            closed: self.closed.subscribe(),
        })
    }

    /// The account of `user` reached sequence `seq`: its waiters whose cursor is below wake.
    /// An account nobody waits for costs nothing.
    pub fn wake(&self, user: &str, seq: i64) {
        if let Some(a) = self.accounts().by_user.get(user) {
            a.seq.send_if_modified(|s| {
                let raised = seq > *s;
                *s = (*s).max(seq);
                raised
            });
        }
    }

    /// A token of `user` was revoked: the account's waiters check theirs.
    pub fn signed_out(&self, user: &str) {
        if let Some(a) = self.accounts().by_user.get(user) {
            a.signed_out.send_modify(|n| *n += 1);
        }
    }

    /// Every waiter reads its account again (notifications may have been missed).
    pub fn recheck_all(&self) {
        self.recheck.notify_waiters();
    }

    /// Releases every waiter and refuses new ones: the server is shutting down.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Waiters held now, in all accounts.
    pub fn waiting(&self) -> usize {
        self.accounts().total
    }

    fn release(&self, user: &str) {
        let mut accounts = self.accounts();
        accounts.total = accounts.total.saturating_sub(1);
        if let Some(a) = accounts.by_user.get_mut(user) {
            a.waiters = a.waiters.saturating_sub(1);
            if a.waiters == 0 {
                accounts.by_user.remove(user);
            }
        }
    }
}

/// One held pull; dropping it (an answer, or a client gone) frees its place.
pub struct Waiter<'h> {
    hub: &'h LiveHub,
    user: String,
    seq: watch::Receiver<i64>,
    signed_out: watch::Receiver<u64>,
    closed: watch::Receiver<bool>,
}

impl Waiter<'_> {
    /// Waits until a change past `cursor_seq` is announced for the account, `until` passes, or
    /// the server shuts down.
    pub async fn changed_after(&mut self, cursor_seq: i64, until: Instant) -> Woken {
        let recheck = self.hub.recheck.notified();
        tokio::pin!(recheck);
        // Registered now, so a re-check asked for while this waits is not missed.
        recheck.as_mut().enable();
        tokio::select! {
            changed = self.seq.wait_for(|s| *s > cursor_seq) => match changed {
                Ok(_) => Woken::Changed,
                // The hub is gone: the server is going away.
                Err(_) => Woken::ShuttingDown,
            },
            () = &mut recheck => Woken::Recheck,
            Ok(()) = self.signed_out.changed() => Woken::SignedOut,
            _ = self.closed.wait_for(|c| *c) => Woken::ShuttingDown,
            () = tokio::time::sleep_until(until) => Woken::TimedOut,
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.hub.release(&self.user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(50)
    }

    #[tokio::test]
    async fn a_waiter_wakes_for_its_own_account_only() {
        let hub = LiveHub::new(4, 100);
        let mut mine = hub.waiter("a").unwrap();
        let mut other = hub.waiter("b").unwrap();
        hub.wake("a", 5);
        assert_eq!(mine.changed_after(4, soon()).await, Woken::Changed);
        assert_eq!(other.changed_after(0, soon()).await, Woken::TimedOut);
        // A cursor at the announced sequence has nothing new.
        assert_eq!(mine.changed_after(5, soon()).await, Woken::TimedOut);
    }

    #[tokio::test]
    async fn caps_refuse_waiters_and_dropped_ones_free_their_place() {
        let hub = LiveHub::new(2, 3);
        let a1 = hub.waiter("a").unwrap();
        let _a2 = hub.waiter("a").unwrap();
        assert!(hub.waiter("a").is_none(), "per account");
        let _b1 = hub.waiter("b").unwrap();
        assert!(hub.waiter("c").is_none(), "per process");
        drop(a1);
        let _c1 = hub.waiter("c").unwrap();
        assert_eq!(hub.waiting(), 3);
        let none = LiveHub::new(0, 3);
        assert!(none.waiter("a").is_none());
        assert!(
            none.accounts().by_user.is_empty(),
            "a refused account leaves nothing behind"
        );
    }

    #[tokio::test]
    async fn closing_releases_waiters_and_refuses_new_ones() {
        let hub = LiveHub::new(2, 3);
        let mut w = hub.waiter("a").unwrap();
        let far = Instant::now() + Duration::from_secs(60);
        let (woken, ()) = tokio::join!(w.changed_after(0, far), async { hub.close() });
        assert_eq!(woken, Woken::ShuttingDown);
        assert!(hub.waiter("a").is_none());
    }

    #[tokio::test]
    async fn a_sign_out_wakes_its_accounts_waiters_only() {
        let hub = LiveHub::new(2, 3);
        let mut mine = hub.waiter("a").unwrap();
        let mut other = hub.waiter("b").unwrap();
        let far = Instant::now() + Duration::from_secs(60);
        let (woken, ()) = tokio::join!(mine.changed_after(0, far), async { hub.signed_out("a") });
        assert_eq!(woken, Woken::SignedOut);
        assert_eq!(other.changed_after(0, soon()).await, Woken::TimedOut);
    }

    #[tokio::test]
    async fn a_recheck_wakes_every_waiter() {
        let hub = LiveHub::new(2, 3);
        let mut w = hub.waiter("a").unwrap();
        let far = Instant::now() + Duration::from_secs(60);
        let (woken, ()) = tokio::join!(w.changed_after(0, far), async { hub.recheck_all() });
        assert_eq!(woken, Woken::Recheck);
    }
}
