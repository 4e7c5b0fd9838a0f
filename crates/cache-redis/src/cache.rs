//! The cache on Redis: plain string commands, one round trip each.

use std::time::Duration;

use fred::prelude::*;
use fred::types::scan::Scanner;
use futures_util::StreamExt;
use palisade_cache_core::cache::op;
use palisade_cache_core::{Error, Provenance, Run, Tagged};

use crate::RedisConnection;

/// Keys deleted per SCAN page (and per `UNLINK` pipeline).
const SCAN_PAGE: u32 = 500;

/// The cache backend on Redis (standalone or Cluster).
///
/// # Behavior
///
/// Implements every sentence of [`CacheBackend`](palisade_cache_core::CacheBackend)'s `# Behavior` with one round trip
/// per call (`GET`, `SET … PX`, `SET … NX PX`, `DEL`, `EXISTS`, `PING`), plus:
/// - answers are tagged [`Provenance::Distributed`];
/// - TTLs outside the [limits](palisade_cache_core::limits) are
///   [`Error::InvalidInput`] before any I/O; the others are sent in milliseconds,
///   rounded up;
/// - `clear` walks `SCAN … MATCH <prefix>* COUNT 500` on every master and `UNLINK`s
///   each page in one pipeline on that master, each page under the command deadline;
///   the prefix is glob-escaped. On a cluster with slots that have no reachable master
///   it fails before deleting anything, naming those slots: a partial clear is never
///   reported as complete;
/// - every key is its own key (no hash tag): entries spread over a cluster's masters.
///
/// Alone it reports [`Mode::StrictDistributed`](palisade_cache_core::Mode::StrictDistributed) and always-healthy; wrap it in
/// [`Strict`](palisade_cache_core::Strict) for outage events or in
/// [`Failover`](palisade_cache_core::Failover) for degraded mode.
#[derive(Clone, Debug)]
pub struct RedisCache {
    conn: RedisConnection,
}

/// `ttl` in whole milliseconds, rounded up, at least 1.
fn px(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_nanos().div_ceil(1_000_000))
        .unwrap_or(i64::MAX)
        .max(1)
}

/// Escapes the glob characters of `prefix` and appends `*`.
fn match_pattern(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('*');
    out
}

impl RedisCache {
    /// A cache over `conn`.
    pub fn new(conn: RedisConnection) -> Self {
        RedisCache { conn }
    }

    /// The connection.
    pub fn connection(&self) -> &RedisConnection {
        &self.conn
    }

    fn tag<T>(v: T) -> Tagged<T> {
        Tagged::new(v, Provenance::Distributed)
    }

    async fn unlink_page(&self, client: &Client, keys: Vec<Key>) -> Result<u64, Error> {
        if keys.is_empty() {
            return Ok(0);
        }
        let pipeline = client.pipeline();
        for k in keys {
            // One key per command: a page from a cluster node spans many slots.
            let _: () = self.conn.run("cache.clear", pipeline.unlink::<(), _>(k)).await?;
        }
        let counts: Vec<i64> = self.conn.run("cache.clear", pipeline.all()).await?;
        Ok(counts.into_iter().map(|n| n.max(0) as u64).sum())
    }
}

fn key(k: &str) -> Value {
    Value::String(k.into())
}

impl Run<op::Get> for RedisCache {
    async fn run(&self, op: &op::Get) -> Result<Tagged<Option<fred::bytes::Bytes>>, Error> {
        let k = op.key.as_str();
        let v: Option<fred::bytes::Bytes> = self.conn.command("cache.get", k, "GET", vec![key(k)]).await?;
        Ok(Self::tag(v))
    }
    fn slot(&self, op: &op::Get) -> Option<u16> {
        self.conn.slot_of(&op.key)
    }
}

/// `SET key value PX ms [NX]`.
fn set_args(k: &str, value: &fred::bytes::Bytes, ttl: Duration, nx: bool) -> Vec<Value> {
    let mut args = vec![
        key(k),
        Value::Bytes(value.clone()),
        "PX".into(),
        Value::Integer(px(ttl)),
    ];
    if nx {
        args.push("NX".into());
    }
    args
}

impl Run<op::Set> for RedisCache {
    async fn run(&self, op: &op::Set) -> Result<Tagged<()>, Error> {
        palisade_cache_core::limits::check_ttl(op.ttl)?;
        let args = set_args(&op.key, &op.value, op.ttl, false);
        let _: () = self.conn.command("cache.set", &op.key, "SET", args).await?;
        Ok(Self::tag(()))
    }
    fn slot(&self, op: &op::Set) -> Option<u16> {
        self.conn.slot_of(&op.key)
    }
}

impl Run<op::SetIfAbsent> for RedisCache {
    async fn run(&self, op: &op::SetIfAbsent) -> Result<Tagged<bool>, Error> {
        palisade_cache_core::limits::check_ttl(op.ttl)?;
        let args = set_args(&op.key, &op.value, op.ttl, true);
        let reply: Option<String> = self.conn.command("cache.set_if_absent", &op.key, "SET", args).await?;
        Ok(Self::tag(reply.is_some()))
    }
    fn slot(&self, op: &op::SetIfAbsent) -> Option<u16> {
        self.conn.slot_of(&op.key)
    }
}

impl Run<op::Delete> for RedisCache {
    async fn run(&self, op: &op::Delete) -> Result<Tagged<bool>, Error> {
        let n: i64 = self
            .conn
            .command("cache.delete", &op.key, "DEL", vec![key(&op.key)])
            .await?;
        Ok(Self::tag(n > 0))
    }
    fn slot(&self, op: &op::Delete) -> Option<u16> {
        self.conn.slot_of(&op.key)
    }
}

impl Run<op::Contains> for RedisCache {
    async fn run(&self, op: &op::Contains) -> Result<Tagged<bool>, Error> {
        let n: i64 = self
            .conn
            .command("cache.contains", &op.key, "EXISTS", vec![key(&op.key)])
            .await?;
        Ok(Self::tag(n > 0))
    }
    fn slot(&self, op: &op::Contains) -> Option<u16> {
        self.conn.slot_of(&op.key)
    }
}

impl Run<op::Clear> for RedisCache {
    async fn run(&self, op: &op::Clear) -> Result<Tagged<u64>, Error> {
        let pattern = match_pattern(op.prefix.as_str());
        // Every master, or an error naming the slots that have none reachable: a clear
        // that would skip them is not started.
        let masters = self.conn.every_master("cache.clear")?;
        let mut removed = 0;
        for client in masters {
            let mut pages = client.scan(pattern.clone(), Some(SCAN_PAGE), None).boxed();
            loop {
                let next = tokio::time::timeout(self.conn.command_timeout(), pages.next()).await;
                let mut page = match next {
                    Ok(Some(page)) => self.conn.run("cache.clear", std::future::ready(page)).await?,
                    Ok(None) => break,
                    Err(_) => {
                        return Err(Error::Timeout {
                            backend: self.conn.endpoint().clone(),
                            op: "cache.clear",
                            after: self.conn.command_timeout(),
                        });
                    }
                };
                let keys = page.take_results().unwrap_or_default();
                removed += self.unlink_page(&client, keys).await?;
                page.next();
            }
        }
        Ok(Self::tag(removed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_rounded_up_to_whole_milliseconds() {
        assert_eq!(px(Duration::from_micros(1)), 1);
        assert_eq!(px(Duration::from_micros(1500)), 2);
        assert_eq!(px(Duration::from_secs(2)), 2000);
        assert_eq!(px(Duration::MAX), i64::MAX);
    }

    #[test]
    fn match_pattern_escapes_globs() {
        assert_eq!(match_pattern("a:b"), "a:b*");
        assert_eq!(match_pattern("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\*");
    }
}
