//! One backend type per contract, whatever the mode, so that [`Palisade`](crate::Palisade)
//! hands out the same types in every mode: [`ByMode`] over the compiled-in backends
//! ([`Never`](palisade_cache_core::Never) for a backend whose feature is off). Nothing here is written per method:
//! [`ByMode`], [`Strict`](palisade_cache_core::Strict) and
//! [`Failover`](palisade_cache_core::Failover) run every operation of every contract.

use palisade_cache_core::ByMode;

/// The local backends (or [`Never`](palisade_cache_core::Never) without the `local` feature).
#[cfg(feature = "local")]
pub mod local {
    pub use palisade_cache_local::{LocalCache as Cache, LocalJobStore as Jobs, LocalThrottle as Throttle};
}
/// The local backends (or [`Never`](palisade_cache_core::Never) without the `local` feature).
#[cfg(not(feature = "local"))]
pub mod local {
    /// Compiled out.
    pub type Cache = palisade_cache_core::Never;
    /// Compiled out.
    pub type Jobs = palisade_cache_core::Never;
    /// Compiled out.
    pub type Throttle = palisade_cache_core::Never;
}

/// The strict-mode backends (or [`Never`](palisade_cache_core::Never) without the `redis` feature).
#[cfg(feature = "redis")]
pub mod strict {
    use palisade_cache_core::Strict;
    use palisade_cache_redis::{RedisCache, RedisJobStore, RedisThrottle};
    /// Redis, strict.
    pub type Cache = Strict<RedisCache>;
    /// Redis, strict.
    pub type Jobs = Strict<RedisJobStore>;
    /// Redis, strict.
    pub type Throttle = Strict<RedisThrottle>;
}
/// The strict-mode backends (or [`Never`](palisade_cache_core::Never) without the `redis` feature).
#[cfg(not(feature = "redis"))]
pub mod strict {
    /// Compiled out.
    pub type Cache = palisade_cache_core::Never;
    /// Compiled out.
    pub type Jobs = palisade_cache_core::Never;
    /// Compiled out.
    pub type Throttle = palisade_cache_core::Never;
}

/// The degraded-mode backends (or [`Never`](palisade_cache_core::Never) without both `redis` and `local`).
#[cfg(all(feature = "redis", feature = "local"))]
pub mod degraded {
    use palisade_cache_core::Failover;
    use palisade_cache_local::{LocalCache, LocalJobStore, LocalThrottle};
    use palisade_cache_redis::{RedisCache, RedisJobStore, RedisThrottle};
    /// Redis, with a local fallback.
    pub type Cache = Failover<RedisCache, LocalCache>;
    /// Redis, with a local fallback.
    pub type Jobs = Failover<RedisJobStore, LocalJobStore>;
    /// Redis, with a local fallback.
    pub type Throttle = Failover<RedisThrottle, LocalThrottle>;
}
/// The degraded-mode backends (or [`Never`](palisade_cache_core::Never) without both `redis` and `local`).
#[cfg(not(all(feature = "redis", feature = "local")))]
pub mod degraded {
    /// Compiled out.
    pub type Cache = palisade_cache_core::Never;
    /// Compiled out.
    pub type Jobs = palisade_cache_core::Never;
    /// Compiled out.
    pub type Throttle = palisade_cache_core::Never;
}

/// The cache backend of a [`Palisade`](crate::Palisade): local, strict or degraded.
pub type AnyCache = ByMode<local::Cache, strict::Cache, degraded::Cache>;
/// The job-store backend of a [`Palisade`](crate::Palisade): local, strict or degraded.
pub type AnyJobs = ByMode<local::Jobs, strict::Jobs, degraded::Jobs>;
/// The throttle backend of a [`Palisade`](crate::Palisade): local, strict or degraded.
pub type AnyThrottle = ByMode<local::Throttle, strict::Throttle, degraded::Throttle>;
