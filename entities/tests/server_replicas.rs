//! Several `sync-server` processes on one database, as an operator runs replicas: started at
//! the same moment on a fresh database they all come up and serve, devices syncing through
//! different ones converge, and a migration that fails says what the database said.

mod common;

use common::devices::Device;
use common::{Backend, FreshDatabase, Running, address};
use std::collections::BTreeSet;
use sync_runtime::App;
use sync_runtime::migrate::Migration;
use sync_runtime::server::{Server, ServerConfig};

const REPLICAS: usize = 4;
/// Fresh databases the replicas start on together, in a row. Without the migration lock, the
/// first try on PostgreSQL lost a replica in every run; on SQLite about one try in six did, so
/// that thirty in a row pass by chance in fewer than one run in a hundred.
const POSTGRES_TRIES: usize = 12;
const SQLITE_TRIES: usize = 30;

/// `REPLICAS` processes started at once on `db`; each must come up and answer its health check,
/// and all must share one server identity. Their base URLs.
fn start_together(db: &FreshDatabase, tried: usize) -> (Vec<Running>, Vec<String>) {
    let servers: Vec<Running> = (0..REPLICAS)
        .map(|_| common::start_server(&db.url, &[], "warn"))
        .collect();
    let urls: Vec<String> = servers.iter().map(common::listening_url).collect();
    let mut identities = BTreeSet::new();
    for url in &urls {
        let (status, health) = common::http(&address(url), "GET", "/api/health", None, "");
        assert_eq!(status, 200, "try {tried}: {health}");
        identities.insert(health["server_device_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        identities.len(),
        1,
        "try {tried}: one server, one device id"
    );
    (servers, urls)
}

/// Four devices of one account, each syncing through its own replica, create, rename and delete
/// profiles; after two rounds of syncs every device holds the same profiles.
async fn devices_converge_through_different_replicas(urls: &[String]) {
    let mut devices: Vec<Device> = (0..urls.len())
        .map(|i| Device::new(&format!("replica-{i}")))
        .collect();
    for (i, (device, url)) in devices.iter_mut().zip(urls).enumerate() {
        device.connect(url, "replicas@example.org", i == 0).await;
        device.add_profile(&format!("made on {i}"));
    }
    sync_twice(&mut devices).await;
    devices[1].rename_profile("made on 0", "renamed on 1");
    devices[2].delete_profile("made on 3");
    devices[3].rename_profile("made on 2", "renamed on 3");
    sync_twice(&mut devices).await;
    let first = devices[0].profiles();
    let names: BTreeSet<&str> = first.values().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from(["renamed on 1", "made on 1", "renamed on 3"])
    );
    for (i, d) in devices.iter().enumerate() {
        assert_eq!(d.profiles(), first, "device {i} against device 0");
    }
}

/// Every device syncs, one after another, twice over: what any pushed, all have pulled.
async fn sync_twice(devices: &mut [Device]) {
    for _ in 0..2 {
        for d in devices.iter_mut() {
            d.sync().await;
        }
    }
}

async fn replicas_start_together_and_serve(backend: Backend, test: &str, tries: usize) {
    for tried in 1..=tries {
        let Some(db) = FreshDatabase::new(backend, test) else {
            return;
        };
        let (servers, urls) = start_together(&db, tried);
        if tried == tries {
            devices_converge_through_different_replicas(&urls).await;
        }
        drop(servers);
    }
}

#[cfg_attr(
    not(postgres),
    ignore = "needs PostgreSQL: set SYNC_TEST_POSTGRES_URL (.ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_starting_together_all_serve_and_their_devices_converge() {
    replicas_start_together_and_serve(Backend::Postgres, "replicas_together", POSTGRES_TRIES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_processes_opening_one_file_together_all_serve_and_their_devices_converge() {
    replicas_start_together_and_serve(Backend::Sqlite, "replicas_together", SQLITE_TRIES).await;
}

#[cfg_attr(
    not(postgres),
    ignore = "needs PostgreSQL: set SYNC_TEST_POSTGRES_URL (.ci/run does)"
)]
#[test]
fn a_failing_migration_is_logged_with_postgres_own_message_and_code() {
    let Some(db) = FreshDatabase::new(Backend::Postgres, "failing_migration") else {
        return;
    };
    // An object of the app's table name, there before the server: its first migration fails.
    db.execute("CREATE VIEW lists AS SELECT 1 AS x");
    let first = &entities::app().server_postgres_migrations[0];
    let logged = common::failed_start(&db.url);
    let expected = format!(
        "migration app/{} failed: relation \"lists\" already exists (SQLSTATE 42P07)",
        first.name
    );
    assert!(logged.contains(&expected), "{logged}");
    assert!(!logged.contains("db error"), "{logged}");
}

#[test]
fn a_failing_migration_on_sqlite_names_the_migration_and_sqlite_message() {
    let db = FreshDatabase::new(Backend::Sqlite, "failing_migration").unwrap();
    db.execute("CREATE VIEW lists AS SELECT 1 AS x");
    let first = &entities::app().server_sqlite_migrations[0];
    let logged = common::failed_start(&db.url);
    let expected = format!(
        "migration app/{} failed at line {}: view \"lists\" already exists (SQLite result code 1)",
        first.name,
        line_of(&first.sql, "CREATE TABLE \"lists\"")
    );
    assert!(logged.contains(&expected), "{logged}");
}

/// The line (from 1) of `sql` that starts with `start`.
fn line_of(sql: &str, start: &str) -> usize {
    sql.lines().position(|l| l.starts_with(start)).unwrap() + 1
}

#[cfg_attr(
    not(postgres),
    ignore = "needs PostgreSQL: set SYNC_TEST_POSTGRES_URL (.ci/run does)"
)]
#[tokio::test]
async fn a_migration_with_a_syntax_error_names_its_line() {
    let Some(db) = FreshDatabase::new(Backend::Postgres, "syntax_error") else {
        return;
    };
    let base = entities::app();
    let broken = Migration {
        version: 1,
        name: "0001_broken".into(),
        sql: "CREATE TABLE a (x BIGINT);\nCREATE TABLE b (x BIGINT);\nCREATE TABEL c (x BIGINT);"
            .into(),
    };
    let app: &'static App = Box::leak(Box::new(App {
        schema: base.schema.clone(),
        device_migrations: base.device_migrations,
        server_sqlite_migrations: base.server_sqlite_migrations,
        server_postgres_migrations: Box::leak(Box::new([broken])),
    }));
    let Err(e) = Server::open(&db.url, app, ServerConfig::default()).await else {
        panic!("the server started on a broken migration");
    };
    assert_eq!(
        e.to_string(),
        "migration app/0001_broken failed at line 3: syntax error at or near \"TABEL\" (SQLSTATE 42601)"
    );
    assert_eq!(
        db.text("SELECT string_agg(table_name, ',') FROM information_schema.tables WHERE table_schema = current_schema() AND table_name IN ('a', 'b')"),
        None,
        "the failed migration left nothing behind"
    );
}

#[cfg_attr(
    not(postgres),
    ignore = "needs PostgreSQL: set SYNC_TEST_POSTGRES_URL (.ci/run does)"
)]
#[test]
fn a_request_failing_in_postgres_is_logged_with_its_message_and_answered_generically() {
    let Some(db) = FreshDatabase::new(Backend::Postgres, "request_failing") else {
        return;
    };
    let (server, url) = common::server(&db.url);
    let (status, session) = common::http(
        &address(&url),
        "POST",
        "/api/auth/register",
        None,
        r#"{"email": "failing@example.org", "password": "12345678"}"#,
    );
    assert_eq!(status, 201, "{session}");
    // An operator's mistake under a running server: a table it reads is gone.
    db.execute("DROP TABLE list_items");
    let token = session["token"].as_str().unwrap();
    let (status, answer) = common::http(&address(&url), "GET", "/api/sync/pull", Some(token), "");
    assert_eq!(status, 500, "{answer}");
    assert!(!answer.to_string().contains("list_items"), "{answer}");
    let logged = server.wait_for("the failure's log line", |l| l.contains("request failed"));
    assert!(
        logged.contains("relation \"list_items\" does not exist (SQLSTATE 42P01)"),
        "{logged}"
    );
}
