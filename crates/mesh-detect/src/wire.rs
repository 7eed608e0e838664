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
//! ```
//!
//! **Signing** (DESIGN §4 invariant 8) uses Ben's one envelope,
//! `ben_wire::pb::SignedEnvelope`: both messages implement [`ben_wire::Kind`]
//! (`anomaly`, `evidence`), so `Signer::seal` signs
//! `"ben/v1/anomaly" || 0x00 || payload` and a validator gets a
//! `Verified<AnomalyEvent>` only through `ben_wire::open`. A signature made
//! for one kind never verifies as another.
//!
//! ```
//! use ben_mesh_detect::wire::AnomalyEvent;
//! use ben_wire::{open, Keyring, Signer};
//!
//! let signer = Signer::from_secret([7; 32]);
//! let env = signer.seal(&AnomalyEvent { class: "portscan".into(), ..Default::default() });
//! let mut keys = Keyring::new();
//! keys.trust("mesh-1", ben_wire::Role::AiService, signer.public());
//! assert_eq!(open::<AnomalyEvent>(&env, &keys).unwrap().get().class, "portscan");
//! ```

use prost::Message;

/// Subject anomalies are published on.
pub const ANOMALIES_SUBJECT: &str = "ai.anomalies.v1";
/// Subject evidence is published on.
pub const EVIDENCE_SUBJECT: &str = "ai.evidence.v1";
impl ben_wire::Kind for AnomalyEvent {
    const KIND: &'static str = "anomaly";
}

impl ben_wire::Kind for EvidenceEvent {
    const KIND: &'static str = "evidence";
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use ben_wire::{open, open_bytes, Keyring, Signer};

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
    fn sealed_anomalies_open_only_as_anomalies() {
        let s = Signer::from_secret([7; 32]);
        let mut keys = Keyring::new();
        keys.trust("mesh-1", ben_wire::Role::AiService, s.public());
        let bytes = s.seal_bytes(&anomaly());
        assert_eq!(
            open_bytes::<AnomalyEvent>(&bytes, &keys).unwrap().get(),
            &anomaly()
        );
        // an anomaly's signature never opens as evidence
        assert!(open_bytes::<EvidenceEvent>(&bytes, &keys).is_err());
        let mut env = s.seal(&anomaly());
        env.kind = "evidence".into();
        assert!(open::<EvidenceEvent>(&env, &keys).is_err());
        // tampering and unknown signers fail
        let mut env = s.seal(&anomaly());
        env.payload[3] ^= 1;
        assert!(open::<AnomalyEvent>(&env, &keys).is_err());
        let other = Signer::from_secret([8; 32]).seal(&anomaly());
        assert!(open::<AnomalyEvent>(&other, &keys).is_err());
        // only the AI service's role signs anomalies and evidence
        // (invariant 8): a key of every other role is refused
        for (i, role) in ben_wire::Role::ALL.into_iter().enumerate() {
            let k = Signer::from_secret([20 + i as u8; 32]);
            keys.trust(&format!("{}-7", role.name()), role, k.public());
            let a = open::<AnomalyEvent>(&k.seal(&anomaly()), &keys);
            let e = open::<EvidenceEvent>(&k.seal(&EvidenceEvent::default()), &keys);
            if role == ben_wire::Role::AiService {
                assert!(a.is_ok() && e.is_ok(), "{role}");
            } else {
                for r in [a.err(), e.err()] {
                    assert!(
                        matches!(r, Some(ben_wire::WireError::RoleMayNotSign { .. })),
                        "{role}: {r:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn evidence_round_trips() {
        let s = Signer::from_secret([9; 32]);
        let mut keys = Keyring::new();
        keys.trust("mesh-1", ben_wire::Role::AiService, s.public());
        let e = EvidenceEvent {
            anomaly_id: "a1".into(),
            flows: vec![EvidenceFlow {
                id: "f1".into(),
                ..Default::default()
            }],
            truncated: 2,
        };
        assert_eq!(
            open::<EvidenceEvent>(&s.seal(&e), &keys)
                .unwrap()
                .into_inner(),
            e
        );
        assert_eq!(e.encoded_len(), e.encode_to_vec().len());
    }
}
