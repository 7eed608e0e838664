//! The ledger service end to end in process: real bus, store, SQLite and
//! simulated components speaking the signed protocol.

mod common;

use ben_bus::Bus;
use ben_control::ledger::DeployPhase;
use ben_control::testkit::Behaviour;
use ben_control::{subjects, Config, ManualClock, SystemClock};
use ben_wire::{pb, Signer};
use common::*;
use prost::Message as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_finalizes_and_survives_a_restart_then_rolls_back() {
    let env = Env::new("happy", Arc::new(SystemClock));
    let h = env.start(env.config()).await;
    let c = h.client();
    let mut sims = Vec::new();
    for (i, role) in ROLES.iter().enumerate() {
        sims.push(
            env.sim(&format!("{role}-{i}"), role, Behaviour::Healthy)
                .await,
        );
    }
    let (v1, arts1) = bundle(None);
    let (v2, arts2) = bundle(Some("b"));
    let out = c
        .stage(stage_request(env.store.as_ref(), &v1, &arts1))
        .await
        .unwrap();
    assert!(out.created);
    assert!(out.roles["spine"].contains("pack/web_guard"));
    wait_registered(&c, ROLES.len()).await;

    let t0 = Instant::now();
    let d = c.deploy(v1.clone()).await.unwrap();
    assert_eq!(d.required.len(), ROLES.len());
    let rec = wait_deploy(&c, d.id).await;
    let took = t0.elapsed();
    assert_eq!(rec.phase, DeployPhase::Finalized, "{rec:#?}");
    assert!(rec.components.iter().all(|c| c.state == "active"));
    for s in &sims {
        assert_eq!(s.running().as_deref(), Some(v1.as_str()));
    }
    eprintln!("deploy → finalized, {} components: {took:?}", ROLES.len());
    let st = c.status(None).await.unwrap();
    assert_eq!(st.active.as_deref(), Some(v1.as_str()));
    // Redeploying the active version is refused.
    assert!(c.deploy(v1.clone()).await.is_err());

    // Restart the ledger on the same database with v2 staged.
    c.stage(stage_request(env.store.as_ref(), &v2, &arts2))
        .await
        .unwrap();
    let history_before = c.history().await.unwrap();
    h.shutdown().await;
    let h = env.start(env.config()).await;
    let c = h.client();
    let st = c.status(None).await.unwrap();
    assert_eq!(st.active.as_deref(), Some(v1.as_str()));
    assert_eq!(st.deploy.as_ref().map(|d| d.id), Some(rec.id));
    assert_eq!(
        st.deploy.as_ref().map(|d| d.phase),
        Some(DeployPhase::Finalized)
    );
    assert_eq!(c.history().await.unwrap(), history_before);
    let versions: Vec<String> = c
        .versions()
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(versions, [v1.clone(), v2.clone()]);
    let active = c.active().await.unwrap();
    assert_eq!(active.version.as_deref(), Some(v1.as_str()));
    assert_eq!(active.artifacts.len(), arts1.len());
    // Nothing else was finalized yet.
    assert!(c.rollback().await.is_err());

    // Components re-register by heartbeat; v2 deploys, then rollback to v1.
    wait_registered(&c, ROLES.len()).await;
    let d2 = c.deploy(v2.clone()).await.unwrap();
    assert_eq!(wait_deploy(&c, d2.id).await.phase, DeployPhase::Finalized);
    assert!(sims
        .iter()
        .all(|s| s.running().as_deref() == Some(v2.as_str())));
    let r = c.rollback().await.unwrap();
    assert_eq!(r.version, v1);
    assert_eq!(wait_deploy(&c, r.id).await.phase, DeployPhase::Finalized);
    assert!(sims
        .iter()
        .all(|s| s.running().as_deref() == Some(v1.as_str())));
    let st = c.status(Some(v2.clone())).await.unwrap();
    assert_eq!(st.deploy.map(|d| d.id), Some(d2.id));
    assert!(!st.version.unwrap().active);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failed_prepare_aborts_and_nobody_switches() {
    let env = Env::new("fail", Arc::new(SystemClock));
    let h = env.start(env.config()).await;
    let c = h.client();
    let good = env.sim("spine-1", "spine", Behaviour::Healthy).await;
    let _bad = env
        .sim(
            "detector-1",
            "detector",
            Behaviour::FailPrepare("playbook brute_force: unknown flag".into()),
        )
        .await;
    let (v, arts) = bundle(None);
    c.stage(stage_request(env.store.as_ref(), &v, &arts))
        .await
        .unwrap();
    wait_registered(&c, 2).await;
    let d = c.deploy(v.clone()).await.unwrap();
    let rec = wait_deploy(&c, d.id).await;
    assert_eq!(rec.phase, DeployPhase::Aborted);
    let reason = rec.reason.clone().unwrap();
    assert!(reason.contains("detector-1"), "{reason}");
    let bad = rec
        .components
        .iter()
        .find(|c| c.id == "detector-1")
        .unwrap();
    assert_eq!(bad.state, "failed");
    assert_eq!(
        bad.reason.as_deref(),
        Some("playbook brute_force: unknown flag")
    );
    // Invariant 2: the healthy one prepared but never switched.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(good.running(), None);
    let st = c.status(None).await.unwrap();
    assert_eq!(st.active, None);
    let hist = c.history().await.unwrap();
    assert!(hist
        .iter()
        .any(|e| e.what.starts_with("aborted: detector-1")));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_hashes_abort() {
    let env = Env::new("hash", Arc::new(SystemClock));
    let h = env.start(env.config()).await;
    let c = h.client();
    let _a = env.sim("proxy-1", "proxy", Behaviour::WrongHash).await;
    let (v, arts) = bundle(None);
    c.stage(stage_request(env.store.as_ref(), &v, &arts))
        .await
        .unwrap();
    wait_registered(&c, 1).await;
    let d = c.deploy(v).await.unwrap();
    let rec = wait_deploy(&c, d.id).await;
    assert_eq!(rec.phase, DeployPhase::Aborted);
    assert!(rec.reason.unwrap().contains("do not match"));
    assert_eq!(rec.components[0].state, "failed");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_timeout_and_staleness_follow_the_injected_clock() {
    let clock = ManualClock::new(1_000_000_000);
    let env = Env::new("clock", Arc::new(clock.clone()));
    let cfg = Config {
        stale_after_ms: 3_000,
        prepare_timeout_ms: 30_000,
        ..env.config()
    };
    let h = env.start(cfg).await;
    let c = h.client();
    let _ok = env.sim("spine-1", "spine", Behaviour::Healthy).await;
    let silent = env.sim("lucius-1", "lucius", Behaviour::Silent).await;
    let (v, arts) = bundle(None);
    c.stage(stage_request(env.store.as_ref(), &v, &arts))
        .await
        .unwrap();
    wait_registered(&c, 2).await;
    let d = c.deploy(v).await.unwrap();
    // Real time passes, the ledger's clock does not: no timeout.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let st = c.status(None).await.unwrap();
    assert_eq!(st.deploy.unwrap().phase, DeployPhase::Preparing);
    // Time passes on the clock, in steps shorter than `stale_after` so the
    // heartbeating components stay registered.
    for _ in 0..16 {
        clock.advance(Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let rec = wait_deploy(&c, d.id).await;
    assert_eq!(rec.phase, DeployPhase::Aborted, "{rec:#?}");
    assert!(
        rec.reason
            .as_deref()
            .unwrap()
            .contains("timed out waiting for lucius-1"),
        "{rec:#?}"
    );
    let l = rec.components.iter().find(|c| c.id == "lucius-1").unwrap();
    assert_eq!(
        l.reason.as_deref(),
        Some("no answer before the prepare timeout")
    );
    // A component that stops heartbeating is deregistered after stale_after.
    silent.stop();
    let t0 = Instant::now();
    loop {
        clock.advance(Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(150)).await;
        let s = c.status(None).await.unwrap();
        if s.components.iter().all(|x| x.id != "lucius-1")
            && s.components.iter().any(|x| x.id == "spine-1")
        {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{s:#?}");
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_messages_go_to_the_dlq_with_their_reason() {
    let env = Env::new("dlq", Arc::new(SystemClock));
    let h = env.start(env.config()).await;
    let c = h.client();
    let mut dlq = env.bus.subscribe(subjects::DLQ, None).await.unwrap();
    let stranger = Signer::from_secret([42; 32]);
    let ack = pb::Ack {
        component: "spine-1".into(),
        version: "v".into(),
        phase: pb::ack::Phase::Prepared as i32,
        ..Default::default()
    };
    // Unknown key.
    env.bus
        .publish(subjects::ACK, stranger.seal_bytes(&ack))
        .await
        .unwrap();
    // Known key, tampered payload.
    let mut env_msg = env.component_signer.seal(&ack);
    env_msg.payload.push(0);
    env.bus
        .publish(subjects::ACK, env_msg.encode_to_vec())
        .await
        .unwrap();
    // A heartbeat sent as an ack (wrong kind).
    let hb = pb::Heartbeat {
        component: "x".into(),
        role: "spine".into(),
        seq: 1,
        ..Default::default()
    };
    env.bus
        .publish(subjects::ACK, env.component_signer.seal_bytes(&hb))
        .await
        .unwrap();
    // Garbage on the heartbeat subject.
    env.bus
        .publish(subjects::HEARTBEAT, vec![0xff, 0x01, 0x02])
        .await
        .unwrap();
    // Two subscriptions (acks, heartbeats): order across them is not fixed.
    let mut reasons = Vec::new();
    for _ in 0..4 {
        let m = tokio::time::timeout(Duration::from_secs(5), dlq.next())
            .await
            .expect("dead letter")
            .unwrap();
        let dl = pb::DeadLetter::decode(m.payload.as_slice()).unwrap();
        reasons.push((dl.subject, dl.reason, dl.sender));
    }
    let find = |what: &str| {
        reasons
            .iter()
            .find(|r| r.1.contains(what))
            .unwrap_or_else(|| panic!("no dead letter for {what}: {reasons:?}"))
    };
    let r = find("unknown signing key");
    assert_eq!((r.0.as_str(), r.2.as_str()), (subjects::ACK, stranger.id()));
    assert_eq!(find("does not verify").0, subjects::ACK);
    assert_eq!(
        find("expected a `ack` message, got `heartbeat`").0,
        subjects::ACK
    );
    assert_eq!(find("not a protobuf envelope").0, subjects::HEARTBEAT);
    let st = c.status(None).await.unwrap();
    assert_eq!(st.counters.dead_letters, 4);
    assert!(
        st.components.is_empty(),
        "nothing registered from bad input"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_components_finalize() {
    let env = Env::new("hundred", Arc::new(SystemClock));
    let h = env.start(env.config()).await;
    let c = h.client();
    let mut sims = Vec::new();
    for i in 0..100 {
        let role = ROLES[i % ROLES.len()];
        sims.push(
            env.sim(&format!("{role}-{i}"), role, Behaviour::Healthy)
                .await,
        );
    }
    let (v, arts) = bundle(None);
    c.stage(stage_request(env.store.as_ref(), &v, &arts))
        .await
        .unwrap();
    wait_registered(&c, 100).await;
    let t0 = Instant::now();
    let d = c.deploy(v.clone()).await.unwrap();
    let rec = wait_deploy(&c, d.id).await;
    let took = t0.elapsed();
    assert_eq!(rec.phase, DeployPhase::Finalized);
    assert_eq!(rec.components.len(), 100);
    assert!(sims
        .iter()
        .all(|s| s.running().as_deref() == Some(v.as_str())));
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    eprintln!("deploy → finalized, 100 components in process ({build} build): {took:?}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_activate_resumes_the_deploy_and_it_finalizes() {
    let env = Env::new("resume", Arc::new(SystemClock));
    let h = env.start(env.config()).await;
    let c = h.client();
    let a = env.sim("spine-1", "spine", Behaviour::Healthy).await;
    let b = env.sim("proxy-1", "proxy", Behaviour::NoActiveAck).await;
    let (v, arts) = bundle(None);
    c.stage(stage_request(env.store.as_ref(), &v, &arts))
        .await
        .unwrap();
    wait_registered(&c, 2).await;
    let d = c.deploy(v.clone()).await.unwrap();
    // proxy-1 switches but never acks: the deploy waits after activate.
    let t0 = Instant::now();
    while c.status(None).await.unwrap().deploy.map(|d| d.phase) != Some(DeployPhase::Activating) {
        assert!(t0.elapsed() < Duration::from_secs(10), "never activating");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.shutdown().await;
    // It is gone by the time the ledger is back.
    b.stop();
    let h = env.start(env.config()).await;
    let c = h.client();
    let rec = wait_deploy(&c, d.id).await;
    assert_eq!(rec.phase, DeployPhase::Finalized, "{rec:#?}");
    assert_eq!(a.running().as_deref(), Some(v.as_str()));
    let states: Vec<(&str, &str)> = rec
        .components
        .iter()
        .map(|c| (c.id.as_str(), c.state.as_str()))
        .collect();
    assert_eq!(states, [("proxy-1", "dropped"), ("spine-1", "active")]);
    assert_eq!(
        c.status(None).await.unwrap().active.as_deref(),
        Some(v.as_str())
    );
    let hist = c.history().await.unwrap();
    assert!(
        hist.iter()
            .any(|e| e.what.starts_with("resumed after a ledger restart")),
        "{hist:#?}"
    );
    assert!(
        hist.iter().any(|e| e.what.starts_with("proxy-1 dropped")),
        "{hist:#?}"
    );
    h.shutdown().await;
}
