//! Natural batching (group commit) of one script's calls.
//!
//! While [`IN_FLIGHT`] calls of a script are in flight to the node that serves a hash
//! slot, further calls of that script for keys of the same slot queue; when one of
//! those returns, everything queued goes as **one** `EVALSHA` of the script's batched
//! form, which runs each call in arrival order, each as it would run alone. Nothing is
//! held back when the pipe has room: a call that finds fewer than [`IN_FLIGHT`] in
//! flight on its slot is sent at once, alone, as before. So at one caller nothing
//! changes, and under load a round trip and a script invocation are shared by every
//! call that waited.
//!
//! # Behavior
//!
//! - Each call in a batch runs as it would alone: its own keys and arguments, its own
//!   result, its own error (a bad argument or a key of another type fails that call
//!   alone, having written nothing — the script's checks come first, as alone). The
//!   calls of a batch share the server's clock reading (`TIME`), as calls in one
//!   microsecond would.
//! - Order: the calls of a batch run in the order they were queued. Calls and batches
//!   in flight at the same time are concurrent, as two lone calls are: each call takes
//!   effect once, between its start and its answer (linearizable), never twice.
//! - Deadline: a queued call waits at most the command deadline (plus
//!   [`BACKSTOP`]) from its start, like a lone one. A caller that
//!   gives up (its deadline passed, its future dropped) while its call is still queued
//!   leaves: the call is never sent. One that gives up once its batch is sent is where
//!   a lone call that timed out is: the server may have run it.
//! - A batch that fails as a whole (the connection dropped, the deadline passed) gives
//!   every call in it that error ([`Error::clone_shared`]); nothing is sent again.
//! - An outage (an error for which [`Error::is_unavailable`] holds) met by a call or a
//!   batch in flight fails every call queued behind it at once, unsent: they would
//!   meet the same server, and a call that errs has written nothing.
//! - A batch holds at most [`MAX_BATCH`] calls; more wait for the next one.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use fred::prelude::*;
use palisade_cache_core::Error;
use tokio::sync::oneshot;

use crate::{BACKSTOP, LuaScript, RedisConnection};

/// The most calls one batched script call runs.
pub const MAX_BATCH: usize = 64;

/// How many calls (alone or batches) of one script may be in flight on one slot before
/// further ones queue. Two keeps the server busy while the client reads one batch's
/// answers and encodes the next: measured on GCRA at 50 in flight, 1 → 37 calls per
/// batch, 2 → ~19 and the most decisions per second (see the README's figures).
pub const IN_FLIGHT: usize = 2;

/// The envelope that runs a script body once per call of a batch. Needs the body
/// wrapped as `local function one(KEYS, ARGV) … end` before it, and the prelude's
/// `local ARGS` (what its helpers read instead of `ARGV`), which it points at each
/// call's arguments.
///
/// ARGV: the number of calls n, then each call's key count and argument count, then
/// every call's arguments in order; KEYS: every call's keys in order. Answers one flat
/// array, per call: `1, result` (a result that is not an array), `2, m, item₁ … itemₘ`
/// (an array result of m items), or `0, error message`.
///
/// Written for the server's cost per call (measured with `INFO commandstats`, see the
/// README): the counts are parsed once, every call reuses one table of keys and one of
/// arguments (cleared past the call's own), and an array result is copied into the
/// flat answer rather than nested in it — Redis converts a nested table with a lookup
/// of each of the reply fields (`err`, `ok`, `double`, …), more than the body costs.
macro_rules! batch_envelope {
    () => {
        r#"
local n = tonumber(ARGV[1])
if not n or n < 1 or n > 64 or n % 1 ~= 0 or #ARGV < 1 + 2 * n then
  return redis.error_reply('ERR palisade: a batch is malformed')
end
local nkeys, nargs, ks, as = 0, 0, {}, {}
for i = 1, n do
  local k, a = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  if not k or not a or k < 0 or a < 0 or k % 1 ~= 0 or a % 1 ~= 0 then
    return redis.error_reply('ERR palisade: a batch is malformed')
  end
  ks[i], as[i], nkeys, nargs = k, a, nkeys + k, nargs + a
end
if nkeys ~= #KEYS or 1 + 2 * n + nargs ~= #ARGV then
  return redis.error_reply('ERR palisade: a batch is malformed')
end
local out, o, ko, ao, keys, args, wk, wa = {}, 0, 0, 1 + 2 * n, {}, {}, 0, 0
for i = 1, n do
  local k, a = ks[i], as[i]
  for j = 1, k do keys[j] = KEYS[ko + j] end
  for j = k + 1, wk do keys[j] = nil end
  for j = 1, a do args[j] = ARGV[ao + j] end
  for j = a + 1, wa do args[j] = nil end
  if k > wk then wk = k end
  if a > wa then wa = a end
  ko, ao = ko + k, ao + a
  ARGS = args
  local ok, r = pcall(one, keys, args)
  if ok and type(r) == 'table' and r.err then ok, r = false, r.err end
  if not ok then
    if type(r) == 'table' then r = r.err or 'ERR palisade: a call of the batch failed' end
    out[o + 1], out[o + 2], o = 0, tostring(r), o + 2
  elseif type(r) == 'table' and r.ok == nil then
    local m = 0
    while r[m + 1] ~= nil do m = m + 1; out[o + 2 + m] = r[m] end
    out[o + 1], out[o + 2], o = 2, m, o + 2 + m
  else
    if r == nil then r = false end
    out[o + 1], out[o + 2], o = 1, r, o + 2
  end
end
return out
"#
    };
}
pub(crate) use batch_envelope;

/// A script and its batched form.
#[derive(Debug)]
pub struct Batched {
    /// The script, run alone.
    pub one: LuaScript,
    /// The same body run once per call of a batch, by an envelope that answers two
    /// values per call (1 and the result, or 0 and the error message).
    pub many: LuaScript,
}

/// A call waiting in a lane.
struct Pending {
    keys: Vec<String>,
    args: Vec<Value>,
    reply: oneshot::Sender<Result<Value, Error>>,
}

/// The calls of one script on one slot.
#[derive(Default)]
struct Lane {
    in_flight: usize,
    queue: VecDeque<Pending>,
}

/// How much batching happened (see [`Batcher::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchStats {
    /// Batched script calls sent (two calls or more each).
    pub batches: u64,
    /// Calls that went in those batches.
    pub batched_calls: u64,
    /// Calls in flight now, alone or as batches (at most one per slot).
    pub in_flight: usize,
    /// Calls queued now behind them whose callers still wait.
    pub queued: usize,
}

/// Natural batching of one script's calls, per hash slot (see the module docs).
pub struct Batcher {
    script: &'static Batched,
    /// How many calls may be in flight on a slot before more queue ([`IN_FLIGHT`];
    /// unbounded when batching is off).
    in_flight: usize,
    lanes: Mutex<HashMap<u16, Lane>>,
    batches: AtomicU64,
    batched_calls: AtomicU64,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("script", &self.script.one.name())
            .finish()
    }
}

/// A lane's place held by a call sent alone: given back (or passed to a flush) when
/// the call ends or its future is dropped.
struct Sending<'a> {
    batcher: &'a Arc<Batcher>,
    conn: &'a RedisConnection,
    slot: u16,
    /// Set when the call failed for an outage: the queue then fails with it.
    outage: Option<Arc<Error>>,
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        self.batcher.done(self.conn, self.slot, self.outage.take());
    }
}

impl Batcher {
    /// Batching for `script`; `on: false` sends every call alone at once (for
    /// comparison, or where no call may share a script call with another).
    pub fn new(script: &'static Batched, on: bool) -> Arc<Self> {
        Arc::new(Batcher {
            script,
            in_flight: if on { IN_FLIGHT } else { usize::MAX },
            lanes: Mutex::new(HashMap::new()),
            batches: AtomicU64::new(0),
            batched_calls: AtomicU64::new(0),
        })
    }

    fn lanes(&self) -> MutexGuard<'_, HashMap<u16, Lane>> {
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The batches sent so far and the calls queued now.
    pub fn stats(&self) -> BatchStats {
        let lanes = self.lanes();
        BatchStats {
            batches: self.batches.load(Ordering::Relaxed),
            batched_calls: self.batched_calls.load(Ordering::Relaxed),
            in_flight: lanes.values().map(|l| l.in_flight).sum(),
            queued: lanes
                .values()
                .map(|l| l.queue.iter().filter(|p| !p.reply.is_closed()).count())
                .sum(),
        }
    }

    /// Runs the script on `keys` (of one slot) with `args`: alone if no call of it is
    /// in flight on that slot, else in the next batch.
    pub async fn run(
        self: &Arc<Self>,
        conn: &RedisConnection,
        op: &'static str,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<Value, Error> {
        let slot = keys.first().and_then(|k| conn.slot_of(k)).unwrap_or(0);
        let alone = {
            let mut lanes = self.lanes();
            let lane = lanes.entry(slot).or_default();
            if lane.in_flight < self.in_flight && lane.queue.is_empty() {
                lane.in_flight += 1;
                Ok((keys, args))
            } else {
                let (tx, rx) = oneshot::channel();
                lane.queue.push_back(Pending { keys, args, reply: tx });
                Err(rx)
            }
        };
        let rx = match alone {
            Err(rx) => rx,
            Ok((keys, args)) => {
                let mut sending = Sending {
                    batcher: self,
                    conn,
                    slot,
                    outage: None,
                };
                return match self.script.one.run_keys(conn, op, keys, args).await {
                    Err(e) if e.is_unavailable() => {
                        let e = Arc::new(e);
                        sending.outage = Some(Arc::clone(&e));
                        drop(sending);
                        Err(Arc::try_unwrap(e).unwrap_or_else(|e| Error::clone_shared(&e)))
                    }
                    r => r,
                };
            }
        };
        // A queued call waits no longer than a lone one may take; dropping `rx` (here
        // or with the future) takes it out of the queue before it is sent.
        match tokio::time::timeout(conn.command_timeout() + BACKSTOP, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Unavailable {
                backend: conn.endpoint().clone(),
                op,
                source: "the batch this call waited in was dropped (the runtime is shutting down)".into(),
            }),
            Err(_) => Err(Error::Timeout {
                backend: conn.endpoint().clone(),
                op,
                after: conn.command_timeout(),
            }),
        }
    }

    /// A call in flight on `slot` ended. After an outage every queued call fails with
    /// it, unsent (they would meet the same server); else, if calls wait, the lane's
    /// place passes to a flush that sends them; otherwise it is given back.
    fn done(self: &Arc<Self>, conn: &RedisConnection, slot: u16, outage: Option<Arc<Error>>) {
        if self.settle(slot, outage, 0).is_none() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let (batcher, conn) = (Arc::clone(self), conn.clone());
                rt.spawn(async move { batcher.flush(&conn, slot).await });
            }
            // No runtime to send them on: the waiters are told (their channels close).
            Err(_) => {
                self.lanes().remove(&slot);
            }
        }
    }

    /// Settles `slot`'s lane after a call in flight ended: after an outage its queue
    /// fails with it, unsent; abandoned calls leave. With nothing left the lane's place
    /// is given back and `None` returned; else the place is kept and up to `max` of
    /// the waiting calls are taken, in order.
    fn settle(&self, slot: u16, outage: Option<Arc<Error>>, max: usize) -> Option<Vec<Pending>> {
        let mut lanes = self.lanes();
        let lane = lanes.get_mut(&slot)?;
        if let Some(e) = outage {
            for p in lane.queue.drain(..) {
                let _ = p.reply.send(Err(Error::clone_shared(&e)));
            }
        }
        lane.queue.retain(|p| !p.reply.is_closed());
        if lane.queue.is_empty() {
            lane.in_flight = lane.in_flight.saturating_sub(1);
            if lane.in_flight == 0 {
                lanes.remove(&slot);
            }
            return None;
        }
        let n = lane.queue.len().min(max);
        Some(lane.queue.drain(..n).collect())
    }

    /// Sends the lane's queue, batch after batch, until it is empty (or an outage
    /// failed it); then gives the lane's place back.
    async fn flush(self: Arc<Self>, conn: &RedisConnection, slot: u16) {
        // Dropped unfinished (the runtime shuts down): the lane goes, and with it the
        // queue — its callers are told — so no later call waits behind a dead flush.
        struct Flushing<'a>(&'a Batcher, u16, bool);
        impl Drop for Flushing<'_> {
            fn drop(&mut self) {
                if !self.2 {
                    self.0.lanes().remove(&self.1);
                }
            }
        }
        let mut flushing = Flushing(&self, slot, false);
        let mut outage = None;
        loop {
            let Some(batch) = self.settle(slot, outage.take(), MAX_BATCH) else {
                flushing.2 = true;
                return;
            };
            outage = self.send(conn, batch).await;
        }
    }

    /// One call of the batched form for `batch` (the plain script for one call), each
    /// caller answered; returns the error when it was an outage.
    async fn send(&self, conn: &RedisConnection, mut batch: Vec<Pending>) -> Option<Arc<Error>> {
        let op = self.script.one.name();
        if batch.len() == 1 {
            let p = batch.pop()?;
            return match self.script.one.run_keys(conn, op, p.keys, p.args).await {
                Err(e) if e.is_unavailable() => {
                    let e = Arc::new(e);
                    let _ = p.reply.send(Err(Error::clone_shared(&e)));
                    Some(e)
                }
                r => {
                    let _ = p.reply.send(r);
                    None
                }
            };
        }
        let n = batch.len();
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batched_calls.fetch_add(n as u64, Ordering::Relaxed);
        let mut keys = Vec::with_capacity(n * 2);
        let mut args = Vec::with_capacity(1 + 2 * n + n * 4);
        args.push(Value::Integer(n as i64));
        for p in &batch {
            args.push(Value::Integer(p.keys.len() as i64));
            args.push(Value::Integer(p.args.len() as i64));
        }
        let mut replies = Vec::with_capacity(n);
        for p in batch {
            keys.extend(p.keys);
            args.extend(p.args);
            replies.push(p.reply);
        }
        match self.script.many.run_keys(conn, op, keys, args).await {
            Ok(Value::Array(items)) => {
                match answers(items, n) {
                    Some(answers) => {
                        for (reply, a) in replies.into_iter().zip(answers) {
                            let _ = reply.send(a.map_err(|msg| conn.reply_error(op, &msg)));
                        }
                    }
                    None => {
                        for reply in replies {
                            let _ = reply.send(Err(malformed(conn, op)));
                        }
                    }
                }
                None
            }
            Ok(_) => {
                for reply in replies {
                    let _ = reply.send(Err(malformed(conn, op)));
                }
                None
            }
            Err(e) => {
                let e = Arc::new(e);
                for reply in replies {
                    let _ = reply.send(Err(Error::clone_shared(&e)));
                }
                e.is_unavailable().then_some(e)
            }
        }
    }
}

/// The answers of a batch of `n` calls, decoded from the batched form's flat answer
/// (per call `1, result`, `2, m, item₁ … itemₘ` or `0, error message`): per call its
/// result, or the server's error message; `None` when the answer is not `n` answers in
/// that shape, with nothing left over.
pub fn answers(items: Vec<Value>, n: usize) -> Option<Vec<Result<Value, String>>> {
    let mut items = items.into_iter();
    let answers: Option<Vec<_>> = (0..n).map(|_| answer(&mut items)).collect();
    answers.filter(|_| items.next().is_none())
}

/// One call's answer, read from the front of a batch's flat answer (see
/// [`batch_envelope`]): its result, or the server's error message; `None` when the
/// answer is not in that shape.
fn answer(items: &mut impl Iterator<Item = Value>) -> Option<Result<Value, String>> {
    match items.next()?.as_i64()? {
        0 => Some(Err(items.next()?.as_string().unwrap_or_default())),
        1 => items.next().map(Ok),
        2 => {
            let m = usize::try_from(items.next()?.as_i64()?).ok()?;
            let array: Vec<Value> = items.take(m).collect();
            (array.len() == m).then_some(Ok(Value::Array(array)))
        }
        _ => None,
    }
}

fn malformed(conn: &RedisConnection, op: &'static str) -> Error {
    Error::Backend {
        backend: conn.endpoint().clone(),
        op,
        source: "a batched script answered something other than one answer per call".into(),
    }
}
