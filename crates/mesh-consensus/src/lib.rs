//! # CyberMesh consensus: HotStuff 2-chain, sans-I/O
//!
//! The validators agree on every anomaly before anything is enforced
//! (DESIGN.md §2, invariant 9). This crate is the agreement itself, as a
//! pure state machine: messages and the time go in, [`Action`]s come out
//! (persist, send, commit), and the shell carries them out in order. No
//! I/O, no clock, no randomness, so the same code runs in the validator
//! process and under the seeded [`sim`]ulator.
//!
//! * [`safety`]: the voting rules and the state that is durable before a
//!   vote leaves (kept apart, small enough to audit);
//! * [`node`]: the block tree, pacemaker (round = max(QC, TC) + 1, timeouts
//!   growing ×1.5 a round since the last commit up to a cap, the f + 1 join
//!   rule, TCs broadcast, round-robin leaders, a heartbeat block from an
//!   idle leader every 500 ms), vote and timeout collection, block sync,
//!   equivocation evidence, and the 2-chain commit rule;
//! * [`types`]: blocks, votes, QCs, TCs, messages and their digests;
//! * [`crypto`]: Ed25519 with batch-verified QCs, and the simulator's
//!   cheap stand-in;
//! * [`wire`]: the messages as bounded protobuf;
//! * [`sim`]: the seeded simulation and its checker.
//!
//! ```
//! use ben_mesh_consensus::sim;
//! let s = sim::Scenario::from_seed(7, 4);
//! let out = sim::run(&s, false);
//! assert!(out.violations.is_empty(), "{:?}", out.violations);
//! ```

pub mod crypto;
pub mod node;
#[cfg(feature = "planted-bugs")]
pub mod planted;
pub mod safety;
pub mod sim;
pub mod types;
pub mod wire;

pub use crypto::{verify_certified, CertError, Crypto, Ed25519, SimCrypto};
pub use node::{Action, Config, Durable, Node, Pool, Root, Stats};
pub use safety::{Refusal, SafetyRules, SafetyState};
pub use sim::Byzantine;
pub use types::*;
