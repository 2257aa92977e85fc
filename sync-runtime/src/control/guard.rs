//! Who may use the control API: this machine's own page, nothing else. A local web API is
//! reachable from every web page the user visits, so each request must prove it comes from the
//! page served here:
//! - the peer is a loopback address;
//! - `Host` names a loopback address (`127.0.0.1`, `[::1]`, `localhost`): a foreign domain
//!   rebound to 127.0.0.1 (DNS rebinding) still sends its own name;
//! - `Origin`, which browsers send with every cross-origin and every state-changing request,
//!   is this very host (CSRF);
//! - `Sec-Fetch-Site`, when the browser sends it, says same-origin or a typed address.

use super::error::ControlError;
use crate::client::remote_url::{is_loopback, is_loopback_host};
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, SocketAddr};

/// Refuses every request that is not the page's own; marks every answer uncacheable.
pub(crate) async fn same_origin_only(req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Err(e) = check(peer, req.headers()) {
        return e.into_response();
    }
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// Checks one request's peer and headers.
pub fn check(peer: Option<IpAddr>, headers: &HeaderMap) -> Result<(), ControlError> {
    // Without the peer's address (the app served the router without connection info) the
    // check would be skipped: refuse instead, saying how to serve it.
    let Some(ip) = peer else {
        return Err(ControlError::Forbidden(
            "this API needs the peer's address: serve the router with \
             `into_make_service_with_connect_info::<SocketAddr>()`"
                .into(),
        ));
    };
    if !is_loopback(ip) {
        return Err(ControlError::Forbidden(
            "this API answers this machine only".into(),
        ));
    }
    // Each header the guard reads must come once: with two, the guard would read the first
    // and a server or proxy behind it might read the other.
    for name in [
        header::HOST.as_str(),
        header::ORIGIN.as_str(),
        "sec-fetch-site",
    ] {
        if headers.get_all(name).iter().nth(1).is_some() {
            return Err(ControlError::Forbidden(format!(
                "a request with more than one `{name}` header"
            )));
        }
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ControlError::Forbidden("a request without a Host header".into()))?;
    if !is_loopback_host(host) {
        return Err(ControlError::Forbidden(format!(
            "this API answers requests addressed to 127.0.0.1, [::1] or localhost, not to `{host}`"
        )));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let own = [format!("http://{host}"), format!("https://{host}")];
        if !own.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
            return Err(ControlError::Forbidden(format!(
                "a page of another origin (`{origin}`) may not use this API"
            )));
        }
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if site != "same-origin" && site != "none" {
            return Err(ControlError::Forbidden(format!(
                "a request from a {site} page may not use this API"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duplicated_guard_header_or_a_missing_peer_address_is_refused() {
        let own = |headers: &mut HeaderMap| {
            headers.append(header::HOST, HeaderValue::from_static("127.0.0.1:8790"));
            headers.append(
                header::ORIGIN,
                HeaderValue::from_static("http://127.0.0.1:8790"),
            );
            headers.append("sec-fetch-site", HeaderValue::from_static("same-origin"));
        };
        let mut single = HeaderMap::new();
        own(&mut single);
        let loopback = Some(IpAddr::from([127, 0, 0, 1]));
        assert!(check(loopback, &single).is_ok());
        // Before (issue 25): with no peer address the peer check was skipped.
        assert!(check(None, &single).is_err(), "no peer address");
        for (name, foreign) in [
            ("host", "evil.example"),
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ] {
            let mut doubled = HeaderMap::new();
            own(&mut doubled);
            doubled.append(name, HeaderValue::from_static(foreign));
            assert!(
                check(loopback, &doubled).is_err(),
                "a second {name}: {foreign}"
            );
        }
    }

    #[test]
    fn loopback_hosts_are_told_from_others() {
        for ok in [
            "127.0.0.1:8790",
            "127.0.0.1",
            "localhost:1",
            "LOCALHOST",
            "[::1]:8790",
            "[::1]",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example:8790",
            "127.0.0.1.evil.example",
            "localhost.evil.example:80",
            "10.0.0.1:8790",
            "[::2]:80",
            "127.0.0.1:80x",
            "",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }
}
