//! Throttle: acquire + release and GCRA, local vs Redis; the Redis decision vs raw fred
//! `EVALSHA` of a trivial one-key script; local GCRA vs governor. 1 and 50 in flight.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use fred::prelude::*;
use fred::types::scripts::Script;
use palisade_benches::{CONCURRENCY, bench_in_flight, redis, runtime};
use palisade_cache_core::Namespace;
use palisade_cache_local::LocalThrottle;
use palisade_cache_redis::{RedisConfig, RedisConnection, RedisThrottle};
use palisade_throttle::{Decision, Policy, Rate, RateLimiter, Throttle, ThrottleBackend};

const KEYS: usize = 1000;

fn throttle_bench<B: ThrottleBackend>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    backend: B,
    n: usize,
) {
    let ns = Namespace::new("bench", "tenant", "mx").unwrap();
    let t = Throttle::new(backend.clone(), ns.clone());
    let r = RateLimiter::new(backend, ns.sibling("rl").unwrap());
    let keys: Vec<String> = (0..KEYS).map(|i| format!("mx{i}.example.com")).collect();
    // Caps never bind: the bench measures the decision, not the waiting.
    let policy = Policy::builder()
        .global_cap(1_000_000)
        .key_cap(1_000_000)
        .min_interval(Duration::ZERO)
        .lease_ttl(Duration::from_secs(30))
        .build()
        .unwrap();
    let rate = Rate::per_second(1_000_000).burst(1_000_000).build().unwrap();
    let mut g = c.benchmark_group("throttle_acquire_release");
    bench_in_flight(&mut g, rt, name, n, |i| {
        let (t, keys) = (&t, &keys);
        async move {
            let Decision::Acquired(p) = t.acquire(&keys[i % KEYS], &policy).await.unwrap().value else {
                panic!("denied")
            };
            p.release().await.unwrap();
        }
    });
    g.finish();
    let mut g = c.benchmark_group("gcra");
    bench_in_flight(&mut g, rt, name, n, |i| {
        let (r, keys) = (&r, &keys);
        async move {
            black_box(r.limit(&keys[i % KEYS], &rate).await.unwrap());
        }
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let server = redis();
    let (remote, fred, trivial) = rt.block_on(async {
        let conn = RedisConnection::connect(&RedisConfig::from_url(&server.url()).expect("a valid Redis URL"))
            .await
            .unwrap();
        let remote = RedisThrottle::new(conn).await.unwrap().with_restart_hold(false);
        let fred = Builder::from_config(Config::from_url(&server.url()).unwrap())
            .build()
            .unwrap();
        fred.init().await.unwrap();
        let trivial = Script::from_lua("return 1");
        trivial.load(&fred).await.unwrap();
        (remote, fred, trivial)
    });
    let governor = governor::RateLimiter::keyed(governor::Quota::per_second(NonZeroU32::new(1_000_000).unwrap()));
    let keys: Vec<String> = (0..KEYS).map(|i| format!("mx{i}.example.com")).collect();
    for n in CONCURRENCY {
        throttle_bench(c, &rt, "palisade_local", LocalThrottle::default(), n);
        throttle_bench(c, &rt, "palisade_redis", remote.clone(), n);
        for group in ["throttle_acquire_release", "gcra"] {
            let mut g = c.benchmark_group(group);
            bench_in_flight(&mut g, &rt, "fred_evalsha_trivial", n, |i| {
                let (fred, trivial, keys) = (&fred, &trivial, &keys);
                async move {
                    let v: i64 = trivial.evalsha(fred, keys[i % KEYS].as_str(), ()).await.unwrap();
                    black_box(v);
                }
            });
            g.finish();
        }
        let mut g = c.benchmark_group("gcra");
        bench_in_flight(&mut g, &rt, "governor", n, |i| {
            let (governor, keys) = (&governor, &keys);
            async move {
                let _ = black_box(governor.check_key(&keys[i % KEYS]));
            }
        });
        g.finish();
    }
    drop(server);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
