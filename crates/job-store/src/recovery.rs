//! What the job store's fallback does when Redis is back: [`replay`].
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
//! every id, kept by the fallback ([`JobFallback::last_recovery`]), and the number of
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

use std::time::Duration;

use palisade_cache_core::backend::split_outage_key;
use palisade_cache_core::supervisor::RecoveryContext;
use palisade_cache_core::{EVENT_TARGET, Error};

use crate::model::{FieldMap, field};
use crate::op;
use crate::store::JobBackend;

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
    /// Keeps the report of the last recovery.
    fn keep_report(&self, report: RecoveryReport);
    /// The report of the last recovery, if any.
    fn last_recovery(&self) -> Option<RecoveryReport>;
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

/// Replays every record `fallback` holds into `primary`, create-if-absent, as the
/// module docs describe; keeps the report on the fallback and returns the number
/// replayed. What a job fallback's [`Fallback::recover`](palisade_cache_core::Fallback::recover)
/// runs.
pub async fn replay<P: JobBackend, F: JobFallback>(
    primary: &P,
    fallback: &F,
    ctx: &RecoveryContext,
) -> Result<u64, Error> {
    let mut report = RecoveryReport::default();
    // Emptied while no call uses the fallback; from the hand-over on, calls go
    // to Redis, and a call on a record still on its way waits for it.
    let mut pending = {
        let _exclusive = ctx.gate.write().await;
        let drained = fallback.drain();
        ctx.handover
            .begin(ctx.outage, drained.iter().map(|(k, _, _)| original_key(k)));
        drained
    };
    let mut interrupted = None;
    while !pending.is_empty() {
        let batch: Vec<_> = pending.drain(..pending.len().min(REPLAY_BATCH)).collect();
        let mut tasks = tokio::task::JoinSet::new();
        for (fallback_key, fields, ttl) in batch {
            let primary = primary.clone();
            tasks.spawn(async move {
                let key = original_key(&fallback_key);
                let mut replayed = fields.clone();
                replayed.remove(field::TTL_MS);
                let r = primary.run(&op::Create::new(key.clone(), replayed, ttl, true)).await;
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
        fallback.restore(pending);
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
    fallback.keep_report(report);
    Ok(replayed)
}
