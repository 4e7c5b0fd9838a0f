#![doc = include_str!("../README.md")]

mod acl;
mod cache;
mod config;
mod connection;
mod jobs;
mod script;
mod sentinel;
mod throttle;
#[cfg(feature = "tls")]
mod tls;

pub use acl::{ACL_COMMANDS, acl_rule};
pub use cache::RedisCache;
pub use config::{DEFAULT_COMMAND_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_SENTINEL_POLL, RedisConfig, TlsOptions};
pub use connection::{BACKSTOP, ConnectionInfo, RedisConnection, ServerInfo};
pub use fred;
pub use jobs::RedisJobStore;
pub use script::LuaScript;
pub use throttle::RedisThrottle;

/// Every Lua script palisade runs and the number of keys each takes: for tests that run
/// them directly (a failed script must have written nothing). Not API-stable.
#[doc(hidden)]
pub fn all_scripts() -> Vec<(&'static LuaScript, usize)> {
    let mut all = jobs::scripts();
    all.extend(throttle::scripts());
    all
}
