use sync_runtime::Syncable;

#[derive(Syncable)]
#[sync(table = "bookmarks")]
pub struct Bookmark {
    pub id: Option<i64>,
    pub updated_at: String,
}

fn main() {}
