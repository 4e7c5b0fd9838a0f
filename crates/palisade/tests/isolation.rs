//! The contracts' key spaces are disjoint: with one tenant, one namespace name and one
//! key for all four, no operation of one contract — `clear` included — reads,
//! overwrites or deletes another's data. On every backend the umbrella builds: local,
//! strict and degraded over Redis, strict over a Redis Cluster.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use palisade::{Decision, JobRecord, JobStatus, Palisade, Patch, Policy, Rate, RateDecision};
#[cfg(feature = "redis")]
use {palisade::Mode, palisade_redis_server::env};

const NS: &str = "jobs";
const KEY: &str = "k1";

async fn check_isolation(p: Palisade) {
    let ttl = Duration::from_secs(60);
    let cache = p.cache().namespace(NS).unwrap();
    let jobs = p.jobs().namespace(NS).unwrap();
    let throttle = p.throttle().namespace(NS).unwrap();
    let limiter = p.rate_limiter().namespace(NS).unwrap();
    let policy = Policy::builder()
        .global_cap(5)
        .key_cap(1)
        .min_interval(Duration::ZERO)
        .lease_ttl(Duration::from_secs(30))
        .build()
        .unwrap();
    let rate = Rate::per(1, Duration::from_secs(3600)).burst(3).build().unwrap();

    // One item of each contract under the same tenant, namespace and key.
    jobs.create(KEY, &JobRecord::queued(), ttl).await.unwrap();
    jobs.update(KEY, &Patch::new().field("owner", "api")).await.unwrap();
    let Decision::Acquired(permit) = throttle.acquire(KEY, &policy).await.unwrap().value else {
        panic!("the first acquisition is granted")
    };
    assert!(matches!(
        limiter.limit(KEY, &rate).await.unwrap().value,
        RateDecision::Allowed { remaining: 2, .. }
    ));
    cache.set(KEY, b"cached", ttl).await.unwrap();

    // Every cache operation on that name, clear included.
    cache.set(KEY, b"overwrite", ttl).await.unwrap();
    cache.set_if_absent("other", b"x", ttl).await.unwrap();
    assert!(cache.delete(KEY).await.unwrap().value);
    assert!(cache.clear().await.unwrap().value >= 1);
    // The job record, the lease and the rate state are untouched.
    let job = jobs
        .get(KEY)
        .await
        .unwrap()
        .value
        .expect("the job record survives the cache");
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.fields.get("owner").map(|v| &v[..]), Some(&b"api"[..]));
    assert_eq!(throttle.inspect(KEY).await.unwrap().value.key_leases, 1);
    assert!(matches!(
        limiter.limit(KEY, &rate).await.unwrap().value,
        RateDecision::Allowed { remaining: 1, .. }
    ));

    // The other way round: job, throttle and limiter operations leave the cache alone.
    cache.set(KEY, b"cached", ttl).await.unwrap();
    assert!(jobs.delete(KEY).await.unwrap().value);
    throttle.penalize(KEY, Duration::from_secs(5)).await.unwrap();
    throttle.clear_penalty(KEY).await.unwrap();
    permit.release().await.unwrap();
    limiter.limit(KEY, &rate).await.unwrap();
    assert_eq!(
        cache.get(KEY).await.unwrap().value.as_deref(),
        Some(&b"cached"[..]),
        "the cache entry survives the other contracts"
    );
    jobs.create(KEY, &JobRecord::queued(), ttl).await.unwrap();
    assert_eq!(cache.get(KEY).await.unwrap().value.as_deref(), Some(&b"cached"[..]));
    cache.clear().await.unwrap();
    assert!(jobs.get(KEY).await.unwrap().value.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contracts_never_share_keys_in_local_mode() {
    check_isolation(Palisade::builder().tenant("iso").build().await.unwrap()).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contracts_never_share_keys_on_redis_strict_and_degraded() {
    let Some(url) = env::redis_url("contracts_isolation_redis") else {
        return;
    };
    for mode in [Mode::StrictDistributed, Mode::ExplicitDegraded] {
        if mode == Mode::ExplicitDegraded && !cfg!(feature = "local") {
            continue;
        }
        let p = Palisade::builder()
            .mode(mode)
            .redis_url(&url)
            .tenant(&env::unique_prefix("iso"))
            .build()
            .await
            .unwrap();
        check_isolation(p).await;
    }
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contracts_never_share_keys_on_a_cluster() {
    let Some(nodes) = env::cluster_nodes("contracts_isolation_cluster") else {
        return;
    };
    let p = Palisade::builder()
        .redis_url(&format!("redis-cluster://{}", nodes.join(",")))
        .tenant(&env::unique_prefix("iso"))
        .build()
        .await
        .unwrap();
    check_isolation(p).await;
}
