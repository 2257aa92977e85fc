//! The OpenAPI document served at `/api/openapi.json`: the handlers' types (utoipa), completed
//! with what only the running server knows, so that a request the document calls valid is one
//! the server accepts: each synced table's row, the schema version served, the cursor's shape.

use crate::schema::{ColumnType, Table};
use crate::server::Server;
use crate::server::routes::ApiDoc;
use serde_json::{Map, Value as Json, json};
use utoipa::OpenApi;

/// Timestamps as the server reads them: 0 to 3 fractional digits, `Z` or `+00:00`.
const TIMESTAMP_PATTERN: &str = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,3})?(Z|\+00:00)$";

fn timestamp(nullable: bool) -> Json {
    json!({"type": if nullable { json!(["string", "null"]) } else { json!("string") },
           "format": "date-time", "pattern": TIMESTAMP_PATTERN})
}

fn typed(ty: &str, nullable: bool) -> Json {
    if nullable {
        json!({ "type": [ty, "null"] })
    } else {
        json!({ "type": ty })
    }
}

/// A pushed row of `table` for a client of `version`: every column required, no other key
/// (but `user_id`, which is ignored).
fn row_schema(table: &Table, version: u32) -> Json {
    let mut props = Map::new();
    props.insert(
        "remote_id".into(),
        json!({"type": "string", "format": "uuid"}),
    );
    props.insert("updated_at".into(), timestamp(false));
    props.insert("deleted_at".into(), timestamp(true));
    props.insert(
        "user_id".into(),
        json!({"description": "ignored: the server fills it with the account's id"}),
    );
    let mut required = vec![
        "remote_id".to_owned(),
        "updated_at".into(),
        "deleted_at".into(),
    ];
    for c in table
        .columns
        .iter()
        .filter(|c| c.on_wire() && c.since <= version && c.name != crate::schema::UPDATED_AT)
    {
        let schema = match (&c.reference, c.ty) {
            (Some(r), _) if r.by_key.is_none() => {
                let mut s = typed("string", c.nullable);
                s["format"] = json!("uuid");
                s
            }
            (Some(_), _) | (None, ColumnType::Text) => typed("string", c.nullable),
            (None, ColumnType::Integer) => {
                let mut s = typed("integer", c.nullable);
                s["format"] = json!("int64");
                s
            }
            (None, ColumnType::Real) => typed("number", c.nullable),
            (None, ColumnType::Boolean) => typed("boolean", c.nullable),
            (None, ColumnType::DateTime) => timestamp(c.nullable),
            (None, ColumnType::Json) if c.nullable => json!({}),
            (None, ColumnType::Json) => json!({"not": {"type": "null"}}),
        };
        props.insert(c.name.clone(), schema);
        required.push(c.name.clone());
    }
    json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
}

/// The document for `server`.
pub fn document(server: &Server) -> Json {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    let schema = &server.app.schema;
    // The current version only: rows of an older one carry fewer columns, which one schema
    // per table cannot say.
    let version = schema.version();
    let mut tables = Map::new();
    for table in schema.synced() {
        let name = format!("Row_{}", table.name);
        doc["components"]["schemas"][&name] = row_schema(table, version);
        tables.insert(
            table.name.clone(),
            json!({"type": "array", "items": {"$ref": format!("#/components/schemas/{name}")}}),
        );
    }
    let push = &mut doc["components"]["schemas"]["PushRequest"]["properties"];
    push["changes"] = json!({"type": "object", "properties": tables, "additionalProperties": false,
        "description": "rows per synced table (PROTOCOL.md, \"Rows on the wire\")"});
    push["schema_version"] =
        json!({"type": "integer", "format": "int32", "minimum": version, "maximum": version});
    push["device_id"] = json!({"type": "string", "format": "uuid"});
    if let Some(params) = doc["paths"]["/api/sync/pull"]["get"]["parameters"].as_array_mut() {
        for p in params {
            match p["name"].as_str() {
                Some("X-Sync-Schema-Version") => {
                    p["schema"]["minimum"] = json!(version);
                    p["schema"]["maximum"] = json!(version);
                }
                Some("since") => {
                    p["schema"]["pattern"] = json!(r"^c1\.[0-9]{1,9}\.[0-9]{1,18}$");
                }
                Some("device_id") => p["schema"]["format"] = json!("uuid"),
                _ => {}
            }
        }
    }
    doc
}
