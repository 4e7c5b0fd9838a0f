//! The job-store behaviour suite and model against the in-memory backend, under a
//! manual clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use palisade_cache_core::testkit::Fixture;
use palisade_cache_core::{BoxFuture, ManualClock, Provenance};
use palisade_cache_local::LocalJobStore;

struct Local {
    store: LocalJobStore,
    clock: ManualClock,
    prefix: String,
}

impl Fixture for Local {
    type Backend = LocalJobStore;
    fn backend(&self) -> LocalJobStore {
        self.store.clone()
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
}

async fn local(test: &str) -> Option<Local> {
    let clock = ManualClock::new();
    Some(Local {
        store: LocalJobStore::new(clock.shared()),
        clock,
        prefix: format!("local-{test}"),
    })
}

palisade_job_store::job_suite!(local);

#[tokio::test]
async fn expired_records_are_reclaimed_without_a_background_task() {
    use palisade_job_store::{JobBackend, JobStatus};
    let clock = ManualClock::new();
    let store = LocalJobStore::new(clock.shared());
    let fields: palisade_job_store::FieldMap = [(
        "status".to_owned(),
        bytes::Bytes::from_static(JobStatus::Queued.as_str().as_bytes()),
    )]
    .into();
    for i in 0..100 {
        store
            .create(&format!("k{i}"), &fields, Duration::from_secs(10), false)
            .await
            .unwrap();
    }
    assert_eq!(store.held(), 100);
    clock.advance(Duration::from_secs(11));
    assert_eq!(store.len(), 0, "expired records are not counted");
    // Operations sweep: after at most 256 operations every expired record is gone.
    for _ in 0..256 {
        store.exists("other").await.unwrap();
    }
    assert_eq!(
        store.held(),
        0,
        "expired records were reclaimed by the operations themselves"
    );
}
