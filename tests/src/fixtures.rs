//! Entity values and local counts that device tests share.

use entities::{Addon, List, ListItem, Profile, SettingsProfile, WatchHistory};
use sync_runtime::protocol::page::PulledPage;
use sync_runtime::store::PageSummary;
use sync_runtime::{Store, Timestamp};

/// A profile named `name`, optionally under a settings profile.
pub fn profile(name: &str, settings: Option<i64>) -> Profile {
    Profile {
        id: None,
        user_id: String::new(),
        name: name.into(),
        avatar: "A".into(),
        avatar_type: Some("initials".into()),
        avatar_style: None,
        is_default: Some(true),
        settings_profile_id: settings,
        created_at: Some(Timestamp::now()),
        updated_at: Timestamp::now(),
    }
}

/// A settings profile named `name`, the account's default, with no catalogue configuration.
pub fn settings_profile(name: &str) -> SettingsProfile {
    SettingsProfile {
        id: None,
        user_id: String::new(),
        name: name.into(),
        is_default: Some(true),
        created_at: Some(Timestamp::now()),
        updated_at: Timestamp::now(),
        tmdb_catalog_config: None,
    }
}

/// An add-on at `url`, with nothing but its name.
pub fn addon(url: &str, name: &str) -> Addon {
    Addon {
        id: None,
        manifest_url: url.into(),
        name: name.into(),
        version: None,
        description: None,
        logo: None,
        logo_url: None,
        behavior_hints: None,
        created_at: None,
    }
}

/// A list of `profile` named `name`.
pub fn list(profile: i64, name: &str) -> List {
    List {
        id: None,
        profile_id: profile,
        name: name.into(),
        is_default: None,
        created_at: None,
        updated_at: Timestamp::now(),
    }
}

/// A movie item of list `list`.
pub fn list_item(list: i64, meta: &str) -> ListItem {
    ListItem {
        id: None,
        list_id: list,
        meta_id: meta.into(),
        r#type: "movie".into(),
        title: None,
        poster: None,
        imdb_rating: None,
        created_at: None,
        updated_at: Timestamp::now(),
    }
}

/// A watch_history row of `profile` for one episode.
pub fn history(profile: i64, meta: &str, season: i64, episode: i64) -> WatchHistory {
    WatchHistory {
        id: None,
        profile_id: profile,
        meta_id: meta.into(),
        meta_type: "series".into(),
        season,
        episode,
        episode_id: None,
        title: Some("Show".into()),
        poster: None,
        duration: Some(3_600_000),
        position: Some(60_000),
        is_watched: Some(false),
        watched_at: Some(Timestamp::now()),
        last_stream: Some(serde_json::json!({"url": "magnet:?xt=1", "quality": "1080p"})),
        updated_at: Timestamp::now(),
    }
}

/// Live rows of `table` on `store`.
pub fn live_count(store: &Store, table: &str) -> i64 {
    store
        .connection()
        .query_row(
            &format!("SELECT count(*) FROM {table} WHERE deleted_at IS NULL"),
            [],
            |r| r.get(0),
        )
        .unwrap()
}

/// Stores one pulled page as the client does: the page's JSON, read by the protocol's decoder,
/// applied in one transaction with its cursor.
pub fn apply_page(store: &mut Store, page: &serde_json::Value) -> PageSummary {
    let bytes = serde_json::to_vec(page).unwrap();
    let page = PulledPage::decode(&store.app().schema, &bytes).unwrap();
    store.apply_page(page).unwrap()
}

/// The value of SQL expression `expr` in every live row of `table`, as text, sorted: what the
/// app would show of them.
pub fn live_values(conn: &rusqlite::Connection, table: &str, expr: &str) -> Vec<String> {
    let mut v: Vec<String> = conn
        .prepare(&format!(
            "SELECT CAST({expr} AS TEXT) FROM {table} WHERE deleted_at IS NULL"
        ))
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    v.sort();
    v
}
