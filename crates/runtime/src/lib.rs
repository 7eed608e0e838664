//! # Runtime: what `ben up` and cluster mode share
//!
//! * [`table`] — the component table: one [`Kind`] entry per kind of
//!   component (role, start order, default count, scaling, where records
//!   end, what it subscribes to, how to build one). Both modes read it and
//!   nothing else to know what to run.
//! * [`start_control`] — the control plane (the ledger service and its
//!   HTTP API) with the responder that tells starting components the
//!   active version.
//! * [`metrics`] — a component's counters in one shape for both modes.
//! * [`random32`] — 32 bytes from the OS (keys).
//!
//! Layering: this crate wires components together and may use every
//! component crate; nothing below it uses it. `ben-embedded` (`ben up`) and
//! `ben-cluster` (`ben run`, `ben cluster up`) sit on top.

pub mod metrics;
pub mod table;

pub use table::{intent_roles, kind, kind_of_id, Env, Hop, Instance, Kind, Scale, Shared, KINDS};

use ben_bus::Bus;
use ben_component::subjects;
use ben_wire::{pb, Signer};
use std::sync::Arc;

/// 32 bytes of OS randomness (Ed25519 secrets, Beekeeper's key).
pub fn random32() -> Result<[u8; 32], String> {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).map_err(|e| format!("reading the OS's randomness: {e}"))?;
    Ok(b)
}

/// The running control plane.
pub struct ControlPlane {
    pub handle: ben_control::Handle,
    /// The `ben.intent.active` responder's task.
    pub responder: tokio::task::JoinHandle<()>,
}

impl ControlPlane {
    /// Stops the responder, the API and the ledger (closing its database).
    pub async fn shutdown(self) {
        self.responder.abort();
        self.handle.shutdown().await;
    }
}

/// Starts the ledger service with its API (the roles a bundle targets from
/// the component table), and answers `ben.intent.active` for starting
/// components.
pub async fn start_control(
    mut cfg: ben_control::Config,
    deps: ben_control::Deps,
) -> Result<ControlPlane, String> {
    cfg.roles = intent_roles();
    let (bus, signer) = (deps.bus.clone(), deps.signer.clone());
    let handle = ben_control::start(cfg, deps)
        .await
        .map_err(|e| e.to_string())?;
    let responder = tokio::spawn(active_responder(bus, handle.client(), signer));
    Ok(ControlPlane { handle, responder })
}

/// Answers `ben.intent.active` for starting components with a signed
/// announce of the active version naming the asker.
async fn active_responder(
    bus: Arc<dyn Bus>,
    client: ben_control::LedgerClient,
    signer: Arc<Signer>,
) {
    let Ok(mut sub) = bus.subscribe(subjects::ACTIVE, None).await else {
        return;
    };
    while let Some(m) = sub.next().await {
        let asker = String::from_utf8_lossy(&m.payload).to_string();
        let ann = match client.active().await {
            Ok(a) => pb::Announce {
                version: a.version.unwrap_or_default(),
                artifacts: a.artifacts,
                roles: a
                    .roles
                    .into_iter()
                    .map(|(r, n)| {
                        (
                            r,
                            pb::ArtifactNames {
                                names: n.into_iter().collect(),
                            },
                        )
                    })
                    .collect(),
                required: vec![asker],
            },
            Err(_) => pb::Announce::default(),
        };
        if let Err(e) = bus.reply(&m, signer.seal_bytes(&ann)).await {
            tracing::warn!(error = %e, "an active-intent request was not answered");
        }
    }
}

/// A verified heartbeat as the orchestrator's health core judges it.
pub fn beat_of(hb: pb::Heartbeat) -> ben_orchestrator::Beat {
    ben_orchestrator::Beat {
        component: hb.component,
        role: hb.role,
        seq: hb.seq,
        at_ns: hb.at_ns,
        queue_depth: hb.queue_depth,
        records_per_s: hb.records_per_s,
        intent_version: hb.intent_version,
    }
}
