//! The deterministic state machine every validator runs over the committed
//! chain: the same blocks in, the same state and state root out, on every
//! validator.
//!
//! Per block (its time is the only clock read):
//! * **admission** of each transaction: a `SignedEnvelope` of an
//!   `anomaly` signed by an AI-service key of the configured keyring
//!   (role and signature checked by `ben_wire::open`), a sane id,
//!   confidence and source address, not a duplicate id, its window ended
//!   no longer than `max_age` before the block and not in its future;
//!   refused transactions are listed with the reason;
//! * **anomaly lifecycle**: an admitted anomaly is COMMITTED at the block's
//!   height; records older than `retention` (30 days) are EXPIRED and go;
//! * **policy generation**: an anomaly at or above `policy_min_confidence`
//!   blocks its source for a TTL scaled by its confidence and class
//!   (one policy per source: a later anomaly extends it and adds its id);
//!   policies past their expiry go;
//! * **validator reputation**: the block's author proposed one more block
//!   that committed, each signer of the QC it carries voted one more;
//! * the **state root**: a BLAKE3 Merkle root over the sorted records.

use ben_mesh_consensus::{Block, Hash, Height, Millis, NodeId};
use ben_mesh_detect::wire::AnomalyEvent;
use ben_wire::{open_bytes, Keyring, Verified};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Settings every validator must share (they shape the state).
#[derive(Clone, Debug)]
pub struct Config {
    /// An anomaly whose window ended longer than this before the block is
    /// stale.
    pub max_age: Millis,
    /// How far past the block's time a window may end (sensor clocks).
    pub max_ahead: Millis,
    /// Anomalies at or above this confidence generate a block policy.
    pub policy_min_confidence: f64,
    /// TTL of a policy from an anomaly of confidence 1.0 and class weight
    /// 1.0; it scales linearly down to half at confidence 0.
    pub policy_ttl: Millis,
    /// Anomaly records are kept this long (the seed's 30 days).
    pub retention: Millis,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_age: 5 * 60_000,
            max_ahead: 60_000,
            policy_min_confidence: 0.7,
            policy_ttl: 60 * 60_000,
            retention: 30 * 24 * 3_600_000,
        }
    }
}

/// How much longer a class's policies last than the base TTL.
fn class_weight(class: &str) -> f64 {
    match class {
        "ddos" | "dos" | "flood" => 2.0,
        "bruteforce" | "brute_force" => 1.5,
        "portscan" | "scan" => 1.0,
        _ => 1.0,
    }
}

/// A committed anomaly.
#[derive(Clone, Debug, PartialEq)]
pub struct AnomalyRecord {
    /// Its class.
    pub class: String,
    /// Ensemble confidence.
    pub confidence: f64,
    /// Source address.
    pub source: IpAddr,
    /// The AI service that signed it.
    pub signer: String,
    /// Height of the block that committed it.
    pub height: Height,
    /// That block's time.
    pub committed_at: Millis,
}

/// A block policy the validators agreed on.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Stable id: derived from the target.
    pub id: String,
    /// The address to drop (a single host).
    pub target: IpAddr,
    /// Drop until this block time.
    pub expires_at: Millis,
    /// Anomalies behind it.
    pub anomalies: Vec<String>,
    /// Height that created or last extended it.
    pub height: Height,
}

/// A validator's record in the chain.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reputation {
    /// Committed blocks it proposed.
    pub proposed: u64,
    /// Votes of its in committed blocks' QCs.
    pub voted: u64,
}

/// What one block did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Applied {
    /// Anomalies admitted (committed), by id.
    pub admitted: Vec<String>,
    /// The same: each one's transaction index in the block, class and
    /// confidence.
    pub detail: Vec<(usize, String, f64)>,
    /// Transactions refused: index in the block and the reason.
    pub refused: Vec<(usize, String)>,
    /// Policies created or extended.
    pub policies: Vec<Policy>,
    /// Policy ids that expired.
    pub expired: Vec<String>,
    /// The state root after the block.
    pub root: Hash,
}

/// The state.
pub struct StateMachine {
    cfg: Config,
    keyring: Arc<Keyring>,
    height: Height,
    anomalies: BTreeMap<String, AnomalyRecord>,
    policies: BTreeMap<String, Policy>,
    validators: BTreeMap<NodeId, Reputation>,
}

impl StateMachine {
    /// An empty state; `keyring` holds the AI services' keys.
    pub fn new(cfg: Config, keyring: Arc<Keyring>) -> StateMachine {
        StateMachine {
            cfg,
            keyring,
            height: 0,
            anomalies: BTreeMap::new(),
            policies: BTreeMap::new(),
            validators: BTreeMap::new(),
        }
    }

    /// Height of the last block applied.
    pub fn height(&self) -> Height {
        self.height
    }

    /// A committed anomaly.
    pub fn anomaly(&self, id: &str) -> Option<&AnomalyRecord> {
        self.anomalies.get(id)
    }

    /// Policies in force.
    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.policies.values()
    }

    /// Validators' reputation.
    pub fn reputation(&self) -> &BTreeMap<NodeId, Reputation> {
        &self.validators
    }

    /// Applies the next committed block.
    pub fn apply(&mut self, block: &Block) -> Applied {
        self.apply_with(block, &mut |_| None)
    }

    /// [`StateMachine::apply`], with the envelopes this validator already
    /// opened (its mempool verified them): `verified(tx)` returns what
    /// [`open_bytes`] returned for those exact bytes, so the signature is
    /// not checked twice. The answer is the same either way — the keyring
    /// is fixed for a run — so state roots agree whatever each validator
    /// had cached.
    pub fn apply_with(
        &mut self,
        block: &Block,
        verified: &mut dyn FnMut(&[u8]) -> Option<Verified<AnomalyEvent>>,
    ) -> Applied {
        let now = block.time;
        let mut out = Applied::default();
        for (i, tx) in block.payload.iter().enumerate() {
            match self.admit(tx, now, verified(tx)) {
                Ok((id, rec)) => {
                    if rec.confidence >= self.cfg.policy_min_confidence {
                        out.policies
                            .push(self.policy_for(&id, &rec, block.height, now));
                    }
                    out.detail.push((i, rec.class.clone(), rec.confidence));
                    self.anomalies.insert(
                        id.clone(),
                        AnomalyRecord {
                            height: block.height,
                            committed_at: now,
                            ..rec
                        },
                    );
                    out.admitted.push(id);
                }
                Err(reason) => out.refused.push((i, reason)),
            }
        }
        // Expiry, by the block's time.
        let expired: Vec<String> = self
            .policies
            .iter()
            .filter(|(_, p)| p.expires_at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.policies.remove(id);
        }
        out.expired = expired;
        let keep_after = now.saturating_sub(self.cfg.retention);
        self.anomalies.retain(|_, a| a.committed_at > keep_after);
        // Reputation: who proposed it, who certified its parent.
        self.validators.entry(block.author).or_default().proposed += 1;
        for (a, _) in &block.qc.votes {
            self.validators.entry(*a).or_default().voted += 1;
        }
        self.height = block.height;
        out.root = self.root();
        out
    }

    fn admit(
        &self,
        tx: &[u8],
        now: Millis,
        opened: Option<Verified<AnomalyEvent>>,
    ) -> Result<(String, AnomalyRecord), String> {
        let v = match opened {
            Some(v) => v,
            None => open_bytes::<AnomalyEvent>(tx, &self.keyring).map_err(|e| e.to_string())?,
        };
        let signer = v.signer().to_string();
        let a = v.into_inner();
        if a.id.is_empty() || a.id.len() > 128 {
            return Err(format!(
                "anomaly id of {} bytes (1 to 128 expected)",
                a.id.len()
            ));
        }
        if !(0.0..=1.0).contains(&a.confidence) {
            return Err(format!(
                "anomaly {}: confidence {} is outside [0, 1]",
                a.id, a.confidence
            ));
        }
        let source: IpAddr = a
            .source
            .as_ref()
            .and_then(|s| s.ip.parse().ok())
            .ok_or_else(|| format!("anomaly {}: no valid source address", a.id))?;
        if self.anomalies.contains_key(&a.id) {
            return Err(format!(
                "anomaly {}: duplicate of a committed anomaly",
                a.id
            ));
        }
        let ended = (a.window_end_us.max(0) / 1_000) as Millis;
        if ended.saturating_add(self.cfg.max_age) < now {
            return Err(format!(
                "anomaly {}: stale (its window ended {} ms before the block)",
                a.id,
                now - ended
            ));
        }
        if ended > now.saturating_add(self.cfg.max_ahead) {
            return Err(format!(
                "anomaly {}: its window ends {} ms after the block",
                a.id,
                ended - now
            ));
        }
        Ok((
            a.id,
            AnomalyRecord {
                class: a.class,
                confidence: a.confidence,
                source,
                signer,
                height: 0,
                committed_at: 0,
            },
        ))
    }

    fn policy_for(
        &mut self,
        anomaly: &str,
        a: &AnomalyRecord,
        height: Height,
        now: Millis,
    ) -> Policy {
        let ttl = self.cfg.policy_ttl as f64 * (0.5 + 0.5 * a.confidence) * class_weight(&a.class);
        let expires_at = now.saturating_add(ttl as Millis);
        let id = format!("block-{}", a.source);
        let p = self.policies.entry(id.clone()).or_insert_with(|| Policy {
            id,
            target: a.source,
            expires_at,
            anomalies: vec![],
            height,
        });
        p.expires_at = p.expires_at.max(expires_at);
        p.height = height;
        if !p.anomalies.iter().any(|x| x == anomaly) {
            p.anomalies.push(anomaly.to_string());
        }
        p.clone()
    }

    /// BLAKE3 Merkle root over every record, sorted by key (leaves are
    /// domain-separated by table; an odd node is carried up unhashed).
    pub fn root(&self) -> Hash {
        let mut leaves: Vec<[u8; 32]> = Vec::new();
        let leaf = |table: &str, key: &str, value: String| {
            let mut h = blake3::Hasher::new();
            h.update(b"ben/v1/validator-state/");
            h.update(table.as_bytes());
            h.update(&[0]);
            h.update(&(key.len() as u64).to_le_bytes());
            h.update(key.as_bytes());
            h.update(value.as_bytes());
            *h.finalize().as_bytes()
        };
        for (id, a) in &self.anomalies {
            let v = format!(
                "{}|{}|{}|{}|{}|{}",
                a.class,
                a.confidence.to_bits(),
                a.source,
                a.signer,
                a.height,
                a.committed_at
            );
            leaves.push(leaf("anomaly", id, v));
        }
        for (id, p) in &self.policies {
            let v = format!(
                "{}|{}|{}|{}",
                p.target,
                p.expires_at,
                p.height,
                p.anomalies.join(",")
            );
            leaves.push(leaf("policy", id, v));
        }
        for (n, r) in &self.validators {
            leaves.push(leaf(
                "validator",
                &n.to_string(),
                format!("{}|{}", r.proposed, r.voted),
            ));
        }
        leaves.push(leaf("height", "", self.height.to_string()));
        while leaves.len() > 1 {
            leaves = leaves
                .chunks(2)
                .map(|pair| match pair {
                    [a, b] => {
                        let mut h = blake3::Hasher::new();
                        h.update(b"ben/v1/validator-state/node\0");
                        h.update(a);
                        h.update(b);
                        *h.finalize().as_bytes()
                    }
                    [a] => *a,
                    _ => unreachable!("chunks(2) yields one or two"),
                })
                .collect();
        }
        Hash(leaves[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ben_mesh_detect::wire::Endpoint;
    use ben_wire::{Role, Signer};

    fn keys() -> (Signer, Arc<Keyring>) {
        let s = Signer::from_secret([5; 32]);
        let mut k = Keyring::new();
        k.trust("mesh-1", Role::AiService, s.public());
        let spine = Signer::from_secret([6; 32]);
        k.trust("spine-1", Role::Spine, spine.public());
        (s, Arc::new(k))
    }

    fn anomaly(id: &str, conf: f64, src: &str, end_ms: u64) -> AnomalyEvent {
        AnomalyEvent {
            id: id.into(),
            class: "portscan".into(),
            confidence: conf,
            source: Some(Endpoint {
                ip: src.into(),
                port: 0,
            }),
            window_end_us: end_ms as i64 * 1_000,
            ..Default::default()
        }
    }

    fn block(height: Height, time: Millis, txs: Vec<Vec<u8>>) -> Block {
        let mut b = Block::genesis("t");
        b.height = height;
        b.time = time;
        b.author = 1;
        b.payload = txs;
        b
    }

    #[test]
    fn admits_signed_fresh_anomalies_and_blocks_their_sources() {
        let (ai, k) = keys();
        let mut sm = StateMachine::new(Config::default(), k.clone());
        let t: u64 = 1_000_000;
        let good = ai.seal_bytes(&anomaly("a1", 0.9, "10.0.0.9", t - 1_000));
        let low = ai.seal_bytes(&anomaly("a2", 0.5, "10.0.0.8", t));
        let stale = ai.seal_bytes(&anomaly("a3", 0.9, "10.0.0.7", t - 10 * 60_000));
        let spine = Signer::from_secret([6; 32]).seal_bytes(&anomaly("a4", 0.9, "10.0.0.6", t));
        let bad_ip = ai.seal_bytes(&anomaly("a5", 0.9, "not-an-ip", t));
        let out = sm.apply(&block(
            1,
            t,
            vec![
                good.clone(),
                low,
                stale,
                spine,
                bad_ip,
                good.clone(),
                b"junk".to_vec(),
            ],
        ));
        assert_eq!(out.admitted, vec!["a1", "a2"]);
        let reasons: Vec<&str> = out.refused.iter().map(|r| r.1.as_str()).collect();
        assert_eq!(reasons.len(), 5, "{reasons:?}");
        assert!(reasons[0].contains("stale"), "{reasons:?}");
        assert!(
            reasons[1].contains("spine"),
            "a spine may not sign anomalies: {reasons:?}"
        );
        assert!(reasons[2].contains("source address"), "{reasons:?}");
        assert!(reasons[3].contains("duplicate"), "{reasons:?}");
        // Only the confident one makes a policy: its source for ~57 min.
        assert_eq!(out.policies.len(), 1);
        let p = &out.policies[0];
        assert_eq!(p.target.to_string(), "10.0.0.9");
        assert_eq!(p.expires_at, t + (3_600_000.0 * 0.95) as u64);
        assert_eq!(sm.anomaly("a1").map(|a| a.height), Some(1));
        assert_eq!(sm.reputation()[&1].proposed, 1);
        // Expiry by block time.
        let later = sm.apply(&block(2, p.expires_at, vec![]));
        assert_eq!(later.expired, vec![p.id.clone()]);
        assert_eq!(sm.policies().count(), 0);
    }

    #[test]
    fn the_same_blocks_give_the_same_root_and_any_change_another() {
        let (ai, k) = keys();
        let t: u64 = 5_000_000;
        let txs = |n: usize| -> Vec<Vec<u8>> {
            (0..n)
                .map(|i| ai.seal_bytes(&anomaly(&format!("x{i}"), 0.8, &format!("10.1.0.{i}"), t)))
                .collect()
        };
        let run = |blocks: &[Block]| {
            let mut sm = StateMachine::new(Config::default(), k.clone());
            blocks.iter().map(|b| sm.apply(b).root).last()
        };
        let a = [block(1, t, txs(3)), block(2, t + 10, txs(5))];
        assert_eq!(run(&a), run(&a));
        let b = [block(1, t, txs(3)), block(2, t + 11, txs(5))];
        assert_ne!(run(&a), run(&b), "the block time shapes policy expiry");
        let c = [block(1, t, txs(2)), block(2, t + 10, txs(5))];
        assert_ne!(run(&a), run(&c));
        // Envelopes already opened by the mempool (some of them): the same
        // outcome as opening them all again.
        let mut cached = StateMachine::new(Config::default(), k.clone());
        let mut fresh = StateMachine::new(Config::default(), k.clone());
        for b in &a {
            let mut half = 0;
            let with = cached.apply_with(b, &mut |tx| {
                half += 1;
                (half % 2 == 0).then(|| open_bytes::<AnomalyEvent>(tx, &k).unwrap())
            });
            assert_eq!(with, fresh.apply(b));
        }
    }
}
