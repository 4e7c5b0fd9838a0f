//! Many tenants over one `Palisade`: one connection, one supervisor per contract, one
//! event stream, events that name the tenant whose call found the outage.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

#[cfg(feature = "redis")]
use palisade::{Decision, JobRecord, Policy, Provenance, Rate};
use palisade::{ErrorKind, Palisade};

#[tokio::test]
async fn tenant_names_are_validated_and_keys_stay_apart() {
    let p = Palisade::builder().tenant("org-1").build().await.unwrap();
    assert_eq!(p.tenant("").unwrap_err().kind(), ErrorKind::InvalidInput);
    assert_eq!(
        p.tenant(&"x".repeat(20_000)).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    // Names with the layout's separators are escaped, never confused with another.
    let odd = p.tenant("org:1").unwrap();
    assert_eq!(odd.name(), "org:1");
    let ttl = Duration::from_secs(60);
    p.cache().set("k", b"one", ttl).await.unwrap();
    odd.cache().set("k", b"odd", ttl).await.unwrap();
    assert_eq!(p.cache().get("k").await.unwrap().value.as_deref(), Some(&b"one"[..]));
    assert_eq!(odd.cache().get("k").await.unwrap().value.as_deref(), Some(&b"odd"[..]));
    assert_eq!(odd.cache().clear().await.unwrap().value, 1);
    assert_eq!(p.cache().get("k").await.unwrap().value.as_deref(), Some(&b"one"[..]));
    assert_eq!(p.tenant_name(), "org-1");
}

#[cfg(feature = "redis")]
fn clients(addr: &str) -> usize {
    let list = palisade_redis_server::resp::command(addr, &["CLIENT", "LIST"])
        .unwrap()
        .text()
        .unwrap();
    // This connection is one of them.
    list.lines().filter(|l| !l.trim().is_empty()).count() - 1
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_share_one_connection_and_one_supervisor() {
    use palisade::{Component, EventKind};
    use palisade_redis_server::env;
    let Some(mut server) = env::private_server("tenants_one_connection") else {
        return;
    };
    let events = palisade::Events::default();
    let mut rx = events.subscribe();
    let p = Palisade::builder()
        .events(events)
        .redis_url(&server.url())
        .tenant("org-1")
        // A server this test just started: no lease can predate it.
        .throttle_restart_hold(false)
        .command_timeout(Duration::from_millis(300))
        .probe_period(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let before = clients(&server.addr());
    let ttl = Duration::from_secs(60);
    let policy = Policy::builder().global_cap(1).build().unwrap();
    let rate = Rate::per_second(10).build().unwrap();
    for name in ["org-2", "org-3"] {
        let t = p.tenant(name).unwrap();
        t.cache().set("k", name.as_bytes(), ttl).await.unwrap();
        t.jobs().create("j", &JobRecord::queued(), ttl).await.unwrap();
        let Decision::Acquired(permit) = t.throttle().acquire("mx", &policy).await.unwrap().value else {
            panic!("each tenant has its own gates");
        };
        permit.release().await.unwrap();
        t.rate_limiter().limit("ip", &rate).await.unwrap();
    }
    assert_eq!(clients(&server.addr()), before, "tenants open no connection");
    assert_eq!(
        p.cache().get("k").await.unwrap().value,
        None,
        "org-1 sees none of org-2's"
    );
    assert_eq!(
        p.tenant("org-3")
            .unwrap()
            .cache()
            .get("k")
            .await
            .unwrap()
            .value
            .as_deref(),
        Some(&b"org-3"[..])
    );

    // One supervisor: the first tenant to hit the outage is named, once.
    server.kill();
    let e = p.tenant("org-2").unwrap().cache().get("k").await.unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    let down = rx
        .try_recv()
        .expect("the outage is announced during the call that found it");
    assert_eq!(down.kind, EventKind::UnavailableAtRuntime { op: "cache.get" });
    assert_eq!(down.component, Component::Cache);
    assert_eq!(down.tenant.as_deref(), Some("org-2"));
    assert!(p.cache().get("k").await.unwrap_err().is_unavailable());
    assert!(
        rx.try_recv().is_err(),
        "the same outage is not announced again for another tenant"
    );
    let stats = p.cache().stats().status;
    assert_eq!(
        stats.errors_of(ErrorKind::Unavailable) + stats.errors_of(ErrorKind::Timeout),
        2,
        "one counter set for every tenant: {stats:?}"
    );

    server.start_again().unwrap();
    let recovered = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let e = rx.recv().await.unwrap();
            if matches!(e.kind, EventKind::Recovered { .. }) && e.component == Component::Cache {
                return e;
            }
        }
    })
    .await
    .expect("Recovered in time");
    assert_eq!(recovered.tenant, None, "a probe's recovery is no tenant's call");
    let t = p.tenant("org-2").unwrap().cache().set("k", b"back", ttl).await.unwrap();
    assert_eq!(t.provenance, Provenance::Distributed);
}
