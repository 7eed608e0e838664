//! Attacks made of individually normal flows: a burst of ordinary benign
//! HTTP flows from one source at flood rate. The window view (the model's
//! `src_*` inputs and the math engine's per-source baselines) is what can
//! see it.

mod common;

use ben_mesh_detect::{Config, FlowTable};

#[test]
fn a_burst_of_normal_http_flows_is_flagged_as_flood() {
    let split = common::test_split();
    // Benign web fetches (port 80) of one client, replayed 3,000 times in 5 s.
    let template: Vec<_> = split
        .flows
        .iter()
        .filter(|f| f.label.as_deref() == Some("benign") && f.endpoints.dst_port == 80)
        .take(40)
        .cloned()
        .collect();
    assert!(template.len() >= 10);
    let t0 = 1_800_000_000_000_000i64;
    let n = 3000;
    let flows = (0..n)
        .map(|i| {
            let mut f = template[i % template.len()].clone();
            f.id = format!("burst-{i}");
            f.endpoints.src_ip = "10.77.0.201".parse().expect("ip");
            f.endpoints.src_port = 20_000 + i as u16;
            f.start_us = t0 + (i as i64) * 5_000_000 / n as i64;
            f
        })
        .collect();
    let table = FlowTable {
        feature_names: split.feature_names.clone(),
        flows,
    };
    let mut det = common::detector(Config::default(), &table);
    let report = det.run(&table);
    let flagged = report.verdicts.iter().filter(|v| v.class != 0).count();
    let math_votes = report.verdicts.iter().filter(|v| v.math_class != 0).count();
    let ml_attack = report.verdicts.iter().filter(|v| v.ml_class != 0).count();
    println!("normal-looking burst: {flagged}/{n} flagged, math voted on {math_votes}, ML said attack on {ml_attack}");
    for d in &report.detections {
        println!(
            "  {} {:.3} flows {}",
            d.event.class, d.event.confidence, d.event.flow_count
        );
    }
    assert!(math_votes > n / 2, "the math engine must see the burst");
    assert!(flagged * 10 >= n * 9, "only {flagged} of {n} flagged");
    assert!(report.detections.iter().all(|d| d.event.class == "flood"));

    // Control: the very same flows spread over 1,500 sources (two each) and
    // 50 s are ordinary traffic and must not be flagged.
    let spread = FlowTable {
        feature_names: table.feature_names.clone(),
        flows: table
            .flows
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let mut f = f.clone();
                f.endpoints.src_ip =
                    std::net::IpAddr::from([10, 78, (i / 500) as u8, (i % 250) as u8]);
                f.start_us = t0 + (i as i64) * 50_000_000 / n as i64;
                f
            })
            .collect(),
    };
    let mut det = common::detector(Config::default(), &spread);
    let report = det.run(&spread);
    let flagged = report.verdicts.iter().filter(|v| v.class != 0).count();
    println!("control (spread over sources): {flagged}/{n} flagged");
    assert_eq!(flagged, 0);
}
