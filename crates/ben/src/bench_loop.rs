//! `ben bench loop`: CyberMesh's closed loop in `ben up`, timed. The
//! bundled port scan (`examples/mesh/portscan.pcap`) is replayed onto
//! `ben.mesh.flows` `--runs` times, each time from another scanner address
//! (so each run is a new anomaly and a new policy), and each stage is
//! timed from the replay: the AI service's anomaly, the first validator's
//! commit of it, the enforcement agent's ack (a dry run). The AI service
//! runs its engines every `--every-ms`: detection waits for that batch
//! (each replay starts at another phase of that period).

use crate::bench::pct;
use anyhow::{anyhow, Context, Result};
use ben_embedded::{Config, System};
use ben_mesh_detect::wire::AnomalyEvent;
use ben_mesh_wire::{CommitEvent, PolicyAck};
use std::time::{Duration, Instant};

/// The next message on `sub` (a signed `T`) for which `want` holds,
/// within `within` (see [`crate::demo_mesh::next`]).
pub(crate) async fn next_within<T: prost::Message + Default>(
    sub: &mut ben_bus::Subscription,
    within: Duration,
    want: impl Fn(&T) -> bool,
) -> Result<T> {
    crate::demo_mesh::next(sub, tokio::time::Instant::now() + within, want)
        .await
        .ok_or_else(|| anyhow!("nothing within {within:?} (or the bus closed)"))
}

pub fn run(runs: usize, every_ms: u64) -> Result<()> {
    crate::cluster::runtime()?.block_on(bench(runs, every_ms))
}

async fn bench(runs: usize, every_ms: u64) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("ben-bench-loop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sensor = crate::demo_mesh::sensor_key()?;
    let sys = System::start(Config {
        data_dir: dir.join("data"),
        api_addr: "127.0.0.1:0".parse()?,
        mesh_every: Duration::from_millis(every_ms.max(1)),
        trust: vec![(crate::demo_mesh::SENSOR_ID.to_string(), sensor.public())],
        ..Config::default()
    })
    .await
    .map_err(|e| anyhow!(e))?;
    let bus = sys.bus.clone();
    let mut anomalies = bus
        .subscribe(ben_mesh_detect::wire::ANOMALIES_SUBJECT, None)
        .await?;
    let mut commits = bus.subscribe(ben_mesh_wire::COMMITS_SUBJECT, None).await?;
    let mut acks = bus.subscribe(ben_mesh_wire::ACK_SUBJECT, None).await?;
    let (mut detect, mut commit, mut ack) = (vec![], vec![], vec![]);
    let within = Duration::from_millis(every_ms) * 2 + Duration::from_secs(10);
    for k in 0..runs {
        // Each replay at another phase of the engines' period (a
        // low-discrepancy spread), so waiting for the batch is measured as
        // it falls, not locked to the previous run's ack.
        let phase = (k as f64 * 0.618_033_988_75).fract();
        tokio::time::sleep(Duration::from_millis((phase * every_ms as f64) as u64)).await;
        let scanner = format!("198.51.{}.{}", 100 + k / 250, 1 + k % 250);
        let (_, rows) = ben_mesh_flows::replay_rows(
            crate::demo_mesh::CAPTURE,
            ben_time::now_ns().max(0) as u64,
        )?;
        let t0 = Instant::now();
        let rows = rows
            .into_iter()
            .map(|row| {
                String::from_utf8_lossy(&row)
                    .replace(crate::demo_mesh::SCANNER, &scanner)
                    .into_bytes()
            })
            .collect();
        for batch in crate::demo_mesh::sealed(bus.as_ref(), &sensor, rows) {
            bus.publish(ben_mesh_ai::FLOWS, batch).await?;
        }
        let from = |a: &AnomalyEvent| a.source.as_ref().is_some_and(|s| s.ip == scanner);
        let a = next_within(&mut anomalies, within, from)
            .await
            .with_context(|| format!("run {k}: the anomaly"))?;
        detect.push(t0.elapsed());
        let carries = |c: &CommitEvent| c.anomalies.contains(&a.id);
        next_within(&mut commits, within, carries)
            .await
            .with_context(|| format!("run {k}: the commit"))?;
        commit.push(t0.elapsed());
        let applied = |x: &PolicyAck| x.target == scanner && x.status == "applied";
        next_within(&mut acks, within, applied)
            .await
            .with_context(|| format!("run {k}: the ack"))?;
        ack.push(t0.elapsed());
    }
    sys.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    let line = |what: &str, v: &mut Vec<Duration>| {
        v.sort();
        println!(
            "{what:<24} p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
            pct(v, 0.5).as_secs_f64() * 1e3,
            pct(v, 0.99).as_secs_f64() * 1e3,
            v.last().copied().unwrap_or_default().as_secs_f64() * 1e3
        );
    };
    line("flows -> anomaly", &mut detect);
    line("flows -> first commit", &mut commit);
    line("flows -> ack (dry run)", &mut ack);
    println!(
        "closed loop: {runs} runs, engines every {every_ms} ms: flows -> ack p50 {:.0} ms, p99 {:.0} ms",
        pct(&ack, 0.5).as_secs_f64() * 1e3,
        pct(&ack, 0.99).as_secs_f64() * 1e3
    );
    Ok(())
}
