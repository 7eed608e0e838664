//! # Blot — Ben's redaction engine
//!
//! Blot turns values that may hold personal data into values that do not.
//! It is a pure core: no I/O, no clock, no randomness. Keys are passed in.
//!
//! Actions (what a policy pack's `redact FIELD ACTION` clause asks for):
//!
//! | action | result | use |
//! |---|---|---|
//! | `hmac` | `hmac:<key id>:<32 hex>` keyed BLAKE3 pseudonym, stable per key | joins and counts still work downstream |
//! | `mask(keep_last: n)` | every char but the last `n` replaced by `*` | card tails for support staff |
//! | `hash` | `blake3:<64 hex>`, unkeyed | stable ids with no secret; guessable for low-entropy values |
//! | `drop` | the field is removed (`null`) | values nobody downstream needs |
//! | `scan` | free text with each PII span replaced by `[kind]` | notes, messages, log lines |
//!
//! Redaction fails closed: every function here returns `Result`, and a caller
//! that gets an error must not forward the record (DESIGN.md §4, invariant 5).

mod actions;
mod recognize;
pub mod scan;

pub use actions::{hash, mask, Action, BlotKey, KeyError, Keyring, RecordBudget, Redactor};
pub use scan::{Kind, Scanner, Span};

/// The format checks the recognizers use, for callers that validate a
/// declared field (`pii(card)`) rather than scan free text.
pub mod validate {
    pub use crate::recognize::validators::{iban_length, iban_mod97, luhn, ssn_valid};
}

/// Named limits; exceeding one is an error, never a truncation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest single field value Blot will redact, in bytes.
    pub max_field_bytes: usize,
    /// Largest whole record (sum of redacted string fields), in bytes.
    pub max_record_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_field_bytes: 1 << 20,
            max_record_bytes: 4 << 20,
        }
    }
}

/// Why redaction failed. The raw value is never part of an error.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum BlotError {
    #[error("field is {size} bytes, over the max_field_bytes limit of {limit}; raise [blot] max_field_bytes or shorten the value")]
    FieldTooLarge { size: usize, limit: usize },
    #[error("record is {size} bytes, over the max_record_bytes limit of {limit}; raise [blot] max_record_bytes or split the record")]
    RecordTooLarge { size: usize, limit: usize },
    #[error("hmac redaction needs a key: set BEN_BLOT_KEY or [blot] key in ben.toml")]
    NoKey,
    #[error("free-text scan is not available: {0}")]
    ScanUnavailable(&'static str),
    #[error("the value is not a Blot pseudonym (expected hmac:<key id>:<hex>)")]
    NotAPseudonym,
    #[error("no key with id {id} in the keyring; add the retired key as a previous key to match its pseudonyms")]
    UnknownKey { id: String },
    #[error("redaction failed inside Blot ({0}); the record was not forwarded — this is a Blot bug, please report it")]
    Internal(&'static str),
}
