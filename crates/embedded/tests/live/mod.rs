//! `ben up` on a LAN of network namespaces (`ben_mesh_sensor::lab`): what
//! the live-traffic tests share.

use ben_embedded::{Config, System};
use ben_mesh_sensor::lab::Lan;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// `ben up` with its sensor on the victim's interface (flows end 2 s after
/// their last packet) and the AI service every `every`; with `nftables`,
/// its enforcement agent holds the victim's nftables (else a dry run).
/// Returns the system and its data dir (the caller removes it).
pub async fn start(name: &str, lan: &Lan, every: Duration, nftables: bool) -> (System, PathBuf) {
    let dir = std::env::temp_dir().join(format!("ben-{name}-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("an old data dir removed");
    }
    std::env::set_var("BEN_BLOT_KEY", "live test key 0123456789abcdef");
    let mut counts = BTreeMap::new();
    counts.insert("sensor", 1);
    let sys = System::start(Config {
        data_dir: dir.clone(),
        api_addr: "127.0.0.1:0".parse().unwrap(),
        mesh_every: every,
        counts,
        sensor: ben_runtime::table::SensorEnv {
            iface: Some("evictim".into()),
            filter: None,
            netns: Some(lan.ns("victim")),
            idle_timeout_ms: 2_000,
            flow_timeout_ms: 0,
        },
        enforce_backend: nftables.then(|| "nftables".into()),
        enforce_netns: nftables.then(|| lan.ns("victim")),
        ..Config::default()
    })
    .await
    .expect("ben up starts with a sensor");
    // Traffic sent before the ring is bound would not be seen.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while !sys
        .stats
        .shared
        .sensor
        .capturing
        .load(std::sync::atomic::Ordering::Acquire)
    {
        assert!(
            std::time::Instant::now() < until,
            "the sensor is not capturing after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (sys, dir)
}
