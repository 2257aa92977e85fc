//! The body of every error answer, `{"error", "message", "reason"?}`, and its codes
//! (docs/PROTOCOL.md, "Errors").

use serde::{Deserialize, Serialize};
use std::fmt;

/// The error body of every failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// A snake_case code, e.g. `bad_request`.
    #[cfg_attr(feature = "server", schema(value_type = String))]
    pub error: ErrorCode,
    /// A sentence for a person.
    pub message: String,
    /// On a 410 only: `purged`, `schema_version` or `ahead` (the server lost history: upload
    /// again what you hold, then pull everything).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "server", schema(value_type = Option<String>))]
    pub reason: Option<CursorExpiry>,
}

/// An error's `error` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    Unauthorized,
    Forbidden,
    Conflict,
    CursorExpired,
    TooLarge,
    UnsupportedSchema,
    RateLimited,
    Busy,
    /// The server runs but cannot serve: its database does not answer (readiness).
    Unavailable,
    Internal,
    /// A code this side does not know (a newer peer's, or not this protocol's): read, never
    /// written by the server.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Conflict => "conflict",
            ErrorCode::CursorExpired => "cursor_expired",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnsupportedSchema => "unsupported_schema",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Busy => "busy",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a cursor expired, as the `reason` of a 410 body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CursorExpiry {
    /// Tombstones the pull had to deliver were purged.
    Purged,
    /// The cursor is beyond the account's sequence: the server lost history.
    Ahead,
    /// The cursor was issued for another schema version.
    SchemaVersion,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn codes_are_written_as_their_snake_case_names() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::NotFound,
            ErrorCode::MethodNotAllowed,
            ErrorCode::RequestTimeout,
            ErrorCode::Unauthorized,
            ErrorCode::Forbidden,
            ErrorCode::Conflict,
            ErrorCode::CursorExpired,
            ErrorCode::TooLarge,
            ErrorCode::UnsupportedSchema,
            ErrorCode::RateLimited,
            ErrorCode::Busy,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
        }
    }

    #[test]
    fn a_410_carries_its_reason_and_other_errors_none() {
        let gone = ErrorBody {
            error: ErrorCode::CursorExpired,
            message: "pull again".into(),
            reason: Some(CursorExpiry::SchemaVersion),
        };
        assert_eq!(
            serde_json::to_value(&gone).unwrap(),
            json!({"error": "cursor_expired", "message": "pull again", "reason": "schema_version"})
        );
        let bad = ErrorBody {
            error: ErrorCode::BadRequest,
            message: "no".into(),
            reason: None,
        };
        assert_eq!(
            serde_json::to_value(&bad).unwrap(),
            json!({"error": "bad_request", "message": "no"})
        );
    }

    #[test]
    fn an_unknown_code_is_read_as_unknown() {
        let body: ErrorBody =
            serde_json::from_value(json!({"error": "teapot", "message": "short and stout"}))
                .unwrap();
        assert_eq!(body.error, ErrorCode::Unknown);
    }
}
