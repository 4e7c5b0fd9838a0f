//! The `palisade` binary end to end, against a real redis-server and with it stopped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};

use palisade_redis_server::env;
use serde_json::Value;

fn palisade(url: Option<&str>, tenant: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_palisade"));
    cmd.env_remove("PALISADE_MODE")
        .env_remove("PALISADE_REDIS_URL")
        .env("PALISADE_TENANT", tenant);
    if let Some(url) = url {
        cmd.env("PALISADE_REDIS_URL", url);
    }
    cmd.args(args).output().unwrap()
}

/// Runs with `--json`; returns the exit code and the one JSON object on stdout.
fn json(url: Option<&str>, tenant: &str, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = palisade(url, tenant, &all);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "exactly one JSON object on stdout for {args:?}: {stdout:?} (stderr {})",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap(), serde_json::from_str(lines[0]).unwrap())
}

fn json_error(url: Option<&str>, tenant: &str, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = palisade(url, tenant, &all);
    assert!(out.stdout.is_empty(), "nothing on stdout on error");
    let stderr = String::from_utf8(out.stderr).unwrap();
    (out.status.code().unwrap(), serde_json::from_str(stderr.trim()).unwrap())
}

#[test]
fn every_command_against_a_real_redis() {
    let Some(server) = env::private_server("cli_every_command") else {
        return;
    };
    let url = server.url();
    let u = Some(url.as_str());
    let t = "cli";

    let (code, d) = json(u, t, &["doctor"]);
    assert_eq!(code, 0, "{d}");
    assert_eq!(
        (d["mode"].as_str(), d["state"].as_str(), d["topology"].as_str()),
        (Some("strict"), Some("healthy"), Some("standalone"))
    );
    assert!(d["server_version"].as_str().unwrap().starts_with('7'));
    assert!(d["round_trip_ms"].as_f64().unwrap() > 0.0);

    assert_eq!(json(u, t, &["cache", "set", "ns", "k", "v1", "--ttl", "30s"]).0, 0);
    let (code, v) = json(u, t, &["cache", "get", "ns", "k"]);
    assert_eq!(
        (code, v["value"].as_str(), v["provenance"].as_str()),
        (0, Some("v1"), Some("distributed"))
    );
    assert_eq!(json(u, t, &["cache", "get", "ns", "missing"]).0, 1, "a miss exits 1");
    assert_eq!(
        json(u, "other-tenant", &["cache", "get", "ns", "k"]).0,
        1,
        "tenants are isolated"
    );
    assert_eq!(json(u, t, &["cache", "del", "ns", "k"]).0, 0);
    assert_eq!(json(u, t, &["cache", "del", "ns", "k"]).0, 1);
    json(u, t, &["cache", "set", "ns", "a", "1"]);
    let (code, v) = json(u, t, &["cache", "clear", "ns"]);
    assert_eq!((code, v["removed"].as_u64()), (0, Some(1)));
    assert_eq!(json(u, t, &["cache", "stats"]).1["mode"].as_str(), Some("strict"));

    assert_eq!(
        json(u, t, &["jobs", "create", "j1", "--field", "owner=cli", "--ttl", "1h"]).0,
        0
    );
    assert_eq!(json(u, t, &["jobs", "create", "j1", "--if-absent"]).0, 1, "exists");
    assert_eq!(json(u, t, &["jobs", "update", "j1", "--field", "step=1"]).0, 0);
    assert_eq!(json(u, t, &["jobs", "update", "nope", "--field", "step=1"]).0, 1);
    assert_eq!(json(u, t, &["jobs", "heartbeat", "j1"]).0, 1, "not running yet");
    assert_eq!(
        json(
            u,
            t,
            &["jobs", "transition", "j1", "queued", "running", "--field", "worker=w1"]
        )
        .0,
        0
    );
    let (code, r) = json(u, t, &["jobs", "transition", "j1", "queued", "running"]);
    assert_eq!(
        (code, r["found"].as_str()),
        (1, Some("running")),
        "refused, with the status found"
    );
    assert_eq!(json(u, t, &["jobs", "heartbeat", "j1"]).0, 0);
    let (code, j) = json(u, t, &["jobs", "get", "j1"]);
    assert_eq!(code, 0);
    assert_eq!(j["status"].as_str(), Some("running"));
    assert_eq!(
        (
            j["fields"]["owner"].as_str(),
            j["fields"]["step"].as_str(),
            j["fields"]["worker"].as_str()
        ),
        (Some("cli"), Some("1"), Some("w1"))
    );
    assert!(j["heartbeat_at_ms"].as_u64().is_some());
    assert_eq!(
        json_error(u, t, &["jobs", "transition", "j1", "completed", "running"]).0,
        64,
        "not a lifecycle edge"
    );
    assert_eq!(json(u, t, &["jobs", "delete", "j1"]).0, 0);
    assert_eq!(json(u, t, &["jobs", "get", "j1"]).0, 1);

    let acquire = [
        "throttle",
        "acquire",
        "mx",
        "--global-cap",
        "2",
        "--key-cap",
        "1",
        "--min-interval",
        "50ms",
        "--lease",
        "1s",
        "--hold",
        "20ms",
    ];
    // The server has just started and holds nothing for the namespace: it might have
    // restarted empty while leases were held, so nothing is granted for one lease TTL.
    let (code, held) = json(u, t, &acquire);
    assert_eq!((code, held["reason"].as_str()), (1, Some("restart_hold")), "{held}");
    std::thread::sleep(std::time::Duration::from_millis(
        held["retry_after_ms"].as_f64().unwrap() as u64 + 50,
    ));
    let (code, a) = json(u, t, &acquire);
    assert_eq!(code, 0, "{a}");
    let (acq, rel) = (
        a["acquired_at_us"].as_u64().unwrap(),
        a["released_at_us"].as_u64().unwrap(),
    );
    assert!(
        rel >= acq + 20_000,
        "server-side times: held at least 20 ms ({acq} -> {rel})"
    );
    assert_eq!(json(u, t, &["throttle", "penalize", "mx", "30s"]).0, 0);
    let (code, d) = json(u, t, &acquire);
    assert_eq!((code, d["reason"].as_str()), (1, Some("penalty")));
    let (_, i) = json(u, t, &["throttle", "inspect", "mx"]);
    assert!(i["penalty_until_ms"].as_u64().is_some());

    assert_eq!(json(u, t, &["limit", "ip", "--rate", "10/s", "--burst", "1"]).0, 0);
    let (code, l) = json(u, t, &["limit", "ip", "--rate", "10/s", "--burst", "1"]);
    assert_eq!((code, l["allowed"].as_bool()), (1, Some(false)));
}

#[test]
fn with_redis_stopped_strict_commands_exit_2_and_never_print_the_password() {
    let Some(mut server) = env::private_server("cli_redis_stopped") else {
        return;
    };
    let port = server.port();
    server.kill();
    let url = format!("redis://admin:Cli-S3cret@127.0.0.1:{port}");
    let (code, d) = json(Some(&url), "t", &["doctor"]);
    assert_eq!((code, d["can_serve"].as_bool()), (2, Some(false)));
    let (code, e) = json_error(Some(&url), "t", &["cache", "get", "ns", "k"]);
    assert_eq!((code, e["error"]["kind"].as_str()), (2, Some("unavailable")));
    for args in [&["doctor"][..], &["cache", "get", "ns", "k"], &["jobs", "get", "j"]] {
        let out = palisade(Some(&url), "t", args);
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!printed.contains("Cli-S3cret"), "{printed}");
        assert!(printed.contains(&port.to_string()), "{printed}");
        assert_eq!(out.status.code(), Some(2));
    }
    // Degraded mode can serve from its fallback: doctor says so.
    let (code, d) = json(Some(&url), "t", &["--mode", "degraded", "doctor"]);
    assert_eq!(
        (code, d["can_serve"].as_bool(), d["mode"].as_str()),
        (0, Some(true), Some("degraded"))
    );
    let (code, v) = json(Some(&url), "t", &["--mode", "degraded", "cache", "set", "ns", "k", "v"]);
    assert_eq!((code, v["provenance"].as_str()), (0, Some("local_degraded")));
}

#[test]
fn local_mode_and_usage_errors() {
    let (code, v) = json(None, "t", &["cache", "set", "ns", "k", "v"]);
    assert_eq!((code, v["provenance"].as_str()), (0, Some("local")));
    let (code, d) = json(None, "t", &["doctor"]);
    assert_eq!(
        (code, d["mode"].as_str(), d["can_serve"].as_bool()),
        (0, Some("local"), Some(true))
    );
    assert_eq!(palisade(None, "t", &["cache", "get"]).status.code(), Some(64));
    assert_eq!(
        palisade(None, "t", &["--mode", "bogus", "doctor"]).status.code(),
        Some(64)
    );
    assert_eq!(
        palisade(None, "t", &["limit", "k", "--rate", "fast"]).status.code(),
        Some(64)
    );
    assert_eq!(
        palisade(None, "t", &["--mode", "strict", "doctor"]).status.code(),
        Some(64),
        "strict without a URL is a config error"
    );
    assert_eq!(palisade(None, "t", &["--help"]).status.code(), Some(0));
    // An empty variable means "not set" (as in Palisade::from_env).
    let out = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .env("PALISADE_MODE", "")
        .env("PALISADE_REDIS_URL", "")
        .args(["--json", "doctor"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["mode"].as_str(), Some("local"));
}

/// Every `PALISADE_*` setting is read (in a real process, from its environment): a
/// value that does not parse, or one out of its bound, is a configuration error (exit
/// 64) naming the variable or the setting; a good one is applied.
#[test]
fn every_palisade_variable_is_read_and_a_bad_one_is_named() {
    let run = |vars: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_palisade"));
        cmd.env_remove("PALISADE_REDIS_URL").env_remove("PALISADE_MODE");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let out = cmd.args(["--json", "doctor"]).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    for (var, value, named) in [
        ("PALISADE_COMMAND_TIMEOUT", "5 parsecs", "PALISADE_COMMAND_TIMEOUT"),
        ("PALISADE_CONNECT_TIMEOUT", "500", "PALISADE_CONNECT_TIMEOUT"),
        ("PALISADE_DEGRADED_SHARE", "a quarter", "PALISADE_DEGRADED_SHARE"),
        ("PALISADE_LOCAL_CACHE_CAPACITY", "-1", "PALISADE_LOCAL_CACHE_CAPACITY"),
        (
            "PALISADE_THROTTLE_RESTART_HOLD",
            "maybe",
            "PALISADE_THROTTLE_RESTART_HOLD",
        ),
        ("PALISADE_PROBE_PERIOD", "0s", "probe_period"),
        ("PALISADE_DEGRADED_LEASE_CAP", "100 years", "degraded_lease_cap"),
        ("PALISADE_DEGRADED_SHARE", "1.5", "degraded_share"),
    ] {
        let (code, stderr) = run(&[(var, value)]);
        assert_eq!(code, Some(64), "{var}={value}: {stderr}");
        let e: Value = serde_json::from_str(stderr.trim()).unwrap();
        assert_eq!(e["error"]["kind"].as_str(), Some("config"), "{stderr}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(named),
            "{var}={value}: {stderr}"
        );
    }
    // Good values apply: the mode from the environment, and the rest accepted.
    let (code, stderr) = run(&[
        ("PALISADE_MODE", "local"),
        ("PALISADE_COMMAND_TIMEOUT", "250ms"),
        ("PALISADE_DEGRADED_SHARE", "0.5"),
        ("PALISADE_LOCAL_CACHE_CAPACITY", "1048576"),
        ("PALISADE_THROTTLE_RESTART_HOLD", "false"),
        ("PALISADE_NOT_A_SETTING", "ignored: other tools share the prefix"),
    ]);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn doctor_with_a_tls_url_at_a_plain_listener_sends_no_credential_in_clear() {
    let listener = palisade_redis_server::not_redis::Recorder::start().unwrap();
    let url = format!("rediss://alice:s3cretPW@127.0.0.1:{}", listener.port());
    for args in [
        &["--mode", "strict", "doctor"][..],
        &["--json", "--mode", "strict", "doctor"][..],
    ] {
        let out = palisade(Some(&url), "t", args);
        assert_eq!(out.status.code(), Some(2), "cannot serve: {out:?}");
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!printed.contains("s3cretPW"), "{printed}");
        assert!(printed.contains("alice:***@127.0.0.1"), "{printed}");
    }
    let received = listener.received();
    assert!(!received.is_empty(), "the CLI is built with TLS: it tried");
    for bytes in received.iter().filter(|b| !b.is_empty()) {
        assert_eq!(bytes[0], 0x16, "a TLS handshake, nothing else: {bytes:?}");
        assert!(!String::from_utf8_lossy(bytes).contains("s3cretPW"));
    }
}

#[test]
fn doctor_says_what_it_connected_to_over_tls_and_through_sentinel() {
    let Some((tls_url, ca)) = env::tls("cli_doctor_tls") else {
        return;
    };
    let mut all = vec!["--json", "doctor", "--ca-file"];
    let ca = ca.display().to_string();
    all.push(&ca);
    let out = palisade(Some(&tls_url), "t", &all);
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{d}");
    assert_eq!(
        (
            d["tls"].as_bool(),
            d["tls_server_name"].as_str(),
            d["topology"].as_str()
        ),
        (Some(true), Some("127.0.0.1"), Some("standalone"))
    );
    // The pool of dedicated connections (blocking waits) shows, with its bound.
    assert_eq!(
        d["dedicated_pool"]["max"].as_u64(),
        Some(u64::from(palisade::DEFAULT_DEDICATED_POOL_SIZE)),
        "{d}"
    );
    let text = String::from_utf8(palisade(Some(&tls_url), "t", &["doctor", "--ca-file", &ca]).stdout).unwrap();
    assert!(text.contains("TLS on (verified name 127.0.0.1)"), "{text}");

    let Some(sentinel) = env::sentinel_url("cli_doctor_sentinel") else {
        return;
    };
    let (code, d) = json(Some(&sentinel), "t", &["doctor"]);
    assert_eq!(code, 0, "{d}");
    assert_eq!(
        (
            d["topology"].as_str(),
            d["sentinel_service"].as_str(),
            d["role"].as_str()
        ),
        (Some("sentinel"), Some("palisade"), Some("master"))
    );
    assert!(
        d["connected_to"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{d}"
    );
}

#[test]
fn under_json_every_error_is_one_json_object_on_stderr_with_its_exit_code() {
    let cases: &[(&[&str], i32)] = &[
        // Caught by the argument parser.
        (&["cache", "set", "ns", "k", "v", "--ttl", "10"], 64),
        (
            &["throttle", "acquire", "k", "--global-cap", "-1", "--key-cap", "1"],
            64,
        ),
        (&["cache", "get"], 64),
        (&["cache", "frobnicate"], 64),
        (&["--no-such-flag", "doctor"], 64),
        (
            &[
                "throttle",
                "acquire",
                "k",
                "--global-cap",
                "1",
                "--key-cap",
                "1",
                "--lease",
                "soon",
            ],
            64,
        ),
        // Caught by palisade: invalid input, before any I/O, in local mode.
        (&["cache", "set", "ns", "k", "v", "--ttl", "500000000000y"], 64),
        (&["jobs", "create", "j", "--ttl", "500000000000y"], 64),
        (
            &[
                "throttle",
                "acquire",
                "k",
                "--global-cap",
                "1",
                "--key-cap",
                "1",
                "--lease",
                "1ns",
            ],
            64,
        ),
        (&["throttle", "penalize", "k", "1000000y"], 64),
        (&["limit", "k", "--rate", "fast"], 64),
        (&["--mode", "bogus", "doctor"], 64),
        (&["--mode", "strict", "cache", "get", "ns", "k"], 64),
    ];
    for (args, code) in cases {
        let (got, err) = json_error(None, "t", args);
        assert_eq!(got, *code, "{args:?}: {err}");
        assert!(
            err["error"]["kind"].is_string() && err["error"]["message"].is_string(),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn no_password_of_any_shape_prints_in_the_cli() {
    let forms = |pw: &str| {
        vec![
            format!("redis://alice:{pw}@127.0.0.1:1"),
            format!(":{pw}@127.0.0.1:1"),
            format!("rediss://:{pw}@127.0.0.1:1,127.0.0.1:2"),
            format!("redis-cluster://alice:{pw}@127.0.0.1:1?node=127.0.0.1:2"),
            format!("redis-sentinel://alice:{pw}@127.0.0.1:1/palisade"),
        ]
    };
    let run = |url: &str| {
        let mut all = String::new();
        for args in [
            &["--json", "doctor"][..],
            &["doctor"][..],
            &["--json", "--mode", "strict", "cache", "get", "ns", "k"][..],
            &["--mode", "strict", "jobs", "get", "j"][..],
        ] {
            let out = palisade(Some(url), "t", args);
            all.push_str(&String::from_utf8_lossy(&out.stdout));
            all.push_str(&String::from_utf8_lossy(&out.stderr));
            all.push_str(&format!("exit {:?}\n", out.status.code()));
        }
        all
    };
    let reference: Vec<String> = forms("Zq9ReferencePw").iter().map(|u| run(u)).collect();
    for pw in [
        "p/w#?,;@:x",
        "a b c",
        "@@@@",
        "redis://x",
        "%41%42pw",
        "::::",
        "\"'`quoted",
        "x\\y{}[]*?",
        "`~!$^&()=+|<>",
        "hunter2",
    ] {
        for (url, expected) in forms(pw).iter().zip(&reference) {
            let got = run(url);
            assert_eq!(
                &got, expected,
                "the CLI's output depends on the password {pw:?} in {url:?}"
            );
        }
    }
}

/// Spawns `palisade --json jobs …` with its stdout piped.
fn spawn_jobs(url: &str, tenant: &str, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .env_remove("PALISADE_MODE")
        .env("PALISADE_REDIS_URL", url)
        .env("PALISADE_TENANT", tenant)
        .arg("--json")
        .arg("jobs")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn jobs_wait_and_watch_follow_a_job_another_process_runs() {
    use std::io::BufRead;
    let Some(server) = env::private_server("cli_jobs_wait_watch") else {
        return;
    };
    let url = server.url();
    let u = Some(url.as_str());
    let t = "cli-wait";
    assert_eq!(json(u, t, &["jobs", "create", "j", "--ttl", "1h"]).0, 0);

    let mut watch = spawn_jobs(&url, t, &["watch", "j"]);
    let mut lines = std::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        (
            first["status"].as_str(),
            first["version"].as_u64(),
            first["missed"].as_u64()
        ),
        (Some("queued"), Some(1), Some(0))
    );
    let waiter = spawn_jobs(&url, t, &["wait", "j", "--for", "completed", "--timeout", "30s"]);

    assert_eq!(json(u, t, &["jobs", "transition", "j", "queued", "running"]).0, 0);
    assert_eq!(json(u, t, &["jobs", "update", "j", "--field", "step=2"]).0, 0);
    assert_eq!(
        json(
            u,
            t,
            &["jobs", "transition", "j", "running", "completed", "--field", "out=ok"]
        )
        .0,
        0
    );

    let waited = waiter.wait_with_output().unwrap();
    let w: Value = serde_json::from_slice(&waited.stdout).unwrap();
    assert_eq!(waited.status.code(), Some(0), "{w}");
    assert_eq!(
        (w["wait"].as_str(), w["status"].as_str(), w["fields"]["out"].as_str()),
        (Some("reached"), Some("completed"), Some("ok"))
    );

    let rest: Vec<Value> = lines.map(|l| serde_json::from_str(&l.unwrap()).unwrap()).collect();
    assert_eq!(watch.wait().unwrap().code(), Some(0));
    let (end, records) = rest.split_last().unwrap();
    assert_eq!(end["end"].as_str(), Some("completed"), "the last line is the end");
    let mut version = 1;
    for r in records {
        let (v, missed) = (r["version"].as_u64().unwrap(), r["missed"].as_u64().unwrap());
        assert_eq!(v, version + 1 + missed, "every change delivered or counted: {r}");
        version = v;
    }
    assert_eq!(version, 4);
    assert_eq!(records.last().unwrap()["status"].as_str(), Some("completed"));

    let (code, gone) = json(u, t, &["jobs", "wait", "absent", "--timeout", "1s"]);
    assert_eq!((code, gone["wait"].as_str()), (1, Some("gone")));
    json(u, t, &["jobs", "create", "q"]);
    let (code, late) = json(u, t, &["jobs", "wait", "q", "--for", "running", "--timeout", "100ms"]);
    assert_eq!(
        (code, late["wait"].as_str(), late["status"].as_str()),
        (1, Some("timed_out"), Some("queued"))
    );
    assert_eq!(
        json_error(u, t, &["jobs", "wait", "q", "--for", "done"]).0,
        64,
        "not a status"
    );
    let out = palisade(u, t, &["jobs", "watch", "absent"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8(out.stdout).unwrap().contains("watch ended (gone)"));
}
