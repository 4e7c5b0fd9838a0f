//! Mode, Error, Provenance, Event and redaction.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::error::Error as _;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use palisade_cache_core::{
    Component, Endpoint, Error, ErrorKind, ErrorSummary, Event, EventKind, Events, Mode, Provenance, Tagged,
};

#[test]
fn mode_parses_and_prints_its_short_names() {
    for (m, s) in [
        (Mode::StrictDistributed, "strict"),
        (Mode::ExplicitDegraded, "degraded"),
        (Mode::LocalOnly, "local"),
    ] {
        assert_eq!(m.to_string(), s);
        assert_eq!(s.parse::<Mode>().unwrap(), m);
        assert_eq!(format!("  {}  ", s.to_uppercase()).parse::<Mode>().unwrap(), m);
    }
    let err = "fallback".parse::<Mode>().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("fallback"), "{err}");
}

#[test]
fn mode_default_is_strict_and_builder_default_depends_on_redis() {
    assert_eq!(Mode::default(), Mode::StrictDistributed);
    assert_eq!(Mode::default_for(true), Mode::StrictDistributed);
    assert_eq!(Mode::default_for(false), Mode::LocalOnly);
    assert!(Mode::StrictDistributed.needs_redis() && Mode::ExplicitDegraded.needs_redis());
    assert!(!Mode::LocalOnly.needs_redis());
}

fn io_refused() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused")
}

fn one_of_each() -> Vec<Error> {
    let be = Endpoint::url("redis://127.0.0.1:1");
    vec![
        Error::Unavailable {
            backend: be.clone(),
            op: "cache.get",
            source: Box::new(io_refused()),
        },
        Error::Timeout {
            backend: be.clone(),
            op: "cache.get",
            after: Duration::from_millis(300),
        },
        Error::codec("value of `k`", io_refused()),
        Error::invalid_input("empty key"),
        Error::config("no url"),
        Error::conflict("exists"),
        Error::Load {
            key: "k".into(),
            source: Arc::new(io_refused()),
        },
        Error::Backend {
            backend: be,
            op: "cache.get",
            source: Box::new(io_refused()),
        },
    ]
}

#[test]
fn only_unavailable_and_timeout_are_unavailable_and_retryable() {
    for e in one_of_each() {
        let expect = matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout);
        assert_eq!(e.is_unavailable(), expect, "{e:?}");
        assert_eq!(e.is_retryable(), expect, "{e:?}");
    }
    let kinds: Vec<_> = one_of_each().iter().map(Error::kind).collect();
    assert_eq!(kinds, ErrorKind::ALL.to_vec(), "one example per kind, in order");
}

#[test]
fn sources_are_kept_not_stringified() {
    for e in one_of_each() {
        match e.kind() {
            ErrorKind::Unavailable | ErrorKind::Codec | ErrorKind::Backend | ErrorKind::Load => {
                let src = e.source().expect("a source");
                // A loader's error is shared by every waiter: it sits behind an Arc.
                let io = match &e {
                    Error::Load { source, .. } => source.downcast_ref::<std::io::Error>(),
                    _ => src.downcast_ref::<std::io::Error>(),
                }
                .expect("the original io::Error");
                assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
                assert!(e.chain().ends_with(": refused"), "{}", e.chain());
            }
            _ => assert!(e.source().is_none()),
        }
    }
}

#[test]
fn error_kind_names_are_stable() {
    let names: Vec<_> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "unavailable",
            "timeout",
            "codec",
            "invalid_input",
            "config",
            "conflict",
            "load",
            "backend"
        ]
    );
}

#[test]
fn tagged_keeps_provenance_through_map() {
    let t = Tagged::new(Some(3), Provenance::LocalDegraded);
    let u = t.clone().map(|v| v.map(|x| x * 2));
    assert_eq!(u, Tagged::new(Some(6), Provenance::LocalDegraded));
    let r: Result<Tagged<i32>, &str> = t.try_map(|v| v.ok_or("none"));
    assert_eq!(r.unwrap().provenance, Provenance::LocalDegraded);
    assert!(Provenance::Distributed.is_shared());
    assert!(!Provenance::LocalDegraded.is_shared() && !Provenance::Local.is_shared());
    assert_eq!(Provenance::LocalDegraded.to_string(), "local_degraded");
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
        Arc::from("tenant-a"),
        SystemTime::now(),
        Some(ErrorSummary::of(&err)),
    );
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || events.emit(event.clone()));
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
        captured.text(),
    ];
    for p in &printed {
        assert!(!p.contains(SECRET), "secret leaked in: {p}");
    }
    assert!(
        captured.text().contains("WARN"),
        "outage events are logged at WARN: {}",
        captured.text()
    );
    assert!(
        captured.text().contains("10.0.0.1:6379"),
        "the host stays visible: {}",
        captured.text()
    );
    assert!(err.chain().contains("admin:***@10.0.0.1"), "{}", err.chain());
}

#[test]
fn events_are_logged_under_the_security_target_with_structured_fields() {
    let events = Events::new(8);
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_target(true)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        events.emit(Event::new(
            EventKind::Recovered {
                outage: Duration::from_millis(1500),
                served_degraded: 4,
                dropped_or_replayed: 2,
            },
            Component::JobStore,
            Mode::ExplicitDegraded,
            Arc::from("t1"),
            SystemTime::now(),
            None,
        ));
    });
    let text = captured.text();
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

#[test]
fn broadcast_is_bounded_and_a_lagging_subscriber_is_told() {
    let events = Events::new(2);
    let mut rx = events.subscribe();
    for _ in 0..5 {
        events.emit(Event::new(
            EventKind::Degraded,
            Component::Throttle,
            Mode::ExplicitDegraded,
            Arc::from("t"),
            SystemTime::now(),
            None,
        ));
    }
    match rx.try_recv() {
        Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => assert_eq!(n, 3),
        other => panic!("expected Lagged(3), got {other:?}"),
    }
    assert!(rx.try_recv().is_ok() && rx.try_recv().is_ok());
    assert!(rx.try_recv().is_err());
}

#[test]
fn emit_without_subscribers_does_not_fail() {
    let events = Events::default();
    events.emit(Event::new(
        EventKind::UnavailableAtStartup,
        Component::Cache,
        Mode::StrictDistributed,
        Arc::from("t"),
        SystemTime::now(),
        None,
    ));
    // A later subscriber sees only later events.
    let mut rx = events.subscribe();
    assert!(rx.try_recv().is_err());
}

#[test]
fn a_shared_copy_keeps_variant_fields_and_source_chain() {
    for e in one_of_each() {
        let original = Arc::new(e);
        let copy = Error::clone_shared(&original);
        assert_eq!(copy.kind(), original.kind());
        assert_eq!(copy.to_string(), original.to_string());
        assert_eq!(copy.chain(), original.chain());
        assert_eq!(copy.is_unavailable(), original.is_unavailable());
    }
}
