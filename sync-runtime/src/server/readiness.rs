//! Readiness: `GET /api/health/ready` answers 200 only when the database answers a query in
//! time, so a load balancer or an orchestrator sends requests only to processes that can serve
//! them. `/api/health` stays the liveness check: the process runs and answers.

use crate::protocol::error::ErrorBody;
use crate::protocol::paths;
use crate::server::Server;
use crate::server::db::SyncTx;
use crate::server::error::ApiError;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use utoipa::OpenApi;

/// How long the database may take to answer before the process is reported not ready.
const DATABASE_PATIENCE: Duration = Duration::from_secs(2);

#[derive(OpenApi)]
#[openapi(paths(ready), components(schemas(Ready)))]
pub struct ReadinessApiDoc;

/// The answer of a ready server.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Ready {
    /// `ready`
    pub status: &'static str,
}

pub(super) fn routes() -> Router<Arc<Server>> {
    Router::new().route(paths::READY, get(ready))
}

#[utoipa::path(get, path = "/api/health/ready",
    description = "Whether this process can serve: its database answers a query within 2 s.",
    responses((status = 200, body = Ready),
        (status = 503, body = ErrorBody, description = "`unavailable`: the database does not answer")))]
async fn ready(State(s): State<Arc<Server>>) -> Result<axum::Json<Ready>, ApiError> {
    let asked = async {
        crate::with_tx!(&s.db, false, |tx| {
            tx.query("SELECT 1", &[], &[]).await?;
            Ok::<_, ApiError>(())
        })
    };
    match tokio::time::timeout(DATABASE_PATIENCE, asked).await {
        Ok(Ok(())) => Ok(axum::Json(Ready { status: "ready" })),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready: the database failed");
            Err(not_ready())
        }
        Err(_) => {
            tracing::warn!("not ready: the database did not answer in time");
            Err(not_ready())
        }
    }
}

fn not_ready() -> ApiError {
    ApiError::Unavailable("the server cannot reach its database".into())
}
