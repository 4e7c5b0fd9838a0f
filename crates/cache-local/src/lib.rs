#![doc = include_str!("../README.md")]

mod cache;
mod jobs;
mod sweep;
mod throttle;

pub use cache::{DEFAULT_CAPACITY_BYTES, LocalCache, LocalCacheConfig};
pub use jobs::LocalJobStore;
pub use throttle::LocalThrottle;
