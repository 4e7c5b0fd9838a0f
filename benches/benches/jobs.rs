//! Job store: create, update of 1 and of 5 fields, get, transition — local vs Redis, and
//! Redis `update` (one Lua script: existence guard + HSET + PEXPIRE) vs raw fred
//! `HSET` + `PEXPIRE` in one pipeline (no guard), at 1 and 50 in flight.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use fred::prelude::*;
use palisade_benches::{CONCURRENCY, bench_in_flight, redis, runtime};
use palisade_cache_core::Namespace;
use palisade_cache_local::LocalJobStore;
use palisade_cache_redis::{RedisConfig, RedisConnection, RedisJobStore};
use palisade_job_store::{JobBackend, JobRecord, JobStatus, JobStore, Patch};

const JOBS: usize = 1000;
const TTL: Duration = Duration::from_secs(600);

fn patch(fields: usize, i: usize) -> Patch {
    (0..fields).fold(Patch::new(), |p, f| {
        p.field(format!("field{f}"), Bytes::from(format!("value-{i}")))
    })
}

fn bench_store<B: JobBackend>(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &str, s: &JobStore<B>, n: usize) {
    let ids: Vec<String> = (0..JOBS).map(|i| format!("job-{i}")).collect();
    let patches1: Vec<Patch> = (0..JOBS).map(|i| patch(1, i)).collect();
    let patches5: Vec<Patch> = (0..JOBS).map(|i| patch(5, i)).collect();
    let record = JobRecord::queued().with_field("owner", "bench");
    rt.block_on(async {
        for id in &ids {
            s.create(id, &record, TTL).await.unwrap();
        }
    });
    let mut g = c.benchmark_group("jobs_create");
    bench_in_flight(&mut g, rt, name, n, |i| {
        let (s, ids, record) = (s, &ids, &record);
        async move {
            s.create(&ids[i % JOBS], record, TTL).await.unwrap();
        }
    });
    g.finish();
    for (group, patches) in [("jobs_update_1", &patches1), ("jobs_update_5", &patches5)] {
        let mut g = c.benchmark_group(group);
        bench_in_flight(&mut g, rt, name, n, |i| {
            let (s, ids) = (s, &ids);
            async move {
                assert!(s.update(&ids[i % JOBS], &patches[i % JOBS]).await.unwrap().value);
            }
        });
        g.finish();
    }
    let mut g = c.benchmark_group("jobs_get");
    bench_in_flight(&mut g, rt, name, n, |i| {
        let (s, ids) = (s, &ids);
        async move {
            black_box(s.get(&ids[i % JOBS]).await.unwrap().value.unwrap());
        }
    });
    g.finish();
    // The compare-and-set path: after the first pass the records are Running and the
    // script refuses (same round trip and script work).
    let mut g = c.benchmark_group("jobs_transition");
    bench_in_flight(&mut g, rt, name, n, |i| {
        let (s, ids) = (s, &ids);
        async move {
            black_box(
                s.transition(&ids[i % JOBS], JobStatus::Queued, JobStatus::Running, &Patch::new())
                    .await
                    .unwrap(),
            );
        }
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let server = redis();
    let ns = Namespace::new("bench", "tenant", "jobs").unwrap();
    let local = JobStore::new(LocalJobStore::default(), ns.clone());
    let (remote, fred) = rt.block_on(async {
        let conn = RedisConnection::connect(&RedisConfig::from_url(&server.url()).expect("a valid Redis URL"))
            .await
            .unwrap();
        let remote = JobStore::new(RedisJobStore::new(conn).await.unwrap(), ns.clone());
        let fred = Builder::from_config(Config::from_url(&server.url()).unwrap())
            .build()
            .unwrap();
        fred.init().await.unwrap();
        (remote, fred)
    });
    let keys: Vec<String> = (0..JOBS).map(|i| remote.key(&format!("job-{i}")).unwrap()).collect();
    for n in CONCURRENCY {
        bench_store(c, &rt, "palisade_local", &local, n);
        bench_store(c, &rt, "palisade_redis", &remote, n);
        for (group, fields) in [("jobs_update_1", 1usize), ("jobs_update_5", 5)] {
            let mut g = c.benchmark_group(group);
            bench_in_flight(&mut g, &rt, "fred_hset_pexpire", n, |i| {
                let (fred, keys) = (&fred, &keys);
                async move {
                    let pairs: Vec<(String, Bytes)> = (0..fields)
                        .map(|f| (format!("f:field{f}"), Bytes::from(format!("value-{i}"))))
                        .collect();
                    let p = fred.pipeline();
                    let _: () = p.hset(keys[i % JOBS].as_str(), pairs).await.unwrap();
                    let _: () = p.pexpire(keys[i % JOBS].as_str(), 600_000, None).await.unwrap();
                    let _: Vec<i64> = p.all().await.unwrap();
                }
            });
            g.finish();
        }
    }
    drop(server);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
