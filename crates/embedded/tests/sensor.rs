//! CyberMesh on live traffic, in one process: `ben up` with its sensor on
//! the victim's interface of a LAN of network namespaces (see
//! `ben_mesh_sensor::lab`). A TCP connect scan and a UDP flood
//! (6,000 datagrams) from two attacker hosts, and a benign client's page loads, go over the
//! wire; the sensor's flows, signed, reach the AI service, whose signed
//! anomalies name the scanner (portscan) and the flooder (flood) and never
//! the benign client. The status line shows what was captured and that
//! the kernel dropped nothing.
//!
//! Needs root (namespaces, CAP_NET_RAW) and python3.

use ben_mesh_sensor::lab::Lan;
use ben_wire::pb;
use prost::Message as _;
use std::collections::{BTreeMap, BTreeSet};

mod live;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_scan_and_flood_are_named_and_the_benign_client_is_not() {
    let lan = Lan::new().expect("a LAN of namespaces (root)");
    // The default step: flows judged as they arrive, windows kept open
    // across steps.
    let every = ben_embedded::Config::default().mesh_every;
    let (sys, dir) = live::start("sensor", &lan, every, false).await;
    let mut anomalies = ben_bus::Bus::subscribe(sys.bus.as_ref(), "ai.anomalies.v1", None)
        .await
        .unwrap();
    let victim = lan.ip(1);
    let user = lan.browse();
    let lan = std::sync::Arc::new(lan);
    let l = lan.clone();
    tokio::task::spawn_blocking(move || {
        l.scan(2).expect("the scan");
        l.flood(6000).expect("the flood");
    })
    .await
    .unwrap();
    // The anomalies, by source, until both attackers are named (the
    // flood's flows end 2 s after its last datagram) and a little after.
    let mut named: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let want = |n: &BTreeMap<String, BTreeSet<String>>| {
        n.get(&lan.ip(2)).is_some_and(|c| c.contains("portscan"))
            && n.get(&lan.ip(3)).is_some_and(|c| c.contains("flood"))
    };
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut settle = None;
    loop {
        let deadline = settle.unwrap_or(until).min(until);
        let Ok(Some(m)) = tokio::time::timeout_at(deadline, anomalies.next()).await else {
            break;
        };
        let env = pb::SignedEnvelope::decode(m.payload.as_slice()).unwrap();
        assert_eq!(env.kind, "anomaly");
        let a = ben_mesh_detect::wire::AnomalyEvent::decode(env.payload.as_slice()).unwrap();
        let src = a.source.map(|s| s.ip).unwrap_or_default();
        named.entry(src).or_default().insert(a.class);
        if settle.is_none() && want(&named) {
            settle = Some(tokio::time::Instant::now() + Duration::from_secs(1));
        }
    }
    user.join()
        .expect("the benign client")
        .expect("its pages loaded");
    let status = sys.status_line().await;
    eprintln!("named: {named:?}\n{status}");
    assert!(want(&named), "the scan and the flood, named: {named:?}");
    assert!(
        !named.contains_key(&lan.ip(4)),
        "the benign client was named: {named:?}"
    );
    assert!(
        !named.contains_key(&victim),
        "the victim was named: {named:?}"
    );
    assert!(status.contains("captured "), "{status}");
    assert!(status.contains("(kernel drops 0, undecodable "), "{status}");
    sys.shutdown().await;
    std::fs::remove_dir_all(&dir).expect("the data dir removed");
}

/// A flood on one 5-tuple is one flow (ICMP echo: one identifier): the
/// live sensor cuts it every 10 s (the detector's window), so it is named
/// while it lasts, not when it ends (a capture file's 120 s flow timeout
/// would have held it back two minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_flow_icmp_flood_is_named_while_it_lasts() {
    assert!(
        std::process::Command::new("ping")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success()),
        "ping is missing: install iputils-ping (scripts/test does)"
    );
    let lan = Lan::new().expect("a LAN of namespaces (root)");
    let every = ben_embedded::Config::default().mesh_every;
    let (sys, dir) = live::start("sensor-icmp", &lan, every, false).await;
    let mut anomalies = ben_bus::Bus::subscribe(sys.bus.as_ref(), "ai.anomalies.v1", None)
        .await
        .unwrap();
    let flooder = lan.ip(3);
    // 500 echo requests a second for 25 s, one flow.
    let mut ping = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &lan.ns("flood"),
            "ping",
            "-q",
            "-i",
            "0.002",
            "-w",
            "25",
        ])
        .arg(lan.ip(1))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ping runs");
    let until = tokio::time::Instant::now() + Duration::from_secs(25);
    let named = loop {
        let Ok(Some(m)) = tokio::time::timeout_at(until, anomalies.next()).await else {
            let _ = ping.kill();
            panic!(
                "the flood was not named while it lasted: {}",
                sys.status_line().await
            );
        };
        let env = pb::SignedEnvelope::decode(m.payload.as_slice()).unwrap();
        let a = ben_mesh_detect::wire::AnomalyEvent::decode(env.payload.as_slice()).unwrap();
        if a.source.as_ref().is_some_and(|s| s.ip == flooder) {
            break a;
        }
    };
    let still_flooding = ping.try_wait().expect("ping's state").is_none();
    let _ = ping.kill();
    let _ = ping.wait();
    assert!(
        still_flooding,
        "named only after the flood ended: {named:?}"
    );
    assert_eq!(named.class, "flood", "{named:?}");
    assert_eq!(named.protocol, 1, "{named:?}");
    sys.shutdown().await;
    std::fs::remove_dir_all(&dir).expect("the data dir removed");
}
