#![doc = include_str!("../README.md")]

mod cache;
mod connection;

pub use cache::RedisCache;
pub use connection::{DEFAULT_COMMAND_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, RedisConfig, RedisConnection, ServerInfo};
pub use fred;
