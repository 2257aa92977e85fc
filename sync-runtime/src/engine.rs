//! The device's half of a sync, on the local store: reading dirty rows for a push, applying
//! the push's results, and applying pulled pages. No network here: `client` carries the JSON.
//!
//! Each step is one local transaction, so a sync interrupted anywhere (a killed process, a cut
//! connection) leaves either all of a step or none of it.

use crate::ddl::{quote_ident, quote_literal};
use crate::merge::{DeviceDecision, LocalRow, Stamp, decide_on_device};
use crate::protocol::page::PulledPage;
use crate::protocol::push::{PushResults, RowResult};
use crate::protocol::wire::WireRow;
use crate::schema::{ColumnRole, Table};
use crate::store::{Sql, Store, StoreError};
use crate::timestamp::Timestamp;
use crate::value::{Value, ValueError};
use rusqlite::{OptionalExtension, params_from_iter};
use serde_json::Value as Json;
use std::collections::HashMap;

/// One row read for a push, to be matched with its result.
#[derive(Clone, Debug)]
pub struct PushedRow {
    pub table: String,
    pub id: i64,
    /// The stamp the row had when it was read: its dirty mark is cleared only if it still has it.
    pub updated_at: String,
    pub remote_id: String,
}

/// A batch of dirty rows, parents first, as the `changes` of a push.
#[derive(Clone, Debug)]
pub struct PushBatch {
    /// The push's `changes` object, as sent.
    pub changes: Box<serde_json::value::RawValue>,
    pub rows: Vec<PushedRow>,
}

/// What a push's results did locally.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushSummary {
    pub applied: usize,
    pub stale: usize,
    pub merged: usize,
    pub rejected: usize,
}

/// What a pulled page did locally.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageSummary {
    pub rows: usize,
    pub parked: usize,
    pub has_more: bool,
}

/// A row the server refused, kept dirty and shown in the status.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RejectedRow {
    pub table: String,
    pub id: i64,
    pub message: String,
}

/// A statement parameter, borrowed where the row already holds it.
enum Param<'a> {
    Value(&'a Value),
    Ref(&'a str),
    Own(Value),
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Param::Value(v) => v.to_sql(),
            Param::Ref(s) => s.to_sql(),
            Param::Own(v) => v.to_sql(),
        }
    }
}

/// Where a pulled row came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Incoming {
    Pull,
    /// A push answered `stale`: the server's version, stored as if pulled.
    Stale,
    /// A pulled version held back earlier: it may be older than what this device has since
    /// learned (found by the simulation, seed 229).
    Parked,
}

enum Applied {
    Done,
    Parked,
}

fn err(table: &Table, m: impl Into<String>) -> StoreError {
    StoreError::Value {
        table: table.name.clone(),
        source: ValueError(m.into()),
    }
}

pub(crate) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
}

impl Store {
    /// The cursor of the last pulled page (`None`: the next pull is a full pull).
    pub fn cursor(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT cursor FROM sync_state WHERE id = 1", [], |r| {
                r.get(0)
            })?)
    }

    /// Forgets the cursor: the next pull is a full one, after which clean rows it did not return
    /// are removed (their tombstones were purged meanwhile). Dirty rows are kept.
    pub fn restart_full_pull(&mut self) -> Result<(), StoreError> {
        self.conn.execute_batch("UPDATE sync_state SET cursor = NULL, full_pull = TRUE WHERE id = 1; DELETE FROM sync_seen;")?;
        Ok(())
    }

    /// Starts a full pull at its first page: what an earlier attempt marked seen predates this
    /// pull's start, and a record deleted on the server since (its tombstone older than the
    /// pull, so not in it) would escape the sweep (simulation seed 3232). Everything the server
    /// holds live now comes in this pull's pages.
    pub(crate) fn begin_full_pull(&mut self) -> Result<(), StoreError> {
        self.conn.execute("DELETE FROM sync_seen", [])?;
        Ok(())
    }

    /// Marks every row the server was told of dirty again, its stamp unchanged: a server restored
    /// from an earlier copy gets back what it lost, and keeps by the merge rule what it has
    /// newer. Until pushed, these rows are safe from a full pull's sweep (dirty rows are kept).
    pub fn requeue_all_for_upload(&mut self) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        for t in self.synced_children_first() {
            self.conn.execute(
                &format!(
                    "UPDATE {} SET dirty = TRUE WHERE NOT dirty AND remote_id IS NOT NULL",
                    quote_ident(&t.name)
                ),
                [],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Reads up to `limit` dirty rows, parents before children, skipping rows the server
    /// rejected at their current stamp. Rows without a `remote_id` get one now, in the same
    /// transaction, so a retried push reuses it.
    pub fn prepare_push(
        &mut self,
        limit: usize,
        skip: &std::collections::HashSet<(String, i64, String)>,
    ) -> Result<Option<PushBatch>, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        // The `changes` object of the request, written as the rows are read.
        let mut body: Vec<u8> = vec![b'{'];
        let version = self.app.schema.version();
        let mut rows = Vec::new();
        let schema = &self.app.schema;
        for t in schema.synced() {
            if rows.len() >= limit {
                break;
            }
            let name = quote_ident(&t.name);
            self.conn
                .prepare_cached(&format!(
                    "UPDATE {name} SET remote_id = sync_new_id() WHERE dirty = TRUE AND remote_id IS NULL"
                ))?
                .execute([])?;
            let mut select = vec![
                format!("t.{}", quote_ident(&t.id_column)),
                "t.updated_at".into(),
                "t.remote_id".into(),
                "t.deleted_at".into(),
            ];
            let mut joins = Vec::new();
            for (i, c) in t.columns.iter().enumerate() {
                match &c.reference {
                    Some(r) => {
                        let parent = schema
                            .table(&r.table)
                            .ok_or_else(|| err(t, "unknown parent"))?;
                        let key = r.by_key.clone().unwrap_or_else(|| "remote_id".into());
                        select.push(format!("p{i}.{}", quote_ident(&key)));
                        joins.push(format!(
                            "LEFT JOIN {} AS p{i} ON p{i}.{} = t.{}",
                            quote_ident(&parent.name),
                            quote_ident(&parent.id_column),
                            quote_ident(&c.name)
                        ));
                    }
                    None => select.push(format!("t.{}", quote_ident(&c.name))),
                }
            }
            let sql = format!(
                "SELECT {} FROM {name} AS t {} WHERE t.dirty = TRUE AND NOT EXISTS (SELECT 1 FROM sync_rejected x \
                 WHERE x.table_name = {} AND x.row_id = t.{} AND x.updated_at = t.updated_at) ORDER BY t.{} LIMIT ?1",
                select.join(", "),
                joins.join(" "),
                quote_literal(&t.name),
                quote_ident(&t.id_column),
                quote_ident(&t.id_column),
            );
            let mut stmt = self.conn.prepare_cached(&sql)?;
            let want = (limit - rows.len() + skip.len()) as i64;
            let mut q = stmt.query([want])?;
            let mut list_started = false;
            while let Some(r) = q.next()? {
                if rows.len() >= limit {
                    break;
                }
                let id: i64 = r.get(0)?;
                let updated_at: String = r.get(1)?;
                if skip.contains(&(t.name.clone(), id, updated_at.clone())) {
                    continue;
                }
                let remote_id: String = r.get(2)?;
                let deleted_at: Option<String> = r.get(3)?;
                let stamp =
                    Timestamp::parse_lenient(&updated_at).map_err(|e| err(t, e.to_string()))?;
                let deleted_at = deleted_at
                    .map(|d| Timestamp::parse_lenient(&d))
                    .transpose()
                    .map_err(|e| err(t, e.to_string()))?;
                let mut values = Vec::with_capacity(t.columns.len());
                for (i, c) in t.columns.iter().enumerate() {
                    values.push(if !c.on_wire() || c.name == crate::schema::UPDATED_AT {
                        Value::Null
                    } else if c.reference.is_some() {
                        r.get::<_, Option<String>>(4 + i)?
                            .map_or(Value::Null, Value::Text)
                    } else {
                        Value::from_sqlite(c.ty, r.get_ref(4 + i)?)
                            .map_err(|e| err(t, format!("row {id}, `{}`: {}", c.name, e.0)))?
                    });
                }
                // Written straight into the request body: a tree of JSON values per row cost
                // more to build and free than the rest of reading the batch.
                if list_started {
                    body.push(b',');
                } else {
                    if body.len() > 1 {
                        body.push(b',');
                    }
                    serde_json::to_writer(&mut body, &t.name).map_err(|e| err(t, e.to_string()))?;
                    body.extend_from_slice(b":[");
                    list_started = true;
                }
                serde_json::to_writer(
                    &mut body,
                    &crate::protocol::wire::RowJson {
                        table: t,
                        version,
                        remote_id: &remote_id,
                        updated_at: stamp,
                        device_id: None,
                        deleted_at,
                        values: &values,
                    },
                )
                .map_err(|e| err(t, e.to_string()))?;
                rows.push(PushedRow {
                    table: t.name.clone(),
                    id,
                    updated_at,
                    remote_id,
                });
            }
            if list_started {
                body.push(b']');
            }
        }
        tx.commit()?;
        body.push(b'}');
        let changes = String::from_utf8(body)
            .ok()
            .and_then(|b| serde_json::value::RawValue::from_string(b).ok())
            .ok_or_else(|| StoreError::BadPage("a push body that is not JSON".into()))?;
        Ok((!rows.is_empty()).then_some(PushBatch { changes, rows }))
    }

    /// Records that the server refused `row` at its current stamp: it stays dirty, shows in the
    /// status, and is not pushed again until it changes.
    pub fn reject(&self, row: &PushedRow, message: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO sync_rejected (table_name, row_id, updated_at, message) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (table_name, row_id) DO UPDATE SET updated_at = excluded.updated_at, message = excluded.message",
            (&row.table, row.id, &row.updated_at, message),
        )?;
        Ok(())
    }

    /// Applies the `results` of a push of `rows` (a [`PushBatch`]'s), in one transaction.
    pub fn apply_push_results(
        &mut self,
        rows: &[PushedRow],
        results: &PushResults,
    ) -> Result<PushSummary, StoreError> {
        self.with_account(|s| s.apply_results(rows, results))
    }

    fn apply_results(
        &mut self,
        rows: &[PushedRow],
        results: &PushResults,
    ) -> Result<PushSummary, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let mut summary = PushSummary::default();
        let by_key: HashMap<(&str, &str), &RowResult> = results
            .iter()
            .flat_map(|(table, list)| {
                list.iter()
                    .map(move |r| ((table.as_str(), r.remote_id.as_str()), &r.result))
            })
            .collect();
        // A full pull in progress resumes with pages that leave out this device's own writes:
        // what this push stored on the server must count as seen, or the sweep at the pull's end
        // would remove it here.
        let full_pull = self.in_full_pull()?;
        let any_rejected: bool =
            self.conn
                .query_row("SELECT EXISTS (SELECT 1 FROM sync_rejected)", [], |r| {
                    r.get(0)
                })?;
        for row in rows {
            let Some(&result) = by_key.get(&(row.table.as_str(), row.remote_id.as_str())) else {
                continue;
            };
            let table = self.table(&row.table)?;
            if full_pull {
                let stored = match result {
                    RowResult::Applied => Some(row.remote_id.as_str()),
                    RowResult::Merged { canonical_id, .. } => Some(canonical_id.as_str()),
                    RowResult::Stale { row } => row["remote_id"].as_str(),
                    RowResult::Rejected { .. } => None,
                };
                if let Some(rid) = stored {
                    self.mark_seen(table, rid)?;
                }
            }
            match result {
                RowResult::Applied => {
                    self.clear_dirty(table, row, any_rejected)?;
                    summary.applied += 1;
                }
                RowResult::Merged {
                    canonical_id,
                    row: survivor,
                } => {
                    self.adopt_remote_id(table, row, canonical_id, survivor.is_none())?;
                    // The pushed write lost the merge: take the survivor's version.
                    if let Some(survivor) = survivor {
                        self.apply_incoming(
                            table,
                            self.server_row(table, survivor)?,
                            Incoming::Stale,
                            &mut HashMap::new(),
                        )?;
                    }
                    summary.merged += 1;
                }
                RowResult::Stale { row: server_row } => {
                    if let Some(canonical) = server_row["remote_id"]
                        .as_str()
                        .filter(|c| *c != row.remote_id)
                    {
                        let canonical = canonical.to_owned();
                        self.adopt_remote_id(table, row, &canonical, false)?;
                    }
                    self.apply_incoming(
                        table,
                        self.server_row(table, server_row)?,
                        Incoming::Stale,
                        &mut HashMap::new(),
                    )?;
                    summary.stale += 1;
                }
                RowResult::Rejected { .. } if self.under_a_pushed_tombstone(table, row.id)? => {
                    // An orphan the server could not recognise (it purged its parent's
                    // tombstone): the server's orphan rule, applied here. The row becomes a
                    // tombstone, pushed next (simulation seed 882, purges).
                    self.tombstone_orphan(table, row.id)?;
                    summary.stale += 1;
                }
                RowResult::Rejected { message } => {
                    self.reject(row, message)?;
                    summary.rejected += 1;
                }
            }
        }
        self.retry_parked()?;
        self.purge_removed()?;
        tx.commit()?;
        Ok(summary)
    }

    /// Whether live row `id` of `table` has a CASCADE parent that is a tombstone the server has
    /// (pushed): the server treats such a row as an orphan, a derived tombstone.
    fn under_a_pushed_tombstone(&self, table: &Table, id: i64) -> Result<bool, StoreError> {
        for (col, r) in table.references() {
            if r.on_delete != crate::schema::OnDelete::Cascade {
                continue;
            }
            let Ok(parent) = self.table(&r.table) else {
                continue;
            };
            if !parent.synced {
                continue;
            }
            let orphan: bool = self.conn.query_row(
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM {c} c JOIN {p} p ON p.{pid} = c.{col} \
                     WHERE c.{cid} = ?1 AND c.deleted_at IS NULL AND p.deleted_at IS NOT NULL AND NOT p.dirty)",
                    c = quote_ident(&table.name),
                    p = quote_ident(&parent.name),
                    pid = quote_ident(&parent.id_column),
                    col = quote_ident(&col.name),
                    cid = quote_ident(&table.id_column),
                ),
                [id],
                |r| r.get(0),
            )?;
            if orphan {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Makes live row `id` of `table` a tombstone, with its CASCADE children, each stamped and
    /// dirty, as a local delete does.
    fn tombstone_orphan(&self, table: &Table, id: i64) -> Result<(), StoreError> {
        self.conn.execute(
            &format!(
                "UPDATE {} SET {}, dirty = TRUE WHERE {} = ?1 AND deleted_at IS NULL",
                quote_ident(&table.name),
                crate::store::TOMBSTONE,
                quote_ident(&table.id_column)
            ),
            [id],
        )?;
        self.cascade(table, id)
    }

    /// Marks a pushed row clean, and forgets an earlier rejection of it if `was_rejected` may be
    /// true (a push of rows never rejected skips that statement per row).
    fn clear_dirty(
        &self,
        table: &Table,
        row: &PushedRow,
        was_rejected: bool,
    ) -> Result<(), StoreError> {
        // Only if unchanged since it was read: an edit made while the push was in flight stays dirty.
        self.conn
            .prepare_cached(&self.sql(table, Sql::ClearDirty, || {
                format!(
                    "UPDATE {} SET dirty = FALSE WHERE {} = ?1 AND updated_at = ?2",
                    quote_ident(&table.name),
                    quote_ident(&table.id_column)
                )
            }))?
            .execute((row.id, &row.updated_at))?;
        if was_rejected {
            self.conn
                .prepare_cached("DELETE FROM sync_rejected WHERE table_name = ?1 AND row_id = ?2")?
                .execute((&table.name, row.id))?;
        }
        Ok(())
    }

    /// The server merged this row into record `canonical`. If this device already holds that
    /// record (pulled earlier), the two local rows become one: children move to it, and it takes
    /// this row's values if they `won` the merge rule on the server.
    fn adopt_remote_id(
        &self,
        table: &Table,
        row: &PushedRow,
        canonical: &str,
        won: bool,
    ) -> Result<(), StoreError> {
        let (t, idc) = (quote_ident(&table.name), quote_ident(&table.id_column));
        let here: bool = self.conn.query_row(
            &format!("SELECT EXISTS (SELECT 1 FROM {t} WHERE {idc} = ?1)"),
            [row.id],
            |r| r.get(0),
        )?;
        if !here {
            // An earlier result of this push merged the row into its twin here already (its
            // parent was merged, and the twin shares its natural key under the survivor): the
            // twin stands for the record (found by the simulation, seed 2249).
            return Ok(());
        }
        let survivor: Option<i64> = self
            .conn
            .query_row(
                &format!("SELECT {idc} FROM {t} WHERE remote_id = ?1 AND {idc} <> ?2"),
                (canonical, row.id),
                |r| r.get(0),
            )
            .optional()?;
        match survivor {
            None => {
                self.conn.execute(
                    &format!("UPDATE {t} SET remote_id = ?1 WHERE {idc} = ?2"),
                    (canonical, row.id),
                )?;
                self.clear_dirty(table, row, true)?;
            }
            Some(sid) => {
                self.move_children(table, row.id, sid)?;
                // This device's write won on the server: the survivor takes its values. They
                // are read before this row goes, since the two share a natural key (found by the
                // simulation, seed 34).
                let names: Vec<String> = table
                    .columns
                    .iter()
                    .filter(|c| c.on_wire())
                    .map(|c| quote_ident(&c.name))
                    .chain(["deleted_at".to_owned()])
                    .collect();
                let won: Option<Vec<rusqlite::types::Value>> = won
                    .then(|| {
                        self.conn.query_row(
                            &format!("SELECT {} FROM {t} WHERE {idc} = ?1", names.join(", ")),
                            [row.id],
                            |r| (0..names.len()).map(|i| r.get(i)).collect(),
                        )
                    })
                    .transpose()?;
                self.conn
                    .execute(&format!("DELETE FROM {t} WHERE {idc} = ?1"), [row.id])?;
                if let Some(mut values) = won {
                    let sets: Vec<String> = names.iter().map(|n| format!("{n} = ?")).collect();
                    values.push(rusqlite::types::Value::Integer(sid));
                    self.conn.execute(
                        &format!(
                            "UPDATE {t} SET {}, dirty = FALSE WHERE {idc} = ?",
                            sets.join(", ")
                        ),
                        params_from_iter(values.iter()),
                    )?;
                }
                self.conn.execute(
                    "DELETE FROM sync_rejected WHERE table_name = ?1 AND row_id = ?2",
                    (&table.name, row.id),
                )?;
            }
        }
        Ok(())
    }

    /// Moves the children of row `from` of `table` to row `to`, as the server did when it merged
    /// the two records. A child whose natural key the new parent's children already hold is the
    /// same record there: its own children move too, a newer unpushed edit of it carries over
    /// (to be pushed under the surviving record), and it goes (found by the simulation, seed 116).
    fn move_children(&self, table: &Table, from: i64, to: i64) -> Result<(), StoreError> {
        for (child, col, _) in self.app.schema.children_of(&table.name) {
            let (ct, cid, cc) = (
                quote_ident(&child.name),
                quote_ident(&child.id_column),
                quote_ident(&col.name),
            );
            let rows: Vec<i64> = self
                .conn
                .prepare(&format!("SELECT {cid} FROM {ct} WHERE {cc} = ?1"))?
                .query_map([from], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for c in rows {
                match self.conn.execute(
                    &format!("UPDATE {ct} SET {cc} = ?1 WHERE {cid} = ?2"),
                    (to, c),
                ) {
                    Ok(_) => {}
                    Err(e) if is_unique_violation(&e) => {
                        let twin = self.same_record_under(child, c, &col.name, to)?;
                        let Some(twin) = twin else {
                            return Err(e.into());
                        };
                        self.move_children(child, c, twin)?;
                        if child.synced {
                            // A newer unpushed edit wins over the twin's version.
                            self.conn.execute(
                                &format!(
                                    "UPDATE {ct} SET ({cols}, updated_at, dirty) = (SELECT {cols}, c.updated_at, TRUE FROM {ct} c WHERE c.{cid} = ?1) \
                                     WHERE {cid} = ?2 AND (SELECT c.dirty AND c.updated_at > {ct}.updated_at FROM {ct} c WHERE c.{cid} = ?1)",
                                    cols = self.plain_columns(child).join(", ")
                                ),
                                (c, twin),
                            )?;
                        }
                        self.conn
                            .execute(&format!("DELETE FROM {ct} WHERE {cid} = ?1"), [c])?;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// The columns of `table` that are neither a reference nor part of a natural key.
    fn plain_columns(&self, table: &Table) -> Vec<String> {
        let keys: std::collections::BTreeSet<&str> = table
            .natural_keys
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        table
            .columns
            .iter()
            .filter(|c| {
                c.reference.is_none()
                    && c.on_wire()
                    && c.name != crate::schema::UPDATED_AT
                    && !keys.contains(c.name.as_str())
            })
            .map(|c| quote_ident(&c.name))
            .collect()
    }

    /// The row of `table` other than `row` that would share a natural key with it if its column
    /// `col` were `value`.
    fn same_record_under(
        &self,
        table: &Table,
        row: i64,
        col: &str,
        value: i64,
    ) -> Result<Option<i64>, StoreError> {
        let (t, idc) = (quote_ident(&table.name), quote_ident(&table.id_column));
        for key in table
            .natural_keys
            .iter()
            .filter(|k| k.iter().any(|c| c == col))
        {
            let conds: Vec<String> = key
                .iter()
                .map(|k| {
                    if k == col {
                        format!("o.{} = ?2", quote_ident(k))
                    } else {
                        format!("o.{0} = r.{0}", quote_ident(k))
                    }
                })
                .collect();
            let sql = format!(
                "SELECT o.{idc} FROM {t} o, {t} r WHERE r.{idc} = ?1 AND o.{idc} <> ?1 AND {}",
                conds.join(" AND ")
            );
            if let Some(id) = self
                .conn
                .query_row(&sql, (row, value), |r| r.get(0))
                .optional()?
            {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// Removes rows of device-only tables that the app deleted, once nothing unpushed or live
    /// points at them any more.
    fn purge_removed(&self) -> Result<(), StoreError> {
        for t in self.app.schema.tables.iter().filter(|t| !t.synced) {
            let waiting: Vec<String> = self
                .app
                .schema
                .children_of(&t.name)
                .filter(|(c, _, _)| c.synced)
                .map(|(c, col, _)| {
                    format!(
                        "EXISTS (SELECT 1 FROM {} c WHERE c.{} = r.row_id AND (c.dirty OR c.deleted_at IS NULL))",
                        quote_ident(&c.name),
                        quote_ident(&col.name)
                    )
                })
                .collect();
            let blocked = if waiting.is_empty() {
                "FALSE".to_owned()
            } else {
                waiting.join(" OR ")
            };
            let ids: Vec<i64> = self
                .conn
                .prepare(&format!("SELECT r.row_id FROM sync_removed r WHERE r.table_name = ?1 AND NOT ({blocked})"))?
                .query_map([&t.name], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for id in ids {
                self.conn.execute(
                    &format!(
                        "DELETE FROM {} WHERE {} = ?1",
                        quote_ident(&t.name),
                        quote_ident(&t.id_column)
                    ),
                    [id],
                )?;
                self.conn.execute(
                    "DELETE FROM sync_removed WHERE table_name = ?1 AND row_id = ?2",
                    (&t.name, id),
                )?;
            }
        }
        Ok(())
    }

    /// Applies one pulled page (decoded by [`PulledPage::decode`], off the thread that stores
    /// it) in one transaction together with its cursor, so an interrupted pull resumes where it
    /// stopped.
    pub fn apply_pulled(&mut self, page: PulledPage) -> Result<PageSummary, StoreError> {
        self.with_account(|s| s.apply_page(page))
    }

    fn apply_page(&mut self, page: PulledPage) -> Result<PageSummary, StoreError> {
        let (cursor, has_more) = (page.cursor, page.has_more);
        let tx = self.conn.unchecked_transaction()?;
        let full_pull = self.in_full_pull()?;
        let mut summary = PageSummary {
            has_more,
            ..Default::default()
        };
        let mut cache = HashMap::new();
        let any_parked = self.parked_count()? > 0;
        for (table, rows) in page.changes {
            for row in rows {
                let rid = row.remote_id.as_str();
                if full_pull {
                    self.mark_seen(table, rid)?;
                }
                if any_parked {
                    // A newer version supersedes a held-back one (found by the simulation, seed 34).
                    self.unpark(table, rid)?;
                }
                summary.rows += 1;
                if let Applied::Parked =
                    self.apply_incoming(table, row, Incoming::Pull, &mut cache)?
                {
                    summary.parked += 1;
                }
            }
        }
        self.retry_parked()?;
        self.conn
            .execute("UPDATE sync_state SET cursor = ?1 WHERE id = 1", [&cursor])?;
        if !has_more && full_pull {
            self.sweep_unseen()?;
        }
        tx.commit()?;
        Ok(summary)
    }

    /// Whether a full pull is under way (its end sweeps the rows it did not see).
    pub fn in_full_pull(&self) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT full_pull FROM sync_state WHERE id = 1", [], |r| {
                r.get(0)
            })?)
    }

    /// Records that the server holds record `remote_id` of `table`, for the full pull's sweep.
    fn mark_seen(&self, table: &Table, remote_id: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO sync_seen (table_name, remote_id) VALUES (?1, ?2)",
            )?
            .execute((&table.name, remote_id))?;
        Ok(())
    }

    /// Drops the held-back version of record `remote_id` of `table`, if any.
    fn unpark(&self, table: &Table, remote_id: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("DELETE FROM sync_parked WHERE table_name = ?1 AND remote_id = ?2")?
            .execute((&table.name, remote_id))?;
        Ok(())
    }

    /// After a full pull: clean rows the server did not return are gone from the account.
    fn sweep_unseen(&self) -> Result<(), StoreError> {
        self.tombstone_dirty_rows_under_unseen()?;
        for t in self.synced_children_first() {
            self.conn.execute(
                &format!(
                    "DELETE FROM {} AS p WHERE NOT dirty AND remote_id IS NOT NULL AND remote_id NOT IN \
                     (SELECT remote_id FROM sync_seen WHERE table_name = ?1) AND NOT {}",
                    quote_ident(&t.name),
                    self.has_dirty_children(t, "p")
                ),
                [&t.name],
            )?;
        }
        // A held-back version of a record the full pull did not return is of a record the
        // server no longer holds live: its tombstone, from before the pull began, will never
        // come (simulation seed 881, purges).
        self.conn.execute(
            "DELETE FROM sync_parked WHERE NOT EXISTS (SELECT 1 FROM sync_seen s \
             WHERE s.table_name = sync_parked.table_name AND s.remote_id = sync_parked.remote_id)",
            [],
        )?;
        // Rejections are forgotten: the server's whole state is here now, and a row refused for
        // a reference the server had purged was changed by the sweep (its SET NULL reference
        // nulled) without a new stamp, so it is tried once more (simulation seed 85, purges).
        self.conn.execute_batch(
            "DELETE FROM sync_seen; DELETE FROM sync_rejected; UPDATE sync_state SET full_pull = FALSE WHERE id = 1;",
        )?;
        Ok(())
    }

    /// Before the sweep removes the rows the server no longer holds: a dirty row under one of
    /// them (an edit the server has not taken, made under a parent another device deleted) would
    /// go with its parent, unpushed, although the server may hold that record live elsewhere
    /// (an edit that moved it there was refused once the server purged the parent's tombstone).
    /// By the orphan rule, the server's own, it becomes a tombstone here, pushed next; its
    /// parent stays as a clean tombstone until the sweep after the push (simulation seed 562,
    /// purges).
    fn tombstone_dirty_rows_under_unseen(&self) -> Result<(), StoreError> {
        let unseen = |alias: &str| {
            format!(
                "NOT {alias}.dirty AND {alias}.remote_id IS NOT NULL AND {alias}.remote_id NOT IN \
                 (SELECT remote_id FROM sync_seen WHERE table_name = ?1)"
            )
        };
        for parent in self.app.schema.synced() {
            let (pt, pid) = (quote_ident(&parent.name), quote_ident(&parent.id_column));
            for (child, col, r) in self.app.schema.children_of(&parent.name) {
                if !child.synced || r.on_delete != crate::schema::OnDelete::Cascade {
                    continue;
                }
                let (ct, cc, cid) = (
                    quote_ident(&child.name),
                    quote_ident(&col.name),
                    quote_ident(&child.id_column),
                );
                let orphans: Vec<i64> = self
                    .conn
                    .prepare(&format!(
                        "SELECT c.{cid} FROM {ct} c JOIN {pt} p ON p.{pid} = c.{cc} \
                         WHERE c.dirty AND c.deleted_at IS NULL AND {}",
                        unseen("p")
                    ))?
                    .query_map([&parent.name], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                for id in orphans {
                    self.tombstone_orphan(child, id)?;
                }
            }
            // Deleting the parent would take the dirty rows with it (the schema's cascade): it
            // stays as a tombstone instead, and its SET NULL references are nulled as the
            // deletion would have nulled them (simulation seed 85).
            let kept = format!(
                "SELECT p.{pid} FROM {pt} p WHERE {} AND {}",
                unseen("p"),
                self.has_dirty_children(parent, "p")
            );
            for (child, col, r) in self.app.schema.children_of(&parent.name) {
                if r.on_delete != crate::schema::OnDelete::SetNull {
                    continue;
                }
                let (ct, cc) = (quote_ident(&child.name), quote_ident(&col.name));
                self.conn.execute(
                    &format!("UPDATE {ct} SET {cc} = NULL WHERE {cc} IN ({kept})"),
                    [&parent.name],
                )?;
            }
            self.conn.execute(
                &format!(
                    "UPDATE {pt} SET deleted_at = updated_at \
                     WHERE deleted_at IS NULL AND {pid} IN ({kept})"
                ),
                [&parent.name],
            )?;
        }
        Ok(())
    }

    /// SQL: whether row `alias` of `parent` has a dirty row under it by a CASCADE reference.
    fn has_dirty_children(&self, parent: &Table, alias: &str) -> String {
        let pid = quote_ident(&parent.id_column);
        let held: Vec<String> = self
            .app
            .schema
            .children_of(&parent.name)
            .filter(|(c, _, r)| c.synced && r.on_delete == crate::schema::OnDelete::Cascade)
            .map(|(c, col, _)| {
                format!(
                    "EXISTS (SELECT 1 FROM {} c WHERE c.{} = {alias}.{pid} AND c.dirty)",
                    quote_ident(&c.name),
                    quote_ident(&col.name)
                )
            })
            .collect();
        if held.is_empty() {
            "FALSE".into()
        } else {
            format!("({})", held.join(" OR "))
        }
    }

    /// Applies held-back rows whose parent has arrived or whose natural key is free now, until
    /// no more can be applied.
    fn retry_parked(&self) -> Result<(), StoreError> {
        loop {
            let parked: Vec<(String, String, String)> = self
                .conn
                .prepare("SELECT table_name, remote_id, row FROM sync_parked")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            if parked.is_empty() {
                return Ok(());
            }
            let mut progress = false;
            let mut cache = HashMap::new();
            for t in self.app.schema.synced() {
                for (_, rid, text) in parked.iter().filter(|(tn, _, _)| *tn == t.name) {
                    let row: Json =
                        serde_json::from_str(text).map_err(|e| err(t, e.to_string()))?;
                    self.unpark(t, rid)?;
                    if let Applied::Done = self.apply_incoming(
                        t,
                        self.server_row(t, &row)?,
                        Incoming::Parked,
                        &mut cache,
                    )? {
                        progress = true;
                    }
                }
            }
            if !progress {
                return Ok(());
            }
        }
    }

    fn park(&self, table: &Table, row: &WireRow) -> Result<Applied, StoreError> {
        let text = serde_json::to_string(&row.json(table, self.app.schema.version()))
            .map_err(|e| err(table, e.to_string()))?;
        self.conn.execute(
            "INSERT INTO sync_parked (table_name, remote_id, row) VALUES (?1, ?2, ?3) \
             ON CONFLICT (table_name, remote_id) DO UPDATE SET row = excluded.row",
            (&table.name, &row.remote_id, text),
        )?;
        Ok(Applied::Parked)
    }

    /// A row the server sent, checked against `table`.
    fn server_row(&self, table: &Table, j: &Json) -> Result<WireRow, StoreError> {
        WireRow::from_json(table, j, self.app.schema.version(), true)
            .map_err(|e| err(table, format!("the server sent a bad row: {e}")))
    }

    /// The local id of the parent whose wire form is `wire`; a non-synced parent (an add-on) that
    /// this device lacks is created as a placeholder for the app to refresh.
    fn local_parent(
        &self,
        r: &crate::schema::Reference,
        wire: &str,
        live: bool,
        cache: &mut HashMap<(String, String), i64>,
    ) -> Result<Option<i64>, StoreError> {
        let parent = self.table(&r.table)?;
        // A live row needing a device-only parent always checks whether it was removed.
        if let (Some(id), true) = (
            cache.get(&(r.table.clone(), wire.to_owned())),
            parent.synced || !live,
        ) {
            return Ok(Some(*id));
        }
        let key = r.by_key.clone().unwrap_or_else(|| "remote_id".into());
        let sql = format!(
            "SELECT {} FROM {} WHERE {} = ?1",
            quote_ident(&parent.id_column),
            quote_ident(&parent.name),
            quote_ident(&key)
        );
        let mut found: Option<i64> = self.conn.query_row(&sql, [wire], |r| r.get(0)).optional()?;
        if let (Some(id), false, true) = (found, parent.synced, live) {
            // The app removed this add-on, but the account still uses it: it is wanted again,
            // and must not be deleted under the pulled row (found by the simulation, seed 219).
            self.conn.execute(
                "DELETE FROM sync_removed WHERE table_name = ?1 AND row_id = ?2",
                (&parent.name, id),
            )?;
        }
        if found.is_none() && r.by_key.is_some() {
            // Every NOT NULL column of the placeholder takes the key (e.g. name = the URL).
            let cols: Vec<&crate::schema::Column> = parent
                .columns
                .iter()
                .filter(|c| c.name == key || (!c.nullable && c.default.is_none()))
                .collect();
            let names: Vec<String> = cols.iter().map(|c| quote_ident(&c.name)).collect();
            let marks: Vec<&str> = cols.iter().map(|_| "?").collect();
            self.conn.execute(
                &format!(
                    "INSERT INTO {} ({}) VALUES ({})",
                    quote_ident(&parent.name),
                    names.join(", "),
                    marks.join(", ")
                ),
                params_from_iter(cols.iter().map(|_| wire)),
            )?;
            found = Some(self.conn.last_insert_rowid());
        }
        if let Some(id) = found {
            cache.insert((r.table.clone(), wire.to_owned()), id);
        }
        Ok(found)
    }

    /// Applies one version from the server by the merge rule.
    fn apply_incoming(
        &self,
        table: &Table,
        row: WireRow,
        origin: Incoming,
        cache: &mut HashMap<(String, String), i64>,
    ) -> Result<Applied, StoreError> {
        self.clock.observe(row.updated_at);
        if origin == Incoming::Pull && !row.is_tombstone() && self.insert_new(table, &row, cache)? {
            return Ok(Applied::Done);
        }
        let (t, idc) = (quote_ident(&table.name), quote_ident(&table.id_column));
        let local: Option<(i64, bool, String)> = self
            .conn
            .prepare_cached(&self.sql(table, Sql::ByRemoteId, || {
                format!("SELECT {idc}, dirty, updated_at FROM {t} WHERE remote_id = ?1")
            }))?
            .query_row([&row.remote_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        if local.is_none() && row.is_tombstone() {
            // A tombstone of a record this device never had: nothing to remove.
            return Ok(Applied::Done);
        }
        // References: remote ids to local ids; a parent not here yet holds the row back.
        let mut values = row.values.clone();
        for (i, c) in table.columns.iter().enumerate() {
            if let (Some(r), Value::Text(wire)) = (&c.reference, &values[i]) {
                match (
                    self.local_parent(r, &wire.clone(), !row.is_tombstone(), cache)?,
                    &local,
                ) {
                    (Some(id), _) => values[i] = Value::Integer(id),
                    // A tombstone removes the local record whatever its parent: it keeps the
                    // reference it has (found by the simulation, seed 34: the parent had been
                    // merged away on the server).
                    (None, Some((id, _, _))) if row.is_tombstone() => {
                        values[i] = self.conn.query_row(
                            &format!("SELECT {} FROM {t} WHERE {idc} = ?1", quote_ident(&c.name)),
                            [id],
                            |r| {
                                Ok(r.get::<_, Option<i64>>(0)?
                                    .map_or(Value::Null, Value::Integer))
                            },
                        )?;
                    }
                    (None, _) => return self.park(table, &row),
                }
            }
        }
        let device = row.device_id.clone().unwrap_or_default();
        let incoming = Stamp::new(row.updated_at, &device);
        let local_row = local.as_ref().map(|(id, dirty, at)| LocalRow {
            id: *id,
            dirty: *dirty,
            updated_at: Timestamp::parse_lenient(at).unwrap_or(Timestamp::MIN),
        });
        let decision = match (origin, local_row) {
            // A stale answer is the server's winner over this very write.
            (Incoming::Stale, Some(l)) if l.updated_at <= row.updated_at || !l.dirty => {
                DeviceDecision::Replace { id: l.id }
            }
            // A held-back version never replaces a newer one, nor an unpushed write of its stamp.
            (Incoming::Parked, Some(l))
                if l.updated_at > row.updated_at || (l.dirty && l.updated_at == row.updated_at) =>
            {
                return Ok(Applied::Done);
            }
            // The server's version of the very write held here: what a `stale` or `merged`
            // answer carried, held back for a parent this device did not have yet (found by the
            // simulation, seed 1082: the answer's list was the survivor of a merge).
            (Incoming::Parked, Some(l)) if l.updated_at == row.updated_at => {
                DeviceDecision::Replace { id: l.id }
            }
            _ => decide_on_device(local_row, None, incoming, &self.device_id),
        };
        let mut params = self.stored_params(table, values.iter().map(Param::Value), &row)?;
        let result = match decision {
            DeviceDecision::KeepLocal { .. } | DeviceDecision::Same { .. } => {
                return Ok(Applied::Done);
            }
            DeviceDecision::Replace { id } => {
                params.pop();
                params.push(Param::Own(Value::Integer(id)));
                self.conn
                    .prepare_cached(&self.sql(table, Sql::Replace, || {
                        let sets: Vec<String> = Self::writable(table)
                            .map(|c| format!("{} = ?", quote_ident(&c.name)))
                            .collect();
                        format!(
                            "UPDATE {t} SET {}, deleted_at = ?, dirty = FALSE WHERE {idc} = ?",
                            sets.join(", ")
                        )
                    }))?
                    .execute(params_from_iter(params.iter()))
            }
            _ => self
                .conn
                .prepare_cached(&self.insert_sql(table))?
                .execute(params_from_iter(params.iter())),
        };
        match (result, decision) {
            (Ok(_), _) => Ok(Applied::Done),
            // A deleted record's key does not matter: the deletion lands with the row's local
            // columns kept (found by the simulation, seed 356: the key changed, then the record
            // was deleted, while another local row held the new key).
            (Err(e), DeviceDecision::Replace { id })
                if is_unique_violation(&e) && row.is_tombstone() =>
            {
                self.conn.execute(
                    &format!("UPDATE {t} SET updated_at = ?1, deleted_at = ?2, dirty = FALSE WHERE {idc} = ?3"),
                    (Value::DateTime(row.updated_at), row.deleted_at.map_or(Value::Null, Value::DateTime), id),
                )?;
                Ok(Applied::Done)
            }
            (Err(e), _) if is_unique_violation(&e) => {
                self.natural_key_collision(table, &row, &values)
            }
            (Err(e), _) => Err(e.into()),
        }
    }

    /// The columns a pulled row writes, in table order (local-only columns keep their own).
    fn writable(table: &Table) -> impl Iterator<Item = &crate::schema::Column> {
        table.columns.iter().filter(|c| c.role != ColumnRole::Local)
    }

    /// The parameters of [`Self::insert_sql`] for `row` with its references resolved to
    /// `values`: the writable columns (the account's id in account-id columns), `deleted_at`
    /// and `remote_id`.
    fn stored_params<'a>(
        &self,
        table: &Table,
        values: impl IntoIterator<Item = Param<'a>>,
        row: &'a WireRow,
    ) -> Result<Vec<Param<'a>>, StoreError> {
        let mut params = Vec::with_capacity(table.columns.len() + 2);
        for (c, v) in table.columns.iter().zip(values) {
            match c.role {
                ColumnRole::Local => {}
                // Read once per sync step (see `Store::with_account`).
                ColumnRole::AccountId => params.push(Param::Own(Value::Text(self.account_id()?))),
                _ => params.push(v),
            }
        }
        params.push(Param::Own(
            row.deleted_at.map_or(Value::Null, Value::DateTime),
        ));
        params.push(Param::Ref(&row.remote_id));
        Ok(params)
    }

    fn insert_sql(&self, table: &Table) -> std::sync::Arc<str> {
        self.sql(table, Sql::Insert, || {
            let names: Vec<String> = Self::writable(table)
                .map(|c| quote_ident(&c.name))
                .collect();
            let marks: Vec<&str> = names.iter().map(|_| "?").collect();
            format!(
                "INSERT INTO {} ({}, deleted_at, remote_id, dirty) VALUES ({}, ?, ?, FALSE)",
                quote_ident(&table.name),
                names.join(", "),
                marks.join(", ")
            )
        })
    }

    /// The fast path of a pull: a live row inserted as it is, which succeeds exactly when the
    /// device holds neither its record nor its natural key (a unique index says which), and its
    /// parents are here. That is every row of a first sync, without a lookup before each
    /// insert. Returns false when the merge rule must decide instead.
    fn insert_new(
        &self,
        table: &Table,
        row: &WireRow,
        cache: &mut HashMap<(String, String), i64>,
    ) -> Result<bool, StoreError> {
        let mut values = Vec::with_capacity(row.values.len());
        for (c, v) in table.columns.iter().zip(&row.values) {
            values.push(match (&c.reference, v) {
                (Some(r), Value::Text(wire)) => match self.local_parent(r, wire, true, cache)? {
                    Some(id) => Param::Own(Value::Integer(id)),
                    None => return Ok(false),
                },
                _ => Param::Value(v),
            });
        }
        let params = self.stored_params(table, values, row)?;
        match self
            .conn
            .prepare_cached(&self.insert_sql(table))?
            .execute(params_from_iter(params.iter()))
        {
            Ok(_) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// A pulled row's natural key is held by another local row. A row the server has never seen
    /// (no `remote_id` yet) is the same record: it takes the pulled id, its values by the merge
    /// rule. Any other row is one the server keeps apart for now: the pulled row waits.
    fn natural_key_collision(
        &self,
        table: &Table,
        row: &WireRow,
        values: &[Value],
    ) -> Result<Applied, StoreError> {
        let (t, idc) = (quote_ident(&table.name), quote_ident(&table.id_column));
        for key in &table.natural_keys {
            let mut conds = Vec::new();
            let mut params = Vec::new();
            for k in key {
                let i = table.column_index(k).unwrap_or_default();
                conds.push(format!("{} = ?", quote_ident(k)));
                params.push(values[i].clone());
            }
            if params.iter().any(Value::is_null) {
                continue;
            }
            let sql = format!(
                "SELECT {idc}, remote_id IS NULL, dirty, updated_at, deleted_at IS NOT NULL FROM {t} WHERE {}",
                conds.join(" AND ")
            );
            let found: Option<(i64, bool, bool, String, bool)> = self
                .conn
                .query_row(&sql, params_from_iter(params.iter()), |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .optional()?;
            if let Some((id, false, false, _, true)) = found {
                // A deletion the server has (the tombstone is pushed) of another record with
                // this key: the server let the pulled record take the key (it merged the two,
                // the key was freed and taken again, or the tombstone was purged there), so the
                // tombstone goes, with the pushed tombstones under it, and the row lands (found
                // by the simulation, seeds 2654 and 6 with purges). One with a live or unpushed
                // row under it waits.
                if self.only_pushed_tombstones_under(table, id)? {
                    self.conn
                        .execute(&format!("DELETE FROM {t} WHERE {idc} = ?1"), [id])?;
                    return self.apply_incoming(
                        table,
                        row.clone(),
                        Incoming::Pull,
                        &mut HashMap::new(),
                    );
                }
            }
            if let Some((id, true, dirty, at, _)) = found {
                self.conn.execute(
                    &format!("UPDATE {t} SET remote_id = ?1 WHERE {idc} = ?2"),
                    (&row.remote_id, id),
                )?;
                let local = LocalRow {
                    id,
                    dirty,
                    updated_at: Timestamp::parse_lenient(&at).unwrap_or(Timestamp::MIN),
                };
                let device = row.device_id.clone().unwrap_or_default();
                if !matches!(
                    decide_on_device(
                        Some(local),
                        None,
                        Stamp::new(row.updated_at, &device),
                        &self.device_id
                    ),
                    DeviceDecision::KeepLocal { .. }
                ) {
                    return self.apply_incoming(
                        table,
                        row.clone(),
                        Incoming::Pull,
                        &mut HashMap::new(),
                    );
                }
                return Ok(Applied::Done);
            }
        }
        self.park(table, row)
    }

    /// Whether every row that references row `id` of `table`, and every row under those through
    /// CASCADE references, is a tombstone the server has: deleting the row then changes nothing
    /// the server does not already know.
    fn only_pushed_tombstones_under(&self, table: &Table, id: i64) -> Result<bool, StoreError> {
        for (child, col, r) in self.app.schema.children_of(&table.name) {
            // A device-only table has no tombstones: any of its rows is live.
            let live_or_unpushed = if child.synced {
                "deleted_at IS NULL OR dirty"
            } else {
                "TRUE"
            };
            let rows: Vec<(i64, bool)> = self
                .conn
                .prepare_cached(&format!(
                    "SELECT {}, {live_or_unpushed} FROM {} WHERE {} = ?1",
                    quote_ident(&child.id_column),
                    quote_ident(&child.name),
                    quote_ident(&col.name)
                ))?
                .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            for (child_id, live_or_unpushed) in rows {
                if live_or_unpushed {
                    return Ok(false);
                }
                if r.on_delete == crate::schema::OnDelete::Cascade
                    && !self.only_pushed_tombstones_under(child, child_id)?
                {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// The rows the server rejected, with why.
    pub fn rejected_rows(&self) -> Result<Vec<RejectedRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT table_name, row_id, message FROM sync_rejected ORDER BY table_name, row_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(RejectedRow {
                table: r.get(0)?,
                id: r.get(1)?,
                message: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Rows pulled but held back (a parent not here yet, or a natural key not yet free).
    pub fn parked_count(&self) -> Result<u64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM sync_parked", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }

    /// Whether any synced table holds a live row.
    pub fn has_local_data(&self) -> Result<bool, StoreError> {
        for t in self.app.schema.synced() {
            let n: i64 = self.conn.query_row(
                &format!(
                    "SELECT count(*) FROM {} WHERE deleted_at IS NULL",
                    quote_ident(&t.name)
                ),
                [],
                |r| r.get(0),
            )?;
            if n > 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The synced tables, children before parents: deletes in this order never wait on a parent.
    fn synced_children_first(&self) -> Vec<&'static Table> {
        let mut tables: Vec<&'static Table> = self.app.schema.synced().collect();
        tables.reverse();
        tables
    }

    /// Forgets what this database knew of the server's state: rejections, held-back rows, the
    /// cursor (the next pull is a full one).
    fn forget_server_progress(&self) -> Result<(), StoreError> {
        self.conn.execute_batch(
            "DELETE FROM sync_rejected; DELETE FROM sync_parked; DELETE FROM sync_seen;
             UPDATE sync_state SET cursor = NULL, full_pull = FALSE WHERE id = 1;",
        )?;
        Ok(())
    }

    /// Prepares this database for an account other than the one it last synced with: remote ids
    /// and cursor are forgotten, tombstones dropped, every live row queued for upload.
    pub fn reset_for_new_account(&mut self) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        for t in self.synced_children_first() {
            let name = quote_ident(&t.name);
            self.conn.execute(
                &format!("DELETE FROM {name} WHERE deleted_at IS NOT NULL"),
                [],
            )?;
            self.conn.execute(
                &format!("UPDATE {name} SET remote_id = NULL, dirty = TRUE"),
                [],
            )?;
        }
        self.forget_server_progress()?;
        tx.commit()?;
        Ok(())
    }

    /// Drops every synced row (the user chose the account's data over this device's).
    pub fn discard_local_data(&mut self) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        for t in self.synced_children_first() {
            self.conn
                .execute(&format!("DELETE FROM {}", quote_ident(&t.name)), [])?;
        }
        self.forget_server_progress()?;
        tx.commit()?;
        Ok(())
    }

    /// Records a session with an account: its id fills account-id columns from now on.
    pub fn save_session(
        &mut self,
        url: &str,
        user_id: &str,
        token: &str,
    ) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        self.conn.execute(
            "UPDATE sync_state SET remote_url = ?1, remote_user_id = ?2, auth_token = ?3, synced_user_id = ?2, last_error = NULL WHERE id = 1",
            (url, user_id, token),
        )?;
        for t in self.app.schema.tables.iter() {
            for c in t.columns.iter().filter(|c| c.role == ColumnRole::AccountId) {
                // A write from the sync itself: not dirty, not stamped.
                self.conn.execute(
                    &format!(
                        "UPDATE {} SET {} = ?1",
                        quote_ident(&t.name),
                        quote_ident(&c.name)
                    ),
                    [user_id],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The account this database last synced with.
    pub fn synced_account(&self) -> Result<Option<String>, StoreError> {
        Ok(self.conn.query_row(
            "SELECT synced_user_id FROM sync_state WHERE id = 1",
            [],
            |r| r.get(0),
        )?)
    }

    /// (remote_url, auth_token) of the current session.
    pub fn session(&self) -> Result<(Option<String>, Option<String>), StoreError> {
        Ok(self.conn.query_row(
            "SELECT remote_url, auth_token FROM sync_state WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    /// Forgets the token (the local data stays).
    pub fn forget_token(&mut self) -> Result<(), StoreError> {
        self.conn
            .execute("UPDATE sync_state SET auth_token = NULL WHERE id = 1", [])?;
        Ok(())
    }

    pub fn set_syncing(&self, syncing: bool) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE sync_state SET is_syncing = ?1 WHERE id = 1",
            [syncing],
        )?;
        Ok(())
    }

    /// Records the end of a sync: when, the error if any, and the clock's high-water mark.
    pub fn finish_sync(&self, error: Option<&str>) -> Result<(), StoreError> {
        let now = Timestamp::now().to_wire();
        let clock = self.clock.high_water().to_wire();
        if error.is_none() {
            self.conn.execute(
                "UPDATE sync_state SET is_syncing = FALSE, last_sync_at = ?1, last_error = NULL, clock = ?2 WHERE id = 1",
                (&now, &clock),
            )?;
        } else {
            self.conn.execute("UPDATE sync_state SET is_syncing = FALSE, last_error = ?1, clock = ?2 WHERE id = 1", (error, &clock))?;
        }
        Ok(())
    }
}
