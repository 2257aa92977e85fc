//! Password guessing, registrations and password hashing are bounded, whatever arrives at once,
//! and an attacker cannot lock an account's owner out. On both backends.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::json;
use std::sync::Arc;
use sync_runtime::server::ServerConfig;
use tests::by_backend;
use tests::server::{Backend, TestServer};

/// A server on `backend` with `config` (None: PostgreSQL is not configured).
async fn server(backend: Backend, test: &str, config: ServerConfig) -> Option<Arc<TestServer>> {
    let s = TestServer::start_with(backend, test, entities::app(), config).await?;
    Some(Arc::new(s))
}

fn creds(email: &str, password: &str) -> Option<serde_json::Value> {
    Some(json!({"email": email, "password": password}))
}

async fn login_from(s: &TestServer, from: &str, email: &str, password: &str) -> StatusCode {
    s.call_from(
        from,
        Method::POST,
        "/api/auth/login",
        creds(email, password),
    )
    .await
    .0
}

by_backend!(
    a_burst_of_guesses_gets_no_more_password_checks_than_the_limit,
    guess_burst
);
async fn guess_burst(backend: Backend) {
    let Some(s) = server(backend, "guess_burst", ServerConfig::default()).await else {
        return;
    };
    s.register("burst@example.org").await;
    // 100 guesses at once from one address, the right password among them (46th).
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let s = s.clone();
            let password = if i == 45 {
                "correct horse"
            } else {
                "wrong guess"
            };
            tokio::spawn(async move {
                login_from(&s, "10.0.0.66:4000", "burst@example.org", password).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    // A 401 or a 200 means the password was checked; a 429 that it was not.
    let checked = answers
        .iter()
        .filter(|a| **a == StatusCode::UNAUTHORIZED || **a == StatusCode::OK)
        .count();
    let limited = answers
        .iter()
        .filter(|a| **a == StatusCode::TOO_MANY_REQUESTS)
        .count();
    eprintln!(
        "{:?}: {checked} password checks in a burst of 100",
        s.backend
    );
    assert_eq!(checked + limited, 100, "{answers:?}");
    assert!(checked <= 10, "{checked} password checks: {answers:?}");
}

by_backend!(
    guesses_from_strangers_do_not_lock_the_owner_out,
    owner_not_locked
);
async fn owner_not_locked(backend: Backend) {
    let config = ServerConfig {
        max_login_failures: 3,
        ..ServerConfig::default()
    };
    let Some(s) = server(backend, "owner_not_locked", config).await else {
        return;
    };
    s.register("owner@example.org").await;
    let owner = "10.0.0.1:5000";
    assert_eq!(
        login_from(&s, owner, "owner@example.org", "correct horse").await,
        StatusCode::OK
    );
    // One stranger guesses until refused.
    let mut last = StatusCode::OK;
    for _ in 0..5 {
        last = login_from(&s, "10.6.6.6:5000", "owner@example.org", "guess").await;
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
    // Many strangers, a few guesses each, until the account as a whole is limited.
    for n in 0..12 {
        for _ in 0..3 {
            login_from(
                &s,
                &format!("10.7.0.{n}:5000"),
                "owner@example.org",
                "guess",
            )
            .await;
        }
    }
    assert_eq!(
        login_from(&s, "10.8.0.1:5000", "owner@example.org", "guess").await,
        StatusCode::TOO_MANY_REQUESTS,
        "guessing from yet another address is limited account-wide"
    );
    assert_eq!(
        login_from(&s, owner, "owner@example.org", "correct horse").await,
        StatusCode::OK,
        "the owner, from their own address, gets in"
    );
    // The owner's own typos are limited like anyone's, and forgiven by the right password.
    for _ in 0..2 {
        login_from(&s, owner, "owner@example.org", "typo").await;
    }
    assert_eq!(
        login_from(&s, owner, "owner@example.org", "correct horse").await,
        StatusCode::OK
    );
}

by_backend!(registrations_are_limited_per_address, register_limit);
async fn register_limit(backend: Backend) {
    let config = ServerConfig {
        max_registrations: 3,
        ..ServerConfig::default()
    };
    let Some(s) = server(backend, "register_limit", config).await else {
        return;
    };
    for i in 0..3 {
        let (st, b) = s
            .call_from(
                "10.0.0.9:1",
                Method::POST,
                "/api/auth/register",
                creds(&format!("r{i}@example.org"), "long enough"),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{b}");
    }
    let (st, b) = s
        .call_from(
            "10.0.0.9:1",
            Method::POST,
            "/api/auth/register",
            creds("r3@example.org", "long enough"),
        )
        .await;
    assert_eq!(
        (st, b["error"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited"))
    );
    // Worded for someone signing up, not as failed logins they never made.
    let message = b["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("too many accounts registered from this address; try again in"),
        "{b}"
    );
    let (st, b) = s
        .call_from(
            "10.0.0.10:1",
            Method::POST,
            "/api/auth/register",
            creds("r3@example.org", "long enough"),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "another address: {b}");
}

by_backend!(
    password_hashing_beyond_its_slots_and_queue_is_503_with_retry_after,
    hash_gate
);
async fn hash_gate(backend: Backend) {
    let config = ServerConfig {
        hashing_slots: 1,
        hashing_queue: 1,
        ..ServerConfig::default()
    };
    let Some(s) = server(backend, "hash_gate", config).await else {
        return;
    };
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut req = Request::builder()
                    .method(Method::POST)
                    .uri("/api/auth/register")
                    .header("content-type", "application/json")
                    .body(Body::from(
                        json!({"email": format!("h{i}@example.org"), "password": "long enough"})
                            .to_string(),
                    ))
                    .unwrap();
                let from: std::net::SocketAddr = format!("10.1.0.{i}:1").parse().unwrap();
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(from));
                s.send_with_headers(req).await
            })
        })
        .collect();
    let (mut created, mut busy) = (0, 0);
    for t in tasks {
        let (st, headers, b) = t.await.unwrap();
        match st {
            StatusCode::CREATED => created += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                busy += 1;
                assert_eq!(b["error"], "busy", "{b}");
                assert!(headers.get("retry-after").is_some());
            }
            other => panic!("{other}: {b}"),
        }
    }
    assert!(created >= 2, "the slot and the queue place are served");
    assert!(busy > 0, "the rest is refused at once");
}
