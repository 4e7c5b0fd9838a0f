//! Configuration by name: the settings table, `Builder::from_config`, and the checks
//! `build()` makes of every setting however it was given. (The environment, read by
//! `with_env`, is tested in a real process by the CLI's tests.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use palisade::config::{MAX_DEADLINE, MAX_DEGRADED_CAP, SETTINGS, SettingKind};
use palisade::{Builder, Config, ErrorKind, Mode};

fn parse(json: &str) -> Config {
    serde_json::from_str(json).unwrap()
}

/// Each setting, given by name, lands where its builder method puts it (the two
/// builders' `Debug` match), and a changed value changes the builder: so no name is
/// wired to another setting, and none is dropped.
#[test]
fn every_setting_lands_where_its_builder_method_puts_it() {
    let cases: Vec<(&str, &str, Builder)> = vec![
        ("mode", r#""degraded""#, Builder::default().mode(Mode::ExplicitDegraded)),
        (
            "redis_url",
            r#""redis://127.0.0.1:1""#,
            Builder::default().redis_url("redis://127.0.0.1:1"),
        ),
        ("tenant", r#""acme""#, Builder::default().tenant("acme")),
        ("key_prefix", r#""svc""#, Builder::default().key_prefix("svc")),
        (
            "connect_timeout",
            r#""3s""#,
            Builder::default().connect_timeout(Duration::from_secs(3)),
        ),
        (
            "command_timeout",
            r#""250ms""#,
            Builder::default().command_timeout(Duration::from_millis(250)),
        ),
        (
            "probe_period",
            r#""1m 30s""#,
            Builder::default().probe_period(Duration::from_secs(90)),
        ),
        ("degraded_share", "0.5", Builder::default().degraded_share(0.5)),
        (
            "degraded_ttl_cap",
            r#""5s""#,
            Builder::default().degraded_ttl_cap(Duration::from_secs(5)),
        ),
        (
            "degraded_lease_cap",
            r#""7s""#,
            Builder::default().degraded_lease_cap(Duration::from_secs(7)),
        ),
        (
            "throttle_restart_hold",
            "false",
            Builder::default().throttle_restart_hold(false),
        ),
        (
            "local_cache_capacity",
            "4096",
            Builder::default().local_cache_capacity(4096),
        ),
        (
            "redis_dedicated_pool_size",
            "12",
            Builder::default().redis_dedicated_pool_size(12),
        ),
        (
            "value_format",
            r#""json""#,
            Builder::default().value_format(palisade::Format::Json),
        ),
        (
            "redis_password_file",
            r#""/run/pw""#,
            Builder::default().redis_password_file("/run/pw"),
        ),
        (
            "redis_ca_file",
            r#""/run/ca.pem""#,
            Builder::default().tls_ca_file("/run/ca.pem"),
        ),
        (
            "redis_tls_server_name",
            r#""redis.internal""#,
            Builder::default().tls_server_name("redis.internal"),
        ),
        (
            "redis_sentinel_password_file",
            r#""/run/spw""#,
            Builder::default().sentinel_password_file(None, "/run/spw"),
        ),
    ];
    let default = format!("{:?}", Builder::default());
    for (name, value, expected) in &cases {
        let got = Builder::from_config(&parse(&format!(r#"{{"{name}": {value}}}"#))).unwrap();
        assert_eq!(format!("{got:?}"), format!("{expected:?}"), "{name}");
        assert_ne!(format!("{got:?}"), default, "{name} changed nothing");
    }
    // The two halves of a client certificate, and the sentinels' user, are separate
    // settings; together they are what the paired builder methods set.
    let pairs = parse(
        r#"{"redis_client_cert_file": "/c.pem", "redis_client_key_file": "/k.pem",
            "redis_sentinel_user": "s", "redis_sentinel_password_file": "/s"}"#,
    );
    assert_eq!(
        format!("{:?}", Builder::from_config(&pairs).unwrap()),
        format!(
            "{:?}",
            Builder::default()
                .tls_client_cert("/c.pem", "/k.pem")
                .sentinel_password_file(Some("s"), "/s")
        )
    );
    // Every setting of the table is covered above (by its own case or a pair).
    for s in SETTINGS {
        let covered = cases.iter().any(|(n, _, _)| *n == s.name)
            || ["redis_client_cert_file", "redis_client_key_file", "redis_sentinel_user"].contains(&s.name);
        assert!(covered, "setting `{}` has no case", s.name);
    }
}

#[test]
fn every_variable_is_the_setting_upper_cased_and_the_readme_lists_them_all() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    for s in SETTINGS {
        assert_eq!(s.env, format!("PALISADE_{}", s.name.to_uppercase()));
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", s.env)))
            .unwrap_or_else(|| panic!("the README's table has no row for {}", s.env));
        assert!(row.contains(&format!("`{}`", s.name)), "{row}");
    }
}

#[test]
fn an_unknown_key_or_a_value_that_does_not_parse_is_a_config_error_naming_the_setting() {
    for (json, named) in [
        (r#"{"comand_timeout": "1s"}"#, "comand_timeout"),
        (r#"{"command_timeout": "5 parsecs"}"#, "command_timeout"),
        (r#"{"command_timeout": 500}"#, "command_timeout"),
        (r#"{"command_timeout": {"ms": 500}}"#, "command_timeout"),
        (r#"{"degraded_share": "a quarter"}"#, "degraded_share"),
        (r#"{"degraded_share": [1]}"#, "degraded_share"),
        (r#"{"local_cache_capacity": -1}"#, "local_cache_capacity"),
        (r#"{"local_cache_capacity": 1.5}"#, "local_cache_capacity"),
        (r#"{"redis_dedicated_pool_size": -1}"#, "redis_dedicated_pool_size"),
        (r#"{"throttle_restart_hold": "maybe"}"#, "throttle_restart_hold"),
        (r#"{"mode": "eventual"}"#, "mode"),
        (r#"{"value_format": "xml"}"#, "value_format"),
        (r#"{"tenant": 7}"#, "tenant"),
    ] {
        let e = Builder::from_config(&parse(json)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "{json}");
        assert!(e.to_string().contains(&format!("`{named}`")), "{json}: {e}");
    }
}

#[test]
fn a_redis_url_never_prints_from_a_config_or_its_errors() {
    let config = parse(r#"{"redis_url": "redis://user:hunter2@db:6379", "tenant": "t"}"#);
    let shown = format!("{config:?}");
    assert!(!shown.contains("hunter2") && shown.contains("tenant"), "{shown}");
    let shown = format!("{:?}", Builder::from_config(&config).unwrap());
    assert!(!shown.contains("hunter2"), "{shown}");
    let e = Builder::from_config(&parse(r#"{"redis_url": ["redis://u:hunter2@db"]}"#)).unwrap_err();
    assert!(!format!("{e} {e:?}").contains("hunter2"), "{e:?}");
}

/// Durations out of their bound are refused by `build()` whichever way they were set —
/// so no deadline arithmetic can overflow, and a zero deadline never fails every call.
#[tokio::test]
async fn build_refuses_a_duration_of_zero_or_beyond_its_bound_naming_it() {
    type Set = fn(Builder, Duration) -> Builder;
    let settings: [(&str, Set, Duration); 5] = [
        ("connect_timeout", Builder::connect_timeout, MAX_DEADLINE),
        ("command_timeout", Builder::command_timeout, MAX_DEADLINE),
        ("probe_period", Builder::probe_period, MAX_DEADLINE),
        ("degraded_ttl_cap", Builder::degraded_ttl_cap, MAX_DEGRADED_CAP),
        ("degraded_lease_cap", Builder::degraded_lease_cap, MAX_DEGRADED_CAP),
    ];
    for (name, set, max) in settings {
        for bad in [Duration::ZERO, max + Duration::from_millis(1), Duration::MAX] {
            let e = set(Builder::default(), bad).build().await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config, "{name} {bad:?}");
            assert!(e.to_string().contains(&format!("`{name}`")), "{e}");
        }
        assert!(
            set(Builder::default(), max).build().await.is_ok(),
            "{name} at its bound"
        );
    }
    for n in [0, 100_001] {
        let e = Builder::default()
            .redis_dedicated_pool_size(n)
            .build()
            .await
            .unwrap_err();
        assert!(e.to_string().contains("`redis_dedicated_pool_size`"), "{n}: {e}");
    }
    let e = Builder::default().local_cache_capacity(0).build().await.unwrap_err();
    assert!(e.to_string().contains("`local_cache_capacity`"), "{e}");
    for share in [-0.1, 1.1, f64::NAN] {
        let e = Builder::default().degraded_share(share).build().await.unwrap_err();
        assert!(e.to_string().contains("`degraded_share`"), "{e}");
    }
}

/// A config builds what it says: local mode, the tenant, and a local cache of the
/// capacity given (one that holds fewer than all the entries written).
#[tokio::test]
async fn a_config_builds_what_it_says() {
    let config = parse(r#"{"mode": "local", "tenant": "acme", "local_cache_capacity": 8192}"#);
    let p = Builder::from_config(&config).unwrap().build().await.unwrap();
    assert_eq!((p.mode(), p.tenant_name()), (Mode::LocalOnly, "acme"));
    let cache = p.cache();
    let value = vec![7u8; 512];
    for i in 0..64 {
        cache
            .set(&format!("k{i}"), &value, Duration::from_secs(60))
            .await
            .unwrap();
    }
    // 64 entries of over 512 bytes are 4× the capacity: the cache evicts until it fits.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut held = 0;
        for i in 0..64 {
            held += usize::from(cache.get(&format!("k{i}")).await.unwrap().value.is_some());
        }
        if held <= 16 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{held} of 64 entries held in 8 KiB"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The kind the table gives each setting is the kind its value is parsed as: a value
/// wrong for that kind is refused, naming the setting.
#[test]
fn every_setting_refuses_a_value_wrong_for_its_kind() {
    for s in SETTINGS {
        let wrong = match s.kind {
            SettingKind::Duration => r#""5 parsecs""#,
            SettingKind::Number => r#""lots""#,
            SettingKind::Bool => r#""maybe""#,
            _ => r#"{"nested": 1}"#,
        };
        let e = Builder::from_config(&parse(&format!(r#"{{"{}": {wrong}}}"#, s.name))).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "{}", s.name);
        assert!(e.to_string().contains(&format!("`{}`", s.name)), "{e}");
    }
}

/// `value_format = "json"` reaches the cache's typed values and the job store's fields,
/// for every tenant: each is `0xA2`, schema 1, then plain JSON.
#[tokio::test]
async fn value_format_json_writes_json_cache_values_and_job_fields() {
    use palisade::contracts::core::Run;
    use palisade::contracts::jobs::op;
    let config = parse(r#"{"mode": "local", "value_format": "json"}"#);
    let p = Builder::from_config(&config).unwrap().build().await.unwrap();
    for t in [p.tenant("default").unwrap(), p.tenant("other").unwrap()] {
        let cache = t.cache();
        cache
            .set_typed("v", &serde_json::json!({"a": [1, "x"]}), Duration::from_secs(60))
            .await
            .unwrap();
        let raw = cache.get("v").await.unwrap().value.unwrap();
        assert_eq!(&raw[..], &[&[0xA2, 1, 0][..], br#"{"a":[1,"x"]}"#].concat()[..]);
        let jobs = t.jobs();
        jobs.create("j", &palisade::JobRecord::queued(), Duration::from_secs(60))
            .await
            .unwrap();
        jobs.update("j", &palisade::Patch::new().progress(42)).await.unwrap();
        let stored = jobs
            .backend()
            .run(&op::Get::new(jobs.key("j").unwrap()))
            .await
            .unwrap()
            .value
            .unwrap();
        assert_eq!(&stored.fields["progress"][..], &[0xA2, 1, 0, b'4', b'2'][..]);
    }
}
