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

pub mod age;

use arc_swap::ArcSwapOption;
use ben_bus::Bus;
use ben_store::{Key, Store};
pub use ben_wire::view::RecordView;
use ben_wire::{pb, Keyring, Signer};
use prost::Message;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Subjects of the intent and health planes.
pub mod subjects {
    pub const ANNOUNCE: &str = "ben.intent.announce";
    pub const ACTIVATE: &str = "ben.intent.activate";
    pub const ABORT: &str = "ben.intent.abort";
    pub const ACK: &str = "ben.intent.ack";
    pub const HEARTBEAT: &str = "ben.health.heartbeat";
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
}

/// Time, injected: components never read the clock themselves.
pub trait Clock: Send + Sync {
    fn now_ns(&self) -> i64;
}

/// The wall clock (shells only).
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0)
    }
}

/// What a component is given.
#[derive(Clone)]
pub struct Deps {
    /// Unique component id, e.g. `spine-1`.
    pub id: String,
    pub bus: Arc<dyn Bus>,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub signer: Arc<Signer>,
    /// Keys this component trusts (the ledger's and the other components').
    pub keyring: Arc<Keyring>,
    /// Started when the component is asked to stop: its data-path loops
    /// ([`consume`]) take no new work and finish what they hold.
    pub drain: Drain,
}

/// The switch that asks a component to drain before it stops: each
/// [`consume`] loop then leaves its queue group (NATS stops sending it
/// batches; the others in the group get them), processes and publishes
/// every batch already delivered to it, and returns. Scaling down or
/// stopping a process therefore hands its share of the traffic to the
/// others instead of losing what it held.
#[derive(Clone)]
pub struct Drain(Arc<tokio::sync::watch::Sender<bool>>);

impl Default for Drain {
    fn default() -> Self {
        Drain(Arc::new(tokio::sync::watch::channel(false).0))
    }
}

impl Drain {
    /// Starts draining (idempotent).
    pub fn start(&self) {
        self.0.send_replace(true);
    }

    /// Resolves once draining has started.
    pub async fn wait(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }
}

impl Deps {
    /// Publishes a dead letter: where, why, never the value.
    pub async fn dead_letter(&self, subject: &str, reason: impl Into<String>, size: usize) {
        let dl = pb::DeadLetter {
            subject: subject.to_string(),
            reason: reason.into(),
            at_ns: self.clock.now_ns(),
            sender: self.id.clone(),
            size: size as u64,
        };
        tracing::warn!(component = %self.id, subject, reason = %dl.reason, "dead letter");
        let _ = self.bus.publish(subjects::DLQ, dl.encode_to_vec()).await;
    }
}

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

    fn swap(&self, l: Arc<Loaded<C>>) {
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
                self.reject(subjects::ACTIVE, e, reply.payload.len()).await;
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
                        Err(e) => self.reject(subjects::ANNOUNCE, e, m.payload.len()).await,
                    }
                }
                m = act.next() => {
                    let Some(m) = m else { break };
                    match ben_wire::open_bytes::<pb::Activate>(&m.payload, &self.deps.keyring) {
                        Ok(v) => self.on_activate(v.into_inner()).await,
                        Err(e) => self.reject(subjects::ACTIVATE, e, m.payload.len()).await,
                    }
                }
                m = abo.next() => {
                    let Some(m) = m else { break };
                    match ben_wire::open_bytes::<pb::Abort>(&m.payload, &self.deps.keyring) {
                        Ok(v) => self.on_abort(v.into_inner()),
                        Err(e) => self.reject(subjects::ABORT, e, m.payload.len()).await,
                    }
                }
            }
        }
        Ok(())
    }

    async fn reject(&self, subject: &str, e: ben_wire::WireError, size: usize) {
        self.stats.rejected_messages.fetch_add(1, Ordering::Relaxed);
        self.deps.dead_letter(subject, e.to_string(), size).await;
    }
}

/// A message a component wants published.
pub struct Publish {
    pub subject: String,
    pub payload: Vec<u8>,
}

impl Publish {
    pub fn new(subject: impl Into<String>, payload: Vec<u8>) -> Self {
        Publish {
            subject: subject.into(),
            payload,
        }
    }
}

/// What a data-path handler sends on for the records of one input batch:
/// records appended, as they come, to one encoded [`pb::RecordBatch`] per
/// subject (order kept), and other messages (signals) as they are.
#[derive(Default)]
pub struct Outbox {
    batches: Vec<(&'static str, Vec<u8>)>,
    messages: Vec<Publish>,
}

impl Outbox {
    fn batch(&mut self, subject: &'static str) -> &mut Vec<u8> {
        let i = match self.batches.iter().position(|(s, _)| *s == subject) {
            Some(i) => i,
            None => {
                self.batches.push((subject, Vec::new()));
                self.batches.len() - 1
            }
        };
        &mut self.batches[i].1
    }

    /// Sends `rec` on `subject` in this batch's message for that subject.
    pub fn record(&mut self, subject: &'static str, rec: pb::Record) {
        ben_wire::view::push_record(self.batch(subject), &rec);
    }

    /// Sends a record on unchanged (its encoding as it arrived).
    pub fn raw(&mut self, subject: &'static str, rec: &RecordView) {
        ben_wire::view::push_raw(self.batch(subject), rec.raw());
    }

    /// Publishes `p` after this batch's records.
    pub fn publish(&mut self, p: Publish) {
        self.messages.push(p);
    }

    /// Publishes everything queued and empties the outbox.
    pub async fn flush(&mut self, bus: &dyn ben_bus::Bus) {
        for (subject, batch) in self.batches.drain(..) {
            let _ = bus.publish(subject, batch).await;
        }
        for p in self.messages.drain(..) {
            let _ = bus.publish(&p.subject, p.payload).await;
        }
    }
}

/// How [`consume`] reads the records of a batch message: decoded into
/// [`pb::Record`]s, or in place as [`RecordView`]s for a hop that passes
/// records on unchanged.
pub trait Incoming: Sized {
    /// What a refused record's dead letter needs (its id and size), taken
    /// before the handler consumes the record.
    type Label;
    fn read(payload: Vec<u8>) -> Result<Vec<Self>, String>;
    fn received_ns(&self) -> i64;
    fn label(&self) -> Self::Label;
    fn describe(label: Self::Label) -> (String, usize);
}

impl Incoming for pb::Record {
    type Label = (String, usize);
    fn read(payload: Vec<u8>) -> Result<Vec<Self>, String> {
        pb::RecordBatch::decode(payload.as_slice())
            .map(|b| b.records)
            .map_err(|e| e.to_string())
    }
    fn received_ns(&self) -> i64 {
        self.received_ns
    }
    fn label(&self) -> (String, usize) {
        (self.id.clone(), self.encoded_len())
    }
    fn describe(label: (String, usize)) -> (String, usize) {
        label
    }
}

impl Incoming for RecordView {
    type Label = RecordView;
    fn read(payload: Vec<u8>) -> Result<Vec<Self>, String> {
        ben_wire::view::read_batch(payload.into()).map_err(|e| e.to_string())
    }
    fn received_ns(&self) -> i64 {
        self.received_ns
    }
    fn label(&self) -> RecordView {
        // A shared slice and a few ranges: no copy.
        self.clone()
    }
    fn describe(v: RecordView) -> (String, usize) {
        (v.id().to_string(), v.raw().len())
    }
}

/// The data-path loop every component shares: take record batches from
/// `subject` (queue group `queue`), read them ([`Incoming`]), and hand each
/// record with one snapshot of the active intent (the same for the whole
/// batch) to `handle`, which puts what it sends on into the [`Outbox`];
/// after each batch the outbox is published, one message per subject. An
/// unreadable message, a batch arriving before any intent is active and
/// each record `handle` refuses (its `Err` is the reason) go to the
/// dead-letter subject. Runs until the bus closes.
pub async fn consume<C: Send + Sync + 'static, R: Incoming>(
    deps: &Deps,
    subject: &str,
    queue: &str,
    active: &Active<C>,
    load: &Load,
    mut handle: impl FnMut(&Arc<Loaded<C>>, R, &mut Outbox) -> Result<(), String>,
) -> Result<(), String> {
    let mut sub = deps
        .bus
        .subscribe(subject, Some(queue))
        .await
        .map_err(|e| e.to_string())?;
    let mut outbox = Outbox::default();
    let mut draining = false;
    let drain = deps.drain.wait();
    tokio::pin!(drain);
    loop {
        let m = tokio::select! {
            biased;
            _ = &mut drain, if !draining => {
                // No new batches; the ones already here still come out of
                // `next` until it ends.
                draining = true;
                sub.drain();
                continue;
            }
            m = sub.next() => m,
        };
        let Some(m) = m else { break };
        load.queue_depth
            .store(sub.rx.len() as u64, Ordering::Relaxed);
        let size = m.payload.len();
        let records = match R::read(m.payload) {
            Ok(b) => b,
            Err(e) => {
                deps.dead_letter(subject, format!("not a record batch: {e}"), size)
                    .await;
                continue;
            }
        };
        if let Some(first) = records.first().filter(|r| r.received_ns() > 0) {
            load.ages.record(
                deps.clock.now_ns() - first.received_ns(),
                records.len() as u64,
            );
        }
        let Some(loaded) = active.load() else {
            deps.dead_letter(
                subject,
                format!(
                    "a batch of {} records arrived before any intent is active; nothing evaluates it",
                    records.len()
                ),
                size,
            )
            .await;
            continue;
        };
        let mut refused = Vec::new();
        let mut ok = 0u64;
        for rec in records {
            // Kept for the dead letter: `handle` takes the record.
            let label = rec.label();
            match handle(&loaded, rec, &mut outbox) {
                Ok(()) => ok += 1,
                Err(reason) => refused.push((label, reason)),
            }
        }
        load.processed.fetch_add(ok, Ordering::Relaxed);
        outbox.flush(deps.bus.as_ref()).await;
        for (label, reason) in refused {
            let (id, size) = R::describe(label);
            deps.dead_letter(subject, format!("record {id}: {reason}"), size)
                .await;
        }
        // Let the process's other tasks (heartbeats, the intent agent) run
        // between batches: receiving from a full queue does not yield for
        // up to 128 messages, which on a single-threaded runtime under a
        // burst kept a detector's heartbeats away for over 10 s and got it
        // killed as hung.
        tokio::task::yield_now().await;
    }
    Ok(())
}

/// Load/throughput figures a component reports in its heartbeats.
#[derive(Debug, Default)]
pub struct Load {
    pub processed: AtomicU64,
    pub queue_depth: AtomicU64,
    /// How old records were when they arrived here (see [`age`]).
    pub ages: age::Ages,
    /// Records/s over the last heartbeat interval (f64 bits).
    pub rate_bits: AtomicU64,
}

impl Load {
    pub fn rate(&self) -> f64 {
        f64::from_bits(self.rate_bits.load(Ordering::Relaxed))
    }
}

/// Stops the heartbeat task when dropped (when its component's run ends,
/// crashes or is cancelled, it stops looking alive).
pub struct HeartbeatGuard(tokio::task::JoinHandle<()>);

impl Drop for HeartbeatGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts heartbeats that report `active`'s version; keep the guard alive
/// for as long as the component runs.
pub fn start_heartbeats<C: Send + Sync + 'static>(
    deps: &Deps,
    role: &'static str,
    active: Arc<Active<C>>,
    load: Arc<Load>,
) -> HeartbeatGuard {
    let version: Arc<dyn Fn() -> Option<String> + Send + Sync> = Arc::new(move || active.version());
    HeartbeatGuard(tokio::spawn(heartbeats(
        deps.clone(),
        role,
        version,
        load,
        Duration::from_secs(1),
    )))
}

/// Publishes a signed heartbeat every `every` until the bus closes.
pub async fn heartbeats(
    deps: Deps,
    role: &'static str,
    version: Arc<dyn Fn() -> Option<String> + Send + Sync>,
    load: Arc<Load>,
    every: Duration,
) {
    let mut seq = 0u64;
    let mut last = (deps.clock.now_ns(), 0u64);
    loop {
        seq += 1;
        let now = deps.clock.now_ns();
        let processed = load.processed.load(Ordering::Relaxed);
        let dt = ((now - last.0).max(1)) as f64 / 1e9;
        let rate = processed.saturating_sub(last.1) as f64 / dt;
        last = (now, processed);
        load.rate_bits.store(rate.to_bits(), Ordering::Relaxed);
        let hb = pb::Heartbeat {
            component: deps.id.clone(),
            role: role.to_string(),
            seq,
            at_ns: now,
            queue_depth: load.queue_depth.load(Ordering::Relaxed),
            records_per_s: rate,
            intent_version: version().unwrap_or_default(),
        };
        if deps
            .bus
            .publish(subjects::HEARTBEAT, deps.signer.seal_bytes(&hb))
            .await
            .is_err()
        {
            break;
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ben_bus::InProcessBus;
    use ben_store::FileStore;

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

    fn setup(dir: &str) -> (Deps, Signer, Arc<InProcessBus>) {
        let ledger = Signer::from_secret([9; 32]);
        let me = Signer::from_secret([1; 32]);
        let mut keys = Keyring::new();
        keys.trust(ledger.public());
        keys.trust(me.public());
        let d = std::env::temp_dir().join(format!("ben-comp-{dir}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let bus = Arc::new(InProcessBus::default());
        let deps = Deps {
            id: "spine-1".into(),
            bus: bus.clone(),
            store: Arc::new(FileStore::open(d).unwrap()),
            clock: Arc::new(SystemClock),
            signer: Arc::new(me),
            keyring: Arc::new(keys),
            drain: Default::default(),
        };
        (deps, ledger, bus)
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

    struct At(i64);
    impl Clock for At {
        fn now_ns(&self) -> i64 {
            self.0
        }
    }

    /// `consume` records each batch's age on arrival, weighted by its
    /// records, and on drain finishes what it was sent, then returns.
    #[tokio::test]
    async fn consume_records_ages_and_returns_after_draining() {
        let (mut deps, _, bus) = setup("ages");
        const NOW: i64 = 50_000_000_000;
        deps.clock = Arc::new(At(NOW));
        let active: Active<String> = Active::default();
        active.swap(Arc::new(Loaded {
            version: "v1".into(),
            compiled: String::new(),
        }));
        let load = Arc::new(Load::default());
        let mut out = bus.subscribe("ben.data.detector", None).await.unwrap();
        let task = {
            let (deps, load) = (deps.clone(), load.clone());
            tokio::spawn(async move {
                consume(
                    &deps,
                    "ben.data.spine",
                    "spines",
                    &active,
                    &load,
                    |_, r, o| {
                        o.record("ben.data.detector", r);
                        Ok(())
                    },
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let batch = |n: usize, age_ns: i64| pb::RecordBatch {
            records: (0..n)
                .map(|i| pb::Record {
                    id: format!("r{i}"),
                    received_ns: NOW - age_ns,
                    ..Default::default()
                })
                .collect(),
        };
        bus.publish("ben.data.spine", batch(3, 2_000_000).encode_to_vec())
            .await
            .unwrap();
        bus.publish("ben.data.spine", batch(1, 40_000_000).encode_to_vec())
            .await
            .unwrap();
        deps.drain.start();
        let done = tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("consume returns once drained")
            .unwrap();
        assert_eq!(done, Ok(()));
        let mut forwarded = 0;
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(50), out.next()).await {
            forwarded += pb::RecordBatch::decode(m.payload.as_slice())
                .unwrap()
                .records
                .len();
        }
        assert_eq!(forwarded, 4, "what was sent before the drain went on");
        let ages = load.ages.take();
        assert_eq!(ages.total(), 4);
        let p50 = ages.quantile_us(0.5).unwrap();
        assert!((2_000..=2_379).contains(&p50), "{p50}");
        let max = ages.quantile_us(1.0).unwrap();
        assert!((40_000..=47_568).contains(&max), "{max}");
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
        let dl = pb::DeadLetter::decode(m.payload.as_slice()).unwrap();
        assert!(dl.reason.contains("unknown signing key"), "{}", dl.reason);
        assert_eq!(agent.active.version().as_deref(), Some("v1"));
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
