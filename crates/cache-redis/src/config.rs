//! Where and how to connect: a parsed URL, credentials, TLS and deadlines, turned into
//! fred's configuration in one place.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::prelude::*;
use fred::types::config::UnresponsiveConfig;
use palisade_cache_core::{Endpoint, Error, HostPort, RedisUrl, Secret, Topology};

/// Default deadline of `connect` (TCP connect, TLS handshake, `AUTH` and the first
/// `PING`): 2 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Default deadline of every command: 500 ms.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

/// Default period of the Sentinel watcher's poll of the primary's address: 2 s.
pub const DEFAULT_SENTINEL_POLL: Duration = Duration::from_secs(2);

/// TLS settings beyond the `rediss://` scheme.
///
/// # Behavior
///
/// - Trust: the platform's root certificates unless `ca_file` is set, in which case
///   only the certificates of that PEM file are trusted.
/// - `client_cert_file` and `client_key_file` (PEM) enable mutual TLS; one without the
///   other is [`Error::Config`].
/// - The server's certificate must name the host of the URL (a DNS name, or an IP
///   address as an IP SAN), or `server_name` when it is set (also used for every node a
///   Cluster reports).
/// - Any of these settings with a URL that does not ask for TLS is [`Error::Config`]:
///   say `rediss://`.
/// - `Debug` shows the paths, never the content of a file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsOptions {
    /// A PEM file of the certificates to trust instead of the platform's roots.
    pub ca_file: Option<PathBuf>,
    /// A PEM file with the client certificate chain (mutual TLS).
    pub client_cert_file: Option<PathBuf>,
    /// A PEM file with the client's private key (mutual TLS).
    pub client_key_file: Option<PathBuf>,
    /// The name the server's certificate must carry, when it is not the URL's host.
    pub server_name: Option<String>,
}

impl TlsOptions {
    /// Whether any setting is given.
    pub fn is_set(&self) -> bool {
        self.ca_file.is_some()
            || self.client_cert_file.is_some()
            || self.client_key_file.is_some()
            || self.server_name.is_some()
    }
}

/// Where and how to connect.
///
/// # Behavior
///
/// - Built from one Redis URL (see [`RedisUrl`] for every accepted form: standalone,
///   `rediss://`, cluster seeds, Sentinel) or with [`RedisConfig::cluster`] /
///   [`RedisConfig::sentinel`]; a URL that does not parse is [`Error::Config`].
/// - A URL asking for TLS, or any [`TlsOptions`], in a build without the `tls` feature
///   is [`Error::Config`] naming the feature, when the connection is made: palisade
///   never connects in plain TCP when TLS was asked for.
/// - A password comes from the URL or from a file ([`RedisConfig::with_password_file`],
///   read at each connect, one trailing newline dropped), never both
///   ([`Error::Config`]).
/// - `Debug` never shows a password or a file's content.
#[derive(Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    url: RedisUrl,
    /// Deadline of [`RedisConnection::connect`](crate::RedisConnection::connect)
    /// (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// Deadline of every command (default [`DEFAULT_COMMAND_TIMEOUT`]).
    pub command_timeout: Duration,
    /// TLS settings (used when the URL asks for TLS).
    pub tls: TlsOptions,
    /// Sentinel: how often the watcher asks the sentinels where the primary is, besides
    /// listening to `+switch-master` (default [`DEFAULT_SENTINEL_POLL`]).
    pub sentinel_poll: Duration,
    /// The most dedicated connections (blocking waits) open at once (default
    /// [`DEFAULT_DEDICATED_POOL_SIZE`](crate::DEFAULT_DEDICATED_POOL_SIZE)); see the
    /// crate docs, "Dedicated connections".
    pub dedicated_pool_size: u32,
    password_file: Option<PathBuf>,
    sentinel_username: Option<String>,
    sentinel_password: Option<Secret>,
    sentinel_password_file: Option<PathBuf>,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("endpoint", &self.endpoint())
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("dedicated_pool_size", &self.dedicated_pool_size)
            .field("tls", &self.tls)
            .field("password_file", &self.password_file)
            .field("sentinel_username", &self.sentinel_username)
            .field("sentinel_password", &self.sentinel_password)
            .field("sentinel_password_file", &self.sentinel_password_file)
            .finish()
    }
}

/// Reads a secret from a file: the whole content minus one trailing newline.
pub(crate) fn read_secret(path: &Path, what: &str) -> Result<Secret, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::config(format!("cannot read the {what} file {}: {}", path.display(), e.kind())))?;
    let text = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if text.is_empty() {
        return Err(Error::config(format!("the {what} file {} is empty", path.display())));
    }
    Ok(Secret::new(text))
}

impl RedisConfig {
    fn from_parsed(url: RedisUrl) -> Self {
        RedisConfig {
            url,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            tls: TlsOptions::default(),
            sentinel_poll: DEFAULT_SENTINEL_POLL,
            dedicated_pool_size: crate::DEFAULT_DEDICATED_POOL_SIZE,
            password_file: None,
            sentinel_username: None,
            sentinel_password: None,
            sentinel_password_file: None,
        }
    }

    /// A configuration from one URL, or several comma-separated (a cluster's seeds).
    pub fn from_url(url: &str) -> Result<Self, Error> {
        Ok(Self::from_parsed(RedisUrl::parse(url)?))
    }

    /// A cluster from its seed nodes (`host:port` or URLs); one seed is enough.
    pub fn cluster<S: AsRef<str>>(seeds: &[S]) -> Result<Self, Error> {
        let joined: Vec<&str> = seeds.iter().map(AsRef::as_ref).collect();
        let mut url = RedisUrl::parse(&joined.join(","))?;
        match url.topology {
            Topology::Standalone | Topology::Cluster => url.topology = Topology::Cluster,
            _ => return Err(Error::config("a cluster's seeds cannot be sentinels")),
        }
        Ok(Self::from_parsed(url))
    }

    /// A primary found through the sentinels `sentinels` (`host[:port]`, default port
    /// 26379, or `redis://` / `rediss://` URLs carrying the data nodes' credentials)
    /// under the service name `service`.
    pub fn sentinel<S: AsRef<str>>(service: &str, sentinels: &[S]) -> Result<Self, Error> {
        let mut tls: Option<bool> = None;
        let mut parts = Vec::with_capacity(sentinels.len());
        for seed in sentinels.iter().map(|s| s.as_ref().trim()) {
            let (this, rest) = match (seed.strip_prefix("rediss://"), seed.strip_prefix("redis://")) {
                (Some(rest), _) => (Some(true), rest),
                (None, Some(rest)) => (Some(false), rest),
                (None, None) => (None, seed),
            };
            match (tls, this) {
                (Some(a), Some(b)) if a != b => {
                    return Err(Error::config(
                        "the sentinel seeds disagree on TLS (redis:// and rediss://)",
                    ));
                }
                (None, Some(b)) => tls = Some(b),
                _ => {}
            }
            parts.push(rest.trim_end_matches('/'));
        }
        let tls = tls.unwrap_or(false);
        let scheme = if tls { "rediss-sentinel" } else { "redis-sentinel" };
        // One URL, parsed by the one parser: sentinel ports default to 26379 there.
        Self::from_url(&format!("{scheme}://{}/{service}", parts.join(",")))
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

    /// Sets the bound of the dedicated pool (at least 1).
    pub fn with_dedicated_pool_size(mut self, n: u32) -> Self {
        self.dedicated_pool_size = n.max(1);
        self
    }

    /// Sets the TLS options.
    pub fn with_tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// Reads the password from `path` at each connect (a secrets-manager mount), instead
    /// of the URL.
    pub fn with_password_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.password_file = Some(path.into());
        self
    }

    /// Credentials for the sentinels themselves (default: none, or the URL's when the
    /// sentinels share the data nodes' ACL — see the crate docs).
    pub fn with_sentinel_auth(mut self, username: Option<&str>, password: Secret) -> Self {
        self.sentinel_username = username.map(str::to_owned);
        self.sentinel_password = Some(password);
        self
    }

    /// Reads the sentinels' password from `path` at each connect.
    pub fn with_sentinel_password_file(mut self, username: Option<&str>, path: impl Into<PathBuf>) -> Self {
        self.sentinel_username = username.map(str::to_owned);
        self.sentinel_password_file = Some(path.into());
        self
    }

    /// Sets the Sentinel watcher's poll period.
    pub fn with_sentinel_poll(mut self, d: Duration) -> Self {
        self.sentinel_poll = d;
        self
    }

    /// The parsed URL (its password is a [`Secret`]).
    pub fn url(&self) -> &RedisUrl {
        &self.url
    }

    /// The redacted endpoint.
    pub fn endpoint(&self) -> Endpoint {
        self.url.endpoint()
    }

    /// Whether this configuration names a cluster.
    pub fn is_cluster(&self) -> bool {
        self.url.topology == Topology::Cluster
    }

    /// Whether TLS is asked for.
    pub fn uses_tls(&self) -> bool {
        self.url.tls
    }

    /// The password to send: the URL's or the file's.
    pub(crate) fn password(&self) -> Result<Option<Secret>, Error> {
        match (&self.url.password, &self.password_file) {
            (Some(_), Some(_)) => Err(Error::config(
                "a Redis password is given both in the URL and as a password file: give one",
            )),
            (Some(p), None) => Ok(Some(p.clone())),
            (None, Some(path)) => read_secret(path, "Redis password").map(Some),
            (None, None) => Ok(None),
        }
    }

    pub(crate) fn sentinel_credentials(&self) -> Result<(Option<String>, Option<Secret>), Error> {
        let password = match (&self.sentinel_password, &self.sentinel_password_file) {
            (Some(_), Some(_)) => {
                return Err(Error::config(
                    "a sentinel password is given both directly and as a file: give one",
                ));
            }
            (Some(p), None) => Some(p.clone()),
            (None, Some(path)) => Some(read_secret(path, "sentinel password")?),
            (None, None) => None,
        };
        Ok((self.sentinel_username.clone(), password))
    }

    /// Checks what can be checked without a network: every deadline more than 0 and at
    /// most [`MAX_DEADLINE`](palisade_cache_core::limits::MAX_DEADLINE) (the fields are
    /// public; past that bound a deadline's arithmetic could overflow), TLS asked for
    /// and compiled in, settings consistent, password files readable.
    pub fn validate(&self) -> Result<(), Error> {
        use palisade_cache_core::limits::MAX_DEADLINE;
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("command_timeout", self.command_timeout),
            ("sentinel_poll", self.sentinel_poll),
        ] {
            if d.is_zero() || d > MAX_DEADLINE {
                return Err(Error::config(format!(
                    "`{name}` must be more than 0 and at most {} s (got {d:?})",
                    MAX_DEADLINE.as_secs()
                )));
            }
        }
        if self.tls.is_set() && !self.url.tls {
            return Err(Error::config(
                "TLS settings (CA file, client certificate, server name) are given for a URL that does \
                 not ask for TLS: use rediss:// (or rediss-cluster://, rediss-sentinel://)",
            ));
        }
        if self.url.tls && !cfg!(feature = "tls") {
            return Err(Error::config(format!(
                "{} asks for TLS, but palisade-cache-redis was built without its `tls` feature \
                 (enable `palisade/tls`); palisade never falls back to plain TCP",
                self.endpoint()
            )));
        }
        if self.tls.client_cert_file.is_some() != self.tls.client_key_file.is_some() {
            return Err(Error::config(
                "mutual TLS needs both a client certificate file and a client key file",
            ));
        }
        self.password()?;
        self.sentinel_credentials()?;
        Ok(())
    }

    fn server(&self, hp: &palisade_cache_core::HostPort) -> Server {
        #[allow(unused_mut)]
        let mut server = Server::new(hp.host.as_str(), hp.port);
        #[cfg(feature = "tls")]
        if let Some(name) = &self.tls.server_name {
            server.tls_server_name = Some(name.as_str().into());
        }
        server
    }

    /// The credential provider fred asks at every (re)connect, when a password comes
    /// from a file: a rotated secrets mount is picked up by the next reconnect.
    pub(crate) fn credential_provider(&self) -> Option<Arc<FileCredentials>> {
        if self.password_file.is_none() && self.sentinel_password_file.is_none() {
            return None;
        }
        let source = |direct: &Option<Secret>, file: &Option<PathBuf>| match (direct, file) {
            (_, Some(path)) => Some(PasswordSource::File(path.clone())),
            (Some(p), None) => Some(PasswordSource::Direct(p.clone())),
            (None, None) => None,
        };
        let sentinels = match &self.url.topology {
            Topology::Sentinel { .. } => self.url.hosts.iter().cloned().collect(),
            _ => HashSet::new(),
        };
        Some(Arc::new(FileCredentials {
            user: self.url.username.clone(),
            password: source(&self.url.password, &self.password_file),
            sentinel_user: self.sentinel_username.clone(),
            sentinel_password: source(&self.sentinel_password, &self.sentinel_password_file),
            sentinels: Mutex::new(sentinels),
        }))
    }

    /// fred's configuration for the data nodes, with `provider` (from
    /// [`RedisConfig::credential_provider`]) asked for the credentials.
    pub(crate) fn fred_config_with(&self, provider: Option<Arc<FileCredentials>>) -> Result<Config, Error> {
        self.validate()?;
        let hosts = self.url.hosts.iter().map(|hp| self.server(hp));
        let server = match &self.url.topology {
            Topology::Standalone => ServerConfig::Centralized {
                server: hosts
                    .clone()
                    .next()
                    .ok_or_else(|| Error::config("no Redis host given"))?,
            },
            Topology::Cluster => ServerConfig::Clustered {
                hosts: hosts.collect(),
                policy: Default::default(),
            },
            Topology::Sentinel { service } => {
                let (username, password) = self.sentinel_credentials()?;
                ServerConfig::Sentinel {
                    hosts: hosts.collect(),
                    service_name: service.clone(),
                    username,
                    password: password.map(|p| p.expose().to_owned()),
                }
            }
            _ => return Err(Error::config("this Redis topology is not supported")),
        };
        Ok(Config {
            server,
            username: self.url.username.clone(),
            password: self.password()?.map(|p| p.expose().to_owned()),
            database: self.url.db,
            credential_provider: provider.map(|p| p as Arc<dyn fred::types::config::CredentialProvider>),
            #[cfg(feature = "tls")]
            tls: if self.url.tls {
                Some(crate::tls::fred_tls(&self.tls)?)
            } else {
                None
            },
            ..Config::default()
        })
    }

    /// fred's configuration for one cluster node at `addr` (palisade's own cluster
    /// routing: a plain client per node, with the cluster's credentials and TLS).
    pub(crate) fn fred_node_config(
        &self,
        addr: &HostPort,
        provider: Option<Arc<FileCredentials>>,
    ) -> Result<Config, Error> {
        let mut config = self.fred_config_with(provider)?;
        config.server = ServerConfig::Centralized {
            server: self.server(addr),
        };
        Ok(config)
    }

    /// A fred builder with palisade's connection policy.
    pub(crate) fn builder(&self, config: Config, fail_fast: bool) -> Builder {
        let command_timeout = self.command_timeout;
        let connect_timeout = self.connect_timeout;
        let mut config = config;
        config.fail_fast = fail_fast;
        let mut builder = Builder::from_config(config);
        builder
            // Never give up: 0 = retry forever, 50 ms .. 200 ms, exponential. The cap
            // bounds recovery after Redis returns: the supervisor keeps a PING queued
            // while fred reconnects, so the outage ends at the first reconnect that
            // succeeds (measured by `palisade load`: a 2 s cap made recovery take up to
            // 1.2 s; 250 ms, up to 252 ms). A refused connect costs nothing.
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 200, 2))
            .with_connection_config(|c| {
                // TCP connect and TLS handshake.
                c.connection_timeout = connect_timeout;
                // The commands of a (re)connect (HELLO/AUTH, ROLE, CLUSTER SLOTS) are
                // commands like any other: the command deadline bounds them. With the
                // connect deadline instead, a reconnect stuck on a paused Sentinel
                // primary held fred for 1.5 s after the failover was announced.
                c.internal_command_timeout = command_timeout.max(Duration::from_millis(100)).min(connect_timeout);
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
        builder
    }
}

#[derive(Debug, Clone)]
enum PasswordSource {
    Direct(Secret),
    File(PathBuf),
}

impl PasswordSource {
    fn read(&self) -> Result<String, fred::error::Error> {
        match self {
            PasswordSource::Direct(s) => Ok(s.expose().to_owned()),
            PasswordSource::File(path) => read_secret(path, "password")
                .map(|s| s.expose().to_owned())
                // An unreadable password file refuses the connection like a wrong
                // password: it is reported as `Error::Auth`, and retried.
                .map_err(|e| fred::error::Error::new(fred::error::ErrorKind::Auth, e.to_string())),
        }
    }
}

/// Credentials read at every (re)connect; the sentinels (the seeds, and those the
/// watcher learns) get theirs, every other server the data nodes'.
#[derive(Debug)]
pub(crate) struct FileCredentials {
    user: Option<String>,
    password: Option<PasswordSource>,
    sentinel_user: Option<String>,
    sentinel_password: Option<PasswordSource>,
    sentinels: Mutex<HashSet<HostPort>>,
}

impl FileCredentials {
    /// Remembers that `hp` is a sentinel.
    pub(crate) fn add_sentinel(&self, hp: HostPort) {
        self.sentinels.lock().unwrap_or_else(|p| p.into_inner()).insert(hp);
    }
}

#[async_trait::async_trait]
impl fred::types::config::CredentialProvider for FileCredentials {
    async fn fetch(&self, server: Option<&Server>) -> Result<(Option<String>, Option<String>), fred::error::Error> {
        let sentinel = server.is_some_and(|s| {
            self.sentinels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&HostPort::new(s.host.to_string(), s.port))
        });
        let (user, password) = if sentinel {
            (&self.sentinel_user, &self.sentinel_password)
        } else {
            (&self.user, &self.password)
        };
        Ok((user.clone(), password.as_ref().map(PasswordSource::read).transpose()?))
    }
}

#[cfg(test)]
mod deadline_bounds {
    use palisade_cache_core::limits::MAX_DEADLINE;

    use super::*;
    use crate::RedisConnection;

    /// A deadline field set to anything: out of `(0, MAX_DEADLINE]` the connection is
    /// refused as `Config`, naming the field, on every topology — before any deadline
    /// is computed from it (`Duration::MAX` + the backstop would panic).
    #[tokio::test]
    async fn a_deadline_out_of_bounds_is_a_config_error_on_every_topology() {
        let urls = [
            "redis://127.0.0.1:1",
            "redis-cluster://127.0.0.1:1",
            "redis-sentinel://127.0.0.1:1/mymaster",
        ];
        type Field = fn(&mut RedisConfig) -> &mut Duration;
        let fields: [(&str, Field); 3] = [
            ("connect_timeout", |c| &mut c.connect_timeout),
            ("command_timeout", |c| &mut c.command_timeout),
            ("sentinel_poll", |c| &mut c.sentinel_poll),
        ];
        for url in urls {
            for (name, field) in fields {
                for bad in [Duration::ZERO, MAX_DEADLINE + Duration::from_nanos(1), Duration::MAX] {
                    let mut config = RedisConfig::from_url(url).unwrap();
                    *field(&mut config) = bad;
                    for e in [
                        RedisConnection::connect_lazy(&config).map(drop).unwrap_err(),
                        RedisConnection::connect(&config).await.map(drop).unwrap_err(),
                    ] {
                        assert!(matches!(e, Error::Config { .. }), "{url} {name} {bad:?}: {e}");
                        assert!(e.to_string().contains(name), "{e}");
                    }
                }
                let mut config = RedisConfig::from_url(url).unwrap();
                *field(&mut config) = MAX_DEADLINE;
                assert!(config.validate().is_ok(), "{url} {name} at the bound");
            }
        }
    }
}
