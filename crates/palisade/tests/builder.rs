//! The umbrella builder: mode choice, fail-fast startup, degraded startup, redaction.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;
#[cfg(feature = "redis")]
use std::time::Instant;

#[cfg(feature = "redis")]
use palisade::EventKind;
use palisade::{Decision, ErrorKind, JobRecord, JobStatus, Mode, Palisade, Policy, Provenance};
#[cfg(feature = "redis")]
use palisade_redis_server::env;

#[tokio::test]
async fn no_url_and_no_mode_runs_local_only() {
    let p = Palisade::builder().tenant("t").build().await.unwrap();
    assert_eq!(p.mode(), Mode::LocalOnly);
    let cache = p.cache();
    cache.set("k", b"v", Duration::from_secs(60)).await.unwrap();
    let got = cache.get("k").await.unwrap();
    assert_eq!(
        (got.value.as_deref(), got.provenance),
        (Some(&b"v"[..]), Provenance::Local)
    );
    p.jobs()
        .create("j", &JobRecord::queued(), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        p.jobs().get("j").await.unwrap().value.unwrap().status,
        JobStatus::Queued
    );
    let policy = Policy::builder()
        .global_cap(1)
        .key_cap(1)
        .min_interval(Duration::ZERO)
        .lease_ttl(Duration::from_secs(5))
        .build()
        .unwrap();
    assert!(matches!(
        p.throttle().acquire("h", &policy).await.unwrap().value,
        Decision::Acquired(_)
    ));
    let doctor = p.doctor().await;
    assert!(doctor.can_serve && doctor.endpoint.is_none());
}

#[tokio::test]
async fn strict_or_degraded_without_a_url_is_a_config_error() {
    for mode in [Mode::StrictDistributed, Mode::ExplicitDegraded] {
        let e = Palisade::builder().mode(mode).build().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "{mode}");
        assert!(e.to_string().contains("PALISADE_REDIS_URL"), "{e}");
    }
    let e = Palisade::builder().degraded_share(2.0).build().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn strict_with_redis_down_fails_within_the_connect_deadline_naming_the_redacted_url() {
    let Some(mut server) = env::private_server("umbrella_strict_down") else {
        return;
    };
    let port = server.port();
    server.kill();
    let deadline = Duration::from_millis(700);
    let builder = Palisade::builder()
        .redis_url(&format!("redis://admin:Hunter2-S3cret@127.0.0.1:{port}"))
        .connect_timeout(deadline);
    assert_eq!(
        builder.effective_mode(),
        Mode::StrictDistributed,
        "a URL and no mode means strict"
    );
    assert!(!format!("{builder:?}").contains("Hunter2"));
    let start = Instant::now();
    let e = builder.build().await.unwrap_err();
    assert!(
        start.elapsed() <= deadline + Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e:?}");
    let printed = format!("{e} {e:?} {}", e.chain());
    assert!(printed.contains(&format!("127.0.0.1:{port}")), "{printed}");
    assert!(!printed.contains("Hunter2"), "{printed}");
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_on_a_live_redis_serves_distributed_answers() {
    let Some(url) = env::redis_url("umbrella_strict_live") else {
        return;
    };
    let p = Palisade::builder()
        .redis_url(&url)
        .tenant(&env::unique_prefix("umbrella"))
        .build()
        .await
        .unwrap();
    assert_eq!(p.mode(), Mode::StrictDistributed);
    let cache = p.cache();
    cache.set("k", b"v", Duration::from_secs(60)).await.unwrap();
    assert_eq!(cache.get("k").await.unwrap().provenance, Provenance::Distributed);
    let doctor = p.doctor().await;
    assert!(doctor.can_serve, "{doctor:?}");
    assert!(
        doctor.server_version.as_deref().is_some_and(|v| v.starts_with('7')),
        "{doctor:?}"
    );
    assert_eq!(doctor.cluster, Some(false));
    assert!(doctor.round_trip.is_some());
    let j = p.jobs();
    j.create("j", &JobRecord::queued(), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(j.get("j").await.unwrap().provenance, Provenance::Distributed);
    let r = p
        .rate_limiter()
        .limit("ip", &palisade::Rate::per_second(10).burst(2).build().unwrap())
        .await
        .unwrap();
    assert_eq!(r.provenance, Provenance::Distributed);
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_on_a_live_cluster_serves_distributed_answers() {
    let Some(nodes) = env::cluster_nodes("umbrella_strict_cluster") else {
        return;
    };
    let p = Palisade::builder()
        .redis_url(&format!("redis-cluster://{}", nodes.join(",")))
        .tenant(&env::unique_prefix("umbrella"))
        .build()
        .await
        .unwrap();
    let doctor = p.doctor().await;
    assert_eq!(doctor.cluster, Some(true), "{doctor:?}");
    // The shared cluster is set up as the docs require: nothing to warn about.
    assert!(doctor.warnings.is_empty(), "{:?}", doctor.warnings);
    assert!(doctor.can_serve, "{doctor:?}");
    let policy = Policy::builder()
        .global_cap(2)
        .key_cap(1)
        .min_interval(Duration::ZERO)
        .lease_ttl(Duration::from_secs(5))
        .build()
        .unwrap();
    let t = p.throttle().acquire("mx", &policy).await.unwrap();
    assert_eq!(t.provenance, Provenance::Distributed);
}

#[cfg(all(feature = "redis", feature = "local"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degraded_with_redis_down_starts_locally_and_moves_to_redis_when_it_answers() {
    let Some(mut server) = env::private_server("umbrella_degraded_down") else {
        return;
    };
    let url = server.url();
    server.kill();
    // Subscribed before build: the startup events are seen too.
    let events = palisade::Events::default();
    let mut rx = events.subscribe();
    let p = Palisade::builder()
        .events(events)
        .mode(Mode::ExplicitDegraded)
        .redis_url(&url)
        .connect_timeout(Duration::from_millis(500))
        .command_timeout(Duration::from_millis(300))
        .probe_period(Duration::from_millis(250))
        .build()
        .await
        .unwrap();
    let mut started_down = Vec::new();
    for _ in 0..3 {
        let e = rx.try_recv().expect("an UnavailableAtStartup per contract");
        assert_eq!(e.kind, EventKind::UnavailableAtStartup);
        started_down.push(e.component);
    }
    assert_eq!(
        started_down,
        [
            palisade::Component::Cache,
            palisade::Component::JobStore,
            palisade::Component::Throttle
        ]
    );
    assert!(matches!(p.cache().stats().status.health, palisade::Health::Down { .. }));
    let t = p.cache().set("k", b"local", Duration::from_secs(60)).await.unwrap();
    assert_eq!(t.provenance, Provenance::LocalDegraded);
    let doctor = p.doctor().await;
    assert!(doctor.error.is_some(), "Redis is down: {doctor:?}");
    assert!(doctor.can_serve, "degraded mode serves from its fallback");
    server.start_again().unwrap();
    let mut recovered = 0;
    let give_up = Instant::now() + Duration::from_secs(15);
    while recovered < 3 {
        let e = tokio::time::timeout(give_up - Instant::now(), rx.recv())
            .await
            .expect("Recovered in time")
            .unwrap();
        if let EventKind::Recovered { .. } = e.kind {
            recovered += 1;
        }
    }
    assert_eq!(p.cache().get("k").await.unwrap().provenance, Provenance::Distributed);
}

#[cfg(not(feature = "redis"))]
#[tokio::test]
async fn a_mode_whose_backend_is_not_compiled_in_is_a_config_error_naming_the_feature() {
    for mode in [Mode::StrictDistributed, Mode::ExplicitDegraded] {
        let e = Palisade::builder()
            .mode(mode)
            .redis_url("redis://127.0.0.1:1")
            .build()
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(
            e.to_string().contains("`redis` feature") || e.to_string().contains("`redis` and `local` features"),
            "{e}"
        );
    }
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_that_reaches_something_else_than_redis_fails_strict_and_degrades_degraded() {
    let peer = palisade_redis_server::not_redis::NotRedis::start().unwrap();
    let builder = || {
        Palisade::builder()
            .redis_url(&peer.url())
            .connect_timeout(Duration::from_millis(500))
            .command_timeout(Duration::from_millis(300))
            .probe_period(Duration::from_millis(250))
    };
    let start = Instant::now();
    let e = builder().build().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e:?}");
    assert!(start.elapsed() <= Duration::from_millis(800), "{:?}", start.elapsed());

    let events = palisade::Events::default();
    let mut rx = events.subscribe();
    let p = builder()
        .events(events)
        .mode(Mode::ExplicitDegraded)
        .build()
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(rx.try_recv().unwrap().kind, EventKind::UnavailableAtStartup);
    }
    let t = p.cache().set("k", b"v", Duration::from_secs(60)).await.unwrap();
    assert_eq!(t.provenance, Provenance::LocalDegraded, "announced, tagged fallback");
    assert_eq!(p.cache().get("k").await.unwrap().provenance, Provenance::LocalDegraded);
}

/// Every mode, with a TLS URL pointing at a listener that records and answers nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_url_never_becomes_a_plain_connection_in_any_mode() {
    let listener = palisade_redis_server::not_redis::Recorder::start().unwrap();
    let url = format!("rediss://alice:S3cret-pw@127.0.0.1:{}", listener.port());
    for mode in [Mode::StrictDistributed, Mode::ExplicitDegraded, Mode::LocalOnly] {
        let built = Palisade::builder()
            .mode(mode)
            .redis_url(&url)
            .connect_timeout(Duration::from_millis(400))
            .command_timeout(Duration::from_millis(300))
            .build()
            .await;
        if cfg!(feature = "tls") {
            match mode {
                Mode::StrictDistributed => {
                    let e = built.unwrap_err();
                    assert!(e.is_unavailable(), "{mode}: {e:?}");
                }
                // Degraded starts on its fallback, announced; local never connects.
                _ => assert_eq!(built.unwrap().mode(), mode),
            }
        } else {
            let e = built.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config, "{mode}: {e:?}");
            assert!(e.to_string().contains("`tls` feature"), "{mode}: {e}");
        }
    }
    // A TLS setting with a plain URL is refused too: say rediss://.
    let e = Palisade::builder()
        .redis_url(&format!("redis://127.0.0.1:{}", listener.port()))
        .tls_ca_file("/nonexistent/ca.pem")
        .build()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e:?}");
    for bytes in listener.received().iter().filter(|b| !b.is_empty()) {
        assert_eq!(bytes[0], 0x16, "only TLS handshakes reached the listener: {bytes:?}");
        assert!(!String::from_utf8_lossy(bytes).contains("S3cret"));
    }
    if !cfg!(feature = "tls") {
        assert!(listener.received().is_empty(), "without TLS nothing may connect");
    }
}

#[cfg(all(feature = "redis", feature = "local"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_fail_build_in_strict_and_in_degraded_mode() {
    use palisade_redis_server::resp;
    let Some(server) = env::private_server("umbrella_refused_credentials") else {
        return;
    };
    resp::command(
        &server.addr(),
        &["ACL", "SETUSER", "alice", "on", ">right-pw", "~*", "&*", "+@all"],
    )
    .unwrap();
    let url = format!("redis://alice:wrong-pw@127.0.0.1:{}", server.port());
    for mode in [Mode::StrictDistributed, Mode::ExplicitDegraded] {
        let e = Palisade::builder()
            .mode(mode)
            .redis_url(&url)
            .connect_timeout(Duration::from_millis(500))
            .build()
            .await
            .unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::Auth,
            "{mode}: a misconfiguration, not an outage: {e:?}"
        );
        assert!(!format!("{e:?} {}", e.chain()).contains("wrong-pw"));
    }
    let p = Palisade::builder()
        .redis_url(&format!("redis://alice:right-pw@127.0.0.1:{}", server.port()))
        .build()
        .await
        .unwrap();
    let d = p.doctor().await;
    assert!(d.can_serve, "{d:?}");
    assert_eq!(d.user.as_deref(), Some("alice"));
    assert_eq!(d.tls, Some(false));
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_the_contracts_a_narrow_acl_user_cannot_serve() {
    use palisade_redis_server::resp;
    let Some(server) = env::private_server("umbrella_doctor_acl") else {
        return;
    };
    let mut least = vec!["ACL", "SETUSER", "app", "on", ">app-pw"];
    let rule = palisade_cache_redis::acl_rule("palisade");
    least.extend(rule.iter().map(String::as_str));
    assert_eq!(
        resp::command(&server.addr(), &least).unwrap(),
        resp::Reply::Simple("OK".into())
    );
    let mut narrow: Vec<&str> = vec!["ACL", "SETUSER", "narrow", "on", ">narrow-pw"];
    let other = palisade_cache_redis::acl_rule("other");
    narrow.extend(other.iter().map(String::as_str));
    assert_eq!(
        resp::command(&server.addr(), &narrow).unwrap(),
        resp::Reply::Simple("OK".into())
    );

    let url = |user: &str| format!("redis://{user}:{user}-pw@127.0.0.1:{}", server.port());
    let ok = Palisade::builder()
        .redis_url(&url("app"))
        .build()
        .await
        .unwrap()
        .doctor()
        .await;
    assert!(ok.can_serve, "{ok:?}");
    assert_eq!(ok.contracts.len(), 4);
    assert!(ok.contracts.iter().all(|c| c.error.is_none()), "{ok:?}");

    let bad = Palisade::builder()
        .redis_url(&url("narrow"))
        .build()
        .await
        .unwrap()
        .doctor()
        .await;
    assert!(!bad.can_serve, "a user restricted to other keys cannot serve: {bad:?}");
    for c in &bad.contracts {
        let e = c.error.as_deref().unwrap_or_default();
        assert!(e.contains("NOPERM"), "{}: {e}", c.contract);
    }
}

/// `connected_clients` of a server, seen from one more (short) connection.
#[cfg(feature = "redis")]
fn connected_clients(addr: &str) -> u64 {
    let info = palisade_redis_server::resp::command(addr, &["INFO", "clients"])
        .unwrap()
        .text()
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

/// A service with one Redis connection gives it to palisade: every contract runs on
/// it, the service's own commands run on it, and the server sees one client, not two.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_connection_is_the_only_client_palisade_and_the_service_use() {
    let Some(server) = env::private_server("umbrella_shared_connection") else {
        return;
    };
    let conn = palisade::RedisConnection::connect(&palisade::RedisConfig::from_url(&server.url()).unwrap())
        .await
        .unwrap();
    for mode in [Mode::StrictDistributed, Mode::ExplicitDegraded] {
        let p = Palisade::builder()
            .mode(mode)
            .redis_connection(conn.clone())
            .tenant("shared")
            .build()
            .await
            .unwrap();
        assert_eq!(p.mode(), mode);
        let cache = p.cache();
        cache.set("k", b"v", Duration::from_secs(60)).await.unwrap();
        assert_eq!(cache.get("k").await.unwrap().provenance, Provenance::Distributed);
        p.jobs()
            .create(&format!("j-{mode}"), &JobRecord::queued(), Duration::from_secs(60))
            .await
            .unwrap();
        let rate = palisade::Rate::per_second(10).burst(2).build().unwrap();
        assert!(p.rate_limiter().limit("ip", &rate).await.unwrap().value.is_allowed());
        // The service's own command, on the connection palisade hands back.
        let own = p.redis_connection().unwrap();
        let dbsize: i64 = own
            .command("service.dbsize", "any", "DBSIZE", Vec::new())
            .await
            .unwrap();
        assert!(dbsize >= 2, "{dbsize}");
        assert!(p.doctor().await.can_serve);
        // This test's client and the checker's: palisade opened none of its own.
        assert_eq!(connected_clients(&server.addr()), 2, "{mode}");
    }
}

/// TLS or credentials set on the builder beside a shared connection would be ignored:
/// that is a configuration error, never a silent weakening.
#[cfg(feature = "redis")]
#[tokio::test]
async fn a_shared_connection_with_tls_or_credentials_on_the_builder_is_a_config_error() {
    let config = palisade::RedisConfig::from_url("redis://127.0.0.1:1").unwrap();
    let conn = palisade::RedisConnection::connect_lazy(&config).unwrap();
    for b in [
        Palisade::builder().tls_ca_file("/ca.pem"),
        Palisade::builder().redis_password_file("/pw"),
        Palisade::builder().tls_server_name("redis.internal"),
    ] {
        let e = b.redis_connection(conn.clone()).build().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        assert!(e.to_string().contains("redis_connection"), "{e}");
    }
}

/// A shared connection that does not answer: strict fails `build()` within the
/// connection's deadline; degraded starts on the local backends.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_connection_that_does_not_answer_fails_strict_and_starts_degraded_locally() {
    let Some(mut server) = env::private_server("umbrella_shared_down") else {
        return;
    };
    let config = palisade::RedisConfig::from_url(&server.url())
        .unwrap()
        .with_command_timeout(Duration::from_millis(300));
    server.kill();
    let conn = palisade::RedisConnection::connect_lazy(&config).unwrap();
    let start = Instant::now();
    let e = Palisade::builder()
        .redis_connection(conn.clone())
        .build()
        .await
        .unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    let p = Palisade::builder()
        .mode(Mode::ExplicitDegraded)
        .redis_connection(conn)
        .build()
        .await
        .unwrap();
    let cache = p.cache();
    cache.set("k", b"v", Duration::from_secs(60)).await.unwrap();
    assert_eq!(cache.get("k").await.unwrap().provenance, Provenance::LocalDegraded);
}

/// `redis_dedicated_pool_size` reaches the connection palisade builds, and
/// `acquire_wait` uses that pool.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dedicated_pool_size_reaches_the_connection() {
    let Some(server) = env::private_server("umbrella_dedicated_pool") else {
        return;
    };
    let p = Palisade::builder()
        .mode(Mode::StrictDistributed)
        .redis_url(&server.url())
        .redis_dedicated_pool_size(7)
        .throttle_restart_hold(false)
        .build()
        .await
        .unwrap();
    let conn = p.redis_connection().unwrap();
    assert_eq!(conn.dedicated_stats().max, 7);
    let policy = palisade::Policy::builder().global_cap(1).build().unwrap();
    let held = p
        .throttle()
        .acquire("k", &policy)
        .await
        .unwrap()
        .value
        .permit()
        .unwrap();
    let d = p
        .throttle()
        .acquire_wait("k", &policy, Duration::from_millis(50))
        .await
        .unwrap()
        .value;
    assert!(matches!(d, palisade::Decision::Denied { .. }), "{d:?}");
    assert_eq!(
        conn.dedicated_stats().open,
        1,
        "the wait blocked on a dedicated connection"
    );
    held.release().await.unwrap();
    let d = p.doctor().await;
    assert_eq!(d.dedicated_pool.map(|s| s.max), Some(7));
}
