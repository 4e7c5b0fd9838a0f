//! The documented least-privilege ACL rule is enough: every contract suite (plain
//! backends; the wrappers send nothing more) runs as a user that may run only
//! `ACL_COMMANDS`, on keys under its prefix only, with no channel.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::RedisFixture;
use palisade_cache_redis::{RedisCache, RedisJobStore, RedisThrottle};

async fn cache(test: &str) -> Option<RedisFixture<RedisCache>> {
    let (conn, prefix) = common::least_privilege(test).await?;
    Some(common::fixture_with_prefix(RedisCache::new(conn), prefix))
}

async fn jobs(test: &str) -> Option<RedisFixture<RedisJobStore>> {
    let (conn, prefix) = common::least_privilege(test).await?;
    Some(common::fixture_with_prefix(
        RedisJobStore::new(conn).await.unwrap(),
        prefix,
    ))
}

async fn throttle(test: &str) -> Option<RedisFixture<RedisThrottle>> {
    let (conn, prefix) = common::least_privilege(test).await?;
    Some(common::fixture_with_prefix(
        RedisThrottle::new(conn).await.unwrap().with_restart_hold(false),
        prefix,
    ))
}

mod cache_suite {
    palisade_cache_core::cache_suite!(super::cache);
}

mod job_suite {
    palisade_job_store::job_suite!(super::jobs);
}

mod throttle_suite {
    palisade_throttle::throttle_suite!(super::throttle);
}
