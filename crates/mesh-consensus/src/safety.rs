//! Safety rules: the only code that decides whether this validator signs a
//! vote or a timeout, and the state that must be durable before what it
//! signs leaves the validator (DESIGN.md §4, invariant 9).
//!
//! Kept apart from the pacemaker and the block tree, as Aptos keeps
//! `safety-rules`, so that what guarantees "no two conflicting blocks are
//! committed" can be read on one screen. The 2-chain (Jolteon) rules:
//!
//! * vote in round `r` only if `r > last_voted_round` and either
//!   `r == qc.round + 1`, or `r == tc.round + 1` and
//!   `qc.round >= tc.highest_hqc_round`;
//! * sign a timeout for round `r` only if `r >= last_voted_round`,
//!   `r == hqc.round + 1` or `r == tc.round + 1`, and
//!   `hqc.round >= one_chain_round`; afterwards no vote in `r`;
//! * asked again to vote in the round of the last vote: the same vote,
//!   never another.

use crate::crypto::Crypto;
use crate::types::{Block, Hash, QuorumCert, Round, Signature, TimeoutCert, Vote};

/// What must survive a crash, and be durable before a vote or timeout
/// built from it is sent.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct SafetyState {
    /// The highest round this validator voted or timed out in.
    pub last_voted_round: Round,
    /// The highest round of a QC's parent it has seen (2-chain lock).
    pub preferred_round: Round,
    /// The highest QC round it has seen.
    pub one_chain_round: Round,
    /// Its last vote, re-sent when asked again for that round.
    pub last_vote: Option<Vote>,
}

/// Why the safety rules would not sign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("round {round} is not above the last voted round {last_voted}")]
    OldRound { round: Round, last_voted: Round },
    #[error("already voted for another block in round {round}")]
    OtherBlockVoted { round: Round },
    #[error("round {round} follows neither its QC (round {qc}) nor a TC allowing it")]
    NotSafeToVote { round: Round, qc: Round },
    #[error("timeout for round {round} follows neither the QC (round {qc}) nor the TC")]
    NotSafeToTimeout { round: Round, qc: Round },
    #[error("the QC (round {qc}) is below one this validator has seen (round {seen})")]
    StaleQc { qc: Round, seen: Round },
}

/// The rules over a [`SafetyState`].
#[derive(Clone, Debug)]
pub struct SafetyRules {
    state: SafetyState,
    chain: Hash,
    me: crate::types::NodeId,
}

impl SafetyRules {
    /// Validator `me`'s rules over `state` (as loaded from durable
    /// storage) on `chain`.
    pub fn new(state: SafetyState, chain: Hash, me: crate::types::NodeId) -> SafetyRules {
        SafetyRules { state, chain, me }
    }

    /// The state, to persist.
    pub fn state(&self) -> &SafetyState {
        &self.state
    }

    fn observe_qc(&mut self, qc: &QuorumCert) -> bool {
        let mut changed = false;
        if qc.data.round > self.state.one_chain_round {
            self.state.one_chain_round = qc.data.round;
            changed = true;
        }
        if qc.data.parent_round > self.state.preferred_round {
            self.state.preferred_round = qc.data.parent_round;
            changed = true;
        }
        changed
    }

    /// A vote for `block` (entered with `tc` when not with its QC).
    /// `Ok((vote, true))`: a new vote; the state changed and must be
    /// persisted before the vote is sent. `Ok((vote, false))`: the vote
    /// already given in this round, for this block.
    pub fn vote(
        &mut self,
        block: &Block,
        tc: Option<&TimeoutCert>,
        crypto: &impl Crypto,
    ) -> Result<(Vote, bool), Refusal> {
        if let Some(v) = &self.state.last_vote {
            if v.data.round == block.round {
                return if v.data.block == block.id {
                    Ok((v.clone(), false))
                } else {
                    Err(Refusal::OtherBlockVoted { round: block.round })
                };
            }
        }
        if block.round <= self.state.last_voted_round {
            return Err(Refusal::OldRound {
                round: block.round,
                last_voted: self.state.last_voted_round,
            });
        }
        let qc_round = block.qc.data.round;
        let safe = block.round == qc_round + 1
            || tc.is_some_and(|tc| {
                block.round == tc.round + 1 && qc_round >= tc.highest_hqc_round()
            });
        if !safe {
            return Err(Refusal::NotSafeToVote {
                round: block.round,
                qc: qc_round,
            });
        }
        self.observe_qc(&block.qc);
        let data = block.vote_data();
        let vote = Vote {
            data,
            author: self.me,
            sig: crypto.sign(&data.digest(&self.chain)),
        };
        self.state.last_voted_round = block.round;
        self.state.last_vote = Some(vote.clone());
        Ok((vote, true))
    }

    /// A timeout signature for `round`, with this validator's highest QC
    /// and TC. `Ok((sig, changed))`: persist first when `changed`.
    pub fn timeout(
        &mut self,
        round: Round,
        hqc: &QuorumCert,
        htc: Option<&TimeoutCert>,
        crypto: &impl Crypto,
    ) -> Result<(Signature, bool), Refusal> {
        if round < self.state.last_voted_round {
            return Err(Refusal::OldRound {
                round,
                last_voted: self.state.last_voted_round,
            });
        }
        let qc_round = hqc.data.round;
        if qc_round < self.state.one_chain_round {
            return Err(Refusal::StaleQc {
                qc: qc_round,
                seen: self.state.one_chain_round,
            });
        }
        let follows = round == qc_round + 1 || htc.is_some_and(|tc| round == tc.round + 1);
        if !follows {
            return Err(Refusal::NotSafeToTimeout {
                round,
                qc: qc_round,
            });
        }
        let mut changed = self.observe_qc(hqc);
        if round > self.state.last_voted_round {
            self.state.last_voted_round = round;
            changed = true;
        }
        let sig = crypto.sign(&crate::types::timeout_digest(&self.chain, round, qc_round));
        Ok((sig, changed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SimCrypto;
    use crate::types::{QuorumCert, VoteData};

    fn qc(round: Round, parent_round: Round) -> QuorumCert {
        QuorumCert {
            data: VoteData {
                block: Hash([round as u8; 32]),
                round,
                height: round,
                parent: Hash([parent_round as u8; 32]),
                parent_round,
            },
            votes: vec![],
        }
    }

    fn block(round: Round, qc: QuorumCert) -> Block {
        let mut b = Block {
            id: Hash::ZERO,
            round,
            height: qc.data.height + 1,
            parent: qc.data.block,
            qc,
            author: 0,
            time: round,
            payload: vec![vec![round as u8]].into(),
        };
        b.id = b.compute_id(&Hash::ZERO);
        b
    }

    fn tc(round: Round, hqc_rounds: &[Round]) -> TimeoutCert {
        TimeoutCert {
            round,
            signers: hqc_rounds
                .iter()
                .enumerate()
                .map(|(i, r)| (i as u16, *r, [0; 64]))
                .collect(),
        }
    }

    #[test]
    fn votes_only_on_a_direct_qc_or_a_tc_whose_qcs_it_covers() {
        let c = SimCrypto::new(0, 1);
        let mut s = SafetyRules::new(SafetyState::default(), Hash::ZERO, 0);
        // Round 3 on a QC of round 2: yes.
        assert!(s.vote(&block(3, qc(2, 1)), None, &c).is_ok());
        // Round 5 on a QC of round 3, no TC: no.
        assert!(matches!(
            s.vote(&block(5, qc(3, 2)), None, &c),
            Err(Refusal::NotSafeToVote { .. })
        ));
        // With a TC for round 4 whose highest QC is 4: the block's QC (3)
        // is below it, no.
        assert!(matches!(
            s.vote(&block(5, qc(3, 2)), Some(&tc(4, &[2, 4, 3])), &c),
            Err(Refusal::NotSafeToVote { .. })
        ));
        // A TC for round 4 whose highest QC is 3: yes.
        assert!(s
            .vote(&block(5, qc(3, 2)), Some(&tc(4, &[2, 3, 3])), &c)
            .is_ok());
        assert_eq!(s.state().last_voted_round, 5);
        assert_eq!(s.state().one_chain_round, 3);
        assert_eq!(s.state().preferred_round, 2);
    }

    #[test]
    fn the_same_round_gets_the_same_vote_and_never_another() {
        let c = SimCrypto::new(0, 1);
        let mut s = SafetyRules::new(SafetyState::default(), Hash::ZERO, 0);
        let b = block(3, qc(2, 1));
        let (v1, new1) = s.vote(&b, None, &c).unwrap();
        let (v2, new2) = s.vote(&b, None, &c).unwrap();
        assert!(new1 && !new2);
        assert_eq!(v1, v2);
        let mut other = block(3, qc(2, 1));
        other.payload.make_mut().push(vec![9]);
        other.id = other.compute_id(&Hash::ZERO);
        assert_eq!(
            s.vote(&other, None, &c),
            Err(Refusal::OtherBlockVoted { round: 3 })
        );
        // An older round: no.
        assert!(matches!(
            s.vote(&block(2, qc(1, 0)), None, &c),
            Err(Refusal::OldRound { .. })
        ));
    }

    #[test]
    fn after_a_timeout_no_vote_in_that_round() {
        let c = SimCrypto::new(0, 1);
        let mut s = SafetyRules::new(SafetyState::default(), Hash::ZERO, 0);
        let (_, changed) = s.timeout(3, &qc(2, 1), None, &c).unwrap();
        assert!(changed);
        assert!(matches!(
            s.vote(&block(3, qc(2, 1)), None, &c),
            Err(Refusal::OldRound { .. })
        ));
        // A timeout for a round neither the QC nor a TC leads to: no.
        assert!(matches!(
            s.timeout(7, &qc(2, 1), None, &c),
            Err(Refusal::NotSafeToTimeout { .. })
        ));
        // With a QC older than one it has seen: no.
        s.vote(&block(4, qc(3, 2)), Some(&tc(3, &[2, 2, 2])), &c)
            .unwrap();
        assert!(matches!(
            s.timeout(4, &qc(2, 1), Some(&tc(3, &[2])), &c),
            Err(Refusal::StaleQc { .. })
        ));
    }
}
