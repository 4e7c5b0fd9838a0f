//! Typed, escaped, injective storage keys.
//!
//! A key is built from six parts: `(prefix, schema version, contract, tenant,
//! namespace, user key)` and encoded as
//!
//! ```text
//! <prefix>:v<version>:<contract>:<tenant>:<namespace>:<user key>
//! <prefix>:v<version>:<contract>:{<tenant>:<namespace>}:<kind>[:<user key>]   (slot keys)
//! ```
//!
//! where every text part is escaped: `%`, `:`, `{`, `}`, `*`, `?`, `[`, `]`, `\` and the
//! ASCII control characters (NUL included) become `%XX` (upper-case hex). Everything
//! else, unicode included, is kept as is. Because no escaped part contains `:`, the
//! parts can be split back apart, and because the escaping is reversible the encoding
//! is injective: distinct parts always give distinct keys. Because no escaped part
//! contains a glob character or a brace, a SCAN pattern built from one
//! (contract, tenant, namespace) cannot match a key of another, and no part can form a
//! Redis Cluster hash tag by accident.
//!
//! ## The contract segment (schema v2)
//!
//! The [`Contract`] — `cache`, `jobs`, `throttle`, `ratelimit` — is its own segment,
//! chosen by the contract's code, never by a caller: a cache namespace called `jobs`
//! can never read, overwrite or `clear` a job record (in schema v1 it could: cache keys
//! and job records shared one layout). Every key starts with the prefix — the hash tag
//! of slot keys comes after it — so one ACL key pattern, `~<prefix>:*`, covers
//! everything palisade touches. Keys of schema v1 are not read.

use std::fmt::Write as _;

use crate::Error;

/// The default limit on the length of an encoded key, in bytes.
pub const DEFAULT_MAX_KEY_LEN: usize = 1024;

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "palisade";

/// The schema version of the key layout, the `v<N>` segment of every key.
pub const SCHEMA_VERSION: u16 = 2;

/// Whose keys: each contract has its own key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Contract {
    /// The cache.
    Cache,
    /// The job store.
    Jobs,
    /// The throttle.
    Throttle,
    /// The rate limiter.
    RateLimit,
}

impl Contract {
    /// Every contract.
    pub const ALL: [Contract; 4] = [Contract::Cache, Contract::Jobs, Contract::Throttle, Contract::RateLimit];

    /// The key segment: `cache`, `jobs`, `throttle`, `ratelimit`.
    pub fn as_str(self) -> &'static str {
        match self {
            Contract::Cache => "cache",
            Contract::Jobs => "jobs",
            Contract::Throttle => "throttle",
            Contract::RateLimit => "ratelimit",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which bytes are escaped, by value: the ASCII control characters and
/// `%:{}*?[]\`. Every escaped character is ASCII, so a byte of a multi-byte character
/// never is.
const ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[0x7F] = true;
    let specials = b"%:{}*?[]\\";
    let mut i = 0;
    while i < specials.len() {
        table[specials[i] as usize] = true;
        i += 1;
    }
    table
};

fn needs_escape(b: u8) -> bool {
    ESCAPED[usize::from(b)]
}

/// The length of `part` escaped.
pub fn escaped_len(part: &str) -> usize {
    part.len() + 2 * part.bytes().filter(|&b| needs_escape(b)).count()
}

/// Escapes one key part (see the module docs): one scan when nothing needs escaping
/// (the common case), else runs of plain bytes copied as slices and no formatting
/// machinery (key encoding is on every call's path). The keys of a call size `out`
/// with [`escaped_len`] first, so it never regrows.
pub fn escape_part(part: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let Some(first) = part.bytes().position(needs_escape) else {
        out.push_str(part);
        return;
    };
    out.push_str(&part[..first]);
    let mut start = first;
    for (i, b) in part.bytes().enumerate().skip(first) {
        if needs_escape(b) {
            // `b` is ASCII, so `i` and `i + 1` are character boundaries.
            out.push_str(&part[start..i]);
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xF)]));
            start = i + 1;
        }
    }
    out.push_str(&part[start..]);
}

/// A user key must not be empty (it would name the namespace itself).
fn non_empty(user_key: &str) -> Result<(), Error> {
    if user_key.is_empty() {
        return Err(Error::invalid_input("the key must not be empty"));
    }
    Ok(())
}

/// Reverses [`escape_part`]. Refuses anything [`escape_part`] cannot have produced, so
/// that every accepted key has exactly one decoding.
pub fn unescape_part(part: &str) -> Result<String, Error> {
    let mut out = String::with_capacity(part.len());
    let mut chars = part.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            let hex: String = chars.by_ref().take(2).collect();
            let byte = (hex.len() == 2 && hex.chars().all(|h| matches!(h, '0'..='9' | 'A'..='F')))
                .then(|| u8::from_str_radix(&hex, 16).ok())
                .flatten()
                .ok_or_else(|| Error::invalid_input(format!("bad escape `%{hex}` in key part")))?;
            let decoded = char::from(byte);
            if !needs_escape(byte) {
                return Err(Error::invalid_input(format!(
                    "escape `%{hex}` is not canonical in key part"
                )));
            }
            out.push(decoded);
        } else if u8::try_from(c).is_ok_and(needs_escape) {
            return Err(Error::invalid_input(format!("unescaped {c:?} in key part")));
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// The six parts of a key, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyParts {
    /// The deployment-wide prefix, e.g. `palisade`.
    pub prefix: String,
    /// The schema version of the layout.
    pub version: u16,
    /// The contract segment (`cache`, `jobs`, …).
    pub contract: String,
    /// The tenant.
    pub tenant: String,
    /// The namespace inside the tenant (e.g. `sessions`).
    pub namespace: String,
    /// The caller's key.
    pub key: String,
}

impl KeyParts {
    /// Encodes the parts (see the module docs). Does not check lengths.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(
            self.prefix.len() + self.contract.len() + self.tenant.len() + self.namespace.len() + self.key.len() + 16,
        );
        encode_head(
            &self.prefix,
            self.version,
            &self.contract,
            &self.tenant,
            &self.namespace,
            &mut out,
        );
        escape_part(&self.key, &mut out);
        out
    }

    /// Decodes a key produced by [`KeyParts::encode`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when `encoded` is not exactly six parts, when the
    /// version part is not `v<u16>`, or when an escape is malformed or not canonical.
    pub fn decode(encoded: &str) -> Result<KeyParts, Error> {
        let parts: Vec<&str> = encoded.split(':').collect();
        let [prefix, version, contract, tenant, namespace, key] = parts[..] else {
            return Err(Error::invalid_input(format!(
                "a key has 6 `:`-separated parts, this one has {}",
                parts.len()
            )));
        };
        let version = version
            .strip_prefix('v')
            .filter(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()))
            .filter(|v| v.len() == 1 || !v.starts_with('0'))
            .and_then(|v| v.parse::<u16>().ok())
            .ok_or_else(|| Error::invalid_input(format!("bad version part {version:?}")))?;
        Ok(KeyParts {
            prefix: unescape_part(prefix)?,
            version,
            contract: unescape_part(contract)?,
            tenant: unescape_part(tenant)?,
            namespace: unescape_part(namespace)?,
            key: unescape_part(key)?,
        })
    }
}

fn encode_head(prefix: &str, version: u16, contract: &str, tenant: &str, namespace: &str, out: &mut String) {
    escape_part(prefix, out);
    let _ = write!(out, ":v{version}:");
    escape_part(contract, out);
    out.push(':');
    escape_part(tenant, out);
    out.push(':');
    escape_part(namespace, out);
    out.push(':');
}

/// One (prefix, tenant, namespace): builds the keys of that namespace, for each
/// [`Contract`] in its own key space.
///
/// # Behavior
///
/// - [`Namespace::new`] refuses an empty prefix, tenant or namespace with
///   [`Error::InvalidInput`].
/// - [`Namespace::key`] refuses an empty user key, and a key whose encoding is longer
///   than the limit ([`DEFAULT_MAX_KEY_LEN`] unless changed with
///   [`Namespace::with_max_key_len`]), with [`Error::InvalidInput`], before any I/O.
/// - [`Namespace::scan_pattern`] matches every key of this namespace and contract and no
///   key of any other (contract, tenant, namespace), whatever characters the parts
///   contain.
/// - Every key starts with the escaped prefix followed by `:`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace {
    prefix: String,
    tenant: String,
    namespace: String,
    /// `<prefix>:v<N>:<contract>:<tenant>:<namespace>:`, one per contract.
    heads: [String; 4],
    /// `<prefix>:v<N>:<contract>:{<tenant>:<namespace>}:`, one per contract.
    slot_heads: [String; 4],
    max_key_len: usize,
}

impl Namespace {
    /// A namespace. See the type's `# Behavior`.
    pub fn new(prefix: &str, tenant: &str, namespace: &str) -> Result<Self, Error> {
        for (what, v) in [("prefix", prefix), ("tenant", tenant), ("namespace", namespace)] {
            if v.is_empty() {
                return Err(Error::invalid_input(format!("the {what} must not be empty")));
            }
        }
        let heads = Contract::ALL.map(|c| {
            let mut head = String::new();
            encode_head(prefix, SCHEMA_VERSION, c.as_str(), tenant, namespace, &mut head);
            head
        });
        let slot_heads = Contract::ALL.map(|c| {
            let mut head = String::new();
            escape_part(prefix, &mut head);
            let _ = write!(head, ":v{SCHEMA_VERSION}:{}:{{", c.as_str());
            escape_part(tenant, &mut head);
            head.push(':');
            escape_part(namespace, &mut head);
            head.push_str("}:");
            head
        });
        if let Some(long) = heads.iter().chain(&slot_heads).find(|h| h.len() >= DEFAULT_MAX_KEY_LEN) {
            return Err(Error::invalid_input(format!(
                "prefix, tenant and namespace encode to {} bytes, the limit for a whole key is {DEFAULT_MAX_KEY_LEN}",
                long.len()
            )));
        }
        Ok(Namespace {
            prefix: prefix.to_owned(),
            tenant: tenant.to_owned(),
            namespace: namespace.to_owned(),
            heads,
            slot_heads,
            max_key_len: DEFAULT_MAX_KEY_LEN,
        })
    }

    /// Changes the limit on the length of an encoded key.
    pub fn with_max_key_len(mut self, max: usize) -> Self {
        self.max_key_len = max;
        self
    }

    /// The limit on the length of an encoded key, in bytes.
    pub fn max_key_len(&self) -> usize {
        self.max_key_len
    }

    /// The tenant.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The namespace name.
    pub fn name(&self) -> &str {
        &self.namespace
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The schema version ([`SCHEMA_VERSION`]).
    pub fn version(&self) -> u16 {
        SCHEMA_VERSION
    }

    /// The same prefix and tenant, another namespace.
    pub fn sibling(&self, namespace: &str) -> Result<Self, Error> {
        Ok(Namespace::new(&self.prefix, &self.tenant, namespace)?.with_max_key_len(self.max_key_len))
    }

    /// The same prefix and namespace, another tenant.
    pub fn with_tenant(&self, tenant: &str) -> Result<Self, Error> {
        Ok(Namespace::new(&self.prefix, tenant, &self.namespace)?.with_max_key_len(self.max_key_len))
    }

    /// The encoded key of `contract` for `user_key`.
    pub fn key(&self, contract: Contract, user_key: &str) -> Result<String, Error> {
        let len = self.key_len(contract, user_key)?;
        let mut out = String::with_capacity(len);
        out.push_str(&self.heads[contract.index()]);
        escape_part(user_key, &mut out);
        debug_assert_eq!(out.len(), len);
        Ok(out)
    }

    /// The length of [`Namespace::key`]'s answer for `user_key`, after the same checks,
    /// without building it: a backend that finds its state by the namespace and the
    /// user key (the in-process ones) checks a key this way and allocates nothing.
    pub fn key_len(&self, contract: Contract, user_key: &str) -> Result<usize, Error> {
        non_empty(user_key)?;
        let len = self.heads[contract.index()].len() + escaped_len(user_key);
        self.check_len(len)?;
        Ok(len)
    }

    /// A key of `contract` that shares one Redis Cluster hash slot with every other
    /// `slot_key` of this namespace and contract:
    /// `<prefix>:v<N>:<contract>:{<tenant>:<namespace>}:<kind>[:<user key>]`. The hash
    /// tag is the tenant and namespace (escaped parts contain no brace), so a Lua script
    /// may touch all of them on a cluster. Same checks as [`Namespace::key`].
    pub fn slot_key(&self, contract: Contract, kind: &str, user_key: Option<&str>) -> Result<String, Error> {
        let head = &self.slot_heads[contract.index()];
        let mut out = String::with_capacity(head.len() + escaped_len(kind) + user_key.map_or(0, escaped_len) + 1);
        out.push_str(head);
        escape_part(kind, &mut out);
        if let Some(k) = user_key {
            non_empty(k)?;
            out.push(':');
            escape_part(k, &mut out);
        }
        self.check_len(out.len())?;
        Ok(out)
    }

    /// Whether an encoded key of `len` bytes fits the key limit.
    fn check_len(&self, len: usize) -> Result<(), Error> {
        if len > self.max_key_len {
            return Err(Error::invalid_input(format!(
                "the key encodes to {len} bytes, the limit is {}",
                self.max_key_len
            )));
        }
        Ok(())
    }

    /// A Redis `SCAN ... MATCH` pattern matching exactly the keys of this namespace and
    /// contract.
    pub fn scan_pattern(&self, contract: Contract) -> String {
        format!("{}*", self.heads[contract.index()])
    }

    /// The text every key of this namespace and contract starts with.
    pub fn head(&self, contract: Contract) -> &str {
        &self.heads[contract.index()]
    }

    /// Whether `encoded` is a key of this namespace and contract.
    pub fn owns(&self, contract: Contract, encoded: &str) -> bool {
        encoded.starts_with(&self.heads[contract.index()])
    }

    /// The user key of an encoded key of this namespace and contract.
    pub fn user_key(&self, contract: Contract, encoded: &str) -> Result<String, Error> {
        let rest = encoded
            .strip_prefix(&self.heads[contract.index()])
            .ok_or_else(|| Error::invalid_input("the key does not belong to this namespace".to_owned()))?;
        unescape_part(rest)
    }
}
