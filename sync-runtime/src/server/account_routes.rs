//! The endpoints with which a person manages their own account (docs/PROTOCOL.md, "Accounts"):
//! change the password, sign out everywhere, list and end sessions, export the account's data
//! and delete the account. Each needs the bearer token; the destructive ones ask for the
//! password again, and those guesses count against the login limits.

use crate::protocol::account::{
    AccountExport, ExportedAccount, PasswordChange, PasswordConfirmation, SessionInfo, Sessions,
};
use crate::protocol::auth::Session;
use crate::protocol::error::ErrorBody;
use crate::protocol::paths;
use crate::server::error::ApiError;
use crate::server::extract::{ApiJson, PeerAddress, SignedIn};
use crate::server::page_rows::PageRows;
use crate::server::routes::{check_password, mint_session};
use crate::server::{Server, accounts, auth};
use crate::timestamp::Timestamp;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    paths(
        change_password,
        logout_all,
        list_sessions,
        end_session,
        export,
        delete_account
    ),
    components(schemas(
        PasswordChange,
        PasswordConfirmation,
        Sessions,
        SessionInfo,
        ExportedAccount,
        AccountExport<PageRows>
    ))
)]
pub struct AccountApiDoc;

pub(super) fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route(paths::PASSWORD, post(change_password))
        .route(paths::LOGOUT_ALL, post(logout_all))
        .route(paths::SESSIONS, get(list_sessions))
        .route(paths::SESSION, delete(end_session))
        .route(paths::ACCOUNT_EXPORT, get(export))
        .route(paths::ACCOUNT, delete(delete_account))
}

/// Checks `password` against the account of `user_id`, counted as a login attempt from
/// `address` (a stolen token must not give unlimited guesses at the password). A wrong one is a
/// 403: the token is good, the password is not.
async fn recheck_password(
    s: &Server,
    user_id: &str,
    address: Option<IpAddr>,
    password: String,
) -> Result<(), ApiError> {
    let u = user_id.to_owned();
    let found = crate::with_tx!(&s.db, false, |tx| {
        let account = accounts::account_by_id(tx, &u).await?;
        let hash = accounts::password_hash(tx, &u).await?;
        Ok::<_, ApiError>(account.zip(hash))
    })?;
    let (account, hash) =
        found.ok_or_else(|| ApiError::Unauthorized("the account no longer exists".into()))?;
    let attempt = s.limiter.begin(&account.email, address)?;
    if auth::verify_password(&s.hashing, password, Some(hash)).await? {
        attempt.succeeded();
        Ok(())
    } else {
        attempt.failed();
        Err(ApiError::Forbidden("the password is wrong".into()))
    }
}

#[utoipa::path(post, path = "/api/auth/password", request_body = PasswordChange,
    description = "Sets a new password and signs out every session of the account, this one too: \
        the answer is a new session for the device that asked.",
    responses((status = 200, body = Session), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "the current password is wrong"),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn change_password(
    State(s): State<Arc<Server>>,
    signed_in: SignedIn,
    PeerAddress(address): PeerAddress,
    ApiJson(body): ApiJson<PasswordChange>,
) -> Result<axum::Json<Session>, ApiError> {
    check_password(&body.new_password)?;
    let user = signed_in.user_id;
    recheck_password(&s, &user, address, body.password).await?;
    let hash = auth::hash_password(&s.hashing, body.new_password).await?;
    let (session, token_hash, expires) = mint_session(&s, user.clone())?;
    crate::with_tx!(&s.db, true, |tx| {
        accounts::set_password_hash(tx, &user, &hash).await?;
        accounts::revoke_all_tokens(tx, &user).await?;
        auth::insert_token(tx, &token_hash, &user, expires).await
    })?;
    tracing::info!(user = %session.user_id, "password changed; other sessions signed out");
    Ok(axum::Json(session))
}

#[utoipa::path(post, path = "/api/auth/logout-all",
    description = "Signs out every session of the account, this one too.",
    responses((status = 204), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
async fn logout_all(
    State(s): State<Arc<Server>>,
    signed_in: SignedIn,
) -> Result<StatusCode, ApiError> {
    let user = signed_in.user_id;
    crate::with_tx!(&s.db, true, |tx| Ok::<_, ApiError>(
        accounts::revoke_all_tokens(tx, &user).await?
    ))?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/account/sessions",
    description = "The account's signed-in sessions (one per device that signed in), oldest first.",
    responses((status = 200, body = Sessions), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_sessions(
    State(s): State<Arc<Server>>,
    signed_in: SignedIn,
) -> Result<axum::Json<Sessions>, ApiError> {
    let (user, current) = (signed_in.user_id, signed_in.token_hash);
    let sessions = crate::with_tx!(&s.db, false, |tx| Ok::<_, ApiError>(
        accounts::list_sessions(tx, &user, &current).await?
    ))?;
    Ok(axum::Json(Sessions { sessions }))
}

#[utoipa::path(delete, path = "/api/account/sessions/{id}",
    params(("id" = String, Path, description = "a session's `id` from the list")),
    description = "Signs out one session of the account.",
    responses((status = 204), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "no live session of this account has this id")),
    security(("bearer" = [])))]
async fn end_session(
    State(s): State<Arc<Server>>,
    signed_in: SignedIn,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = id.to_ascii_lowercase();
    let no_such = || ApiError::NotFound("no session of this account has this id".into());
    if id.len() != accounts::TOKEN_ID_CHARS || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(no_such());
    }
    let user = signed_in.user_id;
    let ended = crate::with_tx!(&s.db, true, |tx| Ok::<_, ApiError>(
        accounts::revoke_session(tx, &user, &id).await?
    ))?;
    if ended {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_such())
    }
}

/// Exports running: at most [`EXPORTS_AT_ONCE`] in the process and one per account, since each
/// reads a whole account into memory.
pub struct ExportGate {
    running: Semaphore,
    accounts: Mutex<HashSet<String>>,
}

const EXPORTS_AT_ONCE: usize = 2;
/// Seconds a refused export is told to wait.
const EXPORT_RETRY_AFTER: u64 = 5;

impl Default for ExportGate {
    fn default() -> Self {
        ExportGate {
            running: Semaphore::new(EXPORTS_AT_ONCE),
            accounts: Mutex::default(),
        }
    }
}

/// An account's place in the [`ExportGate`], given back when dropped.
struct ExportTurn<'a> {
    gate: &'a ExportGate,
    user: String,
    _slot: tokio::sync::SemaphorePermit<'a>,
}

impl ExportGate {
    fn enter(&self, user: &str) -> Result<ExportTurn<'_>, ApiError> {
        let busy = || ApiError::Busy {
            retry_after: EXPORT_RETRY_AFTER,
        };
        let slot = self.running.try_acquire().map_err(|_| busy())?;
        let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        if !accounts.insert(user.to_owned()) {
            return Err(busy());
        }
        Ok(ExportTurn {
            gate: self,
            user: user.to_owned(),
            _slot: slot,
        })
    }
}

impl Drop for ExportTurn<'_> {
    fn drop(&mut self) {
        let mut accounts = self.gate.accounts.lock().unwrap_or_else(|e| e.into_inner());
        accounts.remove(&self.user);
    }
}

/// The account and every live record it holds, as the export answers it.
pub async fn export_document(
    s: &Server,
    user_id: &str,
) -> Result<Option<AccountExport<PageRows>>, ApiError> {
    let (app, u) = (s.app, user_id.to_owned());
    let (rows, bytes) = (s.config.max_pull_limit, s.config.max_page_bytes);
    let found = crate::with_tx!(&s.db, false, |tx| {
        let Some(account) = accounts::account_by_id(tx, &u).await? else {
            return Ok(None);
        };
        let records = accounts::live_records(tx, &app.schema, &u, rows, bytes).await?;
        Ok::<_, ApiError>(Some((account, records)))
    })?;
    let version = s.app.schema.version();
    Ok(found.map(|(account, records)| AccountExport {
        account: ExportedAccount {
            user_id: account.user_id,
            email: account.email,
            created_at: account.created_at,
        },
        schema_version: version,
        exported_at: Timestamp::now().to_wire(),
        records: PageRows::new(&s.app.schema, version, records),
    }))
}

#[utoipa::path(get, path = "/api/account/export",
    description = "The account and every live record it holds, per synced table, each row as a full pull gives it.",
    responses((status = 200, body = AccountExport<PageRows>), (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "`busy`: exports of this account or of the server are running")),
    security(("bearer" = [])))]
async fn export(State(s): State<Arc<Server>>, signed_in: SignedIn) -> Result<Response, ApiError> {
    let user = signed_in.user_id;
    let _turn = s.exports.enter(&user)?;
    let document = export_document(&s, &user)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("the account no longer exists".into()))?;
    let mut response = axum::Json(document).into_response();
    response.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"account-export.json\""),
    );
    Ok(response)
}

#[utoipa::path(delete, path = "/api/account", request_body = PasswordConfirmation,
    description = "Deletes the account and everything it holds (its records, tombstones, aliases and \
        sessions), in one transaction. The email can register again afterwards.",
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "the password is wrong"),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn delete_account(
    State(s): State<Arc<Server>>,
    signed_in: SignedIn,
    PeerAddress(address): PeerAddress,
    ApiJson(body): ApiJson<PasswordConfirmation>,
) -> Result<StatusCode, ApiError> {
    let user = signed_in.user_id;
    recheck_password(&s, &user, address, body.password).await?;
    let rows = accounts::delete_now(&s, &user).await?.unwrap_or(0);
    tracing::info!(%user, rows, "account deleted at its owner's request");
    Ok(StatusCode::NO_CONTENT)
}
