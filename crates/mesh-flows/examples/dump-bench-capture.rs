//! Writes the benchmark's synthetic capture to a pcap file, so other flow
//! meters (scripts/bench-flows-nfstream.sh) can be timed on the same bytes.
//!
//! `cargo run --release -p ben-mesh-flows --example dump-bench-capture -- OUT.pcap [PACKETS] [SEED]`

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(out) = args.next() else {
        eprintln!(
            "usage: dump-bench-capture OUT.pcap [PACKETS (default 1000000)] [SEED (default 1)]"
        );
        return ExitCode::from(2);
    };
    let packets = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let seed = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let bytes = ben_mesh_flows::synth::mixed_capture_pcap(packets, seed);
    match std::fs::write(&out, &bytes) {
        Ok(()) => {
            eprintln!("wrote {packets} packets ({} bytes) to {out}", bytes.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dump-bench-capture: writing {out}: {e}");
            ExitCode::from(1)
        }
    }
}
