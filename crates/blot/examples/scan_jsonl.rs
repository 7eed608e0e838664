//! Reads corpus JSON lines (`{"text": …}`) on stdin and writes, one line per
//! case, the spans Blot's scanner finds: `[[start, end, "kind"], …]` (UTF-8
//! byte offsets). `scripts/bench-blot-peers.sh` scores these next to the
//! peer's answers on the same sentences.
//!
//! `cargo run --release -p ben-blot --example scan_jsonl < corpus.jsonl`

use ben_blot::Scanner;
use std::io::{BufRead, Write};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let scanner = Scanner::new();
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut spans = Vec::new();
    for line in stdin.lock().lines() {
        let line = line?;
        let v: serde_json::Value = serde_json::from_str(&line)?;
        let text = v["text"].as_str().ok_or("a case without text")?;
        scanner.find_into(text, &mut spans)?;
        let row: Vec<serde_json::Value> = spans
            .iter()
            .map(|s| serde_json::json!([s.start, s.end, s.kind.name()]))
            .collect();
        writeln!(out, "{}", serde_json::Value::Array(row))?;
    }
    out.flush()?;
    Ok(())
}
