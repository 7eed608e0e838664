//! `ben`: runs Ben's components. Each subcommand lives in its own module.

mod detect;
mod flows;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "ben", version, about = "Runs Ben's components")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the whole system in one process (not built yet: see issue "ben up").
    Up {
        /// Also deploy examples/shop and run the demo app.
        #[arg(long)]
        demo: bool,
    },
    /// CyberMesh: run the three detection engines over flows or a capture
    /// and print anomalies as JSON lines (summary on stderr).
    Detect(detect::DetectArgs),
    /// CyberMesh sensor: read a pcap/pcapng file and print one CIC-style
    /// feature row per bidirectional flow (summary on stderr).
    Flows(flows::FlowsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Up { .. } => {
            eprintln!(
                "ben up: the embedded runtime is not built yet.\n\
                 Today you can build, test and evaluate a bundle offline:\n  \
                 cargo run -p ben-benctl -- build examples/shop\n  \
                 cargo run -p ben-benctl -- eval examples/shop --input examples/shop/records.jsonl --contract shop_web"
            );
            ExitCode::from(2)
        }
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
