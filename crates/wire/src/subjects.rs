//! Bus subjects: a fixed contract between the ledger, the components and
//! the apps' sidecars, named once here for every crate that publishes or
//! subscribes (`ben_control::subjects` and `ben_component::subjects` name
//! the same constants).

/// Ledger → components: signed `Announce` (prepare this version).
pub const ANNOUNCE: &str = "ben.intent.announce";
/// Ledger → components: signed `Activate` (every required one prepared).
pub const ACTIVATE: &str = "ben.intent.activate";
/// Ledger → components: signed `Abort` (discard the prepared version).
pub const ABORT: &str = "ben.intent.abort";
/// Components → ledger: signed `Ack` (PREPARED / FAILED / ACTIVE).
pub const ACK: &str = "ben.intent.ack";
/// Components → ledger (and orchestrator): signed `Heartbeat`.
pub const HEARTBEAT: &str = "ben.health.heartbeat";
/// Messages that failed verification or processing: `DeadLetter` with the
/// reason, never the value.
pub const DLQ: &str = "ben.dlq";
/// Request/reply: a starting component asks for the active version
/// (payload: its id); the reply is a signed `Announce` naming it.
pub const ACTIVE: &str = "ben.intent.active";
/// sidecar → proxy
pub const PROXY: &str = "ben.data.proxy";
/// proxy → spine
pub const SPINE: &str = "ben.data.spine";
/// proxy → Lucius
pub const LUCIUS: &str = "ben.data.lucius";
/// spine → detector
pub const DETECTOR: &str = "ben.data.detector";

/// detector → the sidecar of `app`
pub fn signal(app: &str) -> String {
    format!("ben.signal.{app}")
}
