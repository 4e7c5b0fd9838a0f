//! The throttle behaviour suite and model against a real redis-server, a real 3-master
//! Redis Cluster, and strict and degraded mode over a healthy Redis.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::RedisFixture;
use palisade_cache_core::{Component, Events, Mode, Provenance, SupervisorContext};
use palisade_cache_local::LocalThrottle;
use palisade_cache_redis::RedisThrottle;
use palisade_throttle::{StrictThrottle, ThrottleFailover, ThrottleFailoverOptions};

mod standalone {
    palisade_throttle::throttle_suite!(super::common::standalone_throttle);
}

mod cluster {
    palisade_throttle::throttle_suite!(super::common::cluster_throttle);
}

async fn failover(test: &str) -> Option<RedisFixture<ThrottleFailover<RedisThrottle, LocalThrottle>>> {
    let fx = common::standalone_throttle(test).await?;
    let ctx = SupervisorContext::new(Component::Throttle, Mode::ExplicitDegraded, "t", Events::default());
    let backend = ThrottleFailover::new(
        fx.backend,
        LocalThrottle::default(),
        ctx,
        ThrottleFailoverOptions::default(),
    )
    .unwrap();
    Some(common::fixture(backend, test, Provenance::Distributed))
}

mod degraded_over_healthy_redis {
    palisade_throttle::throttle_suite!(super::failover);
}

async fn strict(test: &str) -> Option<RedisFixture<StrictThrottle<RedisThrottle>>> {
    let fx = common::standalone_throttle(test).await?;
    let ctx = SupervisorContext::new(Component::Throttle, Mode::StrictDistributed, "t", Events::default());
    Some(common::fixture(
        palisade_throttle::failover::strict(fx.backend, ctx).unwrap(),
        test,
        Provenance::Distributed,
    ))
}

mod strict_over_healthy_redis {
    palisade_throttle::throttle_suite!(super::strict);
}
