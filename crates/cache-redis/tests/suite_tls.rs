//! Every contract suite, plain and in strict and degraded mode, over TLS (the shared TLS
//! server `cargo xtask ci` starts, its certificate checked against a test CA).
#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

common::deployment_suites!(crate::common::tls);
