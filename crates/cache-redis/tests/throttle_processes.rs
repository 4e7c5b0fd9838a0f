//! 4 OS processes × 16 tasks contend for 5 keys through a real redis-server with
//! global_cap 6, key_cap 2, min_interval 20 ms, for 5 s. Every lease's acquisition and
//! release times are the Redis server's (`TIME` inside the scripts); from them the
//! parent proves that no cap was exceeded and no spacing violated at any instant. Then
//! a process holding permits is SIGKILLed: its slots come back at lease expiry.
//!
//! The test binary re-executes itself as each worker (`PALISADE_THROTTLE_ROLE`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use palisade_cache_core::Namespace;
use palisade_cache_redis::{RedisConfig, RedisConnection, RedisThrottle};
use palisade_redis_server::env;
use palisade_throttle::{Decision, DenyReason, Policy, Throttle};

const ROLE: &str = "PALISADE_THROTTLE_ROLE";
const PREFIX: &str = "PALISADE_THROTTLE_PREFIX";
const PROCESSES: usize = 4;
const TASKS: usize = 16;
const KEYS: usize = 5;
const GLOBAL_CAP: u32 = 6;
const KEY_CAP: u32 = 2;
const INTERVAL: Duration = Duration::from_millis(20);
const RUN_FOR: Duration = Duration::from_secs(5);
const HOG_LEASE: Duration = Duration::from_secs(2);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn throttle(url: &str, prefix: &str) -> Throttle<RedisThrottle> {
    let conn = RedisConnection::connect(&RedisConfig::from_url(url).expect("a valid Redis URL"))
        .await
        .unwrap();
    Throttle::new(
        RedisThrottle::new(conn).await.unwrap().with_restart_hold(false),
        Namespace::new(prefix, "tenant", "mx").unwrap(),
    )
}

fn micros(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

/// A worker: 16 tasks acquire, hold 5–44 ms, release; one line per lease on stdout:
/// `LEASE key id acquired_us end_us` (end = release time, or expiry if it expired).
fn worker(url: &str, prefix: &str) {
    let policy = Policy::builder()
        .global_cap(GLOBAL_CAP)
        .key_cap(KEY_CAP)
        .min_interval(INTERVAL)
        .lease_ttl(Duration::from_secs(5))
        .build()
        .unwrap();
    let lines = runtime().block_on(async {
        let t = throttle(url, prefix).await;
        let until = Instant::now() + RUN_FOR;
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let t = t.clone();
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    let mut n = task;
                    while Instant::now() < until {
                        n = n.wrapping_mul(31).wrapping_add(7);
                        let key = format!("mx{}", n % KEYS);
                        match t.acquire(&key, &policy).await.unwrap().value {
                            Decision::Acquired(permit) => {
                                // Holds longer than the interval, so that both caps are really contended.
                                tokio::time::sleep(Duration::from_millis(5 + (n % 40) as u64)).await;
                                let lease = permit.lease().clone();
                                let end = permit.release().await.unwrap().unwrap_or(lease.expires_at);
                                out.push(format!(
                                    "LEASE {key} {} {} {}",
                                    lease.id,
                                    micros(lease.acquired_at),
                                    micros(end)
                                ));
                            }
                            Decision::Denied { retry_after, .. } => {
                                // Back off as a client would, never longer than 20 ms.
                                tokio::time::sleep(retry_after.min(INTERVAL)).await;
                            }
                        }
                    }
                    out
                })
            })
            .collect();
        let mut lines = Vec::new();
        for task in tasks {
            lines.extend(task.await.unwrap());
        }
        lines
    });
    let mut stdout = std::io::stdout().lock();
    for l in lines {
        writeln!(stdout, "{l}").unwrap();
    }
}

/// A process that takes both slots of `victim`, says so, and waits to be killed.
fn hog(url: &str, prefix: &str) {
    let policy = Policy::builder()
        .global_cap(GLOBAL_CAP)
        .key_cap(KEY_CAP)
        .min_interval(Duration::ZERO)
        .lease_ttl(HOG_LEASE)
        .build()
        .unwrap();
    runtime().block_on(async {
        let t = throttle(url, prefix).await;
        let a = t
            .acquire("victim", &policy)
            .await
            .unwrap()
            .value
            .permit()
            .expect("slot 1");
        let b = t
            .acquire("victim", &policy)
            .await
            .unwrap()
            .value
            .permit()
            .expect("slot 2");
        // The two leases expire a few ms apart: each slot comes back at its own expiry.
        let (first, last) = (a.expires_at().min(b.expires_at()), a.expires_at().max(b.expires_at()));
        println!("HELD {} {}", micros(first), micros(last));
        std::io::stdout().flush().unwrap();
        std::future::pending::<()>().await;
    });
}

/// Waiters per waiting process, and the jobs each serves through `acquire_wait`.
const WAITING_TASKS: usize = 8;
const WAITING_JOBS: usize = 15;
const WAITING_PROCESSES: usize = 3;

/// A waiting process: 8 tasks each `acquire_wait` 15 times on one key with a single
/// slot, hold 2 ms, release. Prints `LEASE w id acquired_us end_us`, then `STATS waited
/// wakeups handoffs rechecks`. No re-check fires within the run: every wait ends by a
/// wake-up or a handoff (a key cap of 1 with one policy: every release hands over).
fn waiter(url: &str, prefix: &str) {
    let policy = Policy::builder()
        .global_cap(GLOBAL_CAP)
        .key_cap(1)
        .min_interval(Duration::ZERO)
        .lease_ttl(Duration::from_secs(30))
        .build()
        .unwrap();
    let (lines, stats) = runtime().block_on(async {
        let t = throttle(url, prefix).await.with_recheck(Duration::from_secs(3600));
        let tasks: Vec<_> = (0..WAITING_TASKS)
            .map(|_| {
                let t = t.clone();
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    for _ in 0..WAITING_JOBS {
                        let d = t
                            .acquire_wait("w", &policy, Duration::from_secs(60))
                            .await
                            .unwrap()
                            .value;
                        let Decision::Acquired(permit) = d else {
                            panic!("not served within 60 s: {d:?}")
                        };
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        let lease = permit.lease().clone();
                        let end = permit.release().await.unwrap().unwrap_or(lease.expires_at);
                        out.push(format!(
                            "LEASE w {} {} {}",
                            lease.id,
                            micros(lease.acquired_at),
                            micros(end)
                        ));
                    }
                    out
                })
            })
            .collect();
        let mut lines = Vec::new();
        for task in tasks {
            lines.extend(task.await.unwrap());
        }
        (lines, t.stats())
    });
    let mut stdout = std::io::stdout().lock();
    for l in lines {
        writeln!(stdout, "{l}").unwrap();
    }
    writeln!(
        stdout,
        "STATS {} {} {} {}",
        stats.waited, stats.wakeups, stats.handoffs, stats.rechecks
    )
    .unwrap();
}

struct Lease {
    key: String,
    start: u64,
    end: u64,
}

fn check_invariants(leases: &[Lease]) -> (usize, usize) {
    // Caps: sweep over start (+1) and end (-1) events, ends first at equal times.
    let mut events: Vec<(u64, i32, &str)> = Vec::new();
    for l in leases {
        events.push((l.start, 1, &l.key));
        events.push((l.end, -1, &l.key));
    }
    events.sort_by_key(|(t, d, _)| (*t, *d));
    let (mut global, mut max_global, mut max_key) = (0i32, 0i32, 0i32);
    let mut per_key: HashMap<&str, i32> = HashMap::new();
    for (_, d, key) in events {
        global += d;
        let k = per_key.entry(key).or_default();
        *k += d;
        max_global = max_global.max(global);
        max_key = max_key.max(*k);
    }
    assert!(
        max_global <= GLOBAL_CAP as i32,
        "global cap exceeded: {max_global} leases at once"
    );
    assert!(
        max_key <= KEY_CAP as i32,
        "key cap exceeded: {max_key} leases on one key at once"
    );
    // Spacing: consecutive acquisitions of one key are >= 20 ms apart (server time).
    let mut by_key: HashMap<&str, Vec<u64>> = HashMap::new();
    for l in leases {
        by_key.entry(&l.key).or_default().push(l.start);
    }
    let mut min_gap = u64::MAX;
    for starts in by_key.values_mut() {
        starts.sort_unstable();
        for w in starts.windows(2) {
            min_gap = min_gap.min(w[1] - w[0]);
        }
    }
    assert!(
        min_gap >= INTERVAL.as_micros() as u64,
        "spacing violated: two acquisitions {min_gap} µs apart"
    );
    (max_global as usize, max_key as usize)
}

fn main() -> ExitCode {
    if let Ok(role) = std::env::var(ROLE) {
        let url = std::env::var(env::REDIS_URL).unwrap();
        let prefix = std::env::var(PREFIX).unwrap();
        match role.as_str() {
            "hog" => hog(&url, &prefix),
            "waiter" => waiter(&url, &prefix),
            _ => worker(&url, &prefix),
        }
        return ExitCode::SUCCESS;
    }
    println!("\nrunning 3 tests");
    let Some(url) = env::redis_url("throttle_processes") else {
        println!("test result: ok. 0 passed; 0 failed; 3 ignored; 0 measured; 0 filtered out");
        return ExitCode::SUCCESS;
    };
    let exe = std::env::current_exe().unwrap();
    let spawn = |role: &str, prefix: &str| {
        Command::new(&exe)
            .env(ROLE, role)
            .env(PREFIX, prefix)
            .env(env::REDIS_URL, &url)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };

    // 1. Contention across processes.
    let prefix = env::unique_prefix("throttle-processes");
    let started = Instant::now();
    let children: Vec<_> = (0..PROCESSES).map(|_| spawn("worker", &prefix)).collect();
    let mut leases = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "a worker failed: {}", out.status);
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if let ["LEASE", key, _id, start, end] = parts[..] {
                leases.push(Lease {
                    key: key.to_owned(),
                    start: start.parse().unwrap(),
                    end: end.parse().unwrap(),
                });
            }
        }
    }
    assert!(started.elapsed() >= RUN_FOR, "the run lasted {:?}", started.elapsed());
    assert!(
        leases.len() > 100,
        "too little contention to prove anything: {} leases",
        leases.len()
    );
    let (max_global, max_key) = check_invariants(&leases);
    assert_eq!(
        (max_global, max_key),
        (GLOBAL_CAP as usize, KEY_CAP as usize),
        "the caps were reached, so the gates were exercised"
    );
    println!(
        "test caps_and_spacing_hold_across_4_processes ... ok ({} leases in {:?}; at most {max_global} global and {max_key} per key at once)",
        leases.len(),
        started.elapsed()
    );

    // 2. Waiters in 3 processes on one single-slot key: releases in one process wake
    //    waiters in another, the slot is never held twice, everyone is served.
    let prefix = env::unique_prefix("throttle-waiters");
    let children: Vec<_> = (0..WAITING_PROCESSES).map(|_| spawn("waiter", &prefix)).collect();
    let mut served: Vec<(u64, u64, usize)> = Vec::new();
    for (process, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "a waiting process failed: {}", out.status);
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts[..] {
                ["LEASE", _, _, start, end] => served.push((start.parse().unwrap(), end.parse().unwrap(), process)),
                ["STATS", waited, wakeups, handoffs, rechecks] => {
                    let [waited, wakeups, handoffs, rechecks] =
                        [waited, wakeups, handoffs, rechecks].map(|n| n.parse::<u64>().unwrap());
                    assert!(
                        waited > 0 && handoffs > 0,
                        "process {process}: waited {waited}, handoffs {handoffs} (wakeups {wakeups})"
                    );
                    assert_eq!(rechecks, 0, "process {process}: a wait ended without a wake-up");
                }
                _ => {}
            }
        }
    }
    assert_eq!(
        served.len(),
        WAITING_PROCESSES * WAITING_TASKS * WAITING_JOBS,
        "everyone was served"
    );
    served.sort_unstable();
    for w in served.windows(2) {
        assert!(
            w[0].1 <= w[1].0,
            "the single slot was held twice: {:?} and {:?}",
            w[0],
            w[1]
        );
    }
    let handoffs = served.windows(2).filter(|w| w[0].2 != w[1].2).count();
    assert!(handoffs > 0, "no release woke a waiter of another process");
    // From a release to the next holder's grant, server time: 0 where the release
    // handed the slot off (granted in its own step), else the wake-up latency (wake-up
    // pushed, BLPOP returned, the granting acquire run).
    let mut gaps: Vec<u64> = served.windows(2).map(|w| w[1].0 - w[0].1).collect();
    gaps.sort_unstable();
    let pct = |q: usize| gaps[(gaps.len() - 1) * q / 100];
    println!(
        "test waiters_in_3_processes_are_woken_across_processes ... ok ({} leases, {handoffs} hand-overs between processes, every wait ended by a wake-up; release to next grant p50 {} µs, p99 {} µs)",
        served.len(),
        pct(50),
        pct(99)
    );

    // 3. A process killed while holding permits: its slots come back at lease expiry.
    let prefix = env::unique_prefix("throttle-hog");
    let mut hog = spawn("hog", &prefix);
    let mut line = String::new();
    BufReader::new(hog.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let held: Vec<u64> = line
        .trim()
        .strip_prefix("HELD ")
        .expect("HELD line")
        .split(' ')
        .map(|t| t.parse().unwrap())
        .collect();
    let [first_expiry, last_expiry] = held[..] else {
        panic!("HELD line: {line:?}")
    };
    hog.kill().unwrap();
    hog.wait().unwrap();
    let rt = runtime();
    let t = rt.block_on(throttle(&url, &prefix));
    let policy = Policy::builder()
        .global_cap(GLOBAL_CAP)
        .key_cap(KEY_CAP)
        .min_interval(Duration::ZERO)
        .lease_ttl(Duration::from_secs(5))
        .build()
        .unwrap();
    let first = rt.block_on(t.acquire("victim", &policy)).unwrap().value;
    assert!(
        matches!(
            first,
            Decision::Denied {
                reason: DenyReason::KeyCap,
                ..
            }
        ),
        "the killed holder's slots are still taken"
    );
    let give_up = Instant::now() + HOG_LEASE + Duration::from_secs(5);
    let next_permit = || loop {
        if let Decision::Acquired(p) = rt.block_on(t.acquire("victim", &policy)).unwrap().value {
            break p;
        }
        assert!(Instant::now() < give_up, "the killed holder's slots never came back");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Each of the hog's two slots comes back at its own lease's expiry, never before.
    let one = next_permit();
    assert!(
        micros(one.acquired_at()) >= first_expiry,
        "a slot came back before the first lease expired"
    );
    let two = next_permit();
    assert!(
        micros(two.acquired_at()) >= last_expiry,
        "the second slot came back before the second lease expired"
    );
    assert_eq!(rt.block_on(t.inspect("victim")).unwrap().value.key_leases, 2);
    rt.block_on(one.release()).unwrap();
    rt.block_on(two.release()).unwrap();
    println!("test a_killed_holder_gets_its_slots_back_at_lease_expiry ... ok");
    println!("\ntest result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n");
    ExitCode::SUCCESS
}
