//! What a request is limited by: its key.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use http::HeaderName;
use http::request::Parts;
use ipnet::{IpNet, Ipv4Net};

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

/// The value of a request header (an API key, a tenant id); a request without it, with
/// a value that is not visible ASCII, or with the header more than once, has no key.
///
/// More than once: the service's own code might read another of the values than this
/// extractor (`HeaderMap::get` is the first), and a client authenticated by one value
/// would choose its limit's key with the other.
#[derive(Debug, Clone)]
pub struct Header(pub HeaderName);

impl KeyExtractor for Header {
    fn key(&self, req: &Parts) -> Option<String> {
        let mut values = req.headers.get_all(&self.0).iter();
        let v = values.next()?.to_str().ok()?;
        (!v.is_empty() && values.next().is_none()).then(|| v.to_owned())
    }
}

/// The IPv6 prefix [`PeerIp`] and [`ClientIp`] key an IPv6 client by, unless told
/// otherwise: one `/64` is one site (RFC 6177), and a client that holds one can pick
/// any of its 2^64 addresses — keyed by the whole address, it would choose a fresh key
/// for each request.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// The peer's IP address, from the request's extensions: axum's
/// `ConnectInfo<SocketAddr>` (with the `axum` feature; serve with
/// `into_make_service_with_connect_info::<SocketAddr>()`), or a bare `SocketAddr` a
/// hyper server inserts. A request without either has no key.
///
/// The key is the address as [`ClientIp`] writes it: an IPv4 client seen through a
/// dual-stack socket (`::ffff:192.0.2.1`) is its IPv4 address, an IPv6 client its
/// [`DEFAULT_IPV6_PREFIX`] network (`2001:db8:1:2::/64`). For another prefix, or the
/// whole address, use `ClientIp::behind([]).ipv6_prefix(n)` (no trusted proxy: the
/// peer).
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerIp;

fn peer(req: &Parts) -> Option<IpAddr> {
    #[cfg(feature = "axum")]
    if let Some(info) = req.extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(info.0.ip().to_canonical());
    }
    req.extensions.get::<SocketAddr>().map(|a| a.ip().to_canonical())
}

/// `ip` as a key: IPv4 whole, IPv6 as its `prefix`-bit network (the whole address at
/// 128).
fn ip_key(ip: IpAddr, prefix: u8) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) if prefix >= 128 => v6.to_string(),
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            format!("{}/{prefix}", Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

impl KeyExtractor for PeerIp {
    fn key(&self, req: &Parts) -> Option<String> {
        peer(req).map(|ip| ip_key(ip, DEFAULT_IPV6_PREFIX))
    }
}

/// Which forwarding header a [`ClientIp`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chain {
    XForwardedFor,
    Forwarded,
}

/// The client's IP behind reverse proxies you run.
///
/// The key is the peer's address unless the peer is one of `trusted` (addresses with
/// [`ClientIp::behind`], networks with [`ClientIp::behind_networks`]). From a trusted
/// peer, the one forwarding header your proxies write — `X-Forwarded-For`, or with
/// [`ClientIp::forwarded`] RFC 7239's `Forwarded` (`for=`), never both — is read
/// **right to left**: each trusted address is a proxy of yours and the walk goes on,
/// and the first entry that is not one decides.
///
/// - An address there is the client: the key (as [`PeerIp`] writes it: IPv4 whole,
///   IPv6 by its [`ClientIp::ipv6_prefix`] network, default
///   [`DEFAULT_IPV6_PREFIX`]; IPv4-mapped IPv6 as IPv4, in `trusted` too).
/// - Anything else there — `unknown`, an obfuscated identifier (`_hidden`), garbage —
///   ends the walk, and the request is keyed by the trusted hop that wrote it (the
///   proxy that could not name its client): the entries left of it are whatever the
///   client sent, so they never decide.
/// - A chain of only trusted addresses keys by its leftmost; no header, by the peer.
/// - A forwarding header from an untrusted peer is ignored (anyone can send one), and so
///   is the header this extractor does not read (a client can send that one through
///   your proxies untouched).
#[derive(Debug, Clone)]
pub struct ClientIp {
    trusted: Arc<[IpNet]>,
    chain: Chain,
    ipv6_prefix: u8,
}

/// `net` with an IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) as the IPv4 network
/// it maps (`10.0.0.0/8`): addresses are compared canonical.
fn canonical_net(net: IpNet) -> IpNet {
    match (net.addr().to_canonical(), net.prefix_len()) {
        (IpAddr::V4(v4), len) if net.addr().is_ipv6() && len >= 96 => {
            Ipv4Net::new(v4, len - 96).map_or(net, |n| IpNet::V4(n).trunc())
        }
        _ => net,
    }
}

impl ClientIp {
    /// Behind the proxies at `trusted`, which write `X-Forwarded-For` (nginx's
    /// `$proxy_add_x_forwarded_for`, HAProxy's `option forwardfor`, most load balancers).
    pub fn behind(trusted: impl IntoIterator<Item = IpAddr>) -> Self {
        ClientIp::trusting(trusted.into_iter().map(|ip| canonical_net(IpNet::from(ip))))
    }

    /// Behind the proxies in `networks`, each an address (`10.0.0.1`) or a network in
    /// CIDR form (`10.0.0.0/8`, `2001:db8::/32`): for proxies whose addresses change
    /// within a range (a Kubernetes ingress, a cloud load balancer). Every address in a
    /// network is trusted, so name only ranges that hold nothing but your proxies. An
    /// entry that is neither form is [`Error::Config`](palisade_cache_core::Error),
    /// naming it.
    pub fn behind_networks<S: AsRef<str>>(
        networks: impl IntoIterator<Item = S>,
    ) -> Result<Self, palisade_cache_core::Error> {
        let nets = networks
            .into_iter()
            .map(|n| {
                let text = n.as_ref().trim();
                text.parse::<IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| canonical_net(net.trunc()))
                    .map_err(|_| {
                        palisade_cache_core::Error::config(format!(
                            "trusted proxy {text:?} is neither an IP address nor a network (10.0.0.0/8)"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ClientIp::trusting(nets))
    }

    fn trusting(trusted: impl IntoIterator<Item = IpNet>) -> Self {
        ClientIp {
            trusted: trusted.into_iter().collect(),
            chain: Chain::XForwardedFor,
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
        }
    }

    /// Reads RFC 7239's `Forwarded` header instead of `X-Forwarded-For`: for proxies
    /// that write `Forwarded` (`X-Forwarded-For` is then ignored).
    pub fn forwarded(mut self) -> Self {
        self.chain = Chain::Forwarded;
        self
    }

    /// Keys an IPv6 client by its `bits`-bit network (at most 128: the whole address;
    /// default [`DEFAULT_IPV6_PREFIX`]).
    pub fn ipv6_prefix(mut self, bits: u8) -> Self {
        self.ipv6_prefix = bits.min(128);
        self
    }

    fn trusts(&self, ip: &IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(ip))
    }

    /// The chain's entries, left to right, as addresses (`None`: not one).
    fn entries(&self, req: &Parts) -> Vec<Option<IpAddr>> {
        let lines = req.headers.get_all(match self.chain {
            Chain::XForwardedFor => "x-forwarded-for",
            Chain::Forwarded => "forwarded",
        });
        let mut out = Vec::new();
        for line in lines {
            // A line that is not text cannot be read at all: one entry that is not an
            // address (it ends the walk where it stands).
            let Ok(line) = line.to_str() else {
                out.push(None);
                continue;
            };
            for element in line.split(',') {
                out.push(match self.chain {
                    Chain::XForwardedFor => parse_node(element.trim()),
                    Chain::Forwarded => forwarded_for(element),
                });
            }
        }
        out
    }
}

/// The address of one `Forwarded` element's `for=` parameter (`None`: none, or not an
/// address).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let v = element.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim().eq_ignore_ascii_case("for").then_some(v)
    })?;
    parse_node(v.trim().trim_matches('"'))
}

/// `192.0.2.1`, `192.0.2.1:80`, `[2001:db8::1]`, `[2001:db8::1]:80`, canonical
/// (IPv4-mapped IPv6 as IPv4).
fn parse_node(v: &str) -> Option<IpAddr> {
    let ip = if let Ok(ip) = v.parse::<IpAddr>() {
        ip
    } else if let Ok(addr) = v.parse::<SocketAddr>() {
        addr.ip()
    } else {
        v.strip_prefix('[')?.split(']').next()?.parse().ok()?
    };
    Some(ip.to_canonical())
}

impl KeyExtractor for ClientIp {
    fn key(&self, req: &Parts) -> Option<String> {
        let peer = peer(req)?;
        // `hop`: the nearest trusted address so far, the one that wrote the entry to
        // its left.
        let mut hop = peer;
        if self.trusts(&peer) {
            for entry in self.entries(req).into_iter().rev() {
                match entry {
                    Some(ip) if self.trusts(&ip) => hop = ip,
                    Some(client) => return Some(ip_key(client, self.ipv6_prefix)),
                    None => break,
                }
            }
        }
        Some(ip_key(hop, self.ipv6_prefix))
    }
}

/// The route (method and path) plus another extractor's key: a limit per endpoint.
///
/// The route is axum's matched route template (`/users/{id}`) when the request carries
/// one (the `axum` feature, the layer added inside the `Router` with `layer` or
/// `route_layer`), else the request's path. Keyed by the concrete path, a client
/// enumerating `/users/1`, `/users/2`, … would get an allowance per path, not per
/// endpoint.
#[derive(Debug, Clone)]
pub struct RouteAnd<K>(pub K);

fn route(req: &Parts) -> &str {
    #[cfg(feature = "axum")]
    if let Some(matched) = req.extensions.get::<axum::extract::MatchedPath>() {
        return matched.as_str();
    }
    req.uri.path()
}

impl<K: KeyExtractor> KeyExtractor for RouteAnd<K> {
    fn key(&self, req: &Parts) -> Option<String> {
        Some(format!("{} {} {}", req.method, route(req), self.0.key(req)?))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

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
        let req = parts("203.0.113.9:5000", &[("forwarded", "for=1.2.3.4")]);
        assert_eq!(x.forwarded().key(&req).as_deref(), Some("203.0.113.9"));
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
        let f = x.clone().forwarded().ipv6_prefix(128);
        assert_eq!(f.key(&req).as_deref(), Some("2001:db8::1"));
        let req = parts("10.0.0.1:80", &[("x-forwarded-for", "10.0.0.2")]);
        assert_eq!(x.key(&req).as_deref(), Some("10.0.0.2"), "only trusted: the leftmost");
        let req = parts("10.0.0.1:80", &[]);
        assert_eq!(x.key(&req).as_deref(), Some("10.0.0.1"), "no header: the peer");
    }

    /// The header the proxies do not write reaches the service as the client sent it.
    #[test]
    fn the_header_the_proxies_do_not_write_is_never_read() {
        let x = ClientIp::behind([ip("10.0.0.1")]);
        // nginx appends to X-Forwarded-For and passes the client's `Forwarded` on.
        let req = parts(
            "10.0.0.1:80",
            &[("forwarded", "for=6.6.6.6"), ("x-forwarded-for", "198.51.100.7")],
        );
        assert_eq!(x.key(&req).as_deref(), Some("198.51.100.7"));
        let req = parts(
            "10.0.0.1:80",
            &[("x-forwarded-for", "6.6.6.6"), ("forwarded", "for=198.51.100.7")],
        );
        assert_eq!(x.forwarded().key(&req).as_deref(), Some("198.51.100.7"));
    }

    /// An entry that names no address (`unknown`, an obfuscated identifier, garbage)
    /// ends the walk: what is left of it is the client's own text.
    #[test]
    fn an_entry_that_is_not_an_address_ends_the_walk() {
        let x = ClientIp::behind([ip("10.0.0.1"), ip("10.0.0.2")]);
        for chain in [
            "for=6.6.6.6, for=unknown, for=10.0.0.2",
            "for=6.6.6.6, for=_hidden, for=10.0.0.2",
            "for=6.6.6.6, proto=https, for=10.0.0.2",
        ] {
            let req = parts("10.0.0.1:80", &[("forwarded", chain)]);
            assert_eq!(x.clone().forwarded().key(&req).as_deref(), Some("10.0.0.2"), "{chain}");
        }
        for chain in ["6.6.6.6, unknown, 10.0.0.2", "6.6.6.6,,10.0.0.2", "6.6.6.6, 1.2.3.4.5"] {
            let req = parts("10.0.0.1:80", &[("x-forwarded-for", chain)]);
            let want = if chain.ends_with("10.0.0.2") {
                "10.0.0.2"
            } else {
                "10.0.0.1"
            };
            assert_eq!(x.key(&req).as_deref(), Some(want), "{chain}");
        }
    }

    #[test]
    fn proxies_can_be_trusted_by_network() {
        let x = ClientIp::behind_networks(["10.0.0.0/8", " 2001:db8:ffff::/48 ", "192.0.2.7"]).unwrap();
        let req = parts(
            "10.20.30.40:80",
            &[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.9.9.9")],
        );
        assert_eq!(x.key(&req).as_deref(), Some("198.51.100.7"), "two proxies of the range");
        let req = parts(
            "[2001:db8:ffff:1::5]:80",
            &[("x-forwarded-for", "198.51.100.8, 192.0.2.7")],
        );
        assert_eq!(x.key(&req).as_deref(), Some("198.51.100.8"));
        let req = parts("[::ffff:10.1.1.1]:80", &[("x-forwarded-for", "198.51.100.9")]);
        assert_eq!(
            x.key(&req).as_deref(),
            Some("198.51.100.9"),
            "a mapped peer in the range"
        );
        let req = parts("11.0.0.1:80", &[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(x.key(&req).as_deref(), Some("11.0.0.1"), "outside the range: untrusted");
        let mapped = ClientIp::behind_networks(["::ffff:10.0.0.0/104"]).unwrap();
        let req = parts("10.3.3.3:80", &[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(
            mapped.key(&req).as_deref(),
            Some("198.51.100.7"),
            "a mapped network is its IPv4 one"
        );
        for bad in ["10.0.0.0/33", "nonsense", "", "10.0.0.0/8/1"] {
            let e = ClientIp::behind_networks([bad]).unwrap_err();
            assert_eq!(e.kind(), palisade_cache_core::ErrorKind::Config, "{bad:?}");
            assert!(e.to_string().contains(&format!("{:?}", bad.trim())), "{e}");
        }
    }

    #[test]
    fn ipv4_mapped_addresses_are_their_ipv4_address() {
        let x = ClientIp::behind([ip("10.0.0.1")]);
        let req = parts("[::ffff:10.0.0.1]:80", &[("x-forwarded-for", "::ffff:198.51.100.7")]);
        assert_eq!(
            x.key(&req).as_deref(),
            Some("198.51.100.7"),
            "a trusted proxy on a dual-stack socket"
        );
        let req = parts("[::ffff:192.0.2.1]:80", &[]);
        assert_eq!(PeerIp.key(&req).as_deref(), Some("192.0.2.1"));
    }

    #[test]
    fn an_ipv6_client_is_keyed_by_its_network() {
        let a = parts("[2001:db8:1:2:aaaa::1]:80", &[]);
        let b = parts("[2001:db8:1:2:bbbb::9]:80", &[]);
        let c = parts("[2001:db8:1:3::1]:80", &[]);
        assert_eq!(PeerIp.key(&a).as_deref(), Some("2001:db8:1:2::/64"));
        assert_eq!(PeerIp.key(&a), PeerIp.key(&b), "one /64, one key");
        assert_ne!(PeerIp.key(&a), PeerIp.key(&c));
        let whole = ClientIp::behind([]).ipv6_prefix(128);
        assert_eq!(whole.key(&a).as_deref(), Some("2001:db8:1:2:aaaa::1"));
        assert_eq!(
            ClientIp::behind([]).ipv6_prefix(48).key(&c).as_deref(),
            Some("2001:db8:1::/48")
        );
        assert_eq!(ClientIp::behind([]).ipv6_prefix(0).key(&c).as_deref(), Some("::/0"));
        assert_eq!(
            ClientIp::behind([]).ipv6_prefix(200).key(&c).as_deref(),
            Some("2001:db8:1:3::1")
        );
    }

    /// Your proxies, outermost first: the service's peer is `PROXIES[0]`.
    const PROXIES: [IpAddr; 3] = [
        IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)),
        IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)),
        IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 3)),
    ];

    /// A request from `client` (`None`: one its proxy cannot name, written `unknown`)
    /// through `hops` inner proxies and `PROXIES[0]`, which reaches the service over a
    /// dual-stack socket when `mapped`. Each proxy appends the address it saw to the
    /// header `chain` names, to the right of whatever the client sent in it
    /// (`forged`, `true`: in that header; `false`: in the other one).
    fn through_proxies(
        chain: Chain,
        client: Option<IpAddr>,
        hops: usize,
        forged: &[(bool, String)],
        mapped: bool,
    ) -> Parts {
        let (ours, theirs) = match chain {
            Chain::Forwarded => ("forwarded", "x-forwarded-for"),
            Chain::XForwardedFor => ("x-forwarded-for", "forwarded"),
        };
        let entry = |a: Option<IpAddr>| match (chain, a) {
            (Chain::Forwarded, Some(IpAddr::V6(v6))) => format!("for=\"[{v6}]:4711\""),
            (Chain::Forwarded, Some(a)) => format!("for={a};proto=https"),
            (Chain::Forwarded, None) => "for=unknown".to_owned(),
            (Chain::XForwardedFor, Some(a)) => a.to_string(),
            (Chain::XForwardedFor, None) => "unknown".to_owned(),
        };
        let mut line: Vec<String> = forged
            .iter()
            .filter(|(ours, _)| *ours)
            .map(|(_, t)| t.clone())
            .collect();
        line.push(entry(client));
        line.extend(PROXIES[1..=hops].iter().rev().map(|p| entry(Some(*p))));
        let mut b = http::Request::builder().uri("/x");
        for (_, text) in forged.iter().filter(|(ours, _)| !*ours) {
            b = b.header(theirs, text.as_str());
        }
        let (mut req, ()) = b.header(ours, line.join(", ")).body(()).unwrap().into_parts();
        let peer = match PROXIES[0] {
            IpAddr::V4(v4) if mapped => IpAddr::V6(v4.to_ipv6_mapped()),
            p => p,
        };
        req.extensions.insert(SocketAddr::new(peer, 80));
        req
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(IpAddr::from),
            any::<[u8; 4]>().prop_map(|b| IpAddr::V6(std::net::Ipv4Addr::from(b).to_ipv6_mapped())),
        ]
    }

    proptest::proptest! {
        /// Whatever a client sends — lines of the other header, entries of this one,
        /// any text, addresses trusted or not — left of what your proxies wrote, its
        /// key is the address the innermost of them saw (or, when that one could not
        /// name it, that proxy's): it never chooses another.
        #[test]
        fn nothing_a_client_sends_chooses_its_key(
            client in proptest::option::weighted(0.8, any_ip()),
            hops in 0usize..3,
            forged in proptest::collection::vec(
                (any::<bool>(), "[ -~]{0,40}|(for=)?(10\\.0\\.0\\.[1-3]|[0-9.]{7,15}|unknown)"),
                0..4,
            ),
            forwarded in any::<bool>(),
            mapped in any::<bool>(),
        ) {
            // A client at a proxy's address is passed like a proxy: not this case.
            prop_assume!(client.is_none_or(|c| !PROXIES.contains(&c.to_canonical())));
            let chain = if forwarded { Chain::Forwarded } else { Chain::XForwardedFor };
            let x = ClientIp::behind(PROXIES);
            let x = if forwarded { x.forwarded() } else { x };
            let req = through_proxies(chain, client, hops, &forged, mapped);
            let want = ip_key(client.unwrap_or(PROXIES[hops]).to_canonical(), DEFAULT_IPV6_PREFIX);
            prop_assert_eq!(x.key(&req), Some(want), "{:?}", req.headers);
        }
    }

    #[test]
    fn header_route_global_and_closures_key_requests() {
        let req = parts("192.0.2.1:1", &[("x-api-key", "k1")]);
        assert_eq!(
            Header(HeaderName::from_static("x-api-key")).key(&req).as_deref(),
            Some("k1")
        );
        assert_eq!(Header(HeaderName::from_static("x-other")).key(&req), None);
        let twice = parts("192.0.2.1:1", &[("x-api-key", "forged"), ("x-api-key", "k1")]);
        let key = Header(HeaderName::from_static("x-api-key"));
        assert_eq!(
            key.key(&twice),
            None,
            "two values: which one the service reads is unknown"
        );
        let empty = parts("192.0.2.1:1", &[("x-api-key", "")]);
        assert_eq!(key.key(&empty), None);
        assert_eq!(RouteAnd(PeerIp).key(&req).as_deref(), Some("GET /x 192.0.2.1"));
        assert_eq!(Global.key(&req).as_deref(), Some("global"));
        let by_path = |p: &Parts| Some(p.uri.path().to_owned());
        assert_eq!(by_path.key(&req).as_deref(), Some("/x"));
        let (no_peer, ()) = http::Request::new(()).into_parts();
        assert_eq!(PeerIp.key(&no_peer), None, "no peer address: no key");
    }
}
