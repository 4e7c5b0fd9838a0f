//! Job-store fault tests against a private redis-server that is killed, paused and
//! restarted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{DEADLINE, Fault, RECOVERY, SLACK, all_fail_within, fault_config, fault_ctx, fault_ns};

use std::time::{Duration, Instant};

use palisade_cache_core::{Component, Event, EventKind, Events, Mode, Provenance};
use palisade_cache_local::LocalJobStore;
use palisade_cache_redis::{RedisConnection, RedisJobStore};
use palisade_job_store::{JobFallback, JobRecord, JobStatus, JobStore, Outcome, Patch};
use palisade_redis_server::env;
use palisade_redis_server::server::RedisServer;
use tokio::sync::broadcast;

const TTL: Duration = Duration::from_secs(600);

async fn next_event(rx: &mut broadcast::Receiver<Event>, within: Duration) -> Event {
    tokio::time::timeout(within, rx.recv())
        .await
        .expect("an event in time")
        .expect("not lagged")
}

async fn degraded_store(
    server: &RedisServer,
    events: &Events,
    test: &str,
) -> (
    JobStore<palisade_cache_core::Failover<RedisJobStore, LocalJobStore>>,
    palisade_cache_core::Failover<RedisJobStore, LocalJobStore>,
) {
    let conn = RedisConnection::connect(&fault_config(server)).await.unwrap();
    let failover = palisade_cache_core::Failover::new(
        RedisJobStore::new(conn).await.unwrap(),
        LocalJobStore::default(),
        fault_ctx(Component::JobStore, Mode::ExplicitDegraded, events),
        palisade_cache_core::FailoverOptions::default(),
        None,
    )
    .unwrap();
    (JobStore::new(failover.clone(), fault_ns(test, "jobs")), failover)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_written_while_degraded_are_replayed_after_a_restart() {
    let Some(mut server) = env::private_server("jobs_replayed_after_restart") else {
        return;
    };
    let events = Events::new(64);
    let mut rx = events.subscribe();
    let (s, failover) = degraded_store(&server, &events, "replay").await;
    s.create("before", &JobRecord::queued(), TTL).await.unwrap();

    server.kill();
    let created = s
        .create("during", &JobRecord::queued().with_field("by", "api"), TTL)
        .await
        .unwrap();
    assert_eq!(created.provenance, Provenance::LocalDegraded);
    assert_eq!(
        next_event(&mut rx, Duration::from_secs(2)).await.kind,
        EventKind::Degraded
    );
    assert!(s.update("during", &Patch::new().progress(10)).await.unwrap().value);
    let t = s
        .transition("during", JobStatus::Queued, JobStatus::Running, &Patch::new())
        .await
        .unwrap();
    assert_eq!((t.value, t.provenance), (Outcome::Applied, Provenance::LocalDegraded));
    let degraded_view = s.get("during").await.unwrap();
    assert_eq!(degraded_view.provenance, Provenance::LocalDegraded);
    let degraded_view = degraded_view.value.unwrap();
    // Shared state is never guessed at while degraded.
    let before = s.get("before").await.unwrap();
    assert_eq!((before.value, before.provenance), (None, Provenance::LocalDegraded));
    assert!(!s.update("before", &Patch::new().progress(1)).await.unwrap().value);

    server.start_again().unwrap();
    let e = next_event(&mut rx, RECOVERY).await;
    assert!(
        matches!(
            e.kind,
            EventKind::Recovered {
                dropped_or_replayed: 1,
                ..
            }
        ),
        "{e:?}"
    );
    let report = failover.fallback().last_recovery().unwrap();
    assert_eq!(report.replayed, vec![s.key("during").unwrap()]);
    assert!(report.conflicts.is_empty() && report.failed.is_empty());

    let got = s.get("during").await.unwrap();
    assert_eq!(got.provenance, Provenance::Distributed);
    let got = got.value.expect("replayed into Redis");
    assert_eq!((got.status, got.progress), (JobStatus::Running, Some(10)));
    assert_eq!(got.field("by").map(|b| &b[..]), Some(&b"api"[..]));
    assert_eq!(
        got.created_at, degraded_view.created_at,
        "the replay keeps the record's own timestamps"
    );
    // And it is a live Redis record: the worker goes on with it.
    let done = s
        .transition("during", JobStatus::Running, JobStatus::Completed, &Patch::new())
        .await
        .unwrap();
    assert_eq!(
        (done.value, done.provenance),
        (Outcome::Applied, Provenance::Distributed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_never_overwrites_shared_state_and_reports_the_conflict() {
    let Some(server) = env::private_server("jobs_replay_conflict") else {
        return;
    };
    let events = Events::new(64);
    let mut rx = events.subscribe();
    let (s, failover) = degraded_store(&server, &events, "conflict").await;
    s.create("shared", &JobRecord::queued().with_field("v", "redis"), TTL)
        .await
        .unwrap();

    server.pause().unwrap();
    // The call that detects the outage is a read: a write that times out against a
    // paused server may still be applied when it resumes (Redis runs what it had
    // received), which is not what this test is about.
    assert_eq!(s.get("probe").await.unwrap().provenance, Provenance::LocalDegraded);
    let t = s
        .create("shared", &JobRecord::queued().with_field("v", "local"), TTL)
        .await
        .unwrap();
    assert_eq!(t.provenance, Provenance::LocalDegraded);
    s.create("fresh", &JobRecord::queued(), TTL).await.unwrap();
    assert_eq!(
        next_event(&mut rx, Duration::from_secs(2)).await.kind,
        EventKind::Degraded
    );

    server.resume().unwrap();
    let e = next_event(&mut rx, RECOVERY).await;
    assert!(
        matches!(
            e.kind,
            EventKind::Recovered {
                dropped_or_replayed: 1,
                ..
            }
        ),
        "{e:?}"
    );
    let report = failover.fallback().last_recovery().unwrap();
    assert_eq!(report.replayed, vec![s.key("fresh").unwrap()]);
    assert_eq!(report.conflicts, vec![s.key("shared").unwrap()]);
    let shared = s.get("shared").await.unwrap().value.unwrap();
    assert_eq!(
        shared.field("v").map(|b| &b[..]),
        Some(&b"redis"[..]),
        "shared state wins"
    );
    assert!(s.get("fresh").await.unwrap().value.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_job_calls_fail_within_the_deadline_and_recover() {
    let Some(mut server) = env::private_server("strict_jobs_kill") else {
        return;
    };
    let events = Events::new(64);
    let mut rx = events.subscribe();
    let conn = RedisConnection::connect(&fault_config(&server)).await.unwrap();
    let strict = palisade_cache_core::Strict::new(
        RedisJobStore::new(conn).await.unwrap(),
        fault_ctx(Component::JobStore, Mode::StrictDistributed, &events),
    )
    .unwrap();
    let s = JobStore::new(strict, fault_ns("strict", "jobs"));
    s.create("j", &JobRecord::queued(), TTL).await.unwrap();
    server.kill();
    for round in 0..3 {
        let start = Instant::now();
        let results = [
            s.create(&format!("n{round}"), &JobRecord::queued(), TTL)
                .await
                .map(drop),
            s.update("j", &Patch::new().progress(1)).await.map(drop),
            s.get("j").await.map(drop),
            s.transition("j", JobStatus::Queued, JobStatus::Running, &Patch::new())
                .await
                .map(drop),
            s.heartbeat("j").await.map(drop),
            s.delete("j").await.map(drop),
        ];
        for r in results {
            assert!(r.unwrap_err().is_unavailable());
        }
        assert!(start.elapsed() <= 6 * (DEADLINE + SLACK), "{:?}", start.elapsed());
    }
    assert!(matches!(
        next_event(&mut rx, Duration::from_secs(2)).await.kind,
        EventKind::UnavailableAtRuntime { .. }
    ));
    server.start_again().unwrap();
    let give_up = Instant::now() + RECOVERY;
    // The restarted server has no scripts: the first call reloads them (NOSCRIPT).
    loop {
        match s.create("after", &JobRecord::queued(), TTL).await {
            Ok(t) => {
                assert_eq!(t.provenance, Provenance::Distributed);
                break;
            }
            Err(e) => assert!(Instant::now() < give_up, "never recovered: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(matches!(
        next_event(&mut rx, RECOVERY).await.kind,
        EventKind::Recovered { .. }
    ));
    assert_eq!(s.get("after").await.unwrap().value.unwrap().status, JobStatus::Queued);
}

/// One acknowledged write of the recovery workload.
#[derive(Debug, Clone)]
enum Acked {
    Created(String),
    Deleted(String, Provenance),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_write_acknowledged_around_a_recovery_is_lost_and_no_deleted_record_comes_back() {
    let Some(mut server) = env::private_server("jobs_recovery_workload") else {
        return;
    };
    let events = Events::new(4096);
    let mut rx = events.subscribe();
    let (s, failover) = degraded_store(&server, &events, "recovery").await;
    // What Redis holds, read directly.
    let direct = JobStore::new(
        RedisJobStore::new(RedisConnection::connect(&fault_config(&server)).await.unwrap())
            .await
            .unwrap(),
        s.ns().clone(),
    );
    let mut acked: Vec<Acked> = Vec::new();
    let mut all_reports = Vec::new();
    // The first outage kills Redis (it restarts empty: nothing of it is lost since
    // everything acknowledged lived in the fallback); the second pauses it (its data
    // stays), so that at the end every acknowledged record of both must be in Redis.
    for outage in 0..2 {
        if outage == 0 {
            server.kill();
        } else {
            server.pause().unwrap();
        }
        // A fallback large enough that the replay takes many round trips.
        for i in 0..1_500 {
            let id = format!("o{outage}-pre{i}");
            let t = s.create(&id, &JobRecord::queued(), TTL).await.unwrap();
            assert_eq!(t.provenance, Provenance::LocalDegraded);
            acked.push(Acked::Created(id));
        }
        if outage == 0 {
            server.start_again().unwrap();
        } else {
            server.resume().unwrap();
        }
        // Writers keep creating and deleting while the probe, the replay and the
        // switch happen.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..4 {
            let (s, stop) = (s.clone(), std::sync::Arc::clone(&stop));
            writers.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    n += 1;
                    let id = format!("o{outage}-w{w}-{n}");
                    if s.create(&id, &JobRecord::queued(), TTL).await.is_ok() {
                        mine.push(Acked::Created(id.clone()));
                        // Every third record is deleted again right away.
                        if n % 3 == 0 {
                            if let Ok(d) = s.delete(&id).await {
                                if d.value {
                                    mine.push(Acked::Deleted(id, d.provenance));
                                }
                            }
                        }
                    }
                    tokio::task::yield_now().await;
                }
                mine
            }));
        }
        let recovered = loop {
            let e = next_event(&mut rx, RECOVERY).await;
            if let EventKind::Recovered {
                dropped_or_replayed, ..
            } = e.kind
            {
                break dropped_or_replayed;
            }
        };
        // Writes go on a while after the switch, then stop.
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for w in writers {
            acked.extend(w.await.unwrap());
        }
        let report = failover.fallback().last_recovery().expect("a recovery report");
        assert!(recovered >= 1_500, "the large fallback was replayed: {recovered}");
        all_reports.push(report);
    }
    // Every create acknowledged before, during or after the recoveries is in Redis —
    // unless the application deleted it afterwards, or a report names it.
    let deleted: std::collections::HashSet<&str> = acked
        .iter()
        .filter_map(|a| match a {
            Acked::Deleted(id, _) => Some(id.as_str()),
            Acked::Created(_) => None,
        })
        .collect();
    let reported: std::collections::HashSet<String> = all_reports
        .iter()
        .flat_map(|r| r.conflicts.iter().chain(&r.failed).cloned())
        .collect();
    let mut missing = Vec::new();
    let mut resurrected = Vec::new();
    for a in &acked {
        let (id, in_redis) = match a {
            Acked::Created(id) | Acked::Deleted(id, _) => (id, direct.get(id).await.unwrap().value.is_some()),
        };
        match a {
            Acked::Created(_)
                if !deleted.contains(id.as_str()) && !in_redis && !reported.contains(&s.key(id).unwrap()) =>
            {
                missing.push(id.clone())
            }
            Acked::Deleted(_, Provenance::Distributed) if in_redis => resurrected.push(id.clone()),
            _ => {}
        }
    }
    let created = acked.iter().filter(|a| matches!(a, Acked::Created(_))).count();
    eprintln!(
        "FIGURES recovery workload: {created} creates and {} deletes acknowledged over two outages; \
         replayed {:?}; missing {}; resurrected {}",
        deleted.len(),
        all_reports.iter().map(|r| r.replayed.len()).collect::<Vec<_>>(),
        missing.len(),
        resurrected.len()
    );
    assert!(missing.is_empty(), "acknowledged records lost: {missing:?}");
    assert!(resurrected.is_empty(), "deleted records came back: {resurrected:?}");
    // The second recovery replayed only the second outage's records.
    assert!(
        all_reports[1].replayed.iter().all(|k| !k.contains("o0-")),
        "the second outage replayed the first one's leftovers"
    );
}

/// How many callers watch one record at once in the watch fault tests.
const WATCHERS: u64 = 50;

/// Returns once `n` watchers are subscribed to the record `key` (its channel).
async fn until_subscribed(server: &RedisServer, key: &str, n: u64) {
    let direct = RedisConnection::connect(&fault_config(server)).await.unwrap();
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let reply: Vec<palisade_cache_redis::fred::types::Value> = direct
            .command("shardnumsub", key, "PUBSUB", vec!["SHARDNUMSUB".into(), key.into()])
            .await
            .unwrap();
        if reply.get(1).and_then(|v| v.as_u64()) == Some(n) {
            return;
        }
        assert!(Instant::now() < give_up, "the watchers never all subscribed: {reply:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What one waiter answered, and when.
type Waited = (
    Result<palisade_cache_core::Tagged<palisade_job_store::WaitOutcome>, palisade_cache_core::Error>,
    Instant,
);

/// `WATCHERS` tasks in `wait_for(id, [completed], 60 s)`, each answering when it ended.
fn spawn_waiters<B: palisade_job_store::JobBackend + 'static>(
    s: &JobStore<B>,
    id: &str,
) -> Vec<tokio::task::JoinHandle<Waited>> {
    (0..WATCHERS)
        .map(|_| {
            let (s, id) = (s.clone(), id.to_owned());
            tokio::spawn(async move {
                let r = s.wait_for(&id, &[JobStatus::Completed], Duration::from_secs(60)).await;
                (r, Instant::now())
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_fifty_watchers_fail_within_their_deadline_when_redis_is_killed_or_paused() {
    let Some(mut server) = env::private_server("strict_job_watchers") else {
        return;
    };
    for fault in Fault::BOTH {
        let events = Events::new(16);
        let conn = RedisConnection::connect(&fault_config(&server)).await.unwrap();
        let strict = palisade_cache_core::Strict::new(
            RedisJobStore::new(conn).await.unwrap(),
            fault_ctx(Component::JobStore, Mode::StrictDistributed, &events),
        )
        .unwrap();
        // Only wake-ups and outages end these waits (no re-check within the test).
        let config = palisade_job_store::JobStoreConfig::default().with_watch_recheck(Duration::from_secs(3600));
        let s = JobStore::new(strict, fault_ns(&format!("strict-watch-{fault:?}"), "jobs")).with_config(config);
        s.create("j", &JobRecord::queued(), TTL).await.unwrap();
        let waiters = spawn_waiters(&s, "j");
        until_subscribed(&server, &s.key("j").unwrap(), WATCHERS).await;
        let at = Instant::now();
        // A killed server closes every subscribed connection at once (its error ends
        // the wait); a paused one is noticed when each wait ends and its look times out.
        let bound = fault.apply(&mut server);
        all_fail_within(waiters, fault, at, bound).await;
        fault.undo(&mut server);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degraded_watchers_outlive_an_outage_and_see_the_completion_after_it() {
    let Some(server) = env::private_server("degraded_job_watchers") else {
        return;
    };
    let events = Events::new(64);
    let mut rx = events.subscribe();
    let (s, _) = degraded_store(&server, &events, "degraded-watch").await;
    let s = s.with_config(palisade_job_store::JobStoreConfig::default().with_watch_recheck(Duration::from_millis(200)));
    s.create("j", &JobRecord::queued(), TTL).await.unwrap();
    let waiters = spawn_waiters(&s, "j");
    until_subscribed(&server, &s.key("j").unwrap(), WATCHERS).await;
    // Paused, not killed: the record is still in Redis when it comes back.
    server.pause().unwrap();
    assert_eq!(next_event(&mut rx, RECOVERY).await.kind, EventKind::Degraded);
    // The fallback does not hold the record: its absence there ends no wait. Several
    // re-check periods pass in the outage.
    let rechecks = s.stats().watch_rechecks;
    let give_up = Instant::now() + RECOVERY;
    while s.stats().watch_rechecks < rechecks + 3 * WATCHERS {
        assert!(Instant::now() < give_up, "the watchers stopped asking");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        waiters.iter().all(|w| !w.is_finished()),
        "a watcher ended in the outage"
    );
    server.resume().unwrap();
    assert!(matches!(
        next_event(&mut rx, RECOVERY).await.kind,
        EventKind::Recovered { .. }
    ));
    let run = s
        .transition("j", JobStatus::Queued, JobStatus::Running, &Patch::new())
        .await
        .unwrap();
    assert_eq!((run.value, run.provenance), (Outcome::Applied, Provenance::Distributed));
    s.transition(
        "j",
        JobStatus::Running,
        JobStatus::Completed,
        &Patch::new().result("ok"),
    )
    .await
    .unwrap();
    for w in waiters {
        let (r, _) = tokio::time::timeout(RECOVERY, w)
            .await
            .expect("a watcher hung")
            .unwrap();
        let t = r.unwrap();
        assert_eq!(t.provenance, Provenance::Distributed);
        assert!(
            matches!(&t.value, palisade_job_store::WaitOutcome::Reached(r) if r.status == JobStatus::Completed),
            "{:?}",
            t.value
        );
    }
}
