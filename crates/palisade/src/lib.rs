#![doc = include_str!("../README.md")]

#[cfg(not(any(feature = "local", feature = "redis")))]
compile_error!("palisade needs at least one backend: enable the `local` or the `redis` feature");

mod backends;
mod builder;

pub use backends::{AnyCache, AnyJobs, AnyThrottle};
pub use builder::{
    Builder, ContractCheck, DOCTOR_NAMESPACE, Doctor, ENV_CA_FILE, ENV_CLIENT_CERT_FILE, ENV_CLIENT_KEY_FILE, ENV_MODE,
    ENV_PASSWORD_FILE, ENV_REDIS_URL, ENV_SENTINEL_PASSWORD_FILE, ENV_SENTINEL_USER, ENV_TENANT, ENV_TLS_SERVER_NAME,
    Palisade,
};
pub use palisade_cache_core::{
    BoxError, Cache, CacheStats, Codec, Component, Error, ErrorKind, Event, EventKind, Events, Health, Mode,
    Provenance, Tagged,
};
pub use palisade_job_store::{JobRecord, JobStatus, JobStore, Outcome, Patch};
pub use palisade_throttle::{
    Decision, DenyReason, Permit, Policy, Rate, RateDecision, RateLimiter, Throttle, ThrottleStats,
};

/// The contract crates, for what the umbrella does not re-export.
pub mod contracts {
    pub use palisade_cache_core as core;
    pub use palisade_job_store as jobs;
    pub use palisade_throttle as throttle;
}
