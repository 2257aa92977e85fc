//! What the control API answers: the status and configuration as the settings page shows
//! them. Built from [`SyncStatus`]; never holds the token or the password.

use crate::client::{Activity, SyncStatus};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// Where the device stands with its account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    /// No account: the page shows the form.
    Disconnected,
    /// Signing in and running the first sync.
    Connecting,
    Connected,
    /// The server refused the stored token: sign in again; the local data is kept.
    SignInAgain,
}

/// Which way rows are moving.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    SigningIn,
    Pushing,
    Pulling,
}

/// How far the sync under way is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Progress {
    pub phase: Phase,
    /// Rows pushed or pulled so far in this sync.
    pub rows_done: u64,
    /// Rows to push in all, when known (a pull does not know how many rows remain).
    pub rows_total: Option<u64>,
    /// Pages pulled so far.
    pub pages: u64,
}

/// A row the server refused: it stays dirty here and is not retried until it changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct RejectedView {
    pub table: String,
    /// The row's local id.
    pub id: i64,
    pub message: String,
}

/// A pulled row held back: it waits for something this device does not have yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct HeldBackView {
    pub table: String,
    pub remote_id: String,
    /// The local id of that record's row, if this device holds one.
    pub id: Option<i64>,
    /// What it waits for.
    pub reason: String,
}

/// What the last finished sync moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct LastSync {
    pub pushed: u64,
    pub pulled: u64,
}

/// The device's sync status, as `GET /api/sync/status` and every `status` event carry it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct StatusView {
    pub state: ConnectionState,
    pub remote_url: Option<String>,
    /// The account's email.
    pub email: Option<String>,
    /// The account's user id.
    pub account_id: Option<String>,
    /// This device: made once per local database.
    pub device_id: String,
    pub syncing: bool,
    /// Present while a sync (or a connect) is under way.
    pub progress: Option<Progress>,
    /// When the last sync finished without error (a wire timestamp).
    pub last_sync_at: Option<String>,
    pub last_sync: Option<LastSync>,
    pub last_error: Option<String>,
    /// Rows waiting to be pushed, per table (rejected rows apart).
    pub pending: BTreeMap<String, u64>,
    pub pending_total: u64,
    /// Live records on this device, per table.
    pub records: BTreeMap<String, u64>,
    pub rejected: Vec<RejectedView>,
    /// Pulled rows held back until a parent arrives or a natural key frees up.
    pub parked: u64,
    /// The local user whose rows this device syncs.
    pub owner: Option<String>,
    /// Rows of other local users: they never leave the device.
    pub other_owners_rows: u64,
    /// The same rows, each with what it waits for.
    pub held_back: Vec<HeldBackView>,
}

/// What the sign-in form starts from (`GET /api/sync/config`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct ConfigView {
    /// The app's default remote.
    pub default_remote_url: String,
    /// The remote this database last used, else the default.
    pub remote_url: String,
    /// The email this database last signed in with.
    pub email: Option<String>,
    /// Whether this database holds data: then the form asks what to do with it should the
    /// account hold data too.
    pub has_local_data: bool,
    /// The local owner this device syncs, once chosen.
    pub owner: Option<String>,
    /// Every local owner of the device's rows (a connect names one when there are several).
    pub owners: Vec<String>,
    pub device_id: String,
    pub schema_version: u32,
    /// The CA (PEM) trusted for the server beside the public web's roots, if one was given.
    pub server_ca: Option<String>,
}

/// What to do with this device's data when the account holds data too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LocalDataChoice {
    /// Keep it and upload it beside the account's.
    #[default]
    Upload,
    /// Discard it and take the account's.
    Discard,
}

/// `POST /api/sync/connect`. The password is used for this sign-in only and never stored.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectRequest {
    /// `https://...`; plain `http://` only to this machine. Default: the app's remote.
    pub remote_url: Option<String>,
    pub email: String,
    pub password: String,
    /// Create the account.
    #[serde(default)]
    pub register: bool,
    #[serde(default)]
    pub local_data: LocalDataChoice,
    /// The local owner (the app's local user) whose rows this device syncs: needed when the
    /// rows belong to several (`owners` in the config).
    #[serde(default)]
    pub owner: Option<String>,
    /// A self-hosted server's own CA certificate (PEM), trusted for this server beside the
    /// public web's roots; absent or empty: the public roots only.
    #[serde(default)]
    pub server_ca: Option<String>,
}

/// Never prints the password.
impl std::fmt::Debug for ConnectRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectRequest")
            .field("remote_url", &self.remote_url)
            .field("email", &self.email)
            .field("password", &"<hidden>")
            .field("register", &self.register)
            .field("local_data", &self.local_data)
            .field("owner", &self.owner)
            .field("server_ca", &self.server_ca.is_some())
            .finish()
    }
}

/// `POST /api/sync/password`: the current password and the new one; neither is stored.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChangeRequest {
    pub password: String,
    pub new_password: String,
}

/// `POST /api/sync/delete-account`: the password, asked again.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteAccountRequest {
    pub password: String,
}

/// What `POST /api/sync/sync` did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct SyncResult {
    pub pushed: u64,
    pub rejected: u64,
    pub pulled: u64,
    pub pages: u64,
}

/// The view of `status` while nothing overrides it; `push_total` is what waited when the
/// current push began.
pub(crate) fn status_view(
    status: &SyncStatus,
    connecting: Option<&Activity>,
    push_total: u64,
    last_sync: Option<LastSync>,
    records: &BTreeMap<String, u64>,
) -> StatusView {
    let state = if connecting.is_some() {
        ConnectionState::Connecting
    } else if status.needs_sign_in {
        ConnectionState::SignInAgain
    } else if status.connected {
        ConnectionState::Connected
    } else {
        ConnectionState::Disconnected
    };
    let progress = match connecting.unwrap_or(&status.activity) {
        Activity::Idle if connecting.is_some() => Some(Progress {
            phase: Phase::SigningIn,
            rows_done: 0,
            rows_total: None,
            pages: 0,
        }),
        Activity::Idle => None,
        Activity::Pushing { rows } => Some(Progress {
            phase: Phase::Pushing,
            rows_done: *rows as u64,
            rows_total: Some(push_total.max(*rows as u64)),
            pages: 0,
        }),
        Activity::Pulling { pages, rows } => Some(Progress {
            phase: Phase::Pulling,
            rows_done: *rows as u64,
            rows_total: None,
            pages: *pages as u64,
        }),
    };
    StatusView {
        state,
        remote_url: status.remote_url.clone(),
        email: status.email.clone(),
        account_id: status.account.clone(),
        device_id: status.device_id.clone(),
        syncing: connecting.is_some() || status.syncing,
        progress,
        last_sync_at: status.last_sync_at.clone(),
        last_sync,
        last_error: status.last_error.clone(),
        pending_total: status.pending.values().sum(),
        pending: status.pending.clone(),
        records: records.clone(),
        rejected: status
            .rejected
            .iter()
            .map(|r| RejectedView {
                table: r.table.clone(),
                id: r.id,
                message: r.message.clone(),
            })
            .collect(),
        parked: status.parked,
        owner: status.owner.clone(),
        other_owners_rows: status.other_owners.values().sum(),
        held_back: status
            .held_back
            .iter()
            .map(|h| HeldBackView {
                table: h.table.clone(),
                remote_id: h.remote_id.clone(),
                id: h.id,
                reason: h.reason.clone(),
            })
            .collect(),
    }
}
