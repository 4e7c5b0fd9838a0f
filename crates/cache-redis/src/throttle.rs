//! The throttle and rate limiter on Redis: one Lua script per decision, server time.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fred::prelude::*;
use palisade_cache_core::{BoxFuture, Error, Provenance, Run, Tagged};
use palisade_throttle::op;
use palisade_throttle::{
    DenyReason, KeyState, Lease, LeaseOps, MAX_LEASE, MAX_PENALTY, MIN_DURATION, RateDecision, RawDecision, Scope,
    Woken,
};

use crate::batch::{BatchStats, Batched, Batcher};
use crate::{LuaScript, RedisConnection};

/// How long a key's state outlives its last relevance, in µs (as in the local backend).
const IDLE_US: u64 = 600_000_000;

/// How long a wake-up pushed by a release or a departure waits for its waiter, in ms:
/// a waiter takes it at its next wait, within a re-check period.
const WAKE_MS: i64 = 60_000;

/// Prepends `now` (server time, µs), `fmt` (exact integer formatting: Lua 5.1's
/// `tostring` would print 1.7e+15; `%d`, an integer printf, because every value it is
/// given is an integer below 2^53 and `%.0f` costs the server twice as much), `keep`
/// (an expiry that only grows) and `arg`, which reads an integer argument within
/// bounds or returns `nil`: every script checks its arguments and reads its keys (a key
/// of another type fails a read) **before its first write**, because Redis does not
/// roll a script back.
macro_rules! script {
    ($($body:expr),+) => {
        concat!(prelude!(), $($body),+)
    };
}

/// The batched form of a script body (see [`crate::batch`]): the prelude once (one
/// `TIME` for the batch), the body as `one(KEYS, ARGV)`, run per call by the envelope.
macro_rules! batched {
    ($($body:expr),+) => {
        concat!(
            prelude!(),
            "local function one(KEYS, ARGV)\n",
            $($body,)+
            "\nend\n",
            crate::batch::batch_envelope!()
        )
    };
}

/// What every script starts with: the server's time in µs and the checking helpers.
macro_rules! prelude {
    () => {
        concat!(
            crate::script::lua_locals!(),
            "local t = call('TIME')\n",
            "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n",
            "local function fmt(n) return format('%d', n) end\n",
            "local function keep(key, until_us)\n",
            "  local need = ceil((until_us - now) / 1000)\n",
            "  if need < 1 then need = 1 end\n",
            // `GT`: one call where the expiry grows. It treats a key without one as
            // never expiring, so a key a script just created gets its first expiry
            // from the plain form.
            "  if call('PEXPIRE', key, need, 'GT') == 0 and call('PTTL', key) == -1 then\n",
            "    call('PEXPIRE', key, need)\n",
            "  end\n",
            "end\n",
            // `ARGS`, not `ARGV`: a batched form points it at each call's arguments.
            "local ARGS = ARGV\n",
            "local function arg(i, lo, hi)\n",
            "  local n = tonumber(ARGS[i])\n",
            // `n % 1 ~= 0`: not a whole number (NaN and ±inf too), without a call.
            "  if n == nil or n % 1 ~= 0 or n < lo or n > hi then return nil end\n",
            "  return n\n",
            "end\n",
            "local function bad(why) return redis.error_reply('ERR palisade: ' .. why) end\n",
            "local function sane(v, hi)\n",
            "  if v == nil then return true end\n",
            "  return v % 1 == 0 and v >= 0 and v <= hi\n",
            "end\n",
            "local GARBAGE = 'the stored throttle state is not what palisade writes'\n",
            "local DAY, YEAR, CAP = 86400000000, 31536000000000, 4294967295\n",
        )
    };
}

/// The waiting helpers of the acquire, release and dequeue scripts: `ticket_ok` checks a
/// ticket (decimal digits, kept a string: a u64 does not fit Lua's doubles), `wake`
/// pushes a wake-up (or a handed lease) for a ticket under the prefix `WAKE` (the key
/// is its ticket's, under the namespace's hash tag: the script's slot), `first_live` finds the first
/// queued ticket whose entry is live in `waiters`, `wake_heads` wakes the first live
/// waiter of a key queue and of the global queue. `waiting!(wake_args)` reads `WAKE`
/// and `WAKE_MS` from `ARGV[2]` and `ARGV[3]` first (release, dequeue).
macro_rules! waiting {
    () => {
        r#"
local function ticket_ok(t) return t and #t <= 20 and string.match(t, '^%d+$') ~= nil end
-- `msg`: '1' (ask again) or a handed lease, 'L id granted_at expiry'; `ms`: how long it
-- waits for its waiter (WAKE_MS unless given).
local function wake(t, msg, ms)
  local w = WAKE .. t
  -- pcall: a wake-up that cannot be pushed is one the waiter's re-check makes up for;
  -- it must not fail the script after its first write.
  redis.pcall('LPUSH', w, msg or '1')
  redis.pcall('LTRIM', w, 0, 0)
  redis.pcall('PEXPIRE', w, ms or WAKE_MS)
end
local function first_live(queue, waiters)
  for _, t in ipairs(call('ZRANGE', queue, 0, 7)) do
    local e = tonumber(call('ZSCORE', waiters, t))
    if e and e > now then return t end
  end
  return nil
end
-- A slot came free or a waiter ahead left: the first live waiter of the key, and of
-- the global cap, may go now.
local function wake_heads(queue, waiters, global_queue)
  local t = first_live(queue, waiters)
  if t then wake(t) end
  t = first_live(global_queue, waiters)
  if t then wake(t) end
end
"#
    };
    (wake_args) => {
        concat!(
            "local WAKE, WAKE_MS = ARGV[2] or '', arg(3, 1, DAY)\n",
            "if not WAKE_MS then return bad('a wake-up TTL is 1 ms to one day') end\n",
            waiting!()
        )
    };
}

/// The granting half of the acquire and release scripts, over their common keys (global
/// leases, key leases, key state, fencing counter, liveness marker, key queue, waiters,
/// global queue, handed leases): `grant` takes a lease (the next fencing number, the lease in both
/// sets, the acquisition time, every expiry set outright: each covers everything its
/// key holds); `granted_to` takes a waiter out of every queue and keeps which lease it
/// took, for a dequeue that comes after it (its caller went away while the answer was on
/// its way): the lease is then released, not leaked. Both write only keys whose type
/// the script has read first.
macro_rules! grant {
    () => {
        r#"
local function grant(seq, ttl, interval, idle, pen, gtop, ktop, up)
  local id = seq + 1
  if id < now then id = now end
  local sid = fmt(id)
  call('SET', KEYS[4], sid, 'PX', 86400000)
  local exp = now + ttl
  local sexp = fmt(exp)
  call('ZADD', KEYS[1], sexp, sid)
  call('ZADD', KEYS[2], sexp, sid)
  call('HSET', KEYS[3], 'last', fmt(now))
  local top = max(gtop, exp)
  ktop = max(ktop, exp)
  call('PEXPIRE', KEYS[1], ceil((top - now) / 1000) + 1000)
  call('PEXPIRE', KEYS[2], ceil((ktop - now) / 1000) + 1000)
  call('PEXPIRE', KEYS[3], ceil((max(pen, now + interval, ktop) + idle - now) / 1000))
  -- The marker (`up`: it exists) outlives every lease of the namespace.
  if up then keep(KEYS[5], top + 1000000) else call('SET', KEYS[5], '1', 'PX', ceil((top - now) / 1000) + 1000) end
  return id, exp
end
local function granted_to(ticket, id, ms)
  call('ZREM', KEYS[6], ticket)
  call('ZREM', KEYS[7], ticket)
  call('ZREM', KEYS[8], ticket)
  redis.pcall('DEL', WAKE .. ticket, WAKE .. ticket .. ':p')
  redis.pcall('SET', WAKE .. ticket .. ':l', fmt(id), 'PX', ms or WAKE_MS)
end
"#
    };
}

// KEYS: global leases, key leases, key state, fencing counter, liveness marker, key
// queue, waiters, global queue, handed leases.
// ARGV: global cap, key cap, min interval (µs), lease TTL (µs), idle (µs), restart
// hold ('1' on, '0' off), waiter ticket ('0': not waiting), entry TTL (µs), wake prefix.
const ACQUIRE: &str = script!(
    r#"
local gcap, kcap = arg(1, 0, CAP), arg(2, 0, CAP)
local interval, ttl, idle = arg(3, 0, DAY), arg(4, 1000, DAY), arg(5, 0, DAY)
local qttl = arg(8, 1000, DAY)
if not (gcap and kcap and interval and ttl and idle and qttl) then return bad('a policy argument is out of bounds') end
local ticket = ARGV[7]
local WAKE, WAKE_MS = ARGV[9] or '', ceil(qttl / 1000) + 1000
"#,
    waiting!(),
    grant!(),
    r#"
if not ticket_ok(ticket) then return bad('a waiter ticket is a decimal number') end
local waiting = ticket ~= '0'
if waiting then
  -- A release handed this waiter a lease while it asked again: that is its answer.
  local m = redis.pcall('LINDEX', WAKE .. ticket, 0)
  local hid, hat = nil, nil
  if type(m) == 'string' then hid, hat = string.match(m, '^L (%d+) (%d+) %d+$') end
  if hid then
    local exp = tonumber(call('ZSCORE', KEYS[2], hid))
    if exp and exp > now then
      call('ZREM', KEYS[9], ticket)
      redis.pcall('DEL', WAKE .. ticket)
      return {1, tonumber(hid), tonumber(hat), exp, 0}
    end
  end
end
local qn = call('ZCARD', KEYS[6])
-- The waiters and the global queue are written only by a waiter or where the key has
-- a queue: read (type-checked) then, before the first write.
if waiting or qn > 0 then
  call('ZCARD', KEYS[7])
  call('ZCARD', KEYS[8])
end
local hn = call('ZCARD', KEYS[9])
-- Reads first: a key holding another type fails here, and stored values palisade
-- cannot have written are refused here, before anything is written.
local st = call('HMGET', KEYS[3], 'last', 'pen')
local raw_seq = call('GET', KEYS[4])
local seq = tonumber(raw_seq) or 0
local gall, kall = call('ZCARD', KEYS[1]), call('ZCARD', KEYS[2])
local gtop = tonumber((call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES'))[2]) or 0
local ktop = tonumber((call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES'))[2]) or 0
local up = call('EXISTS', KEYS[5]) == 1
local last, pen = tonumber(st[1]), tonumber(st[2]) or 0
if not (sane(last, now + DAY) and sane(pen, now + YEAR) and sane(seq, 2 ^ 53) and sane(gtop, now + 2 * DAY)
    and sane(ktop, now + 2 * DAY)) or (raw_seq and not tonumber(raw_seq)) then
  return bad(GARBAGE)
end
local never = now + ttl
local hold = 0
if not up and ARGV[6] ~= '0' then
  -- No state for this namespace: if the server started less than a lease ago it may
  -- have restarted empty while leases were held. A lease granted before it died ends by
  -- its start + ttl. Uptime is whole seconds of the start (floor) subtracted from whole
  -- seconds of now, so the start lies before (now's second - uptime + 1): a bound that
  -- does not move as time passes, so retry_after is honest.
  local uptime = tonumber(string.match(call('INFO', 'server'), 'uptime_in_seconds:(%d+)')) or 0
  local started = (tonumber(t[1]) - uptime + 1) * 1000000
  if started + ttl > now then hold = started + ttl end
end
local reclaimed = call('ZREMRANGEBYSCORE', KEYS[1], '-inf', fmt(now))
local kreclaimed = call('ZREMRANGEBYSCORE', KEYS[2], '-inf', fmt(now))
-- A lease handed to a waiter that never took it (its process died: the handed lease is
-- still in its wake-up list) goes back once the waiter's entry life is over.
if hn > 0 then
  for _, h in ipairs(call('ZRANGEBYSCORE', KEYS[9], '-inf', fmt(now), 'LIMIT', 0, 16)) do
    local m = redis.pcall('LINDEX', WAKE .. h, 0)
    local lid = type(m) == 'string' and string.match(m, '^L (%d+) ')
    if lid then
      reclaimed = reclaimed + call('ZREM', KEYS[1], lid)
      kreclaimed = kreclaimed + call('ZREM', KEYS[2], lid)
      redis.pcall('DEL', WAKE .. h, WAKE .. h .. ':l')
    end
    call('ZREM', KEYS[9], h)
  end
end
-- The live waiters that arrived first are owed the key's free slots.
local ahead, arrival = 0, nil
if qn > 0 then
  call('ZREMRANGEBYSCORE', KEYS[7], '-inf', fmt(now))
  -- Abandoned entries at the head leave the queue (one further back leaves when it
  -- reaches the head, counted as ahead until then).
  for _ = 1, 64 do
    local h = call('ZRANGE', KEYS[6], 0, 0)[1]
    if not h or call('ZSCORE', KEYS[7], h) then break end
    call('ZREM', KEYS[6], h)
    call('ZREM', KEYS[8], h)
  end
  if waiting then arrival = call('ZSCORE', KEYS[6], ticket) end
  if arrival then ahead = call('ZRANK', KEYS[6], ticket) else ahead = call('ZCARD', KEYS[6]) end
end
local function cap_free(key, cap, n)
  if n < cap then return now end
  if cap <= 0 then return never end
  local e = call('ZRANGE', key, n - cap, n - cap, 'WITHSCORES')
  return tonumber(e[2])
end
local klive = kall - kreclaimed
local free = {max(pen, now), last and max(last + interval, now) or now,
  cap_free(KEYS[1], gcap, gall - reclaimed), cap_free(KEYS[2], kcap - ahead, klive), max(hold, now)}
for i = 1, 5 do
  if free[i] > now then
    if waiting then
      -- A first arrival takes the next number of the fencing counter: arrivals are
      -- strictly ordered, also within one microsecond.
      local a = arrival
      if not a then
        a = fmt(max(seq + 1, now))
        call('SET', KEYS[4], a, 'PX', 86400000)
      end
      call('ZADD', KEYS[6], a, ticket)
      call('ZADD', KEYS[7], fmt(now + qttl), ticket)
      if i == 3 then call('ZADD', KEYS[8], 'NX', a, ticket) end
      for q = 6, 8 do keep(KEYS[q], now + qttl + 1000000) end
      -- The waiter's own policy, for a release that hands it a slot.
      redis.pcall('SET', WAKE .. ticket .. ':p', fmt(gcap) .. ' ' .. fmt(kcap) .. ' ' .. fmt(interval) .. ' '
        .. fmt(ttl) .. ' ' .. fmt(idle), 'PX', WAKE_MS)
    end
    return {0, i - 1, max(free[1], free[2], free[3], free[4], free[5]) - now, reclaimed}
  end
end
local id, exp = grant(seq, ttl, interval, idle, pen, gtop, ktop, up)
if waiting then
  granted_to(ticket, id)
  -- Room left on the key: the next waiter need not wait for a release.
  if klive + 1 < kcap then
    local nxt = first_live(KEYS[6], KEYS[7])
    if nxt then wake(nxt) end
  end
end
return {1, id, now, exp, reclaimed}
"#
);

// KEYS: as the acquire script's (global leases, key leases, key state, fencing counter,
// liveness marker, key queue, waiters, global queue, handed leases). ARGV: lease id, wake prefix,
// wake-up TTL (ms).
const RELEASE: &str = script!(
    waiting!(wake_args),
    grant!(),
    r#"
-- The freed slot goes to the first live waiter of the key when every gate of its own
-- policy admits it now: the grant, and the lease pushed as its wake-up. Only reads
-- until it grants; state not as palisade writes it means no handoff (the waiter's own
-- acquisition reports it), never a failed release.
local function hand_off()
  if call('EXISTS', KEYS[5]) == 0 then return false end
  local t = first_live(KEYS[6], KEYS[7])
  if not t then return false end
  local raw = redis.pcall('GET', WAKE .. t .. ':p')
  if type(raw) ~= 'string' then return false end
  local p = {}
  for n in string.gmatch(raw, '%d+') do p[#p + 1] = tonumber(n) end
  local gcap, kcap, interval, ttl, idle = p[1], p[2], p[3], p[4], p[5]
  if #p ~= 5 or gcap > CAP or kcap > CAP or interval > DAY or ttl < 1000 or ttl > DAY or idle > DAY then
    return false
  end
  local st, raw_seq = redis.pcall('HMGET', KEYS[3], 'last', 'pen'), redis.pcall('GET', KEYS[4])
  if st.err or type(raw_seq) == 'table' or (raw_seq and not tonumber(raw_seq)) then return false end
  local last, pen, seq = tonumber(st[1]), tonumber(st[2]) or 0, tonumber(raw_seq) or 0
  local gtop = tonumber((call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES'))[2]) or 0
  local ktop = tonumber((call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES'))[2]) or 0
  if not (sane(last, now + DAY) and sane(pen, now + YEAR) and sane(seq, 2 ^ 53) and sane(gtop, now + 2 * DAY)
      and sane(ktop, now + 2 * DAY)) then
    return false
  end
  local above = '(' .. fmt(now)
  if pen > now or (last and last + interval > now) or call('ZCOUNT', KEYS[1], above, '+inf') >= gcap
      or call('ZCOUNT', KEYS[2], above, '+inf') >= kcap then
    return false
  end
  -- Until the waiter's entry life is over: a lease it never took then goes back, so
  -- the handed lease and the record of the grant live at least as long.
  local life = tonumber(call('ZSCORE', KEYS[7], t))
  local ms = max(WAKE_MS, ceil((life - now) / 1000) + 1000)
  local id, exp = grant(seq, ttl, interval, idle, pen, gtop, ktop, true)
  granted_to(t, id, ms)
  wake(t, 'L ' .. fmt(id) .. ' ' .. fmt(now) .. ' ' .. fmt(exp), ms)
  call('ZADD', KEYS[9], fmt(life), t)
  keep(KEYS[9], life + 1000000)
  return true
end
local s = call('ZSCORE', KEYS[2], ARGV[1])
local qn, gn = call('ZCARD', KEYS[6]), call('ZCARD', KEYS[8])
-- The waiters and the handed set are written only with waiters: read (type-checked)
-- then, before the first write.
if qn > 0 or gn > 0 then
  call('ZCARD', KEYS[7])
  call('ZCARD', KEYS[9])
end
call('ZREM', KEYS[1], ARGV[1])
call('ZREM', KEYS[2], ARGV[1])
if not (s and tonumber(s) > now) then return -1 end
if qn > 0 and hand_off() then return now end
if qn > 0 or gn > 0 then wake_heads(KEYS[6], KEYS[7], KEYS[8]) end
return now
"#
);

// KEYS: key queue, waiters, global queue, global leases, key leases. ARGV: ticket, wake
// prefix, wake-up TTL (ms).
const DEQUEUE: &str = script!(
    waiting!(wake_args),
    r#"
if not ticket_ok(ARGV[1]) then return bad('a waiter ticket is a decimal number') end
call('ZCARD', KEYS[1])
call('ZCARD', KEYS[2])
call('ZCARD', KEYS[3])
call('ZCARD', KEYS[4])
call('ZCARD', KEYS[5])
local granted = redis.pcall('GET', WAKE .. ARGV[1] .. ':l')
if type(granted) ~= 'string' then granted = nil end
local was = call('ZREM', KEYS[1], ARGV[1])
call('ZREM', KEYS[2], ARGV[1])
call('ZREM', KEYS[3], ARGV[1])
redis.pcall('DEL', WAKE .. ARGV[1], WAKE .. ARGV[1] .. ':p')
if granted then
  -- The waiter went away after its grant: its lease goes back.
  call('ZREM', KEYS[4], granted)
  if call('ZREM', KEYS[5], granted) == 1 then was = 1 end
  redis.pcall('DEL', WAKE .. ARGV[1] .. ':l')
end
-- One ahead left: the next may now be within the free slots.
if was == 1 then wake_heads(KEYS[1], KEYS[2], KEYS[3]) end
return was
"#
);

// KEYS: global leases, key leases, key state. ARGV: lease id, by (µs), idle (µs).
const EXTEND: &str = script!(
    r#"
local by, idle = arg(2, 1000, DAY), arg(3, 0, DAY)
if not (by and idle) then return bad('an extension is 1 ms to one day') end
local s = tonumber(call('ZSCORE', KEYS[2], ARGV[1]))
if not sane(s, now + 2 * DAY) then return bad(GARBAGE) end
if not s or s <= now then return -1 end
local new = max(s, now + by)
call('ZADD', KEYS[1], 'XX', fmt(new), ARGV[1])
call('ZADD', KEYS[2], 'XX', fmt(new), ARGV[1])
keep(KEYS[1], new + 1000000)
keep(KEYS[2], new + 1000000)
keep(KEYS[3], new + idle)
return new
"#
);

// KEYS: key state. ARGV: duration (µs), idle (µs).
const PENALIZE: &str = script!(
    r#"
local d, idle = arg(1, 1000, YEAR), arg(2, 0, DAY)
if not (d and idle) then return bad('a penalty is 1 ms to 365 days') end
local old = tonumber(call('HGET', KEYS[1], 'pen')) or 0
if not sane(old, now + YEAR) then return bad(GARBAGE) end
local pen = max(old, now + d)
call('HSET', KEYS[1], 'pen', fmt(pen))
keep(KEYS[1], pen + idle)
return pen
"#
);

// KEYS: key state.
const CLEAR_PENALTY: &str = script!(
    r#"
local pen = tonumber(call('HGET', KEYS[1], 'pen'))
call('HDEL', KEYS[1], 'pen')
if pen and pen > now then return 1 end
return 0
"#
);

// KEYS: global leases, key leases, key state, key queue, waiters.
const INSPECT: &str = script!(
    r#"
local above = '(' .. fmt(now)
local st = call('HMGET', KEYS[3], 'last', 'pen')
local waiting = 0
for _, t in ipairs(call('ZRANGE', KEYS[4], 0, -1)) do
  local e = tonumber(call('ZSCORE', KEYS[5], t))
  if e and e > now then waiting = waiting + 1 end
end
return {now, call('ZCOUNT', KEYS[2], above, '+inf'), call('ZCOUNT', KEYS[1], above, '+inf'),
        tonumber(st[2]) or 0, tonumber(st[1]) or -1, waiting}
"#
);

// KEYS: rate key. ARGV: emission interval (µs), burst. emission × burst is at most
// 200 years (checked here too): every time below stays exact in a double.
macro_rules! limit {
    () => {
        r#"
local emission, burst, cost, consume = arg(1, 1, DAY), arg(2, 1, CAP), arg(3, 1, CAP), arg(4, 0, 1)
if not (emission and burst and cost and consume) or emission * burst > 200 * YEAR
    or emission * cost > 200 * YEAR then
  return bad('a rate is out of bounds')
end
local tat = max(tonumber(call('GET', KEYS[1])) or now, now)
local new_tat = tat + emission * cost
local allow_at = new_tat - emission * burst
if now < allow_at then return {0, allow_at - now, tat - now} end
if consume == 1 then
  call('SET', KEYS[1], fmt(new_tat), 'PX', fmt(max(1, ceil((new_tat - now) / 1000))))
end
return {1, floor((now - allow_at) / emission), new_tat - now}
"#
    };
}
const LIMIT: &str = script!(limit!());
const LIMIT_MANY: &str = batched!(limit!());

const RESET_RATE: &str = script!(
    r#"
-- Read first: a key of another type (not palisade's) fails here, before the write.
if call('GET', KEYS[1]) == false then return 0 end
return call('DEL', KEYS[1])
"#
);

struct Scripts {
    acquire: LuaScript,
    release: LuaScript,
    dequeue: LuaScript,
    extend: LuaScript,
    penalize: LuaScript,
    clear_penalty: LuaScript,
    inspect: LuaScript,
    limit: Batched,
    reset_rate: LuaScript,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    acquire: LuaScript::new("throttle.acquire", ACQUIRE),
    release: LuaScript::new("throttle.release", RELEASE),
    dequeue: LuaScript::new("throttle.dequeue", DEQUEUE),
    extend: LuaScript::new("throttle.extend", EXTEND),
    penalize: LuaScript::new("throttle.penalize", PENALIZE),
    clear_penalty: LuaScript::new("throttle.clear_penalty", CLEAR_PENALTY),
    inspect: LuaScript::new("throttle.inspect", INSPECT),
    limit: Batched {
        one: LuaScript::new("throttle.limit", LIMIT),
        many: LuaScript::new("throttle.limit.batch", LIMIT_MANY),
    },
    reset_rate: LuaScript::new("throttle.reset_rate", RESET_RATE),
});

/// Every throttle script and the number of keys it takes.
pub(crate) fn scripts() -> Vec<(&'static LuaScript, usize)> {
    let s = &*SCRIPTS;
    vec![
        (&s.acquire, 9),
        (&s.release, 9),
        (&s.dequeue, 5),
        (&s.extend, 3),
        (&s.penalize, 1),
        (&s.clear_penalty, 1),
        (&s.inspect, 5),
        (&s.limit.one, 1),
        (&s.reset_rate, 1),
    ]
}

/// Every throttle script that batches: alone and batched.
pub(crate) fn batched_scripts() -> Vec<(&'static Batched, usize)> {
    vec![(&SCRIPTS.limit, 1)]
}

/// The throttle and GCRA rate limiter on Redis (standalone or Cluster).
///
/// # Behavior
///
/// Implements every sentence of [`ThrottleBackend`](palisade_throttle::ThrottleBackend)'s `# Behavior`:
/// - one Lua script per decision (acquire, release, extend, penalize, clear, inspect,
///   limit), loaded by [`RedisThrottle::new`], run with `EVALSHA`, reloaded on
///   `NOSCRIPT`: one round trip each, under the command deadline;
/// - rate decisions are **naturally batched**: while one is in flight on a slot, the
///   ones that arrive for keys of that slot queue and then go as one script call that
///   decides each in arrival order, each as it would alone (see
///   [`batch`](crate::batch) and [`RedisThrottle::batch_stats`]); nothing waits when
///   none is in flight;
/// - time from `TIME` inside the script, in microseconds — never a client clock;
/// - expired leases are reclaimed inside the acquire script before the gates are
///   checked;
/// - **handoff**: the release script grants the freed slot to the first live waiter of
///   the key when the policy that waiter queued with (kept beside its wake-up key)
///   admits it, and pushes the lease (`L id granted_at expiry`) where the waiter's
///   `BLPOP` takes it; the ticket is kept in the key's handed set until the waiter's
///   entry life ends, when an acquire gives back a lease still lying in the wake-up
///   list (a crashed waiter);
/// - a call that fails has written nothing: each script checks its arguments' bounds
///   and reads every key it will write (a key of another type fails the read) before
///   its first write;
/// - **restart hold**: a namespace with no state on a server that started less than a
///   lease TTL ago is refused with [`DenyReason::RestartHold`] until that lease TTL
///   after the start has passed — the server may have restarted empty (no persistence)
///   while leases were held, and granting then would put two holders on one slot. Each
///   grant keeps a marker that outlives the namespace's leases, so a namespace in use
///   is never held. A new deployment therefore waits one lease TTL after Redis starts
///   before its first grant. Turn it off ([`RedisThrottle::with_restart_hold`]) only
///   where the server's data survives restarts (AOF with `appendfsync always`);
/// - every key of one throttle namespace shares one hash tag, `{tenant:ns}`, after the
///   prefix, so the scripts are legal on a Redis Cluster (one namespace lives on one
///   shard);
/// - every key has a TTL: lease sets live 1 s past their last lease, key state 10 min
///   past its last relevance, the fencing counter one day (tokens stay monotonic after
///   it expires: they are `max(last + 1, now in µs)`), rate keys until their GCRA
///   arrival time.
#[derive(Clone)]
pub struct RedisThrottle {
    conn: RedisConnection,
    restart_hold: bool,
    /// Rate decisions, naturally batched per slot (see [`crate::batch`]).
    limits: Arc<Batcher>,
}

impl std::fmt::Debug for RedisThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisThrottle").field("conn", &self.conn).finish()
    }
}

fn us(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn time(us: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

fn tag<T>(v: T) -> Tagged<T> {
    Tagged::new(v, Provenance::Distributed)
}

fn ints(conn: &RedisConnection, op: &'static str, v: Value, n: usize) -> Result<Vec<i64>, Error> {
    let bad = || Error::Backend {
        backend: conn.endpoint().clone(),
        op,
        source: format!("unexpected reply from {op}").into(),
    };
    let Value::Array(items) = v else { return Err(bad()) };
    let out: Vec<i64> = items.into_iter().filter_map(|i| i.as_i64()).collect();
    if out.len() < n {
        return Err(bad());
    }
    Ok(out)
}

fn int(conn: &RedisConnection, op: &'static str, v: Value) -> Result<i64, Error> {
    v.as_i64().ok_or_else(|| Error::Backend {
        backend: conn.endpoint().clone(),
        op,
        source: format!("unexpected reply from {op}").into(),
    })
}

impl RedisThrottle {
    /// A throttle over `conn`; loads its scripts before returning.
    pub async fn new(conn: RedisConnection) -> Result<Self, Error> {
        let s = &*SCRIPTS;
        for script in [
            &s.acquire,
            &s.release,
            &s.dequeue,
            &s.extend,
            &s.penalize,
            &s.clear_penalty,
            &s.inspect,
            &s.limit.one,
            &s.limit.many,
            &s.reset_rate,
        ] {
            script.load(&conn).await?;
        }
        Ok(RedisThrottle::lazy(conn))
    }

    /// A throttle whose scripts load on first use (degraded startup).
    pub fn lazy(conn: RedisConnection) -> Self {
        RedisThrottle {
            conn,
            restart_hold: true,
            limits: Batcher::new(&SCRIPTS.limit, true),
        }
    }

    /// Turns the restart hold (see the type's `# Behavior`) on (the default) or off.
    pub fn with_restart_hold(mut self, on: bool) -> Self {
        self.restart_hold = on;
        self
    }

    /// The connection.
    pub fn connection(&self) -> &RedisConnection {
        &self.conn
    }

    /// Turns the natural batching of rate decisions on (the default) or off (every
    /// decision its own script call, sent at once).
    pub fn with_batching(mut self, on: bool) -> Self {
        self.limits = Batcher::new(&SCRIPTS.limit, on);
        self
    }

    /// How much natural batching the rate decisions of this throttle (and its clones)
    /// have had (see the crate's "Natural batching").
    pub fn batch_stats(&self) -> BatchStats {
        self.limits.stats()
    }

    /// The lease operations of a lease granted in `scope`.
    fn lease_ops(&self, scope: &Scope) -> Arc<dyn LeaseOps> {
        Arc::new(RedisLeases {
            conn: self.conn.clone(),
            scope: scope.clone(),
        })
    }

    /// The slot every key of a throttle namespace lives on (its hash tag's), on a
    /// cluster.
    fn namespace_slot(&self, scope: &Scope) -> Option<u16> {
        if !self.conn.is_cluster() {
            return None;
        }
        self.conn.slot_of(&scope.global_key().ok()?)
    }

    /// The slot of `key`'s rate key (no hash tag: its own slot), on a cluster; off one
    /// no key is built.
    fn rate_slot(&self, scope: &Scope, key: &str) -> Option<u16> {
        if !self.conn.is_cluster() {
            return None;
        }
        self.conn.slot_of(&scope.rate_key(key).ok()?)
    }
}

struct RedisLeases {
    conn: RedisConnection,
    scope: Scope,
}

/// The keys of the acquire and release scripts (see [`grant!`]).
fn grant_keys(scope: &Scope, key: &str) -> Result<Vec<String>, Error> {
    Ok(vec![
        scope.global_key()?,
        scope.leases_key(key)?,
        scope.state_key(key)?,
        scope.seq_key()?,
        scope.up_key()?,
        scope.queue_key(key)?,
        scope.waiters_key()?,
        scope.global_queue_key()?,
        scope.handed_key(key)?,
    ])
}

/// A handed lease as the release script pushes it: `L id granted_at expiry` (µs).
fn handed(msg: &str) -> Option<(u64, i64, i64)> {
    let mut parts = msg.strip_prefix("L ")?.split(' ');
    let mut next = || parts.next()?.parse::<u64>().ok();
    let (id, at, exp) = (next()?, next()?, next()?);
    Some((id, i64::try_from(at).ok()?, i64::try_from(exp).ok()?))
}

impl LeaseOps for RedisLeases {
    fn release(&self, key: &str, lease: u64) -> BoxFuture<'_, Result<Option<SystemTime>, Error>> {
        let key = key.to_owned();
        Box::pin(async move {
            let sc = &self.scope;
            let keys = grant_keys(sc, &key)?;
            let args = vec![lease.to_string().into(), sc.wake_prefix()?.into(), WAKE_MS.into()];
            let v = SCRIPTS
                .release
                .run_keys(&self.conn, "throttle.release", keys, args)
                .await?;
            let t = int(&self.conn, "throttle.release", v)?;
            Ok((t >= 0).then(|| time(t)))
        })
    }

    fn extend(&self, key: &str, lease: u64, by: Duration) -> BoxFuture<'_, Result<Option<SystemTime>, Error>> {
        let key = key.to_owned();
        Box::pin(async move {
            palisade_cache_core::limits::check_duration("a lease extension", by, MIN_DURATION, MAX_LEASE)?;
            let keys = vec![
                self.scope.global_key()?,
                self.scope.leases_key(&key)?,
                self.scope.state_key(&key)?,
            ];
            let args = vec![lease.to_string().into(), us(by).into(), (IDLE_US as i64).into()];
            let v = SCRIPTS
                .extend
                .run_keys(&self.conn, "throttle.extend", keys, args)
                .await?;
            let t = int(&self.conn, "throttle.extend", v)?;
            Ok((t >= 0).then(|| time(t)))
        })
    }
}

impl Run<op::Acquire> for RedisThrottle {
    async fn run(&self, op: &op::Acquire) -> Result<Tagged<(RawDecision, u64)>, Error> {
        let (scope, key, policy) = (&*op.scope, op.key.as_str(), &op.policy);
        policy.validate()?;
        let keys = grant_keys(scope, key)?;
        let (ticket, entry_ttl) = op
            .waiter
            .map_or((0, Duration::from_secs(1)), |w| (w.ticket, w.entry_ttl));
        let args: Vec<Value> = vec![
            i64::from(policy.global_cap).into(),
            i64::from(policy.key_cap).into(),
            us(policy.min_interval).into(),
            us(policy.lease_ttl).into(),
            (IDLE_US as i64).into(),
            if self.restart_hold { "1" } else { "0" }.into(),
            ticket.to_string().into(),
            us(entry_ttl.clamp(MIN_DURATION, MAX_LEASE)).into(),
            scope.wake_prefix()?.into(),
        ];
        let v = SCRIPTS
            .acquire
            .run_keys(&self.conn, "throttle.acquire", keys, args)
            .await?;
        let r = ints(&self.conn, "throttle.acquire", v, 4)?;
        let decision = if r[0] == 1 && r.len() >= 5 {
            let lease = Lease::new(u64::try_from(r[1]).unwrap_or(0), key.to_owned(), time(r[2]), time(r[3]));
            (
                RawDecision::Acquired(lease, self.lease_ops(scope)),
                u64::try_from(r[4]).unwrap_or(0),
            )
        } else {
            let reason = DenyReason::from_gate(r[1]).ok_or_else(|| Error::Backend {
                backend: self.conn.endpoint().clone(),
                op: "throttle.acquire",
                source: format!("unknown gate {}", r[1]).into(),
            })?;
            let retry_after = Duration::from_micros(u64::try_from(r[2]).unwrap_or(0));
            (
                RawDecision::Denied { reason, retry_after },
                u64::try_from(r[3]).unwrap_or(0),
            )
        };
        Ok(tag(decision))
    }
    fn slot(&self, op: &op::Acquire) -> Option<u16> {
        self.namespace_slot(&op.scope)
    }
}

impl Run<op::Penalize> for RedisThrottle {
    async fn run(&self, op: &op::Penalize) -> Result<Tagged<SystemTime>, Error> {
        let (scope, key, d) = (&*op.scope, op.key.as_str(), op.duration);
        palisade_cache_core::limits::check_duration("a penalty", d, MIN_DURATION, MAX_PENALTY)?;
        let args = vec![us(d).into(), (IDLE_US as i64).into()];
        let v = SCRIPTS
            .penalize
            .run_keys(&self.conn, "throttle.penalize", vec![scope.state_key(key)?], args)
            .await?;
        Ok(tag(time(int(&self.conn, "throttle.penalize", v)?)))
    }
    fn slot(&self, op: &op::Penalize) -> Option<u16> {
        self.namespace_slot(&op.scope)
    }
}

impl Run<op::ClearPenalty> for RedisThrottle {
    async fn run(&self, op: &op::ClearPenalty) -> Result<Tagged<bool>, Error> {
        let (scope, key) = (&*op.scope, op.key.as_str());
        let v = SCRIPTS
            .clear_penalty
            .run_keys(
                &self.conn,
                "throttle.clear_penalty",
                vec![scope.state_key(key)?],
                vec![],
            )
            .await?;
        Ok(tag(int(&self.conn, "throttle.clear_penalty", v)? == 1))
    }
    fn slot(&self, op: &op::ClearPenalty) -> Option<u16> {
        self.namespace_slot(&op.scope)
    }
}

impl Run<op::Inspect> for RedisThrottle {
    async fn run(&self, op: &op::Inspect) -> Result<Tagged<KeyState>, Error> {
        let (scope, key) = (&*op.scope, op.key.as_str());
        let keys = vec![
            scope.global_key()?,
            scope.leases_key(key)?,
            scope.state_key(key)?,
            scope.queue_key(key)?,
            scope.waiters_key()?,
        ];
        let v = SCRIPTS
            .inspect
            .run_keys(&self.conn, "throttle.inspect", keys, vec![])
            .await?;
        let r = ints(&self.conn, "throttle.inspect", v, 6)?;
        let now = r[0];
        Ok(tag(KeyState::new(
            u32::try_from(r[1]).unwrap_or(0),
            u32::try_from(r[2]).unwrap_or(0),
            (r[3] > now).then(|| time(r[3])),
            (r[4] >= 0).then(|| time(r[4])),
            time(now),
        )
        .with_waiting(u32::try_from(r[5]).unwrap_or(0))))
    }
    fn slot(&self, op: &op::Inspect) -> Option<u16> {
        self.namespace_slot(&op.scope)
    }
}

/// `BLPOP` on the waiter's wake-up key, on a dedicated connection: a wake-up pushed
/// before the call is taken at once; a handed lease comes in the same reply.
impl Run<op::Wake> for RedisThrottle {
    async fn run(&self, op: &op::Wake) -> Result<Tagged<Woken>, Error> {
        let key = format!("{}{}", op.scope.wake_prefix()?, op.ticket);
        let block = op.within.clamp(Duration::from_millis(1), crate::MAX_BLOCK);
        // Seconds with millisecond precision; never 0 (which would block forever).
        let secs = format!("{:.3}", block.as_secs_f64().max(0.001));
        let v: Value = self
            .conn
            .dedicated()
            .blocking(
                "throttle.wake",
                &key,
                "BLPOP",
                vec![key.clone().into(), secs.into()],
                block,
            )
            .await?;
        if v.is_null() {
            return Ok(tag(Woken::TimedOut));
        }
        let msg = match v {
            Value::Array(kv) => kv.into_iter().nth(1).and_then(|m| m.into_string()),
            _ => None,
        };
        if msg.as_deref() == Some("1") {
            return Ok(tag(Woken::Woken));
        }
        match msg.as_deref().and_then(handed) {
            Some((id, at, exp)) => {
                let lease = Lease::new(id, op.key.clone(), time(at), time(exp));
                Ok(tag(Woken::Granted(lease, self.lease_ops(&op.scope))))
            }
            // Not what the scripts push: the waiter fails, and its dequeue gives back a
            // lease it may have been handed.
            None => Err(Error::Backend {
                backend: self.conn.endpoint().clone(),
                op: "throttle.wake",
                source: "unexpected wake-up message".into(),
            }),
        }
    }
    fn slot(&self, op: &op::Wake) -> Option<u16> {
        self.namespace_slot(&op.scope)
    }
}

impl Run<op::Dequeue> for RedisThrottle {
    async fn run(&self, op: &op::Dequeue) -> Result<Tagged<bool>, Error> {
        let sc = &*op.scope;
        let keys = vec![
            sc.queue_key(&op.key)?,
            sc.waiters_key()?,
            sc.global_queue_key()?,
            sc.global_key()?,
            sc.leases_key(&op.key)?,
        ];
        let args = vec![op.ticket.to_string().into(), sc.wake_prefix()?.into(), WAKE_MS.into()];
        let v = SCRIPTS
            .dequeue
            .run_keys(&self.conn, "throttle.dequeue", keys, args)
            .await?;
        Ok(tag(int(&self.conn, "throttle.dequeue", v)? == 1))
    }
    fn slot(&self, op: &op::Dequeue) -> Option<u16> {
        self.namespace_slot(&op.scope)
    }
}

impl Run<op::Limit> for RedisThrottle {
    async fn run(&self, op: &op::Limit) -> Result<Tagged<RateDecision>, Error> {
        let (scope, key, rate) = (&*op.scope, op.key.as_str(), &op.rate);
        let args = vec![
            us(rate.emission).max(1).into(),
            i64::from(rate.burst).into(),
            i64::from(op.cost).into(),
            i64::from(op.consume).into(),
        ];
        // Boxed: the batcher's future (queueing, a lone call) would otherwise nest into
        // every caller's future type, past the compiler's layout depth in the umbrella.
        let v = Box::pin(
            self.limits
                .run(&self.conn, "throttle.limit", vec![scope.rate_key(key)?], args),
        )
        .await?;
        let r = ints(&self.conn, "throttle.limit", v, 3)?;
        let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
        let (limit, reset_after) = (rate.burst, micros(r[2]));
        Ok(tag(if r[0] == 1 {
            RateDecision::Allowed {
                remaining: u32::try_from(r[1]).unwrap_or(u32::MAX),
                limit,
                reset_after,
            }
        } else {
            RateDecision::Limited {
                retry_after: micros(r[1]),
                limit,
                reset_after,
            }
        }))
    }
    fn slot(&self, op: &op::Limit) -> Option<u16> {
        self.rate_slot(&op.scope, &op.key)
    }
}

impl Run<op::ResetRate> for RedisThrottle {
    async fn run(&self, op: &op::ResetRate) -> Result<Tagged<bool>, Error> {
        let v = SCRIPTS
            .reset_rate
            .run_keys(
                &self.conn,
                "throttle.reset_rate",
                vec![op.scope.rate_key(&op.key)?],
                vec![],
            )
            .await?;
        Ok(tag(int(&self.conn, "throttle.reset_rate", v)? == 1))
    }
    fn slot(&self, op: &op::ResetRate) -> Option<u16> {
        self.rate_slot(&op.scope, &op.key)
    }
}
