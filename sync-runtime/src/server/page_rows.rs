//! A pulled page's rows as the server writes them: serialized straight from the stored records,
//! every synced table present (empty arrays included), parents first.

use crate::schema::{Schema, Table};
use crate::server::sync::Record;
use serde::Serialize;
use serde::ser::SerializeMap;
use std::collections::BTreeMap;

/// The `changes` of a [`crate::protocol::pull::PullResponse`] the server answers.
pub struct PageRows {
    schema: &'static Schema,
    /// The schema version of the client the rows are written for.
    version: u32,
    rows: BTreeMap<String, Vec<Record>>,
}

impl PageRows {
    pub fn new(
        schema: &'static Schema,
        version: u32,
        rows: BTreeMap<String, Vec<Record>>,
    ) -> PageRows {
        PageRows {
            schema,
            version,
            rows,
        }
    }
}

impl Serialize for PageRows {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Rows<'a>(&'a Table, &'a [Record], u32);
        impl Serialize for Rows<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.1.iter().map(|r| r.json(self.0, self.2)))
            }
        }
        let mut m = s.serialize_map(None)?;
        for table in self.schema.synced() {
            let rows = self
                .rows
                .get(&table.name)
                .map(Vec::as_slice)
                .unwrap_or_default();
            m.serialize_entry(&table.name, &Rows(table, rows, self.version))?;
        }
        m.end()
    }
}

// In the OpenAPI document, rows per table name (each row's columns depend on the app's schema).
impl utoipa::PartialSchema for PageRows {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new().into()
    }
}

impl utoipa::ToSchema for PageRows {}
