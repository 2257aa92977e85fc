//! The device runtime end to end: two or more devices and a real server over loopback HTTP.

use entities::*;
use sync_runtime::client::{self, Activity, LocalData, Remote, SyncError, Transport};
use sync_runtime::{Store, Timestamp};
use tests::device::{Device, LiveServer};
use tests::faulty::{FaultyTransport, sync_or_kill};
use tests::fixtures::{addon, history, live_count, profile, settings_profile};
use tests::server::Backend;

async fn server(test: &str) -> LiveServer {
    LiveServer::start(Backend::Sqlite, test)
        .await
        .expect("a SQLite server always starts")
}

fn now() -> Timestamp {
    Timestamp::now()
}

/// The local id of the row with `remote_id` on `store`.
fn local_id(store: &Store, table: &str, remote_id: &str) -> Option<i64> {
    store
        .connection()
        .query_row(
            &format!("SELECT id FROM {table} WHERE remote_id = ?1 AND deleted_at IS NULL"),
            [remote_id],
            |r| r.get(0),
        )
        .ok()
}

fn remote_id(store: &Store, table: &str, id: i64) -> String {
    store.remote_id(table, id).unwrap().expect("a remote id")
}

struct Ids {
    settings: i64,
    profile: i64,
    addon: i64,
    profile_addon: i64,
    stream: i64,
    appearance: i64,
    list: i64,
    item: i64,
    history: i64,
}

fn list(profile: i64, name: &str) -> List {
    List {
        id: None,
        profile_id: profile,
        name: name.into(),
        is_default: Some(false),
        created_at: Some(now()),
        updated_at: now(),
    }
}

fn item(list: i64, meta: &str) -> ListItem {
    ListItem {
        id: None,
        list_id: list,
        meta_id: meta.into(),
        r#type: "movie".into(),
        title: Some(format!("Title of {meta}")),
        poster: None,
        imdb_rating: Some(8.1),
        created_at: Some(now()),
        updated_at: now(),
    }
}

fn create_everything(s: &mut Store) -> Ids {
    let settings = s
        .insert(&mut SettingsProfile {
            tmdb_catalog_config: Some(serde_json::json!({"lang": "fr"})),
            ..settings_profile("Default")
        })
        .unwrap();
    let profile = s.insert(&mut profile("Alice", Some(settings))).unwrap();
    let addon = s
        .insert(&mut Addon {
            id: None,
            manifest_url: "https://cinemeta.example/manifest.json".into(),
            name: "Cinemeta".into(),
            version: Some("1.0".into()),
            description: None,
            logo: None,
            logo_url: None,
            behavior_hints: None,
            created_at: Some(now()),
        })
        .unwrap();
    let profile_addon = s
        .insert(&mut ProfileAddon {
            id: None,
            profile_id: Some(profile),
            addon_id: addon,
            enabled: Some(true),
            priority: Some(2),
            created_at: Some(now()),
            updated_at: now(),
            settings_profile_id: None,
        })
        .unwrap();
    let stream = s
        .insert(&mut StreamSettings {
            id: None,
            profile_id: Some(profile),
            qualities: Some("4k".into()),
            preferred_keywords: None,
            required_keywords: None,
            config: Some(serde_json::json!({"autoplay": true})),
            settings_profile_id: Some(settings),
            updated_at: now(),
        })
        .unwrap();
    let appearance = s
        .insert(&mut AppearanceSettings {
            id: None,
            settings_profile_id: Some(settings),
            show_imdb_ratings: Some(false),
            show_age_ratings: Some(true),
            updated_at: now(),
        })
        .unwrap();
    let list = s.insert(&mut list(profile, "Favourites")).unwrap();
    let item = s.insert(&mut item(list, "tt0111161")).unwrap();
    let history = s.insert(&mut history(profile, "tt0903747", 1, 1)).unwrap();
    Ids {
        settings,
        profile,
        addon,
        profile_addon,
        stream,
        appearance,
        list,
        item,
        history,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_entity_travels_to_another_device_and_back() {
    let srv = server("every_entity").await;
    let (mut a, mut b) = (Device::new("a"), Device::new("b"));
    a.connect(&srv.url, "everything@example.org", true).await;
    b.connect(&srv.url, "everything@example.org", false).await;
    let ids = create_everything(&mut a.store);
    let report = a.sync().await.unwrap();
    assert_eq!(report.pushed, 8, "every synced row, not the add-on itself");
    b.sync().await.unwrap();

    // B has every record, references resolved to B's own local ids.
    let rid = |t: &str, id: i64| remote_id(&a.store, t, id);
    let b_settings = local_id(
        &b.store,
        "settings_profiles",
        &rid("settings_profiles", ids.settings),
    )
    .expect("settings profile");
    let b_profile_id =
        local_id(&b.store, "profiles", &rid("profiles", ids.profile)).expect("profile");
    let b_profile: Profile = b.store.get(b_profile_id).unwrap().unwrap();
    assert_eq!(b_profile.settings_profile_id, Some(b_settings));
    assert_eq!(b_profile.name, "Alice");
    assert_eq!(
        b_profile.user_id,
        a.store
            .get::<Profile>(ids.profile)
            .unwrap()
            .unwrap()
            .user_id,
        "each device's own local owner (the runtime's, on both)"
    );
    let b_list = local_id(&b.store, "lists", &rid("lists", ids.list)).expect("list");
    let b_item: ListItem = b
        .store
        .get(local_id(&b.store, "list_items", &rid("list_items", ids.item)).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(b_item.list_id, b_list);
    assert_eq!(b_item.imdb_rating, Some(8.1));
    let b_history: WatchHistory = b
        .store
        .get(
            local_id(
                &b.store,
                "watch_history",
                &rid("watch_history", ids.history),
            )
            .unwrap(),
        )
        .unwrap()
        .unwrap();
    assert_eq!(b_history.profile_id, b_profile_id);
    assert_eq!(
        b_history.last_stream,
        Some(serde_json::json!({"url": "magnet:?xt=1", "quality": "1080p"}))
    );
    let b_stream: StreamSettings = b
        .store
        .get(
            local_id(
                &b.store,
                "stream_settings",
                &rid("stream_settings", ids.stream),
            )
            .unwrap(),
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        (b_stream.profile_id, b_stream.settings_profile_id),
        (Some(b_profile_id), Some(b_settings))
    );
    assert!(
        local_id(
            &b.store,
            "appearance_settings",
            &rid("appearance_settings", ids.appearance)
        )
        .is_some()
    );
    // The add-on B never installed arrives as a placeholder named by its URL.
    let b_pa: ProfileAddon = b
        .store
        .get(
            local_id(
                &b.store,
                "profile_addons",
                &rid("profile_addons", ids.profile_addon),
            )
            .unwrap(),
        )
        .unwrap()
        .unwrap();
    let placeholder: Addon = b
        .store
        .get(b_pa.addon_id)
        .unwrap()
        .expect("a placeholder add-on");
    assert_eq!(
        placeholder.manifest_url,
        "https://cinemeta.example/manifest.json"
    );
    assert_eq!(placeholder.name, placeholder.manifest_url);
    assert!(b.store.list_values("addons").unwrap().len() == 1 && ids.addon > 0);
    assert!(
        client::status(&b.store, Activity::Idle)
            .unwrap()
            .pending
            .values()
            .all(|n| *n == 0),
        "pulled rows are clean"
    );

    // Edited on B, appears on A.
    let mut renamed: List = b.store.get(b_list).unwrap().unwrap();
    renamed.name = "Renamed on B".into();
    b.store.update(&renamed).unwrap();
    b.sync().await.unwrap();
    a.sync().await.unwrap();
    assert_eq!(
        a.store.get::<List>(ids.list).unwrap().unwrap().name,
        "Renamed on B"
    );

    // Deleted on A, gone from B with its children.
    a.store.delete::<Profile>(ids.profile).unwrap();
    a.sync().await.unwrap();
    b.sync().await.unwrap();
    for table in [
        "profiles",
        "lists",
        "list_items",
        "watch_history",
        "profile_addons",
        "stream_settings",
    ] {
        assert_eq!(live_count(&b.store, table), 0, "{table} on B");
    }
    assert_eq!(live_count(&b.store, "settings_profiles"), 1);
    assert_eq!(live_count(&b.store, "appearance_settings"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_edits_on_both_devices_converge_by_the_merge_rule() {
    let mut srv = server("offline").await;
    let (mut a, mut b) = (Device::new("a"), Device::new("b"));
    a.connect(&srv.url, "offline@example.org", true).await;
    let p = a.store.insert(&mut profile("P", None)).unwrap();
    let l = a.store.insert(&mut list(p, "Shared")).unwrap();
    a.sync().await.unwrap();
    b.connect(&srv.url, "offline@example.org", false).await;
    let b_l = local_id(&b.store, "lists", &remote_id(&a.store, "lists", l)).unwrap();

    srv.stop().await;
    let mut la: List = a.store.get(l).unwrap().unwrap();
    la.name = "A's name".into();
    a.store.update(&la).unwrap();
    a.store.insert(&mut item(l, "tt-from-a")).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let mut lb: List = b.store.get(b_l).unwrap().unwrap();
    lb.name = "B's name".into();
    b.store.update(&lb).unwrap();
    b.store.insert(&mut item(b_l, "tt-from-b")).unwrap();
    let err = a.sync().await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(b.sync().await.unwrap_err().is_transient());
    let status = client::status(&a.store, Activity::Idle).unwrap();
    assert_eq!(status.pending["lists"], 1);
    assert!(status.last_error.unwrap().contains("cannot reach"));

    srv.restart().await;
    a.sync().await.unwrap();
    b.sync().await.unwrap();
    a.sync().await.unwrap();
    // B's rename is later: it wins everywhere; both new items arrived everywhere.
    assert_eq!(a.store.get::<List>(l).unwrap().unwrap().name, "B's name");
    assert_eq!(b.store.get::<List>(b_l).unwrap().unwrap().name, "B's name");
    let metas = |s: &Store| {
        let mut m: Vec<String> = s
            .list::<ListItem>()
            .unwrap()
            .into_iter()
            .map(|i| i.meta_id)
            .collect();
        m.sort();
        m
    };
    assert_eq!(metas(&a.store), vec!["tt-from-a", "tt-from-b"]);
    assert_eq!(metas(&a.store), metas(&b.store));
    assert!(
        client::status(&a.store, Activity::Idle)
            .unwrap()
            .pending
            .values()
            .all(|n| *n == 0)
    );
}

fn an_hour_behind() -> Timestamp {
    Timestamp::now().add_millis(-3_600_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_whose_clock_is_an_hour_behind_still_wins_with_a_later_edit() {
    let srv = server("skew").await;
    let mut a = Device::new("a");
    let mut slow = Device::with_wall_clock("slow", an_hour_behind);
    a.connect(&srv.url, "skew@example.org", true).await;
    let p = a.store.insert(&mut profile("P", None)).unwrap();
    let l = a.store.insert(&mut list(p, "Before")).unwrap();
    a.sync().await.unwrap();
    slow.connect(&srv.url, "skew@example.org", false).await;
    // A edits again; the slow device pulls that newer version, then edits after seeing it.
    let mut la: List = a.store.get(l).unwrap().unwrap();
    la.name = "A's edit".into();
    a.store.update(&la).unwrap();
    a.sync().await.unwrap();
    slow.sync().await.unwrap();
    let s_l = local_id(&slow.store, "lists", &remote_id(&a.store, "lists", l)).unwrap();
    let mut ls: List = slow.store.get(s_l).unwrap().unwrap();
    assert_eq!(ls.name, "A's edit");
    ls.name = "Slow device's later edit".into();
    slow.store.update(&ls).unwrap();
    slow.sync().await.unwrap();
    a.sync().await.unwrap();
    assert_eq!(
        a.store.get::<List>(l).unwrap().unwrap().name,
        "Slow device's later edit"
    );
    assert_eq!(
        slow.store.get::<List>(s_l).unwrap().unwrap().name,
        "Slow device's later edit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_episode_and_movie_added_offline_on_two_devices_is_one_record() {
    let srv = server("same_record").await;
    let (mut a, mut b) = (Device::new("a"), Device::new("b"));
    a.connect(&srv.url, "same@example.org", true).await;
    let p = a.store.insert(&mut profile("P", None)).unwrap();
    let l = a.store.insert(&mut list(p, "Watchlist")).unwrap();
    a.sync().await.unwrap();
    b.connect(&srv.url, "same@example.org", false).await;
    let (b_p, b_l) = (
        local_id(&b.store, "profiles", &remote_id(&a.store, "profiles", p)).unwrap(),
        local_id(&b.store, "lists", &remote_id(&a.store, "lists", l)).unwrap(),
    );
    a.store.insert(&mut history(p, "tt0903747", 2, 3)).unwrap();
    a.store.insert(&mut item(l, "tt0068646")).unwrap();
    b.store
        .insert(&mut history(b_p, "tt0903747", 2, 3))
        .unwrap();
    b.store.insert(&mut item(b_l, "tt0068646")).unwrap();
    a.sync().await.unwrap();
    b.sync().await.unwrap();
    a.sync().await.unwrap();
    for d in [&a, &b] {
        assert_eq!(live_count(&d.store, "watch_history"), 1);
        assert_eq!(live_count(&d.store, "list_items"), 1);
        let st = client::status(&d.store, Activity::Idle).unwrap();
        assert!(
            st.rejected.is_empty() && st.parked == 0 && st.last_error.is_none(),
            "{st:?}"
        );
    }
    let ra: Vec<String> = a
        .store
        .list::<ListItem>()
        .unwrap()
        .iter()
        .map(|i| remote_id(&a.store, "list_items", i.id.unwrap()))
        .collect();
    let rb: Vec<String> = b
        .store
        .list::<ListItem>()
        .unwrap()
        .iter()
        .map(|i| remote_id(&b.store, "list_items", i.id.unwrap()))
        .collect();
    assert_eq!(ra, rb, "both devices know the record by one id");
}

// One thread: the client reads its next batch before the push task runs, so the edit made as
// the push is sent waits for the next sync, and only the stamp check keeps it dirty.
#[tokio::test]
async fn a_row_edited_while_its_push_is_in_flight_stays_dirty() {
    let srv = server("dirty_race").await;
    let (mut a, mut b) = (Device::new("a"), Device::new("b"));
    a.connect(&srv.url, "race@example.org", true).await;
    let p = a.store.insert(&mut profile("P", None)).unwrap();
    let l = a.store.insert(&mut list(p, "First")).unwrap();
    // The edit lands between reading the row and the push's answer.
    let url = a.store.session().unwrap().0.unwrap();
    let transport = FaultyTransport::new(&url, 0);
    let (path, edit) = (a.path.clone(), std::sync::Mutex::new(true));
    transport.before_each_push(move || {
        if std::mem::take(&mut *edit.lock().unwrap()) {
            let mut other = Store::open(&path, entities::app()).unwrap();
            let mut edited: List = other.get(l).unwrap().unwrap();
            edited.name = "Edited in flight".into();
            other.update(&edited).unwrap();
        }
    });
    sync_or_kill(&mut a.store, transport, Default::default(), None)
        .await
        .unwrap()
        .unwrap();
    assert!(!a.store.is_dirty("profiles", p).unwrap());
    assert!(
        a.store.is_dirty("lists", l).unwrap(),
        "the in-flight edit is still to push"
    );
    a.sync().await.unwrap();
    b.connect(&srv.url, "race@example.org", false).await;
    assert_eq!(b.store.list::<List>().unwrap()[0].name, "Edited in flight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_whose_answer_is_lost_and_a_pull_cut_midway_resume_without_loss_or_duplicates() {
    let srv = server("interrupted").await;
    let (mut a, mut b) = (Device::new("a"), Device::new("b"));
    a.connect(&srv.url, "cut@example.org", true).await;
    let p = a.store.insert(&mut profile("P", None)).unwrap();
    for i in 0..30 {
        a.store
            .insert(&mut history(p, &format!("tt{i}"), 1, i))
            .unwrap();
    }
    // The server commits the push, but the process dies before it reads the answer.
    let url = a.store.session().unwrap().0.unwrap();
    let transport = FaultyTransport::new(&url, 0);
    transport.lose_push_answers(1);
    let lost = sync_or_kill(&mut a.store, transport, Default::default(), None).await;
    assert!(lost.unwrap().is_err(), "the answer was lost");
    a.restart();
    assert_eq!(
        client::status(&a.store, Activity::Idle).unwrap().pending["watch_history"],
        30,
        "nothing was marked clean"
    );
    let r = a.sync().await.unwrap();
    assert_eq!(r.pushed, 31, "the retry sends the same ids again");

    // B pulls in pages of 4 and dies after two of them.
    b.connect(&srv.url, "cut@example.org", false).await;
    let mut c = Device::new("c");
    c.connect_with(&srv.url, "cut@example.org", false, LocalData::Upload)
        .await
        .unwrap();
    c.store.restart_full_pull().unwrap();
    c.restart();
    let url = c.store.session().unwrap().0.unwrap();
    let limits = client::Limits {
        push_batch: 1000,
        pull_limit: 4,
    };
    let killed = sync_or_kill(&mut c.store, FaultyTransport::new(&url, 0), limits, Some(2));
    assert!(killed.await.is_none(), "the kill struck mid-pull");
    c.restart();
    c.sync().await.unwrap();
    for d in [&a, &b, &c] {
        assert_eq!(live_count(&d.store, "watch_history"), 30);
        assert_eq!(live_count(&d.store, "profiles"), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_sync_database_uploads_everything_to_an_empty_account() {
    let srv = server("pre_sync").await;
    let path = std::env::temp_dir().join(format!("pre-sync-device-{}.sqlite", std::process::id()));
    let _ = std::fs::remove_file(&path);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(tests::PRE_SYNC_SCHEMA).unwrap();
        tests::populate_pre_sync(&conn, 3);
    }
    let mut old = Device::at(path);
    let live: i64 = entities::app()
        .schema
        .synced()
        .map(|t| live_count(&old.store, &t.name))
        .sum();
    let report = old.connect(&srv.url, "upgrade@example.org", true).await;
    assert_eq!(
        report.pushed as i64, live,
        "every existing row went up: {report:?}"
    );
    let mut fresh = Device::new("fresh");
    fresh.connect(&srv.url, "upgrade@example.org", false).await;
    for t in entities::app().schema.synced() {
        assert_eq!(
            live_count(&old.store, &t.name),
            live_count(&fresh.store, &t.name),
            "{}",
            t.name
        );
        assert!(live_count(&fresh.store, &t.name) > 0, "{}", t.name);
    }
    let names = |s: &Store| {
        let mut v: Vec<String> = s
            .list::<Profile>()
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&old.store), names(&fresh.store));
    assert!(
        client::status(&old.store, Activity::Idle)
            .unwrap()
            .pending
            .values()
            .all(|n| *n == 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_row_does_not_stop_the_others_and_shows_in_the_status() {
    let srv = server("rejected").await;
    let (mut a, mut b) = (Device::new("a"), Device::new("b"));
    a.connect(&srv.url, "reject@example.org", true).await;
    let ids = create_everything(&mut a.store);
    a.sync().await.unwrap();
    b.connect(&srv.url, "reject@example.org", false).await;
    let rid = |t: &str, id: i64| remote_id(&a.store, t, id);
    let (b_p, b_s) = (
        local_id(&b.store, "profiles", &rid("profiles", ids.profile)).unwrap(),
        local_id(
            &b.store,
            "settings_profiles",
            &rid("settings_profiles", ids.settings),
        )
        .unwrap(),
    );
    // A enables a second add-on for the settings profile; B, before pulling that, enables the same
    // add-on for both the profile and the settings profile in one row: two natural keys, two records.
    let addon2 = a
        .store
        .insert(&mut addon("https://two.example/manifest.json", "Two"))
        .unwrap();
    a.store
        .insert(&mut ProfileAddon {
            id: None,
            profile_id: Some(ids.profile),
            addon_id: addon2,
            enabled: Some(true),
            priority: Some(0),
            created_at: None,
            updated_at: now(),
            settings_profile_id: None,
        })
        .unwrap();
    a.store
        .insert(&mut ProfileAddon {
            id: None,
            profile_id: None,
            addon_id: addon2,
            enabled: Some(true),
            priority: Some(0),
            created_at: None,
            updated_at: now(),
            settings_profile_id: Some(ids.settings),
        })
        .unwrap();
    a.sync().await.unwrap();
    let b_addon2 = b
        .store
        .insert(&mut addon("https://two.example/manifest.json", "Two"))
        .unwrap();
    let bad = b
        .store
        .insert(&mut ProfileAddon {
            id: None,
            profile_id: Some(b_p),
            addon_id: b_addon2,
            enabled: Some(false),
            priority: Some(9),
            created_at: None,
            updated_at: now(),
            settings_profile_id: Some(b_s),
        })
        .unwrap();
    let fine = b
        .store
        .insert(&mut list(b_p, "Pushed beside the rejected row"))
        .unwrap();
    let report = b.sync().await.unwrap();
    assert_eq!(report.rejected, 1, "{report:?}");
    assert!(
        !b.store.is_dirty("lists", fine).unwrap(),
        "the other rows went through"
    );
    assert!(
        b.store.is_dirty("profile_addons", bad).unwrap(),
        "the rejected row stays dirty"
    );
    let st = client::status(&b.store, Activity::Idle).unwrap();
    assert_eq!(st.rejected.len(), 1);
    assert_eq!(
        (st.rejected[0].table.as_str(), st.rejected[0].id),
        ("profile_addons", bad)
    );
    assert!(
        st.rejected[0].message.contains("two"),
        "{}",
        st.rejected[0].message
    );
    // Not retried until it changes.
    let again = b.sync().await.unwrap();
    assert_eq!(again.pushed, 0);
    a.sync().await.unwrap();
    assert!(
        a.store
            .list::<List>()
            .unwrap()
            .iter()
            .any(|l| l.name == "Pushed beside the rejected row")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_moved_to_another_account_uploads_its_data_there() {
    let srv = server("switch").await;
    let mut a = Device::new("a");
    a.connect(&srv.url, "x@example.org", true).await;
    let ids = create_everything(&mut a.store);
    a.store.delete::<ListItem>(ids.item).unwrap();
    a.sync().await.unwrap();
    // The same database, now connected to account Y.
    let report = a.connect(&srv.url, "y@example.org", true).await;
    assert_eq!(
        report.pushed, 7,
        "every live row, tombstones dropped: {report:?}"
    );
    let st = client::status(&a.store, Activity::Idle).unwrap();
    assert!(
        st.rejected.is_empty(),
        "nothing refused for ids owned by X: {:?}",
        st.rejected
    );
    let mut y = Device::new("y");
    y.connect(&srv.url, "y@example.org", false).await;
    for t in entities::app().schema.synced() {
        assert_eq!(
            live_count(&y.store, &t.name),
            live_count(&a.store, &t.name),
            "{}",
            t.name
        );
    }
    let account: String = a
        .store
        .connection()
        .query_row("SELECT remote_user_id FROM sync_state", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        a.store
            .get::<Profile>(ids.profile)
            .unwrap()
            .unwrap()
            .user_id,
        sync_runtime::store::LOCAL_ACCOUNT,
        "the owner column is the app's: connecting to another account leaves it"
    );
    assert_ne!(account, sync_runtime::store::LOCAL_ACCOUNT);
    // X keeps its own copy.
    let mut x = Device::new("x");
    x.connect(&srv.url, "x@example.org", false).await;
    assert_eq!(live_count(&x.store, "list_items"), 0);
    assert_eq!(live_count(&x.store, "lists"), 1);

    // A new device with its own default profile, connected with `discard`, ends with exactly Y's data.
    let mut d = Device::new("d");
    d.store
        .insert(&mut profile("My own default", None))
        .unwrap();
    d.connect_with(&srv.url, "y@example.org", false, LocalData::Discard)
        .await
        .unwrap();
    let names: Vec<String> = d
        .store
        .list::<Profile>()
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, vec!["Alice".to_owned()]);
    // And with `upload` (the default) the device's own profile joins the account's.
    let mut e = Device::new("e");
    e.store.insert(&mut profile("E's default", None)).unwrap();
    e.connect(&srv.url, "y@example.org", false).await;
    assert_eq!(live_count(&e.store, "profiles"), 2);
}

/// The server revokes `store`'s token (as on a password change elsewhere).
async fn revoke_token(store: &Store) {
    let (url, token) = store.session().unwrap();
    Remote::new(&url.unwrap())
        .unwrap()
        .sign_out(&token.unwrap())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_stops_syncing_and_asks_to_sign_in_again_keeping_dirty_rows() {
    let srv = server("signin").await;
    let mut a = Device::new("a");
    a.connect(&srv.url, "token@example.org", true).await;
    revoke_token(&a.store).await;
    let p = a
        .store
        .insert(&mut profile("Written after the token died", None))
        .unwrap();
    let err = a.sync().await.unwrap_err();
    assert!(matches!(err, SyncError::SignInAgain(_)), "{err}");
    let st = client::status(&a.store, Activity::Idle).unwrap();
    assert!(st.needs_sign_in && !st.connected, "{st:?}");
    assert!(st.last_error.unwrap().starts_with("sign in again"));
    assert!(a.store.is_dirty("profiles", p).unwrap());
    assert!(matches!(
        a.sync().await.unwrap_err(),
        SyncError::NotConnected
    ));
    a.connect(&srv.url, "token@example.org", false).await;
    assert!(
        !a.store.is_dirty("profiles", p).unwrap(),
        "signed in again, the row went up"
    );
    client::disconnect(&mut a.store).await.unwrap();
    assert!(!client::status(&a.store, Activity::Idle).unwrap().connected);
    assert_eq!(
        live_count(&a.store, "profiles"),
        1,
        "disconnecting keeps the local data"
    );
}

/// Whether the user must sign in again is stored state, not read from an error's text: a
/// refused token records it (kept across a restart and a sync refused for want of a token),
/// and a sign-in that succeeds ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_recorded_as_state_until_a_new_sign_in() {
    let srv = server("refused_state").await;
    let mut a = Device::new("a");
    a.connect(&srv.url, "refused@example.org", true).await;
    assert!(!a.store.status_row().unwrap().token_refused);
    revoke_token(&a.store).await;
    let err = a.sync().await.unwrap_err();
    assert!(matches!(err, SyncError::SignInAgain(_)), "{err}");
    let row = a.store.status_row().unwrap();
    assert!(row.token_refused && row.token.is_none(), "{row:?}");

    a.restart();
    assert!(matches!(
        a.sync().await.unwrap_err(),
        SyncError::NotConnected
    ));
    let st = client::status(&a.store, Activity::Idle).unwrap();
    assert!(st.needs_sign_in && !st.connected, "{st:?}");

    a.connect(&srv.url, "refused@example.org", false).await;
    let st = client::status(&a.store, Activity::Idle).unwrap();
    assert!(!st.needs_sign_in && st.connected, "{st:?}");
    assert!(!a.store.status_row().unwrap().token_refused);
}

/// A database that was asked to sign in again before the state had a column of its own (its
/// last error the refusal's, the token forgotten) still asks after the upgrade.
#[test]
fn a_refusal_recorded_before_the_upgrade_still_asks_to_sign_in() {
    use sync_runtime::migrate;
    use sync_runtime::store::RUNTIME_MIGRATIONS;
    let path = std::env::temp_dir().join(format!(
        "device-upgrade-{}-{}.sqlite",
        std::process::id(),
        sync_runtime::server::db::new_id()
    ));
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    migrate::apply_sqlite(&mut conn, "sync-runtime", &RUNTIME_MIGRATIONS[..3]).unwrap();
    conn.execute(
        "UPDATE sync_state SET remote_url = 'http://127.0.0.1:9', remote_user_id = 'u1', \
         auth_token = NULL, last_error = 'sign in again: the token is unknown' WHERE id = 1",
        [],
    )
    .unwrap();
    drop(conn);
    let d = Device::at(path);
    let st = client::status(&d.store, Activity::Idle).unwrap();
    assert!(st.needs_sign_in && !st.connected, "{st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_service_syncs_soon_after_a_local_write_and_reports_status() {
    use std::time::Duration;
    use sync_runtime::client::{ServiceOptions, SyncService};
    let srv = server("service").await;
    let (mut a, mut b) = (Device::new("a"), Device::new("b"));
    a.connect(&srv.url, "service@example.org", true).await;
    b.connect(&srv.url, "service@example.org", false).await;
    let options = ServiceOptions {
        period: Duration::from_secs(3600),
        debounce: Duration::from_millis(50),
        // The triggers alone: a held pull would bring B's row before `sync_now` does.
        live_wait: None,
        ..Default::default()
    };
    let service = SyncService::start(a.store.reopen().unwrap(), options);
    a.store.set_write_hook(service.write_hook());
    let mut status = service.status();
    // The start-up sync: the status starts with the time of the sync `connect` made.
    let connected_at = status.borrow().last_sync_at.clone();
    assert!(connected_at.is_some());
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.last_sync_at != connected_at && !s.syncing),
    )
    .await
    .expect("a sync at start")
    .unwrap();
    let first = status.borrow().last_sync_at.clone();
    a.store
        .insert(&mut profile("Written by the app", None))
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.last_sync_at != first && s.pending.values().all(|n| *n == 0)),
    )
    .await
    .expect("a sync soon after the write")
    .unwrap();
    b.sync().await.unwrap();
    assert_eq!(
        b.store.list::<Profile>().unwrap()[0].name,
        "Written by the app"
    );
    // On demand.
    b.store.insert(&mut profile("From B", None)).unwrap();
    b.sync().await.unwrap();
    let report = service.sync_now().await.unwrap();
    assert_eq!(report.pulled, 1);
    assert_eq!(
        live_count(&a.store, "profiles"),
        2,
        "the app's connection sees what the service pulled"
    );
    // An update wakes the service as an insert does (it once did not).
    let before = status.borrow().last_sync_at.clone();
    let mut p = a
        .store
        .list::<Profile>()
        .unwrap()
        .into_iter()
        .find(|p| p.name == "Written by the app")
        .unwrap();
    p.name = "Renamed by the app".into();
    a.store.update(&p).unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.last_sync_at != before && s.pending.values().all(|n| *n == 0)),
    )
    .await
    .expect("a sync soon after the update")
    .unwrap();
    b.sync().await.unwrap();
    assert!(
        b.store
            .list::<Profile>()
            .unwrap()
            .iter()
            .any(|p| p.name == "Renamed by the app")
    );
    service.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answered_413_is_halved_until_it_fits() {
    let config = sync_runtime::server::ServerConfig {
        max_push_rows: 7,
        ..Default::default()
    };
    let srv = LiveServer::start_with(Backend::Sqlite, "halving", config)
        .await
        .unwrap();
    let mut a = Device::new("a");
    a.connect(&srv.url, "halve@example.org", true).await;
    let p = a.store.insert(&mut profile("P", None)).unwrap();
    for i in 0..40 {
        a.store
            .insert(&mut history(p, &format!("tt{i}"), 0, i))
            .unwrap();
    }
    let report = a.sync().await.unwrap();
    assert_eq!((report.pushed, report.rejected), (41, 0), "{report:?}");
    let mut b = Device::new("b");
    b.connect(&srv.url, "halve@example.org", false).await;
    assert_eq!(live_count(&b.store, "watch_history"), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_cursor_pulls_everything_again_and_drops_what_the_account_lost() {
    let srv = server("expired_cursor").await;
    let (mut a, mut b) = (Device::new("a"), Device::new("b"));
    a.connect(&srv.url, "expired@example.org", true).await;
    let p = a.store.insert(&mut profile("P", None)).unwrap();
    let l = a.store.insert(&mut list(p, "Gone soon")).unwrap();
    let keep = a.store.insert(&mut list(p, "Kept")).unwrap();
    a.sync().await.unwrap();
    b.connect(&srv.url, "expired@example.org", false).await;
    // B goes quiet; A deletes a list, and the server purges the tombstone before B is back.
    a.store.delete::<List>(l).unwrap();
    a.sync().await.unwrap();
    let purged = srv
        .server
        .as_ref()
        .unwrap()
        .purge_tombstones(Timestamp::now().add_millis(60_000))
        .await
        .unwrap();
    assert!(purged >= 1);
    // Meanwhile B edited the other list offline.
    let b_keep = local_id(&b.store, "lists", &remote_id(&a.store, "lists", keep)).unwrap();
    let mut edited: List = b.store.get(b_keep).unwrap().unwrap();
    edited.name = "Kept and edited on B".into();
    b.store.update(&edited).unwrap();
    let report = b.sync().await.unwrap();
    assert!(
        report.full_pull,
        "the 410 made B pull everything again: {report:?}"
    );
    let names: Vec<String> = b
        .store
        .list::<List>()
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(
        names,
        vec!["Kept and edited on B".to_owned()],
        "the purged list is gone, the dirty edit kept"
    );
    a.sync().await.unwrap();
    assert_eq!(
        a.store.get::<List>(keep).unwrap().unwrap().name,
        "Kept and edited on B"
    );
}

/// A server that keeps to the protocol's body alone (no `X-Sync-Cursor` head): the device
/// learns each next cursor from the page it decodes, and still pulls every page in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_from_a_server_without_cursor_headers_are_pulled_in_order() {
    use axum::extract::Query;
    use std::collections::HashMap;
    use tests::server::{at, id, row};
    let ids: Vec<String> = (0..3).map(|_| id()).collect();
    let pages: Vec<serde_json::Value> = ids
        .iter()
        .enumerate()
        .map(|(i, rid)| {
            serde_json::json!({
                "changes": {"profiles": [row("profiles", rid, &at(i as i64 + 1), serde_json::json!({"name": format!("P{i}"), "avatar": "a"}))]},
                "cursor": format!("c1.1.{}", i + 1),
                "has_more": i < 2,
                "server_time": at(10),
            })
        })
        .collect();
    let app = axum::Router::new().route(
        "/api/sync/pull",
        axum::routing::get(move |Query(q): Query<HashMap<String, String>>| {
            let pages = pages.clone();
            async move {
                let n = match q.get("since").map(String::as_str) {
                    None => 0,
                    Some(c) => c.rsplit('.').next().unwrap().parse::<usize>().unwrap(),
                };
                axum::Json(pages[n].clone())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut store = Store::open_in_memory(entities::app()).unwrap();
    store
        .save_session(&url, &id(), "a token the stub takes")
        .unwrap();
    let report = client::sync_once(&mut store, &mut |_| {}).await.unwrap();
    assert_eq!((report.pages, report.pulled), (3, 3));
    let mut names: Vec<String> = store
        .list::<Profile>()
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    names.sort();
    assert_eq!(names, ["P0", "P1", "P2"]);
    assert_eq!(store.cursor().unwrap().as_deref(), Some("c1.1.3"));
}

/// Simulation seed 3232: a full pull was cut short after this device's push had marked its
/// profile as one the server holds; another device deleted the profile; the full pull that
/// started over began after that deletion, so it neither returned the profile nor its
/// tombstone, and the earlier mark kept the profile here, live, for good.
#[tokio::test]
async fn a_full_pull_that_starts_over_forgets_what_an_earlier_attempt_saw() {
    let srv = server("full_pull_starts_over").await;
    let (mut a, mut b) = (Device::new("a"), Device::new("b"));
    a.connect(&srv.url, "over@example.org", true).await;
    let p = a
        .store
        .insert(&mut profile("Deleted elsewhere", None))
        .unwrap();
    a.sync().await.unwrap();
    b.connect(&srv.url, "over@example.org", false).await;
    // A's cursor expires; its next sync pushes an edit of the profile (marking it as held by
    // the server) and is killed before the full pull's first page is stored.
    a.store.restart_full_pull().unwrap();
    let mut edited: Profile = a.store.get(p).unwrap().unwrap();
    edited.name = "Edited on A".into();
    edited.updated_at = now();
    a.store.update(&edited).unwrap();
    let url = a.store.session().unwrap().0.unwrap();
    let killed = sync_or_kill(
        &mut a.store,
        FaultyTransport::new(&url, 0),
        Default::default(),
        Some(1),
    );
    assert!(killed.await.is_none(), "killed after the push");
    a.restart();
    // B deletes the profile; A's full pull then starts over, after the deletion.
    let bp = b.store.list::<Profile>().unwrap()[0].id.unwrap();
    b.store.delete::<Profile>(bp).unwrap();
    b.sync().await.unwrap();
    let r = a.sync().await.unwrap();
    assert!(r.full_pull);
    assert!(
        a.store.get::<Profile>(p).unwrap().is_none(),
        "the profile the account no longer holds is gone here too"
    );
}
