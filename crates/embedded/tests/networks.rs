//! `ben up --network-sources 3`: the bundled port scan replayed from three
//! addresses of one /24 is named three times; the AI service then asks the
//! validators to block the /24 (a signed request on `ai.policy.v1` citing
//! the three anomalies), they commit it, and the enforcement agent holds
//! the network. With the setting off (the default) the same replays block
//! the three addresses and nothing more.

use ben_embedded::{Config, System};
use ben_mesh_wire::{PolicyAck, PolicyRequest, ACK_SUBJECT, POLICY_REQUEST_SUBJECT};
use ben_wire::{pb, Signer};
use prost::Message as _;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const CAPTURE: &[u8] = include_bytes!("../../../examples/mesh/portscan.pcap");
const SCANNER: &str = "203.0.113.66";

async fn replays(sources: usize) -> (BTreeSet<String>, Vec<PolicyRequest>) {
    let dir = std::env::temp_dir().join(format!("ben-networks-{sources}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::env::set_var("BEN_BLOT_KEY", "networks test key 0123456789abcdef");
    let sensor = Signer::from_secret([19; 32]);
    let sys = System::start(Config {
        data_dir: dir.clone(),
        api_addr: "127.0.0.1:0".parse().unwrap(),
        trust: vec![("sensor-net".into(), sensor.public())],
        mesh_network_sources: sources,
        ..Config::default()
    })
    .await
    .expect("ben up starts");
    let mut acks = sys.bus.subscribe(ACK_SUBJECT, None).await.unwrap();
    let mut requests = sys
        .bus
        .subscribe(POLICY_REQUEST_SUBJECT, None)
        .await
        .unwrap();
    let mut seq = ben_mesh_sensor::Numbering::starting_at(ben_time::now_ns().max(0) as u64);
    for host in 1..=3 {
        let scanner = format!("198.51.100.{host}");
        let (_, rows) =
            ben_mesh_flows::replay_rows(CAPTURE, ben_time::now_ns().max(0) as u64).unwrap();
        let rows = rows
            .into_iter()
            .map(|r| {
                String::from_utf8_lossy(&r)
                    .replace(SCANNER, &scanner)
                    .into_bytes()
            })
            .collect();
        for b in ben_mesh_sensor::seal_batches(&sensor, "sensor-net", &mut seq, rows, 256 << 10) {
            sys.bus.publish(ben_mesh_ai::FLOWS, b).await.unwrap();
        }
    }
    let want = if sources > 0 { 4 } else { 3 };
    let mut applied = BTreeSet::new();
    let t = Instant::now();
    while applied.len() < want && t.elapsed() < Duration::from_secs(20) {
        let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), acks.next()).await
        else {
            continue;
        };
        let env = pb::SignedEnvelope::decode(&m.payload[..]).unwrap();
        let a = PolicyAck::decode(&env.payload[..]).unwrap();
        assert_eq!(a.status, "applied", "{a:?}");
        applied.insert(a.target);
    }
    // A moment more for anything that should not come.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), acks.next()).await {
        let env = pb::SignedEnvelope::decode(&m.payload[..]).unwrap();
        applied.insert(PolicyAck::decode(&env.payload[..]).unwrap().target);
    }
    let mut asked = vec![];
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), requests.next()).await
    {
        let env = pb::SignedEnvelope::decode(&m.payload[..]).unwrap();
        assert_eq!(env.kind, "policy_request");
        asked.push(PolicyRequest::decode(&env.payload[..]).unwrap());
    }
    let line = sys.status_line().await;
    sys.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    println!("network sources {sources}: applied {applied:?}; {line}");
    (applied, asked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_attackers_of_one_network_get_the_network_blocked_when_asked_for() {
    let (applied, asked) = replays(3).await;
    let hosts: BTreeSet<String> = (1..=3).map(|h| format!("198.51.100.{h}")).collect();
    let mut want = hosts.clone();
    want.insert("198.51.100.0/24".into());
    assert_eq!(applied, want);
    assert_eq!(asked.len(), 1, "{asked:?}");
    let r = &asked[0];
    assert_eq!(
        (r.target.as_str(), r.action.as_str()),
        ("198.51.100.0/24", "drop")
    );
    assert_eq!(r.anomalies.len(), 3, "one anomaly of each source: {r:?}");
    assert_eq!(r.service, "mesh-1");

    let (applied, asked) = replays(0).await;
    assert_eq!(applied, hosts, "off by default: the addresses only");
    assert!(asked.is_empty(), "{asked:?}");
}
