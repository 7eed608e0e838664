//! Flow extraction throughput in packets/s over the synthetic mixed capture
//! (`synth::mixed_capture`: many overlapping TCP connections, DNS-like UDP
//! and scan probes; 60–1514-byte frames).
//!
//! * `decode` — the packet decoder alone;
//! * `decode_etherparse` — baseline: the same fields (addresses, ports,
//!   TCP flags/window/header length, payload length) through `etherparse`;
//! * `flow_table` — decode + flow assembly + feature computation on frames
//!   already in memory (the sensor core, DESIGN §7 target ≥ 1M packets/s);
//! * `pcap_to_flows` — the same from pcap bytes through the capture reader.

use ben_mesh_flows::{decode, read_capture, synth, Config, FlowTable, LinkType};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

const PACKETS: usize = 200_000;

fn bench(c: &mut Criterion) {
    // Frames packed back to back, as they sit in a capture buffer.
    let mut bytes = Vec::new();
    let mut index = Vec::with_capacity(PACKETS);
    for (ts, f) in synth::mixed_capture(PACKETS, 1) {
        index.push((ts * 1000, bytes.len(), bytes.len() + f.len()));
        bytes.extend_from_slice(&f);
    }
    let frames: Vec<(u64, &[u8])> = index.iter().map(|&(t, a, b)| (t, &bytes[a..b])).collect();
    let pcap = synth::mixed_capture_pcap(PACKETS, 1);
    let mut g = c.benchmark_group("flows");
    g.throughput(Throughput::Elements(PACKETS as u64));
    g.sample_size(10);

    g.bench_function("decode", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for &(_, f) in &frames {
                if let Ok(p) = decode(LinkType::ETHERNET, f) {
                    acc += u64::from(p.src.bytes[15])
                        + u64::from(p.src_port)
                        + u64::from(p.dst_port)
                        + u64::from(p.tcp_window)
                        + u64::from(p.header_len)
                        + u64::from(p.tcp_flags & 2)
                        + u64::from(p.payload_len);
                }
            }
            black_box(acc)
        })
    });

    g.bench_function("decode_etherparse", |b| {
        use etherparse::{NetSlice, SlicedPacket, TransportSlice};
        b.iter(|| {
            let mut acc = 0u64;
            for &(_, f) in &frames {
                let Ok(p) = SlicedPacket::from_ethernet(f) else {
                    continue;
                };
                match &p.net {
                    Some(NetSlice::Ipv4(ip)) => acc += u64::from(ip.header().source()[3]),
                    Some(NetSlice::Ipv6(ip)) => acc += u64::from(ip.header().source()[15]),
                    _ => {}
                }
                match &p.transport {
                    Some(TransportSlice::Tcp(t)) => {
                        acc += u64::from(t.source_port())
                            + u64::from(t.destination_port())
                            + u64::from(t.window_size())
                            + u64::from(t.data_offset())
                            + u64::from(t.syn())
                            + t.payload().len() as u64;
                    }
                    Some(TransportSlice::Udp(u)) => {
                        acc += u64::from(u.source_port())
                            + u64::from(u.destination_port())
                            + u.payload().len() as u64;
                    }
                    _ => {}
                }
            }
            black_box(acc)
        })
    });

    g.bench_function("flow_table", |b| {
        b.iter(|| {
            let mut t = FlowTable::new(Config::default());
            let mut flows = 0usize;
            for &(ts, f) in &frames {
                let _ = t.push(ts, LinkType::ETHERNET, f);
                flows += t.drain_finished().len();
            }
            t.finish_all();
            flows += t.drain_finished().len();
            black_box(flows)
        })
    });

    g.bench_function("pcap_to_flows", |b| {
        b.iter(|| {
            let mut t = FlowTable::new(Config::default());
            let mut flows = 0usize;
            let _ = read_capture(&pcap[..], |ts, l, f| {
                let _ = t.push(ts, l, f);
                flows += t.drain_finished().len();
            });
            t.finish_all();
            flows += t.drain_finished().len();
            black_box(flows)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
