//! The validator message codec: what is encoded decodes to the same
//! message, and no input (arbitrary, or a valid message cut or flipped)
//! makes it panic.

use ben_mesh_consensus::wire::{decode, encode, DecodeError, MAX_BLOCKS, MAX_SIGNERS};
use ben_mesh_consensus::*;
use proptest::prelude::*;

fn hash() -> impl Strategy<Value = Hash> {
    any::<[u8; 32]>().prop_map(Hash)
}

fn sig() -> impl Strategy<Value = Signature> {
    (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(a, b)| {
        let mut s = [0u8; 64];
        s[..32].copy_from_slice(&a);
        s[32..].copy_from_slice(&b);
        s
    })
}

fn vote_data() -> impl Strategy<Value = VoteData> {
    (hash(), any::<u64>(), any::<u64>(), hash(), any::<u64>()).prop_map(
        |(block, round, height, parent, parent_round)| VoteData {
            block,
            round,
            height,
            parent,
            parent_round,
        },
    )
}

fn qc() -> impl Strategy<Value = QuorumCert> {
    (
        vote_data(),
        prop::collection::vec((any::<u16>(), sig()), 0..8),
    )
        .prop_map(|(data, votes)| QuorumCert { data, votes })
}

fn tc() -> impl Strategy<Value = TimeoutCert> {
    (
        any::<u64>(),
        prop::collection::vec((any::<u16>(), any::<u64>(), sig()), 0..8),
    )
        .prop_map(|(round, signers)| TimeoutCert { round, signers })
}

fn block() -> impl Strategy<Value = Block> {
    (
        hash(),
        any::<u64>(),
        any::<u64>(),
        hash(),
        qc(),
        (any::<u16>(), any::<u64>()),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..6),
    )
        .prop_map(
            |(id, round, height, parent, qc, (author, time), payload)| Block {
                id,
                round,
                height,
                parent,
                qc,
                author,
                time,
                payload: payload.into(),
            },
        )
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        (block(), prop::option::of(tc()), sig())
            .prop_map(|(block, tc, sig)| Body::Proposal(Proposal { block, tc, sig })),
        (vote_data(), any::<u16>(), sig()).prop_map(|(data, author, sig)| Body::Vote(Vote {
            data,
            author,
            sig
        })),
        (any::<u64>(), qc(), any::<u16>(), sig()).prop_map(|(round, hqc, author, sig)| {
            Body::Timeout(Timeout {
                round,
                hqc,
                author,
                sig,
            })
        }),
        Just(Body::Sync),
        (hash(), any::<u64>(), any::<u32>()).prop_map(|(id, above, max)| Body::BlockRequest {
            id,
            above,
            max
        }),
        prop::collection::vec(block(), 0..4).prop_map(Body::BlockResponse),
    ]
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (qc(), qc(), prop::option::of(tc()), body()).prop_map(|(hqc, hcc, htc, body)| Envelope {
        sync: SyncInfo { hqc, hcc, htc },
        body,
    })
}

proptest! {
    #[test]
    fn what_is_encoded_decodes_the_same(env in envelope()) {
        prop_assert_eq!(decode(&encode(&env)), Ok(env));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2_000)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn a_message_cut_or_flipped_never_panics(env in envelope(), cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut bytes = encode(&env);
        if !bytes.is_empty() {
            let i = flip.index(bytes.len());
            bytes[i] ^= 1 << bit;
            let _ = decode(&bytes);
            bytes.truncate(cut.index(bytes.len()));
            let _ = decode(&bytes);
        }
    }
}

#[test]
fn refusals_name_what_is_wrong() {
    let g = Block::genesis("t");
    let env = Envelope {
        sync: SyncInfo {
            hqc: g.genesis_qc(),
            hcc: g.genesis_qc(),
            htc: None,
        },
        body: Body::Sync,
    };
    let ok = encode(&env);
    assert_eq!(decode(&ok), Ok(env.clone()));
    // Empty: no sync info.
    assert_eq!(decode(&[]), Err(DecodeError::Missing { what: "sync info" }));
    // Oversized certificates and responses are refused before they are built.
    let mut big = env.clone();
    big.sync.hqc.votes = vec![(0, [0; 64]); MAX_SIGNERS + 1];
    assert!(matches!(
        decode(&encode(&big)),
        Err(DecodeError::TooMany {
            what: "QC votes",
            ..
        })
    ));
    let mut many = env.clone();
    many.body = Body::BlockResponse(vec![g.clone(); MAX_BLOCKS + 1]);
    assert!(matches!(
        decode(&encode(&many)),
        Err(DecodeError::TooMany {
            what: "blocks in a response",
            ..
        })
    ));
    let e = decode(&[0xff; 100]).unwrap_err();
    assert!(e.to_string().starts_with("not a validator message"), "{e}");
}
