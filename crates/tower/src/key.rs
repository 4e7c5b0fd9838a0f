//! What a request is limited by: its key.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::HeaderName;
use http::request::Parts;

/// Gives the rate-limit key of a request, or `None` when it cannot key it (then the
/// request is refused unless [`RateLimitLayer::allow_unkeyed`](crate::RateLimitLayer::allow_unkeyed)).
pub trait KeyExtractor: Clone + Send + Sync + 'static {
    /// The key of the request with these parts.
    fn key(&self, req: &Parts) -> Option<String>;
}

impl<F> KeyExtractor for F
where
    F: Fn(&Parts) -> Option<String> + Clone + Send + Sync + 'static,
{
    fn key(&self, req: &Parts) -> Option<String> {
        self(req)
    }
}

/// One key for every request: a global limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct Global;

impl KeyExtractor for Global {
    fn key(&self, _: &Parts) -> Option<String> {
        Some("global".to_owned())
    }
}

/// The value of a request header (an API key, a tenant id); a request without it, or
/// with a value that is not visible ASCII, has no key.
#[derive(Debug, Clone)]
pub struct Header(pub HeaderName);

impl KeyExtractor for Header {
    fn key(&self, req: &Parts) -> Option<String> {
        let v = req.headers.get(&self.0)?.to_str().ok()?;
        (!v.is_empty()).then(|| v.to_owned())
    }
}

/// The peer's IP address, from the request's extensions: axum's
/// `ConnectInfo<SocketAddr>` (with the `axum` feature; serve with
/// `into_make_service_with_connect_info::<SocketAddr>()`), or a bare `SocketAddr` a
/// hyper server inserts. A request without either has no key.
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerIp;

fn peer(req: &Parts) -> Option<IpAddr> {
    #[cfg(feature = "axum")]
    if let Some(info) = req.extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(info.0.ip());
    }
    req.extensions.get::<SocketAddr>().map(SocketAddr::ip)
}

impl KeyExtractor for PeerIp {
    fn key(&self, req: &Parts) -> Option<String> {
        peer(req).map(|ip| ip.to_string())
    }
}

/// The client's IP behind reverse proxies you run: the peer's address unless the peer
/// is one of `trusted`, in which case `Forwarded` (`for=`) or else `X-Forwarded-For`
/// is read **right to left**, skipping trusted addresses, and the first untrusted one
/// is the client. A forwarding header from an untrusted peer is ignored (anyone can
/// send one); a chain of only trusted addresses keys by its leftmost.
#[derive(Debug, Clone)]
pub struct ClientIp {
    trusted: Arc<[IpAddr]>,
}

impl ClientIp {
    /// Behind the proxies at `trusted`.
    pub fn behind(trusted: impl IntoIterator<Item = IpAddr>) -> Self {
        ClientIp {
            trusted: trusted.into_iter().collect(),
        }
    }

    fn trusts(&self, ip: &IpAddr) -> bool {
        self.trusted.contains(ip)
    }
}

/// The addresses of a `Forwarded` header's `for=` parameters, in order.
fn forwarded(value: &str) -> Vec<IpAddr> {
    value
        .split(',')
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                if !k.eq_ignore_ascii_case("for") {
                    return None;
                }
                parse_node(v.trim().trim_matches('"'))
            })
        })
        .collect()
}

/// `192.0.2.1`, `192.0.2.1:80`, `[2001:db8::1]`, `[2001:db8::1]:80`.
fn parse_node(v: &str) -> Option<IpAddr> {
    if let Ok(ip) = v.parse() {
        return Some(ip);
    }
    if let Ok(addr) = v.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    v.strip_prefix('[')?.split(']').next()?.parse().ok()
}

impl KeyExtractor for ClientIp {
    fn key(&self, req: &Parts) -> Option<String> {
        let peer = peer(req)?;
        if !self.trusts(&peer) {
            return Some(peer.to_string());
        }
        let all = |name: &str| -> Vec<&str> {
            req.headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect()
        };
        let mut chain: Vec<IpAddr> = all("forwarded").into_iter().flat_map(forwarded).collect();
        if chain.is_empty() {
            chain = all("x-forwarded-for")
                .into_iter()
                .flat_map(|v| v.split(','))
                .filter_map(|s| parse_node(s.trim()))
                .collect();
        }
        let client = chain
            .iter()
            .rev()
            .find(|ip| !self.trusts(ip))
            .or_else(|| chain.first())
            .copied()
            .unwrap_or(peer);
        Some(client.to_string())
    }
}

/// The route (method and path) plus another extractor's key: a limit per endpoint.
#[derive(Debug, Clone)]
pub struct RouteAnd<K>(pub K);

impl<K: KeyExtractor> KeyExtractor for RouteAnd<K> {
    fn key(&self, req: &Parts) -> Option<String> {
        Some(format!("{} {} {}", req.method, req.uri.path(), self.0.key(req)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(peer: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().uri("/x");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let (mut parts, ()) = b.body(()).unwrap().into_parts();
        parts.extensions.insert(peer.parse::<SocketAddr>().unwrap());
        parts
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
        let x = ClientIp::behind([ip("10.0.0.1")]);
        let req = parts("203.0.113.9:5000", &[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(x.key(&req).as_deref(), Some("203.0.113.9"));
    }

    #[test]
    fn the_chain_is_read_right_to_left_past_trusted_proxies() {
        let x = ClientIp::behind([ip("10.0.0.1"), ip("10.0.0.2")]);
        // A client forging a leftmost entry does not choose its key.
        let req = parts("10.0.0.1:80", &[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.2")]);
        assert_eq!(x.key(&req).as_deref(), Some("198.51.100.7"));
        let req = parts(
            "10.0.0.1:80",
            &[(
                "forwarded",
                "for=6.6.6.6, for=\"[2001:db8::1]:4711\";proto=https, for=10.0.0.2",
            )],
        );
        assert_eq!(x.key(&req).as_deref(), Some("2001:db8::1"));
        let req = parts("10.0.0.1:80", &[("x-forwarded-for", "10.0.0.2")]);
        assert_eq!(x.key(&req).as_deref(), Some("10.0.0.2"), "only trusted: the leftmost");
        let req = parts("10.0.0.1:80", &[]);
        assert_eq!(x.key(&req).as_deref(), Some("10.0.0.1"), "no header: the peer");
    }

    #[test]
    fn header_route_global_and_closures_key_requests() {
        let req = parts("192.0.2.1:1", &[("x-api-key", "k1")]);
        assert_eq!(
            Header(HeaderName::from_static("x-api-key")).key(&req).as_deref(),
            Some("k1")
        );
        assert_eq!(Header(HeaderName::from_static("x-other")).key(&req), None);
        assert_eq!(RouteAnd(PeerIp).key(&req).as_deref(), Some("GET /x 192.0.2.1"));
        assert_eq!(Global.key(&req).as_deref(), Some("global"));
        let by_path = |p: &Parts| Some(p.uri.path().to_owned());
        assert_eq!(by_path.key(&req).as_deref(), Some("/x"));
        let (no_peer, ()) = http::Request::new(()).into_parts();
        assert_eq!(PeerIp.key(&no_peer), None, "no peer address: no key");
    }
}
