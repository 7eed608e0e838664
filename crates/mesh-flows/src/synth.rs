//! Synthetic captures: a tiny pcap writer, frame builders and a seeded
//! traffic generator, for benchmarks and for comparing against other flow
//! meters on the same bytes (`examples/dump-bench-capture.rs`).
//!
//! Deterministic: the same seed gives the same bytes.

use crate::decode::tcp_flags as tf;

/// Writes a classic little-endian pcap (µs timestamps) into a `Vec`.
#[derive(Clone, Debug)]
pub struct PcapWriter {
    buf: Vec<u8>,
    packets: usize,
}

impl PcapWriter {
    /// A pcap with the given `LINKTYPE_*` and a 65535-byte snap length.
    pub fn new(linktype: u32) -> PcapWriter {
        let mut buf = Vec::with_capacity(1 << 16);
        buf.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        buf.extend_from_slice(&2u16.to_le_bytes());
        buf.extend_from_slice(&4u16.to_le_bytes());
        buf.extend_from_slice(&0i32.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        buf.extend_from_slice(&65535u32.to_le_bytes());
        buf.extend_from_slice(&linktype.to_le_bytes());
        PcapWriter { buf, packets: 0 }
    }

    /// Appends a record (timestamp in µs since the epoch).
    pub fn packet(&mut self, ts_us: u64, frame: &[u8]) {
        let len = frame.len() as u32;
        self.buf
            .extend_from_slice(&((ts_us / 1_000_000) as u32).to_le_bytes());
        self.buf
            .extend_from_slice(&((ts_us % 1_000_000) as u32).to_le_bytes());
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(frame);
        self.packets += 1;
    }

    /// Records written.
    pub fn packets(&self) -> usize {
        self.packets
    }

    /// The file bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// Appends an Ethernet + IPv4 + TCP frame with `payload` zero bytes.
/// `src` and `dst` are (address, port).
pub fn eth_ipv4_tcp(
    out: &mut Vec<u8>,
    (src, sport): ([u8; 4], u16),
    (dst, dport): ([u8; 4], u16),
    flags: u8,
    window: u16,
    payload: usize,
) {
    out.clear();
    out.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
    ipv4(out, src, dst, 6, 20 + payload);
    out.extend_from_slice(&sport.to_be_bytes());
    out.extend_from_slice(&dport.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, flags]);
    out.extend_from_slice(&window.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.resize(out.len() + payload, 0);
}

/// Appends an Ethernet + IPv4 + UDP frame with `payload` zero bytes.
pub fn eth_ipv4_udp(
    out: &mut Vec<u8>,
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    payload: usize,
) {
    out.clear();
    out.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
    ipv4(out, src, dst, 17, 8 + payload);
    out.extend_from_slice(&sport.to_be_bytes());
    out.extend_from_slice(&dport.to_be_bytes());
    out.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.resize(out.len() + payload, 0);
}

fn ipv4(out: &mut Vec<u8>, src: [u8; 4], dst: [u8; 4], protocol: u8, l4_len: usize) {
    let total = (20 + l4_len) as u16;
    let start = out.len();
    out.extend_from_slice(&[0x45, 0]);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0x40, 0, 64, protocol, 0, 0]);
    out.extend_from_slice(&src);
    out.extend_from_slice(&dst);
    // Header checksum, so other tools accept the frames.
    let mut sum = 0u32;
    for pair in out[start..start + 20].chunks(2) {
        sum += u32::from(u16::from_be_bytes([
            pair[0],
            pair.get(1).copied().unwrap_or(0),
        ]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let c = !(sum as u16);
    out[start + 10..start + 12].copy_from_slice(&c.to_be_bytes());
}

/// A small xorshift generator: deterministic, no dependency.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded (0 is replaced by a fixed non-zero seed).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// One synthetic packet: time (µs) and the Ethernet frame.
pub type SynthPacket = (u64, Vec<u8>);

/// A realistic-looking mixed capture of about `packets` Ethernet frames:
/// many concurrent TCP connections (handshake, request/response data in
/// both directions, FIN teardown; sizes from small requests to MTU-size
/// bulk transfers), DNS-like UDP exchanges, and SYN-only scan probes,
/// interleaved in time. Returns frames in time order.
pub fn mixed_capture(packets: usize, seed: u64) -> Vec<SynthPacket> {
    let mut rng = Rng::new(seed);
    let mut out: Vec<SynthPacket> = Vec::with_capacity(packets + 64);
    let mut frame = Vec::with_capacity(1600);
    let mut conn = 0u32;
    // Connections start every ~20 µs on average and overlap heavily.
    let mut start_us: u64 = 1_700_000_000_000_000;
    while out.len() < packets {
        conn = conn.wrapping_add(1);
        start_us += rng.below(40);
        let client = [10, 1, (conn >> 8) as u8 % 64, conn as u8];
        let server = [172, 16, 0, 1 + (rng.below(50) as u8)];
        let sport = 1024 + (conn % 60000) as u16;
        let kind = rng.below(100);
        let mut t = start_us;
        let mut push = |t: u64, f: &Vec<u8>| out.push((t, f.clone()));
        if kind < 60 {
            // TCP request/response.
            let dport = [80u16, 443, 22, 8080][rng.below(4) as usize];
            let rtt = 100 + rng.below(2000);
            eth_ipv4_tcp(
                &mut frame,
                (client, sport),
                (server, dport),
                tf::SYN,
                64240,
                0,
            );
            push(t, &frame);
            t += rtt;
            eth_ipv4_tcp(
                &mut frame,
                (server, dport),
                (client, sport),
                tf::SYN | tf::ACK,
                65160,
                0,
            );
            push(t, &frame);
            t += rtt / 2;
            eth_ipv4_tcp(
                &mut frame,
                (client, sport),
                (server, dport),
                tf::ACK,
                502,
                0,
            );
            push(t, &frame);
            let exchanges = 1 + rng.below(4);
            for _ in 0..exchanges {
                let req = 40 + rng.below(600) as usize;
                eth_ipv4_tcp(
                    &mut frame,
                    (client, sport),
                    (server, dport),
                    tf::PSH | tf::ACK,
                    502,
                    req,
                );
                push(t, &frame);
                t += rtt;
                let segs = 1 + rng.below(12);
                for s in 0..segs {
                    let len = if s + 1 == segs {
                        1 + rng.below(1460) as usize
                    } else {
                        1460
                    };
                    eth_ipv4_tcp(
                        &mut frame,
                        (server, dport),
                        (client, sport),
                        tf::ACK,
                        509,
                        len,
                    );
                    push(t, &frame);
                    t += 5 + rng.below(30);
                }
                eth_ipv4_tcp(
                    &mut frame,
                    (client, sport),
                    (server, dport),
                    tf::ACK,
                    502,
                    0,
                );
                push(t, &frame);
                t += rng.below(5000);
            }
            eth_ipv4_tcp(
                &mut frame,
                (client, sport),
                (server, dport),
                tf::FIN | tf::ACK,
                502,
                0,
            );
            push(t, &frame);
            t += rtt;
            eth_ipv4_tcp(
                &mut frame,
                (server, dport),
                (client, sport),
                tf::FIN | tf::ACK,
                509,
                0,
            );
            push(t, &frame);
            t += rtt / 2;
            eth_ipv4_tcp(
                &mut frame,
                (client, sport),
                (server, dport),
                tf::ACK,
                502,
                0,
            );
            push(t, &frame);
        } else if kind < 90 {
            // DNS-like query/response.
            let q = 30 + rng.below(40) as usize;
            eth_ipv4_udp(&mut frame, client, server, sport, 53, q);
            push(t, &frame);
            t += 200 + rng.below(20_000);
            eth_ipv4_udp(
                &mut frame,
                server,
                client,
                53,
                sport,
                q + 16 + rng.below(400) as usize,
            );
            push(t, &frame);
        } else {
            // Scan probe answered by RST.
            let dport = 1 + rng.below(1024) as u16;
            eth_ipv4_tcp(
                &mut frame,
                (client, sport),
                (server, dport),
                tf::SYN,
                1024,
                0,
            );
            push(t, &frame);
            t += 50 + rng.below(500);
            eth_ipv4_tcp(
                &mut frame,
                (server, dport),
                (client, sport),
                tf::RST | tf::ACK,
                0,
                0,
            );
            push(t, &frame);
        }
    }
    // Stable sort: per-connection order is kept for equal timestamps.
    out.sort_by_key(|(t, _)| *t);
    out.truncate(packets);
    out
}

/// [`mixed_capture`] written as a pcap file.
pub fn mixed_capture_pcap(packets: usize, seed: u64) -> Vec<u8> {
    let mut w = PcapWriter::new(1);
    for (t, f) in mixed_capture(packets, seed) {
        w.packet(t, &f);
    }
    w.into_bytes()
}
