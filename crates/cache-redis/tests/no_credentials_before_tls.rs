//! The bug class of the first TLS issue: a URL that asks for TLS must never put a byte
//! of a credential on the wire in clear. Every accepted TLS URL form is pointed at a
//! plain listener that records what it receives and answers nothing.
//!
//! - Built with the `tls` feature: the connect fails within its deadline, and every
//!   connection the listener saw starts with a TLS handshake record and holds no byte
//!   sequence of the password.
//! - Built without it (`cargo xtask ci` runs this file that way too): every form is
//!   `Error::Config` naming the feature, and the listener saw no connection at all.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use palisade_cache_core::ErrorKind;
use palisade_cache_redis::{RedisConfig, RedisConnection};
use palisade_redis_server::not_redis::Recorder;

const PASSWORD: &str = "s3cretPW-never-in-clear";
const CONNECT: Duration = Duration::from_millis(600);

/// Every TLS form palisade accepts, pointing at the listeners `a` and `b`, with the
/// password in the URL or in a file.
fn forms(a: u16, b: u16, password_file: &std::path::Path) -> Vec<(String, RedisConfig)> {
    let url = |u: &str| RedisConfig::from_url(u).unwrap_or_else(|e| panic!("{u}: {e}"));
    let mut out = vec![
        format!("rediss://alice:{PASSWORD}@127.0.0.1:{a}"),
        format!("rediss://:{PASSWORD}@127.0.0.1:{a}/2"),
        format!("rediss://alice:{PASSWORD}@127.0.0.1:{a},rediss://127.0.0.1:{b}"),
        format!("rediss://alice:{PASSWORD}@127.0.0.1:{a},127.0.0.1:{b}"),
        format!("rediss-cluster://alice:{PASSWORD}@127.0.0.1:{a}?node=127.0.0.1:{b}"),
        format!("rediss-sentinel://alice:{PASSWORD}@127.0.0.1:{a},127.0.0.1:{b}/palisade"),
    ]
    .into_iter()
    .map(|u| (u.replace(PASSWORD, "<pw>"), url(&u)))
    .collect::<Vec<_>>();
    out.push((
        "rediss://alice@… + password file".into(),
        url(&format!("rediss://alice@127.0.0.1:{a}")).with_password_file(password_file),
    ));
    out.push((
        "RedisConfig::cluster(rediss seeds)".into(),
        RedisConfig::cluster(&[
            format!("rediss://:{PASSWORD}@127.0.0.1:{a}"),
            format!("rediss://127.0.0.1:{b}"),
        ])
        .unwrap(),
    ));
    out.push((
        "RedisConfig::sentinel(rediss seeds) + sentinel password".into(),
        RedisConfig::sentinel(
            "palisade",
            &[
                format!("rediss://alice:{PASSWORD}@127.0.0.1:{a}"),
                format!("127.0.0.1:{b}"),
            ],
        )
        .unwrap()
        .with_sentinel_auth(Some("watcher"), palisade_cache_core::Secret::new(PASSWORD)),
    ));
    out.into_iter()
        .map(|(name, cfg)| (name, cfg.with_connect_timeout(CONNECT)))
        .collect()
}

/// Every 4-byte window of the password: none may appear on the wire.
fn leaks(bytes: &[u8]) -> Option<String> {
    let pw = PASSWORD.as_bytes();
    pw.windows(4)
        .find(|w| bytes.windows(4).any(|b| b == *w))
        .map(|w| String::from_utf8_lossy(w).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_url_form_that_asks_for_tls_sends_a_credential_in_clear() {
    let (a, b) = (Recorder::start().unwrap(), Recorder::start().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let connections = || a.received().len() + b.received().len();
    for (name, cfg) in forms(a.port(), b.port(), &password_file) {
        assert!(cfg.uses_tls(), "{name}");
        let before = connections();
        let started = Instant::now();
        let e = RedisConnection::connect(&cfg).await.expect_err(&name);
        let took = started.elapsed();
        if cfg!(feature = "tls") {
            assert!(took <= CONNECT + Duration::from_millis(400), "{name}: {took:?}");
            assert!(e.is_unavailable(), "{name}: {e:?}");
        } else {
            assert_eq!(e.kind(), ErrorKind::Config, "{name}: {e:?}");
            assert!(e.to_string().contains("`tls` feature"), "{name}: {e}");
        }
        let printed = format!("{e} {e:?} {}", e.chain());
        assert!(!printed.contains(PASSWORD), "{name}: {printed}");
        if cfg!(feature = "tls") {
            assert!(
                connections() > before,
                "{name}: nothing reached the listeners, the case proves nothing"
            );
        }
    }
    // The watcher of the Sentinel form and fred's reconnects may still be writing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen: Vec<Vec<u8>> = a.received().into_iter().chain(b.received()).collect();
    if !cfg!(feature = "tls") {
        assert!(seen.is_empty(), "without the tls feature nothing may connect: {seen:?}");
    }
    for bytes in seen.iter().filter(|b| !b.is_empty()) {
        assert_eq!(
            bytes[0], 0x16,
            "a connection began with something else than a TLS handshake: {bytes:?}"
        );
        assert_eq!(leaks(bytes), None, "a piece of the password went out in clear");
    }
}
