//! A private `redis-server`, and a 3-master Redis Cluster, on loopback ports picked at
//! random, in temporary directories, without persistence.

use std::fs::File;
use std::io;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::resp::{self, Reply};
use crate::tls::{TlsFiles, TlsServer};

/// Environment variable naming the `redis-server` binary (default: from `PATH`).
pub const BINARY_ENV: &str = "PALISADE_REDIS_SERVER";

/// PIDs of every server started by this process and not yet stopped, so that an
/// interrupted run can kill them ([`kill_all`]).
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<u32>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// SIGKILLs every server this process started and has not stopped (for signal
/// handlers: an interrupted run must leave no `redis-server` behind).
pub fn kill_all() {
    for pid in live().drain(..) {
        let pid = Pid::from_raw(pid as i32);
        let _ = kill(pid, Signal::SIGKILL);
    }
}

/// How long a server may take to answer PING after it was spawned.
const READY_DEADLINE: Duration = Duration::from_secs(10);

/// A `redis-server` child process.
///
/// # Behavior
///
/// - [`RedisServer::start`] picks a free loopback port, starts the server in a fresh
///   temporary directory with persistence off, and returns once it answers PING.
/// - [`RedisServer::kill`] sends SIGKILL and reaps the process; [`RedisServer::pause`]
///   and [`RedisServer::resume`] send SIGSTOP and SIGCONT; [`RedisServer::restart`]
///   starts a new process on the same port (data is gone: no persistence).
/// - Dropping it kills the process and removes its directory.
pub struct RedisServer {
    port: u16,
    tls_port: Option<u16>,
    dir: TempDir,
    /// A configuration file written into `dir` and passed first (sentinels need one).
    config: Option<String>,
    args: Vec<String>,
    tls_args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// The `redis-server` binary to run.
    pub fn binary() -> PathBuf {
        std::env::var_os(BINARY_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("redis-server"))
    }

    /// Whether the binary can be run.
    pub fn binary_available() -> bool {
        Command::new(Self::binary())
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The `major.minor.patch` version of the binary.
    pub fn binary_version() -> io::Result<(u32, u32, u32)> {
        let out = Command::new(Self::binary()).arg("--version").output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        // "Redis server v=7.0.15 sha=..."
        let v = text
            .split_whitespace()
            .find_map(|w| w.strip_prefix("v="))
            .ok_or_else(|| io::Error::other(format!("cannot read a version in {text:?}")))?;
        let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        Ok((
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
        ))
    }

    /// A standalone server.
    pub fn start() -> io::Result<RedisServer> {
        Self::start_with(&[])
    }

    /// A server with extra arguments (e.g. `--cluster-enabled yes`).
    pub fn start_with(extra: &[&str]) -> io::Result<RedisServer> {
        Self::start_full(extra, None, None)
    }

    /// A server that also speaks TLS on a second port ([`RedisServer::tls_url`]), with
    /// the certificates of `files`; its plain port stays open on loopback so that tests
    /// can look at what landed without going through the code under test.
    pub fn start_tls(files: &TlsFiles, tls: TlsServer, extra: &[&str]) -> io::Result<RedisServer> {
        // With `tls-cluster yes` the cluster bus listens on the TLS port + 10000.
        let tls_port = free_port(extra.contains(&"--cluster-enabled"))?;
        Self::start_full(extra, None, Some((tls_port, tls.args(files, tls_port))))
    }

    /// Kills a TLS server and starts it again on the same ports presenting `tls`
    /// (a certificate rotated under running clients).
    pub fn restart_tls(&mut self, files: &TlsFiles, tls: TlsServer) -> io::Result<()> {
        let port = self
            .tls_port
            .ok_or_else(|| io::Error::other("not a TLS server: start it with start_tls"))?;
        self.tls_args = tls.args(files, port);
        self.restart()
    }

    /// A sentinel (`redis-server sentinel.conf --sentinel`) with `config` as its
    /// configuration file (written into its own directory, which it may rewrite).
    pub fn start_sentinel(config: &str) -> io::Result<RedisServer> {
        Self::start_full(&["--sentinel"], Some(config.to_owned()), None)
    }

    /// A sentinel that also speaks TLS (to clients, to the data nodes and to the other
    /// sentinels: `tls-replication yes`).
    pub fn start_sentinel_tls(config: &str, files: &TlsFiles) -> io::Result<RedisServer> {
        let tls_port = free_port(false)?;
        Self::start_full(
            &["--sentinel", "--tls-replication", "yes"],
            Some(config.to_owned()),
            Some((tls_port, TlsServer::good().args(files, tls_port))),
        )
    }

    fn start_full(extra: &[&str], config: Option<String>, tls: Option<(u16, Vec<String>)>) -> io::Result<RedisServer> {
        let need_bus = extra.contains(&"--cluster-enabled");
        let mut last_err = None;
        for _ in 0..5 {
            let port = free_port(need_bus)?;
            let mut server = RedisServer {
                port,
                tls_port: tls.as_ref().map(|(p, _)| *p),
                dir: tempfile::Builder::new().prefix("palisade-redis-").tempdir()?,
                config: config.clone(),
                args: extra.iter().map(|s| s.to_string()).collect(),
                tls_args: tls.as_ref().map(|(_, a)| a.clone()).unwrap_or_default(),
                child: None,
            };
            match server.spawn() {
                Ok(()) => return Ok(server),
                // Another process may have taken the port between the probe and the
                // spawn: try another.
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("cannot start redis-server")))
    }

    fn spawn(&mut self) -> io::Result<()> {
        let log = File::create(self.dir.path().join("server.log"))?;
        let mut cmd = Command::new(Self::binary());
        if let Some(config) = &self.config {
            let path = self.dir.path().join("server.conf");
            // Written once: a sentinel rewrites its file with what it learned, and a
            // restarted sentinel must start from that.
            if !path.exists() {
                std::fs::write(&path, config)?;
            }
            cmd.arg(path);
        }
        let is_sentinel = self.args.iter().any(|a| a == "--sentinel");
        let persistence: &[&str] = if is_sentinel {
            &[]
        } else {
            &["--save", "", "--appendonly", "no"]
        };
        let child = cmd
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1"])
            .args(persistence)
            .args(["--daemonize", "no", "--protected-mode", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .args(&self.tls_args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()?;
        live().push(child.id());
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.forget_child();
                    return Err(io::Error::other(format!(
                        "redis-server on port {} exited with {status}: {}",
                        self.port,
                        self.log()
                    )));
                }
            }
            if let Ok(Reply::Simple(s)) = resp::command(&self.addr(), &["PING"]) {
                if s == "PONG" {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("redis-server on port {} did not answer PING", self.port),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn forget_child(&mut self) {
        if let Some(child) = self.child.take() {
            live().retain(|p| *p != child.id());
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr())
    }

    /// The TLS port, for a server started with [`RedisServer::start_tls`].
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// `rediss://127.0.0.1:TLS_PORT`, for a server started with
    /// [`RedisServer::start_tls`].
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port.map(|p| format!("rediss://127.0.0.1:{p}"))
    }

    /// The server's directory (its log, a sentinel's configuration file).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether a process is running (it may be paused).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            live().retain(|p| *p != child.id());
        }
    }

    fn signal(&self, signal: Signal) -> io::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| io::Error::other("redis-server is not running"))?;
        kill(Pid::from_raw(pid as i32), signal).map_err(io::Error::from)
    }

    /// SIGSTOP: the server keeps its sockets but answers nothing.
    pub fn pause(&self) -> io::Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    /// SIGCONT.
    pub fn resume(&self) -> io::Result<()> {
        self.signal(Signal::SIGCONT)
    }

    /// Kills the server if it runs, then starts a new one on the same port and waits
    /// for it to answer PING.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.spawn()
    }

    /// Replaces the extra arguments used by the next (re)start.
    pub fn set_args(&mut self, extra: &[&str]) {
        self.args = extra.iter().map(|s| s.to_string()).collect();
    }

    /// Starts the server again on the same port after [`RedisServer::kill`].
    pub fn start_again(&mut self) -> io::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        self.spawn()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free loopback port; with `bus`, `port + 10000` is free too (the cluster bus).
fn free_port(bus: bool) -> io::Result<u16> {
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if !bus {
            return Ok(port);
        }
        if let Some(bus_port) = port.checked_add(10_000) {
            if TcpListener::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("127.0.0.1", bus_port)).is_ok() {
                return Ok(port);
            }
        }
    }
    Err(io::Error::other("no free loopback port pair for a cluster node"))
}

/// A Redis Cluster, each node a [`RedisServer`]: masters, and optionally replicas.
///
/// # Behavior
///
/// - [`RedisCluster::start`] starts `masters` servers with cluster mode on and
///   `cluster-require-full-coverage no`, splits the 16384 slots evenly, joins them
///   and returns once every node reports `cluster_state:ok` and knows every node.
/// - [`RedisCluster::start_with`] also gives every master `replicas` replicas, with the
///   given `cluster-node-timeout`, and returns once every replica's link to its master
///   is up. The first `masters` nodes are the masters, then the replicas of master 0,
///   of master 1, …
/// - Dropping it kills every node.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    masters: usize,
}

impl RedisCluster {
    /// Number of hash slots in a Redis Cluster.
    pub const SLOTS: u32 = 16_384;

    /// A cluster of `masters` nodes, no replicas, `cluster-node-timeout 2000`.
    pub fn start(masters: usize) -> io::Result<RedisCluster> {
        Self::start_with(masters, 0, Duration::from_millis(2000))
    }

    /// A cluster of `masters` masters with `replicas` replicas each.
    pub fn start_with(masters: usize, replicas: usize, node_timeout: Duration) -> io::Result<RedisCluster> {
        let args = Self::node_args(node_timeout);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::start_nodes(masters, replicas, RedisServer::start_with, &args)
    }

    /// The arguments of every cluster node.
    fn node_args(node_timeout: Duration) -> Vec<String> {
        [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            &node_timeout.as_millis().to_string(),
            "--cluster-require-full-coverage",
            "no",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    /// A cluster of `masters` nodes whose clients and cluster bus speak TLS
    /// (`tls-cluster yes`): a TLS client is told the nodes' TLS ports. Each node keeps a
    /// plain port for setup and inspection.
    pub fn start_tls(masters: usize, files: &TlsFiles) -> io::Result<RedisCluster> {
        let args = Self::node_args(Duration::from_millis(2000));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::start_nodes(
            masters,
            0,
            |extra| {
                let mut all = extra.to_vec();
                all.extend(["--tls-cluster", "yes", "--tls-replication", "yes"]);
                RedisServer::start_tls(files, TlsServer::good(), &all)
            },
            &args,
        )
    }

    fn start_nodes(
        masters: usize,
        replicas: usize,
        start: impl Fn(&[&str]) -> io::Result<RedisServer>,
        args: &[&str],
    ) -> io::Result<RedisCluster> {
        let total = masters * (1 + replicas);
        let mut nodes = Vec::with_capacity(total);
        for _ in 0..total {
            nodes.push(start(args)?);
        }
        let cluster = RedisCluster { nodes, masters };
        cluster.form()?;
        cluster.attach_replicas(replicas)?;
        Ok(cluster)
    }

    /// `CLUSTER MYID` of node `i`.
    pub fn node_id(&self, i: usize) -> io::Result<String> {
        resp::command(&self.nodes[i].addr(), &["CLUSTER", "MYID"])?
            .text()
            .ok_or_else(|| io::Error::other("CLUSTER MYID gave no text"))
    }

    fn attach_replicas(&self, replicas: usize) -> io::Result<()> {
        if replicas == 0 {
            return Ok(());
        }
        for m in 0..self.masters {
            let id = self.node_id(m)?;
            for r in 0..replicas {
                let node = &self.nodes[self.masters + m * replicas + r];
                if let Reply::Error(e) = resp::command(&node.addr(), &["CLUSTER", "REPLICATE", &id])? {
                    return Err(io::Error::other(format!("CLUSTER REPLICATE: {e}")));
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let up = self.nodes[self.masters..].iter().all(|n| {
                resp::command(&n.addr(), &["INFO", "replication"])
                    .ok()
                    .and_then(|r| r.text())
                    .is_some_and(|i| i.contains("master_link_status:up"))
            });
            if up {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the replicas did not link to their masters within 20 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How many of the nodes are masters at start.
    pub fn masters(&self) -> usize {
        self.masters
    }

    /// The slots master `i` of `n` is given at start (inclusive): an even split.
    fn slot_range(i: u32, n: u32) -> (u32, u32) {
        (Self::SLOTS * i / n, Self::SLOTS * (i + 1) / n - 1)
    }

    /// Which master (0 first, an index into [`RedisCluster::nodes`]) a cluster of
    /// `masters` masters gives `slot` at start, before any failover or migration.
    pub fn first_owner(masters: usize, slot: u16) -> usize {
        let n = u32::try_from(masters.max(1)).unwrap_or(u32::MAX);
        (0..n)
            .rev()
            .find(|&i| Self::slot_range(i, n).0 <= u32::from(slot))
            .map_or(0, |i| i as usize)
    }

    fn form(&self) -> io::Result<()> {
        let n = self.masters as u32;
        let total = self.nodes.len();
        let check = |r: io::Result<Reply>, what: &str| -> io::Result<()> {
            match r? {
                Reply::Error(e) => Err(io::Error::other(format!("{what}: {e}"))),
                _ => Ok(()),
            }
        };
        for (i, node) in self.nodes.iter().enumerate() {
            let i = i as u32;
            if i >= n {
                break;
            }
            let (lo, hi) = Self::slot_range(i, n);
            check(
                resp::command(&node.addr(), &["CLUSTER", "SET-CONFIG-EPOCH", &(i + 1).to_string()]),
                "CLUSTER SET-CONFIG-EPOCH",
            )?;
            check(
                resp::command(
                    &node.addr(),
                    &["CLUSTER", "ADDSLOTSRANGE", &lo.to_string(), &hi.to_string()],
                ),
                "CLUSTER ADDSLOTSRANGE",
            )?;
        }
        // The port the cluster bus derives from: the TLS port with `tls-cluster yes`.
        let first = self.nodes[0].tls_port().unwrap_or(self.nodes[0].port()).to_string();
        for node in &self.nodes[1..] {
            check(
                resp::command(&node.addr(), &["CLUSTER", "MEET", "127.0.0.1", &first]),
                "CLUSTER MEET",
            )?;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = self.nodes.iter().all(|node| {
                resp::command(&node.addr(), &["CLUSTER", "INFO"])
                    .ok()
                    .and_then(|r| r.text())
                    .is_some_and(|info| {
                        info.contains("cluster_state:ok")
                            && info.contains(&format!("cluster_known_nodes:{total}\r"))
                            && info.contains("cluster_slots_assigned:16384")
                    })
            });
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| {
                        let info = resp::command(&n.addr(), &["CLUSTER", "INFO"])
                            .ok()
                            .and_then(|r| r.text());
                        let nodes = resp::command(&n.addr(), &["CLUSTER", "NODES"])
                            .ok()
                            .and_then(|r| r.text());
                        format!("{info:?} {nodes:?}")
                    })
                    .collect();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the cluster did not reach cluster_state:ok within 20 s: {}",
                        logs.join("\n---\n")
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Mutable access to the nodes, to kill or pause one.
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// `127.0.0.1:PORT` of every node, comma-separated.
    pub fn seeds(&self) -> String {
        self.nodes.iter().map(RedisServer::addr).collect::<Vec<_>>().join(",")
    }

    /// `rediss://127.0.0.1:TLS_PORT` of every node, comma-separated (a TLS cluster).
    pub fn tls_seeds(&self) -> String {
        self.nodes
            .iter()
            .filter_map(RedisServer::tls_url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::RedisCluster;

    #[test]
    fn first_owner_is_the_master_whose_range_holds_the_slot() {
        for masters in 1..=5u32 {
            for i in 0..masters {
                let (lo, hi) = RedisCluster::slot_range(i, masters);
                for slot in [lo, lo + 1, hi - 1, hi] {
                    let slot = u16::try_from(slot).unwrap();
                    assert_eq!(
                        RedisCluster::first_owner(masters as usize, slot),
                        i as usize,
                        "slot {slot} of {masters}"
                    );
                }
            }
        }
        // The split covers every slot once.
        let (lo, hi) = (RedisCluster::slot_range(0, 3).0, RedisCluster::slot_range(2, 3).1);
        assert_eq!((lo, hi), (0, RedisCluster::SLOTS - 1));
    }
}
