//! The user-facing [`Throttle`] and [`RateLimiter`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use palisade_cache_core::{Error, ErrorCounters, Namespace, Op, Run, StatusSnapshot, Tagged, observe, on_behalf_of};

use crate::model::{
    DenyReason, KeyState, MAX_LEASE, MIN_DURATION, Permit, Policy, Rate, RateDecision, RawDecision, Scope,
    ThrottleBackend, Waiter, Woken,
};
use crate::op;

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
    /// [`Throttle::acquire_wait`] calls that had to wait (were queued at least once).
    pub waited: u64,
    /// Times a waiter was woken by a release, a departure or a grant that left room
    /// (and asked again).
    pub wakeups: u64,
    /// Waiters served by a handoff: a release granted them its slot, no second
    /// acquisition (see [`ThrottleBackend`](crate::ThrottleBackend)'s "Handoff").
    pub handoffs: u64,
    /// Times a waiter checked again without a wake-up: at the time a refusal named
    /// (a penalty's or interval's end, a lease's expiry) or at the fallback re-check.
    pub rechecks: u64,
    /// Mode, health, errors by kind and the last error.
    pub status: StatusSnapshot,
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
    waited: AtomicU64,
    wakeups: AtomicU64,
    handoffs: AtomicU64,
    rechecks: AtomicU64,
    errors: ErrorCounters,
}

/// What a [`Throttle`] and a [`RateLimiter`] hold: the backend, the scope, the tenant
/// and the counters shared by clones and namespace siblings.
#[derive(Clone)]
struct Handle<B> {
    backend: B,
    scope: Arc<Scope>,
    tenant: Arc<str>,
    counters: Arc<Counters>,
}

impl<B: Clone> Handle<B> {
    fn new(backend: B, ns: Namespace) -> Self {
        Handle {
            backend,
            tenant: Arc::from(ns.tenant()),
            scope: Arc::new(Scope::new(ns)),
            counters: Arc::default(),
        }
    }

    /// The same backend and counters over `ns`.
    fn with_ns(&self, ns: Namespace) -> Self {
        Handle {
            backend: self.backend.clone(),
            tenant: Arc::from(ns.tenant()),
            scope: Arc::new(Scope::new(ns)),
            counters: Arc::clone(&self.counters),
        }
    }

    /// Runs `op` on behalf of the tenant and counts its error.
    async fn run<O: Op>(&self, op: O) -> Result<Tagged<O::Output>, Error>
    where
        B: Run<O>,
    {
        let r = on_behalf_of(&self.tenant, self.backend.run(&op)).await;
        self.counters.errors.watch(r)
    }

    /// Runs the operation `make` builds when `checked` (the input checks) passed;
    /// otherwise counts and returns the check's error, before any I/O.
    async fn run_checked<O: Op>(
        &self,
        checked: Result<(), Error>,
        make: impl FnOnce(Arc<Scope>) -> O,
    ) -> Result<Tagged<O::Output>, Error>
    where
        B: Run<O>,
    {
        match checked {
            Ok(()) => self.run(make(Arc::clone(&self.scope))).await,
            Err(e) => self.counters.errors.watch(Err(e)),
        }
    }

    fn stats(&self) -> ThrottleStats
    where
        B: palisade_cache_core::Backend,
    {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let denials: Vec<_> = DenyReason::ALL
            .iter()
            .map(|r| (*r, load(&c.denied[r.gate()])))
            .collect();
        ThrottleStats {
            acquired: load(&c.acquired),
            denied: denials.iter().map(|(_, n)| n).sum(),
            denials,
            allowed: load(&c.allowed),
            limited: load(&c.limited),
            held_permits: load(&c.held),
            reclaimed: load(&c.reclaimed),
            waited: load(&c.waited),
            wakeups: load(&c.wakeups),
            handoffs: load(&c.handoffs),
            rechecks: load(&c.rechecks),
            status: c.errors.snapshot(self.backend.status()),
        }
    }
}

/// A throttle namespace over a backend: one atomic multi-gate decision per acquire.
/// Cheap to clone; clones share the counters.
#[derive(Clone)]
pub struct Throttle<B> {
    h: Handle<B>,
    recheck: Duration,
}

impl<B> std::fmt::Debug for Throttle<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("scope", &self.h.scope)
            .finish_non_exhaustive()
    }
}

impl<B: ThrottleBackend> Throttle<B> {
    /// The throttle namespace `ns` over `backend`.
    pub fn new(backend: B, ns: Namespace) -> Self {
        Throttle {
            h: Handle::new(backend, ns),
            recheck: Throttle::<B>::DEFAULT_RECHECK,
        }
    }

    /// How often a waiter of [`Throttle::acquire_wait`] checks again when no wake-up
    /// came: 2 s. It bounds a lost wake-up (a connection that dropped while a release
    /// was pushed) and renews the waiter's queue entry.
    pub const DEFAULT_RECHECK: Duration = Duration::from_secs(2);

    /// The same throttle with the fallback re-check of waiters every `d` (kept within
    /// 1 ms and one day; see [`Throttle::DEFAULT_RECHECK`]). A waiter's queue entry
    /// lives twice that plus 2 s without a check.
    pub fn with_recheck(mut self, d: Duration) -> Self {
        self.recheck = d.clamp(MIN_DURATION, MAX_LEASE);
        self
    }

    /// The same throttle (backend, counters) for another namespace of the tenant: its
    /// own global cap, on its own cluster slot.
    pub fn namespace(&self, name: &str) -> Result<Self, Error> {
        Ok(Throttle {
            h: self.h.with_ns(self.h.scope.ns().sibling(name)?),
            recheck: self.recheck,
        })
    }

    /// The same throttle (backend, counters, namespace name) for another tenant.
    pub fn for_tenant(&self, tenant: &str) -> Result<Self, Error> {
        Ok(Throttle {
            h: self.h.with_ns(self.h.scope.ns().with_tenant(tenant)?),
            recheck: self.recheck,
        })
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.h.backend
    }

    /// The scope (namespace and key layout).
    pub fn scope(&self) -> &Scope {
        &self.h.scope
    }

    fn check_key(&self, key: &str) -> Result<(), Error> {
        // Every key the backends build for `key` must fit: the longest is the state key.
        self.h.scope.state_key(key).map(drop)
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
    /// - A dropped `acquire` future takes no lease for good: once its call was sent,
    ///   the call is finished in the background and a lease it got is released (when a
    ///   tokio runtime is there; the lease expires in any case).
    pub async fn acquire(&self, key: &str, policy: &Policy) -> Result<Tagged<Decision>, Error> {
        let (this, key, policy) = (self.clone(), key.to_owned(), *policy);
        FinishOnDrop::new(async move { this.acquire_now(&key, &policy).await }).await
    }

    /// [`Throttle::acquire`], not protected from being dropped mid-call.
    async fn acquire_now(&self, key: &str, policy: &Policy) -> Result<Tagged<Decision>, Error> {
        let checked = policy.validate().and_then(|()| self.check_key(key));
        let t = self
            .h
            .run_checked(checked, |s| {
                op::Acquire::new(s, key.to_owned(), policy.effective(), None)
            })
            .await?;
        let (raw, reclaimed) = t.value;
        self.h.counters.reclaimed.fetch_add(reclaimed, Ordering::Relaxed);
        Ok(self.decided(raw, t.provenance))
    }

    /// Waits up to `max_wait` for a lease on `key` under `policy`: the answer of
    /// [`Throttle::acquire`], but a refusal waits in the key's queue for its turn.
    ///
    /// # Behavior
    ///
    /// - Returns a [`Permit`] as soon as every gate admits one, or
    ///   [`Decision::Denied`] with the last refusal's reason once `max_wait` has passed
    ///   (a `max_wait` of zero is one [`Throttle::acquire`]); never later than
    ///   `max_wait` plus the command deadline.
    /// - Waiters on a key are served in arrival order (the backend's time at their
    ///   first refusal), across every process sharing the backend; a plain
    ///   [`Throttle::acquire`] never takes a slot a queued waiter is owed. Across the
    ///   keys of a namespace, waiters held back by the global cap are woken in arrival
    ///   order but compete with new acquisitions on other keys.
    /// - The release of a lease on its key hands the slot to the waiter at the head of
    ///   the queue when every gate admits it: the permit comes with the wake-up, no
    ///   second round trip. Otherwise a waiter is woken by a release of a lease on its
    ///   key or namespace, by a waiter ahead of it leaving, and by a grant that left
    ///   room, and asks again; it checks again at the moment a refusal named (a
    ///   penalty's or interval's end, a lease's expiry) and, should a wake-up be lost,
    ///   at least every [`Throttle::with_recheck`] period.
    /// - A waiter that gives up, fails or is dropped leaves no queue entry: it is
    ///   removed (in the background when the future is dropped), and an entry whose
    ///   waiter stopped checking (a crashed process) expires after twice the re-check
    ///   period plus 2 s. No lease is kept for a waiter that is gone: one granted or
    ///   handed to it as it went away is given back by its removal, and one handed to a
    ///   waiter that never takes it (a crashed process) goes back when its entry's life
    ///   is over.
    /// - A `max_wait` over one day, an invalid policy or key is
    ///   [`Error::InvalidInput`] before any I/O.
    /// - In strict mode an outage fails the waiter within the command deadline of the
    ///   call that meets it; in degraded mode the waiter goes on waiting on the local
    ///   backend under the scaled policy (its place in the queue starts again there).
    pub async fn acquire_wait(
        &self,
        key: &str,
        policy: &Policy,
        max_wait: Duration,
    ) -> Result<Tagged<Decision>, Error> {
        let checked = policy
            .validate()
            .and_then(|()| self.check_key(key))
            .and_then(|()| palisade_cache_core::limits::check_duration("a wait", max_wait, Duration::ZERO, MAX_LEASE));
        if let Err(e) = checked {
            return self.h.counters.errors.watch(Err(e));
        }
        if max_wait.is_zero() {
            return self.acquire(key, policy).await;
        }
        let c = &self.h.counters;
        let started = tokio::time::Instant::now();
        let waiter = Waiter::new(fastrand::u64(1..), entry_ttl(self.recheck));
        // Armed from the first call on: dropped while that call is in flight, the
        // dequeue that follows it (on the same connection, so after it) takes the entry
        // out, or gives back the lease it was granted.
        let mut queued = Queued {
            h: self.h.clone(),
            key: key.to_owned(),
            ticket: waiter.ticket,
            armed: true,
        };
        let mut counted = false;
        loop {
            let t = self
                .h
                .run(op::Acquire::new(
                    Arc::clone(&self.h.scope),
                    key.to_owned(),
                    policy.effective(),
                    Some(waiter),
                ))
                .await?;
            let (raw, reclaimed) = t.value;
            c.reclaimed.fetch_add(reclaimed, Ordering::Relaxed);
            let retry_after = match &raw {
                RawDecision::Acquired(..) => {
                    // The grant took the waiter out of every queue.
                    queued.armed = false;
                    return Ok(self.decided(raw, t.provenance));
                }
                RawDecision::Denied { retry_after, .. } => *retry_after,
            };
            if !counted {
                counted = true;
                c.waited.fetch_add(1, Ordering::Relaxed);
            }
            let left = max_wait.saturating_sub(started.elapsed());
            if left.is_zero() {
                queued.armed = false;
                // Best effort: an entry left behind expires with its TTL.
                let _ = self
                    .h
                    .run(op::Dequeue::new(
                        Arc::clone(&self.h.scope),
                        key.to_owned(),
                        waiter.ticket,
                    ))
                    .await;
                return Ok(self.decided(raw, t.provenance));
            }
            let within = left.min(self.recheck).min(retry_after.max(MIN_DURATION));
            let woken = self
                .h
                .run(op::Wake::new(
                    Arc::clone(&self.h.scope),
                    key.to_owned(),
                    waiter.ticket,
                    within,
                ))
                .await?;
            match woken.value {
                Woken::Granted(lease, ops) => {
                    // The release that handed the slot over took the waiter out of
                    // every queue.
                    queued.armed = false;
                    c.handoffs.fetch_add(1, Ordering::Relaxed);
                    return Ok(self.decided(RawDecision::Acquired(lease, ops), woken.provenance));
                }
                Woken::Woken => c.wakeups.fetch_add(1, Ordering::Relaxed),
                Woken::TimedOut => c.rechecks.fetch_add(1, Ordering::Relaxed),
            };
        }
    }

    /// Counts and reports a final decision, and makes a granted lease a [`Permit`].
    fn decided(&self, raw: RawDecision, provenance: palisade_cache_core::Provenance) -> Tagged<Decision> {
        let c = &self.h.counters;
        let decision = match raw {
            RawDecision::Acquired(lease, ops) => {
                c.acquired.fetch_add(1, Ordering::Relaxed);
                c.held.fetch_add(1, Ordering::Relaxed);
                let counters = Arc::clone(c);
                let done: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
                    counters.held.fetch_sub(1, Ordering::Relaxed);
                });
                Decision::Acquired(Permit::new(lease, ops, Some(done)))
            }
            RawDecision::Denied { reason, retry_after } => {
                c.denied[reason.gate()].fetch_add(1, Ordering::Relaxed);
                Decision::Denied { reason, retry_after }
            }
        };
        let ns = self.h.scope.ns();
        let (acquired, reason) = match &decision {
            Decision::Acquired(_) => (true, "none"),
            Decision::Denied { reason, .. } => (false, reason.as_str()),
        };
        observe::throttle_decision(ns.tenant(), ns.name(), acquired, reason);
        Tagged::new(decision, provenance)
    }

    /// Penalizes `key` for `d`.
    ///
    /// # Behavior
    ///
    /// - Acquisitions on the key are denied with [`DenyReason::Penalty`] until the
    ///   penalty ends; the longer penalty wins (a shorter one never shortens it).
    /// - Returns when the penalty ends (backend time).
    pub async fn penalize(&self, key: &str, d: Duration) -> Result<Tagged<SystemTime>, Error> {
        let checked =
            palisade_cache_core::limits::check_duration("a penalty", d, crate::MIN_DURATION, crate::MAX_PENALTY)
                .and_then(|()| self.check_key(key));
        self.h
            .run_checked(checked, |s| op::Penalize::new(s, key.to_owned(), d))
            .await
    }

    /// Ends the penalty of `key`; says whether one was running.
    ///
    /// # Behavior
    ///
    /// - Afterwards the penalty gate passes for the key.
    pub async fn clear_penalty(&self, key: &str) -> Result<Tagged<bool>, Error> {
        self.h
            .run_checked(self.check_key(key), |s| op::ClearPenalty::new(s, key.to_owned()))
            .await
    }

    /// The state of `key`.
    ///
    /// # Behavior
    ///
    /// - Live (unexpired) leases of the key and of the namespace, the running penalty's
    ///   end, and the last acquisition of the key.
    pub async fn inspect(&self, key: &str) -> Result<Tagged<KeyState>, Error> {
        self.h
            .run_checked(self.check_key(key), |s| op::Inspect::new(s, key.to_owned()))
            .await
    }

    /// Counters and state.
    ///
    /// # Behavior
    ///
    /// - Decisions by outcome, denials by reason, permits held by this process, leases
    ///   reclaimed after expiry; `status`: errors by kind, the last error, mode and
    ///   health.
    /// - Clones and [`Throttle::namespace`] siblings share the counters.
    pub fn stats(&self) -> ThrottleStats {
        self.h.stats()
    }
}

/// How long a waiter's queue entry lives without a check: twice the re-check period
/// plus 2 s (a check may wait up to a period, and its call a command deadline).
fn entry_ttl(recheck: Duration) -> Duration {
    recheck
        .saturating_mul(2)
        .saturating_add(Duration::from_secs(2))
        .min(MAX_LEASE)
}

/// A waiter's place in a queue while [`Throttle::acquire_wait`] runs: dropped while
/// armed, it takes the entry out in the background (when a tokio runtime is there;
/// the entry expires in any case).
struct Queued<B: ThrottleBackend> {
    h: Handle<B>,
    key: String,
    ticket: u64,
    armed: bool,
}

impl<B: ThrottleBackend> Drop for Queued<B> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let h = self.h.clone();
            let op = op::Dequeue::new(Arc::clone(&h.scope), std::mem::take(&mut self.key), self.ticket);
            rt.spawn(async move {
                if let Err(e) = h.run(op).await {
                    tracing::debug!(target: palisade_cache_core::EVENT_TARGET, error = %e.chain(), "background dequeue failed; the entry expires");
                }
            });
        }
    }
}

/// A future that, dropped after its first poll and before its end, is finished in the
/// background on the current tokio runtime, its output dropped there. An acquisition
/// whose caller went away while the answer was on its way thus ends with its
/// [`Permit`] dropped — released — instead of a lease held until its TTL.
struct FinishOnDrop<F: Future + Send + 'static>
where
    F::Output: Send,
{
    fut: Option<std::pin::Pin<Box<F>>>,
    started: bool,
}

impl<F: Future + Send + 'static> FinishOnDrop<F>
where
    F::Output: Send,
{
    fn new(fut: F) -> Self {
        FinishOnDrop {
            fut: Some(Box::pin(fut)),
            started: false,
        }
    }
}

impl<F: Future + Send + 'static> Future for FinishOnDrop<F>
where
    F::Output: Send,
{
    type Output = F::Output;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        self.started = true;
        let Some(fut) = self.fut.as_mut() else {
            // Polled after its end: nothing more will come.
            return std::task::Poll::Pending;
        };
        let out = std::task::ready!(fut.as_mut().poll(cx));
        self.fut = None;
        std::task::Poll::Ready(out)
    }
}

impl<F: Future + Send + 'static> Drop for FinishOnDrop<F>
where
    F::Output: Send,
{
    fn drop(&mut self) {
        // Never polled: nothing was sent, and nothing is started now.
        let Some(fut) = self.fut.take().filter(|_| self.started) else {
            return;
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                drop(fut.await);
            });
        }
    }
}

/// GCRA rate limiting per key, under the same modes and events as the throttle.
#[derive(Clone)]
pub struct RateLimiter<B> {
    h: Handle<B>,
}

impl<B> std::fmt::Debug for RateLimiter<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("scope", &self.h.scope)
            .finish_non_exhaustive()
    }
}

impl<B: ThrottleBackend> RateLimiter<B> {
    /// The rate-limit namespace `ns` over `backend`.
    pub fn new(backend: B, ns: Namespace) -> Self {
        RateLimiter {
            h: Handle::new(backend, ns),
        }
    }

    /// The same limiter (backend, counters) for another namespace of the tenant.
    pub fn namespace(&self, name: &str) -> Result<Self, Error> {
        Ok(RateLimiter {
            h: self.h.with_ns(self.h.scope.ns().sibling(name)?),
        })
    }

    /// The same limiter (backend, counters, namespace name) for another tenant.
    pub fn for_tenant(&self, tenant: &str) -> Result<Self, Error> {
        Ok(RateLimiter {
            h: self.h.with_ns(self.h.scope.ns().with_tenant(tenant)?),
        })
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.h.backend
    }

    /// The scope (namespace and key layout).
    pub fn scope(&self) -> &Scope {
        &self.h.scope
    }

    /// One request for `key` at `rate`: [`RateLimiter::limit_n`] at a cost of 1.
    ///
    /// # Behavior
    ///
    /// - GCRA: up to `burst` requests pass at once, then one per emission interval;
    ///   `remaining` is how many more would pass right now; a refusal says when the next
    ///   would pass. One atomic step (one script, one round trip on Redis), server time.
    /// - Concurrent decisions on one key, from any number of tasks or nodes, are each
    ///   that one atomic step: of many at once exactly `burst` pass, with `remaining`
    ///   from `burst − 1` down to 0 once each (on Redis, decisions that arrive while one
    ///   is in flight share the next script call, each still deciding alone).
    /// - A refused request consumes nothing.
    /// - Every decision carries the burst (`limit`) and when the allowance is full again
    ///   (`reset_after`): each request passed adds one emission interval to it (one
    ///   interval after the first request on a full allowance); a refusal reports it
    ///   unchanged.
    /// - An empty or oversized key is [`Error::InvalidInput`] before any I/O.
    pub async fn limit(&self, key: &str, rate: &Rate) -> Result<Tagged<RateDecision>, Error> {
        self.decide(key, rate, 1, true).await
    }

    /// One request for `key` that counts as `cost` requests (a bulk call, a large
    /// upload).
    ///
    /// # Behavior
    ///
    /// - Allowed when `cost` requests fit the allowance right now, which they then
    ///   consume together; refused otherwise, consuming nothing, with the time until
    ///   `cost` would fit.
    /// - A cost of 0, or above the rate's burst (it could never pass), is
    ///   [`Error::InvalidInput`] before any I/O.
    pub async fn limit_n(&self, key: &str, rate: &Rate, cost: u32) -> Result<Tagged<RateDecision>, Error> {
        self.decide(key, rate, cost, true).await
    }

    /// What [`RateLimiter::limit`] would answer for `key` now, consuming nothing.
    ///
    /// # Behavior
    ///
    /// - The decision `limit` would return at this moment (allowed or limited,
    ///   `remaining`, `retry_after`), but the allowance is left as it was: peeking any
    ///   number of times changes no later decision.
    pub async fn peek(&self, key: &str, rate: &Rate) -> Result<Tagged<RateDecision>, Error> {
        self.decide(key, rate, 1, false).await
    }

    /// Forgets `key`'s state: its next request sees a full allowance.
    ///
    /// # Behavior
    ///
    /// - After a reset the key passes `burst` requests at once again; other keys are
    ///   untouched. Answers whether the key had any state.
    pub async fn reset(&self, key: &str) -> Result<Tagged<bool>, Error> {
        self.h
            .run(op::ResetRate::new(Arc::clone(&self.h.scope), key.to_owned()))
            .await
    }

    async fn decide(&self, key: &str, rate: &Rate, cost: u32, consume: bool) -> Result<Tagged<RateDecision>, Error> {
        let checked = match cost {
            0 => Err(Error::invalid_input("a rate-limit cost is at least 1")),
            c if c > rate.burst => Err(Error::invalid_input(
                "a rate-limit cost above the burst could never pass",
            )),
            _ => Ok(()),
        };
        // The backends build (and so check) the key before any I/O.
        let t = self
            .h
            .run_checked(checked, |s| op::Limit::new(s, key.to_owned(), *rate, cost, consume))
            .await?;
        let c = &self.h.counters;
        if consume {
            match t.value {
                RateDecision::Allowed { .. } => c.allowed.fetch_add(1, Ordering::Relaxed),
                RateDecision::Limited { .. } => c.limited.fetch_add(1, Ordering::Relaxed),
            };
            let ns = self.h.scope.ns();
            observe::ratelimit_decision(ns.tenant(), ns.name(), t.value.is_allowed());
        }
        Ok(t)
    }

    /// Counters and state (see [`Throttle::stats`]).
    pub fn stats(&self) -> ThrottleStats {
        self.h.stats()
    }
}
