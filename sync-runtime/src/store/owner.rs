//! The local owner a connection syncs. A table's owner column (`#[sync(owner)]`) holds the
//! app's own local user (one file may hold a signed-in user's rows and a guest's): it never
//! travels, the runtime never rewrites it, and a connection syncs the rows of one owner only.
//! Rows of other owners, and rows under them by reference, never leave the device and are never
//! touched by a pull; pulled records get the connection's owner.
//!
//! The owner is kept in the runtime's own table `sync_device`, apart from `sync_state` (which the
//! app's own disconnect deletes).

use super::{LOCAL_ACCOUNT, Store, StoreError};
use crate::ddl::{quote_ident, quote_literal};
use crate::schema::Table;
use rusqlite::OptionalExtension;

impl Store {
    /// The local owner this device syncs, once chosen ([`Store::choose_owner`]).
    pub fn owner(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT owner FROM sync_device WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?
            .flatten())
    }

    /// Chooses the local owner whose rows this device syncs, and keeps it.
    ///
    /// `Some(id)` names it (`sync-client connect --owner ID`, the settings page's `owner`). With
    /// `None` the owner already chosen stays; otherwise it is implied when the device's rows have
    /// exactly one owner, and refused with a message naming the owners when they have several.
    /// With no rows yet the owner must be named, unless the owner column references no table of
    /// the app (its owner means nothing to the app): then the runtime makes one,
    /// [`LOCAL_ACCOUNT`].
    pub fn choose_owner(&self, owner: Option<&str>) -> Result<String, StoreError> {
        if let Some(owner) = owner {
            let owner = owner.trim();
            if owner.is_empty() {
                return Err(StoreError::Owner("the local owner named is empty".into()));
            }
            self.save_owner(owner)?;
            return Ok(owner.to_owned());
        }
        if let Some(owner) = self.owner()? {
            return Ok(owner);
        }
        let owners = self.local_owners()?;
        let owner = match owners.as_slice() {
            [one] => one.clone(),
            [] if self.owner_column_is_the_apps()? => {
                return Err(StoreError::Owner(
                    "this device holds no rows yet: name the local owner to sync (--owner)".into(),
                ));
            }
            [] => LOCAL_ACCOUNT.to_owned(),
            several => {
                return Err(StoreError::Owner(format!(
                    "this device's rows belong to {} local owners ({}): name the one to sync \
                     (--owner)",
                    several.len(),
                    several.join(", ")
                )));
            }
        };
        self.save_owner(&owner)?;
        Ok(owner)
    }

    fn save_owner(&self, owner: &str) -> Result<(), StoreError> {
        self.conn
            .execute("UPDATE sync_device SET owner = ?1 WHERE id = 1", [owner])?;
        Ok(())
    }

    /// Every distinct owner of the device's rows, in order.
    pub fn local_owners(&self) -> Result<Vec<String>, StoreError> {
        let parts: Vec<String> = self
            .app
            .schema
            .synced()
            .filter_map(|t| {
                t.owner_column().map(|c| {
                    format!(
                        "SELECT {} AS o FROM {}",
                        quote_ident(&c.name),
                        quote_ident(&t.name)
                    )
                })
            })
            .collect();
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT DISTINCT o FROM ({}) WHERE o IS NOT NULL ORDER BY o",
            parts.join(" UNION ALL ")
        );
        Ok(self
            .conn
            .prepare(&sql)?
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<_, _>>()?)
    }

    /// Whether an owner column holds a foreign key into one of the app's tables (its value must
    /// name a row there, so the runtime cannot make one up).
    fn owner_column_is_the_apps(&self) -> Result<bool, StoreError> {
        for t in self.app.schema.synced() {
            let Some(c) = t.owner_column() else { continue };
            let mut stmt = self
                .conn
                .prepare("SELECT count(*) FROM pragma_foreign_key_list(?1) WHERE \"from\" = ?2")?;
            let n: i64 = stmt.query_row((&t.name, &c.name), |r| r.get(0))?;
            if n > 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The owner written into the owner column of a pulled record, or of a row the app inserts
    /// through the typed write path without one: the chosen owner, or the one implied now.
    pub(crate) fn owner_for_writes(&self) -> Result<String, StoreError> {
        if let Some(id) = &*self.owner.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(id.clone());
        }
        self.choose_owner(None)
    }

    /// Runs `f` with the owner read once (a sync step writes many rows, and nothing in it
    /// changes the owner).
    pub(crate) fn with_owner<R>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let id = self.owner_for_writes()?;
        *self.owner.lock().unwrap_or_else(|e| e.into_inner()) = Some(id);
        let r = f(self);
        *self.owner.lock().unwrap_or_else(|e| e.into_inner()) = None;
        r
    }

    /// SQL: whether row `alias` of `table` belongs to the connection's owner `owner`: its owner
    /// column holds it, or each row it references (transitively) that has an owner does. `None`
    /// where the table has no owner on any path (every row is the connection's).
    pub(crate) fn owned_by(&self, table: &Table, alias: &str, owner: &str) -> Option<String> {
        self.owned_by_at(table, alias, owner, 0)
    }

    fn owned_by_at(&self, table: &Table, alias: &str, owner: &str, depth: usize) -> Option<String> {
        if let Some(c) = table.owner_column() {
            return Some(format!(
                "{alias}.{} = {}",
                quote_ident(&c.name),
                quote_literal(owner)
            ));
        }
        // A schema's references form no cycle, so this ends; the bound keeps a malformed one
        // from recursing for ever.
        if depth > 16 {
            return None;
        }
        let mut parts = Vec::new();
        for c in &table.columns {
            let Some(r) = &c.reference else { continue };
            if r.by_key.is_some() {
                continue;
            }
            let Some(parent) = self.app.schema.table(&r.table) else {
                continue;
            };
            let p = format!("{alias}_{depth}");
            if let Some(cond) = self.owned_by_at(parent, &p, owner, depth + 1) {
                parts.push(format!(
                    "({alias}.{col} IS NULL OR EXISTS (SELECT 1 FROM {pt} AS {p} \
                     WHERE {p}.{pid} = {alias}.{col} AND {cond}))",
                    col = quote_ident(&c.name),
                    pt = quote_ident(&parent.name),
                    pid = quote_ident(&parent.id_column),
                ));
            }
        }
        (!parts.is_empty()).then(|| parts.join(" AND "))
    }
}
