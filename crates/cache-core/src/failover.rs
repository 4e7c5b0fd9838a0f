//! The cache in strict mode ([`Strict`]) and in degraded mode ([`Failover`]).
//!
//! Both watch the primary with a [`Supervisor`]. [`Strict`] has no fallback at all — it
//! cannot touch a local map because it has none — and only reports outages.
//! [`Failover`] serves from its fallback while the primary is down.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::cache::{BackendStatus, CacheBackend};
use crate::supervisor::{OnRecover, RecoveryContext, Supervisor, SupervisorContext};
use crate::{BoxFuture, Error, Mode, Provenance, Tagged};

/// Reports `r`'s error, if any, to `supervisor` as a failure of `op`, and returns `r`:
/// what every strict-mode wrapper does with each call.
pub fn watched<T>(supervisor: &Supervisor, op: &'static str, r: Result<T, Error>) -> Result<T, Error> {
    if let Err(e) = &r {
        supervisor.report(op, e);
    }
    r
}

/// The fallback key of `key` during outage number `outage`: `<outage>#<key>`. Each
/// outage has its own keys, so an entry written by a call that raced the swap back is
/// never read in a later outage.
pub fn outage_key(outage: u64, key: &str) -> String {
    format!("{outage}#{key}")
}

/// The outage number and the original key of a fallback key built by [`outage_key`].
pub fn split_outage_key(key: &str) -> Option<(u64, &str)> {
    let (n, rest) = key.split_once('#')?;
    Some((n.parse().ok()?, rest))
}

/// The routing core of every degraded-mode wrapper (cache, job store, throttle).
///
/// # Behavior
///
/// - While the supervisor says healthy, [`DegradedRouter::route`] runs the primary
///   operation and returns its answer as is, errors included — except an unavailable
///   error (or timeout), which marks the primary down at once and sends the same call
///   to the fallback.
/// - While down, calls go straight to the fallback (the dead primary is not hammered),
///   with the current outage number, and their answers are tagged
///   [`Provenance::LocalDegraded`] and counted as served degraded.
/// - A call served by the fallback holds the supervisor's switch gate shared; a
///   recovery takes it exclusively while it empties the fallback, then hands the outage
///   over to the primary ([`Handover`](crate::supervisor::Handover)): from then on
///   every call of that outage goes to the primary — a call on a key still on its way
///   there waits for it — so nothing written while degraded is left behind for a later
///   outage. A call that waited for the switch after failing on the primary returns
///   that failure.
#[derive(Clone)]
pub struct DegradedRouter<P, F> {
    /// The shared store.
    pub primary: P,
    /// The local fallback.
    pub fallback: F,
    /// Decides where calls go.
    pub supervisor: Arc<Supervisor>,
}

impl<P: Clone + Send + Sync + 'static, F: Clone> DegradedRouter<P, F> {
    /// The router of a degraded-mode wrapper: forces `ctx.mode` to degraded and builds
    /// the supervisor that probes `primary` with `probe` (up at first, or already down
    /// when `down` is the startup error), running `on_recover` before each swap back.
    pub fn new<Pr, Fut>(
        primary: P,
        fallback: F,
        mut ctx: SupervisorContext,
        probe: Pr,
        on_recover: Option<Box<dyn OnRecover>>,
        down: Option<&Error>,
    ) -> Result<Self, Error>
    where
        Pr: Fn(P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        ctx.mode = Mode::ExplicitDegraded;
        let supervisor = Supervisor::watching(ctx, &primary, probe, on_recover, down)?;
        Ok(DegradedRouter {
            primary,
            fallback,
            supervisor: Arc::new(supervisor),
        })
    }

    /// Routes one call; see the type's `# Behavior`.
    pub async fn route<T, PF, FF>(
        &self,
        op: &'static str,
        primary: impl FnOnce(P) -> PF,
        fallback: impl FnOnce(F, u64) -> FF,
    ) -> Result<Tagged<T>, Error>
    where
        PF: Future<Output = Result<Tagged<T>, Error>>,
        FF: Future<Output = Result<Tagged<T>, Error>>,
    {
        self.route_keyed(op, None, primary, fallback).await
    }

    /// Routes one call on `key`: as [`DegradedRouter::route`], and during a hand-over a
    /// call on a key still on its way to the primary waits for it first.
    pub async fn route_keyed<T, PF, FF>(
        &self,
        op: &'static str,
        key: Option<&str>,
        primary: impl FnOnce(P) -> PF,
        fallback: impl FnOnce(F, u64) -> FF,
    ) -> Result<Tagged<T>, Error>
    where
        PF: Future<Output = Result<Tagged<T>, Error>>,
        FF: Future<Output = Result<Tagged<T>, Error>>,
    {
        let sup = &self.supervisor;
        let mut primary = Some(primary);
        let mut failed = None;
        if sup.is_healthy() {
            if let Some(call) = primary.take() {
                match call(self.primary.clone()).await {
                    Err(e) if e.is_unavailable() => {
                        sup.report(op, &e);
                        failed = Some(e);
                    }
                    other => return other,
                }
            }
        }
        let outage = sup.outage_number();
        if !sup.is_healthy() && !sup.handover().active(outage) {
            let gate = sup.switch_gate().read().await;
            if !sup.is_healthy() && !sup.handover().active(outage) {
                sup.note_served_degraded();
                let t = fallback(self.fallback.clone(), outage).await?;
                drop(gate);
                return Ok(Tagged::new(t.value, Provenance::LocalDegraded));
            }
        }
        // The primary serves: healthy again, or this outage is being handed over to it
        // and the fallback must take no more writes.
        if let Some(e) = failed {
            return Err(e);
        }
        if let Some(k) = key {
            sup.handover().wait(k, sup.handover_wait()).await;
        }
        let Some(call) = primary else {
            return Err(Error::config("a degraded call lost its primary operation"));
        };
        let r = call(self.primary.clone()).await;
        if let Err(e) = &r {
            sup.report(op, e);
        }
        r
    }
}

/// A primary in strict mode — for every contract: every call goes to the primary, every
/// failure is returned to the caller, and outages are reported. The cache, job-store
/// and throttle contracts each implement their trait for it.
///
/// # Behavior
///
/// - Answers and errors are the primary's, unchanged; no local map exists.
/// - The first unavailable error of an outage emits one
///   [`UnavailableAtRuntime`](crate::EventKind::UnavailableAtRuntime); a probe emits
///   [`Recovered`](crate::EventKind::Recovered) when the primary answers again.
/// - Calls keep going to the primary during an outage (each bounded by its deadline),
///   so service resumes with the first call after Redis is back.
#[derive(Clone)]
pub struct Strict<P> {
    primary: P,
    supervisor: Arc<Supervisor>,
}

impl<P: Clone + Send + Sync + 'static> Strict<P> {
    /// Wraps a connected primary whose health `probe` checks (e.g. `PING`). `ctx.mode`
    /// is forced to strict. Each contract crate has a shorter constructor for its own
    /// backends ([`Strict::new`] for caches).
    pub fn with_probe<F, Fut>(primary: P, mut ctx: SupervisorContext, probe: F) -> Result<Self, Error>
    where
        F: Fn(P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        ctx.mode = Mode::StrictDistributed;
        let supervisor = Supervisor::watching(ctx, &primary, probe, None, None)?;
        Ok(Strict {
            primary,
            supervisor: Arc::new(supervisor),
        })
    }

    /// The supervisor.
    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// The primary.
    pub fn primary(&self) -> &P {
        &self.primary
    }

    /// Reports `r`'s error, if any, as a failure of `op`, and returns `r` (for the
    /// contract trait implementations).
    pub fn watch<T>(&self, op: &'static str, r: Result<T, Error>) -> Result<T, Error> {
        watched(&self.supervisor, op, r)
    }

    /// Strict mode and the primary's health.
    pub fn strict_status(&self) -> BackendStatus {
        BackendStatus::new(Mode::StrictDistributed, self.supervisor.health())
    }
}

impl<P: CacheBackend> Strict<P> {
    /// Wraps a connected cache primary (probed with its `probe`).
    pub fn new(primary: P, ctx: SupervisorContext) -> Result<Self, Error> {
        Self::with_probe(primary, ctx, |p: P| async move { p.probe().await })
    }
}

impl<P: CacheBackend> CacheBackend for Strict<P> {
    async fn get(&self, key: &str) -> Result<Tagged<Option<bytes::Bytes>>, Error> {
        self.watch("cache.get", self.primary.get(key).await)
    }
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<Tagged<()>, Error> {
        self.watch("cache.set", self.primary.set(key, value, ttl).await)
    }
    async fn set_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> Result<Tagged<bool>, Error> {
        self.watch("cache.set_if_absent", self.primary.set_if_absent(key, value, ttl).await)
    }
    async fn delete(&self, key: &str) -> Result<Tagged<bool>, Error> {
        self.watch("cache.delete", self.primary.delete(key).await)
    }
    async fn contains(&self, key: &str) -> Result<Tagged<bool>, Error> {
        self.watch("cache.contains", self.primary.contains(key).await)
    }
    async fn clear(&self, key_prefix: &str) -> Result<Tagged<u64>, Error> {
        self.watch("cache.clear", self.primary.clear(key_prefix).await)
    }
    async fn probe(&self) -> Result<(), Error> {
        self.primary.probe().await
    }
    fn status(&self) -> BackendStatus {
        self.strict_status()
    }
}

/// Options of degraded mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailoverOptions {
    /// The longest TTL a value written to the fallback may have (default 60 s): what is
    /// written while degraded goes stale quickly.
    pub degraded_ttl_cap: Duration,
}

impl Default for FailoverOptions {
    fn default() -> Self {
        FailoverOptions {
            degraded_ttl_cap: Duration::from_secs(60),
        }
    }
}

impl FailoverOptions {
    /// Sets `degraded_ttl_cap`.
    pub fn with_degraded_ttl_cap(mut self, cap: Duration) -> Self {
        self.degraded_ttl_cap = cap;
        self
    }
}

/// Degraded mode: the primary while it answers, an announced local fallback while it
/// does not.
///
/// # Behavior
///
/// - While healthy every call goes to the primary and its answer is returned as is.
/// - An unavailable error (or timeout) marks the primary down **at once** (one
///   [`Degraded`](crate::EventKind::Degraded) event, however many calls fail) and the
///   same call is served by the fallback; so are all later calls, without touching the
///   primary, until a probe succeeds.
/// - Answers served by the fallback are tagged [`Provenance::LocalDegraded`]; values
///   written there have their TTL capped by [`FailoverOptions::degraded_ttl_cap`].
/// - Errors that are not outages (bad input, codec, error replies) are returned and
///   change nothing.
/// - When a probe confirms the primary is back, every entry written to the fallback
///   is dropped (never replayed over shared state), service returns to the primary,
///   and one [`Recovered`](crate::EventKind::Recovered) event reports the outage
///   length, the calls served degraded and the entries dropped.
/// - Each outage uses its own fallback keys (`<outage>#<key>`), so an entry written by
///   a call that raced the swap back can never be read in a later outage.
/// - A write that timed out is not known to have failed: a paused or overloaded Redis
///   may still apply a command it had received. The call that detects the outage is
///   also written to the fallback, so after recovery Redis may hold that value.
#[derive(Clone)]
pub struct Failover<P, F> {
    router: DegradedRouter<P, F>,
    options: FailoverOptions,
}

struct DropFallback<F>(F);

impl<F: CacheBackend> OnRecover for DropFallback<F> {
    fn on_recover<'a>(&'a self, ctx: &'a RecoveryContext) -> BoxFuture<'a, Result<u64, Error>> {
        Box::pin(async move {
            let _exclusive = ctx.gate.write().await;
            let dropped = match self.0.clear("").await {
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
}

impl<P: CacheBackend, F: CacheBackend> Failover<P, F> {
    /// Degraded mode over a primary that answered at startup. `ctx.mode` is forced to
    /// degraded.
    pub fn new(primary: P, fallback: F, ctx: SupervisorContext, options: FailoverOptions) -> Result<Self, Error> {
        Self::build(primary, fallback, ctx, options, None)
    }

    /// Degraded mode over a primary that could not be reached at startup: emits
    /// [`UnavailableAtStartup`](crate::EventKind::UnavailableAtStartup), serves from
    /// the fallback and probes the primary until it answers.
    pub fn start_down(
        primary: P,
        fallback: F,
        ctx: SupervisorContext,
        options: FailoverOptions,
        error: &Error,
    ) -> Result<Self, Error> {
        Self::build(primary, fallback, ctx, options, Some(error))
    }

    fn build(
        primary: P,
        fallback: F,
        ctx: SupervisorContext,
        options: FailoverOptions,
        down: Option<&Error>,
    ) -> Result<Self, Error> {
        let hook: Option<Box<dyn OnRecover>> = Some(Box::new(DropFallback(fallback.clone())));
        Ok(Failover {
            router: DegradedRouter::new(
                primary,
                fallback,
                ctx,
                |p: P| async move { p.probe().await },
                hook,
                down,
            )?,
            options,
        })
    }

    /// The supervisor.
    pub fn supervisor(&self) -> &Supervisor {
        &self.router.supervisor
    }

    /// The primary.
    pub fn primary(&self) -> &P {
        &self.router.primary
    }

    /// The fallback.
    pub fn fallback(&self) -> &F {
        &self.router.fallback
    }
}

impl<P: CacheBackend, F: CacheBackend> CacheBackend for Failover<P, F> {
    async fn get(&self, key: &str) -> Result<Tagged<Option<bytes::Bytes>>, Error> {
        self.router
            .route(
                "cache.get",
                |p| async move { p.get(key).await },
                |f, n| async move { f.get(&outage_key(n, key)).await },
            )
            .await
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<Tagged<()>, Error> {
        let capped = ttl.min(self.options.degraded_ttl_cap);
        self.router
            .route(
                "cache.set",
                |p| async move { p.set(key, value, ttl).await },
                |f, n| async move { f.set(&outage_key(n, key), value, capped).await },
            )
            .await
    }

    async fn set_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> Result<Tagged<bool>, Error> {
        let capped = ttl.min(self.options.degraded_ttl_cap);
        self.router
            .route(
                "cache.set_if_absent",
                |p| async move { p.set_if_absent(key, value, ttl).await },
                |f, n| async move { f.set_if_absent(&outage_key(n, key), value, capped).await },
            )
            .await
    }

    async fn delete(&self, key: &str) -> Result<Tagged<bool>, Error> {
        self.router
            .route(
                "cache.delete",
                |p| async move { p.delete(key).await },
                |f, n| async move { f.delete(&outage_key(n, key)).await },
            )
            .await
    }

    async fn contains(&self, key: &str) -> Result<Tagged<bool>, Error> {
        self.router
            .route(
                "cache.contains",
                |p| async move { p.contains(key).await },
                |f, n| async move { f.contains(&outage_key(n, key)).await },
            )
            .await
    }

    async fn clear(&self, key_prefix: &str) -> Result<Tagged<u64>, Error> {
        self.router
            .route(
                "cache.clear",
                |p| async move { p.clear(key_prefix).await },
                |f, n| async move { f.clear(&outage_key(n, key_prefix)).await },
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
