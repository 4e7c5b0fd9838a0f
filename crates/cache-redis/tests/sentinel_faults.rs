//! Redis Sentinel: following a failover with writes flowing, on a real topology (one
//! primary, one replica, three sentinels, `down-after-milliseconds` 1000) started by
//! each test. Each fault test prints its figures: time from the fault to the first
//! successful write on the new primary, writes failed in the gap, acknowledged writes
//! lost, writes that landed on a demoted node.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use palisade_cache_core::{
    Backend, Cache, Component, Event, EventKind, Events, Failover, FailoverOptions, Mode, Provenance, Run, Strict,
    cache::op,
};
use palisade_cache_local::LocalCache;
use palisade_cache_redis::{RedisCache, RedisConfig, RedisConnection};
use palisade_redis_server::env;
use palisade_redis_server::resp::{self, Reply};
use palisade_redis_server::sentinel::SentinelGroup;
use palisade_redis_server::server::RedisServer;
use tokio::sync::broadcast;

const DEADLINE: Duration = Duration::from_millis(300);
const SLACK: Duration = Duration::from_millis(300);

fn group(test: &str) -> Option<SentinelGroup> {
    if !(RedisServer::binary_available() || env::required()) {
        env::skip(test, "no redis-server binary");
        return None;
    }
    Some(SentinelGroup::start_default().unwrap_or_else(|e| panic!("{test}: sentinel topology: {e}")))
}

fn config(g: &SentinelGroup) -> RedisConfig {
    RedisConfig::from_url(&g.url())
        .unwrap()
        .with_command_timeout(DEADLINE)
        .with_connect_timeout(Duration::from_millis(1500))
        .with_sentinel_poll(Duration::from_millis(500))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_to_the_primary_the_sentinels_name() {
    let Some(g) = group("sentinel_connects") else { return };
    let conn = RedisConnection::connect(&config(&g)).await.unwrap();
    let primary = g.primary_port().unwrap();
    assert_eq!(conn.role().await.unwrap(), "master");
    let info = conn.info();
    assert_eq!(info.topology, "sentinel");
    assert_eq!(info.sentinel_service.as_deref(), Some("palisade"));
    let cache = RedisCache::new(conn);
    cache
        .run(&op::Set::new(
            "sentinel-k".to_owned(),
            bytes::Bytes::copy_from_slice(b"v"),
            Duration::from_secs(60),
        ))
        .await
        .unwrap();
    assert_eq!(
        resp::command(&format!("127.0.0.1:{primary}"), &["GET", "sentinel-k"])
            .unwrap()
            .text()
            .as_deref(),
        Some("v")
    );
}

/// What a run of writes saw around a fault.
#[derive(Debug, Default)]
struct Figures {
    acknowledged: BTreeMap<u64, ()>,
    failed: u64,
    over_deadline: u64,
    first_ok_after_fault: Option<Duration>,
}

/// Writes `w<n>` keys one after another until `stop`, recording which were
/// acknowledged and how long the gap after `fault_at` lasted.
async fn write_until(
    cache: RedisCache,
    stop: Arc<AtomicBool>,
    fault_at: Arc<std::sync::Mutex<Option<Instant>>>,
) -> Figures {
    let mut f = Figures::default();
    let mut n = 0u64;
    let mut failed_since_fault = false;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let started = Instant::now();
        let r = cache
            .run(&op::Set::new(
                format!("w{n}"),
                bytes::Bytes::copy_from_slice(b"x"),
                Duration::from_secs(600),
            ))
            .await;
        if started.elapsed() > DEADLINE + SLACK {
            f.over_deadline += 1;
        }
        let fault = *fault_at.lock().unwrap();
        match r {
            Ok(_) => {
                f.acknowledged.insert(n, ());
                if let Some(t) = fault {
                    if failed_since_fault && f.first_ok_after_fault.is_none() {
                        f.first_ok_after_fault = Some(t.elapsed());
                    }
                }
            }
            Err(e) => {
                assert!(e.is_unavailable(), "a write failed with {e:?}");
                f.failed += 1;
                if fault.is_some() {
                    failed_since_fault = true;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    f
}

fn keys_on(port: u16) -> Vec<String> {
    match resp::command(&format!("127.0.0.1:{port}"), &["KEYS", "w*"]).unwrap() {
        Reply::Array(items) => items.iter().filter_map(Reply::text).collect(),
        other => panic!("KEYS: {other:?}"),
    }
}

enum Fault {
    Kill,
    Pause,
    Planned,
}

async fn failover_with_writes(test: &str, fault: Fault) {
    let Some(mut g) = group(test) else { return };
    let conn = RedisConnection::connect(&config(&g)).await.unwrap();
    let cache = RedisCache::new(conn.clone());
    let old = g.primary_port().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let fault_at = Arc::new(std::sync::Mutex::new(None));
    let writer = tokio::spawn(write_until(cache.clone(), Arc::clone(&stop), Arc::clone(&fault_at)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    *fault_at.lock().unwrap() = Some(Instant::now());
    match fault {
        Fault::Kill => g.node_mut(old).unwrap().kill(),
        Fault::Pause => g.node_mut(old).unwrap().pause().unwrap(),
        Fault::Planned => g.failover().unwrap(),
    }
    let new = g.wait_new_primary(old, Duration::from_secs(20)).unwrap();
    let promoted = fault_at.lock().unwrap().unwrap().elapsed();
    // Writes keep flowing until a write succeeded on the new primary and a while after.
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if conn.info().connected_to.is_some_and(|c| c.port == new) && cache.probe().await.is_ok() {
            break;
        }
        assert!(Instant::now() < until, "{test}: never moved to the new primary {new}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let figures = writer.await.unwrap();
    if let Fault::Pause = fault {
        g.node_mut(old).unwrap().resume().unwrap();
    }
    // The old primary comes back (restarted after a kill, as a replica) or is demoted.
    if let Fault::Kill = fault {
        g.rejoin(old).unwrap();
    }
    let demoted_by = Instant::now() + Duration::from_secs(20);
    while g.role(old).as_deref() != Some("slave") {
        assert!(Instant::now() < demoted_by, "{test}: the old primary was never demoted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A demoted node refuses writes: no write of ours can land there any more.
    assert!(matches!(
        resp::command(&format!("127.0.0.1:{old}"), &["SET", "probe", "x"]).unwrap(),
        Reply::Error(e) if e.starts_with("READONLY")
    ));
    let on_new: std::collections::BTreeSet<u64> = keys_on(new)
        .iter()
        .filter_map(|k| k.strip_prefix('w').and_then(|n| n.parse().ok()))
        .collect();
    let lost: Vec<u64> = figures
        .acknowledged
        .keys()
        .filter(|n| !on_new.contains(n))
        .copied()
        .collect();
    eprintln!(
        "FIGURES {test}: promotion {promoted:?} after the fault; first write on the new primary {:?} after the \
         fault; {} writes failed in the gap; {} acknowledged, {} of them lost ({lost:?}); {} over the deadline",
        figures.first_ok_after_fault,
        figures.failed,
        figures.acknowledged.len(),
        lost.len(),
        figures.over_deadline,
    );
    assert_eq!(figures.over_deadline, 0, "{test}: a write outlived its deadline");
    assert!(
        figures.first_ok_after_fault.is_some() || figures.failed == 0,
        "{test}: writes failed and none succeeded afterwards"
    );
    assert!(!figures.acknowledged.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_is_followed_to_the_promoted_replica() {
    failover_with_writes("sentinel_kill", Fault::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_primary_is_followed_to_the_promoted_replica() {
    failover_with_writes("sentinel_pause", Fault::Pause).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_failover_is_followed_without_waiting_for_the_socket_to_break() {
    failover_with_writes("sentinel_planned", Fault::Planned).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sentinel_killed_changes_nothing() {
    let Some(mut g) = group("sentinel_one_down") else {
        return;
    };
    let conn = RedisConnection::connect(&config(&g)).await.unwrap();
    let cache = RedisCache::new(conn);
    g.sentinels_mut()[0].kill();
    for i in 0..50 {
        cache
            .run(&op::Set::new(
                format!("k{i}"),
                bytes::Bytes::copy_from_slice(b"v"),
                Duration::from_secs(60),
            ))
            .await
            .unwrap();
    }
    // A new connection still finds the primary through the remaining sentinels.
    let again = RedisConnection::connect(&config(&g)).await.unwrap();
    assert_eq!(again.role().await.unwrap(), "master");
    assert_eq!(
        RedisCache::new(again)
            .run(&op::Get::new("k49".to_owned()))
            .await
            .unwrap()
            .value
            .as_deref(),
        Some(&b"v"[..])
    );
}

async fn next_event(rx: &mut broadcast::Receiver<Event>, within: Duration) -> Event {
    tokio::time::timeout(within, rx.recv())
        .await
        .expect("an event in time")
        .expect("not lagged")
}

/// Calls `cache.get` until it answers with `provenance`, within `within`.
async fn until_provenance<B: palisade_cache_core::CacheBackend>(
    cache: &Cache<B>,
    provenance: Provenance,
    within: Duration,
) {
    let until = Instant::now() + within;
    loop {
        if cache.get("p").await.is_ok_and(|t| t.provenance == provenance) {
            return;
        }
        assert!(Instant::now() < until, "never answered with {provenance}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degraded_over_sentinel_one_degraded_local_answers_then_one_recovered_on_the_new_primary() {
    let Some(mut g) = group("sentinel_degraded") else {
        return;
    };
    let events = Events::new(64);
    let mut rx = events.subscribe();
    let conn = RedisConnection::connect(&config(&g)).await.unwrap();
    let cache = Cache::new(
        Failover::new(
            RedisCache::new(conn.clone()),
            LocalCache::default(),
            common::fault_ctx(Component::Cache, Mode::ExplicitDegraded, &events),
            FailoverOptions::default(),
            None,
        )
        .unwrap(),
        common::fault_ns("sentinel_degraded", "c"),
    );
    cache.set("k", b"v", Duration::from_secs(60)).await.unwrap();
    let old = g.primary_port().unwrap();
    g.node_mut(old).unwrap().kill();
    until_provenance(&cache, Provenance::LocalDegraded, Duration::from_secs(2)).await;
    assert_eq!(
        next_event(&mut rx, Duration::from_secs(1)).await.kind,
        EventKind::Degraded
    );
    let new = g.wait_new_primary(old, Duration::from_secs(20)).unwrap();
    let e = next_event(&mut rx, Duration::from_secs(15)).await;
    assert!(matches!(e.kind, EventKind::Recovered { .. }), "{e:?}");
    assert!(rx.try_recv().is_err(), "exactly one Degraded and one Recovered");
    until_provenance(&cache, Provenance::Distributed, Duration::from_secs(2)).await;
    assert_eq!(conn.info().connected_to.map(|c| c.port), Some(new));
    assert_eq!(conn.role().await.unwrap(), "master");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_over_sentinel_fails_every_call_within_its_deadline_in_the_gap_with_one_event_each_way() {
    let Some(g) = group("sentinel_strict") else { return };
    let events = Events::new(64);
    let mut rx = events.subscribe();
    let conn = RedisConnection::connect(&config(&g)).await.unwrap();
    let cache = Cache::new(
        Strict::new(
            RedisCache::new(conn),
            common::fault_ctx(Component::Cache, Mode::StrictDistributed, &events),
        )
        .unwrap(),
        common::fault_ns("sentinel_strict", "c"),
    );
    let old = g.primary_port().unwrap();
    g.failover().unwrap();
    let mut failed = 0;
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let started = Instant::now();
        match cache.set("k", b"v", Duration::from_secs(60)).await {
            Ok(t) => {
                assert_eq!(t.provenance, Provenance::Distributed, "strict never answers locally");
                if failed > 0 && g.primary_port() != Some(old) {
                    break;
                }
            }
            Err(e) => {
                assert!(e.is_unavailable(), "{e:?}");
                failed += 1;
            }
        }
        assert!(started.elapsed() <= DEADLINE + SLACK, "{:?}", started.elapsed());
        assert!(Instant::now() < until, "strict never served the new primary");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(
        next_event(&mut rx, Duration::from_secs(1)).await.kind,
        EventKind::UnavailableAtRuntime { .. }
    ));
    assert!(matches!(
        next_event(&mut rx, Duration::from_secs(5)).await.kind,
        EventKind::Recovered { .. }
    ));
    assert!(rx.try_recv().is_err());
}
