use sync_runtime::{Syncable, Timestamp};

#[derive(Syncable)]
#[sync(table = "bookmarks", unique(url, folder))]
pub struct Bookmark {
    pub id: Option<i64>,
    pub url: String,
    pub updated_at: Timestamp,
}

fn main() {}
