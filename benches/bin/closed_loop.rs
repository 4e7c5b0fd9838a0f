//! A closed-loop load generator, as a service calls palisade: `c` spawned tasks, each
//! awaiting its own call, on a 2-worker runtime; a warm-up, then a counted window.
//! `cargo xtask compare` runs it beside the peers on one private Redis.
//!
//! ```text
//! closed-loop URL OP CONCURRENCY WARMUP_MS MEASURE_MS [KEYS]
//! OP: gcra | gcra_unbatched (natural batching off) | gcra_live | throttle | throttle_wait | cache_get | cache_set | fred_get | fred_set | fred_evalsha_trivial |
//! job_update | job_update_unbatched | fred_hset_pexpire, and
//! the layers of a cache get: backend_get | conn_command_get | conn_client_custom_get |
//! conn_client_get_timeout | conn_client_get
//! closed-loop URL memory
//! ```
//!
//! `KEYS` (default 1,000) is how many distinct keys the key-spread operations use.
//! `gcra_live` is `gcra` with a rate whose keys stay in Redis for the whole run (one a
//! minute, a burst of a million: never limits, every decision adds a minute to its
//! key's expiry); every key is decided once before the warm-up, and the server's
//! memory per key that took is added to the line as `server_bytes_per_key`. `memory` prints what one key costs
//! in Redis (`MEMORY USAGE`): a rate key of 100 a minute, and the keys of a throttle
//! holding one lease.
//!
//! Prints one JSON line: `{"op":…,"c":…,"ops":…,"secs":…,"per_sec":…,"p50_us":…,"p99_us":…,"total_ops":…}`
//! (`total_ops` includes the warm-up, for commands-per-operation counts). `throttle_wait`
//! adds `handoffs`, `handoff_p50_us` and `handoff_p99_us`: the time from the end of a
//! holder's work on a key to the start of the next waiter's (see [`Handoffs`]).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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

/// `gcra_live`: the server's memory per key after deciding every key once.
static FILLED: std::sync::OnceLock<f64> = std::sync::OnceLock::new();

/// Whether the counted window is running (set by `main`).
static COUNTING: AtomicBool = AtomicBool::new(false);

/// `throttle_wait`: the time from the end of a holder's work on a key (just before its
/// release is sent) to the start of the next waiter's work on that key, paired first
/// in, first out per key. A grant whose call began after the release it pairs with did
/// not wait for it and is not counted.
#[derive(Default)]
struct Handoffs {
    released: [Mutex<VecDeque<Instant>>; THROTTLE_KEYS],
    gaps: Mutex<Vec<Duration>>,
}

impl Handoffs {
    fn released(&self, key: usize) {
        self.released[key].lock().unwrap().push_back(Instant::now());
    }

    fn started(&self, key: usize, asked: Instant) {
        let now = Instant::now();
        let paired = self.released[key].lock().unwrap().pop_front();
        if let Some(at) = paired.filter(|at| *at >= asked)
            && COUNTING.load(Ordering::Relaxed)
        {
            self.gaps.lock().unwrap().push(now - at);
        }
    }
}

/// One operation, by name; `i` picks the key.
#[derive(Clone)]
enum Op {
    Gcra(RateLimiter<RedisThrottle>, Rate),
    Throttle(Throttle<RedisThrottle>, Policy),
    /// `acquire_wait` + release with `key_cap 2` on 5 keys: most callers wait their
    /// turn (Bottleneck's `Group` with `maxConcurrent 2`).
    ThrottleWait(Throttle<RedisThrottle>, Policy, Arc<Handoffs>),
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
                r.limit(&keys[i % keys.len()], rate).await.unwrap();
            }
            Op::Throttle(t, policy) => {
                let Decision::Acquired(p) = t.acquire(&keys[i % THROTTLE_KEYS], policy).await.unwrap().value else {
                    panic!("denied: the caps are above the concurrency")
                };
                p.release().await.unwrap();
            }
            Op::ThrottleWait(t, policy, handoffs) => {
                let (k, asked) = (i % THROTTLE_KEYS, Instant::now());
                let d = t
                    .acquire_wait(&keys[k], policy, Duration::from_secs(30))
                    .await
                    .unwrap()
                    .value;
                let Decision::Acquired(p) = d else {
                    panic!("waited 30 s: {d:?}")
                };
                handoffs.started(k, asked);
                handoffs.released(k);
                p.release().await.unwrap();
            }
            Op::CacheGet(c) => {
                c.get(&keys[i % keys.len()]).await.unwrap().value.unwrap();
            }
            Op::CacheSet(c) => {
                c.set(&keys[i % keys.len()], &[7u8; 64], Duration::from_secs(600))
                    .await
                    .unwrap();
            }
            Op::FredSet(f) => {
                let ttl = Some(fred::types::Expiration::PX(600_000));
                let _: () = f
                    .set(
                        format!("raw:{}", keys[i % keys.len()]),
                        &[7u8; 64][..],
                        ttl,
                        None,
                        false,
                    )
                    .await
                    .unwrap();
            }
            Op::FredGet(f) => {
                let v: Option<fred::bytes::Bytes> = f.get(format!("raw:{}", keys[i % keys.len()])).await.unwrap();
                v.unwrap();
            }
            Op::ConnClientGet(conn) => {
                let k = format!("raw:{}", keys[i % keys.len()]);
                let v: Option<fred::bytes::Bytes> = conn.client_for(&k).unwrap().get(k).await.unwrap();
                v.unwrap();
            }
            Op::ConnClientCustomGet(conn) => {
                use fred::types::{ClusterHash, CustomCommand};
                let k = format!("raw:{}", keys[i % keys.len()]);
                let cmd = CustomCommand::new_static("GET", ClusterHash::Random, false);
                let v: Option<fred::bytes::Bytes> = conn.client_for(&k).unwrap().custom(cmd, vec![k]).await.unwrap();
                v.unwrap();
            }
            Op::ConnClientGetTimeout(conn) => {
                let k = format!("raw:{}", keys[i % keys.len()]);
                let client = conn.client_for(&k).unwrap();
                let get = client.get::<Option<fred::bytes::Bytes>, _>(k);
                let v = tokio::time::timeout(Duration::from_secs(1), get)
                    .await
                    .unwrap()
                    .unwrap();
                v.unwrap();
            }
            Op::ConnCommandGet(conn) => {
                let k = format!("raw:{}", keys[i % keys.len()]);
                let v: Option<fred::bytes::Bytes> =
                    conn.command("get", &k, "GET", vec![k.as_str().into()]).await.unwrap();
                v.unwrap();
            }
            Op::BackendGet(b) => {
                use palisade_cache_core::Run;
                let k = format!("raw:{}", keys[i % keys.len()]);
                b.run(&palisade_cache_core::cache::op::Get::new(k))
                    .await
                    .unwrap()
                    .value
                    .unwrap();
            }
            Op::FredEvalsha(f, s) => {
                let _: i64 = s.evalsha(f, keys[i % keys.len()].as_str(), ()).await.unwrap();
            }
            Op::JobUpdate(j) => {
                let patch = Patch::new().progress(u32::try_from(i % 100).unwrap());
                assert!(j.update(&keys[i % keys.len()], &patch).await.unwrap().value);
            }
            Op::FredHsetPexpire(f) => {
                let k = format!("rawjob:{}", keys[i % keys.len()]);
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
        "gcra_live" => {
            let t = RedisThrottle::new(conn().await).await.unwrap().with_restart_hold(false);
            let rate = Rate::per_minute(1).burst(1_000_000).build().unwrap();
            let r = RateLimiter::new(t, ns("rl-live"));
            let f = fred().await;
            let before = used_memory(&f).await;
            let keys = Arc::new(keys.to_vec());
            let fill: Vec<_> = (0..50)
                .map(|w| {
                    let (r, keys) = (r.clone(), keys.clone());
                    tokio::spawn(async move {
                        for k in keys.iter().skip(w).step_by(50) {
                            r.limit(k, &rate).await.unwrap();
                        }
                    })
                })
                .collect();
            for t in fill {
                t.await.unwrap();
            }
            let per_key = (used_memory(&f).await - before) / keys.len() as f64;
            FILLED.set(per_key).unwrap();
            Op::Gcra(r, rate)
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
            Op::ThrottleWait(Throttle::new(t, ns("mxw")), policy, Arc::default())
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
        "job_update" | "job_update_unbatched" => {
            let store = RedisJobStore::new(conn().await)
                .await
                .unwrap()
                .with_batching(op == "job_update");
            let j = JobStore::new(store, ns("jobs"));
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

/// The server's `used_memory`, in bytes.
async fn used_memory(f: &fred::clients::Client) -> f64 {
    use fred::types::{ClusterHash, CustomCommand};
    let cmd = CustomCommand::new_static("INFO", ClusterHash::Random, false);
    let info: String = f.custom(cmd, vec!["memory"]).await.unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// `MEMORY USAGE key` (bytes, `SAMPLES 0`: every element counted).
async fn memory_usage(f: &fred::clients::Client, key: &str) -> i64 {
    use fred::types::{ClusterHash, CustomCommand};
    let cmd = CustomCommand::new_static("MEMORY", ClusterHash::Random, false);
    f.custom(cmd, vec!["USAGE", key, "SAMPLES", "0"]).await.unwrap()
}

/// What one key costs in Redis: a rate key, and a throttle holding one lease.
async fn memory(url: &str) {
    let conn = RedisConnection::connect(&RedisConfig::from_url(url).unwrap())
        .await
        .unwrap();
    let f = Builder::from_config(Config::from_url(url).unwrap()).build().unwrap();
    f.init().await.unwrap();
    let t = RedisThrottle::new(conn).await.unwrap().with_restart_hold(false);
    let ns = Namespace::new("memprobe", "tenant", "rl").unwrap();
    let r = RateLimiter::new(t.clone(), ns.clone());
    r.limit("memkey", &Rate::per_minute(100).build().unwrap())
        .await
        .unwrap();
    let rate_key = palisade_throttle::Scope::new(ns).rate_key("memkey").unwrap();
    let ns = Namespace::new("memprobe", "tenant", "mx").unwrap();
    let th = Throttle::new(t, ns.clone());
    let policy = Policy::builder()
        .global_cap(10)
        .key_cap(2)
        .lease_ttl(Duration::from_secs(30))
        .build()
        .unwrap();
    let Decision::Acquired(held) = th.acquire("memkey", &policy).await.unwrap().value else {
        panic!("a fresh throttle denied")
    };
    let scope = palisade_throttle::Scope::new(ns);
    let (leases, state) = (scope.leases_key("memkey").unwrap(), scope.state_key("memkey").unwrap());
    let (global, seq, up) = (
        scope.global_key().unwrap(),
        scope.seq_key().unwrap(),
        scope.up_key().unwrap(),
    );
    let mut out = format!("{{\"op\":\"memory\",\"rate_key\":{}", memory_usage(&f, &rate_key).await);
    for (name, key) in [
        ("key_leases", leases),
        ("key_state", state),
        ("global_leases", global),
        ("seq", seq),
        ("marker", up),
    ] {
        out.push_str(&format!(",\"{name}\":{}", memory_usage(&f, &key).await));
    }
    println!("{out}}}");
    held.release().await.unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [url, op] = &args[..]
        && op == "memory"
    {
        runtime().block_on(memory(url));
        return;
    }
    let [url, op_name, c, warmup, measure, rest @ ..] = &args[..] else {
        eprintln!("usage: closed-loop URL OP CONCURRENCY WARMUP_MS MEASURE_MS [KEYS] | closed-loop URL memory");
        std::process::exit(64);
    };
    let n_keys: usize = rest.first().map_or(KEYS, |n| n.parse().unwrap());
    let c: usize = c.parse().unwrap();
    let warmup = Duration::from_millis(warmup.parse().unwrap());
    let measure = Duration::from_millis(measure.parse().unwrap());
    let keys: Arc<Vec<String>> = Arc::new((0..n_keys).map(|i| format!("key{i}")).collect());
    runtime().block_on(async {
        let op = make(url, op_name, &keys).await;
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..c)
            .map(|t| {
                let (op, keys, stop) = (op.clone(), keys.clone(), stop.clone());
                tokio::spawn(async move {
                    let (mut latencies, mut total, mut i) = (Vec::new(), 0u64, t);
                    while !stop.load(Ordering::Relaxed) {
                        let start = Instant::now();
                        op.run(i, &keys).await;
                        if COUNTING.load(Ordering::Relaxed) {
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
        COUNTING.store(true, Ordering::Relaxed);
        let started = Instant::now();
        tokio::time::sleep(measure).await;
        COUNTING.store(false, Ordering::Relaxed);
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
        let pct = |all: &[Duration], p: f64| {
            all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
                .map_or(0, |d| d.as_micros())
        };
        all.sort_unstable();
        let mut extra = FILLED.get().map_or(String::new(), |b| format!(",\"server_bytes_per_key\":{b:.0}"));
        if let Op::ThrottleWait(_, _, h) = &op {
            let mut gaps = std::mem::take(&mut *h.gaps.lock().unwrap());
            gaps.sort_unstable();
            extra.push_str(&format!(
                ",\"handoffs\":{},\"handoff_p50_us\":{},\"handoff_p99_us\":{}",
                gaps.len(),
                pct(&gaps, 0.5),
                pct(&gaps, 0.99)
            ));
        }
        println!(
            "{{\"op\":\"{op_name}\",\"c\":{c},\"keys\":{},\"ops\":{},\"secs\":{secs:.3},\"per_sec\":{:.0},\"p50_us\":{},\"p99_us\":{},\"total_ops\":{total_ops}{}}}",
            keys.len(),
            all.len(),
            all.len() as f64 / secs,
            pct(&all, 0.5),
            pct(&all, 0.99),
            extra
        );
    });
}
