//! Dedicated connections for blocking commands, pooled with bb8.
//!
//! A blocking command (`BLPOP`) holds its connection until it returns: on the shared,
//! multiplexed connection it would stall every command queued behind it. So each one
//! runs on a connection of its own, taken from a bounded pool.
//!
//! # Behavior
//!
//! - Each pooled connection is a [`RedisConnection`] of its own, built from the same
//!   [`RedisConfig`] as the main one: the same TLS, credentials, Sentinel service or
//!   Cluster router. It is opened at its first use, kept while idle (at most ten
//!   minutes) and never shared by two calls at once.
//! - The pool holds at most [`RedisConfig::dedicated_pool_size`] connections (default
//!   [`DEFAULT_DEDICATED_POOL_SIZE`]). Taking one waits at most the command deadline:
//!   when every connection stayed in use for it, the call fails with
//!   [`Error::Exhausted`] (not an outage: degraded mode does not fall back on it); when
//!   none could be opened, with the connect error (an outage) or [`Error::Timeout`].
//! - A blocking command blocks at most [`MAX_BLOCK`] and is bounded by its block time
//!   plus the command deadline (and [`BACKSTOP`]): a paused server fails it with
//!   [`Error::Timeout`] within that.
//! - A subscription (a job watch) holds its connection while it waits, like a
//!   blocking command, and unsubscribes before handing it back.
//! - Health: a connection whose command was cut short (the caller's future dropped, the
//!   deadline passed) may still be blocked on the server, and one that lost its socket
//!   is useless: both are closed when handed back, never reused.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use fred::prelude::*;
use palisade_cache_core::{Endpoint, Error};

use crate::{BACKSTOP, RedisConfig, RedisConnection};

/// The longest a blocking command blocks: 5 s. A longer wait is made of several.
pub const MAX_BLOCK: Duration = Duration::from_secs(5);

/// The default bound of the dedicated pool: 64 connections (64 callers blocked at
/// once per process).
pub const DEFAULT_DEDICATED_POOL_SIZE: u32 = 64;

/// A pooled connection and whether a command on it was cut short.
pub(crate) struct Dedicated {
    conn: RedisConnection,
    busy: bool,
}

/// Opens dedicated connections and tells broken ones.
struct Manager {
    config: RedisConfig,
}

impl bb8::ManageConnection for Manager {
    type Connection = Dedicated;
    type Error = Error;

    async fn connect(&self) -> Result<Dedicated, Error> {
        let conn = RedisConnection::connect(&self.config).await?;
        Ok(Dedicated { conn, busy: false })
    }

    async fn is_valid(&self, c: &mut Dedicated) -> Result<(), Error> {
        c.conn.ping().await
    }

    fn has_broken(&self, c: &mut Dedicated) -> bool {
        c.busy || !c.conn.is_connected()
    }
}

/// Keeps the last error of a background connect, to name an outage.
#[derive(Clone, Default)]
struct LastError(Arc<Mutex<Option<Arc<Error>>>>);

impl fmt::Debug for LastError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LastError")
    }
}

impl bb8::ErrorSink<Error> for LastError {
    fn sink(&self, error: Error) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(error));
    }
    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<Error>> {
        Box::new(self.clone())
    }
}

impl LastError {
    fn take(&self) -> Option<Error> {
        let e = self.0.lock().unwrap_or_else(|p| p.into_inner()).take()?;
        Some(Error::clone_shared(&e))
    }
}

/// What a look found, for [`Pool::on_message`].
pub(crate) enum Look<T> {
    /// The answer.
    Ready(T),
    /// Nothing yet: wait for a message, at most this long.
    Wait(Duration),
}

/// The state of the dedicated pool, for `doctor` and stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PoolStats {
    /// The most connections the pool opens.
    pub max: u32,
    /// Connections open now.
    pub open: u32,
    /// Open connections idle now.
    pub idle: u32,
    /// Calls that found every connection in use for the whole command deadline.
    pub exhausted: u64,
    /// Connections closed because a command on them was cut short or their socket died.
    pub closed_broken: u64,
}

/// The pool, opened at its first use (it needs a tokio runtime).
pub(crate) struct Pool {
    config: RedisConfig,
    /// The deadline of a command on the main connection, which bounds taking a
    /// connection and each blocking command beyond its block time.
    command_timeout: Duration,
    endpoint: Endpoint,
    pool: OnceLock<bb8::Pool<Manager>>,
    last_error: LastError,
    exhausted: std::sync::atomic::AtomicU64,
}

impl Pool {
    pub(crate) fn new(config: &RedisConfig) -> Self {
        let command_timeout = config.command_timeout;
        let mut dedicated = config.clone();
        // fred calls a connection unresponsive after 0.8 × its command deadline with a
        // command in flight: a blocked command must stay below that.
        dedicated.command_timeout = command_timeout.saturating_add(MAX_BLOCK).mul_f64(1.3);
        Pool {
            endpoint: config.endpoint(),
            config: dedicated,
            command_timeout,
            pool: OnceLock::new(),
            last_error: LastError::default(),
            exhausted: Default::default(),
        }
    }

    fn pool(&self) -> &bb8::Pool<Manager> {
        self.pool.get_or_init(|| {
            bb8::Pool::builder()
                .max_size(self.config.dedicated_pool_size.max(1))
                .min_idle(None)
                .connection_timeout(self.command_timeout.max(Duration::from_millis(1)))
                // Health is checked when a connection comes back (`has_broken`), not
                // with a round trip at every checkout.
                .test_on_check_out(false)
                .retry_connection(false)
                .idle_timeout(Some(Duration::from_secs(600)))
                .error_sink(Box::new(self.last_error.clone()))
                .build_unchecked(Manager {
                    config: self.config.clone(),
                })
        })
    }

    /// The pool's state.
    pub(crate) fn stats(&self) -> PoolStats {
        let max = self.config.dedicated_pool_size.max(1);
        let exhausted = self.exhausted.load(std::sync::atomic::Ordering::Relaxed);
        match self.pool.get() {
            None => PoolStats {
                max,
                exhausted,
                ..PoolStats::default()
            },
            Some(p) => {
                let s = p.state();
                PoolStats {
                    max,
                    open: s.connections,
                    idle: s.idle_connections,
                    exhausted,
                    closed_broken: s.statistics.connections_closed_broken,
                }
            }
        }
    }

    /// Runs the blocking command `name args…` (the key included) on a dedicated
    /// connection, for a server-side block of `block` (at most [`MAX_BLOCK`]).
    pub(crate) async fn blocking<R: FromValue>(
        &self,
        op: &'static str,
        key: &str,
        name: &'static str,
        args: Vec<Value>,
        block: Duration,
    ) -> Result<R, Error> {
        let mut conn = self.take(op).await?;
        // Marked until the reply is in: cut short, the connection is closed.
        conn.busy = true;
        let bound = block
            .min(MAX_BLOCK)
            .saturating_add(self.command_timeout)
            .saturating_add(BACKSTOP);
        let reply = tokio::time::timeout(bound, conn.conn.command::<R>(op, key, name, args)).await;
        match reply {
            Ok(r) => {
                conn.busy = false;
                r
            }
            Err(_) => Err(Error::Timeout {
                backend: self.endpoint.clone(),
                op,
                after: bound,
            }),
        }
    }

    /// Takes a connection within the command deadline.
    async fn take(&self, op: &'static str) -> Result<bb8::PooledConnection<'_, Manager>, Error> {
        let pool = self.pool();
        match pool.get().await {
            Ok(c) => Ok(c),
            Err(bb8::RunError::User(e)) => Err(e),
            Err(bb8::RunError::TimedOut) => Err(self.not_taken(pool, op)),
        }
    }

    /// Subscribes a dedicated connection to the sharded channel `channel` (on the node
    /// that serves it), then runs `look`. When that finds nothing yet
    /// ([`Look::Wait`]), waits for a message on the channel — at most the wait it named,
    /// `block` and [`MAX_BLOCK`] — and looks once more when a message came, the
    /// connection reported an error (a killed server), or the named wait ended: `None` when that finds nothing either, or when `block` passed in
    /// silence. Looking after subscribing is what makes a change made meanwhile either
    /// seen or heard. The connection is unsubscribed before it goes back to the pool
    /// (closed if that fails or the call is cut short).
    pub(crate) async fn on_message<T, F, Fut>(
        &self,
        op: &'static str,
        channel: &str,
        block: Duration,
        mut look: F,
    ) -> Result<Option<T>, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Look<T>, Error>>,
    {
        let mut conn = self.take(op).await?;
        conn.busy = true;
        let Some(client) = conn.conn.client_for(channel) else {
            return Err(Error::Unavailable {
                backend: self.endpoint.clone(),
                op,
                source: "no master is known for the channel's slot".into(),
            });
        };
        let mut messages = client.message_rx();
        // A subscribed connection that dies says nothing on `messages`: its error ends
        // the wait, and the look that follows tells whether the server is gone.
        let mut errors = client.error_rx();
        let fail = |e| crate::connection::map_error(&self.endpoint, op, self.command_timeout, e);
        let timed_out = || Error::Timeout {
            backend: self.endpoint.clone(),
            op,
            after: self.command_timeout,
        };
        tokio::time::timeout(self.command_timeout, client.ssubscribe(channel))
            .await
            .map_err(|_| timed_out())?
            .map_err(fail)?;
        let found = match look().await? {
            Look::Ready(t) => Some(t),
            Look::Wait(at_most) => {
                let wait = at_most.min(block).min(MAX_BLOCK);
                let heard = async {
                    loop {
                        match messages.recv().await {
                            Ok(m) if m.channel == channel => break,
                            Ok(_) => continue,
                            // Behind (messages were dropped) or closed: look again.
                            Err(_) => break,
                        }
                    }
                };
                let (heard, lost) = (std::pin::pin!(heard), std::pin::pin!(errors.recv()));
                let woken = futures_util::future::select(heard, lost);
                let heard = tokio::time::timeout(wait, woken).await.is_ok();
                // Silence until the end of the wait is `None` (the caller counts a
                // re-check), unless the look named the shorter wait (an expiry due).
                if heard || at_most < block.min(MAX_BLOCK) {
                    match look().await? {
                        Look::Ready(t) => Some(t),
                        Look::Wait(_) => None,
                    }
                } else {
                    None
                }
            }
        };
        if let Ok(Ok(())) = tokio::time::timeout(self.command_timeout, client.sunsubscribe(channel)).await {
            conn.busy = false;
        }
        Ok(found)
    }

    /// Why no connection came within the deadline: all in use, or none could be opened.
    fn not_taken(&self, pool: &bb8::Pool<Manager>, op: &'static str) -> Error {
        let s = pool.state();
        let max = self.config.dedicated_pool_size.max(1);
        if s.connections >= max && s.idle_connections == 0 {
            self.exhausted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Error::Exhausted {
                backend: self.endpoint.clone(),
                op,
                what: format!("dedicated connection ({max})"),
                after: self.command_timeout,
            };
        }
        self.last_error.take().unwrap_or_else(|| Error::Timeout {
            backend: self.endpoint.clone(),
            op,
            after: self.command_timeout,
        })
    }
}
