//! What a table is: the schema as data that `#[derive(Syncable)]` produces for each entity, and
//! the [`Schema`] of an app (all its entities, parents before children).
//!
//! The same types are the committed snapshot that `cargo xtask migrations` diffs against, so
//! every migration is built from one description.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The layout of the server's indexes that `ddl::server_indexes` builds today. A schema
/// snapshot records the layout its migrations built, so that changing the layout is a
/// migration even when no entity changed.
///
/// 1. Pull order, natural keys, and one `(user_id, column)` index per reference.
/// 2. No reference index whose columns a natural key's index starts with: it is never needed,
///    and PostgreSQL without statistics chose it, the smaller one, for natural-key lookups.
pub const SERVER_INDEX_LAYOUT: u32 = 2;

/// Bookkeeping columns the framework adds; an entity may not use these names.
pub const RESERVED_COLUMNS: &[&str] = &[
    "remote_id",
    "deleted_at",
    "dirty",
    "device_id",
    "seq",
    "field_stamps",
    "writer",
];

/// The key of a wire row that holds the stamps of its fields written at another stamp than the
/// row's own (docs/PROTOCOL.md, "Field stamps").
pub const FIELD_STAMPS: &str = "field_stamps";

/// The merge-clock column every synced entity must have.
pub const UPDATED_AT: &str = "updated_at";

/// The type of a column, as the app sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    Text,
    Integer,
    Real,
    Boolean,
    /// A timestamp: wire-format text on every store.
    DateTime,
    /// A JSON document: text in SQL, a JSON value on the wire.
    Json,
}

/// A column default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefaultValue {
    Text(String),
    Integer(i64),
    Real(f64),
    Boolean(bool),
    /// The current time, in wire form.
    Now,
}

/// What deleting the parent does to a row that references it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDelete {
    Cascade,
    SetNull,
}

impl OnDelete {
    pub fn sql(self) -> &'static str {
        match self {
            OnDelete::Cascade => "CASCADE",
            OnDelete::SetNull => "SET NULL",
        }
    }
}

/// A foreign key to another table of the app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    /// The parent table.
    pub table: String,
    pub on_delete: OnDelete,
    /// `None`: the parent is a synced table and the wire carries its `remote_id`. `Some(col)`:
    /// the parent is a non-synced table and the wire carries the parent's natural key `col`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_key: Option<String>,
}

/// How the device's database holds the text of a DATETIME column. The wire always carries RFC
/// 3339 with milliseconds; a device writes a pulled timestamp in its column's own form, so that
/// an app ordering rows by that text sees them in time order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DateTimeText {
    /// `2026-11-28T07:49:06.123Z`, the wire form.
    #[default]
    Wire,
    /// `2026-11-28 07:49:06`, SQLite's `CURRENT_TIMESTAMP` (UTC, whole seconds).
    Sqlite,
}

impl DateTimeText {
    /// `t` written in this form.
    pub fn format(self, t: crate::Timestamp) -> String {
        match self {
            DateTimeText::Wire => t.to_wire(),
            DateTimeText::Sqlite => t.to_sqlite_text(),
        }
    }
}

/// How a table's records merge when two replicas wrote them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeMode {
    /// Last write wins per field (per unit of fields declared to move together).
    #[default]
    Field,
    /// Last write wins for the whole row: every field is one unit.
    Row,
}

/// How a column takes part in sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnRole {
    /// Stored everywhere and carried on the wire.
    #[default]
    Data,
    /// Stays on the device: never on the wire nor on the server.
    Local,
    /// The app's owner of the row, its local user (docs/entities.md): never on the wire and never
    /// rewritten; a connection syncs the rows of one owner, and pulled records get that owner.
    #[serde(alias = "account_id")]
    Owner,
}

/// One app column (the local primary key is not listed among them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ColumnType,
    pub nullable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<DefaultValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
    #[serde(default, skip_serializing_if = "is_default_role")]
    pub role: ColumnRole,
    /// The schema version that added this column.
    pub since: u32,
    /// The merge unit the column belongs to, when several columns must move together (a watch
    /// position and the duration it was measured against): they merge as one field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// How the device holds a DATETIME column's text.
    #[serde(default, skip_serializing_if = "is_default")]
    pub datetime_text: DateTimeText,
}

fn is_default_role(r: &ColumnRole) -> bool {
    *r == ColumnRole::Data
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Fields of a record that merge as one: one stamp, taken or kept together. Its columns are
/// indexes into [`Table::columns`], in table order; the first one names the unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    pub columns: Vec<usize>,
}

impl Column {
    /// Whether the column travels on the wire and is stored by the server.
    pub fn on_wire(&self) -> bool {
        self.role == ColumnRole::Data
    }
}

/// One table of the app.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub name: String,
    /// `false` for a table that lives on the device only (like `addons`), which synced tables
    /// may still reference by natural key.
    pub synced: bool,
    /// The local `INTEGER PRIMARY KEY AUTOINCREMENT` column.
    pub id_column: String,
    pub columns: Vec<Column>,
    /// The UNIQUE groups: two rows with equal values in one group are one record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub natural_keys: Vec<Vec<String>>,
    /// Per field (the default) or whole-row last write wins.
    #[serde(default, skip_serializing_if = "is_default")]
    pub merge: MergeMode,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The columns carried on the wire for a client of `schema_version`.
    pub fn wire_columns(&self, schema_version: u32) -> impl Iterator<Item = &Column> {
        self.columns
            .iter()
            .filter(move |c| c.on_wire() && c.since <= schema_version)
    }

    /// The merge units of the columns that travel, `updated_at` (the record's stamp) aside, in
    /// table order of their first column: one per column unless columns share a declared unit,
    /// or one for the whole row when the table merges whole rows.
    pub fn units(&self) -> Vec<Unit> {
        let mut units: Vec<Unit> = Vec::new();
        let mut named: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, c) in self.columns.iter().enumerate() {
            if !c.on_wire() || c.name == UPDATED_AT {
                continue;
            }
            let key = match (self.merge, &c.unit) {
                (MergeMode::Row, _) => Some(""),
                (MergeMode::Field, Some(u)) => Some(u.as_str()),
                (MergeMode::Field, None) => None,
            };
            match key.and_then(|k| named.get(k).copied()) {
                Some(u) => units[u].columns.push(i),
                None => {
                    if let Some(k) = key {
                        named.insert(k, units.len());
                    }
                    units.push(Unit { columns: vec![i] });
                }
            }
        }
        units
    }

    /// The owner column (its local user), if the table has one.
    pub fn owner_column(&self) -> Option<&Column> {
        self.columns.iter().find(|c| c.role == ColumnRole::Owner)
    }

    /// References to other tables, with their column.
    pub fn references(&self) -> impl Iterator<Item = (&Column, &Reference)> {
        self.columns
            .iter()
            .filter_map(|c| c.reference.as_ref().map(|r| (c, r)))
    }
}

/// Why a set of tables is not a valid app schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid schema: {0}")]
pub struct SchemaError(pub String);

/// All the tables of an app, ordered so that every parent comes before its children.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    pub tables: Vec<Table>,
    /// The layout of the server's indexes ([`SERVER_INDEX_LAYOUT`]) the migrations
    /// of this snapshot built; snapshots older than the field built layout 1.
    #[serde(default = "first_server_index_layout")]
    pub server_index_layout: u32,
}

fn first_server_index_layout() -> u32 {
    1
}

impl Schema {
    /// Checks the tables against each other (references resolve, keys name real columns, no
    /// cycles) and orders them parents first, keeping the given order where it is free.
    pub fn new(tables: Vec<Table>) -> Result<Self, SchemaError> {
        let by_name: BTreeMap<&str, &Table> = tables.iter().map(|t| (t.name.as_str(), t)).collect();
        if by_name.len() != tables.len() {
            return Err(SchemaError("two entities share one table name".into()));
        }
        for t in &tables {
            check_table(t, &by_name)?;
        }
        let mut ordered: Vec<Table> = Vec::with_capacity(tables.len());
        let mut placed = BTreeSet::new();
        let mut rest = tables.clone();
        while !rest.is_empty() {
            let before = rest.len();
            rest.retain(|t| {
                let ready = t
                    .references()
                    .all(|(_, r)| r.table == t.name || placed.contains(&r.table));
                if ready {
                    placed.insert(t.name.clone());
                    ordered.push(t.clone());
                }
                !ready
            });
            if rest.len() == before {
                let names: Vec<_> = rest.iter().map(|t| t.name.as_str()).collect();
                return Err(SchemaError(format!(
                    "references form a cycle among {names:?}"
                )));
            }
        }
        Ok(Schema {
            tables: ordered,
            server_index_layout: SERVER_INDEX_LAYOUT,
        })
    }

    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// The synced tables, parents first.
    pub fn synced(&self) -> impl Iterator<Item = &Table> {
        self.tables.iter().filter(|t| t.synced)
    }

    /// The wire schema version: the highest version any column was added in.
    pub fn version(&self) -> u32 {
        self.tables
            .iter()
            .flat_map(|t| t.columns.iter().map(|c| c.since))
            .max()
            .unwrap_or(1)
            .max(1)
    }

    /// The children of `parent`: every (table, column, reference) that points at it.
    pub fn children_of<'a>(
        &'a self,
        parent: &'a str,
    ) -> impl Iterator<Item = (&'a Table, &'a Column, &'a Reference)> + 'a {
        self.tables.iter().flat_map(move |t| {
            t.references()
                .filter(move |(_, r)| r.table == parent)
                .map(move |(c, r)| (t, c, r))
        })
    }
}

fn check_table(t: &Table, by_name: &BTreeMap<&str, &Table>) -> Result<(), SchemaError> {
    // Long on purpose: one check per rule an entity must meet, each with its message, in the
    // order a reader of the derive's documentation meets them.
    let err = |m: String| Err(SchemaError(format!("table `{}`: {m}", t.name)));
    let mut seen = BTreeSet::new();
    for c in &t.columns {
        if !seen.insert(c.name.as_str()) || c.name == t.id_column {
            return err(format!("column `{}` appears twice", c.name));
        }
        if RESERVED_COLUMNS.contains(&c.name.as_str()) {
            return err(format!(
                "column name `{}` is reserved for sync bookkeeping",
                c.name
            ));
        }
        if c.since == 0 {
            return err(format!("column `{}`: schema versions start at 1", c.name));
        }
        if let Some(r) = &c.reference {
            let Some(parent) = by_name.get(r.table.as_str()) else {
                return err(format!(
                    "column `{}` references unknown table `{}`",
                    c.name, r.table
                ));
            };
            match (&r.by_key, parent.synced) {
                (None, false) if t.synced => {
                    return err(format!(
                        "column `{}` references non-synced `{}` by local id; reference it by a natural key",
                        c.name, r.table
                    ));
                }
                (Some(k), _) => {
                    if parent.synced {
                        return err(format!(
                            "column `{}` references synced `{}` by key; synced parents travel by remote_id",
                            c.name, r.table
                        ));
                    }
                    if !parent
                        .natural_keys
                        .iter()
                        .any(|nk| nk.len() == 1 && nk[0] == *k)
                    {
                        return err(format!(
                            "column `{}` references `{}` by `{k}`, which is not a single-column natural key of it",
                            c.name, r.table
                        ));
                    }
                }
                _ => {}
            }
            if r.on_delete == OnDelete::SetNull && !c.nullable {
                return err(format!(
                    "column `{}` is ON DELETE SET NULL but not nullable",
                    c.name
                ));
            }
            if c.ty != ColumnType::Integer {
                return err(format!(
                    "reference column `{}` must hold an integer id",
                    c.name
                ));
            }
        }
    }
    let owners = t
        .columns
        .iter()
        .filter(|c| c.role == ColumnRole::Owner)
        .count();
    if owners > 1 {
        return err("a table has at most one owner column".into());
    }
    if owners > 0 && !t.synced {
        return err("a table that does not sync has no owner column".into());
    }
    for c in &t.columns {
        if c.unit.is_some() && (!c.on_wire() || c.name == UPDATED_AT) {
            return err(format!(
                "column `{}` does not travel as a field, so it belongs to no merge unit",
                c.name
            ));
        }
        if c.unit.is_some() && t.merge == MergeMode::Row {
            return err(format!(
                "column `{}` names a merge unit, but the table merges whole rows",
                c.name
            ));
        }
        if c.datetime_text != DateTimeText::Wire && c.ty != ColumnType::DateTime {
            return err(format!(
                "column `{}` has a DATETIME text form but is not a DATETIME",
                c.name
            ));
        }
    }
    if t.synced {
        match t.column(UPDATED_AT) {
            Some(c) if c.ty == ColumnType::DateTime && !c.nullable => {}
            _ => return err("a synced table needs a non-null DATETIME `updated_at`".into()),
        }
    }
    for key in &t.natural_keys {
        if key.is_empty() {
            return err("an empty natural key".into());
        }
        for k in key {
            match t.column(k) {
                None => return err(format!("natural key names unknown column `{k}`")),
                // Documents travel as the text sent, and two texts of one document differ (spacing,
                // key order), so a document cannot identify a record.
                Some(c) if c.ty == ColumnType::Json && c.reference.is_none() => {
                    return err(format!(
                        "natural key column `{k}` is a JSON document; a key must be a plain value"
                    ));
                }
                Some(c) if !c.on_wire() && t.synced => {
                    return err(format!(
                        "natural key column `{k}` does not travel on the wire"
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notes(merge: &str, units: [Option<&str>; 3]) -> Table {
        let col = |name: &str, unit: Option<&str>| serde_json::json!({"name": name, "type": "text", "nullable": true, "since": 1, "unit": unit});
        serde_json::from_value(serde_json::json!({
            "name": "notes", "synced": true, "id_column": "id", "merge": merge,
            "columns": [
                col("title", units[0]),
                {"name": "updated_at", "type": "date_time", "nullable": false, "since": 1},
                col("position", units[1]),
                {"name": "draft", "type": "text", "nullable": true, "since": 1, "role": "local"},
                col("duration", units[2]),
            ],
        }))
        .unwrap()
    }

    #[test]
    fn units_group_declared_fields_and_leave_out_the_stamp_and_local_fields() {
        let cols =
            |t: &Table| -> Vec<Vec<usize>> { t.units().into_iter().map(|u| u.columns).collect() };
        assert_eq!(
            cols(&notes("field", [None; 3])),
            vec![vec![0], vec![2], vec![4]]
        );
        let grouped = notes("field", [None, Some("progress"), Some("progress")]);
        assert_eq!(cols(&grouped), vec![vec![0], vec![2, 4]]);
        assert!(Schema::new(vec![grouped]).is_ok());
        assert_eq!(cols(&notes("row", [None; 3])), vec![vec![0, 2, 4]]);
        let refused = Schema::new(vec![notes("row", [None, Some("p"), None])])
            .err()
            .unwrap();
        assert!(refused.0.contains("merges whole rows"), "{refused}");
    }

    #[test]
    fn a_document_cannot_be_a_natural_key() {
        let table = |key: &str| -> Table {
            serde_json::from_value(serde_json::json!({
                "name": "notes", "synced": true, "id_column": "id",
                "columns": [
                    {"name": "title", "type": "text", "nullable": false, "since": 1},
                    {"name": "body", "type": "json", "nullable": false, "since": 1},
                    {"name": "updated_at", "type": "date_time", "nullable": false, "since": 1},
                ],
                "natural_keys": [[key]],
            }))
            .unwrap()
        };
        assert!(Schema::new(vec![table("title")]).is_ok());
        let refused = Schema::new(vec![table("body")]).err().unwrap();
        assert!(refused.0.contains("`body` is a JSON document"), "{refused}");
    }
}
