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
    for key in &keys {
        match resp::command(addr, &["PTTL", key]).unwrap() {
            Reply::Int(ms) if ms > 0 => {}
            other => panic!("{key} has no TTL: PTTL = {other:?}"),
        }
    }
    permit.release().await.unwrap();
}
