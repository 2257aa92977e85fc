//! The first device migration upgrades an existing pre-sync database in place.

use rusqlite::Connection;
use sync_runtime::schema::UPDATED_AT;
use sync_runtime::{Store, Timestamp};
use tests::{PRE_SYNC_SCHEMA, dump_table, populate_pre_sync};

fn temp_db() -> (tempdir::Dir, std::path::PathBuf) {
    let dir = tempdir::Dir::new();
    let path = dir.path().join("app.sqlite");
    (dir, path)
}

/// A throwaway folder removed on drop (std has none).
mod tempdir {
    pub struct Dir(std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            let p = std::env::temp_dir().join(format!("sync-test-{}", uuid_like()));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn uuid_like() -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!(
            "{}-{t}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }
}

fn app_columns(table: &sync_runtime::Table) -> Vec<String> {
    let mut cols = vec![table.id_column.clone()];
    cols.extend(table.columns.iter().map(|c| c.name.clone()));
    cols
}

#[test]
fn pre_sync_database_keeps_every_row_and_value_and_queues_all_for_upload() {
    let (_dir, path) = temp_db();
    let before_open = Timestamp::now();
    let schema = entities::schema();
    let before: Vec<_> = {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(PRE_SYNC_SCHEMA).unwrap();
        populate_pre_sync(&conn, 6);
        schema
            .tables
            .iter()
            .map(|t| dump_table(&conn, &t.name, &app_columns(t)))
            .collect()
    };
    let total: usize = before.iter().map(Vec::len).sum();
    assert!(
        total >= 300,
        "the fixture holds a few hundred rows, not {total}"
    );

    let store = Store::open(&path, entities::app()).unwrap();
    let conn = store.connection();
    for (t, rows_before) in schema.tables.iter().zip(&before) {
        let cols = app_columns(t);
        let after = dump_table(conn, &t.name, &cols);
        assert_eq!(
            after.len(),
            rows_before.len(),
            "{}: row count changed",
            t.name
        );
        for (old, new) in rows_before.iter().zip(&after) {
            for (i, name) in cols.iter().enumerate() {
                if name == UPDATED_AT && t.synced && old[i].is_none() {
                    // A missing stamp, which the merge needs, takes created_at, else now.
                    let created = t.column_index("created_at").map(|ci| old[ci + 1].clone());
                    match created.flatten() {
                        Some(c) => assert_eq!(new[i].as_ref(), Some(&c), "{}", t.name),
                        None => {
                            let got = Timestamp::parse_lenient(new[i].as_deref().unwrap()).unwrap();
                            assert!(got >= before_open.add_millis(-1000), "{}", t.name)
                        }
                    }
                    continue;
                }
                // Every value exactly as the app wrote it: its timestamps in its own text.
                assert_eq!(old[i], new[i], "{}.{name} changed", t.name);
            }
        }
        if t.synced {
            let (dirty, rows): (i64, i64) = conn
                .query_row(
                    &format!("SELECT sum(dirty), count(*) FROM \"{}\"", t.name),
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap();
            assert_eq!(
                dirty, rows,
                "{}: every existing row waits for the first upload",
                t.name
            );
        }
    }
    // The seed's sync_state row is kept and gains what the runtime needs.
    let device: String = conn
        .query_row("SELECT device_id FROM sync_state WHERE id = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(device, store.device_id());
    let violations: i64 = conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(violations, 0);
}

#[test]
fn running_the_migrations_again_changes_nothing() {
    let (_dir, path) = temp_db();
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(PRE_SYNC_SCHEMA).unwrap();
        populate_pre_sync(&conn, 2);
    }
    let schema = entities::schema();
    let first: Vec<_> = {
        let store = Store::open(&path, entities::app()).unwrap();
        let mut rows: Vec<_> = schema
            .synced()
            .map(|t| {
                dump_table(
                    store.connection(),
                    &t.name,
                    &[app_columns(t), vec!["remote_id".into(), "dirty".into()]].concat(),
                )
            })
            .collect();
        rows.push(vec![vec![Some(store.device_id().to_owned())]]);
        rows
    };
    let store = Store::open(&path, entities::app()).unwrap();
    let mut second: Vec<_> = schema
        .synced()
        .map(|t| {
            dump_table(
                store.connection(),
                &t.name,
                &[app_columns(t), vec!["remote_id".into(), "dirty".into()]].concat(),
            )
        })
        .collect();
    second.push(vec![vec![Some(store.device_id().to_owned())]]);
    assert_eq!(
        first, second,
        "reopening re-ran a migration or changed the device id"
    );
    let migrations: i64 = store
        .connection()
        .query_row(
            "SELECT count(*) FROM sync_migrations WHERE scope = 'app'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(migrations as usize, entities::app().device_migrations.len());
}

#[test]
fn a_failing_migration_leaves_the_database_as_it_was() {
    let (_dir, path) = temp_db();
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(PRE_SYNC_SCHEMA).unwrap();
        populate_pre_sync(&conn, 1);
        // An old app version kept two lists of one name under a profile; the synced schema's
        // natural key (profile_id, name) cannot hold both.
        conn.execute_batch(
            "CREATE TABLE lists_loose AS SELECT * FROM lists; DROP TABLE list_items; DROP TABLE lists;
             CREATE TABLE lists (id INTEGER PRIMARY KEY AUTOINCREMENT, profile_id INTEGER NOT NULL, name TEXT,
                 is_default BOOLEAN, created_at DATETIME, updated_at DATETIME);
             INSERT INTO lists SELECT * FROM lists_loose; DROP TABLE lists_loose;
             INSERT INTO lists (profile_id, name) VALUES (1, 'List 0');",
        )
        .unwrap();
    }
    let snapshot = |conn: &Connection| -> Vec<(String, String)> {
        let mut stmt = conn
            .prepare("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let (schema_before, profiles_before) = {
        let conn = Connection::open(&path).unwrap();
        (
            snapshot(&conn),
            dump_table(&conn, "profiles", &["id".into(), "updated_at".into()]),
        )
    };
    let err = Store::open(&path, entities::app()).unwrap_err();
    assert!(err.to_string().contains("0001_init"), "{err}");
    let conn = Connection::open(&path).unwrap();
    let schema_after: Vec<_> = snapshot(&conn)
        .into_iter()
        .filter(|(n, _)| !n.starts_with("sync_"))
        .collect();
    let schema_before: Vec<_> = schema_before
        .into_iter()
        .filter(|(n, _)| !n.starts_with("sync_"))
        .collect();
    assert_eq!(
        schema_before, schema_after,
        "the failed migration changed the app's tables"
    );
    assert_eq!(
        profiles_before,
        dump_table(&conn, "profiles", &["id".into(), "updated_at".into()])
    );
    let applied: i64 = conn
        .query_row(
            "SELECT count(*) FROM sync_migrations WHERE scope = 'app'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(applied, 0);
}

#[test]
fn the_upgrade_fires_no_cascade() {
    // Foreign keys on, as the app runs: a rebuild's DROP TABLE of a parent would delete its
    // children (the upgrade alters tables in place).
    let (_dir, path) = temp_db();
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
        conn.execute_batch(PRE_SYNC_SCHEMA).unwrap();
        populate_pre_sync(&conn, 3);
    }
    let count = |conn: &Connection, t: &str| -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))
            .unwrap()
    };
    let before: Vec<i64> = {
        let conn = Connection::open(&path).unwrap();
        ["watch_history", "list_items", "profile_addons", "profiles"]
            .iter()
            .map(|t| count(&conn, t))
            .collect()
    };
    let store = Store::open(&path, entities::app()).unwrap();
    let after: Vec<i64> = ["watch_history", "list_items", "profile_addons", "profiles"]
        .iter()
        .map(|t| count(store.connection(), t))
        .collect();
    assert_eq!(before, after);
    let with_parent: i64 = store
        .connection()
        .query_row(
            "SELECT count(*) FROM profiles WHERE settings_profile_id IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(with_parent, 3, "no SET NULL fired either");
}
