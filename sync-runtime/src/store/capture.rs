//! Capture of the app's own writes. The app writes its tables with its own SQL, from its own
//! process (docs/entities.md): it sets `dirty` on some writes and not on others (a new profile or
//! list is inserted with `dirty = 0`). Triggers on every synced table mark such a row dirty in
//! the same transaction, whoever wrote it, so it is pushed: an insert, an update of any app
//! column, a soft delete (`deleted_at` set).
//!
//! The runtime's own writes of pulled versions must not come back as local changes: its sync
//! steps pause the capture inside their transaction ([`Store::pause_capture`]), in the
//! runtime's table `sync_capture`. The pause is never seen outside that transaction (SQLite
//! has one writer at a time, and the flag is reset before the commit, or rolled back with it).
//!
//! The triggers are made at every open (`CREATE TRIGGER IF NOT EXISTS`, named with their
//! version), so a table the app rebuilt in its own migration gets them back.

use super::{Store, StoreError};
use crate::App;
use crate::ddl::quote_ident;
use crate::schema::{DateTimeText, Table, UPDATED_AT};
use rusqlite::Connection;

/// The triggers' version, in their names: a runtime whose triggers change drops the old ones.
const VERSION: u32 = 1;

/// Creates the capture triggers of every synced table where they are missing, and drops those of
/// another version.
pub(super) fn install(conn: &Connection, app: &App) -> Result<(), StoreError> {
    let stale: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'sync\\_capture\\_%' ESCAPE '\\' \
             AND name NOT LIKE ?1 ESCAPE '\\'",
        )?
        .query_map([format!("sync\\_capture\\_v{VERSION}\\_%")], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for name in stale {
        conn.execute_batch(&format!("DROP TRIGGER IF EXISTS {}", quote_ident(&name)))?;
    }
    for t in app.schema.synced() {
        conn.execute_batch(&triggers(t))?;
    }
    Ok(())
}

/// The capture triggers of synced table `t`.
fn triggers(t: &Table) -> String {
    let name = quote_ident(&t.name);
    let id = quote_ident(&t.id_column);
    let trigger = |what: &str| quote_ident(&format!("sync_capture_v{VERSION}_{}_{what}", t.name));
    // A row the app wrote without marking it, while no sync step applies pulled versions.
    let when = "NOT coalesce(new.\"dirty\", FALSE) \
                AND coalesce((SELECT paused FROM sync_capture WHERE id = 1), FALSE) = FALSE";
    // A stamp the merge needs: an insert without one takes now, in the column's own form.
    let now = match t.column(UPDATED_AT).map(|c| c.datetime_text) {
        Some(DateTimeText::Sqlite) => "CURRENT_TIMESTAMP",
        _ => crate::ddl::SQLITE_NOW,
    };
    let mut watched: Vec<String> = t
        .columns
        .iter()
        .filter(|c| c.on_wire())
        .map(|c| quote_ident(&c.name))
        .collect();
    watched.push(quote_ident("deleted_at"));
    format!(
        "CREATE TRIGGER IF NOT EXISTS {insert} AFTER INSERT ON {name} WHEN {when} BEGIN \
           UPDATE {name} SET \"dirty\" = TRUE, {u} = coalesce({u}, {now}) WHERE {id} = new.{id}; \
         END; \
         CREATE TRIGGER IF NOT EXISTS {update} AFTER UPDATE OF {cols} ON {name} WHEN {when} BEGIN \
           UPDATE {name} SET \"dirty\" = TRUE WHERE {id} = new.{id}; \
         END;",
        insert = trigger("insert"),
        update = trigger("update"),
        u = quote_ident(UPDATED_AT),
        cols = watched.join(", "),
    )
}

impl Store {
    /// Pauses the capture of writes for the rest of the current transaction: what the sync step
    /// writes is the server's, not a local change. [`Store::resume_capture`] before the commit.
    pub(super) fn pause_capture(&self) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("UPDATE sync_capture SET paused = TRUE WHERE id = 1")?
            .execute([])?;
        Ok(())
    }

    /// Ends [`Store::pause_capture`], in the same transaction.
    pub(super) fn resume_capture(&self) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("UPDATE sync_capture SET paused = FALSE WHERE id = 1")?
            .execute([])?;
        Ok(())
    }
}
