use sync_runtime::{Syncable, Timestamp};

pub struct Folder {
    pub id: i64,
}

#[derive(Syncable)]
#[sync(table = "bookmarks")]
pub struct Bookmark {
    pub id: Option<i64>,
    #[sync(references = Folder, on_delete = cascade)]
    pub folder_id: i64,
    pub updated_at: Timestamp,
}

fn main() {}
