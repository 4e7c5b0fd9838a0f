//! Every [`Builder`] setting by name, from the environment (`PALISADE_*`) and from a
//! [`Config`] a service embeds in its own configuration file.
//!
//! One table, [`SETTINGS`], names each setting twice: its key in a config file
//! (`command_timeout`) and its environment variable (`PALISADE_COMMAND_TIMEOUT`). Both
//! sources go through the same parser, so a value means the same thing in either:
//!
//! - durations are humantime text: `500ms`, `2s`, `1m 30s` (a bare number is refused:
//!   its unit would be a guess);
//! - numbers are numbers or their text (`0.25`, `"0.25"`); booleans are `true` / `false`
//!   (or their text);
//! - everything else is text.
//!
//! An unknown key in a [`Config`], or a value that does not parse, is
//! [`Error::Config`] naming the setting (and the variable, for the environment). A
//! value's text is quoted in that error only for settings that are not secret: the
//! Redis URL is never printed.
//!
//! The environment is read by [`Builder::with_env`]: set and non-empty variables
//! override; unknown `PALISADE_*` variables are not an error (other tools — the CLI's
//! load harness, palisade's own tests — share the prefix). Precedence is the caller's
//! order: `Builder::from_config(&file)?.with_env()?` lets the environment override the
//! file, the usual twelve-factor order.
//!
//! [`Builder::build`] then checks the settings together (a mode without a URL, a share
//! outside 0..=1, a duration of zero or above its bound), whichever way they were set.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use palisade_cache_core::{Endpoint, Error};
use serde::Deserialize;

use crate::Builder;

/// The kind of value a setting takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SettingKind {
    /// Text (a name, a path, a URL).
    Text,
    /// A humantime duration: `500ms`, `2s`, `1m 30s`.
    Duration,
    /// A number.
    Number,
    /// `true` or `false`.
    Bool,
}

/// One setting of [`SETTINGS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Setting {
    /// Its key in a [`Config`].
    pub name: &'static str,
    /// Its environment variable.
    pub env: &'static str,
    /// The kind of its value.
    pub kind: SettingKind,
    /// What it sets (the builder method has the details).
    pub doc: &'static str,
}

macro_rules! settings {
    ($($name:literal, $env:literal, $kind:ident, $doc:literal;)*) => {
        /// Every setting, in the order the README's configuration table lists them.
        pub const SETTINGS: &[Setting] = &[$(Setting {
            name: $name,
            env: $env,
            kind: SettingKind::$kind,
            doc: $doc,
        }),*];
    };
}

settings! {
    "mode", "PALISADE_MODE", Text, "`strict`, `degraded` or `local` (default: strict with a URL, local without)";
    "redis_url", "PALISADE_REDIS_URL", Text, "one Redis URL (`redis://`, `rediss://`, `redis-cluster://h1,h2`, `redis-sentinel://…/service`)";
    "tenant", "PALISADE_TENANT", Text, "the tenant, part of every key (default `default`)";
    "key_prefix", "PALISADE_KEY_PREFIX", Text, "the first part of every key (default `palisade`)";
    "connect_timeout", "PALISADE_CONNECT_TIMEOUT", Duration, "the connect deadline (default 2s)";
    "command_timeout", "PALISADE_COMMAND_TIMEOUT", Duration, "the deadline of every command (default 500ms)";
    "probe_period", "PALISADE_PROBE_PERIOD", Duration, "the longest wait between two probes during an outage (default 1s)";
    "degraded_share", "PALISADE_DEGRADED_SHARE", Number, "degraded mode: this node's share of every cap and rate, 0..=1 (default 0.25)";
    "degraded_ttl_cap", "PALISADE_DEGRADED_TTL_CAP", Duration, "degraded mode: the longest TTL of an entry written locally (default 60s)";
    "degraded_lease_cap", "PALISADE_DEGRADED_LEASE_CAP", Duration, "degraded mode: the longest a local throttle permit lives (default 30s)";
    "throttle_restart_hold", "PALISADE_THROTTLE_RESTART_HOLD", Bool, "the throttle's hold after a Redis restart (default true)";
    "local_cache_capacity", "PALISADE_LOCAL_CACHE_CAPACITY", Number, "the local cache's capacity in bytes (default 64 MiB)";
    "redis_dedicated_pool_size", "PALISADE_REDIS_DEDICATED_POOL_SIZE", Number, "the most dedicated connections (blocking waits) open at once (default 64)";
    "value_format", "PALISADE_VALUE_FORMAT", Text, "`postcard` or `json`: how typed cache values and job fields are written (both are read)";
    "redis_password_file", "PALISADE_REDIS_PASSWORD_FILE", Text, "a file holding the Redis password, read at each connect";
    "redis_ca_file", "PALISADE_REDIS_CA_FILE", Text, "TLS: a PEM file of the CA certificates to trust";
    "redis_client_cert_file", "PALISADE_REDIS_CLIENT_CERT_FILE", Text, "mutual TLS: the client certificate chain (PEM)";
    "redis_client_key_file", "PALISADE_REDIS_CLIENT_KEY_FILE", Text, "mutual TLS: the client private key (PEM)";
    "redis_tls_server_name", "PALISADE_REDIS_TLS_SERVER_NAME", Text, "TLS: the name the server certificate must carry";
    "redis_sentinel_user", "PALISADE_REDIS_SENTINEL_USER", Text, "Sentinel: the sentinels' ACL user";
    "redis_sentinel_password_file", "PALISADE_REDIS_SENTINEL_PASSWORD_FILE", Text, "Sentinel: a file holding the sentinels' password";
}

/// The longest connect deadline, command deadline and probe period a builder accepts
/// (the same bound every component's configuration has).
pub use palisade_cache_core::limits::MAX_DEADLINE;
/// The largest pool of dedicated connections a builder accepts.
pub const MAX_DEDICATED_POOL: u64 = 100_000;
/// The longest degraded TTL cap and lease cap a builder accepts.
pub const MAX_DEGRADED_CAP: Duration = Duration::from_secs(30 * 24 * 3600);

/// palisade's settings as a section of a service's own configuration file: a map from
/// the keys of [`SETTINGS`] to values (any serde format that describes itself: TOML,
/// YAML, JSON…). Applied by [`Builder::from_config`] / [`Builder::with_config`], which
/// check every key and value.
///
/// ```
/// # #[derive(serde::Deserialize)]
/// # struct ServiceConfig { palisade: palisade::Config }
/// let file = r#"{ "palisade": { "mode": "local", "tenant": "acme", "command_timeout": "250ms" } }"#;
/// let config: ServiceConfig = serde_json::from_str(file).unwrap();
/// let builder = palisade::Builder::from_config(&config.palisade).unwrap();
/// assert_eq!(builder.effective_mode(), palisade::Mode::LocalOnly);
/// ```
///
/// `Debug` shows the Redis URL redacted.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Config {
    settings: BTreeMap<String, Value>,
}

impl Config {
    /// An empty config (every setting at its default).
    pub fn new() -> Self {
        Config::default()
    }

    /// Sets `name` to `value` (text, parsed when applied).
    pub fn set(mut self, name: &str, value: &str) -> Self {
        self.settings.insert(name.to_owned(), Value::Text(value.to_owned()));
        self
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in &self.settings {
            match v {
                Value::Text(url) if k == "redis_url" => m.entry(k, &Endpoint::url(url).to_string()),
                v => m.entry(k, v),
            };
        }
        m.finish()
    }
}

/// A value as a self-describing format gives it.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    /// A table or a list: never a valid setting, kept so the error names the setting.
    Other(serde::de::IgnoredAny),
}

/// Where a value came from, for the error message.
#[derive(Clone, Copy)]
enum Source<'a> {
    Config(&'a Setting),
    Env(&'a Setting),
}

impl Source<'_> {
    fn setting(&self) -> &Setting {
        match self {
            Source::Config(s) | Source::Env(s) => s,
        }
    }

    fn error(&self, why: impl fmt::Display) -> Error {
        let name = match self {
            Source::Config(s) => format!("setting `{}`", s.name),
            Source::Env(s) => format!("{} (setting `{}`)", s.env, s.name),
        };
        Error::config(format!("{name}: {why}"))
    }

    /// `value` quoted, unless the setting is secret.
    fn quoted(&self, value: &str) -> String {
        if self.setting().name == "redis_url" {
            "the value".to_owned()
        } else {
            format!("`{value}`")
        }
    }
}

impl Value {
    fn text(&self, at: Source<'_>) -> Result<String, Error> {
        match self {
            Value::Text(s) => Ok(s.clone()),
            _ => Err(at.error("must be text")),
        }
    }

    fn duration(&self, at: Source<'_>) -> Result<Duration, Error> {
        match self {
            Value::Text(s) => humantime::parse_duration(s.trim()).map_err(|e| {
                at.error(format!(
                    "{} is not a duration such as `500ms` or `2s` ({e})",
                    at.quoted(s)
                ))
            }),
            Value::Int(_) | Value::Float(_) => Err(at.error("a duration needs a unit, e.g. `500ms` or `2s`")),
            _ => Err(at.error("must be a duration such as `500ms` or `2s`")),
        }
    }

    fn float(&self, at: Source<'_>) -> Result<f64, Error> {
        let v = match self {
            Value::Int(i) => *i as f64,
            Value::Float(f) => *f,
            Value::Text(s) => s
                .trim()
                .parse::<f64>()
                .map_err(|e| at.error(format!("{} is not a number ({e})", at.quoted(s))))?,
            _ => return Err(at.error("must be a number")),
        };
        if v.is_finite() {
            Ok(v)
        } else {
            Err(at.error("must be a finite number"))
        }
    }

    fn unsigned(&self, at: Source<'_>) -> Result<u64, Error> {
        match self {
            Value::Int(i) => u64::try_from(*i).map_err(|_| at.error(format!("{i} is negative"))),
            Value::Text(s) => s
                .trim()
                .parse::<u64>()
                .map_err(|e| at.error(format!("{} is not a whole number of bytes ({e})", at.quoted(s)))),
            _ => Err(at.error("must be a whole number")),
        }
    }

    fn bool(&self, at: Source<'_>) -> Result<bool, Error> {
        match self {
            Value::Bool(b) => Ok(*b),
            Value::Text(s) => match s.trim() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                other => Err(at.error(format!("`{other}` is not `true` or `false`"))),
            },
            _ => Err(at.error("must be `true` or `false`")),
        }
    }
}

fn apply(mut b: Builder, at: Source<'_>, v: &Value) -> Result<Builder, Error> {
    let path = |v: &Value| v.text(at).map(PathBuf::from);
    let sec = &mut b.security;
    match at.setting().name {
        "mode" => b.mode = Some(v.text(at)?.parse().map_err(|e: Error| at.error(e))?),
        "redis_url" => b = b.redis_url(&v.text(at)?),
        "tenant" => b.tenant = v.text(at)?,
        "key_prefix" => b.prefix = v.text(at)?,
        "connect_timeout" => b.connect_timeout = v.duration(at)?,
        "command_timeout" => b.command_timeout = v.duration(at)?,
        "probe_period" => b.probe_period = v.duration(at)?,
        "degraded_share" => b.degraded_share = v.float(at)?,
        "degraded_ttl_cap" => b.degraded_ttl_cap = v.duration(at)?,
        "degraded_lease_cap" => b.degraded_lease_cap = v.duration(at)?,
        "throttle_restart_hold" => b.restart_hold = v.bool(at)?,
        "local_cache_capacity" => b.local_cache_capacity = Some(v.unsigned(at)?),
        "redis_dedicated_pool_size" => b.dedicated_pool_size = Some(v.unsigned(at)?),
        "value_format" => {
            b.value_format = match v.text(at)?.trim() {
                "postcard" => palisade_cache_core::Format::Postcard,
                "json" => palisade_cache_core::Format::Json,
                other => return Err(at.error(format!("`{other}` is not `postcard` or `json`"))),
            }
        }
        "redis_password_file" => sec.password_file = Some(path(v)?),
        "redis_ca_file" => sec.ca_file = Some(path(v)?),
        "redis_client_cert_file" => sec.client_cert_file = Some(path(v)?),
        "redis_client_key_file" => sec.client_key_file = Some(path(v)?),
        "redis_tls_server_name" => sec.server_name = Some(v.text(at)?),
        "redis_sentinel_user" => sec.sentinel_user = Some(v.text(at)?),
        "redis_sentinel_password_file" => sec.sentinel_password_file = Some(path(v)?),
        // The table and this match are one list; a setting missing here is a bug the
        // `every_setting_applies` test catches.
        other => {
            return Err(Error::config(format!(
                "setting `{other}` is not wired into the builder"
            )));
        }
    }
    Ok(b)
}

impl Builder {
    /// A builder from a [`Config`] (defaults for what it does not set). See
    /// [`Builder::with_config`].
    pub fn from_config(config: &Config) -> Result<Builder, Error> {
        Builder::default().with_config(config)
    }

    /// Applies every setting of `config` over this builder. An unknown key, or a value
    /// that does not parse, is [`Error::Config`] naming the setting.
    pub fn with_config(mut self, config: &Config) -> Result<Builder, Error> {
        for (key, value) in &config.settings {
            let Some(setting) = SETTINGS.iter().find(|s| s.name == key.as_str()) else {
                let known: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
                return Err(Error::config(format!(
                    "unknown palisade setting `{key}` (known: {})",
                    known.join(", ")
                )));
            };
            self = apply(self, Source::Config(setting), value)?;
        }
        Ok(self)
    }

    /// Reads every `PALISADE_*` variable of [`SETTINGS`] into this builder; a variable
    /// that is unset or empty leaves its setting alone, one that does not parse is
    /// [`Error::Config`] naming the variable. Unknown `PALISADE_*` variables are ignored
    /// (see the [module docs](crate::config)).
    pub fn with_env(mut self) -> Result<Self, Error> {
        for setting in SETTINGS {
            if let Some(v) = std::env::var(setting.env).ok().filter(|v| !v.trim().is_empty()) {
                self = apply(self, Source::Env(setting), &Value::Text(v))?;
            }
        }
        Ok(self)
    }
}
