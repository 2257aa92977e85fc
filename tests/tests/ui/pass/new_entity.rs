// An app developer adds a ninth synced table with one annotated struct.
use entities::Profile;
use sync_runtime::migrate::{self, Migration};
use sync_runtime::{App, Schema, Store, Syncable, Timestamp};

#[derive(Syncable, Debug, Clone, PartialEq)]
#[sync(table = "bookmarks", unique(profile_id, url))]
pub struct Bookmark {
    pub id: Option<i64>,
    #[sync(references = Profile, on_delete = cascade)]
    pub profile_id: i64,
    pub url: String,
    #[sync(default = "Untitled")]
    pub title: Option<String>,
    #[sync(json)]
    pub tags: Vec<String>,
    #[sync(local)]
    pub opened_locally: Option<i64>,
    #[sync(since = 2)]
    pub note: Option<String>,
    pub updated_at: Timestamp,
}

fn main() {
    let mut tables = entities::schema().tables;
    tables.push(Bookmark::table().clone());
    let schema = Schema::new(tables).expect("a valid schema");
    assert_eq!(schema.version(), 2);
    let plan = migrate::plan(None, &schema).unwrap().expect("a first migration");
    assert!(plan.device.contains("CREATE TABLE IF NOT EXISTS \"bookmarks\""));
    assert!(plan.server_postgres.contains("CREATE TABLE \"bookmarks\""));
    assert!(!plan.server_postgres.contains("opened_locally"), "local fields stay on the device");
    let leak = |sql: String| -> &'static [Migration] {
        Box::leak(vec![Migration { version: 1, name: "0001_init".into(), sql: sql.into() }].into_boxed_slice())
    };
    let app: &'static App = Box::leak(Box::new(App {
        schema,
        device_migrations: leak(plan.device),
        server_sqlite_migrations: leak(plan.server_sqlite),
        server_postgres_migrations: leak(plan.server_postgres),
    }));
    let mut store = Store::open_in_memory(app).unwrap();
    let now = Timestamp::now();
    let mut profile = Profile {
        id: None,
        user_id: String::new(),
        name: "Ann".into(),
        avatar: "A".into(),
        avatar_type: None,
        avatar_style: None,
        is_default: None,
        settings_profile_id: None,
        created_at: None,
        updated_at: now,
    };
    let profile_id = store.insert(&mut profile).unwrap();
    let mut b = Bookmark {
        id: None,
        profile_id,
        url: "https://example.org".into(),
        title: None,
        tags: vec!["rust".into(), "sync".into()],
        opened_locally: Some(3),
        note: None,
        updated_at: now,
    };
    let id = store.insert(&mut b).unwrap();
    let read: Bookmark = store.get(id).unwrap().unwrap();
    assert_eq!(read.tags, b.tags);
    assert!(store.is_dirty("bookmarks", id).unwrap());
    store.delete::<Profile>(profile_id).unwrap();
    assert!(store.get::<Bookmark>(id).unwrap().is_none(), "deleting the profile cascades");
}
