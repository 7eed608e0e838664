//! CyberMesh's messages after detection, as they travel on the bus: what
//! the validators announce (`control.commits.v1`, `control.policy.v1`,
//! `control.reputation.v1`) and what enforcement agents answer
//! (`control.policy.ack.v1`), with the subject where CyberMesh's refused
//! input goes (`ai.dlq.v1`). Hand-written `prost` structs, each a
//! [`ben_wire::Kind`] so it travels signed in Ben's one envelope and only a
//! role allowed that kind can sign it (`ben_wire::role::SIGNS`).
//!
//! Here, below both, so the validators and the enforcement agent share
//! them without depending on each other; [`policy`] is what a policy
//! does, parsed the same way on both sides.

pub mod policy;

/// Where sensors publish flows (signed [`FlowBatch`]es).
pub const FLOWS_SUBJECT: &str = "ben.mesh.flows";

/// Flows a sensor assembled, as CSV rows in the columns `ben flows`
/// writes (no header, no line ends). Signed by the sensor: the AI service
/// takes flows only from keys provisioned as sensors, so nobody else on
/// the bus can make it name (and the validators block) an address.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FlowBatch {
    /// The sensor (its component id).
    #[prost(string, tag = "1")]
    pub sensor: String,
    /// The batch's number in the sensor's run, from 1 (gaps: batches the
    /// bus lost).
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    /// The rows.
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub rows: Vec<Vec<u8>>,
    /// The sensor's run: larger for each start of it than for the one
    /// before (its start time, ns since the epoch).
    #[prost(uint64, tag = "4")]
    pub incarnation: u64,
}

/// Where a batch stands among those taken from its sensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// New; `missing` batches of the run came before it and were never
    /// taken (lost on the way). The first batch seen of a sensor counts
    /// none missing: what it sent before may have gone before the taker
    /// was up.
    Next { missing: u64 },
    /// Its (run, number) was taken before: a replay.
    Replayed,
    /// From a run of the sensor older than one taken from: a replay.
    OldRun,
}

/// The newest (run, number) taken from each sensor, so that a signed
/// batch cannot be taken twice (a replay would count its flows again and
/// have an address named again). Pure; one per taker. Entries are made
/// only for verified sensors, so they are as many as the provisioned
/// sensors.
#[derive(Debug, Default)]
pub struct BatchOrder {
    newest: std::collections::HashMap<String, (u64, u64)>,
}

impl BatchOrder {
    pub fn take(&mut self, b: &FlowBatch) -> Order {
        let key = (b.incarnation, b.seq);
        match self.newest.get_mut(&b.sensor) {
            None => {
                self.newest.insert(b.sensor.clone(), key);
                Order::Next { missing: 0 }
            }
            Some(last) if b.incarnation < last.0 => Order::OldRun,
            Some(last) if b.incarnation == last.0 && b.seq <= last.1 => Order::Replayed,
            Some(last) => {
                let missing = if b.incarnation == last.0 {
                    b.seq - last.1 - 1
                } else {
                    b.seq.saturating_sub(1)
                };
                *last = key;
                Order::Next { missing }
            }
        }
    }
}

impl ben_wire::Kind for FlowBatch {
    const KIND: &'static str = "flows";
    fn sender(&self) -> Option<&str> {
        Some(&self.sensor)
    }
}

/// Where CyberMesh dead-letters what it refuses (signed
/// `ben.v1.DeadLetter`s, the reason in each).
pub const DLQ_SUBJECT: &str = "ai.dlq.v1";

/// Where committed blocks are announced.
pub const COMMITS_SUBJECT: &str = "control.commits.v1";

/// A committed block, as one validator announces it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CommitEvent {
    /// The validator announcing it (its component id).
    #[prost(string, tag = "1")]
    pub validator: String,
    /// Block height.
    #[prost(uint64, tag = "2")]
    pub height: u64,
    /// Block id, hex.
    #[prost(string, tag = "3")]
    pub block: String,
    /// Block time (ms since the epoch).
    #[prost(uint64, tag = "4")]
    pub time_ms: u64,
    /// State root after it, hex.
    #[prost(string, tag = "5")]
    pub state_root: String,
    /// Anomalies it committed.
    #[prost(string, repeated, tag = "6")]
    pub anomalies: Vec<String>,
    /// Transactions the state machine refused.
    #[prost(uint32, tag = "7")]
    pub refused: u32,
    /// Block policies it created or extended.
    #[prost(uint32, tag = "8")]
    pub policies: u32,
    /// The round of the certificate that committed it.
    #[prost(uint64, tag = "9")]
    pub round: u64,
    /// Anomalies the state machine refused in it (those whose id could be
    /// read), with the reason: the feedback loop's REJECTED.
    #[prost(message, repeated, tag = "10")]
    pub rejected: Vec<RejectedAnomaly>,
    /// Policy requests the state machine refused in it, with the reason
    /// (the id is the request's).
    #[prost(message, repeated, tag = "11")]
    pub rejected_requests: Vec<RejectedAnomaly>,
}

/// An anomaly a block refused, and why.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RejectedAnomaly {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub reason: String,
}

impl ben_wire::Kind for CommitEvent {
    const KIND: &'static str = "commit";
    fn sender(&self) -> Option<&str> {
        Some(&self.validator)
    }
}

/// Where agreed policies go.
pub const POLICY_SUBJECT: &str = "control.policy.v1";

/// One policy a block made. An anomaly's policy drops everything from its
/// source (the empty direction, protocol and ports); a policy a
/// [`PolicyRequest`] asked for says what the request said, and names it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BlockPolicy {
    /// Policy id (one per target, or per target and request shape).
    #[prost(string, tag = "1")]
    pub id: String,
    /// `drop`, `reject` or `rate-limit`.
    #[prost(string, tag = "2")]
    pub action: String,
    /// The address or network.
    #[prost(string, tag = "3")]
    pub target: String,
    /// Until this block time (ms since the epoch).
    #[prost(uint64, tag = "4")]
    pub expires_at_ms: u64,
    /// The anomalies behind it.
    #[prost(string, repeated, tag = "5")]
    pub anomalies: Vec<String>,
    /// `ingress` (empty) or `egress`.
    #[prost(string, tag = "6")]
    pub direction: String,
    /// `tcp`, `udp`, `icmp`, or empty for every protocol.
    #[prost(string, tag = "7")]
    pub protocol: String,
    /// Destination ports (`22`, `8000-8100`), empty for all.
    #[prost(string, tag = "8")]
    pub ports: String,
    /// Packets a second, for `rate-limit`.
    #[prost(uint32, tag = "9")]
    pub rate: u32,
    /// The agents that enforce it (agent ids, host names or labels
    /// `key=value`); empty: all.
    #[prost(string, repeated, tag = "10")]
    pub scope: Vec<String>,
    /// The request in the same block it came from (empty: from an
    /// anomaly of the block).
    #[prost(string, tag = "11")]
    pub request: String,
}

/// Where AI services ask the validators for a policy other than an
/// anomaly's own (a network, a port, a rate limit, some hosts).
pub const POLICY_REQUEST_SUBJECT: &str = "ai.policy.v1";

/// A policy an AI service asks for, resting on anomalies the validators
/// committed. Signed by the AI service (`ben/v1/policy_request`); the
/// validators' state machine admits it only if every anomaly it names is
/// committed and comes from inside its target, and its shape and time are
/// within the chain's limits. The fields are in the text forms of
/// [`policy`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct PolicyRequest {
    /// The AI service asking (its component id).
    #[prost(string, tag = "1")]
    pub service: String,
    /// The request's id (one per request; a second with the same id is a
    /// replay).
    #[prost(string, tag = "2")]
    pub id: String,
    /// The committed anomalies it rests on.
    #[prost(string, repeated, tag = "3")]
    pub anomalies: Vec<String>,
    /// `drop`, `reject` or `rate-limit`.
    #[prost(string, tag = "4")]
    pub action: String,
    /// Packets a second, for `rate-limit`.
    #[prost(uint32, tag = "5")]
    pub rate: u32,
    /// An address or network.
    #[prost(string, tag = "6")]
    pub target: String,
    /// `ingress` (empty) or `egress`.
    #[prost(string, tag = "7")]
    pub direction: String,
    /// `tcp`, `udp`, `icmp`, or empty.
    #[prost(string, tag = "8")]
    pub protocol: String,
    /// Destination ports (`22`, `8000-8100`), empty for all.
    #[prost(string, tag = "9")]
    pub ports: String,
    /// How long it should hold (ms from its block).
    #[prost(uint64, tag = "10")]
    pub ttl_ms: u64,
    /// The agents that should enforce it (agent ids, host names or labels
    /// `key=value`); empty: every agent.
    #[prost(string, repeated, tag = "11")]
    pub scope: Vec<String>,
    /// When it was asked (ms since the epoch): a request older than the
    /// chain's `max_age` is stale.
    #[prost(uint64, tag = "12")]
    pub requested_at_ms: u64,
}

impl ben_wire::Kind for PolicyRequest {
    const KIND: &'static str = "policy_request";
    fn sender(&self) -> Option<&str> {
        Some(&self.service)
    }
}

/// The policies one committed block made, with that block (it carries the
/// anomalies behind them) and the QC that certifies it, so an enforcement
/// agent can check them with nothing but the validator set's keys
/// (`ben_mesh_consensus::verify_certified`). One message per block, not
/// per policy: the block travels once.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PolicyEvent {
    /// The validator announcing it (its component id).
    #[prost(string, tag = "1")]
    pub validator: String,
    /// The block's height.
    #[prost(uint64, tag = "7")]
    pub height: u64,
    /// The block, encoded.
    #[prost(bytes = "vec", tag = "8")]
    pub block: Vec<u8>,
    /// The QC certifying it, encoded.
    #[prost(bytes = "vec", tag = "9")]
    pub qc: Vec<u8>,
    /// The chain's genesis id, hex.
    #[prost(string, tag = "10")]
    pub chain: String,
    /// The policies it created or extended.
    #[prost(message, repeated, tag = "11")]
    pub policies: Vec<BlockPolicy>,
}

impl ben_wire::Kind for PolicyEvent {
    const KIND: &'static str = "policy";
    fn sender(&self) -> Option<&str> {
        Some(&self.validator)
    }
}

/// Where the validators' reputation goes.
pub const REPUTATION_SUBJECT: &str = "control.reputation.v1";

/// One validator's record in the chain.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValidatorReputation {
    /// Its index in the set (`validator-<index + 1>`).
    #[prost(uint32, tag = "1")]
    pub index: u32,
    /// Committed blocks it proposed.
    #[prost(uint64, tag = "2")]
    pub proposed: u64,
    /// Its votes in committed blocks' QCs.
    #[prost(uint64, tag = "3")]
    pub voted: u64,
}

/// The validators' reputation as of a height, as one validator's state
/// machine computed it (every validator computes the same).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReputationEvent {
    /// The validator announcing it.
    #[prost(string, tag = "1")]
    pub validator: String,
    /// As of this height.
    #[prost(uint64, tag = "2")]
    pub height: u64,
    /// Every validator's record.
    #[prost(message, repeated, tag = "3")]
    pub validators: Vec<ValidatorReputation>,
}

impl ben_wire::Kind for ReputationEvent {
    const KIND: &'static str = "reputation";
    fn sender(&self) -> Option<&str> {
        Some(&self.validator)
    }
}

/// Where an enforcement agent answers what it holds (request/reply,
/// JSON: `benctl mesh enforcement` through the API).
pub const ENFORCEMENT_QUERY: &str = "ben.mesh.enforcement.query";

/// Where the AI service's feedback loop answers (JSON): an empty request
/// gets the publish threshold, counts by lifecycle state and the threshold
/// changes; a request holding an anomaly id gets that anomaly's lifecycle.
pub const FEEDBACK_QUERY: &str = "ben.mesh.feedback.query";

/// Where enforcement agents acknowledge policies.
pub const ACK_SUBJECT: &str = "control.policy.ack.v1";

/// What an agent did with a policy.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PolicyAck {
    /// The agent (its component id).
    #[prost(string, tag = "1")]
    pub agent: String,
    /// The policy id.
    #[prost(string, tag = "2")]
    pub policy: String,
    /// The height of the block that carried it.
    #[prost(uint64, tag = "3")]
    pub height: u64,
    /// `applied` (read back from the host), `failed`, `skipped` or
    /// `expired`.
    #[prost(string, tag = "4")]
    pub status: String,
    /// Why (for failed and skipped), or what was applied.
    #[prost(string, tag = "5")]
    pub reason: String,
    /// The target as enforced (address or CIDR).
    #[prost(string, tag = "6")]
    pub target: String,
    /// Until when it holds on this host (ms since the epoch).
    #[prost(uint64, tag = "7")]
    pub expires_at_ms: u64,
    /// The backend that holds it (`nftables`, `iptables`, `dry-run`).
    #[prost(string, tag = "8")]
    pub backend: String,
}

impl ben_wire::Kind for PolicyAck {
    const KIND: &'static str = "policy_ack";
    fn sender(&self) -> Option<&str> {
        Some(&self.agent)
    }
}

#[cfg(test)]
mod order_tests {
    use super::*;

    fn b(sensor: &str, incarnation: u64, seq: u64) -> FlowBatch {
        FlowBatch {
            sensor: sensor.into(),
            seq,
            rows: vec![],
            incarnation,
        }
    }

    #[test]
    fn replays_are_refused_and_gaps_counted() {
        let mut o = BatchOrder::default();
        assert_eq!(o.take(&b("s1", 10, 5)), Order::Next { missing: 0 });
        assert_eq!(o.take(&b("s1", 10, 6)), Order::Next { missing: 0 });
        assert_eq!(o.take(&b("s1", 10, 6)), Order::Replayed);
        assert_eq!(o.take(&b("s1", 10, 2)), Order::Replayed);
        assert_eq!(o.take(&b("s1", 10, 9)), Order::Next { missing: 2 });
        // Another sensor is numbered on its own.
        assert_eq!(o.take(&b("s2", 3, 1)), Order::Next { missing: 0 });
        // The sensor restarted: a new run, its first batches lost.
        assert_eq!(o.take(&b("s1", 11, 3)), Order::Next { missing: 2 });
        assert_eq!(o.take(&b("s1", 10, 10)), Order::OldRun);
        assert_eq!(o.take(&b("s1", 11, 3)), Order::Replayed);
    }
}
