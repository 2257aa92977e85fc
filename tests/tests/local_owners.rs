//! The owner column is the app's local user (docs/entities.md, "The app's real database"): one file
//! holds a signed-in user's rows and a guest's. A connection syncs one local owner's rows, never
//! rewrites the owner column, and never sends or touches the other owners' rows. Through the real
//! client over HTTP, on both server backends.

use entities::*;
use sync_runtime::Store;
use sync_runtime::client::{self, Activity, LocalData, SyncError};
use tests::device::{Device, LiveServer};
use tests::fixtures::{history, list, live_count, profile, settings_profile};
use tests::server::Backend;

const ALICE: &str = "3fJ8kq0ZrW2mXa9LbC7dE1fGhI4jK6lM";
const GUEST: &str = "guest-local-user";

/// A settings profile, a profile under it, a list and two history entries, of `owner`.
fn rows_of(store: &mut Store, owner: &str, name: &str) -> i64 {
    let mut s = settings_profile(&format!("{name} settings"));
    s.user_id = owner.into();
    let s = store.insert(&mut s).unwrap();
    let mut p = profile(name, Some(s));
    p.user_id = owner.into();
    let p = store.insert(&mut p).unwrap();
    store
        .insert(&mut list(p, &format!("{name}'s list")))
        .unwrap();
    store.insert(&mut history(p, "tt0903747", 1, 1)).unwrap();
    store.insert(&mut history(p, "tt0903747", 1, 2)).unwrap();
    p
}

/// Every (id, user_id, name, updated_at) of `table`, as the app would read them.
fn owners_of(store: &Store, table: &str) -> Vec<(i64, String, String, String)> {
    store
        .connection()
        .prepare(&format!(
            "SELECT id, user_id, name, updated_at FROM {table} ORDER BY id"
        ))
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Rows of `table` under `owner`'s profiles (or of `owner`, for an owner table).
fn count_under(store: &Store, table: &str, owner: &str) -> i64 {
    let sql = match table {
        "profiles" | "settings_profiles" => {
            format!("SELECT count(*) FROM {table} WHERE user_id = ?1")
        }
        "lists" | "watch_history" => format!(
            "SELECT count(*) FROM {table} t JOIN profiles p ON p.id = t.profile_id \
             WHERE p.user_id = ?1"
        ),
        _ => unreachable!("{table}"),
    };
    store
        .connection()
        .query_row(&sql, [owner], |r| r.get(0))
        .unwrap()
}

async fn connect(
    d: &mut Device,
    url: &str,
    email: &str,
    register: bool,
) -> Result<usize, SyncError> {
    client::connect(
        &mut d.store,
        url,
        email,
        "correct horse",
        register,
        LocalData::Upload,
        &mut |_: Activity| {},
    )
    .await
    .map(|r| r.pushed)
}

async fn one_owner_is_synced(backend: Backend) {
    let Some(srv) = LiveServer::start(backend, "one_owner_is_synced").await else {
        eprintln!("skipped: SYNC_TEST_POSTGRES_URL is not set");
        return;
    };
    let mut a = Device::new("owners-a");
    let alice_profile = rows_of(&mut a.store, ALICE, "Alice");
    let guest_profile = rows_of(&mut a.store, GUEST, "Guest");
    let before_profiles = owners_of(&a.store, "profiles");
    let before_settings = owners_of(&a.store, "settings_profiles");

    // Two owners and none named: refused before anything is sent, naming both.
    let err = connect(&mut a, &srv.url, "alice@example.org", true)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(ALICE) && err.contains(GUEST), "{err}");
    assert_eq!(a.store.owner().unwrap(), None);
    assert!(a.store.session().unwrap().1.is_none(), "not signed in");

    // Named: only Alice's rows leave the device.
    a.store.choose_owner(Some(ALICE)).unwrap();
    let pushed = connect(&mut a, &srv.url, "alice@example.org", true)
        .await
        .unwrap();
    assert_eq!(
        pushed, 5,
        "Alice's settings profile, profile, list and 2 history rows"
    );
    assert_eq!(
        owners_of(&a.store, "profiles"),
        before_profiles,
        "the owner column and the app's stamps are never rewritten"
    );
    assert_eq!(owners_of(&a.store, "settings_profiles"), before_settings);
    let st = client::status(&a.store, Activity::Idle).unwrap();
    assert_eq!(st.owner.as_deref(), Some(ALICE));
    assert_eq!(st.pending.values().sum::<u64>(), 0, "{st:?}");
    assert_eq!(st.other_owners.values().sum::<u64>(), 5u64, "{st:?}");

    // A second device holds exactly Alice's rows, under its own owner.
    let mut b = Device::new("owners-b");
    connect(&mut b, &srv.url, "alice@example.org", false)
        .await
        .unwrap();
    for t in ["settings_profiles", "profiles", "lists", "watch_history"] {
        assert_eq!(
            live_count(&b.store, t),
            count_under(&a.store, t, ALICE),
            "{t}"
        );
    }
    let b_owner = b.store.owner().unwrap().expect("b's owner");
    assert!(
        owners_of(&b.store, "profiles")
            .iter()
            .all(|(_, o, n, _)| o == &b_owner && n == "Alice")
    );

    // Edits on both sides: the guest's edit never leaves A; B's edit of Alice's profile reaches
    // A, and the guest's rows stay exactly as the app wrote them.
    let mut g: Profile = a.store.get(guest_profile).unwrap().unwrap();
    g.name = "Guest renamed".into();
    a.store.update(&g).unwrap();
    a.sync().await.unwrap();
    let b_alice = owners_of(&b.store, "profiles")[0].0;
    let mut p: Profile = b.store.get(b_alice).unwrap().unwrap();
    p.name = "Alice B".into();
    b.store.update(&p).unwrap();
    b.sync().await.unwrap();
    let guest_before = owners_of(&a.store, "profiles")
        .into_iter()
        .find(|r| r.0 == guest_profile)
        .unwrap();
    a.sync().await.unwrap();
    let after = owners_of(&a.store, "profiles");
    assert!(after.contains(&guest_before), "{after:?}");
    let alice_after = after.iter().find(|r| r.0 == alice_profile).unwrap();
    assert_eq!(
        (alice_after.1.as_str(), alice_after.2.as_str()),
        (ALICE, "Alice B")
    );
    assert!(
        owners_of(&b.store, "profiles")
            .iter()
            .all(|(_, _, n, _)| n != "Guest renamed"),
        "another owner's edit never leaves its device"
    );
    assert!(a.store.is_dirty("profiles", guest_profile).unwrap());
}

#[tokio::test]
async fn one_owner_is_synced_sqlite() {
    one_owner_is_synced(Backend::Sqlite).await;
}

#[tokio::test]
async fn one_owner_is_synced_postgres() {
    one_owner_is_synced(Backend::Postgres).await;
}

/// With one owner the connection's owner is implied; with none, the framework's own entities
/// (whose owner column references no table) get the runtime's, and typed inserts that leave the
/// owner empty take it.
#[tokio::test]
async fn the_owner_is_implied_by_the_rows() {
    let srv = LiveServer::start(Backend::Sqlite, "owner_implied")
        .await
        .unwrap();
    let mut a = Device::new("implied-a");
    rows_of(&mut a.store, ALICE, "Alice");
    connect(&mut a, &srv.url, "implied@example.org", true)
        .await
        .unwrap();
    assert_eq!(a.store.owner().unwrap().as_deref(), Some(ALICE));

    let mut c = Device::new("implied-c");
    let p = c.store.insert(&mut profile("Empty owner", None)).unwrap();
    let made = c.store.owner().unwrap().expect("made by the runtime");
    assert_eq!(
        c.store.get::<Profile>(p).unwrap().unwrap().user_id,
        made,
        "an owner left empty is the connection's"
    );
}

/// The owner named must not be empty.
#[test]
fn an_empty_owner_is_refused() {
    let d = Device::new("empty-owner");
    let err = d.store.choose_owner(Some("  ")).unwrap_err().to_string();
    assert!(err.contains("empty"), "{err}");
    assert_eq!(d.store.owner().unwrap(), None);
}
