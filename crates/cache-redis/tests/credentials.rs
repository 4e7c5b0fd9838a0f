//! Credentials against a real server with ACL users: the URL forms, password files, a
//! refused password at startup and a password rotated under a running connection.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use fred::interfaces::ClientLike;
use palisade_cache_core::{Backend, Cache, Component, ErrorKind, EventKind, Events, Mode, Strict};
use palisade_cache_redis::fred;
use palisade_cache_redis::{RedisCache, RedisConfig, RedisConnection};
use palisade_redis_server::env;
use palisade_redis_server::resp::{self, Reply};
use palisade_redis_server::server::RedisServer;

const PW: &str = "r1ght-Pw";

/// A private server with the ACL user `alice` (password [`PW`], every key and command).
fn server(test: &str) -> Option<RedisServer> {
    let server = env::private_server(test)?;
    set_password(&server, PW);
    Some(server)
}

fn set_password(server: &RedisServer, pw: &str) {
    let r = resp::command(
        &server.addr(),
        &[
            "ACL",
            "SETUSER",
            "alice",
            "on",
            "resetpass",
            &format!(">{pw}"),
            "~*",
            "&*",
            "+@all",
        ],
    )
    .unwrap();
    assert_eq!(r, Reply::Simple("OK".into()), "{r:?}");
}

fn cfg(url: &str) -> RedisConfig {
    RedisConfig::from_url(url)
        .unwrap()
        .with_connect_timeout(Duration::from_millis(800))
        .with_command_timeout(Duration::from_millis(300))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_connects_with_its_password_from_the_url_or_a_file() {
    let Some(server) = server("acl_user_connects") else {
        return;
    };
    let port = server.port();
    let conn = RedisConnection::connect(&cfg(&format!("redis://alice:{PW}@127.0.0.1:{port}")))
        .await
        .unwrap();
    assert_eq!(conn.info().user.as_deref(), Some("alice"));
    let whoami: String = conn
        .run(
            "whoami",
            conn.client_for("").unwrap().custom(fred::cmd!("ACL"), vec!["WHOAMI"]),
        )
        .await
        .unwrap();
    assert_eq!(whoami, "alice");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, format!("{PW}\n")).unwrap();
    let from_file = cfg(&format!("redis://alice@127.0.0.1:{port}")).with_password_file(&file);
    RedisConnection::connect(&from_file)
        .await
        .unwrap()
        .ping()
        .await
        .unwrap();

    let both = cfg(&format!("redis://alice:{PW}@127.0.0.1:{port}")).with_password_file(&file);
    let e = RedisConnection::connect(&both).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e:?}");
    let missing = cfg(&format!("redis://alice@127.0.0.1:{port}")).with_password_file(dir.path().join("none"));
    let e = RedisConnection::connect(&missing).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_password_is_an_auth_error_at_once_never_an_outage_to_wait_out() {
    let Some(server) = server("acl_refused") else { return };
    let port = server.port();
    for url in [
        format!("redis://alice:wrong@127.0.0.1:{port}"),
        format!("redis://nobody:{PW}@127.0.0.1:{port}"),
    ] {
        let started = Instant::now();
        let e = RedisConnection::connect(&cfg(&url)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Auth, "{e:?}");
        assert!(
            started.elapsed() < Duration::from_millis(800),
            "{:?}",
            started.elapsed()
        );
        let printed = format!("{e} {e:?} {}", e.chain());
        assert!(!printed.contains("wrong") && !printed.contains(PW), "{printed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_rotated_under_a_running_connection_is_loud_and_a_new_password_file_ends_it() {
    let Some(server) = server("acl_rotated") else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, PW).unwrap();
    let conn =
        RedisConnection::connect(&cfg(&format!("redis://alice@127.0.0.1:{}", server.port())).with_password_file(&file))
            .await
            .unwrap();
    let events = Events::new(16);
    let mut rx = events.subscribe();
    let cache = Cache::new(
        Strict::new(
            RedisCache::new(conn),
            common::fault_ctx(Component::Cache, Mode::StrictDistributed, &events),
        )
        .unwrap(),
        common::fault_ns("acl_rotated", "c"),
    );
    cache.set("k", b"v", Duration::from_secs(60)).await.unwrap();

    // The password changes and the server drops alice's connections.
    set_password(&server, "n3w-Pw");
    resp::command(&server.addr(), &["CLIENT", "KILL", "USER", "alice"]).unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    let e = loop {
        let started = Instant::now();
        let e = cache.get("k").await.expect_err("the old password is refused");
        assert!(
            started.elapsed() <= Duration::from_millis(600),
            "{:?}",
            started.elapsed()
        );
        if e.kind() == ErrorKind::Auth {
            break e;
        }
        assert!(Instant::now() < until, "never named as an auth failure: {e:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!format!("{e:?}").contains("n3w"));
    let down = tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(down.kind, EventKind::UnavailableAtRuntime { .. }), "{down:?}");
    assert!(down.error.is_some(), "the event says why");

    // The secrets mount is updated: the next reconnect reads it.
    std::fs::write(&file, "n3w-Pw\n").unwrap();
    let up = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(up.kind, EventKind::Recovered { .. }), "{up:?}");
    assert_eq!(cache.get("k").await.unwrap().value.as_deref(), Some(&b"v"[..]));
    assert!(cache.backend().probe().await.is_ok());
}
