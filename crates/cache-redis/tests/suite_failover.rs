//! The cache behaviour suite and model against degraded mode (`Failover`) and strict
//! mode (`Strict`) over a healthy redis-server: while Redis answers, both must be
//! indistinguishable from Redis itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::RedisFixture;
use palisade_cache_core::{Component, Mode};
use palisade_cache_core::{Events, Failover, FailoverOptions, Provenance, Strict, SupervisorContext};
use palisade_cache_local::LocalCache;
use palisade_cache_redis::RedisCache;

async fn failover(test: &str) -> Option<RedisFixture<Failover<RedisCache, LocalCache>>> {
    let conn = common::standalone(test).await?;
    let ctx = SupervisorContext::new(Component::Cache, Mode::ExplicitDegraded, "t", Events::default());
    let backend = Failover::new(
        RedisCache::new(conn),
        LocalCache::default(),
        ctx,
        FailoverOptions::default(),
    )
    .unwrap();
    Some(common::fixture(backend, test, Provenance::Distributed))
}

mod degraded_over_healthy_redis {
    use super::*;
    palisade_cache_core::cache_suite!(failover);
}

async fn strict(test: &str) -> Option<RedisFixture<Strict<RedisCache>>> {
    let conn = common::standalone(test).await?;
    let ctx = SupervisorContext::new(Component::Cache, Mode::StrictDistributed, "t", Events::default());
    let backend = Strict::new(RedisCache::new(conn), ctx).unwrap();
    Some(common::fixture(backend, test, Provenance::Distributed))
}

mod strict_over_healthy_redis {
    use super::*;
    palisade_cache_core::cache_suite!(strict);
}
