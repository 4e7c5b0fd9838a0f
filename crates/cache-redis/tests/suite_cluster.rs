//! The cache behaviour suite and model against a real 3-master Redis Cluster.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

palisade_cache_core::cache_suite!(common::cluster_cache);
