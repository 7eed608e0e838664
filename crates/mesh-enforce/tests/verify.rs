//! Verification before anything: a good policy passes; a bad signature, a
//! QC of too few or foreign votes, a QC for another block or chain, a
//! target the block's anomaly does not name, dangerous targets, expired,
//! oversized and malformed input are refused with a reason, never a panic.

mod common;
use common::{now_ms, Spoil, World};

#[test]
fn good_policies_pass_and_every_spoiled_one_is_refused_with_its_reason() {
    let w = World::new();
    let v = w.verifier();
    let now = now_ms();
    let good = w.policy("192.0.2.7", 5, now, now + 60_000, Spoil::None);
    let p = v.verify(&good).expect("a certified policy verifies");
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].target.to_string(), "192.0.2.7");
    assert_eq!(p[0].height, 5);
    assert_eq!(ben_mesh_enforce::verify::expired(&p[0], now), None);
    // Expired: it verifies (a block's policies end at different times),
    // and the agent judges it over.
    let old = w.policy("192.0.2.7", 5, now - 90_000, now - 1, Spoil::None);
    let p = v.verify(&old).expect("verifies");
    assert!(ben_mesh_enforce::verify::expired(&p[0], now)
        .unwrap()
        .contains("expired"));

    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            w.policy("192.0.2.7", 5, now, now + 60_000, Spoil::TooFewVotes),
            "QC",
        ),
        (
            w.policy("192.0.2.7", 5, now, now + 60_000, Spoil::ForeignVotes),
            "QC",
        ),
        (
            w.policy("192.0.2.7", 5, now, now + 60_000, Spoil::OtherBlock),
            "QC",
        ),
        (
            w.policy("192.0.2.7", 5, now, now + 60_000, Spoil::OtherChain),
            "QC",
        ),
        (
            w.policy("192.0.2.7", 5, now, now + 60_000, Spoil::OtherTarget),
            "came from",
        ),
        (
            w.policy("192.0.2.7", 5, now, now + 48 * 3_600_000, Spoil::None),
            "maximum",
        ),
        (
            w.policy("0.0.0.0/0", 5, now, now + 60_000, Spoil::None),
            "whole address space",
        ),
        (
            w.policy("127.0.0.1", 5, now, now + 60_000, Spoil::None),
            "loopback",
        ),
        (
            w.policy("224.0.0.1", 5, now, now + 60_000, Spoil::None),
            "multicast",
        ),
        (
            w.policy("::/0", 5, now, now + 60_000, Spoil::None),
            "whole address space",
        ),
        (vec![0xff; 64], "envelope"),
        (vec![0; 5 << 20], "limit"),
    ];
    for (i, (bytes, want)) in cases.iter().enumerate() {
        let err = v.verify(bytes).expect_err(&format!("case {i} verified"));
        assert!(
            err.contains(want),
            "case {i}: {err:?} does not say {want:?}"
        );
    }
    // A bit flipped anywhere in a good policy: refused, never a panic.
    for at in (0..good.len()).step_by(7) {
        let mut b = good.clone();
        b[at] ^= 0x40;
        assert!(v.verify(&b).is_err(), "flip at byte {at} verified");
    }
    // Signed by a key the agent does not know as a validator's.
    let mut other = World::new();
    other.envelope[0] = ben_wire::Signer::from_secret([1; 32]);
    let forged = other.policy("192.0.2.7", 5, now, now + 60_000, Spoil::None);
    assert!(v.verify(&forged).unwrap_err().contains("envelope"));
}

/// One message carries a block's policies: all of them verify together,
/// and one the block does not back refuses the message.
#[test]
fn a_block_s_policies_travel_and_fail_together() {
    use ben_mesh_wire::{BlockPolicy, PolicyEvent};
    use prost::Message as _;
    let w = World::new();
    let v = w.verifier();
    let now = now_ms();
    let one = w.policy("192.0.2.7", 5, now, now + 60_000, Spoil::None);
    let env = ben_wire::pb::SignedEnvelope::decode(&one[..]).unwrap();
    let mut ev = PolicyEvent::decode(&env.payload[..]).unwrap();
    // The same policy twice (an extension in the same block): both pass.
    ev.policies.push(ev.policies[0].clone());
    let two = w.envelope[0].seal_bytes(&ev);
    assert_eq!(v.verify(&two).unwrap().len(), 2);
    // A policy whose anomaly is not in the block: the message is refused.
    ev.policies.push(BlockPolicy {
        id: "block-198.51.100.1".into(),
        action: "drop".into(),
        target: "198.51.100.1".into(),
        expires_at_ms: now + 60_000,
        anomalies: vec!["an-elsewhere".into()],
    });
    let bad = w.envelope[0].seal_bytes(&ev);
    let err = v.verify(&bad).unwrap_err();
    assert!(err.contains("none of policy block-198.51.100.1"), "{err}");
    // No policy at all: refused.
    ev.policies.clear();
    let empty = w.envelope[0].seal_bytes(&ev);
    assert!(v.verify(&empty).unwrap_err().contains("no policy"));
}
