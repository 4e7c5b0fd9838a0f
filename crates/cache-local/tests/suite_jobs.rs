//! The job-store behaviour suite and model against the in-memory backend, under a
//! manual clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use palisade_cache_core::ManualClock;
use palisade_cache_core::testkit::ManualFixture;
use palisade_cache_local::LocalJobStore;

async fn local(test: &str) -> Option<ManualFixture<LocalJobStore>> {
    Some(ManualFixture::new(test, LocalJobStore::new).with_watchers(LocalJobStore::watchers))
}

palisade_job_store::job_suite!(local);

#[tokio::test]
async fn expired_records_are_reclaimed_without_a_background_task() {
    use palisade_cache_core::Run;
    use palisade_job_store::{JobStatus, op};
    let clock = ManualClock::new();
    let store = LocalJobStore::new(clock.shared());
    let fields: palisade_job_store::FieldMap = [(
        "status".to_owned(),
        bytes::Bytes::from_static(JobStatus::Queued.as_str().as_bytes()),
    )]
    .into();
    for i in 0..100 {
        store
            .run(&op::Create::new(
                format!("k{i}"),
                fields.clone(),
                Duration::from_secs(10),
                false,
            ))
            .await
            .unwrap();
    }
    assert_eq!(store.held(), 100);
    clock.advance(Duration::from_secs(11));
    assert_eq!(store.len(), 0, "expired records are not counted");
    // Operations sweep: max(256, records held) + 1 operations later every expired record is gone.
    for _ in 0..=256 {
        store.run(&op::Exists::new("other".to_owned())).await.unwrap();
    }
    assert_eq!(
        store.held(),
        0,
        "expired records were reclaimed by the operations themselves"
    );
}
