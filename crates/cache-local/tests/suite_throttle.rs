//! The throttle behaviour suite and model against the in-memory backend, under a manual
//! clock (exact `retry_after`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use palisade_cache_core::testkit::ManualFixture;
use palisade_cache_core::{ManualClock, Namespace};
use palisade_cache_local::LocalThrottle;
use palisade_throttle::{Policy, RateLimiter, Throttle};

async fn local(test: &str) -> Option<ManualFixture<LocalThrottle>> {
    Some(ManualFixture::new(test, LocalThrottle::new))
}

palisade_throttle::throttle_suite!(local);

#[tokio::test]
async fn idle_keys_are_evicted_so_memory_stays_bounded() {
    let clock = ManualClock::new();
    let backend = LocalThrottle::new(clock.shared());
    let ns = Namespace::new("p", "t", "mx").unwrap();
    let t = Throttle::new(backend.clone(), ns.clone());
    let r = RateLimiter::new(backend.clone(), ns.sibling("rl").unwrap());
    let p = Policy::builder()
        .global_cap(10_000)
        .key_cap(1)
        .min_interval(Duration::from_secs(1))
        .lease_ttl(Duration::from_secs(5))
        .build()
        .unwrap();
    let rate = palisade_throttle::Rate::per_second(10).burst(1).build().unwrap();
    for i in 0..1000 {
        let permit = t
            .acquire(&format!("host{i}"), &p)
            .await
            .unwrap()
            .value
            .permit()
            .unwrap();
        permit.release().await.unwrap();
        r.limit(&format!("client{i}"), &rate).await.unwrap();
    }
    let held = backend.held_keys();
    assert!(held >= 1000);
    clock.advance(Duration::from_secs(3600));
    // The documented bound: swept at the latest max(256, entries held) + 1 operations later
    // (each key here holds its key state and its rate state: at most 2 × held entries).
    for _ in 0..=(2 * held).max(256) {
        t.inspect("other").await.unwrap();
    }
    assert_eq!(
        backend.held_keys(),
        0,
        "idle state was evicted by the operations themselves"
    );
}

/// A manual clock whose wall time can be stepped (NTP, an operator) while its
/// monotonic time runs on.
#[derive(Debug)]
struct SteppedWall {
    clock: ManualClock,
    ahead: std::sync::Mutex<Duration>,
}

impl palisade_cache_core::Clock for SteppedWall {
    fn now(&self) -> std::time::Instant {
        palisade_cache_core::Clock::now(&self.clock)
    }
    fn system_time(&self) -> std::time::SystemTime {
        palisade_cache_core::Clock::system_time(&self.clock) + *self.ahead.lock().unwrap()
    }
    fn sleep_until(&self, deadline: std::time::Instant) -> palisade_cache_core::BoxFuture<'static, ()> {
        self.clock.sleep_until(deadline)
    }
    fn follows_real_time(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn a_wall_clock_step_neither_frees_slots_nor_resets_rates() {
    let clock = std::sync::Arc::new(SteppedWall {
        clock: ManualClock::new(),
        ahead: std::sync::Mutex::new(Duration::ZERO),
    });
    let backend = LocalThrottle::new(clock.clone());
    let ns = Namespace::new("p", "t", "mx").unwrap();
    let t = Throttle::new(backend.clone(), ns.clone());
    let r = RateLimiter::new(backend, ns.sibling("rl").unwrap());
    let p = Policy::builder()
        .global_cap(10)
        .key_cap(1)
        .min_interval(Duration::ZERO)
        .lease_ttl(Duration::from_secs(60))
        .build()
        .unwrap();
    let rate = palisade_throttle::Rate::per_second(1).burst(1).build().unwrap();
    let _held = t.acquire("host", &p).await.unwrap().value.permit().unwrap();
    assert!(matches!(
        r.limit("ip", &rate).await.unwrap().value,
        palisade_throttle::RateDecision::Allowed { .. }
    ));
    // The wall clock jumps an hour ahead; no monotonic time passes.
    *clock.ahead.lock().unwrap() = Duration::from_secs(3600);
    match t.acquire("host", &p).await.unwrap().value {
        palisade_throttle::Decision::Denied { reason, .. } => {
            assert_eq!(reason, palisade_throttle::DenyReason::KeyCap, "the lease is still held")
        }
        palisade_throttle::Decision::Acquired(_) => panic!("a wall-clock step freed a held slot"),
    }
    assert!(
        matches!(
            r.limit("ip", &rate).await.unwrap().value,
            palisade_throttle::RateDecision::Limited { .. }
        ),
        "a wall-clock step refilled the GCRA budget"
    );
}
