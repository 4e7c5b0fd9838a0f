//! Fixtures shared by the Redis test files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code, unreachable_pub)]

use std::time::Duration;

use palisade_cache_core::testkit::Fixture;
use palisade_cache_core::{BoxFuture, Provenance};
use palisade_cache_redis::{RedisCache, RedisConfig, RedisConnection, RedisJobStore};
use palisade_redis_server::env;

/// A fixture over any Redis-backed cache backend, with real time.
pub struct RedisFixture<B> {
    pub backend: B,
    pub prefix: String,
    pub provenance: Provenance,
    /// A connection to look at what landed (`DUMP`), when the fixture has one.
    pub conn: Option<RedisConnection>,
}

impl<B: Clone + Send + Sync + 'static> Fixture for RedisFixture<B> {
    type Backend = B;
    fn backend(&self) -> B {
        self.backend.clone()
    }
    fn prefix(&self) -> &str {
        &self.prefix
    }
    fn provenance(&self) -> Provenance {
        self.provenance
    }
    fn short_ttl(&self) -> Duration {
        Duration::from_millis(400)
    }
    /// Real time: TTLs run on the Redis server's clock, so time passes by waiting.
    fn advance(&self, by: Duration) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(by))
    }
    fn controls_time(&self) -> bool {
        false
    }
    fn snapshot<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let conn = self.conn.as_ref()?;
            let dump: Option<palisade_cache_redis::fred::bytes::Bytes> =
                conn.command("dump", key, "DUMP", vec![key.into()]).await.ok()?;
            let expiry: i64 = conn
                .command("pexpiretime", key, "PEXPIRETIME", vec![key.into()])
                .await
                .ok()?;
            let mut out = dump.map(|b| b.to_vec()).unwrap_or_default();
            out.extend_from_slice(&expiry.to_le_bytes());
            Some(out)
        })
    }
    fn watchers<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<u64>> {
        Box::pin(async move {
            let conn = self.conn.as_ref()?;
            let reply: Vec<palisade_cache_redis::fred::types::Value> = conn
                .command("shardnumsub", key, "PUBSUB", vec!["SHARDNUMSUB".into(), key.into()])
                .await
                .ok()?;
            reply.get(1)?.as_u64()
        })
    }
}

/// A connection to the shared standalone server, or `None` (skip line printed).
pub async fn standalone(test: &str) -> Option<RedisConnection> {
    let url = env::redis_url(test)?;
    Some(
        RedisConnection::connect(&RedisConfig::from_url(&url).expect("a valid Redis URL"))
            .await
            .expect("connect to the shared Redis"),
    )
}

/// A connection to the shared TLS server, or `None` (skip line printed).
#[cfg(feature = "tls")]
pub async fn tls(test: &str) -> Option<RedisConnection> {
    let (url, ca) = env::tls(test)?;
    let mut opts = palisade_cache_redis::TlsOptions::default();
    opts.ca_file = Some(ca);
    Some(
        RedisConnection::connect(&RedisConfig::from_url(&url).expect("a valid Redis URL").with_tls(opts))
            .await
            .expect("connect to the shared TLS Redis"),
    )
}

/// A connection to the shared standalone server as a least-privilege ACL user: the
/// commands of [`palisade_cache_redis::ACL_COMMANDS`] only, on keys under the fixture's
/// prefix (`~<prefix>*`: the suites add `-<n>` to it), no channels.
pub async fn least_privilege(test: &str) -> Option<(RedisConnection, String)> {
    let url = env::redis_url(test)?;
    let prefix = env::unique_prefix(test);
    let user = format!("lp-{}", unique_suffix());
    let mut args: Vec<String> = vec![
        "ACL".into(),
        "SETUSER".into(),
        user.clone(),
        "on".into(),
        ">lp-pw".into(),
    ];
    args.extend([
        "resetkeys".into(),
        format!("~{prefix}*"),
        "resetchannels".into(),
        // A job's channel is its key.
        format!("&{prefix}*"),
        "-@all".into(),
    ]);
    args.extend(palisade_cache_redis::ACL_COMMANDS.iter().map(|c| (*c).to_owned()));
    let addr = url.trim_start_matches("redis://").to_owned();
    let reply = palisade_redis_server::resp::command(&addr, &args).expect("ACL SETUSER");
    assert_eq!(
        reply,
        palisade_redis_server::resp::Reply::Simple("OK".into()),
        "{reply:?}"
    );
    let url = format!("redis://{user}:lp-pw@{addr}");
    let conn = RedisConnection::connect(&RedisConfig::from_url(&url).expect("a valid Redis URL"))
        .await
        .expect("the least-privilege user connects");
    Some((conn, prefix))
}

/// A name no other fixture of this run shares: an ACL user set up twice under one name
/// would take the first test's key pattern away (`resetkeys`), a NOPERM in that test.
fn unique_suffix() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

/// A connection to the shared Sentinel topology's primary, or `None` (skip line
/// printed).
pub async fn sentinel(test: &str) -> Option<RedisConnection> {
    let url = env::sentinel_url(test)?;
    Some(
        RedisConnection::connect(&RedisConfig::from_url(&url).expect("a valid Redis URL"))
            .await
            .expect("connect through the shared sentinels"),
    )
}

fn ctx(
    component: palisade_cache_core::Component,
    mode: palisade_cache_core::Mode,
) -> palisade_cache_core::SupervisorContext {
    palisade_cache_core::SupervisorContext::new(component, mode, palisade_cache_core::Events::default())
}

/// The cache over `conn`: plain.
pub fn plain_cache(conn: RedisConnection, test: &str) -> RedisFixture<RedisCache> {
    fixture_on(&conn, RedisCache::new(conn.clone()), test)
}

/// The cache over `conn` in strict mode.
pub fn strict_cache(conn: RedisConnection, test: &str) -> RedisFixture<palisade_cache_core::Strict<RedisCache>> {
    use palisade_cache_core::{Component, Mode, Strict};
    let backend = Strict::new(
        RedisCache::new(conn.clone()),
        ctx(Component::Cache, Mode::StrictDistributed),
    )
    .unwrap();
    fixture_on(&conn, backend, test)
}

/// The cache over `conn` in degraded mode (a healthy primary).
pub fn degraded_cache(
    conn: RedisConnection,
    test: &str,
) -> RedisFixture<palisade_cache_core::Failover<RedisCache, palisade_cache_local::LocalCache>> {
    use palisade_cache_core::{Component, Failover, FailoverOptions, Mode};
    let backend = Failover::new(
        RedisCache::new(conn.clone()),
        palisade_cache_local::LocalCache::default(),
        ctx(Component::Cache, Mode::ExplicitDegraded),
        FailoverOptions::default(),
        None,
    )
    .unwrap();
    fixture_on(&conn, backend, test)
}

/// The job store over `conn`: plain.
pub async fn plain_jobs(conn: RedisConnection, test: &str) -> RedisFixture<RedisJobStore> {
    fixture_on(
        &conn,
        RedisJobStore::new(conn.clone()).await.expect("scripts load"),
        test,
    )
}

/// The job store over `conn` in strict mode.
pub async fn strict_jobs(
    conn: RedisConnection,
    test: &str,
) -> RedisFixture<palisade_cache_core::Strict<RedisJobStore>> {
    use palisade_cache_core::{Component, Mode};
    let store = RedisJobStore::new(conn.clone()).await.expect("scripts load");
    let backend = palisade_cache_core::Strict::new(store, ctx(Component::JobStore, Mode::StrictDistributed)).unwrap();
    fixture_on(&conn, backend, test)
}

/// The job store over `conn` in degraded mode (a healthy primary).
pub async fn degraded_jobs(
    conn: RedisConnection,
    test: &str,
) -> RedisFixture<palisade_cache_core::Failover<RedisJobStore, palisade_cache_local::LocalJobStore>> {
    use palisade_cache_core::{Component, Mode};
    let store = RedisJobStore::new(conn.clone()).await.expect("scripts load");
    let backend = palisade_cache_core::Failover::new(
        store,
        palisade_cache_local::LocalJobStore::default(),
        ctx(Component::JobStore, Mode::ExplicitDegraded),
        palisade_cache_core::FailoverOptions::default(),
        None,
    )
    .unwrap();
    fixture_on(&conn, backend, test)
}

/// The throttle over `conn`: plain.
pub async fn plain_throttle(conn: RedisConnection, test: &str) -> RedisFixture<palisade_cache_redis::RedisThrottle> {
    let t = palisade_cache_redis::RedisThrottle::new(conn.clone())
        .await
        .expect("scripts load")
        .with_restart_hold(false);
    fixture_on(&conn, t, test)
}

/// The throttle over `conn` in strict mode.
pub async fn strict_throttle(
    conn: RedisConnection,
    test: &str,
) -> RedisFixture<palisade_cache_core::Strict<palisade_cache_redis::RedisThrottle>> {
    use palisade_cache_core::{Component, Mode};
    let t = palisade_cache_redis::RedisThrottle::new(conn.clone())
        .await
        .expect("scripts load")
        .with_restart_hold(false);
    let backend = palisade_cache_core::Strict::new(t, ctx(Component::Throttle, Mode::StrictDistributed)).unwrap();
    fixture_on(&conn, backend, test)
}

/// The throttle over `conn` in degraded mode (a healthy primary).
pub async fn degraded_throttle(
    conn: RedisConnection,
    test: &str,
) -> RedisFixture<palisade_cache_core::Failover<palisade_cache_redis::RedisThrottle, palisade_cache_local::LocalThrottle>>
{
    use palisade_cache_core::{Component, Mode};
    let t = palisade_cache_redis::RedisThrottle::new(conn.clone())
        .await
        .expect("scripts load")
        .with_restart_hold(false);
    let backend = palisade_cache_core::Failover::new(
        t,
        palisade_cache_local::LocalThrottle::default(),
        ctx(Component::Throttle, Mode::ExplicitDegraded),
        palisade_cache_core::FailoverOptions::default(),
        None,
    )
    .unwrap();
    fixture_on(&conn, backend, test)
}

/// Every contract suite — cache, job store, throttle and rate limiter — plain, in
/// strict mode and in degraded mode, over the connections that `$connect` (an
/// `async fn(&str) -> Option<RedisConnection>`) makes.
#[allow(unused_macros)]
macro_rules! deployment_suites {
    ($connect:path) => {
        crate::common::deployment_suites!(@one $connect, cache_plain, cache_suite, palisade_cache_core, plain_cache, sync,
            palisade_cache_redis::RedisCache);
        crate::common::deployment_suites!(@one $connect, cache_strict, cache_suite, palisade_cache_core, strict_cache, sync,
            palisade_cache_core::Strict<palisade_cache_redis::RedisCache>);
        crate::common::deployment_suites!(@one $connect, cache_degraded, cache_suite, palisade_cache_core, degraded_cache, sync,
            palisade_cache_core::Failover<palisade_cache_redis::RedisCache, palisade_cache_local::LocalCache>);
        crate::common::deployment_suites!(@one $connect, jobs_plain, job_suite, palisade_job_store, plain_jobs, async,
            palisade_cache_redis::RedisJobStore);
        crate::common::deployment_suites!(@one $connect, jobs_strict, job_suite, palisade_job_store, strict_jobs, async,
            palisade_cache_core::Strict<palisade_cache_redis::RedisJobStore>);
        crate::common::deployment_suites!(@one $connect, jobs_degraded, job_suite, palisade_job_store, degraded_jobs, async,
            palisade_cache_core::Failover<palisade_cache_redis::RedisJobStore, palisade_cache_local::LocalJobStore>);
        crate::common::deployment_suites!(@one $connect, throttle_plain, throttle_suite, palisade_throttle, plain_throttle, async,
            palisade_cache_redis::RedisThrottle);
        crate::common::deployment_suites!(@one $connect, throttle_strict, throttle_suite, palisade_throttle, strict_throttle, async,
            palisade_cache_core::Strict<palisade_cache_redis::RedisThrottle>);
        crate::common::deployment_suites!(@one $connect, throttle_degraded, throttle_suite, palisade_throttle, degraded_throttle, async,
            palisade_cache_core::Failover<palisade_cache_redis::RedisThrottle, palisade_cache_local::LocalThrottle>);
    };
    (@one $connect:path, $module:ident, $suite:ident, $krate:ident, $wrap:ident, sync, $ty:ty) => {
        mod $module {
            async fn fixture(test: &str) -> Option<crate::common::RedisFixture<$ty>> {
                Some(crate::common::$wrap($connect(test).await?, test))
            }
            $krate::$suite!(fixture);
        }
    };
    (@one $connect:path, $module:ident, $suite:ident, $krate:ident, $wrap:ident, async, $ty:ty) => {
        mod $module {
            async fn fixture(test: &str) -> Option<crate::common::RedisFixture<$ty>> {
                Some(crate::common::$wrap($connect(test).await?, test).await)
            }
            $krate::$suite!(fixture);
        }
    };
}
#[allow(unused_imports)]
pub(crate) use deployment_suites;

/// A connection to the shared cluster, or `None` (skip line printed).
pub async fn cluster(test: &str) -> Option<RedisConnection> {
    let nodes = env::cluster_nodes(test)?;
    Some(
        RedisConnection::connect(&RedisConfig::cluster(&nodes).expect("valid seeds"))
            .await
            .expect("connect to the shared cluster"),
    )
}

pub fn fixture<B>(backend: B, test: &str, provenance: Provenance) -> RedisFixture<B> {
    RedisFixture {
        backend,
        prefix: env::unique_prefix(test),
        provenance,
        conn: None,
    }
}

/// A fixture over `conn` that can look at what landed ([`Fixture::snapshot`]).
pub fn fixture_on<B>(conn: &RedisConnection, backend: B, test: &str) -> RedisFixture<B> {
    RedisFixture {
        conn: Some(conn.clone()),
        ..fixture(backend, test, Provenance::Distributed)
    }
}

/// A fixture whose keys live under `prefix`.
pub fn fixture_with_prefix<B>(backend: B, prefix: String) -> RedisFixture<B> {
    RedisFixture {
        backend,
        prefix,
        provenance: Provenance::Distributed,
        conn: None,
    }
}

/// The command deadline of the fault tests.
pub const DEADLINE: std::time::Duration = std::time::Duration::from_millis(300);
/// What a call may take beyond its deadline (scheduling on a loaded 2-core machine).
pub const SLACK: std::time::Duration = std::time::Duration::from_millis(300);
/// How long recovery may take in a fault test (reconnect backoff + probe period).
pub const RECOVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// A connection config for a private server: the fault tests' deadlines.
pub fn fault_config(server: &palisade_redis_server::server::RedisServer) -> RedisConfig {
    RedisConfig::from_url(&server.url())
        .expect("a valid Redis URL")
        .with_command_timeout(DEADLINE)
        .with_connect_timeout(Duration::from_millis(800))
}

/// A supervisor context that probes quickly (the fault tests wait for recovery).
pub fn fault_ctx(
    component: palisade_cache_core::Component,
    mode: palisade_cache_core::Mode,
    events: &palisade_cache_core::Events,
) -> palisade_cache_core::SupervisorContext {
    palisade_cache_core::SupervisorContext::new(component, mode, events.clone()).with_config(
        palisade_cache_core::SupervisorConfig::default()
            .with_backoff_min(Duration::from_millis(50))
            .with_probe_period(Duration::from_millis(250))
            .with_probe_deadline(Duration::from_millis(200)),
    )
}

/// A namespace of tenant `tenant-a` under a prefix unique to `test`.
pub fn fault_ns(test: &str, namespace: &str) -> palisade_cache_core::Namespace {
    palisade_cache_core::Namespace::new(&env::unique_prefix(test), "tenant-a", namespace).expect("namespace")
}

/// What the waiting fault tests do to the server while callers are blocked.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// `SIGKILL`, then a restart.
    Kill,
    /// `SIGSTOP`, then `SIGCONT`.
    Pause,
}

impl Fault {
    /// Both faults, in the order the tests apply them.
    pub const BOTH: [Fault; 2] = [Fault::Kill, Fault::Pause];

    /// Applies the fault; returns the bound within which every blocked caller must
    /// have failed: a killed server drops every blocked connection at once; a paused
    /// one is noticed when each block ends (at most `MAX_BLOCK`) plus the deadline.
    pub fn apply(self, server: &mut palisade_redis_server::server::RedisServer) -> Duration {
        match self {
            Fault::Kill => {
                server.kill();
                DEADLINE + SLACK * 3
            }
            Fault::Pause => {
                server.pause().unwrap();
                palisade_cache_redis::MAX_BLOCK + DEADLINE + SLACK * 3
            }
        }
    }

    /// Brings the server back.
    pub fn undo(self, server: &mut palisade_redis_server::server::RedisServer) {
        match self {
            Fault::Kill => server.start_again().unwrap(),
            Fault::Pause => server.resume().unwrap(),
        }
    }
}

/// Awaits callers blocked when a fault struck at `at`: each must fail as
/// `Unavailable` within `bound`. Prints and returns the slowest.
pub async fn all_fail_within<T: std::fmt::Debug>(
    callers: Vec<tokio::task::JoinHandle<(Result<T, palisade_cache_core::Error>, std::time::Instant)>>,
    fault: Fault,
    at: std::time::Instant,
    bound: Duration,
) -> Duration {
    let n = callers.len();
    let mut slowest = Duration::ZERO;
    for c in callers {
        let (r, done) = tokio::time::timeout(bound + RECOVERY, c)
            .await
            .expect("a caller hung")
            .unwrap();
        let e = r.expect_err("no caller is served while Redis is gone");
        assert!(e.is_unavailable(), "{fault:?}: {e:?}");
        let took = done.duration_since(at);
        assert!(took <= bound, "{fault:?}: failed after {took:?} (bound {bound:?})");
        slowest = slowest.max(took);
    }
    eprintln!("{fault:?}: all {n} blocked callers failed within {slowest:?} (bound {bound:?})");
    slowest
}
