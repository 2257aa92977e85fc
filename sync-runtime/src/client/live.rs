//! The device's half of live sync: one pull held open by the server (`wait`) until the account
//! changes, its page applied as soon as it arrives.

use super::changes::{self, Changes};
use super::transport::{self, PullRequest, Transport};
use super::{RemoteError, SyncError, refused};
use crate::store::Store;
use std::time::Duration;

/// How one held pull ended.
#[derive(Debug)]
pub(crate) enum Polled {
    /// The server held it until the account changed (or its wait ended), and its page is
    /// applied; `has_more`: more pages follow, for a sync to fetch.
    Applied { changes: Changes, has_more: bool },
    /// The server answered at once without holding it: it does not hold pulls (`supported`
    /// false), or holds too many now.
    NotHeld { supported: bool },
    /// A full pull is due first (no cursor yet, or one under way): a sync must run.
    NeedsSync,
}

/// Holds one pull open on the stored session's server for up to `wait`, and applies its page.
pub(crate) async fn poll<T: Transport>(
    store: &mut Store,
    remote: &mut Option<T>,
    wait: Duration,
) -> Result<Polled, SyncError> {
    let (url, token) = match store.session()? {
        (Some(u), Some(t)) => (u, t),
        _ => return Err(SyncError::NotConnected),
    };
    let remote = transport::kept_or_open(remote, &url, store.server_ca()?.as_deref())?;
    let since = match store.cursor()? {
        Some(c) if !store.in_full_pull()? => c,
        _ => return Ok(Polled::NeedsSync),
    };
    let schema = &store.app().schema;
    let device = store.device_id().to_owned();
    let request = PullRequest {
        token: &token,
        device_id: Some(&device),
        schema_version: schema.version(),
        since: Some(&since),
        limit: super::PULL_LIMIT,
    };
    let (resp, granted) = remote.pull_waiting(request, wait).await.map_err(refused)?;
    let page = transport::read_page(remote, schema, resp)
        .await
        .map_err(refused)?;
    // Another sync of this database (another process) moved the cursor meanwhile: this page
    // may be older than what is stored, and the next one will say what is new.
    if store.cursor()?.as_deref() != Some(since.as_str()) {
        return Ok(Polled::Applied {
            changes: Changes::default(),
            has_more: false,
        });
    }
    let has_more = page.has_more;
    let empty = page.changes.iter().all(|(_, rows)| rows.is_empty());
    let server_time = page.server_clock();
    let touched = changes::touched(&page, false);
    store.apply_page(page)?;
    if let Some(t) = server_time {
        store.clock().observe(t);
    }
    let mut changed = Changes::default();
    changed.record(store, touched)?;
    store.finish_sync(None)?;
    Ok(match granted {
        _ if !empty || has_more => Polled::Applied {
            changes: changed,
            has_more,
        },
        None => Polled::NotHeld { supported: false },
        Some(held) if held.is_zero() => Polled::NotHeld { supported: true },
        Some(_) => Polled::Applied {
            changes: changed,
            has_more,
        },
    })
}

/// Whether a failed held pull calls for a sync at once: an expired cursor or a refused token,
/// which a sync resolves (a full pull) or reports (sign in again).
pub(crate) fn needs_sync(e: &SyncError) -> bool {
    matches!(e, SyncError::SignInAgain(_))
        || matches!(e, SyncError::Remote(r @ RemoteError::Api { .. }) if r.status() == Some(410))
}
