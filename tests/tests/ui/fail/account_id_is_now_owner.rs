use sync_runtime::{Syncable, Timestamp};

// The column holding the app's local user was `account_id`; it is the row's owner now.
#[derive(Syncable)]
#[sync(table = "notes")]
pub struct Note {
    pub id: Option<i64>,
    #[sync(account_id)]
    pub user_id: String,
    pub title: String,
    pub updated_at: Timestamp,
}

fn main() {}
