//! Simulated components for tests (feature `testkit`): each speaks the
//! real intent protocol on the bus — signed heartbeats, verified announces,
//! artifacts fetched from the real store and checked against their keys,
//! signed acks — with an optional fault.

use crate::{subjects, Clock};
use ben_bus::Bus;
use ben_store::{Key, Store};
use ben_wire::{open_bytes, pb, Keyring, Signer};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// How a simulated component behaves on announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Fetches, verifies, "compiles" (parses the JSON), prepares, activates.
    Healthy,
    /// Acks FAILED with this reason.
    FailPrepare(String),
    /// Acks PREPARED with a wrong hash for one artifact.
    WrongHash,
    /// Never answers announce (crashed mid-deploy, but still heartbeats).
    Silent,
    /// Prepares and switches on activate but never acks ACTIVE (it stops
    /// between the two).
    NoActiveAck,
}

pub struct SimSpec {
    pub id: String,
    pub role: String,
    pub behaviour: Behaviour,
    pub heartbeat_every: Duration,
}

/// A running simulated component.
pub struct SimComponent {
    running: Arc<Mutex<Option<String>>>,
    task: JoinHandle<()>,
}

impl SimComponent {
    /// The version it runs (switched on activate).
    pub fn running(&self) -> Option<String> {
        self.running.lock().ok().and_then(|r| r.clone())
    }

    /// Stops it (no more heartbeats or acks).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for SimComponent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The key a simulated component `id` signs with: derived from its id, so
/// a test can build the ledger's keyring before the components start.
pub fn sim_signer(id: &str) -> Signer {
    Signer::from_secret(*blake3::hash(format!("ben-testkit-sim/{id}").as_bytes()).as_bytes())
}

/// The roles of Ben's data path and the artifact kinds each fetches, as
/// the component table (`ben_runtime::KINDS`) declares them — for the
/// ledger's own tests, which run below the table (`ben-runtime` checks
/// that the two agree).
pub fn roles() -> crate::RoleArtifacts {
    let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        ("sidecar".into(), own(&["schema/", "contract/", "settings"])),
        (
            "proxy".into(),
            own(&["schema/", "pack/", "migration/", "settings"]),
        ),
        (
            "spine".into(),
            own(&["schema/", "pack/", "migration/", "playbook/", "settings"]),
        ),
        (
            "detector".into(),
            own(&["schema/", "playbook/", "settings"]),
        ),
        (
            "lucius".into(),
            own(&["schema/", "pack/", "migration/", "settings"]),
        ),
    ]
}

/// Roles of the simulated components [`sim_keyring`] trusts.
pub const SIM_ROLES: [&str; 5] = ["sidecar", "proxy", "spine", "detector", "lucius"];

/// A keyring trusting the [`sim_signer`] of `<role>-<n>` for every role of
/// [`SIM_ROLES`] and `n` in `0..per_role`, each bound to its id.
pub fn sim_keyring(per_role: usize) -> Keyring {
    let mut ring = Keyring::new();
    for role in SIM_ROLES {
        for n in 0..per_role {
            let id = format!("{role}-{n}");
            // Every SIM_ROLES stem names a role.
            let _ = ring.trust_id(&id, sim_signer(&id).public());
        }
    }
    ring
}

/// What a component of `role` fetches and verifies for an announce:
/// name → hash, or the reason it cannot prepare.
pub fn fetch_role_artifacts(
    a: &pb::Announce,
    role: &str,
    store: &dyn Store,
) -> Result<BTreeMap<String, String>, String> {
    let names = a
        .roles
        .get(role)
        .map(|n| n.names.clone())
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    for name in names {
        let hash = a
            .artifacts
            .get(&name)
            .ok_or_else(|| format!("announce names {name} for {role} without a hash"))?;
        let key = Key::parse(hash).map_err(|e| format!("{name}: {e}"))?;
        let bytes = store.get(&key).map_err(|e| format!("{name}: {e}"))?;
        if Key::of(&bytes) != key {
            return Err(format!("{name}: bytes do not match {key}"));
        }
        serde_json::from_slice::<serde_json::Value>(&bytes)
            .map_err(|e| format!("{name} does not compile: {e}"))?;
        out.insert(name, hash.clone());
    }
    Ok(out)
}

/// Starts a simulated component on the bus.
pub async fn spawn(
    spec: SimSpec,
    bus: Arc<dyn Bus>,
    store: Arc<dyn Store>,
    signer: Arc<Signer>,
    ledger_keys: Keyring,
    clock: Arc<dyn Clock>,
) -> Result<SimComponent, ben_bus::BusError> {
    let mut announces = bus.subscribe(subjects::ANNOUNCE, None).await?;
    let mut activates = bus.subscribe(subjects::ACTIVATE, None).await?;
    let mut aborts = bus.subscribe(subjects::ABORT, None).await?;
    let running = Arc::new(Mutex::new(None::<String>));
    let run = running.clone();
    let task = tokio::spawn(async move {
        let mut prepared: Option<String> = None;
        let mut seq = 0u64;
        let mut beat = tokio::time::interval(spec.heartbeat_every);
        let ack = |version: &str, phase: pb::ack::Phase| pb::Ack {
            component: spec.id.clone(),
            version: version.to_string(),
            phase: phase as i32,
            ..Default::default()
        };
        loop {
            tokio::select! {
                _ = beat.tick() => {
                    seq += 1;
                    let hb = pb::Heartbeat {
                        component: spec.id.clone(),
                        role: spec.role.clone(),
                        seq,
                        at_ns: clock.now_ns(),
                        intent_version: run.lock().ok().and_then(|r| r.clone()).unwrap_or_default(),
                        ..Default::default()
                    };
                    let _ = bus.publish(subjects::HEARTBEAT, signer.seal_bytes(&hb)).await;
                }
                m = announces.next() => {
                    let Some(m) = m else { break };
                    let Ok(a) = open_bytes::<pb::Announce>(&m.payload, &ledger_keys) else { continue };
                    let a = a.into_inner();
                    if !a.required.contains(&spec.id) {
                        continue;
                    }
                    let reply = match &spec.behaviour {
                        Behaviour::Silent => continue,
                        Behaviour::FailPrepare(r) => pb::Ack { reason: r.clone(), ..ack(&a.version, pb::ack::Phase::Failed) },
                        Behaviour::Healthy | Behaviour::WrongHash | Behaviour::NoActiveAck => {
                            match fetch_role_artifacts(&a, &spec.role, store.as_ref()) {
                                Ok(mut hashes) => {
                                    if spec.behaviour == Behaviour::WrongHash {
                                        if let Some(h) = hashes.values_mut().next() {
                                            *h = "0".repeat(64);
                                        }
                                    }
                                    prepared = Some(a.version.clone());
                                    pb::Ack { hashes: hashes.into_iter().collect(), ..ack(&a.version, pb::ack::Phase::Prepared) }
                                }
                                Err(reason) => pb::Ack { reason, ..ack(&a.version, pb::ack::Phase::Failed) },
                            }
                        }
                    };
                    let _ = bus.publish(subjects::ACK, signer.seal_bytes(&reply)).await;
                }
                m = activates.next() => {
                    let Some(m) = m else { break };
                    let Ok(a) = open_bytes::<pb::Activate>(&m.payload, &ledger_keys) else { continue };
                    let a = a.into_inner();
                    if !a.required.contains(&spec.id) || prepared.as_deref() != Some(a.version.as_str()) {
                        continue;
                    }
                    if let Ok(mut r) = run.lock() {
                        *r = Some(a.version.clone());
                    }
                    if spec.behaviour == Behaviour::NoActiveAck {
                        continue;
                    }
                    let _ = bus.publish(subjects::ACK, signer.seal_bytes(&ack(&a.version, pb::ack::Phase::Active))).await;
                }
                m = aborts.next() => {
                    let Some(m) = m else { break };
                    let Ok(a) = open_bytes::<pb::Abort>(&m.payload, &ledger_keys) else { continue };
                    if prepared.as_deref() == Some(a.get().version.as_str()) {
                        prepared = None;
                    }
                }
            }
        }
    });
    Ok(SimComponent { running, task })
}
