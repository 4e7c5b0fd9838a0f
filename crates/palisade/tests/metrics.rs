//! The `metrics` feature, scraped over HTTP from metrics-exporter-prometheus after a
//! workload with a real outage: a degraded palisade on a private `redis-server` that is
//! killed and restarted. The scrape must show the outage, the degraded answers (and the
//! gauge at 1 during the outage, 0 after) and the recovery — and never a key.
#![cfg(all(feature = "metrics", feature = "redis", feature = "local"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use palisade::{Component, EventKind, JobRecord, JobStatus, Mode, Palisade, Patch, Provenance, Rate};
use palisade_redis_server::env;

const SECRET_KEY: &str = "user-4711-session";

fn scrape(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// The value of the series `name{labels…}` whose labels include every `want` pair
/// (summed over the series that match).
fn value(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            let (n, labels) = series.split_once('{').unwrap_or((series, ""));
            (n == name && want.iter().all(|(k, v)| labels.contains(&format!("{k}=\"{v}\""))))
                .then(|| v.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

async fn work(p: &Palisade, n: usize) -> usize {
    let mut local = 0;
    for i in 0..n {
        let key = format!("{SECRET_KEY}-{i}");
        if let Ok(t) = p.cache().set(&key, b"v", Duration::from_secs(60)).await {
            local += usize::from(t.provenance == Provenance::LocalDegraded);
        }
        let _ = p.cache().get(&key).await;
        let _ = p
            .rate_limiter()
            .limit(SECRET_KEY, &Rate::per_second(1000).build().unwrap())
            .await;
    }
    local
}

async fn wait_for(rx: &mut tokio::sync::broadcast::Receiver<palisade::Event>, what: impl Fn(&EventKind) -> bool) {
    let give_up = Instant::now() + Duration::from_secs(15);
    loop {
        let e = tokio::time::timeout(give_up.saturating_duration_since(Instant::now()), rx.recv())
            .await
            .expect("the event in time")
            .unwrap();
        if e.component == Component::Cache && what(&e.kind) {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_scrape_shows_the_outage_the_degraded_answers_and_the_recovery() {
    let Some(mut server) = env::private_server("metrics_scrape") else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(([127, 0, 0, 1], port))
        .install()
        .unwrap();
    let events = palisade::Events::default();
    let mut rx = events.subscribe();
    let p = Palisade::builder()
        .events(events)
        .mode(Mode::ExplicitDegraded)
        .redis_url(&server.url())
        .command_timeout(Duration::from_millis(300))
        .probe_period(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    assert_eq!(work(&p, 20).await, 0);
    let jobs = p.jobs();
    jobs.create("j1", &JobRecord::queued(), Duration::from_secs(60))
        .await
        .unwrap();
    jobs.transition("j1", JobStatus::Queued, JobStatus::Running, &Patch::new())
        .await
        .unwrap();
    jobs.transition("j1", JobStatus::Queued, JobStatus::Running, &Patch::new())
        .await
        .unwrap();

    server.kill();
    // Calls until the one down event, then calls served locally.
    let give_up = Instant::now() + Duration::from_secs(15);
    while p.cache().get("probe").await.map(|t| t.provenance).ok() != Some(Provenance::LocalDegraded) {
        assert!(Instant::now() < give_up, "never degraded");
    }
    wait_for(&mut rx, |k| matches!(k, EventKind::Degraded)).await;
    let local = work(&p, 20).await;
    assert_eq!(local, 20, "every set of the outage was served locally");
    let during = scrape(port);
    assert_eq!(
        value(&during, "palisade_degraded", &[("component", "cache")]),
        1.0,
        "{during}"
    );

    server.start_again().unwrap();
    wait_for(&mut rx, |k| matches!(k, EventKind::Recovered { .. })).await;
    assert_eq!(work(&p, 20).await, 0);
    let after = scrape(port);

    let cache = |outcome: &'static str, provenance: &'static str| {
        value(
            &after,
            "palisade_ops_total",
            &[
                ("component", "cache"),
                ("op", "set"),
                ("outcome", outcome),
                ("provenance", provenance),
            ],
        )
    };
    assert_eq!(
        value(&after, "palisade_outages_total", &[("component", "cache")]),
        1.0,
        "{after}"
    );
    assert_eq!(
        value(&after, "palisade_degraded", &[("component", "cache")]),
        0.0,
        "{after}"
    );
    assert!(cache("ok", "local_degraded") >= 20.0, "{after}");
    assert!(cache("ok", "distributed") >= 40.0, "{after}");
    assert!(
        value(
            &after,
            "palisade_op_duration_seconds_count",
            &[("component", "cache"), ("op", "get")]
        ) >= 60.0,
        "{after}"
    );
    assert!(
        value(
            &after,
            "palisade_ratelimit_decisions_total",
            &[("namespace", "ratelimit"), ("outcome", "allowed")]
        ) >= 60.0,
        "{after}"
    );
    let transitions = |outcome| {
        value(
            &after,
            "palisade_job_transitions_total",
            &[("from", "queued"), ("to", "running"), ("outcome", outcome)],
        )
    };
    assert_eq!((transitions("applied"), transitions("rejected")), (1.0, 1.0), "{after}");
    assert!(!after.contains(SECRET_KEY), "a key is never a label: {after}");
    assert!(!after.contains("tenant=\""), "no tenant label unless asked for");
}
