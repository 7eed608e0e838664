//! # CyberMesh validator
//!
//! What a validator does around the consensus core
//! (`ben-mesh-consensus`): it keeps the signed anomalies it has verified
//! in a [`mempool::Mempool`] until a block commits them, and runs every
//! committed block through the deterministic [`state::StateMachine`]
//! (admission, anomaly lifecycle, validator reputation, policy generation,
//! a BLAKE3 Merkle state root identical on every validator).
//!
//! Both are pure: no I/O, no clock (the block's time is the only time the
//! state machine reads). Around them, the shell: [`link`] (the
//! validators' own authenticated TCP links) and [`run`] (one validator:
//! its files, its links, anomalies in, commits out on a channel).
//!
//! [`bus`] puts a validator on Ben's bus: anomalies in (refused ones
//! dead-lettered); commits, policies (with their block and QC) and
//! reputation out, signed by the validator; `ben up` runs four.
//!
//! [`persist`] writes each committed block into SQL; [`slots`] keeps a
//! small record durable with one data flush (the safety state, the block
//! store's head). `ben validator` (`ben`'s cluster mode) runs one as its
//! own process.

pub mod bus;
pub mod link;
pub mod mempool;
pub mod persist;
pub mod run;
pub mod slots;
pub mod state;
