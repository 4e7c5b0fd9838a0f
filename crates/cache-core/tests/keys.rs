//! Keys: injective, reversible, size-limited, with glob-safe SCAN patterns.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_cache_core::key::{
    DEFAULT_MAX_KEY_LEN, KeyParts, SCHEMA_VERSION, escape_part, escaped_len, unescape_part,
};
use palisade_cache_core::testkit::glob::glob_match;
use palisade_cache_core::{Contract, ErrorKind, Namespace};
use proptest::prelude::*;

/// Characters that break naive encodings, plus a few ordinary ones so that collisions of
/// a naive concatenation are frequent, plus anything at all.
fn part() -> impl Strategy<Value = String> {
    let special = prop_oneof![
        8 => prop::sample::select(vec![
            ':', '{', '}', '*', '?', '[', ']', '%', '\\', '\0', 'a', 'b', '3', 'A', 'v', '^', '-', 'é', '🦀',
        ]),
        1 => any::<char>(),
    ];
    prop::collection::vec(special, 0..8).prop_map(|v| v.into_iter().collect())
}

fn nonempty_part() -> impl Strategy<Value = String> {
    part().prop_filter("non-empty", |s| !s.is_empty())
}

fn contract() -> impl Strategy<Value = Contract> {
    prop::sample::select(Contract::ALL.to_vec())
}

fn parts() -> impl Strategy<Value = KeyParts> {
    (
        part(),
        prop_oneof![Just(1u16), Just(2u16), any::<u16>()],
        prop_oneof![contract().prop_map(|c| c.as_str().to_owned()), part()],
        part(),
        part(),
        part(),
    )
        .prop_map(|(prefix, version, contract, tenant, namespace, key)| KeyParts {
            prefix,
            version,
            contract,
            tenant,
            namespace,
            key,
        })
}

/// The same tokens grouped into (prefix, tenant, namespace, key) in two different ways:
/// joined naively with `:` both groupings give the same text, so only escaping keeps
/// their keys apart.
fn two_groupings() -> impl Strategy<Value = (KeyParts, KeyParts)> {
    prop::collection::vec(part(), 4..9).prop_flat_map(|tokens| {
        let boundaries: Vec<usize> = (1..tokens.len()).collect();
        (
            Just(tokens),
            prop::sample::subsequence(boundaries.clone(), 3),
            prop::sample::subsequence(boundaries, 3),
        )
            .prop_map(|(tokens, a, b)| (group(&tokens, &a), group(&tokens, &b)))
    })
}

fn group(tokens: &[String], cuts: &[usize]) -> KeyParts {
    let edges: Vec<usize> = std::iter::once(0)
        .chain(cuts.iter().copied())
        .chain([tokens.len()])
        .collect();
    let g: Vec<String> = edges.windows(2).map(|w| tokens[w[0]..w[1]].join(":")).collect();
    KeyParts {
        prefix: g[0].clone(),
        version: 2,
        contract: "cache".into(),
        tenant: g[1].clone(),
        namespace: g[2].clone(),
        key: g[3].clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn regrouped_parts_give_distinct_keys((a, b) in two_groupings()) {
        prop_assume!(a != b);
        prop_assert_ne!(a.encode(), b.encode());
        prop_assert_eq!(KeyParts::decode(&a.encode()).unwrap(), a);
    }

    #[test]
    fn distinct_parts_give_distinct_keys(a in parts(), b in parts()) {
        prop_assume!(a != b);
        prop_assert_ne!(a.encode(), b.encode());
    }

    #[test]
    fn decode_inverts_encode(x in parts()) {
        prop_assert_eq!(KeyParts::decode(&x.encode()).unwrap(), x);
    }

    #[test]
    fn a_pattern_matches_its_keys_and_none_of_another_contract_tenant_or_namespace(
        prefix in nonempty_part(),
        c1 in contract(), t1 in nonempty_part(), n1 in nonempty_part(),
        c2 in contract(), t2 in nonempty_part(), n2 in nonempty_part(),
        key in nonempty_part(), kind in nonempty_part(),
    ) {
        let ns1 = Namespace::new(&prefix, &t1, &n1).unwrap();
        let ns2 = Namespace::new(&prefix, &t2, &n2).unwrap();
        let pattern = ns1.scan_pattern(c1);
        let own = ns1.key(c1, &key).unwrap();
        prop_assert!(glob_match(pattern.as_bytes(), own.as_bytes()), "{pattern} !~ {own}");
        prop_assert!(ns1.owns(c1, &own));
        prop_assert_eq!(ns1.user_key(c1, &own).unwrap(), key.clone());
        let same = c1 == c2 && t1 == t2 && n1 == n2;
        // Plain keys and slot keys of the other namespace and contract alike.
        for other in [ns2.key(c2, &key).unwrap(), ns2.slot_key(c2, &kind, Some(&key)).unwrap()] {
            let is_plain = other == ns2.key(c2, &key).unwrap();
            prop_assert_eq!(glob_match(pattern.as_bytes(), other.as_bytes()), same && is_plain, "{} vs {}", pattern, other);
            prop_assert_eq!(ns1.owns(c1, &other), same && is_plain);
            prop_assert_eq!(other == own, same && is_plain, "{} vs {}", other, own);
        }
    }

    #[test]
    fn every_key_of_every_contract_starts_with_the_prefix(
        prefix in nonempty_part(), c in contract(), t in nonempty_part(), n in nonempty_part(),
        key in nonempty_part(), kind in nonempty_part(),
    ) {
        let ns = Namespace::new(&prefix, &t, &n).unwrap();
        let mut head = String::new();
        escape_part(&prefix, &mut head);
        head.push(':');
        prop_assert!(ns.key(c, &key).unwrap().starts_with(&head));
        prop_assert!(ns.slot_key(c, &kind, Some(&key)).unwrap().starts_with(&head));
        prop_assert!(ns.slot_key(c, &kind, None).unwrap().starts_with(&head));
    }

    #[test]
    fn no_escaped_part_contains_a_separator_glob_or_brace(p in part()) {
        let mut out = String::new();
        escape_part(&p, &mut out);
        prop_assert!(!out.contains([':', '{', '}', '*', '?', '[', ']', '\\', '\0']), "{out:?}");
        prop_assert_eq!(unescape_part(&out).unwrap(), p);
    }

    #[test]
    fn escaping_is_the_documented_per_character_rule_and_its_length_is_known(p in part(), head in part()) {
        // The rule of the module docs, one character at a time.
        let reference: String = p
            .chars()
            .map(|c| {
                if "%:{}*?[]\\".contains(c) || c.is_ascii_control() {
                    format!("%{:02X}", c as u32)
                } else {
                    c.to_string()
                }
            })
            .collect();
        let mut out = head.clone();
        escape_part(&p, &mut out);
        prop_assert_eq!(&out[head.len()..], reference.as_str());
        prop_assert_eq!(escaped_len(&p), reference.len());
    }

    #[test]
    fn decoding_any_text_never_panics(s in ".{0,64}") {
        let _ = KeyParts::decode(&s);
        let _ = unescape_part(&s);
    }
}

#[test]
fn documented_encoding() {
    assert_eq!(SCHEMA_VERSION, 2);
    let ns = Namespace::new("palisade", "acme:eu", "sessions").unwrap();
    assert_eq!(
        ns.key(Contract::Cache, "user{42}*").unwrap(),
        "palisade:v2:cache:acme%3Aeu:sessions:user%7B42%7D%2A"
    );
    assert_eq!(
        ns.scan_pattern(Contract::Cache),
        "palisade:v2:cache:acme%3Aeu:sessions:*"
    );
    assert_eq!(
        ns.key(Contract::Cache, "naïve 🦀").unwrap(),
        "palisade:v2:cache:acme%3Aeu:sessions:naïve 🦀"
    );
    assert_eq!(
        ns.key(Contract::Jobs, "nul\0").unwrap(),
        "palisade:v2:jobs:acme%3Aeu:sessions:nul%00"
    );
    assert_eq!(
        ns.key(Contract::RateLimit, "10.0.0.1").unwrap(),
        "palisade:v2:ratelimit:acme%3Aeu:sessions:10.0.0.1"
    );
    // The cache namespace `jobs` is not the job store.
    let jobs_ns = Namespace::new("palisade", "acme", "jobs").unwrap();
    assert_ne!(
        jobs_ns.key(Contract::Cache, "j1").unwrap(),
        jobs_ns.key(Contract::Jobs, "j1").unwrap()
    );
}

#[test]
fn empty_parts_and_oversized_keys_are_invalid_input() {
    for (p, t, n) in [("", "t", "n"), ("p", "", "n"), ("p", "t", "")] {
        assert_eq!(Namespace::new(p, t, n).unwrap_err().kind(), ErrorKind::InvalidInput);
    }
    let ns = Namespace::new("p", "t", "n").unwrap();
    let c = Contract::Cache;
    assert_eq!(ns.key(c, "").unwrap_err().kind(), ErrorKind::InvalidInput);
    let head = ns.key(c, "x").unwrap().len() - 1;
    let fits = "k".repeat(DEFAULT_MAX_KEY_LEN - head);
    assert_eq!(ns.key(c, &fits).unwrap().len(), DEFAULT_MAX_KEY_LEN);
    let err = ns.key(c, &format!("{fits}k")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("limit"), "{err}");
    // Escaping counts: 400 `:` encode to 1200 bytes.
    assert_eq!(ns.key(c, &":".repeat(400)).unwrap_err().kind(), ErrorKind::InvalidInput);
    // The limit is configurable.
    let small = ns.clone().with_max_key_len(16);
    assert_eq!(
        small.key(c, "a-key-too-long").unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        Namespace::new("p", &"t".repeat(2000), "n").unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

#[test]
fn malformed_or_non_canonical_keys_do_not_decode() {
    for bad in [
        "p:v2:c:t:n",         // five parts
        "p:v2:c:t:n:k:extra", // seven parts
        "p:x2:c:t:n:k",       // bad version
        "p:v02:c:t:n:k",      // non-canonical version
        "p:v99999:c:t:n:k",   // version overflow
        "p:v2:c:t:n:%4",      // truncated escape
        "p:v2:c:t:n:%zz",     // not hex
        "p:v2:c:t:n:%61",     // escape of a character that is never escaped
        "p:v2:c:t:n:%3a",     // lower-case hex
        "p:v2:c:t:n:a*b",     // unescaped glob character
    ] {
        assert_eq!(
            KeyParts::decode(bad).unwrap_err().kind(),
            ErrorKind::InvalidInput,
            "{bad}"
        );
    }
}

proptest! {
    #[test]
    fn slot_keys_of_one_namespace_share_exactly_its_hash_tag(
        prefix in nonempty_part(), t in nonempty_part(), n in nonempty_part(), key in nonempty_part(),
        t2 in nonempty_part(),
    ) {
        let ns = Namespace::new(&prefix, &t, &n).unwrap();
        let tag = |k: &str| -> String {
            // Redis: the text between the first `{` and the next `}`.
            let open = k.find('{').unwrap();
            let close = open + 1 + k[open + 1..].find('}').unwrap();
            k[open + 1..close].to_owned()
        };
        let c = Contract::Throttle;
        let a = ns.slot_key(c, "g", None).unwrap();
        let b = ns.slot_key(c, "k", Some(&key)).unwrap();
        prop_assert_eq!(tag(&a), tag(&b));
        prop_assert!(!tag(&a).is_empty());
        let other = Namespace::new(&prefix, &t2, &n).unwrap().slot_key(c, "k", Some(&key)).unwrap();
        prop_assert_eq!(tag(&other) == tag(&b), t == t2);
        prop_assert_ne!(ns.slot_key(c, "k", Some(&key)).unwrap(), ns.slot_key(c, "s", Some(&key)).unwrap());
    }
}

#[test]
fn slot_key_layout() {
    let ns = Namespace::new("palisade", "acme", "mx").unwrap();
    let c = Contract::Throttle;
    assert_eq!(ns.slot_key(c, "g", None).unwrap(), "palisade:v2:throttle:{acme:mx}:g");
    assert_eq!(
        ns.slot_key(c, "k", Some("mx.example.com:25")).unwrap(),
        "palisade:v2:throttle:{acme:mx}:k:mx.example.com%3A25"
    );
    assert_eq!(
        ns.slot_key(c, "k", Some("")).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        ns.slot_key(c, "k", Some(&"x".repeat(2000))).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}
