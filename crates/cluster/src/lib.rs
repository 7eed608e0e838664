//! # Cluster mode: one OS process per component over NATS
//!
//! * [`run_component`] is `ben run <kind> --config FILE [--id ID]`: exactly
//!   one process — `control` (the ledger, its database and the HTTP API),
//!   or one component of the component table ([`ben_runtime::KINDS`], the
//!   kinds with `in_cluster`) — on a [`ben_bus_nats::NatsBus`] under the
//!   cluster's subject prefix, built by the same table entry `ben up` uses.
//! * [`cluster_up`] is `ben cluster up --config FILE`: provisions the key
//!   directory ([`keys`]) and the Blot key, then starts `ben run` children
//!   through the orchestrator's process backend
//!   ([`ben_orchestrator::process::Supervisor`]) in start order — control,
//!   then the table's kinds by their `order` — each kind only once
//!   the previous one sends heartbeats; restarts a child that exits (or
//!   stops sending heartbeats) with backoff; keeps the record books
//!   ([`tally`]); and stops everything in reverse order on request.
//!
//! Scaling ([`autoscale`], every second): the orchestrator's pure
//! [`ben_orchestrator::scale::Scaler`] judges each scalable kind from the
//! heartbeats the health core accepted; on "up" the supervisor starts the
//! lowest spare id of that kind that is neither supervised nor beating
//! (its key was provisioned with the cluster), on "down" it stops the one
//! it added last (SIGTERM, the grace period, then SIGKILL), never going
//! below the configured count. The status shows the counts and the last
//! decision with its reason.
//!
//! Processes find each other through subjects only: queue groups spread
//! records over the spines and proxies that are up, `ben.intent.active`
//! answers a starting (or restarted, or late) component with the active
//! version before it takes traffic. Every control message is signed with
//! the sender's own key and verified against the cluster's keyring.
//!
//! Observability subjects (under the prefix, like all others):
//! `ben.metrics.<id>` — each process's counters, signed (kind `metrics`),
//! every 500 ms; `ben.cluster.status` — request/reply, the supervisor's
//! JSON view (children, pids, restarts, health, the record books), also
//! written to `<data_dir>/cluster-status.json` every second.
//!
//! Artifacts live in the NATS object store bucket of the prefix (or, with
//! `[store] kind = "files"`, the files store in `store_dir`, shared by the
//! processes of one machine), and each process keeps its entry in the
//! registry KV bucket ([`registry`]). The data path is
//! NATS core (at most once: what a dying process had buffered is lost, and
//! counted); with `[jetstream]` on (the default) the control-plane subjects
//! — intent announce/activate/abort, acks, signals, the DLQ — are kept in
//! the JetStream stream `BEN_<prefix>` and each process reads them through
//! consumers named by its id, so a restarted process gets what it missed
//! (see `ben_bus_nats`).

pub mod config;
pub mod keys;
pub mod registry;
pub mod tally;

pub use config::{control_config, ClusterConfig, StoreKind};
pub use registry::registry;

use ben_bee::Beekeeper;
use ben_bus::Bus;
use ben_component::{subjects, Clock, Deps, Load, SystemClock};
use ben_runtime::Instance;
use ben_wire::{pb, Keyring, Signer};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tally::{ComponentMetrics, Tally};

/// Subject of the supervisor's status (request/reply).
pub const STATUS: &str = "ben.cluster.status";

/// Subject a process publishes its metrics on.
pub fn metrics_subject(id: &str) -> String {
    format!("ben.metrics.{id}")
}

/// A process's counters, signed like every other message between
/// components (the payload is [`ComponentMetrics`] as JSON).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metrics {
    #[prost(string, tag = "1")]
    pub json: String,
    /// The process's id: must be the signer's (invariant 8).
    #[prost(string, tag = "2")]
    pub id: String,
}

impl ben_wire::Kind for Metrics {
    const KIND: &'static str = "metrics";
    fn sender(&self) -> Option<&str> {
        Some(&self.id)
    }
}

/// Opens a signed metrics message: signed by the process it is about.
pub fn open_metrics(bytes: &[u8], keyring: &Keyring) -> Result<ComponentMetrics, String> {
    let m = ben_wire::open_bytes::<Metrics>(bytes, keyring).map_err(|e| e.to_string())?;
    let cm: ComponentMetrics =
        serde_json::from_str(&m.get().json).map_err(|e| format!("metrics: {e}"))?;
    if cm.id != m.component() {
        return Err(format!(
            "metrics about `{}` signed by `{}`",
            cm.id.chars().take(64).collect::<String>(),
            m.component()
        ));
    }
    Ok(cm)
}

/// What `ben run` runs: the control plane, or one component kind of the
/// component table.
#[derive(Clone, Copy)]
pub enum Process {
    Control,
    Component(&'static ben_runtime::Kind),
}

impl Process {
    /// The kinds `ben run` accepts, by name.
    pub fn names() -> Vec<&'static str> {
        let mut v = vec!["control"];
        v.extend(
            ben_runtime::KINDS
                .iter()
                .filter(|k| k.in_cluster)
                .map(|k| k.role),
        );
        v
    }

    pub fn name(self) -> &'static str {
        match self {
            Process::Control => "control",
            Process::Component(k) => k.role,
        }
    }

    pub fn parse(s: &str) -> Result<Process, String> {
        if s == "control" {
            return Ok(Process::Control);
        }
        ben_runtime::kind(s)
            .filter(|k| k.in_cluster)
            .map(Process::Component)
            .ok_or_else(|| {
                format!(
                    "unknown component `{s}`; one of: {}",
                    Process::names().join(", ")
                )
            })
    }

    /// The id a process of this kind has unless told otherwise.
    pub fn default_id(self) -> String {
        match self {
            Process::Control => "control".into(),
            Process::Component(k) => format!("{}-1", k.role),
        }
    }
}

/// Connects to the cluster's NATS under its prefix, as an observer: its
/// reads of durable subjects start at the newest message (ordered
/// consumers).
pub async fn connect(cfg: &ClusterConfig) -> Result<Arc<dyn Bus>, String> {
    connect_as(cfg, None).await
}

/// Connects as component `id`: with `[jetstream]` on, its reads of the
/// durable subjects go through consumers named by `id`, so a restarted
/// process gets what was published while it was down.
///
/// With `[bus] kind = "kafka"`, CyberMesh's topics go to Kafka
/// ([`ben_bus_kafka::Split`]) and the rest to NATS; `id` then also names
/// the process's Kafka consumer groups, so a restarted process resumes
/// from its committed offsets.
pub async fn connect_as(cfg: &ClusterConfig, id: Option<&str>) -> Result<Arc<dyn Bus>, String> {
    let nats = nats_bus(cfg, id).await?;
    let bus: Arc<dyn Bus> = Arc::new(ben_bus::PrefixedBus::new(nats, cfg.prefix.clone()));
    match &cfg.kafka {
        None => Ok(bus),
        Some(k) => kafka(k, id, bus).await,
    }
}

#[cfg(feature = "kafka")]
async fn kafka(
    k: &config::Kafka,
    id: Option<&str>,
    rest: Arc<dyn Bus>,
) -> Result<Arc<dyn Bus>, String> {
    let bus = ben_bus_kafka::KafkaBus::connect(ben_bus_kafka::Config {
        brokers: k.brokers.clone(),
        topic_prefix: k.topic_prefix.clone(),
        partitions: k.partitions,
        replication: k.replication,
        max_message_bytes: k.max_message_bytes,
        member: id.map(str::to_string),
        ..ben_bus_kafka::Config::default()
    })
    .await?;
    Ok(Arc::new(ben_bus_kafka::Split::new(Arc::new(bus), rest)))
}

#[cfg(not(feature = "kafka"))]
async fn kafka(
    k: &config::Kafka,
    _id: Option<&str>,
    _rest: Arc<dyn Bus>,
) -> Result<Arc<dyn Bus>, String> {
    Err(format!(
        "[bus] kind = \"kafka\" (brokers {}): this ben was built without Kafka; build it with `cargo build --release -p ben-cli --features kafka`",
        k.brokers
    ))
}

/// The cluster's NATS connection without the prefix (its subjects are
/// full subjects), e.g. to delete a throwaway cluster's stream.
pub async fn nats_bus(
    cfg: &ClusterConfig,
    id: Option<&str>,
) -> Result<ben_bus_nats::NatsBus, String> {
    ben_bus_nats::NatsBus::connect(&ben_bus_nats::Config {
        url: cfg.nats.clone(),
        durable: cfg.jetstream.map(|j| ben_bus_nats::Durable {
            max_age: j.max_age,
            max_bytes: j.max_bytes,
            ..ben_bus_nats::Durable::for_prefix(&cfg.prefix, id)
        }),
        ..ben_bus_nats::Config::default()
    })
    .await
}

/// What a process's metrics are read from.
type Probe = Box<dyn Fn(&mut ComponentMetrics) + Send + Sync>;

/// Publishes signed metrics every 500 ms until the bus closes, and once
/// more when `last` is notified (the process is ending: the books then
/// count what this incarnation did up to its end).
async fn publish_metrics(
    bus: Arc<dyn Bus>,
    signer: Arc<Signer>,
    of: Reporting,
    last: Arc<tokio::sync::Notify>,
    mine: Mine,
) {
    let Reporting {
        id,
        role,
        load,
        probe,
    } = of;
    let started_ns = ben_time::now_ns();
    let mut seq = 0;
    let subject = metrics_subject(&id);
    let mut ending = false;
    let mut failed: u64 = 0;
    // Every record's age since start: the histogram `/metrics` serves.
    let mut all_ages = ben_component::age::AgeCounts::empty();
    loop {
        seq += 1;
        let mut m = ComponentMetrics {
            id: id.clone(),
            role: role.into(),
            pid: std::process::id(),
            started_ns,
            at_ns: ben_time::now_ns(),
            seq,
            processed: load.processed.load(Ordering::Relaxed),
            queue_depth: load.queue_depth.load(Ordering::Relaxed),
            publish_errors: load.publish_errors.load(Ordering::Relaxed),
            ..ComponentMetrics::default()
        };
        let ages = load.ages.take();
        all_ages.add(&ages);
        ben_runtime::metrics::set_age_histogram(&mut m, &all_ages);
        m.age_n = ages.total();
        m.age_p50_us = ages.quantile_us(0.5);
        m.age_p99_us = ages.quantile_us(0.99);
        probe(&mut m);
        let e = bus.errors();
        (
            m.bus_not_stored,
            m.bus_commit_errors,
            m.bus_read_errors,
            m.bus_group_rejoins,
        ) = (
            e.not_stored,
            e.commit_errors,
            e.read_errors,
            e.group_rejoins,
        );
        let json = serde_json::to_string(&m).unwrap_or_default();
        if let Ok(mut own) = mine.lock() {
            *own = Some(m);
        }
        if let Err(e) = bus
            .publish(
                &subject,
                signer.seal_bytes(&Metrics {
                    json,
                    id: id.clone(),
                }),
            )
            .await
        {
            // The supervisor marks the process late without them; say why
            // (once, then every 100th), and keep trying.
            failed += 1;
            if failed == 1 || failed.is_multiple_of(100) {
                tracing::warn!(%id, error = %e, failed, "metrics not published");
            }
        }
        if ending {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = last.notified() => ending = true,
        }
    }
}

/// Whose metrics a process publishes, and where they come from.
struct Reporting {
    id: String,
    role: &'static str,
    load: Arc<Load>,
    probe: Probe,
}

/// This process's newest metrics, for its own `/metrics`.
type Mine = Arc<Mutex<Option<ComponentMetrics>>>;

/// What an API serves of processes' counters (`/metrics`, the
/// dashboard's): the metrics `now` returns.
struct Processes<F>(F);

impl<F: Fn() -> Vec<ComponentMetrics> + Send + Sync> ben_control::Telemetry for Processes<F> {
    fn prometheus(&self) -> String {
        ben_runtime::metrics::prometheus(&(self.0)(), &[])
    }

    fn components(&self) -> Vec<serde_json::Value> {
        (self.0)()
            .iter()
            .filter_map(|m| serde_json::to_value(m).ok())
            .collect()
    }
}

/// A process's own `/metrics` listener and the file that tells
/// Prometheus where it is.
struct OwnMetrics {
    server: ben_control::api::Server,
    file: PathBuf,
}

impl OwnMetrics {
    /// Binds a port of its own on `[metrics] listen` and writes
    /// `metrics_dir/<id>.json` (Prometheus' `file_sd` format, labels
    /// `ben_process`, `ben_role`, `ben_cluster`); `/metrics` needs the
    /// API token (`api.token` in the data dir), as the control process's.
    async fn start(
        cfg: &ClusterConfig,
        ip: std::net::IpAddr,
        id: &str,
        role: &str,
        mine: Mine,
    ) -> Result<OwnMetrics, String> {
        ben_control::private::dir(&cfg.data_dir)?;
        let token = ben_control::auth::token_file(&cfg.data_dir, ben_runtime::random32()?)?;
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.map_err(|e| {
            format!("{id}: binding its metrics port on {ip}: {e} ([metrics] listen)")
        })?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("{id}: its metrics port: {e}"))?;
        let source = ben_control::MetricsSource::default();
        source.set(Processes(move || {
            mine.lock()
                .ok()
                .and_then(|m| m.clone())
                .into_iter()
                .collect()
        }));
        let server = ben_control::api::Server::serve(
            listener,
            ben_control::api::metrics_router(&token, source),
        );
        let dir = cfg.metrics_dir();
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let file = dir.join(format!("{id}.json"));
        let sd = serde_json::json!([{
            "targets": [addr.to_string()],
            "labels": { "ben_process": id, "ben_role": role, "ben_cluster": cfg.prefix },
        }]);
        write_atomic(&file, &sd.to_string())?;
        Ok(OwnMetrics { server, file })
    }

    /// Stops serving and removes the file (Prometheus drops the target).
    async fn stop(self) {
        self.server.shutdown().await;
        if let Err(e) = std::fs::remove_file(&self.file) {
            tracing::warn!(file = %self.file.display(), error = %e, "metrics target file not removed");
        }
    }
}

/// A component's record ages in its last metrics interval, for the status:
/// `{"n": records, "p50_us": …, "p99_us": …}`.
fn age_json(m: &ComponentMetrics) -> serde_json::Value {
    serde_json::json!({ "n": m.age_n, "p50_us": m.age_p50_us, "p99_us": m.age_p99_us })
}

/// Writes `text` to `path` atomically.
fn write_atomic(path: &Path, text: &str) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// `ben run <kind>`: runs one process (the control plane or one
/// component) until `shutdown` resolves (then stops it cleanly and returns
/// `Ok`) or the component fails (`Err`: the supervisor restarts the
/// process).
pub async fn run_component(
    cfg: &ClusterConfig,
    process: Process,
    id: &str,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    match process {
        Process::Control if id != "control" => {
            return Err(format!("the control process's id is `control`, not `{id}`"))
        }
        Process::Component(k) if ben_runtime::kind_of_id(id).map(|x| x.role) != Some(k.role) => {
            return Err(format!(
                "a {} process's id starts with `{}-` (e.g. {}), not `{id}`",
                k.role,
                k.role,
                process.default_id()
            ))
        }
        _ => {}
    }
    let (signer, keyring) = keys::load(&cfg.key_dir, id)?;
    let signer = Arc::new(signer);
    let bus = connect_as(cfg, Some(id)).await?;
    let store = registry::open_store(cfg).await?;
    // The registry entry: kept fresh while the process runs, removed when
    // it is asked to stop (a crash or a failure lets it expire).
    let (bus, announced) =
        registry::announce(cfg, id, process.name(), bus, Arc::new(keyring.clone())).await;
    let shutdown = async move {
        shutdown.await;
        announced.stop().await;
    };
    let kind = match process {
        Process::Control => return run_control(cfg, bus, store, signer, keyring, shutdown).await,
        Process::Component(k) => k,
    };
    let env = component_env(cfg)?;
    if !cfg.validator_addrs.is_empty() {
        let set = keys::validator_set(&cfg.key_dir, &cfg.validator_addrs, id)?;
        let _ = env.shared.validators_set.set(Arc::new(set));
    }
    let deps = Deps {
        id: id.to_string(),
        bus: bus.clone(),
        store,
        clock: Arc::new(SystemClock),
        signer: signer.clone(),
        keyring: Arc::new(keyring),
        drain: Default::default(),
    };
    let drain = deps.drain.clone();
    let load = Arc::new(Load::default());
    let inst = (kind.build)(&env, deps, load.clone())
        .await
        .map_err(|e| format!("{id}: {e}"))?;
    let shared = env.shared.clone();
    let outgoing = bus.clone();
    let last = Arc::new(tokio::sync::Notify::new());
    let mine: Mine = Arc::default();
    let own = match cfg.metrics_listen {
        Some(ip) => Some(OwnMetrics::start(cfg, ip, id, kind.role, mine.clone()).await?),
        None => None,
    };
    let metrics = tokio::spawn(publish_metrics(
        bus,
        signer,
        Reporting {
            id: id.to_string(),
            role: kind.role,
            load,
            probe: Box::new(move |m| (kind.probe)(&shared, m)),
        },
        last.clone(),
        mine,
    ));
    // The supervisor kills a process that has not exited this long after
    // SIGTERM; draining gets most of it (a leaving detector serves, silent,
    // for 3.5 s of the default 5 s, then drains its queue subscriptions,
    // which can take 400 ms: see ben_bus_nats's drain), the rest is for
    // the final metrics and the flush.
    let grace = cfg.stop_grace.mul_f64(0.9);
    let r = stop_instance(&inst, shutdown, &drain, grace, id).await;
    // The final figures: what was processed since the last metrics would
    // otherwise be counted lost.
    last.notify_one();
    let _ = tokio::time::timeout(Duration::from_millis(500), metrics).await;
    if let Some(own) = own {
        own.stop().await;
    }
    // What the last batches and the final figures published may still sit
    // in the client's write buffer: exiting now would lose them.
    match tokio::time::timeout(Duration::from_secs(2), outgoing.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(%id, error = %e, "the bus did not take the last messages before exit")
        }
        Err(_) => tracing::error!(%id, "the bus did not take the last messages within 2 s of exit"),
    }
    r
}

/// The settings a component process builds its instance with.
fn component_env(cfg: &ClusterConfig) -> Result<ben_runtime::Env, String> {
    let mut env = ben_runtime::Env::new(
        cfg.data_dir.clone(),
        cfg.blot_key.clone(),
        ben_sidecar::Config {
            socket: cfg.socket.clone(),
            beekeeper: Arc::new(Mutex::new(Some(Beekeeper::new(
                ben_runtime::random32()?,
                vec![],
                cfg.bee_ttl_ns,
            )))),
            extra_selectors: cfg.selectors.clone(),
            max_record_bytes: cfg.max_record_bytes,
            state_dir: Some(cfg.data_dir.clone()),
        },
    );
    env.database_url = cfg.database_url.clone();
    env.enforce.bus_url = Some(cfg.nats.clone());
    if let Some(every) = cfg.mesh_every {
        env.mesh_every = every;
    }
    env.mesh_network_sources = cfg.mesh_network_sources;
    if let Some(x) = &cfg.sensor {
        env.sensor = ben_runtime::table::SensorEnv {
            iface: Some(x.iface.clone()),
            filter: x.filter.clone(),
            netns: x.netns.clone(),
            idle_timeout_ms: x.idle_timeout_ms,
            flow_timeout_ms: x.flow_timeout_ms,
        };
    }
    if let Some(e) = &cfg.enforcer {
        env.enforce.backend = Some(e.backend.clone());
        env.enforce.allow = e.allow.clone();
        env.enforce.reconcile_ms = e.reconcile_ms;
        env.enforce.labels = e.labels.clone();
    }
    Ok(env)
}

/// `ben run control`: the ledger service and its API until `shutdown`.
async fn run_control(
    cfg: &ClusterConfig,
    bus: Arc<dyn Bus>,
    store: Arc<dyn ben_store::Store>,
    signer: Arc<Signer>,
    keyring: Keyring,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let latest: Latest = Arc::default();
    let refusing =
        follow_metrics(bus.clone(), keyring.clone(), signer.clone(), latest.clone()).await?;
    // GET /metrics: every process's latest verified counters.
    let metrics = ben_control::MetricsSource::default();
    metrics.set(Processes(move || current(&latest)));
    // The API's token: DATA_DIR/api.token, made by the first start (benctl
    // --data-dir DATA_DIR reads it there).
    ben_control::private::dir(&cfg.data_dir)?;
    let api_token = ben_control::auth::token_file(&cfg.data_dir, ben_runtime::random32()?)?;
    let control = ben_runtime::start_control(
        ben_control::Config {
            api_token: Some(api_token),
            metrics,
            ..control_config(cfg)
        },
        ben_control::Deps {
            bus: bus.clone(),
            store,
            signer: signer.clone(),
            keyring,
            clock: Arc::new(|| SystemClock.now_ns()),
        },
    )
    .await
    .map_err(|e| format!("control: {e}"))?;
    let m = tokio::spawn(publish_metrics(
        bus,
        signer,
        Reporting {
            id: "control".into(),
            role: "control",
            load: Arc::new(Load::default()),
            probe: Box::new(|_| {}),
        },
        Arc::default(),
        Arc::default(),
    ));
    // A one-time dashboard link for `ben cluster up` to print (private,
    // as the token is; `benctl dashboard` makes more).
    let link = control.handle.login_link()?;
    ben_control::private::replace(&cfg.login_file(), link.as_bytes())
        .map_err(|e| format!("writing {}: {e}", cfg.login_file().display()))?;
    write_atomic(&cfg.api_file(), &control.handle.api_addr().to_string())?;
    shutdown.await;
    m.abort();
    refusing.abort();
    control.shutdown().await;
    Ok(())
}

/// Each process's newest verified metrics, by id.
type Latest = Arc<Mutex<BTreeMap<String, ComponentMetrics>>>;

/// The processes reporting now (within [`METRICS_KEPT_NS`]): what the
/// control process's API serves (`/metrics`, the dashboard).
fn current(latest: &Latest) -> Vec<ComponentMetrics> {
    let now = ben_time::now_ns();
    latest
        .lock()
        .map(|l| {
            l.values()
                .filter(|m| now - m.at_ns < METRICS_KEPT_NS)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// How long a process that stopped reporting stays in `/metrics`.
const METRICS_KEPT_NS: i64 = 30_000_000_000;

/// The control process keeps each process's newest verified metrics (for
/// `GET /metrics`) and refuses metrics that do not verify, or are not
/// about the process that signed them, as the ledger refuses every other
/// message: a dead letter with the reason, signed as the ledger
/// (invariant 8). The supervisor's books never count them (see
/// [`observe`]).
async fn follow_metrics(
    bus: Arc<dyn Bus>,
    keyring: Keyring,
    signer: Arc<Signer>,
    latest: Latest,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let mut sub = bus
        .subscribe("ben.metrics.*", None)
        .await
        .map_err(|e| e.to_string())?;
    Ok(tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let reason = match open_metrics(&m.payload, &keyring) {
                Ok(cm) => {
                    if let Ok(mut l) = latest.lock() {
                        l.insert(cm.id.clone(), cm);
                    }
                    continue;
                }
                Err(reason) => reason,
            };
            let key_id = <pb::SignedEnvelope as prost::Message>::decode(m.payload.as_slice())
                .map(|e| e.key_id.chars().take(64).collect())
                .unwrap_or_default();
            let dl = pb::DeadLetter {
                subject: m.subject.clone(),
                reason,
                at_ns: ben_time::now_ns(),
                sender: ben_wire::LEDGER_ID.into(),
                size: m.payload.len() as u64,
                key_id,
            };
            tracing::warn!(subject = %dl.subject, reason = %dl.reason, "refused metrics");
            if let Err(e) = bus.publish(subjects::DLQ, signer.seal_bytes(&dl)).await {
                tracing::error!(subject = %dl.subject, error = %e, "dead letter not published");
            }
        }
    }))
}

/// Runs `inst` until `shutdown`, then stops it: a draining instance
/// finishes what it holds and settles (see [`drained`]), any other stops
/// at once; what it leaves behind (a socket) is removed.
async fn stop_instance(
    inst: &Instance,
    shutdown: impl Future<Output = ()>,
    drain: &ben_component::Drain,
    grace: Duration,
    id: &str,
) -> Result<(), String> {
    let run = (inst.start)();
    let r = if inst.drains {
        let r = drained(run, shutdown, drain, grace, id).await;
        // Let what was taken in reach its store before exiting.
        for _ in 0..100 {
            if (inst.settled)() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        r
    } else {
        tokio::select! {
            r = run => ended_by_itself(r, id),
            _ = shutdown => Ok(()),
        }
    };
    for f in &inst.leaves {
        let _ = std::fs::remove_file(f);
    }
    r
}

/// Runs a data-path component until `shutdown`, then drains it: its
/// [`ben_component::consume`] loops leave their queue groups and finish
/// the batches already delivered to them, for at most `grace`. The
/// component ending by itself first (its bus closed) is an error.
async fn drained(
    run: impl std::future::Future<Output = Result<(), String>>,
    shutdown: impl std::future::Future<Output = ()>,
    drain: &ben_component::Drain,
    grace: Duration,
    id: &str,
) -> Result<(), String> {
    tokio::pin!(run);
    tokio::select! {
        r = &mut run => return ended_by_itself(r, id),
        _ = shutdown => {}
    }
    drain.start();
    match tokio::time::timeout(grace, &mut run).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("{id}: while draining: {e}")),
        Err(_) => Err(format!(
            "{id}: still draining after {grace:?}; what it held is counted lost"
        )),
    }
}

/// A component whose run ended before it was asked to stop: its error,
/// or that its bus closed. Either way an `Err` (the supervisor restarts it).
fn ended_by_itself(r: Result<(), String>, id: &str) -> Result<(), String> {
    r.map_err(|e| format!("{id}: {e}"))?;
    Err(format!("{id}: stopped (the bus closed)"))
}

/// What the supervisor observes on the bus.
#[derive(Default)]
struct Observed {
    health: ben_orchestrator::Health,
    /// Arrival time (supervisor clock) of each id's newest verified
    /// heartbeat and its intent version.
    last_beat: BTreeMap<String, (i64, String)>,
    tally: Tally,
    /// Dead letters that did not verify (see [`observe`]).
    unverified_dead_letters: u64,
    /// Metrics that did not verify, or were not about their signer.
    refused_metrics: u64,
}

/// `ben cluster up`: runs the cluster until `shutdown` resolves. `exe` is
/// the `ben` binary the children run; `say` gets progress lines.
pub async fn cluster_up(
    cfg: &ClusterConfig,
    exe: PathBuf,
    shutdown: impl Future<Output = ()>,
    say: Arc<dyn Fn(String) + Send + Sync>,
) -> Result<(), String> {
    // Private: 0700, its databases, keys and the API token 0600.
    ben_control::private::dir(&cfg.data_dir)?;
    ben_control::private::dir(&cfg.key_dir)?;
    let ids = cfg.identities();
    keys::provision(&cfg.key_dir, ids.iter().map(|(i, _)| i.as_str()))?;
    // One Blot key for every spine and Lucius: made here, before any of
    // them starts, when the environment does not set one.
    ben_intent::keys::load_blot_key(&cfg.blot_key, None, &cfg.data_dir)?;
    if cfg.store == StoreKind::Files {
        ben_control::private::dir(&cfg.store_dir)?;
    }
    let keyring = Arc::new(keys::keyring(&cfg.key_dir)?);
    // The supervisor's own connection: its state says whether silence
    // from the children means anything (see `kill_hung`).
    let nats = nats_bus(cfg, None).await?;
    let bus: Arc<dyn Bus> = Arc::new(ben_bus::PrefixedBus::new(nats.clone(), cfg.prefix.clone()));
    // CyberMesh's dead letters are on Kafka when its topics are.
    let bus = match &cfg.kafka {
        None => bus,
        Some(k) => kafka(k, Some("supervisor"), bus).await?,
    };

    let observed = Arc::new(Mutex::new(Observed {
        health: ben_orchestrator::Health::new(ben_orchestrator::HealthLimits::default()),
        ..Observed::default()
    }));
    let tasks = observe(&bus, &keyring, &observed).await?;

    let restarts = Arc::new(ben_orchestrator::Restarts::default());
    let mut sup = ben_orchestrator::process::Supervisor::new(
        cfg.backoff,
        cfg.stop_grace,
        restarts.clone(),
        say.clone(),
    );
    let config_path = std::path::absolute(&cfg.path).unwrap_or_else(|_| cfg.path.clone());
    let spec = |id: &str, kind: &str| ben_orchestrator::process::ProcSpec {
        name: id.to_string(),
        kind: kind.to_string(),
        // The control plane first, then the table's order.
        order: ben_runtime::kind(kind).map_or(0, |k| k.order),
        program: exe.clone(),
        args: vec![
            "run".into(),
            kind.into(),
            "--config".into(),
            config_path.display().to_string(),
            "--id".into(),
            id.into(),
        ],
        env: vec![],
    };
    let started = cfg.started();
    let auto = Arc::new(Mutex::new(Autoscale::new(cfg)));
    if let Err(e) = start_in_order(cfg, &mut sup, &spec, &started, &observed, &say).await {
        sup.stop().await;
        for t in tasks {
            t.abort();
        }
        return Err(e);
    }
    let api = std::fs::read_to_string(cfg.api_file()).unwrap_or_default();
    // The control process's one-time dashboard link, used up here.
    let login = match std::fs::read_to_string(cfg.login_file()) {
        Ok(l) => l,
        // Not written yet (the control process is late): `benctl
        // dashboard` makes one.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            tracing::warn!(file = %cfg.login_file().display(), error = %e, "the dashboard login link was not read");
            String::new()
        }
    };
    if !login.is_empty() {
        if let Err(e) = std::fs::remove_file(cfg.login_file()) {
            tracing::warn!(error = %e, "the dashboard login link file stays");
        }
    }
    say(format!(
        "ben cluster up: {} processes on NATS {} (prefix {}); API http://{}  sidecar {}  data {}",
        started.len(),
        cfg.nats,
        cfg.prefix,
        api.trim(),
        cfg.socket.display(),
        cfg.data_dir.display()
    ));
    if !login.trim().is_empty() {
        say(format!(
            "ben cluster up: dashboard {} (this link logs one browser in, once, within 15 minutes; `benctl dashboard --data-dir {}` prints another)",
            login.trim(),
            cfg.data_dir.display()
        ));
    }

    let sup = Arc::new(Mutex::new(Some(sup)));
    let running = Running {
        cfg,
        nats,
        bus,
        observed,
        sup,
        auto,
        restarts,
        say,
    };
    running.serve(&spec, shutdown, tasks).await
}

/// The cluster once started: what the supervision loop works with.
struct Running<'a> {
    cfg: &'a ClusterConfig,
    nats: ben_bus_nats::NatsBus,
    bus: Arc<dyn Bus>,
    observed: Arc<Mutex<Observed>>,
    sup: Arc<Mutex<Option<ben_orchestrator::process::Supervisor>>>,
    auto: Arc<Mutex<Autoscale>>,
    restarts: Arc<ben_orchestrator::Restarts>,
    say: Arc<dyn Fn(String) + Send + Sync>,
}

impl Running<'_> {
    /// Status (answered on the bus, written to a file, summarised in a
    /// line), hung children, scaling, every second until `shutdown`; then
    /// stops every child in reverse start order.
    async fn serve(
        self,
        spec: &(dyn Fn(&str, &str) -> ben_orchestrator::process::ProcSpec + Sync),
        shutdown: impl Future<Output = ()>,
        mut tasks: Vec<tokio::task::JoinHandle<()>>,
    ) -> Result<(), String> {
        let Running {
            cfg,
            nats,
            bus,
            observed,
            sup,
            auto,
            restarts,
            say,
        } = self;
        let status = {
            let (observed, sup, auto) = (observed.clone(), sup.clone(), auto.clone());
            move || -> serde_json::Value {
                let states = sup
                    .lock()
                    .ok()
                    .and_then(|g| g.as_ref().map(|s| s.states()))
                    .unwrap_or_default();
                let mut s = status_json(&observed, &states, &restarts);
                if let (Some(obj), Ok(a)) = (s.as_object_mut(), auto.lock()) {
                    obj.insert("scale".into(), a.status(&states));
                }
                s
            }
        };
        {
            let mut reqs = bus
                .subscribe(STATUS, None)
                .await
                .map_err(|e| e.to_string())?;
            let (bus, status) = (bus.clone(), status.clone());
            tasks.push(tokio::spawn(async move {
                while let Some(m) = reqs.next().await {
                    let body = serde_json::to_vec(&status()).unwrap_or_default();
                    if let Err(e) = bus.reply(&m, body).await {
                        tracing::warn!(error = %e, "a status request was not answered");
                    }
                }
            }));
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut n = 0u64;
        // Since when the supervisor has been connected to NATS without a
        // break (a changed connection count is a break, however short).
        let mut nats_up_since = Some(tokio::time::Instant::now());
        let mut connections = nats.connections();
        // Whether the last write of the status file failed (said once per
        // change, not every second).
        let mut status_file_failing = false;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {
                    n += 1;
                    let s = status();
                    match write_atomic(&cfg.status_file(), &serde_json::to_string_pretty(&s).unwrap_or_default()) {
                        Err(e) if !status_file_failing => {
                            status_file_failing = true;
                            say(format!("warning: the status file is not being written: {e}"));
                        }
                        Ok(()) if status_file_failing => {
                            status_file_failing = false;
                            say(format!("the status file {} is written again", cfg.status_file().display()));
                        }
                        _ => {}
                    }
                    if n.is_multiple_of(5) {
                        say(status_line(&s));
                    }
                    let now_connections = nats.connections();
                    if !nats.is_connected() {
                        if nats_up_since.take().is_some() {
                            say(format!("NATS {} unreachable: not judging heartbeats until it is back", cfg.nats));
                        }
                    } else if now_connections != connections || nats_up_since.is_none() {
                        nats_up_since = Some(tokio::time::Instant::now());
                    }
                    connections = now_connections;
                    // Silence only counts once NATS has been up for
                    // `hung_after`: while it is down nobody's heartbeats
                    // arrive, and killing the children then would only throw
                    // away what they hold (their counters among it).
                    if nats_up_since.is_some_and(|t| t.elapsed() >= cfg.hung_after) {
                        kill_hung(cfg, &observed, &sup, &say);
                    }
                    // Without fresh heartbeats (NATS down) the scaler decides
                    // nothing: missing data is never read as an empty queue.
                    autoscale(cfg, &observed, &sup, &auto, spec, &say);
                }
            }
        }
        say("ben cluster up: stopping (sidecar first, control last)".into());
        let final_status = status();
        let taken = sup.lock().ok().and_then(|mut g| g.take());
        if let Some(s) = taken {
            s.stop().await;
        }
        for t in tasks {
            t.abort();
        }
        say(format!(
            "ben cluster up: final: {}",
            status_line(&final_status)
        ));
        Ok(())
    }
}

/// Follows heartbeats (health), metrics (the books) and the DLQ.
async fn observe(
    bus: &Arc<dyn Bus>,
    keyring: &Arc<Keyring>,
    observed: &Arc<Mutex<Observed>>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let sub = |s: &'static str| {
        let bus = bus.clone();
        async move { bus.subscribe(s, None).await.map_err(|e| e.to_string()) }
    };
    let mut tasks = Vec::new();
    let mut beats = sub(subjects::HEARTBEAT).await?;
    let (o, k) = (observed.clone(), keyring.clone());
    tasks.push(tokio::spawn(async move {
        while let Some(m) = beats.next().await {
            let Ok(v) = ben_wire::open_bytes::<pb::Heartbeat>(&m.payload, &k) else {
                continue;
            };
            let hb = v.into_inner();
            let (id, version) = (hb.component.clone(), hb.intent_version.clone());
            if let Ok(mut o) = o.lock() {
                let now = ben_time::now_ns();
                let _ = o.health.observe(ben_runtime::beat_of(hb), now);
                o.last_beat.insert(id, (now, version));
            }
        }
    }));
    let mut metrics = sub("ben.metrics.*").await?;
    let (o, k) = (observed.clone(), keyring.clone());
    tasks.push(tokio::spawn(async move {
        while let Some(m) = metrics.next().await {
            let cm = open_metrics(&m.payload, &k);
            if let Ok(mut o) = o.lock() {
                match cm {
                    Ok(cm) => o.tally.observe(cm),
                    // Never in the books (invariant 8).
                    Err(_) => o.refused_metrics += 1,
                }
            }
        }
    }));
    // Ben's dead letters and CyberMesh's (`ai.dlq.v1`, on Kafka when the
    // cluster's CyberMesh topics are).
    let mut dlq = sub(subjects::DLQ).await?;
    let mut ai_dlq = sub(ben_mesh_wire::DLQ_SUBJECT).await?;
    let (o, k) = (observed.clone(), keyring.clone());
    tasks.push(tokio::spawn(async move {
        loop {
            let m = tokio::select! {
                m = dlq.next() => m,
                m = ai_dlq.next() => m,
            };
            let Some(m) = m else { break };
            // Only a dead letter signed by the component it names counts
            // in the books; others are counted apart, never trusted (the
            // ledger dead-letters them with the reason).
            let dl = ben_wire::open_bytes::<pb::DeadLetter>(&m.payload, &k);
            if let Ok(mut o) = o.lock() {
                match dl {
                    Ok(dl) => o.tally.dead_letter(&dl.get().subject, &dl.get().sender),
                    Err(_) => o.unverified_dead_letters += 1,
                }
            }
        }
    }));
    Ok(tasks)
}

/// Starts the control process (up once it wrote its API address), then
/// each kind of the component table in its order, each once the previous
/// one sends heartbeats (or `ready_timeout` passed, with a warning).
async fn start_in_order(
    cfg: &ClusterConfig,
    sup: &mut ben_orchestrator::process::Supervisor,
    spec: &(dyn Fn(&str, &str) -> ben_orchestrator::process::ProcSpec + Sync),
    started: &[(String, &'static str)],
    observed: &Mutex<Observed>,
    say: &Arc<dyn Fn(String) + Send + Sync>,
) -> Result<(), String> {
    let _ = std::fs::remove_file(cfg.api_file());
    sup.start(spec("control", "control")).await?;
    let until = tokio::time::Instant::now() + cfg.ready_timeout;
    while !cfg.api_file().exists() {
        if tokio::time::Instant::now() > until {
            return Err(format!(
                "the control process did not come up within {:?}",
                cfg.ready_timeout
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for kind in ben_runtime::KINDS.iter().filter(|k| k.in_cluster) {
        let of_kind: Vec<&String> = started
            .iter()
            .filter(|(_, k)| *k == kind.role)
            .map(|(i, _)| i)
            .collect();
        for id in &of_kind {
            sup.start(spec(id, kind.role)).await?;
        }
        if !kind.intent {
            continue; // sends no heartbeats to wait for
        }
        let until = tokio::time::Instant::now() + cfg.ready_timeout;
        loop {
            let waiting: Vec<&str> = {
                let o = observed.lock().map_err(|_| "poisoned".to_string())?;
                of_kind
                    .iter()
                    .filter(|i| !o.last_beat.contains_key(i.as_str()))
                    .map(|i| i.as_str())
                    .collect()
            };
            if waiting.is_empty() {
                break;
            }
            if tokio::time::Instant::now() > until {
                say(format!(
                    "warning: no heartbeat from {} within {:?}; starting the next kind anyway",
                    waiting.join(", "),
                    cfg.ready_timeout
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// The shell around the scaling core: what it added, what is stopping,
/// the last decision.
struct Autoscale {
    scaler: ben_orchestrator::scale::Scaler,
    /// Per kind, the ids the scaler started, oldest first.
    added: BTreeMap<&'static str, Vec<String>>,
    /// Ids told to stop whose process has not exited yet.
    stopping: Arc<Mutex<BTreeSet<String>>>,
    last: Option<serde_json::Value>,
    decisions: u64,
}

impl Autoscale {
    fn new(cfg: &ClusterConfig) -> Autoscale {
        let mut scaler = ben_orchestrator::scale::Scaler::new(cfg.scaling.policy);
        for (kind, min, max) in cfg.scale_bounds() {
            let style = match ben_runtime::kind(kind).map(|k| k.scale) {
                Some(ben_runtime::Scale::Auto(style)) => style,
                _ => continue,
            };
            if max > min {
                scaler.set_limits(kind, style, min, max);
            }
        }
        Autoscale {
            scaler,
            added: BTreeMap::new(),
            stopping: Arc::default(),
            last: None,
            decisions: 0,
        }
    }

    /// The supervised ids of `kind` that are not stopping.
    fn running(
        &self,
        kind: &str,
        states: &BTreeMap<String, ben_orchestrator::process::ChildState>,
    ) -> Vec<String> {
        let stopping = self.stopping.lock().map(|s| s.clone()).unwrap_or_default();
        states
            .iter()
            .filter(|(id, st)| st.kind == kind && !stopping.contains(*id))
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn status(
        &self,
        states: &BTreeMap<String, ben_orchestrator::process::ChildState>,
    ) -> serde_json::Value {
        let mut kinds = serde_json::Map::new();
        let scalable = ben_runtime::KINDS
            .iter()
            .filter(|k| k.in_cluster && matches!(k.scale, ben_runtime::Scale::Auto(_)));
        for kind in scalable.map(|k| k.role) {
            let running = self.running(kind, states);
            let (min, max) = self
                .scaler
                .limits(kind)
                .unwrap_or((running.len(), running.len()));
            kinds.insert(
                kind.into(),
                serde_json::json!({
                    "running": running.len(),
                    "min": min,
                    "max": max,
                    "scaled": self.scaler.limits(kind).is_some(),
                    "added": self.added.get(kind).cloned().unwrap_or_default(),
                }),
            );
        }
        let p = self.scaler.policy();
        serde_json::json!({
            "kinds": kinds,
            "stopping": self.stopping.lock().map(|s| s.iter().cloned().collect::<Vec<_>>()).unwrap_or_default(),
            "decisions": self.decisions,
            "last_decision": self.last,
            "high_water": p.high_water,
            "window_ms": p.window_ns / 1_000_000,
            "cooldown_ms": p.cooldown_ns / 1_000_000,
        })
    }
}

/// One scaling round: asks the core about each scaled kind and acts on
/// its decision (start a spare id, or stop the one added last).
fn autoscale(
    cfg: &ClusterConfig,
    observed: &Mutex<Observed>,
    sup: &Mutex<Option<ben_orchestrator::process::Supervisor>>,
    auto: &Mutex<Autoscale>,
    spec: &(dyn Fn(&str, &str) -> ben_orchestrator::process::ProcSpec + Sync),
    say: &Arc<dyn Fn(String) + Send + Sync>,
) {
    let Ok(mut sup_guard) = sup.lock() else {
        return;
    };
    let Some(s) = sup_guard.as_mut() else { return };
    let Ok(mut a) = auto.lock() else { return };
    let states = s.states();
    let now = ben_time::now_ns();
    for (kind, _, _) in cfg.scale_bounds() {
        if a.scaler.limits(kind).is_none() {
            continue;
        }
        let running = a.running(kind, &states);
        let (obs, beating) = {
            let Ok(o) = observed.lock() else { return };
            let obs =
                ben_orchestrator::scale::Observation::from_health(&o.health, kind, &running, now);
            let beating: BTreeSet<String> = o
                .health
                .alive(now)
                .into_iter()
                .map(|b| b.component.clone())
                .collect();
            (obs, beating)
        };
        let Some(d) = a.scaler.decide(kind, &obs, now) else {
            continue;
        };
        a.decisions += 1;
        let acted: Result<String, String> = match d.direction {
            ben_orchestrator::scale::Direction::Up => {
                // The lowest spare id nobody runs (a late joiner started by
                // hand beats under its id).
                let free = cfg.identities().into_iter().find(|(id, k)| {
                    *k == kind && !states.contains_key(id) && !beating.contains(id)
                });
                match free {
                    None => Err(format!("no free {kind} id (raise [scale] spare)")),
                    Some((id, _)) => match s.launch(spec(&id, kind)) {
                        Err(e) => Err(e),
                        Ok(first) => {
                            a.added.entry(kind).or_default().push(id.clone());
                            let (say, id2) = (say.clone(), id.clone());
                            tokio::spawn(async move {
                                match first.await {
                                    Ok(pid) => say(format!("scaled up: {id2} started (pid {pid})")),
                                    Err(e) => say(format!("scaled up: {id2}: {e}")),
                                }
                            });
                            Ok(id)
                        }
                    },
                }
            }
            ben_orchestrator::scale::Direction::Down => {
                let stack = a.added.entry(kind).or_default();
                let victim = stack.iter().rposition(|id| running.contains(id));
                match victim.map(|i| stack.remove(i)) {
                    None => Err(format!("no {kind} added by scaling is running")),
                    Some(id) => match s.begin_stop(&id) {
                        None => Err(format!("{id} is not supervised")),
                        Some(done) => {
                            if let Ok(mut st) = a.stopping.lock() {
                                st.insert(id.clone());
                            }
                            let (say, stopping, id2) =
                                (say.clone(), a.stopping.clone(), id.clone());
                            tokio::spawn(async move {
                                let how = done.await;
                                if let Ok(mut st) = stopping.lock() {
                                    st.remove(&id2);
                                }
                                say(format!("scaled down: {id2} stopped: {how}"));
                            });
                            Ok(id)
                        }
                    },
                }
            }
        };
        let (id, error) = match &acted {
            Ok(id) => (Some(id.clone()), None),
            Err(e) => (None, Some(e.clone())),
        };
        say(format!(
            "scale {} {kind}: {} -> {} ({}){}",
            d.direction.name(),
            d.from,
            d.to,
            d.reason,
            match &acted {
                Ok(id) => format!("; {id}"),
                Err(e) => format!("; not done: {e}"),
            }
        ));
        a.last = Some(serde_json::json!({
            "at_ns": d.at_ns,
            "kind": kind,
            "direction": d.direction.name(),
            "from": d.from,
            "to": d.to,
            "id": id,
            "reason": d.reason,
            "error": error,
        }));
    }
}

/// Kills a running child whose heartbeats (metrics, for kinds without an
/// intent agent) stopped for `hung_after` (it is
/// alive but not working); the supervisor then restarts it. Called only
/// while the supervisor itself has been connected to NATS for `hung_after`
/// (a NATS outage silences every child; that is not theirs to pay for).
fn kill_hung(
    cfg: &ClusterConfig,
    observed: &Mutex<Observed>,
    sup: &Mutex<Option<ben_orchestrator::process::Supervisor>>,
    say: &Arc<dyn Fn(String) + Send + Sync>,
) {
    let Ok(guard) = sup.lock() else { return };
    let Some(s) = guard.as_ref() else { return };
    let now = ben_time::now_ns();
    let hung = cfg.hung_after.as_nanos() as i64;
    let Ok(o) = observed.lock() else { return };
    let metrics = o.tally.current();
    for (id, st) in s.states() {
        if st.kind == "control" {
            continue; // the control process sends no heartbeats
        }
        let (Some(pid), Some(since)) = (st.pid, st.running_since) else {
            continue;
        };
        // Kinds without an intent agent send no heartbeats: their signed
        // metrics (every second) are their sign of life.
        let beats = ben_runtime::kind(&st.kind).is_some_and(|k| k.intent);
        let last = if beats {
            o.last_beat.get(&id).map(|(t, _)| *t).unwrap_or(0)
        } else {
            metrics
                .get(&id)
                .filter(|m| m.pid == pid)
                .map(|m| m.at_ns)
                .unwrap_or(0)
        };
        let running_for = since.elapsed().as_nanos() as i64;
        if running_for > hung && now - last > hung {
            say(format!(
                "{id} (pid {pid}) sent no heartbeat for {:?}; killing it to restart it",
                cfg.hung_after
            ));
            s.kill(&id);
        }
    }
}

fn status_json(
    observed: &Mutex<Observed>,
    states: &BTreeMap<String, ben_orchestrator::process::ChildState>,
    restarts: &ben_orchestrator::Restarts,
) -> serde_json::Value {
    let Ok(mut o) = observed.lock() else {
        return serde_json::Value::Null;
    };
    let now = ben_time::now_ns();
    let records = o.tally.records(now, 2_000_000_000);
    let current = o.tally.current();
    let alive: std::collections::BTreeSet<String> = o
        .health
        .alive(now)
        .into_iter()
        .map(|b| b.component.clone())
        .collect();
    let mut components = serde_json::Map::new();
    for (id, st) in states {
        let m = current.get(id);
        // Kinds without an intent agent send no heartbeats: alive while
        // their process runs and its metrics (every second) are fresh.
        let beats = ben_runtime::kind(&st.kind).is_some_and(|k| k.intent);
        let healthy = alive.contains(id)
            || (st.kind == "control" && st.pid.is_some())
            || (!beats
                && st.pid.is_some()
                && m.is_some_and(|m| Some(m.pid) == st.pid && now - m.at_ns < 3_000_000_000));
        components.insert(
            id.clone(),
            serde_json::json!({
                "kind": st.kind,
                "pid": st.pid,
                "incarnation": st.incarnation,
                "restarts": restarts.of(id),
                "last_exit": st.last_exit,
                "healthy": healthy,
                "intent": o.last_beat.get(id).map(|(_, v)| v.clone()).filter(|v| !v.is_empty()),
                "processed": m.map(|m| m.processed),
                "queue_depth": m.map(|m| m.queue_depth),
                "written": m.map(|m| m.written),
                "dropped": m.map(|m| m.dropped),
                "publish_errors": m.map(|m| m.publish_errors),
                "age": m.map(age_json),
                "chain_height": m.map(|m| m.chain_height),
                "halted": m.map(|m| !m.halted.is_empty()),
            }),
        );
    }
    // Processes not started by this supervisor (e.g. a late joiner run by
    // hand) are listed from their metrics.
    for (id, m) in &current {
        if !components.contains_key(id) && now - m.at_ns < 3_000_000_000 {
            components.insert(
                id.clone(),
                serde_json::json!({
                    "kind": m.role, "pid": m.pid, "supervised": false,
                    "healthy": alive.contains(id),
                    "intent": o.last_beat.get(id).map(|(_, v)| v.clone()).filter(|v| !v.is_empty()),
                    "processed": m.processed, "queue_depth": m.queue_depth,
                    "written": m.written, "dropped": m.dropped,
                    "publish_errors": m.publish_errors,
                    "age": age_json(m),
                }),
            );
        }
    }
    serde_json::json!({
        "at_ns": now,
        "components": components,
        "restarts": restarts.total.load(Ordering::Relaxed),
        "records": records,
        "other_dead_letters": o.tally.other_dead_letters(),
        "unverified_dead_letters": o.unverified_dead_letters,
        "refused_metrics": o.refused_metrics,
        "publish_errors": current.values().map(|m| m.publish_errors).sum::<u64>(),
        "chain_height": current.values().map(|m| m.chain_height).max().unwrap_or(0),
        "blocked": current.values().map(|m| m.blocked).sum::<u64>(),
        "breaker_open": current.values().any(|m| m.breaker_open),
        "captured": current.values().map(|m| m.captured).sum::<u64>(),
        "capture_drops": current.values().map(|m| m.capture_drops).sum::<u64>(),
        "capture_undecodable": current.values().map(|m| m.capture_undecodable).sum::<u64>(),
        "flows_dropped": current.values().map(|m| m.flows_dropped).sum::<u64>(),
        "flows_late": current.values().map(|m| m.flows_late).sum::<u64>(),
        "flow_batches_missing": current.values().map(|m| m.flow_batches_missing).sum::<u64>(),
        "bus_not_stored": current.values().map(|m| m.bus_not_stored).sum::<u64>(),
        "bus_commit_errors": current.values().map(|m| m.bus_commit_errors).sum::<u64>(),
        "bus_read_errors": current.values().map(|m| m.bus_read_errors).sum::<u64>(),
        "bus_group_rejoins": current.values().map(|m| m.bus_group_rejoins).sum::<u64>(),
        "halted": current.values().flat_map(|m| m.halted.iter().cloned()).collect::<Vec<_>>(),
        "rejected_heartbeats": o.health.rejected.values().sum::<u64>(),
    })
}

/// One line of the status.
pub fn status_line(s: &serde_json::Value) -> String {
    let r = &s["records"];
    let comps = s["components"].as_object();
    let healthy = comps
        .map(|c| c.values().filter(|v| v["healthy"] == true).count())
        .unwrap_or(0);
    // What reached each last hop of the component table, by its plural.
    let delivered: String = ben_runtime::KINDS
        .iter()
        .filter(|k| k.hop == ben_runtime::Hop::Last)
        .map(|k| format!(" | {} {}", k.plural, r[format!("to_{}", k.plural)]))
        .collect();
    // CyberMesh's validators, when the cluster runs them.
    let validators = comps.is_some_and(|c| c.values().any(|v| v["kind"] == "validator"));
    let chain = if validators {
        let halted = s["halted"].as_array().map(Vec::len).unwrap_or(0);
        let halted = match halted {
            0 => String::new(),
            _ => format!(
                " (HALTED: {}; their database does not take blocks)",
                s["halted"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        format!(" | chain height {}{halted}", s["chain_height"])
    } else {
        String::new()
    };
    // The enforcement agents, when the cluster runs them.
    let enforcers = comps.is_some_and(|c| c.values().any(|v| v["kind"] == "enforcer"));
    let chain = if enforcers {
        let breaker = if s["breaker_open"] == true {
            " (circuit breaker OPEN: new policies held)"
        } else {
            ""
        };
        format!("{chain} | blocked {}{breaker}", s["blocked"])
    } else {
        chain
    };
    // The live sensors, when the cluster runs them.
    let chain = if comps.is_some_and(|c| c.values().any(|v| v["kind"] == "sensor")) {
        format!(
            "{chain} | captured {} (kernel drops {}, undecodable {})",
            s["captured"], s["capture_drops"], s["capture_undecodable"]
        )
    } else {
        chain
    };
    // The AI service's flows it could not take or judged late, when any.
    let count = |k: &str| s[k].as_u64().unwrap_or(0);
    let chain = chain
        + &ben_runtime::metrics::ai_flows_status(
            count("flows_dropped"),
            count("flows_late"),
            count("flow_batches_missing"),
        )
        + &ben_runtime::metrics::bus_status(
            count("bus_not_stored"),
            count("bus_commit_errors"),
            count("bus_read_errors"),
            count("bus_group_rejoins"),
        );
    // Dead letters off the data path (control plane, CyberMesh's ai.dlq.v1).
    let chain = match count("other_dead_letters") {
        0 => chain,
        n => format!("{chain} | other dead letters {n}"),
    };
    format!(
        "processes {}/{} healthy | restarts {} | accepted {}{delivered} | dead letters {} | in flight {} | lost {} | signals {} | publish errors {}{chain}",
        healthy,
        comps.map(|c| c.len()).unwrap_or(0),
        s["restarts"],
        r["accepted"],
        r["dead_letters"],
        r["in_flight"],
        r["lost"],
        r["signals"],
        s["publish_errors"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ben_wire::Role;

    /// Metrics open only when signed by the process they are about, with a
    /// key whose role may sign them (invariant 8).
    #[test]
    fn metrics_are_signed_by_the_process_they_describe() {
        let spine = Signer::from_secret([1; 32]);
        let mut ring = Keyring::new();
        ring.trust("spine-1", Role::Spine, spine.public());
        let about = |id: &str| {
            let json = serde_json::to_string(&ComponentMetrics {
                id: id.into(),
                processed: 7,
                ..ComponentMetrics::default()
            })
            .unwrap_or_default();
            Metrics {
                json,
                id: id.into(),
            }
        };
        let ok = open_metrics(&spine.seal_bytes(&about("spine-1")), &ring).unwrap();
        assert_eq!((ok.id.as_str(), ok.processed), ("spine-1", 7));
        let e = open_metrics(&spine.seal_bytes(&about("spine-2")), &ring).unwrap_err();
        assert!(e.contains("names `spine-2` as its sender"), "{e}");
        // The envelope's id and the counters' id must agree too.
        let mut mixed = about("spine-1");
        mixed.json = about("spine-2").json;
        let e = open_metrics(&spine.seal_bytes(&mixed), &ring).unwrap_err();
        assert_eq!(e, "metrics about `spine-2` signed by `spine-1`");
    }

    /// The control process dead-letters refused metrics with the reason,
    /// signed as the ledger, and keeps good ones (for `/metrics`).
    #[tokio::test]
    async fn refused_metrics_are_dead_lettered() {
        let bus: Arc<dyn Bus> = Arc::new(ben_bus::InProcessBus::default());
        let spine = Signer::from_secret([1; 32]);
        let control = Arc::new(Signer::from_secret([2; 32]));
        let stranger = Signer::from_secret([3; 32]);
        let mut ring = Keyring::new();
        ring.trust("spine-1", Role::Spine, spine.public());
        ring.trust(ben_wire::LEDGER_ID, Role::Ledger, control.public());
        let latest: Latest = Arc::default();
        let task = follow_metrics(bus.clone(), ring.clone(), control.clone(), latest.clone())
            .await
            .unwrap();
        let mut dlq = bus.subscribe(subjects::DLQ, None).await.unwrap();
        let about = |id: &str| Metrics {
            json: serde_json::to_string(&ComponentMetrics {
                id: id.into(),
                ..ComponentMetrics::default()
            })
            .unwrap_or_default(),
            id: id.into(),
        };
        for (signer, body) in [
            (&spine, about("spine-1")),
            (&spine, about("spine-2")),
            (&stranger, about("spine-1")),
        ] {
            bus.publish(&metrics_subject(&body.id), signer.seal_bytes(&body))
                .await
                .unwrap();
        }
        let mut got = Vec::new();
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), dlq.next()).await {
            let dl = ben_wire::open_bytes::<pb::DeadLetter>(&m.payload, &ring)
                .unwrap()
                .into_inner();
            assert_eq!(dl.sender, "control");
            got.push((dl.subject, dl.reason, dl.key_id));
        }
        task.abort();
        assert_eq!(
            latest.lock().unwrap().keys().collect::<Vec<_>>(),
            ["spine-1"],
            "only the verified metrics are kept"
        );
        assert_eq!(
            got,
            vec![
                (
                    "ben.metrics.spine-2".to_string(),
                    "`metrics` names `spine-2` as its sender but is signed by `spine-1`"
                        .to_string(),
                    spine.id().to_string()
                ),
                (
                    "ben.metrics.spine-1".to_string(),
                    format!("unknown signing key `{}`", stranger.id()),
                    stranger.id().to_string()
                ),
            ]
        );
    }

    /// Publish errors reach the status: per component from its metrics
    /// (which carry them), and summed in the status line.
    #[test]
    fn publish_errors_are_in_the_metrics_and_the_status_line() {
        let m: ComponentMetrics =
            serde_json::from_str(r#"{"id":"proxy-1","publish_errors":3}"#).unwrap();
        assert_eq!(m.publish_errors, 3);
        let s = serde_json::json!({
            "components": {},
            "records": {},
            "publish_errors": 3,
        });
        assert!(
            status_line(&s).ends_with("| publish errors 3"),
            "{}",
            status_line(&s)
        );
    }
}
