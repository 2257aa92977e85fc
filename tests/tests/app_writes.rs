//! Writes the app makes with its own SQL, from a connection of its own (as its JavaScript
//! runtime does, docs/entities.md): an insert that leaves `dirty` at 0, an update and a soft delete
//! that do not touch it. Each reaches the account's other device after one sync of each, on
//! both server backends, also while the app keeps writing during the syncs. The runtime's own
//! applied pulls are not taken for local changes.

use rusqlite::Connection;
use tests::device::{Device, LiveServer};
use tests::fixtures::{live_values, profile, settings_profile};
use tests::server::Backend;

fn app_connection(d: &Device) -> Connection {
    let c = Connection::open(&d.path).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    c
}

fn names(d: &Device, table: &str) -> Vec<String> {
    live_values(d.store.connection(), table, "name")
}

async fn the_apps_own_writes_sync(backend: Backend) {
    let Some(srv) = LiveServer::start(backend, "apps_own_writes").await else {
        eprintln!("skipped: SYNC_TEST_POSTGRES_URL is not set");
        return;
    };
    let mut a = Device::new("app-writes-a");
    let s = a.store.insert(&mut settings_profile("Main")).unwrap();
    let p = a.store.insert(&mut profile("Ann", Some(s))).unwrap();
    a.connect(&srv.url, "writes@example.org", true).await;
    let mut b = Device::new("app-writes-b");
    b.connect(&srv.url, "writes@example.org", false).await;

    // The app's writes, as it makes them: dirty left at 0 (or not named at all).
    let app = app_connection(&a);
    app.execute(
        "INSERT INTO lists (profile_id, name, is_default, created_at, updated_at, dirty) \
         VALUES (?1, 'Watch later', 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 0)",
        [p],
    )
    .unwrap();
    app.execute(
        "INSERT INTO lists (profile_id, name, created_at, updated_at) \
         VALUES (?1, 'To delete', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
        [p],
    )
    .unwrap();
    a.sync().await.unwrap();
    b.sync().await.unwrap();
    assert_eq!(names(&b, "lists"), vec!["To delete", "Watch later"]);

    app.execute(
        "UPDATE profiles SET name = 'Ann B.', updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+1 second') WHERE id = ?1",
        [p],
    )
    .unwrap();
    app.execute(
        "UPDATE lists SET deleted_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+1 second'), \
         updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+1 second') WHERE name = 'To delete'",
        [],
    )
    .unwrap();
    a.sync().await.unwrap();
    b.sync().await.unwrap();
    assert_eq!(names(&b, "profiles"), vec!["Ann B."]);
    assert_eq!(names(&b, "lists"), vec!["Watch later"]);

    // What A pulls is not a local change: nothing waits on A after B's edit arrives.
    let b_list: i64 = b
        .store
        .connection()
        .query_row("SELECT id FROM lists WHERE name = 'Watch later'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let mut list: entities::List = b.store.get(b_list).unwrap().unwrap();
    list.name = "Later".into();
    b.store.update(&list).unwrap();
    b.sync().await.unwrap();
    a.sync().await.unwrap();
    assert_eq!(names(&a, "lists"), vec!["Later"]);
    let waiting: u64 = a.store.dirty_counts().unwrap().iter().map(|(_, n)| n).sum();
    assert_eq!(
        waiting, 0,
        "pulled versions are not captured as local writes"
    );

    // The app keeps writing while the runtime syncs: every row it wrote arrives.
    let path = a.path.clone();
    let writer = std::thread::spawn(move || {
        let c = Connection::open(&path).unwrap();
        c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
        for i in 0..40 {
            c.execute(
                "INSERT INTO watch_history (profile_id, meta_id, meta_type, season, episode, position, updated_at) \
                 VALUES (?1, 'tt0903747', 'series', 1, ?2, 0, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                (p, i + 1),
            )
            .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    });
    while !writer.is_finished() {
        a.sync().await.unwrap();
    }
    writer.join().unwrap();
    a.sync().await.unwrap();
    b.sync().await.unwrap();
    let history: i64 = b
        .store
        .connection()
        .query_row(
            "SELECT count(*) FROM watch_history WHERE deleted_at IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(history, 40);
}

#[tokio::test]
async fn the_apps_own_writes_sync_sqlite() {
    the_apps_own_writes_sync(Backend::Sqlite).await;
}

#[tokio::test]
async fn the_apps_own_writes_sync_postgres() {
    the_apps_own_writes_sync(Backend::Postgres).await;
}
