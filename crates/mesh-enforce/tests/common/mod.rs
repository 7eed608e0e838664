//! Certified policies for tests, made the way validators make them: a
//! block carrying a signed anomaly, a QC of validator votes over it, the
//! policy signed by a validator's envelope key.

#![allow(dead_code)]

use ben_mesh_consensus::{Block, Crypto, Ed25519, Hash, QuorumCert};
use ben_mesh_detect::wire::{AnomalyEvent, Endpoint};
use ben_mesh_enforce::model::{request_policy_id, Net, Spec};
use ben_mesh_enforce::verify::Verifier;
use ben_mesh_wire::{BlockPolicy, PolicyEvent, PolicyRequest};
use ben_wire::{Keyring, Role, Signer};
use ed25519_dalek::{SigningKey, VerifyingKey};
use std::sync::Arc;

/// Four validators, their envelope signers, an AI service.
pub struct World {
    pub secrets: Vec<[u8; 32]>,
    pub set: Vec<VerifyingKey>,
    pub envelope: Vec<Signer>,
    pub ai: Signer,
    pub chain: Hash,
    pub keyring: Arc<Keyring>,
}

/// How to spoil a policy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Spoil {
    None,
    /// Only two votes (f + 1 of four).
    TooFewVotes,
    /// Votes by keys outside the set.
    ForeignVotes,
    /// The QC of another block.
    OtherBlock,
    /// The QC from another chain.
    OtherChain,
    /// The target is not the anomaly's source.
    OtherTarget,
}

impl World {
    pub fn new() -> World {
        let secrets: Vec<[u8; 32]> = (0..4).map(|i| [70 + i as u8; 32]).collect();
        let set = secrets
            .iter()
            .map(|s| SigningKey::from_bytes(s).verifying_key())
            .collect();
        let envelope: Vec<Signer> = (0..4)
            .map(|i| Signer::from_secret([90 + i as u8; 32]))
            .collect();
        let mut keys = Keyring::new();
        for (i, s) in envelope.iter().enumerate() {
            keys.trust(&format!("validator-{}", i + 1), Role::Validator, s.public());
        }
        World {
            secrets,
            set,
            envelope,
            ai: Signer::from_secret([9; 32]),
            chain: Block::genesis("enforce-test").id,
            keyring: Arc::new(keys),
        }
    }

    pub fn verifier(&self) -> Verifier {
        Verifier {
            keyring: self.keyring.clone(),
            set: self.set.clone(),
            chain: self.chain,
            max_ttl_ms: 24 * 3_600_000,
        }
    }

    /// A signed anomaly from `source`.
    pub fn anomaly_tx(&self, source: &str, anomaly: &str) -> Vec<u8> {
        self.ai.seal_bytes(&AnomalyEvent {
            id: anomaly.into(),
            class: "portscan".into(),
            confidence: 0.95,
            source: Some(Endpoint {
                ip: source.into(),
                port: 0,
            }),
            ..Default::default()
        })
    }

    fn block(&self, chain: &Hash, height: u64, time: u64, source: &str, anomaly: &str) -> Block {
        self.block_of(chain, height, time, vec![self.anomaly_tx(source, anomaly)])
    }

    fn block_of(&self, chain: &Hash, height: u64, time: u64, payload: Vec<Vec<u8>>) -> Block {
        let g = Block::genesis("enforce-test");
        let mut b = Block {
            id: Hash::ZERO,
            round: height,
            height,
            parent: g.id,
            qc: g.genesis_qc(),
            author: 0,
            time,
            payload: payload.into(),
        };
        b.id = b.compute_id(chain);
        b
    }

    fn qc(&self, b: &Block, chain: &Hash, signers: &[[u8; 32]]) -> QuorumCert {
        let digest = b.vote_data().digest(chain);
        QuorumCert {
            data: b.vote_data(),
            votes: signers
                .iter()
                .enumerate()
                .map(|(i, s)| (i as u16, Ed25519::new(*s, self.set.clone()).sign(&digest)))
                .collect(),
        }
    }

    /// A policy blocking `target` until `expires_ms`, committed at
    /// `height` in a block of time `block_ms`, as validator 1 announces it.
    pub fn policy(
        &self,
        target: &str,
        height: u64,
        block_ms: u64,
        expires_ms: u64,
        spoil: Spoil,
    ) -> Vec<u8> {
        let anomaly = format!("an-{target}-{height}");
        let source = if spoil == Spoil::OtherTarget {
            "198.51.100.77"
        } else {
            target
        };
        let chain = if spoil == Spoil::OtherChain {
            Block::genesis("another").id
        } else {
            self.chain
        };
        let block = self.block(&chain, height, block_ms, source, &anomaly);
        let foreign: Vec<[u8; 32]> = (0..3).map(|i| [200 + i as u8; 32]).collect();
        let qc = match spoil {
            Spoil::TooFewVotes => self.qc(&block, &chain, &self.secrets[..2]),
            Spoil::ForeignVotes => self.qc(&block, &chain, &foreign),
            Spoil::OtherBlock => {
                let other = self.block(&chain, height, block_ms + 1, source, &anomaly);
                self.qc(&other, &chain, &self.secrets[..3])
            }
            _ => self.qc(&block, &chain, &self.secrets[..3]),
        };
        self.announce(
            &block,
            &qc,
            vec![BlockPolicy {
                id: format!("block-{target}"),
                action: "drop".into(),
                target: target.into(),
                expires_at_ms: expires_ms,
                anomalies: vec![anomaly],
                ..Default::default()
            }],
        )
    }

    /// `policies` of `block`, certified by `qc`, as validator 1 announces
    /// them.
    fn announce(&self, block: &Block, qc: &QuorumCert, policies: Vec<BlockPolicy>) -> Vec<u8> {
        self.envelope[0].seal_bytes(&PolicyEvent {
            validator: "validator-1".into(),
            height: block.height,
            block: ben_mesh_consensus::wire::encode_block(block),
            qc: ben_mesh_consensus::wire::encode_qc(qc),
            chain: self.chain.hex(),
            policies,
        })
    }
}

impl World {
    /// A request of the AI service's (defaults: rate-limit 10/s of every
    /// protocol from `target`, for `ttl_ms`).
    pub fn request(&self, id: &str, target: &str, anomaly: &str, ttl_ms: u64) -> PolicyRequest {
        PolicyRequest {
            service: "mesh-1".into(),
            id: id.into(),
            anomalies: vec![anomaly.into()],
            action: "rate-limit".into(),
            rate: 10,
            target: target.into(),
            ttl_ms,
            ..Default::default()
        }
    }

    /// The policy validators make of request `r` (its anomaly from
    /// `source` in the same block), certified at `height`, the block at
    /// `block_ms`; `edit` spoils the announced policy.
    pub fn requested(
        &self,
        r: &PolicyRequest,
        source: &str,
        height: u64,
        block_ms: u64,
        edit: impl FnOnce(&mut BlockPolicy),
    ) -> Vec<u8> {
        let payload = vec![
            self.anomaly_tx(source, &r.anomalies[0]),
            self.ai.seal_bytes(r),
        ];
        let block = self.block_of(&self.chain, height, block_ms, payload);
        let qc = self.qc(&block, &self.chain, &self.secrets[..3]);
        let spec = Spec::parse(&r.action, r.rate, &r.direction, &r.protocol, &r.ports).unwrap();
        let target = Net::parse(&r.target).unwrap();
        let mut scope = r.scope.clone();
        scope.sort();
        scope.dedup();
        let mut p = BlockPolicy {
            id: request_policy_id(&target, &spec, &scope),
            action: r.action.clone(),
            target: r.target.clone(),
            expires_at_ms: block_ms + r.ttl_ms,
            anomalies: r.anomalies.clone(),
            direction: r.direction.clone(),
            protocol: r.protocol.clone(),
            ports: r.ports.clone(),
            rate: r.rate,
            scope,
            request: r.id.clone(),
        };
        edit(&mut p);
        self.announce(&block, &qc, vec![p])
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
