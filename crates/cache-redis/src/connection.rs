//! One fred client with deadlines, a reconnect policy that never gives up, and
//! palisade's error mapping. Shared by the cache, the job store and the throttle.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::error::{Error as FredError, ErrorKind as FredKind};
use fred::prelude::*;
use fred::types::ConnectHandle;
use fred::types::config::UnresponsiveConfig;
use palisade_cache_core::{Endpoint, Error};

/// Default deadline of `connect` (TCP connect, handshake and the first PING): 2 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long after the command deadline the outer timeout of [`RedisConnection::run`]
/// gives up on fred (which should have answered `Timeout` by then).
pub const BACKSTOP: Duration = Duration::from_millis(100);

/// Default deadline of every command: 500 ms.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

/// Where and how to connect.
///
/// # Behavior
///
/// - One URL (`redis://[user:password@]host:port[/db]`, `rediss://…`) is a standalone
///   server; `redis-cluster://…`, several comma-separated URLs, or [`RedisConfig::cluster`]
///   is a Redis Cluster (the seeds; the rest is discovered).
/// - `Debug` never shows a password.
#[derive(Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    urls: Vec<String>,
    /// Deadline of [`RedisConnection::connect`] (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// Deadline of every command (default [`DEFAULT_COMMAND_TIMEOUT`]).
    pub command_timeout: Duration,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("endpoint", &self.endpoint())
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .finish()
    }
}

fn with_scheme(s: &str) -> String {
    if s.contains("://") {
        s.to_owned()
    } else {
        format!("redis://{s}")
    }
}

impl RedisConfig {
    /// A configuration from one URL, or several comma-separated (a cluster's seeds).
    pub fn from_url(url: &str) -> Self {
        RedisConfig {
            urls: url
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(with_scheme)
                .collect(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
        }
    }

    /// A cluster from its seed nodes (`host:port` or URLs).
    pub fn cluster<S: AsRef<str>>(seeds: &[S]) -> Self {
        let mut c = RedisConfig::from_url(&seeds.iter().map(|s| s.as_ref()).collect::<Vec<_>>().join(","));
        if let [one] = c.urls.as_mut_slice() {
            if let Some(rest) = one.strip_prefix("redis://") {
                *one = format!("redis-cluster://{rest}");
            }
        }
        c
    }

    /// Sets the connect deadline.
    pub fn with_connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Sets the command deadline.
    pub fn with_command_timeout(mut self, d: Duration) -> Self {
        self.command_timeout = d;
        self
    }

    /// The redacted endpoint.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::url(&self.urls.join(","))
    }

    /// Whether this configuration names a cluster.
    pub fn is_cluster(&self) -> bool {
        self.urls.len() > 1 || self.urls.iter().any(|u| u.starts_with("redis-cluster://"))
    }

    fn fred_config(&self) -> Result<Config, Error> {
        let bad = |e: FredError| Error::config(format!("invalid Redis URL {}: {}", self.endpoint(), e.details()));
        let first = self.urls.first().ok_or_else(|| Error::config("no Redis URL given"))?;
        if self.urls.len() == 1 {
            return Config::from_url(first).map_err(bad);
        }
        let mut config = Config::from_url_centralized(first).map_err(bad)?;
        let mut hosts = Vec::with_capacity(self.urls.len());
        for url in &self.urls {
            match Config::from_url_centralized(url).map_err(bad)?.server {
                ServerConfig::Centralized { server } => hosts.push((server.host.to_string(), server.port)),
                _ => {
                    return Err(Error::config(format!("{} is not a host:port seed", Endpoint::url(url))));
                }
            }
        }
        config.server = ServerConfig::new_clustered(hosts);
        Ok(config)
    }

    fn builder(&self, fail_fast: bool) -> Result<Builder, Error> {
        let mut config = self.fred_config()?;
        config.fail_fast = fail_fast;
        let command_timeout = self.command_timeout;
        let connect_timeout = self.connect_timeout;
        let mut builder = Builder::from_config(config);
        builder
            // Never give up: 0 = retry forever, 50 ms .. 200 ms, exponential. The cap
            // bounds recovery after Redis returns: the supervisor keeps a PING queued
            // while fred reconnects, so the outage ends at the first reconnect that
            // succeeds (measured by `palisade load`: a 2 s cap made recovery take up to
            // 1.2 s; 250 ms, up to 252 ms). A refused connect costs nothing.
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 200, 2))
            .with_connection_config(|c| {
                c.connection_timeout = connect_timeout;
                c.internal_command_timeout = connect_timeout;
                // A command in flight when the socket dies is never sent again: a
                // replayed script (a throttle acquire) would not be idempotent.
                c.max_command_attempts = 1;
                // > 0 wedges the client at the first backpressure (measured).
                c.max_command_buffer_len = 0;
                // Detects a paused server (SIGSTOP) and reconnects; only effective
                // below the command timeout.
                c.unresponsive = UnresponsiveConfig {
                    max_timeout: Some(command_timeout.mul_f64(0.8)),
                    interval: (command_timeout / 5).max(Duration::from_millis(10)),
                };
            })
            .with_performance_config(|p| {
                // Without it fred queues commands silently for the whole outage.
                p.default_command_timeout = command_timeout;
            });
        Ok(builder)
    }
}

/// What `INFO` says about the server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerInfo {
    /// `redis_version`.
    pub version: String,
    /// Whether it is a Redis Cluster.
    pub cluster: bool,
}

/// A connection to Redis (standalone or Cluster) shared by palisade's Redis backends.
///
/// # Behavior
///
/// - [`RedisConnection::connect`] returns once the server answered `PING`, or fails with
///   [`Error::Unavailable`] / [`Error::Timeout`] within the connect deadline (refused,
///   unreachable, or a server that accepts TCP but never answers).
/// - [`RedisConnection::connect_lazy`] returns at once and keeps connecting in the
///   background (degraded mode starting while Redis is down).
/// - Every command returns within the command deadline (plus scheduling slack), also
///   while the server is killed or paused: fred's `default_command_timeout` bounds it,
///   and an outer `tokio::time::timeout` [`BACKSTOP`] later guarantees it (fred ignores
///   per-command timeouts for scripts). A command that timed out is never written
///   later by fred. Reconnection never gives up; a command in flight when the connection drops is
///   not re-sent.
/// - Dropping the last clone closes the connection (`QUIT`) and stops its task.
#[derive(Clone)]
pub struct RedisConnection {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    endpoint: Endpoint,
    command_timeout: Duration,
    cluster: bool,
    task: Mutex<Option<ConnectHandle>>,
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnection")
            .field("endpoint", &self.inner.endpoint)
            .field("cluster", &self.inner.cluster)
            .field("command_timeout", &self.inner.command_timeout)
            .finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        let client = self.client.clone();
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

impl RedisConnection {
    /// Connects and PINGs within `config.connect_timeout`.
    pub async fn connect(config: &RedisConfig) -> Result<Self, Error> {
        let started = Instant::now();
        let client = config
            .builder(true)?
            .build()
            .map_err(|e| map_error(&config.endpoint(), "connect", config.connect_timeout, e))?;
        let conn = RedisConnection::wrap(client, config);
        let deadline = config.connect_timeout;
        let init = tokio::time::timeout(deadline, conn.inner.client.init()).await;
        let handle = match init {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => return Err(map_error(&conn.inner.endpoint, "connect", deadline, e)),
            Err(_) => return Err(timeout(&conn.inner.endpoint, "connect", deadline)),
        };
        *conn.inner.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        let left = deadline.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
        match tokio::time::timeout(left, conn.inner.client.ping::<String>(None)).await {
            Ok(Ok(_)) => Ok(conn),
            Ok(Err(e)) => Err(map_error(&conn.inner.endpoint, "connect", deadline, e)),
            Err(_) => Err(timeout(&conn.inner.endpoint, "connect", deadline)),
        }
    }

    /// A connection that keeps trying in the background; commands fail with
    /// [`Error::Timeout`] until it is up. Fails only on an invalid configuration.
    pub fn connect_lazy(config: &RedisConfig) -> Result<Self, Error> {
        let client = config
            .builder(false)?
            .build()
            .map_err(|e| map_error(&config.endpoint(), "connect", config.connect_timeout, e))?;
        let conn = RedisConnection::wrap(client, config);
        let handle = conn.inner.client.connect();
        *conn.inner.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(conn)
    }

    fn wrap(client: Client, config: &RedisConfig) -> Self {
        RedisConnection {
            inner: Arc::new(Inner {
                client,
                endpoint: config.endpoint(),
                command_timeout: config.command_timeout,
                cluster: config.is_cluster(),
                task: Mutex::new(None),
            }),
        }
    }

    /// The fred client (for commands palisade does not wrap). Calls made on it directly
    /// are bounded only by fred's `default_command_timeout`.
    pub fn client(&self) -> &Client {
        &self.inner.client
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
        self.inner.cluster
    }

    /// Runs one command (or one pipeline) under the command deadline, mapping errors.
    ///
    /// fred's own `default_command_timeout` (the command deadline) fires first: it marks
    /// the command timed out, and fred then never writes it. The outer
    /// `tokio::time::timeout` is only a backstop, [`BACKSTOP`] later: had it fired
    /// first, dropping fred's future before fred marked the command, fred would have
    /// sent the command after reconnecting — a write reported as failed, applied
    /// seconds later (found by the strict kill test).
    pub async fn run<T>(&self, op: &'static str, fut: impl Future<Output = Result<T, FredError>>) -> Result<T, Error> {
        match tokio::time::timeout(self.inner.command_timeout + BACKSTOP, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(map_error(&self.inner.endpoint, op, self.inner.command_timeout, e)),
            Err(_) => Err(timeout(&self.inner.endpoint, op, self.inner.command_timeout)),
        }
    }

    /// `PING` under the command deadline.
    pub async fn ping(&self) -> Result<(), Error> {
        self.run("ping", self.inner.client.ping::<String>(None)).await.map(drop)
    }

    /// The server's version and whether it is a cluster (`INFO server`).
    pub async fn server_info(&self) -> Result<ServerInfo, Error> {
        let info: String = self
            .run("info", self.inner.client.info(Some(fred::types::InfoKind::Server)))
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
}

fn timeout(endpoint: &Endpoint, op: &'static str, after: Duration) -> Error {
    Error::Timeout {
        backend: endpoint.clone(),
        op,
        after,
    }
}

/// Server replies that mean "not serving right now" rather than "your command is wrong".
const UNAVAILABLE_REPLIES: [&str; 5] = ["LOADING", "CLUSTERDOWN", "MASTERDOWN", "TRYAGAIN", "READONLY"];

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

/// Maps a fred error to palisade's: decided once, here.
pub(crate) fn map_error(endpoint: &Endpoint, op: &'static str, after: Duration, e: FredError) -> Error {
    let unavailable = |e: FredError| Error::Unavailable {
        backend: endpoint.clone(),
        op,
        source: Box::new(e),
    };
    let starts = |list: &[&str]| list.iter().any(|p| e.details().starts_with(p));
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
        FredKind::Config | FredKind::Url | FredKind::Auth => Error::config(format!(
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
            K::Config
        );
    }
}
