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
use std::time::Duration;
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

/// Starts this process's listener on the database `to` names. It reconnects with backoff when the
/// connection drops, and then has every waiter read its account again, since announcements
/// made while it was away are lost.
pub fn spawn_listener(to: &PgConnect, hub: Arc<LiveHub>) -> Result<Task, DbError> {
    let to = to.clone();
    Ok(Task(tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            match listen(&to, &hub).await {
                Ok(()) => tracing::warn!("the change listener's connection closed; reconnecting"),
                Err(e) => tracing::warn!(error = %e, "the change listener failed; reconnecting"),
            }
            hub.recheck_all();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    })))
}

/// One listening connection, until it fails.
async fn listen(to: &PgConnect, hub: &LiveHub) -> Result<(), DbError> {
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
    // Changes committed before LISTEN took effect were announced to nobody here.
    hub.recheck_all();
    tracing::debug!("listening for changes");
    messages.await
}

#[cfg(test)]
mod tests {
    #[test]
    fn payloads_name_an_account_and_a_sequence() {
        assert_eq!(super::parse("0193-ab 42"), Some(("0193-ab", 42)));
        assert_eq!(super::parse("0193-ab"), None);
        assert_eq!(super::parse("0193-ab x"), None);
    }
}
