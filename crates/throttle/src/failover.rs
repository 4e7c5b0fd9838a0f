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
//!
//! Redis never learns of the local permits, so after recovery the fleet may hold more
//! than a cap — until they end. To bound that, a permit granted while degraded lives at
//! most `degraded_lease_cap` (default 30 s): its lease TTL is capped, an extension is
//! capped too, and once the outage it was granted in is over it is not extended at
//! all (`extend` answers `None`: the holder re-acquires through Redis). The bound: at
//! most `degraded_lease_cap` after `Recovered`, every slot is Redis's again.
//!
//! Fencing tokens compare only within one backend: a token from the local fallback
//! (the node's clock) and one from Redis (the server's) are not ordered with each
//! other. A resource that checks fencing tokens must see tokens from one backend.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use palisade_cache_core::Strict;
use palisade_cache_core::cache::BackendStatus;
use palisade_cache_core::failover::DegradedRouter;
use palisade_cache_core::supervisor::{Supervisor, SupervisorContext};
use palisade_cache_core::{BoxFuture, Error, Mode, Tagged};

use crate::model::{KeyState, LeaseOps, Rate, RateDecision, RawDecision, ScaledPolicy, Scope, ThrottleBackend};

/// Options of degraded mode.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct ThrottleFailoverOptions {
    /// The share of every cap and rate one node may use while degraded (default 0.25:
    /// a fleet of four). Set it to 1 / number of nodes.
    pub degraded_share: f64,
    /// The longest a permit granted while degraded lives (default 30 s); see the
    /// module docs.
    pub degraded_lease_cap: Duration,
}

impl Default for ThrottleFailoverOptions {
    fn default() -> Self {
        ThrottleFailoverOptions {
            degraded_share: 0.25,
            degraded_lease_cap: Duration::from_secs(30),
        }
    }
}

impl ThrottleFailoverOptions {
    /// Sets `degraded_share` (clamped to `[0, 1]`).
    pub fn with_degraded_share(mut self, share: f64) -> Self {
        self.degraded_share = share.clamp(0.0, 1.0);
        self
    }

    /// Sets `degraded_lease_cap` (kept within 1 ms and one day).
    pub fn with_degraded_lease_cap(mut self, cap: Duration) -> Self {
        self.degraded_lease_cap = cap.clamp(crate::MIN_DURATION, crate::MAX_LEASE);
        self
    }
}

/// The lease operations of a permit granted while degraded: extensions capped, and
/// refused once the outage it was granted in is over.
struct DegradedLeases {
    inner: Arc<dyn LeaseOps>,
    supervisor: Arc<Supervisor>,
    outage: u64,
    cap: Duration,
}

impl LeaseOps for DegradedLeases {
    fn release(&self, key: &str, lease: u64) -> BoxFuture<'_, Result<Option<SystemTime>, Error>> {
        self.inner.release(key, lease)
    }

    fn extend(&self, key: &str, lease: u64, by: Duration) -> BoxFuture<'_, Result<Option<SystemTime>, Error>> {
        if self.supervisor.is_healthy() || self.supervisor.outage_number() != self.outage {
            return Box::pin(std::future::ready(Ok(None)));
        }
        self.inner.extend(key, lease, by.min(self.cap))
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
        let mut local = policy.scaled(self.options.degraded_share);
        local.lease_ttl = local.lease_ttl.min(self.options.degraded_lease_cap);
        let supervisor = Arc::clone(&self.router.supervisor);
        let cap = self.options.degraded_lease_cap;
        self.router
            .route(
                "throttle.acquire",
                |p| async move { p.acquire(scope, key, policy).await },
                |f, outage| async move {
                    let t = f.acquire(scope, key, &local).await?;
                    Ok(t.map(|(decision, reclaimed)| {
                        let decision = match decision {
                            RawDecision::Acquired(lease, ops) => {
                                let ops: Arc<dyn LeaseOps> = Arc::new(DegradedLeases {
                                    inner: ops,
                                    supervisor,
                                    outage,
                                    cap,
                                });
                                RawDecision::Acquired(lease, ops)
                            }
                            other => other,
                        };
                        (decision, reclaimed)
                    }))
                },
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
