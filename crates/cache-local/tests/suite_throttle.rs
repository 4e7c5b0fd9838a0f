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
    let ns = Namespace::new("p", 1, "t", "mx").unwrap();
    let t = Throttle::new(backend.clone(), ns.clone());
    let r = RateLimiter::new(backend.clone(), ns.sibling("rl").unwrap());
    let p = Policy::new(10_000, 1, Duration::from_secs(1), Duration::from_secs(5)).unwrap();
    let rate = palisade_throttle::Rate::per_second(10, 1).unwrap();
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
