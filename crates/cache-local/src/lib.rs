#![doc = include_str!("../README.md")]

mod cache;
mod jobs;
mod sweep;
mod throttle;

pub use cache::{DEFAULT_CAPACITY_BYTES, LocalCache, LocalCacheConfig};
pub use jobs::LocalJobStore;
pub use throttle::LocalThrottle;

/// What every in-process backend is: always reachable, in local mode.
macro_rules! local_backend {
    ($($ty:ty),*) => {$(
        impl palisade_cache_core::Backend for $ty {
            async fn probe(&self) -> Result<(), palisade_cache_core::Error> {
                Ok(())
            }
            fn status(&self) -> palisade_cache_core::BackendStatus {
                palisade_cache_core::BackendStatus::new(
                    palisade_cache_core::Mode::LocalOnly,
                    palisade_cache_core::Health::Healthy,
                )
            }
        }
    )*};
}

local_backend!(LocalCache, LocalJobStore, LocalThrottle);
