//! TLS against real `redis-server`s speaking TLS, with certificates generated at test
//! time: trust, mutual TLS, and every way TLS can fail — each a typed error within the
//! connect deadline, at startup and at runtime.
#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use palisade_cache_core::cache::op;
use palisade_cache_core::{Backend, Cache, ErrorKind, Run};
use palisade_cache_redis::{RedisCache, RedisConfig, RedisConnection, TlsOptions};
use palisade_redis_server::env;
use palisade_redis_server::resp;
use palisade_redis_server::server::RedisServer;
use palisade_redis_server::tls::{ServerCert, TlsFiles, TlsServer};

const CONNECT: Duration = Duration::from_millis(1500);
const SLACK: Duration = Duration::from_millis(400);

fn tls(ca: std::path::PathBuf) -> TlsOptions {
    let mut t = TlsOptions::default();
    t.ca_file = Some(ca);
    t
}

fn config(url: &str, opts: TlsOptions) -> RedisConfig {
    RedisConfig::from_url(url)
        .unwrap()
        .with_tls(opts)
        .with_connect_timeout(CONNECT)
        .with_command_timeout(Duration::from_millis(300))
}

fn server(test: &str, files: &TlsFiles, tls: TlsServer) -> Option<RedisServer> {
    if !(RedisServer::binary_available() || env::required()) {
        env::skip(test, "no redis-server binary");
        return None;
    }
    Some(RedisServer::start_tls(files, tls, &[]).unwrap_or_else(|e| panic!("{test}: TLS redis-server: {e}")))
}

async fn connect_err(cfg: &RedisConfig) -> (palisade_cache_core::Error, Duration) {
    let started = Instant::now();
    let e = RedisConnection::connect(cfg).await.expect_err("must not connect");
    (e, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_tls_connection_serves_and_what_it_writes_lands_in_redis() {
    let files = TlsFiles::generate().unwrap();
    let Some(server) = server("tls_serves", &files, TlsServer::good()) else {
        return;
    };
    let conn = RedisConnection::connect(&config(&server.tls_url().unwrap(), tls(files.ca())))
        .await
        .unwrap();
    let info = conn.info();
    assert!(info.tls, "{info:?}");
    assert_eq!(info.tls_server_name.as_deref(), Some("127.0.0.1"));
    let cache = RedisCache::new(conn);
    cache
        .run(&op::Set::new(
            "tls-key".to_owned(),
            bytes::Bytes::copy_from_slice(b"over tls"),
            Duration::from_secs(60),
        ))
        .await
        .unwrap();
    assert_eq!(
        resp::command(&server.addr(), &["GET", "tls-key"])
            .unwrap()
            .text()
            .as_deref(),
        Some("over tls"),
        "written through TLS, read on the admin port"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_name_other_than_the_host_is_checked_against_the_certificate() {
    let files = TlsFiles::generate().unwrap();
    let Some(server) = server("tls_server_name", &files, TlsServer::good()) else {
        return;
    };
    let mut opts = tls(files.ca());
    opts.server_name = Some("localhost".into());
    RedisConnection::connect(&config(&server.tls_url().unwrap(), opts.clone()))
        .await
        .expect("the certificate names localhost");
    opts.server_name = Some("not-this-one.invalid".into());
    let (e, took) = connect_err(&config(&server.tls_url().unwrap(), opts)).await;
    assert_eq!(e.kind(), ErrorKind::Tls, "{e:?}");
    assert!(took <= CONNECT + SLACK, "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tls_failure_is_a_typed_error_within_the_connect_deadline() {
    let files = TlsFiles::generate().unwrap();
    let Some(good) = server("tls_failures", &files, TlsServer::good()) else {
        return;
    };
    let mut expired_opts = TlsServer::good();
    expired_opts.cert = ServerCert::Expired;
    let expired = RedisServer::start_tls(&files, expired_opts, &[]).unwrap();
    let mut wrong_opts = TlsServer::good();
    wrong_opts.cert = ServerCert::WrongName;
    let wrong_name = RedisServer::start_tls(&files, wrong_opts, &[]).unwrap();
    let plain = RedisServer::start().unwrap();

    let cases: Vec<(&str, RedisConfig, ErrorKind)> = vec![
        (
            "a CA that signed nothing of it",
            config(&good.tls_url().unwrap(), tls(files.path("other-ca.pem"))),
            ErrorKind::Tls,
        ),
        (
            "the platform roots do not know a private CA",
            config(&good.tls_url().unwrap(), TlsOptions::default()),
            ErrorKind::Tls,
        ),
        (
            "an expired certificate",
            config(&expired.tls_url().unwrap(), tls(files.ca())),
            ErrorKind::Tls,
        ),
        (
            "a certificate for another name",
            config(&wrong_name.tls_url().unwrap(), tls(files.ca())),
            ErrorKind::Tls,
        ),
        (
            // The plain server reads the ClientHello as the start of an inline command
            // and waits for its end: the connect deadline ends it.
            "rediss:// at a plain port",
            config(&plain.url().replace("redis://", "rediss://"), tls(files.ca())),
            ErrorKind::Timeout,
        ),
        (
            "redis:// at a TLS port",
            config(
                &format!("redis://127.0.0.1:{}", good.tls_port().unwrap()),
                TlsOptions::default(),
            ),
            ErrorKind::Unavailable,
        ),
    ];
    for (what, cfg, kind) in cases {
        let (e, took) = connect_err(&cfg).await;
        assert_eq!(e.kind(), kind, "{what}: {e:?}");
        assert!(took <= CONNECT + SLACK, "{what}: took {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_the_client_certificate() {
    let files = TlsFiles::generate().unwrap();
    let mut mutual = TlsServer::good();
    mutual.mutual = true;
    let Some(server) = server("tls_mutual", &files, mutual) else {
        return;
    };
    let url = server.tls_url().unwrap();
    let (e, took) = connect_err(&config(&url, tls(files.ca()))).await;
    assert_eq!(e.kind(), ErrorKind::Tls, "no client certificate: {e:?}");
    assert!(took <= CONNECT + SLACK, "{took:?}");
    let (cert, key) = files.client();
    let mut opts = tls(files.ca());
    opts.client_cert_file = Some(cert);
    opts.client_key_file = Some(key);
    let conn = RedisConnection::connect(&config(&url, opts)).await.unwrap();
    conn.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_replaced_at_runtime_by_one_that_does_not_verify_is_named_not_just_timed_out() {
    let files = TlsFiles::generate().unwrap();
    let Some(mut server) = server("tls_runtime", &files, TlsServer::good()) else {
        return;
    };
    let conn = RedisConnection::connect(&config(&server.tls_url().unwrap(), tls(files.ca())))
        .await
        .unwrap();
    let cache = Cache::new(
        RedisCache::new(conn),
        palisade_cache_core::Namespace::new(&env::unique_prefix("tls_rt"), "t", "c").unwrap(),
    );
    cache.set("k", b"v", Duration::from_secs(60)).await.unwrap();
    // The server restarts on the same ports with an expired certificate.
    let mut expired = TlsServer::good();
    expired.cert = ServerCert::Expired;
    server.restart_tls(&files, expired).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let started = Instant::now();
        let e = cache.get("k").await.expect_err("the certificate does not verify");
        assert!(
            started.elapsed() <= Duration::from_millis(300) + SLACK,
            "{:?}",
            started.elapsed()
        );
        assert!(e.is_unavailable(), "{e:?}");
        if e.kind() == ErrorKind::Tls {
            break;
        }
        assert!(Instant::now() < deadline, "never named as TLS: {e:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cache.backend().probe().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_of_a_cluster_is_reached_over_verified_tls() {
    use palisade_redis_server::server::RedisCluster;
    let files = TlsFiles::generate().unwrap();
    if !(RedisServer::binary_available() || env::required()) {
        env::skip("tls_cluster", "no redis-server binary");
        return;
    }
    let cluster = RedisCluster::start_tls(3, &files).unwrap();
    let conn = RedisConnection::connect(&config(&cluster.tls_seeds(), tls(files.ca())))
        .await
        .unwrap();
    assert!(conn.is_cluster() && conn.info().tls);
    let cache = RedisCache::new(conn);
    // Keys of every master (their slots spread over the three).
    for i in 0..60 {
        cache
            .run(&op::Set::new(
                format!("tls-cluster-{i}"),
                bytes::Bytes::copy_from_slice(b"v"),
                Duration::from_secs(60),
            ))
            .await
            .unwrap();
    }
    let mut per_node = Vec::new();
    for node in cluster.nodes() {
        let n = match resp::command(&node.addr(), &["DBSIZE"]).unwrap() {
            resp::Reply::Int(n) => n,
            other => panic!("{other:?}"),
        };
        per_node.push(n);
    }
    assert!(
        per_node.iter().all(|n| *n > 0),
        "every master got keys over TLS: {per_node:?}"
    );
    // The same cluster through a CA that signed none of it is refused.
    let (e, _) = connect_err(&config(&cluster.tls_seeds(), tls(files.path("other-ca.pem")))).await;
    assert_eq!(e.kind(), ErrorKind::Tls, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_and_data_nodes_over_tls_are_followed_through_a_failover() {
    use palisade_redis_server::sentinel::{SentinelGroup, SentinelOptions};
    let files = TlsFiles::generate().unwrap();
    if !(RedisServer::binary_available() || env::required()) {
        env::skip("tls_sentinel", "no redis-server binary");
        return;
    }
    let mut group = SentinelGroup::start_tls(SentinelOptions::default(), &files).unwrap();
    assert!(group.url().starts_with("rediss-sentinel://"));
    let conn = RedisConnection::connect(&config(&group.url(), tls(files.ca())))
        .await
        .unwrap();
    assert!(conn.info().tls);
    assert_eq!(conn.role().await.unwrap(), "master");
    let cache = RedisCache::new(conn.clone());
    cache
        .run(&op::Set::new(
            "tls-sentinel".to_owned(),
            bytes::Bytes::copy_from_slice(b"v"),
            Duration::from_secs(60),
        ))
        .await
        .unwrap();
    let old = group.primary_port().unwrap();
    group.node_mut(old).unwrap().kill();
    let new = group.wait_new_primary(old, Duration::from_secs(20)).unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if cache
            .run(&op::Get::new("tls-sentinel".to_owned()))
            .await
            .is_ok_and(|t| t.value.as_deref() == Some(&b"v"[..]))
        {
            break;
        }
        assert!(Instant::now() < until, "never served by the new primary over TLS");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(conn.info().connected_to.map(|c| c.port), Some(new));
}
