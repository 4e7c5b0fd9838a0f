#![doc = include_str!("../README.md")]

mod acl;
pub mod batch;
mod cache;
mod cluster;
mod config;
mod connection;
mod dedicated;
mod jobs;
mod script;
mod sentinel;
mod throttle;
#[cfg(feature = "tls")]
mod tls;

pub use acl::{ACL_COMMANDS, acl_rule};
pub use batch::{BatchStats, Batched, IN_FLIGHT, MAX_BATCH};
pub use cache::RedisCache;
pub use cluster::{CLUSTER_REFRESH, CLUSTER_REFRESH_URGENT, SLOTS, slot_of};
pub use config::{DEFAULT_COMMAND_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_SENTINEL_POLL, RedisConfig, TlsOptions};
pub use connection::{BACKSTOP, Bounded, ConnectionInfo, IntoError, RedisConnection, ServerInfo};
pub use dedicated::{DEFAULT_DEDICATED_POOL_SIZE, MAX_BLOCK, PoolStats};
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

/// Every script that batches ([`Batched`]: alone and batched) and the number of keys
/// one call takes: for the same tests. Not API-stable.
#[doc(hidden)]
pub fn batched_scripts() -> Vec<(&'static Batched, usize)> {
    let mut all = jobs::batched_scripts();
    all.extend(throttle::batched_scripts());
    all
}

/// What every Redis backend is: its probe is a `PING` through its connection (on a
/// cluster: every master, every slot owned), it reports itself healthy (the strict and
/// degraded wrappers own the mode and health), and on a cluster it says which slots it
/// reaches and when the slot table changed.
macro_rules! redis_backend {
    ($($ty:ty),*) => {$(
        impl palisade_cache_core::Backend for $ty {
            async fn probe(&self) -> Result<(), palisade_cache_core::Error> {
                self.connection().ping().await
            }
            fn status(&self) -> palisade_cache_core::BackendStatus {
                palisade_cache_core::BackendStatus::new(
                    palisade_cache_core::Mode::StrictDistributed,
                    palisade_cache_core::Health::Healthy,
                )
            }
            fn reaches(&self, slot: u16) -> bool {
                self.connection().reaches(slot)
            }
            fn topology_changed(&self) -> palisade_cache_core::BoxFuture<'static, ()> {
                let changes = self.connection().topology_changes();
                Box::pin(async move {
                    match changes {
                        Some(mut rx) => {
                            if rx.changed().await.is_err() {
                                std::future::pending::<()>().await;
                            }
                        }
                        None => std::future::pending().await,
                    }
                })
            }
        }
    )*};
}

redis_backend!(RedisCache, RedisJobStore, RedisThrottle);
