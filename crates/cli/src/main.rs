//! `palisade`: the operator's command line.
//!
//! Exit codes: 0 success; 1 a valid negative answer (miss, denied, refused transition,
//! not found, already exists); 2 backend unavailable (TLS failures included); 64 usage
//! error; 65 data or codec error; 77 credentials refused. With `--json` every command
//! prints exactly one JSON object on stdout, and errors go to stderr as
//! `{"error":{"kind":…,"message":…}}`.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod chart;
mod load;

use clap::{Args, Parser, Subcommand};
use palisade::{
    Decision, Error, ErrorKind, JobRecord, JobStatus, Mode, Outcome, Palisade, Patch, Policy, Provenance, Rate,
    RateDecision, Tagged,
};
use serde_json::{Value, json};

/// Fail-closed shared state: inspect and operate palisade's cache, job store and throttle.
#[derive(Parser, Debug)]
#[command(name = "palisade", version)]
struct Cli {
    /// `strict`, `degraded` or `local` (default: strict with a Redis URL, else local).
    #[arg(long, global = true, env = "PALISADE_MODE")]
    mode: Option<String>,
    /// Redis URL, or comma-separated cluster seeds.
    #[arg(long, global = true, env = "PALISADE_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Tenant.
    #[arg(long, global = true, env = "PALISADE_TENANT", default_value = "default")]
    tenant: String,
    /// A file holding the Redis password (instead of one in the URL).
    #[arg(long, global = true, env = "PALISADE_REDIS_PASSWORD_FILE")]
    password_file: Option<std::path::PathBuf>,
    /// TLS: trust only the CA certificates of this PEM file.
    #[arg(long, global = true, env = "PALISADE_REDIS_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// Mutual TLS: the client certificate (PEM).
    #[arg(
        long,
        global = true,
        env = "PALISADE_REDIS_CLIENT_CERT_FILE",
        requires = "client_key"
    )]
    client_cert: Option<std::path::PathBuf>,
    /// Mutual TLS: the client private key (PEM).
    #[arg(
        long,
        global = true,
        env = "PALISADE_REDIS_CLIENT_KEY_FILE",
        requires = "client_cert"
    )]
    client_key: Option<std::path::PathBuf>,
    /// TLS: the name the server certificate must carry, if not the URL's host.
    #[arg(long, global = true, env = "PALISADE_REDIS_TLS_SERVER_NAME")]
    tls_server_name: Option<String>,
    /// Sentinel: the sentinels' ACL user.
    #[arg(long, global = true, env = "PALISADE_REDIS_SENTINEL_USER")]
    sentinel_user: Option<String>,
    /// Sentinel: a file holding the sentinels' password.
    #[arg(long, global = true, env = "PALISADE_REDIS_SENTINEL_PASSWORD_FILE")]
    sentinel_password_file: Option<std::path::PathBuf>,
    /// One JSON object per command on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
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
enum CacheCmd {
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
struct Fields {
    /// `name=value`; repeat for more fields.
    #[arg(long = "field", value_parser = parse_field)]
    fields: Vec<(String, String)>,
}

#[derive(Subcommand, Debug)]
enum JobsCmd {
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
}

#[derive(Subcommand, Debug)]
enum ThrottleCmd {
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
    fn mode(&self) -> Result<Option<Mode>, Error> {
        match self.mode.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(m) => m.parse().map(Some),
        }
    }

    /// The Redis URL; an empty value means none.
    fn url(&self) -> Option<&str> {
        self.redis_url.as_deref().map(str::trim).filter(|u| !u.is_empty())
    }
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration (e.g. 250ms, 30s, 1h): {e}"))
}

fn parse_field(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?} is not name=value"))
}

fn parse_rate(s: &str, burst: u32) -> Result<Rate, Error> {
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

/// What a command produced: its JSON, its human text, its exit code.
struct Out {
    json: Value,
    text: String,
    code: u8,
}

impl Out {
    fn ok(json: Value, text: String) -> Self {
        Out { json, text, code: 0 }
    }
    fn negative(json: Value, text: String) -> Self {
        Out { json, text, code: 1 }
    }
}

fn exit_code(e: &Error) -> u8 {
    match e.kind() {
        ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::Tls => 2,
        // sysexits' EX_NOPERM: the credentials were refused.
        ErrorKind::Auth => 77,
        ErrorKind::InvalidInput | ErrorKind::Config => 64,
        ErrorKind::Conflict => 1,
        _ => 65,
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn patch(fields: &Fields) -> Patch {
    fields
        .fields
        .iter()
        .fold(Patch::new(), |p, (k, v)| p.field(k.clone(), v.clone()))
}

fn status(s: &str) -> Result<JobStatus, Error> {
    s.parse()
}

fn prov<T>(t: &Tagged<T>) -> &'static str {
    t.provenance.as_str()
}

async fn build(cli: &Cli) -> Result<Palisade, Error> {
    let mut b = Palisade::builder().tenant(&cli.tenant);
    if let Some(url) = cli.url() {
        b = b.redis_url(url);
    }
    fn set(p: &Option<std::path::PathBuf>) -> Option<&std::path::PathBuf> {
        p.as_ref().filter(|p| !p.as_os_str().is_empty())
    }
    if let Some(p) = set(&cli.password_file) {
        b = b.redis_password_file(p);
    }
    if let Some(p) = set(&cli.ca_file) {
        b = b.tls_ca_file(p);
    }
    if let (Some(c), Some(k)) = (set(&cli.client_cert), set(&cli.client_key)) {
        b = b.tls_client_cert(c, k);
    }
    if let Some(n) = cli.tls_server_name.as_deref().filter(|n| !n.trim().is_empty()) {
        b = b.tls_server_name(n);
    }
    if let Some(p) = set(&cli.sentinel_password_file) {
        b = b.sentinel_password_file(cli.sentinel_user.as_deref(), p);
    }
    if let Some(mode) = cli.mode()? {
        b = b.mode(mode);
    }
    b.build().await
}

/// `doctor`'s report. A store that cannot be reached, or refuses TLS or the
/// credentials, is its answer (on stdout, exit 2 or 77); a configuration that cannot
/// work is an error like any other (`Err`: one JSON object on stderr, exit 64).
async fn doctor(cli: &Cli) -> Result<Out, Error> {
    Ok(match build(cli).await {
        Ok(p) => {
            let d = p.doctor().await;
            let json = json!({
                "mode": d.mode.as_str(),
                "state": d.health.as_str(),
                "endpoint": d.endpoint,
                "server_version": d.server_version,
                "topology": d.topology,
                "tls": d.tls,
                "tls_server_name": d.tls_server_name,
                "user": d.user,
                "sentinel_service": d.sentinel_service,
                "connected_to": d.connected_to,
                "role": d.role,
                "round_trip_ms": d.round_trip.map(|r| r.as_secs_f64() * 1000.0),
                "can_serve": d.can_serve,
                "error": d.error,
                "contracts": d.contracts.iter().map(|c| json!({"contract": c.contract, "ok": c.error.is_none(), "error": c.error})).collect::<Vec<_>>(),
            });
            let tls = match (d.tls, &d.tls_server_name) {
                (Some(true), Some(name)) => format!("TLS on (verified name {name})"),
                (Some(true), None) => "TLS on".to_owned(),
                (Some(false), _) => "TLS off".to_owned(),
                (None, _) => "-".to_owned(),
            };
            let sentinel = match (&d.sentinel_service, &d.connected_to) {
                (Some(service), at) => format!(
                    " · sentinel service {service}, primary {} ({})",
                    at.as_deref().unwrap_or("unknown"),
                    d.role.as_deref().unwrap_or("role unknown")
                ),
                (None, _) => String::new(),
            };
            let refused: String = d
                .contracts
                .iter()
                .filter_map(|c| {
                    c.error
                        .as_ref()
                        .map(|e| format!("\n  {} cannot be served: {e}", c.contract))
                })
                .collect();
            let text = format!(
                "mode {} · state {} · {} · {} · {} · user {} · redis {}{} · round trip {} · {}{refused}",
                d.mode,
                d.health,
                d.endpoint.as_deref().unwrap_or("no network"),
                d.topology.as_deref().unwrap_or("-"),
                tls,
                d.user.as_deref().unwrap_or("default"),
                d.server_version.as_deref().unwrap_or("-"),
                sentinel,
                d.round_trip
                    .map_or("-".to_owned(), |r| format!("{:.2} ms", r.as_secs_f64() * 1000.0)),
                if d.can_serve { "can serve" } else { "CANNOT serve" },
            );
            Out {
                json,
                text,
                code: if d.can_serve { 0 } else { 2 },
            }
        }
        Err(e) if !e.is_unavailable() && e.kind() != ErrorKind::Auth => return Err(e),
        Err(e) => {
            let json = json!({
                "mode": cli.mode().ok().flatten().unwrap_or(Mode::default_for(cli.url().is_some())).as_str(),
                "state": "unavailable",
                "can_serve": false,
                "error": e.chain(),
                "error_kind": e.kind().as_str(),
            });
            Out {
                json,
                text: format!("CANNOT serve: {}", e.chain()),
                code: exit_code(&e),
            }
        }
    })
}

/// The one dispatch of every command that runs on the runtime: `doctor` reports even
/// when the build fails, `load` (in a worker process) answers its tally, every other
/// command builds a `Palisade` first.
async fn run(cli: &Cli) -> Result<Out, Error> {
    match &cli.command {
        Command::Doctor => doctor(cli).await,
        Command::Load(_) => {
            let url = cli.url().unwrap_or_default().to_owned();
            let mode = cli.mode()?.unwrap_or(Mode::StrictDistributed);
            let tally = load::worker_main(mode, &url).await?;
            Ok(Out::ok(tally.clone(), tally.to_string()))
        }
        Command::Cache(c) => cache(&build(cli).await?, c).await,
        Command::Jobs(c) => jobs(&build(cli).await?, c).await,
        Command::Throttle(c) => throttle(&build(cli).await?, c).await,
        Command::Limit { key, rate, burst } => limit(&build(cli).await?, key, rate, *burst).await,
    }
}

async fn limit(p: &Palisade, key: &str, rate: &str, burst: u32) -> Result<Out, Error> {
    let rate = parse_rate(rate, burst)?;
    let t = p.rate_limiter().limit(key, &rate).await?;
    Ok(match t.value {
        RateDecision::Allowed { remaining } => Out::ok(
            json!({"key": key, "allowed": true, "remaining": remaining, "provenance": prov(&t)}),
            format!("allowed, {remaining} remaining ({})", t.provenance),
        ),
        RateDecision::Limited { retry_after } => Out::negative(
            json!({"key": key, "allowed": false, "retry_after_ms": retry_after.as_millis() as u64, "provenance": prov(&t)}),
            format!("limited, retry after {retry_after:?} ({})", t.provenance),
        ),
    })
}

async fn cache(p: &Palisade, c: &CacheCmd) -> Result<Out, Error> {
    let ns = |name: &str| p.cache().namespace(name);
    Ok(match c {
        CacheCmd::Get { ns: n, key } => {
            let t = ns(n)?.get(key).await?;
            let json = json!({"namespace": n, "key": key, "found": t.value.is_some(),
                "value": t.value.as_deref().map(text), "provenance": prov(&t)});
            match &t.value {
                Some(v) => Out::ok(json, format!("{} ({})", text(v), t.provenance)),
                None => Out::negative(json, format!("miss ({})", t.provenance)),
            }
        }
        CacheCmd::Set { ns: n, key, value, ttl } => {
            let t = ns(n)?.set(key, value.as_bytes(), *ttl).await?;
            Out::ok(
                json!({"namespace": n, "key": key, "stored": true, "ttl_ms": ttl.as_millis() as u64, "provenance": prov(&t)}),
                format!("stored for {ttl:?} ({})", t.provenance),
            )
        }
        CacheCmd::Del { ns: n, key } => {
            let t = ns(n)?.delete(key).await?;
            let json = json!({"namespace": n, "key": key, "deleted": t.value, "provenance": prov(&t)});
            if t.value {
                Out::ok(json, format!("deleted ({})", t.provenance))
            } else {
                Out::negative(json, format!("not found ({})", t.provenance))
            }
        }
        CacheCmd::Clear { ns: n } => {
            let t = ns(n)?.clear().await?;
            Out::ok(
                json!({"namespace": n, "removed": t.value, "provenance": prov(&t)}),
                format!("removed {} ({})", t.value, t.provenance),
            )
        }
        CacheCmd::Stats => {
            let s = p.cache().stats();
            let errors: serde_json::Map<String, Value> = s
                .status
                .errors
                .iter()
                .map(|(k, n)| (k.as_str().to_owned(), json!(n)))
                .collect();
            Out::ok(
                json!({"hits": s.hits, "misses": s.misses, "sets": s.sets, "deletes": s.deletes, "errors": errors,
                    "degraded_reads": s.degraded_reads, "degraded_writes": s.degraded_writes, "mode": s.status.mode.as_str(),
                    "state": s.status.health.as_str(), "degraded_since_ms": s.status.since.map(millis),
                    "last_error": s.status.last_error.map(|e| e.message)}),
                format!(
                    "mode {} · state {} · {} hits · {} misses · {} sets · {} deletes",
                    s.status.mode, s.status.health, s.hits, s.misses, s.sets, s.deletes
                ),
            )
        }
    })
}

fn record_json(id: &str, r: &JobRecord, p: Provenance) -> Value {
    let fields: serde_json::Map<String, Value> = r.fields.iter().map(|(k, v)| (k.clone(), json!(text(v)))).collect();
    json!({"id": id, "found": true, "status": r.status.as_str(), "progress": r.progress, "attempts": r.attempts,
        "error": r.error, "result": r.result.as_deref().map(text), "created_at_ms": r.created_at.map(millis),
        "updated_at_ms": r.updated_at.map(millis), "heartbeat_at_ms": r.heartbeat_at.map(millis),
        "finished_at_ms": r.finished_at.map(millis), "presumed_dead": r.presumed_dead, "fields": fields,
        "provenance": p.as_str()})
}

fn outcome(id: &str, what: &str, t: Tagged<Outcome>) -> Out {
    let p = t.provenance;
    match t.value {
        Outcome::Applied => Out::ok(
            json!({"id": id, what: "applied", "provenance": p.as_str()}),
            format!("{what}: applied ({p})"),
        ),
        Outcome::Refused { found } => Out::negative(
            json!({"id": id, what: "refused", "found": found.as_str(), "provenance": p.as_str()}),
            format!("{what}: refused, the job is {found} ({p})"),
        ),
        Outcome::NotFound => Out::negative(
            json!({"id": id, what: "not_found", "provenance": p.as_str()}),
            format!("{what}: no such job ({p})"),
        ),
        _ => Out::negative(json!({"id": id, what: "unknown"}), format!("{what}: unknown outcome")),
    }
}

async fn jobs(p: &Palisade, c: &JobsCmd) -> Result<Out, Error> {
    let j = p.jobs();
    Ok(match c {
        JobsCmd::Create {
            id,
            fields,
            ttl,
            if_absent,
        } => {
            let record = fields
                .fields
                .iter()
                .fold(JobRecord::queued(), |r, (k, v)| r.with_field(k.clone(), v.clone()));
            let t = if *if_absent {
                j.create_if_absent(id, &record, *ttl).await
            } else {
                j.create(id, &record, *ttl).await
            };
            match t {
                Ok(t) => Out::ok(
                    json!({"id": id, "created": true, "provenance": prov(&t)}),
                    format!("created {id} ({})", t.provenance),
                ),
                Err(e) if e.kind() == ErrorKind::Conflict => Out::negative(
                    json!({"id": id, "created": false, "reason": "exists"}),
                    format!("{id} already exists"),
                ),
                Err(e) => return Err(e),
            }
        }
        JobsCmd::Get { id } => {
            let t = j.get(id).await?;
            match &t.value {
                Some(r) => Out::ok(
                    record_json(id, r, t.provenance),
                    format!(
                        "{id}: {} progress {:?} fields {:?} ({})",
                        r.status,
                        r.progress,
                        r.fields.keys().collect::<Vec<_>>(),
                        t.provenance
                    ),
                ),
                None => Out::negative(
                    json!({"id": id, "found": false, "provenance": prov(&t)}),
                    format!("{id}: not found ({})", t.provenance),
                ),
            }
        }
        JobsCmd::Update { id, fields } => {
            let t = j.update(id, &patch(fields)).await?;
            let json = json!({"id": id, "applied": t.value, "provenance": prov(&t)});
            if t.value {
                Out::ok(json, format!("updated ({})", t.provenance))
            } else {
                Out::negative(json, format!("not found ({})", t.provenance))
            }
        }
        JobsCmd::Transition { id, from, to, fields } => outcome(
            id,
            "transition",
            j.transition(id, status(from)?, status(to)?, &patch(fields)).await?,
        ),
        JobsCmd::Heartbeat { id } => outcome(id, "heartbeat", j.heartbeat(id).await?),
        JobsCmd::Delete { id } => {
            let t = j.delete(id).await?;
            let json = json!({"id": id, "deleted": t.value, "provenance": prov(&t)});
            if t.value {
                Out::ok(json, format!("deleted ({})", t.provenance))
            } else {
                Out::negative(json, format!("not found ({})", t.provenance))
            }
        }
    })
}

async fn throttle(p: &Palisade, c: &ThrottleCmd) -> Result<Out, Error> {
    let t = p.throttle();
    Ok(match c {
        ThrottleCmd::Acquire {
            key,
            global_cap,
            key_cap,
            min_interval,
            lease,
            hold,
        } => {
            let policy = Policy::builder()
                .global_cap(*global_cap)
                .key_cap(*key_cap)
                .min_interval(*min_interval)
                .lease_ttl(*lease)
                .build()?;
            let d = t.acquire(key, &policy).await?;
            let provenance = d.provenance;
            match d.value {
                Decision::Acquired(permit) => {
                    tokio::time::sleep(*hold).await;
                    let lease = permit.lease().clone();
                    let released = permit.release().await?;
                    Out::ok(
                        json!({"key": key, "acquired": true, "lease_id": lease.id,
                            "acquired_at_us": micros(lease.acquired_at), "expires_at_us": micros(lease.expires_at),
                            "released_at_us": released.map(micros), "provenance": provenance.as_str()}),
                        format!(
                            "acquired lease {} at {} µs, released at {} ({provenance})",
                            lease.id,
                            micros(lease.acquired_at),
                            released.map_or("expiry".to_owned(), |r| format!("{} µs", micros(r)))
                        ),
                    )
                }
                Decision::Denied { reason, retry_after } => Out::negative(
                    json!({"key": key, "acquired": false, "reason": reason.as_str(), "retry_after_ms": retry_after.as_secs_f64() * 1000.0, "provenance": provenance.as_str()}),
                    format!("denied: {reason}, retry after {retry_after:?} ({provenance})"),
                ),
            }
        }
        ThrottleCmd::Penalize { key, duration } => {
            let until = t.penalize(key, *duration).await?;
            Out::ok(
                json!({"key": key, "penalty_until_ms": millis(until.value), "provenance": prov(&until)}),
                format!("penalized until {} ms ({})", millis(until.value), until.provenance),
            )
        }
        ThrottleCmd::Inspect { key } => {
            let s = t.inspect(key).await?;
            let v = &s.value;
            Out::ok(
                json!({"key": key, "key_leases": v.key_leases, "global_leases": v.global_leases,
                    "penalty_until_ms": v.penalty_until.map(millis), "last_acquired_ms": v.last_acquired.map(millis),
                    "provenance": prov(&s)}),
                format!(
                    "{} leases on {key}, {} in the namespace, penalty until {:?}, last acquisition {:?} ({})",
                    v.key_leases,
                    v.global_leases,
                    v.penalty_until.map(millis),
                    v.last_acquired.map(millis),
                    s.provenance
                ),
            )
        }
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // `--help` and `--version` print as clap prints them.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // Under `--json` every error is one JSON object on stderr, usage errors
            // included; the text is clap's, without its colours.
            if std::env::args().any(|a| a == "--json") {
                let message = e.render().to_string();
                let message = message.trim().trim_start_matches("error: ");
                eprintln!("{}", json!({"error": {"kind": "usage", "message": message}}));
            } else {
                let _ = e.print();
            }
            return ExitCode::from(64);
        }
    };
    if let Command::Load(args) = &cli.command {
        if !load::is_worker() {
            return load_orchestrator(&cli, args);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(70);
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(out) => {
            if cli.json {
                println!("{}", out.json);
            } else {
                println!("{}", out.text);
            }
            ExitCode::from(out.code)
        }
        Err(e) => {
            if cli.json {
                eprintln!(
                    "{}",
                    json!({"error": {"kind": e.kind().as_str(), "message": e.chain()}})
                );
            } else {
                eprintln!("error: {}", e.chain());
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

fn load_orchestrator(cli: &Cli, args: &load::LoadArgs) -> ExitCode {
    match load::orchestrate(args) {
        Ok((report, clean)) => {
            if cli.json {
                let mut slim = report.clone();
                for m in slim["modes"].as_array_mut().into_iter().flatten() {
                    m.as_object_mut().map(|o| o.remove("chart"));
                }
                println!("{slim}");
            } else {
                for m in report["modes"].as_array().into_iter().flatten() {
                    println!(
                        "mode {}: invariants {} · detect ≤ {} ms · recover ≤ {} ms",
                        m["mode"].as_str().unwrap_or(""),
                        m["invariants"],
                        m["detect_ms_max"],
                        m["recover_ms_max"]
                    );
                }
                println!("all invariants zero: {clean}");
            }
            ExitCode::from(if clean { 0 } else { 1 })
        }
        Err(e) => {
            if cli.json {
                eprintln!("{}", json!({"error": {"kind": "load", "message": e.to_string()}}));
            } else {
                eprintln!("error: {e}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}
