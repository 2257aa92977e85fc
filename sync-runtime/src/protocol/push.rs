//! `POST /api/sync/push`: the request envelope, the answer, and each row's result
//! (docs/PROTOCOL.md, "Push"). Rows stay JSON objects here: each side decodes them against its
//! schema ([`super::push_body::PushBody`] on the server, the engine on the device).

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use serde_json::value::RawValue;
use std::collections::BTreeMap;

/// The body of a push.
// `changes` is serialized as it is given, so a client sends the batch it already encoded
// without copying its rows. (A doc comment here would be the document's description too.)
#[derive(Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct PushRequest<'a> {
    /// Made once per local database.
    pub device_id: &'a str,
    #[cfg_attr(feature = "server", schema(minimum = 1))]
    pub schema_version: u32,
    /// Rows per table name: flat JSON objects (docs/PROTOCOL.md, "Rows on the wire").
    #[cfg_attr(feature = "server", schema(value_type = Object))]
    pub changes: &'a RawValue,
}

/// The JSON keys of a [`PushRequest`], for the server's decoder ([`super::push_body`]), which
/// reads the body against its schema rather than through the derive.
pub(crate) mod keys {
    pub const DEVICE_ID: &str = "device_id";
    pub const SCHEMA_VERSION: &str = "schema_version";
    pub const CHANGES: &str = "changes";
}

/// The results of a push, per table name.
pub type PushResults = BTreeMap<String, Vec<RowOutcome>>;

/// The answer to a push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct PushResponse {
    pub server_time: String,
    #[cfg_attr(
        feature = "server",
        schema(value_type = BTreeMap<String, Vec<RowResultSchema>>)
    )]
    pub results: PushResults,
}

/// What became of one pushed row: `{"remote_id": ..., "status": ..., <the status's fields>}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowOutcome {
    /// As sent.
    pub remote_id: String,
    #[serde(flatten)]
    pub result: RowResult,
}

/// A pushed row's result, by its `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RowResult {
    /// Stored: a new record, a write that won the merge rule, or a repeat of one stored.
    Applied,
    /// The server holds a greater stamp: `row` is its version, to store as if pulled.
    Stale { row: Json },
    /// Stored into the record `canonical_id`; `row` is the survivor's version when the pushed
    /// write lost the merge rule to it.
    Merged {
        canonical_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        row: Option<Json>,
    },
    /// Not stored; `message` says why.
    Rejected { message: String },
}

// The document's schema of a `RowOutcome`: one object whose optional fields depend on
// `status` (utoipa cannot derive the flattened, internally tagged form serde writes).
#[cfg(feature = "server")]
#[derive(utoipa::ToSchema)]
#[schema(as = RowResult)]
#[allow(dead_code)]
pub struct RowResultSchema {
    remote_id: String,
    /// `applied`, `stale`, `merged` or `rejected`.
    status: String,
    canonical_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    row: Option<Json>,
    message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn outcome(result: RowResult) -> RowOutcome {
        RowOutcome {
            remote_id: "0193a4c2-0000-7000-8000-000000000001".into(),
            result,
        }
    }

    #[test]
    fn the_decoders_keys_are_the_fields_the_device_writes() {
        let changes = RawValue::from_string("{}".into()).unwrap();
        let request = PushRequest {
            device_id: "d",
            schema_version: 1,
            changes: &changes,
        };
        let json = serde_json::to_value(&request).unwrap();
        let mut written: Vec<&str> = json.as_object().unwrap().keys().map(|k| &**k).collect();
        written.sort_unstable();
        let mut read = vec![keys::DEVICE_ID, keys::SCHEMA_VERSION, keys::CHANGES];
        read.sort_unstable();
        assert_eq!(written, read);
    }

    #[test]
    fn row_results_are_the_flat_objects_of_the_protocol() {
        let id = "0193a4c2-0000-7000-8000-000000000001";
        for (result, expected) in [
            (
                RowResult::Applied,
                json!({"remote_id": id, "status": "applied"}),
            ),
            (
                RowResult::Stale {
                    row: json!({"remote_id": id}),
                },
                json!({"remote_id": id, "status": "stale", "row": {"remote_id": id}}),
            ),
            (
                RowResult::Merged {
                    canonical_id: "c".into(),
                    row: None,
                },
                json!({"remote_id": id, "status": "merged", "canonical_id": "c"}),
            ),
            (
                RowResult::Merged {
                    canonical_id: "c".into(),
                    row: Some(json!({"remote_id": "c"})),
                },
                json!({"remote_id": id, "status": "merged", "canonical_id": "c", "row": {"remote_id": "c"}}),
            ),
            (
                RowResult::Rejected {
                    message: "no".into(),
                },
                json!({"remote_id": id, "status": "rejected", "message": "no"}),
            ),
        ] {
            let o = outcome(result);
            let text = serde_json::to_string(&o).unwrap();
            assert_eq!(serde_json::from_str::<Json>(&text).unwrap(), expected);
            assert_eq!(serde_json::from_str::<RowOutcome>(&text).unwrap(), o);
        }
    }

    #[test]
    fn the_remote_id_and_status_lead_each_result() {
        let text = serde_json::to_string(&outcome(RowResult::Rejected {
            message: "no".into(),
        }))
        .unwrap();
        assert!(
            text.starts_with(
                r#"{"remote_id":"0193a4c2-0000-7000-8000-000000000001","status":"rejected""#
            ),
            "{text}"
        );
    }

    #[test]
    fn an_unknown_status_is_no_result() {
        let r = serde_json::from_value::<RowOutcome>(json!({"remote_id": "x", "status": "lost"}));
        assert!(r.is_err());
    }

    #[test]
    fn a_request_sends_its_changes_as_given() {
        let changes = RawValue::from_string(r#"{"lists": [ {"a":1} ]}"#.into()).unwrap();
        let body = PushRequest {
            device_id: "d",
            schema_version: 2,
            changes: &changes,
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"device_id":"d","schema_version":2,"changes":{"lists": [ {"a":1} ]}}"#
        );
    }
}
