//! Lua scripts: loaded at connect, run with `EVALSHA`, reloaded on `NOSCRIPT`.

use fred::bytes_utils::Str;
use fred::prelude::*;
use fred::types::scripts::Script;
use palisade_cache_core::Error;

use crate::RedisConnection;
use crate::cluster::Cmd;

/// The first line of every script's prelude: the library functions the per-call paths
/// use, bound to locals (one upvalue read instead of a global and a field lookup per
/// use; measured in the README's performance section). Scripts send commands as
/// `call(…)` or `redis.pcall(…)`.
macro_rules! lua_locals {
    () => {
        "local tonumber, floor, ceil, max, format, call = tonumber, math.floor, math.ceil, math.max, string.format, redis.call\n"
    };
}
pub(crate) use lua_locals;

/// One Lua script of palisade's.
///
/// # Behavior
///
/// - [`LuaScript::load`] sends `SCRIPT LOAD` (on a cluster: to every node, and to every
///   node whenever it (re)connects, so that a promoted replica or a new master has it);
///   backends call it before their constructor returns.
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

    fn lua(&self) -> Str {
        self.script.lua().cloned().unwrap_or_default()
    }

    /// The Lua source (for tests that read what a script may send).
    pub fn source(&self) -> &str {
        self.script.lua().map_or("", |s| &s[..])
    }

    /// Loads the script, under the command deadline.
    pub async fn load(&self, conn: &RedisConnection) -> Result<(), Error> {
        conn.load_script(self.name, self.lua()).await
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

    /// Runs the script on several keys (of one hash slot on a cluster: the first key's
    /// slot decides where it goes).
    pub async fn run_keys(
        &self,
        conn: &RedisConnection,
        op: &'static str,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<Value, Error> {
        let route = keys.first().cloned().unwrap_or_default();
        let mut all = Vec::with_capacity(2 + keys.len() + args.len());
        all.push(Value::from(self.script.sha1().clone()));
        all.push(Value::Integer(keys.len() as i64));
        all.extend(keys.into_iter().map(Value::from));
        all.extend(args);
        let mut cmd = Cmd::new("EVALSHA", all);
        cmd.script = Some(self.lua());
        conn.execute(op, &route, &cmd).await
    }
}
