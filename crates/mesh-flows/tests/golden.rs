//! Golden tests: hand-built captures whose every feature value is worked
//! out here from the per-packet values listed in each test.

mod common;

use ben_mesh_flows::{
    read_capture, Config, EndReason, Feature as F, FlowRecord, FlowTable, LinkType, ALL_FEATURES,
};
use common::*;

/// Expected values for some or all features.
struct Expect(Vec<(F, f64)>);

impl Expect {
    fn new() -> Expect {
        Expect(Vec::new())
    }
    fn set(&mut self, f: F, v: f64) -> &mut Expect {
        self.0.push((f, v));
        self
    }
    fn check(&self, r: &FlowRecord, complete: bool) {
        let mut bad = Vec::new();
        for &(f, want) in &self.0 {
            let got = r.features.get(f);
            if !close(got, want) {
                bad.push(format!("{:?} ({}): got {got}, want {want}", f, f.name()));
            }
        }
        assert!(bad.is_empty(), "feature mismatches:\n{}", bad.join("\n"));
        if complete {
            for f in ALL_FEATURES {
                assert!(
                    self.0.iter().any(|(g, _)| *g == f),
                    "test does not check {f:?}"
                );
            }
        }
    }
}

const C4: [u8; 4] = [10, 0, 0, 1];
const S4: [u8; 4] = [10, 0, 0, 2];

#[test]
fn tcp_handshake_data_and_fin_in_both_directions() {
    // (t µs, forward?, flags, window, tcp header bytes, payload)
    let pkts: [(u64, bool, u8, u16, usize, usize); 10] = [
        (0, true, SYN, 64240, 40, 0),
        (1000, false, SYN | ACK, 65160, 40, 0),
        (1500, true, ACK, 502, 32, 0),
        (2000, true, PSH | ACK, 502, 32, 100),
        (5000, false, ACK, 509, 32, 1000),
        (5100, false, PSH | ACK, 509, 32, 500),
        (6000, true, ACK, 501, 32, 0),
        (7000, true, FIN | ACK, 501, 32, 0),
        (8000, false, FIN | ACK, 509, 32, 0),
        (8500, true, ACK, 501, 32, 0),
    ];
    let mut cap = Pcap::new(1);
    for &(t, fwd, flags, win, hl, pl) in &pkts {
        let f = if fwd {
            v4_tcp(C4, S4, 40000, 80, flags, win, hl, pl)
        } else {
            v4_tcp(S4, C4, 80, 40000, flags, win, hl, pl)
        };
        cap.add(T0_US + t, &f);
    }
    // A later packet of the same 5-tuple after the teardown starts a new flow.
    cap.add(
        T0_US + 20_000,
        &v4_tcp(C4, S4, 40000, 80, SYN, 64240, 40, 0),
    );
    let (flows, table) = run(&cap.0, Config::default());
    assert_eq!(flows.len(), 2, "teardown must not leak into extra flows");
    let r = &flows[0];
    assert_eq!(r.end_reason, EndReason::Fin);
    assert_eq!(r.src.to_ip().to_string(), "10.0.0.1");
    assert_eq!(r.dst.to_ip().to_string(), "10.0.0.2");
    assert_eq!((r.src_port, r.dst_port, r.protocol), (40000, 80, 6));
    assert_eq!(r.start_ns, T0_US * 1000);
    assert_eq!(r.end_ns, (T0_US + 8500) * 1000);
    assert_eq!(r.flow_id(), "10.0.0.1-10.0.0.2-40000-80-6");
    assert_eq!(flows[1].end_reason, EndReason::EndOfCapture);
    assert_eq!(table.counters().corrupt(), 0);

    let fl: Vec<f64> = [0., 0., 100., 0., 0., 0.].to_vec();
    let bl: Vec<f64> = [0., 1000., 500., 0.].to_vec();
    let all: Vec<f64> = pkts.iter().map(|p| p.5 as f64).collect();
    let flow_iat = [1000., 500., 500., 3000., 100., 900., 1000., 1000., 500.];
    let fwd_iat = [1500., 500., 4000., 1000., 1500.];
    let bwd_iat = [4000., 100., 2900.];
    let dur_s = 8500e-6;
    let mut e = Expect::new();
    e.set(F::DestinationPort, 80.)
        .set(F::FlowDuration, 8500.)
        .set(F::TotalFwdPackets, 6.)
        .set(F::TotalBackwardPackets, 4.)
        .set(F::TotalLengthFwdPackets, 100.)
        .set(F::TotalLengthBwdPackets, 1500.)
        .set(F::FwdPacketLengthMax, 100.)
        .set(F::FwdPacketLengthMin, 0.)
        .set(F::FwdPacketLengthMean, mean(&fl))
        .set(F::FwdPacketLengthStd, sample_std(&fl))
        .set(F::BwdPacketLengthMax, 1000.)
        .set(F::BwdPacketLengthMin, 0.)
        .set(F::BwdPacketLengthMean, 375.)
        .set(F::BwdPacketLengthStd, sample_std(&bl))
        .set(F::FlowBytesPerSec, 1600. / dur_s)
        .set(F::FlowPacketsPerSec, 10. / dur_s)
        .set(F::FlowIatMean, 8500. / 9.)
        .set(F::FlowIatStd, sample_std(&flow_iat))
        .set(F::FlowIatMax, 3000.)
        .set(F::FlowIatMin, 100.)
        .set(F::FwdIatTotal, 8500.)
        .set(F::FwdIatMean, 1700.)
        .set(F::FwdIatStd, sample_std(&fwd_iat))
        .set(F::FwdIatMax, 4000.)
        .set(F::FwdIatMin, 500.)
        .set(F::BwdIatTotal, 7000.)
        .set(F::BwdIatMean, 7000. / 3.)
        .set(F::BwdIatStd, sample_std(&bwd_iat))
        .set(F::BwdIatMax, 4000.)
        .set(F::BwdIatMin, 100.)
        .set(F::FwdPshFlags, 1.)
        .set(F::BwdPshFlags, 1.)
        .set(F::FwdUrgFlags, 0.)
        .set(F::BwdUrgFlags, 0.)
        .set(F::FwdHeaderLength, 40. + 5. * 32.)
        .set(F::BwdHeaderLength, 40. + 3. * 32.)
        .set(F::FwdPacketsPerSec, 6. / dur_s)
        .set(F::BwdPacketsPerSec, 4. / dur_s)
        .set(F::MinPacketLength, 0.)
        .set(F::MaxPacketLength, 1000.)
        .set(F::PacketLengthMean, 160.)
        .set(F::PacketLengthStd, sample_std(&all))
        .set(F::PacketLengthVariance, sample_std(&all).powi(2))
        .set(F::FinFlagCount, 2.)
        .set(F::SynFlagCount, 2.)
        .set(F::RstFlagCount, 0.)
        .set(F::PshFlagCount, 2.)
        .set(F::AckFlagCount, 9.)
        .set(F::UrgFlagCount, 0.)
        .set(F::CwrFlagCount, 0.)
        .set(F::EceFlagCount, 0.)
        .set(F::DownUpRatio, 4. / 6.)
        .set(F::AveragePacketSize, 160.)
        .set(F::AvgFwdSegmentSize, 100. / 6.)
        .set(F::AvgBwdSegmentSize, 375.)
        .set(F::FwdHeaderLength1, 200.)
        .set(F::FwdAvgBytesPerBulk, 0.)
        .set(F::FwdAvgPacketsPerBulk, 0.)
        .set(F::FwdAvgBulkRate, 0.)
        .set(F::BwdAvgBytesPerBulk, 0.)
        .set(F::BwdAvgPacketsPerBulk, 0.)
        .set(F::BwdAvgBulkRate, 0.)
        .set(F::SubflowFwdPackets, 6.)
        .set(F::SubflowFwdBytes, 100.)
        .set(F::SubflowBwdPackets, 4.)
        .set(F::SubflowBwdBytes, 1500.)
        .set(F::InitWinBytesForward, 64240.)
        .set(F::InitWinBytesBackward, 65160.)
        .set(F::ActDataPktFwd, 1.)
        .set(F::MinSegSizeForward, 32.)
        .set(F::ActiveMean, 8500.)
        .set(F::ActiveStd, 0.)
        .set(F::ActiveMax, 8500.)
        .set(F::ActiveMin, 8500.)
        .set(F::IdleMean, 0.)
        .set(F::IdleStd, 0.)
        .set(F::IdleMax, 0.)
        .set(F::IdleMin, 0.);
    e.check(r, true);
}

#[test]
fn udp_flow_with_bulk_subflows_and_idle_period() {
    // (t µs, forward?, payload)
    let pkts: [(u64, bool, usize); 7] = [
        (0, true, 50),
        (100_000, true, 60),
        (200_000, true, 70),
        (300_000, true, 80),
        (400_000, false, 200),
        (7_400_000, true, 40),
        (7_600_000, false, 300),
    ];
    let mut cap = Pcap::new(1);
    for &(t, fwd, pl) in &pkts {
        let f = if fwd {
            v4_udp(C4, [10, 0, 0, 9], 5353, 53, pl)
        } else {
            v4_udp([10, 0, 0, 9], C4, 53, 5353, pl)
        };
        cap.add(T0_US + t, &f);
    }
    let (flows, _) = run(&cap.0, Config::default());
    assert_eq!(flows.len(), 1);
    let r = &flows[0];
    assert_eq!(r.protocol, 17);
    assert_eq!(r.end_reason, EndReason::EndOfCapture);
    let fl = [50., 60., 70., 80., 40.];
    let bl = [200., 300.];
    let all = [50., 60., 70., 80., 200., 40., 300.];
    let flow_iat = [100e3, 100e3, 100e3, 100e3, 7e6, 200e3];
    let fwd_iat = [100e3, 100e3, 100e3, 7.1e6];
    let dur_s = 7.6;
    let mut e = Expect::new();
    e.set(F::DestinationPort, 53.)
        .set(F::FlowDuration, 7.6e6)
        .set(F::TotalFwdPackets, 5.)
        .set(F::TotalBackwardPackets, 2.)
        .set(F::TotalLengthFwdPackets, 300.)
        .set(F::TotalLengthBwdPackets, 500.)
        .set(F::FwdPacketLengthMax, 80.)
        .set(F::FwdPacketLengthMin, 40.)
        .set(F::FwdPacketLengthMean, 60.)
        .set(F::FwdPacketLengthStd, sample_std(&fl))
        .set(F::BwdPacketLengthMax, 300.)
        .set(F::BwdPacketLengthMin, 200.)
        .set(F::BwdPacketLengthMean, 250.)
        .set(F::BwdPacketLengthStd, sample_std(&bl))
        .set(F::FlowBytesPerSec, 800. / dur_s)
        .set(F::FlowPacketsPerSec, 7. / dur_s)
        .set(F::FlowIatMean, 7.6e6 / 6.)
        .set(F::FlowIatStd, sample_std(&flow_iat))
        .set(F::FlowIatMax, 7e6)
        .set(F::FlowIatMin, 100e3)
        .set(F::FwdIatTotal, 7.4e6)
        .set(F::FwdIatMean, 7.4e6 / 4.)
        .set(F::FwdIatStd, sample_std(&fwd_iat))
        .set(F::FwdIatMax, 7.1e6)
        .set(F::FwdIatMin, 100e3)
        .set(F::BwdIatTotal, 7.2e6)
        .set(F::BwdIatMean, 7.2e6)
        .set(F::BwdIatStd, 0.)
        .set(F::BwdIatMax, 7.2e6)
        .set(F::BwdIatMin, 7.2e6)
        .set(F::FwdPshFlags, 0.)
        .set(F::BwdPshFlags, 0.)
        .set(F::FwdUrgFlags, 0.)
        .set(F::BwdUrgFlags, 0.)
        .set(F::FwdHeaderLength, 40.)
        .set(F::BwdHeaderLength, 16.)
        .set(F::FwdPacketsPerSec, 5. / dur_s)
        .set(F::BwdPacketsPerSec, 2. / dur_s)
        .set(F::MinPacketLength, 40.)
        .set(F::MaxPacketLength, 300.)
        .set(F::PacketLengthMean, 800. / 7.)
        .set(F::PacketLengthStd, sample_std(&all))
        .set(F::PacketLengthVariance, sample_std(&all).powi(2))
        .set(F::FinFlagCount, 0.)
        .set(F::SynFlagCount, 0.)
        .set(F::RstFlagCount, 0.)
        .set(F::PshFlagCount, 0.)
        .set(F::AckFlagCount, 0.)
        .set(F::UrgFlagCount, 0.)
        .set(F::CwrFlagCount, 0.)
        .set(F::EceFlagCount, 0.)
        .set(F::DownUpRatio, 0.4)
        .set(F::AveragePacketSize, 800. / 7.)
        .set(F::AvgFwdSegmentSize, 60.)
        .set(F::AvgBwdSegmentSize, 250.)
        .set(F::FwdHeaderLength1, 40.)
        // One forward bulk: the first four queries, 260 bytes over 0.3 s.
        .set(F::FwdAvgBytesPerBulk, 260.)
        .set(F::FwdAvgPacketsPerBulk, 4.)
        .set(F::FwdAvgBulkRate, 260. / 0.3)
        .set(F::BwdAvgBytesPerBulk, 0.)
        .set(F::BwdAvgPacketsPerBulk, 0.)
        .set(F::BwdAvgBulkRate, 0.)
        // Two subflows: the 7 s gap splits them.
        .set(F::SubflowFwdPackets, 2.5)
        .set(F::SubflowFwdBytes, 150.)
        .set(F::SubflowBwdPackets, 1.)
        .set(F::SubflowBwdBytes, 250.)
        .set(F::InitWinBytesForward, -1.)
        .set(F::InitWinBytesBackward, -1.)
        .set(F::ActDataPktFwd, 5.)
        .set(F::MinSegSizeForward, 8.)
        // Active 0–0.4 s, idle 7 s, active 7.4–7.6 s.
        .set(F::ActiveMean, 300e3)
        .set(F::ActiveStd, sample_std(&[400e3, 200e3]))
        .set(F::ActiveMax, 400e3)
        .set(F::ActiveMin, 200e3)
        .set(F::IdleMean, 7e6)
        .set(F::IdleStd, 0.)
        .set(F::IdleMax, 7e6)
        .set(F::IdleMin, 7e6);
    e.check(r, true);
}

#[test]
fn icmp_echo_sessions_and_errors() {
    let echo = |src, dst, ty, seq| {
        let m = icmp(ty, 0, 0x1234, seq, 56);
        cat(&[&eth(&[], 0x0800), &ipv4(src, dst, 1, m.len()), &m])
    };
    let mut cap = Pcap::new(1);
    cap.add(T0_US, &echo(C4, S4, 8, 1));
    cap.add(T0_US + 300, &echo(S4, C4, 0, 1));
    cap.add(T0_US + 1_000_000, &echo(C4, S4, 8, 2));
    cap.add(T0_US + 1_000_250, &echo(S4, C4, 0, 2));
    // Port unreachable from the server: its own flow (ports 0), 28 bytes
    // of quoted datagram after the 8-byte ICMP header.
    let unreach = icmp(3, 3, 0, 0, 28);
    cap.add(
        T0_US + 2_000_000,
        &cat(&[&eth(&[], 0x0800), &ipv4(S4, C4, 1, unreach.len()), &unreach]),
    );
    let (flows, _) = run(&cap.0, Config::default());
    assert_eq!(flows.len(), 2);
    let ping = &flows[0];
    assert_eq!(
        (ping.protocol, ping.src_port, ping.dst_port),
        (1, 0x1234, 0x1234)
    );
    let mut e = Expect::new();
    e.set(F::DestinationPort, 4660.)
        .set(F::FlowDuration, 1_000_250.)
        .set(F::TotalFwdPackets, 2.)
        .set(F::TotalBackwardPackets, 2.)
        .set(F::TotalLengthFwdPackets, 112.)
        .set(F::TotalLengthBwdPackets, 112.)
        .set(F::FlowIatMin, 250.)
        .set(F::FlowIatMax, 999_700.)
        .set(F::FwdIatTotal, 1_000_000.)
        .set(F::BwdIatTotal, 999_950.)
        .set(F::FwdHeaderLength, 16.)
        .set(F::BwdHeaderLength, 16.)
        .set(F::InitWinBytesForward, -1.)
        .set(F::AckFlagCount, 0.)
        .set(F::SubflowFwdPackets, 2.)
        .set(F::ActiveMean, 1_000_250.);
    e.check(ping, false);
    let err = &flows[1];
    assert_eq!((err.src_port, err.dst_port), (0, 0));
    assert_eq!(err.src.to_ip().to_string(), "10.0.0.2");
    Expect(vec![
        (F::TotalFwdPackets, 1.),
        (F::TotalLengthFwdPackets, 28.),
        (F::FlowDuration, 0.),
        (F::FlowBytesPerSec, 0.),
    ])
    .check(err, false);
}

#[test]
fn idle_timeout_splits_a_flow_and_default_keeps_it() {
    let mut cap = Pcap::new(1);
    for t in [0u64, 1_000_000, 15_000_000] {
        cap.add(T0_US + t, &v4_udp(C4, S4, 1000, 2000, 10));
    }
    let cfg = Config {
        idle_timeout_ns: 10_000_000_000,
        ..Config::default()
    };
    let (flows, _) = run(&cap.0, cfg);
    assert_eq!(flows.len(), 2);
    assert_eq!(flows[0].end_reason, EndReason::IdleTimeout);
    assert_eq!(flows[0].features.get(F::TotalFwdPackets), 2.);
    assert_eq!(flows[0].features.get(F::FlowDuration), 1_000_000.);
    assert_eq!(flows[1].start_ns, (T0_US + 15_000_000) * 1000);
    assert_eq!(flows[1].features.get(F::TotalFwdPackets), 1.);
    assert!(flows[1].id > flows[0].id);

    let (flows, _) = run(&cap.0, Config::default());
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].features.get(F::TotalFwdPackets), 3.);
    // The 14 s gap is an idle period (activity timeout 5 s).
    assert_eq!(flows[0].features.get(F::IdleMax), 14_000_000.);
}

#[test]
fn flow_timeout_cuts_at_120_s_and_sweeps_emit_early() {
    let mut table = FlowTable::new(Config::default());
    let f = v4_udp(C4, S4, 1000, 2000, 10);
    for t in [0u64, 60, 119, 121] {
        table
            .push((T0_US + t * 1_000_000) * 1000, LinkType::ETHERNET, &f)
            .unwrap();
    }
    let done: Vec<_> = table.drain_finished().collect();
    assert_eq!(
        done.len(),
        1,
        "the 120 s cut is emitted as soon as it happens"
    );
    assert_eq!(done[0].end_reason, EndReason::FlowTimeout);
    assert_eq!(done[0].features.get(F::TotalFwdPackets), 3.);
    assert_eq!(done[0].features.get(F::FlowDuration), 119e6);
    // An unrelated packet 200 s later sweeps the second flow out (idle).
    let other = v4_udp([10, 9, 9, 9], S4, 7, 7, 1);
    table
        .push((T0_US + 400_000_000) * 1000, LinkType::ETHERNET, &other)
        .unwrap();
    let done: Vec<_> = table.drain_finished().collect();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].end_reason, EndReason::IdleTimeout);
    assert_eq!(done[0].start_ns, (T0_US + 121_000_000) * 1000);
    assert_eq!(table.open_flows(), 1);
}

#[test]
fn qinq_vlan_ipv6_with_extension_header_and_rst() {
    let c6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let s6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    // Hop-by-hop options header (8 bytes, next = TCP), then TCP.
    let v6 = |src, dst, sport, dport, flags, win, pl| {
        let t = tcp(sport, dport, flags, win, 20, pl);
        let hbh = [6u8, 0, 1, 4, 0, 0, 0, 0];
        let l = t.len() + hbh.len();
        cat(&[
            &eth(&[(0x88a8, 100), (0x8100, 200)], 0x86dd),
            &ipv6(src, dst, 0, l),
            &hbh,
            &t,
        ])
    };
    let mut cap = Pcap::new(1);
    cap.add(T0_US, &v6(c6, s6, 50000, 443, SYN | ECE | CWR, 1000, 0));
    cap.add(T0_US + 40, &v6(s6, c6, 443, 50000, RST | ACK, 0, 0));
    // Single 802.1Q tag, IPv4 UDP.
    let u = udp(9, 9, 3);
    cap.add(
        T0_US + 50,
        &cat(&[&eth(&[(0x8100, 7)], 0x0800), &ipv4(C4, S4, 17, u.len()), &u]),
    );
    let (flows, table) = run(&cap.0, Config::default());
    assert_eq!(table.counters().corrupt(), 0);
    assert_eq!(flows.len(), 2);
    let r = &flows[0];
    assert_eq!(r.end_reason, EndReason::Rst);
    assert_eq!(r.src.to_ip().to_string(), "2001:db8::2");
    assert_eq!(r.dst.to_ip().to_string(), "2001:db8::1");
    assert_eq!(r.flow_id(), "2001:db8::2-2001:db8::1-50000-443-6");
    Expect(vec![
        (F::DestinationPort, 443.),
        (F::FlowDuration, 40.),
        (F::TotalFwdPackets, 1.),
        (F::TotalBackwardPackets, 1.),
        (F::FwdHeaderLength, 20.),
        (F::BwdHeaderLength, 20.),
        (F::SynFlagCount, 1.),
        (F::RstFlagCount, 1.),
        (F::AckFlagCount, 1.),
        (F::EceFlagCount, 1.),
        (F::CwrFlagCount, 1.),
        (F::InitWinBytesForward, 1000.),
        (F::InitWinBytesBackward, 0.),
        (F::FlowPacketsPerSec, 2. / 40e-6),
    ])
    .check(r, false);
    assert_eq!(flows[1].protocol, 17);
    assert_eq!(flows[1].features.get(F::TotalLengthFwdPackets), 3.);
}

#[test]
fn corrupt_and_truncated_packets_are_counted_and_skipped() {
    let mut cap = Pcap::new(1);
    cap.add(T0_US, &v4_udp(C4, S4, 1, 2, 5));
    // Cut inside the IPv4 header.
    cap.add(T0_US + 1, &v4_udp(C4, S4, 1, 2, 5)[..14 + 10]);
    // IHL of 3 words: impossible.
    let mut bad = v4_udp(C4, S4, 1, 2, 5);
    bad[14] = 0x43;
    cap.add(T0_US + 2, &bad);
    // TCP data offset beyond the IP payload.
    let mut bad = v4_tcp(C4, S4, 1, 2, ACK, 1, 20, 0);
    bad[14 + 20 + 12] = 0xf0;
    cap.add(T0_US + 3, &bad);
    // ARP: not IP.
    cap.add(T0_US + 4, &cat(&[&eth(&[], 0x0806), &[0u8; 28]]));
    // Non-first fragment.
    let mut frag = v4_udp(C4, S4, 1, 2, 5);
    frag[14 + 7] = 0x10;
    cap.add(T0_US + 5, &frag);
    // Runt frame shorter than an Ethernet header.
    cap.add(T0_US + 6, &[1, 2, 3]);
    // A record header promising 60 bytes, and the file ends after 10.
    let mut bytes = cap.0.clone();
    bytes.extend_from_slice(&(((T0_US + 7) / 1_000_000) as u32).to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&60u32.to_le_bytes());
    bytes.extend_from_slice(&60u32.to_le_bytes());
    bytes.extend_from_slice(&[0u8; 10]);

    let mut table = FlowTable::new(Config::default());
    let stats = read_capture(&bytes[..], |ts, link, f| {
        let _ = table.push(ts, link, f);
    })
    .unwrap();
    assert!(stats.truncated_tail);
    assert_eq!(stats.packets, 7);
    table.finish_all();
    let c = *table.counters();
    assert_eq!(c.packets, 7);
    assert_eq!(c.in_flows, 1);
    assert_eq!(c.truncated, 2);
    assert_eq!(c.malformed, 2);
    assert_eq!(c.non_ip, 1);
    assert_eq!(c.fragments, 1);
    assert_eq!(c.flows, 1);
    assert_eq!(c.packets, c.in_flows + c.skipped() + c.corrupt());
}

#[test]
fn other_link_types_and_pcapng() {
    // Linux SLL: 16-byte header, protocol at offset 14.
    let u = udp(53, 5300, 20);
    let ip = cat(&[&ipv4(S4, C4, 17, u.len()), &u]);
    let mut sll = vec![0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00];
    sll.extend_from_slice(&ip);
    let mut cap = Pcap::new(113);
    cap.add(T0_US, &sll);
    let (flows, _) = run(&cap.0, Config::default());
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].features.get(F::TotalLengthFwdPackets), 20.);
    assert_eq!(flows[0].dst_port, 5300);

    // Raw IP.
    let mut cap = Pcap::new(101);
    cap.add(T0_US, &ip);
    assert_eq!(run(&cap.0, Config::default()).0.len(), 1);

    // pcapng: SHB, IDB (Ethernet, if_tsresol = 9 → ns), one EPB.
    let frame = v4_udp(C4, S4, 1, 2, 7);
    let mut ng = Vec::new();
    let block = |ng: &mut Vec<u8>, ty: u32, body: &[u8]| {
        let len = (12 + body.len()) as u32;
        ng.extend_from_slice(&ty.to_le_bytes());
        ng.extend_from_slice(&len.to_le_bytes());
        ng.extend_from_slice(body);
        ng.extend_from_slice(&len.to_le_bytes());
    };
    let mut shb = vec![0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0];
    shb.extend_from_slice(&[0xff; 8]);
    block(&mut ng, 0x0a0d_0d0a, &shb);
    let mut idb = vec![1, 0, 0, 0, 0, 0, 4, 0];
    idb.extend_from_slice(&[9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
    block(&mut ng, 1, &idb);
    let ts_ns: u64 = T0_US * 1000 + 123;
    let mut epb = vec![0, 0, 0, 0];
    epb.extend_from_slice(&((ts_ns >> 32) as u32).to_le_bytes());
    epb.extend_from_slice(&(ts_ns as u32).to_le_bytes());
    epb.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    epb.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    epb.extend_from_slice(&frame);
    while epb.len() % 4 != 0 {
        epb.push(0);
    }
    block(&mut ng, 6, &epb);
    let (flows, _) = run(&ng, Config::default());
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].start_ns, ts_ns);
    assert_eq!(flows[0].features.get(F::TotalLengthFwdPackets), 7.);
}

#[test]
fn not_a_capture_is_a_clear_error() {
    let err =
        read_capture(&b"hello, this is not a pcap file at all"[..], |_, _, _| {}).unwrap_err();
    assert!(err.to_string().contains("not a pcap or pcapng"), "{err}");
}

/// A real capture: `tcpdump -i lo -s 0` while curl fetched a directory
/// listing from `python3 -m http.server` three times over IPv4, once over
/// IPv6 (refused: nothing listened there), plus one 100-byte UDP datagram.
/// Expected values read from `tcpdump -nn -r` of the same file: each HTTP
/// connection is SYN, SYN-ACK, ACK, a 79-byte request, ACK, 156-byte
/// header, ACK, 5498-byte body, ACK, server FIN, client FIN, final ACK.
#[test]
fn real_tcpdump_loopback_capture() {
    let bytes = include_bytes!("data/loopback-http.pcap");
    let (flows, table) = run(bytes, Config::default());
    assert_eq!(table.counters().packets, 39);
    assert_eq!(table.counters().corrupt() + table.counters().skipped(), 0);
    assert_eq!(flows.len(), 5);
    let http: Vec<_> = flows
        .iter()
        .filter(|f| f.dst_port == 18765 && f.protocol == 6 && !f.src.v6)
        .collect();
    assert_eq!(http.len(), 3);
    for f in http {
        assert_eq!(f.end_reason, EndReason::Fin);
        Expect(vec![
            (F::TotalFwdPackets, 6.),
            (F::TotalBackwardPackets, 6.),
            (F::TotalLengthFwdPackets, 79.),
            (F::TotalLengthBwdPackets, 5654.),
            (F::BwdPacketLengthMax, 5498.),
            (F::ActDataPktFwd, 1.),
            (F::SynFlagCount, 2.),
            (F::FinFlagCount, 2.),
            (F::PshFlagCount, 3.),
            (F::FwdPshFlags, 1.),
            (F::BwdPshFlags, 2.),
            (F::AckFlagCount, 11.),
            // Linux loopback SYN: 40-byte TCP header (MSS, SACK, TS, WS),
            // then 32 bytes (timestamps) on every other segment.
            (F::FwdHeaderLength, 40. + 5. * 32.),
            (F::MinSegSizeForward, 32.),
        ])
        .check(f, false);
    }
    let v6 = flows
        .iter()
        .find(|f| f.src.v6)
        .expect("the refused IPv6 connection");
    assert_eq!(v6.end_reason, EndReason::Rst);
    let udp = flows
        .iter()
        .find(|f| f.protocol == 17)
        .expect("the UDP datagram");
    assert_eq!(udp.features.get(F::TotalLengthFwdPackets), 100.);
}
