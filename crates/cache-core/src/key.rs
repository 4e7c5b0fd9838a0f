//! Typed, escaped, injective storage keys.
//!
//! A key is built from five parts: `(prefix, schema version, tenant, namespace, user
//! key)` and encoded as
//!
//! ```text
//! <prefix>:v<version>:<tenant>:<namespace>:<user key>
//! ```
//!
//! where every text part is escaped: `%`, `:`, `{`, `}`, `*`, `?`, `[`, `]`, `\` and the
//! ASCII control characters (NUL included) become `%XX` (upper-case hex). Everything
//! else, unicode included, is kept as is. Because no escaped part contains `:`, the
//! parts can be split back apart, and because the escaping is reversible the encoding
//! is injective: distinct parts always give distinct keys. Because no escaped part
//! contains a glob character or a brace, a SCAN pattern built from one
//! (tenant, namespace) cannot match a key of another, and no part can form a Redis
//! Cluster hash tag by accident.

use std::fmt::Write as _;

use crate::Error;

/// The default limit on the length of an encoded key, in bytes.
pub const DEFAULT_MAX_KEY_LEN: usize = 1024;

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "palisade";

fn needs_any_escape(part: &str) -> bool {
    part.bytes().any(|b| b.is_ascii() && needs_escape(char::from(b)))
}

fn needs_escape(c: char) -> bool {
    matches!(c, '%' | ':' | '{' | '}' | '*' | '?' | '[' | ']' | '\\') || c.is_ascii_control()
}

/// Escapes one key part (see the module docs).
pub fn escape_part(part: &str, out: &mut String) {
    // Fast path: most parts need no escaping (every escaped character is ASCII).
    if !needs_any_escape(part) {
        out.push_str(part);
        return;
    }
    for c in part.chars() {
        if needs_escape(c) {
            // `c` is ASCII here, so it fits one byte.
            let _ = write!(out, "%{:02X}", c as u32);
        } else {
            out.push(c);
        }
    }
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
            if !byte.is_ascii() || !needs_escape(decoded) {
                return Err(Error::invalid_input(format!(
                    "escape `%{hex}` is not canonical in key part"
                )));
            }
            out.push(decoded);
        } else if needs_escape(c) {
            return Err(Error::invalid_input(format!("unescaped {c:?} in key part")));
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// The five parts of a key, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyParts {
    /// The deployment-wide prefix, e.g. `palisade`.
    pub prefix: String,
    /// The schema version of what is stored under the key.
    pub version: u16,
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
        let mut out =
            String::with_capacity(self.prefix.len() + self.tenant.len() + self.namespace.len() + self.key.len() + 16);
        encode_head(&self.prefix, self.version, &self.tenant, &self.namespace, &mut out);
        escape_part(&self.key, &mut out);
        out
    }

    /// Decodes a key produced by [`KeyParts::encode`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when `encoded` is not exactly five parts, when the
    /// version part is not `v<u16>`, or when an escape is malformed or not canonical.
    pub fn decode(encoded: &str) -> Result<KeyParts, Error> {
        let parts: Vec<&str> = encoded.split(':').collect();
        let [prefix, version, tenant, namespace, key] = parts[..] else {
            return Err(Error::invalid_input(format!(
                "a key has 5 `:`-separated parts, this one has {}",
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
            tenant: unescape_part(tenant)?,
            namespace: unescape_part(namespace)?,
            key: unescape_part(key)?,
        })
    }
}

fn encode_head(prefix: &str, version: u16, tenant: &str, namespace: &str, out: &mut String) {
    escape_part(prefix, out);
    let _ = write!(out, ":v{version}:");
    escape_part(tenant, out);
    out.push(':');
    escape_part(namespace, out);
    out.push(':');
}

/// One (prefix, version, tenant, namespace): builds the keys of that namespace.
///
/// # Behavior
///
/// - [`Namespace::new`] refuses an empty prefix, tenant or namespace with
///   [`Error::InvalidInput`].
/// - [`Namespace::key`] refuses an empty user key, and a key whose encoding is longer
///   than the limit ([`DEFAULT_MAX_KEY_LEN`] unless changed with
///   [`Namespace::with_max_key_len`]), with [`Error::InvalidInput`], before any I/O.
/// - [`Namespace::scan_pattern`] matches every key of this namespace and no key of any
///   other (tenant, namespace), whatever characters the parts contain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace {
    prefix: String,
    version: u16,
    tenant: String,
    namespace: String,
    head: String,
    max_key_len: usize,
}

impl Namespace {
    /// A namespace. See the type's `# Behavior`.
    pub fn new(prefix: &str, version: u16, tenant: &str, namespace: &str) -> Result<Self, Error> {
        for (what, v) in [("prefix", prefix), ("tenant", tenant), ("namespace", namespace)] {
            if v.is_empty() {
                return Err(Error::invalid_input(format!("the {what} must not be empty")));
            }
        }
        let mut head = String::new();
        encode_head(prefix, version, tenant, namespace, &mut head);
        if head.len() >= DEFAULT_MAX_KEY_LEN {
            return Err(Error::invalid_input(format!(
                "prefix, tenant and namespace encode to {} bytes, the limit for a whole key is {DEFAULT_MAX_KEY_LEN}",
                head.len()
            )));
        }
        Ok(Namespace {
            prefix: prefix.to_owned(),
            version,
            tenant: tenant.to_owned(),
            namespace: namespace.to_owned(),
            head,
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

    /// The schema version.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// The same prefix, version and tenant, another namespace.
    pub fn sibling(&self, namespace: &str) -> Result<Self, Error> {
        Ok(Namespace::new(&self.prefix, self.version, &self.tenant, namespace)?.with_max_key_len(self.max_key_len))
    }

    /// The encoded key for `user_key`.
    pub fn key(&self, user_key: &str) -> Result<String, Error> {
        non_empty(user_key)?;
        let mut out = String::with_capacity(self.head.len() + user_key.len());
        out.push_str(&self.head);
        escape_part(user_key, &mut out);
        self.within_limit(out)
    }

    /// A key that shares one Redis Cluster hash slot with every other `slot_key` of this
    /// namespace: `{<prefix>:v<N>:<tenant>:<namespace>}:<kind>[:<user key>]`. The hash
    /// tag is the namespace itself (escaped parts contain no brace), so a Lua script may
    /// touch all of them on a cluster. Same checks as [`Namespace::key`].
    pub fn slot_key(&self, kind: &str, user_key: Option<&str>) -> Result<String, Error> {
        let mut out = String::with_capacity(self.head.len() + kind.len() + user_key.map_or(0, str::len) + 4);
        out.push('{');
        out.push_str(&self.head[..self.head.len() - 1]);
        out.push_str("}:");
        escape_part(kind, &mut out);
        if let Some(k) = user_key {
            non_empty(k)?;
            out.push(':');
            escape_part(k, &mut out);
        }
        self.within_limit(out)
    }

    /// `out` if it fits the key limit.
    fn within_limit(&self, out: String) -> Result<String, Error> {
        if out.len() > self.max_key_len {
            return Err(Error::invalid_input(format!(
                "the key encodes to {} bytes, the limit is {}",
                out.len(),
                self.max_key_len
            )));
        }
        Ok(out)
    }

    /// A Redis `SCAN ... MATCH` pattern matching exactly the keys of this namespace.
    pub fn scan_pattern(&self) -> String {
        format!("{}*", self.head)
    }

    /// Whether `encoded` is a key of this namespace.
    pub fn owns(&self, encoded: &str) -> bool {
        encoded.starts_with(&self.head)
    }

    /// The user key of an encoded key of this namespace.
    pub fn user_key(&self, encoded: &str) -> Result<String, Error> {
        let rest = encoded
            .strip_prefix(&self.head)
            .ok_or_else(|| Error::invalid_input("the key does not belong to this namespace".to_owned()))?;
        unescape_part(rest)
    }
}
