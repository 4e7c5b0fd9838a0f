//! The `ConcurrencyLayer`'s `# Behavior` as a tower service (no HTTP), on every
//! topology the umbrella builds: local, strict on standalone Redis and on Redis
//! Cluster, degraded on standalone Redis.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::{Request, Response, StatusCode};
use palisade::{Mode, Palisade};
use palisade_redis_server::env;
use palisade_tower::{ConcurrencyLayer, Global};
use tower::{Layer, ServiceExt};

/// Every topology this run can reach, each with a tenant of its own.
async fn topologies(test: &str) -> Vec<(&'static str, Palisade)> {
    let builder = |mode: Mode| {
        Palisade::builder()
            .mode(mode)
            .tenant(&env::unique_prefix(test))
            .command_timeout(Duration::from_millis(300))
            .throttle_restart_hold(false)
    };
    let mut out = vec![("local", builder(Mode::LocalOnly).build().await.unwrap())];
    if let Some(url) = env::redis_url(test) {
        out.push((
            "strict",
            builder(Mode::StrictDistributed).redis_url(&url).build().await.unwrap(),
        ));
        out.push((
            "degraded",
            builder(Mode::ExplicitDegraded).redis_url(&url).build().await.unwrap(),
        ));
    }
    if let Some(nodes) = env::cluster_nodes(test) {
        let url = format!("redis-cluster://{}", nodes.join(","));
        out.push((
            "cluster",
            builder(Mode::StrictDistributed).redis_url(&url).build().await.unwrap(),
        ));
    }
    out
}

/// Waits (bounded) until the throttle holds `n` leases on `key`.
async fn leases_become(p: &Palisade, key: &str, n: u32, on: &str) {
    let give_up = Instant::now() + Duration::from_secs(5);
    loop {
        let held = p.throttle().inspect(key).await.unwrap().value.key_leases;
        if held == n {
            return;
        }
        assert!(Instant::now() < give_up, "{on}: {held} leases on {key}, never {n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A response whose body is held, unread, outlives its lease TTL and keeps its slot;
/// dropping it releases the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_outlives_its_lease_ttl_keeps_its_slot_on_every_topology() {
    for (on, p) in topologies("layer_renewal").await {
        let ttl = Duration::from_millis(600);
        let policy = palisade::Policy::builder()
            .global_cap(1)
            .key_cap(1)
            .min_interval(Duration::ZERO)
            .lease_ttl(ttl)
            .build()
            .unwrap();
        let inner =
            tower::service_fn(|_req: Request<Body>| async { Ok::<_, Infallible>(Response::new(Body::empty())) });
        let svc = ConcurrencyLayer::new(p.throttle(), policy, Global).layer(inner);

        let held = svc.clone().oneshot(Request::new(Body::empty())).await.unwrap();
        assert_eq!(held.status(), StatusCode::OK, "{on}");
        // Four lease TTLs: without the renewal the lease would have expired three times
        // over (a bounded look at the passing time, not a sleep standing for an event).
        let started = Instant::now();
        while started.elapsed() < 4 * ttl {
            let leases = p.throttle().inspect("global").await.unwrap().value.key_leases;
            assert_eq!(leases, 1, "{on}: the held lease, {:?} into it", started.elapsed());
            tokio::time::sleep(ttl / 6).await;
        }
        let refused = svc.clone().oneshot(Request::new(Body::empty())).await.unwrap();
        assert_eq!(
            refused.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "{on}: the slot is still held"
        );
        drop(held);
        leases_become(&p, "global", 0, on).await;
        let next = svc.clone().oneshot(Request::new(Body::empty())).await.unwrap();
        assert_eq!(next.status(), StatusCode::OK, "{on}: the slot is free again");
    }
}
