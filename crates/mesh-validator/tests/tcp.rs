//! Four validators over their own TCP links on loopback, each with its
//! own directory: they commit signed anomalies; one stopped without
//! warning (its task dropped mid-flight, its files as they were) the other
//! three go on; two down, commits stop; one back from its files, it
//! catches up and commits resume, with one chain and one state root.

use ben_mesh_consensus::{Config, Hash, NodeId};
use ben_mesh_detect::wire::{AnomalyEvent, Endpoint};
use ben_mesh_validator::link::LinkConfig;
use ben_mesh_validator::run::{run, Committed, Counters, Settings};
use ben_mesh_validator::state;
use ben_time::Clock;
use ben_wire::{Keyring, Role, Signer};
use ed25519_dalek::SigningKey;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

type Log = Arc<Mutex<Vec<Committed>>>;

struct Running {
    anomalies: mpsc::Sender<ben_mesh_validator::run::Offer>,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
    _stop: oneshot::Sender<()>,
}

struct Set {
    settings: Vec<Settings>,
    keys: Arc<Keyring>,
    logs: Vec<Log>,
    up: Vec<Option<Running>>,
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn wall() -> Arc<dyn Clock> {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64)
    })
}

impl Set {
    fn new(n: usize, dir: PathBuf, keys: Arc<Keyring>) -> Set {
        let addrs: Vec<SocketAddr> = (0..n).map(|_| free_addr()).collect();
        let secrets: Vec<[u8; 32]> = (0..n).map(|i| [i as u8 + 40; 32]).collect();
        let pubs: Vec<_> = secrets
            .iter()
            .map(|s| SigningKey::from_bytes(s).verifying_key())
            .collect();
        let settings = (0..n)
            .map(|i| {
                let mut consensus = Config::new(n, i as NodeId);
                consensus.base_timeout = 600;
                consensus.heartbeat = 200;
                Settings {
                    consensus,
                    state: state::Config::default(),
                    link: LinkConfig {
                        me: i as NodeId,
                        addrs: addrs.clone(),
                        keys: pubs.clone(),
                        secret: secrets[i],
                        chain: Hash::ZERO,
                        queue: 1_024,
                    },
                    dir: dir.join(format!("validator-{i}")),
                    mempool: 10_000,
                    chain: "tcp-test".into(),
                    database: None,
                    intake: Default::default(),
                }
            })
            .collect();
        Set {
            settings,
            keys,
            logs: (0..n).map(|_| Log::default()).collect(),
            up: (0..n).map(|_| None).collect(),
        }
    }

    fn start(&mut self, i: usize) {
        let (atx, arx) = mpsc::channel(1_024);
        let (ctx, mut crx) = mpsc::channel::<Committed>(1_024);
        let (stop_tx, stop_rx) = oneshot::channel();
        let log = self.logs[i].clone();
        tokio::spawn(async move {
            while let Some(c) = crx.recv().await {
                log.lock().unwrap().push(c);
            }
        });
        let s = self.settings[i].clone();
        let keys = self.keys.clone();
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = run(s, keys, arx, ctx, wall(), c, stop_rx).await {
                panic!("validator {i}: {e}");
            }
        });
        self.up[i] = Some(Running {
            anomalies: atx,
            counters,
            task,
            _stop: stop_tx,
        });
    }

    /// Gone at once, as with kill -9: the task is dropped wherever it is.
    fn kill(&mut self, i: usize) {
        if let Some(r) = self.up[i].take() {
            r.task.abort();
        }
    }

    async fn offer(&self, tx: &[u8]) {
        for r in self.up.iter().flatten() {
            r.anomalies.send(tx.to_vec().into()).await.unwrap();
        }
    }

    fn admitted(&self, i: usize) -> Vec<String> {
        self.logs[i]
            .lock()
            .unwrap()
            .iter()
            .flat_map(|c| c.admitted.clone())
            .collect()
    }

    async fn wait_all(&self, who: &[usize], count: usize, within: Duration) {
        let t = Instant::now();
        loop {
            let counts: Vec<usize> = who.iter().map(|i| self.admitted(*i).len()).collect();
            if counts.iter().all(|c| *c >= count) {
                return;
            }
            assert!(
                t.elapsed() < within,
                "validators {who:?} committed {counts:?} anomalies, not {count}, within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn anomaly(ai: &Signer, k: usize) -> Vec<u8> {
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    ai.seal_bytes(&AnomalyEvent {
        id: format!("an-{k}"),
        class: "portscan".into(),
        confidence: 0.9,
        source: Some(Endpoint {
            ip: format!("10.7.{}.{}", k / 200, k % 200),
            port: 0,
        }),
        window_end_us: now_us,
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validators_over_tcp_survive_a_kill_lose_quorum_and_recover() {
    let ai = Signer::from_secret([9; 32]);
    let mut keys = Keyring::new();
    keys.trust("mesh-1", Role::AiService, ai.public());
    let dir = std::env::temp_dir().join(format!(
        "ben-validators-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let mut set = Set::new(4, dir.clone(), Arc::new(keys));
    for i in 0..4 {
        set.start(i);
    }
    for k in 0..30 {
        set.offer(&anomaly(&ai, k)).await;
    }
    // A forged one (unknown key) never reaches a mempool.
    set.offer(&anomaly(&Signer::from_secret([3; 32]), 999))
        .await;
    set.wait_all(&[0, 1, 2, 3], 30, Duration::from_secs(20))
        .await;

    // One validator gone mid-flight: the other three are a quorum.
    set.kill(3);
    for k in 30..50 {
        set.offer(&anomaly(&ai, k)).await;
    }
    set.wait_all(&[0, 1, 2], 50, Duration::from_secs(30)).await;

    // Two gone: no quorum, nothing commits.
    set.kill(2);
    for k in 50..55 {
        set.offer(&anomaly(&ai, k)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(set.admitted(0).len(), 50, "committed without a quorum");
    assert_eq!(set.admitted(1).len(), 50, "committed without a quorum");

    // One back from its files: it catches up, and with it the quorum.
    set.start(3);
    for k in 50..55 {
        // It lost its mempool with the process; the AI service re-sends.
        set.up[3]
            .as_ref()
            .unwrap()
            .anomalies
            .send(anomaly(&ai, k).into())
            .await
            .unwrap();
    }
    set.wait_all(&[0, 1, 3], 55, Duration::from_secs(60)).await;

    // One chain: the same anomalies in the same order, the same roots.
    let a0 = set.admitted(0);
    assert_eq!(set.admitted(1), a0);
    assert_eq!(set.admitted(3)[..], a0[..set.admitted(3).len()]);
    assert!(!a0.contains(&"an-999".to_string()));
    let roots = |i: usize| -> BTreeMap<u64, Hash> {
        set.logs[i]
            .lock()
            .unwrap()
            .iter()
            .map(|c| (c.height, c.root))
            .collect()
    };
    let (r0, r3) = (roots(0), roots(3));
    let common: Vec<_> = r3.keys().filter(|h| r0.contains_key(h)).collect();
    assert!(common.len() > 5);
    for h in common {
        assert_eq!(r0[h], r3[h], "state roots differ at height {h}");
    }
    // Validator 3's commits across its restart: every height once, in order.
    let heights: Vec<u64> = set.logs[3]
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.height)
        .collect();
    assert!(heights.windows(2).all(|w| w[1] == w[0] + 1), "{heights:?}");
    for i in 0..4 {
        set.kill(i);
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Two validators' link settings on free loopback ports, on chain `name`,
/// and a sync message (the smallest valid envelope) of that chain.
fn two_links(
    name: &str,
) -> (
    Vec<LinkConfig>,
    ben_mesh_consensus::Block,
    ben_mesh_consensus::Envelope,
) {
    let addrs = vec![free_addr(), free_addr()];
    let secrets = [[1u8; 32], [2u8; 32]];
    let pubs: Vec<_> = secrets
        .iter()
        .map(|s| SigningKey::from_bytes(s).verifying_key())
        .collect();
    let g = ben_mesh_consensus::Block::genesis(name);
    let cfgs = (0..2)
        .map(|me| LinkConfig {
            me: me as NodeId,
            addrs: addrs.clone(),
            keys: pubs.clone(),
            secret: secrets[me],
            chain: g.id,
            queue: 64,
        })
        .collect();
    let env = ben_mesh_consensus::Envelope {
        sync: ben_mesh_consensus::SyncInfo {
            hqc: g.genesis_qc(),
            hcc: g.genesis_qc(),
            htc: None,
        },
        body: ben_mesh_consensus::Body::Sync,
    };
    (cfgs, g, env)
}

/// What reaches a validator's port that is not a frame from a validator
/// of its set, for it, on its chain, is refused and counted by reason;
/// the good frame after it on a new connection still gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_refuse_and_count_what_is_not_a_validator_frame() {
    use ben_mesh_validator::link::Links;
    use ed25519_dalek::Signer as _;
    use tokio::io::AsyncWriteExt;
    let (cfgs, g, env) = two_links("links");
    let addrs: Vec<_> = cfgs[0].addrs.clone();
    let secrets = [cfgs[0].secret, cfgs[1].secret];
    let (rx_links, mut inbound) = Links::start(cfgs[0].clone()).await.unwrap();
    let payload = ben_mesh_consensus::wire::encode(&env);
    let frame = |from: u16, key: &SigningKey, to: u16, chain: &Hash, payload: &[u8]| {
        let mut h = blake3::Hasher::new();
        h.update(b"ben/v1/consensus/link2\0");
        h.update(&chain.0);
        h.update(&from.to_be_bytes());
        h.update(&to.to_be_bytes());
        h.update(blake3::hash(payload).as_bytes());
        let sig = key.sign(h.finalize().as_bytes());
        let mut f = ((2 + 64 + payload.len()) as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&from.to_be_bytes());
        f.extend_from_slice(&sig.to_bytes());
        f.extend_from_slice(payload);
        f
    };
    let k1 = SigningKey::from_bytes(&secrets[1]);
    let outsider = SigningKey::from_bytes(&[7; 32]);
    let bad: Vec<Vec<u8>> = vec![
        vec![0, 0, 0, 1, 9],                               // too short to be a frame
        vec![0xff, 0xff, 0xff, 0xff],                      // absurd length
        frame(1, &outsider, 0, &g.id, &payload),           // a key outside the set
        frame(1, &k1, 1, &g.id, &payload),                 // signed for another validator
        frame(1, &k1, 0, &Hash([5; 32]), &payload),        // another chain
        frame(9, &k1, 0, &g.id, &payload),                 // no such validator
        frame(1, &k1, 0, &g.id, b"\x0a\x03not a message"), // signed garbage
    ];
    for f in &bad {
        let mut c = tokio::net::TcpStream::connect(addrs[0]).await.unwrap();
        c.write_all(f).await.unwrap();
        let _ = c.flush().await;
    }
    let mut c = tokio::net::TcpStream::connect(addrs[0]).await.unwrap();
    c.write_all(&frame(1, &k1, 0, &g.id, &payload))
        .await
        .unwrap();
    let (from, got) = tokio::time::timeout(Duration::from_secs(5), inbound.recv())
        .await
        .expect("the good frame arrives")
        .unwrap();
    assert_eq!((from, got), (1, env));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = rx_links.stats.refused.lock().unwrap().clone();
    assert_eq!(refused.get("frame_size"), Some(&2), "{refused:?}");
    assert_eq!(refused.get("signature"), Some(&3), "{refused:?}");
    assert_eq!(refused.get("unknown_sender"), Some(&1), "{refused:?}");
    assert_eq!(refused.get("undecodable"), Some(&1), "{refused:?}");
    assert!(inbound.try_recv().is_err(), "nothing bad got through");
}

/// Connections that never finish a frame cannot pile up: past four per
/// validator of the set the port refuses (counted), and once they close a
/// validator's frame gets through again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_capped() {
    use ben_mesh_validator::link::Links;
    let (cfgs, _, env) = two_links("cap");
    let addrs: Vec<_> = cfgs[0].addrs.clone();
    let (rx_links, mut inbound) = Links::start(cfgs[0].clone()).await.unwrap();
    let mut idle = vec![];
    for _ in 0..9 {
        idle.push(tokio::net::TcpStream::connect(addrs[0]).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = rx_links.stats.refused.lock().unwrap().clone();
    assert_eq!(refused.get("too_many_connections"), Some(&1), "{refused:?}");
    drop(idle);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Validator 1 dials and its message arrives.
    let (tx_links, _in1) = Links::start(cfgs[1].clone()).await.unwrap();
    tx_links.send(0, &env);
    let got = tokio::time::timeout(Duration::from_secs(5), inbound.recv())
        .await
        .expect("delivered");
    assert_eq!(got, Some((1, env)));
}

/// Blocks in `url`: height → hash, and how many anomalies.
async fn tables(url: &str) -> (BTreeMap<u64, String>, i64) {
    use sqlx::Row;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let blocks = sqlx::query("SELECT height, block_hash FROM blocks ORDER BY height")
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<i64, _>(0) as u64, r.get::<String, _>(1)))
        .collect();
    let anomalies: i64 = sqlx::query("SELECT COUNT(*) FROM anomalies")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    pool.close().await;
    (blocks, anomalies)
}

/// Every height from 1 to the highest is there once (none skipped), and
/// each is the block validator `i` committed there.
fn check_chain(set: &Set, i: usize, blocks: &BTreeMap<u64, String>) {
    let top = *blocks.keys().last().expect("blocks written");
    assert_eq!(
        blocks.keys().copied().collect::<Vec<_>>(),
        (1..=top).collect::<Vec<_>>(),
        "a height is missing in the database"
    );
    for c in set.logs[i].lock().unwrap().iter() {
        if let Some(h) = blocks.get(&c.height) {
            assert_eq!(*h, c.block.hex(), "height {}", c.height);
        }
    }
}

/// The persistence worker over a PostgreSQL of the test's own: every
/// committed block is written in order; with the server down the writes
/// are retried, then every validator halts (visibly: its counters say so)
/// and nothing commits; a validator killed meanwhile loses the blocks it
/// had queued from memory, not from the database: restarted, it writes
/// them from its chain file. Back up, the chain resumes with no height
/// missing or written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_reach_postgres_in_order_and_an_outage_halts_then_resumes() {
    use ben_mesh_validator::persist::Target;
    let pg = ben_sql::testing::PrivatePg::start();
    let shared = pg.url();
    ben_sql::testing::admin_at(&shared, "CREATE DATABASE own")
        .await
        .unwrap();
    let own = format!("postgres://postgres@127.0.0.1:{}/own", pg.port);
    let ai = Signer::from_secret([9; 32]);
    let mut keys = Keyring::new();
    keys.trust("mesh-1", Role::AiService, ai.public());
    let dir = std::env::temp_dir().join(format!("ben-persist-{}", ben_sql::testing::unique_name()));
    let mut set = Set::new(4, dir.clone(), Arc::new(keys));
    // Three share one database (as a cluster may); the fourth has its own.
    for (i, s) in set.settings.iter_mut().enumerate() {
        s.database = Some(Target::Url(if i == 3 {
            own.clone()
        } else {
            shared.clone()
        }));
    }
    for i in 0..4 {
        set.start(i);
    }
    for k in 0..20 {
        set.offer(&anomaly(&ai, k)).await;
    }
    set.wait_all(&[0, 1, 2, 3], 20, Duration::from_secs(20))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (blocks, anomalies) = tables(&shared).await;
    assert_eq!(anomalies, 20);
    check_chain(&set, 0, &blocks);

    // The server goes away: retries, then a halt on every validator.
    pg.stop();
    for k in 20..30 {
        set.offer(&anomaly(&ai, k)).await;
    }
    let t = Instant::now();
    // Halted: Some(true); running: Some(false); not started yet: None.
    let halted = |set: &Set, i: usize| {
        let c = &set.up[i].as_ref().unwrap().counters;
        c.persist
            .get()
            .map(|s| s.halted.load(std::sync::atomic::Ordering::Relaxed))
    };
    while !(0..4).all(|i| halted(&set, i) == Some(true)) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "validators did not halt"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let error = set.up[0].as_ref().unwrap().counters.persist.get().unwrap();
    assert!(error.last_error.lock().unwrap().is_some());
    // (a step under way when the flag went up finishes)
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stuck: Vec<usize> = (0..4).map(|i| set.logs[i].lock().unwrap().len()).collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later: Vec<usize> = (0..4).map(|i| set.logs[i].lock().unwrap().len()).collect();
    assert_eq!(stuck, later, "a halted validator committed");

    // Validator 3 dies with its queue; the server comes back; it restarts.
    set.kill(3);
    pg.resume();
    set.start(3);
    set.wait_all(&[0, 1, 2], 30, Duration::from_secs(60)).await;
    for k in 20..30 {
        // It lost its mempool with the process; the AI service re-sends.
        set.up[3]
            .as_ref()
            .unwrap()
            .anomalies
            .send(anomaly(&ai, k).into())
            .await
            .unwrap();
    }
    let t = Instant::now();
    while !(0..4).all(|i| halted(&set, i) == Some(false)) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "validators still halted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the last commits reach both databases.
    let top = set.logs[0].lock().unwrap().last().unwrap().height;
    let t = Instant::now();
    loop {
        let (a, _) = tables(&shared).await;
        let (b, _) = tables(&own).await;
        if a.keys().last().is_some_and(|h| *h >= top) && b.keys().last().is_some_and(|h| *h >= top)
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "blocks up to {top} not written"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (blocks, anomalies) = tables(&shared).await;
    check_chain(&set, 0, &blocks);
    assert_eq!(anomalies, 30);
    let (own_blocks, own_anomalies) = tables(&own).await;
    check_chain(&set, 0, &own_blocks);
    assert_eq!(own_anomalies, 30);
    for i in 0..4 {
        set.kill(i);
    }
    let _ = std::fs::remove_dir_all(dir);
}
