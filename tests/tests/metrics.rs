//! `GET /metrics` (on the metrics listener's router) answers Prometheus text that parses, and
//! its counters move with the requests made: requests by route and status, rows pushed and
//! pulled, errors by code; the connection-wait histogram counts the database's use.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use sync_runtime::protocol::paths;
use sync_runtime::server::{Server, metrics};
use tests::by_backend;
use tests::server::{Backend, TestServer, at, id, row};
use tower::ServiceExt;

/// A sample's name and labels (`name{a="1",b="2"}`), as written.
type Series = String;

/// The samples of a scrape, after checking every line is Prometheus (OpenMetrics) text: a
/// `# HELP`, `# TYPE`, `# UNIT` or `# EOF` line, or `series value`, where the series belongs to
/// a family whose type was given before it.
fn parse(text: &str) -> BTreeMap<Series, f64> {
    let mut typed: Vec<String> = Vec::new();
    let mut samples = BTreeMap::new();
    assert!(text.ends_with("# EOF\n"), "the text ends with # EOF");
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.split(' ');
            match words.next() {
                Some("TYPE") => {
                    let name = words.next().expect("a family's name");
                    let kind = words.next().expect("a family's type");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "unknown"].contains(&kind),
                        "{line}"
                    );
                    typed.push(name.to_owned());
                }
                Some("HELP" | "UNIT" | "EOF") => {}
                _ => panic!("not a Prometheus comment: {line}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "a metric name: {name}"
        );
        assert!(
            typed.iter().any(|family| name.starts_with(family.as_str())),
            "{name} belongs to a family typed before it"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "labels in braces: {series}"
            );
        }
        let value: f64 = value.parse().expect("a number");
        samples.insert(series.to_owned(), value);
    }
    samples
}

async fn scrape(server: &Arc<Server>) -> BTreeMap<Series, f64> {
    let answer = metrics::router(server.clone())
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let content_type = answer.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let body = axum::body::to_bytes(answer.into_body(), usize::MAX)
        .await
        .unwrap();
    parse(std::str::from_utf8(&body).unwrap())
}

/// The sum of the samples whose series starts with `prefix` and holds every one of `labels`.
fn sum(samples: &BTreeMap<Series, f64>, prefix: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(s, _)| {
            s.split('{').next() == Some(prefix) && labels.iter().all(|l| s.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}

async fn counters_move_with_the_requests_made(backend: Backend) {
    let Some(s) = TestServer::start(backend, "metrics").await else {
        return;
    };
    let before = scrape(&s.server).await;
    let (_, token) = s.register("metrics@example.org").await;
    let rows: Vec<_> = (0..3)
        .map(|n| {
            row(
                "settings_profiles",
                &id(),
                &at(n),
                json!({"name": format!("S{n}")}),
            )
        })
        .collect();
    s.push(&token, &id(), json!({"settings_profiles": rows}))
        .await;
    let (status, _) = s.pull_query(&token, "limit=100").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s
        .call(Method::GET, paths::PULL, Some("not a token"), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let after = scrape(&s.server).await;

    let moved =
        |prefix: &str, labels: &[&str]| sum(&after, prefix, labels) - sum(&before, prefix, labels);
    assert_eq!(
        moved(
            "sync_http_requests_total",
            &[r#"route="/api/auth/register""#, r#"status="201""#]
        ),
        1.0
    );
    assert_eq!(
        moved("sync_http_requests_total", &[r#"route="/api/sync/pull""#]),
        2.0,
        "the pull and the refused one: {after:#?}"
    );
    assert_eq!(
        moved(
            "sync_http_requests_total",
            &[r#"route="/api/sync/pull""#, r#"status="401""#]
        ),
        1.0
    );
    assert_eq!(
        moved("sync_rows_pushed_total", &[r#"status="applied""#]),
        3.0
    );
    assert_eq!(moved("sync_rows_pulled_total", &[]), 3.0);
    assert_eq!(
        moved("sync_errors_total", &[r#"error="unauthorized""#]),
        1.0
    );
    assert!(
        moved(
            "sync_http_request_duration_seconds_count",
            &[r#"route="/api/sync/push""#]
        ) >= 1.0
    );
    assert!(moved("sync_db_connection_wait_seconds_count", &[]) >= 3.0);
    assert!(after.contains_key("sync_held_pulls"));
    assert!(after.contains_key("sync_password_hashes_waiting"));
    if backend == Backend::Postgres {
        assert!(sum(&after, "sync_db_pool_max_connections", &[]) >= 1.0);
    }
}

by_backend!(
    counters_move_with_the_requests_made,
    counters_move_with_the_requests_made
);
