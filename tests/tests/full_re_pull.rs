//! A full pull, first or after a 410, over many pages: it never leaves out the caller's own
//! writes, so the device's sweep at its end removes nothing the server still holds; and a
//! cursor beyond the account's sequence (a server restored from an earlier copy) is a 410 that
//! makes devices upload again what the server lost.

use axum::http::StatusCode;
use serde_json::{Value as Json, json};
use std::collections::HashSet;
use sync_runtime::Timestamp;
use sync_runtime::client::{self, Activity};
use tests::device::{Device, LiveServer};
use tests::faulty::{FaultyTransport, sync_or_kill};
use tests::fixtures::{history, live_count, profile};
use tests::server::{Backend, TestServer, at, id, row};
use tests::{by_backend, on_both_backends};

/// `n` watch_history rows under `profile`, as pushed by a device.
fn history_rows(profile: &str, n: usize) -> Vec<Json> {
    (0..n)
        .map(|i| {
            row(
                "watch_history",
                &id(),
                &at(i as i64),
                json!({"profile_id": profile, "meta_id": format!("tt{i}"), "season": 1, "episode": i}),
            )
        })
        .collect()
}

/// Every row of every page, and each page's cursor, of a pull started without `since`.
async fn full_pull_pages(
    s: &TestServer,
    token: &str,
    device: &str,
    limit: usize,
) -> Vec<(Vec<String>, String)> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let (st, b) = s
            .pull_page(token, cursor.as_deref(), Some(limit), Some(device))
            .await;
        assert_eq!(st, StatusCode::OK, "{b}");
        let ids = b["changes"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|l| l.as_array().unwrap())
            .map(|r| r["remote_id"].as_str().unwrap().to_owned())
            .collect();
        let next = b["cursor"].as_str().unwrap().to_owned();
        pages.push((ids, next.clone()));
        if !b["has_more"].as_bool().unwrap() {
            return pages;
        }
        cursor = Some(next);
    }
}

on_both_backends!(
    a_full_pull_returns_the_callers_own_writes_on_every_page,
    own_writes_on_every_page
);
async fn own_writes_on_every_page(s: TestServer) {
    let (_, token) = s.register("own@example.org").await;
    let device = id();
    let p = id();
    s.push(
        &token,
        &device,
        json!({"profiles": [row("profiles", &p, &at(0), json!({"name": "A"}))]}),
    )
    .await;
    let rows = history_rows(&p, 2500);
    let pushed: HashSet<String> = rows
        .iter()
        .map(|r| r["remote_id"].as_str().unwrap().to_owned())
        .collect();
    for chunk in rows.chunks(1000) {
        s.push(&token, &device, json!({"watch_history": chunk}))
            .await;
    }

    let pages = full_pull_pages(&s, &token, &device, 1000).await;
    assert_eq!(pages.len(), 3, "2,501 rows in pages of 1,000");
    let mut seen = HashSet::new();
    for (ids, _) in &pages {
        assert!(
            !ids.is_empty(),
            "no page of a full pull is emptied by device_id"
        );
        seen.extend(ids.iter().cloned());
    }
    assert!(
        pushed.is_subset(&seen),
        "every row the caller pushed came back"
    );
    assert!(seen.contains(&p));
    assert_eq!(seen.len(), 2501);

    // After the last page the pull is incremental again: the caller's own writes are left out.
    let last = &pages.last().unwrap().1;
    s.push(
        &token,
        &device,
        json!({"watch_history": history_rows(&p, 1).iter().map(|r| {
            let mut r = r.clone();
            r["meta_id"] = json!("later");
            r
        }).collect::<Vec<_>>()}),
    )
    .await;
    let (rows, _) = s.pull_all(&token, Some(last), 1000, Some(&device)).await;
    assert!(
        rows.is_empty(),
        "an incremental pull leaves out own writes: {rows:?}"
    );
}

on_both_backends!(
    a_tombstone_written_during_a_full_pull_reaches_a_later_page,
    tombstone_during_full_pull
);
async fn tombstone_during_full_pull(s: TestServer) {
    let (_, token) = s.register("tomb@example.org").await;
    let device = id();
    let p = id();
    let rows = history_rows(&p, 5);
    s.push(
        &token,
        &device,
        json!({"profiles": [row("profiles", &p, &at(0), json!({"name": "A"}))]}),
    )
    .await;
    s.push(&token, &device, json!({"watch_history": rows}))
        .await;
    // A tombstone from before the pull began is left out of it.
    let gone = row(
        "lists",
        &id(),
        &at(1),
        json!({"profile_id": p, "name": "old"}),
    );
    s.push(&token, &device, json!({"lists": [gone.clone()]}))
        .await;
    let mut dead = gone.clone();
    dead["updated_at"] = json!(at(2));
    dead["deleted_at"] = json!(at(2));
    s.push(&token, &device, json!({"lists": [dead]})).await;

    // The first page holds the profile and the first history row, live.
    let (st, page) = s.pull_page(&token, None, Some(2), Some(&device)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        page["changes"]["watch_history"][0]["remote_id"],
        rows[0]["remote_id"]
    );
    let cursor = page["cursor"].as_str().unwrap().to_owned();
    assert!(
        cursor.contains(".f"),
        "a full pull's cursor says so: {cursor}"
    );

    // The same device deletes that row before the next page.
    let mut tomb = rows[0].clone();
    tomb["updated_at"] = json!(Timestamp::now().to_wire());
    tomb["deleted_at"] = json!(Timestamp::now().to_wire());
    s.push(&token, &device, json!({"watch_history": [tomb]}))
        .await;

    let (later, _) = s.pull_all(&token, Some(&cursor), 2, Some(&device)).await;
    let tombstones: Vec<&str> = later
        .iter()
        .filter(|(_, r)| !r["deleted_at"].is_null())
        .map(|(_, r)| r["remote_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        tombstones,
        [rows[0]["remote_id"].as_str().unwrap()],
        "the later tombstone is delivered, the older one is not"
    );
    assert_eq!(
        later.len(),
        5,
        "four live rows and the tombstone: {later:?}"
    );
}

on_both_backends!(
    a_cursor_beyond_the_accounts_sequence_is_410_ahead,
    cursor_ahead
);
async fn cursor_ahead(s: TestServer) {
    let (_, token) = s.register("ahead@example.org").await;
    let device = id();
    let p = id();
    s.push(
        &token,
        &device,
        json!({"profiles": [row("profiles", &p, &at(0), json!({"name": "A"}))]}),
    )
    .await;
    let (_, cursor) = s.pull_all(&token, None, 10, None).await;
    let (st, b) = s.pull_page(&token, Some(&cursor), None, None).await;
    assert_eq!(st, StatusCode::OK, "the account's own cursor is fine: {b}");
    for forged in ["c1.1.2", "c1.1.999999", "c1.1.0.f2", "c1.1.2.f0"] {
        let (st, b) = s.pull_page(&token, Some(forged), None, None).await;
        assert_eq!(st, StatusCode::GONE, "{forged}: {b}");
        assert_eq!(b["error"], "cursor_expired");
        assert_eq!(b["reason"], "ahead", "{forged}");
    }
    // Another account's sequence does not make this cursor valid.
    let (_, other) = s.register("other@example.org").await;
    let (st, _) = s.pull_page(&other, Some(&cursor), None, None).await;
    assert_eq!(st, StatusCode::GONE);
}

fn clean_count(d: &Device, table: &str) -> i64 {
    d.store
        .connection()
        .query_row(
            &format!("SELECT count(*) FROM {table} WHERE deleted_at IS NULL AND NOT dirty"),
            [],
            |r| r.get(0),
        )
        .unwrap()
}

by_backend!(
    a_full_re_pull_after_410_keeps_every_row_the_device_pushed,
    keeps_own_rows
);
async fn keeps_own_rows(backend: Backend) {
    let Some(srv) = LiveServer::start(backend, "full_re_pull_keeps_own_rows").await else {
        return;
    };
    let mut a = Device::new(&format!("repull-a-{backend:?}"));
    a.limits.pull_limit = 1000;
    a.connect(&srv.url, "repull@example.org", true).await;
    let p = a.store.insert(&mut profile("Alice", None)).unwrap();
    for i in 0..2500 {
        a.store
            .insert(&mut history(p, &format!("tt{i}"), 1, i))
            .unwrap();
    }
    let r = a.sync().await.unwrap();
    assert_eq!(r.pushed, 2501);
    assert_eq!(clean_count(&a, "watch_history"), 2500);

    // Another device deletes a record after A's cursor, and the server purges that
    // tombstone: A's cursor is now below the purge watermark.
    let mut b = Device::new(&format!("repull-b-{backend:?}"));
    b.connect(&srv.url, "repull@example.org", false).await;
    let other = b.store.insert(&mut profile("Bob", None)).unwrap();
    b.sync().await.unwrap();
    b.store.delete::<entities::Profile>(other).unwrap();
    b.sync().await.unwrap();
    let server = srv.server.clone().unwrap();
    let purged = server
        .purge_tombstones(Timestamp::now().add_millis(86_400_000))
        .await
        .unwrap();
    assert!(purged >= 1);

    let r = a.sync().await.unwrap();
    assert!(r.full_pull, "the 410 restarted a full pull: {r:?}");
    assert!(r.pages >= 3, "the full pull spans pages: {r:?}");
    assert_eq!(live_count(&a.store, "watch_history"), 2500, "{backend:?}");
    assert_eq!(clean_count(&a, "watch_history"), 2500, "{backend:?}");
    assert_eq!(live_count(&a.store, "profiles"), 1, "Bob's profile is gone");
    let status = client::status(&a.store, Activity::Idle).unwrap();
    assert!(status.pending.values().all(|n| *n == 0), "{status:?}");
}

by_backend!(
    an_interrupted_full_re_pull_resumes_without_losing_own_rows,
    interrupted_full_re_pull
);
async fn interrupted_full_re_pull(backend: Backend) {
    let Some(srv) = LiveServer::start(backend, "interrupted_full_re_pull").await else {
        return;
    };
    let mut a = Device::new(&format!("resume-a-{backend:?}"));
    a.connect(&srv.url, "resume@example.org", true).await;
    let p = a.store.insert(&mut profile("Alice", None)).unwrap();
    for i in 0..300 {
        a.store
            .insert(&mut history(p, &format!("tt{i}"), 1, i))
            .unwrap();
    }
    a.sync().await.unwrap();
    a.store.restart_full_pull().unwrap();
    // The device pulls two pages of 100 through the real client and is killed.
    let url = a.store.session().unwrap().0.unwrap();
    let limits = client::Limits {
        push_batch: 1000,
        pull_limit: 100,
    };
    let killed = sync_or_kill(&mut a.store, FaultyTransport::new(&url, 0), limits, Some(2));
    assert!(killed.await.is_none(), "the kill struck mid-pull");
    a.restart();
    a.limits.pull_limit = 100;
    let r = a.sync().await.unwrap();
    assert!(r.full_pull);
    assert_eq!(live_count(&a.store, "watch_history"), 300, "{backend:?}");
    assert_eq!(clean_count(&a, "watch_history"), 300, "{backend:?}");
}

by_backend!(
    devices_upload_again_what_a_server_restored_from_a_backup_lost,
    restored_backup
);
async fn restored_backup(backend: Backend) {
    let Some(mut srv) = LiveServer::start(backend, "restored_backup").await else {
        return;
    };
    let mut a = Device::new(&format!("restore-a-{backend:?}"));
    a.connect(&srv.url, "restore@example.org", true).await;
    let p = a.store.insert(&mut profile("Alice", None)).unwrap();
    let mut first = Vec::new();
    for i in 0..10 {
        first.push(
            a.store
                .insert(&mut history(p, &format!("tt{i}"), 1, i))
                .unwrap(),
        );
    }
    a.sync().await.unwrap();
    let backup = srv.backup().await;

    // After the backup: A adds rows and edits one; B joins and takes everything.
    for i in 10..15 {
        a.store
            .insert(&mut history(p, &format!("tt{i}"), 1, i))
            .unwrap();
    }
    let mut edited: entities::WatchHistory = a.store.get(first[0]).unwrap().unwrap();
    edited.position = Some(42);
    a.store.update(&edited).unwrap();
    a.sync().await.unwrap();
    let mut b = Device::new(&format!("restore-b-{backend:?}"));
    b.connect(&srv.url, "restore@example.org", false).await;
    assert_eq!(live_count(&b.store, "watch_history"), 15);

    // The server's database goes back to the copy: it lost what came after.
    srv.restore(&backup).await;
    a.sync().await.unwrap();
    // B's token was issued after the backup: B signs in again, keeping its data.
    assert!(matches!(
        b.sync().await,
        Err(sync_runtime::client::SyncError::SignInAgain(_))
    ));
    b.connect(&srv.url, "restore@example.org", false).await;
    let mut c = Device::new(&format!("restore-c-{backend:?}"));
    c.connect(&srv.url, "restore@example.org", false).await;
    for d in [&a, &b, &c] {
        assert_eq!(live_count(&d.store, "watch_history"), 15, "{backend:?}");
        let status = client::status(&d.store, Activity::Idle).unwrap();
        assert!(status.pending.values().all(|n| *n == 0), "{status:?}");
    }
    let positions: Vec<i64> = c
        .store
        .connection()
        .prepare("SELECT position FROM watch_history WHERE meta_id = 'tt0'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(positions, [42], "the edit made after the backup is back");
}
