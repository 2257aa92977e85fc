//! A pulled page, decoded against the schema straight from the response body: each row's
//! fields land in their columns' slots as they are read, with no JSON object built per row
//! (building and freeing those cost more than storing the rows).

use crate::protocol::wire::{RawRow, WireRow};
use crate::schema::{Schema, Table};
use crate::timestamp::Timestamp;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;
use std::fmt;

/// One page of a pull: its rows per synced table (parents first), checked against the schema.
#[derive(Debug, Clone)]
pub struct PulledPage {
    pub changes: Vec<(&'static Table, Vec<WireRow>)>,
    pub cursor: String,
    pub has_more: bool,
    /// The server's clock when it answered (absent or unreadable: not known).
    pub server_time: Option<Timestamp>,
}

impl PulledPage {
    /// A page from its JSON value (as [`PulledPage::decode`] reads it from bytes).
    pub fn from_json(schema: &'static Schema, page: &Json) -> Result<PulledPage, String> {
        let cursor = page["cursor"]
            .as_str()
            .ok_or("a pull page without a cursor")?
            .to_owned();
        let version = schema.version();
        let mut changes = Vec::new();
        for table in schema.synced() {
            let Some(rows) = page["changes"][table.name.as_str()].as_array() else {
                continue;
            };
            let rows = rows
                .iter()
                .map(|r| WireRow::from_json(table, r, version, true))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("the server sent a bad {} row: {e}", table.name))?;
            changes.push((table, rows));
        }
        Ok(PulledPage {
            cursor,
            has_more: page["has_more"].as_bool().unwrap_or(false),
            server_time: page["server_time"]
                .as_str()
                .and_then(|s| Timestamp::parse_wire(s).ok()),
            changes,
        })
    }

    /// A page from the bytes of a pull's answer.
    pub fn decode(schema: &'static Schema, bytes: &[u8]) -> Result<PulledPage, String> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let mut raw = PageSeed(schema)
            .deserialize(&mut de)
            .and_then(|p| de.end().map(|()| p))
            .map_err(|e| format!("a pull page that is not the protocol: {e}"))?;
        let version = schema.version();
        let mut changes = Vec::new();
        for table in schema.synced() {
            let Some(i) = raw
                .changes
                .iter()
                .position(|(t, _)| std::ptr::eq(*t, table))
            else {
                continue;
            };
            let rows = std::mem::take(&mut raw.changes[i].1);
            let rows = rows
                .into_iter()
                .map(|r| WireRow::from_raw(table, r, version, true))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("the server sent a bad {} row: {e}", table.name))?;
            changes.push((table, rows));
        }
        Ok(PulledPage {
            cursor: raw.cursor.ok_or("a pull page without a cursor")?,
            has_more: raw.has_more,
            server_time: raw.server_time.and_then(|s| Timestamp::parse_wire(&s).ok()),
            changes,
        })
    }
}

struct RawPage {
    changes: Vec<(&'static Table, Vec<RawRow>)>,
    cursor: Option<String>,
    has_more: bool,
    server_time: Option<String>,
}

struct PageSeed(&'static Schema);

impl<'de> DeserializeSeed<'de> for PageSeed {
    type Value = RawPage;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawPage, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PageSeed {
    type Value = RawPage;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a pull page")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawPage, A::Error> {
        let mut page = RawPage {
            changes: Vec::new(),
            cursor: None,
            has_more: false,
            server_time: None,
        };
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "changes" => page.changes = map.next_value_seed(ChangesSeed(self.0))?,
                "cursor" => page.cursor = map.next_value()?,
                "has_more" => page.has_more = map.next_value::<Option<bool>>()?.unwrap_or(false),
                "server_time" => page.server_time = map.next_value()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(page)
    }
}

struct ChangesSeed(&'static Schema);

impl<'de> DeserializeSeed<'de> for ChangesSeed {
    type Value = Vec<(&'static Table, Vec<RawRow>)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ChangesSeed {
    type Value = Vec<(&'static Table, Vec<RawRow>)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("rows per table")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out: Self::Value = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            // Tables this app does not sync (a newer server's) are skipped.
            match self.0.table(&name).filter(|t| t.synced) {
                Some(t) => {
                    let rows = map.next_value_seed(RowsSeed(t))?;
                    match out.iter_mut().find(|(seen, _)| std::ptr::eq(*seen, t)) {
                        Some((_, earlier)) => earlier.extend(rows),
                        None => out.push((t, rows)),
                    }
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

struct RowsSeed(&'static Table);

impl<'de> DeserializeSeed<'de> for RowsSeed {
    type Value = Vec<RawRow>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<RawRow>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RowsSeed {
    type Value = Vec<RawRow>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of rows")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<RawRow>, A::Error> {
        let mut rows = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(r) = seq.next_element_seed(RowSeed(self.0))? {
            rows.push(r);
        }
        Ok(rows)
    }
}

struct RowSeed(&'static Table);

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
            let v: Json = map.next_value()?;
            row.set(self.0, &key, v);
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

/// A push request's body, its rows matched to the schema's tables as they are read (no JSON
/// object is built per row). What the envelope must hold is checked by the caller.
#[derive(Debug, Default)]
pub struct PushBody {
    pub device_id: Option<String>,
    pub schema_version: Option<u32>,
    /// Per table name in body order: the synced table it names (if any), and its rows, `None`
    /// for an element that is not a JSON object. Rows of unknown tables are skipped.
    pub changes: Option<Vec<PushedTable>>,
}

pub type PushedTable = (String, Option<&'static Table>, Vec<Option<RawRow>>);

impl PushBody {
    pub fn decode(schema: &'static Schema, bytes: &[u8]) -> Result<PushBody, String> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        PushSeed(schema)
            .deserialize(&mut de)
            .and_then(|p| de.end().map(|()| p))
            .map_err(|e| e.to_string())
    }
}

struct PushSeed(&'static Schema);

impl<'de> DeserializeSeed<'de> for PushSeed {
    type Value = PushBody;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<PushBody, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PushSeed {
    type Value = PushBody;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a push request object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PushBody, A::Error> {
        let mut body = PushBody::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "device_id" => body.device_id = Some(map.next_value()?),
                "schema_version" => body.schema_version = Some(map.next_value()?),
                "changes" => body.changes = Some(map.next_value_seed(PushChangesSeed(self.0))?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(body)
    }
}

struct PushChangesSeed(&'static Schema);

impl<'de> DeserializeSeed<'de> for PushChangesSeed {
    type Value = Vec<PushedTable>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PushChangesSeed {
    type Value = Vec<PushedTable>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("arrays of rows per table name")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out: Self::Value = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            let table = self.0.table(&name).filter(|t| t.synced);
            let rows = match table {
                Some(t) => map.next_value_seed(PushRowsSeed(t))?,
                None => {
                    map.next_value::<Vec<IgnoredAny>>()?;
                    Vec::new()
                }
            };
            out.push((name, table, rows));
        }
        Ok(out)
    }
}

struct PushRowsSeed(&'static Table);

impl<'de> DeserializeSeed<'de> for PushRowsSeed {
    type Value = Vec<Option<RawRow>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for PushRowsSeed {
    type Value = Vec<Option<RawRow>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of rows")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut rows = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(r) = seq.next_element_seed(MaybeRowSeed(self.0))? {
            rows.push(r);
        }
        Ok(rows)
    }
}

/// A row, or `None` for any other JSON value in its place.
struct MaybeRowSeed(&'static Table);

impl<'de> DeserializeSeed<'de> for MaybeRowSeed {
    type Value = Option<RawRow>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MaybeRowSeed {
    type Value = Option<RawRow>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        RowSeed(self.0).visit_map(map).map(Some)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}
