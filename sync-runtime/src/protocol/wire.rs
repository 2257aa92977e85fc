//! Rows on the wire: one flat JSON object per record, the same shape in push and pull
//! (docs/PROTOCOL.md, "Rows on the wire").

use super::raw_row::{Field, RawRow};
use crate::schema::{Column, ColumnType, Reference, Table};
use crate::syncable::Syncable;
use crate::timestamp::Timestamp;
use crate::value::{JsonText, Value};
use serde_json::{Map, Value as Json};

/// Why a wire row does not fit its table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("missing column `{0}`")]
    MissingColumn(String),
    #[error("unknown column `{0}`")]
    UnknownColumn(String),
    /// A value of the wrong type for its column: the row alone is refused.
    #[error("column `{column}`: {message}")]
    BadValue { column: String, message: String },
    /// A malformed id or timestamp: the envelope is wrong.
    #[error("column `{column}`: {message}")]
    Malformed { column: String, message: String },
    #[error("a row must be a JSON object")]
    NotAnObject,
    #[error("column `{column}` references a record this device does not know")]
    UnknownReference { column: String },
}

fn bad(column: &str, message: impl Into<String>) -> WireError {
    WireError::BadValue {
        column: column.to_owned(),
        message: message.into(),
    }
}

fn malformed(column: &str, message: impl Into<String>) -> WireError {
    WireError::Malformed {
        column: column.to_owned(),
        message: message.into(),
    }
}

/// A canonical lowercase UUID, from any case.
pub fn normalise_id(column: &str, s: &str) -> Result<String, WireError> {
    if is_canonical_id(s) {
        return Ok(s.to_owned());
    }
    uuid::Uuid::try_parse(s)
        .ok()
        .filter(|_| s.len() == 36)
        .map(|u| u.hyphenated().to_string())
        .ok_or_else(|| {
            malformed(
                column,
                format!("`{}` is not a UUID", s.chars().take(64).collect::<String>()),
            )
        })
}

/// Whether `s` is a UUID in its canonical form already (lowercase, hyphenated): the common
/// case, checked without parsing and formatting it again.
fn is_canonical_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
        })
}

/// Encodes one column value. A reference must already hold its wire form (the parent's
/// `remote_id`, or its natural key) as text.
pub fn encode_value(v: &Value) -> Json {
    serde_json::to_value(ValueJson(v)).unwrap_or(Json::Null)
}

/// Decodes one column value by the column's type. A reference decodes to text: its wire form,
/// which the receiver resolves. Upper-case ids are normalised.
pub fn decode_value(col: &Column, j: &Json) -> Result<Value, WireError> {
    if j.is_null() {
        return if col.nullable {
            Ok(Value::Null)
        } else {
            Err(bad(&col.name, "must not be null"))
        };
    }
    if let Some(r) = &col.reference {
        let s = j
            .as_str()
            .ok_or_else(|| bad(&col.name, "a reference must be a string"))?;
        return Ok(Value::Text(if r.by_key.is_some() {
            s.to_owned()
        } else {
            normalise_id(&col.name, s)?
        }));
    }
    match col.ty {
        ColumnType::Integer => j
            .as_i64()
            .map(Value::Integer)
            .ok_or_else(|| bad(&col.name, "expected an integer")),
        ColumnType::Real => j
            .as_f64()
            .map(Value::Real)
            .ok_or_else(|| bad(&col.name, "expected a number")),
        ColumnType::Boolean => j
            .as_bool()
            .map(Value::Boolean)
            .ok_or_else(|| bad(&col.name, "expected a boolean")),
        ColumnType::Text => j
            .as_str()
            .map(|s| Value::Text(s.to_owned()))
            .ok_or_else(|| bad(&col.name, "expected a string")),
        ColumnType::DateTime => {
            let s = j
                .as_str()
                .ok_or_else(|| bad(&col.name, "expected a timestamp string"))?;
            Timestamp::parse_wire(s)
                .map(Value::DateTime)
                .map_err(|e| malformed(&col.name, e.to_string()))
        }
        ColumnType::Json => Ok(Value::Json(JsonText::of(j))),
    }
}

/// As [`decode_value`], taking the field: a text is kept, not copied, and a document read raw
/// is kept as the text it came as.
fn decode_field(col: &Column, field: Field) -> Result<Value, WireError> {
    match (col.ty, &col.reference, field) {
        (ColumnType::Json, None, Field::Raw(raw)) if raw.get() != "null" => JsonText::from_raw(raw)
            .map(Value::Json)
            .map_err(|e| bad(&col.name, format!("not a JSON value every peer reads: {e}"))),
        (_, _, Field::Raw(_)) => decode_value(col, &Json::Null),
        (ColumnType::Text, None, Field::Tree(Json::String(s))) => Ok(Value::Text(s)),
        (_, _, Field::Tree(j)) => decode_value(col, &j),
    }
}

/// A value as JSON, written straight to the serializer ([`encode_value`] collects it as a tree).
struct ValueJson<'a>(&'a Value);

impl serde::Serialize for ValueJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Null => s.serialize_none(),
            Value::Integer(i) => s.serialize_i64(*i),
            Value::Real(f) if f.is_finite() => s.serialize_f64(*f),
            Value::Real(_) => s.serialize_none(),
            Value::Text(t) => s.serialize_str(t),
            Value::Boolean(b) => s.serialize_bool(*b),
            Value::DateTime(t) => s.serialize_str(&t.to_wire()),
            Value::Json(j) => j.serialize(s),
        }
    }
}

/// The JSON object of a row for a peer of `version`, written straight to the serializer
/// ([`WireRow::to_json`] collects it as a map; a pull page of thousands is written in place).
pub struct RowJson<'a> {
    pub table: &'a Table,
    pub version: u32,
    pub remote_id: &'a str,
    pub updated_at: Timestamp,
    pub device_id: Option<&'a str>,
    pub deleted_at: Option<Timestamp>,
    /// Every column of the table, in order.
    pub values: &'a [Value],
    /// Which columns to write (`None`: every column of `version`).
    pub sent: Option<&'a [bool]>,
    /// Stamps of the columns written at another stamp than the row's.
    pub field_stamps: &'a [FieldStamp],
}

impl serde::Serialize for RowJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("remote_id", self.remote_id)?;
        m.serialize_entry("updated_at", &self.updated_at.to_wire())?;
        if let Some(d) = self.device_id {
            m.serialize_entry("device_id", d)?;
        }
        m.serialize_entry("deleted_at", &self.deleted_at.map(|t| t.to_wire()))?;
        let written = |i: usize, c: &Column| {
            c.on_wire()
                && c.since <= self.version
                && c.name != crate::schema::UPDATED_AT
                && self.sent.is_none_or(|s| s.get(i).copied().unwrap_or(false))
        };
        for (i, (c, v)) in self.table.columns.iter().zip(self.values).enumerate() {
            if written(i, c) {
                m.serialize_entry(&c.name, &ValueJson(v))?;
            }
        }
        if self
            .field_stamps
            .iter()
            .any(|f| written(f.column, &self.table.columns[f.column]))
        {
            m.serialize_entry(crate::schema::FIELD_STAMPS, &StampsJson(self))?;
        }
        m.end()
    }
}

/// A row's `field_stamps` object, written in place.
struct StampsJson<'a>(&'a RowJson<'a>);

impl serde::Serialize for StampsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let row = self.0;
        let mut m = s.serialize_map(None)?;
        for f in row.field_stamps {
            let c = &row.table.columns[f.column];
            if !c.on_wire() || c.since > row.version {
                continue;
            }
            match &f.device_id {
                Some(d) => m.serialize_entry(&c.name, &(f.updated_at.to_wire(), d))?,
                None => m.serialize_entry(&c.name, &f.updated_at.to_wire())?,
            }
        }
        m.end()
    }
}

/// A row's JSON object as a map (serializing [`RowJson`] into a map cannot fail: its keys are
/// strings and its values JSON).
pub fn row_map(row: &RowJson<'_>) -> Map<String, Json> {
    match serde_json::to_value(row) {
        Ok(Json::Object(m)) => m,
        _ => Map::new(),
    }
}

/// Where a row comes from, which says what it may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowSource {
    /// A device's push: the columns of the units it changed (every column, from a client that
    /// sends whole rows), its field stamps as bare timestamps (the pusher wrote them all), and
    /// no `device_id` (ignored if sent: the envelope names the device).
    Push,
    /// The server's version of a record (a pulled row, or a push answer's `row`): every column
    /// of the version, with `device_id`, and field stamps naming their device.
    Server,
}

/// The stamp of one column written at another stamp than its row's `(updated_at, device_id)`
/// (docs/PROTOCOL.md, "Field stamps").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldStamp {
    /// The column's index in its table.
    pub column: usize,
    pub updated_at: Timestamp,
    /// The writer; `None` in a push, whose every field is the pusher's.
    pub device_id: Option<String>,
}

/// One record as it travels: the envelope fields and the app columns.
#[derive(Clone, Debug, PartialEq)]
pub struct WireRow {
    pub remote_id: String,
    /// The record's stamp: its latest field write or its deletion.
    pub updated_at: Timestamp,
    pub device_id: Option<String>,
    pub deleted_at: Option<Timestamp>,
    /// Every column of the table, in order (NULL where not sent).
    pub values: Vec<Value>,
    /// Which columns the row carries; `None`: every column of its schema version.
    pub sent: Option<Vec<bool>>,
    /// The columns written at another stamp than the row's, by column.
    pub field_stamps: Vec<FieldStamp>,
}

impl WireRow {
    pub fn is_tombstone(&self) -> bool {
        self.deleted_at.is_some()
    }

    pub fn get<'a>(&'a self, table: &Table, name: &str) -> Option<&'a Value> {
        table.column_index(name).and_then(|i| self.values.get(i))
    }

    /// Whether column `i` is carried by the row (a push carries only what changed).
    pub fn carries(&self, i: usize) -> bool {
        self.sent
            .as_ref()
            .is_none_or(|s| s.get(i).copied().unwrap_or(false))
    }

    /// The stamp of column `i`'s value: its own field stamp, else the row's.
    pub fn stamp_of(&self, i: usize) -> (Timestamp, Option<&str>) {
        match self.field_stamps.iter().find(|f| f.column == i) {
            Some(f) => (f.updated_at, f.device_id.as_deref()),
            None => (self.updated_at, self.device_id.as_deref()),
        }
    }

    pub fn to_json(&self, table: &Table, schema_version: u32) -> Map<String, Json> {
        row_map(&self.json(table, schema_version))
    }

    pub fn from_json(
        table: &Table,
        j: &Json,
        schema_version: u32,
        source: RowSource,
    ) -> Result<WireRow, WireError> {
        let m = j.as_object().ok_or(WireError::NotAnObject)?;
        let mut raw = RawRow::new(table);
        for (k, v) in m {
            raw.set(table, k, v.clone());
        }
        Self::from_raw(table, raw, schema_version, source)
    }

    pub fn from_raw(
        table: &Table,
        raw: RawRow,
        schema_version: u32,
        source: RowSource,
    ) -> Result<WireRow, WireError> {
        // Long on purpose: one check per rule a row must meet, in the order of its fields,
        // each with the error a sender needs.
        if let Some(k) = raw.unknown {
            return Err(WireError::UnknownColumn(k));
        }
        let RawRow {
            envelope:
                [
                    remote_id,
                    updated_at,
                    deleted_at,
                    device_id,
                    _user_id,
                    field_stamps,
                ],
            mut columns,
            ..
        } = raw;
        let travels = |c: &Column| c.on_wire() && c.since <= schema_version;
        for (c, v) in table.columns.iter().zip(&columns) {
            if v.is_some() && !travels(c) {
                return Err(WireError::UnknownColumn(c.name.chars().take(64).collect()));
            }
        }
        let missing = |k: &str| WireError::MissingColumn(k.to_owned());
        let remote_id = normalise_id(
            "remote_id",
            remote_id
                .ok_or_else(|| missing("remote_id"))?
                .as_str()
                .ok_or_else(|| malformed("remote_id", "expected a string"))?,
        )?;
        let updated_at = stamp(
            "updated_at",
            &updated_at.ok_or_else(|| missing("updated_at"))?,
        )?
        .ok_or_else(|| malformed("updated_at", "must not be null"))?;
        let deleted_at = stamp(
            "deleted_at",
            &deleted_at.ok_or_else(|| missing("deleted_at"))?,
        )?;
        let device_id = match (device_id, source) {
            (Some(Json::String(s)), RowSource::Server) => Some(normalise_id("device_id", &s)?),
            (Some(Json::Null) | None, _) | (Some(_), RowSource::Push) => None,
            (Some(_), RowSource::Server) => {
                return Err(malformed("device_id", "expected a string"));
            }
        };
        let sent: Vec<bool> = table
            .columns
            .iter()
            .zip(&columns)
            .map(|(c, v)| c.name == crate::schema::UPDATED_AT || (travels(c) && v.is_some()))
            .collect();
        let whole = table
            .columns
            .iter()
            .zip(&sent)
            .all(|(c, s)| *s || !travels(c));
        if !whole && source == RowSource::Server {
            let (c, _) = table
                .columns
                .iter()
                .zip(&sent)
                .find(|(c, s)| !**s && travels(c))
                .expect("a row that is not whole misses a column");
            return Err(missing(&c.name));
        }
        let field_stamps = match field_stamps {
            None | Some(Json::Null) => Vec::new(),
            Some(j) => decode_field_stamps(table, &j, &sent, updated_at, source)?,
        };
        let mut values = Vec::with_capacity(table.columns.len());
        let mut wrong_type = None;
        for (c, v) in table.columns.iter().zip(columns.iter_mut()) {
            if c.name == crate::schema::UPDATED_AT {
                values.push(Value::DateTime(updated_at));
            } else if let Some(v) = v.take() {
                match decode_field(c, v) {
                    Ok(v) => values.push(v),
                    Err(e @ WireError::BadValue { .. }) => {
                        wrong_type.get_or_insert(e);
                        values.push(Value::Null);
                    }
                    Err(e) => return Err(e),
                }
            } else {
                values.push(Value::Null);
            }
        }
        if let Some(e) = wrong_type {
            return Err(e);
        }
        Ok(WireRow {
            remote_id,
            updated_at,
            device_id,
            deleted_at,
            values,
            sent: (!whole).then_some(sent),
            field_stamps,
        })
    }

    pub fn json<'a>(&'a self, table: &'a Table, version: u32) -> RowJson<'a> {
        RowJson {
            table,
            version,
            remote_id: &self.remote_id,
            updated_at: self.updated_at,
            device_id: self.device_id.as_deref(),
            deleted_at: self.deleted_at,
            values: &self.values,
            sent: self.sent.as_deref(),
            field_stamps: &self.field_stamps,
        }
    }
}

/// A timestamp field of the envelope: null, or a wire timestamp.
fn stamp(k: &str, j: &Json) -> Result<Option<Timestamp>, WireError> {
    match j {
        Json::Null => Ok(None),
        Json::String(s) => Timestamp::parse_wire(s)
            .map(Some)
            .map_err(|e| malformed(k, e.to_string())),
        _ => Err(malformed(k, "expected a timestamp string or null")),
    }
}

/// A row's `field_stamps`: per column it carries, a timestamp (a push) or a
/// `[timestamp, device_id]` pair (the server's), never after the row's own stamp.
fn decode_field_stamps(
    table: &Table,
    j: &Json,
    sent: &[bool],
    row_stamp: Timestamp,
    source: RowSource,
) -> Result<Vec<FieldStamp>, WireError> {
    const KEY: &str = crate::schema::FIELD_STAMPS;
    let m = j
        .as_object()
        .ok_or_else(|| malformed(KEY, "expected an object of column stamps"))?;
    let mut out = Vec::with_capacity(m.len());
    for (name, v) in m {
        let column = table
            .column_index(name)
            .filter(|&i| sent[i] && table.columns[i].name != crate::schema::UPDATED_AT)
            .ok_or_else(|| {
                malformed(
                    KEY,
                    format!(
                        "`{}` is not a column the row carries",
                        name.chars().take(64).collect::<String>()
                    ),
                )
            })?;
        let (at, device) = match (source, v) {
            (RowSource::Push, Json::String(s)) => (s.as_str(), None),
            (RowSource::Server, Json::Array(a)) if a.len() == 2 => match (&a[0], &a[1]) {
                (Json::String(at), Json::String(d)) => (at.as_str(), Some(normalise_id(KEY, d)?)),
                _ => return Err(malformed(KEY, "expected [timestamp, device_id]")),
            },
            (RowSource::Push, _) => {
                return Err(malformed(KEY, format!("`{name}`: expected a timestamp")));
            }
            (RowSource::Server, _) => {
                return Err(malformed(
                    KEY,
                    format!("`{name}`: expected [timestamp, device_id]"),
                ));
            }
        };
        let updated_at = Timestamp::parse_wire(at).map_err(|e| malformed(KEY, e.to_string()))?;
        if updated_at > row_stamp {
            return Err(malformed(
                KEY,
                format!("`{name}` is stamped after the row's updated_at"),
            ));
        }
        out.push(FieldStamp {
            column,
            updated_at,
            device_id: device,
        });
    }
    out.sort_by_key(|f| f.column);
    Ok(out)
}

pub trait RefResolver {
    /// The wire form of local id `local` in the parent of `reference`: its `remote_id`, or for a
    /// non-synced parent its natural key `by_key`. `None` if there is no such row.
    fn to_wire(&mut self, reference: &Reference, local: i64) -> Option<String>;
    /// The local id of the parent whose wire form is `wire`, `None` if this device has none.
    fn to_local(&mut self, reference: &Reference, wire: &str) -> Option<i64>;
}

/// A typed entity as a wire row: references translated through `refs`.
pub fn entity_to_wire<T: Syncable>(
    entity: &T,
    remote_id: &str,
    deleted_at: Option<Timestamp>,
    refs: &mut dyn RefResolver,
) -> Result<WireRow, WireError> {
    let table = T::table();
    let mut values = entity.to_values();
    let mut updated_at = None;
    for (c, v) in table.columns.iter().zip(values.iter_mut()) {
        if !c.on_wire() {
            *v = Value::Null;
            continue;
        }
        if let (true, Value::DateTime(t)) = (c.name == crate::schema::UPDATED_AT, &*v) {
            updated_at = Some(*t);
        }
        if let (Some(r), Value::Integer(local)) = (&c.reference, &*v) {
            let wire = refs
                .to_wire(r, *local)
                .ok_or_else(|| WireError::UnknownReference {
                    column: c.name.clone(),
                })?;
            *v = Value::Text(wire);
        }
    }
    let updated_at = updated_at.ok_or_else(|| WireError::MissingColumn("updated_at".into()))?;
    Ok(WireRow {
        remote_id: remote_id.to_owned(),
        updated_at,
        device_id: None,
        deleted_at,
        values,
        sent: None,
        field_stamps: Vec::new(),
    })
}

/// A wire row as a typed entity with local id `id`: references resolved through `refs`; columns
/// that do not travel take `local_values` (the device's current ones, or the entity's defaults).
pub fn entity_from_wire<T: Syncable>(
    row: &WireRow,
    id: i64,
    local_values: Option<Vec<Value>>,
    refs: &mut dyn RefResolver,
) -> Result<T, WireError> {
    let table = T::table();
    let mut values = row.values.clone();
    let mut local = local_values.map(Vec::into_iter);
    for (c, v) in table.columns.iter().zip(values.iter_mut()) {
        let kept = local.as_mut().and_then(Iterator::next);
        if !c.on_wire() {
            *v = kept.unwrap_or(Value::Null);
            continue;
        }
        if let (Some(r), Value::Text(wire)) = (&c.reference, &*v) {
            let local_id = refs
                .to_local(r, wire)
                .ok_or_else(|| WireError::UnknownReference {
                    column: c.name.clone(),
                })?;
            *v = Value::Integer(local_id);
        }
    }
    T::from_values(id, values).map_err(|e| bad(table.name.as_str(), e.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::raw_row::is_document;
    use serde_json::json;

    /// Taking the JSON decodes every value as borrowing it does: the shortcuts for texts and
    /// documents keep nothing else apart.
    #[test]
    fn a_value_decodes_the_same_taken_or_borrowed() {
        let column = |ty: ColumnType, nullable: bool, reference: bool| Column {
            name: "c".into(),
            ty,
            nullable,
            default: None,
            reference: reference.then(|| crate::schema::Reference {
                table: "parents".into(),
                on_delete: crate::schema::OnDelete::Cascade,
                by_key: None,
            }),
            role: Default::default(),
            since: 1,
            unit: None,
            datetime_text: Default::default(),
        };
        let inputs = [
            json!(null),
            json!("text"),
            json!("01A2221B-9B43-70FC-8E78-E216410D756A"),
            json!(7),
            json!(1.5),
            json!(true),
            json!({"a": [1, "b"]}),
            json!("2026-11-30T10:00:00.000Z"),
        ];
        for ty in [
            ColumnType::Integer,
            ColumnType::Real,
            ColumnType::Text,
            ColumnType::Boolean,
            ColumnType::DateTime,
            ColumnType::Json,
        ] {
            for (nullable, reference) in [(false, false), (true, false), (true, true)] {
                let c = column(ty, nullable, reference);
                for j in &inputs {
                    let raw = serde_json::value::to_raw_value(j).unwrap();
                    assert_eq!(
                        decode_field(&c, Field::Tree(j.clone())),
                        decode_value(&c, j),
                        "{ty:?} nullable {nullable} reference {reference}: {j}"
                    );
                    if is_document(&c) {
                        assert_eq!(
                            decode_field(&c, Field::Raw(raw)),
                            decode_value(&c, j),
                            "read raw, nullable {nullable}: {j}"
                        );
                    }
                }
            }
        }
    }

    /// The fast path for canonical ids agrees with parsing: canonical ids pass as they are,
    /// others are normalised or refused as before.
    #[test]
    fn ids_are_normalised_the_same_with_or_without_the_fast_path() {
        let canonical = "01a2221b-9b43-70fc-8e78-e216410d756a";
        assert!(is_canonical_id(canonical));
        assert_eq!(normalise_id("id", canonical).unwrap(), canonical);
        assert_eq!(
            normalise_id("id", &canonical.to_uppercase()).unwrap(),
            canonical
        );
        for bad in [
            "01a2221b-9b43-70fc-8e78-e216410d756",
            "01a2221b-9b43-70fc-8e78-e216410d756g",
            "01a2221b+9b43-70fc-8e78-e216410d756a",
            "01a2221b9b4370fc8e78e216410d756a",
            "",
        ] {
            assert!(!is_canonical_id(bad), "{bad}");
            assert!(normalise_id("id", bad).is_err(), "{bad}");
        }
    }
}
