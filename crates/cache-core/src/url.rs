//! Redis URLs, parsed once into parts: the one parser of palisade.
//!
//! Every URL palisade accepts is parsed here into a [`RedisUrl`]; everything printable
//! about a connection (an [`Endpoint`], errors, `doctor`, the CLI) is built from the
//! parsed parts, never from the raw text, so no shape of URL can make a password
//! printable. A URL that cannot be parsed prints as [`UNPARSEABLE`], and parse errors
//! say what is wrong without quoting the input.
//!
//! # Accepted forms
//!
//! ```text
//! [redis://][user[:password]@]host[:port][/db]          standalone (no scheme: redis://)
//! rediss://[user[:password]@]host[:port][/db]           standalone over TLS
//! redis-cluster://[user[:password]@]h1[:p1][,h2[:p2]…]  a Redis Cluster's seeds
//! rediss-cluster://…                                    the same over TLS
//! URL,URL[,URL…]                                        several seeds: a cluster
//! redis-sentinel://[user[:password]@]s1[:p1][,s2…]/SERVICE[/db]   Sentinel
//! rediss-sentinel://…                                   the same over TLS
//! ```
//!
//! - The user information ends at the **last** `@`: a password may hold any printable
//!   character (`/ # ? , ; @` included) unencoded. `%XX` escapes in the user and the
//!   password are decoded (write `%25` for a literal `%` followed by two hex digits).
//! - Without one of the six schemes, text with an `@` is the schemeless form
//!   `user:password@host…`, even when the password starts with `//` (`alice://x@h` is
//!   user `alice`, password `//x`): how a URL is read never depends on its password. An
//!   unknown scheme is refused only without credentials (`http://h`); `http://u:p@h`
//!   is user `http` and the server refuses it. One exception, since the text is the
//!   same: a schemeless user named like a scheme (`redis:` + password `//x`) reads as
//!   that scheme; give such a user with its scheme (`redis://redis:%2F%2Fx@h`).
//! - Credentials are given once, in the first URL of a list; `redis://:pw@host` is a
//!   password without a user (the `default` user), `redis://user:pw@host` an ACL user,
//!   and `redis://user@host` a user whose password comes from elsewhere (a password
//!   file), as RFC 3986 — and fred and redis-rs — read it.
//! - The default port is 6379 (26379 for sentinels); `/db` is a database number
//!   (0–255; not available on a Cluster).
//! - Query parameters: `node=host:port` adds a seed (the form fred accepts), and for
//!   Sentinel `service_name=` (or `sentinelServiceName=`) names the service instead of
//!   the path. Any other parameter is refused: credentials never travel in a query.
//! - In a list, every element with a scheme must agree on TLS with the first.

use std::fmt;

use crate::Error;
use crate::redact::Endpoint;

/// How an [`Endpoint`] built from a URL that cannot be parsed prints.
pub const UNPARSEABLE: &str = "<unparseable URL>";

/// A secret (a password): kept whole for the client, never printable.
///
/// # Behavior
///
/// - `Debug` prints `***`; there is no `Display`. [`Secret::expose`] is the only way to
///   the text, and only the connection code calls it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `s`.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret text, for the client that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(crate::REDACTED)
    }
}

/// What a Redis URL points at.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Topology {
    /// One server.
    Standalone,
    /// A Redis Cluster, given by seed nodes.
    Cluster,
    /// A primary found through Redis Sentinel; the hosts are the sentinels.
    Sentinel {
        /// The monitored service (master) name.
        service: String,
    },
}

impl Topology {
    /// `standalone`, `cluster` or `sentinel`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Topology::Standalone => "standalone",
            Topology::Cluster => "cluster",
            Topology::Sentinel { .. } => "sentinel",
        }
    }
}

/// A host and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct HostPort {
    /// A DNS name, an IPv4 address or an IPv6 address (without brackets).
    pub host: String,
    /// The port.
    pub port: u16,
}

impl HostPort {
    /// A host and port.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        HostPort {
            host: host.into(),
            port,
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A parsed Redis URL (see the module docs for the forms).
///
/// # Behavior
///
/// - [`RedisUrl::parse`] accepts exactly the forms of the module docs; anything else
///   is [`Error::Config`] whose message names what is wrong and quotes nothing of the
///   input.
/// - [`RedisUrl::endpoint`] and `Debug` print the canonical form from the parts, with
///   the password as `***`: `rediss://alice:***@host:6380/2`,
///   `redis-cluster://h1:7000,h2:7001`, `redis-sentinel://s1:26379/mymaster`.
/// - Parsing, and so every printable form, does not depend on the password's content.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisUrl {
    /// Standalone, cluster or sentinel.
    pub topology: Topology,
    /// Whether the scheme asks for TLS (`rediss…`).
    pub tls: bool,
    /// The server, the cluster's seeds or the sentinels (at least one).
    pub hosts: Vec<HostPort>,
    /// The ACL user, if given.
    pub username: Option<String>,
    /// The password, if given.
    pub password: Option<Secret>,
    /// The database number, if given.
    pub db: Option<u8>,
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", self.endpoint())
    }
}

fn bad(what: &str) -> Error {
    Error::config(format!("invalid Redis URL: {what}"))
}

/// The scheme at the start of `s` (`[A-Za-z][A-Za-z0-9+.-]*://`), and the rest.
fn split_scheme(s: &str) -> Option<(&str, &str)> {
    let pos = s.find("://")?;
    let scheme = &s[..pos];
    let mut chars = scheme.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    (first_ok && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-')))
        .then(|| (scheme, &s[pos + 3..]))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Cluster,
    Sentinel,
}

fn scheme_kind(scheme: &str) -> Result<(Kind, bool), Error> {
    Ok(match scheme.to_ascii_lowercase().as_str() {
        "redis" => (Kind::Plain, false),
        "rediss" => (Kind::Plain, true),
        "redis-cluster" => (Kind::Cluster, false),
        "rediss-cluster" => (Kind::Cluster, true),
        "redis-sentinel" => (Kind::Sentinel, false),
        "rediss-sentinel" => (Kind::Sentinel, true),
        _ => {
            return Err(bad(
                "unknown scheme (expected redis://, rediss://, redis-cluster://, rediss-cluster://, \
                 redis-sentinel:// or rediss-sentinel://)",
            ));
        }
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

fn valid_ipv6(h: &str) -> bool {
    !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.'))
}

fn host_port(s: &str, default_port: u16) -> Result<HostPort, Error> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']').ok_or_else(|| bad("an IPv6 address lacks its `]`"))?;
        let host = &rest[..end];
        if !valid_ipv6(host) {
            return Err(bad("an IPv6 address in brackets is malformed"));
        }
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(bad("text follows an IPv6 address")),
        };
        (host, port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if !host.contains(':') && !valid_host(host) {
        return Err(bad(if host.is_empty() {
            "a host is missing"
        } else {
            "a host name has a character other than letters, digits, `.`, `-` and `_`"
        }));
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad("a port is not a number from 1 to 65535"))?,
    };
    Ok(HostPort::new(host, port))
}

fn db_number(s: &str) -> Result<Option<u8>, Error> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse::<u8>()
        .map(Some)
        .map_err(|_| bad("the database is not a number from 0 to 255"))
}

fn valid_service(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

impl RedisUrl {
    /// Parses one URL or a comma-separated list of seeds. See the module docs.
    pub fn parse(text: &str) -> Result<RedisUrl, Error> {
        let text = text.trim();
        if text.is_empty() {
            return Err(bad("it is empty"));
        }
        let (kind, tls, rest) = match split_scheme(text) {
            Some((scheme, rest)) => match scheme_kind(scheme) {
                Ok((kind, tls)) => (kind, tls, rest),
                // `alice://x@host` is the schemeless `alice:` + password `//x`: with an
                // `@`, the text before it is credentials, whatever they look like.
                Err(_) if text.contains('@') => (Kind::Plain, false, text),
                Err(e) => return Err(e),
            },
            None => (Kind::Plain, false, text),
        };
        // The user information ends at the last `@`: nothing after it (hosts, path,
        // query) may contain one, and the password may contain anything.
        let (userinfo, after) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((user, pw)) => (
                    (!user.is_empty()).then(|| percent_decode(user)),
                    Some(Secret(percent_decode(pw))),
                ),
                // RFC 3986, as fred and redis-rs read it: `user@host` is a user
                // without a password; a password alone is `:password@host`.
                None if !u.is_empty() => (Some(percent_decode(u)), None),
                None => (None, None),
            },
        };
        let (before_query, query) = match after.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (after, None),
        };
        let default_port = if kind == Kind::Sentinel { 26_379 } else { 6379 };
        let elements: Vec<&str> = before_query.split(',').map(str::trim).collect();
        let last = elements.len() - 1;
        let mut hosts = Vec::new();
        let mut path = "";
        for (i, element) in elements.iter().enumerate() {
            let element = match split_scheme(element) {
                Some((scheme, rest)) if i > 0 => {
                    let (k, t) = scheme_kind(scheme)?;
                    if t != tls || k == Kind::Sentinel {
                        return Err(bad("the seeds of a list disagree on TLS or on their kind"));
                    }
                    rest
                }
                Some(_) => return Err(bad("a scheme appears inside the host part")),
                None => element,
            };
            // Only the last element carries the path; earlier ones may end in `/`.
            let hp = match element.find('/') {
                Some(slash) if i == last => {
                    path = &element[slash + 1..];
                    &element[..slash]
                }
                Some(slash) if element[slash..].trim_matches('/').is_empty() => &element[..slash],
                Some(_) => return Err(bad("only the last URL of a list may have a path")),
                None => element,
            };
            if hp.is_empty() {
                return Err(bad("a host is missing"));
            }
            hosts.push(host_port(hp, default_port)?);
        }
        let list_len = elements.len();
        let mut service = None;
        let db;
        match kind {
            Kind::Sentinel => {
                let mut segments = path.split('/');
                let first = segments.next().unwrap_or("");
                if !first.is_empty() {
                    service = Some(first.to_owned());
                }
                db = db_number(segments.next().unwrap_or(""))?;
                if segments.next().is_some_and(|s| !s.is_empty()) {
                    return Err(bad("a Sentinel URL's path is /SERVICE[/db]"));
                }
            }
            _ => {
                db = db_number(path.trim_end_matches('/'))?;
            }
        }
        for pair in query.into_iter().flat_map(|q| q.split('&')).filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "node" => hosts.push(host_port(v, default_port)?),
                "service_name" | "sentinelServiceName" if kind == Kind::Sentinel => {
                    service = Some(v.to_owned());
                }
                _ => {
                    return Err(bad(
                        "it has a query parameter palisade does not know (known: `node`, and \
                         `service_name` for Sentinel); credentials never go in a query",
                    ));
                }
            }
        }
        let topology = match kind {
            Kind::Sentinel => {
                let service = service.ok_or_else(|| bad("a Sentinel URL names its service: /SERVICE"))?;
                if !valid_service(&service) {
                    return Err(bad(
                        "a Sentinel service name is 1 to 128 letters, digits, `.`, `-` or `_`",
                    ));
                }
                Topology::Sentinel { service }
            }
            Kind::Cluster => Topology::Cluster,
            Kind::Plain if list_len > 1 || hosts.len() > 1 => Topology::Cluster,
            Kind::Plain => Topology::Standalone,
        };
        if topology == Topology::Cluster && db.is_some_and(|d| d != 0) {
            return Err(bad("a Redis Cluster has only database 0"));
        }
        Ok(RedisUrl {
            topology,
            tls,
            hosts,
            username,
            password,
            db,
        })
    }

    /// The canonical scheme of this URL.
    pub fn scheme(&self) -> &'static str {
        match (&self.topology, self.tls) {
            (Topology::Standalone, false) => "redis",
            (Topology::Standalone, true) => "rediss",
            (Topology::Cluster, false) => "redis-cluster",
            (Topology::Cluster, true) => "rediss-cluster",
            (Topology::Sentinel { .. }, false) => "redis-sentinel",
            (Topology::Sentinel { .. }, true) => "rediss-sentinel",
        }
    }

    /// The printable form, built from the parts (password `***`).
    pub fn endpoint(&self) -> Endpoint {
        let mut s = format!("{}://", self.scheme());
        match (&self.username, &self.password) {
            (Some(u), Some(_)) => s.push_str(&format!("{}:{}@", printable_user(u), crate::REDACTED)),
            (Some(u), None) => s.push_str(&format!("{}@", printable_user(u))),
            (None, Some(_)) => s.push_str(&format!(":{}@", crate::REDACTED)),
            (None, None) => {}
        }
        let hosts: Vec<String> = self.hosts.iter().map(ToString::to_string).collect();
        s.push_str(&hosts.join(","));
        if let Topology::Sentinel { service } = &self.topology {
            s.push('/');
            s.push_str(service);
        }
        if let Some(db) = self.db {
            s.push_str(&format!("/{db}"));
        }
        Endpoint::from_parts(s)
    }
}

/// A user name as printed: kept when it is plain text, else described.
fn printable_user(u: &str) -> String {
    if u.len() <= 64
        && u.chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '@' | ':' | '/' | ','))
    {
        u.to_owned()
    } else {
        "<user>".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RedisUrl {
        RedisUrl::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn standalone_forms() {
        let u = p("redis://alice:s3cret@h:6380/2");
        assert_eq!(u.topology, Topology::Standalone);
        assert!(!u.tls);
        assert_eq!(u.hosts, vec![HostPort::new("h", 6380)]);
        assert_eq!(u.username.as_deref(), Some("alice"));
        assert_eq!(u.password.as_ref().map(Secret::expose), Some("s3cret"));
        assert_eq!(u.db, Some(2));
        assert_eq!(u.endpoint().as_str(), "redis://alice:***@h:6380/2");
        assert_eq!(p("h").endpoint().as_str(), "redis://h:6379");
        assert_eq!(
            p(":pw@127.0.0.1:6379").endpoint().as_str(),
            "redis://:***@127.0.0.1:6379"
        );
        assert_eq!(p("rediss://[::1]:7000").endpoint().as_str(), "rediss://[::1]:7000");
        let user_only = p("redis://alice@h");
        assert_eq!(
            (user_only.username.as_deref(), user_only.password),
            (Some("alice"), None)
        );
    }

    #[test]
    fn passwords_hold_any_printable_character() {
        for pw in ["a/b", "a#b", "a?b", "a,b", "a;b", "a@b", "a b", "a:b", "@@", "//x@y"] {
            let u = p(&format!("rediss://u:{pw}@host:1/3"));
            assert_eq!(u.password.as_ref().map(Secret::expose), Some(pw), "{pw}");
            assert_eq!(u.endpoint().as_str(), "rediss://u:***@host:1/3", "{pw}");
        }
        assert_eq!(p("redis://u:p%40ss@h").password.unwrap().expose(), "p@ss");
    }

    use crate::testkit::url_forms as forms;

    /// Everything a parse says except the password itself.
    fn reading(url: &str) -> String {
        match RedisUrl::parse(url) {
            Ok(u) => format!(
                "{:?} {} {:?} {:?} {:?} {:?} {}",
                u.topology,
                u.tls,
                u.hosts,
                u.username,
                u.db,
                u.password.is_some(),
                u.endpoint()
            ),
            Err(e) => format!("error: {e}"),
        }
    }

    /// Exhaustive over every password of up to four characters drawn from the URL
    /// separators (and a letter): the random passwords of `secrets.rs` once hit `//`,
    /// which made `alice://@h` read as an unknown scheme. No password changes how the
    /// rest of a URL is read, and the password the client gets is the one written.
    #[test]
    fn no_password_changes_how_a_url_reads() {
        let alphabet: Vec<char> = "/#?,;@: %a&=[]".chars().collect();
        let reference: Vec<String> = forms("Zq9ReferencePw").iter().map(|u| reading(u)).collect();
        assert!(reference.iter().all(|r| !r.starts_with("error")), "{reference:?}");
        let mut pw = Vec::new();
        let mut checked = 0;
        for len in 1..=4u32 {
            for n in 0..alphabet.len().pow(len) {
                pw.clear();
                let mut rest = n;
                for _ in 0..len {
                    pw.push(alphabet[rest % alphabet.len()]);
                    rest /= alphabet.len();
                }
                let pw: String = pw.iter().collect();
                for (url, expected) in forms(&pw).iter().zip(&reference) {
                    assert_eq!(&reading(url), expected, "password {pw:?} in {url:?}");
                    let got = RedisUrl::parse(url).ok().and_then(|u| u.password);
                    assert_eq!(got.as_ref().map(Secret::expose), Some(percent_decode(&pw).as_str()));
                    checked += 1;
                }
            }
        }
        assert!(checked > 400_000, "{checked}");
    }

    #[test]
    fn a_scheme_named_user_is_the_one_exception() {
        // Documented: the text is the same as a URL with that scheme.
        assert_eq!(p("redis:////x@h").username.as_deref(), Some("//x"));
        assert_eq!(p("redis://redis:%2F%2Fx@h").password.unwrap().expose(), "//x");
        // Without credentials an unknown scheme is still refused.
        assert!(RedisUrl::parse("http://h").is_err());
        assert_eq!(p("http://u:p@h").username.as_deref(), Some("http"));
    }

    #[test]
    fn cluster_and_sentinel_forms() {
        let c = p("redis://:pw@a:1,redis://b:2,c:3");
        assert_eq!(c.topology, Topology::Cluster);
        assert_eq!(c.hosts.len(), 3);
        assert_eq!(c.endpoint().as_str(), "redis-cluster://:***@a:1,b:2,c:3");
        assert_eq!(p("redis-cluster://h:1?node=h2:2").hosts.len(), 2);
        assert_eq!(p("rediss-cluster://h:1").endpoint().as_str(), "rediss-cluster://h:1");
        let s = p("redis-sentinel://u:pw@s1,s2:26380/mymaster/1");
        assert_eq!(
            s.topology,
            Topology::Sentinel {
                service: "mymaster".into()
            }
        );
        assert_eq!(s.hosts, vec![HostPort::new("s1", 26379), HostPort::new("s2", 26380)]);
        assert_eq!(s.db, Some(1));
        assert_eq!(
            s.endpoint().as_str(),
            "redis-sentinel://u:***@s1:26379,s2:26380/mymaster/1"
        );
        assert!(p("redis-sentinel://s1?sentinelServiceName=m").topology != Topology::Cluster);
    }

    #[test]
    fn refusals_quote_nothing() {
        for bad in [
            "",
            "ftp://h",
            "ftp://h/x",
            "redis://h:99999",
            "redis://h:0",
            "redis://h/300",
            "redis-sentinel://s1",
            "redis://h?password=hunter2",
            "rediss://a:1,redis://b:2",
            "redis://h:1,redis-sentinel://b/x",
            "redis://h%zz",
            "redis://[::1",
            "redis-cluster://a,b/3",
        ] {
            let e = RedisUrl::parse(bad).expect_err(bad);
            assert!(!e.to_string().contains("hunter2"), "{e}");
            assert_eq!(e.kind(), crate::ErrorKind::Config, "{bad}");
        }
    }
}
