//! A reverse proxy on loopback, as nginx with `proxy_add_x_forwarded_for` is: it appends the
//! address of the peer that connected to it to `X-Forwarded-For` (keeping what the client sent)
//! and forwards the request to the server from its own address.

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;

/// Request headers passed through, beside `X-Forwarded-For`.
const REQUEST_HEADERS: &[&str] = &["authorization", "content-type"];
const RESPONSE_HEADERS: &[&str] = &["content-type", "retry-after"];

struct Upstream {
    url: String,
    http: reqwest::Client,
}

pub struct ForwardingProxy {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl ForwardingProxy {
    pub async fn start(upstream_url: &str) -> ForwardingProxy {
        let upstream = Arc::new(Upstream {
            url: upstream_url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(upstream)
            .into_make_service_with_connect_info::<SocketAddr>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ForwardingProxy { url, task }
    }
}

impl Drop for ForwardingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    State(up): State<Arc<Upstream>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
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
    let sent: Vec<&str> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let mut forwarded = sent.join(", ");
    if !forwarded.is_empty() {
        forwarded.push_str(", ");
    }
    forwarded.push_str(&peer.ip().to_string());
    out = out.header("x-forwarded-for", forwarded);
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
