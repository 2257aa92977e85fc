//! A pulled page, decoded against the schema straight from the response body: each row's
//! fields land in their columns' slots as they are read, with no JSON object built per row
//! (building and freeing those cost more than storing the rows).

use crate::protocol::DecodeError;
use crate::protocol::pull::{PullResponse, keys};
use crate::protocol::raw_row::{RawRow, RowSeed};
use crate::protocol::wire::{RowSource, WireRow};
use crate::schema::{Schema, Table};
use crate::timestamp::Timestamp;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// A pulled page's rows per synced table (parents first), checked against the schema.
pub type PulledRows = Vec<(&'static Table, Vec<WireRow>)>;

/// One page of a pull as the device reads it.
pub type PulledPage = PullResponse<PulledRows>;

impl PulledPage {
    /// A page from the bytes of a pull's answer.
    pub fn decode(schema: &'static Schema, bytes: &[u8]) -> Result<PulledPage, DecodeError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let mut raw = PageSeed(schema)
            .deserialize(&mut de)
            .and_then(|p| de.end().map(|()| p))
            .map_err(|e| DecodeError::Page(e.into()))?;
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
                .map(|r| WireRow::from_raw(table, r, version, RowSource::Server))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| DecodeError::PageRow {
                    table: table.name.clone(),
                    error,
                })?;
            changes.push((table, rows));
        }
        Ok(PullResponse {
            cursor: raw.cursor.ok_or(DecodeError::NoCursor)?,
            has_more: raw.has_more,
            server_time: raw.server_time.unwrap_or_default(),
            changes,
        })
    }

    /// The server's clock when it answered (absent or unreadable: not known).
    pub fn server_clock(&self) -> Option<Timestamp> {
        Timestamp::parse_wire(&self.server_time).ok()
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
                keys::CHANGES => page.changes = map.next_value_seed(ChangesSeed(self.0))?,
                keys::CURSOR => page.cursor = map.next_value()?,
                keys::HAS_MORE => {
                    page.has_more = map.next_value::<Option<bool>>()?.unwrap_or(false)
                }
                keys::SERVER_TIME => page.server_time = map.next_value()?,
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
