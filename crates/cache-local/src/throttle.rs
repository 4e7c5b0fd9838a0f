//! The throttle and rate limiter in memory.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use palisade_cache_core::{Backend, BoxFuture, Error, Fallback, Provenance, Run, SharedClock, SystemClock, Tagged};
use palisade_throttle::op;
use palisade_throttle::{
    DenyReason, KeyState, Lease, LeaseOps, MAX_LEASE, MAX_PENALTY, MIN_DURATION, RateDecision, RawDecision, Scope,
};

use crate::sweep::Swept;

/// How long a key's state outlives its last relevance (penalty, interval, leases).
pub(crate) const IDLE: u64 = 600_000_000;

#[derive(Default)]
struct KeySt {
    leases: BTreeMap<u64, u64>,
    last: Option<u64>,
    pen: u64,
    keep_until: u64,
}

#[derive(Default)]
struct NsState {
    seq: u64,
    /// lease id → (expiry µs, key)
    global: BTreeMap<u64, (u64, String)>,
    keys: HashMap<String, KeySt>,
}

impl NsState {
    /// What a sweep visits: leases and keys.
    fn entries(&self) -> usize {
        self.global.len() + self.keys.len()
    }
}

#[derive(Default)]
struct State {
    namespaces: HashMap<String, NsState>,
    /// rate key → theoretical arrival time (µs)
    rates: HashMap<String, u64>,
}

struct Inner {
    state: Mutex<Swept<State>>,
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
            let remaining = state.rates.len() + state.namespaces.values().map(NsState::entries).sum::<usize>();
            state.swept(remaining);
        }
        state
    }

    fn sweep(state: &mut State, now: u64) {
        state.rates.retain(|_, tat| *tat > now);
        for ns in state.namespaces.values_mut() {
            ns.global.retain(|_, (exp, _)| *exp > now);
            ns.keys.retain(|_, k| {
                k.leases.retain(|_, exp| *exp > now);
                !k.leases.is_empty() || k.keep_until > now
            });
        }
        state
            .namespaces
            .retain(|_, ns| !ns.keys.is_empty() || !ns.global.is_empty());
    }

    /// The number of keys and rate keys held (for tests of bounded memory).
    pub fn held_keys(&self) -> usize {
        let s = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        s.rates.len() + s.namespaces.values().map(|ns| ns.keys.len()).sum::<usize>()
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
        if let Some(ns) = state.namespaces.get_mut(&self.ns) {
            ns.global.remove(&lease);
            if let Some(k) = ns.keys.get_mut(key) {
                if k.leases.remove(&lease).is_some_and(|exp| exp > now) {
                    released = Some(time(now));
                }
            }
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
        let interval = us(policy.min_interval);
        let mut state = self.lock();
        let ns = state.namespaces.entry(scope.global_key()?).or_default();
        let before = ns.global.len();
        ns.global.retain(|_, (exp, _)| *exp > now);
        let reclaimed = (before - ns.global.len()) as u64;
        let mut global: Vec<u64> = ns.global.values().map(|(e, _)| *e).collect();
        let k = ns.keys.entry(key.to_owned()).or_default();
        k.leases.retain(|_, exp| *exp > now);
        let mut own: Vec<u64> = k.leases.values().copied().collect();
        let never = now.saturating_add(us(policy.lease_ttl));
        let free = [
            Some(k.pen.max(now)),
            Some(k.last.map_or(now, |l| l.saturating_add(interval).max(now))),
            cap_free(&mut global, policy.global_cap, now),
            cap_free(&mut own, policy.key_cap, now),
        ];
        if let Some(gate) = free.iter().position(|f| f.is_none_or(|t| t > now)) {
            let until = free.iter().map(|f| f.unwrap_or(never)).max().unwrap_or(now);
            let reason = DenyReason::ALL[gate];
            return Ok(tag((
                RawDecision::Denied {
                    reason,
                    retry_after: Duration::from_micros(until - now),
                },
                reclaimed,
            )));
        }
        let id = (ns.seq + 1).max(now);
        ns.seq = id;
        let exp = now.saturating_add(us(policy.lease_ttl));
        let k = ns.keys.entry(key.to_owned()).or_default();
        k.leases.insert(id, exp);
        k.last = Some(now);
        refresh_keep(k, interval);
        ns.global.insert(id, (exp, key.to_owned()));
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
        Ok(tag(KeyState::new(
            k.map_or(0, |k| k.leases.values().filter(|e| **e > now).count() as u32),
            ns.map_or(0, |ns| ns.global.values().filter(|(e, _)| *e > now).count() as u32),
            k.map(|k| k.pen).filter(|p| *p > now).map(time),
            k.and_then(|k| k.last).map(time),
            time(now),
        )))
    }
}

impl Run<op::Limit> for LocalThrottle {
    async fn run(&self, op: &op::Limit) -> Result<Tagged<RateDecision>, Error> {
        let (scope, key, rate) = (&*op.scope, op.key.as_str(), &op.rate);
        if op.cost == 0 {
            return Err(Error::invalid_input("a rate-limit cost is at least 1"));
        }
        let now = self.now();
        let rate_key = scope.rate_key(key)?;
        let emission = us(rate.emission).max(1);
        let mut state = self.lock();
        // One hash of the key: read and write through the same entry.
        let entry = state.rates.entry(rate_key);
        let tat = match &entry {
            Entry::Occupied(e) => (*e.get()).max(now),
            Entry::Vacant(_) => now,
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
            entry.insert_entry(u64::try_from(new_tat).unwrap_or(u64::MAX));
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
        let rate_key = op.scope.rate_key(&op.key)?;
        let now = self.now();
        // An arrival time in the past is a full allowance already: no state, as on
        // Redis, where that key has expired.
        let had = self.lock().rates.remove(&rate_key).is_some_and(|tat| tat > now);
        Ok(tag(had))
    }
}
