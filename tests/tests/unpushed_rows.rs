//! A dirty row that cannot be pushed is never silent: after a sync it is pushed, or rejected,
//! or held back with a reason, and the status says which. And a rejection does not outlive its
//! cause: a rejected row whose parent is deleted elsewhere goes as the server's orphan rule
//! says, on every device.

use entities::*;
use serde_json::{Value as Json, json};
use sync_runtime::Timestamp;
use sync_runtime::client::{self, Activity, ServiceOptions};
use tests::by_backend;
use tests::device::{Device, LiveServer};
use tests::fixtures::{addon, profile, settings_profile};
use tests::local_app::LocalApp;
use tests::server::Backend;

const ADDON: &str = "https://b.example/manifest.json";

/// An add-on setting for `profile` and/or `settings`.
fn setting(profile: Option<i64>, settings: Option<i64>, addon: i64) -> ProfileAddon {
    ProfileAddon {
        id: None,
        profile_id: profile,
        addon_id: addon,
        enabled: Some(true),
        priority: Some(3),
        created_at: None,
        updated_at: Timestamp::now(),
        settings_profile_id: settings,
    }
}

/// The local id of the live row with `remote_id`.
fn local_id(d: &Device, table: &str, remote_id: &str) -> i64 {
    d.store
        .connection()
        .query_row(
            &format!("SELECT id FROM {table} WHERE remote_id = ?1 AND deleted_at IS NULL"),
            [remote_id],
            |r| r.get(0),
        )
        .unwrap()
}

/// The remote ids of the live add-on settings on `d`.
fn live_settings(d: &Device) -> Vec<String> {
    let mut ids: Vec<String> = d
        .store
        .list::<ProfileAddon>()
        .unwrap()
        .into_iter()
        .map(|s| {
            d.store
                .remote_id("profile_addons", s.id.unwrap())
                .unwrap()
                .unwrap()
        })
        .collect();
    ids.sort();
    ids
}

by_backend!(
    a_rejected_row_whose_parent_is_deleted_elsewhere_goes_everywhere,
    rejected_orphan
);
/// Simulation seed 714848. Device B, before pulling, enables an add-on for a profile and a
/// settings profile in one row, while device A has given each key to a record of its own: the
/// server rejects B's row. Then A deletes the settings profile. B's row is now an orphan by the
/// server's rule, but a rejected row is not pushed again at its stamp: it stayed live on B
/// alone, rejected for a reason long gone, and A's record for the profile stayed held back
/// there behind it.
async fn rejected_orphan(backend: Backend) {
    let Some(srv) = LiveServer::start(backend, "rejected_orphan").await else {
        return;
    };
    let email = "rejected-orphan@example.org";
    let (mut a, mut b) = (
        Device::new(&format!("orphan-a-{backend:?}")),
        Device::new(&format!("orphan-b-{backend:?}")),
    );
    a.connect(&srv.url, email, true).await;
    let settings = a.store.insert(&mut settings_profile("Default")).unwrap();
    let alice = a.store.insert(&mut profile("Alice", None)).unwrap();
    let a_addon = a.store.insert(&mut addon(ADDON, "B")).unwrap();
    a.sync().await.unwrap();
    b.connect(&srv.url, email, false).await;

    // A gives each natural key of the table to a record of its own.
    let for_profile = a
        .store
        .insert(&mut setting(Some(alice), None, a_addon))
        .unwrap();
    a.store
        .insert(&mut setting(None, Some(settings), a_addon))
        .unwrap();
    a.sync().await.unwrap();
    // B, before pulling those, takes both keys in one row: the server refuses it.
    let rid = |d: &Device, t: &str, id: i64| d.store.remote_id(t, id).unwrap().unwrap();
    let (b_alice, b_settings) = (
        local_id(&b, "profiles", &rid(&a, "profiles", alice)),
        local_id(
            &b,
            "settings_profiles",
            &rid(&a, "settings_profiles", settings),
        ),
    );
    let b_addon = b.store.insert(&mut addon(ADDON, "B")).unwrap();
    let both = b
        .store
        .insert(&mut setting(Some(b_alice), Some(b_settings), b_addon))
        .unwrap();
    let report = b.sync().await.unwrap();
    assert_eq!(report.rejected, 1, "{report:?}");

    // A deletes the settings profile: its add-on setting goes with it on the server.
    a.store.delete::<SettingsProfile>(settings).unwrap();
    a.sync().await.unwrap();
    // B learns of the deletion, then syncs once more, as the app's next sync would.
    b.sync().await.unwrap();
    b.sync().await.unwrap();
    a.sync().await.unwrap();

    assert!(
        b.store.get::<ProfileAddon>(both).unwrap().is_none(),
        "B's rejected row went with its settings profile ({backend:?})"
    );
    let status = client::status(&b.store, Activity::Idle).unwrap();
    assert!(status.rejected.is_empty(), "{status:?}");
    assert_eq!(status.parked, 0, "nothing held back on B: {status:?}");
    assert!(status.pending.values().all(|n| *n == 0), "{status:?}");
    let kept = rid(&a, "profile_addons", for_profile);
    assert_eq!(live_settings(&a), vec![kept.clone()], "{backend:?}");
    assert_eq!(
        live_settings(&b),
        vec![kept],
        "B holds A's setting for the profile, and nothing else ({backend:?})"
    );
}

/// The rows of `status[field]` that are `table`'s.
fn of_table<'a>(status: &'a Json, field: &str, table: &str) -> Vec<&'a Json> {
    status[field]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["table"] == table)
        .collect()
}

/// The settings page's API says why each unsent row waits: the row the server refused, with
/// its reason, and the pulled rows held back behind it, with theirs. Deleting the refused row,
/// what a user can do about it, lets everything through (before, the server refused the
/// deletion too, and it stayed dirty for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_api_says_why_each_unsent_row_waits() {
    let srv = LiveServer::start(Backend::Sqlite, "why_rows_wait")
        .await
        .unwrap();
    let email = "why-rows-wait@example.org";
    let app = LocalApp::start_with(
        "why-rows-wait",
        ServiceOptions {
            live_wait: None,
            ..ServiceOptions::default()
        },
    )
    .await;
    let (s, _) = app
        .post(
            "/api/sync/connect",
            Some(json!({"remote_url": srv.url, "email": email, "password": "correct horse", "register": true})),
        )
        .await;
    assert_eq!(s, 200);
    let mut phone = Device::new("why-rows-wait-phone");
    phone.connect(&srv.url, email, false).await;
    let settings = phone
        .store
        .insert(&mut settings_profile("Default"))
        .unwrap();
    let alice = phone.store.insert(&mut profile("Alice", None)).unwrap();
    let phone_addon = phone.store.insert(&mut addon(ADDON, "B")).unwrap();
    phone.sync().await.unwrap();
    let (s, _) = app.post("/api/sync/sync", None).await;
    assert_eq!(s, 200);
    // The phone gives each key to a record of its own; the app, before pulling them, takes
    // both keys in one row.
    phone
        .store
        .insert(&mut setting(Some(alice), None, phone_addon))
        .unwrap();
    phone
        .store
        .insert(&mut setting(None, Some(settings), phone_addon))
        .unwrap();
    phone.sync().await.unwrap();
    let mut local = app.store();
    let rid = |t: &str, id: i64| phone.store.remote_id(t, id).unwrap().unwrap();
    let app_id = |t: &str, rid: &str| -> i64 {
        local
            .connection()
            .query_row(
                &format!("SELECT id FROM {t} WHERE remote_id = ?1"),
                [rid],
                |r| r.get(0),
            )
            .unwrap()
    };
    let (app_alice, app_settings) = (
        app_id("profiles", &rid("profiles", alice)),
        app_id("settings_profiles", &rid("settings_profiles", settings)),
    );
    let app_addon = local.insert(&mut addon(ADDON, "B")).unwrap();
    let both = local
        .insert(&mut setting(Some(app_alice), Some(app_settings), app_addon))
        .unwrap();
    let (s, _) = app.post("/api/sync/sync", None).await;
    assert_eq!(s, 200);

    let (_, status) = app.get("/api/sync/status").await;
    let rejected = of_table(&status, "rejected", "profile_addons");
    assert_eq!(rejected.len(), 1, "{status}");
    assert_eq!(rejected[0]["id"], both);
    assert!(
        rejected[0]["message"]
            .as_str()
            .unwrap()
            .contains("two keys"),
        "{status}"
    );
    let held = of_table(&status, "held_back", "profile_addons");
    assert_eq!(held.len(), 2, "the phone's two records wait: {status}");
    assert_eq!(status["parked"], 2);
    for h in &held {
        let reason = h["reason"].as_str().unwrap();
        assert!(
            reason.contains(&format!(
                "row {both} here holds it, with changes the server has not taken"
            )),
            "{reason}"
        );
        assert!(h["id"].is_null(), "no local row of that record yet: {h}");
    }
    assert_eq!(status["pending_total"], 0, "{status}");

    // The user deletes the refused row: the deletion is taken, and the held-back rows land.
    local.delete::<ProfileAddon>(both).unwrap();
    let (s, report) = app.post("/api/sync/sync", None).await;
    assert_eq!(s, 200, "{report}");
    let (_, status) = app.get("/api/sync/status").await;
    assert_eq!(status["rejected"], json!([]), "{status}");
    assert_eq!(status["held_back"], json!([]), "{status}");
    assert_eq!(status["pending_total"], 0, "{status}");
    assert_eq!(status["records"]["profile_addons"], 2, "{status}");
}
