//! An account at a real size through the client users run, on both backends: two devices that
//! were offline write tens of thousands of rows, many of them the same episodes, and meet again.
//! The collisions fall in every push batch and every pull page, not only the first.

use std::collections::{BTreeMap, HashSet};
use sync_runtime::client::{self, Activity};
use tests::by_backend;
use tests::device::{Device, LiveServer};
use tests::fixtures::{history, live_count, profile};
use tests::server::Backend;

/// Rows the first device writes while offline.
const FIRST: usize = 30_000;
/// Rows the second writes: every other one an episode the first also wrote.
const SECOND: usize = 6_000;
/// The position the second device gives what it writes, the later write of each collision.
const SECOND_POSITION: i64 = 777_000;

/// The episode key of row `i` of the first device: 100 episodes per series.
fn episode(i: usize) -> (String, i64, i64) {
    (
        format!("tt{:07}", i / 100),
        (i % 100 / 20) as i64,
        (i % 20) as i64,
    )
}

/// A device's live watch history by episode: (remote id, position, dirty).
fn history_by_episode(d: &Device) -> BTreeMap<(String, i64, i64), (String, i64, bool)> {
    let conn = d.store.connection();
    let mut stmt = conn
        .prepare(
            "SELECT meta_id, season, episode, remote_id, position, dirty FROM watch_history \
             WHERE deleted_at IS NULL",
        )
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok((
                (r.get(0)?, r.get(1)?, r.get(2)?),
                (r.get(3)?, r.get(4)?, r.get(5)?),
            ))
        })
        .unwrap();
    let mut out = BTreeMap::new();
    for row in rows {
        let (key, value) = row.unwrap();
        assert!(
            out.insert(key, value).is_none(),
            "one live row per episode on a device"
        );
    }
    out
}

/// Writes through the store as the app does; the device's file skips fsync while it is filled,
/// which changes nothing but the time the test takes.
fn write_offline(d: &mut Device, rows: impl Iterator<Item = entities::WatchHistory>) {
    d.store
        .connection()
        .pragma_update(None, "synchronous", "OFF")
        .unwrap();
    for mut row in rows {
        d.store.insert(&mut row).unwrap();
    }
    d.store
        .connection()
        .pragma_update(None, "synchronous", "NORMAL")
        .unwrap();
}

by_backend!(
    two_devices_offline_with_thousands_of_the_same_episodes_meet_as_one_history,
    offline_collisions_at_size
);
async fn offline_collisions_at_size(backend: Backend) {
    let Some(srv) = LiveServer::start(backend, "large_account_collisions").await else {
        return;
    };
    let mut a = Device::new(&format!("large-a-{backend:?}"));
    a.connect(&srv.url, "large@example.org", true).await;
    let p = a.store.insert(&mut profile("Alice", None)).unwrap();
    a.sync().await.unwrap();
    let mut b = Device::new(&format!("large-b-{backend:?}"));
    b.connect(&srv.url, "large@example.org", false).await;
    let b_profile: i64 = b
        .store
        .connection()
        .query_row("SELECT id FROM profiles", [], |r| r.get(0))
        .unwrap();

    // Both offline. A writes FIRST episodes; B writes SECOND after it, alternating between an
    // episode A also wrote (spread over A's whole history) and one of its own.
    write_offline(
        &mut a,
        (0..FIRST).map(|i| {
            let (meta, season, ep) = episode(i);
            history(p, &meta, season, ep)
        }),
    );
    let shared: HashSet<usize> = (0..SECOND / 2)
        .map(|j| j * (FIRST / (SECOND / 2)))
        .collect();
    write_offline(
        &mut b,
        (0..SECOND).map(|j| {
            let mut row = if j % 2 == 0 {
                let (meta, season, ep) = episode(j / 2 * (FIRST / (SECOND / 2)));
                history(b_profile, &meta, season, ep)
            } else {
                history(b_profile, &format!("bb{j:07}"), 1, 1)
            };
            row.position = Some(SECOND_POSITION + j as i64);
            row
        }),
    );
    assert_eq!(shared.len(), SECOND / 2);

    // Back online: A uploads; B uploads (half its rows merge into A's records, in every
    // batch) and pulls A's history over many pages; A pulls B's.
    let r = a.sync().await.unwrap();
    assert_eq!(r.pushed, FIRST, "{r:?}");
    let r = b.sync().await.unwrap();
    assert_eq!(r.pushed, SECOND, "{r:?}");
    assert!(r.pages > 3, "the pull spans pages: {r:?}");
    let r = a.sync().await.unwrap();
    assert!(r.pulled >= SECOND, "{r:?}");

    let expected = FIRST + SECOND / 2;
    let on_a = history_by_episode(&a);
    let on_b = history_by_episode(&b);
    assert_eq!(on_a.len(), expected, "{backend:?}");
    assert_eq!(live_count(&b.store, "watch_history"), expected as i64);
    assert_eq!(
        on_a, on_b,
        "both devices hold the same records, ids and values"
    );
    for (i, key) in (0..FIRST).map(|i| (i, episode(i))) {
        let (_, position, dirty) = &on_a[&key];
        assert!(!dirty, "{key:?} is synced");
        if shared.contains(&i) {
            assert!(
                *position >= SECOND_POSITION,
                "{key:?}: B's later write won the merge, found {position}"
            );
        } else {
            assert_eq!(*position, 60_000, "{key:?} as A wrote it");
        }
    }
    for d in [&a, &b] {
        let status = client::status(&d.store, Activity::Idle).unwrap();
        assert!(
            status.pending.values().all(|n| *n == 0)
                && status.rejected.is_empty()
                && status.parked == 0,
            "{status:?}"
        );
    }
}
