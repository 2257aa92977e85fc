//! The framework on a database the real app made and filled (tests/src/app_db.rs, after
//! docs/entities.md "The app's real database"): upgrade, connect one local owner, sync, and a second
//! device pulls. Every value the app wrote stays byte-identical on the first device, the app's
//! indexes, foreign keys and share tables stay, and the second device holds exactly that
//! owner's live rows. Through the real client over HTTP, on both server backends.

use rusqlite::Connection;
use std::collections::BTreeMap;
use tests::app_db::{self, GUEST, SIGNED_IN, SYNCED};
use tests::device::{Device, LiveServer};
use tests::fixtures::live_values;
use tests::server::Backend;

type Rows = BTreeMap<String, Vec<BTreeMap<String, Option<String>>>>;

/// Every row of every app table (not the runtime's), as text, by table and id.
fn dump(conn: &Connection) -> Rows {
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sync\\_%' ESCAPE '\\' \
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    tables
        .into_iter()
        .map(|t| {
            let mut stmt = conn
                .prepare(&format!("SELECT * FROM \"{t}\" ORDER BY rowid"))
                .unwrap();
            let names: Vec<String> = stmt.column_names().map(str::to_owned).collect();
            let rows = stmt
                .query_map([], |r| {
                    let mut m = BTreeMap::new();
                    for (i, n) in names.iter().enumerate() {
                        let v: rusqlite::types::Value = r.get(i)?;
                        m.insert(
                            n.clone(),
                            match v {
                                rusqlite::types::Value::Null => None,
                                rusqlite::types::Value::Integer(i) => Some(i.to_string()),
                                rusqlite::types::Value::Real(f) => Some(format!("{f:?}")),
                                rusqlite::types::Value::Text(s) => Some(s),
                                rusqlite::types::Value::Blob(b) => Some(format!("{b:?}")),
                            },
                        );
                    }
                    Ok(m)
                })
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            (t, rows)
        })
        .collect()
}

/// The app's own indexes and foreign keys, as SQLite keeps them.
fn app_schema(conn: &Connection) -> Vec<String> {
    let mut out: Vec<String> = conn
        .prepare("SELECT sql FROM sqlite_master WHERE type = 'index' AND name LIKE 'idx\\_%' ESCAPE '\\'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for t in [
        "profiles",
        "settings_profiles",
        "list_shares",
        "profile_shared_lists",
    ] {
        let fks: Vec<String> = conn
            .prepare(&format!("SELECT \"from\" || '->' || \"table\" || '.' || \"to\" || ' ' || on_delete FROM pragma_foreign_key_list('{t}')"))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        out.extend(fks.into_iter().map(|f| format!("{t}: {f}")));
    }
    out.sort();
    out
}

/// Whether `row` of `table` sits under a row the app had soft-deleted (its list, or its list's
/// or its own profile).
fn under_a_deleted_parent(
    rows: &Rows,
    table: &str,
    row: &BTreeMap<String, Option<String>>,
) -> bool {
    let parent = |t: &str, col: &str| -> Option<&BTreeMap<String, Option<String>>> {
        let id = row.get(col)?.as_ref()?;
        rows[t].iter().find(|r| r["id"].as_ref() == Some(id))
    };
    let deleted = |r: &BTreeMap<String, Option<String>>| r["deleted_at"].is_some();
    match table {
        "list_items" => parent("lists", "list_id")
            .is_some_and(|l| deleted(l) || under_a_deleted_parent(rows, "lists", l)),
        _ => parent("profiles", "profile_id").is_some_and(deleted),
    }
}

/// The live rows of `table` on a device, by a value the app shows.
fn shown(conn: &Connection, table: &str) -> Vec<String> {
    let col = match table {
        "settings_profiles" | "profiles" | "lists" => "name",
        "list_items" => "title",
        "watch_history" => "episode || ':' || position",
        "profile_addons" => "priority",
        "stream_settings" => "qualities",
        _ => "show_imdb_ratings",
    };
    live_values(conn, table, col)
}

async fn upgrade_connect_and_pull(backend: Backend) {
    let Some(srv) = LiveServer::start(backend, "real_app_database").await else {
        eprintln!("skipped: SYNC_TEST_POSTGRES_URL is not set");
        return;
    };
    let path = std::env::temp_dir().join(format!(
        "real-app-{}-{}.sqlite",
        std::process::id(),
        sync_runtime::server::db::new_id()
    ));
    let filled = app_db::create(&path);
    let (before, schema_before) = {
        let c = Connection::open(&path).unwrap();
        (dump(&c), app_schema(&c))
    };

    let mut a = Device::at(path.clone());
    let err = a
        .connect_with(&srv.url, "real@example.org", true, Default::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(SIGNED_IN) && err.contains(GUEST), "{err}");
    a.store.choose_owner(Some(SIGNED_IN)).unwrap();
    a.connect(&srv.url, "real@example.org", true).await;
    a.sync().await.unwrap();

    let after = dump(a.store.connection());
    assert_eq!(
        app_schema(a.store.connection()),
        schema_before,
        "the app's indexes and keys"
    );
    for (table, rows) in &before {
        let now = &after[table];
        assert_eq!(rows.len(), now.len(), "{table}: rows");
        for (old, new) in rows.iter().zip(now) {
            // A live row under a parent the app deleted may become a tombstone (the orphan
            // rule): its stamps are then the deletion's.
            let entombed = old.get("deleted_at").is_some_and(Option::is_none)
                && new.get("deleted_at").is_some_and(Option::is_some);
            if entombed {
                assert!(
                    under_a_deleted_parent(&before, table, old),
                    "{table} {:?} became a tombstone",
                    old.get("id")
                );
            }
            for (col, value) in old {
                // The runtime's own bookkeeping: remote ids it assigns, the dirty mark it clears.
                if SYNCED.contains(&table.as_str()) && (col == "remote_id" || col == "dirty") {
                    continue;
                }
                if entombed
                    && ["deleted_at", "updated_at", "created_at", "watched_at"]
                        .contains(&col.as_str())
                {
                    continue;
                }
                assert_eq!(value, &new[col], "{table}.{col} of row {:?}", old.get("id"));
            }
        }
    }

    // The second device: exactly the signed-in user's live rows, none of the guest's nor of
    // the profile the app deleted.
    let mut b = Device::new("real-app-b");
    b.connect(&srv.url, "real@example.org", false).await;
    let a_conn = a.store.connection();
    let b_conn = b.store.connection();
    let profiles = shown(b_conn, "profiles");
    assert_eq!(profiles, vec!["Zoë 🎬".to_owned()], "{profiles:?}");
    let live_history: i64 = a_conn
        .query_row(
            "SELECT count(*) FROM watch_history WHERE deleted_at IS NULL AND profile_id = ?1",
            [filled.profile],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(shown(b_conn, "watch_history").len() as i64, live_history);
    assert_eq!(shown(b_conn, "lists"), vec!["Favourites".to_owned()]);
    assert_eq!(
        shown(b_conn, "list_items"),
        vec!["Film 0 — «été»".to_owned(), "Film 1 — «été»".to_owned()]
    );
    for t in ["profile_addons", "stream_settings", "appearance_settings"] {
        assert!(!shown(b_conn, t).is_empty(), "{t}");
    }
    let guest_rows: i64 = b_conn
        .query_row(
            "SELECT count(*) FROM profiles WHERE name = 'Guest'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(guest_rows, 0, "the guest's rows never leave the device");
    let deleted: i64 = b_conn
        .query_row(
            "SELECT count(*) FROM profiles WHERE name = 'Old kids' AND deleted_at IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        deleted, 0,
        "a profile the app deleted stays deleted ({})",
        filled.deleted_profile
    );
    drop(a);
}

#[tokio::test]
async fn the_real_apps_database_sqlite() {
    upgrade_connect_and_pull(Backend::Sqlite).await;
}

#[tokio::test]
async fn the_real_apps_database_postgres() {
    upgrade_connect_and_pull(Backend::Postgres).await;
}
