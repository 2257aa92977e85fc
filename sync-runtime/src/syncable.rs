//! The trait `#[derive(Syncable)]` implements.

use crate::schema::Table;
use crate::value::{Value, ValueError};

/// An entity whose table is synchronized (or, with `#[sync(local_only)]`, a device-only table
/// that synced entities reference by natural key).
///
/// Implement it with `#[derive(Syncable)]`; the generated code describes the table as data and
/// converts the struct to and from column values, and the runtime does the rest generically.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a Syncable entity",
    label = "this type has no `#[derive(Syncable)]`",
    note = "a `#[sync(references = ...)]` must name a struct that derives `Syncable`"
)]
pub trait Syncable: Sized + 'static {
    /// The table's name; a constant so that tables may reference each other (and themselves).
    const TABLE_NAME: &'static str;

    /// The table described as data.
    fn table() -> &'static Table;

    /// The local primary key, `None` before the row is first stored.
    fn local_id(&self) -> Option<i64>;

    fn set_local_id(&mut self, id: i64);

    /// The app columns, in the order of [`Table::columns`].
    fn to_values(&self) -> Vec<Value>;

    /// Builds the struct from its local id and app column values in table order.
    fn from_values(id: i64, values: Vec<Value>) -> Result<Self, ValueError>;
}

/// The field types a local primary key may have: `i64` (0 until stored) or `Option<i64>`.
pub trait LocalId {
    fn get(&self) -> Option<i64>;
    fn set(&mut self, id: i64);
    fn from_id(id: i64) -> Self;
}

impl LocalId for i64 {
    fn get(&self) -> Option<i64> {
        (*self != 0).then_some(*self)
    }
    fn set(&mut self, id: i64) {
        *self = id;
    }
    fn from_id(id: i64) -> Self {
        id
    }
}

impl LocalId for Option<i64> {
    fn get(&self) -> Option<i64> {
        *self
    }
    fn set(&mut self, id: i64) {
        *self = Some(id);
    }
    fn from_id(id: i64) -> Self {
        Some(id)
    }
}

/// Takes the next value of a row being decoded, naming the column if the row is short.
pub fn next_value(
    values: &mut std::vec::IntoIter<Value>,
    column: &str,
) -> Result<Value, ValueError> {
    values
        .next()
        .ok_or_else(|| ValueError(format!("row has no value for column `{column}`")))
}

/// Wraps a field's decode error with its column name.
pub fn in_column<T>(r: Result<T, ValueError>, column: &str) -> Result<T, ValueError> {
    r.map_err(|e| ValueError(format!("column `{column}`: {}", e.0)))
}
