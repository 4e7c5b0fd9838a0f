#![doc = include_str!("../README.md")]
//!
//! # Crate map
//!
//! The vocabulary that palisade's three contracts (cache, job store, throttle) share,
//! and the cache contract itself. It depends on no Redis client and no cache library:
//! backends live in `palisade-cache-local` (moka) and `palisade-cache-redis` (fred).
//!
//! | item | what it is |
//! |---|---|
//! | [`Mode`] | `strict`, `degraded`, `local`: how an outage of the shared store is handled |
//! | [`Error`] | the one error type; [`Error::is_unavailable`] decides failover |
//! | [`Provenance`], [`Tagged`] | where every read came from |
//! | [`Event`], [`Events`] | outage and recovery events, logged under `palisade::security` and broadcast |
//! | [`Namespace`], [`KeyParts`] | typed, escaped, injective keys and glob-safe SCAN patterns |
//! | [`Codec`] | serde + postcard inside a versioned envelope |
//! | [`Clock`], [`SystemClock`], [`ManualClock`] | injectable time |
//! | [`Supervisor`] | the health supervisor behind degraded mode |
//! | [`Op`], [`Backend`], [`Run`] | operations as values, and the backends that run them |
//! | [`Strict`], [`Failover`], [`ByMode`] | strict mode, degraded mode and mode dispatch, written once for every operation |
//! | [`ErrorCounters`], [`StatusSnapshot`] | the error counters and health snapshot inside every contract's stats |
//! | [`RedisUrl`], [`Secret`] | the one parser of Redis URLs; passwords that never print |
//! | [`Endpoint`] | a backend's printable identity, built from parsed parts |
//!
//! The `testkit` feature adds the behaviour suite run against every backend (and the
//! model-check helpers the job-store and throttle suites share). It starts no server
//! and depends on nothing of the project: servers, clusters, Sentinel and TLS for tests
//! are `palisade-redis-server`'s. It is not API-stable; enable it only from
//! `[dev-dependencies]`.
//!
//! ## Decisions
//!
//! - An unavailable error is [`Error::Unavailable`] or [`Error::Timeout`]; nothing else
//!   (a decode failure, bad input, an error reply) ever moves a mode or emits an event.
//! - Events carry an [`ErrorSummary`] (kind + redacted message chain), because an
//!   [`Error`] owns its source and is not `Clone`.
//! - Keys are limited to [`key::DEFAULT_MAX_KEY_LEN`] encoded bytes unless configured;
//!   durations to the [`limits`], the same in every backend, checked before any I/O.

pub mod backend;
pub mod cache;
pub mod clock;
pub mod codec;
mod error;
mod event;
pub mod key;
pub mod limits;
mod mode;
pub mod observe;
mod provenance;
mod redact;
pub mod stats;
pub mod supervisor;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod url;

pub use backend::{Backend, ByMode, Failover, FailoverOptions, Fallback, FallbackCtx, Never, Op, Run, Strict};
pub use cache::{BackendStatus, Cache, CacheBackend, CacheLimits, CacheStats};
pub use clock::{BoxFuture, Clock, ManualClock, SharedClock, SystemClock, with_deadline};
pub use codec::{Codec, CodecError, Format};
pub use error::{BoxError, Error, ErrorKind, ErrorSummary};
pub use event::{Component, Event, EventKind, Events, TARGET as EVENT_TARGET};
pub use key::{Contract, KeyParts, Namespace};
pub use mode::Mode;
pub use provenance::{Provenance, Tagged};
pub use redact::{Endpoint, REDACTED, redact_text};
pub use stats::{ErrorCounters, StatusSnapshot};
pub use supervisor::{
    Handover, Health, OnRecover, Probe, RecoveryContext, Supervisor, SupervisorConfig, SupervisorContext, on_behalf_of,
};
pub use url::{HostPort, RedisUrl, Secret, Topology};

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
