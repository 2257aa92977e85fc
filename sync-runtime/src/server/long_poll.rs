//! The long-poll of a pull (`wait=S`): a pull whose cursor is already at its account's sequence
//! is held until a change passes the cursor (or `S` seconds, capped by the server), then
//! answered as a normal pull. While it waits it holds no database connection and no thread:
//! only its place among the waiters (`server::live`), taken before the account's sequence is
//! read, so a change committed in between still wakes it. A held pull ends with 401, delivering
//! nothing, when its token is revoked (sign-out wakes it) or expires while it waits.

use crate::protocol::cursor::PullFrom;
use crate::server::Server;
use crate::server::auth;
use crate::server::error::ApiError;
use crate::server::extract::SignedIn;
use crate::server::live::Woken;
use crate::server::sync::{self, PullInput, PullPage};
use crate::timestamp::Timestamp;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// A pull's answer, and how long the server agreed to hold it when it was asked to wait
/// (`X-Sync-Wait`: 0 when it was answered without holding).
pub struct Answer {
    pub page: PullPage,
    pub granted: Option<Duration>,
}

/// Answers `input` with `pull_page`, first holding it up to `wait` when it was asked to wait
/// and its cursor is at its account's sequence. A full pull, or one with changes to fetch, is
/// never held; nor is one beyond the waiter caps, or during shutdown.
pub async fn pull_or_wait<F, Fut>(
    server: &Server,
    signed_in: &SignedIn,
    mut input: PullInput,
    wait: Option<Duration>,
    mut pull_page: F,
) -> Result<Answer, ApiError>
where
    F: FnMut(PullInput) -> Fut,
    Fut: Future<Output = Result<PullPage, ApiError>>,
{
    let Some(wait) = wait else {
        return Ok(Answer {
            page: pull_page(input).await?,
            granted: None,
        });
    };
    let wait = wait.min(server.config.max_wait);
    let held = match input.from {
        Some(PullFrom::After(at)) if !wait.is_zero() => {
            server.live.waiter(&input.user_id).map(|w| (w, at))
        }
        _ => None,
    };
    let Some((mut waiter, mut at)) = held else {
        return Ok(Answer {
            page: pull_page(input).await?,
            granted: Some(Duration::ZERO),
        });
    };
    // Held no longer than the token lives.
    let token_left = signed_in.expires_at.as_millis() - Timestamp::now().as_millis();
    let until = Instant::now() + wait.min(Duration::from_millis(token_left.max(0) as u64));
    let user = input.user_id.clone();
    let (last_seq, purged) = crate::with_tx!(&server.db, false, |tx| Ok::<_, ApiError>(
        sync::user_sequence(tx, &user).await?
    ))?;
    // Anything else (changes to fetch, an expired cursor) is for the pull to answer now.
    let mut waited = last_seq == at && purged <= at;
    let mut woken = if waited {
        waiter.changed_after(at, until).await
    } else {
        Woken::Changed
    };
    loop {
        if waited {
            still_signed_in(server, signed_in).await?;
        }
        let page = pull_page(copy(&input)).await?;
        let empty = !page.has_more && page.changes.values().all(Vec::is_empty);
        match page.next {
            // Only the device's own writes passed its cursor (the pull leaves them out), or a
            // re-check found nothing new: nothing to tell it yet, so hold on from the new
            // cursor. (Answering the re-check's empty page would end the hold early, and the
            // device would poll again for nothing.)
            PullFrom::After(next)
                if empty
                    && ((woken == Woken::Changed && next > at)
                        || (matches!(woken, Woken::Recheck | Woken::SignedOut) && next >= at)) =>
            {
                at = next;
                input.from = Some(PullFrom::After(next));
                woken = waiter.changed_after(at, until).await;
                waited = true;
            }
            _ => {
                // `X-Sync-Wait` says whether the pull was held: 0 when it was answered at once
                // (its cursor was behind).
                let granted = if waited { wait } else { Duration::ZERO };
                return Ok(Answer {
                    page,
                    granted: Some(granted),
                });
            }
        }
    }
}

/// Whether the held pull's token still holds (not revoked, not expired), checked after each
/// wait; a 401 otherwise.
async fn still_signed_in(server: &Server, signed_in: &SignedIn) -> Result<(), ApiError> {
    let hash = signed_in.token_hash.clone();
    let live = crate::with_tx!(&server.db, false, |tx| auth::token_user(tx, &hash).await)?;
    match live {
        Some(_) => Ok(()),
        None => Err(ApiError::Unauthorized(
            "the token was revoked or expired while the pull was held; sign in again".into(),
        )),
    }
}

fn copy(input: &PullInput) -> PullInput {
    PullInput {
        user_id: input.user_id.clone(),
        from: input.from,
        limit: input.limit,
        exclude_device: input.exclude_device.clone(),
        max_bytes: input.max_bytes,
    }
}
