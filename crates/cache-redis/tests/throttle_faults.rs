//! Throttle fault tests against a private redis-server that is killed and restarted:
//! strict mode errors (never a fake denial), and the degraded hot swap.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{DEADLINE, Fault, RECOVERY, SLACK, all_fail_within, fault_config, fault_ctx, fault_ns};

use std::time::{Duration, Instant};

use palisade_cache_core::{Component, Event, EventKind, Events, Mode, Provenance};
use palisade_cache_local::LocalThrottle;
use palisade_cache_redis::{RedisConnection, RedisThrottle};
use palisade_redis_server::env;
use palisade_redis_server::server::RedisServer;
use palisade_throttle::{Decision, DenyReason, Permit, Policy, Rate, RateDecision, RateLimiter, Throttle};
use tokio::sync::broadcast;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_an_unreachable_redis_is_an_error_never_a_fake_denial() {
    let Some(mut server) = env::private_server("strict_throttle") else {
        return;
    };
    let events = Events::new(16);
    let conn = RedisConnection::connect(&fault_config(&server)).await.unwrap();
    let backend = palisade_cache_core::Strict::new(
        RedisThrottle::new(conn).await.unwrap().with_restart_hold(false),
        fault_ctx(Component::Throttle, Mode::StrictDistributed, &events),
    )
    .unwrap();
    let t = Throttle::new(backend.clone(), fault_ns("strict", "mx"));
    let r = RateLimiter::new(backend, fault_ns("strict-rl", "mx"));
    let p = Policy::builder()
        .global_cap(5)
        .key_cap(5)
        .min_interval(Duration::ZERO)
        .lease_ttl(Duration::from_secs(60))
        .build()
        .unwrap();
    let held = t.acquire("k", &p).await.unwrap().value.permit().unwrap();
    server.kill();
    for _ in 0..5 {
        let start = Instant::now();
        let e = t.acquire("k", &p).await.unwrap_err();
        assert!(e.is_unavailable(), "{e:?}");
        assert!(start.elapsed() <= DEADLINE + SLACK, "{:?}", start.elapsed());
        assert!(
            r.limit("k", &Rate::per_second(10).burst(10).build().unwrap())
                .await
                .unwrap_err()
                .is_unavailable()
        );
        assert!(
            t.penalize("k", Duration::from_secs(1))
                .await
                .unwrap_err()
                .is_unavailable()
        );
    }
    assert!(held.release().await.unwrap_err().is_unavailable());
    let s = t.stats();
    assert_eq!((s.acquired, s.denied), (1, 0), "no fake denial was counted");
    assert!(s.status.errors.iter().map(|(_, n)| n).sum::<u64>() >= 10);
    server.start_again().unwrap();
    let give_up = Instant::now() + RECOVERY;
    while t.acquire("k", &p).await.is_err() {
        assert!(Instant::now() < give_up, "never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degraded_scales_local_limits_keeps_permits_bound_and_swaps_back_for_real() {
    let Some(mut server) = env::private_server("throttle_hot_swap") else {
        return;
    };
    let events = Events::new(64);
    let mut rx = events.subscribe();
    let conn = RedisConnection::connect(&fault_config(&server)).await.unwrap();
    let fallback = LocalThrottle::default();
    let failover = palisade_cache_core::Failover::new(
        RedisThrottle::new(conn).await.unwrap().with_restart_hold(false),
        fallback.clone(),
        fault_ctx(Component::Throttle, Mode::ExplicitDegraded, &events),
        palisade_cache_core::FailoverOptions::default().with_degraded_share(0.5),
        None,
    )
    .unwrap();
    let namespace = fault_ns("swap", "mx");
    let t = Throttle::new(failover.clone(), namespace.clone());
    // What Redis holds, read directly (not through the failover).
    let direct = {
        let conn = RedisConnection::connect(&fault_config(&server)).await.unwrap();
        Throttle::new(
            RedisThrottle::new(conn).await.unwrap().with_restart_hold(false),
            namespace.clone(),
        )
    };
    let local_view = Throttle::new(fallback.clone(), namespace.clone());
    let p = Policy::builder()
        .global_cap(4)
        .key_cap(2)
        .min_interval(Duration::ZERO)
        .lease_ttl(Duration::from_secs(60))
        .build()
        .unwrap();

    let from_redis = t.acquire("k", &p).await.unwrap();
    assert_eq!(from_redis.provenance, Provenance::Distributed);
    let from_redis = from_redis.value.permit().unwrap();

    server.kill();
    // Degraded: the key cap 2 scaled by 0.5 is 1 slot on this node.
    let first = t.acquire("k", &p).await.unwrap();
    assert_eq!(first.provenance, Provenance::LocalDegraded);
    let local_permit = first.value.permit().expect("one local slot");
    let second = t.acquire("k", &p).await.unwrap();
    assert_eq!(second.provenance, Provenance::LocalDegraded);
    assert!(
        matches!(
            second.value,
            Decision::Denied {
                reason: DenyReason::KeyCap,
                ..
            }
        ),
        "scaled key cap"
    );
    assert!(matches!(rx.recv().await.unwrap().kind, EventKind::Degraded));
    // The permit taken from Redis before the outage cannot be released now.
    assert!(from_redis.release().await.unwrap_err().is_unavailable());
    // Rates are scaled too: burst 4 x 0.5 = 2.
    let rl = RateLimiter::new(failover.clone(), namespace.sibling("rl").unwrap());
    let rate = Rate::per_second(1).burst(4).build().unwrap();
    assert!(matches!(
        rl.limit("ip", &rate).await.unwrap().value,
        RateDecision::Allowed { remaining: 1, .. }
    ));
    assert!(matches!(
        rl.limit("ip", &rate).await.unwrap().value,
        RateDecision::Allowed { remaining: 0, .. }
    ));
    assert!(matches!(
        rl.limit("ip", &rate).await.unwrap().value,
        RateDecision::Limited { .. }
    ));

    server.start_again().unwrap();
    let give_up = Instant::now() + RECOVERY;
    loop {
        let e = tokio::time::timeout(RECOVERY, rx.recv())
            .await
            .expect("Recovered in time")
            .unwrap();
        if matches!(e.kind, EventKind::Recovered { .. }) {
            break;
        }
        assert!(Instant::now() < give_up);
    }
    // The local permit is released where it was granted: the fallback.
    assert_eq!(local_view.inspect("k").await.unwrap().value.key_leases, 1);
    assert!(
        local_permit.release().await.unwrap().is_some(),
        "released on the local backend"
    );
    assert_eq!(local_view.inspect("k").await.unwrap().value.key_leases, 0);
    // New permits really come from Redis (the restarted server starts empty).
    let after = t.acquire("k", &p).await.unwrap();
    assert_eq!(after.provenance, Provenance::Distributed);
    let after = after.value.permit().unwrap();
    assert_eq!(
        direct.inspect("k").await.unwrap().value.key_leases,
        1,
        "the lease is in Redis"
    );
    assert_eq!(
        local_view.inspect("k").await.unwrap().value.key_leases,
        0,
        "and not in the fallback"
    );
    assert!(after.release().await.unwrap().is_some());
    assert_eq!(direct.inspect("k").await.unwrap().value.key_leases, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restarted_empty_grants_no_lease_until_every_old_one_could_have_ended() {
    let Some(mut server) = env::private_server("throttle_restart_hold") else {
        return;
    };
    let namespace = fault_ns("restart-hold", "mx");
    let lease = Duration::from_secs(3);
    let p = Policy::builder()
        .global_cap(5)
        .key_cap(1)
        .min_interval(Duration::ZERO)
        .lease_ttl(lease)
        .build()
        .unwrap();
    // Process A took the key's only slot before the restart.
    let a = Throttle::new(
        RedisThrottle::new(RedisConnection::connect(&fault_config(&server)).await.unwrap())
            .await
            .unwrap()
            .with_restart_hold(false),
        namespace.clone(),
    );
    let held = a.acquire("mx", &p).await.unwrap().value.permit().expect("the slot");
    // Redis restarts without persistence: the lease is forgotten, A still holds.
    server.restart().unwrap();
    // Process B, connecting afterwards, asks for the same slot: refused until the
    // longest lease that could still be live has run out, then granted.
    let b = Throttle::new(
        RedisThrottle::new(RedisConnection::connect(&fault_config(&server)).await.unwrap())
            .await
            .unwrap(),
        namespace,
    );
    let first = b.acquire("mx", &p).await.unwrap().value;
    let Decision::Denied { reason, retry_after } = first else {
        panic!("a slot granted on a server that restarted empty: {first:?}")
    };
    assert_eq!(reason, DenyReason::RestartHold);
    assert!(retry_after <= lease + Duration::from_secs(1), "{retry_after:?}");
    // Granted once the hint has passed: the hint is honest (it does not move).
    tokio::time::sleep(retry_after + Duration::from_millis(50)).await;
    let granted = match b.acquire("mx", &p).await.unwrap().value {
        Decision::Acquired(permit) => permit,
        other => panic!("not granted after the hint: {other:?}"),
    };
    assert!(
        granted.acquired_at() >= held.expires_at(),
        "B's lease began before A's could have ended: {:?} < {:?}",
        granted.acquired_at(),
        held.expires_at()
    );
    assert!(b.stats().denials_of(DenyReason::RestartHold) >= 1);
    // A namespace in use is never held: the next acquisitions are judged by the caps.
    let again = b.acquire("mx", &p).await.unwrap().value;
    assert!(
        matches!(
            again,
            Decision::Denied {
                reason: DenyReason::KeyCap,
                ..
            }
        ),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permits_granted_while_degraded_are_capped_and_end_after_recovery() {
    let Some(mut server) = env::private_server("throttle_degraded_cap") else {
        return;
    };
    let events = Events::new(64);
    let mut rx = events.subscribe();
    let cap = Duration::from_secs(2);
    let failover = degraded_with_lease_cap(&server, &events, cap).await;
    let t = Throttle::new(failover, fault_ns("degraded-cap", "mx"));
    let p = Policy::builder()
        .global_cap(4)
        .key_cap(4)
        .min_interval(Duration::ZERO)
        .lease_ttl(Duration::from_secs(3600))
        .build()
        .unwrap();
    server.kill();
    let first = t.acquire("k", &p).await.unwrap();
    assert_eq!(first.provenance, Provenance::LocalDegraded);
    let permit = first.value.permit().unwrap();
    let life = permit.expires_at().duration_since(permit.acquired_at()).unwrap();
    assert_eq!(
        life, cap,
        "a degraded lease lives at most the cap, not the policy's hour"
    );
    capped_then_ended_by_recovery(&mut server, &mut rx, permit, cap).await;
}

/// How many callers wait at once in the waiting fault tests.
const WAITERS: u32 = 100;

/// `WAITERS` callers of `acquire_wait` on one key whose only slot is held, each in its
/// own task, queued (checked through `direct`) before this returns; each answers its
/// provenance and whether it was served.
async fn queue_waiters<B: palisade_throttle::ThrottleBackend>(
    t: &Throttle<B>,
    direct: &Throttle<RedisThrottle>,
    p: &Policy,
) -> Vec<tokio::task::JoinHandle<(Result<(Provenance, bool), palisade_cache_core::Error>, Instant)>> {
    let tasks: Vec<_> = (0..WAITERS)
        .map(|_| {
            let (t, p) = (t.clone(), *p);
            tokio::spawn(async move {
                // A waiter served releases at once: the next one's turn.
                let r = match t.acquire_wait("k", &p, Duration::from_secs(60)).await {
                    Ok(d) => match d.value {
                        Decision::Acquired(permit) => {
                            permit.release().await.unwrap();
                            Ok((d.provenance, true))
                        }
                        Decision::Denied { .. } => Ok((d.provenance, false)),
                    },
                    Err(e) => Err(e),
                };
                (r, Instant::now())
            })
        })
        .collect();
    let give_up = Instant::now() + Duration::from_secs(30);
    while direct.inspect("k").await.unwrap().value.waiting < WAITERS {
        assert!(Instant::now() < give_up, "the waiters never all queued");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tasks
}

fn waiting_config(server: &palisade_redis_server::server::RedisServer) -> palisade_cache_redis::RedisConfig {
    fault_config(server).with_dedicated_pool_size(WAITERS + 10)
}

fn one_slot() -> Policy {
    Policy::builder()
        .global_cap(10)
        .key_cap(1)
        .min_interval(Duration::ZERO)
        .lease_ttl(Duration::from_secs(60))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_a_hundred_waiters_fail_within_their_deadline_when_redis_is_killed_or_paused() {
    let Some(mut server) = env::private_server("strict_waiters") else {
        return;
    };
    let p = one_slot();
    for fault in Fault::BOTH {
        let events = Events::new(16);
        let conn = RedisConnection::connect(&waiting_config(&server)).await.unwrap();
        let backend = palisade_cache_core::Strict::new(
            RedisThrottle::new(conn).await.unwrap().with_restart_hold(false),
            fault_ctx(Component::Throttle, Mode::StrictDistributed, &events),
        )
        .unwrap();
        let ns = fault_ns(&format!("strict-waiters-{fault:?}"), "mx");
        // Only wake-ups and outages move these waiters (no re-check within the test).
        let t = Throttle::new(backend, ns.clone()).with_recheck(Duration::from_secs(3600));
        let direct = Throttle::new(
            RedisThrottle::new(RedisConnection::connect(&fault_config(&server)).await.unwrap())
                .await
                .unwrap(),
            ns,
        );
        let _held = t.acquire("k", &p).await.unwrap().value.permit().unwrap();
        let waiters = queue_waiters(&t, &direct, &p).await;
        let dedicated = t.backend().primary().connection().clone();
        let give_up = Instant::now() + Duration::from_secs(30);
        while dedicated.dedicated_stats().open < WAITERS {
            assert!(Instant::now() < give_up, "{:?}", dedicated.dedicated_stats());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let at = Instant::now();
        let bound = fault.apply(&mut server);
        all_fail_within(waiters, fault, at, bound).await;
        let s = t.stats();
        assert_eq!((s.acquired, s.denied, s.waited), (1, 0, u64::from(WAITERS)), "{s:?}");
        fault.undo(&mut server);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degraded_a_hundred_waiters_go_on_waiting_locally_when_redis_is_killed() {
    let Some(mut server) = env::private_server("degraded_waiters") else {
        return;
    };
    let events = Events::new(256);
    let mut rx = events.subscribe();
    let conn = RedisConnection::connect(&waiting_config(&server)).await.unwrap();
    let failover = palisade_cache_core::Failover::new(
        RedisThrottle::new(conn).await.unwrap().with_restart_hold(false),
        LocalThrottle::default(),
        fault_ctx(Component::Throttle, Mode::ExplicitDegraded, &events),
        palisade_cache_core::FailoverOptions::default().with_degraded_share(1.0),
        None,
    )
    .unwrap();
    let ns = fault_ns("degraded-waiters", "mx");
    // A short re-check: a waiter queued on Redis finds its place on the local backend
    // within one period after the swap.
    let t = Throttle::new(failover, ns.clone()).with_recheck(Duration::from_millis(200));
    let direct = Throttle::new(
        RedisThrottle::new(RedisConnection::connect(&fault_config(&server)).await.unwrap())
            .await
            .unwrap(),
        ns,
    );
    let p = one_slot();
    let _held = t.acquire("k", &p).await.unwrap().value.permit().unwrap();
    let waiters = queue_waiters(&t, &direct, &p).await;
    server.kill();
    // Every waiter is served by the local backend, one slot at a time (each releases).
    let mut served = 0;
    for w in waiters {
        let (r, _) = tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("a waiter hung")
            .unwrap();
        let (provenance, acquired) = r.expect("degraded mode answers");
        assert_eq!(provenance, Provenance::LocalDegraded);
        assert!(acquired, "served locally before its wait ran out");
        served += 1;
    }
    assert_eq!(served, WAITERS);
    let mut degraded = 0;
    while let Ok(e) = rx.try_recv() {
        if matches!(e.kind, EventKind::Degraded) {
            degraded += 1;
        }
    }
    assert_eq!(degraded, 1, "the outage was announced once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_of_dedicated_connections_is_a_typed_error_within_the_deadline() {
    let Some(server) = env::private_server("exhausted_pool") else {
        return;
    };
    let conn = RedisConnection::connect(&fault_config(&server).with_dedicated_pool_size(2))
        .await
        .unwrap();
    let t = Throttle::new(
        RedisThrottle::new(conn.clone()).await.unwrap().with_restart_hold(false),
        fault_ns("exhausted", "mx"),
    )
    .with_recheck(Duration::from_secs(3600));
    let p = one_slot();
    let _held = t.acquire("k", &p).await.unwrap().value.permit().unwrap();
    let blocked: Vec<_> = (0..2)
        .map(|_| {
            let (t, p) = (t.clone(), p);
            tokio::spawn(async move { t.acquire_wait("k", &p, Duration::from_secs(60)).await })
        })
        .collect();
    let give_up = Instant::now() + Duration::from_secs(30);
    while conn.dedicated_stats().idle > 0 || conn.dedicated_stats().open < 2 {
        assert!(Instant::now() < give_up, "{:?}", conn.dedicated_stats());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let start = Instant::now();
    let e = t.acquire_wait("k", &p, Duration::from_secs(60)).await.unwrap_err();
    assert_eq!(e.kind(), palisade_cache_core::ErrorKind::Exhausted, "{e:?}");
    assert!(!e.is_unavailable() && e.is_retryable());
    assert!(start.elapsed() <= DEADLINE + SLACK, "{:?}", start.elapsed());
    assert!(!format!("{e}").is_empty());
    let stats = conn.dedicated_stats();
    assert_eq!((stats.max, stats.open, stats.exhausted), (2, 2, 1), "{stats:?}");
    for b in blocked {
        b.abort();
    }
    // The exhausted caller left no entry behind; the two aborted ones are dequeued.
    let give_up = Instant::now() + Duration::from_secs(30);
    while t.inspect("k").await.unwrap().value.waiting > 0 {
        assert!(Instant::now() < give_up, "entries left behind");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_handed_off_while_degraded_is_capped_and_ends_after_recovery() {
    let Some(mut server) = env::private_server("throttle_degraded_handoff") else {
        return;
    };
    let events = Events::new(64);
    let mut rx = events.subscribe();
    let cap = Duration::from_secs(2);
    let failover = degraded_with_lease_cap(&server, &events, cap).await;
    // No re-check within the test: only the release's handoff can serve the waiter.
    let t = Throttle::new(failover, fault_ns("degraded-handoff", "mx")).with_recheck(Duration::from_secs(3600));
    let p = Policy::builder()
        .global_cap(4)
        .key_cap(1)
        .min_interval(Duration::ZERO)
        .lease_ttl(Duration::from_secs(3600))
        .build()
        .unwrap();
    server.kill();
    let held = t.acquire("k", &p).await.unwrap().value.permit().unwrap();
    let waiter = {
        let (t, p) = (t.clone(), p);
        tokio::spawn(async move { t.acquire_wait("k", &p, Duration::from_secs(60)).await })
    };
    let give_up = Instant::now() + Duration::from_secs(10);
    while t.inspect("k").await.unwrap().value.waiting < 1 {
        assert!(Instant::now() < give_up, "the waiter never queued locally");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    held.release().await.unwrap();
    let handed = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the handoff woke the waiter")
        .unwrap()
        .unwrap();
    assert_eq!(handed.provenance, Provenance::LocalDegraded);
    assert_eq!(t.stats().handoffs, 1, "{:?}", t.stats());
    let permit = handed.value.permit().unwrap();
    let life = permit.expires_at().duration_since(permit.acquired_at()).unwrap();
    assert!(
        life <= cap,
        "a handed-off degraded lease lives at most the cap: {life:?}"
    );
    capped_then_ended_by_recovery(&mut server, &mut rx, permit, cap).await;
}

/// A degraded throttle over a private server, every slot shared with the fallback and
/// its leases capped at `cap`.
async fn degraded_with_lease_cap(
    server: &RedisServer,
    events: &Events,
    cap: Duration,
) -> palisade_cache_core::Failover<RedisThrottle, LocalThrottle> {
    let conn = RedisConnection::connect(&fault_config(server)).await.unwrap();
    palisade_cache_core::Failover::new(
        RedisThrottle::new(conn).await.unwrap().with_restart_hold(false),
        LocalThrottle::default(),
        fault_ctx(Component::Throttle, Mode::ExplicitDegraded, events),
        palisade_cache_core::FailoverOptions::default()
            .with_degraded_share(1.0)
            .with_degraded_lease_cap(cap),
        None,
    )
    .unwrap()
}

/// `permit`, issued while degraded (the server is down), is extended at most to
/// `cap`; once the server is back and recovery announced, it is not extended any more
/// and ends within the cap.
async fn capped_then_ended_by_recovery(
    server: &mut RedisServer,
    rx: &mut broadcast::Receiver<Event>,
    mut permit: Permit,
    cap: Duration,
) {
    let extended = permit.extend(Duration::from_secs(3600)).await.unwrap().unwrap();
    assert!(
        extended
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
            <= cap,
        "an extension while degraded is capped too"
    );
    assert!(matches!(rx.recv().await.unwrap().kind, EventKind::Degraded));
    server.start_again().unwrap();
    let give_up = Instant::now() + RECOVERY;
    loop {
        let e = tokio::time::timeout(give_up - Instant::now(), rx.recv())
            .await
            .unwrap()
            .unwrap();
        if matches!(e.kind, EventKind::Recovered { .. }) {
            break;
        }
    }
    assert_eq!(permit.extend(Duration::from_secs(1)).await.unwrap(), None);
    permit.release().await.unwrap();
}
