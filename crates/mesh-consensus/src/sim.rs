//! A seeded deterministic simulation of a validator set, and the checker
//! that runs on every step of it.
//!
//! One seed fixes everything: the validator count's faults (message drop,
//! delay, duplication and so reordering, partitions, crashes, crashes in
//! the middle of carrying out a step's actions, a whole-cluster restart),
//! the Byzantine validator (an equivocating leader, or twins: two
//! instances sharing one key), and the transactions. Time is simulated;
//! the same seed replays the same run, event for event.
//!
//! A crashed validator keeps its [`Durable`] state (safety state, last
//! commit, block store) and loses everything else (rounds, collected votes
//! and timeouts, fetches in flight, its mempool), as a process would.
//!
//! Checked on every step (a breach is a [`Outcome::violations`] entry):
//! * no two different blocks committed at one height (honest validators);
//! * an honest validator never signs two different votes in one round;
//! * its last voted round and its commit height never go backwards, and
//!   commits come one height at a time;
//! * every committed transaction came from a mempool, and an honest leader
//!   never proposes one already committed;
//! * every validator computes the same state root at each height, and
//!   block times rise along the chain;
//! * after the network heals (faults stop, crashed validators restart),
//!   every honest validator commits again within [`LIVENESS_BOUND`].

use crate::crypto::SimCrypto;
use crate::node::{Action, Config, Durable, Node, Pool, Root};
use crate::types::*;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};

/// After the network heals, every honest validator must commit within this
/// much simulated time.
pub const LIVENESS_BOUND: Millis = 60_000;

/// A small seeded generator (SplitMix64): the simulation's only randomness.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..hi` (`lo` when empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo)
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }
}

/// The Byzantine validator of a run, if any (at most f = 1 of them here).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Byzantine {
    /// None: every validator runs honest code.
    None,
    /// This validator, as leader, sends one block to half the others and a
    /// different one to the rest.
    Equivocator(NodeId),
    /// Two instances run with this validator's key.
    Twins(NodeId),
}

/// One run's faults, drawn from its seed.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The seed.
    pub seed: u64,
    /// Validators.
    pub n: usize,
    /// Faults stop at this time (the network heals, everyone restarts).
    pub heal_at: Millis,
    /// Probability a message is dropped (until healed).
    pub drop: f64,
    /// Probability a message is delivered twice.
    pub dup: f64,
    /// Message delay is uniform in 1..=max_delay (so messages reorder).
    pub max_delay: Millis,
    /// Partitions come and go.
    pub partitions: bool,
    /// Validators crash and restart.
    pub crashes: bool,
    /// Probability a step's actions stop part-way through (a crash
    /// between, e.g., persisting and sending).
    pub crash_mid: f64,
    /// Every validator crashes at this time and all restart 1 s later.
    pub whole_restart: Option<Millis>,
    /// The Byzantine one.
    pub byzantine: Byzantine,
    /// A transaction reaches the mempools this often.
    pub tx_every: Millis,
    /// Every message goes through [`crate::wire`] (encoded, decoded, and
    /// checked equal) on its way.
    pub through_wire: bool,
}

impl Scenario {
    /// The faults of seed `seed` with `n` validators.
    pub fn from_seed(seed: u64, n: usize) -> Scenario {
        let mut r = Rng::new(seed.wrapping_mul(31).wrapping_add(n as u64));
        let byzantine = match r.range(0, 4) {
            0 => Byzantine::Equivocator(r.range(0, n as u64) as NodeId),
            1 => Byzantine::Twins(r.range(0, n as u64) as NodeId),
            _ => Byzantine::None,
        };
        let heal_at = r.range(3_000, 15_000);
        Scenario {
            seed,
            n,
            heal_at,
            drop: [0.0, 0.02, 0.1, 0.3][r.range(0, 4) as usize],
            dup: [0.0, 0.05, 0.2][r.range(0, 3) as usize],
            max_delay: [5, 50, 300, 1_500][r.range(0, 4) as usize],
            partitions: r.chance(0.4),
            crashes: r.chance(0.5),
            crash_mid: if r.chance(0.5) { 0.02 } else { 0.0 },
            whole_restart: r.chance(0.15).then(|| r.range(1_000, heal_at)),
            byzantine,
            tx_every: [50, 200, 1_000][r.range(0, 3) as usize],
            through_wire: seed.is_multiple_of(8),
        }
    }
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Breaches of the checked properties (empty: the run passed).
    pub violations: Vec<String>,
    /// The last events, when the run was traced.
    pub trace: Vec<String>,
    /// Highest height committed by an honest validator.
    pub height: Height,
    /// From the heal to the last honest validator's first commit after it.
    pub recovery: Option<Millis>,
    /// Messages delivered.
    pub delivered: u64,
    /// Simulated time at the end.
    pub end: Millis,
}

struct Inst {
    id: NodeId,
    node: Option<Node<SimCrypto>>,
    durable: Durable,
    /// State root and the height it is at (durable: rebuilt from the
    /// committed chain in a real validator).
    state: (Height, Hash),
    pool: SimPool,
    honest: bool,
    down_until: Option<Millis>,
    max_lvr: Round,
    committed_after_heal: Option<Millis>,
}

/// A simulated mempool: transactions by id until they commit.
#[derive(Default)]
struct SimPool {
    txs: BTreeMap<u64, Vec<u8>>,
}

impl Pool for SimPool {
    fn committed(&mut self, block: &Block) {
        for tx in &block.payload {
            if let Some(t) = tx_id(tx) {
                self.txs.remove(&t);
            }
        }
    }

    fn batch(&mut self, pending: &[&Block], max_txs: usize, max_bytes: usize) -> Vec<Vec<u8>> {
        let taken: HashSet<&[u8]> = pending
            .iter()
            .flat_map(|b| b.payload.iter().map(Vec::as_slice))
            .collect();
        let mut out = vec![];
        let mut bytes = 0;
        for tx in self.txs.values() {
            if out.len() >= max_txs || bytes + tx.len() > max_bytes {
                break;
            }
            if !taken.contains(tx.as_slice()) {
                bytes += tx.len();
                out.push(tx.clone());
            }
        }
        out
    }
}

fn tx_bytes(id: u64) -> Vec<u8> {
    let mut v = b"tx:".to_vec();
    v.extend_from_slice(&id.to_le_bytes());
    v
}

fn tx_id(tx: &[u8]) -> Option<u64> {
    let rest = tx.strip_prefix(b"tx:")?;
    Some(u64::from_le_bytes(rest.try_into().ok()?))
}

struct InFlight {
    at: Millis,
    seq: u64,
    from: NodeId,
    to: usize,
    msg: Envelope,
}

impl PartialEq for InFlight {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for InFlight {
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// The simulation.
struct Sim {
    s: Scenario,
    rng: Rng,
    now: Millis,
    genesis: Block,
    insts: Vec<Inst>,
    net: BinaryHeap<InFlight>,
    seq: u64,
    /// Partition side per instance, while one is in force.
    sides: Option<Vec<bool>>,
    /// Next time partitions or crashes change.
    next_fault: Millis,
    next_tx: Millis,
    tx_count: u64,
    injected: HashSet<u64>,
    committed: HashMap<Height, Hash>,
    /// Transactions in committed blocks.
    committed_txs: HashSet<u64>,
    roots: HashMap<Height, Hash>,
    votes: HashMap<(NodeId, Round), VoteData>,
    out: Outcome,
    trace: Option<VecDeque<String>>,
    healed: bool,
}

/// Runs one scenario. `trace`: keep the last events (for a failing seed).
pub fn run(s: &Scenario, trace: bool) -> Outcome {
    let genesis = Block::genesis("ben-sim");
    let mut insts = vec![];
    let twin = match s.byzantine {
        Byzantine::Twins(t) => Some(t),
        _ => None,
    };
    for i in 0..s.n {
        insts.push(new_inst(i as NodeId, &genesis, twin != Some(i as NodeId)));
    }
    if let Some(t) = twin {
        insts.push(new_inst(t, &genesis, false));
    }
    let mut sim = Sim {
        rng: Rng::new(s.seed),
        now: 0,
        genesis,
        insts,
        net: BinaryHeap::new(),
        seq: 0,
        sides: None,
        next_fault: 500,
        next_tx: 100,
        tx_count: 0,
        injected: HashSet::new(),
        committed: HashMap::new(),
        committed_txs: HashSet::new(),
        roots: HashMap::new(),
        votes: HashMap::new(),
        out: Outcome::default(),
        trace: trace.then(VecDeque::new),
        healed: false,
        s: s.clone(),
    };
    sim.go();
    if let Some(t) = sim.trace.take() {
        sim.out.trace = t.into_iter().collect();
    }
    sim.out.end = sim.now;
    sim.out
}

fn new_inst(id: NodeId, g: &Block, honest: bool) -> Inst {
    Inst {
        id,
        node: None,
        durable: Durable::genesis(g),
        state: (0, g.id),
        pool: SimPool::default(),
        honest,
        down_until: Some(0),
        max_lvr: 0,
        committed_after_heal: None,
    }
}

impl Sim {
    fn config(&self, id: NodeId) -> Config {
        Config::new(self.s.n, id)
    }

    fn log(&mut self, line: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            if t.len() >= 400 {
                t.pop_front();
            }
            t.push_back(format!("{:>7} ms  {}", self.now, line()));
        }
    }

    fn violation(&mut self, v: String) {
        self.log(|| format!("VIOLATION: {v}"));
        if self.out.violations.len() < 20 {
            self.out.violations.push(v);
        }
    }

    fn go(&mut self) {
        let end_cap = self.s.heal_at + LIVENESS_BOUND + 5_000;
        let mut steps = 0u64;
        loop {
            steps += 1;
            if steps > 2_000_000 || self.net.len() > 1_000_000 {
                let v = format!(
                    "runaway: {steps} steps, {} messages in flight at {} ms",
                    self.net.len(),
                    self.now
                );
                self.violation(v);
                break;
            }
            // Start (and restart) what is due.
            for i in 0..self.insts.len() {
                if self.insts[i].down_until.is_some_and(|t| t <= self.now) {
                    self.restart(i);
                }
            }
            if !self.healed && self.now >= self.s.heal_at {
                self.heal();
            }
            if self.healed && self.recovered() {
                break;
            }
            if self.now > end_cap {
                let waiting: Vec<usize> = (0..self.insts.len())
                    .filter(|i| {
                        self.insts[*i].honest && self.insts[*i].committed_after_heal.is_none()
                    })
                    .collect();
                let states: Vec<String> = waiting
                    .iter()
                    .map(|i| match &self.insts[*i].node {
                        Some(n) => format!(
                            "instance {i}: round {}, committed height {}, highest QC round {} (height {}), refused {:?}",
                            n.round(),
                            n.committed_height(),
                            n.hqc().data.round,
                            n.hqc().data.height,
                            n.stats.refused
                        ),
                        None => format!("instance {i}: down"),
                    })
                    .collect();
                self.violation(format!(
                    "liveness: validators (instances) {waiting:?} did not commit within {LIVENESS_BOUND} ms of the heal: {states:#?}"
                ));
                break;
            }
            // The next event.
            let mut next = self.next_fault.min(self.next_tx);
            if !self.healed {
                next = next.min(self.s.heal_at);
            }
            if let Some(m) = self.net.peek() {
                next = next.min(m.at);
            }
            for inst in &self.insts {
                if let Some(n) = &inst.node {
                    next = next.min(n.next_wake());
                }
                if let Some(t) = inst.down_until {
                    next = next.min(t);
                }
            }
            self.now = next.max(self.now);
            if self.now >= self.next_fault {
                self.faults();
            }
            if self.now >= self.next_tx {
                self.inject();
            }
            while self.net.peek().is_some_and(|m| m.at <= self.now) {
                let Some(m) = self.net.pop() else { break };
                self.deliver(m);
            }
            for i in 0..self.insts.len() {
                let due = self.insts[i]
                    .node
                    .as_ref()
                    .is_some_and(|n| n.next_wake() <= self.now);
                if due {
                    let now = self.now;
                    let inst = &mut self.insts[i];
                    let (Some(node), pool) = (inst.node.as_mut(), &mut inst.pool) else {
                        continue;
                    };
                    let mut out = vec![];
                    node.on_tick(now, pool, &mut out);
                    self.carry_out(i, out);
                }
            }
        }
        self.out.height = self
            .insts
            .iter()
            .filter(|i| i.honest)
            .map(|i| i.durable.root.block.height)
            .max()
            .unwrap_or(0);
    }

    /// Every honest validator committed after the heal, and a little time
    /// passed (so late messages get their chance to do harm).
    fn recovered(&mut self) -> bool {
        let all = self
            .insts
            .iter()
            .filter(|i| i.honest)
            .all(|i| i.committed_after_heal.is_some());
        if all && self.out.recovery.is_none() {
            let last = self
                .insts
                .iter()
                .filter_map(|i| i.committed_after_heal)
                .max()
                .unwrap_or(self.now);
            self.out.recovery = Some(last - self.s.heal_at);
        }
        all && self.now >= self.s.heal_at + 3_000
    }

    fn heal(&mut self) {
        self.healed = true;
        self.sides = None;
        self.log(|| "network heals; crashed validators restart".into());
        for i in 0..self.insts.len() {
            if self.insts[i].node.is_none() {
                self.insts[i].down_until = Some(self.now);
                self.restart(i);
            }
        }
    }

    fn faults(&mut self) {
        self.next_fault = self.now + self.rng.range(200, 2_000);
        if self.healed {
            self.next_fault = Millis::MAX;
            return;
        }
        if let Some(t) = self.s.whole_restart {
            if self.now >= t {
                self.s.whole_restart = None;
                self.log(|| "whole cluster crashes".into());
                for i in 0..self.insts.len() {
                    self.crash(i, 1_000);
                }
                return;
            }
        }
        if self.s.partitions {
            if self.sides.is_some() || self.rng.chance(0.5) {
                self.sides = None;
            } else {
                let sides: Vec<bool> = (0..self.insts.len())
                    .map(|_| self.rng.chance(0.5))
                    .collect();
                self.log(|| format!("partition {sides:?}"));
                self.sides = Some(sides);
            }
        }
        if self.s.crashes && self.rng.chance(0.4) {
            let i = self.rng.range(0, self.insts.len() as u64) as usize;
            let down = self.rng.range(100, 4_000);
            self.crash(i, down);
        }
    }

    fn crash(&mut self, i: usize, down: Millis) {
        if self.insts[i].node.take().is_some() {
            let id = self.insts[i].id;
            self.log(|| format!("instance {i} (validator {id}) crashes for {down} ms"));
        }
        let inst = &mut self.insts[i];
        inst.pool = SimPool::default();
        inst.down_until = Some(self.now + down);
    }

    fn restart(&mut self, i: usize) {
        let cfg = self.config(self.insts[i].id);
        let crypto = SimCrypto::new(self.insts[i].id, self.s.seed);
        let inst = &mut self.insts[i];
        inst.down_until = None;
        let lvr = inst.durable.safety.last_voted_round;
        let mut node = Node::new(cfg, crypto, &self.genesis, inst.durable.clone());
        if node.committed_height() != inst.durable.root.block.height {
            let v = format!("instance {i} restarted below its durable commit");
            self.violation(v);
        }
        let mut out = vec![];
        node.start(self.now, &mut self.insts[i].pool, &mut out);
        self.insts[i].node = Some(node);
        let (hqc, ocr, round) = self.insts[i].node.as_ref().map_or((0, 0, 0), |n| {
            (n.hqc().data.round, n.safety().one_chain_round, n.round())
        });
        self.log(|| {
            format!("instance {i} starts in round {round} (last voted round {lvr}, highest QC {hqc}, one-chain round {ocr})")
        });
        self.carry_out(i, out);
    }

    fn inject(&mut self) {
        self.next_tx = self.now + self.s.tx_every;
        if self.now > self.s.heal_at + LIVENESS_BOUND {
            self.next_tx = Millis::MAX;
            return;
        }
        let id = self.tx_count;
        self.tx_count += 1;
        self.injected.insert(id);
        for i in 0..self.insts.len() {
            // Most mempools get it (the bus is at most once).
            if self.insts[i].node.is_some() && (self.healed || self.rng.chance(0.8)) {
                self.insts[i].pool.txs.insert(id, tx_bytes(id));
                let now = self.now;
                let inst = &mut self.insts[i];
                let (Some(node), pool) = (inst.node.as_mut(), &mut inst.pool) else {
                    continue;
                };
                let mut out = vec![];
                node.on_payload(now, pool, &mut out);
                self.carry_out(i, out);
            }
        }
    }

    fn deliver(&mut self, m: InFlight) {
        self.out.delivered += 1;
        let i = m.to;
        let now = self.now;
        let inst = &mut self.insts[i];
        let (Some(node), pool) = (inst.node.as_mut(), &mut inst.pool) else {
            return;
        };
        let mut out = vec![];
        let name = m.msg.body.name();
        node.on_message(m.from, m.msg, now, pool, &mut out);
        let from = m.from;
        let inflight = self.net.len();
        self.log(|| format!("{from} -> instance {i}: {name} [{inflight} in flight]"));
        self.carry_out(i, out);
    }

    fn send(&mut self, from_inst: usize, to_id: NodeId, msg: &Envelope) {
        let from = self.insts[from_inst].id;
        if self.s.through_wire {
            let bytes = crate::wire::encode(msg);
            match crate::wire::decode(&bytes) {
                Ok(m) if m == *msg => {}
                Ok(_) => self.violation(format!("a {} changed through the wire", msg.body.name())),
                Err(e) => self.violation(format!("a {} did not decode: {e}", msg.body.name())),
            }
        }
        for j in 0..self.insts.len() {
            if self.insts[j].id != to_id || j == from_inst {
                continue;
            }
            if let Some(s) = &self.sides {
                if s[j] != s[from_inst] {
                    continue;
                }
            }
            let healed = self.healed;
            if !healed && self.rng.chance(self.s.drop) {
                continue;
            }
            let copies = if !healed && self.rng.chance(self.s.dup) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let delay = if healed {
                    self.rng.range(1, 20)
                } else {
                    self.rng.range(1, self.s.max_delay + 1)
                };
                self.seq += 1;
                self.net.push(InFlight {
                    at: self.now + delay,
                    seq: self.seq,
                    from,
                    to: j,
                    msg: msg.clone(),
                });
            }
        }
    }

    fn record_vote(&mut self, author: NodeId, data: VoteData) {
        let honest = self
            .insts
            .iter()
            .filter(|i| i.id == author)
            .all(|i| i.honest);
        if !honest {
            return;
        }
        match self.votes.get(&(author, data.round)) {
            Some(d) if *d != data => {
                let v = format!(
                    "validator {author} signed two votes in round {}: {:?} and {:?}",
                    data.round, d.block, data.block
                );
                self.violation(v);
            }
            Some(_) => {}
            None => {
                self.votes.insert((author, data.round), data);
            }
        }
    }

    fn carry_out(&mut self, i: usize, actions: Vec<Action>) {
        // A crash part-way through a step's actions.
        let mut stop_at = usize::MAX;
        if !self.healed
            && self.s.crash_mid > 0.0
            && !actions.is_empty()
            && self.rng.chance(self.s.crash_mid)
        {
            stop_at = self.rng.range(0, actions.len() as u64) as usize;
        }
        for (k, a) in actions.into_iter().enumerate() {
            if k == stop_at {
                let down = self.rng.range(50, 2_000);
                self.log(|| format!("instance {i} crashes mid-step after {k} actions"));
                self.crash(i, down);
                return;
            }
            self.act(i, a);
        }
    }

    fn act(&mut self, i: usize, a: Action) {
        let id = self.insts[i].id;
        match a {
            Action::PersistSafety(s) => {
                let inst = &mut self.insts[i];
                if s.last_voted_round < inst.max_lvr && inst.honest {
                    let v = format!(
                        "instance {i}: last voted round went back from {} to {}",
                        inst.max_lvr, s.last_voted_round
                    );
                    self.violation(v);
                }
                let inst = &mut self.insts[i];
                inst.max_lvr = inst.max_lvr.max(s.last_voted_round);
                if let Some(v) = &s.last_vote {
                    let d = v.data;
                    self.record_vote(id, d);
                }
                self.insts[i].durable.safety = s;
            }
            Action::StoreBlock(b) => {
                let d = &mut self.insts[i].durable;
                if !d.blocks.iter().any(|x| x.id == b.id) {
                    d.blocks.push(b);
                }
            }
            Action::StoreTc(tc) => {
                let d = &mut self.insts[i].durable;
                if d.htc.as_ref().is_none_or(|h| h.round < tc.round) {
                    d.htc = Some(tc);
                }
            }
            Action::StoreQc(qc) => {
                let d = &mut self.insts[i].durable;
                if d.hqc.as_ref().is_none_or(|h| h.data.round < qc.data.round) {
                    d.hqc = Some(qc);
                }
            }
            Action::Send { to, msg } => {
                if let Body::Vote(v) = &msg.body {
                    self.record_vote(id, v.data);
                }
                self.send(i, to, &msg);
            }
            Action::Broadcast(msg) => {
                if let Byzantine::Equivocator(e) = self.s.byzantine {
                    if e == id {
                        if let Body::Proposal(p) = &msg.body {
                            return self.equivocate(i, p, &msg);
                        }
                    }
                }
                for to in 0..self.s.n as NodeId {
                    if to != id {
                        self.send(i, to, &msg);
                    }
                }
            }
            Action::Commit { block, qc, cert } => self.commit(i, block, qc, cert),
            Action::Equivocation { author, round, .. } => {
                let honest = self
                    .insts
                    .iter()
                    .filter(|x| x.id == author)
                    .all(|x| x.honest)
                    && self.s.byzantine != Byzantine::Equivocator(author);
                self.log(|| {
                    format!(
                        "instance {i} holds equivocation evidence against {author}, round {round}"
                    )
                });
                if honest {
                    self.violation(format!(
                        "evidence of equivocation against honest validator {author}"
                    ));
                }
            }
        }
    }

    fn equivocate(&mut self, i: usize, p: &Proposal, msg: &Envelope) {
        let id = self.insts[i].id;
        let mut alt = p.block.clone();
        match self
            .injected
            .iter()
            .copied()
            .find(|t| !alt.payload.contains(&tx_bytes(*t)))
        {
            Some(t) => alt.payload.make_mut().push(tx_bytes(t)),
            None => alt.payload.make_mut().clear(),
        }
        let chain = self.genesis.id;
        alt.id = alt.compute_id(&chain);
        let crypto = SimCrypto::new(id, self.s.seed);
        let alt_p = Proposal {
            sig: crate::crypto::Crypto::sign(&crypto, &proposal_digest(&chain, &alt.id)),
            block: alt,
            tc: p.tc.clone(),
        };
        let alt_msg = Envelope {
            sync: msg.sync.clone(),
            body: Body::Proposal(alt_p),
        };
        self.log(|| format!("validator {id} equivocates in round {}", p.block.round));
        for to in 0..self.s.n as NodeId {
            if to != id {
                let m = if to % 2 == 0 { msg } else { &alt_msg };
                self.send(i, to, m);
            }
        }
    }

    fn commit(&mut self, i: usize, block: Block, qc: QuorumCert, cert: QuorumCert) {
        let honest = self.insts[i].honest;
        let h = block.height;
        let (at, prev) = self.insts[i].state;
        if h != at + 1 {
            self.violation(format!("instance {i}: committed height {h} after {at}"));
        }
        if block.time <= self.insts[i].durable.root.block.time {
            self.violation(format!("instance {i}: block time went back at height {h}"));
        }
        if honest {
            match self.committed.get(&h) {
                Some(id) if *id != block.id => {
                    let v = format!(
                        "two blocks committed at height {h}: {:?} and {:?} (instance {i})",
                        id, block.id
                    );
                    self.violation(v);
                }
                Some(_) => {}
                None => {
                    self.committed.insert(h, block.id);
                    // An honest leader never proposes a committed
                    // transaction again.
                    let author_honest = self
                        .insts
                        .iter()
                        .filter(|x| x.id == block.author)
                        .all(|x| x.honest)
                        && self.s.byzantine != Byzantine::Equivocator(block.author);
                    for t in block.payload.iter().filter_map(|tx| tx_id(tx)) {
                        if !self.committed_txs.insert(t) && author_honest {
                            self.violation(format!("height {h} committed transaction {t} again"));
                        }
                    }
                }
            }
            for tx in &block.payload {
                if !tx_id(tx).is_some_and(|t| self.injected.contains(&t)) {
                    self.violation(format!("height {h} committed a transaction no mempool had"));
                }
            }
        }
        let mut d = blake3::Hasher::new();
        d.update(&prev.0);
        d.update(&block.id.0);
        for tx in &block.payload {
            d.update(tx);
        }
        let root = Hash(*d.finalize().as_bytes());
        if honest {
            match self.roots.get(&h) {
                Some(r) if *r != root => {
                    self.violation(format!("instance {i}: state root at height {h} differs"))
                }
                Some(_) => {}
                None => {
                    self.roots.insert(h, root);
                }
            }
        }
        let inst = &mut self.insts[i];
        inst.state = (h, root);
        for tx in &block.payload {
            if let Some(t) = tx_id(tx) {
                inst.pool.txs.remove(&t);
            }
        }
        inst.durable.blocks.retain(|b| b.height > h);
        let old = std::mem::replace(&mut inst.durable.root, Root { block, qc, cert });
        inst.durable.committed.insert(0, old.block);
        inst.durable.committed.truncate(1_024);
        if self.healed && inst.committed_after_heal.is_none() {
            inst.committed_after_heal = Some(self.now);
        }
        self.log(|| format!("instance {i} commits height {h}"));
    }
}
