//! The protocol's own HTTP headers, lowercase as HTTP/2 and `http::HeaderName` want them
//! (header names compare case-insensitively on the wire).

/// Request: the client's schema version on a pull (absent: the server's own).
pub const SCHEMA_VERSION: &str = "x-sync-schema-version";
/// Answer to a pull: the page's `cursor`, so the next page can be asked for before this
/// one's body is read.
pub const CURSOR: &str = "x-sync-cursor";
/// Answer to a pull: the page's `has_more`, `true` or `false`.
pub const HAS_MORE: &str = "x-sync-has-more";
/// Answer to a pull that asked to `wait`: the seconds the server agreed to hold it.
pub const WAIT: &str = "x-sync-wait";
