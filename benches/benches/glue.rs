//! The glue's own cost, in process (local backends, so only palisade's code is timed):
//! the tower `RateLimitLayer` around a trivial service vs the bare limiter call it
//! makes, and one operation through `ByMode` (its span created with no subscriber, the
//! `metrics` feature off) vs the backend called directly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use palisade_benches::{bench_in_flight, runtime};
use palisade_cache_core::{ByMode, Cache, Namespace, Never};
use palisade_cache_local::{LocalCache, LocalThrottle};
use palisade_throttle::{Rate, RateLimiter};
use palisade_tower::{Global, RateLimitLayer};
use tower::{Layer, Service, ServiceExt};

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let ns = Namespace::new("bench", "tenant", "rl").unwrap();
    let limiter = RateLimiter::new(LocalThrottle::default(), ns.clone());
    let rate = Rate::per_second(1_000_000).burst(1_000_000).build().unwrap();

    let mut g = c.benchmark_group("ratelimit_layer");
    bench_in_flight(&mut g, &rt, "palisade_limiter", 1, |_| {
        let limiter = &limiter;
        async move {
            black_box(limiter.limit("global", &rate).await.unwrap());
        }
    });
    let inner = tower::service_fn(|_req: http::Request<()>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    });
    let svc = RateLimitLayer::new(limiter.clone(), rate, Global).layer(inner);
    bench_in_flight(&mut g, &rt, "palisade_layer", 1, |_| {
        let mut svc = svc.clone();
        async move {
            let svc = svc.ready().await.unwrap();
            black_box(svc.call(http::Request::new(())).await.unwrap());
        }
    });
    g.finish();

    let cache_ns = Namespace::new("bench", "tenant", "cache").unwrap();
    let direct = Cache::new(LocalCache::default(), cache_ns.clone());
    let by_mode: Cache<ByMode<LocalCache, Never, Never>> = Cache::new(ByMode::Local(LocalCache::default()), cache_ns);
    rt.block_on(async {
        direct.set("k", b"v", Duration::from_secs(3600)).await.unwrap();
        by_mode.set("k", b"v", Duration::from_secs(3600)).await.unwrap();
    });
    let mut g = c.benchmark_group("op_span_off");
    bench_in_flight(&mut g, &rt, "palisade_local", 1, |_| {
        let direct = &direct;
        async move {
            black_box(direct.get("k").await.unwrap());
        }
    });
    bench_in_flight(&mut g, &rt, "palisade_bymode", 1, |_| {
        let by_mode = &by_mode;
        async move {
            black_box(by_mode.get("k").await.unwrap());
        }
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
