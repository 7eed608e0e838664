//! DESIGN.md §7: a 100-rule pack over a flat record, ≤ 1 µs/record, and
//! ≥ 2× faster than cel-interpreter and regorus on the same expressions.
//! One record per iteration, cycling through 64 varied records; every
//! engine evaluates all 100 flags.

use ben_bench_peers::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let records: Vec<serde_json::Value> = (0..64).map(record_json).collect();
    let set = check_agreement(&records);
    eprintln!(
        "engines agree on {} records ({set} flags set in total)",
        records.len()
    );

    let mut g = c.benchmark_group("pack_100_flags_20_fields");
    g.throughput(Throughput::Elements(1));

    let (compiled, recs, _) = bitspec_setup(&records);
    let mut scratch = compiled.scratch();
    let mut i = 0;
    g.bench_function("bitspec_compiled", |b| {
        b.iter(|| {
            i = (i + 1) % recs.len();
            black_box(compiled.eval(black_box(&recs[i]), &mut scratch));
        })
    });

    let (_, recs2, pack) = bitspec_setup(&records);
    let mut i = 0;
    g.bench_function("bitspec_interpreter", |b| {
        b.iter(|| {
            i = (i + 1) % recs2.len();
            black_box(ben_bitspec::interp::eval_pack(&pack, black_box(&recs2[i])).ok());
        })
    });

    // CEL: the context is built once per record (as an evaluator must), then
    // 100 programs run against it.
    let progs = cel_programs();
    let ctxs: Vec<_> = records.iter().map(cel_context).collect();
    let mut i = 0;
    g.bench_function("cel_interpreter_prebuilt_context", |b| {
        b.iter(|| {
            i = (i + 1) % ctxs.len();
            black_box(cel_flags(&progs, black_box(&ctxs[i])));
        })
    });

    let mut eng = rego_engine();
    let inputs: Vec<regorus::Value> = records
        .iter()
        .map(|j| regorus::Value::from_json_str(&j.to_string()).expect("json"))
        .collect();
    let mut i = 0;
    g.bench_function("regorus_prebuilt_input", |b| {
        b.iter(|| {
            i = (i + 1) % inputs.len();
            eng.set_input(inputs[i].clone());
            black_box(rego_eval(&mut eng));
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
