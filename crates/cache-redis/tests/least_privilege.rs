//! The documented least-privilege ACL rule is enough: every contract suite (plain
//! backends; the wrappers send nothing more) runs as a user that may run only
//! `ACL_COMMANDS`, on keys under its prefix only, with no channel.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::RedisFixture;
use palisade_cache_redis::{RedisCache, RedisJobStore, RedisThrottle};

async fn cache(test: &str) -> Option<RedisFixture<RedisCache>> {
    let (conn, prefix) = common::least_privilege(test).await?;
    Some(common::fixture_with_prefix(RedisCache::new(conn), prefix))
}

async fn jobs(test: &str) -> Option<RedisFixture<RedisJobStore>> {
    let (conn, prefix) = common::least_privilege(test).await?;
    Some(common::fixture_with_prefix(
        RedisJobStore::new(conn).await.unwrap(),
        prefix,
    ))
}

async fn throttle(test: &str) -> Option<RedisFixture<RedisThrottle>> {
    let (conn, prefix) = common::least_privilege(test).await?;
    Some(common::fixture_with_prefix(
        RedisThrottle::new(conn).await.unwrap().with_restart_hold(false),
        prefix,
    ))
}

mod cache_suite {
    palisade_cache_core::cache_suite!(super::cache);
}

mod job_suite {
    palisade_job_store::job_suite!(super::jobs);
}

mod throttle_suite {
    palisade_throttle::throttle_suite!(super::throttle);
}

/// Every command any script can send is in `ACL_COMMANDS`, read from the sources: a
/// path no suite reaches (a crashed waiter's handed lease, state palisade did not
/// write) is covered too.
#[test]
fn every_command_of_every_script_is_in_the_acl_rule() {
    let batched = palisade_cache_redis::batched_scripts();
    let scripts = palisade_cache_redis::all_scripts()
        .into_iter()
        .map(|(s, _)| s)
        .chain(batched.iter().flat_map(|(b, _)| [&b.one, &b.many]));
    let mut seen = 0;
    for script in scripts {
        let src = script.source();
        assert!(!src.is_empty(), "{}: no source", script.name());
        // `redis.call(`, `redis.pcall(` and the scripts' local alias `call(`; not Lua's
        // own `pcall(` of a function.
        for (at, call) in src.match_indices("call(") {
            let before = &src[..at];
            if !before.ends_with("redis.p") && before.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &src[at + call.len()..];
            let name = rest
                .strip_prefix('\'')
                .and_then(|r| r.split('\'').next())
                .unwrap_or_else(|| {
                    panic!(
                        "{}: a command not named literally: {}",
                        script.name(),
                        &rest[..20.min(rest.len())]
                    )
                });
            let rule = format!("+{}", name.to_ascii_lowercase());
            assert!(
                palisade_cache_redis::ACL_COMMANDS.contains(&rule.as_str()),
                "{} sends {name}, which the ACL rule does not allow",
                script.name()
            );
            seen += 1;
        }
    }
    assert!(seen > 100, "only {seen} commands found: the scan is broken");
}

/// The rule the README prints is `ACL_COMMANDS`, command for command.
#[test]
fn the_readme_prints_the_acl_rule() {
    let readme = include_str!("../../../README.md");
    let start = readme.find("ACL SETUSER app").expect("the README's ACL rule");
    let block = &readme[start..start + readme[start..].find("```").expect("its code block ends")];
    let mut printed: Vec<&str> = block.split_whitespace().filter(|w| w.starts_with('+')).collect();
    let mut rule: Vec<&str> = palisade_cache_redis::ACL_COMMANDS.to_vec();
    printed.sort_unstable();
    rule.sort_unstable();
    assert_eq!(printed, rule, "README.md's ACL SETUSER block and ACL_COMMANDS differ");
}
