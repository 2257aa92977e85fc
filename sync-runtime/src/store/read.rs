//! The app's reads: live rows, typed or as values, and what the sync status shows of them.

use super::{Store, StoreError, value_err};
use crate::ddl::quote_ident;
use crate::schema::Table;
use crate::syncable::Syncable;
use crate::value::{Value, ValueError};
use rusqlite::OptionalExtension;

impl Store {
    /// The live row `id` of `T`.
    pub fn get<T: Syncable>(&self, id: i64) -> Result<Option<T>, StoreError> {
        let table = T::table();
        let Some(values) = self.get_values(&table.name, id)? else {
            return Ok(None);
        };
        T::from_values(id, values)
            .map(Some)
            .map_err(|e| value_err(table, e))
    }

    /// Every live row of `T`, by local id.
    pub fn list<T: Syncable>(&self) -> Result<Vec<T>, StoreError> {
        let table = T::table();
        self.list_values(&table.name)?
            .into_iter()
            .map(|(id, values)| T::from_values(id, values).map_err(|e| value_err(table, e)))
            .collect()
    }

    fn select_list(table: &Table) -> String {
        let mut cols = vec![quote_ident(&table.id_column)];
        cols.extend(table.columns.iter().map(|c| quote_ident(&c.name)));
        cols.join(", ")
    }

    pub(super) fn live_filter(table: &Table) -> String {
        if table.synced {
            "deleted_at IS NULL".to_owned()
        } else {
            format!(
                "{} NOT IN (SELECT row_id FROM sync_removed WHERE table_name = {})",
                quote_ident(&table.id_column),
                crate::ddl::quote_literal(&table.name)
            )
        }
    }

    fn read_row(table: &Table, row: &rusqlite::Row<'_>) -> Result<(i64, Vec<Value>), StoreError> {
        let id: i64 = row.get(0)?;
        let mut values = Vec::with_capacity(table.columns.len());
        for (i, c) in table.columns.iter().enumerate() {
            let v = Value::from_sqlite(c.ty, row.get_ref(i + 1)?).map_err(|e| {
                value_err(
                    table,
                    ValueError(format!("row {id}, column `{}`: {}", c.name, e.0)),
                )
            })?;
            values.push(v);
        }
        Ok((id, values))
    }

    /// The app columns of the live row `id` of `table`.
    pub fn get_values(&self, table: &str, id: i64) -> Result<Option<Vec<Value>>, StoreError> {
        let table = self.table(table)?;
        let sql = format!(
            "SELECT {} FROM {} WHERE {} = ?1 AND {}",
            Self::select_list(table),
            quote_ident(&table.name),
            quote_ident(&table.id_column),
            Self::live_filter(table)
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query([id])?;
        match rows.next()? {
            Some(row) => Ok(Some(Self::read_row(table, row)?.1)),
            None => Ok(None),
        }
    }

    /// Every live row of `table` as (local id, app columns), by local id.
    pub fn list_values(&self, table: &str) -> Result<Vec<(i64, Vec<Value>)>, StoreError> {
        let table = self.table(table)?;
        let sql = format!(
            "SELECT {} FROM {} WHERE {} ORDER BY {}",
            Self::select_list(table),
            quote_ident(&table.name),
            Self::live_filter(table),
            quote_ident(&table.id_column)
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(Self::read_row(table, row)?);
        }
        Ok(out)
    }

    /// The `remote_id` of row `id` of a synced table (tombstones included).
    pub fn remote_id(&self, table: &str, id: i64) -> Result<Option<String>, StoreError> {
        Ok(self.bookkeeping(table, id, "remote_id")?.flatten())
    }

    /// Whether row `id` waits to be pushed.
    pub fn is_dirty(&self, table: &str, id: i64) -> Result<bool, StoreError> {
        Ok(self.bookkeeping(table, id, "dirty")?.unwrap_or(false))
    }

    /// The sync column `column` of row `id` of `table`; `None` when there is no such row.
    fn bookkeeping<T: rusqlite::types::FromSql>(
        &self,
        table: &str,
        id: i64,
        column: &str,
    ) -> Result<Option<T>, StoreError> {
        let table = self.table(table)?;
        let sql = format!(
            "SELECT {column} FROM {} WHERE {} = ?1",
            quote_ident(&table.name),
            quote_ident(&table.id_column)
        );
        Ok(self.conn.query_row(&sql, [id], |r| r.get(0)).optional()?)
    }

    /// How many rows of each synced table wait to be pushed, parents first (the connection's
    /// owner's rows, once one is chosen).
    pub fn dirty_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.count_per_table("t.dirty = TRUE", true)
    }

    /// How many rows of each synced table belong to other local owners than the connection's
    /// (never synced by it), parents first; none before an owner is chosen.
    pub fn other_owners_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.count_per_table("TRUE", false)
    }

    /// Rows matching `filter` (on alias `t`) per synced table, of the connection's owner
    /// (`owned`) or of the others.
    fn count_per_table(&self, filter: &str, owned: bool) -> Result<Vec<(String, u64)>, StoreError> {
        let owner = self.owner()?;
        self.app
            .schema
            .synced()
            .map(|t| {
                let scope = owner.as_deref().and_then(|o| self.owned_by(t, "t", o));
                let scope = match (scope, owned) {
                    (Some(s), true) => s,
                    (Some(s), false) => format!("NOT ({s})"),
                    (None, true) => "TRUE".into(),
                    (None, false) => "FALSE".into(),
                };
                let n: i64 = self.conn.query_row(
                    &format!(
                        "SELECT count(*) FROM {} AS t WHERE {filter} AND {scope}",
                        quote_ident(&t.name)
                    ),
                    [],
                    |r| r.get(0),
                )?;
                Ok((t.name.clone(), n as u64))
            })
            .collect()
    }

    /// Whether any synced table holds a live row (of the connection's owner, once chosen).
    pub fn has_local_data(&self) -> Result<bool, StoreError> {
        let owner = self.owner()?;
        for t in self.app.schema.synced() {
            let scope = owner.as_deref().and_then(|o| self.owned_by(t, "t", o));
            let n: i64 = self.conn.query_row(
                &format!(
                    "SELECT count(*) FROM {} AS t WHERE deleted_at IS NULL AND {}",
                    quote_ident(&t.name),
                    scope.unwrap_or_else(|| "TRUE".into())
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
}
