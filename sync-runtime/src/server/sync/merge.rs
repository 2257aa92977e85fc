//! The merge decision of a pushed row against what is stored, and the writes the server derives
//! itself: a merge into the record holding the same natural key (an alias, a derived tombstone,
//! its children moved), and a tombstone reaching its children.

use super::push::{PushSession, RowStatus};
use super::record::{Record, decode, load, select_columns};
use crate::merge::{ServerDecision, Stamp, decide_on_server};
use crate::protocol::wire::WireRow;
use crate::schema::{OnDelete, Table};
use crate::server::db::{DbError, SyncTx};
use crate::server::error::ApiError;
use crate::timestamp::Timestamp;
use crate::value::Value;
use sea_query::{Expr, ExprTrait, OnConflict, Query};

/// What becomes of a pushed row whose identity and references are resolved, decided before
/// anything of it is written.
pub(super) enum Verdict {
    /// Refused, with why.
    Rejected(String),
    /// Merged into this record, the one of this account holding the same natural key.
    MergeInto(String),
    /// The stored version wins (the merge rule's `Stale`): the answer carries it.
    Stale,
    /// A live write under a parent deleted at this stamp: the server derives what is stored.
    UnderDeletedParent(Timestamp),
    /// Record as sent (the merge rule's `Insert` or `Replace`).
    Store,
    /// The version already stored (the merge rule's `Repeat`, a retried push).
    Repeat,
}

impl<T: SyncTx> PushSession<'_, T> {
    /// Decides `row` (its identity and references resolved) against `stored`, the record under
    /// its id: a natural key another record of this account holds merges it into that record,
    /// otherwise the merge rule decides, and a live write under a parent deleted at
    /// `deleted_parent` is derived by the server unless it is stale. A `deletion` (a tombstone,
    /// or a live write the orphan rule makes one) whose keys two records hold gives them up.
    pub(super) async fn decide(
        &mut self,
        table: &Table,
        row: &mut WireRow,
        stored: Option<&Record>,
        deleted_parent: Option<Timestamp>,
        deletion: bool,
    ) -> Result<Verdict, DbError> {
        let matches = self
            .natural_key_matches(table, &row.values, &row.remote_id)
            .await?;
        if matches.len() > 1 {
            // A deletion is not refused for its keys: the app cannot edit a deleted row, so a
            // refused deletion stayed unpushed for good; and it is no one record, to merge
            // into. It is stored as a tombstone holding neither key (simulation seed 714848).
            if !(deletion && self.give_up_held_keys(table, row).await?) {
                return Ok(Verdict::Rejected(format!(
                    "its natural key matches two different {} records through two keys",
                    table.name
                )));
            }
        } else if let Some(survivor) = matches.into_iter().next() {
            return Ok(Verdict::MergeInto(survivor));
        }
        // The stamp of the row as [`PushSession::stored_from`] stores it.
        let incoming = Stamp::new(row.updated_at, self.device);
        let decision = decide_on_server(stored.map(Record::stamp), incoming);
        Ok(match (decision, deleted_parent) {
            (ServerDecision::Stale, _) => Verdict::Stale,
            (_, Some(parent_at)) => Verdict::UnderDeletedParent(parent_at),
            (ServerDecision::Insert | ServerDecision::Replace, None) => Verdict::Store,
            (ServerDecision::Repeat, None) => Verdict::Repeat,
        })
    }

    /// Nulls the nullable columns of each natural key of `row` that another record holds, so
    /// that it holds none of them. False when a held key has no nullable column to free.
    async fn give_up_held_keys(
        &mut self,
        table: &Table,
        row: &mut WireRow,
    ) -> Result<bool, DbError> {
        for n in 0..table.natural_keys.len() {
            if self
                .key_holders(table, n, &row.values, &row.remote_id)
                .await?
                .is_empty()
            {
                continue;
            }
            let nullable: Vec<usize> = table.natural_keys[n]
                .iter()
                .filter_map(|k| table.column_index(k))
                .filter(|&i| table.columns[i].nullable)
                .collect();
            if nullable.is_empty() {
                return Ok(false);
            }
            for i in nullable {
                row.values[i] = Value::Null;
            }
        }
        Ok(true)
    }

    /// Merges the pushed `row` (whose record may exist as `stored`) into `survivor`, the record
    /// holding the same natural key; orphaned by a CASCADE parent deleted at `orphaned_by`, it
    /// merges as a derived tombstone.
    pub(super) async fn merge_pushed(
        &mut self,
        table: &Table,
        row: &WireRow,
        stored: Option<Record>,
        orphaned_by: Option<Timestamp>,
        survivor: String,
    ) -> Result<RowStatus, ApiError> {
        let mut incoming = self.stored_from(row, self.device);
        if let Some(at) = orphaned_by {
            let t = self.derived_stamp(&[at, row.updated_at]);
            incoming.deleted_at = Some(t);
            incoming.set_stamp(table, t);
            incoming.device_id = self.server_device.to_owned();
        }
        let kept = self.merge_into(table, incoming, stored, &survivor).await?;
        Ok(RowStatus::Merged(survivor, kept.map(Box::new)))
    }

    /// Makes `alias` of `table` an alias of `canonical`, as a merge does with the merged-away
    /// id.
    async fn add_alias(
        &mut self,
        table: &str,
        alias: &str,
        canonical: &str,
    ) -> Result<(), DbError> {
        self.read.aliases.remove(table);
        self.read.parents.remove(table);
        // Aliases that pointed at the merged-away id now point at the survivor: one hop always.
        let mut repoint = Query::update();
        repoint
            .table("sync_aliases")
            .value("canonical_id", canonical)
            .and_where(Expr::col("table_name").eq(table))
            .and_where(Expr::col("user_id").eq(self.user))
            .and_where(Expr::col("canonical_id").eq(alias));
        self.tx.run(&repoint).await?;
        let mut ins = Query::insert();
        ins.into_table("sync_aliases")
            .columns(["table_name", "alias_id", "user_id", "canonical_id"])
            .values_panic([
                table.into(),
                alias.into(),
                self.user.into(),
                canonical.into(),
            ])
            .on_conflict(
                OnConflict::columns(["table_name", "alias_id"])
                    .update_column("canonical_id")
                    .to_owned(),
            );
        self.tx.run(&ins).await?;
        Ok(())
    }

    /// Merges `incoming` (whose record may exist as `own`) into the record `survivor` with the
    /// same natural key: its id becomes an alias, its own record a derived tombstone whose
    /// children move to the survivor, and the survivor takes its values if its stamp is greater.
    /// Returns the survivor's version when it kept it (the incoming write lost).
    async fn merge_into(
        &mut self,
        table: &Table,
        incoming: Record,
        own: Option<Record>,
        survivor: &str,
    ) -> Result<Option<Record>, ApiError> {
        Box::pin(async move {
            self.send().await?;
            let Some(target) = load(self.tx, table, survivor).await? else {
                return Err(ApiError::internal("a natural-key match vanished"));
            };
            self.add_alias(&table.name, &incoming.remote_id, survivor)
                .await?;
            if let Some(mut own) = own {
                self.repoint_children(table, &own.remote_id, survivor, own.updated_at)
                    .await?;
                // The merged-away record gives up the keys the survivor is about to take, or the
                // UNIQUE index refuses the survivor's write (a table with two keys, the row
                // moving from one to the other).
                let freed = free_taken_keys(table, &mut own, &incoming.values);
                if own.deleted_at.is_none() || freed {
                    let t = self.derived_stamp(&[own.updated_at, incoming.updated_at]);
                    own.deleted_at.get_or_insert(t);
                    own.set_stamp(table, t);
                    own.device_id = self.server_device.to_owned();
                    self.store(table, &mut own, u32::MAX).await?;
                }
            }
            // The answer carries the survivor's version either way: a pull would not bring it
            // to the pusher when the survivor's writer is that very device. When the pushed
            // write won, the version stored may still differ from the one sent, by references
            // read through aliases (found by the simulation, seeds 16 and 4306).
            let (kept, survivor_at) = if incoming.stamp() > target.stamp() {
                let device = incoming.device_id.clone();
                let mut merged = Record {
                    remote_id: target.remote_id.clone(),
                    seq: 0,
                    device_id: device,
                    ..incoming
                };
                self.store(table, &mut merged, self.version).await?;
                let at = merged.deleted_at.map(|_| merged.updated_at);
                (merged, at)
            } else {
                let at = target.deleted_at.map(|_| target.updated_at);
                (target, at)
            };
            // A deleted survivor takes no live children, those just moved to it included (found
            // by the simulation, seed 46).
            if let Some(at) = survivor_at {
                self.cascade(table, survivor, at).await?;
            }
            Ok(Some(kept))
        })
        .await
    }

    /// Points every child of `from` at `to`, as derived writes (merging children that now
    /// share a natural key).
    // The device's `move_children` (store/reconcile.rs) follows this on the merge's answer:
    // the same re-pointing and the same merge of twins by natural key. It differs in that the
    // device's copies are not new versions (the server's derived writes reach it by pull), so
    // only a newer unpushed edit of a twin is kept, to be pushed under the survivor.
    async fn repoint_children(
        &mut self,
        table: &Table,
        from: &str,
        to: &str,
        at: Timestamp,
    ) -> Result<(), ApiError> {
        for (child, col, r) in self.schema.children_of(&table.name).collect::<Vec<_>>() {
            if !child.synced || r.by_key.is_some() || !col.on_wire() {
                continue;
            }
            for mut c in self.children(child, &col.name, from, false).await? {
                c.set(child, &col.name, Value::Text(to.to_owned()));
                let t = self.derived_stamp(&[at, c.updated_at]);
                c.set_stamp(child, t);
                c.device_id = self.server_device.to_owned();
                let matches = self
                    .natural_key_matches(child, &c.values, &c.remote_id)
                    .await?;
                match matches.into_iter().next() {
                    Some(survivor) => {
                        self.send().await?;
                        let own = load(self.tx, child, &c.remote_id).await?;
                        Box::pin(self.merge_into(child, c, own, &survivor)).await?;
                    }
                    None => self.store(child, &mut c, u32::MAX).await?,
                }
            }
        }
        Ok(())
    }

    async fn children(
        &mut self,
        child: &Table,
        col: &str,
        parent: &str,
        live_only: bool,
    ) -> Result<Vec<Record>, DbError> {
        self.send().await?;
        let (names, types) = select_columns(child);
        let mut q = Query::select();
        q.columns(names)
            .from(child.name.clone())
            .and_where(Expr::col("user_id").eq(self.user))
            .and_where(Expr::col(col.to_owned()).eq(parent));
        if live_only {
            q.and_where(Expr::col("deleted_at").is_null());
        }
        self.tx
            .fetch(&q, &types)
            .await?
            .into_iter()
            .map(|r| decode(child, r))
            .collect()
    }

    /// A tombstone of `parent` reaches its children: CASCADE ones become derived tombstones,
    /// SET NULL references are nulled, recursively.
    // The device's `Store::cascade` (store/write.rs) applies the same rule to a local deletion;
    // the difference is named there.
    pub(super) async fn cascade(
        &mut self,
        table: &Table,
        parent: &str,
        at: Timestamp,
    ) -> Result<(), ApiError> {
        Box::pin(async move {
            for (child, col, r) in self.schema.children_of(&table.name).collect::<Vec<_>>() {
                if !child.synced || r.by_key.is_some() || !col.on_wire() {
                    continue;
                }
                for mut c in self.children(child, &col.name, parent, true).await? {
                    let t = self.derived_stamp(&[at, c.updated_at]);
                    c.set_stamp(child, t);
                    c.device_id = self.server_device.to_owned();
                    match r.on_delete {
                        OnDelete::Cascade => {
                            c.deleted_at = Some(t);
                            self.store(child, &mut c, u32::MAX).await?;
                            self.cascade(child, &c.remote_id, t).await?;
                        }
                        OnDelete::SetNull => {
                            c.set(child, &col.name, Value::Null);
                            self.store(child, &mut c, u32::MAX).await?;
                        }
                    }
                }
            }
            Ok(())
        })
        .await
    }
}

/// Frees the natural keys of `own`, a record about to become a merge's derived tombstone, that
/// `taking` (the values its survivor may take) holds too: their nullable columns are set to
/// NULL, and a key holding a NULL matches nothing. The rule, whatever the statements: the
/// tombstone is written before the survivor, and holds no key the survivor will hold. (Every
/// key of a table with two keys has a nullable column in this app; a key without one would keep
/// its values.) Returns whether anything changed.
fn free_taken_keys(table: &Table, own: &mut Record, taking: &[Value]) -> bool {
    let mut freed = false;
    for key in &table.natural_keys {
        let cols: Vec<usize> = key.iter().filter_map(|k| table.column_index(k)).collect();
        let taken = cols
            .iter()
            .all(|&i| !own.values[i].is_null() && own.values[i] == taking[i]);
        if taken {
            for &i in &cols {
                if table.columns[i].nullable {
                    own.values[i] = Value::Null;
                    freed = true;
                }
            }
        }
    }
    freed
}
