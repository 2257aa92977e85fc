//! Managing an account: the bodies of a password change and of an account deletion, the list of
//! the account's signed-in sessions, and the account's export.

use serde::{Deserialize, Serialize};

/// The body of `POST /api/auth/password`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct PasswordChange {
    /// The current password.
    #[cfg_attr(feature = "server", schema(format = Password, max_length = 1024))]
    pub password: String,
    #[cfg_attr(
        feature = "server",
        schema(format = Password, min_length = 8, max_length = 1024)
    )]
    pub new_password: String,
}

/// The body of `DELETE /api/account`: the password, asked again before anything is deleted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct PasswordConfirmation {
    #[cfg_attr(feature = "server", schema(format = Password, max_length = 1024))]
    pub password: String,
}

/// One signed-in session of the account (a device's token), named by an id that is not the
/// token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct SessionInfo {
    /// Names the session for `DELETE /api/account/sessions/{id}`.
    pub id: String,
    pub created_at: String,
    /// When a request last carried its token (to within a few minutes), if one has.
    pub last_used_at: Option<String>,
    pub expires_at: String,
    /// Whether this is the session of the request that asked.
    pub current: bool,
}

/// The answer of `GET /api/account/sessions`: the account's live sessions, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Sessions {
    pub sessions: Vec<SessionInfo>,
}

/// The account an export belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct ExportedAccount {
    pub user_id: String,
    pub email: String,
    pub created_at: String,
}

/// The answer of `GET /api/account/export`: the account and every live record it holds, per
/// synced table, each row as a full pull gives it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct AccountExport<R> {
    pub account: ExportedAccount,
    /// The schema version the rows are written in (the server's own).
    pub schema_version: u32,
    pub exported_at: String,
    /// Rows per synced table, every table present.
    pub records: R,
}
