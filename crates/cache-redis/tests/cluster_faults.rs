//! Redis Cluster faults through palisade's router, each on a fresh cluster (3 masters,
//! a replica each unless said, `cluster-node-timeout 1000`) with load on keys of every
//! master and counters per master: SIGKILL of a master with and without a replica,
//! SIGSTOP of a master, a planned `CLUSTER FAILOVER`, a live slot migration (the `ASK`
//! path) to a master added while traffic flows, and degraded mode over a dead master.
//!
//! Every run prints one `cluster-fault` line: errors on the healthy masters (must be
//! 0), calls on the failed master and how many failed, the promotion time from the
//! fault as Redis's own `ROLE` reports it, and the failed slots' window after the
//! promotion (the first successful call on them minus the promotion; must be ≤ 500 ms).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_cache_core::cache::op;
use palisade_cache_core::{
    Backend, Component, Event, EventKind, Events, Failover, FailoverOptions, Mode, Provenance, Run, Strict,
};
use palisade_cache_local::LocalCache;
use palisade_cache_redis::{RedisCache, RedisConfig, RedisConnection, RedisThrottle, slot_of};
use palisade_redis_server::env;
use palisade_redis_server::resp::{self, Reply};
use palisade_redis_server::server::{RedisCluster, RedisServer};

const DEADLINE: Duration = Duration::from_millis(300);
const SLACK: Duration = Duration::from_millis(300);
/// The issue's bound: failed slots are served from the promoted replica within it.
const AFTER_PROMOTION: Duration = Duration::from_millis(500);
/// Runs of each fault test (the figures are per run).
const RUNS: usize = 5;

fn cluster(test: &str, replicas: usize) -> Option<RedisCluster> {
    env::private_cluster(test, 3, replicas, Duration::from_millis(1000))
}

fn config(c: &RedisCluster) -> RedisConfig {
    let seeds: Vec<String> = c.nodes().iter().map(RedisServer::addr).collect();
    RedisConfig::cluster(&seeds)
        .unwrap()
        .with_command_timeout(DEADLINE)
        .with_connect_timeout(Duration::from_secs(2))
}

/// Which master (0, 1, 2) owns `slot` at start.
fn master_of(slot: u16) -> usize {
    RedisCluster::first_owner(3, slot)
}

/// `n` keys on each master, named after `test`.
fn keys_per_master(test: &str, n: usize) -> [Vec<String>; 3] {
    let mut out: [Vec<String>; 3] = Default::default();
    let mut i = 0u64;
    while out.iter().any(|k| k.len() < n) {
        let key = format!("{}:{i}", env::unique_prefix(test));
        let m = master_of(slot_of(&key));
        if out[m].len() < n {
            out[m].push(key);
        }
        i += 1;
    }
    out
}

/// One call's outcome.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    master: usize,
    ok: bool,
    took: Duration,
    provenance: Option<Provenance>,
    /// The error of a failed call, printed when a test finds one it did not expect.
    error: Option<String>,
}

/// Set-then-get on every key, round after round, one task per master, until stopped.
struct Load {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start<B: Run<op::Set> + Run<op::Get>>(backend: B, keys: &[Vec<String>; 3]) -> Load {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (master, keys) in keys.iter().enumerate().filter(|(_, k)| !k.is_empty()) {
            let (backend, keys, samples, stop) = (backend.clone(), keys.clone(), samples.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                // A steady rate (one call per 2 ms per master), not a spin on a dead one.
                let mut tick = tokio::time::interval(Duration::from_millis(2));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut n = 0usize;
                while !stop.load(Ordering::Acquire) {
                    tick.tick().await;
                    let key = &keys[n % keys.len()];
                    let start = Instant::now();
                    let r = if n % 2 == 0 {
                        let set = op::Set::new(key.clone(), "v".into(), Duration::from_secs(60));
                        backend.run(&set).await.map(|t| t.provenance)
                    } else {
                        backend.run(&op::Get::new(key.clone())).await.map(|t| t.provenance)
                    };
                    let sample = Sample {
                        at: start,
                        master,
                        ok: r.is_ok(),
                        took: start.elapsed(),
                        error: r.as_ref().err().map(ToString::to_string),
                        provenance: r.ok(),
                    };
                    samples.lock().unwrap().push(sample);
                    n += 1;
                }
            }));
        }
        Load { samples, stop, tasks }
    }

    async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Release);
        for t in self.tasks {
            t.await.unwrap();
        }
        std::mem::take(&mut *self.samples.lock().unwrap())
    }
}

/// Waits (bounded) until node `i` reports `ROLE` master; the moment it did.
async fn promoted(c: &RedisCluster, i: usize, within: Duration) -> Instant {
    let addr = c.nodes()[i].addr();
    let deadline = Instant::now() + within;
    loop {
        let role = resp::command(&addr, &["ROLE"]).ok();
        if let Some(Reply::Array(items)) = role {
            if items.first().and_then(Reply::text).as_deref() == Some("master") {
                return Instant::now();
            }
        }
        assert!(Instant::now() < deadline, "node {i} was not promoted within {within:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The figures of one run.
#[derive(Debug)]
struct Figures {
    healthy_errors: usize,
    healthy_calls: usize,
    failed_calls: usize,
    failed_errors: usize,
    slowest_failure: Duration,
    promotion: Option<Duration>,
    window: Option<Duration>,
    /// p99 latency of the healthy masters' calls before the fault, and after it.
    healthy_p99: (Duration, Duration),
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v.get((v.len() * 99 / 100).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn figures(samples: &[Sample], failed: usize, fault: Instant, promotion: Option<Instant>) -> Figures {
    let healthy: Vec<&Sample> = samples.iter().filter(|s| s.master != failed).collect();
    let on_failed: Vec<&Sample> = samples.iter().filter(|s| s.master == failed && s.at >= fault).collect();
    let window = promotion.map(|p| {
        on_failed
            .iter()
            .filter(|s| s.ok && s.at + s.took >= p)
            .map(|s| (s.at + s.took).saturating_duration_since(p))
            .min()
            .unwrap_or(Duration::MAX)
    });
    Figures {
        healthy_errors: healthy.iter().filter(|s| !s.ok).count(),
        healthy_calls: healthy.len(),
        failed_calls: on_failed.len(),
        failed_errors: on_failed.iter().filter(|s| !s.ok).count(),
        slowest_failure: on_failed
            .iter()
            .filter(|s| !s.ok)
            .map(|s| s.took)
            .max()
            .unwrap_or_default(),
        promotion: promotion.map(|p| p.saturating_duration_since(fault)),
        window,
        healthy_p99: (
            p99(healthy.iter().filter(|s| s.at < fault).map(|s| s.took).collect()),
            p99(healthy.iter().filter(|s| s.at >= fault).map(|s| s.took).collect()),
        ),
    }
}

fn check(test: &str, run: usize, f: &Figures) {
    println!(
        "cluster-fault {test} run {run}: healthy-master errors {}/{} ; failed-master calls {} failed {} (slowest failure {:?}) ; promotion {:?} after the fault ; failed slots served {:?} after the promotion ; healthy-master p99 {:?} before, {:?} after the fault",
        f.healthy_errors,
        f.healthy_calls,
        f.failed_calls,
        f.failed_errors,
        f.slowest_failure,
        f.promotion,
        f.window,
        f.healthy_p99.0,
        f.healthy_p99.1
    );
    assert_eq!(
        f.healthy_errors, 0,
        "{test} run {run}: calls on healthy masters failed: {f:?}"
    );
    assert!(f.healthy_calls > 100, "{test} run {run}: the load ran: {f:?}");
    assert!(
        f.slowest_failure <= DEADLINE + SLACK,
        "{test} run {run}: a failed call took longer than its deadline: {f:?}"
    );
    if let Some(w) = f.window {
        assert!(
            w <= AFTER_PROMOTION,
            "{test} run {run}: failed slots served too late: {f:?}"
        );
    }
}

async fn strict_cache(c: &RedisCluster) -> Strict<RedisCache> {
    let conn = RedisConnection::connect(&config(c)).await.unwrap();
    let ctx = common::fault_ctx(Component::Cache, Mode::StrictDistributed, &Events::new(64));
    Strict::new(RedisCache::new(conn), ctx).unwrap()
}

/// Load for `before`, the fault, then load until the replica of master 0 (node 3) is
/// promoted (if `replica`) and `after` more.
async fn one_run(
    test: &str,
    run: usize,
    replicas: usize,
    fault: impl FnOnce(&mut RedisCluster),
    after: Duration,
) -> Figures {
    let mut c = tokio::task::spawn_blocking(move || cluster("cluster_faults", replicas))
        .await
        .unwrap()
        .unwrap();
    let keys = keys_per_master(test, 16);
    let cache = strict_cache(&c).await;
    let load = Load::start(cache, &keys);
    tokio::time::sleep(Duration::from_millis(300)).await;
    fault(&mut c);
    // The fault has happened once `fault` returns (a kill has reaped the process): a
    // call that starts after this instant meets it. Taken before, calls that started
    // while the kill was still under way counted as "after the fault" and succeeded.
    let at = Instant::now();
    let promotion = if replicas > 0 {
        Some(promoted(&c, 3, Duration::from_secs(15)).await)
    } else {
        None
    };
    tokio::time::sleep(after).await;
    let samples = load.stop().await;
    let f = figures(&samples, 0, at, promotion);
    check(test, run, &f);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_costs_only_its_slots_until_its_replica_serves_them() {
    if !env::private_servers("a_killed_master") {
        return;
    }
    for run in 0..RUNS {
        let f = one_run("kill", run, 1, |c| c.nodes_mut()[0].kill(), Duration::from_millis(800)).await;
        assert!(
            f.failed_errors > 0,
            "the kill was felt on the failed master's slots: {f:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_without_a_replica_never_stops_the_healthy_masters() {
    if !env::private_servers("a_killed_master_without_a_replica") {
        return;
    }
    for run in 0..RUNS {
        let f = one_run(
            "kill-no-replica",
            run,
            0,
            |c| c.nodes_mut()[0].kill(),
            Duration::from_secs(3),
        )
        .await;
        assert!(f.failed_calls > 0 && f.failed_errors == f.failed_calls, "{f:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_master_costs_only_its_slots_until_its_replica_serves_them() {
    if !env::private_servers("a_paused_master") {
        return;
    }
    for run in 0..RUNS {
        let f = one_run(
            "pause",
            run,
            1,
            |c| c.nodes_mut()[0].pause().unwrap(),
            Duration::from_millis(800),
        )
        .await;
        assert!(f.failed_errors > 0, "{f:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_failover_is_followed_with_no_error_on_the_healthy_masters() {
    if !env::private_servers("a_planned_failover") {
        return;
    }
    for run in 0..RUNS {
        one_run(
            "planned-failover",
            run,
            1,
            |c| {
                let r = resp::command(&c.nodes()[3].addr(), &["CLUSTER", "FAILOVER"]).unwrap();
                assert_eq!(r, Reply::Simple("OK".into()));
            },
            Duration::from_millis(800),
        )
        .await;
    }
}

/// `CLUSTER SHARDS`'s view of who owns `slot`, from node `from`.
fn owner_port(c: &RedisCluster, from: usize, slot: u16) -> Option<u16> {
    let Reply::Array(ranges) = resp::command(&c.nodes()[from].addr(), &["CLUSTER", "SLOTS"]).ok()? else {
        return None;
    };
    for r in ranges {
        let Reply::Array(parts) = r else { continue };
        let n = |i: usize| match parts.get(i) {
            Some(Reply::Int(v)) => Some(*v),
            _ => None,
        };
        let (Some(lo), Some(hi)) = (n(0), n(1)) else { continue };
        if (lo..=hi).contains(&i64::from(slot)) {
            if let Some(Reply::Array(node)) = parts.get(2) {
                if let Some(Reply::Int(port)) = node.get(1) {
                    return u16::try_from(*port).ok();
                }
            }
        }
    }
    None
}

fn ok(r: std::io::Result<Reply>, what: &str) {
    match r {
        Ok(Reply::Error(e)) => panic!("{what}: {e}"),
        Err(e) => panic!("{what}: {e}"),
        Ok(_) => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migrated_to_a_new_master_under_load_is_followed_through_ask_and_moved() {
    let test = "a_slot_migrated_to_a_new_master";
    let Some(c) = tokio::task::spawn_blocking(move || cluster(test, 0)).await.unwrap() else {
        return;
    };
    let conn = RedisConnection::connect(&config(&c)).await.unwrap();
    let cache = RedisCache::new(conn.clone());
    let throttle = RedisThrottle::new(conn.clone()).await.unwrap();
    // A new master joins while the client runs.
    let fresh = RedisServer::start_with(&[
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "1000",
        "--cluster-require-full-coverage",
        "no",
    ])
    .unwrap();
    ok(
        resp::command(
            &fresh.addr(),
            &["CLUSTER", "MEET", "127.0.0.1", &c.nodes()[0].port().to_string()],
        ),
        "MEET",
    );
    // Many keys on one slot of master 1: `{tag}` pins them.
    let tag = (0..)
        .map(|i| format!("{}-{i}", env::unique_prefix(test)))
        .find(|t| master_of(slot_of(&format!("{{{t}}}"))) == 1)
        .unwrap();
    let slot = slot_of(&format!("{{{tag}}}"));
    let keys: Vec<String> = (0..200).map(|i| format!("{{{tag}}}:{i}")).collect();
    for k in &keys {
        let set = op::Set::new(k.clone(), "v".into(), Duration::from_secs(60));
        cache.run(&set).await.unwrap();
    }
    let other_keys = keys_per_master(test, 8);
    let load = Load::start(cache.clone(), &other_keys);
    let migrating = [keys.clone(), Vec::new(), Vec::new()];
    let on_slot = Load::start(cache.clone(), &migrating);
    // Wait until every node knows the new one (bounded), then migrate the slot key by
    // key: during it, keys already moved answer ASK from the source.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let known = c.nodes().iter().map(RedisServer::addr).chain([fresh.addr()]).all(|n| {
            resp::command(&n, &["CLUSTER", "INFO"])
                .ok()
                .and_then(|r| r.text())
                .is_some_and(|i| i.contains("cluster_known_nodes:4\r") && i.contains("cluster_state:ok"))
        });
        if known {
            break;
        }
        assert!(Instant::now() < deadline, "the new node joined");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let source = c.nodes()[1].addr();
    let source_id = c.node_id(1).unwrap();
    let target_id = resp::command(&fresh.addr(), &["CLUSTER", "MYID"])
        .unwrap()
        .text()
        .unwrap();
    let s = slot.to_string();
    ok(
        resp::command(&fresh.addr(), &["CLUSTER", "SETSLOT", &s, "IMPORTING", &source_id]),
        "IMPORTING",
    );
    ok(
        resp::command(&source, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &target_id]),
        "MIGRATING",
    );
    let mut moved = 0;
    loop {
        let Reply::Array(batch) = resp::command(&source, &["CLUSTER", "GETKEYSINSLOT", &s, "10"]).unwrap() else {
            panic!("GETKEYSINSLOT")
        };
        if batch.is_empty() {
            break;
        }
        for k in batch {
            let k = k.text().unwrap();
            ok(
                resp::command(
                    &source,
                    &["MIGRATE", "127.0.0.1", &fresh.port().to_string(), &k, "0", "5000"],
                ),
                "MIGRATE",
            );
            moved += 1;
        }
        // Traffic meets the half-migrated slot (ASK) for a while.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The target first, then the source, then the rest — the order Redis documents
    // for `SETSLOT NODE` (and redis-cli's reshard uses): the other way round the source
    // answers MOVED to a target that, still importing, answers MOVED back.
    let others = c.nodes().iter().map(RedisServer::addr).filter(|a| *a != source);
    for node in [fresh.addr(), source.clone()].into_iter().chain(others) {
        ok(
            resp::command(&node, &["CLUSTER", "SETSLOT", &s, "NODE", &target_id]),
            "SETSLOT NODE",
        );
    }
    // The router follows MOVED, then its refresh: the new master serves the slot,
    // scripts included (loaded when its client connected).
    let deadline = Instant::now() + Duration::from_secs(10);
    while owner_port(&c, 0, slot) != Some(fresh.port()) {
        assert!(Instant::now() < deadline, "the slot moved in Redis's view");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ns = palisade_cache_core::Namespace::new(&format!("{{{tag}}}"), "t", "ns").unwrap();
    let scope = Arc::new(palisade_throttle::Scope::new(ns));
    let policy = palisade_throttle::Policy::builder()
        .global_cap(10)
        .key_cap(1)
        .lease_ttl(Duration::from_secs(5))
        .build()
        .unwrap();
    // Every script this connection loaded (the throttle's) was loaded on the new master
    // when its client connected, before any call needed it there.
    for (script, _) in palisade_cache_redis::all_scripts()
        .into_iter()
        .filter(|(s, _)| s.name().starts_with("throttle."))
    {
        let r = resp::command(&fresh.addr(), &["SCRIPT", "EXISTS", script.sha1()]).unwrap();
        assert_eq!(
            r,
            Reply::Array(vec![Reply::Int(1)]),
            "{} on the new master",
            script.name()
        );
    }
    let acquire = palisade_throttle::op::Acquire::new(scope, "k".into(), policy.effective(), None);
    throttle.run(&acquire).await.unwrap();
    let on_slot = on_slot.stop().await;
    let others = load.stop().await;
    let slot_errors = on_slot.iter().filter(|s| !s.ok).count();
    let other_errors = others.iter().filter(|s| !s.ok).count();
    println!(
        "cluster-fault migrate: {moved} keys moved to a new master under load ; calls on the slot {} failed {slot_errors} ; calls elsewhere {} failed {other_errors}",
        on_slot.len(),
        others.len()
    );
    assert!(moved >= 200 && on_slot.len() > 100 && others.len() > 100);
    let errors: Vec<_> = on_slot
        .iter()
        .chain(&others)
        .filter_map(|s| s.error.as_deref())
        .collect();
    assert_eq!(slot_errors, 0, "ASK and MOVED were followed: {errors:?}");
    assert_eq!(other_errors, 0);
    // The importing node really saw ASKING: the ASK path ran, not only MOVED.
    let stats = resp::command(&fresh.addr(), &["INFO", "commandstats"])
        .unwrap()
        .text()
        .unwrap();
    assert!(
        stats.contains("cmdstat_asking:calls="),
        "ASKING reached the new master: {stats}"
    );
    let dbsize = resp::command(&fresh.addr(), &["DBSIZE"]).unwrap();
    assert!(matches!(dbsize, Reply::Int(n) if n >= 200), "{dbsize:?}");
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degraded_over_a_dead_master_falls_back_only_for_its_slots_with_one_degraded_and_one_recovered() {
    let test = "degraded_over_a_dead_master";
    let Some(mut c) = tokio::task::spawn_blocking(move || cluster(test, 1)).await.unwrap() else {
        return;
    };
    let events = Events::new(1024);
    let mut rx = events.subscribe();
    let conn = RedisConnection::connect(&config(&c)).await.unwrap();
    let failover = Failover::new(
        RedisCache::new(conn),
        LocalCache::default(),
        common::fault_ctx(Component::Cache, Mode::ExplicitDegraded, &events),
        FailoverOptions::default(),
        None,
    )
    .unwrap();
    let keys = keys_per_master(test, 16);
    let load = Load::start(failover.clone(), &keys);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let at = Instant::now();
    c.nodes_mut()[0].kill();
    let promotion = promoted(&c, 3, Duration::from_secs(15)).await;
    // Until the outage ends (bounded).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen: Vec<Event> = Vec::new();
    while !seen.iter().any(|e| matches!(e.kind, EventKind::Recovered { .. })) {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = tokio::time::timeout(left, rx.recv())
            .await
            .expect("recovered in time")
            .unwrap();
        seen.push(e);
    }
    let recovered = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let samples = load.stop().await;
    let degraded = seen.iter().filter(|e| matches!(e.kind, EventKind::Degraded)).count();
    let first = seen.iter().find(|e| matches!(e.kind, EventKind::Degraded)).unwrap();
    let named = format!("{first:?}");
    let healthy: Vec<&Sample> = samples.iter().filter(|s| s.master != 0).collect();
    let local_on_healthy = healthy
        .iter()
        .filter(|s| s.provenance == Some(Provenance::LocalDegraded))
        .count();
    let failed_local = samples
        .iter()
        .filter(|s| s.master == 0 && s.provenance == Some(Provenance::LocalDegraded))
        .count();
    let errors = samples.iter().filter(|s| !s.ok).count();
    println!(
        "cluster-fault degraded: promotion {:?} after the kill ; recovered {:?} after the promotion ; healthy-master calls {} of which local {local_on_healthy} ; failed-master calls served locally {failed_local} ; errors {errors}",
        promotion - at,
        recovered.saturating_duration_since(promotion),
        healthy.len()
    );
    assert_eq!(degraded, 1, "one Degraded per outage: {seen:?}");
    assert!(named.contains("slots 0-5460"), "the event names the slots: {named}");
    assert_eq!(local_on_healthy, 0, "healthy masters keep answering from Redis");
    assert!(failed_local > 0, "the dead master's slots were served locally, tagged");
    assert_eq!(errors, 0, "degraded mode answers every call");
    assert!(failover.probe().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_master_down_at_startup_the_others_serve_and_clear_refuses_naming_the_slots() {
    let test = "with_a_master_down_at_startup";
    let Some(mut c) = tokio::task::spawn_blocking(move || cluster(test, 0)).await.unwrap() else {
        return;
    };
    c.nodes_mut()[0].kill();
    let conn = RedisConnection::connect(&config(&c)).await.unwrap();
    let cache = RedisCache::new(conn);
    let keys = keys_per_master(test, 4);
    for k in keys[1].iter().chain(&keys[2]) {
        let set = op::Set::new(k.clone(), "v".into(), Duration::from_secs(60));
        cache.run(&set).await.unwrap();
    }
    let started = Instant::now();
    let err = cache
        .run(&op::Set::new(keys[0][0].clone(), "v".into(), Duration::from_secs(60)))
        .await
        .unwrap_err();
    assert!(started.elapsed() <= DEADLINE + SLACK, "{:?}", started.elapsed());
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        err.to_string().contains("slots 0-5460"),
        "the error names the slots: {err}"
    );
    // A clear would skip the dead master's slots: it refuses before deleting anything.
    let err = cache.run(&op::Clear::new(env::unique_prefix(test))).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(err.to_string().contains("0-5460"), "the error names the slots: {err}");
    for k in keys[1].iter().chain(&keys[2]) {
        let got = cache.run(&op::Get::new(k.clone())).await.unwrap();
        assert!(got.value.is_some(), "{k} survived the refused clear");
    }
    assert!(cache.probe().await.is_err(), "the probe fails while slots are unserved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_warnings_name_full_coverage_missing_replicas_and_unserved_slots() {
    let test = "the_cluster_warnings";
    let Some(mut c) = tokio::task::spawn_blocking(move || cluster(test, 0)).await.unwrap() else {
        return;
    };
    let conn = RedisConnection::connect(&config(&c)).await.unwrap();
    let warnings = conn.cluster_warnings().await;
    assert_eq!(
        warnings.iter().filter(|w| w.contains("no online replica")).count(),
        3,
        "{warnings:?}"
    );
    assert!(!warnings.iter().any(|w| w.contains("full-coverage")), "{warnings:?}");
    ok(
        resp::command(
            &c.nodes()[1].addr(),
            &["CONFIG", "SET", "cluster-require-full-coverage", "yes"],
        ),
        "CONFIG SET",
    );
    let port = c.nodes()[1].port().to_string();
    let warnings = conn.cluster_warnings().await;
    assert!(
        warnings
            .iter()
            .any(|w| w.contains(&port) && w.contains("cluster-require-full-coverage is yes")),
        "{warnings:?}"
    );
    c.nodes_mut()[0].kill();
    // A call finds the dead master; the warnings then name its slots.
    let key = keys_per_master(test, 1)[0][0].clone();
    assert!(RedisCache::new(conn.clone()).run(&op::Get::new(key)).await.is_err());
    let warnings = conn.cluster_warnings().await;
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("slots 0-5460 have no reachable master")),
        "{warnings:?}"
    );
}

/// Whether node `observer` flags node `id` as failed (`fail`, not the local `fail?`).
fn flagged_failed(c: &RedisCluster, observer: usize, id: &str) -> bool {
    let Ok(Reply::Bulk(nodes)) = resp::command(&c.nodes()[observer].addr(), &["CLUSTER", "NODES"]) else {
        return false;
    };
    String::from_utf8_lossy(&nodes).lines().any(|line| {
        let mut parts = line.split(' ');
        parts.next() == Some(id) && parts.nth(1).is_some_and(|flags| flags.split(',').any(|f| f == "fail"))
    })
}

/// Waits (bounded) until node `i` reports `ROLE` slave with its link to the master up.
async fn rejoined_as_replica(c: &RedisCluster, i: usize, within: Duration) {
    let addr = c.nodes()[i].addr();
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Reply::Array(items)) = resp::command(&addr, &["ROLE"]) {
            let role = items.first().and_then(Reply::text);
            let state = items.get(3).and_then(Reply::text);
            if role.as_deref() == Some("slave") && state.as_deref() == Some("connected") {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "node {i} did not rejoin as a replica within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The split-brain window of Redis Cluster: a paused master that resumes after the
/// cluster flagged it failed but before its replica is promoted still believes it is
/// the master, and accepts writes that its demotion then discards. palisade treats a
/// master that the cluster reports failed as owning nothing, so no write it could
/// lose is ever acknowledged: every acknowledged write is on the promoted replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_resumed_before_its_replica_is_promoted_acknowledges_no_write_it_then_loses() {
    let test = "a_master_resumed_before_promotion";
    if !env::private_servers(test) {
        return;
    }
    for run in 0..3 {
        let c = tokio::task::spawn_blocking(move || cluster(test, 1))
            .await
            .unwrap()
            .unwrap();
        let id = c.node_id(0).unwrap();
        let cache = strict_cache(&c).await;
        // Each write a fresh key on master 0's slots; the acknowledged ones are kept.
        let prefix = env::unique_prefix(test);
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (cache, stop) = (cache.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut tick = tokio::time::interval(Duration::from_millis(2));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut i = 0u64;
                while !stop.load(Ordering::Acquire) {
                    tick.tick().await;
                    i += 1;
                    let key = format!("{prefix}:{i}");
                    if master_of(slot_of(&key)) != 0 {
                        continue;
                    }
                    let set = op::Set::new(key.clone(), "v".into(), Duration::from_secs(600));
                    if cache.run(&set).await.is_ok() {
                        acked.push((key, Instant::now()));
                    }
                }
                acked
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.nodes()[0].pause().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(1..3).all(|o| flagged_failed(&c, o, &id)) {
            assert!(Instant::now() < deadline, "master 0 was never flagged failed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        c.nodes()[0].resume().unwrap();
        let resumed = Instant::now();
        let promotion = promoted(&c, 3, Duration::from_secs(15)).await;
        rejoined_as_replica(&c, 0, Duration::from_secs(15)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Release);
        let acked = writer.await.unwrap();
        // Only the keys a client may have sent to the resumed master count here.
        let in_window = acked
            .iter()
            .filter(|(_, at)| *at >= resumed && *at <= promotion)
            .count();
        let mut lost = Vec::new();
        for (key, _) in &acked {
            if cache.run(&op::Get::new(key.clone())).await.unwrap().value.is_none() {
                lost.push(key.clone());
            }
        }
        println!(
            "cluster-fault resumed-before-promotion run={run}: resumed {} ms before the promotion, {} writes acknowledged, {in_window} of them in that window, {} lost",
            promotion.saturating_duration_since(resumed).as_millis(),
            acked.len(),
            lost.len()
        );
        assert!(
            resumed < promotion,
            "the master resumed only after the promotion: this run proves nothing"
        );
        assert!(lost.is_empty(), "acknowledged writes lost at the failover: {lost:?}");
    }
}
