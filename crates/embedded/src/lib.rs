//! # Embedded mode: `ben up`
//!
//! Everything in one process on embedded defaults: the in-process bus,
//! the files store and the SQLite ledger under the data dir (`.ben/`), the
//! HTTP API on 127.0.0.1:7420, Beekeeper, and every component of the
//! component table (`ben_runtime::KINDS`) — detectors and the CyberMesh AI
//! service, spines, proxies, Lucius, the sidecar — started in the table's
//! order and supervised by the orchestrator (restarted with backoff if one
//! exits or panics; a restarted component loads the active version before
//! it takes traffic).
//!
//! Keys: the ledger and every component get their own Ed25519 key from
//! the OS's randomness at start; all of them trust each other's public
//! keys (one process), each bound to its instance's id and role (`control`
//! the ledger, `spine-1` a spine, …): a key signs only its role's kinds,
//! and only in its own name (invariant 8). The Blot hmac key comes from `BEN_BLOT_KEY` or
//! `.ben/blot.key`.
//!
//! The data dir is private: made (or narrowed to) 0700, and the ledger's
//! and Lucius's databases (with their `-wal`/`-shm` files), the Blot key,
//! the files store and the API token (`api.token`, which every API call
//! but `/api/v1/health` needs; `benctl` reads it there) are 0600.
//!
//! Cluster mode (`ben run`, `ben cluster up`) is `ben-cluster`: the same
//! table, one OS process per component over NATS.

use ben_bee::{Beekeeper, Selector};
use ben_bus::{Bus, InProcessBus};
use ben_component::{subjects, Clock, Deps, Load, SystemClock};
use ben_runtime::{metrics::ComponentMetrics, random32, Hop, Instance, KINDS};
use ben_store::{FileStore, Store};
use ben_wire::{pb, Keyring, Signer};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `ben up` settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub api_addr: SocketAddr,
    /// The API's token; `None`: the one in `DATA_DIR/api.token`, made on
    /// first start ([`ben_control::auth::token_file`]).
    pub api_token: Option<ben_control::auth::ApiToken>,
    /// The sidecar's Unix socket (default `DATA_DIR/sidecar.sock`).
    pub socket: Option<PathBuf>,
    /// Beekeeper selectors on top of the bundles' `[[apps]]`.
    pub extra_selectors: Vec<Selector>,
    /// Instances per role where not the component table's count.
    pub counts: BTreeMap<&'static str, usize>,
    /// BEE lifetime.
    pub bee_ttl_ns: i64,
    pub prepare_timeout_ms: u64,
    /// Use NATS instead of the in-process bus (same components, same
    /// subjects).
    pub nats: Option<NatsConfig>,
    /// The CyberMesh AI service judges arriving flows at most once per this
    /// (streaming; the seed's 5 s cycle is a value of it).
    pub mesh_every: Duration,
    /// The AI service asks for a network's block once this many of its
    /// addresses attack within a minute (0: never).
    pub mesh_network_sources: usize,
    /// Keys of components outside this process (joining over NATS),
    /// trusted as the ids given, each in its id's role.
    pub trust: Vec<(String, ben_wire::VerifyingKey)>,
    /// Wraps the bus every component uses (tests inject faults with it).
    pub bus_layer: Option<BusLayer>,
    /// The live sensor (`ben up --sensor-iface IF`): with an interface,
    /// one sensor runs unless `counts` says otherwise.
    pub sensor: ben_runtime::table::SensorEnv,
    /// The enforcement agent's backend (`nftables`, `iptables`,
    /// `dry-run`; none: `BEN_ENFORCE`, else a dry run) and the network
    /// namespace whose firewall it holds (none: the host's).
    pub enforce_backend: Option<String>,
    pub enforce_netns: Option<String>,
}

/// A wrapper around the system's bus ([`Config::bus_layer`]).
pub type BusLayer = fn(Arc<dyn Bus>) -> Arc<dyn Bus>;

/// Running the bus over NATS.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    pub url: String,
    /// Put every subject under this prefix (several systems or test runs
    /// on one server).
    pub prefix: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from(".ben"),
            api_addr: SocketAddr::from(([127, 0, 0, 1], 7420)),
            api_token: None,
            socket: None,
            extra_selectors: vec![],
            counts: BTreeMap::new(),
            bee_ttl_ns: ben_bee::DEFAULT_TTL_NS,
            prepare_timeout_ms: 10_000,
            nats: None,
            mesh_every: ben_runtime::table::MESH_EVERY,
            mesh_network_sources: 0,
            trust: vec![],
            bus_layer: None,
            sensor: Default::default(),
            enforce_backend: None,
            enforce_netns: None,
        }
    }
}

impl Config {
    pub fn socket_path(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| self.data_dir.join("sidecar.sock"))
    }
}

/// Live counters of the running system.
pub struct Stats {
    /// Each kind's counters (the process's `ben_runtime::Shared`).
    pub shared: Arc<ben_runtime::Shared>,
    pub loads: BTreeMap<String, Arc<Load>>,
    pub dead_letters: Arc<std::sync::atomic::AtomicU64>,
    /// Dead letters that did not verify (forged, or written in another's
    /// name): not counted in `dead_letters`, never trusted; the ledger
    /// dead-letters each with the reason.
    pub unverified_dead_letters: Arc<std::sync::atomic::AtomicU64>,
    /// The first [`KEPT_DEAD_LETTERS`] dead letters, as lines (sender,
    /// subject, reason), for the operator to read; later ones are counted.
    pub first_dead_letters: Arc<Mutex<Vec<String>>>,
}

/// What the API serves of `ben up`'s counters: `/metrics` and the
/// dashboard's.
struct Telemetry {
    stats: Arc<Stats>,
    restarts: Arc<ben_orchestrator::Restarts>,
}

impl ben_control::Telemetry for Telemetry {
    fn prometheus(&self) -> String {
        self.stats.prometheus(&self.restarts)
    }

    fn components(&self) -> Vec<serde_json::Value> {
        self.stats
            .per()
            .iter()
            .filter_map(|m| serde_json::to_value(m).ok())
            .collect()
    }
}

impl Stats {
    /// Every kind's counters, summed (with every instance's publish
    /// errors).
    pub fn totals(&self) -> ComponentMetrics {
        let mut m = ComponentMetrics::default();
        for k in &KINDS {
            (k.probe)(&self.shared, &mut m);
        }
        m.publish_errors += self
            .loads
            .values()
            .map(|l| l.publish_errors.load(Ordering::Relaxed))
            .sum::<u64>();
        m
    }

    /// Every kind's counters (one entry a kind, no id) and every
    /// instance's load (one entry an instance).
    fn per(&self) -> Vec<ComponentMetrics> {
        let mut per = Vec::new();
        for k in &KINDS {
            // A kind this process does not run adds nothing to it.
            let none = ComponentMetrics {
                role: k.role.to_string(),
                ..ComponentMetrics::default()
            };
            let mut m = none.clone();
            (k.probe)(&self.shared, &mut m);
            if m != none {
                per.push(m);
            }
        }
        for (id, l) in &self.loads {
            let mut m = ComponentMetrics {
                id: id.clone(),
                role: ben_runtime::kind_of_id(id)
                    .map_or("", |k| k.role)
                    .to_string(),
                processed: l.processed.load(Ordering::Relaxed),
                queue_depth: l.queue_depth.load(Ordering::Relaxed),
                publish_errors: l.publish_errors.load(Ordering::Relaxed),
                ..ComponentMetrics::default()
            };
            // Nothing takes the ages in `ben up`: they count since start.
            ben_runtime::metrics::set_age_histogram(&mut m, &l.ages.snapshot());
            per.push(m);
        }
        per
    }

    /// Every kind's counters and every instance's load, in Prometheus'
    /// text format (`GET /metrics` on the API).
    pub fn prometheus(&self, restarts: &ben_orchestrator::Restarts) -> String {
        ben_runtime::metrics::prometheus(
            &self.per(),
            &[
                (
                    "ben_dead_letters_total",
                    "Dead letters (Ben's and CyberMesh's) signed by the component they name.",
                    true,
                    self.dead_letters.load(Ordering::Relaxed) as f64,
                ),
                (
                    "ben_unverified_dead_letters_total",
                    "Dead letters that did not verify (never trusted).",
                    true,
                    self.unverified_dead_letters.load(Ordering::Relaxed) as f64,
                ),
                (
                    "ben_restarts_total",
                    "Component restarts by the orchestrator.",
                    true,
                    restarts.total.load(Ordering::Relaxed) as f64,
                ),
            ],
        )
    }

    /// Records processed by the instances whose kind stands at `hop`.
    fn processed(&self, hop: Hop) -> u64 {
        self.loads
            .iter()
            .filter(|(id, _)| ben_runtime::kind_of_id(id).is_some_and(|k| k.hop == hop))
            .map(|(_, l)| l.processed.load(Ordering::Relaxed))
            .sum()
    }
}

/// How many dead letters [`Stats::first_dead_letters`] keeps.
pub const KEPT_DEAD_LETTERS: usize = 10;

/// The running system.
pub struct System {
    pub cfg: Config,
    pub bus: Arc<dyn Bus>,
    pub store: Arc<FileStore>,
    pub control: ben_control::Handle,
    pub beekeeper: ben_sidecar::BeekeeperHandle,
    pub stats: Arc<Stats>,
    pub restarts: Arc<ben_orchestrator::Restarts>,
    /// The orchestrator's view of component health (signed heartbeats,
    /// judged by `ben_orchestrator::Health`).
    pub health: Arc<Mutex<ben_orchestrator::Health>>,
    /// What each instance needs to be stopped cleanly.
    instances: Vec<Instance>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// One identity: its id and key.
struct Identity {
    id: String,
    kind: &'static ben_runtime::Kind,
    signer: Arc<Signer>,
}

impl System {
    /// Starts everything. Returns once every component listens.
    pub async fn start(cfg: Config) -> Result<System, String> {
        ben_control::private::dir(&cfg.data_dir)?;
        let api_token = match &cfg.api_token {
            Some(t) => t.clone(),
            None => ben_control::auth::token_file(&cfg.data_dir, random32()?)?,
        };
        let bus = open_bus(&cfg).await?;
        let bus = match cfg.bus_layer {
            Some(wrap) => wrap(bus),
            None => bus,
        };
        let store =
            Arc::new(FileStore::open(cfg.data_dir.join("store")).map_err(|e| e.to_string())?);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);

        // Identities: the ledger's, and one per component instance, each
        // trusted by all (one process).
        let ledger_signer = Arc::new(Signer::from_secret(random32()?));
        let (identities, keyring) = identities(&cfg, &ledger_signer)?;
        let keyring_arc = Arc::new(keyring.clone());

        let metrics = ben_control::MetricsSource::default();
        let ben_runtime::ControlPlane {
            handle: control,
            responder,
        } = ben_runtime::start_control(
            ben_control::Config {
                data_dir: cfg.data_dir.clone(),
                api_addr: cfg.api_addr,
                api_token: Some(api_token),
                prepare_timeout_ms: cfg.prepare_timeout_ms,
                metrics: metrics.clone(),
                ..ben_control::Config::default()
            },
            ben_control::Deps {
                bus: bus.clone(),
                store: store.clone(),
                signer: ledger_signer.clone(),
                keyring,
                clock: Arc::new(|| SystemClock.now_ns()),
            },
        )
        .await?;

        let beekeeper: ben_sidecar::BeekeeperHandle = Arc::new(Mutex::new(Some(Beekeeper::new(
            random32()?,
            vec![],
            cfg.bee_ttl_ns,
        ))));
        let env = component_env(&cfg, &beekeeper)?;

        let stats = Arc::new(Stats {
            shared: env.shared.clone(),
            loads: identities
                .iter()
                .map(|i| (i.id.clone(), Arc::new(Load::default())))
                .collect(),
            dead_letters: Arc::default(),
            unverified_dead_letters: Arc::default(),
            first_dead_letters: Arc::default(),
        });
        let mut tasks = vec![
            responder,
            keep_dead_letters(bus.as_ref(), &stats, &keyring_arc).await?,
        ];

        let mut specs = Vec::new();
        let mut instances = Vec::new();
        for ident in &identities {
            let deps = Deps {
                id: ident.id.clone(),
                bus: bus.clone(),
                store: store.clone() as Arc<dyn Store>,
                clock: clock.clone(),
                signer: ident.signer.clone(),
                keyring: keyring_arc.clone(),
                drain: Default::default(),
            };
            let (spec, inst) = build(&env, ident, deps, stats.loads[&ident.id].clone()).await?;
            specs.push(spec);
            instances.push(inst);
        }
        let restarts = Arc::new(ben_orchestrator::Restarts::default());
        tasks.extend(ben_orchestrator::supervise(specs, restarts.clone()));
        metrics.set(Telemetry {
            stats: stats.clone(),
            restarts: restarts.clone(),
        });
        let health = Arc::new(Mutex::new(ben_orchestrator::Health::new(
            ben_orchestrator::HealthLimits::default(),
        )));
        tasks.push(judge_heartbeats(bus.as_ref(), &health, &keyring_arc, &clock).await?);

        // Wait until the sidecar socket exists and every component that
        // registers is registered with the ledger (first heartbeats).
        let registering = identities.iter().filter(|i| i.kind.intent).count();
        let sock = cfg.socket_path();
        wait_until_ready(&control, &sock, registering).await;
        // The AI service takes flows once it answers its feedback query (it
        // subscribes to flows first): flows a sensor or the demo sends at
        // once are then not published to nobody.
        if identities.iter().any(|i| i.kind.role == "mesh") {
            mesh_ready(bus.as_ref()).await;
        }
        tracing::info!(
            components = identities.len(),
            api = %control.api_addr(),
            socket = %sock.display(),
            "started"
        );
        Ok(System {
            cfg,
            bus,
            store,
            control,
            beekeeper,
            stats,
            restarts,
            health,
            instances,
            tasks,
        })
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.control.api_addr()
    }

    /// Builds a bundle, stages its artifacts and deploys it through the
    /// ledger; waits until it is finalized or aborted.
    pub async fn deploy_dir(&self, dir: &Path) -> Result<String, String> {
        let bundle = ben_intent::Bundle::load(dir).map_err(|e| e.to_string())?;
        let built = bundle.build().map_err(|f| f.render())?;
        let mut artifacts = BTreeMap::new();
        for a in &built.artifacts {
            let key = self.store.put(&a.bytes).map_err(|e| e.to_string())?;
            artifacts.insert(a.name.clone(), key.to_string());
        }
        let client = self.control.client();
        client
            .stage(ben_control::ledger::StageRequest {
                version: built.version.clone(),
                bundle: built.name.clone(),
                digest: built.digest.to_hex().to_string(),
                artifacts,
            })
            .await
            .map_err(|e| e.to_string())?;
        self.deploy(&built.version).await?;
        Ok(built.version)
    }

    /// Deploys a staged version and waits for the outcome.
    pub async fn deploy(&self, version: &str) -> Result<(), String> {
        let client = self.control.client();
        client
            .deploy(version.to_string())
            .await
            .map_err(|e| e.to_string())?;
        self.wait_deploy(version).await
    }

    pub async fn wait_deploy(&self, version: &str) -> Result<(), String> {
        let client = self.control.client();
        for _ in 0..600 {
            let st = client
                .status(Some(version.to_string()))
                .await
                .map_err(|e| e.to_string())?;
            if let Some(d) = st
                .deploy
                .filter(|d| d.version == version && d.phase.is_over())
            {
                return match d.phase.as_str() {
                    "finalized" => Ok(()),
                    other => Err(format!(
                        "deploy of {version} {other}: {}",
                        d.reason.unwrap_or_default()
                    )),
                };
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!("deploy of {version} did not finish"))
    }

    /// One status line: throughput, flags, signals, Lucius, active version.
    pub async fn status_line(&self) -> String {
        let active = self
            .control
            .client()
            .status(None)
            .await
            .ok()
            .and_then(|s| s.active)
            .unwrap_or_else(|| "none".into());
        let rate: f64 = self
            .stats
            .loads
            .iter()
            .filter(|(id, _)| ben_runtime::kind_of_id(id).is_some_and(|k| k.hop == Hop::Entry))
            .map(|(_, l)| l.rate())
            .sum();
        let t = self.stats.totals();
        format!(
            "records {} ({:.0}/s) | flags {} | signals {} | lucius {} (dropped {}) | rejected {} | dead letters {} | publish errors {} | healthy {} | restarts {} | intent {}{}",
            t.accepted,
            rate,
            t.flags,
            t.signals,
            t.stored,
            t.dropped,
            t.rejected,
            self.stats.dead_letters.load(Ordering::Relaxed),
            t.publish_errors,
            self.health.lock().map(|h| h.alive(SystemClock.now_ns()).len()).unwrap_or(0),
            self.restarts.total.load(Ordering::Relaxed),
            active,
            Self::mesh_status(&t)
        )
    }

    /// CyberMesh's part of the status line (from the table's probes): the
    /// validators' committed height and the entries the enforcement agent
    /// holds, and — loudly — a validator halted because its database does
    /// not take its blocks, or the agent's circuit breaker holding
    /// policies back.
    fn mesh_status(t: &ben_runtime::metrics::ComponentMetrics) -> String {
        let mut out = format!(" | chain height {} | blocked {}", t.chain_height, t.blocked);
        if t.captured > 0 || t.capture_drops > 0 {
            out += &format!(
                " | captured {} (kernel drops {}, undecodable {})",
                t.captured, t.capture_drops, t.capture_undecodable
            );
        }
        out += &ben_runtime::metrics::ai_flows_status(
            t.flows_dropped,
            t.flows_late,
            t.flow_batches_missing,
        );
        if !t.halted.is_empty() {
            out += &format!(
                " | HALTED (database not taking blocks): {}",
                t.halted.join(", ")
            );
        }
        if t.breaker_open {
            out += " | enforcement circuit breaker OPEN (policies held)";
        }
        out
    }

    /// Waits (up to `max`) until every record the sidecar accepted has
    /// reached its last hop (stored by Lucius, or seen by a detector) or a
    /// dead letter.
    pub async fn drain(&self, max: Duration) {
        let until = tokio::time::Instant::now() + max;
        while tokio::time::Instant::now() < until {
            let accepted = self.stats.totals().accepted;
            let done =
                self.stats.processed(Hop::Last) + self.stats.dead_letters.load(Ordering::Relaxed);
            if done >= accepted && self.instances.iter().all(|i| (i.settled)()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops components, the API and the ledger (closing its database).
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        // Each task (and, through its supervisor, each component) is gone
        // before this returns: nothing writes into the data dir after.
        for t in self.tasks {
            if tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .is_err()
            {
                tracing::warn!("a task did not stop within 5 s of shutdown");
            }
        }
        self.control.shutdown().await;
        for i in &self.instances {
            for f in &i.leaves {
                let _ = std::fs::remove_file(f);
            }
        }
    }
}

/// What `ben up`'s components are built with: the data dir, the Blot key
/// (loaded here, so a missing one fails the start, not a component), one
/// Lucius file, the sidecar's socket and Beekeeper.
fn component_env(
    cfg: &Config,
    beekeeper: &ben_sidecar::BeekeeperHandle,
) -> Result<ben_runtime::Env, String> {
    let mut env = ben_runtime::Env::new(
        cfg.data_dir.clone(),
        "env:BEN_BLOT_KEY".into(),
        ben_sidecar::Config {
            socket: cfg.socket_path(),
            beekeeper: beekeeper.clone(),
            extra_selectors: cfg.extra_selectors.clone(),
            max_record_bytes: 1 << 20,
            state_dir: Some(cfg.data_dir.clone()),
        },
    );
    env.lucius_file = Some(cfg.data_dir.join("lucius.db"));
    env.mesh_every = cfg.mesh_every;
    env.mesh_network_sources = cfg.mesh_network_sources;
    env.enforce.bus_url = cfg.nats.as_ref().map(|n| n.url.clone());
    env.sensor = cfg.sensor.clone();
    env.enforce.backend = cfg.enforce_backend.clone();
    env.enforce.netns = cfg.enforce_netns.clone();
    env.blot_key()?;
    let blot_key_file = cfg.data_dir.join("blot.key");
    if blot_key_file.exists() {
        ben_control::private::file(&blot_key_file)?;
    }
    Ok(env)
}

/// Waits (up to 5 s) until the sidecar socket exists and `registering`
/// components are registered with the ledger (first heartbeats).
async fn wait_until_ready(control: &ben_control::Handle, sock: &Path, registering: usize) {
    for _ in 0..100 {
        let registered = control
            .client()
            .status(None)
            .await
            .map(|s| s.components.len())
            .unwrap_or(0);
        if sock.exists() && registered >= registering {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to 5 s) until the AI service answers a feedback query; says
/// so when it does not.
async fn mesh_ready(bus: &dyn Bus) {
    for _ in 0..50 {
        let asked = ben_control::mesh::ask_feedback(bus, "", Duration::from_millis(100)).await;
        if asked.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::warn!("the AI service did not answer within 5 s: flows sent now may reach no one");
}

/// One identity per component instance the table and `cfg.counts` call
/// for, each with its own key, and the keyring that trusts them all and
/// the ledger (one process).
fn identities(cfg: &Config, ledger: &Signer) -> Result<(Vec<Identity>, Keyring), String> {
    let mut keyring = Keyring::new();
    keyring.trust(ben_wire::LEDGER_ID, ben_wire::Role::Ledger, ledger.public());
    for (id, key) in &cfg.trust {
        keyring.trust_id(id, *key).map_err(|e| e.to_string())?;
    }
    let mut identities = Vec::new();
    for kind in &KINDS {
        let n = cfg.counts.get(kind.role).copied().unwrap_or(kind.count);
        // Every kind the table runs by default runs at least once (the
        // data path has every hop); one it runs only when asked for (a
        // sensor needs an interface) runs as often as asked.
        let n = if kind.count > 0 { n.max(1) } else { n };
        for i in 1..=n {
            let signer = Arc::new(Signer::from_secret(random32()?));
            let id = format!("{}-{i}", kind.role);
            keyring
                .trust_id(&id, signer.public())
                .map_err(|e| e.to_string())?;
            identities.push(Identity { id, kind, signer });
        }
    }
    Ok((identities, keyring))
}

/// Builds one instance from its table entry, and the orchestrator's spec
/// that (re)starts it.
async fn build(
    env: &ben_runtime::Env,
    ident: &Identity,
    deps: Deps,
    load: Arc<Load>,
) -> Result<(ben_orchestrator::Spec, Instance), String> {
    let inst = (ident.kind.build)(env, deps, load)
        .await
        .map_err(|e| format!("{}: {e}", ident.id))?;
    let start = inst.start.clone();
    let spec = ben_orchestrator::Spec {
        name: ident.id.clone(),
        kind: ident.kind.role,
        order: ident.kind.order,
        start: Box::new(move || start()),
    };
    Ok((spec, inst))
}

/// The bus: in-process, or NATS (optionally under a prefix).
async fn open_bus(cfg: &Config) -> Result<Arc<dyn Bus>, String> {
    Ok(match &cfg.nats {
        None => Arc::new(InProcessBus::default()),
        Some(n) => {
            let nats = ben_bus_nats::NatsBus::connect(&ben_bus_nats::Config {
                url: n.url.clone(),
                ..ben_bus_nats::Config::default()
            })
            .await?;
            match &n.prefix {
                Some(p) => Arc::new(ben_bus::PrefixedBus::new(nats, p.clone())),
                None => Arc::new(nats),
            }
        }
    })
}

/// Counts dead letters and keeps the first few as lines. Only those signed
/// by the component they name count; the others are counted apart.
async fn keep_dead_letters(
    bus: &dyn Bus,
    stats: &Arc<Stats>,
    keyring: &Arc<Keyring>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    // Ben's and CyberMesh's.
    let mut dlq = bus
        .subscribe(subjects::DLQ, None)
        .await
        .map_err(|e| e.to_string())?;
    let mut ai_dlq = bus
        .subscribe(ben_mesh_wire::DLQ_SUBJECT, None)
        .await
        .map_err(|e| e.to_string())?;
    let counter = stats.dead_letters.clone();
    let unverified = stats.unverified_dead_letters.clone();
    let first = stats.first_dead_letters.clone();
    let keyring = keyring.clone();
    Ok(tokio::spawn(async move {
        loop {
            let m = tokio::select! {
                m = dlq.next() => m,
                m = ai_dlq.next() => m,
            };
            let Some(m) = m else { break };
            let Ok(d) = ben_wire::open_bytes::<pb::DeadLetter>(&m.payload, &keyring) else {
                unverified.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let d = d.into_inner();
            // Kept before it is counted: a count includes it.
            if let Ok(mut kept) = first.lock() {
                if kept.len() < KEPT_DEAD_LETTERS {
                    kept.push(format!(
                        "from {} on {} ({} bytes): {}",
                        d.sender, d.subject, d.size, d.reason
                    ));
                }
            }
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }))
}

/// Health: verified heartbeats only; replayed, stale, future and
/// implausible ones are ignored and counted.
async fn judge_heartbeats(
    bus: &dyn Bus,
    health: &Arc<Mutex<ben_orchestrator::Health>>,
    keyring: &Arc<Keyring>,
    clock: &Arc<dyn Clock>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let mut beats = bus
        .subscribe(subjects::HEARTBEAT, None)
        .await
        .map_err(|e| e.to_string())?;
    let (health, keyring, clock) = (health.clone(), keyring.clone(), clock.clone());
    Ok(tokio::spawn(async move {
        while let Some(m) = beats.next().await {
            let Ok(v) = ben_wire::open_bytes::<pb::Heartbeat>(&m.payload, &keyring) else {
                continue;
            };
            if let Ok(mut h) = health.lock() {
                let _ = h.observe(ben_runtime::beat_of(v.into_inner()), clock.now_ns());
            }
        }
    }))
}
