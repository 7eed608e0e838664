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
//!
//! Every key in a [`Keyring`] is bound to one component id and its
//! [`Role`]; `open` refuses a kind the signer's role may not sign
//! ([`role::SIGNS`]) and a body that names another component than the
//! signer ([`Kind::sender`]), so one spine's key can neither ack as
//! another component nor activate anything.

pub mod pb {
    //! Generated protobuf types (`ben.v1`).
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/ben.v1.rs"));
}

pub mod role;
pub mod subjects;
pub mod view;

pub use ed25519_dalek::VerifyingKey;
pub use role::{Role, LEDGER_ID};

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _};
use prost::Message;
use std::collections::BTreeMap;

/// Message kinds and their signing domains.
pub trait Kind: Message + Default {
    /// The `<kind>` of `ben/v1/<kind>`.
    const KIND: &'static str;

    /// The component id the body says sent it, for kinds that name one:
    /// [`open`] refuses it unless it is the signer's id.
    fn sender(&self) -> Option<&str> {
        None
    }

    /// The role the body claims (a heartbeat's): [`open`] refuses it
    /// unless it is the signer's role.
    fn claimed_role(&self) -> Option<&str> {
        None
    }
}

macro_rules! kinds {
    ($($t:ty => $k:literal $(, sender: $f:ident)?;)*) => {
        $(impl Kind for $t {
            const KIND: &'static str = $k;
            $(fn sender(&self) -> Option<&str> { Some(&self.$f) })?
        })*
    };
}

kinds! {
    pb::Announce => "announce";
    pb::Activate => "activate";
    pb::Abort => "abort";
    pb::Ack => "ack", sender: component;
    pb::Signal => "signal", sender: sender;
    pb::DeadLetter => "dead_letter", sender: sender;
    pb::BeeRevocations => "bee_revocations";
    pb::BeeRoster => "bee_roster", sender: sidecar;
}

impl Kind for pb::Heartbeat {
    const KIND: &'static str = "heartbeat";
    fn sender(&self) -> Option<&str> {
        Some(&self.component)
    }
    fn claimed_role(&self) -> Option<&str> {
        Some(&self.role)
    }
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
    #[error("`{id}` (role {role}) may not sign `{kind}` messages")]
    RoleMayNotSign {
        id: String,
        role: Role,
        kind: &'static str,
    },
    #[error("`{kind}` names `{claimed}` as its sender but is signed by `{id}`")]
    NotTheSigner {
        kind: &'static str,
        claimed: String,
        id: String,
    },
    #[error("`{0}` names no role: a key's role is its id's stem (spine-1, control, mesh-1, …)")]
    NoRole(String),
    #[error("`{kind}` claims role `{claimed}` but is signed by `{id}` (role {role})")]
    NotTheSignersRole {
        kind: &'static str,
        claimed: String,
        id: String,
        role: Role,
    },
}

/// Public key id: hex of the first 8 bytes of BLAKE3(public key).
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&blake3::hash(key.as_bytes()).as_bytes()[..8])
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

/// A trusted key and what it is bound to.
#[derive(Debug, Clone)]
struct Bound {
    key: VerifyingKey,
    component: String,
    role: Role,
}

/// The public keys a receiver trusts, each bound to one component id and
/// role by whoever provisioned it.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: BTreeMap<String, Bound>,
}

impl Keyring {
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts `key` as component `component` of `role`; returns its key id.
    pub fn trust(&mut self, component: &str, role: Role, key: VerifyingKey) -> String {
        let id = key_id(&key);
        self.keys.insert(
            id.clone(),
            Bound {
                key,
                component: component.to_string(),
                role,
            },
        );
        id
    }

    /// Trusts `key` as `component`, whose role is its id's
    /// ([`Role::of_id`]); an id of no role is refused.
    pub fn trust_id(&mut self, component: &str, key: VerifyingKey) -> Result<String, WireError> {
        let role = Role::of_id(component)
            .ok_or_else(|| WireError::NoRole(component.chars().take(64).collect()))?;
        Ok(self.trust(component, role, key))
    }

    /// Stops trusting key `id`.
    pub fn revoke(&mut self, id: &str) {
        self.keys.remove(id);
    }

    /// The component id and role key `id` is bound to.
    pub fn identity(&self, id: &str) -> Option<(&str, Role)> {
        self.keys.get(id).map(|b| (b.component.as_str(), b.role))
    }
}

/// A message whose envelope was verified. Only [`open`] makes one.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified<T> {
    msg: T,
    signer: String,
    component: String,
    role: Role,
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

    /// The component id the signer's key is bound to.
    pub fn component(&self) -> &str {
        &self.component
    }

    /// The role the signer's key is bound to.
    pub fn role(&self) -> Role {
        self.role
    }
}

/// Verifies an envelope's kind, signer and signature, that the signer's
/// role may sign this kind, decodes it, and checks that a body naming its
/// sender (or role) names the signer's (invariant 8).
pub fn open<T: Kind>(env: &pb::SignedEnvelope, keys: &Keyring) -> Result<Verified<T>, WireError> {
    let (bound, sig) = signer_of::<T>(env, keys)?;
    bound
        .key
        .verify(&domain(&env.kind, &env.payload), &sig)
        .map_err(|_| WireError::BadSignature(env.key_id.clone()))?;
    finish(env, bound)
}

/// [`open`] for many envelopes of one kind, their signatures checked
/// together (Ed25519 batch verification, the terms of one signer's key
/// added up first: a fraction of the work of checking them one by one).
///
/// What one envelope gets does not depend on what came with it: the rule
/// is ZIP-215's (the `ed25519-zebra` crate's), the **cofactored** equation
/// `8·(sB − R − hA) = 0`, for the batch and, when a batch fails, for each
/// envelope alone, so whoever opens the same envelope in other company
/// comes to the same answer (validators rely on that). The batch's
/// coefficients are drawn from its contents (128 bits each, see
/// [`Coefficients`]), so an invalid signature passes inside a batch with
/// probability 2⁻¹²⁸ and a signer cannot pick signatures after them.
/// It accepts everything [`open`] accepts and, besides, only signatures no
/// honest signer makes (built by the key's holder with a small-order
/// component, or with `R` encoded non-canonically). A failed batch costs
/// a second check per envelope.
pub fn open_all<T: Kind>(
    envs: &[pb::SignedEnvelope],
    keys: &Keyring,
) -> Vec<Result<Verified<T>, WireError>> {
    let checked: Vec<_> = envs.iter().map(|e| signer_of::<T>(e, keys)).collect();
    let mut items = Vec::with_capacity(envs.len());
    let mut seed = blake3::Hasher::new_derive_key("ben/v1 signature batch coefficients");
    for (i, c) in checked.iter().enumerate() {
        let Ok((bound, sig)) = c else { continue };
        let msg = domain(&envs[i].kind, &envs[i].payload);
        let key = bound.key.to_bytes();
        seed.update(&key);
        seed.update(&sig.to_bytes());
        seed.update(&(msg.len() as u64).to_le_bytes());
        seed.update(&msg);
        let item = ed25519_zebra::batch::Item::from((key.into(), *sig, &msg));
        items.push((i, item));
    }
    let mut good = vec![false; envs.len()];
    let batch_holds = items.len() > 1 && {
        let mut batch = ed25519_zebra::batch::Verifier::new();
        for (_, item) in &items {
            batch.queue(item.clone());
        }
        batch.verify(Coefficients(seed.finalize_xof())).is_ok()
    };
    for (i, item) in items {
        good[i] = batch_holds || item.verify_single().is_ok();
    }
    checked
        .into_iter()
        .zip(envs)
        .zip(good)
        .map(|((c, env), good)| {
            let (bound, _) = c?;
            if !good {
                return Err(WireError::BadSignature(env.key_id.clone()));
            }
            finish(env, bound)
        })
        .collect()
}

/// A batch's random coefficients: BLAKE3's output stream over everything
/// the batch holds (keys, signatures, messages), the way Fiat–Shamir turns
/// a verifier's coins into a hash. Deterministic (the check needs no
/// outside randomness) and unknown to a signer until its signatures are
/// fixed.
struct Coefficients(blake3::OutputReader);

impl rand_core::RngCore for Coefficients {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0; 4];
        self.0.fill(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0; 8];
        self.0.fill(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill(dest);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.0.fill(dest);
        Ok(())
    }
}

impl rand_core::CryptoRng for Coefficients {}

/// What [`open`] checks before the signature: the kind, that the signer's
/// key is trusted, and the signature's length.
fn signer_of<'k, T: Kind>(
    env: &pb::SignedEnvelope,
    keys: &'k Keyring,
) -> Result<(&'k Bound, Signature), WireError> {
    if env.kind != T::KIND {
        return Err(WireError::WrongKind {
            expected: T::KIND,
            got: env.kind.chars().take(64).collect(),
        });
    }
    let bound = keys
        .keys
        .get(&env.key_id)
        .ok_or_else(|| WireError::UnknownKey(env.key_id.chars().take(64).collect()))?;
    let sig_bytes: [u8; 64] = env
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| WireError::BadSignatureBytes)?;
    Ok((bound, Signature::from_bytes(&sig_bytes)))
}

/// What [`open`] checks after the signature (so a refusal names who
/// really signed): the role, the payload, the sender it names.
fn finish<T: Kind>(env: &pb::SignedEnvelope, bound: &Bound) -> Result<Verified<T>, WireError> {
    if !bound.role.may_sign(T::KIND) {
        return Err(WireError::RoleMayNotSign {
            id: bound.component.clone(),
            role: bound.role,
            kind: T::KIND,
        });
    }
    let msg = T::decode(env.payload.as_slice()).map_err(|e| WireError::Payload {
        kind: T::KIND,
        reason: e.to_string(),
    })?;
    if let Some(claimed) = msg.sender().filter(|c| *c != bound.component) {
        return Err(WireError::NotTheSigner {
            kind: T::KIND,
            claimed: claimed.chars().take(64).collect(),
            id: bound.component.clone(),
        });
    }
    if let Some(claimed) = msg.claimed_role().filter(|c| *c != bound.role.name()) {
        return Err(WireError::NotTheSignersRole {
            kind: T::KIND,
            claimed: claimed.chars().take(64).collect(),
            id: bound.component.clone(),
            role: bound.role,
        });
    }
    Ok(Verified {
        msg,
        signer: env.key_id.clone(),
        component: bound.component.clone(),
        role: bound.role,
    })
}

/// Decodes bus bytes into an envelope, then [`open`]s it.
pub fn open_bytes<T: Kind>(bytes: &[u8], keys: &Keyring) -> Result<Verified<T>, WireError> {
    let env = pb::SignedEnvelope::decode(bytes).map_err(|e| WireError::Envelope(e.to_string()))?;
    open(&env, keys)
}

/// Test support: `msg` sealed by `secret`'s key with a signature no
/// honest signer makes — its `R` carries a point of order 8, so the
/// cofactorless check ([`open`]) refuses it and the cofactored one
/// ([`open_all`]) takes it. Only the key's holder can build one; tests use
/// it to show that validators come to one verdict on it however they
/// batch.
#[cfg(any(test, feature = "test-support"))]
pub fn seal_with_torsion<T: Kind>(secret: [u8; 32], msg: &T) -> pb::SignedEnvelope {
    use curve25519_dalek::{constants, Scalar};
    use sha2::{Digest as _, Sha512};
    let key = SigningKey::from_bytes(&secret);
    let payload = msg.encode_to_vec();
    let m = domain(T::KIND, &payload);
    let r = Scalar::from_hash(Sha512::new().chain_update(b"nonce").chain_update(&m));
    let big_r = constants::ED25519_BASEPOINT_POINT * r + constants::EIGHT_TORSION[1];
    let r_bytes = big_r.compress().to_bytes();
    let h = Scalar::from_hash(
        Sha512::new()
            .chain_update(r_bytes)
            .chain_update(key.verifying_key().as_bytes())
            .chain_update(&m),
    );
    let s = r + h * key.to_scalar();
    let mut signature = r_bytes.to_vec();
    signature.extend_from_slice(s.as_bytes());
    pb::SignedEnvelope {
        kind: T::KIND.to_string(),
        key_id: key_id(&key.verifying_key()),
        payload,
        signature,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn signer(b: u8) -> Signer {
        Signer::from_secret([b; 32])
    }

    /// A ring trusting `s` as component `id`.
    fn ring(s: &Signer, id: &str) -> Keyring {
        let mut k = Keyring::new();
        k.trust_id(id, s.public()).unwrap();
        k
    }

    #[test]
    fn round_trip_and_domain_separation() {
        let s = signer(1);
        let keys = ring(&s, "spine-1");
        let hb = pb::Heartbeat {
            component: "spine-1".into(),
            role: "spine".into(),
            seq: 7,
            ..Default::default()
        };
        let bytes = s.seal_bytes(&hb);
        let v = open_bytes::<pb::Heartbeat>(&bytes, &keys).unwrap();
        assert_eq!(v.get(), &hb);
        assert_eq!(v.signer(), s.id());
        assert_eq!((v.component(), v.role()), ("spine-1", Role::Spine));
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
        let mut keys = ring(&other, "spine-1");
        let env = s.seal(&pb::Abort::default());
        assert!(matches!(
            open::<pb::Abort>(&env, &keys),
            Err(WireError::UnknownKey(_))
        ));
        keys.trust(LEDGER_ID, Role::Ledger, s.public());
        assert!(open::<pb::Abort>(&env, &keys).is_ok());
        assert_eq!(keys.identity(s.id()), Some((LEDGER_ID, Role::Ledger)));
        keys.revoke(s.id());
        assert!(matches!(
            open::<pb::Abort>(&env, &keys),
            Err(WireError::UnknownKey(_))
        ));
        assert_eq!(
            keys.trust_id("nobody", s.public()),
            Err(WireError::NoRole("nobody".into()))
        );
    }

    #[test]
    fn tampered_payload_is_refused() {
        let s = signer(3);
        let keys = ring(&s, LEDGER_ID);
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

    #[test]
    fn a_role_signs_only_its_kinds() {
        let spine = signer(5);
        let ledger = signer(6);
        let mut keys = ring(&spine, "spine-2");
        keys.trust(LEDGER_ID, Role::Ledger, ledger.public());
        let act = pb::Activate {
            version: "v9".into(),
            required: vec!["spine-2".into()],
        };
        // A spine's key cannot activate, however good its signature.
        let e = open::<pb::Activate>(&spine.seal(&act), &keys).unwrap_err();
        assert_eq!(
            e,
            WireError::RoleMayNotSign {
                id: "spine-2".into(),
                role: Role::Spine,
                kind: "activate"
            }
        );
        assert_eq!(
            e.to_string(),
            "`spine-2` (role spine) may not sign `activate` messages"
        );
        assert!(open::<pb::Activate>(&ledger.seal(&act), &keys).is_ok());
        // Nor can the ledger ack or beat.
        let ack = pb::Ack {
            component: LEDGER_ID.into(),
            ..Default::default()
        };
        assert!(matches!(
            open::<pb::Ack>(&ledger.seal(&ack), &keys),
            Err(WireError::RoleMayNotSign { .. })
        ));
    }

    #[test]
    fn a_component_speaks_only_as_itself() {
        let spine = signer(5);
        let keys = ring(&spine, "spine-2");
        let ack = pb::Ack {
            component: "spine-1".into(),
            ..Default::default()
        };
        let e = open::<pb::Ack>(&spine.seal(&ack), &keys).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`ack` names `spine-1` as its sender but is signed by `spine-2`"
        );
        let mine = pb::Ack {
            component: "spine-2".into(),
            ..Default::default()
        };
        assert_eq!(
            open::<pb::Ack>(&spine.seal(&mine), &keys).unwrap().get(),
            &mine
        );
        // A heartbeat claiming another role.
        let hb = pb::Heartbeat {
            component: "spine-2".into(),
            role: "detector".into(),
            ..Default::default()
        };
        assert!(matches!(
            open::<pb::Heartbeat>(&spine.seal(&hb), &keys),
            Err(WireError::NotTheSignersRole { .. })
        ));
        // A dead letter written in another's name; an empty sender is no
        // exception.
        for sender in ["proxy-1", ""] {
            let dl = pb::DeadLetter {
                sender: sender.into(),
                ..Default::default()
            };
            assert!(matches!(
                open::<pb::DeadLetter>(&spine.seal(&dl), &keys),
                Err(WireError::NotTheSigner { .. })
            ));
        }
    }

    /// Every kind defined here, sealed by a key of every role: it opens
    /// exactly when the table lets that role sign it.
    #[test]
    fn every_kind_by_every_role() {
        fn check<T: Kind + std::fmt::Debug>(mut msg: T, set: impl Fn(&mut T, &str, &str)) {
            for (i, role) in Role::ALL.into_iter().enumerate() {
                let s = signer(100 + i as u8);
                let id = match role {
                    Role::Ledger => LEDGER_ID.to_string(),
                    r => format!("{}-1", r.name()),
                };
                let keys = ring(&s, &id);
                set(&mut msg, &id, role.name());
                let r = open::<T>(&s.seal(&msg), &keys);
                if role.may_sign(T::KIND) {
                    assert!(r.is_ok(), "{role} {}: {r:?}", T::KIND);
                } else {
                    assert!(
                        matches!(r, Err(WireError::RoleMayNotSign { .. })),
                        "{role} {}: {r:?}",
                        T::KIND
                    );
                }
            }
        }
        fn none<T>(_: &mut T, _: &str, _: &str) {}
        check(pb::Announce::default(), none);
        check(pb::Activate::default(), none);
        check(pb::Abort::default(), none);
        check(pb::Ack::default(), |m, id, _| m.component = id.into());
        check(pb::Heartbeat::default(), |m, id, r| {
            m.component = id.into();
            m.role = r.into();
        });
        check(pb::Signal::default(), |m, id, _| m.sender = id.into());
        check(pb::DeadLetter::default(), |m, id, _| m.sender = id.into());
        check(pb::BeeRevocations::default(), none);
        check(pb::BeeRoster::default(), |m, id, _| m.sidecar = id.into());
    }

    /// Envelopes of every sort `open` refuses, and good ones from several
    /// keys, in one ring: the signer ids are spine-1 … spine-3 and the
    /// ledger.
    fn assorted(choices: &[(u8, u8)]) -> (Vec<pb::SignedEnvelope>, Keyring) {
        let spines: Vec<Signer> = (1..=3).map(signer).collect();
        let ledger = signer(9);
        let mut keys = Keyring::new();
        for (i, s) in spines.iter().enumerate() {
            keys.trust_id(&format!("spine-{}", i + 1), s.public())
                .unwrap();
        }
        keys.trust(LEDGER_ID, Role::Ledger, ledger.public());
        let envs = choices
            .iter()
            .enumerate()
            .map(|(n, &(who, how))| {
                let w = (who % 3) as usize;
                let ack = pb::Ack {
                    component: format!("spine-{}", w + 1),
                    version: format!("v{n}"),
                    ..Default::default()
                };
                let mut env = spines[w].seal(&ack);
                match how % 8 {
                    0 => env.payload.push(0x7a),
                    1 => env.signature[5] ^= 1,
                    2 => {
                        env.signature.pop();
                    }
                    3 => env = signer(7).seal(&ack),
                    4 => env = ledger.seal(&ack),
                    5 => env.kind = "signal".into(),
                    // Signed by another spine than the one it names.
                    6 => env = spines[(w + 1) % 3].seal(&ack),
                    _ => {}
                }
                env
            })
            .collect();
        (envs, keys)
    }

    #[test]
    fn open_all_answers_each_envelope_as_open_does() {
        // Good ones only (one batch), then one bad among them, then each
        // sort of refusal.
        let good: Vec<(u8, u8)> = (0..40).map(|i| (i, 7)).collect();
        let mut one_bad = good.clone();
        one_bad[17].1 = 1;
        let every: Vec<(u8, u8)> = (0..16).map(|i| (i, i)).collect();
        for choices in [&good[..], &one_bad[..], &every[..], &good[..1], &[]] {
            let (envs, keys) = assorted(choices);
            let all = open_all::<pb::Ack>(&envs, &keys);
            let each: Vec<_> = envs.iter().map(|e| open::<pb::Ack>(e, &keys)).collect();
            assert_eq!(all, each);
        }
        let (envs, keys) = assorted(&one_bad);
        let all = open_all::<pb::Ack>(&envs, &keys);
        assert_eq!(all.iter().filter(|r| r.is_ok()).count(), 39);
        assert_eq!(
            all[17],
            Err(WireError::BadSignature(signer(3).id().to_string()))
        );
    }

    /// A signature whose `R` carries a point of order 8 ([`seal_with_torsion`]):
    /// the cofactorless check of [`open`] refuses it; [`open_all`]'s
    /// cofactored rule takes it, the same way alone and in any company.
    #[test]
    fn open_all_gives_a_crafted_signature_the_same_verdict_in_any_company() {
        let s = signer(1);
        let ack = pb::Ack {
            component: "spine-1".into(),
            version: "crafted".into(),
            ..Default::default()
        };
        let crafted = seal_with_torsion([1; 32], &ack);
        let (mut envs, keys) = assorted(&(0..30).map(|i| (i * 3, 7)).collect::<Vec<_>>());
        assert_eq!(
            open::<pb::Ack>(&crafted, &keys),
            Err(WireError::BadSignature(s.id().to_string()))
        );
        let alone = open_all::<pb::Ack>(std::slice::from_ref(&crafted), &keys);
        assert_eq!(alone[0].as_ref().map(|v| v.get()), Ok(&ack));
        for at in [0, 13, 30] {
            envs.insert(at, crafted.clone());
            let all = open_all::<pb::Ack>(&envs, &keys);
            assert!(all.iter().all(|r| r.is_ok()), "at {at}");
            envs.remove(at);
        }
        // With a bad one beside it, the batch fails and each is judged
        // alone: the crafted one still passes, the bad one does not.
        envs[4].signature[0] ^= 1;
        envs.insert(9, crafted);
        let all = open_all::<pb::Ack>(&envs, &keys);
        assert!(all[9].is_ok());
        assert!(all[4].is_err());
        assert_eq!(all.iter().filter(|r| r.is_ok()).count(), 30);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_or_verify(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let s = signer(4);
            let keys = ring(&s, "spine-1");
            prop_assert!(open_bytes::<pb::Ack>(&bytes, &keys).is_err());
        }

        #[test]
        fn open_all_is_open_for_each(choices in prop::collection::vec((any::<u8>(), any::<u8>()), 0..24)) {
            let (envs, keys) = assorted(&choices);
            let each: Vec<_> = envs.iter().map(|e| open::<pb::Ack>(e, &keys)).collect();
            prop_assert_eq!(open_all::<pb::Ack>(&envs, &keys), each);
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
