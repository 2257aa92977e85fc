//! The account, managed from a device: a new password (this device goes on with the session
//! the server answers; every other device must sign in again), and the account deleted (this
//! device keeps its data and is disconnected).

use super::{Remote, SyncError, Transport, refused};
use crate::store::Store;

/// The stored session's server, token and CA, or `NotConnected`.
fn session(store: &Store) -> Result<(Remote, String), SyncError> {
    match store.session()? {
        (Some(url), Some(token)) => Ok((
            Remote::trusting(&url, store.server_ca()?.as_deref())?,
            token,
        )),
        _ => Err(SyncError::NotConnected),
    }
}

/// Sets a new password for the connected account. The server ends every session of the
/// account; this device stores the new one it answers and syncs on with it. A wrong
/// `password` is the server's 403, and changes nothing.
pub async fn change_password(
    store: &mut Store,
    password: &str,
    new_password: &str,
) -> Result<(), SyncError> {
    let (remote, token) = session(store)?;
    let session = remote
        .change_password(&token, password, new_password)
        .await
        .map_err(|e| refused_by(store, &token, e))?;
    store.save_session(remote.url(), &session.user_id, &session.token)?;
    Ok(())
}

/// Deletes the connected account and everything it holds on the server, then forgets the
/// token: this device keeps its data, disconnected. A wrong `password` is the server's 403, and
/// deletes nothing.
pub async fn delete_account(store: &mut Store, password: &str) -> Result<(), SyncError> {
    let (remote, token) = session(store)?;
    remote
        .delete_account(&token, password)
        .await
        .map_err(|e| refused_by(store, &token, e))?;
    store.forget_token()?;
    Ok(())
}

/// A request's error; a refused `token` is recorded as a sync's is (sign in again).
fn refused_by(store: &mut Store, token: &str, e: super::RemoteError) -> SyncError {
    let e = refused(e);
    if let SyncError::SignInAgain(_) = &e
        && let Err(stored) = store.refuse_token(token, &e.to_string())
    {
        return stored.into();
    }
    e
}
