//! Detection throughput in flows/s on the committed test split: the whole
//! pipeline (window stats, three engines, ensemble, aggregation), with and
//! without straddling windows, and the LightGBM engine alone for
//! comparison.

use ben_mesh_detect::{defaults, Baseline, Config, Detector, FlowTable, LgbmModel};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::io::Read;

fn split() -> FlowTable {
    let gz: &[u8] = include_bytes!("../tests/data/test-flows.csv.gz");
    let mut text = String::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_string(&mut text)
        .expect("test split decompresses");
    FlowTable::parse(&text).expect("test split parses")
}

fn bench(c: &mut Criterion) {
    let table = split();
    let baseline = Baseline::parse(defaults::BASELINE).expect("baseline");
    let model = LgbmModel::parse(defaults::MODEL).expect("model");
    let mut g = c.benchmark_group("detect");
    g.throughput(Throughput::Elements(table.flows.len() as u64));
    g.sample_size(10);
    // The default (straddling windows on), and each flow judged against its
    // own window only.
    for (name, straddle) in [("pipeline", true), ("pipeline_own_window_only", false)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let cfg = Config {
                    straddle,
                    ..Config::default()
                };
                let mut det = Detector::new(
                    cfg,
                    model.clone(),
                    "bench",
                    &baseline,
                    defaults::RULES,
                    &table.feature_names,
                )
                .expect("detector");
                black_box(det.run(&table).summary.anomalies)
            })
        });
    }
    // LightGBM alone over rows in model order (source metrics left at 0).
    let names = model.feature_names().to_vec();
    let cols: Vec<Option<usize>> = names
        .iter()
        .map(|n| table.feature_names.iter().position(|f| f == n))
        .collect();
    let rows: Vec<Vec<f64>> = table
        .flows
        .iter()
        .map(|f| {
            cols.iter()
                .map(|c| c.map_or(0.0, |i| f.features[i]))
                .collect()
        })
        .collect();
    g.bench_function("lightgbm_only", |b| {
        let mut raw = vec![0.0; model.num_outputs()];
        b.iter(|| {
            let mut acc = 0.0;
            for r in &rows {
                model.predict_raw_into(r, &mut raw);
                acc += raw[0];
            }
            black_box(acc)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
