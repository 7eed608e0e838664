//! The deterministic state machine every validator runs over the committed
//! chain: the same blocks in, the same state and state root out, on every
//! validator.
//!
//! Per block (its time is the only clock read):
//! * **admission** of each transaction: a `SignedEnvelope` of an
//!   `anomaly` signed by an AI-service key of the configured keyring
//!   (role and signature checked by `ben_wire::open_all`, whose verdict on
//!   an envelope does not depend on what is checked with it), a sane id,
//!   confidence and source address, not a duplicate id, its window ended
//!   no longer than `max_age` before the block and not in its future;
//!   refused transactions are listed with the reason;
//! * **anomaly lifecycle**: an admitted anomaly is COMMITTED at the block's
//!   height; records older than `retention` (30 days) are EXPIRED and go;
//! * **policy generation**: an anomaly at or above `policy_min_confidence`
//!   blocks its source for a TTL scaled by its confidence and class
//!   (one policy per source: a later anomaly extends it and adds its id);
//!   policies past their expiry go;
//! * **policy requests** (`ai.policy.v1`): a `PolicyRequest` signed by an
//!   AI-service key asks for another shape of policy — a network, a port
//!   and protocol, a rate limit, an egress block, some hosts only. It is
//!   admitted when it is fresh and not a replay, every anomaly it names is
//!   committed (earlier, or earlier in the same block; no longer ago than
//!   a request's longest TTL) and came from inside its target, a network target is no wider than the chain's
//!   limit and rests on anomalies from at least two of its addresses, and
//!   its TTL is within the chain's maximum. Its policy's id comes from its
//!   target, shape and scope, so asking again extends it;
//! * **validator reputation**: the block's author proposed one more block
//!   that committed, each signer of the QC it carries voted one more;
//! * the **state root**: a BLAKE3 Merkle root over the records: each
//!   record a leaf, in one of 16,384 buckets by its table and key, each
//!   bucket's hash over its leaves sorted, the root over the digest of
//!   the buckets' hashes, the validators and the height; a block hashes
//!   again only the buckets it changed (and their digest when it changed
//!   any).

use ben_mesh_consensus::{Block, Hash, Height, Millis, NodeId};
use ben_mesh_detect::wire::AnomalyEvent;
use ben_mesh_wire::policy::{check_scope, refuse_target, request_policy_id, Net, Spec};
use ben_mesh_wire::PolicyRequest;
use ben_wire::{open_all, Keyring, Verified, WireError};
use prost::Message as _;
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
    /// The longest TTL a policy request may ask for.
    pub request_max_ttl: Millis,
    /// The widest network a request may target (prefix length, IPv4).
    pub request_widest_v4: u8,
    /// The same for IPv6.
    pub request_widest_v6: u8,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_age: 5 * 60_000,
            max_ahead: 60_000,
            policy_min_confidence: 0.7,
            policy_ttl: 60 * 60_000,
            retention: 30 * 24 * 3_600_000,
            request_max_ttl: 2 * 60 * 60_000,
            request_widest_v4: 24,
            request_widest_v6: 64,
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

/// What a block transaction carries, its envelope verified.
pub enum Tx {
    Anomaly(Verified<AnomalyEvent>),
    Request(Verified<PolicyRequest>),
}

/// Opens transactions: each envelope decoded once and verified as the
/// kind it names (a policy request, or else an anomaly), the anomalies'
/// signatures checked in one batch and the requests' in another by
/// [`ben_wire::open_all`], whose verdict on an envelope is its own
/// whatever came with it (validators batch differently and must agree).
/// One answer per transaction, in order; a refusal carries the error and
/// whether it named a policy request.
pub fn open_txs(txs: &[&[u8]], keyring: &Keyring) -> Vec<Result<Tx, (bool, WireError)>> {
    let mut out: Vec<Option<Result<Tx, (bool, WireError)>>> = Vec::with_capacity(txs.len());
    let (mut anomalies, mut requests) = (Batch::default(), Batch::default());
    for (i, tx) in txs.iter().enumerate() {
        match ben_wire::pb::SignedEnvelope::decode(*tx) {
            Ok(env) => {
                out.push(None);
                if env.kind == <PolicyRequest as ben_wire::Kind>::KIND {
                    requests.push(i, env);
                } else {
                    anomalies.push(i, env);
                }
            }
            Err(e) => out.push(Some(Err((false, WireError::Envelope(e.to_string()))))),
        }
    }
    for (i, r) in anomalies.open::<AnomalyEvent>(keyring) {
        out[i] = Some(r.map(Tx::Anomaly).map_err(|e| (false, e)));
    }
    for (i, r) in requests.open::<PolicyRequest>(keyring) {
        out[i] = Some(r.map(Tx::Request).map_err(|e| (true, e)));
    }
    out.into_iter().flatten().collect()
}

/// Transactions of which some were opened already (`Some`, an anomaly):
/// the others opened together by [`open_txs`]. One answer each, in order.
pub fn open_rest<'a>(
    txs: impl IntoIterator<Item = (&'a [u8], Option<Verified<AnomalyEvent>>)>,
    keyring: &Keyring,
) -> Vec<Result<Tx, (bool, WireError)>> {
    let txs: Vec<_> = txs.into_iter().collect();
    let unopened: Vec<&[u8]> = txs
        .iter()
        .filter(|(_, o)| o.is_none())
        .map(|(tx, _)| *tx)
        .collect();
    // open_txs answers each transaction it is given, in order.
    let mut fresh = open_txs(&unopened, keyring).into_iter();
    txs.into_iter()
        .filter_map(|(_, o)| match o {
            Some(v) => Some(Ok(Tx::Anomaly(v))),
            None => fresh.next(),
        })
        .collect()
}

/// Envelopes of one kind to open together, with where each came from.
#[derive(Default)]
struct Batch {
    at: Vec<usize>,
    envs: Vec<ben_wire::pb::SignedEnvelope>,
}

impl Batch {
    fn push(&mut self, at: usize, env: ben_wire::pb::SignedEnvelope) {
        self.at.push(at);
        self.envs.push(env);
    }

    fn open<T: ben_wire::Kind>(
        self,
        keyring: &Keyring,
    ) -> impl Iterator<Item = (usize, Result<Verified<T>, WireError>)> {
        let opened = open_all::<T>(&self.envs, keyring);
        self.at.into_iter().zip(opened)
    }
}

/// What [`StateMachine::apply_with`] asks of the envelopes a validator
/// already opened: the block's `i`th transaction's, if it has it.
pub type Opened<'a> = dyn FnMut(usize, &[u8]) -> Option<Verified<AnomalyEvent>> + 'a;

/// An admitted policy request.
struct Request {
    id: String,
    spec: Spec,
    target: Net,
    anomalies: Vec<String>,
    /// Sorted, without repeats.
    scope: Vec<String>,
    ttl: Millis,
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

/// A policy the validators agreed on.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Stable id: derived from the target (and, for a request's, its
    /// shape and scope).
    pub id: String,
    /// What it does.
    pub spec: Spec,
    /// The address or network.
    pub target: Net,
    /// Until this block time.
    pub expires_at: Millis,
    /// Anomalies behind it.
    pub anomalies: Vec<String>,
    /// Height that created or last extended it.
    pub height: Height,
    /// Hosts that enforce it (empty: all).
    pub scope: Vec<String>,
    /// The request that made or last extended it (none: an anomaly).
    pub request: Option<String>,
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
    /// Policy requests admitted: transaction index and request id.
    pub requests: Vec<(usize, String)>,
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
    /// The state root's leaves of anomalies, policies and requests, each
    /// made when its record changes, in buckets whose hashes are kept.
    leaves: Leaves,
    policies: BTreeMap<String, Policy>,
    /// Admitted request ids and their block time (kept as long as
    /// anomalies, so a replay is refused).
    requests: BTreeMap<String, Millis>,
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
            leaves: Leaves::new(),
            policies: BTreeMap::new(),
            requests: BTreeMap::new(),
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
        self.apply_with(block, &mut |_, _| None)
    }

    /// [`StateMachine::apply`], with the envelopes this validator already
    /// opened (its mempool verified them): `verified(i, tx)` (the block's
    /// `i`th transaction) returns what [`ben_wire::open_all`] or
    /// [`ben_wire::open_bytes`] (which accepts no more) returned for those
    /// exact bytes, so the signature is not checked twice; the others are
    /// opened together ([`open_txs`]). The answer is the same either way —
    /// the keyring is fixed for a run, and an envelope's verdict is its
    /// own — so state roots agree whatever each validator had cached.
    pub fn apply_with(&mut self, block: &Block, verified: &mut Opened<'_>) -> Applied {
        let now = block.time;
        let mut out = Applied::default();
        let opened = open_rest(
            block
                .payload
                .iter()
                .enumerate()
                .map(|(i, tx)| (tx.as_slice(), verified(i, tx))),
            &self.keyring,
        );
        // Requests after the block's anomalies: one may rest on an anomaly
        // the same block commits.
        let mut requests = vec![];
        for (i, opened) in opened.into_iter().enumerate() {
            let v = match opened {
                Ok(Tx::Anomaly(v)) => v,
                Ok(Tx::Request(r)) => {
                    requests.push((i, r));
                    continue;
                }
                Err((request, e)) => {
                    out.refused.push((
                        i,
                        if request {
                            format!("policy request: {e}")
                        } else {
                            e.to_string()
                        },
                    ));
                    continue;
                }
            };
            match self.admit(v, now) {
                Ok((id, rec)) => {
                    if rec.confidence >= self.cfg.policy_min_confidence {
                        out.policies
                            .push(self.policy_for(&id, &rec, block.height, now));
                    }
                    out.detail.push((i, rec.class.clone(), rec.confidence));
                    let rec = AnomalyRecord {
                        height: block.height,
                        committed_at: now,
                        ..rec
                    };
                    self.leaves.set("anomaly", &id, anomaly_leaf(&id, &rec));
                    self.anomalies.insert(id.clone(), rec);
                    out.admitted.push(id);
                }
                Err(reason) => out.refused.push((i, reason)),
            }
        }
        for (i, r) in requests {
            match self.admit_request(r, now) {
                Ok(r) => {
                    self.requests.insert(r.id.clone(), now);
                    self.leaves
                        .set("request", &r.id, leaf("request", &r.id, &now.to_string()));
                    out.requests.push((i, r.id.clone()));
                    out.policies.push(self.request_policy(r, block.height, now));
                }
                Err(reason) => out.refused.push((i, reason)),
            }
        }
        out.refused.sort_by_key(|r| r.0);
        // Expiry, by the block's time.
        let expired = keys_where(&self.policies, |p| p.expires_at <= now);
        for id in &expired {
            self.policies.remove(id);
            self.leaves.remove("policy", id);
        }
        out.expired = expired;
        let keep_after = now.saturating_sub(self.cfg.retention);
        for id in keys_where(&self.anomalies, |a| a.committed_at <= keep_after) {
            self.anomalies.remove(&id);
            self.leaves.remove("anomaly", &id);
        }
        for id in keys_where(&self.requests, |at| *at <= keep_after) {
            self.requests.remove(&id);
            self.leaves.remove("request", &id);
        }
        // Reputation: who proposed it, who certified its parent.
        self.validators.entry(block.author).or_default().proposed += 1;
        for (a, _) in &block.qc.votes {
            self.validators.entry(*a).or_default().voted += 1;
        }
        self.height = block.height;
        self.leaves.refresh();
        out.root = self.root();
        out
    }

    fn admit(
        &self,
        v: Verified<AnomalyEvent>,
        now: Millis,
    ) -> Result<(String, AnomalyRecord), String> {
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
            spec: Spec::BLOCK,
            target: Net::host(a.source),
            expires_at,
            anomalies: vec![],
            height,
            scope: vec![],
            request: None,
        });
        p.expires_at = p.expires_at.max(expires_at);
        p.height = height;
        if !p.anomalies.iter().any(|x| x == anomaly) {
            p.anomalies.push(anomaly.to_string());
        }
        let p = p.clone();
        self.leaves.set("policy", &p.id, policy_leaf(&p));
        p
    }

    /// A policy request, checked (see the module documentation).
    fn admit_request(&self, r: Verified<PolicyRequest>, now: Millis) -> Result<Request, String> {
        let r = r.into_inner();
        if r.id.is_empty() || r.id.len() > 128 {
            return Err(format!(
                "policy request id of {} bytes (1 to 128 expected)",
                r.id.len()
            ));
        }
        let id = r.id.clone();
        let fail = |why: String| format!("policy request {id}: {why}");
        if self.requests.contains_key(&r.id) {
            return Err(fail("a replay of an admitted request".into()));
        }
        if r.requested_at_ms.saturating_add(self.cfg.max_age) < now {
            return Err(fail(format!(
                "stale (asked {} ms before the block)",
                now - r.requested_at_ms
            )));
        }
        if r.requested_at_ms > now.saturating_add(self.cfg.max_ahead) {
            return Err(fail(format!(
                "asked {} ms after the block",
                r.requested_at_ms - now
            )));
        }
        let spec =
            Spec::parse(&r.action, r.rate, &r.direction, &r.protocol, &r.ports).map_err(fail)?;
        let target = Net::parse(&r.target).map_err(fail)?;
        if let Some(why) = refuse_target(&target) {
            return Err(fail(why));
        }
        let widest = if target.is_v6() {
            self.cfg.request_widest_v6
        } else {
            self.cfg.request_widest_v4
        };
        if target.prefix < widest {
            return Err(fail(format!(
                "target {target} is wider than the chain's limit of a /{widest}"
            )));
        }
        if r.ttl_ms == 0 || r.ttl_ms > self.cfg.request_max_ttl {
            return Err(fail(format!(
                "TTL of {} ms (1 to {} ms)",
                r.ttl_ms, self.cfg.request_max_ttl
            )));
        }
        if r.scope.len() > 64 {
            return Err(fail(format!("{} scope hosts (64 at most)", r.scope.len())));
        }
        for h in &r.scope {
            check_scope(h).map_err(fail)?;
        }
        if r.anomalies.is_empty() || r.anomalies.len() > 64 {
            return Err(fail(format!(
                "names {} anomalies (1 to 64)",
                r.anomalies.len()
            )));
        }
        let mut sources = std::collections::BTreeSet::new();
        for a in &r.anomalies {
            let rec = self
                .anomalies
                .get(a)
                .ok_or_else(|| fail(format!("anomaly {a} is not committed")))?;
            if rec.committed_at.saturating_add(self.cfg.request_max_ttl) < now {
                return Err(fail(format!(
                    "anomaly {a} was committed {} ms before the block, longer ago than a request's longest TTL",
                    now - rec.committed_at
                )));
            }
            if !target.contains(rec.source) {
                return Err(fail(format!(
                    "anomaly {a} came from {}, outside the target {target}",
                    rec.source
                )));
            }
            sources.insert(rec.source);
        }
        if !target.is_host() && sources.len() < 2 {
            return Err(fail(format!(
                "a network ({target}) needs anomalies from at least two of its addresses"
            )));
        }
        let mut scope = r.scope;
        scope.sort();
        scope.dedup();
        Ok(Request {
            id: r.id,
            spec,
            target,
            anomalies: r.anomalies,
            scope,
            ttl: r.ttl_ms,
        })
    }

    /// The policy an admitted request makes, or extends.
    fn request_policy(&mut self, r: Request, height: Height, now: Millis) -> Policy {
        let id = request_policy_id(&r.target, &r.spec, &r.scope);
        let expires_at = now.saturating_add(r.ttl);
        let p = self.policies.entry(id.clone()).or_insert_with(|| Policy {
            id,
            spec: r.spec,
            target: r.target,
            expires_at,
            anomalies: vec![],
            height,
            scope: r.scope,
            request: None,
        });
        p.expires_at = p.expires_at.max(expires_at);
        p.height = height;
        p.request = Some(r.id);
        for a in r.anomalies {
            if !p.anomalies.contains(&a) {
                p.anomalies.push(a);
            }
        }
        let p = p.clone();
        self.leaves.set("policy", &p.id, policy_leaf(&p));
        p
    }

    /// The state root: BLAKE3 over the digest of the [`BUCKETS`] buckets'
    /// hashes, then the validators' leaves and the height's. A record's bucket comes
    /// from BLAKE3 of its table and key; a bucket's hash is BLAKE3 over
    /// its leaves sorted by table and key (leaves domain-separated by
    /// table). A block changes the buckets of the records it changes, and
    /// only those are hashed again: every leaf was hashed again every
    /// block before, a cost that grew with the state.
    pub fn root(&self) -> Hash {
        let mut h = blake3::Hasher::new();
        h.update(b"ben/v1/validator-state/root\0");
        h.update(&self.leaves.digest());
        for (n, r) in &self.validators {
            h.update(&leaf(
                "validator",
                &n.to_string(),
                &format!("{}|{}", r.proposed, r.voted),
            ));
        }
        h.update(&leaf("height", "", &self.height.to_string()));
        Hash(*h.finalize().as_bytes())
    }
}

/// Buckets of the state root's leaves.
pub const BUCKETS: usize = 1 << 14;

/// The state root's leaves of anomalies, policies and requests by
/// (bucket, table, key), and each bucket's hash.
struct Leaves {
    by_key: BTreeMap<(u16, &'static str, String), [u8; 32]>,
    hashes: Vec<[u8; 32]>,
    /// BLAKE3 over `hashes` (512 KiB), taken again only when one changed.
    digest: [u8; 32],
    /// Buckets changed since their hashes were taken.
    dirty: std::collections::BTreeSet<u16>,
}

impl Leaves {
    fn new() -> Leaves {
        let empty = Leaves::hash_of(std::iter::empty());
        let hashes = vec![empty; BUCKETS];
        Leaves {
            by_key: BTreeMap::new(),
            digest: Leaves::digest_of(&hashes),
            hashes,
            dirty: Default::default(),
        }
    }

    fn digest_of(hashes: &[[u8; 32]]) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(b"ben/v1/validator-state/buckets\0");
        h.update(hashes.as_flattened());
        *h.finalize().as_bytes()
    }

    fn bucket(table: &str, key: &str) -> u16 {
        let mut h = blake3::Hasher::new();
        h.update(b"ben/v1/validator-state/bucket\0");
        h.update(table.as_bytes());
        h.update(&[0]);
        h.update(key.as_bytes());
        let b = h.finalize();
        (u16::from_le_bytes([b.as_bytes()[0], b.as_bytes()[1]]) as usize % BUCKETS) as u16
    }

    fn set(&mut self, table: &'static str, key: &str, leaf: [u8; 32]) {
        let b = Leaves::bucket(table, key);
        self.by_key.insert((b, table, key.to_string()), leaf);
        self.dirty.insert(b);
    }

    fn remove(&mut self, table: &'static str, key: &str) {
        let b = Leaves::bucket(table, key);
        if self.by_key.remove(&(b, table, key.to_string())).is_some() {
            self.dirty.insert(b);
        }
    }

    fn hash_of<'a>(leaves: impl Iterator<Item = &'a [u8; 32]>) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(b"ben/v1/validator-state/bucket-hash\0");
        for l in leaves {
            h.update(l);
        }
        *h.finalize().as_bytes()
    }

    fn bucket_hash(&self, b: u16) -> [u8; 32] {
        Leaves::hash_of(
            self.by_key
                .range((b, "", String::new())..)
                .take_while(|(k, _)| k.0 == b)
                .map(|(_, l)| l),
        )
    }

    /// Takes the hashes of the buckets changed since the last time, and
    /// their digest when any did.
    fn refresh(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        for b in std::mem::take(&mut self.dirty) {
            self.hashes[b as usize] = self.bucket_hash(b);
        }
        self.digest = Leaves::digest_of(&self.hashes);
    }

    /// The digest of every bucket's hash (those changed since
    /// [`Leaves::refresh`] taken now).
    fn digest(&self) -> [u8; 32] {
        if self.dirty.is_empty() {
            return self.digest;
        }
        let mut v = self.hashes.clone();
        for &b in &self.dirty {
            v[b as usize] = self.bucket_hash(b);
        }
        Leaves::digest_of(&v)
    }
}

/// The keys of `m` whose values `f` picks.
fn keys_where<V>(m: &BTreeMap<String, V>, f: impl Fn(&V) -> bool) -> Vec<String> {
    m.iter()
        .filter(|(_, v)| f(v))
        .map(|(k, _)| k.clone())
        .collect()
}

/// A policy's leaf.
fn policy_leaf(p: &Policy) -> [u8; 32] {
    let v = format!(
        "{}|{}|{}|{}|{}|{}|{}",
        p.target,
        p.expires_at,
        p.height,
        p.anomalies.join(","),
        p.spec.describe(),
        p.scope.join(","),
        p.request.as_deref().unwrap_or("")
    );
    leaf("policy", &p.id, &v)
}

/// A leaf of the state root: its table, key and value, domain-separated.
fn leaf(table: &str, key: &str, value: &str) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"ben/v1/validator-state/");
    h.update(table.as_bytes());
    h.update(&[0]);
    h.update(&(key.len() as u64).to_le_bytes());
    h.update(key.as_bytes());
    h.update(value.as_bytes());
    *h.finalize().as_bytes()
}

/// A committed anomaly's leaf.
fn anomaly_leaf(id: &str, a: &AnomalyRecord) -> [u8; 32] {
    let v = format!(
        "{}|{}|{}|{}|{}|{}",
        a.class,
        a.confidence.to_bits(),
        a.source,
        a.signer,
        a.height,
        a.committed_at
    );
    leaf("anomaly", id, &v)
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
        b.payload = txs.into();
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

    fn request(id: &str, anomalies: &[&str], target: &str, at: u64) -> PolicyRequest {
        PolicyRequest {
            service: "mesh-1".into(),
            id: id.into(),
            anomalies: anomalies.iter().map(|a| a.to_string()).collect(),
            action: "rate-limit".into(),
            rate: 50,
            target: target.into(),
            protocol: "tcp".into(),
            ports: "22".into(),
            ttl_ms: 600_000,
            scope: vec!["web-2".into(), "web-1".into(), "web-1".into()],
            requested_at_ms: at,
            ..Default::default()
        }
    }

    #[test]
    fn a_request_makes_its_policy_only_on_committed_anomalies_from_inside_its_target() {
        let (ai, k) = keys();
        let mut sm = StateMachine::new(Config::default(), k.clone());
        let t: u64 = 2_000_000;
        let a = |id: &str, src: &str| ai.seal_bytes(&anomaly(id, 0.9, src, t));
        // The request comes first in the block, its anomalies after it:
        // requests are applied after the block's anomalies.
        let out = sm.apply(&block(
            1,
            t,
            vec![
                ai.seal_bytes(&request("r1", &["a1"], "192.0.2.9", t)),
                a("a1", "192.0.2.9"),
                a("a2", "198.51.100.7"),
                a("a3", "198.51.100.8"),
            ],
        ));
        assert!(out.refused.is_empty(), "{:?}", out.refused);
        assert_eq!(out.requests, vec![(0, "r1".to_string())]);
        let p = out.policies.iter().find(|p| p.request.is_some()).unwrap();
        assert_eq!(p.spec.describe(), "rate-limit 50/s ingress tcp 22");
        assert_eq!(p.target.to_string(), "192.0.2.9");
        assert_eq!(p.scope, ["web-1", "web-2"]);
        assert_eq!(p.expires_at, t + 600_000);
        assert!(p.id.starts_with("req-"));
        let first_id = p.id.clone();
        let mut net = request("r2", &["a2", "a3"], "198.51.100.0/24", t);
        net.action = "drop".into();
        net.rate = 0;
        let mut wide = request("r3", &["a2", "a3"], "198.51.0.0/16", t);
        wide.rate = 10;
        let mut lone = request("r4", &["a2"], "198.51.100.0/24", t);
        lone.action = "drop".into();
        lone.rate = 0;
        let mut long = request("r5", &["a1"], "192.0.2.9", t);
        long.ttl_ms = 3 * 3_600_000;
        let mut bad_spec = request("r6", &["a1"], "192.0.2.9", t);
        bad_spec.protocol = "icmp".into();
        let mut bad_scope = request("r7", &["a1"], "192.0.2.9", t);
        bad_scope.scope = vec!["a host".into()];
        let spine = Signer::from_secret([6; 32]);
        let mut by_spine = request("r8", &["a1"], "192.0.2.9", t);
        by_spine.service = "spine-1".into();
        let again = request("r9", &["a1"], "192.0.2.9", t + 5);
        let out = sm.apply(&block(
            2,
            t + 10,
            vec![
                ai.seal_bytes(&net),
                ai.seal_bytes(&request("r1", &["a1"], "192.0.2.9", t)),
                ai.seal_bytes(&request("r10", &["zz"], "192.0.2.9", t)),
                ai.seal_bytes(&request("r11", &["a2"], "192.0.2.9", t)),
                ai.seal_bytes(&wide),
                ai.seal_bytes(&lone),
                ai.seal_bytes(&long),
                ai.seal_bytes(&bad_spec),
                ai.seal_bytes(&bad_scope),
                spine.seal_bytes(&by_spine),
                ai.seal_bytes(&request("r12", &["a1"], "192.0.2.9", t - 10 * 60_000)),
                ai.seal_bytes(&again),
            ],
        ));
        let reasons: Vec<&str> = out.refused.iter().map(|r| r.1.as_str()).collect();
        let expect = [
            "replay",
            "not committed",
            "outside the target",
            "wider than",
            "at least two",
            "TTL",
            "need protocol tcp or udp",
            "scope",
            "may not sign",
            "stale",
        ];
        assert_eq!(reasons.len(), expect.len(), "{reasons:?}");
        for (r, e) in reasons.iter().zip(expect) {
            assert!(r.contains(e), "{r:?} should say {e:?}");
        }
        assert_eq!(
            out.requests
                .iter()
                .map(|r| r.1.as_str())
                .collect::<Vec<_>>(),
            ["r2", "r9"]
        );
        // r9 asks for r1's shape again: the same policy, extended.
        let ext = out.policies.iter().find(|p| p.id == first_id).unwrap();
        assert_eq!(ext.expires_at, t + 10 + 600_000);
        assert_eq!(ext.request.as_deref(), Some("r9"));
        let net = out
            .policies
            .iter()
            .find(|p| p.request.as_deref() == Some("r2"))
            .unwrap();
        assert_eq!(net.spec, Spec::parse("drop", 0, "", "tcp", "22").unwrap());
        assert_eq!(net.anomalies, ["a2", "a3"]);
        // Fresh, but resting on an anomaly committed longer ago than a
        // request's longest TTL: refused.
        // Requests and their policies in the kept buckets.
        assert!(!sm.requests.is_empty() && !sm.policies.is_empty());
        assert_eq!(sm.root(), from_scratch(&sm));
        let later = t + 3 * 3_600_000;
        let out = sm.apply(&block(
            3,
            later,
            vec![ai.seal_bytes(&request("r13", &["a1"], "192.0.2.9", later))],
        ));
        assert!(
            out.refused[0]
                .1
                .contains("longer ago than a request's longest TTL"),
            "{:?}",
            out.refused
        ); // Expired and retained away: gone from the kept buckets too.
        assert_eq!(sm.root(), from_scratch(&sm));
    }

    /// A signature only its key's holder can build, which the two checks
    /// judge apart (`ben_wire::seal_with_torsion`): whether a validator
    /// opened it with others in one batch, refused it one by one at its
    /// intake (so it was not kept), or opens it when its block commits,
    /// the block's outcome and state root are the same.
    #[test]
    fn a_crafted_signature_gets_one_verdict_however_it_was_opened() {
        let (ai, k) = keys();
        let t: u64 = 5_000_000;
        let mut txs: Vec<Vec<u8>> = (0..6)
            .map(|i| ai.seal_bytes(&anomaly(&format!("c{i}"), 0.8, &format!("10.3.0.{i}"), t)))
            .collect();
        let crafted = ben_wire::seal_with_torsion([5; 32], &anomaly("crafted", 0.8, "10.3.1.1", t));
        txs.insert(3, crafted.encode_to_vec());
        let b = block(1, t, txs.clone());
        let fresh = StateMachine::new(Config::default(), k.clone()).apply(&b);
        assert_eq!(fresh.admitted.len(), 7, "{:?}", fresh.refused);
        assert!(fresh.admitted.iter().any(|id| id == "crafted"));
        // Opened in one batch, as a mempool does.
        let all: Vec<&[u8]> = txs.iter().map(Vec::as_slice).collect();
        let batch = open_txs(&all, &k);
        let mut sm = StateMachine::new(Config::default(), k.clone());
        let with_batch = sm.apply_with(&b, &mut |i, _| match batch.get(i) {
            Some(Ok(Tx::Anomaly(v))) => Some(v.clone()),
            _ => None,
        });
        assert_eq!(with_batch, fresh);
        // Opened one by one, cofactorless: the crafted one is refused
        // there and so not kept; the block still admits it.
        let mut sm = StateMachine::new(Config::default(), k.clone());
        let mut kept = 0;
        let with_single = sm.apply_with(&b, &mut |_, tx| {
            let v = ben_wire::open_bytes::<AnomalyEvent>(tx, &k).ok();
            kept += usize::from(v.is_some());
            v
        });
        assert_eq!(kept, 6);
        assert_eq!(with_single, fresh);
        // Beside a bad signature the batch fails and each is judged alone:
        // the same verdicts.
        let mut bad = txs.clone();
        let mut env = ben_wire::pb::SignedEnvelope::decode(&bad[5][..]).unwrap();
        env.signature[1] ^= 1;
        bad[5] = env.encode_to_vec();
        let all: Vec<&[u8]> = bad.iter().map(Vec::as_slice).collect();
        let verdicts: Vec<bool> = open_txs(&all, &k).iter().map(Result::is_ok).collect();
        assert_eq!(verdicts, [true, true, true, true, true, false, true]);
    }

    /// The anomalies' leaves are made once, when committed: they stay
    /// those of the records kept, through expiry, and a validator that
    /// replays the chain (its leaves all made afresh) has the same root.
    /// The root of `sm`'s records, every leaf and bucket made afresh.
    fn from_scratch(sm: &StateMachine) -> Hash {
        let mut l = Leaves::new();
        for (id, a) in &sm.anomalies {
            l.set("anomaly", id, anomaly_leaf(id, a));
        }
        for (id, p) in &sm.policies {
            assert_eq!(id, &p.id);
            l.set("policy", id, policy_leaf(p));
        }
        for (id, at) in &sm.requests {
            l.set("request", id, leaf("request", id, &at.to_string()));
        }
        l.refresh();
        let mut fresh = StateMachine::new(sm.cfg.clone(), sm.keyring.clone());
        fresh.leaves = l;
        fresh.validators = sm.validators.clone();
        fresh.height = sm.height;
        fresh.root()
    }

    #[test]
    fn kept_leaves_follow_the_anomalies_through_expiry() {
        let (ai, k) = keys();
        let cfg = Config {
            retention: 10_000,
            max_age: 60_000,
            ..Config::default()
        };
        let mut sm = StateMachine::new(cfg.clone(), k.clone());
        let mut blocks = vec![];
        for h in 1..=12u64 {
            let t = 1_000_000 + h * 3_000;
            let txs = (0..4)
                .map(|i| {
                    ai.seal_bytes(&anomaly(
                        &format!("h{h}-{i}"),
                        0.9,
                        &format!("10.2.{h}.{i}"),
                        t,
                    ))
                })
                .collect();
            let b = block(h, t, txs);
            let out = sm.apply(&b);
            assert_eq!(out.admitted.len(), 4, "{:?}", out.refused);
            let made: BTreeMap<String, [u8; 32]> = sm
                .anomalies
                .iter()
                .map(|(id, a)| (id.clone(), anomaly_leaf(id, a)))
                .collect();
            let kept: BTreeMap<String, [u8; 32]> = sm
                .leaves
                .by_key
                .iter()
                .filter(|(k, _)| k.1 == "anomaly")
                .map(|(k, l)| (k.2.clone(), *l))
                .collect();
            assert_eq!(kept, made, "height {h}");
            // The buckets kept up to date give the root the whole state
            // gives, hashed afresh.
            assert_eq!(sm.root(), from_scratch(&sm), "height {h}");
            blocks.push(b);
        }
        // Retention 10 s, a block every 3 s: the oldest went.
        assert!(sm.anomaly("h1-0").is_none());
        assert_eq!(sm.anomalies.len(), 16);
        let mut replayed = StateMachine::new(cfg, k);
        let roots: Vec<Hash> = blocks.iter().map(|b| replayed.apply(b).root).collect();
        assert_eq!(roots.last(), Some(&sm.root()));
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
            let with = cached.apply_with(b, &mut |_, tx| {
                half += 1;
                (half % 2 == 0).then(|| ben_wire::open_bytes::<AnomalyEvent>(tx, &k).unwrap())
            });
            assert_eq!(with, fresh.apply(b));
        }
    }
}
