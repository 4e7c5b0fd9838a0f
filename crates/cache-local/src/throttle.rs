//! The throttle and rate limiter in memory.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use palisade_cache_core::{Backend, BoxFuture, Error, Fallback, Provenance, Run, SharedClock, SystemClock, Tagged};
use palisade_throttle::op;
use palisade_throttle::{
    DenyReason, KeyState, Lease, LeaseOps, MAX_LEASE, MAX_PENALTY, MIN_DURATION, RateDecision, RawDecision,
    ScaledPolicy, Scope, Woken,
};

use hashbrown::hash_table::{self, HashTable};

use crate::sweep::Swept;

/// How long a key's state outlives its last relevance (penalty, interval, leases).
pub(crate) const IDLE: u64 = 600_000_000;

#[derive(Default)]
struct KeySt {
    leases: BTreeMap<u64, u64>,
    last: Option<u64>,
    pen: u64,
    keep_until: u64,
    /// Waiters in arrival order: (arrival µs, ticket).
    queue: BTreeSet<(u64, u64)>,
}

/// A waiter's queue entry.
struct Queued {
    key: String,
    arrival: u64,
    expires: u64,
    /// The waiter's own policy, for a release that hands it a slot.
    policy: ScaledPolicy,
}

#[derive(Default)]
struct NsState {
    seq: u64,
    /// lease id → (expiry µs, key)
    global: BTreeMap<u64, (u64, String)>,
    keys: HashMap<String, KeySt>,
    /// ticket → its queue entry
    waiters: HashMap<u64, Queued>,
    /// Waiters the global cap holds back, in arrival order: (arrival µs, ticket).
    global_queue: BTreeSet<(u64, u64)>,
    /// Tickets woken whose [`op::Wake`] has not taken the wake-up yet.
    woken: HashSet<u64>,
    /// ticket → (key, lease) of a waiter's grant, for a [`op::Dequeue`] that comes
    /// after it (the caller went away while the answer was on its way).
    granted: HashMap<u64, (String, u64)>,
    /// The same grants in grant order with their end (µs): they end in that order.
    granted_until: VecDeque<(u64, u64)>,
    /// Leases a release handed to a waiter that has not taken them yet, by ticket.
    handed: HashMap<u64, Lease>,
}

impl NsState {
    /// What a sweep visits: leases, keys, waiters and grants.
    fn entries(&self) -> usize {
        self.global.len() + self.keys.len() + self.waiters.len() + self.granted.len()
    }

    /// Takes `ticket` out of every queue; whether it was queued.
    fn remove_waiter(&mut self, ticket: u64) -> bool {
        self.woken.remove(&ticket);
        let Some(w) = self.waiters.remove(&ticket) else {
            return false;
        };
        if let Some(k) = self.keys.get_mut(&w.key) {
            k.queue.remove(&(w.arrival, ticket));
        }
        self.global_queue.remove(&(w.arrival, ticket));
        true
    }

    /// Forgets the grants whose caller can no longer come back for them, and gives back
    /// the handed leases among them that were never taken.
    fn expire_grants(&mut self, now: u64) {
        while let Some(&(until, ticket)) = self.granted_until.front() {
            if until > now {
                break;
            }
            self.granted_until.pop_front();
            self.granted.remove(&ticket);
            // A lease handed to a waiter that never took it (its process died) goes
            // back once the waiter's entry life is over.
            if let Some(lease) = self.handed.remove(&ticket) {
                self.woken.remove(&ticket);
                self.global.remove(&lease.id);
                if let Some(k) = self.keys.get_mut(&lease.key) {
                    k.leases.remove(&lease.id);
                }
            }
        }
    }

    /// Drops the entries of waiters that stopped checking.
    fn expire_waiters(&mut self, now: u64) {
        self.expire_grants(now);
        let gone: Vec<u64> = self
            .waiters
            .iter()
            .filter(|(_, w)| w.expires <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in gone {
            self.remove_waiter(t);
        }
    }

    /// The first gate that refuses `policy` on `key` now, with the moment every gate
    /// could pass (a cap of 0 never does: a lease TTL from now); `ahead`: the live
    /// waiters owed the key's slots first. Counts only live leases.
    fn refusal(&self, key: &str, policy: &ScaledPolicy, ahead: usize, now: u64) -> Option<(usize, u64)> {
        let interval = us(policy.min_interval);
        let k = self.keys.get(key);
        let mut global: Vec<u64> = self.global.values().map(|(e, _)| *e).filter(|e| *e > now).collect();
        let mut own: Vec<u64> = k.map_or_else(Vec::new, |k| k.leases.values().copied().filter(|e| *e > now).collect());
        let key_cap = policy.key_cap.saturating_sub(u32::try_from(ahead).unwrap_or(u32::MAX));
        let (pen, last) = k.map_or((0, None), |k| (k.pen, k.last));
        let free = [
            Some(pen.max(now)),
            Some(last.map_or(now, |l| l.saturating_add(interval).max(now))),
            cap_free(&mut global, policy.global_cap, now),
            cap_free(&mut own, key_cap, now),
        ];
        let gate = free.iter().position(|f| f.is_none_or(|t| t > now))?;
        let never = now.saturating_add(us(policy.lease_ttl));
        Some((gate, free.iter().map(|f| f.unwrap_or(never)).max().unwrap_or(now)))
    }

    /// Takes a lease on `key` under `policy`: the next fencing number, the lease in both
    /// accountings, the acquisition time. Returns the lease's id and end.
    fn grant(&mut self, key: &str, policy: &ScaledPolicy, now: u64) -> (u64, u64) {
        let id = (self.seq + 1).max(now);
        self.seq = id;
        let exp = now.saturating_add(us(policy.lease_ttl));
        let k = self.keys.entry(key.to_owned()).or_default();
        k.leases.insert(id, exp);
        k.last = Some(now);
        refresh_keep(k, us(policy.min_interval));
        self.global.insert(id, (exp, key.to_owned()));
        (id, exp)
    }

    /// A waiter's grant: it leaves every queue, and the grant is kept until `until` for
    /// a [`op::Dequeue`] that comes after it.
    fn granted_to(&mut self, ticket: u64, key: &str, id: u64, until: u64) {
        self.remove_waiter(ticket);
        self.granted.insert(ticket, (key.to_owned(), id));
        self.granted_until.push_back((until, ticket));
    }

    /// Hands a slot just freed on `key` to its first live waiter when every gate of
    /// that waiter's policy admits it; whether it did.
    fn hand_off(&mut self, key: &str, now: u64) -> bool {
        self.expire_waiters(now);
        let Some(&(_, ticket)) = self.keys.get(key).and_then(|k| k.queue.first()) else {
            return false;
        };
        let Some((policy, until)) = self.waiters.get(&ticket).map(|w| (w.policy, w.expires)) else {
            return false;
        };
        if self.refusal(key, &policy, 0, now).is_some() {
            return false;
        }
        let (id, exp) = self.grant(key, &policy, now);
        self.granted_to(ticket, key, id, until);
        self.handed
            .insert(ticket, Lease::new(id, key.to_owned(), time(now), time(exp)));
        self.woken.insert(ticket);
        true
    }

    /// Wakes the first waiter of `key` and of the global queue; whether any was woken.
    fn wake_heads(&mut self, key: &str) -> bool {
        let heads = [
            self.keys.get(key).and_then(|k| k.queue.first()).map(|(_, t)| *t),
            self.global_queue.first().map(|(_, t)| *t),
        ];
        let mut any = false;
        for t in heads.into_iter().flatten() {
            any |= self.woken.insert(t);
        }
        any
    }
}

#[derive(Default)]
struct State {
    namespaces: HashMap<String, NsState>,
    rates: Rates,
}

/// One rate key's GCRA state: its theoretical arrival time (µs).
struct RateSt {
    /// The hash of (scope, key), kept so that growing the table rehashes nothing.
    hash: u64,
    scope: Arc<Scope>,
    key: Box<str>,
    tat: u64,
}

impl RateSt {
    /// Whether this is the state of `key` in `scope`: the same rate key (scopes with
    /// the same head share their keys, as on Redis).
    fn is(&self, scope: &Arc<Scope>, key: &str) -> bool {
        *self.key == *key && (Arc::ptr_eq(&self.scope, scope) || self.scope.rate_head() == scope.rate_head())
    }
}

/// The rate keys, found by scope and user key: a decision on a known key builds no
/// encoded key and allocates nothing. Hashed with std's keyed SipHash, as a `HashMap`
/// is: rate keys are often client-controlled (an IP, a user id), and the table must
/// resist hash flooding.
#[derive(Default)]
struct Rates {
    hasher: RandomState,
    table: HashTable<RateSt>,
}

impl Rates {
    fn hash(&self, scope: &Scope, key: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(scope.rate_head().as_bytes());
        // A byte no UTF-8 text holds: the head and the key cannot trade bytes.
        h.write_u8(0xff);
        h.write(key.as_bytes());
        h.finish()
    }

    /// The entry of `key` in `scope`, and its hash (a new entry's `hash`).
    fn entry(&mut self, scope: &Arc<Scope>, key: &str) -> (u64, hash_table::Entry<'_, RateSt>) {
        let hash = self.hash(scope, key);
        (hash, self.table.entry(hash, |e| e.is(scope, key), |e| e.hash))
    }
}

struct Inner {
    state: Mutex<Swept<State>>,
    /// Told at every wake-up; each waiting [`op::Wake`] then looks for its ticket.
    wakeups: tokio::sync::Notify,
    clock: SharedClock,
    /// The monotonic instant and the wall time (µs since the epoch) read together at
    /// construction: decisions run on monotonic time expressed on that wall-time scale.
    epoch: Instant,
    epoch_us: u64,
}

/// The in-memory throttle and rate limiter. Cheap to clone; clones share the state.
///
/// # Behavior
///
/// Implements every sentence of [`ThrottleBackend`](palisade_throttle::ThrottleBackend)'s `# Behavior` with the same
/// algorithm as the Redis scripts; answers are tagged [`Provenance::Local`]. Time is the
/// clock's monotonic time, expressed as wall time read once at construction: a step of
/// the wall clock (NTP, an operator) neither frees held slots nor refills rates, and the
/// times it reports may drift from the wall clock by the clock's slew since then.
#[derive(Clone)]
pub struct LocalThrottle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LocalThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalThrottle").finish_non_exhaustive()
    }
}

impl Default for LocalThrottle {
    fn default() -> Self {
        LocalThrottle::new(SystemClock::shared())
    }
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn time(us: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(us)
}

fn tag<T>(v: T) -> Tagged<T> {
    Tagged::new(v, Provenance::Local)
}

/// When a cap has room: now if fewer than `cap` leases live, else the expiry that frees
/// a slot; a cap of 0 never has room (`None`).
fn cap_free(expiries: &mut [u64], cap: u32, now: u64) -> Option<u64> {
    let cap = cap as usize;
    if expiries.len() < cap {
        return Some(now);
    }
    if cap == 0 {
        return None;
    }
    expiries.sort_unstable();
    Some(expiries[expiries.len() - cap])
}

impl LocalThrottle {
    /// A throttle whose time is `clock`'s.
    pub fn new(clock: SharedClock) -> Self {
        let epoch = clock.now();
        let epoch_us = us(clock.system_time().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO));
        LocalThrottle {
            inner: Arc::new(Inner {
                state: Mutex::new(Swept::new(State::default())),
                wakeups: tokio::sync::Notify::new(),
                clock,
                epoch,
                epoch_us,
            }),
        }
    }

    /// Now, in µs: monotonic time since construction on the wall-time scale, so that a
    /// step of the wall clock neither frees a held slot nor refills a rate.
    fn now(&self) -> u64 {
        let elapsed = self.inner.clock.now().saturating_duration_since(self.inner.epoch);
        self.inner.epoch_us.saturating_add(us(elapsed))
    }

    /// Locks the state; this operation may also sweep expired state (see [`Swept`]).
    fn lock(&self) -> MutexGuard<'_, Swept<State>> {
        let mut state = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.due() {
            let now = self.now();
            Self::sweep(&mut state, now);
            let remaining = state.rates.table.len() + state.namespaces.values().map(NsState::entries).sum::<usize>();
            state.swept(remaining);
        }
        state
    }

    fn sweep(state: &mut State, now: u64) {
        state.rates.table.retain(|e| e.tat > now);
        for ns in state.namespaces.values_mut() {
            ns.global.retain(|_, (exp, _)| *exp > now);
            ns.expire_waiters(now);
            let waiters = &ns.waiters;
            ns.woken.retain(|t| waiters.contains_key(t));
            ns.keys.retain(|_, k| {
                k.leases.retain(|_, exp| *exp > now);
                !k.leases.is_empty() || !k.queue.is_empty() || k.keep_until > now
            });
        }
        state.namespaces.retain(|_, ns| {
            !ns.keys.is_empty() || !ns.global.is_empty() || !ns.waiters.is_empty() || !ns.granted.is_empty()
        });
    }

    /// The number of keys and rate keys held (for tests of bounded memory).
    pub fn held_keys(&self) -> usize {
        let s = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        s.rates.table.len() + s.namespaces.values().map(|ns| ns.keys.len()).sum::<usize>()
    }

    fn ops_for(&self, scope: &Scope) -> Result<Arc<dyn LeaseOps>, Error> {
        Ok(Arc::new(LocalLeases {
            throttle: self.clone(),
            ns: scope.global_key()?,
        }))
    }
}

fn refresh_keep(k: &mut KeySt, interval: u64) {
    let last_relevant = k.last.map_or(0, |l| l.saturating_add(interval));
    let lease = k.leases.values().copied().max().unwrap_or(0);
    k.keep_until = k.pen.max(last_relevant).max(lease).saturating_add(IDLE);
}

struct LocalLeases {
    throttle: LocalThrottle,
    ns: String,
}

impl LeaseOps for LocalLeases {
    fn release(&self, key: &str, lease: u64) -> BoxFuture<'_, Result<Option<SystemTime>, Error>> {
        let now = self.throttle.now();
        let mut state = self.throttle.lock();
        let mut released = None;
        let mut woke = false;
        if let Some(ns) = state.namespaces.get_mut(&self.ns) {
            ns.global.remove(&lease);
            if let Some(k) = ns.keys.get_mut(key) {
                if k.leases.remove(&lease).is_some_and(|exp| exp > now) {
                    released = Some(time(now));
                    woke = ns.hand_off(key, now) || ns.wake_heads(key);
                }
            }
        }
        drop(state);
        if woke {
            self.throttle.inner.wakeups.notify_waiters();
        }
        Box::pin(std::future::ready(Ok(released)))
    }

    fn extend(&self, key: &str, lease: u64, by: Duration) -> BoxFuture<'_, Result<Option<SystemTime>, Error>> {
        if let Err(e) = palisade_cache_core::limits::check_duration("a lease extension", by, MIN_DURATION, MAX_LEASE) {
            return Box::pin(std::future::ready(Err(e)));
        }
        let now = self.throttle.now();
        let mut state = self.throttle.lock();
        let mut extended = None;
        if let Some(ns) = state.namespaces.get_mut(&self.ns) {
            if let Some(k) = ns.keys.get_mut(key) {
                if let Some(exp) = k.leases.get_mut(&lease).filter(|e| **e > now) {
                    *exp = (*exp).max(now.saturating_add(us(by)));
                    let new = *exp;
                    if let Some(g) = ns.global.get_mut(&lease) {
                        g.0 = new;
                    }
                    k.keep_until = k.keep_until.max(new.saturating_add(IDLE));
                    extended = Some(time(new));
                }
            }
        }
        Box::pin(std::future::ready(Ok(extended)))
    }
}

/// As the fallback of degraded mode, the local throttle hands nothing over: its
/// permits stay bound to it and end by release or expiry (capped by
/// `degraded_lease_cap`).
impl<P: Backend> Fallback<P> for LocalThrottle {}

impl Run<op::Acquire> for LocalThrottle {
    async fn run(&self, op: &op::Acquire) -> Result<Tagged<(RawDecision, u64)>, Error> {
        let (scope, key, policy) = (&*op.scope, op.key.as_str(), &op.policy);
        policy.validate()?;
        let ops = self.ops_for(scope)?;
        let now = self.now();
        let mut state = self.lock();
        let ns = state.namespaces.entry(scope.global_key()?).or_default();
        let before = ns.global.len();
        ns.global.retain(|_, (exp, _)| *exp > now);
        let reclaimed = (before - ns.global.len()) as u64;
        ns.expire_waiters(now);
        // A release handed this waiter a lease while it asked again: that is its answer.
        if let Some((ticket, lease)) = op.waiter.and_then(|w| Some((w.ticket, ns.handed.remove(&w.ticket)?))) {
            ns.woken.remove(&ticket);
            let live = ns
                .keys
                .get(key)
                .and_then(|k| k.leases.get(&lease.id))
                .is_some_and(|exp| *exp > now);
            if live {
                return Ok(tag((RawDecision::Acquired(lease, ops), reclaimed)));
            }
        }
        let me = op
            .waiter
            .and_then(|w| ns.waiters.get(&w.ticket).map(|q| (q.arrival, w.ticket)));
        let k = ns.keys.entry(key.to_owned()).or_default();
        k.leases.retain(|_, exp| *exp > now);
        // The live waiters that arrived first are owed the key's free slots.
        let ahead = match me {
            Some(me) => k.queue.range(..me).count(),
            None => k.queue.len(),
        };
        if let Some((gate, until)) = ns.refusal(key, policy, ahead, now) {
            let reason = DenyReason::ALL[gate];
            if let Some(w) = op.waiter {
                // A first arrival takes the next fencing number: arrivals are strictly
                // ordered, also within one microsecond (or a manual clock's instant).
                let arrival = match me {
                    Some((a, _)) => a,
                    None => {
                        ns.seq = (ns.seq + 1).max(now);
                        ns.seq
                    }
                };
                ns.keys
                    .entry(key.to_owned())
                    .or_default()
                    .queue
                    .insert((arrival, w.ticket));
                if reason == DenyReason::GlobalCap {
                    ns.global_queue.insert((arrival, w.ticket));
                }
                ns.waiters.insert(
                    w.ticket,
                    Queued {
                        key: key.to_owned(),
                        arrival,
                        expires: now.saturating_add(us(w.entry_ttl)),
                        policy: *policy,
                    },
                );
            }
            return Ok(tag((
                RawDecision::Denied {
                    reason,
                    retry_after: Duration::from_micros(until - now),
                },
                reclaimed,
            )));
        }
        let (id, exp) = ns.grant(key, policy, now);
        let room = ns
            .keys
            .get(key)
            .is_some_and(|k| k.leases.len() < policy.key_cap as usize);
        let mut woke = false;
        if let Some(w) = op.waiter {
            ns.granted_to(w.ticket, key, id, now.saturating_add(us(w.entry_ttl)));
            // Room left for the next waiter of the key: it need not wait for a release.
            if room {
                if let Some((_, next)) = ns.keys.get(key).and_then(|k| k.queue.first()) {
                    woke = ns.woken.insert(*next);
                }
            }
        }
        drop(state);
        if woke {
            self.inner.wakeups.notify_waiters();
        }
        let lease = Lease::new(id, key.to_owned(), time(now), time(exp));
        Ok(tag((RawDecision::Acquired(lease, ops), reclaimed)))
    }
}

impl Run<op::Penalize> for LocalThrottle {
    async fn run(&self, op: &op::Penalize) -> Result<Tagged<SystemTime>, Error> {
        let (scope, key, d) = (&*op.scope, op.key.as_str(), op.duration);
        palisade_cache_core::limits::check_duration("a penalty", d, MIN_DURATION, MAX_PENALTY)?;
        let now = self.now();
        let mut state = self.lock();
        let k = state
            .namespaces
            .entry(scope.global_key()?)
            .or_default()
            .keys
            .entry(key.to_owned())
            .or_default();
        k.pen = k.pen.max(now.saturating_add(us(d)));
        k.keep_until = k.keep_until.max(k.pen.saturating_add(IDLE));
        Ok(tag(time(k.pen)))
    }
}

impl Run<op::ClearPenalty> for LocalThrottle {
    async fn run(&self, op: &op::ClearPenalty) -> Result<Tagged<bool>, Error> {
        let (scope, key) = (&*op.scope, op.key.as_str());
        let now = self.now();
        let mut state = self.lock();
        let was = state
            .namespaces
            .get_mut(&scope.global_key()?)
            .and_then(|ns| ns.keys.get_mut(key))
            .is_some_and(|k| std::mem::take(&mut k.pen) > now);
        Ok(tag(was))
    }
}

impl Run<op::Inspect> for LocalThrottle {
    async fn run(&self, op: &op::Inspect) -> Result<Tagged<KeyState>, Error> {
        let (scope, key) = (&*op.scope, op.key.as_str());
        let now = self.now();
        let state = self.lock();
        let ns = state.namespaces.get(&scope.global_key()?);
        let k = ns.and_then(|ns| ns.keys.get(key));
        let waiting = match (ns, k) {
            (Some(ns), Some(k)) => k
                .queue
                .iter()
                .filter(|(_, t)| ns.waiters.get(t).is_some_and(|w| w.expires > now))
                .count() as u32,
            _ => 0,
        };
        Ok(tag(KeyState::new(
            k.map_or(0, |k| k.leases.values().filter(|e| **e > now).count() as u32),
            ns.map_or(0, |ns| ns.global.values().filter(|(e, _)| *e > now).count() as u32),
            k.map(|k| k.pen).filter(|p| *p > now).map(time),
            k.and_then(|k| k.last).map(time),
            time(now),
        )
        .with_waiting(waiting)))
    }
}

impl Run<op::Wake> for LocalThrottle {
    async fn run(&self, op: &op::Wake) -> Result<Tagged<Woken>, Error> {
        let ns_key = op.scope.global_key()?;
        // `within` is at most a day (the caller's bound): no overflow.
        let deadline = tokio::time::Instant::now() + op.within.min(MAX_LEASE);
        loop {
            // Registered before the look, so a wake-up between the two is not missed.
            let notified = self.inner.wakeups.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                // A ticket not queued here (queued on Redis before a swap) waits like
                // any other: its re-check comes within `within`.
                if let Some(ns) = state.namespaces.get_mut(&ns_key) {
                    if ns.woken.remove(&op.ticket) {
                        return Ok(tag(match ns.handed.remove(&op.ticket) {
                            Some(lease) => Woken::Granted(lease, self.ops_for(&op.scope)?),
                            None => Woken::Woken,
                        }));
                    }
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(tag(Woken::TimedOut));
            }
        }
    }
}

impl Run<op::Dequeue> for LocalThrottle {
    async fn run(&self, op: &op::Dequeue) -> Result<Tagged<bool>, Error> {
        let ns_key = op.scope.global_key()?;
        let mut state = self.lock();
        let Some(ns) = state.namespaces.get_mut(&ns_key) else {
            return Ok(tag(false));
        };
        ns.expire_grants(self.now());
        let mut was = ns.remove_waiter(op.ticket);
        ns.handed.remove(&op.ticket);
        if let Some((key, lease)) = ns.granted.remove(&op.ticket) {
            // The waiter went away after its grant: its lease goes back.
            ns.global.remove(&lease);
            if let Some(k) = ns.keys.get_mut(&key) {
                was |= k.leases.remove(&lease).is_some();
            }
        }
        let woke = was && ns.wake_heads(&op.key);
        drop(state);
        if woke {
            self.inner.wakeups.notify_waiters();
        }
        Ok(tag(was))
    }
}

impl Run<op::Limit> for LocalThrottle {
    async fn run(&self, op: &op::Limit) -> Result<Tagged<RateDecision>, Error> {
        let (scope, key, rate) = (&op.scope, op.key.as_str(), &op.rate);
        if op.cost == 0 {
            return Err(Error::invalid_input("a rate-limit cost is at least 1"));
        }
        let now = self.now();
        scope.check_rate_key(key)?;
        let emission = us(rate.emission).max(1);
        let mut state = self.lock();
        // One hash of the key: read and write through the same entry.
        let (hash, entry) = state.rates.entry(scope, key);
        let tat = match &entry {
            hash_table::Entry::Occupied(e) => e.get().tat.max(now),
            hash_table::Entry::Vacant(_) => now,
        };
        // Signed and wide, as the Redis script computes it in doubles: the allowance
        // point lies before the epoch for a large burst, and must not saturate at 0
        // (which made `remaining` smaller than Redis's for the same sequence).
        let e = i128::from(emission);
        let new_tat = i128::from(tat) + e * i128::from(op.cost);
        let allow_at = new_tat - e * i128::from(rate.burst);
        let now_wide = i128::from(now);
        let micros = |d: i128| Duration::from_micros(u64::try_from(d.max(0)).unwrap_or(u64::MAX));
        if now_wide < allow_at {
            return Ok(tag(RateDecision::Limited {
                retry_after: micros(allow_at - now_wide),
                limit: rate.burst,
                reset_after: micros(i128::from(tat) - now_wide),
            }));
        }
        if op.consume {
            let new_tat = u64::try_from(new_tat).unwrap_or(u64::MAX);
            match entry {
                hash_table::Entry::Occupied(mut e) => e.get_mut().tat = new_tat,
                hash_table::Entry::Vacant(e) => {
                    e.insert(RateSt {
                        hash,
                        scope: Arc::clone(scope),
                        key: key.into(),
                        tat: new_tat,
                    });
                }
            }
        }
        let remaining = u32::try_from((now_wide - allow_at) / e).unwrap_or(u32::MAX);
        Ok(tag(RateDecision::Allowed {
            remaining,
            limit: rate.burst,
            reset_after: micros(new_tat - now_wide),
        }))
    }
}

impl Run<op::ResetRate> for LocalThrottle {
    async fn run(&self, op: &op::ResetRate) -> Result<Tagged<bool>, Error> {
        op.scope.check_rate_key(&op.key)?;
        let now = self.now();
        // An arrival time in the past is a full allowance already: no state, as on
        // Redis, where that key has expired.
        let had = match self.lock().rates.entry(&op.scope, &op.key).1 {
            hash_table::Entry::Occupied(e) => e.remove().0.tat > now,
            hash_table::Entry::Vacant(_) => false,
        };
        Ok(tag(had))
    }
}
