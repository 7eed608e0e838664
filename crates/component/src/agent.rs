//! The component side of the activation protocol (DESIGN.md §3).

use crate::{subjects, Deps};
use arc_swap::ArcSwapOption;
use ben_store::{Key, Store};
use ben_wire::pb;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a role turns its artifacts into something it runs.
pub trait Role: Send + Sync + 'static {
    /// `spine`, `proxy`, … (matches the ledger's role map).
    const NAME: &'static str;
    type Compiled: Send + Sync + 'static;
    fn compile(
        &self,
        artifacts: &BTreeMap<String, Vec<u8>>,
        version: &str,
    ) -> Result<Self::Compiled, String>;
}

/// A compiled intent version.
pub struct Loaded<C> {
    pub version: String,
    pub compiled: C,
}

/// The currently active intent of one component, swapped without pausing
/// readers.
pub struct Active<C> {
    cur: ArcSwapOption<Loaded<C>>,
}

impl<C> Default for Active<C> {
    fn default() -> Self {
        Active {
            cur: ArcSwapOption::empty(),
        }
    }
}

impl<C> Active<C> {
    /// One consistent snapshot: use it for a whole record.
    pub fn load(&self) -> Option<Arc<Loaded<C>>> {
        self.cur.load_full()
    }

    pub fn version(&self) -> Option<String> {
        self.cur.load().as_ref().map(|l| l.version.clone())
    }

    pub(crate) fn swap(&self, l: Arc<Loaded<C>>) {
        self.cur.store(Some(l));
    }
}

/// Counts an agent keeps (for status and tests).
#[derive(Debug, Default)]
pub struct AgentStats {
    pub prepared: AtomicU64,
    pub failed: AtomicU64,
    pub activated: AtomicU64,
    pub rejected_messages: AtomicU64,
}

/// Runs the component side of the activation protocol for role `R`.
pub struct IntentAgent<R: Role> {
    deps: Deps,
    role: R,
    pub active: Arc<Active<R::Compiled>>,
    prepared: Mutex<Option<Arc<Loaded<R::Compiled>>>>,
    pub stats: Arc<AgentStats>,
    ready: tokio::sync::watch::Sender<bool>,
}

/// Artifact name → bytes.
pub type Artifacts = BTreeMap<String, Vec<u8>>;
/// Artifact name → BLAKE3 hex.
pub type Hashes = BTreeMap<String, String>;

/// Artifacts of `role` in an announce, fetched and verified.
pub fn fetch_role_artifacts(
    store: &dyn Store,
    role: &str,
    ann: &pb::Announce,
) -> Result<(Artifacts, Hashes), String> {
    let names = ann
        .roles
        .get(role)
        .map(|r| r.names.clone())
        .unwrap_or_default();
    let mut arts = BTreeMap::new();
    let mut hashes = BTreeMap::new();
    for name in names {
        let hex = ann
            .artifacts
            .get(&name)
            .ok_or_else(|| format!("announce lists `{name}` for role {role} without a hash"))?;
        let key = Key::parse(hex).map_err(|e| e.to_string())?;
        let bytes = store
            .get(&key)
            .map_err(|e| format!("fetching {name}: {e}"))?;
        hashes.insert(name.clone(), hex.clone());
        arts.insert(name, bytes);
    }
    Ok((arts, hashes))
}

impl<R: Role> IntentAgent<R> {
    pub fn new(deps: Deps, role: R) -> Arc<Self> {
        Arc::new(IntentAgent {
            deps,
            role,
            active: Arc::new(Active::default()),
            prepared: Mutex::new(None),
            stats: Arc::new(AgentStats::default()),
            ready: tokio::sync::watch::channel(false).0,
        })
    }

    async fn ack(
        &self,
        version: &str,
        phase: pb::ack::Phase,
        hashes: BTreeMap<String, String>,
        reason: String,
    ) {
        let ack = pb::Ack {
            component: self.deps.id.clone(),
            version: version.to_string(),
            phase: phase as i32,
            hashes,
            reason,
        };
        let _ = self
            .deps
            .bus
            .publish(subjects::ACK, self.deps.signer.seal_bytes(&ack))
            .await;
    }

    /// Prepares `ann` (if it names us): fetch, verify, compile, ack.
    pub async fn on_announce(&self, ann: pb::Announce) {
        if !ann.required.contains(&self.deps.id) {
            return;
        }
        let result = fetch_role_artifacts(self.deps.store.as_ref(), R::NAME, &ann)
            .and_then(|(arts, hashes)| self.role.compile(&arts, &ann.version).map(|c| (c, hashes)));
        match result {
            Ok((compiled, hashes)) => {
                let loaded = Arc::new(Loaded {
                    version: ann.version.clone(),
                    compiled,
                });
                if let Ok(mut p) = self.prepared.lock() {
                    *p = Some(loaded);
                }
                self.stats.prepared.fetch_add(1, Ordering::Relaxed);
                self.ack(
                    &ann.version,
                    pb::ack::Phase::Prepared,
                    hashes,
                    String::new(),
                )
                .await;
            }
            Err(reason) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(component = %self.deps.id, version = %ann.version, %reason, "prepare failed");
                self.ack(
                    &ann.version,
                    pb::ack::Phase::Failed,
                    BTreeMap::new(),
                    reason,
                )
                .await;
            }
        }
    }

    /// Swaps in the prepared version when told to.
    pub async fn on_activate(&self, act: pb::Activate) {
        if !act.required.contains(&self.deps.id) {
            return;
        }
        let prepared = self.prepared.lock().ok().and_then(|p| p.clone());
        match prepared {
            Some(l) if l.version == act.version => {
                self.active.swap(l);
                self.stats.activated.fetch_add(1, Ordering::Relaxed);
                self.ack(
                    &act.version,
                    pb::ack::Phase::Active,
                    BTreeMap::new(),
                    String::new(),
                )
                .await;
            }
            // Already active (a duplicate activate): ack again, idempotently.
            _ if self.active.version().as_deref() == Some(act.version.as_str()) => {
                self.ack(
                    &act.version,
                    pb::ack::Phase::Active,
                    BTreeMap::new(),
                    String::new(),
                )
                .await;
            }
            _ => {
                // Say so (it restarted after preparing, or the prepare was
                // lost): the ledger stops waiting for it and catches it up.
                let reason = format!(
                    "activate {} but that version was never prepared here",
                    act.version
                );
                self.ack(
                    &act.version,
                    pb::ack::Phase::Failed,
                    BTreeMap::new(),
                    reason.clone(),
                )
                .await;
                self.deps.dead_letter(subjects::ACTIVATE, reason, 0).await;
            }
        }
    }

    pub fn on_abort(&self, ab: pb::Abort) {
        if let Ok(mut p) = self.prepared.lock() {
            if p.as_ref().is_some_and(|l| l.version == ab.version) {
                *p = None;
            }
        }
    }

    /// Loads a version directly (a component starting after a deploy
    /// fetches the active version before it takes traffic).
    pub fn load_now(&self, ann: &pb::Announce) -> Result<(), String> {
        let (arts, _) = fetch_role_artifacts(self.deps.store.as_ref(), R::NAME, ann)?;
        let compiled = self.role.compile(&arts, &ann.version)?;
        self.active.swap(Arc::new(Loaded {
            version: ann.version.clone(),
            compiled,
        }));
        Ok(())
    }

    /// Resolves once the agent listens to the intent plane and has loaded
    /// the active version (if there is one): take traffic only after this.
    pub async fn ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// A component that starts after a version was finalized loads it
    /// before taking traffic. Returns the version loaded, if any.
    pub async fn bootstrap(&self) -> Option<String> {
        let reply = self
            .deps
            .bus
            .request(
                subjects::ACTIVE,
                self.deps.id.clone().into_bytes(),
                Duration::from_secs(2),
            )
            .await
            .ok()?;
        let ann = match ben_wire::open_bytes::<pb::Announce>(&reply.payload, &self.deps.keyring) {
            Ok(v) => v.into_inner(),
            Err(e) => {
                self.reject(subjects::ACTIVE, e, &reply.payload).await;
                return None;
            }
        };
        if ann.version.is_empty() || !ann.required.contains(&self.deps.id) {
            return None;
        }
        match self.load_now(&ann) {
            Ok(()) => Some(ann.version),
            Err(reason) => {
                tracing::warn!(component = %self.deps.id, %reason, "could not load the active version at start");
                None
            }
        }
    }

    /// Listens to the intent plane until the bus closes. Subscribes first,
    /// then loads the active version, so no announce in between is missed.
    pub async fn run(self: Arc<Self>) -> Result<(), ben_bus::BusError> {
        let bus = self.deps.bus.clone();
        let mut ann = bus.subscribe(subjects::ANNOUNCE, None).await?;
        let mut act = bus.subscribe(subjects::ACTIVATE, None).await?;
        let mut abo = bus.subscribe(subjects::ABORT, None).await?;
        self.bootstrap().await;
        self.ready.send_replace(true);
        loop {
            tokio::select! {
                m = ann.next() => {
                    let Some(m) = m else { break };
                    match ben_wire::open_bytes::<pb::Announce>(&m.payload, &self.deps.keyring) {
                        Ok(v) => self.on_announce(v.into_inner()).await,
                        Err(e) => self.reject(subjects::ANNOUNCE, e, &m.payload).await,
                    }
                }
                m = act.next() => {
                    let Some(m) = m else { break };
                    match ben_wire::open_bytes::<pb::Activate>(&m.payload, &self.deps.keyring) {
                        Ok(v) => self.on_activate(v.into_inner()).await,
                        Err(e) => self.reject(subjects::ACTIVATE, e, &m.payload).await,
                    }
                }
                m = abo.next() => {
                    let Some(m) = m else { break };
                    match ben_wire::open_bytes::<pb::Abort>(&m.payload, &self.deps.keyring) {
                        Ok(v) => self.on_abort(v.into_inner()),
                        Err(e) => self.reject(subjects::ABORT, e, &m.payload).await,
                    }
                }
            }
        }
        Ok(())
    }

    async fn reject(&self, subject: &str, e: ben_wire::WireError, bytes: &[u8]) {
        self.stats.rejected_messages.fetch_add(1, Ordering::Relaxed);
        self.deps
            .dead_letter_of(subject, e.to_string(), bytes.len(), bytes)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::setup;
    use ben_bus::Bus;
    use ben_wire::{Keyring, Signer};

    struct Upper;
    impl Role for Upper {
        const NAME: &'static str = "spine";
        type Compiled = String;
        fn compile(&self, arts: &BTreeMap<String, Vec<u8>>, _v: &str) -> Result<String, String> {
            let b = arts.get("pack/p").ok_or("no pack/p")?;
            let s = String::from_utf8(b.clone()).map_err(|e| e.to_string())?;
            if s.contains("broken") {
                return Err("does not compile: broken".into());
            }
            Ok(s.to_uppercase())
        }
    }

    fn announce(deps: &Deps, version: &str, body: &[u8]) -> pb::Announce {
        let key = deps.store.put(body).unwrap();
        let mut artifacts = BTreeMap::new();
        artifacts.insert("pack/p".to_string(), key.to_string());
        let mut roles = BTreeMap::new();
        roles.insert(
            "spine".to_string(),
            pb::ArtifactNames {
                names: vec!["pack/p".into()],
            },
        );
        pb::Announce {
            version: version.into(),
            artifacts,
            roles,
            required: vec!["spine-1".into()],
        }
    }

    async fn next_ack(sub: &mut ben_bus::Subscription, keys: &Keyring) -> pb::Ack {
        let m = tokio::time::timeout(Duration::from_secs(2), sub.next())
            .await
            .unwrap()
            .unwrap();
        ben_wire::open_bytes::<pb::Ack>(&m.payload, keys)
            .unwrap()
            .into_inner()
    }

    #[tokio::test]
    async fn prepare_activate_swap_and_failures() {
        let (deps, ledger, bus) = setup("a");
        let agent = IntentAgent::new(deps.clone(), Upper);
        tokio::spawn(agent.clone().run());
        let mut acks = bus.subscribe(subjects::ACK, None).await.unwrap();
        let mut dlq = bus.subscribe(subjects::DLQ, None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;

        let ann = announce(&deps, "v1", b"flag a");
        bus.publish(subjects::ANNOUNCE, ledger.seal_bytes(&ann))
            .await
            .unwrap();
        let ack = next_ack(&mut acks, &deps.keyring).await;
        assert_eq!(ack.phase, pb::ack::Phase::Prepared as i32);
        assert_eq!(ack.hashes, ann.artifacts);
        assert_eq!(agent.active.version(), None, "prepared is not active");
        bus.publish(
            subjects::ACTIVATE,
            ledger.seal_bytes(&pb::Activate {
                version: "v1".into(),
                required: vec!["spine-1".into()],
            }),
        )
        .await
        .unwrap();
        let ack = next_ack(&mut acks, &deps.keyring).await;
        assert_eq!(ack.phase, pb::ack::Phase::Active as i32);
        assert_eq!(agent.active.load().unwrap().compiled, "FLAG A");

        // A version that does not compile: failed, v1 stays.
        let bad = announce(&deps, "v2", b"broken");
        bus.publish(subjects::ANNOUNCE, ledger.seal_bytes(&bad))
            .await
            .unwrap();
        let ack = next_ack(&mut acks, &deps.keyring).await;
        assert_eq!(ack.phase, pb::ack::Phase::Failed as i32);
        assert!(ack.reason.contains("broken"), "{}", ack.reason);
        assert_eq!(agent.active.version().as_deref(), Some("v1"));

        // A forged announce (unknown key) goes to the DLQ.
        let forger = Signer::from_secret([66; 32]);
        bus.publish(
            subjects::ANNOUNCE,
            forger.seal_bytes(&announce(&deps, "v3", b"x")),
        )
        .await
        .unwrap();
        let m = tokio::time::timeout(Duration::from_secs(2), dlq.next())
            .await
            .unwrap()
            .unwrap();
        // Signed by the component that wrote it.
        let dl = ben_wire::open_bytes::<pb::DeadLetter>(&m.payload, &deps.keyring)
            .unwrap()
            .into_inner();
        assert!(dl.reason.contains("unknown signing key"), "{}", dl.reason);
        assert_eq!(dl.sender, "spine-1");
        assert_eq!(dl.key_id, forger.id());
        assert_eq!(agent.active.version().as_deref(), Some("v1"));
    }

    /// A key trusted as a component cannot speak for the ledger: its
    /// announce and activate are dead-lettered with the reason, and
    /// nothing is prepared or activated (invariant 8).
    #[tokio::test]
    async fn a_components_key_cannot_announce_or_activate() {
        let (deps, _ledger, bus) = setup("c");
        let agent = IntentAgent::new(deps.clone(), Upper);
        tokio::spawn(agent.clone().run());
        let mut acks = bus.subscribe(subjects::ACK, None).await.unwrap();
        let mut dlq = bus.subscribe(subjects::DLQ, None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        // `deps.signer` is spine-1's own key, trusted in the keyring.
        let ann = announce(&deps, "v1", b"flag a");
        bus.publish(subjects::ANNOUNCE, deps.signer.seal_bytes(&ann))
            .await
            .unwrap();
        let act = pb::Activate {
            version: "v1".into(),
            required: vec!["spine-1".into()],
        };
        bus.publish(subjects::ACTIVATE, deps.signer.seal_bytes(&act))
            .await
            .unwrap();
        let mut reasons = Vec::new();
        for _ in 0..2 {
            let m = tokio::time::timeout(Duration::from_secs(2), dlq.next())
                .await
                .unwrap()
                .unwrap();
            let dl = ben_wire::open_bytes::<pb::DeadLetter>(&m.payload, &deps.keyring)
                .unwrap()
                .into_inner();
            reasons.push(dl.reason);
        }
        // Two subscriptions: the order across them is not fixed.
        reasons.sort();
        assert_eq!(
            reasons,
            ["activate", "announce"]
                .map(|k| format!("`spine-1` (role spine) may not sign `{k}` messages"))
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(200), acks.next())
                .await
                .is_err(),
            "nothing prepared, nothing acked"
        );
        assert_eq!(agent.active.version(), None);
        assert_eq!(agent.stats.prepared.load(Ordering::Relaxed), 0);
        assert_eq!(agent.stats.rejected_messages.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn tampered_store_blob_fails_prepare() {
        let (deps, ledger, bus) = setup("b");
        let agent = IntentAgent::new(deps.clone(), Upper);
        tokio::spawn(agent.clone().run());
        let mut acks = bus.subscribe(subjects::ACK, None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut ann = announce(&deps, "v1", b"flag a");
        // The announce names a hash the store does not hold the bytes of.
        ann.artifacts
            .insert("pack/p".into(), Key::of(b"something else").to_string());
        bus.publish(subjects::ANNOUNCE, ledger.seal_bytes(&ann))
            .await
            .unwrap();
        let ack = next_ack(&mut acks, &deps.keyring).await;
        assert_eq!(ack.phase, pb::ack::Phase::Failed as i32);
        assert!(ack.reason.contains("no artifact"), "{}", ack.reason);
    }
}
