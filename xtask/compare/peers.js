// The Node peers of `cargo xtask compare`, in the same closed loop as palisade's
// harness: C workers, each awaiting its own call; a warm-up, then a counted window.
//
//   node peers.js URL OP C WARMUP_MS MEASURE_MS     OP: rlf | bottleneck
//   node peers.js URL rlf_memory
//
// rlf: rate-limiter-flexible's RateLimiterRedis.consume on 1,000 keys, never limiting.
// bottleneck: a Bottleneck Group (ioredis datastore) of 5 keys with maxConcurrent 2,
// each call schedule()s a trivial job; the line adds handoffs, handoff_p50_us and
// handoff_p99_us (the end of a job to the start of the next waiting job on its key).
// rlf_memory: what one rate-limiter-flexible key of 100 a minute costs in Redis
// (`MEMORY USAGE`), beside the Rust harness's `memory`.
// Prints one JSON line like the Rust harness.
'use strict';
const Redis = require('ioredis');
const { RateLimiterRedis } = require('rate-limiter-flexible');
const Bottleneck = require('bottleneck');

const [url, op, c, warmupMs, measureMs] = process.argv.slice(2);
const C = Number(c);
const { hostname, port } = new URL(url);

async function memory() {
  const redis = new Redis({ host: hostname, port: Number(port) });
  const limiter = new RateLimiterRedis({ storeClient: redis, points: 100, duration: 60, keyPrefix: 'memprobe-rlf' });
  await limiter.consume('memkey');
  const bytes = await redis.call('MEMORY', 'USAGE', 'memprobe-rlf:memkey', 'SAMPLES', '0');
  console.log(JSON.stringify({ op: 'rlf_memory', rate_key: bytes }));
  await redis.quit();
}

let counting = false;
let stop = false;
const handoffs = [];

async function main() {
  if (op === 'rlf_memory') return memory();
  let call;
  let close = async () => {};
  if (op === 'rlf') {
    const redis = new Redis({ host: hostname, port: Number(port), enableOfflineQueue: true });
    const limiter = new RateLimiterRedis({ storeClient: redis, points: 1e9, duration: 1, keyPrefix: 'cmp-rlf' });
    call = (i) => limiter.consume(`key${i % 1000}`);
    close = async () => redis.quit();
  } else if (op === 'bottleneck') {
    const group = new Bottleneck.Group({
      maxConcurrent: 2,
      datastore: 'ioredis',
      clearDatastore: true,
      clientOptions: { host: hostname, port: Number(port) },
      id: `cmp-bn-${process.pid}`,
    });
    // The time from the end of a job on a key to the start of the next job there that
    // was waiting (paired first in, first out per key), as the Rust harness measures
    // palisade's handoffs.
    const released = Array.from({ length: 5 }, () => []);
    call = (i) => {
      const k = i % 5;
      const asked = process.hrtime.bigint();
      return group.key(`mx${k}`).schedule(() => {
        const at = released[k].shift();
        const now = process.hrtime.bigint();
        if (counting && at !== undefined && at >= asked) handoffs.push(Number(now - at) / 1000);
        released[k].push(process.hrtime.bigint());
        return Promise.resolve(1);
      });
    };
    close = async () => group.disconnect(false);
  } else {
    console.error(`unknown op ${op}`);
    process.exit(64);
  }
  const latencies = [];
  let total = 0;
  const worker = async (w) => {
    let i = w;
    while (!stop) {
      const start = process.hrtime.bigint();
      await call(i);
      if (counting) latencies.push(Number(process.hrtime.bigint() - start) / 1000);
      total += 1;
      i += C * 7 + 1;
    }
  };
  const workers = Array.from({ length: C }, (_, w) => worker(w));
  await new Promise((r) => setTimeout(r, Number(warmupMs)));
  counting = true;
  const started = process.hrtime.bigint();
  await new Promise((r) => setTimeout(r, Number(measureMs)));
  counting = false;
  const secs = Number(process.hrtime.bigint() - started) / 1e9;
  const ops = latencies.length;
  stop = true;
  await Promise.all(workers);
  const pct = (xs, p) => Math.round(xs[Math.min(Math.floor(xs.length * p), xs.length - 1)] || 0);
  latencies.sort((a, b) => a - b);
  handoffs.sort((a, b) => a - b);
  const line = {
    op, c: C, ops, secs: Number(secs.toFixed(3)), per_sec: Math.round(ops / secs),
    p50_us: pct(latencies, 0.5), p99_us: pct(latencies, 0.99), total_ops: total,
  };
  if (op === 'bottleneck') {
    Object.assign(line, { handoffs: handoffs.length, handoff_p50_us: pct(handoffs, 0.5), handoff_p99_us: pct(handoffs, 0.99) });
  }
  console.log(JSON.stringify(line));
  await close();
  process.exit(0);
}

main().catch((e) => { console.error(e); process.exit(1); });
