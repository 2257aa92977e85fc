//! Signing in: the credentials a device sends to register or log in, and the session it gets.

use serde::{Deserialize, Serialize};

/// The body of a register or login.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Credentials {
    /// Compared case-insensitively; no whitespace or control characters.
    #[cfg_attr(
        feature = "server",
        schema(
            max_length = 254,
            pattern = "^[^@\\s\\x00-\\x1f\\x7f-\\x9f]+@[^\\s\\x00-\\x1f\\x7f-\\x9f]+$"
        )
    )]
    pub email: String,
    #[cfg_attr(
        feature = "server",
        schema(format = Password, min_length = 8, max_length = 1024)
    )]
    pub password: String,
}

/// The answer to a register or login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Session {
    pub user_id: String,
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    pub expires_at: String,
}
