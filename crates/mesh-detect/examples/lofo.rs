//! Leave-one-family-out evaluation of the whole detector (ML + rules +
//! math, ensemble, aggregation) on models trained without one attack
//! family each (`scripts/mesh/lofo.py` writes them).
//!
//! ```text
//! cargo run --release -p ben-mesh-detect --example lofo -- DIR [--rules FILE] [--benign FILE] [--eval NAME] [--own-window-only]
//! ```
//!
//! `DIR` holds one folder per held-out family (or is one such folder), each
//! with `mesh-lgbm.txt`, `mesh-baseline.json` and `eval.csv`: `ben flows`
//! rows of the held-out family (label = its class) mixed with the benign
//! flows of the test rounds (label `benign`). The detector sees them as one
//! table sorted by time, as it would live. `--rules` defaults to
//! `models/rules.toml` (the built-in copy); `--benign FILE` also runs every
//! model over a benign-only flow CSV (a real capture through `ben flows`)
//! and counts its flagged flows. `--eval NAME` reads NAME instead of
//! `eval.csv` (lofo.py also writes `eval-test.csv`: the test rounds only).
//! `--own-window-only` turns straddling windows off (`Config::straddle`).
//!
//! Per family it prints: flows of the family; flow recall (verdict ≠
//! benign); class-correct share (verdict = the family's class); anomaly
//! recall (share of the family's (source, window) pairs with a published
//! detection); the engines on their own (ML's P(attack) = 1 − P(benign) >
//! 0.8, what a rule hit alone needs beside it to pass 0.70 with fixed
//! weights 0.5/0.3/0.2; any rule hit); and benign false alarms (flagged
//! benign flows).

use ben_mesh_detect::window::{FlowColumns, SourceStats};
use ben_mesh_detect::{defaults, Baseline, Config, Detector, FlowTable, LgbmModel};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

struct Row {
    family: String,
    flows: usize,
    flow_recall: f64,
    class_correct: f64,
    pairs: usize,
    anomaly_recall: f64,
    ml_attack: f64,
    rules_hit: f64,
    benign: usize,
    benign_flagged: usize,
    benign_ml: usize,
    real_flagged: Option<(usize, usize)>,
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn detector(dir: &Path, rules: &str, table: &FlowTable, straddle: bool) -> Detector {
    let model = LgbmModel::parse(&read(&dir.join("mesh-lgbm.txt"))).expect("model");
    let baseline = Baseline::parse(&read(&dir.join("mesh-baseline.json"))).expect("baseline");
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    Detector::new(
        Config {
            straddle,
            ..Config::default()
        },
        model,
        name,
        &baseline,
        rules,
        &table.feature_names,
    )
    .expect("detector")
}

/// Per-flow engine diagnostics outside the ensemble: ML P(attack) and
/// whether any attack rule hits, with the flow's source stats over its
/// window (the detector's windows: multiples of window_secs).
fn engines(det: &mut Detector, table: &FlowTable) -> Vec<(f64, bool)> {
    let window_us = (det.config().window_secs * 1e6).round() as i64;
    let cols = FlowColumns::resolve(table);
    let auth = det.rules().auth_ports.clone();
    let mut by_window: HashMap<i64, Vec<usize>> = HashMap::new();
    for (i, f) in table.flows.iter().enumerate() {
        by_window
            .entry(f.start_us.div_euclid(window_us))
            .or_default()
            .push(i);
    }
    let mut out = vec![(0.0, false); table.flows.len()];
    let mut hits = Vec::new();
    for idx in by_window.values() {
        let stats = SourceStats::by_source(
            idx.iter().map(|&i| &table.flows[i]),
            &cols,
            det.config().window_secs,
            &auth,
        );
        for &i in idx {
            let f = &table.flows[i];
            let st = &stats[&f.endpoints.src_ip];
            let p = det.ml_probabilities(f, st);
            hits.clear();
            det.rules().evaluate(f, st, &mut hits);
            out[i] = (1.0 - p[0], hits.iter().any(|h| h.class != 0));
        }
    }
    out
}

fn evaluate(dir: &Path, eval: &str, rules: &str, real: Option<&FlowTable>, straddle: bool) -> Row {
    let table = FlowTable::parse(&read(&dir.join(eval))).expect("eval file parses");
    let mut det = detector(dir, rules, &table, straddle);
    let classes = det.classes().to_vec();
    let eng = engines(&mut det, &table);
    let report = det.run(&table);
    let window_us = (det.config().window_secs * 1e6).round() as i64;
    let published: HashSet<(String, i64)> = report
        .detections
        .iter()
        .filter(|d| d.published)
        .filter_map(|d| Some((d.event.source.as_ref()?.ip.clone(), d.event.window_start_us)))
        .collect();
    let (mut n, mut rec, mut correct, mut ml, mut rh) = (0usize, 0usize, 0usize, 0usize, 0usize);
    let (mut benign, mut benign_flagged, mut benign_ml) = (0usize, 0usize, 0usize);
    let mut pairs: HashSet<(IpAddr, i64)> = HashSet::new();
    for ((f, v), (pa, hit)) in table.flows.iter().zip(&report.verdicts).zip(&eng) {
        let label = f.label.as_deref().unwrap_or("").to_ascii_lowercase();
        if label == "benign" {
            benign += 1;
            benign_flagged += usize::from(v.class != 0);
            benign_ml += usize::from(*pa > 0.8);
            continue;
        }
        n += 1;
        rec += usize::from(v.class != 0);
        correct += usize::from(classes.get(v.class).is_some_and(|c| *c == label));
        ml += usize::from(*pa > 0.8);
        rh += usize::from(*hit);
        pairs.insert((
            f.endpoints.src_ip,
            f.start_us.div_euclid(window_us) * window_us,
        ));
    }
    let found = pairs
        .iter()
        .filter(|(ip, w)| published.contains(&(ip.to_string(), *w)))
        .count();
    let real_flagged = real.map(|t| {
        let mut d = detector(dir, rules, t, straddle);
        let r = d.run(t);
        (
            r.verdicts.iter().filter(|v| v.class != 0).count(),
            t.flows.len(),
        )
    });
    let share = |a: usize, b: usize| {
        if b == 0 {
            f64::NAN
        } else {
            a as f64 / b as f64
        }
    };
    Row {
        family: dir
            .file_name()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default(),
        flows: n,
        flow_recall: share(rec, n),
        class_correct: share(correct, n),
        pairs: pairs.len(),
        anomaly_recall: share(found, pairs.len()),
        ml_attack: share(ml, n),
        rules_hit: share(rh, n),
        benign,
        benign_flagged,
        benign_ml,
        real_flagged,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut dir: Option<PathBuf> = None;
    let mut rules_path: Option<PathBuf> = None;
    let mut benign_path: Option<PathBuf> = None;
    let mut eval = "eval.csv".to_string();
    let mut straddle = true;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--own-window-only" => straddle = false,
            "--eval" => eval = args.next().expect("--eval NAME"),
            "--rules" => rules_path = args.next().map(PathBuf::from),
            "--benign" => benign_path = args.next().map(PathBuf::from),
            _ => dir = Some(PathBuf::from(a)),
        }
    }
    let dir = dir.expect("usage: lofo DIR [--rules FILE] [--benign FILE] [--eval NAME]");
    let rules = rules_path.map_or_else(|| defaults::RULES.to_string(), |p| read(&p));
    let real = benign_path.map(|p| FlowTable::parse(&read(&p)).expect("benign capture parses"));
    let mut dirs: Vec<PathBuf> = if dir.join(&eval).is_file() {
        vec![dir.clone()]
    } else {
        std::fs::read_dir(&dir)
            .expect("DIR")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join(&eval).is_file())
            .collect()
    };
    dirs.sort();
    println!(
        "| family | flows | flow recall | class-correct | (src, window) pairs | anomaly recall | ML P(attack)>0.8 | rule hit | benign flagged | benign ML>0.8 |{}",
        if real.is_some() { " real benign flagged |" } else { "" }
    );
    println!(
        "|---|---|---|---|---|---|---|---|---|---|{}",
        if real.is_some() { "---|" } else { "" }
    );
    let (mut tn, mut tr, mut tp, mut tf) = (0usize, 0.0f64, 0usize, 0.0f64);
    let mut worst = (f64::INFINITY, String::new());
    for d in &dirs {
        let r = evaluate(d, &eval, &rules, real.as_ref(), straddle);
        let far = r.benign_flagged as f64 / r.benign.max(1) as f64;
        println!(
            "| {} | {} | {:.4} | {:.4} | {} | {:.4} | {:.4} | {:.4} | {}/{} ({:.3} %) | {} |{}",
            r.family,
            r.flows,
            r.flow_recall,
            r.class_correct,
            r.pairs,
            r.anomaly_recall,
            r.ml_attack,
            r.rules_hit,
            r.benign_flagged,
            r.benign,
            far * 100.0,
            r.benign_ml,
            r.real_flagged
                .map(|(a, b)| format!(" {a}/{b} |"))
                .unwrap_or_default()
        );
        if r.flows == 0 {
            continue; // a benign-only folder: its false alarms are its row
        }
        tn += r.flows;
        tr += r.flow_recall * r.flows as f64;
        tp += r.pairs;
        tf += r.anomaly_recall * r.pairs as f64;
        if r.anomaly_recall < worst.0 {
            worst = (r.anomaly_recall, r.family.clone());
        }
    }
    if tn > 0 {
        println!(
            "all families: {tn} flows, flow recall {:.4}; {tp} (source, window) pairs, anomaly recall {:.4}; worst anomaly recall {:.4} ({})",
            tr / tn as f64,
            tf / tp.max(1) as f64,
            worst.0,
            worst.1
        );
    }
}
