//! One validator: the consensus core driven by its links, its mempool fed
//! with verified anomalies, committed blocks run through the state machine
//! and reported, and what must survive a crash kept in its directory:
//!
//! * `safety.slots` — the safety state, written durably **before** any
//!   message of the same step leaves (DESIGN.md §4, invariant 9), into a
//!   [`Slots`] file: one data flush a write;
//! * `head.slots` — the block store's head (last commit as a header — its
//!   block is in `chain` — highest QC and TC), small, written the same way
//!   after a step that changed it;
//! * `blocks` — every block it stored, appended once (length-prefixed)
//!   and fsynced before the head that follows it; compacted to the
//!   uncommitted ones when it grows past [`BLOCK_LOG_COMPACT`] (a store
//!   that held whole blocks was rewritten, megabytes a step, on every
//!   step);
//! * `chain` — every committed block, appended (length-prefixed), replayed
//!   through the state machine at start. Appended without waiting for the
//!   disk (its writeback started at once): a committed block was already
//!   durable in `blocks`, so after a crash the blocks the chain file lost
//!   are taken from there (the chain file is flushed before `blocks` drops
//!   them when it is compacted).
//!
//! It loads them all before it opens its links. An earlier version's
//! `safety` and `store` (files replaced whole) are read when the slot
//! files are not there yet, and removed once the slot files hold them.

use crate::link::{LinkConfig, Links};
use crate::mempool::{Mempool, Offered};
use crate::persist::{Persistence, Record, Status, Target};
use crate::slots::Slots;
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

/// The id an anomaly or policy request envelope names, read without
/// verifying it (for telling the AI service which of its anomalies and
/// requests a block refused), and whether it is a request.
fn tx_id(tx: &[u8]) -> Option<(bool, String)> {
    use ben_wire::Kind;
    use prost::Message;
    let env = ben_wire::pb::SignedEnvelope::decode(tx).ok()?;
    let (request, id) = if env.kind == ben_mesh_wire::PolicyRequest::KIND {
        (
            true,
            ben_mesh_wire::PolicyRequest::decode(&env.payload[..])
                .ok()?
                .id,
        )
    } else if env.kind == AnomalyEvent::KIND {
        (false, AnomalyEvent::decode(&env.payload[..]).ok()?.id)
    } else {
        return None;
    };
    (!id.is_empty() && id.len() <= 128).then_some((request, id))
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
    /// Refused policy requests whose id could be read: id and reason.
    pub rejected_requests: Vec<(String, String)>,
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
    on_disk(|| ben_control::private::replace(path, bytes))
}

/// Runs `f` — writes that wait for the disk (fsync) — without holding up
/// the runtime's other tasks: on a multi-threaded runtime the worker hands
/// them to another thread meanwhile (`ben up` runs four validators and the
/// rest of the system on one runtime). A single-threaded runtime has no
/// other thread: `f` just runs.
fn on_disk<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Starts writing `len` bytes of `file` from `offset` to the disk without
/// waiting for them (Linux's `sync_file_range` with `WRITE`): no
/// durability promised, a later flush has less to wait for.
#[cfg(target_os = "linux")]
fn start_writeback(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain system call on an open descriptor; no memory is
    // passed.
    let r = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &std::fs::File, _: u64, _: u64) -> std::io::Result<()> {
    Ok(())
}

/// The block log is rewritten with only the uncommitted blocks when it
/// grows past this.
pub const BLOCK_LOG_COMPACT: u64 = 64 << 20;

/// The length-prefixed records of a file (a record cut short by a crash
/// ends them), each with the offset just past it.
fn frames(b: &[u8]) -> impl Iterator<Item = (&[u8], usize)> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let n = u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize;
        let bytes = b.get(at + 4..at + 4 + n)?;
        at += 4 + n;
        Some((bytes, at))
    })
}

/// The safety state's file, and the block store head's.
const SAFETY: &str = "safety.slots";
const HEAD: &str = "head.slots";

/// The newest record of slot file `name` in `dir`, or else the whole of
/// `earlier` (what an earlier version wrote instead), or nothing.
fn read_record(dir: &Path, name: &str, earlier: &str) -> Result<Option<Vec<u8>>, RunError> {
    if let Some(b) = Slots::read(&dir.join(name)).map_err(|e| files(dir, e))? {
        return Ok(Some(b));
    }
    match std::fs::read(dir.join(earlier)) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(files(dir, e)),
    }
}

/// Removes an earlier version's `safety` and `store` once the slot files
/// hold what was read from them: left behind, they would be read again
/// were a slot file lost, and an old safety state could sign a second
/// vote in a round.
fn retire_earlier_files(dir: &Path) -> Result<(), RunError> {
    let mut removed = false;
    for name in ["safety", "store"] {
        match std::fs::remove_file(dir.join(name)) {
            Ok(()) => removed = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(files(dir, format!("removing the earlier {name}: {e}"))),
        }
    }
    if removed {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| files(dir, e))?;
    }
    Ok(())
}

/// Committed blocks above `chain`'s last that the chain file lost in a
/// crash (it is appended without waiting for the disk), up to the root
/// the head names: found in the block log, which held each durably before
/// the head named it. Empty when they do not link up to the chain.
fn lost_commits(chain: &[Block], logged: &[Block], root: &Block, genesis: &Block) -> Vec<Block> {
    let last = chain.last().unwrap_or(genesis);
    let by_id: std::collections::HashMap<Hash, &Block> = logged.iter().map(|b| (b.id, b)).collect();
    let mut lost = vec![];
    let mut at = root.id;
    while let Some(b) = by_id.get(&at).filter(|b| b.height > last.height) {
        lost.push((*b).clone());
        at = b.parent;
    }
    lost.reverse();
    let links = lost
        .first()
        .is_some_and(|b| b.parent == last.id && b.height == last.height + 1);
    if links {
        lost
    } else {
        vec![]
    }
}

/// `bytes` as one length-prefixed record.
fn frame(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// `bytes` appended to `file` as one length-prefixed record.
fn append_frame(file: &mut std::fs::File, bytes: &[u8]) -> std::io::Result<()> {
    file.write_all(&(bytes.len() as u32).to_be_bytes())?;
    file.write_all(bytes)
}

/// `b` without its transactions.
fn header(b: &Block) -> Block {
    Block {
        id: b.id,
        round: b.round,
        height: b.height,
        parent: b.parent,
        qc: b.qc.clone(),
        author: b.author,
        time: b.time,
        payload: Default::default(),
    }
}

/// The head of the block store: everything but the blocks (the root as a
/// header: its block is in the chain file).
fn head(store: &Durable) -> Vec<u8> {
    let r = &store.root.block;
    let header = if r.height == 0 { r.clone() } else { header(r) };
    wire::encode_durable(&Durable {
        safety: store.safety.clone(),
        root: ben_mesh_consensus::Root {
            block: header,
            qc: store.root.qc.clone(),
            cert: store.root.cert.clone(),
        },
        blocks: vec![],
        committed: vec![],
        hqc: store.hqc.clone(),
        htc: store.htc.clone(),
    })
}

/// What the directory holds: the durable state, and the committed chain.
fn load(dir: &Path, genesis: &Block) -> Result<(Durable, Vec<Block>), RunError> {
    ben_control::private::dir(dir).map_err(|e| files(dir, e))?;
    let mut d = match read_record(dir, HEAD, "store")? {
        Some(b) => wire::decode_durable(&b).map_err(|e| files(dir, format!("{HEAD}: {e}")))?,
        None => Durable::genesis(genesis),
    };
    if let Some(b) = read_record(dir, SAFETY, "safety")? {
        d.safety = wire::decode_safety(&b).map_err(|e| files(dir, format!("{SAFETY}: {e}")))?;
    }
    let mut chain: Vec<Block> = vec![];
    let chain_path = dir.join("chain");
    let mut chain_file = ben_control::private::append(&chain_path).map_err(|e| files(dir, e))?;
    let b = std::fs::read(&chain_path).map_err(|e| files(dir, e))?;
    let mut whole = 0;
    for (bytes, end) in frames(&b) {
        chain.push(wire::decode_block(bytes).map_err(|e| files(dir, format!("chain: {e}")))?);
        whole = end;
    }
    if whole < b.len() {
        // A record cut short by a crash: what is appended next must
        // follow the last whole one.
        chain_file
            .set_len(whole as u64)
            .map_err(|e| files(dir, format!("chain: cutting a torn record: {e}")))?;
        tracing::warn!(
            kept = whole,
            cut = b.len() - whole,
            "the chain file ended in a record cut short by a crash: cut off"
        );
    }
    // A block appended, then re-committed after a crash before the store
    // caught up, is in the file twice: the first copy counts.
    let mut seen = std::collections::HashSet::new();
    chain.retain(|b| seen.insert(b.height));
    let mut logged = vec![];
    match std::fs::read(dir.join("blocks")) {
        Ok(b) => {
            for (bytes, _) in frames(&b) {
                logged.push(
                    wire::decode_block(bytes).map_err(|e| files(dir, format!("blocks: {e}")))?,
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(files(dir, e)),
    }
    let lost = lost_commits(&chain, &logged, &d.root.block, genesis);
    for b in &lost {
        append_frame(&mut chain_file, &wire::encode_block(b))
            .map_err(|e| files(dir, format!("chain: restoring block {}: {e}", b.height)))?;
    }
    if !lost.is_empty() {
        tracing::warn!(
            from = lost[0].height,
            to = d.root.block.height,
            "committed blocks the chain file lost in a crash restored from the block log"
        );
    }
    chain.extend(lost);
    // Durable before the block log is compacted (at start it keeps only
    // the uncommitted blocks).
    chain_file
        .sync_data()
        .map_err(|e| files(dir, format!("chain: {e}")))?;
    // The head names its root; the block is the chain file's (a store of
    // an earlier version held it whole, and its blocks too).
    if d.root.block.height > 0 {
        match chain.iter().find(|b| b.height == d.root.block.height) {
            Some(b) if b.id == d.root.block.id => d.root.block = b.clone(),
            Some(b) => {
                return Err(files(
                    dir,
                    format!(
                    "store: its last commit at height {} is block {}, the chain file has {} there",
                    b.height,
                    d.root.block.id.short(),
                    b.id.short()
                ),
                ))
            }
            None if d.root.block.compute_id(&genesis.id) == d.root.block.id => {}
            None => {
                return Err(files(
                    dir,
                    format!(
                        "store: its last commit, block {} at height {}, is not in the chain file",
                        d.root.block.id.short(),
                        d.root.block.height
                    ),
                ))
            }
        }
    }
    let mut ids: std::collections::HashSet<Hash> = d.blocks.iter().map(|b| b.id).collect();
    for block in logged {
        if block.height > d.root.block.height && ids.insert(block.id) {
            d.blocks.push(block);
        }
    }
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

/// Counts what the mempool did with an offer that did not add it.
fn count(counters: &Counters, offered: &Offered) {
    match offered {
        Offered::Duplicate => {
            counters.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        Offered::Full | Offered::Evicted(_) => {
            counters.mempool_full.fetch_add(1, Ordering::Relaxed);
        }
        Offered::Added => {}
    }
}

/// Offers taken off the anomalies channel in one go at most, and for how
/// long (offers not opened yet cost a signature check each; votes and
/// proposals should not wait behind many); they are opened [`BATCH`] at a
/// time, their signatures checked together.
const DRAIN: usize = 512;
const DRAIN_FOR: std::time::Duration = std::time::Duration::from_millis(2);
const BATCH: usize = 128;

/// What an offer goes into.
struct Inbox<'a> {
    pool: &'a mut Mempool,
    sm: &'a StateMachine,
    keyring: &'a Keyring,
    counters: &'a Counters,
}

/// Offers into the mempool: those not opened yet opened together
/// ([`state::open_rest`]), then each offered by its id; what the mempool
/// did not add is counted. Empties `offers`.
fn offer_all(s: &Settings, i: &mut Inbox<'_>, offers: &mut Vec<Offer>) {
    if s.intake == Intake::BenchRaw {
        for Offer { bytes: tx, .. } in offers.drain(..) {
            count(i.counters, &i.pool.offer_opaque(tx));
        }
        return;
    }
    let opened = state::open_rest(
        offers
            .iter_mut()
            .map(|o| (o.bytes.as_slice(), o.opened.take())),
        i.keyring,
    );
    for (o, t) in offers.drain(..).zip(opened) {
        offer(i, o.bytes, t);
    }
}

/// One opened offer into the mempool.
fn offer(i: &mut Inbox<'_>, tx: Vec<u8>, t: Result<state::Tx, (bool, ben_wire::WireError)>) {
    match t {
        Ok(state::Tx::Request(v)) => {
            let r = v.into_inner();
            let needs = r
                .anomalies
                .into_iter()
                .filter(|a| i.sm.anomaly(a).is_none())
                .collect();
            count(i.counters, &i.pool.offer_request(&r.id, needs, tx));
        }
        Ok(state::Tx::Anomaly(v)) => {
            // The envelope waits with it, for the state machine: its
            // signature is checked once.
            count(i.counters, &i.pool.offer_opened(tx, v));
        }
        Err((request, e)) => {
            i.counters.anomalies_refused.fetch_add(1, Ordering::Relaxed);
            if request {
                tracing::warn!(error = %e, "policy request refused before the mempool");
            } else {
                tracing::warn!(error = %e, "anomaly refused before the mempool");
            }
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
    let mut chain_len = chain_file
        .metadata()
        .map_err(|e| files(&s.dir, format!("chain: {e}")))?
        .len();
    let mut writeback_failed = false;
    // The block log starts as what the store holds (an earlier version's
    // store held its blocks itself).
    let log_path = s.dir.join("blocks");
    let mut log_bytes = {
        let mut b = vec![];
        for x in &store.blocks {
            frame(&mut b, &wire::encode_block(x));
        }
        write_durably(&log_path, &b).map_err(|e| files(&s.dir, format!("blocks: {e}")))?;
        b.len() as u64
    };
    let mut block_log = ben_control::private::append(&log_path).map_err(|e| files(&s.dir, e))?;
    // The slot files hold what was loaded from the start (from an earlier
    // version's files too, which are then no longer read).
    let slots = |name: &str, bytes: &[u8]| {
        Slots::open(&s.dir.join(name))
            .and_then(|mut f| f.write(bytes).map(|_| f))
            .map_err(|e| files(&s.dir, format!("{name}: {e}")))
    };
    let mut safety_file = slots(SAFETY, &wire::encode_safety(&store.safety))?;
    let mut head_file = slots(HEAD, &head(&store))?;
    retire_earlier_files(&s.dir)?;
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
    let timer = tokio::time::sleep(std::time::Duration::ZERO);
    tokio::pin!(timer);
    let mut timer_at: Millis = 0;
    // Blocks as they were encoded into the block log, by id, until they
    // commit (the chain file and the report take the same bytes).
    let mut encoded: std::collections::HashMap<Hash, (Height, Vec<u8>)> = Default::default();
    loop {
        let mut step = std::mem::take(&mut out);
        let mut dirty = false;
        let mut logged = false;
        let mut commits_due = vec![];
        for a in step.drain(..) {
            match a {
                Action::PersistSafety(st) => {
                    // Invariant 9: durable before anything after it leaves.
                    on_disk(|| safety_file.write(&wire::encode_safety(&st)))
                        .map_err(|e| files(&s.dir, format!("writing the safety state: {e}")))?;
                    store.safety = st;
                }
                Action::StoreBlock(b) => {
                    let enc = wire::encode_block(&b);
                    append_frame(&mut block_log, &enc)
                        .map_err(|e| files(&s.dir, format!("appending block {}: {e}", b.height)))?;
                    log_bytes += 4 + enc.len() as u64;
                    logged = true;
                    encoded.insert(b.id, (b.height, enc));
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
                    // Taken once the step's messages are on their way: a
                    // commit comes first in a step, before the vote or
                    // proposal that follows, and it waits for the disk.
                    commits_due.push((block, qc, cert));
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
        for (block, qc, cert) in commits_due.drain(..) {
            if block.height <= applied_to {
                pool.take_opened(&block.id);
                continue;
            }
            let bytes = match encoded.remove(&block.id) {
                Some((_, b)) => b,
                None => wire::encode_block(&block),
            };
            encoded.retain(|_, (h, _)| *h > block.height);
            // Not waited for: the block is durable in the block log, where
            // a crash's losses are taken back from (`lost_commits`).
            append_frame(&mut chain_file, &bytes)
                .map_err(|e| files(&s.dir, format!("appending block {}: {e}", block.height)))?;
            // Its writing to the disk started now, not waited for: the
            // flush before a compaction then finds little left (it found
            // 64 MiB and held the validator for 200 ms).
            let n = 4 + bytes.len() as u64;
            if let Err(e) = start_writeback(&chain_file, chain_len, n) {
                if !std::mem::replace(&mut writeback_failed, true) {
                    tracing::warn!(error = %e, "the chain file's writeback cannot be started early; compactions will wait for it");
                }
            }
            chain_len += n;
            let a = if s.intake == Intake::BenchRaw {
                // Opaque transactions: the state machine sees the
                // block without them (it would refuse each, one
                // reason string apiece: not consensus's cost).
                sm.apply(&header(&block))
            } else {
                let mut opened = pool.take_opened(&block.id);
                sm.apply_with(&block, &mut |i, _| opened.get_mut(i)?.take())
            };
            applied_to = block.height;
            pool.remove_committed(a.admitted.iter().map(String::as_str));
            counters.height.store(block.height, Ordering::Relaxed);
            let (mut rejected, mut rejected_requests) = (vec![], vec![]);
            for (i, why) in &a.refused {
                if let Some((request, id)) = block.payload.get(*i).and_then(|tx| tx_id(tx)) {
                    let to = if request {
                        &mut rejected_requests
                    } else {
                        &mut rejected
                    };
                    to.push((id, why.clone()));
                }
            }
            let report = Committed {
                height: block.height,
                time: block.time,
                block: block.id,
                admitted: a.admitted.clone(),
                rejected,
                rejected_requests,
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
        if logged {
            // The blocks before the head that may name them.
            on_disk(|| block_log.sync_data())
                .map_err(|e| files(&s.dir, format!("syncing the block log: {e}")))?;
        }
        if dirty {
            if log_bytes > BLOCK_LOG_COMPACT {
                // The committed blocks leave the log: the chain file
                // holds them durably first.
                on_disk(|| chain_file.sync_data())
                    .map_err(|e| files(&s.dir, format!("syncing the chain file: {e}")))?;
                let mut b = vec![];
                for x in &store.blocks {
                    frame(&mut b, &wire::encode_block(x));
                }
                write_durably(&log_path, &b)
                    .map_err(|e| files(&s.dir, format!("compacting the block log: {e}")))?;
                block_log =
                    ben_control::private::append(&log_path).map_err(|e| files(&s.dir, e))?;
                log_bytes = b.len() as u64;
            }
            on_disk(|| head_file.write(&head(&store)))
                .map_err(|e| files(&s.dir, format!("writing the block store's head: {e}")))?;
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
        // One timer, moved only when the core's next wake moves.
        let wake = node.next_wake();
        if wake != timer_at {
            timer_at = wake;
            // At most an hour ahead (the core's timeouts are capped far
            // below; an Instant past the clock's range would panic).
            let after = std::time::Duration::from_millis(wake.saturating_sub(now()).min(3_600_000));
            timer.as_mut().reset(tokio::time::Instant::now() + after);
        }
        tokio::select! {
            _ = &mut stop => return Ok(()),
            m = inbound.recv() => match m {
                Some((from, env)) => node.on_message(from, env, now(), &mut pool, &mut out),
                None => return Ok(()),
            },
            tx = anomalies.recv() => {
                let Some(o) = tx else { return Ok(()) };
                // What else is queued goes in too (bounded, a batch at a
                // time), then the core hears of it once: a select, a timer
                // and a step per offer cost more than the offer.
                let (mut taken, began) = (0, std::time::Instant::now());
                let mut inbox = Inbox {
                    pool: &mut pool,
                    sm: &sm,
                    keyring: &keyring,
                    counters: &counters,
                };
                let mut offers = Vec::with_capacity(BATCH);
                offers.push(o);
                loop {
                    while offers.len() < BATCH {
                        match anomalies.try_recv() {
                            Ok(next) => offers.push(next),
                            Err(_) => break,
                        }
                    }
                    let more = offers.len() == BATCH;
                    taken += offers.len();
                    offer_all(&s, &mut inbox, &mut offers);
                    if !more || taken >= DRAIN || began.elapsed() >= DRAIN_FOR {
                        break;
                    }
                }
                node.on_payload(now(), &mut pool, &mut out);
            }
            _ = &mut timer => {
                // Fired: set again next time round, wherever the wake is.
                timer_at = Millis::MAX;
                node.on_tick(now(), &mut pool, &mut out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Block `h` of a chain (ids made up: `load` follows parent links and
    /// heights, it does not recompute ids).
    fn block(genesis: &Block, h: u64) -> Block {
        let id = |h: u64| {
            if h == 0 {
                genesis.id
            } else {
                Hash([h as u8; 32])
            }
        };
        Block {
            id: id(h),
            round: h,
            height: h,
            parent: id(h - 1),
            qc: genesis.qc.clone(),
            author: 0,
            time: h,
            payload: vec![vec![h as u8; 40]].into(),
        }
    }

    /// An empty private directory for test `name`.
    fn fresh(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ben-validator-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        ben_control::private::dir(&dir).unwrap();
        dir
    }

    fn framed(blocks: &[Block]) -> Vec<u8> {
        let mut b = vec![];
        for x in blocks {
            frame(&mut b, &wire::encode_block(x));
        }
        b
    }

    #[test]
    fn commits_the_chain_file_lost_in_a_crash_come_back_from_the_block_log() {
        let dir = fresh("load");
        let genesis = Block::genesis("load-test");
        let blocks: Vec<Block> = (1..=5).map(|h| block(&genesis, h)).collect();
        // The head names block 4 as its last commit; the chain file kept
        // blocks 1 and 2 whole and block 3 cut short; the block log holds
        // 2 to 5 (1 went when it was compacted).
        let mut d = Durable::genesis(&genesis);
        d.root.block = blocks[3].clone();
        Slots::open(&dir.join(HEAD))
            .unwrap()
            .write(&head(&d))
            .unwrap();
        let mut chain = framed(&blocks[..3]);
        chain.truncate(chain.len() - 7);
        std::fs::write(dir.join("chain"), &chain).unwrap();
        std::fs::write(dir.join("blocks"), framed(&blocks[1..])).unwrap();

        let (loaded, chain) = load(&dir, &genesis).unwrap();
        let heights = |bs: &[Block]| bs.iter().map(|b| b.height).collect::<Vec<_>>();
        assert_eq!(heights(&chain), [1, 2, 3, 4]);
        assert_eq!(loaded.root.block.id, blocks[3].id);
        assert_eq!(
            loaded.root.block.payload.len(),
            1,
            "the root's block, whole"
        );
        assert_eq!(heights(&loaded.blocks), [5]);
        // The chain file now holds 1 to 4 whole (the torn record cut off),
        // so a second start reads the same.
        let on_disk = std::fs::read(dir.join("chain")).unwrap();
        assert_eq!(on_disk, framed(&blocks[..4]));
        let (_, again) = load(&dir, &genesis).unwrap();
        assert_eq!(heights(&again), [1, 2, 3, 4]);

        // A gap the block log cannot fill is said, not skipped.
        std::fs::write(dir.join("chain"), framed(&blocks[..1])).unwrap();
        std::fs::write(dir.join("blocks"), framed(&blocks[2..])).unwrap();
        let e = load(&dir, &genesis).unwrap_err().to_string();
        assert!(e.contains("is not in the chain file"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_earlier_versions_files_are_read_when_the_slot_files_are_missing() {
        let dir = fresh("old");
        let genesis = Block::genesis("old-files");
        let mut d = Durable::genesis(&genesis);
        d.safety.last_voted_round = 17;
        std::fs::write(dir.join("safety"), wire::encode_safety(&d.safety)).unwrap();
        std::fs::write(dir.join("store"), head(&d)).unwrap();
        let (loaded, _) = load(&dir, &genesis).unwrap();
        assert_eq!(loaded.safety.last_voted_round, 17);
        // Once the slot file holds a record, it is what counts.
        d.safety.last_voted_round = 18;
        Slots::open(&dir.join(SAFETY))
            .unwrap()
            .write(&wire::encode_safety(&d.safety))
            .unwrap();
        let (loaded, _) = load(&dir, &genesis).unwrap();
        assert_eq!(loaded.safety.last_voted_round, 18);
        // Retired, the earlier files cannot come back if a slot file goes.
        retire_earlier_files(&dir).unwrap();
        assert!(!dir.join("safety").exists() && !dir.join("store").exists());
        std::fs::remove_file(dir.join(SAFETY)).unwrap();
        let (loaded, _) = load(&dir, &genesis).unwrap();
        assert_eq!(loaded.safety.last_voted_round, 0);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
