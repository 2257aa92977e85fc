//! The record as the server stores it, and its codec: the columns a read selects, a stored row
//! decoded, a value bound to a statement, the record as a JSON row.

use crate::ddl::SERVER_COLUMNS;
use crate::merge::Stamp;
use crate::schema::{Column, ColumnType, Table, UPDATED_AT};
use crate::server::db::{DbError, SyncTx};
use crate::timestamp::Timestamp;
use crate::value::Value;
use sea_query::{Expr, ExprTrait, Query};
use serde_json::{Map, Value as Json};

/// A record as the server stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
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

impl Record {
    pub(super) fn stamp(&self) -> Stamp<'_> {
        Stamp::new(self.updated_at, &self.device_id)
    }

    pub(super) fn set(&mut self, table: &Table, column: &str, v: Value) {
        if let Some(i) = table.column_index(column) {
            self.values[i] = v;
        }
    }

    pub(super) fn set_stamp(&mut self, table: &Table, t: Timestamp) {
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
        Value::Json(j) => S::String(Some(j.as_str().to_owned())),
    }
}

pub(super) fn text(v: &Value) -> Option<&str> {
    match v {
        Value::Text(s) => Some(s),
        _ => None,
    }
}

/// The type a column has on the server (references are text).
pub(super) fn server_ty(c: &Column) -> ColumnType {
    if c.reference.is_some() {
        ColumnType::Text
    } else {
        c.ty
    }
}

/// Every column of `table` as the server stores it, with its type: what this build reads.
pub(crate) fn select_columns(table: &Table) -> (Vec<String>, Vec<ColumnType>) {
    written_columns(table, u32::MAX)
}

/// The columns an upsert leaves as stored when the record exists: its id, and the account that
/// owns it (the upsert writes nothing over another account's record).
pub(super) const KEPT_ON_CONFLICT: [&str; 2] = ["remote_id", "user_id"];

/// The columns a peer of `version` writes (the server's, then the app's it knows), with their
/// types on the server: the columns of an upsert, in the order of its values.
pub(super) fn written_columns(table: &Table, version: u32) -> (Vec<String>, Vec<ColumnType>) {
    let mut names: Vec<String> = SERVER_COLUMNS.iter().map(|s| s.to_string()).collect();
    let mut types = vec![
        ColumnType::Text,
        ColumnType::Text,
        ColumnType::Integer,
        ColumnType::Text,
        ColumnType::DateTime,
    ];
    for c in table
        .columns
        .iter()
        .filter(|c| c.on_wire() && c.since <= version)
    {
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

pub(super) fn decode(table: &Table, row: Vec<Value>) -> Result<Record, DbError> {
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
    Ok(Record {
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
) -> Result<Option<Record>, DbError> {
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

impl Record {
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
            sent: None,
            field_stamps: &[],
        }
    }
}

/// A stored record as the JSON row of docs/PROTOCOL.md for a client of `version`.
pub fn row_json(table: &Table, row: &Record, version: u32) -> Map<String, Json> {
    crate::protocol::wire::row_map(&row.json(table, version))
}
