//! An older `sync-server` on a database a newer build has migrated (a replica not yet upgraded
//! during a rolling upgrade, or a rollback): it serves what it knows and says so, leaving what
//! the newer build added as stored; where a column it uses is gone, it refuses to start, naming
//! both versions.

mod common;

use common::devices::Device;
use common::{Backend, FreshDatabase};
use std::collections::BTreeSet;
use sync_runtime::App;
use sync_runtime::migrate::Migration;
use sync_runtime::server::{Server, ServerConfig};

const NEWER: &str = "newer_release";

/// This build's newest server migration for `backend`.
fn newest(backend: Backend) -> &'static Migration {
    let app = entities::app();
    let migrations = match backend {
        Backend::Sqlite => app.server_sqlite_migrations,
        Backend::Postgres => app.server_postgres_migrations,
    };
    migrations.last().expect("the app has server migrations")
}

/// Migrates `db` as the server of a newer release would: this build's migrations, then one
/// more holding `sql`.
async fn migrate_as_newer_build(db: &FreshDatabase, sql: &str) {
    let base = entities::app();
    let with_newer = |ours: &'static [Migration]| -> &'static [Migration] {
        let mut all = ours.to_vec();
        all.push(Migration {
            version: newest(db.backend).version + 1,
            name: format!("{:04}_{NEWER}", newest(db.backend).version + 1).into(),
            sql: sql.to_owned().into(),
        });
        all.leak()
    };
    let newer: &'static App = Box::leak(Box::new(App {
        schema: base.schema.clone(),
        device_migrations: base.device_migrations,
        server_sqlite_migrations: with_newer(base.server_sqlite_migrations),
        server_postgres_migrations: with_newer(base.server_postgres_migrations),
    }));
    Server::open(&db.url, newer, ServerConfig::default())
        .await
        .expect("the newer build migrates");
}

/// What the older build says of the database's versions: both of them.
fn both_versions(backend: Backend) -> String {
    let ours = newest(backend);
    format!(
        "app is at migration {v} (`{v:04}_{NEWER}`) where this build knows up to {} (`{}`)",
        ours.version,
        ours.name,
        v = ours.version + 1,
    )
}

async fn an_older_build_serves_a_database_a_newer_build_added_to(backend: Backend) {
    let Some(db) = FreshDatabase::new(backend, "older_build_serves") else {
        return;
    };
    migrate_as_newer_build(
        &db,
        "ALTER TABLE profiles ADD COLUMN nickname TEXT; \
         CREATE TABLE watch_parties (remote_id TEXT PRIMARY KEY, name TEXT)",
    )
    .await;
    let older = common::start_server(&db.url, &[], "warn");
    let warning = older.wait_for("its warning", |l| l.contains("migrated by a newer build"));
    assert!(warning.contains(&both_versions(backend)), "{warning}");
    let url = common::listening_url(&older);

    let (mut a, mut b) = (Device::new("older-a"), Device::new("older-b"));
    a.connect(&url, "older@example.org", true).await;
    a.add_profile("Alice");
    a.sync().await;
    // A device of the newer release set the newer column, through a newer replica.
    db.execute("UPDATE profiles SET nickname = 'Ally'");
    a.rename_profile("Alice", "Alice B.");
    a.sync().await;
    b.connect(&url, "older@example.org", false).await;
    let names: BTreeSet<String> = b.profiles().into_values().collect();
    assert_eq!(names, BTreeSet::from(["Alice B.".to_owned()]));
    assert_eq!(
        db.text("SELECT nickname FROM profiles"),
        Some("Ally".to_owned()),
        "the older build's push left the newer column as stored"
    );
}

async fn an_older_build_refuses_a_database_where_a_column_it_uses_is_gone(backend: Backend) {
    let Some(db) = FreshDatabase::new(backend, "older_build_refuses") else {
        return;
    };
    migrate_as_newer_build(&db, "ALTER TABLE lists DROP COLUMN is_default").await;
    let logged = common::failed_start(&db.url);
    assert!(logged.contains(&both_versions(backend)), "{logged}");
    assert!(logged.contains("lists.is_default is gone"), "{logged}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_an_older_build_serves_a_database_a_newer_build_added_to() {
    an_older_build_serves_a_database_a_newer_build_added_to(Backend::Sqlite).await;
}

#[cfg_attr(
    not(postgres),
    ignore = "needs PostgreSQL: set SYNC_TEST_POSTGRES_URL (.ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_older_build_serves_a_database_a_newer_build_added_to() {
    an_older_build_serves_a_database_a_newer_build_added_to(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_an_older_build_refuses_a_database_where_a_column_it_uses_is_gone() {
    an_older_build_refuses_a_database_where_a_column_it_uses_is_gone(Backend::Sqlite).await;
}

#[cfg_attr(
    not(postgres),
    ignore = "needs PostgreSQL: set SYNC_TEST_POSTGRES_URL (.ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_older_build_refuses_a_database_where_a_column_it_uses_is_gone() {
    an_older_build_refuses_a_database_where_a_column_it_uses_is_gone(Backend::Postgres).await;
}

#[cfg_attr(
    not(postgres),
    ignore = "needs PostgreSQL: set SYNC_TEST_POSTGRES_URL (.ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_older_build_refuses_a_database_where_a_column_it_uses_was_retyped() {
    let Some(db) = FreshDatabase::new(Backend::Postgres, "older_build_retyped") else {
        return;
    };
    migrate_as_newer_build(
        &db,
        "ALTER TABLE list_items ALTER COLUMN imdb_rating TYPE TEXT",
    )
    .await;
    let logged = common::failed_start(&db.url);
    assert!(
        logged.contains(&both_versions(Backend::Postgres)),
        "{logged}"
    );
    assert!(
        logged.contains("list_items.imdb_rating is text, not DOUBLE PRECISION"),
        "{logged}"
    );
}
