//! The OpenAPI document served at `/api/openapi.json`: the handlers' types (utoipa), completed
//! with what only the running server knows, so that a request the document calls valid is one
//! the server accepts: each synced table's row, the schema version served, the cursor's shape.

use crate::protocol::{headers, paths};
use crate::schema::{ColumnType, Table};
use crate::server::Server;
use crate::server::account_routes::AccountApiDoc;
use crate::server::readiness::ReadinessApiDoc;
use crate::server::routes::ApiDoc;
use serde_json::{Map, Value as Json, json};
use utoipa::OpenApi;

/// Timestamps as the server reads them: 0 to 3 fractional digits, `Z` or `+00:00`.
const TIMESTAMP_PATTERN: &str = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,3})?(Z|\+00:00)$";

/// Ids as the server reads them: a hyphenated UUID, any case.
const UUID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// A pushed row of `table` for a client of `version`: every column required, no other key
/// (but `user_id`, which is ignored).
///
/// The envelope (`remote_id`, `updated_at`, `deleted_at`) is exact: anything else is a 400.
/// A column's value of the wrong type is no envelope error but a `rejected` row
/// (docs/PROTOCOL.md), so the column schemas constrain only what the server refuses outright: a
/// string in a timestamp column must be a timestamp, a string in a reference must be an id.
/// (`pattern` applies to strings only.)
fn row_schema(table: &Table, version: u32) -> Json {
    let mut props = Map::new();
    props.insert(
        "remote_id".into(),
        json!({"type": "string", "pattern": UUID_PATTERN}),
    );
    props.insert(
        "updated_at".into(),
        json!({"type": "string", "format": "date-time", "pattern": TIMESTAMP_PATTERN}),
    );
    props.insert(
        "deleted_at".into(),
        json!({"type": ["string", "null"], "format": "date-time", "pattern": TIMESTAMP_PATTERN}),
    );
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
        let null = if c.nullable { " or null" } else { "" };
        let schema = match (&c.reference, c.ty) {
            (Some(r), _) if r.by_key.is_none() => json!({"pattern": UUID_PATTERN,
                "description": format!("the remote_id of a {} record{null}", r.table)}),
            (Some(r), _) => {
                json!({"description": format!("the {} of an {} record (a string){null}",
                r.by_key.as_deref().unwrap_or_default(), r.table)})
            }
            (None, ColumnType::DateTime) => {
                json!({"format": "date-time", "pattern": TIMESTAMP_PATTERN,
                "description": format!("a timestamp{null}")})
            }
            (None, ty) => {
                json!({"description": format!("{}{null}; another type rejects the row", match ty {
                    ColumnType::Integer => "an integer",
                    ColumnType::Real => "a number",
                    ColumnType::Boolean => "a boolean",
                    ColumnType::Text => "a string",
                    _ => "any JSON value",
                })})
            }
        };
        let mut schema = schema;
        if let Some(key) = table.natural_keys.iter().find(|k| k.contains(&c.name)) {
            let said = schema["description"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            schema["description"] = json!(format!(
                "{said}; part of the natural key ({}), whose text values hold at most {} bytes together, references by id aside (more rejects the row)",
                key.join(", "),
                crate::server::row_rules::MAX_KEY_BYTES
            ));
        }
        props.insert(c.name.clone(), schema);
        required.push(c.name.clone());
    }
    json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
}

/// The document for `server`.
pub fn document(server: &Server) -> Json {
    let mut api = ApiDoc::openapi();
    api.merge(AccountApiDoc::openapi());
    api.merge(ReadinessApiDoc::openapi());
    let mut doc = serde_json::to_value(api).unwrap_or_else(|_| json!({}));
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
    // The served page under its protocol name (utoipa names a generic's instance after its
    // parameter).
    let schemas = &mut doc["components"]["schemas"];
    if let Some(s) = schemas.as_object_mut() {
        s.remove("PageRows");
        if let Some(mut page) = s.remove("PullResponse_PageRows") {
            // Pulled rows carry `device_id` and, for an older client, fewer columns: no row
            // schema of the current version describes them exactly.
            page["properties"]["changes"] = json!({"type": "object",
                "required": schema.synced().map(|t| t.name.clone()).collect::<Vec<_>>(),
                "additionalProperties": {"type": "array", "items": {"type": "object"}},
                "description": "rows per synced table, every one present (docs/PROTOCOL.md, \"Pull\")"});
            s.insert("PullResponse".into(), page);
        }
    }
    doc["paths"][paths::PULL]["get"]["responses"]["200"]["content"]["application/json"]["schema"] =
        json!({"$ref": "#/components/schemas/PullResponse"});
    let push = &mut doc["components"]["schemas"]["PushRequest"]["properties"];
    push["changes"] = json!({"type": "object", "properties": tables, "additionalProperties": false,
        "description": "rows per synced table (docs/PROTOCOL.md, \"Rows on the wire\")"});
    push["schema_version"] =
        json!({"type": "integer", "format": "int32", "minimum": version, "maximum": version});
    push["device_id"] = json!({"type": "string", "pattern": UUID_PATTERN});
    if let Some(params) = doc["paths"][paths::PULL]["get"]["parameters"].as_array_mut() {
        for p in params {
            match p["name"].as_str() {
                // The document spells the header as the `utoipa::path` literal does.
                Some(h) if h.eq_ignore_ascii_case(headers::SCHEMA_VERSION) => {
                    p["schema"] = json!({"type": "integer", "format": "int32",
                        "minimum": version, "maximum": version});
                }
                // Any positive 64-bit integer; the server clamps it to its cap.
                Some("limit") => {
                    p["schema"] = json!({"type": "integer", "format": "int64", "minimum": 1,
                        "maximum": i64::MAX});
                }
                // Any whole number of seconds a 64-bit unsigned integer holds; the server caps
                // it. (`int64` would tell a client that numbers past 2^63 are refused.)
                Some("wait") => {
                    p["schema"] = json!({"type": "integer", "minimum": 0, "maximum": u64::MAX});
                }
                // Empty is the same as absent, for both.
                Some("since") => {
                    p["schema"] =
                        json!({"type": "string", "pattern": r"^(c1\.[0-9]{1,9}\.[0-9]{1,18})?$"});
                }
                Some("device_id") => {
                    let id = &UUID_PATTERN[1..UUID_PATTERN.len() - 1];
                    p["schema"] = json!({"type": "string", "pattern": format!("^({id})?$")});
                }
                _ => {}
            }
        }
    }
    doc
}
