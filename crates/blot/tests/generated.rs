//! Scores the scanner on the Faker-generated sets (`corpus/faker/`, see
//! `corpus/faker/generate.py`): values from an independent generator in
//! sentence templates, plus decoy sentences full of numbers that are not
//! PII.
//!
//! An expected value is *recalled* when one found span of its kind covers
//! all of it (so the value cannot leak); *exact* when a found span has its
//! very bounds. A found span is a true positive when it overlaps an expected
//! value of its kind, a false positive otherwise. Floors: recall ≥ 0.95 for
//! every kind on both sets, no expected value left uncovered by every span
//! for a validated kind, and the decoys' false positives at most what they
//! were before the phone/card work (dev 2, held-out 0; see BENCHMARKS.md).

use ben_blot::{Kind, Scanner, Span};
use std::collections::BTreeMap;

#[derive(Default)]
struct Tally {
    expected: usize,
    recalled: usize,
    exact: usize,
    tp: usize,
    fp: usize,
}

struct Score {
    by_kind: BTreeMap<Kind, Tally>,
    decoy_fp: usize,
    decoys: usize,
    leaks: Vec<(Kind, String)>,
    misses: Vec<String>,
}

fn load(raw: &str) -> Vec<(String, Vec<Span>)> {
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

fn score(cases: &[(String, Vec<Span>)]) -> Score {
    let scanner = Scanner::new();
    let mut s = Score {
        by_kind: BTreeMap::new(),
        decoy_fp: 0,
        decoys: 0,
        leaks: Vec::new(),
        misses: Vec::new(),
    };
    for (text, expected) in cases {
        let got = scanner.find(text).expect("scan");
        if expected.is_empty() {
            s.decoys += 1;
        }
        for e in expected {
            let t = s.by_kind.entry(e.kind).or_default();
            t.expected += 1;
            if got.contains(e) {
                t.exact += 1;
            }
            let covers = |g: &&Span| g.start <= e.start && g.end >= e.end;
            if got.iter().filter(covers).any(|g| g.kind == e.kind) {
                t.recalled += 1;
            } else {
                s.misses.push(format!(
                    "  missed {} {:?} in {:?}; got {:?}",
                    e.kind,
                    &text[e.start..e.end],
                    text,
                    got.iter()
                        .map(|g| (g.kind.name(), &text[g.start..g.end]))
                        .collect::<Vec<_>>()
                ));
                if !got.iter().any(|g| covers(&g)) {
                    s.leaks.push((e.kind, text[e.start..e.end].to_string()));
                }
            }
        }
        for g in &got {
            let hit = expected
                .iter()
                .any(|e| e.kind == g.kind && g.start < e.end && e.start < g.end);
            let t = s.by_kind.entry(g.kind).or_default();
            if hit {
                t.tp += 1;
            } else {
                t.fp += 1;
                if expected.is_empty() {
                    s.decoy_fp += 1;
                }
                s.misses.push(format!(
                    "  false {} {:?} in {:?}",
                    g.kind,
                    &text[g.start..g.end],
                    text
                ));
            }
        }
    }
    s
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

/// Prints the table and returns the floors that failed.
fn report(name: &str, s: &Score, max_decoy_fp: usize) -> Vec<String> {
    println!("== {name}");
    println!(
        "{:<10} {:>6} {:>8} {:>6} {:>5} {:>5} {:>9} {:>7} {:>7}",
        "kind", "values", "recalled", "exact", "tp", "fp", "precision", "recall", "exact-r"
    );
    let mut failures = Vec::new();
    for (kind, t) in &s.by_kind {
        let r = ratio(t.recalled, t.expected);
        println!(
            "{:<10} {:>6} {:>8} {:>6} {:>5} {:>5} {:>9.4} {:>7.4} {:>7.4}",
            kind.name(),
            t.expected,
            t.recalled,
            t.exact,
            t.tp,
            t.fp,
            ratio(t.tp, t.tp + t.fp),
            r,
            ratio(t.exact, t.expected)
        );
        if t.expected > 0 && r < 0.95 {
            failures.push(format!("{name}: {kind} recall {r:.4} < 0.95"));
        }
    }
    println!(
        "decoys: {} sentences, {} false positives in them; leaks: {}",
        s.decoys,
        s.decoy_fp,
        s.leaks.len()
    );
    if s.decoy_fp > max_decoy_fp {
        failures.push(format!(
            "{name}: {} false positives on decoys > {max_decoy_fp}",
            s.decoy_fp
        ));
    }
    for (kind, v) in &s.leaks {
        if kind.is_validated() {
            failures.push(format!("{name}: leaked {kind} {v:?}"));
        }
    }
    for m in s.misses.iter().take(2000) {
        println!("{m}");
    }
    failures
}

#[test]
fn faker_dev_set() {
    let cases = load(include_str!("../corpus/faker/dev.jsonl"));
    assert!(cases.len() >= 1500, "dev set has {} cases", cases.len());
    let s = score(&cases);
    let failures = report("dev", &s, 2);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn faker_heldout_set() {
    let cases = load(include_str!("../corpus/faker/heldout.jsonl"));
    assert!(
        cases.len() >= 1500,
        "held-out set has {} cases",
        cases.len()
    );
    let s = score(&cases);
    let failures = report("heldout", &s, 0);
    assert!(failures.is_empty(), "{failures:#?}");
}
