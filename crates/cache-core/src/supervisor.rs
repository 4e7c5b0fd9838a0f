//! The health supervisor: is the primary (Redis) up, and when did it come back?
//!
//! Degraded mode asks it where to send each call; strict mode uses it only to report
//! outages. It is the single place that decides transitions, so that each outage gives
//! exactly one "down" event and exactly one [`EventKind::Recovered`].

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::clock::{BoxFuture, SharedClock, with_deadline};
use crate::{Component, Error, ErrorSummary, Event, EventKind, Events, Mode};

scoped_tls::scoped_thread_local! {
    /// The tenant whose call is being polled (see [`on_behalf_of`]).
    static TENANT: Arc<str>
}

/// Runs `call` on behalf of `tenant`: an outage it finds is reported with that tenant
/// in the event ([`Event::tenant`]). The user-facing wrappers run every backend call
/// through it, so one supervisor shared by many tenants names the one that hit it.
///
/// The tenant is visible while `call` is polled, as with a tokio task-local, but it
/// is lent, not cloned: each poll sets a scoped thread-local to a reference and
/// restores the previous one (no reference count, no swap of an owned value). A
/// tokio `task_local!` scope cost a local rate decision about 50 ns of its 273.
pub fn on_behalf_of<'a, F: Future + 'a>(tenant: &'a Arc<str>, call: F) -> impl Future<Output = F::Output> + 'a {
    OnBehalfOf { tenant, call }
}

pin_project_lite::pin_project! {
    /// The future of [`on_behalf_of`].
    struct OnBehalfOf<'a, F> {
        tenant: &'a Arc<str>,
        #[pin]
        call: F,
    }
}

impl<F: Future> Future for OnBehalfOf<'_, F> {
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        let this = self.project();
        let call = this.call;
        TENANT.set(this.tenant, || call.poll(cx))
    }
}

/// Checks whether the primary answers (for Redis: `PING`).
pub trait Probe: Send + Sync + 'static {
    /// One check. The supervisor bounds it by [`SupervisorConfig::probe_deadline`].
    fn probe(&self) -> BoxFuture<'_, Result<(), Error>>;
    /// Resolves when the primary's topology changed: the next probe starts at once.
    /// Default: never.
    fn changed(&self) -> BoxFuture<'static, ()> {
        Box::pin(std::future::pending())
    }
}

/// The probe of a [`Backend`](crate::Backend): `probe(primary)`, woken by its
/// [topology changes](crate::Backend::topology_changed).
struct Watched<P, F> {
    primary: P,
    probe: F,
}

impl<P, F, Fut> Probe for Watched<P, F>
where
    P: crate::Backend,
    F: Fn(P) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Error>> + Send + 'static,
{
    fn probe(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin((self.probe)(self.primary.clone()))
    }
    fn changed(&self) -> BoxFuture<'static, ()> {
        self.primary.topology_changed()
    }
}

impl<F, Fut> Probe for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Error>> + Send + 'static,
{
    fn probe(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(self())
    }
}

/// The hand-over of one outage to the primary, once a probe has confirmed it is back.
///
/// A recovery hook takes the [switch gate](Supervisor::switch_gate) exclusively (no
/// call is then being served by the fallback), takes what the fallback holds, and calls
/// [`Handover::begin`] with the keys still on their way to the primary. From then on
/// degraded routers send every call of that outage to the primary — a call on a pending
/// key first waits until [`Handover::done`] for it — so nothing is written to the
/// fallback after it was emptied, and nothing is left behind for a later outage.
#[derive(Debug, Default)]
pub struct Handover {
    outage: AtomicU64,
    pending: Mutex<std::collections::HashMap<String, Arc<tokio::sync::Notify>>>,
}

impl Handover {
    /// Outage `outage` is handed over; `pending` keys are not in the primary yet.
    pub fn begin(&self, outage: u64, pending: impl IntoIterator<Item = String>) {
        let mut map = lock(&self.pending);
        map.clear();
        map.extend(pending.into_iter().map(|k| (k, Arc::new(tokio::sync::Notify::new()))));
        self.outage.store(outage, Ordering::Release);
    }

    /// `key` has reached the primary (or will not): its waiters go on.
    pub fn done(&self, key: &str) {
        if let Some(n) = lock(&self.pending).remove(key) {
            n.notify_waiters();
        }
    }

    /// The hand-over failed (the primary went away again): calls go back to the
    /// fallback.
    pub fn abort(&self) {
        self.outage.store(0, Ordering::Release);
        for (_, n) in lock(&self.pending).drain() {
            n.notify_waiters();
        }
    }

    /// Whether outage `outage` is being handed over (calls go to the primary).
    pub fn active(&self, outage: u64) -> bool {
        outage != 0 && self.outage.load(Ordering::Acquire) == outage
    }

    /// Waits, at most `within`, until `key` is not pending. `false`: it still was
    /// when `within` ran out.
    pub async fn wait(&self, key: &str, within: Duration) -> bool {
        let notified = {
            let map = lock(&self.pending);
            let Some(n) = map.get(key) else { return true };
            // Created under the lock: a `done` after it wakes it.
            Arc::clone(n)
        };
        let wakeup = notified.notified();
        if !lock(&self.pending).contains_key(key) {
            return true;
        }
        tokio::time::timeout(within, wakeup).await.is_ok()
    }
}

/// What a recovery hook gets: the outage it ends, the switch gate and the hand-over.
#[non_exhaustive]
pub struct RecoveryContext {
    /// The outage number.
    pub outage: u64,
    /// The supervisor's switch gate ([`Supervisor::switch_gate`]).
    pub gate: Arc<tokio::sync::RwLock<()>>,
    /// The hand-over to the primary.
    pub handover: Arc<Handover>,
}

/// Work to do when a probe has confirmed recovery, before the outage ends (the cache
/// drops the entries written while degraded, the job store replays its records). See
/// [`Handover`] for the protocol: take the gate, take the fallback's content, begin the
/// hand-over, then finish it.
pub trait OnRecover: Send + Sync + 'static {
    /// Runs after a successful probe. `Ok(n)`: done, `n` is reported as
    /// `dropped_or_replayed` in [`EventKind::Recovered`]. `Err`: the primary failed
    /// again half-way (the hook has aborted the hand-over and put back what it could
    /// not hand over); the outage goes on and the next successful probe runs it again.
    fn on_recover<'a>(&'a self, ctx: &'a RecoveryContext) -> BoxFuture<'a, Result<u64, Error>>;
}

/// Timing of the supervisor.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct SupervisorConfig {
    /// How long one probe may take before it counts as failed (default 250 ms). For a
    /// probe through a client with its own command deadline, set it above that deadline
    /// (the `palisade` builder uses the command deadline + 200 ms): the client then times
    /// out a queued probe itself, and a probe queued while the client reconnects is
    /// answered as soon as the server is back.
    pub probe_deadline: Duration,
    /// The first wait before a probe, doubled after each failed probe (default 100 ms).
    pub backoff_min: Duration,
    /// The longest wait between probes: the probe period (default 1 s).
    pub backoff_max: Duration,
    /// How long a call on a record still on its way back to the primary waits for it
    /// before it fails with [`Error::Timeout`], having written nothing (default 250 ms;
    /// the `palisade` builder uses the command deadline, so no call outlives it).
    pub handover_wait: Duration,
    /// Each wait is multiplied by a random factor in `[1 - jitter, 1]` (default 0.2), so
    /// that a fleet does not probe in lockstep; jitter only shortens a wait, so probes
    /// never start further apart than the probe period.
    pub jitter: f64,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            probe_deadline: Duration::from_millis(250),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            handover_wait: Duration::from_millis(250),
            jitter: 0.2,
        }
    }
}

impl SupervisorConfig {
    /// Sets the probe period (the longest wait between probes).
    pub fn with_probe_period(mut self, period: Duration) -> Self {
        self.backoff_max = period;
        self.backoff_min = self.backoff_min.min(period);
        self
    }

    /// Sets the deadline of one probe.
    pub fn with_probe_deadline(mut self, deadline: Duration) -> Self {
        self.probe_deadline = deadline;
        self
    }

    /// Sets how long a call waits for its record during a hand-over.
    pub fn with_handover_wait(mut self, wait: Duration) -> Self {
        self.handover_wait = wait;
        self
    }

    /// Sets the first wait before a probe.
    pub fn with_backoff_min(mut self, min: Duration) -> Self {
        self.backoff_min = min;
        self
    }

    /// Sets the jitter factor (clamped to `[0, 1]`; NaN is 0).
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_nan() { 0.0 } else { jitter.clamp(0.0, 1.0) };
        self
    }

    /// The wait before probe number `attempt` (0-based), without jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
        self.backoff_min
            .checked_mul(factor)
            .unwrap_or(self.backoff_max)
            .min(self.backoff_max)
    }

    /// [`SupervisorConfig::backoff`] shortened by the jitter. The fields are public, so
    /// whatever they hold (a NaN jitter, a `Duration::MAX` wait) gives a wait, never a
    /// panic.
    fn jittered(&self, attempt: u32) -> Duration {
        let jitter = if self.jitter.is_nan() {
            0.0
        } else {
            self.jitter.clamp(0.0, 1.0)
        };
        let wait = self.backoff(attempt);
        Duration::try_from_secs_f64(wait.as_secs_f64() * (1.0 - fastrand::f64() * jitter)).unwrap_or(wait)
    }
}

/// The primary's health as the supervisor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    /// The primary serves.
    Healthy,
    /// The primary is down since `since` (wall clock); a probe loop is running. In
    /// strict mode calls fail meanwhile; in degraded mode the fallback serves them.
    Down {
        /// When the outage was detected.
        since: SystemTime,
    },
}

impl Health {
    /// `healthy` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Down { .. } => "down",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug)]
enum State {
    Healthy,
    Down {
        since: Instant,
        since_system: SystemTime,
        outage: u64,
        /// The probe loop of this outage: spawned and stored under the state's lock,
        /// so no store from another outage can replace (or abort) it.
        probe: JoinHandle<()>,
    },
}

/// Slots of a partitioned store the supervisor tracks: a Redis Cluster's 16384.
const SLOT_WORDS: usize = 16_384 / 64;

fn slot_bit(slot: u16) -> (usize, u64) {
    let slot = usize::from(slot) % (SLOT_WORDS * 64);
    (slot / 64, 1u64 << (slot % 64))
}

/// Watches the primary and decides every healthy ↔ degraded transition.
///
/// # Behavior
///
/// - Starts [`Health::Healthy`] ([`Supervisor::new`]) or already down
///   ([`Supervisor::start_down`], which emits [`EventKind::UnavailableAtStartup`]).
/// - [`Supervisor::report`] with an error for which [`Error::is_unavailable`] holds marks
///   the primary down **at once** and emits one event — [`EventKind::Degraded`] in
///   degraded mode, [`EventKind::UnavailableAtRuntime`] otherwise. Further failures
///   during the same outage emit nothing. Other errors change nothing.
/// - While down, a probe runs on a jittered exponential backoff
///   ([`SupervisorConfig`]), each bounded by its deadline. Waits are counted from the
///   *start* of the previous probe, and a probe that outlives the wait is followed at
///   once: probes never start more than one probe period apart, and with a probe
///   deadline of at least the probe period a probe is always in flight, so a client that
///   queues commands while it reconnects (fred) answers one as soon as the server is
///   back. A failed or timed-out probe changes nothing; only a successful probe ends
///   the outage: the [`OnRecover`] hook runs, the state becomes [`Health::Healthy`] and
///   exactly one [`EventKind::Recovered`] is emitted, carrying the outage length, the
///   calls served degraded and the hook's count. No successful call other than the
///   probe ends an outage.
/// - Dropping the supervisor stops its probe task: no task outlives its owner.
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    config: SupervisorConfig,
    clock: SharedClock,
    events: Events,
    component: Component,
    mode: Mode,
    probe: Box<dyn Probe>,
    on_recover: Option<Box<dyn OnRecover>>,
    runtime: Handle,
    state: Mutex<State>,
    outages: AtomicU64,
    served_degraded: AtomicU64,
    /// Held shared by every call a degraded router serves from its fallback, and
    /// exclusively by a recovery while it takes the fallback's content.
    gate: Arc<tokio::sync::RwLock<()>>,
    handover: Arc<Handover>,
    /// The slots of a partitioned primary sent to the fallback in the current outage
    /// (one bit per slot), and the outage they belong to.
    degraded_slots: Box<[AtomicU64]>,
    slots_outage: AtomicU64,
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("component", &self.inner.component)
            .field("mode", &self.inner.mode)
            .field("health", &self.health())
            .finish_non_exhaustive()
    }
}

/// What a [`Supervisor`] needs to know about its owner.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SupervisorContext {
    /// The contract it watches for.
    pub component: Component,
    /// The mode (decides which event a runtime outage emits).
    pub mode: Mode,
    /// Where events go.
    pub events: Events,
    /// The clock used for backoff, deadlines and outage lengths.
    pub clock: SharedClock,
    /// Timing.
    pub config: SupervisorConfig,
}

impl SupervisorContext {
    /// A context with the system clock and default timing.
    pub fn new(component: Component, mode: Mode, events: Events) -> Self {
        SupervisorContext {
            component,
            mode,
            events,
            clock: crate::SystemClock::shared(),
            config: SupervisorConfig::default(),
        }
    }

    /// Replaces the clock.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Replaces the timing.
    pub fn with_config(mut self, config: SupervisorConfig) -> Self {
        self.config = config;
        self
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the data inconsistent (each
    // critical section is a single assignment), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Supervisor {
    /// A supervisor for a primary that is up.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when called outside a tokio runtime (the probe task needs one).
    pub fn new(
        ctx: SupervisorContext,
        probe: impl Probe,
        on_recover: Option<Box<dyn OnRecover>>,
    ) -> Result<Self, Error> {
        let runtime = Handle::try_current()
            .map_err(|_| Error::config("the health supervisor must be created inside a tokio runtime"))?;
        Ok(Supervisor {
            inner: Arc::new(Inner {
                config: ctx.config,
                clock: ctx.clock,
                events: ctx.events,
                component: ctx.component,
                mode: ctx.mode,
                probe: Box::new(probe),
                on_recover,
                runtime,
                state: Mutex::new(State::Healthy),
                outages: AtomicU64::new(0),
                served_degraded: AtomicU64::new(0),
                gate: Arc::new(tokio::sync::RwLock::new(())),
                handover: Arc::default(),
                degraded_slots: (0..SLOT_WORDS).map(|_| AtomicU64::new(0)).collect(),
                slots_outage: AtomicU64::new(0),
            }),
        })
    }

    /// A supervisor for a primary that could not be reached at startup: emits
    /// [`EventKind::UnavailableAtStartup`] and starts probing.
    pub fn start_down(
        ctx: SupervisorContext,
        probe: impl Probe,
        on_recover: Option<Box<dyn OnRecover>>,
        error: &Error,
    ) -> Result<Self, Error> {
        let sup = Supervisor::new(ctx, probe, on_recover)?;
        sup.inner.go_down(EventKind::UnavailableAtStartup, error);
        Ok(sup)
    }

    /// A supervisor that probes `primary` with `probe(primary.clone())`: up at first, or
    /// already down (emitting [`EventKind::UnavailableAtStartup`]) when `down` is the
    /// startup error. What every strict and degraded wrapper builds.
    pub fn watching<P, F, Fut>(
        ctx: SupervisorContext,
        primary: &P,
        probe: F,
        on_recover: Option<Box<dyn OnRecover>>,
        down: Option<&Error>,
    ) -> Result<Self, Error>
    where
        P: crate::Backend,
        F: Fn(P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        let probe = Watched {
            primary: primary.clone(),
            probe,
        };
        match down {
            None => Supervisor::new(ctx, probe, on_recover),
            Some(e) => Supervisor::start_down(ctx, probe, on_recover, e),
        }
    }

    /// The current health.
    pub fn health(&self) -> Health {
        match *lock(&self.inner.state) {
            State::Healthy => Health::Healthy,
            State::Down { since_system, .. } => Health::Down { since: since_system },
        }
    }

    /// Whether the primary is considered up.
    pub fn is_healthy(&self) -> bool {
        matches!(*lock(&self.inner.state), State::Healthy)
    }

    /// The switch gate: a call served by a fallback holds it shared; a recovery holds it
    /// exclusively while it takes the fallback's content. See
    /// [`Failover`](crate::Failover).
    pub fn switch_gate(&self) -> &Arc<tokio::sync::RwLock<()>> {
        &self.inner.gate
    }

    /// The hand-over of the outage being recovered (see [`Handover`]).
    pub fn handover(&self) -> &Handover {
        &self.inner.handover
    }

    /// How long a call may wait for a record on its way to the primary
    /// ([`SupervisorConfig::handover_wait`]).
    pub fn handover_wait(&self) -> Duration {
        self.inner.config.handover_wait
    }

    /// The number of the current (or last) outage, starting at 1; 0 before any.
    pub fn outage_number(&self) -> u64 {
        self.inner.outages.load(Ordering::Acquire)
    }

    /// Reports the error of a call to the primary. Returns true when this report
    /// started an outage. See the type's `# Behavior`.
    pub fn report(&self, op: &'static str, error: &Error) -> bool {
        if !error.is_unavailable() {
            return false;
        }
        let kind = match self.inner.mode {
            Mode::ExplicitDegraded => EventKind::Degraded,
            _ => EventKind::UnavailableAtRuntime { op },
        };
        self.inner.go_down(kind, error)
    }

    /// Whether `slot` of a partitioned primary went to the fallback in outage
    /// `outage` (see [`Failover`](crate::Failover)).
    pub fn slot_degraded(&self, outage: u64, slot: u16) -> bool {
        let inner = &self.inner;
        if inner.slots_outage.load(Ordering::Acquire) != outage {
            return false;
        }
        let (word, bit) = slot_bit(slot);
        inner.degraded_slots[word].load(Ordering::Acquire) & bit != 0
    }

    /// Records that `slot` goes to the fallback until outage `outage` is handed over.
    pub fn degrade_slot(&self, outage: u64, slot: u16) {
        let inner = &self.inner;
        if inner.slots_outage.load(Ordering::Acquire) == outage {
            let (word, bit) = slot_bit(slot);
            inner.degraded_slots[word].fetch_or(bit, Ordering::AcqRel);
        }
    }

    /// Counts one call served by the fallback during the current outage.
    pub fn note_served_degraded(&self) {
        self.inner.served_degraded.fetch_add(1, Ordering::Relaxed);
    }

    /// The mode the supervisor reports for.
    pub fn mode(&self) -> Mode {
        self.inner.mode
    }

    /// The events sink.
    pub fn events(&self) -> &Events {
        &self.inner.events
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if let State::Down { probe, .. } = &*lock(&self.inner.state) {
            probe.abort();
        }
    }
}

impl Inner {
    fn emit(&self, kind: EventKind, error: Option<&Error>) {
        self.events.emit(Event::new(
            kind,
            self.component,
            self.mode,
            TENANT.is_set().then(|| TENANT.with(Arc::clone)),
            self.clock.system_time(),
            error.map(ErrorSummary::of),
        ));
    }

    /// Marks the primary down if it was up; returns whether it was.
    fn go_down(self: &Arc<Self>, kind: EventKind, error: &Error) -> bool {
        let mut state = lock(&self.state);
        if let State::Down { .. } = *state {
            return false;
        }
        // The previous outage's degraded slots are forgotten before the new outage's
        // number is visible, so no slot recorded for the new one is lost.
        for w in self.degraded_slots.iter() {
            w.store(0, Ordering::Release);
        }
        let outage = self.outages.load(Ordering::Acquire) + 1;
        self.slots_outage.store(outage, Ordering::Release);
        let outage = self.outages.fetch_add(1, Ordering::AcqRel) + 1;
        self.served_degraded.store(0, Ordering::Relaxed);
        // Spawned and stored under the lock, with the state it belongs to: a late
        // store from one outage can never replace or abort the next one's loop (the
        // previous design stored the handle after releasing the lock).
        let probe = self.runtime.spawn(Arc::clone(self).probe_until_up(outage));
        *state = State::Down {
            since: self.clock.now(),
            since_system: self.clock.system_time(),
            outage,
            probe,
        };
        // Emitted under the lock so that events of one outage are never reordered.
        self.emit(kind, Some(error));
        true
    }

    async fn probe_until_up(self: Arc<Self>, outage: u64) {
        let mut attempt = 0u32;
        let mut next = crate::clock::later(self.clock.now(), self.config.jittered(attempt));
        loop {
            // A topology change (a promoted replica) is worth a probe now.
            tokio::select! {
                () = self.clock.sleep_until(next) => {}
                () = self.probe.changed() => {}
            }
            let started = self.clock.now();
            attempt = attempt.saturating_add(1);
            // Start to start: a slow probe is part of the wait for the next one.
            next = crate::clock::later(started, self.config.jittered(attempt));
            let probe = with_deadline(&*self.clock, self.config.probe_deadline, self.probe.probe());
            match probe.await {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    tracing::debug!(target: crate::event::TARGET, error = %e.chain(), "probe failed");
                    continue;
                }
                None => {
                    tracing::debug!(target: crate::event::TARGET, "probe timed out");
                    continue;
                }
            }
            // The probe succeeded: hand the outage over to the primary (see
            // `Handover`); from then on no call of this outage uses the fallback.
            let ctx = RecoveryContext {
                outage,
                gate: Arc::clone(&self.gate),
                handover: Arc::clone(&self.handover),
            };
            let handled = match &self.on_recover {
                Some(hook) => match hook.on_recover(&ctx).await {
                    Ok(n) => n,
                    Err(e) => {
                        self.handover.abort();
                        tracing::warn!(
                            target: crate::event::TARGET,
                            error = %e.chain(),
                            "the primary failed again during recovery; still degraded"
                        );
                        continue;
                    }
                },
                // No fallback (strict mode): nothing to hand over.
                None => 0,
            };
            let mut state = lock(&self.state);
            if let State::Down {
                since, outage: current, ..
            } = *state
            {
                if current == outage {
                    *state = State::Healthy;
                    let served = self.served_degraded.swap(0, Ordering::Relaxed);
                    self.emit(
                        EventKind::Recovered {
                            outage: self.clock.now().saturating_duration_since(since),
                            served_degraded: served,
                            dropped_or_replayed: handled,
                        },
                        None,
                    );
                }
            }
            return;
        }
    }
}

#[cfg(test)]
mod config_bounds {
    use super::*;

    /// The timing fields are public: whatever they hold, a wait comes out (at most the
    /// probe period) and a deadline lies in the future — no overflow, no panic.
    #[test]
    fn any_timing_gives_a_wait_and_a_deadline() {
        let extremes = [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_secs(3600),
            Duration::MAX,
        ];
        let jitters = [0.0, 0.2, 1.0, -3.0, 7.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY];
        let now = Instant::now();
        for (&min, &max) in extremes.iter().flat_map(|a| extremes.iter().map(move |b| (a, b))) {
            for jitter in jitters {
                let mut config = SupervisorConfig::default();
                (config.backoff_min, config.backoff_max, config.jitter) = (min, max, jitter);
                for attempt in [0, 1, 20, 64, u32::MAX] {
                    let wait = config.jittered(attempt);
                    assert!(wait <= max, "{min:?} {max:?} {jitter} {attempt}: {wait:?}");
                    assert!(crate::clock::later(now, wait) >= now);
                }
            }
            let chosen = SupervisorConfig::default().with_jitter(f64::NAN).with_probe_period(max);
            assert_eq!(chosen.jitter, 0.0);
            assert!(chosen.jittered(3) <= max);
        }
    }

    #[tokio::test]
    async fn a_deadline_past_the_clock_range_is_no_deadline() {
        let clock = crate::SystemClock;
        assert_eq!(crate::with_deadline(&clock, Duration::MAX, async { 7 }).await, Some(7));
        assert_eq!(
            crate::with_deadline(&clock, Duration::ZERO, std::future::pending::<()>()).await,
            None
        );
    }
}
