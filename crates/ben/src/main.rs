//! `ben`: runs Ben's components. Each subcommand lives in its own module.

mod bench;
mod bench_activation;
mod bench_block;
mod bench_bus;
mod bench_cluster;
mod bench_consensus;
mod bench_dashboard;
mod bench_enforce;
mod bench_loop;
mod bench_sensor;
mod cluster;
mod demo_app;
mod demo_mesh;
mod detect;
mod flows;
mod log;
mod shop;
mod up;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// No transparent huge pages for this process. mimalloc asks for them
/// (`madvise`), and memory it gives back and takes again is then faulted
/// in and zeroed 2 MiB at a time: under `ben bench consensus` at 65k tx/s
/// the kernel's page zeroing was 27 % of the CPU with them and 2.7 %
/// without (`perf`), and commit latency fell; `ben bench datapath` did not
/// move beyond its noise. A refusal (an old kernel) leaves them on, said at
/// debug level: nothing depends on it.
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and
        // changes nothing but this process's page fault policy.
        let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if r != 0 {
            tracing::debug!(
                "transparent huge pages stay on: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

#[derive(Parser)]
#[command(
    name = "ben",
    version,
    about = "Runs Ben's components",
    after_help = "Examples:
  ben up --demo                         the whole system in one process, with the demo shop and port scan
  ben up --demo --netns                 (root) the security path on live traffic in network namespaces
  ben cluster up --config cluster.toml  every component as its own supervised process over NATS
  ben flows capture.pcap > flows.csv    one feature row per flow of a capture
  ben detect --pcap capture.pcap        the detection engines over a capture: anomalies as JSON lines
  ben bench dashboard                   the dashboard's overview under 1,000 requests/s
  ben completions bash > /etc/bash_completion.d/ben"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Log format on stderr: `human` (one line per event) or `json` (one
    /// object per event). What is logged: `RUST_LOG` (default
    /// `warn,ben=info`).
    #[arg(long, global = true, value_enum, default_value = "human")]
    log_format: log::Format,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the whole system in one process (in-process bus, SQLite ledger,
    /// files store, HTTP API on 127.0.0.1:7420).
    Up(up::UpArgs),
    /// Run one component as this process over NATS (cluster mode):
    /// control, sidecar, proxy, spine, detector, lucius or validator.
    Run(cluster::RunArgs),
    /// Run one CyberMesh validator of a cluster (`ben run validator`):
    /// HotStuff with the others over its own TCP links (`[validators]
    /// addrs`), anomalies in and results out over NATS, blocks to
    /// PostgreSQL.
    Validator(cluster::ValidatorArgs),
    /// Run a CyberMesh enforcement agent of a cluster (`ben run
    /// enforcer`), one per host: policies the validators committed, each
    /// checked against their keys, into nftables, iptables + ipset or a dry
    /// run (`[enforcer]` in the config), acked on `control.policy.ack.v1`.
    Enforce(cluster::ValidatorArgs),
    /// Run a CyberMesh live sensor of a cluster (`ben run sensor`), one per
    /// host: AF_PACKET capture on `[sensor] iface` (CAP_NET_RAW), flows
    /// signed by its key on `ben.mesh.flows`.
    Sensor(cluster::ValidatorArgs),
    /// Cluster mode: `ben cluster up --config FILE` starts every component
    /// as its own supervised process.
    Cluster(cluster::ClusterArgs),
    /// The demo app `ben up --demo` runs: sends shop traffic through the
    /// sidecar and prints the signals it receives.
    DemoApp(demo_app::DemoArgs),
    /// Measure the system: `ben bench datapath` (records/s, app→signal
    /// latency in embedded mode; `--cluster`: one process per component
    /// over NATS), `ben bench activation --components N` (deploy →
    /// finalized over NATS).
    Bench(bench::BenchArgs),
    /// CyberMesh: run the three detection engines over flows or a capture
    /// and print anomalies as JSON lines (summary on stderr).
    Detect(detect::DetectArgs),
    /// CyberMesh sensor: read a pcap/pcapng file and print one CIC-style
    /// feature row per bidirectional flow (summary on stderr).
    Flows(flows::FlowsArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish,
    /// powershell) to standard output.
    Completions { shell: clap_complete::Shell },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    log::init(cli.log_format);
    no_huge_pages();
    match cli.cmd {
        Cmd::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "ben", &mut script);
            // A closed pipe (`| head`) is no error worth reporting; any
            // other (a full disk under `> file`) is.
            match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("ben completions: writing the script: {e}");
                    ExitCode::from(1)
                }
                _ => ExitCode::SUCCESS,
            }
        }
        Cmd::Up(args) => match up::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ben up: {e:#}");
                ExitCode::from(1)
            }
        },
        Cmd::Run(args) => {
            let what = args.component.clone();
            match cluster::run(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ben run {what}: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Validator(args) => match cluster::run(args.run_as("validator")) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ben validator: {e:#}");
                ExitCode::from(1)
            }
        },
        Cmd::Enforce(args) => match cluster::run(args.run_as("enforcer")) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ben enforce: {e:#}");
                ExitCode::from(1)
            }
        },
        Cmd::Sensor(args) => match cluster::run(args.run_as("sensor")) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ben sensor: {e:#}");
                ExitCode::from(1)
            }
        },
        Cmd::Cluster(args) => match cluster::cluster(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ben cluster: {e:#}");
                ExitCode::from(1)
            }
        },
        Cmd::Bench(args) => match bench::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ben bench: {e:#}");
                ExitCode::from(1)
            }
        },
        Cmd::DemoApp(args) => match demo_app::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ben demo-app: {e:#}");
                ExitCode::from(1)
            }
        },
        Cmd::Flows(args) => match flows::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ben flows: {e:#}");
                ExitCode::from(1)
            }
        },
        Cmd::Detect(args) => match detect::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ben detect: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}
