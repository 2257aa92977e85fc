//! What a sync changed in the local database, for the app to refresh what it shows: per table,
//! the local ids of the rows a pull inserted, updated or deleted.

use crate::ddl::quote_ident;
use crate::protocol::page::PulledPage;
use crate::schema::Table;
use crate::store::{Store, StoreError};
use std::collections::{BTreeMap, BTreeSet};

/// Ids reported per table and sync; beyond this the table is reported as changed throughout.
pub const MAX_IDS_PER_TABLE: usize = 1000;

/// The rows changed locally by one sync (or one page of a live pull).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Changes {
    /// The tables that changed, by name.
    pub tables: BTreeMap<String, TableChanges>,
}

/// How one table changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TableChanges {
    /// Local ids of the rows inserted, updated or deleted (a deleted row keeps its id as a
    /// tombstone until the server purges it).
    pub ids: BTreeSet<i64>,
    /// Too many rows to name, or a full pull (which may also remove rows): refresh the table.
    pub all: bool,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Adds what `other` changed.
    pub fn merge(&mut self, other: Changes) {
        for (name, t) in other.tables {
            let mine = self.tables.entry(name).or_default();
            mine.all |= t.all;
            mine.ids.extend(t.ids);
            mine.cap();
        }
    }

    /// Records the rows of a page applied to `store` (their remote ids, read before it was
    /// applied by [`touched`]).
    pub(crate) fn record(&mut self, store: &Store, touched: Touched) -> Result<(), StoreError> {
        match touched {
            Touched::Tables(tables) => {
                for t in tables {
                    self.tables.entry(t.name.clone()).or_default().all = true;
                }
            }
            Touched::Rows(rows) => {
                for (table, remote_ids) in rows {
                    let entry = self.tables.entry(table.name.clone()).or_default();
                    if entry.all {
                        continue;
                    }
                    let mut find = store.connection().prepare_cached(&format!(
                        "SELECT {} FROM {} WHERE remote_id = ?1",
                        quote_ident(&table.id_column),
                        quote_ident(&table.name)
                    ))?;
                    for rid in remote_ids {
                        // A row held back (its parent has not arrived) has no local id yet.
                        if let Some(id) = find
                            .query_row([&rid], |r| r.get::<_, i64>(0))
                            .map(Some)
                            .or_else(|e| match e {
                            rusqlite::Error::QueryReturnedNoRows => Ok(None),
                            e => Err(e),
                        })? {
                            entry.ids.insert(id);
                        }
                        if entry.ids.len() > MAX_IDS_PER_TABLE {
                            break;
                        }
                    }
                    entry.cap();
                }
            }
        }
        Ok(())
    }
}

impl TableChanges {
    fn cap(&mut self) {
        if self.all || self.ids.len() > MAX_IDS_PER_TABLE {
            self.all = true;
            self.ids.clear();
        }
    }
}

/// The rows a page will touch, read before it is applied.
pub(crate) enum Touched {
    /// A page of a full pull: whole tables (its end may remove rows it did not return).
    Tables(Vec<&'static Table>),
    /// An incremental page: these records of each table.
    Rows(Vec<(&'static Table, Vec<String>)>),
}

/// What `page` touches; `full` when it belongs to a full pull.
pub(crate) fn touched(page: &PulledPage, full: bool) -> Touched {
    if full {
        return Touched::Tables(page.changes.iter().map(|(t, _)| *t).collect());
    }
    Touched::Rows(
        page.changes
            .iter()
            .filter(|(_, rows)| !rows.is_empty())
            .map(|(t, rows)| {
                let ids = rows.iter().take(MAX_IDS_PER_TABLE + 1);
                (*t, ids.map(|r| r.remote_id.clone()).collect())
            })
            .collect(),
    )
}
