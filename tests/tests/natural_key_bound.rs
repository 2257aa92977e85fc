//! A natural key holds at most `max_key_bytes` of text (docs/PROTOCOL.md): PostgreSQL cannot
//! index more, and a longer key failed the whole push there with 500 while SQLite stored it.
//! A row over the bound is `rejected` alike on both backends, before any statement; the device
//! that holds one keeps syncing its other rows.

use axum::http::{Method, StatusCode};
use serde_json::json;
use sync_runtime::client;
use sync_runtime::protocol::paths;
use sync_runtime::server::row_rules::MAX_KEY_BYTES;
use tests::by_backend;
use tests::device::{Device, LiveServer};
use tests::fixtures::{list, profile};
use tests::on_both_backends;
use tests::server::{Backend, TestServer, at, id, row};

/// `n` bytes of text no compressor shrinks (PostgreSQL compresses a long index entry before it
/// measures it): printable ASCII from a fixed pseudo-random sequence.
fn incompressible(n: usize, seed: u64) -> String {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'!' + (x % 94) as u8)
        })
        .collect()
}

async fn keys_over_the_bound_are_rejected_and_at_it_stored(s: TestServer) {
    let (_, health) = s.call(Method::GET, paths::HEALTH, None, None).await;
    assert_eq!(health["max_key_bytes"], MAX_KEY_BYTES, "{health}");
    let (_, token) = s.register("keys@example.org").await;
    let device = id();
    let (settings, p) = (id(), id());
    s.push(
        &token,
        &device,
        json!({
            "settings_profiles": [row("settings_profiles", &settings, &at(0), json!({"name": "S"}))],
            "profiles": [row("profiles", &p, &at(0), json!({"name": "P", "avatar": "p"}))],
        }),
    )
    .await;
    let long = incompressible(3000, 1);
    let at_bound = incompressible(MAX_KEY_BYTES, 2);
    // A key over the bound in each kind of key: a list's name, a history's meta id, an add-on's
    // URL (the reference by key), and in a tombstone; each beside a row at the bound.
    let cases = [
        (
            "lists",
            json!({"profile_id": p, "name": long}),
            json!({"profile_id": p, "name": at_bound}),
        ),
        (
            "watch_history",
            json!({"profile_id": p, "meta_id": long, "meta_type": "movie"}),
            json!({"profile_id": p, "meta_id": at_bound, "meta_type": "movie"}),
        ),
        (
            "profile_addons",
            json!({"profile_id": p, "settings_profile_id": settings, "addon_id": long}),
            json!({"profile_id": p, "settings_profile_id": settings, "addon_id": at_bound}),
        ),
    ];
    for (table, over, at_it) in cases {
        let over_id = id();
        let mut tombstone = row(table, &id(), &at(1), over.clone());
        tombstone["deleted_at"] = json!(at(1));
        let (st, b) = s
            .push_raw(
                &token,
                &device,
                json!({table: [row(table, &over_id, &at(1), over), tombstone, row(table, &id(), &at(1), at_it)]}),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{table}: {b}");
        let results = &b["results"][table];
        for i in [0, 1] {
            assert_eq!(results[i]["status"], "rejected", "{table}: {b}");
            let message = results[i]["message"].as_str().unwrap();
            assert!(
                message.contains("3000 bytes") && message.contains(&MAX_KEY_BYTES.to_string()),
                "{table}: {message}"
            );
        }
        assert_eq!(results[2]["status"], "applied", "{table}: {b}");
        let (rows, _) = s.pull_all(&token, None, 1000, None).await;
        assert!(
            !rows.iter().any(|(_, r)| r["remote_id"] == over_id),
            "{table}: nothing of the rejected row is stored"
        );
    }
}

on_both_backends!(key_bytes, keys_over_the_bound_are_rejected_and_at_it_stored);

/// Through the real client: a list named with 3,000 characters is reported rejected, and every
/// sync of the device still succeeds and carries its other rows to the account's other device.
async fn a_device_with_a_long_list_name_keeps_syncing(backend: Backend) {
    let Some(server) = LiveServer::start(backend, "key_bytes_device").await else {
        return;
    };
    let (mut a, mut b) = (Device::new("long-key-a"), Device::new("long-key-b"));
    a.connect(&server.url, "long-key@example.org", true).await;
    b.connect(&server.url, "long-key@example.org", false).await;
    let p = a.store.insert(&mut profile("Alice", None)).unwrap();
    let long = a
        .store
        .insert(&mut list(p, &incompressible(3000, 3)))
        .unwrap();
    a.store.insert(&mut list(p, "Weekend")).unwrap();
    let report = a.sync().await.expect("the sync succeeds");
    assert_eq!(report.rejected, 1, "{report:?}");
    let status = client::status(&a.store, client::Activity::Idle).unwrap();
    assert_eq!(status.rejected.len(), 1, "{status:?}");
    assert_eq!(
        (status.rejected[0].table.as_str(), status.rejected[0].id),
        ("lists", long)
    );
    assert!(
        status.rejected[0].message.contains("at most"),
        "{:?}",
        status.rejected[0]
    );
    // Later writes still go up, and the next sync succeeds too.
    a.store.insert(&mut list(p, "Later")).unwrap();
    a.sync().await.expect("the next sync succeeds");
    b.sync().await.unwrap();
    let names: Vec<String> = b
        .store
        .connection()
        .prepare("SELECT name FROM lists ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(names, ["Later", "Weekend"]);
}

by_backend!(device, a_device_with_a_long_list_name_keeps_syncing);
