//! What the in-process backend promises beyond the shared contract.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use palisade_cache_core::cache::op;
use palisade_cache_core::{Backend, Run};
use palisade_cache_core::{ErrorKind, ManualClock, Provenance};
use palisade_cache_local::{LocalCache, LocalCacheConfig};

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn capacity_is_bounded_by_weight_in_bytes() {
    // Each entry weighs key (4) + value (1000) + 64 = 1068 bytes; 10 fit in 10_700.
    let cache = LocalCache::new(LocalCacheConfig::default().with_capacity_bytes(10_700));
    for i in 0..50 {
        cache
            .run(&op::Set::new(
                format!("k{i:03}"),
                bytes::Bytes::copy_from_slice(&[0u8; 1000]),
                HOUR,
            ))
            .await
            .unwrap();
    }
    let weight = cache.weighted_size().await;
    assert!(weight <= 10_700, "weighted size {weight} exceeds the capacity");
    assert!(cache.len() <= 10, "{} entries live", cache.len());
    assert!(cache.len() >= 8, "LRU keeps the newest entries, got {}", cache.len());
    assert!(
        cache
            .run(&op::Get::new("k049".to_owned()))
            .await
            .unwrap()
            .value
            .is_some(),
        "a brand-new key is admitted (LRU, not TinyLFU)"
    );
}

#[tokio::test]
async fn an_entry_heavier_than_the_capacity_is_refused_not_silently_dropped() {
    let cache = LocalCache::new(LocalCacheConfig::default().with_capacity_bytes(1000));
    let e = cache
        .run(&op::Set::new(
            "k".to_owned(),
            bytes::Bytes::copy_from_slice(&[0u8; 1000]),
            HOUR,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert_eq!(
        cache
            .run(&op::SetIfAbsent::new(
                "k".to_owned(),
                bytes::Bytes::copy_from_slice(&[0u8; 1000]),
                HOUR
            ))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
    assert!(
        cache
            .run(&op::Set::new(
                "k".to_owned(),
                bytes::Bytes::copy_from_slice(&[0u8; 100]),
                HOUR
            ))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn overwriting_a_key_never_evicts_another() {
    let cache = LocalCache::new(LocalCacheConfig::default().with_capacity_bytes(10_700));
    for i in 0..10 {
        cache
            .run(&op::Set::new(
                format!("k{i:03}"),
                bytes::Bytes::copy_from_slice(&[i as u8; 1000]),
                HOUR,
            ))
            .await
            .unwrap();
    }
    for round in 0..200u32 {
        cache
            .run(&op::Set::new(
                "k000".to_owned(),
                bytes::Bytes::copy_from_slice(&[(round % 251) as u8; 1000]),
                HOUR,
            ))
            .await
            .unwrap();
    }
    cache.weighted_size().await;
    for i in 1..10 {
        assert_eq!(
            cache
                .run(&op::Get::new(format!("k{i:03}")))
                .await
                .unwrap()
                .value
                .as_deref(),
            Some(&[i as u8; 1000][..]),
            "k{i:03} was evicted by overwrites of k000"
        );
    }
    assert_eq!(cache.len(), 10);
}

#[tokio::test]
async fn len_contains_and_get_never_count_an_expired_entry() {
    let clock = ManualClock::new();
    let cache = LocalCache::new(LocalCacheConfig::default().with_clock(clock.shared()));
    cache
        .run(&op::Set::new(
            "short".to_owned(),
            bytes::Bytes::copy_from_slice(b"v"),
            Duration::from_secs(10),
        ))
        .await
        .unwrap();
    cache
        .run(&op::Set::new(
            "long".to_owned(),
            bytes::Bytes::copy_from_slice(b"v"),
            HOUR,
        ))
        .await
        .unwrap();
    assert_eq!(cache.len(), 2);
    clock.advance(Duration::from_secs(10));
    assert_eq!(cache.len(), 1);
    assert!(!cache.run(&op::Contains::new("short".to_owned())).await.unwrap().value);
    assert_eq!(cache.run(&op::Get::new("short".to_owned())).await.unwrap().value, None);
    assert!(
        !cache.run(&op::Delete::new("short".to_owned())).await.unwrap().value,
        "an expired entry was not there"
    );
    assert_eq!(
        cache.run(&op::Clear::new("".to_owned())).await.unwrap().value,
        1,
        "only the live entry counts"
    );
    assert!(cache.is_empty());
}

#[tokio::test]
async fn an_overwrite_resets_the_ttl() {
    let clock = ManualClock::new();
    let cache = LocalCache::new(LocalCacheConfig::default().with_clock(clock.shared()));
    cache
        .run(&op::Set::new(
            "k".to_owned(),
            bytes::Bytes::copy_from_slice(b"1"),
            Duration::from_secs(10),
        ))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(9));
    cache
        .run(&op::Set::new(
            "k".to_owned(),
            bytes::Bytes::copy_from_slice(b"2"),
            Duration::from_secs(10),
        ))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(9));
    assert_eq!(
        cache.run(&op::Get::new("k".to_owned())).await.unwrap().value.as_deref(),
        Some(&b"2"[..])
    );
}

#[tokio::test]
async fn with_the_system_clock_moka_reclaims_expired_entries() {
    let cache = LocalCache::default();
    cache
        .run(&op::Set::new(
            "k".to_owned(),
            bytes::Bytes::copy_from_slice(&[0u8; 100]),
            Duration::from_millis(30),
        ))
        .await
        .unwrap();
    assert!(cache.weighted_size().await > 0);
    let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
    while cache.weighted_size().await > 0 {
        assert!(
            tokio::time::Instant::now() < give_up,
            "moka never reclaimed the expired entry"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cache.len(), 0);
}

#[tokio::test]
async fn the_local_backend_reports_local_only_and_local_provenance() {
    let cache = LocalCache::default();
    assert_eq!(cache.status().mode, palisade_cache_core::Mode::LocalOnly);
    assert_eq!(
        cache.run(&op::Get::new("k".to_owned())).await.unwrap().provenance,
        Provenance::Local
    );
    assert!(cache.probe().await.is_ok());
}

#[test]
fn a_load_whose_task_is_dropped_unpolled_still_answers_its_waiters() {
    use palisade_cache_core::{Cache, Namespace};
    let cache = Cache::new(
        LocalCache::new(LocalCacheConfig::default()),
        Namespace::new("p", "t", "unpolled").unwrap(),
    );
    let mut first = Box::pin(cache.get_or_load("k", HOUR, || async { Ok::<_, std::io::Error>(1u8) }));
    // Polled once on a runtime that then shuts down: the miss is seen and the load task
    // is spawned there, but never runs.
    let doomed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    doomed.block_on(async {
        tokio::select! {
            biased;
            _ = &mut first => panic!("a miss cannot be answered before its load runs"),
            () = std::future::ready(()) => {}
        }
    });
    assert_eq!(cache.loading_waiters("k"), 1, "the load is in flight");
    drop(doomed);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let e = tokio::time::timeout(Duration::from_secs(10), first)
            .await
            .expect("a waiter of a load whose task was dropped is answered")
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Load, "{e}");
        assert_eq!(cache.loading_waiters("k"), 0, "the flight is gone");
        let v = cache
            .get_or_load("k", HOUR, || async { Ok::<_, std::io::Error>(9u8) })
            .await
            .unwrap();
        assert_eq!(v.value, 9, "the next call loads again");
    });
}
