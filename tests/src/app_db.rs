//! A database as the real app makes and fills it (docs/entities.md, "The app's real database"),
//! before the framework ever opens it: its `user` table and two local users (a signed-in one
//! and the guest), `user_id` foreign keys into it, the bookkeeping columns it added itself and
//! uses (soft deletes, `dirty` on some writes, `remote_id` of another sync system), SQLite's
//! `CURRENT_TIMESTAMP` text, its own indexes, and its share tables that point at synced rows.
//! Written with plain SQL from a connection of its own, as the app's JavaScript runtime does.

use crate::PRE_SYNC_SCHEMA;
use rusqlite::Connection;

/// The signed-in local user (an id as the app's auth library makes them).
pub const SIGNED_IN: &str = "Xk3tQ9vLm2RbA7wYpZ4nC8dEf1gHj6sU";
/// The app's fixed guest user.
pub const GUEST: &str = "guest-local-user";

/// The app's schema: the tables of the pre-sync fixture with the `user` foreign keys, the
/// bookkeeping columns the app's start-up migrations add, its indexes and its share tables.
pub fn schema() -> String {
    let tables = PRE_SYNC_SCHEMA.replace(
        "user_id TEXT NOT NULL,",
        "user_id TEXT NOT NULL REFERENCES user(id) ON DELETE CASCADE,",
    );
    let mut sql = format!(
        "CREATE TABLE user (id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT);\n{tables}\n"
    );
    for t in SYNCED {
        sql.push_str(&format!(
            "ALTER TABLE {t} ADD COLUMN remote_id TEXT;\n\
             ALTER TABLE {t} ADD COLUMN dirty BOOLEAN DEFAULT FALSE;\n\
             ALTER TABLE {t} ADD COLUMN deleted_at DATETIME;\n"
        ));
    }
    sql.push_str(
        "CREATE INDEX idx_profiles_user_id ON profiles(user_id);
         CREATE INDEX idx_watch_history_profile ON watch_history(profile_id);
         CREATE INDEX idx_watch_history_meta ON watch_history(profile_id, meta_id);
         CREATE INDEX idx_profile_addons_profile ON profile_addons(profile_id);
         CREATE UNIQUE INDEX idx_profile_addons_settings_addon ON profile_addons(settings_profile_id, addon_id);
         CREATE TABLE list_shares (id INTEGER PRIMARY KEY, list_id INTEGER NOT NULL REFERENCES lists(id) ON DELETE CASCADE, token TEXT NOT NULL);
         CREATE TABLE profile_shared_lists (id INTEGER PRIMARY KEY, profile_id INTEGER NOT NULL REFERENCES profiles(id) ON DELETE CASCADE, list_share_id INTEGER);
         CREATE TABLE proxy_sessions (id INTEGER PRIMARY KEY, profile_id INTEGER REFERENCES profiles(id) ON DELETE SET NULL, started_at DATETIME DEFAULT CURRENT_TIMESTAMP);",
    );
    sql
}

/// The eight synced tables.
pub const SYNCED: [&str; 8] = [
    "settings_profiles",
    "profiles",
    "profile_addons",
    "stream_settings",
    "appearance_settings",
    "watch_history",
    "lists",
    "list_items",
];

/// What [`fill`] made, for the assertions.
pub struct Filled {
    /// The signed-in user's live profile.
    pub profile: i64,
    /// The signed-in user's profile the app soft-deleted (its history and list stay live
    /// under it, hidden by the app's joins).
    pub deleted_profile: i64,
}

/// Creates the app's database at `path` and fills it as the app's HTTP API does.
pub fn create(path: &std::path::Path) -> Filled {
    let c = Connection::open(path).unwrap();
    c.execute_batch(&schema()).unwrap();
    fill(&c)
}

fn fill(c: &Connection) -> Filled {
    let ts = |n: u32| crate::sqlite_stamp(n);
    c.execute_batch(&format!(
        "INSERT INTO user VALUES ('{SIGNED_IN}', 'Zoë', 'zoe@example.org'), ('{GUEST}', 'Guest', NULL);
         INSERT INTO addons (manifest_url, name, created_at) VALUES
             ('https://a.example/manifest.json', 'Cinemeta', '{a}'),
             ('https://b.example/manifest.json', 'Torrentio «β»', '{a}');",
        a = ts(1)
    ))
    .unwrap();
    let mut profiles = Vec::new();
    for (owner, name) in [
        (SIGNED_IN, "Zoë 🎬"),
        (SIGNED_IN, "Old kids"),
        (GUEST, "Guest"),
    ] {
        // A new settings profile and profile are inserted with dirty = 0, as the app does.
        c.execute(
            "INSERT INTO settings_profiles (user_id, name, is_default, created_at, updated_at, tmdb_catalog_config, dirty) \
             VALUES (?1, ?2, 1, ?3, ?3, '{\"lang\":\"fr\"}', 0)",
            (owner, format!("{name} settings"), ts(2)),
        )
        .unwrap();
        let sp = c.last_insert_rowid();
        c.execute(
            "INSERT INTO profiles (user_id, name, avatar, settings_profile_id, created_at, updated_at, remote_id, dirty) \
             VALUES (?1, ?2, 'av', ?3, ?4, ?4, ?5, 0)",
            (owner, name, sp, ts(3), (profiles.len() as i64 + 17).to_string()),
        )
        .unwrap();
        let p = c.last_insert_rowid();
        profiles.push(p);
        c.execute(
            "INSERT INTO appearance_settings (settings_profile_id, show_imdb_ratings, updated_at, dirty) VALUES (?1, 0, ?2, 1)",
            (sp, ts(4)),
        )
        .unwrap();
        c.execute(
            "INSERT INTO stream_settings (profile_id, qualities, config, settings_profile_id, updated_at, dirty) \
             VALUES (NULL, '4k,1080p', '{\"autoplay\":true}', ?1, ?2, 1)",
            (sp, ts(5)),
        )
        .unwrap();
        c.execute(
            "INSERT INTO profile_addons (profile_id, addon_id, priority, settings_profile_id, created_at, updated_at, dirty) \
             VALUES (?1, 1, 0, ?2, ?3, ?3, 1)",
            (p, sp, ts(6)),
        )
        .unwrap();
        for (l, list) in ["Favourites", "Été"].iter().enumerate() {
            c.execute(
                "INSERT INTO lists (profile_id, name, is_default, created_at, updated_at, dirty) VALUES (?1, ?2, ?3, ?4, ?4, 0)",
                (p, list, l == 0, ts(7)),
            )
            .unwrap();
            let list_id = c.last_insert_rowid();
            for i in 0..3 {
                c.execute(
                    "INSERT INTO list_items (list_id, meta_id, type, title, imdb_rating, created_at, updated_at, dirty) \
                     VALUES (?1, ?2, 'movie', ?3, NULL, ?4, ?4, 1)",
                    (list_id, format!("tt{i:07}"), format!("Film {i} — «été»"), ts(8 + i)),
                )
                .unwrap();
            }
            c.execute(
                "INSERT INTO list_shares (list_id, token) VALUES (?1, 'share')",
                [list_id],
            )
            .unwrap();
        }
        for e in 0..6 {
            c.execute(
                "INSERT INTO watch_history (profile_id, meta_id, meta_type, season, episode, title, duration, position, \
                 is_watched, watched_at, last_stream, updated_at, dirty) \
                 VALUES (?1, 'tt0903747', 'series', 1, ?2, 'Breaking Bad', 2820, ?3, ?4, ?5, NULL, ?5, 1)",
                (p, e + 1, e * 100, e % 2 == 0, ts(20 + e as u32)),
            )
            .unwrap();
        }
        c.execute(
            "INSERT INTO profile_shared_lists (profile_id, list_share_id) VALUES (?1, 1)",
            [p],
        )
        .unwrap();
    }
    // Soft deletes, as the app writes them, at every level.
    let soft = |table: &str, filter: &str| {
        c.execute(
            &format!(
                "UPDATE {table} SET deleted_at = CURRENT_TIMESTAMP, dirty = TRUE, \
                 updated_at = CURRENT_TIMESTAMP WHERE {filter}"
            ),
            [],
        )
        .unwrap();
    };
    soft("profiles", &format!("id = {}", profiles[1]));
    soft(
        "lists",
        &format!("profile_id = {} AND name = 'Été'", profiles[0]),
    );
    soft(
        "watch_history",
        &format!("profile_id = {} AND episode <= 2", profiles[0]),
    );
    soft(
        "list_items",
        &format!(
            "title LIKE 'Film 2%' AND list_id IN (SELECT id FROM lists WHERE profile_id = {})",
            profiles[0]
        ),
    );
    Filled {
        profile: profiles[0],
        deleted_profile: profiles[1],
    }
}
