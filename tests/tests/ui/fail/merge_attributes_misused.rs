use sync_runtime::{Syncable, Timestamp};

// A unit groups fields that travel; a whole-row table has one unit already; `merge` belongs
// to the struct; a DATETIME text form is `wire` or `sqlite`.
#[derive(Syncable)]
#[sync(table = "notes", merge = row)]
pub struct Note {
    pub id: Option<i64>,
    #[sync(unit = "body")]
    pub title: String,
    #[sync(local, unit = "body")]
    pub draft: Option<String>,
    #[sync(merge = rows)]
    pub body: String,
    #[sync(datetime = iso)]
    pub due_at: Option<Timestamp>,
    pub updated_at: Timestamp,
}

fn main() {}
