//! The main job of palisade in one file. Runs with no Redis (local mode); with
//! `PALISADE_REDIS_URL` set it runs strict on Redis.
//!
//! ```sh
//! cargo run -p palisade --example quickstart
//! PALISADE_REDIS_URL=redis://127.0.0.1:6379 cargo run -p palisade --all-features --example quickstart
//! ```

use std::time::Duration;

use palisade::{Decision, JobRecord, JobStatus, Palisade, Patch, Policy, Rate, RateDecision};

#[tokio::main]
async fn main() -> Result<(), palisade::Error> {
    // Shows palisade's `palisade::security` log lines (mode at startup, outages).
    tracing_subscriber::fmt().with_target(true).init();
    let p = Palisade::from_env().await?;
    println!("mode: {} (tenant {})", p.mode(), p.tenant_name());

    // Cache: every read says where it came from.
    let cache = p.cache();
    cache.set("greeting", b"hello", Duration::from_secs(60)).await?;
    let hit = cache.get("greeting").await?;
    println!(
        "cache: {:?} from {}",
        hit.value.as_deref().map(String::from_utf8_lossy),
        hit.provenance
    );
    let loaded = cache
        .get_or_load("answer", Duration::from_secs(60), || async {
            Ok::<_, std::io::Error>(42u32)
        })
        .await?;
    println!("cache: get_or_load -> {} ({})", loaded.value, loaded.provenance);

    // Job store: per-field updates and a guarded lifecycle.
    let jobs = p.jobs();
    jobs.create(
        "job-1",
        &JobRecord::queued().with_field("owner", "api"),
        Duration::from_secs(3600),
    )
    .await?;
    jobs.transition(
        "job-1",
        JobStatus::Queued,
        JobStatus::Running,
        &Patch::new().progress(0),
    )
    .await?;
    jobs.update("job-1", &Patch::new().progress(50)).await?;
    jobs.transition(
        "job-1",
        JobStatus::Running,
        JobStatus::Completed,
        &Patch::new().result("done").progress(100),
    )
    .await?;
    let refused = jobs
        .transition("job-1", JobStatus::Running, JobStatus::Failed, &Patch::new())
        .await?;
    let job = jobs.get("job-1").await?.value;
    println!(
        "jobs: {:?} progress {:?}; a late Running->Failed: {:?}",
        job.as_ref().map(|j| j.status),
        job.and_then(|j| j.progress),
        refused.value
    );

    // Throttle: one atomic decision over penalty, spacing and two caps.
    let throttle = p.throttle();
    let policy = Policy::builder()
        .global_cap(6)
        .key_cap(2)
        .min_interval(Duration::from_millis(50))
        .lease_ttl(Duration::from_secs(30))
        .build()?;
    match throttle.acquire("mx.example.com", &policy).await?.value {
        Decision::Acquired(permit) => {
            println!(
                "throttle: acquired {} (fencing token {})",
                permit.lease(),
                permit.lease_id()
            );
            permit.release().await?;
        }
        Decision::Denied { reason, retry_after } => println!("throttle: denied ({reason}), retry in {retry_after:?}"),
    }
    if let Decision::Denied { reason, retry_after } = throttle.acquire("mx.example.com", &policy).await?.value {
        println!("throttle: second try denied ({reason}), retry in {retry_after:?}");
    }

    // Rate limiter: GCRA.
    let limiter = p.rate_limiter();
    let rate = Rate::per_second(10).burst(3).build()?;
    for _ in 0..4 {
        match limiter.limit("client-1", &rate).await?.value {
            RateDecision::Allowed { remaining, .. } => println!("limit: allowed, {remaining} left"),
            RateDecision::Limited { retry_after, .. } => println!("limit: limited for {retry_after:?}"),
        }
    }
    let s = throttle.stats();
    println!("stats: {} acquired, {} denied ({:?})", s.acquired, s.denied, s.denials);
    Ok(())
}
