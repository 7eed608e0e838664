//! Structured-field actions: hmac, mask, hash, drop (and dispatch to scan).

use crate::{BlotError, Limits, Scanner};
use std::borrow::Cow;

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
    #[error("two keys in one keyring share the id {0}; remove one of them")]
    DuplicateId(String),
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
        let id = hex::encode(&id_hash.as_bytes()[..4]);
        Ok(BlotKey { id, bytes })
    }

    /// The public key id carried in every pseudonym.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// The hmac keys of a deployment: the current key, which makes every new
/// pseudonym, and previous keys kept during a rotation so that pseudonyms
/// made before it can still be recognised and re-keyed for joins.
#[derive(Debug, Clone)]
pub struct Keyring {
    current: BlotKey,
    previous: Vec<BlotKey>,
}

impl Keyring {
    /// A keyring with one key.
    pub fn new(current: BlotKey) -> Self {
        Keyring {
            current,
            previous: Vec::new(),
        }
    }

    /// Adds a previous key (newest first). Two keys with the same id are
    /// refused: a pseudonym's key id must name exactly one key.
    pub fn with_previous(mut self, key: BlotKey) -> Result<Self, KeyError> {
        if self.key(key.id()).is_some() {
            return Err(KeyError::DuplicateId(key.id().to_string()));
        }
        self.previous.push(key);
        Ok(self)
    }

    /// The key that makes new pseudonyms.
    pub fn current(&self) -> &BlotKey {
        &self.current
    }

    /// The key with this id, current or previous.
    pub fn key(&self, id: &str) -> Option<&BlotKey> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id() == id)
    }

    /// Every key, current first.
    pub fn keys(&self) -> impl Iterator<Item = &BlotKey> {
        std::iter::once(&self.current).chain(&self.previous)
    }
}

impl From<BlotKey> for Keyring {
    fn from(k: BlotKey) -> Self {
        Keyring::new(k)
    }
}

/// Tracks the bytes redacted so far in one record against
/// [`Limits::max_record_bytes`]. Make one per record with
/// [`Redactor::record_budget`].
#[derive(Debug, Clone, Copy)]
pub struct RecordBudget {
    used: usize,
    limit: usize,
}

impl RecordBudget {
    /// Counts `bytes` more; errors once the record total passes the limit.
    pub fn charge(&mut self, bytes: usize) -> Result<(), BlotError> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.limit {
            return Err(BlotError::RecordTooLarge {
                size: self.used,
                limit: self.limit,
            });
        }
        Ok(())
    }

    /// Bytes counted so far.
    pub fn used(&self) -> usize {
        self.used
    }
}

/// Applies actions to values. Cheap to share; holds the keys, the scanner
/// and the limits.
#[derive(Debug, Clone)]
pub struct Redactor {
    keys: Option<Keyring>,
    scanner: Scanner,
    limits: Limits,
}

impl Redactor {
    /// A redactor with one hmac key (or none: `hmac` then fails closed).
    pub fn new(key: Option<BlotKey>, limits: Limits) -> Self {
        Redactor::with_keyring(key.map(Keyring::new), limits)
    }

    /// A redactor with a keyring, for key rotation.
    pub fn with_keyring(keys: Option<Keyring>, limits: Limits) -> Self {
        Redactor {
            keys,
            scanner: Scanner::new(),
            limits,
        }
    }

    /// The limits this redactor enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The id of the current hmac key (the key epoch), if there is a key.
    pub fn key_id(&self) -> Option<&str> {
        self.keys.as_ref().map(|k| k.current().id())
    }

    /// The keyring, if any.
    pub fn keyring(&self) -> Option<&Keyring> {
        self.keys.as_ref()
    }

    /// The free-text scanner.
    pub fn scanner(&self) -> &Scanner {
        &self.scanner
    }

    /// A fresh per-record byte budget.
    pub fn record_budget(&self) -> RecordBudget {
        RecordBudget {
            used: 0,
            limit: self.limits.max_record_bytes,
        }
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

    /// [`Redactor::apply`] that also charges the value to a record budget.
    pub fn apply_in<'a>(
        &self,
        budget: &mut RecordBudget,
        action: Action,
        value: &'a str,
    ) -> Result<Option<Cow<'a, str>>, BlotError> {
        self.check_field(value)?;
        budget.charge(value.len())?;
        self.apply(action, value)
    }

    /// Scans one string field (a declared `pii(text)` field, or an undeclared
    /// one under `scan_undeclared`), enforcing the field limit. Borrows when
    /// nothing was found.
    pub fn scan_field<'a>(&self, value: &'a str) -> Result<Cow<'a, str>, BlotError> {
        self.check_field(value)?;
        self.scanner.redact(value)
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

    /// Keyed pseudonym under the current key: `hmac:<key id>:<32 hex>`;
    /// same value + same key → same token.
    pub fn hmac(&self, value: &str) -> Result<String, BlotError> {
        let keys = self.keys.as_ref().ok_or(BlotError::NoKey)?;
        Ok(pseudonym(keys.current(), value))
    }

    /// The pseudonym of `value` under every key, current first: during a
    /// rotation, a join matches a stored pseudonym against all of them.
    pub fn hmac_all(&self, value: &str) -> Result<Vec<String>, BlotError> {
        let keys = self.keys.as_ref().ok_or(BlotError::NoKey)?;
        Ok(keys.keys().map(|k| pseudonym(k, value)).collect())
    }

    /// Whether `token` is the pseudonym of `value` under the key its id
    /// names. `Ok(false)` for a well-formed token of another value;
    /// `UnknownKey` for a key id this keyring does not hold.
    pub fn hmac_matches(&self, value: &str, token: &str) -> Result<bool, BlotError> {
        let keys = self.keys.as_ref().ok_or(BlotError::NoKey)?;
        let id = token
            .strip_prefix("hmac:")
            .and_then(|r| r.split_once(':'))
            .map(|(id, _)| id)
            .ok_or(BlotError::NotAPseudonym)?;
        let key = keys
            .key(id)
            .ok_or_else(|| BlotError::UnknownKey { id: id.to_string() })?;
        Ok(pseudonym(key, value) == token)
    }
}

fn pseudonym(key: &BlotKey, value: &str) -> String {
    let h = blake3::keyed_hash(&key.bytes, value.as_bytes());
    let mut out = String::with_capacity(6 + key.id.len() + 32);
    out.push_str("hmac:");
    out.push_str(&key.id);
    out.push(':');
    push_hex(&mut out, &h.as_bytes()[..16]);
    out
}

/// Replaces every character except the last `keep_last` with `*`.
pub fn mask(value: &str, keep_last: usize) -> String {
    if value.is_ascii() {
        // Fast path: one byte per char.
        let keep_from = value.len().saturating_sub(keep_last);
        let mut out = String::with_capacity(value.len());
        out.extend(std::iter::repeat_n('*', keep_from));
        out.push_str(&value[keep_from..]);
        return out;
    }
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
    let mut out = String::with_capacity(7 + 64);
    out.push_str("blake3:");
    push_hex(&mut out, h.as_bytes());
    out
}

/// Appends `bytes` in lowercase hex without allocating (the data path
/// hashes a value per record).
fn push_hex(out: &mut String, bytes: &[u8]) {
    let mut buf = [0u8; 64];
    for chunk in bytes.chunks(32) {
        let digits = &mut buf[..2 * chunk.len()];
        // `digits` is exactly twice the chunk and holds only ASCII hex
        // digits afterwards, so neither step fails.
        if hex::encode_to_slice(chunk, digits).is_ok() {
            if let Ok(s) = std::str::from_utf8(digits) {
                out.push_str(s);
            }
        }
    }
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
    #[test]
    fn hash_is_blake3_hex() {
        let h = hash("abc");
        assert_eq!(h.len(), 7 + 64);
        assert_eq!(h, format!("blake3:{}", blake3::hash(b"abc").to_hex()));
    }

    #[test]
    fn keyring_rotation_keeps_old_pseudonyms_matchable() {
        let old = BlotKey::from_material(b"the 2025 key material!").unwrap();
        let new = BlotKey::from_material(b"the 2026 key material!").unwrap();
        let before = Redactor::new(Some(old.clone()), Limits::default());
        let token_2025 = before.hmac("ann@example.com").unwrap();

        let ring = Keyring::new(new.clone())
            .with_previous(old.clone())
            .unwrap();
        let after = Redactor::with_keyring(Some(ring), Limits::default());
        let token_2026 = after.hmac("ann@example.com").unwrap();
        assert_ne!(token_2025, token_2026);
        assert_eq!(after.key_id(), Some(new.id()));
        assert!(token_2026.contains(new.id()));
        assert_eq!(
            after.hmac_all("ann@example.com").unwrap(),
            vec![token_2026.clone(), token_2025.clone()]
        );
        assert_eq!(after.hmac_matches("ann@example.com", &token_2025), Ok(true));
        assert_eq!(
            after.hmac_matches("bob@example.com", &token_2025),
            Ok(false)
        );
        assert_eq!(
            after.hmac_matches("ann@example.com", "blake3:00"),
            Err(BlotError::NotAPseudonym)
        );
        let stranger = BlotKey::from_material(b"some unrelated key material").unwrap();
        let t = Redactor::new(Some(stranger.clone()), Limits::default())
            .hmac("x")
            .unwrap();
        assert_eq!(
            after.hmac_matches("x", &t),
            Err(BlotError::UnknownKey {
                id: stranger.id().to_string()
            })
        );
        assert!(matches!(
            Keyring::new(new.clone()).with_previous(new),
            Err(KeyError::DuplicateId(_))
        ));
    }

    #[test]
    fn record_budget_is_enforced_across_fields() {
        let r = Redactor::new(
            None,
            Limits {
                max_field_bytes: 10,
                max_record_bytes: 12,
            },
        );
        let mut b = r.record_budget();
        assert!(r.apply_in(&mut b, Action::Drop, "123456").is_ok());
        assert!(r.apply_in(&mut b, Action::Hash, "123456").is_ok());
        assert_eq!(
            r.apply_in(&mut b, Action::Scan, "1"),
            Err(BlotError::RecordTooLarge {
                size: 13,
                limit: 12
            })
        );
        assert_eq!(
            r.scan_field("mail ann@example.com"),
            Err(BlotError::FieldTooLarge {
                size: 20,
                limit: 10
            })
        );
        assert_eq!(r.scan_field("a@b.co").unwrap(), "[email]");
    }
}
