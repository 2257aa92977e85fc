//! Joining local rows that are one record: a pushed row the server merged into another
//! (adopting its remote id, moving children), and rows that share a natural key.

use super::{Applied, PushedRow, Store, StoreError, is_unique_violation};
use crate::ddl::quote_ident;
use crate::merge::{DeviceDecision, LocalRow, Origin, Stamp, decide_on_device};
use crate::protocol::wire::WireRow;
use crate::schema::Table;
use crate::timestamp::Timestamp;
use crate::value::Value;
use rusqlite::{OptionalExtension, params_from_iter};
use std::collections::HashMap;

impl Store {
    /// The row whose natural key `key` equals the one in `values`, if any (keys with a NULL
    /// match nothing). Returns (id, is_tombstone).
    ///
    /// The natural-key lookups here are three different queries, kept apart: this one (the
    /// write path's) works on device-only tables too (a tombstone there is a removed row), can
    /// leave a row out (`except`) and is cached; [`Self::natural_key_collision`]'s (a pull's)
    /// runs on synced tables only and reads the row's sync state too (`remote_id IS NULL`,
    /// `dirty`, `updated_at`); [`Self::same_record_under`]'s compares a row with the others
    /// through a self-join, one key column taking a new value.
    pub(super) fn find_by_natural_key(
        &self,
        table: &Table,
        key: &[String],
        values: &[Value],
        except: Option<i64>,
    ) -> Result<Option<(i64, bool)>, StoreError> {
        let mut conds = Vec::new();
        let mut params = Vec::new();
        for k in key {
            let i = table.column_index(k).unwrap_or_default();
            if values[i].is_null() {
                return Ok(None);
            }
            conds.push(format!("{} = ?", quote_ident(k)));
            params.push(values[i].clone());
        }
        let tombstone = if table.synced {
            "deleted_at IS NOT NULL".to_owned()
        } else {
            format!("NOT ({})", Self::live_filter(table))
        };
        let sql = format!(
            "SELECT {id}, {tombstone} FROM {t} WHERE {conds}{except}",
            id = quote_ident(&table.id_column),
            t = quote_ident(&table.name),
            conds = conds.join(" AND "),
            except = except.map_or(String::new(), |e| format!(
                " AND {} <> {e}",
                quote_ident(&table.id_column)
            )),
        );
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row(params_from_iter(params.iter()), |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?)
    }

    /// A pulled row's natural key is held by another local row. A row the server has never seen
    /// (no `remote_id` yet) is the same record: it takes the pulled id, its values by the merge
    /// rule. Any other row is one the server keeps apart for now: the pulled row waits.
    pub(super) fn natural_key_collision(
        &self,
        table: &Table,
        row: &WireRow,
        values: &[Value],
    ) -> Result<Applied, StoreError> {
        let (t, idc) = (quote_ident(&table.name), quote_ident(&table.id_column));
        let mut why = String::from("waits for its natural key to free up here");
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
            if let Some((id, _, dirty, ..)) = found {
                why = format!(
                    "waits for ({}) to free up: row {id} here holds it{}",
                    key.join(", "),
                    if dirty {
                        ", with changes the server has not taken"
                    } else {
                        ""
                    }
                );
            }
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
                        Origin::Pull,
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
                        Origin::Pull,
                        Some(local),
                        Stamp::new(row.updated_at, &device),
                        &self.device_id
                    ),
                    DeviceDecision::KeepLocal { .. }
                ) {
                    return self.apply_incoming(
                        table,
                        row.clone(),
                        Origin::Pull,
                        &mut HashMap::new(),
                    );
                }
                return Ok(Applied::Done);
            }
        }
        self.park(table, row, &why)
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

    /// The server merged this row into record `canonical`. If this device already holds that
    /// record (pulled earlier), the two local rows become one: children move to it, and it takes
    /// this row's values if they `won` the merge rule on the server.
    pub(super) fn adopt_remote_id(
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
                self.forget_rejection(table, row.id)?;
            }
        }
        Ok(())
    }

    /// Moves the children of row `from` of `table` to row `to`, as the server did when it merged
    /// the two records. A child whose natural key the new parent's children already hold is the
    /// same record there: its own children move too, a newer unpushed edit of it carries over
    /// (to be pushed under the surviving record), and it goes (found by the simulation, seed 116).
    // The server's `repoint_children` (server/sync/merge.rs) is the same rule; the difference
    // is named there.
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
}
