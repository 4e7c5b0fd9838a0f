//! Lua scripts: loaded at connect, run with `EVALSHA`, reloaded on `NOSCRIPT`.

use fred::error::Error as FredError;
use fred::prelude::*;
use fred::types::scripts::Script;
use palisade_cache_core::Error;

use crate::RedisConnection;

/// One Lua script of palisade's.
///
/// # Behavior
///
/// - [`LuaScript::load`] sends `SCRIPT LOAD` (to every master of a cluster); backends
///   call it before their constructor returns.
/// - [`LuaScript::run`] sends `EVALSHA`; if the server answers `NOSCRIPT` (restarted,
///   flushed, failed over) it loads the script and sends `EVALSHA` once more. The whole
///   call, reload included, is bounded by the command deadline.
#[derive(Debug, Clone)]
pub struct LuaScript {
    name: &'static str,
    script: Script,
}

impl LuaScript {
    /// A script named `name` (for errors) with source `lua`.
    pub fn new(name: &'static str, lua: &'static str) -> Self {
        LuaScript {
            name,
            script: Script::from_lua(lua),
        }
    }

    /// The SHA1 of the source.
    pub fn sha1(&self) -> &str {
        self.script.sha1()
    }

    /// The name (for errors and tests).
    pub fn name(&self) -> &'static str {
        self.name
    }

    async fn load_raw(&self, conn: &RedisConnection) -> Result<(), FredError> {
        let src = self.script.lua().cloned().unwrap_or_default();
        if conn.is_cluster() {
            conn.client().script_load_cluster::<(), _>(src).await
        } else {
            conn.client().script_load::<String, _>(src).await.map(drop)
        }
    }

    /// Loads the script, under the command deadline.
    pub async fn load(&self, conn: &RedisConnection) -> Result<(), Error> {
        conn.run(self.name, self.load_raw(conn)).await
    }

    /// Runs the script on one key.
    pub async fn run(
        &self,
        conn: &RedisConnection,
        op: &'static str,
        key: &str,
        args: Vec<Value>,
    ) -> Result<Value, Error> {
        self.run_keys(conn, op, vec![key.to_owned()], args).await
    }

    /// Runs the script on several keys (of one hash slot on a cluster).
    pub async fn run_keys(
        &self,
        conn: &RedisConnection,
        op: &'static str,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<Value, Error> {
        conn.run(op, async {
            let first: Result<Value, FredError> = conn
                .client()
                .evalsha(self.script.sha1().clone(), keys.clone(), args.clone())
                .await;
            match first {
                Err(e) if e.details().starts_with("NOSCRIPT") => {
                    self.load_raw(conn).await?;
                    conn.client().evalsha(self.script.sha1().clone(), keys, args).await
                }
                other => other,
            }
        })
        .await
    }
}
