//! `ben up` runs four CyberMesh validators: signed anomalies published on
//! `ai.anomalies.v1` are committed by all four (each announces every block
//! on `control.commits.v1`, signed as itself, with one state root per
//! height), and an anomaly no AI service signed is dead-lettered by each
//! with the reason, never committed.

mod common;
use ben_embedded::{Config, System};
use ben_mesh_consensus::{verify_certified, wire, CertError, Hash};
use ben_mesh_detect::wire::{AnomalyEvent, Endpoint, ANOMALIES_SUBJECT};
use ben_mesh_validator::bus::{
    CommitEvent, PolicyEvent, ReputationEvent, COMMITS_SUBJECT, POLICY_SUBJECT, REPUTATION_SUBJECT,
};
use ben_wire::{pb, Signer};
use prost::Message as _;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

fn anomaly(signer: &Signer, k: usize) -> Vec<u8> {
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    signer.seal_bytes(&AnomalyEvent {
        id: format!("scan-{k}"),
        class: "portscan".into(),
        confidence: 0.92,
        source: Some(Endpoint {
            // TEST-NET-2: not this machine's (its eth0 may sit in
            // TEST-NET-1), which the agent would rightly never block.
            ip: format!("198.51.100.{k}"),
            port: 0,
        }),
        window_end_us: now_us,
        ..Default::default()
    })
}

/// The next block announcement on `control.commits.v1` within a second.
async fn next_commit(commits: &mut ben_bus::Subscription) -> Option<CommitEvent> {
    let m = tokio::time::timeout(Duration::from_secs(1), commits.next())
        .await
        .ok()??;
    let env = pb::SignedEnvelope::decode(&m.payload[..]).expect("an envelope");
    assert_eq!(env.kind, "commit");
    Some(CommitEvent::decode(&env.payload[..]).expect("a commit"))
}

/// Reads block announcements until all four validators have committed
/// every id of `want`, each announcement shown to `each` first, within
/// 30 s of `since`; `seen` gathers what each validator committed.
async fn until_all_commit(
    commits: &mut ben_bus::Subscription,
    want: &BTreeSet<String>,
    since: Instant,
    seen: &mut BTreeMap<String, BTreeSet<String>>,
    mut each: impl FnMut(&CommitEvent),
) {
    while seen.len() < 4 || seen.values().any(|s| !s.is_superset(want)) {
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "not every validator committed these {} anomalies in 30 s: {seen:?}",
            want.len()
        );
        let Some(ev) = next_commit(commits).await else {
            continue;
        };
        each(&ev);
        seen.entry(ev.validator).or_default().extend(ev.anomalies);
    }
}

/// A data directory named after `name`, emptied.
fn fresh_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ben-validators-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::env::set_var("BEN_BLOT_KEY", "validators test key 0123456789abcdef");
    dir
}

/// `ben up` on `dir`, trusting `ai` as the AI service `mesh-9`.
async fn start(dir: &std::path::Path, ai: &Signer) -> System {
    System::start(Config {
        data_dir: dir.to_path_buf(),
        api_addr: "127.0.0.1:0".parse().unwrap(),
        trust: vec![("mesh-9".into(), ai.public())],
        ..Config::default()
    })
    .await
    .expect("ben up starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validators_in_ben_up_commit_signed_anomalies_and_refuse_forged_ones() {
    let dir = fresh_dir("up");
    let ai = Signer::from_secret([77; 32]);
    let sys = start(&dir, &ai).await;
    let mut commits = sys.bus.subscribe(COMMITS_SUBJECT, None).await.unwrap();
    let mut dlq = sys.bus.subscribe("ai.dlq.v1", None).await.unwrap();
    let mut policies = sys.bus.subscribe(POLICY_SUBJECT, None).await.unwrap();
    let mut reputation = sys.bus.subscribe(REPUTATION_SUBJECT, None).await.unwrap();
    let mut acks = sys
        .bus
        .subscribe(ben_mesh_wire::ACK_SUBJECT, None)
        .await
        .unwrap();
    // The validators subscribe as they start; give them a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let want: BTreeSet<String> = (0..20).map(|k| format!("scan-{k}")).collect();
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut roots: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    let t = Instant::now();
    // In two halves, the second once the first is committed: a validator
    // takes everything queued into one block, and the second half's block
    // carries a certificate with votes (the reputation checked below).
    for half in [0..10, 10..20] {
        let last = half.end;
        for k in half {
            sys.bus
                .publish(ANOMALIES_SUBJECT, anomaly(&ai, k))
                .await
                .unwrap();
        }
        if last == 20 {
            let forger = Signer::from_secret([78; 32]);
            sys.bus
                .publish(ANOMALIES_SUBJECT, anomaly(&forger, 99))
                .await
                .unwrap();
        }
        let upto: BTreeSet<String> = (0..last).map(|k| format!("scan-{k}")).collect();
        until_all_commit(&mut commits, &upto, t, &mut seen, |ev| {
            assert!(ev.validator.starts_with("validator-"), "{ev:?}");
            assert_eq!(ev.refused, 0, "{ev:?}");
            roots
                .entry(ev.height)
                .or_default()
                .insert(ev.state_root.clone());
        })
        .await;
    }
    assert!(seen.values().all(|s| *s == want), "{seen:?}");
    let committed_in = t.elapsed();
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        ["validator-1", "validator-2", "validator-3", "validator-4"]
    );
    for (h, r) in &roots {
        assert_eq!(
            r.len(),
            1,
            "validators disagree on the state root at height {h}: {r:?}"
        );
    }
    // The forged one: dead-lettered by each validator, with the reason.
    let mut refused = BTreeSet::new();
    let t = Instant::now();
    while refused.len() < 4 && t.elapsed() < Duration::from_secs(10) {
        let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(1), dlq.next()).await else {
            continue;
        };
        let env = pb::SignedEnvelope::decode(&m.payload[..]).unwrap();
        let dl = pb::DeadLetter::decode(&env.payload[..]).unwrap();
        if dl.subject == ANOMALIES_SUBJECT {
            assert!(dl.reason.starts_with("anomaly refused"), "{dl:?}");
            refused.insert(dl.sender);
        }
    }
    assert_eq!(
        refused.len(),
        4,
        "each validator dead-letters the forged anomaly: {refused:?}"
    );
    // Each anomaly (confidence 0.92) blocks its source: the policy comes
    // with its block and QC, and checks out with the validator set's
    // public keys alone; a QC with one signature changed does not.
    let secrets = std::fs::read(dir.join("validators/keys")).expect("the set's keys");
    let set: Vec<_> = secrets
        .chunks(32)
        .map(|c| ed25519_dalek::SigningKey::from_bytes(c.try_into().unwrap()).verifying_key())
        .collect();
    let mut targets = BTreeSet::new();
    let t = Instant::now();
    while targets.len() < 20 && t.elapsed() < Duration::from_secs(10) {
        let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(1), policies.next()).await
        else {
            continue;
        };
        let env = pb::SignedEnvelope::decode(&m.payload[..]).unwrap();
        assert_eq!(env.kind, "policy");
        let p = PolicyEvent::decode(&env.payload[..]).unwrap();
        let block = wire::decode_block(&p.block).unwrap();
        let mut qc = wire::decode_qc(&p.qc).unwrap();
        let chain = Hash(
            (0..32)
                .map(|i| u8::from_str_radix(&p.chain[2 * i..2 * i + 2], 16).unwrap())
                .collect::<Vec<_>>()
                .try_into()
                .unwrap(),
        );
        assert_eq!(verify_certified(&block, &qc, &chain, &set), Ok(()), "{p:?}");
        assert_eq!(p.height, block.height);
        assert!(!p.policies.is_empty(), "a policy message without policies");
        qc.votes[0].1[0] ^= 1;
        assert_eq!(
            verify_certified(&block, &qc, &chain, &set),
            Err(CertError::BadSignature)
        );
        for pol in p.policies {
            assert_eq!(pol.action, "drop");
            targets.insert(pol.target);
        }
    }
    // Reputation: every validator announces the same table for a height;
    // the proposers of committed blocks and the voters of their QCs count.
    type Table = Vec<(u32, u64, u64)>;
    let mut tables: BTreeMap<u64, BTreeSet<Table>> = BTreeMap::new();
    while let Ok(Some(m)) =
        tokio::time::timeout(Duration::from_millis(500), reputation.next()).await
    {
        let env = pb::SignedEnvelope::decode(&m.payload[..]).unwrap();
        assert_eq!(env.kind, "reputation");
        let r = ReputationEvent::decode(&env.payload[..]).unwrap();
        let table = r
            .validators
            .iter()
            .map(|v| (v.index, v.proposed, v.voted))
            .collect();
        tables.entry(r.height).or_default().insert(table);
    }
    assert!(!tables.is_empty(), "no reputation announced");
    for (h, t) in &tables {
        assert_eq!(
            t.len(),
            1,
            "validators disagree on reputation at height {h}: {t:?}"
        );
        let votes: u64 = t.iter().next().unwrap().iter().map(|v| v.2).sum();
        assert!(votes >= 3 * (h - 1), "height {h}: {votes} votes counted");
    }
    let want_targets: BTreeSet<String> = (0..20).map(|k| format!("198.51.100.{k}")).collect();
    assert_eq!(
        targets, want_targets,
        "a checked policy for every anomaly's source"
    );
    println!(
        "4 validators in ben up: 20 anomalies committed by each in {:.2} s, {} heights, the forged one dead-lettered by each, 20 policies checked against the set's keys",
        committed_in.as_secs_f64(),
        roots.len()
    );
    // The enforcement agent (a dry run here) checked each policy itself
    // and acks each source once, though four validators announce it.
    let mut applied = BTreeMap::new();
    let t = Instant::now();
    while applied.len() < 20 && t.elapsed() < Duration::from_secs(10) {
        let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(1), acks.next()).await else {
            continue;
        };
        let env = pb::SignedEnvelope::decode(&m.payload[..]).unwrap();
        assert_eq!(env.kind, "policy_ack");
        let a = ben_mesh_wire::PolicyAck::decode(&env.payload[..]).unwrap();
        assert_eq!(
            (a.status.as_str(), a.backend.as_str()),
            ("applied", "dry-run"),
            "{a:?}"
        );
        *applied.entry(a.target).or_insert(0) += 1;
    }
    assert_eq!(
        applied.keys().cloned().collect::<BTreeSet<_>>(),
        want_targets
    );
    assert!(
        applied.values().all(|n| *n == 1),
        "acked more than once: {applied:?}"
    );
    // What `benctl mesh enforcement` shows: every source, since and until
    // when, and why.
    let body = common::http_get(&sys, "/api/v1/mesh/enforcement").await;
    let j: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(j["backend"], "dry-run", "{body}");
    let entries = j["entries"].as_array().unwrap();
    let shown: BTreeSet<String> = entries
        .iter()
        .map(|e| e["target"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(shown, want_targets);
    for e in entries {
        assert!(e["expires_at_ms"].as_u64() > e["since_ms"].as_u64(), "{e}");
        assert!(e["height"].as_u64().unwrap() >= 1, "{e}");
        assert_eq!(e["anomalies"].as_array().map(Vec::len), Some(1), "{e}");
    }
    // What `benctl mesh validators | blocks | anomaly ID` show: every
    // validator at the top (or close), the newest blocks announced by
    // all four, and an anomaly with its block and policy.
    let get = |path: &'static str| {
        let sys = &sys;
        async move {
            let body = common::http_get(sys, path).await;
            serde_json::from_str::<serde_json::Value>(&body)
                .unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
        }
    };
    let v = get("/api/v1/mesh/validators").await;
    let vals = v["validators"].as_array().unwrap();
    assert_eq!(vals.len(), 4, "{v}");
    let top = vals
        .iter()
        .filter_map(|x| x["height"].as_u64())
        .max()
        .unwrap();
    assert!(top >= 1, "{v}");
    for x in vals {
        assert_eq!(
            x["lag"].as_u64(),
            Some(top - x["height"].as_u64().unwrap()),
            "{x}"
        );
        assert!(
            x["round"].as_u64().unwrap() >= x["height"].as_u64().unwrap(),
            "{x}"
        );
    }
    assert!(
        vals.iter()
            .map(|x| x["voted"].as_u64().unwrap())
            .sum::<u64>()
            > 0,
        "{v}"
    );
    let b = get("/api/v1/mesh/blocks?limit=5").await;
    let blocks = b["blocks"].as_array().unwrap();
    assert!(!blocks.is_empty() && blocks.len() <= 5, "{b}");
    // The validators go on committing (an empty block closes the chain
    // behind the last anomalies), so the newest block may be past the
    // top read a moment before; the top itself is listed.
    assert!(blocks[0]["height"].as_u64() >= Some(top), "{b}");
    assert!(
        blocks.iter().any(|x| x["height"].as_u64() == Some(top)),
        "{b}"
    );
    assert_eq!(b["forks"], serde_json::json!([]), "{b}");
    let a = get("/api/v1/mesh/anomalies/scan-7").await;
    assert!(a["height"].as_u64().unwrap() >= 1, "{a}");
    assert_eq!(a["policies"][0]["target"], "198.51.100.7", "{a}");
    // These anomalies were signed by the test, not the AI service: its
    // feedback loop does not know them, and says so.
    assert!(
        a["lifecycle_error"]
            .as_str()
            .is_some_and(|e| e.contains("not among those this AI service published")),
        "{a}"
    );
    let missing = common::http_get(&sys, "/api/v1/mesh/anomalies/nope").await;
    assert!(missing.contains("is not among the last"), "{missing}");
    // `benctl mesh thresholds`: the AI service's threshold, unchanged
    // (nothing of its own was decided), and no change recorded.
    let t = get("/api/v1/mesh/thresholds").await;
    assert_eq!(t["threshold"].as_f64(), Some(0.70), "{t}");
    assert_eq!(t["changes"], serde_json::json!([]), "{t}");
    assert!(
        t["unknown"].as_u64().unwrap() >= 20,
        "commits of others' anomalies are counted: {t}"
    );
    let line = sys.status_line().await;
    assert!(
        line.contains("| blocked 20")
            && line.contains("| chain height ")
            && !line.contains("HALTED"),
        "{line}"
    );
    sys.shutdown().await;
    // Each validator wrote its blocks to its own SQLite file, every height
    // from 1, the 20 anomalies among them.
    use sqlx::Row;
    sqlx::any::install_default_drivers();
    for i in 1..=4 {
        let db = dir.join(format!("validators/validator-{i}/blocks.db"));
        let url = format!("sqlite://{}?mode=ro", db.display());
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        let (blocks, top): (i64, i64) =
            sqlx::query("SELECT COUNT(*), COALESCE(MAX(height), 0) FROM blocks")
                .fetch_one(&pool)
                .await
                .map(|r| (r.get(0), r.get(1)))
                .unwrap();
        let anomalies: i64 = sqlx::query("SELECT COUNT(*) FROM anomalies")
            .fetch_one(&pool)
            .await
            .unwrap()
            .get(0);
        assert!(
            blocks > 0 && blocks == top,
            "validator-{i}: {blocks} blocks up to {top}"
        );
        assert_eq!(anomalies, 20, "validator-{i}");
        pool.close().await;
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// `ben up` stopped and started again on the same data directory: the
/// validators resume their chain (same keys, their files) and go on from
/// the height they reached, committing new anomalies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_resume_their_chain_when_ben_up_restarts() {
    let dir = fresh_dir("restart");
    let ai = Signer::from_secret([79; 32]);
    let up = || start(&dir, &ai);
    // Commits of `ids` by all four; returns each validator's heights.
    async fn committed(
        sys: &System,
        ids: std::ops::Range<usize>,
        ai: &Signer,
    ) -> BTreeMap<String, BTreeSet<u64>> {
        let mut commits = sys.bus.subscribe(COMMITS_SUBJECT, None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        for k in ids.clone() {
            sys.bus
                .publish(ANOMALIES_SUBJECT, anomaly(ai, k))
                .await
                .unwrap();
        }
        let want: BTreeSet<String> = ids.map(|k| format!("scan-{k}")).collect();
        let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut heights: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        until_all_commit(&mut commits, &want, Instant::now(), &mut seen, |ev| {
            heights
                .entry(ev.validator.clone())
                .or_default()
                .insert(ev.height);
        })
        .await;
        heights
    }
    let top = |h: &BTreeMap<String, BTreeSet<u64>>| {
        h.values()
            .filter_map(|s| s.last().copied())
            .max()
            .unwrap_or(0)
    };
    let sys = up().await;
    let before = committed(&sys, 0..10, &ai).await;
    sys.shutdown().await;
    let sys = up().await;
    let after = committed(&sys, 10..20, &ai).await;
    // Each validator goes on from where it was (one that lagged at the
    // stop commits what the others had, once); none starts over, and
    // the chain grows past where it stood.
    for (v, hs) in &after {
        let last = before.get(v).and_then(|b| b.last().copied()).unwrap_or(0);
        assert!(
            hs.iter().all(|h| *h > last),
            "{v} announced heights {hs:?} after the restart, though it had reached {last}"
        );
    }
    let (first_top, after_top) = (top(&before), top(&after));
    assert!(after_top > first_top, "{first_top} then {after_top}");
    println!(
        "validators resumed: heights up to {first_top} before the restart, up to {after_top} after"
    );
    sys.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// An AI service's policy request in `ben up`: published before the
/// anomalies it rests on (they travel on two subjects), held by the
/// mempools until those commit, admitted by the four validators' state
/// machines, and enforced by the agent as the request says (here a dry
/// run: a rule per policy); a request resting on anomalies from outside
/// its target is refused in the block, a forged one dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_request_is_committed_checked_and_enforced_as_asked() {
    use ben_mesh_wire::{PolicyAck, PolicyRequest, ACK_SUBJECT, POLICY_REQUEST_SUBJECT};
    let dir = fresh_dir("req");
    let ai = Signer::from_secret([77; 32]);
    let sys = start(&dir, &ai).await;
    let mut commits = sys.bus.subscribe(COMMITS_SUBJECT, None).await.unwrap();
    let mut dlq = sys.bus.subscribe("ai.dlq.v1", None).await.unwrap();
    let mut acks = sys.bus.subscribe(ACK_SUBJECT, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let request = |id: &str, target: &str| PolicyRequest {
        service: "mesh-9".into(),
        id: id.into(),
        anomalies: vec!["scan-31".into(), "scan-32".into()],
        action: "drop".into(),
        target: target.into(),
        protocol: "tcp".into(),
        ports: "22".into(),
        ttl_ms: 600_000,
        requested_at_ms: now_ms,
        ..Default::default()
    };
    let publish = |subject: &'static str, bytes: Vec<u8>| {
        let bus = sys.bus.clone();
        async move { bus.publish(subject, bytes).await.unwrap() }
    };
    // The request first, then what it rests on.
    publish(
        POLICY_REQUEST_SUBJECT,
        ai.seal_bytes(&request("net-ssh", "198.51.100.0/24")),
    )
    .await;
    publish(
        POLICY_REQUEST_SUBJECT,
        ai.seal_bytes(&request("elsewhere", "203.0.113.0/24")),
    )
    .await;
    publish(
        POLICY_REQUEST_SUBJECT,
        Signer::from_secret([78; 32]).seal_bytes(&request("forged", "198.51.100.0/24")),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for k in [31, 32] {
        publish(ANOMALIES_SUBJECT, anomaly(&ai, k)).await;
    }
    // Committed by all four: the two anomalies, the request admitted, the
    // other refused.
    let mut refused = BTreeMap::new();
    let mut policies: BTreeMap<String, u32> = BTreeMap::new();
    let t = Instant::now();
    while policies.values().filter(|n| **n >= 3).count() < 4 || refused.len() < 4 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "commits: policies {policies:?}, refusals {refused:?}"
        );
        let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(1), commits.next()).await else {
            continue;
        };
        let env = pb::SignedEnvelope::decode(&m.payload[..]).unwrap();
        let ev = CommitEvent::decode(&env.payload[..]).unwrap();
        *policies.entry(ev.validator.clone()).or_insert(0) += ev.policies;
        if ev.refused > 0 {
            // Said as a refused request, with the reason; not taken for a
            // refused anomaly.
            assert!(ev.rejected.is_empty(), "{ev:?}");
            let r = &ev.rejected_requests;
            assert!(
                r.len() == 1
                    && r[0].id == "elsewhere"
                    && r[0].reason.contains("outside the target"),
                "{ev:?}"
            );
            *refused.entry(ev.validator).or_insert(0) += ev.refused;
        }
    }
    assert!(refused.values().all(|n| *n == 1), "{refused:?}");
    assert!(policies.values().all(|n| *n == 3), "{policies:?}");
    // The forged one: dead-lettered by each validator, with the reason.
    let mut forged = BTreeSet::new();
    let t = Instant::now();
    while forged.len() < 4 && t.elapsed() < Duration::from_secs(10) {
        let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(1), dlq.next()).await else {
            continue;
        };
        let env = pb::SignedEnvelope::decode(&m.payload[..]).unwrap();
        let dl = pb::DeadLetter::decode(&env.payload[..]).unwrap();
        if dl.subject == POLICY_REQUEST_SUBJECT {
            assert!(dl.reason.starts_with("policy request refused"), "{dl:?}");
            forged.insert(dl.sender);
        }
    }
    assert_eq!(forged.len(), 4, "{forged:?}");
    // The agent: both sources blocked whole (the anomalies' own policies)
    // and the network's port 22 as a rule.
    let mut applied = BTreeMap::new();
    let t = Instant::now();
    while applied.len() < 3 && t.elapsed() < Duration::from_secs(10) {
        let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(1), acks.next()).await else {
            continue;
        };
        let env = pb::SignedEnvelope::decode(&m.payload[..]).unwrap();
        let a = PolicyAck::decode(&env.payload[..]).unwrap();
        assert_eq!(a.status, "applied", "{a:?}");
        applied.insert(a.target.clone(), a.reason.clone());
    }
    assert_eq!(
        applied.get("198.51.100.0/24").map(String::as_str),
        Some("rule drop_in_tcp_22 (drop ingress tcp 22)"),
        "{applied:?}"
    );
    assert!(applied.contains_key("198.51.100.31") && applied.contains_key("198.51.100.32"));
    let body = common::http_get(&sys, "/api/v1/mesh/enforcement").await;
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rule = j["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["target"] == "198.51.100.0/24")
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(rule["rule"], "drop ingress tcp 22", "{rule}");
    assert_eq!(rule["anomalies"], serde_json::json!(["scan-31", "scan-32"]));
    let body = common::http_get(&sys, "/api/v1/mesh/anomalies/scan-31").await;
    let a: serde_json::Value = serde_json::from_str(&body).unwrap();
    let requested = a["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["request"] == "net-ssh")
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(requested["rule"], "drop ingress tcp 22", "{requested}");
    // The request is in each validator's tables as one (written by the
    // persistence worker behind the commits: waited for).
    use sqlx::Row;
    sqlx::any::install_default_drivers();
    for i in 1..=4 {
        let db = dir.join(format!("validators/validator-{i}/blocks.db"));
        let url = format!("sqlite://{}?mode=ro", db.display());
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        let want = ["anomaly", "anomaly", "policy_request", "refused"];
        let t = Instant::now();
        loop {
            let kinds: Vec<String> = sqlx::query("SELECT type FROM transactions ORDER BY type")
                .fetch_all(&pool)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            if kinds == want {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "validator-{i}: {kinds:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        pool.close().await;
    }
    sys.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
