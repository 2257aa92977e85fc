//! Request parts read the axum way (extractors), each failure answered as the protocol's JSON
//! error rather than axum's plain-text rejection.

use crate::server::error::ApiError;
use crate::server::{Server, auth};
use axum::extract::{FromRequestParts, Query};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// The user a request's bearer token belongs to.
pub struct SignedIn {
    pub user_id: String,
    /// The token's hash, which names the token in storage (sign-out revokes it).
    pub token_hash: String,
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
        let user_id = user.ok_or_else(|| {
            ApiError::Unauthorized("the token is unknown, expired or revoked; sign in again".into())
        })?;
        Ok(SignedIn {
            user_id,
            token_hash,
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
