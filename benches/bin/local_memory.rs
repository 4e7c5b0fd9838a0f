//! What one key costs the local backends in memory: the process's resident memory
//! before and after 100,000 keys, divided by the key count. Every backend stays alive
//! to the end, so no phase reuses memory another freed. Linux only (`/proc`).
//!
//! ```text
//! local-memory
//! ```
//!
//! Prints one JSON line: `{"keys":…,"cache_entry_64b":…,"raw_moka_entry_64b":…,"rate_key":…,"throttle_key_one_lease":…}`.
//! A cache entry holds a 64-byte value (moka's own bookkeeping included; a raw moka
//! cache of the same keys and values beside it); a rate key is
//! one decision of 100 a minute; a throttle key holds one lease (its permit kept alive,
//! and counted).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Duration;

use palisade_benches::runtime;
use palisade_cache_core::{Cache, Namespace};
use palisade_cache_local::{LocalCache, LocalThrottle};
use palisade_throttle::{Decision, Policy, Rate, RateLimiter, Throttle};

const KEYS: usize = 100_000;

/// The process's resident memory in bytes (`/proc/self/statm`, pages of 4 KiB).
fn held() -> isize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: isize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn main() {
    let keys: Vec<String> = (0..KEYS).map(|i| format!("key{i}")).collect();
    let ns = |name: &str| Namespace::new("mem", "tenant", name).unwrap();
    let per_key = |before: isize| (held() - before) as f64 / KEYS as f64;
    runtime().block_on(async {
        let before = held();
        let cache = Cache::new(LocalCache::default(), ns("cache"));
        for k in &keys {
            cache.set(k, &[7u8; 64], Duration::from_secs(600)).await.unwrap();
        }
        // Reads let moka apply its pending writes before the heap is counted.
        for k in &keys {
            cache.get(k).await.unwrap();
        }
        let cache_entry = per_key(before);

        // The raw dependency beside it: moka with the same keys and values, no expiry.
        let before = held();
        let moka: moka::future::Cache<String, Vec<u8>> = moka::future::Cache::new(u64::MAX);
        for k in &keys {
            moka.insert(format!("mem:tenant:cache:{k}"), vec![7u8; 64]).await;
        }
        for k in &keys {
            moka.get(&format!("mem:tenant:cache:{k}")).await.unwrap();
        }
        let moka_entry = per_key(before);

        let before = held();
        let limiter = RateLimiter::new(LocalThrottle::default(), ns("rl"));
        let rate = Rate::per_minute(100).build().unwrap();
        for k in &keys {
            limiter.limit(k, &rate).await.unwrap();
        }
        let rate_key = per_key(before);

        let before = held();
        let throttle = Throttle::new(LocalThrottle::default(), ns("mx"));
        let policy = Policy::builder()
            .global_cap(u32::MAX)
            .key_cap(2)
            .lease_ttl(Duration::from_secs(600))
            .build()
            .unwrap();
        let mut permits = Vec::with_capacity(KEYS);
        for k in &keys {
            let Decision::Acquired(p) = throttle.acquire(k, &policy).await.unwrap().value else {
                panic!("a fresh key denied")
            };
            permits.push(p);
        }
        let throttle_key = per_key(before);
        println!(
            "{{\"keys\":{KEYS},\"cache_entry_64b\":{cache_entry:.0},\"raw_moka_entry_64b\":{moka_entry:.0},\"rate_key\":{rate_key:.0},\"throttle_key_one_lease\":{throttle_key:.0}}}"
        );
        drop((cache, moka, limiter, permits));
    });
}
