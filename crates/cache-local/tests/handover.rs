//! The hand-over of a recovery, as `Failover` sees it: a call on a record still on its
//! way to the primary waits for it at most `handover_wait`, then fails with `Timeout`
//! having written nothing; a call on any other record goes straight on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use palisade_cache_core::{
    Component, Endpoint, Error, ErrorKind, Events, Failover, FailoverOptions, Mode, Run, SupervisorConfig,
    SupervisorContext,
};
use palisade_cache_local::LocalJobStore;
use palisade_job_store::{FieldMap, JobStatus, op};

fn fields(pairs: &[(&str, &str)]) -> FieldMap {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Bytes::copy_from_slice(v.as_bytes())))
        .collect()
}

#[tokio::test]
async fn a_call_on_a_record_still_being_handed_over_fails_at_the_hand_over_deadline() {
    let primary = LocalJobStore::default();
    let ttl = Duration::from_secs(600);
    let queued = fields(&[("status", JobStatus::Queued.as_str())]);
    for key in ["pending", "other"] {
        primary
            .run(&op::Create::new(key.to_owned(), queued.clone(), ttl, false))
            .await
            .unwrap();
    }
    // Probes an hour apart: nothing ends this outage during the test but the test.
    let config = SupervisorConfig::default()
        .with_probe_period(Duration::from_secs(3600))
        .with_backoff_min(Duration::from_secs(3600))
        .with_handover_wait(Duration::from_millis(50));
    let ctx =
        SupervisorContext::new(Component::JobStore, Mode::ExplicitDegraded, Events::default()).with_config(config);
    let failover = Failover::new(
        primary.clone(),
        LocalJobStore::default(),
        ctx,
        FailoverOptions::default(),
        None,
    )
    .unwrap();
    let sup = failover.supervisor();
    let down = Error::Unavailable {
        backend: Endpoint::named("test"),
        op: "jobs.get",
        source: "down".into(),
    };
    assert!(sup.report("jobs.get", &down), "the outage starts");
    // Outage 1 is being handed over; `pending` has not reached the primary yet.
    sup.handover().begin(sup.outage_number(), ["pending".to_owned()]);

    let late = fields(&[("u:late", "1")]);
    let e = failover
        .run(&op::Update::new("pending".to_owned(), late.clone()))
        .await
        .expect_err("the record is still on its way");
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e:?}");
    let stored = primary
        .run(&op::Get::new("pending".to_owned()))
        .await
        .unwrap()
        .value
        .unwrap();
    assert!(
        !stored.fields.contains_key("u:late"),
        "a call that failed wrote nothing"
    );

    let other = failover
        .run(&op::Update::new("other".to_owned(), late.clone()))
        .await
        .unwrap();
    assert!(
        other.value,
        "a record not in the hand-over goes straight to the primary"
    );

    sup.handover().done("pending");
    let applied = failover
        .run(&op::Update::new("pending".to_owned(), late))
        .await
        .unwrap();
    assert!(applied.value, "once it has arrived, the call goes on");
}
