//! The throttle behaviour suite: one case per sentence of the `# Behavior` sections, and
//! a proptest model of the decision table. **Not API-stable.**
//!
//! Fixtures that control time (a manual clock) get exact `retry_after` checks and time
//! steps in the model; real-time fixtures (Redis) get the same decisions with long
//! TTLs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use palisade_cache_core::testkit::Fixture;
use palisade_cache_core::{Backend, ErrorKind, Namespace, Run};
use proptest::prelude::*;

use crate::{Decision, DenyReason, Permit, Policy, Rate, RateDecision, RateLimiter, Throttle, ThrottleBackend};

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn ns_for<F: Fixture>(fx: &F, tenant: &str) -> Namespace {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    Namespace::new(&format!("{}-{n}", fx.prefix()), tenant, "mx").unwrap()
}

/// A throttle namespace unique to this call.
pub fn throttle_for<F: Fixture<Backend: ThrottleBackend>>(fx: &F) -> Throttle<F::Backend> {
    Throttle::new(fx.backend(), ns_for(fx, "tenant"))
}

const HOUR: Duration = Duration::from_secs(3600);

fn policy(global: u32, key: u32, interval: Duration, ttl: Duration) -> Policy {
    Policy::builder()
        .global_cap(global)
        .key_cap(key)
        .min_interval(interval)
        .lease_ttl(ttl)
        .build()
        .unwrap()
}

async fn acquire<B: ThrottleBackend>(t: &Throttle<B>, key: &str, p: &Policy) -> Decision {
    t.acquire(key, p).await.unwrap().value
}

fn granted(d: Decision) -> Permit {
    match d {
        Decision::Acquired(p) => p,
        Decision::Denied { reason, retry_after } => panic!("denied: {reason} (retry after {retry_after:?})"),
    }
}

fn denied(d: Decision) -> (DenyReason, Duration) {
    match d {
        Decision::Denied { reason, retry_after } => (reason, retry_after),
        Decision::Acquired(p) => panic!("acquired {p:?}"),
    }
}

fn within(actual: Duration, expected: Duration, exact: bool) {
    if exact {
        assert_eq!(actual, expected);
    } else {
        assert!(
            actual <= expected && actual + Duration::from_millis(500) >= expected,
            "{actual:?} vs {expected:?}"
        );
    }
}

// ---- policy ------------------------------------------------------------------------

/// Zero caps or a zero lease are `InvalidInput`; so are bad rates and a policy without
/// a global cap. The defaults: key cap = global cap, no spacing, 30 s leases; a rate's
/// burst is its count of one period.
pub async fn invalid_policies_and_rates_are_refused<F: Fixture<Backend: ThrottleBackend>>(_fx: &F) {
    assert_eq!(
        Policy::builder().key_cap(1).build().unwrap_err().kind(),
        ErrorKind::InvalidInput,
        "the global cap is required"
    );
    let p = Policy::builder().global_cap(3).build().unwrap();
    assert_eq!(
        (p.key_cap, p.min_interval, p.lease_ttl),
        (3, Duration::ZERO, Policy::DEFAULT_LEASE_TTL)
    );
    assert_eq!(Policy::DEFAULT_LEASE_TTL, Duration::from_secs(30));
    let r = Rate::per_minute(120).build().unwrap();
    assert_eq!((r.emission, r.burst), (Duration::from_millis(500), 120));
    assert_eq!(
        Rate::per_hour(3600).burst(1).build().unwrap().emission,
        Duration::from_secs(1)
    );
    assert_eq!(
        Rate::per_second(4).build().unwrap().emission,
        Duration::from_millis(250)
    );
    for (g, k, ttl) in [(0, 1, HOUR), (1, 0, HOUR), (1, 1, Duration::ZERO)] {
        assert_eq!(
            Policy::builder()
                .global_cap(g)
                .key_cap(k)
                .min_interval(Duration::ZERO)
                .lease_ttl(ttl)
                .build()
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidInput
        );
    }
    assert_eq!(
        Policy::builder()
            .global_cap(1)
            .key_cap(1)
            .min_interval(Duration::from_secs(2 * 86_400))
            .lease_ttl(HOUR)
            .build()
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
    assert!(
        Policy::builder()
            .global_cap(1)
            .key_cap(1)
            .min_interval(Duration::ZERO)
            .lease_ttl(HOUR)
            .build()
            .is_ok(),
        "a zero interval turns spacing off"
    );
    for r in [
        Rate::per(0, HOUR).burst(1).build(),
        Rate::per(1, Duration::ZERO).burst(1).build(),
        Rate::per(1, HOUR).burst(0).build(),
    ] {
        assert_eq!(r.unwrap_err().kind(), ErrorKind::InvalidInput);
    }
}

/// Empty and oversized keys are `InvalidInput` before any I/O.
pub async fn bad_keys_are_invalid_input<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    let t = throttle_for(fx);
    let r = RateLimiter::new(fx.backend(), ns_for(fx, "rl"));
    let p = policy(1, 1, Duration::ZERO, HOUR);
    let huge = "h".repeat(5000);
    for key in ["", huge.as_str()] {
        assert_eq!(t.acquire(key, &p).await.unwrap_err().kind(), ErrorKind::InvalidInput);
        assert_eq!(t.penalize(key, HOUR).await.unwrap_err().kind(), ErrorKind::InvalidInput);
        assert_eq!(t.inspect(key).await.unwrap_err().kind(), ErrorKind::InvalidInput);
        assert_eq!(t.clear_penalty(key).await.unwrap_err().kind(), ErrorKind::InvalidInput);
        assert_eq!(
            r.limit(key, &Rate::per_second(1).burst(1).build().unwrap())
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidInput
        );
    }
    assert_eq!(
        t.penalize("k", Duration::ZERO).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(t.stats().status.errors.iter().map(|(_, n)| n).sum::<u64>(), 9);
}

// ---- acquire -------------------------------------------------------------------------

/// A grant takes a lease in the global and the key accounting and records the time.
pub async fn a_grant_takes_a_lease_everywhere_and_records_the_time<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    let t = throttle_for(fx);
    let p = policy(5, 5, Duration::ZERO, HOUR);
    let before = t.inspect("mx1").await.unwrap().value;
    assert_eq!(
        (before.key_leases, before.global_leases, before.last_acquired),
        (0, 0, None)
    );
    let permit = granted(acquire(&t, "mx1", &p).await);
    let _other = granted(acquire(&t, "mx2", &p).await);
    let s = t.inspect("mx1").await.unwrap().value;
    assert_eq!((s.key_leases, s.global_leases), (1, 2));
    assert_eq!(s.last_acquired, Some(permit.acquired_at()));
    assert_eq!(permit.key(), "mx1");
    assert_eq!(permit.expires_at().duration_since(permit.acquired_at()).unwrap(), HOUR);
}

/// The key cap refuses with `KeyCap` and the time until a lease expires.
pub async fn the_key_cap_refuses_until_a_lease_expires<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    let t = throttle_for(fx);
    let ttl = Duration::from_secs(30);
    let p = policy(10, 2, Duration::ZERO, ttl);
    let _a = granted(acquire(&t, "k", &p).await);
    let _b = granted(acquire(&t, "k", &p).await);
    let (reason, retry) = denied(acquire(&t, "k", &p).await);
    assert_eq!(reason, DenyReason::KeyCap);
    within(retry, ttl, fx.controls_time());
    let _other = granted(acquire(&t, "other", &p).await);
}

/// The global cap holds across keys.
pub async fn the_global_cap_holds_across_keys<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    let t = throttle_for(fx);
    let p = policy(3, 5, Duration::ZERO, HOUR);
    let held: Vec<_> = [
        granted(acquire(&t, "a", &p).await),
        granted(acquire(&t, "b", &p).await),
        granted(acquire(&t, "c", &p).await),
    ]
    .into();
    let (reason, retry) = denied(acquire(&t, "d", &p).await);
    assert_eq!(reason, DenyReason::GlobalCap);
    within(retry, HOUR, fx.controls_time());
    assert_eq!(held.len(), 3);
}

/// Two acquisitions of one key are at least `min_interval` apart.
pub async fn acquisitions_of_a_key_are_spaced<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    let t = throttle_for(fx);
    let interval = fx.short_ttl();
    let p = policy(10, 10, interval, HOUR);
    let first = granted(acquire(&t, "k", &p).await);
    let (reason, retry) = denied(acquire(&t, "k", &p).await);
    assert_eq!(reason, DenyReason::MinInterval);
    assert!(retry <= interval && !retry.is_zero());
    let _elsewhere = granted(acquire(&t, "other", &p).await);
    fx.advance(interval).await;
    let second = granted(acquire(&t, "k", &p).await);
    assert!(second.acquired_at().duration_since(first.acquired_at()).unwrap() >= interval);
}

/// A penalty is the first gate; the longer penalty wins; clearing ends it.
pub async fn a_penalty_blocks_the_key_and_the_longer_one_wins<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    let t = throttle_for(fx);
    let p = policy(10, 10, Duration::ZERO, HOUR);
    let until = t.penalize("k", Duration::from_secs(60)).await.unwrap().value;
    let shorter = t.penalize("k", Duration::from_secs(1)).await.unwrap().value;
    assert_eq!(shorter, until, "a shorter penalty never shortens a running one");
    let (reason, retry) = denied(acquire(&t, "k", &p).await);
    assert_eq!(reason, DenyReason::Penalty);
    within(retry, Duration::from_secs(60), fx.controls_time());
    assert_eq!(t.inspect("k").await.unwrap().value.penalty_until, Some(until));
    let longer = t.penalize("k", Duration::from_secs(120)).await.unwrap().value;
    assert!(longer > until);
    assert!(t.clear_penalty("k").await.unwrap().value);
    assert!(!t.clear_penalty("k").await.unwrap().value);
    assert_eq!(t.inspect("k").await.unwrap().value.penalty_until, None);
    granted(acquire(&t, "k", &p).await);
}

/// The reason is the first failing gate; `retry_after` covers every gate.
pub async fn gates_are_checked_in_order_and_retry_after_covers_all<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    let t = throttle_for(fx);
    let ttl = Duration::from_secs(300);
    let p = policy(1, 1, Duration::from_secs(100), ttl);
    let _held = granted(acquire(&t, "k", &p).await);
    t.penalize("k", Duration::from_secs(10)).await.unwrap();
    // Every gate fails: penalty (10 s), interval (100 s), global and key cap (300 s).
    let (reason, retry) = denied(acquire(&t, "k", &p).await);
    assert_eq!(reason, DenyReason::Penalty);
    within(retry, ttl, fx.controls_time());
    t.clear_penalty("k").await.unwrap();
    assert_eq!(denied(acquire(&t, "k", &p).await).0, DenyReason::MinInterval);
    assert_eq!(denied(acquire(&t, "other", &p).await).0, DenyReason::GlobalCap);
}

/// Of concurrent acquisitions exactly the caps' worth are granted.
pub async fn concurrent_acquisitions_never_exceed_the_caps<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    let t = throttle_for(fx);
    let p = policy(4, 3, Duration::ZERO, HOUR);
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let (t, p) = (t.clone(), p);
            tokio::spawn(async move { t.acquire(if i % 2 == 0 { "a" } else { "b" }, &p).await.unwrap().value })
        })
        .collect();
    let mut permits = Vec::new();
    for task in tasks {
        if let Decision::Acquired(p) = task.await.unwrap() {
            permits.push(p);
        }
    }
    assert_eq!(permits.len(), 4, "global cap 4");
    for key in ["a", "b"] {
        assert!(permits.iter().filter(|p| p.key() == key).count() <= 3, "key cap 3");
    }
    let s = t.stats();
    assert_eq!((s.acquired, s.denied, s.held_permits), (4, 36, 4));
}

// ---- permits -----------------------------------------------------------------------

/// Release frees the slot, once; fencing tokens strictly increase.
pub async fn release_is_idempotent_and_tokens_increase<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    let t = throttle_for(fx);
    let p = policy(1, 1, Duration::ZERO, HOUR);
    let mut last = 0;
    for _ in 0..10 {
        let permit = granted(acquire(&t, "k", &p).await);
        assert!(permit.lease_id() > last, "fencing tokens strictly increase");
        last = permit.lease_id();
        assert_eq!(denied(acquire(&t, "k", &p).await).0, DenyReason::GlobalCap);
        let acquired_at = permit.acquired_at();
        let at = permit.release().await.unwrap().expect("released while held");
        assert!(at >= acquired_at);
        // `release` consumed the permit; its drop must not count (or release) again.
        assert_eq!(t.stats().held_permits, 0, "a released permit is released once");
    }
    assert_eq!(t.stats().held_permits, 0);
}

/// A permit dropped without release is released in the background.
pub async fn a_dropped_permit_is_released_in_the_background<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    let t = throttle_for(fx);
    let p = policy(1, 1, Duration::ZERO, HOUR);
    drop(granted(acquire(&t, "k", &p).await));
    let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match acquire(&t, "k", &p).await {
            Decision::Acquired(_) => break,
            Decision::Denied { .. } => assert!(
                tokio::time::Instant::now() < give_up,
                "the dropped permit was never released"
            ),
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(t.stats().held_permits, 0);
}

/// A caller that goes away while its acquisition is on its way leaves no lease held:
/// the acquire future is dropped after its call ran on the backend and before its
/// answer was read.
pub async fn a_dropped_acquire_leaves_no_lease<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    use std::future::Future;
    let t = throttle_for(fx);
    let p = policy(1, 1, Duration::ZERO, HOUR);
    let mut acquiring = Box::pin(t.acquire("k", &p));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let std::task::Poll::Ready(d) = acquiring.as_mut().poll(&mut cx) {
            // Decided at once (in process): the permit dropped here is released.
            drop(d);
            break;
        }
        // The call ran once the lease shows; the future has not read the answer, and
        // is dropped before it can.
        if t.inspect("k").await.unwrap().value.key_leases == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < give_up, "the acquisition never ran");
    }
    drop(acquiring);
    loop {
        let state = t.inspect("k").await.unwrap().value;
        if state.key_leases == 0 && t.stats().held_permits == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "a lease taken for a caller that went away is held: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    granted(acquire(&t, "k", &p).await);
}

/// An unreleased lease is reclaimed at its expiry, and counted.
pub async fn an_expired_lease_is_reclaimed<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    let t = throttle_for(fx);
    let ttl = fx.short_ttl();
    let p = policy(1, 1, Duration::ZERO, ttl);
    let stale = granted(acquire(&t, "k", &p).await);
    assert_eq!(denied(acquire(&t, "k", &p).await).0, DenyReason::GlobalCap);
    fx.advance(ttl + ttl / 4).await;
    let fresh = granted(acquire(&t, "k", &p).await);
    assert!(t.stats().reclaimed >= 1);
    assert_eq!(
        stale.release().await.unwrap(),
        None,
        "releasing an expired lease changes nothing"
    );
    assert_eq!(
        t.inspect("k").await.unwrap().value.key_leases,
        1,
        "the fresh lease is intact"
    );
    drop(fresh);
}

/// `extend` keeps a lease alive past its original expiry; `None` once it is gone.
pub async fn extend_keeps_a_lease_alive<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    let t = throttle_for(fx);
    let ttl = fx.short_ttl();
    let p = policy(1, 1, Duration::ZERO, ttl);
    let mut permit = granted(acquire(&t, "k", &p).await);
    let new = permit.extend(ttl * 4).await.unwrap().expect("extended");
    assert!(new > permit.acquired_at() + ttl);
    assert_eq!(permit.expires_at(), new);
    fx.advance(ttl + ttl / 2).await;
    assert_eq!(
        denied(acquire(&t, "k", &p).await).0,
        DenyReason::GlobalCap,
        "still held"
    );
    assert!(permit.release().await.unwrap().is_some());
    let mut next = granted(acquire(&t, "k", &p).await);
    fx.advance(ttl + ttl / 2).await;
    assert_eq!(next.extend(ttl).await.unwrap(), None, "an expired lease is gone");
}

// ---- rate limiter ------------------------------------------------------------------

/// GCRA: a burst passes at once, then one per emission interval; a refusal consumes
/// nothing.
pub async fn the_rate_limiter_allows_a_burst_then_the_rate<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    let r = RateLimiter::new(fx.backend(), ns_for(fx, "rl"));
    let rate = Rate::per(1, fx.short_ttl()).burst(3).build().unwrap();
    for remaining in [2, 1, 0] {
        assert_eq!(r.limit("k", &rate).await.unwrap().value.remaining(), remaining);
    }
    let RateDecision::Limited { retry_after, .. } = r.limit("k", &rate).await.unwrap().value else {
        panic!("not limited")
    };
    within(retry_after, fx.short_ttl(), fx.controls_time());
    assert!(matches!(
        r.limit("k", &rate).await.unwrap().value,
        RateDecision::Limited { .. }
    ));
    assert!(matches!(
        r.limit("other", &rate).await.unwrap().value,
        RateDecision::Allowed { remaining: 2, .. }
    ));
    fx.advance(fx.short_ttl()).await;
    assert!(matches!(
        r.limit("k", &rate).await.unwrap().value,
        RateDecision::Allowed { remaining: 0, .. }
    ));
    let s = r.stats();
    assert_eq!((s.allowed, s.limited), (5, 2));
}

/// Concurrent decisions on one key are each one atomic step: of many at once, exactly
/// the burst pass, with `remaining` from burst − 1 down to 0 once each — whatever a
/// backend does to carry them (Redis batches concurrent decisions into one script
/// call), and from limiters built apart on the same namespace (nodes) as from clones
/// of one.
pub async fn concurrent_decisions_each_decide_alone<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    let ns = ns_for(fx, "rl-concurrent");
    let nodes: Vec<_> = (0..3).map(|_| RateLimiter::new(fx.backend(), ns.clone())).collect();
    let rate = Rate::per(1, HOUR).burst(30).build().unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let r = nodes[i % 3].clone();
            let key = if i % 2 == 0 { "a" } else { "b" };
            tokio::spawn(async move { (key, r.limit(key, &rate).await.unwrap().value) })
        })
        .collect();
    let mut passed: HashMap<&str, Vec<u32>> = HashMap::new();
    for task in tasks {
        let (key, decision) = task.await.unwrap();
        if let RateDecision::Allowed { remaining, .. } = decision {
            passed.entry(key).or_default().push(remaining);
        }
    }
    for key in ["a", "b"] {
        let mut remaining = passed.remove(key).unwrap_or_default();
        remaining.sort_unstable();
        assert_eq!(remaining, (0..30).collect::<Vec<u32>>(), "key {key}");
    }
    let (allowed, limited) = nodes
        .iter()
        .map(RateLimiter::stats)
        .fold((0, 0), |(a, l), s| (a + s.allowed, l + s.limited));
    assert_eq!((allowed, limited), (60, 140));
}

/// Every decision carries the burst and when the allowance is full again: zero when
/// full, one emission interval more per request passed.
pub async fn every_rate_decision_carries_the_limit_and_the_reset<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    let r = RateLimiter::new(fx.backend(), ns_for(fx, "rl-reset"));
    let rate = Rate::per(1, Duration::from_secs(3600)).burst(3).build().unwrap();
    let hour = Duration::from_secs(3600);
    let first = r.limit("k", &rate).await.unwrap().value;
    assert_eq!((first.limit(), first.remaining()), (3, 2), "{first:?}");
    within(first.reset_after(), hour, fx.controls_time());
    let second = r.limit("k", &rate).await.unwrap().value;
    within(second.reset_after(), 2 * hour, fx.controls_time());
    assert!(
        second.reset_after() > hour,
        "each request adds one interval: {second:?}"
    );
    r.limit("k", &rate).await.unwrap();
    let refused = r.limit("k", &rate).await.unwrap().value;
    assert!(!refused.is_allowed(), "{refused:?}");
    assert_eq!((refused.limit(), refused.remaining()), (3, 0));
    within(refused.reset_after(), 3 * hour, fx.controls_time());
    assert!(refused.reset_after() > 2 * hour, "{refused:?}");
    within(refused.retry_after(), hour, fx.controls_time());
}

/// A request of cost n passes when n fit, consuming them together; one that does not
/// fit consumes nothing; a cost of 0 or above the burst is invalid input.
pub async fn a_request_can_cost_several<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    let r = RateLimiter::new(fx.backend(), ns_for(fx, "rl-cost"));
    let rate = Rate::per(1, Duration::from_secs(3600)).burst(5).build().unwrap();
    let d = r.limit_n("k", &rate, 3).await.unwrap().value;
    assert!(matches!(d, RateDecision::Allowed { remaining: 2, .. }), "{d:?}");
    let d = r.limit_n("k", &rate, 3).await.unwrap().value;
    assert!(!d.is_allowed(), "3 do not fit in 2: {d:?}");
    within(d.retry_after(), Duration::from_secs(3600), fx.controls_time());
    let d = r.limit_n("k", &rate, 2).await.unwrap().value;
    assert!(
        matches!(d, RateDecision::Allowed { remaining: 0, .. }),
        "the refusal consumed nothing: {d:?}"
    );
    for cost in [0, 6] {
        let e = r.limit_n("other", &rate, cost).await.unwrap_err();
        assert_eq!(
            e.kind(),
            palisade_cache_core::ErrorKind::InvalidInput,
            "cost {cost}: {e:?}"
        );
    }
    // Nothing was written for the refused costs: `other` still has its full burst.
    let d = r.limit_n("other", &rate, 5).await.unwrap().value;
    assert!(d.is_allowed(), "{d:?}");
}

/// A peek answers what `limit` would, and consumes nothing however often it is asked.
pub async fn a_peek_answers_like_limit_and_consumes_nothing<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    let r = RateLimiter::new(fx.backend(), ns_for(fx, "rl-peek"));
    let rate = Rate::per(1, Duration::from_secs(3600)).burst(2).build().unwrap();
    for _ in 0..3 {
        let d = r.peek("k", &rate).await.unwrap().value;
        assert!(matches!(d, RateDecision::Allowed { remaining: 1, .. }), "{d:?}");
    }
    r.limit("k", &rate).await.unwrap();
    r.limit("k", &rate).await.unwrap();
    let peeked = r.peek("k", &rate).await.unwrap().value;
    assert!(!peeked.is_allowed(), "{peeked:?}");
    let limited = r.limit("k", &rate).await.unwrap().value;
    assert!(!limited.is_allowed(), "{limited:?}");
    let s = r.stats();
    assert_eq!((s.allowed, s.limited), (2, 1), "peeks are not counted as decisions");
}

/// A reset gives the key a full allowance again and says whether it had state; other
/// keys are untouched.
pub async fn a_reset_restores_the_full_allowance_of_one_key<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    let r = RateLimiter::new(fx.backend(), ns_for(fx, "rl-clear"));
    let rate = Rate::per(1, Duration::from_secs(3600)).burst(2).build().unwrap();
    for key in ["k", "other"] {
        r.limit(key, &rate).await.unwrap();
        r.limit(key, &rate).await.unwrap();
    }
    assert!(r.reset("k").await.unwrap().value, "k had state");
    assert!(!r.reset("k").await.unwrap().value, "nothing left to reset");
    assert!(!r.reset("never").await.unwrap().value);
    let d = r.limit("k", &rate).await.unwrap().value;
    assert!(matches!(d, RateDecision::Allowed { remaining: 1, .. }), "{d:?}");
    let d = r.limit("other", &rate).await.unwrap().value;
    assert!(!d.is_allowed(), "other keys keep their state: {d:?}");
    let e = r.reset("").await.unwrap_err();
    assert_eq!(e.kind(), palisade_cache_core::ErrorKind::InvalidInput);
}

// ---- stats, provenance, tenancy -----------------------------------------------------

/// Stats count decisions by outcome and denials by reason.
pub async fn stats_count_denials_by_reason<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    let t = throttle_for(fx);
    let p = policy(2, 1, Duration::from_secs(600), HOUR);
    let _a = granted(acquire(&t, "a", &p).await);
    denied(acquire(&t, "a", &p).await); // interval
    t.penalize("p", HOUR).await.unwrap();
    denied(acquire(&t, "p", &p).await); // penalty
    let _b = granted(acquire(&t, "b", &p).await);
    denied(acquire(&t, "c", &p).await); // global
    let s = t.stats();
    assert_eq!((s.acquired, s.denied), (2, 3));
    assert_eq!(s.denials_of(DenyReason::Penalty), 1);
    assert_eq!(s.denials_of(DenyReason::MinInterval), 1);
    assert_eq!(s.denials_of(DenyReason::GlobalCap), 1);
    assert_eq!(s.denials_of(DenyReason::KeyCap), 0);
    assert_eq!(s.held_permits, 2);
    assert_eq!(s.status.mode, t.backend().status().mode);
}

/// Every answer carries the backend's provenance; tenants never share gates.
pub async fn answers_carry_provenance_and_tenants_are_isolated<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    let a = Throttle::new(fx.backend(), ns_for(fx, "tenant-a"));
    // `namespace` with the same name: the same gates, and the same counters.
    let b = a.namespace("mx").unwrap();
    // What `Palisade::tenant` hands out: the same backend and counters, another tenant.
    let other_tenant = a.for_tenant("tenant-b").unwrap();
    assert_eq!(other_tenant.scope().ns().tenant(), "tenant-b");
    let p = policy(1, 1, Duration::ZERO, HOUR);
    let t = a.acquire("k", &p).await.unwrap();
    assert_eq!(t.provenance, fx.provenance());
    assert_eq!(
        denied(b.acquire("k", &p).await.unwrap().value).0,
        DenyReason::GlobalCap,
        "same namespace"
    );
    assert_eq!(a.stats().denied, 1, "a namespace sibling counts into the same stats");
    let elsewhere = other_tenant.acquire("k", &p).await.unwrap();
    assert!(
        matches!(elsewhere.value, Decision::Acquired(_)),
        "another tenant has its own gates"
    );
    assert_eq!(a.inspect("k").await.unwrap().provenance, fx.provenance());
    assert_eq!(a.penalize("k", HOUR).await.unwrap().provenance, fx.provenance());
    assert!(
        other_tenant.inspect("k").await.unwrap().value.penalty_until.is_none(),
        "a penalty of one tenant is not another's"
    );
    assert_eq!(a.clear_penalty("k").await.unwrap().provenance, fx.provenance());
    // The rate limiter's tenants are isolated the same way.
    let rl = RateLimiter::new(fx.backend(), ns_for(fx, "rl-tenant-a"));
    let rl_other = rl.for_tenant("rl-tenant-b").unwrap();
    let rate = Rate::per(1, HOUR).burst(1).build().unwrap();
    assert!(matches!(
        rl.limit("k", &rate).await.unwrap().value,
        RateDecision::Allowed { .. }
    ));
    assert!(matches!(
        rl.limit("k", &rate).await.unwrap().value,
        RateDecision::Limited { .. }
    ));
    assert!(
        matches!(
            rl_other.limit("k", &rate).await.unwrap().value,
            RateDecision::Allowed { .. }
        ),
        "another tenant has its own rate"
    );
    assert_eq!(rl.stats().limited, 1, "tenant handles share the counters");
}

// ---- the model -----------------------------------------------------------------------

#[derive(Debug, Clone)]
pub enum ThrottleOp {
    Acquire(u8),
    Release(u8),
    Penalize(u8, u8),
    Clear(u8),
    Advance(u16),
}

fn op_strategy(time: bool) -> BoxedStrategy<ThrottleOp> {
    let k = 0u8..3;
    let base = prop_oneof![
        6 => k.clone().prop_map(ThrottleOp::Acquire),
        3 => any::<u8>().prop_map(ThrottleOp::Release),
        1 => (k.clone(), 1u8..20).prop_map(|(k, s)| ThrottleOp::Penalize(k, s)),
        1 => k.prop_map(ThrottleOp::Clear),
    ];
    if time {
        prop_oneof![8 => base, 3 => (1u16..8000).prop_map(ThrottleOp::Advance)].boxed()
    } else {
        base.boxed()
    }
}

#[derive(Default)]
struct ModelKey {
    leases: Vec<(u64, u64)>,
    last: Option<u64>,
    pen: u64,
}

/// Random sequences against the backend and a model of the decision table (exact
/// `retry_after` when the fixture controls time).
pub fn run_model<F: Fixture<Backend: ThrottleBackend>>(rt: &tokio::runtime::Runtime, fx: &F, cases: u32) {
    palisade_cache_core::testkit::run_op_sequences(op_strategy(fx.controls_time()), cases, |ops| {
        rt.block_on(check_model(fx, ops))
    });
}

async fn check_model<F: Fixture<Backend: ThrottleBackend>>(fx: &F, ops: &[ThrottleOp]) {
    let t = throttle_for(fx);
    let exact = fx.controls_time();
    let (interval, ttl) = if exact {
        (1_000_000u64, 5_000_000u64)
    } else {
        (0, 600_000_000)
    };
    let p = policy(3, 2, Duration::from_micros(interval), Duration::from_micros(ttl));
    let mut keys: HashMap<u8, ModelKey> = HashMap::new();
    let mut held: Vec<(u8, Permit)> = Vec::new();
    let mut now = 0u64; // µs since the start of the case (model time)
    for (step, op) in ops.iter().enumerate() {
        let ctx = || format!("step {step}: {op:?} in {ops:?}");
        for k in keys.values_mut() {
            k.leases.retain(|(_, exp)| *exp > now);
        }
        match *op {
            ThrottleOp::Acquire(k) => {
                let mut global: Vec<u64> = keys.values().flat_map(|s| s.leases.iter().map(|(_, e)| *e)).collect();
                let st = keys.entry(k).or_default();
                let mut own: Vec<u64> = st.leases.iter().map(|(_, e)| *e).collect();
                global.sort_unstable();
                own.sort_unstable();
                let cap_free = |v: &[u64], cap: usize| if v.len() < cap { now } else { v[v.len() - cap] };
                let free = [
                    st.pen.max(now),
                    st.last.map_or(now, |l| (l + interval).max(now)),
                    cap_free(&global, 3),
                    cap_free(&own, 2),
                ];
                let got = acquire(&t, &k.to_string(), &p).await;
                match free.iter().position(|f| *f > now) {
                    Some(gate) => {
                        let (reason, retry) = match got {
                            Decision::Denied { reason, retry_after } => (reason, retry_after),
                            Decision::Acquired(p) => panic!("acquired {p:?}, model denies: {}", ctx()),
                        };
                        assert_eq!(reason, DenyReason::ALL[gate], "{}", ctx());
                        if exact {
                            let until = free.iter().max().copied().unwrap_or(now);
                            assert_eq!(retry, Duration::from_micros(until - now), "{}", ctx());
                        }
                    }
                    None => {
                        let Decision::Acquired(permit) = got else {
                            panic!("denied, model grants: {}", ctx())
                        };
                        let st = keys.entry(k).or_default();
                        st.leases.push((permit.lease_id(), now + ttl));
                        st.last = Some(now);
                        held.push((k, permit));
                    }
                }
            }
            ThrottleOp::Release(i) => {
                if held.is_empty() {
                    continue;
                }
                let (k, permit) = held.remove(usize::from(i) % held.len());
                let st = keys.entry(k).or_default();
                let live = st.leases.iter().any(|(id, _)| *id == permit.lease_id());
                st.leases.retain(|(id, _)| *id != permit.lease_id());
                assert_eq!(permit.release().await.unwrap().is_some(), live, "{}", ctx());
            }
            ThrottleOp::Penalize(k, secs) => {
                let until: SystemTime = t
                    .penalize(&k.to_string(), Duration::from_secs(u64::from(secs)))
                    .await
                    .unwrap()
                    .value;
                let st = keys.entry(k).or_default();
                let prev = st.pen;
                st.pen = st.pen.max(now + u64::from(secs) * 1_000_000);
                if exact && prev == st.pen && prev > now {
                    assert_eq!(
                        t.inspect(&k.to_string()).await.unwrap().value.penalty_until,
                        Some(until),
                        "{}",
                        ctx()
                    );
                }
            }
            ThrottleOp::Clear(k) => {
                let st = keys.entry(k).or_default();
                let was = st.pen > now;
                st.pen = 0;
                assert_eq!(t.clear_penalty(&k.to_string()).await.unwrap().value, was, "{}", ctx());
            }
            ThrottleOp::Advance(ms) => {
                fx.advance(Duration::from_millis(u64::from(ms))).await;
                now += u64::from(ms) * 1000;
            }
        }
    }
    for (_, p) in held {
        p.release().await.unwrap();
    }
}

// ---- waiting -------------------------------------------------------------------------

/// A throttle whose waiters never re-check on their own within a test: only wake-ups
/// and the times refusals name move them.
fn waiting_throttle<F: Fixture<Backend: ThrottleBackend>>(fx: &F) -> Throttle<F::Backend> {
    throttle_for(fx).with_recheck(HOUR)
}

/// Waits (deadline-bound) until `n` waiters are queued on `key`.
async fn until_waiting<B: ThrottleBackend>(t: &Throttle<B>, key: &str, n: u32) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let w = t.inspect(key).await.unwrap().value.waiting;
        if w == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "{w} waiters on {key}, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Holds the only slot through `held_key`, queues a waiter on `wait_key`, releases,
/// and checks the waiter was served by that release's wake-up (no re-check); returns
/// the waiter's permit.
async fn a_release_on_serves_a_waiter_on<B: ThrottleBackend>(
    t: &Throttle<B>,
    p: &Policy,
    held_key: &str,
    wait_key: &str,
) -> crate::Permit {
    let held = granted(acquire(t, held_key, p).await);
    let w = spawn_wait(t, wait_key, p, HOUR);
    until_waiting(t, wait_key, 1).await;
    held.release().await.unwrap();
    let permit = granted(joined(w).await);
    let s = t.stats();
    assert_eq!(s.rechecks, 0, "served by the release: {s:?}");
    assert!(s.wakeups + s.handoffs >= 1, "{s:?}");
    permit
}

/// The raw wake of `ticket` on `key`, waiting at most `within`.
async fn raw_wake<B: ThrottleBackend>(t: &Throttle<B>, key: &str, ticket: u64, within: Duration) -> crate::Woken {
    let scope = std::sync::Arc::new(t.scope().clone());
    t.backend()
        .run(&crate::op::Wake::new(scope, key.into(), ticket, within))
        .await
        .unwrap()
        .value
}

/// Holds the only slot of `k`, queues the raw waiter 41 behind it, and releases: the
/// slot is handed to 41 (nobody takes it yet). Returns the policy.
async fn handed_to_41<F: Fixture<Backend: ThrottleBackend>>(t: &Throttle<F::Backend>, life: Duration) -> Policy {
    let p = policy(10, 1, Duration::ZERO, HOUR);
    let held = granted(acquire(t, "k", &p).await);
    let (raw, _) = t.backend().run(&raw_waiter(t, "k", &p, 41, life)).await.unwrap().value;
    assert!(raw_denied(&raw, DenyReason::KeyCap), "{raw:?}");
    held.release().await.unwrap();
    let st = t.inspect("k").await.unwrap().value;
    assert_eq!(
        (st.key_leases, st.global_leases, st.waiting),
        (1, 1, 0),
        "the release handed the slot to 41, which left the queue"
    );
    p
}

/// A waiter in its own task.
fn spawn_wait<B: ThrottleBackend>(
    t: &Throttle<B>,
    key: &str,
    p: &Policy,
    max_wait: Duration,
) -> tokio::task::JoinHandle<Decision> {
    let (t, key, p) = (t.clone(), key.to_owned(), *p);
    tokio::spawn(async move { t.acquire_wait(&key, &p, max_wait).await.unwrap().value })
}

async fn joined(h: tokio::task::JoinHandle<Decision>) -> Decision {
    tokio::time::timeout(Duration::from_secs(60), h)
        .await
        .expect("the waiter was never served")
        .unwrap()
}

/// `acquire_wait` grants at once when the gates pass, without queueing; a zero wait is
/// one `acquire`; a wait over a day is `InvalidInput` before any I/O.
pub async fn acquire_wait_grants_at_once_and_checks_its_wait<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    let t = waiting_throttle(fx);
    let p = policy(5, 1, Duration::ZERO, HOUR);
    let permit = granted(t.acquire_wait("k", &p, HOUR).await.unwrap().value);
    assert_eq!(
        denied(t.acquire_wait("k", &p, Duration::ZERO).await.unwrap().value).0,
        DenyReason::KeyCap
    );
    for bad in [Duration::from_secs(86_401), Duration::MAX] {
        let e = t.acquire_wait("k", &p, bad).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad:?}");
    }
    assert_eq!(
        t.acquire_wait("", &p, HOUR).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    let s = t.stats();
    assert_eq!((s.waited, s.acquired, s.denied), (0, 1, 1));
    assert_eq!(t.inspect("k").await.unwrap().value.waiting, 0, "nothing was queued");
    permit.release().await.unwrap();
}

/// A release hands its slot to the waiter at the head of the key's queue: served by
/// the handoff (no wake-up to ask again, no re-check), under the waiter's own policy
/// (its lease TTL, not the releaser's).
pub async fn a_release_hands_its_slot_to_the_first_waiter<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    let t = waiting_throttle(fx);
    let holder = policy(5, 1, Duration::ZERO, HOUR);
    let mine = policy(5, 1, Duration::ZERO, Duration::from_secs(600));
    let held = granted(acquire(&t, "k", &holder).await);
    let w = spawn_wait(&t, "k", &mine, HOUR);
    until_waiting(&t, "k", 1).await;
    let released = held.release().await.unwrap().expect("the lease was live");
    let permit = granted(joined(w).await);
    let s = t.stats();
    assert_eq!((s.waited, s.handoffs, s.wakeups, s.rechecks), (1, 1, 0, 0), "{s:?}");
    let lease = permit.lease();
    assert_eq!(lease.acquired_at, released, "granted in the release's step");
    assert_eq!(
        lease.expires_at.duration_since(lease.acquired_at).unwrap(),
        Duration::from_secs(600),
        "the waiter's lease TTL"
    );
    let st = t.inspect("k").await.unwrap().value;
    assert_eq!((st.waiting, st.key_leases), (0, 1), "served, it left the queue");
    permit.release().await.unwrap();
    assert_eq!(t.inspect("k").await.unwrap().value.key_leases, 0);
}

/// A release that a gate of the head waiter's policy refuses (here a penalty) hands
/// nothing over: it wakes the waiter, which asks again.
pub async fn a_release_the_gates_refuse_to_hand_off_wakes_the_waiter<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    let t = waiting_throttle(fx);
    let p = policy(10, 1, Duration::ZERO, HOUR);
    let held = granted(acquire(&t, "k", &p).await);
    let (raw, _) = t.backend().run(&raw_waiter(&t, "k", &p, 41, HOUR)).await.unwrap().value;
    assert!(raw_denied(&raw, DenyReason::KeyCap), "{raw:?}");
    t.penalize("k", HOUR).await.unwrap();
    held.release().await.unwrap();
    let st = t.inspect("k").await.unwrap().value;
    assert_eq!(
        (st.key_leases, st.waiting),
        (0, 1),
        "nothing handed over, 41 still waits"
    );
    let woken = raw_wake(&t, "k", 41, Duration::from_secs(10)).await;
    assert!(matches!(woken, crate::Woken::Woken), "{woken:?}");
    t.clear_penalty("k").await.unwrap();
    let (raw, _) = t.backend().run(&raw_waiter(&t, "k", &p, 41, HOUR)).await.unwrap().value;
    let crate::RawDecision::Acquired(lease, ops) = raw else {
        panic!("41 asks again once the penalty is over: {raw:?}")
    };
    ops.release("k", lease.id).await.unwrap();
}

/// A waiter that asks again before taking the lease a release handed it (its wait
/// ended in that moment) is answered with that same lease; nothing is left to take.
pub async fn a_waiter_asking_again_gets_the_lease_it_was_handed<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    let t = waiting_throttle(fx);
    let p = handed_to_41::<F>(&t, HOUR).await;
    let (raw, _) = t.backend().run(&raw_waiter(&t, "k", &p, 41, HOUR)).await.unwrap().value;
    let crate::RawDecision::Acquired(lease, ops) = raw else {
        panic!("41 was handed a lease: {raw:?}")
    };
    let st = t.inspect("k").await.unwrap().value;
    assert_eq!(
        (st.key_leases, st.global_leases),
        (1, 1),
        "the same lease, not a second"
    );
    let woken = raw_wake(&t, "k", 41, Duration::from_millis(50)).await;
    assert!(matches!(woken, crate::Woken::TimedOut), "taken once: {woken:?}");
    assert!(
        ops.release("k", lease.id).await.unwrap().is_some(),
        "41's lease was live"
    );
    assert_eq!(t.inspect("k").await.unwrap().value.key_leases, 0);
}

/// A dequeue of a waiter handed a lease it has not taken (its caller went away) gives
/// the lease back.
pub async fn a_dequeue_after_a_handoff_gives_the_lease_back<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    let t = waiting_throttle(fx);
    let p = handed_to_41::<F>(&t, HOUR).await;
    let scope = std::sync::Arc::new(t.scope().clone());
    let dq = crate::op::Dequeue::new(scope, "k".into(), 41);
    assert!(t.backend().run(&dq).await.unwrap().value, "the handed lease went back");
    let st = t.inspect("k").await.unwrap().value;
    assert_eq!((st.key_leases, st.global_leases), (0, 0));
    granted(acquire(&t, "k", &p).await).release().await.unwrap();
}

/// Waiters on a key are served in arrival order.
pub async fn waiters_are_served_in_arrival_order<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    let t = waiting_throttle(fx);
    let p = policy(10, 1, Duration::ZERO, HOUR);
    let held = granted(acquire(&t, "k", &p).await);
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..4u32 {
        let (t2, order) = (t.clone(), std::sync::Arc::clone(&order));
        tasks.push(tokio::spawn(async move {
            let permit = granted(t2.acquire_wait("k", &p, HOUR).await.unwrap().value);
            order.lock().unwrap().push(i);
            permit.release().await.unwrap();
        }));
        until_waiting(&t, "k", i + 1).await;
    }
    held.release().await.unwrap();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("a waiter was never served")
            .unwrap();
    }
    assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3]);
    let s = t.stats();
    assert_eq!((s.waited, s.rechecks), (4, 0), "{s:?}");
}

/// A free slot owed to a queued waiter is not taken by a plain acquisition (other keys
/// are not held back); granted, the waiter leaves the queue; a dequeued waiter gives
/// its place up. A handed lease pushed before `Wake` is called is taken at once.
pub async fn a_slot_owed_to_a_waiter_is_not_taken_by_a_newcomer<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    use crate::op;
    let t = waiting_throttle(fx);
    let p = policy(10, 1, Duration::ZERO, HOUR);
    let b = t.backend();
    let queue = |ticket: u64| raw_waiter(&t, "k", &p, ticket, HOUR);
    // A lease that ends by expiry, not by a release: the slot comes free with nobody
    // to hand it over.
    let short = policy(10, 1, Duration::ZERO, fx.short_ttl());
    let held = granted(acquire(&t, "k", &short).await);
    for ticket in [41, 42] {
        let (raw, _) = b.run(&queue(ticket)).await.unwrap().value;
        assert!(raw_denied(&raw, DenyReason::KeyCap), "{raw:?}");
    }
    // Asking again keeps the arrival: 41 stays first.
    b.run(&queue(42)).await.unwrap();
    assert_eq!(t.inspect("k").await.unwrap().value.waiting, 2);
    fx.advance(fx.short_ttl() + fx.short_ttl() / 2).await;
    assert_eq!(t.inspect("k").await.unwrap().value.key_leases, 0, "the lease ended");
    assert_eq!(held.release().await.unwrap(), None, "ended, so nothing to hand over");
    assert_eq!(
        denied(acquire(&t, "k", &p).await).0,
        DenyReason::KeyCap,
        "the slot is owed to 41"
    );
    let (raw, _) = b.run(&queue(42)).await.unwrap().value;
    assert!(raw_denied(&raw, DenyReason::KeyCap), "42 does not overtake 41: {raw:?}");
    granted(acquire(&t, "other", &p).await).release().await.unwrap();
    let (raw, _) = b.run(&queue(41)).await.unwrap().value;
    let crate::RawDecision::Acquired(lease, ops) = raw else {
        panic!("41's turn: {raw:?}")
    };
    assert_eq!(t.inspect("k").await.unwrap().value.waiting, 1, "41 left the queue");
    // 41's release hands the slot to 42, pushed before 42 asks for it.
    ops.release("k", lease.id).await.unwrap();
    let crate::Woken::Granted(lease, ops) = raw_wake(&t, "k", 42, HOUR).await else {
        panic!("the release handed the slot to 42")
    };
    assert_eq!(t.inspect("k").await.unwrap().value.waiting, 0);
    let (raw, _) = b.run(&queue(43)).await.unwrap().value;
    assert!(raw_denied(&raw, DenyReason::KeyCap), "{raw:?}");
    let dq = op::Dequeue::new(std::sync::Arc::new(t.scope().clone()), "k".into(), 43);
    assert!(b.run(&dq).await.unwrap().value, "43 was queued");
    assert!(!b.run(&dq).await.unwrap().value, "and is no more");
    assert_eq!(t.inspect("k").await.unwrap().value.waiting, 0);
    ops.release("k", lease.id).await.unwrap();
    granted(acquire(&t, "k", &p).await).release().await.unwrap();
}

/// After `max_wait` the waiter is refused with the last reason, once, and leaves the
/// queue.
pub async fn a_waiter_gives_up_after_max_wait_and_leaves_the_queue<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    let t = waiting_throttle(fx);
    let p = policy(10, 1, Duration::ZERO, HOUR);
    let held = granted(acquire(&t, "k", &p).await);
    let (reason, _) = denied(t.acquire_wait("k", &p, Duration::from_millis(200)).await.unwrap().value);
    assert_eq!(reason, DenyReason::KeyCap);
    let s = t.stats();
    assert_eq!(
        (s.waited, s.denied, s.denials_of(DenyReason::KeyCap)),
        (1, 1, 1),
        "{s:?}"
    );
    assert_eq!(t.inspect("k").await.unwrap().value.waiting, 0);
    held.release().await.unwrap();
    granted(acquire(&t, "k", &p).await).release().await.unwrap();
}

/// A waiter whose future is dropped leaves the queue, and no lease is taken for it.
pub async fn a_dropped_waiter_leaves_no_queue_entry_and_takes_no_lease<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    let t = waiting_throttle(fx);
    let p = policy(10, 1, Duration::ZERO, HOUR);
    let held = granted(acquire(&t, "k", &p).await);
    let w = spawn_wait(&t, "k", &p, HOUR);
    until_waiting(&t, "k", 1).await;
    w.abort();
    assert!(w.await.unwrap_err().is_cancelled());
    until_waiting(&t, "k", 0).await;
    held.release().await.unwrap();
    let permit = granted(acquire(&t, "k", &p).await);
    let st = t.inspect("k").await.unwrap().value;
    assert_eq!(
        (st.key_leases, st.global_leases),
        (1, 1),
        "only the new permit holds a slot"
    );
    permit.release().await.unwrap();
}

/// A waiter refused by a penalty goes when the penalty ends, without a release.
pub async fn a_waiter_goes_at_the_time_a_refusal_named<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    let t = waiting_throttle(fx);
    let p = policy(10, 1, Duration::ZERO, HOUR);
    t.penalize("k", Duration::from_millis(300)).await.unwrap();
    let w = spawn_wait(&t, "k", &p, HOUR);
    until_waiting(&t, "k", 1).await;
    fx.advance(Duration::from_millis(400)).await;
    let permit = granted(joined(w).await);
    let s = t.stats();
    assert!(s.rechecks >= 1, "it checked again at the penalty's end: {s:?}");
    assert_eq!(s.wakeups, 0, "{s:?}");
    permit.release().await.unwrap();
}

/// A waiter held back by the namespace's global cap is woken by a release on another
/// key.
pub async fn a_waiter_held_back_by_the_global_cap_is_woken_by_another_key<F: Fixture<Backend: ThrottleBackend>>(
    fx: &F,
) {
    let t = waiting_throttle(fx);
    let p = policy(1, 1, Duration::ZERO, HOUR);
    let permit = a_release_on_serves_a_waiter_on(&t, &p, "a", "b").await;
    let s = t.stats();
    assert_eq!(s.handoffs, 0, "a handoff is within one key: {s:?}");
    permit.release().await.unwrap();
}

/// A waiter's acquisition, raw, on `key` with `ticket` and an entry life of `life`.
fn raw_waiter(
    t: &Throttle<impl ThrottleBackend>,
    key: &str,
    p: &Policy,
    ticket: u64,
    life: Duration,
) -> crate::op::Acquire {
    let scope = std::sync::Arc::new(t.scope().clone());
    crate::op::Acquire::new(scope, key.into(), p.effective(), Some(crate::Waiter::new(ticket, life)))
}

fn raw_denied(raw: &crate::RawDecision, reason: DenyReason) -> bool {
    matches!(raw, crate::RawDecision::Denied { reason: r, .. } if *r == reason)
}

/// A grant that leaves room on the key wakes the next waiter: no release is needed.
pub async fn a_grant_that_leaves_room_wakes_the_next_waiter<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    let t = waiting_throttle(fx);
    let p = policy(10, 2, Duration::ZERO, HOUR);
    let b = t.backend();
    let held = [granted(acquire(&t, "k", &p).await), granted(acquire(&t, "k", &p).await)];
    for ticket in [41, 42] {
        let (raw, _) = b.run(&raw_waiter(&t, "k", &p, ticket, HOUR)).await.unwrap().value;
        assert!(raw_denied(&raw, DenyReason::KeyCap), "{raw:?}");
    }
    // Under a penalty the releases hand nothing over: each wakes the head, 41; 42
    // stays asleep.
    t.penalize("k", HOUR).await.unwrap();
    for permit in held {
        permit.release().await.unwrap();
    }
    t.clear_penalty("k").await.unwrap();
    let (raw, _) = b.run(&raw_waiter(&t, "k", &p, 41, HOUR)).await.unwrap().value;
    let crate::RawDecision::Acquired(first, ops) = raw else {
        panic!("41's turn: {raw:?}")
    };
    let woken = raw_wake(&t, "k", 42, Duration::from_secs(10)).await;
    assert!(
        matches!(woken, crate::Woken::Woken),
        "41's grant left room and woke 42: {woken:?}"
    );
    let (raw, _) = b.run(&raw_waiter(&t, "k", &p, 42, HOUR)).await.unwrap().value;
    let crate::RawDecision::Acquired(second, _) = raw else {
        panic!("42 fits beside 41: {raw:?}")
    };
    for lease in [first, second] {
        ops.release("k", lease.id).await.unwrap();
    }
}

/// A dequeue of a ticket granted a lease (its caller went away while the answer was on
/// its way) gives the lease back.
pub async fn a_dequeue_after_a_grant_gives_the_lease_back<F: Fixture<Backend: ThrottleBackend>>(fx: &F) {
    use crate::op;
    let t = waiting_throttle(fx);
    let p = policy(10, 1, Duration::ZERO, HOUR);
    let b = t.backend();
    let (raw, _) = b.run(&raw_waiter(&t, "k", &p, 41, HOUR)).await.unwrap().value;
    assert!(matches!(raw, crate::RawDecision::Acquired(..)), "{raw:?}");
    // The answer is lost: nobody holds the lease.
    drop(raw);
    assert_eq!(t.inspect("k").await.unwrap().value.key_leases, 1);
    let scope = std::sync::Arc::new(t.scope().clone());
    let dq = op::Dequeue::new(scope, "k".into(), 41);
    assert!(b.run(&dq).await.unwrap().value, "the lease went back");
    let st = t.inspect("k").await.unwrap().value;
    assert_eq!((st.key_leases, st.global_leases), (0, 0));
    assert!(!b.run(&dq).await.unwrap().value, "once");
    granted(acquire(&t, "k", &p).await).release().await.unwrap();
}

/// A waiter that stopped asking (a crashed process) holds its place only for its
/// entry's life; a lease handed to it that it never took goes back then.
pub async fn a_waiter_that_stopped_asking_holds_no_place_after_its_entry_life<F: Fixture<Backend: ThrottleBackend>>(
    fx: &F,
) {
    let t = waiting_throttle(fx);
    let life = fx.short_ttl();
    let p = policy(10, 1, Duration::ZERO, HOUR);
    let (raw, _) = t.backend().run(&raw_waiter(&t, "k", &p, 40, life)).await.unwrap().value;
    let crate::RawDecision::Acquired(lease, ops) = raw else {
        panic!("a free slot: {raw:?}")
    };
    let (raw, _) = t.backend().run(&raw_waiter(&t, "k", &p, 41, life)).await.unwrap().value;
    assert!(raw_denied(&raw, DenyReason::KeyCap), "{raw:?}");
    let (raw, _) = t.backend().run(&raw_waiter(&t, "k", &p, 42, life)).await.unwrap().value;
    assert!(raw_denied(&raw, DenyReason::KeyCap), "{raw:?}");
    // 41 is handed the slot and never takes it; 42 never asks again.
    ops.release("k", lease.id).await.unwrap();
    assert_eq!(
        denied(acquire(&t, "k", &p).await).0,
        DenyReason::KeyCap,
        "within its life the slot is 41's"
    );
    fx.advance(life + life / 2).await;
    let permit = granted(acquire(&t, "k", &p).await);
    let st = t.inspect("k").await.unwrap().value;
    assert_eq!(
        (st.waiting, st.key_leases, st.global_leases),
        (0, 1, 1),
        "no place and no lease left to 41 or 42"
    );
    permit.release().await.unwrap();
}

/// Generates one `#[tokio::test]` per case and the model for a fixture constructor.
#[macro_export]
macro_rules! throttle_suite {
    ($make:path) => {
        $crate::throttle_suite!(@cases $make;
            invalid_policies_and_rates_are_refused,
            bad_keys_are_invalid_input,
            a_grant_takes_a_lease_everywhere_and_records_the_time,
            the_key_cap_refuses_until_a_lease_expires,
            the_global_cap_holds_across_keys,
            acquisitions_of_a_key_are_spaced,
            a_penalty_blocks_the_key_and_the_longer_one_wins,
            gates_are_checked_in_order_and_retry_after_covers_all,
            concurrent_acquisitions_never_exceed_the_caps,
            release_is_idempotent_and_tokens_increase,
            a_dropped_permit_is_released_in_the_background,
            a_dropped_acquire_leaves_no_lease,
            an_expired_lease_is_reclaimed,
            extend_keeps_a_lease_alive,
            the_rate_limiter_allows_a_burst_then_the_rate,
            concurrent_decisions_each_decide_alone,
            every_rate_decision_carries_the_limit_and_the_reset,
            a_request_can_cost_several,
            a_peek_answers_like_limit_and_consumes_nothing,
            a_reset_restores_the_full_allowance_of_one_key,
            stats_count_denials_by_reason,
            answers_carry_provenance_and_tenants_are_isolated,
            acquire_wait_grants_at_once_and_checks_its_wait,
            a_release_hands_its_slot_to_the_first_waiter,
            a_release_the_gates_refuse_to_hand_off_wakes_the_waiter,
            a_waiter_asking_again_gets_the_lease_it_was_handed,
            a_dequeue_after_a_handoff_gives_the_lease_back,
            waiters_are_served_in_arrival_order,
            a_slot_owed_to_a_waiter_is_not_taken_by_a_newcomer,
            a_waiter_gives_up_after_max_wait_and_leaves_the_queue,
            a_dropped_waiter_leaves_no_queue_entry_and_takes_no_lease,
            a_waiter_goes_at_the_time_a_refusal_named,
            a_waiter_held_back_by_the_global_cap_is_woken_by_another_key,
            a_grant_that_leaves_room_wakes_the_next_waiter,
            a_dequeue_after_a_grant_gives_the_lease_back,
            a_waiter_that_stopped_asking_holds_no_place_after_its_entry_life
        );

        #[test]
        fn throttle_model() {
            let rt = ::tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            let Some(fx) = rt.block_on($make("throttle_model")) else { return };
            $crate::testkit::run_model(&rt, &fx, 48);
        }

        #[test]
        fn rate_model() {
            let rt = ::tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            let Some(fx) = rt.block_on($make("rate_model")) else { return };
            $crate::testkit::run_rate_model(&rt, &fx, 48);
        }

        #[test]
        fn throttle_failed_calls_change_nothing() {
            let rt = ::tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            let Some(fx) = rt.block_on($make("throttle_failed_calls")) else { return };
            $crate::testkit::run_failed_calls(&rt, &fx, 24);
        }
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(fx) = $make(stringify!($case)).await else { return };
                $crate::testkit::$case(&fx).await;
            }
        )*
    };
}

// ---- failed calls change nothing -----------------------------------------------------

/// Durations around every throttle limit.
const EDGES: [Duration; 9] = [
    Duration::ZERO,
    Duration::from_nanos(1),
    Duration::from_micros(999),
    crate::MIN_DURATION,
    Duration::from_secs(5),
    crate::MAX_LEASE,
    Duration::from_secs(86_401),
    crate::MAX_PENALTY,
    Duration::MAX,
];

/// One call with random, often invalid, arguments.
#[derive(Debug, Clone)]
pub enum BadThrottleOp {
    /// `acquire` with a lease TTL and a minimum interval from the edges.
    Acquire(usize, usize),
    /// The backend's `acquire`, bypassing the policy's checks, with the same edges.
    BackendAcquire(usize, usize),
    /// `penalize` for an edge.
    Penalize(usize),
    /// `Permit::extend` of the held permit by an edge.
    Extend(usize),
    /// `limit` with a count, a period and a burst (some out of bounds).
    Limit(u32, usize, u32),
}

fn bad_throttle_op() -> impl Strategy<Value = BadThrottleOp> {
    let e = 0..EDGES.len();
    prop_oneof![
        (e.clone(), e.clone()).prop_map(|(a, b)| BadThrottleOp::Acquire(a, b)),
        (e.clone(), e.clone()).prop_map(|(a, b)| BadThrottleOp::BackendAcquire(a, b)),
        e.clone().prop_map(BadThrottleOp::Penalize),
        e.clone().prop_map(BadThrottleOp::Extend),
        (
            prop_oneof![Just(0u32), Just(1), Just(1000), Just(u32::MAX)],
            e,
            prop_oneof![Just(0u32), Just(1), Just(3), Just(u32::MAX)]
        )
            .prop_map(|(c, p, b)| BadThrottleOp::Limit(c, p, b)),
    ]
}

/// What the contract reads of a key, without the backend's clock.
async fn observed<B: ThrottleBackend>(
    t: &Throttle<B>,
    key: &str,
) -> (u32, u32, Option<std::time::SystemTime>, Option<std::time::SystemTime>) {
    let s = t.inspect(key).await.unwrap().value;
    (s.key_leases, s.global_leases, s.penalty_until, s.last_acquired)
}

/// Random calls, many of them invalid, on a key that holds a lease and a penalty:
/// after any call that returns an error, the key reads as before and every stored key
/// of it is byte for byte what it was (where the fixture can see the store); a refused
/// argument is `InvalidInput`.
pub fn run_failed_calls<F: Fixture<Backend: ThrottleBackend>>(rt: &tokio::runtime::Runtime, fx: &F, cases: u32) {
    palisade_cache_core::testkit::run_op_sequences(bad_throttle_op(), cases, |ops| {
        rt.block_on(check_failed_calls(fx, ops))
    });
}

async fn check_failed_calls<F: Fixture<Backend: ThrottleBackend>>(fx: &F, ops: &[BadThrottleOp]) {
    let t = throttle_for(fx);
    let rl = RateLimiter::new(fx.backend(), t.scope().ns().clone());
    let key = "k";
    let p = policy(5, 5, Duration::ZERO, HOUR);
    let mut held = acquire(&t, key, &p).await.permit().expect("a first lease");
    // Long-lived state: nothing expires under the comparisons.
    t.penalize(key, HOUR).await.unwrap();
    let scope = t.scope().clone();
    let stored = [
        scope.global_key().unwrap(),
        scope.leases_key(key).unwrap(),
        scope.state_key(key).unwrap(),
        scope.seq_key().unwrap(),
        scope.rate_key(key).unwrap(),
    ];
    let long = Rate::per(1, HOUR).burst(1).build().unwrap();
    for op in ops {
        // Long-lived rate state: a valid rate with a millisecond window before this
        // call would otherwise let the key expire under the comparison.
        rl.limit(key, &long).await.unwrap();
        let mut before = vec![format!("{:?}", observed(&t, key).await)];
        for k in &stored {
            before.push(format!("{:?}", fx.snapshot(k).await));
        }
        let make = |i: usize, j: usize| crate::ScaledPolicy {
            global_cap: 5,
            key_cap: 5,
            min_interval: EDGES[j],
            lease_ttl: EDGES[i],
        };
        let r: Result<(), palisade_cache_core::Error> = match *op {
            BadThrottleOp::Acquire(i, j) => match Policy::builder()
                .global_cap(5)
                .key_cap(5)
                .min_interval(EDGES[j])
                .lease_ttl(EDGES[i])
                .build()
            {
                Ok(_) => continue, // a valid policy takes a lease: not this test's business
                Err(e) => Err(e),
            },
            BadThrottleOp::BackendAcquire(i, j) => {
                if make(i, j).validate().is_ok() {
                    continue;
                }
                t.backend()
                    .run(&crate::op::Acquire::new(
                        std::sync::Arc::new(scope.clone()),
                        key.to_owned(),
                        make(i, j),
                        None,
                    ))
                    .await
                    .map(drop)
            }
            BadThrottleOp::Penalize(i) => t.penalize(key, EDGES[i]).await.map(drop),
            BadThrottleOp::Extend(i) => held.extend(EDGES[i]).await.map(drop),
            BadThrottleOp::Limit(c, i, b) => match Rate::per(c, EDGES[i]).burst(b).build() {
                Ok(rate) => rl.limit(key, &rate).await.map(drop),
                Err(e) => Err(e),
            },
        };
        if let Err(e) = r {
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{op:?}: {e:?}");
            let mut after = vec![format!("{:?}", observed(&t, key).await)];
            for k in &stored {
                after.push(format!("{:?}", fx.snapshot(k).await));
            }
            assert_eq!(after, before, "{op:?} failed with {e:?} but changed the state");
        }
    }
    held.release().await.unwrap();
}

// ---- the GCRA model ------------------------------------------------------------------

/// Rates of the GCRA model: (count, period, burst). Long periods with large bursts are
/// where a narrow or saturating integer type would go wrong; the first three have an
/// interval of an hour or more, so that real time passing during a case changes no
/// answer and real-time fixtures are compared field by field too.
const RATES: [(u32, Duration, u32); 5] = [
    (1, HOUR, 1_000_000),
    (1, Duration::from_secs(86_400), 3),
    (3, Duration::from_secs(3 * 3600), 1),
    (2, Duration::from_secs(1), 2),
    (1_000, Duration::from_secs(1), 50),
];

/// One GCRA step, or time passing.
#[derive(Debug, Clone)]
pub enum RateOp {
    /// `limit_n` of key `.0` at rate `RATES[.1]`, cost `.2` (at most the burst).
    Limit(u8, usize, u32),
    /// `peek` of key `.0` at rate `RATES[.1]`.
    Peek(u8, usize),
    /// `reset` of key `.0` (for rate `RATES[.1]`).
    Reset(u8, usize),
    /// Time passes (µs), where the fixture controls it.
    Advance(u32),
}

/// Random GCRA sequences (costs, peeks, resets) against the backend and an exact model:
/// every field of every answer (allowed or not, `remaining`, `limit`, `retry_after`,
/// `reset_after`) must match it — the times exactly where the fixture controls time,
/// within their bounds otherwise.
pub fn run_rate_model<F: Fixture<Backend: ThrottleBackend>>(rt: &tokio::runtime::Runtime, fx: &F, cases: u32) {
    let exact = fx.controls_time();
    let rates = if exact { 0..RATES.len() } else { 0..3 };
    let step = (0u8..3, rates.clone(), 1u32..4).prop_map(|(k, r, c)| RateOp::Limit(k, r, c.min(RATES[r].2)));
    let peek = (0u8..3, rates.clone()).prop_map(|(k, r)| RateOp::Peek(k, r));
    let reset = (0u8..3, rates).prop_map(|(k, r)| RateOp::Reset(k, r));
    let op = if exact {
        prop_oneof![
            6 => step,
            2 => peek,
            1 => reset,
            2 => (1u32..5_000_000).prop_map(RateOp::Advance),
        ]
        .boxed()
    } else {
        prop_oneof![6 => step, 2 => peek, 1 => reset].boxed()
    };
    palisade_cache_core::testkit::run_op_sequences(op, cases, |ops| rt.block_on(check_rate_model(fx, ops)));
}

async fn check_rate_model<F: Fixture<Backend: ThrottleBackend>>(fx: &F, ops: &[RateOp]) {
    let rl = RateLimiter::new(fx.backend(), ns_for(fx, "gcra"));
    let mut tat: HashMap<(u8, usize), i128> = HashMap::new();
    let mut now: i128 = 0; // µs since the case began (model time)
    let exact = fx.controls_time();
    for (step, op) in ops.iter().enumerate() {
        let ctx = || format!("step {step}: {op:?} in {ops:?}");
        let (k, r, cost, consume) = match *op {
            RateOp::Advance(us) => {
                fx.advance(Duration::from_micros(u64::from(us))).await;
                now += i128::from(us);
                continue;
            }
            RateOp::Reset(k, r) => {
                let had = rl.reset(&format!("r{r}-k{k}")).await.unwrap().value;
                let model = tat.remove(&(k, r)).is_some_and(|t| t > now);
                if exact {
                    assert_eq!(had, model, "{}", ctx());
                }
                continue;
            }
            RateOp::Limit(k, r, c) => (k, r, c, true),
            RateOp::Peek(k, r) => (k, r, 1, false),
        };
        let (count, period, burst) = RATES[r];
        let rate = Rate::per(count, period).burst(burst).build().unwrap();
        let e = rate.emission.as_micros() as i128;
        let key = format!("r{r}-k{k}");
        let got = if consume {
            rl.limit_n(&key, &rate, cost).await.unwrap().value
        } else {
            rl.peek(&key, &rate).await.unwrap().value
        };
        assert_eq!(got.limit(), burst, "{}", ctx());
        let t = tat.get(&(k, r)).copied().unwrap_or(now).max(now);
        let new_tat = t + e * i128::from(cost);
        let allow_at = new_tat - e * i128::from(burst);
        let us = |d: Duration| d.as_micros() as i128;
        if now < allow_at {
            let RateDecision::Limited {
                retry_after,
                reset_after,
                ..
            } = got
            else {
                panic!("allowed, the model limits: {got:?}, {}", ctx())
            };
            if exact {
                assert_eq!(us(retry_after), allow_at - now, "{}", ctx());
                assert_eq!(us(reset_after), t - now, "{}", ctx());
            } else {
                // Real time moved on since the model's `now`: the times only shrink.
                assert!(us(retry_after) <= allow_at - now, "{}", ctx());
                assert!(us(reset_after) <= t - now, "{}", ctx());
            }
        } else {
            let RateDecision::Allowed {
                remaining, reset_after, ..
            } = got
            else {
                panic!("limited, the model allows: {got:?}, {}", ctx())
            };
            if consume {
                tat.insert((k, r), new_tat);
            }
            // The slow rates of a real-time fixture make the elapsed time negligible
            // for `remaining`: exact on every fixture.
            let model = u32::try_from((now - allow_at) / e).unwrap_or(u32::MAX);
            assert_eq!(remaining, model, "{}", ctx());
            if exact {
                assert_eq!(us(reset_after), new_tat - now, "{}", ctx());
            } else {
                assert!(us(reset_after) <= new_tat - now, "{}", ctx());
            }
        }
    }
}
