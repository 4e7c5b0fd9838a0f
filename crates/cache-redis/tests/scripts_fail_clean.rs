//! Every Lua script, run directly with random arguments (valid and not) over random
//! stored state (absent keys, the right type with sane or garbage fields, another
//! type): whenever the script answers with an error, every key it was given is byte
//! for byte what it was before (`DUMP`) and expires when it did (`PEXPIRETIME`).
//! Redis does not roll a script back; this is the test that the checks come first.
//! On a standalone server and on a cluster (the keys of one case share a hash tag).
//! The batched forms (see `batch.rs`) the same way, per call: a call of a batch that
//! answers an error has left its own keys as they were. And the throttle's nine-key
//! scripts over a namespace really in use (a lease held, a waiter queued) with each
//! of its keys in turn of another type: state random draws rarely build.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use fred::prelude::*;
use palisade_cache_redis::fred;
use palisade_cache_redis::{Batched, LuaScript, RedisConnection};
use palisade_redis_server::env;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// What a key holds before the call.
#[derive(Debug, Clone)]
enum State {
    Absent,
    Text(String),
    Hash(Vec<(String, String)>),
    Zset(Vec<(f64, String)>),
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1".to_owned()),
        Just("0".to_owned()),
        Just("-1".to_owned()),
        Just("1.5".to_owned()),
        Just("999999999999999999999".to_owned()),
        Just("315360000001".to_owned()),
        Just("86400000000".to_owned()),
        Just("queued".to_owned()),
        Just("running".to_owned()),
        Just("completed".to_owned()),
        Just("abc".to_owned()),
        Just(String::new()),
        (0u64..5_000_000).prop_map(|n| n.to_string()),
        "[a-z_:]{1,8}",
    ]
}

fn state() -> impl Strategy<Value = State> {
    let field = (
        prop_oneof![
            Just("ttl_ms".to_owned()),
            Just("status".to_owned()),
            Just("pen".to_owned()),
            Just("last".to_owned()),
            "[a-z:]{1,6}",
        ],
        word(),
    );
    prop_oneof![
        3 => Just(State::Absent),
        1 => word().prop_map(State::Text),
        3 => prop::collection::vec(field, 0..5).prop_map(State::Hash),
        2 => prop::collection::vec((0.0f64..4e15, "[0-9]{1,6}"), 0..4).prop_map(State::Zset),
    ]
}

/// The states of a call's `n` keys: random each, or a fresh start (every key absent),
/// or a fresh start but for one key. A script over many keys (the acquisition's nine)
/// thus also meets state it accepts and runs, and a check it lacks on any one key
/// shows (that key of another type, every other as the script would find it).
fn states(n: usize) -> impl Strategy<Value = Vec<State>> {
    let one_off = (0..n, state()).prop_map(move |(i, s)| {
        let mut v = vec![State::Absent; n];
        v[i] = s;
        v
    });
    prop_oneof![
        2 => prop::collection::vec(state(), n),
        1 => Just(vec![State::Absent; n]),
        3 => one_off,
    ]
}

/// Most cases have arguments that are all plausible (integers a policy or a TTL
/// accepts, or small ones, as a flag or a cost), so that the scripts get past their
/// argument checks and reach the keys; some have nine, as many as a script takes.
fn args() -> impl Strategy<Value = Vec<String>> {
    let plausible = || (1_000u64..5_000_000).prop_map(|n| n.to_string());
    let small = prop::sample::select(vec!["0", "1", "2", "5", "100", "1000000"]).prop_map(str::to_owned);
    prop_oneof![
        1 => prop::collection::vec(word(), 0..9),
        1 => prop::collection::vec(plausible(), 0..9),
        2 => prop::collection::vec(plausible(), 9),
        1 => prop::collection::vec(small, 4..7),
    ]
}

async fn set_up(conn: &RedisConnection, key: &str, state: &State) {
    let c = conn.client_for(key).unwrap();
    let _: i64 = c.del(key).await.unwrap();
    match state {
        State::Absent => {}
        State::Text(v) => {
            let _: () = c
                .set(key, v.as_str(), Some(Expiration::PX(600_000)), None, false)
                .await
                .unwrap();
        }
        State::Hash(fields) if !fields.is_empty() => {
            let map: Vec<(String, String)> = fields.clone();
            let _: i64 = c.hset(key, map).await.unwrap();
            let _: bool = c.pexpire(key, 600_000, None).await.unwrap();
        }
        State::Hash(_) => {}
        State::Zset(members) if !members.is_empty() => {
            let values: Vec<(f64, String)> = members.clone();
            let _: i64 = c.zadd(key, None, None, false, false, values).await.unwrap();
            let _: bool = c.pexpire(key, 600_000, None).await.unwrap();
        }
        State::Zset(_) => {}
    }
}

/// What a key is, byte for byte, and when it expires.
async fn snapshot(conn: &RedisConnection, key: &str) -> (Option<Vec<u8>>, i64) {
    let c = conn.client_for(key).unwrap();
    let dump: Option<fred::bytes::Bytes> = c.dump(key).await.unwrap();
    let expiry: i64 = c.custom(fred::cmd!("PEXPIRETIME"), vec![key]).await.unwrap();
    (dump.map(|b| b.to_vec()), expiry)
}

async fn check(conn: &RedisConnection, tag: &str, script: &LuaScript, states: &[State], argv: &[String]) -> bool {
    let keys: Vec<String> = (0..states.len()).map(|i| format!("{{{tag}}}:k{i}")).collect();
    for (k, s) in keys.iter().zip(states) {
        set_up(conn, k, s).await;
    }
    let mut before = Vec::new();
    for k in &keys {
        before.push(snapshot(conn, k).await);
    }
    let args: Vec<Value> = argv.iter().map(|a| Value::from(a.as_str())).collect();
    let r = script.run_keys(conn, "test", keys.clone(), args).await;
    if r.is_ok() {
        return false;
    }
    for (k, b) in keys.iter().zip(&before) {
        let after = snapshot(conn, k).await;
        assert_eq!(
            &after,
            b,
            "{} failed ({:?}) but changed {k}: states {states:?}, args {argv:?}",
            script.name(),
            r.err()
        );
    }
    true
}

fn run(conn: RedisConnection, test: &str) {
    let rt = tokio::runtime::Handle::current();
    let tag = env::unique_prefix(test);
    for (script, n_keys) in palisade_cache_redis::all_scripts() {
        rt.block_on(script.load(&conn)).unwrap();
        // More cases for more keys: a missing check on one key of nine must show.
        let mut runner = TestRunner::new(Config {
            cases: 256.max(64 * n_keys as u32),
            failure_persistence: None,
            ..Config::default()
        });
        let (errors, ran) = (std::cell::Cell::new(0u32), std::cell::Cell::new(0u32));
        runner
            .run(&(states(n_keys), args()), |(states, argv)| {
                let failed = rt.block_on(check(&conn, &tag, script, &states, &argv));
                let count = if failed { &errors } else { &ran };
                count.set(count.get() + 1);
                Ok(())
            })
            .unwrap();
        // Every script can fail (bad arguments, a key of another type) and run: some
        // case must have done each, or nothing was proven.
        assert!(
            errors.get() > 0 && ran.get() > 0,
            "{}: {errors:?} failed, {ran:?} ran",
            script.name()
        );
    }
}

/// One batch of `calls` (each: the states of its keys, its arguments) through the
/// batched form of `script`, every call on keys of its own: each call that answers an
/// error has left its keys as they were; if the whole batch is refused, every key is.
/// Returns how many calls failed (all of them when the batch was refused).
async fn check_batch(
    conn: &RedisConnection,
    tag: &str,
    script: &Batched,
    calls: &[(Vec<State>, Vec<String>)],
    skew: i64,
) -> u32 {
    let keys: Vec<Vec<String>> = calls
        .iter()
        .enumerate()
        .map(|(c, (states, _))| (0..states.len()).map(|i| format!("{{{tag}}}:b{c}k{i}")).collect())
        .collect();
    let mut before = Vec::new();
    for (ks, (states, _)) in keys.iter().zip(calls) {
        let mut snaps = Vec::new();
        for (k, st) in ks.iter().zip(states) {
            set_up(conn, k, st).await;
            snaps.push(snapshot(conn, k).await);
        }
        before.push(snaps);
    }
    // The envelope's layout; `skew` corrupts one count so that the envelope itself
    // must refuse the batch before any call runs.
    let mut args: Vec<Value> = vec![Value::from(calls.len() as i64)];
    for (i, (states, argv)) in calls.iter().enumerate() {
        let extra = if i == 0 { skew } else { 0 };
        args.push(Value::from(states.len() as i64 + extra));
        args.push(Value::from(argv.len() as i64));
    }
    args.extend(
        calls
            .iter()
            .flat_map(|(_, argv)| argv.iter().map(|a| Value::from(a.as_str()))),
    );
    let all_keys: Vec<String> = keys.iter().flatten().cloned().collect();
    let r = script.many.run_keys(conn, "test", all_keys, args).await;
    let failed: Vec<bool> = match &r {
        Ok(Value::Array(items)) => {
            assert_eq!(skew, 0, "{}: a corrupt batch was run: {r:?}", script.many.name());
            let failed: Vec<bool> = palisade_cache_redis::batch::answers(items.clone(), calls.len())
                .unwrap_or_else(|| panic!("{}: a batch answered out of shape: {r:?}", script.many.name()))
                .iter()
                .map(Result::is_err)
                .collect();
            assert_eq!(failed.len(), calls.len(), "{}: {r:?}", script.many.name());
            failed
        }
        Ok(other) => panic!("{}: unexpected reply {other:?}", script.many.name()),
        Err(_) => vec![true; calls.len()],
    };
    for ((ks, snaps), failed) in keys.iter().zip(&before).zip(&failed) {
        if !failed {
            continue;
        }
        for (k, b) in ks.iter().zip(snaps) {
            assert_eq!(
                &snapshot(conn, k).await,
                b,
                "{}: a call of the batch failed ({r:?}) but changed {k}: {calls:?}",
                script.many.name()
            );
        }
    }
    failed.iter().filter(|f| **f).count() as u32
}

/// Every batched script: batches of one to four calls over random state and
/// arguments, one batch in eight with a corrupt envelope.
fn run_batched(conn: &RedisConnection, test: &str) {
    let rt = tokio::runtime::Handle::current();
    let tag = env::unique_prefix(&format!("{test}-batch"));
    for (script, n_keys) in palisade_cache_redis::batched_scripts() {
        rt.block_on(script.many.load(conn)).unwrap();
        let mut runner = TestRunner::new(Config {
            cases: 128,
            failure_persistence: None,
            ..Config::default()
        });
        let call = (states(n_keys), args());
        let batch = (
            prop::collection::vec(call, 1..5),
            prop_oneof![7 => Just(0i64), 1 => Just(1i64)],
        );
        let (errors, ran) = (std::cell::Cell::new(0u32), std::cell::Cell::new(0u32));
        runner
            .run(&batch, |(calls, skew)| {
                let failed = rt.block_on(check_batch(conn, &tag, script, &calls, skew));
                errors.set(errors.get() + failed);
                ran.set(ran.get() + calls.len() as u32 - failed);
                Ok(())
            })
            .unwrap();
        // Calls must both fail and run, or nothing was proven.
        assert!(
            errors.get() > 0 && ran.get() > 0,
            "{}: {errors:?} failed, {ran:?} ran",
            script.many.name()
        );
    }
}

#[test]
fn failed_scripts_change_nothing_on_a_server() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let Some(conn) = rt.block_on(common::standalone("scripts_fail_clean")) else {
        return;
    };
    run_batched(&conn, "scripts_fail_clean");
    run(conn, "scripts_fail_clean");
}

#[test]
fn failed_scripts_change_nothing_on_a_cluster() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let Some(conn) = rt.block_on(common::cluster("scripts_fail_clean_cluster")) else {
        return;
    };
    run_batched(&conn, "scripts_fail_clean_cluster");
    run(conn, "scripts_fail_clean_cluster");
}

/// One of the nine keys of a throttle namespace of another type (a string, a hash, a
/// list), every other as the scripts leave it in use: a lease held, with or without a
/// waiter queued on the key and on the global cap. Random state rarely builds a
/// namespace that live, and a type check a script lacks shows only there (a write
/// before the read that fails): the acquisition (not waiting, a queued waiter asking
/// again, a new waiter) and the release, each with every key of every wrong type in
/// turn.
async fn live_namespace(conn: &RedisConnection, test: &str) {
    let scripts = palisade_cache_redis::all_scripts();
    let named = |name: &str| scripts.iter().find(|(s, _)| s.name() == name).unwrap().0;
    let (acquire, release) = (named("throttle.acquire"), named("throttle.release"));
    for s in [acquire, release] {
        s.load(conn).await.unwrap();
    }
    let tag = env::unique_prefix(test);
    let keys: Vec<String> = (0..9).map(|i| format!("{{{tag}}}:k{i}")).collect();
    let wake = format!("{{{tag}}}:w:");
    let strs = |v: &[&str]| v.iter().map(|a| Value::from(*a)).collect::<Vec<_>>();
    // Global cap, key cap, interval, lease TTL, idle, restart hold, ticket, entry TTL,
    // wake prefix.
    let policy =
        |gcap: &str, ticket: &str| strs(&[gcap, "1", "0", "60000000", "600000000", "0", ticket, "60000000", &wake]);
    let run = |s: &'static LuaScript, args: Vec<Value>| s.run_keys(conn, "test", keys.clone(), args);
    let mut failed = 0;
    for wrong in ["string", "hash", "list"] {
        for k in 0..keys.len() {
            for (queued, call) in [true, false].into_iter().flat_map(|q| (0..4).map(move |c| (q, c))) {
                let c = conn.client_for(&keys[0]).unwrap();
                // Every key of the namespace, its waiters' wake-up keys too: each case
                // starts from nothing.
                let wakes = ["77", "77:p", "77:l", "99", "99:p", "99:l"].map(|t| format!("{wake}{t}"));
                let _: i64 = c
                    .del(keys.iter().cloned().chain(wakes).collect::<Vec<_>>())
                    .await
                    .unwrap();
                // In use: one lease held and, when `queued`, waiter 77 behind it (the
                // global cap of 1 is its first closed gate: it is in the global queue
                // too).
                let granted = run(acquire, policy("10", "0")).await.unwrap();
                let lease = match granted {
                    Value::Array(v) => v[1].as_i64().unwrap().to_string(),
                    other => panic!("no grant: {other:?}"),
                };
                if queued {
                    run(acquire, policy("1", "77")).await.unwrap();
                }
                let _: i64 = c.del(&keys[k]).await.unwrap();
                match wrong {
                    "string" => {
                        c.set::<(), _, _>(&keys[k], "x", Some(Expiration::PX(600_000)), None, false)
                            .await
                    }
                    "hash" => c.hset::<(), _, _>(&keys[k], ("x", "y")).await,
                    _ => c.rpush::<(), _, _>(&keys[k], "x").await,
                }
                .unwrap();
                let mut before = Vec::new();
                for key in &keys {
                    before.push(snapshot(conn, key).await);
                }
                let args = match call {
                    0 => policy("10", "0"),
                    1 => policy("10", "77"),
                    2 => policy("10", "99"),
                    _ => strs(&[&lease, &wake, "60000"]),
                };
                let script = if call < 3 { acquire } else { release };
                let Err(e) = run(script, args).await else { continue };
                failed += 1;
                for (key, b) in keys.iter().zip(&before) {
                    assert_eq!(
                        &snapshot(conn, key).await,
                        b,
                        "{} (call {call}, queued {queued}) failed ({e:?}) with key {k} a {wrong}, but changed {key}",
                        script.name()
                    );
                }
            }
        }
    }
    // Most of those keys are read as sorted sets or hashes: many calls must fail.
    assert!(failed > 40, "only {failed} calls failed");
}

#[test]
fn a_live_namespace_with_one_key_of_another_type_is_left_as_it_was() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    if let Some(conn) = rt.block_on(common::standalone("scripts_fail_clean_live")) {
        rt.block_on(live_namespace(&conn, "scripts_fail_clean_live"));
    }
    if let Some(conn) = rt.block_on(common::cluster("scripts_fail_clean_live_cluster")) {
        rt.block_on(live_namespace(&conn, "scripts_fail_clean_live_cluster"));
    }
}
