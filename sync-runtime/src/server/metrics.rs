//! Prometheus metrics of one server process, served as text at `GET /metrics` on a listen
//! address of their own (`--metrics-listen`), kept off the public one. docs/operations.md says
//! what each means.
//!
//! Each [`Server`] has its own registry (several servers in one process, as in tests, count
//! apart). Counters and histograms move as requests are served; the gauges (held pulls, password
//! hashing, the database pool) are read when a scrape asks.

use crate::protocol::error::ErrorCode;
use crate::server::Server;
use crate::server::db::Db;
use crate::server::sync::RowStatus;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// The route's template (`/api/account/sessions/{id}`), or `unmatched`: a bounded set.
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    /// The protocol's error code (`bad_request`, `internal`, ...).
    error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PushedLabels {
    /// The row's result: `applied`, `stale`, `merged` or `rejected`.
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    /// `in_use` or `idle` connections, or requests `waiting` for one.
    state: String,
}

/// Seconds, from 1 ms to about 66 s (a held pull lasts up to its `wait`).
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// The time requests wait for a database connection (PostgreSQL's pool, SQLite's writer or
/// reader), shared with the backend that measures it.
#[derive(Clone)]
pub struct ConnectionWaits(Histogram);

impl Default for ConnectionWaits {
    fn default() -> Self {
        // From 100 µs: a free connection is taken at once.
        ConnectionWaits(Histogram::new(exponential_buckets(0.0001, 2.0, 18)))
    }
}

impl ConnectionWaits {
    pub fn observe(&self, waited: Duration) {
        self.0.observe(waited.as_secs_f64());
    }
}

/// The metrics of one server process.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    errors: Family<ErrorLabels, Counter>,
    rows_pushed: Family<PushedLabels, Counter>,
    rows_pulled: Counter,
    held_pulls: Gauge,
    hashing_running: Gauge,
    hashing_waiting: Gauge,
    pool: Family<PoolLabels, Gauge>,
    pool_max: Gauge,
}

impl Metrics {
    /// The process's metrics, with the backend's connection waits among them.
    pub fn new(waits: &ConnectionWaits) -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_buckets),
            errors: Family::default(),
            rows_pushed: Family::default(),
            rows_pulled: Counter::default(),
            held_pulls: Gauge::default(),
            hashing_running: Gauge::default(),
            hashing_waiting: Gauge::default(),
            pool: Family::default(),
            pool_max: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "sync_http_requests",
            "Requests answered, by route, method and status",
            m.requests.clone(),
        );
        registry.register_with_unit(
            "sync_http_request_duration",
            "Time from a request's arrival to its answer, by route and method (a held pull counts its wait)",
            Unit::Seconds,
            m.latency.clone(),
        );
        registry.register(
            "sync_errors",
            "Error answers, by the protocol's error code",
            m.errors.clone(),
        );
        registry.register(
            "sync_rows_pushed",
            "Rows received in pushes, by their result",
            m.rows_pushed.clone(),
        );
        registry.register(
            "sync_rows_pulled",
            "Rows sent in pull pages",
            m.rows_pulled.clone(),
        );
        registry.register(
            "sync_held_pulls",
            "Pulls held open until their account changes (live sync)",
            m.held_pulls.clone(),
        );
        registry.register(
            "sync_password_hashes_running",
            "Password hashes being computed (register, login, password checks)",
            m.hashing_running.clone(),
        );
        registry.register(
            "sync_password_hashes_waiting",
            "Requests waiting for a password-hashing slot",
            m.hashing_waiting.clone(),
        );
        registry.register(
            "sync_db_pool_connections",
            "PostgreSQL pool: connections in use, idle, and requests waiting for one",
            m.pool.clone(),
        );
        registry.register(
            "sync_db_pool_max_connections",
            "PostgreSQL pool: the most connections this process opens",
            m.pool_max.clone(),
        );
        registry.register_with_unit(
            "sync_db_connection_wait",
            "Time a request waited for a database connection",
            Unit::Seconds,
            waits.0.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts a push's rows by result.
    pub(crate) fn pushed(&self, results: &BTreeMap<String, Vec<(String, RowStatus)>>) {
        for (_, status) in results.values().flatten() {
            let status = match status {
                RowStatus::Applied => "applied",
                RowStatus::Stale(_) => "stale",
                RowStatus::Merged(..) => "merged",
                RowStatus::Rejected(_) => "rejected",
            };
            self.rows_pushed
                .get_or_create(&PushedLabels {
                    status: status.to_owned(),
                })
                .inc();
        }
    }

    /// Counts the rows of a pull page.
    pub(crate) fn pulled(&self, rows: usize) {
        self.rows_pulled.inc_by(rows as u64);
    }

    /// The text of every metric, with the gauges read now.
    fn render(&self, s: &Server) -> String {
        self.held_pulls.set(s.live.waiting() as i64);
        let (running, waiting) = s.hashing.load();
        self.hashing_running.set(running as i64);
        self.hashing_waiting.set(waiting as i64);
        if let Db::Postgres(pg) = &s.db {
            let status = pg.pool.status();
            for (state, n) in [
                ("in_use", status.size.saturating_sub(status.available)),
                ("idle", status.available),
                ("waiting", status.waiting),
            ] {
                self.pool
                    .get_or_create(&PoolLabels {
                        state: state.to_owned(),
                    })
                    .set(n as i64);
            }
            self.pool_max.set(status.max_size as i64);
        }
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(error = %e, "encoding the metrics failed");
        }
        text
    }
}

/// Counts and times every request the router answers (a layer of [`crate::server::router`]).
pub(crate) async fn track(State(s): State<Arc<Server>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = match *req.method() {
        Method::GET | Method::POST | Method::DELETE | Method::PUT | Method::HEAD => {
            req.method().as_str().to_owned()
        }
        _ => "other".to_owned(),
    };
    let response = next.run(req).await;
    let m = &s.metrics;
    let status = response.status();
    m.latency
        .get_or_create(&RouteLabels {
            route: route.clone(),
            method: method.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    m.requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status: status.as_u16(),
        })
        .inc();
    if status.is_client_error() || status.is_server_error() {
        let error = response.extensions().get::<ErrorCode>().map_or(
            if status.is_server_error() {
                "internal"
            } else {
                "other"
            },
            |c| c.as_str(),
        );
        m.errors
            .get_or_create(&ErrorLabels {
                error: error.to_owned(),
            })
            .inc();
    }
    response
}

/// `GET /metrics`, for the metrics listener (not the public router).
pub fn router(server: Arc<Server>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .with_state(server)
}

async fn scrape(State(s): State<Arc<Server>>) -> Response {
    let mut response = s.metrics.render(&s).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}
