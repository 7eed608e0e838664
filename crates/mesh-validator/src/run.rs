//! One validator: the consensus core driven by its links, its mempool fed
//! with verified anomalies, committed blocks run through the state machine
//! and reported, and what must survive a crash kept in its directory:
//!
//! * `safety` — the safety state, written (to a temporary file, fsynced,
//!   renamed) **before** any message of the same step leaves (DESIGN.md
//!   §4, invariant 9);
//! * `store` — the block store (last commit, uncommitted blocks, highest
//!   QC and TC), rewritten after a step that changed it;
//! * `chain` — every committed block, appended (length-prefixed), replayed
//!   through the state machine at start.
//!
//! It loads all three before it opens its links.

use crate::link::{LinkConfig, Links};
use crate::mempool::{Mempool, Offered};
use crate::persist::{Persistence, Record, Status, Target};
use crate::state::{self, Policy, StateMachine};
use ben_mesh_consensus::{
    wire, Action, Block, Config, Durable, Ed25519, Hash, Height, Millis, Node,
};
use ben_mesh_detect::wire::AnomalyEvent;
use ben_time::Clock;
use ben_wire::{Keyring, Verified};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Everything a validator runs with.
#[derive(Clone)]
pub struct Settings {
    /// Consensus settings (its index is `consensus.me`).
    pub consensus: Config,
    /// State machine settings (the same on every validator).
    pub state: state::Config,
    /// Its links.
    pub link: LinkConfig,
    /// Where its files live.
    pub dir: PathBuf,
    /// Mempool bound.
    pub mempool: usize,
    /// The chain's name (its genesis).
    pub chain: String,
    /// Where committed blocks are written (none: only its own files).
    pub database: Option<Target>,
    /// What comes in on the anomalies channel.
    pub intake: Intake,
}

/// What a validator takes into its mempool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Intake {
    /// Signed anomalies, each verified first (what runs).
    #[default]
    Anomalies,
    /// Opaque transactions, unverified, keyed by their digest: consensus
    /// measured alone (`ben bench consensus`). The state machine refuses
    /// every one of them; blocks still carry and commit them.
    BenchRaw,
}

/// The id an anomaly envelope names, read without verifying it (for
/// telling the AI service which of its anomalies a block refused).
fn anomaly_id(tx: &[u8]) -> Option<String> {
    use prost::Message;
    let env = ben_wire::pb::SignedEnvelope::decode(tx).ok()?;
    let ev = AnomalyEvent::decode(&env.payload[..]).ok()?;
    (!ev.id.is_empty() && ev.id.len() <= 128).then_some(ev.id)
}

/// A committed block, as the state machine saw it.
#[derive(Clone, Debug)]
pub struct Committed {
    /// Its height.
    pub height: Height,
    /// Its time.
    pub time: Millis,
    /// Its id.
    pub block: Hash,
    /// Anomalies it committed.
    pub admitted: Vec<String>,
    /// Transactions refused, with the reason.
    pub refused: Vec<(usize, String)>,
    /// Refused anomalies whose id could be read: id and reason.
    pub rejected: Vec<(String, String)>,
    /// Policies created or extended.
    pub policies: Vec<Policy>,
    /// Policies that expired.
    pub expired: Vec<String>,
    /// State root after it.
    pub root: Hash,
    /// The block, encoded (`ben_mesh_consensus::wire::encode_block`).
    pub block_bytes: Vec<u8>,
    /// The QC certifying it.
    pub qc: ben_mesh_consensus::QuorumCert,
    /// Every validator's reputation after it, by index.
    pub reputation: Vec<(u16, state::Reputation)>,
}

/// Counters a running validator keeps.
#[derive(Default)]
pub struct Counters {
    /// Anomalies refused before the mempool (signature, role, malformed).
    pub anomalies_refused: AtomicU64,
    /// Anomalies offered that were already waiting or committed.
    pub duplicates: AtomicU64,
    /// Anomalies let go or refused because the mempool was full.
    pub mempool_full: AtomicU64,
    /// Equivocation evidence held.
    pub equivocations: AtomicU64,
    /// The current round.
    pub round: AtomicU64,
    /// The committed height.
    pub height: AtomicU64,
    /// Commit announcements the bus refused.
    pub publish_errors: AtomicU64,
    /// The persistence worker's report (when it has one).
    pub persist: std::sync::OnceLock<Arc<Status>>,
}

/// Why a validator stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("validator files in {dir}: {error}")]
    Files { dir: PathBuf, error: String },
    #[error("validator links: {0}")]
    Links(std::io::Error),
    #[error("{0}")]
    Database(String),
}

fn files(dir: &Path, error: impl ToString) -> RunError {
    RunError::Files {
        dir: dir.to_path_buf(),
        error: error.to_string(),
    }
}

/// Writes `bytes` to `path` durably (temporary file, fsynced, renamed
/// over it, directory fsynced), only this user reading it.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    ben_control::private::replace(path, bytes)
}

/// What the directory holds: the durable state, and the committed chain.
fn load(dir: &Path, genesis: &Block) -> Result<(Durable, Vec<Block>), RunError> {
    ben_control::private::dir(dir).map_err(|e| files(dir, e))?;
    let mut d = match std::fs::read(dir.join("store")) {
        Ok(b) => wire::decode_durable(&b).map_err(|e| files(dir, format!("store: {e}")))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Durable::genesis(genesis),
        Err(e) => return Err(files(dir, e)),
    };
    match std::fs::read(dir.join("safety")) {
        Ok(b) => {
            d.safety = wire::decode_safety(&b).map_err(|e| files(dir, format!("safety: {e}")))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(files(dir, e)),
    }
    let mut chain = vec![];
    match std::fs::read(dir.join("chain")) {
        Ok(b) => {
            let mut at = 0;
            while at + 4 <= b.len() {
                let n = u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize;
                let Some(bytes) = b.get(at + 4..at + 4 + n) else {
                    break;
                };
                chain.push(
                    wire::decode_block(bytes).map_err(|e| files(dir, format!("chain: {e}")))?,
                );
                at += 4 + n;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(files(dir, e)),
    }
    // A block appended, then re-committed after a crash before the store
    // caught up, is in the file twice: the first copy counts.
    let mut seen = std::collections::HashSet::new();
    chain.retain(|b| seen.insert(b.height));
    // The chain file is appended before the store is rewritten: it may
    // run ahead of the store's root, never behind.
    d.committed = chain
        .iter()
        .rev()
        .filter(|b| b.height < d.root.block.height)
        .take(1_024)
        .cloned()
        .collect();
    chain.retain(|b| b.height <= d.root.block.height);
    Ok((d, chain))
}

fn reputation(sm: &StateMachine) -> Vec<(u16, state::Reputation)> {
    sm.reputation()
        .iter()
        .map(|(k, v)| (*k, v.clone()))
        .collect()
}

/// An anomaly offered to the validator: its signed envelope's bytes (as on
/// `ai.anomalies.v1`) and, when whoever took it off the bus has already
/// checked the signature, what that check returned, so it is not checked
/// again (each check is ~40 µs of a core, per validator).
pub struct Offer {
    pub bytes: Vec<u8>,
    pub opened: Option<Verified<AnomalyEvent>>,
}

impl From<Vec<u8>> for Offer {
    /// Bytes not checked yet: the validator checks them.
    fn from(bytes: Vec<u8>) -> Offer {
        Offer {
            bytes,
            opened: None,
        }
    }
}

/// Runs validator `s.consensus.me` until `stop` fires (or its sender is
/// dropped): anomalies arrive on `anomalies`, each committed block is
/// reported on `commits`.
pub async fn run(
    s: Settings,
    keyring: Arc<Keyring>,
    mut anomalies: mpsc::Receiver<Offer>,
    commits: mpsc::Sender<Committed>,
    clock: Arc<dyn Clock>,
    counters: Arc<Counters>,
    mut stop: oneshot::Receiver<()>,
) -> Result<(), RunError> {
    let genesis = Block::genesis(&s.chain);
    let (durable, chain) = load(&s.dir, &genesis)?;
    let mut sm = StateMachine::new(s.state.clone(), keyring.clone());
    let persist = match &s.database {
        Some(t) => Some(Persistence::start(t).await.map_err(RunError::Database)?),
        None => None,
    };
    if let Some(p) = &persist {
        let _ = counters.persist.set(p.status.clone());
    }
    for b in &chain {
        if b.height == sm.height() + 1 {
            let a = sm.apply(b);
            // Blocks committed but not yet written when it stopped: the
            // chain file has them, so none is skipped.
            if let Some(p) = persist.as_ref().filter(|p| b.height > p.start_height) {
                p.push(Record::new(b, &a, reputation(&sm)))
                    .await
                    .map_err(RunError::Database)?;
            }
        }
    }
    let mut store = durable.clone();
    let mut chain_file =
        ben_control::private::append(&s.dir.join("chain")).map_err(|e| files(&s.dir, e))?;
    let mut pool = Mempool::new(s.mempool);
    let crypto = Ed25519::new(s.link.secret, s.link.keys.clone());
    let mut node = Node::new(s.consensus.clone(), crypto, &genesis, durable);
    // Safety state loaded; now the network.
    let (links, mut inbound) = Links::start(LinkConfig {
        chain: genesis.id,
        ..s.link.clone()
    })
    .await
    .map_err(RunError::Links)?;
    let now = || (clock.now_ns() / 1_000_000).max(0) as Millis;
    let mut out = vec![];
    node.start(now(), &mut pool, &mut out);
    let mut applied_to = sm.height();
    // Envelopes the mempool opened, by digest of their bytes.
    let mut opened: std::collections::HashMap<[u8; 32], ben_wire::Verified<AnomalyEvent>> =
        std::collections::HashMap::new();
    loop {
        let mut step = std::mem::take(&mut out);
        let mut dirty = false;
        for a in step.drain(..) {
            match a {
                Action::PersistSafety(st) => {
                    // Invariant 9: durable before anything after it leaves.
                    write_durably(&s.dir.join("safety"), &wire::encode_safety(&st))
                        .map_err(|e| files(&s.dir, format!("writing the safety state: {e}")))?;
                    store.safety = st;
                }
                Action::StoreBlock(b) => {
                    store.blocks.push(b);
                    dirty = true;
                }
                Action::StoreQc(q) => {
                    store.hqc = Some(q);
                    dirty = true;
                }
                Action::StoreTc(t) => {
                    store.htc = Some(t);
                    dirty = true;
                }
                Action::Send { to, msg } => links.send(to, &msg),
                Action::Broadcast(msg) => links.broadcast(&msg),
                Action::Commit { block, qc, cert } => {
                    if block.height <= applied_to {
                        continue;
                    }
                    let bytes = wire::encode_block(&block);
                    chain_file
                        .write_all(&(bytes.len() as u32).to_be_bytes())
                        .and_then(|_| chain_file.write_all(&bytes))
                        .and_then(|_| chain_file.sync_data())
                        .map_err(|e| {
                            files(&s.dir, format!("appending block {}: {e}", block.height))
                        })?;
                    let a =
                        sm.apply_with(&block, &mut |tx| opened.remove(blake3::hash(tx).as_bytes()));
                    applied_to = block.height;
                    pool.remove_committed(a.admitted.iter().map(String::as_str));
                    counters.height.store(block.height, Ordering::Relaxed);
                    let report = Committed {
                        height: block.height,
                        time: block.time,
                        block: block.id,
                        admitted: a.admitted.clone(),
                        rejected: a
                            .refused
                            .iter()
                            .filter_map(|(i, why)| {
                                anomaly_id(block.payload.get(*i)?).map(|id| (id, why.clone()))
                            })
                            .collect(),
                        refused: a.refused.clone(),
                        policies: a.policies.clone(),
                        expired: a.expired.clone(),
                        root: a.root,
                        block_bytes: bytes,
                        qc: qc.clone(),
                        reputation: reputation(&sm),
                    };
                    if let Some(p) = &persist {
                        // Waits while the queue is full; a stop still stops.
                        tokio::select! {
                            _ = &mut stop => return Ok(()),
                            r = p.push(Record::new(&block, &a, report.reputation.clone())) => {
                                r.map_err(RunError::Database)?
                            }
                        }
                    }
                    store.blocks.retain(|b| b.height > block.height);
                    store.root = ben_mesh_consensus::Root { block, qc, cert };
                    dirty = true;
                    if commits.send(report).await.is_err() {
                        return Ok(());
                    }
                }
                Action::Equivocation { author, round, .. } => {
                    counters.equivocations.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        author,
                        round,
                        "validator proposed two blocks in one round; evidence kept"
                    );
                }
            }
        }
        if dirty {
            let mut snapshot = store.clone();
            snapshot.committed.clear();
            write_durably(&s.dir.join("store"), &wire::encode_durable(&snapshot))
                .map_err(|e| files(&s.dir, format!("writing the block store: {e}")))?;
        }
        counters.round.store(node.round(), Ordering::Relaxed);
        if let Some(p) = persist.as_ref().filter(|p| p.halted()) {
            // A block could not be written: no vote, no commit, until it
            // is (what arrives meanwhile waits in the links' queues or is
            // dropped there; the core fetches what it missed).
            tokio::select! {
                _ = &mut stop => return Ok(()),
                _ = p.until_running() => {}
            }
            continue;
        }
        let wake = node.next_wake().saturating_sub(now());
        tokio::select! {
            _ = &mut stop => return Ok(()),
            m = inbound.recv() => match m {
                Some((from, env)) => node.on_message(from, env, now(), &mut pool, &mut out),
                None => return Ok(()),
            },
            tx = anomalies.recv() => match tx {
                Some(Offer { bytes: tx, .. }) if s.intake == Intake::BenchRaw => {
                    let id = blake3::hash(&tx).to_hex();
                    if pool.offer(&id[..32], 1.0, tx) != Offered::Added {
                        counters.mempool_full.fetch_add(1, Ordering::Relaxed);
                    }
                    node.on_payload(now(), &mut pool, &mut out);
                }
                Some(Offer { bytes: tx, opened: None })
                    if state::kind_of(&tx).as_deref()
                        == Some(<ben_mesh_wire::PolicyRequest as ben_wire::Kind>::KIND) =>
                {
                    match ben_wire::open_bytes::<ben_mesh_wire::PolicyRequest>(&tx, &keyring) {
                        Ok(v) => {
                            let r = v.into_inner();
                            let needs = r
                                .anomalies
                                .into_iter()
                                .filter(|a| sm.anomaly(a).is_none())
                                .collect();
                            match pool.offer_request(&r.id, needs, tx) {
                                Offered::Duplicate => {
                                    counters.duplicates.fetch_add(1, Ordering::Relaxed);
                                }
                                Offered::Evicted(_) | Offered::Full => {
                                    counters.mempool_full.fetch_add(1, Ordering::Relaxed);
                                }
                                Offered::Added => {}
                            }
                            node.on_payload(now(), &mut pool, &mut out);
                        }
                        Err(e) => {
                            counters.anomalies_refused.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(error = %e, "policy request refused before the mempool");
                        }
                    }
                }
                Some(Offer { bytes: tx, opened: checked }) => match checked
                    .map_or_else(|| ben_wire::open_bytes::<AnomalyEvent>(&tx, &keyring), Ok)
                {
                    Ok(v) => {
                        let a = v.get();
                        let offered = pool.offer(&a.id, a.confidence, tx.clone());
                        if offered == Offered::Added {
                            // Kept for the state machine, so the signature is
                            // checked once (bounded: what waits longer is
                            // verified again when its block commits).
                            if opened.len() >= 2 * s.mempool {
                                opened.clear();
                            }
                            opened.insert(*blake3::hash(&tx).as_bytes(), v.clone());
                        }
                        match offered {
                            Offered::Duplicate => {
                                counters.duplicates.fetch_add(1, Ordering::Relaxed);
                            }
                            Offered::Full | Offered::Evicted(_) => {
                                counters.mempool_full.fetch_add(1, Ordering::Relaxed);
                            }
                            Offered::Added => {}
                        }
                        node.on_payload(now(), &mut pool, &mut out);
                    }
                    Err(e) => {
                        counters.anomalies_refused.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "anomaly refused before the mempool");
                    }
                },
                None => return Ok(()),
            },
            _ = tokio::time::sleep(std::time::Duration::from_millis(wake)) => {
                node.on_tick(now(), &mut pool, &mut out);
            }
        }
    }
}
