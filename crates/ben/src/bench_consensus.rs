//! `ben bench consensus --validators 4 --rate R[,R…] --tx-size 512
//! --seconds S`: validators over their own TCP links on loopback (each
//! with its files: safety state fsynced before every vote, block store,
//! chain file), all in this process; once they have connected and
//! committed a first block, transactions offered to every validator at
//! each rate in turn; what validator 1 commits is counted and each
//! transaction's latency taken from its offer to the commit of its
//! block. One line per rate, ending `committed C tx/s, p50 X ms, p99 Y ms`.
//!
//! By default transactions are opaque bytes (consensus measured alone, as
//! the reference peer measures); `--signed` offers signed
//! anomalies of about that size instead, each verified by every validator.

use anyhow::{Context, Result};
use ben_mesh_consensus::{Config, Hash, NodeId};
use ben_mesh_detect::wire::{AnomalyEvent, Endpoint};
use ben_mesh_validator::link::LinkConfig;
use ben_mesh_validator::run::{run as run_validator, Committed, Counters, Intake, Settings};
use ben_wire::{Keyring, Role, Signer};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// One rate's figures.
struct Outcome {
    offered: f64,
    committed: f64,
    p50_ms: f64,
    p99_ms: f64,
    dropped: u64,
    /// Blocks validator 1 committed in the run, and the transactions in
    /// them.
    blocks: u64,
    block_txs: u64,
    /// Validator 1's round and committed height at the end (rounds past
    /// heights + 2: rounds that timed out).
    rounds: u64,
    heights: u64,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn free_addr() -> Result<std::net::SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("a loopback port")?;
    Ok(l.local_addr()?)
}

/// The transaction numbered `seq`: `size` bytes, the number first.
fn raw_tx(seq: u64, size: usize) -> Vec<u8> {
    let mut tx = vec![0x5a; size.max(8)];
    tx[..8].copy_from_slice(&seq.to_be_bytes());
    tx
}

fn signed_tx(ai: &Signer, seq: u64, size: usize) -> Vec<u8> {
    let ev = AnomalyEvent {
        id: format!("b-{seq}"),
        class: "portscan".into(),
        confidence: 0.5,
        source: Some(Endpoint {
            ip: format!(
                "10.{}.{}.{}",
                (seq >> 16) & 255,
                (seq >> 8) & 255,
                seq & 255
            ),
            port: 0,
        }),
        window_end_us: ben_time::now_ns() / 1_000,
        model_version: "x".repeat(size.saturating_sub(200)),
        ..Default::default()
    };
    ai.seal_bytes(&ev)
}

async fn one_rate(
    n: usize,
    rate: u64,
    tx_size: usize,
    seconds: u64,
    signed: bool,
) -> Result<Outcome> {
    let dir =
        std::env::temp_dir().join(format!("ben-bench-consensus-{}-{rate}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let addrs = (0..n).map(|_| free_addr()).collect::<Result<Vec<_>>>()?;
    let secrets: Vec<[u8; 32]> = (0..n).map(|i| [i as u8 + 1; 32]).collect();
    let keys: Vec<_> = secrets
        .iter()
        .map(|s| ed25519_dalek::SigningKey::from_bytes(s).verifying_key())
        .collect();
    let ai = Signer::from_secret([9; 32]);
    let mut keyring = Keyring::new();
    keyring.trust("mesh-1", Role::AiService, ai.public());
    let keyring = Arc::new(keyring);
    let mut inputs = vec![];
    let mut stops = vec![];
    let mut tasks = vec![];
    let mut commits0 = None;
    let mut counters0: Option<Arc<Counters>> = None;
    for (i, secret) in secrets.iter().enumerate() {
        let settings = Settings {
            consensus: Config::new(n, i as NodeId),
            state: Default::default(),
            link: LinkConfig {
                me: i as NodeId,
                addrs: addrs.clone(),
                keys: keys.clone(),
                secret: *secret,
                chain: Hash::ZERO,
                queue: 4_096,
            },
            dir: dir.join(format!("v{i}")),
            mempool: 1_000_000,
            chain: format!("bench-{rate}"),
            database: None,
            intake: if signed {
                Intake::Anomalies
            } else {
                Intake::BenchRaw
            },
        };
        let (atx, arx) = mpsc::channel(200_000);
        let (ctx, mut crx) = mpsc::channel::<Committed>(10_000);
        let (stop_tx, stop_rx) = oneshot::channel();
        let clock: Arc<dyn ben_time::Clock> = Arc::new(ben_time::SystemClock);
        tasks.push(tokio::spawn(run_validator(
            settings,
            keyring.clone(),
            arx,
            ctx,
            clock,
            {
                let c = Arc::new(Counters::default());
                if i == 0 {
                    counters0 = Some(c.clone());
                }
                c
            },
            stop_rx,
        )));
        if i == 0 {
            commits0 = Some(crx);
        } else {
            // The others' reports are not counted, but must be taken.
            tokio::spawn(async move { while crx.recv().await.is_some() {} });
        }
        inputs.push(atx);
        stops.push(stop_tx);
    }
    let mut commits = commits0.context("no validator")?;
    let total = rate * seconds;
    // Signed anomalies are made before the clock starts (signing is the
    // AI service's work, not the validators').
    let txs: Vec<Vec<u8>> = (0..total)
        .map(|s| {
            if signed {
                signed_tx(&ai, s, tx_size)
            } else {
                raw_tx(s, tx_size)
            }
        })
        .collect();
    // Warm-up: the clock starts once the validators have connected and
    // committed a block (one transaction outside the numbered ones), as
    // the `hotstuff_rs` harness starts after its first commit.
    let warm = if signed {
        signed_tx(&ai, u64::MAX, tx_size)
    } else {
        raw_tx(u64::MAX, tx_size)
    };
    for input in &inputs {
        input
            .send(warm.clone().into())
            .await
            .context("a validator stopped before the run")?;
    }
    let warmed = tokio::time::timeout(Duration::from_secs(30), commits.recv()).await;
    anyhow::ensure!(
        matches!(warmed, Ok(Some(_))),
        "no block committed within 30 s of the start"
    );
    // Offer times, in ns since `start` (0: not offered yet): lock-free, so
    // the feeder and the collector do not wait on each other.
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let dropped = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let feeder = {
        let (sent, dropped) = (sent.clone(), dropped.clone());
        tokio::spawn(async move {
            let mut seq = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            while seq < total {
                tick.tick().await;
                let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
                while seq < due {
                    let tx = &txs[seq as usize];
                    let at = start.elapsed().as_nanos().max(1) as u64;
                    sent[seq as usize].store(at, Ordering::Relaxed);
                    for input in &inputs {
                        if input.try_send(tx.clone().into()).is_err() {
                            dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    seq += 1;
                }
            }
            inputs
        })
    };
    let mut latencies = vec![];
    let (mut blocks, mut block_txs) = (0u64, 0u64);
    let deadline = start + Duration::from_secs(seconds) + Duration::from_secs(2);
    let window = Duration::from_secs(seconds);
    while let Ok(Some(c)) = tokio::time::timeout_at(deadline.into(), commits.recv()).await {
        let now = start.elapsed();
        blocks += 1;
        let seqs: Vec<u64> = if signed {
            c.admitted
                .iter()
                .filter_map(|id| id.strip_prefix("b-")?.parse().ok())
                .collect()
        } else {
            ben_mesh_consensus::wire::decode_block(&c.block_bytes)
                .map(|b| {
                    b.payload
                        .iter()
                        .filter_map(|tx| Some(u64::from_be_bytes(tx.get(..8)?.try_into().ok()?)))
                        .collect()
                })
                .unwrap_or_default()
        };
        block_txs += seqs.len() as u64;
        for q in seqs {
            let Some(at) = sent.get(q as usize) else {
                continue;
            };
            let at = Duration::from_nanos(at.load(Ordering::Relaxed));
            // Counted only within the offered window.
            if !at.is_zero() && at < window {
                latencies.push(now.saturating_sub(at).as_secs_f64() * 1e3);
            }
        }
    }
    let _inputs = feeder.await.context("the feeder")?;
    let (rounds, heights) = counters0.map_or((0, 0), |c| {
        (
            c.round.load(Ordering::Relaxed),
            c.height.load(Ordering::Relaxed),
        )
    });
    for s in stops {
        // A validator that already ended has dropped its receiver; why it
        // ended is in its task's result, read below.
        let _ = s.send(());
    }
    for t in &tasks {
        t.abort();
    }
    // Stopped before their files go (an aborted task still running could
    // write one more into the directory being removed); a validator that
    // failed during the run makes its figures worthless.
    let mut failed = None;
    for (i, t) in tasks.into_iter().enumerate() {
        if let Ok(Err(e)) = t.await {
            failed.get_or_insert(format!("validator {i} stopped during the run: {e}"));
        }
    }
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        eprintln!("ben bench consensus: {} stays behind: {e}", dir.display());
    }
    if let Some(f) = failed {
        anyhow::bail!(f);
    }
    latencies.sort_by(f64::total_cmp);
    Ok(Outcome {
        offered: total as f64 / seconds as f64,
        committed: latencies.len() as f64 / seconds as f64,
        p50_ms: quantile(&latencies, 0.5),
        p99_ms: quantile(&latencies, 0.99),
        dropped: dropped.load(Ordering::Relaxed),
        blocks,
        block_txs,
        rounds,
        heights,
    })
}

pub fn run(n: usize, rates: &[u64], tx_size: usize, seconds: u64, signed: bool) -> Result<()> {
    anyhow::ensure!(n >= 4, "--validators: at least 4 (n = 3f + 1, f ≥ 1)");
    anyhow::ensure!(seconds >= 1, "--seconds: at least 1");
    let rt = crate::cluster::runtime()?;
    println!(
        "{n} validators on loopback, {} transactions of {tx_size} B, {seconds} s per rate",
        if signed { "signed anomaly" } else { "opaque" }
    );
    for &rate in rates {
        let o = rt.block_on(one_rate(n, rate, tx_size, seconds, signed))?;
        println!(
            "rate {rate}: offered {:.0} tx/s{}, {} blocks of {:.0} tx on average, round {} at height {}, committed {:.0} tx/s, p50 {:.1} ms, p99 {:.1} ms",
            o.offered,
            if o.dropped > 0 {
                format!(" ({} offers refused by full queues)", o.dropped)
            } else {
                String::new()
            },
            o.blocks,
            o.block_txs as f64 / o.blocks.max(1) as f64,
            o.rounds,
            o.heights,
            o.committed,
            o.p50_ms,
            o.p99_ms
        );
    }
    Ok(())
}
