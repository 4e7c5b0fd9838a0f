//! The user-facing [`Throttle`] and [`RateLimiter`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use palisade_cache_core::{Error, ErrorKind, ErrorSummary, Health, Mode, Namespace, Tagged};

use crate::model::{DenyReason, KeyState, Permit, Policy, Rate, RateDecision, RawDecision, Scope, ThrottleBackend};

/// The answer of [`Throttle::acquire`]: granted or refused, nothing else (hence not
/// `#[non_exhaustive]`: a `match` needs no wildcard).
#[derive(Debug)]
pub enum Decision {
    /// Granted.
    Acquired(Permit),
    /// Refused.
    Denied {
        /// The first gate that failed (penalty, min interval, global cap, key cap).
        reason: DenyReason,
        /// The earliest moment every gate could pass, from now.
        retry_after: Duration,
    },
}

impl Decision {
    /// The permit, if granted.
    pub fn permit(self) -> Option<Permit> {
        match self {
            Decision::Acquired(p) => Some(p),
            Decision::Denied { .. } => None,
        }
    }
}

/// Counters and state of a throttle or rate limiter.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ThrottleStats {
    /// Acquisitions granted.
    pub acquired: u64,
    /// Acquisitions refused.
    pub denied: u64,
    /// Refusals by reason (every reason listed, in gate order).
    pub denials: Vec<(DenyReason, u64)>,
    /// Rate-limit checks let through.
    pub allowed: u64,
    /// Rate-limit checks refused.
    pub limited: u64,
    /// Permits granted here and not yet released or dropped.
    pub held_permits: u64,
    /// Expired leases the backend reclaimed during this process's acquisitions.
    pub reclaimed: u64,
    /// Failed calls, by kind.
    pub errors: Vec<(ErrorKind, u64)>,
    /// The mode.
    pub mode: Mode,
    /// The health of the shared store.
    pub health: Health,
    /// When the current outage began, if degraded.
    pub degraded_since: Option<SystemTime>,
    /// The last error (redacted).
    pub last_error: Option<ErrorSummary>,
}

impl ThrottleStats {
    /// Refusals for `reason`.
    pub fn denials_of(&self, reason: DenyReason) -> u64 {
        self.denials.iter().find(|(r, _)| *r == reason).map_or(0, |(_, n)| *n)
    }
}

#[derive(Default)]
struct Counters {
    acquired: AtomicU64,
    denied: [AtomicU64; DenyReason::ALL.len()],
    allowed: AtomicU64,
    limited: AtomicU64,
    held: AtomicU64,
    reclaimed: AtomicU64,
    errors: [AtomicU64; ErrorKind::ALL.len()],
    last_error: Mutex<Option<ErrorSummary>>,
}

impl Counters {
    fn error<T>(&self, r: Result<T, Error>) -> Result<T, Error> {
        if let Err(e) = &r {
            self.errors[e.kind().index()].fetch_add(1, Ordering::Relaxed);
            *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(ErrorSummary::of(e));
        }
        r
    }

    fn snapshot(&self, mode: Mode, health: Health) -> ThrottleStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let denials: Vec<_> = DenyReason::ALL
            .iter()
            .map(|r| (*r, load(&self.denied[r.gate()])))
            .collect();
        ThrottleStats {
            acquired: load(&self.acquired),
            denied: denials.iter().map(|(_, n)| n).sum(),
            denials,
            allowed: load(&self.allowed),
            limited: load(&self.limited),
            held_permits: load(&self.held),
            reclaimed: load(&self.reclaimed),
            errors: ErrorKind::ALL
                .iter()
                .map(|k| (*k, load(&self.errors[k.index()])))
                .filter(|(_, n)| *n > 0)
                .collect(),
            mode,
            health,
            degraded_since: match health {
                Health::Degraded { since } => Some(since),
                _ => None,
            },
            last_error: self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }
}

/// A throttle namespace over a backend: one atomic multi-gate decision per acquire.
/// Cheap to clone; clones share the counters.
#[derive(Clone)]
pub struct Throttle<B> {
    backend: B,
    scope: Arc<Scope>,
    counters: Arc<Counters>,
}

impl<B> std::fmt::Debug for Throttle<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl<B: ThrottleBackend> Throttle<B> {
    /// The throttle namespace `ns` over `backend`.
    pub fn new(backend: B, ns: Namespace) -> Self {
        Throttle {
            backend,
            scope: Arc::new(Scope::new(ns)),
            counters: Arc::default(),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The scope (namespace and key layout).
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    fn check_key(&self, key: &str) -> Result<(), Error> {
        // Every key the backends build for `key` must fit: the longest is the state key.
        self.scope.state_key(key).map(drop)
    }

    /// Tries to take a lease on `key` under `policy`.
    ///
    /// # Behavior
    ///
    /// - Penalty, minimum interval, global cap and key cap are checked in that order in
    ///   one atomic step (one Lua script, one round trip on Redis), after expired leases
    ///   are reclaimed; the first failing gate is the reason.
    /// - On success a lease is taken in the global and the key accounting, the
    ///   acquisition time is recorded, and a [`Permit`] with a fresh fencing token
    ///   (strictly increasing per namespace) is returned.
    /// - `retry_after` is the earliest moment at which every gate could pass: the
    ///   penalty's end, the interval's end, the expiry of the leases that fill a cap.
    /// - An invalid policy or an empty or oversized key is [`Error::InvalidInput`]
    ///   before any I/O.
    /// - In strict mode an unreachable Redis is an error, never a fake denial.
    pub async fn acquire(&self, key: &str, policy: &Policy) -> Result<Tagged<Decision>, Error> {
        let r = async {
            policy.validate()?;
            self.check_key(key)?;
            self.backend.acquire(&self.scope, key, &policy.effective()).await
        }
        .await;
        let t = self.counters.error(r)?;
        let provenance = t.provenance;
        let (raw, reclaimed) = t.value;
        self.counters.reclaimed.fetch_add(reclaimed, Ordering::Relaxed);
        let decision = match raw {
            RawDecision::Acquired(lease, ops) => {
                self.counters.acquired.fetch_add(1, Ordering::Relaxed);
                self.counters.held.fetch_add(1, Ordering::Relaxed);
                let counters = Arc::clone(&self.counters);
                let done: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
                    counters.held.fetch_sub(1, Ordering::Relaxed);
                });
                Decision::Acquired(Permit::new(lease, ops, Some(done)))
            }
            RawDecision::Denied { reason, retry_after } => {
                self.counters.denied[reason.gate()].fetch_add(1, Ordering::Relaxed);
                Decision::Denied { reason, retry_after }
            }
        };
        Ok(Tagged::new(decision, provenance))
    }

    /// Penalizes `key` for `d`.
    ///
    /// # Behavior
    ///
    /// - Acquisitions on the key are denied with [`DenyReason::Penalty`] until the
    ///   penalty ends; the longer penalty wins (a shorter one never shortens it).
    /// - Returns when the penalty ends (backend time).
    pub async fn penalize(&self, key: &str, d: Duration) -> Result<Tagged<SystemTime>, Error> {
        let r = async {
            palisade_cache_core::limits::check_duration("a penalty", d, crate::MIN_DURATION, crate::MAX_PENALTY)?;
            self.check_key(key)?;
            self.backend.penalize(&self.scope, key, d).await
        }
        .await;
        self.counters.error(r)
    }

    /// Ends the penalty of `key`; says whether one was running.
    ///
    /// # Behavior
    ///
    /// - Afterwards the penalty gate passes for the key.
    pub async fn clear_penalty(&self, key: &str) -> Result<Tagged<bool>, Error> {
        let r = async {
            self.check_key(key)?;
            self.backend.clear_penalty(&self.scope, key).await
        }
        .await;
        self.counters.error(r)
    }

    /// The state of `key`.
    ///
    /// # Behavior
    ///
    /// - Live (unexpired) leases of the key and of the namespace, the running penalty's
    ///   end, and the last acquisition of the key.
    pub async fn inspect(&self, key: &str) -> Result<Tagged<KeyState>, Error> {
        let r = async {
            self.check_key(key)?;
            self.backend.inspect(&self.scope, key).await
        }
        .await;
        self.counters.error(r)
    }

    /// Counters and state.
    ///
    /// # Behavior
    ///
    /// - Decisions by outcome, denials by reason, permits held by this process, leases
    ///   reclaimed after expiry, errors by kind, mode, health and the last error.
    pub fn stats(&self) -> ThrottleStats {
        let s = self.backend.status();
        self.counters.snapshot(s.mode, s.health)
    }
}

/// GCRA rate limiting per key, under the same modes and events as the throttle.
#[derive(Clone)]
pub struct RateLimiter<B> {
    backend: B,
    scope: Arc<Scope>,
    counters: Arc<Counters>,
}

impl<B> std::fmt::Debug for RateLimiter<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl<B: ThrottleBackend> RateLimiter<B> {
    /// The rate-limit namespace `ns` over `backend`.
    pub fn new(backend: B, ns: Namespace) -> Self {
        RateLimiter {
            backend,
            scope: Arc::new(Scope::new(ns)),
            counters: Arc::default(),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The scope (namespace and key layout).
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// One request for `key` at `rate`.
    ///
    /// # Behavior
    ///
    /// - GCRA: up to `burst` requests pass at once, then one per emission interval;
    ///   `remaining` is how many more would pass right now; a refusal says when the next
    ///   would pass. One atomic step (one script, one round trip on Redis), server time.
    /// - A refused request consumes nothing.
    /// - An empty or oversized key is [`Error::InvalidInput`] before any I/O.
    pub async fn limit(&self, key: &str, rate: &Rate) -> Result<Tagged<RateDecision>, Error> {
        // The backends build (and so check) the key before any I/O.
        let r = self.backend.limit(&self.scope, key, rate).await;
        let t = self.counters.error(r)?;
        match t.value {
            RateDecision::Allowed { .. } => self.counters.allowed.fetch_add(1, Ordering::Relaxed),
            RateDecision::Limited { .. } => self.counters.limited.fetch_add(1, Ordering::Relaxed),
        };
        Ok(t)
    }

    /// Counters and state.
    pub fn stats(&self) -> ThrottleStats {
        let s = self.backend.status();
        self.counters.snapshot(s.mode, s.health)
    }
}
