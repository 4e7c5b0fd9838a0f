//! The cache behaviour suite and model against the in-process backend, under a manual
//! clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use palisade_cache_core::testkit::Fixture;
use palisade_cache_core::{BoxFuture, ManualClock, Provenance};
use palisade_cache_local::{LocalCache, LocalCacheConfig};

struct Local {
    cache: LocalCache,
    clock: ManualClock,
    prefix: String,
}

impl Fixture for Local {
    type Backend = LocalCache;
    fn backend(&self) -> LocalCache {
        self.cache.clone()
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
    let cache = LocalCache::new(LocalCacheConfig::default().with_clock(clock.shared()));
    Some(Local {
        cache,
        clock,
        prefix: format!("local-{test}"),
    })
}

palisade_cache_core::cache_suite!(local);
