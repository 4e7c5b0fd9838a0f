//! What every contract's stats share: error counters and a health snapshot.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::cache::BackendStatus;
use crate::{Error, ErrorKind, ErrorSummary, Health, Mode};

/// Failed calls by kind, and the last one (redacted). Every contract's user-facing
/// wrapper keeps one, shared by its clones.
#[derive(Debug, Default)]
pub struct ErrorCounters {
    by_kind: [AtomicU64; ErrorKind::ALL.len()],
    last: Mutex<Option<ErrorSummary>>,
}

impl ErrorCounters {
    /// Counts `e`.
    pub fn note(&self, e: &Error) {
        self.by_kind[e.kind().index()].fetch_add(1, Ordering::Relaxed);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(ErrorSummary::of(e));
    }

    /// Counts `r`'s error, if any, and returns `r`.
    pub fn watch<T>(&self, r: Result<T, Error>) -> Result<T, Error> {
        if let Err(e) = &r {
            self.note(e);
        }
        r
    }

    /// The counters with the backend's mode and health.
    pub fn snapshot(&self, status: BackendStatus) -> StatusSnapshot {
        StatusSnapshot {
            mode: status.mode,
            health: status.health,
            since: match status.health {
                Health::Down { since } => Some(since),
                _ => None,
            },
            errors: ErrorKind::ALL
                .iter()
                .map(|k| (*k, self.by_kind[k.index()].load(Ordering::Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            last_error: self.last.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }
}

/// The mode, the health of the shared store and the errors of one contract, inside
/// every contract's stats (`CacheStats::status`, `JobStats::status`,
/// `ThrottleStats::status`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatusSnapshot {
    /// The mode.
    pub mode: Mode,
    /// The health of the shared store.
    pub health: Health,
    /// When the current outage began, while the store is down.
    pub since: Option<SystemTime>,
    /// Failed calls, by kind (kinds with none are left out).
    pub errors: Vec<(ErrorKind, u64)>,
    /// The last error (redacted).
    pub last_error: Option<ErrorSummary>,
}

impl StatusSnapshot {
    /// The number of errors of `kind`.
    pub fn errors_of(&self, kind: ErrorKind) -> u64 {
        self.errors.iter().find(|(k, _)| *k == kind).map_or(0, |(_, n)| *n)
    }
}
