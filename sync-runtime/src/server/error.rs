//! The server's one error type: a status, a snake_case code and a sentence for a person
//! (PROTOCOL.md, "Errors"). A 5xx never carries internals.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    /// 410: pull again without `since`. `reason` (in the body too) tells a client whether the
    /// server lost history (`ahead`: re-upload what it holds) or only dropped tombstones.
    #[error("{message}")]
    CursorExpired {
        reason: CursorExpiry,
        message: String,
    },
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    UnsupportedSchema(String),
    #[error("too many failed attempts; try again in {retry_after} s")]
    RateLimited { retry_after: u64 },
    /// Every password-hashing slot and queue place is taken.
    #[error("the server is busy; try again in {retry_after} s")]
    Busy { retry_after: u64 },
    /// Anything else: logged in full, answered with no detail.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why a cursor expired, as the `reason` of a 410 body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CursorExpiry {
    /// Tombstones the pull had to deliver were purged.
    Purged,
    /// The cursor is beyond the account's sequence: the server lost history.
    Ahead,
    /// The cursor was issued for another schema version.
    SchemaVersion,
}

impl CursorExpiry {
    pub fn as_str(self) -> &'static str {
        match self {
            CursorExpiry::Purged => "purged",
            CursorExpiry::Ahead => "ahead",
            CursorExpiry::SchemaVersion => "schema_version",
        }
    }
}

impl ApiError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::CursorExpired { .. } => StatusCode::GONE,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedSchema(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Conflict(_) => "conflict",
            ApiError::CursorExpired { .. } => "cursor_expired",
            ApiError::TooLarge(_) => "too_large",
            ApiError::UnsupportedSchema(_) => "unsupported_schema",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Busy { .. } => "busy",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<crate::server::db::DbError> for ApiError {
    fn from(e: crate::server::db::DbError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "request failed");
                "the server failed to handle this request; it stored nothing".to_owned()
            }
            other => other.to_string(),
        };
        let mut body = serde_json::json!({ "error": self.code(), "message": message });
        if let ApiError::CursorExpired { reason, .. } = &self {
            body["reason"] = reason.as_str().into();
        }
        let mut response = (self.status_code(), axum::Json(body)).into_response();
        if let ApiError::RateLimited { retry_after } | ApiError::Busy { retry_after } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        response
    }
}

/// Gives every error answer the JSON body of the protocol, whoever made it (axum's own 405 and
/// rejections answer with an empty or plain-text body). Its headers (`Allow`) are kept.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let body = envelope(status);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// The error body for an answer that only has its status.
pub fn envelope(status: StatusCode) -> String {
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such endpoint"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this endpoint does not answer this method; see the Allow header",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("too_large", "the request is too large"),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            ("too_large", "the request's headers are too large")
        }
        StatusCode::REQUEST_TIMEOUT => ("request_timeout", "the request took too long to arrive"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "bad_request",
            "send a JSON body with `Content-Type: application/json`",
        ),
        s if s.is_server_error() => ("internal", "the server failed to handle this request"),
        _ => (
            "bad_request",
            "the request is not valid HTTP for this server",
        ),
    };
    serde_json::json!({ "error": code, "message": message }).to_string()
}
