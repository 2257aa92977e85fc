//! The pull: applying pulled pages by the merge rule, holding back rows that cannot land yet
//! (and retrying them), and the sweep at the end of a full pull.

use super::{Applied, Sql, Store, StoreError, err, is_unique_violation};
use crate::ddl::quote_ident;
use crate::merge::{DeviceDecision, LocalRow, Origin, Stamp, decide_on_device};
use crate::protocol::page::PulledPage;
use crate::protocol::wire::{RowSource, WireRow};
use crate::schema::{ColumnRole, Table};
use crate::timestamp::Timestamp;
use crate::value::Value;
use rusqlite::{OptionalExtension, params_from_iter};
use serde_json::Value as Json;
use std::collections::HashMap;

/// What a pulled page did locally.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageSummary {
    pub rows: usize,
    pub parked: usize,
    pub has_more: bool,
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

impl Store {
    /// Applies one pulled page (decoded by [`PulledPage::decode`], off the thread that stores
    /// it) in one transaction together with its cursor, so an interrupted pull resumes where it
    /// stopped.
    pub fn apply_page(&mut self, page: PulledPage) -> Result<PageSummary, StoreError> {
        self.with_account(|s| s.store_page(page))
    }

    fn store_page(&mut self, page: PulledPage) -> Result<PageSummary, StoreError> {
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
                    self.apply_incoming(table, row, Origin::Pull, &mut cache)?
                {
                    summary.parked += 1;
                }
            }
        }
        self.retry_parked()?;
        self.save_cursor(&cursor)?;
        if !has_more && full_pull {
            self.sweep_unseen()?;
        }
        tx.commit()?;
        Ok(summary)
    }

    /// After a full pull: clean rows the server did not return are gone from the account.
    fn sweep_unseen(&self) -> Result<(), StoreError> {
        self.tombstone_dirty_rows_under_unseen()?;
        for t in self.synced_children_first() {
            self.conn.execute(
                &format!(
                    "DELETE FROM {} AS p WHERE NOT dirty AND remote_id IS NOT NULL AND {} AND NOT {}",
                    quote_ident(&t.name),
                    Self::not_seen("remote_id"),
                    self.has_dirty_children(t, "p")
                ),
                [&t.name],
            )?;
        }
        // A held-back version of a record the full pull did not return is of a record the
        // server no longer holds live: its tombstone, from before the pull began, will never
        // come (simulation seed 881, purges).
        self.unpark_unseen()?;
        // Rejections are forgotten: the server's whole state is here now, and a row refused for
        // a reference the server had purged was changed by the sweep (its SET NULL reference
        // nulled) without a new stamp, so it is tried once more (simulation seed 85, purges).
        self.end_full_pull()
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
                "NOT {alias}.dirty AND {alias}.remote_id IS NOT NULL AND {}",
                Self::not_seen(&format!("{alias}.remote_id"))
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
    pub(super) fn retry_parked(&self) -> Result<(), StoreError> {
        loop {
            let parked = self.parked_rows()?;
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
                        Origin::Parked,
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

    pub(super) fn park(&self, table: &Table, row: &WireRow) -> Result<Applied, StoreError> {
        let text = serde_json::to_string(&row.json(table, self.app.schema.version()))
            .map_err(|e| err(table, e.to_string()))?;
        self.save_parked(table, &row.remote_id, &text)?;
        Ok(Applied::Parked)
    }

    /// A row the server sent, checked against `table`.
    pub(super) fn server_row(&self, table: &Table, j: &Json) -> Result<WireRow, StoreError> {
        WireRow::from_json(table, j, self.app.schema.version(), RowSource::Server)
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
    pub(super) fn apply_incoming(
        &self,
        table: &Table,
        row: WireRow,
        origin: Origin,
        cache: &mut HashMap<(String, String), i64>,
    ) -> Result<Applied, StoreError> {
        // Long on purpose: the merge rule's steps (the fast insert, the local row, references,
        // the decision, the write and its fallbacks) share the local row, the resolved values
        // and the parameters; each step's comment names the simulation seed it answers.
        self.clock.observe(row.updated_at);
        if origin == Origin::Pull && !row.is_tombstone() && self.insert_new(table, &row, cache)? {
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
        let decision = decide_on_device(origin, local_row, incoming, &self.device_id);
        if let DeviceDecision::KeepLocal { .. } | DeviceDecision::Same { .. } = decision {
            return Ok(Applied::Done);
        }
        let mut params = self.stored_params(table, values.iter().map(Param::Value), &row)?;
        let result = match decision {
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
                ColumnRole::Owner => params.push(Param::Own(Value::Text(self.account_id()?))),
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
}
