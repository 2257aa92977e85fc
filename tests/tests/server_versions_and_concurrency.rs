//! Schema versions served side by side, and many devices at once.

use axum::http::{Method, StatusCode};
use serde_json::{Value as Json, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use sync_runtime::App;
use sync_runtime::migrate::{self, Migration};
use sync_runtime::schema::{Column, ColumnType, Schema};
use sync_runtime::server::ServerConfig;
use tests::server::{Backend, TestServer, at, id, row};

/// The app with one more column, added in schema version 2.
fn app_v2() -> &'static App {
    static APP: std::sync::OnceLock<&'static App> = std::sync::OnceLock::new();
    APP.get_or_init(|| {
        let mut tables = entities::schema().tables;
        let t = tables.iter_mut().find(|t| t.name == "lists").unwrap();
        t.columns.push(Column {
            name: "colour".into(),
            ty: ColumnType::Text,
            nullable: true,
            default: None,
            reference: None,
            role: Default::default(),
            since: 2,
            unit: None,
            datetime_text: Default::default(),
        });
        let v2 = Schema::new(tables).unwrap();
        let step = migrate::plan(Some(&entities::schema()), &v2)
            .unwrap()
            .unwrap();
        let with = |first: &'static [Migration], sql: String| -> &'static [Migration] {
            let mut all = first.to_vec();
            let version = first.len() as u32 + 1;
            all.push(Migration {
                version,
                name: format!("{version:04}_colour").into(),
                sql: sql.into(),
            });
            Box::leak(all.into_boxed_slice())
        };
        let base = entities::app();
        Box::leak(Box::new(App {
            schema: v2,
            device_migrations: with(base.device_migrations, step.device),
            server_sqlite_migrations: with(base.server_sqlite_migrations, step.server_sqlite),
            server_postgres_migrations: with(base.server_postgres_migrations, step.server_postgres),
        }))
    })
}

async fn an_older_client_is_served_the_columns_it_knows(backend: Backend) {
    let Some(s) =
        TestServer::start_with(backend, "versions", app_v2(), ServerConfig::default()).await
    else {
        return;
    };
    let (_, token) = s.register("versions@example.org").await;
    let (old, new) = (id(), id());
    let (profile, list) = (id(), id());
    let v1 = |body: Json| json!({"device_id": old, "schema_version": 1, "changes": body});
    let (st, b) = s
        .call(Method::POST, "/api/sync/push", Some(&token), Some(v1(json!({
            "profiles": [row("profiles", &profile, &at(0), json!({"name": "P", "avatar": "p"}))],
            "lists": [row("lists", &list, &at(0), json!({"profile_id": profile, "name": "L"}))],
        }))))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    // The new client sets the new column.
    let mut l2 = row(
        "lists",
        &list,
        &at(10),
        json!({"profile_id": profile, "name": "L"}),
    );
    l2["colour"] = json!("teal");
    let (st, b) = s
        .call(
            Method::POST,
            "/api/sync/push",
            Some(&token),
            Some(json!({"device_id": new, "schema_version": 2, "changes": {"lists": [l2]}})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    // The old client edits the list; it cannot send `colour`, which stays as stored.
    let (st, b) = s
        .call(Method::POST, "/api/sync/push", Some(&token), Some(v1(json!({"lists": [row("lists", &list, &at(20), json!({"profile_id": profile, "name": "Renamed"}))]}))))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (st, v1_page) = s.pull_as_version(&token, "1").await;
    assert_eq!(st, StatusCode::OK);
    let v1_list = &v1_page["changes"]["lists"][0];
    assert_eq!(v1_list["name"], "Renamed");
    assert!(
        v1_list.get("colour").is_none(),
        "a v1 client never sees a v2 column: {v1_list}"
    );
    let (_, v2_page) = s
        .call(Method::GET, "/api/sync/pull", Some(&token), None)
        .await;
    assert_eq!(
        v2_page["changes"]["lists"][0]["colour"], "teal",
        "kept as stored"
    );
    assert_eq!(v2_page["changes"]["lists"][0]["name"], "Renamed");
    // A v1 push of a v2 column is an unknown column.
    let mut bad = row(
        "lists",
        &list,
        &at(30),
        json!({"profile_id": profile, "name": "L"}),
    );
    bad["colour"] = json!("red");
    let (st, _) = s
        .call(
            Method::POST,
            "/api/sync/push",
            Some(&token),
            Some(v1(json!({"lists": [bad]}))),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    // An upgraded client's old cursor is refused: it pulls everything again.
    let cursor = v1_page["cursor"].as_str().unwrap();
    let (st, b) = s.pull_query(&token, &format!("since={cursor}")).await;
    assert_eq!(
        (st, b["error"].as_str()),
        (StatusCode::GONE, Some("cursor_expired"))
    );
    // Versions outside what the server serves.
    let min2 = ServerConfig {
        min_schema_version: 2,
        ..ServerConfig::default()
    };
    let Some(s2) = TestServer::start_with(backend, "versions_min", app_v2(), min2).await else {
        return;
    };
    let (_, t2) = s2.register("min@example.org").await;
    let (st, b) = s2.pull_as_version(&t2, "1").await;
    assert_eq!(
        (st, b["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("unsupported_schema"))
    );
    let (_, health) = s2.call(Method::GET, "/api/health", None, None).await;
    assert_eq!(
        (
            health["schema_version"].as_u64(),
            health["min_schema_version"].as_u64()
        ),
        (Some(2), Some(2))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_client_is_served_the_columns_it_knows_sqlite() {
    an_older_client_is_served_the_columns_it_knows(Backend::Sqlite).await;
}

#[cfg_attr(
    not(postgres),
    ignore = "needs PostgreSQL: set SYNC_TEST_POSTGRES_URL (.ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_client_is_served_the_columns_it_knows_postgres() {
    an_older_client_is_served_the_columns_it_knows(Backend::Postgres).await;
}

/// Many devices of one user push at once while others pull in a loop; at the end every puller
/// holds every row.
async fn concurrent_pushers_and_pullers_lose_nothing(backend: Backend) {
    let Some(s) = TestServer::start(backend, "concurrency").await else {
        return;
    };
    let s = Arc::new(s);
    let (_, token) = s.register("busy@example.org").await;
    let profile = id();
    s.push(&token, &id(), json!({"profiles": [row("profiles", &profile, &at(0), json!({"name": "P", "avatar": "p"}))]})).await;
    let (pushers, batches, per_batch): (usize, usize, i64) = (6, 8, 10);
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut pulls = Vec::new();
    for _ in 0..2 {
        let (s, token, done) = (s.clone(), token.clone(), done.clone());
        pulls.push(tokio::spawn(async move {
            let device = id();
            let mut seen = BTreeSet::new();
            let mut cursor: Option<String> = None;
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst) == pushers;
                let (rows, c) = s
                    .pull_all(&token, cursor.as_deref(), 7, Some(&device))
                    .await;
                cursor = Some(c);
                seen.extend(
                    rows.into_iter()
                        .filter(|(t, _)| t == "watch_history")
                        .map(|(_, r)| r["remote_id"].as_str().unwrap().to_owned()),
                );
                if finished {
                    return seen;
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut pushes = Vec::new();
    for p in 0..pushers {
        let (s, token, done, profile) = (s.clone(), token.clone(), done.clone(), profile.clone());
        pushes.push(tokio::spawn(async move {
            let device = id();
            let mut ids = Vec::new();
            for b in 0..batches {
                let rows: Vec<Json> = (0..per_batch)
                    .map(|i| {
                        let rid = id();
                        ids.push(rid.clone());
                        row("watch_history", &rid, &at(i), json!({"profile_id": profile, "meta_id": format!("tt{p}-{b}-{i}"), "meta_type": "movie"}))
                    })
                    .collect();
                let (st, body) = s.push_raw(&token, &device, json!({"watch_history": rows})).await;
                assert_eq!(st, StatusCode::OK, "{body}");
            }
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            ids
        }));
    }
    let mut all = BTreeSet::new();
    for p in pushes {
        all.extend(p.await.unwrap());
    }
    assert_eq!(all.len(), pushers * batches * per_batch as usize);
    for p in pulls {
        let seen = p.await.unwrap();
        assert_eq!(
            seen.len(),
            all.len(),
            "a puller missed {} rows",
            all.len() - seen.len()
        );
        assert_eq!(seen, all);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushers_and_pullers_lose_nothing_sqlite() {
    concurrent_pushers_and_pullers_lose_nothing(Backend::Sqlite).await;
}

#[cfg_attr(
    not(postgres),
    ignore = "needs PostgreSQL: set SYNC_TEST_POSTGRES_URL (.ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushers_and_pullers_lose_nothing_postgres() {
    concurrent_pushers_and_pullers_lose_nothing(Backend::Postgres).await;
}
