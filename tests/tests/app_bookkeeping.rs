//! The app's own hands on the runtime's bookkeeping (docs/entities.md, "The app's real database"):
//! its disconnect deletes the `sync_state` row, and its status route returns
//! `sync_state.auth_token`. Neither breaks the device nor hands out a usable token. Through the
//! real client over HTTP; the app's writes come from a connection of its own.

use sync_runtime::client::{self, Activity, SyncError};
use tests::device::{Device, LiveServer};
use tests::fixtures::{live_count, profile, settings_profile};
use tests::server::Backend;

/// A connection of the app's own, as its JavaScript runtime opens the file.
fn app_connection(d: &Device) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(&d.path).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    c
}

#[tokio::test]
async fn the_database_holds_no_usable_token() {
    let srv = LiveServer::start(Backend::Sqlite, "no_token_in_db")
        .await
        .unwrap();
    let mut a = Device::new("token-a");
    a.connect(&srv.url, "token@example.org", true).await;
    let token = a.store.session().unwrap().1.expect("connected");
    let in_db: Option<String> = app_connection(&a)
        .query_row("SELECT auth_token FROM sync_state WHERE id = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    let in_db = in_db.expect("a marker the app can read as connected");
    assert!(!in_db.contains(&token), "{in_db}");
    let http = reqwest::Client::new();
    let pull = |bearer: String| {
        http.get(format!("{}/api/sync/pull", srv.url))
            .bearer_auth(bearer)
            .send()
    };
    assert_eq!(pull(in_db).await.unwrap().status().as_u16(), 401);
    assert_eq!(pull(token.clone()).await.unwrap().status().as_u16(), 200);

    // The token's file is its user's alone.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let file = format!("{}-sync-token", a.path.display());
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }

    // A copy of the database alone cannot sync.
    let copy = std::env::temp_dir().join(format!(
        "token-copy-{}-{}.sqlite",
        std::process::id(),
        sync_runtime::server::db::new_id()
    ));
    app_connection(&a)
        .execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
        .unwrap();
    let mut c = Device::at(copy);
    assert_eq!(c.store.session().unwrap().1, None);
    assert!(matches!(c.sync().await, Err(SyncError::NotConnected)));

    // A database from before, its token in the column, has it moved out when opened.
    let legacy = app_connection(&a);
    legacy
        .execute(
            "UPDATE sync_state SET auth_token = ?1 WHERE id = 1",
            [&token],
        )
        .unwrap();
    a.restart();
    assert_eq!(
        a.store.session().unwrap().1.as_deref(),
        Some(token.as_str())
    );
    let in_db: String = legacy
        .query_row("SELECT auth_token FROM sync_state WHERE id = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(!in_db.contains(&token), "{in_db}");
    a.sync().await.unwrap();
}

#[tokio::test]
async fn the_apps_disconnect_leaves_a_device_that_reconnects() {
    let srv = LiveServer::start(Backend::Sqlite, "apps_disconnect")
        .await
        .unwrap();
    let mut a = Device::new("app-disconnect-a");
    let s = a.store.insert(&mut settings_profile("Main")).unwrap();
    a.store.insert(&mut profile("Ann", Some(s))).unwrap();
    a.connect(&srv.url, "disc@example.org", true).await;
    let device = a.store.device_id().to_owned();

    // The app's own disconnect, from its own connection, while the runtime has the file open.
    app_connection(&a)
        .execute("DELETE FROM sync_state WHERE id = 1", [])
        .unwrap();
    let st = client::status(&a.store, Activity::Idle).unwrap();
    assert!(!st.connected, "{st:?}");
    assert_eq!(st.device_id, device);
    assert!(matches!(a.sync().await, Err(SyncError::NotConnected)));
    // Opened again: the same device, disconnected, the last account remembered.
    a.restart();
    assert_eq!(a.store.device_id(), device);
    assert!(a.store.synced_account().unwrap().is_some());

    // Reconnecting to the same account duplicates nothing.
    a.connect(&srv.url, "disc@example.org", false).await;
    let mut b = Device::new("app-disconnect-b");
    b.connect(&srv.url, "disc@example.org", false).await;
    for t in ["settings_profiles", "profiles"] {
        assert_eq!(live_count(&b.store, t), 1, "{t}");
        assert_eq!(live_count(&a.store, t), 1, "{t}");
    }
}
