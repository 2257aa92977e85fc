//! The server's health answer: what it serves and its limits, read by a device before it sends
//! a password to a server it does not know yet.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Health {
    pub status: String,
    pub schema_version: u32,
    pub min_schema_version: u32,
    pub server_device_id: String,
    pub max_push_rows: usize,
    pub max_body_bytes: usize,
    // The limits below came after the first servers: a device reads them as 0 (not said) from
    // a server that does not send them.
    /// Bytes of one text or JSON value in a pushed row; more rejects the row.
    #[serde(default)]
    pub max_value_bytes: usize,
    /// Bytes of the rows of one pull page (a page holds at least one record).
    #[serde(default)]
    pub max_page_bytes: usize,
    /// Milliseconds a pushed stamp may be ahead of the server's clock; more rejects the row.
    #[serde(default)]
    pub max_clock_ahead_ms: u64,
    /// Bytes of text one natural key of a pushed row may hold (its text values together, UTF-8);
    /// more rejects the row.
    #[serde(default)]
    pub max_key_bytes: usize,
}
