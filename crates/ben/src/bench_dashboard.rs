//! `ben bench dashboard`: the dashboard's overview under load, on
//! loopback. A `ben up` (every component, the example bundle deployed, the
//! demo app's traffic flowing) answers `GET /api/dashboard/overview` at a
//! fixed offered rate (`--rate`, default 1,000 requests/s) for
//! `--seconds` over `--connections` keep-alive connections. Each request
//! has its time in the schedule, and its latency is counted from then
//! (a request sent late because the previous one was slow counts that
//! wait: no coordinated omission). Prints one JSON line: the rate
//! achieved, p50/p90/p99/max, how many answers came from the cache.

use crate::bench::pct;
use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

pub struct Args {
    pub rate: u64,
    pub seconds: u64,
    pub connections: usize,
}

pub fn run(args: Args) -> Result<()> {
    crate::cluster::runtime()?.block_on(bench(args))
}

/// One answer: when it was due, how long after that it arrived, whether
/// the cache had it.
struct Answer {
    late: Duration,
    hit: bool,
}

/// Sends `GET path` on `conn` (keep-alive) and reads the whole answer.
async fn get(conn: &mut BufReader<tokio::net::TcpStream>, head: &[u8]) -> Result<bool> {
    conn.get_mut().write_all(head).await?;
    let mut line = String::new();
    conn.read_line(&mut line).await?;
    if !line.starts_with("HTTP/1.1 200") {
        bail!("the overview answered {}", line.trim());
    }
    let (mut len, mut hit) = (0usize, false);
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            bail!("the connection closed mid-answer");
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let lower = l.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse()?;
        } else if let Some(v) = lower.strip_prefix("x-ben-cache:") {
            hit = v.trim() == "hit";
        }
    }
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).await?;
    Ok(hit)
}

async fn bench(args: Args) -> Result<()> {
    if args.rate == 0 || args.connections == 0 || args.seconds == 0 {
        bail!("--rate, --connections and --seconds must be above 0");
    }
    let (sys, dir) = crate::bench::shop_system("dashboard", None).await?;
    // Traffic through the data path while the dashboard is read, so its
    // counters move (200 records/s, as an app would send them).
    let mut app = ben_client::Client::connect(sys.cfg.socket_path(), "shop_web").await?;
    let traffic = tokio::spawn(async move {
        let mut i = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tick.tick().await;
            let batch: Vec<Vec<u8>> = (0..10)
                .map(|_| {
                    i += 1;
                    serde_json::to_vec(&crate::bench::rec(i, "/products/1", 200, "198.51.100.1"))
                        .unwrap_or_default()
                })
                .collect();
            if app.send_raw(batch).await.is_err() {
                break;
            }
        }
    });
    let addr = sys.api_addr();
    let token = std::fs::read_to_string(sys.cfg.data_dir.join("api.token"))
        .context("reading the API token")?;
    let head = format!(
        "GET /api/dashboard/overview HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\r\n",
        token.trim()
    )
    .into_bytes();
    // Warm: one request loads the cache.
    {
        let mut c = BufReader::new(tokio::net::TcpStream::connect(addr).await?);
        get(&mut c, &head).await?;
    }
    let total = args.rate * args.seconds;
    let gap = Duration::from_secs_f64(1.0 / args.rate as f64);
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    // On a terminal only (indicatif hides it otherwise).
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    )
    .with_style(
        indicatif::ProgressStyle::with_template("requests {bar:30} {pos}/{len} ({eta} left)")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut tasks = Vec::new();
    for k in 0..args.connections {
        let head = head.clone();
        let bar = bar.clone();
        let n = args.connections as u64;
        tasks.push(tokio::spawn(async move {
            let mut c = BufReader::new(tokio::net::TcpStream::connect(addr).await?);
            c.get_mut().set_nodelay(true)?;
            let mut out = Vec::new();
            let mut i = k as u64;
            while i < total {
                let due = start + gap * i as u32;
                tokio::time::sleep_until(due).await;
                let hit = get(&mut c, &head).await?;
                out.push(Answer {
                    late: tokio::time::Instant::now().saturating_duration_since(due),
                    hit,
                });
                bar.inc(1);
                i += n;
            }
            Ok::<_, anyhow::Error>(out)
        }));
    }
    let began = Instant::now();
    let mut answers = Vec::new();
    for t in tasks {
        answers.extend(t.await??);
    }
    let took = began.elapsed().saturating_sub(Duration::from_millis(100));
    bar.finish_and_clear();
    traffic.abort();
    let mut lat: Vec<Duration> = answers.iter().map(|a| a.late).collect();
    lat.sort();
    let hits = answers.iter().filter(|a| a.hit).count();
    let ms = |d: Duration| (d.as_secs_f64() * 1e5).round() / 100.0;
    println!(
        "{}",
        serde_json::json!({
            "bench": "dashboard overview",
            "offered_per_s": args.rate,
            "achieved_per_s": (answers.len() as f64 / took.as_secs_f64()).round(),
            "requests": answers.len(),
            "connections": args.connections,
            "from_cache": hits,
            "p50_ms": ms(pct(&lat, 0.50)),
            "p90_ms": ms(pct(&lat, 0.90)),
            "p99_ms": ms(pct(&lat, 0.99)),
            "max_ms": ms(lat.last().copied().unwrap_or_default()),
            "goal": "p99 < 50 ms at 1,000 requests/s from cache",
        })
    );
    crate::bench::stop_shop_system(sys, &dir).await;
    Ok(())
}
