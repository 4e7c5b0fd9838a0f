//! Bounded memory: every key palisade writes to Redis has a TTL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use palisade_cache_core::{Cache, Namespace};
use palisade_cache_redis::{RedisCache, RedisConfig, RedisConnection, RedisJobStore, RedisThrottle};
use palisade_job_store::{JobRecord, JobStatus, JobStore, Patch};
use palisade_redis_server::env;
use palisade_redis_server::resp::{self, Reply};
use palisade_throttle::{Policy, Rate, RateLimiter, Throttle};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_written_by_every_contract_has_a_ttl() {
    let Some(url) = env::redis_url("every_key_has_a_ttl") else {
        return;
    };
    let prefix = env::unique_prefix("ttl");
    let conn = RedisConnection::connect(&RedisConfig::from_url(&url).expect("a valid Redis URL"))
        .await
        .unwrap();
    let ns = |name: &str| Namespace::new(&prefix, "t", name).unwrap();

    let cache = Cache::new(RedisCache::new(conn.clone()), ns("cache"));
    cache.set("k", b"v", Duration::from_secs(600)).await.unwrap();
    cache.set_if_absent("nx", b"v", Duration::from_secs(600)).await.unwrap();
    let jobs = JobStore::new(RedisJobStore::new(conn.clone()).await.unwrap(), ns("jobs"));
    jobs.create("j", &JobRecord::queued(), Duration::from_secs(600))
        .await
        .unwrap();
    jobs.update("j", &Patch::new().progress(1)).await.unwrap();
    jobs.transition("j", JobStatus::Queued, JobStatus::Running, &Patch::new())
        .await
        .unwrap();
    jobs.heartbeat("j").await.unwrap();
    let throttle_backend = RedisThrottle::new(conn).await.unwrap().with_restart_hold(false);
    let t = Throttle::new(throttle_backend.clone(), ns("mx"));
    let p = Policy::builder()
        .global_cap(5)
        .key_cap(5)
        .min_interval(Duration::from_millis(10))
        .lease_ttl(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut permit = t.acquire("host", &p).await.unwrap().value.permit().unwrap();
    permit.extend(Duration::from_secs(60)).await.unwrap();
    t.acquire("host2", &p).await.unwrap();
    t.penalize("host3", Duration::from_secs(5)).await.unwrap();
    // Waiting: key queues, the waiters' entries and policies, the global queue, the
    // handed set and the grant record of a waiter served by a handoff.
    {
        use palisade_cache_core::Run;
        use palisade_throttle::{Waiter, op};
        let one = Policy::builder()
            .global_cap(1)
            .key_cap(1)
            .lease_ttl(Duration::from_secs(30))
            .build()
            .unwrap();
        let w = Throttle::new(throttle_backend.clone(), ns("wait"));
        let scope = std::sync::Arc::new(w.scope().clone());
        let queue = |key: &str, ticket: u64| {
            op::Acquire::new(
                std::sync::Arc::clone(&scope),
                key.into(),
                one.effective(),
                Some(Waiter::new(ticket, Duration::from_secs(60))),
            )
        };
        let held = w.acquire("q", &one).await.unwrap().value.permit().unwrap();
        for (key, ticket) in [("q", 7), ("q", 8), ("other", 9)] {
            throttle_backend.run(&queue(key, ticket)).await.unwrap();
        }
        // Handed off to 7, which takes it by asking again; its release hands the slot
        // off to 8, which does not take it (the handed set keeps it).
        held.release().await.unwrap();
        let (served, _) = throttle_backend.run(&queue("q", 7)).await.unwrap().value;
        let palisade_throttle::RawDecision::Acquired(lease, ops) = served else {
            panic!("7 was handed the slot: {served:?}")
        };
        ops.release("q", lease.id).await.unwrap();
    }
    RateLimiter::new(throttle_backend, ns("rl"))
        .limit("ip", &Rate::per_second(10).burst(5).build().unwrap())
        .await
        .unwrap();

    let addr = url.trim_start_matches("redis://");
    let Reply::Array(keys) = resp::command(addr, &["KEYS", &format!("*{prefix}*")]).unwrap() else {
        panic!()
    };
    let keys: Vec<String> = keys.iter().filter_map(Reply::text).collect();
    // cache k, nx; job j; throttle g, seq, k:host, s:host, s:host2, s:host3; rate r:ip (the
    // host2 permit was dropped and released: Redis deletes the emptied lease set).
    assert!(keys.len() >= 10, "{keys:?}");
    for kind in [":q:", ":qe", ":gq", ":w:", ":h:"] {
        assert!(keys.iter().any(|k| k.contains(kind)), "no {kind} key among {keys:?}");
    }
    for end in [":p", ":l"] {
        assert!(keys.iter().any(|k| k.ends_with(end)), "no …{end} key among {keys:?}");
    }
    for key in &keys {
        match resp::command(addr, &["PTTL", key]).unwrap() {
            Reply::Int(ms) if ms > 0 => {}
            other => panic!("{key} has no TTL: PTTL = {other:?}"),
        }
    }
    permit.release().await.unwrap();
}
