//! # The component skeleton
//!
//! Every runtime component (sidecar, proxy, spine, detector, Lucius) has
//! the same shape: `Config` + `async fn run(cfg, deps)`, where [`Deps`]
//! carries the injected bus, store, clock and keys, so the same code runs
//! in `ben up` and as its own process.
//!
//! [`IntentAgent`] is the component side of the activation protocol
//! (DESIGN.md §3): on a verified `announce` naming this component it
//! fetches its role's artifacts from the store (verified by hash), checks
//! them against the announced hashes, compiles them with the role's
//! [`Role::compile`], and acks `prepared` (or `failed` with the reason). On
//! `activate` it swaps the compiled intent in with `ArcSwap` — readers
//! never pause — and acks `active`; on `abort` it discards what it
//! prepared. Each record is processed against one loaded snapshot, so no
//! record is ever evaluated by a mix of versions.
//!
//! Where things are: [`subjects`] (subject names), `deps` ([`Deps`]),
//! `drain` ([`Drain`]), `dead_letter` ([`Deps::dead_letter`]), `agent`
//! ([`IntentAgent`], [`Role`], [`Active`]), `outbox` ([`Outbox`]),
//! `consume` ([`consume`], [`Incoming`]), `heartbeat` ([`Load`],
//! [`start_heartbeats`]), [`age`] (record ages); everything is re-exported
//! here, so callers name `ben_component::X`.

pub mod age;
mod agent;
mod clock;
mod consume;
mod dead_letter;
mod deps;
mod drain;
mod heartbeat;
mod outbox;
pub mod subjects;
#[cfg(test)]
mod test_support;

pub use agent::{
    fetch_role_artifacts, Active, AgentStats, Artifacts, Hashes, IntentAgent, Loaded, Role,
};
pub use ben_wire::view::RecordView;
pub use clock::{Clock, ManualClock, SystemClock};
pub use consume::{consume, Incoming};
pub use deps::Deps;
pub use drain::Drain;
pub use heartbeat::{heartbeats, start_heartbeats, HeartbeatGuard, Load};
pub use outbox::{Outbox, Publish};
