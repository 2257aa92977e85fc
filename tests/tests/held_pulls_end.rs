//! A pull held for its account's next change ends, delivering nothing, when its own token is
//! signed out or expires while it waits (issue 25, finding 8). Over a real socket, on both
//! backends.

use serde_json::{Value as Json, json};
use std::time::{Duration, Instant};
use sync_runtime::protocol::{headers, paths};
use sync_runtime::server::ServerConfig;
use tests::by_backend;
use tests::device::LiveServer;
use tests::server::{Backend, at, id, row};

/// How long an answer that should come at once may take, on a loaded machine.
const AT_ONCE: Duration = Duration::from_secs(5);

/// The account's latest cursor, from a full pull.
async fn cursor(http: &reqwest::Client, url: &str, token: &str) -> String {
    let page: Json = http
        .get(format!("{url}{}", paths::PULL))
        .bearer_auth(token)
        .header(headers::SCHEMA_VERSION, "1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["cursor"].as_str().expect("a cursor").to_owned()
}

/// A pull from `cursor` asking to be held 20 s, answered in a task: its status, body and how
/// long it took.
fn held_pull(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    cursor: &str,
) -> tokio::task::JoinHandle<(u16, Json, Duration)> {
    let request = http
        .get(format!("{url}{}?since={cursor}&wait=20", paths::PULL))
        .bearer_auth(token)
        .header(headers::SCHEMA_VERSION, "1");
    tokio::spawn(async move {
        let started = Instant::now();
        let answer = request.send().await.unwrap();
        let status = answer.status().as_u16();
        let body = answer.json().await.unwrap_or(Json::Null);
        (status, body, started.elapsed())
    })
}

async fn push_a_profile(http: &reqwest::Client, url: &str, token: &str) {
    let body = json!({"device_id": id(), "schema_version": 1, "changes": {"profiles": [
        row("profiles", &id(), &at(0), json!({"name": "After", "avatar": "A"}))]}});
    let status = http
        .post(format!("{url}{}", paths::PUSH))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
}

/// Before: the held pull went on waiting after its token's logout, and delivered the row
/// another device of the account pushed after it.
async fn sign_out_ends_a_held_pull(backend: Backend) {
    let Some(server) =
        LiveServer::start_with(backend, "held_sign_out", ServerConfig::default()).await
    else {
        return;
    };
    let (http, url) = (reqwest::Client::new(), server.url.clone());
    let (_, token) = server.sign_in(paths::REGISTER, "held@example.org").await;
    let (_, other_device) = server.sign_in(paths::LOGIN, "held@example.org").await;
    let from = cursor(&http, &url, &token).await;
    let held = held_pull(&http, &url, &token, &from);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = http
        .post(format!("{url}{}", paths::LOGOUT))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    push_a_profile(&http, &url, &other_device).await;
    let (status, body, took) = held.await.unwrap();
    assert_eq!(status, 401, "nothing delivered after the logout: {body}");
    assert_eq!(body["error"], "unauthorized", "{body}");
    assert!(took < AT_ONCE + Duration::from_millis(300), "{took:?}");
}

by_backend!(sign_out, sign_out_ends_a_held_pull);

/// Before: a pull held past its token's expiry waited out its 20 s and was answered as if the
/// token still held.
async fn expiry_ends_a_held_pull(backend: Backend) {
    let config = ServerConfig {
        token_ttl: Duration::from_secs(2),
        ..ServerConfig::default()
    };
    let Some(server) = LiveServer::start_with(backend, "held_expiry", config).await else {
        return;
    };
    let (http, url) = (reqwest::Client::new(), server.url.clone());
    let (_, token) = server.sign_in(paths::REGISTER, "held@example.org").await;
    let from = cursor(&http, &url, &token).await;
    let (status, body, took) = held_pull(&http, &url, &token, &from).await.unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(took < Duration::from_secs(2) + AT_ONCE, "{took:?}");
}

by_backend!(expiry, expiry_ends_a_held_pull);
