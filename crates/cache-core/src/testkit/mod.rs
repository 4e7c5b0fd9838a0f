//! Test helpers and behaviour suites. **Not API-stable**: enable the `testkit` feature
//! only from `[dev-dependencies]`.
//!
//! - [`server`]: a private `redis-server` (and a 3-master cluster) on loopback ports
//!   picked at random, that a test can kill (SIGKILL), pause (SIGSTOP), resume and
//!   restart on the same port.
//! - [`resp`]: a minimal blocking RESP client, to set servers up and to look at what
//!   really landed in Redis without going through the code under test.
//! - [`mod@env`]: the addresses that `cargo xtask ci` hands to the tests, and the skip rule.
//! - [`glob`]: Redis's glob matcher, ported, for proving SCAN patterns.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

pub mod cache;
pub mod env;
pub mod glob;
pub mod resp;
pub mod server;
