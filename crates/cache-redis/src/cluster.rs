//! palisade's own Redis Cluster routing, over one plain fred client per node.
//!
//! fred 10.1's clustered client syncs its slot table all-or-nothing (`try_join_all` in
//! `router/clustered.rs`, upstream issue #363): while one master is unreachable every
//! call on every master stalls until the replica is promoted, and forever without a
//! replica (measured in issue #12: 65/65 calls on the healthy masters failed). Here a
//! dead master costs only its own slots.
//!
//! # Behavior
//!
//! - The slot table comes from `CLUSTER SHARDS` (`CLUSTER SLOTS` on servers without it),
//!   asked of every reachable node at once; each slot goes to the master most answers
//!   name, a master flagged `failed` skipped. An answer that names no healthy master
//!   for a slot is a vote for *none*, and wins ties: a master the cluster flagged failed
//!   that resumes before its replica is promoted still names itself, and the writes it
//!   would acknowledge are discarded when it is demoted (Redis Cluster's split-brain
//!   window, measured: 4 acknowledged writes lost in one run); its slots fail until the
//!   promotion instead. It is refreshed by a background task, never
//!   on the request path: every [`CLUSTER_REFRESH`], at once after a `MOVED`, a `CLUSTERDOWN`,
//!   an I/O error or a timeout, and every [`CLUSTER_REFRESH_URGENT`] while any owner is
//!   unreachable or any slot unowned.
//! - A call goes to its slot's master. A master that failed a call (I/O error,
//!   timeout) is *down*: calls on its slots fail at once, naming the node and its
//!   slots, until a refresh reaches it again or moves its slots to a promoted replica.
//!   Calls on the other masters are untouched.
//! - `MOVED`: the slot is updated and the call sent once more to the new owner (the
//!   first node ran nothing, so this is safe for scripts too); `ASK`: `ASKING` and the
//!   command go to the importing node in one write. A call that timed out or whose
//!   connection died is never re-sent.
//! - Every registered script is loaded on every node (masters and replicas) when its
//!   client (re)connects, so a promoted replica and a master added later have them;
//!   `NOSCRIPT` still reloads and retries once.
//! - Nodes that appear in the topology get a client; nodes no answer names any more are
//!   dropped.
//! - Every change of the table bumps a counter a watcher can await (supervisors probe at
//!   once after a promotion).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use fred::bytes_utils::Str;
use fred::error::{Error as FredError, ErrorKind as FredKind};
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use palisade_cache_core::{Endpoint, Error, HostPort};

use crate::RedisConfig;
use crate::config::FileCredentials;
use crate::connection::{ConnectFailure, failure_of};

/// Number of hash slots of a Redis Cluster.
pub const SLOTS: usize = 16_384;

/// How often the slot table is refreshed when everything is reachable.
pub const CLUSTER_REFRESH: Duration = Duration::from_secs(5);

/// How often it is refreshed while an owner is unreachable or a slot unowned.
pub const CLUSTER_REFRESH_URGENT: Duration = Duration::from_millis(100);

/// The longest a refresh waits for one node's answer.
const ASK_NODE: Duration = Duration::from_millis(250);

const NO_OWNER: u16 = u16::MAX;

/// The hash slot of `key` (its hash tag's, if it has one).
pub fn slot_of(key: &str) -> u16 {
    fred::util::redis_keyslot(key.as_bytes())
}

/// A command `send` writes with fred's typed method instead of as a custom command.
///
/// fred flushes its socket after every custom command on its own
/// (`CommandKind::should_flush`), where a typed command shares one flush with whatever
/// else is queued. Measured in the closed loop (`benches/bin/closed_loop.rs`, 50 in
/// flight, one client): a custom `GET` ran at 116–134k/s, the typed `GET` at
/// 186–238k/s. Scripts gain nothing: fred flushes every `EVALSHA` alone either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Typed {
    /// `GET key`.
    Get,
    /// `SET key value PX ms [NX]`.
    Set { px: i64, nx: bool },
    /// `DEL key`.
    Del,
    /// `EXISTS key`.
    Exists,
}

impl Typed {
    /// The typed form of `name args…`, when it has one of the exact shapes above.
    fn of(name: &str, args: &[Value]) -> Option<Typed> {
        let word = |v: &Value, w: &str| v.as_str().is_some_and(|s| s.eq_ignore_ascii_case(w));
        match (name, args) {
            ("GET", [_]) => Some(Typed::Get),
            ("DEL", [_]) => Some(Typed::Del),
            ("EXISTS", [_]) => Some(Typed::Exists),
            ("SET", [_, _, px, Value::Integer(ms)]) if word(px, "PX") => Some(Typed::Set { px: *ms, nx: false }),
            ("SET", [_, _, px, Value::Integer(ms), nx]) if word(px, "PX") && word(nx, "NX") => {
                Some(Typed::Set { px: *ms, nx: true })
            }
            _ => None,
        }
    }
}

/// One command, ready to send to whichever node owns its slot.
#[derive(Clone)]
pub(crate) struct Cmd {
    pub(crate) kind: CustomCommand,
    pub(crate) args: Vec<Value>,
    /// Sent with fred's typed method (same bytes on the wire, flushed with others).
    pub(crate) typed: Option<Typed>,
    /// The source of the script an `EVALSHA` runs: loaded and retried on `NOSCRIPT`.
    pub(crate) script: Option<Str>,
}

impl Cmd {
    pub(crate) fn new(name: &'static str, args: Vec<Value>) -> Self {
        Cmd {
            kind: CustomCommand::new_static(name, ClusterHash::Random, false),
            typed: Typed::of(name, &args),
            args,
            script: None,
        }
    }
}

/// Sends `cmd` on `client`; on `NOSCRIPT` loads the script and sends it once more.
pub(crate) async fn send<C: ClientLike + LuaInterface + ServerInterface + KeysInterface>(
    client: &C,
    cmd: &Cmd,
) -> Result<Value, FredError> {
    let first = match (cmd.typed, &cmd.args[..]) {
        // Boxed: fred's typed futures nest deep, and unboxed they push a caller's
        // `async fn` over rustc's layout depth limit (the two_tenants example did).
        (Some(typed), [key, rest @ ..]) => Box::pin(send_typed(client, typed, key, rest)).await,
        _ => client.custom::<Value, _>(cmd.kind.clone(), cmd.args.clone()).await,
    };
    match (first, &cmd.script) {
        (Err(e), Some(lua)) if e.details().starts_with("NOSCRIPT") => {
            // Boxed: the rare path must not grow every call's future.
            Box::pin(async {
                client.script_load::<String, _>(lua.clone()).await?;
                client.custom::<Value, _>(cmd.kind.clone(), cmd.args.clone()).await
            })
            .await
        }
        (other, _) => other,
    }
}

/// `typed` through fred's typed method; `rest` is the arguments after the key.
async fn send_typed<C: KeysInterface>(
    client: &C,
    typed: Typed,
    key: &Value,
    rest: &[Value],
) -> Result<Value, FredError> {
    let key = Key::try_from(key.clone())?;
    match (typed, rest) {
        (Typed::Get, _) => client.get(key).await,
        (Typed::Del, _) => client.del(key).await,
        (Typed::Exists, _) => client.exists(key).await,
        (Typed::Set { px, nx }, [value, ..]) => {
            let options = nx.then_some(fred::types::SetOptions::NX);
            client
                .set(
                    key,
                    value.clone(),
                    Some(fred::types::Expiration::PX(px)),
                    options,
                    false,
                )
                .await
        }
        (Typed::Set { .. }, []) => Err(FredError::new(FredKind::InvalidArgument, "SET without a value")),
    }
}

/// One node's client.
struct Node {
    addr: HostPort,
    client: Client,
    /// A call failed on it with an outage; cleared when a refresh reaches it.
    down: AtomicBool,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let client = self.client.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(1), client.quit()).await;
            });
        }
    }
}

impl Node {
    fn reachable(&self) -> bool {
        !self.down.load(Ordering::Acquire)
    }
}

/// Who owns each slot.
struct Table {
    owner: Box<[u16]>,
    masters: Vec<Arc<Node>>,
}

impl Table {
    fn empty() -> Self {
        Table {
            owner: vec![NO_OWNER; SLOTS].into_boxed_slice(),
            masters: Vec::new(),
        }
    }

    fn owner(&self, slot: u16) -> Option<&Arc<Node>> {
        self.masters.get(usize::from(*self.owner.get(usize::from(slot))?))
    }

    fn same_as(&self, other: &Table) -> bool {
        self.owner.len() == other.owner.len()
            && (0..self.owner.len()).all(|s| {
                let a = self.masters.get(usize::from(self.owner[s])).map(|n| &n.addr);
                let b = other.masters.get(usize::from(other.owner[s])).map(|n| &n.addr);
                a == b
            })
    }

    /// The slot ranges of which `pred(owner)` holds (`None`: unowned).
    fn ranges(&self, pred: impl Fn(Option<&Arc<Node>>) -> bool) -> Vec<(u16, u16)> {
        let mut out: Vec<(u16, u16)> = Vec::new();
        for s in 0..SLOTS {
            if pred(self.masters.get(usize::from(self.owner[s]))) {
                let s = s as u16;
                match out.last_mut() {
                    Some((_, hi)) if *hi + 1 == s => *hi = s,
                    _ => out.push((s, s)),
                }
            }
        }
        out
    }
}

/// Slot ranges as `0-5460,10923`.
pub(crate) struct Ranges(pub(crate) Vec<(u16, u16)>);

impl fmt::Display for Ranges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (lo, hi)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

/// Why a routed call failed.
pub(crate) enum RouteError {
    /// No master serves the slot (none known, or its owner is down).
    Unreachable {
        node: Option<HostPort>,
        slots: Ranges,
        cause: Option<FredError>,
    },
    /// The node answered with an error, or the command failed on its connection.
    Node {
        node: HostPort,
        slots: Ranges,
        error: FredError,
    },
}

struct Shared {
    config: RedisConfig,
    provider: Option<Arc<FileCredentials>>,
    seeds: Vec<HostPort>,
    tls: bool,
    table: RwLock<Arc<Table>>,
    nodes: Mutex<HashMap<HostPort, Arc<Node>>>,
    wake: tokio::sync::Notify,
    changed: tokio::sync::watch::Sender<u64>,
    scripts: Arc<Mutex<Vec<Str>>>,
    last_failure: Arc<Mutex<Option<ConnectFailure>>>,
    refreshing: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The cluster client: the slot table, one client per node, and the refresh task.
pub(crate) struct Router {
    shared: Arc<Shared>,
    refresher: tokio::task::JoinHandle<()>,
}

impl Drop for Router {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

impl Router {
    /// A router over `config`'s seeds. Nothing is connected yet: see
    /// [`Router::start`].
    pub(crate) fn new(
        config: &RedisConfig,
        provider: Option<Arc<FileCredentials>>,
        last_failure: Arc<Mutex<Option<ConnectFailure>>>,
    ) -> Result<Router, Error> {
        config.validate()?;
        let seeds: Vec<HostPort> = config.url().hosts.clone();
        if seeds.is_empty() {
            return Err(Error::config("a cluster needs at least one seed node"));
        }
        let (changed, _) = tokio::sync::watch::channel(0);
        let shared = Arc::new(Shared {
            config: config.clone(),
            provider,
            seeds,
            tls: config.uses_tls(),
            table: RwLock::new(Arc::new(Table::empty())),
            nodes: Mutex::new(HashMap::new()),
            wake: tokio::sync::Notify::new(),
            changed,
            scripts: Arc::new(Mutex::new(Vec::new())),
            last_failure,
            refreshing: tokio::sync::Mutex::new(()),
        });
        for seed in shared.seeds.clone() {
            shared.node(&seed)?;
        }
        let refresher = tokio::spawn(refresh_loop(Arc::downgrade(&shared)));
        Ok(Router { shared, refresher })
    }

    /// Waits until a seed connected and the slot table is known, or `within` passed.
    /// Returns the first seed's connection error when none connected.
    pub(crate) async fn start(&self, within: Duration) -> Result<(), FredError> {
        let deadline = tokio::time::Instant::now() + within;
        let seeds: Vec<Arc<Node>> = {
            let nodes = lock(&self.shared.nodes);
            self.shared.seeds.iter().filter_map(|s| nodes.get(s).cloned()).collect()
        };
        let mut waits: FuturesUnordered<_> = seeds
            .iter()
            .map(|n| async move { n.client.wait_for_connect().await })
            .collect();
        let mut first_error = None;
        loop {
            match tokio::time::timeout_at(deadline, waits.next()).await {
                Ok(Some(Ok(()))) => break,
                Ok(Some(Err(e))) => {
                    first_error.get_or_insert(e);
                }
                Ok(None) => {
                    return Err(first_error.unwrap_or_else(|| FredError::new(FredKind::IO, "no seed connected")));
                }
                Err(_) => return Err(FredError::new(FredKind::Timeout, "no seed connected in time")),
            }
        }
        drop(waits);
        loop {
            match tokio::time::timeout_at(deadline, self.shared.refresh()).await {
                Ok(Ok(())) => break,
                Ok(Err(e)) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(_) => return Err(FredError::new(FredKind::Timeout, "the slot table did not load in time")),
            }
        }
        // The masters' clients were created by the refresh: give them the rest of the
        // deadline to connect, so that the first calls do not meet a connecting client.
        let masters = Arc::clone(&*self.shared.table.read().unwrap_or_else(|p| p.into_inner()));
        let _ = tokio::time::timeout_at(
            deadline,
            futures_util::future::join_all(masters.masters.iter().map(|n| n.client.wait_for_connect())),
        )
        .await;
        Ok(())
    }

    fn table(&self) -> Arc<Table> {
        Arc::clone(&*self.shared.table.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Sends `cmd` to the master of `slot`, following one `MOVED` or `ASK`.
    pub(crate) async fn call(&self, slot: u16, cmd: &Cmd) -> Result<Value, RouteError> {
        let table = self.table();
        let node = match table.owner(slot) {
            Some(n) if !n.down.load(Ordering::Acquire) => Arc::clone(n),
            other => {
                let node = other.map(|n| n.addr.clone());
                self.shared.wake.notify_one();
                return Err(RouteError::Unreachable {
                    slots: Ranges(table.ranges(|o| o.map(|n| &n.addr) == node.as_ref())),
                    node,
                    cause: None,
                });
            }
        };
        drop(table);
        match send(&node.client, cmd).await {
            Ok(v) => Ok(v),
            Err(e) if e.is_moved() || e.is_ask() => Box::pin(self.redirected(slot, cmd, &e)).await,
            Err(e) => Err(self.failed(&node, e)),
        }
    }

    /// Follows one redirection: `MOVED` updates the slot and re-sends, `ASK` sends
    /// `ASKING` + the command to the importing node.
    async fn redirected(&self, slot: u16, cmd: &Cmd, e: &FredError) -> Result<Value, RouteError> {
        let Some(target) = redirect_target(e) else {
            return Err(RouteError::Node {
                node: HostPort::new("?", 0),
                slots: Ranges(vec![(slot, slot)]),
                error: e.clone(),
            });
        };
        let node = self.shared.node(&target).map_err(|_| RouteError::Unreachable {
            node: Some(target.clone()),
            slots: Ranges(vec![(slot, slot)]),
            cause: Some(e.clone()),
        })?;
        let result = if e.is_moved() {
            self.shared.set_owner(slot, &node);
            self.shared.wake.notify_one();
            send(&node.client, cmd).await
        } else {
            let pipeline = node.client.pipeline();
            let asking = CustomCommand::new_static("ASKING", ClusterHash::Random, false);
            let queued = async {
                pipeline.custom::<(), _>(asking, Vec::<Value>::new()).await?;
                pipeline.custom::<(), _>(cmd.kind.clone(), cmd.args.clone()).await?;
                let mut all = pipeline.try_all::<Value>().await;
                all.pop()
                    .unwrap_or_else(|| Err(FredError::new(FredKind::Protocol, "no reply to ASK")))
            };
            queued.await
        };
        result.map_err(|e| self.failed(&node, e))
    }

    /// Marks `node` down on an outage and wakes the refresh; names its slots.
    fn failed(&self, node: &Arc<Node>, error: FredError) -> RouteError {
        if is_outage(&error) {
            node.down.store(true, Ordering::Release);
            self.shared.wake.notify_one();
        }
        let table = self.table();
        RouteError::Node {
            node: node.addr.clone(),
            slots: Ranges(table.ranges(|o| o.is_some_and(|o| Arc::ptr_eq(o, node)))),
            error,
        }
    }

    /// Whether the master of `slot` is known and reachable now.
    pub(crate) fn reaches(&self, slot: u16) -> bool {
        self.table().owner(slot).is_some_and(|n| n.reachable())
    }

    /// The slot ranges without a reachable master, with the unreachable masters.
    pub(crate) fn unreachable(&self) -> (Ranges, Vec<HostPort>) {
        let table = self.table();
        let ranges = table.ranges(|o| !o.is_some_and(|n| n.reachable()));
        let nodes = table
            .masters
            .iter()
            .filter(|n| !n.reachable())
            .map(|n| n.addr.clone())
            .collect();
        (Ranges(ranges), nodes)
    }

    /// Every master's client, with the slots it serves.
    pub(crate) fn masters(&self) -> Vec<(HostPort, Client, Ranges)> {
        let table = self.table();
        table
            .masters
            .iter()
            .map(|n| {
                let slots = Ranges(table.ranges(|o| o.is_some_and(|o| Arc::ptr_eq(o, n))));
                (n.addr.clone(), n.client.clone(), slots)
            })
            .filter(|(_, _, r)| !r.0.is_empty())
            .collect()
    }

    /// The client of `slot`'s master, if one is known.
    pub(crate) fn client_for(&self, slot: u16) -> Option<Client> {
        self.table().owner(slot).map(|n| n.client.clone())
    }

    /// Registers `lua` to be loaded on every node when it connects, and loads it on
    /// every connected node now. Fails only if no master took it.
    pub(crate) async fn load_script(&self, lua: Str) -> Result<(), FredError> {
        {
            let mut scripts = lock(&self.shared.scripts);
            if !scripts.contains(&lua) {
                scripts.push(lua.clone());
            }
        }
        let nodes: Vec<Arc<Node>> = lock(&self.shared.nodes).values().cloned().collect();
        let masters = self.table();
        let results = futures_util::future::join_all(nodes.iter().filter(|n| n.client.is_connected()).map(|n| {
            let lua = lua.clone();
            async move { (Arc::clone(n), n.client.script_load::<String, _>(lua).await) }
        }))
        .await;
        let mut error = None;
        for (node, r) in results {
            let master = masters.masters.iter().any(|m| Arc::ptr_eq(m, &node));
            match r {
                Ok(_) if master => return Ok(()),
                Err(e) if master && !is_outage(&e) => return Err(e),
                Err(e) if master => error = Some(e),
                _ => {}
            }
        }
        Err(error.unwrap_or_else(|| FredError::new(FredKind::IO, "no master is connected")))
    }

    /// What an operator must fix for the cluster to survive a failed master: each
    /// master's `cluster-require-full-coverage` (must be `no`), masters without an
    /// online replica, slots without a reachable master.
    pub(crate) async fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let (unreachable, down) = self.unreachable();
        if !unreachable.0.is_empty() {
            let nodes: Vec<String> = down.iter().map(ToString::to_string).collect();
            out.push(format!(
                "slots {unreachable} have no reachable master (down: {})",
                if nodes.is_empty() {
                    "none known".to_owned()
                } else {
                    nodes.join(", ")
                }
            ));
        }
        let masters = self.masters();
        for (addr, client, _) in &masters {
            let cmd = CustomCommand::new_static("CONFIG", ClusterHash::Random, false);
            let r: Result<Vec<String>, FredError> = tokio::time::timeout(
                ASK_NODE * 4,
                client.custom(cmd, vec!["GET", "cluster-require-full-coverage"]),
            )
            .await
            .unwrap_or_else(|_| Err(FredError::new(FredKind::Timeout, "no answer")));
            match r.as_deref() {
                Ok([_, v]) if v == "no" => {}
                Ok([_, v]) => out.push(format!(
                    "{addr}: cluster-require-full-coverage is {v}: one failed master then stops every \
                     master; set it to no"
                )),
                Ok(_) | Err(_) => out.push(format!(
                    "{addr}: could not read cluster-require-full-coverage (CONFIG GET refused or no \
                     answer); it must be no"
                )),
            }
        }
        if let Some((_, client, _)) = masters.first() {
            let cmd = CustomCommand::new_static("CLUSTER", ClusterHash::Random, false);
            if let Ok(Ok(v)) = tokio::time::timeout(ASK_NODE * 4, client.custom::<Value, _>(cmd, vec!["SHARDS"])).await
            {
                for (master, replicas) in replicas_per_shard(&v, self.shared.tls) {
                    if replicas == 0 {
                        out.push(format!(
                            "{master} has no online replica: its slots are unavailable until it is back"
                        ));
                    }
                }
            }
        }
        out
    }

    /// A counter bumped at every change of the slot table.
    pub(crate) fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.changed.subscribe()
    }

    /// Asks for a refresh now.
    pub(crate) fn wake(&self) {
        self.shared.wake.notify_one();
    }
}

/// Whether a fred error means the node did not answer (as opposed to an error reply).
fn is_outage(e: &FredError) -> bool {
    matches!(
        e.kind(),
        FredKind::IO | FredKind::Timeout | FredKind::Canceled | FredKind::Routing | FredKind::Backpressure
    ) || e.details().starts_with("CLUSTERDOWN")
        || e.details().starts_with("LOADING")
        || e.details().starts_with("TRYAGAIN")
        || (*e.kind() == FredKind::Unknown && crate::connection::is_connection_failure(e))
}

/// `MOVED 3999 127.0.0.1:6381` → the node.
fn redirect_target(e: &FredError) -> Option<HostPort> {
    let addr = e.details().split_whitespace().nth(2)?;
    let (host, port) = addr.rsplit_once(':')?;
    Some(HostPort::new(
        host.trim_start_matches('[').trim_end_matches(']'),
        port.parse().ok()?,
    ))
}

async fn refresh_loop(shared: std::sync::Weak<Shared>) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        let wait = if s.urgent() {
            CLUSTER_REFRESH_URGENT
        } else {
            CLUSTER_REFRESH
        };
        let wake = async {
            s.wake.notified().await;
            // Coalesce a burst of wake-ups (every call on a dead master asks).
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        tokio::select! {
            () = wake => {}
            () = tokio::time::sleep(wait) => {}
        }
        if let Err(e) = s.refresh().await {
            tracing::debug!(target: palisade_cache_core::EVENT_TARGET, error = %e, "cluster topology refresh failed");
        }
        drop(s);
    }
}

/// One node's answer: for each slot range, the address of its online master.
type View = Vec<(u16, u16, HostPort)>;

impl Shared {
    fn urgent(&self) -> bool {
        let table = Arc::clone(&*self.table.read().unwrap_or_else(|p| p.into_inner()));
        table.masters.iter().any(|n| !n.reachable()) || table.owner.contains(&NO_OWNER)
    }

    /// The client of `addr`, created (and connecting in the background) if new.
    fn node(self: &Arc<Self>, addr: &HostPort) -> Result<Arc<Node>, Error> {
        let mut nodes = lock(&self.nodes);
        if let Some(n) = nodes.get(addr) {
            return Ok(Arc::clone(n));
        }
        let node = Arc::new(self.build(addr)?);
        nodes.insert(addr.clone(), Arc::clone(&node));
        Ok(node)
    }

    fn build(&self, addr: &HostPort) -> Result<Node, Error> {
        let config = self.config.fred_node_config(addr, self.provider.clone())?;
        let client = self
            .config
            .builder(config, false)
            .build()
            .map_err(|e| Error::config(format!("cluster node {addr}: {}", e.details())))?;
        let mut tasks = Vec::new();
        let failures = Arc::clone(&self.last_failure);
        let on_error = client.on_error(move |(e, _)| {
            let failures = Arc::clone(&failures);
            async move {
                if let Some(f) = failure_of(&e) {
                    *lock(&failures) = Some(f);
                }
                Ok(())
            }
        });
        tasks.push(tokio::spawn(async move {
            let _ = on_error.await;
        }));
        // Every (re)connect, the first included: clear the failure, load the scripts.
        let failures = Arc::clone(&self.last_failure);
        let scripts = Arc::clone(&self.scripts);
        let loader = client.clone();
        let on_reconnect = client.on_reconnect(move |_| {
            let failures = Arc::clone(&failures);
            let scripts: Vec<Str> = lock(&scripts).clone();
            let client = loader.clone();
            async move {
                *lock(&failures) = None;
                // Spawned: this handler must not wait on the client it serves.
                tokio::spawn(async move {
                    for lua in scripts {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(2), client.script_load::<String, _>(lua)).await;
                    }
                });
                Ok(())
            }
        });
        tasks.push(tokio::spawn(async move {
            let _ = on_reconnect.await;
        }));
        let handle = client.connect();
        tasks.push(tokio::spawn(async move {
            let _ = handle.await;
        }));
        Ok(Node {
            addr: addr.clone(),
            client,
            down: AtomicBool::new(false),
            tasks,
        })
    }

    fn set_owner(&self, slot: u16, node: &Arc<Node>) {
        let mut guard = self.table.write().unwrap_or_else(|p| p.into_inner());
        let mut masters = guard.masters.clone();
        let index = match masters.iter().position(|m| Arc::ptr_eq(m, node)) {
            Some(i) => i,
            None => {
                masters.push(Arc::clone(node));
                masters.len() - 1
            }
        };
        let Ok(index) = u16::try_from(index) else { return };
        let mut owner = guard.owner.clone();
        owner[usize::from(slot)] = index;
        *guard = Arc::new(Table { owner, masters });
        drop(guard);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Asks every node for the topology, votes, and installs the new table.
    async fn refresh(self: &Arc<Self>) -> Result<(), FredError> {
        let _one = self.refreshing.lock().await;
        let mut nodes: Vec<Arc<Node>> = lock(&self.nodes).values().cloned().collect();
        if nodes.is_empty() {
            for seed in &self.seeds {
                if let Ok(n) = self.node(seed) {
                    nodes.push(n);
                }
            }
        }
        let asked = nodes.iter().filter(|n| n.client.is_connected()).map(|n| async move {
            let view = tokio::time::timeout(ASK_NODE, topology(&n.client, self.tls)).await;
            (Arc::clone(n), view)
        });
        // A node that is not connected is not asked, and not marked down for it: it may
        // be connecting for the first time. A call that fails on it marks it.
        let answers = futures_util::future::join_all(asked).await;
        let mut views = Vec::new();
        let mut last_error = None;
        for (node, answer) in answers {
            match answer {
                Ok(Ok(view)) => {
                    node.down.store(false, Ordering::Release);
                    views.push(view);
                }
                Ok(Err(e)) => {
                    if is_outage(&e) {
                        node.down.store(true, Ordering::Release);
                    }
                    last_error = Some(e);
                }
                Err(_) => {
                    node.down.store(true, Ordering::Release);
                    last_error = Some(FredError::new(
                        FredKind::Timeout,
                        format!("{} did not answer", node.addr),
                    ));
                }
            }
        }
        if views.is_empty() {
            return Err(last_error.unwrap_or_else(|| FredError::new(FredKind::IO, "no cluster node is connected")));
        }
        let table = self.vote(&views)?;
        let mut guard = self.table.write().unwrap_or_else(|p| p.into_inner());
        let changed = !guard.same_as(&table);
        if changed {
            *guard = Arc::new(table);
        }
        drop(guard);
        if changed {
            self.changed.send_modify(|n| *n += 1);
        }
        Ok(())
    }

    /// Each slot to the master most views name, or to none when at least as many views
    /// name no healthy master for it; nodes no view names are dropped.
    fn vote(self: &Arc<Self>, views: &[(View, Vec<HostPort>)]) -> Result<Table, FredError> {
        let mut addrs: Vec<HostPort> = Vec::new();
        let index = |addrs: &mut Vec<HostPort>, a: &HostPort| match addrs.iter().position(|x| x == a) {
            Some(i) => i,
            None => {
                addrs.push(a.clone());
                addrs.len() - 1
            }
        };
        let mut claims: Vec<Vec<u16>> = Vec::with_capacity(views.len());
        for (view, _) in views {
            let mut owner = vec![NO_OWNER; SLOTS];
            for (lo, hi, addr) in view {
                let i = u16::try_from(index(&mut addrs, addr)).unwrap_or(NO_OWNER);
                for s in *lo..=(*hi).min(SLOTS as u16 - 1) {
                    owner[usize::from(s)] = i;
                }
            }
            claims.push(owner);
        }
        let mut owner = vec![NO_OWNER; SLOTS].into_boxed_slice();
        for (s, slot_owner) in owner.iter_mut().enumerate() {
            // "No healthy master" is a vote too, and wins ties: a master the cluster has
            // flagged failed that resumes before its replica is promoted still claims its
            // slots in its own view, and would acknowledge writes its demotion discards.
            let nobody = claims.iter().filter(|o| o[s] == NO_OWNER).count();
            let mut best = (NO_OWNER, nobody);
            for c in &claims {
                let candidate = c[s];
                if candidate == NO_OWNER || candidate == best.0 {
                    continue;
                }
                let votes = claims.iter().filter(|o| o[s] == candidate).count();
                if votes > best.1 {
                    best = (candidate, votes);
                }
            }
            *slot_owner = best.0;
        }
        // Clients for every master and replica named; drop the others.
        let named: Vec<&HostPort> = views
            .iter()
            .flat_map(|(_, all)| all.iter())
            .chain(addrs.iter())
            .collect();
        let mut masters = Vec::with_capacity(addrs.len());
        for a in &addrs {
            masters.push(
                self.node(a)
                    .map_err(|e| FredError::new(FredKind::Config, e.to_string()))?,
            );
        }
        for a in &named {
            let _ = self.node(a);
        }
        lock(&self.nodes).retain(|a, _| named.contains(&a));
        Ok(Table { owner, masters })
    }
}

/// `CLUSTER SHARDS` (or `CLUSTER SLOTS`) of one node: its view, and every node named.
async fn topology(client: &Client, tls: bool) -> Result<(View, Vec<HostPort>), FredError> {
    let shards: Result<Value, FredError> = client
        .custom(
            CustomCommand::new_static("CLUSTER", ClusterHash::Random, false),
            vec!["SHARDS"],
        )
        .await;
    match shards {
        Ok(v) => Ok(parse_shards(&v, tls)),
        Err(e) if e.details().contains("unknown subcommand") || e.details().contains("Unknown subcommand") => {
            let v: Value = client
                .custom(
                    CustomCommand::new_static("CLUSTER", ClusterHash::Random, false),
                    vec!["SLOTS"],
                )
                .await?;
            Ok(parse_slots(&v))
        }
        Err(e) => Err(e),
    }
}

/// The field/value pairs of a RESP3 map or a RESP2 flat array.
fn fields(v: &Value) -> Vec<(String, &Value)> {
    match v {
        Value::Map(m) => m
            .iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v)))
            .collect(),
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|p| match p {
                [k, v] => Some((k.as_string()?, v)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn field<'a>(fields: &'a [(String, &'a Value)], name: &str) -> Option<&'a Value> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
}

fn parse_shards(v: &Value, tls: bool) -> (View, Vec<HostPort>) {
    let mut view = Vec::new();
    let mut all = Vec::new();
    let Value::Array(shards) = v else { return (view, all) };
    for shard in shards {
        let shard = fields(shard);
        let mut master = None;
        if let Some(Value::Array(nodes)) = field(&shard, "nodes") {
            for node in nodes {
                let node = fields(node);
                let text = |name| field(&node, name).and_then(Value::as_string);
                let port = if tls {
                    field(&node, "tls-port").or_else(|| field(&node, "port"))
                } else {
                    field(&node, "port")
                }
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok());
                let host = text("endpoint")
                    .filter(|e| !e.is_empty() && e != "?")
                    .or_else(|| text("ip"));
                let (Some(host), Some(port)) = (host, port) else {
                    continue;
                };
                let addr = HostPort::new(host, port);
                if text("role").as_deref() == Some("master") && text("health").as_deref() == Some("online") {
                    master = Some(addr.clone());
                }
                all.push(addr);
            }
        }
        let (Some(master), Some(Value::Array(slots))) = (master, field(&shard, "slots")) else {
            continue;
        };
        for pair in slots.chunks(2) {
            if let [lo, hi] = pair {
                if let (Some(lo), Some(hi)) = (lo.as_u64(), hi.as_u64()) {
                    if let (Ok(lo), Ok(hi)) = (u16::try_from(lo), u16::try_from(hi)) {
                        view.push((lo, hi, master.clone()));
                    }
                }
            }
        }
    }
    (view, all)
}

/// Each shard's online master and how many online replicas it has.
fn replicas_per_shard(v: &Value, tls: bool) -> Vec<(HostPort, usize)> {
    let Value::Array(shards) = v else { return Vec::new() };
    let mut out = Vec::new();
    for shard in shards {
        let shard = fields(shard);
        let Some(Value::Array(nodes)) = field(&shard, "nodes") else {
            continue;
        };
        let mut master = None;
        let mut replicas = 0;
        for node in nodes {
            let node = fields(node);
            let text = |name| field(&node, name).and_then(Value::as_string);
            let online = text("health").as_deref() == Some("online");
            match text("role").as_deref() {
                Some("master") if online => {
                    let port = if tls {
                        field(&node, "tls-port").or_else(|| field(&node, "port"))
                    } else {
                        field(&node, "port")
                    }
                    .and_then(Value::as_u64)
                    .and_then(|p| u16::try_from(p).ok())
                    .unwrap_or(0);
                    master = Some(HostPort::new(text("ip").unwrap_or_default(), port));
                }
                Some("replica") if online => replicas += 1,
                _ => {}
            }
        }
        if let Some(m) = master {
            out.push((m, replicas));
        }
    }
    out
}

fn parse_slots(v: &Value) -> (View, Vec<HostPort>) {
    let mut view = Vec::new();
    let mut all = Vec::new();
    let Value::Array(ranges) = v else { return (view, all) };
    for range in ranges {
        let Value::Array(parts) = range else { continue };
        let (Some(lo), Some(hi)) = (
            parts.first().and_then(Value::as_u64),
            parts.get(1).and_then(Value::as_u64),
        ) else {
            continue;
        };
        let addr_of = |v: &Value| -> Option<HostPort> {
            let Value::Array(n) = v else { return None };
            let host = n.first()?.as_string()?;
            let port = u16::try_from(n.get(1)?.as_u64()?).ok()?;
            Some(HostPort::new(host, port))
        };
        let nodes: Vec<HostPort> = parts.iter().skip(2).filter_map(addr_of).collect();
        if let (Some(master), Ok(lo), Ok(hi)) = (nodes.first(), u16::try_from(lo), u16::try_from(hi)) {
            view.push((lo, hi, master.clone()));
        }
        all.extend(nodes);
    }
    (view, all)
}

/// The endpoint a routed error names: the cluster, the node and its slots.
pub(crate) fn node_endpoint(cluster: &Endpoint, node: Option<&HostPort>, slots: &Ranges) -> Endpoint {
    match node {
        Some(n) => Endpoint::named(format!("{cluster} node {n} (slots {slots})")),
        None => Endpoint::named(format!("{cluster} (slots {slots}: no master known)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the exact shapes the cache and job store send become typed commands; the
    /// rest (scripts, options palisade does not send) stay custom, byte for byte.
    #[test]
    fn only_exact_shapes_become_typed_commands() {
        let v = |s: &str| Value::from(s);
        let (k, val) = (v("k"), v("value"));
        let cases: [(&str, Vec<Value>, Option<Typed>); 9] = [
            ("GET", vec![k.clone()], Some(Typed::Get)),
            ("DEL", vec![k.clone()], Some(Typed::Del)),
            ("EXISTS", vec![k.clone()], Some(Typed::Exists)),
            (
                "SET",
                vec![k.clone(), val.clone(), v("PX"), Value::Integer(5)],
                Some(Typed::Set { px: 5, nx: false }),
            ),
            (
                "SET",
                vec![k.clone(), val.clone(), v("PX"), Value::Integer(5), v("NX")],
                Some(Typed::Set { px: 5, nx: true }),
            ),
            ("SET", vec![k.clone(), val.clone(), v("EX"), Value::Integer(5)], None),
            (
                "SET",
                vec![k.clone(), val.clone(), v("PX"), Value::Integer(5), v("XX")],
                None,
            ),
            ("DEL", vec![k.clone(), v("k2")], None),
            ("EVALSHA", vec![v("sha"), Value::Integer(1), k], None),
        ];
        for (name, args, typed) in cases {
            assert_eq!(Typed::of(name, &args), typed, "{name} {args:?}");
        }
    }

    #[test]
    fn redirect_targets_parse() {
        let e = FredError::new(FredKind::Cluster, "MOVED 3999 127.0.0.1:6381");
        assert_eq!(redirect_target(&e), Some(HostPort::new("127.0.0.1", 6381)));
        let e = FredError::new(FredKind::Cluster, "ASK 1 [::1]:7000");
        assert_eq!(redirect_target(&e), Some(HostPort::new("::1", 7000)));
        assert_eq!(redirect_target(&FredError::new(FredKind::Cluster, "MOVED x")), None);
    }

    #[test]
    fn ranges_print_compactly() {
        assert_eq!(Ranges(vec![(0, 5460), (7, 7)]).to_string(), "0-5460,7");
    }

    #[test]
    fn slots_follow_hash_tags() {
        assert_eq!(slot_of("{user1000}.following"), slot_of("{user1000}.followers"));
        assert_eq!(slot_of("foo"), 12182);
    }

    fn s(x: &str) -> Value {
        Value::String(x.into())
    }

    #[test]
    fn shards_skip_failed_masters_and_pick_tls_ports() {
        let node = |port: i64, tls: i64, role: &str, health: &str| {
            Value::Array(vec![
                s("port"),
                Value::Integer(port),
                s("tls-port"),
                Value::Integer(tls),
                s("ip"),
                s("127.0.0.1"),
                s("endpoint"),
                s("127.0.0.1"),
                s("role"),
                s(role),
                s("health"),
                s(health),
            ])
        };
        let shard = |lo, hi, nodes| {
            Value::Array(vec![
                s("slots"),
                Value::Array(vec![Value::Integer(lo), Value::Integer(hi)]),
                s("nodes"),
                Value::Array(nodes),
            ])
        };
        let v = Value::Array(vec![
            shard(
                0,
                99,
                vec![node(1, 11, "master", "failed"), node(2, 12, "replica", "online")],
            ),
            shard(
                100,
                16383,
                vec![node(3, 13, "master", "online"), node(4, 14, "replica", "online")],
            ),
        ]);
        let (view, all) = parse_shards(&v, false);
        assert_eq!(view, vec![(100, 16383, HostPort::new("127.0.0.1", 3))]);
        assert_eq!(all.len(), 4);
        let (view, _) = parse_shards(&v, true);
        assert_eq!(view, vec![(100, 16383, HostPort::new("127.0.0.1", 13))]);
    }
}
