//! A Sentinel topology: one primary, replicas, and sentinels watching them — every one a
//! real `redis-server` on a loopback port.

use std::io;
use std::time::{Duration, Instant};

use crate::resp::{self, Reply};
use crate::server::RedisServer;
use crate::tls::{TlsFiles, TlsServer};

/// The service (master) name the sentinels monitor.
pub const SERVICE: &str = "palisade";

/// How a [`SentinelGroup`] is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SentinelOptions {
    /// Replicas of the primary.
    pub replicas: usize,
    /// Sentinels (the quorum is a majority of them).
    pub sentinels: usize,
    /// `down-after-milliseconds`.
    pub down_after: Duration,
    /// `failover-timeout`.
    pub failover_timeout: Duration,
}

impl Default for SentinelOptions {
    fn default() -> Self {
        SentinelOptions {
            replicas: 1,
            sentinels: 3,
            down_after: Duration::from_millis(1000),
            failover_timeout: Duration::from_millis(3000),
        }
    }
}

/// A primary, its replicas and the sentinels that watch them.
///
/// # Behavior
///
/// - [`SentinelGroup::start`] starts the data nodes, waits for every replica's link to
///   be up, starts the sentinels (each with its own writable configuration file,
///   quorum = a majority) and returns once every sentinel knows every replica and
///   every other sentinel.
/// - The data nodes keep their identity across a failover: find the primary of the
///   moment with [`SentinelGroup::primary_port`] (what the sentinels say) and the node
///   with [`SentinelGroup::node_mut`].
/// - Dropping it kills every process.
pub struct SentinelGroup {
    nodes: Vec<RedisServer>,
    sentinels: Vec<RedisServer>,
    options: SentinelOptions,
    tls: bool,
}

/// The port clients (and the sentinels) use for a node: its TLS port when it has one.
fn client_port(n: &RedisServer) -> u16 {
    n.tls_port().unwrap_or(n.port())
}

fn field(reply: &Reply, name: &str) -> Option<String> {
    let Reply::Array(items) = reply else { return None };
    items
        .chunks(2)
        .find(|kv| kv[0].text().as_deref() == Some(name))
        .and_then(|kv| kv.get(1).and_then(Reply::text))
}

fn wait(what: &str, deadline: Duration, mut ready: impl FnMut() -> bool) -> io::Result<()> {
    let until = Instant::now() + deadline;
    while !ready() {
        if Instant::now() > until {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{what} within {deadline:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

impl SentinelGroup {
    /// One primary, one replica, three sentinels, `down-after-milliseconds` 1000.
    pub fn start_default() -> io::Result<SentinelGroup> {
        Self::start(SentinelOptions::default())
    }

    /// A group set up as `options` says.
    pub fn start(options: SentinelOptions) -> io::Result<SentinelGroup> {
        Self::start_inner(options, None)
    }

    /// A group whose data nodes and sentinels all speak TLS (`tls-replication yes`), with
    /// the certificates of `files`; [`SentinelGroup::url`] is then `rediss-sentinel://`
    /// with the sentinels' TLS ports, and the sentinels report the nodes' TLS ports.
    pub fn start_tls(options: SentinelOptions, files: &TlsFiles) -> io::Result<SentinelGroup> {
        Self::start_inner(options, Some(files))
    }

    fn start_inner(options: SentinelOptions, files: Option<&TlsFiles>) -> io::Result<SentinelGroup> {
        let data_node = |extra: &[&str]| {
            // A replica that (re)joins is synced at once, not after the default 5 s
            // wait for more replicas.
            let mut args = vec!["--repl-diskless-sync-delay", "0"];
            if files.is_some() {
                args.extend(["--tls-replication", "yes"]);
            }
            args.extend_from_slice(extra);
            match files {
                Some(f) => RedisServer::start_tls(f, TlsServer::good(), &args),
                None => RedisServer::start_with(&args),
            }
        };
        let primary = data_node(&[])?;
        let primary_port = client_port(&primary).to_string();
        let mut nodes = vec![primary];
        for _ in 0..options.replicas {
            nodes.push(data_node(&["--replicaof", "127.0.0.1", &primary_port])?);
        }
        for replica in &nodes[1..] {
            wait("a replica's link to the primary is up", Duration::from_secs(20), || {
                resp::command(&replica.addr(), &["INFO", "replication"])
                    .ok()
                    .and_then(|r| r.text())
                    .is_some_and(|t| t.contains("master_link_status:up"))
            })?;
        }
        let quorum = options.sentinels / 2 + 1;
        let config = format!(
            "sentinel monitor {SERVICE} 127.0.0.1 {primary_port} {quorum}\n\
             sentinel down-after-milliseconds {SERVICE} {}\n\
             sentinel failover-timeout {SERVICE} {}\n\
             sentinel parallel-syncs {SERVICE} 1\n",
            options.down_after.as_millis(),
            options.failover_timeout.as_millis(),
        );
        let mut sentinels = Vec::with_capacity(options.sentinels);
        for _ in 0..options.sentinels {
            sentinels.push(match files {
                Some(f) => RedisServer::start_sentinel_tls(&config, f)?,
                None => RedisServer::start_sentinel(&config)?,
            });
        }
        let group = SentinelGroup {
            nodes,
            sentinels,
            options,
            tls: files.is_some(),
        };
        group.wait_settled(Duration::from_secs(30))?;
        Ok(group)
    }

    /// Waits until every running sentinel knows every replica and every other running
    /// sentinel, and they agree on the primary.
    pub fn wait_settled(&self, deadline: Duration) -> io::Result<()> {
        let running = self.sentinels.iter().filter(|s| s.is_running()).count();
        let replicas = self.nodes.iter().filter(|n| n.is_running()).count().saturating_sub(1);
        wait("the sentinels agree on the topology", deadline, || {
            let mut primaries = Vec::new();
            let all = self.sentinels.iter().filter(|s| s.is_running()).all(|s| {
                let Ok(r) = resp::command(&s.addr(), &["SENTINEL", "MASTER", SERVICE]) else {
                    return false;
                };
                primaries.push(field(&r, "port"));
                field(&r, "num-slaves").and_then(|n| n.parse::<usize>().ok()) >= Some(replicas)
                    && field(&r, "num-other-sentinels").and_then(|n| n.parse::<usize>().ok()) == Some(running - 1)
                    && field(&r, "flags").as_deref() == Some("master")
            });
            all && primaries.windows(2).all(|w| w[0] == w[1])
        })
    }

    /// `redis-sentinel://127.0.0.1:S1,127.0.0.1:S2,…/palisade` (`rediss-sentinel://`
    /// with the TLS ports for a TLS group).
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", client_port(s)))
            .collect();
        let scheme = if self.tls { "rediss-sentinel" } else { "redis-sentinel" };
        format!("{scheme}://{}/{SERVICE}", hosts.join(","))
    }

    /// The options it was started with.
    pub fn options(&self) -> SentinelOptions {
        self.options
    }

    /// The port of the primary, as the first sentinel that answers reports it (a TLS
    /// port for a TLS group).
    pub fn primary_port(&self) -> Option<u16> {
        self.sentinels.iter().filter(|s| s.is_running()).find_map(|s| {
            match resp::command(&s.addr(), &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE]).ok()? {
                Reply::Array(items) => items.get(1)?.text()?.parse().ok(),
                _ => None,
            }
        })
    }

    /// Waits until the sentinels report a primary other than `old`; returns its port.
    pub fn wait_new_primary(&self, old: u16, deadline: Duration) -> io::Result<u16> {
        let mut new = None;
        wait("the sentinels promote a new primary", deadline, || {
            new = self.primary_port().filter(|p| *p != old);
            new.is_some()
        })?;
        new.ok_or_else(|| io::Error::other("no new primary"))
    }

    /// The data nodes (primary and replicas, in start order).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The data node on `port` (its plain or its TLS port).
    pub fn node_mut(&mut self, port: u16) -> Option<&mut RedisServer> {
        self.nodes
            .iter_mut()
            .find(|n| n.port() == port || n.tls_port() == Some(port))
    }

    fn admin_addr(&self, port: u16) -> String {
        self.nodes
            .iter()
            .find(|n| n.port() == port || n.tls_port() == Some(port))
            .map_or_else(|| format!("127.0.0.1:{port}"), RedisServer::addr)
    }

    /// The sentinels.
    pub fn sentinels(&self) -> &[RedisServer] {
        &self.sentinels
    }

    /// Mutable access to the sentinels, to kill one.
    pub fn sentinels_mut(&mut self) -> &mut [RedisServer] {
        &mut self.sentinels
    }

    /// `ROLE` of the data node on `port`: `master` or `slave` (None if it does not
    /// answer).
    pub fn role(&self, port: u16) -> Option<String> {
        match resp::command(&self.admin_addr(port), &["ROLE"]).ok()? {
            Reply::Array(items) => items.first()?.text(),
            _ => None,
        }
    }

    /// Starts the killed data node on `port` again as a replica of the current primary
    /// and waits until its replication link is up — what an operator (or a Kubernetes
    /// operator) does with a node that died. Restarted as it was, an old primary comes
    /// back as an empty master and Sentinel converts it only after about 8 s; a failover
    /// in that window could promote it empty.
    pub fn rejoin(&mut self, port: u16) -> io::Result<()> {
        let primary = self
            .primary_port()
            .ok_or_else(|| io::Error::other("the sentinels name no primary"))?
            .to_string();
        let tls = self.tls;
        let node = self
            .node_mut(port)
            .ok_or_else(|| io::Error::other("no data node on that port"))?;
        let mut args = vec!["--repl-diskless-sync-delay", "0"];
        if tls {
            args.extend(["--tls-replication", "yes"]);
        }
        args.extend(["--replicaof", "127.0.0.1", &primary]);
        node.set_args(&args);
        node.start_again()?;
        let addr = node.addr();
        wait("the rejoined replica's link is up", Duration::from_secs(30), || {
            resp::command(&addr, &["INFO", "replication"])
                .ok()
                .and_then(|r| r.text())
                .is_some_and(|t| t.contains("master_link_status:up"))
        })
    }

    /// Asks the sentinels for a planned failover (`SENTINEL FAILOVER`).
    pub fn failover(&self) -> io::Result<()> {
        let s = self
            .sentinels
            .iter()
            .find(|s| s.is_running())
            .ok_or_else(|| io::Error::other("no sentinel runs"))?;
        match resp::command(&s.addr(), &["SENTINEL", "FAILOVER", SERVICE])? {
            Reply::Error(e) => Err(io::Error::other(e)),
            _ => Ok(()),
        }
    }

    /// PIDs of every process, for leftover checks.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .chain(&self.sentinels)
            .filter_map(RedisServer::pid)
            .collect()
    }
}
