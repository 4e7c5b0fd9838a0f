//! Cache: get hit, get miss, set — palisade local vs raw moka, palisade Redis vs raw
//! fred, at 1 and 50 operations in flight.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use fred::prelude::*;
use fred::types::Expiration;
use palisade_benches::{CONCURRENCY, bench_in_flight, redis, runtime};
use palisade_cache_core::{
    Backend, Cache, Component, Events, Failover, FailoverOptions, Mode, Namespace, Run, SupervisorContext, cache::op,
};
use palisade_cache_local::LocalCache;
use palisade_cache_redis::{RedisCache, RedisConfig, RedisConnection};

const KEYS: usize = 1000;
const VALUE: [u8; 100] = [7; 100];
const TTL: Duration = Duration::from_secs(600);

struct FixedTtl;

impl moka::Expiry<String, Arc<[u8]>> for FixedTtl {
    fn expire_after_create(&self, _: &String, _: &Arc<[u8]>, _: std::time::Instant) -> Option<Duration> {
        Some(TTL)
    }
}

fn ns() -> Namespace {
    Namespace::new("bench", "tenant", "cache").unwrap()
}

fn user_key(i: usize) -> String {
    format!("key:{}", i % KEYS)
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let server = redis();
    let ns = ns();
    // Keys are built before the measurements, for both sides: palisade's cost of
    // encoding a user key into a storage key is part of what is measured; the
    // bench's own formatting is not.
    let user_keys: Arc<Vec<String>> = Arc::new((0..KEYS).map(user_key).collect());
    let keys: Arc<Vec<String>> = Arc::new(
        user_keys
            .iter()
            .map(|k| ns.key(palisade_cache_core::Contract::Cache, k).unwrap())
            .collect(),
    );
    let missing_user: Arc<Vec<String>> = Arc::new((0..KEYS).map(|i| format!("missing:{i}")).collect());
    let missing: Arc<Vec<String>> = Arc::new(
        missing_user
            .iter()
            .map(|k| ns.key(palisade_cache_core::Contract::Cache, k).unwrap())
            .collect(),
    );

    // palisade over moka, and moka alone holding the same encoded keys and bytes.
    let local = Cache::new(LocalCache::default(), ns.clone());
    let moka: moka::future::Cache<String, Arc<[u8]>> =
        moka::future::Cache::builder().max_capacity(64 * 1024 * 1024).build();
    // moka configured as palisade configures it (per-entry expiry, weight in bytes, LRU):
    // separates the cost of that configuration from palisade's own.
    let moka_configured: moka::future::Cache<String, Arc<[u8]>> = moka::future::Cache::builder()
        .max_capacity(64 * 1024 * 1024)
        .weigher(|k: &String, v: &Arc<[u8]>| (k.len() + v.len() + 64) as u32)
        .eviction_policy(moka::policy::EvictionPolicy::lru())
        .expire_after(FixedTtl)
        .build();
    // Degraded mode's wrapper over a healthy in-process primary: what the wrapper itself
    // (health check, routing) adds to every call, without a network round trip.
    let degraded = rt.block_on(async {
        let ctx = SupervisorContext::new(Component::Cache, Mode::ExplicitDegraded, Events::default());
        let failover = Failover::new(
            LocalCache::default(),
            LocalCache::default(),
            ctx,
            FailoverOptions::default(),
            None,
        );
        Cache::new(failover.unwrap(), ns.clone())
    });
    // palisade over fred, and one fred client alone (same settings as the bench's
    // default fred: a plain client).
    let (remote, fred) = rt.block_on(async {
        let conn = RedisConnection::connect(&RedisConfig::from_url(&server.url()).expect("a valid Redis URL"))
            .await
            .unwrap();
        let remote = Cache::new(RedisCache::new(conn), ns.clone());
        let fred = Builder::from_config(Config::from_url(&server.url()).unwrap())
            .build()
            .unwrap();
        fred.init().await.unwrap();
        for i in 0..KEYS {
            local.set(&user_key(i), &VALUE, TTL).await.unwrap();
            degraded.set(&user_key(i), &VALUE, TTL).await.unwrap();
            moka.insert(keys[i].clone(), Arc::from(&VALUE[..])).await;
            moka_configured.insert(keys[i].clone(), Arc::from(&VALUE[..])).await;
            remote.set(&user_key(i), &VALUE, TTL).await.unwrap();
        }
        (remote, fred)
    });

    for n in CONCURRENCY {
        let mut g = c.benchmark_group("cache_get_hit");
        bench_in_flight(&mut g, &rt, "palisade_local", n, |i| {
            let (local, user_keys) = (&local, &user_keys);
            async move {
                black_box(local.get(&user_keys[i % KEYS]).await.unwrap());
            }
        });
        bench_in_flight(&mut g, &rt, "moka", n, |i| {
            let (moka, keys) = (&moka, &keys);
            async move {
                black_box(moka.get(&keys[i % KEYS]).await.unwrap());
            }
        });
        bench_in_flight(&mut g, &rt, "palisade_degraded_local", n, |i| {
            let (degraded, user_keys) = (&degraded, &user_keys);
            async move {
                black_box(degraded.get(&user_keys[i % KEYS]).await.unwrap());
            }
        });
        bench_in_flight(&mut g, &rt, "local_backend", n, |i| {
            let (local, keys) = (local.backend(), &keys);
            async move {
                black_box(local.run(&op::Get::new(keys[i % KEYS].clone())).await.unwrap());
            }
        });
        bench_in_flight(&mut g, &rt, "moka_configured", n, |i| {
            let (moka, keys) = (&moka_configured, &keys);
            async move {
                black_box(moka.get(&keys[i % KEYS]).await.unwrap());
            }
        });
        bench_in_flight(&mut g, &rt, "palisade_redis", n, |i| {
            let (remote, user_keys) = (&remote, &user_keys);
            async move {
                black_box(remote.get(&user_keys[i % KEYS]).await.unwrap());
            }
        });
        bench_in_flight(&mut g, &rt, "fred", n, |i| {
            let (fred, keys) = (&fred, &keys);
            async move {
                let v: Option<fred::bytes::Bytes> = fred.get(keys[i % KEYS].as_str()).await.unwrap();
                black_box(v.unwrap());
            }
        });
        g.finish();

        let mut g = c.benchmark_group("cache_get_miss");
        bench_in_flight(&mut g, &rt, "palisade_local", n, |i| {
            let (local, missing_user) = (&local, &missing_user);
            async move {
                black_box(local.get(&missing_user[i % KEYS]).await.unwrap());
            }
        });
        bench_in_flight(&mut g, &rt, "moka", n, |i| {
            let (moka, missing) = (&moka, &missing);
            async move {
                black_box(moka.get(&missing[i % KEYS]).await);
            }
        });
        bench_in_flight(&mut g, &rt, "palisade_redis", n, |i| {
            let (remote, missing_user) = (&remote, &missing_user);
            async move {
                black_box(remote.get(&missing_user[i % KEYS]).await.unwrap());
            }
        });
        bench_in_flight(&mut g, &rt, "fred", n, |i| {
            let (fred, missing) = (&fred, &missing);
            async move {
                let v: Option<fred::bytes::Bytes> = fred.get(missing[i % KEYS].as_str()).await.unwrap();
                black_box(v);
            }
        });
        g.finish();

        let mut g = c.benchmark_group("cache_set");
        bench_in_flight(&mut g, &rt, "palisade_local", n, |i| {
            let (local, user_keys) = (&local, &user_keys);
            async move {
                local.set(&user_keys[i % KEYS], &VALUE, TTL).await.unwrap();
            }
        });
        bench_in_flight(&mut g, &rt, "moka", n, |i| {
            let (moka, keys) = (&moka, &keys);
            async move {
                moka.insert(keys[i % KEYS].clone(), Arc::from(&VALUE[..])).await;
            }
        });
        bench_in_flight(&mut g, &rt, "palisade_redis", n, |i| {
            let (remote, user_keys) = (&remote, &user_keys);
            async move {
                remote.set(&user_keys[i % KEYS], &VALUE, TTL).await.unwrap();
            }
        });
        bench_in_flight(&mut g, &rt, "fred", n, |i| {
            let (fred, keys) = (&fred, &keys);
            async move {
                let _: () = fred
                    .set(
                        keys[i % KEYS].as_str(),
                        &VALUE[..],
                        Some(Expiration::PX(600_000)),
                        None,
                        false,
                    )
                    .await
                    .unwrap();
            }
        });
        g.finish();
    }
    let _ = remote.backend().status();
    drop(server);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
