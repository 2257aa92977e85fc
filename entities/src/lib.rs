//! The media-center app's synchronized entities (docs/entities.md), annotated with
//! `#[derive(Syncable)]`, and the migrations `cargo xtask migrations` wrote from them.
//!
//! Nothing here is hand-written per table beyond the annotations.

use serde_json::Value as Json;
use std::sync::OnceLock;
use sync_runtime::{App, Schema, Syncable, Timestamp};

// Written by `cargo xtask migrations`, which also checks it; rustfmt leaves it as written.
#[rustfmt::skip]
pub mod migrations;

/// A group of settings that profiles share.
#[derive(Syncable, Debug, Clone, PartialEq)]
#[sync(table = "settings_profiles")]
pub struct SettingsProfile {
    pub id: Option<i64>,
    #[sync(owner)]
    pub user_id: String,
    pub name: String,
    #[sync(default = false)]
    pub is_default: Option<bool>,
    #[sync(default = now)]
    pub created_at: Option<Timestamp>,
    #[sync(default = now)]
    pub updated_at: Timestamp,
    pub tmdb_catalog_config: Option<Json>,
}

/// A person using the app.
#[derive(Syncable, Debug, Clone, PartialEq)]
#[sync(table = "profiles")]
pub struct Profile {
    pub id: Option<i64>,
    #[sync(owner)]
    pub user_id: String,
    pub name: String,
    pub avatar: String,
    #[sync(default = "initials")]
    pub avatar_type: Option<String>,
    #[sync(default = "bottts-neutral")]
    pub avatar_style: Option<String>,
    #[sync(default = false)]
    pub is_default: Option<bool>,
    #[sync(references = SettingsProfile, on_delete = set_null)]
    pub settings_profile_id: Option<i64>,
    #[sync(default = now)]
    pub created_at: Option<Timestamp>,
    #[sync(default = now)]
    pub updated_at: Timestamp,
}

/// An add-on installed on this device. Not synced: profiles' add-on settings reference it by
/// its manifest URL.
#[derive(Syncable, Debug, Clone, PartialEq)]
#[sync(table = "addons", local_only, unique(manifest_url))]
pub struct Addon {
    pub id: Option<i64>,
    pub manifest_url: String,
    pub name: String,
    pub version: Option<String>,
    pub description: Option<String>,
    pub logo: Option<String>,
    pub logo_url: Option<String>,
    pub behavior_hints: Option<String>,
    #[sync(default = now)]
    pub created_at: Option<Timestamp>,
}

/// An add-on enabled for a profile or a settings profile.
#[derive(Syncable, Debug, Clone, PartialEq)]
#[sync(table = "profile_addons")]
#[sync(unique(profile_id, addon_id))]
#[sync(unique = [settings_profile_id, addon_id])]
pub struct ProfileAddon {
    pub id: Option<i64>,
    #[sync(references = Profile, on_delete = cascade)]
    pub profile_id: Option<i64>,
    #[sync(references = Addon, key = manifest_url, on_delete = cascade)]
    pub addon_id: i64,
    #[sync(default = true)]
    pub enabled: Option<bool>,
    #[sync(default = 0)]
    pub priority: Option<i64>,
    #[sync(default = now)]
    pub created_at: Option<Timestamp>,
    #[sync(default = now)]
    pub updated_at: Timestamp,
    #[sync(references = SettingsProfile, on_delete = cascade)]
    pub settings_profile_id: Option<i64>,
}

/// Stream preferences of a profile.
#[derive(Syncable, Debug, Clone, PartialEq)]
#[sync(table = "stream_settings", unique(profile_id))]
pub struct StreamSettings {
    pub id: Option<i64>,
    #[sync(references = Profile, on_delete = cascade)]
    pub profile_id: Option<i64>,
    pub qualities: Option<String>,
    pub preferred_keywords: Option<String>,
    pub required_keywords: Option<String>,
    pub config: Option<Json>,
    #[sync(references = SettingsProfile, on_delete = cascade)]
    pub settings_profile_id: Option<i64>,
    #[sync(default = now)]
    pub updated_at: Timestamp,
}

/// Appearance preferences of a settings profile.
#[derive(Syncable, Debug, Clone, PartialEq)]
#[sync(table = "appearance_settings", unique(settings_profile_id))]
pub struct AppearanceSettings {
    pub id: Option<i64>,
    #[sync(references = SettingsProfile, on_delete = cascade)]
    pub settings_profile_id: Option<i64>,
    #[sync(default = true)]
    pub show_imdb_ratings: Option<bool>,
    #[sync(default = true)]
    pub show_age_ratings: Option<bool>,
    #[sync(default = now)]
    pub updated_at: Timestamp,
}

/// What a profile watched, and how far. Movies use season and episode -1.
#[derive(Syncable, Debug, Clone, PartialEq)]
#[sync(table = "watch_history", unique(profile_id, meta_id, season, episode))]
pub struct WatchHistory {
    pub id: Option<i64>,
    #[sync(references = Profile, on_delete = cascade)]
    pub profile_id: i64,
    pub meta_id: String,
    pub meta_type: String,
    #[sync(default = -1)]
    pub season: i64,
    #[sync(default = -1)]
    pub episode: i64,
    pub episode_id: Option<String>,
    pub title: Option<String>,
    pub poster: Option<String>,
    pub duration: Option<i64>,
    pub position: Option<i64>,
    #[sync(default = false)]
    pub is_watched: Option<bool>,
    pub watched_at: Option<Timestamp>,
    pub last_stream: Option<Json>,
    #[sync(default = now)]
    pub updated_at: Timestamp,
}

/// A list of titles a profile keeps.
#[derive(Syncable, Debug, Clone, PartialEq)]
#[sync(table = "lists", unique(profile_id, name))]
pub struct List {
    pub id: Option<i64>,
    #[sync(references = Profile, on_delete = cascade)]
    pub profile_id: i64,
    pub name: String,
    #[sync(default = false)]
    pub is_default: Option<bool>,
    #[sync(default = now)]
    pub created_at: Option<Timestamp>,
    #[sync(default = now)]
    pub updated_at: Timestamp,
}

/// A title in a list.
#[derive(Syncable, Debug, Clone, PartialEq)]
#[sync(table = "list_items", unique(list_id, meta_id))]
pub struct ListItem {
    pub id: Option<i64>,
    #[sync(references = List, on_delete = cascade)]
    pub list_id: i64,
    pub meta_id: String,
    pub r#type: String,
    pub title: Option<String>,
    pub poster: Option<String>,
    pub imdb_rating: Option<f64>,
    #[sync(default = now)]
    pub created_at: Option<Timestamp>,
    #[sync(default = now)]
    pub updated_at: Timestamp,
}

/// The app's schema: every table, parents before children.
pub fn schema() -> Schema {
    Schema::new(vec![
        SettingsProfile::table().clone(),
        Profile::table().clone(),
        Addon::table().clone(),
        ProfileAddon::table().clone(),
        StreamSettings::table().clone(),
        AppearanceSettings::table().clone(),
        WatchHistory::table().clone(),
        List::table().clone(),
        ListItem::table().clone(),
    ])
    // The entities are fixed at compile time; the `schema_is_valid` test proves this holds.
    .expect("the app's entities form a valid schema")
}

/// The app as the framework runs it: its schema and committed migrations.
pub fn app() -> &'static App {
    static APP: OnceLock<App> = OnceLock::new();
    APP.get_or_init(|| App {
        schema: schema(),
        device_migrations: migrations::DEVICE,
        server_sqlite_migrations: migrations::SERVER_SQLITE,
        server_postgres_migrations: migrations::SERVER_POSTGRES,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn schema_is_valid() {
        let s = super::schema();
        assert_eq!(s.synced().count(), 8);
        assert_eq!(s.version(), 1);
    }

    #[test]
    fn committed_migrations_match_the_entities() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        if let Err(e) = sync_runtime::generate::check(dir, &super::schema()) {
            panic!("{e}");
        }
    }
}
