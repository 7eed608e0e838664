//! Verified anomalies waiting for a block.
//!
//! Keyed by anomaly id (never by signature bytes: the same anomaly signed
//! twice is one anomaly), bounded: when full, the lowest-confidence
//! anomaly goes (counted), or the newcomer if it is lower still. Batches
//! are taken by confidence, highest first, within a count and byte limit,
//! skipping what the uncommitted blocks already carry.
//!
//! A committed block's transactions are found here by their bytes: a
//! 64-bit fingerprint (foldhash, seeded at random per mempool, 25 ns for
//! 512 bytes) and the bytes compared. A cryptographic digest of each was
//! taken twice per validator, on arrival and when its block committed
//! (BLAKE3, 0.7 µs for 512 bytes: a fifth of the CPU of four validators
//! at 55k transactions a second). Where a fingerprint stands alone —
//! transactions committed recently, so that one arriving after its block
//! is a duplicate; those the pending blocks carry, skipped when batching —
//! two different transactions with one fingerprint (about 1 in 2^64 per
//! pair, the seed unknown outside the process) would at worst drop the
//! later as a duplicate or hold it back a block.

use ben_mesh_consensus::{Block, Hash, Pool};
use ben_mesh_detect::wire::AnomalyEvent;
use ben_wire::Verified;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;

/// The maps' hasher: seeded per map, several times faster than SipHash on
/// these keys (ids and fingerprints of transactions whose signatures were
/// checked, so not an attacker's free choice).
type Fast = foldhash::fast::RandomState;

/// What happened to an anomaly offered to the mempool.
#[derive(Debug, Clone, PartialEq)]
pub enum Offered {
    /// Now waiting for a block.
    Added,
    /// Its id (or, for an opaque transaction, its bytes) is already
    /// waiting or committed: nothing changed.
    Duplicate,
    /// Added; the full mempool let this lower-confidence one go (its id;
    /// none for an opaque transaction).
    Evicted(Option<String>),
    /// The mempool is full of higher-confidence anomalies: refused.
    Full,
}

struct Entry {
    tx: Vec<u8>,
    fp: u64,
    /// The anomaly's id; none for an opaque transaction.
    id: Option<Box<str>>,
    key: (Confidence, u64),
    /// The envelope as its signature check opened it, handed to the state
    /// machine when its block commits (so it is checked once).
    opened: Option<Verified<AnomalyEvent>>,
}

/// Policy requests waiting at most.
pub const MAX_REQUESTS: usize = 1_024;

struct Request {
    id: String,
    tx: Vec<u8>,
    fp: u64,
    /// Anomaly ids not committed when it arrived.
    needs: Vec<String>,
}

/// Where a waiting transaction is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Slot {
    Anomaly(u64),
    Request(u64),
}

/// Confidence ordered as an integer (parts per billion), so ordering is
/// total and the same everywhere.
type Confidence = u64;

/// Committed blocks whose opened envelopes wait for the state machine, at
/// most (it takes each as the block commits).
const OPENED_BLOCKS: usize = 64;

/// The mempool.
pub struct Mempool {
    max: usize,
    seq: u64,
    /// Waiting anomalies (and opaque transactions) by arrival number.
    entries: HashMap<u64, Entry, Fast>,
    by_id: HashMap<Box<str>, u64, Fast>,
    /// (confidence, newest-first arrival): the last is the most confident
    /// and, among equals, the oldest.
    order: BTreeSet<(Confidence, u64)>,
    /// Waiting transactions by (fingerprint, n): the n-th waiting with
    /// that fingerprint (almost always the only one).
    by_bytes: HashMap<(u64, u32), Slot, Fast>,
    /// The fingerprints' hasher.
    fps: foldhash::quality::RandomState,
    /// Ids committed recently: offered again, they are duplicates.
    committed: HashSet<Box<str>, Fast>,
    /// Fingerprints of transactions committed recently, whether or not
    /// they were waiting here: one that arrives after its block committed
    /// (a backlog between the bus and this mempool) is a duplicate, not a
    /// transaction to propose again.
    committed_fps: HashSet<u64, Fast>,
    /// Policy requests by arrival, and their ids.
    requests: BTreeMap<u64, Request>,
    request_ids: HashMap<String, u64, Fast>,
    /// Requests let go because [`MAX_REQUESTS`] were waiting.
    pub requests_evicted: u64,
    /// The fingerprints of blocks' transactions, by block id (for
    /// batching past the pending blocks).
    block_fps: HashMap<Hash, Arc<Vec<u64>>, Fast>,
    /// Committed blocks' envelopes opened here, by block id, per
    /// transaction ([`Mempool::take_opened`]).
    opened_blocks: HashMap<Hash, Vec<Option<Verified<AnomalyEvent>>>, Fast>,
    /// Anomalies let go because the mempool was full.
    pub evicted: u64,
    /// Anomalies refused because the mempool was full.
    pub refused_full: u64,
    /// Offers of an id already here or committed.
    pub duplicates: u64,
}

fn confidence(c: f64) -> Confidence {
    (c.clamp(0.0, 1.0) * 1e9) as u64
}

impl Mempool {
    /// Holds at most `max` anomalies.
    pub fn new(max: usize) -> Mempool {
        Mempool {
            max: max.max(1),
            seq: 0,
            entries: HashMap::default(),
            by_id: HashMap::default(),
            order: BTreeSet::new(),
            by_bytes: HashMap::default(),
            fps: Default::default(),
            committed: HashSet::default(),
            committed_fps: HashSet::default(),
            requests: Default::default(),
            request_ids: HashMap::default(),
            requests_evicted: 0,
            block_fps: HashMap::default(),
            opened_blocks: HashMap::default(),
            evicted: 0,
            refused_full: 0,
            duplicates: 0,
        }
    }

    /// Anomalies and requests waiting.
    pub fn len(&self) -> usize {
        self.entries.len() + self.requests.len()
    }

    /// Whether none are waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn fp(&self, tx: &[u8]) -> u64 {
        self.fps.hash_one(tx)
    }

    fn bytes_of(&self, slot: Slot) -> Option<&[u8]> {
        match slot {
            Slot::Anomaly(seq) => self.entries.get(&seq).map(|e| e.tx.as_slice()),
            Slot::Request(seq) => self.requests.get(&seq).map(|r| r.tx.as_slice()),
        }
    }

    /// The waiting transaction whose bytes are `tx`.
    fn find(&self, fp: u64, tx: &[u8]) -> Option<Slot> {
        (0..)
            .map_while(|n| self.by_bytes.get(&(fp, n)).copied())
            .find(|&slot| self.bytes_of(slot) == Some(tx))
    }

    fn index(&mut self, fp: u64, slot: Slot) {
        let n = (0..)
            .find(|&n| !self.by_bytes.contains_key(&(fp, n)))
            .unwrap_or(u32::MAX);
        self.by_bytes.insert((fp, n), slot);
    }

    /// `slot` out of the byte index: the last with its fingerprint takes
    /// its place, so the numbers stay without gaps.
    fn unindex(&mut self, fp: u64, slot: Slot) {
        let found = (0..)
            .map_while(|n| Some((n, *self.by_bytes.get(&(fp, n))?)))
            .fold((None, None), |(at, _), (n, s)| {
                (if s == slot { Some(n) } else { at }, Some(n))
            });
        if let (Some(at), Some(last)) = found {
            if let Some(moved) = self.by_bytes.remove(&(fp, last)) {
                if at != last {
                    self.by_bytes.insert((fp, at), moved);
                }
            }
        }
    }

    /// Offers a verified policy request: its id, the anomalies it rests
    /// on that are not committed yet, and its signed bytes.
    pub fn offer_request(&mut self, id: &str, needs: Vec<String>, tx: Vec<u8>) -> Offered {
        let fp = self.fp(&tx);
        if self.request_ids.contains_key(id) || self.committed_fps.contains(&fp) {
            self.duplicates += 1;
            return Offered::Duplicate;
        }
        let mut outcome = Offered::Added;
        if self.requests.len() >= MAX_REQUESTS {
            if let Some((seq, old)) = self.requests.pop_first() {
                self.request_ids.remove(&old.id);
                self.unindex(old.fp, Slot::Request(seq));
                self.requests_evicted += 1;
                outcome = Offered::Evicted(Some(old.id));
            }
        }
        self.seq += 1;
        self.request_ids.insert(id.to_string(), self.seq);
        self.index(fp, Slot::Request(self.seq));
        self.requests.insert(
            self.seq,
            Request {
                id: id.to_string(),
                tx,
                fp,
                needs,
            },
        );
        outcome
    }

    /// The fingerprints of `b`'s transactions, in order (taken once per
    /// block; forgotten when it commits, or when many are kept).
    fn fps_of(&mut self, b: &Block) -> Arc<Vec<u64>> {
        if let Some(d) = self.block_fps.get(&b.id) {
            return d.clone();
        }
        if self.block_fps.len() >= 256 {
            self.block_fps.clear();
        }
        let d = Arc::new(b.payload.iter().map(|tx| self.fp(tx)).collect::<Vec<_>>());
        self.block_fps.insert(b.id, d.clone());
        d
    }

    /// The envelopes this mempool opened for committed block `id`'s
    /// transactions, by position (none where it did not open one), handed
    /// over once.
    pub fn take_opened(&mut self, id: &Hash) -> Vec<Option<Verified<AnomalyEvent>>> {
        self.opened_blocks.remove(id).unwrap_or_default()
    }

    /// Offers an anomaly: its id, confidence and the signed bytes that go
    /// into a block (not opened: the state machine checks it).
    pub fn offer(&mut self, id: &str, conf: f64, tx: Vec<u8>) -> Offered {
        self.offer_anomaly(id, conf, tx, None)
    }

    /// Offers an anomaly with its envelope as its signature check opened
    /// it (kept for the state machine, so it is checked once).
    pub fn offer_anomaly(
        &mut self,
        id: &str,
        conf: f64,
        tx: Vec<u8>,
        opened: Option<Verified<AnomalyEvent>>,
    ) -> Offered {
        if self.by_id.contains_key(id) || self.committed.contains(id) {
            self.duplicates += 1;
            return Offered::Duplicate;
        }
        let fp = self.fp(&tx);
        self.add(Some(id.into()), confidence(conf), tx, fp, opened)
    }

    /// Offers an anomaly its signature check opened: its id and confidence
    /// read from it, the envelope kept for the state machine (so it is
    /// checked once).
    pub fn offer_opened(&mut self, tx: Vec<u8>, v: Verified<AnomalyEvent>) -> Offered {
        let (id, conf) = (v.get().id.clone(), v.get().confidence);
        self.offer_anomaly(&id, conf, tx, Some(v))
    }

    /// Offers an opaque transaction (`ben bench consensus`): no id, known
    /// by its bytes, every one of the same confidence.
    pub fn offer_opaque(&mut self, tx: Vec<u8>) -> Offered {
        let fp = self.fp(&tx);
        if self.find(fp, &tx).is_some() {
            self.duplicates += 1;
            return Offered::Duplicate;
        }
        self.add(None, confidence(1.0), tx, fp, None)
    }

    /// A transaction into the mempool, unless it committed already or the
    /// mempool is full of more confident ones. `fp`: its fingerprint.
    fn add(
        &mut self,
        id: Option<Box<str>>,
        c: Confidence,
        tx: Vec<u8>,
        fp: u64,
        opened: Option<Verified<AnomalyEvent>>,
    ) -> Offered {
        if self.committed_fps.contains(&fp) {
            self.duplicates += 1;
            return Offered::Duplicate;
        }
        let mut outcome = Offered::Added;
        if self.entries.len() >= self.max {
            let Some(&(lowest, _)) = self.order.first() else {
                return Offered::Full;
            };
            if lowest >= c {
                self.refused_full += 1;
                return Offered::Full;
            }
            let Some(gone) = self
                .order
                .pop_first()
                .and_then(|k| self.remove(u64::MAX - k.1))
            else {
                return Offered::Full;
            };
            self.evicted += 1;
            outcome = Offered::Evicted(gone.id.map(String::from));
        }
        self.seq += 1;
        let key = (c, u64::MAX - self.seq);
        self.order.insert(key);
        if let Some(id) = &id {
            self.by_id.insert(id.clone(), self.seq);
        }
        self.index(fp, Slot::Anomaly(self.seq));
        self.entries.insert(
            self.seq,
            Entry {
                tx,
                fp,
                id,
                key,
                opened,
            },
        );
        outcome
    }

    /// Anomaly `seq` out of every index but `order`.
    fn remove(&mut self, seq: u64) -> Option<Entry> {
        let e = self.entries.remove(&seq)?;
        if let Some(id) = &e.id {
            self.by_id.remove(id);
        }
        self.unindex(e.fp, Slot::Anomaly(seq));
        Some(e)
    }

    /// These ids committed: they leave, and come back only as duplicates.
    pub fn remove_committed<'a>(&mut self, ids: impl IntoIterator<Item = &'a str>) {
        for id in ids {
            if let Some(seq) = self.by_id.get(id).copied() {
                if let Some(e) = self.remove(seq) {
                    self.order.remove(&e.key);
                }
            }
            self.remember_committed(id.into());
        }
    }

    fn remember_committed(&mut self, id: Box<str>) {
        if self.committed.len() > 1_000_000 {
            self.committed.clear();
        }
        self.committed.insert(id);
    }
}

impl Pool for Mempool {
    fn committed(&mut self, block: &Block) {
        if self.committed_fps.len() > 1_000_000 {
            self.committed_fps.clear();
        }
        let mut opened = Vec::with_capacity(block.payload.len());
        for tx in &block.payload {
            let fp = self.fp(tx);
            self.committed_fps.insert(fp);
            let mut envelope = None;
            match self.find(fp, tx) {
                Some(Slot::Anomaly(seq)) => {
                    if let Some(e) = self.remove(seq) {
                        self.order.remove(&e.key);
                        envelope = e.opened;
                        if let Some(id) = e.id {
                            self.remember_committed(id);
                        }
                    }
                }
                Some(Slot::Request(seq)) => {
                    if let Some(r) = self.requests.remove(&seq) {
                        self.request_ids.remove(&r.id);
                        self.unindex(r.fp, Slot::Request(seq));
                    }
                }
                None => {}
            }
            opened.push(envelope);
        }
        self.block_fps.remove(&block.id);
        if opened.iter().any(Option::is_some) {
            if self.opened_blocks.len() >= OPENED_BLOCKS {
                self.opened_blocks.clear();
            }
            self.opened_blocks.insert(block.id, opened);
        }
    }

    fn batch(&mut self, pending: &[&Block], max_txs: usize, max_bytes: usize) -> Vec<Vec<u8>> {
        let pending_fps: Vec<Arc<Vec<u64>>> = pending.iter().map(|b| self.fps_of(b)).collect();
        let taken: HashSet<u64, Fast> =
            pending_fps.iter().flat_map(|f| f.iter().copied()).collect();
        let mut out = vec![];
        let mut bytes = 0;
        // Anomalies in this batch or the pending blocks: a request may
        // rest on them (looked for only when a request waits).
        let mut present: HashSet<&str, Fast> = HashSet::default();
        if !self.requests.is_empty() {
            for (b, fps) in pending.iter().zip(&pending_fps) {
                for (tx, &fp) in b.payload.iter().zip(fps.iter()) {
                    if let Some(Slot::Anomaly(seq)) = self.find(fp, tx) {
                        if let Some(id) = self.entries.get(&seq).and_then(|e| e.id.as_deref()) {
                            present.insert(id);
                        }
                    }
                }
            }
        }
        for key in self.order.iter().rev() {
            if out.len() >= max_txs {
                break;
            }
            let Some(e) = self.entries.get(&(u64::MAX - key.1)) else {
                continue;
            };
            if taken.contains(&e.fp) || bytes + e.tx.len() > max_bytes {
                continue;
            }
            bytes += e.tx.len();
            out.push(e.tx.clone());
            if let Some(id) = e.id.as_deref() {
                present.insert(id);
            }
        }
        for r in self.requests.values() {
            if out.len() >= max_txs {
                break;
            }
            let ready = r
                .needs
                .iter()
                .all(|a| self.committed.contains(a.as_str()) || present.contains(a.as_str()));
            if !ready || taken.contains(&r.fp) || bytes + r.tx.len() > max_bytes {
                continue;
            }
            bytes += r.tx.len();
            out.push(r.tx.clone());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block of `payload` (its id computed: blocks are known by it).
    fn block(g: &Block, payload: Vec<Vec<u8>>) -> Block {
        let mut b = g.clone();
        b.payload = payload.into();
        b.id = b.compute_id(&g.id);
        b
    }

    #[test]
    fn dedups_by_id_and_evicts_the_least_confident_when_full() {
        let mut m = Mempool::new(2);
        assert_eq!(m.offer("a", 0.9, b"a1".to_vec()), Offered::Added);
        // The same id signed again (other bytes): one anomaly.
        assert_eq!(m.offer("a", 0.9, b"a2".to_vec()), Offered::Duplicate);
        assert_eq!(m.offer("b", 0.5, b"b".to_vec()), Offered::Added);
        assert_eq!(
            m.offer("c", 0.7, b"c".to_vec()),
            Offered::Evicted(Some("b".into()))
        );
        assert_eq!(m.offer("d", 0.6, b"d".to_vec()), Offered::Full);
        assert_eq!(
            (m.len(), m.evicted, m.refused_full, m.duplicates),
            (2, 1, 1, 1)
        );
        // Highest confidence first; what pending blocks carry is skipped.
        assert_eq!(
            m.batch(&[], 10, 1 << 20),
            vec![b"a1".to_vec(), b"c".to_vec()]
        );
        let g = Block::genesis("t");
        let pending = block(&g, vec![b"a1".to_vec()]);
        assert_eq!(m.batch(&[&pending], 10, 1 << 20), vec![b"c".to_vec()]);
        assert_eq!(m.batch(&[], 1, 1 << 20), vec![b"a1".to_vec()]);
        // A transaction that arrives after the block carrying it committed
        // is a duplicate.
        let late = block(&g, vec![b"z".to_vec()]);
        m.committed(&late);
        assert_eq!(m.offer("z", 0.9, b"z".to_vec()), Offered::Duplicate);
        // Committed: gone, and offered again it is a duplicate.
        m.remove_committed(["a"]);
        assert_eq!(m.offer("a", 0.9, b"a1".to_vec()), Offered::Duplicate);
        assert_eq!(m.batch(&[], 10, 1 << 20), vec![b"c".to_vec()]);
    }

    #[test]
    fn a_request_waits_for_its_anomalies() {
        let mut m = Mempool::new(10);
        assert_eq!(
            m.offer_request("r1", vec!["a".into(), "b".into()], b"r1".to_vec()),
            Offered::Added
        );
        assert_eq!(
            m.offer_request("r1", vec![], b"r1-again".to_vec()),
            Offered::Duplicate
        );
        assert!(m.batch(&[], 10, 1 << 20).is_empty(), "a and b not here yet");
        m.offer("a", 0.9, b"a".to_vec());
        assert_eq!(m.batch(&[], 10, 1 << 20), vec![b"a".to_vec()]);
        m.offer("b", 0.8, b"b".to_vec());
        // Both in the batch: the request goes after them.
        assert_eq!(
            m.batch(&[], 10, 1 << 20),
            vec![b"a".to_vec(), b"b".to_vec(), b"r1".to_vec()]
        );
        // a committed, b in a pending block: ready without them.
        let g = Block::genesis("t");
        m.committed(&block(&g, vec![b"a".to_vec()]));
        let blk = block(&g, vec![b"b".to_vec()]);
        assert_eq!(m.batch(&[&blk], 10, 1 << 20), vec![b"r1".to_vec()]);
        m.committed(&block(&g, vec![b"b".to_vec(), b"r1".to_vec()]));
        assert!(m.is_empty());
        // Bounded: the oldest goes.
        for i in 0..MAX_REQUESTS + 1 {
            m.offer_request(
                &format!("q{i}"),
                vec!["never".into()],
                vec![i as u8, (i >> 8) as u8],
            );
        }
        assert_eq!(m.len(), MAX_REQUESTS);
        assert_eq!(m.requests_evicted, 1);
    }

    #[test]
    fn opaque_transactions_are_known_by_their_bytes() {
        let mut m = Mempool::new(10);
        assert_eq!(m.offer_opaque(b"x".to_vec()), Offered::Added);
        assert_eq!(m.offer_opaque(b"x".to_vec()), Offered::Duplicate);
        assert_eq!(m.offer_opaque(b"y".to_vec()), Offered::Added);
        let g = Block::genesis("t");
        m.committed(&block(&g, vec![b"x".to_vec(), b"w".to_vec()]));
        assert_eq!(m.batch(&[], 10, 1 << 20), vec![b"y".to_vec()]);
        // Committed, here or not: offered later, a duplicate.
        assert_eq!(m.offer_opaque(b"x".to_vec()), Offered::Duplicate);
        assert_eq!(m.offer_opaque(b"w".to_vec()), Offered::Duplicate);
        assert_eq!(m.len(), 1);
        // Full of equals: refused, none let go.
        let mut m = Mempool::new(1);
        m.offer_opaque(b"a".to_vec());
        assert_eq!(m.offer_opaque(b"b".to_vec()), Offered::Full);
    }

    #[test]
    fn transactions_sharing_a_fingerprint_are_told_apart_by_their_bytes() {
        let mut m = Mempool::new(10);
        // The same fingerprint for three (as a collision would give).
        for tx in [b"a", b"b", b"c"] {
            assert_eq!(m.add(None, 1, tx.to_vec(), 42, None), Offered::Added);
        }
        let slot = |m: &Mempool, tx: &[u8]| m.find(42, tx);
        let b = slot(&m, b"b").unwrap();
        assert_ne!(slot(&m, b"a"), Some(b));
        assert_eq!(slot(&m, b"d"), None);
        let Slot::Anomaly(seq) = b else {
            panic!("{b:?}")
        };
        m.remove(seq).unwrap();
        assert_eq!(slot(&m, b"b"), None);
        assert!(slot(&m, b"a").is_some() && slot(&m, b"c").is_some());
        // The numbers under one fingerprint stay without gaps.
        let mut ns: Vec<u32> = m.by_bytes.keys().map(|k| k.1).collect();
        ns.sort();
        assert_eq!(ns, [0, 1]);
    }

    #[test]
    fn an_opened_envelope_reaches_the_state_machine_once_its_block_commits() {
        use ben_wire::{Keyring, Role, Signer};
        let ai = Signer::from_secret([3; 32]);
        let mut keys = Keyring::new();
        keys.trust("ai", Role::AiService, ai.public());
        let tx = ai.seal_bytes(&AnomalyEvent {
            id: "a1".into(),
            confidence: 0.8,
            ..Default::default()
        });
        let v = ben_wire::open_bytes::<AnomalyEvent>(&tx, &keys).unwrap();
        let mut m = Mempool::new(10);
        assert_eq!(m.offer_opened(tx.clone(), v), Offered::Added);
        assert_eq!(
            m.offer("a1", 0.8, b"other bytes".to_vec()),
            Offered::Duplicate
        );
        let g = Block::genesis("t");
        let b = block(&g, vec![b"not here".to_vec(), tx]);
        m.committed(&b);
        let opened = m.take_opened(&b.id);
        assert_eq!(opened.len(), 2);
        assert!(opened[0].is_none());
        assert_eq!(opened[1].as_ref().map(|v| v.get().id.as_str()), Some("a1"));
        assert!(m.take_opened(&b.id).is_empty(), "handed over once");
        assert!(m.is_empty());
        assert_eq!(m.offer("a1", 0.8, b"again".to_vec()), Offered::Duplicate);
    }

    #[test]
    fn equal_confidence_goes_oldest_first() {
        let mut m = Mempool::new(10);
        for k in 0..5 {
            m.offer(&format!("t{k}"), 0.8, vec![k]);
        }
        assert_eq!(m.batch(&[], 3, 1 << 20), vec![vec![0], vec![1], vec![2]]);
    }
}
