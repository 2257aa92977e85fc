//! Push: the entry point, which locks the account and runs each table's batch, and the flow of
//! one pushed row (its identity, its references, the decision, the write), with the writes
//! buffered for `write_batch.rs`, which sends a table's batch at once.

use super::merge::Verdict;
use super::read_ahead::{Parent, ReadAhead};
use super::record::{Record, text};
use super::statements::Statements;
use super::write_batch::Unsent;
use crate::protocol::wire::WireRow;
use crate::schema::{ColumnType, OnDelete, Schema, Table};
use crate::server::db::{DbError, SyncTx};
use crate::server::error::ApiError;
use crate::timestamp::Timestamp;
use crate::value::Value;
use sea_query::{Expr, ExprTrait, Query};
use std::collections::BTreeMap;

/// The outcome of one pushed row (docs/PROTOCOL.md, push response).
#[derive(Debug, Clone, PartialEq)]
pub enum RowStatus {
    Applied,
    Stale(Box<Record>),
    /// Merged into the record with this id; with the survivor's version when the pushed write
    /// lost the merge rule (the device stores it as if pulled).
    Merged(String, Option<Box<Record>>),
    Rejected(String),
}

/// The rows of one table in a push, in body order: parsed, or (remote_id, why it is rejected).
pub type PushedRows = Vec<Result<WireRow, (String, String)>>;

/// One push request after envelope validation.
pub struct PushInput {
    pub user_id: String,
    pub device_id: String,
    pub client_version: u32,
    /// Per synced table, the rows in body order: parsed, or (remote_id, why it is rejected).
    pub changes: BTreeMap<String, PushedRows>,
}

pub struct PushContext<'a> {
    pub schema: &'a Schema,
    pub server_device: &'a str,
    /// The server's built statements.
    pub statements: &'a Statements,
}

/// One push in its transaction: who pushes, the sequence reached, the writes not sent yet and
/// what it has read.
pub(super) struct PushSession<'a, T> {
    pub(super) tx: &'a mut T,
    pub(super) schema: &'a Schema,
    pub(super) user: &'a str,
    pub(super) device: &'a str,
    pub(super) version: u32,
    pub(super) server_device: &'a str,
    pub(super) statements: &'a Statements,
    seq: i64,
    /// Records written but not sent yet: sent a table's batch at a time, per table and client
    /// version (`write_batch.rs`), before the push reads anything again.
    pub(super) unsent: Vec<Unsent>,
    /// Why a record the push wrote was refused (another account's), found when it was sent.
    pub(super) refused: Option<String>,
    /// What this push has read, so that a batch costs a few statements per row rather than
    /// six (a round trip each on PostgreSQL). An entry is dropped when the push writes its
    /// record, and a table's aliases and resolved parents when it writes that table's records
    /// or aliases, so each read sees what a fresh one would.
    pub(super) read: ReadAhead,
}

/// What the references of a pushed row resolved to.
#[derive(Default)]
struct References {
    /// A reference was read through an alias: the row is stored under canonical ids.
    through_alias: bool,
    /// When a CASCADE parent of a live row was deleted: the row becomes a derived tombstone.
    orphaned_by: Option<Timestamp>,
    /// When a SET NULL parent of a live row was deleted: the reference is nulled.
    nulled_by: Option<Timestamp>,
}

/// Applies a push in the caller's transaction: parents before children whatever the body
/// order, each row by the merge rule. Returns the results per table in body order and the
/// sequence now reached.
pub async fn push<T: SyncTx>(
    tx: &mut T,
    ctx: &PushContext<'_>,
    input: PushInput,
) -> Result<BTreeMap<String, Vec<(String, RowStatus)>>, ApiError> {
    // Lock the user's row for the whole transaction: pushes of one user run one at a time.
    let mut lock = Query::update();
    lock.table("sync_users")
        .value("last_seq", Expr::col("last_seq"))
        .and_where(Expr::col("user_id").eq(input.user_id.as_str()));
    if tx.run(&lock).await? != 1 {
        return Err(ApiError::Unauthorized(
            "the account no longer exists".into(),
        ));
    }
    let mut q = Query::select();
    q.column("last_seq")
        .from("sync_users")
        .and_where(Expr::col("user_id").eq(input.user_id.as_str()));
    let seq = match tx
        .fetch(&q, &[ColumnType::Integer])
        .await?
        .first()
        .and_then(|r| r.first())
    {
        Some(Value::Integer(i)) => *i,
        _ => return Err(ApiError::internal("sync_users.last_seq is missing")),
    };
    let mut s = PushSession {
        tx,
        schema: ctx.schema,
        user: &input.user_id,
        device: &input.device_id,
        version: input.client_version,
        server_device: ctx.server_device,
        statements: ctx.statements,
        seq,
        unsent: Vec::new(),
        refused: None,
        read: ReadAhead::default(),
    };
    let mut results = BTreeMap::new();
    let mut changes = input.changes;
    for table in ctx.schema.synced() {
        let Some(rows) = changes.remove(&table.name) else {
            continue;
        };
        let ids: Vec<&str> = rows
            .iter()
            .filter_map(|r| r.as_ref().ok().map(|r| r.remote_id.as_str()))
            .collect();
        s.read_ahead(table, &ids).await?;
        s.read_natural_keys(table, &rows).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            match row {
                Err((remote_id, why)) => out.push((remote_id, RowStatus::Rejected(why))),
                Ok(row) => {
                    let sent = row.remote_id.clone();
                    let status = s.apply_push(table, row).await?;
                    if let Some(why) = s.refused.take() {
                        return Err(ApiError::Forbidden(why));
                    }
                    out.push((sent, status));
                }
            }
        }
        results.insert(table.name.clone(), out);
    }
    s.send().await?;
    if let Some(why) = s.refused.take() {
        return Err(ApiError::Forbidden(why));
    }
    let mut save = Query::update();
    save.table("sync_users")
        .value("last_seq", s.seq)
        .and_where(Expr::col("user_id").eq(input.user_id.as_str()));
    s.tx.run(&save).await?;
    Ok(results)
}

impl<T: SyncTx> PushSession<'_, T> {
    fn next_seq(&mut self) -> i64 {
        self.seq += 1;
        self.seq
    }

    /// The stamp of a write the server derives itself: above its wall clock and every stamp
    /// involved.
    pub(super) fn derived_stamp(&self, involved: &[Timestamp]) -> Timestamp {
        let top = involved.iter().copied().max().unwrap_or(Timestamp::MIN);
        std::cmp::max(Timestamp::now(), top.add_millis(1))
    }

    /// Writes `row` as the latest version of its record, with the next sequence. Only columns
    /// known to `version` are written over an existing row; the rest stay as stored.
    pub(super) async fn store(
        &mut self,
        table: &Table,
        row: &mut Record,
        version: u32,
    ) -> Result<(), ApiError> {
        let values = row.values.clone();
        self.store_values(table, row, values, version).await
    }

    /// As [`PushSession::store`], with the record's values moved into the statement: the
    /// caller keeps what `row` says but not its values. Most pushed rows take this way, and
    /// copying each row's texts and documents once more was a tenth of a push.
    async fn store_taking_values(
        &mut self,
        table: &Table,
        row: &mut Record,
        version: u32,
    ) -> Result<(), ApiError> {
        let values = std::mem::take(&mut row.values);
        self.store_values(table, row, values, version).await
    }

    async fn store_values(
        &mut self,
        table: &Table,
        row: &mut Record,
        values: Vec<Value>,
        version: u32,
    ) -> Result<(), ApiError> {
        row.seq = self.next_seq();
        self.read.forget(&table.name, &row.remote_id);
        if let Some(holders) = self.read.holders.get_mut(&table.name)
            && !holders.write(table, &row.remote_id, &values)
        {
            self.read.holders.remove(&table.name);
        }
        // The statement's parameters: the columns' values (the account of the conflict clause
        // is added when sent).
        let mut params: Vec<Value> = Vec::with_capacity(5 + values.len());
        params.extend([
            Value::Text(row.remote_id.clone()),
            Value::Text(row.user_id.clone()),
            Value::Integer(row.seq),
            Value::Text(row.device_id.clone()),
            row.deleted_at.map_or(Value::Null, Value::DateTime),
        ]);
        for (c, v) in table.columns.iter().zip(values) {
            if c.on_wire() && c.since <= version {
                params.push(v);
            }
        }
        // One statement may not write a record twice (PostgreSQL refuses it).
        if self
            .unsent
            .iter()
            .any(|u| u.table == table.name && u.ids.contains(&row.remote_id))
        {
            self.send().await?;
        }
        let unsent = match self
            .unsent
            .iter()
            .position(|u| u.table == table.name && u.version == version)
        {
            Some(i) => &mut self.unsent[i],
            None => {
                self.unsent.push(Unsent {
                    table: table.name.clone(),
                    version,
                    rows: Vec::new(),
                    ids: Default::default(),
                });
                self.unsent.last_mut().expect("just pushed")
            }
        };
        unsent.ids.insert(row.remote_id.clone());
        unsent.rows.push(params);
        Ok(())
    }

    pub(super) fn stored_from(&self, row: &WireRow, device: &str) -> Record {
        self.record_of(row.clone(), device)
    }

    fn record_of(&self, row: WireRow, device: &str) -> Record {
        Record {
            remote_id: row.remote_id,
            user_id: self.user.to_owned(),
            seq: 0,
            device_id: device.to_owned(),
            deleted_at: row.deleted_at,
            updated_at: row.updated_at,
            values: row.values,
        }
    }

    /// Applies one pushed row: resolves which record it writes, then its references, decides it
    /// against what is stored, and writes what the decision says.
    async fn apply_push(&mut self, table: &Table, mut row: WireRow) -> Result<RowStatus, ApiError> {
        let (stored, aliased) = self.resolve_identity(table, &mut row).await?;
        let refs = match self
            .resolve_references(table, &mut row, stored.as_ref())
            .await?
        {
            Ok(refs) => refs,
            Err(why) => return Ok(RowStatus::Rejected(why)),
        };
        // Record under canonical ids where the row used aliases: the answer carries that
        // version, since the pushing device's own pulls leave it out (found by the simulation,
        // seed 1082: an item added under a list merged away meanwhile kept the old list on its
        // device).
        let merged = (aliased || refs.through_alias).then(|| row.remote_id.clone());
        let deleted_parent = refs.orphaned_by.or(refs.nulled_by);
        let deletion = row.is_tombstone() || refs.orphaned_by.is_some();
        let now = match self
            .decide(table, &mut row, stored.as_ref(), deleted_parent, deletion)
            .await?
        {
            Verdict::Rejected(why) => return Ok(RowStatus::Rejected(why)),
            Verdict::MergeInto(survivor) => {
                return self
                    .merge_pushed(table, &row, stored, refs.orphaned_by, survivor)
                    .await;
            }
            Verdict::Stale => {
                return Ok(RowStatus::Stale(Box::new(
                    stored.expect("stale implies stored"),
                )));
            }
            // A live write under a deleted parent: the server derives what must be stored.
            Verdict::UnderDeletedParent(parent_at) => {
                let orphaned = refs.orphaned_by.is_some();
                return self.write_derived(table, &row, parent_at, orphaned).await;
            }
            Verdict::Store => {
                self.write_as_sent(table, row, stored.as_ref(), merged.is_some())
                    .await?
            }
            Verdict::Repeat => stored,
        };
        Ok(match merged {
            Some(id) => RowStatus::Merged(id, now.map(Box::new)),
            None => RowStatus::Applied,
        })
    }

    /// Resolves which record `row` writes: an id that is an alias of this account's is read as
    /// its canonical id (the row's `remote_id` becomes it), and the record stored under it, if
    /// any, is loaded. Either of another account's refuses the push. Returns the stored record
    /// and whether the id was an alias.
    async fn resolve_identity(
        &mut self,
        table: &Table,
        row: &mut WireRow,
    ) -> Result<(Option<Record>, bool), ApiError> {
        let sent = row.remote_id.clone();
        let forbidden =
            || ApiError::Forbidden(format!("{} {sent} belongs to another account", table.name));
        let mut aliased = false;
        if let Some((owner, canonical)) = self.alias_of(&table.name, &row.remote_id).await? {
            if owner != self.user {
                return Err(forbidden());
            }
            row.remote_id = canonical;
            aliased = true;
        }
        let stored = self.load(table, &row.remote_id).await?;
        if stored.as_ref().is_some_and(|s| s.user_id != self.user) {
            return Err(forbidden());
        }
        // An older client does not know the newer columns: keep them as stored.
        if let Some(s) = &stored {
            for (i, c) in table.columns.iter().enumerate() {
                if c.since > self.version {
                    row.values[i] = s.values[i].clone();
                }
            }
        }
        Ok((stored, aliased))
    }

    /// References: read aliases as their canonical ids, and check the parents are this
    /// account's. A tombstone of a record never seen is stored without these checks. Returns
    /// why the row is rejected when a live row references a record this account does not have.
    async fn resolve_references(
        &mut self,
        table: &Table,
        row: &mut WireRow,
        stored: Option<&Record>,
    ) -> Result<Result<References, String>, DbError> {
        let mut refs = References::default();
        let unchecked = stored.is_none() && row.is_tombstone();
        for (i, c) in table.columns.iter().enumerate() {
            let Some(r) = c
                .reference
                .as_ref()
                .filter(|r| r.by_key.is_none() && c.on_wire())
            else {
                continue;
            };
            let Some(id) = text(&row.values[i]).map(str::to_owned) else {
                continue;
            };
            if unchecked {
                // Still read aliases as their canonical ids, so that natural keys compare as the
                // server stores them (found by the simulation, seed 575: a tombstone under a
                // merged-away list escaped the merge with the same item under the survivor).
                if let Some(canonical) = self.canonical_id(&r.table, &id).await? {
                    row.values[i] = Value::Text(canonical);
                }
                continue;
            }
            match self.resolve_parent(r, &id).await? {
                // A tombstone's references matter to no one: one under a parent this server no
                // longer knows (its tombstone purged) keeps the reference it had here, rather
                // than being refused forever while the record stays live (simulation seed 167,
                // purges).
                Parent::Missing if row.is_tombstone() => {
                    if let Some(s) = stored {
                        row.values[i] = s.values[i].clone();
                    }
                }
                Parent::Missing => {
                    return Ok(Err(format!(
                        "column `{}` references a {} record this account does not have",
                        c.name, r.table
                    )));
                }
                Parent::Live(canonical) => {
                    if canonical != id {
                        refs.through_alias = true;
                    }
                    row.values[i] = Value::Text(canonical);
                }
                Parent::Tombstone(canonical, at) => {
                    row.values[i] = Value::Text(canonical);
                    if !row.is_tombstone() {
                        match r.on_delete {
                            OnDelete::Cascade => refs.orphaned_by = Some(at),
                            OnDelete::SetNull => {
                                row.values[i] = Value::Null;
                                refs.nulled_by = Some(at);
                            }
                        }
                    }
                }
            }
        }
        Ok(Ok(refs))
    }

    /// Writes a live `row` under a parent deleted at `parent_at`, as the server derives it: a
    /// tombstone if `orphaned` (a CASCADE parent), its reference nulled otherwise (done when
    /// its references were resolved). The answer is `stale` with what was stored.
    async fn write_derived(
        &mut self,
        table: &Table,
        row: &WireRow,
        parent_at: Timestamp,
        orphaned: bool,
    ) -> Result<RowStatus, ApiError> {
        let mut derived = self.stored_from(row, self.device);
        let t = self.derived_stamp(&[parent_at, row.updated_at]);
        derived.set_stamp(table, t);
        derived.device_id = self.server_device.to_owned();
        if orphaned {
            derived.deleted_at = Some(t);
        }
        self.store(table, &mut derived, self.version).await?;
        Ok(RowStatus::Stale(Box::new(derived)))
    }

    /// Writes `row` as sent over `stored`; a tombstone of a live record reaches its children.
    /// Returns what was stored when `answered` (the answer carries it), and nothing otherwise.
    async fn write_as_sent(
        &mut self,
        table: &Table,
        row: WireRow,
        stored: Option<&Record>,
        answered: bool,
    ) -> Result<Option<Record>, ApiError> {
        let was_live = stored.is_some_and(|s| s.deleted_at.is_none());
        let mut incoming = self.record_of(row, self.device);
        if answered {
            self.store(table, &mut incoming, self.version).await?;
        } else {
            self.store_taking_values(table, &mut incoming, self.version)
                .await?;
        }
        if incoming.deleted_at.is_some() && was_live {
            self.cascade(table, &incoming.remote_id, incoming.updated_at)
                .await?;
        }
        Ok(answered.then_some(incoming))
    }
}
