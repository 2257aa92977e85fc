//! Adding a field to an entity is a struct change plus `cargo xtask migrations`, which writes an
//! ALTER TABLE migration for every target and leaves the earlier ones as they were; the check
//! fails until it is written.

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use sync_runtime::generate;
use sync_runtime::migrate::{self, Migration, Target};
use sync_runtime::schema::{Column, ColumnType, DefaultValue, Schema};

struct TempCrate(PathBuf);

impl TempCrate {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("sync-evolution-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempCrate(p)
    }
}

impl Drop for TempCrate {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn with_column(schema: &Schema, table: &str, column: Column) -> Schema {
    let mut tables = schema.tables.clone();
    tables
        .iter_mut()
        .find(|t| t.name == table)
        .unwrap()
        .columns
        .push(column);
    Schema::new(tables).unwrap()
}

fn read(dir: &Path, target: Target, stem: &str) -> String {
    std::fs::read_to_string(
        dir.join("migrations")
            .join(target.dir())
            .join(format!("{stem}.sql")),
    )
    .unwrap()
}

/// The committed files of `target` as migrations, the way the generated listing compiles them.
fn migrations(dir: &Path, target: Target) -> Vec<Migration> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("migrations").join(target.dir()))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let stem = p.file_stem().unwrap().to_str().unwrap().to_owned();
            let version = stem[..4].parse().unwrap();
            Migration {
                version,
                name: stem.into(),
                sql: std::fs::read_to_string(p).unwrap().into(),
            }
        })
        .collect()
}

fn columns(conn: &Connection, table: &str) -> Vec<String> {
    let mut stmt = conn
        .prepare(&format!("PRAGMA table_info({table})"))
        .unwrap();
    stmt.query_map([], |r| r.get(1))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn rating() -> Column {
    Column {
        name: "rating".into(),
        ty: ColumnType::Real,
        nullable: true,
        default: None,
        reference: None,
        role: Default::default(),
        since: 2,
        unit: None,
        datetime_text: Default::default(),
    }
}

#[test]
fn adding_a_field_writes_an_alter_table_migration_and_keeps_the_first() {
    let dir = TempCrate::new("add");
    let base = entities::schema();
    let written = generate::update(&dir.0, &base).unwrap();
    assert_eq!(
        written.len(),
        5,
        "three migrations, the snapshot and the listing: {written:?}"
    );
    generate::check(&dir.0, &base).unwrap();
    let first: Vec<String> = Target::ALL
        .iter()
        .map(|t| read(&dir.0, *t, "0001_init"))
        .collect();

    let changed = with_column(&base, "watch_history", rating());
    let err = generate::check(&dir.0, &changed).unwrap_err().to_string();
    assert!(
        err.contains("run `cargo xtask migrations` and commit"),
        "{err}"
    );

    generate::update(&dir.0, &changed).unwrap();
    generate::check(&dir.0, &changed).unwrap();
    let again: Vec<String> = Target::ALL
        .iter()
        .map(|t| read(&dir.0, *t, "0001_init"))
        .collect();
    assert_eq!(first, again, "the first migration is never rewritten");
    for target in Target::ALL {
        let sql = read(&dir.0, target, "0002_update_watch_history");
        assert!(
            sql.contains("ALTER TABLE \"watch_history\" ADD COLUMN \"rating\""),
            "{target:?}: {sql}"
        );
        assert!(
            !sql.contains("CREATE TABLE"),
            "{target:?}: no rebuild for a nullable column: {sql}"
        );
    }
    let listing = std::fs::read_to_string(dir.0.join("src/migrations.rs")).unwrap();
    assert!(listing.contains("0002_update_watch_history"));
    assert!(listing.starts_with("// Written by `cargo xtask migrations`"));
    // Nothing changed: nothing written.
    assert!(generate::update(&dir.0, &changed).unwrap().is_empty());

    // A device that ran 0001 and holds data takes 0002 and keeps its rows.
    let mut conn = Connection::open_in_memory().unwrap();
    let all = migrations(&dir.0, Target::Device);
    migrate::apply_sqlite(&mut conn, "app", &all[..1]).unwrap();
    conn.execute_batch(
        "INSERT INTO profiles (user_id, name, avatar) VALUES ('u', 'P', 'a');
         INSERT INTO watch_history (profile_id, meta_id, meta_type) VALUES (1, 'tt1', 'movie');",
    )
    .unwrap();
    assert_eq!(
        migrate::apply_sqlite(&mut conn, "app", &all).unwrap(),
        vec![2]
    );
    assert!(columns(&conn, "watch_history").contains(&"rating".to_owned()));
    let n: i64 = conn
        .query_row(
            "SELECT count(*) FROM watch_history WHERE rating IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);
    // And the server on SQLite.
    let mut server = Connection::open_in_memory().unwrap();
    migrate::apply_sqlite(
        &mut server,
        "app",
        &migrations(&dir.0, Target::ServerSqlite),
    )
    .unwrap();
    assert!(columns(&server, "watch_history").contains(&"rating".to_owned()));
}

#[test]
fn a_change_sqlite_cannot_alter_rebuilds_the_table_without_firing_cascades() {
    let dir = TempCrate::new("rebuild");
    let base = entities::schema();
    generate::update(&dir.0, &base).unwrap();
    // NOT NULL with a default computed at run time: SQLite cannot ADD COLUMN it.
    let seen = Column {
        name: "last_seen_at".into(),
        ty: ColumnType::DateTime,
        nullable: false,
        default: Some(DefaultValue::Now),
        reference: None,
        role: Default::default(),
        since: 2,
        unit: None,
        datetime_text: Default::default(),
    };
    let changed = with_column(&base, "profiles", seen);
    generate::update(&dir.0, &changed).unwrap();
    let device = read(&dir.0, Target::Device, "0002_update_profiles");
    assert!(device.contains(migrate::FOREIGN_KEYS_OFF), "{device}");
    assert!(
        device.contains("CREATE TABLE \"profiles__sync_new\""),
        "{device}"
    );
    let pg = read(&dir.0, Target::ServerPostgres, "0002_update_profiles");
    assert!(
        pg.contains("ALTER TABLE \"profiles\" ADD COLUMN \"last_seen_at\""),
        "{pg}"
    );

    let mut conn = Connection::open_in_memory().unwrap();
    conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
    let all = migrations(&dir.0, Target::Device);
    migrate::apply_sqlite(&mut conn, "app", &all[..1]).unwrap();
    conn.execute_batch(
        "INSERT INTO profiles (user_id, name, avatar) VALUES ('u', 'P', 'a');
         INSERT INTO lists (profile_id, name) VALUES (1, 'L');
         INSERT INTO watch_history (profile_id, meta_id, meta_type) VALUES (1, 'tt1', 'movie');",
    )
    .unwrap();
    migrate::apply_sqlite(&mut conn, "app", &all).unwrap();
    let children: i64 = conn
        .query_row(
            "SELECT (SELECT count(*) FROM lists) + (SELECT count(*) FROM watch_history)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        children, 2,
        "dropping the old profiles table fired no cascade"
    );
    let fk: bool = conn
        .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
        .unwrap();
    assert!(fk, "foreign keys are back on after the rebuild");
    let stamped: String = conn
        .query_row("SELECT last_seen_at FROM profiles", [], |r| r.get(0))
        .unwrap();
    assert!(
        sync_runtime::Timestamp::parse_wire(&stamped).is_ok(),
        "{stamped}"
    );
    let mut server = Connection::open_in_memory().unwrap();
    migrate::apply_sqlite(
        &mut server,
        "app",
        &migrations(&dir.0, Target::ServerSqlite),
    )
    .unwrap();
}

#[test]
fn removing_a_table_is_refused_with_a_reason() {
    let dir = TempCrate::new("remove");
    let base = entities::schema();
    generate::update(&dir.0, &base).unwrap();
    let fewer = Schema::new(
        base.tables
            .iter()
            .filter(|t| t.name != "list_items")
            .cloned()
            .collect(),
    )
    .unwrap();
    let err = generate::update(&dir.0, &fewer).unwrap_err().to_string();
    assert!(
        err.contains("list_items") && err.contains("removed"),
        "{err}"
    );
}

#[cfg_attr(
    not(postgres),
    ignore = "needs PostgreSQL: set SYNC_TEST_POSTGRES_URL (.ci/run does)"
)]
#[tokio::test(flavor = "current_thread")]
async fn the_added_column_migrates_postgres_too() {
    let Some(url) = tests::postgres_url("the_added_column_migrates_postgres_too") else {
        return;
    };
    let dir = TempCrate::new("pg");
    let base = entities::schema();
    generate::update(&dir.0, &base).unwrap();
    generate::update(&dir.0, &with_column(&base, "watch_history", rating())).unwrap();
    let client = tests::server::postgres(&url).await;
    let ns = format!("evolution_test_{}", std::process::id());
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {ns} CASCADE; CREATE SCHEMA {ns}; SET search_path TO {ns}"
        ))
        .await
        .unwrap();
    for m in migrations(&dir.0, Target::ServerPostgres) {
        client
            .batch_execute(&format!("BEGIN; {} COMMIT;", m.sql))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", m.name));
    }
    let ty: String = client
        .query_one(
            "SELECT data_type::text FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'watch_history' AND column_name = 'rating'",
            &[&ns],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ty, "double precision");
    client
        .batch_execute(&format!("DROP SCHEMA {ns} CASCADE"))
        .await
        .unwrap();
}
