//! The push: reading dirty rows for it, parents first, and applying its per-row results.

use super::{Sql, Store, StoreError, err};
use crate::ddl::quote_ident;
use crate::merge::Origin;
use crate::protocol::push::{PushResults, RowResult};
use crate::schema::Table;
use crate::timestamp::Timestamp;
use crate::value::Value;
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

impl Store {
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
        // Long on purpose: one pass per table that builds its SELECT, reads the rows and writes
        // them straight into the request body, all in one transaction; the pieces share the
        // body, the row list and the limit, and split apart they would pass all three around.
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
                "SELECT {} FROM {name} AS t {} WHERE t.dirty = TRUE AND {} ORDER BY t.{} LIMIT ?1",
                select.join(", "),
                joins.join(" "),
                Self::not_rejected_at_its_stamp(t, "t"),
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
                        sent: None,
                        field_stamps: &[],
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
        // Long on purpose: one match over the row results, in one transaction, each arm a few
        // calls; the order of the steps (seen-set, result, parked rows, removed rows) is the
        // point, and reads best in one place.
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
        let any_rejected = self.any_rejected()?;
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
                            Origin::Stale,
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
                        Origin::Stale,
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
    pub(super) fn tombstone_orphan(&self, table: &Table, id: i64) -> Result<(), StoreError> {
        self.conn.execute(
            &format!(
                "UPDATE {} SET {}, dirty = TRUE WHERE {} = ?1 AND deleted_at IS NULL",
                quote_ident(&table.name),
                super::TOMBSTONE,
                quote_ident(&table.id_column)
            ),
            [id],
        )?;
        self.cascade(table, id)
    }

    /// Marks a pushed row clean, and forgets an earlier rejection of it if `was_rejected` may be
    /// true (a push of rows never rejected skips that statement per row).
    pub(super) fn clear_dirty(
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
            self.forget_rejection(table, row.id)?;
        }
        Ok(())
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
}
