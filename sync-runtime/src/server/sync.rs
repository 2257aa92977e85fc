//! Push, pull and purge (docs/PROTOCOL.md), written once for both backends over [`SyncTx`].
//!
//! A push runs in one transaction that first locks the user's row, so two pushes of one user
//! never interleave (on PostgreSQL, even across server processes) and the per-user change
//! sequence is assigned in commit order: a pull can never skip a lower sequence that commits
//! later.

use crate::ddl::SERVER_COLUMNS;
use crate::merge::{ServerDecision, Stamp, decide_on_server};
use crate::protocol::cursor::PullFrom;
use crate::protocol::wire::WireRow;
use crate::schema::{Column, ColumnType, OnDelete, Reference, Schema, Table, UPDATED_AT};
use crate::server::db::{DbError, SyncTx};
use crate::server::error::ApiError;
use crate::timestamp::Timestamp;
use crate::value::Value;
use sea_query::{Cond, Expr, ExprTrait, OnConflict, Order, Query};
use serde_json::{Map, Value as Json};
use std::collections::{BTreeMap, HashMap};

/// A record as the server stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    pub remote_id: String,
    pub user_id: String,
    pub seq: i64,
    pub device_id: String,
    pub deleted_at: Option<Timestamp>,
    pub updated_at: Timestamp,
    /// Every column of the table in order; references hold the parent's wire form; columns
    /// that do not travel are NULL.
    pub values: Vec<Value>,
}

impl Stored {
    fn stamp(&self) -> Stamp<'_> {
        Stamp::new(self.updated_at, &self.device_id)
    }

    fn set(&mut self, table: &Table, column: &str, v: Value) {
        if let Some(i) = table.column_index(column) {
            self.values[i] = v;
        }
    }

    fn set_stamp(&mut self, table: &Table, t: Timestamp) {
        self.updated_at = t;
        self.set(table, UPDATED_AT, Value::DateTime(t));
    }
}

pub(crate) fn sea(v: &Value) -> sea_query::Value {
    use sea_query::Value as S;
    match v {
        Value::Null => S::String(None),
        Value::Integer(i) => S::BigInt(Some(*i)),
        Value::Real(f) => S::Double(Some(*f)),
        Value::Text(s) => S::String(Some(s.clone())),
        Value::Boolean(b) => S::Bool(Some(*b)),
        Value::DateTime(t) => S::String(Some(t.to_wire())),
        Value::Json(j) => S::String(Some(j.to_string())),
    }
}

fn text(v: &Value) -> Option<&str> {
    match v {
        Value::Text(s) => Some(s),
        _ => None,
    }
}

/// The type a column has on the server (references are text).
fn server_ty(c: &Column) -> ColumnType {
    if c.reference.is_some() {
        ColumnType::Text
    } else {
        c.ty
    }
}

fn select_columns(table: &Table) -> (Vec<String>, Vec<ColumnType>) {
    let mut names: Vec<String> = SERVER_COLUMNS.iter().map(|s| s.to_string()).collect();
    let mut types = vec![
        ColumnType::Text,
        ColumnType::Text,
        ColumnType::Integer,
        ColumnType::Text,
        ColumnType::DateTime,
    ];
    for c in table.columns.iter().filter(|c| c.on_wire()) {
        names.push(c.name.clone());
        types.push(server_ty(c));
    }
    (names, types)
}

/// The next column of a stored row, which must be text.
fn take_text(
    it: &mut impl Iterator<Item = Value>,
    table: &Table,
    column: &str,
) -> Result<String, DbError> {
    match it.next() {
        Some(Value::Text(s)) => Ok(s),
        other => Err(DbError::Decode(format!(
            "{}.{column}: expected text, found {other:?}",
            table.name
        ))),
    }
}

fn decode(table: &Table, row: Vec<Value>) -> Result<Stored, DbError> {
    let mut it = row.into_iter();
    let remote_id = take_text(&mut it, table, "remote_id")?;
    let user_id = take_text(&mut it, table, "user_id")?;
    let seq = match it.next() {
        Some(Value::Integer(i)) => i,
        other => {
            return Err(DbError::Decode(format!(
                "{}: bad seq {other:?}",
                table.name
            )));
        }
    };
    let device_id = take_text(&mut it, table, "device_id")?;
    let deleted_at = match it.next() {
        Some(Value::DateTime(t)) => Some(t),
        _ => None,
    };
    let mut values = Vec::with_capacity(table.columns.len());
    let mut updated_at = None;
    for c in &table.columns {
        let v = if c.on_wire() {
            it.next().unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        if let (true, Value::DateTime(t)) = (c.name == UPDATED_AT, &v) {
            updated_at = Some(*t);
        }
        values.push(v);
    }
    let updated_at = updated_at
        .ok_or_else(|| DbError::Decode(format!("{}: row without updated_at", table.name)))?;
    Ok(Stored {
        remote_id,
        user_id,
        seq,
        device_id,
        deleted_at,
        updated_at,
        values,
    })
}

/// Loads the record `remote_id` of `table`, whoever owns it.
pub async fn load<T: SyncTx>(
    tx: &mut T,
    table: &Table,
    remote_id: &str,
) -> Result<Option<Stored>, DbError> {
    let (names, types) = select_columns(table);
    let mut q = Query::select();
    q.columns(names)
        .from(table.name.clone())
        .and_where(Expr::col("remote_id").eq(remote_id));
    tx.fetch(&q, &types)
        .await?
        .into_iter()
        .next()
        .map(|r| decode(table, r))
        .transpose()
}

/// The outcome of one pushed row (docs/PROTOCOL.md, push response).
#[derive(Debug, Clone, PartialEq)]
pub enum RowStatus {
    Applied,
    Stale(Box<Stored>),
    /// Merged into the record with this id; with the survivor's version when the pushed write
    /// lost the merge rule (the device stores it as if pulled).
    Merged(String, Option<Box<Stored>>),
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
}

struct Session<'a, T> {
    tx: &'a mut T,
    schema: &'a Schema,
    user: &'a str,
    device: &'a str,
    version: u32,
    server_device: &'a str,
    seq: i64,
    /// Records written but not sent yet: sent a table's batch at a time, in one multi-row
    /// statement per table and client version, before the push reads anything again.
    unsent: Vec<Unsent>,
    /// Why a record the push wrote was refused (another account's), found when it was sent.
    refused: Option<String>,
    /// What this push has read, so that a batch costs a few statements per row rather than
    /// six (a round trip each on PostgreSQL). An entry is dropped when the push writes its
    /// record, and a table's aliases and resolved parents when it writes that table's records
    /// or aliases, so each read sees what a fresh one would.
    read: ReadAhead,
}

/// Reads of one push, by table then id (looked up without building a key). See
/// [`Session::read`].
#[derive(Default)]
struct ReadAhead {
    /// Stored records, `None` for ids known to be absent; filled a table's batch at a time.
    records: ByTable<Option<Stored>>,
    /// Aliases (owner, canonical id), `None` for ids known not to be aliases.
    aliases: ByTable<Option<(String, String)>>,
    /// Resolved parents, by the id a child references.
    parents: ByTable<Parent>,
    /// Natural-key holders of the batch's keys, by table; see [`KeyHolders`].
    holders: HashMap<String, KeyHolders>,
    /// Statements run per row, built once per push by [`Session::statement`].
    statements: Vec<((&'static str, String, u64), String)>,
}

/// The records of one table holding the natural keys a batch names, read in a few statements
/// and kept current as the push writes that table, so that each row's natural-key check is
/// answered in memory. A key not here is looked up in the database.
#[derive(Default)]
struct KeyHolders {
    /// (key number, key values) -> the records holding it.
    keys: HashMap<(usize, String), Vec<String>>,
    /// The keys each known record holds now (`None` for a key holding a NULL); a record the push
    /// never saw is absent, and writing one drops the table's holders (they may be stale).
    held: HashMap<String, Vec<Option<String>>>,
}

/// The values of natural key `n` of `table` in `values`, as a map key; `None` if one is NULL
/// (such a key matches nothing).
fn key_text(table: &Table, n: usize, values: &[Value]) -> Option<String> {
    let mut out = String::new();
    for k in &table.natural_keys[n] {
        let v = &values[table.column_index(k)?];
        if v.is_null() {
            return None;
        }
        // Debug keeps the type apart: the text "1" is not the integer 1.
        out.push_str(&format!("{v:?}\u{1f}"));
    }
    Some(out)
}

fn all_keys(table: &Table, values: &[Value]) -> Vec<Option<String>> {
    (0..table.natural_keys.len())
        .map(|n| key_text(table, n, values))
        .collect()
}

impl KeyHolders {
    /// Record `id` now holds the keys of `values`. False if the holders may be stale (a
    /// record the push never saw moved): the caller drops them.
    fn write(&mut self, table: &Table, id: &str, values: &[Value]) -> bool {
        let Some(before) = self.held.get(id) else {
            return false;
        };
        for (n, k) in before.iter().enumerate() {
            if let Some(ids) = k.as_ref().and_then(|k| self.keys.get_mut(&(n, k.clone()))) {
                ids.retain(|h| h != id);
            }
        }
        let now = all_keys(table, values);
        for (n, k) in now.iter().enumerate() {
            if let Some(ids) = k.as_ref().and_then(|k| self.keys.get_mut(&(n, k.clone()))) {
                ids.push(id.to_owned());
            }
        }
        self.held.insert(id.to_owned(), now);
        true
    }
}

type ByTable<V> = HashMap<String, HashMap<String, V>>;

fn put<V>(m: &mut ByTable<V>, table: &str, id: String, v: V) {
    match m.get_mut(table) {
        Some(ids) => {
            ids.insert(id, v);
        }
        None => {
            m.insert(table.to_owned(), HashMap::from([(id, v)]));
        }
    }
}

impl ReadAhead {
    /// Forgets what was read of record `id` of `table` (and every parent of that table
    /// resolved, which may have gone through an alias of it): the push is about to change it.
    fn forget(&mut self, table: &str, id: &str) {
        if let Some(ids) = self.records.get_mut(table) {
            ids.remove(id);
        }
        self.parents.remove(table);
    }
}

/// Ids per read-ahead statement: well under SQLite's and PostgreSQL's parameter limits.
const READ_AHEAD_CHUNK: usize = 500;

/// The writes of one table for one client version, waiting to be sent.
struct Unsent {
    table: String,
    version: u32,
    /// Each record's parameters of [`upsert`], the account left out.
    rows: Vec<Vec<Value>>,
    ids: std::collections::HashSet<String>,
}

/// Parameters per multi-row upsert, under SQLite's (32,766) and PostgreSQL's (65,535) limits.
const UPSERT_PARAMS: usize = 30_000;
/// Rows per multi-row upsert at most. A batch is sent in chunks of powers of two, so that a
/// table has a handful of statement texts, each prepared once per connection.
const UPSERT_ROWS: usize = 512;

/// Natural keys per read-ahead statement (one branch of a UNION ALL each; SQLite allows 500).
/// The last statement of a batch repeats its last key up to this many, so that every statement
/// has one text, prepared once.
const KEY_READ_CHUNK: usize = 50;

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
    let mut s = Session {
        tx,
        schema: ctx.schema,
        user: &input.user_id,
        device: &input.device_id,
        version: input.client_version,
        server_device: ctx.server_device,
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

#[derive(Clone)]
enum Parent {
    Live(String),
    Tombstone(String, Timestamp),
    Missing,
}

impl<T: SyncTx> Session<'_, T> {
    fn next_seq(&mut self) -> i64 {
        self.seq += 1;
        self.seq
    }

    /// The stamp of a write the server derives itself: above its wall clock and every stamp
    /// involved.
    fn derived_stamp(&self, involved: &[Timestamp]) -> Timestamp {
        let top = involved.iter().copied().max().unwrap_or(Timestamp::MIN);
        std::cmp::max(Timestamp::now(), top.add_millis(1))
    }

    /// The SQL of a statement run per row, keyed by (what, table, variant), built by sea-query
    /// the first time. `params` are the values the caller binds, in order: the build must bind
    /// exactly as many.
    fn statement<S: sea_query::QueryStatementBuilder>(
        &mut self,
        key: (&'static str, &str, u64),
        params: &[Value],
        build: impl FnOnce() -> S,
    ) -> Result<String, DbError> {
        let (what, table, variant) = key;
        if let Some((_, sql)) = self
            .read
            .statements
            .iter()
            .find(|((w, t, v), _)| *w == what && *v == variant && t == table)
        {
            return Ok(sql.clone());
        }
        let (sql, built) = self.tx.build(&build());
        if built.len() != params.len() {
            return Err(DbError::Decode(format!(
                "the {what} statement of {table} binds {} values, not {}",
                built.len(),
                params.len()
            )));
        }
        self.read
            .statements
            .push(((what, table.to_owned(), variant), sql.clone()));
        Ok(sql)
    }

    /// Reads the aliases and stored records of `ids` of `table` in a few statements.
    async fn read_ahead(&mut self, table: &Table, ids: &[&str]) -> Result<(), DbError> {
        self.send().await?;
        for chunk in ids.chunks(READ_AHEAD_CHUNK) {
            let mut q = Query::select();
            q.columns(["alias_id", "user_id", "canonical_id"])
                .from("sync_aliases")
                .and_where(Expr::col("table_name").eq(table.name.as_str()))
                .and_where(Expr::col("alias_id").is_in(chunk.iter().copied()));
            let rows = self
                .tx
                .fetch(&q, &[ColumnType::Text, ColumnType::Text, ColumnType::Text])
                .await?;
            for id in chunk {
                put(&mut self.read.aliases, &table.name, (*id).to_owned(), None);
            }
            for r in rows {
                if let [Value::Text(a), Value::Text(u), Value::Text(c)] = &r[..] {
                    put(
                        &mut self.read.aliases,
                        &table.name,
                        a.clone(),
                        Some((u.clone(), c.clone())),
                    );
                }
            }
            let (names, types) = select_columns(table);
            let mut q = Query::select();
            q.columns(names)
                .from(table.name.clone())
                .and_where(Expr::col("remote_id").is_in(chunk.iter().copied()));
            let rows = self.tx.fetch(&q, &types).await?;
            for id in chunk {
                put(&mut self.read.records, &table.name, (*id).to_owned(), None);
            }
            for r in rows {
                let stored = decode(table, r)?;
                put(
                    &mut self.read.records,
                    &table.name,
                    stored.remote_id.clone(),
                    Some(stored),
                );
            }
        }
        Ok(())
    }

    /// Reads which records hold the natural keys of the batch `rows` of `table` (as sent:
    /// a key whose references the push reads through aliases is looked up when it is checked),
    /// after [`Session::read_ahead`] read the batch's own records.
    async fn read_natural_keys(&mut self, table: &Table, rows: &PushedRows) -> Result<(), DbError> {
        if table.natural_keys.is_empty() {
            return Ok(());
        }
        let mut holders = KeyHolders::default();
        // The batch's own records, as stored (absent ones hold no key).
        if let Some(records) = self.read.records.get(&table.name) {
            for (id, stored) in records {
                let keys = match stored {
                    Some(s) if s.user_id == self.user => all_keys(table, &s.values),
                    Some(_) => continue,
                    None => vec![None; table.natural_keys.len()],
                };
                holders.held.insert(id.clone(), keys);
            }
        }
        let key_columns: Vec<&String> = {
            let mut cols: Vec<&String> = Vec::new();
            for c in table.natural_keys.iter().flatten() {
                if !cols.contains(&c) {
                    cols.push(c);
                }
            }
            cols
        };
        let mut types = vec![ColumnType::Text];
        for c in &key_columns {
            let col = table
                .column(c)
                .ok_or_else(|| DbError::Decode(format!("{}: no column {c}", table.name)))?;
            types.push(server_ty(col));
        }
        for n in 0..table.natural_keys.len() {
            let mut wanted: Vec<(String, Vec<Value>)> = Vec::new();
            for row in rows.iter().filter_map(|r| r.as_ref().ok()) {
                let Some(k) = key_text(table, n, &row.values) else {
                    continue;
                };
                if holders.keys.contains_key(&(n, k.clone())) {
                    continue;
                }
                holders.keys.insert((n, k.clone()), Vec::new());
                let values = table.natural_keys[n]
                    .iter()
                    .map(|c| row.values[table.column_index(c).unwrap_or_default()].clone())
                    .collect();
                wanted.push((k, values));
            }
            for chunk in wanted.chunks(KEY_READ_CHUNK) {
                let mut params = Vec::new();
                for i in 0..KEY_READ_CHUNK {
                    let (_, values) = &chunk[i.min(chunk.len() - 1)];
                    params.push(Value::Text(self.user.to_owned()));
                    params.extend(values.iter().cloned());
                }
                let sql =
                    self.statement(("key holders", &table.name, n as u64), &params, || {
                        key_holders_lookup(table, n, &key_columns, &params)
                    })?;
                for r in self.tx.query(&sql, &params, &types).await? {
                    let mut it = r.into_iter();
                    let Some(Value::Text(id)) = it.next() else {
                        continue;
                    };
                    // The holder's values of every key column, in the table's column order.
                    let mut values = vec![Value::Null; table.columns.len()];
                    for (c, v) in key_columns.iter().zip(it) {
                        if let Some(i) = table.column_index(c) {
                            values[i] = v;
                        }
                    }
                    let keys = all_keys(table, &values);
                    for (m, k) in keys.iter().enumerate() {
                        if let Some(ids) = k
                            .as_ref()
                            .and_then(|k| holders.keys.get_mut(&(m, k.clone())))
                            && !ids.contains(&id)
                        {
                            ids.push(id.clone());
                        }
                    }
                    holders.held.insert(id, keys);
                }
            }
        }
        self.read.holders.insert(table.name.clone(), holders);
        Ok(())
    }

    /// The record `id` of `table`, whoever owns it. A record read ahead is handed over (a
    /// second read of it goes to the database).
    async fn load(&mut self, table: &Table, id: &str) -> Result<Option<Stored>, DbError> {
        match self
            .read
            .records
            .get_mut(&table.name)
            .and_then(|ids| ids.remove(id))
        {
            Some(known) => Ok(known),
            None => {
                self.send().await?;
                load(self.tx, table, id).await
            }
        }
    }

    async fn alias_of(
        &mut self,
        table: &str,
        id: &str,
    ) -> Result<Option<(String, String)>, DbError> {
        if let Some(known) = self.read.aliases.get(table).and_then(|ids| ids.get(id)) {
            return Ok(known.clone());
        }
        let mut q = Query::select();
        q.columns(["user_id", "canonical_id"])
            .from("sync_aliases")
            .and_where(Expr::col("table_name").eq(table))
            .and_where(Expr::col("alias_id").eq(id));
        let rows = self
            .tx
            .fetch(&q, &[ColumnType::Text, ColumnType::Text])
            .await?;
        Ok(rows.into_iter().next().and_then(|r| match (&r[0], &r[1]) {
            (Value::Text(u), Value::Text(c)) => Some((u.clone(), c.clone())),
            _ => None,
        }))
    }

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

    /// Writes `row` as the latest version of its record, with the next sequence. Only columns
    /// known to `version` are written over an existing row; the rest stay as stored.
    async fn store(
        &mut self,
        table: &Table,
        row: &mut Stored,
        version: u32,
    ) -> Result<(), ApiError> {
        row.seq = self.next_seq();
        self.read.forget(&table.name, &row.remote_id);
        if let Some(holders) = self.read.holders.get_mut(&table.name)
            && !holders.write(table, &row.remote_id, &row.values)
        {
            self.read.holders.remove(&table.name);
        }
        // The statement's parameters: the columns' values (the account of the conflict clause
        // is added when sent).
        let mut params: Vec<Value> = vec![
            Value::Text(row.remote_id.clone()),
            Value::Text(row.user_id.clone()),
            Value::Integer(row.seq),
            Value::Text(row.device_id.clone()),
            row.deleted_at.map_or(Value::Null, Value::DateTime),
        ];
        for (c, v) in table.columns.iter().zip(&row.values) {
            if c.on_wire() && c.since <= version {
                params.push(v.clone());
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

    /// Sends every write not sent yet. A record another account owns is left as it is and
    /// noted in [`Session::refused`], which fails the push.
    async fn send(&mut self) -> Result<(), DbError> {
        for unsent in std::mem::take(&mut self.unsent) {
            let table = self
                .schema
                .table(&unsent.table)
                .ok_or_else(|| DbError::Decode(format!("unknown table {}", unsent.table)))?;
            let width = unsent.rows.first().map_or(1, Vec::len);
            let most = (UPSERT_PARAMS / (width + 1)).min(UPSERT_ROWS);
            let mut rest = &unsent.rows[..];
            while !rest.is_empty() {
                // The largest power of two that fits.
                let n = 1usize << (rest.len().min(most).ilog2());
                let (chunk, after) = rest.split_at(n);
                rest = after;
                let mut params: Vec<Value> = chunk.iter().flatten().cloned().collect();
                params.push(Value::Text(self.user.to_owned()));
                let variant = (u64::from(unsent.version) << 32) | n as u64;
                let sql = self.statement(("upsert", &table.name, variant), &params, || {
                    upsert(table, chunk, &params[params.len() - 1], unsent.version)
                })?;
                let written = self.tx.query(&sql, &params, &[ColumnType::Text]).await?;
                if written.len() != chunk.len() {
                    let written: Vec<&str> = written
                        .iter()
                        .filter_map(|r| r.first().and_then(text))
                        .collect();
                    let refused = chunk
                        .iter()
                        .filter_map(|r| r.first().and_then(text))
                        .find(|id| !written.contains(id))
                        .unwrap_or_default();
                    self.refused.get_or_insert_with(|| {
                        format!("{} {refused} belongs to another account", table.name)
                    });
                }
            }
        }
        Ok(())
    }

    /// The id a reference to `id` of `table` is read as: its canonical id if it is an alias of
    /// this user's, itself otherwise; `None` if it is another user's alias.
    async fn canonical_id(&mut self, table: &str, id: &str) -> Result<Option<String>, DbError> {
        Ok(match self.alias_of(table, id).await? {
            Some((owner, c)) if owner == self.user => Some(c),
            Some(_) => None,
            None => Some(id.to_owned()),
        })
    }

    async fn resolve_parent(&mut self, r: &Reference, id: &str) -> Result<Parent, DbError> {
        if let Some(p) = self.read.parents.get(&r.table).and_then(|ids| ids.get(id)) {
            return Ok(p.clone());
        }
        let parent_table = self
            .schema
            .table(&r.table)
            .ok_or_else(|| DbError::Decode(format!("unknown parent table {}", r.table)))?;
        let Some(canonical) = self.canonical_id(&r.table, id).await? else {
            return Ok(Parent::Missing);
        };
        let parent = match self.load(parent_table, &canonical).await? {
            Some(p) if p.user_id == self.user => match p.deleted_at {
                Some(_) => Parent::Tombstone(canonical, p.updated_at),
                None => Parent::Live(canonical),
            },
            _ => Parent::Missing,
        };
        put(
            &mut self.read.parents,
            &r.table,
            id.to_owned(),
            parent.clone(),
        );
        Ok(parent)
    }

    /// The other records of this user whose natural key equals one of `values`' (tombstones
    /// included; a key holding a NULL matches nothing).
    async fn natural_key_matches(
        &mut self,
        table: &Table,
        values: &[Value],
        except: &str,
    ) -> Result<Vec<String>, DbError> {
        let mut found: Vec<String> = Vec::new();
        for (n, key) in table.natural_keys.iter().enumerate() {
            let mut params = vec![Value::Text(self.user.to_owned())];
            for k in key {
                params.push(values[table.column_index(k).unwrap_or_default()].clone());
            }
            if params.iter().any(Value::is_null) {
                continue;
            }
            let read = key_text(table, n, values).and_then(|k| {
                self.read
                    .holders
                    .get(&table.name)
                    .and_then(|h| h.keys.get(&(n, k)))
            });
            if let Some(ids) = read {
                for id in ids {
                    if id != except && !found.contains(id) {
                        found.push(id.clone());
                    }
                }
                continue;
            }
            self.send().await?;
            let sql = self.statement(("natural key", &table.name, n as u64), &params, || {
                natural_key_lookup(table, n, &params)
            })?;
            for r in self.tx.query(&sql, &params, &[ColumnType::Text]).await? {
                if let Some(id) = r
                    .first()
                    .and_then(text)
                    .filter(|id| *id != except && !found.iter().any(|f| f == id))
                {
                    found.push(id.to_owned());
                }
            }
        }
        Ok(found)
    }

    fn stored_from(&self, row: &WireRow, device: &str) -> Stored {
        Stored {
            remote_id: row.remote_id.clone(),
            user_id: self.user.to_owned(),
            seq: 0,
            device_id: device.to_owned(),
            deleted_at: row.deleted_at,
            updated_at: row.updated_at,
            values: row.values.clone(),
        }
    }

    async fn apply_push(&mut self, table: &Table, mut row: WireRow) -> Result<RowStatus, ApiError> {
        let sent = row.remote_id.clone();
        let forbidden =
            || ApiError::Forbidden(format!("{} {sent} belongs to another account", table.name));
        let mut merged = false;
        if let Some((owner, canonical)) = self.alias_of(&table.name, &row.remote_id).await? {
            if owner != self.user {
                return Err(forbidden());
            }
            row.remote_id = canonical;
            merged = true;
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

        // References: read aliases as their canonical ids, and check the parents are this
        // account's. A tombstone of a record never seen is stored without these checks.
        let mut orphaned_by = None;
        let mut nulled_by = None;
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
                    if let Some(s) = &stored {
                        row.values[i] = s.values[i].clone();
                    }
                }
                Parent::Missing => {
                    return Ok(RowStatus::Rejected(format!(
                        "column `{}` references a {} record this account does not have",
                        c.name, r.table
                    )));
                }
                Parent::Live(canonical) => {
                    if canonical != id {
                        merged = true;
                    }
                    row.values[i] = Value::Text(canonical);
                }
                Parent::Tombstone(canonical, at) => {
                    row.values[i] = Value::Text(canonical);
                    if !row.is_tombstone() {
                        match r.on_delete {
                            OnDelete::Cascade => orphaned_by = Some(at),
                            OnDelete::SetNull => {
                                row.values[i] = Value::Null;
                                nulled_by = Some(at);
                            }
                        }
                    }
                }
            }
        }

        let matches = self
            .natural_key_matches(table, &row.values, &row.remote_id)
            .await?;
        if matches.len() > 1 {
            return Ok(RowStatus::Rejected(format!(
                "its natural key matches two different {} records through two keys",
                table.name
            )));
        }
        if let Some(survivor) = matches.into_iter().next() {
            let mut incoming = self.stored_from(&row, self.device);
            if let Some(at) = orphaned_by {
                let t = self.derived_stamp(&[at, row.updated_at]);
                incoming.deleted_at = Some(t);
                incoming.set_stamp(table, t);
                incoming.device_id = self.server_device.to_owned();
            }
            let kept = self.merge_into(table, incoming, stored, &survivor).await?;
            return Ok(RowStatus::Merged(survivor, kept.map(Box::new)));
        }

        let incoming = self.stored_from(&row, self.device);
        let decision = decide_on_server(stored.as_ref().map(Stored::stamp), incoming.stamp());
        if let Some(parent_at) = orphaned_by.or(nulled_by) {
            // A live write under a deleted parent: the server derives what must be stored.
            if decision == ServerDecision::Stale {
                return Ok(RowStatus::Stale(Box::new(
                    stored.expect("stale implies stored"),
                )));
            }
            let mut derived = incoming;
            let t = self.derived_stamp(&[parent_at, row.updated_at]);
            derived.set_stamp(table, t);
            derived.device_id = self.server_device.to_owned();
            if orphaned_by.is_some() {
                derived.deleted_at = Some(t);
            }
            self.store(table, &mut derived, self.version).await?;
            return Ok(RowStatus::Stale(Box::new(derived)));
        }
        let now = match decision {
            ServerDecision::Insert | ServerDecision::Replace => {
                let was_live = stored.as_ref().is_some_and(|s| s.deleted_at.is_none());
                let mut incoming = incoming;
                self.store(table, &mut incoming, self.version).await?;
                if incoming.deleted_at.is_some() && was_live {
                    self.cascade(table, &incoming.remote_id, incoming.updated_at)
                        .await?;
                }
                Some(incoming)
            }
            ServerDecision::Repeat => stored,
            ServerDecision::Stale => {
                return Ok(RowStatus::Stale(Box::new(
                    stored.expect("stale implies stored"),
                )));
            }
        };
        Ok(if merged {
            // Stored under canonical ids where the row used aliases: the answer carries that
            // version, since the pushing device's own pulls leave it out (found by the
            // simulation, seed 1082: an item added under a list merged away meanwhile kept
            // the old list on its device).
            RowStatus::Merged(row.remote_id, now.map(Box::new))
        } else {
            RowStatus::Applied
        })
    }

    /// Merges `incoming` (whose record may exist as `own`) into the record `survivor` with the
    /// same natural key: its id becomes an alias, its own record a derived tombstone whose
    /// children move to the survivor, and the survivor takes its values if its stamp is greater.
    /// Returns the survivor's version when it kept it (the incoming write lost).
    async fn merge_into(
        &mut self,
        table: &Table,
        incoming: Stored,
        own: Option<Stored>,
        survivor: &str,
    ) -> Result<Option<Stored>, ApiError> {
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
                let mut merged = Stored {
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
    ) -> Result<Vec<Stored>, DbError> {
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
    async fn cascade(
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
fn free_taken_keys(table: &Table, own: &mut Stored, taking: &[Value]) -> bool {
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

/// The lookup of the records holding natural key `n` of `table`, with `params` the account
/// then the key's values. It names exactly the columns of the key's unique index (the record
/// being written is left out by the caller), so that no other index can serve it, whether or
/// not the database has statistics of the table: with a shorter index on the key's first
/// columns, PostgreSQL without statistics read every row of a profile per lookup.
pub fn natural_key_lookup(table: &Table, n: usize, params: &[Value]) -> sea_query::SelectStatement {
    let mut q = Query::select();
    q.column("remote_id")
        .from(table.name.clone())
        .and_where(Expr::col("user_id").eq(sea(&params[0])));
    for (k, v) in table.natural_keys[n].iter().zip(&params[1..]) {
        q.and_where(Expr::col(k.clone()).eq(sea(v)));
    }
    q
}

/// The records holding any of [`KEY_READ_CHUNK`] values of natural key `n` of `table`, with
/// the values of `key_columns` (every natural key's columns): one branch per key, each the
/// [`natural_key_lookup`] of that key, so each is served by the key's own index as a lone
/// lookup is (a join against a list of keys could be planned as a scan of the account).
fn key_holders_lookup(
    table: &Table,
    n: usize,
    key_columns: &[&String],
    params: &[Value],
) -> sea_query::SelectStatement {
    let width = 1 + table.natural_keys[n].len();
    let mut branches = params.chunks(width).map(|p| {
        let mut q = natural_key_lookup(table, n, p);
        q.columns(key_columns.iter().map(|c| c.to_string()));
        q
    });
    let mut q = branches.next().unwrap_or_else(Query::select);
    for b in branches {
        q.union(sea_query::UnionType::All, b);
    }
    q
}

/// The upsert of `rows` records of `table` for a client of `version`, each row's parameters
/// as [`Session::store`] lists them, then `user`, the account that must own them. It returns
/// the ids it wrote: a record of another account is left as it is.
fn upsert(
    table: &Table,
    rows: &[Vec<Value>],
    user: &Value,
    version: u32,
) -> sea_query::InsertStatement {
    let mut cols: Vec<String> = SERVER_COLUMNS.iter().map(|s| s.to_string()).collect();
    for c in &table.columns {
        if c.on_wire() && c.since <= version {
            cols.push(c.name.clone());
        }
    }
    let update: Vec<String> = cols
        .iter()
        .filter(|c| *c != "remote_id" && *c != "user_id")
        .cloned()
        .collect();
    let mut ins = Query::insert();
    ins.into_table(table.name.clone()).columns(cols);
    for row in rows {
        ins.values_panic(row.iter().map(|v| Expr::from(sea(v))));
    }
    ins.on_conflict(
        OnConflict::column("remote_id")
            .update_columns(update)
            // Never over another user's record.
            .action_and_where(Expr::col((table.name.clone(), "user_id".to_owned())).eq(sea(user)))
            .to_owned(),
    )
    .returning_col("remote_id");
    ins
}

/// A pull request after validation.
pub struct PullInput {
    pub user_id: String,
    /// Where the pull continues; `None` starts a full pull.
    pub from: Option<PullFrom>,
    pub limit: usize,
    pub exclude_device: Option<String>,
    /// Bytes a page's rows may hold (the first record is sent whatever its size).
    pub max_bytes: usize,
}

pub struct PullPage {
    pub changes: BTreeMap<String, Vec<Stored>>,
    /// Where the next pull continues: a full pull stays full until its last page.
    pub next: PullFrom,
    pub has_more: bool,
}

/// The user's sequence reached and purge watermark.
pub async fn user_sequence<T: SyncTx>(tx: &mut T, user: &str) -> Result<(i64, i64), DbError> {
    let mut q = Query::select();
    q.columns(["last_seq", "purged_seq"])
        .from("sync_users")
        .and_where(Expr::col("user_id").eq(user));
    match tx
        .fetch(&q, &[ColumnType::Integer, ColumnType::Integer])
        .await?
        .first()
        .map(|r| (&r[0], &r[1]))
    {
        Some((Value::Integer(a), Value::Integer(b))) => Ok((*a, *b)),
        _ => Ok((0, 0)),
    }
}

/// One page of changes, ordered by sequence, each record at most once in its latest state.
///
/// A full pull (no `from`, or a full cursor) returns every live record and the tombstones
/// written since it began, and never leaves out the caller's own writes: the caller removes,
/// at its end, the clean rows it did not return. An incremental pull returns every change
/// after its cursor, less the records whose latest version `exclude_device` wrote.
pub async fn pull<T: SyncTx>(
    tx: &mut T,
    schema: &Schema,
    input: &PullInput,
    last_seq: i64,
) -> Result<PullPage, DbError> {
    let (since, full_began) = match input.from {
        None => (0, Some(last_seq)),
        Some(PullFrom::Full { seq, began }) => (seq, Some(began)),
        Some(PullFrom::After(seq)) => (seq, None),
    };
    let byte_cut = page_byte_cutoff(tx, schema, input, since, full_began).await?;
    // The first `limit + 1` changes after `since` of each table, read once: the page ends at
    // the `limit`-th sequence across all tables, and every change up to it is among these.
    let mut read: Vec<(&Table, Vec<Stored>)> = Vec::new();
    let mut seqs: Vec<i64> = Vec::new();
    for table in schema.synced() {
        let (names, types) = select_columns(table);
        let mut q = Query::select();
        q.columns(names)
            .from(table.name.clone())
            .and_where(Expr::col("user_id").eq(input.user_id.as_str()))
            .and_where(Expr::col("seq").gt(since))
            .order_by("seq", Order::Asc)
            .limit(input.limit as u64 + 1);
        if let Some(began) = full_began {
            q.cond_where(full_pull_rows(began));
        }
        if let Some(cut) = byte_cut {
            q.and_where(Expr::col("seq").lte(cut));
        }
        let rows = tx
            .fetch(&q, &types)
            .await?
            .into_iter()
            .map(|r| decode(table, r))
            .collect::<Result<Vec<_>, _>>()?;
        seqs.extend(rows.iter().map(|r| r.seq));
        read.push((table, rows));
    }
    seqs.sort_unstable();
    let has_more = seqs.len() > input.limit || byte_cut.is_some();
    let cutoff = if seqs.len() > input.limit {
        seqs[input.limit - 1]
    } else if let Some(cut) = byte_cut {
        cut
    } else {
        std::cmp::max(last_seq, since)
    };
    let exclude = match full_began {
        Some(_) => None,
        None => input.exclude_device.as_deref(),
    };
    let mut changes = BTreeMap::new();
    for (table, mut rows) in read {
        rows.retain(|r| r.seq <= cutoff && exclude.is_none_or(|d| r.device_id != d));
        changes.insert(table.name.clone(), rows);
    }
    let next = match full_began {
        Some(began) if has_more => PullFrom::Full { seq: cutoff, began },
        _ => PullFrom::After(cutoff),
    };
    Ok(PullPage {
        changes,
        next,
        has_more,
    })
}

/// The rows a full pull that began at sequence `began` returns: tombstones written before it
/// began concern nothing the caller keeps; later ones delete records an earlier page may have
/// delivered live.
fn full_pull_rows(began: i64) -> Cond {
    Cond::any()
        .add(Expr::col("deleted_at").is_null())
        .add(Expr::col("seq").gt(began))
}

/// Bytes counted for a row beside its text and JSON values: its ids, stamps and other columns.
const ROW_OVERHEAD_BYTES: i64 = 256;

/// The last sequence of a page that stops before `input.max_bytes` (at least one record), or
/// `None` when the page's rows fit. Sizes are read without the values, so a page of huge
/// records is never read whole into memory.
async fn page_byte_cutoff<T: SyncTx>(
    tx: &mut T,
    schema: &Schema,
    input: &PullInput,
    since: i64,
    full_began: Option<i64>,
) -> Result<Option<i64>, DbError> {
    let mut sizes: Vec<(i64, i64)> = Vec::new();
    for table in schema.synced() {
        let size = table
            .columns
            .iter()
            .filter(|c| {
                c.on_wire()
                    && (c.reference.is_some()
                        || matches!(c.ty, ColumnType::Text | ColumnType::Json))
            })
            .map(|c| format!("COALESCE(octet_length(\"{}\"), 0)", c.name))
            .chain(std::iter::once(ROW_OVERHEAD_BYTES.to_string()))
            .collect::<Vec<_>>()
            .join(" + ");
        // BIGINT on both backends (PostgreSQL's octet_length is a 4-byte integer).
        let size = format!("CAST({size} AS BIGINT)");
        let mut q = Query::select();
        q.column("seq")
            .expr(Expr::cust(size))
            .from(table.name.clone())
            .and_where(Expr::col("user_id").eq(input.user_id.as_str()))
            .and_where(Expr::col("seq").gt(since))
            .order_by("seq", Order::Asc)
            .limit(input.limit as u64 + 1);
        if let Some(began) = full_began {
            q.cond_where(full_pull_rows(began));
        }
        for r in tx
            .fetch(&q, &[ColumnType::Integer, ColumnType::Integer])
            .await?
        {
            if let [Value::Integer(seq), Value::Integer(bytes)] = &r[..] {
                sizes.push((*seq, *bytes));
            }
        }
    }
    sizes.sort_unstable();
    let mut total = 0i64;
    for (i, (_, bytes)) in sizes.iter().enumerate() {
        total = total.saturating_add(*bytes);
        if total > input.max_bytes as i64 && i > 0 {
            return Ok(Some(sizes[i - 1].0));
        }
    }
    Ok(None)
}

/// Purges tombstones deleted before `before`, raising each user's purge watermark to the
/// highest sequence it removed. Returns the number of rows removed.
pub async fn purge<T: SyncTx>(
    tx: &mut T,
    schema: &Schema,
    before: Timestamp,
) -> Result<u64, DbError> {
    let cutoff = before.to_wire();
    let mut removed = 0;
    for table in schema.synced() {
        let mut q = Query::select();
        q.column("user_id")
            .expr(Expr::col("seq").max())
            .from(table.name.clone())
            .and_where(Expr::col("deleted_at").is_not_null())
            .and_where(Expr::col("deleted_at").lt(cutoff.as_str()))
            .group_by_col("user_id");
        for r in tx
            .fetch(&q, &[ColumnType::Text, ColumnType::Integer])
            .await?
        {
            if let (Value::Text(user), Value::Integer(max)) = (&r[0], &r[1]) {
                let mut up = Query::update();
                up.table("sync_users")
                    .value("purged_seq", *max)
                    .and_where(Expr::col("user_id").eq(user.as_str()))
                    .and_where(Expr::col("purged_seq").lt(*max));
                tx.run(&up).await?;
            }
        }
        let mut del = Query::delete();
        del.from_table(table.name.clone())
            .and_where(Expr::col("deleted_at").is_not_null())
            .and_where(Expr::col("deleted_at").lt(cutoff.as_str()));
        removed += tx.run(&del).await?;
    }
    Ok(removed)
}

impl Stored {
    /// The record as the JSON row of docs/PROTOCOL.md for a client of `version`, serialized in
    /// place.
    pub fn json<'a>(
        &'a self,
        table: &'a Table,
        version: u32,
    ) -> crate::protocol::wire::RowJson<'a> {
        crate::protocol::wire::RowJson {
            table,
            version,
            remote_id: &self.remote_id,
            updated_at: self.updated_at,
            device_id: Some(&self.device_id),
            deleted_at: self.deleted_at,
            values: &self.values,
        }
    }
}

/// A stored record as the JSON row of docs/PROTOCOL.md for a client of `version`.
pub fn row_json(table: &Table, row: &Stored, version: u32) -> Map<String, Json> {
    crate::protocol::wire::row_map(&row.json(table, version))
}
