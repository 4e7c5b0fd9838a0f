//! Test helpers and behaviour suites. **Not API-stable**: enable the `testkit` feature
//! only from `[dev-dependencies]`.
//!
//! - [`cache`]: the cache behaviour suite; [`Fixture`]: what a backend's suite gets.
//! - [`glob`]: Redis's glob matcher, ported, for proving SCAN patterns.
//! - [`url_forms`]: every URL form palisade accepts, around a given password.
//!
//! The suites never start a server: a backend crate's fixture does, with
//! `palisade-redis-server` (servers, clusters, Sentinel, TLS, and the test
//! environment `cargo xtask ci` hands over), which this crate does not depend on.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

pub mod cache;
pub mod glob;

/// Every URL form palisade accepts (with and without a scheme, TLS, seed lists,
/// `redis-cluster://`, Sentinel) with the password `pw`, pointing at closed loopback
/// ports: for the tests that prove no password changes how a URL reads or prints.
pub fn url_forms(pw: &str) -> Vec<String> {
    vec![
        format!("redis://alice:{pw}@127.0.0.1:1"),
        format!("redis://:{pw}@127.0.0.1:1/2"),
        format!(":{pw}@127.0.0.1:1"),
        format!("alice:{pw}@127.0.0.1:1"),
        format!("rediss://alice:{pw}@127.0.0.1:1"),
        format!("redis://:{pw}@127.0.0.1:1,redis://127.0.0.1:2"),
        format!("alice:{pw}@127.0.0.1:1,127.0.0.1:2"),
        format!("redis-cluster://alice:{pw}@127.0.0.1:1?node=127.0.0.1:2"),
        format!("redis-sentinel://alice:{pw}@127.0.0.1:1,127.0.0.1:2/palisade"),
        format!("rediss-sentinel://:{pw}@127.0.0.1:1/palisade/3"),
    ]
}

use std::fmt::Debug;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};

use crate::{BoxFuture, ManualClock, Provenance, SharedClock};

/// The model check of every behaviour suite: `cases` random sequences of 1 to 39
/// operations drawn from `op`, each handed to `check`, which runs them against the
/// backend and a reference model and panics where they disagree. A disagreement is
/// shrunk to a minimal sequence and reported.
pub fn run_op_sequences<S>(op: S, cases: u32, check: impl Fn(&[S::Value]))
where
    S: Strategy,
    S::Value: Debug,
{
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&prop::collection::vec(op, 1..40), |ops| {
            check(&ops);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("the backend disagrees with the model: {e}"));
}

/// How a backend is set up for a behaviour suite (cache, job store, throttle).
pub trait Fixture: Send + Sync + 'static {
    /// The backend under test.
    type Backend: Clone + Send + Sync + 'static;
    /// The backend (a clone of one shared instance).
    fn backend(&self) -> Self::Backend;
    /// A prefix unique to this fixture, so that runs never see each other's keys.
    fn prefix(&self) -> &str;
    /// The provenance every answer must carry.
    fn provenance(&self) -> Provenance;
    /// The TTL used by expiry cases: short for real time, anything for a manual clock.
    fn short_ttl(&self) -> Duration;
    /// Moves time forward by `by` where the fixture controls time (manual clock); a
    /// no-op for real time (the cases then poll with a deadline).
    fn advance(&self, by: Duration) -> BoxFuture<'_, ()>;
    /// Whether `advance` really moves time (models then generate time steps).
    fn controls_time(&self) -> bool;
    /// What the store holds under the encoded `key`, byte for byte, with its expiry,
    /// where the fixture can see it (Redis: `DUMP` and `PEXPIRETIME`); `None` where it
    /// cannot, and the cases then compare what the contract reads.
    fn snapshot<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<Vec<u8>>> {
        let _ = key;
        Box::pin(async { None })
    }
    /// How many callers wait for a change of the record under the encoded `key`
    /// (Redis: `PUBSUB SHARDNUMSUB`), so a case can write only once a watcher waits and
    /// prove the wake-up, not the first look, delivered it; `None` where the fixture
    /// cannot tell.
    fn watchers<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<u64>> {
        let _ = key;
        Box::pin(async { None })
    }
}

/// How a [`ManualFixture`] counts the watchers of a key.
pub type WatcherCount<B> = fn(&B, &str) -> u64;

/// A fixture for an in-process backend under a [`ManualClock`]: answers tagged
/// [`Provenance::Local`], time moved by `advance`, a 60 s "short" TTL.
pub struct ManualFixture<B> {
    /// The backend.
    pub backend: B,
    /// Its clock.
    pub clock: ManualClock,
    /// The key prefix.
    pub prefix: String,
    /// How to count the watchers of a key, where the backend can.
    pub watchers: Option<WatcherCount<B>>,
}

impl<B> ManualFixture<B> {
    /// A fixture for `test` whose backend `make` builds on the manual clock.
    pub fn new(test: &str, make: impl FnOnce(SharedClock) -> B) -> Self {
        let clock = ManualClock::new();
        ManualFixture {
            backend: make(clock.shared()),
            clock,
            prefix: format!("local-{test}"),
            watchers: None,
        }
    }

    /// Counts the watchers of a key with `count`.
    pub fn with_watchers(mut self, count: WatcherCount<B>) -> Self {
        self.watchers = Some(count);
        self
    }
}

impl<B: Clone + Send + Sync + 'static> Fixture for ManualFixture<B> {
    type Backend = B;
    fn backend(&self) -> B {
        self.backend.clone()
    }
    fn prefix(&self) -> &str {
        &self.prefix
    }
    fn provenance(&self) -> Provenance {
        Provenance::Local
    }
    fn short_ttl(&self) -> Duration {
        Duration::from_secs(60)
    }
    fn advance(&self, by: Duration) -> BoxFuture<'_, ()> {
        self.clock.advance(by);
        Box::pin(async {})
    }
    fn controls_time(&self) -> bool {
        true
    }
    fn watchers<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<u64>> {
        let n = self.watchers.map(|count| count(&self.backend, key));
        Box::pin(async move { n })
    }
}
