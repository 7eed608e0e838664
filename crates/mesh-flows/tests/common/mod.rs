//! Hand-built frames and capture files for the golden tests. Written
//! independently of the crate's `synth` module so a bug in one cannot hide
//! a bug in the other: every byte is spelled out here.
#![allow(dead_code, clippy::too_many_arguments)]

use ben_mesh_flows::{Config, FlowRecord, FlowTable, LinkType};

pub const T0_US: u64 = 1_700_000_000_000_000;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;
pub const ECE: u8 = 0x40;
pub const CWR: u8 = 0x80;

/// Ethernet header with the given VLAN tags (TPID, VID) and ethertype.
pub fn eth(tags: &[(u16, u16)], ethertype: u16) -> Vec<u8> {
    let mut f = vec![0xaa, 0xbb, 0xcc, 0, 0, 2, 0xaa, 0xbb, 0xcc, 0, 0, 1];
    for &(tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// IPv4 header (IHL 5) for `l4_len` bytes of transport data.
pub fn ipv4(src: [u8; 4], dst: [u8; 4], protocol: u8, l4_len: usize) -> Vec<u8> {
    let total = (20 + l4_len) as u16;
    let mut h = vec![0x45, 0x00];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, protocol, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h
}

/// IPv6 header for `payload_len` bytes after it.
pub fn ipv6(src: [u8; 16], dst: [u8; 16], next: u8, payload_len: usize) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload_len as u16).to_be_bytes());
    h.push(next);
    h.push(64);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h
}

/// TCP header of `hdr_len` bytes (20 + NOP options) and `payload` bytes.
pub fn tcp(
    sport: u16,
    dport: u16,
    flags: u8,
    window: u16,
    hdr_len: usize,
    payload: usize,
) -> Vec<u8> {
    assert!(hdr_len >= 20 && hdr_len.is_multiple_of(4) && hdr_len <= 60);
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
    t.push(((hdr_len / 4) as u8) << 4);
    t.push(flags);
    t.extend_from_slice(&window.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    t.resize(hdr_len, 1); // NOP options
    t.resize(hdr_len + payload, 0x61);
    t
}

pub fn udp(sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.resize(8 + payload, 0x62);
    u
}

/// ICMP message: type, code, then 4 bytes (id, seq) and `payload` bytes.
pub fn icmp(ty: u8, code: u8, id: u16, seq: u16, payload: usize) -> Vec<u8> {
    let mut m = vec![ty, code, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.resize(8 + payload, 0x63);
    m
}

pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Ethernet + IPv4 + TCP.
pub fn v4_tcp(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    flags: u8,
    window: u16,
    hdr_len: usize,
    payload: usize,
) -> Vec<u8> {
    let t = tcp(sport, dport, flags, window, hdr_len, payload);
    cat(&[&eth(&[], 0x0800), &ipv4(src, dst, 6, t.len()), &t])
}

/// Ethernet + IPv4 + UDP.
pub fn v4_udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let u = udp(sport, dport, payload);
    cat(&[&eth(&[], 0x0800), &ipv4(src, dst, 17, u.len()), &u])
}

/// Classic pcap, little-endian, microsecond timestamps.
pub struct Pcap(pub Vec<u8>);

impl Pcap {
    pub fn new(linktype: u32) -> Pcap {
        let mut b = Vec::new();
        b.extend_from_slice(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0]);
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&262144u32.to_le_bytes());
        b.extend_from_slice(&linktype.to_le_bytes());
        Pcap(b)
    }
    pub fn add(&mut self, ts_us: u64, frame: &[u8]) {
        self.0
            .extend_from_slice(&((ts_us / 1_000_000) as u32).to_le_bytes());
        self.0
            .extend_from_slice(&((ts_us % 1_000_000) as u32).to_le_bytes());
        self.0
            .extend_from_slice(&(frame.len() as u32).to_le_bytes());
        self.0
            .extend_from_slice(&(frame.len() as u32).to_le_bytes());
        self.0.extend_from_slice(frame);
    }
}

/// Reads a capture through the crate's reader into a table and returns the
/// flows (finish_all at the end) and the table for its counters.
pub fn run(bytes: &[u8], cfg: Config) -> (Vec<FlowRecord>, FlowTable) {
    let mut table = FlowTable::new(cfg);
    let _ = ben_mesh_flows::read_capture(bytes, |ts, link: LinkType, frame| {
        let _ = table.push(ts, link, frame);
    })
    .expect("capture reads");
    table.finish_all();
    let flows = table.drain_finished().collect();
    (flows, table)
}

pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Two-pass sample standard deviation.
pub fn sample_std(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}
