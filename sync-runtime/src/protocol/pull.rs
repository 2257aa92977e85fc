//! `GET /api/sync/pull`: the query it takes and the page it answers (docs/PROTOCOL.md, "Pull").
//! The device writes the query from [`PullQuery`] and the server reads it into the same type;
//! the server writes [`PullResponse`] from its stored records and the device decodes the same
//! shape against its schema ([`super::page`]).

use serde::{Deserialize, Serialize};

/// The query string of a pull.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PullQuery {
    /// The previous page's cursor; absent (or empty) starts a full pull.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Rows per page (clamped to the server's cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// Leave out of an incremental pull the records this device wrote last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Seconds to hold the pull while the account has nothing after `since` (a long-poll).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<u64>,
}

impl PullQuery {
    /// The query string (without `?`), percent-encoded as the server's `Query` reads it.
    pub fn encode(&self) -> String {
        // Only strings and integers: serializing cannot fail.
        serde_urlencoded::to_string(self).unwrap_or_default()
    }
}

/// One page of a pull.
// `Rows` is how its rows are held: the server serializes its stored records in place, the
// device decodes them into its tables' columns (`super::page::PulledRows`). (A doc comment
// here would be the document's description too.)
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "server", schema(bound = ""))]
pub struct PullResponse<Rows> {
    /// Rows per table; all synced tables, empty arrays included.
    #[cfg_attr(feature = "server", schema(value_type = Object))]
    pub changes: Rows,
    /// Pass back as `since` on the next pull.
    pub cursor: String,
    pub has_more: bool,
    /// The server's clock when it answered.
    pub server_time: String,
}

/// The JSON keys of a [`PullResponse`], for the device's decoder, which reads the page
/// against its schema rather than through the derive.
pub(crate) mod keys {
    pub const CHANGES: &str = "changes";
    pub const CURSOR: &str = "cursor";
    pub const HAS_MORE: &str = "has_more";
    pub const SERVER_TIME: &str = "server_time";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decoders_keys_are_the_fields_the_server_writes() {
        let page = PullResponse {
            changes: serde_json::json!({}),
            cursor: "c".into(),
            has_more: true,
            server_time: "t".into(),
        };
        let json = serde_json::to_value(&page).unwrap();
        let mut written: Vec<&str> = json.as_object().unwrap().keys().map(|k| &**k).collect();
        written.sort_unstable();
        let mut read = vec![
            keys::CHANGES,
            keys::CURSOR,
            keys::HAS_MORE,
            keys::SERVER_TIME,
        ];
        read.sort_unstable();
        assert_eq!(written, read);
    }

    /// What the device's HTTP client writes, the server's extractor reads back.
    #[test]
    fn a_query_round_trips_through_the_query_string() {
        let q = PullQuery {
            since: Some("c1.3.17.f9 & =%+é".into()),
            limit: Some(500),
            device_id: Some("0193a4c0-0000-7000-8000-000000000000".into()),
            wait: Some(25),
        };
        let read = |s: &str| serde_urlencoded::from_str::<PullQuery>(s).unwrap();
        assert_eq!(read(&q.encode()), q);
        assert_eq!(PullQuery::default().encode(), "");
        assert_eq!(read(""), PullQuery::default());
    }
}
