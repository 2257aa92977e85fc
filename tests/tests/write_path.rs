//! The app's write path: every insert, update and delete marks the row dirty and stamps it from
//! the sync clock; deletes are tombstones that cascade.

use entities::*;
use sync_runtime::store::StoreError;
use sync_runtime::{Store, Syncable, Timestamp};
use tests::fixtures::{self, addon, profile, settings_profile};

fn open() -> Store {
    Store::open_in_memory(entities::app()).unwrap()
}

fn bookkeeping(
    store: &Store,
    table: &str,
    id: i64,
) -> (Option<String>, Option<String>, bool, String) {
    store
        .connection()
        .query_row(
            &format!("SELECT remote_id, deleted_at, dirty, updated_at FROM {table} WHERE id = ?1"),
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap()
}

fn clean_all(store: &Store) {
    for t in store.app().schema.synced() {
        store
            .connection()
            .execute(&format!("UPDATE {} SET dirty = FALSE", t.name), [])
            .unwrap();
    }
}

struct Tree {
    settings: i64,
    profile: i64,
    list: i64,
    item: i64,
    history: i64,
    stream: i64,
    appearance: i64,
    profile_addon: i64,
    addon: i64,
}

fn tree(store: &mut Store) -> Tree {
    let now = Timestamp::now();
    let settings = store.insert(&mut settings_profile("Default")).unwrap();
    let profile = store
        .insert(&mut Profile {
            avatar_type: None,
            ..profile("Alice", Some(settings))
        })
        .unwrap();
    let addon = store
        .insert(&mut Addon {
            created_at: Some(now),
            ..addon("https://addon.example/manifest.json", "Addon")
        })
        .unwrap();
    let profile_addon = store
        .insert(&mut ProfileAddon {
            id: None,
            profile_id: Some(profile),
            addon_id: addon,
            enabled: Some(true),
            priority: Some(0),
            created_at: Some(now),
            updated_at: now,
            settings_profile_id: None,
        })
        .unwrap();
    let stream = store
        .insert(&mut StreamSettings {
            id: None,
            profile_id: Some(profile),
            qualities: None,
            preferred_keywords: None,
            required_keywords: None,
            config: None,
            settings_profile_id: Some(settings),
            updated_at: now,
        })
        .unwrap();
    let appearance = store
        .insert(&mut AppearanceSettings {
            id: None,
            settings_profile_id: Some(settings),
            show_imdb_ratings: Some(true),
            show_age_ratings: Some(true),
            updated_at: now,
        })
        .unwrap();
    let list = store
        .insert(&mut fixtures::list(profile, "Favourites"))
        .unwrap();
    let item = store.insert(&mut list_item(list, "tt0111161")).unwrap();
    let history = store
        .insert(&mut WatchHistory {
            id: None,
            profile_id: profile,
            meta_id: "tt0111161".into(),
            meta_type: "movie".into(),
            season: -1,
            episode: -1,
            episode_id: None,
            title: None,
            poster: None,
            duration: None,
            position: Some(10),
            is_watched: None,
            watched_at: None,
            last_stream: None,
            updated_at: now,
        })
        .unwrap();
    Tree {
        settings,
        profile,
        list,
        item,
        history,
        stream,
        appearance,
        profile_addon,
        addon,
    }
}

fn list_item(list: i64, meta: &str) -> ListItem {
    ListItem {
        title: Some("A film".into()),
        ..fixtures::list_item(list, meta)
    }
}

#[test]
fn insert_marks_dirty_stamps_and_assigns_a_uuid_v7_remote_id() {
    let mut store = open();
    let before = Timestamp::now();
    let t = tree(&mut store);
    let (remote_id, deleted, dirty, updated_at) = bookkeeping(&store, "list_items", t.item);
    let remote_id = remote_id.expect("a remote id from creation on");
    let uuid = uuid_version(&remote_id);
    assert_eq!(uuid, 7, "{remote_id} is a UUIDv7");
    assert!(deleted.is_none() && dirty);
    assert!(Timestamp::parse_wire(&updated_at).unwrap() >= before);
    let counts = store.dirty_counts().unwrap();
    assert_eq!(counts.len(), 8, "every synced table, and no other");
    assert!(counts.iter().all(|(_, n)| *n == 1), "{counts:?}");
}

fn uuid_version(s: &str) -> u32 {
    let b = s.as_bytes();
    assert_eq!(s.len(), 36, "{s}");
    (b[14] as char).to_digit(16).unwrap()
}

#[test]
fn update_marks_dirty_and_stamps_above_the_previous_stamp_even_with_a_clock_behind() {
    fn an_hour_ago() -> Timestamp {
        Timestamp::now().add_millis(-3_600_000)
    }
    let path = std::env::temp_dir().join(format!("write-path-{}.sqlite", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut store = Store::open(&path, entities::app()).unwrap();
    let t = tree(&mut store);
    drop(store);
    // The same database on a device whose wall clock is an hour behind.
    let mut store = Store::open_with_wall_clock(&path, entities::app(), an_hour_ago).unwrap();
    clean_all(&store);
    let (_, _, _, first) = bookkeeping(&store, "lists", t.list);
    let mut list: List = store.get(t.list).unwrap().unwrap();
    list.name = "Renamed".into();
    store.update(&list).unwrap();
    let (_, _, dirty, second) = bookkeeping(&store, "lists", t.list);
    assert!(dirty);
    assert!(second > first, "{second} must be above {first}");
    store.update(&list).unwrap();
    let (_, _, _, third) = bookkeeping(&store, "lists", t.list);
    assert!(
        third > second,
        "a second edit in the same millisecond still moves the stamp"
    );
    // Only the edited row is dirty.
    assert!(!store.is_dirty("list_items", t.item).unwrap());
    drop(store);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn deleting_a_profile_tombstones_its_children_and_keeps_its_siblings() {
    let mut store = open();
    let t = tree(&mut store);
    clean_all(&store);
    store.delete::<Profile>(t.profile).unwrap();
    for (table, id) in [
        ("profiles", t.profile),
        ("lists", t.list),
        ("list_items", t.item),
        ("watch_history", t.history),
        ("stream_settings", t.stream),
        ("profile_addons", t.profile_addon),
    ] {
        let (_, deleted, dirty, updated_at) = bookkeeping(&store, table, id);
        assert_eq!(
            deleted.as_deref(),
            Some(updated_at.as_str()),
            "{table}: a tombstone stamped once"
        );
        assert!(dirty, "{table}: the tombstone waits to be pushed");
    }
    assert!(store.get::<Profile>(t.profile).unwrap().is_none());
    assert!(store.list::<ListItem>().unwrap().is_empty());
    for (table, id) in [
        ("settings_profiles", t.settings),
        ("appearance_settings", t.appearance),
    ] {
        let (_, deleted, dirty, _) = bookkeeping(&store, table, id);
        assert!(
            deleted.is_none() && !dirty,
            "{table} is not a child of the profile"
        );
    }
    let err = store.delete::<Profile>(t.profile).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
}

#[test]
fn deleting_a_settings_profile_nulls_set_null_references_and_cascades_the_rest() {
    let mut store = open();
    let t = tree(&mut store);
    clean_all(&store);
    store.delete::<SettingsProfile>(t.settings).unwrap();
    let profile: Profile = store
        .get(t.profile)
        .unwrap()
        .expect("SET NULL keeps the profile");
    assert_eq!(profile.settings_profile_id, None);
    assert!(store.is_dirty("profiles", t.profile).unwrap());
    for (table, id) in [
        ("appearance_settings", t.appearance),
        ("stream_settings", t.stream),
    ] {
        let (_, deleted, dirty, _) = bookkeeping(&store, table, id);
        assert!(deleted.is_some() && dirty, "{table} cascades");
    }
    let (_, deleted, _, _) = bookkeeping(&store, "lists", t.list);
    assert!(deleted.is_none());
}

#[test]
fn re_adding_a_deleted_record_revives_the_tombstone() {
    let mut store = open();
    let t = tree(&mut store);
    let (remote_id, _, _, _) = bookkeeping(&store, "list_items", t.item);
    store.delete::<ListItem>(t.item).unwrap();
    clean_all(&store);
    let mut again = list_item(t.list, "tt0111161");
    again.title = Some("Back again".into());
    let id = store.insert(&mut again).unwrap();
    assert_eq!(id, t.item, "the same row");
    let (remote_again, deleted, dirty, _) = bookkeeping(&store, "list_items", id);
    assert_eq!(remote_again, remote_id, "the same record");
    assert!(deleted.is_none() && dirty);
    assert_eq!(
        store.get::<ListItem>(id).unwrap().unwrap().title.as_deref(),
        Some("Back again")
    );
}

#[test]
fn a_duplicate_natural_key_is_a_conflict_that_changes_nothing() {
    let mut store = open();
    let t = tree(&mut store);
    clean_all(&store);
    let err = store
        .insert(&mut list_item(t.list, "tt0111161"))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict { existing, .. } if *existing == t.item),
        "{err}"
    );
    assert_eq!(store.list::<ListItem>().unwrap().len(), 1);
    // Renaming into another record's key is refused as well.
    let other = store.insert(&mut list_item(t.list, "tt0068646")).unwrap();
    let mut renamed: ListItem = store.get(other).unwrap().unwrap();
    renamed.meta_id = "tt0111161".into();
    assert!(matches!(
        store.update(&renamed),
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(
        store.get::<ListItem>(other).unwrap().unwrap().meta_id,
        "tt0068646"
    );
    assert!(!store.is_dirty("list_items", t.item).unwrap());
}

#[test]
fn removing_an_addon_tombstones_its_profile_addons_first() {
    let mut store = open();
    let t = tree(&mut store);
    clean_all(&store);
    store.delete::<Addon>(t.addon).unwrap();
    assert!(
        store.get::<Addon>(t.addon).unwrap().is_none(),
        "the add-on is gone for the app"
    );
    let (_, deleted, dirty, _) = bookkeeping(&store, "profile_addons", t.profile_addon);
    assert!(
        deleted.is_some() && dirty,
        "its tombstone must reach the server"
    );
    // The tombstone still knows which add-on it was about (its manifest URL travels on the wire).
    let addon_id: i64 = store
        .connection()
        .query_row(
            "SELECT addon_id FROM profile_addons WHERE id = ?1",
            [t.profile_addon],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(addon_id, t.addon);
}

#[test]
fn owner_columns_hold_what_the_app_wrote() {
    let mut store = open();
    let t = tree(&mut store);
    // Left empty by the app: the connection's owner, which the runtime makes for entities whose
    // owner column references no table of the app.
    let p: Profile = store.get(t.profile).unwrap().unwrap();
    assert_eq!(p.user_id, sync_runtime::store::LOCAL_ACCOUNT);
    assert_eq!(store.owner().unwrap().as_deref(), Some(p.user_id.as_str()));
    // Written by the app: kept, also once an account is signed in.
    store
        .connection()
        .execute(
            "UPDATE sync_state SET remote_user_id = '0193a4c0-0000-7000-8000-000000000001'",
            [],
        )
        .unwrap();
    let mut p2 = p.clone();
    p2.user_id = "another-local-user".into();
    store.update(&p2).unwrap();
    assert_eq!(
        store.get::<Profile>(t.profile).unwrap().unwrap().user_id,
        "another-local-user"
    );
}

#[test]
fn values_of_the_wrong_type_are_refused_before_anything_is_written() {
    let mut store = open();
    let t = tree(&mut store);
    let mut values = store.get::<List>(t.list).unwrap().unwrap().to_values();
    let name = List::table().column_index("name").unwrap();
    values[name] = sync_runtime::Value::Integer(5);
    let err = store
        .update_values("lists", t.list, values)
        .unwrap_err()
        .to_string();
    assert!(err.contains("name"), "{err}");
    assert!(matches!(
        store.insert_values("nope", None, vec![]),
        Err(StoreError::UnknownTable(_))
    ));
}
