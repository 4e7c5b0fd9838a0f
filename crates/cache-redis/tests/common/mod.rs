//! Fixtures shared by the Redis test files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code, unreachable_pub)]

use std::time::Duration;

use palisade_cache_core::testkit::Fixture;
use palisade_cache_core::testkit::env;
use palisade_cache_core::{BoxFuture, Provenance};
use palisade_cache_redis::{RedisCache, RedisConfig, RedisConnection, RedisJobStore};

/// A fixture over any Redis-backed cache backend, with real time.
pub struct RedisFixture<B> {
    pub backend: B,
    pub prefix: String,
    pub provenance: Provenance,
}

impl<B: Clone + Send + Sync + 'static> Fixture for RedisFixture<B> {
    type Backend = B;
    fn backend(&self) -> B {
        self.backend.clone()
    }
    fn prefix(&self) -> &str {
        &self.prefix
    }
    fn provenance(&self) -> Provenance {
        self.provenance
    }
    fn short_ttl(&self) -> Duration {
        Duration::from_millis(400)
    }
    /// Real time: TTLs run on the Redis server's clock, so time passes by waiting.
    fn advance(&self, by: Duration) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(by))
    }
    fn controls_time(&self) -> bool {
        false
    }
}

/// A connection to the shared standalone server, or `None` (skip line printed).
pub async fn standalone(test: &str) -> Option<RedisConnection> {
    let url = env::redis_url(test)?;
    Some(
        RedisConnection::connect(&RedisConfig::from_url(&url).expect("a valid Redis URL"))
            .await
            .expect("connect to the shared Redis"),
    )
}

/// A connection to the shared cluster, or `None` (skip line printed).
pub async fn cluster(test: &str) -> Option<RedisConnection> {
    let nodes = env::cluster_nodes(test)?;
    Some(
        RedisConnection::connect(&RedisConfig::cluster(&nodes).expect("valid seeds"))
            .await
            .expect("connect to the shared cluster"),
    )
}

pub fn fixture<B>(backend: B, test: &str, provenance: Provenance) -> RedisFixture<B> {
    RedisFixture {
        backend,
        prefix: env::unique_prefix(test),
        provenance,
    }
}

pub async fn standalone_cache(test: &str) -> Option<RedisFixture<RedisCache>> {
    let conn = standalone(test).await?;
    Some(fixture(RedisCache::new(conn), test, Provenance::Distributed))
}

pub async fn cluster_cache(test: &str) -> Option<RedisFixture<RedisCache>> {
    let conn = cluster(test).await?;
    Some(fixture(RedisCache::new(conn), test, Provenance::Distributed))
}

pub async fn standalone_jobs(test: &str) -> Option<RedisFixture<RedisJobStore>> {
    let conn = standalone(test).await?;
    Some(fixture(
        RedisJobStore::new(conn).await.expect("scripts load"),
        test,
        Provenance::Distributed,
    ))
}

pub async fn cluster_jobs(test: &str) -> Option<RedisFixture<RedisJobStore>> {
    let conn = cluster(test).await?;
    Some(fixture(
        RedisJobStore::new(conn).await.expect("scripts load"),
        test,
        Provenance::Distributed,
    ))
}

pub async fn standalone_throttle(test: &str) -> Option<RedisFixture<palisade_cache_redis::RedisThrottle>> {
    let conn = standalone(test).await?;
    Some(fixture(
        palisade_cache_redis::RedisThrottle::new(conn)
            .await
            .expect("scripts load"),
        test,
        Provenance::Distributed,
    ))
}

pub async fn cluster_throttle(test: &str) -> Option<RedisFixture<palisade_cache_redis::RedisThrottle>> {
    let conn = cluster(test).await?;
    Some(fixture(
        palisade_cache_redis::RedisThrottle::new(conn)
            .await
            .expect("scripts load"),
        test,
        Provenance::Distributed,
    ))
}

/// The command deadline of the fault tests.
pub const DEADLINE: std::time::Duration = std::time::Duration::from_millis(300);
/// What a call may take beyond its deadline (scheduling on a loaded 2-core machine).
pub const SLACK: std::time::Duration = std::time::Duration::from_millis(300);
/// How long recovery may take in a fault test (reconnect backoff + probe period).
pub const RECOVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// A connection config for a private server: the fault tests' deadlines.
pub fn fault_config(server: &palisade_cache_core::testkit::server::RedisServer) -> RedisConfig {
    RedisConfig::from_url(&server.url())
        .expect("a valid Redis URL")
        .with_command_timeout(DEADLINE)
        .with_connect_timeout(Duration::from_millis(800))
}

/// A supervisor context that probes quickly (the fault tests wait for recovery).
pub fn fault_ctx(
    component: palisade_cache_core::Component,
    mode: palisade_cache_core::Mode,
    events: &palisade_cache_core::Events,
) -> palisade_cache_core::SupervisorContext {
    palisade_cache_core::SupervisorContext::new(component, mode, "tenant-a", events.clone()).with_config(
        palisade_cache_core::SupervisorConfig::default()
            .with_backoff_min(Duration::from_millis(50))
            .with_probe_period(Duration::from_millis(250))
            .with_probe_deadline(Duration::from_millis(200)),
    )
}

/// A namespace of tenant `tenant-a` under a prefix unique to `test`.
pub fn fault_ns(test: &str, namespace: &str) -> palisade_cache_core::Namespace {
    palisade_cache_core::Namespace::new(&env::unique_prefix(test), 1, "tenant-a", namespace).expect("namespace")
}
