//! The HTTP endpoints of docs/PROTOCOL.md. Bodies are read and checked here, so every malformed
//! request gets the JSON error of the protocol (never axum's plain-text rejections).

use crate::protocol::auth::{Credentials, Session};
use crate::protocol::cursor::Cursor;
use crate::protocol::error::{CursorExpiry, ErrorBody};
use crate::protocol::health::Health;
use crate::protocol::pull::{PullQuery, PullResponse};
use crate::protocol::push::{PushRequest, PushResponse, RowOutcome, RowResult, RowResultSchema};
use crate::protocol::push_body::PushBody;
use crate::protocol::wire::{RowSource, WireError, WireRow, normalise_id};
use crate::protocol::{headers, paths};
use crate::server::db::{Db, PgDb};
use crate::server::error::{self, ApiError};
use crate::server::extract::{ApiJson, ApiQuery, PeerAddress, SignedIn, read_body};
use crate::server::page_rows::PageRows;
use crate::server::sync::{self, PullInput, PushContext, PushInput, RowStatus};
use crate::server::{
    Server, account_routes, auth, long_poll, metrics, notify, readiness, row_rules, statistics,
};
use crate::timestamp::Timestamp;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Syncable sync server",
        description = "The wire protocol of docs/PROTOCOL.md"
    ),
    paths(health, register, login, logout, push, pull, openapi_json),
    modifiers(&BearerAuth),
    components(schemas(
        ErrorBody,
        Credentials,
        Session,
        Health,
        PushRequest,
        PushResponse,
        RowResultSchema,
        PullResponse<PageRows>
    ))
)]
pub struct ApiDoc;

/// Declares the `bearer` scheme that the sync endpoints require.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
    }
}

pub fn router(server: Arc<Server>) -> Router {
    Router::new()
        .route(paths::HEALTH, get(health))
        .route(paths::REGISTER, post(register))
        .route(paths::LOGIN, post(login))
        .route(paths::LOGOUT, post(logout))
        .route(paths::PUSH, post(push))
        .route(paths::PULL, get(pull))
        .route(paths::OPENAPI, get(openapi_json))
        .merge(account_routes::routes())
        .merge(readiness::routes())
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .layer(axum::middleware::map_response(error::json_errors))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                // Outside `json_errors`, which logs the other failures.
                tracing::error!("a handler panicked");
                ApiError::Internal("a handler panicked".into()).into_response()
            },
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(axum::middleware::from_fn_with_state(
            server.clone(),
            metrics::track,
        ))
        .with_state(server)
}

#[utoipa::path(get, path = "/api/health", responses((status = 200, body = Health)))]
async fn health(State(s): State<Arc<Server>>) -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".into(),
        schema_version: s.app.schema.version(),
        min_schema_version: s.config.min_schema_version,
        server_device_id: s.device_id.clone(),
        max_push_rows: s.config.max_push_rows,
        max_body_bytes: s.config.max_body_bytes,
        max_value_bytes: s.config.max_value_bytes,
        max_page_bytes: s.config.max_page_bytes,
        max_clock_ahead_ms: s.config.max_clock_ahead.as_millis().min(u64::MAX as u128) as u64,
        max_key_bytes: row_rules::MAX_KEY_BYTES,
    })
}

pub(super) fn check_password(password: &str) -> Result<(), ApiError> {
    if password.chars().count() < auth::MIN_PASSWORD_CHARS {
        return Err(ApiError::BadRequest(format!(
            "the password needs at least {} characters",
            auth::MIN_PASSWORD_CHARS
        )));
    }
    if password.chars().count() > 1024 {
        return Err(ApiError::BadRequest(
            "the password is over 1024 characters".into(),
        ));
    }
    Ok(())
}

/// A new session of `user_id`, with its token's hash and expiry to store.
pub(super) fn mint_session(
    s: &Server,
    user_id: String,
) -> Result<(Session, String, Timestamp), ApiError> {
    let token = auth::new_token()?;
    let expires =
        Timestamp::now().add_millis(s.config.token_ttl.as_millis().min(i64::MAX as u128) as i64);
    let hash = auth::token_hash(&token);
    let session = Session {
        user_id,
        token,
        expires_at: expires.to_wire(),
    };
    Ok((session, hash, expires))
}

async fn new_session(s: &Server, user_id: String) -> Result<Session, ApiError> {
    let (session, hash, expires) = mint_session(s, user_id)?;
    let u = session.user_id.clone();
    crate::with_tx!(&s.db, true, |tx| auth::insert_token(tx, &hash, &u, expires)
        .await)?;
    Ok(session)
}

#[utoipa::path(post, path = "/api/auth/register", request_body = Credentials,
    responses((status = 201, body = Session), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn register(
    State(s): State<Arc<Server>>,
    PeerAddress(addr): PeerAddress,
    ApiJson(c): ApiJson<Credentials>,
) -> Result<Response, ApiError> {
    let email = auth::normalise_email(&c.email)?;
    check_password(&c.password)?;
    // Counted before the hash: a burst of registrations cannot outrun the limit.
    s.registrations.count(addr)?;
    let hash = auth::hash_password(&s.hashing, c.password).await?;
    let user = crate::with_tx!(&s.db, true, |tx| auth::create_user(tx, &email, &hash).await)?;
    let session = new_session(&s, user).await?;
    Ok((StatusCode::CREATED, axum::Json(session)).into_response())
}

#[utoipa::path(post, path = "/api/auth/login", request_body = Credentials,
    responses((status = 200, body = Session), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn login(
    State(s): State<Arc<Server>>,
    PeerAddress(addr): PeerAddress,
    ApiJson(c): ApiJson<Credentials>,
) -> Result<axum::Json<Session>, ApiError> {
    let email = auth::normalise_email(&c.email)?;
    // Counted before the password is checked, so concurrent guesses cannot outrun the limit;
    // a right password gives the attempt back.
    let attempt = s.limiter.begin(&email, addr)?;
    let e = email.clone();
    let found = crate::with_tx!(&s.db, false, |tx| auth::find_user(tx, &e).await)?;
    let (user, hash) = match found {
        Some((u, h)) => (Some(u), Some(h)),
        None => (None, None),
    };
    let ok = auth::verify_password(&s.hashing, c.password, hash).await?;
    match (ok, user) {
        (true, Some(user)) => {
            attempt.succeeded();
            Ok(axum::Json(new_session(&s, user).await?))
        }
        _ => {
            attempt.failed();
            Err(ApiError::Unauthorized("wrong email or password".into()))
        }
    }
}

#[utoipa::path(post, path = "/api/auth/logout", responses((status = 204), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
async fn logout(State(s): State<Arc<Server>>, signed_in: SignedIn) -> Result<StatusCode, ApiError> {
    let hash = signed_in.token_hash;
    crate::with_tx!(&s.db, true, |tx| auth::revoke_token(tx, &hash).await)?;
    // The account's held pulls check their tokens now: this one's ends, delivering nothing.
    s.live.signed_out(&signed_in.user_id);
    Ok(StatusCode::NO_CONTENT)
}

fn check_schema_version(s: &Server, v: u32) -> Result<(), ApiError> {
    let (min, max) = (s.config.min_schema_version, s.app.schema.version());
    if v > max || v < min {
        return Err(ApiError::UnsupportedSchema(format!(
            "schema_version {v} is not served; this server serves {min} to {max}"
        )));
    }
    Ok(())
}

/// Parses the rows of one push: envelope faults (a missing or unknown column, a malformed id
/// or timestamp) fail the whole request; a value of the wrong type rejects its row alone.
/// The push request of `body`, decoded against the schema as it is read, then checked.
fn parse_push(s: &Server, body: &[u8], user: String) -> Result<(u32, PushInput), ApiError> {
    let bad = |m: String| ApiError::BadRequest(format!("the body is not the expected JSON: {m}"));
    let req = PushBody::decode(&s.app.schema, body).map_err(|e| bad(e.to_string()))?;
    let (Some(device_id), Some(version), Some(tables)) =
        (req.device_id, req.schema_version, req.changes)
    else {
        return Err(bad(
            "a push needs `device_id`, `schema_version` and `changes`".into(),
        ));
    };
    let device_id =
        normalise_id("device_id", &device_id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    check_schema_version(s, version)?;
    let total: usize = tables.iter().map(|(_, _, rows)| rows.len()).sum();
    if total > s.config.max_push_rows {
        return Err(ApiError::TooLarge(format!(
            "{total} rows in one push; the limit is {}",
            s.config.max_push_rows
        )));
    }
    let mut changes = BTreeMap::new();
    let now = Timestamp::now();
    for (name, table, rows) in tables {
        let table = table.ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown table `{}`",
                name.chars().take(64).collect::<String>()
            ))
        })?;
        let mut parsed = Vec::with_capacity(rows.len());
        for (i, row) in rows.into_iter().enumerate() {
            let raw = row.ok_or_else(|| {
                ApiError::BadRequest(format!("{name}[{i}]: {}", WireError::NotAnObject))
            })?;
            let sent_id = raw.remote_id().unwrap_or_default().to_owned();
            // Until the push merges field by field, it takes whole rows only: a missing column
            // is the request's error (400), before any value of the row is judged.
            if let Some(missing) = raw.missing_column(table, version) {
                return Err(ApiError::BadRequest(format!(
                    "{name}[{i}]: {}",
                    WireError::MissingColumn(missing.to_owned())
                )));
            }
            match WireRow::from_raw(table, raw, version, RowSource::Push) {
                // Until the push merges field by field, it takes whole rows only.
                Ok(r) if r.sent.is_some() || !r.field_stamps.is_empty() => {
                    let missing = table
                        .columns
                        .iter()
                        .enumerate()
                        .find(|(i, c)| !r.carries(*i) && c.on_wire() && c.since <= version)
                        .map_or("field_stamps", |(_, c)| c.name.as_str());
                    return Err(ApiError::BadRequest(format!(
                        "{name}[{i}]: {}",
                        WireError::MissingColumn(missing.to_owned())
                    )));
                }
                Ok(r) => match row_rules::refusal(table, &r, &s.config, now) {
                    None => parsed.push(Ok(r)),
                    Some(why) => parsed.push(Err((r.remote_id, why))),
                },
                Err(WireError::BadValue { column, message }) => {
                    let id = normalise_id("remote_id", &sent_id)
                        .map_err(|e| ApiError::BadRequest(format!("{name}[{i}]: {e}")))?;
                    parsed.push(Err((id, format!("column `{column}`: {message}"))));
                }
                Err(e) => return Err(ApiError::BadRequest(format!("{name}[{i}]: {e}"))),
            }
        }
        if changes.contains_key(&name) {
            // A JSON object with a repeated key: which array was meant is anyone's guess.
            return Err(ApiError::BadRequest(format!(
                "table `{}` appears twice in `changes`",
                name.chars().take(64).collect::<String>()
            )));
        }
        changes.insert(name, parsed);
    }
    Ok((
        version,
        PushInput {
            user_id: user,
            device_id,
            client_version: version,
            changes,
        },
    ))
}

/// Gathers, in the background, PostgreSQL's statistics of the tables this push grew past their
/// next threshold ([`statistics::PushedSinceAnalyze`]).
fn analyze_grown_tables(
    pg: &PgDb,
    s: &Server,
    results: &BTreeMap<String, Vec<(String, RowStatus)>>,
) {
    for (table, rows) in results {
        let stored = rows
            .iter()
            .filter(|(_, status)| !matches!(status, RowStatus::Rejected(_)))
            .count();
        if s.pushed_since_analyze.note(table, stored as u64) {
            let (pg, table) = (pg.clone(), table.clone());
            tokio::spawn(async move {
                if let Err(e) = statistics::analyze(&pg, &[&table]).await {
                    tracing::warn!(error = %e, table, "gathering statistics failed");
                }
            });
        }
    }
}

#[utoipa::path(post, path = "/api/sync/push", request_body = PushRequest,
    responses((status = 200, body = PushResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn push(
    State(s): State<Arc<Server>>,
    signed_in: SignedIn,
    headers: HeaderMap,
    body: Body,
) -> Result<axum::Json<PushResponse>, ApiError> {
    // Taken before the body is read; held until the push is answered.
    let limit = s.config.max_body_bytes;
    let (_admitted, body) = s.budget.admit_body(
        Some(&signed_in.user_id),
        &headers,
        body,
        limit,
        s.config.body_timeout,
    )?;
    let body = read_body(&s, &headers, body, limit).await?;
    let (version, input) = parse_push(&s, &body, signed_in.user_id)?;
    drop(body);
    // The account's turn before a database connection: a push waiting for it holds none.
    let _turn = s.turns.take(&input.user_id).await;
    let (app, server_device) = (s.app, s.device_id.clone());
    let statements = s.statements.clone();
    let (user, announced) = (input.user_id.clone(), input.user_id.clone());
    let (results, seq) = crate::with_tx!(&s.db, true, |tx| {
        let ctx = PushContext {
            schema: &app.schema,
            server_device: &server_device,
            statements: &statements,
        };
        let results = sync::push(tx, &ctx, input).await?;
        // Announced on commit: the account's held pulls, in every server process, wake.
        let seq = notify::announce(tx, &announced).await?;
        Ok::<_, ApiError>((results, seq))
    })?;
    s.live.wake(&user, seq);
    s.metrics.pushed(&results);
    if let Db::Postgres(pg) = &s.db {
        analyze_grown_tables(pg, &s, &results);
    }
    let mut out = BTreeMap::new();
    for (name, rows) in results {
        let table = s
            .app
            .schema
            .table(&name)
            .ok_or_else(|| ApiError::internal("result for an unknown table"))?;
        let rows = rows
            .into_iter()
            .map(|(remote_id, status)| RowOutcome {
                remote_id,
                result: match status {
                    RowStatus::Applied => RowResult::Applied,
                    RowStatus::Stale(row) => RowResult::Stale {
                        row: Json::Object(sync::row_json(table, &row, version)),
                    },
                    RowStatus::Merged(canonical_id, kept) => RowResult::Merged {
                        canonical_id,
                        row: kept.map(|row| Json::Object(sync::row_json(table, &row, version))),
                    },
                    RowStatus::Rejected(message) => RowResult::Rejected { message },
                },
            })
            .collect();
        out.insert(name, rows);
    }
    Ok(axum::Json(PushResponse {
        server_time: Timestamp::now().to_wire(),
        results: out,
    }))
}

#[utoipa::path(get, path = "/api/sync/pull",
    params(("since" = Option<String>, Query, description = "the cursor of the previous page; absent: a full pull"),
        ("limit" = Option<u32>, Query, minimum = 1, description = "rows per page (default 1000, clamped to the server's cap)"),
        ("device_id" = Option<String>, Query, description = "leave out records this device wrote last"),
        ("wait" = Option<u64>, Query, description = "seconds to hold the pull while the cursor is at the account's latest change (capped by the server); the answer's `X-Sync-Wait` header says how long the server agreed to hold it"),
        ("X-Sync-Schema-Version" = Option<u32>, Header, minimum = 1, description = "the client's schema version")),
    responses((status = 200, body = PullResponse<PageRows>, headers(
            ("x-sync-cursor" = String, description = "the answer's `cursor`"),
            ("x-sync-has-more" = bool, description = "the answer's `has_more`"),
            ("x-sync-wait" = u64, description = "when `wait` was sent: the seconds the server agreed to hold the pull (0: answered without holding)"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 410, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn pull(
    State(s): State<Arc<Server>>,
    signed_in: SignedIn,
    request_headers: HeaderMap,
    ApiQuery(query): ApiQuery<PullQuery>,
) -> Result<Response, ApiError> {
    let version = client_schema_version(&s, &request_headers)?;
    let input = pull_input(&s, signed_in.user_id.clone(), version, &query)?;
    let wait = query.wait.map(Duration::from_secs);
    let answer =
        long_poll::pull_or_wait(&s, &signed_in, input, wait, |input| pull_page(&s, input)).await?;
    let page = answer.page;
    s.metrics.pulled(page.changes.values().map(Vec::len).sum());
    let changes = PageRows::new(&s.app.schema, version, page.changes);
    let cursor = Cursor {
        schema_version: version,
        from: page.next,
    }
    .encode();
    // The cursor and `has_more` in headers too: a client can ask for the next page as soon as
    // this one's head arrives, while its body is still being read and decoded.
    let headers = [
        (headers::CURSOR, cursor.clone()),
        (headers::HAS_MORE, page.has_more.to_string()),
    ];
    let mut response = (
        headers,
        axum::Json(PullResponse {
            changes,
            cursor,
            has_more: page.has_more,
            server_time: Timestamp::now().to_wire(),
        }),
    )
        .into_response();
    // Tells a client that asked to wait that this server holds pulls, and for how long.
    if let Some(granted) = answer.granted {
        response
            .headers_mut()
            .insert(headers::WAIT, granted.as_secs().into());
    }
    Ok(response)
}

/// The schema version the client speaks (`X-Sync-Schema-Version`; absent: the server's own).
fn client_schema_version(s: &Server, request_headers: &HeaderMap) -> Result<u32, ApiError> {
    let version = match request_headers.get(headers::SCHEMA_VERSION) {
        None => s.app.schema.version(),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u32>().ok())
            .ok_or_else(|| {
                ApiError::BadRequest("X-Sync-Schema-Version must be a positive integer".into())
            })?,
    };
    check_schema_version(s, version)?;
    Ok(version)
}

/// A pull's query, checked, as the input of a page for `user_id`.
fn pull_input(
    s: &Server,
    user_id: String,
    version: u32,
    query: &PullQuery,
) -> Result<PullInput, ApiError> {
    let limit = match query.limit {
        None => 1000,
        Some(l) if l > 0 => l.min(s.config.max_pull_limit as i64) as usize,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "`limit` must be a positive integer".into(),
            ));
        }
    };
    let from = match query.since.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(c) => {
            let cursor = Cursor::decode(c).ok_or_else(|| {
                ApiError::BadRequest("`since` is not a cursor this server issued".into())
            })?;
            if cursor.schema_version != version {
                return Err(ApiError::CursorExpired {
                    reason: CursorExpiry::SchemaVersion,
                    message: format!(
                        "the cursor was issued for schema version {}; pull again without `since`",
                        cursor.schema_version
                    ),
                });
            }
            Some(cursor.from)
        }
    };
    let exclude_device = match query.device_id.as_deref().filter(|d| !d.is_empty()) {
        None => None,
        Some(d) => {
            Some(normalise_id("device_id", d).map_err(|e| ApiError::BadRequest(e.to_string()))?)
        }
    };
    Ok(PullInput {
        user_id,
        from,
        limit,
        exclude_device,
        max_bytes: s.config.max_page_bytes,
    })
}

/// One page of a pull, in one read transaction: the cursor checked, then the changes after it.
async fn pull_page(s: &Server, input: PullInput) -> Result<sync::PullPage, ApiError> {
    let app = s.app;
    crate::with_tx!(&s.db, false, |tx| {
        let (last_seq, purged) = sync::user_sequence(tx, &input.user_id).await?;
        if let Some(from) = input.from {
            from.check(last_seq, purged)
                .map_err(|reason| ApiError::CursorExpired {
                    reason,
                    message: match reason {
                        CursorExpiry::Ahead => "the cursor is beyond this account's changes (the server's data was restored from an earlier copy); pull again without `since`",
                        _ => "the cursor is older than the tombstones kept; pull again without `since`",
                    }
                    .into(),
                })?;
        }
        Ok::<_, ApiError>(sync::pull(tx, &app.schema, &input, last_seq).await?)
    })
}

#[utoipa::path(get, path = "/api/openapi.json", responses((status = 200, description = "this document")))]
async fn openapi_json(State(s): State<Arc<Server>>) -> axum::Json<Json> {
    axum::Json(crate::server::openapi::document(&s))
}
