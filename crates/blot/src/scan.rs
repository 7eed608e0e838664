//! Free-text PII scanning. NOT BUILT YET: the recognizers land with the Blot
//! issue. Until then `Scanner::redact` fails closed, so no record with a
//! `scan` field is ever forwarded unredacted.

use crate::BlotError;
use std::borrow::Cow;

/// A PII kind a recognizer finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Email,
    Card,
    Iban,
    UsSsn,
    Phone,
    Ipv4,
    Ipv6,
    Jwt,
    BearerToken,
    AwsAccessKey,
    AwsSecretKey,
    PrivateKey,
}

/// A found span: byte offsets into the scanned text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub kind: Kind,
}

/// The compiled multi-kind scanner.
#[derive(Debug, Clone, Default)]
pub struct Scanner {}

impl Scanner {
    pub fn new() -> Self {
        Scanner {}
    }

    /// Every PII span in `text`, in order, non-overlapping.
    pub fn find(&self, _text: &str) -> Result<Vec<Span>, BlotError> {
        Err(BlotError::ScanUnavailable(
            "the free-text recognizers are not built yet",
        ))
    }

    /// `text` with each PII span replaced by `[kind]`.
    pub fn redact<'a>(&self, _text: &'a str) -> Result<Cow<'a, str>, BlotError> {
        Err(BlotError::ScanUnavailable(
            "the free-text recognizers are not built yet",
        ))
    }
}
