//! Stored state that palisade did not write (another tool, an old version, an operator's
//! mistake) gives typed errors or is treated as absent — never a panic, never an outage.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use palisade_cache_core::{ErrorKind, Namespace};
use palisade_cache_redis::{RedisConfig, RedisConnection, RedisJobStore, RedisThrottle};
use palisade_job_store::{JobStatus, JobStore, Outcome, Patch};
use palisade_redis_server::env;
use palisade_redis_server::resp::{self, Reply};
use palisade_throttle::{Decision, Policy, Rate, RateDecision, RateLimiter, Throttle};

fn raw(url: &str, args: &[&str]) -> Reply {
    resp::command(url.trim_start_matches("redis://"), args).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_throttle_state_is_a_typed_error_or_treated_as_absent() {
    let Some(url) = env::redis_url("garbage_throttle_state") else {
        return;
    };
    let conn = RedisConnection::connect(&RedisConfig::from_url(&url).expect("a valid Redis URL"))
        .await
        .unwrap();
    let ns = Namespace::new(&env::unique_prefix("bad-state"), "t", "mx").unwrap();
    let backend = RedisThrottle::new(conn).await.unwrap().with_restart_hold(false);
    let t = Throttle::new(backend.clone(), ns.clone());
    let p = Policy::builder()
        .global_cap(2)
        .key_cap(2)
        .min_interval(Duration::ZERO)
        .lease_ttl(Duration::from_secs(5))
        .build()
        .unwrap();

    // The key's state is a string, not a hash: WRONGTYPE inside the script.
    let state = t.scope().state_key("k").unwrap();
    raw(&url, &["SET", &state, "garbage"]);
    let e = t.acquire("k", &p).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Backend, "{e:?}");
    assert!(!e.is_unavailable(), "garbage is not an outage");
    assert_eq!(t.inspect("k").await.unwrap_err().kind(), ErrorKind::Backend);
    assert_eq!(
        t.penalize("k", Duration::from_secs(1)).await.unwrap_err().kind(),
        ErrorKind::Backend
    );

    // The namespace's lease set is a hash: every key of the namespace errors, typed.
    let global = t.scope().global_key().unwrap();
    raw(&url, &["HSET", &global, "x", "y"]);
    assert_eq!(t.acquire("other", &p).await.unwrap_err().kind(), ErrorKind::Backend);
    raw(&url, &["DEL", &global, &state]);

    // A lease ending in 2096 is not one palisade granted, wherever it sits among the
    // leases (the latest, the one the grant reads): refused, typed, nothing written.
    let leases = t.scope().leases_key("k").unwrap();
    for set in [&global, &leases] {
        let held = t.acquire("k", &p).await.unwrap();
        raw(&url, &["ZADD", set, "4000000000000000", "7"]);
        let look = || [&global, &leases, &state].map(|k| format!("{:?}", raw(&url, &["DUMP", k])));
        let before = look();
        let e = t.acquire("k", &p).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Backend, "{e:?}");
        assert_eq!(before, look(), "a refused grant changed the throttle's keys");
        drop(held);
        raw(&url, &["DEL", &global, &leases, &state]);
    }

    // Times that are not numbers are treated as absent: no spacing, no penalty.
    raw(&url, &["HSET", &state, "last", "yesterday", "pen", "forever"]);
    assert!(matches!(t.acquire("k", &p).await.unwrap().value, Decision::Acquired(_)));

    // A rate key holding garbage is a fresh budget.
    let r = RateLimiter::new(backend, ns.sibling("rl").unwrap());
    raw(&url, &["SET", &r_key(&ns, "ip"), "abc"]);
    let rate = Rate::per_second(1).burst(1).build().unwrap();
    assert!(matches!(
        r.limit("ip", &rate).await.unwrap().value,
        RateDecision::Allowed { remaining: 0, .. }
    ));
    assert!(matches!(
        r.limit("ip", &rate).await.unwrap().value,
        RateDecision::Limited { .. }
    ));
}

fn r_key(ns: &Namespace, key: &str) -> String {
    palisade_throttle::Scope::new(ns.sibling("rl").unwrap())
        .rate_key(key)
        .unwrap()
}

/// The shared Redis URL and a job store under a prefix of its own.
async fn redis_jobs(test: &str) -> Option<(String, JobStore<RedisJobStore>)> {
    let url = env::redis_url(test)?;
    let conn = RedisConnection::connect(&RedisConfig::from_url(&url).expect("a valid Redis URL"))
        .await
        .unwrap();
    let jobs = JobStore::new(
        RedisJobStore::new(conn).await.unwrap(),
        Namespace::new(&env::unique_prefix(test), "t", "jobs").unwrap(),
    );
    Some((url, jobs))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_key_of_the_wrong_type_is_a_typed_error() {
    let Some((url, jobs)) = redis_jobs("job_key_wrong_type").await else {
        return;
    };
    let key = jobs.key("j").unwrap();
    raw(&url, &["SET", &key, "not a hash"]);
    for e in [
        jobs.get("j").await.map(drop).unwrap_err(),
        jobs.update("j", &Patch::new().progress(1)).await.map(drop).unwrap_err(),
        jobs.heartbeat("j").await.map(drop).unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::Backend, "{e:?}");
    }
    assert_eq!(
        raw(&url, &["GET", &key]),
        Reply::Bulk(b"not a hash".to_vec()),
        "nothing was damaged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_hash_written_by_another_tool_is_updated_but_given_no_ttl_or_status() {
    let Some((url, jobs)) = redis_jobs("job_hash_foreign").await else {
        return;
    };
    let key = jobs.key("j").unwrap();
    // A hash with neither `ttl_ms` nor `status`, which every record palisade writes has.
    raw(&url, &["HSET", &key, "owner", "another tool"]);
    assert!(
        jobs.update("j", &Patch::new().progress(5)).await.unwrap().value,
        "the record exists"
    );
    assert_eq!(raw(&url, &["PTTL", &key]), Reply::Int(-1), "no TTL is invented for it");
    assert_eq!(raw(&url, &["HEXISTS", &key, "progress"]), Reply::Int(1));
    for e in [
        jobs.transition("j", JobStatus::Queued, JobStatus::Running, &Patch::new())
            .await
            .map(drop)
            .unwrap_err(),
        jobs.heartbeat("j").await.map(drop).unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::Codec, "a missing status is named: {e:?}");
        assert!(e.to_string().contains("status"), "{e}");
    }
    assert_eq!(
        raw(&url, &["HEXISTS", &key, "status"]),
        Reply::Int(0),
        "no status was invented"
    );
    // A key that does not exist is still not found, and not created, by every script.
    assert!(!jobs.update("gone", &Patch::new().progress(1)).await.unwrap().value);
    assert_eq!(
        jobs.transition("gone", JobStatus::Queued, JobStatus::Running, &Patch::new())
            .await
            .unwrap()
            .value,
        Outcome::NotFound
    );
    assert_eq!(jobs.heartbeat("gone").await.unwrap().value, Outcome::NotFound);
    assert_eq!(raw(&url, &["EXISTS", &jobs.key("gone").unwrap()]), Reply::Int(0));
}
