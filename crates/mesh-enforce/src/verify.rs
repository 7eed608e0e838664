//! Before anything: a policy is enforced only if its envelope verifies
//! under a validator's key, the QC it carries holds 2f+1 valid votes of
//! the known validator set for the block it carries, that block is the
//! one the policy names, and the block itself says it: an anomaly's
//! policy (drop everything from one host) needs an anomaly of the block
//! from that host; a request's policy needs the request in the block,
//! saying the same target, shape, scope and anomalies. A validator key
//! alone cannot make one up; a QC alone cannot be bent to another target
//! or shape (pure).

use crate::model::{check_scope, refuse_target, request_policy_id, Net, Policy, Spec};
use ben_mesh_consensus::{verify_certified, wire, Hash};
use ben_mesh_detect::wire::AnomalyEvent;
use ben_mesh_wire::{BlockPolicy, PolicyEvent, PolicyRequest};
use ben_wire::{pb, Keyring};
use ed25519_dalek::VerifyingKey;
use prost::Message as _;

/// The largest policy message accepted (it carries a whole block).
pub const MAX_POLICY_BYTES: usize = 4 << 20;

/// What a verifier knows.
#[derive(Clone)]
pub struct Verifier {
    /// The validators' envelope keys (role `Validator`).
    pub keyring: std::sync::Arc<Keyring>,
    /// The validator set's consensus keys, by index.
    pub set: Vec<VerifyingKey>,
    /// The chain (its genesis id).
    pub chain: Hash,
    /// The longest TTL a policy may carry past its block's time.
    pub max_ttl_ms: u64,
}

impl Verifier {
    /// The policies in `bytes` (one block's), or why the message is
    /// refused (for the dead letter). One bad policy refuses them all: a
    /// validator announced it, and its block says otherwise. Whether each
    /// has expired is the caller's to judge ([`expired`]): a block's
    /// policies end at different times.
    pub fn verify(&self, bytes: &[u8]) -> Result<Vec<Policy>, String> {
        if bytes.len() > MAX_POLICY_BYTES {
            return Err(format!(
                "policy message of {} bytes, over the {MAX_POLICY_BYTES}-byte limit",
                bytes.len()
            ));
        }
        let ev = ben_wire::open_bytes::<PolicyEvent>(bytes, &self.keyring)
            .map_err(|e| format!("policy envelope: {e}"))?
            .into_inner();
        let chain = parse_hash(&ev.chain).ok_or("policy names no chain id (64 hex digits)")?;
        if chain != self.chain {
            return Err(format!(
                "policy from chain {}, not this agent's {}",
                chain.short(),
                self.chain.short()
            ));
        }
        let block = wire::decode_block(&ev.block).map_err(|e| format!("policy block: {e}"))?;
        let qc = wire::decode_qc(&ev.qc).map_err(|e| format!("policy QC: {e}"))?;
        verify_certified(&block, &qc, &self.chain, &self.set)
            .map_err(|e| format!("policy QC does not certify its block: {e}"))?;
        if block.height != ev.height {
            return Err(format!(
                "policy names height {} but its block is at {}",
                ev.height, block.height
            ));
        }
        if ev.policies.is_empty() {
            return Err("policy message holds no policy".into());
        }
        // The block's anomalies, by id, with their source, and its
        // requests.
        let mut sources = std::collections::HashMap::new();
        let mut requests = std::collections::HashMap::new();
        for tx in &block.payload {
            match in_block(tx) {
                Some(InBlock::Anomaly(a)) => {
                    let src = a.source.as_ref().and_then(|s| s.ip.parse().ok());
                    sources.insert(a.id, src);
                }
                Some(InBlock::Request(r)) => {
                    requests.insert(r.id.clone(), r);
                }
                None => {}
            }
        }
        ev.policies
            .iter()
            .map(|p| self.one(p, &block, &sources, &requests))
            .collect()
    }

    fn one(
        &self,
        p: &BlockPolicy,
        block: &ben_mesh_consensus::Block,
        sources: &std::collections::HashMap<String, Option<std::net::IpAddr>>,
        requests: &std::collections::HashMap<String, PolicyRequest>,
    ) -> Result<Policy, String> {
        let target = Net::parse(&p.target).map_err(|e| format!("policy target: {e}"))?;
        if let Some(why) = refuse_target(&target) {
            return Err(why);
        }
        let spec = Spec::parse(&p.action, p.rate, &p.direction, &p.protocol, &p.ports)
            .map_err(|e| format!("policy {}: {e}", p.id))?;
        for h in &p.scope {
            check_scope(h).map_err(|e| format!("policy {}: {e}", p.id))?;
        }
        if p.anomalies.is_empty() {
            return Err(format!("policy {} names no anomaly", p.id));
        }
        if !p.request.is_empty() {
            return self.requested(p, spec, target, block, requests);
        }
        if spec != Spec::BLOCK || !p.scope.is_empty() || !target.is_host() {
            return Err(format!(
                "policy {} ({} {target}) names no request: an anomaly's policy only drops everything from one host",
                p.id,
                spec.describe()
            ));
        }
        // The block must carry an anomaly behind it from the target; none
        // of the block's anomalies it names may come from elsewhere.
        let mut behind = 0;
        for id in &p.anomalies {
            let Some(src) = sources.get(id) else { continue };
            let src =
                src.ok_or_else(|| format!("anomaly {id} in the block has no source address"))?;
            if !target.contains(src) {
                return Err(format!(
                    "policy targets {target} but anomaly {id} in its block came from {src}"
                ));
            }
            behind += 1;
        }
        if behind == 0 {
            return Err(format!(
                "none of policy {}'s anomalies is in block {} at height {}",
                p.id,
                block.id.short(),
                block.height
            ));
        }
        self.policy(p, spec, target, block)
    }

    /// A request's policy: the request is in the block and says the same.
    fn requested(
        &self,
        p: &BlockPolicy,
        spec: Spec,
        target: Net,
        block: &ben_mesh_consensus::Block,
        requests: &std::collections::HashMap<String, PolicyRequest>,
    ) -> Result<Policy, String> {
        let r = requests.get(&p.request).ok_or_else(|| {
            format!(
                "policy {} names request {}, which is not in block {} at height {}",
                p.id,
                p.request,
                block.id.short(),
                block.height
            )
        })?;
        let differs = |what: &str| {
            Err(format!(
                "policy {} says another {what} than request {} in its block",
                p.id, r.id
            ))
        };
        if Net::parse(&r.target).ok() != Some(target) {
            return differs("target");
        }
        if Spec::parse(&r.action, r.rate, &r.direction, &r.protocol, &r.ports).ok() != Some(spec) {
            return differs("action, direction, protocol or ports");
        }
        let mut scope = r.scope.clone();
        scope.sort();
        scope.dedup();
        if scope != p.scope {
            return differs("scope");
        }
        if r.anomalies.iter().any(|a| !p.anomalies.contains(a)) {
            return differs("set of anomalies");
        }
        if p.id != request_policy_id(&target, &spec, &scope) {
            return differs("id");
        }
        self.policy(p, spec, target, block)
    }

    /// The policy, its TTL checked.
    fn policy(
        &self,
        p: &BlockPolicy,
        spec: Spec,
        target: Net,
        block: &ben_mesh_consensus::Block,
    ) -> Result<Policy, String> {
        if p.expires_at_ms.saturating_sub(block.time) > self.max_ttl_ms {
            return Err(format!(
                "policy {} lasts {} ms past its block, over the {} ms maximum",
                p.id,
                p.expires_at_ms.saturating_sub(block.time),
                self.max_ttl_ms
            ));
        }
        Ok(Policy {
            id: p.id.clone(),
            spec,
            target,
            expires_at_ms: p.expires_at_ms,
            anomalies: p.anomalies.clone(),
            height: block.height,
            block_time_ms: block.time,
            scope: p.scope.clone(),
        })
    }
}

/// Why `p` is no longer in force at `now_ms`, if it is not.
pub fn expired(p: &Policy, now_ms: u64) -> Option<String> {
    (p.expires_at_ms <= now_ms).then(|| {
        format!(
            "policy {} expired at {} ms, now is {now_ms} ms",
            p.id, p.expires_at_ms
        )
    })
}

enum InBlock {
    Anomaly(AnomalyEvent),
    Request(PolicyRequest),
}

/// The anomaly or request a block transaction carries (its envelope is
/// not checked again: the validators admitted it, and the QC covers the
/// bytes).
fn in_block(tx: &[u8]) -> Option<InBlock> {
    use ben_wire::Kind;
    let env = pb::SignedEnvelope::decode(tx).ok()?;
    if env.kind == PolicyRequest::KIND {
        PolicyRequest::decode(&env.payload[..])
            .ok()
            .map(InBlock::Request)
    } else {
        AnomalyEvent::decode(&env.payload[..])
            .ok()
            .map(InBlock::Anomaly)
    }
}

/// 64 hex digits → a hash.
pub fn parse_hash(s: &str) -> Option<Hash> {
    let v = hex::decode(s).ok()?;
    Some(Hash(v.try_into().ok()?))
}
