//! The cache contract: [`CacheBackend`] for implementors, [`Cache`] for users.
//!
//! A backend moves bytes under already-encoded keys; the [`Cache`] in front of it owns
//! the tenant's [`Namespace`], the size limits, the codec, the stats and the
//! single-flight of [`Cache::get_or_load`], so that every backend behaves the same and
//! bad input is refused once, before any I/O.
//!
//! ## Decisions
//!
//! - Every entry has a TTL (memory stays bounded, in Redis and in process); a zero TTL
//!   is [`Error::InvalidInput`].
//! - Writes return their [`Provenance`] too: a write served by the degraded fallback
//!   says so.
//! - In degraded mode, writes, deletes and clears reach only the local fallback and are
//!   dropped when Redis is back (never replayed over shared state): a delete made while
//!   degraded does not delete the shared value. The `LocalDegraded` tag on the answer is
//!   how the caller knows.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::backend::Run;
use crate::key::Contract;
use crate::stats::{ErrorCounters, StatusSnapshot};
use crate::supervisor::on_behalf_of;
use crate::{BoxError, Codec, Error, Health, Mode, Namespace, Provenance, Tagged};

/// The default limit on a stored value, in bytes (1 MiB).
pub const DEFAULT_MAX_VALUE_LEN: usize = 1024 * 1024;

/// The mode a backend runs in and the health of its primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackendStatus {
    /// The mode.
    pub mode: Mode,
    /// The health of the shared store ([`Health::Healthy`] for a local backend).
    pub health: Health,
}

impl BackendStatus {
    /// A status.
    pub fn new(mode: Mode, health: Health) -> Self {
        BackendStatus { mode, health }
    }
}

crate::contract! {
/// What a cache backend implements: [`Backend`](crate::Backend) and [`Run`] for every operation of
/// [`op`]. Keys arrive encoded and validated (see [`Cache`]); values are bytes.
///
/// # Behavior
///
/// - [`op::Get`] returns the live value under `key`, or `None`; an expired entry is
///   never returned. The value is immutable [`Bytes`]: nothing the caller or a later
///   write does can change what another holder sees.
/// - [`op::Set`] stores `value` under `key` for `ttl`, replacing any value and its TTL.
/// - [`op::SetIfAbsent`] stores only when no live value exists, atomically, and says
///   whether it stored.
/// - [`op::Delete`] removes the key and says whether a live value was there.
/// - [`op::Contains`] says whether a live value is there, without returning it.
/// - [`op::Clear`] removes every key that starts with `prefix` and returns how many
///   live entries it removed (on Redis: `SCAN` with a glob-safe pattern, on every
///   master of a cluster, deleting in batches — never `KEYS`).
/// - `probe` checks that the store answers (Redis: `PING`).
/// - A backend that cannot reach its store returns [`Error::Unavailable`] or
///   [`Error::Timeout`], within its deadline.
pub trait CacheBackend: op::Get, op::Set, op::SetIfAbsent, op::Delete, op::Contains, op::Clear;
}

/// The operations of the cache contract. In degraded mode each runs on the outage's
/// own fallback keys (`<outage>#<key>`), and a write's TTL is capped by
/// [`FailoverOptions::degraded_ttl_cap`](crate::FailoverOptions).
pub mod op {
    use std::time::Duration;

    use bytes::Bytes;

    crate::keyed_op! {
        /// The live value under `key`.
        Get -> Option<Bytes>, "cache.get" {
            /// The encoded key.
            key
        }
    }
    crate::keyed_op! {
        /// Stores `value` under `key` for `ttl`.
        Set -> (), "cache.set" {
            /// The encoded key.
            key,
            /// The value.
            value: Bytes,
            /// Its TTL.
            ttl: Duration,
        }
        degraded |op, ctx| { op.ttl = op.ttl.min(ctx.options.degraded_ttl_cap); }
    }
    crate::keyed_op! {
        /// Stores `value` under `key` for `ttl` if no live value is there.
        SetIfAbsent -> bool, "cache.set_if_absent" {
            /// The encoded key.
            key,
            /// The value.
            value: Bytes,
            /// Its TTL.
            ttl: Duration,
        }
        degraded |op, ctx| { op.ttl = op.ttl.min(ctx.options.degraded_ttl_cap); }
    }
    crate::keyed_op! {
        /// Removes `key`.
        Delete -> bool, "cache.delete" {
            /// The encoded key.
            key
        }
    }
    crate::keyed_op! {
        /// Whether a live value is under `key`.
        Contains -> bool, "cache.contains" {
            /// The encoded key.
            key
        }
    }
    crate::keyed_op! {
        /// Removes every key that starts with `prefix`.
        Clear -> u64, "cache.clear" {
            /// The encoded key prefix (the namespace's head).
            prefix
        }
    }
}

/// What a cache fallback does when the primary is back: drops everything it holds
/// (never replayed over shared state), then hands the outage over. For
/// [`Fallback::recover`](crate::Fallback::recover) implementations of cache backends.
pub fn drop_fallback<'a, F: Run<op::Clear>>(
    fallback: &'a F,
    ctx: &'a crate::RecoveryContext,
) -> crate::BoxFuture<'a, Result<u64, Error>> {
    Box::pin(async move {
        let _exclusive = ctx.gate.write().await;
        let dropped = match fallback.run(&op::Clear::new(String::new())).await {
            Ok(t) => t.value,
            Err(e) => {
                tracing::warn!(target: crate::EVENT_TARGET, error = %e.chain(), "cannot drop the degraded entries");
                0
            }
        };
        ctx.handover.begin(ctx.outage, []);
        Ok(dropped)
    })
}

/// Limits checked before any I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheLimits {
    /// The largest value accepted, in bytes (default [`DEFAULT_MAX_VALUE_LEN`]).
    pub max_value_len: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits {
            max_value_len: DEFAULT_MAX_VALUE_LEN,
        }
    }
}

impl CacheLimits {
    /// Sets the largest value accepted.
    pub fn with_max_value_len(mut self, max: usize) -> Self {
        self.max_value_len = max;
        self
    }
}

/// A snapshot of a cache's counters and state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// `get` calls (and typed gets) that found a value.
    pub hits: u64,
    /// `get` calls that found nothing.
    pub misses: u64,
    /// Values stored (`set`, and `set_if_absent` when it stored).
    pub sets: u64,
    /// `delete` calls that succeeded.
    pub deletes: u64,
    /// Reads answered by the degraded fallback.
    pub degraded_reads: u64,
    /// Writes (set, delete, clear) applied to the degraded fallback.
    pub degraded_writes: u64,
    /// Mode, health, errors by kind and the last error.
    pub status: StatusSnapshot,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    sets: AtomicU64,
    deletes: AtomicU64,
    degraded_reads: AtomicU64,
    degraded_writes: AtomicU64,
    errors: ErrorCounters,
}

type FlightResult = Result<Tagged<Vec<u8>>, Arc<Error>>;
type Flights = Mutex<HashMap<String, Arc<watch::Sender<Option<FlightResult>>>>>;

/// One load of [`Cache::get_or_load`] in flight: ended with its result, or — dropped
/// before that, as a panicking loader's task drops it — with [`Error::Load`].
struct Flight {
    shared: Arc<Shared>,
    key: String,
    user_key: String,
    tx: Arc<watch::Sender<Option<FlightResult>>>,
}

impl Flight {
    fn end(self, result: FlightResult) {
        lock(&self.shared.flights).remove(&self.key);
        self.tx.send_replace(Some(result));
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        if self.tx.borrow().is_some() {
            return;
        }
        lock(&self.shared.flights).remove(&self.key);
        self.tx.send_replace(Some(Err(Arc::new(Error::Load {
            key: std::mem::take(&mut self.user_key),
            source: Arc::from(BoxError::from("the loader panicked or its task was dropped")),
        }))));
    }
}

struct Shared {
    counters: Counters,
    flights: Flights,
}

/// A tenant's cache over a backend: validated keys, typed values, stats, single-flight.
///
/// Cheap to clone; clones share the backend, the counters and the single-flight map.
/// [`Cache::namespace`] gives the same cache for another namespace of the same tenant.
#[derive(Clone)]
pub struct Cache<B> {
    backend: B,
    ns: Arc<Namespace>,
    tenant: Arc<str>,
    limits: CacheLimits,
    codec: Codec,
    shared: Arc<Shared>,
}

impl<B> std::fmt::Debug for Cache<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("namespace", &self.ns)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

enum Access {
    Read,
    Write,
}

impl<B: CacheBackend> Cache<B> {
    /// A cache for `namespace` over `backend`, with default limits and codec schema 1.
    pub fn new(backend: B, namespace: Namespace) -> Self {
        Cache {
            backend,
            tenant: Arc::from(namespace.tenant()),
            ns: Arc::new(namespace),
            limits: CacheLimits::default(),
            codec: Codec::new(1),
            shared: Arc::new(Shared {
                counters: Counters::default(),
                flights: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Replaces the limits.
    pub fn with_limits(mut self, limits: CacheLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Replaces the codec used by the typed methods.
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// The same cache (backend, counters, limits) for another namespace of the tenant.
    pub fn namespace(&self, name: &str) -> Result<Self, Error> {
        Ok(self.with_ns(self.ns.sibling(name)?))
    }

    /// The same cache (backend, counters, limits, namespace name) for another tenant:
    /// what `palisade::Palisade::tenant` hands out. The tenant name is
    /// validated and escaped like every key part.
    pub fn for_tenant(&self, tenant: &str) -> Result<Self, Error> {
        Ok(self.with_ns(self.ns.with_tenant(tenant)?))
    }

    /// The same backend, counters, limits and codec over `ns`.
    fn with_ns(&self, ns: Namespace) -> Self {
        Cache {
            backend: self.backend.clone(),
            tenant: Arc::from(ns.tenant()),
            ns: Arc::new(ns),
            limits: self.limits,
            codec: self.codec,
            shared: Arc::clone(&self.shared),
        }
    }

    /// The namespace.
    pub fn ns(&self) -> &Namespace {
        &self.ns
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    fn key(&self, key: &str) -> Result<String, Error> {
        self.ns.key(Contract::Cache, key)
    }

    fn check_value(&self, value: &[u8]) -> Result<(), Error> {
        if value.len() > self.limits.max_value_len {
            return Err(Error::invalid_input(format!(
                "the value is {} bytes, the limit is {}",
                value.len(),
                self.limits.max_value_len
            )));
        }
        Ok(())
    }

    fn check_ttl(ttl: Duration) -> Result<(), Error> {
        crate::limits::check_ttl(ttl)
    }

    /// The storage key and the value of a write, once its input passed every check.
    fn write_input(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(String, Bytes), Error> {
        let k = self.key(key)?;
        self.check_value(value)?;
        Self::check_ttl(ttl)?;
        Ok((k, Bytes::copy_from_slice(value)))
    }

    /// Runs `op` on the backend on behalf of the cache's tenant.
    ///
    /// Not an `async fn`, and `op` borrowed: the caller's future holds the operation
    /// and no future level is added around the backend's (each level adds its own
    /// state). With one, a local `get`'s future was 1,032 bytes, just past what
    /// glibc's per-thread cache serves, so a boxed or spawned call (a bench's
    /// `join_all`, a tower service, `tokio::spawn`) took malloc's slow path; without
    /// it, 920 bytes (measured: a local get hit 374 → 318 ns, medians of 4 interleaved
    /// criterion runs). Callers also build their operation before the first `.await`
    /// and return early on a bad input, for the same reason.
    fn run<'a, O: crate::backend::Op>(
        &'a self,
        op: &'a O,
    ) -> impl Future<Output = Result<Tagged<O::Output>, Error>> + 'a
    where
        B: Run<O>,
    {
        on_behalf_of(&self.tenant, self.backend.run(op))
    }

    fn record<T>(&self, r: Result<Tagged<T>, Error>, op: Access) -> Result<Tagged<T>, Error> {
        let c = &self.shared.counters;
        match &r {
            Ok(t) if t.provenance == Provenance::LocalDegraded => {
                let n = match op {
                    Access::Read => &c.degraded_reads,
                    Access::Write => &c.degraded_writes,
                };
                n.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => self.note_error(e),
        }
        r
    }

    fn note_error(&self, e: &Error) {
        self.shared.counters.errors.note(e);
    }

    fn count(&self, n: &AtomicU64, yes: bool) {
        if yes {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The value under `key`, with its provenance.
    ///
    /// # Behavior
    ///
    /// - Returns the live value last stored under `key` in this tenant and namespace,
    ///   or `None` when there is none or it expired.
    /// - The returned value is immutable and the caller's own ([`Bytes`], cheap to clone,
    ///   zero-copy): overwriting or deleting the key later never changes a value already
    ///   returned, and a caller's copy (`to_vec()`) never changes the cache.
    /// - Provenance is `Distributed` from Redis, `Local` in local-only mode,
    ///   `LocalDegraded` from the fallback of degraded mode.
    /// - An empty key, or one whose encoding exceeds the key limit, is
    ///   [`Error::InvalidInput`] before any I/O.
    /// - When the store cannot be reached: [`Error::Unavailable`] or [`Error::Timeout`]
    ///   within the command deadline (strict), or the fallback's answer (degraded).
    pub async fn get(&self, key: &str) -> Result<Tagged<Option<Bytes>>, Error> {
        let op = match self.key(key) {
            Ok(k) => op::Get::new(k),
            Err(e) => return self.record(Err(e), Access::Read),
        };
        let r = self.record(self.run(&op).await, Access::Read);
        if let Ok(t) = &r {
            let c = &self.shared.counters;
            self.count(if t.value.is_some() { &c.hits } else { &c.misses }, true);
        }
        r
    }

    /// Stores `value` under `key` for `ttl`.
    ///
    /// # Behavior
    ///
    /// - Replaces any value under `key`, and its TTL; after `ttl` the value is gone.
    /// - A value longer than [`CacheLimits::max_value_len`], a TTL outside
    ///   [`limits`](crate::limits) (1 ms to 10 years), an empty or oversized key are
    ///   [`Error::InvalidInput`] before any I/O, and nothing is written.
    /// - In degraded mode during an outage the value goes to the local fallback, with
    ///   its TTL capped by `degraded_ttl_cap`, and the answer is tagged `LocalDegraded`.
    pub async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<Tagged<()>, Error> {
        let op = match self.write_input(key, value, ttl) {
            Ok((k, v)) => op::Set::new(k, v, ttl),
            Err(e) => return self.record(Err(e), Access::Write),
        };
        let r = self.record(self.run(&op).await, Access::Write);
        self.count(&self.shared.counters.sets, r.is_ok());
        r
    }

    /// Stores `value` under `key` for `ttl` only if no live value is there.
    ///
    /// # Behavior
    ///
    /// - Atomic: of several concurrent callers on one key, exactly one stores.
    /// - Returns `true` when it stored, `false` when a live value was already there
    ///   (which is left unchanged, TTL included).
    /// - An expired value counts as absent.
    /// - Input is checked as in [`Cache::set`].
    pub async fn set_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> Result<Tagged<bool>, Error> {
        let op = match self.write_input(key, value, ttl) {
            Ok((k, v)) => op::SetIfAbsent::new(k, v, ttl),
            Err(e) => return self.record(Err(e), Access::Write),
        };
        let r = self.record(self.run(&op).await, Access::Write);
        self.count(&self.shared.counters.sets, matches!(&r, Ok(t) if t.value));
        r
    }

    /// Removes `key`.
    ///
    /// # Behavior
    ///
    /// - Returns whether a live value was there; afterwards `get` returns `None`.
    /// - Deleting a missing key is not an error (returns `false`).
    pub async fn delete(&self, key: &str) -> Result<Tagged<bool>, Error> {
        let op = match self.key(key) {
            Ok(k) => op::Delete::new(k),
            Err(e) => return self.record(Err(e), Access::Write),
        };
        let r = self.record(self.run(&op).await, Access::Write);
        self.count(&self.shared.counters.deletes, r.is_ok());
        r
    }

    /// Whether a live value is under `key`.
    ///
    /// # Behavior
    ///
    /// - True exactly when `get` would return a value; an expired entry is never
    ///   counted.
    pub async fn contains(&self, key: &str) -> Result<Tagged<bool>, Error> {
        let op = match self.key(key) {
            Ok(k) => op::Contains::new(k),
            Err(e) => return self.record(Err(e), Access::Read),
        };
        self.record(self.run(&op).await, Access::Read)
    }

    /// Removes every entry of this tenant and namespace.
    ///
    /// # Behavior
    ///
    /// - Afterwards no key of this (tenant, namespace) has a value; keys of every other
    ///   tenant and namespace are untouched, whatever characters their names contain.
    /// - Returns the number of live entries removed.
    /// - On Redis it uses `SCAN` (never `KEYS`) with a glob-safe pattern, on every
    ///   master of a cluster, and deletes in batches.
    pub async fn clear(&self) -> Result<Tagged<u64>, Error> {
        let r = self
            .run(&op::Clear::new(self.ns.head(Contract::Cache).to_owned()))
            .await;
        self.record(r, Access::Write)
    }

    /// Counters and state.
    ///
    /// # Behavior
    ///
    /// - `hits` and `misses` count `get` answers; `sets` counts values stored; `deletes`
    ///   counts successful deletes; `degraded_reads` and `degraded_writes` count answers
    ///   tagged `LocalDegraded`.
    /// - `status` holds the failures by kind and the last one (redacted), and the mode,
    ///   health and outage start from the backend's supervisor.
    /// - Clones and [`Cache::namespace`] siblings share the counters.
    pub fn stats(&self) -> CacheStats {
        let c = &self.shared.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            hits: load(&c.hits),
            misses: load(&c.misses),
            sets: load(&c.sets),
            deletes: load(&c.deletes),
            degraded_reads: load(&c.degraded_reads),
            degraded_writes: load(&c.degraded_writes),
            status: c.errors.snapshot(self.backend.status()),
        }
    }

    /// The typed value under `key`, decoded with the cache's [`Codec`].
    ///
    /// # Behavior
    ///
    /// - As [`Cache::get`]; a stored value that does not decode (other schema version,
    ///   garbage bytes) is [`Error::Codec`] naming the key, and never moves the mode.
    pub async fn get_typed<T: DeserializeOwned>(&self, key: &str) -> Result<Tagged<Option<T>>, Error> {
        let t = self.get(key).await?;
        let what = format!("the cached value of {key:?}");
        let decoded = t.try_map(|v| v.map(|bytes| self.codec.decode(&bytes, &what)).transpose());
        if let Err(e) = &decoded {
            self.note_error(e);
        }
        decoded
    }

    /// Encodes `value` with the cache's [`Codec`] and stores it as [`Cache::set`] does.
    pub async fn set_typed<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<Tagged<()>, Error> {
        let bytes = self.codec.encode(value, &format!("the value for {key:?}"))?;
        self.set(key, &bytes, ttl).await
    }

    /// The typed value under `key`, loading and storing it on a miss.
    ///
    /// # Behavior
    ///
    /// - On a hit, returns the cached value; the loader is not called.
    /// - On a miss, concurrent callers in this process for the same key share one load:
    ///   the loader runs once, its value is stored for `ttl` and every caller receives
    ///   it (each decodes its own owned copy).
    /// - The loader runs detached (a spawned task): a caller that is cancelled does not
    ///   stall or cancel the others.
    /// - A loader error reaches every waiting caller as [`Error::Load`] and is not
    ///   cached: the next call loads again.
    /// - If storing the loaded value fails, every waiter gets that error (strict mode
    ///   stays fail-closed).
    /// - A loader that panics fails every waiting caller with [`Error::Load`], and the
    ///   next call loads again: one panic never leaves the key's callers waiting.
    /// - Needs a tokio runtime ([`Error::Config`] otherwise).
    pub async fn get_or_load<T, F, Fut, E>(&self, key: &str, ttl: Duration, load: F) -> Result<Tagged<T>, Error>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        if let Tagged {
            value: Some(v),
            provenance,
        } = self.get_typed::<T>(key).await?
        {
            return Ok(Tagged::new(v, provenance));
        }
        Self::check_ttl(ttl)?;
        let encoded_key = self.key(key)?;
        let (mut rx, start) = {
            let mut flights = lock(&self.shared.flights);
            match flights.get(&encoded_key) {
                Some(tx) => (tx.subscribe(), None),
                None => {
                    let runtime = tokio::runtime::Handle::try_current()
                        .map_err(|_| Error::config("get_or_load needs a tokio runtime"))?;
                    let (tx, rx) = watch::channel(None);
                    let tx = Arc::new(tx);
                    flights.insert(encoded_key.clone(), Arc::clone(&tx));
                    // Built before the task exists, so the flight ends (and the waiters
                    // hear of it) even if the task is dropped unpolled, panics or never
                    // returns here.
                    let flight = Flight {
                        shared: Arc::clone(&self.shared),
                        key: encoded_key,
                        user_key: key.to_owned(),
                        tx,
                    };
                    (rx, Some((runtime, flight)))
                }
            }
        };
        // Spawned with the map unlocked: a task dropped at once (a runtime shutting
        // down) drops its flight, which takes the lock to end it.
        if let Some((runtime, flight)) = start {
            let this = self.clone();
            runtime.spawn(async move {
                let result = this.load_and_store(&flight.user_key, ttl, load).await.map_err(Arc::new);
                flight.end(result);
            });
        }
        let result = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Error::config("the loading task was dropped (runtime shutting down)"))?
            .clone();
        match result {
            Some(Ok(t)) => t.try_map(|bytes| self.codec.decode(&bytes, &format!("the loaded value of {key:?}"))),
            Some(Err(e)) => Err(Error::clone_shared(&e)),
            None => Err(Error::config("the loading task ended without a result")),
        }
    }

    /// How many callers are waiting on a load of `key` right now (0 when no load
    /// runs). For observability and tests of [`Cache::get_or_load`].
    pub fn loading_waiters(&self, key: &str) -> usize {
        let Ok(k) = self.key(key) else { return 0 };
        lock(&self.shared.flights).get(&k).map_or(0, |tx| tx.receiver_count())
    }

    async fn load_and_store<T, F, Fut, E>(&self, key: &str, ttl: Duration, load: F) -> Result<Tagged<Vec<u8>>, Error>
    where
        T: Serialize,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Into<BoxError>,
    {
        let value = load().await.map_err(|e| Error::Load {
            key: key.to_owned(),
            source: Arc::from(e.into()),
        })?;
        let bytes = self.codec.encode(&value, &format!("the loaded value of {key:?}"))?;
        let stored = self.set(key, &bytes, ttl).await?;
        Ok(stored.map(|()| bytes))
    }
}
