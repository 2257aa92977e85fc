//! A push request's body, decoded against the schema straight from the request's bytes: each
//! row's fields land in their columns' slots as they are read (see [`super::page`] for why).

use crate::protocol::DecodeError;
use crate::protocol::push::keys;
use crate::protocol::raw_row::{RawRow, RowSeed};
use crate::schema::{Schema, Table};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// A [`super::push::PushRequest`] as the server reads it: its rows matched to the schema's
/// tables as they are read (no JSON object is built per row). What the envelope must hold is
/// checked by the caller.
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
    pub fn decode(schema: &'static Schema, bytes: &[u8]) -> Result<PushBody, DecodeError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        PushSeed(schema)
            .deserialize(&mut de)
            .and_then(|p| de.end().map(|()| p))
            .map_err(|e| DecodeError::PushBody(e.into()))
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
                keys::DEVICE_ID => body.device_id = Some(map.next_value()?),
                keys::SCHEMA_VERSION => body.schema_version = Some(map.next_value()?),
                keys::CHANGES => body.changes = Some(map.next_value_seed(PushChangesSeed(self.0))?),
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
