//! Blot's own phone tables against libphonenumber's metadata (through the
//! `phonenumber` crate), on the Faker sets of `corpus/faker/`.
//!
//! For every labeled phone value and every digit run in the decoy sentences,
//! with no context word around it:
//!
//! * **Blot**: is the value found as a phone in `"see {value} now"` (formats
//!   and tables only; the sentence holds no phone word)?
//! * **libphonenumber**: does `phonenumber::parse` with the value's locale
//!   as the default region (US for decoys) give a number `is_valid` accepts?
//!
//! and the time each takes per value. Only totals are printed for the
//! held-out set.
//!
//! `cargo run --release --manifest-path crates/blot/phone-metadata/Cargo.toml`

use ben_blot::{Kind, Scanner};
use std::time::Instant;

struct Case {
    value: String,
    region: String,
    phone: bool,
}

fn cases(raw: &str) -> Vec<Case> {
    let mut out = Vec::new();
    for line in raw.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let text = v["text"].as_str().unwrap_or_default();
        let tags: Vec<&str> = v["tags"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t.as_str()).collect())
            .unwrap_or_default();
        let spans = v["spans"].as_array().cloned().unwrap_or_default();
        if spans.is_empty() {
            // Decoy: every run of digits and separators holding 7+ digits.
            for run in digit_runs(text) {
                out.push(Case {
                    value: run,
                    region: "US".into(),
                    phone: false,
                });
            }
            continue;
        }
        for s in spans {
            if s["kind"] != "phone" {
                continue;
            }
            let (a, b) = (
                s["start"].as_u64().unwrap_or(0) as usize,
                s["end"].as_u64().unwrap_or(0) as usize,
            );
            let loc = tags.last().copied().unwrap_or("en_US");
            out.push(Case {
                value: text.get(a..b).unwrap_or_default().to_string(),
                region: loc.rsplit('_').next().unwrap_or("US").to_string(),
                phone: true,
            });
        }
    }
    out
}

fn digit_runs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let s = i;
            while i < b.len() && (b[i].is_ascii_digit() || b" -.()/".contains(&b[i])) {
                i += 1;
            }
            let mut e = i;
            while e > s && !b[e - 1].is_ascii_digit() {
                e -= 1;
            }
            if b[s..e].iter().filter(|c| c.is_ascii_digit()).count() >= 7 {
                out.push(text[s..e].to_string());
            }
        } else {
            i += 1;
        }
    }
    out
}

fn libphonenumber_valid(c: &Case) -> bool {
    let region = c.region.parse::<phonenumber::country::Id>().ok();
    match phonenumber::parse(region, &c.value) {
        Ok(n) => phonenumber::is_valid(&n),
        Err(_) => false,
    }
}

fn blot_found(s: &Scanner, c: &Case) -> bool {
    let text = format!("see {} now", c.value);
    s.find(&text)
        .map(|v| v.iter().any(|x| x.kind == Kind::Phone))
        .unwrap_or(false)
}

fn measure(name: &str, raw: &str, show: bool) {
    let cs = cases(raw);
    let scanner = Scanner::new();
    let mut rows = Vec::new();
    let mut answers: Vec<(bool, bool)> = Vec::new();
    let t = Instant::now();
    for c in &cs {
        answers.push((blot_found(&scanner, c), false));
    }
    let blot_ns = t.elapsed().as_nanos() as f64 / cs.len().max(1) as f64;
    let t = Instant::now();
    for (k, c) in cs.iter().enumerate() {
        answers[k].1 = libphonenumber_valid(c);
    }
    let lib_ns = t.elapsed().as_nanos() as f64 / cs.len().max(1) as f64;
    let (mut pb, mut pl, mut both, mut np, mut fb, mut fl, mut nn) = (0, 0, 0, 0, 0, 0, 0);
    for (c, &(b, l)) in cs.iter().zip(&answers) {
        if c.phone {
            np += 1;
            pb += usize::from(b);
            pl += usize::from(l);
            both += usize::from(b || l);
            if show && b != l {
                rows.push(format!(
                    "  {:<28} {:<3} blot={b} libphonenumber={l}",
                    c.value, c.region
                ));
            }
        } else {
            nn += 1;
            fb += usize::from(b);
            fl += usize::from(l);
            if show && (b || l) {
                rows.push(format!(
                    "  decoy {:<22} blot={b} libphonenumber={l}",
                    c.value
                ));
            }
        }
    }
    let r = |a: usize, n: usize| a as f64 / n.max(1) as f64;
    println!("== {name}: {np} phone values, {nn} digit runs in decoys (no context words)");
    println!(
        "  Blot tables:     {pb}/{np} phones found ({:.4}), {fb} decoy runs called phones, {blot_ns:.0} ns per value (whole scan)",
        r(pb, np)
    );
    println!(
        "  libphonenumber:  {pl}/{np} valid ({:.4}), {fl} decoy runs valid, {lib_ns:.0} ns per value (parse + is_valid)",
        r(pl, np)
    );
    println!("  either:          {both}/{np} ({:.4})", r(both, np));
    for row in rows.iter().take(60) {
        println!("{row}");
    }
}

fn main() {
    measure(
        "dev",
        include_str!("../../corpus/faker/dev.jsonl"),
        std::env::args().any(|a| a == "--show"),
    );
    measure(
        "heldout",
        include_str!("../../corpus/faker/heldout.jsonl"),
        false,
    );
}
