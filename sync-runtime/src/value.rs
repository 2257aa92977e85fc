//! Column values: what a field of an entity becomes in SQL and on the wire.

use crate::schema::ColumnType;
use crate::timestamp::Timestamp;

/// One column's value, typed by its column.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Boolean(bool),
    DateTime(Timestamp),
    Json(serde_json::Value),
}

/// A value that does not fit its field or column.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

impl ValueError {
    pub fn mismatch(expected: &str, got: &Value) -> Self {
        ValueError(format!("expected {expected}, found {}", got.kind()))
    }
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A short name of the variant, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Integer(_) => "an integer",
            Value::Real(_) => "a real",
            Value::Text(_) => "text",
            Value::Boolean(_) => "a boolean",
            Value::DateTime(_) => "a timestamp",
            Value::Json(_) => "a JSON value",
        }
    }

    /// Reads a column of SQLite storage as `ty`.
    pub fn from_sqlite(
        ty: ColumnType,
        v: rusqlite::types::ValueRef<'_>,
    ) -> Result<Value, ValueError> {
        use rusqlite::types::ValueRef as R;
        Ok(match (ty, v) {
            (_, R::Null) => Value::Null,
            (ColumnType::Integer, R::Integer(i)) => Value::Integer(i),
            (ColumnType::Real, R::Real(f)) => Value::Real(f),
            (ColumnType::Real, R::Integer(i)) => Value::Real(i as f64),
            (ColumnType::Boolean, R::Integer(i)) => Value::Boolean(i != 0),
            (ColumnType::Text, R::Text(t)) => Value::Text(utf8(t)?.to_owned()),
            (ColumnType::DateTime, R::Text(t)) => Value::DateTime(
                Timestamp::parse_lenient(utf8(t)?).map_err(|e| ValueError(e.to_string()))?,
            ),
            (ColumnType::Json, R::Text(t)) => Value::Json(
                serde_json::from_slice(t)
                    .map_err(|e| ValueError(format!("stored JSON is invalid: {e}")))?,
            ),
            (ty, other) => {
                return Err(ValueError(format!(
                    "a {ty:?} column holds {:?}",
                    other.data_type()
                )));
            }
        })
    }
}

fn utf8(b: &[u8]) -> Result<&str, ValueError> {
    std::str::from_utf8(b).map_err(|_| ValueError("stored text is not UTF-8".into()))
}

/// A JSON document as the text stored for it. Through `serde_json::to_string`, which writes
/// bytes straight into one buffer; `Display` goes through the formatter a token at a time, and
/// was an eighth of storing a pulled page.
pub fn json_text(j: &serde_json::Value) -> String {
    // Serializing a `serde_json::Value` cannot fail: its map keys are strings.
    serde_json::to_string(j).unwrap_or_default()
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value as V, ValueRef};
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Integer(i) => ToSqlOutput::Owned(V::Integer(*i)),
            Value::Real(f) => ToSqlOutput::Owned(V::Real(*f)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Boolean(b) => ToSqlOutput::Owned(V::Integer(i64::from(*b))),
            Value::DateTime(t) => ToSqlOutput::Owned(V::Text(t.to_wire())),
            Value::Json(j) => ToSqlOutput::Owned(V::Text(json_text(j))),
        })
    }
}

/// A Rust type an entity field may have: what column it makes and how it converts.
///
/// Implemented for `String`, `i64`, `i32`, `u32`, `f64`, `bool`, [`Timestamp`],
/// `serde_json::Value`, and `Option` of each (a nullable column). Any other serde type can be
/// stored as JSON with `#[sync(json)]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a type a Syncable field can have",
    label = "unsupported field type",
    note = "use String, i64, i32, u32, f64, bool, sync_runtime::Timestamp, serde_json::Value, or an Option of one of them",
    note = "for any other serde type, write `#[sync(json)]` on the field to store it as a JSON document"
)]
pub trait FieldType: Sized {
    const TYPE: ColumnType;
    const NULLABLE: bool = false;
    fn to_value(&self) -> Value;
    fn from_value(v: Value) -> Result<Self, ValueError>;
}

macro_rules! int_field {
    ($($t:ty),*) => {$(
        impl FieldType for $t {
            const TYPE: ColumnType = ColumnType::Integer;
            fn to_value(&self) -> Value {
                Value::Integer(i64::from(*self))
            }
            fn from_value(v: Value) -> Result<Self, ValueError> {
                match v {
                    Value::Integer(i) => <$t>::try_from(i)
                        .map_err(|_| ValueError(format!("{i} does not fit in {}", stringify!($t)))),
                    other => Err(ValueError::mismatch("an integer", &other)),
                }
            }
        }
    )*};
}
int_field!(i64, i32, u32);

impl FieldType for f64 {
    const TYPE: ColumnType = ColumnType::Real;
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
    fn from_value(v: Value) -> Result<Self, ValueError> {
        match v {
            Value::Real(f) => Ok(f),
            Value::Integer(i) => Ok(i as f64),
            other => Err(ValueError::mismatch("a real", &other)),
        }
    }
}

impl FieldType for bool {
    const TYPE: ColumnType = ColumnType::Boolean;
    fn to_value(&self) -> Value {
        Value::Boolean(*self)
    }
    fn from_value(v: Value) -> Result<Self, ValueError> {
        match v {
            Value::Boolean(b) => Ok(b),
            other => Err(ValueError::mismatch("a boolean", &other)),
        }
    }
}

impl FieldType for String {
    const TYPE: ColumnType = ColumnType::Text;
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
    fn from_value(v: Value) -> Result<Self, ValueError> {
        match v {
            Value::Text(s) => Ok(s),
            other => Err(ValueError::mismatch("text", &other)),
        }
    }
}

impl FieldType for Timestamp {
    const TYPE: ColumnType = ColumnType::DateTime;
    fn to_value(&self) -> Value {
        Value::DateTime(*self)
    }
    fn from_value(v: Value) -> Result<Self, ValueError> {
        match v {
            Value::DateTime(t) => Ok(t),
            other => Err(ValueError::mismatch("a timestamp", &other)),
        }
    }
}

impl FieldType for serde_json::Value {
    const TYPE: ColumnType = ColumnType::Json;
    fn to_value(&self) -> Value {
        Value::Json(self.clone())
    }
    fn from_value(v: Value) -> Result<Self, ValueError> {
        match v {
            Value::Json(j) => Ok(j),
            other => Err(ValueError::mismatch("a JSON value", &other)),
        }
    }
}

impl<T: FieldType> FieldType for Option<T> {
    const TYPE: ColumnType = T::TYPE;
    const NULLABLE: bool = true;
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, T::to_value)
    }
    fn from_value(v: Value) -> Result<Self, ValueError> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// Conversions for `#[sync(json)]` fields of any serde type (`Option<T>` maps `None` to NULL).
pub fn json_to_value<T: serde::Serialize>(v: &T) -> Value {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::Null) => Value::Null,
        Ok(j) => Value::Json(j),
        // A type whose Serialize fails (e.g. a map with non-string keys) stores NULL rather
        // than panicking in the write path; its field is then read back as its `null` form.
        Err(_) => Value::Null,
    }
}

pub fn json_from_value<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ValueError> {
    let j = match v {
        Value::Null => serde_json::Value::Null,
        Value::Json(j) => j,
        other => return Err(ValueError::mismatch("a JSON value", &other)),
    };
    serde_json::from_value(j).map_err(|e| ValueError(format!("JSON does not fit the field: {e}")))
}
