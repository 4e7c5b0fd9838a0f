//! Typed values: serde inside a small versioned envelope, in postcard (compact, the
//! default) or JSON (for values other languages read).
//!
//! The envelope is three bytes in front of the body; the first says which format wrote
//! it:
//!
//! ```text
//! 0xA1 (postcard) | schema version (u16, little endian) | postcard
//! 0xA2 (JSON)     | schema version (u16, little endian) | JSON text (UTF-8)
//! ```
//!
//! A reader in another language skips three bytes (after checking the first) and
//! parses JSON. Every [`Codec`] reads both formats — the envelope decides — so a
//! deployment can move from one to the other without a flag day: only writing follows
//! the codec's [`Format`].
//!
//! A reader at another schema version, bytes that are not an envelope, a truncated or
//! malformed body, or trailing bytes all give [`Error::Codec`], never garbage and never
//! a panic. A codec error is not an outage: it never moves a mode.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

/// The first byte of a postcard envelope.
pub const MAGIC: u8 = 0xA1;
/// The first byte of a JSON envelope.
pub const MAGIC_JSON: u8 = 0xA2;

/// The body format a [`Codec`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Format {
    /// postcard: compact, Rust-first (the default).
    #[default]
    Postcard,
    /// JSON: for values other languages read.
    Json,
}

impl Format {
    /// The format whose envelope `bytes` start with, if any.
    pub fn of(bytes: &[u8]) -> Option<Format> {
        match bytes.first() {
            Some(&MAGIC) => Some(Format::Postcard),
            Some(&MAGIC_JSON) => Some(Format::Json),
            _ => None,
        }
    }

    fn magic(self) -> u8 {
        match self {
            Format::Postcard => MAGIC,
            Format::Json => MAGIC_JSON,
        }
    }
}

/// Why bytes could not be decoded (the source of an [`Error::Codec`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Fewer bytes than an envelope header.
    #[error("{0} bytes is too short for an envelope")]
    Truncated(usize),
    /// The first byte is neither [`MAGIC`] nor [`MAGIC_JSON`].
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
    /// The body is not valid JSON for the type.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// Bytes left after the value.
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
}

/// Encodes and decodes typed values at one schema version.
///
/// # Behavior
///
/// - `decode(encode(v)) == v` for every serde value, in either format.
/// - A codec decodes both formats (the envelope says which wrote the bytes); it
///   writes its own.
/// - Decoding bytes written at another schema version, bytes that are not an envelope,
///   truncated or trailing bytes gives [`Error::Codec`] naming `what`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Codec {
    schema: u16,
    format: Format,
}

impl Codec {
    /// A postcard codec for values at `schema` version.
    pub const fn new(schema: u16) -> Self {
        Codec {
            schema,
            format: Format::Postcard,
        }
    }

    /// A JSON codec for values at `schema` version.
    pub const fn json(schema: u16) -> Self {
        Codec {
            schema,
            format: Format::Json,
        }
    }

    /// The schema version.
    pub fn schema(&self) -> u16 {
        self.schema
    }

    /// The format this codec writes.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Encodes `value`; `what` names it in the error.
    pub fn encode<T: Serialize + ?Sized>(&self, value: &T, what: &str) -> Result<Vec<u8>, Error> {
        let mut out = vec![self.format.magic()];
        out.extend_from_slice(&self.schema.to_le_bytes());
        match self.format {
            Format::Postcard => postcard::to_extend(value, out).map_err(CodecError::Postcard),
            Format::Json => serde_json::to_writer(&mut out, value)
                .map(|()| out)
                .map_err(CodecError::Json),
        }
        .map_err(|e| Error::codec(what, e))
    }

    /// Decodes bytes written by [`Codec::encode`] (in either format) at the same schema
    /// version.
    pub fn decode<T: DeserializeOwned>(&self, bytes: &[u8], what: &str) -> Result<T, Error> {
        self.try_decode(bytes).map_err(|e| Error::codec(what, e))
    }

    fn try_decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        let [magic, lo, hi, body @ ..] = bytes else {
            return Err(CodecError::Truncated(bytes.len()));
        };
        let Some(format) = Format::of(bytes) else {
            return Err(CodecError::NotAnEnvelope(*magic));
        };
        let found = u16::from_le_bytes([*lo, *hi]);
        if found != self.schema {
            return Err(CodecError::SchemaMismatch {
                expected: self.schema,
                found,
            });
        }
        match format {
            Format::Postcard => {
                let (value, rest) = postcard::take_from_bytes(body)?;
                if !rest.is_empty() {
                    return Err(CodecError::TrailingBytes(rest.len()));
                }
                Ok(value)
            }
            // serde_json refuses trailing characters other than whitespace itself.
            Format::Json => Ok(serde_json::from_slice(body)?),
        }
    }
}
