//! How every contract talks to its storage: operations as values, run by backends.
//!
//! Each contract crate defines its operations as small owned structs (the cache's
//! [`Get`](crate::cache::op::Get), the job store's `Create`, the throttle's `Acquire`…),
//! each implementing [`Op`]. A backend implements [`Backend`] once (probe and status)
//! and [`Run<O>`] for every operation of the contracts it serves. The contract traits
//! (`CacheBackend`, `JobBackend`, `ThrottleBackend`) are only names for "runs all of
//! this contract's operations".
//!
//! Because an operation is a value, everything that wraps a backend is written once,
//! for every operation of every contract, in the spirit of tower's `Service<Request>`:
//!
//! | wrapper | what it adds |
//! |---|---|
//! | [`Strict`] | strict mode: errors returned, outages reported |
//! | [`Failover`] | degraded mode: an announced fallback while the primary is down |
//! | [`ByMode`] | one type whatever the mode picked at startup (like tower's `Either`) |
//! | [`Never`] | a backend that is compiled out |
//!
//! What an operation does on the fallback of degraded mode is the operation's own
//! business ([`Op::degraded`]): the cache moves it to the outage's keys and caps its
//! TTL, the throttle scales its policy to the node's share. What the fallback does
//! when the primary comes back is the fallback's ([`Fallback::recover`]): the local
//! cache drops its entries, the local job store replays its records.
//!
//! ## Adding an operation
//!
//! See `CONTRIBUTING.md`: the operation struct and its `Op` impl (the contract crate),
//! `Run<NewOp>` in each backend, the method on the user-facing wrapper, and the new
//! bound in the contract's alias trait. Strict, degraded and mode dispatch need no
//! change.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::cache::BackendStatus;
use crate::supervisor::{OnRecover, RecoveryContext, Supervisor, SupervisorContext};
use crate::{BoxFuture, Error, Mode, Provenance, Tagged};

/// One operation of a contract, as a value: what it is called, and what it becomes on
/// the fallback of degraded mode.
pub trait Op: Send + Sync + Sized + 'static {
    /// What the operation answers (tagged with its provenance by the backend).
    type Output: Send + 'static;
    /// The name reported with an outage (`cache.get`, `jobs.create`, …).
    const NAME: &'static str;
    /// The same operation as the fallback runs it during outage `ctx.outage`.
    fn degraded(&self, ctx: &FallbackCtx<'_>) -> Self;
    /// What the fallback's answer becomes before it reaches the caller (default: as
    /// is). The throttle binds a degraded permit to its outage here.
    fn degraded_output(output: Self::Output, _ctx: &FallbackCtx<'_>) -> Self::Output {
        output
    }
    /// The storage key of a keyed operation: during a hand-over, a call on a key still
    /// on its way to the primary waits for it first.
    fn handover_key(&self) -> Option<&str> {
        None
    }
}

/// What every backend has, whatever it stores.
pub trait Backend: Clone + Send + Sync + 'static {
    /// Checks that the store answers (Redis: `PING`).
    fn probe(&self) -> impl Future<Output = Result<(), Error>> + Send;
    /// The mode and health.
    fn status(&self) -> BackendStatus;
    /// Whether the store serves `slot` right now, decided without I/O (a Redis Cluster:
    /// the slot's master is known and not failing). Only asked for the slots
    /// [`Run::slot`] names. Default: yes.
    fn reaches(&self, _slot: u16) -> bool {
        true
    }
    /// Resolves at the next change of the store's topology (a promoted replica, a
    /// resharding): a supervisor then probes at once instead of at its next backoff
    /// step. Default: never.
    fn topology_changed(&self) -> BoxFuture<'static, ()> {
        Box::pin(std::future::pending())
    }
}

/// A backend that runs operation `O`.
pub trait Run<O: Op>: Backend {
    /// Runs `op`. A backend that cannot reach its store returns
    /// [`Error::Unavailable`] or [`Error::Timeout`], within its deadline.
    fn run(&self, op: &O) -> impl Future<Output = Result<Tagged<O::Output>, Error>> + Send;
    /// The slot of a partitioned store that `op` runs on (a Redis Cluster: the hash slot
    /// of its key), or `None` when the store is one part or `op` spans them all. In
    /// degraded mode an outage then moves to the fallback only the slots found
    /// unreachable ([`Failover`]). Default: `None`.
    fn slot(&self, _op: &O) -> Option<u16> {
        None
    }
}

/// What [`Op::degraded`] knows about the outage it runs in.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct FallbackCtx<'a> {
    /// The outage number (see [`outage_key`]).
    pub outage: u64,
    /// The degraded-mode options.
    pub options: &'a FailoverOptions,
    /// The supervisor deciding where calls go.
    pub supervisor: &'a Arc<Supervisor>,
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

/// A primary in strict mode — for every operation of every contract: every call goes to
/// the primary, every failure is returned to the caller, and outages are reported.
///
/// # Behavior
///
/// - Answers and errors are the primary's, unchanged; no local map exists.
/// - The first unavailable error of an outage emits one
///   [`UnavailableAtRuntime`](crate::EventKind::UnavailableAtRuntime); a probe emits
///   [`Recovered`](crate::EventKind::Recovered) when the primary answers again.
/// - Calls keep going to the primary during an outage (each bounded by its deadline),
///   so service resumes with the first call after Redis is back. On a partitioned
///   primary (a Redis Cluster with one master down) calls on the other slots succeed
///   throughout; the outage (one `UnavailableAtRuntime`, one `Recovered`) lasts until
///   every slot is served again, and a topology change starts a probe at once.
#[derive(Clone)]
pub struct Strict<P> {
    primary: P,
    supervisor: Arc<Supervisor>,
}

impl<P: Backend> Strict<P> {
    /// Wraps a connected primary, probed with its [`Backend::probe`]. `ctx.mode` is
    /// forced to strict.
    pub fn new(primary: P, mut ctx: SupervisorContext) -> Result<Self, Error> {
        ctx.mode = Mode::StrictDistributed;
        let supervisor = Supervisor::watching(ctx, &primary, |p: P| async move { p.probe().await }, None, None)?;
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
}

/// A supervised wrapper's [`Backend`]: its probe, reach and topology are its
/// primary's; its status is `$mode` with the supervisor's health.
macro_rules! supervised_backend {
    ($ty:ty, $mode:expr, [$($g:tt)*]) => {
        impl<$($g)*> Backend for $ty {
            async fn probe(&self) -> Result<(), Error> {
                self.primary.probe().await
            }
            fn status(&self) -> BackendStatus {
                BackendStatus::new($mode, self.supervisor.health())
            }
            fn reaches(&self, slot: u16) -> bool {
                self.primary.reaches(slot)
            }
            fn topology_changed(&self) -> BoxFuture<'static, ()> {
                self.primary.topology_changed()
            }
        }
    };
}

supervised_backend!(Strict<P>, Mode::StrictDistributed, [P: Backend]);

impl<P: Run<O>, O: Op> Run<O> for Strict<P> {
    async fn run(&self, op: &O) -> Result<Tagged<O::Output>, Error> {
        let r = self.primary.run(op).await;
        if let Err(e) = &r {
            self.supervisor.report(O::NAME, e);
        }
        r
    }
    fn slot(&self, op: &O) -> Option<u16> {
        self.primary.slot(op)
    }
}

/// Options of degraded mode, for every contract.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct FailoverOptions {
    /// The longest TTL a cache entry written to the fallback may have (default 60 s):
    /// what is written while degraded goes stale quickly.
    pub degraded_ttl_cap: Duration,
    /// The share of every throttle cap and rate one node may use while degraded
    /// (default 0.25: a fleet of four). Set it to 1 / number of nodes.
    pub degraded_share: f64,
    /// The longest a throttle permit granted while degraded lives (default 30 s).
    pub degraded_lease_cap: Duration,
}

impl Default for FailoverOptions {
    fn default() -> Self {
        FailoverOptions {
            degraded_ttl_cap: Duration::from_secs(60),
            degraded_share: 0.25,
            degraded_lease_cap: Duration::from_secs(30),
        }
    }
}

impl FailoverOptions {
    /// Sets `degraded_ttl_cap`.
    pub fn with_degraded_ttl_cap(mut self, cap: Duration) -> Self {
        self.degraded_ttl_cap = cap;
        self
    }

    /// Sets `degraded_share` (clamped to `[0, 1]`).
    pub fn with_degraded_share(mut self, share: f64) -> Self {
        self.degraded_share = share.clamp(0.0, 1.0);
        self
    }

    /// Sets `degraded_lease_cap` (kept within 1 ms and [`MAX_LEASE`](crate::limits::MAX_LEASE)).
    pub fn with_degraded_lease_cap(mut self, cap: Duration) -> Self {
        self.degraded_lease_cap = cap.clamp(crate::limits::MIN_DURATION, crate::limits::MAX_LEASE);
        self
    }
}

/// A backend that can stand in for primary `P` while it is down, and knows what to do
/// with what it holds when `P` is back.
pub trait Fallback<P>: Backend {
    /// Runs once a probe has confirmed that `primary` is back, before the outage ends.
    /// The default holds no state worth handing over: it takes the switch gate (no
    /// call is served by the fallback any more) and begins an empty hand-over. See
    /// [`OnRecover`] for the protocol and the meaning of the result.
    fn recover<'a>(&'a self, primary: &'a P, ctx: &'a RecoveryContext) -> BoxFuture<'a, Result<u64, Error>> {
        let _ = primary;
        Box::pin(async move {
            let _exclusive = ctx.gate.write().await;
            ctx.handover.begin(ctx.outage, []);
            Ok(0)
        })
    }
}

struct Recover<P, F> {
    primary: P,
    fallback: F,
}

impl<P: Backend, F: Fallback<P>> OnRecover for Recover<P, F> {
    fn on_recover<'a>(&'a self, ctx: &'a RecoveryContext) -> BoxFuture<'a, Result<u64, Error>> {
        self.fallback.recover(&self.primary, ctx)
    }
}

/// Degraded mode, for every operation of every contract: the primary while it answers,
/// an announced local fallback while it does not.
///
/// # Behavior
///
/// - While the supervisor says healthy, every call goes to the primary and its answer
///   is returned as is, errors included — except an unavailable error (or timeout),
///   which marks the primary down **at once** (one
///   [`Degraded`](crate::EventKind::Degraded) event, however many calls fail) and sends
///   the same call to the fallback.
/// - While down, calls go straight to the fallback (the dead primary is not hammered),
///   as [`Op::degraded`] makes them for the current outage, and their answers are
///   tagged [`Provenance::LocalDegraded`] and counted as served degraded.
/// - A partitioned primary (one whose [`Run::slot`] names a slot: a Redis Cluster)
///   falls back per slot: while down, a call whose slot has not gone to the fallback in
///   this outage and which the primary [`reaches`](Backend::reaches) still goes to the
///   primary, answered [`Provenance::Distributed`]. A slot goes to the fallback the
///   first time a call on it fails or finds it unreachable, and stays there until the
///   outage is handed over, so what the fallback holds for it is never shadowed by the
///   primary. The outage is still one `Degraded` and one `Recovered` event, and the
///   probe ends it only when every slot is served.
/// - A [topology change](Backend::topology_changed) of the primary (a promoted
///   replica) starts a probe at once.
/// - Errors that are not outages (bad input, codec, error replies) are returned and
///   change nothing.
/// - When a probe confirms the primary is back, the fallback's
///   [`Fallback::recover`] runs (the cache drops its entries, the job store replays its
///   records) and one [`Recovered`](crate::EventKind::Recovered) event reports the
///   outage length, the calls served degraded and the entries handed over.
/// - A call served by the fallback holds the supervisor's switch gate shared; a
///   recovery takes it exclusively while it empties the fallback, then hands the outage
///   over to the primary ([`Handover`](crate::supervisor::Handover)): from then on
///   every call of that outage goes to the primary — a call on a key still on its way
///   there waits for it, at most
///   [`handover_wait`](crate::SupervisorConfig::handover_wait), and then fails with
///   [`Error::Timeout`] having written nothing — so nothing written while degraded is
///   left behind for a later outage. A call that waited for the switch after failing
///   on the primary returns that failure.
/// - A write that timed out is not known to have failed: a paused or overloaded Redis
///   may still apply a command it had received. The call that detects the outage is
///   also served by the fallback, so after recovery Redis may hold that value.
#[derive(Clone)]
pub struct Failover<P, F> {
    primary: P,
    fallback: F,
    supervisor: Arc<Supervisor>,
    options: FailoverOptions,
}

impl<P: Backend, F: Fallback<P>> Failover<P, F> {
    /// Degraded mode over `primary`, with `fallback`. `ctx.mode` is forced to degraded.
    /// `down` is the startup error of a primary that could not be reached: then it
    /// emits [`UnavailableAtStartup`](crate::EventKind::UnavailableAtStartup), serves
    /// from the fallback and probes the primary until it answers.
    pub fn new(
        primary: P,
        fallback: F,
        mut ctx: SupervisorContext,
        options: FailoverOptions,
        down: Option<&Error>,
    ) -> Result<Self, Error> {
        ctx.mode = Mode::ExplicitDegraded;
        let hook: Box<dyn OnRecover> = Box::new(Recover {
            primary: primary.clone(),
            fallback: fallback.clone(),
        });
        let probe = |p: P| async move { p.probe().await };
        let supervisor = Supervisor::watching(ctx, &primary, probe, Some(hook), down)?;
        Ok(Failover {
            primary,
            fallback,
            supervisor: Arc::new(supervisor),
            options,
        })
    }
}

impl<P, F> Failover<P, F> {
    /// The supervisor.
    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// The primary.
    pub fn primary(&self) -> &P {
        &self.primary
    }

    /// The fallback.
    pub fn fallback(&self) -> &F {
        &self.fallback
    }

    /// The options.
    pub fn options(&self) -> &FailoverOptions {
        &self.options
    }
}

supervised_backend!(Failover<P, F>, Mode::ExplicitDegraded, [P: Backend, F: Backend]);

impl<P: Run<O>, F: Run<O>, O: Op> Run<O> for Failover<P, F> {
    async fn run(&self, op: &O) -> Result<Tagged<O::Output>, Error> {
        let sup = &self.supervisor;
        let mut failed = None;
        if sup.is_healthy() {
            match self.primary.run(op).await {
                Err(e) if e.is_unavailable() => {
                    sup.report(O::NAME, &e);
                    failed = Some(e);
                }
                other => return other,
            }
        }
        // Only now: a healthy call never needs its slot (hashing a key, or building a
        // throttle key, on every call).
        let slot = self.primary.slot(op);
        let outage = sup.outage_number();
        if !sup.is_healthy() && !sup.handover().active(outage) {
            // A partitioned store: a slot that has not failed in this outage and whose
            // part still answers stays on the primary. A slot leaves it the first time
            // a call finds it unreachable, and stays on the fallback until the outage is
            // handed over: what the fallback holds for it is never shadowed.
            if let Some(slot) = slot {
                if failed.is_none() && !sup.slot_degraded(outage, slot) && self.primary.reaches(slot) {
                    match Box::pin(self.primary.run(op)).await {
                        Err(e) if e.is_unavailable() => {
                            sup.report(O::NAME, &e);
                            failed = Some(e);
                        }
                        other => return other,
                    }
                }
            }
        }
        let outage = sup.outage_number();
        if !sup.is_healthy() && !sup.handover().active(outage) {
            let gate = sup.switch_gate().read().await;
            if !sup.is_healthy() && !sup.handover().active(outage) {
                if let Some(slot) = slot {
                    sup.degrade_slot(outage, slot);
                }
                sup.note_served_degraded();
                let ctx = FallbackCtx {
                    outage,
                    options: &self.options,
                    supervisor: &self.supervisor,
                };
                // Boxed: the rare path must not grow every call's future.
                let degraded = op.degraded(&ctx);
                let t = Box::pin(self.fallback.run(&degraded)).await?;
                drop(gate);
                return Ok(Tagged::new(
                    O::degraded_output(t.value, &ctx),
                    Provenance::LocalDegraded,
                ));
            }
        }
        // The primary serves: healthy again, or this outage is being handed over to it
        // and the fallback must take no more writes.
        if let Some(e) = failed {
            return Err(e);
        }
        if let Some(k) = op.handover_key() {
            let within = sup.handover_wait();
            if !Box::pin(sup.handover().wait(k, within)).await {
                // Sent now, it could act on a record the primary does not have yet
                // (an update lost under the replay); so it fails, having written
                // nothing, within its deadline.
                return Err(Error::Timeout {
                    backend: crate::Endpoint::named("the hand-over to the primary"),
                    op: O::NAME,
                    after: within,
                });
            }
        }
        let r = Box::pin(self.primary.run(op)).await;
        if let Err(e) = &r {
            sup.report(O::NAME, e);
        }
        r
    }
}

/// One backend type whatever the mode picked at startup: local, strict or degraded.
/// Runs every operation its three variants run (like tower's `Either`). A variant that
/// is compiled out is [`Never`].
#[derive(Clone, Debug)]
pub enum ByMode<L, S, D> {
    /// [`Mode::LocalOnly`].
    Local(L),
    /// [`Mode::StrictDistributed`].
    Strict(S),
    /// [`Mode::ExplicitDegraded`].
    Degraded(D),
}

/// `$body` with `$b` bound to whichever backend a [`ByMode`] holds.
macro_rules! each_mode {
    ($self:ident, $b:ident => $body:expr) => {
        match $self {
            ByMode::Local($b) => $body,
            ByMode::Strict($b) => $body,
            ByMode::Degraded($b) => $body,
        }
    };
}

impl<L: Backend, S: Backend, D: Backend> Backend for ByMode<L, S, D> {
    async fn probe(&self) -> Result<(), Error> {
        each_mode!(self, b => b.probe().await)
    }
    fn status(&self) -> BackendStatus {
        each_mode!(self, b => b.status())
    }
    fn reaches(&self, slot: u16) -> bool {
        each_mode!(self, b => b.reaches(slot))
    }
    fn topology_changed(&self) -> BoxFuture<'static, ()> {
        each_mode!(self, b => b.topology_changed())
    }
}

impl<L, S, D> ByMode<L, S, D> {
    /// `local`, `strict` or `degraded`.
    fn mode_name(&self) -> &'static str {
        match self {
            ByMode::Local(_) => "local",
            ByMode::Strict(_) => "strict",
            ByMode::Degraded(_) => "degraded",
        }
    }
}

/// Every operation is traced and measured here, once for every contract and mode
/// (see [`observe`](crate::observe)).
impl<O: Op, L: Run<O>, S: Run<O>, D: Run<O>> Run<O> for ByMode<L, S, D> {
    async fn run(&self, op: &O) -> Result<Tagged<O::Output>, Error> {
        // The span lives from the call to its end (its duration), child of the caller's
        // span; it is not entered around each poll, which would nest one more future
        // type in every caller's (deep) async state machine for no trace a user reads.
        let span = crate::observe::span(O::NAME, self.mode_name());
        let started = crate::observe::timed().then(std::time::Instant::now);
        let result = each_mode!(self, b => b.run(op).await);
        let end = match &result {
            Ok(t) => Ok(t.provenance),
            Err(e) => Err(e.kind()),
        };
        crate::observe::finish(O::NAME, &span, started.map(|s| s.elapsed()), end);
        result
    }
    fn slot(&self, op: &O) -> Option<u16> {
        each_mode!(self, b => b.slot(op))
    }
}

/// A backend that cannot exist: the variant of [`ByMode`] whose backend feature is
/// compiled out. Runs every operation (it is never called).
#[derive(Clone, Copy, Debug)]
pub enum Never {}

impl Backend for Never {
    async fn probe(&self) -> Result<(), Error> {
        match *self {}
    }
    fn status(&self) -> BackendStatus {
        match *self {}
    }
}

impl<O: Op> Run<O> for Never {
    async fn run(&self, _: &O) -> Result<Tagged<O::Output>, Error> {
        match *self {}
    }
}

impl<P> Fallback<P> for Never {}

/// Defines an operation on one storage key: the struct (the key first, then its other
/// fields), a `new` constructor, and its [`Op`] impl, whose degraded form runs on the
/// outage's own key ([`outage_key`]) and, optionally, rewrites its other fields.
///
/// ```
/// use std::time::Duration;
/// palisade_cache_core::keyed_op! {
///     /// Stores a value under `key` for `ttl`.
///     Put -> (), "example.put" {
///         /// The encoded key.
///         key,
///         /// The value.
///         value: Vec<u8>,
///         /// Its TTL.
///         ttl: Duration,
///     }
///     handover key
///     degraded |op, ctx| { op.ttl = op.ttl.min(ctx.options.degraded_ttl_cap); }
/// }
/// let op = Put::new("k".to_owned(), b"v".to_vec(), Duration::from_secs(600));
/// assert_eq!(op.ttl, Duration::from_secs(600));
/// ```
#[macro_export]
macro_rules! keyed_op {
    (
        $(#[$doc:meta])*
        $name:ident -> $out:ty, $label:literal {
            $(#[$kdoc:meta])* $key:ident
            $(, $(#[$fdoc:meta])* $field:ident: $ty:ty)* $(,)?
        }
        $(handover $hk:ident)?
        $(degraded |$op:ident, $ctx:ident| $body:block)?
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        #[non_exhaustive]
        pub struct $name {
            $(#[$kdoc])*
            pub $key: String,
            $(
                $(#[$fdoc])*
                pub $field: $ty,
            )*
        }

        impl $name {
            /// The operation.
            pub fn new($key: String $(, $field: $ty)*) -> Self {
                $name { $key $(, $field)* }
            }
        }

        impl $crate::backend::Op for $name {
            type Output = $out;
            const NAME: &'static str = $label;
            fn degraded(&self, ctx: &$crate::backend::FallbackCtx<'_>) -> Self {
                #[allow(unused_mut)]
                let mut op = $name {
                    $key: $crate::backend::outage_key(ctx.outage, &self.$key),
                    $($field: self.$field.clone(),)*
                };
                $({
                    let $op = &mut op;
                    let $ctx = ctx;
                    $body
                })?
                op
            }
            $(
                fn handover_key(&self) -> Option<&str> {
                    Some(&self.$hk)
                }
            )?
        }
    };
}

/// Defines a contract as a name for "a [`Backend`] that runs all of these operations":
/// the trait and its blanket impl, from one list. Adding an operation to a contract
/// adds it here once.
///
/// ```
/// # use palisade_cache_core::cache::op;
/// palisade_cache_core::contract! {
///     /// A read-only cache.
///     pub trait ReadOnlyCache: op::Get, op::Contains;
/// }
/// // Every backend that runs both operations is one (here: the compiled-out backend).
/// fn takes<B: ReadOnlyCache>() {}
/// takes::<palisade_cache_core::Never>();
/// ```
#[macro_export]
macro_rules! contract {
    ($(#[$doc:meta])* pub trait $name:ident: $($op:path),+ $(,)?;) => {
        $(#[$doc])*
        pub trait $name: $crate::Backend $(+ $crate::Run<$op>)+ {}

        impl<B> $name for B where B: $crate::Backend $(+ $crate::Run<$op>)+ {}
    };
}
