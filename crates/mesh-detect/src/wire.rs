//! Protobuf messages for `ai.anomalies.v1` and `ai.evidence.v1`, and their
//! Ed25519 signatures.
//!
//! The messages are hand-written `prost` structs (no `protoc` needed); the
//! equivalent `.proto` is:
//!
//! ```text
//! message Endpoint { string ip = 1; uint32 port = 2; }
//! message EngineVote { string engine = 1; bool abstained = 2; string class = 3; double score = 4; double weight = 5; }
//! message Contribution { string kind = 1; string name = 2; double value = 3; double weight = 4; }
//! message AnomalyEvent {
//!   string id = 1; string class = 2; double confidence = 3;
//!   Endpoint source = 4; Endpoint target = 5; uint32 protocol = 6;
//!   int64 window_start_us = 7; int64 window_end_us = 8;
//!   int64 first_seen_us = 9; int64 last_seen_us = 10;
//!   uint64 flow_count = 11; uint32 distinct_targets = 12;
//!   repeated EngineVote votes = 13; repeated Contribution top_features = 14;
//!   repeated string evidence_flow_ids = 15; uint64 evidence_truncated = 16;
//!   string model_version = 17; uint32 rules_version = 18; double threshold = 19;
//! }
//! message EvidenceFlow { string id = 1; Endpoint source = 2; Endpoint target = 3; uint32 protocol = 4; int64 start_us = 5; double confidence = 6; string class = 7; }
//! message EvidenceEvent { string anomaly_id = 1; repeated EvidenceFlow flows = 2; uint64 truncated = 3; }
//! message SignedMessage { string subject = 1; string kind = 2; bytes payload = 3; bytes signature = 4; bytes public_key = 5; }
//! ```
//!
//! **Signing** (DESIGN §4 invariant 8): the signature covers
//! `"ben/v1/<kind>" || 0x00 || payload`, so a signature made for one kind
//! of message can never verify as another.

use crate::error::DetectError;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use prost::Message;

/// Subject anomalies are published on.
pub const ANOMALIES_SUBJECT: &str = "ai.anomalies.v1";
/// Subject evidence is published on.
pub const EVIDENCE_SUBJECT: &str = "ai.evidence.v1";
/// Signing domain kind of an anomaly.
pub const ANOMALY_KIND: &str = "anomaly";
/// Signing domain kind of evidence.
pub const EVIDENCE_KIND: &str = "evidence";

/// An address and port.
#[derive(Clone, PartialEq, Message)]
pub struct Endpoint {
    /// IP address, text form.
    #[prost(string, tag = "1")]
    pub ip: String,
    /// Port (0 when the protocol has none).
    #[prost(uint32, tag = "2")]
    pub port: u32,
}

/// One engine's vote.
#[derive(Clone, PartialEq, Message)]
pub struct EngineVote {
    /// `ml`, `rules` or `math`.
    #[prost(string, tag = "1")]
    pub engine: String,
    /// True when the engine had no opinion.
    #[prost(bool, tag = "2")]
    pub abstained: bool,
    /// The class it voted for.
    #[prost(string, tag = "3")]
    pub class: String,
    /// Its score for the anomaly's class, in [0, 1].
    #[prost(double, tag = "4")]
    pub score: f64,
    /// Its ensemble weight.
    #[prost(double, tag = "5")]
    pub weight: f64,
}

/// A top contributing feature: a rule hit, a z-score or a Saabas value.
#[derive(Clone, PartialEq, Message)]
pub struct Contribution {
    /// `rule`, `zscore`, `source_zscore` or `saabas`.
    #[prost(string, tag = "1")]
    pub kind: String,
    /// Rule, feature or metric name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// The observed value.
    #[prost(double, tag = "3")]
    pub value: f64,
    /// Its weight: rule score, z, or contribution to the class's raw score.
    #[prost(double, tag = "4")]
    pub weight: f64,
}

/// A published anomaly (`ai.anomalies.v1`).
#[derive(Clone, PartialEq, Message)]
pub struct AnomalyEvent {
    /// Deterministic id (see [`crate::Detector`]).
    #[prost(string, tag = "1")]
    pub id: String,
    /// Attack class.
    #[prost(string, tag = "2")]
    pub class: String,
    /// Ensemble confidence in [0, 1].
    #[prost(double, tag = "3")]
    pub confidence: f64,
    /// The source.
    #[prost(message, optional, tag = "4")]
    pub source: Option<Endpoint>,
    /// The most-hit target.
    #[prost(message, optional, tag = "5")]
    pub target: Option<Endpoint>,
    /// IP protocol of the most-hit target.
    #[prost(uint32, tag = "6")]
    pub protocol: u32,
    /// Window start (µs since the epoch).
    #[prost(int64, tag = "7")]
    pub window_start_us: i64,
    /// Window end.
    #[prost(int64, tag = "8")]
    pub window_end_us: i64,
    /// First flagged flow's start.
    #[prost(int64, tag = "9")]
    pub first_seen_us: i64,
    /// Last flagged flow's start.
    #[prost(int64, tag = "10")]
    pub last_seen_us: i64,
    /// Flagged flows aggregated here.
    #[prost(uint64, tag = "11")]
    pub flow_count: u64,
    /// Distinct (address, port, protocol) targets among them.
    #[prost(uint32, tag = "12")]
    pub distinct_targets: u32,
    /// The engines' votes (of the most confident flow).
    #[prost(message, repeated, tag = "13")]
    pub votes: Vec<EngineVote>,
    /// Top contributing features.
    #[prost(message, repeated, tag = "14")]
    pub top_features: Vec<Contribution>,
    /// Ids of the flows (first ones; the rest are in the evidence).
    #[prost(string, repeated, tag = "15")]
    pub evidence_flow_ids: Vec<String>,
    /// How many flow ids did not fit in `evidence_flow_ids`.
    #[prost(uint64, tag = "16")]
    pub evidence_truncated: u64,
    /// Model identity (file name and tree count).
    #[prost(string, tag = "17")]
    pub model_version: String,
    /// Rule file version.
    #[prost(uint32, tag = "18")]
    pub rules_version: u32,
    /// Publication threshold in force.
    #[prost(double, tag = "19")]
    pub threshold: f64,
}

/// One flow of an anomaly's evidence.
#[derive(Clone, PartialEq, Message)]
pub struct EvidenceFlow {
    /// Sensor flow id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Source endpoint.
    #[prost(message, optional, tag = "2")]
    pub source: Option<Endpoint>,
    /// Target endpoint.
    #[prost(message, optional, tag = "3")]
    pub target: Option<Endpoint>,
    /// IP protocol.
    #[prost(uint32, tag = "4")]
    pub protocol: u32,
    /// Flow start (µs).
    #[prost(int64, tag = "5")]
    pub start_us: i64,
    /// The flow's ensemble confidence.
    #[prost(double, tag = "6")]
    pub confidence: f64,
    /// The flow's class.
    #[prost(string, tag = "7")]
    pub class: String,
}

/// The flows behind an anomaly (`ai.evidence.v1`).
#[derive(Clone, PartialEq, Message)]
pub struct EvidenceEvent {
    /// The anomaly this is evidence for.
    #[prost(string, tag = "1")]
    pub anomaly_id: String,
    /// The flows (bounded).
    #[prost(message, repeated, tag = "2")]
    pub flows: Vec<EvidenceFlow>,
    /// Flows left out to respect the size bound.
    #[prost(uint64, tag = "3")]
    pub truncated: u64,
}

/// A payload with its Ed25519 signature.
#[derive(Clone, PartialEq, Message)]
pub struct SignedMessage {
    /// Bus subject.
    #[prost(string, tag = "1")]
    pub subject: String,
    /// Signing domain kind (`anomaly`, `evidence`).
    #[prost(string, tag = "2")]
    pub kind: String,
    /// The encoded message.
    #[prost(bytes = "vec", tag = "3")]
    pub payload: Vec<u8>,
    /// Ed25519 signature over `"ben/v1/" kind 0x00 payload`.
    #[prost(bytes = "vec", tag = "4")]
    pub signature: Vec<u8>,
    /// The signer's public key (32 bytes).
    #[prost(bytes = "vec", tag = "5")]
    pub public_key: Vec<u8>,
}

/// The exact bytes signed for a message of `kind`.
pub fn signing_bytes(kind: &str, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(8 + kind.len() + payload.len());
    m.extend_from_slice(b"ben/v1/");
    m.extend_from_slice(kind.as_bytes());
    m.push(0);
    m.extend_from_slice(payload);
    m
}

/// Signs CyberMesh messages with one Ed25519 key.
pub struct MessageSigner {
    key: SigningKey,
}

impl MessageSigner {
    /// A signer from a 32-byte secret seed (the caller supplies the
    /// randomness, DESIGN §4 invariant 12).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// Signs an encoded payload of `kind` for `subject`.
    pub fn sign(&self, subject: &str, kind: &str, payload: Vec<u8>) -> SignedMessage {
        let sig = self.key.sign(&signing_bytes(kind, &payload));
        SignedMessage {
            subject: subject.to_owned(),
            kind: kind.to_owned(),
            payload,
            signature: sig.to_bytes().to_vec(),
            public_key: self.public_key().to_vec(),
        }
    }

    /// Encodes and signs an anomaly for `ai.anomalies.v1`.
    pub fn sign_anomaly(&self, a: &AnomalyEvent) -> SignedMessage {
        self.sign(ANOMALIES_SUBJECT, ANOMALY_KIND, a.encode_to_vec())
    }

    /// Encodes and signs evidence for `ai.evidence.v1`.
    pub fn sign_evidence(&self, e: &EvidenceEvent) -> SignedMessage {
        self.sign(EVIDENCE_SUBJECT, EVIDENCE_KIND, e.encode_to_vec())
    }
}

/// Checks a signed message against the key it names and the kind expected,
/// returning its payload.
pub fn verify<'a>(msg: &'a SignedMessage, expected_kind: &str) -> Result<&'a [u8], DetectError> {
    let fail = |m: &str| DetectError::Signature {
        kind: msg.kind.clone(),
        message: m.to_owned(),
    };
    if msg.kind != expected_kind {
        return Err(fail(&format!("expected kind `{expected_kind}`")));
    }
    let pk: [u8; 32] = msg
        .public_key
        .as_slice()
        .try_into()
        .map_err(|_| fail("public key is not 32 bytes"))?;
    let key = VerifyingKey::from_bytes(&pk).map_err(|_| fail("public key is not a valid point"))?;
    let sig: [u8; 64] = msg
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| fail("signature is not 64 bytes"))?;
    key.verify(
        &signing_bytes(&msg.kind, &msg.payload),
        &Signature::from_bytes(&sig),
    )
    .map_err(|_| fail("bad signature"))?;
    Ok(&msg.payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anomaly() -> AnomalyEvent {
        AnomalyEvent {
            id: "a1".into(),
            class: "portscan".into(),
            confidence: 0.9,
            source: Some(Endpoint {
                ip: "10.0.0.1".into(),
                port: 0,
            }),
            flow_count: 3,
            ..Default::default()
        }
    }

    #[test]
    fn sign_verify_round_trip() {
        let s = MessageSigner::from_seed([7; 32]);
        let m = s.sign_anomaly(&anomaly());
        let bytes = m.encode_to_vec();
        let back = SignedMessage::decode(bytes.as_slice()).unwrap();
        let payload = verify(&back, ANOMALY_KIND).unwrap();
        assert_eq!(AnomalyEvent::decode(payload).unwrap(), anomaly());
        assert_eq!(back.subject, ANOMALIES_SUBJECT);
    }

    #[test]
    fn tampering_and_cross_domain_use_fail() {
        let s = MessageSigner::from_seed([7; 32]);
        let mut m = s.sign_anomaly(&anomaly());
        m.payload[3] ^= 1;
        assert!(verify(&m, ANOMALY_KIND).is_err());
        // an anomaly signature must not verify as evidence
        let mut m = s.sign_anomaly(&anomaly());
        m.kind = EVIDENCE_KIND.into();
        assert!(verify(&m, EVIDENCE_KIND).is_err());
        let m = s.sign_anomaly(&anomaly());
        assert!(verify(&m, EVIDENCE_KIND).is_err());
        let mut m = s.sign_anomaly(&anomaly());
        m.public_key = MessageSigner::from_seed([8; 32]).public_key().to_vec();
        assert!(verify(&m, ANOMALY_KIND).is_err());
        m.public_key.truncate(5);
        assert!(verify(&m, ANOMALY_KIND).is_err());
    }

    #[test]
    fn domain_separation_bytes() {
        assert_eq!(
            signing_bytes("anomaly", b"xy"),
            b"ben/v1/anomaly\0xy".to_vec()
        );
    }
}
