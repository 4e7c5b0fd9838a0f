//! The cache behaviour suite and model against the in-process backend, under a manual
//! clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_cache_core::testkit::ManualFixture;
use palisade_cache_local::{LocalCache, LocalCacheConfig};

async fn local(test: &str) -> Option<ManualFixture<LocalCache>> {
    Some(ManualFixture::new(test, |clock| {
        LocalCache::new(LocalCacheConfig::default().with_clock(clock))
    }))
}

palisade_cache_core::cache_suite!(local);
