//! What a push reads, read ahead: a table's batch of records and aliases in a few statements,
//! the holders of the batch's natural keys, resolved parents, and the per-row statements built
//! once. The lookups of one row go through here, to memory when the answer was read ahead and to
//! the database otherwise.

use super::pg_sets::{KEYS_PER_STATEMENT, key_set_lookup, keys_document};
use super::push::{PushSession, PushedRows};
use super::record::{Record, decode, load, sea, select_columns, server_ty, text};
use crate::ddl::Dialect;
use crate::schema::{ColumnType, Reference, Table};
use crate::server::db::{DbError, SyncTx};
use crate::timestamp::Timestamp;
use crate::value::Value;
use sea_query::{Expr, ExprTrait, Query};
use std::collections::HashMap;
use std::sync::Arc;

/// Reads of one push, by table then id (looked up without building a key). See
/// [`PushSession::read`].
#[derive(Default)]
pub(super) struct ReadAhead {
    /// Record records, `None` for ids known to be absent; filled a table's batch at a time.
    records: ByTable<Option<Record>>,
    /// Aliases (owner, canonical id), `None` for ids known not to be aliases.
    pub(super) aliases: ByTable<Option<(String, String)>>,
    /// Resolved parents, by the id a child references.
    pub(super) parents: ByTable<Parent>,
    /// Natural-key holders of the batch's keys, by table; see [`KeyHolders`].
    pub(super) holders: HashMap<String, KeyHolders>,
}

/// The records of one table holding the natural keys a batch names, read in a few statements
/// and kept current as the push writes that table, so that each row's natural-key check is
/// answered in memory. A key not here is looked up in the database.
pub(super) struct KeyHolders {
    /// Per key number, the key's values -> the records holding it.
    keys: Vec<HashMap<String, Vec<String>>>,
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
        push_key_part(&mut out, v);
    }
    Some(out)
}

/// Appends one value of a key: a letter keeps the types apart (the text "1" is not the integer
/// 1), and a text carries its length, so that no two lists of values write the same key.
/// Written out rather than through `Debug`: every pushed row of a table with natural keys
/// makes its keys a few times, and formatting them was a tenth of a push.
fn push_key_part(out: &mut String, v: &Value) {
    use std::fmt::Write;
    // Writing to a String cannot fail.
    let _ = match v {
        Value::Null => write!(out, "N;"),
        Value::Integer(i) => write!(out, "I{i};"),
        Value::Real(f) => write!(out, "R{f:?};"),
        Value::Boolean(b) => write!(out, "B{};", u8::from(*b)),
        Value::DateTime(t) => write!(out, "D{};", t.as_millis()),
        Value::Text(s) => {
            let _ = write!(out, "T{}:", s.len());
            out.push_str(s);
            Ok(())
        }
        Value::Json(j) => {
            let text = j.as_str();
            write!(out, "J{}:{text}", text.len())
        }
    };
}

fn all_keys(table: &Table, values: &[Value]) -> Vec<Option<String>> {
    (0..table.natural_keys.len())
        .map(|n| key_text(table, n, values))
        .collect()
}

/// Every natural key's columns of `table`, each once, and the types a
/// [`key_holders_lookup`] of them reads: the id, then those columns.
fn key_columns(table: &Table) -> Result<(Vec<&String>, Vec<ColumnType>), DbError> {
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
    Ok((key_columns, types))
}

impl KeyHolders {
    /// Record `id` now holds the keys of `values`. False if the holders may be stale (a
    /// record the push never saw moved): the caller drops them.
    pub(super) fn write(&mut self, table: &Table, id: &str, values: &[Value]) -> bool {
        let Some(before) = self.held.get(id) else {
            return false;
        };
        for (n, k) in before.iter().enumerate() {
            if let Some(ids) = k.as_ref().and_then(|k| self.keys[n].get_mut(k)) {
                ids.retain(|h| h != id);
            }
        }
        let now = all_keys(table, values);
        for (n, k) in now.iter().enumerate() {
            if let Some(ids) = k.as_ref().and_then(|k| self.keys[n].get_mut(k)) {
                ids.push(id.to_owned());
            }
        }
        self.held.insert(id.to_owned(), now);
        true
    }

    /// Notes a record read by [`key_holders_lookup`], `row` its id then the values of
    /// `key_columns`: it holds each of its keys the batch names.
    fn hold(&mut self, table: &Table, key_columns: &[&String], row: Vec<Value>) {
        let mut it = row.into_iter();
        let Some(Value::Text(id)) = it.next() else {
            return;
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
            if let Some(ids) = k.as_ref().and_then(|k| self.keys[m].get_mut(k))
                && !ids.contains(&id)
            {
                ids.push(id.clone());
            }
        }
        self.held.insert(id, keys);
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
    pub(super) fn forget(&mut self, table: &str, id: &str) {
        if let Some(ids) = self.records.get_mut(table) {
            ids.remove(id);
        }
        self.parents.remove(table);
    }
}

/// Ids per read-ahead statement: well under SQLite's and PostgreSQL's parameter limits.
const READ_AHEAD_CHUNK: usize = 500;

/// Natural keys per read-ahead statement (one branch of a UNION ALL each; SQLite allows 500).
/// The last statement of a batch repeats its last key up to this many, so that every statement
/// has one text, prepared once.
const KEY_READ_CHUNK: usize = 50;

#[derive(Clone)]
pub(super) enum Parent {
    Live(String),
    Tombstone(String, Timestamp),
    Missing,
}

impl<T: SyncTx> PushSession<'_, T> {
    /// The SQL of a statement a push runs, keyed by (what, table, variant), built by sea-query
    /// the first time the server runs it (see [`super::statements`]). `params` are the values the
    /// caller binds, in order: the build must bind exactly as many.
    pub(super) fn statement<S: sea_query::QueryStatementBuilder>(
        &mut self,
        key: (&'static str, &str, u64),
        params: &[Value],
        build: impl FnOnce() -> S,
    ) -> Result<Arc<str>, DbError> {
        let (what, table, variant) = key;
        let tx = &*self.tx;
        self.statements.get_or_build(key, || {
            let (sql, built) = tx.build(&build());
            if built.len() != params.len() {
                return Err(DbError::Decode(format!(
                    "the {what} statement of {table} (variant {variant}) binds {} values, not {}",
                    built.len(),
                    params.len()
                )));
            }
            Ok(sql)
        })
    }

    /// Reads the aliases and stored records of `ids` of `table` in a few statements.
    pub(super) async fn read_ahead(&mut self, table: &Table, ids: &[&str]) -> Result<(), DbError> {
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
    /// after [`PushSession::read_ahead`] read the batch's own records.
    pub(super) async fn read_natural_keys(
        &mut self,
        table: &Table,
        rows: &PushedRows,
    ) -> Result<(), DbError> {
        if table.natural_keys.is_empty() {
            return Ok(());
        }
        let mut holders = KeyHolders {
            keys: vec![HashMap::new(); table.natural_keys.len()],
            held: HashMap::new(),
        };
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
        let (key_columns, types) = key_columns(table)?;
        for n in 0..table.natural_keys.len() {
            let mut wanted: Vec<(String, Vec<Value>)> = Vec::new();
            for row in rows.iter().filter_map(|r| r.as_ref().ok()) {
                let Some(k) = key_text(table, n, &row.values) else {
                    continue;
                };
                if holders.keys[n].contains_key(&k) {
                    continue;
                }
                holders.keys[n].insert(k.clone(), Vec::new());
                let values = table.natural_keys[n]
                    .iter()
                    .map(|c| row.values[table.column_index(c).unwrap_or_default()].clone())
                    .collect();
                wanted.push((k, values));
            }
            if self.tx.dialect() == Dialect::Postgres {
                for chunk in wanted.chunks(KEYS_PER_STATEMENT) {
                    let document = keys_document(table, n, chunk.iter().map(|(_, v)| &v[..]));
                    let params = [Value::Text(self.user.to_owned()), Value::Text(document)];
                    let sql = self
                        .statements
                        .get_or_build(("key set holders", &table.name, n as u64), || {
                            Ok(key_set_lookup(table, n, &key_columns))
                        })?;
                    for r in self.tx.query(&sql, &params, &types).await? {
                        holders.hold(table, &key_columns, r);
                    }
                }
                continue;
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
                    holders.hold(table, &key_columns, r);
                }
            }
        }
        self.read.holders.insert(table.name.clone(), holders);
        Ok(())
    }

    /// The record `id` of `table`, whoever owns it. A record read ahead is handed over (a
    /// second read of it goes to the database).
    pub(super) async fn load(
        &mut self,
        table: &Table,
        id: &str,
    ) -> Result<Option<Record>, DbError> {
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

    pub(super) async fn alias_of(
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

    /// The id a reference to `id` of `table` is read as: its canonical id if it is an alias of
    /// this user's, itself otherwise; `None` if it is another user's alias.
    pub(super) async fn canonical_id(
        &mut self,
        table: &str,
        id: &str,
    ) -> Result<Option<String>, DbError> {
        Ok(match self.alias_of(table, id).await? {
            Some((owner, c)) if owner == self.user => Some(c),
            Some(_) => None,
            None => Some(id.to_owned()),
        })
    }

    pub(super) async fn resolve_parent(
        &mut self,
        r: &Reference,
        id: &str,
    ) -> Result<Parent, DbError> {
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
    pub(super) async fn natural_key_matches(
        &mut self,
        table: &Table,
        values: &[Value],
        except: &str,
    ) -> Result<Vec<String>, DbError> {
        let mut found: Vec<String> = Vec::new();
        for n in 0..table.natural_keys.len() {
            for id in self.key_holders(table, n, values, except).await? {
                if !found.contains(&id) {
                    found.push(id);
                }
            }
        }
        Ok(found)
    }

    /// The other records of this user holding natural key `n` of `values` (none when the key
    /// holds a NULL).
    pub(super) async fn key_holders(
        &mut self,
        table: &Table,
        n: usize,
        values: &[Value],
        except: &str,
    ) -> Result<Vec<String>, DbError> {
        let mut params = vec![Value::Text(self.user.to_owned())];
        for k in &table.natural_keys[n] {
            params.push(values[table.column_index(k).unwrap_or_default()].clone());
        }
        if params.iter().any(Value::is_null) {
            return Ok(Vec::new());
        }
        let read = key_text(table, n, values).and_then(|k| {
            self.read
                .holders
                .get(&table.name)
                .and_then(|h| h.keys[n].get(&k))
        });
        if let Some(ids) = read {
            return Ok(ids.iter().filter(|id| *id != except).cloned().collect());
        }
        self.send().await?;
        let sql = self.statement(("natural key", &table.name, n as u64), &params, || {
            natural_key_lookup(table, n, &params)
        })?;
        Ok(self
            .tx
            .query(&sql, &params, &[ColumnType::Text])
            .await?
            .iter()
            .filter_map(|r| r.first().and_then(text))
            .filter(|id| *id != except)
            .map(str::to_owned)
            .collect())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(values: &[Value]) -> String {
        let mut out = String::new();
        for v in values {
            push_key_part(&mut out, v);
        }
        out
    }

    #[test]
    fn keys_of_different_values_differ() {
        let t = |s: &str| Value::Text(s.to_owned());
        let distinct = [
            key(&[t("1")]),
            key(&[Value::Integer(1)]),
            key(&[Value::Real(1.0)]),
            key(&[Value::Boolean(true)]),
            key(&[t("ab"), t("c")]),
            key(&[t("a"), t("bc")]),
            key(&[t("a;T1:b")]),
            key(&[t("a"), t("b")]),
            key(&[Value::DateTime(Timestamp::from_millis(1))]),
            key(&[Value::json(&serde_json::json!({"a": 1}))]),
            key(&[Value::json(&serde_json::json!("a"))]),
        ];
        for (i, a) in distinct.iter().enumerate() {
            for b in &distinct[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(
            key(&[t("a"), Value::Integer(7)]),
            key(&[t("a"), Value::Integer(7)])
        );
    }
}
