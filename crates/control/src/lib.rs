//! # Control: the ledger service and the HTTP API (embedded mode)
//!
//! The shell around the pure [`ben_ledger::Ledger`] (DESIGN.md §3, intent
//! path). [`start`] opens the ledger's database — SQLite under the data dir
//! (`.ben/ledger.db`) by default, or PostgreSQL when
//! [`Config::database_url`] is a `postgres://…` URL (cluster mode; the same
//! SQL, kept to what CockroachDB accepts) — restores staged versions, the
//! active version, the deploy records and the audit log, resolves a deploy
//! the previous run left unfinished (see [`ledger`]), then runs two tasks:
//!
//! * the **ledger service** ([`ledger`]): the one owner of the `Ledger`,
//!   wired to the bus. It publishes signed [`pb::Announce`],
//!   [`pb::Activate`] and [`pb::Abort`], and takes signed [`pb::Ack`]s and
//!   [`pb::Heartbeat`]s (see [`subjects`]). A component is registered on its
//!   first valid heartbeat and deregistered after `stale_after` without one.
//!   Anything that fails [`ben_wire::open_bytes`] goes to [`subjects::DLQ`]
//!   as a [`pb::DeadLetter`] with the reason, and is counted (invariants 8
//!   and 11).
//! * the **HTTP API** ([`api`], `127.0.0.1:7420` by default): upload
//!   artifacts, stage, deploy, status, versions, history, rollback, and the
//!   active version for components that start late. `benctl` talks to it.
//!   It also serves the **dashboard** ([`dashboard`]): its API, its live
//!   stream, and the single-page app built into the binary.
//!
//! ```no_run
//! # async fn f(bus: std::sync::Arc<dyn ben_bus::Bus>, store: std::sync::Arc<dyn ben_store::Store>,
//! #            signer: std::sync::Arc<ben_wire::Signer>, keyring: ben_wire::Keyring) -> Result<(), ben_control::ControlError> {
//! use ben_control::{start, Config, Deps, SystemClock};
//! let handle = start(
//!     Config::default(),
//!     Deps { bus, store, signer, keyring, clock: std::sync::Arc::new(SystemClock) },
//! )
//! .await?;
//! println!("API on http://{}", handle.api_addr());
//! handle.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## The bus contract
//!
//! | subject | direction | message | meaning |
//! |---|---|---|---|
//! | `ben.intent.announce` | ledger → all | signed `Announce` | prepare `version`: `artifacts` (name → BLAKE3 = store key), `roles` (role → names it fetches, see [`roles_for`]), `required` (component ids snapshotted at deploy) |
//! | `ben.intent.activate` | ledger → all | signed `Activate` | every required component prepared: swap to `version` and ack ACTIVE |
//! | `ben.intent.abort` | ledger → all | signed `Abort` | discard the prepared `version`; keep running the current one |
//! | `ben.intent.ack` | component → ledger | signed `Ack` | PREPARED with the `hashes` it holds, FAILED with `reason`, or ACTIVE |
//! | `ben.health.heartbeat` | component → ledger | signed `Heartbeat` | registers `component` with `role` on the first; `intent_version` is what it runs; none for `stale_after_ms` deregisters |
//! | `ben.dlq` | ledger → anyone | signed `DeadLetter` | a message that failed verification, with the reason and its key id (never the payload); the ledger also reads the DLQ and refuses (counts, dead-letters) dead letters that do not verify |
//!
//! An ack that is valid but for no running deploy (late, duplicated) is
//! counted as stale, not dead-lettered. A heartbeat whose `seq` and `at_ns`
//! are both not newer than the last one is a replay and is dead-lettered.
//!
//! ## Figures
//!
//! Deploy → finalized with 100 simulated components in process (real bus,
//! store, SQLite, Ed25519 on every message; `tests/ledger.rs`): 76 ms in a
//! release build, 260 ms in a debug build, on a shared 2-core machine. Over
//! NATS, each component with its own connection and intent agent
//! (`ben bench activation`, BENCHMARKS.md): 100 components in 30–50 ms,
//! 500 in 0.2–0.36 s (release).
//!
//! Time comes from an injected [`Clock`] (invariant 12): the ledger's
//! timeouts and the registry's staleness are measured on it, so tests can
//! move time by hand ([`ManualClock`]).

pub mod api;
pub mod auth;
pub mod bees;
pub mod dashboard;
mod db;
pub mod dlq;
pub mod mesh;
pub use db::Database;
pub mod ledger;
pub mod private;
#[cfg(feature = "testkit")]
pub mod testkit;

use ben_bus::Bus;
use ben_store::Store;
use ben_wire::{pb, Keyring, Signer};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use ledger::LedgerClient;

/// Bus subjects of the intent path ([`ben_wire::subjects`]). A fixed
/// contract with the components.
pub mod subjects {
    pub use ben_wire::subjects::{ABORT, ACK, ACTIVATE, ANNOUNCE, DLQ, HEARTBEAT};
}

/// The roles a bundle targets, and the artifact kinds each fetches: a
/// prefix ending in `/` (`pack/`) or an exact name (`settings`). The
/// component table (`ben_runtime::KINDS`) declares them; the ledger knows
/// no kind of component by itself.
pub type RoleArtifacts = Vec<(String, Vec<String>)>;

/// Role → the artifact names that role fetches, for a bundle's artifact
/// names. A prefix ending in `/` matches a kind (`pack/web_guard`); one
/// without matches the name exactly (`settings`). Every role is listed,
/// even one that needs only `settings`.
pub fn roles_for<'a>(
    roles: &[(String, Vec<String>)],
    artifact_names: impl IntoIterator<Item = &'a str>,
) -> BTreeMap<String, BTreeSet<String>> {
    let names: Vec<&str> = artifact_names.into_iter().collect();
    roles
        .iter()
        .map(|(role, kinds)| {
            let wanted = names
                .iter()
                .filter(|n| {
                    kinds.iter().any(|k| {
                        if k.ends_with('/') {
                            n.starts_with(k) && n.len() > k.len()
                        } else {
                            **n == *k
                        }
                    })
                })
                .map(|n| n.to_string())
                .collect();
            (role.to_string(), wanted)
        })
        .collect()
}

/// The bundle digest over artifact names and hashes, as `benctl build`
/// computes it (`ben_intent::Built::digest`): the ledger recomputes it so a
/// staged version's digest always names exactly its artifacts (invariant 3).
pub fn bundle_digest(artifacts: &BTreeMap<String, String>) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"ben/v1/bundle\n");
    for (name, hash) in artifacts {
        h.update(name.as_bytes());
        h.update(b"\n");
        h.update(hash.as_bytes());
        h.update(b"\n");
    }
    h.finalize().to_hex().to_string()
}

pub use ben_time::{Clock, ManualClock, SystemClock};

/// Settings of the ledger service and the API.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Data directory; the ledger database is `ledger.db` in it.
    pub data_dir: PathBuf,
    /// Overrides `data_dir/ledger.db`.
    pub db_path: Option<PathBuf>,
    /// The ledger's database: `postgres://user@host:port/db` selects
    /// PostgreSQL (cluster mode); unset (or empty) keeps SQLite at
    /// [`Config::db_path`]. `sqlite:PATH` names a SQLite file explicitly.
    pub database_url: Option<String>,
    /// How long a database operation waits for a connection before the
    /// step fails (an unreachable server fails a deploy instead of
    /// stalling it).
    pub db_timeout_ms: u64,
    /// Where the HTTP API listens (loopback by default).
    pub api_addr: SocketAddr,
    /// The token every API request but `GET /api/v1/health` must carry
    /// (`Authorization: Bearer …`; see [`auth`]). `None` leaves the API
    /// open, which [`start`] allows only on a loopback address. `ben up`
    /// and cluster mode set it from `DATA_DIR/api.token`
    /// ([`auth::token_file`]).
    pub api_token: Option<auth::ApiToken>,
    /// A component without a heartbeat for this long is deregistered
    /// (heartbeats come every second).
    pub stale_after_ms: u64,
    /// A deploy whose required components have not all prepared within
    /// this aborts.
    pub prepare_timeout_ms: u64,
    /// How often the ledger checks timeouts and staleness.
    pub tick_ms: u64,
    /// Largest artifact the API accepts.
    pub max_artifact_bytes: usize,
    /// Largest JSON request body the API accepts.
    pub max_json_bytes: usize,
    /// The roles a bundle targets and what each fetches (from the
    /// component table). Must not be empty: a ledger with no roles would
    /// require nobody's ack.
    #[serde(skip)]
    pub roles: RoleArtifacts,
    /// What `GET /metrics` serves: the process's counters in Prometheus'
    /// text format, set by the mode once its components run.
    #[serde(skip)]
    pub metrics: MetricsSource,
    /// The dashboard's caches and stream.
    pub dashboard: dashboard::Settings,
}

/// What a process knows of its components' counters, for the API.
pub trait Telemetry: Send + Sync {
    /// `GET /metrics`: Prometheus' text format.
    fn prometheus(&self) -> String;
    /// Each component's (or each process's) counters in their JSON wire
    /// form (`ben_runtime::metrics::ComponentMetrics`), for the dashboard.
    fn components(&self) -> Vec<serde_json::Value>;
}

/// The source of the API's `GET /metrics` and the dashboard's counters, set
/// once by whoever knows the process's counters (`ben up`: every
/// component's; cluster mode's control process: every process's signed
/// metrics).
#[derive(Clone, Default)]
pub struct MetricsSource(Arc<std::sync::OnceLock<Arc<dyn Telemetry>>>);

impl MetricsSource {
    /// Sets the source; false if one was set already.
    pub fn set(&self, source: impl Telemetry + 'static) -> bool {
        self.0.set(Arc::new(source)).is_ok()
    }

    /// The Prometheus text now; `None` before a source is set.
    pub fn render(&self) -> Option<String> {
        self.0.get().map(|t| t.prometheus())
    }

    /// The components' counters now (none before a source is set).
    pub fn components(&self) -> Vec<serde_json::Value> {
        self.0.get().map(|t| t.components()).unwrap_or_default()
    }
}

impl std::fmt::Debug for MetricsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MetricsSource(set: {})", self.0.get().is_some())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from(".ben"),
            db_path: None,
            database_url: None,
            db_timeout_ms: 5_000,
            api_addr: SocketAddr::from(([127, 0, 0, 1], 7420)),
            api_token: None,
            stale_after_ms: 3_000,
            prepare_timeout_ms: 30_000,
            tick_ms: 100,
            max_artifact_bytes: 64 << 20,
            max_json_bytes: 4 << 20,
            roles: Vec::new(),
            metrics: MetricsSource::default(),
            dashboard: dashboard::Settings::default(),
        }
    }
}

impl Config {
    pub fn db_path(&self) -> PathBuf {
        self.db_path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("ledger.db"))
    }

    /// The database `database_url` names, or SQLite at [`Config::db_path`].
    pub fn database(&self) -> Result<Database, ControlError> {
        Database::from_url(self.database_url.as_deref(), self.db_path())
            .map_err(ControlError::BadDatabaseUrl)
    }
}

/// What the control plane runs on; the same in `ben up` and as a process.
#[derive(Clone)]
pub struct Deps {
    pub bus: Arc<dyn Bus>,
    pub store: Arc<dyn Store>,
    /// The ledger's signing identity (announce, activate, abort).
    pub signer: Arc<Signer>,
    /// Keys whose acks and heartbeats the ledger accepts.
    pub keyring: Keyring,
    pub clock: Arc<dyn Clock>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// [`Config::roles`] is empty: no deploy would require anyone's ack.
    #[error("the ledger was given no roles (the component table supplies them: start it through ben_runtime::start_control)")]
    NoRoles,
    #[error("ledger database {what}: {reason} (is it reachable, and does the database exist?)")]
    Open { what: String, reason: String },
    #[error("{0}")]
    BadDatabaseUrl(String),
    #[error("ledger database: {0}")]
    Db(#[from] sqlx::Error),
    /// A read the request needs failed (the server is unreachable…).
    #[error("ledger database {what} is unavailable: {reason}; check it and retry (`benctl status` without a version answers from memory)")]
    Unavailable { what: String, reason: String },
    /// A step could not be written to the database, so its messages were
    /// not sent.
    #[error("ledger database {what} failed while recording {step}: {reason}; {consequence}. Check the database (`benctl status` shows the error), then retry")]
    NotRecorded {
        what: String,
        step: String,
        reason: String,
        consequence: String,
    },
    #[error("creating the data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("binding the HTTP API on {addr}: {source} (is another `ben up` running? set another address)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP API would listen on {addr}, which is not a loopback address, without a token; give it one (`ben up` and `ben cluster up` use api.token in the data dir) or listen on 127.0.0.1")]
    OpenApi { addr: SocketAddr },
    #[error("BEE revocations: {0}")]
    Bees(String),
    #[error("the CyberMesh view: {0}")]
    Mesh(String),
    #[error("the dead-letter book: {0}")]
    Dlq(String),
    #[error("bus: {0}")]
    Bus(#[from] ben_bus::BusError),
    #[error(transparent)]
    Ledger(#[from] ben_ledger::LedgerError),
    #[error("store: {0}")]
    Store(#[from] ben_store::StoreError),
    #[error("{0}")]
    BadRequest(String),
    #[error("artifacts not in the store: {}; upload them first (PUT /api/v1/artifacts/<blake3>)", .0.join(", "))]
    MissingArtifacts(Vec<String>),
    #[error("version {0} is not staged")]
    UnknownVersion(String),
    #[error("no earlier finalized version to roll back to{}", .active.as_ref().map(|a| format!(" (active: {a})")).unwrap_or_default())]
    NoRollbackTarget { active: Option<String> },
    #[error("the ledger service has stopped")]
    Stopped,
}

/// The running control plane.
pub struct Handle {
    api_addr: SocketAddr,
    client: LedgerClient,
    ledger: ledger::Service,
    api: api::Server,
    bees: Arc<bees::Bees>,
    mesh: Arc<mesh::Watch>,
    dlq: Arc<dlq::Dlq>,
    dashboard: Arc<dashboard::Dashboard>,
    logins: Arc<auth::Logins>,
}

impl Handle {
    /// A new one-time link a browser logs in to the dashboard with (used
    /// once, within [`auth::LOGIN_CODE_TTL`]).
    pub fn login_link(&self) -> Result<String, String> {
        Ok(format!(
            "http://{}{}?code={}",
            self.api_addr,
            auth::LOGIN,
            self.logins.code()?
        ))
    }

    /// Where the API listens (the real port when configured with port 0).
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The dashboard (its stream can be sent to directly).
    pub fn dashboard(&self) -> Arc<dashboard::Dashboard> {
        self.dashboard.clone()
    }

    /// Talks to the ledger service directly (what the API uses).
    pub fn client(&self) -> LedgerClient {
        self.client.clone()
    }

    /// Stops the API, then the ledger service; waits for both.
    pub async fn shutdown(self) {
        // The live streams first: the server waits for open connections.
        self.dashboard.stop();
        self.api.shutdown().await;
        self.bees.stop();
        self.mesh.stop();
        self.dlq.stop();
        self.ledger.shutdown().await;
    }
}

/// Starts the ledger service and the HTTP API.
pub async fn start(cfg: Config, deps: Deps) -> Result<Handle, ControlError> {
    if cfg.api_token.is_none() && !cfg.api_addr.ip().is_loopback() {
        return Err(ControlError::OpenApi { addr: cfg.api_addr });
    }
    if let Some(t) = &cfg.api_token {
        // A token read from a config file skips ApiToken::new; check it.
        auth::ApiToken::new(t.reveal()).map_err(ControlError::BadRequest)?;
    }
    let listener = tokio::net::TcpListener::bind(cfg.api_addr)
        .await
        .map_err(|source| ControlError::Bind {
            addr: cfg.api_addr,
            source,
        })?;
    let api_addr = listener.local_addr().map_err(|source| ControlError::Bind {
        addr: cfg.api_addr,
        source,
    })?;
    let ledger = ledger::Service::start(&cfg, deps.clone()).await?;
    let client = ledger.client();
    let bees = bees::Bees::start(
        &cfg.data_dir,
        deps.bus.clone(),
        deps.signer.clone(),
        deps.keyring.clone(),
        deps.clock.clone(),
    )
    .await
    .map_err(ControlError::Bees)?;
    let mesh = mesh::Watch::start(
        deps.bus.clone(),
        deps.signer.clone(),
        deps.keyring.clone(),
        deps.clock.clone(),
    )
    .await
    .map_err(ControlError::Mesh)?;
    let dlq = dlq::Dlq::start(deps.bus.clone(), deps.keyring.clone())
        .await
        .map_err(ControlError::Dlq)?;
    let dashboard = dashboard::Dashboard::new(cfg.dashboard.clone());
    let logins = Arc::new(auth::Logins::default());
    let api = api::Server::start(
        listener,
        api::Parts {
            ledger: client.clone(),
            store: deps.store.clone(),
            bus: deps.bus.clone(),
            bees: bees.clone(),
            mesh: mesh.clone(),
            dlq: dlq.clone(),
            dashboard: dashboard.clone(),
            logins: logins.clone(),
        },
        &cfg,
    );
    Ok(Handle {
        api_addr,
        client,
        ledger,
        api,
        bees,
        mesh,
        dlq,
        dashboard,
        logins,
    })
}

/// The ledger's dead letter for `subject`: the reason, and the refused
/// envelope's key id when the bytes were an envelope at all; the ledger
/// signs it as its writer. Never holds the payload.
pub(crate) fn dead_letter(subject: &str, reason: &str, bytes: &[u8], at_ns: i64) -> pb::DeadLetter {
    use prost::Message as _;
    let key_id = pb::SignedEnvelope::decode(bytes)
        .map(|e| e.key_id.chars().take(64).collect())
        .unwrap_or_default();
    pb::DeadLetter {
        subject: subject.to_string(),
        reason: reason.to_string(),
        at_ns,
        sender: ben_wire::LEDGER_ID.to_string(),
        size: bytes.len() as u64,
        key_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_take_their_kinds_only() {
        let names = [
            "schema/http.request@v1",
            "contract/shop_web",
            "pack/web_guard",
            "playbook/brute_force",
            "migration/http.request@v1->v2",
            "settings",
            "packaging/x",
        ];
        let r = roles_for(&testkit::roles(), names);
        let get = |role: &str| -> Vec<&str> { r[role].iter().map(String::as_str).collect() };
        assert_eq!(
            get("sidecar"),
            ["contract/shop_web", "schema/http.request@v1", "settings"]
        );
        assert_eq!(
            get("spine"),
            [
                "migration/http.request@v1->v2",
                "pack/web_guard",
                "playbook/brute_force",
                "schema/http.request@v1",
                "settings"
            ]
        );
        assert_eq!(
            get("proxy"),
            [
                "migration/http.request@v1->v2",
                "pack/web_guard",
                "schema/http.request@v1",
                "settings"
            ]
        );
        assert_eq!(
            get("detector"),
            ["playbook/brute_force", "schema/http.request@v1", "settings"]
        );
        assert_eq!(get("lucius"), get("proxy"));
        // `packaging/x` is no `pack/`; nothing takes it.
        assert!(r.values().all(|s| !s.contains("packaging/x")));
    }

    #[test]
    fn digest_depends_on_names_and_hashes() {
        let mut a = BTreeMap::new();
        a.insert("settings".to_string(), "aa".repeat(32));
        let d1 = bundle_digest(&a);
        a.insert("pack/x".to_string(), "bb".repeat(32));
        let d2 = bundle_digest(&a);
        assert_ne!(d1, d2);
        assert_eq!(d2, bundle_digest(&a.clone()));
        assert_eq!(d1.len(), 64);
    }
}
