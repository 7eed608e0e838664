//! Verified anomalies waiting for a block.
//!
//! Keyed by anomaly id (never by signature bytes: the same anomaly signed
//! twice is one anomaly), bounded: when full, the lowest-confidence
//! anomaly goes (counted), or the newcomer if it is lower still. Batches
//! are taken by confidence, highest first, within a count and byte limit,
//! skipping what the uncommitted blocks already carry.

use ben_mesh_consensus::{Block, Hash, Pool};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The maps' hasher: seeded per map, several times faster than SipHash on
/// these keys (ids and digests of transactions whose signatures were
/// checked, so not an attacker's free choice).
type Fast = foldhash::fast::RandomState;
use std::sync::Arc;

/// A transaction's digest (BLAKE3 of its bytes).
pub type Digest = [u8; 32];

/// The digest of `tx`.
pub fn digest(tx: &[u8]) -> Digest {
    *blake3::hash(tx).as_bytes()
}

/// What happened to an anomaly offered to the mempool.
#[derive(Debug, Clone, PartialEq)]
pub enum Offered {
    /// Now waiting for a block.
    Added,
    /// Its id is already waiting (or committed): nothing changed.
    Duplicate,
    /// Added; the full mempool let this lower-confidence id go.
    Evicted(String),
    /// The mempool is full of higher-confidence anomalies: refused.
    Full,
}

struct Entry {
    tx: Vec<u8>,
    key: (Confidence, u64),
    digest: [u8; 32],
}

/// Policy requests waiting at most.
pub const MAX_REQUESTS: usize = 1_024;

struct Request {
    id: String,
    tx: Vec<u8>,
    digest: [u8; 32],
    /// Anomaly ids not committed when it arrived.
    needs: Vec<String>,
}

/// Confidence ordered as an integer (parts per billion), so ordering is
/// total and the same everywhere.
type Confidence = u64;

/// The mempool.
pub struct Mempool {
    max: usize,
    seq: u64,
    by_id: HashMap<String, Entry, Fast>,
    /// Transaction digest → id, to forget what a committed block carried.
    by_digest: HashMap<[u8; 32], String, Fast>,
    /// (confidence, newest-first arrival) → id: the last is the most
    /// confident and, among equals, the oldest.
    order: BTreeMap<(Confidence, u64), String>,
    /// Ids committed recently: offered again, they are duplicates.
    committed: HashSet<String, Fast>,
    /// Digests of transactions committed recently, whether or not they
    /// were waiting here: one that arrives after its block committed (a
    /// backlog between the bus and this mempool) is a duplicate, not a
    /// transaction to propose again.
    committed_digests: HashSet<[u8; 32], Fast>,
    /// Policy requests by arrival, and their ids.
    requests: BTreeMap<u64, Request>,
    request_ids: HashMap<String, u64, Fast>,
    request_digests: HashMap<[u8; 32], u64, Fast>,
    /// Requests let go because [`MAX_REQUESTS`] were waiting.
    pub requests_evicted: u64,
    /// The digests of blocks' transactions, by block id: each block is
    /// hashed once (for batching past it, for forgetting what it
    /// committed, for the state machine's opened envelopes).
    block_digests: HashMap<Hash, Arc<Vec<Digest>>, Fast>,
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
            by_id: HashMap::default(),
            by_digest: HashMap::default(),
            order: BTreeMap::new(),
            committed: HashSet::default(),
            committed_digests: HashSet::default(),
            requests: Default::default(),
            request_ids: HashMap::default(),
            request_digests: HashMap::default(),
            requests_evicted: 0,
            block_digests: HashMap::default(),
            evicted: 0,
            refused_full: 0,
            duplicates: 0,
        }
    }

    /// Anomalies and requests waiting.
    pub fn len(&self) -> usize {
        self.by_id.len() + self.requests.len()
    }

    /// Whether none are waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Offers a verified policy request: its id, the anomalies it rests
    /// on that are not committed yet, and its signed bytes.
    pub fn offer_request(&mut self, id: &str, needs: Vec<String>, tx: Vec<u8>) -> Offered {
        let digest = *blake3::hash(&tx).as_bytes();
        if self.request_ids.contains_key(id) || self.committed_digests.contains(&digest) {
            self.duplicates += 1;
            return Offered::Duplicate;
        }
        let mut outcome = Offered::Added;
        if self.requests.len() >= MAX_REQUESTS {
            if let Some((_, old)) = self.requests.pop_first() {
                self.request_ids.remove(&old.id);
                self.request_digests.remove(&old.digest);
                self.requests_evicted += 1;
                outcome = Offered::Evicted(old.id);
            }
        }
        self.seq += 1;
        self.request_ids.insert(id.to_string(), self.seq);
        self.request_digests.insert(digest, self.seq);
        self.requests.insert(
            self.seq,
            Request {
                id: id.to_string(),
                tx,
                digest,
                needs,
            },
        );
        outcome
    }

    /// The digests of `b`'s transactions, in order (hashed once per
    /// block; forgotten when the state machine has applied it, or when
    /// many are kept).
    pub fn digests_of(&mut self, b: &Block) -> Arc<Vec<Digest>> {
        if let Some(d) = self.block_digests.get(&b.id) {
            return d.clone();
        }
        if self.block_digests.len() >= 256 {
            self.block_digests.clear();
        }
        let d = Arc::new(b.payload.iter().map(|tx| digest(tx)).collect::<Vec<_>>());
        self.block_digests.insert(b.id, d.clone());
        d
    }

    /// A committed block's digests are no longer needed.
    pub fn forget_block(&mut self, id: &Hash) {
        self.block_digests.remove(id);
    }

    /// Offers a verified anomaly: its id, confidence and the signed bytes
    /// that go into a block.
    pub fn offer(&mut self, id: &str, conf: f64, tx: Vec<u8>) -> Offered {
        let d = digest(&tx);
        self.offer_hashed(id, conf, tx, d)
    }

    /// [`Mempool::offer`] with the transaction's digest already taken.
    pub fn offer_hashed(&mut self, id: &str, conf: f64, tx: Vec<u8>, digest: Digest) -> Offered {
        if self.by_id.contains_key(id)
            || self.committed.contains(id)
            || self.committed_digests.contains(&digest)
        {
            self.duplicates += 1;
            return Offered::Duplicate;
        }
        let c = confidence(conf);
        let mut outcome = Offered::Added;
        if self.by_id.len() >= self.max {
            let Some((&(lowest, _), _)) = self.order.first_key_value() else {
                return Offered::Full;
            };
            if lowest >= c {
                self.refused_full += 1;
                return Offered::Full;
            }
            let Some((_, gone)) = self.order.pop_first() else {
                return Offered::Full;
            };
            if let Some(e) = self.by_id.remove(&gone) {
                self.by_digest.remove(&e.digest);
            }
            self.evicted += 1;
            outcome = Offered::Evicted(gone);
        }
        self.seq += 1;
        // Oldest first among equal confidence when batching (ordered by
        // the complement of the arrival number), so none starves.
        self.order.insert((c, u64::MAX - self.seq), id.to_string());
        self.by_digest.insert(digest, id.to_string());
        self.by_id.insert(
            id.to_string(),
            Entry {
                tx,
                key: (c, u64::MAX - self.seq),
                digest,
            },
        );
        outcome
    }

    /// These ids committed: they leave, and come back only as duplicates.
    pub fn remove_committed<'a>(&mut self, ids: impl IntoIterator<Item = &'a str>) {
        if self.committed.len() > 1_000_000 {
            self.committed.clear();
        }
        for id in ids {
            if let Some(e) = self.by_id.remove(id) {
                self.order.remove(&e.key);
                self.by_digest.remove(&e.digest);
            }
            self.committed.insert(id.to_string());
        }
    }
}

impl Pool for Mempool {
    fn committed(&mut self, block: &Block) {
        if self.committed_digests.len() > 1_000_000 {
            self.committed_digests.clear();
        }
        let mut ids = vec![];
        // Kept: the validator's state machine takes them next
        // ([`Mempool::forget_block`]).
        let digests = self.digests_of(block);
        for &d in digests.iter() {
            if let Some(id) = self.by_digest.get(&d) {
                ids.push(id.clone());
            }
            if let Some(seq) = self.request_digests.remove(&d) {
                if let Some(r) = self.requests.remove(&seq) {
                    self.request_ids.remove(&r.id);
                }
            }
            self.committed_digests.insert(d);
        }
        self.remove_committed(ids.iter().map(String::as_str));
    }

    fn batch(&mut self, pending: &[&Block], max_txs: usize, max_bytes: usize) -> Vec<Vec<u8>> {
        let mut taken: HashSet<Digest, Fast> = HashSet::default();
        for b in pending {
            taken.extend(self.digests_of(b).iter().copied());
        }
        let mut out = vec![];
        let mut bytes = 0;
        // Anomalies in this batch or the pending blocks: a request may
        // rest on them.
        let mut present: HashSet<&str, Fast> = taken
            .iter()
            .filter_map(|d| self.by_digest.get(d).map(String::as_str))
            .collect();
        for id in self.order.values().rev() {
            if out.len() >= max_txs {
                break;
            }
            let Some(e) = self.by_id.get(id) else {
                continue;
            };
            if taken.contains(&e.digest) || bytes + e.tx.len() > max_bytes {
                continue;
            }
            bytes += e.tx.len();
            out.push(e.tx.clone());
            present.insert(id);
        }
        for r in self.requests.values() {
            if out.len() >= max_txs {
                break;
            }
            let ready = r
                .needs
                .iter()
                .all(|a| self.committed.contains(a) || present.contains(a.as_str()));
            if !ready || taken.contains(&r.digest) || bytes + r.tx.len() > max_bytes {
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
            Offered::Evicted("b".into())
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
    fn equal_confidence_goes_oldest_first() {
        let mut m = Mempool::new(10);
        for k in 0..5 {
            m.offer(&format!("t{k}"), 0.8, vec![k]);
        }
        assert_eq!(m.batch(&[], 3, 1 << 20), vec![vec![0], vec![1], vec![2]]);
    }
}
