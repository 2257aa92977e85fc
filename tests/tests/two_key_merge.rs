//! A record of a table with two natural keys moving from one key into another record's: the
//! merge stores it (never a 500 from the UNIQUE index), on both backends.

use serde_json::json;
use tests::on_both_backends;
use tests::server::{TestServer, at, id, row};

const ADDON: &str = "https://addon.example/manifest.json";

async fn an_add_on_row_moving_between_its_two_keys_is_merged(s: TestServer) {
    let (_, token) = s.register("two-keys@example.org").await;
    let device = id();
    let (settings, profile, by_profile, by_settings) = (id(), id(), id(), id());
    let base = json!({
        "settings_profiles": [row("settings_profiles", &settings, &at(0), json!({"name": "S"}))],
        "profiles": [row("profiles", &profile, &at(0), json!({"name": "P", "avatar": "p"}))],
        "profile_addons": [
            row("profile_addons", &by_profile, &at(0), json!({"profile_id": profile, "addon_id": ADDON})),
            row("profile_addons", &by_settings, &at(0), json!({"settings_profile_id": settings, "addon_id": ADDON})),
        ],
    });
    let r = s.push(&token, &device, base).await;
    assert_eq!(r["profile_addons"][1]["status"], "applied", "{r}");
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
    let (settings, profile, by_profile, by_settings) = (id(), id(), id(), id());
    s.push(
        &token,
        &device,
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
