//! A fleet: 3 OS processes, each an axum server with the `RateLimitLayer` in strict
//! mode over one real `redis-server`, share one limit. 600 requests from 12 concurrent
//! clients, spread over the 3 servers, for 2 client keys with a burst of 40 and no
//! refill during the run: exactly 40 per key get through across the whole fleet (each
//! server alone would have let 40 through), every other answer is `429` with
//! `retry-after`. Then Redis is killed: every server answers `503`, none lets a
//! request through.
//!
//! The test binary re-executes itself as each server (`PALISADE_FLEET_ROLE`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http::HeaderName;
use palisade::{Mode, Palisade, Rate};
use palisade_redis_server::env;
use palisade_tower::{Header, RateLimitLayer};

mod common;
use common::get_as;

const ROLE: &str = "PALISADE_FLEET_ROLE";
const TENANT: &str = "PALISADE_FLEET_TENANT";
const SERVERS: usize = 3;
const CLIENTS: usize = 12;
const REQUESTS: usize = 600;
const BURST: u32 = 40;
const KEYS: [&str; 2] = ["alice", "bob"];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// One refill an hour: nothing refills during the run, so the fleet's total is the burst.
fn rate() -> Rate {
    Rate::per(1, Duration::from_secs(3600)).burst(BURST).build().unwrap()
}

/// A server process: prints `LISTEN addr`, serves until its stdin closes.
fn server(url: &str, tenant: &str) {
    runtime().block_on(async {
        let p = Palisade::builder()
            .mode(Mode::StrictDistributed)
            .redis_url(url)
            .tenant(tenant)
            .command_timeout(Duration::from_millis(300))
            .build()
            .await
            .unwrap();
        let layer = RateLimitLayer::new(p.rate_limiter(), rate(), Header(HeaderName::from_static("x-client")));
        let app = Router::new().route("/", get(|| async { "served" })).layer(layer);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("LISTEN {}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        // The parent closes stdin (or dies): then this server ends.
        tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new()))
            .await
            .unwrap()
            .unwrap();
    });
}

/// The children, killed when the test ends however it ends.
struct Fleet(Vec<Child>);

impl Drop for Fleet {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn main() -> ExitCode {
    if std::env::var(ROLE).is_ok() {
        server(&std::env::var(env::REDIS_URL).unwrap(), &std::env::var(TENANT).unwrap());
        return ExitCode::SUCCESS;
    }
    println!("\nrunning 1 test");
    let Some(mut redis) = env::private_server("http_fleet") else {
        println!("test result: ok. 0 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out");
        return ExitCode::SUCCESS;
    };
    let tenant = env::unique_prefix("fleet");
    let exe = std::env::current_exe().unwrap();
    let mut fleet = Fleet(Vec::new());
    let (tx, rx) = mpsc::channel();
    for _ in 0..SERVERS {
        let mut child = Command::new(&exe)
            .env(ROLE, "server")
            .env(TENANT, &tenant)
            .env(env::REDIS_URL, redis.url())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        fleet.0.push(child);
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if let Some(addr) = line.unwrap().strip_prefix("LISTEN ") {
                    let _ = tx.send(addr.parse::<SocketAddr>().unwrap());
                }
            }
        });
    }
    let addrs: Vec<SocketAddr> = (0..SERVERS)
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(20))
                .expect("every server listens in time")
        })
        .collect();

    let (per_server, retry_afters) = runtime().block_on(async {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let addrs = addrs.clone();
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    for n in (c..REQUESTS).step_by(CLIENTS) {
                        let (server, key) = (n % SERVERS, KEYS[n / SERVERS % KEYS.len()]);
                        let (status, h, body) = get_as(addrs[server], key).await;
                        seen.push((server, key, status, h.get("retry-after").cloned(), body));
                    }
                    seen
                })
            })
            .collect();
        let mut per_server: HashMap<(usize, &str, u16), usize> = HashMap::new();
        let mut retry_afters = Vec::new();
        for c in clients {
            for (server, key, status, retry_after, body) in c.await.unwrap() {
                assert!(status == 200 || status == 429, "server {server}: {status} {body}");
                assert_eq!(
                    status == 200,
                    body == "served",
                    "only an allowed request reaches the handler"
                );
                if status == 429 {
                    retry_afters.push(retry_after.expect("a 429 says when to retry"));
                }
                *per_server.entry((server, key, status)).or_default() += 1;
            }
        }
        (per_server, retry_afters)
    });
    let count = |f: &dyn Fn(&(usize, &str, u16)) -> bool| -> usize {
        per_server.iter().filter(|(k, _)| f(k)).map(|(_, n)| n).sum()
    };
    for key in KEYS {
        let allowed = count(&|(_, k, s)| *k == key && *s == 200);
        let limited = count(&|(_, k, s)| *k == key && *s == 429);
        let by_server: Vec<usize> = (0..SERVERS)
            .map(|i| count(&|(srv, k, s)| *srv == i && *k == key && *s == 200))
            .collect();
        println!(
            "fleet: key {key}: {allowed} allowed (per server {by_server:?}), {limited} limited, of {} requests over {SERVERS} processes",
            allowed + limited
        );
        assert_eq!(
            allowed, BURST as usize,
            "the fleet lets exactly the burst through for {key}"
        );
        assert_eq!(allowed + limited, REQUESTS / KEYS.len());
        assert!(
            by_server.iter().filter(|n| **n > 0).count() >= 2,
            "the allowance was shared by several processes: {by_server:?}"
        );
    }
    assert!(
        retry_afters.iter().all(|r| r.parse::<u64>().is_ok_and(|s| s > 0)),
        "{retry_afters:?}"
    );

    // Redis dies: every process refuses, none lets a request through.
    redis.kill();
    runtime().block_on(async {
        for (i, addr) in addrs.iter().enumerate() {
            let (status, h, body) = get_as(*addr, "carol").await;
            assert_eq!(status, 503, "server {i} without Redis: {h:?}");
            assert_ne!(body, "served");
            assert!(h.contains_key("retry-after"), "{h:?}");
        }
    });
    println!("test fleet_shares_one_limit_and_refuses_without_redis ... ok");
    println!("test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
    drop(fleet);
    ExitCode::SUCCESS
}
