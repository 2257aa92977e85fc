//! One push of an account at a time in this process, taken before the push checks out a
//! database connection. The per-account lock in the database (docs/PROTOCOL.md, push) keeps
//! pushes of one account in order across server processes; without this turn, every push
//! waiting for that lock would hold a pooled connection while it waits, and a burst of one
//! account's pushes would take every connection from the other accounts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OwnedMutexGuard;

/// The accounts with a push running or waiting in this process.
#[derive(Default)]
pub struct AccountTurns {
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// An account's turn; the next push of the account goes when it is dropped.
pub struct Turn<'t> {
    turns: &'t AccountTurns,
    account: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl AccountTurns {
    fn turns(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        // Each change under the lock is one step: a panic elsewhere leaves the map whole.
        self.turns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for `account`'s turn (in arrival order), holding nothing but a place in line.
    pub async fn take(&self, account: &str) -> Turn<'_> {
        let line = self.turns().entry(account.to_owned()).or_default().clone();
        let guard = line.lock_owned().await;
        Turn {
            turns: self,
            account: account.to_owned(),
            guard: Some(guard),
        }
    }

    /// Accounts with a push running or waiting.
    pub fn accounts(&self) -> usize {
        self.turns().len()
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut turns = self.turns.turns();
        // Only the map holds the account's line now: nobody runs or waits, so it goes.
        if turns
            .get(&self.account)
            .is_some_and(|line| Arc::strong_count(line) == 1)
        {
            turns.remove(&self.account);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_turn_per_account_and_none_left_behind() {
        let turns = AccountTurns::default();
        let a = turns.take("a").await;
        // Another account goes at once; the same account waits.
        let _b = turns.take("b").await;
        let waiting = tokio::time::timeout(Duration::from_millis(50), turns.take("a")).await;
        assert!(waiting.is_err(), "a second turn of one account waits");
        drop(a);
        let again = tokio::time::timeout(Duration::from_secs(5), turns.take("a"))
            .await
            .expect("the turn passes on");
        drop(again);
        assert_eq!(turns.accounts(), 1, "only b is left");
    }
}
