#![doc = include_str!("../README.md")]

#[cfg(not(any(feature = "local", feature = "redis")))]
compile_error!("palisade needs at least one backend: enable the `local` or the `redis` feature");

pub mod backends;
mod builder;
pub mod config;

pub use backends::{AnyCache, AnyJobs, AnyThrottle};
pub use builder::{
    Builder, ContractCheck, DOCTOR_NAMESPACE, Doctor, ENV_CA_FILE, ENV_CLIENT_CERT_FILE, ENV_CLIENT_KEY_FILE, ENV_MODE,
    ENV_PASSWORD_FILE, ENV_REDIS_URL, ENV_SENTINEL_PASSWORD_FILE, ENV_SENTINEL_USER, ENV_TENANT, ENV_TLS_SERVER_NAME,
    Palisade, Tenant,
};
pub use config::Config;
pub use palisade_cache_core::observe;
pub use palisade_cache_core::{
    BoxError, CacheLimits, CacheStats, Codec, CodecError, Component, Error, ErrorKind, ErrorSummary, Event, EventKind,
    Events, Format, Health, Mode, Namespace, Provenance, StatusSnapshot, Tagged,
};
/// The Redis connection, to share with palisade ([`Builder::redis_connection`]) or to
/// take from it ([`Palisade::redis_connection`]).
#[cfg(feature = "redis")]
pub use palisade_cache_redis::{DEFAULT_DEDICATED_POOL_SIZE, PoolStats, RedisConfig, RedisConnection};
pub use palisade_job_store::{
    JobEvent, JobRecord, JobStats, JobStatus, JobStoreConfig, JobWatch, Outcome, Patch, RecoveryReport, WaitOutcome,
};
pub use palisade_throttle::{
    Decision, DenyReason, KeyState, Lease, Permit, Policy, PolicyBuilder, Rate, RateBuilder, RateDecision,
    ThrottleStats,
};

/// The cache of a [`Palisade`], whatever its mode.
pub type Cache = palisade_cache_core::Cache<AnyCache>;
/// The job store of a [`Palisade`], whatever its mode.
pub type JobStore = palisade_job_store::JobStore<AnyJobs>;
/// The throttle of a [`Palisade`], whatever its mode.
pub type Throttle = palisade_throttle::Throttle<AnyThrottle>;
/// The rate limiter of a [`Palisade`], whatever its mode.
pub type RateLimiter = palisade_throttle::RateLimiter<AnyThrottle>;

/// The contract crates, for what the umbrella does not re-export.
pub mod contracts {
    pub use palisade_cache_core as core;
    pub use palisade_job_store as jobs;
    pub use palisade_throttle as throttle;
}

/// The workspace README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct WorkspaceReadme;
