//! Fixed work for CPU-time throughput: `Scanner::redact_into` over the
//! corpus texts or the synthetic logs of `benches/blot.rs`, `PASSES` times.
//! Under `perf stat -e task-clock` this gives MB per CPU-second, which a
//! busy machine disturbs far less than criterion's wall-clock figures.
//!
//! `perf stat -e task-clock target/release/examples/redact_passes corpus 300`

use ben_blot::Scanner;
use std::hint::black_box;

fn corpus_texts() -> Vec<String> {
    include_str!("../corpus/pii.jsonl")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_string))
        .collect()
}

/// Deterministic log lines: ~1 in 6 holds PII.
fn log_lines(n: usize) -> Vec<String> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let frames = [
        "2024-03-05T10:22:31.123Z INFO  http request method=GET path=/api/v1/items/{n} status=200 duration_ms=12 trace=4bf92f3577b34da6",
        "2024-03-05T10:22:31.456Z DEBUG cache hit for key product:{n} ttl=300s size=1532B",
        "2024-03-05T10:22:32.001Z WARN  slow query on orders (took {n}ms); consider an index on created_at",
        "2024-03-05T10:22:32.310Z INFO  worker-3 processed batch {n} of 512 items in 0.84s",
        "2024-03-05T10:22:33.777Z ERROR upstream timeout after 30s calling inventory-service v2.3.1 (attempt 2/3)",
        "2024-03-05T10:22:34.002Z INFO  user login ok for ann.lee@example.com from 203.0.113.{n} ua=Mozilla/5.0",
        "2024-03-05T10:22:35.120Z WARN  payment declined card=4111 1111 1111 1111 order=ORD-{n} reason=insufficient_funds",
        "2024-03-05T10:22:36.900Z INFO  support note: customer asked to call back on +1 (415) 555-2671 re ticket #{n}",
    ];
    (0..n)
        .map(|_| {
            let r = next();
            let f = if r % 6 == 0 {
                frames[5 + (r as usize / 6) % 3]
            } else {
                frames[(r as usize / 6) % 5]
            };
            f.replace("{n}", &((r >> 20) % 250).to_string())
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "corpus".into());
    let passes: usize = args.next().unwrap_or_else(|| "100".into()).parse()?;
    let texts = if which == "logs" {
        log_lines(20_000)
    } else {
        corpus_texts()
    };
    let scanner = Scanner::new();
    let (mut spans, mut out) = (Vec::new(), String::new());
    let bytes: usize = texts.iter().map(String::len).sum();
    let t = std::time::Instant::now();
    for _ in 0..passes {
        for s in &texts {
            out.clear();
            scanner.redact_into(black_box(s), &mut spans, &mut out)?;
            black_box(&out);
        }
    }
    let total = bytes * passes;
    println!(
        "{which}: {total} bytes in {:.3} s wall ({:.1} MB/s wall)",
        t.elapsed().as_secs_f64(),
        total as f64 / t.elapsed().as_secs_f64() / 1e6
    );
    Ok(())
}
