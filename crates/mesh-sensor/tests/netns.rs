//! The live sensor against a real kernel: a LAN of network namespaces (a
//! bridge in its own namespace; a victim running a web server; a scanner,
//! a flooder and a benign client). The sensor's ring sits on the victim's
//! interface, inside the victim's namespace. A TCP connect scan and a UDP
//! flood are captured, assembled into flows and run through the detector
//! (the committed model, rules and baseline): both are named, from their
//! own sources, and the benign client's web requests are not flagged.
//! Frames of every kind the sensor can meet on a link (a jumbo frame, a
//! stack of VLAN tags, IP fragments, a truncated header) are sent at it
//! too: counted, never a panic. The kernel's own counts agree with the
//! frames the ring handed over.
//!
//! Needs root (namespaces, CAP_NET_RAW) and python3.

use ben_mesh_flows::{Config, FlowRecord};
use ben_mesh_sensor::lab::{py, Lan};
use ben_mesh_sensor::ring::{self, Ring, RingConfig};
use ben_mesh_sensor::{bpf, Live};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// What the sensor thread gathered.
struct Capture {
    flows: Vec<FlowRecord>,
    live: Live,
    frames: u64,
    stats: ring::KernelStats,
}

/// The sensor on host `who`'s interface until `stop`.
fn sense(
    lan: &Lan,
    who: &str,
    filter: Vec<ring::BpfInsn>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Capture> {
    let path = std::path::PathBuf::from(format!("/run/netns/{}", lan.ns(who)));
    let iface = format!("e{who}");
    let mut ring = ring::in_netns(&path, move || {
        Ring::open(&iface, &RingConfig::default(), &filter)
    })
    .expect("a capture ring on the victim's interface");
    std::thread::spawn(move || {
        let cfg = Config {
            idle_timeout_ns: 2_000_000_000,
            sweep_interval_ns: 100_000_000,
            ..Config::default()
        };
        let mut live = Live::new(cfg);
        let mut flows = vec![];
        let mut frames = 0u64;
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            match ring.next_block(Duration::from_millis(50), |f| live.frame(f.ts_ns, f.data)) {
                Ok(Some(read)) => {
                    frames += read.frames;
                    live.block(&read);
                }
                Ok(None) if stopping => break,
                Ok(None) => {}
                Err(e) => panic!("reading the ring: {e}"),
            }
            flows.extend(live.tick(now_ns()));
        }
        flows.extend(live.finish());
        let stats = ring.stats().expect("the kernel's counts");
        Capture {
            flows,
            live,
            frames,
            stats,
        }
    })
}

fn detect(flows: &[FlowRecord]) -> ben_mesh_detect::RunReport {
    let mut text = String::from_utf8(csv_header()).unwrap();
    for r in flows {
        text.push_str(std::str::from_utf8(&ben_mesh_flows::output::csv_line(r)).unwrap());
        text.push('\n');
    }
    let table = ben_mesh_detect::FlowTable::parse(&text).expect("the sensor's rows parse");
    let mut det = ben_mesh_detect::Detector::new(
        ben_mesh_detect::Config::default(),
        ben_mesh_detect::LgbmModel::parse(ben_mesh_detect::defaults::MODEL).unwrap(),
        ben_mesh_detect::defaults::MODEL_VERSION.to_owned(),
        &ben_mesh_detect::Baseline::parse(ben_mesh_detect::defaults::BASELINE).unwrap(),
        ben_mesh_detect::defaults::RULES,
        &table.feature_names,
    )
    .unwrap();
    det.run(&table)
}

fn csv_header() -> Vec<u8> {
    let mut h = Vec::new();
    ben_mesh_flows::output::write_csv_header(&mut h).unwrap();
    h
}

#[test]
fn a_scan_and_a_flood_are_named_and_the_benign_client_is_not() {
    let lan = Lan::new().expect("a LAN of namespaces (root)");
    let stop = Arc::new(AtomicBool::new(false));
    let sensor = sense(&lan, "victim", vec![], stop.clone());
    // The benign client's page loads for the whole run; a TCP connect
    // scan of 300 ports; a UDP flood of 3,000 datagrams.
    let user = lan.browse();
    lan.scan(2).expect("the scan");
    lan.flood(3000).expect("the flood");
    user.join()
        .expect("the benign client")
        .expect("its pages loaded");
    // Idle flows end 2 s after their last packet.
    std::thread::sleep(Duration::from_millis(2500));
    stop.store(true, Ordering::Relaxed);
    let cap = sensor.join().expect("the sensor thread");
    assert_eq!(
        cap.stats.drops, 0,
        "the ring dropped packets: {:?}",
        cap.stats
    );
    assert_eq!(
        cap.stats.packets, cap.frames,
        "the kernel's count and the frames the ring handed over"
    );
    let from = |host: u8| {
        let ip: std::net::IpAddr = lan.ip(host).parse().unwrap();
        cap.flows.iter().filter(move |f| f.src.to_ip() == ip)
    };
    // Every port scanned is a flow; every datagram of the flood is in one
    // (fresh sockets reuse source ports now and then, so flows < 3,000);
    // each page is a connection.
    let ports: std::collections::BTreeSet<u16> = from(2).map(|f| f.dst_port).collect();
    assert_eq!(ports.len(), 300, "the scan's ports");
    let datagrams: f64 = from(3)
        .map(|f| f.features.get(ben_mesh_flows::Feature::TotalFwdPackets))
        .sum();
    assert_eq!(datagrams, 3000.0, "the flood's datagrams");
    assert!(
        from(4).count() >= 30,
        "the client's flows: {}",
        from(4).count()
    );

    let report = detect(&cap.flows);
    let named = |host: u8| -> Vec<String> {
        let ip = lan.ip(host);
        report
            .detections
            .iter()
            .filter(|d| d.published && d.event.source.as_ref().is_some_and(|s| s.ip == ip))
            .map(|d| d.event.class.clone())
            .collect()
    };
    eprintln!(
        "scan: {:?}; flood: {:?}; user: {:?}; summary {:?}",
        named(2),
        named(3),
        named(4),
        report.summary
    );
    assert!(
        named(2).iter().any(|c| c == "portscan"),
        "the scan: {:?}",
        named(2)
    );
    assert!(
        named(3).iter().any(|c| c == "flood"),
        "the flood: {:?}",
        named(3)
    );
    assert!(
        named(4).is_empty(),
        "the benign client was named: {:?}",
        named(4)
    );
    assert!(named(1).is_empty(), "the victim was named: {:?}", named(1));
}

#[test]
fn frames_of_every_shape_are_counted_and_the_filter_is_applied() {
    let lan = Lan::new().expect("a LAN of namespaces (root)");
    let stop = Arc::new(AtomicBool::new(false));
    // A ring on the sender's interface sees every frame it sends (the
    // bridge would drop the malformed ones before the victim); a ring on
    // the victim's, filtered, only UDP.
    let all = sense(&lan, "flood", vec![], stop.clone());
    let filter = bpf::compile("udp").expect("tcpdump compiles the filter");
    let udp = sense(&lan, "victim", filter, stop.clone());
    let victim = lan.ip(1);
    // A jumbo UDP datagram, a large one in IP fragments, and through a
    // raw packet socket on the flooder's interface: UDP under a stack of
    // two VLAN tags, and a minimum-size frame whose IPv4 header claims 60
    // bytes (it has 46: cut inside its header); then TCP.
    py(
        &lan.ns("flood"),
        &format!(
            "import socket\n\
             s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             s.sendto(b'j'*8000,('{victim}',7000))\n\
             s.setsockopt(socket.IPPROTO_IP, 10, 0)\n\
             s.sendto(b'f'*20000,('{victim}',7001))\n\
             r=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\n\
             r.bind(('eflood',0))\n\
             dst=b'\\xff'*6; src=b'\\x02'*6\n\
             udp_ip=bytes.fromhex('4500001c00000000401100000a0000010a000002')+bytes.fromhex('1f4000350008'+'0000')\n\
             r.send(dst+src+b'\\x81\\x00\\x00\\x05'+b'\\x81\\x00\\x00\\x06'+b'\\x08\\x00'+udp_ip)\n\
             r.send(dst+src+b'\\x08\\x00'+bytes.fromhex('4f00003c00000000401100000a0000010a000002')+bytes(26))\n\
             t=socket.socket(); t.settimeout(0.5); t.connect_ex(('{victim}',8080)); t.close()\n"
        ),
    )
    .expect("the odd frames");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (all, udp) = (
        all.join().expect("a sensor thread"),
        udp.join().expect("a sensor thread"),
    );
    let c = all.live.counters();
    eprintln!(
        "{c:?}; frames {}; cut {}; kernel {:?}",
        all.frames, all.live.cut, all.stats
    );
    assert_eq!((all.stats.drops, udp.stats.drops), (0, 0));
    assert_eq!(
        c.packets, all.frames,
        "every frame handed over is in the counts"
    );
    // Packets may arrive between the last block read and the counts
    // (neighbour discovery), so the kernel's count is at least the frames.
    assert!(all.stats.packets >= all.frames, "the kernel's count");
    // The jumbo datagram is one flow with its whole size.
    let jumbo = all
        .flows
        .iter()
        .find(|f| f.dst_port == 7000)
        .expect("the jumbo datagram's flow");
    assert_eq!(
        jumbo
            .features
            .get(ben_mesh_flows::Feature::TotalLengthFwdPackets),
        8000.0
    );
    // Fragments: the first starts a flow, the rest are counted.
    assert!(c.fragments >= 2, "non-first fragments counted: {c:?}");
    // The VLAN-stacked datagram is a flow (10.0.0.1:8000 → 10.0.0.2:53).
    assert!(
        all.flows
            .iter()
            .any(|f| f.src_port == 8000 && f.dst_port == 53),
        "the VLAN-tagged datagram's flow"
    );
    // The cut frame is counted as corrupt.
    assert!(c.truncated >= 1, "{c:?}");
    // TCP reached the unfiltered ring and not the filtered one.
    assert!(
        all.flows.iter().any(|f| f.protocol == 6),
        "the TCP connection"
    );
    assert!(!udp.flows.is_empty(), "the filtered ring saw the UDP");
    assert!(
        udp.flows.iter().all(|f| f.protocol == 17),
        "the filter let non-UDP through"
    );
}
