//! Blot throughput in MB/s, with a naive baseline in the same run.
//!
//! * `free_text/*`: `Scanner::redact` per record over (a) every text of the
//!   labeled corpus (dense PII) and (b) synthetic application logs (sparse
//!   PII, the common case), against `naive_regex`: one `regex::Regex` per
//!   kind run one after another, with the same validators, then merged.
//! * `structured/*`: `Redactor::apply` over declared fields (hmac email,
//!   mask card, hash, drop, scan of short notes) — the per-field path.
//!
//! * `free_text_cpu/*`: the `free_text` Blot scan again, timed in this
//!   thread's CPU time (MB per CPU-second), for a machine other jobs share.
//!
//! Run: `cargo bench -p ben-blot --bench blot` (CARGO_TARGET_DIR as you like).

use ben_blot::{validate, Action, BlotKey, Kind, Limits, Redactor, Scanner};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use regex::Regex;
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

/// The naive approach: one regex per kind, each run over the whole text.
struct NaiveRegex {
    rules: Vec<(Kind, Regex)>,
}

impl NaiveRegex {
    fn new() -> Self {
        let r = |k, p: &str| (k, Regex::new(p).expect("baseline regex"));
        NaiveRegex {
            rules: vec![
                r(
                    Kind::PrivateKey,
                    r"(?s)-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----",
                ),
                r(
                    Kind::Email,
                    r"[A-Za-z0-9._%+-]+(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
                ),
                r(Kind::Card, r"\b\d(?:[ -]?\d){12,18}\b"),
                r(Kind::Iban, r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"),
                r(Kind::UsSsn, r"\b\d{3}([- ])\d{2}[- ]\d{4}\b"),
                r(
                    Kind::Phone,
                    r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{3}\)|\b\d{3})[ .-]?\d{3}[ .-]\d{4}\b",
                ),
                r(
                    Kind::Ipv4,
                    r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b",
                ),
                r(
                    Kind::Ipv6,
                    r"(?i)\b(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}\b|(?:[0-9a-f]{1,4}:){1,6}:(?:[0-9a-f]{1,4}(?::[0-9a-f]{1,4})*)?|::(?:[0-9a-f]{1,4}(?::[0-9a-f]{1,4})*)",
                ),
                r(
                    Kind::Jwt,
                    r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
                ),
                r(
                    Kind::BearerToken,
                    r"(?i)\b(?:bearer|basic)\s+[A-Za-z0-9._~+/-]{8,}=*|\b(?:ghp|gho|ghs|ghu|ghr)_[A-Za-z0-9]{36}\b|\bxox[baprs]-[A-Za-z0-9-]{10,}|\bsk_(?:live|test)_[A-Za-z0-9]{16,}|\bAIza[A-Za-z0-9_-]{35}|(?i)(?:api[_-]?key|token|secret)[\x22']?\s*[:=]\s*[\x22']?[A-Za-z0-9._~+/-]{8,}",
                ),
                r(
                    Kind::AwsAccessKey,
                    r"\b(?:AKIA|ASIA|AIDA|AROA|AIPA|ANPA|ANVA|AGPA)[A-Z0-9]{16}\b",
                ),
                r(
                    Kind::AwsSecretKey,
                    r"(?i)aws_?secret_?(?:access_?)?key[\x22']?\s*[:=]\s*[\x22']?[A-Za-z0-9/+]{40}",
                ),
            ],
        }
    }

    fn redact(&self, text: &str) -> String {
        let mut spans: Vec<(usize, usize, Kind)> = Vec::new();
        for (kind, re) in &self.rules {
            for m in re.find_iter(text) {
                let v = m.as_str();
                let digits: Vec<u8> = v
                    .bytes()
                    .filter(u8::is_ascii_digit)
                    .map(|d| d - b'0')
                    .collect();
                let ok = match kind {
                    Kind::Card => validate::luhn(&digits),
                    Kind::Iban => {
                        let compact: Vec<u8> = v.bytes().filter(|b| *b != b' ').collect();
                        validate::iban_length([compact[0], compact[1]]) == Some(compact.len())
                            && validate::iban_mod97(&compact)
                    }
                    Kind::UsSsn => {
                        let n = |a: &[u8]| a.iter().fold(0u16, |x, d| x * 10 + u16::from(*d));
                        validate::ssn_valid(n(&digits[..3]), n(&digits[3..5]), n(&digits[5..]))
                    }
                    _ => true,
                };
                if ok {
                    spans.push((m.start(), m.end(), *kind));
                }
            }
        }
        spans.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for (s, e, k) in spans {
            if s < last {
                continue;
            }
            out.push_str(&text[last..s]);
            out.push_str(k.placeholder());
            last = e;
        }
        out.push_str(&text[last..]);
        out
    }
}

fn free_text(c: &mut Criterion) {
    let scanner = Scanner::new();
    let naive = NaiveRegex::new();
    let inputs = [("corpus", corpus_texts()), ("logs", log_lines(20_000))];
    let mut g = c.benchmark_group("free_text");
    for (name, texts) in &inputs {
        let bytes: usize = texts.iter().map(String::len).sum();
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_with_input(BenchmarkId::new("blot", name), texts, |b, texts| {
            let mut spans = Vec::new();
            let mut out = String::new();
            b.iter(|| {
                for t in texts {
                    out.clear();
                    scanner
                        .redact_into(black_box(t), &mut spans, &mut out)
                        .expect("redact");
                    black_box(&out);
                }
            })
        });
        g.bench_with_input(BenchmarkId::new("blot_alloc", name), texts, |b, texts| {
            b.iter(|| {
                for t in texts {
                    black_box(scanner.redact(black_box(t)).expect("redact"));
                }
            })
        });
        g.bench_with_input(BenchmarkId::new("naive_regex", name), texts, |b, texts| {
            b.iter(|| {
                for t in texts {
                    black_box(naive.redact(black_box(t)));
                }
            })
        });
    }
    g.finish();
}

fn structured(c: &mut Criterion) {
    let key = BlotKey::from_material(b"bench key material, not secret").expect("key");
    let r = Redactor::new(Some(key), Limits::default());
    // One record's declared PII fields, repeated.
    let fields: Vec<(Action, String)> = (0..2_000)
        .flat_map(|k| {
            [
                (Action::Hmac, format!("customer.{k}@example.com")),
                (
                    Action::Mask { keep_last: 4 },
                    format!("4111 1111 1111 {k:04}"),
                ),
                (Action::Hash, format!("user-{k:08}")),
                (Action::Drop, "203.0.113.7".to_string()),
                (
                    Action::Scan,
                    format!(
                        "please ship to the back door, order {k}, call me at +1 (415) 555-2671"
                    ),
                ),
            ]
        })
        .collect();
    let mut g = c.benchmark_group("structured");
    let per_action: Vec<(&str, Vec<&(Action, String)>)> = vec![
        ("mixed_record", fields.iter().collect()),
        (
            "hmac",
            fields.iter().filter(|f| f.0 == Action::Hmac).collect(),
        ),
        (
            "mask",
            fields
                .iter()
                .filter(|f| matches!(f.0, Action::Mask { .. }))
                .collect(),
        ),
        (
            "hash",
            fields.iter().filter(|f| f.0 == Action::Hash).collect(),
        ),
        (
            "scan",
            fields.iter().filter(|f| f.0 == Action::Scan).collect(),
        ),
    ];
    for (name, fs) in &per_action {
        let bytes: usize = fs.iter().map(|f| f.1.len()).sum();
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_with_input(BenchmarkId::new("blot", name), fs, |b, fs| {
            b.iter(|| {
                let mut budget = r.record_budget();
                for (a, v) in fs.iter().map(|f| (f.0, f.1.as_str())) {
                    black_box(r.apply(a, black_box(v)).expect("apply"));
                    let _ = budget.charge(v.len());
                }
            })
        });
    }
    g.finish();
}

/// Criterion measurement: this thread's time on a CPU (Linux
/// `/proc/thread-self/schedstat`), so a busy machine (other builds on the
/// same cores) changes the figure far less than wall-clock time. Where the
/// file cannot be read it counts nothing and the group reports nonsense
/// rather than a wall-clock figure under a CPU-time name.
struct ThreadCpu;

fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

impl criterion::measurement::Measurement for ThreadCpu {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, i: u64) -> u64 {
        thread_cpu_ns().saturating_sub(i)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn criterion::measurement::ValueFormatter {
        &CpuFormatter
    }
}

/// CPU nanoseconds shown as µs/ms, throughput as decimal MB per CPU-second.
struct CpuFormatter;

impl criterion::measurement::ValueFormatter for CpuFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (div, unit) = if typical < 1e6 {
            (1e3, "µs cpu")
        } else {
            (1e6, "ms cpu")
        };
        for v in values {
            *v /= div;
        }
        unit
    }
    fn scale_throughputs(&self, _typical: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        let per = match t {
            Throughput::Bytes(b) | Throughput::BytesDecimal(b) => *b as f64,
            Throughput::Elements(e) => *e as f64,
            _ => 1.0,
        };
        for v in values {
            *v = per * 1e9 / *v / 1e6;
        }
        "MB/cpu-s"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns cpu"
    }
}

/// `free_text_cpu/*`: the free-text scan of `free_text`, measured in CPU
/// time (decimal MB per CPU-second).
fn free_text_cpu(c: &mut Criterion<ThreadCpu>) {
    let scanner = Scanner::new();
    let inputs = [("corpus", corpus_texts()), ("logs", log_lines(20_000))];
    let mut g = c.benchmark_group("free_text_cpu");
    for (name, texts) in &inputs {
        let bytes: usize = texts.iter().map(String::len).sum();
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_with_input(BenchmarkId::new("blot", name), texts, |b, texts| {
            let mut spans = Vec::new();
            let mut out = String::new();
            b.iter(|| {
                for t in texts {
                    out.clear();
                    scanner
                        .redact_into(black_box(t), &mut spans, &mut out)
                        .expect("redact");
                    black_box(&out);
                }
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = cpu_benches;
    config = Criterion::default()
        .with_measurement(ThreadCpu)
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = free_text_cpu
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = free_text, structured
}
criterion_main!(benches, cpu_benches);
