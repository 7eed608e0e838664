//! Runs the scanner over the labeled corpus (`corpus/pii.jsonl`, see
//! `corpus/README.md`) and prints per-kind precision and recall.
//!
//! A predicted span counts only if it matches an expected span exactly
//! (start, end and kind). Fails if a validated kind has recall < 1.0, if
//! overall precision is < 0.99, or if any expected value is left even
//! partly uncovered (a leak) for a validated kind.

use ben_blot::{Kind, Scanner, Span};
use std::collections::BTreeMap;

#[derive(Default)]
struct Tally {
    tp: usize,
    fp: usize,
    fn_: usize,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

fn load() -> Vec<(String, Vec<Span>)> {
    let raw = include_str!("../corpus/pii.jsonl");
    raw.lines()
        .enumerate()
        .map(|(n, line)| {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("line {}: {e}", n + 1));
            let text = v["text"].as_str().expect("text").to_string();
            let spans = v["spans"]
                .as_array()
                .expect("spans")
                .iter()
                .map(|s| Span {
                    start: s["start"].as_u64().expect("start") as usize,
                    end: s["end"].as_u64().expect("end") as usize,
                    kind: Kind::from_name(s["kind"].as_str().expect("kind")).expect("known kind"),
                })
                .collect();
            (text, spans)
        })
        .collect()
}

#[test]
fn corpus_precision_and_recall() {
    let cases = load();
    assert!(cases.len() >= 2000, "corpus has {} cases", cases.len());
    let scanner = Scanner::new();
    let mut by_kind: BTreeMap<Kind, Tally> = BTreeMap::new();
    let mut leaks = Vec::new();
    let mut misses = Vec::new();
    for (text, expected) in &cases {
        let got = scanner.find(text).expect("scan");
        for e in expected {
            let t = by_kind.entry(e.kind).or_default();
            if got.contains(e) {
                t.tp += 1;
            } else {
                t.fn_ += 1;
                misses.push(format!(
                    "  missed {} {:?} in {:?}; got {:?}",
                    e.kind,
                    &text[e.start..e.end],
                    text,
                    got.iter()
                        .map(|g| (g.kind.name(), &text[g.start..g.end]))
                        .collect::<Vec<_>>()
                ));
                let covered = got.iter().any(|g| g.start <= e.start && g.end >= e.end);
                if !covered {
                    leaks.push((e.kind, text[e.start..e.end].to_string()));
                }
            }
        }
        for g in &got {
            if !expected.contains(g) {
                by_kind.entry(g.kind).or_default().fp += 1;
                misses.push(format!(
                    "  false {} {:?} in {:?}",
                    g.kind,
                    &text[g.start..g.end],
                    text
                ));
            }
        }
    }
    println!("corpus: {} cases", cases.len());
    println!(
        "{:<16} {:>6} {:>5} {:>5} {:>9} {:>7}",
        "kind", "tp", "fp", "fn", "precision", "recall"
    );
    let (mut tp, mut fp, mut fn_) = (0, 0, 0);
    let mut failures = Vec::new();
    for (kind, t) in &by_kind {
        let p = ratio(t.tp, t.tp + t.fp);
        let r = ratio(t.tp, t.tp + t.fn_);
        println!(
            "{:<16} {:>6} {:>5} {:>5} {:>9.4} {:>7.4}",
            kind.name(),
            t.tp,
            t.fp,
            t.fn_,
            p,
            r
        );
        if kind.is_validated() && r < 1.0 {
            failures.push(format!("{kind} recall {r:.4} < 1.0"));
        }
        tp += t.tp;
        fp += t.fp;
        fn_ += t.fn_;
    }
    let p = ratio(tp, tp + fp);
    let r = ratio(tp, tp + fn_);
    println!(
        "{:<16} {:>6} {:>5} {:>5} {:>9.4} {:>7.4}",
        "overall", tp, fp, fn_, p, r
    );
    println!(
        "leaks (expected value not fully covered by any span): {}",
        leaks.len()
    );
    if p < 0.99 {
        failures.push(format!("overall precision {p:.4} < 0.99"));
    }
    for (kind, v) in &leaks {
        if kind.is_validated() {
            failures.push(format!("leaked {kind} {v:?}"));
        }
    }
    for m in misses.iter().take(40) {
        println!("{m}");
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
