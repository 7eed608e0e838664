//! The cluster config file (TOML). Every key is optional except `prefix`;
//! relative paths are relative to the directory of the config file.
//!
//! ```toml
//! nats = "nats://127.0.0.1:4222"  # the NATS server every process connects to
//! prefix = "shop-prod"            # every subject becomes <prefix>.ben.…; one per cluster
//! data_dir = ".ben-cluster"       # ledger, store, keys, sockets, Lucius, status
//! # key_dir = "<data_dir>/keys"     # one Ed25519 key per component id (see keys.rs)
//! # store_dir = "<data_dir>/store"  # the files store (only with [store] kind = "files")
//! # socket = "<data_dir>/sidecar.sock"
//!
//! [control]
//! api = "127.0.0.1:7420"          # the HTTP API benctl talks to
//! # ledger_db = "<data_dir>/ledger.db"   # SQLite, when no database_url
//! # database_url = "postgres://postgres@127.0.0.1:5432/ben"  # PostgreSQL for the
//! #                                 # ledger and every Lucius (tables ledger_*, lucius_*)
//! prepare_timeout_ms = 10000
//!
//! [scale]
//! detectors = 1
//! spines = 2
//! proxies = 1
//! spare = 2                       # extra ids (and keys) per scalable kind for late joiners
//! # Scaling on queue depth (the supervisor starts spare ids, stops what it
//! # added; never below the counts above). Each max_* is at most count + spare;
//! # the default, the count itself, turns scaling of that kind off.
//! max_spines = 2                  # spines: up when the mean queue depth stays above
//! max_proxies = 1                 # high_water for window_ms, down when every one is
//! max_detectors = 1               # near-empty (≤ high_water/4) for 2 × window_ms;
//! #                                 detectors: 2 × high_water, 2 × window_ms, never down
//! high_water = 64                 # messages (record batches) waiting per instance
//! window_ms = 10000
//! cooldown_ms = 30000             # the least time between two actions on one kind
//!
//! [sidecar]
//! bee_ttl_s = 600
//! max_record_bytes = 1048576
//! [[sidecar.selectors]]           # who Beekeeper attests, on top of the bundles' [[apps]]
//! app = "shop_web"
//! uid = 1000
//! exe = "/usr/local/bin/shop-web"
//!
//! [blot]
//! key = "env:BEN_BLOT_KEY"        # or "file:PATH"; unset env: <data_dir>/blot.key
//!
//! [jetstream]                     # durable control-plane subjects (see ben_bus_nats)
//! enabled = true                  # intent, acks, signals, DLQ kept in a stream per prefix
//! max_age_s = 86400               # stored messages older than this are dropped
//! max_bytes = 67108864            # the stream's size limit (oldest dropped first)
//!
//! [bus]                           # where CyberMesh's eight topics go (ai.anomalies.v1,
//! kind = "nats"                   # ai.evidence.v1, ai.policy.v1, control.commits.v1,
//!                                 # control.policy.v1, control.reputation.v1,
//!                                 # control.policy.ack.v1, ai.dlq.v1); "kafka": on Kafka
//!                                 # (ben built with --features kafka), everything else on NATS
//! brokers = "127.0.0.1:9092"      # Kafka's bootstrap servers
//! topic_prefix = ""               # before every topic name (clusters sharing a Kafka: one each)
//! partitions = 3                  # of the topics created on start when missing
//! replication = 1
//! max_message_bytes = 1048576     # the topics' and clients' limit (evidence: up to 512 KB)
//!
//! [store]                         # where staged artifacts live (see ben_bus_nats::store)
//! kind = "nats"                   # the NATS object store bucket BEN_<prefix> (JetStream needed);
//!                                 # "files": store_dir, shared by the processes of one machine
//!
//! [registry]                      # the service registry: KV bucket BEN_<prefix>, one entry per
//! ttl_ms = 5000                   # process (role, pid, intent version, last heartbeat), written
//!                                 # every second; an entry not rewritten for ttl_ms expires
//!
//! [cpu]                           # scheduling classes, for machines with fewer cores than processes
//! lucius = "normal"               # "idle": Lucius runs under SCHED_IDLE, only on CPU time the data
//!                                 # path leaves (lower app→signal latency; under long saturation
//!                                 # Lucius falls behind and drops what its queue cannot hold, counted)
//!
//! [validators]                    # CyberMesh's validators, one process each (none without this
//! addrs = ["127.0.0.1:7611",      # table): the address each listens on for its links to the
//!          "127.0.0.1:7612",      # others, by index (validator-1 first); at least 4 (3f + 1,
//!          "127.0.0.1:7613",      # f = 1). Their keys are validator-<n> of key_dir; their blocks
//!          "127.0.0.1:7614"]      # go to database_url's tables (SQLite files without it)
//!
//! [mesh]                          # CyberMesh's AI service (none without this table; it needs
//! every_ms = 200                  # [validators]): flows on ben.mesh.flows judged as they arrive
//!                                 # (at most one step per every_ms; windows kept across steps),
//!                                 # signed anomalies to the validators; its feedback loop
//!                                 # calibrates its threshold
//! network_sources = 0             # ask the validators to block a whole /24 (/64) once this many
//!                                 # of its addresses attack within a minute (0: never; it cuts
//!                                 # off the network's innocent hosts too)
//!
//! [enforcer]                      # CyberMesh's enforcement agent on this host (none without this
//! backend = "dry-run"             # table; it needs [validators]): "nftables", "iptables" (root),
//! allow = ["10.0.0.0/8"]          # or "dry-run"; networks never blocked besides this host's own
//! reconcile_ms = 5000             # addresses, the validators, NATS and the database; how often the
//! labels = ["role=web"]           # (its labels: policies scoped to one are its, as to its id or host)
//!                                 # host's table is read back and repaired. Another host runs
//!                                 # `ben enforce --config F --id enforcer-2` with that id's key
//!
//! [sensor]                        # CyberMesh's live sensor on this host (none without this
//! iface = "eth0"                  # table): AF_PACKET capture on iface (CAP_NET_RAW), flows signed
//! filter = "not port 4222"        # by its key on ben.mesh.flows; a pcap filter (compiled with
//! netns = ""                      # tcpdump); the interface's `ip netns` name, if not the host's;
//! idle_timeout_ms = 15000         # a flow ends this long after its last packet, and is cut
//! flow_timeout_ms = 10000         # this long after its first (a long flood reaches detection
//!                                 # while it lasts). Another host runs
//!                                 # `ben sensor --config F --id sensor-2` with that id's key
//!
//! [supervisor]
//! backoff_initial_ms = 100        # restart waits double from this…
//! backoff_max_ms = 5000           # …up to this
//! stop_grace_ms = 5000            # SIGTERM → SIGKILL
//! ready_timeout_ms = 20000        # how long a kind may take to send its first heartbeat
//! hung_after_ms = 10000           # a running process silent this long is killed and restarted
//!                                 # (judged only once NATS has been up this long)
//! ```

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCfg {
    nats: Option<String>,
    prefix: Option<String>,
    data_dir: Option<PathBuf>,
    key_dir: Option<PathBuf>,
    store_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    #[serde(default)]
    control: ControlCfg,
    #[serde(default)]
    scale: BTreeMap<String, toml::Spanned<toml::Value>>,
    #[serde(default)]
    sidecar: SidecarCfg,
    #[serde(default)]
    blot: BlotCfg,
    #[serde(default)]
    jetstream: JetStreamCfg,
    #[serde(default)]
    supervisor: SupervisorCfg,
    #[serde(default)]
    store: StoreCfg,
    #[serde(default)]
    bus: BusCfg,
    #[serde(default)]
    registry: RegistryCfg,
    #[serde(default)]
    cpu: BTreeMap<String, String>,
    #[serde(default)]
    validators: ValidatorsCfg,
    enforcer: Option<EnforcerCfg>,
    mesh: Option<MeshCfg>,
    sensor: Option<SensorCfg>,
    #[serde(default)]
    metrics: MetricsCfg,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsCfg {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SensorCfg {
    iface: Option<String>,
    filter: Option<String>,
    netns: Option<String>,
    idle_timeout_ms: Option<u64>,
    flow_timeout_ms: Option<u64>,
}

/// `[sensor]`: the live sensor this cluster runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sensor {
    pub iface: String,
    pub filter: Option<String>,
    pub netns: Option<String>,
    pub idle_timeout_ms: u64,
    pub flow_timeout_ms: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MeshCfg {
    every_ms: Option<u64>,
    network_sources: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnforcerCfg {
    backend: Option<String>,
    #[serde(default)]
    allow: Vec<String>,
    reconcile_ms: Option<u64>,
    #[serde(default)]
    labels: Vec<String>,
}

/// `[enforcer]`: the enforcement agent this cluster runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enforcer {
    /// `nftables`, `iptables` or `dry-run`.
    pub backend: String,
    /// Networks never blocked besides the host's own and the servers'.
    pub allow: Vec<String>,
    pub reconcile_ms: u64,
    /// Its labels (`key=value`): policies scoped to one are its.
    pub labels: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidatorsCfg {
    #[serde(default)]
    addrs: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreCfg {
    kind: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BusCfg {
    kind: Option<String>,
    brokers: Option<String>,
    topic_prefix: Option<String>,
    partitions: Option<u64>,
    replication: Option<u64>,
    max_message_bytes: Option<u64>,
}

/// `[bus] kind = "kafka"`: CyberMesh's topics on Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kafka {
    pub brokers: String,
    pub topic_prefix: String,
    pub partitions: i32,
    pub replication: i32,
    pub max_message_bytes: usize,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryCfg {
    ttl_ms: Option<u64>,
}

/// Where the cluster keeps staged artifacts (`[store] kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// The NATS object store bucket of the prefix (the default).
    Nats,
    /// The files store in `store_dir` (one machine).
    Files,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JetStreamCfg {
    enabled: Option<bool>,
    max_age_s: Option<u64>,
    max_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlCfg {
    api: Option<SocketAddr>,
    ledger_db: Option<PathBuf>,
    database_url: Option<String>,
    prepare_timeout_ms: Option<u64>,
}

/// `[scale]` as read: the general keys, and per scalable kind of the
/// component table its count (`<plural>`) and ceiling (`max_<plural>`).
#[derive(Debug, Default)]
struct ScaleCfg {
    spare: Option<usize>,
    high_water: Option<u64>,
    window_ms: Option<u64>,
    cooldown_ms: Option<u64>,
    counts: BTreeMap<&'static str, usize>,
    maxes: BTreeMap<&'static str, usize>,
}

/// The kinds cluster mode runs whose count is configurable.
fn scaled_kinds() -> impl Iterator<Item = &'static ben_runtime::Kind> {
    ben_runtime::KINDS
        .iter()
        .filter(|k| k.in_cluster && matches!(k.scale, ben_runtime::Scale::Auto(_)))
}

/// Reads `[scale]` (`text`: the file, to name lines in errors).
fn scale_cfg(
    p: &str,
    text: &str,
    table: BTreeMap<String, toml::Spanned<toml::Value>>,
) -> Result<ScaleCfg, String> {
    let mut cfg = ScaleCfg::default();
    for (key, v) in table {
        let line = 1 + text[..v.span().start.min(text.len())].matches('\n').count();
        let n = match v.get_ref() {
            toml::Value::Integer(n) if *n >= 0 => *n as u64,
            other => {
                return Err(format!(
                    "{p}: [scale] {key} = {other} (line {line}): expected a whole number, 0 or more"
                ))
            }
        };
        let count = usize::try_from(n).unwrap_or(usize::MAX);
        match key.as_str() {
            "spare" => cfg.spare = Some(count),
            "high_water" => cfg.high_water = Some(n),
            "window_ms" => cfg.window_ms = Some(n),
            "cooldown_ms" => cfg.cooldown_ms = Some(n),
            k => {
                let kind = scaled_kinds().find(|x| x.plural == k);
                let max = scaled_kinds().find(|x| k.strip_prefix("max_") == Some(x.plural));
                match (kind, max) {
                    (Some(x), _) => cfg.counts.insert(x.role, count),
                    (_, Some(x)) => cfg.maxes.insert(x.role, count),
                    _ => {
                        let mut known = vec!["spare", "high_water", "window_ms", "cooldown_ms"]
                            .into_iter()
                            .map(String::from)
                            .collect::<Vec<_>>();
                        for x in scaled_kinds() {
                            known.push(x.plural.to_string());
                            known.push(format!("max_{}", x.plural));
                        }
                        return Err(format!(
                            "{p}: [scale] {k} (line {line}): unknown key; one of: {}",
                            known.join(", ")
                        ));
                    }
                };
            }
        }
    }
    Ok(cfg)
}

/// `[validators] addrs`: none, or at least four distinct socket
/// addresses (n = 3f + 1 with f ≥ 1; at most 64).
fn validator_addrs(p: &str, addrs: &[String]) -> Result<Vec<SocketAddr>, String> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        let addr: SocketAddr = a.trim().parse().map_err(|_| {
            format!(
                "{p}: [validators] addrs #{} = {a:?}: not a socket address (e.g. \"127.0.0.1:7611\")",
                i + 1
            )
        })?;
        if out.contains(&addr) {
            return Err(format!(
                "{p}: [validators] addrs #{} = {a:?}: named twice; each validator listens on its own",
                i + 1
            ));
        }
        out.push(addr);
    }
    if !out.is_empty() && !(4..=64).contains(&out.len()) {
        return Err(format!(
            "{p}: [validators] addrs names {} validators: 4 to 64 (3f + 1 tolerate f faults; fewer than 4 tolerate none), or leave the table out",
            out.len()
        ));
    }
    Ok(out)
}

/// `[cpu]`: a scheduling class per role.
fn cpu_cfg(
    p: &str,
    table: BTreeMap<String, String>,
) -> Result<BTreeMap<&'static str, ben_orchestrator::cpu::CpuClass>, String> {
    use ben_orchestrator::cpu::CpuClass;
    let mut out = BTreeMap::new();
    for (role, class) in table {
        let Some(kind) = ben_runtime::kind(&role).filter(|k| k.in_cluster) else {
            return Err(format!(
                "{p}: [cpu] {role}: not a component cluster mode runs; one of: {}",
                ben_runtime::KINDS
                    .iter()
                    .filter(|k| k.in_cluster)
                    .map(|k| k.role)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        let c = match class.as_str() {
            "normal" => CpuClass::Normal,
            "idle" => CpuClass::Background,
            other => {
                return Err(format!(
                    "{p}: [cpu] {role} = {other:?}: \"normal\" or \"idle\" (SCHED_IDLE: only CPU time the data path leaves)"
                ))
            }
        };
        out.insert(kind.role, c);
    }
    Ok(out)
}

/// `[scale]`'s automatic scaling: how far each kind may grow (from its
/// count, which is also its floor) and the thresholds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scaling {
    /// Per scalable role, its ceiling.
    pub max: BTreeMap<&'static str, usize>,
    pub policy: ben_orchestrator::scale::ScalePolicy,
}

/// Reads the automatic-scaling keys of `[scale]` (`counts`: the counts
/// already read; `p`: the file, for errors).
fn scaling(
    p: &str,
    s: &ScaleCfg,
    counts: &BTreeMap<&'static str, usize>,
    spare: usize,
) -> Result<Scaling, String> {
    let max = |key: &str, count_key: &str, v: Option<usize>, count: usize| {
        match v {
        None => Ok(count),
        Some(n) if n < count => Err(format!(
            "{p}: [scale] {key} = {n} is below {count_key} = {count} (the count is the floor)"
        )),
        Some(n) if n > count + spare => Err(format!(
            "{p}: [scale] {key} = {n}: at most {count_key} + spare = {} (only spare ids have keys; raise spare)",
            count + spare
        )),
        Some(n) => Ok(n),
    }
    };
    let positive = |key: &str, v: Option<u64>, default: u64| match v {
        Some(0) => Err(format!("{p}: [scale] {key} = 0: must be positive")),
        Some(n) if n > 1 << 40 => Err(format!("{p}: [scale] {key} = {n}: too large")),
        Some(n) => Ok(n),
        None => Ok(default),
    };
    let d = ben_orchestrator::scale::ScalePolicy::default();
    let ms_ns = |ms: u64| i64::try_from(ms).unwrap_or(i64::MAX / 1_000_000) * 1_000_000;
    let mut maxes = BTreeMap::new();
    for k in scaled_kinds() {
        let count = counts.get(k.role).copied().unwrap_or(k.count);
        let key = format!("max_{}", k.plural);
        maxes.insert(
            k.role,
            max(&key, k.plural, s.maxes.get(k.role).copied(), count)?,
        );
    }
    Ok(Scaling {
        max: maxes,
        policy: ben_orchestrator::scale::ScalePolicy {
            high_water: positive("high_water", s.high_water, d.high_water)?,
            window_ns: ms_ns(positive(
                "window_ms",
                s.window_ms,
                (d.window_ns / 1_000_000) as u64,
            )?),
            cooldown_ns: ms_ns(positive(
                "cooldown_ms",
                s.cooldown_ms,
                (d.cooldown_ns / 1_000_000) as u64,
            )?),
        },
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SidecarCfg {
    bee_ttl_s: Option<u64>,
    max_record_bytes: Option<usize>,
    #[serde(default)]
    selectors: Vec<SelectorCfg>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SelectorCfg {
    app: String,
    uid: Option<u32>,
    gid: Option<u32>,
    exe: Option<String>,
    exe_blake3: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BlotCfg {
    key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SupervisorCfg {
    backoff_initial_ms: Option<u64>,
    backoff_max_ms: Option<u64>,
    stop_grace_ms: Option<u64>,
    ready_timeout_ms: Option<u64>,
    hung_after_ms: Option<u64>,
}

/// The `[jetstream]` limits of the cluster's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JetStream {
    pub max_age: Duration,
    pub max_bytes: i64,
}

/// A loaded, checked cluster config (every path absolute or relative to
/// the working directory, every default filled in).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The file it came from.
    pub path: PathBuf,
    pub nats: String,
    pub prefix: String,
    pub data_dir: PathBuf,
    pub key_dir: PathBuf,
    pub store_dir: PathBuf,
    pub socket: PathBuf,
    pub api: SocketAddr,
    pub ledger_db: PathBuf,
    /// PostgreSQL for the ledger and Lucius; `None`: SQLite files.
    pub database_url: Option<String>,
    pub prepare_timeout_ms: u64,
    /// Instances per role cluster mode runs (`[scale] <plural>` for the
    /// scalable kinds, the table's count for the others).
    pub counts: BTreeMap<&'static str, usize>,
    pub spare: usize,
    /// Automatic scaling (`[scale] max_*`, `high_water`, `window_ms`,
    /// `cooldown_ms`).
    pub scaling: Scaling,
    pub bee_ttl_ns: i64,
    pub max_record_bytes: usize,
    pub selectors: Vec<ben_bee::Selector>,
    pub blot_key: String,
    /// Durable control-plane subjects in JetStream (`[jetstream]`);
    /// `None`: everything on core NATS.
    pub jetstream: Option<JetStream>,
    pub backoff: ben_orchestrator::Backoff,
    pub stop_grace: Duration,
    pub ready_timeout: Duration,
    pub hung_after: Duration,
    /// `[store] kind`.
    pub store: StoreKind,
    /// `[bus] kind = "kafka"`: CyberMesh's topics on Kafka (`None`: on
    /// NATS like everything else).
    pub kafka: Option<Kafka>,
    /// `[registry] ttl_ms`: how long an entry outlives its last write.
    pub registry_ttl: Duration,
    /// `[cpu]`: scheduling classes by role (the rest run normal).
    pub cpu: BTreeMap<&'static str, ben_orchestrator::cpu::CpuClass>,
    /// The validators' link addresses, by index (`[validators] addrs`;
    /// empty: no validators run).
    pub validator_addrs: Vec<SocketAddr>,
    /// `[enforcer]`: the host's enforcement agent (none: not run).
    pub enforcer: Option<Enforcer>,
    /// `[sensor]`: the host's live sensor (none: not run).
    pub sensor: Option<Sensor>,
    /// `[mesh] every_ms`: the AI service judges arriving flows at most once
    /// per this (none: no AI service).
    pub mesh_every: Option<Duration>,
    /// `[mesh] network_sources` (0: the AI service never asks for a
    /// network).
    pub mesh_network_sources: usize,
    /// `[metrics] listen`: the address every process but the control
    /// process serves its own `/metrics` on, on a port of its own (the
    /// kernel picks it; `metrics_dir` tells Prometheus where). `"off"`:
    /// none (their counters still reach the control process's).
    pub metrics_listen: Option<std::net::IpAddr>,
}

impl ClusterConfig {
    /// Reads and checks `path`. Errors name the file and the key.
    pub fn load(path: &Path) -> Result<ClusterConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading the cluster config {}: {e}", path.display()))?;
        Self::parse(path, &text)
    }

    /// Parses `text` as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<ClusterConfig, String> {
        let p = path.display();
        let f: FileCfg = toml::from_str(text).map_err(|e| {
            format!(
                "{p}: {}",
                e.to_string().trim_end().replace("TOML parse error ", "")
            )
        })?;
        let base = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let at = |q: PathBuf| if q.is_absolute() { q } else { base.join(q) };
        let prefix = f.prefix.ok_or_else(|| {
            format!("{p}: `prefix` is required (the subject prefix that keeps this cluster's messages apart, e.g. prefix = \"shop-prod\")")
        })?;
        if !ben_bus::valid_subject(&prefix, false) {
            return Err(format!(
                "{p}: `prefix` = {prefix:?} is not a NATS subject (dot-separated tokens, no spaces, `*` or `>`)"
            ));
        }
        let nats = f.nats.unwrap_or_else(|| "nats://127.0.0.1:4222".into());
        if nats.trim().is_empty() {
            return Err(format!(
                "{p}: `nats` is empty (e.g. nats = \"nats://127.0.0.1:4222\")"
            ));
        }
        let data_dir = at(f.data_dir.unwrap_or_else(|| ".ben-cluster".into()));
        let count = |key: &str, v: Option<usize>, default: usize, min: usize| match v {
            Some(n) if n < min => Err(format!("{p}: [scale] {key} = {n}: at least {min}")),
            Some(n) if n > 64 => Err(format!("{p}: [scale] {key} = {n}: at most 64")),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        let ms = |table: &str, key: &str, v: Option<u64>, default: u64| match v {
            Some(0) => Err(format!("{p}: [{table}] {key} = 0: must be positive")),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        let scale = scale_cfg(&p.to_string(), text, f.scale)?;
        let mut counts = BTreeMap::new();
        for k in ben_runtime::KINDS.iter().filter(|k| k.in_cluster) {
            let n = match scaled_kinds().any(|x| x.role == k.role) {
                true => count(k.plural, scale.counts.get(k.role).copied(), k.count, 1)?,
                false => k.count,
            };
            counts.insert(k.role, n);
        }
        let validator_addrs = validator_addrs(&p.to_string(), &f.validators.addrs)?;
        counts.insert("validator", validator_addrs.len());
        let enforcer = match f.enforcer {
            None => None,
            Some(_) if validator_addrs.is_empty() => {
                return Err(format!(
                    "{p}: [enforcer] needs [validators]: the agent applies only policies certified by the validators' keys"
                ))
            }
            Some(e) => {
                let backend = e.backend.unwrap_or_else(|| "dry-run".into());
                if !["nftables", "iptables", "dry-run"].contains(&backend.as_str()) {
                    return Err(format!(
                        "{p}: [enforcer] backend = {backend:?}: \"nftables\", \"iptables\" or \"dry-run\""
                    ));
                }
                for (i, a) in e.allow.iter().enumerate() {
                    ben_mesh_enforce::model::Net::parse(a)
                        .map_err(|err| format!("{p}: [enforcer] allow #{}: {err}", i + 1))?;
                }
                for l in &e.labels {
                    if !l.contains('=') {
                        return Err(format!(
                            "{p}: [enforcer] labels: {l:?} is not key=value"
                        ));
                    }
                    ben_mesh_enforce::model::check_scope(l)
                        .map_err(|e| format!("{p}: [enforcer] labels: {e}"))?;
                }
                Some(Enforcer {
                    backend,
                    allow: e.allow,
                    reconcile_ms: ms("enforcer", "reconcile_ms", e.reconcile_ms, 5_000)?,
                    labels: e.labels,
                })
            }
        };
        counts.insert("enforcer", usize::from(enforcer.is_some()));
        let sensor = match f.sensor {
            None => None,
            Some(x) => {
                let iface = x.iface.filter(|i| !i.is_empty()).ok_or_else(|| {
                    format!("{p}: [sensor] needs iface: the interface to capture on (ip link lists them)")
                })?;
                Some(Sensor {
                    iface,
                    filter: x.filter.filter(|f| !f.is_empty()),
                    netns: x.netns.filter(|n| !n.is_empty()),
                    idle_timeout_ms: ms("sensor", "idle_timeout_ms", x.idle_timeout_ms, 15_000)?,
                    flow_timeout_ms: ms("sensor", "flow_timeout_ms", x.flow_timeout_ms, 10_000)?,
                })
            }
        };
        counts.insert("sensor", usize::from(sensor.is_some()));
        let metrics_listen = match f.metrics.listen.as_deref().map(str::trim) {
            None => Some(std::net::IpAddr::from([127, 0, 0, 1])),
            Some("off") => None,
            Some(a) => Some(a.parse::<std::net::IpAddr>().map_err(|_| {
                format!("{p}: [metrics] listen = {a:?}: an IP address (each process takes a port of its own, written to the metrics dir for Prometheus' file_sd), or \"off\"")
            })?),
        };
        let mesh_network_sources = f.mesh.as_ref().and_then(|m| m.network_sources).unwrap_or(0);
        ben_runtime::table::check_network_sources(mesh_network_sources)
            .map_err(|e| format!("{p}: [mesh] {e}"))?;
        let mesh_every = match f.mesh {
            None => None,
            Some(_) if validator_addrs.is_empty() => {
                return Err(format!(
                    "{p}: [mesh] needs [validators]: the AI service's anomalies go to them, and its feedback loop judges its threshold by what they commit"
                ))
            }
            Some(m) => Some(Duration::from_millis(ms("mesh", "every_ms", m.every_ms, ben_runtime::table::MESH_EVERY.as_millis() as u64)?)),
        };
        counts.insert("mesh", usize::from(mesh_every.is_some()));
        let spare = count("spare", scale.spare, 2, 0)?;
        let scaling = scaling(&p.to_string(), &scale, &counts, spare)?;
        let bee_ttl_s = ms("sidecar", "bee_ttl_s", f.sidecar.bee_ttl_s, 600)?;
        let mut selectors = Vec::new();
        for (i, s) in f.sidecar.selectors.into_iter().enumerate() {
            if s.app.trim().is_empty() {
                return Err(format!(
                    "{p}: [[sidecar.selectors]] #{}: `app` is empty",
                    i + 1
                ));
            }
            if s.uid.is_none() && s.gid.is_none() && s.exe.is_none() && s.exe_blake3.is_none() {
                return Err(format!(
                    "{p}: [[sidecar.selectors]] #{} (app {}): name at least one of uid, gid, exe, exe_blake3 (a selector without any would attest every process)",
                    i + 1,
                    s.app
                ));
            }
            selectors.push(ben_bee::Selector {
                app: s.app,
                uid: s.uid,
                gid: s.gid,
                exe: s.exe,
                exe_blake3: s.exe_blake3,
            });
        }
        let initial = ms(
            "supervisor",
            "backoff_initial_ms",
            f.supervisor.backoff_initial_ms,
            100,
        )?;
        let max = ms(
            "supervisor",
            "backoff_max_ms",
            f.supervisor.backoff_max_ms,
            5000,
        )?;
        if max < initial {
            return Err(format!(
                "{p}: [supervisor] backoff_max_ms = {max} is below backoff_initial_ms = {initial}"
            ));
        }
        let jetstream = if f.jetstream.enabled.unwrap_or(true) {
            let max_age_s = ms("jetstream", "max_age_s", f.jetstream.max_age_s, 86_400)?;
            let max_bytes = ms("jetstream", "max_bytes", f.jetstream.max_bytes, 64 << 20)?;
            Some(JetStream {
                max_age: Duration::from_secs(max_age_s),
                max_bytes: i64::try_from(max_bytes)
                    .map_err(|_| format!("{p}: [jetstream] max_bytes = {max_bytes}: too large"))?,
            })
        } else {
            None
        };
        let store = match f.store.kind.as_deref() {
            None | Some("nats") => StoreKind::Nats,
            Some("files") => StoreKind::Files,
            Some(other) => {
                return Err(format!(
                    "{p}: [store] kind = {other:?}: \"nats\" (the NATS object store) or \"files\" (store_dir)"
                ))
            }
        };
        let kafka = kafka_cfg(&p.to_string(), f.bus)?;
        let cpu = cpu_cfg(&p.to_string(), f.cpu)?;
        let registry_ttl_ms = ms("registry", "ttl_ms", f.registry.ttl_ms, 5000)?;
        if registry_ttl_ms < 2000 {
            return Err(format!(
                "{p}: [registry] ttl_ms = {registry_ttl_ms}: at least 2000 (entries are rewritten every second)"
            ));
        }
        Ok(ClusterConfig {
            path: path.to_path_buf(),
            validator_addrs,
            enforcer,
            sensor,
            mesh_every,
            mesh_network_sources,
            metrics_listen,
            store,
            kafka,
            registry_ttl: Duration::from_millis(registry_ttl_ms),
            cpu,
            nats,
            prefix,
            key_dir: f.key_dir.map(at).unwrap_or_else(|| data_dir.join("keys")),
            store_dir: f
                .store_dir
                .map(at)
                .unwrap_or_else(|| data_dir.join("store")),
            socket: f
                .socket
                .map(at)
                .unwrap_or_else(|| data_dir.join("sidecar.sock")),
            api: f
                .control
                .api
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7420))),
            ledger_db: f
                .control
                .ledger_db
                .map(at)
                .unwrap_or_else(|| data_dir.join("ledger.db")),
            database_url: f
                .control
                .database_url
                .clone()
                .filter(|u| !u.trim().is_empty()),
            prepare_timeout_ms: ms(
                "control",
                "prepare_timeout_ms",
                f.control.prepare_timeout_ms,
                10_000,
            )?,
            counts,
            spare,
            scaling,
            bee_ttl_ns: i64::try_from(bee_ttl_s)
                .ok()
                .and_then(|s| s.checked_mul(1_000_000_000))
                .ok_or_else(|| format!("{p}: [sidecar] bee_ttl_s = {bee_ttl_s}: too large"))?,
            max_record_bytes: match f.sidecar.max_record_bytes {
                Some(0) => {
                    return Err(format!(
                        "{p}: [sidecar] max_record_bytes = 0: must be positive"
                    ))
                }
                Some(n) => n,
                None => 1 << 20,
            },
            selectors,
            blot_key: f.blot.key.unwrap_or_else(|| "env:BEN_BLOT_KEY".into()),
            jetstream,
            backoff: ben_orchestrator::Backoff {
                initial: Duration::from_millis(initial),
                max: Duration::from_millis(max),
                ..ben_orchestrator::Backoff::default()
            },
            stop_grace: Duration::from_millis(ms(
                "supervisor",
                "stop_grace_ms",
                f.supervisor.stop_grace_ms,
                5000,
            )?),
            ready_timeout: Duration::from_millis(ms(
                "supervisor",
                "ready_timeout_ms",
                f.supervisor.ready_timeout_ms,
                20_000,
            )?),
            hung_after: Duration::from_millis(ms(
                "supervisor",
                "hung_after_ms",
                f.supervisor.hung_after_ms,
                10_000,
            )?),
            data_dir,
        })
    }

    /// Where each process writes where its `/metrics` is, one
    /// `<id>.json` each in Prometheus' `file_sd` format.
    pub fn metrics_dir(&self) -> PathBuf {
        self.data_dir.join("metrics")
    }

    /// Where the control process leaves a one-time dashboard link for
    /// `ben cluster up` to print (0600; removed once read).
    pub fn login_file(&self) -> PathBuf {
        self.data_dir.join("dashboard.login")
    }

    /// Where the control process writes the address its API listens on.
    pub fn api_file(&self) -> PathBuf {
        self.data_dir.join("control.api")
    }

    /// Where `ben cluster up` writes the cluster's status (JSON).
    pub fn status_file(&self) -> PathBuf {
        self.data_dir.join("cluster-status.json")
    }

    /// Every component id this cluster may run, with its kind, in start
    /// order: `control`, then each kind of the component table that cluster
    /// mode runs, `<role>-1…<role>-<count>` (scalable kinds with `spare`
    /// extra ids for late joiners and scaling).
    pub fn identities(&self) -> Vec<(String, &'static str)> {
        self.ids(true)
    }

    /// Each scalable kind with its configured count (the floor) and its
    /// `max_*` (the ceiling).
    pub fn scale_bounds(&self) -> Vec<(&'static str, usize, usize)> {
        scaled_kinds()
            .map(|k| {
                let n = self.count(k.role);
                (
                    k.role,
                    n,
                    self.scaling.max.get(k.role).copied().unwrap_or(n),
                )
            })
            .collect()
    }

    /// The ids `ben cluster up` starts (the identities without spares).
    pub fn started(&self) -> Vec<(String, &'static str)> {
        self.ids(false)
    }

    /// How many of `role` run.
    pub fn count(&self, role: &str) -> usize {
        self.counts.get(role).copied().unwrap_or(0)
    }

    /// The scheduling class of `role`'s processes.
    pub fn cpu_class(&self, role: &str) -> ben_orchestrator::cpu::CpuClass {
        self.cpu.get(role).copied().unwrap_or_default()
    }

    fn ids(&self, spares: bool) -> Vec<(String, &'static str)> {
        let mut v = vec![("control".to_string(), "control")];
        for k in ben_runtime::KINDS.iter().filter(|k| k.in_cluster) {
            let scaled = matches!(k.scale, ben_runtime::Scale::Auto(_));
            let extra = if spares && scaled { self.spare } else { 0 };
            for i in 1..=self.count(k.role) + extra {
                v.push((format!("{}-{i}", k.role), k.role));
            }
        }
        v
    }
}

/// The control plane's settings for this cluster. The one place they are
/// built: the PostgreSQL ledger (`database_url`) goes through here.
pub fn control_config(cfg: &ClusterConfig) -> ben_control::Config {
    ben_control::Config {
        data_dir: cfg.data_dir.clone(),
        db_path: Some(cfg.ledger_db.clone()),
        database_url: cfg.database_url.clone(),
        api_addr: cfg.api,
        prepare_timeout_ms: cfg.prepare_timeout_ms,
        ..ben_control::Config::default()
    }
}

/// `[bus]`: NATS for everything (the default), or Kafka for CyberMesh's
/// topics.
fn kafka_cfg(p: &str, b: BusCfg) -> Result<Option<Kafka>, String> {
    let kafka_only = [
        ("brokers", b.brokers.is_some()),
        ("topic_prefix", b.topic_prefix.is_some()),
        ("partitions", b.partitions.is_some()),
        ("replication", b.replication.is_some()),
        ("max_message_bytes", b.max_message_bytes.is_some()),
    ];
    match b.kind.as_deref() {
        None | Some("nats") => {
            if let Some((k, _)) = kafka_only.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "{p}: [bus] {k} is a Kafka setting, but [bus] kind is \"nats\" (set kind = \"kafka\" to use it)"
                ));
            }
            Ok(None)
        }
        Some("kafka") => {
            let brokers = b.brokers.unwrap_or_else(|| "127.0.0.1:9092".into());
            if brokers.trim().is_empty() {
                return Err(format!("{p}: [bus] brokers is empty (host:port[,host:port…])"));
            }
            let topic_prefix = b.topic_prefix.unwrap_or_default();
            if !topic_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                return Err(format!(
                    "{p}: [bus] topic_prefix = {topic_prefix:?}: letters, digits, `.`, `_` and `-` only (Kafka's topic names)"
                ));
            }
            let count = |k: &str, v: Option<u64>, d: u64, (min, max): (u64, u64)| match v
                .unwrap_or(d)
            {
                n if (min..=max).contains(&n) => Ok(n),
                n => Err(format!("{p}: [bus] {k} = {n}: from {min} to {max}")),
            };
            Ok(Some(Kafka {
                brokers,
                topic_prefix,
                partitions: count("partitions", b.partitions, 3, (1, 1024))? as i32,
                replication: count("replication", b.replication, 1, (1, 16))? as i32,
                max_message_bytes: count(
                    "max_message_bytes",
                    b.max_message_bytes,
                    1 << 20,
                    (1024, 64 << 20),
                )? as usize,
            }))
        }
        Some(other) => Err(format!(
            "{p}: [bus] kind = {other:?}: \"nats\" (the default) or \"kafka\" (CyberMesh's topics on Kafka)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClusterConfig, String> {
        ClusterConfig::parse(Path::new("/etc/ben/cluster.toml"), text)
    }

    #[test]
    fn defaults_and_relative_paths() {
        let c = parse("prefix = \"t1\"\n[scale]\nspines = 3\nspare = 1\n").unwrap();
        assert_eq!(c.nats, "nats://127.0.0.1:4222");
        assert_eq!(c.data_dir, Path::new("/etc/ben/.ben-cluster"));
        assert_eq!(c.key_dir, Path::new("/etc/ben/.ben-cluster/keys"));
        assert_eq!(c.ledger_db, Path::new("/etc/ben/.ben-cluster/ledger.db"));
        assert_eq!(c.api.to_string(), "127.0.0.1:7420");
        let started: Vec<String> = c.started().into_iter().map(|(i, _)| i).collect();
        assert_eq!(
            started,
            [
                "control",
                "detector-1",
                "spine-1",
                "spine-2",
                "spine-3",
                "proxy-1",
                "lucius-1",
                "sidecar-1"
            ]
        );
        assert_eq!(c.identities().len(), started.len() + 3);
        // No validators unless [validators] names their addresses; then
        // one process each, started with the first kinds.
        assert!(c.validator_addrs.is_empty());
        let cv = parse(
            "prefix = \"t1\"\n[validators]\naddrs = [\"127.0.0.1:7611\", \"127.0.0.1:7612\", \"127.0.0.1:7613\", \"127.0.0.1:7614\"]\n",
        )
        .unwrap();
        assert_eq!(cv.validator_addrs.len(), 4);
        let started: Vec<String> = cv.started().into_iter().map(|(i, _)| i).collect();
        assert_eq!(
            started[..6],
            [
                "control",
                "detector-1",
                "validator-1",
                "validator-2",
                "validator-3",
                "validator-4"
            ]
        );
        // Scaling is off unless a max_* is raised.
        assert_eq!(
            c.scale_bounds(),
            [("detector", 1, 1), ("spine", 3, 3), ("proxy", 1, 1)]
        );
        let c = parse(
            "prefix = \"t1\"\n[scale]\nspines = 1\nmax_spines = 3\nhigh_water = 4\nwindow_ms = 500\ncooldown_ms = 700\n",
        )
        .unwrap();
        assert_eq!(c.scale_bounds()[1], ("spine", 1, 3));
        assert_eq!(
            c.scaling.policy,
            ben_orchestrator::scale::ScalePolicy {
                high_water: 4,
                window_ns: 500_000_000,
                cooldown_ns: 700_000_000
            }
        );
        assert_eq!(control_config(&c).db_path(), c.ledger_db);
        assert_eq!(c.store, StoreKind::Nats);
        assert_eq!(c.registry_ttl, Duration::from_secs(5));
        let c = parse("prefix = \"t1\"\n[store]\nkind = \"files\"\n[registry]\nttl_ms = 3000\n")
            .unwrap();
        assert_eq!(c.store, StoreKind::Files);
        assert_eq!(c.registry_ttl, Duration::from_secs(3));
        assert_eq!(
            c.jetstream,
            Some(JetStream {
                max_age: Duration::from_secs(86_400),
                max_bytes: 64 << 20
            })
        );
        let c = parse("prefix = \"t1\"\n[jetstream]\nenabled = false\n").unwrap();
        assert_eq!(c.jetstream, None);
        use ben_orchestrator::cpu::CpuClass;
        assert_eq!(c.cpu_class("lucius"), CpuClass::Normal);
        let c = parse("prefix = \"t1\"\n[cpu]\nlucius = \"idle\"\n").unwrap();
        assert_eq!(c.cpu_class("lucius"), CpuClass::Background);
        assert_eq!(c.cpu_class("spine"), CpuClass::Normal);
        let c = parse("prefix = \"t1\"\n[jetstream]\nmax_age_s = 60\nmax_bytes = 1024\n").unwrap();
        assert_eq!(
            c.jetstream,
            Some(JetStream {
                max_age: Duration::from_secs(60),
                max_bytes: 1024
            })
        );
    }

    #[test]
    fn bad_config_names_the_file_and_key() {
        let e = parse("prefix = \"a\"\n[scale]\nspinez = 2\n").unwrap_err();
        assert!(e.starts_with("/etc/ben/cluster.toml: "), "{e}");
        assert!(e.contains("spinez"), "{e}");
        let e = parse("prefix = \"a\"\n[scale]\nspines = \"two\"\n").unwrap_err();
        assert!(e.contains("spines") && e.contains("line 3"), "{e}");
        let e = parse("[scale]\nspines = 2\n").unwrap_err();
        assert!(e.contains("`prefix` is required"), "{e}");
        let e = parse("prefix = \"a b\"").unwrap_err();
        assert!(e.contains("not a NATS subject"), "{e}");
        let e = parse("prefix = \"a\"\n[scale]\nproxies = 0\n").unwrap_err();
        assert_eq!(e, "/etc/ben/cluster.toml: [scale] proxies = 0: at least 1");
        let e = parse("prefix = \"a\"\n[control]\napi = \"nowhere\"\n").unwrap_err();
        assert!(e.contains("api"), "{e}");
        let e = parse("prefix = \"a\"\n[[sidecar.selectors]]\napp = \"x\"\n").unwrap_err();
        assert!(e.contains("at least one of uid"), "{e}");
        let e =
            parse("prefix = \"a\"\n[supervisor]\nbackoff_initial_ms = 900\nbackoff_max_ms = 10\n")
                .unwrap_err();
        assert!(e.contains("backoff_max_ms"), "{e}");
        let e = parse("prefix = \"a\"\n[jetstream]\nmax_bytes = 0\n").unwrap_err();
        assert_eq!(
            e,
            "/etc/ben/cluster.toml: [jetstream] max_bytes = 0: must be positive"
        );
        let e = parse("prefix = \"a\"\n[jetstream]\nenable = true\n").unwrap_err();
        assert!(e.contains("enable"), "{e}");
        let e = parse("prefix = \"a\"\n[store]\nkind = \"s3\"\n").unwrap_err();
        assert!(e.contains("[store] kind = \"s3\""), "{e}");
        let e = parse("prefix = \"a\"\n[cpu]\nlucius = \"low\"\n").unwrap_err();
        assert!(e.contains("[cpu] lucius = \"low\""), "{e}");
        let e = parse("prefix = \"a\"\n[cpu]\nlucios = \"idle\"\n").unwrap_err();
        assert!(e.contains("[cpu] lucios: not a component"), "{e}");
        let e = parse("prefix = \"a\"\n[registry]\nttl_ms = 500\n").unwrap_err();
        assert!(e.contains("[registry] ttl_ms = 500"), "{e}");
        let e = parse("prefix = [").unwrap_err();
        assert!(e.starts_with("/etc/ben/cluster.toml: "), "{e}");
        let e =
            parse("prefix = \"a\"\n[scale]\nspines = 2\nspare = 1\nmax_spines = 4\n").unwrap_err();
        assert_eq!(
            e,
            "/etc/ben/cluster.toml: [scale] max_spines = 4: at most spines + spare = 3 (only spare ids have keys; raise spare)"
        );
        let e = parse("prefix = \"a\"\n[scale]\nproxies = 2\nmax_proxies = 1\n").unwrap_err();
        assert!(e.contains("max_proxies = 1 is below proxies = 2"), "{e}");
        let e = parse("prefix = \"a\"\n[scale]\nhigh_water = 0\n").unwrap_err();
        assert_eq!(
            e,
            "/etc/ben/cluster.toml: [scale] high_water = 0: must be positive"
        );
        let e = parse("prefix = \"a\"\n[scale]\nwindow_ms = -5\n").unwrap_err();
        assert!(e.contains("window_ms"), "{e}");
        let e = parse("prefix = \"a\"\n[validators]\naddrs = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n")
            .unwrap_err();
        assert!(e.contains("names 2 validators: 4 to 64"), "{e}");
        let e = parse("prefix = \"a\"\n[validators]\naddrs = [\"here\"]\n").unwrap_err();
        assert!(
            e.contains("[validators] addrs #1 = \"here\": not a socket address"),
            "{e}"
        );
        let e = parse(
            "prefix = \"a\"\n[validators]\naddrs = [\"127.0.0.1:1\", \"127.0.0.1:2\", \"127.0.0.1:3\", \"127.0.0.1:1\"]\n",
        )
        .unwrap_err();
        assert!(e.contains("addrs #4") && e.contains("named twice"), "{e}");
        let e = parse("prefix = \"a\"\n[enforcer]\n").unwrap_err();
        assert!(e.contains("[enforcer] needs [validators]"), "{e}");
        let v4 = "[validators]\naddrs = [\"127.0.0.1:1\", \"127.0.0.1:2\", \"127.0.0.1:3\", \"127.0.0.1:4\"]\n";
        let e = parse(&format!(
            "prefix = \"a\"\n{v4}[enforcer]\nbackend = \"pf\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("[enforcer] backend = \"pf\""), "{e}");
        let e = parse(&format!(
            "prefix = \"a\"\n{v4}[enforcer]\nallow = [\"10.0.0.0/99\"]\n"
        ))
        .unwrap_err();
        assert!(e.contains("[enforcer] allow #1"), "{e}");
        let c = parse(&format!(
            "prefix = \"a\"\n{v4}[enforcer]\nallow = [\"10.0.0.0/8\"]\n"
        ))
        .unwrap();
        assert_eq!(
            c.enforcer,
            Some(Enforcer {
                backend: "dry-run".into(),
                allow: vec!["10.0.0.0/8".into()],
                reconcile_ms: 5_000,
                labels: vec![],
            })
        );
        assert!(c.started().iter().any(|(id, _)| id == "enforcer-1"));
        assert!(!c.started().iter().any(|(id, _)| id == "mesh-1"));
        let c = parse(&format!(
            "prefix = \"a\"\n{v4}[enforcer]\nlabels = [\"role=web\", \"zone=eu-1\"]\n"
        ))
        .unwrap();
        assert_eq!(c.enforcer.unwrap().labels, ["role=web", "zone=eu-1"]);
        for bad in ["web", "role=a b"] {
            let e = parse(&format!(
                "prefix = \"a\"\n{v4}[enforcer]\nlabels = [\"{bad}\"]\n"
            ))
            .unwrap_err();
            assert!(e.contains("[enforcer] labels"), "{e}");
        }
        let e = parse("prefix = \"a\"\n[mesh]\n").unwrap_err();
        assert!(e.contains("[mesh] needs [validators]"), "{e}");
        let c = parse(&format!("prefix = \"a\"\n{v4}[mesh]\nevery_ms = 1000\n")).unwrap();
        assert_eq!(c.mesh_every, Some(Duration::from_secs(1)));
        assert_eq!(c.mesh_network_sources, 0);
        let c = parse(&format!(
            "prefix = \"a\"\n{v4}[mesh]\nnetwork_sources = 3\n"
        ))
        .unwrap();
        assert_eq!(c.mesh_network_sources, 3);
        let e = parse(&format!(
            "prefix = \"a\"\n{v4}[mesh]\nnetwork_sources = 1\n"
        ))
        .unwrap_err();
        assert!(e.contains("network_sources = 1"), "{e}");
        assert!(c.started().iter().any(|(id, _)| id == "mesh-1"));
        assert!(!c.started().iter().any(|(id, _)| id == "sensor-1"));
        let e = parse("prefix = \"a\"\n[sensor]\nfilter = \"udp\"\n").unwrap_err();
        assert!(e.contains("[sensor] needs iface"), "{e}");
        let e = parse("prefix = \"a\"\n[sensor]\niface = \"eth0\"\nmode = 1\n").unwrap_err();
        assert!(e.contains("mode"), "{e}");
        let c = parse("prefix = \"a\"\n[sensor]\niface = \"eth0\"\nnetns = \"\"\n").unwrap();
        assert_eq!(
            c.sensor,
            Some(Sensor {
                iface: "eth0".into(),
                filter: None,
                netns: None,
                idle_timeout_ms: 15_000,
                flow_timeout_ms: 10_000
            })
        );
        assert!(c.started().iter().any(|(id, _)| id == "sensor-1"));
        let e = ClusterConfig::load(Path::new("/nonexistent/c.toml")).unwrap_err();
        assert!(e.contains("/nonexistent/c.toml"), "{e}");
    }

    #[test]
    fn bus_kafka_is_checked() {
        assert_eq!(parse("prefix = \"a\"\n").unwrap().kafka, None);
        let c = parse("prefix = \"a\"\n[bus]\nkind = \"kafka\"\n").unwrap();
        assert_eq!(
            c.kafka,
            Some(Kafka {
                brokers: "127.0.0.1:9092".into(),
                topic_prefix: String::new(),
                partitions: 3,
                replication: 1,
                max_message_bytes: 1 << 20,
            })
        );
        for (text, want) in [
            (
                "kind = \"amqp\"",
                "[bus] kind = \"amqp\": \"nats\" (the default) or \"kafka\"",
            ),
            (
                "brokers = \"k:9092\"",
                "[bus] brokers is a Kafka setting, but [bus] kind is \"nats\"",
            ),
            (
                "kind = \"kafka\"\npartitions = 0",
                "[bus] partitions = 0: from 1 to 1024",
            ),
            (
                "kind = \"kafka\"\ntopic_prefix = \"a b\"",
                "[bus] topic_prefix = \"a b\": letters, digits",
            ),
            (
                "kind = \"kafka\"\nmax_message_bytes = 10",
                "[bus] max_message_bytes = 10: from 1024 to",
            ),
        ] {
            let e = parse(&format!("prefix = \"a\"\n[bus]\n{text}\n")).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
