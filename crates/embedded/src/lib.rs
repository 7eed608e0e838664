//! # Embedded mode: `ben up`
//!
//! Everything in one process on embedded defaults: the in-process bus,
//! the files store and the SQLite ledger under the data dir (`.ben/`), the
//! HTTP API on 127.0.0.1:7420, Beekeeper, and every component — detectors,
//! spines, proxies, Lucius, the sidecar — started in that order and
//! supervised by the orchestrator (restarted with backoff if one exits or
//! panics; a restarted component loads the active version before it takes
//! traffic).
//!
//! Keys: the ledger and every component get their own Ed25519 key from
//! the OS's randomness at start; all of them trust each other's public
//! keys (one process). The Blot hmac key comes from `BEN_BLOT_KEY` or
//! `.ben/blot.key`.
//!
//! [`cluster`] runs the same components as one OS process each over NATS
//! (`ben run`, `ben cluster up`).

pub mod cluster;
pub mod mesh;

use ben_bee::{Beekeeper, Selector};
use ben_bus::{Bus, InProcessBus};
use ben_component::{subjects, Clock, Deps, Load, SystemClock};
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
    /// The sidecar's Unix socket (default `DATA_DIR/sidecar.sock`).
    pub socket: Option<PathBuf>,
    /// Beekeeper selectors on top of the bundles' `[[apps]]`.
    pub extra_selectors: Vec<Selector>,
    pub spines: usize,
    pub proxies: usize,
    pub detectors: usize,
    /// BEE lifetime.
    pub bee_ttl_ns: i64,
    pub prepare_timeout_ms: u64,
    /// Use NATS instead of the in-process bus (same components, same
    /// subjects).
    pub nats: Option<NatsConfig>,
    /// How often the CyberMesh loop runs the engines over buffered flows.
    pub mesh_every: Duration,
}

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
            socket: None,
            extra_selectors: vec![],
            spines: 2,
            proxies: 1,
            detectors: 1,
            bee_ttl_ns: ben_bee::DEFAULT_TTL_NS,
            prepare_timeout_ms: 10_000,
            nats: None,
            mesh_every: Duration::from_secs(5),
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

pub(crate) fn random32() -> Result<[u8; 32], String> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .map_err(|e| format!("reading /dev/urandom: {e}"))?;
    Ok(b)
}

/// Live counters of the running system.
pub struct Stats {
    pub sidecar: Arc<ben_sidecar::Stats>,
    pub detector: Arc<ben_detector::Stats>,
    pub lucius: Arc<ben_lucius::Observations>,
    pub loads: BTreeMap<String, Arc<Load>>,
    pub dead_letters: Arc<std::sync::atomic::AtomicU64>,
    /// The first [`KEPT_DEAD_LETTERS`] dead letters, as lines (sender,
    /// subject, reason), for the operator to read; later ones are counted.
    pub first_dead_letters: Arc<Mutex<Vec<String>>>,
}

/// How many dead letters [`Stats::first_dead_letters`] keeps.
pub const KEPT_DEAD_LETTERS: usize = 10;

/// The running system.
pub struct System {
    pub cfg: Config,
    /// CyberMesh loop counters.
    pub mesh: Arc<mesh::MeshStats>,
    pub bus: Arc<dyn Bus>,
    pub store: Arc<FileStore>,
    pub control: ben_control::Handle,
    pub beekeeper: ben_sidecar::BeekeeperHandle,
    pub stats: Arc<Stats>,
    pub restarts: Arc<ben_orchestrator::Restarts>,
    /// The orchestrator's view of component health (signed heartbeats,
    /// judged by `ben_orchestrator::Health`).
    pub health: Arc<Mutex<ben_orchestrator::Health>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl System {
    /// Starts everything. Returns once every component listens.
    pub async fn start(cfg: Config) -> Result<System, String> {
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|e| format!("creating {}: {e}", cfg.data_dir.display()))?;
        let bus: Arc<dyn Bus> = match &cfg.nats {
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
        };
        let store =
            Arc::new(FileStore::open(cfg.data_dir.join("store")).map_err(|e| e.to_string())?);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let blot_key = ben_intent::keys::load_blot_key("env:BEN_BLOT_KEY", None, &cfg.data_dir)?;

        // Identities: the ledger's, Beekeeper's, and one per component.
        let names = component_names(&cfg);
        let ledger_signer = Arc::new(Signer::from_secret(random32()?));
        let mut keyring = Keyring::new();
        keyring.trust(ledger_signer.public());
        let mut signers = BTreeMap::new();
        for n in &names {
            let s = Signer::from_secret(random32()?);
            keyring.trust(s.public());
            signers.insert(n.clone(), Arc::new(s));
        }
        let mesh_signer = Arc::new(Signer::from_secret(random32()?));
        keyring.trust(mesh_signer.public());
        let keyring_arc = Arc::new(keyring.clone());

        let control = ben_control::start(
            ben_control::Config {
                data_dir: cfg.data_dir.clone(),
                api_addr: cfg.api_addr,
                prepare_timeout_ms: cfg.prepare_timeout_ms,
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
        .await
        .map_err(|e| e.to_string())?;

        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(active_responder(
            bus.clone(),
            control.client(),
            ledger_signer.clone(),
        )));

        let beekeeper: ben_sidecar::BeekeeperHandle = Arc::new(Mutex::new(Some(Beekeeper::new(
            random32()?,
            vec![],
            cfg.bee_ttl_ns,
        ))));
        let lucius = ben_lucius::Observations::open(
            &cfg.data_dir.join("lucius.db"),
            ben_lucius::Config::default(),
        )
        .await?;
        let mut stats = Stats {
            sidecar: Arc::default(),
            detector: Arc::default(),
            lucius,
            loads: BTreeMap::new(),
            dead_letters: Arc::default(),
            first_dead_letters: Arc::default(),
        };
        for n in &names {
            stats.loads.insert(n.clone(), Arc::new(Load::default()));
        }
        let stats = Arc::new(stats);
        {
            let mut dlq = bus
                .subscribe(subjects::DLQ, None)
                .await
                .map_err(|e| e.to_string())?;
            let counter = stats.dead_letters.clone();
            let first = stats.first_dead_letters.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(m) = dlq.next().await {
                    // Kept before it is counted: a count includes it.
                    if let Ok(mut kept) = first.lock() {
                        if kept.len() < KEPT_DEAD_LETTERS {
                            kept.push(
                                match <pb::DeadLetter as prost::Message>::decode(
                                    m.payload.as_slice(),
                                ) {
                                    Ok(d) => format!(
                                        "from {} on {} ({} bytes): {}",
                                        d.sender, d.subject, d.size, d.reason
                                    ),
                                    Err(e) => format!("undecodable dead letter ({e})"),
                                },
                            );
                        }
                    }
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }

        let mut specs = Vec::new();
        for n in &names {
            let deps = Deps {
                id: n.clone(),
                bus: bus.clone(),
                store: store.clone() as Arc<dyn Store>,
                clock: clock.clone(),
                signer: signers[n].clone(),
                keyring: keyring_arc.clone(),
                drain: Default::default(),
            };
            let load = stats.loads[n].clone();
            let kind: &'static str = role_of(n);
            let start: Box<dyn Fn() -> ben_orchestrator::BoxFuture + Send + Sync> = match kind {
                "spine" => {
                    let key = blot_key.clone();
                    Box::new(move || {
                        Box::pin(ben_spine::run(
                            ben_spine::Config {
                                blot_key: Some(key.clone()),
                            },
                            deps.clone(),
                            load.clone(),
                        ))
                    })
                }
                "proxy" => Box::new(move || Box::pin(ben_proxy::run(deps.clone(), load.clone()))),
                "detector" => {
                    let st = stats.detector.clone();
                    Box::new(move || {
                        Box::pin(ben_detector::run(deps.clone(), load.clone(), st.clone()))
                    })
                }
                "lucius" => {
                    let (key, obs) = (blot_key.clone(), stats.lucius.clone());
                    Box::new(move || {
                        Box::pin(ben_lucius::run(
                            Some(key.clone()),
                            deps.clone(),
                            load.clone(),
                            obs.clone(),
                        ))
                    })
                }
                _ => {
                    let sc = ben_sidecar::Config {
                        socket: cfg.socket_path(),
                        beekeeper: beekeeper.clone(),
                        extra_selectors: cfg.extra_selectors.clone(),
                        max_record_bytes: 1 << 20,
                    };
                    let st = stats.sidecar.clone();
                    Box::new(move || {
                        Box::pin(ben_sidecar::run(
                            sc.clone(),
                            deps.clone(),
                            load.clone(),
                            st.clone(),
                        ))
                    })
                }
            };
            specs.push(ben_orchestrator::Spec {
                name: n.clone(),
                kind,
                start,
            });
        }
        // The CyberMesh loop (no intent: it runs the shipped model and rules).
        let mesh_stats = Arc::new(mesh::MeshStats::default());
        {
            let deps = Deps {
                id: "mesh-1".into(),
                bus: bus.clone(),
                store: store.clone() as Arc<dyn Store>,
                clock: clock.clone(),
                signer: mesh_signer.clone(),
                keyring: keyring_arc.clone(),
                drain: Default::default(),
            };
            let (every, st) = (cfg.mesh_every, mesh_stats.clone());
            specs.push(ben_orchestrator::Spec {
                name: "mesh-1".into(),
                kind: "detector",
                start: Box::new(move || {
                    Box::pin(mesh::run(deps.clone(), every, 100_000, st.clone()))
                }),
            });
        }
        let restarts = Arc::new(ben_orchestrator::Restarts::default());
        tasks.extend(ben_orchestrator::supervise(specs, restarts.clone()));
        // Health: verified heartbeats only; replayed, stale, future and
        // implausible ones are ignored and counted.
        let health = Arc::new(Mutex::new(ben_orchestrator::Health::new(
            ben_orchestrator::HealthLimits::default(),
        )));
        {
            let mut beats = bus
                .subscribe(subjects::HEARTBEAT, None)
                .await
                .map_err(|e| e.to_string())?;
            let (health, keyring, clock) = (health.clone(), keyring_arc.clone(), clock.clone());
            tasks.push(tokio::spawn(async move {
                while let Some(m) = beats.next().await {
                    let Ok(v) = ben_wire::open_bytes::<pb::Heartbeat>(&m.payload, &keyring) else {
                        continue;
                    };
                    let hb = v.into_inner();
                    let beat = ben_orchestrator::Beat {
                        component: hb.component,
                        role: hb.role,
                        seq: hb.seq,
                        at_ns: hb.at_ns,
                        queue_depth: hb.queue_depth,
                        records_per_s: hb.records_per_s,
                        intent_version: hb.intent_version,
                    };
                    if let Ok(mut h) = health.lock() {
                        let _ = h.observe(beat, clock.now_ns());
                    }
                }
            }));
        }
        // Wait until the sidecar socket exists and every component is
        // registered with the ledger (first heartbeats).
        let sock = cfg.socket_path();
        for _ in 0..100 {
            let registered = control
                .client()
                .status(None)
                .await
                .map(|s| s.components.len())
                .unwrap_or(0);
            if sock.exists() && registered >= names.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(System {
            mesh: mesh_stats,
            cfg,
            bus,
            store,
            control,
            beekeeper,
            stats,
            restarts,
            health,
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
            .filter(|(n, _)| n.starts_with("sidecar"))
            .map(|(_, l)| l.rate())
            .sum();
        format!(
            "records {} ({:.0}/s) | flags {} | signals {} | lucius {} (dropped {}) | rejected {} | dead letters {} | healthy {} | restarts {} | intent {}",
            self.stats.sidecar.accepted.load(Ordering::Relaxed),
            rate,
            self.stats.detector.flags.load(Ordering::Relaxed),
            self.stats.detector.signals.load(Ordering::Relaxed),
            self.stats.lucius.count(),
            self.stats.lucius.dropped(),
            self.stats.sidecar.rejected.load(Ordering::Relaxed),
            self.stats.dead_letters.load(Ordering::Relaxed),
            self.health.lock().map(|h| h.alive(SystemClock.now_ns()).len()).unwrap_or(0),
            self.restarts.total.load(Ordering::Relaxed),
            active
        )
    }

    /// Waits (up to `max`) until every record the sidecar accepted has
    /// reached its last hop (stored by Lucius, or seen by a detector) or a
    /// dead letter.
    pub async fn drain(&self, max: Duration) {
        let until = tokio::time::Instant::now() + max;
        let processed = |prefix: &str| -> u64 {
            self.stats
                .loads
                .iter()
                .filter(|(n, _)| n.starts_with(prefix))
                .map(|(_, l)| l.processed.load(Ordering::Relaxed))
                .sum()
        };
        while tokio::time::Instant::now() < until {
            let accepted = self.stats.sidecar.accepted.load(Ordering::Relaxed);
            let done = processed("detector")
                + processed("lucius")
                + self.stats.dead_letters.load(Ordering::Relaxed);
            let lucius = &self.stats.lucius;
            let stored = lucius.written() + lucius.dropped() >= processed("lucius");
            if done >= accepted && stored {
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
        self.control.shutdown().await;
        let _ = std::fs::remove_file(self.cfg.socket_path());
    }
}

fn component_names(cfg: &Config) -> Vec<String> {
    let mut v = Vec::new();
    for i in 1..=cfg.detectors.max(1) {
        v.push(format!("detector-{i}"));
    }
    for i in 1..=cfg.spines.max(1) {
        v.push(format!("spine-{i}"));
    }
    for i in 1..=cfg.proxies.max(1) {
        v.push(format!("proxy-{i}"));
    }
    v.push("lucius-1".into());
    v.push("sidecar-1".into());
    v
}

fn role_of(name: &str) -> &'static str {
    match name.rsplit_once('-').map(|(k, _)| k) {
        Some("detector") => "detector",
        Some("spine") => "spine",
        Some("proxy") => "proxy",
        Some("lucius") => "lucius",
        _ => "sidecar",
    }
}

/// Answers `ben.intent.active` for starting components with a signed
/// announce of the active version naming the asker.
pub(crate) async fn active_responder(
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
        let _ = bus.reply(&m, signer.seal_bytes(&ann)).await;
    }
}
