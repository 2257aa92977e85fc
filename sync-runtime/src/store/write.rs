//! The app's write path: every insert, update and delete of a Syncable entity marks the row
//! dirty and stamps `updated_at` from the sync clock. Deletes are tombstones that cascade to
//! CASCADE children and null SET NULL references.

use super::{Store, StoreError, TOMBSTONE, is_unique_violation, value_err};
use crate::ddl::quote_ident;
use crate::schema::{ColumnRole, ColumnType, OnDelete, Table, UPDATED_AT};
use crate::syncable::Syncable;
use crate::value::{Value, ValueError};
use rusqlite::params_from_iter;

impl Store {
    /// Inserts `entity`, sets its local id and returns it. A synced row is stamped, dirty and
    /// given its `remote_id`; a new row whose natural key matches a tombstone revives it.
    pub fn insert<T: Syncable>(&mut self, entity: &mut T) -> Result<i64, StoreError> {
        let id = self.insert_values(T::TABLE_NAME, entity.local_id(), entity.to_values())?;
        entity.set_local_id(id);
        Ok(id)
    }

    /// Writes `entity` over its stored row (found by its local id), stamping it and marking it
    /// dirty.
    pub fn update<T: Syncable>(&mut self, entity: &T) -> Result<(), StoreError> {
        let table = T::table();
        let id = entity.local_id().ok_or_else(|| StoreError::NotFound {
            table: table.name.clone(),
            id: 0,
        })?;
        self.update_values(T::TABLE_NAME, id, entity.to_values())
    }

    /// Deletes the row `id` of `T`: a tombstone that cascades to its children.
    pub fn delete<T: Syncable>(&mut self, id: i64) -> Result<(), StoreError> {
        self.delete_row(T::TABLE_NAME, id)
    }

    /// Checks a row of app values against its table before it is written.
    fn check_values(&self, table: &Table, values: &mut [Value]) -> Result<(), StoreError> {
        if values.len() != table.columns.len() {
            return Err(value_err(
                table,
                ValueError(format!(
                    "{} values for {} columns",
                    values.len(),
                    table.columns.len()
                )),
            ));
        }
        let account = if table.columns.iter().any(|c| c.role == ColumnRole::Owner) {
            Some(self.account_id()?)
        } else {
            None
        };
        for (c, v) in table.columns.iter().zip(values.iter_mut()) {
            if c.role == ColumnRole::Owner {
                *v = Value::Text(account.clone().unwrap_or_default());
            }
            let fits = match (c.ty, &*v) {
                (_, Value::Null) => c.nullable || c.name == UPDATED_AT,
                (ColumnType::Integer, Value::Integer(_))
                | (ColumnType::Real, Value::Real(_))
                | (ColumnType::Text, Value::Text(_))
                | (ColumnType::Boolean, Value::Boolean(_))
                | (ColumnType::DateTime, Value::DateTime(_))
                | (ColumnType::Json, Value::Json(_)) => true,
                _ => false,
            };
            if !fits {
                let want = if v.is_null() {
                    "a value".to_owned()
                } else {
                    format!("{:?}", c.ty)
                };
                return Err(value_err(
                    table,
                    ValueError(format!(
                        "column `{}` needs {want}, got {}",
                        c.name,
                        v.kind()
                    )),
                ));
            }
        }
        Ok(())
    }

    /// Inserts a row of `table` from its app values in column order (what the command line and
    /// the typed [`Store::insert`] use). Returns the local id.
    pub fn insert_values(
        &mut self,
        table: &str,
        id: Option<i64>,
        mut values: Vec<Value>,
    ) -> Result<i64, StoreError> {
        let table = self.table(table)?;
        self.check_values(table, &mut values)?;
        let tx = self.conn.unchecked_transaction()?;
        for key in &table.natural_keys {
            if let Some((existing, tombstone)) =
                self.find_by_natural_key(table, key, &values, None)?
            {
                if !tombstone {
                    return Err(StoreError::Conflict {
                        table: table.name.clone(),
                        key: format!("({})", key.join(", ")),
                        existing,
                    });
                }
                // Re-adding a deleted record revives it: same record, same remote id.
                self.write_values(table, existing, &values, true)?;
                if !table.synced {
                    self.conn.execute(
                        "DELETE FROM sync_removed WHERE table_name = ?1 AND row_id = ?2",
                        (&table.name, existing),
                    )?;
                }
                tx.commit()?;
                self.wrote();
                return Ok(existing);
            }
        }
        let mut cols: Vec<String> = Vec::new();
        let mut exprs: Vec<String> = Vec::new();
        let mut params: Vec<Value> = Vec::new();
        if let Some(id) = id {
            cols.push(quote_ident(&table.id_column));
            exprs.push("?".into());
            params.push(Value::Integer(id));
        }
        for (c, v) in table.columns.iter().zip(values) {
            cols.push(quote_ident(&c.name));
            if table.synced && c.name == UPDATED_AT {
                exprs.push("sync_stamp(NULL)".into());
            } else {
                exprs.push("?".into());
                params.push(v);
            }
        }
        if table.synced {
            cols.extend(["remote_id".to_owned(), "dirty".to_owned()]);
            exprs.extend(["?".to_owned(), "TRUE".to_owned()]);
            params.push(Value::Text(uuid::Uuid::now_v7().to_string()));
        }
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            quote_ident(&table.name),
            cols.join(", "),
            exprs.join(", ")
        );
        self.conn
            .prepare_cached(&sql)?
            .execute(params_from_iter(params.iter()))?;
        let id = self.conn.last_insert_rowid();
        tx.commit()?;
        self.wrote();
        Ok(id)
    }

    /// Writes the app values of row `id`, stamping it and marking it dirty (reviving it if
    /// `revive`). Returns whether a row was written.
    fn write_values(
        &self,
        table: &Table,
        id: i64,
        values: &[Value],
        revive: bool,
    ) -> Result<bool, StoreError> {
        let mut sets = Vec::new();
        let mut params = Vec::new();
        for (c, v) in table.columns.iter().zip(values) {
            if table.synced && c.name == UPDATED_AT {
                sets.push(format!(
                    "{} = sync_stamp({})",
                    quote_ident(&c.name),
                    quote_ident(&c.name)
                ));
            } else {
                sets.push(format!("{} = ?", quote_ident(&c.name)));
                params.push(v.clone());
            }
        }
        let mut filter = format!("{} = ?", quote_ident(&table.id_column));
        params.push(Value::Integer(id));
        let t = quote_ident(&table.name);
        if table.synced && !revive {
            // A row edited again before it was pushed is dirty already. Leaving `dirty` out of
            // its UPDATE leaves the dirty index alone: one page fewer to write per edit, a
            // third of what an edit costs.
            let sql = format!(
                "UPDATE {t} SET {} WHERE {filter} AND deleted_at IS NULL AND dirty",
                sets.join(", ")
            );
            if self
                .conn
                .prepare_cached(&sql)?
                .execute(params_from_iter(params.iter()))?
                > 0
            {
                return Ok(true);
            }
        }
        if table.synced {
            sets.push("dirty = TRUE".into());
            if revive {
                sets.push("deleted_at = NULL".into());
            } else {
                filter.push_str(" AND deleted_at IS NULL");
            }
        }
        let sql = format!("UPDATE {t} SET {} WHERE {filter}", sets.join(", "));
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .execute(params_from_iter(params.iter()))?
            > 0)
    }

    /// Updates row `id` of `table` from its app values in column order.
    pub fn update_values(
        &mut self,
        table: &str,
        id: i64,
        mut values: Vec<Value>,
    ) -> Result<(), StoreError> {
        let table = self.table(table)?;
        self.check_values(table, &mut values)?;
        if table.synced {
            // The common case is one autocommit UPDATE: the unique indexes tell whether another
            // row holds the new natural key, and only then is it looked up below.
            match self.write_values(table, id, &values, false) {
                Ok(true) => {
                    self.wrote();
                    return Ok(());
                }
                Ok(false) => {
                    return Err(StoreError::NotFound {
                        table: table.name.clone(),
                        id,
                    });
                }
                Err(StoreError::Sqlite(e)) if is_unique_violation(&e) => {}
                Err(e) => return Err(e),
            }
        }
        if !table.synced && self.get_values(&table.name, id)?.is_none() {
            return Err(StoreError::NotFound {
                table: table.name.clone(),
                id,
            });
        }
        let tx = self.conn.unchecked_transaction()?;
        for key in &table.natural_keys {
            if let Some((existing, tombstone)) =
                self.find_by_natural_key(table, key, &values, Some(id))?
            {
                let removable =
                    tombstone && table.synced && !self.is_dirty(&table.name, existing)?;
                if !removable {
                    // A key held by a live record, or by a tombstone that has not reached the
                    // server yet (removing it would lose the delete).
                    return Err(StoreError::Conflict {
                        table: table.name.clone(),
                        key: format!("({})", key.join(", ")),
                        existing,
                    });
                }
                // A synced tombstone gives its key up: the server merges this record into it.
                self.conn.execute(
                    &format!(
                        "DELETE FROM {} WHERE {} = ?1",
                        quote_ident(&table.name),
                        quote_ident(&table.id_column)
                    ),
                    [existing],
                )?;
            }
        }
        if !self.write_values(table, id, &values, false)? {
            return Err(StoreError::NotFound {
                table: table.name.clone(),
                id,
            });
        }
        tx.commit()?;
        self.wrote();
        Ok(())
    }

    /// Deletes row `id` of `table`. A synced row becomes a tombstone; its CASCADE children become
    /// tombstones and its SET NULL references are nulled, recursively, each stamped and dirty. A
    /// non-synced row (an add-on) first tombstones the synced rows that reference it, then stays
    /// hidden until those tombstones are pushed.
    pub fn delete_row(&mut self, table: &str, id: i64) -> Result<(), StoreError> {
        let table = self.table(table)?;
        let tx = self.conn.unchecked_transaction()?;
        if table.synced {
            let sql = format!(
                "UPDATE {t} SET {TOMBSTONE}, dirty = TRUE WHERE {id} = ?1 AND deleted_at IS NULL",
                t = quote_ident(&table.name),
                id = quote_ident(&table.id_column)
            );
            if self.conn.execute(&sql, [id])? == 0 {
                return Err(StoreError::NotFound {
                    table: table.name.clone(),
                    id,
                });
            }
        } else {
            if self.get_values(&table.name, id)?.is_none() {
                return Err(StoreError::NotFound {
                    table: table.name.clone(),
                    id,
                });
            }
            self.conn.execute(
                "INSERT INTO sync_removed (table_name, row_id) VALUES (?1, ?2)",
                (&table.name, id),
            )?;
        }
        self.cascade(table, id)?;
        tx.commit()?;
        self.wrote();
        Ok(())
    }

    /// A local deletion of row `id` reaches its synced children: CASCADE ones become
    /// tombstones (recursively), SET NULL references are nulled.
    // The server's `cascade` (server/sync/merge.rs) applies the same rule to a pushed
    // tombstone. They differ in who owns the writes: here the children are this device's own
    // writes, stamped by its clock and dirty, so they are pushed like any edit; there they are
    // derived writes stamped above the deletion under the server's device id, which no device
    // pushes. One is synchronous SQL on local ids, the other async statements on remote ids,
    // so each is written where it runs.
    pub(crate) fn cascade(&self, parent: &Table, id: i64) -> Result<(), StoreError> {
        for (child, col, r) in self.app.schema.children_of(&parent.name) {
            if !child.synced {
                continue;
            }
            let (t, c, cid) = (
                quote_ident(&child.name),
                quote_ident(&col.name),
                quote_ident(&child.id_column),
            );
            match r.on_delete {
                OnDelete::Cascade => {
                    let ids: Vec<i64> = self
                        .conn
                        .prepare_cached(&format!(
                            "SELECT {cid} FROM {t} WHERE {c} = ?1 AND deleted_at IS NULL"
                        ))?
                        .query_map([id], |r| r.get(0))?
                        .collect::<Result<_, _>>()?;
                    for child_id in ids {
                        self.conn.execute(
                            &format!("UPDATE {t} SET {TOMBSTONE}, dirty = TRUE WHERE {cid} = ?1"),
                            [child_id],
                        )?;
                        self.cascade(child, child_id)?;
                    }
                }
                OnDelete::SetNull => {
                    self.conn.execute(
                        &format!(
                            "UPDATE {t} SET {c} = NULL, updated_at = sync_stamp(updated_at), dirty = TRUE \
                             WHERE {c} = ?1 AND deleted_at IS NULL"
                        ),
                        [id],
                    )?;
                }
            }
        }
        Ok(())
    }
}
