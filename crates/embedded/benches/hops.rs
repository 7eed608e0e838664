//! What one record costs at each data-path hop, without the bus: the
//! sidecar's translation (JSON → contract → encoded values), a batch
//! through protobuf, the proxy's routing (and its whole batch: read in
//! place, route, re-batch), and the spine pipeline a
//! Lucius-routed record goes through (decode, packs, Blot, JSON out).
//! The example bundle and the record mix of `ben bench datapath`.
//!
//! `cargo bench -p ben-embedded --bench hops`

use ben_wire::pb;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message;
use std::sync::Arc;

fn raw(i: u64) -> Vec<u8> {
    let (url, code, ip) = if i.is_multiple_of(20) {
        ("/checkout", "503", "10.0.0.1")
    } else {
        ("/products/1", "200", "198.51.100.1")
    };
    let comment = if i.is_multiple_of(10) {
        serde_json::json!("mail me at someone@example.com")
    } else {
        serde_json::Value::Null
    };
    serde_json::to_vec(&serde_json::json!({
        "timestamp": "2026-01-01T00:00:00Z", "verb": "get", "url": url, "code": code,
        "size": i % 5000, "remote_addr": ip,
        "customer": {"email": format!("c{}@example.com", i % 1000)},
        "comment": comment
    }))
    .unwrap()
}

fn hops(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop");
    let built = ben_intent::Bundle::load(&dir).unwrap().build().unwrap();
    let program = built.program.clone();
    let contract = program.contract("shop_web").unwrap();
    let key = ben_blot::BlotKey::from_material(&[9u8; 32]).unwrap();
    let ev = ben_intent::Evaluator::new(&built, Some(key));
    let routes = ben_proxy::Routes::new(program.clone());
    let n = 500u64;
    let raws: Vec<Vec<u8>> = (0..n).map(raw).collect();
    let translate = |i: usize, r: &[u8]| {
        ben_sidecar::translate(
            &program,
            contract,
            r,
            1 << 20,
            ben_sidecar::Envelope {
                id: format!("7-1-{i}"),
                intent_version: &built.version,
                bee_subject: "shop_web/1000/1",
                app: "shop_web",
                received_ns: 1,
            },
        )
        .unwrap()
    };
    let records: Vec<pb::Record> = raws
        .iter()
        .enumerate()
        .map(|(i, r)| translate(i, r))
        .collect();
    let batch = pb::RecordBatch {
        records: records.clone(),
    }
    .encode_to_vec();

    let mut g = c.benchmark_group("hop");
    g.throughput(Throughput::Elements(n));
    g.bench_function("sidecar_translate", |b| {
        b.iter(|| {
            raws.iter()
                .enumerate()
                .map(|(i, r)| translate(i, r).values.len())
                .sum::<usize>()
        })
    });
    g.bench_function("batch_encode", |b| {
        b.iter(|| {
            pb::RecordBatch {
                records: records.clone(),
            }
            .encode_to_vec()
            .len()
        })
    });
    g.bench_function("batch_decode", |b| {
        b.iter(|| {
            pb::RecordBatch::decode(batch.as_slice())
                .unwrap()
                .records
                .len()
        })
    });
    let views: Vec<ben_wire::view::RecordView> = records
        .iter()
        .map(|r| ben_wire::view::RecordView::encode(r).unwrap())
        .collect();
    g.bench_function("proxy_route", |b| {
        b.iter(|| views.iter().filter(|r| routes.route(r).is_ok()).count())
    });
    // The proxy's whole work on a batch: read in place, route, re-batch.
    g.bench_function("proxy_batch", |b| {
        b.iter(|| {
            let (mut lucius, mut spine) = (Vec::new(), Vec::new());
            for v in ben_wire::view::read_batch(batch.clone().into()).unwrap() {
                let out = match routes.route(&v).unwrap() {
                    ben_bitspec::ir::RouteTarget::Lucius => &mut lucius,
                    ben_bitspec::ir::RouteTarget::Spine => &mut spine,
                };
                ben_wire::view::push_raw(out, v.raw());
            }
            lucius.len() + spine.len()
        })
    });
    let ev = Arc::new(ev);
    g.bench_function("spine_process", |b| {
        b.iter(|| {
            records
                .iter()
                .map(|r| ev.process_record(r.clone()).unwrap().body.len())
                .sum::<usize>()
        })
    });
    g.bench_function("record_clone", |b| {
        b.iter(|| records.iter().map(|r| r.clone().id.len()).sum::<usize>())
    });
    g.finish();
}

criterion_group!(benches, hops);
criterion_main!(benches);
