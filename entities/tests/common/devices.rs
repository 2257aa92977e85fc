//! Devices of the app that sync with `sync-server` processes through the real client, over
//! HTTP, each on its own database file.

use entities::Profile;
use std::collections::BTreeMap;
use std::path::PathBuf;
use sync_runtime::client::{self, Activity, LocalData};
use sync_runtime::{Store, Timestamp};

const PASSWORD: &str = "correct horse";

pub struct Device {
    pub store: Store,
    path: PathBuf,
}

impl Device {
    pub fn new(name: &str) -> Device {
        let path = std::env::temp_dir().join(format!(
            "device-{name}-{}-{}.sqlite",
            std::process::id(),
            uuid::Uuid::now_v7()
        ));
        let store = Store::open(&path, entities::app()).unwrap();
        Device { store, path }
    }

    /// Signs in to `email` on the server at `url` (registering it first if asked) and syncs.
    pub async fn connect(&mut self, url: &str, email: &str, register: bool) {
        let noop = &mut |_: Activity| {};
        client::connect(
            &mut self.store,
            url,
            email,
            PASSWORD,
            register,
            LocalData::Upload,
            noop,
        )
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    }

    /// Pushes and pulls once with the server it signed in to.
    pub async fn sync(&mut self) {
        client::sync_once(&mut self.store, &mut |_: Activity| {})
            .await
            .unwrap_or_else(|e| panic!("syncing {}: {e}", self.path.display()));
    }

    pub fn add_profile(&mut self, name: &str) {
        self.store
            .insert(&mut Profile {
                id: None,
                user_id: String::new(),
                name: name.into(),
                avatar: "A".into(),
                avatar_type: None,
                avatar_style: None,
                is_default: Some(false),
                settings_profile_id: None,
                created_at: Some(Timestamp::now()),
                updated_at: Timestamp::now(),
            })
            .unwrap();
    }

    fn profile(&self, name: &str) -> Profile {
        let all: Vec<Profile> = self.store.list().unwrap();
        all.into_iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no profile named {name}"))
    }

    pub fn rename_profile(&mut self, name: &str, to: &str) {
        let mut p = self.profile(name);
        p.name = to.into();
        self.store.update(&p).unwrap();
    }

    pub fn delete_profile(&mut self, name: &str) {
        let id = self.profile(name).id.unwrap();
        self.store.delete::<Profile>(id).unwrap();
    }

    /// The live profiles: name by remote id.
    pub fn profiles(&self) -> BTreeMap<String, String> {
        let all: Vec<Profile> = self.store.list().unwrap();
        all.into_iter()
            .map(|p| {
                let remote = self.store.remote_id("profiles", p.id.unwrap()).unwrap();
                (remote.unwrap_or_default(), p.name)
            })
            .collect()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
        }
    }
}
