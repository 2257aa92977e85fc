//! A loopback proxy in front of a sync server that can hold each sync request back for a
//! while: a slow network, so a test (or a screenshot) can catch a sync under way.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use sync_runtime::protocol::headers;

/// Headers of the protocol that pass through, each way.
const REQUEST_HEADERS: &[&str] = &["authorization", "content-type", headers::SCHEMA_VERSION];
const RESPONSE_HEADERS: &[&str] = &[
    "content-type",
    "retry-after",
    headers::CURSOR,
    headers::HAS_MORE,
];

struct Upstream {
    url: String,
    http: reqwest::Client,
    delay_ms: AtomicU64,
}

pub struct SlowProxy {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    upstream: Arc<Upstream>,
    task: tokio::task::JoinHandle<()>,
}

impl SlowProxy {
    pub async fn start(upstream_url: &str) -> SlowProxy {
        let upstream = Arc::new(Upstream {
            url: upstream_url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            delay_ms: AtomicU64::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(upstream.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        SlowProxy {
            url,
            upstream,
            task,
        }
    }

    /// Holds every push and pull back this long before forwarding it.
    pub fn set_delay(&self, delay: Duration) {
        self.upstream
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(State(up): State<Arc<Upstream>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    if parts.uri.path().starts_with("/api/sync/") {
        let ms = up.delay_ms.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut out = up
        .http
        .request(parts.method.clone(), format!("{}{path}", up.url))
        .body(bytes);
    for name in REQUEST_HEADERS {
        if let Some(v) = parts.headers.get(*name) {
            out = out.header(*name, v);
        }
    }
    let Ok(resp) = out.send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = resp.status();
    let mut headers = HeaderMap::new();
    for name in RESPONSE_HEADERS {
        if let Some(v) = resp.headers().get(*name) {
            headers.insert(HeaderName::from_static(name), v.clone());
        }
    }
    let body = resp.bytes().await.unwrap_or_default();
    (status, headers, Body::from(body)).into_response()
}
