//! # Sidecar
//!
//! The app's only door into Ben. It listens on a Unix socket; when an app
//! connects and says which app it is, Beekeeper attests the process from
//! the kernel's facts (SO_PEERCRED, `/proc`) against that app's declared
//! selector and issues a BEE; no BEE, no data, and with Beekeeper down
//! nothing is issued (fail closed). Every batch must carry a BEE that
//! verifies for *this* connection's process and has not expired; BEEs are
//! re-issued at half-life.
//!
//! Records are translated with the app's contract into the global schema
//! and forwarded to the proxies (`ben.data.proxy`); a record that fails its
//! contract is reported back to the app (index + reason) and sent to the
//! dead-letter subject, never forwarded. Signals addressed to the app
//! (`ben.signal.<app>`, signed) are verified and delivered to its
//! connections. The sidecar evaluates no rules and originates no signals.
//!
//! Embedded mode runs one sidecar task serving every declared app on one
//! socket (the app names itself in `Hello`); cluster mode runs one per app.
//!
//! **Revocation.** The sidecar reports its live BEEs to control
//! ([`ROSTER`], signed, on each change and every 2 s) and takes the list of
//! revoked subjects from it ([`REVOKED`], signed). A newly revoked subject
//! is recorded in `<state_dir>/<id>.revoked-bees` (0600; read again at
//! start, so a restarted sidecar refuses before control speaks), given to
//! Beekeeper (no BEE for it, none of its BEEs verifies), and every
//! connection holding one of its BEEs is refused and closed at once.

use ben_bee::{Beekeeper, PeerFacts, Selector};
use ben_bitspec::canon::program_from_artifacts;
use ben_bitspec::interp;
use ben_bitspec::ir::Program;
use ben_bitspec::json::Json;
use ben_client::{read_frame, write_frame};
use ben_component::{subjects, Deps, IntentAgent, Load, Role};
use ben_intent::Settings;
use ben_wire::pb;
use prost::Message;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::UnixListener;
use tokio::sync::mpsc;

/// Beekeeper as the sidecar reaches it; `None` means Beekeeper is down.
pub type BeekeeperHandle = Arc<Mutex<Option<Beekeeper>>>;

#[derive(Clone)]
pub struct Config {
    pub socket: PathBuf,
    pub beekeeper: BeekeeperHandle,
    /// Selectors added by the operator (e.g. the demo app), on top of the
    /// bundle's `[[apps]]`.
    pub extra_selectors: Vec<Selector>,
    /// Largest record accepted, bytes.
    pub max_record_bytes: usize,
    /// Where the revoked subjects are kept (`<id>.revoked-bees`); `None`:
    /// in memory only.
    pub state_dir: Option<PathBuf>,
}

/// Sidecar → control: signed `BeeRoster` (`ben_control::bees::ROSTER`).
pub const ROSTER: &str = "ben.bee.roster";
/// Control → sidecars: signed `BeeRevocations` (`ben_control::bees::REVOKED`).
pub const REVOKED: &str = "ben.bee.revoked";

/// One open, attested connection: its current BEE and how to drop it.
struct Conn {
    bee: pb::IssuedBee,
    drop: Arc<tokio::sync::Notify>,
}

/// Open connections by a per-process number.
#[derive(Default)]
struct Conns {
    next: AtomicU64,
    open: Mutex<BTreeMap<u64, Conn>>,
    /// Woken when the roster changes.
    changed: tokio::sync::Notify,
}

fn issued(b: &ben_bee::Bee, exe: &str) -> pb::IssuedBee {
    pb::IssuedBee {
        subject: b.claims.subject(),
        app: b.claims.app.clone(),
        serial: b.claims.serial,
        pid: b.claims.pid,
        uid: b.claims.uid,
        exe: exe.to_string(),
        issued_ns: b.claims.issued_ns,
        expires_ns: b.claims.expires_ns,
    }
}

fn revocations_file(cfg: &Config, id: &str) -> Option<PathBuf> {
    cfg.state_dir
        .as_ref()
        .map(|d| d.join(format!("{id}.revoked-bees")))
}

/// Reads the kept list (one subject a line; none when missing).
fn read_revoked(path: &std::path::Path) -> Result<Vec<String>, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(format!(
            "reading revoked BEE subjects {}: {e}",
            path.display()
        )),
    }
}

/// Adds `subjects` to the kept list (atomically, 0600).
fn keep_revoked(path: &std::path::Path, subjects: &[String]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut all = read_revoked(path)?;
    all.extend(subjects.iter().cloned());
    all.sort();
    all.dedup();
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    f.write_all(all.join("\n").as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Applies a revocation list: new subjects are kept, given to Beekeeper,
/// and their connections dropped.
fn apply_revocations(cfg: &Config, id: &str, conns: &Conns, subjects: &[String]) {
    let fresh: Vec<String> = {
        let Ok(mut guard) = cfg.beekeeper.lock() else {
            return;
        };
        let Some(keeper) = guard.as_mut() else {
            return;
        };
        subjects
            .iter()
            .filter(|s| !keeper.is_revoked(s))
            .cloned()
            .collect()
    };
    if fresh.is_empty() {
        return;
    }
    // Kept first: a crash right after still refuses on restart.
    if let Some(path) = revocations_file(cfg, id) {
        if let Err(e) = keep_revoked(&path, &fresh) {
            tracing::warn!("{e}");
        }
    }
    if let Ok(mut guard) = cfg.beekeeper.lock() {
        if let Some(keeper) = guard.as_mut() {
            for s in &fresh {
                keeper.revoke_subject(s);
            }
        }
    }
    if let Ok(open) = conns.open.lock() {
        for c in open.values().filter(|c| fresh.contains(&c.bee.subject)) {
            c.drop.notify_one();
        }
    }
}

/// Sends this sidecar's roster on each change and every 2 s.
async fn send_rosters(deps: Deps, conns: Arc<Conns>) {
    loop {
        let bees: Vec<pb::IssuedBee> = conns
            .open
            .lock()
            .map(|o| o.values().map(|c| c.bee.clone()).collect())
            .unwrap_or_default();
        let roster = pb::BeeRoster {
            sidecar: deps.id.clone(),
            at_ns: deps.clock.now_ns(),
            bees,
        };
        let _ = deps
            .bus
            .publish(ROSTER, deps.signer.seal_bytes(&roster))
            .await;
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(2), conns.changed.notified()).await;
    }
}

/// What the sidecar runs: schemas, contracts, and the apps they serve.
pub struct SidecarIntent {
    pub program: Program,
    pub settings: Settings,
}

pub struct SidecarRole;

impl Role for SidecarRole {
    const NAME: &'static str = "sidecar";
    type Compiled = SidecarIntent;
    fn compile(
        &self,
        arts: &BTreeMap<String, Vec<u8>>,
        _version: &str,
    ) -> Result<SidecarIntent, String> {
        let program = program_from_artifacts(arts).map_err(|e| e.to_string())?;
        let settings =
            Settings::from_artifact(arts.get("settings").ok_or("no settings artifact")?)?;
        for app in &settings.apps {
            if program.contract(&app.contract).is_none() {
                return Err(format!(
                    "app {} names contract {}, which is not in this version",
                    app.name, app.contract
                ));
            }
        }
        Ok(SidecarIntent { program, settings })
    }
}

/// Counters for status lines and tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub refused_connections: AtomicU64,
    pub signals_delivered: AtomicU64,
    /// Connections that closed in the middle of a frame: the app went away
    /// while sending (nothing in that frame was accepted, and the app was
    /// told nothing was). Not a dead letter: no message was malformed.
    pub cut_off: AtomicU64,
}

type Subscribers = Arc<Mutex<BTreeMap<String, Vec<mpsc::Sender<pb::Signal>>>>>;

fn frame(body: pb::app_frame::Body) -> pb::AppFrame {
    pb::AppFrame { body: Some(body) }
}

fn selectors(cfg: &Config, intent: Option<&SidecarIntent>) -> Vec<Selector> {
    let mut out = cfg.extra_selectors.clone();
    if let Some(i) = intent {
        for a in &i.settings.apps {
            out.push(Selector {
                app: a.name.clone(),
                uid: a.selector.uid,
                gid: a.selector.gid,
                exe: a.selector.exe.clone(),
                exe_blake3: a.selector.exe_blake3.clone(),
            });
        }
    }
    out
}

/// Runs the sidecar until the bus closes or the socket fails.
pub async fn run(
    cfg: Config,
    deps: Deps,
    load: Arc<Load>,
    stats: Arc<Stats>,
) -> Result<(), String> {
    let agent = IntentAgent::new(deps.clone(), SidecarRole);
    let active = agent.active.clone();
    tokio::spawn(agent.clone().run());
    agent.ready().await;
    let _heartbeats =
        ben_component::start_heartbeats(&deps, "sidecar", active.clone(), load.clone());
    let _ = std::fs::remove_file(&cfg.socket);
    if let Some(dir) = cfg.socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    // Revocations kept from before, then those control sends.
    let conns = Arc::new(Conns::default());
    if let Some(path) = revocations_file(&cfg, &deps.id) {
        let kept = read_revoked(&path)?;
        if let Ok(mut guard) = cfg.beekeeper.lock() {
            if let Some(keeper) = guard.as_mut() {
                for s in &kept {
                    keeper.revoke_subject(s);
                }
            }
        }
    }
    let mut revoked_sub = deps
        .bus
        .subscribe(REVOKED, None)
        .await
        .map_err(|e| e.to_string())?;
    {
        let (cfg, deps, conns) = (cfg.clone(), deps.clone(), conns.clone());
        tokio::spawn(async move {
            while let Some(m) = revoked_sub.next().await {
                match ben_wire::open_bytes::<pb::BeeRevocations>(&m.payload, &deps.keyring) {
                    Ok(v) => apply_revocations(&cfg, &deps.id, &conns, &v.into_inner().subjects),
                    Err(e) => {
                        deps.dead_letter(&m.subject, e.to_string(), m.payload.len())
                            .await
                    }
                }
            }
        });
    }
    tokio::spawn(send_rosters(deps.clone(), conns.clone()));
    let listener = UnixListener::bind(&cfg.socket)
        .map_err(|e| format!("binding {}: {e}", cfg.socket.display()))?;
    // Any process that reaches the socket may ask: attestation (kernel
    // facts against the declared selectors) decides who gets a BEE. Who
    // reaches it is the directory's business (the private data dir by
    // default; `ben up --socket` for apps of other users).
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg.socket, std::fs::Permissions::from_mode(0o666))
            .map_err(|e| format!("opening {} to apps: {e}", cfg.socket.display()))?;
    }
    let subs: Subscribers = Arc::new(Mutex::new(BTreeMap::new()));
    // Signals for any app: verify, then hand to that app's connections.
    let mut sig_sub = deps
        .bus
        .subscribe("ben.signal.*", None)
        .await
        .map_err(|e| e.to_string())?;
    {
        let subs = subs.clone();
        let deps = deps.clone();
        let stats = stats.clone();
        let load = load.clone();
        tokio::spawn(async move {
            while let Some(m) = sig_sub.next().await {
                match ben_wire::open_bytes::<pb::Signal>(&m.payload, &deps.keyring) {
                    Ok(v) => {
                        let s = v.into_inner();
                        // The sidecar's ages are its signals': from the
                        // triggering record's arrival to the app.
                        if s.at_ns > 0 {
                            load.ages.record(deps.clock.now_ns() - s.at_ns, 1);
                        }
                        let targets = subs
                            .lock()
                            .map(|g| g.get(&s.app).cloned().unwrap_or_default())
                            .unwrap_or_default();
                        for t in targets {
                            if t.send(s.clone()).await.is_ok() {
                                stats.signals_delivered.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    // Forged, or signed by a role that may not signal
                    // (invariant 8): dead-lettered, never delivered.
                    Err(e) => {
                        deps.dead_letter_of(&m.subject, e.to_string(), m.payload.len(), &m.payload)
                            .await
                    }
                }
            }
        });
    }
    loop {
        let (stream, _) = listener
            .accept()
            .await
            .map_err(|e| format!("accepting on {}: {e}", cfg.socket.display()))?;
        let (cfg, deps, active, subs, stats, load, conns) = (
            cfg.clone(),
            deps.clone(),
            active.clone(),
            subs.clone(),
            stats.clone(),
            load.clone(),
            conns.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = serve(stream, cfg, deps, active, subs, stats, load, conns).await {
                tracing::debug!("app connection ended: {e}");
            }
        });
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    stream: tokio::net::UnixStream,
    cfg: Config,
    deps: Deps,
    active: Arc<ben_component::Active<SidecarIntent>>,
    subs: Subscribers,
    stats: Arc<Stats>,
    load: Arc<Load>,
    conns: Arc<Conns>,
) -> Result<(), String> {
    let facts = PeerFacts::of(&stream);
    let (mut r, mut w) = stream.into_split();
    let refuse = |reason: String| frame(pb::app_frame::Body::Refused(pb::Refused { reason }));
    let hello = match tokio::time::timeout(std::time::Duration::from_secs(5), read_frame(&mut r))
        .await
    {
        Ok(Ok(Some(pb::AppFrame {
            body: Some(pb::app_frame::Body::Hello(h)),
        }))) => h,
        Ok(Ok(_)) | Err(_) => {
            stats.refused_connections.fetch_add(1, Ordering::Relaxed);
            let _ = write_frame(&mut w, &refuse("expected Hello as the first frame".into())).await;
            return Err("no hello".into());
        }
        Ok(Err(e)) => {
            stats.refused_connections.fetch_add(1, Ordering::Relaxed);
            let _ = write_frame(&mut w, &refuse(e.to_string())).await;
            return Err(e.to_string());
        }
    };
    let app = hello.app.clone();
    // Attest: kernel facts + this app's selectors; fail closed.
    let attest = |now: i64| -> Result<(ben_bee::Bee, ben_wire::pb::Welcome), String> {
        let facts = facts.clone().map_err(|e| e.to_string())?;
        let loaded = active.load();
        let sels: Vec<Selector> = selectors(&cfg, loaded.as_ref().map(|l| &l.compiled))
            .into_iter()
            .filter(|s| s.app == app)
            .collect();
        let mut guard = cfg
            .beekeeper
            .lock()
            .map_err(|_| "Beekeeper is unavailable".to_string())?;
        let keeper = guard
            .as_mut()
            .ok_or("Beekeeper is down; no BEE can be issued")?;
        keeper.set_selectors(sels);
        let bee = keeper.attest(&facts, now).map_err(|e| e.to_string())?;
        let welcome = pb::Welcome {
            app: app.clone(),
            bee_subject: bee.claims.subject(),
            expires_ns: bee.claims.expires_ns,
            bee: bee.token.clone(),
            intent_version: loaded.map(|l| l.version.clone()).unwrap_or_default(),
        };
        Ok((bee, welcome))
    };
    let (mut bee, welcome) = match attest(deps.clock.now_ns()) {
        Ok(x) => x,
        Err(reason) => {
            stats.refused_connections.fetch_add(1, Ordering::Relaxed);
            let _ = write_frame(&mut w, &refuse(format!("attestation failed: {reason}"))).await;
            return Err(reason);
        }
    };
    write_frame(&mut w, &frame(pb::app_frame::Body::Welcome(welcome)))
        .await
        .map_err(|e| e.to_string())?;
    // On the roster until it closes; a revocation wakes `dropped`.
    let exe = facts.as_ref().map(|f| f.exe.clone()).unwrap_or_default();
    let conn_id = conns.next.fetch_add(1, Ordering::Relaxed);
    let dropped = Arc::new(tokio::sync::Notify::new());
    if let Ok(mut open) = conns.open.lock() {
        open.insert(
            conn_id,
            Conn {
                bee: issued(&bee, &exe),
                drop: dropped.clone(),
            },
        );
    }
    conns.changed.notify_one();
    struct Leave(Arc<Conns>, u64);
    impl Drop for Leave {
        fn drop(&mut self) {
            if let Ok(mut open) = self.0.open.lock() {
                open.remove(&self.1);
            }
            self.0.changed.notify_one();
        }
    }
    let _leave = Leave(conns.clone(), conn_id);
    // Signals for this app go out through this connection's writer task.
    let (sig_tx, mut sig_rx) = mpsc::channel::<pb::Signal>(1024);
    let (out_tx, mut out_rx) = mpsc::channel::<pb::AppFrame>(1024);
    if let Ok(mut g) = subs.lock() {
        g.entry(app.clone()).or_default().push(sig_tx);
    }
    let writer = tokio::spawn(async move {
        loop {
            tokio::select! {
                f = out_rx.recv() => match f { Some(f) => if write_frame(&mut w, &f).await.is_err() { break }, None => break },
                s = sig_rx.recv() => match s { Some(s) => if write_frame(&mut w, &frame(pb::app_frame::Body::Signal(s))).await.is_err() { break }, None => break },
            }
        }
    });
    let result = async {
        loop {
            let read = tokio::select! {
                f = read_frame(&mut r) => f,
                _ = dropped.notified() => {
                    stats.refused_connections.fetch_add(1, Ordering::Relaxed);
                    let _ = out_tx
                        .send(refuse(format!(
                            "BEE revoked: subject {} was revoked by an operator; this connection is closed",
                            bee.claims.subject()
                        )))
                        .await;
                    return Err("BEE revoked".into());
                }
            };
            let f = match read {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e @ ben_client::ClientError::CutOff { .. }) => {
                    stats.cut_off.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("app {app}: {e}");
                    return Ok(());
                }
                Err(e) => {
                    let _ = out_tx.send(refuse(format!("bad frame: {e}"))).await;
                    deps.dead_letter("app.socket", format!("app {app}: bad frame: {e}"), 0)
                        .await;
                    return Err(e.to_string());
                }
            };
            let Some(pb::app_frame::Body::Records(batch)) = f.body else {
                let _ = out_tx.send(refuse("expected Records".into())).await;
                return Err("unexpected frame".into());
            };
            let now = deps.clock.now_ns();
            // The BEE must verify for this connection's process, unexpired.
            let check = {
                let facts = facts.clone().map_err(|e| e.to_string())?;
                let guard = cfg
                    .beekeeper
                    .lock()
                    .map_err(|_| "Beekeeper is unavailable".to_string())?;
                match guard.as_ref() {
                    Some(k) => k.verify(&batch.bee, &facts, now).map_err(|e| e.to_string()),
                    None => Err("Beekeeper is down; BEEs cannot be checked".to_string()),
                }
            };
            if let Err(reason) = check {
                stats.refused_connections.fetch_add(1, Ordering::Relaxed);
                let _ = out_tx.send(refuse(format!("BEE refused: {reason}"))).await;
                return Err(reason);
            }
            let accepted =
                forward(&deps, &cfg, &active, &app, &bee, &batch, now, &stats, &load).await;
            let _ = out_tx
                .send(frame(pb::app_frame::Body::Accepted(accepted)))
                .await;
            if bee.should_rotate(now) {
                if let Ok((b, welcome)) = attest(now) {
                    bee = b;
                    if let Ok(mut open) = conns.open.lock() {
                        if let Some(c) = open.get_mut(&conn_id) {
                            c.bee = issued(&bee, &exe);
                        }
                    }
                    conns.changed.notify_one();
                    let _ = out_tx
                        .send(frame(pb::app_frame::Body::Welcome(welcome)))
                        .await;
                }
            }
        }
    }
    .await;
    drop(out_tx);
    let _ = writer.await;
    result
}

/// What the sidecar stamps on every record it forwards.
pub struct Envelope<'a> {
    pub id: String,
    pub intent_version: &'a str,
    pub bee_subject: &'a str,
    pub app: &'a str,
    pub received_ns: i64,
}

/// One app record → the record the sidecar forwards: size limit, JSON,
/// the contract (index `contract` in `program`) into the global schema,
/// field values encoded in slot order ([`ben_bitspec::codec`]). `Err` is
/// the reason given back to the app.
pub fn translate(
    program: &Program,
    contract: usize,
    raw: &[u8],
    max_record_bytes: usize,
    env: Envelope<'_>,
) -> Result<pb::Record, String> {
    if raw.len() > max_record_bytes {
        return Err(format!(
            "record is {} bytes, over the {max_record_bytes}-byte limit",
            raw.len()
        ));
    }
    let json = Json::parse(raw).map_err(|e| format!("not JSON: {e}"))?;
    let c = program
        .contracts
        .get(contract)
        .ok_or_else(|| format!("contract #{contract} is not in this intent version"))?;
    let values = interp::translate(program, c, &json).map_err(|e| e.to_string())?;
    let schema = &program.schemas[c.schema];
    Ok(pb::Record {
        id: env.id,
        schema: schema.name.clone(),
        schema_version: schema.version,
        intent_version: env.intent_version.to_string(),
        bee_subject: env.bee_subject.to_string(),
        app: env.app.to_string(),
        received_ns: env.received_ns,
        values: ben_bitspec::codec::to_bytes(&values),
        ..Default::default()
    })
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    deps: &Deps,
    cfg: &Config,
    active: &ben_component::Active<SidecarIntent>,
    app: &str,
    bee: &ben_bee::Bee,
    batch: &pb::Records,
    now: i64,
    stats: &Stats,
    load: &Load,
) -> pb::Accepted {
    let mut acc = pb::Accepted {
        batch: batch.batch,
        accepted: 0,
        errors: vec![],
    };
    if !deps.bus.connected() {
        // Told, not lost: a record accepted now could only wait in the
        // client's buffer for a server that may not come back.
        let reason = "the sidecar cannot reach the bus (NATS is down or unreachable); nothing in this batch was forwarded; send it again".to_string();
        stats
            .rejected
            .fetch_add(batch.records.len() as u64, Ordering::Relaxed);
        acc.errors = (0..batch.records.len() as u64)
            .map(|index| pb::RecordError {
                index,
                reason: reason.clone(),
            })
            .collect();
        return acc;
    }
    let loaded = active.load();
    let contract = loaded.as_ref().and_then(|l| {
        let c = l
            .compiled
            .settings
            .apps
            .iter()
            .find(|a| a.name == app)?
            .contract
            .clone();
        l.compiled.program.contract(&c).map(|i| (l.clone(), i))
    });
    let bee_subject = bee.claims.subject();
    let mut out = pb::RecordBatch {
        records: Vec::with_capacity(batch.records.len()),
    };
    for (i, raw) in batch.records.iter().enumerate() {
        let res = contract
            .as_ref()
            .ok_or_else(|| format!("no active intent declares a contract for app {app}; deploy a bundle that lists it under [[apps]]"))
            .and_then(|(l, ci)| {
                translate(
                    &l.compiled.program,
                    *ci,
                    raw,
                    cfg.max_record_bytes,
                    Envelope {
                        id: format!("{}-{}-{}", bee.claims.serial, batch.batch, i),
                        intent_version: &l.version,
                        bee_subject: &bee_subject,
                        app,
                        received_ns: now,
                    },
                )
            });
        match res {
            Ok(rec) => out.records.push(rec),
            Err(reason) => {
                stats.rejected.fetch_add(1, Ordering::Relaxed);
                deps.dead_letter(
                    subjects::PROXY,
                    format!("app {app} record {i} of batch {}: {reason}", batch.batch),
                    raw.len(),
                )
                .await;
                acc.errors.push(pb::RecordError {
                    index: i as u64,
                    reason,
                });
            }
        }
    }
    if out.records.is_empty() {
        return acc;
    }
    // Accepted only once forwarded: a batch the bus refuses is counted
    // (`Load::publish_errors`) and each of its records is an error the
    // app is told about, never a record dropped after "accepted".
    let n = out.records.len() as u64;
    let sent = ben_component::Publish::new(subjects::PROXY, out.encode_to_vec())
        .send(deps.bus.as_ref(), &load.publish_errors)
        .await;
    if sent {
        acc.accepted += n;
        stats.accepted.fetch_add(n, Ordering::Relaxed);
        load.processed.fetch_add(n, Ordering::Relaxed);
    } else {
        stats.rejected.fetch_add(n, Ordering::Relaxed);
        let reason = "the sidecar could not forward this batch (the bus refused it); nothing of it was accepted; send it again".to_string();
        let mut refused = vec![false; batch.records.len()];
        for e in &acc.errors {
            if let Some(r) = refused.get_mut(e.index as usize) {
                *r = true;
            }
        }
        acc.errors.extend(
            (0..batch.records.len() as u64)
                .filter(|i| !refused[*i as usize])
                .map(|index| pb::RecordError {
                    index,
                    reason: reason.clone(),
                }),
        );
        acc.errors.sort_by_key(|e| e.index);
    }
    acc
}
