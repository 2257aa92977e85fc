//! The server's one error type: a status, a snake_case code and a sentence for a person
//! (docs/PROTOCOL.md, "Errors"). A 5xx never carries internals.

use crate::protocol::error::{CursorExpiry, ErrorBody, ErrorCode};
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
    /// The registrations one address may make in a window are made: the same 429 as failed
    /// logins, worded for someone who is only signing up.
    #[error("too many accounts registered from this address; try again in {retry_after} s")]
    TooManyRegistrations { retry_after: u64 },
    /// Every password-hashing slot and queue place is taken, or the request bytes the server
    /// holds at once.
    #[error("the server is busy; try again in {retry_after} s")]
    Busy { retry_after: u64 },
    /// The database does not answer (readiness): 503.
    #[error("{0}")]
    Unavailable(String),
    /// The account's requests in flight hold its share of the server's memory.
    #[error("this account has too many requests in flight; try again in {retry_after} s")]
    AccountBusy { retry_after: u64 },
    /// Anything else: logged in full, answered with no detail.
    #[error("internal error: {0}")]
    Internal(String),
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
            ApiError::RateLimited { .. }
            | ApiError::TooManyRegistrations { .. }
            | ApiError::AccountBusy { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Busy { .. } | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::BadRequest(_) => ErrorCode::BadRequest,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            ApiError::RequestTimeout(_) => ErrorCode::RequestTimeout,
            ApiError::Unauthorized(_) => ErrorCode::Unauthorized,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::Conflict(_) => ErrorCode::Conflict,
            ApiError::CursorExpired { .. } => ErrorCode::CursorExpired,
            ApiError::TooLarge(_) => ErrorCode::TooLarge,
            ApiError::UnsupportedSchema(_) => ErrorCode::UnsupportedSchema,
            ApiError::RateLimited { .. }
            | ApiError::TooManyRegistrations { .. }
            | ApiError::AccountBusy { .. } => ErrorCode::RateLimited,
            ApiError::Busy { .. } => ErrorCode::Busy,
            ApiError::Unavailable(_) => ErrorCode::Unavailable,
            ApiError::Internal(_) => ErrorCode::Internal,
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
            ApiError::Internal(_) => {
                "the server failed to handle this request; it stored nothing".to_owned()
            }
            other => other.to_string(),
        };
        let reason = match &self {
            ApiError::CursorExpired { reason, .. } => Some(*reason),
            _ => None,
        };
        let body = ErrorBody {
            error: self.code(),
            message,
            reason,
        };
        let mut response = (self.status_code(), axum::Json(body)).into_response();
        // For the metrics, which count errors by code.
        response.extensions_mut().insert(self.code());
        if let ApiError::Internal(detail) = &self {
            // For the operator's log (`json_errors`), never for the client.
            response
                .extensions_mut()
                .insert(InternalDetail(detail.clone()));
        }
        if let ApiError::RateLimited { retry_after }
        | ApiError::TooManyRegistrations { retry_after }
        | ApiError::Busy { retry_after }
        | ApiError::AccountBusy { retry_after } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        response
    }
}

/// What went wrong inside the server, carried by a 500 answer to the layer that logs it.
#[derive(Clone)]
pub struct InternalDetail(pub String);

/// Gives every error answer the JSON body of the protocol, whoever made it (axum's own 405 and
/// rejections answer with an empty or plain-text body). Its headers (`Allow`) are kept. A
/// failure inside the server is logged here, once, with what the client is not told.
pub async fn json_errors(response: Response) -> Response {
    if let Some(InternalDetail(detail)) = response.extensions().get::<InternalDetail>() {
        tracing::error!(error = %detail, "request failed");
    }
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
        StatusCode::NOT_FOUND => (ErrorCode::NotFound, "no such endpoint"),
        StatusCode::METHOD_NOT_ALLOWED => (
            ErrorCode::MethodNotAllowed,
            "this endpoint does not answer this method; see the Allow header",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (ErrorCode::TooLarge, "the request is too large"),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            (ErrorCode::TooLarge, "the request's headers are too large")
        }
        StatusCode::REQUEST_TIMEOUT => (
            ErrorCode::RequestTimeout,
            "the request took too long to arrive",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            ErrorCode::BadRequest,
            "send a JSON body with `Content-Type: application/json`",
        ),
        s if s.is_server_error() => (
            ErrorCode::Internal,
            "the server failed to handle this request",
        ),
        _ => (
            ErrorCode::BadRequest,
            "the request is not valid HTTP for this server",
        ),
    };
    let body = ErrorBody {
        error: code,
        message: message.to_owned(),
        reason: None,
    };
    serde_json::to_string(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failure inside the server tells the client only that it failed and stored nothing;
    /// what went wrong travels with the answer to the layer that logs it.
    #[tokio::test]
    async fn an_internal_failure_keeps_its_detail_from_the_client() {
        let response = ApiError::Internal("connection to 10.0.0.7 refused".into()).into_response();
        let response = json_errors(response).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let detail = response.extensions().get::<InternalDetail>().map(|d| &d.0);
        assert_eq!(
            detail.map(String::as_str),
            Some("connection to 10.0.0.7 refused")
        );
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "internal");
        assert!(!body.to_string().contains("10.0.0.7"), "{body}");
    }
}
