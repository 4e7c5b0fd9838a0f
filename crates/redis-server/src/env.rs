//! What `cargo xtask ci` hands to the tests, and the skip rule.
//!
//! Under `cargo xtask ci` ([`REQUIRE`] is set) a Redis-backed test never skips: a
//! missing server is a failure. Under a plain `cargo test` with no server, each such
//! test prints one `skip` line on stderr and returns.
//!
//! These run inside tests only: a setup that cannot work fails the test (a panic).

#![allow(clippy::panic)]

use std::io::Write as _;

use std::time::Duration;

use crate::server::{RedisCluster, RedisServer};

/// `redis://127.0.0.1:PORT` of the shared standalone server.
pub const REDIS_URL: &str = "PALISADE_TEST_REDIS_URL";
/// Comma-separated `127.0.0.1:PORT` seed nodes of the shared 3-master cluster.
pub const CLUSTER_NODES: &str = "PALISADE_TEST_CLUSTER_NODES";
/// `rediss://127.0.0.1:PORT` of the shared TLS server (certificate for 127.0.0.1).
pub const TLS_URL: &str = "PALISADE_TEST_TLS_URL";
/// The PEM file of the CA that signed the shared TLS server's certificate.
pub const TLS_CA: &str = "PALISADE_TEST_TLS_CA";
/// `redis-sentinel://…/palisade` of the shared Sentinel topology.
pub const SENTINEL_URL: &str = "PALISADE_TEST_SENTINEL_URL";
/// Set (to anything) by `cargo xtask ci`: Redis-backed tests must not skip.
pub const REQUIRE: &str = "PALISADE_TEST_REQUIRE_REDIS";

/// Whether Redis-backed tests must run.
pub fn required() -> bool {
    std::env::var_os(REQUIRE).is_some()
}

/// Prints the one skip line of `test` (bypassing libtest's capture, so it is seen).
pub fn skip(test: &str, why: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "skip {test}: {why} (run `cargo xtask ci` to start Redis)"
    );
}

fn var_or_skip(test: &str, var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v),
        _ if required() => {
            panic!("{test}: {var} is not set but {REQUIRE} is: Redis tests must not skip")
        }
        _ => {
            skip(test, &format!("{var} is not set"));
            None
        }
    }
}

/// The shared standalone server's URL, or `None` after printing a skip line.
pub fn redis_url(test: &str) -> Option<String> {
    var_or_skip(test, REDIS_URL)
}

/// The shared cluster's seed nodes (`host:port`), or `None` after printing a skip line.
pub fn cluster_nodes(test: &str) -> Option<Vec<String>> {
    var_or_skip(test, CLUSTER_NODES).map(|v| {
        v.split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

/// The shared TLS server's URL and CA file, or `None` after printing a skip line.
pub fn tls(test: &str) -> Option<(String, std::path::PathBuf)> {
    let url = var_or_skip(test, TLS_URL)?;
    let ca = var_or_skip(test, TLS_CA)?;
    Some((url, ca.into()))
}

/// The shared Sentinel topology's URL, or `None` after printing a skip line.
pub fn sentinel_url(test: &str) -> Option<String> {
    var_or_skip(test, SENTINEL_URL)
}

/// A private server for a fault test, or `None` after printing a skip line when no
/// `redis-server` binary exists and tests are not required to run.
pub fn private_server(test: &str) -> Option<RedisServer> {
    private_servers(test)
        .then(|| RedisServer::start().unwrap_or_else(|e| panic!("{test}: cannot start redis-server: {e}")))
}

/// A private cluster for a fault test ([`RedisCluster::start_with`]), or `None` after
/// printing a skip line, as [`private_server`].
pub fn private_cluster(test: &str, masters: usize, replicas: usize, node_timeout: Duration) -> Option<RedisCluster> {
    private_servers(test).then(|| {
        RedisCluster::start_with(masters, replicas, node_timeout)
            .unwrap_or_else(|e| panic!("{test}: cannot start a cluster: {e}"))
    })
}

/// Whether this machine can start private servers for `test` (a `redis-server`
/// binary, or tests required to run, where a missing one then fails); else prints the
/// skip line.
pub fn private_servers(test: &str) -> bool {
    let ok = RedisServer::binary_available() || required();
    if !ok {
        skip(test, "no redis-server binary");
    }
    ok
}

/// A key prefix unique to this process and call, so that tests sharing a server never
/// see each other's keys (no FLUSHALL anywhere).
pub fn unique_prefix(test: &str) -> String {
    format!("t{}-{}-{:08x}", std::process::id(), test, fastrand::u32(..))
}
