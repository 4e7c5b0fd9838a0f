//! `palisade load`: the outage benchmark.
//!
//! For each mode it starts its own `redis-server`, runs P worker processes × T tasks of
//! mixed work (cache for two tenants, job records with two writer roles, throttle
//! leases, GCRA), and on a schedule kills Redis (SIGKILL), restarts it, pauses it
//! (SIGSTOP) and resumes it (SIGCONT):
//!
//! ```text
//! 0%        25%        45%          55%         65%       80%        100%
//! | healthy | down     | recovering | recovered | paused  | resumed  |
//!           SIGKILL    restart                  SIGSTOP   SIGCONT
//! ```
//!
//! It reports per phase throughput, p50 / p99 / max latency and errors by kind; the time
//! to detect each outage and to recover; and invariant counters that must all be 0:
//! throttle cap or spacing violations (from the Redis server's lease times), lost
//! acknowledged job updates, resurrected records, cross-tenant reads, non-distributed
//! answers in strict mode, outages not matched by exactly one down and one up event per
//! component, and calls that outlived their deadline (+ 250 ms of scheduling slack).
//! It writes `report.json`, `summary.md` and one `latency-<mode>.svg` per mode.
//!
//! With `--topology cluster` it runs against 3 masters with a replica each
//! (`cluster-node-timeout 1000`): master 0 is killed (its replica is promoted), later
//! restarted (it rejoins as a replica), and master 1 is paused and resumed; the report
//! gains per-node spans from each node's own `total_commands_processed` and role.
//!
//! With `--topology sentinel` the same schedule runs against a Sentinel topology (a
//! primary, a replica, three sentinels): the primary is killed (a failover follows),
//! the old primary restarted (it comes back as a replica), the new primary paused (a
//! second failover) and resumed. The workers also write marker keys; after the run
//! every acknowledged marker is looked up on the final primary, giving two more
//! figures: acknowledged writes lost, and of those the ones acknowledged after a fault
//! began — writes that landed on a node that was then demoted, an invariant that must
//! be 0. Writes lost to asynchronous replication just before a fault (before the kill,
//! or in the second before the pause, as for job updates) are reported, not hidden.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use palisade::{
    Component, Decision, Error, EventKind, JobRecord, JobStatus, Mode, Palisade, Patch, Policy, Provenance, Rate,
};
use palisade_redis_server::resp;
use palisade_redis_server::sentinel::SentinelGroup;
use palisade_redis_server::server::{RedisCluster, RedisServer};
use serde_json::{Value, json};

use crate::chart::Call;

const ENV_WORKER: &str = "PALISADE_LOAD_WORKER";
const SLACK: Duration = Duration::from_millis(250);
const GLOBAL_CAP: u32 = 6;
const KEY_CAP: u32 = 2;
const INTERVAL: Duration = Duration::from_millis(20);
const LEASE: Duration = Duration::from_secs(2);

/// Arguments of `palisade load`.
#[derive(Args, Debug, Clone)]
pub(crate) struct LoadArgs {
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    processes: usize,
    /// Tasks per process (split over cache, jobs, throttle and rate-limit work).
    #[arg(long, default_value_t = 8)]
    tasks: usize,
    /// Length of the run of each mode.
    #[arg(long, default_value = "30s", value_parser = crate::args::parse_duration)]
    duration: Duration,
    /// Modes to run, comma-separated.
    #[arg(long, default_value = "strict,degraded")]
    modes: String,
    /// The command deadline of the workers.
    #[arg(long, default_value = "300ms", value_parser = crate::args::parse_duration)]
    command_timeout: Duration,
    /// Where to write report.json, summary.md and the charts.
    #[arg(long, default_value = "target/load")]
    out: PathBuf,
    /// `standalone` (one server), `sentinel` (primary, replica, three sentinels) or
    /// `cluster` (3 masters with a replica each).
    #[arg(long, default_value = "standalone", value_parser = ["standalone", "sentinel", "cluster"])]
    topology: String,
}

/// What the outage benchmark runs against, and how it breaks it.
enum Target {
    Standalone(RedisServer),
    Sentinel {
        group: SentinelGroup,
        /// The node killed first (restarted later as a replica).
        killed: Option<u16>,
        /// The node paused (the primary after the first failover).
        paused: Option<u16>,
    },
    /// 3 masters + 3 replicas: master 0 is killed (its replica is promoted) and later
    /// restarted (it rejoins as a replica); master 1 is paused and resumed.
    Cluster(RedisCluster),
}

/// How long before a failover fault an acknowledged write may still be lost to
/// asynchronous replication (reported, not counted as palisade's).
const REPLICATION_WINDOW_MS: u64 = 1000;

/// Whether a write acknowledged at `at` (ms) lies in the replication window before one
/// of the failover faults `faults` (the instants a kill or a pause began).
fn in_replication_window(at: u64, faults: &[u64]) -> bool {
    faults
        .iter()
        .any(|f| at <= *f && at.saturating_add(REPLICATION_WINDOW_MS) > *f)
}

/// The cluster's master that is killed, and the one paused.
const CLUSTER_KILLED: usize = 0;
const CLUSTER_PAUSED: usize = 1;

impl Target {
    fn start(topology: &str) -> std::io::Result<Target> {
        Ok(match topology {
            "sentinel" => Target::Sentinel {
                group: SentinelGroup::start_default()?,
                killed: None,
                paused: None,
            },
            "cluster" => Target::Cluster(RedisCluster::start_with(3, 1, Duration::from_millis(1000))?),
            _ => Target::Standalone(RedisServer::start()?),
        })
    }

    /// Every node's `host:port` (one for standalone).
    fn nodes(&self) -> Vec<String> {
        match self {
            Target::Standalone(s) => vec![s.addr()],
            Target::Sentinel { .. } => Vec::new(),
            Target::Cluster(c) => c.nodes().iter().map(RedisServer::addr).collect(),
        }
    }

    fn url(&self) -> String {
        match self {
            Target::Standalone(s) => s.url(),
            Target::Sentinel { group, .. } => group.url(),
            Target::Cluster(c) => format!("redis-cluster://{}", c.seeds()),
        }
    }

    fn primary(group: &SentinelGroup) -> std::io::Result<u16> {
        group
            .primary_port()
            .ok_or_else(|| std::io::Error::other("the sentinels name no primary"))
    }

    /// SIGKILL of the (primary) server.
    fn kill(&mut self) -> std::io::Result<()> {
        match self {
            Target::Standalone(s) => s.kill(),
            Target::Sentinel { group, killed, .. } => {
                let port = Self::primary(group)?;
                if let Some(node) = group.node_mut(port) {
                    node.kill();
                }
                *killed = Some(port);
            }
            Target::Cluster(c) => c.nodes_mut()[CLUSTER_KILLED].kill(),
        }
        Ok(())
    }

    /// Starts the killed server again (Sentinel: it rejoins as a replica).
    fn restart(&mut self) -> std::io::Result<()> {
        match self {
            Target::Standalone(s) => s.start_again(),
            Target::Sentinel { group, killed, .. } => match killed {
                Some(port) => group.rejoin(*port),
                None => Ok(()),
            },
            Target::Cluster(c) => c.nodes_mut()[CLUSTER_KILLED].start_again(),
        }
    }

    /// SIGSTOP of the (current primary) server.
    fn pause(&mut self) -> std::io::Result<()> {
        match self {
            Target::Standalone(s) => s.pause(),
            Target::Sentinel { group, paused, .. } => {
                let port = Self::primary(group)?;
                *paused = Some(port);
                group
                    .node_mut(port)
                    .ok_or_else(|| std::io::Error::other("the primary is not a node of the group"))?
                    .pause()
            }
            Target::Cluster(c) => c.nodes_mut()[CLUSTER_PAUSED].pause(),
        }
    }

    fn resume(&mut self) -> std::io::Result<()> {
        match self {
            Target::Standalone(s) => s.resume(),
            Target::Sentinel { group, paused, .. } => match paused.and_then(|p| group.node_mut(p)) {
                Some(node) => node.resume(),
                None => Ok(()),
            },
            Target::Cluster(c) => c.nodes_mut()[CLUSTER_PAUSED].resume(),
        }
    }

    /// Whether a kill loses the server's data (no persistence, no replica).
    fn kill_loses_data(&self) -> bool {
        matches!(self, Target::Standalone(_))
    }
}

/// Why a load run failed: the machine (a process, a file, the server it starts) or
/// palisade. An I/O failure is not a configuration error.
#[derive(Debug)]
pub(crate) enum LoadError {
    /// Starting, signalling or reading a process, or writing a report file.
    Io(std::io::Error),
    /// A worker failed, or answered what the orchestrator cannot read.
    Worker(String),
    /// The arguments (e.g. a mode load does not run).
    Palisade(Error),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Io(e) => write!(f, "load: {e}"),
            LoadError::Worker(why) => write!(f, "load: {why}"),
            LoadError::Palisade(e) => write!(f, "load: {}", e.chain()),
        }
    }
}

impl From<std::io::Error> for LoadError {
    fn from(e: std::io::Error) -> Self {
        LoadError::Io(e)
    }
}

impl From<Error> for LoadError {
    fn from(e: Error) -> Self {
        LoadError::Palisade(e)
    }
}

impl LoadError {
    /// sysexits: `EX_IOERR` (74) for I/O, `EX_SOFTWARE` (70) for a failed worker, and
    /// the usual code of a palisade error.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            LoadError::Io(_) => 74,
            LoadError::Worker(_) => 70,
            LoadError::Palisade(e) => crate::exit_code(e),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn us(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

// ---- worker --------------------------------------------------------------------------

/// One timed call: start (ms since the epoch), latency (µs), operation, outcome.
struct Sample {
    at_ms: u64,
    latency_us: u64,
    op: &'static str,
    outcome: String,
}

#[derive(Default)]
struct Tally {
    samples: Vec<Sample>,
    leases: Vec<(Provenance, u64, Option<u64>, String)>,
    cross_tenant: u64,
    /// When each acknowledged update that a later read did not find was acknowledged.
    lost_updates: Vec<u64>,
    resurrected: u64,
    local_in_strict: u64,
    over_deadline: u64,
    job_rounds_checked: u64,
    /// Marker writes that must be in Redis after the run: (contract, key, when the
    /// write started in ms) — cache entries acknowledged by Redis, and job records
    /// acknowledged by Redis or by the fallback (which replays them).
    markers: Vec<(&'static str, String, u64)>,
}

struct Worker {
    mode: Mode,
    deadline: Duration,
    tally: Mutex<Tally>,
}

impl Worker {
    async fn timed<T>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<Output = Result<palisade::Tagged<T>, Error>>,
    ) -> Option<palisade::Tagged<T>> {
        let at_ms = now_ms();
        let start = Instant::now();
        let r = fut.await;
        let latency = start.elapsed();
        let mut t = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        if latency > self.deadline + SLACK {
            t.over_deadline += 1;
        }
        let outcome = match &r {
            Ok(v) => {
                if self.mode == Mode::StrictDistributed && v.provenance != Provenance::Distributed {
                    t.local_in_strict += 1;
                }
                v.provenance.as_str().to_owned()
            }
            Err(e) => e.kind().as_str().to_owned(),
        };
        t.samples.push(Sample {
            at_ms,
            latency_us: latency.as_micros() as u64,
            op,
            outcome,
        });
        r.ok()
    }
}

fn build(mode: Mode, url: &str, tenant: &str, args: &WorkerArgs) -> palisade::Builder {
    Palisade::builder()
        .mode(mode)
        .redis_url(url)
        .tenant(tenant)
        .key_prefix(&args.prefix)
        .command_timeout(args.deadline)
        .connect_timeout(Duration::from_secs(2))
        .probe_period(Duration::from_millis(250))
        .degraded_share(1.0 / args.processes as f64)
}

/// An event a worker saw: when (ms), `down` or `up`, and `<instance>:<component>`.
type SeenEvent = (u64, &'static str, String);

struct WorkerArgs {
    index: usize,
    processes: usize,
    tasks: usize,
    until_ms: u64,
    deadline: Duration,
    prefix: String,
}

/// The namespace the cache role writes into (for the marker check).
const MARKER_TENANT: &str = "tenant-a";

async fn cache_role(w: &Worker, a: &Palisade, b: &Palisade, until: u64, task: usize, worker: usize) {
    let (ca, cb) = (a.cache(), b.cache());
    let mut n = 0u64;
    while now_ms() < until {
        {
            // A unique key per write: after the run it must be on the final primary.
            let key = format!("m{worker}-{task}-{n}");
            let at = now_ms();
            if let Some(t) = w.timed("cache.set", ca.set(&key, b"m", Duration::from_secs(600))).await {
                // Cache entries written while degraded are dropped at recovery, by
                // design: only Redis's acknowledgements must survive.
                if t.provenance == Provenance::Distributed {
                    w.tally
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .markers
                        .push(("cache", key, at));
                }
            }
        }
        // A request handler waits on I/O between requests; without this a loop over an
        // instant local fallback never yields and starves the runtime (probes included).
        tokio::task::yield_now().await;
        n += 1;
        let key = format!("k{}", n % 50);
        let value = format!("A:{task}:{n}");
        w.timed("cache.set", ca.set(&key, value.as_bytes(), Duration::from_secs(30)))
            .await;
        if let Some(t) = w.timed("cache.get", cb.get(&key)).await {
            if t.value.is_some_and(|v| v.starts_with(b"A:")) {
                w.tally.lock().unwrap_or_else(|p| p.into_inner()).cross_tenant += 1;
            }
        }
        w.timed("cache.get", ca.get(&key)).await;
    }
}

async fn jobs_role(w: &Worker, p: &Palisade, until: u64, worker: usize, task: usize) {
    let jobs = p.jobs();
    let mut round = 0;
    while now_ms() < until {
        // A request handler waits on I/O between requests; without this a loop over an
        // instant local fallback never yields and starves the runtime (probes included).
        tokio::task::yield_now().await;
        round += 1;
        // A marker record, never deleted: acknowledged by Redis or by the fallback
        // (which replays it at recovery), it must be in Redis after the run.
        let marker = format!("jm{worker}-{task}-{round}");
        let at = now_ms();
        if w.timed(
            "jobs.create",
            jobs.create(&marker, &JobRecord::queued(), Duration::from_secs(600)),
        )
        .await
        .is_some()
        {
            w.tally
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .markers
                .push(("jobs", marker, at));
        }
        let id = format!("{worker}-{task}-{round}");
        let Some(created) = w
            .timed(
                "jobs.create",
                jobs.create(&id, &JobRecord::queued(), Duration::from_secs(120)),
            )
            .await
        else {
            continue;
        };
        let origin = created.provenance;
        // Two writer roles, disjoint fields, concurrently.
        let writer = |role: &'static str| {
            let (jobs, id) = (jobs.clone(), id.clone());
            async move {
                let mut acked = Vec::new();
                for i in 0..10 {
                    let field = format!("{role}{i}");
                    if let Some(t) = w
                        .timed(
                            "jobs.update",
                            jobs.update(&id, &Patch::new().field(field.clone(), i.to_string())),
                        )
                        .await
                    {
                        if t.value {
                            acked.push((field, t.provenance, now_ms()));
                        }
                    }
                }
                acked
            }
        };
        let (acked_a, acked_b) = tokio::join!(writer("api"), writer("worker"));
        w.timed(
            "jobs.transition",
            jobs.transition(&id, JobStatus::Queued, JobStatus::Running, &Patch::new()),
        )
        .await;
        w.timed(
            "jobs.transition",
            jobs.transition(&id, JobStatus::Running, JobStatus::Completed, &Patch::new()),
        )
        .await;
        if let Some(read) = w.timed("jobs.get", jobs.get(&id)).await {
            // Lost updates: only where the record and every write lived in one place
            // (a restart without persistence loses whole records, by design).
            if let Some(r) = &read.value {
                let acked: Vec<_> = acked_a
                    .iter()
                    .chain(&acked_b)
                    .filter(|(_, p, _)| *p == read.provenance && *p == origin)
                    .collect();
                let mut t = w.tally.lock().unwrap_or_else(|p| p.into_inner());
                for (_, _, at) in acked.iter().filter(|(f, _, _)| !r.fields.contains_key(f)) {
                    t.lost_updates.push(*at);
                }
                t.job_rounds_checked += 1;
            }
        }
        if let Some(d) = w.timed("jobs.delete", jobs.delete(&id)).await {
            let after = w
                .timed("jobs.update", jobs.update(&id, &Patch::new().field("late", "x")))
                .await;
            let back = w.timed("jobs.get", jobs.get(&id)).await;
            if after.as_ref().is_some_and(|a| a.value && a.provenance == d.provenance)
                || back
                    .as_ref()
                    .is_some_and(|b| b.value.is_some() && b.provenance == d.provenance)
            {
                w.tally.lock().unwrap_or_else(|p| p.into_inner()).resurrected += 1;
            }
        }
    }
}

async fn throttle_role(w: &Worker, p: &Palisade, until: u64, task: usize) {
    let t = p.throttle();
    let policy = match Policy::builder()
        .global_cap(GLOBAL_CAP)
        .key_cap(KEY_CAP)
        .min_interval(INTERVAL)
        .lease_ttl(LEASE)
        .build()
    {
        Ok(p) => p,
        Err(_) => return,
    };
    let mut n = task;
    while now_ms() < until {
        // A request handler waits on I/O between requests; without this a loop over an
        // instant local fallback never yields and starves the runtime (probes included).
        tokio::task::yield_now().await;
        n = n.wrapping_mul(31).wrapping_add(7);
        let key = format!("mx{}", n % 5);
        let Some(d) = w.timed("throttle.acquire", t.acquire(&key, &policy)).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        match d.value {
            Decision::Acquired(permit) => {
                tokio::time::sleep(Duration::from_millis(5 + (n % 30) as u64)).await;
                let acquired_at = permit.acquired_at();
                let end = w
                    .timed("throttle.release", async {
                        permit.release().await.map(|r| palisade::Tagged::new(r, d.provenance))
                    })
                    .await
                    .and_then(|t| t.value);
                let mut tally = w.tally.lock().unwrap_or_else(|p| p.into_inner());
                // `None`: the release failed or the lease had expired; the analysis ends
                // it at its expiry, or when its server died.
                tally.leases.push((d.provenance, us(acquired_at), end.map(us), key));
            }
            Decision::Denied { retry_after, .. } => tokio::time::sleep(retry_after.min(INTERVAL)).await,
        }
    }
}

async fn limit_role(w: &Worker, p: &Palisade, until: u64, task: usize) {
    let r = p.rate_limiter();
    let Ok(rate) = Rate::per_second(200).burst(20).build() else {
        return;
    };
    let mut n = task;
    while now_ms() < until {
        // A request handler waits on I/O between requests; without this a loop over an
        // instant local fallback never yields and starves the runtime (probes included).
        tokio::task::yield_now().await;
        n += 1;
        w.timed("limit", r.limit(&format!("ip{}", n % 10), &rate)).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Runs one worker process; writes its tally as JSON on stdout.
/// One worker process: runs its share of the load and answers its tally (one JSON
/// line on stdout, which the orchestrator reads).
pub(crate) async fn worker_main(mode: Mode, url: &str) -> Result<Value, Error> {
    let var = |k: &str| std::env::var(format!("PALISADE_LOAD_{k}")).unwrap_or_default();
    let args = WorkerArgs {
        index: var("WORKER").parse().unwrap_or(0),
        processes: var("PROCESSES").parse().unwrap_or(1).max(1),
        tasks: var("TASKS").parse().unwrap_or(4).max(4),
        until_ms: var("UNTIL_MS").parse().unwrap_or(0),
        deadline: Duration::from_millis(var("DEADLINE_MS").parse().unwrap_or(300)),
        prefix: var("PREFIX"),
    };
    let a = build(mode, url, "tenant-a", &args).build().await?;
    let b = build(mode, url, "tenant-b", &args).build().await?;
    let events: Arc<Mutex<Vec<SeenEvent>>> = Arc::default();
    let mut subs = Vec::new();
    for (instance, p) in [&a, &b].into_iter().enumerate() {
        let mut rx = p.events().subscribe();
        let events = Arc::clone(&events);
        subs.push(tokio::spawn(async move {
            while let Ok(e) = rx.recv().await {
                let kind = match e.kind {
                    EventKind::Degraded | EventKind::UnavailableAtRuntime { .. } => "down",
                    EventKind::Recovered { .. } => "up",
                    _ => continue,
                };
                let component = match e.component {
                    Component::Cache => "cache",
                    Component::JobStore => "jobs",
                    _ => "throttle",
                };
                let at = e.at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
                events
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((at, kind, format!("{instance}:{component}")));
            }
        }));
    }
    let w = Worker {
        mode,
        deadline: args.deadline,
        tally: Mutex::default(),
    };
    let until = args.until_ms;
    let mut work = Vec::new();
    for task in 0..args.tasks {
        let (w, a, b) = (&w, &a, &b);
        work.push(async move {
            match task % 4 {
                0 => cache_role(w, a, b, until, task, args.index).await,
                1 => jobs_role(w, a, until, args.index, task).await,
                2 => throttle_role(w, a, until, task).await,
                _ => limit_role(w, a, until, task).await,
            }
        });
    }
    futures_util::future::join_all(work).await;
    // Let the last probes report recovery before the tally is written.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for s in subs {
        s.abort();
    }
    let t = w.tally.into_inner().unwrap_or_else(|p| p.into_inner());
    let events = events.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let out = json!({
        "samples": t.samples.iter().map(|s| json!([s.at_ms, s.latency_us, s.op, s.outcome])).collect::<Vec<_>>(),
        "leases": t.leases.iter().map(|(p, a, e, k)| json!([p.as_str(), a, e, k])).collect::<Vec<_>>(),
        "events": events.iter().map(|(at, k, c)| json!([at, k, c])).collect::<Vec<_>>(),
        "cross_tenant": t.cross_tenant,
        "lost_update_acks": t.lost_updates,
        "resurrected": t.resurrected,
        "local_in_strict": t.local_in_strict,
        "over_deadline": t.over_deadline,
        "job_rounds_checked": t.job_rounds_checked,
        "markers": t.markers.iter().map(|(c, k, at)| json!([c, k, at])).collect::<Vec<_>>(),
    });
    Ok(out)
}

// ---- orchestrator --------------------------------------------------------------------

const PHASES: [(&str, f64, f64); 6] = [
    ("healthy", 0.0, 0.25),
    ("down", 0.25, 0.45),
    ("recovering", 0.45, 0.55),
    ("recovered", 0.55, 0.65),
    ("paused", 0.65, 0.80),
    ("resumed", 0.80, 1.0),
];

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Caps and spacing over leases (acquired µs, end µs) per key: returns violations.
fn lease_violations(leases: &[(u64, u64, String)], global_cap: i64, key_cap: i64, interval_us: u64) -> u64 {
    let mut events: Vec<(u64, i64, &str)> = Vec::new();
    for (a, e, k) in leases {
        events.push((*a, 1, k));
        events.push((*e, -1, k));
    }
    events.sort_by_key(|(t, d, _)| (*t, *d));
    let (mut g, mut violations) = (0i64, 0u64);
    let mut per: HashMap<&str, i64> = HashMap::new();
    for (_, d, k) in events {
        g += d;
        let n = per.entry(k).or_default();
        *n += d;
        if d > 0 && (g > global_cap || *n > key_cap) {
            violations += 1;
        }
    }
    let mut by_key: HashMap<&str, Vec<u64>> = HashMap::new();
    for (a, _, k) in leases {
        by_key.entry(k).or_default().push(*a);
    }
    for starts in by_key.values_mut() {
        starts.sort_unstable();
        violations += starts.windows(2).filter(|w| w[1] - w[0] < interval_us).count() as u64;
    }
    violations
}

struct ModeRun {
    mode: Mode,
    start_ms: u64,
    duration_ms: u64,
    faults: BTreeMap<&'static str, u64>,
    workers: Vec<Value>,
    /// Whether a kill lost the server's data (standalone without persistence).
    kill_loses_data: bool,
    /// (acknowledged markers lost to asynchronous replication, lost otherwise), looked up
    /// on the final primary.
    lost_markers: (u64, u64),
    /// Cluster: at each phase boundary (ms since the epoch), every node's
    /// `total_commands_processed` and role (`None`: it did not answer — killed or
    /// paused). Per-master phases come from Redis's own counters.
    node_counts: Vec<(u64, Vec<NodeCount>)>,
}

/// One node's `total_commands_processed` and `ROLE`, or `None` if it did not answer.
type NodeCount = Option<(u64, String)>;

/// Every node's `total_commands_processed` and `ROLE`, each within 200 ms.
fn node_counts(nodes: &[String]) -> Vec<NodeCount> {
    nodes
        .iter()
        .map(|addr| {
            let mut conn = resp::Conn::connect(addr, Duration::from_millis(200)).ok()?;
            let info = conn.command(&["INFO", "stats"]).ok()?.text()?;
            let n = info
                .lines()
                .find_map(|l| l.strip_prefix("total_commands_processed:"))?
                .trim()
                .parse()
                .ok()?;
            let role = match conn.command(&["ROLE"]).ok()? {
                resp::Reply::Array(items) => items.first().and_then(resp::Reply::text)?,
                _ => return None,
            };
            Some((n, role))
        })
        .collect()
}

/// Looks every acknowledged marker up on `addr` (the final primary): how many are
/// missing among those that asynchronous replication may lose (acknowledged before the
/// first fault, or in the replication window before a later failover: the pause), and
/// among the others. A standalone server restarted without persistence loses what it
/// held before the kill, by design: those markers are not looked up
/// (`skip_before_kill`).
fn check_markers(
    addr: &str,
    prefix: &str,
    workers: &[Value],
    faults: &BTreeMap<&str, u64>,
    skip_before_kill: bool,
) -> (u64, u64) {
    use palisade::contracts::core::{Contract, Namespace};
    let (Ok(cache), Ok(jobs), Ok(mut conn)) = (
        Namespace::new(prefix, MARKER_TENANT, "cache"),
        Namespace::new(prefix, MARKER_TENANT, "jobs"),
        resp::Conn::connect(addr, Duration::from_secs(2)),
    ) else {
        return (u64::MAX, u64::MAX);
    };
    let first_fault = faults
        .get("killed")
        .or_else(|| faults.values().min())
        .copied()
        .unwrap_or(u64::MAX);
    // The second failover: a write the primary acknowledged just before it was paused
    // may not have reached the replica promoted in its place (the same rule as for job
    // updates), which is replication's loss, not a write applied on a demoted node.
    // (A standalone server has no replica: nothing is lost at its pause.)
    let later: Vec<u64> = if skip_before_kill {
        Vec::new()
    } else {
        faults.get("pause").copied().into_iter().collect()
    };
    let (mut before, mut after) = (0, 0);
    for m in workers
        .iter()
        .flat_map(|w| w["markers"].as_array().into_iter().flatten())
    {
        let (contract, key, at) = (
            m[0].as_str().unwrap_or(""),
            m[1].as_str().unwrap_or(""),
            m[2].as_u64().unwrap_or(0),
        );
        if skip_before_kill && at < first_fault {
            continue;
        }
        let encoded = match contract {
            "jobs" => jobs.key(Contract::Jobs, key),
            _ => cache.key(Contract::Cache, key),
        };
        let Ok(encoded) = encoded else { continue };
        if conn.command(&["EXISTS", &encoded]).ok() != Some(resp::Reply::Int(1)) {
            if at >= first_fault && !in_replication_window(at, &later) {
                after += 1;
            } else {
                before += 1;
            }
        }
    }
    (before, after)
}

fn run_mode(args: &LoadArgs, mode: Mode) -> Result<ModeRun, LoadError> {
    let mut server = Target::start(&args.topology)?;
    let exe = std::env::current_exe()?;
    let start_ms = now_ms() + 1500;
    let duration_ms = args.duration.as_millis() as u64;
    let prefix = format!("load{}", std::process::id());
    let mut children = Vec::new();
    for i in 0..args.processes {
        children.push(
            Command::new(&exe)
                .args(["--mode", mode.as_str(), "--redis-url", &server.url(), "load"])
                .env(ENV_WORKER, i.to_string())
                .env("PALISADE_LOAD_PROCESSES", args.processes.to_string())
                .env("PALISADE_LOAD_TASKS", args.tasks.to_string())
                .env("PALISADE_LOAD_UNTIL_MS", (start_ms + duration_ms).to_string())
                .env(
                    "PALISADE_LOAD_DEADLINE_MS",
                    args.command_timeout.as_millis().to_string(),
                )
                .env("PALISADE_LOAD_PREFIX", &prefix)
                .env(
                    "PALISADE_LOAD_MARKERS",
                    if matches!(server, Target::Sentinel { .. }) {
                        "1"
                    } else {
                        "0"
                    },
                )
                .stdout(Stdio::piped())
                .spawn()?,
        );
    }
    let at = |f: f64| start_ms + (duration_ms as f64 * f) as u64;
    let wait_until = |t: u64| {
        let now = now_ms();
        if t > now {
            std::thread::sleep(Duration::from_millis(t - now));
        }
    };
    let mut faults = BTreeMap::new();
    let cluster = matches!(server, Target::Cluster(_));
    let nodes = server.nodes();
    let mut counts = Vec::new();
    let count = |counts: &mut Vec<_>| {
        if cluster {
            counts.push((now_ms(), node_counts(&nodes)));
        }
    };
    wait_until(at(0.0));
    count(&mut counts);
    wait_until(at(0.25));
    count(&mut counts);
    faults.insert("kill", now_ms());
    server.kill()?;
    // A write that started before this instant may have been applied and lost with
    // the server; one that started after it cannot have been.
    faults.insert("killed", now_ms());
    wait_until(at(0.45));
    count(&mut counts);
    server.restart()?;
    faults.insert("restarted", now_ms());
    wait_until(at(0.65));
    count(&mut counts);
    server.pause()?;
    faults.insert("pause", now_ms());
    wait_until(at(0.80));
    count(&mut counts);
    server.resume()?;
    faults.insert("resumed", now_ms());
    wait_until(at(1.0));
    count(&mut counts);
    let mut workers = Vec::new();
    for child in children {
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(LoadError::Worker(format!("a load worker failed: {}", out.status)));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().last().unwrap_or("{}");
        workers.push(serde_json::from_str(line).map_err(|e| LoadError::Worker(format!("a worker's tally: {e}")))?);
    }
    let lost_markers = match &server {
        Target::Sentinel { group, .. } => match group.primary_port() {
            Some(port) => check_markers(&format!("127.0.0.1:{port}"), &prefix, &workers, &faults, false),
            None => (u64::MAX, u64::MAX),
        },
        Target::Standalone(s) => check_markers(&s.addr(), &prefix, &workers, &faults, true),
        // Markers are looked up on one primary; a cluster's live on every master.
        Target::Cluster(_) => (0, 0),
    };
    Ok(ModeRun {
        mode,
        start_ms,
        duration_ms,
        faults,
        workers,
        kill_loses_data: server.kill_loses_data(),
        lost_markers,
        node_counts: counts,
    })
}

fn analyse(run: &ModeRun, args: &LoadArgs) -> Value {
    let mut samples: Vec<Call> = Vec::new();
    let mut distributed: Vec<(u64, u64, String)> = Vec::new();
    let mut local_violations = 0u64;
    let mut uncertain = 0u64;
    let mut counters: BTreeMap<&str, u64> = BTreeMap::new();
    let mut unmatched = 0u64;
    let (mut detect, mut recover): (Vec<u64>, Vec<u64>) = (Vec::new(), Vec::new());
    // For the chart: per fault, the first detection and the last recovery of any
    // process (ms since the epoch).
    let (mut detected_at, mut recovered_at) = (BTreeMap::<u64, u64>::new(), BTreeMap::<u64, u64>::new());
    let kill = run.faults["kill"];
    let restarted = run.faults["restarted"];
    let pause = run.faults["pause"];
    let resumed = run.faults["resumed"];
    let share = 1.0 / args.processes as f64;
    for w in &run.workers {
        for s in w["samples"].as_array().into_iter().flatten() {
            samples.push(Call {
                at_ms: s[0].as_u64().unwrap_or(0),
                latency_us: s[1].as_u64().unwrap_or(0),
                outcome: s[3].as_str().unwrap_or("").to_owned(),
            });
        }
        let mut local = Vec::new();
        for l in w["leases"].as_array().into_iter().flatten() {
            let (prov, a, key) = (
                l[0].as_str().unwrap_or(""),
                l[1].as_u64().unwrap_or(0),
                l[3].as_str().unwrap_or("").to_owned(),
            );
            // A lease whose release failed has no known server-side end: a paused server
            // still runs the release it had buffered when it resumes. Such leases are
            // left out of the overlap check (and counted), never assumed.
            let Some(end) = l[2].as_u64() else {
                uncertain += 1;
                continue;
            };
            // Without persistence a killed server forgets its leases; a Sentinel
            // replica keeps them through the failover.
            let died = if run.kill_loses_data && a < kill * 1000 {
                kill * 1000
            } else {
                u64::MAX
            };
            if prov == "distributed" {
                distributed.push((a, end.min(died), key));
            } else {
                local.push((a, end, key));
            }
        }
        let cap = |c: u32| (f64::from(c) * share).floor() as i64;
        local_violations += lease_violations(
            &local,
            cap(GLOBAL_CAP),
            cap(KEY_CAP),
            (INTERVAL.as_micros() as f64 / share) as u64,
        );
        // A lost update acknowledged in the second before a failover fault (a kill or a
        // pause of a node with a replica) is asynchronous replication's loss, which
        // Redis does not promise against (reported); any other is palisade's
        // (an invariant).
        for at in w["lost_update_acks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
        {
            let replication = !run.kill_loses_data && in_replication_window(at, &[kill, pause]);
            let k = if replication {
                "lost_to_replication"
            } else {
                "lost_updates"
            };
            *counters.entry(k).or_default() += 1;
        }
        counters.entry("lost_updates").or_default();
        counters.entry("lost_to_replication").or_default();
        for k in [
            "cross_tenant",
            "resurrected",
            "local_in_strict",
            "over_deadline",
            "job_rounds_checked",
        ] {
            *counters.entry(k).or_default() += w[k].as_u64().unwrap_or(0);
        }
        // Per process and component: down/up alternate, one pair per outage.
        // Keyed by (tenant instance, component): each has its own supervisor.
        let mut by_component: BTreeMap<&str, Vec<(u64, &str)>> = BTreeMap::new();
        for e in w["events"].as_array().into_iter().flatten() {
            by_component
                .entry(e[2].as_str().unwrap_or(""))
                .or_default()
                .push((e[0].as_u64().unwrap_or(0), e[1].as_str().unwrap_or("")));
        }
        for evs in by_component.values_mut() {
            evs.sort();
            let downs = evs.iter().filter(|(_, k)| *k == "down").count();
            let ups = evs.iter().filter(|(_, k)| *k == "up").count();
            let alternating = evs
                .iter()
                .enumerate()
                .all(|(i, (_, k))| *k == if i % 2 == 0 { "down" } else { "up" });
            if downs != ups || downs > 2 || !alternating {
                unmatched += 1;
            }
            for (at, kind) in evs.iter() {
                if *kind == "up" {
                    // Standalone: from the server's return. Sentinel: from the fault
                    // itself — the failover is the recovery.
                    let back = match (run.kill_loses_data, *at >= resumed.min(pause)) {
                        (true, true) => resumed,
                        (true, false) => restarted,
                        (false, true) => pause,
                        (false, false) => kill,
                    };
                    recover.push(at.saturating_sub(back));
                    let last = recovered_at.entry(back).or_insert(*at);
                    *last = (*last).max(*at);
                }
            }
        }
        // Time to detect: per process and fault, the first down event of any component
        // (each component has its own supervisor and notices with its own next call).
        for fault in [kill, pause] {
            let first = by_component
                .values()
                .flat_map(|evs| evs.iter())
                .filter(|(at, k)| *k == "down" && *at >= fault && *at < fault + run.duration_ms / 4)
                .map(|(at, _)| at - fault)
                .min();
            if let Some(d) = first {
                detect.push(d);
                let earliest = detected_at.entry(fault).or_insert(fault + d);
                *earliest = (*earliest).min(fault + d);
            }
        }
    }
    let throttle_violations = lease_violations(
        &distributed,
        GLOBAL_CAP.into(),
        KEY_CAP.into(),
        INTERVAL.as_micros() as u64,
    ) + local_violations;
    let phases: Vec<Value> = PHASES
        .iter()
        .map(|(name, from, to)| {
            let (a, b) = (run.start_ms + (run.duration_ms as f64 * from) as u64, run.start_ms + (run.duration_ms as f64 * to) as u64);
            let mut lat: Vec<u64> = Vec::new();
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut ok = 0u64;
            for c in samples.iter().filter(|c| c.at_ms >= a && c.at_ms < b) {
                lat.push(c.latency_us);
                if c.is_ok() {
                    ok += 1;
                } else {
                    *errors.entry(c.outcome.clone()).or_default() += 1;
                }
            }
            lat.sort_unstable();
            let secs = (b - a) as f64 / 1000.0;
            json!({"phase": name, "start_ms": a - run.start_ms, "end_ms": b - run.start_ms, "calls": lat.len(),
                "ok_per_s": (ok as f64 / secs).round(), "p50_us": percentile(&lat, 0.5), "p99_us": percentile(&lat, 0.99),
                "max_us": lat.last().copied().unwrap_or(0), "errors": errors})
        })
        .collect();
    let mut invariants = json!({
        "throttle_cap_or_spacing_violations": throttle_violations,
        "lost_job_updates": counters["lost_updates"],
        "resurrected_records": counters["resurrected"],
        "cross_tenant_reads": counters["cross_tenant"],
        "local_answers_in_strict_mode": counters["local_in_strict"],
        "outages_not_matched_by_one_down_and_one_up": unmatched,
        "calls_over_deadline": counters["over_deadline"],
    });
    // Every write acknowledged after the first fault is in Redis at the end: replayed
    // by the job store's recovery, or never lost. On Sentinel a lost one landed on a
    // node that was then demoted.
    let (lost_before, lost_after) = run.lost_markers;
    let name = if run.kill_loses_data {
        "acknowledged_writes_lost_after_a_fault"
    } else {
        "writes_applied_on_a_demoted_node"
    };
    if run.node_counts.is_empty() {
        invariants[name] = json!(lost_after);
    }
    // Cluster: what each node served in each span between faults, from its own
    // `total_commands_processed` (`null`: it did not answer).
    let per_node: Vec<Value> = run
        .node_counts
        .windows(2)
        .map(|w| {
            let ((a, before), (b, after)) = (&w[0], &w[1]);
            let secs = (b.saturating_sub(*a)).max(1) as f64 / 1000.0;
            let nodes: Vec<Value> = before
                .iter()
                .zip(after)
                .map(|(x, y)| match (x, y) {
                    (Some((n1, _)), Some((n2, role))) => {
                        json!({"role": role, "commands_per_s": (n2.saturating_sub(*n1) as f64 / secs).round()})
                    }
                    (_, Some((_, role))) => json!({"role": role, "commands_per_s": null}),
                    _ => json!(null),
                })
                .collect();
            json!({"start_ms": a.saturating_sub(run.start_ms), "end_ms": b.saturating_sub(run.start_ms), "nodes": nodes})
        })
        .collect();
    let markers: usize = run
        .workers
        .iter()
        .map(|w| w["markers"].as_array().map_or(0, Vec::len))
        .sum();
    json!({
        "mode": run.mode.as_str(),
        "markers_checked": markers,
        "acknowledged_updates_lost_to_replication_at_a_failover": counters["lost_to_replication"],
        "acknowledged_writes_lost_before_the_first_fault": lost_before,
        "duration_ms": run.duration_ms,
        "faults_ms": run.faults.iter().map(|(k, v)| (k.to_string(), json!(v - run.start_ms))).collect::<serde_json::Map<_, _>>(),
        "phases": phases,
        "node_phases": per_node,
        "invariants": invariants,
        "leases_checked": distributed.len(),
        "leases_with_unknown_end": uncertain,
        "job_rounds_checked": counters["job_rounds_checked"],
        "detect_ms_max": detect.iter().max(),
        "recover_ms_max": recover.iter().max(),
        "chart": chart(run, &samples, &detected_at, &recovered_at),
    })
}

/// The outage chart (see [`crate::chart`]), with the first detection and the last
/// recovery of each fault marked.
fn chart(
    run: &ModeRun,
    samples: &[Call],
    detected_at: &BTreeMap<u64, u64>,
    recovered_at: &BTreeMap<u64, u64>,
) -> String {
    let marks: Vec<(u64, &'static str)> = detected_at
        .values()
        .map(|t| (*t, "detected"))
        .chain(recovered_at.values().map(|t| (*t, "recovered")))
        .collect();
    crate::chart::render(&crate::chart::ChartInput {
        mode: run.mode.as_str(),
        start_ms: run.start_ms,
        duration_ms: run.duration_ms,
        calls: samples,
        phases: &PHASES,
        marks: &marks,
    })
    .unwrap_or_else(|e| format!("<!-- the chart could not be drawn: {e} -->"))
}

fn markdown(report: &Value) -> String {
    let mut md = String::from("# palisade load\n\n");
    for m in report["modes"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "## mode `{}` ({} ms)\n",
            m["mode"].as_str().unwrap_or(""),
            m["duration_ms"]
        );
        md.push_str("| phase | calls | ok/s | p50 | p99 | max | errors |\n|---|---|---|---|---|---|---|\n");
        for p in m["phases"].as_array().into_iter().flatten() {
            let ms = |k: &str| format!("{:.2} ms", p[k].as_u64().unwrap_or(0) as f64 / 1000.0);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} |",
                p["phase"].as_str().unwrap_or(""),
                p["calls"],
                p["ok_per_s"],
                ms("p50_us"),
                ms("p99_us"),
                ms("max_us"),
                p["errors"]
            );
        }
        let _ = writeln!(
            md,
            "\ntime to detect (max): {} ms · time to recover (max): {} ms · leases checked: {} (left out, release outcome unknown: {}) · job rounds checked: {} · markers checked: {} · acknowledged writes lost to asynchronous replication (before the first fault or in the second before the pause; standalone: not looked up before the kill, which loses them by design): {} · acknowledged job updates lost to asynchronous replication in the second before a failover: {}\n",
            m["detect_ms_max"],
            m["recover_ms_max"],
            m["leases_checked"],
            m["leases_with_unknown_end"],
            m["job_rounds_checked"],
            m["markers_checked"],
            m["acknowledged_writes_lost_before_the_first_fault"],
            m["acknowledged_updates_lost_to_replication_at_a_failover"]
        );
        let spans = m["node_phases"].as_array().cloned().unwrap_or_default();
        if !spans.is_empty() {
            md.push_str("Per node, from its own `total_commands_processed` (commands/s and role at the end of the span; `-`: did not answer):\n\n| span (ms) | ");
            let n = spans[0]["nodes"].as_array().map_or(0, Vec::len);
            for i in 0..n {
                let _ = write!(md, "node {i} | ");
            }
            md.push_str("\n|---|");
            md.push_str(&"---|".repeat(n));
            md.push('\n');
            for sp in &spans {
                let _ = write!(md, "| {}–{} | ", sp["start_ms"], sp["end_ms"]);
                for node in sp["nodes"].as_array().into_iter().flatten() {
                    match (node["role"].as_str(), node["commands_per_s"].as_f64()) {
                        (Some(role), Some(c)) => {
                            let _ = write!(md, "{c} ({role}) | ");
                        }
                        (Some(role), None) => {
                            let _ = write!(md, "- ({role}) | ");
                        }
                        _ => md.push_str("- | "),
                    }
                }
                md.push('\n');
            }
            md.push('\n');
        }
        md.push_str("| invariant | count |\n|---|---|\n");
        for (k, v) in m["invariants"].as_object().into_iter().flatten() {
            let _ = writeln!(md, "| {k} | {v} |");
        }
        md.push('\n');
    }
    md
}

/// Runs `palisade load`; returns the report and whether every invariant is 0.
pub(crate) fn orchestrate(args: &LoadArgs) -> Result<(Value, bool), LoadError> {
    std::fs::create_dir_all(&args.out)?;
    let mut modes = Vec::new();
    for m in args.modes.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let mode: Mode = m.parse()?;
        if !mode.needs_redis() {
            return Err(Error::invalid_input("load runs the modes that use Redis: strict, degraded").into());
        }
        let run = run_mode(args, mode)?;
        for (i, w) in run.workers.iter().enumerate() {
            let file = args.out.join(format!("worker-{}-{i}.json", mode.as_str()));
            std::fs::write(file, w.to_string())?;
        }
        let mut analysis = analyse(&run, args);
        let svg = analysis["chart"].take();
        let file = args.out.join(format!("latency-{}.svg", mode.as_str()));
        std::fs::write(&file, svg.as_str().unwrap_or(""))?;
        analysis["chart"] = json!(file_name(&file));
        modes.push(analysis);
    }
    // Zero violations count only if the work they check really ran.
    let clean = modes.iter().all(|m| {
        m["invariants"]
            .as_object()
            .is_some_and(|o| o.values().all(|v| v.as_u64() == Some(0)))
            && m["leases_checked"].as_u64().unwrap_or(0) > 0
            && m["job_rounds_checked"].as_u64().unwrap_or(0) > 0
            && m["markers_checked"].as_u64().unwrap_or(0) > 0
    });
    let report = json!({
        "topology": args.topology,
        "processes": args.processes, "tasks_per_process": args.tasks, "command_timeout_ms": args.command_timeout.as_millis() as u64,
        "all_invariants_zero": clean, "modes": modes,
    });
    std::fs::write(
        args.out.join("report.json"),
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )?;
    std::fs::write(args.out.join("summary.md"), markdown(&report))?;
    Ok((report, clean))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether this process is a load worker.
pub(crate) fn is_worker() -> bool {
    std::env::var_os(ENV_WORKER).is_some()
}

#[cfg(test)]
mod tests {
    use super::{REPLICATION_WINDOW_MS, in_replication_window, lease_violations};

    #[test]
    fn only_the_second_before_a_failover_is_replications_loss() {
        let faults = [10_000, 50_000];
        for at in [10_000 - REPLICATION_WINDOW_MS + 1, 10_000, 49_500] {
            assert!(in_replication_window(at, &faults), "{at}");
        }
        for at in [10_000 - REPLICATION_WINDOW_MS, 10_001, 30_000, 50_001, u64::MAX] {
            assert!(!in_replication_window(at, &faults), "{at}");
        }
        assert!(!in_replication_window(5, &[]));
    }

    fn l(a: u64, e: u64, k: &str) -> (u64, u64, String) {
        (a, e, k.to_owned())
    }

    #[test]
    fn the_lease_checker_counts_overlaps_above_the_caps_and_short_spacing() {
        // Two leases on one key at once, key cap 1.
        assert_eq!(
            lease_violations(&[l(0, 100_000, "a"), l(50_000, 150_000, "a")], 6, 1, 20_000),
            1
        );
        // Three keys at once, global cap 2.
        assert_eq!(
            lease_violations(
                &[l(0, 100_000, "a"), l(30_000, 100_000, "b"), l(60_000, 100_000, "c")],
                2,
                2,
                0
            ),
            1
        );
        // Acquisitions of one key 10 ms apart with a 20 ms interval.
        assert_eq!(
            lease_violations(&[l(0, 1_000, "a"), l(10_000, 11_000, "a")], 6, 2, 20_000),
            1
        );
        // Back to back (an end and a start at the same instant) is fine.
        assert_eq!(
            lease_violations(&[l(0, 20_000, "a"), l(20_000, 40_000, "a")], 1, 1, 20_000),
            0
        );
    }
}
