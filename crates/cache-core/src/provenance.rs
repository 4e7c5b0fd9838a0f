//! Where an answer came from.

use std::fmt;

/// Where a value (or the absence of one) was read from.
///
/// # Behavior
///
/// - [`Provenance::Distributed`]: from the shared store (Redis), visible to every node.
/// - [`Provenance::LocalDegraded`]: from the local fallback of
///   [`Mode::ExplicitDegraded`](crate::Mode::ExplicitDegraded) during an outage; not
///   shared with other nodes.
/// - [`Provenance::Local`]: from the in-process backend of
///   [`Mode::LocalOnly`](crate::Mode::LocalOnly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Provenance {
    /// Read from the shared store.
    Distributed,
    /// Read from the local fallback while the shared store is down.
    LocalDegraded,
    /// Read from the in-process store of local-only mode.
    Local,
}

impl Provenance {
    /// `distributed`, `local_degraded` or `local`.
    pub fn as_str(self) -> &'static str {
        match self {
            Provenance::Distributed => "distributed",
            Provenance::LocalDegraded => "local_degraded",
            Provenance::Local => "local",
        }
    }

    /// True when the answer is shared by every node ([`Provenance::Distributed`]).
    pub fn is_shared(self) -> bool {
        matches!(self, Provenance::Distributed)
    }
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value together with its [`Provenance`]: what every read returns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tagged<T> {
    /// The value read (often an `Option`: a miss is a value too, and has a provenance).
    pub value: T,
    /// Where it came from.
    pub provenance: Provenance,
}

impl<T> Tagged<T> {
    /// Wraps `value`.
    pub fn new(value: T, provenance: Provenance) -> Self {
        Tagged { value, provenance }
    }

    /// Transforms the value, keeping the provenance.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Tagged<U> {
        Tagged {
            value: f(self.value),
            provenance: self.provenance,
        }
    }

    /// Transforms the value with a fallible function, keeping the provenance.
    pub fn try_map<U, E>(self, f: impl FnOnce(T) -> Result<U, E>) -> Result<Tagged<U>, E> {
        Ok(Tagged {
            value: f(self.value)?,
            provenance: self.provenance,
        })
    }

    /// Drops the provenance.
    pub fn into_inner(self) -> T {
        self.value
    }
}
