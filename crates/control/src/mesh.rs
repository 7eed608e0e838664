//! What the control plane knows of CyberMesh's chain, for `benctl mesh
//! blocks | validators | anomaly ID`: it listens to what the validators
//! announce (`control.commits.v1`, `control.reputation.v1`,
//! `control.policy.v1`) and what the enforcement agents acknowledge
//! (`control.policy.ack.v1`), each message verified (only a validator's key
//! may sign the first three, only an agent's the acks, each in its own
//! name; the rest is dead-lettered with the reason), and keeps a bounded
//! view. The dashboard reads it too.
//!
//! [`View`] is the core (messages and arrival time in, answers out, no
//! I/O); [`Watch`] is its shell on the bus. The view holds what arrived
//! since the control process started: the last [`BLOCKS`] blocks and
//! [`ANOMALIES`] anomalies. Older history is in the validators' tables
//! (`blocks`, `transactions`, `anomalies`, `validators`).

use ben_bus::Bus;
use ben_mesh_wire::{CommitEvent, PolicyAck, PolicyEvent, ReputationEvent};
use ben_time::Clock;
use ben_wire::{Keyring, Signer};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Blocks the view keeps (the newest).
pub const BLOCKS: usize = 1_024;
/// Anomalies the view keeps (the newest).
pub const ANOMALIES: usize = 100_000;
/// Policies whose acks the view keeps (the newest).
pub const ACKED_POLICIES: usize = 100_000;

/// Why the AI service's feedback loop gave no answer.
#[derive(Debug)]
pub enum FeedbackError {
    /// Nobody answered (no AI service, or not in time).
    NoAnswer(String),
    /// The answer was not JSON.
    Garbage(String),
}

impl std::fmt::Display for FeedbackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FeedbackError::NoAnswer(e) => {
                write!(f, "the AI service's feedback loop did not answer: {e}")
            }
            FeedbackError::Garbage(e) => write!(f, "the AI service answered garbage: {e}"),
        }
    }
}

/// Asks the AI service's feedback loop over `bus` (`query`: empty for the
/// summary, an anomaly id for its lifecycle), waiting up to `timeout`.
pub async fn ask_feedback(
    bus: &dyn Bus,
    query: &str,
    timeout: std::time::Duration,
) -> Result<serde_json::Value, FeedbackError> {
    let reply = bus
        .request(
            ben_mesh_wire::FEEDBACK_QUERY,
            query.as_bytes().to_vec(),
            timeout,
        )
        .await
        .map_err(|e| FeedbackError::NoAnswer(e.to_string()))?;
    serde_json::from_slice(&reply.payload).map_err(|e| FeedbackError::Garbage(e.to_string()))
}

/// One validator as its announcements show it.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ValidatorView {
    pub id: String,
    /// The highest height it announced.
    pub height: u64,
    /// The round of the certificate that committed it.
    pub round: u64,
    /// How far it is behind the highest height any validator announced.
    pub lag: u64,
    /// When its last commit arrived (ms since the epoch).
    pub last_commit_ms: u64,
    /// Blocks it proposed and votes of its in committed certificates, as
    /// of the last reputation announced (none yet: 0).
    pub proposed: u64,
    pub voted: u64,
}

/// One committed block.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct BlockView {
    pub height: u64,
    pub block: String,
    pub time_ms: u64,
    pub state_root: String,
    pub anomalies: Vec<String>,
    pub refused: u32,
    pub policies: u32,
    /// The validators that announced it.
    pub announced_by: BTreeSet<String>,
}

/// A policy a block made, as the view keeps it for its anomalies.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PolicyView {
    pub id: String,
    pub action: String,
    /// What it does in words (`rate-limit 20/s ingress udp 9999`).
    pub rule: String,
    pub target: String,
    /// The hosts that enforce it (empty: all).
    pub scope: Vec<String>,
    /// The AI service's request it came from (empty: an anomaly).
    pub request: String,
    pub expires_at_ms: u64,
    pub height: u64,
}

/// What one enforcement agent said of a policy.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AckView {
    pub agent: String,
    /// `applied`, `failed`, `skipped` or `expired`.
    pub status: String,
    pub reason: String,
    pub target: String,
    pub backend: String,
    /// When the control plane heard it (ms since the epoch).
    pub at_ms: u64,
}

/// One anomaly's way through the chain.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AnomalyView {
    pub id: String,
    /// The height that committed it.
    pub height: u64,
    pub block: String,
    pub time_ms: u64,
    /// The policies made from it (with others, possibly).
    pub policies: Vec<PolicyView>,
    /// The agents' acks of those policies, by policy id.
    pub acks: BTreeMap<String, Vec<AckView>>,
}

/// Running totals since the control process started.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Totals {
    /// The highest committed height announced.
    pub height: u64,
    /// Anomalies and policies committed (each counted once).
    pub anomalies: u64,
    pub policies: u64,
    /// Acks by status (`applied`, `failed`, …).
    pub acks: BTreeMap<String, u64>,
    pub forks: usize,
}

/// The view: fed verified announcements, answers the API.
#[derive(Default)]
pub struct View {
    validators: BTreeMap<String, ValidatorView>,
    /// Reputation by validator index (1-based ids: index + 1), as of the
    /// highest height announced.
    reputation: (u64, BTreeMap<u32, (u64, u64)>),
    blocks: BTreeMap<u64, BlockView>,
    anomalies: HashMap<String, u64>,
    order: VecDeque<String>,
    policies: HashMap<String, Vec<PolicyView>>,
    /// Acks by policy id, the newest [`ACKED_POLICIES`] policies'.
    acks: HashMap<String, Vec<AckView>>,
    ack_order: VecDeque<String>,
    /// Policy ids counted once.
    policy_ids: HashMap<String, ()>,
    policy_order: VecDeque<String>,
    totals: Totals,
    /// Two different blocks announced at one height (never, while the
    /// validators are safe): the heights.
    pub forks: Vec<u64>,
}

impl View {
    /// A commit announced by `ev.validator`, arrived at `now_ms`.
    pub fn commit(&mut self, ev: CommitEvent, now_ms: u64) {
        let v = self
            .validators
            .entry(ev.validator.clone())
            .or_insert_with(|| ValidatorView {
                id: ev.validator.clone(),
                ..ValidatorView::default()
            });
        if ev.height >= v.height {
            v.height = ev.height;
            v.round = ev.round;
        }
        v.last_commit_ms = now_ms;
        match self.blocks.get_mut(&ev.height) {
            Some(b) if b.block != ev.block => {
                if !self.forks.contains(&ev.height) {
                    self.forks.push(ev.height);
                }
            }
            Some(b) => {
                b.announced_by.insert(ev.validator);
            }
            None => {
                // Older than everything kept: already dropped.
                if self.blocks.len() >= BLOCKS
                    && self.blocks.keys().next().is_some_and(|h| ev.height < *h)
                {
                    return;
                }
                for id in &ev.anomalies {
                    self.remember(id, ev.height);
                }
                self.blocks.insert(
                    ev.height,
                    BlockView {
                        height: ev.height,
                        block: ev.block,
                        time_ms: ev.time_ms,
                        state_root: ev.state_root,
                        anomalies: ev.anomalies,
                        refused: ev.refused,
                        policies: ev.policies,
                        announced_by: BTreeSet::from([ev.validator]),
                    },
                );
                while self.blocks.len() > BLOCKS {
                    self.blocks.pop_first();
                }
            }
        }
    }

    /// A reputation announcement (the newest height wins).
    pub fn reputation(&mut self, ev: ReputationEvent) {
        if ev.height < self.reputation.0 {
            return;
        }
        self.reputation = (
            ev.height,
            ev.validators
                .iter()
                .map(|r| (r.index, (r.proposed, r.voted)))
                .collect(),
        );
    }

    /// An anomaly committed at `height`, kept among the newest
    /// [`ANOMALIES`] (the oldest forgotten with its policies).
    fn remember(&mut self, id: &str, height: u64) {
        if self.anomalies.insert(id.to_string(), height).is_none() {
            self.order.push_back(id.to_string());
            self.totals.anomalies += 1;
        }
        while self.order.len() > ANOMALIES {
            if let Some(old) = self.order.pop_front() {
                self.anomalies.remove(&old);
                self.policies.remove(&old);
            }
        }
    }

    /// A block's policies (each validator announces them; kept once).
    pub fn policy(&mut self, ev: PolicyEvent) {
        for p in ev.policies {
            let rule = ben_mesh_wire::policy::Spec::parse(
                &p.action,
                p.rate,
                &p.direction,
                &p.protocol,
                &p.ports,
            )
            .map_or_else(|e| format!("unreadable: {e}"), |s| s.describe());
            if self.policy_ids.insert(p.id.clone(), ()).is_none() {
                self.totals.policies += 1;
                self.policy_order.push_back(p.id.clone());
                while self.policy_order.len() > ACKED_POLICIES {
                    if let Some(old) = self.policy_order.pop_front() {
                        self.policy_ids.remove(&old);
                    }
                }
            }
            let view = PolicyView {
                id: p.id,
                action: p.action,
                rule,
                target: p.target,
                scope: p.scope,
                request: p.request,
                expires_at_ms: p.expires_at_ms,
                height: ev.height,
            };
            for a in p.anomalies {
                // The policy's block is verified and certified: its
                // anomalies are committed at its height, whether its
                // commit announcement came first or not (on Kafka the two
                // topics keep no order between them).
                self.remember(&a, ev.height);
                let list = self.policies.entry(a).or_default();
                if !list.contains(&view) {
                    list.push(view.clone());
                }
            }
        }
    }

    /// An agent's ack of a policy, heard at `now_ms` (a repeated one, same
    /// agent and status, is kept once).
    pub fn ack(&mut self, ev: PolicyAck, now_ms: u64) {
        let view = AckView {
            agent: ev.agent,
            status: ev.status,
            reason: ev.reason,
            target: ev.target,
            backend: ev.backend,
            at_ms: now_ms,
        };
        let list = match self.acks.get_mut(&ev.policy) {
            Some(l) => l,
            None => {
                self.ack_order.push_back(ev.policy.clone());
                while self.ack_order.len() > ACKED_POLICIES {
                    if let Some(old) = self.ack_order.pop_front() {
                        self.acks.remove(&old);
                    }
                }
                self.acks.entry(ev.policy).or_default()
            }
        };
        if list
            .iter()
            .any(|a| a.agent == view.agent && a.status == view.status)
        {
            return;
        }
        *self.totals.acks.entry(view.status.clone()).or_insert(0) += 1;
        list.push(view);
    }

    /// The totals now.
    pub fn totals(&self) -> Totals {
        Totals {
            height: self.blocks.keys().next_back().copied().unwrap_or(0),
            forks: self.forks.len(),
            ..self.totals.clone()
        }
    }

    /// The newest `limit` committed anomalies, newest first.
    pub fn recent(&self, limit: usize) -> Vec<AnomalyView> {
        self.order
            .iter()
            .rev()
            .take(limit)
            .filter_map(|id| self.anomaly(id))
            .collect()
    }

    /// Every validator heard from, with its lag and reputation.
    pub fn validators(&self) -> Vec<ValidatorView> {
        let top = self
            .validators
            .values()
            .map(|v| v.height)
            .max()
            .unwrap_or(0);
        self.validators
            .values()
            .map(|v| {
                let index =
                    v.id.rsplit_once('-')
                        .and_then(|(_, n)| n.parse::<u32>().ok())
                        .and_then(|n| n.checked_sub(1));
                let (proposed, voted) = index
                    .and_then(|i| self.reputation.1.get(&i).copied())
                    .unwrap_or((0, 0));
                ValidatorView {
                    lag: top - v.height,
                    proposed,
                    voted,
                    ..v.clone()
                }
            })
            .collect()
    }

    /// The newest `limit` blocks, newest first.
    pub fn blocks(&self, limit: usize) -> Vec<BlockView> {
        self.blocks.values().rev().take(limit).cloned().collect()
    }

    /// One anomaly, if its block is kept.
    pub fn anomaly(&self, id: &str) -> Option<AnomalyView> {
        let height = *self.anomalies.get(id)?;
        let b = self.blocks.get(&height);
        let policies = self.policies.get(id).cloned().unwrap_or_default();
        let acks = policies
            .iter()
            .filter_map(|p| Some((p.id.clone(), self.acks.get(&p.id)?.clone())))
            .collect();
        Some(AnomalyView {
            id: id.to_string(),
            height,
            block: b.map(|b| b.block.clone()).unwrap_or_default(),
            time_ms: b.map(|b| b.time_ms).unwrap_or(0),
            policies,
            acks,
        })
    }
}

/// The view's shell: subscribed to the validators' announcements.
pub struct Watch {
    pub view: Mutex<View>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Watch {
    /// Subscribes and keeps the view current; what does not verify goes to
    /// the DLQ with the reason, signed by the ledger.
    pub async fn start(
        bus: Arc<dyn Bus>,
        signer: Arc<Signer>,
        keyring: Keyring,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Watch>, String> {
        let watch = Arc::new(Watch {
            view: Mutex::default(),
            tasks: Mutex::default(),
        });
        for subject in [
            ben_mesh_wire::COMMITS_SUBJECT,
            ben_mesh_wire::REPUTATION_SUBJECT,
            ben_mesh_wire::POLICY_SUBJECT,
            ben_mesh_wire::ACK_SUBJECT,
        ] {
            let mut sub = bus
                .subscribe(subject, None)
                .await
                .map_err(|e| format!("subscribing to {subject}: {e}"))?;
            let (w, bus, signer, keyring, clock) = (
                watch.clone(),
                bus.clone(),
                signer.clone(),
                keyring.clone(),
                clock.clone(),
            );
            let task = tokio::spawn(async move {
                while let Some(m) = sub.next().await {
                    let now_ms = (clock.now_ns() / 1_000_000).max(0) as u64;
                    let r = w.take(subject, &m.payload, &keyring, now_ms);
                    if let Err(e) = r {
                        let dl = crate::dead_letter(subject, &e, &m.payload, clock.now_ns());
                        if let Err(e) = bus
                            .publish(crate::subjects::DLQ, signer.seal_bytes(&dl))
                            .await
                        {
                            tracing::error!(%subject, error = %e, "a refused CyberMesh announcement could not be dead-lettered");
                        }
                    }
                }
            });
            if let Ok(mut t) = watch.tasks.lock() {
                t.push(task);
            }
        }
        Ok(watch)
    }

    fn take(
        &self,
        subject: &str,
        bytes: &[u8],
        keyring: &Keyring,
        now_ms: u64,
    ) -> Result<(), String> {
        // Verified before the view is locked: the API's readers do not
        // wait on signature checks (a policy message carries a whole block).
        enum Verified {
            Commit(CommitEvent),
            Reputation(ReputationEvent),
            Policy(PolicyEvent),
            Ack(PolicyAck),
        }
        let open = |e: ben_wire::WireError| e.to_string();
        let v = match subject {
            ben_mesh_wire::COMMITS_SUBJECT => Verified::Commit(
                ben_wire::open_bytes(bytes, keyring)
                    .map_err(open)?
                    .into_inner(),
            ),
            ben_mesh_wire::REPUTATION_SUBJECT => Verified::Reputation(
                ben_wire::open_bytes(bytes, keyring)
                    .map_err(open)?
                    .into_inner(),
            ),
            ben_mesh_wire::ACK_SUBJECT => Verified::Ack(
                ben_wire::open_bytes(bytes, keyring)
                    .map_err(open)?
                    .into_inner(),
            ),
            _ => Verified::Policy(
                ben_wire::open_bytes(bytes, keyring)
                    .map_err(open)?
                    .into_inner(),
            ),
        };
        let mut view = self.view.lock().map_err(|_| "poisoned".to_string())?;
        match v {
            Verified::Commit(ev) => view.commit(ev, now_ms),
            Verified::Reputation(ev) => view.reputation(ev),
            Verified::Policy(ev) => view.policy(ev),
            Verified::Ack(ev) => view.ack(ev, now_ms),
        }
        Ok(())
    }

    /// Stops listening.
    pub fn stop(&self) {
        if let Ok(t) = self.tasks.lock() {
            for h in t.iter() {
                h.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ben_mesh_wire::{BlockPolicy, ValidatorReputation};

    fn commit(v: &str, height: u64, block: &str, anomalies: &[&str], round: u64) -> CommitEvent {
        CommitEvent {
            round,
            validator: v.into(),
            height,
            block: block.into(),
            time_ms: 1_000 + height,
            state_root: format!("root{height}"),
            anomalies: anomalies.iter().map(|s| s.to_string()).collect(),
            ..CommitEvent::default()
        }
    }

    #[test]
    fn validators_blocks_and_anomalies() {
        let mut v = View::default();
        for h in 1..=5 {
            for id in ["validator-1", "validator-2", "validator-3"] {
                let a: &[&str] = if h == 3 { &["an-1", "an-2"] } else { &[] };
                v.commit(commit(id, h, &format!("b{h}"), a, 10 + h), 50_000 + h);
            }
        }
        // validator-4 is behind.
        v.commit(commit("validator-4", 2, "b2", &[], 12), 40_000);
        v.reputation(ReputationEvent {
            validator: "validator-1".into(),
            height: 5,
            validators: vec![ValidatorReputation {
                index: 3,
                proposed: 1,
                voted: 2,
            }],
        });
        // An older reputation does not overwrite a newer one.
        v.reputation(ReputationEvent {
            validator: "validator-2".into(),
            height: 4,
            validators: vec![],
        });
        v.policy(PolicyEvent {
            validator: "validator-1".into(),
            height: 3,
            policies: vec![BlockPolicy {
                id: "p1".into(),
                action: "drop".into(),
                target: "10.0.0.9/32".into(),
                expires_at_ms: 9_000,
                anomalies: vec!["an-2".into(), "an-3-late".into()],
                ..Default::default()
            }],
            ..PolicyEvent::default()
        });
        let vals = v.validators();
        assert_eq!(vals.len(), 4);
        let four = vals.iter().find(|x| x.id == "validator-4").unwrap();
        assert_eq!((four.height, four.lag, four.round), (2, 3, 12));
        assert_eq!((four.proposed, four.voted), (1, 2));
        let one = &vals[0];
        assert_eq!((one.height, one.lag, one.last_commit_ms), (5, 0, 50_005));
        let blocks = v.blocks(2);
        assert_eq!(blocks.iter().map(|b| b.height).collect::<Vec<_>>(), [5, 4]);
        assert_eq!(blocks[0].announced_by.len(), 3);
        let a = v.anomaly("an-2").unwrap();
        assert_eq!((a.height, a.block.as_str()), (3, "b3"));
        assert_eq!(a.policies.len(), 1);
        assert_eq!(a.policies[0].target, "10.0.0.9/32");
        assert!(v.anomaly("an-1").unwrap().policies.is_empty());
        // An anomaly whose policy came before its commit announcement (on
        // Kafka the two topics keep no order between them) is kept, with
        // the policy: the policy's certified block commits it.
        assert_eq!(v.anomaly("an-3-late").unwrap().policies.len(), 1);
        assert!(v.anomaly("unknown").is_none());
        assert!(v.forks.is_empty());
        // Acks attach to the anomaly through its policy; one agent's
        // repeated ack counts once.
        let ack = |agent: &str, status: &str| PolicyAck {
            agent: agent.into(),
            policy: "p1".into(),
            status: status.into(),
            target: "10.0.0.9/32".into(),
            ..PolicyAck::default()
        };
        v.ack(ack("agent-1", "applied"), 70_000);
        v.ack(ack("agent-1", "applied"), 70_001);
        v.ack(ack("agent-2", "failed"), 70_002);
        let a = v.anomaly("an-2").unwrap();
        assert_eq!(a.acks["p1"].len(), 2);
        assert_eq!(a.acks["p1"][0].at_ms, 70_000);
        let t = v.totals();
        assert_eq!((t.height, t.anomalies, t.policies), (5, 3, 1));
        assert_eq!(
            t.acks,
            BTreeMap::from([("applied".into(), 1), ("failed".into(), 1)])
        );
        // Newest first: an-3-late came with the policy, after an-1, an-2.
        let recent: Vec<_> = v.recent(2).into_iter().map(|a| a.id).collect();
        assert_eq!(recent, ["an-3-late", "an-2"]);
        // A different block at a kept height is a fork: shown, not merged.
        v.commit(commit("validator-4", 3, "other", &[], 13), 60_000);
        assert_eq!(v.forks, [3]);
        assert_eq!(
            v.blocks(10).iter().find(|b| b.height == 3).unwrap().block,
            "b3"
        );
    }

    #[test]
    fn the_view_is_bounded() {
        let mut v = View::default();
        for h in 1..=(BLOCKS as u64 + 10) {
            let id = format!("an-{h}");
            v.commit(commit("validator-1", h, &format!("b{h}"), &[&id], h), h);
        }
        assert_eq!(v.blocks(usize::MAX).len(), BLOCKS);
        assert_eq!(v.blocks(1)[0].height, BLOCKS as u64 + 10);
        // A commit older than everything kept is not taken back in.
        v.commit(commit("validator-2", 1, "b1", &[], 1), 1);
        assert_eq!(v.blocks(usize::MAX).len(), BLOCKS);
        assert!(v.blocks(usize::MAX).iter().all(|b| b.height > 10));
    }
}
