//! What a command answers: a JSON object and a line of text, and the exit codes.

use std::time::{SystemTime, UNIX_EPOCH};

use palisade::{Error, ErrorKind, Tagged};
use serde_json::Value;

/// What a command produced: its JSON, its human text, its exit code.
pub(crate) struct Out {
    pub(crate) json: Value,
    pub(crate) text: String,
    pub(crate) code: u8,
}

impl Out {
    pub(crate) fn ok(json: Value, text: String) -> Self {
        Out { json, text, code: 0 }
    }
    pub(crate) fn negative(json: Value, text: String) -> Self {
        Out { json, text, code: 1 }
    }
}

pub(crate) fn exit_code(e: &Error) -> u8 {
    match e.kind() {
        ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::Tls => 2,
        // sysexits' EX_NOPERM: the credentials were refused.
        ErrorKind::Auth => 77,
        ErrorKind::InvalidInput | ErrorKind::Config => 64,
        ErrorKind::Conflict => 1,
        // sysexits' EX_TEMPFAIL: every dedicated connection was in use; try again.
        ErrorKind::Exhausted => 75,
        _ => 65,
    }
}

pub(crate) fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub(crate) fn prov<T>(t: &Tagged<T>) -> &'static str {
    t.provenance.as_str()
}
