//! Which server URLs a device sends a password or a token to: `https` anywhere, plain `http`
//! only to this machine (a local test server) unless the app opts in with
//! [`allow_plain_http_anywhere`], never with credentials, a query or a fragment. Every
//! [`super::Remote`] is built through [`check_remote_url`], so the CLI, the settings page and an
//! app calling [`super::connect`] share the one rule.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};

static PLAIN_HTTP_ANYWHERE: AtomicBool = AtomicBool::new(false);

/// Lets this process send passwords and tokens over plain `http://` to any host (a server on a
/// network the app trusts). Without it, plain `http` goes to loopback addresses only.
pub fn allow_plain_http_anywhere() {
    PLAIN_HTTP_ANYWHERE.store(true, Ordering::Relaxed);
}

/// The URL as the client will use it (no trailing slash), or why it is refused, as a sentence
/// naming the address.
pub fn check_remote_url(raw: &str) -> Result<String, String> {
    let bad = |why: &str| format!("the server address `{raw}` {why}");
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
        "http" if is_loopback_host(&host) || PLAIN_HTTP_ANYWHERE.load(Ordering::Relaxed) => {}
        "http" => {
            return Err(bad(
                "must use https:// (plain http:// is allowed only to this machine)",
            ));
        }
        _ => return Err(bad("must start with https://")),
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Whether `ip` is this machine's loopback (an IPv4 one mapped into IPv6 too).
pub(crate) fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        IpAddr::V4(v4) => v4.is_loopback(),
    }
}

/// Whether a host (`name` or `name:port`, as in a URL or a `Host` header) names this machine's
/// loopback.
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inside, port)) if port.is_empty() || port.starts_with(':') => inside,
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return false,
            None => host,
        }
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok_and(is_loopback)
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
