#![doc = include_str!("../README.md")]

mod cache;
mod connection;
mod jobs;
mod script;
mod throttle;

pub use cache::RedisCache;
pub use connection::{
    BACKSTOP, DEFAULT_COMMAND_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, RedisConfig, RedisConnection, ServerInfo,
};
pub use fred;
pub use jobs::RedisJobStore;
pub use script::LuaScript;
pub use throttle::RedisThrottle;
