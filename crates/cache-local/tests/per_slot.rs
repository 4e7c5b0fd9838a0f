//! Degraded mode over a partitioned primary, as `Failover` sees it: only the slots found
//! unreachable go to the fallback, and a slot that went there stays there until the
//! outage is handed over — even once the primary reaches it again — so a degraded
//! write is never shadowed by the primary's older value. The primary here is a local
//! cache split into two slots whose reachability the test switches; the real thing is
//! a Redis Cluster (`palisade-cache-redis`'s `cluster_faults.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use palisade_cache_core::cache::op;
use palisade_cache_core::{
    Backend, BackendStatus, BoxFuture, Component, Endpoint, Error, Events, Failover, FailoverOptions, Mode, Provenance,
    Run, SupervisorConfig, SupervisorContext, Tagged,
};
use palisade_cache_local::LocalCache;

/// A local cache whose keys live on slot 0 or 1 (the key's last character), each of
/// which can be made unreachable.
#[derive(Clone, Default)]
struct Partitioned {
    store: LocalCache,
    down: Arc<[AtomicBool; 2]>,
}

fn slot(key: &str) -> u16 {
    u16::from(key.ends_with('1'))
}

impl Partitioned {
    fn set_down(&self, slot: u16, down: bool) {
        self.down[usize::from(slot)].store(down, Ordering::SeqCst);
    }
    fn check(&self, key: &str) -> Result<(), Error> {
        if self.down[usize::from(slot(key))].load(Ordering::SeqCst) {
            return Err(Error::Unavailable {
                backend: Endpoint::named(format!("slot {}", slot(key))),
                op: "cache",
                source: "down".into(),
            });
        }
        Ok(())
    }
}

impl Backend for Partitioned {
    async fn probe(&self) -> Result<(), Error> {
        match self.down.iter().any(|d| d.load(Ordering::SeqCst)) {
            true => Err(Error::Unavailable {
                backend: Endpoint::named("a slot"),
                op: "probe",
                source: "down".into(),
            }),
            false => Ok(()),
        }
    }
    fn status(&self) -> BackendStatus {
        self.store.status()
    }
    fn reaches(&self, slot: u16) -> bool {
        !self.down[usize::from(slot)].load(Ordering::SeqCst)
    }
    fn topology_changed(&self) -> BoxFuture<'static, ()> {
        Box::pin(std::future::pending())
    }
}

impl Run<op::Get> for Partitioned {
    async fn run(&self, op: &op::Get) -> Result<Tagged<Option<bytes::Bytes>>, Error> {
        self.check(&op.key)?;
        let t = self.store.run(op).await?;
        Ok(Tagged::new(t.value, Provenance::Distributed))
    }
    fn slot(&self, op: &op::Get) -> Option<u16> {
        Some(slot(&op.key))
    }
}

impl Run<op::Set> for Partitioned {
    async fn run(&self, op: &op::Set) -> Result<Tagged<()>, Error> {
        self.check(&op.key)?;
        self.store.run(op).await?;
        Ok(Tagged::new((), Provenance::Distributed))
    }
    fn slot(&self, op: &op::Set) -> Option<u16> {
        Some(slot(&op.key))
    }
}

impl Run<op::Clear> for Partitioned {
    async fn run(&self, op: &op::Clear) -> Result<Tagged<u64>, Error> {
        self.store.run(op).await
    }
}

fn set(key: &str, v: &'static str) -> op::Set {
    op::Set::new(
        key.to_owned(),
        bytes::Bytes::from_static(v.as_bytes()),
        Duration::from_secs(60),
    )
}

async fn get(f: &Failover<Partitioned, LocalCache>, key: &str) -> (Option<bytes::Bytes>, Provenance) {
    let t = f.run(&op::Get::new(key.to_owned())).await.unwrap();
    (t.value, t.provenance)
}

#[tokio::test]
async fn only_unreachable_slots_fall_back_and_a_fallen_back_slot_stays_there_until_the_hand_over() {
    let primary = Partitioned::default();
    // Probes an hour apart: nothing ends this outage during the test but the test.
    let config = SupervisorConfig::default()
        .with_probe_period(Duration::from_secs(3600))
        .with_backoff_min(Duration::from_secs(3600));
    let events = Events::default();
    let mut rx = events.subscribe();
    let ctx = SupervisorContext::new(Component::Cache, Mode::ExplicitDegraded, events).with_config(config);
    let f = Failover::new(
        primary.clone(),
        LocalCache::default(),
        ctx,
        FailoverOptions::default(),
        None,
    )
    .unwrap();
    f.run(&set("a1", "old")).await.unwrap();
    f.run(&set("b0", "old")).await.unwrap();

    // Slot 1 fails: the call that finds it is served by the fallback.
    primary.set_down(1, true);
    f.run(&set("a1", "degraded")).await.unwrap();
    assert!(!f.supervisor().is_healthy(), "the outage started");
    assert_eq!(get(&f, "a1").await.1, Provenance::LocalDegraded);
    // Slot 0 still answers from the primary during the outage, writes included.
    assert_eq!(get(&f, "b0").await, (Some("old".into()), Provenance::Distributed));
    f.run(&set("b0", "new")).await.unwrap();
    assert_eq!(get(&f, "b0").await, (Some("new".into()), Provenance::Distributed));

    // Slot 1 is reachable again (a promoted replica) but the outage is not handed over:
    // its degraded write must not be shadowed by the primary's older value.
    primary.set_down(1, false);
    assert_eq!(
        get(&f, "a1").await,
        (Some("degraded".into()), Provenance::LocalDegraded),
        "a slot that fell back stays on the fallback until the hand-over"
    );
    // A key of slot 1 never touched during the outage also stays on the fallback: the
    // slot, not the key, is what fell back.
    assert_eq!(get(&f, "c1").await.1, Provenance::LocalDegraded);

    // One event for the whole outage.
    let first = rx.try_recv().unwrap();
    assert!(
        matches!(first.kind, palisade_cache_core::EventKind::Degraded),
        "{first:?}"
    );
    assert!(rx.try_recv().is_err(), "one Degraded, nothing else yet");
}
