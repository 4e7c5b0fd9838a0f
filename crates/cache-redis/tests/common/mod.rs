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
        RedisConnection::connect(&RedisConfig::from_url(&url))
            .await
            .expect("connect to the shared Redis"),
    )
}

/// A connection to the shared cluster, or `None` (skip line printed).
pub async fn cluster(test: &str) -> Option<RedisConnection> {
    let nodes = env::cluster_nodes(test)?;
    Some(
        RedisConnection::connect(&RedisConfig::cluster(&nodes))
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
