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
        ..Default::default()
    });
    let bad = w.envelope[0].seal_bytes(&ev);
    let err = v.verify(&bad).unwrap_err();
    assert!(err.contains("none of policy block-198.51.100.1"), "{err}");
    // No policy at all: refused.
    ev.policies.clear();
    let empty = w.envelope[0].seal_bytes(&ev);
    assert!(v.verify(&empty).unwrap_err().contains("no policy"));
}

/// A request's policy passes only as its request in the block says it:
/// target, shape, scope, anomalies and id; an anomaly's policy is only a
/// whole drop of one host.
#[test]
fn a_requested_policy_must_say_what_its_request_in_the_block_says() {
    let w = World::new();
    let v = w.verifier();
    let now = now_ms();
    let mut r = w.request("r1", "192.0.2.7", "an-1", 60_000);
    r.protocol = "tcp".into();
    r.ports = "22".into();
    r.scope = vec!["web-1".into()];
    let good = w.requested(&r, "192.0.2.7", 6, now, |_| {});
    let p = v.verify(&good).expect("the request's policy verifies");
    assert_eq!(p[0].spec.describe(), "rate-limit 10/s ingress tcp 22");
    assert_eq!(p[0].scope, ["web-1"]);
    assert!(p[0].in_scope("web-1", "h", &[]) && !p[0].in_scope("enforcer-1", "h", &[]));
    assert!(p[0].in_scope("enforcer-1", "web-1", &[]), "by host name");
    let mut labelled = r.clone();
    labelled.scope = vec!["role=web".into()];
    let p = v
        .verify(&w.requested(&labelled, "192.0.2.7", 8, now, |_| {}))
        .unwrap();
    assert!(p[0].in_scope("enforcer-1", "h", &["role=web".into()]));
    assert!(!p[0].in_scope("enforcer-1", "h", &["role=db".into()]));
    type Edit = Box<dyn Fn(&mut ben_mesh_wire::BlockPolicy)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|p| p.target = "192.0.2.8".into()),
            "another target",
        ),
        (Box::new(|p| p.ports = "23".into()), "another action"),
        (Box::new(|p| p.rate = 1_000), "another action"),
        (Box::new(|p| p.action = "drop".into()), "rate"),
        (
            Box::new(|p| p.direction = "egress".into()),
            "another action",
        ),
        (Box::new(|p| p.scope.clear()), "another scope"),
        (Box::new(|p| p.anomalies = vec!["an-2".into()]), "anomalies"),
        (Box::new(|p| p.id = "req-0000".into()), "another id"),
        (Box::new(|p| p.request = "r2".into()), "not in block"),
        (Box::new(|p| p.scope = vec!["a;b".into()]), "scope"),
        // Without its request, the policy is an anomaly's: only a whole
        // drop of one host.
        (Box::new(|p| p.request.clear()), "names no request"),
    ];
    for (i, (edit, want)) in cases.iter().enumerate() {
        let bytes = w.requested(&r, "192.0.2.7", 6, now, edit);
        let err = v.verify(&bytes).expect_err(&format!("case {i} verified"));
        assert!(
            err.contains(want),
            "case {i}: {err:?} does not say {want:?}"
        );
    }
    // A network target (the validators checked its anomalies; the agent
    // checks the request says it).
    let mut net = w.request("r3", "192.0.2.0/24", "an-3", 60_000);
    net.action = "drop".into();
    net.rate = 0;
    let p = v
        .verify(&w.requested(&net, "192.0.2.7", 7, now, |_| {}))
        .unwrap();
    assert_eq!(p[0].target.to_string(), "192.0.2.0/24");
    assert!(p[0].spec.is_whole());
}
