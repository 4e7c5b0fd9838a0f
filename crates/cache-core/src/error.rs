//! The one error type of palisade.

use std::fmt;
use std::time::Duration;

use crate::redact::{Endpoint, redact_text};

/// A boxed error kept as the `source` of an [`Error`], never stringified.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in palisade.
///
/// # Behavior
///
/// - Every variant names what went wrong; errors that wrap a lower-level error keep it as
///   [`std::error::Error::source`], boxed, never flattened into a string.
/// - Nothing printable (`Display`, `Debug`, [`Error::chain`]) ever contains a credential:
///   backends are identified by an [`Endpoint`], which redacts passwords when it is
///   built, and the sources' messages are passed through [`redact_text`] when printed.
///   The source itself is kept intact (downcast it to reach the client's error).
/// - [`Error::is_unavailable`] is true exactly for [`Error::Unavailable`],
///   [`Error::Timeout`], [`Error::Tls`] and [`Error::Auth`]: the shared store cannot be
///   used right now. At runtime these, and only these, move
///   [`Mode::ExplicitDegraded`](crate::Mode::ExplicitDegraded) to its local fallback
///   (announced, with the error's kind in the event). A codec error, bad input or a
///   server-side error reply never does. At startup the umbrella builder refuses to
///   start degraded on [`Error::Auth`]: a wrong password is a misconfiguration, not an
///   outage to ride out on local state.
/// - [`Error::is_retryable`] is true for the same variants and for
///   [`Error::Exhausted`]: retrying the identical call later may succeed (after the
///   server is back, the certificate renewed, the password file rotated, a pooled
///   connection freed). Everything else fails the same way again.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend could not be reached (connection refused, reset, not connected).
    #[error("{backend} is unavailable (during `{op}`)")]
    Unavailable {
        /// Which backend (redacted).
        backend: Endpoint,
        /// The operation that failed, e.g. `cache.get`.
        op: &'static str,
        /// The client's error.
        #[source]
        source: BoxError,
    },
    /// The backend did not answer within the deadline.
    #[error("{backend} did not answer `{op}` within {after:?}")]
    Timeout {
        /// Which backend (redacted).
        backend: Endpoint,
        /// The operation that timed out.
        op: &'static str,
        /// The deadline that passed.
        after: Duration,
    },
    /// Bytes could not be encoded or decoded.
    #[error("cannot encode or decode {what}")]
    Codec {
        /// Which value, field or key.
        what: String,
        /// The codec's error.
        #[source]
        source: BoxError,
    },
    /// The caller passed something palisade will not store (empty or oversized key,
    /// oversized value, invalid policy, ...). Raised before any I/O.
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// Why the input was refused.
        reason: String,
    },
    /// The configuration cannot work (unknown mode, missing URL, feature not compiled in).
    #[error("configuration error: {what}")]
    Config {
        /// What is wrong.
        what: String,
    },
    /// A precondition of the operation did not hold (e.g. create-if-absent on an
    /// existing id).
    #[error("precondition failed: {what}")]
    Conflict {
        /// Which precondition.
        what: String,
    },
    /// The loader of [`Cache::get_or_load`](crate::Cache::get_or_load) failed. Every
    /// caller waiting on that load receives this error (sharing the loader's error);
    /// nothing is cached.
    #[error("the loader for {key} failed")]
    Load {
        /// The user key being loaded.
        key: String,
        /// The loader's error, shared by every waiter.
        #[source]
        source: std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The backend answered, but with an error or with a reply palisade cannot
    /// understand (a script error, `WRONGTYPE`, a malformed reply). Not an outage.
    #[error("{backend} answered `{op}` with an error")]
    Backend {
        /// Which backend (redacted).
        backend: Endpoint,
        /// The operation.
        op: &'static str,
        /// The server's or client's error.
        #[source]
        source: BoxError,
    },
    /// The backend refused the credentials: wrong user or password, a disabled user, or
    /// a server that wants a password and got none (`WRONGPASS`, `NOAUTH`). Retrying
    /// with the same credentials fails again.
    #[error("{backend} refused the credentials (during `{op}`)")]
    Auth {
        /// Which backend (redacted).
        backend: Endpoint,
        /// The operation.
        op: &'static str,
        /// The server's or client's error.
        #[source]
        source: BoxError,
    },
    /// TLS with the backend failed: its certificate is not trusted, has expired or does
    /// not name the server, the client certificate was refused, or the peer does not
    /// speak TLS.
    #[error("TLS with {backend} failed (during `{op}`)")]
    Tls {
        /// Which backend (redacted).
        backend: Endpoint,
        /// The operation.
        op: &'static str,
        /// The TLS library's error.
        #[source]
        source: BoxError,
    },
    /// A bounded resource stayed in use for the whole deadline: every dedicated
    /// connection of the pool (blocking reads, waiting) was busy. The store itself
    /// answers, so this is not an outage: degraded mode does not fall back on it.
    /// Retrying later may succeed; a larger pool serves more waiters at once.
    #[error("every {what} of {backend} stayed in use for {after:?} (during `{op}`)")]
    Exhausted {
        /// Which backend (redacted).
        backend: Endpoint,
        /// The operation.
        op: &'static str,
        /// What ran out, e.g. `dedicated connection (8)`.
        what: String,
        /// How long the call waited for one.
        after: Duration,
    },
}

/// Prints a source's `Debug` with credentials redacted.
struct RedactedDebug<'a>(&'a BoxError);

impl fmt::Debug for RedactedDebug<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let raw = if f.alternate() {
            format!("{:#?}", self.0)
        } else {
            format!("{:?}", self.0)
        };
        f.write_str(&redact_text(&raw))
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Unavailable { backend, op, source } => f
                .debug_struct("Unavailable")
                .field("backend", backend)
                .field("op", op)
                .field("source", &RedactedDebug(source))
                .finish(),
            Error::Timeout { backend, op, after } => f
                .debug_struct("Timeout")
                .field("backend", backend)
                .field("op", op)
                .field("after", after)
                .finish(),
            Error::Codec { what, source } => f
                .debug_struct("Codec")
                .field("what", what)
                .field("source", &RedactedDebug(source))
                .finish(),
            Error::InvalidInput { reason } => f.debug_struct("InvalidInput").field("reason", reason).finish(),
            Error::Config { what } => f.debug_struct("Config").field("what", &redact_text(what)).finish(),
            Error::Conflict { what } => f.debug_struct("Conflict").field("what", what).finish(),
            Error::Load { key, source } => f
                .debug_struct("Load")
                .field("key", key)
                .field("source", &redact_text(&format!("{source:?}")))
                .finish(),
            Error::Backend { backend, op, source } => f
                .debug_struct("Backend")
                .field("backend", backend)
                .field("op", op)
                .field("source", &RedactedDebug(source))
                .finish(),
            Error::Auth { backend, op, source } => f
                .debug_struct("Auth")
                .field("backend", backend)
                .field("op", op)
                .field("source", &RedactedDebug(source))
                .finish(),
            Error::Tls { backend, op, source } => f
                .debug_struct("Tls")
                .field("backend", backend)
                .field("op", op)
                .field("source", &RedactedDebug(source))
                .finish(),
            Error::Exhausted {
                backend,
                op,
                what,
                after,
            } => f
                .debug_struct("Exhausted")
                .field("backend", backend)
                .field("op", op)
                .field("what", what)
                .field("after", after)
                .finish(),
        }
    }
}

/// The kind of an [`Error`], for counters, logs and machine-readable output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`Error::Unavailable`].
    Unavailable,
    /// [`Error::Timeout`].
    Timeout,
    /// [`Error::Codec`].
    Codec,
    /// [`Error::InvalidInput`].
    InvalidInput,
    /// [`Error::Config`].
    Config,
    /// [`Error::Conflict`].
    Conflict,
    /// [`Error::Load`].
    Load,
    /// [`Error::Backend`].
    Backend,
    /// [`Error::Auth`].
    Auth,
    /// [`Error::Tls`].
    Tls,
    /// [`Error::Exhausted`].
    Exhausted,
}

impl ErrorKind {
    /// All kinds, in declaration order.
    pub const ALL: [ErrorKind; 11] = [
        ErrorKind::Unavailable,
        ErrorKind::Timeout,
        ErrorKind::Codec,
        ErrorKind::InvalidInput,
        ErrorKind::Config,
        ErrorKind::Conflict,
        ErrorKind::Load,
        ErrorKind::Backend,
        ErrorKind::Auth,
        ErrorKind::Tls,
        ErrorKind::Exhausted,
    ];

    /// The position of this kind in [`ErrorKind::ALL`] (for per-kind counters).
    pub fn index(self) -> usize {
        self as usize
    }

    /// A stable snake_case name, e.g. `invalid_input`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Codec => "codec",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Config => "config",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Load => "load",
            ErrorKind::Backend => "backend",
            ErrorKind::Auth => "auth",
            ErrorKind::Tls => "tls",
            ErrorKind::Exhausted => "exhausted",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Codec { .. } => ErrorKind::Codec,
            Error::InvalidInput { .. } => ErrorKind::InvalidInput,
            Error::Config { .. } => ErrorKind::Config,
            Error::Conflict { .. } => ErrorKind::Conflict,
            Error::Load { .. } => ErrorKind::Load,
            Error::Backend { .. } => ErrorKind::Backend,
            Error::Auth { .. } => ErrorKind::Auth,
            Error::Tls { .. } => ErrorKind::Tls,
            Error::Exhausted { .. } => ErrorKind::Exhausted,
        }
    }

    /// True when the shared store cannot be used right now: unreachable, too slow, TLS
    /// failed or credentials refused. The only errors that move degraded mode to its
    /// fallback at runtime (see the type's `# Behavior`).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. } | Error::Timeout { .. } | Error::Tls { .. } | Error::Auth { .. }
        )
    }

    /// True when the same call may succeed later without any change by the caller:
    /// an outage ([`Error::is_unavailable`]) or a resource that was all in use
    /// ([`Error::Exhausted`]).
    pub fn is_retryable(&self) -> bool {
        self.is_unavailable() || matches!(self, Error::Exhausted { .. })
    }

    /// An [`Error::InvalidInput`].
    pub fn invalid_input(reason: impl Into<String>) -> Self {
        Error::InvalidInput { reason: reason.into() }
    }

    /// An [`Error::Config`].
    pub fn config(what: impl Into<String>) -> Self {
        Error::Config {
            what: redact_text(&what.into()),
        }
    }

    /// An [`Error::Conflict`].
    pub fn conflict(what: impl Into<String>) -> Self {
        Error::Conflict { what: what.into() }
    }

    /// An [`Error::Codec`] about `what`.
    pub fn codec(what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Codec {
            what: what.into(),
            source: source.into(),
        }
    }

    /// A copy of a shared error for one more receiver: same variant and fields; where
    /// the original has a source, the copy's source is the original error itself (so
    /// its message and its whole chain stay reachable). Used to hand one failure to
    /// every waiter of a single-flight load.
    pub fn clone_shared(this: &std::sync::Arc<Error>) -> Error {
        let shared = || -> BoxError { Box::new(Shared(std::sync::Arc::clone(this))) };
        match &**this {
            Error::Unavailable { backend, op, .. } => Error::Unavailable {
                backend: backend.clone(),
                op,
                source: shared(),
            },
            Error::Timeout { backend, op, after } => Error::Timeout {
                backend: backend.clone(),
                op,
                after: *after,
            },
            Error::Codec { what, .. } => Error::Codec {
                what: what.clone(),
                source: shared(),
            },
            Error::InvalidInput { reason } => Error::InvalidInput { reason: reason.clone() },
            Error::Config { what } => Error::Config { what: what.clone() },
            Error::Conflict { what } => Error::Conflict { what: what.clone() },
            Error::Load { key, source } => Error::Load {
                key: key.clone(),
                source: std::sync::Arc::clone(source),
            },
            Error::Backend { backend, op, .. } => Error::Backend {
                backend: backend.clone(),
                op,
                source: shared(),
            },
            Error::Auth { backend, op, .. } => Error::Auth {
                backend: backend.clone(),
                op,
                source: shared(),
            },
            Error::Tls { backend, op, .. } => Error::Tls {
                backend: backend.clone(),
                op,
                source: shared(),
            },
            Error::Exhausted {
                backend,
                op,
                what,
                after,
            } => Error::Exhausted {
                backend: backend.clone(),
                op,
                what: what.clone(),
                after: *after,
            },
        }
    }

    /// The full chain of messages (this error and every source), joined by `: `.
    /// Safe to print: no variant carries a credential.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(self);
        while let Some(e) = cur {
            out.push_str(": ");
            out.push_str(&redact_text(&e.to_string()));
            cur = e.source();
        }
        out
    }
}

/// A cloneable, printable record of an [`Error`]: its kind and its full message chain.
/// Events and stats carry this (an [`Error`] owns its source and cannot be cloned);
/// like every printable thing in palisade it holds no credential.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ErrorSummary {
    /// The kind.
    pub kind: ErrorKind,
    /// [`Error::chain`]: the message and every source's message.
    pub message: String,
}

impl ErrorSummary {
    /// The summary of `error`.
    pub fn of(error: &Error) -> Self {
        ErrorSummary {
            kind: error.kind(),
            message: error.chain(),
        }
    }
}

impl fmt::Display for ErrorSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// The source of an [`Error::clone_shared`] copy: the original error's source, shared.
#[derive(Debug)]
struct Shared(std::sync::Arc<Error>);

impl fmt::Display for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::error::Error::source(&*self.0) {
            Some(s) => fmt::Display::fmt(s, f),
            None => fmt::Display::fmt(&*self.0, f),
        }
    }
}

impl std::error::Error for Shared {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0).and_then(|s| s.source())
    }
}
