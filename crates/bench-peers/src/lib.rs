//! The workload shared by the peer benchmarks: a 100-flag policy over a
//! flat 20-field record, written three ways — Bitspec, CEL
//! (`cel-interpreter`) and Rego (`regorus`) — with the same meaning, and a
//! deterministic set of records. [`check_agreement`] proves the three
//! engines compute the same flags before anything is timed.
//!
//! IPs: CEL and Rego have no CIDR type here, so the peers test the
//! address as a 32-bit number against the network's range; Bitspec uses
//! its native `ip in cidr`.

use ben_bitspec::{compile::CompiledPack, lock::BitTable, Source, Value};
use serde_json::json;
use std::net::Ipv4Addr;

pub const FLAGS: usize = 100;

const SCHEMA: &str = "schema bench.event v1 {
  status: int
  bytes: int
  latency_ms: int
  port: int
  retries: int
  method: string
  path: string
  host: string
  agent: string
  country: string
  score: float
  ratio: float
  cpu: float
  tls: bool
  cached: bool
  src_ip: ip
  dst_ip: ip
  user: string?
  tag: string?
  region: string
}
";

/// One flag in the three languages.
pub struct Flag {
    pub bitspec: String,
    pub cel: String,
    /// Rego rule bodies; several bodies mean "or".
    pub rego: Vec<String>,
}

const EXTS: [&str; 4] = ["js", "css", "php", "png"];
const METHODS: [&str; 3] = ["POST", "GET", "PUT"];
const COUNTRIES: [&str; 4] = ["DE", "US", "FR", "BR"];

pub fn flags() -> Vec<Flag> {
    (0..FLAGS)
        .map(|k| match k % 10 {
            0 => Flag {
                bitspec: format!("status >= {}", 400 + k),
                cel: format!("status >= {}", 400 + k),
                rego: vec![format!("input.status >= {}", 400 + k)],
            },
            1 => Flag {
                bitspec: format!("bytes > {}", k * 100),
                cel: format!("bytes > {}", k * 100),
                rego: vec![format!("input.bytes > {}", k * 100)],
            },
            2 => Flag {
                bitspec: format!("path starts_with \"/api/v{}\"", k % 5),
                cel: format!("path.startsWith(\"/api/v{}\")", k % 5),
                rego: vec![format!("startswith(input.path, \"/api/v{}\")", k % 5)],
            },
            3 => Flag {
                bitspec: format!("path ends_with \".{}\"", EXTS[k % 4]),
                cel: format!("path.endsWith(\".{}\")", EXTS[k % 4]),
                rego: vec![format!("endswith(input.path, \".{}\")", EXTS[k % 4])],
            },
            4 => Flag {
                bitspec: format!("agent contains \"bot{}\"", k % 7),
                cel: format!("agent.contains(\"bot{}\")", k % 7),
                rego: vec![format!("contains(input.agent, \"bot{}\")", k % 7)],
            },
            5 => Flag {
                bitspec: format!("method == \"{}\"", METHODS[k % 3]),
                cel: format!("method == \"{}\"", METHODS[k % 3]),
                rego: vec![format!("input.method == \"{}\"", METHODS[k % 3])],
            },
            6 => {
                let net = u32::from(Ipv4Addr::new(10, (k % 8) as u8, 0, 0));
                let last = net | 0xffff;
                Flag {
                    bitspec: format!("src_ip in 10.{}.0.0/16", k % 8),
                    cel: format!("src_ip_n >= {net} && src_ip_n <= {last}"),
                    rego: vec![format!(
                        "input.src_ip_n >= {net}\n  input.src_ip_n <= {last}"
                    )],
                }
            }
            7 => Flag {
                bitspec: format!("score > 0.{}", k / 10),
                cel: format!("score > 0.{}", k / 10),
                rego: vec![format!("input.score > 0.{}", k / 10)],
            },
            8 => Flag {
                bitspec: format!("tls and port == {}", 440 + k % 5),
                cel: format!("tls && port == {}", 440 + k % 5),
                rego: vec![format!(
                    "input.tls == true\n  input.port == {}",
                    440 + k % 5
                )],
            },
            _ => Flag {
                bitspec: format!("(latency_ms > {} or retries >= 3) and not cached", k * 10),
                cel: format!("(latency_ms > {} || retries >= 3) && !cached", k * 10),
                rego: vec![
                    format!("input.latency_ms > {}\n  input.cached == false", k * 10),
                    "input.retries >= 3\n  input.cached == false".to_string(),
                ],
            },
        })
        .collect()
}

pub fn bitspec_source() -> String {
    let mut s = String::from(SCHEMA);
    s.push_str("pack bench on bench.event v1 {\n");
    for (i, f) in flags().iter().enumerate() {
        s.push_str(&format!("  flag f{i} = {}\n", f.bitspec));
    }
    s.push_str("}\n");
    s
}

pub fn rego_source() -> String {
    let mut s = String::from("package bench\n\nimport rego.v1\n\n");
    for (i, f) in flags().iter().enumerate() {
        for body in &f.rego {
            s.push_str(&format!("f{i} if {{\n  {body}\n}}\n\n"));
        }
    }
    s
}

/// A deterministic pseudo-random record (xorshift over the index).
pub fn record_json(n: u64) -> serde_json::Value {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let src = Ipv4Addr::new(
        10,
        (next() % 10) as u8,
        (next() % 256) as u8,
        (next() % 256) as u8,
    );
    let dst = Ipv4Addr::new(192, 168, (next() % 4) as u8, (next() % 256) as u8);
    let status =
        [200i64, 200, 301, 404, 401, 500, 503, 429][(next() % 8) as usize] + (next() % 100) as i64;
    json!({
        "status": status,
        "bytes": (next() % 12_000) as i64,
        "latency_ms": (next() % 1200) as i64,
        "port": 440 + (next() % 8) as i64,
        "retries": (next() % 5) as i64,
        "method": METHODS[(next() % 3) as usize],
        "path": format!("/api/v{}/items/{}.{}", next() % 6, next() % 1000, EXTS[(next() % 4) as usize]),
        "host": format!("svc{}.example.com", next() % 20),
        "agent": format!("Mozilla/5.0 (compatible; bot{}/1.0)", next() % 9),
        "country": COUNTRIES[(next() % 4) as usize],
        "score": (next() % 1000) as f64 / 1000.0,
        "ratio": (next() % 100) as f64 / 7.0,
        "cpu": (next() % 100) as f64 / 3.0,
        "tls": next() % 2 == 0,
        "cached": next() % 3 == 0,
        "src_ip": src.to_string(),
        "dst_ip": dst.to_string(),
        "src_ip_n": u32::from(src),
        "user": if next() % 2 == 0 { json!("u42") } else { json!(null) },
        "tag": null,
        "region": "eu-west",
    })
}

/// The compiled Bitspec pack and its records (schema slots).
pub fn bitspec_setup(
    records: &[serde_json::Value],
) -> (CompiledPack, Vec<Vec<Value>>, ben_bitspec::ir::Pack) {
    let out = match ben_bitspec::compile(
        &[Source::new("bench.bspec", bitspec_source())],
        &BitTable::default(),
        Default::default(),
    ) {
        Ok(o) => o,
        Err(f) => panic!("bench pack does not compile:\n{}", f.render()),
    };
    let schema = &out.program.schemas[0];
    let recs = records
        .iter()
        .map(|j| {
            ben_bitspec::interp::from_json(schema, j)
                .unwrap_or_else(|e| panic!("bench record: {e}"))
        })
        .collect();
    let pack = out.program.packs[0].clone();
    (CompiledPack::new(&pack), recs, pack)
}

/// Flags by index from each engine, for one record.
pub fn bitspec_flags(c: &CompiledPack, rec: &[Value], pack: &ben_bitspec::ir::Pack) -> Vec<bool> {
    let mut sc = c.scratch();
    c.eval(rec, &mut sc);
    pack.flags
        .iter()
        .map(|f| sc.bits[f.bit as usize / 64] & (1 << (f.bit % 64)) != 0)
        .collect()
}

pub fn cel_programs() -> Vec<cel_interpreter::Program> {
    flags()
        .iter()
        .map(|f| {
            cel_interpreter::Program::compile(&f.cel)
                .unwrap_or_else(|e| panic!("CEL `{}`: {e:?}", f.cel))
        })
        .collect()
}

pub fn cel_context(j: &serde_json::Value) -> cel_interpreter::Context<'static> {
    let mut ctx = cel_interpreter::Context::default();
    if let Some(obj) = j.as_object() {
        for (k, v) in obj {
            let val = match v {
                serde_json::Value::Bool(b) => cel_interpreter::Value::Bool(*b),
                serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => {
                    cel_interpreter::Value::Int(n.as_i64().unwrap_or(0))
                }
                serde_json::Value::Number(n) => {
                    cel_interpreter::Value::Float(n.as_f64().unwrap_or(0.0))
                }
                serde_json::Value::String(s) => cel_interpreter::Value::String(s.clone().into()),
                _ => cel_interpreter::Value::Null,
            };
            ctx.add_variable_from_value(k.clone(), val);
        }
    }
    ctx
}

pub fn cel_flags(progs: &[cel_interpreter::Program], ctx: &cel_interpreter::Context) -> Vec<bool> {
    progs
        .iter()
        .map(|p| matches!(p.execute(ctx), Ok(cel_interpreter::Value::Bool(true))))
        .collect()
}

pub fn rego_engine() -> regorus::Engine {
    let mut e = regorus::Engine::new();
    if let Err(err) = e.add_policy("bench.rego".into(), rego_source()) {
        panic!("Rego policy: {err}");
    }
    e
}

pub fn rego_flags(e: &mut regorus::Engine, j: &serde_json::Value) -> Vec<bool> {
    let input = regorus::Value::from_json_str(&j.to_string())
        .unwrap_or_else(|err| panic!("rego input: {err}"));
    e.set_input(input);
    let v = rego_eval(e);
    (0..FLAGS)
        .map(|i| v[&regorus::Value::String(format!("f{i}").into())] == regorus::Value::Bool(true))
        .collect()
}

/// Evaluates the whole `bench` package: an object of the rules that hold.
pub fn rego_eval(e: &mut regorus::Engine) -> regorus::Value {
    let r = e
        .eval_query("data.bench".into(), false)
        .unwrap_or_else(|err| panic!("rego eval: {err}"));
    r.result
        .first()
        .and_then(|q| q.expressions.first())
        .map(|x| x.value.clone())
        .unwrap_or(regorus::Value::Undefined)
}

/// Runs all three engines over `records` and panics at the first record
/// where their flags differ: the benchmark compares equal work only.
pub fn check_agreement(records: &[serde_json::Value]) -> usize {
    let (c, recs, pack) = bitspec_setup(records);
    let progs = cel_programs();
    let mut eng = rego_engine();
    let mut set = 0;
    for (j, r) in records.iter().zip(&recs) {
        let b = bitspec_flags(&c, r, &pack);
        let ce = cel_flags(&progs, &cel_context(j));
        let re = rego_flags(&mut eng, j);
        assert_eq!(b, ce, "Bitspec and CEL disagree on {j}");
        assert_eq!(b, re, "Bitspec and Rego disagree on {j}");
        set += b.iter().filter(|x| **x).count();
    }
    set
}
