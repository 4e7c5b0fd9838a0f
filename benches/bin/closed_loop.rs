//! A closed-loop load generator, as a service calls palisade: `c` spawned tasks, each
//! awaiting its own call, on a 2-worker runtime; a warm-up, then a counted window.
//! `cargo xtask compare` runs it beside the peers on one private Redis.
//!
//! ```text
//! closed-loop URL OP CONCURRENCY WARMUP_MS MEASURE_MS
//! OP: gcra | gcra_unbatched (natural batching off) | throttle | throttle_wait | cache_get | cache_set | fred_get | fred_set | fred_evalsha_trivial |
//! job_update | fred_hset_pexpire, and
//! the layers of a cache get: backend_get | conn_command_get | conn_client_custom_get |
//! conn_client_get_timeout | conn_client_get
//! ```
//!
//! Prints one JSON line: `{"op":…,"c":…,"ops":…,"secs":…,"per_sec":…,"p50_us":…,"p99_us":…,"total_ops":…}`
//! (`total_ops` includes the warm-up, for commands-per-operation counts).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::scripts::Script;
use palisade_benches::runtime;
use palisade_cache_core::{Cache, Namespace};
use palisade_cache_redis::{RedisCache, RedisConfig, RedisConnection, RedisJobStore, RedisThrottle};
use palisade_job_store::{JobRecord, JobStore, Patch};
use palisade_throttle::{Decision, Policy, Rate, RateLimiter, Throttle};

const KEYS: usize = 1_000;
const THROTTLE_KEYS: usize = 5;

/// One operation, by name; `i` picks the key.
#[derive(Clone)]
enum Op {
    Gcra(RateLimiter<RedisThrottle>, Rate),
    Throttle(Throttle<RedisThrottle>, Policy),
    /// `acquire_wait` + release with `key_cap 2` on 5 keys: most callers wait their
    /// turn (Bottleneck's `Group` with `maxConcurrent 2`).
    ThrottleWait(Throttle<RedisThrottle>, Policy),
    CacheGet(Cache<RedisCache>),
    CacheSet(Cache<RedisCache>),
    FredSet(fred::clients::Client),
    FredGet(fred::clients::Client),
    /// A GET on palisade's own fred client (its settings), not through palisade's code.
    ConnClientGet(RedisConnection),
    /// A `custom` GET on palisade's fred client (what `command` sends).
    ConnClientCustomGet(RedisConnection),
    /// A typed GET on palisade's fred client inside a `tokio::time::timeout`.
    ConnClientGetTimeout(RedisConnection),
    /// A GET through `RedisConnection::command` (deadline, error mapping, routing).
    ConnCommandGet(RedisConnection),
    /// A GET through the cache backend, without the `Cache` facade.
    BackendGet(RedisCache),
    FredEvalsha(fred::clients::Client, Arc<Script>),
    /// `JobStore::update` of one field on 1,000 records (the version moves, the
    /// version is published).
    JobUpdate(JobStore<RedisJobStore>),
    /// The raw equivalent: a pipelined `HSET` + `PEXPIRE`.
    FredHsetPexpire(fred::clients::Client),
}

impl Op {
    async fn run(&self, i: usize, keys: &[String]) {
        match self {
            Op::Gcra(r, rate) => {
                r.limit(&keys[i % KEYS], rate).await.unwrap();
            }
            Op::Throttle(t, policy) => {
                let Decision::Acquired(p) = t.acquire(&keys[i % THROTTLE_KEYS], policy).await.unwrap().value else {
                    panic!("denied: the caps are above the concurrency")
                };
                p.release().await.unwrap();
            }
            Op::ThrottleWait(t, policy) => {
                let d = t
                    .acquire_wait(&keys[i % THROTTLE_KEYS], policy, Duration::from_secs(30))
                    .await
                    .unwrap()
                    .value;
                let Decision::Acquired(p) = d else {
                    panic!("waited 30 s: {d:?}")
                };
                p.release().await.unwrap();
            }
            Op::CacheGet(c) => {
                c.get(&keys[i % KEYS]).await.unwrap().value.unwrap();
            }
            Op::CacheSet(c) => {
                c.set(&keys[i % KEYS], &[7u8; 64], Duration::from_secs(600))
                    .await
                    .unwrap();
            }
            Op::FredSet(f) => {
                let ttl = Some(fred::types::Expiration::PX(600_000));
                let _: () = f
                    .set(format!("raw:{}", keys[i % KEYS]), &[7u8; 64][..], ttl, None, false)
                    .await
                    .unwrap();
            }
            Op::FredGet(f) => {
                let v: Option<fred::bytes::Bytes> = f.get(format!("raw:{}", keys[i % KEYS])).await.unwrap();
                v.unwrap();
            }
            Op::ConnClientGet(conn) => {
                let k = format!("raw:{}", keys[i % KEYS]);
                let v: Option<fred::bytes::Bytes> = conn.client_for(&k).unwrap().get(k).await.unwrap();
                v.unwrap();
            }
            Op::ConnClientCustomGet(conn) => {
                use fred::types::{ClusterHash, CustomCommand};
                let k = format!("raw:{}", keys[i % KEYS]);
                let cmd = CustomCommand::new_static("GET", ClusterHash::Random, false);
                let v: Option<fred::bytes::Bytes> = conn.client_for(&k).unwrap().custom(cmd, vec![k]).await.unwrap();
                v.unwrap();
            }
            Op::ConnClientGetTimeout(conn) => {
                let k = format!("raw:{}", keys[i % KEYS]);
                let client = conn.client_for(&k).unwrap();
                let get = client.get::<Option<fred::bytes::Bytes>, _>(k);
                let v = tokio::time::timeout(Duration::from_secs(1), get)
                    .await
                    .unwrap()
                    .unwrap();
                v.unwrap();
            }
            Op::ConnCommandGet(conn) => {
                let k = format!("raw:{}", keys[i % KEYS]);
                let v: Option<fred::bytes::Bytes> =
                    conn.command("get", &k, "GET", vec![k.as_str().into()]).await.unwrap();
                v.unwrap();
            }
            Op::BackendGet(b) => {
                use palisade_cache_core::Run;
                let k = format!("raw:{}", keys[i % KEYS]);
                b.run(&palisade_cache_core::cache::op::Get::new(k))
                    .await
                    .unwrap()
                    .value
                    .unwrap();
            }
            Op::FredEvalsha(f, s) => {
                let _: i64 = s.evalsha(f, keys[i % KEYS].as_str(), ()).await.unwrap();
            }
            Op::JobUpdate(j) => {
                let patch = Patch::new().progress(u32::try_from(i % 100).unwrap());
                assert!(j.update(&keys[i % KEYS], &patch).await.unwrap().value);
            }
            Op::FredHsetPexpire(f) => {
                let k = format!("rawjob:{}", keys[i % KEYS]);
                let pipe = f.pipeline();
                let _: () = pipe.hset(&k, ("progress", (i % 100) as i64)).await.unwrap();
                let _: () = pipe.pexpire(&k, 600_000, None).await.unwrap();
                let _: Vec<Value> = pipe.all().await.unwrap();
            }
        }
    }
}

async fn make(url: &str, op: &str, keys: &[String]) -> Op {
    let ns = |name: &str| Namespace::new("compare", "tenant", name).unwrap();
    let conn = || async {
        RedisConnection::connect(&RedisConfig::from_url(url).unwrap())
            .await
            .unwrap()
    };
    let fred = || async {
        let f = Builder::from_config(Config::from_url(url).unwrap()).build().unwrap();
        f.init().await.unwrap();
        f
    };
    match op {
        "gcra" | "gcra_unbatched" => {
            let t = RedisThrottle::new(conn().await)
                .await
                .unwrap()
                .with_restart_hold(false)
                .with_batching(op == "gcra");
            // Never limits: the cost of a decision, not of a denial.
            let rate = Rate::per_second(1_000_000).burst(1_000_000).build().unwrap();
            Op::Gcra(RateLimiter::new(t, ns("rl")), rate)
        }
        "throttle" => {
            let t = RedisThrottle::new(conn().await).await.unwrap().with_restart_hold(false);
            let policy = Policy::builder()
                .global_cap(1_000)
                .key_cap(1_000)
                .min_interval(Duration::ZERO)
                .lease_ttl(Duration::from_secs(30))
                .build()
                .unwrap();
            Op::Throttle(Throttle::new(t, ns("mx")), policy)
        }
        "throttle_wait" => {
            let t = RedisThrottle::new(conn().await).await.unwrap().with_restart_hold(false);
            let policy = Policy::builder()
                .global_cap(1_000)
                .key_cap(2)
                .min_interval(Duration::ZERO)
                .lease_ttl(Duration::from_secs(30))
                .build()
                .unwrap();
            Op::ThrottleWait(Throttle::new(t, ns("mxw")), policy)
        }
        "cache_get" => {
            let c = Cache::new(RedisCache::new(conn().await), ns("cache"));
            for k in keys {
                c.set(k, &[7u8; 64], Duration::from_secs(600)).await.unwrap();
            }
            Op::CacheGet(c)
        }
        "cache_set" => Op::CacheSet(Cache::new(RedisCache::new(conn().await), ns("cache"))),
        "fred_set" => Op::FredSet(fred().await),
        "fred_get" => {
            let f = fred().await;
            for k in keys {
                let _: () = f
                    .set(format!("raw:{k}"), &[7u8; 64][..], None, None, false)
                    .await
                    .unwrap();
            }
            Op::FredGet(f)
        }
        "conn_client_get" => {
            let f = fred().await;
            for k in keys {
                let _: () = f
                    .set(format!("raw:{k}"), &[7u8; 64][..], None, None, false)
                    .await
                    .unwrap();
            }
            Op::ConnClientGet(conn().await)
        }
        "conn_command_get" | "backend_get" | "conn_client_custom_get" | "conn_client_get_timeout" => {
            let f = fred().await;
            for k in keys {
                let _: () = f
                    .set(format!("raw:{k}"), &[7u8; 64][..], None, None, false)
                    .await
                    .unwrap();
            }
            match op {
                "backend_get" => Op::BackendGet(RedisCache::new(conn().await)),
                "conn_client_custom_get" => Op::ConnClientCustomGet(conn().await),
                "conn_client_get_timeout" => Op::ConnClientGetTimeout(conn().await),
                _ => Op::ConnCommandGet(conn().await),
            }
        }
        "job_update" => {
            let j = JobStore::new(RedisJobStore::new(conn().await).await.unwrap(), ns("jobs"));
            for k in keys {
                j.create(k, &JobRecord::queued(), Duration::from_secs(600))
                    .await
                    .unwrap();
            }
            Op::JobUpdate(j)
        }
        "fred_hset_pexpire" => Op::FredHsetPexpire(fred().await),
        "fred_evalsha_trivial" => {
            let f = fred().await;
            let s = Script::from_lua("return 1");
            s.load(&f).await.unwrap();
            Op::FredEvalsha(f, Arc::new(s))
        }
        other => panic!("unknown op {other}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, op_name, c, warmup, measure] = &args[..] else {
        eprintln!("usage: closed-loop URL OP CONCURRENCY WARMUP_MS MEASURE_MS");
        std::process::exit(64);
    };
    let c: usize = c.parse().unwrap();
    let warmup = Duration::from_millis(warmup.parse().unwrap());
    let measure = Duration::from_millis(measure.parse().unwrap());
    let keys: Arc<Vec<String>> = Arc::new((0..KEYS).map(|i| format!("key{i}")).collect());
    runtime().block_on(async {
        let op = make(url, op_name, &keys).await;
        let counting = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..c)
            .map(|t| {
                let (op, keys, counting, stop) = (op.clone(), keys.clone(), counting.clone(), stop.clone());
                tokio::spawn(async move {
                    let (mut latencies, mut total, mut i) = (Vec::new(), 0u64, t);
                    while !stop.load(Ordering::Relaxed) {
                        let start = Instant::now();
                        op.run(i, &keys).await;
                        if counting.load(Ordering::Relaxed) {
                            latencies.push(start.elapsed());
                        }
                        total += 1;
                        i = i.wrapping_add(c.max(1) * 7 + 1);
                    }
                    (latencies, total)
                })
            })
            .collect();
        tokio::time::sleep(warmup).await;
        counting.store(true, Ordering::Relaxed);
        let started = Instant::now();
        tokio::time::sleep(measure).await;
        counting.store(false, Ordering::Relaxed);
        let secs = started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        let mut total_ops = 0;
        for t in tasks {
            let (l, n) = t.await.unwrap();
            all.extend(l);
            total_ops += n;
        }
        if let Op::Gcra(r, _) = &op {
            // How much batching there was: calls per batch, on stderr.
            eprintln!("{:?}", r.backend().batch_stats());
        }
        all.sort_unstable();
        let pct = |p: f64| all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).map_or(0, |d| d.as_micros());
        println!(
            "{{\"op\":\"{op_name}\",\"c\":{c},\"ops\":{},\"secs\":{secs:.3},\"per_sec\":{:.0},\"p50_us\":{},\"p99_us\":{},\"total_ops\":{total_ops}}}",
            all.len(),
            all.len() as f64 / secs,
            pct(0.5),
            pct(0.99)
        );
    });
}
