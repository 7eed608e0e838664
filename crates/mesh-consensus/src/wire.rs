//! The bytes validators exchange: an [`Envelope`] as protobuf, decoded
//! with every size bounded before anything is sized by it.
//!
//! The messages are hand-written `prost` structs (no `protoc`); the
//! equivalent `.proto`:
//!
//! ```text
//! message VoteData { bytes block = 1; uint64 round = 2; uint64 height = 3; bytes parent = 4; uint64 parent_round = 5; }
//! message Sig { uint32 author = 1; bytes sig = 2; }
//! message Qc { VoteData data = 1; repeated Sig votes = 2; }
//! message TcSigner { uint32 author = 1; uint64 hqc_round = 2; bytes sig = 3; }
//! message Tc { uint64 round = 1; repeated TcSigner signers = 2; }
//! message Block { bytes id = 1; uint64 round = 2; uint64 height = 3; bytes parent = 4; Qc qc = 5; uint32 author = 6; repeated bytes payload = 7; uint64 time = 8; }
//! message Proposal { Block block = 1; Tc tc = 2; bytes sig = 3; }
//! message Vote { VoteData data = 1; uint32 author = 2; bytes sig = 3; }
//! message Timeout { uint64 round = 1; Qc hqc = 2; uint32 author = 3; bytes sig = 4; }
//! message Sync { Qc hqc = 1; Qc hcc = 2; Tc htc = 3; }
//! message BlockRequest { bytes id = 1; uint64 above = 2; uint32 max = 3; }
//! message Blocks { repeated Block blocks = 1; }
//! message Empty {}
//! message Envelope {
//!   Sync sync = 1;
//!   oneof body { Proposal proposal = 2; Vote vote = 3; Timeout timeout = 4;
//!                Empty sync_only = 5; BlockRequest request = 6; Blocks response = 7; }
//! }
//! ```

use crate::types::{self as t, Hash, NodeId, Signature};
use prost::Message;

/// The largest message accepted (a block of 2 MiB of transactions and
/// its certificates fit with room to spare).
pub const MAX_MESSAGE: usize = 8 << 20;
/// The most votes or timeout signers a certificate may carry.
pub const MAX_SIGNERS: usize = 1_024;
/// The most blocks in one sync response.
pub const MAX_BLOCKS: usize = 256;
/// The most transactions in one block.
pub const MAX_TXS: usize = 100_000;

/// Why bytes are not a validator message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {0} bytes is over the {MAX_MESSAGE}-byte limit")]
    TooLarge(usize),
    #[error("not a validator message: {0}")]
    Protobuf(String),
    #[error("{what} missing")]
    Missing { what: &'static str },
    #[error("{what} is {len} bytes, expected {want}")]
    Length {
        what: &'static str,
        len: usize,
        want: usize,
    },
    #[error("{what}: {count} is over the limit of {max}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("{what}: validator index {id} is out of range")]
    Author { what: &'static str, id: u32 },
}

#[derive(Clone, PartialEq, Message)]
struct PbVoteData {
    #[prost(bytes = "vec", tag = "1")]
    block: Vec<u8>,
    #[prost(uint64, tag = "2")]
    round: u64,
    #[prost(uint64, tag = "3")]
    height: u64,
    #[prost(bytes = "vec", tag = "4")]
    parent: Vec<u8>,
    #[prost(uint64, tag = "5")]
    parent_round: u64,
}

#[derive(Clone, PartialEq, Message)]
struct PbSig {
    #[prost(uint32, tag = "1")]
    author: u32,
    #[prost(bytes = "vec", tag = "2")]
    sig: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct PbQc {
    #[prost(message, optional, tag = "1")]
    data: Option<PbVoteData>,
    #[prost(message, repeated, tag = "2")]
    votes: Vec<PbSig>,
}

#[derive(Clone, PartialEq, Message)]
struct PbTcSigner {
    #[prost(uint32, tag = "1")]
    author: u32,
    #[prost(uint64, tag = "2")]
    hqc_round: u64,
    #[prost(bytes = "vec", tag = "3")]
    sig: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct PbTc {
    #[prost(uint64, tag = "1")]
    round: u64,
    #[prost(message, repeated, tag = "2")]
    signers: Vec<PbTcSigner>,
}

#[derive(Clone, PartialEq, Message)]
struct PbBlock {
    #[prost(bytes = "vec", tag = "1")]
    id: Vec<u8>,
    #[prost(uint64, tag = "2")]
    round: u64,
    #[prost(uint64, tag = "3")]
    height: u64,
    #[prost(bytes = "vec", tag = "4")]
    parent: Vec<u8>,
    #[prost(message, optional, tag = "5")]
    qc: Option<PbQc>,
    #[prost(uint32, tag = "6")]
    author: u32,
    #[prost(bytes = "vec", repeated, tag = "7")]
    payload: Vec<Vec<u8>>,
    #[prost(uint64, tag = "8")]
    time: u64,
}

#[derive(Clone, PartialEq, Message)]
struct PbProposal {
    #[prost(message, optional, tag = "1")]
    block: Option<PbBlock>,
    #[prost(message, optional, tag = "2")]
    tc: Option<PbTc>,
    #[prost(bytes = "vec", tag = "3")]
    sig: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct PbVote {
    #[prost(message, optional, tag = "1")]
    data: Option<PbVoteData>,
    #[prost(uint32, tag = "2")]
    author: u32,
    #[prost(bytes = "vec", tag = "3")]
    sig: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct PbTimeout {
    #[prost(uint64, tag = "1")]
    round: u64,
    #[prost(message, optional, tag = "2")]
    hqc: Option<PbQc>,
    #[prost(uint32, tag = "3")]
    author: u32,
    #[prost(bytes = "vec", tag = "4")]
    sig: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct PbSync {
    #[prost(message, optional, tag = "1")]
    hqc: Option<PbQc>,
    #[prost(message, optional, tag = "2")]
    hcc: Option<PbQc>,
    #[prost(message, optional, tag = "3")]
    htc: Option<PbTc>,
}

#[derive(Clone, PartialEq, Message)]
struct PbBlockRequest {
    #[prost(bytes = "vec", tag = "1")]
    id: Vec<u8>,
    #[prost(uint64, tag = "2")]
    above: u64,
    #[prost(uint32, tag = "3")]
    max: u32,
}

#[derive(Clone, PartialEq, Message)]
struct PbBlocks {
    #[prost(message, repeated, tag = "1")]
    blocks: Vec<PbBlock>,
}

#[derive(Clone, PartialEq, Message)]
struct PbEmpty {}

#[derive(Clone, PartialEq, prost::Oneof)]
enum PbBody {
    #[prost(message, tag = "2")]
    Proposal(PbProposal),
    #[prost(message, tag = "3")]
    Vote(PbVote),
    #[prost(message, tag = "4")]
    Timeout(PbTimeout),
    #[prost(message, tag = "5")]
    SyncOnly(PbEmpty),
    #[prost(message, tag = "6")]
    Request(PbBlockRequest),
    #[prost(message, tag = "7")]
    Response(PbBlocks),
}

#[derive(Clone, PartialEq, Message)]
struct PbEnvelope {
    #[prost(message, optional, tag = "1")]
    sync: Option<PbSync>,
    #[prost(oneof = "PbBody", tags = "2, 3, 4, 5, 6, 7")]
    body: Option<PbBody>,
}

// --- encoding ---------------------------------------------------------

fn vd(d: &t::VoteData) -> PbVoteData {
    PbVoteData {
        block: d.block.0.to_vec(),
        round: d.round,
        height: d.height,
        parent: d.parent.0.to_vec(),
        parent_round: d.parent_round,
    }
}

fn qc(q: &t::QuorumCert) -> PbQc {
    PbQc {
        data: Some(vd(&q.data)),
        votes: q
            .votes
            .iter()
            .map(|(a, s)| PbSig {
                author: *a as u32,
                sig: s.to_vec(),
            })
            .collect(),
    }
}

fn tc(c: &t::TimeoutCert) -> PbTc {
    PbTc {
        round: c.round,
        signers: c
            .signers
            .iter()
            .map(|(a, r, s)| PbTcSigner {
                author: *a as u32,
                hqc_round: *r,
                sig: s.to_vec(),
            })
            .collect(),
    }
}

fn block(b: &t::Block) -> PbBlock {
    PbBlock {
        payload: b.payload.to_vec(),
        ..header(b)
    }
}

/// `b` as a message without its transactions.
fn header(b: &t::Block) -> PbBlock {
    PbBlock {
        id: b.id.0.to_vec(),
        round: b.round,
        height: b.height,
        parent: b.parent.0.to_vec(),
        qc: Some(qc(&b.qc)),
        author: b.author as u32,
        payload: vec![],
        time: b.time,
    }
}

/// The bytes of `env`.
pub fn encode(env: &t::Envelope) -> Vec<u8> {
    let body = match &env.body {
        t::Body::Proposal(p) => PbBody::Proposal(PbProposal {
            block: Some(block(&p.block)),
            tc: p.tc.as_ref().map(tc),
            sig: p.sig.to_vec(),
        }),
        t::Body::Vote(v) => PbBody::Vote(PbVote {
            data: Some(vd(&v.data)),
            author: v.author as u32,
            sig: v.sig.to_vec(),
        }),
        t::Body::Timeout(x) => PbBody::Timeout(PbTimeout {
            round: x.round,
            hqc: Some(qc(&x.hqc)),
            author: x.author as u32,
            sig: x.sig.to_vec(),
        }),
        t::Body::Sync => PbBody::SyncOnly(PbEmpty {}),
        t::Body::BlockRequest { id, above, max } => PbBody::Request(PbBlockRequest {
            id: id.0.to_vec(),
            above: *above,
            max: *max,
        }),
        t::Body::BlockResponse(bs) => PbBody::Response(PbBlocks {
            blocks: bs.iter().map(block).collect(),
        }),
    };
    PbEnvelope {
        sync: Some(PbSync {
            hqc: Some(qc(&env.sync.hqc)),
            hcc: Some(qc(&env.sync.hcc)),
            htc: env.sync.htc.as_ref().map(tc),
        }),
        body: Some(body),
    }
    .encode_to_vec()
}

// --- decoding ---------------------------------------------------------

fn hash(what: &'static str, b: &[u8]) -> Result<Hash, DecodeError> {
    let a: [u8; 32] = b.try_into().map_err(|_| DecodeError::Length {
        what,
        len: b.len(),
        want: 32,
    })?;
    Ok(Hash(a))
}

fn sig(what: &'static str, b: &[u8]) -> Result<Signature, DecodeError> {
    b.try_into().map_err(|_| DecodeError::Length {
        what,
        len: b.len(),
        want: 64,
    })
}

fn author(what: &'static str, id: u32) -> Result<NodeId, DecodeError> {
    NodeId::try_from(id).map_err(|_| DecodeError::Author { what, id })
}

fn limit(what: &'static str, count: usize, max: usize) -> Result<(), DecodeError> {
    if count > max {
        return Err(DecodeError::TooMany { what, count, max });
    }
    Ok(())
}

fn need<T>(what: &'static str, v: Option<T>) -> Result<T, DecodeError> {
    v.ok_or(DecodeError::Missing { what })
}

fn from_vd(d: Option<PbVoteData>) -> Result<t::VoteData, DecodeError> {
    let d = need("vote data", d)?;
    Ok(t::VoteData {
        block: hash("vote data block", &d.block)?,
        round: d.round,
        height: d.height,
        parent: hash("vote data parent", &d.parent)?,
        parent_round: d.parent_round,
    })
}

fn from_qc(q: Option<PbQc>) -> Result<t::QuorumCert, DecodeError> {
    let q = need("QC", q)?;
    limit("QC votes", q.votes.len(), MAX_SIGNERS)?;
    Ok(t::QuorumCert {
        data: from_vd(q.data)?,
        votes: q
            .votes
            .iter()
            .map(|v| {
                Ok((
                    author("QC vote", v.author)?,
                    sig("QC vote signature", &v.sig)?,
                ))
            })
            .collect::<Result<_, DecodeError>>()?,
    })
}

fn from_tc(c: PbTc) -> Result<t::TimeoutCert, DecodeError> {
    limit("TC signers", c.signers.len(), MAX_SIGNERS)?;
    Ok(t::TimeoutCert {
        round: c.round,
        signers: c
            .signers
            .iter()
            .map(|s| {
                Ok((
                    author("TC signer", s.author)?,
                    s.hqc_round,
                    sig("TC signature", &s.sig)?,
                ))
            })
            .collect::<Result<_, DecodeError>>()?,
    })
}

fn from_block(b: PbBlock) -> Result<t::Block, DecodeError> {
    limit("block transactions", b.payload.len(), MAX_TXS)?;
    Ok(t::Block {
        id: hash("block id", &b.id)?,
        round: b.round,
        height: b.height,
        parent: hash("block parent", &b.parent)?,
        qc: from_qc(b.qc)?,
        author: author("block author", b.author)?,
        time: b.time,
        payload: b.payload.into(),
    })
}

/// `bytes` as a validator message, or why not. Never panics; sizes are
/// checked before anything is built from them.
pub fn decode(bytes: &[u8]) -> Result<t::Envelope, DecodeError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    let pb = PbEnvelope::decode(bytes).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
    let sync = need("sync info", pb.sync)?;
    let sync = t::SyncInfo {
        hqc: from_qc(sync.hqc)?,
        hcc: from_qc(sync.hcc)?,
        htc: sync.htc.map(from_tc).transpose()?,
    };
    let body = match need("body", pb.body)? {
        PbBody::Proposal(p) => t::Body::Proposal(t::Proposal {
            block: from_block(need("proposal block", p.block)?)?,
            tc: p.tc.map(from_tc).transpose()?,
            sig: sig("proposal signature", &p.sig)?,
        }),
        PbBody::Vote(v) => t::Body::Vote(t::Vote {
            data: from_vd(v.data)?,
            author: author("vote author", v.author)?,
            sig: sig("vote signature", &v.sig)?,
        }),
        PbBody::Timeout(x) => t::Body::Timeout(t::Timeout {
            round: x.round,
            hqc: from_qc(x.hqc)?,
            author: author("timeout author", x.author)?,
            sig: sig("timeout signature", &x.sig)?,
        }),
        PbBody::SyncOnly(_) => t::Body::Sync,
        PbBody::Request(r) => t::Body::BlockRequest {
            id: hash("requested block", &r.id)?,
            above: r.above,
            max: r.max,
        },
        PbBody::Response(r) => {
            limit("blocks in a response", r.blocks.len(), MAX_BLOCKS)?;
            t::Body::BlockResponse(
                r.blocks
                    .into_iter()
                    .map(from_block)
                    .collect::<Result<_, _>>()?,
            )
        }
    };
    Ok(t::Envelope { sync, body })
}

// --- what a validator keeps across a crash --------------------------------

#[derive(Clone, PartialEq, Message)]
struct PbSafety {
    #[prost(uint64, tag = "1")]
    last_voted_round: u64,
    #[prost(uint64, tag = "2")]
    preferred_round: u64,
    #[prost(uint64, tag = "3")]
    one_chain_round: u64,
    #[prost(message, optional, tag = "4")]
    last_vote: Option<PbVote>,
}

#[derive(Clone, PartialEq, Message)]
struct PbDurable {
    #[prost(message, optional, tag = "1")]
    safety: Option<PbSafety>,
    #[prost(message, optional, tag = "2")]
    root_block: Option<PbBlock>,
    #[prost(message, optional, tag = "3")]
    root_qc: Option<PbQc>,
    #[prost(message, optional, tag = "4")]
    root_cert: Option<PbQc>,
    #[prost(message, repeated, tag = "5")]
    blocks: Vec<PbBlock>,
    #[prost(message, repeated, tag = "6")]
    committed: Vec<PbBlock>,
    #[prost(message, optional, tag = "7")]
    hqc: Option<PbQc>,
    #[prost(message, optional, tag = "8")]
    htc: Option<PbTc>,
}

fn safety_pb(s: &crate::SafetyState) -> PbSafety {
    PbSafety {
        last_voted_round: s.last_voted_round,
        preferred_round: s.preferred_round,
        one_chain_round: s.one_chain_round,
        last_vote: s.last_vote.as_ref().map(|v| PbVote {
            data: Some(vd(&v.data)),
            author: v.author as u32,
            sig: v.sig.to_vec(),
        }),
    }
}

fn safety_from(s: PbSafety) -> Result<crate::SafetyState, DecodeError> {
    Ok(crate::SafetyState {
        last_voted_round: s.last_voted_round,
        preferred_round: s.preferred_round,
        one_chain_round: s.one_chain_round,
        last_vote: s
            .last_vote
            .map(|v| {
                Ok::<_, DecodeError>(t::Vote {
                    data: from_vd(v.data)?,
                    author: author("vote author", v.author)?,
                    sig: sig("vote signature", &v.sig)?,
                })
            })
            .transpose()?,
    })
}

/// The bytes of a safety state (what is made durable before a vote).
pub fn encode_safety(s: &crate::SafetyState) -> Vec<u8> {
    safety_pb(s).encode_to_vec()
}

/// A safety state from its bytes.
pub fn decode_safety(bytes: &[u8]) -> Result<crate::SafetyState, DecodeError> {
    safety_from(PbSafety::decode(bytes).map_err(|e| DecodeError::Protobuf(e.to_string()))?)
}

/// The bytes of everything a validator keeps across a crash.
pub fn encode_durable(d: &crate::Durable) -> Vec<u8> {
    PbDurable {
        safety: Some(safety_pb(&d.safety)),
        root_block: Some(block(&d.root.block)),
        root_qc: Some(qc(&d.root.qc)),
        root_cert: Some(qc(&d.root.cert)),
        blocks: d.blocks.iter().map(block).collect(),
        committed: d.committed.iter().map(block).collect(),
        hqc: d.hqc.as_ref().map(qc),
        htc: d.htc.as_ref().map(tc),
    }
    .encode_to_vec()
}

/// What a validator kept, from its bytes (no size limit: its own file).
pub fn decode_durable(bytes: &[u8]) -> Result<crate::Durable, DecodeError> {
    let d = PbDurable::decode(bytes).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
    Ok(crate::Durable {
        safety: safety_from(need("safety state", d.safety)?)?,
        root: crate::Root {
            block: from_block(need("root block", d.root_block)?)?,
            qc: from_qc(d.root_qc)?,
            cert: from_qc(d.root_cert)?,
        },
        blocks: d
            .blocks
            .into_iter()
            .map(from_block)
            .collect::<Result<_, _>>()?,
        committed: d
            .committed
            .into_iter()
            .map(from_block)
            .collect::<Result<_, _>>()?,
        hqc: d.hqc.map(|q| from_qc(Some(q))).transpose()?,
        htc: d.htc.map(from_tc).transpose()?,
    })
}

/// The bytes of one block (a validator's committed-chain file).
pub fn encode_block(b: &t::Block) -> Vec<u8> {
    // The header, then the transactions straight from the block (a field
    // may come in any order): copying them into a message first cost as
    // much as the encoding.
    let h = header(b);
    let size = b.payload.iter().map(|tx| tx.len() + 5).sum::<usize>();
    let mut out = Vec::with_capacity(h.encoded_len() + size);
    h.encode_raw(&mut out);
    prost::encoding::bytes::encode_repeated(7, &b.payload[..], &mut out);
    out
}

/// A block from its bytes.
pub fn decode_block(bytes: &[u8]) -> Result<t::Block, DecodeError> {
    from_block(PbBlock::decode(bytes).map_err(|e| DecodeError::Protobuf(e.to_string()))?)
}

/// The bytes of one quorum certificate.
pub fn encode_qc(q: &t::QuorumCert) -> Vec<u8> {
    qc(q).encode_to_vec()
}

/// A quorum certificate from its bytes.
pub fn decode_qc(bytes: &[u8]) -> Result<t::QuorumCert, DecodeError> {
    from_qc(Some(
        PbQc::decode(bytes).map_err(|e| DecodeError::Protobuf(e.to_string()))?,
    ))
}
