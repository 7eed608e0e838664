//! `ben demo-app`: a small web shop that sends its request log to Ben
//! through the sidecar and prints the signals Ben sends back.

use anyhow::{Context, Result};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// The sidecar's socket.
    #[arg(long, default_value = ".ben/sidecar.sock")]
    pub socket: PathBuf,
    /// Seconds of traffic.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
}

const PAGES: [&str; 6] = [
    "/",
    "/products/42",
    "/products/7",
    "/cart",
    "/search?q=lamp",
    "/help",
];

fn record(i: u64, url: &str, code: u16, ip: &str, user: u64) -> serde_json::Value {
    json!({
        "timestamp": format_now(),
        "verb": if code == 401 { "post" } else { "get" },
        "url": url,
        "code": code.to_string(),
        "size": 200 + (i * 37) % 5000,
        "remote_addr": ip,
        "customer": { "email": format!("customer{user}@example.com"), "card": if i.is_multiple_of(9) { json!("4111 1111 1111 1111") } else { json!(null) } },
        "comment": if i.is_multiple_of(13) { json!(format!("please call +1 415 555 {:04}", i % 10000)) } else { json!(null) },
    })
}

fn format_now() -> String {
    time_of(ben_time::now_ns())
}

/// RFC 3339 (UTC, seconds) of nanoseconds since the epoch.
fn time_of(ns: i64) -> String {
    // Whole seconds are enough for a person reading the demo.
    ben_time::format_rfc3339(ns - ns.rem_euclid(1_000_000_000))
}

pub fn run(args: DemoArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(demo(args))
}

async fn demo(args: DemoArgs) -> Result<()> {
    let mut c = ben_client::Client::connect(&args.socket, "shop_web")
        .await
        .context("connecting to the sidecar")?;
    let w = c.welcome().await;
    println!(
        "demo-app: attested as {} (BEE expires in {} s), intent {}",
        w.bee_subject,
        (w.expires_ns - ben_time::now_ns()) / 1_000_000_000,
        w.intent_version
    );
    let start = tokio::time::Instant::now();
    let mut i = 0u64;
    let mut sent = 0u64;
    let mut rejected = 0u64;
    let mut bursts = 0;
    while start.elapsed() < Duration::from_secs(args.seconds) {
        let t = start.elapsed().as_secs();
        let mut batch = Vec::with_capacity(50);
        for _ in 0..50 {
            i += 1;
            let code = match i % 40 {
                0 => 503,
                1 => 404,
                _ => 200,
            };
            let ip = if i.is_multiple_of(7) {
                format!("10.0.{}.{}", i % 5, i % 200)
            } else {
                format!("198.51.100.{}", i % 200)
            };
            batch.push(record(i, PAGES[(i % 6) as usize], code, &ip, i % 500));
        }
        // Two brute-force bursts: someone guessing the admin password.
        if (t == 5 && bursts == 0) || (t == 15 && bursts == 1) {
            let ip = if bursts == 0 {
                "203.0.113.66"
            } else {
                "192.0.2.99"
            };
            println!("demo-app: sending a brute-force burst from {ip}");
            for k in 0..8 {
                batch.push(record(i + k, "/admin/login", 401, ip, 1));
            }
            bursts += 1;
        }
        let acc = c.send(&batch).await.context("sending records")?;
        sent += acc.accepted;
        rejected += acc.errors.len() as u64;
        while let Ok(s) = c.signals.try_recv() {
            println!(
                "\ndemo-app: SIGNAL {} severity {} key {:?} count {} at {} (intent {})",
                s.name,
                s.severity,
                s.key,
                s.value,
                time_of(s.at_ns),
                s.intent_version
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Signals still on their way.
    let until = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(s)) = tokio::time::timeout_at(until, c.signals.recv()).await {
        println!(
            "\ndemo-app: SIGNAL {} severity {} key {:?} count {} at {}",
            s.name,
            s.severity,
            s.key,
            s.value,
            time_of(s.at_ns)
        );
    }
    println!("\ndemo-app: done: {sent} records accepted, {rejected} rejected");
    Ok(())
}
