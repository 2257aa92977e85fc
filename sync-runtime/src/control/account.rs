//! The account, managed from the settings page: a new password, and the account deleted. Both
//! run as a disconnect does ([`SyncControl::change_session`]): one at a time with connect and
//! disconnect, after the sync under way.

use super::view::{DeleteAccountRequest, PasswordChangeRequest, StatusView};
use super::{ControlError, SyncControl};
use crate::client::{self, Activity, RemoteError, SyncError};
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;

/// A refused password is the page's `wrong_password`; a refused token its `sign_in_again`.
fn account_error(e: SyncError) -> ControlError {
    match e {
        SyncError::Remote(RemoteError::Api { status: 403, .. }) => ControlError::WrongPassword,
        other => other.into(),
    }
}

impl SyncControl {
    /// Runs `change` on the control's connection once no sync is under way (one under way with
    /// the old token would record its refusal after the change), then publishes the status and
    /// has the service sync at once, so that it learns of the change. `connected`: refused
    /// while not connected.
    pub(super) async fn change_session<F>(
        self: &Arc<Self>,
        connected: bool,
        change: F,
    ) -> Result<StatusView, ControlError>
    where
        F: AsyncFnOnce(&mut Store) -> Result<(), SyncError>,
    {
        let mut ops = self.ops.try_lock().map_err(|_| ControlError::Busy)?;
        if connected && !client::status(&ops, Activity::Idle)?.connected {
            return Err(ControlError::NotConnected(
                "connect to an account first".into(),
            ));
        }
        let mut service = self.service.status();
        let _ =
            tokio::time::timeout(Duration::from_secs(30), service.wait_for(|s| !s.syncing)).await;
        let result = change(&mut ops).await.map_err(account_error);
        let after = client::status(&ops, Activity::Idle)?;
        drop(ops);
        self.observe(after);
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let _ = this.service.sync_now().await;
        });
        result.map(|()| self.status())
    }

    /// Sets a new password: every other device of the account must sign in again; this one
    /// goes on with the session the server answers.
    pub async fn change_password(
        self: &Arc<Self>,
        req: PasswordChangeRequest,
    ) -> Result<StatusView, ControlError> {
        if req.password.is_empty() || req.new_password.is_empty() {
            return Err(ControlError::BadRequest(
                "enter the current password and the new one".into(),
            ));
        }
        self.change_session(true, async |store: &mut Store| {
            client::change_password(store, &req.password, &req.new_password).await
        })
        .await
    }

    /// Deletes the account and everything it holds on the server; this device keeps its data
    /// and is disconnected.
    pub async fn delete_account(
        self: &Arc<Self>,
        req: DeleteAccountRequest,
    ) -> Result<StatusView, ControlError> {
        if req.password.is_empty() {
            return Err(ControlError::BadRequest("enter the password".into()));
        }
        self.change_session(true, async |store: &mut Store| {
            client::delete_account(store, &req.password).await
        })
        .await
    }
}
