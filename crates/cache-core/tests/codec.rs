//! The versioned postcard envelope.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::error::Error as _;

use palisade_cache_core::codec::{MAGIC, MAGIC_JSON};
use palisade_cache_core::{Codec, CodecError, ErrorKind};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Value {
    id: u64,
    name: String,
    tags: Vec<String>,
    score: Option<i32>,
    attrs: BTreeMap<String, Vec<u8>>,
}

fn value() -> impl Strategy<Value = Value> {
    (
        any::<u64>(),
        ".{0,16}",
        prop::collection::vec(".{0,4}", 0..4),
        any::<Option<i32>>(),
        prop::collection::btree_map(".{0,4}", prop::collection::vec(any::<u8>(), 0..8), 0..3),
    )
        .prop_map(|(id, name, tags, score, attrs)| Value {
            id,
            name,
            tags,
            score,
            attrs,
        })
}

fn source_of(e: &palisade_cache_core::Error) -> &CodecError {
    e.source()
        .and_then(|s| s.downcast_ref::<CodecError>())
        .expect("a CodecError source")
}

proptest! {
    #[test]
    fn round_trip(v in value(), schema in any::<u16>(), json in any::<bool>()) {
        let codec = codec(schema, json);
        let bytes = codec.encode(&v, "v").unwrap();
        prop_assert_eq!(bytes[0], if json { MAGIC_JSON } else { MAGIC });
        prop_assert_eq!(&codec.decode::<Value>(&bytes, "v").unwrap(), &v);
        // Either codec reads either format: the envelope says which wrote it.
        prop_assert_eq!(self::codec(schema, !json).decode::<Value>(&bytes, "v").unwrap(), v);
    }

    /// A JSON envelope is three bytes and plain JSON: what another language parses.
    #[test]
    fn a_json_body_is_plain_json(v in value(), schema in any::<u16>()) {
        let bytes = Codec::json(schema).encode(&v, "v").unwrap();
        prop_assert_eq!(&bytes[1..3], &schema.to_le_bytes()[..]);
        let parsed: serde_json::Value = serde_json::from_slice(&bytes[3..]).unwrap();
        prop_assert_eq!(parsed, serde_json::to_value(&v).unwrap());
    }

    #[test]
    fn garbage_never_panics_and_non_envelopes_are_codec_errors(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let codec = Codec::new(1);
        let r = codec.decode::<Value>(&bytes, "garbage");
        if bytes.first() != Some(&MAGIC) {
            let e = r.unwrap_err();
            prop_assert_eq!(e.kind(), ErrorKind::Codec);
            prop_assert!(!e.is_unavailable());
        }
    }

    #[test]
    fn another_schema_version_is_refused(v in value(), a in any::<u16>(), b in any::<u16>(), json in any::<bool>()) {
        prop_assume!(a != b);
        let bytes = codec(a, json).encode(&v, "v").unwrap();
        let e = Codec::new(b).decode::<Value>(&bytes, "the value").unwrap_err();
        prop_assert_eq!(e.kind(), ErrorKind::Codec);
        let is_mismatch = matches!(source_of(&e), CodecError::SchemaMismatch { expected, found } if *expected == b && *found == a);
        prop_assert!(is_mismatch);
        prop_assert!(e.to_string().contains("the value"));
    }

    #[test]
    fn every_truncation_and_any_trailing_byte_is_refused(v in value(), extra in any::<u8>()) {
        let codec = Codec::new(7);
        let bytes = codec.encode(&v, "v").unwrap();
        for cut in 0..bytes.len() {
            prop_assert_eq!(codec.decode::<Value>(&bytes[..cut], "v").unwrap_err().kind(), ErrorKind::Codec);
        }
        let mut longer = bytes.clone();
        longer.push(extra);
        let e = codec.decode::<Value>(&longer, "v").unwrap_err();
        prop_assert!(matches!(source_of(&e), CodecError::TrailingBytes(1)));
        // JSON: every truncation, and any trailing character but whitespace.
        let codec = Codec::json(7);
        let bytes = codec.encode(&v, "v").unwrap();
        for cut in 0..bytes.len() {
            prop_assert_eq!(codec.decode::<Value>(&bytes[..cut], "v").unwrap_err().kind(), ErrorKind::Codec);
        }
        prop_assume!(!extra.is_ascii_whitespace());
        let mut longer = bytes;
        longer.push(extra);
        prop_assert_eq!(codec.decode::<Value>(&longer, "v").unwrap_err().kind(), ErrorKind::Codec);
    }
}

fn codec(schema: u16, json: bool) -> Codec {
    if json { Codec::json(schema) } else { Codec::new(schema) }
}

#[test]
fn documented_envelope_layout() {
    let bytes = Codec::new(0x0102).encode(&7u8, "v").unwrap();
    assert_eq!(bytes, [MAGIC, 0x02, 0x01, 7]);
    let bytes = Codec::json(0x0102)
        .encode(&serde_json::json!({"a": [1, "x"]}), "v")
        .unwrap();
    assert_eq!(bytes, [&[MAGIC_JSON, 0x02, 0x01][..], br#"{"a":[1,"x"]}"#].concat());
    let e = Codec::new(1).decode::<u8>(&[0x00, 1, 0, 7], "v").unwrap_err();
    assert!(matches!(source_of(&e), CodecError::NotAnEnvelope(0)));
    let e = Codec::new(1).decode::<u8>(&[MAGIC], "v").unwrap_err();
    assert!(matches!(source_of(&e), CodecError::Truncated(1)));
}
