//! # The component table
//!
//! Every kind of component Ben runs is one [`Kind`] entry in [`KINDS`]:
//! its role, where it starts in the order, how many run by default, how it
//! scales, what it subscribes to, where records end, and how to build one.
//! `ben up` (`ben-embedded`) and cluster mode (`ben-cluster`) both read
//! this table and nothing else to know what to run: adding a kind is one
//! entry here plus its crate.
//!
//! A mode gives each instance an [`Env`] (the settings that differ between
//! modes: where files live, the database, the sidecar's socket) and its
//! [`Deps`] (bus, store, clock, its own key), calls [`Kind::build`] once,
//! and then (re)starts the [`Instance`] as often as its supervisor
//! decides. Counters live in [`Shared`], one per process, and reach the
//! status through each kind's [`Kind::probe`].

use crate::metrics::ComponentMetrics;
use ben_component::{subjects, Deps, Load};
use ben_orchestrator::scale::Style;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a kind builds one instance (see [`Kind::build`]).
pub type Build = for<'a> fn(&'a Env, Deps, Arc<Load>) -> BoxFuture<'a, Result<Instance, String>>;

/// How a kind's count may change while the system runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Always its count.
    Fixed,
    /// Scaled on queue depth by the orchestrator's scaler, in this style;
    /// the count is configurable (`[scale] <plural>` and `max_<plural>` in
    /// the cluster config).
    Auto(Style),
}

/// Where a kind stands on the data path, for the record books.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// Records enter here (accepted from apps).
    Entry,
    /// Records pass through.
    Middle,
    /// Records end here (processed = done).
    Last,
    /// Not on the data path.
    Off,
}

/// One kind of component.
pub struct Kind {
    /// The role: ids are `<role>-<n>`, keys and heartbeats name it.
    pub role: &'static str,
    /// The plural the cluster config counts it by (`[scale] spines = 2`).
    pub plural: &'static str,
    /// Start order: lower first (and stopped last). The data path starts
    /// from its end, so nothing sends into a hop that is not there yet.
    pub order: u8,
    /// How many run unless configured otherwise.
    pub count: usize,
    pub scale: Scale,
    pub hop: Hop,
    /// Runs an intent agent and sends heartbeats: registered with the
    /// ledger, judged by the health core, required by deploys that target
    /// its role.
    pub intent: bool,
    /// The bundle artifacts an instance fetches to prepare a version: a
    /// kind prefix ending in `/` (`pack/`) or an exact name (`settings`).
    /// The ledger announces each role its own (empty: takes no intent).
    pub artifacts: &'static [&'static str],
    /// Run by cluster mode as its own process (`ben run <role>`).
    pub in_cluster: bool,
    /// The subjects it subscribes to besides the intent plane (queue
    /// groups by role), as documentation and for the status.
    pub subscribes: &'static [&'static str],
    /// Builds one instance (called once per id; the instance is then
    /// started and restarted by the mode's supervisor).
    pub build: Build,
    /// Adds this kind's counters from the process's [`Shared`] to `m`.
    pub probe: fn(&Shared, &mut ComponentMetrics),
}

/// What a mode hands to [`Kind::build`]: the settings that differ between
/// `ben up` and cluster mode.
pub struct Env {
    pub data_dir: PathBuf,
    /// Where Blot's hmac key comes from (`env:VAR` or `file:PATH`; an unset
    /// variable falls back to `<data_dir>/blot.key`), read on first use.
    pub blot_key_spec: String,
    blot_key: OnceLock<ben_blot::BlotKey>,
    /// PostgreSQL for Lucius and the validators' tables; `None`: SQLite.
    pub database_url: Option<String>,
    /// Lucius's SQLite file; `None`: `<data_dir>/<id>.db`.
    pub lucius_file: Option<PathBuf>,
    pub sidecar: ben_sidecar::Config,
    /// The CyberMesh AI service judges arriving flows at most once per this
    /// (streaming; the seed's 5 s cycle is a value of it).
    pub mesh_every: Duration,
    /// The AI service asks for a network's block once this many of its
    /// addresses attack within a minute (0: never; `ben_mesh_ai::networks`).
    pub mesh_network_sources: usize,
    /// The enforcement agent's settings.
    pub enforce: EnforceEnv,
    /// The live sensor's settings.
    pub sensor: SensorEnv,
    pub shared: Arc<Shared>,
}

/// What a mode tells its live sensor (`ben up --sensor-iface`, cluster
/// `[sensor]`).
#[derive(Clone, Debug, Default)]
pub struct SensorEnv {
    /// The interface to capture on (none: a sensor built anyway says so).
    pub iface: Option<String>,
    /// A pcap filter expression.
    pub filter: Option<String>,
    /// The network namespace of the interface (`ip netns` name).
    pub netns: Option<String>,
    /// End a flow after this long without packets (ms; 0: 15 s).
    pub idle_timeout_ms: u64,
    /// Cut a flow this long after its first packet (ms; 0: 10 s, the
    /// detector's window).
    pub flow_timeout_ms: u64,
}

/// What a mode tells its enforcement agent.
#[derive(Clone, Debug, Default)]
pub struct EnforceEnv {
    /// `dry-run`, `nftables` or `iptables`; none: `BEN_ENFORCE`, else a
    /// dry run.
    pub backend: Option<String>,
    /// Networks never blocked besides the host's own addresses, the
    /// validators, the bus and the database.
    pub allow: Vec<String>,
    /// The bus's URL, when it is a server (its hosts are never blocked).
    pub bus_url: Option<String>,
    /// How often the host is read back and repaired (ms).
    pub reconcile_ms: u64,
    /// The network namespace (`ip netns` name) whose firewall it holds;
    /// none: the host's.
    pub netns: Option<String>,
    /// Its labels (`key=value`): policies scoped to one are its.
    pub labels: Vec<String>,
}

impl Env {
    /// An environment; `sidecar` is the sidecar's config for this process.
    pub fn new(data_dir: PathBuf, blot_key_spec: String, sidecar: ben_sidecar::Config) -> Env {
        Env {
            data_dir,
            blot_key_spec,
            blot_key: OnceLock::new(),
            database_url: None,
            lucius_file: None,
            sidecar,
            mesh_every: MESH_EVERY,
            mesh_network_sources: 0,
            enforce: EnforceEnv {
                reconcile_ms: 5_000,
                ..EnforceEnv::default()
            },
            sensor: SensorEnv::default(),
            shared: Arc::default(),
        }
    }

    /// The Blot key, loaded once (spines and Lucius share it, so pseudonyms
    /// join).
    pub fn blot_key(&self) -> Result<ben_blot::BlotKey, String> {
        if let Some(k) = self.blot_key.get() {
            return Ok(k.clone());
        }
        let k = ben_intent::keys::load_blot_key(&self.blot_key_spec, None, &self.data_dir)?;
        Ok(self.blot_key.get_or_init(|| k).clone())
    }
}

/// A process's counters and handles, shared by the instances of each kind
/// it runs.
#[derive(Default)]
pub struct Shared {
    pub sidecar: Arc<ben_sidecar::Stats>,
    pub detector: Arc<ben_detector::Stats>,
    /// The process's Lucius store, once a Lucius was built.
    pub lucius: OnceLock<Arc<ben_lucius::Observations>>,
    pub mesh: Arc<ben_mesh_ai::MeshStats>,
    /// The validators' counters, by id.
    pub validators: Arc<ValidatorCounters>,
    /// The validator set this process runs (made by the first validator
    /// built).
    pub validators_set: OnceLock<Arc<ben_mesh_validator::bus::ValidatorSet>>,
    /// The enforcement agent's counters.
    pub enforcer: Arc<ben_mesh_enforce::agent::Counters>,
    /// The live sensor's counters.
    pub sensor: Arc<ben_mesh_sensor::run::Counters>,
}

/// Each running validator's counters, by id.
#[derive(Default)]
pub struct ValidatorCounters {
    pub counters: std::sync::Mutex<
        std::collections::BTreeMap<String, Arc<ben_mesh_validator::run::Counters>>,
    >,
}

/// A (re)startable run.
pub type Start = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// One built component.
pub struct Instance {
    /// Starts it; resolves when it stops (an error, or its bus closed).
    pub start: Start,
    /// How it stops: `true`, its consume loops drain (leave their queue
    /// groups and finish what they hold); `false`, it is stopped at once.
    pub drains: bool,
    /// True once everything it took in is stored (Lucius's writer caught
    /// up); a stopping process waits for it, and `ben up`'s drain too.
    pub settled: Arc<dyn Fn() -> bool + Send + Sync>,
    /// Files it leaves behind that go when it stops (a socket).
    pub leaves: Vec<PathBuf>,
}

impl Instance {
    fn new(start: Start) -> Instance {
        Instance {
            start,
            drains: true,
            settled: Arc::new(|| true),
            leaves: vec![],
        }
    }
}

/// The kinds, in start order.
pub static KINDS: [Kind; 9] = [
    Kind {
        role: "detector",
        plural: "detectors",
        order: 1,
        count: 1,
        scale: Scale::Auto(Style::UpOnly),
        hop: Hop::Last,
        intent: true,
        artifacts: &["schema/", "playbook/", "settings"],
        in_cluster: true,
        // Its partitions' subjects (`ben.data.detector.<k>` and
        // `.<k>.copy`, queue group `detector-p<k>`), and the heartbeats
        // that tell it which detectors are live.
        subscribes: &[subjects::DETECTOR_ALL, subjects::HEARTBEAT],
        build: build_detector,
        probe: |s, m| {
            m.signals += s.detector.signals.load(Ordering::Relaxed);
            m.flags += s.detector.flags.load(Ordering::Relaxed);
        },
    },
    Kind {
        role: "validator",
        plural: "validators",
        order: 1,
        count: VALIDATORS,
        scale: Scale::Fixed,
        hop: Hop::Off,
        intent: false,
        // `ben up` runs four; cluster mode one process per address in its
        // config's `[validators] addrs` (none without it).
        artifacts: &[],
        in_cluster: true,
        subscribes: &[ben_mesh_detect::wire::ANOMALIES_SUBJECT],
        build: build_validator,
        probe: |s, m| {
            if let Ok(c) = s.validators.counters.lock() {
                m.publish_errors += c
                    .values()
                    .map(|c| c.publish_errors.load(Ordering::Relaxed))
                    .sum::<u64>();
                for (id, c) in c.iter() {
                    m.chain_height = m.chain_height.max(c.height.load(Ordering::Relaxed));
                    if c.persist
                        .get()
                        .is_some_and(|p| p.halted.load(Ordering::Relaxed))
                    {
                        m.halted.push(id.clone());
                    }
                }
            }
        },
    },
    Kind {
        role: "mesh",
        plural: "mesh",
        order: 1,
        count: 1,
        scale: Scale::Fixed,
        hop: Hop::Off,
        intent: false,
        // `ben up` runs it; cluster mode when its config has `[mesh]`.
        artifacts: &[],
        in_cluster: true,
        subscribes: &[ben_mesh_ai::FLOWS],
        build: build_mesh,
        probe: |s, m| {
            m.publish_errors += s.mesh.publish_errors.load(Ordering::Relaxed);
            // Flows judged (refused ones are dead letters).
            m.processed += s.mesh.flows.load(Ordering::Relaxed);
            m.flows_dropped += s.mesh.dropped_flows.load(Ordering::Relaxed);
            m.flows_late += s.mesh.late_flows.load(Ordering::Relaxed);
            m.flow_batches_missing += s.mesh.missing_batches.load(Ordering::Relaxed);
        },
    },
    Kind {
        role: "enforcer",
        plural: "enforcers",
        order: 2,
        count: 1,
        scale: Scale::Fixed,
        hop: Hop::Off,
        intent: false,
        // One per host: `ben up` runs one; cluster mode one when its
        // config has `[enforcer]` (`ben enforce --config F` on each host).
        artifacts: &[],
        in_cluster: true,
        subscribes: &[ben_mesh_wire::POLICY_SUBJECT],
        build: build_enforcer,
        probe: |s, m| {
            m.publish_errors += s.enforcer.publish_errors.load(Ordering::Relaxed);
            m.blocked += s.enforcer.entries.load(Ordering::Relaxed);
            m.breaker_open |= s.enforcer.breaker_open.load(Ordering::Relaxed);
        },
    },
    Kind {
        role: "sensor",
        plural: "sensors",
        order: 2,
        // None unless an interface is given: `ben up --sensor-iface IF`,
        // cluster `[sensor]` (`ben sensor --config F` on each host).
        count: 0,
        scale: Scale::Fixed,
        hop: Hop::Off,
        intent: false,
        artifacts: &[],
        in_cluster: true,
        subscribes: &[],
        build: build_sensor,
        probe: |s, m| {
            m.publish_errors += s.sensor.publish_errors.load(Ordering::Relaxed);
            m.captured += s.sensor.frames.load(Ordering::Relaxed);
            m.capture_drops += s.sensor.kernel_drops.load(Ordering::Relaxed);
            m.capture_undecodable += s.sensor.corrupt.load(Ordering::Relaxed)
                + s.sensor.bad_headers.load(Ordering::Relaxed);
        },
    },
    Kind {
        role: "spine",
        plural: "spines",
        order: 2,
        count: 2,
        scale: Scale::Auto(Style::Both),
        hop: Hop::Middle,
        intent: true,
        // The playbooks: their group keys choose the detector partition.
        artifacts: &["schema/", "pack/", "migration/", "playbook/", "settings"],
        in_cluster: true,
        subscribes: &[subjects::SPINE],
        build: build_spine,
        probe: |_, _| {},
    },
    Kind {
        role: "proxy",
        plural: "proxies",
        order: 3,
        count: 1,
        scale: Scale::Auto(Style::Both),
        hop: Hop::Middle,
        intent: true,
        // Migrations: an old record is routed by the current version.
        artifacts: &["schema/", "pack/", "migration/", "settings"],
        in_cluster: true,
        subscribes: &[subjects::PROXY],
        build: build_proxy,
        probe: |_, _| {},
    },
    Kind {
        role: "lucius",
        plural: "lucius",
        order: 4,
        count: 1,
        scale: Scale::Fixed,
        hop: Hop::Last,
        intent: true,
        artifacts: &["schema/", "pack/", "migration/", "settings"],
        in_cluster: true,
        subscribes: &[subjects::LUCIUS, ben_lucius::QUERY],
        build: build_lucius,
        probe: |s, m| {
            if let Some(o) = s.lucius.get() {
                m.stored += o.count() as u64;
                m.written += o.written();
                m.dropped += o.dropped();
            }
        },
    },
    Kind {
        role: "sidecar",
        plural: "sidecars",
        order: 5,
        count: 1,
        scale: Scale::Fixed,
        hop: Hop::Entry,
        intent: true,
        artifacts: &["schema/", "contract/", "settings"],
        in_cluster: true,
        subscribes: &["ben.signal.*"],
        build: build_sidecar,
        probe: |s, m| {
            m.accepted += s.sidecar.accepted.load(Ordering::Relaxed);
            m.rejected += s.sidecar.rejected.load(Ordering::Relaxed);
            m.signals_delivered += s.sidecar.signals_delivered.load(Ordering::Relaxed);
        },
    },
];

/// The roles that take intent and the artifacts each fetches, for the
/// ledger ([`ben_control::Config::roles`]).
pub fn intent_roles() -> ben_control::RoleArtifacts {
    KINDS
        .iter()
        .filter(|k| k.intent)
        .map(|k| {
            let arts = k.artifacts.iter().map(|a| a.to_string()).collect();
            (k.role.to_string(), arts)
        })
        .collect()
}

/// The entry for `role`.
pub fn kind(role: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.role == role)
}

/// The role of a component id (`spine-2` → the spine entry).
pub fn kind_of_id(id: &str) -> Option<&'static Kind> {
    id.rsplit_once('-').and_then(|(role, _)| kind(role))
}

fn build_detector(
    env: &Env,
    deps: Deps,
    load: Arc<Load>,
) -> BoxFuture<'_, Result<Instance, String>> {
    let stats = env.shared.detector.clone();
    Box::pin(async move {
        Ok(Instance::new(Arc::new(move || {
            Box::pin(ben_detector::run(deps.clone(), load.clone(), stats.clone()))
        })))
    })
}

/// The validator set `ben up` runs (n = 3f + 1, f = 1).
pub const VALIDATORS: usize = 4;

/// The AI service's step: it judges arriving flows at most once per this
/// much (`ben up`, `[mesh] every_ms`); the seed's 5 s cycle is one value.
pub const MESH_EVERY: Duration = Duration::from_millis(200);

/// The process's validator set: the one its mode set in
/// [`Shared::validators_set`] (cluster mode: from the key directory and
/// the config's addresses), or in `ben up` loaded or made by the first who
/// asks (a validator, or the enforcement agent that checks their QCs).
fn validator_set(
    shared: &Shared,
    dir: &std::path::Path,
) -> Result<Arc<ben_mesh_validator::bus::ValidatorSet>, String> {
    if let Some(s) = shared.validators_set.get() {
        return Ok(s.clone());
    }
    let s = Arc::new(ben_mesh_validator::bus::ValidatorSet::load_or_create(
        dir,
        VALIDATORS,
        crate::random32,
    )?);
    Ok(shared.validators_set.get_or_init(|| s).clone())
}

/// The enforcement agent: a dry run (it logs what it would block and
/// acks as `dry-run`) unless its mode's settings (cluster config
/// `[enforcer] backend`) or `BEN_ENFORCE` name `nftables` (the host's
/// `inet ben` table) or `iptables` (ipset + iptables), which need root.
/// Never blocked: the host's own addresses, the validators, the bus, the
/// database and the configured networks.
fn build_enforcer(
    env: &Env,
    deps: Deps,
    _load: Arc<Load>,
) -> BoxFuture<'_, Result<Instance, String>> {
    let shared = env.shared.clone();
    let dir = env.data_dir.join("validators");
    let state = env.data_dir.join("enforcer");
    Box::pin(async move {
        let set = validator_set(&shared, &dir)?;
        let verifier = ben_mesh_enforce::verify::Verifier {
            keyring: deps.keyring.clone(),
            set: set.public_keys(),
            chain: ben_mesh_consensus::Block::genesis(&set.chain()).id,
            max_ttl_ms: 24 * 3_600_000,
        };
        let backend = match env.enforce.backend.clone() {
            Some(b) => b,
            None => std::env::var("BEN_ENFORCE").unwrap_or_default(),
        };
        let backend = match backend.as_str() {
            "nftables" | "iptables" => backend,
            "dry-run" | "" => "dry-run".to_string(),
            other => {
                return Err(format!(
                    "enforcement backend {other:?}: one of nftables, iptables, dry-run"
                ))
            }
        };
        let allow = ben_mesh_enforce::host::allowlist(
            set.addrs(),
            env.enforce.bus_url.as_deref(),
            env.database_url.as_deref(),
            &env.enforce.allow,
        )?;
        let schedule = ben_mesh_enforce::schedule::Config::default();
        // An ipset holds as many entries as the scheduler allows.
        let maxelem = schedule.max_entries;
        let cfg = ben_mesh_enforce::agent::Config {
            verifier,
            schedule,
            allow,
            reconcile_ms: env.enforce.reconcile_ms,
            state: Some(state),
            labels: env.enforce.labels.clone(),
        };
        let counters = shared.enforcer.clone();
        let netns = env.enforce.netns.clone();
        Ok(Instance::new(Arc::new(move || {
            let backend: Box<dyn ben_mesh_enforce::backend::Backend> = match backend.as_str() {
                "nftables" => Box::new(ben_mesh_enforce::nft::Nft {
                    netns: netns.clone(),
                }),
                "iptables" => Box::new(ben_mesh_enforce::ipt::Iptables {
                    netns: netns.clone(),
                    maxelem,
                }),
                _ => Box::new(ben_mesh_enforce::backend::DryRun::default()),
            };
            Box::pin(ben_mesh_enforce::agent::run(
                deps.clone(),
                cfg.clone(),
                backend,
                counters.clone(),
            ))
        })))
    })
}

/// The live sensor: captures on the mode's interface and publishes the
/// flows it finishes, signed, on `ben.mesh.flows`.
fn build_sensor(
    env: &Env,
    deps: Deps,
    _load: Arc<Load>,
) -> BoxFuture<'_, Result<Instance, String>> {
    let counters = env.shared.sensor.clone();
    let cfg = env.sensor.clone();
    Box::pin(async move {
        let iface = cfg.iface.clone().ok_or_else(|| {
            format!(
                "{}: no interface to capture on (ben up --sensor-iface IF, or iface in the cluster's [sensor])",
                deps.id
            )
        })?;
        let mut s = ben_mesh_sensor::run::Settings::new(&iface);
        s.filter = cfg.filter.clone();
        s.netns = cfg
            .netns
            .as_ref()
            .map(|n| std::path::Path::new("/run/netns").join(n));
        if cfg.idle_timeout_ms > 0 {
            s.flows.idle_timeout_ns = cfg.idle_timeout_ms * 1_000_000;
        }
        if cfg.flow_timeout_ms > 0 {
            s.flows.flow_timeout_ns = cfg.flow_timeout_ms * 1_000_000;
        }
        // A filter that does not compile or an interface that is not there
        // stops the build, named.
        if let Some(expr) = &s.filter {
            ben_mesh_sensor::bpf::compile(expr)?;
        }
        ben_mesh_sensor::ring::ifindex_in(&iface, s.netns.as_deref())
            .map_err(|e| format!("{}: {e}", deps.id))?;
        Ok(Instance {
            // Nothing to drain: it holds no queue group.
            drains: false,
            ..Instance::new(Arc::new(move || {
                Box::pin(ben_mesh_sensor::run::run(
                    deps.clone(),
                    s.clone(),
                    counters.clone(),
                ))
            }))
        })
    })
}

fn build_validator(
    env: &Env,
    deps: Deps,
    _load: Arc<Load>,
) -> BoxFuture<'_, Result<Instance, String>> {
    let shared = env.shared.clone();
    let dir = env.data_dir.join("validators");
    Box::pin(async move {
        let set = validator_set(&shared, &dir)?;
        let index = deps
            .id
            .rsplit_once('-')
            .and_then(|(_, n)| n.parse::<usize>().ok())
            .and_then(|n| n.checked_sub(1))
            .ok_or_else(|| format!("{}: not a validator id (validator-<n>)", deps.id))?;
        let mut settings = set.settings(index, &dir.join(&deps.id))?;
        // Cluster mode: the blocks go to the cluster's PostgreSQL, which
        // every validator writes (each block once, by height).
        if let Some(url) = env.database_url.as_deref().filter(|u| !u.is_empty()) {
            settings.database = Some(ben_mesh_validator::persist::Target::Url(url.to_string()));
        }
        // A block's policies travel in one message with the block: over a
        // bus with a payload limit (NATS: 1 MiB by default), half of it for
        // the block leaves room for the policies (≤ one per transaction)
        // and the QC. Larger blocks could not be announced at all.
        if let Some(max) = deps.bus.max_payload() {
            let c = &mut settings.consensus;
            c.max_block_bytes = c.max_block_bytes.min(max / 2);
        }
        let counters = Arc::new(ben_mesh_validator::run::Counters::default());
        if let Ok(mut c) = shared.validators.counters.lock() {
            c.insert(deps.id.clone(), counters.clone());
        }
        Ok(Instance::new(Arc::new(move || {
            Box::pin(ben_mesh_validator::bus::serve(
                deps.clone(),
                settings.clone(),
                counters.clone(),
            ))
        })))
    })
}

/// Whether an AI service may run with `network_sources` (the check its
/// own settings make, for a config file to say at load).
pub fn check_network_sources(n: usize) -> Result<(), String> {
    ben_mesh_ai::networks::NetworkConfig {
        min_sources: n,
        ..Default::default()
    }
    .check()
}

fn build_mesh(env: &Env, deps: Deps, _load: Arc<Load>) -> BoxFuture<'_, Result<Instance, String>> {
    let (every, stats, shared) = (env.mesh_every, env.shared.mesh.clone(), env.shared.clone());
    let networks = ben_mesh_ai::networks::NetworkConfig {
        min_sources: env.mesh_network_sources,
        ..Default::default()
    };
    let dir = env.data_dir.join("validators");
    let state = env.data_dir.join(format!("{}-feedback.json", deps.id));
    Box::pin(async move {
        // f of the validator set the AI service's anomalies go to.
        let n = validator_set(&shared, &dir)?.public_keys().len();
        let feedback = ben_mesh_ai::FeedbackSettings {
            f: n.saturating_sub(1) / 3,
            state: Some(state),
            ..Default::default()
        };
        // A state file that cannot be read stops the build, naming it.
        ben_mesh_ai::load_feedback(&feedback)?;
        networks.check()?;
        Ok(Instance::new(Arc::new(move || {
            Box::pin(ben_mesh_ai::run(
                deps.clone(),
                every,
                100_000,
                stats.clone(),
                feedback.clone(),
                networks.clone(),
            ))
        })))
    })
}

fn build_spine(env: &Env, deps: Deps, load: Arc<Load>) -> BoxFuture<'_, Result<Instance, String>> {
    Box::pin(async move {
        let key = env.blot_key()?;
        Ok(Instance::new(Arc::new(move || {
            Box::pin(ben_spine::run(
                ben_spine::Config {
                    blot_key: Some(key.clone()),
                },
                deps.clone(),
                load.clone(),
            ))
        })))
    })
}

fn build_proxy(_env: &Env, deps: Deps, load: Arc<Load>) -> BoxFuture<'_, Result<Instance, String>> {
    Box::pin(async move {
        Ok(Instance::new(Arc::new(move || {
            Box::pin(ben_proxy::run(deps.clone(), load.clone()))
        })))
    })
}

fn build_lucius(env: &Env, deps: Deps, load: Arc<Load>) -> BoxFuture<'_, Result<Instance, String>> {
    Box::pin(async move {
        let key = env.blot_key()?;
        let file = env
            .lucius_file
            .clone()
            .unwrap_or_else(|| env.data_dir.join(format!("{}.db", deps.id)));
        if env.database_url.as_deref().is_none_or(str::is_empty) {
            // 0600 before SQLite opens it: its -wal and -shm files follow.
            ben_control::private::file(&file)?;
        }
        let obs = ben_lucius::Observations::open(
            &file,
            ben_lucius::Config {
                database_url: env.database_url.clone(),
                ..ben_lucius::Config::default()
            },
        )
        .await?;
        if env.shared.lucius.set(obs.clone()).is_err() {
            return Err(format!(
                "{}: one Lucius per process (another was built here)",
                deps.id
            ));
        }
        let (o, l) = (obs.clone(), load.clone());
        Ok(Instance {
            // Everything taken in reached the database (written or counted
            // dropped).
            settled: Arc::new(move || {
                o.written() + o.dropped() >= l.processed.load(Ordering::Relaxed)
            }),
            ..Instance::new(Arc::new(move || {
                Box::pin(ben_lucius::run(
                    Some(key.clone()),
                    deps.clone(),
                    load.clone(),
                    obs.clone(),
                ))
            }))
        })
    })
}

fn build_sidecar(
    env: &Env,
    deps: Deps,
    load: Arc<Load>,
) -> BoxFuture<'_, Result<Instance, String>> {
    let (cfg, stats) = (env.sidecar.clone(), env.shared.sidecar.clone());
    Box::pin(async move {
        let socket = cfg.socket.clone();
        Ok(Instance {
            drains: false,
            leaves: vec![socket],
            ..Instance::new(Arc::new(move || {
                Box::pin(ben_sidecar::run(
                    cfg.clone(),
                    deps.clone(),
                    load.clone(),
                    stats.clone(),
                ))
            }))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_unique_and_ordered() {
        let mut roles: Vec<_> = KINDS.iter().map(|k| k.role).collect();
        roles.sort();
        roles.dedup();
        assert_eq!(roles.len(), KINDS.len());
        assert!(KINDS.windows(2).all(|w| w[0].order <= w[1].order));
        // The sidecar takes traffic last: every hop it feeds is up first.
        let entry = KINDS.iter().filter(|k| k.hop == Hop::Entry);
        for e in entry {
            assert!(KINDS
                .iter()
                .filter(|k| k.hop != Hop::Entry)
                .all(|k| k.order < e.order));
        }
    }

    #[test]
    fn the_ledgers_test_roles_are_the_tables() {
        // ben-control's own tests run below the table with a copy of its
        // roles; the copy must not drift.
        let mut table = intent_roles();
        let mut copy = ben_control::testkit::roles();
        table.sort();
        copy.sort();
        assert_eq!(table, copy);
        // Every kind that takes intent fetches at least its settings.
        assert!(intent_roles()
            .iter()
            .all(|(_, a)| a.iter().any(|x| x == "settings")));
    }

    #[test]
    fn ids_map_to_their_kind() {
        assert_eq!(kind_of_id("spine-12").map(|k| k.role), Some("spine"));
        assert_eq!(kind_of_id("mesh-1").map(|k| k.role), Some("mesh"));
        assert!(kind_of_id("control").is_none());
        assert!(kind_of_id("nobody-1").is_none());
    }
}
