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

/// Whether a request's `Content-Type` says JSON (`application/json`, parameters such as
/// `charset` aside, any case): the only body the sync server and the local control API take.
pub fn is_json(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_is_told_by_its_media_type_alone() {
        assert!(is_json(Some("application/json")));
        assert!(is_json(Some("Application/JSON; charset=utf-8")));
        assert!(!is_json(Some("text/plain")));
        assert!(!is_json(Some("application/json-patch+json")));
        assert!(!is_json(None));
    }
}
