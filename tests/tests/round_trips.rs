//! Every entity survives struct -> SQLite -> struct and struct -> wire JSON -> struct, with
//! NULLs, JSON columns, booleans, unicode and the largest integers.

use entities::*;
use serde_json::json;
use std::collections::HashMap;
use sync_runtime::protocol::wire::{self, RefResolver, RowSource, WireRow};
use sync_runtime::schema::Reference;
use sync_runtime::{Store, Syncable, Timestamp};
use tests::fixtures::addon;

fn t(s: &str) -> Timestamp {
    Timestamp::parse_wire(s).unwrap()
}

/// Two variants of every entity: one with every nullable field set to an extreme value, one with
/// every nullable field NULL. References point at ids 1 and 2 of each parent.
struct Samples {
    settings: [SettingsProfile; 2],
    profiles: [Profile; 2],
    addons: [Addon; 2],
    profile_addons: [ProfileAddon; 2],
    stream: [StreamSettings; 2],
    appearance: [AppearanceSettings; 2],
    history: [WatchHistory; 2],
    lists: [List; 2],
    items: [ListItem; 2],
}

fn samples() -> Samples {
    let now = t("2026-11-28T07:49:06.123Z");
    let unicode = "Zoë 日本語 🎬 \"quoted\" 'single' \\ back\nslash";
    Samples {
        settings: [
            SettingsProfile {
                id: None,
                user_id: String::new(),
                name: unicode.into(),
                is_default: Some(true),
                created_at: Some(t("1970-01-01T00:00:00.000Z")),
                updated_at: now,
                tmdb_catalog_config: Some(
                    json!({"catalogs": ["movie", {"nested": [1, 2.5, null, true]}], "ünï": "código"}),
                ),
            },
            SettingsProfile {
                id: None,
                user_id: String::new(),
                name: String::new(),
                is_default: None,
                created_at: None,
                updated_at: now,
                tmdb_catalog_config: None,
            },
        ],
        profiles: [
            Profile {
                id: None,
                user_id: String::new(),
                name: unicode.into(),
                avatar: "data:image/svg+xml;utf8,<svg/>".into(),
                avatar_type: Some("image".into()),
                avatar_style: Some("pixel-art".into()),
                is_default: Some(false),
                settings_profile_id: Some(1),
                created_at: Some(t("9999-12-31T23:59:59.999Z")),
                updated_at: now,
            },
            Profile {
                id: None,
                user_id: String::new(),
                name: "Bob".into(),
                avatar: "B".into(),
                avatar_type: None,
                avatar_style: None,
                is_default: None,
                settings_profile_id: None,
                created_at: None,
                updated_at: now,
            },
        ],
        addons: [
            Addon {
                id: None,
                manifest_url: "https://v3-cinemeta.example/manifest.json".into(),
                name: unicode.into(),
                version: Some("3.0.0".into()),
                description: Some("Catalogues".into()),
                logo: Some("l".into()),
                logo_url: Some("https://x/l.png".into()),
                behavior_hints: Some(r#"{"adult":false}"#.into()),
                created_at: Some(now),
            },
            addon("https://other.example/manifest.json", "Other"),
        ],
        profile_addons: [
            ProfileAddon {
                id: None,
                profile_id: Some(1),
                addon_id: 1,
                enabled: Some(false),
                priority: Some(i64::MAX),
                created_at: Some(now),
                updated_at: now,
                settings_profile_id: Some(1),
            },
            ProfileAddon {
                id: None,
                profile_id: None,
                addon_id: 2,
                enabled: None,
                priority: Some(i64::MIN),
                created_at: None,
                updated_at: now,
                settings_profile_id: None,
            },
        ],
        stream: [
            StreamSettings {
                id: None,
                profile_id: Some(1),
                qualities: Some("4k,1080p".into()),
                preferred_keywords: Some(unicode.into()),
                required_keywords: Some(String::new()),
                config: Some(json!([1, "two", {"three": 3.0}])),
                settings_profile_id: Some(2),
                updated_at: now,
            },
            StreamSettings {
                id: None,
                profile_id: None,
                qualities: None,
                preferred_keywords: None,
                required_keywords: None,
                config: Some(json!("a bare JSON string")),
                settings_profile_id: None,
                updated_at: now,
            },
        ],
        appearance: [
            AppearanceSettings {
                id: None,
                settings_profile_id: Some(1),
                show_imdb_ratings: Some(true),
                show_age_ratings: Some(false),
                updated_at: now,
            },
            AppearanceSettings {
                id: None,
                settings_profile_id: None,
                show_imdb_ratings: None,
                show_age_ratings: None,
                updated_at: now,
            },
        ],
        history: [
            WatchHistory {
                id: None,
                profile_id: 1,
                meta_id: "tt0903747".into(),
                meta_type: "series".into(),
                season: i64::MAX,
                episode: i64::MIN,
                episode_id: Some("tt0903747:1:1".into()),
                title: Some(unicode.into()),
                poster: Some("https://img/p.jpg".into()),
                duration: Some(i64::MAX),
                position: Some(0),
                is_watched: Some(true),
                watched_at: Some(t("2000-02-29T12:00:00.001Z")),
                last_stream: Some(
                    json!({"url": "magnet:?xt=urn:btih:abc", "size": 9007199254740993_i64}),
                ),
                updated_at: now,
            },
            WatchHistory {
                id: None,
                profile_id: 2,
                meta_id: "tt0111161".into(),
                meta_type: "movie".into(),
                season: -1,
                episode: -1,
                episode_id: None,
                title: None,
                poster: None,
                duration: None,
                position: None,
                is_watched: None,
                watched_at: None,
                last_stream: None,
                updated_at: now,
            },
        ],
        lists: [
            List {
                id: None,
                profile_id: 1,
                name: unicode.into(),
                is_default: Some(true),
                created_at: Some(now),
                updated_at: now,
            },
            List {
                id: None,
                profile_id: 2,
                name: "Watch later".into(),
                is_default: None,
                created_at: None,
                updated_at: now,
            },
        ],
        items: [
            ListItem {
                id: None,
                list_id: 1,
                meta_id: "tt0068646".into(),
                r#type: "movie".into(),
                title: Some(unicode.into()),
                poster: Some(String::new()),
                imdb_rating: Some(f64::MAX),
                created_at: Some(now),
                updated_at: now,
            },
            ListItem {
                id: None,
                list_id: 2,
                meta_id: "tt0068646".into(),
                r#type: "series".into(),
                title: None,
                poster: None,
                imdb_rating: Some(-0.000_123_456_789),
                created_at: None,
                updated_at: now,
            },
        ],
    }
}

/// Inserts each sample, reads it back, and compares; the write path stamps `updated_at` and
/// fills account ids, so those are checked apart.
fn store_round_trip<T: Syncable + Clone + PartialEq + std::fmt::Debug>(
    store: &mut Store,
    items: &[T],
    fix: impl Fn(&mut T, &T),
) {
    for item in items {
        let mut written = item.clone();
        let id = store.insert(&mut written).unwrap();
        assert_eq!(written.local_id(), Some(id));
        let read: T = store.get(id).unwrap().expect("the row just inserted");
        let mut expected = written.clone();
        fix(&mut expected, &read);
        assert_eq!(read, expected, "{}", T::TABLE_NAME);
        assert_eq!(
            store
                .list::<T>()
                .unwrap()
                .iter()
                .filter(|r| **r == read)
                .count(),
            1
        );
    }
}

#[test]
fn every_entity_round_trips_through_sqlite() {
    let mut store = Store::open_in_memory(entities::app()).unwrap();
    let s = samples();
    let before = Timestamp::now();
    let stamped = |old: Timestamp, new: Timestamp| {
        assert!(
            new >= before.add_millis(-1) && new != old,
            "updated_at is stamped by the write path"
        );
    };
    store_round_trip(&mut store, &s.settings, |e, r| {
        stamped(e.updated_at, r.updated_at);
        e.updated_at = r.updated_at;
        e.user_id = sync_runtime::store::LOCAL_ACCOUNT.into();
    });
    store_round_trip(&mut store, &s.profiles, |e, r| {
        stamped(e.updated_at, r.updated_at);
        e.updated_at = r.updated_at;
        e.user_id = sync_runtime::store::LOCAL_ACCOUNT.into();
    });
    store_round_trip(&mut store, &s.addons, |_, _| {});
    store_round_trip(&mut store, &s.profile_addons, |e, r| {
        e.updated_at = r.updated_at
    });
    store_round_trip(&mut store, &s.stream, |e, r| e.updated_at = r.updated_at);
    store_round_trip(&mut store, &s.appearance, |e, r| {
        e.updated_at = r.updated_at
    });
    store_round_trip(&mut store, &s.history, |e, r| e.updated_at = r.updated_at);
    store_round_trip(&mut store, &s.lists, |e, r| e.updated_at = r.updated_at);
    store_round_trip(&mut store, &s.items, |e, r| e.updated_at = r.updated_at);
    // JSON is stored as text holding the document, not as a quoted string of it.
    let config: String = store
        .connection()
        .query_row("SELECT config FROM stream_settings WHERE id = 2", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(config, "\"a bare JSON string\"");
}

/// Local ids <-> wire forms: synced parents by a made-up remote id, add-ons by manifest URL.
struct MapResolver {
    addons: HashMap<i64, String>,
}

impl RefResolver for MapResolver {
    fn to_wire(&mut self, r: &Reference, local: i64) -> Option<String> {
        match &r.by_key {
            Some(_) => self.addons.get(&local).cloned(),
            None => Some(format!("0193a4c2-0000-7000-8000-{:012}", local)),
        }
    }
    fn to_local(&mut self, r: &Reference, wire: &str) -> Option<i64> {
        match &r.by_key {
            Some(_) => self
                .addons
                .iter()
                .find(|(_, u)| *u == wire)
                .map(|(id, _)| *id),
            None => wire.rsplit('-').next()?.parse().ok(),
        }
    }
}

fn wire_round_trip<T: Syncable + Clone + PartialEq + std::fmt::Debug>(
    items: &[T],
    resolver: &mut MapResolver,
) {
    let table = T::table();
    for (n, item) in items.iter().enumerate() {
        let mut item = item.clone();
        item.set_local_id(n as i64 + 10);
        let item = &item;
        let remote_id = format!("0193A4C2-1111-7000-8000-{n:012}");
        let row = wire::entity_to_wire(item, &remote_id, None, resolver).unwrap();
        let text = serde_json::to_string(&row.to_json(table, 1)).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        // JSON columns travel as JSON values, booleans as booleans; local ids never travel.
        for c in &table.columns {
            let v = &parsed[&c.name];
            if !c.on_wire() {
                assert!(v.is_null(), "{}.{} must not travel", table.name, c.name);
            }
            if let Some(r) = &c.reference {
                assert!(
                    v.is_null() || v.is_string(),
                    "{}.{} travels as {:?}",
                    table.name,
                    c.name,
                    r
                );
            }
        }
        assert!(parsed.get("id").is_none() && parsed.get("dirty").is_none());
        let back = WireRow::from_json(table, &parsed, 1, RowSource::Push).unwrap();
        assert_eq!(
            back.remote_id,
            remote_id.to_lowercase(),
            "ids are normalised to lower case"
        );
        let local_values = item.to_values();
        let decoded: T =
            wire::entity_from_wire(&back, n as i64 + 10, Some(local_values), resolver).unwrap();
        assert_eq!(&decoded, item, "{} through the wire", table.name);
    }
}

#[test]
fn every_entity_round_trips_through_wire_json() {
    let s = samples();
    let mut r = MapResolver {
        addons: HashMap::from([
            (1, s.addons[0].manifest_url.clone()),
            (2, s.addons[1].manifest_url.clone()),
        ]),
    };
    wire_round_trip(&s.settings, &mut r);
    wire_round_trip(&s.profiles, &mut r);
    wire_round_trip(&s.profile_addons, &mut r);
    wire_round_trip(&s.stream, &mut r);
    wire_round_trip(&s.appearance, &mut r);
    wire_round_trip(&s.history, &mut r);
    wire_round_trip(&s.lists, &mut r);
    wire_round_trip(&s.items, &mut r);

    // The exact wire shape of one row.
    let row = wire::entity_to_wire(
        &s.profile_addons[0],
        "0193a4c2-1111-7000-8000-000000000000",
        None,
        &mut r,
    )
    .unwrap();
    let j = serde_json::Value::Object(row.to_json(ProfileAddon::table(), 1));
    assert_eq!(
        j["addon_id"],
        json!("https://v3-cinemeta.example/manifest.json")
    );
    assert_eq!(
        j["profile_id"],
        json!("0193a4c2-0000-7000-8000-000000000001")
    );
    assert_eq!(j["enabled"], json!(false));
    assert_eq!(j["priority"], json!(i64::MAX));
    assert_eq!(j["updated_at"], json!("2026-11-28T07:49:06.123Z"));
    assert_eq!(j["deleted_at"], json!(null));
    let h = wire::entity_to_wire(
        &s.history[0],
        "0193a4c2-1111-7000-8000-000000000000",
        None,
        &mut r,
    )
    .unwrap();
    let h = serde_json::Value::Object(h.to_json(WatchHistory::table(), 1));
    assert_eq!(
        h["last_stream"]["size"],
        json!(9007199254740993_i64),
        "JSON numbers keep full precision"
    );
    assert!(h.get("user_id").is_none());
}

#[test]
fn bad_wire_rows_are_refused_with_the_column_named() {
    let table = WatchHistory::table();
    let mut r = MapResolver {
        addons: HashMap::new(),
    };
    let good = serde_json::Value::Object(
        wire::entity_to_wire(
            &samples().history[1],
            "0193a4c2-1111-7000-8000-000000000000",
            None,
            &mut r,
        )
        .unwrap()
        .to_json(table, 1),
    );
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        ("season", json!("1"), "season"),
        ("season", json!(1.5), "season"),
        ("meta_id", json!(null), "meta_id"),
        ("is_watched", json!(1), "is_watched"),
        ("watched_at", json!("2026-11-28 07:49:06"), "watched_at"),
        ("profile_id", json!("not-a-uuid"), "profile_id"),
        ("remote_id", json!(42), "remote_id"),
    ];
    for (key, value, named) in cases {
        let mut row = good.clone();
        row[key] = value;
        let err = WireRow::from_json(table, &row, 1, RowSource::Push)
            .unwrap_err()
            .to_string();
        assert!(err.contains(named), "{key}: {err}");
    }
    // The server's version of a record carries every column; a push, only those it changed.
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("episode");
    missing["device_id"] = json!("0193a4c0-0000-7000-8000-000000000001");
    assert!(
        WireRow::from_json(table, &missing, 1, RowSource::Server)
            .unwrap_err()
            .to_string()
            .contains("missing column `episode`")
    );
    let partial = WireRow::from_json(table, &missing, 1, RowSource::Push).unwrap();
    let episode = table.column_index("episode").unwrap();
    assert!(!partial.carries(episode) && partial.carries(episode - 1));
    let mut unknown = good.clone();
    unknown["rating"] = json!(5);
    assert!(
        WireRow::from_json(table, &unknown, 1, RowSource::Push)
            .unwrap_err()
            .to_string()
            .contains("unknown column `rating`")
    );
    // user_id is accepted and ignored; the account's id is filled in by each side.
    let mut with_user = good;
    with_user["user_id"] = json!("someone-else");
    assert!(WireRow::from_json(table, &with_user, 1, RowSource::Push).is_ok());
}
