//! Verified anomalies waiting for a block.
//!
//! Keyed by anomaly id (never by signature bytes: the same anomaly signed
//! twice is one anomaly), bounded: when full, the lowest-confidence
//! anomaly goes (counted), or the newcomer if it is lower still. Batches
//! are taken by confidence, highest first, within a count and byte limit,
//! skipping what the uncommitted blocks already carry.

use ben_mesh_consensus::{Block, Pool};
use std::collections::{BTreeSet, HashMap, HashSet};

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

/// Confidence ordered as an integer (parts per billion), so ordering is
/// total and the same everywhere.
type Confidence = u64;

/// The mempool.
pub struct Mempool {
    max: usize,
    seq: u64,
    by_id: HashMap<String, Entry>,
    /// Transaction digest → id, to forget what a committed block carried.
    by_digest: HashMap<[u8; 32], String>,
    /// (confidence, newest-first arrival) → id: the last is the most
    /// confident and, among equals, the oldest.
    order: BTreeSet<(Confidence, u64, String)>,
    /// Ids committed recently: offered again, they are duplicates.
    committed: HashSet<String>,
    /// Digests of transactions committed recently, whether or not they
    /// were waiting here: one that arrives after its block committed (a
    /// backlog between the bus and this mempool) is a duplicate, not a
    /// transaction to propose again.
    committed_digests: HashSet<[u8; 32]>,
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
            by_id: HashMap::new(),
            by_digest: HashMap::new(),
            order: BTreeSet::new(),
            committed: HashSet::new(),
            committed_digests: HashSet::new(),
            evicted: 0,
            refused_full: 0,
            duplicates: 0,
        }
    }

    /// Anomalies waiting.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether none are waiting.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Offers a verified anomaly: its id, confidence and the signed bytes
    /// that go into a block.
    pub fn offer(&mut self, id: &str, conf: f64, tx: Vec<u8>) -> Offered {
        let digest = *blake3::hash(&tx).as_bytes();
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
            let Some(lowest) = self.order.first().cloned() else {
                return Offered::Full;
            };
            if lowest.0 >= c {
                self.refused_full += 1;
                return Offered::Full;
            }
            self.order.remove(&lowest);
            if let Some(e) = self.by_id.remove(&lowest.2) {
                self.by_digest.remove(&e.digest);
            }
            self.evicted += 1;
            outcome = Offered::Evicted(lowest.2);
        }
        self.seq += 1;
        // Oldest first among equal confidence when batching (ordered by
        // the complement of the arrival number), so none starves.
        self.order.insert((c, u64::MAX - self.seq, id.to_string()));
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
                self.order.remove(&(e.key.0, e.key.1, id.to_string()));
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
        for tx in &block.payload {
            let d = *blake3::hash(tx).as_bytes();
            if let Some(id) = self.by_digest.get(&d) {
                ids.push(id.clone());
            }
            self.committed_digests.insert(d);
        }
        self.remove_committed(ids.iter().map(String::as_str));
    }

    fn batch(&mut self, pending: &[&Block], max_txs: usize, max_bytes: usize) -> Vec<Vec<u8>> {
        let taken: HashSet<[u8; 32]> = pending
            .iter()
            .flat_map(|b| b.payload.iter().map(|tx| *blake3::hash(tx).as_bytes()))
            .collect();
        let mut out = vec![];
        let mut bytes = 0;
        for (_, _, id) in self.order.iter().rev() {
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
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut pending = g.clone();
        pending.payload = vec![b"a1".to_vec()];
        assert_eq!(m.batch(&[&pending], 10, 1 << 20), vec![b"c".to_vec()]);
        assert_eq!(m.batch(&[], 1, 1 << 20), vec![b"a1".to_vec()]);
        // A transaction that arrives after the block carrying it committed
        // is a duplicate.
        let mut late = g.clone();
        late.payload = vec![b"z".to_vec()];
        m.committed(&late);
        assert_eq!(m.offer("z", 0.9, b"z".to_vec()), Offered::Duplicate);
        // Committed: gone, and offered again it is a duplicate.
        m.remove_committed(["a"]);
        assert_eq!(m.offer("a", 0.9, b"a1".to_vec()), Offered::Duplicate);
        assert_eq!(m.batch(&[], 10, 1 << 20), vec![b"c".to_vec()]);
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
