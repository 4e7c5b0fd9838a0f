//! `cargo xtask`: the one entry point of palisade's CI.
//!
//! ```text
//! cargo xtask ci      fmt, clippy, tests against real Redis (standalone, TLS, Sentinel, Cluster),
//!                     docs, feature hygiene
//! cargo xtask test    the workspace tests only, with Redis and the cluster started [-- cargo test args]
//! cargo xtask redis   start a standalone server and a cluster, print their addresses, wait for Ctrl-C
//! cargo xtask bench   the criterion benches (they start their own Redis), then a table of ratios
//!                     palisade / raw dependency from the same run [-- bench name filter]
//! cargo xtask compare palisade beside its peers (rate-limiter-flexible, Bottleneck, limits,
//!                     raw fred) on one private Redis, closed loop; needs node and python3
//! ```
//!
//! Every Redis it starts runs on loopback ports it picks, in a temporary directory,
//! without persistence, and is killed when the command ends: on success, on a failed
//! step, and on Ctrl-C or SIGTERM.

mod compare;

use std::process::{Command, ExitCode};
use std::time::Instant;

use palisade_redis_server::env as test_env;
use palisade_redis_server::sentinel::SentinelGroup;
use palisade_redis_server::server::{self, RedisCluster, RedisServer};
use palisade_redis_server::tls::{TlsFiles, TlsServer};

pub(crate) type Result<T = ()> = std::result::Result<T, String>;

/// Packages that must not pull a given dependency into their normal build.
const HYGIENE: &[(&str, &str, &[&str])] = &[
    ("crates/cache-core", "palisade-cache-core", &["fred", "moka", "bb8"]),
    ("crates/job-store", "palisade-job-store", &["fred", "moka", "bb8"]),
    ("crates/throttle", "palisade-throttle", &["fred", "moka", "bb8"]),
    ("crates/cache-local", "palisade-cache-local", &["fred", "bb8"]),
    ("crates/cache-redis", "palisade-cache-redis", &["moka"]),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // An interrupted run must leave no redis-server behind.
    if let Err(e) = ctrlc::set_handler(|| {
        server::kill_all();
        eprintln!("xtask: interrupted; every redis-server it started was killed");
        std::process::exit(130);
    }) {
        eprintln!("xtask: cannot install the signal handler: {e}");
        return ExitCode::FAILURE;
    }
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("test") => test_only(args[1..].strip_prefix(&["--".to_owned()]).unwrap_or(&args[1..])),
        Some("redis") => redis_only(),
        Some("bench") => bench(&args[1..]),
        Some("compare") => compare::compare(),
        _ => {
            eprintln!("usage: cargo xtask <ci | test [-- cargo test args] | redis | bench [-- filter] | compare>");
            return ExitCode::from(64);
        }
    };
    server::kill_all();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Steps {
    done: Vec<(String, f64)>,
}

impl Steps {
    fn run(&mut self, name: &str, f: impl FnOnce() -> Result) -> Result {
        eprintln!("\n==> {name}");
        let start = Instant::now();
        let r = f();
        let secs = start.elapsed().as_secs_f64();
        eprintln!("<== {name}: {} in {secs:.1} s", if r.is_ok() { "ok" } else { "FAILED" });
        self.done.push((name.to_owned(), secs));
        r.map_err(|e| format!("{name}: {e}"))
    }

    fn summary(&self) {
        eprintln!("\nxtask ci summary:");
        for (name, secs) in &self.done {
            eprintln!("  {secs:>7.1} s  {name}");
        }
    }
}

fn ci() -> Result {
    let mut steps = Steps { done: Vec::new() };
    let r = ci_steps(&mut steps);
    steps.summary();
    r
}

/// The Redis backends without the `tls` feature.
const REDIS_NO_TLS: &[&str] = &["-p", "palisade-cache-redis"];
/// The umbrella with only the in-process backends (no Redis compiled in).
const UMBRELLA_LOCAL: &[&str] = &["-p", "palisade", "--no-default-features", "--features", "local"];
/// The umbrella with Redis and the local fallback, without `tls`.
const UMBRELLA_REDIS_LOCAL: &[&str] = &["-p", "palisade", "--no-default-features", "--features", "redis,local"];
/// The package and feature selections CI tests besides `--all-features`.
const FEATURE_SUBSETS: &[&[&str]] = &[REDIS_NO_TLS, UMBRELLA_LOCAL, UMBRELLA_REDIS_LOCAL];

/// `cargo <command>` on `subset`, then `extra`.
fn cargo_on(command: &str, subset: &[&str], extra: &[&str], env: &[(&str, String)]) -> Result {
    let mut args = vec![command];
    args.extend_from_slice(subset);
    args.extend_from_slice(extra);
    cargo(&args, env)
}

fn ci_steps(steps: &mut Steps) -> Result {
    steps.run("redis-server present (>= 7)", ensure_redis)?;
    steps.run("cargo fmt --check", || cargo(&["fmt", "--all", "--check"], &[]))?;
    steps.run("cargo clippy -D warnings", || {
        cargo(
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--all-features",
                "--",
                "-D",
                "warnings",
            ],
            &[],
        )
    })?;
    // The subsets of features CI also tests below, linted as they are built: an import
    // used only under another feature is a warning there and nowhere else.
    steps.run("cargo clippy -D warnings on each feature subset tested", || {
        for subset in FEATURE_SUBSETS {
            cargo_on("clippy", subset, &["--all-targets", "--", "-D", "warnings"], &[])?;
        }
        Ok(())
    })?;
    let servers = steps.run_value(
        "start Redis (standalone, TLS, Sentinel: primary + replica + 3 sentinels, 3-master cluster with a replica each)",
        Servers::start,
    )?;
    let env = servers.env();
    steps.run("cargo test (real Redis: standalone, TLS, Sentinel, Cluster)", || {
        cargo(&["test", "--workspace", "--all-features"], &env)
    })?;
    steps.run(
        "without the `tls` feature: a TLS URL is Error::Config and nothing connects",
        || {
            cargo_on("test", REDIS_NO_TLS, &["--test", "no_credentials_before_tls"], &env)?;
            cargo_on("test", UMBRELLA_REDIS_LOCAL, &["--test", "builder"], &env)
        },
    )?;
    steps.run("cargo doc -D warnings", || {
        cargo(
            &["doc", "--workspace", "--no-deps", "--all-features"],
            &[("RUSTDOCFLAGS", "-D warnings".to_owned())],
        )
    })?;
    steps.run("feature hygiene (cargo tree)", hygiene)?;
    steps.run("palisade with only the `local` feature (no Redis compiled in)", || {
        cargo_on("test", UMBRELLA_LOCAL, &[], &[])
    })?;
    steps.run("build every example and the palisade CLI", || {
        cargo(&["build", "-p", "palisade", "--all-features", "--examples"], &[])?;
        cargo(&["build", "-p", "palisade-cli"], &[])
    })?;
    steps.run("run the axum rate-limit example (no Redis: local mode)", || {
        cargo(
            &["run", "-q", "-p", "palisade-tower", "--example", "axum_rate_limit"],
            &[("PALISADE_REDIS_URL", String::new()), ("PALISADE_MODE", String::new())],
        )
    })?;
    steps.run("run the quickstart (no Redis: local mode)", || {
        cargo(
            &["run", "-q", "-p", "palisade", "--example", "quickstart"],
            &[("PALISADE_REDIS_URL", String::new()), ("PALISADE_MODE", String::new())],
        )
    })?;
    steps.run(
        "run the Prometheus example (no Redis: local mode; scrapes itself)",
        || {
            cargo(
                &[
                    "run",
                    "-q",
                    "-p",
                    "palisade",
                    "--features",
                    "metrics",
                    "--example",
                    "prometheus",
                ],
                &[("PALISADE_REDIS_URL", String::new()), ("PALISADE_MODE", String::new())],
            )
        },
    )?;
    let pids = servers.pids();
    drop(servers);
    for topology in ["standalone", "sentinel", "cluster"] {
        steps.run(
            &format!(
                "palisade load --topology {topology}: 2 processes x 8 tasks, strict and degraded, 15 s each \
                 (every invariant must be 0)"
            ),
            || {
                cargo(
                    &[
                        "run",
                        "-q",
                        "-p",
                        "palisade-cli",
                        "--",
                        "load",
                        "--topology",
                        topology,
                        "--duration",
                        "15s",
                        "--processes",
                        "2",
                        "--tasks",
                        "8",
                        "--out",
                        &format!("target/load-ci-{topology}"),
                    ],
                    &[("PALISADE_REDIS_URL", String::new()), ("PALISADE_MODE", String::new())],
                )
            },
        )?;
    }
    steps.run("no redis-server left behind", || no_leftovers(&pids))?;
    Ok(())
}

impl Steps {
    fn run_value<T>(&mut self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let mut out = None;
        self.run(name, || {
            out = Some(f()?);
            Ok(())
        })?;
        out.ok_or_else(|| format!("{name}: produced nothing"))
    }
}

fn test_only(extra: &[String]) -> Result {
    ensure_redis()?;
    let servers = Servers::start()?;
    let mut args = vec!["test", "--workspace", "--all-features"];
    args.extend(extra.iter().map(String::as_str));
    cargo(&args, &servers.env())
}

fn redis_only() -> Result {
    ensure_redis()?;
    let servers = Servers::start()?;
    for (k, v) in servers.env() {
        println!("export {k}={v}");
    }
    eprintln!("xtask: Redis is running; Ctrl-C stops it");
    loop {
        std::thread::park();
    }
}

/// The servers handed to the tests: standalone, TLS, Sentinel and Cluster.
struct Servers {
    standalone: RedisServer,
    tls_files: TlsFiles,
    tls: RedisServer,
    sentinel: SentinelGroup,
    cluster: RedisCluster,
}

impl Servers {
    fn start() -> Result<Servers> {
        let standalone = RedisServer::start().map_err(|e| format!("standalone redis-server: {e}"))?;
        let tls_files = TlsFiles::generate().map_err(|e| format!("test certificates: {e}"))?;
        let tls =
            RedisServer::start_tls(&tls_files, TlsServer::good(), &[]).map_err(|e| format!("TLS redis-server: {e}"))?;
        let sentinel = SentinelGroup::start_default().map_err(|e| format!("Sentinel topology: {e}"))?;
        // A replica per master: the router's suites and a failover must find one.
        let cluster = RedisCluster::start_with(3, 1, std::time::Duration::from_millis(2000))
            .map_err(|e| format!("redis cluster: {e}"))?;
        eprintln!(
            "xtask: standalone {} ; TLS {} ; Sentinel {} ; cluster {}",
            standalone.url(),
            tls.tls_url().unwrap_or_default(),
            sentinel.url(),
            cluster.seeds()
        );
        Ok(Servers {
            standalone,
            tls_files,
            tls,
            sentinel,
            cluster,
        })
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            (test_env::REDIS_URL, self.standalone.url()),
            (test_env::TLS_URL, self.tls.tls_url().unwrap_or_default()),
            (test_env::TLS_CA, self.tls_files.ca().display().to_string()),
            (test_env::SENTINEL_URL, self.sentinel.url()),
            (test_env::CLUSTER_NODES, self.cluster.seeds()),
            (test_env::REQUIRE, "1".to_owned()),
        ]
    }

    fn pids(&self) -> Vec<u32> {
        [&self.standalone, &self.tls]
            .into_iter()
            .chain(self.cluster.nodes())
            .filter_map(RedisServer::pid)
            .chain(self.sentinel.pids())
            .collect()
    }
}

fn no_leftovers(pids: &[u32]) -> Result {
    let alive: Vec<_> = pids
        .iter()
        .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
        .collect();
    if alive.is_empty() {
        Ok(())
    } else {
        Err(format!("redis-server processes still alive: {alive:?}"))
    }
}

pub(crate) fn cargo(args: &[&str], env: &[(&str, String)]) -> Result {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.args(args);
    for (k, v) in env {
        // An empty value means "not set": the command must not see the caller's value.
        if v.is_empty() {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
    run(&mut cmd)
}

fn run(cmd: &mut Command) -> Result {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} exited with {status}"))
    }
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn ensure_redis() -> Result {
    if !RedisServer::binary_available() {
        let root = output(Command::new("id").arg("-u")).is_ok_and(|s| s.trim() == "0");
        let apt = Command::new("apt-get").arg("--version").output().is_ok();
        if !(root && apt) {
            return Err(format!(
                "no `redis-server` (Redis >= 7) on PATH and this machine cannot install it \
                 (needs root and apt-get). Install the Debian/Ubuntu package `redis-server` \
                 (or Redis >= 7 from source) or point {} at the binary.",
                server::BINARY_ENV
            ));
        }
        eprintln!("xtask: redis-server is missing; installing the Debian package");
        run(Command::new("apt-get").arg("update").arg("-q"))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends", "redis-server"])
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
        // The package may start a system service on 6379; palisade's runs use their own
        // servers, and must leave no redis-server behind.
        let _ = Command::new("service").args(["redis-server", "stop"]).output();
    }
    let (major, minor, patch) = RedisServer::binary_version().map_err(|e| format!("redis-server --version: {e}"))?;
    eprintln!("xtask: redis-server {major}.{minor}.{patch}");
    if major < 7 {
        return Err(format!(
            "redis-server {major}.{minor}.{patch} is too old: palisade needs Redis >= 7"
        ));
    }
    Ok(())
}

fn hygiene() -> Result {
    for (dir, package, banned) in HYGIENE {
        if !std::path::Path::new(dir).join("Cargo.toml").exists() {
            continue;
        }
        let tree = output(
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())).args([
                "tree",
                "-e",
                "normal",
                "--all-features",
                "--prefix",
                "none",
                "--format",
                "{p}",
                "-p",
                package,
            ]),
        )?;
        let names: Vec<&str> = tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
        let found: Vec<&&str> = banned.iter().filter(|b| names.contains(b)).collect();
        if !found.is_empty() {
            return Err(format!("{package} pulls {found:?} into its normal build"));
        }
        eprintln!("xtask: {package}: no {}", banned.join(", no "));
    }
    Ok(())
}

/// (group, palisade function, raw function) pairs compared by `cargo xtask bench`.
const BENCH_PAIRS: &[(&str, &str, &str)] = &[
    ("cache_get_hit", "palisade_local", "moka"),
    ("cache_get_hit", "palisade_redis", "fred"),
    ("cache_get_hit", "palisade_degraded_local", "palisade_local"),
    ("cache_get_miss", "palisade_local", "moka"),
    ("cache_get_miss", "palisade_redis", "fred"),
    ("cache_set", "palisade_local", "moka"),
    ("cache_set", "palisade_redis", "fred"),
    ("jobs_update_1", "palisade_redis", "fred_hset_pexpire"),
    ("jobs_update_5", "palisade_redis", "fred_hset_pexpire"),
    ("jobs_create", "palisade_local", "palisade_redis"),
    ("jobs_update_1", "palisade_local", "palisade_redis"),
    ("jobs_update_5", "palisade_local", "palisade_redis"),
    ("jobs_get", "palisade_local", "palisade_redis"),
    ("jobs_transition", "palisade_local", "palisade_redis"),
    ("throttle_acquire_release", "palisade_redis", "fred_evalsha_trivial"),
    ("throttle_acquire_release", "palisade_local", "palisade_redis"),
    ("gcra", "palisade_redis", "fred_evalsha_trivial"),
    ("gcra", "palisade_local", "governor"),
    ("ratelimit_layer", "palisade_layer", "palisade_limiter"),
    ("op_span_off", "palisade_bymode", "palisade_local"),
];

/// The arguments of `cargo bench` for `cargo xtask bench [-- FILTER…]`: the `--` of the
/// usage line is xtask's, and criterion gets exactly one.
fn bench_args(extra: &[String]) -> Vec<String> {
    let extra = extra.strip_prefix(&["--".to_owned()]).unwrap_or(extra);
    let mut args: Vec<String> = ["bench", "-p", "palisade-benches"].map(String::from).to_vec();
    if !extra.is_empty() {
        args.push("--".into());
        args.extend(extra.iter().cloned());
    }
    args
}

fn bench(extra: &[String]) -> Result {
    ensure_redis()?;
    let args = bench_args(extra);
    cargo(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[])?;
    let table = ratio_table()?;
    println!("{table}");
    std::fs::write("target/bench-ratios.md", &table).map_err(|e| format!("target/bench-ratios.md: {e}"))?;
    eprintln!("xtask: written to target/bench-ratios.md");
    Ok(())
}

/// The mean time of one criterion measurement, in nanoseconds per iteration.
fn mean_ns(group: &str, function: &str, n: usize) -> Option<f64> {
    let path = format!("target/criterion/{group}/{function}/{n}/new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let mean = &text[text.find("\"mean\"")?..];
    let pe = &mean[mean.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
    let end = pe.find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+')))?;
    pe[..end].parse().ok()
}

fn ratio_table() -> Result<String> {
    let mut out = String::from(
        "| bench | in flight | palisade | raw | palisade ops/s | raw ops/s | throughput ratio |\n|---|---|---|---|---|---|---|\n",
    );
    let mut rows = 0;
    for (group, ours, raw) in BENCH_PAIRS {
        for n in [1usize, 50] {
            let (Some(a), Some(b)) = (mean_ns(group, ours, n), mean_ns(group, raw, n)) else {
                continue;
            };
            let (a, b) = (a / n as f64, b / n as f64);
            out.push_str(&format!(
                "| {group} | {n} | {ours} {a:.0} ns/op | {raw} {b:.0} ns/op | {:.0} | {:.0} | {:.2}x |\n",
                1e9 / a,
                1e9 / b,
                b / a
            ));
            rows += 1;
        }
    }
    if rows == 0 {
        return Err("no criterion estimates found under target/criterion".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::bench_args;

    #[test]
    fn criterion_gets_exactly_one_separator() {
        let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert_eq!(bench_args(&[]), s(&["bench", "-p", "palisade-benches"]));
        for extra in [s(&["--", "gcra"]), s(&["gcra"])] {
            assert_eq!(
                bench_args(&extra),
                s(&["bench", "-p", "palisade-benches", "--", "gcra"])
            );
        }
    }
}
