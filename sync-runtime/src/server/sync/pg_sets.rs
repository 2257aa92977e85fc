//! Set-based statements on PostgreSQL: a batch travels as a few parameters, whatever its size.
//!
//! The holders of a batch's natural keys are read in one statement per table and key: the keys
//! travel as one JSON document, unpacked by `json_to_recordset`. SQLite runs a UNION ALL of
//! single-key lookups, which costs it nothing to plan. PostgreSQL plans each anew: fifty
//! branches per fifty keys, twenty times per 1,000-row push, took a second per 100,000 rows
//! pushed (`cargo xtask bench --only upload`: the upload went from 6.1 s to 4.9 s).
//!
//! The lookup of each key sits in a `LATERAL` subquery that cannot be flattened (`OFFSET 0`), so
//! PostgreSQL runs it per key, as the lone [`super::natural_key_lookup`] it is, whatever its
//! statistics say; a join against the list could be planned as a scan of the whole account.
//!
//! The batch's writes are one upsert per table whose columns travel as typed arrays, unpacked
//! by `UNNEST`. Against the multi-row `VALUES` upsert of 512 rows (8,700 parameters, a statement
//! text per chunk size) it takes a tenth less of PostgreSQL's CPU and as long on the clock,
//! within the run's noise (docs/performance.md). The same from a JSON document
//! (`json_to_recordset`) was slower than either: 6.6 s against 4.9 s.

use crate::ddl::{Dialect, quote_ident, server_type};
use crate::schema::{ColumnType, Table};
use crate::server::sync::record::{KEPT_ON_CONFLICT, server_ty, written_columns};
use crate::value::Value;
use serde_json::{Map, Value as Json};

/// Keys per statement: a push holds at most a few thousand rows, and a bounded document keeps
/// each statement's work bounded too.
pub(super) const KEYS_PER_STATEMENT: usize = 1_000;

/// The lookup of the records of the account `$1` holding any key of natural key `n` of `table`
/// listed in the JSON document `$2` (see [`keys_document`]); it returns each holder's id and
/// the values of `key_columns`.
pub fn key_set_lookup(table: &Table, n: usize, key_columns: &[&String]) -> String {
    let key = &table.natural_keys[n];
    let record_type: Vec<String> = key
        .iter()
        .map(|c| {
            let ty = table.column(c).map_or(ColumnType::Text, server_ty);
            format!("{} {}", quote_ident(c), pg_type(ty))
        })
        .collect();
    let matches: Vec<String> = key
        .iter()
        .map(|c| format!("t.{0} = k.{0}", quote_ident(c)))
        .collect();
    let selected: Vec<String> = std::iter::once("remote_id")
        .chain(key_columns.iter().map(|c| c.as_str()))
        .map(|c| format!("t.{}", quote_ident(c)))
        .collect();
    format!(
        "SELECT h.* FROM json_to_recordset(($2::text)::json) AS k({record_type}) \
         CROSS JOIN LATERAL (SELECT {selected} FROM {table} AS t \
         WHERE t.\"user_id\" = $1 AND {matches} OFFSET 0) AS h",
        record_type = record_type.join(", "),
        selected = selected.join(", "),
        table = quote_ident(&table.name),
        matches = matches.join(" AND "),
    )
}

/// The upsert of a batch of `table`'s records from a peer of `version`: each column's values
/// travel as one array (bound by [`SyncTx::query_columns`]), unpacked by `UNNEST`; the account
/// is the last parameter, and a record it does not own is left as it is. Returns the ids
/// written.
///
/// [`SyncTx::query_columns`]: crate::server::db::SyncTx::query_columns
pub fn upsert_columns(table: &Table, version: u32) -> String {
    let (columns, types) = written_columns(table, version);
    let names: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
    let arrays: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, ty)| format!("${}::{}[]", i + 1, pg_type(*ty)))
        .collect();
    let updates: Vec<String> = columns
        .iter()
        .filter(|c| !KEPT_ON_CONFLICT.contains(&c.as_str()))
        .map(|c| format!("{0} = excluded.{0}", quote_ident(c)))
        .collect();
    let table_name = quote_ident(&table.name);
    format!(
        "INSERT INTO {table_name} ({names}) SELECT * FROM UNNEST({arrays}) \
         ON CONFLICT (\"remote_id\") DO UPDATE SET {updates} \
         WHERE {table_name}.\"user_id\" = ${account} RETURNING \"remote_id\"",
        names = names.join(", "),
        arrays = arrays.join(", "),
        updates = updates.join(", "),
        account = columns.len() + 1,
    )
}

/// The type a column has in the server's PostgreSQL tables, as their migrations declare it.
fn pg_type(ty: ColumnType) -> &'static str {
    server_type(ty, Dialect::Postgres)
}

/// The keys `keys` (each the values of natural key `n`'s columns, in order) as the JSON
/// document [`key_set_lookup`] reads: an array of objects by column name, each value as the
/// column stores it.
pub fn keys_document<'a>(
    table: &Table,
    n: usize,
    keys: impl Iterator<Item = &'a [Value]>,
) -> String {
    let columns = &table.natural_keys[n];
    let rows: Vec<Json> = keys
        .map(|values| {
            let object: Map<String, Json> = columns
                .iter()
                .zip(values)
                .map(|(c, v)| (c.clone(), stored_json(v)))
                .collect();
            Json::Object(object)
        })
        .collect();
    Json::Array(rows).to_string()
}

fn stored_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Integer(i) => Json::from(*i),
        Value::Real(f) => Json::from(*f),
        Value::Boolean(b) => Json::Bool(*b),
        Value::Text(s) => Json::String(s.clone()),
        Value::DateTime(t) => Json::String(t.to_wire()),
        Value::Json(j) => Json::String(j.as_str().to_owned()),
    }
}
