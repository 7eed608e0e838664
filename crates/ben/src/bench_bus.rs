//! `ben bench bus --kind nats,kafka`: the same signed anomalies through
//! each bus on `ai.anomalies.v1`, in one run. Per kind, two passes:
//!
//! * **throughput**: `--records` anomalies published with up to
//!   [`WINDOW`] publishes in flight, read by one subscriber: anomalies/s
//!   from the first publish to the last delivery, and publish→consume
//!   latency p50/p99 (under saturation it includes the wait in the
//!   window);
//! * **latency**: `--rate` anomalies a second (default 1000) for
//!   `--seconds`: publish→consume p50/p99 at a load the bus carries.
//!
//! NATS here is core NATS (what `ai.anomalies.v1` rides in cluster mode:
//! a publish returns once the client buffered it); Kafka's publish returns
//! once the broker stored the message (idempotent, `acks=all`). Each kind
//! runs under names of its own (subject prefix, topic prefix), so runs
//! never meet. Kafka needs `--features kafka` and a broker (`--brokers`,
//! default 127.0.0.1:9092; `scripts/kafka-broker` starts one).

use crate::bench::pct;
use anyhow::{anyhow, bail, Result};
use ben_bus::Bus;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Publishes in flight during the throughput pass.
pub const WINDOW: usize = 512;

pub struct Args<'a> {
    pub kinds: &'a [String],
    pub records: u64,
    pub rate: u64,
    pub seconds: u64,
    pub nats: &'a str,
    pub brokers: &'a str,
}

pub fn run(a: Args<'_>) -> Result<()> {
    if a.records == 0 || a.records > 10_000_000 {
        bail!("--records must be 1 to 10,000,000");
    }
    if a.rate == 0 || a.seconds == 0 {
        bail!("--rate and --seconds must be positive");
    }
    crate::cluster::runtime()?.block_on(bench(a))
}

async fn bench(a: Args<'_>) -> Result<()> {
    // A fixed key: nothing verifies these, the bench only carries them.
    let signer = ben_wire::Signer::from_secret([7; 32]);
    let run_id = format!(
        "bench{}x{}",
        std::process::id(),
        ben_time::now_ns() % 1_000_000
    );
    for kind in a.kinds {
        let bus = open(kind, a.nats, a.brokers, &run_id).await?;
        let msgs = anomalies(&signer, a.records as usize, 0);
        let (secs, lat) = pass(bus.clone(), msgs, None).await?;
        println!(
            "bus {kind}: throughput {} anomalies in {secs:.2} s = {:.0} anomalies/s, publish->consume p50 {:.2} ms, p99 {:.2} ms",
            a.records,
            a.records as f64 / secs,
            ms(pct(&lat, 0.50)),
            ms(pct(&lat, 0.99))
        );
        let n = (a.rate * a.seconds) as usize;
        let msgs = anomalies(&signer, n, a.records as usize);
        let (_, lat) = pass(bus.clone(), msgs, Some(a.rate)).await?;
        println!(
            "bus {kind}: at {} anomalies/s for {} s: publish->consume p50 {:.2} ms, p99 {:.2} ms",
            a.rate,
            a.seconds,
            ms(pct(&lat, 0.50)),
            ms(pct(&lat, 0.99))
        );
        bus.flush().await?;
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The bus of a kind, under names of this run only.
async fn open(kind: &str, nats: &str, brokers: &str, run_id: &str) -> Result<Arc<dyn Bus>> {
    match kind {
        "nats" => {
            let n = ben_bus_nats::NatsBus::connect(&ben_bus_nats::Config {
                url: nats.to_string(),
                ..ben_bus_nats::Config::default()
            })
            .await
            .map_err(|e| anyhow!(e))?;
            Ok(Arc::new(ben_bus::PrefixedBus::new(n, run_id.to_string())))
        }
        "kafka" => kafka(brokers, run_id).await,
        other => bail!("--kind {other}: nats or kafka"),
    }
}

#[cfg(feature = "kafka")]
async fn kafka(brokers: &str, run_id: &str) -> Result<Arc<dyn Bus>> {
    let k = ben_bus_kafka::KafkaBus::connect(ben_bus_kafka::Config {
        brokers: brokers.to_string(),
        topic_prefix: format!("{run_id}."),
        ..ben_bus_kafka::Config::default()
    })
    .await
    .map_err(|e| anyhow!(e))?;
    Ok(Arc::new(k))
}

#[cfg(not(feature = "kafka"))]
async fn kafka(_brokers: &str, _run_id: &str) -> Result<Arc<dyn Bus>> {
    bail!("--kind kafka: this ben was built without Kafka; build it with `cargo build --release -p ben-cli --features kafka`")
}

/// `n` signed anomalies, each from its own address (keys spread over the
/// partitions), as the AI service seals them.
fn anomalies(signer: &ben_wire::Signer, n: usize, from: usize) -> Vec<Vec<u8>> {
    let now_us = ben_time::now_ns() / 1_000;
    (from..from + n)
        .map(|i| {
            let ev = ben_mesh_detect::wire::AnomalyEvent {
                id: format!("bench-{i}"),
                class: "portscan".into(),
                confidence: 0.9,
                source: Some(ben_mesh_detect::wire::Endpoint {
                    ip: format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
                    port: 0,
                }),
                window_end_us: now_us,
                ..Default::default()
            };
            signer.seal_bytes(&ev)
        })
        .collect()
}

/// Publishes `msgs` (all at once within [`WINDOW`], or at `rate` a
/// second) and waits for each on a subscription: the seconds from the
/// first publish to the last delivery, and each message's
/// publish→delivery milliseconds.
async fn pass(
    bus: Arc<dyn Bus>,
    msgs: Vec<Vec<u8>>,
    rate: Option<u64>,
) -> Result<(f64, Vec<Duration>)> {
    let subject = ben_mesh_detect::wire::ANOMALIES_SUBJECT;
    let mut sub = bus.subscribe(subject, None).await?;
    let index: HashMap<Vec<u8>, usize> = msgs.iter().cloned().zip(0..).collect();
    let n = msgs.len();
    let t0 = Instant::now();
    let sent_at: Arc<Vec<std::sync::atomic::AtomicU64>> =
        Arc::new((0..n).map(|_| Default::default()).collect());
    let publisher = {
        let (bus, sent_at) = (bus.clone(), sent_at.clone());
        tokio::spawn(async move {
            let window = Arc::new(tokio::sync::Semaphore::new(WINDOW));
            let mut tasks = tokio::task::JoinSet::new();
            for (i, m) in msgs.into_iter().enumerate() {
                if let Some(r) = rate {
                    let due = t0 + Duration::from_secs_f64(i as f64 / r as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                let permit = window.clone().acquire_owned().await?;
                let (bus, sent_at) = (bus.clone(), sent_at.clone());
                tasks.spawn(async move {
                    sent_at[i].store(
                        t0.elapsed().as_nanos() as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    let r = bus.publish(subject, m).await;
                    drop(permit);
                    r
                });
            }
            let mut failed = 0usize;
            while let Some(r) = tasks.join_next().await {
                if !matches!(r, Ok(Ok(_))) {
                    failed += 1;
                }
            }
            anyhow::Ok(failed)
        })
    };
    let mut lat = Vec::with_capacity(n);
    let mut seen = vec![false; n];
    let mut last = t0;
    let quiet = Duration::from_secs(30);
    while lat.len() < n {
        let Ok(Some(m)) = tokio::time::timeout(quiet, sub.next()).await else {
            bail!(
                "{} of {n} anomalies arrived; nothing more for {} s",
                lat.len(),
                quiet.as_secs()
            );
        };
        let Some(&i) = index.get(&m.payload) else {
            continue;
        };
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        last = Instant::now();
        let sent = Duration::from_nanos(sent_at[i].load(std::sync::atomic::Ordering::Relaxed));
        lat.push((last - t0).saturating_sub(sent));
    }
    let failed = publisher.await??;
    if failed > 0 {
        bail!("{failed} publishes failed");
    }
    lat.sort();
    Ok(((last - t0).as_secs_f64(), lat))
}
