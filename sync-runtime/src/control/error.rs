//! The control API's one error type, answered in the protocol's envelope
//! `{"error": code, "message": sentence}`. The page picks its message by `error`.

use crate::client::{RemoteError, SyncError};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    BadRequest(String),
    /// The request came from elsewhere than the page's own origin, or not from this machine.
    #[error("{0}")]
    Forbidden(String),
    #[error("no such endpoint")]
    NotFound,
    #[error("this device is connected already; disconnect first")]
    AlreadyConnected,
    #[error("{0}")]
    NotConnected(String),
    #[error("a connect or disconnect is under way; try again when it has finished")]
    Busy,
    /// The remote refused the email and password (unknown email or wrong password alike).
    #[error("wrong email or password")]
    WrongCredentials,
    #[error("the server refused this device's sign-in: {0}")]
    SignInAgain(String),
    /// A password asked again (to change it, to delete the account) is wrong.
    #[error("the password is wrong")]
    WrongPassword,
    #[error("an account with this email exists already: sign in instead")]
    EmailTaken,
    #[error("{0}")]
    RateLimited(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    NotASyncServer(String),
    #[error("{0}")]
    ServerTooOld(String),
    #[error("{0}")]
    AppTooOld(String),
    /// The device's rows belong to several local owners and none was named (or the one named
    /// is empty): the message names them.
    #[error("{0}")]
    OwnerNeeded(String),
    /// The remote failed otherwise (a 5xx, an unsupported schema during the sync).
    #[error("{0}")]
    Remote(String),
    /// Anything else: logged in full, answered with no detail.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ControlError {
    pub fn status_code(&self) -> StatusCode {
        use ControlError::*;
        match self {
            BadRequest(_) => StatusCode::BAD_REQUEST,
            Forbidden(_) | WrongPassword => StatusCode::FORBIDDEN,
            NotFound => StatusCode::NOT_FOUND,
            AlreadyConnected | NotConnected(_) | Busy | EmailTaken | OwnerNeeded(_) => {
                StatusCode::CONFLICT
            }
            WrongCredentials | SignInAgain(_) => StatusCode::UNAUTHORIZED,
            RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Unreachable(_) | NotASyncServer(_) | ServerTooOld(_) | AppTooOld(_) | Remote(_) => {
                StatusCode::BAD_GATEWAY
            }
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        use ControlError::*;
        match self {
            BadRequest(_) => "bad_request",
            Forbidden(_) => "forbidden",
            NotFound => "not_found",
            AlreadyConnected => "already_connected",
            NotConnected(_) => "not_connected",
            Busy => "busy",
            WrongCredentials => "unauthorized",
            SignInAgain(_) => "sign_in_again",
            WrongPassword => "wrong_password",
            EmailTaken => "conflict",
            RateLimited(_) => "rate_limited",
            Unreachable(_) => "unreachable",
            NotASyncServer(_) => "not_a_sync_server",
            ServerTooOld(_) => "server_too_old",
            AppTooOld(_) => "app_too_old",
            OwnerNeeded(_) => "owner_needed",
            Remote(_) => "remote_error",
            Internal(_) => "internal",
        }
    }

    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        ControlError::Internal(e.to_string())
    }
}

impl From<RemoteError> for ControlError {
    fn from(e: RemoteError) -> Self {
        match e {
            RemoteError::Unreachable { url, message } => {
                ControlError::Unreachable(format!("cannot reach {url}: {message}"))
            }
            RemoteError::Api {
                status, message, ..
            } => match status {
                400 => ControlError::BadRequest(message),
                401 => ControlError::WrongCredentials,
                409 => ControlError::EmailTaken,
                429 => ControlError::RateLimited(message),
                _ => ControlError::Remote(format!("the server answered HTTP {status}: {message}")),
            },
            RemoteError::Protocol(m) => ControlError::NotASyncServer(format!(
                "the server does not speak the sync protocol: {m}"
            )),
            RemoteError::Page(e) => ControlError::NotASyncServer(format!(
                "the server does not speak the sync protocol: {e}"
            )),
            RemoteError::Address(m) => ControlError::BadRequest(m),
        }
    }
}

impl From<SyncError> for ControlError {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::NotConnected => ControlError::NotConnected(e.to_string()),
            SyncError::SignInAgain(m) => ControlError::SignInAgain(m),
            SyncError::Remote(r) => r.into(),
            SyncError::Store(s) => s.into(),
        }
    }
}

impl From<crate::store::StoreError> for ControlError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Owner(m) => ControlError::OwnerNeeded(m),
            e => ControlError::internal(e),
        }
    }
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        let message = match &self {
            ControlError::Internal(detail) => {
                tracing::error!(error = %detail, "control request failed");
                "the device failed to handle this request".to_owned()
            }
            other => other.to_string(),
        };
        let body = serde_json::json!({ "error": self.code(), "message": message });
        let mut response = (self.status_code(), axum::Json(body)).into_response();
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}
