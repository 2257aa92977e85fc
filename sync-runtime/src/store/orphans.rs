//! The server's orphan rule, applied on the device to rows the server will not take: a live row
//! under a CASCADE parent the server holds as a tombstone becomes a tombstone here too, pushed
//! next, as the server would have stored it.

use super::{Store, StoreError};
use crate::ddl::quote_ident;
use crate::schema::{OnDelete, Table};

impl Store {
    /// Whether live row `id` of `table` has a CASCADE parent that is a tombstone the server has
    /// (pushed): the server treats such a row as an orphan, a derived tombstone.
    pub(super) fn under_a_pushed_tombstone(
        &self,
        table: &Table,
        id: i64,
    ) -> Result<bool, StoreError> {
        for (col, r) in table.references() {
            if r.on_delete != OnDelete::Cascade {
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

    /// Rows the server rejected that have since come under a pushed tombstone (a pull or a
    /// push's answer brought their parent's deletion) become tombstones, pushed next. A rejected
    /// row is not pushed again at its stamp, so the server's orphan rule would never reach it:
    /// it stayed live here alone, under a parent deleted everywhere else (simulation seed
    /// 714848: rejected for a natural key two records held, then its settings profile deleted,
    /// then the tombstones purged).
    pub(super) fn tombstone_rejected_orphans(&self) -> Result<(), StoreError> {
        for rejected in self.rejected_rows()? {
            let table = self.table(&rejected.table)?;
            if self.under_a_pushed_tombstone(table, rejected.id)? {
                self.tombstone_orphan(table, rejected.id)?;
            }
        }
        Ok(())
    }
}
