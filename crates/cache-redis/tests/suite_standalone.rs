//! The cache behaviour suite and model against a real standalone redis-server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

palisade_cache_core::cache_suite!(common::standalone_cache);
