//! Every contract suite, plain and in strict and degraded mode, against the shared
//! Redis Cluster.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

common::deployment_suites!(crate::common::cluster);
