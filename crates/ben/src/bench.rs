//! `ben bench datapath`: throughput and app→signal latency of the whole
//! data path in embedded mode, with the example bundle, measured through
//! the real Unix socket (this binary is the attested app).

use anyhow::{Context, Result};
use ben_embedded::{Config, System};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_parser = ["datapath", "activation", "enforce", "consensus", "loop", "sensor", "block", "bus", "dashboard"])]
    pub what: String,
    /// Records to send for the throughput run.
    #[arg(long, default_value_t = 200_000)]
    pub records: u64,
    /// Records per batch.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Run the bus over this NATS server (a per-run subject prefix keeps
    /// runs apart).
    #[arg(long)]
    pub nats: Option<String>,
    /// Embedded throughput run: offer records at this rate (records/s,
    /// all connections together) instead of as fast as possible; shows
    /// whether a rate is sustained (nothing dropped, nothing queued up).
    #[arg(long, default_value_t = 0)]
    pub offered: u64,
    /// App connections sending batches concurrently in the throughput run
    /// (default 2); dashboard: HTTP connections the load is spread over
    /// (default 16).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Brute-force bursts for the latency run (one signal each).
    #[arg(long, default_value_t = 200)]
    pub signals: usize,
    /// Every component in its own process over NATS (`--nats`, default
    /// nats://127.0.0.1:4222), started as `ben cluster up` starts them.
    #[arg(long)]
    pub cluster: bool,
    /// With `--cluster`: the offered rate (records/s) of the latency run
    /// (default 50000). consensus: the offered rates (tx/s,
    /// comma-separated, one line each; default 5000,10000,20000,40000).
    /// bus: the latency pass's rate (anomalies/s; default 1000).
    /// dashboard: requests/s offered (default 1000).
    #[arg(long, value_delimiter = ',')]
    pub rate: Vec<u64>,
    /// With `--cluster`: no JetStream (every subject on core NATS), to
    /// compare.
    #[arg(long)]
    pub no_jetstream: bool,
    /// With `--cluster`: Lucius's scheduling class (`[cpu] lucius`):
    /// `idle` (SCHED_IDLE, the setting for a latency-sensitive data path
    /// on few cores) or `normal`, to compare.
    #[arg(long, value_parser = ["idle", "normal"], default_value = "idle")]
    pub lucius_cpu: String,
    /// activation: components to start (comma-separated: one run each).
    #[arg(long, value_delimiter = ',', default_value = "100")]
    pub components: Vec<usize>,
    /// activation: deploys per run, alternating two versions.
    #[arg(long, default_value_t = 6)]
    pub rounds: usize,
    /// consensus: validators (n = 3f + 1).
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    /// consensus: bytes per transaction.
    #[arg(long, default_value_t = 512)]
    pub tx_size: usize,
    /// consensus: seconds per rate; bus: seconds of the latency pass;
    /// dashboard: seconds of load.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// consensus: signed anomalies (each verified) instead of opaque bytes.
    #[arg(long)]
    pub signed: bool,
    /// loop: replays of the port scan, each from another address; block:
    /// live scans, each from another scanner address.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// loop, block: the AI service's step (ms): it judges arriving flows at
    /// most once per this (`ben up`'s default, 200; the seed's cycle was
    /// 5000).
    #[arg(long, default_value_t = ben_runtime::table::MESH_EVERY.as_millis() as u64)]
    pub every_ms: u64,
    /// enforce: entries to apply through the agent.
    #[arg(long, default_value_t = 100_000)]
    pub entries: usize,
    /// enforce: entries added one `nft add element` at a time beside it
    /// (the time for all `--entries` is extrapolated from these).
    #[arg(long, default_value_t = 1_000)]
    pub one_by_one: usize,
    /// sensor: UDP datagrams sent over the veth pair.
    #[arg(long, default_value_t = 2_000_000)]
    pub packets: u64,
    /// bus: which buses, comma-separated (the same anomalies through each).
    #[arg(long, value_delimiter = ',', default_value = "nats,kafka")]
    pub kind: Vec<String>,
    /// bus: Kafka's bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// sensor: payload bytes per datagram.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
}

impl BenchArgs {
    /// `--cluster`'s offered rate.
    pub fn cluster_rate(&self) -> u64 {
        self.rate.first().copied().unwrap_or(50_000)
    }
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.what == "consensus" {
        return crate::bench_consensus::run(
            args.validators,
            &if args.rate.is_empty() {
                vec![5_000, 10_000, 20_000, 40_000]
            } else {
                args.rate.clone()
            },
            args.tx_size,
            args.seconds,
            args.signed,
        );
    }
    if args.what == "bus" {
        return crate::bench_bus::run(crate::bench_bus::Args {
            kinds: &args.kind,
            records: args.records,
            rate: args.rate.first().copied().unwrap_or(1_000),
            seconds: args.seconds,
            nats: args.nats.as_deref().unwrap_or("nats://127.0.0.1:4222"),
            brokers: &args.brokers,
        });
    }
    if args.what == "dashboard" {
        return crate::bench_dashboard::run(crate::bench_dashboard::Args {
            rate: args.rate.first().copied().unwrap_or(1_000),
            seconds: args.seconds.max(1),
            connections: args.connections.unwrap_or(16),
        });
    }
    if args.what == "loop" {
        return crate::bench_loop::run(args.runs, args.every_ms);
    }
    if args.what == "block" {
        return crate::bench_block::run(args.runs, args.every_ms);
    }
    if args.what == "sensor" {
        return crate::bench_sensor::run(args.packets, args.payload);
    }
    if args.what == "enforce" {
        return crate::bench_enforce::run(args.entries, args.one_by_one);
    }
    if args.what == "activation" {
        return crate::bench_activation::run(args.nats.as_deref(), &args.components, args.rounds);
    }
    let rt = crate::cluster::runtime()?;
    if args.cluster {
        return rt.block_on(crate::bench_cluster::datapath(args));
    }
    rt.block_on(datapath(args))
}

pub(crate) fn rec(i: u64, url: &str, code: u16, ip: &str) -> serde_json::Value {
    json!({
        "timestamp": "2026-01-01T00:00:00Z", "verb": "get", "url": url, "code": code.to_string(),
        "size": i % 5000, "remote_addr": ip,
        "customer": {"email": format!("c{}@example.com", i % 1000)},
        "comment": if i.is_multiple_of(10) { json!("mail me at someone@example.com") } else { json!(null) }
    })
}

/// This process's user + system CPU time, from `/proc/self/stat`
/// (Linux; `None` elsewhere).
fn cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at
    // state; utime and stime are fields 14 and 15 of the whole line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // The kernel reports in USER_HZ, which is 100 on every Linux ABI.
    let user = f.get(11)?.parse::<f64>().ok()? / 100.0;
    let sys = f.get(12)?.parse::<f64>().ok()? / 100.0;
    Some((user, sys))
}

pub(crate) fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A `ben up` in a scratch dir `ben-bench-<name>-<pid>` (returned), on
/// NATS when given, with the example bundle deployed and this process
/// attested as the shop app.
pub(crate) async fn shop_system(name: &str, nats: Option<String>) -> Result<(System, PathBuf)> {
    let dir = std::env::temp_dir().join(format!("ben-bench-{name}-{}", std::process::id()));
    // A scratch dir an earlier run left behind, if any.
    let _left_behind = std::fs::remove_dir_all(&dir);
    let bundle = crate::shop::write_bundle(&dir.join("bundle"))?;
    let sys = System::start(Config {
        data_dir: dir.join("data"),
        api_addr: "127.0.0.1:0".parse()?,
        extra_selectors: vec![crate::shop::selector_for_this_process()?],
        nats: nats.map(|url| ben_embedded::NatsConfig {
            url,
            prefix: Some(format!("benbench{}", std::process::id())),
        }),
        ..Config::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!(e))?;
    sys.deploy_dir(&bundle)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok((sys, dir))
}

/// Stops `sys` and removes its scratch dir (saying so when it stays).
pub(crate) async fn stop_shop_system(sys: System, dir: &Path) {
    sys.shutdown().await;
    if let Err(e) = std::fs::remove_dir_all(dir) {
        eprintln!("ben bench: {} stays behind: {e}", dir.display());
    }
}

async fn datapath(args: BenchArgs) -> Result<()> {
    let (sys, dir) = shop_system("datapath", args.nats.clone()).await?;
    let mut app = ben_client::Client::connect(sys.cfg.socket_path(), "shop_web").await?;

    // Throughput: a mix that exercises both routes (most to Lucius,
    // server errors to the spines) until every record reached its last hop.
    // The app's records are serialised before the clock starts: what the
    // app spends making JSON is not Ben's.
    let batches: Vec<Vec<Vec<u8>>> = (0..args.records.div_ceil(args.batch as u64))
        .map(|b| {
            (0..args.batch as u64)
                .map(|i| {
                    let n = b * args.batch as u64 + i;
                    let r = if n.is_multiple_of(20) {
                        rec(n, "/checkout", 503, "10.0.0.1")
                    } else {
                        rec(n, "/products/1", 200, "198.51.100.1")
                    };
                    serde_json::to_vec(&r).unwrap_or_default()
                })
                .collect()
        })
        .collect();
    // The app's connections (an app with several workers): batches dealt
    // round robin, each connection sending its next batch once the
    // previous one is accepted.
    let conns = args.connections.unwrap_or(2).max(1);
    let mut lanes: Vec<Vec<Vec<Vec<u8>>>> = (0..conns).map(|_| Vec::new()).collect();
    for (i, b) in batches.into_iter().enumerate() {
        lanes[i % conns].push(b);
    }
    let mut clients = Vec::with_capacity(conns);
    for _ in 0..conns {
        clients.push(ben_client::Client::connect(sys.cfg.socket_path(), "shop_web").await?);
    }
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    // With --offered: each connection's k-th batch leaves no earlier than
    // k batch periods after the start.
    let period = (args.offered > 0)
        .then(|| Duration::from_secs_f64(args.batch as f64 * conns as f64 / args.offered as f64));
    let start = tokio::time::Instant::now();
    for (mut c, lane) in clients.into_iter().zip(lanes) {
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            for (k, b) in lane.into_iter().enumerate() {
                if let Some(p) = period {
                    tokio::time::sleep_until(start + p * k as u32).await;
                }
                n += c.send_raw(b).await?.accepted;
            }
            Ok::<u64, ben_client::ClientError>(n)
        }));
    }
    let mut sent = 0u64;
    for t in tasks {
        sent += t.await.context("an app connection task")??;
    }
    let accept_elapsed = t0.elapsed();
    sys.drain(Duration::from_secs(120)).await;
    let elapsed = t0.elapsed();
    let cpu = cpu_seconds().zip(cpu0).map(|(b, a)| (b.0 - a.0, b.1 - a.1));
    let lost = sys.stats.totals().dropped;
    if args.offered > 0 {
        println!("offered {} records/s", args.offered);
    }
    if lost > 0 {
        eprintln!(
            "warning: Lucius dropped {lost} records (its writer fell behind; they are counted, not stored): the rate below includes them"
        );
    }
    println!(
        "datapath throughput: {sent} records in {:.2} s = {:.0} records/s end to end (sidecar accepted at {:.0} records/s); {}",
        elapsed.as_secs_f64(),
        sent as f64 / elapsed.as_secs_f64(),
        sent as f64 / accept_elapsed.as_secs_f64(),
        sys.status_line().await
    );
    if let Some((user, sys)) = cpu {
        println!(
            "cpu: {:.2} s user + {:.2} s sys for the run = {:.2} µs per record (all threads, app included; {} app connections; {} cores)",
            user,
            sys,
            (user + sys) * 1e6 / sent.max(1) as f64,
            conns,
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
    }

    // Latency app→signal: each burst of five failed logins from a new IP
    // fires one signal; measured from sending the batch to receiving it.
    let mut lat = Vec::with_capacity(args.signals);
    for k in 0..args.signals {
        let ip = format!("203.0.{}.{}", k / 250, k % 250 + 1);
        let burst: Vec<_> = (0..5).map(|i| rec(i, "/login", 401, &ip)).collect();
        let t = Instant::now();
        app.send(&burst).await?;
        match tokio::time::timeout(Duration::from_secs(5), app.signals.recv()).await {
            Ok(Some(_)) => lat.push(t.elapsed()),
            _ => anyhow::bail!("no signal for burst {k}"),
        }
    }
    lat.sort();
    println!(
        "app→signal latency over {} signals: p50 {:?}, p99 {:?}, max {:?}",
        lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or_default()
    );
    stop_shop_system(sys, &dir).await;
    Ok(())
}
