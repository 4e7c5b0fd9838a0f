//! Shared setup of palisade's benches: a private Redis and a helper that runs one
//! operation N times in flight and reports throughput.
//!
//! Every bench compares palisade with the raw dependency doing the same work, in the
//! same run; `cargo xtask bench` prints the ratios.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::future::Future;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Throughput};
use futures_util::future::join_all;
use palisade_redis_server::server::RedisServer;

/// Operations in flight at once, per measurement.
pub const CONCURRENCY: [usize; 2] = [1, 50];

/// A multi-thread runtime like a service's.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A private redis-server for the benches (started by the bench itself).
pub fn redis() -> RedisServer {
    RedisServer::start().expect("the benches start their own redis-server: install redis-server (>= 7)")
}

/// Benches `op(i)` with `n` calls in flight at once; throughput is per call.
pub fn bench_in_flight<F, Fut>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    n: usize,
    op: F,
) where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    g.throughput(Throughput::Elements(n as u64));
    g.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
        b.to_async(rt).iter(|| join_all((0..n).map(&op)))
    });
}
