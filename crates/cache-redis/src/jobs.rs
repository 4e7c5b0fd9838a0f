//! The job store on Redis: one hash per job, single-key Lua scripts.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use fred::prelude::*;
use palisade_cache_core::{Error, Provenance, Run, Tagged};
use palisade_job_store::model::stored_version;
use palisade_job_store::{FieldMap, RawChange, RawOutcome, StoredRecord, op};

use crate::batch::{BatchStats, Batched, Batcher};
use crate::dedicated::Look;
use crate::{LuaScript, RedisConnection};

/// Prepends `now` (milliseconds of server time, as text: exact, no float formatting)
/// and the checks every writing script makes **before its first write** (Redis does
/// not roll a script back): a TTL is an integer within the limits, a field list comes
/// in pairs, a record is a hash.
macro_rules! script {
    ($body:expr) => {
        concat!(prelude!(), $body)
    };
}

/// The batched form of a job script (see [`crate::batch`]): the prelude once (one
/// `TIME` for the batch), the body as `one(KEYS, ARGV)`, run per call by the envelope.
macro_rules! batched {
    ($body:expr) => {
        concat!(
            prelude!(),
            "local function one(KEYS, ARGV)\n",
            $body,
            "\nend\n",
            crate::batch::batch_envelope!()
        )
    };
}

/// What every job script starts with.
macro_rules! prelude {
    () => {
        concat!(
            crate::script::lua_locals!(),
            "local t = call('TIME')\n",
            // The batch envelope points `ARGS` at each call's arguments; the job bodies
            // read their own `ARGV` parameter.
            "local ARGS = ARGV\n",
            "local now = t[1] .. format('%03d', floor(tonumber(t[2]) / 1000))\n",
            "local MAX_TTL_MS = 315360000000\n",
            "local function bad(why) return redis.error_reply('ERR palisade: ' .. why) end\n",
            "local function valid_ttl(v)\n",
            "  local n = tonumber(v)\n",
            "  return n ~= nil and n >= 1 and n <= MAX_TTL_MS and n % 1 == 0\n",
            "end\n",
            "local function pairs_from(first) return (#ARGS - first + 1) % 2 == 0 end\n",
            "local function record_type(key)\n",
            "  local ty = call('TYPE', key)['ok']\n",
            "  if ty ~= 'none' and ty ~= 'hash' then return nil end\n",
            "  return ty\n",
            "end\n",
            "local WRONGTYPE = redis.error_reply('WRONGTYPE Operation against a key holding the wrong kind of value')\n",
            // The named fields of the record under `key` in one read: `nil` for a key
            // of another type, `false` for no record (`EXISTS` only when none is set).
            "local function fields_of(key, ...)\n",
            "  local r = redis.pcall('HMGET', key, ...)\n",
            "  if r.err then return nil end\n",
            "  for i = 1, select('#', ...) do if r[i] then return r end end\n",
            "  if call('EXISTS', key) == 0 then return false end\n",
            "  return r\n",
            "end\n",
            // One `HSET` of the call's pairs from `first`, then `extra`'s (set last, so
            // they win); `unpack` only within a fixed bound (its limit is Lua's stack,
            // not the input), one `HSET` per pair beyond it.
            "local function hset(key, first, extra)\n",
            "  local kv = {}\n",
            "  if #ARGS - first + 1 <= 256 then\n",
            "    for i = first, #ARGS do kv[#kv + 1] = ARGS[i] end\n",
            "  else\n",
            "    for i = first, #ARGS, 2 do call('HSET', key, ARGS[i], ARGS[i + 1]) end\n",
            "  end\n",
            "  for i = 1, #extra do kv[#kv + 1] = extra[i] end\n",
            "  call('HSET', key, unpack(kv))\n",
            "end\n",
            "local function bumped(v)\n",
            "  if not v then return '1' end\n",
            "  local n = tonumber(v)\n",
            "  if n == nil or n < 0 or n % 1 ~= 0 or n >= 9007199254740991 then return nil end\n",
            "  return format('%d', n + 1)\n",
            "end\n",
            "local BAD_VERSION = 'the stored version is not a whole number'\n",
            "local function changed(key, version) redis.pcall('SPUBLISH', key, version) end\n",
        )
    };
}

// ARGV: ttl (ms), if_absent ('1'/'0'), then field name/value pairs.
const CREATE: &str = script!(
    r#"
if not valid_ttl(ARGV[1]) then return bad('the TTL is not 1 ms to 10 years') end
if not pairs_from(3) then return bad('the fields do not come in pairs') end
if ARGV[2] == '1' and call('EXISTS', KEYS[1]) == 1 then return 0 end
local v = '1'
if record_type(KEYS[1]) == 'hash' then v = bumped(call('HGET', KEYS[1], 'version')) or '1' end
call('DEL', KEYS[1])
call('HSET', KEYS[1], 'created_at', now, 'updated_at', now, 'ttl_ms', ARGV[1], 'version', v)
for i = 3, #ARGV, 2 do call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
call('PEXPIRE', KEYS[1], ARGV[1])
changed(KEYS[1], call('HGET', KEYS[1], 'version'))
return 1
"#
);

// ARGV: field name/value pairs.
macro_rules! update {
    () => {
        r#"
if not pairs_from(1) then return bad('the fields do not come in pairs') end
local r = fields_of(KEYS[1], 'ttl_ms', 'version')
if r == nil then return WRONGTYPE end
if not r then return 0 end
local ttl = r[1]
if ttl and not valid_ttl(ttl) then return bad('the stored ttl_ms is not 1 ms to 10 years') end
local v = bumped(r[2])
if not v then return bad(BAD_VERSION) end
hset(KEYS[1], 1, {'updated_at', now, 'version', v})
if ttl then call('PEXPIRE', KEYS[1], ttl) end
changed(KEYS[1], v)
return 1
"#
    };
}
const UPDATE: &str = script!(update!());
const UPDATE_MANY: &str = batched!(update!());

// ARGV: from, to, terminal ('1'/'0'), then field name/value pairs.
const TRANSITION: &str = script!(
    r#"
if not pairs_from(4) then return bad('the fields do not come in pairs') end
local r = fields_of(KEYS[1], 'status', 'ttl_ms', 'version')
if r == nil then return WRONGTYPE end
if not r then return {0} end
local cur = r[1]
if not cur then return {3} end
if cur ~= ARGV[1] then return {2, cur} end
local ttl = r[2]
if ttl and not valid_ttl(ttl) then return bad('the stored ttl_ms is not 1 ms to 10 years') end
local v = bumped(r[3])
if not v then return bad(BAD_VERSION) end
local extra = {'status', ARGV[2], 'updated_at', now, 'version', v}
if ARGV[3] == '1' then extra[7], extra[8] = 'finished_at', now end
hset(KEYS[1], 4, extra)
if ttl then call('PEXPIRE', KEYS[1], ttl) end
changed(KEYS[1], v)
return {1}
"#
);

const HEARTBEAT: &str = script!(
    r#"
local r = fields_of(KEYS[1], 'status', 'ttl_ms', 'version')
if r == nil then return WRONGTYPE end
if not r then return {0} end
local cur = r[1]
if not cur then return {3} end
if cur ~= 'running' then return {2, cur} end
local ttl = r[2]
if ttl and not valid_ttl(ttl) then return bad('the stored ttl_ms is not 1 ms to 10 years') end
local v = bumped(r[3])
if not v then return bad(BAD_VERSION) end
call('HSET', KEYS[1], 'heartbeat_at', now, 'version', v)
if ttl then call('PEXPIRE', KEYS[1], ttl) end
changed(KEYS[1], v)
return {1}
"#
);

// Returns the time, the fields and the PTTL.
const GET: &str = script!(
    r#"
return {now, call('HGETALL', KEYS[1]), call('PTTL', KEYS[1])}
"#
);

// A key of another type is not a record: refused, like every other job script.
const DELETE: &str = script!(
    r#"
if not record_type(KEYS[1]) then return WRONGTYPE end
local n = call('DEL', KEYS[1])
if n > 0 then changed(KEYS[1], '0') end
return n
"#
);

/// Built once per process.
static SCRIPTS: LazyLock<Scripts> = LazyLock::new(Scripts::new);

struct Scripts {
    create: LuaScript,
    update: Batched,
    transition: LuaScript,
    heartbeat: LuaScript,
    get: LuaScript,
    delete: LuaScript,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            create: LuaScript::new("jobs.create", CREATE),
            update: Batched {
                one: LuaScript::new("jobs.update", UPDATE),
                many: LuaScript::new("jobs.update.batch", UPDATE_MANY),
            },
            transition: LuaScript::new("jobs.transition", TRANSITION),
            heartbeat: LuaScript::new("jobs.heartbeat", HEARTBEAT),
            get: LuaScript::new("jobs.get", GET),
            delete: LuaScript::new("jobs.delete", DELETE),
        }
    }

    fn all(&self) -> [&LuaScript; 6] {
        [
            &self.create,
            &self.update.one,
            &self.transition,
            &self.heartbeat,
            &self.get,
            &self.delete,
        ]
    }
}

/// Every job script and the number of keys it takes.
pub(crate) fn scripts() -> Vec<(&'static LuaScript, usize)> {
    SCRIPTS.all().into_iter().map(|s| (s, 1)).collect()
}

/// Every job script that batches: alone and batched.
pub(crate) fn batched_scripts() -> Vec<(&'static Batched, usize)> {
    vec![(&SCRIPTS.update, 1)]
}

/// The job store on Redis (standalone or Cluster).
///
/// # Behavior
///
/// Implements every sentence of [`JobBackend`](palisade_job_store::JobBackend)'s `# Behavior`:
/// - one hash per job, one key per record (no hash tag: records spread over a cluster);
/// - a call that fails has written nothing: each script checks its arguments (a TTL of
///   1 ms to 10 years, fields in pairs), the key's type and the stored `ttl_ms` and
///   `version` (read in one `HMGET`) before its first write; `update` and `transition`
///   then set the fields and the bookkeeping in one `HSET`, built with `unpack` only up
///   to 128 fields (`unpack`'s limit is Lua's stack, not the input), one `HSET` per field
///   beyond;
/// - updates are **naturally batched** like rate decisions: while two are in flight on
///   a slot, the next ones queue and go as one script call that runs each in arrival
///   order, each as it would alone (its own result, its own error, nothing written by
///   one that fails); nothing waits when the pipe has room. Records carry no hash tag,
///   so on a Cluster only updates of keys of one slot share a call (see
///   [`batch`](crate::batch) and [`RedisJobStore::batch_stats`]);
/// - `create`, `update`, `transition`, `heartbeat`, `get` and `delete` are single-key
///   Lua scripts (the existence guard and the compare-and-set are atomic), loaded by
///   [`RedisJobStore::new`], run with `EVALSHA`, reloaded on `NOSCRIPT`; `exists` is
///   `EXISTS`: one round trip per operation, under the connection's command deadline;
/// - every write that took effect moves the record's `version` and publishes it on
///   the record's own sharded channel (`SPUBLISH <key> <version>`, `0` for a delete;
///   Redis 7): the channel hashes like the key, so it works on a Cluster, and it costs
///   no memory. The publish runs under `pcall` after the writes: a server or ACL that
///   refuses it never fails a write (watchers then fall back on their re-check);
/// - `changed` (a watch) subscribes a dedicated connection to that channel
///   (`SSUBSCRIBE`, on the node that serves the key), then reads the record: a write
///   made before the subscription is in the read, one made after it is heard. It
///   waits for a message at most the re-check period, [`MAX_BLOCK`](crate::MAX_BLOCK)
///   and the record's PTTL (an expiry publishes nothing), reads again, and
///   unsubscribes: four round trips per change delivered;
/// - every timestamp is the Redis server's `TIME`, never a client clock;
/// - answers are tagged [`Provenance::Distributed`].
#[derive(Clone)]
pub struct RedisJobStore {
    conn: RedisConnection,
    scripts: &'static Scripts,
    /// Updates, naturally batched per slot (see [`crate::batch`]).
    updates: Arc<Batcher>,
}

impl std::fmt::Debug for RedisJobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisJobStore").field("conn", &self.conn).finish()
    }
}

fn args_of(fields: &FieldMap) -> Vec<Value> {
    let mut args = Vec::with_capacity(fields.len() * 2);
    for (k, v) in fields {
        args.push(Value::String(k.as_str().into()));
        args.push(Value::Bytes(v.clone()));
    }
    args
}

fn bad_reply(conn: &RedisConnection, op: &'static str, what: String) -> Error {
    Error::Backend {
        backend: conn.endpoint().clone(),
        op,
        source: what.into(),
    }
}

fn as_bytes(v: Value) -> Option<Bytes> {
    match v {
        Value::Bytes(b) => Some(b),
        Value::String(s) => Some(Bytes::from(s.to_string().into_bytes())),
        Value::Integer(i) => Some(Bytes::from(i.to_string().into_bytes())),
        _ => None,
    }
}

impl RedisJobStore {
    /// A job store over `conn`; loads its scripts before returning.
    pub async fn new(conn: RedisConnection) -> Result<Self, Error> {
        let store = RedisJobStore::lazy(conn);
        for s in store.scripts.all().into_iter().chain([&store.scripts.update.many]) {
            s.load(&store.conn).await?;
        }
        Ok(store)
    }

    /// A job store whose scripts are loaded on first use (`NOSCRIPT` reload), for a
    /// connection that is not up yet (degraded startup).
    pub fn lazy(conn: RedisConnection) -> Self {
        RedisJobStore {
            conn,
            scripts: &SCRIPTS,
            updates: Batcher::new(&SCRIPTS.update, true),
        }
    }

    /// The connection.
    pub fn connection(&self) -> &RedisConnection {
        &self.conn
    }

    /// Turns the natural batching of updates on (the default) or off (every update its
    /// own script call, sent at once).
    pub fn with_batching(mut self, on: bool) -> Self {
        self.updates = Batcher::new(&SCRIPTS.update, on);
        self
    }

    /// How much natural batching the updates of this store (and its clones) have had
    /// (see [`batch`](crate::batch)).
    pub fn batch_stats(&self) -> BatchStats {
        self.updates.stats()
    }

    fn tag<T>(v: T) -> Tagged<T> {
        Tagged::new(v, Provenance::Distributed)
    }

    fn flag(&self, op: &'static str, v: Value) -> Result<bool, Error> {
        match v {
            Value::Integer(n) => Ok(n == 1),
            other => Err(bad_reply(&self.conn, op, format!("expected 0 or 1, got {other:?}"))),
        }
    }

    fn outcome(&self, op: &'static str, v: Value) -> Result<RawOutcome, Error> {
        let Value::Array(mut items) = v else {
            return Err(bad_reply(&self.conn, op, format!("expected an array, got {v:?}")));
        };
        let code = match items.first() {
            Some(Value::Integer(c)) => *c,
            other => return Err(bad_reply(&self.conn, op, format!("expected a code, got {other:?}"))),
        };
        Ok(match code {
            1 => RawOutcome::Applied,
            0 => RawOutcome::NotFound,
            3 => RawOutcome::Refused(None),
            2 if items.len() == 2 => RawOutcome::Refused(items.pop().and_then(as_bytes)),
            _ => return Err(bad_reply(&self.conn, op, format!("unexpected reply {items:?}"))),
        })
    }
}

impl Run<op::Create> for RedisJobStore {
    async fn run(&self, op: &op::Create) -> Result<Tagged<bool>, Error> {
        let (key, fields, ttl, if_absent) = (op.key.as_str(), &op.fields, op.ttl, op.if_absent);
        palisade_cache_core::limits::check_ttl(ttl)?;
        let ttl_ms = ttl.as_nanos().div_ceil(1_000_000).to_string();
        let mut args = vec![
            Value::String(ttl_ms.into()),
            Value::String(if if_absent { "1" } else { "0" }.into()),
        ];
        args.extend(args_of(fields));
        let v = self.scripts.create.run(&self.conn, "jobs.create", key, args).await?;
        Ok(Self::tag(self.flag("jobs.create", v)?))
    }
    fn slot(&self, op: &op::Create) -> Option<u16> {
        self.conn.slot_of(&op.key)
    }
}

impl Run<op::Update> for RedisJobStore {
    async fn run(&self, op: &op::Update) -> Result<Tagged<bool>, Error> {
        let (key, fields) = (op.key.as_str(), &op.fields);
        let v = self
            .updates
            .run(&self.conn, "jobs.update", vec![key.to_owned()], args_of(fields))
            .await?;
        Ok(Self::tag(self.flag("jobs.update", v)?))
    }
    fn slot(&self, op: &op::Update) -> Option<u16> {
        self.conn.slot_of(&op.key)
    }
}

impl Run<op::Exists> for RedisJobStore {
    async fn run(&self, op: &op::Exists) -> Result<Tagged<bool>, Error> {
        let key = op.key.as_str();
        let n: i64 = self
            .conn
            .command("jobs.exists", key, "EXISTS", vec![key.into()])
            .await?;
        Ok(Self::tag(n > 0))
    }
    fn slot(&self, op: &op::Exists) -> Option<u16> {
        self.conn.slot_of(&op.key)
    }
}

impl RedisJobStore {
    /// The live record under `key` with the server's time, and its PTTL (`None`: no
    /// expiry).
    async fn read(&self, op: &'static str, key: &str) -> Result<Option<(StoredRecord, Option<Duration>)>, Error> {
        let v = self.scripts.get.run(&self.conn, op, key, vec![]).await?;
        let bad = |what: String| bad_reply(&self.conn, op, what);
        let Value::Array(parts) = v else {
            return Err(bad(format!("expected an array, got {v:?}")));
        };
        let [now, flat, pttl]: [Value; 3] = parts
            .try_into()
            .map_err(|_| bad("expected [now, fields, pttl]".into()))?;
        let now_ms: u64 = as_bytes(now)
            .and_then(|b| std::str::from_utf8(&b).ok().and_then(|s| s.parse().ok()))
            .ok_or_else(|| bad("the server time is not a number".into()))?;
        let now = UNIX_EPOCH + Duration::from_millis(now_ms);
        let items = match flat {
            Value::Array(items) => items,
            Value::Null => Vec::new(),
            other => return Err(bad(format!("expected the fields, got {other:?}"))),
        };
        if items.is_empty() {
            return Ok(None);
        }
        let mut fields = FieldMap::new();
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            let name = as_bytes(k).and_then(|b| String::from_utf8(b.to_vec()).ok());
            let (Some(name), Some(value)) = (name, as_bytes(v)) else {
                return Err(bad("a field name or value is not a string".into()));
            };
            fields.insert(name, value);
        }
        let pttl = match pttl {
            Value::Integer(ms) => u64::try_from(ms).ok().map(Duration::from_millis),
            other => return Err(bad(format!("expected the PTTL, got {other:?}"))),
        };
        Ok(Some((StoredRecord::new(fields, now), pttl)))
    }
}

impl Run<op::Get> for RedisJobStore {
    async fn run(&self, op: &op::Get) -> Result<Tagged<Option<StoredRecord>>, Error> {
        let found = self.read("jobs.get", &op.key).await?;
        Ok(Self::tag(found.map(|(record, _)| record)))
    }
    fn slot(&self, op: &op::Get) -> Option<u16> {
        self.conn.slot_of(&op.key)
    }
}

/// Subscribed to the record's own sharded channel (its key: same slot) on a dedicated
/// connection, then a look: every write script publishes the new version there.
impl Run<op::Changed> for RedisJobStore {
    async fn run(&self, op: &op::Changed) -> Result<Tagged<RawChange>, Error> {
        let (key, after) = (op.key.as_str(), op.after);
        let look = || async move {
            Ok(match self.read("jobs.changed", key).await? {
                None => Look::Ready(RawChange::Gone),
                Some((record, _)) if stored_version(&record.fields) != after => Look::Ready(RawChange::Changed(record)),
                // Expiry publishes nothing: look again when it is due.
                Some((_, pttl)) => Look::Wait(pttl.map_or(crate::MAX_BLOCK, |t| t + Duration::from_millis(1))),
            })
        };
        let found = self
            .conn
            .dedicated()
            .on_message("jobs.changed", key, op.within, look)
            .await?;
        Ok(Self::tag(found.unwrap_or(RawChange::Unchanged)))
    }
    fn slot(&self, op: &op::Changed) -> Option<u16> {
        self.conn.slot_of(&op.key)
    }
}

impl Run<op::Transition> for RedisJobStore {
    async fn run(&self, op: &op::Transition) -> Result<Tagged<RawOutcome>, Error> {
        let (key, from, to, fields) = (op.key.as_str(), op.from, op.to, &op.fields);
        let mut args = vec![
            Value::String(from.as_str().into()),
            Value::String(to.as_str().into()),
            Value::String(if to.is_terminal() { "1" } else { "0" }.into()),
        ];
        args.extend(args_of(fields));
        let v = self
            .scripts
            .transition
            .run(&self.conn, "jobs.transition", key, args)
            .await?;
        Ok(Self::tag(self.outcome("jobs.transition", v)?))
    }
    fn slot(&self, op: &op::Transition) -> Option<u16> {
        self.conn.slot_of(&op.key)
    }
}

impl Run<op::Heartbeat> for RedisJobStore {
    async fn run(&self, op: &op::Heartbeat) -> Result<Tagged<RawOutcome>, Error> {
        let key = op.key.as_str();
        let v = self
            .scripts
            .heartbeat
            .run(&self.conn, "jobs.heartbeat", key, vec![])
            .await?;
        Ok(Self::tag(self.outcome("jobs.heartbeat", v)?))
    }
    fn slot(&self, op: &op::Heartbeat) -> Option<u16> {
        self.conn.slot_of(&op.key)
    }
}

impl Run<op::Delete> for RedisJobStore {
    async fn run(&self, op: &op::Delete) -> Result<Tagged<bool>, Error> {
        let key = op.key.as_str();
        let v = self.scripts.delete.run(&self.conn, "jobs.delete", key, vec![]).await?;
        match v {
            Value::Integer(n) => Ok(Self::tag(n > 0)),
            other => Err(bad_reply(
                &self.conn,
                "jobs.delete",
                format!("expected a count, got {other:?}"),
            )),
        }
    }
    fn slot(&self, op: &op::Delete) -> Option<u16> {
        self.conn.slot_of(&op.key)
    }
}
