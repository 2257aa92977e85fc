//! The client's address behind reverse proxies. Rate limits key on it: behind nginx, Caddy or a
//! load balancer every socket comes from the proxy, so every user would share one limit.
//!
//! Only a request whose socket peer is a trusted proxy has its forwarding header read, and
//! only the header the operator names (a proxy passes the other one through as the client sent
//! it, so reading both would let a client choose its address). The header is read from the
//! right: each hop was appended by the one after it, so the right-most address that is not a
//! trusted proxy is the first one a trusted proxy saw connect. Anything to its left is the
//! client's to write, and is ignored.

use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// Which header a trusted proxy writes the client's address into.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1` (nginx, Caddy, HAProxy, most load balancers).
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

impl std::str::FromStr for ForwardedHeader {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(ForwardedHeader::XForwardedFor),
            "forwarded" => Ok(ForwardedHeader::Forwarded),
            _ => Err(format!(
                "`{s}` is not a forwarding header: write x-forwarded-for or forwarded"
            )),
        }
    }
}

/// The proxies whose forwarding header is believed, and which header that is. Empty (the
/// default): no header is read, the socket's peer is the client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
    pub header: ForwardedHeader,
}

impl TrustedProxies {
    /// Proxies given as addresses (`10.0.0.7`) or networks (`10.0.0.0/8`, `fd00::/8`).
    pub fn parse<'a>(
        entries: impl IntoIterator<Item = &'a str>,
        header: ForwardedHeader,
    ) -> Result<Self, String> {
        let mut networks = Vec::new();
        for entry in entries.into_iter().map(str::trim).filter(|e| !e.is_empty()) {
            let net = match entry.parse::<IpNet>() {
                Ok(net) => net,
                Err(_) => entry
                    .parse::<IpAddr>()
                    .map(IpNet::from)
                    .map_err(|_| format!("`{entry}` is not an address or a network (CIDR)"))?,
            };
            networks.push(net.trunc());
        }
        Ok(TrustedProxies { networks, header })
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(&address))
    }
}

/// The client's address: the socket's `peer`, or, when the peer is a trusted proxy, the
/// right-most untrusted hop of the forwarding header (the left-most hop when every one is
/// trusted). A hop that is not an address (`unknown`, an obfuscated name) ends the walk at the
/// proxy that wrote it.
pub(crate) fn client_address(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted: &TrustedProxies,
) -> Option<IpAddr> {
    let mut client = peer?.to_canonical();
    if !trusted.trusts(client) {
        return Some(client);
    }
    let hops = forwarded_hops(headers, trusted.header);
    for hop in hops.iter().rev() {
        match hop {
            Some(address) if trusted.trusts(client) => client = *address,
            _ => break,
        }
    }
    Some(client)
}

/// Every hop of the header, left to right, over all its lines; `None` for one that is not an
/// address.
fn forwarded_hops(headers: &HeaderMap, header: ForwardedHeader) -> Vec<Option<IpAddr>> {
    let name = match header {
        ForwardedHeader::XForwardedFor => "x-forwarded-for",
        ForwardedHeader::Forwarded => "forwarded",
    };
    let mut hops = Vec::new();
    for line in headers.get_all(name) {
        // A line that is not text is not an address either.
        let Ok(line) = line.to_str() else {
            hops.push(None);
            continue;
        };
        for element in line.split(',') {
            hops.push(match header {
                ForwardedHeader::XForwardedFor => parse_node(element),
                ForwardedHeader::Forwarded => forwarded_for(element),
            });
        }
    }
    hops
}

/// The `for=` of one element of a `Forwarded` header (`for=192.0.2.60;proto=https`).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("for")
            .then(|| parse_node(value.trim().trim_matches('"')))?
    })
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]:4711`.
fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            text.strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse().ok())
        })
        .map(|a: IpAddr| a.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn the_right_most_untrusted_hop_from_a_trusted_peer() {
        let trusted =
            TrustedProxies::parse(["10.0.0.0/8", "192.0.2.9"], ForwardedHeader::XForwardedFor)
                .unwrap();
        let h = headers("x-forwarded-for", &["6.6.6.6, 198.51.100.7", "10.1.2.3"]);
        assert_eq!(
            client_address(ip("192.0.2.9"), &h, &trusted),
            ip("198.51.100.7"),
            "the forged left-most hop is not believed"
        );
        assert_eq!(
            client_address(ip("203.0.113.5"), &h, &trusted),
            ip("203.0.113.5"),
            "an untrusted peer's header is ignored"
        );
        let all_trusted = headers("x-forwarded-for", &["10.9.9.9, 10.1.1.1"]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &all_trusted, &trusted),
            ip("10.9.9.9")
        );
        let unknown = headers("x-forwarded-for", &["198.51.100.7, unknown"]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &unknown, &trusted),
            ip("10.0.0.1"),
            "a hop that is not an address stops the walk"
        );
        assert_eq!(
            client_address(ip("::ffff:192.0.2.9"), &h, &trusted),
            ip("198.51.100.7"),
            "an IPv4 peer on an IPv6 socket is still the proxy"
        );
    }

    #[test]
    fn only_the_named_header_is_read() {
        let xff = TrustedProxies::parse(["127.0.0.1"], ForwardedHeader::XForwardedFor).unwrap();
        let fwd = TrustedProxies::parse(["127.0.0.1"], ForwardedHeader::Forwarded).unwrap();
        let mut h = headers(
            "forwarded",
            &[r#"for=6.6.6.6, for="[2001:db8::17]:4711";proto=https"#],
        );
        assert_eq!(client_address(ip("127.0.0.1"), &h, &xff), ip("127.0.0.1"));
        assert_eq!(
            client_address(ip("127.0.0.1"), &h, &fwd),
            ip("2001:db8::17")
        );
        h.append("x-forwarded-for", "198.51.100.1:5000".parse().unwrap());
        assert_eq!(
            client_address(ip("127.0.0.1"), &h, &xff),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn entries_are_addresses_or_networks() {
        assert!(
            TrustedProxies::parse(["10.0.0.1", "fd00::/8"], ForwardedHeader::default()).is_ok()
        );
        assert!(TrustedProxies::parse(["10.0.0.0/33"], ForwardedHeader::default()).is_err());
        assert!(TrustedProxies::parse(["proxy.local"], ForwardedHeader::default()).is_err());
    }
}
