// Every misuse of one struct is reported by one compile.
use sync_runtime::{Syncable, Timestamp};

#[derive(Syncable)]
#[sync(table = "bookmarks", unique(nowhere), shard = 3)]
pub struct Bookmark {
    pub id: Option<i64>,
    #[sync(default = some_function())]
    pub url: String,
    #[sync(rename = "url", on_delete = cascade)]
    pub link: String,
    #[sync(rename = "dirty")]
    pub flag: bool,
    pub updated_at: Timestamp,
}

fn main() {}
