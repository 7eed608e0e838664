//! Properties: the decoder and the flow table never panic on any bytes (the
//! same property the fuzz target checks), and every packet is accounted for.

mod common;

use ben_mesh_flows::{decode, read_capture, synth, Config, FlowTable, LinkType, FEATURE_COUNT};
use proptest::prelude::*;

const LINKS: [LinkType; 10] = [
    LinkType::NULL,
    LinkType::ETHERNET,
    LinkType::RAW_BSD,
    LinkType::RAW_OPENBSD,
    LinkType::RAW,
    LinkType::LOOP,
    LinkType::LINUX_SLL,
    LinkType::IPV4,
    LinkType::IPV6,
    LinkType::LINUX_SLL2,
];

fn valid_frames() -> Vec<Vec<u8>> {
    use common::*;
    let c6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let t = tcp(1, 2, SYN, 5, 24, 3);
    vec![
        v4_tcp([1, 2, 3, 4], [5, 6, 7, 8], 1, 2, SYN | ACK, 9, 40, 10),
        v4_udp([1, 2, 3, 4], [5, 6, 7, 8], 1, 2, 10),
        cat(&[
            &eth(&[(0x8100, 1), (0x8100, 2)], 0x86dd),
            &ipv6(c6, c6, 6, t.len()),
            &t,
        ]),
    ]
}

fn real_capture() -> &'static Vec<u8> {
    static CAP: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    CAP.get_or_init(|| synth::mixed_capture_pcap(20, 7))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn decode_never_panics(link in 0usize..LINKS.len(), bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode(LINKS[link], &bytes);
    }

    #[test]
    fn mutated_valid_frames_never_panic(which in 0usize..3, cut in 0usize..120, flips in proptest::collection::vec((0usize..120, any::<u8>()), 0..6)) {
        let mut f = valid_frames()[which].clone();
        for (at, v) in flips {
            if let Some(b) = f.get_mut(at) { *b = v; }
        }
        f.truncate(cut.min(f.len()));
        let mut table = FlowTable::new(Config::default());
        let _ = table.push(1, LinkType::ETHERNET, &f);
        table.finish_all();
        for r in table.drain_finished() {
            prop_assert!(r.features.as_array().iter().all(|v| v.is_finite()));
        }
    }

    #[test]
    fn every_packet_is_accounted_for(frames in proptest::collection::vec((0u64..10_000_000_000, proptest::collection::vec(any::<u8>(), 0..80)), 0..60)) {
        let mut table = FlowTable::new(Config { max_flows: 8, ..Config::default() });
        let mut good = valid_frames();
        for (i, (ts, bytes)) in frames.iter().enumerate() {
            // Mix random bytes with valid frames so flows do form.
            let f = if i % 2 == 0 { &good[i % 3] } else { bytes };
            let _ = table.push(*ts, LinkType::ETHERNET, f);
            good[1][14 + 20 + 1] = i as u8; // vary the UDP port
        }
        table.finish_all();
        let c = *table.counters();
        prop_assert_eq!(c.packets, frames.len() as u64);
        prop_assert_eq!(c.packets, c.in_flows + c.skipped() + c.corrupt());
        let flows: Vec<_> = table.drain_finished().collect();
        prop_assert_eq!(flows.len() as u64, c.flows);
        let total: f64 = flows.iter().map(|r| r.features.0[2] + r.features.0[3]).sum();
        prop_assert_eq!(total as u64, c.in_flows, "every decoded packet is in exactly one flow");
        prop_assert!(flows.iter().all(|r| r.features.as_array().len() == FEATURE_COUNT));
    }

}

proptest! {
    // Each case allocates a reader buffer: fewer cases keep `cargo test` fast.
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn capture_reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400), keep in 0usize..2000) {
        // Random bytes, and a real capture cut or corrupted at random.
        let _ = read_capture(&bytes[..], |_, _, _| {});
        let mut real = real_capture().clone();
        let k = keep.min(real.len());
        if let Some(b) = real.get_mut(k / 2) { *b ^= 0xff; }
        real.truncate(k);
        let mut table = FlowTable::new(Config::default());
        let _ = read_capture(&real[..], |ts, l, f| { let _ = table.push(ts, l, f); });
    }
}

#[test]
fn output_does_not_depend_on_the_hash_seed() {
    let cap = synth::mixed_capture_pcap(3000, 42);
    let run = |seed| {
        let mut t = FlowTable::new(Config {
            hash_seed: seed,
            ..Config::default()
        });
        read_capture(&cap[..], |ts, l, f| {
            let _ = t.push(ts, l, f);
        })
        .unwrap();
        t.finish_all();
        t.drain_finished().collect::<Vec<_>>()
    };
    let a = run(1);
    assert!(a.len() > 100);
    assert_eq!(a, run(0xdead_beef));
}

#[test]
fn eviction_keeps_the_table_bounded_and_counts() {
    let mut t = FlowTable::new(Config {
        max_flows: 100,
        ..Config::default()
    });
    let mut f = Vec::new();
    for i in 0..1000u32 {
        synth::eth_ipv4_udp(
            &mut f,
            [10, 0, (i >> 8) as u8, i as u8],
            [10, 1, 1, 1],
            5,
            5,
            1,
        );
        t.push(u64::from(i) * 1000, LinkType::ETHERNET, &f).unwrap();
        assert!(t.open_flows() <= 100);
    }
    t.finish_all();
    let c = *t.counters();
    assert_eq!(c.flows, 1000);
    assert!(c.evicted >= 800, "evicted {}", c.evicted);
}
