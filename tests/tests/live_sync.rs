//! Live sync: a pull held open by the server (`wait`) until the account changes, across server
//! processes on PostgreSQL, within bounds; and devices whose services keep one open, so an edit
//! on one shows on the others as it happens.

use axum::http::{Method, StatusCode};
use entities::Profile;
use serde_json::Value as Json;
use std::sync::Arc;
use std::time::Duration;
use sync_runtime::client::{PullRequest, Remote, ServiceOptions, SyncService, Transport};
use sync_runtime::server::{Server, ServerConfig, router};
use tests::by_backend;
use tests::device::Device;
use tests::fixtures::profile;
use tests::server::{Backend, Cleanup, TestServer, fresh_database, postgres_admin};
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout};

const PATIENCE: Duration = Duration::from_secs(15);

/// One server process on a database: its own listener, waiters and (on PostgreSQL) listening
/// connection. It stops gracefully, as `sync-server` does on SIGTERM.
struct Process {
    url: String,
    server: Arc<Server>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Process {
    async fn start(db_url: &str, config: ServerConfig) -> Process {
        let server = Server::open(db_url, entities::app(), config).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let app =
            router(server.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
        let releasing = server.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                    releasing.release_waiters();
                })
                .await
                .unwrap();
        });
        Process {
            url,
            server,
            stop: Some(stop),
            task,
        }
    }

    /// Waits until `n` pulls are held here.
    async fn held(&self, n: usize) {
        timeout(PATIENCE, async {
            while self.server.live.waiting() != n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{n} held pulls"));
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn database(backend: Backend, test: &str) -> Option<(String, Cleanup)> {
    fresh_database(backend, test).await
}

/// Two devices of one account: A registers `email` on `url_a`, B signs in to it on `url_b`.
async fn one_account(url_a: &str, url_b: &str, email: &str) -> (Device, Device) {
    let (mut a, mut b) = (Device::new("a"), Device::new("b"));
    a.connect(url_a, email, true).await;
    b.connect(url_b, email, false).await;
    (a, b)
}

/// What a held pull answered: the page, how long the server agreed to hold it, and how long
/// it took.
struct Held {
    page: Json,
    granted: Option<Duration>,
    took: Duration,
}

/// Holds a pull of `device` (from its stored cursor) on `url` for up to `wait`.
fn hold(device: &Device, url: &str, wait: u64) -> tokio::task::JoinHandle<Held> {
    let token = device.store.session().unwrap().1.expect("connected");
    let since = device.store.cursor().unwrap().expect("a cursor");
    let me = device.store.device_id().to_owned();
    let remote = Remote::new(url).unwrap();
    tokio::spawn(async move {
        let started = Instant::now();
        let (resp, granted) = remote
            .pull_waiting(
                PullRequest {
                    token: &token,
                    device_id: Some(&me),
                    schema_version: 1,
                    since: Some(&since),
                    limit: 1000,
                },
                Duration::from_secs(wait),
            )
            .await
            .unwrap();
        let bytes = resp.bytes().await.unwrap();
        Held {
            page: serde_json::from_slice(&bytes).unwrap(),
            granted,
            took: started.elapsed(),
        }
    })
}

fn profile_names(page: &Json) -> Vec<String> {
    page["changes"]["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn a_held_pull_is_answered_when_the_account_changes(backend: Backend) {
    let Some((db, _cleanup)) = database(backend, "live_wake").await else {
        return;
    };
    let p = Process::start(&db, ServerConfig::default()).await;
    let (mut a, b) = one_account(&p.url, &p.url, "wake@example.org").await;
    let before = b.store.cursor().unwrap().unwrap();
    let held = hold(&b, &p.url, 10);
    p.held(1).await;
    a.store.insert(&mut profile("Live", None)).unwrap();
    a.sync().await.unwrap();
    let held = timeout(PATIENCE, held).await.unwrap().unwrap();
    assert_eq!(held.granted, Some(Duration::from_secs(10)));
    assert_eq!(profile_names(&held.page), ["Live"]);
    assert_ne!(held.page["cursor"].as_str().unwrap(), before);
    assert_eq!(
        p.server.live.waiting(),
        0,
        "an answered pull frees its place"
    );
}

/// A re-check (asked for when the listener may have missed announcements) that finds nothing
/// new keeps the pull held: answering its empty page would end the hold early. Found as a
/// flaky PostgreSQL test whose listeners were cut: the re-listen's re-check answered a pull
/// held for a change that had not been made yet.
async fn a_recheck_that_finds_nothing_keeps_the_pull_held(backend: Backend) {
    let Some((db, _cleanup)) = database(backend, "live_recheck").await else {
        return;
    };
    let p = Process::start(&db, ServerConfig::default()).await;
    let (mut a, b) = one_account(&p.url, &p.url, "recheck@example.org").await;
    let held = hold(&b, &p.url, 20);
    p.held(1).await;
    p.server.live.recheck_all();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "still held after a re-check");
    assert_eq!(p.server.live.waiting(), 1);
    a.store
        .insert(&mut profile("After the re-check", None))
        .unwrap();
    a.sync().await.unwrap();
    let held = timeout(PATIENCE, held).await.unwrap().unwrap();
    assert_eq!(profile_names(&held.page), ["After the re-check"]);
}

async fn a_devices_own_push_does_not_end_its_held_pull(backend: Backend) {
    let Some((db, _cleanup)) = database(backend, "live_own").await else {
        return;
    };
    let p = Process::start(&db, ServerConfig::default()).await;
    let (mut a, mut b) = one_account(&p.url, &p.url, "own@example.org").await;
    let held = hold(&b, &p.url, 10);
    p.held(1).await;
    // B's own write passes its cursor, but its pull leaves it out: nothing to answer yet.
    b.store.insert(&mut profile("B's own", None)).unwrap();
    b.sync().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !held.is_finished(),
        "still held after the device's own push"
    );
    assert_eq!(p.server.live.waiting(), 1);
    a.store.insert(&mut profile("A's", None)).unwrap();
    a.sync().await.unwrap();
    let held = timeout(PATIENCE, held).await.unwrap().unwrap();
    assert_eq!(profile_names(&held.page), ["A's"]);
    // The cursor is past both writes, so B's next pull starts after them.
    assert_eq!(
        held.page["cursor"].as_str().unwrap(),
        a.store.cursor().unwrap().unwrap()
    );
}

async fn a_held_pull_of_another_account_is_never_woken(backend: Backend) {
    let Some((db, _cleanup)) = database(backend, "live_other").await else {
        return;
    };
    let p = Process::start(&db, ServerConfig::default()).await;
    let (mut a, mut c) = (Device::new("a"), Device::new("c"));
    a.connect(&p.url, "writer@example.org", true).await;
    c.connect(&p.url, "bystander@example.org", true).await;
    let before = c.store.cursor().unwrap().unwrap();
    let held = hold(&c, &p.url, 2);
    p.held(1).await;
    for i in 0..3 {
        a.store
            .insert(&mut profile(&format!("Not yours {i}"), None))
            .unwrap();
        a.sync().await.unwrap();
    }
    let held = timeout(PATIENCE, held).await.unwrap().unwrap();
    assert!(
        held.took >= Duration::from_millis(1900),
        "held until its wait ended, not woken by another account ({:?})",
        held.took
    );
    assert_eq!(held.page["cursor"].as_str().unwrap(), before);
    assert!(
        held.page["changes"]
            .as_object()
            .unwrap()
            .values()
            .all(|r| r.as_array().unwrap().is_empty())
    );
}

async fn pulls_that_need_no_waiting_are_answered_at_once(backend: Backend) {
    let Some((db, _cleanup)) = database(backend, "live_at_once").await else {
        return;
    };
    let config = ServerConfig {
        max_wait: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    let p = Process::start(&db, config).await;
    let (mut a, b) = one_account(&p.url, &p.url, "at-once@example.org").await;
    // Changes after the cursor: no waiting, whatever `wait` says.
    a.store.insert(&mut profile("Waiting for B", None)).unwrap();
    a.sync().await.unwrap();
    let held = timeout(PATIENCE, hold(&b, &p.url, 1000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(profile_names(&held.page), ["Waiting for B"]);
    // Before (issue 25): `X-Sync-Wait: 1`, as if the pull had been held.
    assert_eq!(
        held.granted,
        Some(Duration::ZERO),
        "answered at once: not held"
    );
    // A full pull never waits.
    let (_, token) = b.store.session().unwrap();
    let remote = Remote::new(&p.url).unwrap();
    let (resp, next) = remote
        .pull_head(PullRequest {
            token: &token.clone().unwrap(),
            device_id: None,
            schema_version: 1,
            since: None,
            limit: 1000,
        })
        .await
        .unwrap();
    assert!(
        resp.headers().get("x-sync-wait").is_none(),
        "a pull without `wait` is answered as before"
    );
    assert_eq!(next, Some(sync_runtime::client::NextPage::None));
    assert_eq!(p.server.live.waiting(), 0);
}

async fn held_pulls_beyond_the_caps_are_answered_at_once(backend: Backend) {
    let Some((db, _cleanup)) = database(backend, "live_caps").await else {
        return;
    };
    let config = ServerConfig {
        max_waiters_per_account: 1,
        max_waiters: 2,
        ..ServerConfig::default()
    };
    let p = Process::start(&db, config).await;
    let (mut a, mut b, mut c, mut d) = (
        Device::new("a"),
        Device::new("b"),
        Device::new("c"),
        Device::new("d"),
    );
    a.connect(&p.url, "caps@example.org", true).await;
    b.connect(&p.url, "caps@example.org", false).await;
    c.connect(&p.url, "caps-c@example.org", true).await;
    d.connect(&p.url, "caps-d@example.org", true).await;
    let held_b = hold(&b, &p.url, 30);
    p.held(1).await;
    let refused = timeout(PATIENCE, hold(&a, &p.url, 30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(refused.granted, Some(Duration::ZERO), "one per account");
    let held_c = hold(&c, &p.url, 30);
    p.held(2).await;
    let refused = timeout(PATIENCE, hold(&d, &p.url, 30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(refused.granted, Some(Duration::ZERO), "two per process");
    // The held ones are still held, and still woken.
    a.store.insert(&mut profile("For B", None)).unwrap();
    a.sync().await.unwrap();
    let b_got = timeout(PATIENCE, held_b).await.unwrap().unwrap();
    assert_eq!(profile_names(&b_got.page), ["For B"]);
    assert!(!held_c.is_finished());
    held_c.abort();
}

async fn a_client_that_goes_away_frees_its_place(backend: Backend) {
    let Some((db, _cleanup)) = database(backend, "live_gone").await else {
        return;
    };
    let p = Process::start(&db, ServerConfig::default()).await;
    let mut b = Device::new("b");
    b.connect(&p.url, "gone@example.org", true).await;
    let held = hold(&b, &p.url, 30);
    p.held(1).await;
    // The device drops its request (a local write interrupts the held pull, the app quits).
    held.abort();
    p.held(0).await;
}

async fn shutting_down_answers_held_pulls(backend: Backend) {
    let Some((db, _cleanup)) = database(backend, "live_shutdown").await else {
        return;
    };
    let mut p = Process::start(&db, ServerConfig::default()).await;
    let mut b = Device::new("b");
    b.connect(&p.url, "shutdown@example.org", true).await;
    let before = b.store.cursor().unwrap().unwrap();
    let held = hold(&b, &p.url, 30);
    p.held(1).await;
    let _ = p.stop.take().unwrap().send(());
    let held = timeout(PATIENCE, held)
        .await
        .expect("the held pull is answered at shutdown, not after its 30 s")
        .unwrap();
    assert_eq!(held.page["cursor"].as_str().unwrap(), before);
    timeout(PATIENCE, &mut p.task)
        .await
        .expect("the server stops")
        .unwrap();
}

by_backend!(
    held_pull_wakes,
    a_held_pull_is_answered_when_the_account_changes
);
by_backend!(own_push, a_devices_own_push_does_not_end_its_held_pull);
by_backend!(recheck, a_recheck_that_finds_nothing_keeps_the_pull_held);
by_backend!(other_account, a_held_pull_of_another_account_is_never_woken);
by_backend!(at_once, pulls_that_need_no_waiting_are_answered_at_once);
by_backend!(caps, held_pulls_beyond_the_caps_are_answered_at_once);
by_backend!(shutdown, shutting_down_answers_held_pulls);
by_backend!(client_gone, a_client_that_goes_away_frees_its_place);

async fn a_bad_wait_is_a_400_and_changes_nothing(s: TestServer) {
    let (_, token) = s.register("bad-wait@example.org").await;
    let (status, page) = s.pull_page(&token, None, None, None).await;
    assert_eq!(status, StatusCode::OK);
    let cursor = page["cursor"].as_str().unwrap().to_owned();
    for wait in ["abc", "-1", "1.5", "99999999999999999999999"] {
        let (status, body) = s
            .pull_query(&token, &format!("since={cursor}&wait={wait}"))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "wait={wait}: {body}");
        assert_eq!(body["error"], "bad_request");
        assert!(body["message"].as_str().unwrap().contains("wait"));
    }
    assert_eq!(s.server.live.waiting(), 0);
}

tests::on_both_backends!(bad_wait, a_bad_wait_is_a_400_and_changes_nothing);

#[cfg_attr(
    not(postgres),
    ignore = "needs PostgreSQL: set SYNC_TEST_POSTGRES_URL (.ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_server_processes_on_postgres_wake_each_others_pulls() {
    let Some((db, _cleanup)) = database(Backend::Postgres, "live_two_processes").await else {
        return;
    };
    let (p1, p2) = (
        Process::start(&db, ServerConfig::default()).await,
        Process::start(&db, ServerConfig::default()).await,
    );
    let (mut a, b) = one_account(&p1.url, &p2.url, "two-processes@example.org").await;
    let held = hold(&b, &p2.url, 20);
    p2.held(1).await;
    a.store.insert(&mut profile("Across", None)).unwrap();
    a.sync().await.unwrap();
    let held = timeout(PATIENCE, held).await.unwrap().unwrap();
    assert!(
        held.took < Duration::from_secs(20),
        "woken by the other process, not by the end of its wait"
    );
    assert_eq!(profile_names(&held.page), ["Across"]);
}

/// The `LISTEN`ing connections of the server processes connected as application `name`.
async fn listeners(admin: &tokio_postgres::Client, name: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = $1 AND query LIKE 'LISTEN %'",
            &[&name],
        )
        .await
        .unwrap()
        .get(0)
}

#[cfg_attr(
    not(postgres),
    ignore = "needs PostgreSQL: set SYNC_TEST_POSTGRES_URL (.ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_whose_connection_is_cut_listens_again_and_wakes_pulls() {
    let Some((db, _cleanup)) = database(Backend::Postgres, "live_listener_cut").await else {
        return;
    };
    let admin = postgres_admin().await;
    // Connections named after this test: other tests' servers listen on the same database.
    let name = format!("listener_cut_{}", std::process::id());
    let db = format!("{db}&application_name={name}");
    let (p1, p2) = (
        Process::start(&db, ServerConfig::default()).await,
        Process::start(&db, ServerConfig::default()).await,
    );
    let both_listening = || async {
        timeout(PATIENCE, async {
            while listeners(&admin, &name).await != 2 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("both processes listening")
    };
    both_listening().await;
    let (mut a, mut b) = one_account(&p1.url, &p2.url, "listener-cut@example.org").await;
    // The database ends both listening connections (a failover, an idle timeout, an admin).
    let cut: i64 = admin
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1 AND query LIKE 'LISTEN %') AS ended",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(cut, 2);
    // A change made while the listeners may still be away wakes a pull held on the other
    // process: announcements missed meanwhile are made up for when it listens again.
    let held = hold(&b, &p2.url, 20);
    p2.held(1).await;
    a.store.insert(&mut profile("While away", None)).unwrap();
    a.sync().await.unwrap();
    let held = timeout(PATIENCE, held).await.unwrap().unwrap();
    assert!(held.took < Duration::from_secs(20), "woken, not timed out");
    assert_eq!(profile_names(&held.page), ["While away"]);
    // And the next change is announced through the new connections.
    both_listening().await;
    b.sync().await.unwrap();
    let held = hold(&b, &p2.url, 20);
    p2.held(1).await;
    a.store.insert(&mut profile("After", None)).unwrap();
    a.sync().await.unwrap();
    let held = timeout(PATIENCE, held).await.unwrap().unwrap();
    assert!(held.took < Duration::from_secs(20), "woken, not timed out");
    assert_eq!(profile_names(&held.page), ["After"]);
}

// ---------------------------------------------------------------- devices with services

fn live_options() -> ServiceOptions {
    ServiceOptions {
        // Nothing but the held pull can bring the edit within the test.
        period: Duration::from_secs(3600),
        ..ServiceOptions::default()
    }
}

/// The local id of the live profile named `name` in the database at `path`, read through a
/// connection of its own (as another part of the app would).
fn find_profile(path: &std::path::Path, name: &str) -> Option<i64> {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(
        "SELECT id FROM profiles WHERE name = ?1 AND deleted_at IS NULL",
        [name],
        |r| r.get(0),
    )
    .ok()
}

async fn wait_for_profile(path: &std::path::Path, name: &str) -> i64 {
    timeout(PATIENCE, async {
        loop {
            if let Some(id) = find_profile(path, name) {
                return id;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{name} reached the other device"))
}

/// Devices A (on `url_a`) and B (on `url_b`), each with its service running: an insert on A
/// through the store shows in B's database, B's app is told which row changed, and B's status
/// says it is live.
async fn an_insert_on_one_device_shows_on_the_other(url_a: &str, url_b: &str, email: &str) {
    let (mut a, mut b) = one_account(url_a, url_b, email).await;
    let service_a = SyncService::start(a.store.reopen().unwrap(), live_options());
    a.store.set_write_hook(service_a.write_hook());
    let service_b = SyncService::start(b.store.reopen().unwrap(), live_options());
    let mut changes = service_b.changes();
    let mut status_b = service_b.status();
    timeout(PATIENCE, status_b.wait_for(|s| s.live))
        .await
        .expect("B goes live")
        .unwrap();
    for name in ["First", "Second"] {
        a.store.insert(&mut profile(name, None)).unwrap();
        let id = wait_for_profile(&b.path, name).await;
        let changed = timeout(PATIENCE, async {
            loop {
                let c = changes.recv().await.unwrap();
                if c.tables.contains_key("profiles") {
                    return c;
                }
            }
        })
        .await
        .expect("B's app is told");
        assert!(
            changed.tables["profiles"].ids.contains(&id),
            "{changed:?} names B's local id {id}"
        );
    }
    assert!(service_b.status().borrow().live);
    // B's own edit goes the other way.
    b.store.set_write_hook(service_b.write_hook());
    b.store.insert(&mut profile("From B", None)).unwrap();
    wait_for_profile(&a.path, "From B").await;
    assert_eq!(
        a.store.list::<Profile>().unwrap().len(),
        3,
        "A's app sees what its service pulled"
    );
    service_a.stop();
    service_b.stop();
}

async fn services_propagate_an_insert_live(backend: Backend) {
    let Some((db, _cleanup)) = database(backend, "live_services").await else {
        return;
    };
    let p = Process::start(&db, ServerConfig::default()).await;
    an_insert_on_one_device_shows_on_the_other(&p.url, &p.url, "services@example.org").await;
}

by_backend!(services, services_propagate_an_insert_live);

#[cfg_attr(
    not(postgres),
    ignore = "needs PostgreSQL: set SYNC_TEST_POSTGRES_URL (.ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_on_two_server_processes_propagate_an_insert_live() {
    let Some((db, _cleanup)) = database(Backend::Postgres, "live_services_two").await else {
        return;
    };
    let (p1, p2) = (
        Process::start(&db, ServerConfig::default()).await,
        Process::start(&db, ServerConfig::default()).await,
    );
    an_insert_on_one_device_shows_on_the_other(&p1.url, &p2.url, "services-two@example.org").await;
}

async fn a_service_falls_back_to_the_period_when_pulls_are_not_held(backend: Backend) {
    let Some((db, _cleanup)) = database(backend, "live_fallback").await else {
        return;
    };
    let config = ServerConfig {
        max_waiters: 0,
        ..ServerConfig::default()
    };
    let p = Process::start(&db, config).await;
    let (mut a, b) = one_account(&p.url, &p.url, "fallback@example.org").await;
    let options = ServiceOptions {
        period: Duration::from_millis(300),
        backoff_min: Duration::from_millis(100),
        ..ServiceOptions::default()
    };
    let service_b = SyncService::start(b.store.reopen().unwrap(), options);
    let mut status_b = service_b.status();
    a.store.insert(&mut profile("By the period", None)).unwrap();
    a.sync().await.unwrap();
    wait_for_profile(&b.path, "By the period").await;
    // Its held pulls are answered at once without holding: B says it is not live.
    timeout(
        PATIENCE,
        status_b.wait_for(|s| !s.live && s.last_error.is_none()),
    )
    .await
    .unwrap()
    .unwrap();
    service_b.stop();
}

by_backend!(
    fallback,
    a_service_falls_back_to_the_period_when_pulls_are_not_held
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_specifies_wait_and_its_answer() {
    let s = TestServer::start(Backend::Sqlite, "live_openapi")
        .await
        .unwrap();
    let (status, doc) = s.call(Method::GET, "/api/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let pull = &doc["paths"]["/api/sync/pull"]["get"];
    assert!(
        pull["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "wait" && p["in"] == "query"),
        "{pull}"
    );
    assert!(
        pull["responses"]["200"]["headers"]["x-sync-wait"].is_object(),
        "{pull}"
    );
}
