//! The job store in strict mode ([`StrictJobs`]) and degraded mode ([`JobFailover`]).
//!
//! ## Degraded mode: replay create-if-absent, and a per-id report
//!
//! While Redis is down, records are read from and written to the local fallback, every
//! answer tagged `LocalDegraded`. When a probe confirms Redis is back, every record held
//! by the fallback is **replayed into Redis with create-if-absent** (all its fields,
//! its timestamps, its remaining TTL) before service returns to Redis — while the
//! supervisor's switch gate is held, so no call is served by the fallback during the
//! replay or after it, and nothing written while degraded is left behind (calls that
//! arrive meanwhile wait for the switch and then go to Redis). The replay sends up to
//! [`REPLAY_BATCH`] records at once; fred pipelines them, so 1,500 records take a few
//! round trips, not 1,500:
//!
//! - a record Redis does not have is created there (**replayed**);
//! - a record Redis already has is **not** overwritten (shared state wins): its id is
//!   reported as a **conflict**;
//! - a record whose replay failed with an error reply is reported as **failed**;
//! - if Redis fails again half-way (an outage error), the records not yet in Redis are
//!   put back into the fallback, the outage goes on, and the next successful probe
//!   replays them: a second outage never finds the first one's leftovers, because a
//!   recovery either hands everything over or does not end the outage.
//!
//! The report ([`RecoveryReport`]) is logged at WARN under `palisade::security` with
//! every id, kept on the wrapper ([`JobFailover::last_recovery`]), and the number of
//! replayed records is `dropped_or_replayed` in the `Recovered` event. Nothing written
//! while degraded is lost without a trace.
//!
//! A write that **timed out** is not known to have failed: against a paused or
//! overloaded server, Redis may still run a command it had already received when it
//! resumes. The call that detects an outage is served by the fallback too, so such a
//! record can exist in both places; the replay then finds it in Redis and reports it as
//! a conflict instead of overwriting it.
//!
//! Records that exist only in Redis are invisible while degraded: `get` answers `None`
//! and `update` applies nothing (tagged `LocalDegraded`), because the fallback never
//! guesses at shared state.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_cache_core::Strict;
use palisade_cache_core::cache::BackendStatus;
use palisade_cache_core::failover::{DegradedRouter, outage_key, split_outage_key};
use palisade_cache_core::supervisor::{OnRecover, RecoveryContext, Supervisor, SupervisorContext};
use palisade_cache_core::{BoxFuture, EVENT_TARGET, Error, Mode, Tagged};

use crate::model::{FieldMap, JobStatus, field};
use crate::store::{JobBackend, RawOutcome, StoredRecord};

/// How many records the replay sends to Redis at once.
pub const REPLAY_BATCH: usize = 256;

/// The storage key of a fallback key (`<outage>#<key>`).
fn original_key(fallback_key: &str) -> String {
    split_outage_key(fallback_key)
        .map_or(fallback_key, |(_, k)| k)
        .to_owned()
}

/// A fallback that can hand over everything it holds (for the replay on recovery).
pub trait JobFallback: JobBackend {
    /// Removes and returns every live record: key, fields, remaining TTL.
    fn drain(&self) -> Vec<(String, FieldMap, Duration)>;
    /// Puts records back (a replay that Redis interrupted): key, fields, remaining TTL.
    fn restore(&self, records: Vec<(String, FieldMap, Duration)>);
}

/// What happened to the records written while degraded, per id (storage keys).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Created in Redis.
    pub replayed: Vec<String>,
    /// Already in Redis: not overwritten.
    pub conflicts: Vec<String>,
    /// The replay failed.
    pub failed: Vec<String>,
}

/// Job store in degraded mode. See the module docs.
///
/// # Behavior
///
/// - While healthy, every call goes to the primary.
/// - An unavailable error marks the primary down at once (one `Degraded` event) and
///   the call is served by the fallback; so are later calls until a probe succeeds.
///   Answers from the fallback are tagged `LocalDegraded`.
/// - On recovery the fallback's records are replayed create-if-absent and reported per
///   id ([`RecoveryReport`]); one `Recovered` event carries the replayed count.
#[derive(Clone)]
pub struct JobFailover<P, F> {
    router: DegradedRouter<P, F>,
    report: Arc<Mutex<Option<RecoveryReport>>>,
}

struct Replay<P, F> {
    primary: P,
    fallback: F,
    report: Arc<Mutex<Option<RecoveryReport>>>,
}

impl<P: JobBackend, F: JobFallback> OnRecover for Replay<P, F> {
    fn on_recover<'a>(&'a self, ctx: &'a RecoveryContext) -> BoxFuture<'a, Result<u64, Error>> {
        Box::pin(async move {
            let mut report = RecoveryReport::default();
            // Emptied while no call uses the fallback; from the hand-over on, calls go
            // to Redis, and a call on a record still on its way waits for it.
            let mut pending = {
                let _exclusive = ctx.gate.write().await;
                let drained = self.fallback.drain();
                ctx.handover
                    .begin(ctx.outage, drained.iter().map(|(k, _, _)| original_key(k)));
                drained
            };
            let mut interrupted = None;
            while !pending.is_empty() {
                let batch: Vec<_> = pending.drain(..pending.len().min(REPLAY_BATCH)).collect();
                let mut tasks = tokio::task::JoinSet::new();
                for (fallback_key, fields, ttl) in batch {
                    let primary = self.primary.clone();
                    tasks.spawn(async move {
                        let key = original_key(&fallback_key);
                        let mut replayed = fields.clone();
                        replayed.remove(field::TTL_MS);
                        let r = primary.create(&key, &replayed, ttl, true).await;
                        (key, (fallback_key, fields, ttl), r)
                    });
                }
                while let Some(done) = tasks.join_next().await {
                    let Ok((key, record, r)) = done else { continue };
                    if !matches!(&r, Err(e) if e.is_unavailable()) {
                        ctx.handover.done(&key);
                    }
                    match r {
                        Ok(t) if t.value => report.replayed.push(key),
                        Ok(_) => report.conflicts.push(key),
                        Err(e) if e.is_unavailable() => {
                            interrupted.get_or_insert(e);
                            pending.push(record);
                        }
                        Err(e) => {
                            tracing::warn!(target: EVENT_TARGET, key, error = %e.chain(), "job replay failed");
                            report.failed.push(key);
                        }
                    }
                }
                if interrupted.is_some() {
                    break;
                }
            }
            if let Some(e) = interrupted {
                // Nothing is lost: what Redis did not take goes back to the fallback,
                // and the next recovery replays it.
                let back = pending.len();
                self.fallback.restore(pending);
                tracing::warn!(
                    target: EVENT_TARGET,
                    replayed = report.replayed.len(),
                    put_back = back,
                    "Redis failed again during the job replay: the rest waits for the next recovery"
                );
                return Err(e);
            }
            if !(report.conflicts.is_empty() && report.failed.is_empty()) {
                tracing::warn!(
                    target: EVENT_TARGET,
                    replayed = report.replayed.len(),
                    conflicts = ?report.conflicts,
                    failed = ?report.failed,
                    "job records written while degraded were not all replayed"
                );
            }
            let replayed = report.replayed.len() as u64;
            *self.report.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
            Ok(replayed)
        })
    }
}

impl<P: JobBackend, F: JobFallback> JobFailover<P, F> {
    /// Degraded mode over a primary that answered at startup.
    pub fn new(primary: P, fallback: F, ctx: SupervisorContext) -> Result<Self, Error> {
        Self::build(primary, fallback, ctx, None)
    }

    /// Degraded mode over a primary that could not be reached at startup.
    pub fn start_down(primary: P, fallback: F, ctx: SupervisorContext, error: &Error) -> Result<Self, Error> {
        Self::build(primary, fallback, ctx, Some(error))
    }

    fn build(primary: P, fallback: F, ctx: SupervisorContext, down: Option<&Error>) -> Result<Self, Error> {
        let report = Arc::new(Mutex::new(None));
        let hook: Option<Box<dyn OnRecover>> = Some(Box::new(Replay {
            primary: primary.clone(),
            fallback: fallback.clone(),
            report: Arc::clone(&report),
        }));
        Ok(JobFailover {
            router: DegradedRouter::new(
                primary,
                fallback,
                ctx,
                |p: P| async move { p.probe().await },
                hook,
                down,
            )?,
            report,
        })
    }

    /// The supervisor.
    pub fn supervisor(&self) -> &Supervisor {
        &self.router.supervisor
    }

    /// The report of the last recovery, if any.
    pub fn last_recovery(&self) -> Option<RecoveryReport> {
        self.report.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl<P: JobBackend, F: JobFallback> JobBackend for JobFailover<P, F> {
    async fn create(
        &self,
        key: &str,
        fields: &FieldMap,
        ttl: Duration,
        if_absent: bool,
    ) -> Result<Tagged<bool>, Error> {
        self.router
            .route_keyed(
                "jobs.create",
                Some(key),
                |p| async move { p.create(key, fields, ttl, if_absent).await },
                |f, n| async move { f.create(&outage_key(n, key), fields, ttl, if_absent).await },
            )
            .await
    }
    async fn update(&self, key: &str, fields: &FieldMap) -> Result<Tagged<bool>, Error> {
        self.router
            .route_keyed(
                "jobs.update",
                Some(key),
                |p| async move { p.update(key, fields).await },
                |f, n| async move { f.update(&outage_key(n, key), fields).await },
            )
            .await
    }
    async fn exists(&self, key: &str) -> Result<Tagged<bool>, Error> {
        self.router
            .route_keyed(
                "jobs.exists",
                Some(key),
                |p| async move { p.exists(key).await },
                |f, n| async move { f.exists(&outage_key(n, key)).await },
            )
            .await
    }
    async fn get(&self, key: &str) -> Result<Tagged<Option<StoredRecord>>, Error> {
        self.router
            .route_keyed(
                "jobs.get",
                Some(key),
                |p| async move { p.get(key).await },
                |f, n| async move { f.get(&outage_key(n, key)).await },
            )
            .await
    }
    async fn transition(
        &self,
        key: &str,
        from: JobStatus,
        to: JobStatus,
        fields: &FieldMap,
    ) -> Result<Tagged<RawOutcome>, Error> {
        self.router
            .route_keyed(
                "jobs.transition",
                Some(key),
                |p| async move { p.transition(key, from, to, fields).await },
                |f, n| async move { f.transition(&outage_key(n, key), from, to, fields).await },
            )
            .await
    }
    async fn heartbeat(&self, key: &str) -> Result<Tagged<RawOutcome>, Error> {
        self.router
            .route_keyed(
                "jobs.heartbeat",
                Some(key),
                |p| async move { p.heartbeat(key).await },
                |f, n| async move { f.heartbeat(&outage_key(n, key)).await },
            )
            .await
    }
    async fn delete(&self, key: &str) -> Result<Tagged<bool>, Error> {
        self.router
            .route_keyed(
                "jobs.delete",
                Some(key),
                |p| async move { p.delete(key).await },
                |f, n| async move { f.delete(&outage_key(n, key)).await },
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

/// The jobs contract in strict mode: [`Strict`] over a primary, with outages reported
/// once (`UnavailableAtRuntime`, then `Recovered`) and every error returned.
pub type StrictJobs<P> = Strict<P>;

/// Wraps a connected primary in strict mode.
pub fn strict<P: JobBackend>(primary: P, ctx: SupervisorContext) -> Result<StrictJobs<P>, Error> {
    Strict::with_probe(primary, ctx, |p: P| async move { p.probe().await })
}

impl<P: JobBackend> JobBackend for Strict<P> {
    async fn create(
        &self,
        key: &str,
        fields: &FieldMap,
        ttl: Duration,
        if_absent: bool,
    ) -> Result<Tagged<bool>, Error> {
        self.watch("jobs.create", self.primary().create(key, fields, ttl, if_absent).await)
    }
    async fn update(&self, key: &str, fields: &FieldMap) -> Result<Tagged<bool>, Error> {
        self.watch("jobs.update", self.primary().update(key, fields).await)
    }
    async fn exists(&self, key: &str) -> Result<Tagged<bool>, Error> {
        self.watch("jobs.exists", self.primary().exists(key).await)
    }
    async fn get(&self, key: &str) -> Result<Tagged<Option<StoredRecord>>, Error> {
        self.watch("jobs.get", self.primary().get(key).await)
    }
    async fn transition(
        &self,
        key: &str,
        from: JobStatus,
        to: JobStatus,
        fields: &FieldMap,
    ) -> Result<Tagged<RawOutcome>, Error> {
        self.watch(
            "jobs.transition",
            self.primary().transition(key, from, to, fields).await,
        )
    }
    async fn heartbeat(&self, key: &str) -> Result<Tagged<RawOutcome>, Error> {
        self.watch("jobs.heartbeat", self.primary().heartbeat(key).await)
    }
    async fn delete(&self, key: &str) -> Result<Tagged<bool>, Error> {
        self.watch("jobs.delete", self.primary().delete(key).await)
    }
    async fn probe(&self) -> Result<(), Error> {
        self.primary().probe().await
    }
    fn status(&self) -> BackendStatus {
        self.strict_status()
    }
}
