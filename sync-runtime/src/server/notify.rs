//! Waking held pulls across server processes: every push announces its account's new sequence
//! with PostgreSQL's `NOTIFY`, and each process keeps one connection that `LISTEN`s and wakes
//! its own waiters of that account. On embedded SQLite there is one process: the push handler
//! wakes the waiters itself.

use crate::ddl::Dialect;
use crate::server::db::{DbError, SyncTx};
use crate::server::live::LiveHub;
use crate::server::postgres_tls::PgConnect;
use crate::server::sync;
use crate::value::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::AsyncMessage;

/// The channel of change announcements; each payload is `<user_id> <sequence>`.
pub const CHANNEL: &str = "sync_changes";

/// Reads the account's sequence in a push's transaction (under its lock, so in commit order)
/// and, on PostgreSQL, queues its announcement: PostgreSQL delivers it when, and only if, the
/// transaction commits. Returns the sequence, for waking this process's waiters after commit.
pub async fn announce<T: SyncTx>(tx: &mut T, user: &str) -> Result<i64, DbError> {
    let (seq, _) = sync::user_sequence(tx, user).await?;
    if tx.dialect() == Dialect::Postgres {
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[
                Value::Text(CHANNEL.to_owned()),
                Value::Text(format!("{user} {seq}")),
            ],
        )
        .await?;
    }
    Ok(seq)
}

/// A payload of [`CHANNEL`]: the account and its sequence.
fn parse(payload: &str) -> Option<(&str, i64)> {
    let (user, seq) = payload.split_once(' ')?;
    Some((user, seq.parse().ok()?))
}

/// A background task that ends when dropped.
pub struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long the listener waits before connecting again: doubling from 100 ms to 10 s while
/// connections fail, and back to 100 ms after one that listened for a while (else every drop in
/// a long-lived process would wait the longest, however rare the drops).
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MOST: Duration = Duration::from_secs(10);
    /// A connection that listened this long held: the next drop starts the backoff afresh.
    const HELD: Duration = Duration::from_secs(2);

    fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    /// The delay before the next attempt, after a connection that listened for `listened`
    /// (`None`: it never reached `LISTEN`).
    fn after(&mut self, listened: Option<Duration>) -> Duration {
        if listened.is_some_and(|l| l >= Self::HELD) {
            self.next = Self::FIRST;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MOST);
        delay
    }
}

/// Starts this process's listener on the database `to` names. It reconnects with backoff when the
/// connection drops, and then has every waiter read its account again (once `LISTEN` holds
/// again), since announcements made while it was away are lost.
pub fn spawn_listener(to: &PgConnect, hub: Arc<LiveHub>) -> Result<Task, DbError> {
    let to = to.clone();
    Ok(Task(tokio::spawn(async move {
        let mut backoff = Backoff::new();
        loop {
            let mut listening_since = None;
            match listen(&to, &hub, &mut listening_since).await {
                Ok(()) => tracing::warn!("the change listener's connection closed; reconnecting"),
                Err(e) => tracing::warn!(error = %e, "the change listener failed; reconnecting"),
            }
            let listened = listening_since.map(|since: Instant| since.elapsed());
            tokio::time::sleep(backoff.after(listened)).await;
        }
    })))
}

/// One listening connection, until it fails; `listening_since` is set once `LISTEN` holds.
async fn listen(
    to: &PgConnect,
    hub: &LiveHub,
    listening_since: &mut Option<Instant>,
) -> Result<(), DbError> {
    let (client, mut conn) = to.config.connect(to.tls.clone()).await?;
    // The connection delivers notifications only while it is polled, and it must be polled for
    // the LISTEN itself to complete.
    let messages = async {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if let Some((user, seq)) = parse(n.payload()) {
                        hub.wake(user, seq);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(DbError::from(e)),
                None => return Ok(()),
            }
        }
    };
    tokio::pin!(messages);
    let statement = format!("LISTEN {CHANNEL}");
    tokio::select! {
        listening = client.batch_execute(&statement) => listening?,
        ended = &mut messages => return ended,
    }
    *listening_since = Some(Instant::now());
    // Changes committed before LISTEN took effect were announced to nobody here.
    hub.recheck_all();
    tracing::debug!("listening for changes");
    messages.await
}

#[cfg(test)]
mod tests {
    use super::Backoff;
    use std::time::Duration;

    #[test]
    fn the_reconnect_delay_grows_while_connections_fail_and_resets_after_one_that_held() {
        let mut backoff = Backoff::new();
        let failing: Vec<_> = (0..8).map(|_| backoff.after(None)).collect();
        let ms: Vec<u128> = failing.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 6400, 10000]);
        // Brief connections do not reset it: the database is flapping.
        assert_eq!(
            backoff.after(Some(Duration::from_millis(50))),
            Backoff::MOST
        );
        // One that listened for a while did: the next drop is retried at once.
        assert_eq!(backoff.after(Some(Duration::from_secs(60))), Backoff::FIRST);
        assert_eq!(backoff.after(None), Backoff::FIRST * 2);
    }

    #[test]
    fn payloads_name_an_account_and_a_sequence() {
        assert_eq!(super::parse("0193-ab 42"), Some(("0193-ab", 42)));
        assert_eq!(super::parse("0193-ab"), None);
        assert_eq!(super::parse("0193-ab x"), None);
    }
}
