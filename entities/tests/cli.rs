//! `sync-client` run as a process: connect, insert, sync and status on two database files,
//! against a `sync-server` process.

mod common;

use common::{client, connect, ok, sqlite_server};
use serde_json::Value as Json;
use std::process::Command;

fn temp_dir() -> std::path::PathBuf {
    common::temp_dir("cli-test")
}

#[test]
fn two_databases_sync_through_the_command_line() {
    let dir = temp_dir();
    let (_server, url) = sqlite_server(&dir);
    let (a, b) = (dir.join("a.sqlite"), dir.join("b.sqlite"));
    connect(&a, &url, "cli@example.org", "cli password", true);
    let out = ok(&a, &["insert", "profiles", "name=Zoë", "avatar=Z"]);
    assert!(out.contains("inserted profiles 1"), "{out}");
    ok(&a, &["insert", "lists", "profile_id=1", "name=Watch later"]);
    ok(
        &a,
        &[
            "insert",
            "list_items",
            "list_id=1",
            "meta_id=tt0111161",
            "type=movie",
            "imdb_rating=9.3",
        ],
    );
    let status: Json = serde_json::from_str(&ok(&a, &["status", "--json"])).unwrap();
    assert_eq!(status["pending"]["list_items"], 1);
    assert_eq!(status["connected"], true);
    assert!(ok(&a, &["sync"]).contains("pushed 3 rows"));
    connect(&b, &url, "cli@example.org", "cli password", false);
    let items: Json = serde_json::from_str(&ok(&b, &["list", "list_items", "--json"])).unwrap();
    assert_eq!(items.as_array().unwrap().len(), 1);
    assert_eq!(items[0]["meta_id"], "tt0111161");
    assert_eq!(items[0]["imdb_rating"], 9.3);
    let lists: Json = serde_json::from_str(&ok(&b, &["list", "lists", "--json"])).unwrap();
    assert_eq!(
        items[0]["list_id"], lists[0]["id"],
        "references are B's own local ids"
    );
    // An edit on B reaches A.
    let list_id = lists[0]["id"].to_string();
    ok(&b, &["update", "lists", &list_id, "name=Weekend"]);
    ok(&b, &["sync"]);
    ok(&a, &["sync"]);
    assert!(ok(&a, &["list", "lists"]).contains("\"Weekend\""));
    let human = ok(&a, &["status"]);
    assert!(
        human.contains("connected to") && human.contains("to push:    0 row(s)"),
        "{human}"
    );
    // Deleting on A removes it from B.
    ok(&a, &["delete", "lists", "1"]);
    ok(&a, &["sync"]);
    ok(&b, &["sync"]);
    let items: Json = serde_json::from_str(&ok(&b, &["list", "list_items", "--json"])).unwrap();
    assert!(
        items.as_array().unwrap().is_empty(),
        "the item went with its list"
    );
    ok(&a, &["disconnect"]);
    assert!(ok(&a, &["status"]).contains("not connected"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_commands_fail_with_one_line() {
    let dir = temp_dir();
    let db = dir.join("x.sqlite");
    for (args, says) in [
        (vec!["insert", "nope", "a=1"], "no table `nope`"),
        (
            vec!["insert", "profiles", "colour=red"],
            "no column `colour`",
        ),
        (
            vec!["insert", "lists", "profile_id=one", "name=x"],
            "is not an integer",
        ),
        (
            vec!["insert", "profiles", "name=x"],
            "profiles.avatar is required",
        ),
        (vec!["update", "profiles", "99", "name=x"], "no live row 99"),
        (vec!["sync"], "not connected"),
    ] {
        let out = client(&db, &args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(says),
            "{args:?}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_demo_shows_two_devices_converging() {
    let out = Command::new(env!("CARGO_BIN_EXE_sync-client"))
        .arg("demo")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("converged"), "{stdout}");
}

/// A device whose cursor expired pulls everything again in pages of 1,000; the rows it pushed
/// itself are all still there, clean, afterwards.
#[test]
fn a_full_re_pull_keeps_every_row_the_device_pushed() {
    let dir = temp_dir();
    let (_server, url) = sqlite_server(&dir);
    let a = dir.join("a.sqlite");
    connect(&a, &url, "repull@example.org", "repull password", true);
    ok(&a, &["insert", "profiles", "name=Ann", "avatar=A"]);
    {
        // The app writes 2,500 rows through its store.
        let mut store = sync_runtime::Store::open(&a, entities::app()).unwrap();
        for i in 0..2500 {
            store
                .insert(&mut entities::WatchHistory {
                    id: None,
                    profile_id: 1,
                    meta_id: format!("tt{i}"),
                    meta_type: "movie".into(),
                    season: 0,
                    episode: 0,
                    episode_id: None,
                    title: None,
                    poster: None,
                    duration: None,
                    position: Some(i),
                    is_watched: None,
                    watched_at: None,
                    last_stream: None,
                    updated_at: sync_runtime::Timestamp::now(),
                })
                .unwrap();
        }
    }
    assert!(ok(&a, &["sync"]).contains("pushed 2501 rows"));
    let count = || {
        let rows: Json =
            serde_json::from_str(&ok(&a, &["list", "watch_history", "--json"])).unwrap();
        rows.as_array().unwrap().len()
    };
    assert_eq!(count(), 2500);
    {
        // The cursor now names a schema version the server does not serve: its next pull is
        // a 410, and the device pulls everything again.
        let store = sync_runtime::Store::open(&a, entities::app()).unwrap();
        store
            .connection()
            .execute(
                "UPDATE sync_state SET cursor = 'c1.0.' || substr(cursor, 6) WHERE id = 1",
                [],
            )
            .unwrap();
    }
    let out = ok(&a, &["sync"]);
    assert!(out.contains("full pull"), "{out}");
    assert_eq!(count(), 2500, "every row the device pushed is still here");
    let status: Json = serde_json::from_str(&ok(&a, &["status", "--json"])).unwrap();
    assert_eq!(status["pending"]["watch_history"], 0, "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `sync-client status` says why each unsent row waits (issue 23): B's add-on setting, taking
/// two natural keys that A gave to two records B has not pulled yet, is refused with the
/// server's reason, and A's two records are held back behind it, each with its reason. Once
/// the refused row is deleted, nothing waits.
#[test]
fn status_says_why_each_unsent_row_waits() {
    let dir = temp_dir();
    let (_server, url) = sqlite_server(&dir);
    let (a, b) = (dir.join("why-a.sqlite"), dir.join("why-b.sqlite"));
    let addon = "manifest_url=https://b.example/manifest.json";
    connect(&a, &url, "why@example.org", "why password", true);
    ok(&a, &["insert", "settings_profiles", "name=Default"]);
    ok(&a, &["insert", "profiles", "name=Alice", "avatar=A"]);
    ok(&a, &["insert", "addons", addon, "name=B"]);
    ok(&a, &["sync"]);
    connect(&b, &url, "why@example.org", "why password", false);
    // A gives each natural key of the table to a record of its own.
    ok(
        &a,
        &["insert", "profile_addons", "profile_id=1", "addon_id=1"],
    );
    ok(
        &a,
        &[
            "insert",
            "profile_addons",
            "settings_profile_id=1",
            "addon_id=1",
        ],
    );
    ok(&a, &["sync"]);
    // B, before pulling those, takes both keys in one row.
    ok(&b, &["insert", "addons", addon, "name=B"]);
    let out = ok(
        &b,
        &[
            "insert",
            "profile_addons",
            "profile_id=1",
            "settings_profile_id=1",
            "addon_id=1",
        ],
    );
    assert!(out.contains("inserted profile_addons 1"), "{out}");
    ok(&b, &["sync"]);

    let human = ok(&b, &["status"]);
    assert!(
        human.contains("rejected:   profile_addons 1: its natural key matches two different"),
        "{human}"
    );
    let held: Vec<&str> = human
        .lines()
        .filter(|l| l.starts_with("held back:  profile_addons "))
        .collect();
    assert_eq!(held.len(), 2, "{human}");
    for line in held {
        assert!(
            line.ends_with("row 1 here holds it, with changes the server has not taken"),
            "{line}"
        );
    }
    let status: Json = serde_json::from_str(&ok(&b, &["status", "--json"])).unwrap();
    assert_eq!(status["held_back"].as_array().unwrap().len(), 2, "{status}");

    ok(&b, &["delete", "profile_addons", "1"]);
    ok(&b, &["sync"]);
    let human = ok(&b, &["status"]);
    assert!(
        !human.contains("rejected:") && !human.contains("held back:"),
        "{human}"
    );
    let settings: Json =
        serde_json::from_str(&ok(&b, &["list", "profile_addons", "--json"])).unwrap();
    assert_eq!(
        settings.as_array().unwrap().len(),
        2,
        "A's two records landed"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
