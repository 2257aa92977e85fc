//! Which remote URLs a device may send a password to: `https` anywhere, plain `http` only to
//! this machine (a local test server), never with credentials, a query or a fragment.

use super::error::ControlError;
use super::guard::is_loopback_host;

/// The URL as the client will use it (no trailing slash), or why it is refused.
pub fn check_remote_url(raw: &str) -> Result<String, ControlError> {
    let bad = |why: &str| ControlError::BadRequest(format!("the server address `{raw}` {why}"));
    let url = reqwest::Url::parse(raw.trim())
        .map_err(|_| bad("is not a URL; write it like https://zentrio.eu"))?;
    let host = url
        .host_str()
        .ok_or_else(|| bad("has no host name"))?
        .to_owned();
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry a user name or password"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not carry a query or a fragment"));
    }
    match url.scheme() {
        "https" => {}
        "http" if is_loopback_host(&host) => {}
        "http" => {
            return Err(bad(
                "must use https:// (plain http:// is allowed only to this machine)",
            ));
        }
        _ => return Err(bad("must start with https://")),
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_and_http_only_to_loopback() {
        assert_eq!(
            check_remote_url("https://zentrio.eu").unwrap(),
            "https://zentrio.eu"
        );
        assert_eq!(
            check_remote_url(" https://sync.example.org/base/ ").unwrap(),
            "https://sync.example.org/base"
        );
        assert_eq!(
            check_remote_url("http://127.0.0.1:8787").unwrap(),
            "http://127.0.0.1:8787"
        );
        assert_eq!(
            check_remote_url("http://localhost:8787/").unwrap(),
            "http://localhost:8787"
        );
        assert!(check_remote_url("http://[::1]:8787").is_ok());
        for bad in [
            "http://zentrio.eu",
            "http://192.168.1.2:8787",
            "ftp://zentrio.eu",
            "zentrio.eu",
            "https://user:pw@zentrio.eu",
            "https://zentrio.eu/?x=1",
            "",
        ] {
            assert!(check_remote_url(bad).is_err(), "{bad}");
        }
    }
}
