//! Every contract suite, plain and in strict and degraded mode, through Redis Sentinel
//! (the shared topology `cargo xtask ci` starts: a primary, a replica, three sentinels).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

common::deployment_suites!(crate::common::sentinel);
