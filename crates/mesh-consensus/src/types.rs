//! Blocks, votes, certificates and the messages validators exchange.
//!
//! Every signature is Ed25519 over a domain-separated BLAKE3 digest:
//! `BLAKE3("ben/v1/consensus/<what>" || 0x00 || chain || fields)`, where
//! `chain` is the genesis block's id, so a vote made for one chain, or for
//! one purpose, never verifies as another.

use std::fmt;

/// A round (view) number.
pub type Round = u64;
/// A block's distance from genesis.
pub type Height = u64;
/// A validator's index in the validator set.
pub type NodeId = u16;
/// Time, in milliseconds on whatever clock the shell runs (the core only
/// compares and adds).
pub type Millis = u64;
/// An Ed25519 signature (or the simulator's stand-in, same size).
pub type Signature = [u8; 64];

/// A BLAKE3 hash: block ids and digests.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// All zeros: genesis's parent.
    pub const ZERO: Hash = Hash([0; 32]);

    /// First 8 hex digits, for logs and traces.
    pub fn short(&self) -> String {
        self.0[..4].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// All 64 hex digits.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

/// Builds a domain-separated digest.
pub(crate) struct Digest(blake3::Hasher);

impl Digest {
    pub(crate) fn new(what: &str, chain: &Hash) -> Digest {
        let mut h = blake3::Hasher::new();
        h.update(b"ben/v1/consensus/");
        h.update(what.as_bytes());
        h.update(&[0]);
        h.update(&chain.0);
        Digest(h)
    }
    pub(crate) fn u64(mut self, v: u64) -> Digest {
        self.0.update(&v.to_le_bytes());
        self
    }
    pub(crate) fn hash(mut self, v: &Hash) -> Digest {
        self.0.update(&v.0);
        self
    }
    /// One item: its length and its bytes (what a block's id hashes per
    /// transaction, through [`Digest::bytes_all`]).
    #[cfg(test)]
    pub(crate) fn bytes(mut self, v: &[u8]) -> Digest {
        self.0.update(&(v.len() as u64).to_le_bytes());
        self.0.update(v);
        self
    }
    /// [`Digest::bytes`] of each item in turn (the same digest), handed to
    /// BLAKE3 in large pieces: it hashes many 1 KiB chunks at once (SIMD)
    /// only when it is given them at once; a block's transactions one by
    /// one were hashed 64 bytes at a time.
    pub(crate) fn bytes_all<'a>(mut self, items: impl IntoIterator<Item = &'a [u8]>) -> Digest {
        const PIECE: usize = 64 * 1024;
        let mut buf = Vec::with_capacity(PIECE);
        for v in items {
            if buf.len() + 8 + v.len() > PIECE {
                self.0.update(&buf);
                buf.clear();
            }
            buf.extend_from_slice(&(v.len() as u64).to_le_bytes());
            if v.len() > PIECE - 8 {
                self.0.update(&buf);
                buf.clear();
                self.0.update(v);
            } else {
                buf.extend_from_slice(v);
            }
        }
        self.0.update(&buf);
        self
    }
    pub(crate) fn finish(self) -> Hash {
        Hash(*self.0.finalize().as_bytes())
    }
}

/// What a vote is for: a block and, so that a certificate alone proves a
/// commit, its parent's id and round.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct VoteData {
    /// The block voted for.
    pub block: Hash,
    /// Its round.
    pub round: Round,
    /// Its height.
    pub height: Height,
    /// Its parent.
    pub parent: Hash,
    /// Its parent's round.
    pub parent_round: Round,
}

impl VoteData {
    /// The digest a vote signs.
    pub fn digest(&self, chain: &Hash) -> Hash {
        Digest::new("vote", chain)
            .hash(&self.block)
            .u64(self.round)
            .u64(self.height)
            .hash(&self.parent)
            .u64(self.parent_round)
            .finish()
    }

    /// The 2-chain commit rule: a certificate for this block commits its
    /// parent when the two rounds are consecutive. Without the
    /// consecutive-round check a certified child would commit a parent that
    /// a timeout certificate in between may have let others abandon.
    pub fn commits(&self) -> Option<(Hash, Height)> {
        #[cfg(feature = "planted-bugs")]
        if crate::planted::on(crate::planted::Bug::NoConsecutiveCheck) {
            return (self.height > 0).then(|| (self.parent, self.height - 1));
        }
        (self.height > 0 && self.round == self.parent_round + 1)
            .then(|| (self.parent, self.height - 1))
    }
}

/// A signed vote.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Vote {
    /// What it is for.
    pub data: VoteData,
    /// Who voted.
    pub author: NodeId,
    /// Over `data.digest(chain)`.
    pub sig: Signature,
}

/// A quorum certificate: 2f+1 votes for one block.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct QuorumCert {
    /// What was voted for.
    pub data: VoteData,
    /// The votes' authors and signatures, authors ascending and distinct.
    /// Empty only for genesis's certificate.
    pub votes: Vec<(NodeId, Signature)>,
}

impl QuorumCert {
    /// The certified block's round.
    pub fn round(&self) -> Round {
        self.data.round
    }
    /// The certified block.
    pub fn block(&self) -> Hash {
        self.data.block
    }
}

/// A block: a batch of opaque transactions extending a certified parent.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Block {
    /// `compute_id` of the rest.
    pub id: Hash,
    /// The round it was proposed in.
    pub round: Round,
    /// Parent's height + 1.
    pub height: Height,
    /// The parent (the block `qc` certifies).
    pub parent: Hash,
    /// The certificate of the parent it extends.
    pub qc: QuorumCert,
    /// The leader that proposed it.
    pub author: NodeId,
    /// The leader's clock when it proposed (ms), above the parent's: the
    /// one time every validator's state machine reads, so TTLs and
    /// freshness come out the same everywhere.
    pub time: Millis,
    /// Transactions, opaque here (the validator's state machine reads them).
    pub payload: Payload,
}

/// A block's transactions, shared: a block is held in several places at
/// once (the block tree, the store, the proposal kept as equivocation
/// evidence, the message to the peers), and copying two thousand
/// transactions for each was a large share of a validator's time.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Payload(std::sync::Arc<Vec<Vec<u8>>>);

impl std::ops::Deref for Payload {
    type Target = [Vec<u8>];
    fn deref(&self) -> &[Vec<u8>] {
        &self.0
    }
}

impl From<Vec<Vec<u8>>> for Payload {
    fn from(v: Vec<Vec<u8>>) -> Payload {
        Payload(std::sync::Arc::new(v))
    }
}

impl FromIterator<Vec<u8>> for Payload {
    fn from_iter<I: IntoIterator<Item = Vec<u8>>>(iter: I) -> Payload {
        Payload::from(iter.into_iter().collect::<Vec<_>>())
    }
}

impl Payload {
    /// The transactions to change (copied first if shared).
    pub fn make_mut(&mut self) -> &mut Vec<Vec<u8>> {
        std::sync::Arc::make_mut(&mut self.0)
    }
}

impl<'a> IntoIterator for &'a Payload {
    type Item = &'a Vec<u8>;
    type IntoIter = std::slice::Iter<'a, Vec<u8>>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl Block {
    /// The id: a digest of everything but the certificate's signatures.
    pub fn compute_id(&self, chain: &Hash) -> Hash {
        let mut d = Digest::new("block", chain)
            .u64(self.round)
            .u64(self.height)
            .hash(&self.parent)
            .hash(&self.qc.data.digest(chain))
            .u64(self.author as u64)
            .u64(self.time)
            .u64(self.payload.len() as u64);
        d = d.bytes_all(self.payload.iter().map(Vec::as_slice));
        d.finish()
    }

    /// The genesis block of a chain named `name` (the chain id is its id).
    pub fn genesis(name: &str) -> Block {
        let mut g = Block {
            id: Hash::ZERO,
            round: 0,
            height: 0,
            parent: Hash::ZERO,
            qc: QuorumCert {
                data: VoteData::default(),
                votes: vec![],
            },
            author: 0,
            time: 0,
            payload: vec![name.as_bytes().to_vec()].into(),
        };
        g.id = g.compute_id(&Hash::ZERO);
        g
    }

    /// Genesis's certificate (no votes; valid only as exactly this).
    pub fn genesis_qc(&self) -> QuorumCert {
        QuorumCert {
            data: VoteData {
                block: self.id,
                round: 0,
                height: 0,
                parent: Hash::ZERO,
                parent_round: 0,
            },
            votes: vec![],
        }
    }

    /// The data a vote for this block signs.
    pub fn vote_data(&self) -> VoteData {
        VoteData {
            block: self.id,
            round: self.round,
            height: self.height,
            parent: self.parent,
            parent_round: self.qc.data.round,
        }
    }

    /// Payload size in bytes.
    pub fn payload_bytes(&self) -> usize {
        self.payload.iter().map(Vec::len).sum()
    }
}

/// A validator giving up on a round, with the highest certificate it holds.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Timeout {
    /// The round given up on.
    pub round: Round,
    /// Its highest QC.
    pub hqc: QuorumCert,
    /// Who.
    pub author: NodeId,
    /// Over `timeout_digest(round, hqc.round)`.
    pub sig: Signature,
}

/// The digest a timeout signs.
pub fn timeout_digest(chain: &Hash, round: Round, hqc_round: Round) -> Hash {
    Digest::new("timeout", chain)
        .u64(round)
        .u64(hqc_round)
        .finish()
}

/// A timeout certificate: 2f+1 timeouts for one round.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TimeoutCert {
    /// The round.
    pub round: Round,
    /// Each signer, the round of the highest QC it reported, and its
    /// signature; signers ascending and distinct.
    pub signers: Vec<(NodeId, Round, Signature)>,
}

impl TimeoutCert {
    /// The highest QC round any signer reported: a block proposed after
    /// this certificate must extend a QC at least this high.
    pub fn highest_hqc_round(&self) -> Round {
        self.signers.iter().map(|s| s.1).max().unwrap_or(0)
    }
}

/// What every message carries so a receiver behind can catch up.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SyncInfo {
    /// The sender's highest QC.
    pub hqc: QuorumCert,
    /// Its highest commit certificate (a QC whose block's round follows
    /// its parent's: it proves the parent committed).
    pub hcc: QuorumCert,
    /// Its highest timeout certificate, when newer than `hqc`.
    pub htc: Option<TimeoutCert>,
}

/// A leader's proposal.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Proposal {
    /// The block (its `qc` is the leader's highest QC).
    pub block: Block,
    /// The TC that let the leader into this round, when not a QC.
    pub tc: Option<TimeoutCert>,
    /// The leader's signature over `proposal_digest(block.id)`.
    pub sig: Signature,
}

/// The digest a proposal signs.
pub fn proposal_digest(chain: &Hash, block: &Hash) -> Hash {
    Digest::new("proposal", chain).hash(block).finish()
}

/// The body of a message between validators.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Body {
    /// A leader's block.
    Proposal(Proposal),
    /// A vote, to the next round's leader.
    Vote(Vote),
    /// A timeout, to everyone.
    Timeout(Timeout),
    /// Only the sync info: a formed TC, or a nudge to one behind.
    Sync,
    /// "Send me block `id` and its ancestors above `above`, at most `max`."
    BlockRequest {
        /// The newest block wanted.
        id: Hash,
        /// The requester's committed height: nothing at or below it.
        above: Height,
        /// At most this many.
        max: u32,
    },
    /// Blocks, newest first, each the parent of the one before.
    BlockResponse(Vec<Block>),
}

/// A message between validators: a body and the sender's sync info.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Envelope {
    /// The sender's view of the chain.
    pub sync: SyncInfo,
    /// What it says.
    pub body: Body,
}

impl Body {
    /// A short name, for counters and traces.
    pub fn name(&self) -> &'static str {
        match self {
            Body::Proposal(_) => "proposal",
            Body::Vote(_) => "vote",
            Body::Timeout(_) => "timeout",
            Body::Sync => "sync",
            Body::BlockRequest { .. } => "block_request",
            Body::BlockResponse(_) => "block_response",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeding a block's transactions in large pieces gives the digest of
    /// feeding them one by one: a block's id does not change with it.
    #[test]
    fn bytes_all_is_bytes_of_each_in_turn() {
        let chain = Hash([7; 32]);
        let mut seed = 1u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 33
        };
        for case in 0..40 {
            let n = (next() % 300) as usize;
            let txs: Vec<Vec<u8>> = (0..n)
                .map(|i| {
                    let len = match (case + i) % 7 {
                        0 => 0,
                        1 => 64 * 1024 - 8,
                        2 => 64 * 1024 - 7,
                        3 => 200 * 1024,
                        _ => (next() % 2048) as usize,
                    };
                    (0..len).map(|k| (k as u64 ^ next()) as u8).collect()
                })
                .collect();
            let mut one = Digest::new("block", &chain).u64(n as u64);
            for tx in &txs {
                one = one.bytes(tx);
            }
            let all = Digest::new("block", &chain)
                .u64(n as u64)
                .bytes_all(txs.iter().map(Vec::as_slice));
            assert_eq!(one.finish(), all.finish(), "case {case}, {n} transactions");
        }
    }
}
