//! The pipeline end to end on the committed model: aggregation, signing,
//! rate limiting, determinism, and bad input never panicking.

mod common;

use ben_mesh_detect::wire::{AnomalyEvent, EvidenceEvent};
use ben_mesh_detect::{defaults, Config, FlowTable, LgbmModel, Stream, StreamConfig};
use ben_wire::{open, open_bytes, Keyring, Signer};

fn flood_of(n: usize) -> FlowTable {
    let split = common::test_split();
    let template: Vec<_> = split
        .flows
        .iter()
        .filter(|f| f.label.as_deref() == Some("flood"))
        .take(50)
        .cloned()
        .collect();
    assert!(!template.is_empty(), "the test split has flood flows");
    let t0 = 1_800_000_000_000_000i64;
    let flows = (0..n)
        .map(|i| {
            let mut f = template[i % template.len()].clone();
            f.id = format!("flood-{i}");
            f.endpoints.src_port = 1024 + (i % 60000) as u16;
            // 20,000 flows over 15 s: two windows
            f.start_us = t0 + (i as i64) * 15_000_000 / n as i64;
            f
        })
        .collect();
    FlowTable {
        feature_names: split.feature_names.clone(),
        flows,
    }
}

#[test]
fn a_flood_of_20000_flows_is_a_few_anomalies() {
    let table = flood_of(20_000);
    let mut det = common::detector(Config::default(), &table);
    let report = det.run(&table);
    let s = &report.summary;
    println!(
        "flood: {} flagged flows → {} anomalies",
        s.flagged_flows, s.anomalies
    );
    assert!(s.flagged_flows >= 19_000, "flagged {}", s.flagged_flows);
    assert!(
        s.anomalies >= 1 && s.anomalies <= 4,
        "{} anomalies",
        s.anomalies
    );
    for d in &report.detections {
        assert_eq!(d.event.class, "flood");
        assert!(d.event.confidence > 0.7);
        assert!(d.event.flow_count > 1000);
        assert_eq!(
            d.event.evidence_flow_ids.len(),
            Config::default().max_anomaly_flow_ids
        );
        assert_eq!(
            d.evidence.flows.len() as u64 + d.evidence.truncated,
            d.event.flow_count
        );
        assert_eq!(d.event.votes.len(), 3);
        assert!(d.event.top_features.iter().any(|c| c.kind == "saabas"));
    }
}

#[test]
fn anomalies_are_signed_with_domain_separation() {
    let table = common::test_split();
    let mut det = common::detector(Config::default(), table);
    let report = det.run(table);
    assert!(!report.detections.is_empty());
    let signer = Signer::from_secret([42; 32]);
    let mut keys = Keyring::new();
    keys.trust("mesh-1", ben_wire::Role::AiService, signer.public());
    for d in report.detections.iter().take(20) {
        let bytes = signer.seal_bytes(&d.event);
        let opened = open_bytes::<AnomalyEvent>(&bytes, &keys).expect("verifies");
        assert_eq!(opened.get(), &d.event);
        let e = signer.seal(&d.evidence);
        assert_eq!(
            open::<EvidenceEvent>(&e, &keys).expect("evidence").get(),
            &d.evidence
        );
        assert!(open::<AnomalyEvent>(&e, &keys).is_err());
        let mut bad = signer.seal(&d.event);
        bad.payload.push(0);
        assert!(open::<AnomalyEvent>(&bad, &keys).is_err());
    }
}

#[test]
fn rate_limited_anomalies_are_counted_not_dropped() {
    let table = common::test_split();
    let cfg = Config {
        rate_per_sec: 0.01,
        rate_burst: 1.0,
        ..Config::default()
    };
    let mut det = common::detector(cfg, table);
    let report = det.run(table);
    let s = &report.summary;
    assert!(
        s.anomalies >= 2,
        "need several anomalies, got {}",
        s.anomalies
    );
    assert!(s.rate_limited > 0);
    assert_eq!(s.published + s.rate_limited, s.anomalies);
    assert_eq!(report.detections.len() as u64, s.anomalies);
    assert_eq!(
        report.detections.iter().filter(|d| !d.published).count() as u64,
        s.rate_limited
    );
}

#[test]
fn runs_are_deterministic() {
    let table = common::test_split();
    let a = common::detector(Config::default(), table).run(table);
    let b = common::detector(Config::default(), table).run(table);
    assert_eq!(a.verdicts, b.verdicts);
    assert_eq!(a.detections, b.detections);
    let c = common::detector(
        Config {
            id_seed: 9,
            ..Config::default()
        },
        table,
    )
    .run(table);
    assert_ne!(a.detections[0].event.id, c.detections[0].event.id);
}

/// A small deterministic generator for mutation testing (no extra crates).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn mutated_inputs_give_errors_not_panics() {
    let mut rng = Lcg(1);
    let model = defaults::MODEL.as_bytes();
    let flows = "Flow ID,Source IP,Source Port,Destination IP,Protocol,Timestamp,Destination Port,Flow Duration,Label\n\
                 a,10.0.0.1,1,10.0.0.2,6,1.5,80,12,benign\n";
    for round in 0..120 {
        // Model: flip, delete or duplicate a few bytes.
        let mut m = model[..model.len().min(20_000)].to_vec();
        for _ in 0..4 {
            let i = (rng.next() as usize) % m.len();
            match rng.next() % 3 {
                0 => m[i] = b"0123456789-=.\n e"[(rng.next() % 16) as usize],
                1 => {
                    m.remove(i);
                }
                _ => m.insert(i, m[i]),
            }
        }
        if let Ok(parsed) = LgbmModel::parse(&String::from_utf8_lossy(&m)) {
            let x = vec![f64::NAN; parsed.feature_names().len()];
            let _ = parsed.predict(&x);
            let _ = parsed.contributions(&x, 0);
        }
        let mut f = flows.as_bytes().to_vec();
        for _ in 0..3 {
            let i = (rng.next() as usize) % f.len();
            f[i] = b",.:x0-\n\"{9"[(rng.next() % 10) as usize];
        }
        let _ = FlowTable::parse(&String::from_utf8_lossy(&f));
        let (from, to) = [
            ("ge = ", "ge = \"x\" #"),
            ("le = ", "le = nan #"),
            ("version = ", "version = -"),
            ("class = \"", "class = 7 #\""),
        ][round % 4];
        assert!(defaults::RULES.contains(from));
        let rules = defaults::RULES.replacen(from, to, 1);
        let table = FlowTable::parse(flows).expect("valid sample");
        let baseline = ben_mesh_detect::Baseline::parse(defaults::BASELINE).expect("baseline");
        assert!(ben_mesh_detect::rules::RuleSet::parse(
            &rules,
            &baseline.classes,
            &table.feature_names
        )
        .is_err());
    }
}

/// A port scan whose last two probes start just after a window's edge: on
/// their own they are two empty flows, which no engine names; judged with
/// the straddling window (the scan's last five seconds and them) they are
/// the scan's, and that window publishes too. Without straddling it stays
/// silent: the tail a window cut off is what leave-one-family-out missed.
#[test]
fn a_scan_tail_cut_off_by_a_window_edge_is_still_named() {
    let split = common::test_split();
    let scan: Vec<_> = split
        .flows
        .iter()
        .filter(|f| f.label.as_deref() == Some("portscan"))
        .take(200)
        .cloned()
        .collect();
    assert_eq!(scan.len(), 200, "the test split has portscan flows");
    let src = scan[0].endpoints.src_ip;
    let window = 10_000_000i64;
    let edge = 180_000 * window; // a window's start
    let n = scan.len() as i64;
    let flows = scan
        .into_iter()
        .enumerate()
        .map(|(i, mut f)| {
            let i = i as i64;
            f.id = format!("scan-{i}");
            f.endpoints.src_ip = src;
            f.endpoints.dst_port = 1000 + i as u16;
            // 198 probes in the 8 s before the edge, 2 in the 0.2 s after
            f.start_us = if i < n - 2 {
                edge - 8_000_000 + i * 8_000_000 / (n - 2)
            } else {
                edge + (i - (n - 2)) * 100_000
            };
            f
        })
        .collect();
    let table = FlowTable {
        feature_names: split.feature_names.clone(),
        flows,
    };
    let windows_named = |straddle: bool| {
        let cfg = Config {
            straddle,
            ..Config::default()
        };
        let mut det = common::detector(cfg, &table);
        let report = det.run(&table);
        let tail_flagged = report.verdicts[table.flows.len() - 2..]
            .iter()
            .filter(|v| v.class != 0)
            .count();
        let mut windows: Vec<(i64, String)> = report
            .detections
            .iter()
            .filter(|d| d.published)
            .map(|d| (d.event.window_start_us, d.event.class.clone()))
            .collect();
        windows.sort();
        (tail_flagged, windows)
    };
    let (tail, windows) = windows_named(false);
    assert_eq!(tail, 0, "two empty flows alone are not an attack");
    assert_eq!(windows, vec![(edge - window, "portscan".to_string())]);
    let (tail, windows) = windows_named(true);
    assert_eq!(tail, 2, "the tail judged with the scan");
    assert_eq!(
        windows,
        vec![
            (edge - window, "portscan".to_string()),
            (edge, "portscan".to_string())
        ]
    );

    // Live: the tail's anomaly comes out on the tail's arrival, not when
    // its window closes.
    let mut stream = Stream::new(
        common::detector(Config::default(), &table),
        StreamConfig::default(),
    );
    let mut on_arrival = Vec::new();
    for f in &table.flows {
        stream.push([f.clone()], f.start_us);
        for d in stream.step(f.start_us).detections {
            on_arrival.push((d.event.window_start_us, f.id.clone()));
        }
    }
    let at_close = stream.finish().detections.len();
    assert_eq!(at_close, 0);
    assert_eq!(on_arrival.len(), 2, "{on_arrival:?}");
    assert_eq!(on_arrival[1].0, edge);
    assert_eq!(on_arrival[1].1, format!("scan-{}", n - 2));
}
