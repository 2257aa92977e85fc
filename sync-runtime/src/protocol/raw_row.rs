//! A row object as read, before it is checked: its fields matched to the envelope and to its
//! table's columns as they are parsed, with no JSON object built for the row, and a document
//! column's value kept as the text it came as. [`super::wire::WireRow::from_raw`] checks it.

use crate::schema::{Column, ColumnType, Table};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::Value as Json;
use std::fmt;

/// A column's field as read: a JSON tree, or a document column's text as it came.
#[derive(Debug, Clone)]
pub(super) enum Field {
    Tree(Json),
    Raw(Box<serde_json::value::RawValue>),
}

/// Whether `col` holds documents, which a row decoder keeps as their text.
pub(super) fn is_document(col: &Column) -> bool {
    col.ty == ColumnType::Json && col.reference.is_none()
}

/// The envelope's fields, in the order of [`RawRow`]'s `envelope`.
const ENVELOPE: [&str; 6] = [
    "remote_id",
    "updated_at",
    "deleted_at",
    "device_id",
    "user_id",
    crate::schema::FIELD_STAMPS,
];

/// A row's fields as read, matched to the envelope and to `table`'s columns, not yet checked:
/// what [`WireRow::from_raw`] validates. A page decoded straight into these skips building a
/// JSON object per row.
#[derive(Debug, Clone)]
pub struct RawRow {
    /// `remote_id`, `updated_at`, `deleted_at`, `device_id`, `user_id`, `field_stamps`.
    pub(super) envelope: [Option<Json>; 6],
    /// Per column of the table.
    pub(super) columns: Vec<Option<Field>>,
    /// The first key that is neither.
    pub(super) unknown: Option<String>,
}

impl RawRow {
    pub fn new(table: &Table) -> RawRow {
        RawRow {
            envelope: Default::default(),
            columns: vec![None; table.columns.len()],
            unknown: None,
        }
    }

    /// The `remote_id` field, if it is a string.
    pub fn remote_id(&self) -> Option<&str> {
        self.envelope[0].as_ref().and_then(Json::as_str)
    }

    /// Sets field `key` (the last of repeated keys wins, as in a JSON object).
    pub fn set(&mut self, table: &Table, key: &str, v: Json) {
        if let Some(i) = ENVELOPE.iter().position(|k| *k == key) {
            self.envelope[i] = Some(v);
        } else if let Some(i) = table.column_index(key) {
            self.columns[i] = Some(Field::Tree(v));
        } else if self.unknown.is_none() {
            self.unknown = Some(key.chars().take(64).collect());
        }
    }

    /// The first column a client of `version` sends that this row lacks (a partial row).
    pub fn missing_column<'t>(&self, table: &'t Table, version: u32) -> Option<&'t str> {
        table
            .columns
            .iter()
            .zip(&self.columns)
            .find(|(c, v)| {
                v.is_none()
                    && c.on_wire()
                    && c.since <= version
                    && c.name != crate::schema::UPDATED_AT
            })
            .map(|(c, _)| c.name.as_str())
    }

    /// The column of `key` if it holds documents (an envelope key never does).
    fn document_column(table: &Table, key: &str) -> Option<usize> {
        table
            .column_index(key)
            .filter(|&i| !ENVELOPE.contains(&key) && is_document(&table.columns[i]))
    }
}

/// Reads one row object into a [`RawRow`] of its table as it is parsed, with no JSON object
/// built for it (the page and push-body decoders read every row through it).
pub(super) struct RowSeed(pub(super) &'static Table);

impl<'de> DeserializeSeed<'de> for RowSeed {
    type Value = RawRow;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawRow, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed {
    type Value = RawRow;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRow, A::Error> {
        let mut row = RawRow::new(self.0);
        while let Some(key) = map.next_key_seed(KeySeed)? {
            // A document is kept as the text it came as: no tree built, none written again.
            if let Some(i) = RawRow::document_column(self.0, &key) {
                row.columns[i] = Some(Field::Raw(map.next_value()?));
            } else {
                let v: Json = map.next_value()?;
                row.set(self.0, &key, v);
            }
        }
        Ok(row)
    }
}

/// A row's key, borrowed from the input when it holds no escapes (the common case).
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = std::borrow::Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = std::borrow::Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a column name")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Owned(v.to_owned()))
    }
}
