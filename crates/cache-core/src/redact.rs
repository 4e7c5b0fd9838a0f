//! Credential redaction for everything printable.

use std::fmt;

use crate::url::{RedisUrl, UNPARSEABLE};

/// The text that replaces a password.
pub const REDACTED: &str = "***";

/// A backend's printable identity: a fixed name, or a URL printed from its parsed
/// parts with the password as `***`.
///
/// # Behavior
///
/// - The raw URL is never stored: [`Endpoint::url`] parses it ([`RedisUrl::parse`]) and
///   keeps only the canonical form built from the parts, so no `Display`, `Debug`,
///   event or error can leak a password, whatever characters it holds.
/// - `redis://user:secret@host:6379/0` prints as `redis://user:***@host:6379/0`;
///   `redis://:secret@host` as `redis://:***@host:6379`; a URL without credentials as
///   its canonical form; a URL that does not parse as `<unparseable URL>`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Endpoint(String);

impl Endpoint {
    /// An endpoint named by a fixed label, e.g. `local`.
    pub fn named(name: impl Into<String>) -> Self {
        Endpoint(redact_text(&name.into()))
    }

    /// The endpoint of a URL (or several, comma-separated), printed from its parts.
    pub fn url(url: &str) -> Self {
        match RedisUrl::parse(url) {
            Ok(u) => u.endpoint(),
            Err(_) => Endpoint(UNPARSEABLE.to_owned()),
        }
    }

    /// An endpoint whose text was built from parsed parts (no secret in it).
    pub(crate) fn from_parts(text: String) -> Self {
        Endpoint(text)
    }

    /// The redacted text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({:?})", self.0)
    }
}

/// A safety net for text palisade did not build (a client library's error message):
/// after the first `scheme://` that is followed by an `@` anywhere later in `text`,
/// everything up to the **last** `@` is replaced by `***` (a plain user name before a
/// `:` is kept). It may hide more than a password, never less.
///
/// palisade itself never hands a raw URL to a client or prints one: URLs are parsed
/// into parts ([`RedisUrl`]) and printed from them ([`Endpoint`]).
pub fn redact_text(text: &str) -> String {
    let Some(scheme_end) = text.find("://").map(|p| p + 3) else {
        return text.to_owned();
    };
    let tail = &text[scheme_end..];
    let Some(at) = tail.rfind('@') else {
        return text.to_owned();
    };
    let userinfo = &tail[..at];
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..scheme_end]);
    if let Some((user, _)) = userinfo.split_once(':') {
        if user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            out.push_str(user);
            out.push(':');
        }
    }
    out.push_str(REDACTED);
    out.push_str(&tail[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_password_keeps_user_and_host() {
        assert_eq!(
            redact_text("redis://user:s3cr3t@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact_text("redis://:s3cr3t@host"), "redis://:***@host");
        assert_eq!(redact_text("redis://s3cr3t@host"), "redis://***@host");
        assert_eq!(redact_text("redis://host:6379"), "redis://host:6379");
    }

    #[test]
    fn hides_every_credential_of_a_list_and_in_prose() {
        let s = redact_text("seeds redis://a:p1@h1:1,redis://b:p2@h2:2 failed: x://:p3@h3 ok");
        assert!(!s.contains("p1") && !s.contains("p2") && !s.contains("p3"), "{s}");
        assert!(s.ends_with("@h3 ok"), "{s}");
    }

    #[test]
    fn password_containing_separators_is_hidden_whole() {
        for pw in ["p@ss", "a/b", "a,b", "a b", "a://b", "a;b#c?d"] {
            let s = redact_text(&format!("cannot reach redis://u:{pw}@host:1 now"));
            assert_eq!(s, "cannot reach redis://u:***@host:1 now", "{pw}");
        }
    }

    #[test]
    fn endpoints_are_printed_from_parts() {
        assert_eq!(Endpoint::url("redis://u:a,b@h:1").as_str(), "redis://u:***@h:1");
        assert_eq!(
            Endpoint::url(":pw@127.0.0.1:6379").as_str(),
            "redis://:***@127.0.0.1:6379"
        );
        assert_eq!(Endpoint::url("ftp://h").as_str(), UNPARSEABLE);
        // With credentials, no known scheme is the schemeless form (see `url`): user
        // `ftp`, password `//u:pw` — printed without it.
        assert_eq!(Endpoint::url("ftp://u:pw@h").as_str(), "redis://ftp:***@h:6379");
    }
}
