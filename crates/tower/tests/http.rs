//! End to end: an axum server on loopback with the layer, an HTTP/1.1 client over TCP,
//! a real `redis-server` — killed mid-test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use http::HeaderName;
use palisade::{Mode, Palisade, Rate};
use palisade_redis_server::env;
use palisade_tower::{Header, RateLimitLayer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::get_as;
#[cfg(feature = "axum")]
use common::get_path_as;

async fn serve(p: &Palisade, rate: Rate) -> std::net::SocketAddr {
    let layer =
        RateLimitLayer::new(p.rate_limiter(), rate, Header(HeaderName::from_static("x-client"))).legacy_headers(true);
    listen(Router::new().route("/", get(|| async { "served" })).layer(layer)).await
}

/// Serves `app` on a loopback port of its own.
async fn listen(app: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A strict palisade for the throttle tests on a fresh server: without
/// `throttle_restart_hold(false)` the restart hold refuses every lease for one lease TTL
/// (a restarted Redis may have lost leases still held).
async fn throttling(url: &str) -> Palisade {
    Palisade::builder()
        .mode(Mode::StrictDistributed)
        .redis_url(url)
        .tenant(&env::unique_prefix("http"))
        .command_timeout(Duration::from_millis(300))
        .throttle_restart_hold(false)
        .build()
        .await
        .unwrap()
}

/// One request in flight across the fleet, leases of `ttl`.
fn one_at_a_time(ttl: Duration) -> palisade::Policy {
    palisade::Policy::builder()
        .global_cap(1)
        .key_cap(1)
        .min_interval(Duration::ZERO)
        .lease_ttl(ttl)
        .build()
        .unwrap()
}

/// `GET` of a body that sends `first-chunk `, then `last-chunk` once `gate` has a
/// permit (handlers wait on a gate the test opens, never on a timer).
fn streamed(gate: std::sync::Arc<tokio::sync::Semaphore>) -> axum::routing::MethodRouter {
    get(move || {
        let gate = std::sync::Arc::clone(&gate);
        async move {
            let chunks = futures_util::stream::unfold(0, move |i| {
                let gate = std::sync::Arc::clone(&gate);
                async move {
                    match i {
                        0 => Some((Ok::<_, std::io::Error>("first-chunk "), 1)),
                        1 => {
                            gate.acquire().await.unwrap().forget();
                            Some((Ok("last-chunk"), 2))
                        }
                        _ => None,
                    }
                }
            });
            axum::body::Body::from_stream(chunks)
        }
    })
}

async fn palisade(url: &str, mode: Mode) -> Palisade {
    Palisade::builder()
        .mode(mode)
        .redis_url(url)
        .tenant(&env::unique_prefix("http"))
        .command_timeout(Duration::from_millis(300))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_limits_with_429_and_headers_then_answers_503_when_redis_dies() {
    let Some(mut server) = env::private_server("http_strict") else {
        return;
    };
    let p = palisade(&server.url(), Mode::StrictDistributed).await;
    let rate = Rate::per(1, Duration::from_secs(3600)).burst(3).build().unwrap();
    let addr = serve(&p, rate).await;
    for remaining in [2, 1, 0] {
        let (status, h, body) = get_as(addr, "alice").await;
        assert_eq!((status, body.as_str()), (200, "served"), "{h:?}");
        assert_eq!(h["ratelimit-policy"], "\"palisade\";q=3;w=10800");
        assert!(
            h["ratelimit"].starts_with(&format!("\"palisade\";r={remaining};t=")),
            "{h:?}"
        );
        assert_eq!(h["x-ratelimit-remaining"], remaining.to_string());
        assert!(!h.contains_key("palisade-provenance"), "Redis decided: {h:?}");
    }
    let (status, h, body) = get_as(addr, "alice").await;
    assert_eq!(status, 429, "{h:?}");
    assert_ne!(body, "served", "a limited request never reaches the handler");
    let retry: u64 = h["retry-after"].parse().unwrap();
    assert!(
        (3000..=3600).contains(&retry),
        "retry-after in whole seconds, rounded up: {retry}"
    );
    assert!(h["ratelimit"].starts_with("\"palisade\";r=0;"), "{h:?}");
    assert_eq!(get_as(addr, "bob").await.0, 200, "another key has its own allowance");

    server.kill();
    let started = Instant::now();
    let (status, h, body) = get_as(addr, "carol").await;
    assert_eq!(
        status, 503,
        "strict mode never lets a request through without Redis: {h:?}"
    );
    assert_eq!(h["retry-after"], "1");
    assert_ne!(body, "served");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "within the deadline: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degraded_answers_carry_their_provenance() {
    let Some(mut server) = env::private_server("http_degraded") else {
        return;
    };
    let p = palisade(&server.url(), Mode::ExplicitDegraded).await;
    let rate = Rate::per(1, Duration::from_secs(3600)).burst(100).build().unwrap();
    let addr = serve(&p, rate).await;
    assert_eq!(get_as(addr, "alice").await.0, 200);
    server.kill();
    // The first call after the kill detects the outage; every answer is then local.
    let (status, h, body) = get_as(addr, "alice").await;
    assert_eq!((status, body.as_str()), (200, "served"), "{h:?}");
    assert_eq!(h["palisade-provenance"], "local_degraded", "{h:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_key_is_refused_not_let_through() {
    let p = Palisade::builder().mode(Mode::LocalOnly).build().await.unwrap();
    let rate = Rate::per_second(10).build().unwrap();
    let layer = RateLimitLayer::new(p.rate_limiter(), rate, Header(HeaderName::from_static("x-missing")));
    let app = Router::new().route("/", get(|| async { "served" })).layer(layer);
    let addr = listen(app).await;
    let (status, _, body) = get_as(addr, "alice").await;
    assert_eq!(status, 400);
    assert_ne!(body, "served");
}

/// `RouteAnd` limits an endpoint, not each path a client can make up: behind axum's
/// router the key holds the matched route (`/users/{id}`), so enumerating ids does not
/// give a client a fresh allowance per id (the `axum` feature reads the matched route).
#[cfg(feature = "axum")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_per_route_is_one_limit_whatever_the_path_parameters() {
    use palisade_tower::RouteAnd;
    let p = Palisade::builder().mode(Mode::LocalOnly).build().await.unwrap();
    let rate = Rate::per(1, Duration::from_secs(3600)).burst(1).build().unwrap();
    let layer = RateLimitLayer::new(
        p.rate_limiter(),
        rate,
        RouteAnd(Header(HeaderName::from_static("x-client"))),
    );
    let app = Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .route("/other", get(|| async { "other" }))
        .layer(layer);
    let addr = listen(app).await;
    assert_eq!(get_path_as(addr, "/users/1", "alice").await.0, 200);
    for path in ["/users/1", "/users/2", "/users/999"] {
        assert_eq!(
            get_path_as(addr, path, "alice").await.0,
            429,
            "{path}: the same endpoint"
        );
    }
    assert_eq!(get_path_as(addr, "/other", "alice").await.0, 200, "another endpoint");
    assert_eq!(get_path_as(addr, "/users/2", "bob").await.0, 200, "another client");
}

/// A streamed response that outlives its lease TTL keeps its slot: the layer extends
/// the lease while the request is in flight, and releases it when the body ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_outlives_its_lease_ttl_keeps_its_slot() {
    use palisade_tower::{ConcurrencyLayer, Global};
    use std::sync::Arc;
    use tokio::sync::Semaphore;

    let Some(server) = env::private_server("http_renewal") else {
        return;
    };
    let p = throttling(&server.url()).await;
    let ttl = Duration::from_millis(1500);
    let policy = one_at_a_time(ttl);
    let gate = Arc::new(Semaphore::new(0));
    let app = Router::new()
        .route("/stream", streamed(Arc::clone(&gate)))
        .route("/", get(|| async { "served" }))
        .layer(ConcurrencyLayer::new(p.throttle(), policy, Global));
    let addr = listen(app).await;

    let (mut stream, head) = open(addr, "/stream", "first-chunk").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Four lease TTLs: without the renewal the lease would have expired three times
    // over. The lease is looked at all along (a bounded poll of the passing time).
    let started = Instant::now();
    while started.elapsed() < 4 * ttl {
        let held = p.throttle().inspect("global").await.unwrap().value.key_leases;
        assert_eq!(held, 1, "the stream's lease, {:?} into it", started.elapsed());
        tokio::time::sleep(ttl / 6).await;
    }
    assert_eq!(get_as(addr, "x").await.0, 429, "the stream still holds the slot");
    gate.add_permits(1);
    let mut rest = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.contains("last-chunk"), "{rest}");
    leases_become(&p, "global", 0).await;
    assert_eq!(get_as(addr, "x").await.0, 200, "the slot is free again");
}

/// Waits (bounded) until the throttle holds `n` leases on `key`.
async fn leases_become(p: &Palisade, key: &str, n: u32) {
    let give_up = Instant::now() + Duration::from_secs(5);
    loop {
        let held = p.throttle().inspect(key).await.unwrap().value.key_leases;
        if held == n {
            return;
        }
        assert!(Instant::now() < give_up, "{held} leases on {key}, never {n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends `GET path` and returns the stream once the head and `until` have arrived.
async fn open(addr: std::net::SocketAddr, path: &str, until: &str) -> (tokio::net::TcpStream, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let give_up = Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&seen).contains(until) {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(give_up.saturating_duration_since(Instant::now()), s.read(&mut buf))
            .await
            .expect("the bytes in time")
            .unwrap();
        assert!(n > 0, "closed before {until:?}: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    (s, String::from_utf8_lossy(&seen).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_holds_each_permit_until_the_body_ends_or_the_request_is_dropped() {
    use palisade_tower::{ConcurrencyLayer, Global};
    use std::sync::Arc;
    use tokio::sync::Semaphore;

    let Some(mut server) = env::private_server("http_concurrency") else {
        return;
    };
    let p = throttling(&server.url()).await;
    let policy = one_at_a_time(Duration::from_secs(30));
    // Handlers wait on a gate the test opens, never on a timer.
    let gate = Arc::new(Semaphore::new(0));
    let slow_gate = Arc::clone(&gate);
    let app = Router::new()
        .route(
            "/",
            get(move || {
                let gate = Arc::clone(&slow_gate);
                async move {
                    gate.acquire().await.unwrap().forget();
                    "slow done"
                }
            }),
        )
        .route("/stream", streamed(Arc::clone(&gate)))
        .layer(ConcurrencyLayer::new(p.throttle(), policy, Global));
    let addr = listen(app).await;

    // 1. A request in its handler (`/`) holds the one slot; a second is refused.
    let a = tokio::spawn(async move { get_as(addr, "a").await });
    leases_become(&p, "global", 1).await;
    let (status, h, body) = get_as(addr, "b").await;
    assert_eq!(status, 429, "{h:?}");
    assert_ne!(body, "slow done");
    assert!(h["retry-after"].parse::<u64>().unwrap() >= 1, "{h:?}");
    assert!(
        ["global_cap", "key_cap"].contains(&h["palisade-deny-reason"].as_str()),
        "{h:?}"
    );
    gate.add_permits(1);
    assert_eq!(a.await.unwrap().0, 200);
    leases_become(&p, "global", 0).await;

    // 2. A streamed response is in flight until its body ends.
    let (mut c, head) = open(addr, "/stream", "first-chunk").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(p.throttle().inspect("global").await.unwrap().value.key_leases, 1);
    assert_eq!(get_as(addr, "d").await.0, 429, "the stream still holds the slot");
    gate.add_permits(1);
    let mut rest = String::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_string(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.contains("last-chunk"), "{rest}");
    leases_become(&p, "global", 0).await;

    // 3. A request whose future is dropped mid-handler gives its slot back.
    let held_gate = Arc::clone(&gate);
    let svc = tower::ServiceBuilder::new()
        .layer(ConcurrencyLayer::new(p.throttle(), policy, Global))
        .service_fn(move |_req: http::Request<()>| {
            let gate = Arc::clone(&held_gate);
            async move {
                gate.acquire().await.unwrap().forget();
                Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
            }
        });
    let pending = tokio::spawn(tower::ServiceExt::oneshot(svc, http::Request::new(())));
    leases_become(&p, "global", 1).await;
    pending.abort();
    assert!(pending.await.unwrap_err().is_cancelled());
    leases_become(&p, "global", 0).await;

    // 4. Strict mode without Redis: 503, never a pass-through.
    server.kill();
    let (status, h, body) = get_as(addr, "e").await;
    assert_eq!(status, 503, "{h:?}");
    assert_eq!(h["retry-after"], "1");
    assert_ne!(body, "slow done");
}
