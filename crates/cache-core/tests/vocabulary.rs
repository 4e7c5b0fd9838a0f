//! Mode, Error, Provenance and the event broadcast. What events log: `security_log.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use palisade_cache_core::{Component, Endpoint, Error, ErrorKind, Event, EventKind, Events, Mode, Provenance, Tagged};

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
            backend: be.clone(),
            op: "cache.get",
            source: Box::new(io_refused()),
        },
        Error::Auth {
            backend: be.clone(),
            op: "connect",
            source: Box::new(io_refused()),
        },
        Error::Tls {
            backend: be.clone(),
            op: "connect",
            source: Box::new(io_refused()),
        },
        Error::Exhausted {
            backend: be,
            op: "throttle.wait",
            what: "dedicated connection (8)".into(),
            after: Duration::from_millis(500),
        },
    ]
}

#[test]
fn only_outages_tls_and_auth_failures_are_unavailable_and_retryable() {
    for e in one_of_each() {
        let expect = matches!(
            e.kind(),
            ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::Tls | ErrorKind::Auth
        );
        assert_eq!(e.is_unavailable(), expect, "{e:?}");
        // A pool that was all in use is retried, but is no outage.
        assert_eq!(e.is_retryable(), expect || e.kind() == ErrorKind::Exhausted, "{e:?}");
    }
    let kinds: Vec<_> = one_of_each().iter().map(Error::kind).collect();
    assert_eq!(kinds, ErrorKind::ALL.to_vec(), "one example per kind, in order");
}

#[test]
fn sources_are_kept_not_stringified() {
    for e in one_of_each() {
        match e.kind() {
            ErrorKind::Unavailable
            | ErrorKind::Codec
            | ErrorKind::Backend
            | ErrorKind::Load
            | ErrorKind::Auth
            | ErrorKind::Tls => {
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
            "backend",
            "auth",
            "tls",
            "exhausted"
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

#[test]
fn broadcast_is_bounded_and_a_lagging_subscriber_is_told() {
    let events = Events::new(2);
    let mut rx = events.subscribe();
    for _ in 0..5 {
        events.emit(Event::new(
            EventKind::Degraded,
            Component::Throttle,
            Mode::ExplicitDegraded,
            Some(Arc::from("t")),
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
        Some(Arc::from("t")),
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
