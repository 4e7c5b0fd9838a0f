#![doc = include_str!("../README.md")]

mod cache;

pub use cache::{DEFAULT_CAPACITY_BYTES, LocalCache, LocalCacheConfig};
