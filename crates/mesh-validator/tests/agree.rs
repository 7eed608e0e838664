//! Four validators (the consensus core, each with its own mempool and
//! state machine) agree on signed anomalies: offered to some of them only,
//! some twice, some forged; every honest anomaly commits exactly once, the
//! forged ones never, and every validator ends with the same state root,
//! height after height, and the same policies.

use ben_mesh_consensus::{
    Action, Block, Config, Durable, Envelope, Millis, Node, NodeId, SimCrypto,
};
use ben_mesh_detect::wire::{AnomalyEvent, Endpoint};
use ben_mesh_validator::mempool::Mempool;
use ben_mesh_validator::state::{self, StateMachine};
use ben_wire::{Keyring, Role, Signer};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

struct Validator {
    node: Node<SimCrypto>,
    pool: Mempool,
    state: StateMachine,
    roots: BTreeMap<u64, ben_mesh_consensus::Hash>,
    committed: Vec<String>,
}

#[test]
fn four_validators_commit_each_signed_anomaly_once_with_one_state_root() {
    let ai = Signer::from_secret([1; 32]);
    let forger = Signer::from_secret([2; 32]);
    let mut keys = Keyring::new();
    keys.trust("mesh-1", Role::AiService, ai.public());
    let keys = Arc::new(keys);
    let n = 4;
    let g = Block::genesis("agree");
    let mut vs: Vec<Validator> = (0..n)
        .map(|i| Validator {
            node: Node::new(
                Config::new(n, i as NodeId),
                SimCrypto::new(i as NodeId, 9),
                &g,
                Durable::genesis(&g),
            ),
            pool: Mempool::new(10_000),
            state: StateMachine::new(state::Config::default(), keys.clone()),
            roots: BTreeMap::new(),
            committed: vec![],
        })
        .collect();
    let mut net: VecDeque<(Millis, NodeId, NodeId, Envelope)> = VecDeque::new();
    let mut now: Millis = 1_000_000;
    let start = now;
    for (i, v) in vs.iter_mut().enumerate() {
        let mut out = vec![];
        v.node.start(now, &mut v.pool, &mut out);
        carry(i, v, out, &mut net, now, n);
    }
    let mut offered = vec![];
    let mut seq = 0u64;
    while now < start + 20_000 {
        // Every 50 ms an anomaly reaches three of the four mempools (and
        // one in five is sent twice, re-signed); every 7th is forged.
        if (now - start).is_multiple_of(50) && now < start + 15_000 {
            seq += 1;
            let a = AnomalyEvent {
                id: format!("an-{seq}"),
                class: "portscan".into(),
                confidence: 0.6 + (seq % 4) as f64 / 10.0,
                source: Some(Endpoint {
                    ip: format!("10.9.{}.{}", seq / 250, seq % 250),
                    port: 0,
                }),
                window_end_us: now as i64 * 1_000,
                ..Default::default()
            };
            let forged = seq.is_multiple_of(7);
            let tx = if forged {
                forger.seal_bytes(&a)
            } else {
                ai.seal_bytes(&a)
            };
            if !forged {
                offered.push(a.id.clone());
            }
            for (i, v) in vs.iter_mut().enumerate() {
                if i as u64 == seq % 4 {
                    continue;
                }
                // The validator verifies before its mempool takes it.
                if ben_wire::open_bytes::<AnomalyEvent>(&tx, &keys).is_ok() {
                    v.pool.offer(&a.id, a.confidence, tx.clone());
                    if seq.is_multiple_of(5) {
                        v.pool.offer(&a.id, a.confidence, ai.seal_bytes(&a));
                    }
                    let mut out = vec![];
                    v.node.on_payload(now, &mut v.pool, &mut out);
                    carry(i, v, out, &mut net, now, n);
                }
            }
        }
        // Deliver what is due (2 ms links), then timers.
        while net.front().is_some_and(|m| m.0 <= now) {
            let Some((_, from, to, msg)) = net.pop_front() else {
                break;
            };
            let v = &mut vs[to as usize];
            let mut out = vec![];
            v.node.on_message(from, msg, now, &mut v.pool, &mut out);
            carry(to as usize, v, out, &mut net, now, n);
        }
        for (i, v) in vs.iter_mut().enumerate() {
            if v.node.next_wake() <= now {
                let mut out = vec![];
                v.node.on_tick(now, &mut v.pool, &mut out);
                carry(i, v, out, &mut net, now, n);
            }
        }
        now += 1;
    }
    // Each honest anomaly committed exactly once, in one order everywhere.
    let first = &vs[0];
    let mut sorted = first.committed.clone();
    sorted.sort();
    let mut want = offered.clone();
    want.sort();
    assert_eq!(sorted, want, "every signed anomaly once, no forged one");
    for v in &vs[1..] {
        assert_eq!(v.committed, first.committed);
        let common = v.roots.len().min(first.roots.len());
        assert!(common > 10, "only {common} heights in common");
        for (h, r) in v.roots.iter().take(common) {
            assert_eq!(
                first.roots.get(h),
                Some(r),
                "state roots differ at height {h}"
            );
        }
        assert_eq!(
            v.state.policies().collect::<Vec<_>>(),
            first.state.policies().collect::<Vec<_>>()
        );
    }
    // 0.7 and above make policies: three of every four confidences.
    assert!(first.state.policies().count() > offered.len() / 2);
    println!(
        "{} anomalies offered, {} committed at height {}, {} policies",
        offered.len(),
        first.committed.len(),
        first.state.height(),
        first.state.policies().count()
    );
}

fn carry(
    i: usize,
    v: &mut Validator,
    out: Vec<Action>,
    net: &mut VecDeque<(Millis, NodeId, NodeId, Envelope)>,
    now: Millis,
    n: usize,
) {
    let me = i as NodeId;
    for a in out {
        match a {
            Action::Send { to, msg } => net.push_back((now + 2, me, to, msg)),
            Action::Broadcast(msg) => {
                for to in (0..n as NodeId).filter(|t| *t != me) {
                    net.push_back((now + 2, me, to, msg.clone()));
                }
            }
            Action::Commit { block, .. } => {
                let applied = v.state.apply(&block);
                assert!(
                    applied.refused.is_empty(),
                    "a mempool-verified anomaly was refused at commit: {:?}",
                    applied.refused
                );
                v.pool
                    .remove_committed(applied.admitted.iter().map(String::as_str));
                v.committed.extend(applied.admitted);
                v.roots.insert(block.height, applied.root);
            }
            _ => {}
        }
    }
}
