//! Deliberate bugs, compiled only with the `planted-bugs` feature, so the
//! simulator can show it catches them (`tests/planted.rs`).

use std::cell::Cell;

/// A bug to plant.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Bug {
    /// Commit a block's parent whenever the block is certified, rounds
    /// consecutive or not.
    NoConsecutiveCheck,
    /// Send a vote before the safety state that records it is durable.
    VoteBeforePersist,
}

thread_local! {
    static PLANTED: Cell<Option<Bug>> = const { Cell::new(None) };
}

/// Plants `bug` (or none) for this thread.
pub fn plant(bug: Option<Bug>) {
    PLANTED.with(|p| p.set(bug));
}

/// Whether `bug` is planted on this thread.
pub fn on(bug: Bug) -> bool {
    PLANTED.with(|p| p.get() == Some(bug))
}
