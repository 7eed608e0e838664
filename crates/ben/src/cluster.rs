//! `ben run <component> --config FILE` and `ben cluster up --config FILE`:
//! cluster mode, one OS process per component over NATS (the wiring is
//! `ben_cluster`; this is arguments, signals and exit codes).

use anyhow::{Context, Result};
use ben_cluster::{self as cluster, ClusterConfig, Process};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct RunArgs {
    /// The component: control, or a kind of the component table cluster
    /// mode runs (detector, validator, spine, proxy, lucius, sidecar).
    pub component: String,
    /// The cluster config (TOML; see README "Cluster mode").
    #[arg(long)]
    pub config: PathBuf,
    /// This process's id (default: `control` or `<component>-1`); its key
    /// must be in the cluster's key directory.
    #[arg(long)]
    pub id: Option<String>,
}

/// `ben validator` and `ben enforce`: `ben run validator|enforcer` by
/// their own names.
#[derive(clap::Args)]
pub struct ValidatorArgs {
    /// The cluster config (TOML); `[validators] addrs` names the set,
    /// `[enforcer]` the agent's backend and allowlist.
    #[arg(long)]
    pub config: PathBuf,
    /// Which one (default `validator-1`, `enforcer-1`, `sensor-1`); its key
    /// must be in the cluster's key directory.
    #[arg(long)]
    pub id: Option<String>,
}

impl ValidatorArgs {
    /// `ben run <component>` with these arguments.
    pub fn run_as(self, component: &str) -> RunArgs {
        RunArgs {
            component: component.into(),
            config: self.config,
            id: self.id,
        }
    }
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
    /// The live components, read from the cluster's registry (a NATS KV
    /// bucket each process keeps its entry in; no ledger needed): id, role,
    /// pid, intent version, last heartbeat. `--json`: the entries as JSON.
    Status {
        /// The cluster config (TOML).
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

/// A multi-threaded runtime (every `ben` command that runs async code).
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// The runtime a `ben run` process uses. The data-path components (sidecar,
/// proxy, spine, detector, Lucius) run on one thread: a record batch passes
/// from the NATS connection's reader task to the component's loop and on to
/// the writer, and on a multi-threaded runtime each of those handoffs may
/// have to wake another thread. Measured on the 2-core machine: a chain of
/// five NATS messages through four processes took p50 725 µs / p99 1.2 ms
/// on single-threaded runtimes against 989 µs / 2.5 ms with two workers
/// (BENCHMARKS.md has the cluster figures). Heavy work is off this thread
/// anyway: SQLite runs on sqlx's own thread, the artifact store on its own;
/// and `consume` yields after every batch, so heartbeats keep going while a
/// component is saturated. The control process (HTTP API, ledger, many
/// concurrent clients) keeps the multi-threaded runtime. A data-path role
/// scales with more processes, not more threads.
fn component_runtime(process: Process) -> Result<tokio::runtime::Runtime> {
    match process {
        Process::Control => runtime(),
        Process::Component(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the runtime"),
    }
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
    let process = Process::parse(&args.component).map_err(anyhow::Error::msg)?;
    let cfg = ClusterConfig::load(&args.config).map_err(anyhow::Error::msg)?;
    let id = args.id.unwrap_or_else(|| process.default_id());
    // Before the runtime starts any thread, so they all inherit it.
    let class = cfg.cpu_class(process.name());
    if class != ben_orchestrator::cpu::CpuClass::default() {
        if let Err(e) = class.apply() {
            eprintln!("{id}: {e}; running on at the default class");
        }
    }
    component_runtime(process)?
        .block_on(cluster::run_component(&cfg, process, &id, terminated()))
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
        ClusterCmd::Status { config, json } => {
            let cfg = ClusterConfig::load(&config).map_err(anyhow::Error::msg)?;
            let entries = runtime()?
                .block_on(cluster::registry(&cfg))
                .map_err(anyhow::Error::msg)?;
            let mut out = std::io::stdout().lock();
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&entries)?)?;
            } else {
                let now = ben_time::now_ns();
                writeln!(
                    out,
                    "{} live component(s) in {} (registry {})",
                    entries.len(),
                    cfg.prefix,
                    cluster::registry::bucket(&cfg)
                )?;
                for line in cluster::registry::registry_lines(&entries, now) {
                    writeln!(out, "{line}")?;
                }
            }
            Ok(())
        }
    }
}
