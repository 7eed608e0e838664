//! Writes the capture `ben up --demo` replays through the sensor: a SYN
//! scan of 300 ports from 203.0.113.66 against 10.0.0.5 (each answered by
//! a RST), among ordinary HTTPS sessions from 10.0.0.20..=29.
//!
//! `cargo run -p ben-mesh-flows --features test-support --example write-demo-scan -- OUT.pcap`

use ben_mesh_flows::decode::tcp_flags as tf;
use ben_mesh_flows::synth::{eth_ipv4_tcp, PcapWriter};
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(out) = std::env::args().nth(1) else {
        eprintln!("usage: write-demo-scan OUT.pcap");
        return ExitCode::from(2);
    };
    let mut w = PcapWriter::new(1);
    let mut f = Vec::new();
    let t0 = 1_764_806_400_000_000u64; // 2025-12-04T00:00:00Z, µs
    let victim = [10, 0, 0, 5];
    let scanner = [203, 0, 113, 66];
    let mut t = t0;
    // Ordinary sessions: handshake, some data both ways, FIN.
    for c in 0..10u8 {
        let client = [10, 0, 0, 20 + c];
        let sport = 40_000 + u16::from(c);
        let pkts: [(bool, u8, usize); 7] = [
            (true, tf::SYN, 0),
            (false, tf::SYN | tf::ACK, 0),
            (true, tf::ACK, 0),
            (true, tf::PSH | tf::ACK, 400),
            (false, tf::PSH | tf::ACK, 1400),
            (true, tf::FIN | tf::ACK, 0),
            (false, tf::FIN | tf::ACK, 0),
        ];
        for (up, flags, len) in pkts {
            t += 3_000;
            if up {
                eth_ipv4_tcp(&mut f, (client, sport), (victim, 443), flags, 64_240, len);
            } else {
                eth_ipv4_tcp(&mut f, (victim, 443), (client, sport), flags, 65_160, len);
            }
            w.packet(t, &f);
        }
    }
    // The scan: one SYN per port, a RST back.
    for (i, port) in (1u16..=300).enumerate() {
        t = t0 + 50_000 + i as u64 * 2_000;
        eth_ipv4_tcp(&mut f, (scanner, 51_234), (victim, port), tf::SYN, 1_024, 0);
        w.packet(t, &f);
        eth_ipv4_tcp(
            &mut f,
            (victim, port),
            (scanner, 51_234),
            tf::RST | tf::ACK,
            0,
            0,
        );
        w.packet(t + 100, &f);
    }
    let n = w.packets();
    match std::fs::write(&out, w.into_bytes()) {
        Ok(()) => {
            eprintln!("wrote {n} packets to {out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("write-demo-scan: {out}: {e}");
            ExitCode::from(1)
        }
    }
}
