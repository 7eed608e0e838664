//! # Blot — Ben's redaction engine
//!
//! Blot turns values that may hold personal data into values that do not.
//! Spines call it before any analysis, so it must never leak and never be
//! the bottleneck. It is a pure core: no I/O, no clock, no randomness; keys
//! are passed in.
//!
//! ## Actions
//!
//! What a policy pack's `redact FIELD ACTION` clause asks for:
//!
//! | action | result | use |
//! |---|---|---|
//! | `hmac` | `hmac:<key id>:<32 hex>` keyed BLAKE3 pseudonym, stable per key | joins and counts still work downstream |
//! | `mask(keep_last: n)` | every char but the last `n` replaced by `*` | card tails for support staff |
//! | `hash` | `blake3:<64 hex>`, unkeyed | stable ids with no secret; guessable for low-entropy values |
//! | `drop` | the field is removed (`null`) | values nobody downstream needs |
//! | `scan` | free text with each PII span replaced by `[kind]` | notes, messages, log lines |
//!
//! ```
//! use ben_blot::{Action, BlotKey, Limits, Redactor};
//!
//! let key = BlotKey::from_material(b"32 random bytes from your secret store").unwrap();
//! let blot = Redactor::new(Some(key), Limits::default());
//! let note = "card 4111 1111 1111 1111, mail ann@example.com, call +1 (415) 555-2671";
//! let out = blot.apply(Action::Scan, note).unwrap().unwrap();
//! assert_eq!(out, "card [card], mail [email], call [phone]");
//! let token = blot.apply(Action::Hmac, "ann@example.com").unwrap().unwrap();
//! assert!(token.starts_with(&format!("hmac:{}:", blot.key_id().unwrap())));
//! assert_eq!(blot.apply(Action::Mask { keep_last: 4 }, "4111111111111111").unwrap().unwrap(),
//!            "************1111");
//! ```
//!
//! ## Free-text scan
//!
//! [`Scanner`] finds twelve [`Kind`]s — email, card, IBAN, US SSN, phone,
//! IPv4, IPv6, JWT, bearer/API tokens, AWS access key ids, AWS secret keys,
//! PEM private keys — in **one pass** over the bytes: a hand-written scanner
//! where most bytes cost one table lookup and only word starts and a few
//! trigger bytes (`@ % + ( - : =`) consult the recognizers that can start
//! there. Every kind with a checkable format is validated before it counts
//! (Luhn and issuer ranges for cards, country length and mod-97 for IBANs,
//! SSA area/group/serial rules for SSNs, octet ranges, RFC 4291 group counts,
//! `eyJ` JSON headers for JWTs), so order ids, UUIDs, timestamps, versions
//! and hashes are left alone. A bare run of digits is a phone number only
//! when words next to it say so (`call me on 3306824628`), and a grouped
//! card or phone must start its run of digit groups (the digits of a
//! mistyped IBAN are no card). `corpus/README.md` defines each kind exactly;
//! `corpus/pii.jsonl` (2,500+ labeled cases) measures it; `BENCHMARKS.md` has the figures.
//!
//! A value must be a token: not glued to letters, digits or `_`, and not the
//! middle of a longer number. `\n`-style escapes count as separators, so
//! JSON strings nested inside JSON strings are scanned correctly.
//!
//! ## Keys and rotation
//!
//! A [`Keyring`] holds the current key and previous ones. New pseudonyms
//! use the current key and name its id; [`Redactor::hmac_all`] and
//! [`Redactor::hmac_matches`] let a join match pseudonyms made under a
//! previous epoch.
//!
//! ## Guarantees and limits
//!
//! * **Fails closed** (DESIGN.md §4, invariant 5): every function returns
//!   `Result`; on an error the caller gets no value at all — never the raw
//!   input, never a partial output. A caller that gets an error must not
//!   forward the record. Errors never contain the value.
//! * **No panics on input** (invariant 11): proptests and a fuzz target feed
//!   arbitrary bytes; redacted output never contains anything the scanner
//!   still recognizes.
//! * **Named limits** ([`Limits`]): `max_field_bytes` per value and
//!   `max_record_bytes` per record ([`RecordBudget`]); exceeding one is an
//!   error, never a truncation.
//! * **Linear time**: the scan touches each byte a bounded number of times.
//! * Not covered: PII with no fixed format (names, street addresses),
//!   obfuscated values (`4 1 1 1 …`), values glued to letters
//!   (`card4111…`), secrets with no recognizable shape or key name.

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
