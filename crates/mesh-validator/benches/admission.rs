//! Signed anomalies a validator takes in per second, every signature
//! verified: into the mempool (verify + offer, one by one or in batches as
//! a validator does), and through the state
//! machine when their block commits (verify again + admission + policy +
//! state root; or, as a validator runs it, with the envelopes its mempool
//! opened). One core.

use ben_mesh_consensus::{Block, Pool};
use ben_mesh_detect::wire::{AnomalyEvent, Endpoint};
use ben_mesh_validator::mempool::Mempool;
use ben_mesh_validator::state::{open_txs, Config, StateMachine, Tx};
use ben_wire::{open_bytes, Keyring, Role, Signer};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::sync::Arc;

fn anomalies(ai: &Signer, n: usize, now_ms: u64) -> Vec<(String, f64, Vec<u8>)> {
    (0..n)
        .map(|k| {
            let a = AnomalyEvent {
                id: format!("an-{k}"),
                class: "portscan".into(),
                confidence: 0.9,
                source: Some(Endpoint {
                    ip: format!("10.{}.{}.{}", k / 65_536, (k / 256) % 256, k % 256),
                    port: 0,
                }),
                window_end_us: now_ms as i64 * 1_000,
                ..Default::default()
            };
            (a.id.clone(), a.confidence, ai.seal_bytes(&a))
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let ai = Signer::from_secret([9; 32]);
    let mut k = Keyring::new();
    k.trust("mesh-1", Role::AiService, ai.public());
    let keys = Arc::new(k);
    let n = 2_000;
    let now = 1_000_000_000;
    let txs = anomalies(&ai, n, now);
    let mut g = c.benchmark_group("validator_admission");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("verify_and_offer_to_mempool", |b| {
        b.iter(|| {
            let mut pool = Mempool::new(100_000);
            for (id, conf, tx) in &txs {
                let v = open_bytes::<AnomalyEvent>(tx, &keys).expect("signed");
                assert_eq!(&v.get().id, id);
                pool.offer(id, *conf, tx.clone());
            }
            pool.batch(&[], 100_000, 64 << 20).len()
        })
    });
    // As a validator takes them in: opened 128 at a time, the signatures
    // of each batch checked together (ZIP-215's rule).
    g.bench_function("verify_in_batches_and_offer_to_mempool", |b| {
        b.iter(|| {
            let mut pool = Mempool::new(100_000);
            for chunk in txs.chunks(128) {
                let bytes: Vec<&[u8]> = chunk.iter().map(|t| t.2.as_slice()).collect();
                for ((id, conf, tx), v) in chunk.iter().zip(open_txs(&bytes, &keys)) {
                    assert!(matches!(v, Ok(Tx::Anomaly(_))));
                    pool.offer(id, *conf, tx.clone());
                }
            }
            pool.batch(&[], 100_000, 64 << 20).len()
        })
    });
    let mut block = Block::genesis("bench");
    block.height = 1;
    block.time = now;
    block.payload = txs.iter().map(|t| t.2.clone()).collect();
    g.bench_function("state_machine_apply_block", |b| {
        b.iter(|| {
            let mut sm = StateMachine::new(Config::default(), keys.clone());
            let out = sm.apply(&block);
            assert_eq!(out.admitted.len(), n);
            out.root
        })
    });
    // What a validator does: the envelopes its mempool opened are not
    // verified again when their block commits.
    let opened: std::collections::HashMap<[u8; 32], _> = txs
        .iter()
        .map(|t| {
            let v = open_bytes::<AnomalyEvent>(&t.2, &keys).expect("signed");
            (*blake3::hash(&t.2).as_bytes(), v)
        })
        .collect();
    g.bench_function("state_machine_apply_block_opened_once", |b| {
        b.iter(|| {
            let mut sm = StateMachine::new(Config::default(), keys.clone());
            let out = sm.apply_with(&block, &mut |_, tx| {
                opened.get(blake3::hash(tx).as_bytes()).cloned()
            });
            assert_eq!(out.admitted.len(), n);
            out.root
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
