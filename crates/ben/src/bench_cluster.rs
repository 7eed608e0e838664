//! `ben bench datapath --cluster`: the data path with every component in
//! its own process over NATS, started the way `ben cluster up` starts them
//! (`ben_cluster::cluster_up` running in this process spawns this
//! executable as `ben run <component>` children), the shop bundle deployed
//! through the control process's HTTP API (the calls `benctl stage` and
//! `benctl deploy` make), and this process attested as the app.
//!
//! Two figures:
//! * throughput: every record sent as fast as the sidecar takes them, until
//!   the cluster's record books say each accepted record reached its last
//!   hop (a detector, Lucius or a dead letter) or was counted lost;
//! * app→signal latency at a fixed offered rate (`--rate`, records/s):
//!   batches paced to that rate, with a brute-force burst (five failed
//!   logins from a new address: one signal) every few batches, timed from
//!   sending the burst to the signal arriving at this app.
//!
//! The books come from per-process metrics reported every 500 ms, so the
//! throughput's end time is known to about half a second.

use crate::bench::{pct, rec, BenchArgs};
use anyhow::{anyhow, bail, Context, Result};
use ben_bus::Bus;
use ben_cluster::{self as cluster, ClusterConfig};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the cluster may take to come up, and the books to balance.
const UP_TIMEOUT: Duration = Duration::from_secs(120);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);

pub async fn datapath(args: BenchArgs) -> Result<()> {
    if args.cluster_rate() == 0 {
        bail!("--rate must be positive");
    }
    let batch = args.batch.max(1);
    let nats = args
        .nats
        .clone()
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let t = ben_time::now_ns();
    let run = format!("{}-{t}", std::process::id());
    let dir = std::env::temp_dir().join(format!("ben-bench-cluster-{run}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let cfg = write_config(
        &dir,
        &nats,
        &format!("benbench-{run}"),
        !args.no_jetstream,
        &args.lucius_cpu,
    )?;
    let bundle = crate::shop::write_bundle(&dir.join("bundle"))?;

    // The supervisor's progress lines go to a log (printed if it fails).
    let log_path = dir.join("cluster.log");
    let log = Arc::new(Mutex::new(
        std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?,
    ));
    let say: Arc<dyn Fn(String) + Send + Sync> = Arc::new(move |line| {
        if let Ok(mut f) = log.lock() {
            let _ = writeln!(f, "{line}");
        }
    });
    let exe = std::env::current_exe().context("finding this executable")?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let up = {
        let cfg = cfg.clone();
        tokio::spawn(async move {
            cluster::cluster_up(
                &cfg,
                exe,
                async {
                    let _ = stop_rx.await;
                },
                say,
            )
            .await
        })
    };
    println!(
        "cluster bench: NATS {nats}, prefix {}, {} processes, Lucius CPU class {:?}, durable subjects {}, data {}",
        cfg.prefix,
        cfg.started().len(),
        cfg.cpu_class("lucius"),
        match cfg.jetstream {
            Some(_) => "in JetStream",
            None => "on core NATS",
        },
        cfg.data_dir.display()
    );

    let measured = measure(&cfg, &bundle, &args, batch, &up).await;

    // Stop every process cleanly (sidecar first, control last).
    let _ = stop_tx.send(());
    let stopped = tokio::time::timeout(cfg.stop_grace * 3 + Duration::from_secs(10), up).await;
    // The run's prefix is thrown away: so is its JetStream stream.
    if let Ok(b) = cluster::nats_bus(&cfg, None).await {
        let _ = b.delete_stream().await;
    }
    let log_text = std::fs::read_to_string(&log_path).unwrap_or_default();
    match (&measured, stopped) {
        (Ok(()), Ok(Ok(Ok(())))) => {
            if let Some(last) = log_text.lines().rev().find(|l| l.contains("final:")) {
                println!("{last}");
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
        (_, stopped) => {
            eprintln!(
                "cluster bench: the cluster's log ({}):\n{log_text}",
                log_path.display()
            );
            match stopped {
                Ok(Ok(Err(e))) => eprintln!("cluster bench: ben cluster up failed: {e}"),
                Ok(Err(e)) => eprintln!("cluster bench: the supervisor task failed: {e}"),
                Err(_) => eprintln!("cluster bench: the processes did not stop in time"),
                Ok(Ok(Ok(()))) => {}
            }
            measured.as_ref().map_err(|e| anyhow!("{e:#}"))?;
            bail!(
                "the cluster did not stop cleanly (data left in {})",
                dir.display()
            );
        }
    }
    measured
}

/// Writes the cluster config: this run's prefix, the API on a free port,
/// no spare ids, and a selector that attests this executable as the app.
fn write_config(
    dir: &Path,
    nats: &str,
    prefix: &str,
    jetstream: bool,
    lucius_cpu: &str,
) -> Result<ClusterConfig> {
    let me = crate::shop::selector_for_this_process()?;
    let uid = me.uid.map(|u| format!("uid = {u}\n")).unwrap_or_default();
    let exe = me.exe.unwrap_or_default();
    let text = format!(
        "nats = {nats}\nprefix = {prefix}\ndata_dir = \"data\"\n\
         [control]\napi = \"127.0.0.1:0\"\nprepare_timeout_ms = 20000\n\
         [scale]\nspare = 0\n\
         [jetstream]\nenabled = {jetstream}\n\
         [cpu]\nlucius = {lucius_cpu}\n\
         [[sidecar.selectors]]\napp = \"shop_web\"\n{uid}exe = {exe}\n",
        nats = toml_str(nats),
        prefix = toml_str(prefix),
        exe = toml_str(&exe),
        lucius_cpu = toml_str(lucius_cpu),
    );
    let path = dir.join("cluster.toml");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    ClusterConfig::load(&path).map_err(anyhow::Error::msg)
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

async fn measure(
    cfg: &ClusterConfig,
    bundle: &Path,
    args: &BenchArgs,
    batch: usize,
    up: &tokio::task::JoinHandle<Result<(), String>>,
) -> Result<()> {
    let bus = cluster::connect(cfg).await.map_err(anyhow::Error::msg)?;
    let t_up = Instant::now();
    let want = cfg.started().len();
    loop {
        if up.is_finished() {
            bail!("ben cluster up ended while starting");
        }
        let s = status(&bus).await;
        if s["components"]
            .as_object()
            .is_some_and(|m| m.len() == want && m.values().all(|v| v["healthy"] == true))
        {
            break;
        }
        if t_up.elapsed() > UP_TIMEOUT {
            bail!("the cluster was not healthy within {UP_TIMEOUT:?}: {s}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let api: SocketAddr = std::fs::read_to_string(cfg.api_file())
        .context("reading the control API's address")?
        .trim()
        .parse()
        .context("the control API's address")?;
    println!(
        "cluster up in {:.1} s; API http://{api}",
        t_up.elapsed().as_secs_f64()
    );
    let t_dep = Instant::now();
    // The API's token, where `benctl --data-dir` reads it.
    let token_file = ben_control::auth::token_path(&cfg.data_dir);
    let token = std::fs::read_to_string(&token_file)
        .with_context(|| format!("reading the API token {}", token_file.display()))?;
    let version = deploy(
        &Api {
            addr: api,
            token: token.trim().to_string(),
        },
        bundle,
    )
    .await?;
    println!(
        "deployed {version} through the API in {:.2} s",
        t_dep.elapsed().as_secs_f64()
    );

    let mut app = ben_client::Client::connect(&cfg.socket, "shop_web")
        .await
        .context("connecting to the sidecar as shop_web")?;
    // Signals are timed by their own task as they arrive.
    let (_keep, idle) = tokio::sync::mpsc::channel(1);
    let mut signals = std::mem::replace(&mut app.signals, idle);
    let (sig_tx, mut sig_rx) = tokio::sync::mpsc::unbounded_channel::<(Vec<String>, Instant)>();
    let reader = tokio::spawn(async move {
        while let Some(s) = signals.recv().await {
            if sig_tx.send((s.key, Instant::now())).is_err() {
                break;
            }
        }
    });

    // (a) Throughput.
    let batches = encode(args.records, batch, 0)?;
    let t0 = Instant::now();
    let mut sent = 0u64;
    for b in batches {
        sent += app.send_raw(b).await?.accepted;
    }
    let accept_elapsed = t0.elapsed();
    let (books, done_at) = settle(&bus, sent, 0, true).await?;
    let elapsed = done_at.duration_since(t0);
    println!(
        "cluster datapath throughput: {sent} records in {:.2} s = {:.0} records/s end to end (sidecar accepted at {:.0} records/s); lost {}; {}",
        elapsed.as_secs_f64(),
        sent as f64 / elapsed.as_secs_f64().max(1e-9),
        sent as f64 / accept_elapsed.as_secs_f64().max(1e-9),
        books["lost"],
        books_line(&books)
    );

    // (b) Latency at a fixed offered rate.
    let before = books["accepted"].as_u64().unwrap_or(sent);
    // The latency run starts from a quiet cluster: Lucius counts a record
    // when it queues it for its writer, so after the burst its SQLite
    // writer may still hold up to a queue's worth of rows.
    let t_quiet = Instant::now();
    lucius_caught_up(&bus).await?;
    println!(
        "Lucius's writer caught up {:.2} s after the books balanced",
        t_quiet.elapsed().as_secs_f64()
    );
    let bg = encode(args.records, batch, args.records)?;
    let n = bg.len();
    let every = (n / args.signals.max(1)).max(1);
    let per_batch = Duration::from_secs_f64(batch as f64 / args.cluster_rate() as f64);
    let mut sent_at: HashMap<String, Instant> = HashMap::new();
    let mut offered = 0u64;
    // Each process's record ages at arrival, per metrics interval, while
    // the paced run lasts: where the latency goes, hop by hop.
    let ages: Arc<Mutex<AgeSamples>> = Arc::default();
    let sampler = {
        let (bus, ages) = (bus.clone(), ages.clone());
        tokio::spawn(async move {
            let mut last_at = Value::Null;
            loop {
                let s = status(&bus).await;
                if s["at_ns"] != last_at {
                    last_at = s["at_ns"].clone();
                    let Ok(mut seen) = ages.lock() else { return };
                    for (id, c) in s["components"].as_object().into_iter().flatten() {
                        let a = &c["age"];
                        if let (Some(p50), Some(p99)) = (a["p50_us"].as_u64(), a["p99_us"].as_u64())
                        {
                            seen.entry(id.clone()).or_default().push((p50, p99));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let t0 = tokio::time::Instant::now();
    for (k, b) in bg.into_iter().enumerate() {
        tokio::time::sleep_until(t0 + per_batch * k as u32).await;
        offered += b.len() as u64;
        app.send_raw(b).await?;
        if k % every == 0 && sent_at.len() < args.signals {
            let i = sent_at.len();
            let ip = format!("203.0.{}.{}", i / 250, i % 250 + 1);
            let burst = (0..5u64)
                .map(|j| serde_json::to_vec(&rec(j, "/login", 401, &ip)))
                .collect::<Result<Vec<_>, _>>()?;
            offered += 5;
            sent_at.insert(ip, Instant::now());
            app.send_raw(burst).await?;
        }
    }
    let paced = t0.elapsed();
    sampler.abort();
    let mut lat = Vec::with_capacity(sent_at.len());
    let deadline = Instant::now() + Duration::from_secs(10);
    while lat.len() < sent_at.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sig_rx.recv()).await {
            Ok(Some((key, at))) => {
                if let Some(t) = key.iter().find_map(|k| sent_at.get(k)) {
                    lat.push(at.duration_since(*t));
                }
            }
            _ => break,
        }
    }
    reader.abort();
    lat.sort();
    let achieved = offered as f64 / paced.as_secs_f64().max(1e-9);
    println!(
        "cluster app→signal latency at {} records/s offered ({achieved:.0} records/s achieved, {offered} records in {:.2} s): {} of {} signals, p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        args.cluster_rate(),
        paced.as_secs_f64(),
        lat.len(),
        sent_at.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.9),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or_default()
    );
    println!(
        "{}",
        ages_lines(&ages.lock().map(|a| a.clone()).unwrap_or_default())
    );
    let (books, _) = settle(&bus, before + offered, before, false).await?;
    println!("books after both runs: {}", books_line(&books));
    if lat.len() < sent_at.len() {
        bail!(
            "{} of {} signals did not arrive within 10 s of the last send",
            sent_at.len() - lat.len(),
            sent_at.len()
        );
    }
    Ok(())
}

/// Per process id: (p50, p99) µs of each metrics interval that had records.
type AgeSamples = HashMap<String, Vec<(u64, u64)>>;

/// Per process: the median of its per-interval p50 ages and the largest
/// of its per-interval p99s, in path order (the sidecar's are its
/// signals', the end of the path).
fn ages_lines(ages: &AgeSamples) -> String {
    let rank = |id: &str| {
        ["proxy", "spine", "detector", "lucius", "sidecar"]
            .iter()
            .position(|k| id.starts_with(k))
            .unwrap_or(9)
    };
    let mut ids: Vec<&String> = ages.keys().collect();
    ids.sort_by_key(|id| (rank(id), id.to_string()));
    let mut out = String::from(
        "record age on arrival (since the sidecar received it; µs; median of 500 ms p50s / worst p99):",
    );
    for id in ids {
        // The first interval began before the paced run (it holds the end
        // of the throughput run's backlog): left out.
        let v = &ages[id][1..];
        if v.is_empty() {
            continue;
        }
        let mut p50: Vec<u64> = v.iter().map(|x| x.0).collect();
        p50.sort_unstable();
        let worst = v.iter().map(|x| x.1).max().unwrap_or(0);
        let what = if id.starts_with("sidecar") {
            " (signals to the app)"
        } else {
            ""
        };
        out.push_str(&format!(
            "\n  {id}{what}: p50 {} / p99 {worst} ({} intervals)",
            p50[p50.len() / 2],
            v.len()
        ));
    }
    out
}

/// `records` shop records (`first`…), encoded, in batches of `batch`: most
/// go to Lucius, every 20th (a server error) to the detectors.
fn encode(records: u64, batch: usize, first: u64) -> Result<Vec<Vec<Vec<u8>>>> {
    let mut out = Vec::with_capacity(records.div_ceil(batch as u64) as usize);
    let mut b = Vec::with_capacity(batch);
    for n in first..first + records {
        let r = if n.is_multiple_of(20) {
            rec(n, "/checkout", 503, "10.0.0.1")
        } else {
            rec(n, "/products/1", 200, "198.51.100.1")
        };
        b.push(serde_json::to_vec(&r)?);
        if b.len() == batch {
            out.push(std::mem::replace(&mut b, Vec::with_capacity(batch)));
        }
    }
    if !b.is_empty() {
        out.push(b);
    }
    Ok(out)
}

/// Waits until every Lucius has written (or dropped) every record it took.
async fn lucius_caught_up(bus: &Arc<dyn Bus>) -> Result<()> {
    let t0 = Instant::now();
    loop {
        let s = status(bus).await;
        let behind: u64 = s["components"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, c)| c["kind"] == "lucius")
            .map(|(_, c)| n(&c["processed"]).saturating_sub(n(&c["written"]) + n(&c["dropped"])))
            .sum();
        if behind == 0 && !s.is_null() {
            return Ok(());
        }
        if t0.elapsed() > DRAIN_TIMEOUT {
            bail!("Lucius was still {behind} rows behind after {DRAIN_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The supervisor's status (its answer on `ben.cluster.status`).
async fn status(bus: &Arc<dyn Bus>) -> Value {
    match bus
        .request(cluster::STATUS, vec![], Duration::from_secs(2))
        .await
    {
        Ok(m) => serde_json::from_slice(&m.payload).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Polls the books until at least `accepted` records were accepted and
/// every one is accounted for (reached a last hop, a dead letter, or
/// settled as lost); with `quick`, a balance with nothing lost ends the
/// wait without the settle time. Returns the books and when the last hop
/// counters last moved.
async fn settle(
    bus: &Arc<dyn Bus>,
    accepted: u64,
    base: u64,
    quick: bool,
) -> Result<(Value, Instant)> {
    let t0 = Instant::now();
    let mut last_sum = None;
    let mut moved = Instant::now();
    loop {
        let s = status(bus).await;
        let r = &s["records"];
        let sum = n(&r["to_detectors"]) + n(&r["to_lucius"]) + n(&r["dead_letters"]);
        if last_sum != Some(sum) {
            last_sum = Some(sum);
            moved = Instant::now();
        }
        let acc = n(&r["accepted"]);
        let balanced = acc >= accepted && sum + n(&r["lost"]) == acc;
        if acc >= accepted && ((quick && sum == acc) || (r["settled"] == true && balanced)) {
            return Ok((r.clone(), moved));
        }
        if t0.elapsed() > DRAIN_TIMEOUT {
            bail!(
                "the books did not balance within {DRAIN_TIMEOUT:?} ({} of {} new records accepted): {}",
                acc.saturating_sub(base),
                accepted.saturating_sub(base),
                books_line(r)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn books_line(r: &Value) -> String {
    format!(
        "accepted {} = detectors {} + lucius {} + dead letters {} + lost {} (in flight {}, signals {}, lucius dropped {})",
        r["accepted"],
        r["to_detectors"],
        r["to_lucius"],
        r["dead_letters"],
        r["lost"],
        r["in_flight"],
        r["signals"],
        r["dropped"]
    )
}

/// The control API: where, and its token.
struct Api {
    addr: SocketAddr,
    token: String,
}

/// One HTTP/1.1 request to the control API (loopback, `Connection:
/// close`); returns the status code and the body.
async fn http(api: &Api, method: &str, path: &str, body: &[u8]) -> Result<(u16, String)> {
    let (addr, token) = (api.addr, &api.token);
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to the API at {addr}"))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out))
        .await
        .with_context(|| format!("{method} {path}: no answer within 30 s"))??;
    let out = String::from_utf8_lossy(&out);
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("{method} {path}: not an HTTP answer"))?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// Uploads the bundle's artifacts, stages its version and deploys it, as
/// `benctl stage DIR` and `benctl deploy VERSION --wait` do; returns the
/// version once the deploy is finalized.
async fn deploy(api: &Api, dir: &Path) -> Result<String> {
    let built = ben_intent::Bundle::load(dir)
        .map_err(|e| anyhow!("loading the shop bundle: {e}"))?
        .build()
        .map_err(|f| {
            anyhow!(
                "the shop bundle does not build ({} diagnostics)",
                f.diagnostics.len()
            )
        })?;
    let mut artifacts = serde_json::Map::new();
    for a in &built.artifacts {
        let hash = a.hash.to_hex().to_string();
        let (code, body) = http(api, "PUT", &format!("/api/v1/artifacts/{hash}"), &a.bytes).await?;
        if code != 200 && code != 201 {
            bail!("uploading {}: {code} {body}", a.name);
        }
        artifacts.insert(a.name.clone(), Value::String(hash));
    }
    let stage = json!({
        "version": built.version, "bundle": built.name,
        "digest": built.digest.to_hex().to_string(), "artifacts": artifacts,
    });
    let (code, body) = http(
        api,
        "POST",
        "/api/v1/versions",
        stage.to_string().as_bytes(),
    )
    .await?;
    if code != 200 && code != 201 {
        bail!("staging {}: {code} {body}", built.version);
    }
    let (code, body) = http(
        api,
        "POST",
        "/api/v1/deploy",
        json!({ "version": built.version }).to_string().as_bytes(),
    )
    .await?;
    if !(200..300).contains(&code) {
        bail!("deploying {}: {code} {body}", built.version);
    }
    let id = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["id"].as_i64());
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(60) {
        let (code, body) = http(api, "GET", "/api/v1/status", b"").await?;
        let s: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let d = &s["deploy"];
        if code == 200 && (id.is_none() || d["id"].as_i64() == id) {
            match d["phase"].as_str() {
                Some("finalized") => return Ok(built.version.clone()),
                Some("aborted") => bail!("the deploy of {} was aborted: {d}", built.version),
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the deploy of {} did not finish within 60 s", built.version)
}
