//! What `Events::emit` logs: the `palisade::security` target, its fields, its level, and no credentials.
//!
//! These tests capture `tracing` output through a scoped subscriber. They live in their own test
//! binary, one at a time, because `tracing` caches a callsite's interest globally: a test that
//! emits the same event with no subscriber on another thread can register the callsite as
//! "never interested" at the instant this test installs its subscriber, and the event is then
//! skipped (a race seen in CI). Nothing else in this binary emits, the capture tests hold
//! [`ONE_AT_A_TIME`], and each rebuilds the interest cache after installing its subscriber.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use palisade_cache_core::{Component, Endpoint, Error, ErrorSummary, Event, EventKind, Events, Mode};

/// Serialises the tests that install a scoped `tracing` subscriber.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `emit` with a subscriber that prints everything into the returned buffer.
fn capture(max_level: tracing::Level, emit: impl FnOnce()) -> String {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(max_level)
        .with_ansi(false)
        .with_target(true)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        tracing::callsite::rebuild_interest_cache();
        emit();
    });
    captured.text()
}

/// A writer that collects everything `tracing` prints.
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

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[test]
fn a_password_in_a_redis_url_never_appears_anywhere_printable() {
    const SECRET: &str = "hunter2-Sup3rS3cret";
    let url = format!("redis://admin:{SECRET}@10.0.0.1:6379/0");
    let cluster = format!("redis://:{SECRET}@a:1,redis://:{SECRET}@b:2");
    let endpoint = Endpoint::url(&url);
    // A client library's error that quotes the URL it was given.
    let client_error = std::io::Error::other(format!("cannot connect to {url}"));
    let err = Error::Unavailable {
        backend: endpoint.clone(),
        op: "cache.get",
        source: Box::new(client_error),
    };
    let events = Events::new(8);
    let mut rx = events.subscribe();
    let event = Event::new(
        EventKind::Degraded,
        Component::Cache,
        Mode::ExplicitDegraded,
        Some(Arc::from("tenant-a")),
        SystemTime::now(),
        Some(ErrorSummary::of(&err)),
    );
    let logged = capture(tracing::Level::TRACE, || events.emit(event.clone()));
    let received = rx.try_recv().unwrap();

    let printed = [
        endpoint.to_string(),
        format!("{endpoint:?}"),
        Endpoint::url(&cluster).to_string(),
        err.to_string(),
        format!("{err:?}"),
        format!("{err:#?}"),
        err.chain(),
        ErrorSummary::of(&err).to_string(),
        event.to_string(),
        format!("{event:?}"),
        format!("{received:?}"),
        logged.clone(),
    ];
    for p in &printed {
        assert!(!p.contains(SECRET), "secret leaked in: {p}");
    }
    assert!(logged.contains("WARN"), "outage events are logged at WARN: {logged}");
    assert!(logged.contains("10.0.0.1:6379"), "the host stays visible: {logged}");
    assert!(err.chain().contains("admin:***@10.0.0.1"), "{}", err.chain());
}

#[test]
fn events_are_logged_under_the_security_target_with_structured_fields() {
    let events = Events::new(8);
    let text = capture(tracing::Level::INFO, || {
        events.emit(Event::new(
            EventKind::Recovered {
                outage: Duration::from_millis(1500),
                served_degraded: 4,
                dropped_or_replayed: 2,
            },
            Component::JobStore,
            Mode::ExplicitDegraded,
            Some(Arc::from("t1")),
            SystemTime::now(),
            None,
        ));
    });
    for needle in [
        "palisade::security",
        "INFO",
        "kind=\"recovered\"",
        "component=\"job_store\"",
        "mode=\"degraded\"",
        "tenant=\"t1\"",
        "outage_ms=1500",
        "served_degraded=4",
        "dropped_or_replayed=2",
    ] {
        assert!(text.contains(needle), "missing {needle} in {text}");
    }
}
