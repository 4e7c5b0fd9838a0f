//! The argument model: every command, flag and environment variable, and their parsers.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use palisade::{Error, Mode, Rate};

use crate::load;

/// Fail-closed shared state: inspect and operate palisade's cache, job store and throttle.
#[derive(Parser, Debug)]
#[command(name = "palisade", version)]
pub(crate) struct Cli {
    /// `strict`, `degraded` or `local` (default: strict with a Redis URL, else local).
    #[arg(long, global = true, env = "PALISADE_MODE")]
    pub(crate) mode: Option<String>,
    /// Redis URL, or comma-separated cluster seeds.
    #[arg(long, global = true, env = "PALISADE_REDIS_URL", hide_env_values = true)]
    pub(crate) redis_url: Option<String>,
    /// Tenant.
    #[arg(long, global = true, env = "PALISADE_TENANT", default_value = "default")]
    pub(crate) tenant: String,
    /// A file holding the Redis password (instead of one in the URL).
    #[arg(long, global = true, env = "PALISADE_REDIS_PASSWORD_FILE")]
    pub(crate) password_file: Option<std::path::PathBuf>,
    /// TLS: trust only the CA certificates of this PEM file.
    #[arg(long, global = true, env = "PALISADE_REDIS_CA_FILE")]
    pub(crate) ca_file: Option<std::path::PathBuf>,
    /// Mutual TLS: the client certificate (PEM).
    #[arg(
        long,
        global = true,
        env = "PALISADE_REDIS_CLIENT_CERT_FILE",
        requires = "client_key"
    )]
    pub(crate) client_cert: Option<std::path::PathBuf>,
    /// Mutual TLS: the client private key (PEM).
    #[arg(
        long,
        global = true,
        env = "PALISADE_REDIS_CLIENT_KEY_FILE",
        requires = "client_cert"
    )]
    pub(crate) client_key: Option<std::path::PathBuf>,
    /// TLS: the name the server certificate must carry, if not the URL's host.
    #[arg(long, global = true, env = "PALISADE_REDIS_TLS_SERVER_NAME")]
    pub(crate) tls_server_name: Option<String>,
    /// Sentinel: the sentinels' ACL user.
    #[arg(long, global = true, env = "PALISADE_REDIS_SENTINEL_USER")]
    pub(crate) sentinel_user: Option<String>,
    /// Sentinel: a file holding the sentinels' password.
    #[arg(long, global = true, env = "PALISADE_REDIS_SENTINEL_PASSWORD_FILE")]
    pub(crate) sentinel_password_file: Option<std::path::PathBuf>,
    /// One JSON object per command on stdout.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Probe: mode, state, server version, standalone or cluster, round trip. Exit 0 when
    /// the configured mode can serve, 2 when it cannot.
    Doctor,
    /// The cache.
    #[command(subcommand)]
    Cache(CacheCmd),
    /// The job store.
    #[command(subcommand)]
    Jobs(JobsCmd),
    /// The throttle.
    #[command(subcommand)]
    Throttle(ThrottleCmd),
    /// The outage benchmark: P worker processes × T tasks of mixed work against a Redis
    /// that it starts, kills, restarts, pauses and resumes; exit 1 if any invariant is
    /// violated.
    Load(load::LoadArgs),
    /// One GCRA rate-limit check.
    Limit {
        /// The key.
        key: String,
        /// `N/s`, `N/m`, `N/h` or `N/<duration>` (e.g. `10/s`, `5/500ms`).
        #[arg(long)]
        rate: String,
        /// Requests allowed at once.
        #[arg(long, default_value_t = 1)]
        burst: u32,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum CacheCmd {
    /// Read a value (exit 1 on a miss).
    Get { ns: String, key: String },
    /// Write a value.
    Set {
        ns: String,
        key: String,
        value: String,
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        ttl: Duration,
    },
    /// Delete a key (exit 1 if it was not there).
    Del { ns: String, key: String },
    /// Delete every key of a namespace.
    Clear { ns: String },
    /// Counters and state.
    Stats,
}

#[derive(Args, Debug)]
pub(crate) struct Fields {
    /// `name=value`; repeat for more fields.
    #[arg(long = "field", value_parser = parse_field)]
    pub(crate) fields: Vec<(String, String)>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum JobsCmd {
    /// Create (replace) a record, queued.
    Create {
        id: String,
        #[command(flatten)]
        fields: Fields,
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: Duration,
        /// Fail (exit 1) when the id exists.
        #[arg(long)]
        if_absent: bool,
    },
    /// Read a record (exit 1 if not found).
    Get { id: String },
    /// Write fields into an existing record (exit 1 if not found).
    Update {
        id: String,
        #[command(flatten)]
        fields: Fields,
    },
    /// Compare-and-set the status (exit 1 if refused or not found).
    Transition {
        id: String,
        from: String,
        to: String,
        #[command(flatten)]
        fields: Fields,
    },
    /// Record a worker heartbeat (exit 1 if not running).
    Heartbeat { id: String },
    /// Delete a record (exit 1 if not found).
    Delete { id: String },
    /// Wait until the record has one of the statuses; prints it (exit 1 when it never
    /// will, is gone, or the timeout passed).
    Wait {
        id: String,
        /// The statuses waited for, comma separated.
        #[arg(long = "for", value_delimiter = ',', default_value = "completed,failed")]
        statuses: Vec<String>,
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Print the record, then every change, until it reaches a terminal status or is
    /// gone (with `--json`: one object per line, the last one the end).
    Watch { id: String },
}

#[derive(Subcommand, Debug)]
pub(crate) enum ThrottleCmd {
    /// Acquire, hold, release; prints the decision with the server-side times.
    Acquire {
        key: String,
        #[arg(long)]
        global_cap: u32,
        #[arg(long)]
        key_cap: u32,
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        min_interval: Duration,
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        lease: Duration,
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        hold: Duration,
    },
    /// Block a key for a while (the longer penalty wins).
    Penalize {
        key: String,
        #[arg(value_parser = parse_duration)]
        duration: Duration,
    },
    /// Live leases, penalty, last acquisition.
    Inspect { key: String },
}

impl Cli {
    /// The mode; an empty value (e.g. `PALISADE_MODE=`) means "not set", as in
    /// `Palisade::from_env`. An unknown mode is a configuration (usage) error.
    pub(crate) fn mode(&self) -> Result<Option<Mode>, Error> {
        match self.mode.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(m) => m.parse().map(Some),
        }
    }

    /// The Redis URL; an empty value means none.
    pub(crate) fn url(&self) -> Option<&str> {
        self.redis_url.as_deref().map(str::trim).filter(|u| !u.is_empty())
    }
}

pub(crate) fn parse_field(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?} is not name=value"))
}

pub(crate) fn parse_rate(s: &str, burst: u32) -> Result<Rate, Error> {
    let (count, per) = s
        .split_once('/')
        .ok_or_else(|| Error::invalid_input(format!("{s:?} is not N/unit")))?;
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|_| Error::invalid_input(format!("{s:?}: bad count")))?;
    let period = match per.trim() {
        "s" | "sec" => Duration::from_secs(1),
        "m" | "min" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        other => parse_duration(other).map_err(Error::invalid_input)?,
    };
    Rate::per(count, period).burst(burst).build()
}

/// A duration as a person writes it (`250ms`, `30s`, `1h`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration (e.g. 250ms, 30s, 1h): {e}"))
}
