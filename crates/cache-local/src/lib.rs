#![doc = include_str!("../README.md")]

mod cache;
mod jobs;

pub use cache::{DEFAULT_CAPACITY_BYTES, LocalCache, LocalCacheConfig};
pub use jobs::LocalJobStore;
