//! CyberMesh's closed loop on live traffic, in one process: `ben up` with
//! its sensor on the victim's interface of a LAN of network namespaces
//! (see `ben_mesh_sensor::lab`) and its enforcement agent holding
//! the victim's nftables. A TCP connect scan (what `nmap -sT` sends) from
//! the scanner is detected from the live flows, committed by the four
//! validators, and the agent's policy drops the scanner's packets: its
//! next connection to the victim's web server fails, while the benign
//! client's page loads succeed before, during and after. The anomaly's
//! lifecycle ends COMMITTED with the agent's `applied` ack.
//!
//! Needs root (namespaces, CAP_NET_RAW, nftables) and python3.

use ben_mesh_sensor::lab::Lan;
use ben_mesh_wire::PolicyAck;
use ben_wire::pb;
use prost::Message as _;
use std::time::{Duration, Instant};

mod live;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_scan_is_blocked_and_the_benign_client_keeps_working() {
    let nft = std::process::Command::new("nft").arg("--version").output();
    assert!(
        nft.is_ok_and(|o| o.status.success()),
        "nft is missing: install nftables (scripts/test does)"
    );
    let lan = Lan::new().expect("a LAN of namespaces (root)");
    let (sys, dir) = live::start("blocked", &lan, Duration::from_millis(500), true).await;
    let mut anomalies = ben_bus::Bus::subscribe(sys.bus.as_ref(), "ai.anomalies.v1", None)
        .await
        .unwrap();
    let mut acks = ben_bus::Bus::subscribe(sys.bus.as_ref(), ben_mesh_wire::ACK_SUBJECT, None)
        .await
        .unwrap();
    assert!(
        lan.scanner_connects(2).unwrap(),
        "before the scan the scanner connects"
    );
    // The benign client loads pages for the whole run (30 pages, 0.1 s
    // apart; a failed load fails its thread).
    let user = lan.browse();
    let scanned = Instant::now();
    lan.scan(2).expect("the scan");
    let scanner = lan.ip(2);
    // The anomaly naming the scanner.
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    let anomaly = loop {
        let m = tokio::time::timeout_at(until, anomalies.next())
            .await
            .expect("an anomaly naming the scanner within 20 s")
            .unwrap();
        let env = pb::SignedEnvelope::decode(m.payload.as_slice()).unwrap();
        let a = ben_mesh_detect::wire::AnomalyEvent::decode(env.payload.as_slice()).unwrap();
        if a.source.as_ref().is_some_and(|s| s.ip == scanner) {
            assert_eq!(a.class, "portscan");
            break a;
        }
    };
    let detected = scanned.elapsed();
    // The agent's ack: applied to the victim's nftables.
    let ack = loop {
        let m = tokio::time::timeout_at(until, acks.next())
            .await
            .expect("the agent's ack within 20 s")
            .unwrap();
        let env = pb::SignedEnvelope::decode(m.payload.as_slice()).unwrap();
        let ack = PolicyAck::decode(env.payload.as_slice()).unwrap();
        if ack.target == scanner {
            break ack;
        }
    };
    let blocked = scanned.elapsed();
    assert_eq!(ack.status, "applied", "{ack:?}");
    assert_eq!(ack.backend, "nftables", "{ack:?}");
    // The scanner's packets stop; the client's do not.
    assert!(
        !lan.scanner_connects(2).unwrap(),
        "the scanner still connects after the block"
    );
    user.join()
        .expect("the benign client")
        .expect("its pages all loaded");
    // The feedback loop's record: COMMITTED, with the ack.
    let mut life = serde_json::Value::Null;
    for _ in 0..50 {
        life =
            ben_control::mesh::ask_feedback(sys.bus.as_ref(), &anomaly.id, Duration::from_secs(2))
                .await
                .map(|v| v["lifecycle"].clone())
                .unwrap_or_default();
        if life["state"] == "COMMITTED" && life["acks"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(life["state"], "COMMITTED", "{life}");
    eprintln!(
        "scan → anomaly {:.2} s, → applied in nftables {:.2} s",
        detected.as_secs_f64(),
        blocked.as_secs_f64()
    );
    sys.shutdown().await;
    std::fs::remove_dir_all(&dir).expect("the data dir removed");
}
