//! [`Palisade::builder`]: picks the mode at startup and fails fast.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use palisade_cache_core::{Endpoint, Error, Events, Health, Mode, Namespace, Secret, key::DEFAULT_PREFIX};

use palisade_cache_core::{Backend, ByMode};

use crate::backends::{AnyCache, AnyJobs, AnyThrottle};
use crate::{JobStore, RateLimiter, Throttle};

/// `PALISADE_MODE`: `strict`, `degraded` or `local`.
pub const ENV_MODE: &str = "PALISADE_MODE";
/// `PALISADE_REDIS_URL`: one URL, or several comma-separated (a cluster's seeds).
pub const ENV_REDIS_URL: &str = "PALISADE_REDIS_URL";
/// `PALISADE_TENANT`.
pub const ENV_TENANT: &str = "PALISADE_TENANT";
/// `PALISADE_REDIS_PASSWORD_FILE`: a file holding the Redis password (a secrets mount).
pub const ENV_PASSWORD_FILE: &str = "PALISADE_REDIS_PASSWORD_FILE";
/// `PALISADE_REDIS_CA_FILE`: a PEM file of the CA certificates to trust for TLS.
pub const ENV_CA_FILE: &str = "PALISADE_REDIS_CA_FILE";
/// `PALISADE_REDIS_CLIENT_CERT_FILE`: the client certificate chain (PEM), mutual TLS.
pub const ENV_CLIENT_CERT_FILE: &str = "PALISADE_REDIS_CLIENT_CERT_FILE";
/// `PALISADE_REDIS_CLIENT_KEY_FILE`: the client private key (PEM), mutual TLS.
pub const ENV_CLIENT_KEY_FILE: &str = "PALISADE_REDIS_CLIENT_KEY_FILE";
/// `PALISADE_REDIS_TLS_SERVER_NAME`: the name the server certificate must carry.
pub const ENV_TLS_SERVER_NAME: &str = "PALISADE_REDIS_TLS_SERVER_NAME";
/// `PALISADE_REDIS_SENTINEL_USER`: the ACL user of the sentinels.
pub const ENV_SENTINEL_USER: &str = "PALISADE_REDIS_SENTINEL_USER";
/// `PALISADE_REDIS_SENTINEL_PASSWORD_FILE`: a file holding the sentinels' password.
pub const ENV_SENTINEL_PASSWORD_FILE: &str = "PALISADE_REDIS_SENTINEL_PASSWORD_FILE";

/// Where Redis is, as given to the builder (parsed by [`RedisUrl::parse`](palisade_cache_core::RedisUrl::parse) at `build()`).
#[derive(Clone, Default)]
enum Target {
    #[default]
    None,
    /// One URL, or several comma-separated.
    Url(Secret),
    /// A Sentinel service and its sentinels.
    Sentinel { service: String, seeds: Vec<Secret> },
    /// A connection the service made and shares ([`Builder::redis_connection`]).
    #[cfg(feature = "redis")]
    Connection(palisade_cache_redis::RedisConnection),
}

impl Target {
    fn is_set(&self) -> bool {
        !matches!(self, Target::None)
    }

    /// The printable endpoint (parsed parts; `<unparseable URL>` when it does not parse).
    fn endpoint(&self) -> Option<Endpoint> {
        match self {
            Target::None => None,
            Target::Url(u) => Some(Endpoint::url(u.expose())),
            Target::Sentinel { service, seeds } => {
                let tls = seeds
                    .first()
                    .is_some_and(|s| s.expose().trim_start().starts_with("rediss://"));
                let hosts: Vec<&str> = seeds
                    .iter()
                    .map(|s| {
                        let t = s.expose().trim();
                        t.strip_prefix("rediss://")
                            .or_else(|| t.strip_prefix("redis://"))
                            .unwrap_or(t)
                    })
                    .collect();
                let scheme = if tls { "rediss-sentinel" } else { "redis-sentinel" };
                Some(Endpoint::url(&format!("{scheme}://{}/{service}", hosts.join(","))))
            }
            #[cfg(feature = "redis")]
            Target::Connection(conn) => Some(conn.endpoint().clone()),
        }
    }

    /// Whether TLS is asked for (without connecting).
    #[cfg(not(feature = "redis"))]
    fn wants_tls(&self) -> bool {
        match self {
            Target::None => false,
            Target::Url(u) => palisade_cache_core::RedisUrl::parse(u.expose()).is_ok_and(|u| u.tls),
            Target::Sentinel { seeds, .. } => seeds.iter().any(|s| s.expose().trim_start().starts_with("rediss://")),
        }
    }
}

/// TLS and credential settings beyond the URL.
#[derive(Clone, Default, Debug)]
pub(crate) struct Security {
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) client_cert_file: Option<PathBuf>,
    pub(crate) client_key_file: Option<PathBuf>,
    pub(crate) server_name: Option<String>,
    pub(crate) password_file: Option<PathBuf>,
    pub(crate) sentinel_user: Option<String>,
    pub(crate) sentinel_password_file: Option<PathBuf>,
}

impl Security {
    fn tls_is_set(&self) -> bool {
        self.ca_file.is_some()
            || self.client_cert_file.is_some()
            || self.client_key_file.is_some()
            || self.server_name.is_some()
    }
}

/// Configures and builds a [`Palisade`].
///
/// # Behavior
///
/// - Mode: as set; otherwise `strict` when a Redis URL is given and `local` when none
///   is. Strict or degraded without a URL is [`Error::Config`]; so is a mode whose
///   backend feature is not compiled in (the error names the feature).
/// - `build()` in strict mode connects and PINGs before it returns; with Redis down it
///   fails within the connect deadline with [`Error::Unavailable`] (or
///   [`Error::Timeout`]) naming the redacted URL. In degraded mode with Redis down it
///   starts on the local backends (an `UnavailableAtStartup` event per contract) and
///   moves to Redis when a probe succeeds. In local mode it never touches the network
///   and says once, on `palisade::security`, that state is per process.
/// - `Debug` never shows a password.
#[derive(Clone)]
pub struct Builder {
    pub(crate) mode: Option<Mode>,
    target: Target,
    pub(crate) security: Security,
    pub(crate) tenant: String,
    pub(crate) prefix: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) command_timeout: Duration,
    pub(crate) degraded_ttl_cap: Duration,
    pub(crate) degraded_share: f64,
    pub(crate) degraded_lease_cap: Duration,
    pub(crate) probe_period: Duration,
    pub(crate) restart_hold: bool,
    pub(crate) local_cache_capacity: Option<u64>,
    pub(crate) dedicated_pool_size: Option<u64>,
    pub(crate) value_format: palisade_cache_core::Format,
    events: Option<Events>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("mode", &self.mode)
            .field("redis", &self.target.endpoint())
            .field("security", &self.security)
            .field("tenant", &self.tenant)
            .field("prefix", &self.prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("degraded_ttl_cap", &self.degraded_ttl_cap)
            .field("degraded_share", &self.degraded_share)
            .field("degraded_lease_cap", &self.degraded_lease_cap)
            .field("probe_period", &self.probe_period)
            .field("restart_hold", &self.restart_hold)
            .field("local_cache_capacity", &self.local_cache_capacity)
            .field("dedicated_pool_size", &self.dedicated_pool_size)
            .field("value_format", &self.value_format)
            .finish()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            mode: None,
            target: Target::None,
            security: Security::default(),
            tenant: "default".to_owned(),
            prefix: DEFAULT_PREFIX.to_owned(),
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_millis(500),
            degraded_ttl_cap: Duration::from_secs(60),
            degraded_share: 0.25,
            degraded_lease_cap: Duration::from_secs(30),
            probe_period: Duration::from_secs(1),
            restart_hold: true,
            local_cache_capacity: None,
            dedicated_pool_size: None,
            value_format: palisade_cache_core::Format::Postcard,
            events: None,
        }
    }
}

impl Builder {
    /// Sets the mode.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = Some(mode);
        self
    }
    /// Where Redis is: one URL in any form [`RedisUrl`](palisade_cache_core::RedisUrl) accepts (standalone, `rediss://`,
    /// a cluster's seeds as `redis-cluster://h1:p1,h2:p2` or `rediss-cluster://…`,
    /// `redis-sentinel://`). The one URL parser of palisade reads it. Parsed at `build()`: a URL that does not parse
    /// is [`Error::Config`] then.
    pub fn redis_url(mut self, url: &str) -> Self {
        self.target = if url.trim().is_empty() {
            Target::None
        } else {
            Target::Url(Secret::new(url))
        };
        self
    }
    /// A primary managed by Redis Sentinel: the service name and the sentinels
    /// (`host[:port]`, default port 26379, or `redis://` / `rediss://` URLs carrying the
    /// data nodes' credentials).
    pub fn redis_sentinel<S: AsRef<str>>(mut self, service: &str, sentinels: &[S]) -> Self {
        self.target = Target::Sentinel {
            service: service.to_owned(),
            seeds: sentinels.iter().map(|s| Secret::new(s.as_ref())).collect(),
        };
        self
    }
    /// Shares a connection the service already has, instead of opening a second: palisade
    /// runs on it (and [`Palisade::redis_connection`] gives it back). The connection
    /// carries its own URL, TLS, credentials and deadlines: it replaces a URL or
    /// Sentinel given before (the last of the three calls wins), TLS or password files
    /// set on the builder beside it are [`Error::Config`] (they would be ignored), and
    /// the builder's connect and command deadlines give way to the connection's.
    /// `build()` PINGs it: in strict mode a
    /// connection that does not answer fails `build()`, in degraded mode palisade
    /// starts locally and moves to Redis when the connection answers.
    ///
    /// A [`RedisConnection`](palisade_cache_redis::RedisConnection), not any fred
    /// client: palisade's guarantees need its settings (a command that timed out is
    /// never re-sent, deadlines on every call, its cluster router). The service runs
    /// its own commands on it with
    /// [`command`](palisade_cache_redis::RedisConnection::command) or the fred client of
    /// [`client_for`](palisade_cache_redis::RedisConnection::client_for).
    #[cfg(feature = "redis")]
    pub fn redis_connection(mut self, connection: palisade_cache_redis::RedisConnection) -> Self {
        self.target = Target::Connection(connection);
        self
    }
    /// TLS: trust only the CA certificates of this PEM file (default: the platform's
    /// roots). Needs a `rediss…` URL and the `tls` feature.
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.security.ca_file = Some(path.into());
        self
    }
    /// Mutual TLS: the client certificate chain and private key (PEM files).
    pub fn tls_client_cert(mut self, cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        self.security.client_cert_file = Some(cert_file.into());
        self.security.client_key_file = Some(key_file.into());
        self
    }
    /// TLS: the name the server's certificate must carry, when it is not the URL's host
    /// (e.g. an IP-only address with a certificate for a DNS name).
    pub fn tls_server_name(mut self, name: &str) -> Self {
        self.security.server_name = Some(name.to_owned());
        self
    }
    /// Reads the Redis password from this file at each connect (a secrets-manager
    /// mount) instead of the URL. A password given both ways is [`Error::Config`].
    pub fn redis_password_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.security.password_file = Some(path.into());
        self
    }
    /// Sentinel: the sentinels' own ACL user and password file (default: no
    /// credentials for the sentinels).
    pub fn sentinel_password_file(mut self, user: Option<&str>, path: impl Into<PathBuf>) -> Self {
        self.security.sentinel_user = user.map(str::to_owned);
        self.security.sentinel_password_file = Some(path.into());
        self
    }
    /// The tenant (default `default`); part of every key.
    pub fn tenant(mut self, tenant: &str) -> Self {
        self.tenant = tenant.to_owned();
        self
    }
    /// The key prefix (default `palisade`).
    pub fn key_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_owned();
        self
    }
    /// The connect deadline (default 2 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }
    /// The deadline of every command (default 500 ms).
    pub fn command_timeout(mut self, d: Duration) -> Self {
        self.command_timeout = d;
        self
    }
    /// Degraded mode: the longest TTL of a cache entry written while degraded
    /// (default 60 s).
    pub fn degraded_ttl_cap(mut self, d: Duration) -> Self {
        self.degraded_ttl_cap = d;
        self
    }
    /// Degraded mode: this node's share of every throttle cap and rate (default 0.25;
    /// set 1 / number of nodes).
    pub fn degraded_share(mut self, share: f64) -> Self {
        self.degraded_share = share;
        self
    }
    /// Degraded mode: the longest a throttle permit granted by the local fallback lives
    /// (default 30 s). Redis never learns of those permits, so this bounds how long
    /// after recovery the fleet may hold more than a cap.
    pub fn degraded_lease_cap(mut self, d: Duration) -> Self {
        self.degraded_lease_cap = d;
        self
    }
    /// The longest wait between two probes of Redis during an outage (default 1 s), in
    /// degraded and strict mode. Probes are counted start to start; a probe is a `PING`
    /// bounded by the command deadline, and one still waiting when the period ends is
    /// followed at once. So the outage ends within one period of Redis answering again
    /// and, with a period no longer than the command deadline, a `PING` is always queued
    /// while the client reconnects: the outage then ends at the first reconnect that
    /// succeeds (fred retries every 200 ms at most).
    pub fn probe_period(mut self, d: Duration) -> Self {
        self.probe_period = d;
        self
    }

    /// The throttle's restart hold (default on): on a Redis that started less than a
    /// lease TTL ago, a namespace with no state grants no lease until that TTL has
    /// passed, because the server may have restarted empty while leases were held
    /// ([`DenyReason::RestartHold`](palisade_throttle::DenyReason::RestartHold)). Turn it
    /// off only where Redis's data survives a restart (AOF with `appendfsync always`).
    pub fn throttle_restart_hold(mut self, on: bool) -> Self {
        self.restart_hold = on;
        self
    }

    /// The local cache's capacity in bytes (default
    /// 64 MiB): the cache of local mode, and degraded mode's fallback. Each entry
    /// weighs its key, its value and 64 bytes.
    pub fn local_cache_capacity(mut self, bytes: u64) -> Self {
        self.local_cache_capacity = Some(bytes);
        self
    }

    /// The most dedicated connections open at once for blocking waits
    /// ([`Throttle::acquire_wait`](palisade_throttle::Throttle::acquire_wait); default
    /// 64, at least 1, at most 100,000): a full pool is
    /// [`Error::Exhausted`](palisade_cache_core::Error::Exhausted).
    pub fn redis_dedicated_pool_size(mut self, n: u32) -> Self {
        self.dedicated_pool_size = Some(u64::from(n));
        self
    }

    /// The format typed cache values and job fields are written in (default
    /// [`Format::Postcard`](palisade_cache_core::Format::Postcard));
    /// [`Format::Json`](palisade_cache_core::Format::Json) for values other languages
    /// read. Both formats are always read, so a fleet can switch node by node.
    pub fn value_format(mut self, format: palisade_cache_core::Format) -> Self {
        self.value_format = format;
        self
    }

    /// The event sink to use (default: a new one). Subscribe to it before `build()` to
    /// see the `UnavailableAtStartup` events that `build()` itself emits.
    pub fn events(mut self, events: Events) -> Self {
        self.events = Some(events);
        self
    }

    /// The mode `build` will use.
    pub fn effective_mode(&self) -> Mode {
        self.mode.unwrap_or_else(|| Mode::default_for(self.target.is_set()))
    }

    #[cfg(feature = "redis")]
    fn ctx(
        &self,
        component: palisade_cache_core::Component,
        mode: Mode,
        events: &Events,
    ) -> palisade_cache_core::SupervisorContext {
        // The probe is a PING through the connection, which bounds it by the command
        // deadline (+ its backstop). The supervisor's own deadline comes later, so fred
        // times a queued PING out itself (and never sends it late), and a PING queued
        // while fred reconnects is answered the moment the server is back.
        let probe_deadline = self.redis_command_timeout() + 2 * palisade_cache_redis::BACKSTOP;
        palisade_cache_core::SupervisorContext::new(component, mode, events.clone()).with_config(
            palisade_cache_core::SupervisorConfig::default()
                .with_probe_period(self.probe_period)
                .with_probe_deadline(probe_deadline)
                // A call waiting for its record during a recovery's hand-over fails
                // at the command deadline like any other call.
                .with_handover_wait(self.redis_command_timeout()),
        )
    }

    /// Connects (per the mode) and returns a ready [`Palisade`]. See the type's
    /// `# Behavior`.
    pub async fn build(self) -> Result<Palisade, Error> {
        let mode = self.effective_mode();
        if self.target.is_set() || self.security.tls_is_set() {
            // Checked in every mode: a URL or setting that cannot work is refused even
            // where it would not be used (local mode), never silently weakened.
            self.check_redis_settings()?;
        }
        if mode.needs_redis() && !self.target.is_set() {
            return Err(Error::config(format!(
                "mode `{mode}` needs a Redis URL (builder.redis_url or {ENV_REDIS_URL})"
            )));
        }
        self.check_numbers()?;
        let base = Namespace::new(&self.prefix, &self.tenant, "cache")?;
        let events = self.events.clone().unwrap_or_default();
        let backends = match mode {
            Mode::LocalOnly => self.local(),
            Mode::StrictDistributed => self.strict(&events).await,
            Mode::ExplicitDegraded => self.degraded(&events).await,
            // A mode added later must be wired here on purpose: it never starts as
            // another mode.
            other => Err(Error::config(format!(
                "mode `{other}` is not supported by this build of palisade"
            ))),
        }?;
        Palisade::assemble(mode, &self, base, events, backends)
    }

    /// Every duration within its bound (so no deadline arithmetic overflows), the
    /// share within 0..=1, a capacity above zero: whichever way they were set.
    fn check_numbers(&self) -> Result<(), Error> {
        use crate::config::{MAX_DEADLINE, MAX_DEDICATED_POOL, MAX_DEGRADED_CAP};
        for (name, d, max) in [
            ("connect_timeout", self.connect_timeout, MAX_DEADLINE),
            ("command_timeout", self.command_timeout, MAX_DEADLINE),
            ("probe_period", self.probe_period, MAX_DEADLINE),
            ("degraded_ttl_cap", self.degraded_ttl_cap, MAX_DEGRADED_CAP),
            ("degraded_lease_cap", self.degraded_lease_cap, MAX_DEGRADED_CAP),
        ] {
            if d.is_zero() || d > max {
                return Err(Error::config(format!(
                    "setting `{name}` must be more than 0 and at most {} (got {d:?})",
                    humantime::format_duration(max)
                )));
            }
        }
        if !(0.0..=1.0).contains(&self.degraded_share) {
            return Err(Error::config(format!(
                "setting `degraded_share` must be between 0 and 1 (got {})",
                self.degraded_share
            )));
        }
        if self.local_cache_capacity == Some(0) {
            return Err(Error::config(
                "setting `local_cache_capacity` must be more than 0 bytes",
            ));
        }
        if self
            .dedicated_pool_size
            .is_some_and(|n| n == 0 || n > MAX_DEDICATED_POOL)
        {
            return Err(Error::config(format!(
                "setting `redis_dedicated_pool_size` must be 1 to {MAX_DEDICATED_POOL}"
            )));
        }
        Ok(())
    }

    /// The local cache, at the configured capacity.
    #[cfg(feature = "local")]
    fn local_cache(&self) -> palisade_cache_local::LocalCache {
        use palisade_cache_local::{DEFAULT_CAPACITY_BYTES, LocalCache, LocalCacheConfig};
        let bytes = self.local_cache_capacity.unwrap_or(DEFAULT_CAPACITY_BYTES);
        LocalCache::new(LocalCacheConfig::default().with_capacity_bytes(bytes))
    }

    #[cfg(feature = "local")]
    fn local(&self) -> Result<Backends, Error> {
        use palisade_cache_local::{LocalJobStore, LocalThrottle};
        tracing::warn!(
            target: palisade_cache_core::EVENT_TARGET,
            mode = "local",
            tenant = self.tenant.as_str(),
            "palisade runs in local mode: state is per process, not shared between nodes"
        );
        Ok(Backends {
            cache: ByMode::Local(self.local_cache()),
            jobs: ByMode::Local(LocalJobStore::default()),
            throttle: ByMode::Local(LocalThrottle::default()),
            #[cfg(feature = "redis")]
            connection: None,
        })
    }

    #[cfg(not(feature = "local"))]
    fn local(&self) -> Result<Backends, Error> {
        Err(Error::config("mode `local` needs the `local` feature of palisade"))
    }

    #[cfg(feature = "redis")]
    fn redis_config(&self) -> Result<palisade_cache_redis::RedisConfig, Error> {
        use palisade_cache_redis::{RedisConfig, TlsOptions};
        let expose = |seeds: &[Secret]| seeds.iter().map(|s| s.expose().to_owned()).collect::<Vec<_>>();
        let mut config = match &self.target {
            Target::None => {
                return Err(Error::config(format!(
                    "no Redis URL given (builder.redis_url or {ENV_REDIS_URL})"
                )));
            }
            Target::Url(u) => RedisConfig::from_url(u.expose())?,
            Target::Sentinel { service, seeds } => RedisConfig::sentinel(service, &expose(seeds))?,
            Target::Connection(_) => {
                return Err(Error::config(
                    "a connection given with redis_connection has no configuration to build",
                ));
            }
        }
        .with_connect_timeout(self.connect_timeout)
        .with_command_timeout(self.command_timeout);
        if let Some(n) = self.dedicated_pool_size {
            config = config.with_dedicated_pool_size(u32::try_from(n).unwrap_or(u32::MAX));
        }
        let sec = &self.security;
        let mut tls = TlsOptions::default();
        tls.ca_file.clone_from(&sec.ca_file);
        tls.client_cert_file.clone_from(&sec.client_cert_file);
        tls.client_key_file.clone_from(&sec.client_key_file);
        tls.server_name.clone_from(&sec.server_name);
        config = config.with_tls(tls);
        if let Some(path) = &sec.password_file {
            config = config.with_password_file(path);
        }
        if let Some(path) = &sec.sentinel_password_file {
            config = config.with_sentinel_password_file(sec.sentinel_user.as_deref(), path);
        }
        Ok(config)
    }

    /// The Redis settings, checked without a network (see `build`).
    #[cfg(feature = "redis")]
    fn check_redis_settings(&self) -> Result<(), Error> {
        if let Target::Connection(_) = self.target {
            let sec = &self.security;
            if sec.tls_is_set() || sec.password_file.is_some() || sec.sentinel_password_file.is_some() {
                return Err(Error::config(
                    "a connection given with redis_connection carries its own TLS and credentials; \
                     set them where it is made, not on the builder",
                ));
            }
            return Ok(());
        }
        self.redis_config()?.validate()
    }

    /// The command deadline of the Redis calls: the given connection's, or the setting.
    #[cfg(feature = "redis")]
    fn redis_command_timeout(&self) -> Duration {
        match &self.target {
            Target::Connection(conn) => conn.command_timeout(),
            _ => self.command_timeout,
        }
    }

    /// The connection, connected: the given one once it answered a PING, or a new one.
    #[cfg(feature = "redis")]
    async fn connect(&self) -> Result<palisade_cache_redis::RedisConnection, Error> {
        match &self.target {
            Target::Connection(conn) => conn.ping().await.map(|()| conn.clone()),
            _ => palisade_cache_redis::RedisConnection::connect(&self.redis_config()?).await,
        }
    }

    /// The connection for a start with Redis down: the given one, or a new one that
    /// connects in the background.
    #[cfg(all(feature = "redis", feature = "local"))]
    fn connect_lazy(&self) -> Result<palisade_cache_redis::RedisConnection, Error> {
        match &self.target {
            Target::Connection(conn) => Ok(conn.clone()),
            _ => palisade_cache_redis::RedisConnection::connect_lazy(&self.redis_config()?),
        }
    }

    /// Without the `redis` feature a Redis URL is still parsed, and TLS asked for is
    /// refused naming the features it needs.
    #[cfg(not(feature = "redis"))]
    fn check_redis_settings(&self) -> Result<(), Error> {
        if let Target::Url(u) = &self.target {
            palisade_cache_core::RedisUrl::parse(u.expose())?;
        }
        if self.target.wants_tls() || self.security.tls_is_set() {
            return Err(Error::config(
                "TLS to Redis needs the `tls` feature of palisade (it turns on `redis`); palisade never \
                 falls back to plain TCP",
            ));
        }
        Ok(())
    }

    #[cfg(feature = "redis")]
    async fn strict(&self, events: &Events) -> Result<Backends, Error> {
        use palisade_cache_core::{Component, Strict};
        use palisade_cache_redis::{RedisCache, RedisJobStore, RedisThrottle};
        let mode = Mode::StrictDistributed;
        let conn = self.connect().await?;
        let jobs = RedisJobStore::new(conn.clone()).await?;
        let throttle = RedisThrottle::new(conn.clone())
            .await?
            .with_restart_hold(self.restart_hold);
        let ctx = |c| self.ctx(c, mode, events);
        Ok(Backends {
            cache: ByMode::Strict(Strict::new(RedisCache::new(conn.clone()), ctx(Component::Cache))?),
            jobs: ByMode::Strict(Strict::new(jobs, ctx(Component::JobStore))?),
            throttle: ByMode::Strict(Strict::new(throttle, ctx(Component::Throttle))?),
            connection: Some(conn),
        })
    }

    #[cfg(not(feature = "redis"))]
    async fn strict(&self, _: &Events) -> Result<Backends, Error> {
        Err(Error::config("mode `strict` needs the `redis` feature of palisade"))
    }

    #[cfg(all(feature = "redis", feature = "local"))]
    async fn degraded(&self, events: &Events) -> Result<Backends, Error> {
        use palisade_cache_core::{Component, Failover, FailoverOptions};
        use palisade_cache_local::{LocalJobStore, LocalThrottle};
        use palisade_cache_redis::{RedisCache, RedisJobStore, RedisThrottle};
        let mode = Mode::ExplicitDegraded;
        let options = FailoverOptions::default()
            .with_degraded_ttl_cap(self.degraded_ttl_cap)
            .with_degraded_share(self.degraded_share)
            .with_degraded_lease_cap(self.degraded_lease_cap);
        let ctx = |c| self.ctx(c, mode, events);
        // Refused credentials (or any error that is not an outage) are a
        // misconfiguration: degraded mode must not start serving local state on them.
        let (conn, jobs, throttle, down) = match self.connect().await {
            Ok(conn) => (
                conn.clone(),
                RedisJobStore::new(conn.clone()).await?,
                RedisThrottle::new(conn).await?,
                None,
            ),
            Err(e) if e.is_unavailable() && e.kind() != palisade_cache_core::ErrorKind::Auth => {
                let lazy = self.connect_lazy()?;
                (
                    lazy.clone(),
                    RedisJobStore::lazy(lazy.clone()),
                    RedisThrottle::lazy(lazy),
                    Some(e),
                )
            }
            Err(e) => return Err(e),
        };
        let down = down.as_ref();
        Ok(Backends {
            cache: ByMode::Degraded(Failover::new(
                RedisCache::new(conn.clone()),
                self.local_cache(),
                ctx(Component::Cache),
                options,
                down,
            )?),
            jobs: ByMode::Degraded(Failover::new(
                jobs,
                LocalJobStore::default(),
                ctx(Component::JobStore),
                options,
                down,
            )?),
            throttle: ByMode::Degraded(Failover::new(
                throttle.with_restart_hold(self.restart_hold),
                LocalThrottle::default(),
                ctx(Component::Throttle),
                options,
                down,
            )?),
            connection: Some(conn),
        })
    }

    #[cfg(not(all(feature = "redis", feature = "local")))]
    async fn degraded(&self, _: &Events) -> Result<Backends, Error> {
        Err(Error::config(
            "mode `degraded` needs the `redis` and `local` features of palisade",
        ))
    }
}

struct Backends {
    cache: AnyCache,
    jobs: AnyJobs,
    throttle: AnyThrottle,
    #[cfg(feature = "redis")]
    connection: Option<palisade_cache_redis::RedisConnection>,
}

/// What [`Palisade::doctor`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Doctor {
    /// The mode.
    pub mode: Mode,
    /// The cache's view of the shared store.
    pub health: Health,
    /// Whether the configured mode can serve right now (strict: Redis answers).
    pub can_serve: bool,
    /// The redacted Redis endpoint, if any.
    pub endpoint: Option<String>,
    /// The Redis version, if Redis answered.
    pub server_version: Option<String>,
    /// Whether Redis is a cluster, if it answered.
    pub cluster: Option<bool>,
    /// The round trip of one PING.
    pub round_trip: Option<Duration>,
    /// Why Redis did not answer.
    pub error: Option<String>,
    /// `standalone`, `cluster` or `sentinel`, when Redis is configured.
    pub topology: Option<String>,
    /// Whether TLS is on, when Redis is configured.
    pub tls: Option<bool>,
    /// The name the server's certificate is checked against (TLS only).
    pub tls_server_name: Option<String>,
    /// The ACL user (never the password).
    pub user: Option<String>,
    /// Sentinel: the service name.
    pub sentinel_service: Option<String>,
    /// The server the connection is on right now (Sentinel: the primary), if known.
    pub connected_to: Option<String>,
    /// That server's `ROLE` (`master` when it serves writes), if it answered.
    pub role: Option<String>,
    /// The pool of dedicated connections (blocking waits), when Redis is configured.
    #[cfg(feature = "redis")]
    pub dedicated_pool: Option<palisade_cache_redis::PoolStats>,
    /// Every contract's operations tried on a doctor namespace (when Redis answered):
    /// what the connected user may not run shows here.
    pub contracts: Vec<ContractCheck>,
    /// What would make a failure worse than it needs to be (a cluster with
    /// `cluster-require-full-coverage yes`, a master without a replica, slots with no
    /// reachable master). Warnings do not change [`Doctor::can_serve`].
    pub warnings: Vec<String>,
}

/// Whether one contract's operations ran, as [`Palisade::doctor`] tried them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ContractCheck {
    /// `cache`, `jobs`, `throttle` or `ratelimit`.
    pub contract: &'static str,
    /// Why an operation failed (e.g. a `NOPERM` reply), or `None` when all ran.
    pub error: Option<String>,
}

/// The namespace `doctor` tries every contract's operations in.
pub const DOCTOR_NAMESPACE: &str = "palisade-doctor";

/// Shared state: a cache, a job store, a throttle and a rate limiter, in one explicit
/// mode, for the configured tenant and — through [`Palisade::tenant`] — for any other.
///
/// # Behavior
///
/// - One connection, one supervisor per contract and one event stream serve every
///   tenant; [`Palisade::tenant`] builds no connection and starts no task.
/// - [`Palisade::cache`], [`Palisade::jobs`], [`Palisade::throttle`] and
///   [`Palisade::rate_limiter`] are the configured tenant's ([`Builder::tenant`]).
/// - Stats count every tenant of the process together (one counter set per
///   contract); events name the tenant whose call found the outage.
pub struct Palisade {
    mode: Mode,
    endpoint: Option<Endpoint>,
    default: Tenant,
    events: Events,
    #[cfg(feature = "redis")]
    connection: Option<palisade_cache_redis::RedisConnection>,
}

impl fmt::Debug for Palisade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Palisade")
            .field("mode", &self.mode)
            .field("tenant", &self.default.name)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// One tenant's cache, job store, throttle and rate limiter, sharing the
/// [`Palisade`]'s connection, supervisors, events and counters. Cheap to make and to
/// clone: make one per request if that is where the tenant is known.
///
/// # Behavior
///
/// - A tenant's keys are disjoint from every other tenant's, whatever characters the
///   names contain (they are escaped); an empty tenant name, or one too long for a key,
///   is [`Error::InvalidInput`].
/// - `clear` and every other operation reach only that tenant's keys.
#[derive(Clone)]
pub struct Tenant {
    name: std::sync::Arc<str>,
    cache: crate::Cache,
    jobs: JobStore,
    throttle: Throttle,
    rate_limiter: RateLimiter,
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tenant")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Tenant {
    /// The tenant's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cache (namespace `cache`; [`Cache::namespace`](palisade_cache_core::Cache::namespace)
    /// gives others).
    pub fn cache(&self) -> crate::Cache {
        self.cache.clone()
    }

    /// The job store (namespace `jobs`).
    pub fn jobs(&self) -> JobStore {
        self.jobs.clone()
    }

    /// The throttle (namespace `throttle`; [`Throttle::namespace`](palisade_throttle::Throttle::namespace)
    /// gives others, each with its own global cap on its own cluster slot).
    pub fn throttle(&self) -> Throttle {
        self.throttle.clone()
    }

    /// The GCRA rate limiter (namespace `ratelimit`).
    pub fn rate_limiter(&self) -> RateLimiter {
        self.rate_limiter.clone()
    }

    fn other(&self, name: &str) -> Result<Tenant, Error> {
        Ok(Tenant {
            name: std::sync::Arc::from(name),
            cache: self.cache.for_tenant(name)?,
            jobs: self.jobs.for_tenant(name)?,
            throttle: self.throttle.for_tenant(name)?,
            rate_limiter: self.rate_limiter.for_tenant(name)?,
        })
    }
}

impl Palisade {
    /// A builder with the defaults.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Builds from the `PALISADE_*` environment variables alone (see
    /// [`Builder::with_env`]): `Palisade::from_env().await?`. To set more in code,
    /// `Palisade::builder().with_env()?` gives the builder.
    pub async fn from_env() -> Result<Palisade, Error> {
        Builder::default().with_env()?.build().await
    }

    fn assemble(mode: Mode, b: &Builder, base: Namespace, events: Events, backends: Backends) -> Result<Self, Error> {
        let value_codec = match b.value_format {
            palisade_cache_core::Format::Json => palisade_cache_core::Codec::json(1),
            _ => palisade_cache_core::Codec::new(1),
        };
        Ok(Palisade {
            mode,
            endpoint: b.target.endpoint().filter(|_| mode.needs_redis()),
            default: Tenant {
                name: std::sync::Arc::from(b.tenant.as_str()),
                cache: crate::Cache::new(backends.cache, base.clone()).with_codec(value_codec),
                jobs: JobStore::new(backends.jobs, base.sibling("jobs")?)
                    .with_config(palisade_job_store::JobStoreConfig::default().with_field_format(b.value_format)),
                throttle: Throttle::new(backends.throttle.clone(), base.sibling("throttle")?),
                rate_limiter: RateLimiter::new(backends.throttle, base.sibling("ratelimit")?),
            },
            events,
            #[cfg(feature = "redis")]
            connection: backends.connection,
        })
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The configured tenant's name.
    pub fn tenant_name(&self) -> &str {
        &self.default.name
    }

    /// Another tenant's handles, over the same connection, supervisors and events. See
    /// [`Tenant`].
    pub fn tenant(&self, name: &str) -> Result<Tenant, Error> {
        self.default.other(name)
    }

    /// The configured tenant's cache (namespace `cache`).
    pub fn cache(&self) -> crate::Cache {
        self.default.cache()
    }

    /// The configured tenant's job store (namespace `jobs`).
    pub fn jobs(&self) -> JobStore {
        self.default.jobs()
    }

    /// The configured tenant's throttle (namespace `throttle`).
    pub fn throttle(&self) -> Throttle {
        self.default.throttle()
    }

    /// The configured tenant's GCRA rate limiter (namespace `ratelimit`).
    pub fn rate_limiter(&self) -> RateLimiter {
        self.default.rate_limiter()
    }

    /// The Redis connection palisade runs on (strict and degraded mode), for the
    /// service's own commands: one client, not two. See [`Builder::redis_connection`].
    #[cfg(feature = "redis")]
    pub fn redis_connection(&self) -> Option<&palisade_cache_redis::RedisConnection> {
        self.connection.as_ref()
    }

    /// Outage and recovery events of every contract.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Probes the shared store: version, cluster or not, PING round trip.
    pub async fn doctor(&self) -> Doctor {
        let cache = &self.default.cache;
        let mut d = Doctor {
            mode: self.mode,
            health: cache.backend().status().health,
            can_serve: true,
            endpoint: self.endpoint.as_ref().map(ToString::to_string),
            server_version: None,
            cluster: None,
            round_trip: None,
            error: None,
            topology: None,
            tls: None,
            tls_server_name: None,
            user: None,
            sentinel_service: None,
            connected_to: None,
            #[cfg(feature = "redis")]
            dedicated_pool: None,
            role: None,
            contracts: Vec::new(),
            warnings: Vec::new(),
        };
        if !self.mode.needs_redis() {
            return d;
        }
        let started = Instant::now();
        match cache.backend().probe().await {
            Ok(()) => d.round_trip = Some(started.elapsed()),
            Err(e) => d.error = Some(e.chain()),
        }
        #[cfg(feature = "redis")]
        if let Some(conn) = &self.connection {
            let info = conn.info();
            d.topology = Some(info.topology.to_owned());
            d.tls = Some(info.tls);
            d.tls_server_name = info.tls_server_name;
            d.user = info.user;
            d.sentinel_service = info.sentinel_service;
            d.connected_to = info.connected_to.map(|c| c.to_string());
            d.dedicated_pool = Some(conn.dedicated_stats());
            if d.error.is_none() {
                match conn.server_info().await {
                    Ok(info) => {
                        d.server_version = Some(info.version);
                        d.cluster = Some(info.cluster);
                    }
                    Err(e) => d.error = Some(e.chain()),
                }
            }
            if d.error.is_none() && !conn.is_cluster() {
                d.role = conn.role().await.ok();
            }
            d.warnings = conn.cluster_warnings().await;
        }
        if d.error.is_none() {
            d.contracts = self.check_contracts().await;
        }
        let refused = d.contracts.iter().any(|c| c.error.is_some());
        // Strict mode serves only with Redis; degraded mode serves either way — but
        // not for a user Redis refuses commands to: those errors are not outages.
        d.can_serve = !refused && (d.error.is_none() || self.mode == Mode::ExplicitDegraded);
        d
    }

    /// Runs every operation of every contract once, on [`DOCTOR_NAMESPACE`], with short
    /// TTLs and leases; each error is kept (e.g. `NOPERM` for a user whose ACL is too
    /// narrow).
    async fn check_contracts(&self) -> Vec<ContractCheck> {
        let ttl = Duration::from_secs(10);
        let check = |contract, r: Result<(), Error>| ContractCheck {
            contract,
            error: r.err().map(|e| e.chain()),
        };
        let cache = async {
            let c = self.default.cache.namespace(DOCTOR_NAMESPACE)?;
            c.set("probe", b"1", ttl).await?;
            c.get("probe").await?;
            c.set_if_absent("probe", b"1", ttl).await?;
            c.contains("probe").await?;
            c.delete("probe").await?;
            c.clear().await?;
            Ok(())
        };
        let jobs = async {
            let j = self.default.jobs.namespace(DOCTOR_NAMESPACE)?;
            j.create("probe", &palisade_job_store::JobRecord::queued(), ttl).await?;
            j.update("probe", &palisade_job_store::Patch::new().progress(1)).await?;
            j.transition(
                "probe",
                palisade_job_store::JobStatus::Queued,
                palisade_job_store::JobStatus::Running,
                &palisade_job_store::Patch::new(),
            )
            .await?;
            j.heartbeat("probe").await?;
            j.get("probe").await?;
            j.delete("probe").await?;
            Ok(())
        };
        let throttle = async {
            let t = self.default.throttle.namespace(DOCTOR_NAMESPACE)?;
            let policy = palisade_throttle::Policy::builder()
                .global_cap(1)
                .key_cap(1)
                .min_interval(Duration::ZERO)
                .lease_ttl(Duration::from_secs(1))
                .build()?;
            if let palisade_throttle::Decision::Acquired(p) = t.acquire("probe", &policy).await?.value {
                p.release().await?;
            }
            t.penalize("probe", Duration::from_millis(10)).await?;
            t.clear_penalty("probe").await?;
            t.inspect("probe").await?;
            Ok(())
        };
        let limit = async {
            let r = self.default.rate_limiter.namespace(DOCTOR_NAMESPACE)?;
            r.limit("probe", &palisade_throttle::Rate::per_second(1000).burst(1000).build()?)
                .await?;
            Ok(())
        };
        let (cache, jobs, throttle, limit) = tokio::join!(cache, jobs, throttle, limit);
        vec![
            check("cache", cache),
            check("jobs", jobs),
            check("throttle", throttle),
            check("ratelimit", limit),
        ]
    }
}
