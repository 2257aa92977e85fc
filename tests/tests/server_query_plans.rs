//! The server's natural-key lookup is served by the natural key's own index whether or not the
//! database has gathered statistics of the table (many PostgreSQL installs run with autovacuum
//! off; a shorter index on the key's first columns made each lookup read a whole profile), and
//! the server gathers PostgreSQL's statistics itself after migrating and after large uploads.

use rusqlite::Connection;
use sea_query::{PostgresQueryBuilder, SqliteQueryBuilder};
use serde_json::{Value as Json, json};
use std::time::{Duration, Instant};
use sync_runtime::Value;
use sync_runtime::migrate;
use sync_runtime::server::db::{Db, PgDb};
use sync_runtime::server::sync::{key_set_lookup, keys_document, natural_key_lookup};
use sync_runtime::server::{APP_SCOPE, Server, ServerConfig, apply_postgres};
use tests::server::{Backend, Cleanup, TestServer, at, fresh_database, id, postgres, row};

const ROWS: i64 = 10_000;

/// The lookup of one watched episode, as the server runs it.
fn lookup() -> sea_query::SelectStatement {
    let table = entities::app().schema.table("watch_history").unwrap();
    natural_key_lookup(
        table,
        0,
        &[
            Value::Text("user-1".into()),
            Value::Text("profile-1".into()),
            Value::Text("tt0000042".into()),
            Value::Integer(-1),
            Value::Integer(-1),
        ],
    )
}

/// Every index a PostgreSQL plan (EXPLAIN's JSON) reads.
fn plan_indexes(plan: &Json, out: &mut Vec<String>) {
    match plan {
        Json::Object(m) => {
            if let Some(Json::String(name)) = m.get("Index Name") {
                out.push(name.clone());
            }
            m.values().for_each(|v| plan_indexes(v, out));
        }
        Json::Array(a) => a.iter().for_each(|v| plan_indexes(v, out)),
        _ => {}
    }
}

/// The indexes PostgreSQL's plan of `explain` (an `EXPLAIN (FORMAT JSON) ...`) reads, and the plan.
async fn explain(client: &tokio_postgres::Client, explain: &str) -> (Vec<String>, Json) {
    // EXPLAIN answers `json`, which the simple protocol hands over as text.
    let plan: Json = client
        .simple_query(explain)
        .await
        .unwrap()
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .map(|text| serde_json::from_str(&text).unwrap())
        .unwrap();
    let mut indexes = Vec::new();
    plan_indexes(&plan, &mut indexes);
    (indexes, plan)
}

/// One profile's history of `rows` watched episodes, written straight into the table.
fn history_rows(rows: i64) -> String {
    format!(
        "INSERT INTO watch_history (remote_id, user_id, seq, device_id, profile_id, meta_id, \
         meta_type, season, episode, is_watched, updated_at) \
         SELECT 'r' || i, 'user-1', i, 'd', 'profile-1', 'tt' || lpad(i::text, 7, '0'), \
         'movie', -1, -1, false, '2026-11-28T07:00:00.000Z' FROM generate_series(1, {rows}) i"
    )
}

/// A fresh PostgreSQL database of the server's tables holding one profile's history of [`ROWS`]
/// episodes, written without ANALYZE: the table has no statistics.
async fn history_without_statistics(name: &str) -> Option<(tokio_postgres::Client, Cleanup)> {
    let (url, cleanup) = fresh_database(Backend::Postgres, name).await?;
    let client = postgres(&url).await;
    for m in entities::app().server_postgres_migrations {
        client.batch_execute(&m.sql).await.unwrap();
    }
    client.batch_execute(&history_rows(ROWS)).await.unwrap();
    let statistics: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stats WHERE schemaname = current_schema() \
             AND tablename = 'watch_history'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(statistics, 0, "the table has no statistics");
    Some((client, cleanup))
}

#[cfg_attr(
    not(postgres),
    ignore = "needs PostgreSQL: set SYNC_TEST_POSTGRES_URL (.ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_natural_key_lookup_uses_the_natural_key_index_without_statistics() {
    let name = "postgres_natural_key_lookup_uses_the_natural_key_index_without_statistics";
    let Some((client, _cleanup)) = history_without_statistics(name).await else {
        return;
    };

    // Planned for the values at hand, and as the generic plan a prepared statement turns to.
    let with_values = lookup().to_string(PostgresQueryBuilder);
    let (with_parameters, _) = lookup().build(PostgresQueryBuilder);
    client
        .batch_execute(&format!("PREPARE lookup AS {with_parameters}"))
        .await
        .unwrap();
    for (mode, explained) in [
        ("auto", format!("EXPLAIN (FORMAT JSON) {with_values}")),
        (
            "force_generic_plan",
            "EXPLAIN (FORMAT JSON) EXECUTE lookup('user-1', 'profile-1', 'tt0000042', -1, -1)"
                .to_owned(),
        ),
    ] {
        client
            .batch_execute(&format!("SET plan_cache_mode = {mode}"))
            .await
            .unwrap();
        let (indexes, plan) = explain(&client, &explained).await;
        assert_eq!(
            indexes,
            ["watch_history_natural_key_1"],
            "plan ({mode}): {plan}"
        );
    }
}

#[test]
fn sqlite_natural_key_lookup_uses_the_natural_key_index_without_statistics() {
    let mut conn = Connection::open_in_memory().unwrap();
    migrate::apply_sqlite(&mut conn, "app", entities::app().server_sqlite_migrations).unwrap();
    conn.execute_batch(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS}) \
         INSERT INTO watch_history (remote_id, user_id, seq, device_id, profile_id, meta_id, \
         meta_type, season, episode, is_watched, updated_at) \
         SELECT 'r' || i, 'user-1', i, 'd', 'profile-1', printf('tt%07d', i), 'movie', -1, -1, \
         FALSE, '2026-11-28T07:00:00.000Z' FROM n"
    ))
    .unwrap();
    let (sql, _) = lookup().build(SqliteQueryBuilder);
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let steps: Vec<String> = stmt
        .query_map(
            rusqlite::params!["user-1", "profile-1", "tt0000042", -1, -1],
            |r| r.get(3),
        )
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        steps,
        [
            "SEARCH watch_history USING INDEX watch_history_natural_key_1 (user_id=? AND profile_id=? AND meta_id=? AND season=? AND episode=?)"
        ],
    );
}

#[cfg_attr(
    not(postgres),
    ignore = "needs PostgreSQL: set SYNC_TEST_POSTGRES_URL (.ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_lookup_prepared_while_the_table_was_empty_still_uses_the_index() {
    let name = "postgres_a_lookup_prepared_while_the_table_was_empty_still_uses_the_index";
    let Some((url, _cleanup)) = fresh_database(Backend::Postgres, name).await else {
        return;
    };
    // A connection as the server makes them.
    let db = PgDb::connect(&url, 1).unwrap();
    let client = db.client().await.unwrap();
    for m in entities::app().server_postgres_migrations {
        client.batch_execute(&m.sql).await.unwrap();
    }
    // Statistics that say "empty", and the generic plan of a statement prepared then: the
    // planner believes every scan free.
    let (with_parameters, _) = lookup().build(PostgresQueryBuilder);
    let run = "EXECUTE lookup('user-1', 'profile-1', 'tt0000042', -1, -1)";
    client
        .batch_execute(&format!(
            "ANALYZE watch_history; SET plan_cache_mode = force_generic_plan; \
             PREPARE lookup AS {with_parameters}; {run}"
        ))
        .await
        .unwrap();
    // Few enough rows that no index grows a level (which would make PostgreSQL plan anew):
    // the plan made while the table was empty is the one that runs.
    client.batch_execute(&history_rows(50)).await.unwrap();
    let (indexes, plan) = explain(&client, &format!("EXPLAIN (FORMAT JSON) {run}")).await;
    assert_eq!(indexes, ["watch_history_natural_key_1"], "{plan}");
}

/// The rows PostgreSQL's statistics count in `table` (-1: never gathered).
async fn counted_rows(client: &tokio_postgres::Client, table: &str) -> f32 {
    client
        .query_one(
            "SELECT reltuples FROM pg_class WHERE oid = $1::text::regclass",
            &[&table],
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
async fn postgres_a_migration_gathers_the_statistics_of_tables_holding_rows() {
    let name = "postgres_a_migration_gathers_the_statistics_of_tables_holding_rows";
    let Some((url, _cleanup)) = fresh_database(Backend::Postgres, name).await else {
        return;
    };
    // A database of the first release, holding rows.
    let db = PgDb::connect(&url, 1).unwrap();
    let first = &entities::app().server_postgres_migrations[..1];
    apply_postgres(&db, APP_SCOPE, first).await.unwrap();
    let client = db.client().await.unwrap();
    client.batch_execute(&history_rows(30)).await.unwrap();
    assert_eq!(counted_rows(&client, "watch_history").await, -1.0);

    Server::open(&url, entities::app(), ServerConfig::default())
        .await
        .unwrap();
    assert_eq!(
        counted_rows(&client, "watch_history").await,
        30.0,
        "analyzed once migrated"
    );
    assert_eq!(
        counted_rows(&client, "lists").await,
        -1.0,
        "an empty table is left without statistics"
    );
}

#[cfg_attr(
    not(postgres),
    ignore = "needs PostgreSQL: set SYNC_TEST_POSTGRES_URL (.ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_statistics_are_gathered_after_large_uploads() {
    let config = ServerConfig {
        analyze_after_rows: 300,
        ..ServerConfig::default()
    };
    let name = "postgres_statistics_are_gathered_after_large_uploads";
    let Some(s) = TestServer::start_with(Backend::Postgres, name, entities::app(), config).await
    else {
        return;
    };
    let Db::Postgres(pg) = &s.server.db else {
        panic!("a PostgreSQL server");
    };
    let client = pg.client().await.unwrap();
    let (_, token) = s.register("stats@example.org").await;
    let (device, profile) = (id(), id());
    let history = |from: i64, to: i64| -> Json {
        (from..to)
            .map(|i| {
                row(
                    "watch_history",
                    &id(),
                    &at(i),
                    json!({"profile_id": profile, "meta_id": format!("tt{i}")}),
                )
            })
            .collect()
    };
    let profiles = json!([row("profiles", &profile, &at(0), json!({"name": "A"}))]);
    s.push(
        &token,
        &device,
        json!({"profiles": profiles, "watch_history": history(0, 200)}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        counted_rows(&client, "watch_history").await,
        -1.0,
        "not yet due"
    );
    s.push(&token, &device, json!({"watch_history": history(200, 300)}))
        .await;
    let started = Instant::now();
    while counted_rows(&client, "watch_history").await != 300.0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the statistics never counted the 300 rows"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg_attr(
    not(postgres),
    ignore = "needs PostgreSQL: set SYNC_TEST_POSTGRES_URL (.ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_batch_of_keys_is_looked_up_one_by_one_through_the_natural_key_index() {
    let name = "postgres_a_batch_of_keys_is_looked_up_one_by_one_through_the_natural_key_index";
    let Some((client, _cleanup)) = history_without_statistics(name).await else {
        return;
    };
    let table = entities::app().schema.table("watch_history").unwrap();
    let columns: Vec<&String> = table.natural_keys[0].iter().collect();
    let sql = key_set_lookup(table, 0, &columns);
    let key = |meta: &str| {
        vec![
            Value::Text("profile-1".into()),
            Value::Text(meta.into()),
            Value::Integer(-1),
            Value::Integer(-1),
        ]
    };
    // Two keys held, one not: the holders come back with their key columns.
    let keys = [key("tt0000042"), key("tt0009999"), key("tt9999999")];
    let document = keys_document(table, 0, keys.iter().map(Vec::as_slice));
    let rows = client.query(&sql, &[&"user-1", &document]).await.unwrap();
    let mut found: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(2))).collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("r42".to_owned(), "tt0000042".to_owned()),
            ("r9999".to_owned(), "tt0009999".to_owned())
        ]
    );
    // Another account holds nothing.
    let rows = client.query(&sql, &[&"user-2", &document]).await.unwrap();
    assert!(rows.is_empty());

    // Planned without statistics, for the values at hand and as a generic plan.
    client
        .batch_execute(&format!("PREPARE keys(text, text) AS {sql}"))
        .await
        .unwrap();
    let literal = document.replace('\'', "''");
    for mode in ["auto", "force_generic_plan"] {
        client
            .batch_execute(&format!("SET plan_cache_mode = {mode}"))
            .await
            .unwrap();
        let (indexes, plan) = explain(
            &client,
            &format!("EXPLAIN (FORMAT JSON) EXECUTE keys('user-1', '{literal}')"),
        )
        .await;
        assert_eq!(
            indexes,
            ["watch_history_natural_key_1"],
            "plan ({mode}): {plan}"
        );
    }
}
