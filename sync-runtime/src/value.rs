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
    Json(JsonText),
}

/// A JSON document as its text, known to be one valid JSON value other than `null` (which is
/// [`Value::Null`]). It is stored and sent as it came, and parsed into a tree only where one is
/// wanted (an entity's field): a push binds the text it received, a pull writes the text it
/// read into the page.
#[derive(Clone)]
pub struct JsonText(Box<serde_json::value::RawValue>);

impl JsonText {
    /// `text` if it is one JSON value that a JSON tree can hold; checked without building one.
    pub fn parse(text: String) -> Result<JsonText, serde_json::Error> {
        serde_json::value::RawValue::from_string(text).and_then(JsonText::from_raw)
    }

    /// A document as a deserializer read it raw: it checked the syntax only, so a number
    /// beyond a double or a lone surrogate escape is refused here, as parsing it into a tree
    /// (any peer's, later) would refuse it.
    pub fn from_raw(raw: Box<serde_json::value::RawValue>) -> Result<JsonText, serde_json::Error> {
        use serde::de::DeserializeSeed;
        let mut de = serde_json::Deserializer::from_str(raw.get());
        Parsable(MAX_DEPTH).deserialize(&mut de)?;
        de.end()?;
        Ok(JsonText(raw))
    }

    /// The value of stored text: a document, or NULL for `null` (which an older device wrote
    /// for a field holding JSON `null`).
    pub fn parse_value(text: String) -> Result<Value, serde_json::Error> {
        let j = JsonText::parse(text)?;
        Ok(if j.is_null() {
            Value::Null
        } else {
            Value::Json(j)
        })
    }

    /// The text of `j`.
    pub fn of(j: &serde_json::Value) -> JsonText {
        // Serializing a `serde_json::Value` cannot fail: its map keys are strings.
        JsonText(serde_json::value::to_raw_value(j).unwrap_or_default())
    }

    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    pub fn is_null(&self) -> bool {
        self.as_str() == "null"
    }

    /// The document as a tree.
    pub fn tree(&self) -> serde_json::Value {
        // The text was checked when the value was made.
        serde_json::from_str(self.as_str()).unwrap_or_default()
    }
}

/// Arrays and objects a document may nest: a peer reads it a few levels down, inside a page or
/// a push's answer, and its parser stops at 128 levels in all.
pub const MAX_DEPTH: usize = 64;

/// A JSON value walked as a tree would be parsed (numbers read, escapes decoded), with nothing
/// kept; it holds the levels of nesting left.
struct Parsable(usize);

impl<'de> serde::de::DeserializeSeed<'de> for Parsable {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Parsable {
    /// The walker of what this array or object holds, one level down.
    fn inner<E: serde::de::Error>(&self) -> Result<Parsable, E> {
        match self.0.checked_sub(1) {
            Some(left) => Ok(Parsable(left)),
            None => Err(E::custom(format!(
                "a document may nest at most {MAX_DEPTH} arrays and objects"
            ))),
        }
    }
}

impl<'de> serde::de::Visitor<'de> for Parsable {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
        while a.next_element_seed(self.inner()?)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
        while a.next_key_seed(self.inner()?)?.is_some() {
            a.next_value_seed(self.inner()?)?;
        }
        Ok(())
    }
}

/// Two documents are equal when their trees are: `{"a": 1}` is `{"a":1}`. Texts are compared
/// first, which settles the usual case without parsing.
impl PartialEq for JsonText {
    fn eq(&self, other: &JsonText) -> bool {
        self.as_str() == other.as_str() || self.tree() == other.tree()
    }
}

impl std::fmt::Debug for JsonText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for JsonText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
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
    /// The value of a JSON document: `null` is [`Value::Null`].
    pub fn json(j: &serde_json::Value) -> Value {
        json_to_value(j)
    }

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
            (ColumnType::Json, R::Text(t)) => JsonText::parse_value(utf8(t)?.to_owned())
                .map_err(|e| ValueError(format!("stored JSON is invalid: {e}")))?,
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
            Value::Json(j) => ToSqlOutput::Borrowed(ValueRef::Text(j.as_str().as_bytes())),
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
        Value::json(self)
    }
    fn from_value(v: Value) -> Result<Self, ValueError> {
        match v {
            Value::Json(j) => Ok(j.tree()),
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
    match serde_json::value::to_raw_value(v).map(JsonText) {
        Ok(j) if j.is_null() => Value::Null,
        Ok(j) => Value::Json(j),
        // A type whose Serialize fails (e.g. a map with non-string keys) stores NULL rather
        // than panicking in the write path; its field is then read back as its `null` form.
        Err(_) => Value::Null,
    }
}

pub fn json_from_value<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ValueError> {
    // Through the tree, which keeps the last of a repeated key as every JSON peer does; a serde
    // type read from the text would refuse the document instead.
    let j = match v {
        Value::Null => serde_json::Value::Null,
        Value::Json(j) => j.tree(),
        other => return Err(ValueError::mismatch("a JSON value", &other)),
    };
    serde_json::from_value(j).map_err(|e| ValueError(format!("JSON does not fit the field: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A document is kept as the text it came as, and refused where a tree would refuse it:
    /// stored and sent on, it would fail every peer that reads it into one.
    #[test]
    fn a_document_is_kept_as_sent_and_refused_where_a_tree_would_refuse_it() {
        let spaced = JsonText::parse(" {\"b\": 1,  \"a\": [1.50, \"é\"]} ".into()).unwrap();
        assert_eq!(spaced.as_str(), "{\"b\": 1,  \"a\": [1.50, \"é\"]}");
        assert_eq!(spaced.tree(), json!({"a": [1.5, "é"], "b": 1}));
        for refused in [
            "1e400",
            "[1, {\"a\": -1e400}]",
            "\"\\ud800\"",
            "{\"a\": 1",
            "[1,]",
            "",
        ] {
            assert!(JsonText::parse(refused.into()).is_err(), "{refused}");
            let tree: Result<serde_json::Value, _> = serde_json::from_str(refused);
            assert!(tree.is_err(), "a tree refuses {refused} too");
        }
        let nested = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        assert!(JsonText::parse(nested(MAX_DEPTH)).is_ok());
        assert!(JsonText::parse(nested(MAX_DEPTH + 1)).is_err());
        assert_eq!(JsonText::parse_value("null".into()).unwrap(), Value::Null);
    }

    #[test]
    fn documents_are_equal_when_their_trees_are() {
        let a = JsonText::parse("{\"a\": 1, \"b\": [true]}".into()).unwrap();
        let b = JsonText::of(&json!({"b": [true], "a": 1}));
        assert_eq!(a, b);
        assert_ne!(a, JsonText::of(&json!({"a": 2, "b": [true]})));
        assert_eq!(Value::json(&json!(null)), Value::Null);
        // Collected as a tree (the control API's views), a document is its tree.
        assert_eq!(
            crate::protocol::wire::encode_value(&Value::Json(a)),
            json!({"a": 1, "b": [true]})
        );
    }

    /// An entity's JSON field goes to text and back unchanged, through the serde type's own
    /// form, and a document that does not fit the field is an error, not a default.
    #[test]
    fn json_fields_round_trip_through_their_text() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Stream {
            url: String,
            size: u64,
        }
        let s = Stream {
            url: "magnet:?xt=1".into(),
            size: 1_500_000_000,
        };
        let v = json_to_value(&s);
        assert_eq!(json_from_value::<Stream>(v).unwrap(), s);
        assert_eq!(json_to_value(&Option::<Stream>::None), Value::Null);
        let other = Value::json(&json!({"url": 7}));
        assert!(json_from_value::<Stream>(other).is_err());
        let repeated = JsonText::parse(r#"{"url": "a", "size": 1, "url": "b"}"#.into()).unwrap();
        assert_eq!(
            json_from_value::<Stream>(Value::Json(repeated))
                .unwrap()
                .url,
            "b",
            "the last of a repeated key, as in a tree"
        );
        let tree = json!({"k": [1, 2.5, "x"]});
        let v = <serde_json::Value as FieldType>::to_value(&tree);
        assert_eq!(
            <serde_json::Value as FieldType>::from_value(v).unwrap(),
            tree
        );
    }
}
