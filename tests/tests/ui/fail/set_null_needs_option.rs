use entities::Profile;
use sync_runtime::{Syncable, Timestamp};

#[derive(Syncable)]
#[sync(table = "bookmarks")]
pub struct Bookmark {
    pub id: Option<i64>,
    #[sync(references = Profile, on_delete = set_null)]
    pub profile_id: i64,
    pub updated_at: Timestamp,
}

fn main() {
    let _ = Profile::TABLE_NAME;
}
