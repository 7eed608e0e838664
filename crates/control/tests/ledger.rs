//! The ledger service end to end in process: real bus, store, simulated
//! components speaking the signed protocol, and the ledger's database on
//! SQLite and on PostgreSQL (every test runs on both: `<test>::sqlite`,
//! `<test>::postgres`).

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

on_both!(happy_path_finalizes_and_survives_a_restart_then_rolls_back);
async fn happy_path_finalizes_and_survives_a_restart_then_rolls_back(b: Backend) {
    let env = Env::on("happy", Arc::new(SystemClock), b);
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
    match &env.database_url {
        Some(url) => assert_eq!(&st.database, url),
        None => assert!(st.database.ends_with("ledger.db"), "{}", st.database),
    }
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

on_both!(one_failed_prepare_aborts_and_nobody_switches);
async fn one_failed_prepare_aborts_and_nobody_switches(b: Backend) {
    let env = Env::on("fail", Arc::new(SystemClock), b);
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

on_both!(wrong_hashes_abort);
async fn wrong_hashes_abort(b: Backend) {
    let env = Env::on("hash", Arc::new(SystemClock), b);
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

on_both!(prepare_timeout_and_staleness_follow_the_injected_clock);
async fn prepare_timeout_and_staleness_follow_the_injected_clock(b: Backend) {
    let clock = ManualClock::new(1_000_000_000);
    let env = Env::on("clock", Arc::new(clock.clone()), b);
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

on_both!(invalid_messages_go_to_the_dlq_with_their_reason);
async fn invalid_messages_go_to_the_dlq_with_their_reason(b: Backend) {
    let env = Env::on("dlq", Arc::new(SystemClock), b);
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
    let spine1 = env.signer("spine-1");
    let mut env_msg = spine1.seal(&ack);
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
        .publish(subjects::ACK, spine1.seal_bytes(&hb))
        .await
        .unwrap();
    // An ack in another component's name (invariant 8: only as itself).
    let as_spine2 = pb::Ack {
        component: "spine-2".into(),
        ..ack.clone()
    };
    env.bus
        .publish(subjects::ACK, spine1.seal_bytes(&as_spine2))
        .await
        .unwrap();
    // A heartbeat claiming another role.
    let hb_as_detector = pb::Heartbeat {
        component: "spine-1".into(),
        role: "detector".into(),
        seq: 1,
        ..Default::default()
    };
    env.bus
        .publish(subjects::HEARTBEAT, spine1.seal_bytes(&hb_as_detector))
        .await
        .unwrap();
    // A dead letter written in the ledger's name by a spine.
    let forged_dl = pb::DeadLetter {
        sender: "control".into(),
        subject: "ben.data.spine".into(),
        reason: "forged".into(),
        ..Default::default()
    };
    env.bus
        .publish(subjects::DLQ, spine1.seal_bytes(&forged_dl))
        .await
        .unwrap();
    // Garbage on the heartbeat subject.
    env.bus
        .publish(subjects::HEARTBEAT, vec![0xff, 0x01, 0x02])
        .await
        .unwrap();
    // Three subscriptions (acks, heartbeats, the DLQ): order across them
    // is not fixed. The ledger's dead letters are signed by it; the forged
    // one is on the DLQ too, and does not open.
    let mut reasons = Vec::new();
    let keys = env.ledger_keys();
    while reasons.len() < 7 {
        let m = tokio::time::timeout(Duration::from_secs(5), dlq.next())
            .await
            .expect("dead letter")
            .unwrap();
        let Ok(dl) = ben_wire::open_bytes::<pb::DeadLetter>(&m.payload, &keys) else {
            continue;
        };
        let dl = dl.into_inner();
        assert_eq!(dl.sender, "control");
        reasons.push((dl.subject, dl.reason, dl.key_id));
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
    assert_eq!(
        find("`ack` names `spine-2` as its sender but is signed by `spine-1`").2,
        spine1.id()
    );
    assert_eq!(
        find("claims role `detector` but is signed by `spine-1` (role spine)").0,
        subjects::HEARTBEAT
    );
    let r = find("dead letter refused: `dead_letter` names `control` as its sender but is signed by `spine-1`");
    assert_eq!((r.0.as_str(), r.2.as_str()), (subjects::DLQ, spine1.id()));
    let st = c.status(None).await.unwrap();
    assert_eq!(st.counters.dead_letters, 7);
    assert_eq!(st.counters.unverified_dead_letters, 1);
    assert!(
        st.components.is_empty(),
        "nothing registered from bad input"
    );
    h.shutdown().await;
}

on_both!(a_hundred_components_finalize);
async fn a_hundred_components_finalize(b: Backend) {
    let env = Env::on("hundred", Arc::new(SystemClock), b);
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

/// Signs `ack` as the simulated components do (the test plays a component
/// by hand).
async fn send_ack(env: &Env, ack: pb::Ack) {
    env.bus
        .publish(subjects::ACK, env.signer(&ack.component).seal_bytes(&ack))
        .await
        .unwrap();
}

/// The next message on `sub` that opens as `T` under the ledger's key.
async fn next_signed<T: ben_wire::Kind>(env: &Env, sub: &mut ben_bus::Subscription) -> T {
    let keys = env.ledger_keys();
    let m = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("a message within 10 s")
        .unwrap();
    ben_wire::open_bytes::<T>(&m.payload, &keys)
        .unwrap()
        .into_inner()
}

/// `lucius-1`'s PREPARED ack for `announce`, with the hashes its role holds.
fn prepared_ack(env: &Env, announce: &pb::Announce) -> pb::Ack {
    let hashes =
        ben_control::testkit::fetch_role_artifacts(announce, "lucius", env.store.as_ref()).unwrap();
    pb::Ack {
        component: "lucius-1".into(),
        version: announce.version.clone(),
        phase: pb::ack::Phase::Prepared as i32,
        hashes: hashes.into_iter().collect(),
        ..Default::default()
    }
}

on_both!(restart_while_preparing_aborts_and_tells_components);
async fn restart_while_preparing_aborts_and_tells_components(b: Backend) {
    let env = Env::on("restart-prep", Arc::new(SystemClock), b);
    let h = env.start(env.config()).await;
    let c = h.client();
    let spine = env.sim("spine-1", "spine", Behaviour::Healthy).await;
    // Plays lucius-1 by hand: heartbeats, never prepares on its own.
    let _lucius = env.sim("lucius-1", "lucius", Behaviour::Silent).await;
    let mut aborts = env.bus.subscribe(subjects::ABORT, None).await.unwrap();
    let (v, arts) = bundle(None);
    c.stage(stage_request(env.store.as_ref(), &v, &arts))
        .await
        .unwrap();
    wait_registered(&c, 2).await;
    let d = c.deploy(v.clone()).await.unwrap();
    wait_status(&c, "spine-1 prepared", |s| {
        s.deploy.as_ref().is_some_and(|d| {
            d.components
                .iter()
                .any(|x| x.id == "spine-1" && x.state == "prepared")
        })
    })
    .await;
    h.shutdown().await;

    // The database holds a deploy still preparing; a restart resolves it.
    let h = env.start(env.config()).await;
    let c = h.client();
    let reason = "ledger restarted during deploy; nothing activated";
    let ab: pb::Abort = next_signed(&env, &mut aborts).await;
    assert_eq!(
        (ab.version.as_str(), ab.reason.as_str()),
        (v.as_str(), reason)
    );
    let st = c.status(None).await.unwrap();
    let rec = st.deploy.clone().unwrap();
    assert_eq!(
        (rec.id, rec.phase, rec.reason.as_deref()),
        (d.id, DeployPhase::Aborted, Some(reason)),
        "{st:#?}"
    );
    assert!(rec.ended_ns.is_some());
    assert_eq!(st.active, None);
    assert_eq!(
        c.history().await.unwrap().last().map(|e| e.what.clone()),
        Some(format!("aborted: {reason}"))
    );
    // Nothing activated: the prepared component never switched.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(spine.running(), None);
    let history = c.history().await.unwrap();
    h.shutdown().await;

    // The resolution is on record: another restart changes nothing, and a
    // new deploy is not refused as busy.
    let h = env.start(env.config()).await;
    let c = h.client();
    assert_eq!(c.history().await.unwrap(), history);
    let st = c.status(Some(v.clone())).await.unwrap();
    let rec = st.deploy.unwrap();
    assert_eq!((rec.id, rec.phase), (d.id, DeployPhase::Aborted));
    assert_eq!(rec.reason.as_deref(), Some(reason));
    wait_registered(&c, 2).await;
    let d2 = c.deploy(v.clone()).await.unwrap();
    assert!(d2.id > d.id);
    h.shutdown().await;
}

on_both!(restart_after_activate_sends_it_again_and_finalizes);
async fn restart_after_activate_sends_it_again_and_finalizes(b: Backend) {
    let env = Env::on("restart-act", Arc::new(SystemClock), b);
    let h = env.start(env.config()).await;
    let c = h.client();
    let spine = env.sim("spine-1", "spine", Behaviour::Healthy).await;
    let _lucius = env.sim("lucius-1", "lucius", Behaviour::Silent).await;
    let mut announces = env.bus.subscribe(subjects::ANNOUNCE, None).await.unwrap();
    let mut activates = env.bus.subscribe(subjects::ACTIVATE, None).await.unwrap();
    let (v, arts) = bundle(None);
    c.stage(stage_request(env.store.as_ref(), &v, &arts))
        .await
        .unwrap();
    wait_registered(&c, 2).await;
    let d = c.deploy(v.clone()).await.unwrap();
    let announce: pb::Announce = next_signed(&env, &mut announces).await;
    send_ack(&env, prepared_ack(&env, &announce)).await;
    let act: pb::Activate = next_signed(&env, &mut activates).await;
    assert_eq!(act.required, ["lucius-1", "spine-1"]);
    // spine-1 switches and acks; lucius-1 (by hand) does not yet.
    wait_status(&c, "spine-1 active", |s| {
        s.deploy.as_ref().is_some_and(|d| {
            d.phase == DeployPhase::Activating
                && d.components
                    .iter()
                    .any(|x| x.id == "spine-1" && x.state == "active")
        })
    })
    .await;
    assert_eq!(spine.running().as_deref(), Some(v.as_str()));
    h.shutdown().await;

    // Activate had gone out: the restart sends it again, not an abort.
    let h = env.start(env.config()).await;
    let c = h.client();
    let again: pb::Activate = next_signed(&env, &mut activates).await;
    assert_eq!(
        (again.version.as_str(), again.required.len()),
        (v.as_str(), 2)
    );
    let st = c.status(None).await.unwrap();
    let rec = st.deploy.clone().unwrap();
    assert_eq!(rec.id, d.id, "the same deploy continues");
    assert!(!rec.phase.is_over(), "{st:#?}");
    assert!(
        rec.reason
            .as_deref()
            .unwrap()
            .contains("activate sent again"),
        "{rec:#?}"
    );
    assert_eq!(st.active, None, "not final until every component confirms");
    send_ack(
        &env,
        pb::Ack {
            component: "lucius-1".into(),
            version: v.clone(),
            phase: pb::ack::Phase::Active as i32,
            ..Default::default()
        },
    )
    .await;
    let rec = wait_deploy(&c, d.id).await;
    assert_eq!(rec.phase, DeployPhase::Finalized, "{rec:#?}");
    assert!(rec.components.iter().all(|x| x.state == "active"));
    let what: Vec<String> = c
        .history()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.what)
        .collect();
    assert!(
        what.contains(
            &"resumed after a ledger restart: activate sent again to lucius-1, spine-1".to_string()
        ),
        "{what:#?}"
    );
    // lucius-1 was acked by hand: its own heartbeats still say it runs
    // nothing, so the ledger may catch it up once the deploy is final. That
    // is the only thing allowed after "finalized".
    let fin = what
        .iter()
        .position(|w| w == "finalized")
        .unwrap_or_else(|| panic!("no finalized entry: {what:#?}"));
    assert!(
        what[fin + 1..]
            .iter()
            .all(|w| w == "lucius-1 runs nothing; catching it up"),
        "{what:#?}"
    );
    h.shutdown().await;

    // Finalized on record.
    let h = env.start(env.config()).await;
    let c = h.client();
    let st = c.status(None).await.unwrap();
    assert_eq!(st.active.as_deref(), Some(v.as_str()));
    assert_eq!(
        st.deploy.map(|d| (d.id, d.phase)),
        Some((d.id, DeployPhase::Finalized))
    );
    h.shutdown().await;
}

on_both!(resumed_activate_never_confirmed_ends_interrupted);
async fn resumed_activate_never_confirmed_ends_interrupted(b: Backend) {
    let env = Env::on("restart-int", Arc::new(SystemClock), b);
    let h = env.start(env.config()).await;
    let c = h.client();
    let _spine = env.sim("spine-1", "spine", Behaviour::Healthy).await;
    let _lucius = env.sim("lucius-1", "lucius", Behaviour::Silent).await;
    let mut announces = env.bus.subscribe(subjects::ANNOUNCE, None).await.unwrap();
    let (v, arts) = bundle(None);
    c.stage(stage_request(env.store.as_ref(), &v, &arts))
        .await
        .unwrap();
    wait_registered(&c, 2).await;
    let d = c.deploy(v.clone()).await.unwrap();
    let announce: pb::Announce = next_signed(&env, &mut announces).await;
    send_ack(&env, prepared_ack(&env, &announce)).await;
    wait_status(&c, "activating", |s| {
        s.deploy
            .as_ref()
            .is_some_and(|d| d.phase == DeployPhase::Activating)
    })
    .await;
    h.shutdown().await;

    // lucius-1 lost what it prepared (say it restarted too): it never
    // confirms, and the resumed deploy ends after the prepare timeout.
    let cfg = Config {
        prepare_timeout_ms: 1_500,
        ..env.config()
    };
    let h = env.start(cfg.clone()).await;
    let c = h.client();
    let rec = wait_deploy(&c, d.id).await;
    assert_eq!(rec.phase, DeployPhase::Interrupted, "{rec:#?}");
    let reason = rec.reason.clone().unwrap();
    assert!(reason.contains("lucius-1 did not confirm"), "{reason}");
    assert!(!reason.contains("spine-1"), "spine-1 confirmed: {reason}");
    let st = c.status(None).await.unwrap();
    assert_eq!(st.active, None);
    let last = c.history().await.unwrap().pop().unwrap();
    assert_eq!(last.what, format!("interrupted: {reason}"));
    h.shutdown().await;
    let h = env.start(cfg).await;
    let st = h.client().status(None).await.unwrap();
    assert_eq!(
        st.deploy.map(|d| (d.id, d.phase)),
        Some((d.id, DeployPhase::Interrupted))
    );
    h.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_or_malformed_database_is_refused_at_start_with_the_reason() {
    let env = Env::new("bad-db", Arc::new(SystemClock));
    let start = |url: &str| {
        let cfg = Config {
            database_url: Some(url.into()),
            db_timeout_ms: 500,
            ..env.config()
        };
        let deps = env.deps();
        let url = url.to_string();
        async move {
            match ben_control::start(cfg, deps).await {
                Ok(_) => panic!("started on {url}"),
                Err(e) => e.to_string(),
            }
        }
    };
    // Port 1: nothing listens there.
    let e = start("postgres://ben:secret@127.0.0.1:1/ledger").await;
    assert!(
        e.contains("postgres://ben:***@127.0.0.1:1/ledger") && !e.contains("secret"),
        "{e}"
    );
    let e = start("mysql://ben@127.0.0.1/ledger").await;
    assert!(e.contains("unsupported scheme"), "{e}");
    let e = start("postgres://[bad").await;
    assert!(e.contains("not a valid URL"), "{e}");
}

/// Ledger processes starting together on one fresh PostgreSQL database
/// (a restart overlapping the old process, a second replica) both come up:
/// the migration race is retried, not fatal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledgers_opening_one_fresh_postgres_database_at_once_all_start() {
    let env = Env::on("race", Arc::new(SystemClock), Backend::postgres().await);
    let starts: Vec<_> = (0..4)
        .map(|_| tokio::spawn(ben_control::start(env.config(), env.deps())))
        .collect();
    let mut handles = Vec::new();
    for s in starts {
        handles.push(s.await.unwrap().unwrap());
    }
    for h in handles {
        let st = h.client().status(None).await.unwrap();
        assert!(st.database.starts_with("postgres://"), "{}", st.database);
        h.shutdown().await;
    }
}

on_both!(a_restart_after_activate_resumes_the_deploy_and_it_finalizes);
/// A required component that is gone when the ledger comes back is dropped
/// (it catches up when it returns) and the resumed deploy finalizes.
async fn a_restart_after_activate_resumes_the_deploy_and_it_finalizes(b: Backend) {
    let env = Env::on("resume", Arc::new(SystemClock), b);
    let h = env.start(env.config()).await;
    let c = h.client();
    let a = env.sim("spine-1", "spine", Behaviour::Healthy).await;
    let p = env.sim("proxy-1", "proxy", Behaviour::NoActiveAck).await;
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
    p.stop();
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
