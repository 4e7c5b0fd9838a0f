//! The least-privilege ACL rule for a palisade user.

/// Every command palisade sends to the data nodes — directly, from its Lua scripts
/// (which Redis checks against the calling user too), and while connecting — as
/// `ACL SETUSER` rules.
pub const ACL_COMMANDS: &[&str] = &[
    // Connecting, probing, doctor.
    "+hello",
    "+auth",
    "+ping",
    "+info",
    "+role",
    "+select",
    "+client|setname",
    "+client|id",
    // The cache, and the direct job-store commands.
    "+get",
    "+set",
    "+del",
    "+unlink",
    "+exists",
    "+scan",
    // Inside the scripts.
    "+type",
    "+time",
    "+hset",
    "+hget",
    "+hmget",
    "+hgetall",
    "+hdel",
    "+pexpire",
    "+pttl",
    "+zadd",
    "+zrem",
    "+zscore",
    "+zcard",
    "+zrange",
    "+zcount",
    "+zremrangebyscore",
    "+zrangebyscore",
    "+zrank",
    "+lpush",
    "+ltrim",
    "+lindex",
    // Publishing a job's new version, from the scripts.
    "+spublish",
    // Waiting for a wake-up (on a dedicated connection).
    "+blpop",
    "+ssubscribe",
    "+sunsubscribe",
    // Running the scripts.
    "+evalsha",
    "+script|load",
    // Cluster routing.
    "+cluster|slots",
    "+cluster|shards",
    "+cluster|info",
    // Following a slot migration (`ASK`).
    "+asking",
];

/// The `ACL SETUSER <user> on >PASSWORD …` rules of a least-privilege palisade user for
/// keys and (sharded) channels under `prefix` (escaped as palisade escapes it):
/// `resetkeys ~<prefix>:* resetchannels &<prefix>:* -@all` and [`ACL_COMMANDS`]. A
/// job's channel is its key.
///
/// ```
/// let rules = palisade_cache_redis::acl_rule("palisade");
/// assert_eq!(&rules[..5], ["resetkeys", "~palisade:*", "resetchannels", "&palisade:*", "-@all"]);
/// ```
pub fn acl_rule(prefix: &str) -> Vec<String> {
    let mut escaped = String::new();
    palisade_cache_core::key::escape_part(prefix, &mut escaped);
    let mut rules = vec![
        "resetkeys".to_owned(),
        format!("~{escaped}:*"),
        "resetchannels".to_owned(),
        format!("&{escaped}:*"),
        "-@all".to_owned(),
    ];
    rules.extend(ACL_COMMANDS.iter().map(|c| (*c).to_owned()));
    rules
}
