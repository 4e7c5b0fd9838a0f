//! `cargo xtask compare`: palisade beside its peers on one private `redis-server`, in
//! the same closed loop (c workers, each awaiting its own call; 1 s warm-up, 4 s
//! counted), interleaved, c = 1 and 50, medians of 3. Commands per operation are
//! counted from `MONITOR` (top-level commands only: what a script runs inside is not a
//! round trip). Then the cost as the work grows: `MEMORY USAGE` of a rate key
//! (palisade's and rate-limiter-flexible's) and of a throttle's keys, and GCRA
//! decisions over 1,000 against 1,000,000 live keys. Needs node + npm and python3; it
//! installs the peers by name into `target/compare/`. Not a CI step.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use palisade_redis_server::server::RedisServer;

use crate::Result;

const WARMUP_MS: &str = "1000";
const MEASURE_MS: &str = "4000";
const ROUNDS: usize = 3;
const CONCURRENCY: [usize; 2] = [1, 50];

/// Who runs an operation.
#[derive(Clone, Copy)]
enum Runner {
    /// palisade's closed-loop harness (`benches/bin/closed_loop.rs`).
    Rust,
    /// `xtask/compare/peers.js`.
    Node,
    /// `xtask/compare/limits_peer.py`.
    Python,
}

/// One row: palisade's operation and the peer's, with what they are.
struct Row {
    what: &'static str,
    ours: &'static str,
    peer: (Runner, &'static str, &'static str),
}

const ROWS: &[Row] = &[
    Row {
        what: "GCRA decision, 1,000 keys",
        ours: "gcra",
        peer: (Runner::Node, "rlf", "rate-limiter-flexible (ioredis)"),
    },
    Row {
        what: "rate-limit decision, 1,000 keys",
        ours: "gcra",
        peer: (Runner::Python, "limits", "limits moving window (redis-py)"),
    },
    Row {
        what: "throttle acquire + release, 5 keys",
        ours: "throttle",
        peer: (Runner::Node, "bottleneck", "Bottleneck Group, maxConcurrent 2"),
    },
    Row {
        what: "waiting for a slot (acquire_wait + release), key cap 2 on 5 keys",
        ours: "throttle_wait",
        peer: (
            Runner::Node,
            "bottleneck",
            "Bottleneck Group schedule(), maxConcurrent 2",
        ),
    },
    Row {
        what: "cache get hit",
        ours: "cache_get",
        peer: (Runner::Rust, "fred_get", "raw fred GET"),
    },
    Row {
        what: "cache set",
        ours: "cache_set",
        peer: (Runner::Rust, "fred_set", "raw fred SET"),
    },
    Row {
        what: "job update (1 field), 1,000 records",
        ours: "job_update",
        peer: (Runner::Rust, "fred_hset_pexpire", "raw fred HSET + PEXPIRE pipeline"),
    },
    Row {
        what: "GCRA script vs a trivial script",
        ours: "gcra",
        peer: (Runner::Rust, "fred_evalsha_trivial", "fred EVALSHA `return 1`"),
    },
];

struct Tools {
    dir: PathBuf,
    harness: PathBuf,
}

fn need(cmd: &str) -> Result {
    match Command::new(cmd).arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err(format!(
            "`{cmd}` is needed for the peers and was not found; install it and run again"
        )),
    }
}

fn run_quiet(cmd: &mut Command, what: &str) -> Result {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn install() -> Result<Tools> {
    need("node")?;
    need("npm")?;
    need("python3")?;
    let dir = std::env::current_dir()
        .map_err(|e| e.to_string())?
        .join("target/compare");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    eprintln!("xtask: installing the peers into {}", dir.display());
    run_quiet(
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .args(["rate-limiter-flexible", "bottleneck", "ioredis"]),
        "npm install",
    )?;
    run_quiet(
        Command::new("python3")
            .args(["-m", "pip", "install", "-q", "--upgrade", "--target"])
            .arg(dir.join("py"))
            .args(["limits", "redis"]),
        "pip install",
    )?;
    crate::cargo(
        &["build", "--release", "-p", "palisade-benches", "--bin", "closed-loop"],
        &[],
    )?;
    Ok(Tools {
        harness: PathBuf::from("target/release/closed-loop"),
        dir,
    })
}

impl Tools {
    fn command(&self, runner: Runner, url: &str, op: &str, c: usize, warmup: &str, measure: &str) -> Command {
        let mut cmd = self.runner(runner);
        cmd.args([url, op, &c.to_string(), warmup, measure]);
        cmd
    }

    fn runner(&self, runner: Runner) -> Command {
        match runner {
            Runner::Rust => Command::new(&self.harness),
            Runner::Node => {
                let mut cmd = Command::new("node");
                cmd.arg("xtask/compare/peers.js")
                    .env("NODE_PATH", self.dir.join("node_modules"));
                cmd
            }
            Runner::Python => {
                let mut cmd = Command::new("python3");
                cmd.arg("xtask/compare/limits_peer.py")
                    .env("PYTHONPATH", self.dir.join("py"));
                cmd
            }
        }
    }

    /// One run: its JSON line.
    fn run(&self, runner: Runner, url: &str, op: &str, c: usize, warmup: &str, measure: &str) -> Result<String> {
        self.output(self.command(runner, url, op, c, warmup, measure), op, c)
    }

    /// A run's one JSON line.
    fn output(&self, mut cmd: Command, op: &str, c: usize) -> Result<String> {
        let out = cmd
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("{op}: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !out.status.success() || !text.starts_with('{') {
            return Err(format!("{op} at c={c} failed ({}): {text}", out.status));
        }
        Ok(text)
    }
}

/// Cost as the work grows: what one key costs in Redis memory (palisade's rate and
/// throttle keys, rate-limiter-flexible's key for the same limit), and GCRA decisions
/// at 50 in flight over 1,000 and over 1,000,000 live keys (interleaved, medians; the
/// server flushed before each run).
fn cost(tools: &Tools, server: &RedisServer) -> Result<String> {
    let url = server.url();
    let flush = || {
        run_quiet(
            Command::new("redis-cli").args(["-p", &server.port().to_string(), "flushall"]),
            "redis-cli flushall",
        )
    };
    flush()?;
    let mut ours = tools.runner(Runner::Rust);
    ours.args([url.as_str(), "memory"]);
    let ours = tools.output(ours, "memory", 1)?;
    let mut peer = tools.runner(Runner::Node);
    peer.args([url.as_str(), "rlf_memory"]);
    let peer = tools.output(peer, "rlf_memory", 1)?;
    let bytes = |l: &str, f: &str| field(l, f).unwrap_or(f64::NAN);
    let mut out = format!(
        "\nRedis memory per key (`MEMORY USAGE … SAMPLES 0`, bytes): a rate key of 100 a minute, palisade {:.0}, \
         rate-limiter-flexible {:.0}; a throttle key holding one lease: its lease set {:.0} + its state {:.0} \
         (per namespace, shared by its keys: global leases {:.0}, fencing counter {:.0}, marker {:.0}).\n\n\
         | GCRA decisions, 50 in flight, every key live | 1,000 keys | 1,000,000 keys | ratio |\n|---|---|---|---|\n",
        bytes(&ours, "rate_key"),
        bytes(&peer, "rate_key"),
        bytes(&ours, "key_leases"),
        bytes(&ours, "key_state"),
        bytes(&ours, "global_leases"),
        bytes(&ours, "seq"),
        bytes(&ours, "marker"),
    );
    let (mut small, mut large, mut per_key) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        for n in [1_000, 1_000_000] {
            eprintln!("xtask: round {round}/{ROUNDS}: gcra_live over {n} keys");
            flush()?;
            let mut cmd = tools.command(Runner::Rust, &url, "gcra_live", 50, WARMUP_MS, MEASURE_MS);
            cmd.arg(n.to_string());
            let line = tools.output(cmd, "gcra_live", 50)?;
            let rate = field(&line, "per_sec").unwrap_or(0.0);
            if n == 1_000 {
                small.push(rate);
            } else {
                large.push(rate);
                per_key.push(field(&line, "server_bytes_per_key").unwrap_or(f64::NAN));
            }
        }
    }
    flush()?;
    let (s, l) = (median(small), median(large));
    out.push_str(&format!(
        "| ops/s (median of {ROUNDS}) | {s:.0} | {l:.0} | {:.2}× |\n\nServer memory per live rate key at 1,000,000 keys \
         (`used_memory` before and after): {:.0} bytes.\n",
        if s > 0.0 { l / s } else { f64::NAN },
        median(per_key)
    ));
    Ok(out)
}

/// A number field of a one-line JSON object.
fn field(line: &str, name: &str) -> Option<f64> {
    let key = format!("\"{name}\":");
    let rest = line[line.find(&key)? + key.len()..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Top-level commands per operation of `op`, from `MONITOR`: two runs of different
/// lengths, so that connection setup and prefill cancel out.
fn commands_per_op(tools: &Tools, server: &RedisServer, runner: Runner, op: &str) -> Result<f64> {
    let mut counts = Vec::new();
    for measure in ["300", "1300"] {
        let mut monitor = Command::new("redis-cli")
            .args(["-p", &server.port().to_string(), "monitor"])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("redis-cli monitor: {e}"))?;
        let stdout = monitor.stdout.take().ok_or("redis-cli monitor: no stdout")?;
        let marker = format!("palisade-compare-end-{}-{measure}", std::process::id());
        let (tx, rx) = mpsc::channel();
        let end = marker.clone();
        let reader = std::thread::spawn(move || {
            let mut top_level = 0u64;
            for line in BufReader::new(stdout).lines().map_while(std::io::Result::ok) {
                if line == "OK" {
                    let _ = tx.send(());
                    continue;
                }
                if line.contains(&end) {
                    break;
                }
                if line.contains(" [") && !line.contains(" lua]") {
                    top_level += 1;
                }
            }
            top_level
        });
        rx.recv_timeout(Duration::from_secs(10))
            .map_err(|_| "redis-cli monitor did not start")?;
        let line = tools.run(runner, &server.url(), op, 1, "100", measure);
        let marked = Command::new("redis-cli")
            .args(["-p", &server.port().to_string(), "echo", &marker])
            .output();
        let commands = reader.join().map_err(|_| "the MONITOR reader panicked")?;
        let _ = monitor.kill();
        let _ = monitor.wait();
        marked.map_err(|e| format!("redis-cli echo: {e}"))?;
        let ops = field(&line?, "total_ops").ok_or("no total_ops")?;
        counts.push((commands as f64, ops));
    }
    let [(c1, o1), (c2, o2)] = counts[..] else {
        return Err("two MONITOR runs".into());
    };
    Ok(if o2 > o1 { (c2 - c1) / (o2 - o1) } else { f64::NAN })
}

fn versions(dir: &Path) -> String {
    let npm = |p: &str| {
        std::fs::read_to_string(dir.join("node_modules").join(p).join("package.json"))
            .ok()
            .and_then(|t| {
                let v = &t[t.find("\"version\"")?..];
                Some(v.split('"').nth(3)?.to_owned())
            })
            .unwrap_or_else(|| "?".into())
    };
    let limits = std::fs::read_dir(dir.join("py"))
        .ok()
        .and_then(|d| {
            d.filter_map(std::result::Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| n.starts_with("limits-") && n.ends_with(".dist-info"))
        })
        .map(|n| {
            n.trim_start_matches("limits-")
                .trim_end_matches(".dist-info")
                .to_owned()
        })
        .unwrap_or_else(|| "?".into());
    let redis = Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .nth(2)
                .unwrap_or("?")
                .to_owned()
        })
        .unwrap_or_default();
    format!(
        "rate-limiter-flexible {}, bottleneck {}, ioredis {}, limits {limits}, redis-server {}",
        npm("rate-limiter-flexible"),
        npm("bottleneck"),
        npm("ioredis"),
        redis.trim_start_matches("v=")
    )
}

pub(crate) fn compare() -> Result {
    crate::ensure_redis()?;
    let tools = install()?;
    let server = RedisServer::start().map_err(|e| format!("redis-server: {e}"))?;
    let url = server.url();
    // Interleaved: each round runs every side of every row once, so drift in the
    // machine's speed spreads over all of them.
    let mut samples: Vec<Vec<(f64, f64, f64, f64)>> = vec![Vec::new(); ROWS.len() * CONCURRENCY.len()];
    // Where both sides report handoffs (release to the next waiter's start): p50 and
    // p99, palisade's then the peer's.
    let mut handoffs: Vec<Vec<[f64; 4]>> = vec![Vec::new(); ROWS.len() * CONCURRENCY.len()];
    for round in 1..=ROUNDS {
        for (ci, &c) in CONCURRENCY.iter().enumerate() {
            for (ri, row) in ROWS.iter().enumerate() {
                eprintln!("xtask: round {round}/{ROUNDS}, c={c}: {}", row.what);
                let ours = tools.run(Runner::Rust, &url, row.ours, c, WARMUP_MS, MEASURE_MS)?;
                let (runner, op, _) = row.peer;
                let peer = tools.run(runner, &url, op, c, WARMUP_MS, MEASURE_MS)?;
                let get = |l: &str, f: &str| field(l, f).unwrap_or(0.0);
                samples[ri * CONCURRENCY.len() + ci].push((
                    get(&ours, "per_sec"),
                    get(&peer, "per_sec"),
                    get(&ours, "p99_us"),
                    get(&peer, "p99_us"),
                ));
                if let (Some(o50), Some(p50)) = (field(&ours, "handoff_p50_us"), field(&peer, "handoff_p50_us")) {
                    handoffs[ri * CONCURRENCY.len() + ci].push([
                        o50,
                        get(&ours, "handoff_p99_us"),
                        p50,
                        get(&peer, "handoff_p99_us"),
                    ]);
                }
            }
        }
    }
    let mut per_op = std::collections::HashMap::new();
    for row in ROWS {
        let (runner, op, _) = row.peer;
        for (r, o) in [(Runner::Rust, row.ours), (runner, op)] {
            if !per_op.contains_key(o) {
                per_op.insert(o, commands_per_op(&tools, &server, r, o)?);
            }
        }
    }
    let mut out = format!(
        "Closed loop on one private redis-server, {ROUNDS} interleaved rounds (medians), {WARMUP_MS} ms warm-up, {MEASURE_MS} ms counted; {}.\n\n\
         | operation | in flight | palisade ops/s | peer | peer ops/s | ratio | p99 palisade / peer (µs) | commands per op palisade / peer |\n\
         |---|---|---|---|---|---|---|---|\n",
        versions(&tools.dir)
    );
    for (ri, row) in ROWS.iter().enumerate() {
        for (ci, &c) in CONCURRENCY.iter().enumerate() {
            let s = &samples[ri * CONCURRENCY.len() + ci];
            let col = |f: fn(&(f64, f64, f64, f64)) -> f64| median(s.iter().map(f).collect());
            let (ours, peer) = (col(|s| s.0), col(|s| s.1));
            let (_, op, name) = row.peer;
            out.push_str(&format!(
                "| {} | {c} | {ours:.0} | {name} | {peer:.0} | {:.2}× | {:.0} / {:.0} | {:.2} / {:.2} |\n",
                row.what,
                if peer > 0.0 { ours / peer } else { f64::NAN },
                col(|s| s.2),
                col(|s| s.3),
                per_op[row.ours],
                per_op[op],
            ));
        }
    }
    for (ri, row) in ROWS.iter().enumerate() {
        for (ci, &c) in CONCURRENCY.iter().enumerate() {
            let h = &handoffs[ri * CONCURRENCY.len() + ci];
            if h.is_empty() {
                continue;
            }
            let m = |i: usize| median(h.iter().map(|s| s[i]).collect());
            out.push_str(&format!(
                "\n{}, {c} in flight: from the end of a holder's work to the start of the next waiter's on its key, \
                 palisade p50 {:.0} µs / p99 {:.0} µs, {} p50 {:.0} µs / p99 {:.0} µs (medians of {ROUNDS}).\n",
                row.what,
                m(0),
                m(1),
                row.peer.2,
                m(2),
                m(3),
            ));
        }
    }
    out.push_str(&cost(&tools, &server)?);
    println!("{out}");
    std::fs::write("target/compare.md", &out).map_err(|e| format!("target/compare.md: {e}"))?;
    eprintln!("xtask: written to target/compare.md");
    Ok(())
}
