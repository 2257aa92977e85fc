//! The control API's endpoints and the settings page, as one axum router. Bodies are read and
//! checked here, so every malformed request gets the JSON envelope (never axum's plain-text
//! rejections).

use super::SyncControl;
use super::error::ControlError;
use super::guard::same_origin_only;
use super::view::{
    ConfigView, ConnectRequest, ConnectionState, DeleteAccountRequest, HeldBackView, LastSync,
    LocalDataChoice, PasswordChangeRequest, Phase, Progress, RejectedView, StatusView, SyncResult,
};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use utoipa::OpenApi;

/// The settings page: HTML, CSS and JavaScript in one file, so an app can also serve it itself.
pub const PAGE_HTML: &str = include_str!("page.html");

/// Inline style and script of the page only; it talks to its own origin and nothing else.
const PAGE_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; \
     connect-src 'self'; img-src data:; form-action 'none'; base-uri 'none'; frame-ancestors 'self'";

/// The error body of every failure.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A snake_case code, e.g. `unauthorized` for a wrong email or password.
    pub error: String,
    /// A sentence for a person.
    pub message: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Syncable device control API",
        description = "The local API of the \"Connect to Cloud\" settings page: loopback only, \
            same origin only. No answer carries the token; the password is never stored."
    ),
    paths(
        page,
        status,
        config,
        connect,
        disconnect,
        change_password,
        delete_account,
        sync_now,
        events,
        openapi_json
    ),
    components(schemas(
        ErrorBody,
        StatusView,
        ConfigView,
        ConnectRequest,
        PasswordChangeRequest,
        DeleteAccountRequest,
        ConnectionState,
        LocalDataChoice,
        Phase,
        Progress,
        LastSync,
        RejectedView,
        HeldBackView,
        SyncResult
    ))
)]
pub struct ControlApiDoc;

/// The settings page at `/sync` and its API under `/api/sync/`, for an app to mount on its own
/// loopback server. Serve it with `into_make_service_with_connect_info::<SocketAddr>()`: the
/// peer address is checked, and without it every request is refused.
pub fn router(control: Arc<SyncControl>) -> Router {
    Router::new()
        .route("/sync", get(page))
        .route("/api/sync/status", get(status))
        .route("/api/sync/config", get(config))
        .route("/api/sync/connect", post(connect))
        .route("/api/sync/disconnect", post(disconnect))
        .route("/api/sync/password", post(change_password))
        .route("/api/sync/delete-account", post(delete_account))
        .route("/api/sync/sync", post(sync_now))
        .route("/api/sync/events", get(events))
        .route("/api/sync/openapi.json", get(openapi_json))
        .fallback(|| async { ControlError::NotFound })
        .method_not_allowed_fallback(|| async {
            ControlError::BadRequest("this endpoint does not take that method".into())
        })
        .layer(axum::middleware::from_fn(same_origin_only))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                ControlError::Internal("a handler panicked".into()).into_response()
            },
        ))
        .with_state(control)
}

#[utoipa::path(get, path = "/sync", responses((status = 200, description = "the settings page", content_type = "text/html")))]
async fn page() -> Response {
    let mut response = Html(PAGE_HTML).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
    );
    headers.insert(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static("SAMEORIGIN"),
    );
    response
}

#[utoipa::path(get, path = "/api/sync/status", responses((status = 200, body = StatusView)))]
async fn status(State(c): State<Arc<SyncControl>>) -> axum::Json<StatusView> {
    axum::Json(c.status())
}

#[utoipa::path(get, path = "/api/sync/config", responses((status = 200, body = ConfigView)))]
async fn config(State(c): State<Arc<SyncControl>>) -> Result<axum::Json<ConfigView>, ControlError> {
    Ok(axum::Json(c.config()?))
}

#[utoipa::path(post, path = "/api/sync/connect", request_body = ConnectRequest,
    responses(
        (status = 200, body = StatusView, description = "connected; the first sync ran"),
        (status = 400, body = ErrorBody, description = "`bad_request`: a missing field, a remote URL that is not https"),
        (status = 401, body = ErrorBody, description = "`unauthorized`: wrong email or password"),
        (status = 409, body = ErrorBody, description = "`conflict` (register: the email exists), `already_connected`, `busy`, `owner_needed` (the rows belong to several local owners: name one)"),
        (status = 429, body = ErrorBody, description = "`rate_limited`: too many attempts"),
        (status = 502, body = ErrorBody, description = "`unreachable`, `not_a_sync_server`, `server_too_old`, `app_too_old`, `remote_error`")))]
async fn connect(
    State(c): State<Arc<SyncControl>>,
    req: Request,
) -> Result<axum::Json<StatusView>, ControlError> {
    let request: ConnectRequest = json_body(req).await?;
    in_own_task(async move { c.connect(request).await }).await
}

#[utoipa::path(post, path = "/api/sync/disconnect",
    responses((status = 200, body = StatusView, description = "disconnected; the local data is kept"),
        (status = 409, body = ErrorBody, description = "`busy`")))]
async fn disconnect(
    State(c): State<Arc<SyncControl>>,
    body: Body,
) -> Result<axum::Json<StatusView>, ControlError> {
    drop(body);
    in_own_task(async move { c.disconnect().await }).await
}

/// Runs `change` in a task of its own: a page closed midway does not cut it short.
async fn in_own_task(
    change: impl Future<Output = Result<StatusView, ControlError>> + Send + 'static,
) -> Result<axum::Json<StatusView>, ControlError> {
    let status = tokio::spawn(change)
        .await
        .map_err(ControlError::internal)??;
    Ok(axum::Json(status))
}

/// The request's JSON body (at most 64 KiB, sent as `application/json`).
async fn json_body<T: serde::de::DeserializeOwned>(req: Request) -> Result<T, ControlError> {
    let (parts, body) = req.into_parts();
    if !crate::protocol::headers::is_json(
        parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    ) {
        return Err(ControlError::BadRequest(
            "send a JSON body with `Content-Type: application/json`".into(),
        ));
    }
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|_| ControlError::BadRequest("the body is over 64 KiB".into()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ControlError::BadRequest(format!("the body is not the expected JSON: {e}")))
}

#[utoipa::path(post, path = "/api/sync/password", request_body = PasswordChangeRequest,
    responses(
        (status = 200, body = StatusView, description = "the password is changed: this device goes on with a new session, every other device must sign in again"),
        (status = 400, body = ErrorBody, description = "`bad_request`: a missing field, a new password too short"),
        (status = 401, body = ErrorBody, description = "`sign_in_again`: the server refused the token"),
        (status = 403, body = ErrorBody, description = "`wrong_password`: the current password is wrong; nothing changed"),
        (status = 409, body = ErrorBody, description = "`not_connected`, `busy`"),
        (status = 429, body = ErrorBody, description = "`rate_limited`: too many attempts"),
        (status = 502, body = ErrorBody, description = "`unreachable`, `remote_error`")))]
async fn change_password(
    State(c): State<Arc<SyncControl>>,
    req: Request,
) -> Result<axum::Json<StatusView>, ControlError> {
    let request: PasswordChangeRequest = json_body(req).await?;
    in_own_task(async move { c.change_password(request).await }).await
}

#[utoipa::path(post, path = "/api/sync/delete-account", request_body = DeleteAccountRequest,
    responses(
        (status = 200, body = StatusView, description = "the account and everything it held on the server are deleted; this device keeps its data, disconnected"),
        (status = 400, body = ErrorBody, description = "`bad_request`: no password"),
        (status = 401, body = ErrorBody, description = "`sign_in_again`: the server refused the token"),
        (status = 403, body = ErrorBody, description = "`wrong_password`: nothing was deleted"),
        (status = 409, body = ErrorBody, description = "`not_connected`, `busy`"),
        (status = 429, body = ErrorBody, description = "`rate_limited`: too many attempts"),
        (status = 502, body = ErrorBody, description = "`unreachable`, `remote_error`")))]
async fn delete_account(
    State(c): State<Arc<SyncControl>>,
    req: Request,
) -> Result<axum::Json<StatusView>, ControlError> {
    let request: DeleteAccountRequest = json_body(req).await?;
    in_own_task(async move { c.delete_account(request).await }).await
}

#[utoipa::path(post, path = "/api/sync/sync",
    responses((status = 200, body = SyncResult),
        (status = 401, body = ErrorBody, description = "`sign_in_again`: the server refused the token"),
        (status = 409, body = ErrorBody, description = "`not_connected`, `busy`"),
        (status = 502, body = ErrorBody, description = "`unreachable`, `remote_error`")))]
async fn sync_now(
    State(c): State<Arc<SyncControl>>,
) -> Result<axum::Json<SyncResult>, ControlError> {
    Ok(axum::Json(c.sync_now().await?))
}

#[utoipa::path(get, path = "/api/sync/events",
    responses((status = 200, content_type = "text/event-stream",
        description = "`status` events, each a StatusView: the current one at once, then every change")))]
async fn events(State(c): State<Arc<SyncControl>>) -> impl IntoResponse {
    let updates = c.subscribe();
    drop(c);
    let stream = futures_util::stream::unfold((updates, true), |(mut rx, first)| async move {
        if !first {
            rx.changed().await.ok()?;
        }
        let view = rx.borrow_and_update().clone();
        let event = Event::default()
            .event("status")
            .json_data(&view)
            .unwrap_or_else(|_| Event::default().event("status").data("{}"));
        Some((Ok::<_, Infallible>(event), (rx, false)))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[utoipa::path(get, path = "/api/sync/openapi.json", responses((status = 200, description = "this document")))]
async fn openapi_json() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::to_value(ControlApiDoc::openapi()).unwrap_or_default())
}
