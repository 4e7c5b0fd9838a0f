//! No password ever prints, whatever it holds and whatever shape the URL has.
//!
//! For random passwords over every printable ASCII character (the separators `/ # ? ,
//! ; @ :` and spaces included), in every URL form palisade accepts — with and without a
//! scheme, TLS, cluster seed lists, `redis-cluster://`, Sentinel — everything palisade
//! prints about the configuration is collected: `RedisUrl` and `Endpoint` (`Display`,
//! `Debug`), the builder's `Debug`, the errors of a strict `build()` (`Display`,
//! `Debug`, the chain), the events and the `doctor` report of a degraded start, and
//! every `tracing` line all of that logged. That text must be the same as with a fixed
//! other password: nothing printed depends on the password at all (which also rules out
//! any 4-character piece of it, without flagging text that merely looks alike).
//!
//! One test in its own binary: it installs a `tracing` subscriber (see
//! `palisade-cache-core/tests/security_log.rs` for why captures live alone).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::contracts::core::{Endpoint, RedisUrl};
use palisade::{Mode, Palisade};
use palisade_cache_core::testkit::url_forms as forms;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything printed about `url`, `tracing` included.
async fn printed(url: &str) -> String {
    let mut out = Vec::new();
    match RedisUrl::parse(url) {
        Ok(u) => out.push(format!("{u:?} {} {:?}", u.endpoint(), u.endpoint())),
        Err(e) => out.push(format!("{e} {e:?}")),
    }
    let e = Endpoint::url(url);
    out.push(format!("{e} {e:?}"));
    let builder = || {
        Palisade::builder()
            .redis_url(url)
            .connect_timeout(Duration::from_millis(200))
            .command_timeout(Duration::from_millis(100))
    };
    out.push(format!("{:?}", builder()));
    match builder().mode(Mode::StrictDistributed).build().await {
        Ok(p) => out.push(format!("{p:?}")),
        Err(e) => out.push(format!("{e} {e:?} {e:#?} {}", e.chain())),
    }
    let events = palisade::Events::default();
    let mut rx = events.subscribe();
    match builder().mode(Mode::ExplicitDegraded).events(events).build().await {
        Ok(p) => {
            out.push(format!("{p:?}"));
            out.push(format!("{:?}", p.doctor().await));
            out.push(format!("{:?}", p.cache().stats()));
        }
        Err(e) => out.push(format!("{e} {e:?} {}", e.chain())),
    }
    while let Ok(ev) = rx.try_recv() {
        out.push(format!("{ev} {ev:?}"));
    }
    out.join("\n")
}

/// What `printed` prints, with `tracing`'s lines too, timestamps and timings removed.
fn all_output(rt: &tokio::runtime::Runtime, url: &str) -> String {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .without_time()
        .finish();
    let text = tracing::subscriber::with_default(subscriber, || {
        tracing::callsite::rebuild_interest_cache();
        rt.block_on(printed(url))
    });
    let logged = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let all = format!("{text}\n{logged}");
    // Times and durations differ from run to run; nothing else may.
    without_times(&all)
}

/// Replaces numbers that are times or durations (`1.23ms`, `tv_sec: 17…`, epoch µs).
fn without_times(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            let mut run = String::from(c);
            while let Some(&d) = chars.peek() {
                if d.is_ascii_digit() || d == '.' {
                    run.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            // Ports, exit codes and database numbers are short; times are long or
            // fractional, or the fields of a `SystemTime` (whose nanoseconds may be
            // short: 53566 once made this test fail).
            let time_field = out.ends_with("tv_nsec: ") || out.ends_with("tv_sec: ");
            if run.len() > 5 || run.contains('.') || time_field {
                out.push('#');
            } else {
                out.push_str(&run);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn no_password_of_any_shape_prints_anywhere() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    let reference: Vec<String> = forms("Zq9ReferencePw").iter().map(|u| all_output(&rt, u)).collect();
    let check = |pw: &str| -> Result<(), TestCaseError> {
        for (url, expected) in forms(pw).iter().zip(&reference) {
            let got = all_output(&rt, url);
            prop_assert_eq!(
                &got,
                expected,
                "the output depends on the password {:?} in {:?}",
                pw,
                url
            );
            prop_assert!(!got.contains(pw) || expected.contains(pw));
        }
        Ok(())
    };
    // Shapes that once changed, or could change, how a URL reads (a schemeless
    // `alice:` + `//` looked like the scheme `alice://`), then random ones. The parser's
    // exhaustive test (`url::tests::no_password_changes_how_a_url_reads`) covers every
    // short password of separators; this one proves the whole printed surface.
    for pw in ["//", "//h@", "://", ",redis://h:2", "?node=h:2", "/0/x", "@"] {
        check(pw).unwrap();
    }
    runner.run(&"[ -~]{1,24}", |pw| check(&pw)).unwrap();
}
