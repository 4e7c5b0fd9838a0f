//! Every contract suite — cache, job store, throttle and rate limiter — plain, in strict
//! mode and in degraded mode over a healthy server (while Redis answers, both wrappers
//! must be indistinguishable from Redis itself), against the shared standalone
//! redis-server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

common::deployment_suites!(crate::common::standalone);
