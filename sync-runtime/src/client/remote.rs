//! The server, as the device speaks to it over HTTP.

use super::remote_url::check_remote_url;
use super::transport::{PullRequest, Transport};
use crate::protocol::DecodeError;
use crate::protocol::account::{PasswordChange, PasswordConfirmation};
use crate::protocol::auth::{Credentials, Session};
use crate::protocol::error::{CursorExpiry, ErrorBody, ErrorCode};
use crate::protocol::health::Health;
use crate::protocol::pull::PullQuery;
use crate::protocol::push::{PushRequest, PushResponse};
use crate::protocol::{headers, paths};
use serde::Deserialize;
use serde_json::Value as Json;
use std::time::Duration;

/// Why a request to the server failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    /// The network: unreachable, cut, timed out. Worth retrying later.
    #[error("cannot reach {url}: {message}")]
    Unreachable { url: String, message: String },
    /// The server answered with a protocol error.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        status: u16,
        code: ErrorCode,
        message: String,
        /// The body's `reason`, where the protocol gives one (a 410's: `ahead` when the server
        /// lost history).
        reason: Option<CursorExpiry>,
    },
    /// The server answered something that is not the protocol.
    #[error("the server's answer is not the sync protocol: {0}")]
    Protocol(String),
    /// A pulled page that does not decode against the schema (said as [`RemoteError::Protocol`]
    /// is, kept typed so that the decoder's reason reaches the caller as it was).
    #[error("the server's answer is not the sync protocol: {0}")]
    Page(#[from] DecodeError),
    /// A server address the device sends no password or token to (see [`check_remote_url`]).
    #[error("{0}")]
    Address(String),
}

impl RemoteError {
    pub fn status(&self) -> Option<u16> {
        match self {
            RemoteError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A 410 saying the server holds less than this device was told it held (it was restored
    /// from an earlier copy): what this device holds must be uploaded again.
    pub fn server_lost_history(&self) -> bool {
        matches!(
            self,
            RemoteError::Api {
                status: 410,
                reason: Some(CursorExpiry::Ahead),
                ..
            }
        )
    }

    /// Whether trying again later may succeed (the network, or the server failing).
    pub fn is_transient(&self) -> bool {
        match self {
            RemoteError::Unreachable { .. } => true,
            RemoteError::Api { status, .. } => *status >= 500 || *status == 429,
            RemoteError::Protocol(_) | RemoteError::Page(_) | RemoteError::Address(_) => false,
        }
    }
}

/// What a page's headers say follows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextPage {
    /// More changes: the next page is the one after this cursor.
    After(String),
    /// This page is the last.
    None,
}

/// Bytes an answer other than a pulled page may hold (a session, a push's answer, health, an
/// error): a hostile server's endless answer ends there instead of in the device's memory.
pub const MAX_ANSWER_BYTES: usize = 4 << 20;

/// Bytes a pulled page may hold: the server's page bound (`max_page_bytes`, 8 MiB by default),
/// or a page of one record as large as the largest push body (16 MiB), with room to spare.
pub const MAX_PAGE_ANSWER_BYTES: usize = 64 << 20;

/// One sync server.
#[derive(Clone, Debug)]
pub struct Remote {
    base: String,
    http: reqwest::Client,
    /// The CA trusted for this server beside the public web's roots.
    ca_pem: Option<String>,
}

impl Remote {
    /// The server at `base_url`, refused unless it passes the device's URL rule
    /// ([`check_remote_url`]).
    pub fn new(base_url: &str) -> Result<Remote, RemoteError> {
        Self::trusting(base_url, None)
    }

    /// A server whose certificate may be signed by `ca_pem` (a self-hosted server's own CA)
    /// as well as by the public web's roots, refused unless it passes the device's URL rule.
    pub fn trusting(base_url: &str, ca_pem: Option<&str>) -> Result<Remote, RemoteError> {
        let base = check_remote_url(base_url).map_err(RemoteError::Address)?;
        let http = super::trust::trusting(reqwest::Client::builder(), ca_pem)?
            // A redirect would carry the password or the token to a host the rule never saw.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| RemoteError::Protocol(e.to_string()))?;
        Ok(Remote {
            base,
            http,
            ca_pem: ca_pem.map(str::to_owned),
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Json, RemoteError> {
        let bytes = self
            .body(self.send_for_head(req).await?, MAX_ANSWER_BYTES)
            .await?;
        if bytes.is_empty() {
            return Ok(Json::Null);
        }
        serde_json::from_slice(&bytes)
            .map_err(|_| RemoteError::Protocol("an answer with a body that is not JSON".into()))
    }

    /// The answer's body, at most `limit` bytes of it: a longer one is refused as it arrives.
    async fn body(
        &self,
        mut resp: reqwest::Response,
        limit: usize,
    ) -> Result<bytes::Bytes, RemoteError> {
        let too_large = || RemoteError::Protocol(format!("an answer over {limit} bytes"));
        let declared = resp.content_length().unwrap_or(0);
        if declared > limit as u64 {
            return Err(too_large());
        }
        let mut bytes = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
        while let Some(chunk) = resp.chunk().await.map_err(|e| RemoteError::Unreachable {
            url: self.base.clone(),
            message: e.to_string(),
        })? {
            if bytes.len() + chunk.len() > limit {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes.into())
    }

    /// The head of a 2xx answer, its body still to be read; any other status is the
    /// protocol's error.
    async fn send_for_head(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RemoteError> {
        let resp = req.send().await.map_err(|e| RemoteError::Unreachable {
            url: self.base.clone(),
            message: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        if resp.status().is_redirection() {
            let to = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("another address")
                .to_owned();
            return Err(RemoteError::Protocol(format!(
                "HTTP {status} sends the request on to {to}; a device follows no redirect (the \
                 password or token would go along): connect to the final address instead"
            )));
        }
        let bytes = self.body(resp, MAX_ANSWER_BYTES).await?;
        let body: Json = if bytes.is_empty() {
            Json::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|_| {
                RemoteError::Protocol(format!("HTTP {status} with a body that is not JSON"))
            })?
        };
        // JSON that is not the protocol's error body (a proxy's) is still an answer with its
        // status: a 5xx of it stays worth retrying.
        let body = ErrorBody::deserialize(body).unwrap_or_else(|_| ErrorBody {
            error: ErrorCode::Unknown,
            message: "the server refused the request".to_owned(),
            reason: None,
        });
        Err(RemoteError::Api {
            status,
            code: body.error,
            message: body.message,
            reason: body.reason,
        })
    }

    /// Sends `req` and reads its answer as a `T` of the protocol.
    async fn send_for<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<T, RemoteError> {
        let bytes = self
            .body(self.send_for_head(req).await?, MAX_ANSWER_BYTES)
            .await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| RemoteError::Protocol(format!("{what} that is not the protocol: {e}")))
    }

    /// What the server serves (its schema versions) and its limits.
    pub async fn health(&self) -> Result<Health, RemoteError> {
        self.send_for(
            self.http.get(format!("{}{}", self.base, paths::HEALTH)),
            "a health answer",
        )
        .await
    }

    /// Sets a new password for the account of `token`: the answer is a new session; every
    /// other session of the account, `token`'s too, ends.
    pub async fn change_password(
        &self,
        token: &str,
        password: &str,
        new_password: &str,
    ) -> Result<Session, RemoteError> {
        let body = PasswordChange {
            password: password.to_owned(),
            new_password: new_password.to_owned(),
        };
        let url = format!("{}{}", self.base, paths::PASSWORD);
        let req = self.http.post(url).bearer_auth(token).json(&body);
        self.send_for(req, "a session").await
    }

    /// Deletes the account of `token` and everything it holds on the server.
    pub async fn delete_account(&self, token: &str, password: &str) -> Result<(), RemoteError> {
        let body = PasswordConfirmation {
            password: password.to_owned(),
        };
        let url = format!("{}{}", self.base, paths::ACCOUNT);
        self.send(self.http.delete(url).bearer_auth(token).json(&body))
            .await
            .map(|_| ())
    }

    fn pull_request(&self, r: PullRequest<'_>, wait: Option<Duration>) -> reqwest::RequestBuilder {
        let query = PullQuery {
            since: r.since.map(str::to_owned),
            limit: Some(r.limit.try_into().unwrap_or(i64::MAX)),
            device_id: r.device_id.map(str::to_owned),
            wait: wait.map(|w| w.as_secs()),
        };
        self.http
            .get(format!("{}{}", self.base, paths::PULL))
            .bearer_auth(r.token)
            .header(headers::SCHEMA_VERSION, r.schema_version.to_string())
            .query(&query)
    }
}

impl Transport for Remote {
    type Body = reqwest::Response;

    fn open(url: &str) -> Result<Remote, RemoteError> {
        Remote::new(url)
    }

    fn open_trusting(url: &str, ca_pem: Option<&str>) -> Result<Remote, RemoteError> {
        Remote::trusting(url, ca_pem)
    }

    fn trusted_ca(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    fn url(&self) -> &str {
        &self.base
    }

    async fn sign_in(
        &self,
        email: &str,
        password: &str,
        register: bool,
    ) -> Result<Session, RemoteError> {
        let path = if register {
            paths::REGISTER
        } else {
            paths::LOGIN
        };
        let body = Credentials {
            email: email.to_owned(),
            password: password.to_owned(),
        };
        self.send_for(
            self.http.post(format!("{}{path}", self.base)).json(&body),
            "a session",
        )
        .await
    }

    async fn sign_out(&self, token: &str) -> Result<(), RemoteError> {
        self.send(
            self.http
                .post(format!("{}{}", self.base, paths::LOGOUT))
                .bearer_auth(token),
        )
        .await
        .map(|_| ())
    }

    async fn push(
        &self,
        token: &str,
        device_id: &str,
        schema_version: u32,
        changes: &serde_json::value::RawValue,
    ) -> Result<PushResponse, RemoteError> {
        // Serialized straight from the batch: a `json!` body would copy every row first.
        let body = PushRequest {
            device_id,
            schema_version,
            changes,
        };
        self.send_for(
            self.http
                .post(format!("{}{}", self.base, paths::PUSH))
                .bearer_auth(token)
                .json(&body),
            "a push answer",
        )
        .await
    }

    async fn pull_head(
        &self,
        request: PullRequest<'_>,
    ) -> Result<(reqwest::Response, Option<NextPage>), RemoteError> {
        let resp = self.send_for_head(self.pull_request(request, None)).await?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let next = match (header(headers::CURSOR), header(headers::HAS_MORE)) {
            (Some(cursor), Some(more)) => Some(if more == "true" {
                NextPage::After(cursor)
            } else {
                NextPage::None
            }),
            _ => None,
        };
        Ok((resp, next))
    }

    async fn pull_waiting(
        &self,
        request: PullRequest<'_>,
        wait: Duration,
    ) -> Result<(reqwest::Response, Option<Duration>), RemoteError> {
        let req = self
            .pull_request(request, Some(wait))
            // Held for `wait`, then answered: allow that on top of the usual time.
            .timeout(wait + Duration::from_secs(60));
        let resp = self.send_for_head(req).await?;
        let granted = resp
            .headers()
            .get(headers::WAIT)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        Ok((resp, granted))
    }

    async fn read_body(&self, body: reqwest::Response) -> Result<bytes::Bytes, RemoteError> {
        self.body(body, MAX_PAGE_ANSWER_BYTES).await
    }
}
