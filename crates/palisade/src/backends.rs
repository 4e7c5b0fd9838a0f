//! One backend type per contract, whatever the mode, so that [`Palisade`](crate::Palisade)
//! hands out the same types in every mode. Each is an enum over the compiled-in
//! backends and only delegates.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use palisade_cache_core::cache::{BackendStatus, CacheBackend};
use palisade_cache_core::{Error, Tagged};
use palisade_job_store::{FieldMap, JobBackend, JobStatus, RawOutcome, StoredRecord};
use palisade_throttle::{KeyState, Rate, RateDecision, RawDecision, ScaledPolicy, Scope, ThrottleBackend};

#[cfg(feature = "local")]
use palisade_cache_local::{LocalCache, LocalJobStore, LocalThrottle};
#[cfg(feature = "redis")]
use palisade_cache_redis::{RedisCache, RedisJobStore, RedisThrottle};

/// Runs `$e` with `$b` bound to the backend of whichever variant `$self` is.
macro_rules! delegate {
    ($self:ident, $b:ident => $e:expr) => {
        match $self {
            #[cfg(feature = "local")]
            Self::Local($b) => $e,
            #[cfg(feature = "redis")]
            Self::Strict($b) => $e,
            #[cfg(all(feature = "redis", feature = "local"))]
            Self::Degraded($b) => $e,
        }
    };
}

/// The cache backend of a [`Palisade`](crate::Palisade): local, strict or degraded.
#[derive(Clone)]
#[non_exhaustive]
pub enum AnyCache {
    /// `Mode::LocalOnly`.
    #[cfg(feature = "local")]
    Local(LocalCache),
    /// `Mode::StrictDistributed`.
    #[cfg(feature = "redis")]
    Strict(palisade_cache_core::Strict<RedisCache>),
    /// `Mode::ExplicitDegraded`.
    #[cfg(all(feature = "redis", feature = "local"))]
    Degraded(palisade_cache_core::Failover<RedisCache, LocalCache>),
}

impl CacheBackend for AnyCache {
    async fn get(&self, key: &str) -> Result<Tagged<Option<Bytes>>, Error> {
        delegate!(self, b => b.get(key).await)
    }
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<Tagged<()>, Error> {
        delegate!(self, b => b.set(key, value, ttl).await)
    }
    async fn set_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> Result<Tagged<bool>, Error> {
        delegate!(self, b => b.set_if_absent(key, value, ttl).await)
    }
    async fn delete(&self, key: &str) -> Result<Tagged<bool>, Error> {
        delegate!(self, b => b.delete(key).await)
    }
    async fn contains(&self, key: &str) -> Result<Tagged<bool>, Error> {
        delegate!(self, b => b.contains(key).await)
    }
    async fn clear(&self, key_prefix: &str) -> Result<Tagged<u64>, Error> {
        delegate!(self, b => b.clear(key_prefix).await)
    }
    async fn probe(&self) -> Result<(), Error> {
        delegate!(self, b => b.probe().await)
    }
    fn status(&self) -> BackendStatus {
        delegate!(self, b => b.status())
    }
}

/// The job-store backend of a [`Palisade`](crate::Palisade): local, strict or degraded.
#[derive(Clone)]
#[non_exhaustive]
pub enum AnyJobs {
    /// `Mode::LocalOnly`.
    #[cfg(feature = "local")]
    Local(LocalJobStore),
    /// `Mode::StrictDistributed`.
    #[cfg(feature = "redis")]
    Strict(palisade_job_store::StrictJobs<RedisJobStore>),
    /// `Mode::ExplicitDegraded`.
    #[cfg(all(feature = "redis", feature = "local"))]
    Degraded(palisade_job_store::JobFailover<RedisJobStore, LocalJobStore>),
}

impl JobBackend for AnyJobs {
    async fn create(
        &self,
        key: &str,
        fields: &FieldMap,
        ttl: Duration,
        if_absent: bool,
    ) -> Result<Tagged<bool>, Error> {
        delegate!(self, b => b.create(key, fields, ttl, if_absent).await)
    }
    async fn update(&self, key: &str, fields: &FieldMap) -> Result<Tagged<bool>, Error> {
        delegate!(self, b => b.update(key, fields).await)
    }
    async fn exists(&self, key: &str) -> Result<Tagged<bool>, Error> {
        delegate!(self, b => b.exists(key).await)
    }
    async fn get(&self, key: &str) -> Result<Tagged<Option<StoredRecord>>, Error> {
        delegate!(self, b => b.get(key).await)
    }
    async fn transition(
        &self,
        key: &str,
        from: JobStatus,
        to: JobStatus,
        fields: &FieldMap,
    ) -> Result<Tagged<RawOutcome>, Error> {
        delegate!(self, b => b.transition(key, from, to, fields).await)
    }
    async fn heartbeat(&self, key: &str) -> Result<Tagged<RawOutcome>, Error> {
        delegate!(self, b => b.heartbeat(key).await)
    }
    async fn delete(&self, key: &str) -> Result<Tagged<bool>, Error> {
        delegate!(self, b => b.delete(key).await)
    }
    async fn probe(&self) -> Result<(), Error> {
        delegate!(self, b => b.probe().await)
    }
    fn status(&self) -> BackendStatus {
        delegate!(self, b => b.status())
    }
}

/// The throttle backend of a [`Palisade`](crate::Palisade): local, strict or degraded.
#[derive(Clone)]
#[non_exhaustive]
pub enum AnyThrottle {
    /// `Mode::LocalOnly`.
    #[cfg(feature = "local")]
    Local(LocalThrottle),
    /// `Mode::StrictDistributed`.
    #[cfg(feature = "redis")]
    Strict(palisade_throttle::StrictThrottle<RedisThrottle>),
    /// `Mode::ExplicitDegraded`.
    #[cfg(all(feature = "redis", feature = "local"))]
    Degraded(palisade_throttle::ThrottleFailover<RedisThrottle, LocalThrottle>),
}

impl ThrottleBackend for AnyThrottle {
    async fn acquire(
        &self,
        scope: &Scope,
        key: &str,
        policy: &ScaledPolicy,
    ) -> Result<Tagged<(RawDecision, u64)>, Error> {
        delegate!(self, b => b.acquire(scope, key, policy).await)
    }
    async fn penalize(&self, scope: &Scope, key: &str, d: Duration) -> Result<Tagged<SystemTime>, Error> {
        delegate!(self, b => b.penalize(scope, key, d).await)
    }
    async fn clear_penalty(&self, scope: &Scope, key: &str) -> Result<Tagged<bool>, Error> {
        delegate!(self, b => b.clear_penalty(scope, key).await)
    }
    async fn inspect(&self, scope: &Scope, key: &str) -> Result<Tagged<KeyState>, Error> {
        delegate!(self, b => b.inspect(scope, key).await)
    }
    async fn limit(&self, scope: &Scope, key: &str, rate: &Rate) -> Result<Tagged<RateDecision>, Error> {
        delegate!(self, b => b.limit(scope, key, rate).await)
    }
    async fn probe(&self) -> Result<(), Error> {
        delegate!(self, b => b.probe().await)
    }
    fn status(&self) -> BackendStatus {
        delegate!(self, b => b.status())
    }
}
