//! Structured-field actions: hmac, mask, hash, drop (and dispatch to scan).

use crate::{BlotError, Limits, Scanner};
use std::borrow::Cow;
use std::fmt::Write as _;

/// One redaction action, as declared in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Hmac,
    Mask { keep_last: usize },
    Hash,
    Drop,
    Scan,
}

impl Action {
    /// The action's name as written in Bitspec.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Hmac => "hmac",
            Action::Mask { .. } => "mask",
            Action::Hash => "hash",
            Action::Drop => "drop",
            Action::Scan => "scan",
        }
    }
}

/// A pseudonymisation key with its public id (the key epoch).
#[derive(Clone)]
pub struct BlotKey {
    id: String,
    bytes: [u8; 32],
}

impl std::fmt::Debug for BlotKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlotKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A key could not be made from the given material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error(
        "key material is {0} bytes; at least 16 bytes are needed (32 random bytes recommended)"
    )]
    TooShort(usize),
}

impl BlotKey {
    /// Derives a key from secret material (any length ≥ 16 bytes). The id is
    /// a short public digest, so outputs name the epoch that made them.
    pub fn from_material(material: &[u8]) -> Result<Self, KeyError> {
        if material.len() < 16 {
            return Err(KeyError::TooShort(material.len()));
        }
        let bytes = blake3::derive_key("ben/v1/blot-hmac-key", material);
        let id_hash = blake3::hash(&bytes);
        let id = hex(&id_hash.as_bytes()[..4]);
        Ok(BlotKey { id, bytes })
    }

    /// The public key id carried in every pseudonym.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Applies actions to values. Cheap to share; holds the key, the scanner and
/// the limits.
#[derive(Debug, Clone)]
pub struct Redactor {
    key: Option<BlotKey>,
    scanner: Scanner,
    limits: Limits,
}

impl Redactor {
    pub fn new(key: Option<BlotKey>, limits: Limits) -> Self {
        Redactor {
            key,
            scanner: Scanner::new(),
            limits,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn key_id(&self) -> Option<&str> {
        self.key.as_ref().map(BlotKey::id)
    }

    pub fn scanner(&self) -> &Scanner {
        &self.scanner
    }

    /// Applies `action` to one string value. `Ok(None)` means the field is
    /// dropped.
    pub fn apply<'a>(
        &self,
        action: Action,
        value: &'a str,
    ) -> Result<Option<Cow<'a, str>>, BlotError> {
        self.check_field(value)?;
        Ok(match action {
            Action::Hmac => Some(Cow::Owned(self.hmac(value)?)),
            Action::Mask { keep_last } => Some(Cow::Owned(mask(value, keep_last))),
            Action::Hash => Some(Cow::Owned(hash(value))),
            Action::Drop => None,
            Action::Scan => Some(self.scanner.redact(value)?),
        })
    }

    /// Checks the field-size limit.
    pub fn check_field(&self, value: &str) -> Result<(), BlotError> {
        if value.len() > self.limits.max_field_bytes {
            return Err(BlotError::FieldTooLarge {
                size: value.len(),
                limit: self.limits.max_field_bytes,
            });
        }
        Ok(())
    }

    /// Keyed pseudonym: `hmac:<key id>:<32 hex>`; same value + same key →
    /// same token.
    pub fn hmac(&self, value: &str) -> Result<String, BlotError> {
        let key = self.key.as_ref().ok_or(BlotError::NoKey)?;
        let h = blake3::keyed_hash(&key.bytes, value.as_bytes());
        let mut out = String::with_capacity(6 + key.id.len() + 33);
        out.push_str("hmac:");
        out.push_str(&key.id);
        out.push(':');
        out.push_str(&hex(&h.as_bytes()[..16]));
        Ok(out)
    }
}

/// Replaces every character except the last `keep_last` with `*`.
pub fn mask(value: &str, keep_last: usize) -> String {
    let n = value.chars().count();
    let keep_from = n.saturating_sub(keep_last);
    value
        .chars()
        .enumerate()
        .map(|(i, c)| if i < keep_from { '*' } else { c })
        .collect()
}

/// Unkeyed BLAKE3 digest: `blake3:<64 hex>`.
pub fn hash(value: &str) -> String {
    let h = blake3::hash(value.as_bytes());
    format!("blake3:{}", h.to_hex())
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor() -> Redactor {
        Redactor::new(
            Some(BlotKey::from_material(b"0123456789abcdef0123").unwrap()),
            Limits::default(),
        )
    }

    #[test]
    fn hmac_is_stable_per_key_and_differs_across_keys() {
        let a = redactor();
        let b = Redactor::new(
            Some(BlotKey::from_material(b"another key of 16+ bytes").unwrap()),
            Limits::default(),
        );
        assert_eq!(
            a.hmac("ann@example.com").unwrap(),
            a.hmac("ann@example.com").unwrap()
        );
        assert_ne!(
            a.hmac("ann@example.com").unwrap(),
            a.hmac("bob@example.com").unwrap()
        );
        assert_ne!(
            a.hmac("ann@example.com").unwrap(),
            b.hmac("ann@example.com").unwrap()
        );
        let t = a.hmac("ann@example.com").unwrap();
        assert!(t.starts_with(&format!("hmac:{}:", a.key_id().unwrap())));
        assert!(!t.contains("ann"));
    }

    #[test]
    fn hmac_without_key_fails_closed() {
        let r = Redactor::new(None, Limits::default());
        assert_eq!(r.apply(Action::Hmac, "x"), Err(BlotError::NoKey));
    }

    #[test]
    fn short_key_material_is_refused() {
        assert_eq!(
            BlotKey::from_material(b"short").unwrap_err(),
            KeyError::TooShort(5)
        );
    }

    #[test]
    fn mask_keeps_tail_chars() {
        assert_eq!(mask("4111111111111111", 4), "************1111");
        assert_eq!(mask("abc", 4), "abc");
        assert_eq!(mask("żółw", 1), "***w");
    }

    #[test]
    fn field_limit_is_enforced() {
        let r = Redactor::new(
            None,
            Limits {
                max_field_bytes: 3,
                max_record_bytes: 10,
            },
        );
        assert_eq!(
            r.apply(Action::Hash, "abcd"),
            Err(BlotError::FieldTooLarge { size: 4, limit: 3 })
        );
        assert_eq!(r.apply(Action::Drop, "abc"), Ok(None));
    }
}
