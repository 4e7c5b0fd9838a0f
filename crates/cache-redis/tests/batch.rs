//! Natural batching of rate decisions and job updates, against a private redis-server
//! that is paused so that calls really queue behind the ones in flight: queued calls go
//! in batches, each deciding (or applying) alone (a bad one fails alone, as it would
//! alone); an outage fails the queue unsent; a queued caller that gives up is never
//! sent. On a Cluster the same hold per hash slot: a paused master queues only the
//! calls on its own slots, while the other masters' are answered meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{RECOVERY, SLACK, fault_config, fault_ns};

use std::time::{Duration, Instant};

use fred::prelude::*;
use palisade_cache_core::ErrorKind;
use palisade_cache_redis::{
    BACKSTOP, BatchStats, IN_FLIGHT, RedisConfig, RedisConnection, RedisJobStore, RedisThrottle, fred, slot_of,
};
use palisade_job_store::{JobRecord, JobStore, Patch};
use palisade_redis_server::env;
use palisade_redis_server::server::{RedisCluster, RedisServer};
use palisade_throttle::{Rate, RateDecision, RateLimiter};

const HOUR: Duration = Duration::from_secs(3600);

/// A rate limiter over `config` (standalone or Cluster) under the command deadline
/// `deadline`.
async fn limiter(config: RedisConfig, deadline: Duration, ns: &str) -> (RedisThrottle, RateLimiter<RedisThrottle>) {
    let config = config.with_command_timeout(deadline);
    let conn = RedisConnection::connect(&config).await.unwrap();
    let throttle = RedisThrottle::new(conn).await.unwrap().with_restart_hold(false);
    let r = RateLimiter::new(throttle.clone(), fault_ns("batch", ns));
    (throttle, r)
}

/// Waits (deadline-bound) until `in_flight` calls are in flight and `queued` wait, as
/// `stats` (a batcher's [`BatchStats`]) tells.
async fn until(stats: &impl Fn() -> BatchStats, in_flight: usize, queued: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = stats();
        if (s.in_flight, s.queued) == (in_flight, queued) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never {in_flight} in flight, {queued} queued: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// [`IN_FLIGHT`] calls in flight to a paused node, then `queued` more behind them, as
/// `spawn` starts call number n (0 first): all of them, once `stats` shows each where
/// it should be.
async fn held_and_queued<T>(
    stats: impl Fn() -> BatchStats,
    queued: usize,
    mut spawn: impl FnMut(usize) -> tokio::task::JoinHandle<T>,
) -> Vec<tokio::task::JoinHandle<T>> {
    let mut calls: Vec<_> = (0..IN_FLIGHT).map(&mut spawn).collect();
    until(&stats, IN_FLIGHT, 0).await;
    calls.extend((IN_FLIGHT..IN_FLIGHT + queued).map(&mut spawn));
    until(&stats, IN_FLIGHT, queued).await;
    calls
}

/// A spawned call: its key, its answer and how long it took.
type Call<K, T> = tokio::task::JoinHandle<(K, Result<T, palisade_cache_core::Error>, Duration)>;

/// Every call of `calls` fails as unavailable within `deadline` plus the backstop.
async fn all_unavailable_within<K, T: std::fmt::Debug>(calls: Vec<Call<K, T>>, deadline: Duration) {
    for call in calls {
        let (_, result, took) = call.await.unwrap();
        let e = result.unwrap_err();
        assert!(e.is_unavailable(), "{e:?}");
        assert!(took <= deadline + BACKSTOP + SLACK, "{took:?}");
    }
}

/// Nothing in flight or queued any more, after `batches` batches of `calls` calls.
fn assert_drained(stats: BatchStats, batches: u64, calls: u64) {
    assert_eq!(
        (stats.batches, stats.batched_calls, stats.in_flight, stats.queued),
        (batches, calls, 0, 0),
        "{stats:?}"
    );
}

/// One `limit` of `key`, spawned.
fn spawn_limit(r: &RateLimiter<RedisThrottle>, key: &'static str, rate: Rate) -> Call<&'static str, RateDecision> {
    let r = r.clone();
    tokio::spawn(async move {
        let start = Instant::now();
        let d = r.limit(key, &rate).await.map(|t| t.value);
        (key, d, start.elapsed())
    })
}

/// `call`'s answer once the server answers again after an outage.
///
/// After an outage fred settles a new connection and refuses calls until it has
/// ("Failed to route command", seen in CI right after a resume): an error `retry`
/// accepts is retried until [`RECOVERY`]; any other error fails the test.
async fn after_recovery<T, E: std::fmt::Debug, Fut: Future<Output = Result<T, E>>>(
    mut call: impl FnMut() -> Fut,
    retry: impl Fn(&E) -> bool,
) -> T {
    let give_up = Instant::now() + RECOVERY;
    loop {
        match call().await {
            Ok(v) => return v,
            Err(e) if retry(&e) && Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the server never answered again: {e:?}"),
        }
    }
}

/// What is left of `key`'s allowance, read with a decision that consumes nothing
/// (retried while unavailable, see [`after_recovery`]).
async fn left(r: &RateLimiter<RedisThrottle>, key: &str, rate: &Rate) -> u32 {
    let d = after_recovery(|| r.peek(key, rate), palisade_cache_core::Error::is_unavailable).await;
    match d.value {
        RateDecision::Allowed { remaining, .. } => remaining + 1,
        RateDecision::Limited { .. } => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_decisions_go_in_batches_and_each_decides_alone() {
    let Some(server) = env::private_server("batch_each_alone") else {
        return;
    };
    let (throttle, r) = limiter(fault_config(&server), Duration::from_secs(5), "each").await;
    // A key of another type where one caller's rate key is: that call must fail alone.
    let bad = r.scope().rate_key("bad").unwrap();
    let client = throttle.connection().client_for(&bad).unwrap();
    let _: i64 = client.hset(&bad, ("field", "value")).await.unwrap();
    let rate = Rate::per(1, HOUR).burst(30).build().unwrap();
    server.pause().unwrap();
    // Calls in flight to the paused server, then a hundred behind them, one bad.
    let calls = held_and_queued(
        || throttle.batch_stats(),
        100,
        |n| spawn_limit(&r, if n == IN_FLIGHT + 50 { "bad" } else { "k" }, rate),
    )
    .await;
    server.resume().unwrap();
    let mut remaining = Vec::new();
    let mut limited = 0;
    for call in calls {
        match call.await.unwrap() {
            ("bad", Err(e), _) => assert_eq!(e.kind(), ErrorKind::Backend, "{e:?}"),
            ("bad", Ok(d), _) => panic!("a key of another type was decided: {d:?}"),
            (_, Ok(RateDecision::Allowed { remaining: n, .. }), _) => remaining.push(n),
            (_, Ok(_), _) => limited += 1,
            (_, Err(e), _) => panic!("a good call failed beside a bad one: {e:?}"),
        }
    }
    remaining.sort_unstable();
    assert_eq!(remaining, (0..30).collect::<Vec<u32>>(), "each decision alone, in turn");
    assert_eq!(limited, IN_FLIGHT + 99 - 30);
    // 100 queued calls: a batch of MAX_BATCH (64), then one of 36.
    assert_drained(throttle.batch_stats(), 2, 100);
    // The failed call wrote nothing.
    let fields: std::collections::HashMap<String, String> = client.hgetall(&bad).await.unwrap();
    assert_eq!(fields.len(), 1, "{fields:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_fails_the_queued_decisions_unsent() {
    let Some(server) = env::private_server("batch_outage") else {
        return;
    };
    let deadline = Duration::from_secs(2);
    let (throttle, r) = limiter(fault_config(&server), deadline, "outage").await;
    let rate = Rate::per(1, HOUR).burst(100).build().unwrap();
    server.pause().unwrap();
    let calls = held_and_queued(|| throttle.batch_stats(), 19, |_| spawn_limit(&r, "k", rate)).await;
    all_unavailable_within(calls, deadline).await;
    server.resume().unwrap();
    // The calls in flight reached the server and may have run once it resumed; none
    // of the nineteen queued behind them was sent.
    let left = left(&r, "k", &rate).await as usize;
    assert!(
        (100 - IN_FLIGHT..=100).contains(&left),
        "{left} left of 100: queued calls were sent"
    );
    assert_eq!(throttle.batch_stats().batches, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_caller_that_gives_up_is_never_sent() {
    let Some(server) = env::private_server("batch_gives_up") else {
        return;
    };
    let (throttle, r) = limiter(fault_config(&server), Duration::from_secs(5), "gives-up").await;
    let rate = Rate::per(1, HOUR).burst(100).build().unwrap();
    server.pause().unwrap();
    let mut first = held_and_queued(|| throttle.batch_stats(), 9, |_| spawn_limit(&r, "k", rate)).await;
    let queued = first.split_off(IN_FLIGHT);
    // The nine queued callers give up (their futures are dropped).
    for call in &queued {
        call.abort();
    }
    for call in queued {
        assert!(call.await.unwrap_err().is_cancelled());
    }
    until(&|| throttle.batch_stats(), IN_FLIGHT, 0).await;
    server.resume().unwrap();
    for call in first {
        let (_, d, _) = call.await.unwrap();
        assert!(matches!(d, Ok(RateDecision::Allowed { .. })), "{d:?}");
    }
    let left = left(&r, "k", &rate).await as usize;
    assert_eq!(left, 100 - IN_FLIGHT, "abandoned calls were sent");
    assert_eq!(throttle.batch_stats().batches, 0);
}

// ---- on a Cluster: lanes per hash slot ------------------------------------------------

/// A cluster of three masters without replicas whose nodes flag a silent peer failed
/// only after a minute: a master paused for a test stays the owner of its slots.
fn batch_cluster(test: &str) -> Option<RedisCluster> {
    env::private_cluster(test, 3, 0, Duration::from_secs(60))
}

/// The cluster configuration of `c`.
fn cluster_config(c: &RedisCluster) -> RedisConfig {
    let seeds: Vec<String> = c.nodes().iter().map(RedisServer::addr).collect();
    RedisConfig::cluster(&seeds).unwrap()
}

/// A user key of `r` whose rate key lives on master `m` (0, 1, 2) of a fresh cluster
/// (the slots are split evenly, master 0 first).
fn key_on(r: &RateLimiter<RedisThrottle>, m: usize) -> &'static str {
    (0..)
        .map(|i| format!("k{i}"))
        .find(|k| RedisCluster::first_owner(3, slot_of(&r.scope().rate_key(k).unwrap())) == m)
        .map(|k| &*Box::leak(k.into_boxed_str()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_paused_master_queues_only_its_own_slots() {
    let Some(c) = batch_cluster("batch_cluster_paused") else {
        return;
    };
    let (throttle, r) = limiter(cluster_config(&c), Duration::from_secs(10), "cluster-paused").await;
    let (held, others) = (key_on(&r, 0), [key_on(&r, 1), key_on(&r, 2)]);
    let rate = Rate::per(1, HOUR).burst(50).build().unwrap();
    c.nodes()[0].pause().unwrap();
    let calls = held_and_queued(|| throttle.batch_stats(), 30, |_| spawn_limit(&r, held, rate)).await;
    // The other masters' keys are decided while master 0 is still paused: nothing of
    // theirs waits in its lane (had they queued there, they would fail at the deadline).
    for key in others {
        for remaining in [49, 48] {
            let d = r.limit(key, &rate).await.unwrap().value;
            assert_eq!(d.remaining(), remaining, "{key} on another master: {d:?}");
        }
    }
    let stats = throttle.batch_stats();
    assert_eq!(
        (stats.in_flight, stats.queued),
        (IN_FLIGHT, 30),
        "only master 0's calls are still held"
    );
    c.nodes()[0].resume().unwrap();
    let mut remaining = Vec::new();
    for call in calls {
        let (_, d, _) = call.await.unwrap();
        match d {
            Ok(RateDecision::Allowed { remaining: n, .. }) => remaining.push(n),
            other => panic!("a held call did not pass once its master resumed: {other:?}"),
        }
    }
    remaining.sort_unstable();
    let expected: Vec<u32> = (50 - 32..50).collect();
    assert_eq!(remaining, expected, "each decision alone, in turn");
    // The thirty queued calls go as one batch when the first call in flight returns.
    assert_drained(throttle.batch_stats(), 1, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_master_that_times_out_fails_its_queue_unsent_and_only_its_queue() {
    let Some(c) = batch_cluster("batch_cluster_outage") else {
        return;
    };
    let deadline = Duration::from_secs(2);
    let (throttle, r) = limiter(cluster_config(&c), deadline, "cluster-outage").await;
    let (held, other) = (key_on(&r, 0), key_on(&r, 1));
    let rate = Rate::per(1, HOUR).burst(100).build().unwrap();
    c.nodes()[0].pause().unwrap();
    let calls = held_and_queued(|| throttle.batch_stats(), 19, |_| spawn_limit(&r, held, rate)).await;
    all_unavailable_within(calls, deadline).await;
    // Master 0 is still paused: another master's key is decided as ever.
    let d = r.limit(other, &rate).await.unwrap().value;
    assert_eq!(d.remaining(), 99, "{d:?}");
    c.nodes()[0].resume().unwrap();
    // The calls in flight reached the server and may have run once it resumed; none
    // of the nineteen queued behind them was sent.
    let left = left(&r, held, &rate).await as usize;
    assert!(
        (100 - IN_FLIGHT..=100).contains(&left),
        "{left} left of 100: queued calls were sent"
    );
    assert_eq!(throttle.batch_stats().batches, 0);
}

/// A job store on `server` under the command deadline `deadline`.
async fn jobs(server: &RedisServer, deadline: Duration, ns: &str) -> (RedisJobStore, JobStore<RedisJobStore>) {
    let config = fault_config(server).with_command_timeout(deadline);
    let conn = RedisConnection::connect(&config).await.unwrap();
    let store = RedisJobStore::new(conn).await.unwrap();
    (store.clone(), JobStore::new(store, fault_ns("batch", ns)))
}

/// One update of `id` setting the field `f<n>` to `n`, spawned.
fn spawn_update(s: &JobStore<RedisJobStore>, id: &'static str, n: usize) -> Call<&'static str, bool> {
    let s = s.clone();
    tokio::spawn(async move {
        let start = Instant::now();
        let r = s.update(id, &Patch::new().field(format!("f{n}"), n.to_string())).await;
        (id, r.map(|t| t.value), start.elapsed())
    })
}

/// The stored `version` of `id`'s record (retried, see [`after_recovery`]).
async fn version(store: &RedisJobStore, s: &JobStore<RedisJobStore>, id: &str) -> u64 {
    let key = s.key(id).unwrap();
    let client = store.connection().client_for(&key).unwrap();
    let v = after_recovery(|| client.hget::<Option<String>, _, _>(&key, "version"), |_| true).await;
    v.expect("a version").parse().unwrap()
}

/// A call of a batch sees its own arguments only: after a call with three fields, one
/// with a single field (the envelope reuses its argument table) writes that field
/// alone, not the earlier call's other two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_of_a_batch_sees_only_its_own_arguments() {
    let Some(server) = env::private_server("batch_own_arguments") else {
        return;
    };
    let (store, s) = jobs(&server, Duration::from_secs(5), "own-args").await;
    for id in ["r", "wide", "narrow"] {
        s.create(id, &JobRecord::queued(), HOUR).await.unwrap();
    }
    server.pause().unwrap();
    let mut calls: Vec<_> = (0..IN_FLIGHT).map(|n| spawn_update(&s, "r", n)).collect();
    until(&|| store.batch_stats(), IN_FLIGHT, 0).await;
    let update = |id: &'static str, patch: Patch| {
        let s = s.clone();
        tokio::spawn(async move { s.update(id, &patch).await.map(|t| t.value) })
    };
    let wide = update("wide", Patch::new().field("x", "1").field("y", "2").field("z", "3"));
    until(&|| store.batch_stats(), IN_FLIGHT, 1).await;
    let narrow = update("narrow", Patch::new().field("x", "9"));
    until(&|| store.batch_stats(), IN_FLIGHT, 2).await;
    server.resume().unwrap();
    for call in calls.drain(..) {
        assert!(matches!(call.await.unwrap().1, Ok(true)));
    }
    assert!(matches!(wide.await.unwrap(), Ok(true)));
    assert!(matches!(narrow.await.unwrap(), Ok(true)));
    let field = |r: &JobRecord, f: &str| r.field(f).map(|b| b.to_vec());
    let w = s.get("wide").await.unwrap().value.unwrap();
    let n = s.get("narrow").await.unwrap().value.unwrap();
    assert_eq!(
        [field(&w, "x"), field(&w, "y"), field(&w, "z")],
        [Some(b"1".to_vec()), Some(b"2".to_vec()), Some(b"3".to_vec())]
    );
    assert_eq!(
        [field(&n, "x"), field(&n, "y"), field(&n, "z")],
        [Some(b"9".to_vec()), None, None],
        "the single-field update wrote the earlier call's fields"
    );
    assert_eq!(store.batch_stats().batches, 1, "the two updates went as one batch");
}

/// `new` loads every script its backend runs, the batched forms included: the first
/// batch pays no `NOSCRIPT` round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_loads_the_batched_forms_too() {
    let Some(server) = env::private_server("batch_new_loads") else {
        return;
    };
    let conn = RedisConnection::connect(&fault_config(&server)).await.unwrap();
    RedisThrottle::new(conn.clone()).await.unwrap();
    RedisJobStore::new(conn.clone()).await.unwrap();
    let client = conn.client_for("any").unwrap();
    for (b, _) in palisade_cache_redis::batched_scripts() {
        for script in [&b.one, &b.many] {
            let loaded: Vec<bool> = client.script_exists(script.sha1()).await.unwrap();
            assert_eq!(loaded, [true], "{} is not loaded by new", script.name());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_updates_go_in_batches_and_each_applies_alone() {
    let Some(server) = env::private_server("batch_updates_each_alone") else {
        return;
    };
    let (store, s) = jobs(&server, Duration::from_secs(5), "updates").await;
    s.create("r", &JobRecord::queued(), HOUR).await.unwrap();
    // A key of another type where one update's record is: that update must fail alone.
    let bad = s.key("bad").unwrap();
    let client = store.connection().client_for(&bad).unwrap();
    let _: () = client.set(&bad, "not a record", None, None, false).await.unwrap();
    let alone = s.update("bad", &Patch::new().progress(1)).await.unwrap_err();
    server.pause().unwrap();
    // Of the hundred queued behind the calls in flight, one bad, one missing.
    let id = |n: usize| match n.checked_sub(IN_FLIGHT) {
        Some(50) => "bad",
        Some(60) => "missing",
        _ => "r",
    };
    let calls = held_and_queued(|| store.batch_stats(), 100, |n| spawn_update(&s, id(n), n)).await;
    server.resume().unwrap();
    for call in calls {
        match call.await.unwrap() {
            ("bad", Err(e), _) => assert_eq!(
                (e.kind(), e.to_string()),
                (alone.kind(), alone.to_string()),
                "a batched call fails as it would alone"
            ),
            ("bad", Ok(applied), _) => panic!("a key of another type was updated: {applied}"),
            ("missing", r, _) => assert!(matches!(r, Ok(false)), "{r:?}"),
            (_, r, _) => assert!(matches!(r, Ok(true)), "a good update failed beside a bad one: {r:?}"),
        }
    }
    // Created at version 1, then each of the IN_FLIGHT + 98 updates of `r` once.
    assert_eq!(version(&store, &s, "r").await, 1 + IN_FLIGHT as u64 + 98);
    let record = s.get("r").await.unwrap().value.unwrap();
    for n in (0..IN_FLIGHT + 100).filter(|&n| id(n) == "r") {
        assert_eq!(
            record.field(&format!("f{n}")).map(|b| b.to_vec()),
            Some(n.to_string().into_bytes()),
            "f{n}"
        );
    }
    assert!(
        s.get("missing").await.unwrap().value.is_none(),
        "a missing record was resurrected"
    );
    let stored: String = client.get(&bad).await.unwrap();
    assert_eq!(stored, "not a record", "the failed update wrote nothing");
    assert_drained(store.batch_stats(), 2, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_fails_the_queued_updates_unsent() {
    let Some(server) = env::private_server("batch_updates_outage") else {
        return;
    };
    let deadline = Duration::from_secs(2);
    let (store, s) = jobs(&server, deadline, "updates-outage").await;
    s.create("r", &JobRecord::queued(), HOUR).await.unwrap();
    server.pause().unwrap();
    let calls = held_and_queued(|| store.batch_stats(), 19, |n| spawn_update(&s, "r", n)).await;
    all_unavailable_within(calls, deadline).await;
    server.resume().unwrap();
    // The updates in flight reached the server and may have run once it resumed; none
    // of the nineteen queued behind them was sent.
    let v = version(&store, &s, "r").await;
    assert!(v <= 1 + IN_FLIGHT as u64, "version {v}: queued updates were sent");
    assert_eq!(store.batch_stats().batches, 0);
}
