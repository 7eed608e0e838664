//! The consensus core's own cost: four validators with real Ed25519
//! (QCs batch-verified) in one thread, messages handed over at once, blocks
//! of 512-byte transactions. No network, no storage: the ceiling the
//! validator shell can reach on one core, and what each commit costs.

use ben_mesh_consensus::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ed25519_dalek::SigningKey;
use std::collections::VecDeque;

const TX: usize = 512;

/// A mempool that always has `per_block` fresh transactions.
struct Endless {
    next: u64,
    per_block: usize,
}

impl Pool for Endless {
    fn committed(&mut self, _: &Block) {}

    fn batch(&mut self, _: &[&Block], max: usize, _: usize) -> Vec<Vec<u8>> {
        (0..self.per_block.min(max))
            .map(|_| {
                self.next += 1;
                let mut tx = vec![0u8; TX];
                tx[..8].copy_from_slice(&self.next.to_le_bytes());
                tx
            })
            .collect()
    }
}

/// Runs until every validator committed `blocks` more blocks; returns
/// the transactions committed (counted at validator 0).
fn run(per_block: usize, blocks: u64) -> u64 {
    let n = 4;
    let secrets: Vec<[u8; 32]> = (0..n).map(|i| [i as u8 + 1; 32]).collect();
    let set: Vec<_> = secrets
        .iter()
        .map(|s| SigningKey::from_bytes(s).verifying_key())
        .collect();
    let g = Block::genesis("bench");
    let mut nodes: Vec<Node<Ed25519>> = (0..n)
        .map(|i| {
            Node::new(
                Config::new(n, i as NodeId),
                Ed25519::new(secrets[i], set.clone()),
                &g,
                Durable::genesis(&g),
            )
        })
        .collect();
    let mut pools: Vec<Endless> = (0..n).map(|_| Endless { next: 0, per_block }).collect();
    let mut queue: VecDeque<(NodeId, NodeId, Envelope)> = VecDeque::new();
    let mut committed = 0u64;
    let now = 0;
    for (i, node) in nodes.iter_mut().enumerate() {
        let mut out = vec![];
        node.start(now, &mut pools[i], &mut out);
        route(i as NodeId, n, out, &mut queue, &mut committed, i == 0);
    }
    while nodes
        .iter()
        .map(|x| x.committed_height())
        .min()
        .unwrap_or(0)
        < blocks
    {
        let Some((from, to, msg)) = queue.pop_front() else {
            panic!("the validators stopped talking");
        };
        let mut out = vec![];
        nodes[to as usize].on_message(from, msg, now, &mut pools[to as usize], &mut out);
        route(to, n, out, &mut queue, &mut committed, to == 0);
    }
    committed
}

fn route(
    from: NodeId,
    n: usize,
    out: Vec<Action>,
    q: &mut VecDeque<(NodeId, NodeId, Envelope)>,
    committed: &mut u64,
    count: bool,
) {
    for a in out {
        match a {
            Action::Send { to, msg } => q.push_back((from, to, msg)),
            Action::Broadcast(msg) => {
                for to in 0..n as NodeId {
                    if to != from {
                        q.push_back((from, to, msg.clone()));
                    }
                }
            }
            Action::Commit { block, .. } if count => *committed += block.payload.len() as u64,
            _ => {}
        }
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("consensus_core_4_validators");
    g.sample_size(10);
    for per_block in [1usize, 100, 1_000] {
        let blocks = 20;
        let txs = run(per_block, blocks);
        g.throughput(Throughput::Elements(txs));
        g.bench_function(format!("{per_block}_tx_of_{TX}_B_per_block"), |b| {
            b.iter(|| run(per_block, blocks))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
