//! Two OS processes (an "api" and a "worker") update disjoint fields of one job record
//! 1,000 times each through a real redis-server: no field may be lost.
//!
//! The test binary re-executes itself as each writer (`PALISADE_WRITER_ROLE`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use palisade_cache_core::Namespace;
use palisade_cache_redis::{RedisConfig, RedisConnection, RedisJobStore};
use palisade_job_store::{JobRecord, JobStore, Patch};
use palisade_redis_server::env;

const ROLE: &str = "PALISADE_WRITER_ROLE";
const PREFIX: &str = "PALISADE_WRITER_PREFIX";
const UPDATES: usize = 1000;
const ID: &str = "shared-job";

async fn store(url: &str, prefix: &str) -> JobStore<RedisJobStore> {
    let conn = RedisConnection::connect(&RedisConfig::from_url(url).expect("a valid Redis URL"))
        .await
        .unwrap();
    JobStore::new(
        RedisJobStore::new(conn).await.unwrap(),
        Namespace::new(prefix, "tenant", "jobs").unwrap(),
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn writer(role: &str) -> ExitCode {
    let url = std::env::var(env::REDIS_URL).unwrap();
    let prefix = std::env::var(PREFIX).unwrap();
    runtime().block_on(async {
        let s = store(&url, &prefix).await;
        for i in 0..UPDATES {
            let p = Patch::new()
                .field(format!("{role}-{i}"), i.to_string())
                .field(role, i.to_string());
            assert!(
                s.update(ID, &p).await.unwrap().value,
                "{role}: update {i} did not apply"
            );
        }
    });
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    if let Ok(role) = std::env::var(ROLE) {
        return writer(&role);
    }
    println!("\nrunning 1 test");
    let Some(url) = env::redis_url("two_processes_update_disjoint_fields_without_losing_any") else {
        println!("test result: ok. 0 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out");
        return ExitCode::SUCCESS;
    };
    let prefix = env::unique_prefix("two-processes");
    let rt = runtime();
    let s = rt.block_on(store(&url, &prefix));
    rt.block_on(s.create(ID, &JobRecord::queued(), Duration::from_secs(600)))
        .unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<_> = ["api", "worker"]
        .into_iter()
        .map(|role| {
            Command::new(&exe)
                .env(ROLE, role)
                .env(PREFIX, &prefix)
                .env(env::REDIS_URL, &url)
                .spawn()
                .unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    for child in &mut children {
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("a writer process did not finish within 120 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "a writer process failed: {status}");
    }
    let got = rt.block_on(s.get(ID)).unwrap().value.expect("the record");
    let mut lost = Vec::new();
    for role in ["api", "worker"] {
        for i in 0..UPDATES {
            if got.field(&format!("{role}-{i}")).map(|b| &b[..]) != Some(i.to_string().as_bytes()) {
                lost.push(format!("{role}-{i}"));
            }
        }
        assert_eq!(
            got.field(role).map(|b| &b[..]),
            Some((UPDATES - 1).to_string().as_bytes()),
            "{role}'s last write"
        );
    }
    assert!(
        lost.is_empty(),
        "{} fields lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert_eq!(got.fields.len(), 2 * UPDATES + 2);
    println!("test two_processes_update_disjoint_fields_without_losing_any ... ok");
    println!("\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n");
    ExitCode::SUCCESS
}
