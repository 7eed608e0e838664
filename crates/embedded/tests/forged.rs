//! The forged-message suite (DESIGN.md §4, invariant 8) over the real
//! bus: `ben up` with every component, on the in-process bus and on the
//! machine's NATS under a prefix of its own. The system trusts one extra
//! key per role (`spine-9`, `mesh-9`, … and a second `control` key), as a
//! compromised component of that role would hold. Every message kind
//! signed by every role that may not sign it is published on the kind's
//! subject: each must come back as a dead letter, signed by the component
//! that refused it, naming the reason — and nothing it carried may take
//! effect (no prepare or activation, no registration, no signal delivered
//! to the app, no dead letter counted as genuine). Messages in another
//! component's name, signed by the right role, are refused the same way.
//! Control cases signed by the right key show each path does act.

use ben_bee::Selector;
use ben_client::Client;
use ben_embedded::{Config, System};
use ben_wire::{pb, Kind, Role, Signer, LEDGER_ID};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

fn shop() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop")
}

/// The id of the outside key of `role` the system trusts.
fn outsider(role: Role) -> String {
    match role {
        Role::Ledger => LEDGER_ID.to_string(),
        r => format!("{}-9", r.name()),
    }
}

fn key_of(role: Role) -> Signer {
    Signer::from_secret([40 + role as u8; 32])
}

async fn system(name: &str, nats: Option<ben_embedded::NatsConfig>) -> System {
    let dir = std::env::temp_dir().join(format!("ben-forged-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::env::set_var("BEN_BLOT_KEY", "forged test key 0123456789abcdef");
    System::start(Config {
        data_dir: dir,
        api_addr: "127.0.0.1:0".parse().unwrap(),
        extra_selectors: vec![Selector {
            app: "shop_web".into(),
            uid: Some(ben_bee::own_uid().unwrap()),
            exe: Some(std::env::current_exe().unwrap().display().to_string()),
            ..Selector::default()
        }],
        nats,
        trust: Role::ALL
            .into_iter()
            .map(|r| (outsider(r), key_of(r).public()))
            .collect(),
        ..Config::default()
    })
    .await
    .expect("ben up starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_messages_are_refused_on_the_in_process_bus() {
    forged(system("inproc", None).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_messages_are_refused_over_nats() {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let nats = ben_embedded::NatsConfig {
        url: "nats://127.0.0.1:4222".into(),
        prefix: Some(format!("benforged{}x{t}", std::process::id())),
    };
    forged(system("nats", Some(nats)).await).await;
}

/// One forged message: where it goes, its bytes, and the dead-letter
/// reason it must come back with.
struct Forged {
    subject: String,
    bytes: Vec<u8>,
    reason: String,
}

/// `msg` sealed by the outside key of `role`, whose id it already names
/// where the kind names a sender: only the role can make it fail.
fn by_role<T: Kind>(role: Role, subject: &str, msg: &T) -> Forged {
    Forged {
        subject: subject.to_string(),
        bytes: key_of(role).seal_bytes(msg),
        reason: format!(
            "`{}` (role {role}) may not sign `{}` messages",
            outsider(role),
            T::KIND
        ),
    }
}

/// `msg` sealed by the outside key of `role`, naming `claimed` as sender.
fn in_name_of<T: Kind>(role: Role, subject: &str, msg: &T, claimed: &str) -> Forged {
    Forged {
        subject: subject.to_string(),
        bytes: key_of(role).seal_bytes(msg),
        reason: format!(
            "`{}` names `{claimed}` as its sender but is signed by `{}`",
            T::KIND,
            outsider(role)
        ),
    }
}

const FORGED_VERSION: &str = "forged-v";

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

async fn forged(sys: System) {
    let bus = sys.bus.clone();
    let version = sys.deploy_dir(&shop()).await.expect("deploy finalizes");
    let mut app = Client::connect(sys.cfg.socket_path(), "shop_web")
        .await
        .expect("attested");
    let bee_subject = app.welcome().await.bee_subject;
    let mut dlq = bus.subscribe("ben.dlq", None).await.unwrap();
    let mut acks = bus.subscribe("ben.intent.ack", None).await.unwrap();
    let keyring_probe = {
        // Our outside keys: what they signed on the DLQ is a forgery of
        // ours, not a dead letter the system wrote.
        let mut k = ben_wire::Keyring::new();
        for r in Role::ALL {
            k.trust(&outsider(r), r, key_of(r).public());
        }
        k
    };
    let everyone: Vec<String> = sys.stats.loads.keys().cloned().collect();

    // Control case: the right key acts — a detector's signal reaches the
    // app (the deploy above is the intent plane's).
    let signal = |sender: &str, name: &str| pb::Signal {
        id: format!("{name}-1"),
        name: name.into(),
        app: "shop_web".into(),
        sender: sender.into(),
        ..Default::default()
    };
    let good = key_of(Role::Detector).seal_bytes(&signal("detector-9", "genuine"));
    // Sent until it arrives: the sidecar lists the app for signals just
    // after it welcomed it.
    let mut got = None;
    for _ in 0..50 {
        bus.publish("ben.signal.shop_web", good.clone())
            .await
            .unwrap();
        if let Ok(s) = tokio::time::timeout(Duration::from_millis(100), app.signals.recv()).await {
            got = s;
            break;
        }
    }
    assert_eq!(got.expect("a genuine signal arrives").name, "genuine");
    while let Ok(Some(_)) =
        tokio::time::timeout(Duration::from_millis(200), app.signals.recv()).await
    {}
    let delivered = sys
        .stats
        .shared
        .sidecar
        .signals_delivered
        .load(Ordering::Relaxed);
    let unverified_before = sys.stats.unverified_dead_letters.load(Ordering::Relaxed);
    let st = sys.control.client().status(None).await.unwrap();
    let stale_before = st.counters.stale_acks;

    let mut forged = Vec::new();
    for role in Role::ALL {
        let id = outsider(role);
        // The intent plane: announce, activate, abort.
        let ann = pb::Announce {
            version: FORGED_VERSION.into(),
            required: everyone.clone(),
            ..Default::default()
        };
        let act = pb::Activate {
            version: FORGED_VERSION.into(),
            required: everyone.clone(),
        };
        let abort = pb::Abort {
            version: version.clone(),
            reason: "forged".into(),
        };
        let ack = pb::Ack {
            component: id.clone(),
            version: FORGED_VERSION.into(),
            phase: pb::ack::Phase::Prepared as i32,
            ..Default::default()
        };
        let hb = pb::Heartbeat {
            component: id.clone(),
            role: role.name().into(),
            seq: 1,
            at_ns: now_ns(),
            ..Default::default()
        };
        let dl = pb::DeadLetter {
            subject: "ben.data.spine".into(),
            reason: format!("forged dead letter by {id}"),
            sender: id.clone(),
            ..Default::default()
        };
        let revocations = pb::BeeRevocations {
            subjects: vec![bee_subject.clone()],
            at_ns: now_ns(),
        };
        let roster = pb::BeeRoster {
            sidecar: id.clone(),
            at_ns: now_ns(),
            bees: vec![pb::IssuedBee {
                subject: "forged/0/x".into(),
                app: "forged".into(),
                ..Default::default()
            }],
        };
        let cases: Vec<(&str, Forged)> = vec![
            (
                "bee_revocations",
                by_role(role, "ben.bee.revoked", &revocations),
            ),
            ("bee_roster", by_role(role, "ben.bee.roster", &roster)),
            ("announce", by_role(role, "ben.intent.announce", &ann)),
            ("activate", by_role(role, "ben.intent.activate", &act)),
            ("abort", by_role(role, "ben.intent.abort", &abort)),
            ("ack", by_role(role, "ben.intent.ack", &ack)),
            ("heartbeat", by_role(role, "ben.health.heartbeat", &hb)),
            (
                "signal",
                by_role(
                    role,
                    "ben.signal.shop_web",
                    &signal(&id, &format!("forged-{role}")),
                ),
            ),
            ("dead_letter", by_role(role, "ben.dlq", &dl)),
            // Flows decide which addresses the mesh names and blocks:
            // only a sensor's key.
            (
                "flows",
                by_role(
                    role,
                    ben_mesh_wire::FLOWS_SUBJECT,
                    &ben_mesh_wire::FlowBatch {
                        sensor: id.clone(),
                        seq: 1,
                        rows: vec![b"forged".to_vec()],
                        incarnation: 1,
                    },
                ),
            ),
        ];
        for (kind, f) in cases {
            if !role.may_sign(kind) {
                forged.push(f);
            }
        }
        // Every role may write dead letters — only in its own name.
        let other = if role == Role::Spine {
            "proxy-1"
        } else {
            "spine-1"
        };
        let in_other_name = pb::DeadLetter {
            sender: other.into(),
            ..dl.clone()
        };
        forged.push(in_name_of(role, "ben.dlq", &in_other_name, other));
    }
    // The right roles in another component's name.
    let as_spine1 = pb::Ack {
        component: "spine-1".into(),
        version: FORGED_VERSION.into(),
        phase: pb::ack::Phase::Prepared as i32,
        ..Default::default()
    };
    forged.push(in_name_of(
        Role::Spine,
        "ben.intent.ack",
        &as_spine1,
        "spine-1",
    ));
    let hb_as_spine1 = pb::Heartbeat {
        component: "spine-1".into(),
        role: "spine".into(),
        seq: u64::MAX,
        at_ns: i64::MAX,
        ..Default::default()
    };
    forged.push(in_name_of(
        Role::Spine,
        "ben.health.heartbeat",
        &hb_as_spine1,
        "spine-1",
    ));
    let roster_as_sidecar1 = pb::BeeRoster {
        sidecar: "sidecar-1".into(),
        at_ns: now_ns(),
        bees: vec![],
    };
    forged.push(in_name_of(
        Role::Sidecar,
        "ben.bee.roster",
        &roster_as_sidecar1,
        "sidecar-1",
    ));
    forged.push(in_name_of(
        Role::Detector,
        "ben.signal.shop_web",
        &signal("detector-1", "forged-as-detector-1"),
        "detector-1",
    ));
    forged.push(in_name_of(
        Role::Sensor,
        ben_mesh_wire::FLOWS_SUBJECT,
        &ben_mesh_wire::FlowBatch {
            sensor: "sensor-1".into(),
            seq: 1,
            rows: vec![b"forged".to_vec()],
            incarnation: 1,
        },
        "sensor-1",
    ));
    // What the table forbids, counted: the ledger's 4 kinds × 9 other
    // roles, ack and heartbeat × 5 roles each, signal and bee_roster × 9,
    // flows × 9, plus 10 + 5 in another's name.
    assert_eq!(
        forged.len(),
        36 + 10 + 18 + 9 + 10 + 5,
        "the suite covers the table"
    );

    for f in &forged {
        bus.publish(&f.subject, f.bytes.clone()).await.unwrap();
    }

    // (a) Each comes back as a dead letter with its reason, signed by
    // whoever refused it.
    let mut waiting: BTreeSet<String> = forged.iter().map(|f| f.reason.clone()).collect();
    let mut writers = BTreeSet::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    while !waiting.is_empty() {
        let m = match tokio::time::timeout_at(until, dlq.next()).await {
            Ok(Some(m)) => m,
            _ => panic!("no dead letter for: {waiting:#?}"),
        };
        // Written by a component of the system (not one of our keys); the
        // system's own readers verify it (see `keep_dead_letters`).
        let env = <pb::SignedEnvelope as prost::Message>::decode(m.payload.as_slice()).unwrap();
        let Ok(dl) = <pb::DeadLetter as prost::Message>::decode(env.payload.as_slice()) else {
            continue;
        };
        if keyring_probe.identity(&env.key_id).is_some() {
            continue; // one of the forged ones itself
        }
        let hit: Vec<String> = waiting
            .iter()
            .filter(|r| dl.reason.contains(r.as_str()))
            .cloned()
            .collect();
        for r in hit {
            waiting.remove(&r);
            writers.insert(dl.sender.clone());
        }
    }
    // The ledger refused acks, heartbeats and dead letters; the sidecar
    // signals (and, with the other intent agents, the intent plane).
    for w in ["control", "sidecar-1"] {
        assert!(writers.contains(w), "{w} wrote none of them: {writers:?}");
    }

    // (b) Nothing they carried took effect.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(50), acks.next()).await {
        let env = <pb::SignedEnvelope as prost::Message>::decode(m.payload.as_slice()).unwrap();
        if keyring_probe.identity(&env.key_id).is_some() {
            continue; // our own forged acks
        }
        let ack = <pb::Ack as prost::Message>::decode(env.payload.as_slice()).unwrap();
        assert_ne!(
            ack.version, FORGED_VERSION,
            "{} prepared or activated a forged version",
            ack.component
        );
    }
    let st = sys.control.client().status(None).await.unwrap();
    assert_eq!(st.active.as_deref(), Some(version.as_str()), "still active");
    assert_eq!(
        st.counters.stale_acks, stale_before,
        "no forged ack was applied"
    );
    for r in Role::ALL {
        let id = outsider(r);
        assert!(
            st.components.iter().all(|c| c.id != id),
            "{id} registered by a forged heartbeat"
        );
    }
    assert!(
        sys.health
            .lock()
            .unwrap()
            .alive(now_ns())
            .iter()
            .all(|b| !b.component.ends_with("-9") && b.component != LEDGER_ID),
        "no forged heartbeat reached the health core"
    );
    assert!(
        app.signals.try_recv().is_err(),
        "no forged signal reached the app"
    );
    // No forged revocation closed the app's connection.
    let accepted = app
        .send(&[serde_json::json!({
            "timestamp": "2026-01-01T10:00:00Z", "verb": "get", "url": "/", "code": "200",
            "size": 1, "remote_addr": "198.51.100.7",
            "customer": {"email": "a@example.com", "card": "4111 1111 1111 1111"},
            "comment": ""
        })])
        .await
        .expect("the app is still connected");
    assert_eq!(accepted.accepted, 1, "{accepted:?}");
    assert_eq!(
        sys.stats
            .shared
            .sidecar
            .signals_delivered
            .load(Ordering::Relaxed),
        delivered
    );
    // Forged dead letters were counted apart, and none reads as genuine.
    let forged_dead_letters = forged.iter().filter(|f| f.subject == "ben.dlq").count() as u64;
    assert!(
        sys.stats.unverified_dead_letters.load(Ordering::Relaxed) - unverified_before
            >= forged_dead_letters
    );
    let kept = sys.stats.first_dead_letters.lock().unwrap().clone();
    assert!(
        kept.iter()
            .all(|l| !l.starts_with("from spine-1 on ben.data")
                && !l.contains(": forged dead letter by")),
        "{kept:#?}"
    );
    sys.shutdown().await;
}
