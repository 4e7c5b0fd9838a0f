//! The three operating modes.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// How palisade behaves when its shared store (Redis) is unavailable.
///
/// The mode is chosen once, at startup, and is never changed behind the user's back: the
/// only runtime movement is between Redis and the local fallback *inside*
/// [`Mode::ExplicitDegraded`].
///
/// # Behavior
///
/// - Parsed from and printed as `strict`, `degraded` and `local` (parsing ignores ASCII
///   case and surrounding whitespace); anything else is [`Error::Config`].
/// - [`Mode::default()`] is [`Mode::StrictDistributed`], the fail-closed choice. The
///   umbrella builder uses [`Mode::default_for`]: strict when a Redis URL is configured,
///   [`Mode::LocalOnly`] when none is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Mode {
    /// Redis only. Startup fails fast when Redis is down; at runtime every operation
    /// returns [`Error::Unavailable`]; nothing is ever read from or written to a local map.
    #[default]
    StrictDistributed,
    /// Redis, with an announced local fallback: the first unavailable error emits
    /// [`EventKind::Degraded`](crate::EventKind::Degraded), answers are tagged
    /// [`Provenance::LocalDegraded`](crate::Provenance::LocalDegraded), and a probe
    /// returns the service to Redis.
    ExplicitDegraded,
    /// In-process only; never touches the network. State is per process, not shared.
    LocalOnly,
}

impl Mode {
    /// All modes, in declaration order.
    pub const ALL: [Mode; 3] = [Mode::StrictDistributed, Mode::ExplicitDegraded, Mode::LocalOnly];

    /// The mode used when none is given: strict when a Redis URL is configured,
    /// local-only when none is.
    pub fn default_for(redis_configured: bool) -> Mode {
        if redis_configured {
            Mode::StrictDistributed
        } else {
            Mode::LocalOnly
        }
    }

    /// The short name: `strict`, `degraded` or `local`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::StrictDistributed => "strict",
            Mode::ExplicitDegraded => "degraded",
            Mode::LocalOnly => "local",
        }
    }

    /// Whether this mode needs a Redis URL.
    pub fn needs_redis(self) -> bool {
        !matches!(self, Mode::LocalOnly)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(t))
            .ok_or_else(|| {
                Error::config(format!(
                    "unknown mode {t:?}: expected one of `strict`, `degraded`, `local`"
                ))
            })
    }
}
