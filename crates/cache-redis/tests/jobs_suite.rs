//! The job-store behaviour suite and model against a real redis-server, a real
//! 3-master Redis Cluster, and strict and degraded mode over a healthy Redis.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::RedisFixture;
use palisade_cache_core::{Component, Events, Mode, Provenance, SupervisorContext};
use palisade_cache_local::LocalJobStore;
use palisade_cache_redis::RedisJobStore;
use palisade_job_store::{JobFailover, StrictJobs};

mod standalone {
    palisade_job_store::job_suite!(super::common::standalone_jobs);
}

mod cluster {
    palisade_job_store::job_suite!(super::common::cluster_jobs);
}

async fn failover(test: &str) -> Option<RedisFixture<JobFailover<RedisJobStore, LocalJobStore>>> {
    let fx = common::standalone_jobs(test).await?;
    let ctx = SupervisorContext::new(Component::JobStore, Mode::ExplicitDegraded, "t", Events::default());
    let backend = JobFailover::new(fx.backend, LocalJobStore::default(), ctx).unwrap();
    Some(common::fixture(backend, test, Provenance::Distributed))
}

mod degraded_over_healthy_redis {
    palisade_job_store::job_suite!(super::failover);
}

async fn strict(test: &str) -> Option<RedisFixture<StrictJobs<RedisJobStore>>> {
    let fx = common::standalone_jobs(test).await?;
    let ctx = SupervisorContext::new(Component::JobStore, Mode::StrictDistributed, "t", Events::default());
    Some(common::fixture(
        palisade_job_store::failover::strict(fx.backend, ctx).unwrap(),
        test,
        Provenance::Distributed,
    ))
}

mod strict_over_healthy_redis {
    palisade_job_store::job_suite!(super::strict);
}
