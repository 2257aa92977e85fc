//! Request parts read the axum way (extractors), each failure answered as the protocol's JSON
//! error rather than axum's plain-text rejection.

use crate::protocol::headers;
use crate::server::error::ApiError;
use crate::server::{Server, accounts, auth, budget, client_addr};
use crate::timestamp::Timestamp;
use axum::body::HttpBody;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The user a request's bearer token belongs to.
pub struct SignedIn {
    pub user_id: String,
    /// The token's hash, which names the token in storage (sign-out revokes it).
    pub token_hash: String,
    /// When the token expires: a pull held past it is answered 401.
    pub expires_at: Timestamp,
}

impl FromRequestParts<Arc<Server>> for SignedIn {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Arc<Server>) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 256)
            .ok_or_else(|| ApiError::Unauthorized("send `Authorization: Bearer <token>`".into()))?;
        let token_hash = auth::token_hash(token);
        let h = token_hash.clone();
        let user = crate::with_tx!(&s.db, false, |tx| auth::token_user(tx, &h).await)?;
        let (user_id, expires_at) = user.ok_or_else(|| {
            ApiError::Unauthorized("the token is unknown, expired or revoked; sign in again".into())
        })?;
        accounts::note_use(s, &token_hash);
        Ok(SignedIn {
            user_id,
            token_hash,
            expires_at,
        })
    }
}

/// A query string read by axum's [`Query`] (percent-decoding included).
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError::BadRequest(format!(
                "the query string is not what this endpoint takes: {}",
                rejection.body_text()
            ))),
        }
    }
}

/// The address of the client a request came from: the socket's peer, or, from a trusted proxy,
/// the address it forwards ([`client_addr`]). `None` when the router is driven in-process,
/// without a socket.
pub struct PeerAddress(pub Option<IpAddr>);

impl FromRequestParts<Arc<Server>> for PeerAddress {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Arc<Server>) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(PeerAddress(client_addr::client_address(
            peer,
            &parts.headers,
            &s.config.trusted_proxies,
        )))
    }
}

/// The most a small JSON body (credentials) may hold.
const SMALL_BODY_BYTES: usize = 64 * 1024;

/// A small JSON body (`Content-Type: application/json`, at most 64 KiB, within the server's
/// body timeout), read as `T`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<Server>> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, s: &Arc<Server>) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let (_admitted, body) = s.budget.admit_body(
            None,
            &parts.headers,
            body,
            SMALL_BODY_BYTES,
            s.config.body_timeout,
        )?;
        let bytes = read_body(s, &parts.headers, body, SMALL_BODY_BYTES).await?;
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|e| ApiError::BadRequest(format!("the body is not the expected JSON: {e}")))
    }
}

/// A JSON body's bytes, within `limit` and the server's body timeout (a client sending slowly
/// would otherwise hold its buffer for as long as it likes). A body declared or found over
/// `limit` is a 413; one that is not valid HTTP (a malformed chunk, a connection cut short) a
/// 400, so that a client does not take it for a batch to halve.
pub async fn read_body(
    s: &Server,
    request_headers: &HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<axum::body::Bytes, ApiError> {
    if !headers::is_json(
        request_headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    ) {
        return Err(ApiError::BadRequest(
            "send a JSON body with `Content-Type: application/json`".into(),
        ));
    }
    let too_large = || ApiError::TooLarge(format!("the body is over {limit} bytes"));
    let declared = budget::declared_length(request_headers);
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let timeout = s.config.body_timeout;
    let read = async {
        let mut body = body;
        let mut bytes = Vec::with_capacity(declared.unwrap_or(0));
        while let Some(frame) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
        {
            let frame = frame
                .map_err(|e| ApiError::BadRequest(format!("the body is not valid HTTP: {e}")))?;
            if let Ok(data) = frame.into_data() {
                if bytes.len() + data.len() > limit {
                    return Err(too_large());
                }
                bytes.extend_from_slice(&data);
            }
        }
        Ok(axum::body::Bytes::from(bytes))
    };
    tokio::time::timeout(timeout, read).await.map_err(|_| {
        ApiError::RequestTimeout(format!(
            "the body did not arrive within {} s",
            timeout.as_secs()
        ))
    })?
}
