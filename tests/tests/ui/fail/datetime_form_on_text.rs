use sync_runtime::{Syncable, Timestamp};

#[derive(Syncable)]
#[sync(table = "notes")]
pub struct Note {
    pub id: Option<i64>,
    #[sync(datetime = sqlite)]
    pub title: String,
    pub updated_at: Timestamp,
}

fn main() {}
