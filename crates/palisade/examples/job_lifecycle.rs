//! An API process and a worker process writing the same job record. The API creates the
//! job and records user-facing fields; the worker (a second OS process, this same
//! binary with `--worker`) moves it through its lifecycle and reports progress. Neither
//! loses the other's fields.
//!
//! ```sh
//! PALISADE_REDIS_URL=redis://127.0.0.1:6379 cargo run -p palisade --all-features --example job_lifecycle
//! ```
//! Without Redis there is nothing two processes can share: the example then runs both
//! roles as tasks of one process, in local mode.

use std::time::Duration;

use palisade::{JobRecord, JobStatus, JobStore, Outcome, Palisade, Patch};

async fn worker(jobs: &JobStore, id: &str) -> Result<(), palisade::Error> {
    if jobs
        .transition(id, JobStatus::Queued, JobStatus::Running, &Patch::new())
        .await?
        .value
        != Outcome::Applied
    {
        println!("worker: someone else took {id}");
        return Ok(());
    }
    for step in 1..=5u32 {
        jobs.update(
            id,
            &Patch::new().progress(step * 20).field(format!("step{step}"), "done"),
        )
        .await?;
        jobs.heartbeat(id).await?;
    }
    let done = jobs
        .transition(id, JobStatus::Running, JobStatus::Completed, &Patch::new().result("42"))
        .await?;
    println!("worker: finished {id}: {:?}", done.value);
    Ok(())
}

async fn api(jobs: &JobStore, id: &str) -> Result<(), palisade::Error> {
    for i in 0..5 {
        jobs.update(id, &Patch::new().field(format!("note{i}"), "from the api"))
            .await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), palisade::Error> {
    let p = Palisade::from_env().await?;
    let jobs = p.jobs();
    let id = std::env::args()
        .nth(2)
        .unwrap_or_else(|| format!("job-{}", std::process::id()));
    if std::env::args().nth(1).as_deref() == Some("--worker") {
        return worker(&jobs, &id).await;
    }
    jobs.create(
        &id,
        &JobRecord::queued().with_field("owner", "api"),
        Duration::from_secs(3600),
    )
    .await?;
    if p.mode().needs_redis() {
        let exe =
            std::env::current_exe().map_err(|e| palisade::Error::config(format!("cannot find this example: {e}")))?;
        let mut child = tokio::process::Command::new(exe)
            .arg("--worker")
            .arg(&id)
            .spawn()
            .map_err(|e| palisade::Error::config(format!("cannot start the worker process: {e}")))?;
        api(&jobs, &id).await?;
        let status = child.wait().await.map_err(|e| palisade::Error::config(e.to_string()))?;
        println!("api: worker process exited with {status}");
    } else {
        println!("local mode: running the worker as a task of this process");
        let (a, w) = tokio::join!(api(&jobs, &id), worker(&jobs, &id));
        a?;
        w?;
    }
    let record = jobs.get(&id).await?.value;
    if let Some(r) = record {
        let mut fields: Vec<_> = r.fields.keys().cloned().collect();
        fields.sort();
        println!("{id}: {} progress {:?} fields {fields:?}", r.status, r.progress);
    }
    Ok(())
}
