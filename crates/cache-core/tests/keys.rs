//! Keys: injective, reversible, size-limited, with glob-safe SCAN patterns.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_cache_core::key::{DEFAULT_MAX_KEY_LEN, KeyParts, escape_part, unescape_part};
use palisade_cache_core::testkit::glob::glob_match;
use palisade_cache_core::{ErrorKind, Namespace};
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

fn parts() -> impl Strategy<Value = KeyParts> {
    (
        part(),
        prop_oneof![Just(1u16), Just(2u16), any::<u16>()],
        part(),
        part(),
        part(),
    )
        .prop_map(|(prefix, version, tenant, namespace, key)| KeyParts {
            prefix,
            version,
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
        version: 1,
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
    fn a_namespace_pattern_matches_its_keys_and_no_other_namespaces(
        prefix in nonempty_part(),
        t1 in nonempty_part(), n1 in nonempty_part(),
        t2 in nonempty_part(), n2 in nonempty_part(),
        key in nonempty_part(),
    ) {
        let ns1 = Namespace::new(&prefix, 1, &t1, &n1).unwrap();
        let ns2 = Namespace::new(&prefix, 1, &t2, &n2).unwrap();
        let pattern = ns1.scan_pattern();
        let own = ns1.key(&key).unwrap();
        prop_assert!(glob_match(pattern.as_bytes(), own.as_bytes()), "{pattern} !~ {own}");
        prop_assert!(ns1.owns(&own));
        prop_assert_eq!(ns1.user_key(&own).unwrap(), key.clone());
        let other = ns2.key(&key).unwrap();
        let same = (t1 == t2) && (n1 == n2);
        prop_assert_eq!(glob_match(pattern.as_bytes(), other.as_bytes()), same, "{} vs {}", pattern, other);
        prop_assert_eq!(ns1.owns(&other), same);
    }

    #[test]
    fn no_escaped_part_contains_a_separator_glob_or_brace(p in part()) {
        let mut out = String::new();
        escape_part(&p, &mut out);
        prop_assert!(!out.contains([':', '{', '}', '*', '?', '[', ']', '\\', '\0']), "{out:?}");
        prop_assert_eq!(unescape_part(&out).unwrap(), p);
    }

    #[test]
    fn decoding_any_text_never_panics(s in ".{0,64}") {
        let _ = KeyParts::decode(&s);
        let _ = unescape_part(&s);
    }
}

#[test]
fn documented_encoding() {
    let ns = Namespace::new("palisade", 1, "acme:eu", "sessions").unwrap();
    assert_eq!(
        ns.key("user{42}*").unwrap(),
        "palisade:v1:acme%3Aeu:sessions:user%7B42%7D%2A"
    );
    assert_eq!(ns.scan_pattern(), "palisade:v1:acme%3Aeu:sessions:*");
    assert_eq!(ns.key("naïve 🦀").unwrap(), "palisade:v1:acme%3Aeu:sessions:naïve 🦀");
    assert_eq!(ns.key("nul\0").unwrap(), "palisade:v1:acme%3Aeu:sessions:nul%00");
}

#[test]
fn empty_parts_and_oversized_keys_are_invalid_input() {
    for (p, t, n) in [("", "t", "n"), ("p", "", "n"), ("p", "t", "")] {
        assert_eq!(Namespace::new(p, 1, t, n).unwrap_err().kind(), ErrorKind::InvalidInput);
    }
    let ns = Namespace::new("p", 1, "t", "n").unwrap();
    assert_eq!(ns.key("").unwrap_err().kind(), ErrorKind::InvalidInput);
    let head = ns.key("x").unwrap().len() - 1;
    let fits = "k".repeat(DEFAULT_MAX_KEY_LEN - head);
    assert_eq!(ns.key(&fits).unwrap().len(), DEFAULT_MAX_KEY_LEN);
    let err = ns.key(&format!("{fits}k")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("limit"), "{err}");
    // Escaping counts: 400 `:` encode to 1200 bytes.
    assert_eq!(ns.key(&":".repeat(400)).unwrap_err().kind(), ErrorKind::InvalidInput);
    // The limit is configurable.
    let small = ns.clone().with_max_key_len(16);
    assert_eq!(small.key("a-key-too-long").unwrap_err().kind(), ErrorKind::InvalidInput);
    assert_eq!(
        Namespace::new("p", 1, &"t".repeat(2000), "n").unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

#[test]
fn malformed_or_non_canonical_keys_do_not_decode() {
    for bad in [
        "p:v1:t:n",         // four parts
        "p:v1:t:n:k:extra", // six parts
        "p:x1:t:n:k",       // bad version
        "p:v01:t:n:k",      // non-canonical version
        "p:v99999:t:n:k",   // version overflow
        "p:v1:t:n:%4",      // truncated escape
        "p:v1:t:n:%zz",     // not hex
        "p:v1:t:n:%61",     // escape of a character that is never escaped
        "p:v1:t:n:%3a",     // lower-case hex
        "p:v1:t:n:a*b",     // unescaped glob character
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
        let ns = Namespace::new(&prefix, 1, &t, &n).unwrap();
        let tag = |k: &str| -> String {
            // Redis: the text between the first `{` and the next `}`.
            let open = k.find('{').unwrap();
            let close = open + 1 + k[open + 1..].find('}').unwrap();
            k[open + 1..close].to_owned()
        };
        let a = ns.slot_key("g", None).unwrap();
        let b = ns.slot_key("k", Some(&key)).unwrap();
        prop_assert_eq!(tag(&a), tag(&b));
        prop_assert!(!tag(&a).is_empty());
        let other = Namespace::new(&prefix, 1, &t2, &n).unwrap().slot_key("k", Some(&key)).unwrap();
        prop_assert_eq!(tag(&other) == tag(&b), t == t2);
        prop_assert_ne!(ns.slot_key("k", Some(&key)).unwrap(), ns.slot_key("s", Some(&key)).unwrap());
    }
}

#[test]
fn slot_key_layout() {
    let ns = Namespace::new("palisade", 1, "acme", "mx").unwrap();
    assert_eq!(ns.slot_key("g", None).unwrap(), "{palisade:v1:acme:mx}:g");
    assert_eq!(
        ns.slot_key("k", Some("mx.example.com:25")).unwrap(),
        "{palisade:v1:acme:mx}:k:mx.example.com%3A25"
    );
    assert_eq!(ns.slot_key("k", Some("")).unwrap_err().kind(), ErrorKind::InvalidInput);
    assert_eq!(
        ns.slot_key("k", Some(&"x".repeat(2000))).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}
