//! The test servers: a private redis-server that can be killed, paused and restarted,
//! and the shared standalone server and 3-master cluster started by `cargo xtask ci`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use palisade_redis_server::env;
use palisade_redis_server::resp::{self, Conn, Reply};

fn ping(addr: &str, timeout: Duration) -> std::io::Result<Reply> {
    Conn::connect(addr, timeout)?.command(&["PING"])
}

#[test]
fn private_server_can_be_killed_paused_resumed_and_restarted() {
    let Some(mut server) = env::private_server("private_server_can_be_killed_paused_resumed_and_restarted") else {
        return;
    };
    let addr = server.addr();
    let port = server.port();
    assert_eq!(
        ping(&addr, Duration::from_secs(1)).unwrap(),
        Reply::Simple("PONG".into())
    );
    assert_eq!(
        resp::command(&addr, &["SET", "k", "v"]).unwrap(),
        Reply::Simple("OK".into())
    );

    // Paused: the socket accepts, nothing answers.
    let mut conn = Conn::connect(&addr, Duration::from_millis(200)).unwrap();
    server.pause().unwrap();
    let started = Instant::now();
    assert!(conn.command(&["PING"]).is_err(), "a paused server must not answer");
    assert!(started.elapsed() >= Duration::from_millis(150));
    server.resume().unwrap();
    assert_eq!(
        ping(&addr, Duration::from_secs(1)).unwrap(),
        Reply::Simple("PONG".into())
    );

    // Killed: connection refused.
    let pid = server.pid().unwrap();
    server.kill();
    assert!(!server.is_running());
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "SIGKILLed and reaped"
    );
    assert!(ping(&addr, Duration::from_millis(200)).is_err());

    // Restarted on the same port, empty (no persistence).
    server.start_again().unwrap();
    assert_eq!(server.port(), port);
    assert_eq!(
        ping(&addr, Duration::from_secs(1)).unwrap(),
        Reply::Simple("PONG".into())
    );
    assert_eq!(resp::command(&addr, &["GET", "k"]).unwrap(), Reply::Nil);

    server.restart().unwrap();
    assert_eq!(
        ping(&addr, Duration::from_secs(1)).unwrap(),
        Reply::Simple("PONG".into())
    );

    // Dropped: gone.
    let pid = server.pid().unwrap();
    drop(server);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn shared_standalone_server_answers() {
    let Some(url) = env::redis_url("shared_standalone_server_answers") else {
        return;
    };
    let addr = url.trim_start_matches("redis://");
    assert_eq!(
        ping(addr, Duration::from_secs(2)).unwrap(),
        Reply::Simple("PONG".into())
    );
    let info = resp::command(addr, &["INFO", "server"]).unwrap().text().unwrap();
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .expect("redis_version in INFO");
    let major: u32 = version.split('.').next().unwrap().parse().unwrap();
    assert!(major >= 7, "Redis >= 7 required, got {version}");
    assert!(info.contains("redis_mode:standalone"), "{info}");
}

#[test]
fn shared_cluster_has_three_masters_with_a_replica_each_covering_every_slot() {
    let Some(nodes) = env::cluster_nodes("shared_cluster_has_three_masters_with_a_replica_each_covering_every_slot")
    else {
        return;
    };
    assert_eq!(nodes.len(), 6, "3 masters + 3 replicas");
    for node in &nodes {
        let info = resp::command(node, &["CLUSTER", "INFO"]).unwrap().text().unwrap();
        assert!(info.contains("cluster_state:ok"), "{node}: {info}");
        assert!(info.contains("cluster_slots_assigned:16384"), "{node}: {info}");
        assert!(info.contains("cluster_known_nodes:6\r"), "{node}: {info}");
        let Reply::Array(shards) = resp::command(node, &["CLUSTER", "SLOTS"]).unwrap() else {
            panic!("CLUSTER SLOTS is an array")
        };
        assert_eq!(shards.len(), 3, "three masters, each owning one slot range");
        for shard in &shards {
            let Reply::Array(parts) = shard else {
                panic!("a slot range is an array")
            };
            assert_eq!(parts.len(), 4, "start, end, master, one replica: {parts:?}");
        }
        let coverage = resp::command(node, &["CONFIG", "GET", "cluster-require-full-coverage"]).unwrap();
        let Reply::Array(pair) = &coverage else {
            panic!("{coverage:?}")
        };
        assert_eq!(
            pair.get(1).and_then(Reply::text).as_deref(),
            Some("no"),
            "{node}: {coverage:?}"
        );
    }
    // Keys in different slots really live on different nodes: MOVED from every node but
    // the one master that owns the key (a replica redirects too).
    let moved = nodes
        .iter()
        .filter(|n| matches!(resp::command(n, &["GET", "palisade-probe-key"]).unwrap(), Reply::Error(e) if e.starts_with("MOVED")))
        .count();
    assert_eq!(moved, 5, "exactly one master owns a key");
}
