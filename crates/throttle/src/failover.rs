//! The throttle in strict mode ([`StrictThrottle`]) and degraded mode
//! ([`ThrottleFailover`]).
//!
//! ## Degraded mode
//!
//! While Redis is down each node decides alone, so the local policy is **scaled by
//! `degraded_share`**: caps are multiplied by it and rounded down, and `min_interval`
//! is divided by it. With N nodes and `degraded_share = 1/N` the fleet-wide totals stay
//! within the configured caps. A cap that scales below 1 admits nothing on that node
//! while degraded: the throttle fails closed rather than open. Rates are scaled the
//! same way.
//!
//! A [`Permit`](crate::Permit) stays bound to the backend that granted it: one taken
//! from the local fallback is released there, also after service returned to Redis;
//! new acquisitions after recovery go to Redis.

use std::time::{Duration, SystemTime};

use palisade_cache_core::Strict;
use palisade_cache_core::cache::BackendStatus;
use palisade_cache_core::failover::DegradedRouter;
use palisade_cache_core::supervisor::{Supervisor, SupervisorContext};
use palisade_cache_core::{Error, Mode, Tagged};

use crate::model::{KeyState, Rate, RateDecision, RawDecision, ScaledPolicy, Scope, ThrottleBackend};

/// Options of degraded mode.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct ThrottleFailoverOptions {
    /// The share of every cap and rate one node may use while degraded (default 0.25:
    /// a fleet of four). Set it to 1 / number of nodes.
    pub degraded_share: f64,
}

impl Default for ThrottleFailoverOptions {
    fn default() -> Self {
        ThrottleFailoverOptions { degraded_share: 0.25 }
    }
}

impl ThrottleFailoverOptions {
    /// Sets `degraded_share` (clamped to `[0, 1]`).
    pub fn with_degraded_share(mut self, share: f64) -> Self {
        self.degraded_share = share.clamp(0.0, 1.0);
        self
    }
}

/// The throttle in degraded mode; see the module docs.
///
/// # Behavior
///
/// - While healthy every decision is Redis's.
/// - An unavailable error marks Redis down at once (one `Degraded` event); that call and
///   later ones are decided by the local backend under the scaled policy, tagged
///   `LocalDegraded`, until a probe confirms recovery (one `Recovered` event).
/// - Permits stay bound to the backend that granted them.
#[derive(Clone)]
pub struct ThrottleFailover<P, F> {
    router: DegradedRouter<P, F>,
    options: ThrottleFailoverOptions,
}

impl<P: ThrottleBackend, F: ThrottleBackend> ThrottleFailover<P, F> {
    /// Degraded mode over a primary that answered at startup.
    pub fn new(
        primary: P,
        fallback: F,
        ctx: SupervisorContext,
        options: ThrottleFailoverOptions,
    ) -> Result<Self, Error> {
        Self::build(primary, fallback, ctx, options, None)
    }

    /// Degraded mode over a primary that could not be reached at startup.
    pub fn start_down(
        primary: P,
        fallback: F,
        ctx: SupervisorContext,
        options: ThrottleFailoverOptions,
        error: &Error,
    ) -> Result<Self, Error> {
        Self::build(primary, fallback, ctx, options, Some(error))
    }

    fn build(
        primary: P,
        fallback: F,
        ctx: SupervisorContext,
        options: ThrottleFailoverOptions,
        down: Option<&Error>,
    ) -> Result<Self, Error> {
        Ok(ThrottleFailover {
            router: DegradedRouter::new(
                primary,
                fallback,
                ctx,
                |p: P| async move { p.probe().await },
                None,
                down,
            )?,
            options,
        })
    }

    /// The supervisor.
    pub fn supervisor(&self) -> &Supervisor {
        &self.router.supervisor
    }

    /// The fallback.
    pub fn fallback(&self) -> &F {
        &self.router.fallback
    }
}

impl<P: ThrottleBackend, F: ThrottleBackend> ThrottleBackend for ThrottleFailover<P, F> {
    async fn acquire(
        &self,
        scope: &Scope,
        key: &str,
        policy: &ScaledPolicy,
    ) -> Result<Tagged<(RawDecision, u64)>, Error> {
        let local = policy.scaled(self.options.degraded_share);
        self.router
            .route(
                "throttle.acquire",
                |p| async move { p.acquire(scope, key, policy).await },
                |f, _| async move { f.acquire(scope, key, &local).await },
            )
            .await
    }
    async fn penalize(&self, scope: &Scope, key: &str, d: Duration) -> Result<Tagged<SystemTime>, Error> {
        self.router
            .route(
                "throttle.penalize",
                |p| async move { p.penalize(scope, key, d).await },
                |f, _| async move { f.penalize(scope, key, d).await },
            )
            .await
    }
    async fn clear_penalty(&self, scope: &Scope, key: &str) -> Result<Tagged<bool>, Error> {
        self.router
            .route(
                "throttle.clear_penalty",
                |p| async move { p.clear_penalty(scope, key).await },
                |f, _| async move { f.clear_penalty(scope, key).await },
            )
            .await
    }
    async fn inspect(&self, scope: &Scope, key: &str) -> Result<Tagged<KeyState>, Error> {
        self.router
            .route(
                "throttle.inspect",
                |p| async move { p.inspect(scope, key).await },
                |f, _| async move { f.inspect(scope, key).await },
            )
            .await
    }
    async fn limit(&self, scope: &Scope, key: &str, rate: &Rate) -> Result<Tagged<RateDecision>, Error> {
        let local = rate.scaled(self.options.degraded_share);
        self.router
            .route(
                "throttle.limit",
                |p| async move { p.limit(scope, key, rate).await },
                |f, _| async move { f.limit(scope, key, &local).await },
            )
            .await
    }
    async fn probe(&self) -> Result<(), Error> {
        self.router.primary.probe().await
    }
    fn status(&self) -> BackendStatus {
        BackendStatus::new(Mode::ExplicitDegraded, self.router.supervisor.health())
    }
}

/// The throttle contract in strict mode: [`Strict`] over a primary, with outages reported
/// once (`UnavailableAtRuntime`, then `Recovered`) and every error returned.
pub type StrictThrottle<P> = Strict<P>;

/// Wraps a connected primary in strict mode.
pub fn strict<P: ThrottleBackend>(primary: P, ctx: SupervisorContext) -> Result<StrictThrottle<P>, Error> {
    Strict::with_probe(primary, ctx, |p: P| async move { p.probe().await })
}

impl<P: ThrottleBackend> ThrottleBackend for Strict<P> {
    async fn acquire(
        &self,
        scope: &Scope,
        key: &str,
        policy: &ScaledPolicy,
    ) -> Result<Tagged<(RawDecision, u64)>, Error> {
        self.watch("throttle.acquire", self.primary().acquire(scope, key, policy).await)
    }
    async fn penalize(&self, scope: &Scope, key: &str, d: Duration) -> Result<Tagged<SystemTime>, Error> {
        self.watch("throttle.penalize", self.primary().penalize(scope, key, d).await)
    }
    async fn clear_penalty(&self, scope: &Scope, key: &str) -> Result<Tagged<bool>, Error> {
        self.watch("throttle.clear_penalty", self.primary().clear_penalty(scope, key).await)
    }
    async fn inspect(&self, scope: &Scope, key: &str) -> Result<Tagged<KeyState>, Error> {
        self.watch("throttle.inspect", self.primary().inspect(scope, key).await)
    }
    async fn limit(&self, scope: &Scope, key: &str, rate: &Rate) -> Result<Tagged<RateDecision>, Error> {
        self.watch("throttle.limit", self.primary().limit(scope, key, rate).await)
    }
    async fn probe(&self) -> Result<(), Error> {
        self.primary().probe().await
    }
    fn status(&self) -> BackendStatus {
        self.strict_status()
    }
}
