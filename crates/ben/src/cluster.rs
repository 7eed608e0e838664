//! `ben run <component> --config FILE` and `ben cluster up --config FILE`:
//! cluster mode, one OS process per component over NATS (the wiring is
//! `ben_embedded::cluster`; this is arguments, signals and exit codes).

use anyhow::{Context, Result};
use ben_embedded::cluster::{self, ClusterConfig, Kind};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct RunArgs {
    /// The component: control, sidecar, proxy, spine, detector or lucius.
    pub component: String,
    /// The cluster config (TOML; see README "Cluster mode").
    #[arg(long)]
    pub config: PathBuf,
    /// This process's id (default: `control` or `<component>-1`); its key
    /// must be in the cluster's key directory.
    #[arg(long)]
    pub id: Option<String>,
}

#[derive(clap::Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub cmd: ClusterCmd,
}

#[derive(clap::Subcommand)]
pub enum ClusterCmd {
    /// Start every component as its own `ben run` process, supervised
    /// (restart with backoff); Ctrl-C or SIGTERM stops them all.
    Up {
        /// The cluster config (TOML).
        #[arg(long)]
        config: PathBuf,
    },
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// Resolves on Ctrl-C or SIGTERM.
async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let sigterm = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm => {}
    }
}

pub fn run(args: RunArgs) -> Result<()> {
    let kind = Kind::parse(&args.component).map_err(anyhow::Error::msg)?;
    let cfg = ClusterConfig::load(&args.config).map_err(anyhow::Error::msg)?;
    let id = args.id.unwrap_or_else(|| kind.default_id());
    runtime()?
        .block_on(cluster::run_component(&cfg, kind, &id, terminated()))
        .map_err(anyhow::Error::msg)
}

pub fn cluster(args: ClusterArgs) -> Result<()> {
    match args.cmd {
        ClusterCmd::Up { config } => {
            let cfg = ClusterConfig::load(&config).map_err(anyhow::Error::msg)?;
            let exe = std::env::current_exe().context("finding this executable")?;
            let say: Arc<dyn Fn(String) + Send + Sync> = Arc::new(|line| {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            });
            runtime()?
                .block_on(cluster::cluster_up(&cfg, exe, terminated(), say))
                .map_err(anyhow::Error::msg)
        }
    }
}
