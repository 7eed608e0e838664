//! The ledger service: one task owns the [`Ledger`], takes commands from
//! the API ([`LedgerClient`]), acks and heartbeats from the bus, and ticks
//! every `tick_ms` for timeouts and staleness.
//!
//! Every step's audit lines and deploy record are written to the database
//! before the step's messages go out on the bus, so what the components
//! were told is always on record. A component's ack that sends nothing is
//! the exception: its audit line and its own entry in the deploy record
//! are written with the next step that sends something, or at the next
//! tick (one transaction per ack was the cost of a 500-component deploy;
//! BENCHMARKS.md). When the database cannot take a step that would move a
//! deploy forward (the announce that starts it, its first activate), that
//! step's message is withheld and the deploy is cancelled
//! ([`Input::Cancel`]): the API answers 503 naming the database and the
//! reason, the deploy record says why, and nothing activates. What could
//! not be written is written again once the database answers.
//!
//! At start, the ledger is rebuilt with [`Ledger::recover`] and a deploy
//! the previous run left unfinished is resolved, never left half-done: one
//! still preparing is aborted ("ledger restarted during deploy; nothing
//! activated") and components are told to discard it; one whose activate
//! had already gone out is resumed: activate is sent again (components
//! ack it idempotently, the core re-sends it every `resend_ns`) and it
//! finalizes; a required component that does not come back is dropped and
//! catches up later; if one that is registered does not confirm within the
//! prepare timeout, it ends as `interrupted` with its name.

use crate::db::Db;
use crate::{dead_letter, roles_for, subjects, Config, ControlError, Deps};
use ben_bus::{Message, Subscription};
use ben_ledger::{
    ComponentState, Deploy, Durable, InFlight, Input, Ledger, LedgerError, Output, Phase, Staged,
    Timeouts,
};
use ben_store::Key;
use ben_wire::{open_bytes, pb};
use prost::Message as _;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Metadata of a staged version beyond what the ledger core holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionMeta {
    pub bundle: String,
    pub digest: String,
    pub staged_ns: i64,
}

/// Where a deploy is, or how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeployPhase {
    Preparing,
    Activating,
    Finalized,
    Aborted,
    /// The ledger restarted after activate was sent and the resumed deploy
    /// was not confirmed in time by a component still registered (or could
    /// not be resumed); the active version stays what it was.
    Interrupted,
}

impl DeployPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            DeployPhase::Preparing => "preparing",
            DeployPhase::Activating => "activating",
            DeployPhase::Finalized => "finalized",
            DeployPhase::Aborted => "aborted",
            DeployPhase::Interrupted => "interrupted",
        }
    }

    pub(crate) fn parse(s: &str) -> DeployPhase {
        match s {
            "preparing" => DeployPhase::Preparing,
            "activating" => DeployPhase::Activating,
            "finalized" => DeployPhase::Finalized,
            "interrupted" => DeployPhase::Interrupted,
            _ => DeployPhase::Aborted,
        }
    }

    /// The deploy has ended.
    pub fn is_over(self) -> bool {
        !matches!(self, DeployPhase::Preparing | DeployPhase::Activating)
    }
}

/// One required component within a deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentDeployState {
    pub id: String,
    pub role: String,
    /// `preparing`, `prepared`, `failed`, `activating` or `active`.
    pub state: String,
    /// Why it failed.
    pub reason: Option<String>,
    /// When the ledger took its prepared ack, and its active ack (ledger
    /// clock, ns): how the deploy went component by component. Kept while
    /// the control process runs; a record read back from the database has
    /// the states only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepared_ns: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_ns: Option<i64>,
}

/// Stamps when each component in `now_states` reached prepared and active,
/// keeping the times `before` already had.
fn stamp(before: &[ComponentDeployState], now_states: &mut [ComponentDeployState], now: i64) {
    for c in now_states.iter_mut() {
        if let Some(b) = before.iter().find(|b| b.id == c.id) {
            c.prepared_ns = c.prepared_ns.or(b.prepared_ns);
            c.active_ns = c.active_ns.or(b.active_ns);
        }
        if matches!(c.state.as_str(), "prepared" | "activating" | "active") {
            c.prepared_ns.get_or_insert(now);
        }
        if c.state == "active" {
            c.active_ns.get_or_insert(now);
        }
    }
}

/// One deploy: the version, its phase or outcome, and every required
/// component's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployRecord {
    pub id: i64,
    pub version: String,
    pub phase: DeployPhase,
    /// Why it aborted.
    pub reason: Option<String>,
    pub started_ns: i64,
    pub ended_ns: Option<i64>,
    pub components: Vec<ComponentDeployState>,
}

/// `POST /api/v1/versions`: stage a version whose artifacts are in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageRequest {
    pub version: String,
    pub bundle: String,
    /// BLAKE3 hex of the bundle (names and hashes of its artifacts).
    pub digest: String,
    /// Artifact name → BLAKE3 hex (the store key).
    pub artifacts: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageOutcome {
    pub version: String,
    /// False when the same version was already staged identically.
    pub created: bool,
    pub roles: BTreeMap<String, BTreeSet<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployStarted {
    /// The deploy record's id (status shows it).
    pub id: i64,
    pub version: String,
    pub required: Vec<String>,
}

/// A registered component, as its heartbeats describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentView {
    pub id: String,
    pub role: String,
    /// The intent version it says it runs (empty: none yet).
    pub intent_version: String,
    pub seq: u64,
    /// Ledger clock at the last heartbeat.
    pub last_heartbeat_ns: i64,
    /// Its first heartbeat came after a version was finalized, naming
    /// another version.
    pub joined_late: bool,
    /// It runs something other than the active version.
    pub behind: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Messages sent to `ben.dlq`.
    pub dead_letters: u64,
    /// Dead letters on `ben.dlq` that did not verify (forged, or written
    /// in another's name): refused, never trusted, and dead-lettered
    /// themselves unless the ledger wrote them.
    #[serde(default)]
    pub unverified_dead_letters: u64,
    /// Valid acks for a deploy that is not running (late, duplicated).
    pub stale_acks: u64,
    pub publish_errors: u64,
    pub db_errors: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionView {
    pub version: String,
    pub bundle: String,
    pub digest: String,
    pub staged_ns: i64,
    pub artifacts: usize,
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub active: Option<String>,
    /// The version asked about (`GET /api/v1/status/{version}`).
    pub version: Option<VersionView>,
    /// The running or most recent deploy (of `version` when asked).
    pub deploy: Option<DeployRecord>,
    pub components: Vec<ComponentView>,
    pub counters: Counters,
    pub last_db_error: Option<String>,
    /// The ledger's database: a SQLite path or a PostgreSQL URL without
    /// its password.
    pub database: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at_ns: i64,
    pub version: String,
    pub what: String,
}

/// The active version with what each role fetches: for a component that
/// starts after it was finalized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveView {
    /// None while nothing was ever finalized.
    pub version: Option<String>,
    pub bundle: String,
    pub digest: String,
    pub artifacts: BTreeMap<String, String>,
    pub roles: BTreeMap<String, BTreeSet<String>>,
}

type Reply<T> = oneshot::Sender<Result<T, ControlError>>;

enum Command {
    Stage(StageRequest, Reply<StageOutcome>),
    Deploy(String, Reply<DeployStarted>),
    Rollback(Reply<DeployStarted>),
    Status(Option<String>, Reply<StatusReport>),
    Versions(Reply<Vec<VersionView>>),
    History(Reply<Vec<HistoryEntry>>),
    Active(Reply<ActiveView>),
}

/// Talks to the ledger service. Cheap to clone.
#[derive(Clone)]
pub struct LedgerClient {
    tx: mpsc::Sender<Command>,
}

impl LedgerClient {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ControlError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| ControlError::Stopped)?;
        rx.await.map_err(|_| ControlError::Stopped)?
    }

    pub async fn stage(&self, req: StageRequest) -> Result<StageOutcome, ControlError> {
        self.ask(|r| Command::Stage(req, r)).await
    }

    /// Starts a deploy; returns once the announce is out (not when it ends).
    pub async fn deploy(&self, version: String) -> Result<DeployStarted, ControlError> {
        self.ask(|r| Command::Deploy(version, r)).await
    }

    /// Deploys the most recently finalized version other than the active one.
    pub async fn rollback(&self) -> Result<DeployStarted, ControlError> {
        self.ask(Command::Rollback).await
    }

    pub async fn status(&self, version: Option<String>) -> Result<StatusReport, ControlError> {
        self.ask(|r| Command::Status(version, r)).await
    }

    pub async fn versions(&self) -> Result<Vec<VersionView>, ControlError> {
        self.ask(Command::Versions).await
    }

    pub async fn history(&self) -> Result<Vec<HistoryEntry>, ControlError> {
        self.ask(Command::History).await
    }

    pub async fn active(&self) -> Result<ActiveView, ControlError> {
        self.ask(Command::Active).await
    }
}

/// The running ledger service.
pub struct Service {
    client: LedgerClient,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Service {
    /// Opens the database, restores the ledger, subscribes, and runs.
    pub async fn start(cfg: &Config, deps: Deps) -> Result<Service, ControlError> {
        let database = cfg.database()?;
        let db = Db::open(&database, Duration::from_millis(cfg.db_timeout_ms.max(1))).await?;
        if cfg.roles.is_empty() {
            return Err(ControlError::NoRoles);
        }
        let loaded = db.load(&cfg.roles).await?;
        let timeouts = Timeouts {
            prepare_ns: ms_to_ns(cfg.prepare_timeout_ms),
            ..Timeouts::default()
        };
        // The deploy that was running when the ledger stopped, if any.
        let in_flight = loaded
            .last_deploy
            .as_ref()
            .filter(|d| !d.phase.is_over())
            .map(|d| InFlight {
                version: d.version.clone(),
                phase: if d.phase == DeployPhase::Preparing {
                    Phase::Preparing
                } else {
                    Phase::Activating
                },
                started_ns: d.started_ns,
                required: d.components.iter().map(|c| c.id.clone()).collect(),
            });
        let history_len = loaded.history.len();
        let (ledger, resolved) = Ledger::recover(
            timeouts,
            Durable {
                staged: loaded.staged,
                active: loaded.active,
                history: loaded.history,
                deploy: in_flight,
            },
            deps.clock.now_ns(),
        );
        let mut deps = deps;
        // The ledger reads its own dead letters back: they must verify.
        deps.keyring.trust(
            ben_wire::LEDGER_ID,
            ben_wire::Role::Ledger,
            deps.signer.public(),
        );
        let acks = deps.bus.subscribe(subjects::ACK, None).await?;
        let beats = deps.bus.subscribe(subjects::HEARTBEAT, None).await?;
        let dlq = deps.bus.subscribe(subjects::DLQ, None).await?;
        let (tx, rx) = mpsc::channel(256);
        let (stop_tx, stop_rx) = oneshot::channel();
        let mut actor = Actor {
            ledger,
            db,
            deps,
            stale_after_ns: ms_to_ns(cfg.stale_after_ms),
            roles: cfg.roles.clone(),
            meta: loaded.meta,
            seen: BTreeMap::new(),
            deploy: loaded.last_deploy,
            next_deploy_id: loaded.next_deploy_id,
            persisted: history_len,
            counters: Counters::default(),
            last_db_error: None,
            dirty: Dirty::default(),
            retry_at: None,
            retry_every: Duration::from_millis(cfg.db_timeout_ms.clamp(500, 10_000)),
        };
        actor.resolve_unfinished_deploy(resolved).await;
        let tick = Duration::from_millis(cfg.tick_ms.max(1));
        let task = tokio::spawn(actor.run(rx, stop_rx, [acks, beats, dlq], tick));
        Ok(Service {
            client: LedgerClient { tx },
            stop: Some(stop_tx),
            task,
        })
    }

    pub fn client(&self) -> LedgerClient {
        self.client.clone()
    }

    /// Stops the task and closes the database.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }
}

fn ms_to_ns(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX / 1_000_000) * 1_000_000
}

/// What the registry knows of a component.
struct Seen {
    role: String,
    seq: u64,
    at_ns: i64,
    last_seen_ns: i64,
    intent_version: String,
    joined_late: bool,
}

struct Actor {
    ledger: Ledger,
    /// The roles a bundle targets ([`Config::roles`]).
    roles: crate::RoleArtifacts,
    db: Db,
    deps: Deps,
    stale_after_ns: i64,
    meta: BTreeMap<String, VersionMeta>,
    seen: BTreeMap<String, Seen>,
    /// The running deploy, or the most recent one.
    deploy: Option<DeployRecord>,
    next_deploy_id: i64,
    /// Audit lines already in the database.
    persisted: usize,
    counters: Counters,
    last_db_error: Option<String>,
    /// What is in memory but not yet in the database.
    dirty: Dirty,
    /// When to try writing `dirty` again after a failure.
    retry_at: Option<tokio::time::Instant>,
    retry_every: Duration,
}

/// Parts of the state not yet written (audit lines are tracked by
/// `persisted`).
#[derive(Debug, Clone, Copy, Default)]
struct Dirty {
    deploy: bool,
    components: bool,
    active: bool,
}

fn state_of(s: &ComponentState) -> (&'static str, Option<String>) {
    match s {
        ComponentState::Preparing => ("preparing", None),
        ComponentState::Prepared => ("prepared", None),
        ComponentState::Failed(r) => ("failed", Some(r.clone())),
        ComponentState::Activating => ("activating", None),
        ComponentState::Active => ("active", None),
        ComponentState::Dropped(r) => ("dropped", Some(r.clone())),
    }
}

const MAX_ID: usize = 128;

/// Versions travel in URL paths: letters, digits and `._-+@` only.
fn valid_version(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+@".contains(c))
}

/// Component ids and roles: short, printable, no whitespace.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+@:/".contains(c))
}

impl Actor {
    fn now(&self) -> i64 {
        self.deps.clock.now_ns()
    }

    async fn run(
        mut self,
        mut cmds: mpsc::Receiver<Command>,
        mut stop: oneshot::Receiver<()>,
        [mut acks, mut beats, mut dlq]: [Subscription; 3],
        tick: Duration,
    ) {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                c = cmds.recv() => match c {
                    Some(c) => self.command(c).await,
                    None => break,
                },
                m = acks.next() => match m {
                    Some(m) => self.on_ack(m).await,
                    None => break,
                },
                m = beats.next() => match m {
                    Some(m) => self.on_heartbeat(m).await,
                    None => break,
                },
                m = dlq.next() => match m {
                    Some(m) => self.on_dead_letter(m).await,
                    None => break,
                },
                _ = ticker.tick() => self.on_tick().await,
            }
        }
        let _ = self.flush().await;
        self.db.close().await;
    }

    async fn command(&mut self, c: Command) {
        match c {
            Command::Stage(req, r) => {
                let out = self.stage(req).await;
                let _ = r.send(out);
            }
            Command::Deploy(v, r) => {
                let out = self.deploy(v).await;
                let _ = r.send(out);
            }
            Command::Rollback(r) => {
                let out = self.rollback().await;
                let _ = r.send(out);
            }
            Command::Status(v, r) => {
                let out = self.status(v).await;
                let _ = r.send(out);
            }
            Command::Versions(r) => {
                let _ = r.send(Ok(self.versions()));
            }
            Command::History(r) => {
                let h = self
                    .ledger
                    .history()
                    .iter()
                    .map(|e| HistoryEntry {
                        at_ns: e.at_ns,
                        version: e.version.clone(),
                        what: e.what.clone(),
                    })
                    .collect();
                let _ = r.send(Ok(h));
            }
            Command::Active(r) => {
                let _ = r.send(Ok(self.active_view()));
            }
        }
    }

    async fn stage(&mut self, req: StageRequest) -> Result<StageOutcome, ControlError> {
        let bad = |m: String| Err(ControlError::BadRequest(m));
        if !valid_version(&req.version) {
            return bad(format!(
                "version `{}` must be 1–{MAX_ID} characters of letters, digits and ._-+@",
                req.version.chars().take(MAX_ID).collect::<String>()
            ));
        }
        if req.bundle.is_empty() || req.bundle.len() > MAX_ID {
            return bad(format!("bundle name must be 1–{MAX_ID} characters"));
        }
        if req.artifacts.is_empty() {
            return bad("a version needs at least one artifact".into());
        }
        let mut missing = Vec::new();
        for (name, hash) in &req.artifacts {
            if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
                return bad(format!(
                    "artifact name `{}` is empty, too long or has control characters",
                    name.escape_debug()
                ));
            }
            let key = match Key::parse(hash) {
                Ok(k) => k,
                Err(e) => return bad(format!("artifact {name}: {e}")),
            };
            if !self.deps.store.has(&key)? {
                missing.push(name.clone());
            }
        }
        let digest = crate::bundle_digest(&req.artifacts);
        if req.digest != digest {
            return bad(format!(
                "digest {} does not match the artifacts (they digest to {digest})",
                req.digest.chars().take(80).collect::<String>()
            ));
        }
        if !missing.is_empty() {
            return Err(ControlError::MissingArtifacts(missing));
        }
        let roles = roles_for(&self.roles, req.artifacts.keys().map(String::as_str));
        let staged = Staged {
            version: req.version.clone(),
            artifacts: req.artifacts,
            roles: roles.clone(),
        };
        if let Some(old) = self.ledger.staged(&staged.version) {
            if *old != staged {
                return Err(LedgerError::Conflict(staged.version).into());
            }
            return Ok(StageOutcome {
                version: staged.version,
                created: false,
                roles,
            });
        }
        let meta = VersionMeta {
            bundle: req.bundle,
            digest,
            staged_ns: self.now(),
        };
        // Durable first: a version the API said was staged survives a restart.
        if let Err(e) = self.db.insert_version(&staged, &meta).await {
            self.db_failed(&e.to_string());
            return Err(ControlError::NotRecorded {
                what: self.db.what().to_string(),
                step: format!("the staging of {}", staged.version),
                reason: e.to_string(),
                consequence: "the version was not staged".into(),
            });
        }
        self.meta.insert(staged.version.clone(), meta);
        let version = staged.version.clone();
        self.apply(Input::Stage(staged)).await?;
        Ok(StageOutcome {
            version,
            created: true,
            roles,
        })
    }

    async fn deploy(&mut self, version: String) -> Result<DeployStarted, ControlError> {
        // Earlier steps first: a new deploy record must not replace one
        // that is not on record yet.
        if let Err(reason) = self.flush().await {
            return Err(ControlError::NotRecorded {
                what: self.db.what().to_string(),
                step: "earlier ledger steps".into(),
                reason,
                consequence: format!(
                    "the deploy of {version} was not started and nothing activates"
                ),
            });
        }
        let outs = self.apply(Input::Deploy { version }).await?;
        for o in outs {
            if let Output::Announce { version, required } = o {
                let id = self.deploy.as_ref().map(|d| d.id).unwrap_or_default();
                return Ok(DeployStarted {
                    id,
                    version,
                    required,
                });
            }
        }
        Err(ControlError::Stopped)
    }

    async fn rollback(&mut self) -> Result<DeployStarted, ControlError> {
        let active = self.ledger.active().cloned();
        let target = self
            .db
            .finalized()
            .await
            .map_err(|e| self.unavailable(e))?
            .into_iter()
            .find(|v| Some(v) != active.as_ref() && self.ledger.staged(v).is_some());
        match target {
            Some(v) => self.deploy(v).await,
            None => Err(ControlError::NoRollbackTarget { active }),
        }
    }

    async fn status(&self, version: Option<String>) -> Result<StatusReport, ControlError> {
        let active = self.ledger.active().cloned();
        let (view, deploy) = match version {
            None => (None, self.deploy.clone()),
            Some(v) => {
                let view = self
                    .versions()
                    .into_iter()
                    .find(|x| x.version == v)
                    .ok_or_else(|| ControlError::UnknownVersion(v.clone()))?;
                let deploy = match &self.deploy {
                    Some(d) if d.version == v => Some(d.clone()),
                    _ => self
                        .db
                        .last_deploy_of(&v)
                        .await
                        .map_err(|e| self.unavailable(e))?,
                };
                (Some(view), deploy)
            }
        };
        let components = self
            .seen
            .iter()
            .map(|(id, s)| ComponentView {
                id: id.clone(),
                role: s.role.clone(),
                intent_version: s.intent_version.clone(),
                seq: s.seq,
                last_heartbeat_ns: s.last_seen_ns,
                joined_late: s.joined_late,
                behind: active.as_ref().is_some_and(|a| *a != s.intent_version),
            })
            .collect();
        Ok(StatusReport {
            active,
            version: view,
            deploy,
            components,
            counters: self.counters.clone(),
            last_db_error: self.last_db_error.clone(),
            database: self.db.what().to_string(),
        })
    }

    fn versions(&self) -> Vec<VersionView> {
        let active = self.ledger.active();
        let mut out: Vec<VersionView> = self
            .ledger
            .staged_versions()
            .map(|s| {
                let m = self.meta.get(&s.version);
                VersionView {
                    version: s.version.clone(),
                    bundle: m.map(|m| m.bundle.clone()).unwrap_or_default(),
                    digest: m.map(|m| m.digest.clone()).unwrap_or_default(),
                    staged_ns: m.map(|m| m.staged_ns).unwrap_or_default(),
                    artifacts: s.artifacts.len(),
                    active: active == Some(&s.version),
                }
            })
            .collect();
        out.sort_by(|a, b| (a.staged_ns, &a.version).cmp(&(b.staged_ns, &b.version)));
        out
    }

    fn active_view(&self) -> ActiveView {
        let staged = self.ledger.active().and_then(|v| self.ledger.staged(v));
        let meta = staged.and_then(|s| self.meta.get(&s.version));
        ActiveView {
            version: staged.map(|s| s.version.clone()),
            bundle: meta.map(|m| m.bundle.clone()).unwrap_or_default(),
            digest: meta.map(|m| m.digest.clone()).unwrap_or_default(),
            artifacts: staged.map(|s| s.artifacts.clone()).unwrap_or_default(),
            roles: staged.map(|s| s.roles.clone()).unwrap_or_default(),
        }
    }

    /// A failed read, with the database named.
    fn unavailable(&self, e: ControlError) -> ControlError {
        match e {
            ControlError::Db(e) => ControlError::Unavailable {
                what: self.db.what().to_string(),
                reason: e.to_string(),
            },
            e => e,
        }
    }

    /// Records a database failure for `status`.
    fn db_failed(&mut self, reason: &str) {
        self.counters.db_errors += 1;
        self.last_db_error = Some(format!("{}: {reason}", self.db.what()));
    }

    /// Writes what is in memory and not yet in the database: new audit
    /// lines, the deploy record, the active version, in one transaction.
    async fn flush(&mut self) -> Result<(), String> {
        let len = self.ledger.history().len();
        let d = self.dirty;
        if self.persisted >= len && !d.deploy && !d.active {
            return Ok(());
        }
        let events = &self.ledger.history()[self.persisted.min(len)..];
        let deploy = if d.deploy { self.deploy.as_ref() } else { None };
        let active = if d.active {
            self.ledger.active().cloned()
        } else {
            None
        };
        match self
            .db
            .persist_step(
                self.persisted,
                events,
                deploy,
                d.components,
                active.as_deref(),
            )
            .await
        {
            Ok(()) => {
                self.persisted = len;
                self.dirty = Dirty::default();
                self.retry_at = None;
                Ok(())
            }
            Err(e) => {
                let reason = e.to_string();
                self.db_failed(&reason);
                self.retry_at = Some(tokio::time::Instant::now() + self.retry_every);
                Err(reason)
            }
        }
    }

    /// One ledger step: update the deploy record, persist, then publish.
    /// A step that would move a deploy forward (the announce that starts
    /// it, the first activate) and cannot be persisted is not published:
    /// the deploy is cancelled and the error says so (invariants 1 and 2
    /// hold with the database down).
    async fn apply(&mut self, input: Input) -> Result<Vec<Output>, ControlError> {
        let now = self.now();
        let was_preparing = self
            .ledger
            .deploy()
            .filter(|d| d.phase == Phase::Preparing)
            .map(|d| d.version.clone());
        let history_before = self.ledger.history().len();
        let outs = self.ledger.step(input.clone(), now)?;
        let changed = self.note_changes(&input, &outs, now);
        if outs.is_empty() && !changed && self.ledger.history().len() == history_before {
            // Nothing new to record (a quiet tick, a registration); a
            // backlog is retried from the tick.
            return Ok(outs);
        }
        // A component's prepared/active ack that sends nothing only adds an
        // audit line and updates its own entry: it is written with the next
        // step that sends something (before that step's messages go out),
        // or at the next tick, not in a transaction of its own per ack.
        if matches!(input, Input::Prepared { .. } | Input::Active { .. })
            && outs.is_empty()
            && !changed
        {
            return Ok(outs);
        }
        let Err(reason) = self.flush().await else {
            for o in &outs {
                self.publish(o).await;
            }
            return Ok(outs);
        };
        // Only the announce that starts a deploy and the activate that ends
        // its prepare are withheld: a resent announce or activate, one to a
        // component that joined or is catching up, repeats or extends what
        // is on record, and an activate once sent must never be followed by
        // an abort.
        let forward = outs.iter().find_map(|o| match o {
            Output::Announce { version, .. } if matches!(input, Input::Deploy { .. }) => {
                Some((version.clone(), true))
            }
            Output::Activate { version, .. } if was_preparing.as_ref() == Some(version) => {
                Some((version.clone(), false))
            }
            _ => None,
        });
        let Some((version, announce)) = forward else {
            // Aborts never activate anything, a re-sent activate repeats
            // what is on record, finalized is not a message: send them;
            // the record is written when the database answers.
            for o in &outs {
                self.publish(o).await;
            }
            return Ok(outs);
        };
        let (step, consequence) = if announce {
            (
                format!("the start of the deploy of {version}"),
                "the deploy was not started: nothing was announced and nothing activates",
            )
        } else {
            (
                format!("the activation of {version}"),
                "activate was not sent: the deploy is aborted and nothing activates",
            )
        };
        let cancel = format!(
            "ledger database {} unavailable: could not record {step} ({reason}); nothing activated",
            self.db.what()
        );
        let input = Input::Cancel { reason: cancel };
        let aborts = self.ledger.step(input.clone(), now)?;
        self.note_changes(&input, &aborts, now);
        // Not written now (the database just failed); the tick retries.
        if !announce {
            // Components prepared: tell them to discard it.
            for o in &aborts {
                self.publish(o).await;
            }
        }
        Err(ControlError::NotRecorded {
            what: self.db.what().to_string(),
            step,
            reason,
            consequence: consequence.into(),
        })
    }

    /// Mirrors a step into the deploy record and marks what to persist.
    fn note_changes(&mut self, input: &Input, outs: &[Output], now: i64) -> bool {
        let (changed, with_components) = self.track(input, outs, now);
        if changed {
            self.dirty.deploy = true;
            self.dirty.components |= with_components;
        }
        if outs.iter().any(|o| matches!(o, Output::Finalized { .. })) {
            self.dirty.active = true;
        }
        changed
    }

    fn role_of(&self, component: &str) -> String {
        self.ledger
            .registry()
            .get(component)
            .cloned()
            .or_else(|| {
                self.deploy.as_ref().and_then(|d| {
                    d.components
                        .iter()
                        .find(|c| c.id == component)
                        .map(|c| c.role.clone())
                })
            })
            .unwrap_or_default()
    }

    fn components_of(&self, d: &Deploy) -> Vec<ComponentDeployState> {
        d.components
            .iter()
            .map(|(id, s)| {
                let (state, reason) = state_of(s);
                ComponentDeployState {
                    id: id.clone(),
                    role: self.role_of(id),
                    state: state.to_string(),
                    reason,
                    prepared_ns: None,
                    active_ns: None,
                }
            })
            .collect()
    }

    /// Mirrors the core's deploy into the record; returns (the record
    /// changed in a way worth persisting, persist its components too).
    fn track(&mut self, input: &Input, outs: &[Output], now: i64) -> (bool, bool) {
        let mut changed = (false, false);
        for o in outs {
            match o {
                // A new deploy (not an announce to one component that joined
                // during prepare or is being caught up).
                Output::Announce { version, .. } if matches!(input, Input::Deploy { .. }) => {
                    let components = self
                        .ledger
                        .deploy()
                        .map(|d| self.components_of(d))
                        .unwrap_or_default();
                    self.deploy = Some(DeployRecord {
                        id: self.next_deploy_id,
                        version: version.clone(),
                        phase: DeployPhase::Preparing,
                        reason: None,
                        started_ns: now,
                        ended_ns: None,
                        components,
                    });
                    self.next_deploy_id += 1;
                    changed = (true, true);
                }
                Output::Announce { .. } => {}
                Output::Activate { version, .. } => {
                    if let Some(d) = self
                        .deploy
                        .as_mut()
                        .filter(|d| d.version == *version && d.phase == DeployPhase::Preparing)
                    {
                        d.phase = DeployPhase::Activating;
                        changed.0 = true;
                    }
                }
                Output::Abort { reason, .. } => {
                    // The record mirrors the deploy as it was before this step.
                    let mut components = self
                        .deploy
                        .as_ref()
                        .filter(|d| !d.phase.is_over())
                        .map(|d| d.components.clone())
                        .unwrap_or_default();
                    // The core drops the deploy on abort; say who failed and why.
                    let mark = |c: &mut ComponentDeployState, why: String| {
                        c.state = "failed".into();
                        c.reason = Some(why);
                    };
                    for c in components.iter_mut() {
                        match input {
                            Input::PrepareFailed {
                                component, reason, ..
                            } if *component == c.id => mark(c, reason.clone()),
                            Input::Prepared { component, .. } if *component == c.id => mark(
                                c,
                                "prepared artifacts whose hashes do not match the staged ones"
                                    .into(),
                            ),
                            Input::Deregister { component } if *component == c.id => {
                                mark(c, "left during prepare (no heartbeat)".into())
                            }
                            Input::Tick if c.state == "preparing" => {
                                mark(c, "no answer before the prepare timeout".into())
                            }
                            _ => {}
                        }
                    }
                    if let Some(d) = self.deploy.as_mut() {
                        d.phase = DeployPhase::Aborted;
                        d.reason = Some(reason.clone());
                        d.ended_ns = Some(now);
                        d.components = components;
                    }
                    changed = (true, true);
                }
                Output::Interrupted { reason, .. } => {
                    if let Some(d) = self.deploy.as_mut() {
                        d.phase = DeployPhase::Interrupted;
                        d.reason = Some(reason.clone());
                        d.ended_ns = Some(now);
                        for c in d.components.iter_mut() {
                            if c.state == "activating" {
                                c.reason = Some("did not confirm activate in time".into());
                            }
                        }
                    }
                    changed = (true, true);
                }
                Output::Finalized { .. } => {
                    let last = self.ledger.finished().map(|d| self.components_of(d));
                    if let Some(d) = self.deploy.as_mut() {
                        d.phase = DeployPhase::Finalized;
                        d.ended_ns = Some(now);
                        // Active, or dropped after activate (it catches up).
                        if let Some(mut last) = last {
                            stamp(&d.components, &mut last, now);
                            d.components = last;
                        }
                    }
                    changed = (true, true);
                }
            }
        }
        // Per-ack progress: in memory only; the record is persisted whole
        // when the deploy ends.
        // An ack that sends nothing changes one component: update its entry
        // only (rebuilding all of them per ack is quadratic in the fleet).
        if let Some(d) = self.ledger.deploy() {
            let touched = match input {
                Input::Prepared { component, .. }
                | Input::PrepareFailed { component, .. }
                | Input::Active { component, .. }
                    if outs.is_empty() =>
                {
                    Some(component)
                }
                _ => None,
            };
            let all = touched.is_none().then(|| self.components_of(d));
            if let Some(rec) = self.deploy.as_mut().filter(|r| r.version == d.version) {
                rec.phase = match d.phase {
                    Phase::Preparing => DeployPhase::Preparing,
                    Phase::Activating => DeployPhase::Activating,
                };
                match (all, touched) {
                    (Some(mut all), _) => {
                        stamp(&rec.components, &mut all, now);
                        rec.components = all;
                    }
                    (None, Some(c)) => {
                        if let (Some(s), Some(e)) = (
                            d.components.get(c),
                            rec.components.iter_mut().find(|e| e.id == *c),
                        ) {
                            let (state, reason) = state_of(s);
                            e.state = state.to_string();
                            e.reason = reason;
                            stamp(&[], std::slice::from_mut(e), now);
                        }
                    }
                    (None, None) => {}
                }
            }
        }
        changed
    }

    async fn publish(&mut self, o: &Output) {
        let signer = self.deps.signer.clone();
        let (subject, bytes) = match o {
            Output::Announce { version, required } => {
                let Some(st) = self.ledger.staged(version) else {
                    return;
                };
                let msg = pb::Announce {
                    version: version.clone(),
                    artifacts: st
                        .artifacts
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    roles: st
                        .roles
                        .iter()
                        .map(|(r, names)| {
                            (
                                r.clone(),
                                pb::ArtifactNames {
                                    names: names.iter().cloned().collect(),
                                },
                            )
                        })
                        .collect(),
                    required: required.clone(),
                };
                (subjects::ANNOUNCE, signer.seal_bytes(&msg))
            }
            Output::Activate { version, required } => (
                subjects::ACTIVATE,
                signer.seal_bytes(&pb::Activate {
                    version: version.clone(),
                    required: required.clone(),
                }),
            ),
            Output::Abort { version, reason } => (
                subjects::ABORT,
                signer.seal_bytes(&pb::Abort {
                    version: version.clone(),
                    reason: reason.clone(),
                }),
            ),
            Output::Finalized { .. } | Output::Interrupted { .. } => return,
        };
        if self.deps.bus.publish(subject, bytes).await.is_err() {
            self.counters.publish_errors += 1;
        }
    }

    /// Invalid input is never dropped silently (invariants 8, 11).
    async fn dead_letter(&mut self, subject: &str, reason: &str, bytes: &[u8]) {
        self.counters.dead_letters += 1;
        let dl = dead_letter(subject, reason, bytes, self.now());
        if self
            .deps
            .bus
            .publish(subjects::DLQ, self.deps.signer.seal_bytes(&dl))
            .await
            .is_err()
        {
            self.counters.publish_errors += 1;
        }
    }

    /// A dead letter must be signed by the component it names as its
    /// writer (invariant 8). One that is not is counted apart and
    /// dead-lettered with the reason — except the ledger's own, which
    /// always verify here, so this never loops.
    async fn on_dead_letter(&mut self, m: Message) {
        let Err(e) = open_bytes::<pb::DeadLetter>(&m.payload, &self.deps.keyring) else {
            return;
        };
        self.counters.unverified_dead_letters += 1;
        let own = self.deps.signer.id();
        let by_me =
            pb::SignedEnvelope::decode(m.payload.as_slice()).is_ok_and(|env| env.key_id == own);
        if !by_me {
            let reason = format!("dead letter refused: {e}");
            self.dead_letter(&m.subject, &reason, &m.payload).await;
        }
    }

    async fn on_ack(&mut self, m: Message) {
        let ack = match open_bytes::<pb::Ack>(&m.payload, &self.deps.keyring) {
            Ok(v) => v.into_inner(),
            Err(e) => {
                return self
                    .dead_letter(&m.subject, &e.to_string(), &m.payload)
                    .await
            }
        };
        use pb::ack::Phase as P;
        let input = match P::try_from(ack.phase) {
            Ok(P::Prepared) => Input::Prepared {
                component: ack.component,
                version: ack.version,
                hashes: ack.hashes.into_iter().collect(),
            },
            Ok(P::Failed) => Input::PrepareFailed {
                component: ack.component,
                version: ack.version,
                reason: if ack.reason.is_empty() {
                    "no reason given".into()
                } else {
                    ack.reason.chars().take(1024).collect()
                },
            },
            Ok(P::Active) => Input::Active {
                component: ack.component,
                version: ack.version,
            },
            Ok(P::Unspecified) | Err(_) => {
                let reason = format!("ack with no valid phase ({})", ack.phase);
                return self.dead_letter(&m.subject, &reason, &m.payload).await;
            }
        };
        match self.apply(input).await {
            Ok(_) => {}
            Err(ControlError::Ledger(LedgerError::StaleAck { .. })) => {
                self.counters.stale_acks += 1
            }
            Err(ControlError::Ledger(_)) => self.counters.stale_acks += 1,
            // The database failed: counted, and the deploy says why.
            Err(_) => {}
        }
    }

    async fn on_heartbeat(&mut self, m: Message) {
        let hb = match open_bytes::<pb::Heartbeat>(&m.payload, &self.deps.keyring) {
            Ok(v) => v.into_inner(),
            Err(e) => {
                return self
                    .dead_letter(&m.subject, &e.to_string(), &m.payload)
                    .await
            }
        };
        if !valid_name(&hb.component) || !valid_name(&hb.role) {
            let reason = "heartbeat without a valid component id or role";
            return self.dead_letter(&m.subject, reason, &m.payload).await;
        }
        let now = self.now();
        let active = self.ledger.active().cloned();
        let intent: String = hb.intent_version.chars().take(MAX_ID).collect();
        let role_changed = match self.seen.get_mut(&hb.component) {
            Some(s) => {
                // A replayed heartbeat is implausible health data; a
                // restarted component starts its seq again but with a later
                // timestamp.
                if hb.seq <= s.seq && hb.at_ns <= s.at_ns {
                    let reason = format!(
                        "replayed heartbeat from {}: seq {} and time not after {}",
                        hb.component, hb.seq, s.seq
                    );
                    return self.dead_letter(&m.subject, &reason, &m.payload).await;
                }
                let changed = s.role != hb.role;
                s.role = hb.role.clone();
                s.seq = hb.seq;
                s.at_ns = hb.at_ns;
                s.last_seen_ns = now;
                s.intent_version = intent;
                changed
            }
            None => {
                let joined_late = active.as_ref().is_some_and(|a| *a != intent);
                self.seen.insert(
                    hb.component.clone(),
                    Seen {
                        role: hb.role.clone(),
                        seq: hb.seq,
                        at_ns: hb.at_ns,
                        last_seen_ns: now,
                        intent_version: intent,
                        joined_late,
                    },
                );
                true
            }
        };
        if role_changed {
            let _ = self
                .apply(Input::Register {
                    component: hb.component,
                    role: hb.role,
                    running: Some(hb.intent_version).filter(|v| !v.is_empty()),
                })
                .await;
        }
    }

    async fn on_tick(&mut self) {
        // Audit lines of acks that sent nothing are written here if no
        // other step wrote them; after a database failure, only when the
        // retry is due.
        let backlog = self.ledger.history().len() > self.persisted;
        let due = match self.retry_at {
            None => backlog,
            Some(t) => tokio::time::Instant::now() >= t,
        };
        if due {
            let _ = self.flush().await;
        }
        let now = self.now();
        let stale: Vec<String> = self
            .seen
            .iter()
            .filter(|(_, s)| now.saturating_sub(s.last_seen_ns) > self.stale_after_ns)
            .map(|(id, _)| id.clone())
            .collect();
        for component in stale {
            self.seen.remove(&component);
            let _ = self.apply(Input::Deregister { component }).await;
        }
        if self.ledger.deploy().is_some() {
            let _ = self.apply(Input::Tick).await;
        }
    }

    /// A deploy that was running when the ledger stopped, as
    /// [`Ledger::recover`] resolved it (see the module docs): aborted if
    /// activate had not gone out ("ledger restarted during deploy; nothing
    /// activated"), resumed (activate sent again) if it had, or, if it
    /// could not be resumed, interrupted. The record and audit lines are
    /// written first, then the messages go out (an abort never activates
    /// anything and a re-sent activate repeats what is on record, so they
    /// go out even if the database does not answer yet).
    async fn resolve_unfinished_deploy(&mut self, outs: Vec<Output>) {
        let now = self.now();
        let core = self.ledger.deploy().map(|d| self.components_of(d));
        let Some(rec) = self.deploy.as_mut().filter(|d| !d.phase.is_over()) else {
            for o in &outs {
                self.publish(o).await;
            }
            return;
        };
        for o in &outs {
            match o {
                Output::Abort { reason, .. } => {
                    rec.phase = DeployPhase::Aborted;
                    rec.reason = Some(reason.clone());
                    rec.ended_ns = Some(now);
                }
                Output::Interrupted { reason, .. } => {
                    rec.phase = DeployPhase::Interrupted;
                    rec.reason = Some(reason.clone());
                    rec.ended_ns = Some(now);
                }
                Output::Activate { .. } => {
                    rec.phase = DeployPhase::Activating;
                    rec.reason = Some(
                        "the ledger restarted after activate was sent; activate sent again".into(),
                    );
                    // Every required component confirms again.
                    if let Some(core) = core.clone() {
                        rec.components = core;
                    }
                }
                Output::Announce { .. } | Output::Finalized { .. } => {}
            }
        }
        self.dirty.deploy = true;
        self.dirty.components = true;
        let _ = self.flush().await;
        for o in &outs {
            self.publish(o).await;
        }
    }
}
