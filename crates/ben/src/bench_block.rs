//! `ben bench block --runs N --every-ms E`: CyberMesh's closed loop on
//! live traffic. A LAN of network namespaces (`ben_mesh_sensor::lab`),
//! `ben up` with its sensor on the victim's interface and its enforcement
//! agent holding the victim's nftables, the AI service every E ms. Each
//! run scans the victim (a TCP connect scan of 300 ports) from a new
//! scanner address; measured: the anomaly naming it from the newest flow
//! it names (the "within 1 s of the flow"), and from the scan's
//! end the anomaly and the agent's `applied` ack; then the block is
//! checked (the scanner's next connection fails). p50/p99 over the runs.
//!
//! Needs root, nftables and python3. The last line is what scripts read.

use crate::bench::pct;
use crate::bench_loop::next_within;
use anyhow::{anyhow, bail, Context, Result};
use ben_embedded::{Config, System};
use ben_mesh_detect::wire::AnomalyEvent;
use ben_mesh_sensor::lab::Lan;
use ben_mesh_wire::PolicyAck;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn run(runs: usize, every_ms: u64) -> Result<()> {
    if runs == 0 || runs > 150 {
        bail!("--runs must be 1 to 150 (one scanner address each)");
    }
    crate::cluster::runtime()?.block_on(bench(runs, every_ms))
}

async fn bench(runs: usize, every_ms: u64) -> Result<()> {
    let lan = Arc::new(Lan::new().map_err(|e| anyhow!(e))?);
    let dir = std::env::temp_dir().join(format!("ben-bench-block-{}", std::process::id()));
    let mut cfg = Config {
        data_dir: dir.join("data"),
        api_addr: "127.0.0.1:0".parse()?,
        ..Config::default()
    };
    crate::demo_mesh::live_config(&mut cfg, &lan, Duration::from_millis(every_ms.max(1)));
    let sys = System::start(cfg).await.map_err(|e| anyhow!(e))?;
    crate::demo_mesh::sensor_ready(&sys).await?;
    let bus = sys.bus.clone();
    let mut anomalies = bus
        .subscribe(ben_mesh_detect::wire::ANOMALIES_SUBJECT, None)
        .await?;
    let mut acks = bus.subscribe(ben_mesh_wire::ACK_SUBJECT, None).await?;
    let within = Duration::from_millis(every_ms) * 2 + Duration::from_secs(10);
    let (mut detect, mut block, mut from_flow) = (vec![], vec![], vec![]);
    for r in 0..runs {
        let host = 100 + r as u8;
        lan.add_scanner_address(host).map_err(|e| anyhow!(e))?;
        let scanner = lan.ip(host);
        if !crate::demo_mesh::connects(&lan, host).await? {
            bail!("run {r}: {scanner} cannot reach the victim before its scan");
        }
        let l = lan.clone();
        tokio::task::spawn_blocking(move || l.scan(host))
            .await?
            .map_err(|e| anyhow!(e))?;
        let t0 = Instant::now();
        let named = |a: &AnomalyEvent| a.source.as_ref().is_some_and(|s| s.ip == scanner);
        let a = next_within(&mut anomalies, within, named)
            .await
            .with_context(|| format!("run {r}: no anomaly for {scanner}"))?;
        detect.push(t0.elapsed());
        // From the newest flow the anomaly names (its start: a probe
        // lasts well under a millisecond) to its arrival here; the flows'
        // times are the kernel's capture times, on this same clock.
        let newest_us = ben_time::now_ns() / 1_000 - a.last_seen_us;
        from_flow.push(Duration::from_micros(newest_us.max(0) as u64));
        let ack = next_within(&mut acks, within, |a: &PolicyAck| a.target == scanner)
            .await
            .with_context(|| format!("run {r}: no ack for {scanner}"))?;
        if ack.status != "applied" {
            bail!("run {r}: the agent said {} ({})", ack.status, ack.reason);
        }
        block.push(t0.elapsed());
        if crate::demo_mesh::connects(&lan, host).await? {
            bail!("run {r}: {scanner} still connects after its block was applied");
        }
    }
    sys.shutdown().await;
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        eprintln!("ben bench block: {} stays behind: {e}", dir.display());
    }
    detect.sort();
    block.sort();
    from_flow.sort();
    let ms = |v: &[Duration], p: f64| pct(v, p).as_secs_f64() * 1000.0;
    let (d50, d99) = (ms(&detect, 0.5), ms(&detect, 0.99));
    let (b50, b99) = (ms(&block, 0.5), ms(&block, 0.99));
    let (f50, f99) = (ms(&from_flow, 0.5), ms(&from_flow, 0.99));
    println!(
        "{runs} live scans, AI step {every_ms} ms: anomaly p50 {f50:.0} ms p99 {f99:.0} ms after the newest flow it names; from the scan's end: anomaly p50 {d50:.0} ms p99 {d99:.0} ms (0: out before the scan ended), applied in nftables p50 {b50:.0} ms p99 {b99:.0} ms; every scanner blocked"
    );
    println!("bench block: runs {runs} every_ms {every_ms} flow_p50_ms {f50:.0} flow_p99_ms {f99:.0} detect_p50_ms {d50:.0} detect_p99_ms {d99:.0} block_p50_ms {b50:.0} block_p99_ms {b99:.0}");
    Ok(())
}
