//! Typed values: serde + postcard inside a small versioned envelope.
//!
//! The envelope is three bytes in front of the postcard body:
//!
//! ```text
//! 0xA1 (palisade envelope, format 1) | schema version (u16, little endian) | postcard
//! ```
//!
//! A reader at another schema version, bytes that are not an envelope, a truncated or
//! malformed body, or trailing bytes all give [`Error::Codec`], never garbage and never
//! a panic. A codec error is not an outage: it never moves a mode.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

/// The first byte of every envelope (format 1).
pub const MAGIC: u8 = 0xA1;

/// Why bytes could not be decoded (the source of an [`Error::Codec`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Fewer bytes than an envelope header.
    #[error("{0} bytes is too short for an envelope")]
    Truncated(usize),
    /// The first byte is not [`MAGIC`].
    #[error("not a palisade envelope (first byte {0:#04x})")]
    NotAnEnvelope(u8),
    /// The value was written at another schema version.
    #[error("written at schema version {found}, this reader expects {expected}")]
    SchemaMismatch {
        /// The reader's version.
        expected: u16,
        /// The stored version.
        found: u16,
    },
    /// The body is not a valid postcard encoding of the type.
    #[error(transparent)]
    Postcard(#[from] postcard::Error),
    /// Bytes left after the value.
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
}

/// Encodes and decodes typed values at one schema version.
///
/// # Behavior
///
/// - `decode(encode(v)) == v` for every serde value.
/// - Decoding bytes written at another schema version, bytes that are not an envelope,
///   truncated or trailing bytes gives [`Error::Codec`] naming `what`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Codec {
    schema: u16,
}

impl Codec {
    /// A codec for values at `schema` version.
    pub const fn new(schema: u16) -> Self {
        Codec { schema }
    }

    /// The schema version.
    pub fn schema(&self) -> u16 {
        self.schema
    }

    /// Encodes `value`; `what` names it in the error.
    pub fn encode<T: Serialize + ?Sized>(&self, value: &T, what: &str) -> Result<Vec<u8>, Error> {
        let mut out = vec![MAGIC];
        out.extend_from_slice(&self.schema.to_le_bytes());
        postcard::to_extend(value, out).map_err(|e| Error::codec(what, CodecError::Postcard(e)))
    }

    /// Decodes bytes written by [`Codec::encode`] at the same schema version.
    pub fn decode<T: DeserializeOwned>(&self, bytes: &[u8], what: &str) -> Result<T, Error> {
        self.try_decode(bytes).map_err(|e| Error::codec(what, e))
    }

    fn try_decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        let [magic, lo, hi, body @ ..] = bytes else {
            return Err(CodecError::Truncated(bytes.len()));
        };
        if *magic != MAGIC {
            return Err(CodecError::NotAnEnvelope(*magic));
        }
        let found = u16::from_le_bytes([*lo, *hi]);
        if found != self.schema {
            return Err(CodecError::SchemaMismatch {
                expected: self.schema,
                found,
            });
        }
        let (value, rest) = postcard::take_from_bytes(body)?;
        if !rest.is_empty() {
            return Err(CodecError::TrailingBytes(rest.len()));
        }
        Ok(value)
    }
}
