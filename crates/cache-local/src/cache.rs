//! The moka-backed cache.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::Expiry;
use moka::future::Cache as Moka;
use moka::ops::compute::{CompResult, Op};
use moka::policy::EvictionPolicy;
use palisade_cache_core::cache::{drop_fallback, op};
use palisade_cache_core::supervisor::RecoveryContext;
use palisade_cache_core::{Backend, BoxFuture, Fallback, Run};
use palisade_cache_core::{Error, Provenance, SharedClock, SystemClock, Tagged};

/// The default capacity: 64 MiB of keys and values.
pub const DEFAULT_CAPACITY_BYTES: u64 = 64 * 1024 * 1024;

/// What an entry weighs beyond its key and value bytes (bookkeeping).
const ENTRY_OVERHEAD: u64 = 64;

/// Configuration of a [`LocalCache`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LocalCacheConfig {
    /// Total weight (key + value + 64 bytes per entry) the cache may hold.
    pub capacity_bytes: u64,
    /// The clock deciding expiry.
    pub clock: SharedClock,
    /// The provenance of answers (`Local`; the degraded wrapper re-tags its own).
    pub provenance: Provenance,
}

impl Default for LocalCacheConfig {
    fn default() -> Self {
        LocalCacheConfig {
            capacity_bytes: DEFAULT_CAPACITY_BYTES,
            clock: SystemClock::shared(),
            provenance: Provenance::Local,
        }
    }
}

impl LocalCacheConfig {
    /// Sets the capacity in bytes.
    pub fn with_capacity_bytes(mut self, bytes: u64) -> Self {
        self.capacity_bytes = bytes;
        self
    }

    /// Sets the clock.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }
}

#[derive(Clone)]
struct Entry {
    value: Bytes,
    expires_at: Instant,
    ttl: Duration,
}

/// moka's own timer: the entry's TTL, reset by every overwrite.
struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _: &String, e: &Entry, _: std::time::Instant) -> Option<Duration> {
        Some(e.ttl)
    }
    fn expire_after_update(
        &self,
        _: &String,
        e: &Entry,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(e.ttl)
    }
}

/// The in-process cache backend. Cheap to clone; clones share the entries.
///
/// # Behavior
///
/// Implements every sentence of [`CacheBackend`](palisade_cache_core::CacheBackend)'s `# Behavior`, plus:
/// - answers are tagged [`Provenance::Local`];
/// - [`LocalCache::len`] counts live entries only;
/// - a value heavier than the capacity is [`Error::InvalidInput`].
#[derive(Clone)]
pub struct LocalCache {
    inner: Arc<Inner>,
}

struct Inner {
    map: Moka<String, Entry>,
    clock: SharedClock,
    /// moka enforces expiry itself (its timer follows real time): no second check on
    /// the read path.
    moka_expires: bool,
    capacity: u64,
    provenance: Provenance,
}

impl std::fmt::Debug for LocalCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCache")
            .field("capacity_bytes", &self.inner.capacity)
            .field("weighted_size", &self.inner.map.weighted_size())
            .finish()
    }
}

impl Default for LocalCache {
    fn default() -> Self {
        LocalCache::new(LocalCacheConfig::default())
    }
}

fn weight(key: &str, value: &[u8]) -> u64 {
    key.len() as u64 + value.len() as u64 + ENTRY_OVERHEAD
}

impl LocalCache {
    /// A cache with `config`.
    pub fn new(config: LocalCacheConfig) -> Self {
        let mut builder = Moka::builder()
            .max_capacity(config.capacity_bytes)
            .weigher(|k: &String, e: &Entry| u32::try_from(weight(k, &e.value)).unwrap_or(u32::MAX))
            .eviction_policy(EvictionPolicy::lru());
        if config.clock.follows_real_time() {
            builder = builder.expire_after(PerEntryTtl);
        }
        LocalCache {
            inner: Arc::new(Inner {
                map: builder.build(),
                moka_expires: config.clock.follows_real_time(),
                clock: config.clock,
                capacity: config.capacity_bytes,
                provenance: config.provenance,
            }),
        }
    }

    fn tag<T>(&self, value: T) -> Tagged<T> {
        Tagged::new(value, self.inner.provenance)
    }

    /// Whether `e` is unexpired by palisade's clock.
    fn live(&self, e: &Entry) -> bool {
        e.expires_at > self.inner.clock.now()
    }

    /// Whether `e`, just returned by moka's `get`, is unexpired: when moka runs the
    /// per-entry expiry itself (real-time clock) its `get` never returns an expired
    /// entry, so the read path skips the second clock read.
    fn live_read(&self, e: &Entry) -> bool {
        self.inner.moka_expires || self.live(e)
    }

    /// The entry to store; a TTL outside the [limits](palisade_cache_core::limits) is
    /// refused, so the deadline's arithmetic cannot overflow.
    fn entry(&self, value: &Bytes, ttl: Duration) -> Result<Entry, Error> {
        palisade_cache_core::limits::check_ttl(ttl)?;
        let expires_at = self
            .inner
            .clock
            .now()
            .checked_add(ttl)
            .ok_or_else(|| Error::invalid_input("the TTL reaches past the clock's range"))?;
        Ok(Entry {
            value: value.clone(),
            expires_at,
            ttl,
        })
    }

    fn check_weight(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        let w = weight(key, value);
        if w > self.inner.capacity || w > u64::from(u32::MAX) {
            return Err(Error::invalid_input(format!(
                "an entry of {w} bytes does not fit the local cache capacity of {} bytes",
                self.inner.capacity
            )));
        }
        Ok(())
    }

    /// The number of live (unexpired) entries. O(entries).
    pub fn len(&self) -> u64 {
        self.inner.map.iter().filter(|(_, e)| self.live(e)).count() as u64
    }

    /// Whether no live entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The weight currently accounted by moka, in bytes (may include expired entries
    /// not yet reclaimed).
    pub async fn weighted_size(&self) -> u64 {
        self.inner.map.run_pending_tasks().await;
        self.inner.map.weighted_size()
    }
}

/// As the fallback of degraded mode, the local cache drops everything it holds when
/// Redis is back: what was written while degraded is never replayed over shared state.
impl<P: Backend> Fallback<P> for LocalCache {
    fn recover<'a>(&'a self, _: &'a P, ctx: &'a RecoveryContext) -> BoxFuture<'a, Result<u64, Error>> {
        drop_fallback(self, ctx)
    }
}

impl Run<op::Get> for LocalCache {
    async fn run(&self, op: &op::Get) -> Result<Tagged<Option<Bytes>>, Error> {
        let key = op.key.as_str();
        let value = self
            .inner
            .map
            .get(key)
            .await
            .filter(|e| self.live_read(e))
            .map(|e| e.value);
        Ok(self.tag(value))
    }
}

impl Run<op::Set> for LocalCache {
    async fn run(&self, op: &op::Set) -> Result<Tagged<()>, Error> {
        let (key, value, ttl) = (op.key.as_str(), &op.value, op.ttl);
        self.check_weight(key, value)?;
        let entry = self.entry(value, ttl)?;
        self.inner.map.insert(key.to_owned(), entry).await;
        Ok(self.tag(()))
    }
}

impl Run<op::SetIfAbsent> for LocalCache {
    async fn run(&self, op: &op::SetIfAbsent) -> Result<Tagged<bool>, Error> {
        let (key, value, ttl) = (op.key.as_str(), &op.value, op.ttl);
        self.check_weight(key, value)?;
        let fresh = self.entry(value, ttl)?;
        let result = self
            .inner
            .map
            .entry_by_ref(key)
            .and_compute_with(|existing| {
                let op = match existing {
                    Some(e) if self.live(e.value()) => Op::Nop,
                    _ => Op::Put(fresh),
                };
                std::future::ready(op)
            })
            .await;
        let stored = matches!(result, CompResult::Inserted(_) | CompResult::ReplacedWith(_));
        Ok(self.tag(stored))
    }
}

impl Run<op::Delete> for LocalCache {
    async fn run(&self, op: &op::Delete) -> Result<Tagged<bool>, Error> {
        let key = op.key.as_str();
        let removed = self.inner.map.remove(key).await;
        Ok(self.tag(removed.is_some_and(|e| self.live(&e))))
    }
}

impl Run<op::Contains> for LocalCache {
    async fn run(&self, op: &op::Contains) -> Result<Tagged<bool>, Error> {
        let key = op.key.as_str();
        let live = self.inner.map.get(key).await.is_some_and(|e| self.live_read(&e));
        Ok(self.tag(live))
    }
}

impl Run<op::Clear> for LocalCache {
    async fn run(&self, op: &op::Clear) -> Result<Tagged<u64>, Error> {
        let key_prefix = op.prefix.as_str();
        let keys: Vec<Arc<String>> = self
            .inner
            .map
            .iter()
            .filter(|(k, _)| k.starts_with(key_prefix))
            .map(|(k, _)| k)
            .collect();
        let mut removed = 0;
        for k in keys {
            if let Some(e) = self.inner.map.remove(k.as_str()).await {
                removed += u64::from(self.live(&e));
            }
        }
        Ok(self.tag(removed))
    }
}
