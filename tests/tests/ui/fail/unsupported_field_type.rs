use sync_runtime::{Syncable, Timestamp};

#[derive(Syncable)]
#[sync(table = "bookmarks")]
pub struct Bookmark {
    pub id: Option<i64>,
    pub tags: Vec<String>,
    pub updated_at: Timestamp,
}

fn main() {}
