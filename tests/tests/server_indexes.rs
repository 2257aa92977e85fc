//! The server's indexes after every committed migration, on both backends: no index repeats the
//! start of another (a planner without statistics may pick the shorter one for a lookup meant
//! for the longer), the lookups of cascades still have an index, and the migration that dropped
//! the repeated ones keeps every row.

use rusqlite::Connection;
use std::collections::BTreeSet;
use sync_runtime::migrate::{self, Migration};
use sync_runtime::schema::Table;
use tests::server::{Backend, fresh_database, postgres};

type Columns = Vec<String>;

/// The indexes the server's table `t` should have, as column lists.
fn expected(t: &Table) -> BTreeSet<Columns> {
    let cols = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Columns>();
    let mut want = BTreeSet::from([cols(&["remote_id"]), cols(&["user_id", "seq"])]);
    for key in &t.natural_keys {
        want.insert(
            std::iter::once("user_id".to_owned())
                .chain(key.iter().cloned())
                .collect(),
        );
    }
    for (c, _) in t.references().filter(|(c, _)| c.on_wire()) {
        // Cascades find children by (user_id, reference): a natural key starting with the
        // reference serves that, else the reference has its own index.
        if !t.natural_keys.iter().any(|k| k[0] == c.name) {
            want.insert(cols(&["user_id", &c.name]));
        }
    }
    want
}

fn check(table: &str, got: Vec<Columns>) {
    let t = entities::app().schema.table(table).unwrap();
    for a in &got {
        for b in got.iter().filter(|b| *b != a) {
            assert!(
                !b.starts_with(a),
                "{table}: index {a:?} repeats the start of {b:?}"
            );
        }
    }
    let got: BTreeSet<Columns> = got.into_iter().collect();
    assert_eq!(got, expected(t), "indexes of {table}");
}

fn sqlite_indexes(conn: &Connection, table: &str) -> Vec<Columns> {
    tests::sqlite_indexes(conn, table)
        .into_iter()
        .map(|i| i.columns)
        .collect()
}

/// One watched episode, written by the first migration's schema.
const HISTORY_ROW: &str = "INSERT INTO watch_history (remote_id, user_id, seq, device_id, \
    profile_id, meta_id, meta_type, season, episode, is_watched, updated_at) VALUES ('r1', 'u1', \
    1, 'd1', 'p1', 'tt1', 'movie', -1, -1, FALSE, '2026-11-28T07:00:00.000Z')";

fn first_and_rest(all: &'static [Migration]) -> (&'static [Migration], &'static [Migration]) {
    assert!(all.len() > 1, "a migration after the first");
    all.split_at(1)
}

#[test]
fn sqlite_server_indexes_repeat_no_start_of_another() {
    let mut conn = Connection::open_in_memory().unwrap();
    let (first, _) = first_and_rest(entities::app().server_sqlite_migrations);
    migrate::apply_sqlite(&mut conn, "app", first).unwrap();
    conn.execute_batch(HISTORY_ROW).unwrap();
    migrate::apply_sqlite(&mut conn, "app", entities::app().server_sqlite_migrations).unwrap();
    for t in entities::app().schema.synced() {
        check(&t.name, sqlite_indexes(&conn, &t.name));
    }
    let kept: i64 = conn
        .query_row(
            "SELECT count(*) FROM watch_history WHERE remote_id = 'r1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kept, 1, "the migration keeps the rows");
}

#[cfg_attr(
    not(postgres),
    ignore = "needs PostgreSQL: set SYNC_TEST_POSTGRES_URL (.ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_server_indexes_repeat_no_start_of_another() {
    let name = "postgres_server_indexes_repeat_no_start_of_another";
    let Some((url, _cleanup)) = fresh_database(Backend::Postgres, name).await else {
        return;
    };
    let client = postgres(&url).await;
    let (first, rest) = first_and_rest(entities::app().server_postgres_migrations);
    for m in first {
        client.batch_execute(&m.sql).await.unwrap();
    }
    client.batch_execute(HISTORY_ROW).await.unwrap();
    for m in rest {
        client
            .batch_execute(&format!("BEGIN; {} COMMIT;", m.sql))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", m.name));
    }
    for t in entities::app().schema.synced() {
        let got: Vec<Columns> = client
            .query(
                "SELECT array_agg(a.attname::text ORDER BY k.ord) FROM pg_index ix \
                 JOIN pg_class c ON c.oid = ix.indrelid \
                 JOIN LATERAL unnest(ix.indkey) WITH ORDINALITY AS k(attnum, ord) ON true \
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum \
                 WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = $1 \
                 GROUP BY ix.indexrelid",
                &[&t.name],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        check(&t.name, got);
    }
    let kept: i64 = client
        .query_one(
            "SELECT count(*) FROM watch_history WHERE remote_id = 'r1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 1, "the migration keeps the rows");
}
