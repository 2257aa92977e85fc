//! Helpers shared by the integration tests.

use rusqlite::Connection;

/// The environment variable holding a PostgreSQL URL for the tests that need one.
pub const POSTGRES_URL_VAR: &str = "SYNC_TEST_POSTGRES_URL";

/// The PostgreSQL URL, or `None` after saying plainly that the calling test is skipped.
pub fn postgres_url(test: &str) -> Option<String> {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("skipped: {test} needs PostgreSQL; set {POSTGRES_URL_VAR} (as .ci/run does)");
            None
        }
    }
}

/// The app's tables as it declared them before sync existed (docs/entities.md), written out by
/// hand so that tests of the first migration do not depend on the generator they test.
pub const PRE_SYNC_SCHEMA: &str = r#"
CREATE TABLE settings_profiles (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    is_default BOOLEAN DEFAULT FALSE,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    tmdb_catalog_config TEXT
);
CREATE TABLE profiles (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    avatar TEXT NOT NULL,
    avatar_type TEXT DEFAULT 'initials',
    avatar_style TEXT DEFAULT 'bottts-neutral',
    is_default BOOLEAN DEFAULT FALSE,
    settings_profile_id INTEGER REFERENCES settings_profiles(id) ON DELETE SET NULL,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE addons (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    manifest_url TEXT UNIQUE NOT NULL,
    name TEXT NOT NULL,
    version TEXT,
    description TEXT,
    logo TEXT,
    logo_url TEXT,
    behavior_hints TEXT,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE profile_addons (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    profile_id INTEGER REFERENCES profiles(id) ON DELETE CASCADE,
    addon_id INTEGER NOT NULL REFERENCES addons(id) ON DELETE CASCADE,
    enabled BOOLEAN DEFAULT TRUE,
    priority INTEGER DEFAULT 0,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    settings_profile_id INTEGER REFERENCES settings_profiles(id) ON DELETE CASCADE,
    UNIQUE (profile_id, addon_id),
    UNIQUE (settings_profile_id, addon_id)
);
CREATE TABLE stream_settings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    profile_id INTEGER REFERENCES profiles(id) ON DELETE CASCADE,
    qualities TEXT,
    preferred_keywords TEXT,
    required_keywords TEXT,
    config TEXT,
    settings_profile_id INTEGER REFERENCES settings_profiles(id) ON DELETE CASCADE,
    updated_at DATETIME,
    UNIQUE (profile_id)
);
CREATE TABLE appearance_settings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    settings_profile_id INTEGER REFERENCES settings_profiles(id) ON DELETE CASCADE,
    show_imdb_ratings BOOLEAN DEFAULT TRUE,
    show_age_ratings BOOLEAN DEFAULT TRUE,
    updated_at DATETIME,
    UNIQUE (settings_profile_id)
);
CREATE TABLE watch_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    profile_id INTEGER NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
    meta_id TEXT NOT NULL,
    meta_type TEXT NOT NULL,
    season INTEGER NOT NULL DEFAULT -1,
    episode INTEGER NOT NULL DEFAULT -1,
    episode_id TEXT,
    title TEXT,
    poster TEXT,
    duration INTEGER,
    position INTEGER,
    is_watched BOOLEAN DEFAULT FALSE,
    watched_at DATETIME,
    last_stream TEXT,
    updated_at DATETIME,
    UNIQUE (profile_id, meta_id, season, episode)
);
CREATE TABLE lists (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    profile_id INTEGER NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    is_default BOOLEAN DEFAULT FALSE,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    UNIQUE (profile_id, name)
);
CREATE TABLE list_items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    list_id INTEGER NOT NULL REFERENCES lists(id) ON DELETE CASCADE,
    meta_id TEXT NOT NULL,
    type TEXT NOT NULL,
    title TEXT,
    poster TEXT,
    imdb_rating REAL,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    UNIQUE (list_id, meta_id)
);
CREATE TABLE sync_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    remote_url TEXT,
    remote_user_id TEXT,
    auth_token TEXT,
    last_sync_at DATETIME,
    is_syncing BOOLEAN DEFAULT FALSE
);
INSERT INTO sync_state (id) VALUES (1);
"#;

/// A timestamp in SQLite's own `CURRENT_TIMESTAMP` form, `n` minutes into 2026-11-28.
pub fn sqlite_stamp(n: u32) -> String {
    format!("2026-11-28 {:02}:{:02}:06", (n / 60) % 24, n % 60)
}

/// Fills a pre-sync database with `profiles` profiles and, under each, add-on settings, stream
/// and appearance settings, lists with items and watch history: a few hundred rows for 4 profiles.
/// Timestamps are in SQLite's own form, some in RFC 3339 with an offset, some `updated_at` NULL.
pub fn populate_pre_sync(conn: &Connection, profiles: u32) {
    let tx = conn.unchecked_transaction().unwrap();
    for a in 0..5 {
        tx.execute(
            "INSERT INTO addons (manifest_url, name, created_at) VALUES (?1, ?2, ?3)",
            (
                format!("https://addons.example/{a}/manifest.json"),
                format!("Add-on {a}"),
                sqlite_stamp(a),
            ),
        )
        .unwrap();
    }
    for p in 0..profiles {
        tx.execute(
            "INSERT INTO settings_profiles (user_id, name, is_default, created_at, updated_at, tmdb_catalog_config) \
             VALUES ('local', ?1, ?2, ?3, ?4, ?5)",
            (
                format!("Settings {p}"),
                p == 0,
                sqlite_stamp(p),
                if p % 2 == 0 { None } else { Some(sqlite_stamp(p + 1)) },
                r#"{"catalogs":["movie","series"],"lang":"fr"}"#,
            ),
        )
        .unwrap();
        let sp = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO profiles (user_id, name, avatar, settings_profile_id, created_at, updated_at) \
             VALUES ('local', ?1, 'av', ?2, ?3, ?4)",
            (format!("Zoë {p} 🎬"), sp, sqlite_stamp(p), sqlite_stamp(p + 2)),
        )
        .unwrap();
        let profile = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO appearance_settings (settings_profile_id, show_imdb_ratings, updated_at) VALUES (?1, FALSE, ?2)",
            (sp, "2026-11-28T09:15:00+02:00"),
        )
        .unwrap();
        tx.execute(
            "INSERT INTO stream_settings (profile_id, qualities, config, settings_profile_id, updated_at) \
             VALUES (?1, '4k,1080p', '{\"autoplay\":true}', ?2, NULL)",
            (profile, sp),
        )
        .unwrap();
        for a in 0..3 {
            tx.execute(
                "INSERT INTO profile_addons (profile_id, addon_id, priority, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                (profile, a + 1, a, sqlite_stamp(a), sqlite_stamp(a + 1)),
            )
            .unwrap();
        }
        for l in 0..3 {
            tx.execute(
                "INSERT INTO lists (profile_id, name, is_default, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                (profile, format!("List {l}"), l == 0, sqlite_stamp(l), if l == 2 { None } else { Some(sqlite_stamp(l + 5)) }),
            )
            .unwrap();
            let list = tx.last_insert_rowid();
            for i in 0..8 {
                tx.execute(
                    "INSERT INTO list_items (list_id, meta_id, type, title, imdb_rating, created_at, updated_at) \
                     VALUES (?1, ?2, 'movie', ?3, ?4, ?5, ?6)",
                    (list, format!("tt{i:07}"), format!("Film {i} — «été»"), 7.5 + f64::from(i) / 10.0, sqlite_stamp(i), sqlite_stamp(i + 1)),
                )
                .unwrap();
            }
        }
        for e in 0..20 {
            tx.execute(
                "INSERT INTO watch_history (profile_id, meta_id, meta_type, season, episode, title, duration, position, \
                 is_watched, watched_at, last_stream, updated_at) \
                 VALUES (?1, 'tt0903747', 'series', ?2, ?3, 'Breaking Bad', 2820000, ?4, ?5, ?6, ?7, ?8)",
                (
                    profile,
                    e / 10 + 1,
                    e % 10 + 1,
                    i64::from(e) * 1000,
                    e % 3 == 0,
                    sqlite_stamp(e),
                    r#"{"url":"magnet:?xt=1","title":"1080p"}"#,
                    if e % 4 == 0 { None } else { Some(sqlite_stamp(e + 3)) },
                ),
            )
            .unwrap();
        }
    }
    tx.commit().unwrap();
}

/// Every row of `table` as text cells (NULL as `None`), ordered by id, columns by name.
pub fn dump_table(conn: &Connection, table: &str, columns: &[String]) -> Vec<Vec<Option<String>>> {
    let cols: Vec<String> = columns
        .iter()
        .map(|c| format!("CAST(\"{c}\" AS TEXT)"))
        .collect();
    let sql = format!("SELECT {} FROM \"{table}\" ORDER BY id", cols.join(", "));
    let mut stmt = conn.prepare(&sql).unwrap();
    stmt.query_map([], |r| {
        (0..columns.len())
            .map(|i| r.get::<_, Option<String>>(i))
            .collect()
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// An index of a SQLite table: whether it is unique, and its columns in order.
pub struct SqliteIndex {
    pub unique: bool,
    pub columns: Vec<String>,
}

/// The indexes of SQLite table `table` (`PRAGMA index_list`, then `index_info` of each).
pub fn sqlite_indexes(conn: &Connection, table: &str) -> Vec<SqliteIndex> {
    let mut stmt = conn
        .prepare(&format!("PRAGMA index_list(\"{table}\")"))
        .unwrap();
    let names: Vec<(String, bool)> = stmt
        .query_map([], |r| Ok((r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    names
        .into_iter()
        .map(|(name, unique)| {
            let mut s = conn
                .prepare(&format!("PRAGMA index_info(\"{name}\")"))
                .unwrap();
            let columns = s
                .query_map([], |r| r.get::<_, String>(2))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            SqliteIndex { unique, columns }
        })
        .collect()
}

pub mod app_db;
pub mod device;
pub mod faulty;
pub mod fixtures;
pub mod forwarding_proxy;
pub mod local_app;
pub mod server;
pub mod sim;
pub mod slow_proxy;
pub mod unreported;
