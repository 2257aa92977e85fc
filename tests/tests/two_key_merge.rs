//! A record of a table with two natural keys moving from one key into another record's: the
//! merge stores it (never a 500 from the UNIQUE index), on both backends.

use serde_json::json;
use tests::on_both_backends;
use tests::server::{TestServer, at, id, row};

const ADDON: &str = "https://addon.example/manifest.json";

/// A settings profile, a profile, and an add-on setting on each of the two keys: by profile,
/// and by settings profile.
struct OnePerKey {
    settings: String,
    profile: String,
    by_profile: String,
    by_settings: String,
}

/// Pushes [`OnePerKey`]'s records for the account of `token`, each record applied.
async fn one_record_per_key(s: &TestServer, token: &str, device: &str) -> OnePerKey {
    let (settings, profile, by_profile, by_settings) = (id(), id(), id(), id());
    let r = s
        .push(
            token,
            device,
            json!({
                "settings_profiles": [row("settings_profiles", &settings, &at(0), json!({"name": "S"}))],
                "profiles": [row("profiles", &profile, &at(0), json!({"name": "P", "avatar": "p"}))],
                "profile_addons": [
                    row("profile_addons", &by_profile, &at(0), json!({"profile_id": profile, "addon_id": ADDON})),
                    row("profile_addons", &by_settings, &at(0), json!({"settings_profile_id": settings, "addon_id": ADDON})),
                ],
            }),
        )
        .await;
    assert_eq!(r["profile_addons"][1]["status"], "applied", "{r}");
    OnePerKey {
        settings,
        profile,
        by_profile,
        by_settings,
    }
}

async fn an_add_on_row_moving_between_its_two_keys_is_merged(s: TestServer) {
    let (_, token) = s.register("two-keys@example.org").await;
    let device = id();
    let OnePerKey {
        settings,
        profile,
        by_profile,
        by_settings,
    } = one_record_per_key(&s, &token, &device).await;
    let (_, cursor) = s.pull_all(&token, None, 1000, None).await;

    // The row keyed by profile takes the settings profile too: its second key meets the other
    // record, while the survivor takes the first key it held.
    let moved = json!({"profile_addons": [row("profile_addons", &by_profile, &at(10),
        json!({"profile_id": profile, "settings_profile_id": settings, "addon_id": ADDON, "priority": 7}))]});
    for attempt in 0..2 {
        let (st, b) = s.push_raw(&token, &device, moved.clone()).await;
        assert_eq!(st, 200, "attempt {attempt}: {b}");
        let result = &b["results"]["profile_addons"][0];
        assert_eq!(result["status"], "merged", "{b}");
        assert_eq!(result["canonical_id"], json!(by_settings));
    }
    let (rows, _) = s.pull_all(&token, Some(&cursor), 1000, None).await;
    let get = |rid: &str| {
        rows.iter()
            .find(|(t, r)| t == "profile_addons" && r["remote_id"] == rid)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| panic!("{rid} was not pulled: {rows:?}"))
    };
    let survivor = get(&by_settings);
    assert_eq!(survivor["profile_id"], json!(profile));
    assert_eq!(survivor["settings_profile_id"], json!(settings));
    assert_eq!(survivor["priority"], 7);
    assert!(survivor["deleted_at"].is_null());
    assert!(
        get(&by_profile)["deleted_at"].is_string(),
        "the merged-away record is a tombstone"
    );

    // And back: a new record keyed by profile alone meets the survivor through that key.
    let again = id();
    let r = s
        .push(
            &token,
            &device,
            json!({"profile_addons": [row("profile_addons", &again, &at(20),
                json!({"profile_id": profile, "addon_id": ADDON}))]}),
        )
        .await;
    assert_eq!(r["profile_addons"][0]["status"], "merged", "{r}");
    assert_eq!(r["profile_addons"][0]["canonical_id"], json!(by_settings));
}
on_both_backends!(
    moving_between_keys,
    an_add_on_row_moving_between_its_two_keys_is_merged
);

async fn a_tombstone_holding_the_key_the_survivor_takes_gives_it_up(s: TestServer) {
    let (_, token) = s.register("two-keys-dead@example.org").await;
    let device = id();
    let OnePerKey {
        settings,
        profile,
        by_profile,
        ..
    } = one_record_per_key(&s, &token, &device).await;
    // The record keyed by profile is deleted, then written again holding both keys.
    let mut dead = row(
        "profile_addons",
        &by_profile,
        &at(5),
        json!({"profile_id": profile, "addon_id": ADDON}),
    );
    dead["deleted_at"] = json!(at(5));
    s.push(&token, &device, json!({"profile_addons": [dead]}))
        .await;
    let (st, b) = s
        .push_raw(
            &token,
            &device,
            json!({"profile_addons": [row("profile_addons", &by_profile, &at(10),
                json!({"profile_id": profile, "settings_profile_id": settings, "addon_id": ADDON}))]}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["results"]["profile_addons"][0]["status"], "merged", "{b}");
}
on_both_backends!(
    tombstone_gives_up_key,
    a_tombstone_holding_the_key_the_survivor_takes_gives_it_up
);

/// Simulation seed 714848: a deletion whose two keys two records hold (a tombstone of a row the
/// server never took, or a live row under a deleted settings profile, which the orphan rule
/// makes one) is stored as a tombstone holding neither key, and leaves both records as they
/// are. Refused, it stayed dirty on its device for good: an app never edits a deleted row.
async fn a_deletion_matching_two_records_is_stored_holding_neither_key(s: TestServer) {
    let (_, token) = s.register("two-keys-deletion@example.org").await;
    let device = id();
    let OnePerKey {
        settings,
        profile,
        by_profile,
        ..
    } = one_record_per_key(&s, &token, &device).await;
    let both = json!({"profile_id": profile, "settings_profile_id": settings, "addon_id": ADDON});
    // A live write holding both keys is still refused: the app can change it.
    let live = id();
    let r = s
        .push(
            &token,
            &device,
            json!({"profile_addons": [row("profile_addons", &live, &at(10), both.clone())]}),
        )
        .await;
    assert_eq!(r["profile_addons"][0]["status"], "rejected", "{r}");
    // Its deletion, pushed next, is taken.
    let mut dead = row("profile_addons", &live, &at(11), both.clone());
    dead["deleted_at"] = json!(at(11));
    let r = s
        .push(&token, &device, json!({"profile_addons": [dead]}))
        .await;
    assert_eq!(r["profile_addons"][0]["status"], "applied", "{r}");
    // A live write under a deleted settings profile: the orphan rule stores it as a tombstone,
    // and the answer carries it, holding neither key.
    let mut gone = row(
        "settings_profiles",
        &settings,
        &at(20),
        json!({"name": "S"}),
    );
    gone["deleted_at"] = json!(at(20));
    s.push(&token, &device, json!({"settings_profiles": [gone]}))
        .await;
    let orphan = id();
    let (st, b) = s
        .push_raw(
            &token,
            &device,
            json!({"profile_addons": [row("profile_addons", &orphan, &at(30), both)]}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let result = &b["results"]["profile_addons"][0];
    assert_eq!(result["status"], "stale", "{b}");
    assert!(result["row"]["deleted_at"].is_string(), "{b}");
    assert!(result["row"]["profile_id"].is_null(), "{b}");
    assert!(result["row"]["settings_profile_id"].is_null(), "{b}");

    let (rows, _) = s.pull_all(&token, None, 1000, None).await;
    let live_settings: Vec<&str> = rows
        .iter()
        .filter(|(t, r)| t == "profile_addons" && r["deleted_at"].is_null())
        .map(|(_, r)| r["remote_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        live_settings,
        vec![by_profile.as_str()],
        "the record keyed by profile is untouched (the other went with its settings profile)"
    );
}
on_both_backends!(
    deletion_gives_up_both_keys,
    a_deletion_matching_two_records_is_stored_holding_neither_key
);
