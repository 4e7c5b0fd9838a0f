//! One fred client with deadlines, a reconnect policy that never gives up, and
//! palisade's error mapping. Shared by the cache, the job store and the throttle.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::bytes_utils::Str;
use fred::error::{Error as FredError, ErrorKind as FredKind};
use fred::prelude::*;
use fred::types::ConnectHandle;
use palisade_cache_core::{Endpoint, Error, HostPort, Topology};

use crate::RedisConfig;

/// How long after the command deadline the outer timeout of [`RedisConnection::run`]
/// gives up on fred (which should have answered `Timeout` by then).
pub const BACKSTOP: Duration = Duration::from_millis(100);

/// What `INFO` says about the server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerInfo {
    /// `redis_version`.
    pub version: String,
    /// Whether it is a Redis Cluster.
    pub cluster: bool,
}

/// What a connection is connected to, for `doctor` and operators (nothing secret).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The redacted endpoint.
    pub endpoint: Endpoint,
    /// `standalone`, `cluster` or `sentinel`.
    pub topology: &'static str,
    /// Whether TLS is on.
    pub tls: bool,
    /// The name the server's certificate was checked against (TLS only): the configured
    /// server name, or the host.
    pub tls_server_name: Option<String>,
    /// The ACL user, if one is configured (never the password).
    pub user: Option<String>,
    /// Sentinel only: the service name.
    pub sentinel_service: Option<String>,
    /// The server the client is connected to right now (Sentinel: the primary), if
    /// known.
    pub connected_to: Option<HostPort>,
}

/// A connection to Redis (standalone, Sentinel or Cluster) shared by palisade's Redis
/// backends.
///
/// # Behavior
///
/// - [`RedisConnection::connect`] returns once the server answered `PING`, or fails
///   within the connect deadline: [`Error::Unavailable`] / [`Error::Timeout`] (refused,
///   unreachable, a server that accepts TCP but never answers, a plain `redis://` URL
///   at a TLS port), [`Error::Tls`] (a certificate that is not trusted, expired or for
///   another name; a `rediss://` URL at a plain port), [`Error::Auth`] (wrong user or
///   password), [`Error::Config`] (a URL or a setting that cannot work, TLS asked for
///   without the `tls` feature).
/// - With TLS asked for, nothing is sent before the TLS handshake completed: the
///   password never travels in clear.
/// - [`RedisConnection::connect_lazy`] returns at once and keeps connecting in the
///   background (degraded mode starting while Redis is down); it fails only on an
///   invalid configuration.
/// - Every command returns within the command deadline (plus scheduling slack), also
///   while the server is killed or paused: fred's `default_command_timeout` bounds it,
///   and an outer `tokio::time::timeout` [`BACKSTOP`] later guarantees it (fred ignores
///   per-command timeouts for scripts). A command that timed out is never written
///   later by fred. Reconnection never gives up; a command in flight when the
///   connection drops is not re-sent.
/// - While the client reconnects and the last attempt failed on TLS or on the
///   credentials, a command that cannot be sent fails with that error
///   ([`Error::Tls`], [`Error::Auth`]) rather than a bare timeout: a rotated password
///   or certificate is named at runtime, not only at startup.
/// - Sentinel: the client asks the sentinels for the primary and checks `ROLE` at every
///   (re)connect; a watcher follows `+switch-master` on every sentinel and polls the
///   primary's address, and moves the connection when it changed. `READONLY`,
///   `MASTERDOWN` and `NOREPLICAS` replies are outages and move it too.
/// - Dropping the last clone closes the connection (`QUIT`) and stops its tasks.
#[derive(Clone)]
pub struct RedisConnection {
    inner: Arc<Inner>,
}

/// Why the last (re)connect attempt failed, when it was TLS or the credentials.
#[derive(Clone)]
pub(crate) enum ConnectFailure {
    Auth(FredError),
    Tls(FredError),
}

/// Where commands go: one fred client (standalone, Sentinel), or palisade's cluster
/// router over one client per node.
enum Route {
    One(Client),
    Cluster(crate::cluster::Router),
}

struct Inner {
    route: Route,
    endpoint: Endpoint,
    command_timeout: Duration,
    info: ConnectionInfo,
    task: Mutex<Option<ConnectHandle>>,
    last_failure: Arc<Mutex<Option<ConnectFailure>>>,
    watchers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    sentinel: Option<crate::sentinel::Watcher>,
    /// Connections of their own for blocking commands, opened on first use.
    dedicated: crate::dedicated::Pool,
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnection")
            .field("endpoint", &self.inner.endpoint)
            .field("topology", &self.inner.info.topology)
            .field("tls", &self.inner.info.tls)
            .field("command_timeout", &self.inner.command_timeout)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Drop for Inner {
    fn drop(&mut self) {
        let task = lock(&self.task).take();
        for w in lock(&self.watchers).drain(..) {
            w.abort();
        }
        // The router's nodes close themselves when it drops.
        let Route::One(client) = &self.route else { return };
        let client = client.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(1), client.quit()).await;
                    if let Some(t) = task {
                        t.abort();
                    }
                });
            }
            Err(_) => {
                if let Some(t) = task {
                    t.abort();
                }
            }
        }
    }
}

/// Whether a fred error is a TLS failure: fred reports a failed handshake as an IO
/// error carrying rustls's message.
fn is_tls_failure(e: &FredError) -> bool {
    #[cfg(feature = "tls")]
    if *e.kind() == FredKind::Tls {
        return true;
    }
    // rustls's `Error` variants, as fred prints the `io::Error` that carries one
    // (`Custom { kind: InvalidData, error: InvalidCertificate(UnknownIssuer) }`), and
    // their `Display` forms.
    const TLS_MESSAGES: [&str; 14] = [
        "InvalidCertificate",
        "AlertReceived",
        "InvalidMessage",
        "PeerIncompatible",
        "PeerMisbehaved",
        "NoCertificatesPresented",
        "InappropriateHandshakeMessage",
        "InappropriateMessage",
        "DecryptError",
        "invalid peer certificate",
        "received fatal alert",
        "peer is incompatible",
        "peer sent no certificates",
        "received corrupt message",
    ];
    *e.kind() == FredKind::IO && TLS_MESSAGES.iter().any(|m| e.details().contains(m))
}

pub(crate) fn failure_of(e: &FredError) -> Option<ConnectFailure> {
    if *e.kind() == FredKind::Auth {
        Some(ConnectFailure::Auth(e.clone()))
    } else if is_tls_failure(e) {
        Some(ConnectFailure::Tls(e.clone()))
    } else {
        None
    }
}

impl RedisConnection {
    /// Connects and PINGs within `config.connect_timeout`. A cluster connects once a
    /// seed answered and the slot table is known: a master that is down at startup
    /// costs only its own slots (see the crate docs).
    pub async fn connect(config: &RedisConfig) -> Result<Self, Error> {
        let started = Instant::now();
        let conn = RedisConnection::build(config, true)?;
        let deadline = config.connect_timeout;
        let client = match &conn.inner.route {
            Route::Cluster(router) => {
                return match router.start(deadline).await {
                    Ok(()) => Ok(conn),
                    Err(e) if *e.kind() == FredKind::Timeout => Err(conn.connect_timeout(deadline)),
                    Err(e) => Err(conn.connect_error(config, e)),
                };
            }
            Route::One(client) => client.clone(),
        };
        // Listening before the first connect: its TLS or credential failure, and the
        // server it reached, are seen too.
        conn.start_watchers(&client);
        let init = tokio::time::timeout(deadline, client.init()).await;
        let handle = match init {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => return Err(conn.connect_error(config, e)),
            Err(_) => return Err(conn.connect_timeout(deadline)),
        };
        *lock(&conn.inner.task) = Some(handle);
        let left = deadline.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
        match tokio::time::timeout(left, client.ping::<String>(None)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(conn.connect_error(config, e)),
            Err(_) => return Err(conn.connect_timeout(deadline)),
        }
        Ok(conn)
    }

    /// A connection that keeps trying in the background; commands fail with
    /// [`Error::Timeout`] (a cluster: [`Error::Unavailable`]) until it is up. Fails only
    /// on an invalid configuration.
    pub fn connect_lazy(config: &RedisConfig) -> Result<Self, Error> {
        let conn = RedisConnection::build(config, false)?;
        if let Route::One(client) = &conn.inner.route {
            conn.start_watchers(client);
            let handle = client.connect();
            *lock(&conn.inner.task) = Some(handle);
        }
        Ok(conn)
    }

    fn build(config: &RedisConfig, fail_fast: bool) -> Result<Self, Error> {
        let endpoint = config.endpoint();
        let provider = config.credential_provider();
        let last_failure = Arc::new(Mutex::new(None));
        let url = config.url();
        let route = match &url.topology {
            Topology::Cluster => Route::Cluster(crate::cluster::Router::new(
                config,
                provider.clone(),
                Arc::clone(&last_failure),
            )?),
            _ => {
                let fred_config = config.fred_config_with(provider.clone())?;
                Route::One(
                    config
                        .builder(fred_config, fail_fast)
                        .build()
                        .map_err(|e| map_error(&endpoint, "connect", config.connect_timeout, e))?,
                )
            }
        };
        let info = ConnectionInfo {
            endpoint: endpoint.clone(),
            topology: url.topology.as_str(),
            tls: url.tls,
            tls_server_name: url.tls.then(|| {
                config
                    .tls
                    .server_name
                    .clone()
                    .unwrap_or_else(|| url.hosts.first().map(|h| h.host.clone()).unwrap_or_default())
            }),
            user: url.username.clone(),
            sentinel_service: match &url.topology {
                Topology::Sentinel { service } => Some(service.clone()),
                _ => None,
            },
            connected_to: None,
        };
        let sentinel = match &url.topology {
            Topology::Sentinel { .. } => Some(crate::sentinel::Watcher::new(config, provider)?),
            _ => None,
        };
        Ok(RedisConnection {
            inner: Arc::new(Inner {
                route,
                endpoint,
                command_timeout: config.command_timeout,
                info,
                task: Mutex::new(None),
                last_failure,
                watchers: Mutex::new(Vec::new()),
                sentinel,
                dedicated: crate::dedicated::Pool::new(config),
            }),
        })
    }

    /// Records why reconnects fail (TLS, credentials) and forgets it once connected.
    fn start_watchers(&self, client: &Client) {
        let failures = Arc::clone(&self.inner.last_failure);
        let on_error = client.on_error(move |(e, _server)| {
            let failures = Arc::clone(&failures);
            async move {
                if let Some(f) = failure_of(&e) {
                    *lock(&failures) = Some(f);
                }
                Ok(())
            }
        });
        let failures = Arc::clone(&self.inner.last_failure);
        let on_reconnect = client.on_reconnect(move |_| {
            let failures = Arc::clone(&failures);
            async move {
                *lock(&failures) = None;
                Ok(())
            }
        });
        let mut watchers = lock(&self.inner.watchers);
        for handle in [on_error, on_reconnect] {
            watchers.push(tokio::spawn(async move {
                let _ = handle.await;
            }));
        }
        if let Some(sentinel) = &self.inner.sentinel {
            watchers.extend(sentinel.start(client.clone()));
        }
    }

    fn connect_error(&self, config: &RedisConfig, e: FredError) -> Error {
        let err = map_error(&self.inner.endpoint, "connect", config.connect_timeout, e);
        if err.kind() == palisade_cache_core::ErrorKind::Unavailable && !config.uses_tls() {
            tracing::debug!(
                target: palisade_cache_core::EVENT_TARGET,
                endpoint = %self.inner.endpoint,
                "connect failed; if that port speaks TLS, the URL must be rediss://"
            );
        }
        err
    }

    fn connect_timeout(&self, deadline: Duration) -> Error {
        // A TLS or credential failure seen while connecting is what the caller needs.
        match lock(&self.inner.last_failure).clone() {
            Some(f) => failure_error(&self.inner.endpoint, "connect", f),
            None => timeout(&self.inner.endpoint, "connect", deadline),
        }
    }

    /// The fred client of the node that serves `key` (standalone, Sentinel: the one
    /// client), for commands palisade does not wrap; `None` while a cluster knows no
    /// master for its slot. Calls made on it directly are not routed (a cluster's
    /// `MOVED` is returned as an error) and are bounded only by fred's
    /// `default_command_timeout`.
    pub fn client_for(&self, key: &str) -> Option<Client> {
        match &self.inner.route {
            Route::One(c) => Some(c.clone()),
            Route::Cluster(r) => r.client_for(crate::cluster::slot_of(key)),
        }
    }

    /// The redacted endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// The command deadline.
    pub fn command_timeout(&self) -> Duration {
        self.inner.command_timeout
    }

    /// Whether this is a cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.route, Route::Cluster(_))
    }

    /// The hash slot `key` lives on, on a cluster (`None` otherwise).
    pub fn slot_of(&self, key: &str) -> Option<u16> {
        self.is_cluster().then(|| crate::cluster::slot_of(key))
    }

    /// Whether the master of `slot` is known and reachable now (always true off a
    /// cluster). Decided from the router's state, without I/O.
    pub fn reaches(&self, slot: u16) -> bool {
        match &self.inner.route {
            Route::One(_) => true,
            Route::Cluster(r) => r.reaches(slot),
        }
    }

    /// A counter bumped at every change of a cluster's slot table (a promoted replica,
    /// a resharding); `None` off a cluster.
    pub fn topology_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        match &self.inner.route {
            Route::One(_) => None,
            Route::Cluster(r) => Some(r.changes()),
        }
    }

    /// What this connection is connected to (see [`ConnectionInfo`]).
    pub fn info(&self) -> ConnectionInfo {
        let mut info = self.inner.info.clone();
        info.connected_to = match (&self.inner.sentinel, &self.inner.route) {
            (Some(s), _) => s.current(),
            (None, Route::One(client)) => client
                .active_connections()
                .into_iter()
                .next()
                .map(|s| HostPort::new(s.host.to_string(), s.port)),
            (None, Route::Cluster(r)) => r.masters().into_iter().next().map(|(addr, _, _)| addr),
        };
        info
    }

    /// Whether the connection is up right now (a cluster: every slot has a reachable
    /// master), decided without I/O.
    pub fn is_connected(&self) -> bool {
        match &self.inner.route {
            Route::One(client) => client.is_connected(),
            Route::Cluster(router) => router.unreachable().0.0.is_empty(),
        }
    }

    /// The dedicated connections (blocking commands); see the crate docs.
    pub(crate) fn dedicated(&self) -> &crate::dedicated::Pool {
        &self.inner.dedicated
    }

    /// The state of the pool of dedicated connections (blocking waits): its bound, the
    /// connections open and idle, the calls that found it exhausted.
    pub fn dedicated_stats(&self) -> crate::PoolStats {
        self.inner.dedicated.stats()
    }

    /// Runs one command (or one pipeline) under the command deadline, mapping errors.
    ///
    /// fred's own `default_command_timeout` (the command deadline) fires first: it marks
    /// the command timed out, and fred then never writes it. The outer
    /// `tokio::time::timeout` is only a backstop, [`BACKSTOP`] later: had it fired
    /// first, dropping fred's future before fred marked the command, fred would have
    /// sent the command after reconnecting — a write reported as failed, applied
    /// seconds later (found by the strict kill test).
    ///
    /// Not an `async fn`: the [`Bounded`] future it returns holds `fut` once and adds
    /// one type level (an `async fn` taking a future holds it twice in a debug build;
    /// combinators nest so deep that a caller's `async fn` overflows rustc's layout
    /// depth limit).
    pub fn run<'a, T, F>(&'a self, op: &'static str, fut: F) -> Bounded<'a, F>
    where
        F: Future<Output = Result<T, FredError>> + 'a,
    {
        self.bounded(op, fut)
    }

    /// The deadline, the Sentinel gate and the naming of TLS / credential failures,
    /// around a call whose errors are fred's or already palisade's.
    fn bounded<'a, T, E: IntoError, F>(&'a self, op: &'static str, fut: F) -> Bounded<'a, F>
    where
        F: Future<Output = Result<T, E>> + 'a,
    {
        let gated = self
            .inner
            .sentinel
            .as_ref()
            .and_then(crate::sentinel::Watcher::gate)
            .map(|why| Error::Unavailable {
                backend: self.inner.endpoint.clone(),
                op,
                source: why.into(),
            });
        Bounded {
            conn: self,
            op,
            gated,
            timed: tokio::time::timeout(self.inner.command_timeout + BACKSTOP, fut),
        }
    }

    /// A fred error of the one client as palisade's; a Sentinel deployment moves on a
    /// reply that says the node is no longer the primary.
    fn fred_error(&self, op: &'static str, e: FredError) -> Error {
        if let (Some(sentinel), Route::One(client)) = (&self.inner.sentinel, &self.inner.route) {
            sentinel.on_reply_error(client, &e);
        }
        map_error(&self.inner.endpoint, op, self.inner.command_timeout, e)
    }

    /// The error a server's error reply `msg` to `op` is, as if the reply had come
    /// alone (a call of a batch answers its error in band; see `batch`).
    pub(crate) fn reply_error(&self, op: &'static str, msg: &str) -> Error {
        // As fred reads an error reply (`protocol::utils::pretty_error`, not public).
        let kind = match msg.split_whitespace().next().unwrap_or("") {
            "WRONGTYPE" => FredKind::InvalidArgument,
            "NOAUTH" | "WRONGPASS" => FredKind::Auth,
            "MOVED" | "ASK" | "CLUSTERDOWN" => FredKind::Cluster,
            _ => FredKind::Unknown,
        };
        self.fred_error(op, FredError::new(kind, msg.to_owned()))
    }

    /// Runs `name args…` on the node that serves `key` (its hash slot on a cluster,
    /// following one `MOVED` or `ASK`), under the command deadline. `args` is the whole
    /// argument list, the key included.
    pub async fn command<R: FromValue>(
        &self,
        op: &'static str,
        key: &str,
        name: &'static str,
        args: Vec<Value>,
    ) -> Result<R, Error> {
        self.execute(op, key, &crate::cluster::Cmd::new(name, args)).await
    }

    /// Runs `cmd` on the node serving `key`, converting the reply.
    pub(crate) async fn execute<R: FromValue>(
        &self,
        op: &'static str,
        key: &str,
        cmd: &crate::cluster::Cmd,
    ) -> Result<R, Error> {
        let v = match &self.inner.route {
            Route::One(client) => self.run(op, crate::cluster::send(client, cmd)).await?,
            Route::Cluster(router) => {
                let slot = crate::cluster::slot_of(key);
                // Boxed: the router's future (a redirection, a script reload) must not
                // grow every call's future, whichever topology it runs on.
                let call = Box::pin(router.call(slot, cmd));
                self.bounded(op, async { call.await.map_err(|e| self.route_error(op, e)) })
                    .await?
            }
        };
        R::from_value(v).map_err(|e| map_error(&self.inner.endpoint, op, self.inner.command_timeout, e))
    }

    fn route_error(&self, op: &'static str, e: crate::cluster::RouteError) -> Error {
        use crate::cluster::{RouteError, node_endpoint};
        match e {
            RouteError::Unreachable { node, slots, cause } => Error::Unavailable {
                backend: node_endpoint(&self.inner.endpoint, node.as_ref(), &slots),
                op,
                source: match cause {
                    Some(c) => Box::new(c),
                    None => "the master of these slots is unreachable".into(),
                },
            },
            RouteError::Node { node, slots, error } => map_error(
                &node_endpoint(&self.inner.endpoint, Some(&node), &slots),
                op,
                self.inner.command_timeout,
                error,
            ),
        }
    }

    /// Every master's client (one client off a cluster), to walk every key. Fails,
    /// naming the slots, when a slot has no reachable master: a walk that would skip
    /// them is not started.
    pub(crate) fn every_master(&self, op: &'static str) -> Result<Vec<Client>, Error> {
        match &self.inner.route {
            Route::One(client) => Ok(vec![client.clone()]),
            Route::Cluster(router) => {
                let (unreachable, _) = router.unreachable();
                if !unreachable.0.is_empty() {
                    return Err(self.route_error(
                        op,
                        crate::cluster::RouteError::Unreachable {
                            node: None,
                            slots: unreachable,
                            cause: None,
                        },
                    ));
                }
                Ok(router.masters().into_iter().map(|(_, c, _)| c).collect())
            }
        }
    }

    /// Loads a script on the server (every node of a cluster, and every node that
    /// joins later), under the command deadline.
    pub(crate) async fn load_script(&self, op: &'static str, lua: Str) -> Result<(), Error> {
        match &self.inner.route {
            Route::One(client) => self.run(op, client.script_load::<String, _>(lua)).await.map(drop),
            Route::Cluster(router) => self.run(op, router.load_script(lua)).await,
        }
    }

    /// An outage while the last reconnect failed on TLS or the credentials is reported
    /// as that failure.
    fn named_failure(&self, op: &'static str, e: Error) -> Error {
        let connected = match &self.inner.route {
            Route::One(client) => client.is_connected(),
            Route::Cluster(_) => false,
        };
        if !matches!(
            e.kind(),
            palisade_cache_core::ErrorKind::Timeout | palisade_cache_core::ErrorKind::Unavailable
        ) || connected
        {
            return e;
        }
        match lock(&self.inner.last_failure).clone() {
            Some(f) => failure_error(&self.inner.endpoint, op, f),
            None => e,
        }
    }

    /// `PING` under the command deadline. On a cluster: every master answers, and
    /// every slot has one; otherwise the error names the slots without one.
    pub async fn ping(&self) -> Result<(), Error> {
        match &self.inner.route {
            Route::One(client) => self.run("ping", client.ping::<String>(None)).await.map(drop),
            Route::Cluster(router) => {
                let masters = self.every_master("ping")?;
                let pings = masters.iter().map(|c| self.run("ping", c.ping::<String>(None)));
                for r in futures_util::future::join_all(pings).await {
                    if let Err(e) = r {
                        router.wake();
                        return Err(e);
                    }
                }
                // A master may have failed while we pinged the others.
                self.every_master("ping").map(drop)
            }
        }
    }

    /// What an operator must fix for a cluster to survive a failed master (see the
    /// crate docs: `cluster-require-full-coverage no`, a replica per master, every slot
    /// served); empty off a cluster and on a well-configured one.
    pub async fn cluster_warnings(&self) -> Vec<String> {
        match &self.inner.route {
            Route::One(_) => Vec::new(),
            Route::Cluster(router) => router.warnings().await,
        }
    }

    /// Any master's client (the one client off a cluster).
    fn any_client(&self, op: &'static str) -> Result<Client, Error> {
        match &self.inner.route {
            Route::One(client) => Ok(client.clone()),
            Route::Cluster(router) => {
                router
                    .masters()
                    .into_iter()
                    .next()
                    .map(|(_, c, _)| c)
                    .ok_or_else(|| Error::Unavailable {
                        backend: self.inner.endpoint.clone(),
                        op,
                        source: "no cluster master is known".into(),
                    })
            }
        }
    }

    /// The server's version and whether it is a cluster (`INFO server`).
    pub async fn server_info(&self) -> Result<ServerInfo, Error> {
        let client = self.any_client("info")?;
        let info: String = self
            .run("info", client.info(Some(fred::types::InfoKind::Server)))
            .await?;
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
                .map(|v| v.trim().to_owned())
        };
        Ok(ServerInfo {
            version: field("redis_version").unwrap_or_default(),
            cluster: field("redis_mode").as_deref() == Some("cluster"),
        })
    }

    /// The server's `ROLE` (`master`, `slave`, `sentinel`); a cluster: any master's.
    pub async fn role(&self) -> Result<String, Error> {
        let client = self.any_client("role")?;
        let v: Value = self
            .run("role", client.custom(fred::cmd!("ROLE"), Vec::<Value>::new()))
            .await?;
        Ok(match v {
            Value::Array(items) => items.first().and_then(|r| r.as_string()).unwrap_or_default(),
            other => other.as_string().unwrap_or_default(),
        })
    }
}

/// An error a bounded call can end with: fred's (mapped by the connection) or
/// palisade's (as is).
pub trait IntoError {
    /// The error as palisade's.
    #[doc(hidden)]
    fn into_error(self, conn: &RedisConnection, op: &'static str) -> Error;
}

impl IntoError for FredError {
    fn into_error(self, conn: &RedisConnection, op: &'static str) -> Error {
        conn.fred_error(op, self)
    }
}

impl IntoError for Error {
    fn into_error(self, _: &RedisConnection, _: &'static str) -> Error {
        self
    }
}

pin_project_lite::pin_project! {
    /// The future of [`RedisConnection::run`]: the call under the command deadline
    /// (plus [`BACKSTOP`]), its error mapped.
    #[must_use = "futures do nothing unless awaited"]
    pub struct Bounded<'a, F> {
        conn: &'a RedisConnection,
        op: &'static str,
        gated: Option<Error>,
        #[pin]
        timed: tokio::time::Timeout<F>,
    }
}

impl<T, E: IntoError, F: Future<Output = Result<T, E>>> Future for Bounded<'_, F> {
    type Output = Result<T, Error>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        let this = self.project();
        if let Some(e) = this.gated.take() {
            return Poll::Ready(Err(e));
        }
        let (conn, op) = (*this.conn, *this.op);
        let e = match std::task::ready!(this.timed.poll(cx)) {
            Ok(Ok(v)) => return Poll::Ready(Ok(v)),
            Ok(Err(e)) => e.into_error(conn, op),
            Err(_) => timeout(&conn.inner.endpoint, op, conn.inner.command_timeout),
        };
        Poll::Ready(Err(conn.named_failure(op, e)))
    }
}

fn failure_error(endpoint: &Endpoint, op: &'static str, f: ConnectFailure) -> Error {
    match f {
        ConnectFailure::Auth(e) => Error::Auth {
            backend: endpoint.clone(),
            op,
            source: Box::new(e),
        },
        ConnectFailure::Tls(e) => Error::Tls {
            backend: endpoint.clone(),
            op,
            source: Box::new(e),
        },
    }
}

fn timeout(endpoint: &Endpoint, op: &'static str, after: Duration) -> Error {
    Error::Timeout {
        backend: endpoint.clone(),
        op,
        after,
    }
}

/// Server replies that mean "not serving right now" rather than "your command is wrong".
const UNAVAILABLE_REPLIES: [&str; 6] = [
    "LOADING",
    "CLUSTERDOWN",
    "MASTERDOWN",
    "TRYAGAIN",
    "READONLY",
    "NOREPLICAS",
];

/// fred's own connection-state failures, which it reports as `ErrorKind::Unknown` — the
/// kind it also uses for a server's error reply. Seen in fred 10.1.0 when a command
/// meets a dead socket: `router/commands.rs` ("Failed to route command."),
/// `protocol/command.rs` ("Too many failed write attempts."), `protocol/connection.rs`
/// ("Missing response."), `router/utils.rs` ("Missing expected connection."),
/// `router/transactions.rs` ("Max attempts exceeded"). Found by the fault tests under
/// load: without this list degraded mode did not fail over for those calls.
const FRED_CONNECTION_FAILURES: [&str; 5] = [
    "Failed to route command",
    "Too many failed write attempts",
    "Missing response",
    "Missing expected connection",
    "Max attempts exceeded",
];

/// Whether `e` is one of fred's connection-state failures it reports as `Unknown`.
pub(crate) fn is_connection_failure(e: &FredError) -> bool {
    FRED_CONNECTION_FAILURES.iter().any(|p| e.details().starts_with(p))
}

/// Maps a fred error to palisade's: decided once, here.
pub(crate) fn map_error(endpoint: &Endpoint, op: &'static str, after: Duration, e: FredError) -> Error {
    let unavailable = |e: FredError| Error::Unavailable {
        backend: endpoint.clone(),
        op,
        source: Box::new(e),
    };
    let starts = |list: &[&str]| list.iter().any(|p| e.details().starts_with(p));
    if let Some(f) = failure_of(&e) {
        return failure_error(endpoint, op, f);
    }
    match e.kind() {
        FredKind::Timeout => timeout(endpoint, op, after),
        // `Protocol`: the peer's bytes are not RESP (the URL reaches another service, or
        // a proxy mangles frames); fred drops the connection, so it is an outage.
        FredKind::IO
        | FredKind::Canceled
        | FredKind::Routing
        | FredKind::Cluster
        | FredKind::Backpressure
        | FredKind::Protocol => unavailable(e),
        FredKind::Config | FredKind::Url => Error::config(format!(
            "Redis at {endpoint} refused the configuration during `{op}`: {}",
            e.details()
        )),
        _ if starts(&UNAVAILABLE_REPLIES) => unavailable(e),
        FredKind::Unknown if starts(&FRED_CONNECTION_FAILURES) => unavailable(e),
        _ => Error::Backend {
            backend: endpoint.clone(),
            op,
            source: Box::new(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(kind: FredKind, details: &str) -> palisade_cache_core::ErrorKind {
        map_error(
            &Endpoint::named("redis"),
            "op",
            Duration::from_millis(1),
            FredError::new(kind, details.to_owned()),
        )
        .kind()
    }

    #[test]
    fn connection_failures_are_outages() {
        use palisade_cache_core::ErrorKind as K;
        assert_eq!(kind_of(FredKind::Timeout, "Request timed out."), K::Timeout);
        for k in [
            FredKind::IO,
            FredKind::Canceled,
            FredKind::Routing,
            FredKind::Cluster,
            FredKind::Backpressure,
            FredKind::Protocol,
        ] {
            assert_eq!(kind_of(k.clone(), "x"), K::Unavailable, "{k:?}");
        }
        for msg in FRED_CONNECTION_FAILURES {
            assert_eq!(kind_of(FredKind::Unknown, &format!("{msg}.")), K::Unavailable, "{msg}");
        }
        for reply in [
            "LOADING Redis is loading the dataset in memory",
            "CLUSTERDOWN The cluster is down",
            "READONLY You can't write against a read only replica.",
        ] {
            assert_eq!(kind_of(FredKind::Unknown, reply), K::Unavailable, "{reply}");
        }
    }

    #[test]
    fn error_replies_and_unconvertible_values_are_backend_errors_not_outages() {
        use palisade_cache_core::ErrorKind as K;
        assert_eq!(
            kind_of(
                FredKind::InvalidArgument,
                "WRONGTYPE Operation against a key holding the wrong kind of value"
            ),
            K::Backend
        );
        assert_eq!(kind_of(FredKind::Unknown, "ERR unknown command"), K::Backend);
        assert_eq!(kind_of(FredKind::Unknown, "NOSCRIPT No matching script."), K::Backend);
        assert_eq!(kind_of(FredKind::Parse, "Could not convert to map."), K::Backend);
        assert_eq!(
            kind_of(FredKind::Auth, "WRONGPASS invalid username-password pair"),
            K::Auth
        );
        assert_eq!(kind_of(FredKind::IO, "invalid peer certificate: Expired"), K::Tls);
        assert_eq!(
            kind_of(FredKind::Unknown, "NOREPLICAS Not enough good replicas"),
            K::Unavailable
        );
    }
}
#[cfg(test)]
mod future_size {
    use super::*;

    /// Every call goes through `run` and `execute`: they must hold the command's future
    /// once, not once per layer (an `async fn` taking a future held it twice, and the
    /// debug-build futures of the job suite overflowed a test thread's stack).
    #[tokio::test]
    async fn the_deadline_layers_do_not_copy_the_command_future() {
        let conn = RedisConnection::connect_lazy(&RedisConfig::from_url("redis://127.0.0.1:1").unwrap()).unwrap();
        let client = conn.client_for("k").unwrap();
        let cmd = crate::cluster::Cmd::new("GET", vec![]);
        let send = std::mem::size_of_val(&crate::cluster::send(&client, &cmd));
        let run = std::mem::size_of_val(&conn.run("get", crate::cluster::send(&client, &cmd)));
        let execute = std::mem::size_of_val(&conn.execute::<Value>("get", "k", &cmd));
        assert!(run < send + 1024, "run {run} B over a {send} B command");
        assert!(execute < send + 1024, "execute {execute} B over a {send} B command");
    }
}
