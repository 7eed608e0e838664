//! Signing and verifying, behind one trait so the simulator can run
//! thousands of seeds with a cheap stand-in and production uses Ed25519.

use crate::types::{Hash, NodeId, Signature};
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};

/// A validator's signing key and the validator set's public keys.
pub trait Crypto {
    /// Signs `digest` as this validator.
    fn sign(&self, digest: &Hash) -> Signature;
    /// Whether `sig` is `author`'s signature over `digest`.
    fn verify(&self, author: NodeId, digest: &Hash, sig: &Signature) -> bool;
    /// Whether every item verifies (one batch where the scheme has one).
    fn verify_all(&self, items: &[(NodeId, Hash, Signature)]) -> bool {
        items.iter().all(|(a, d, s)| self.verify(*a, d, s))
    }
}

/// Ed25519: this validator's key and the set's keys, by index.
pub struct Ed25519 {
    me: SigningKey,
    set: Vec<VerifyingKey>,
}

impl Ed25519 {
    /// `secret` signs; `set[i]` is validator `i`'s public key.
    pub fn new(secret: [u8; 32], set: Vec<VerifyingKey>) -> Ed25519 {
        Ed25519 {
            me: SigningKey::from_bytes(&secret),
            set,
        }
    }
}

impl Crypto for Ed25519 {
    fn sign(&self, digest: &Hash) -> Signature {
        self.me.sign(&digest.0).to_bytes()
    }

    fn verify(&self, author: NodeId, digest: &Hash, sig: &Signature) -> bool {
        let Some(key) = self.set.get(author as usize) else {
            return false;
        };
        key.verify(&digest.0, &ed25519_dalek::Signature::from_bytes(sig))
            .is_ok()
    }

    fn verify_all(&self, items: &[(NodeId, Hash, Signature)]) -> bool {
        let mut keys = Vec::with_capacity(items.len());
        for (a, _, _) in items {
            match self.set.get(*a as usize) {
                Some(k) => keys.push(*k),
                None => return false,
            }
        }
        let msgs: Vec<&[u8]> = items.iter().map(|(_, d, _)| &d.0[..]).collect();
        let sigs: Vec<ed25519_dalek::Signature> = items
            .iter()
            .map(|(_, _, s)| ed25519_dalek::Signature::from_bytes(s))
            .collect();
        ed25519_dalek::verify_batch(&msgs, &sigs, &keys).is_ok()
    }
}

/// The simulator's stand-in: keyed BLAKE3 with a per-validator key every
/// instance can recompute. Not a signature scheme (anyone can forge); it
/// makes a run of thousands of seeds cheap, and signing as another id is
/// still impossible for honest code, which only ever signs as itself.
#[derive(Clone)]
pub struct SimCrypto {
    me: NodeId,
    seed: u64,
}

impl SimCrypto {
    /// Validator `me` of a simulation seeded `seed`.
    pub fn new(me: NodeId, seed: u64) -> SimCrypto {
        SimCrypto { me, seed }
    }

    fn mac(&self, author: NodeId, digest: &Hash) -> Signature {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&self.seed.to_le_bytes());
        key[8..10].copy_from_slice(&author.to_le_bytes());
        let mut out = [0u8; 64];
        blake3::Hasher::new_keyed(&key)
            .update(&digest.0)
            .finalize_xof()
            .fill(&mut out);
        out
    }
}

impl Crypto for SimCrypto {
    fn sign(&self, digest: &Hash) -> Signature {
        self.mac(self.me, digest)
    }

    fn verify(&self, author: NodeId, digest: &Hash, sig: &Signature) -> bool {
        self.mac(author, digest) == *sig
    }
}

/// Why a block is not shown certified by a validator set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("the block's id is not the hash of its content")]
    BlockId,
    #[error("the QC is for block {qc}, not this block {block}")]
    OtherBlock { qc: String, block: String },
    #[error("the QC has {votes} votes from distinct validators of the set; {quorum} needed")]
    TooFewVotes { votes: usize, quorum: usize },
    #[error("a vote in the QC does not verify under the validator set's keys")]
    BadSignature,
}

/// Checks, with nothing but the validator set's public keys, that `block`
/// (on the chain whose genesis id is `chain`) is certified by `qc`: its id
/// is its content's hash, and n - f validators of `set` signed a vote for
/// it (verified in one batch). What an enforcement agent runs on a policy
/// before applying it.
pub fn verify_certified(
    block: &crate::Block,
    qc: &crate::QuorumCert,
    chain: &Hash,
    set: &[VerifyingKey],
) -> Result<(), CertError> {
    if block.compute_id(chain) != block.id {
        return Err(CertError::BlockId);
    }
    if qc.data.block != block.id || qc.data != block.vote_data() {
        return Err(CertError::OtherBlock {
            qc: qc.data.block.short(),
            block: block.id.short(),
        });
    }
    let n = set.len();
    let quorum = n - (n.saturating_sub(1)) / 3;
    let mut last = None;
    let distinct = qc.votes.iter().all(|(a, _)| {
        let ok = (*a as usize) < n && last.is_none_or(|l| l < *a);
        last = Some(*a);
        ok
    });
    if !distinct || qc.votes.len() < quorum {
        return Err(CertError::TooFewVotes {
            votes: if distinct { qc.votes.len() } else { 0 },
            quorum,
        });
    }
    let d = qc.data.digest(chain);
    let msgs: Vec<&[u8]> = qc.votes.iter().map(|_| &d.0[..]).collect();
    let sigs: Vec<ed25519_dalek::Signature> = qc
        .votes
        .iter()
        .map(|(_, s)| ed25519_dalek::Signature::from_bytes(s))
        .collect();
    let keys: Vec<VerifyingKey> = qc.votes.iter().map(|(a, _)| set[*a as usize]).collect();
    ed25519_dalek::verify_batch(&msgs, &sigs, &keys).map_err(|_| CertError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Block;

    #[test]
    fn a_block_is_certified_only_by_a_quorum_of_the_set_for_it() {
        let secrets: Vec<[u8; 32]> = (1..=4).map(|i| [i; 32]).collect();
        let set: Vec<VerifyingKey> = secrets
            .iter()
            .map(|s| SigningKey::from_bytes(s).verifying_key())
            .collect();
        let g = Block::genesis("c");
        let mut b = g.clone();
        b.round = 1;
        b.height = 1;
        b.parent = g.id;
        b.qc = g.genesis_qc();
        b.time = 5;
        b.payload = vec![b"tx".to_vec()].into();
        b.id = b.compute_id(&g.id);
        let data = b.vote_data();
        let vote = |i: usize| {
            let c = Ed25519::new(secrets[i], set.clone());
            (i as u16, c.sign(&data.digest(&g.id)))
        };
        let qc = crate::QuorumCert {
            data,
            votes: vec![vote(0), vote(1), vote(3)],
        };
        assert_eq!(verify_certified(&b, &qc, &g.id, &set), Ok(()));
        let short = crate::QuorumCert {
            votes: qc.votes[..2].to_vec(),
            ..qc.clone()
        };
        assert!(matches!(
            verify_certified(&b, &short, &g.id, &set),
            Err(CertError::TooFewVotes {
                votes: 2,
                quorum: 3
            })
        ));
        let twice = crate::QuorumCert {
            votes: vec![vote(0), vote(0), vote(1)],
            ..qc.clone()
        };
        assert!(verify_certified(&b, &twice, &g.id, &set).is_err());
        let mut other = b.clone();
        other.payload.make_mut().push(b"more".to_vec());
        assert_eq!(
            verify_certified(&other, &qc, &g.id, &set),
            Err(CertError::BlockId)
        );
        other.id = other.compute_id(&g.id);
        assert!(matches!(
            verify_certified(&other, &qc, &g.id, &set),
            Err(CertError::OtherBlock { .. })
        ));
        // Another chain: the votes do not verify.
        assert!(verify_certified(&b, &qc, &Hash([9; 32]), &set).is_err());
    }
}
