//! What one account can take from the others: request bytes in flight are bounded per account
//! and for the process before a body is read (429 or 503 with `Retry-After` beyond them), and
//! a push waiting for its account's turn holds no database connection. Over real sockets, on
//! both backends.

use serde_json::{Value as Json, json};
use std::time::Duration;
use sync_runtime::protocol::paths;
use sync_runtime::server::ServerConfig;
use tests::by_backend;
use tests::device::LiveServer;
use tests::server::{Backend, at, id, row};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// How long an answer that should come at once may take, on a loaded machine.
const AT_ONCE: Duration = Duration::from_secs(10);

/// A push whose head is sent, declaring `length` bytes of body, none of which follows: it
/// takes its share of the budget and keeps it while the connection stays open.
async fn push_without_its_body(server: &LiveServer, token: &str, length: usize) -> TcpStream {
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
        paths::PUSH,
        server.addr
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn
}

/// The status line, headers and body of the answer on `conn`, read until it closes or the
/// body's declared length arrived; `None` when nothing came within [`AT_ONCE`].
async fn answer(conn: &mut TcpStream) -> Option<(u16, String, Json)> {
    let mut raw = Vec::new();
    let read = timeout(AT_ONCE, async {
        let mut buf = [0u8; 4096];
        loop {
            let n = conn.read(&mut buf).await.unwrap_or(0);
            raw.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&raw).to_string();
            if n == 0 {
                return;
            }
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head.lines().find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                });
                if length.is_some_and(|n| body.len() >= n) {
                    return;
                }
            }
        }
    })
    .await;
    read.ok()?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.get(9..12)?.parse().ok()?;
    Some((
        status,
        head.to_ascii_lowercase(),
        serde_json::from_str(body).unwrap_or(Json::Null),
    ))
}

/// Asserts that the push on `conn` is refused at once, its body unread, with `status`, the
/// JSON error `code` and `Retry-After`.
async fn refused_at_once(mut conn: TcpStream, status: u16, code: &str) {
    let (got, head, body) = answer(&mut conn)
        .await
        .expect("answered at once, the body unread");
    assert_eq!(got, status, "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert!(head.contains("retry-after: 1"), "{head}");
}

/// One small push of a new profile by a client of its own; its status.
async fn small_push(http: &reqwest::Client, url: &str, token: &str) -> u16 {
    let body = json!({"device_id": id(), "schema_version": 1, "changes": {"profiles": [
        row("profiles", &id(), &at(0), json!({"name": "Small", "avatar": "S"}))]}});
    http.post(format!("{url}{}", paths::PUSH))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn request_bytes_are_bounded_per_account_and_in_all_before_bodies_are_read(backend: Backend) {
    let config = ServerConfig {
        max_account_request_bytes: 128 * 1024,
        max_request_bytes: 200_000,
        ..ServerConfig::default()
    };
    let Some(server) = LiveServer::start_with(backend, "budget_bytes", config).await else {
        return;
    };
    let http = reqwest::Client::new();
    let (_, a) = server.sign_in(paths::REGISTER, "a@budget.example").await;
    let (_, b) = server.sign_in(paths::REGISTER, "b@budget.example").await;
    let (_, c) = server.sign_in(paths::REGISTER, "c@budget.example").await;
    // Two of A's pushes are being read: A's share (128 KiB) holds no third.
    let held_a = [
        push_without_its_body(&server, &a, 60_000).await,
        push_without_its_body(&server, &a, 60_000).await,
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let third = push_without_its_body(&server, &a, 60_000).await;
    refused_at_once(third, 429, "rate_limited").await;
    // A refused push whose body is on its way gets the answer too, not a connection reset
    // under its feet (the server reads and drops the body).
    let name = "n".repeat(8 << 20);
    let body = json!({"device_id": id(), "schema_version": 1, "changes": {"profiles": [
        row("profiles", &id(), &at(0), json!({"name": name, "avatar": "S"}))]}});
    let refused = http
        .post(format!("{}{}", server.url, paths::PUSH))
        .bearer_auth(&a)
        .json(&body)
        .send()
        .await
        .expect("an answer, not a reset connection");
    assert_eq!(refused.status(), 429);
    // Another account goes on.
    assert_eq!(small_push(&http, &server.url, &b).await, 200);
    // The process holds 120,000 bytes of A's and takes 60,000 of B's; C's 60,000 more would
    // pass the process's 200,000.
    let _held_b = push_without_its_body(&server, &b, 60_000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let over = push_without_its_body(&server, &c, 60_000).await;
    refused_at_once(over, 503, "busy").await;
    // A small push still fits.
    assert_eq!(small_push(&http, &server.url, &c).await, 200);
    // Bodies given up give their share back.
    drop(held_a);
    let mut back = 0;
    for _ in 0..50 {
        back = small_push(&http, &server.url, &a).await;
        if back == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(back, 200, "A pushes again once its held requests are gone");
}

by_backend!(
    bytes_in_flight,
    request_bytes_are_bounded_per_account_and_in_all_before_bodies_are_read
);

/// Holds the database lock an account's push takes, until dropped: SQLite's writer, or the
/// account's row on PostgreSQL (released when the sender goes).
struct AccountLock {
    _sqlite: Option<rusqlite::Connection>,
    _release: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn lock_account(server: &LiveServer, user: &str) -> AccountLock {
    let url = server.database_url().to_owned();
    if let Some(path) = url.strip_prefix("sqlite://") {
        // SQLite has one writer: holding it holds every account's pushes.
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        return AccountLock {
            _sqlite: Some(conn),
            _release: None,
        };
    }
    let (locked_tx, locked) = tokio::sync::oneshot::channel();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let user = user.to_owned();
    tokio::spawn(async move {
        let mut client = tests::server::postgres(&url).await;
        let tx = client.transaction().await.unwrap();
        tx.query(
            "SELECT 1 FROM sync_users WHERE user_id = $1 FOR UPDATE",
            &[&user],
        )
        .await
        .unwrap();
        let _ = locked_tx.send(());
        let _ = released.await;
        tx.rollback().await.unwrap();
    });
    locked.await.unwrap();
    AccountLock {
        _sqlite: None,
        _release: Some(release),
    }
}

async fn a_push_waiting_for_its_account_holds_no_database_connection(backend: Backend) {
    let config = ServerConfig {
        postgres_connections: 2,
        ..ServerConfig::default()
    };
    let Some(server) = LiveServer::start_with(backend, "budget_turns", config).await else {
        return;
    };
    let http = reqwest::Client::new();
    let (a_user, a) = server.sign_in(paths::REGISTER, "a@turns.example").await;
    let (_, b) = server.sign_in(paths::REGISTER, "b@turns.example").await;
    let lock = lock_account(&server, &a_user).await;
    // Ten pushes of A wait for A's lock.
    let pushes: Vec<_> = (0..10)
        .map(|_| {
            let (http, url, a) = (http.clone(), server.url.clone(), a.clone());
            tokio::spawn(async move { small_push(&http, &url, &a).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(pushes.iter().all(|p| !p.is_finished()), "A's pushes wait");
    // Another account's pull, and on PostgreSQL its push, do not wait for them.
    let pull = timeout(
        AT_ONCE,
        http.get(format!("{}{}?limit=1", server.url, paths::PULL))
            .bearer_auth(&b)
            .send(),
    )
    .await
    .expect("another account's pull is answered while A's pushes wait")
    .unwrap();
    assert_eq!(pull.status(), 200);
    if backend == Backend::Postgres {
        let pushed = timeout(AT_ONCE, small_push(&http, &server.url, &b))
            .await
            .expect("another account's push is stored while A's pushes wait");
        assert_eq!(pushed, 200);
    }
    drop(lock);
    for p in pushes {
        assert_eq!(timeout(AT_ONCE * 3, p).await.unwrap().unwrap(), 200);
    }
}

by_backend!(
    waiting_pushes,
    a_push_waiting_for_its_account_holds_no_database_connection
);
