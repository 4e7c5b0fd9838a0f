//! Policies, decisions, permits and the backend contract.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use palisade_cache_core::{BoxFuture, Contract, Error, Namespace};

use crate::op;

/// The longest lease, lease extension and minimum interval: one day.
pub const MAX_LEASE: Duration = palisade_cache_core::limits::MAX_LEASE;

/// The longest penalty: 365 days.
pub const MAX_PENALTY: Duration = palisade_cache_core::limits::MAX_PENALTY;

/// The shortest lease, extension or penalty: 1 ms (a shorter lease would expire as it
/// is granted).
pub const MIN_DURATION: Duration = palisade_cache_core::limits::MIN_DURATION;

/// The longest a rate's burst may take to refill (emission interval × burst): 200
/// years. It keeps every GCRA time exact in Lua's doubles (`now` plus the window stays
/// below 2^53 µs, about 285 years after 1970).
pub const MAX_RATE_WINDOW: Duration = Duration::from_secs(200 * 365 * 86_400);

/// `d` divided by `share` (in `(0, 1]`), or `None` when that is no finite duration.
fn div_share(d: Duration, share: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(d.as_secs_f64() / share).ok()
}

/// The gates of one throttle namespace.
///
/// # Behavior
///
/// - Built with named steps: `Policy::builder().global_cap(6).key_cap(2)
///   .min_interval(d).lease_ttl(d).build()`. The global cap is required; the key cap
///   defaults to the global cap, the minimum interval to zero (no spacing) and the
///   lease TTL to 30 s.
/// - [`PolicyBuilder::build`] refuses a missing or zero `global_cap`, a zero
///   `key_cap`, a `lease_ttl` outside 1 ms to one day, and a `min_interval` longer than
///   one day with [`Error::InvalidInput`]; a zero `min_interval` turns spacing off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Policy {
    /// Leases held at once across every key of the namespace.
    pub global_cap: u32,
    /// Leases held at once on one key.
    pub key_cap: u32,
    /// The least time between two acquisitions on one key.
    pub min_interval: Duration,
    /// How long a lease lives unless released or extended; a crashed holder's slot
    /// comes back after this.
    pub lease_ttl: Duration,
}

impl ScaledPolicy {
    /// This policy for one node of a degraded fleet: caps multiplied by `share` and
    /// rounded down (0 admits nothing on that gate), the interval divided by it.
    pub fn scaled(&self, share: f64) -> ScaledPolicy {
        let share = if share.is_nan() { 0.0 } else { share.clamp(0.0, 1.0) };
        let cap = |c: u32| (f64::from(c) * share).floor() as u32;
        // No division can overflow: a tiny share spaces acquisitions by the longest
        // interval, one day.
        let interval = div_share(self.min_interval, share).map_or(MAX_LEASE, |d| d.min(MAX_LEASE));
        ScaledPolicy {
            global_cap: cap(self.global_cap),
            key_cap: cap(self.key_cap),
            min_interval: interval,
            lease_ttl: self.lease_ttl,
        }
    }
}

/// Builds a [`Policy`] step by step; see its `# Behavior`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use = "a policy builder does nothing until `build`"]
pub struct PolicyBuilder {
    global_cap: Option<u32>,
    key_cap: Option<u32>,
    min_interval: Duration,
    lease_ttl: Option<Duration>,
}

impl PolicyBuilder {
    /// Leases held at once across every key of the namespace (required).
    pub fn global_cap(mut self, n: u32) -> Self {
        self.global_cap = Some(n);
        self
    }
    /// Leases held at once on one key (default: the global cap).
    pub fn key_cap(mut self, n: u32) -> Self {
        self.key_cap = Some(n);
        self
    }
    /// The least time between two acquisitions on one key (default: zero, no spacing).
    pub fn min_interval(mut self, d: Duration) -> Self {
        self.min_interval = d;
        self
    }
    /// How long a lease lives unless released or extended (default 30 s).
    pub fn lease_ttl(mut self, d: Duration) -> Self {
        self.lease_ttl = Some(d);
        self
    }
    /// The checked policy.
    pub fn build(self) -> Result<Policy, Error> {
        let Some(global_cap) = self.global_cap else {
            return Err(Error::invalid_input("a throttle policy needs a global cap"));
        };
        let p = Policy {
            global_cap,
            key_cap: self.key_cap.unwrap_or(global_cap),
            min_interval: self.min_interval,
            lease_ttl: self.lease_ttl.unwrap_or(Policy::DEFAULT_LEASE_TTL),
        };
        p.validate()?;
        Ok(p)
    }
}

impl Policy {
    /// The lease TTL of a policy that does not set one: 30 s.
    pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

    /// A policy, step by step (see the type's `# Behavior`).
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder::default()
    }

    /// Checks the policy (see the type's `# Behavior`).
    pub fn validate(&self) -> Result<(), Error> {
        if self.global_cap == 0 || self.key_cap == 0 {
            return Err(Error::invalid_input("a throttle cap must be at least 1"));
        }
        palisade_cache_core::limits::check_duration("a lease TTL", self.lease_ttl, MIN_DURATION, MAX_LEASE)?;
        if self.min_interval > MAX_LEASE {
            return Err(Error::invalid_input("a minimum interval is limited to one day"));
        }
        Ok(())
    }

    /// The policy as the backends evaluate it.
    pub fn effective(&self) -> ScaledPolicy {
        ScaledPolicy {
            global_cap: self.global_cap,
            key_cap: self.key_cap,
            min_interval: self.min_interval,
            lease_ttl: self.lease_ttl,
        }
    }
}

impl ScaledPolicy {
    /// Checks what a backend needs of a policy, before any I/O: a lease TTL of 1 ms to
    /// one day and an interval of at most one day (caps may be 0: nothing is granted).
    pub fn validate(&self) -> Result<(), Error> {
        palisade_cache_core::limits::check_duration("a lease TTL", self.lease_ttl, MIN_DURATION, MAX_LEASE)?;
        if self.min_interval > MAX_LEASE {
            return Err(Error::invalid_input("a minimum interval is limited to one day"));
        }
        Ok(())
    }
}

/// A policy as a backend evaluates it (caps may be 0 after scaling for degraded mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ScaledPolicy {
    /// See [`Policy::global_cap`].
    pub global_cap: u32,
    /// See [`Policy::key_cap`].
    pub key_cap: u32,
    /// See [`Policy::min_interval`].
    pub min_interval: Duration,
    /// See [`Policy::lease_ttl`].
    pub lease_ttl: Duration,
}

/// Why an acquisition was refused, in the order the gates are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DenyReason {
    /// The key is penalized.
    Penalty,
    /// The key was acquired less than `min_interval` ago.
    MinInterval,
    /// The namespace holds `global_cap` leases.
    GlobalCap,
    /// The key holds `key_cap` leases.
    KeyCap,
    /// The Redis server started less than a lease TTL ago and holds no state for the
    /// namespace: it may have restarted empty while leases were held, so no new lease
    /// is granted until every lease that could still be live has run out (the "delayed
    /// restart" of Redis's distributed-lock guidance). See the crate docs.
    RestartHold,
}

impl DenyReason {
    /// All reasons, in gate order.
    pub const ALL: [DenyReason; 5] = [
        DenyReason::Penalty,
        DenyReason::MinInterval,
        DenyReason::GlobalCap,
        DenyReason::KeyCap,
        DenyReason::RestartHold,
    ];

    /// `penalty`, `min_interval`, `global_cap`, `key_cap`, `restart_hold`.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::Penalty => "penalty",
            DenyReason::MinInterval => "min_interval",
            DenyReason::GlobalCap => "global_cap",
            DenyReason::KeyCap => "key_cap",
            DenyReason::RestartHold => "restart_hold",
        }
    }

    /// The reason with gate number `n` (0-based), as scripts return it.
    pub fn from_gate(n: i64) -> Option<DenyReason> {
        usize::try_from(n).ok().and_then(|n| DenyReason::ALL.get(n).copied())
    }

    /// The gate number of this reason.
    pub fn gate(self) -> usize {
        self as usize
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A lease as the backend granted it (times are the backend's: the Redis server's).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lease {
    /// The fencing token: strictly increasing within a namespace.
    pub id: u64,
    /// The key.
    pub key: String,
    /// When it was granted.
    pub acquired_at: SystemTime,
    /// When it expires unless released or extended.
    pub expires_at: SystemTime,
}

impl fmt::Display for Lease {
    /// `lease 17 on "k", expires in 29.9s` (by this machine's clock).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let left = self
            .expires_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        write!(f, "lease {} on {:?}, expires in {:.1?}", self.id, self.key, left)
    }
}

impl Lease {
    /// A lease.
    pub fn new(id: u64, key: String, acquired_at: SystemTime, expires_at: SystemTime) -> Self {
        Lease {
            id,
            key,
            acquired_at,
            expires_at,
        }
    }
}

/// Releases and extends leases on the backend that granted them.
pub trait LeaseOps: Send + Sync + 'static {
    /// Removes the lease; `Some(server time)` if it was still held, `None` if it had
    /// expired or was released.
    fn release(&self, key: &str, lease: u64) -> BoxFuture<'_, Result<Option<SystemTime>, Error>>;
    /// Makes the lease expire no earlier than `by` from now; the new expiry, or `None`
    /// if the lease is gone.
    fn extend(&self, key: &str, lease: u64, by: Duration) -> BoxFuture<'_, Result<Option<SystemTime>, Error>>;
}

/// What a backend decided.
#[non_exhaustive]
pub enum RawDecision {
    /// Granted, with the lease operations of the backend that granted it.
    Acquired(Lease, Arc<dyn LeaseOps>),
    /// Refused.
    Denied {
        /// The first gate that failed.
        reason: DenyReason,
        /// The earliest moment every gate could pass, from now.
        retry_after: Duration,
    },
}

impl fmt::Debug for RawDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawDecision::Acquired(l, _) => f.debug_tuple("Acquired").field(l).finish(),
            RawDecision::Denied { reason, retry_after } => f
                .debug_struct("Denied")
                .field("reason", reason)
                .field("retry_after", retry_after)
                .finish(),
        }
    }
}

/// What a waiter's [`Wake`](crate::op::Wake) met.
#[non_exhaustive]
pub enum Woken {
    /// `within` passed without a wake-up.
    TimedOut,
    /// A wake-up: the waiter asks again.
    Woken,
    /// A release handed its slot to the waiter: the lease is the waiter's (with the
    /// lease operations of the backend that granted it) and the waiter has left every
    /// queue.
    Granted(Lease, Arc<dyn LeaseOps>),
}

impl fmt::Debug for Woken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Woken::TimedOut => f.write_str("TimedOut"),
            Woken::Woken => f.write_str("Woken"),
            Woken::Granted(l, _) => f.debug_tuple("Granted").field(l).finish(),
        }
    }
}

/// The state of one key, for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyState {
    /// Live leases on the key.
    pub key_leases: u32,
    /// Live leases in the namespace.
    pub global_leases: u32,
    /// End of the penalty, if one is running.
    pub penalty_until: Option<SystemTime>,
    /// The last acquisition on the key.
    pub last_acquired: Option<SystemTime>,
    /// Callers of [`Throttle::acquire_wait`](crate::Throttle::acquire_wait) queued on
    /// the key (live entries: an abandoned one counts until its entry expires).
    pub waiting: u32,
    /// The backend's time when read.
    pub now: SystemTime,
}

impl KeyState {
    /// A key state with no waiter (see [`KeyState::with_waiting`]).
    pub fn new(
        key_leases: u32,
        global_leases: u32,
        penalty_until: Option<SystemTime>,
        last_acquired: Option<SystemTime>,
        now: SystemTime,
    ) -> Self {
        KeyState {
            key_leases,
            global_leases,
            penalty_until,
            last_acquired,
            waiting: 0,
            now,
        }
    }

    /// The same state with `n` queued waiters.
    pub fn with_waiting(mut self, n: u32) -> Self {
        self.waiting = n;
        self
    }
}

/// A caller of [`Throttle::acquire_wait`](crate::Throttle::acquire_wait) in a key's
/// queue: its ticket and how long its entry lives unless the caller checks again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Waiter {
    /// A random id, chosen by the caller; the queue orders by arrival (backend time).
    pub ticket: u64,
    /// How long the queue entry lives after this call: a waiter that stops checking
    /// (a crashed process) leaves the queue after it.
    pub entry_ttl: Duration,
}

impl Waiter {
    /// A waiter.
    pub fn new(ticket: u64, entry_ttl: Duration) -> Self {
        Waiter { ticket, entry_ttl }
    }
}

/// A rate for [`RateLimiter`](crate::RateLimiter): GCRA with `burst` requests at once and
/// one more every `period / count`.
///
/// # Behavior
///
/// - Built with named steps: [`Rate::per_second`], [`Rate::per_minute`],
///   [`Rate::per_hour`] or [`Rate::per`], then optionally
///   [`burst`](RateBuilder::burst) (default: the count of one period), then
///   [`build`](RateBuilder::build).
/// - A zero count, a zero period or a zero burst is [`Error::InvalidInput`]; so is an
///   emission interval (`period / count`) under 1 µs or over one day, and a burst that
///   takes longer than [`MAX_RATE_WINDOW`] (200 years) to refill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Rate {
    /// The time between two requests at the sustained rate (GCRA's emission interval).
    pub emission: Duration,
    /// How many requests may pass at once.
    pub burst: u32,
}

/// Builds a [`Rate`]: `Rate::per_second(10).burst(3).build()`; see its `# Behavior`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a rate builder does nothing until `build`"]
pub struct RateBuilder {
    count: u32,
    period: Duration,
    burst: Option<u32>,
}

impl RateBuilder {
    /// How many requests may pass at once (default: the count of one period).
    pub fn burst(mut self, n: u32) -> Self {
        self.burst = Some(n);
        self
    }

    /// The checked rate.
    pub fn build(self) -> Result<Rate, Error> {
        let burst = self.burst.unwrap_or(self.count);
        if self.count == 0 || self.period.is_zero() || burst == 0 {
            return Err(Error::invalid_input("a rate needs a positive count, period and burst"));
        }
        let emission = self.period / self.count;
        if emission < Duration::from_micros(1) || emission > MAX_LEASE {
            return Err(Error::invalid_input(
                "a rate's interval (period / count) must be between 1 µs and one day",
            ));
        }
        if emission.checked_mul(burst).is_none_or(|w| w > MAX_RATE_WINDOW) {
            return Err(Error::invalid_input(
                "a rate's burst must refill within 200 years (interval × burst)",
            ));
        }
        Ok(Rate { emission, burst })
    }
}

impl Rate {
    /// `count` requests per `period`.
    pub fn per(count: u32, period: Duration) -> RateBuilder {
        RateBuilder {
            count,
            period,
            burst: None,
        }
    }

    /// `count` requests per second.
    pub fn per_second(count: u32) -> RateBuilder {
        Rate::per(count, Duration::from_secs(1))
    }

    /// `count` requests per minute.
    pub fn per_minute(count: u32) -> RateBuilder {
        Rate::per(count, Duration::from_secs(60))
    }

    /// `count` requests per hour.
    pub fn per_hour(count: u32) -> RateBuilder {
        Rate::per(count, Duration::from_secs(3600))
    }

    /// This rate for one node of a degraded fleet: `share` of the sustained rate and of
    /// the burst (rounded down; a burst of 0 admits nothing).
    pub fn scaled(&self, share: f64) -> Rate {
        let share = if share.is_nan() { 0.0 } else { share.clamp(0.0, 1.0) };
        let burst = (f64::from(self.burst) * share).floor() as u32;
        // Bounded like a rate of `new`: the interval at most one day, the burst window
        // at most 200 years.
        let emission = div_share(self.emission, share).map_or(MAX_LEASE, |d| d.min(MAX_LEASE));
        let most = u32::try_from(MAX_RATE_WINDOW.as_micros() / emission.as_micros().max(1)).unwrap_or(u32::MAX);
        Rate {
            emission,
            burst: burst.min(most),
        }
    }
}

/// A rate-limit decision: allowed or limited, nothing else (a `match` needs no
/// wildcard), each with what an HTTP `RateLimit` header needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// Let through; `remaining` more would pass right now.
    Allowed {
        /// Requests (of cost 1) that would pass right now after this one.
        remaining: u32,
        /// The burst: how many pass at once from a full allowance.
        limit: u32,
        /// When the allowance is full again if nothing more is asked.
        reset_after: Duration,
    },
    /// Refused.
    Limited {
        /// When the request (at its cost) could pass.
        retry_after: Duration,
        /// The burst: how many pass at once from a full allowance.
        limit: u32,
        /// When the allowance is full again if nothing more is asked.
        reset_after: Duration,
    },
}

impl RateDecision {
    /// Whether the request passes.
    pub fn is_allowed(&self) -> bool {
        matches!(self, RateDecision::Allowed { .. })
    }

    /// Requests that would pass right now (0 when limited).
    pub fn remaining(&self) -> u32 {
        match self {
            RateDecision::Allowed { remaining, .. } => *remaining,
            RateDecision::Limited { .. } => 0,
        }
    }

    /// The burst of the rate the decision was made at.
    pub fn limit(&self) -> u32 {
        match self {
            RateDecision::Allowed { limit, .. } | RateDecision::Limited { limit, .. } => *limit,
        }
    }

    /// When the allowance is full again if nothing more is asked.
    pub fn reset_after(&self) -> Duration {
        match self {
            RateDecision::Allowed { reset_after, .. } | RateDecision::Limited { reset_after, .. } => *reset_after,
        }
    }

    /// When the request could pass (zero when allowed).
    pub fn retry_after(&self) -> Duration {
        match self {
            RateDecision::Allowed { .. } => Duration::ZERO,
            RateDecision::Limited { retry_after, .. } => *retry_after,
        }
    }
}

/// One throttle namespace: its keys share one Redis Cluster hash slot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    ns: Namespace,
}

impl Scope {
    /// The scope of `ns`.
    pub fn new(ns: Namespace) -> Self {
        Scope { ns }
    }

    /// The namespace.
    pub fn ns(&self) -> &Namespace {
        &self.ns
    }

    /// Global leases: a sorted set of lease id → expiry (µs).
    pub fn global_key(&self) -> Result<String, Error> {
        self.ns.slot_key(Contract::Throttle, "g", None)
    }

    /// The namespace's liveness marker: present while any of its leases could be live.
    pub fn up_key(&self) -> Result<String, Error> {
        self.ns.slot_key(Contract::Throttle, "up", None)
    }

    /// The fencing-token counter.
    pub fn seq_key(&self) -> Result<String, Error> {
        self.ns.slot_key(Contract::Throttle, "seq", None)
    }

    /// Leases of `key`: a sorted set of lease id → expiry (µs).
    pub fn leases_key(&self, key: &str) -> Result<String, Error> {
        self.ns.slot_key(Contract::Throttle, "k", Some(key))
    }

    /// State of `key`: a hash of `last` (last acquisition, µs) and `pen` (penalty end).
    pub fn state_key(&self, key: &str) -> Result<String, Error> {
        self.ns.slot_key(Contract::Throttle, "s", Some(key))
    }

    /// The queue of waiters on `key`: a sorted set of ticket → arrival (µs).
    pub fn queue_key(&self, key: &str) -> Result<String, Error> {
        self.ns.slot_key(Contract::Throttle, "q", Some(key))
    }

    /// The leases a release handed to waiters of `key` (see the contract's "Handoff"):
    /// a sorted set of ticket → the end of that waiter's entry life (µs), when a lease
    /// it never took goes back.
    pub fn handed_key(&self, key: &str) -> Result<String, Error> {
        self.ns.slot_key(Contract::Throttle, "h", Some(key))
    }

    /// Every live queue entry of the namespace: a sorted set of ticket → entry expiry
    /// (µs). An entry missing here is abandoned, whatever queue still lists it.
    pub fn waiters_key(&self) -> Result<String, Error> {
        self.ns.slot_key(Contract::Throttle, "qe", None)
    }

    /// The waiters the global cap holds back: a sorted set of ticket → arrival (µs).
    pub fn global_queue_key(&self) -> Result<String, Error> {
        self.ns.slot_key(Contract::Throttle, "gq", None)
    }

    /// Where a waiter's wake-up is pushed: `wake_prefix` followed by its ticket.
    pub fn wake_prefix(&self) -> Result<String, Error> {
        let mut p = self.ns.slot_key(Contract::Throttle, "w", None)?;
        p.push(':');
        Ok(p)
    }

    /// The GCRA theoretical arrival time of `key` (µs). A rate key is alone in its
    /// script, so it has no hash tag: the keys of one rate-limit namespace spread over a
    /// cluster's masters.
    pub fn rate_key(&self, key: &str) -> Result<String, Error> {
        self.ns.key(Contract::RateLimit, key)
    }

    /// What every [rate key](Scope::rate_key) of this scope starts with: two scopes
    /// with the same head share their rate keys.
    pub fn rate_head(&self) -> &str {
        self.ns.head(Contract::RateLimit)
    }

    /// Checks `key` as [`Scope::rate_key`] does, without building the rate key.
    pub fn check_rate_key(&self, key: &str) -> Result<(), Error> {
        self.ns.key_len(Contract::RateLimit, key).map(drop)
    }
}

palisade_cache_core::contract! {
/// What a throttle backend implements: [`Backend`](palisade_cache_core::Backend) and [`Run`](palisade_cache_core::Run) for every operation of
/// [`op`](crate::op).
///
/// # Behavior
///
/// - [`Acquire`](crate::op::Acquire) checks, in one atomic step: penalty, minimum
///   interval since the last acquisition of the key, global cap, key cap — after
///   reclaiming expired leases — and on success takes a lease in the global and the key
///   accounting and records the acquisition time. Refusals name the first failing gate
///   and the earliest moment every gate could pass. Time is the backend's (the Redis
///   server's `TIME`, µs). It also answers the expired leases it reclaimed.
/// - [`Penalize`](crate::op::Penalize) blocks the key until `now + d`, or keeps a
///   longer running penalty.
/// - [`ClearPenalty`](crate::op::ClearPenalty) ends a penalty and says whether one was
///   running.
/// - [`Inspect`](crate::op::Inspect) reports the key's live leases, the namespace's,
///   the penalty and the last acquisition.
/// - [`Limit`](crate::op::Limit) is one GCRA step for the key at a cost of `cost`
///   requests: allowed when `cost` requests fit the allowance, which they then consume
///   (unless `consume` is false: a peek); refused otherwise, consuming nothing. Every
///   decision carries the burst, the requests of cost 1 still passing and when the
///   allowance is full again.
/// - [`ResetRate`](crate::op::ResetRate) forgets the key's GCRA state (a full allowance
///   again) and says whether there was any.
/// - **Waiting.** An [`Acquire`](crate::op::Acquire) with a [`Waiter`] is served in
///   arrival order on its key: it passes the key cap only when the live waiters that
///   arrived before it leave room (`key leases + waiters ahead < key cap`); an
///   acquisition without one counts every live waiter as ahead, so a newcomer never
///   overtakes a queue. Refused, the waiter is queued (its arrival kept across calls,
///   its entry's life renewed by each call; held back by the global cap, it also joins
///   the namespace's global queue); granted, it leaves every queue.
/// - **Handoff.** A release of a live lease hands its slot to the first live waiter
///   of the key when every gate of that waiter's own policy admits it then: the lease
///   is granted to the waiter in the release's atomic step (a fresh fencing token, its
///   policy's lease TTL), the waiter leaves every queue, and its
///   [`Wake`](crate::op::Wake) returns [`Woken::Granted`] — no second acquisition.
///   A waiter that asks again with an [`Acquire`](crate::op::Acquire) before taking it
///   is answered with that same lease.
/// - A release that hands nothing off (a gate refuses the head, or nobody waits on the
///   key) wakes the first live waiter of the key and of the global queue; a grant that
///   leaves room wakes the next waiter of the key; a
///   [`Dequeue`](crate::op::Dequeue) removes the entry and wakes the next.
///   [`Wake`](crate::op::Wake) returns [`Woken::Woken`] at a wake-up pushed for its
///   ticket (one pushed before it was called included), [`Woken::TimedOut`] after
///   `within`.
/// - A waiter's entry lives for its [`Waiter::entry_ttl`] from its last call: a waiter
///   that stopped asking (a crashed process) holds no place after that, and a lease
///   handed to it that it never took goes back then (at the next acquisition on its
///   key).
/// - A [`Dequeue`](crate::op::Dequeue) of a ticket granted a lease within its entry's
///   life (its caller went away while the answer was on its way, or before it took a
///   handed lease) gives that lease back and returns `true`.
/// - Every stored item expires (bounded memory).
pub trait ThrottleBackend: op::Acquire, op::Penalize, op::ClearPenalty, op::Inspect, op::Limit, op::ResetRate, op::Wake, op::Dequeue;
}

/// A granted lease. Release it when done; a permit dropped without release is
/// released in the background (when a tokio runtime is there) and is reclaimed at its
/// expiry in any case.
///
/// # Behavior
///
/// - [`Permit::release`] consumes the permit, so it runs once: it releases on the
///   backend that granted the permit (also after a degraded ↔ distributed swap) and
///   returns the backend's time of release (`None` if the lease had already expired).
///   A permit is released exactly once, by `release` or by its drop.
/// - [`Permit::extend`] makes the lease live at least `d` more; `None` if it is gone.
///   `d` outside 1 ms to one day ([`MAX_LEASE`]) is [`Error::InvalidInput`] before any
///   I/O, on every backend: a crashed holder blocks its slot at most a day after its
///   last extension.
pub struct Permit {
    lease: Lease,
    ops: Arc<dyn LeaseOps>,
    released: AtomicBool,
    on_done: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("lease", &self.lease)
            .field("released", &self.released.load(Ordering::Relaxed))
            .finish()
    }
}

impl Permit {
    /// A permit for `lease`, released through `ops`; `on_done` runs once when it is
    /// released or dropped (stats). Made by [`Throttle::acquire`](crate::Throttle::acquire).
    pub(crate) fn new(lease: Lease, ops: Arc<dyn LeaseOps>, on_done: Option<Arc<dyn Fn() + Send + Sync>>) -> Self {
        Permit {
            lease,
            ops,
            released: AtomicBool::new(false),
            on_done,
        }
    }

    /// The fencing token.
    pub fn lease_id(&self) -> u64 {
        self.lease.id
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.lease.key
    }

    /// When the lease was granted (backend time).
    pub fn acquired_at(&self) -> SystemTime {
        self.lease.acquired_at
    }

    /// When the lease expires unless released or extended (backend time).
    pub fn expires_at(&self) -> SystemTime {
        self.lease.expires_at
    }

    /// The lease.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// How long the lease still lives unless released or extended, by this machine's
    /// clock against the backend's expiry (zero once it has passed).
    pub fn expires_in(&self) -> Duration {
        self.lease
            .expires_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    }

    fn mark_released(&self) -> bool {
        let first = !self.released.swap(true, Ordering::AcqRel);
        if first {
            if let Some(f) = &self.on_done {
                f();
            }
        }
        first
    }

    /// Releases the lease (see the type's `# Behavior`).
    pub async fn release(self) -> Result<Option<SystemTime>, Error> {
        if !self.mark_released() {
            return Ok(None);
        }
        // Marked released: the drop at the end of this call releases nothing.
        self.ops.release(&self.lease.key, self.lease.id).await
    }

    /// Extends the lease (see the type's `# Behavior`).
    pub async fn extend(&mut self, d: Duration) -> Result<Option<SystemTime>, Error> {
        palisade_cache_core::limits::check_duration("a lease extension", d, MIN_DURATION, MAX_LEASE)?;
        if self.released.load(Ordering::Acquire) {
            return Ok(None);
        }
        let new = self.ops.extend(&self.lease.key, self.lease.id, d).await?;
        if let Some(t) = new {
            self.lease.expires_at = t;
        }
        Ok(new)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.mark_released() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let ops = Arc::clone(&self.ops);
            let (key, id) = (self.lease.key.clone(), self.lease.id);
            rt.spawn(async move {
                if let Err(e) = ops.release(&key, id).await {
                    tracing::debug!(target: palisade_cache_core::EVENT_TARGET, error = %e.chain(), "background release failed; the lease expires");
                }
            });
        }
    }
}
