//! `ben up [--demo]`: the whole system in one process.

use anyhow::{Context, Result};
use ben_embedded::{Config, System};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct UpArgs {
    /// Deploy the example bundle (examples/shop) and run the demo app.
    #[arg(long)]
    pub demo: bool,
    /// With --demo (root): the security path live, in network namespaces
    /// this run makes (a victim, a scanner, a benign client): the sensor
    /// on the victim's interface, the agent in its nftables, the AI
    /// service judging flows as they arrive; the scanner's packets stop.
    #[arg(long, requires = "demo", conflicts_with = "sensor_iface")]
    pub netns: bool,
    /// Data directory (ledger database, store, keys, sockets). Private
    /// (0700): only its owner gets in.
    #[arg(long, default_value = ".ben")]
    pub data_dir: PathBuf,
    /// The sidecar's Unix socket (default DATA_DIR/sidecar.sock). Apps
    /// that run as another user need it outside the private data dir, in
    /// a directory they can reach (e.g. /run/ben/sidecar.sock); who may
    /// send is then decided by attestation, as always.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Where the HTTP API listens.
    #[arg(long, default_value = "127.0.0.1:7420")]
    pub api: SocketAddr,
    /// Run the bus over this NATS server (e.g. nats://127.0.0.1:4222)
    /// instead of in process.
    #[arg(long)]
    pub nats: Option<String>,
    /// Stop by itself this many seconds after start (0: run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    pub duration: u64,
    /// Run CyberMesh's live sensor on this interface (AF_PACKET, needs
    /// CAP_NET_RAW): its flows, signed, go to the AI service.
    #[arg(long, value_name = "IF")]
    pub sensor_iface: Option<String>,
    /// A pcap filter for the sensor (compiled with tcpdump).
    #[arg(long, value_name = "EXPR", requires = "sensor_iface")]
    pub sensor_filter: Option<String>,
    /// The network namespace (`ip netns` name) the sensor's interface is in.
    #[arg(long, value_name = "NAME", requires = "sensor_iface")]
    pub sensor_netns: Option<String>,
    /// Ask the validators to block a whole network (a /24, a /64) once
    /// this many of its addresses attack within a minute (0: never; it
    /// cuts off the network's innocent hosts too).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub network_sources: usize,
}

pub fn run(args: UpArgs) -> Result<()> {
    let rt = crate::cluster::runtime()?;
    rt.block_on(up(args))
}

async fn up(args: UpArgs) -> Result<()> {
    let exe = std::env::current_exe().context("finding this executable")?;
    // The operator's own token, else the one in DATA_DIR/api.token.
    let api_token = match std::env::var("BEN_API_TOKEN") {
        Ok(t) if !t.trim().is_empty() => Some(
            ben_control::auth::ApiToken::new(&t)
                .map_err(|e| anyhow::anyhow!("$BEN_API_TOKEN: {e}"))?,
        ),
        _ => None,
    };
    let token_from = match &api_token {
        Some(_) => "$BEN_API_TOKEN".to_string(),
        None => ben_control::auth::token_path(&args.data_dir)
            .display()
            .to_string(),
    };
    let mut cfg = Config {
        data_dir: args.data_dir.clone(),
        api_addr: args.api,
        api_token,
        socket: args.socket.clone(),
        nats: args
            .nats
            .clone()
            .map(|url| ben_embedded::NatsConfig { url, prefix: None }),
        mesh_network_sources: args.network_sources,
        ..Config::default()
    };
    if let Some(iface) = &args.sensor_iface {
        cfg.counts.insert("sensor", 1);
        cfg.sensor = ben_runtime::table::SensorEnv {
            iface: Some(iface.clone()),
            filter: args.sensor_filter.clone(),
            netns: args.sensor_netns.clone(),
            idle_timeout_ms: 0,
            flow_timeout_ms: 0,
        };
    }
    let lan = if args.netns {
        let lan =
            ben_mesh_sensor::lab::Lan::new().map_err(|e| anyhow::anyhow!("ben up --netns: {e}"))?;
        let every = cfg.mesh_every;
        crate::demo_mesh::live_config(&mut cfg, &lan, every);
        Some(std::sync::Arc::new(lan))
    } else {
        None
    };
    let mut sensor = None;
    if args.demo {
        // The demo app is this same binary (`ben demo-app`): Beekeeper is
        // told to accept it as `shop_web`, by executable path and uid.
        cfg.extra_selectors
            .push(crate::shop::selector_for_this_process()?);
        // The security path's replay signs its flows as a sensor.
        let key = crate::demo_mesh::sensor_key()?;
        cfg.trust
            .push((crate::demo_mesh::SENSOR_ID.to_string(), key.public()));
        sensor = Some(key);
    }
    let sys = System::start(cfg)
        .await
        .map_err(|e| anyhow::anyhow!(e))
        .context("starting Ben")?;
    if lan.is_some() {
        crate::demo_mesh::sensor_ready(&sys).await?;
    }
    println!(
        "ben up: API http://{} (token: {token_from})  sidecar {}  data {}",
        sys.api_addr(),
        sys.cfg.socket_path().display(),
        sys.cfg.data_dir.display()
    );
    match sys.control.login_link() {
        Ok(link) => println!(
            "ben up: dashboard {link} (this link logs one browser in, once, within 15 minutes; `benctl dashboard` prints another)"
        ),
        Err(e) => println!("ben up: no dashboard login link: {e}; `benctl dashboard` asks for one"),
    }
    let mut child = None;
    if args.demo {
        let dir = crate::shop::write_bundle(&sys.cfg.data_dir.join("demo-bundle"))?;
        let version = sys
            .deploy_dir(&dir)
            .await
            .map_err(|e| anyhow::anyhow!(e))
            .context("deploying the demo bundle")?;
        println!("ben up: deployed examples/shop as intent {version}; every component acked it");
        child = Some(
            tokio::process::Command::new(&exe)
                .arg("demo-app")
                .arg("--socket")
                .arg(sys.cfg.socket_path())
                .kill_on_drop(true)
                .spawn()
                .context("starting the demo app")?,
        );
    } else {
        println!("ben up: no bundle deployed; stage one with `benctl stage DIR` and `benctl deploy VERSION`");
    }
    let tty = std::io::stdout().is_terminal();
    let security = sensor.map(|sensor| {
        let bus = sys.bus.clone();
        let lan = lan.clone();
        tokio::spawn(async move {
            let r = match lan {
                Some(lan) => crate::demo_mesh::live(bus, tty, lan).await,
                None => crate::demo_mesh::run(bus, tty, sensor).await,
            };
            if let Err(e) = r {
                println!("security path: the demo stopped: {e:#}");
            }
        })
    });
    let deadline = (args.duration > 0)
        .then(|| tokio::time::Instant::now() + Duration::from_secs(args.duration));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n = 0u64;
    let mut shown = 0usize;
    loop {
        shown = show_dead_letters(&sys, shown, tty);
        tokio::select! {
            _ = tokio::signal::ctrl_c() => { println!(); println!("ben up: Ctrl-C, shutting down"); break; }
            _ = tick.tick() => {
                n += 1;
                let line = sys.status_line().await;
                if tty {
                    print!("\r\x1b[2K{line}");
                    let _ = std::io::stdout().flush();
                    crate::log::status_line_shown();
                } else if n.is_multiple_of(5) {
                    println!("{line}");
                }
                if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    println!();
                    break;
                }
            }
        }
    }
    if let Some(mut c) = child {
        let _ = c.kill().await;
    }
    if let Some(t) = security {
        t.abort();
        // Its hold on the namespaces (--netns) goes with it; they are
        // removed when the last is dropped.
        if let Err(e) = t.await {
            if e.is_panic() {
                println!("security path: the demo panicked: {e}");
            }
        }
    }
    // Let records in flight reach their last hop before stopping.
    sys.drain(Duration::from_secs(3)).await;
    show_dead_letters(&sys, shown, tty);
    println!("ben up: final: {}", sys.status_line().await);
    sys.shutdown().await;
    Ok(())
}

/// Prints the dead letters kept since the `shown` first ones (each with
/// its reason; past the first few they are only counted in the status
/// line). Returns how many have been shown.
fn show_dead_letters(sys: &ben_embedded::System, shown: usize, tty: bool) -> usize {
    let kept = sys
        .stats
        .first_dead_letters
        .lock()
        .map(|k| k.clone())
        .unwrap_or_default();
    for (i, line) in kept.iter().enumerate().skip(shown) {
        if tty {
            print!("\r\x1b[2K");
        }
        println!("ben up: dead letter {}: {line}", i + 1);
        if i + 1 == ben_embedded::KEPT_DEAD_LETTERS {
            println!("ben up: further dead letters are counted in the status line, not shown");
        }
    }
    kept.len().max(shown)
}
