//! Credential redaction for everything printable.

use std::fmt;

/// The text that replaces a password.
pub const REDACTED: &str = "***";

/// A backend's printable identity: a name or a URL whose password (and username, when
/// a password follows it) is already replaced by `***`.
///
/// # Behavior
///
/// - The raw URL is never stored: [`Endpoint::url`] redacts while building, so no
///   `Display`, `Debug`, event or error can leak it.
/// - `redis://user:secret@host:6379/0` prints as `redis://user:***@host:6379/0`;
///   `redis://:secret@host` as `redis://:***@host`; a URL without credentials is
///   unchanged.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Endpoint(String);

impl Endpoint {
    /// An endpoint named by a fixed label, e.g. `local`.
    pub fn named(name: impl Into<String>) -> Self {
        Endpoint(redact_text(&name.into()))
    }

    /// An endpoint built from a URL (or several, comma-separated), with credentials
    /// redacted.
    pub fn url(url: &str) -> Self {
        Endpoint(redact_text(url))
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

/// Replaces the password of every `scheme://user:password@` found in `text` by `***`.
///
/// Used on anything that may quote a URL before it is printed (error sources from a
/// client library, configuration echoes).
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        // The authority ends at the first '/', '?', '#', ',', ';' or whitespace.
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#' | ',' | ';') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push(':');
                        out.push_str(REDACTED);
                    }
                    // `redis://password@host` is read by some clients as a password.
                    None if !userinfo.is_empty() => out.push_str(REDACTED),
                    None => {}
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
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
    fn redacts_every_url_in_a_list_and_in_prose() {
        let s = redact_text("seeds redis://a:p1@h1:1,redis://b:p2@h2:2 failed: x://:p3@h3 ok");
        assert!(!s.contains("p1") && !s.contains("p2") && !s.contains("p3"), "{s}");
        assert_eq!(s, "seeds redis://a:***@h1:1,redis://b:***@h2:2 failed: x://:***@h3 ok");
    }

    #[test]
    fn password_containing_at_sign_is_redacted_whole() {
        assert_eq!(redact_text("redis://u:p@ss@host"), "redis://u:***@host");
    }
}
