#![doc = include_str!("../README.md")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod env;
pub mod not_redis;
pub mod resp;
pub mod sentinel;
pub mod server;
pub mod tls;
