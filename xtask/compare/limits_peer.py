"""The Python peer of `cargo xtask compare`: the `limits` library's moving-window
limiter on Redis, in the same closed loop (C threads, each awaiting its own call).

    python3 limits_peer.py URL OP C WARMUP_MS MEASURE_MS      OP: limits

Prints one JSON line like the Rust harness.
"""
import json
import sys
import threading
import time

from limits import parse, storage, strategies

url, op, c, warmup_ms, measure_ms = sys.argv[1:6]
C = int(c)
if op != "limits":
    print(f"unknown op {op}", file=sys.stderr)
    sys.exit(64)
store = storage.storage_from_string(url)
limiter = strategies.MovingWindowRateLimiter(store)
item = parse("1000000/second")

state = {"counting": False, "stop": False}
latencies = [[] for _ in range(C)]
totals = [0] * C


def worker(w):
    i = w
    while not state["stop"]:
        start = time.perf_counter()
        limiter.hit(item, "cmp-limits", f"key{i % 1000}")
        if state["counting"]:
            latencies[w].append((time.perf_counter() - start) * 1e6)
        totals[w] += 1
        i += C * 7 + 1


threads = [threading.Thread(target=worker, args=(w,)) for w in range(C)]
for t in threads:
    t.start()
time.sleep(int(warmup_ms) / 1000)
state["counting"] = True
started = time.perf_counter()
time.sleep(int(measure_ms) / 1000)
state["counting"] = False
secs = time.perf_counter() - started
state["stop"] = True
for t in threads:
    t.join()
all_l = sorted(x for l in latencies for x in l)
ops = len(all_l)


def pct(p):
    return round(all_l[min(int(ops * p), ops - 1)]) if ops else 0


print(json.dumps({"op": op, "c": C, "ops": ops, "secs": round(secs, 3), "per_sec": round(ops / secs),
                  "p50_us": pct(0.5), "p99_us": pct(0.99), "total_ops": sum(totals)}))
