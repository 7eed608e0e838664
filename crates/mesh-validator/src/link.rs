//! Validator links: each validator's own authenticated TCP connections to
//! the others, so agreement does not hang on a broker.
//!
//! A frame is `len: u32 BE | from: u16 BE | sig: [u8; 64] | payload`,
//! where `payload` is a [`ben_mesh_consensus::wire`] message and `sig`
//! is the sender's Ed25519 signature over
//! `BLAKE3("ben/v1/consensus/link2" 0x00 chain from to BLAKE3(payload))`
//! (the payload hashed once however many validators a message goes to;
//! a block is megabytes): a frame
//! from a key outside the validator set, for another validator, or for
//! another chain never verifies. Each validator dials every other one and
//! writes its messages to it; what it reads comes from the connections
//! the others dialled. A peer that is down is redialled with back-off;
//! messages for it wait in a bounded queue (the oldest dropped and
//! counted when it is full: consensus retransmits what matters).

use ben_mesh_consensus::{wire, Envelope, Hash, NodeId};
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Frame header: length, sender, signature.
const HEADER: usize = 4 + 2 + 64;

/// Inbound connections read at once, per validator in the set: a reader
/// holds a buffer as large as the frame it is reading (up to 8 MiB), so
/// anyone who can reach the port could otherwise pin memory by opening
/// connections and never finishing a frame.
const CONNECTIONS_PER_PEER: usize = 4;

/// How a validator reaches the others.
#[derive(Clone)]
pub struct LinkConfig {
    /// This validator's index.
    pub me: NodeId,
    /// Every validator's address, by index.
    pub addrs: Vec<SocketAddr>,
    /// Every validator's public key, by index.
    pub keys: Vec<VerifyingKey>,
    /// This validator's secret key.
    pub secret: [u8; 32],
    /// The chain (genesis id).
    pub chain: Hash,
    /// Frames queued per peer.
    pub queue: usize,
}

/// Counters, by reason.
#[derive(Default)]
pub struct LinkStats {
    /// Frames sent.
    pub sent: AtomicU64,
    /// Frames received and accepted.
    pub received: AtomicU64,
    /// Frames dropped because a peer's queue was full.
    pub dropped: AtomicU64,
    /// Frames refused, by reason.
    pub refused: Mutex<BTreeMap<&'static str, u64>>,
}

impl LinkStats {
    fn refuse(&self, why: &'static str) {
        if let Ok(mut r) = self.refused.lock() {
            *r.entry(why).or_insert(0) += 1;
        }
    }
}

fn digest(chain: &Hash, from: NodeId, to: NodeId, payload: &blake3::Hash) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"ben/v1/consensus/link2\0");
    h.update(&chain.0);
    h.update(&from.to_be_bytes());
    h.update(&to.to_be_bytes());
    h.update(payload.as_bytes());
    *h.finalize().as_bytes()
}

/// The running links.
pub struct Links {
    peers: Vec<Option<mpsc::Sender<Vec<u8>>>>,
    me: NodeId,
    key: SigningKey,
    chain: Hash,
    /// Its tasks (listener, readers, dialers): stopped when it is dropped,
    /// so a validator that stops frees its address at once.
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    /// Counters.
    pub stats: Arc<LinkStats>,
}

impl Drop for Links {
    fn drop(&mut self) {
        if let Ok(t) = self.tasks.lock() {
            for h in t.iter() {
                h.abort();
            }
        }
    }
}

impl Links {
    /// Binds this validator's address and starts dialling the others;
    /// messages received arrive on the returned receiver. The tasks end
    /// when the `Links` and the receiver are dropped.
    pub async fn start(
        cfg: LinkConfig,
    ) -> std::io::Result<(Links, mpsc::Receiver<(NodeId, Envelope)>)> {
        let me = cfg.me as usize;
        let addr = *cfg.addrs.get(me).ok_or_else(|| {
            std::io::Error::other(format!("validator {me} has no address in the set"))
        })?;
        let listener = TcpListener::bind(addr).await?;
        let stats = Arc::new(LinkStats::default());
        let (in_tx, in_rx) = mpsc::channel(4 * cfg.queue.max(1));
        let tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let accepting = tokio::spawn(accept(
            listener,
            cfg.clone(),
            in_tx,
            stats.clone(),
            tasks.clone(),
        ));
        let mut handles = vec![accepting.abort_handle()];
        let mut peers = vec![];
        for (p, a) in cfg.addrs.iter().enumerate() {
            if p == me {
                peers.push(None);
                continue;
            }
            let (tx, rx) = mpsc::channel(cfg.queue.max(1));
            handles.push(tokio::spawn(dial(*a, rx, stats.clone())).abort_handle());
            peers.push(Some(tx));
        }
        if let Ok(mut t) = tasks.lock() {
            t.extend(handles);
        }
        Ok((
            Links {
                peers,
                me: cfg.me,
                key: SigningKey::from_bytes(&cfg.secret),
                chain: cfg.chain,
                tasks,
                stats,
            },
            in_rx,
        ))
    }

    /// Queues `msg` for validator `to`.
    pub fn send(&self, to: NodeId, msg: &Envelope) {
        let payload = wire::encode(msg);
        self.send_encoded(to, &payload, &blake3::hash(&payload));
    }

    /// Queues an encoded message (`hash`: BLAKE3 of it) for `to`.
    fn send_encoded(&self, to: NodeId, payload: &[u8], hash: &blake3::Hash) {
        let Some(Some(q)) = self.peers.get(to as usize) else {
            return;
        };
        let sig = self.key.sign(&digest(&self.chain, self.me, to, hash));
        let mut frame = Vec::with_capacity(HEADER + payload.len());
        frame.extend_from_slice(&((2 + 64 + payload.len()) as u32).to_be_bytes());
        frame.extend_from_slice(&self.me.to_be_bytes());
        frame.extend_from_slice(&sig.to_bytes());
        frame.extend_from_slice(payload);
        match q.try_send(frame) {
            Ok(()) => {
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Queues `msg` for every other validator (encoded and hashed once).
    pub fn broadcast(&self, msg: &Envelope) {
        let payload = wire::encode(msg);
        let hash = blake3::hash(&payload);
        for to in 0..self.peers.len() as NodeId {
            if to != self.me {
                self.send_encoded(to, &payload, &hash);
            }
        }
    }
}

async fn dial(addr: SocketAddr, mut rx: mpsc::Receiver<Vec<u8>>, stats: Arc<LinkStats>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let mut conn = match TcpStream::connect(addr).await {
            Ok(c) => {
                let _ = c.set_nodelay(true);
                backoff = Duration::from_millis(50);
                c
            }
            Err(_) => {
                if rx.is_closed() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        loop {
            let Some(frame) = rx.recv().await else { return };
            if conn.write_all(&frame).await.is_err() {
                stats.refuse("write_failed");
                break;
            }
        }
    }
}

async fn accept(
    listener: TcpListener,
    cfg: LinkConfig,
    to: mpsc::Sender<(NodeId, Envelope)>,
    stats: Arc<LinkStats>,
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
) {
    let open = Arc::new(tokio::sync::Semaphore::new(
        CONNECTIONS_PER_PEER * cfg.addrs.len().max(1),
    ));
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        if to.is_closed() {
            return;
        }
        let Ok(permit) = open.clone().try_acquire_owned() else {
            stats.refuse("too_many_connections");
            continue; // dropped: closed at once
        };
        let _ = conn.set_nodelay(true);
        let (cfg, to, stats) = (cfg.clone(), to.clone(), stats.clone());
        let h = tokio::spawn(async move {
            read(conn, cfg, to, stats).await;
            drop(permit);
        });
        if let Ok(mut t) = tasks.lock() {
            t.retain(|h| !h.is_finished());
            t.push(h.abort_handle());
        }
    }
}

/// Reads frames until the connection ends or sends something that is not
/// a frame (then it is closed: the sender redials).
async fn read(
    mut conn: TcpStream,
    cfg: LinkConfig,
    to: mpsc::Sender<(NodeId, Envelope)>,
    stats: Arc<LinkStats>,
) {
    let mut len = [0u8; 4];
    let mut buf = Vec::new();
    loop {
        if conn.read_exact(&mut len).await.is_err() {
            return;
        }
        let n = u32::from_be_bytes(len) as usize;
        if !(66..=wire::MAX_MESSAGE + 66).contains(&n) {
            stats.refuse("frame_size");
            return;
        }
        buf.resize(n, 0);
        if conn.read_exact(&mut buf).await.is_err() {
            return;
        }
        let from = u16::from_be_bytes([buf[0], buf[1]]);
        let Some(key) = cfg.keys.get(from as usize).filter(|_| from != cfg.me) else {
            stats.refuse("unknown_sender");
            return;
        };
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&buf[2..66]);
        let payload = &buf[66..];
        let d = digest(&cfg.chain, from, cfg.me, &blake3::hash(payload));
        if key
            .verify(&d, &ed25519_dalek::Signature::from_bytes(&sig))
            .is_err()
        {
            stats.refuse("signature");
            return;
        }
        match wire::decode(payload) {
            Ok(env) => {
                stats.received.fetch_add(1, Ordering::Relaxed);
                if to.send((from, env)).await.is_err() {
                    return;
                }
            }
            Err(_) => stats.refuse("undecodable"),
        }
    }
}
