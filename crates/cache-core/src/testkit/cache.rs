//! The cache behaviour suite: one case per sentence of the `# Behavior` sections of
//! [`Cache`], and a proptest state-machine model against a `HashMap` reference.
//!
//! A backend crate runs all of it with one line per backend in a test file,
//! `palisade_cache_core::cache_suite!(my_fixture);`, where
//! `my_fixture(test_name: &str) -> impl Future<Output = Option<F>>` returns a
//! [`Fixture`] (or `None` after printing a skip line); `palisade-cache-local`'s
//! `tests/suite.rs` is a complete user.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use tokio::sync::Notify;

use super::Fixture;
use crate::backend::{Backend, Run};
use crate::cache::{Cache, CacheBackend, op};
use crate::{ErrorKind, Health, Namespace, Provenance};

/// A long TTL: nothing expires during a case.
pub const LONG_TTL: Duration = Duration::from_secs(600);

/// How long a case polls for a real-time expiry.
const POLL_DEADLINE: Duration = Duration::from_secs(10);

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A cache over the fixture's backend for `tenant`/`namespace`, under a namespace
/// prefix unique to this call.
pub fn cache_for<F: Fixture<Backend: CacheBackend>>(fx: &F, tenant: &str, namespace: &str) -> Cache<F::Backend> {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let prefix = format!("{}-{n}", fx.prefix());
    Cache::new(
        fx.backend(),
        Namespace::new(&prefix, tenant, namespace).expect("valid namespace"),
    )
}

/// Two caches over the same prefix: the same tenant's other namespace, and another
/// tenant's same namespace (the isolation cases).
fn neighbours<F: Fixture<Backend: CacheBackend>>(fx: &F, tenant: &str, namespace: &str) -> [Cache<F::Backend>; 3] {
    let base = cache_for(fx, tenant, namespace);
    let sibling = base.namespace(&format!("{namespace}-other")).expect("sibling");
    // What `Palisade::tenant` hands out: the same backend and counters, another tenant.
    let other_tenant = base.for_tenant(&format!("{tenant}-other")).expect("tenant");
    [base, sibling, other_tenant]
}

/// Polls `get` until the key is gone, within a deadline.
async fn wait_gone<B: CacheBackend>(cache: &Cache<B>, key: &str) {
    let give_up = tokio::time::Instant::now() + POLL_DEADLINE;
    loop {
        if cache.get(key).await.expect("get").value.is_none() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "{key} did not expire within {POLL_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- get -------------------------------------------------------------------------

/// `get` returns the live value last stored, or `None`.
pub async fn get_returns_the_last_value_or_none<F: Fixture<Backend: CacheBackend>>(fx: &F) {
    let c = cache_for(fx, "t", "get");
    assert_eq!(c.get("k").await.unwrap().value, None);
    c.set("k", b"one", LONG_TTL).await.unwrap();
    c.set("k", b"two", LONG_TTL).await.unwrap();
    assert_eq!(c.get("k").await.unwrap().value.as_deref(), Some(&b"two"[..]));
    assert_eq!(c.get("other").await.unwrap().value, None);
}

/// A value `get` returned is the caller's: a later overwrite or delete never changes it,
/// and changing a copy of it never changes the cache.
pub async fn get_returns_a_value_nobody_else_can_change<F: Fixture<Backend: CacheBackend>>(fx: &F) {
    let c = cache_for(fx, "t", "owned");
    c.set("k", b"value", LONG_TTL).await.unwrap();
    let held = c.get("k").await.unwrap().value.unwrap();
    let mut copy = held.to_vec();
    copy.iter_mut().for_each(|b| *b = b'X');
    assert_eq!(c.get("k").await.unwrap().value.as_deref(), Some(&b"value"[..]));
    c.set("k", b"other", LONG_TTL).await.unwrap();
    c.delete("k").await.unwrap();
    assert_eq!(&held[..], b"value", "a returned value never changes");
}

/// Every answer carries the backend's provenance.
pub async fn answers_carry_the_backend_provenance<F: Fixture<Backend: CacheBackend>>(fx: &F) {
    let c = cache_for(fx, "t", "prov");
    let p = fx.provenance();
    assert_eq!(c.get("k").await.unwrap().provenance, p, "a miss has a provenance too");
    assert_eq!(c.set("k", b"v", LONG_TTL).await.unwrap().provenance, p);
    assert_eq!(c.get("k").await.unwrap().provenance, p);
    assert_eq!(c.contains("k").await.unwrap().provenance, p);
    assert_eq!(c.set_if_absent("k", b"v", LONG_TTL).await.unwrap().provenance, p);
    assert_eq!(c.delete("k").await.unwrap().provenance, p);
    assert_eq!(c.clear().await.unwrap().provenance, p);
}

/// Empty or oversized keys, oversized values and a zero TTL are `InvalidInput`, and
/// nothing is written.
pub async fn bad_input_is_invalid_input_and_writes_nothing<F: Fixture<Backend: CacheBackend>>(fx: &F) {
    let c = cache_for(fx, "t", "bad");
    let long_key = "k".repeat(2000);
    for r in [
        c.get("").await.map(drop),
        c.get(&long_key).await.map(drop),
        c.set("", b"v", LONG_TTL).await.map(drop),
        c.set(&long_key, b"v", LONG_TTL).await.map(drop),
        c.set("k", b"v", Duration::ZERO).await.map(drop),
        c.set_if_absent("k", b"v", Duration::ZERO).await.map(drop),
        c.delete("").await.map(drop),
        c.contains(&long_key).await.map(drop),
    ] {
        assert_eq!(r.unwrap_err().kind(), ErrorKind::InvalidInput);
    }
    let limited = c
        .clone()
        .with_limits(crate::CacheLimits::default().with_max_value_len(16));
    let big = vec![7u8; 17];
    assert_eq!(
        limited.set("k", &big, LONG_TTL).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        limited.set_if_absent("k", &big, LONG_TTL).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert!(
        limited.set("k", &big[..16], LONG_TTL).await.is_ok(),
        "exactly the limit is accepted"
    );
    limited.delete("k").await.unwrap();
    let default_limit = vec![0u8; crate::cache::DEFAULT_MAX_VALUE_LEN + 1];
    assert_eq!(
        c.set("k", &default_limit, LONG_TTL).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(c.get("k").await.unwrap().value, None, "nothing was written");
    assert!(!c.contains("k").await.unwrap().value);
}

/// Keys with separators, glob characters, braces, `%`, NUL and unicode are distinct
/// and round-trip.
pub async fn keys_with_special_characters_round_trip<F: Fixture<Backend: CacheBackend>>(fx: &F) {
    let c = cache_for(fx, "t:{x}*", "ns%?[]");
    let keys = [
        "a:b",
        "a",
        "a%3Ab",
        "{tag}",
        "*",
        "?",
        "[x]",
        "%",
        "\\",
        "nul\0byte",
        "naïve 🦀",
        "a:b:c",
        " ",
    ];
    for (i, k) in keys.iter().enumerate() {
        c.set(k, format!("v{i}").as_bytes(), LONG_TTL).await.unwrap();
    }
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(
            c.get(k).await.unwrap().value.as_deref(),
            Some(format!("v{i}").as_bytes()),
            "key {k:?}"
        );
    }
    assert_eq!(c.clear().await.unwrap().value, keys.len() as u64);
}

// ---- set -------------------------------------------------------------------------

/// `set` replaces the value and its TTL.
pub async fn set_replaces_the_value_and_its_ttl<F: Fixture<Backend: CacheBackend>>(fx: &F) {
    let c = cache_for(fx, "t", "replace");
    let short = fx.short_ttl();
    c.set("k", b"short", short).await.unwrap();
    c.set("k", b"long", LONG_TTL).await.unwrap();
    fx.advance(short * 2).await;
    // Under real time, give the short TTL time to pass, bounded.
    if !fx.controls_time() {
        let marker = "marker";
        c.set(marker, b"m", short).await.unwrap();
        wait_gone(&c, marker).await;
    }
    assert_eq!(c.get("k").await.unwrap().value.as_deref(), Some(&b"long"[..]));
}

/// After `ttl` the value is gone: `get` returns `None`, `contains` is false and
/// `set_if_absent` stores again.
pub async fn entries_expire_after_their_ttl<F: Fixture<Backend: CacheBackend>>(fx: &F) {
    let c = cache_for(fx, "t", "expire");
    let ttl = fx.short_ttl();
    c.set("k", b"v", ttl).await.unwrap();
    c.set("long", b"v", LONG_TTL).await.unwrap();
    if fx.controls_time() {
        fx.advance(ttl - Duration::from_millis(1)).await;
        assert!(c.get("k").await.unwrap().value.is_some(), "alive until its TTL");
        fx.advance(Duration::from_millis(1)).await;
    }
    wait_gone(&c, "k").await;
    assert!(!c.contains("k").await.unwrap().value);
    assert!(
        c.get("long").await.unwrap().value.is_some(),
        "another entry keeps its own TTL"
    );
    assert!(c.set_if_absent("k", b"again", LONG_TTL).await.unwrap().value);
    assert_eq!(c.get("k").await.unwrap().value.as_deref(), Some(&b"again"[..]));
}

// ---- set_if_absent -----------------------------------------------------------------

/// `set_if_absent` stores only when nothing live is there, and leaves an existing
/// value unchanged.
pub async fn set_if_absent_stores_only_when_absent<F: Fixture<Backend: CacheBackend>>(fx: &F) {
    let c = cache_for(fx, "t", "nx");
    assert!(c.set_if_absent("k", b"first", LONG_TTL).await.unwrap().value);
    assert!(!c.set_if_absent("k", b"second", LONG_TTL).await.unwrap().value);
    assert_eq!(c.get("k").await.unwrap().value.as_deref(), Some(&b"first"[..]));
}

/// Of many concurrent `set_if_absent` calls on one key exactly one stores.
pub async fn set_if_absent_is_atomic<F: Fixture<Backend: CacheBackend>>(fx: &F) {
    let c = cache_for(fx, "t", "nx-race");
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                (
                    i,
                    c.set_if_absent("k", format!("{i}").as_bytes(), LONG_TTL)
                        .await
                        .unwrap()
                        .value,
                )
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        let (i, stored) = t.await.unwrap();
        if stored {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one winner, got {winners:?}");
    assert_eq!(
        c.get("k").await.unwrap().value.as_deref(),
        Some(format!("{}", winners[0]).as_bytes())
    );
}

// ---- delete / contains ----------------------------------------------------------------

/// `delete` says whether a value was there and removes it; deleting a missing key is
/// not an error.
pub async fn delete_removes_and_reports_presence<F: Fixture<Backend: CacheBackend>>(fx: &F) {
    let c = cache_for(fx, "t", "del");
    c.set("k", b"v", LONG_TTL).await.unwrap();
    assert!(c.delete("k").await.unwrap().value);
    assert_eq!(c.get("k").await.unwrap().value, None);
    assert!(!c.delete("k").await.unwrap().value);
    assert!(!c.delete("never").await.unwrap().value);
}

/// `contains` is true exactly when `get` returns a value.
pub async fn contains_agrees_with_get<F: Fixture<Backend: CacheBackend>>(fx: &F) {
    let c = cache_for(fx, "t", "contains");
    assert!(!c.contains("k").await.unwrap().value);
    c.set("k", b"", LONG_TTL).await.unwrap();
    assert!(c.contains("k").await.unwrap().value, "an empty value is a value");
    assert_eq!(c.get("k").await.unwrap().value.as_deref(), Some(&b""[..]));
    c.delete("k").await.unwrap();
    assert!(!c.contains("k").await.unwrap().value);
}

// ---- clear ----------------------------------------------------------------------------

/// `clear` removes this (tenant, namespace) only and returns how many it removed.
pub async fn clear_is_scoped_to_tenant_and_namespace<F: Fixture<Backend: CacheBackend>>(fx: &F) {
    let [c, sibling, other_tenant] = neighbours(fx, "acme", "sessions");
    for i in 0..1200 {
        // More than one SCAN page.
        c.set(&format!("k{i}"), b"v", LONG_TTL).await.unwrap();
    }
    sibling.set("k1", b"sibling", LONG_TTL).await.unwrap();
    other_tenant.set("k1", b"other", LONG_TTL).await.unwrap();
    assert_eq!(c.clear().await.unwrap().value, 1200);
    for i in [0, 1, 599, 1199] {
        assert_eq!(c.get(&format!("k{i}")).await.unwrap().value, None);
    }
    assert_eq!(sibling.get("k1").await.unwrap().value.as_deref(), Some(&b"sibling"[..]));
    assert_eq!(
        other_tenant.get("k1").await.unwrap().value.as_deref(),
        Some(&b"other"[..])
    );
    assert_eq!(
        c.clear().await.unwrap().value,
        0,
        "clearing an empty namespace removes nothing"
    );
}

/// Two tenants with the same namespace and key never see each other's values.
pub async fn tenants_never_see_each_other<F: Fixture<Backend: CacheBackend>>(fx: &F) {
    let [a, _, b] = neighbours(fx, "tenant", "ns");
    a.set("same", b"a", LONG_TTL).await.unwrap();
    assert_eq!(b.get("same").await.unwrap().value, None);
    assert!(!b.contains("same").await.unwrap().value);
    assert!(b.set_if_absent("same", b"b", LONG_TTL).await.unwrap().value);
    assert_eq!(a.get("same").await.unwrap().value.as_deref(), Some(&b"a"[..]));
    assert_eq!(b.get("same").await.unwrap().value.as_deref(), Some(&b"b"[..]));
    assert!(b.delete("same").await.unwrap().value);
    assert_eq!(a.get("same").await.unwrap().value.as_deref(), Some(&b"a"[..]));
}

// ---- stats ------------------------------------------------------------------------------

/// Stats count hits, misses, sets, deletes and errors by kind, and report the mode.
pub async fn stats_count_every_outcome<F: Fixture<Backend: CacheBackend>>(fx: &F) {
    let c = cache_for(fx, "t", "stats");
    c.get("a").await.unwrap();
    c.set("a", b"v", LONG_TTL).await.unwrap();
    c.get("a").await.unwrap();
    c.get("a").await.unwrap();
    c.set_if_absent("a", b"v", LONG_TTL).await.unwrap();
    c.set_if_absent("b", b"v", LONG_TTL).await.unwrap();
    c.delete("a").await.unwrap();
    let _ = c.get("").await;
    let s = c.stats();
    assert_eq!((s.hits, s.misses, s.sets, s.deletes), (2, 1, 2, 1));
    assert_eq!(s.status.errors_of(ErrorKind::InvalidInput), 1);
    assert_eq!(
        s.status.last_error.as_ref().map(|e| e.kind),
        Some(ErrorKind::InvalidInput)
    );
    assert_eq!(s.status.health, Health::Healthy);
    assert_eq!(s.status.since, None);
    assert_eq!(s.status.mode, c.backend().status().mode);
    let expect_degraded = u64::from(fx.provenance() == Provenance::LocalDegraded);
    assert_eq!(s.degraded_reads, 3 * expect_degraded);
    // Siblings share the counters.
    let sibling = c.namespace("other").unwrap();
    sibling.get("x").await.unwrap();
    assert_eq!(c.stats().misses, 2);
}

// ---- typed ------------------------------------------------------------------------------

/// Typed values round-trip; stored bytes that do not decode are `Codec` errors that
/// change neither the health nor the mode.
pub async fn typed_values_round_trip_and_garbage_is_a_codec_error<F: Fixture<Backend: CacheBackend>>(fx: &F) {
    let c = cache_for(fx, "t", "typed");
    let v = (42u64, "text".to_owned(), vec![1u8, 2, 3]);
    c.set_typed("k", &v, LONG_TTL).await.unwrap();
    assert_eq!(c.get_typed::<(u64, String, Vec<u8>)>("k").await.unwrap().value, Some(v));
    c.set("garbage", b"\x00\xffnot an envelope", LONG_TTL).await.unwrap();
    let e = c.get_typed::<u64>("garbage").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Codec);
    assert!(!e.is_unavailable());
    assert!(e.to_string().contains("garbage"), "{e}");
    let other_version = c.clone().with_codec(crate::Codec::new(2));
    assert_eq!(
        other_version.get_typed::<u64>("k").await.unwrap_err().kind(),
        ErrorKind::Codec
    );
    let s = c.stats();
    assert_eq!(s.status.health, Health::Healthy, "a decode error is not an outage");
    assert_eq!(s.status.errors_of(ErrorKind::Codec), 2);
}

// ---- get_or_load ------------------------------------------------------------------------

struct Loader {
    calls: AtomicUsize,
    release: Notify,
}

impl Loader {
    fn new() -> Arc<Loader> {
        Arc::new(Loader {
            calls: AtomicUsize::new(0),
            release: Notify::new(),
        })
    }
}

async fn wait_for_waiters<B: CacheBackend>(c: &Cache<B>, key: &str, n: usize) {
    let give_up = tokio::time::Instant::now() + POLL_DEADLINE;
    while c.loading_waiters(key) < n {
        assert!(
            tokio::time::Instant::now() < give_up,
            "only {} of {n} callers joined the load",
            c.loading_waiters(key)
        );
        tokio::task::yield_now().await;
    }
}

/// `n` callers of `get_or_load("k")` on `c`, spawned; the one load counts itself in
/// `loader.calls`, waits for `loader.release`, then ends as `end` says, given how many
/// loads came before it.
fn load_callers<B, T>(
    c: &Cache<B>,
    loader: &Arc<Loader>,
    n: usize,
    end: fn(usize) -> Result<T, std::io::Error>,
) -> Vec<tokio::task::JoinHandle<Result<crate::Tagged<T>, crate::Error>>>
where
    B: CacheBackend,
    T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    (0..n)
        .map(|_| {
            let (c, loader) = (c.clone(), Arc::clone(loader));
            tokio::spawn(async move {
                c.get_or_load("k", LONG_TTL, move || async move {
                    let before = loader.calls.fetch_add(1, Ordering::SeqCst);
                    loader.release.notified().await;
                    end(before)
                })
                .await
            })
        })
        .collect()
}

/// N concurrent callers on a miss share one load, and all get its value.
pub async fn get_or_load_runs_one_load_for_concurrent_callers<F: Fixture<Backend: CacheBackend>>(fx: &F) {
    let c = cache_for(fx, "t", "load");
    let loader = Loader::new();
    let n = 20;
    let tasks = load_callers(&c, &loader, n, |_| Ok(String::from("loaded")));
    wait_for_waiters(&c, "k", n).await;
    loader.release.notify_one();
    for t in tasks {
        let v = t.await.unwrap().unwrap();
        assert_eq!(v.value, "loaded");
        assert_eq!(v.provenance, fx.provenance());
    }
    assert_eq!(loader.calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        c.get_typed::<String>("k").await.unwrap().value.as_deref(),
        Some("loaded"),
        "stored"
    );
    assert_eq!(c.loading_waiters("k"), 0);
}

/// A hit never calls the loader.
pub async fn get_or_load_hit_does_not_load<F: Fixture<Backend: CacheBackend>>(fx: &F) {
    let c = cache_for(fx, "t", "load-hit");
    c.set_typed("k", &7u32, LONG_TTL).await.unwrap();
    let v = c
        .get_or_load("k", LONG_TTL, || async {
            Err::<u32, _>(std::io::Error::other("must not be called"))
        })
        .await
        .unwrap();
    assert_eq!(v.value, 7);
}

/// A cancelled caller does not stall the others: the load runs detached.
pub async fn get_or_load_survives_a_cancelled_caller<F: Fixture<Backend: CacheBackend>>(fx: &F) {
    let c = cache_for(fx, "t", "load-cancel");
    let loader = Loader::new();
    let spawn = |c: Cache<F::Backend>, loader: Arc<Loader>| {
        tokio::spawn(async move {
            c.get_or_load("k", LONG_TTL, move || async move {
                loader.calls.fetch_add(1, Ordering::SeqCst);
                loader.release.notified().await;
                Ok::<_, std::io::Error>(5u8)
            })
            .await
        })
    };
    let first = spawn(c.clone(), Arc::clone(&loader));
    wait_for_waiters(&c, "k", 1).await;
    let second = spawn(c.clone(), Arc::clone(&loader));
    wait_for_waiters(&c, "k", 2).await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    loader.release.notify_one();
    assert_eq!(second.await.unwrap().unwrap().value, 5);
    assert_eq!(loader.calls.load(Ordering::SeqCst), 1);
}

/// A loader error reaches every waiter and is not cached.
pub async fn get_or_load_error_reaches_every_waiter_and_is_not_cached<F: Fixture<Backend: CacheBackend>>(fx: &F) {
    let c = cache_for(fx, "t", "load-err");
    let loader = Loader::new();
    let n = 8;
    let tasks = load_callers(&c, &loader, n, |_| Err::<u8, _>(std::io::Error::other("origin down")));
    wait_for_waiters(&c, "k", n).await;
    loader.release.notify_one();
    for t in tasks {
        let e = t.await.unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Load);
        assert!(e.chain().contains("origin down"), "{}", e.chain());
    }
    assert_eq!(loader.calls.load(Ordering::SeqCst), 1);
    assert_eq!(c.get("k").await.unwrap().value, None, "the error was not cached");
    let v = c
        .get_or_load("k", LONG_TTL, || async { Ok::<_, std::io::Error>(9u8) })
        .await
        .unwrap();
    assert_eq!(v.value, 9, "the next call loads again");
}

/// A loader that panics fails every waiting caller with `Load`, and the next call loads
/// again: one panic never leaves the key's callers waiting.
pub async fn get_or_load_panic_fails_every_waiter_and_the_next_call_loads<F: Fixture<Backend: CacheBackend>>(fx: &F) {
    let c = cache_for(fx, "t", "load-panic");
    let loader = Loader::new();
    let n = 8;
    // The first (the only) load panics: the loader's own bug.
    let tasks = load_callers(&c, &loader, n, |before| {
        assert!(before > 0, "the loader panics (expected by this test)");
        Ok(1u8)
    });
    wait_for_waiters(&c, "k", n).await;
    loader.release.notify_one();
    for t in tasks {
        let e = tokio::time::timeout(POLL_DEADLINE, t)
            .await
            .expect("a waiter of a panicked load is answered")
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Load, "{e}");
        assert!(e.chain().contains("panicked"), "{}", e.chain());
    }
    assert_eq!(loader.calls.load(Ordering::SeqCst), 1);
    assert_eq!(c.loading_waiters("k"), 0, "the flight is gone");
    let v = c
        .get_or_load("k", LONG_TTL, || async { Ok::<_, std::io::Error>(9u8) })
        .await
        .unwrap();
    assert_eq!(v.value, 9, "the next call loads again");
}

// ---- the model ----------------------------------------------------------------------------

/// One step of the model.
#[derive(Debug, Clone)]
pub enum ModelOp {
    /// `get`.
    Get(u8),
    /// `set` with a TTL index.
    Set(u8, u8, u8),
    /// `set_if_absent`.
    SetIfAbsent(u8, u8, u8),
    /// `delete`.
    Delete(u8),
    /// `contains`.
    Contains(u8),
    /// `clear`.
    Clear,
    /// Move time (only for fixtures that control time).
    Advance(u16),
}

fn op_strategy(time: bool) -> BoxedStrategy<ModelOp> {
    let k = 0u8..6;
    let base = prop_oneof![
        4 => k.clone().prop_map(ModelOp::Get),
        4 => (k.clone(), any::<u8>(), 0u8..3).prop_map(|(k, v, t)| ModelOp::Set(k, v, t)),
        2 => (k.clone(), any::<u8>(), 0u8..3).prop_map(|(k, v, t)| ModelOp::SetIfAbsent(k, v, t)),
        2 => k.clone().prop_map(ModelOp::Delete),
        2 => k.prop_map(ModelOp::Contains),
        1 => Just(ModelOp::Clear),
    ];
    if time {
        prop_oneof![8 => base, 2 => (1u16..400).prop_map(ModelOp::Advance)].boxed()
    } else {
        base.boxed()
    }
}

/// TTLs of the model, in seconds; with a real clock only the long one is used.
const MODEL_TTLS: [u64; 3] = [10, 60, 600];

/// Runs random operation sequences against the backend and a `HashMap` model (with
/// expiry under the fixture's clock when it controls time) and checks every answer.
pub fn run_model<F: Fixture<Backend: CacheBackend>>(rt: &tokio::runtime::Runtime, fx: &F, cases: u32) {
    super::run_op_sequences(op_strategy(fx.controls_time()), cases, |ops| {
        rt.block_on(check_model(fx, ops))
    });
}

async fn check_model<F: Fixture<Backend: CacheBackend>>(fx: &F, ops: &[ModelOp]) {
    let [c, sibling, _] = neighbours(fx, "model", "ns");
    sibling.set("k0", b"keep", LONG_TTL).await.unwrap();
    // key -> (value, expires at, in model seconds)
    let mut model: HashMap<u8, (u8, u64)> = HashMap::new();
    let mut now = 0u64;
    let ttl = |t: u8| {
        if fx.controls_time() {
            MODEL_TTLS[usize::from(t) % 3]
        } else {
            600
        }
    };
    let live = |m: &HashMap<u8, (u8, u64)>, k: u8, now: u64| m.get(&k).filter(|(_, exp)| *exp > now).map(|(v, _)| *v);
    for (i, op) in ops.iter().enumerate() {
        let key = |k: &u8| format!("k{k}");
        match op {
            ModelOp::Get(k) => {
                let got = c.get(&key(k)).await.unwrap().value;
                assert_eq!(
                    got.as_deref(),
                    live(&model, *k, now).map(|v| vec![v]).as_deref(),
                    "step {i}: {op:?} in {ops:?}"
                );
            }
            ModelOp::Set(k, v, t) => {
                c.set(&key(k), &[*v], Duration::from_secs(ttl(*t))).await.unwrap();
                model.insert(*k, (*v, now + ttl(*t) * 1000));
            }
            ModelOp::SetIfAbsent(k, v, t) => {
                let stored = c
                    .set_if_absent(&key(k), &[*v], Duration::from_secs(ttl(*t)))
                    .await
                    .unwrap()
                    .value;
                let expect = live(&model, *k, now).is_none();
                assert_eq!(stored, expect, "step {i}: {op:?} in {ops:?}");
                if expect {
                    model.insert(*k, (*v, now + ttl(*t) * 1000));
                }
            }
            ModelOp::Delete(k) => {
                let existed = c.delete(&key(k)).await.unwrap().value;
                assert_eq!(existed, live(&model, *k, now).is_some(), "step {i}: {op:?} in {ops:?}");
                model.remove(k);
            }
            ModelOp::Contains(k) => {
                let has = c.contains(&key(k)).await.unwrap().value;
                assert_eq!(has, live(&model, *k, now).is_some(), "step {i}: {op:?} in {ops:?}");
            }
            ModelOp::Clear => {
                let n = c.clear().await.unwrap().value;
                let expect = model.keys().filter(|k| live(&model, **k, now).is_some()).count() as u64;
                assert_eq!(n, expect, "step {i}: {op:?} in {ops:?}");
                model.clear();
            }
            ModelOp::Advance(centis) => {
                // model time is in milliseconds; advance by centis * 100 ms
                let by = u64::from(*centis) * 100;
                fx.advance(Duration::from_millis(by)).await;
                now += by;
            }
        }
    }
    assert_eq!(
        sibling.get("k0").await.unwrap().value.as_deref(),
        Some(&b"keep"[..]),
        "clear stayed in its namespace"
    );
    c.clear().await.unwrap();
    sibling.clear().await.unwrap();
}

/// Generates one `#[tokio::test]` per case of the suite, plus the model, for a fixture
/// constructor `async fn(&str) -> Option<F>`.
#[macro_export]
macro_rules! cache_suite {
    ($make:path) => {
        $crate::cache_suite!(@cases $make;
            get_returns_the_last_value_or_none,
            get_returns_a_value_nobody_else_can_change,
            answers_carry_the_backend_provenance,
            bad_input_is_invalid_input_and_writes_nothing,
            keys_with_special_characters_round_trip,
            set_replaces_the_value_and_its_ttl,
            entries_expire_after_their_ttl,
            set_if_absent_stores_only_when_absent,
            set_if_absent_is_atomic,
            delete_removes_and_reports_presence,
            contains_agrees_with_get,
            clear_is_scoped_to_tenant_and_namespace,
            tenants_never_see_each_other,
            stats_count_every_outcome,
            typed_values_round_trip_and_garbage_is_a_codec_error,
            get_or_load_runs_one_load_for_concurrent_callers,
            get_or_load_hit_does_not_load,
            get_or_load_survives_a_cancelled_caller,
            get_or_load_error_reaches_every_waiter_and_is_not_cached,
            get_or_load_panic_fails_every_waiter_and_the_next_call_loads
        );

        #[test]
        fn cache_model() {
            let rt = ::tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            let Some(fx) = rt.block_on($make("cache_model")) else { return };
            $crate::testkit::cache::run_model(&rt, &fx, 64);
        }

        #[test]
        fn cache_failed_calls_change_nothing() {
            let rt = ::tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            let Some(fx) = rt.block_on($make("cache_failed_calls")) else { return };
            $crate::testkit::cache::run_failed_calls(&rt, &fx, 24);
        }
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(fx) = $make(stringify!($case)).await else { return };
                $crate::testkit::cache::$case(&fx).await;
            }
        )*
    };
}

// ---- failed calls change nothing -----------------------------------------------------

/// Durations around the TTL limits.
const TTL_EDGES: [Duration; 7] = [
    Duration::ZERO,
    Duration::from_nanos(1),
    Duration::from_micros(999),
    crate::limits::MIN_DURATION,
    Duration::from_secs(60),
    Duration::from_secs(crate::limits::MAX_TTL.as_secs() + 1),
    Duration::MAX,
];

/// One write with random, often invalid, arguments.
#[derive(Debug, Clone)]
pub enum BadCacheOp {
    /// `set` with a TTL edge; `true`: a value over the size limit.
    Set(usize, bool),
    /// `set_if_absent` with a TTL edge.
    SetIfAbsent(usize),
    /// The backend's own `set`, bypassing the cache's checks, with a TTL edge.
    BackendSet(usize),
}

/// Random writes, many of them invalid, on a key that holds a value: after any write
/// that returns an error the key reads as before and is byte for byte what it was
/// (where the fixture can see the store); a refused argument is `InvalidInput`.
pub fn run_failed_calls<F: Fixture<Backend: CacheBackend>>(rt: &tokio::runtime::Runtime, fx: &F, cases: u32) {
    let op = prop_oneof![
        (0..TTL_EDGES.len(), any::<bool>()).prop_map(|(t, big)| BadCacheOp::Set(t, big)),
        (0..TTL_EDGES.len()).prop_map(BadCacheOp::SetIfAbsent),
        (0..TTL_EDGES.len()).prop_map(BadCacheOp::BackendSet),
    ];
    super::run_op_sequences(op, cases, |ops| rt.block_on(check_failed_calls(fx, ops)));
}

async fn check_failed_calls<F: Fixture<Backend: CacheBackend>>(fx: &F, ops: &[BadCacheOp]) {
    let c = cache_for(fx, "tenant", "bad-writes");
    let key = c.ns().key(crate::Contract::Cache, "k").unwrap();
    for op in ops {
        c.set("k", b"before", Duration::from_secs(600)).await.unwrap();
        let before = (c.get("k").await.unwrap().value, fx.snapshot(&key).await);
        let big = vec![0u8; crate::cache::DEFAULT_MAX_VALUE_LEN + 1];
        let r = match *op {
            BadCacheOp::Set(t, large) => c
                .set("k", if large { &big } else { b"after" }, TTL_EDGES[t])
                .await
                .map(drop),
            BadCacheOp::SetIfAbsent(t) => c.set_if_absent("k", b"after", TTL_EDGES[t]).await.map(drop),
            BadCacheOp::BackendSet(t) => c
                .backend()
                .run(&op::Set::new(
                    key.clone(),
                    bytes::Bytes::from_static(b"after"),
                    TTL_EDGES[t],
                ))
                .await
                .map(drop),
        };
        if let Err(e) = r {
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{op:?}: {e:?}");
            let after = (c.get("k").await.unwrap().value, fx.snapshot(&key).await);
            assert_eq!(after, before, "{op:?} failed with {e:?} but changed the value");
        }
    }
}
