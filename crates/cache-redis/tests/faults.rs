//! Fault tests: a private redis-server per test, really killed (SIGKILL), paused
//! (SIGSTOP) and restarted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{DEADLINE, RECOVERY, SLACK, fault_config, fault_ctx, fault_ns};

use std::future::Future;
use std::time::{Duration, Instant};

use palisade_cache_core::{
    Cache, CacheBackend, Component, ErrorKind, Event, EventKind, Events, Failover, FailoverOptions, Health,
    ManualClock, Mode, Provenance, Strict,
};
use palisade_cache_local::{LocalCache, LocalCacheConfig};
use palisade_cache_redis::{RedisCache, RedisConfig, RedisConnection};
use palisade_redis_server::env;
use palisade_redis_server::not_redis::NotRedis;
use palisade_redis_server::resp::{self, Reply};
use palisade_redis_server::server::RedisServer;
use tokio::sync::broadcast;

/// Degraded mode (default options) over a private server, with quick probes.
async fn degraded_cache(server: &RedisServer, events: &Events, test: &str) -> Cache<Failover<RedisCache, LocalCache>> {
    let conn = RedisConnection::connect(&fault_config(server)).await.unwrap();
    let failover = Failover::new(
        RedisCache::new(conn),
        LocalCache::default(),
        fault_ctx(Component::Cache, Mode::ExplicitDegraded, events),
        FailoverOptions::default(),
        None,
    )
    .unwrap();
    Cache::new(failover, fault_ns(test, "faults"))
}

async fn timed<T>(fut: impl Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let v = fut.await;
    (v, start.elapsed())
}

async fn next_event(rx: &mut broadcast::Receiver<Event>, within: Duration) -> Event {
    tokio::time::timeout(within, rx.recv())
        .await
        .expect("an event in time")
        .expect("not lagged")
}

fn no_event(rx: &mut broadcast::Receiver<Event>) {
    match rx.try_recv() {
        Err(broadcast::error::TryRecvError::Empty) => {}
        other => panic!("expected no event, got {other:?}"),
    }
}

/// Every kind of call once, each timed; all must fail as unavailable within the
/// deadline.
async fn every_call_fails_within_the_deadline<B: CacheBackend>(cache: &Cache<B>, round: usize) {
    let key = format!("k{round}");
    let results: Vec<(&str, Result<(), palisade_cache_core::Error>, Duration)> = vec![
        {
            let (r, d) = timed(cache.get(&key)).await;
            ("get", r.map(drop), d)
        },
        {
            let (r, d) = timed(cache.set(&key, b"v", Duration::from_secs(60))).await;
            ("set", r.map(drop), d)
        },
        {
            let (r, d) = timed(cache.set_if_absent(&key, b"v", Duration::from_secs(60))).await;
            ("set_if_absent", r.map(drop), d)
        },
        {
            let (r, d) = timed(cache.delete(&key)).await;
            ("delete", r.map(drop), d)
        },
        {
            let (r, d) = timed(cache.contains(&key)).await;
            ("contains", r.map(drop), d)
        },
        {
            let (r, d) = timed(cache.clear()).await;
            ("clear", r.map(drop), d)
        },
    ];
    for (op, r, took) in results {
        let e = r.expect_err(op);
        assert!(e.is_unavailable(), "{op}: {e:?}");
        assert!(took <= DEADLINE + SLACK, "{op} took {took:?}, deadline {DEADLINE:?}");
    }
}

async fn wait_until_served<B: CacheBackend>(cache: &Cache<B>) {
    let give_up = Instant::now() + RECOVERY;
    while cache.get("probe-key").await.is_err() {
        assert!(Instant::now() < give_up, "Redis never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- strict ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_connect_to_a_dead_server_fails_fast() {
    let Some(mut server) = env::private_server("strict_connect_to_a_dead_server_fails_fast") else {
        return;
    };
    let cfg = fault_config(&server);
    server.kill();
    let (r, took) = timed(RedisConnection::connect(&cfg)).await;
    let e = r.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e:?}");
    assert!(took <= cfg.connect_timeout, "connect took {took:?}");
    assert!(
        e.to_string().contains(&format!("127.0.0.1:{}", server.port())),
        "names the endpoint: {e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_connect_to_a_server_that_never_answers_fails_within_the_connect_deadline() {
    let Some(server) = env::private_server("strict_connect_to_a_server_that_never_answers") else {
        return;
    };
    let cfg = fault_config(&server);
    server.pause().unwrap();
    let (r, took) = timed(RedisConnection::connect(&cfg)).await;
    server.resume().unwrap();
    let e = r.unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    assert!(
        took <= cfg.connect_timeout + SLACK,
        "connect took {took:?}, deadline {:?}",
        cfg.connect_timeout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_after_a_kill_every_call_is_unavailable_within_the_deadline_and_nothing_is_local() {
    let Some(mut server) = env::private_server("strict_after_a_kill") else {
        return;
    };
    let events = Events::new(64);
    let mut rx = events.subscribe();
    let conn = RedisConnection::connect(&fault_config(&server)).await.unwrap();
    let strict = Strict::new(
        RedisCache::new(conn),
        fault_ctx(Component::Cache, Mode::StrictDistributed, &events),
    )
    .unwrap();
    let cache = Cache::new(strict.clone(), fault_ns("strict_after_a_kill", "faults"));
    cache.set("before", b"v", Duration::from_secs(60)).await.unwrap();

    server.kill();
    for round in 0..3 {
        every_call_fails_within_the_deadline(&cache, round).await;
    }
    let e = next_event(&mut rx, Duration::from_secs(5)).await;
    assert!(matches!(e.kind, EventKind::UnavailableAtRuntime { .. }), "{e:?}");
    assert_eq!(e.mode, Mode::StrictDistributed);
    no_event(&mut rx);
    assert!(matches!(cache.stats().status.health, Health::Down { .. }));

    server.start_again().unwrap();
    wait_until_served(&cache).await;
    let e = next_event(&mut rx, RECOVERY).await;
    assert!(
        matches!(
            e.kind,
            EventKind::Recovered {
                served_degraded: 0,
                dropped_or_replayed: 0,
                ..
            }
        ),
        "{e:?}"
    );
    no_event(&mut rx);

    // Nothing written during the outage exists anywhere: the restarted server is empty
    // and strict mode has no local map to have kept it.
    let got = cache.get("k0").await.unwrap();
    assert_eq!(got.value, None);
    assert_eq!(got.provenance, Provenance::Distributed);
    let s = cache.stats();
    assert_eq!((s.degraded_reads, s.degraded_writes), (0, 0));
    assert_eq!(s.status.mode, Mode::StrictDistributed);
    assert_eq!(s.status.health, Health::Healthy);
    assert!(s.status.errors_of(ErrorKind::Unavailable) + s.status.errors_of(ErrorKind::Timeout) >= 18);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_while_paused_every_call_times_out_within_the_deadline_then_recovers() {
    let Some(server) = env::private_server("strict_while_paused") else {
        return;
    };
    let events = Events::new(64);
    let mut rx = events.subscribe();
    let conn = RedisConnection::connect(&fault_config(&server)).await.unwrap();
    let cache = Cache::new(
        Strict::new(
            RedisCache::new(conn),
            fault_ctx(Component::Cache, Mode::StrictDistributed, &events),
        )
        .unwrap(),
        fault_ns("paused", "faults"),
    );
    cache.set("k", b"v", Duration::from_secs(60)).await.unwrap();

    server.pause().unwrap();
    for round in 0..3 {
        every_call_fails_within_the_deadline(&cache, round).await;
    }
    // Many concurrent calls: none outlives its deadline.
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let c = cache.clone();
            tokio::spawn(async move { timed(c.get(&format!("c{i}"))).await })
        })
        .collect();
    for t in calls {
        let (r, took) = t.await.unwrap();
        assert!(r.unwrap_err().is_unavailable());
        assert!(took <= DEADLINE + SLACK, "a call took {took:?} while paused");
    }
    assert!(matches!(
        next_event(&mut rx, Duration::from_secs(5)).await.kind,
        EventKind::UnavailableAtRuntime { .. }
    ));

    server.resume().unwrap();
    wait_until_served(&cache).await;
    assert_eq!(
        cache.get("k").await.unwrap().value.as_deref(),
        Some(&b"v"[..]),
        "the data survived the pause"
    );
    assert!(matches!(
        next_event(&mut rx, RECOVERY).await.kind,
        EventKind::Recovered { .. }
    ));
    no_event(&mut rx);
}

// ---- degraded ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degraded_down_at_startup_serves_locally_then_recovers_once() {
    let Some(mut server) = env::private_server("degraded_down_at_startup") else {
        return;
    };
    let cfg = fault_config(&server);
    server.kill();
    let events = Events::new(64);
    let mut rx = events.subscribe();

    // What the umbrella builder does in degraded mode: try, then start down.
    let err = RedisConnection::connect(&cfg).await.unwrap_err();
    let lazy = RedisConnection::connect_lazy(&cfg).unwrap();
    let failover = Failover::new(
        RedisCache::new(lazy),
        LocalCache::default(),
        fault_ctx(Component::Cache, Mode::ExplicitDegraded, &events),
        FailoverOptions::default(),
        Some(&err),
    )
    .unwrap();
    let cache = Cache::new(failover.clone(), fault_ns("startup", "faults"));
    let e = next_event(&mut rx, Duration::from_secs(1)).await;
    assert_eq!(e.kind, EventKind::UnavailableAtStartup);
    assert_eq!(e.error.as_ref().unwrap().kind, ErrorKind::Unavailable);

    assert_eq!(
        cache
            .set("local", b"degraded", Duration::from_secs(60))
            .await
            .unwrap()
            .provenance,
        Provenance::LocalDegraded
    );
    let got = cache.get("local").await.unwrap();
    assert_eq!(got.value.as_deref(), Some(&b"degraded"[..]));
    assert_eq!(got.provenance, Provenance::LocalDegraded);
    assert!(matches!(cache.stats().status.health, Health::Down { .. }));
    assert!(cache.stats().status.since.is_some());

    server.start_again().unwrap();
    let e = next_event(&mut rx, RECOVERY).await;
    let EventKind::Recovered {
        served_degraded,
        dropped_or_replayed,
        ..
    } = e.kind
    else {
        panic!("{e:?}")
    };
    assert!(served_degraded >= 2, "{served_degraded}");
    assert_eq!(
        dropped_or_replayed, 1,
        "the one entry written while degraded was dropped"
    );
    no_event(&mut rx);

    // Reads come from Redis again: a value written straight into Redis is seen.
    let key = cache.ns().key(palisade_cache_core::Contract::Cache, "direct").unwrap();
    assert_eq!(
        resp::command(&server.addr(), &["SET", key.as_str(), "from-redis"]).unwrap(),
        Reply::Simple("OK".into())
    );
    let got = cache.get("direct").await.unwrap();
    assert_eq!(
        (got.value.as_deref(), got.provenance),
        (Some(&b"from-redis"[..]), Provenance::Distributed)
    );
    let got = cache.get("local").await.unwrap();
    assert_eq!(
        (got.value, got.provenance),
        (None, Provenance::Distributed),
        "the degraded entry is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degraded_killed_at_runtime_one_degraded_tagged_answers_one_recovered() {
    let Some(mut server) = env::private_server("degraded_killed_at_runtime") else {
        return;
    };
    let events = Events::new(64);
    let mut rx = events.subscribe();
    let fallback_clock = ManualClock::new();
    let fallback = LocalCache::new(LocalCacheConfig::default().with_clock(fallback_clock.shared()));
    let conn = RedisConnection::connect(&fault_config(&server)).await.unwrap();
    let cap = Duration::from_secs(30);
    let failover = Failover::new(
        RedisCache::new(conn),
        fallback.clone(),
        fault_ctx(Component::Cache, Mode::ExplicitDegraded, &events),
        FailoverOptions::default().with_degraded_ttl_cap(cap),
        None,
    )
    .unwrap();
    let cache = Cache::new(failover, fault_ns("killed", "faults"));
    cache.set("shared", b"redis", Duration::from_secs(600)).await.unwrap();
    assert_eq!(cache.get("shared").await.unwrap().provenance, Provenance::Distributed);

    server.kill();
    // A burst of concurrent calls: each is answered (by the fallback), in time.
    let calls: Vec<_> = (0..40)
        .map(|i| {
            let c = cache.clone();
            tokio::spawn(async move { timed(c.get(&format!("burst{i}"))).await })
        })
        .collect();
    for t in calls {
        let (r, took) = t.await.unwrap();
        let got = r.unwrap();
        assert_eq!((got.value, got.provenance), (None, Provenance::LocalDegraded));
        assert!(took <= DEADLINE + SLACK, "{took:?}");
    }
    let e = next_event(&mut rx, Duration::from_secs(1)).await;
    assert_eq!(e.kind, EventKind::Degraded);
    assert_eq!(e.component, Component::Cache);
    assert_eq!(
        e.tenant.as_deref(),
        Some("tenant-a"),
        "the outage names the tenant whose call found it"
    );
    no_event(&mut rx);

    // Later calls go straight to the fallback: fast, and tagged.
    let (r, took) = timed(cache.set("written-degraded", b"local", Duration::from_secs(3600))).await;
    assert_eq!(r.unwrap().provenance, Provenance::LocalDegraded);
    assert!(
        took < DEADLINE,
        "a degraded call does not wait for the dead primary: {took:?}"
    );
    let got = cache.get("written-degraded").await.unwrap();
    assert_eq!(
        (got.value.as_deref(), got.provenance),
        (Some(&b"local"[..]), Provenance::LocalDegraded)
    );
    assert_eq!(
        cache.get("shared").await.unwrap().value,
        None,
        "the fallback holds no copy of shared state"
    );
    // The TTL was capped: past the cap (on the fallback's clock) the entry is gone.
    fallback_clock.advance(cap);
    assert_eq!(cache.get("written-degraded").await.unwrap().value, None);
    cache
        .set("written-degraded", b"again", Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(
        cache
            .set_if_absent("nx", b"1", Duration::from_secs(60))
            .await
            .unwrap()
            .value
    );
    let s = cache.stats();
    assert!(s.degraded_reads >= 43 && s.degraded_writes >= 3, "{s:?}");
    assert!(matches!(s.status.health, Health::Down { .. }) && s.status.mode == Mode::ExplicitDegraded);

    server.start_again().unwrap();
    let e = next_event(&mut rx, RECOVERY).await;
    let EventKind::Recovered {
        outage,
        served_degraded,
        dropped_or_replayed,
    } = e.kind
    else {
        panic!("{e:?}")
    };
    assert!(outage > Duration::ZERO);
    assert!(served_degraded >= 46, "{served_degraded}");
    assert_eq!(dropped_or_replayed, 2, "written-degraded and nx were dropped");
    no_event(&mut rx);
    assert!(fallback.is_empty(), "the fallback was emptied");

    let got = cache.get("written-degraded").await.unwrap();
    assert_eq!(
        (got.value, got.provenance),
        (None, Provenance::Distributed),
        "degraded writes are not visible"
    );
    assert_eq!(cache.stats().status.health, Health::Healthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degraded_survives_a_second_outage_with_its_own_events_and_no_old_entries() {
    let Some(mut server) = env::private_server("degraded_second_outage") else {
        return;
    };
    let events = Events::new(64);
    let mut rx = events.subscribe();
    let cache = degraded_cache(&server, &events, "second").await;
    for outage in 1..=2u32 {
        server.kill();
        let got = cache.get("k").await.unwrap();
        assert_eq!(
            (got.value, got.provenance),
            (None, Provenance::LocalDegraded),
            "outage {outage}: nothing from before"
        );
        cache
            .set("k", format!("outage{outage}").as_bytes(), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            next_event(&mut rx, Duration::from_secs(2)).await.kind,
            EventKind::Degraded
        );
        server.start_again().unwrap();
        assert!(matches!(
            next_event(&mut rx, RECOVERY).await.kind,
            EventKind::Recovered {
                dropped_or_replayed: 1,
                ..
            }
        ));
        no_event(&mut rx);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_value_that_does_not_decode_is_a_codec_error_with_no_mode_change_and_no_event() {
    let Some(server) = env::private_server("codec_no_event") else {
        return;
    };
    let events = Events::new(64);
    let mut rx = events.subscribe();
    let cache = degraded_cache(&server, &events, "codec").await;
    let key = cache.ns().key(palisade_cache_core::Contract::Cache, "bad").unwrap();
    resp::command(
        &server.addr(),
        &[b"SET".as_slice(), key.as_bytes(), b"\xa1\x07\x00garbage"],
    )
    .unwrap();
    for _ in 0..5 {
        let e = cache.get_typed::<String>("bad").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Codec);
    }
    // A server-side error reply (WRONGTYPE) is not an outage either.
    let list_key = cache.ns().key(palisade_cache_core::Contract::Cache, "list").unwrap();
    resp::command(&server.addr(), &["LPUSH", list_key.as_str(), "x"]).unwrap();
    let e = cache.get("list").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Backend, "{e:?}");
    assert!(!e.is_unavailable());
    assert_eq!(cache.stats().status.health, Health::Healthy);
    no_event(&mut rx);
    assert_eq!(cache.get("other").await.unwrap().provenance, Provenance::Distributed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_before_any_io_even_with_redis_down() {
    let Some(mut server) = env::private_server("bad_input_before_io") else {
        return;
    };
    let conn = RedisConnection::connect(&fault_config(&server)).await.unwrap();
    let cache = Cache::new(RedisCache::new(conn), fault_ns("bad", "faults"));
    server.kill();
    // Were any of these sent, they would fail as unavailable after the deadline.
    for (r, took) in [timed(cache.get("")).await, timed(cache.get(&"k".repeat(5000))).await] {
        assert_eq!(r.unwrap_err().kind(), ErrorKind::InvalidInput);
        assert!(took < Duration::from_millis(50), "{took:?}");
    }
    let (r, took) = timed(cache.set("k", &vec![0u8; 2 * 1024 * 1024], Duration::from_secs(1))).await;
    assert_eq!(r.unwrap_err().kind(), ErrorKind::InvalidInput);
    assert!(took < Duration::from_millis(50), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_in_errors_from_a_real_connection_failure() {
    let Some(mut server) = env::private_server("no_password_in_errors") else {
        return;
    };
    let port = server.port();
    server.kill();
    let cfg = RedisConfig::from_url(&format!("redis://admin:Sup3r-S3cret@127.0.0.1:{port}"))
        .expect("a valid Redis URL")
        .with_connect_timeout(Duration::from_millis(500));
    assert!(!format!("{cfg:?}").contains("Sup3r-S3cret"));
    let e = RedisConnection::connect(&cfg).await.unwrap_err();
    for printed in [e.to_string(), format!("{e:?}"), e.chain()] {
        assert!(!printed.contains("Sup3r-S3cret"), "leaked: {printed}");
        assert!(
            printed.contains(&port.to_string()) || printed.contains("Unavailable"),
            "{printed}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_in_flight_when_the_connection_drops_is_not_sent_again() {
    use palisade_cache_redis::fred::prelude::*;
    use palisade_redis_server::resp::Conn;
    let Some(server) = env::private_server("not_sent_again") else {
        return;
    };
    let conn = RedisConnection::connect(&fault_config(&server)).await.unwrap();
    let key = format!("{}:append", env::unique_prefix("not_sent_again"));
    let mut side = Conn::connect(&server.addr(), Duration::from_secs(2)).unwrap();
    // The server holds write commands: the APPEND below is read but not executed.
    assert_eq!(
        side.command(&["CLIENT", "PAUSE", "2000", "WRITE"]).unwrap(),
        Reply::Simple("OK".into())
    );
    let call = {
        let (conn, key) = (conn.clone(), key.clone());
        tokio::spawn(async move {
            conn.run(
                "append",
                conn.client_for("").unwrap().append::<i64, _, _>(key.as_str(), "x"),
            )
            .await
        })
    };
    let give_up = Instant::now() + Duration::from_secs(5);
    loop {
        let list = side.command(&["CLIENT", "LIST"]).unwrap().text().unwrap();
        if list.contains("cmd=append") {
            break;
        }
        assert!(Instant::now() < give_up, "the APPEND never reached the server: {list}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Cut the connection under the in-flight command. fred reconnects at once; had it
    // kept the command for another attempt, it would send it again on the new
    // connection, where it runs when the pause ends.
    let killed = side
        .command(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"])
        .unwrap();
    assert_eq!(killed, Reply::Int(1), "exactly palisade's connection was killed");
    assert!(
        call.await.unwrap().unwrap_err().is_unavailable(),
        "the caller learns the command may not have run"
    );
    // Give a would-be retry time to reach the server through the new connection.
    let give_up = Instant::now() + RECOVERY;
    while conn.client_for("").unwrap().state() != ClientState::Connected {
        assert!(Instant::now() < give_up, "never reconnected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let list = side.command(&["CLIENT", "LIST"]).unwrap().text().unwrap();
    side.command(&["CLIENT", "UNPAUSE"]).unwrap();
    // A PING answered on palisade's connection comes after anything queued on it before
    // (Redis runs one client's commands in order), a re-sent APPEND included. fred may
    // refuse a call in the moment it settles the new connection ("Failed to route
    // command", seen once in CI): retried until the deadline.
    let give_up = Instant::now() + RECOVERY;
    while let Err(e) = conn
        .run("ping", conn.client_for("").unwrap().ping::<String>(None))
        .await
    {
        assert!(Instant::now() < give_up, "the connection never answered again: {e}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Read on the side connection, so the check does not depend on fred at all.
    let stored = side.command(&["GET", key.as_str()]).unwrap();
    assert_eq!(
        stored,
        Reply::Nil,
        "the APPEND was re-sent after the reconnect; clients: {list}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_answers_garbage_is_unavailable_at_startup_and_at_runtime_within_the_deadlines() {
    let peer = NotRedis::start().unwrap();
    let cfg = RedisConfig::from_url(&peer.url())
        .expect("a valid Redis URL")
        .with_command_timeout(DEADLINE)
        .with_connect_timeout(Duration::from_millis(800));
    // Strict startup fails at once, naming the endpoint, with an outage error.
    let (r, took) = timed(RedisConnection::connect(&cfg)).await;
    let e = r.unwrap_err();
    assert!(e.is_unavailable(), "a peer that is not Redis is no store: {e:?}");
    assert!(took <= cfg.connect_timeout + SLACK, "connect took {took:?}");
    assert!(
        e.to_string().contains(&format!("127.0.0.1:{}", peer.port())),
        "names the endpoint: {e}"
    );
    // Degraded startup connects lazily; every call is then an outage error within the
    // deadline — never a panic, a hang or a value made of garbage.
    let cache = Cache::new(
        RedisCache::new(RedisConnection::connect_lazy(&cfg).unwrap()),
        fault_ns("garbage", "faults"),
    );
    for _ in 0..3 {
        let (r, took) = timed(cache.get("k")).await;
        let e = r.unwrap_err();
        assert!(e.is_unavailable(), "{e:?}");
        assert!(took <= DEADLINE + SLACK, "a call took {took:?}");
    }
}
