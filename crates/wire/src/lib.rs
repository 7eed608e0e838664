//! # Wire: messages and the signed envelope
//!
//! Ben's messages are protobuf (prost types generated from
//! `proto/ben.proto` by protox — pure Rust, no `protoc`). Every
//! control-plane message travels in a [`pb::SignedEnvelope`]: Ed25519 over
//! `"ben/v1/<kind>" || 0x00 || payload` (DESIGN.md §4, invariant 8), so a
//! signature made for one kind never verifies as another.
//!
//! A received envelope becomes usable only through [`open`], which checks
//! the kind, finds the signer's key in a [`Keyring`], verifies the
//! signature and decodes the payload into a [`Verified<T>`] — a type that
//! cannot be built any other way. What fails becomes a [`WireError`] whose
//! text is the dead-letter reason.

pub mod pb {
    //! Generated protobuf types (`ben.v1`).
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/ben.v1.rs"));
}

pub mod view;

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use prost::Message;
use std::collections::BTreeMap;

/// Message kinds and their signing domains.
pub trait Kind: Message + Default {
    /// The `<kind>` of `ben/v1/<kind>`.
    const KIND: &'static str;
}

macro_rules! kinds {
    ($($t:ty => $k:literal),* $(,)?) => { $(impl Kind for $t { const KIND: &'static str = $k; })* };
}

kinds! {
    pb::Announce => "announce",
    pb::Activate => "activate",
    pb::Abort => "abort",
    pb::Ack => "ack",
    pb::Heartbeat => "heartbeat",
    pb::Signal => "signal",
}

/// Why a message was refused; the text is the dead-letter reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("not a protobuf envelope: {0}")]
    Envelope(String),
    #[error("expected a `{expected}` message, got `{got}`")]
    WrongKind { expected: &'static str, got: String },
    #[error("unknown signing key `{0}`")]
    UnknownKey(String),
    #[error("signature is malformed")]
    BadSignatureBytes,
    #[error("signature does not verify for key `{0}`")]
    BadSignature(String),
    #[error("payload does not decode as `{kind}`: {reason}")]
    Payload { kind: &'static str, reason: String },
}

/// Public key id: hex of the first 8 bytes of BLAKE3(public key).
pub fn key_id(key: &VerifyingKey) -> String {
    blake3::hash(key.as_bytes()).as_bytes()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn domain(kind: &str, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(8 + kind.len() + payload.len());
    m.extend_from_slice(b"ben/v1/");
    m.extend_from_slice(kind.as_bytes());
    m.push(0);
    m.extend_from_slice(payload);
    m
}

/// A component's signing identity.
pub struct Signer {
    key: SigningKey,
    id: String,
}

impl Signer {
    /// From 32 secret bytes (the caller supplies randomness: cores stay
    /// deterministic).
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let key = SigningKey::from_bytes(&secret);
        let id = key_id(&key.verifying_key());
        Signer { key, id }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn public(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Encodes and signs `msg` into an envelope.
    pub fn seal<T: Kind>(&self, msg: &T) -> pb::SignedEnvelope {
        let payload = msg.encode_to_vec();
        let signature = self
            .key
            .sign(&domain(T::KIND, &payload))
            .to_bytes()
            .to_vec();
        pb::SignedEnvelope {
            kind: T::KIND.to_string(),
            key_id: self.id.clone(),
            payload,
            signature,
        }
    }

    /// `seal` then protobuf-encode, ready for the bus.
    pub fn seal_bytes<T: Kind>(&self, msg: &T) -> Vec<u8> {
        self.seal(msg).encode_to_vec()
    }
}

/// The public keys a receiver trusts.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: BTreeMap<String, VerifyingKey>,
}

impl Keyring {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn trust(&mut self, key: VerifyingKey) -> String {
        let id = key_id(&key);
        self.keys.insert(id.clone(), key);
        id
    }

    pub fn revoke(&mut self, id: &str) {
        self.keys.remove(id);
    }
}

/// A message whose envelope was verified. Only [`open`] makes one.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified<T> {
    msg: T,
    signer: String,
}

impl<T> Verified<T> {
    pub fn get(&self) -> &T {
        &self.msg
    }

    pub fn into_inner(self) -> T {
        self.msg
    }

    /// Key id of the signer.
    pub fn signer(&self) -> &str {
        &self.signer
    }
}

/// Verifies an envelope's kind, signer and signature, then decodes it.
pub fn open<T: Kind>(env: &pb::SignedEnvelope, keys: &Keyring) -> Result<Verified<T>, WireError> {
    if env.kind != T::KIND {
        return Err(WireError::WrongKind {
            expected: T::KIND,
            got: env.kind.chars().take(64).collect(),
        });
    }
    let key = keys
        .keys
        .get(&env.key_id)
        .ok_or_else(|| WireError::UnknownKey(env.key_id.chars().take(64).collect()))?;
    let sig_bytes: [u8; 64] = env
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| WireError::BadSignatureBytes)?;
    let sig = Signature::from_bytes(&sig_bytes);
    key.verify(&domain(&env.kind, &env.payload), &sig)
        .map_err(|_| WireError::BadSignature(env.key_id.clone()))?;
    let msg = T::decode(env.payload.as_slice()).map_err(|e| WireError::Payload {
        kind: T::KIND,
        reason: e.to_string(),
    })?;
    Ok(Verified {
        msg,
        signer: env.key_id.clone(),
    })
}

/// Decodes bus bytes into an envelope, then [`open`]s it.
pub fn open_bytes<T: Kind>(bytes: &[u8], keys: &Keyring) -> Result<Verified<T>, WireError> {
    let env = pb::SignedEnvelope::decode(bytes).map_err(|e| WireError::Envelope(e.to_string()))?;
    open(&env, keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn signer(b: u8) -> Signer {
        Signer::from_secret([b; 32])
    }

    fn ring(s: &Signer) -> Keyring {
        let mut k = Keyring::new();
        k.trust(s.public());
        k
    }

    #[test]
    fn round_trip_and_domain_separation() {
        let s = signer(1);
        let keys = ring(&s);
        let hb = pb::Heartbeat {
            component: "spine-1".into(),
            seq: 7,
            ..Default::default()
        };
        let bytes = s.seal_bytes(&hb);
        let v = open_bytes::<pb::Heartbeat>(&bytes, &keys).unwrap();
        assert_eq!(v.get(), &hb);
        assert_eq!(v.signer(), s.id());
        // The same bytes re-labelled as another kind do not verify.
        let mut env = s.seal(&hb);
        env.kind = "signal".into();
        assert_eq!(
            open::<pb::Signal>(&env, &keys),
            Err(WireError::BadSignature(s.id().to_string()))
        );
        // Asking for another kind is refused before any crypto.
        assert!(matches!(
            open::<pb::Ack>(&s.seal(&hb), &keys),
            Err(WireError::WrongKind { .. })
        ));
    }

    #[test]
    fn untrusted_or_revoked_keys_are_refused() {
        let s = signer(1);
        let other = signer(2);
        let mut keys = ring(&other);
        let env = s.seal(&pb::Abort::default());
        assert!(matches!(
            open::<pb::Abort>(&env, &keys),
            Err(WireError::UnknownKey(_))
        ));
        keys.trust(s.public());
        assert!(open::<pb::Abort>(&env, &keys).is_ok());
        keys.revoke(s.id());
        assert!(matches!(
            open::<pb::Abort>(&env, &keys),
            Err(WireError::UnknownKey(_))
        ));
    }

    #[test]
    fn tampered_payload_is_refused() {
        let s = signer(3);
        let keys = ring(&s);
        let mut env = s.seal(&pb::Activate {
            version: "v1".into(),
            required: vec!["a".into()],
        });
        env.payload[2] ^= 1;
        assert_eq!(
            open::<pb::Activate>(&env, &keys),
            Err(WireError::BadSignature(s.id().to_string()))
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_or_verify(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let s = signer(4);
            let keys = ring(&s);
            prop_assert!(open_bytes::<pb::Ack>(&bytes, &keys).is_err());
        }
    }
}

/// Length-prefixed framing for the app protocol (4-byte big-endian length).
pub mod frame {
    use super::pb;
    use prost::Message;

    /// Largest frame either side accepts; larger is an error, never a
    /// truncation.
    pub const MAX_FRAME: usize = 4 << 20;

    pub fn encode(f: &pb::AppFrame) -> Vec<u8> {
        let body = f.encode_to_vec();
        let mut out = Vec::with_capacity(4 + body.len());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }
}
