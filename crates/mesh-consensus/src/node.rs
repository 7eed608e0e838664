//! One validator's consensus: the block tree, the pacemaker, vote and
//! timeout collection, block sync and the commit rule, around the
//! [`SafetyRules`]. Sans-I/O: the shell (or the simulator) feeds it
//! messages and the time, and carries out the [`Action`]s it returns,
//! **in order** (a `PersistSafety` must be durable before any later
//! `Send`/`Broadcast` leaves).

use crate::crypto::Crypto;
use crate::safety::{SafetyRules, SafetyState};
use crate::types::*;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Validators in the set (n = 3f + 1 for the best tolerance).
    pub n: usize,
    /// This validator's index.
    pub me: NodeId,
    /// Round timeout right after a commit (it grows ×1.5 a round since).
    pub base_timeout: Millis,
    /// The longest a round timeout grows to.
    pub max_timeout: Millis,
    /// An idle leader proposes an empty block this long after its round
    /// began (the seed's 500 ms).
    pub heartbeat: Millis,
    /// At most this many transactions per block.
    pub max_block_txs: usize,
    /// At most this many payload bytes per block.
    pub max_block_bytes: usize,
    /// Blocks per block-sync response.
    pub fetch_max: u32,
    /// A block request unanswered this long goes to another validator.
    pub fetch_retry: Millis,
    /// Committed blocks kept in memory below the newest (served to peers
    /// that are behind).
    pub keep_committed: u64,
    /// A proposal whose time is further ahead of this validator's clock
    /// is not voted for.
    pub max_clock_ahead: Millis,
}

impl Config {
    /// Defaults for `n` validators, this one `me`.
    pub fn new(n: usize, me: NodeId) -> Config {
        Config {
            n,
            me,
            base_timeout: 1_500,
            max_timeout: 12_000,
            heartbeat: 500,
            max_block_txs: 4_000,
            max_block_bytes: 2 << 20,
            fetch_max: 64,
            fetch_retry: 400,
            keep_committed: 1_024,
            max_clock_ahead: 5_000,
        }
    }

    /// Tolerated faults.
    pub fn f(&self) -> usize {
        (self.n - 1) / 3
    }

    /// Votes (or timeouts) a certificate needs: n - f (2f + 1 when
    /// n = 3f + 1), so any two quorums share an honest validator.
    pub fn quorum(&self) -> usize {
        self.n - self.f()
    }

    /// The leader of `round` (round-robin).
    pub fn leader(&self, round: Round) -> NodeId {
        (round % self.n as u64) as NodeId
    }
}

/// Where a validator starts from: the last block it committed.
#[derive(Clone, Debug)]
pub struct Root {
    /// The block.
    pub block: Block,
    /// The QC certifying it.
    pub qc: QuorumCert,
    /// The commit certificate that committed it.
    pub cert: QuorumCert,
}

impl Root {
    /// A chain's start.
    pub fn genesis(g: &Block) -> Root {
        Root {
            block: g.clone(),
            qc: g.genesis_qc(),
            cert: g.genesis_qc(),
        }
    }
}

/// What a validator keeps across a crash: its safety state, its last
/// commit, and its block store (the blocks it stored and its highest QC).
#[derive(Clone, Debug)]
pub struct Durable {
    /// The safety rules' state.
    pub safety: SafetyState,
    /// The last committed block.
    pub root: Root,
    /// Uncommitted blocks it stored (any order).
    pub blocks: Vec<Block>,
    /// Committed blocks below the root, newest first, as many as it
    /// serves to validators further behind (`keep_committed`); the
    /// validator's block table has them.
    pub committed: Vec<Block>,
    /// Its highest QC.
    pub hqc: Option<QuorumCert>,
    /// Its highest TC (without it, a validator that voted in the round a
    /// TC led to would restart a round behind its own vote, unable to
    /// vote or time out there).
    pub htc: Option<TimeoutCert>,
}

impl Durable {
    /// A fresh validator's.
    pub fn genesis(g: &Block) -> Durable {
        Durable {
            safety: SafetyState::default(),
            root: Root::genesis(g),
            blocks: vec![],
            committed: vec![],
            hqc: None,
            htc: None,
        }
    }
}

/// Where the leader's transactions come from.
pub trait Pool {
    /// Transactions for a new block: none already in `pending` (the
    /// uncommitted blocks it extends), within the limits. Does not remove
    /// them: the shell removes what commits.
    fn batch(&mut self, pending: &[&Block], max_txs: usize, max_bytes: usize) -> Vec<Vec<u8>>;
    /// `block` committed: its transactions are not to be proposed again.
    /// Called as the core commits, before the step's actions reach the
    /// shell (a leader may propose in the same step).
    fn committed(&mut self, block: &Block);
}

/// What the shell must do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Make the safety state durable before carrying out any later action.
    PersistSafety(SafetyState),
    /// Store a block (it will be voted on or extended).
    StoreBlock(Block),
    /// Store the new highest QC.
    StoreQc(QuorumCert),
    /// Store the new highest TC.
    StoreTc(TimeoutCert),
    /// Send to one validator.
    Send {
        /// To whom.
        to: NodeId,
        /// What.
        msg: Envelope,
    },
    /// Send to every other validator.
    Broadcast(Envelope),
    /// A block is committed (heights ascending, none skipped); `qc`
    /// certifies it, `cert` is the commit certificate that committed it.
    Commit {
        /// The block.
        block: Block,
        /// Its QC.
        qc: QuorumCert,
        /// The commit certificate.
        cert: QuorumCert,
    },
    /// A leader proposed two blocks in one round: the evidence.
    Equivocation {
        /// The leader.
        author: NodeId,
        /// The round.
        round: Round,
        /// The first proposal seen (accepted).
        first: Box<Proposal>,
        /// The second (refused).
        second: Box<Proposal>,
    },
}

/// Counters.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Messages or parts refused, by reason.
    pub refused: BTreeMap<&'static str, u64>,
    /// Votes signed (new ones).
    pub votes: u64,
    /// Timeouts signed.
    pub timeouts: u64,
    /// Blocks proposed.
    pub proposals: u64,
    /// Blocks committed.
    pub commits: u64,
    /// Block requests sent.
    pub fetches: u64,
    /// TCs formed.
    pub tcs: u64,
}

/// A block asked for.
#[derive(Clone, Copy, Debug)]
struct Want {
    /// When the last request went out.
    sent: Millis,
    /// To whom.
    to: NodeId,
    /// Requests so far (each to another validator).
    tries: usize,
    /// The block's height.
    height: Height,
}

/// One validator's consensus state machine.
pub struct Node<C: Crypto> {
    cfg: Config,
    crypto: C,
    chain: Hash,
    genesis_qc: QuorumCert,
    safety: SafetyRules,
    blocks: HashMap<Hash, Block>,
    /// Committed block ids by height (recent ones).
    committed_ids: BTreeMap<Height, Hash>,
    root: Root,
    hqc: QuorumCert,
    hcc: QuorumCert,
    htc: Option<TimeoutCert>,
    round: Round,
    round_started: Millis,
    deadline: Millis,
    propose_at: Option<Millis>,
    proposed: Option<Round>,
    my_timeout: Option<Timeout>,
    votes: BTreeMap<Round, HashMap<VoteData, BTreeMap<NodeId, Signature>>>,
    timeouts: BTreeMap<Round, BTreeMap<NodeId, (Round, Signature)>>,
    seen_proposals: BTreeMap<Round, Proposal>,
    /// Blocks asked for: when, and from whom.
    want: HashMap<Hash, Want>,
    /// Fetched blocks not yet connected to the tree.
    orphans: HashMap<Hash, Block>,
    pending_qcs: Vec<QuorumCert>,
    pending_proposal: Option<(NodeId, Proposal)>,
    verified: HashSet<VoteData>,
    /// The round each peer was last sent our sync info in.
    nudged: HashMap<NodeId, Round>,
    /// Counters.
    pub stats: Stats,
}

impl<C: Crypto> Node<C> {
    /// A validator on the chain whose genesis is `genesis`, from what it
    /// kept (`Durable::genesis` the first time). Call [`Node::start`] next.
    pub fn new(cfg: Config, crypto: C, genesis: &Block, durable: Durable) -> Node<C> {
        let chain = genesis.id;
        let mut n = Node {
            safety: SafetyRules::new(durable.safety, chain, cfg.me),
            crypto,
            chain,
            genesis_qc: genesis.genesis_qc(),
            blocks: HashMap::new(),
            committed_ids: BTreeMap::new(),
            hqc: durable.root.qc.clone(),
            hcc: durable.root.cert.clone(),
            htc: durable.htc.clone(),
            round: 0,
            round_started: 0,
            deadline: 0,
            propose_at: None,
            proposed: None,
            my_timeout: None,
            votes: BTreeMap::new(),
            timeouts: BTreeMap::new(),
            seen_proposals: BTreeMap::new(),
            want: HashMap::new(),
            orphans: HashMap::new(),
            pending_qcs: vec![],
            pending_proposal: None,
            verified: HashSet::new(),
            nudged: HashMap::new(),
            stats: Stats::default(),
            root: durable.root.clone(),
            cfg,
        };
        let root = &durable.root.block;
        n.committed_ids.insert(root.height, root.id);
        n.blocks.insert(root.id, root.clone());
        // The committed chain below the root, while it links.
        let mut want = root.parent;
        for b in durable.committed.iter().take(n.cfg.keep_committed as usize) {
            if b.id != want || b.compute_id(&chain) != b.id {
                break;
            }
            want = b.parent;
            n.committed_ids.insert(b.height, b.id);
            n.blocks.insert(b.id, b.clone());
        }
        let mut stored = durable.blocks;
        stored.sort_by_key(|b| b.height);
        for b in stored {
            if b.height > root.height
                && b.compute_id(&chain) == b.id
                && n.blocks.contains_key(&b.parent)
            {
                n.blocks.insert(b.id, b);
            }
        }
        let mut best = durable.root.qc.clone();
        let qcs = n.blocks.values().map(|b| &b.qc).chain(durable.hqc.as_ref());
        for qc in qcs {
            if qc.data.round > best.data.round && n.blocks.contains_key(&qc.data.block) {
                best = qc.clone();
            }
        }
        n.hqc = best;
        n
    }

    /// The chain id (genesis's id).
    pub fn chain(&self) -> Hash {
        self.chain
    }
    /// The current round.
    pub fn round(&self) -> Round {
        self.round
    }
    /// The last committed block's height.
    pub fn committed_height(&self) -> Height {
        self.root.block.height
    }
    /// The last committed block.
    pub fn root(&self) -> &Root {
        &self.root
    }
    /// The highest QC.
    pub fn hqc(&self) -> &QuorumCert {
        &self.hqc
    }
    /// The safety state.
    pub fn safety(&self) -> &SafetyState {
        self.safety.state()
    }
    /// This validator's settings.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// When [`Node::on_tick`] next has something to do.
    pub fn next_wake(&self) -> Millis {
        let mut at = self.deadline;
        if let Some(p) = self.propose_at {
            at = at.min(p);
        }
        for w in self.want.values() {
            at = at.min(w.sent + self.cfg.fetch_retry);
        }
        at
    }

    /// Enters the first round and tells the others where it is (a
    /// validator that restarted learns what it missed from their answers).
    pub fn start(&mut self, now: Millis, pool: &mut dyn Pool, out: &mut Vec<Action>) {
        let r = self.hqc.data.round.max(self.htc_round()) + 1;
        self.enter_round(r, now, pool, out);
        out.push(Action::Broadcast(self.envelope(Body::Sync)));
    }

    /// The shell got new transactions: an idle leader waiting for its
    /// heartbeat proposes now.
    pub fn on_payload(&mut self, now: Millis, pool: &mut dyn Pool, out: &mut Vec<Action>) {
        if self.propose_at.is_some() {
            self.try_propose(now, pool, out);
        }
    }

    /// Time passed: proposes a heartbeat block, times out the round,
    /// retries block requests.
    pub fn on_tick(&mut self, now: Millis, pool: &mut dyn Pool, out: &mut Vec<Action>) {
        if self.propose_at.is_some_and(|at| now >= at) {
            self.propose_at = None;
            self.try_propose(now, pool, out);
        }
        if now >= self.deadline {
            self.local_timeout(now, pool, out);
        }
        let late: Vec<(Hash, Want)> = self
            .want
            .iter()
            .filter(|(_, w)| now >= w.sent + self.cfg.fetch_retry)
            .map(|(id, w)| (*id, *w))
            .collect();
        for (id, w) in late {
            self.want.remove(&id);
            // Asked every validator, or committed past it meanwhile: give
            // up (a newer certificate will name what is needed).
            if w.tries >= self.cfg.n - 1 || w.height <= self.root.block.height {
                self.refuse("fetch_gave_up");
                continue;
            }
            let next = self.next_peer(w.to);
            self.request(id, w.height, next, w.tries + 1, now, out);
        }
    }

    /// A message from validator `from` (authenticated by the link).
    pub fn on_message(
        &mut self,
        from: NodeId,
        msg: Envelope,
        now: Millis,
        pool: &mut dyn Pool,
        out: &mut Vec<Action>,
    ) {
        if from as usize >= self.cfg.n || from == self.cfg.me {
            self.refuse("unknown_sender");
            return;
        }
        self.on_sync(from, &msg.sync, now, pool, out);
        match msg.body {
            Body::Proposal(p) => self.on_proposal(from, p, false, now, pool, out),
            Body::Vote(v) => self.on_vote(from, v, now, pool, out),
            Body::Timeout(t) => self.on_timeout(from, t, now, pool, out),
            Body::Sync => {}
            Body::BlockRequest { id, above, max } => {
                self.on_block_request(from, id, above, max, out)
            }
            Body::BlockResponse(blocks) => self.on_block_response(from, blocks, now, pool, out),
        }
        // One behind by more than a round gets our view, once a round.
        let behind = msg.sync.hqc.data.round + 1 < self.hqc.data.round
            || msg.sync.hcc.data.round < self.hcc.data.round;
        if behind && self.nudged.get(&from).is_none_or(|r| *r < self.round) {
            self.nudged.insert(from, self.round);
            out.push(Action::Send {
                to: from,
                msg: self.envelope(Body::Sync),
            });
        }
    }

    fn refuse(&mut self, why: &'static str) {
        *self.stats.refused.entry(why).or_insert(0) += 1;
    }

    fn htc_round(&self) -> Round {
        self.htc.as_ref().map_or(0, |t| t.round)
    }

    fn envelope(&self, body: Body) -> Envelope {
        Envelope {
            sync: SyncInfo {
                hqc: self.hqc.clone(),
                hcc: self.hcc.clone(),
                htc: self
                    .htc
                    .as_ref()
                    .filter(|t| t.round > self.hqc.data.round)
                    .cloned(),
            },
            body,
        }
    }

    fn next_peer(&self, after: NodeId) -> NodeId {
        let n = self.cfg.n as NodeId;
        let mut p = (after + 1) % n;
        if p == self.cfg.me {
            p = (p + 1) % n;
        }
        p
    }

    /// The round's timeout: `base_timeout` right after a commit, then
    /// half as long again for every round since (×1.5: a round lost to a
    /// crashed leader or a quorum that just came back costs seconds, not
    /// the doubling's 12), up to `max_timeout`.
    fn timeout_for(&self, round: Round) -> Millis {
        let since = round.saturating_sub(self.root.block.round + 2).min(32);
        let mut t = self.cfg.base_timeout;
        for _ in 0..since {
            if t >= self.cfg.max_timeout {
                break;
            }
            t = t.saturating_mul(3) / 2;
        }
        t.min(self.cfg.max_timeout)
    }

    // --- verification at the edge ------------------------------------

    fn verify_qc(&mut self, qc: &QuorumCert) -> bool {
        if qc.votes.is_empty() && qc.data == self.genesis_qc.data {
            return true;
        }
        if self.verified.contains(&qc.data) {
            return true;
        }
        if qc.votes.len() < self.cfg.quorum() || qc.votes.len() > self.cfg.n {
            self.refuse("qc_too_few_votes");
            return false;
        }
        if !ascending_below(qc.votes.iter().map(|v| v.0), self.cfg.n) {
            self.refuse("qc_signers");
            return false;
        }
        let d = qc.data.digest(&self.chain);
        let items: Vec<_> = qc.votes.iter().map(|(a, s)| (*a, d, *s)).collect();
        if !self.crypto.verify_all(&items) {
            self.refuse("qc_signature");
            return false;
        }
        if self.verified.len() > 4_096 {
            self.verified.clear();
        }
        self.verified.insert(qc.data);
        true
    }

    fn verify_tc(&mut self, tc: &TimeoutCert) -> bool {
        if tc.signers.len() < self.cfg.quorum() || tc.signers.len() > self.cfg.n {
            self.refuse("tc_too_few_timeouts");
            return false;
        }
        if !ascending_below(tc.signers.iter().map(|s| s.0), self.cfg.n) {
            self.refuse("tc_signers");
            return false;
        }
        let items: Vec<_> = tc
            .signers
            .iter()
            .map(|(a, r, s)| (*a, timeout_digest(&self.chain, tc.round, *r), *s))
            .collect();
        if !self.crypto.verify_all(&items) {
            self.refuse("tc_signature");
            return false;
        }
        true
    }

    // --- sync ----------------------------------------------------------

    fn on_sync(
        &mut self,
        from: NodeId,
        s: &SyncInfo,
        now: Millis,
        pool: &mut dyn Pool,
        out: &mut Vec<Action>,
    ) {
        if s.hcc.data.round > self.hcc.data.round && s.hcc.data.height > self.root.block.height {
            let qc = s.hcc.clone();
            if self.verify_qc(&qc) {
                self.use_qc(from, qc, now, pool, out);
            }
        }
        if s.hqc.data.round > self.hqc.data.round {
            let qc = s.hqc.clone();
            if self.verify_qc(&qc) {
                self.use_qc(from, qc, now, pool, out);
            }
        }
        if let Some(tc) = &s.htc {
            if tc.round > self.htc_round() && self.verify_tc(tc) {
                self.use_tc(tc.clone(), now, pool, out);
            }
        }
    }

    /// A verified QC: insert it now if its block is here, else fetch the
    /// block from `from` and insert it when it arrives.
    fn use_qc(
        &mut self,
        from: NodeId,
        qc: QuorumCert,
        now: Millis,
        pool: &mut dyn Pool,
        out: &mut Vec<Action>,
    ) {
        if self.blocks.contains_key(&qc.data.block) {
            self.insert_qc(qc, now, pool, out);
        } else if qc.data.height > self.root.block.height {
            let id = qc.data.block;
            if self.pending_qcs.len() >= 16 {
                self.pending_qcs.remove(0);
            }
            let height = qc.data.height;
            self.pending_qcs.push(qc);
            self.fetch(id, height, from, now, out);
        }
    }

    fn use_tc(&mut self, tc: TimeoutCert, now: Millis, pool: &mut dyn Pool, out: &mut Vec<Action>) {
        if tc.round <= self.htc_round() {
            return;
        }
        let next = tc.round + 1;
        out.push(Action::StoreTc(tc.clone()));
        self.htc = Some(tc);
        self.enter_round(next, now, pool, out);
    }

    /// A verified QC whose block is in the tree.
    fn insert_qc(
        &mut self,
        qc: QuorumCert,
        now: Millis,
        pool: &mut dyn Pool,
        out: &mut Vec<Action>,
    ) {
        if let Some((parent, height)) = qc.data.commits() {
            if height > self.root.block.height && qc.data.round > self.hcc.data.round {
                self.commit(parent, &qc, pool, out);
            }
        }
        if qc.data.round > self.hqc.data.round {
            self.hqc = qc.clone();
            out.push(Action::StoreQc(qc.clone()));
        }
        self.enter_round(qc.data.round + 1, now, pool, out);
    }

    fn commit(&mut self, id: Hash, cert: &QuorumCert, pool: &mut dyn Pool, out: &mut Vec<Action>) {
        // The chain from `id` down to the root, then committed upwards.
        let mut chain = vec![];
        let mut at = id;
        let mut child_qc = None;
        // `cert` certifies `id`'s child: its block carries `id`'s QC.
        if let Some(child) = self.blocks.get(&cert.data.block) {
            child_qc = Some(child.qc.clone());
        }
        loop {
            let Some(b) = self.blocks.get(&at) else {
                self.refuse("commit_missing_block");
                return;
            };
            if b.height <= self.root.block.height {
                if b.id != self.root.block.id {
                    // Two different blocks at one committed height: a
                    // safety violation somewhere; never follow it.
                    self.refuse("commit_conflicts_with_root");
                    return;
                }
                break;
            }
            chain.push(b.clone());
            at = b.parent;
        }
        let Some(mut qc) = child_qc else {
            self.refuse("commit_missing_block");
            return;
        };
        // Top block first in `chain`: its QC is the child's; each lower
        // one's is the block above it's `qc`.
        let mut qcs = Vec::with_capacity(chain.len());
        for b in &chain {
            qcs.push(qc.clone());
            qc = b.qc.clone();
        }
        for (b, q) in chain.into_iter().zip(qcs).rev() {
            self.committed_ids.insert(b.height, b.id);
            self.root = Root {
                block: b.clone(),
                qc: q.clone(),
                cert: cert.clone(),
            };
            self.stats.commits += 1;
            // The pool hears of it now: a proposal later in this same
            // step must not carry its transactions again.
            pool.committed(&b);
            out.push(Action::Commit {
                block: b,
                qc: q,
                cert: cert.clone(),
            });
        }
        self.hcc = cert.clone();
        self.prune();
    }

    fn prune(&mut self) {
        let h = self.root.block.height;
        if !h.is_multiple_of(64) {
            return;
        }
        let keep_from = h.saturating_sub(self.cfg.keep_committed);
        let committed = &self.committed_ids;
        self.blocks.retain(|id, b| {
            b.height >= keep_from && (b.height > h || committed.get(&b.height) == Some(id))
        });
        self.committed_ids = self.committed_ids.split_off(&keep_from);
        let r = self.root.block.round;
        self.seen_proposals = self.seen_proposals.split_off(&r.saturating_sub(16));
    }

    fn fetch(
        &mut self,
        id: Hash,
        height: Height,
        from: NodeId,
        now: Millis,
        out: &mut Vec<Action>,
    ) {
        // Asked for, here, or fetched and waiting for its ancestors: asking
        // again would let every message that names it (and a Byzantine
        // twin answering each request twice) multiply the requests.
        if self.want.contains_key(&id)
            || self.blocks.contains_key(&id)
            || self.orphans.contains_key(&id)
        {
            return;
        }
        if height <= self.root.block.height {
            return;
        }
        if self.want.len() >= 64 {
            self.refuse("fetch_queue_full");
            return;
        }
        self.request(id, height, from, 1, now, out);
    }

    fn request(
        &mut self,
        id: Hash,
        height: Height,
        to: NodeId,
        tries: usize,
        now: Millis,
        out: &mut Vec<Action>,
    ) {
        let from = to;
        self.want.insert(
            id,
            Want {
                sent: now,
                to,
                tries,
                height,
            },
        );
        self.stats.fetches += 1;
        out.push(Action::Send {
            to: from,
            msg: self.envelope(Body::BlockRequest {
                id,
                above: self.root.block.height,
                max: self.cfg.fetch_max,
            }),
        });
    }

    fn on_block_request(
        &mut self,
        from: NodeId,
        id: Hash,
        above: Height,
        max: u32,
        out: &mut Vec<Action>,
    ) {
        let mut blocks = vec![];
        let mut at = id;
        while blocks.len() < max.min(self.cfg.fetch_max) as usize {
            let Some(b) = self.blocks.get(&at) else { break };
            if b.height <= above {
                break;
            }
            blocks.push(b.clone());
            at = b.parent;
        }
        if !blocks.is_empty() {
            out.push(Action::Send {
                to: from,
                msg: self.envelope(Body::BlockResponse(blocks)),
            });
        }
    }

    fn on_block_response(
        &mut self,
        from: NodeId,
        blocks: Vec<Block>,
        now: Millis,
        pool: &mut dyn Pool,
        out: &mut Vec<Action>,
    ) {
        let Some(top) = blocks.first() else { return };
        if !self.want.contains_key(&top.id) {
            self.refuse("block_not_asked_for");
            return;
        }
        // A hash chain down from a block we asked for (because a verified
        // certificate named it): each block's id is its content's hash and
        // each names the next as its parent.
        for (i, b) in blocks.iter().enumerate() {
            let linked = match blocks.get(i + 1) {
                Some(p) => b.parent == p.id && b.height == p.height + 1,
                None => true,
            };
            if !linked || b.compute_id(&self.chain) != b.id || b.parent != b.qc.data.block {
                self.refuse("block_response_broken");
                return;
            }
        }
        self.want.remove(&top.id);
        let Some(last) = blocks.last() else { return };
        let last_parent = last.parent;
        let last_height = last.height;
        for b in blocks {
            self.orphans.insert(b.id, b);
        }
        if self.orphans.len() > 4 * self.cfg.fetch_max as usize {
            self.orphans.clear();
            self.refuse("orphans_dropped");
            return;
        }
        if !self.blocks.contains_key(&last_parent) {
            if last_height > self.root.block.height + 1 {
                self.fetch(last_parent, last_height - 1, from, now, out);
            } else {
                // It does not reach our committed chain: another branch.
                self.orphans.clear();
                self.refuse("block_response_off_chain");
            }
            return;
        }
        self.adopt_orphans(out);
        self.retry_pending(now, pool, out);
    }

    /// Moves fetched blocks whose parent is in the tree into it, lowest
    /// first.
    fn adopt_orphans(&mut self, out: &mut Vec<Action>) {
        let mut ready: Vec<Block> = self.orphans.drain().map(|(_, b)| b).collect();
        ready.sort_by_key(|b| b.height);
        for b in ready {
            if b.height > self.root.block.height && self.blocks.contains_key(&b.parent) {
                out.push(Action::StoreBlock(b.clone()));
                self.blocks.insert(b.id, b);
            }
        }
    }

    fn retry_pending(&mut self, now: Millis, pool: &mut dyn Pool, out: &mut Vec<Action>) {
        let qcs = std::mem::take(&mut self.pending_qcs);
        let mut rest = vec![];
        for qc in qcs {
            if self.blocks.contains_key(&qc.data.block) {
                self.insert_qc(qc, now, pool, out);
            } else if qc.data.height > self.root.block.height {
                rest.push(qc);
            }
        }
        self.pending_qcs.extend(rest);
        if let Some((from, p)) = self.pending_proposal.take() {
            if self.blocks.contains_key(&p.block.parent) {
                self.on_proposal(from, p, true, now, pool, out);
            } else {
                self.pending_proposal = Some((from, p));
            }
        }
    }

    // --- the pacemaker --------------------------------------------------

    fn enter_round(
        &mut self,
        round: Round,
        now: Millis,
        pool: &mut dyn Pool,
        out: &mut Vec<Action>,
    ) {
        if round <= self.round {
            return;
        }
        self.round = round;
        self.round_started = now;
        self.deadline = now + self.timeout_for(round);
        self.propose_at = None;
        let keep = round.saturating_sub(2);
        self.votes = self.votes.split_off(&keep);
        self.timeouts = self.timeouts.split_off(&keep);
        self.try_propose(now, pool, out);
    }

    fn local_timeout(&mut self, now: Millis, pool: &mut dyn Pool, out: &mut Vec<Action>) {
        let r = self.round;
        self.deadline = now + self.timeout_for(r);
        if let Some(t) = self.my_timeout.as_ref().filter(|t| t.round == r) {
            // Said already: say it again (it may have been lost).
            out.push(Action::Broadcast(self.envelope(Body::Timeout(t.clone()))));
            return;
        }
        let hqc = self.hqc.clone();
        let htc = self.htc.clone();
        match self.safety.timeout(r, &hqc, htc.as_ref(), &self.crypto) {
            Ok((sig, changed)) => {
                if changed {
                    out.push(Action::PersistSafety(self.safety.state().clone()));
                }
                let t = Timeout {
                    round: r,
                    hqc,
                    author: self.cfg.me,
                    sig,
                };
                self.stats.timeouts += 1;
                self.my_timeout = Some(t.clone());
                out.push(Action::Broadcast(self.envelope(Body::Timeout(t.clone()))));
                self.count_timeout(t, now, pool, out);
            }
            Err(_) => self.refuse("own_timeout_unsafe"),
        }
    }

    fn on_timeout(
        &mut self,
        from: NodeId,
        t: Timeout,
        now: Millis,
        pool: &mut dyn Pool,
        out: &mut Vec<Action>,
    ) {
        if t.author != from {
            self.refuse("timeout_author_not_sender");
            return;
        }
        if t.round < self.round {
            return; // stale
        }
        let d = timeout_digest(&self.chain, t.round, t.hqc.data.round);
        if !self.crypto.verify(t.author, &d, &t.sig) {
            self.refuse("timeout_signature");
            return;
        }
        // A reported QC above ours must be real (it raises what a TC
        // demands of the next block).
        if t.hqc.data.round > self.hqc.data.round {
            if !self.verify_qc(&t.hqc) {
                return;
            }
            self.use_qc(from, t.hqc.clone(), now, pool, out);
        }
        self.count_timeout(t, now, pool, out);
    }

    fn count_timeout(
        &mut self,
        t: Timeout,
        now: Millis,
        pool: &mut dyn Pool,
        out: &mut Vec<Action>,
    ) {
        let r = t.round;
        let set = self.timeouts.entry(r).or_default();
        set.insert(t.author, (t.hqc.data.round, t.sig));
        let count = set.len();
        // Join rule: f + 1 validators gave up on our round, so at least
        // one honest one did; give up too, so a TC can form.
        if count > self.cfg.f()
            && r == self.round
            && self.my_timeout.as_ref().is_none_or(|m| m.round != r)
        {
            self.local_timeout(now, pool, out);
        }
        let Some(set) = self.timeouts.get(&r) else {
            return;
        };
        if set.len() >= self.cfg.quorum() && r > self.htc_round() {
            let tc = TimeoutCert {
                round: r,
                signers: set.iter().map(|(a, (q, s))| (*a, *q, *s)).collect(),
            };
            self.stats.tcs += 1;
            self.use_tc(tc, now, pool, out);
            // Formed TCs are broadcast: it brings every round together.
            out.push(Action::Broadcast(self.envelope(Body::Sync)));
        }
    }

    fn try_propose(&mut self, now: Millis, pool: &mut dyn Pool, out: &mut Vec<Action>) {
        let r = self.round;
        // Voted or timed out in this round already: a leader that crashed
        // after proposing must not propose again (that would equivocate).
        if self.cfg.leader(r) != self.cfg.me
            || self.proposed == Some(r)
            || r <= self.safety.state().last_voted_round
        {
            return;
        }
        let tc = if self.hqc.data.round + 1 == r {
            None
        } else if self.htc_round() + 1 == r {
            // A block after a TC must extend a QC as high as any its
            // signers reported; a leader without one cannot lead.
            if self.hqc.data.round < self.htc.as_ref().map_or(0, |t| t.highest_hqc_round()) {
                self.refuse("leader_qc_below_tc");
                return;
            }
            self.htc.clone()
        } else {
            return;
        };
        let Some(parent) = self.blocks.get(&self.hqc.data.block) else {
            return;
        };
        let mut pending = vec![];
        let mut at = parent;
        while at.height > self.root.block.height {
            pending.push(at);
            match self.blocks.get(&at.parent) {
                Some(p) => at = p,
                None => break,
            }
        }
        let payload = pool.batch(&pending, self.cfg.max_block_txs, self.cfg.max_block_bytes);
        let urgent = !payload.is_empty() || pending.iter().any(|b| !b.payload.is_empty());
        let at = self.round_started + self.cfg.heartbeat;
        if !urgent && now < at {
            self.propose_at = Some(at);
            return;
        }
        let mut block = Block {
            id: Hash::ZERO,
            round: r,
            height: parent.height + 1,
            parent: parent.id,
            qc: self.hqc.clone(),
            author: self.cfg.me,
            time: now.max(parent.time + 1),
            payload: payload.into(),
        };
        block.id = block.compute_id(&self.chain);
        let p = Proposal {
            sig: self.crypto.sign(&proposal_digest(&self.chain, &block.id)),
            block,
            tc,
        };
        self.proposed = Some(r);
        self.propose_at = None;
        self.stats.proposals += 1;
        // Its own vote first: the proposal leaves only after the safety
        // state that records it is durable.
        let me = self.cfg.me;
        let envelope = self.envelope(Body::Proposal(p.clone()));
        self.on_proposal(me, p, false, now, pool, out);
        if self.safety.state().last_voted_round == r {
            out.push(Action::Broadcast(envelope));
        } else {
            // Never send a block this validator would not vote for.
            self.refuse("own_proposal_unsafe");
        }
    }

    // --- proposals and votes --------------------------------------------

    fn on_proposal(
        &mut self,
        from: NodeId,
        p: Proposal,
        replay: bool,
        now: Millis,
        pool: &mut dyn Pool,
        out: &mut Vec<Action>,
    ) {
        let b = &p.block;
        if !replay {
            if b.round == 0 || b.compute_id(&self.chain) != b.id {
                return self.refuse("proposal_bad_id");
            }
            if b.author != self.cfg.leader(b.round) || b.author != from {
                return self.refuse("proposal_not_leader");
            }
            if from != self.cfg.me
                && !self
                    .crypto
                    .verify(b.author, &proposal_digest(&self.chain, &b.id), &p.sig)
            {
                return self.refuse("proposal_signature");
            }
            if b.parent != b.qc.data.block
                || b.round <= b.qc.data.round
                || b.height != b.qc.data.height + 1
            {
                return self.refuse("proposal_bad_parent");
            }
            if b.payload.len() > self.cfg.max_block_txs
                || b.payload_bytes() > self.cfg.max_block_bytes
            {
                return self.refuse("proposal_oversized");
            }
            if let Some(tc) = &p.tc {
                if tc.round + 1 != b.round {
                    return self.refuse("proposal_tc_round");
                }
            }
            match self.seen_proposals.get(&b.round) {
                Some(first) if first.block.id != b.id => {
                    out.push(Action::Equivocation {
                        author: b.author,
                        round: b.round,
                        first: Box::new(first.clone()),
                        second: Box::new(p.clone()),
                    });
                    return self.refuse("proposal_equivocation");
                }
                Some(_) => {
                    // Seen: the vote may have been lost; send it again.
                    self.resend_vote(b.round, b.id, out);
                    return;
                }
                None => {}
            }
            if b.round + 64 < self.round {
                return; // far stale: not worth keeping
            }
            if !self.verify_qc(&b.qc) {
                return;
            }
            if let Some(tc) = &p.tc {
                if !self.verify_tc(tc) {
                    return;
                }
            }
            self.seen_proposals.insert(b.round, p.clone());
        }
        if let Some(tc) = &p.tc {
            if tc.round > self.htc_round() {
                self.use_tc(tc.clone(), now, pool, out);
            }
        }
        if !self.blocks.contains_key(&b.parent) {
            let (parent, height) = (b.parent, b.qc.data.height);
            self.pending_proposal = Some((from, p));
            self.fetch(parent, height, from, now, out);
            return;
        }
        if b.qc.data.round > self.hqc.data.round {
            self.insert_qc(b.qc.clone(), now, pool, out);
        }
        if b.round != self.round {
            return self.refuse("proposal_not_this_round");
        }
        // Time moves forward along the chain and not far past our clock.
        let parent_time = self.blocks.get(&b.parent).map_or(0, |p| p.time);
        if b.time <= parent_time || b.time > now.saturating_add(self.cfg.max_clock_ahead) {
            return self.refuse("proposal_time");
        }
        if let std::collections::hash_map::Entry::Vacant(e) = self.blocks.entry(b.id) {
            out.push(Action::StoreBlock(b.clone()));
            e.insert(b.clone());
        }
        match self.safety.vote(b, p.tc.as_ref(), &self.crypto) {
            Ok((vote, fresh)) => {
                let next = self.cfg.leader(b.round + 1);
                let send = Action::Send {
                    to: next,
                    msg: self.envelope(Body::Vote(vote.clone())),
                };
                if fresh {
                    self.stats.votes += 1;
                    let persist = Action::PersistSafety(self.safety.state().clone());
                    #[cfg(feature = "planted-bugs")]
                    if crate::planted::on(crate::planted::Bug::VoteBeforePersist) {
                        if next != self.cfg.me {
                            out.push(send);
                        }
                        out.push(persist);
                        if next == self.cfg.me {
                            self.on_vote(next, vote, now, pool, out);
                        }
                        return;
                    }
                    out.push(persist);
                }
                if next == self.cfg.me {
                    self.on_vote(next, vote, now, pool, out);
                } else {
                    out.push(send);
                }
            }
            Err(_) => self.refuse("vote_unsafe"),
        }
    }

    fn resend_vote(&mut self, round: Round, block: Hash, out: &mut Vec<Action>) {
        let Some(v) = self.safety.state().last_vote.clone() else {
            return;
        };
        if v.data.round == round && v.data.block == block {
            let next = self.cfg.leader(round + 1);
            if next != self.cfg.me {
                out.push(Action::Send {
                    to: next,
                    msg: self.envelope(Body::Vote(v)),
                });
            }
        }
    }

    fn on_vote(
        &mut self,
        from: NodeId,
        v: Vote,
        now: Millis,
        pool: &mut dyn Pool,
        out: &mut Vec<Action>,
    ) {
        let r = v.data.round;
        if v.author != from {
            return self.refuse("vote_author_not_sender");
        }
        if self.cfg.leader(r + 1) != self.cfg.me {
            return self.refuse("vote_not_for_this_leader");
        }
        if r <= self.hqc.data.round {
            return; // a QC for that round (or later) is here already
        }
        if from != self.cfg.me
            && !self
                .crypto
                .verify(v.author, &v.data.digest(&self.chain), &v.sig)
        {
            return self.refuse("vote_signature");
        }
        let set = self.votes.entry(r).or_default().entry(v.data).or_default();
        set.insert(v.author, v.sig);
        if set.len() < self.cfg.quorum() {
            return;
        }
        let qc = QuorumCert {
            data: v.data,
            votes: set.iter().map(|(a, s)| (*a, *s)).collect(),
        };
        self.verified.insert(qc.data);
        self.use_qc(from, qc, now, pool, out);
    }
}

fn ascending_below(ids: impl Iterator<Item = NodeId>, n: usize) -> bool {
    let mut last: Option<NodeId> = None;
    for id in ids {
        if id as usize >= n || last.is_some_and(|l| l >= id) {
            return false;
        }
        last = Some(id);
    }
    true
}
