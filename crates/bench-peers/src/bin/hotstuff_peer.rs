//! `hotstuff-peer --rate R[,R…] [--seconds S] [--tx-size B]`: the peer
//! beside `ben bench consensus` — four `hotstuff_rs` 0.4 replicas (all
//! validators, power 1 each) in this process, each with its own loopback
//! TCP links to the other three, an in-memory key-value store and an app
//! that fills blocks with offered transactions and accepts every block.
//! Transactions (opaque, `--tx-size` bytes, the sequence number first) are
//! offered at each rate in turn for `--seconds`; what replica 0 commits is
//! counted and each transaction's latency taken from its offer to the
//! moment the block holding it shows as committed in replica 0's block tree
//! (polled every millisecond). One line per rate, ending `committed C tx/s,
//! p50 X ms, p99 Y ms`, as Ben's.
//!
//! Differences from Ben's bench, on purpose or forced by the library:
//! - The pending pool is one queue shared by the four apps (they are in one
//!   process); whichever replica leads a view drains up to a block's worth
//!   in `produce_block`. Ben offers every transaction to each validator's
//!   own mempool. A block that never gets a certificate loses what it
//!   drained (it then simply does not count as committed).
//! - Storage is memory only; Ben's validators write and fsync files.
//! - The load starts once replica 0 has committed its first block: a fresh
//!   hotstuff_rs cluster spends its first view timeout (1 s) before that,
//!   which would otherwise land in every run's p99. The time is printed.
//! - Everything the library does is kept: every proposal, vote, new-view
//!   and certificate is Ed25519-signed and verified by hotstuff_rs itself,
//!   and every message goes over TCP (a replica's messages to itself are
//!   handed over in memory, as the library requires broadcasts to reach the
//!   sender too).
//!
//! Settings chosen (hotstuff_rs has no defaults: every one is required):
//! - `max_view_time` 1 s: Ben's base round timeout is 1.5 s, but the
//!   pacemaker takes only whole seconds of it (`as_secs()`), so 1.5 s would
//!   act as 1 s anyway. It only matters when a view fails (and at the
//!   start); a healthy view ends as soon as its certificate forms.
//! - `epoch_length` 4: the library's docs advise the expected largest
//!   number of validators; there are 4.
//! - Block cap 2,000 transactions or 2 MiB, Ben's `max_block_txs` /
//!   `max_block_bytes` defaults.
//! - `progress_msg_buffer_capacity` 256 MiB, so buffered future-view
//!   proposals of full blocks are never dropped for room.
//! - Block sync (how a replica that missed a proposal catches up):
//!   advertisements every 200 ms, sync started on an advertised certificate
//!   2 views ahead or after 1 s without progress, requests of up to 64
//!   blocks, 1 s response timeout, 10 s blacklist. On these loaded cores a
//!   replica does miss proposals now and then (one replica's highest
//!   certificate a few views behind the others'); the views it leads then
//!   wait out their timeouts, which are laid out from the epoch's start
//!   (1 s, 2 s, … for its 1st, 2nd, … view), so the chain pauses for 1–3 s.
//!   Slower advertising (5 s) or a later trigger (10 views) did not avoid
//!   those pauses in trial runs. The longest pause is printed.
//! - The collector polls instead of registering `on_commit_block`: the
//!   library's event-bus thread spins on `try_recv` without yielding and
//!   would take one of the two cores. (Its four block-sync servers and four
//!   pollers spin with `yield_now` and are left as they are.)

use borsh::{BorshDeserialize, BorshSerialize};
use hotstuff_rs::app::{
    App, ProduceBlockRequest, ProduceBlockResponse, ValidateBlockRequest, ValidateBlockResponse,
};
use hotstuff_rs::block_tree::accessors::public::BlockTreeCamera;
use hotstuff_rs::block_tree::pluggables::{KVGet, KVStore, WriteBatch};
use hotstuff_rs::networking::messages::Message;
use hotstuff_rs::networking::network::Network;
use hotstuff_rs::replica::{Configuration, Replica, ReplicaSpec};
use hotstuff_rs::types::crypto_primitives::{CryptoHasher, Digest, SigningKey, VerifyingKey};
use hotstuff_rs::types::data_types::{
    BufferSize, ChainID, CryptoHash, Data, Datum, EpochLength, Power,
};
use hotstuff_rs::types::update_sets::{AppStateUpdates, ValidatorSetUpdates};
use hotstuff_rs::types::validator_set::{ValidatorSet, ValidatorSetState};
use std::collections::{HashMap, VecDeque};
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::thread;
use std::time::{Duration, Instant};

const VALIDATORS: usize = 4;
const MAX_BLOCK_TXS: usize = 2_000;
const MAX_BLOCK_BYTES: usize = 2 << 20;
/// Largest frame a reader accepts (a full block plus its certificate).
const MAX_FRAME: usize = 64 << 20;

// ---------------------------------------------------------------- KV store

/// In-memory `KVStore`: one map behind a lock. A write batch is applied
/// under the write lock, so it is atomic; a snapshot holds the read lock,
/// so it is consistent (only the block-sync server and the commit
/// collector take snapshots, briefly; the algorithm thread never does).
#[derive(Clone, Default)]
struct MemKv(Arc<RwLock<HashMap<Vec<u8>, Vec<u8>>>>);

#[derive(Default)]
struct MemBatch(Vec<(Vec<u8>, Option<Vec<u8>>)>);

struct MemSnapshot<'a>(RwLockReadGuard<'a, HashMap<Vec<u8>, Vec<u8>>>);

impl WriteBatch for MemBatch {
    fn new() -> Self {
        MemBatch(Vec::new())
    }
    fn set(&mut self, key: &[u8], value: &[u8]) {
        self.0.push((key.to_vec(), Some(value.to_vec())));
    }
    fn delete(&mut self, key: &[u8]) {
        self.0.push((key.to_vec(), None));
    }
}

impl KVGet for MemKv {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.read().ok()?.get(key).cloned()
    }
}

impl KVGet for MemSnapshot<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get(key).cloned()
    }
}

impl KVStore for MemKv {
    type WriteBatch = MemBatch;
    type Snapshot<'a> = MemSnapshot<'a>;

    fn write(&mut self, wb: MemBatch) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        for (k, v) in wb.0 {
            match v {
                Some(v) => {
                    map.insert(k, v);
                }
                None => {
                    map.remove(&k);
                }
            }
        }
    }
    fn clear(&mut self) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).clear();
    }
    fn snapshot<'b>(&'b self) -> MemSnapshot<'b> {
        MemSnapshot(self.0.read().unwrap_or_else(|e| e.into_inner()))
    }
}

// ---------------------------------------------------------------- app

/// Transactions offered and not yet taken into a block.
type Pool = Arc<Mutex<VecDeque<Vec<u8>>>>;

/// Puts pending transactions into blocks (one `Datum` each) and accepts
/// every block; no app state, no validator-set changes.
struct PoolApp {
    pool: Pool,
}

impl<K: KVStore> App<K> for PoolApp {
    fn produce_block(&mut self, _request: ProduceBlockRequest<K>) -> ProduceBlockResponse {
        let mut txs = Vec::new();
        let mut bytes = 0;
        if let Ok(mut pool) = self.pool.lock() {
            while txs.len() < MAX_BLOCK_TXS {
                match pool.front() {
                    Some(tx) if bytes + tx.len() <= MAX_BLOCK_BYTES => {
                        bytes += tx.len();
                        txs.extend(pool.pop_front());
                    }
                    _ => break,
                }
            }
        }
        let mut hasher = CryptoHasher::new();
        for tx in &txs {
            hasher.update((tx.len() as u32).to_le_bytes());
            hasher.update(tx);
        }
        ProduceBlockResponse {
            data_hash: CryptoHash::new(hasher.finalize().into()),
            data: Data::new(txs.into_iter().map(Datum::new).collect()),
            app_state_updates: None,
            validator_set_updates: None,
        }
    }

    fn validate_block(&mut self, _request: ValidateBlockRequest<K>) -> ValidateBlockResponse {
        ValidateBlockResponse::Valid {
            app_state_updates: None,
            validator_set_updates: None,
        }
    }

    fn validate_block_for_sync(
        &mut self,
        _request: ValidateBlockRequest<K>,
    ) -> ValidateBlockResponse {
        ValidateBlockResponse::Valid {
            app_state_updates: None,
            validator_set_updates: None,
        }
    }
}

// ---------------------------------------------------------------- network

/// One replica's links: a writer thread per peer (frames: u32 length,
/// little-endian, then the borsh encoding of a `Message`), a reader thread
/// per incoming connection, and an inbox they all feed.
/// One encoded message, shared by the links it is broadcast on.
type Frame = Arc<Vec<u8>>;

#[derive(Clone)]
struct TcpNet {
    me: VerifyingKey,
    peers: Arc<HashMap<[u8; 32], Sender<Frame>>>,
    to_self: Sender<(VerifyingKey, Message)>,
    inbox: Arc<Mutex<Receiver<(VerifyingKey, Message)>>>,
}

impl TcpNet {
    fn frame(message: &Message) -> Option<Frame> {
        let body = message.try_to_vec().ok()?;
        let mut out = Vec::with_capacity(body.len() + 4);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        Some(Arc::new(out))
    }
}

impl Network for TcpNet {
    // The validator set never changes here and every link is opened
    // before the replicas start.
    fn init_validator_set(&mut self, _validator_set: ValidatorSet) {}
    fn update_validator_set(&mut self, _updates: ValidatorSetUpdates) {}

    fn broadcast(&mut self, message: Message) {
        if let Some(frame) = Self::frame(&message) {
            for link in self.peers.values() {
                let _ = link.send(frame.clone());
            }
        }
        let _ = self.to_self.send((self.me, message));
    }

    fn send(&mut self, peer: VerifyingKey, message: Message) {
        if peer == self.me {
            let _ = self.to_self.send((self.me, message));
        } else if let (Some(link), Some(frame)) =
            (self.peers.get(peer.as_bytes()), Self::frame(&message))
        {
            let _ = link.send(frame);
        }
    }

    /// Waits up to 1 ms for a message. The trait's docs ask for an
    /// immediate return; the library's poller thread only uses `None` to
    /// check for shutdown and yield, then calls again, so waiting here
    /// changes no protocol timing (a message is returned the moment it is
    /// there) and spares the shared cores four spinning pollers.
    fn recv(&mut self) -> Option<(VerifyingKey, Message)> {
        let inbox = self.inbox.lock().ok()?;
        inbox.recv_timeout(Duration::from_millis(1)).ok()
    }
}

fn writer(stream: TcpStream, frames: Receiver<Frame>) {
    let mut out = BufWriter::with_capacity(1 << 16, stream);
    while let Ok(frame) = frames.recv() {
        if out.write_all(&frame).is_err() {
            return;
        }
        // Write what else is queued, then flush once.
        while let Ok(frame) = frames.try_recv() {
            if out.write_all(&frame).is_err() {
                return;
            }
        }
        if out.flush().is_err() {
            return;
        }
    }
}

fn reader(stream: TcpStream, from: VerifyingKey, inbox: Sender<(VerifyingKey, Message)>) {
    let mut input = BufReader::with_capacity(1 << 16, stream);
    let mut len = [0u8; 4];
    let mut body = Vec::new();
    loop {
        if input.read_exact(&mut len).is_err() {
            return;
        }
        let n = u32::from_le_bytes(len) as usize;
        if n > MAX_FRAME {
            return;
        }
        body.resize(n, 0);
        if input.read_exact(&mut body).is_err() {
            return;
        }
        match Message::deserialize(&mut body.as_slice()) {
            Ok(m) => {
                if inbox.send((from, m)).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// Opens every link among `keys.len()` replicas on loopback: each connects
/// to every other and says who it is (its index, one byte). Returns each
/// replica's network and the streams (to shut them down at the end).
fn connect_all(keys: &[VerifyingKey]) -> std::io::Result<(Vec<TcpNet>, Vec<TcpStream>)> {
    let n = keys.len();
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<std::io::Result<_>>()?;
    let mut streams = vec![];
    let mut inboxes = vec![];
    let mut accepts = vec![];
    for (i, listener) in listeners.into_iter().enumerate() {
        let (tx, rx) = mpsc::channel();
        inboxes.push((tx.clone(), rx));
        let keys = keys.to_vec();
        accepts.push(thread::spawn(move || -> std::io::Result<Vec<TcpStream>> {
            let mut accepted = vec![];
            for _ in 1..keys.len() {
                let (mut s, _) = listener.accept()?;
                s.set_nodelay(true)?;
                let mut who = [0u8; 1];
                s.read_exact(&mut who)?;
                let from = *keys
                    .get(who[0] as usize)
                    .ok_or_else(|| std::io::Error::other("unknown peer index"))?;
                accepted.push(s.try_clone()?);
                let tx = tx.clone();
                thread::Builder::new()
                    .name(format!("hs-read-{i}"))
                    .spawn(move || reader(s, from, tx))?;
            }
            Ok(accepted)
        }));
    }
    let mut nets = vec![];
    for (i, (to_self, rx)) in inboxes.into_iter().enumerate() {
        let mut peers = HashMap::new();
        for (j, addr) in addrs.iter().enumerate() {
            if j == i {
                continue;
            }
            let mut s = TcpStream::connect(addr)?;
            s.set_nodelay(true)?;
            s.write_all(&[i as u8])?;
            streams.push(s.try_clone()?);
            let (ftx, frx) = mpsc::channel();
            thread::Builder::new()
                .name(format!("hs-write-{i}-{j}"))
                .spawn(move || writer(s, frx))?;
            peers.insert(keys[j].to_bytes(), ftx);
        }
        nets.push(TcpNet {
            me: keys[i],
            peers: Arc::new(peers),
            to_self,
            inbox: Arc::new(Mutex::new(rx)),
        });
    }
    for a in accepts {
        streams.extend(
            a.join()
                .map_err(|_| std::io::Error::other("accept thread panicked"))??,
        );
    }
    Ok((nets, streams))
}

// ---------------------------------------------------------------- one rate

struct Outcome {
    offered: f64,
    committed: f64,
    p50_ms: f64,
    p99_ms: f64,
    blocks: u64,
    warm_up_ms: f64,
    /// Longest time replica 0 committed nothing while the load ran.
    longest_pause_ms: f64,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn tx_bytes(seq: u64, size: usize) -> Vec<u8> {
    let mut tx = vec![0x5a; size.max(8)];
    tx[..8].copy_from_slice(&seq.to_be_bytes());
    tx
}

fn configuration(secret: [u8; 32], chain: u64) -> Configuration {
    Configuration::builder()
        .me(SigningKey::from_bytes(&secret))
        .chain_id(ChainID::new(chain))
        .block_sync_request_limit(64)
        .block_sync_server_advertise_time(Duration::from_millis(200))
        .block_sync_response_timeout(Duration::from_secs(1))
        .block_sync_blacklist_expiry_time(Duration::from_secs(10))
        .block_sync_trigger_min_view_difference(2)
        .block_sync_trigger_timeout(Duration::from_secs(1))
        .progress_msg_buffer_capacity(BufferSize::new(256 << 20))
        .epoch_length(EpochLength::new(4))
        .max_view_time(Duration::from_secs(1))
        .log_events(false)
        .build()
}

/// A block's transactions, datum by datum: hotstuff_rs 0.4.0's
/// `block_data` (and so `block`) returns every stored block with empty data
/// (its `find` for a missing datum drains the iterator it then collects).
fn block_txs(camera: &BlockTreeCamera<MemKv>, b: &CryptoHash) -> Vec<Datum> {
    let snapshot = camera.snapshot();
    let Ok(Some(len)) = snapshot.block_data_len(b) else {
        return vec![];
    };
    (0..len.int())
        .filter_map(|i| snapshot.block_datum(b, i))
        .collect()
}

/// Replica 0's newly committed blocks, oldest first: from its highest
/// committed block back along `justify` links to the last one seen. A
/// block replica 0 got through block sync was served by `block`, so it
/// holds no data there; its transactions are read from a replica that has
/// them (the block hash fixes the data hash, so they are the same).
fn newly_committed(
    cameras: &[BlockTreeCamera<MemKv>],
    last: &mut Option<CryptoHash>,
) -> Vec<Vec<Datum>> {
    let Some(camera) = cameras.first() else {
        return vec![];
    };
    let mut hashes = vec![];
    {
        let snapshot = camera.snapshot();
        let Ok(Some(top)) = snapshot.highest_committed_block() else {
            return vec![];
        };
        let mut b = top;
        while Some(b) != *last {
            hashes.push(b);
            match snapshot.block_justify(&b) {
                Ok(pc) if !pc.is_genesis_pc() => b = pc.block,
                _ => break,
            }
        }
        *last = Some(top);
    }
    hashes
        .iter()
        .rev()
        .map(|b| {
            cameras
                .iter()
                .map(|c| block_txs(c, b))
                .find(|txs| !txs.is_empty())
                .unwrap_or_default()
        })
        .collect()
}

fn one_rate(rate: u64, tx_size: usize, seconds: u64) -> Result<Outcome, String> {
    let secrets: Vec<[u8; 32]> = (0..VALIDATORS).map(|i| [i as u8 + 1; 32]).collect();
    let keys: Vec<VerifyingKey> = secrets
        .iter()
        .map(|s| SigningKey::from_bytes(s).verifying_key())
        .collect();
    let mut set = ValidatorSet::new();
    for k in &keys {
        set.put(k, Power::new(1));
    }
    let (nets, streams) = connect_all(&keys).map_err(|e| format!("loopback links: {e}"))?;

    let total = rate * seconds;
    let txs: Vec<Vec<u8>> = (0..total).map(|s| tx_bytes(s, tx_size)).collect();
    let pool: Pool = Arc::default();
    let booted = Instant::now();
    let mut replicas: Vec<Replica<MemKv>> = vec![];
    let mut cameras = vec![];
    for (net, secret) in nets.into_iter().zip(&secrets) {
        let kv = MemKv::default();
        Replica::initialize(
            kv.clone(),
            AppStateUpdates::new(),
            ValidatorSetState::new(set.clone(), set.clone(), None, true),
        );
        cameras.push(BlockTreeCamera::new(kv.clone()));
        replicas.push(
            ReplicaSpec::builder()
                .app(PoolApp { pool: pool.clone() })
                .network(net)
                .kv_store(kv)
                .configuration(configuration(*secret, rate))
                .build()
                .start(),
        );
    }

    // Warm-up: the load starts once replica 0 has committed a block (the
    // first views after a start wait out a view timeout; see `main`).
    let mut last = None;
    let warm_up = loop {
        if !newly_committed(&cameras, &mut last).is_empty() {
            break booted.elapsed();
        }
        if booted.elapsed() > Duration::from_secs(30) {
            return Err("no block committed within 30 s of the start".into());
        }
        thread::sleep(Duration::from_millis(1));
    };

    // Offer times, in ns since `start` (0 = not offered yet).
    let offered_at: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let start = Instant::now();
    let window = Duration::from_secs(seconds);
    let deadline = start + window + Duration::from_secs(2);
    let feeder = {
        let (pool, offered_at) = (pool.clone(), offered_at.clone());
        thread::spawn(move || {
            // Every millisecond, whatever is due by now.
            let mut seq = 0u64;
            while seq < total {
                thread::sleep(Duration::from_millis(1));
                let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
                if due > seq {
                    if let Ok(mut p) = pool.lock() {
                        while seq < due {
                            let now = start.elapsed().as_nanos().max(1) as u64;
                            offered_at[seq as usize].store(now, Ordering::Relaxed);
                            p.push_back(txs[seq as usize].clone());
                            seq += 1;
                        }
                    }
                }
            }
        })
    };

    // The collector: polls replica 0's committed chain every millisecond
    // (hotstuff_rs's commit events would need its event-bus thread, which
    // spins on `try_recv` and would take one of the two cores).
    let mut latencies = vec![];
    let mut blocks = 0u64;
    let mut last_commit = Duration::ZERO;
    let mut longest_pause = Duration::ZERO;
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
        let fresh = newly_committed(&cameras, &mut last);
        let now = start.elapsed();
        if !fresh.is_empty() || now >= window {
            longest_pause = longest_pause.max(now.min(window).saturating_sub(last_commit));
            last_commit = now;
        }
        for data in fresh {
            blocks += 1;
            for datum in &data {
                let Some(seq) = datum
                    .bytes()
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
                else {
                    continue;
                };
                let Some(at) = offered_at.get(seq as usize) else {
                    continue;
                };
                let at = Duration::from_nanos(at.load(Ordering::Relaxed));
                // Counted only within the offered window, as Ben's.
                if !at.is_zero() && at < window {
                    latencies.push(now.saturating_sub(at).as_secs_f64() * 1e3);
                }
            }
        }
    }
    feeder.join().map_err(|_| "the feeder panicked")?;

    // Stop the replicas (their drop joins the library's threads), then the links.
    drop(replicas);
    for s in streams {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }

    latencies.sort_by(f64::total_cmp);
    Ok(Outcome {
        offered: total as f64 / seconds as f64,
        committed: latencies.len() as f64 / seconds as f64,
        p50_ms: quantile(&latencies, 0.5),
        p99_ms: quantile(&latencies, 0.99),
        blocks,
        warm_up_ms: warm_up.as_secs_f64() * 1e3,
        longest_pause_ms: longest_pause.as_secs_f64() * 1e3,
    })
}

// ---------------------------------------------------------------- main

fn usage() -> ! {
    eprintln!("usage: hotstuff-peer --rate R[,R…] [--seconds S] [--tx-size BYTES]");
    std::process::exit(2)
}

fn main() {
    let mut rates: Vec<u64> = vec![10_000];
    let mut seconds = 5u64;
    let mut tx_size = 512usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--rate" => {
                rates = v
                    .split(',')
                    .map(|r| r.trim().parse().unwrap_or_else(|_| usage()))
                    .collect()
            }
            "--seconds" => seconds = v.parse().unwrap_or_else(|_| usage()),
            "--tx-size" => tx_size = v.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    if seconds == 0 || rates.is_empty() || rates.contains(&0) {
        usage();
    }
    println!(
        "hotstuff_rs {VALIDATORS} validators on loopback TCP, opaque transactions of {tx_size} B, {seconds} s per rate"
    );
    for rate in rates {
        match one_rate(rate, tx_size, seconds) {
            Ok(o) => println!(
                "hotstuff_rs {VALIDATORS} validators, offered {:.0} tx/s, {tx_size} B (first commit {:.0} ms after the start, then {} blocks, longest pause {:.0} ms): committed {:.0} tx/s, p50 {:.1} ms, p99 {:.1} ms",
                o.offered, o.warm_up_ms, o.blocks, o.longest_pause_ms, o.committed, o.p50_ms, o.p99_ms
            ),
            Err(e) => {
                eprintln!("rate {rate}: {e}");
                std::process::exit(1);
            }
        }
    }
}
