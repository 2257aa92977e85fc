//! The server side of docs/PROTOCOL.md, behaviour by behaviour, on both backends.

use axum::http::{Method, StatusCode};
use serde_json::{Value as Json, json};
use tests::on_both_backends;
use tests::server::{TestServer, at, id, row, status};

fn find<'a>(rows: &'a [(String, Json)], table: &str, remote_id: &str) -> Option<&'a Json> {
    rows.iter()
        .find(|(t, r)| t == table && r["remote_id"] == remote_id)
        .map(|(_, r)| r)
}

/// One record of each of the eight tables, ids and rows.
struct Graph {
    settings: String,
    profile: String,
    list: String,
    item: String,
    history: String,
    stream: String,
    appearance: String,
    addon: String,
    changes: Json,
}

/// A new account holding [`graph`] at 0, pushed by a device: (token, device, graph).
async fn pushed_graph(s: &TestServer, email: &str) -> (String, String, Graph) {
    let (_, token) = s.register(email).await;
    let dev = id();
    let g = graph(0);
    s.push(&token, &dev, g.changes.clone()).await;
    (token, dev, g)
}

fn graph(t: i64) -> Graph {
    let (settings, profile, list, item, history, stream, appearance, addon) =
        (id(), id(), id(), id(), id(), id(), id(), id());
    // Children first in the body: the server orders parents first itself.
    let changes = json!({
        "list_items": [row("list_items", &item, &at(t), json!({"list_id": list, "meta_id": "tt0111161", "type": "movie", "imdb_rating": 9.3}))],
        "lists": [row("lists", &list, &at(t), json!({"profile_id": profile, "name": "Favourites"}))],
        "watch_history": [row("watch_history", &history, &at(t), json!({"profile_id": profile, "meta_id": "tt0903747", "meta_type": "series", "season": 1, "episode": 2, "last_stream": {"url": "magnet:x", "n": [1, 2]}}))],
        "stream_settings": [row("stream_settings", &stream, &at(t), json!({"profile_id": profile, "settings_profile_id": settings, "config": {"autoplay": true}}))],
        "appearance_settings": [row("appearance_settings", &appearance, &at(t), json!({"settings_profile_id": settings, "show_imdb_ratings": false}))],
        "profile_addons": [row("profile_addons", &addon, &at(t), json!({"profile_id": profile, "addon_id": "https://addon.example/manifest.json"}))],
        "profiles": [row("profiles", &profile, &at(t), json!({"name": "Zoë 🎬", "avatar": "Z", "settings_profile_id": settings}))],
        "settings_profiles": [row("settings_profiles", &settings, &at(t), json!({"name": "Default", "is_default": true, "tmdb_catalog_config": {"lang": "fr"}}))],
    });
    Graph {
        settings,
        profile,
        list,
        item,
        history,
        stream,
        appearance,
        addon,
        changes,
    }
}

async fn full_graph_pushed_children_first_is_pulled_back(s: TestServer) {
    let (_, token) = s.register("graph@example.org").await;
    let device = id();
    let g = graph(0);
    let results = s.push(&token, &device, g.changes.clone()).await;
    for (table, rows) in results.as_object().unwrap() {
        assert_eq!(rows[0]["status"], "applied", "{table}: {rows}");
    }
    let (rows, cursor) = s.pull_all(&token, None, 1000, None).await;
    assert_eq!(rows.len(), 8);
    assert!(cursor.starts_with("c1."));
    for (table, sent) in g.changes.as_object().unwrap() {
        let sent = &sent[0];
        let got = find(&rows, table, sent["remote_id"].as_str().unwrap())
            .unwrap_or_else(|| panic!("{table} missing"));
        assert_eq!(
            got["device_id"],
            json!(device),
            "{table}: the writer is announced"
        );
        for (k, v) in sent.as_object().unwrap() {
            assert_eq!(&got[k], v, "{table}.{k}");
        }
        assert!(got.get("user_id").is_none(), "user_id never travels");
    }
    let p = find(&rows, "profiles", &g.profile).unwrap();
    assert_eq!(p["settings_profile_id"], json!(g.settings));
    assert_eq!(
        find(&rows, "watch_history", &g.history).unwrap()["last_stream"],
        json!({"url": "magnet:x", "n": [1, 2]})
    );
    let _ = (&g.list, &g.item, &g.stream, &g.appearance, &g.addon);
    // The pull response names all eight tables, empty ones included.
    let (_, page) = s.pull_page(&token, Some(&cursor), None, None).await;
    assert_eq!(page["changes"].as_object().unwrap().len(), 8);
    assert!(
        page["changes"]
            .as_object()
            .unwrap()
            .values()
            .all(|v| v.as_array().unwrap().is_empty())
    );
}
on_both_backends!(full_graph, full_graph_pushed_children_first_is_pulled_back);

async fn retried_push_creates_no_duplicate(s: TestServer) {
    let (_, token) = s.register("retry@example.org").await;
    let device = id();
    let g = graph(0);
    s.push(&token, &device, g.changes.clone()).await;
    let again = s.push(&token, &device, g.changes.clone()).await;
    for (table, rows) in again.as_object().unwrap() {
        assert_eq!(
            rows[0]["status"], "applied",
            "{table}: a repeat of a stored write is applied"
        );
    }
    let (rows, _) = s.pull_all(&token, None, 1000, None).await;
    assert_eq!(rows.len(), 8, "no second record");
}
on_both_backends!(retried_push, retried_push_creates_no_duplicate);

async fn the_merge_rule_decides_applied_and_stale_and_ties_by_device_id(s: TestServer) {
    let (_, token) = s.register("merge@example.org").await;
    let (a, b) = (
        "0193a4c0-0000-7000-8000-00000000000a".to_owned(),
        "0193a4c0-0000-7000-8000-00000000000b".to_owned(),
    );
    let sp = id();
    let name = |n: &str, t: i64| json!({"settings_profiles": [row("settings_profiles", &sp, &at(t), json!({"name": n}))]});
    assert_eq!(
        status(
            &s.push(&token, &a, name("first", 100)).await,
            "settings_profiles",
            0
        ),
        "applied"
    );
    assert_eq!(
        status(
            &s.push(&token, &b, name("newer", 200)).await,
            "settings_profiles",
            0
        ),
        "applied"
    );
    let stale = s.push(&token, &a, name("older", 150)).await;
    assert_eq!(status(&stale, "settings_profiles", 0), "stale");
    let server_row = &stale["settings_profiles"][0]["row"];
    assert_eq!(server_row["name"], "newer");
    assert_eq!(server_row["device_id"], json!(b));
    // Exact tie on updated_at: the greater device id wins.
    assert_eq!(
        status(
            &s.push(&token, &a, name("tie from a", 200)).await,
            "settings_profiles",
            0
        ),
        "stale"
    );
    let c = "0193a4c0-0000-7000-8000-00000000000c";
    assert_eq!(
        status(
            &s.push(&token, c, name("tie from c", 200)).await,
            "settings_profiles",
            0
        ),
        "applied"
    );
    let (rows, _) = s.pull_all(&token, None, 1000, None).await;
    assert_eq!(
        find(&rows, "settings_profiles", &sp).unwrap()["name"],
        "tie from c"
    );
}
on_both_backends!(
    merge_rule,
    the_merge_rule_decides_applied_and_stale_and_ties_by_device_id
);

async fn the_same_record_created_on_two_devices_is_merged_and_aliased(s: TestServer) {
    let (_, token) = s.register("nk@example.org").await;
    let (a, b) = (id(), id());
    let g = graph(0);
    s.push(&token, &a, g.changes.clone()).await;
    // Device B adds the same movie to the same list, offline, under its own id.
    let mine = id();
    let push = json!({"list_items": [row("list_items", &mine, &at(50), json!({"list_id": g.list, "meta_id": "tt0111161", "type": "movie", "title": "B's title"}))]});
    let r = s.push(&token, &b, push.clone()).await;
    assert_eq!(status(&r, "list_items", 0), "merged");
    assert_eq!(r["list_items"][0]["canonical_id"], json!(g.item));
    assert_eq!(
        r["list_items"][0]["remote_id"],
        json!(mine),
        "answered under the id sent"
    );
    // A late retry of the merged-away id lands on the survivor.
    let retry = s.push(&token, &b, push).await;
    assert_eq!(status(&retry, "list_items", 0), "merged");
    assert_eq!(retry["list_items"][0]["canonical_id"], json!(g.item));
    let (rows, _) = s.pull_all(&token, None, 1000, None).await;
    let items: Vec<_> = rows.iter().filter(|(t, _)| t == "list_items").collect();
    assert_eq!(items.len(), 1, "one record");
    assert_eq!(
        items[0].1["title"], "B's title",
        "the later write's values win"
    );
    // A reference through the alias is read as the canonical id.
    let child_list = id();
    let r = s
        .push(&token, &b, json!({"lists": [row("lists", &child_list, &at(60), json!({"profile_id": g.profile, "name": "Other"}))]}))
        .await;
    assert_eq!(status(&r, "lists", 0), "applied");
}
on_both_backends!(
    natural_key_merge,
    the_same_record_created_on_two_devices_is_merged_and_aliased
);

async fn a_rename_into_another_records_key_merges_and_moves_the_children(s: TestServer) {
    let (token, dev, g) = pushed_graph(&s, "rename@example.org").await;
    let (other, its_item) = (id(), id());
    s.push(
        &token,
        &dev,
        json!({
            "lists": [row("lists", &other, &at(10), json!({"profile_id": g.profile, "name": "Watch later"}))],
            "list_items": [row("list_items", &its_item, &at(10), json!({"list_id": other, "meta_id": "tt0068646", "type": "movie"}))],
        }),
    )
    .await;
    // Rename "Watch later" to "Favourites": the same natural key as g.list.
    let r = s.push(&token, &dev, json!({"lists": [row("lists", &other, &at(20), json!({"profile_id": g.profile, "name": "Favourites"}))]})).await;
    assert_eq!(status(&r, "lists", 0), "merged");
    assert_eq!(r["lists"][0]["canonical_id"], json!(g.list));
    let (rows, _) = s.pull_all(&token, None, 1000, None).await;
    let lists: Vec<_> = rows.iter().filter(|(t, _)| t == "lists").collect();
    assert_eq!(
        lists.len(),
        1,
        "the renamed record became a tombstone: {lists:?}"
    );
    let moved = find(&rows, "list_items", &its_item).expect("the child lives on");
    assert_eq!(
        moved["list_id"],
        json!(g.list),
        "re-pointed to the survivor"
    );
    let health = s.call(Method::GET, "/api/health", None, None).await.1;
    assert_eq!(
        moved["device_id"], health["server_device_id"],
        "a derived write is the server's"
    );
}
on_both_backends!(
    rename_merge,
    a_rename_into_another_records_key_merges_and_moves_the_children
);

async fn a_parent_tombstone_cascades_and_nulls_set_null_references(s: TestServer) {
    let (token, dev, g) = pushed_graph(&s, "cascade@example.org").await;
    let (_, first) = s.pull_page(&token, None, None, None).await;
    let cursor = first["cursor"].as_str().unwrap().to_owned();
    let mut tomb = row(
        "settings_profiles",
        &g.settings,
        &at(100),
        json!({"name": "Default"}),
    );
    tomb["deleted_at"] = json!(at(100));
    s.push(&token, &dev, json!({"settings_profiles": [tomb]}))
        .await;
    // Another device pulls what changed: the derived writes included.
    let (rows, _) = s.pull_all(&token, Some(&cursor), 1000, Some(&id())).await;
    let server = s.call(Method::GET, "/api/health", None, None).await.1["server_device_id"].clone();
    let profile = find(&rows, "profiles", &g.profile).expect("the profile changed");
    assert_eq!(profile["settings_profile_id"], Json::Null, "SET NULL");
    assert!(profile["deleted_at"].is_null());
    assert_eq!(profile["device_id"], server);
    assert!(
        profile["updated_at"].as_str().unwrap() > at(100).as_str(),
        "derived stamps are above the parent's"
    );
    for (table, rid) in [
        ("appearance_settings", &g.appearance),
        ("stream_settings", &g.stream),
    ] {
        let r = find(&rows, table, rid).unwrap_or_else(|| panic!("{table}"));
        assert!(r["deleted_at"].is_string(), "{table} cascades");
        assert_eq!(r["device_id"], server);
    }
    assert!(
        find(&rows, "lists", &g.list).is_none(),
        "not a child of the settings profile"
    );
    // The device that pushed the tombstone gets the derived writes too, though it filters its own.
    let (mine, _) = s.pull_all(&token, Some(&cursor), 1000, Some(&dev)).await;
    assert!(find(&mine, "profiles", &g.profile).is_some());
    assert!(
        find(&mine, "settings_profiles", &g.settings).is_none(),
        "its own write is left out"
    );
}
on_both_backends!(
    cascade,
    a_parent_tombstone_cascades_and_nulls_set_null_references
);

async fn a_child_edit_after_its_parents_delete_becomes_a_derived_tombstone(s: TestServer) {
    let (_, token) = s.register("orphan@example.org").await;
    let (a, b) = (id(), id());
    let g = graph(0);
    s.push(&token, &a, g.changes.clone()).await;
    let mut tomb = row(
        "profiles",
        &g.profile,
        &at(100),
        json!({"name": "x", "avatar": "x"}),
    );
    tomb["deleted_at"] = json!(at(100));
    s.push(&token, &a, json!({"profiles": [tomb]})).await;
    // B, offline, edited the list after the profile was deleted elsewhere.
    let r = s.push(&token, &b, json!({"lists": [row("lists", &g.list, &at(200), json!({"profile_id": g.profile, "name": "Renamed"}))]})).await;
    assert_eq!(status(&r, "lists", 0), "stale");
    let stored = &r["lists"][0]["row"];
    assert!(
        stored["deleted_at"].is_string(),
        "stored as a tombstone: {stored}"
    );
    assert!(stored["updated_at"].as_str().unwrap() > at(200).as_str());
    // A new child under a deleted parent is an orphan too.
    let fresh = id();
    let r = s.push(&token, &b, json!({"lists": [row("lists", &fresh, &at(210), json!({"profile_id": g.profile, "name": "New"}))]})).await;
    assert_eq!(status(&r, "lists", 0), "stale");
    assert!(r["lists"][0]["row"]["deleted_at"].is_string());
}
on_both_backends!(
    orphan,
    a_child_edit_after_its_parents_delete_becomes_a_derived_tombstone
);

async fn a_write_stamped_a_month_ago_still_reaches_a_device_whose_cursor_is_ahead(s: TestServer) {
    let (_, token) = s.register("clock@example.org").await;
    let (a, b) = (id(), id());
    // Stamped at `at(0)`: a stamp further ahead of the server's clock would be refused.
    let g = graph(0);
    s.push(&token, &a, g.changes.clone()).await;
    let (_, cursor) = s.pull_all(&token, None, 1000, Some(&b)).await;
    // A device whose clock is a month behind writes a new record now.
    let late = id();
    s.push(&token, &a, json!({"lists": [row("lists", &late, &at(-30 * 24 * 3600 * 1000), json!({"profile_id": g.profile, "name": "Old clock"}))]}))
        .await;
    let (rows, _) = s.pull_all(&token, Some(&cursor), 1000, Some(&b)).await;
    assert!(
        find(&rows, "lists", &late).is_some(),
        "the cursor is the server's sequence, not a clock"
    );
}
on_both_backends!(
    old_stamp,
    a_write_stamped_a_month_ago_still_reaches_a_device_whose_cursor_is_ahead
);

async fn pages_of_1_and_of_1000_cover_every_row_exactly_once(s: TestServer) {
    let (token, dev, g) = pushed_graph(&s, "pages@example.org").await;
    let mut history = vec![];
    for i in 0..40 {
        history.push(row(
            "watch_history",
            &id(),
            &at(i),
            json!({"profile_id": g.profile, "meta_id": format!("tt{i}"), "meta_type": "movie"}),
        ));
    }
    s.push(&token, &dev, json!({"watch_history": history}))
        .await;
    let (_, cursor) = s.pull_all(&token, None, 1000, None).await;
    // Edit some records again, so they have moved to later sequences.
    let again: Vec<Json> = history
        .iter()
        .take(5)
        .map(|r| {
            let mut r = r.clone();
            r["updated_at"] = json!(at(500));
            r["position"] = json!(99);
            r
        })
        .collect();
    s.push(&token, &dev, json!({"watch_history": again})).await;
    for limit in [1, 3, 1000] {
        let (rows, _) = s.pull_all(&token, None, limit, None).await;
        let mut ids: Vec<_> = rows
            .iter()
            .map(|(_, r)| r["remote_id"].as_str().unwrap().to_owned())
            .collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "limit {limit}: a record twice");
        assert_eq!(n, 48, "limit {limit}: every live record");
        let edited = rows.iter().filter(|(_, r)| r["position"] == 99).count();
        assert_eq!(edited, 5, "limit {limit}: each in its latest state");
    }
    let (rows, _) = s.pull_all(&token, Some(&cursor), 1, None).await;
    assert_eq!(
        rows.len(),
        5,
        "an incremental pull brings just what changed"
    );
    let (st, page) = s.pull_page(&token, None, Some(1), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(page["has_more"], true);
}
on_both_backends!(
    pagination,
    pages_of_1_and_of_1000_cover_every_row_exactly_once
);

async fn tombstones_are_pulled_then_purged_and_an_old_cursor_expires(s: TestServer) {
    let (token, dev, g) = pushed_graph(&s, "purge@example.org").await;
    let (_, old_cursor) = s.pull_all(&token, None, 1000, None).await;
    let mut tomb = row(
        "list_items",
        &g.item,
        &at(100),
        json!({"list_id": g.list, "meta_id": "tt0111161", "type": "movie"}),
    );
    tomb["deleted_at"] = json!(at(100));
    s.push(&token, &dev, json!({"list_items": [tomb]})).await;
    let (rows, new_cursor) = s.pull_all(&token, Some(&old_cursor), 1000, None).await;
    assert!(
        find(&rows, "list_items", &g.item).unwrap()["deleted_at"].is_string(),
        "tombstones are pulled"
    );
    let (full, _) = s.pull_all(&token, None, 1000, None).await;
    assert!(
        find(&full, "list_items", &g.item).is_none(),
        "a full pull leaves tombstones out"
    );
    let purged = s
        .server
        .purge_tombstones(sync_runtime::Timestamp::now().add_millis(1000))
        .await
        .unwrap();
    assert_eq!(purged, 1);
    let (st, body) = s.pull_page(&token, Some(&old_cursor), None, None).await;
    assert_eq!(st, StatusCode::GONE, "{body}");
    assert_eq!(body["error"], "cursor_expired");
    let (st, _) = s.pull_page(&token, Some(&new_cursor), None, None).await;
    assert_eq!(st, StatusCode::OK, "a cursor past the purge is fine");
}
on_both_backends!(
    purge,
    tombstones_are_pulled_then_purged_and_an_old_cursor_expires
);

/// Simulation seed 167, with purges: a device deleted a record it had moved under a parent
/// that another device deleted meanwhile, and whose tombstone this server purged. The
/// tombstone's reference names a record the server no longer knows; refusing it left the
/// record live here forever.
async fn a_tombstone_whose_parent_is_unknown_here_is_applied(s: TestServer) {
    let (token, dev, g) = pushed_graph(&s, "tomb-parent@example.org").await;
    let (_, cursor) = s.pull_all(&token, None, 1000, None).await;
    let mut tomb = row(
        "list_items",
        &g.item,
        &at(100),
        json!({"list_id": id(), "meta_id": "tt0111161", "type": "movie"}),
    );
    tomb["deleted_at"] = json!(at(100));
    let answer = s.push(&token, &dev, json!({"list_items": [tomb]})).await;
    assert_eq!(answer["list_items"][0]["status"], "applied", "{answer}");
    let (rows, _) = s.pull_all(&token, Some(&cursor), 1000, None).await;
    let pulled = find(&rows, "list_items", &g.item).expect("the tombstone is pulled");
    assert!(pulled["deleted_at"].is_string());
    assert_eq!(
        pulled["list_id"],
        g.list.as_str(),
        "the reference it had here"
    );
    let (full, _) = s.pull_all(&token, None, 1000, None).await;
    assert!(
        find(&full, "list_items", &g.item).is_none(),
        "no longer live"
    );
}
on_both_backends!(
    tombstone_parent_unknown,
    a_tombstone_whose_parent_is_unknown_here_is_applied
);

async fn another_users_records_are_neither_read_nor_written(s: TestServer) {
    let (_, alice) = s.register("alice@example.org").await;
    let (_, mallory) = s.register("mallory@example.org").await;
    let g = graph(0);
    s.push(&alice, &id(), g.changes.clone()).await;
    let (rows, _) = s.pull_all(&mallory, None, 1000, None).await;
    assert!(rows.is_empty(), "nothing of alice's is visible");
    // Overwriting alice's record by its id: 403, nothing stored.
    let (st, body) = s.push_raw(&mallory, &id(), json!({
        "settings_profiles": [row("settings_profiles", &id(), &at(5), json!({"name": "mine"}))],
        "profiles": [row("profiles", &g.profile, &at(999), json!({"name": "pwned", "avatar": "p"}))],
    })).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "forbidden");
    assert!(
        s.pull_all(&mallory, None, 1000, None).await.0.is_empty(),
        "the whole push stored nothing"
    );
    // A reference to alice's record is refused for that row alone.
    let mine = id();
    let r = s.push(&mallory, &id(), json!({"lists": [row("lists", &mine, &at(5), json!({"profile_id": g.profile, "name": "L"}))]})).await;
    assert_eq!(status(&r, "lists", 0), "rejected");
    assert!(
        r["lists"][0]["message"]
            .as_str()
            .unwrap()
            .contains("profile_id")
    );
    let (alice_rows, _) = s.pull_all(&alice, None, 1000, None).await;
    assert_eq!(
        find(&alice_rows, "profiles", &g.profile).unwrap()["name"],
        "Zoë 🎬"
    );
}
on_both_backends!(
    isolation,
    another_users_records_are_neither_read_nor_written
);

async fn bad_requests_get_json_errors_and_store_nothing(s: TestServer) {
    let (_, token) = s.register("bad@example.org").await;
    let dev = id();
    let push = |body: Vec<u8>| s.push_body(&token, body);
    let cases: Vec<(Vec<u8>, StatusCode, &str)> = vec![
        (
            b"{not json".to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            json!({"device_id": dev, "schema_version": 1, "changes": {"nope": []}})
                .to_string()
                .into_bytes(),
            StatusCode::BAD_REQUEST,
            "unknown table",
        ),
        (
            json!({"device_id": dev, "schema_version": 1, "changes": {"addons": []}})
                .to_string()
                .into_bytes(),
            StatusCode::BAD_REQUEST,
            "unknown table",
        ),
        (
            json!({"device_id": "nope", "schema_version": 1, "changes": {}})
                .to_string()
                .into_bytes(),
            StatusCode::BAD_REQUEST,
            "device_id",
        ),
        (
            json!({"device_id": dev, "schema_version": 2, "changes": {}})
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "schema_version",
        ),
        (
            json!({"device_id": dev, "changes": {}})
                .to_string()
                .into_bytes(),
            StatusCode::BAD_REQUEST,
            "schema_version",
        ),
        (
            json!({"device_id": dev, "schema_version": 1, "changes": {"profiles": [42]}})
                .to_string()
                .into_bytes(),
            StatusCode::BAD_REQUEST,
            "profiles[0]: a row must be a JSON object",
        ),
        (
            json!({"device_id": dev, "schema_version": 1, "changes": {"profiles": {}}})
                .to_string()
                .into_bytes(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ];
    for (body, want, says) in cases {
        let (st, b) = push(body).await;
        assert_eq!(st, want, "{b}");
        assert!(
            b["message"].as_str().unwrap().contains(says) || b["error"] == says,
            "{b}"
        );
    }
    let sp = id();
    let good = row("settings_profiles", &sp, &at(1), json!({"name": "ok"}));
    let mut unknown_col = good.clone();
    unknown_col["colour"] = json!("red");
    let mut missing_col = good.clone();
    missing_col.as_object_mut().unwrap().remove("name");
    let mut bad_stamp = good.clone();
    bad_stamp["updated_at"] = json!("yesterday");
    let mut bad_id = good.clone();
    bad_id["remote_id"] = json!("123");
    for (bad, says) in [
        (unknown_col, "colour"),
        (missing_col, "name"),
        (bad_stamp, "updated_at"),
        (bad_id, "remote_id"),
    ] {
        // A good row beside the bad one: the envelope error stores nothing at all.
        let (st, b) = s
            .push_raw(
                &token,
                &dev,
                json!({"settings_profiles": [good.clone(), bad]}),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
        assert!(b["message"].as_str().unwrap().contains(says), "{b}");
    }
    assert!(
        s.pull_all(&token, None, 1000, None).await.0.is_empty(),
        "nothing was stored"
    );
    // A value of the wrong type rejects that row alone.
    let mut wrong_type = row("settings_profiles", &id(), &at(1), json!({"name": "typed"}));
    wrong_type["is_default"] = json!("yes");
    let r = s
        .push(
            &token,
            &dev,
            json!({"settings_profiles": [wrong_type, good]}),
        )
        .await;
    assert_eq!(status(&r, "settings_profiles", 0), "rejected");
    assert!(
        r["settings_profiles"][0]["message"]
            .as_str()
            .unwrap()
            .contains("is_default")
    );
    assert_eq!(status(&r, "settings_profiles", 1), "applied");
    // Wrong content type, garbage cursors and limits, no token.
    let (st, _) = s
        .raw(
            Method::POST,
            "/api/sync/push",
            Some(&token),
            Some(b"{}".to_vec()),
            "text/plain",
            &[],
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    for q in [
        "since=garbage",
        "since=c1.1.-4",
        "since=c1.1.1.1",
        "limit=0",
        "limit=-3",
        "limit=ten",
        "device_id=x",
        "since=%ZZ",
    ] {
        let (st, b) = s.pull_query(&token, q).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{q}: {b}");
        assert_eq!(b["error"], "bad_request");
    }
    let (st, b) = s.pull_as_version(&token, "9").await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    let (st, b) = s.pull_page(&token, Some("c1.9.0"), None, None).await;
    assert_eq!(
        st,
        StatusCode::GONE,
        "a cursor of another schema version: {b}"
    );
    let (st, b) = s
        .call(Method::GET, "/api/sync/pull", Some("not-a-token"), None)
        .await;
    assert_eq!(
        (st, b["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (st, b) = s.call(Method::GET, "/api/nowhere", None, None).await;
    assert_eq!(
        (st, b["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}
on_both_backends!(bad_requests, bad_requests_get_json_errors_and_store_nothing);

async fn bodies_and_pushes_over_the_limits_are_413(s: TestServer) {
    let (_, token) = s.register("limits@example.org").await;
    let dev = id();
    let rows: Vec<Json> = (0..5001)
        .map(|i| row("settings_profiles", &id(), &at(i), json!({"name": "n"})))
        .collect();
    let (st, b) = s
        .push_raw(&token, &dev, json!({"settings_profiles": rows}))
        .await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    assert_eq!(b["error"], "too_large");
    let huge = format!(
        "{{\"device_id\": \"{dev}\", \"schema_version\": 1, \"changes\": {{}}, \"pad\": \"{}\"}}",
        "x".repeat(17 * 1024 * 1024)
    );
    let (st, b) = s.push_body(&token, huge).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    assert!(s.pull_all(&token, None, 1000, None).await.0.is_empty());
}
on_both_backends!(limits, bodies_and_pushes_over_the_limits_are_413);

async fn accounts_register_login_logout_and_rate_limit(s: TestServer) {
    let creds = |e: &str, p: &str| Some(json!({"email": e, "password": p}));
    let (st, b) = s
        .call(
            Method::POST,
            "/api/auth/register",
            None,
            creds("Ann@Example.org", "long enough"),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let user = b["user_id"].as_str().unwrap().to_owned();
    assert!(b["token"].as_str().unwrap().len() >= 32 && b["expires_at"].is_string());
    let (st, b) = s
        .call(
            Method::POST,
            "/api/auth/register",
            None,
            creds("ann@EXAMPLE.org", "another one"),
        )
        .await;
    assert_eq!(
        (st, b["error"].as_str()),
        (StatusCode::CONFLICT, Some("conflict")),
        "emails compare case-insensitively"
    );
    let (st, _) = s
        .call(
            Method::POST,
            "/api/auth/register",
            None,
            creds("short@example.org", "1234567"),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = s
        .call(
            Method::POST,
            "/api/auth/register",
            None,
            creds("not-an-email", "long enough"),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, b) = s
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            creds("ann@example.org", "long enough"),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["user_id"], json!(user));
    let token = b["token"].as_str().unwrap().to_owned();
    let (wrong, unknown) = (
        s.call(
            Method::POST,
            "/api/auth/login",
            None,
            creds("ann@example.org", "wrong password"),
        )
        .await,
        s.call(
            Method::POST,
            "/api/auth/login",
            None,
            creds("nobody@example.org", "wrong password"),
        )
        .await,
    );
    assert_eq!(wrong.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        wrong, unknown,
        "the same answer for an unknown email and a wrong password"
    );
    // Stored only as a hash.
    let (st, _) = s.pull_page(&token, None, None, None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, b) = s
        .call(Method::POST, "/api/auth/logout", Some(&token), None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{b}");
    let (st, _) = s.pull_page(&token, None, None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "revoked at once");
    // Failed logins for one account are limited.
    let mut last = StatusCode::OK;
    for _ in 0..12 {
        last = s
            .call(
                Method::POST,
                "/api/auth/login",
                None,
                creds("ann@example.org", "guessing wrong"),
            )
            .await
            .0;
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
    let (st, b) = s
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            creds("ann@example.org", "long enough"),
        )
        .await;
    assert_eq!(
        (st, b["error"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited"))
    );
}
on_both_backends!(accounts, accounts_register_login_logout_and_rate_limit);

async fn own_writes_are_left_out_of_incremental_pulls_only(s: TestServer) {
    let (_, token) = s.register("own@example.org").await;
    let (a, b) = (id(), id());
    let (_, start) = s.pull_all(&token, None, 1000, Some(&a)).await;
    let g = graph(0);
    s.push(&token, &a, g.changes.clone()).await;
    assert!(
        s.pull_all(&token, Some(&start), 1000, Some(&a))
            .await
            .0
            .is_empty()
    );
    assert_eq!(
        s.pull_all(&token, Some(&start), 1000, Some(&b))
            .await
            .0
            .len(),
        8
    );
    assert_eq!(
        s.pull_all(&token, None, 1000, Some(&a)).await.0.len(),
        8,
        "a full pull includes the caller's own writes"
    );
}
on_both_backends!(
    own_writes,
    own_writes_are_left_out_of_incremental_pulls_only
);

async fn the_openapi_document_lists_every_endpoint(s: TestServer) {
    let (st, doc) = s.call(Method::GET, "/api/openapi.json", None, None).await;
    assert_eq!(st, StatusCode::OK);
    for path in [
        "/api/health",
        "/api/auth/register",
        "/api/auth/login",
        "/api/auth/logout",
        "/api/sync/push",
        "/api/sync/pull",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    assert!(doc["components"]["schemas"]["PushRequest"].is_object());
}
on_both_backends!(openapi, the_openapi_document_lists_every_endpoint);

/// The `utoipa::path` attributes spell the paths and headers as literals: each of the
/// protocol's names must be what the served document says and what the router answers.
async fn every_protocol_path_and_header_is_in_the_served_openapi_document(s: TestServer) {
    use sync_runtime::protocol::{headers, paths};
    let (st, doc) = s.call(Method::GET, paths::OPENAPI, None, None).await;
    assert_eq!(st, StatusCode::OK);
    for path in paths::ALL {
        let operations = doc["paths"][path].as_object();
        assert!(operations.is_some(), "{path} is documented");
        for method in operations.unwrap().keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (st, body) = s.call(method.clone(), path, None, None).await;
            assert_ne!(
                st,
                StatusCode::NOT_FOUND,
                "{method} {path} is routed: {body}"
            );
            assert_ne!(
                st,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {body}"
            );
        }
    }
    let pull = &doc["paths"][paths::PULL]["get"];
    assert!(
        pull["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["in"] == "header"
                && p["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(headers::SCHEMA_VERSION))),
        "{pull}"
    );
    let answer = &pull["responses"]["200"]["headers"];
    for header in [headers::CURSOR, headers::HAS_MORE, headers::WAIT] {
        assert!(answer[header].is_object(), "{header} in {answer}");
    }
}
on_both_backends!(
    protocol_names,
    every_protocol_path_and_header_is_in_the_served_openapi_document
);

/// The document's pull is the pull served: its query parameters are the fields of the
/// protocol's `PullQuery`, and its page has the keys of a page the server answers, with every
/// synced table under `changes`.
async fn the_documented_pull_is_the_pull_served(s: TestServer) {
    use sync_runtime::protocol::paths;
    use sync_runtime::protocol::pull::PullQuery;
    let (_, doc) = s.call(Method::GET, paths::OPENAPI, None, None).await;
    let pull = &doc["paths"][paths::PULL]["get"];
    let documented: Vec<&str> = pull["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in"] == "query")
        .filter_map(|p| p["name"].as_str())
        .collect();
    let every_field = PullQuery {
        since: Some("c".into()),
        limit: Some(1),
        device_id: Some("d".into()),
        wait: Some(1),
    };
    let mut sent: Vec<&str> = Vec::new();
    let encoded = every_field.encode();
    for pair in encoded.split('&') {
        sent.push(pair.split_once('=').unwrap().0);
    }
    sent.sort_unstable();
    let mut documented_sorted = documented.clone();
    documented_sorted.sort_unstable();
    assert_eq!(sent, documented_sorted);
    assert_eq!(
        pull["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/PullResponse"
    );
    let schema = &doc["components"]["schemas"]["PullResponse"];
    let (_, token) = s.register("documented-pull@example.com").await;
    let (st, page) = s.pull_page(&token, None, None, None).await;
    assert_eq!(st, StatusCode::OK);
    let mut served: Vec<&String> = page.as_object().unwrap().keys().collect();
    let mut described: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
    served.sort();
    described.sort();
    assert_eq!(served, described);
    let mut tables: Vec<&String> = page["changes"].as_object().unwrap().keys().collect();
    let mut required: Vec<&str> = schema["properties"]["changes"]["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    tables.sort();
    required.sort_unstable();
    assert_eq!(tables, required);
    assert!(!tables.is_empty());
}
on_both_backends!(documented_pull, the_documented_pull_is_the_pull_served);

/// Found by the simulation (seed 16): a device whose clock went back wrote a record with the same
/// natural key as its own earlier tombstone, at a lower stamp. The write lost the merge, and the
/// survivor's version, written last by that very device, never reached it by pull.
async fn a_write_that_loses_a_natural_key_merge_is_answered_with_the_survivor(s: TestServer) {
    let (token, dev, g) = pushed_graph(&s, "lost-merge@example.org").await;
    let mut tomb = row(
        "list_items",
        &g.item,
        &at(500),
        json!({"list_id": g.list, "meta_id": "tt0111161", "type": "movie"}),
    );
    tomb["deleted_at"] = json!(at(500));
    s.push(&token, &dev, json!({"list_items": [tomb]})).await;
    let again = id();
    let r = s
        .push(&token, &dev, json!({"list_items": [row("list_items", &again, &at(400), json!({"list_id": g.list, "meta_id": "tt0111161", "type": "movie"}))]}))
        .await;
    assert_eq!(status(&r, "list_items", 0), "merged");
    assert_eq!(r["list_items"][0]["canonical_id"], json!(g.item));
    let survivor = &r["list_items"][0]["row"];
    assert_eq!(survivor["remote_id"], json!(g.item), "{r}");
    assert!(
        survivor["deleted_at"].is_string(),
        "the survivor is still the tombstone: {survivor}"
    );
    // A write that wins the merge is answered with the survivor as stored: its values.
    let later = id();
    let r = s
        .push(&token, &dev, json!({"list_items": [row("list_items", &later, &at(600), json!({"list_id": g.list, "meta_id": "tt0111161", "type": "movie"}))]}))
        .await;
    assert_eq!(status(&r, "list_items", 0), "merged");
    let survivor = &r["list_items"][0]["row"];
    assert_eq!(survivor["remote_id"], json!(g.item), "{r}");
    assert_eq!(survivor["updated_at"], json!(at(600)), "{r}");
    assert!(survivor["deleted_at"].is_null(), "{r}");
}
on_both_backends!(
    lost_merge,
    a_write_that_loses_a_natural_key_merge_is_answered_with_the_survivor
);

/// Found by the simulation (seed 46): a live list merged by its natural key into a deleted list
/// (the deleted one's stamp being greater) moved its live items under the deleted list.
async fn children_moved_to_a_deleted_survivor_are_deleted_too(s: TestServer) {
    let (token, dev, g) = pushed_graph(&s, "dead-survivor@example.org").await;
    let mut tomb = row(
        "lists",
        &g.list,
        &at(900),
        json!({"profile_id": g.profile, "name": "Favourites"}),
    );
    tomb["deleted_at"] = json!(at(900));
    s.push(&token, &dev, json!({"lists": [tomb]})).await;
    let (other, its_item) = (id(), id());
    s.push(
        &token,
        &dev,
        json!({
            "lists": [row("lists", &other, &at(10), json!({"profile_id": g.profile, "name": "Other"}))],
            "list_items": [row("list_items", &its_item, &at(10), json!({"list_id": other, "meta_id": "tt0068646", "type": "movie"}))],
        }),
    )
    .await;
    // Renamed into the deleted list's key, with an older stamp: it loses to the tombstone.
    let r = s.push(&token, &dev, json!({"lists": [row("lists", &other, &at(20), json!({"profile_id": g.profile, "name": "Favourites"}))]})).await;
    assert_eq!(status(&r, "lists", 0), "merged");
    let (rows, _) = s.pull_all(&token, None, 1000, None).await;
    assert!(find(&rows, "lists", &g.list).is_none() && find(&rows, "lists", &other).is_none());
    assert!(
        find(&rows, "list_items", &its_item).is_none(),
        "no live item under a deleted list: {rows:?}"
    );
}
on_both_backends!(
    dead_survivor,
    children_moved_to_a_deleted_survivor_are_deleted_too
);

/// Found by the simulation (seed 575): a tombstone of a record the server never saw, under a list
/// merged away in the same push, was stored under the merged-away id and so escaped the merge
/// with the same item under the surviving list.
async fn a_new_tombstone_reads_its_references_through_aliases(s: TestServer) {
    let (token, _, g) = pushed_graph(&s, "alias-tombstone@example.org").await;
    let (other_list, gone_item) = (id(), id());
    let mut tomb = row(
        "list_items",
        &gone_item,
        &at(50),
        json!({"list_id": other_list, "meta_id": "tt0111161", "type": "movie"}),
    );
    tomb["deleted_at"] = json!(at(50));
    let r = s
        .push(
            &token,
            &id(),
            json!({
                "lists": [row("lists", &other_list, &at(40), json!({"profile_id": g.profile, "name": "Favourites"}))],
                "list_items": [tomb],
            }),
        )
        .await;
    assert_eq!(status(&r, "lists", 0), "merged");
    assert_eq!(status(&r, "list_items", 0), "merged", "{r}");
    assert_eq!(r["list_items"][0]["canonical_id"], json!(g.item));
}
on_both_backends!(
    alias_tombstone,
    a_new_tombstone_reads_its_references_through_aliases
);

/// Found by the simulation (seed 1082): an item added offline under a list that another device
/// merged away meanwhile is stored under the surviving list; the answer carries that version,
/// which the pushing device's own pulls leave out.
async fn a_row_stored_with_canonical_references_is_answered_with_that_version(s: TestServer) {
    let (_, token) = s.register("alias-reference@example.org").await;
    let g = graph(0);
    s.push(&token, &id(), g.changes.clone()).await;
    let dup = id();
    let r = s
        .push(&token, &id(), json!({"lists": [row("lists", &dup, &at(10), json!({"profile_id": g.profile, "name": "Favourites"}))]}))
        .await;
    assert_eq!(r["lists"][0]["canonical_id"], json!(g.list));
    let (offline, item) = (id(), id());
    let r = s
        .push(&token, &offline, json!({"list_items": [row("list_items", &item, &at(20), json!({"list_id": dup, "meta_id": "tt0068646", "type": "movie"}))]}))
        .await;
    assert_eq!(status(&r, "list_items", 0), "merged");
    assert_eq!(r["list_items"][0]["canonical_id"], json!(item));
    assert_eq!(
        r["list_items"][0]["row"]["list_id"],
        json!(g.list),
        "the stored version: {r}"
    );
    let (rows, _) = s.pull_all(&token, None, 1000, None).await;
    assert_eq!(
        find(&rows, "list_items", &item).unwrap()["list_id"],
        json!(g.list)
    );
}
on_both_backends!(
    alias_reference,
    a_row_stored_with_canonical_references_is_answered_with_that_version
);

/// Found by the simulation (seed 4306): an item added offline under a list merged away meanwhile
/// matched an item of the surviving list, and won the merge. The survivor was stored under the
/// surviving list, which the answer must say: the device's own pulls leave that version out.
async fn a_winning_merge_through_an_alias_is_answered_with_the_canonical_reference(s: TestServer) {
    let (_, token) = s.register("alias-merge@example.org").await;
    let g = graph(0);
    s.push(&token, &id(), g.changes.clone()).await;
    let dup = id();
    s.push(&token, &id(), json!({"lists": [row("lists", &dup, &at(10), json!({"profile_id": g.profile, "name": "Favourites"}))]}))
        .await;
    let mine = id();
    let r = s
        .push(&token, &id(), json!({"list_items": [row("list_items", &mine, &at(900), json!({"list_id": dup, "meta_id": "tt0111161", "type": "movie", "title": "mine"}))]}))
        .await;
    assert_eq!(status(&r, "list_items", 0), "merged");
    assert_eq!(r["list_items"][0]["canonical_id"], json!(g.item));
    let survivor = &r["list_items"][0]["row"];
    assert_eq!(survivor["list_id"], json!(g.list), "{r}");
    assert_eq!(survivor["title"], json!("mine"), "{r}");
}
on_both_backends!(
    alias_merge,
    a_winning_merge_through_an_alias_is_answered_with_the_canonical_reference
);
