//! `ben up` end to end, in one process, over the real Unix socket: an app
//! (this test binary, attested by the kernel's view of it) sends records;
//! flags, redaction, routing, Lucius, signals, activation, attestation and
//! bad input are checked against what the example bundle declares.

mod common;
use ben_bee::Selector;
use ben_client::{Client, ClientError};
use ben_embedded::{Config, System};
use ben_wire::pb;
use common::http_get;
use prost::Message;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

fn shop() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop")
}

fn me() -> Selector {
    Selector::this_process("shop_web").unwrap()
}

async fn system(name: &str, ttl_ns: i64) -> System {
    system_on(name, ttl_ns, None).await
}

/// The tests' sensor: `ben up` trusts it as `sensor-e2e` (flows are taken
/// only from sensors' keys).
fn sensor() -> ben_wire::Signer {
    ben_wire::Signer::from_secret([9; 32])
}

async fn system_on(name: &str, ttl_ns: i64, nats: Option<ben_embedded::NatsConfig>) -> System {
    let dir = std::env::temp_dir().join(format!("ben-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::env::set_var("BEN_BLOT_KEY", "e2e test key 0123456789abcdef");
    System::start(Config {
        data_dir: dir,
        api_addr: "127.0.0.1:0".parse().unwrap(),
        extra_selectors: vec![me()],
        bee_ttl_ns: ttl_ns,
        nats,
        mesh_every: Duration::from_millis(300),
        trust: vec![("sensor-e2e".into(), sensor().public())],
        ..Config::default()
    })
    .await
    .expect("ben up starts")
}

fn rec(i: usize, url: &str, code: u16, ip: &str, email: &str) -> serde_json::Value {
    json!({
        "timestamp": "2026-01-01T10:00:00Z", "verb": if code == 401 { "post" } else { "get" },
        "url": url, "code": code.to_string(), "size": 100 + i, "remote_addr": ip,
        "customer": {"email": email, "card": "4111 1111 1111 1111"},
        "comment": format!("call me at +1 415 555 {:04} or write {email}", i % 10000)
    })
}

/// Waits until `f` holds (records flow asynchronously).
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_flow_flags_redaction_lucius_and_signals() {
    flow(system("flow", ben_bee::DEFAULT_TTL_NS).await).await;
}

/// The same end-to-end test with every message crossing the machine's real
/// NATS server, under a subject prefix unique to this run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_flow_over_nats() {
    let t = ben_time::now_ns();
    let nats = ben_embedded::NatsConfig {
        url: "nats://127.0.0.1:4222".into(),
        prefix: Some(format!("bentest{}x{t}", std::process::id())),
    };
    flow(system_on("flow-nats", ben_bee::DEFAULT_TTL_NS, Some(nats)).await).await;
}

async fn flow(sys: System) {
    let version = sys.deploy_dir(&shop()).await.expect("deploy finalizes");
    // Everything the spines emit, to check flags and redaction downstream.
    let mut downstream = ben_bus::Bus::subscribe(sys.bus.as_ref(), "ben.data.detector.*", None)
        .await
        .unwrap();

    let mut app = Client::connect(sys.cfg.socket_path(), "shop_web")
        .await
        .expect("attested");
    let w = app.welcome().await;
    assert!(w.bee_subject.starts_with("shop_web/"), "{}", w.bee_subject);
    assert_eq!(w.intent_version, version);

    // 40 page views (→ Lucius), 10 server errors from 10.x (→ spine,
    // server_error + internal), 7 failed admin logins from one IP within
    // seconds (→ spine, admin_path + login_failed; brute force), 3 records
    // failing the contract.
    let mut batch = Vec::new();
    for i in 0..40 {
        batch.push(rec(
            i,
            "/products/1",
            200,
            "198.51.100.7",
            &format!("user{i}@example.com"),
        ));
    }
    for i in 0..10 {
        batch.push(rec(i, "/checkout", 503, "10.1.2.3", "carol@example.com"));
    }
    for i in 0..7 {
        batch.push(rec(
            i,
            "/admin/login",
            401,
            "203.0.113.9",
            "mallory@example.com",
        ));
    }
    batch.push(json!({"verb": "get", "url": "/", "code": "200", "remote_addr": "1.2.3.4", "customer": {"email": "a@b.c"}}));
    batch.push(json!({"timestamp": "2026-01-01T10:00:00Z", "verb": "get", "url": "/", "code": "200", "remote_addr": "not-an-ip", "customer": {"email": "a@b.c"}}));
    batch.push(json!(["not", "an", "object"]));
    let acc = app.send(&batch).await.unwrap();
    assert_eq!(acc.accepted, 57);
    let errs: Vec<(u64, String)> = acc
        .errors
        .iter()
        .map(|e| (e.index, e.reason.clone()))
        .collect();
    assert_eq!(errs.len(), 3);
    assert_eq!(
        errs[0],
        (57, "field `ts`: required, but missing or null".into())
    );
    assert_eq!(
        errs[1],
        (58, "field `client.ip`: expected an IP address".into())
    );
    assert!(errs[2].1.contains("expected a JSON object"), "{errs:?}");

    // The brute-force signal reaches the app once for the window.
    let sig = tokio::time::timeout(Duration::from_secs(5), app.signals.recv())
        .await
        .expect("a signal arrives")
        .unwrap();
    assert_eq!(sig.name, "auth.bruteforce");
    assert_eq!(sig.severity, "high");
    assert_eq!(sig.key, vec!["203.0.113.9".to_string()]);
    assert_eq!(sig.app, "shop_web");
    assert_eq!(sig.intent_version, version);

    // Downstream: 17 spine records with exact flags, all redacted.
    let mut flags: std::collections::BTreeMap<String, usize> = Default::default();
    let mut out = Vec::new();
    while out.len() < 17 {
        let m = tokio::time::timeout(Duration::from_secs(5), downstream.next())
            .await
            .expect("spine output")
            .unwrap();
        out.extend(
            pb::RecordBatch::decode(m.payload.as_slice())
                .unwrap()
                .records,
        );
    }
    assert_eq!(out.len(), 17, "exactly the 17 spine-routed records");
    for r in out {
        assert_eq!(r.intent_version, version);
        assert!(r.values.is_empty(), "raw field values left a spine");
        let body = String::from_utf8_lossy(&r.body).to_string();
        for pii in [
            "carol@example.com",
            "mallory@example.com",
            "4111 1111 1111 1111",
            "415 555",
        ] {
            assert!(!body.contains(pii), "PII {pii} downstream: {body}");
        }
        for f in r.flags {
            *flags.entry(f).or_default() += 1;
        }
    }
    assert_eq!(flags.get("server_error"), Some(&10));
    assert_eq!(flags.get("internal"), Some(&10));
    assert_eq!(flags.get("admin_path"), Some(&7));
    assert_eq!(flags.get("login_failed"), Some(&7));
    assert_eq!(flags.len(), 4);

    // Lucius holds the 40 page views, redacted.
    let lucius = sys
        .stats
        .shared
        .lucius
        .get()
        .cloned()
        .expect("a Lucius runs");
    eventually("40 records in Lucius", || lucius.count() == 40).await;
    let rows = lucius
        .query(&ben_lucius::Query {
            limit: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 40);
    assert!(rows
        .iter()
        .all(|r| r.intent == version && r.flags.is_empty()));
    let text = serde_json::to_string(&rows).unwrap();
    assert!(!text.contains("@example.com"), "raw email in Lucius");
    assert!(!text.contains("4111 1111 1111 1111"), "raw card in Lucius");
    // The same through the HTTP API (what `benctl lucius query` calls).
    let body = http_get(&sys, "/api/v1/lucius?schema=http.request%40v2&limit=5").await;
    let j: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(j["records"].as_array().map(Vec::len), Some(5), "{body}");
    assert_eq!(j["count"], 40);
    let body = http_get(&sys, "/api/v1/lucius?flag=server_error").await;
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        j["records"].as_array().map(Vec::len),
        Some(0),
        "server errors go to spines, not Lucius"
    );
    let body = http_get(&sys, "/api/v1/lucius?bogus=1").await;
    assert!(body.contains("unknown query parameter"), "{body}");
    // No second signal: the burst is one window.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(app.signals.try_recv().is_err(), "one signal per window");
    assert_eq!(sys.stats.shared.detector.signals.load(Ordering::Relaxed), 1);
    // The orchestrator sees all six components healthy (heartbeats come
    // every second; give a loaded machine a few).
    let now = ben_time::now_ns;
    let health = sys.health.clone();
    for _ in 0..50 {
        if health.lock().unwrap().alive(now()).len() == 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    {
        let h = health.lock().unwrap();
        assert_eq!(
            h.alive(now()).len(),
            6,
            "alive {:?}, rejected {:?}",
            h.alive(now())
                .iter()
                .map(|b| &b.component)
                .collect::<Vec<_>>(),
            h.rejected
        );
    }
    assert!(sys.status_line().await.contains("healthy 6"));
    // The same counters for Prometheus (GET /metrics, behind the token).
    let text = http_get(&sys, "/metrics").await;
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text");
    let value = |name: &str, (k, v): (&str, &str)| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get(k) == Some(v))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(x) | prometheus_parse::Value::Gauge(x) => x,
                _ => f64::NAN,
            })
    };
    assert_eq!(
        value("ben_signals_emitted_total", ("role", "detector")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value("ben_records_accepted_total", ("role", "sidecar")),
        Some(sys.stats.totals().accepted as f64),
        "{text}"
    );
    let spines: f64 = scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == "ben_records_processed_total" && s.labels.get("role") == Some("spine")
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(x) => x,
            _ => f64::NAN,
        })
        .sum();
    assert_eq!(spines, 17.0, "{text}");
    assert_eq!(
        value("ben_records_processed_total", ("role", "sidecar")),
        Some(57.0),
        "{text}"
    );
    sys.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attestation_refusals() {
    let sys = system("attest", 2_000_000_000).await;
    sys.deploy_dir(&shop()).await.unwrap();
    // An app name with no selector matching this executable.
    match Client::connect(sys.cfg.socket_path(), "billing").await {
        Err(ClientError::Refused(r)) => assert!(r.contains("no app selector matches"), "{r}"),
        other => panic!("expected refusal, got {:?}", other.err()),
    }
    // A BEE issued to another process is refused on this connection.
    let mut app = Client::connect(sys.cfg.socket_path(), "shop_web")
        .await
        .unwrap();
    let foreign = {
        let mut g = sys.beekeeper.lock().unwrap();
        let k = g.as_mut().unwrap();
        k.set_selectors(vec![Selector {
            app: "shop_web".into(),
            ..Selector::default()
        }]);
        let facts = ben_bee::PeerFacts {
            pid: 1,
            uid: 0,
            gid: 0,
            exe: "/sbin/init".into(),
            exe_blake3: "00".repeat(32),
            start_time: 1,
        };
        let now = ben_time::now_ns();
        k.attest(&facts, now).unwrap().token
    };
    let frame = pb::AppFrame {
        body: Some(pb::app_frame::Body::Records(pb::Records {
            batch: 1,
            records: vec![b"{}".to_vec()],
            bee: foreign,
        })),
    };
    app.send_frame_bytes(&ben_wire::frame::encode(&frame))
        .await
        .unwrap();
    match app.send(&[json!({})]).await {
        Err(ClientError::Refused(r)) => assert!(r.contains("issued to another process"), "{r}"),
        other => panic!("expected refusal, got {other:?}"),
    }
    // An expired BEE (2 s lifetime here) is refused.
    let mut app = Client::connect(sys.cfg.socket_path(), "shop_web")
        .await
        .unwrap();
    assert_eq!(
        app.send(&[rec(1, "/", 200, "1.2.3.4", "a@example.com")])
            .await
            .unwrap()
            .accepted,
        1
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    match app
        .send(&[rec(1, "/", 200, "1.2.3.4", "a@example.com")])
        .await
    {
        Err(ClientError::Refused(r)) => assert!(r.contains("BEE expired"), "{r}"),
        Ok(a) => panic!("expired BEE accepted {} records", a.accepted),
        Err(e) => panic!("{e}"),
    }
    // Beekeeper down: nothing is issued.
    *sys.beekeeper.lock().unwrap() = None;
    match Client::connect(sys.cfg.socket_path(), "shop_web").await {
        Err(ClientError::Refused(r)) => assert!(r.contains("Beekeeper is down"), "{r}"),
        other => panic!("expected refusal, got {:?}", other.err()),
    }
    sys.shutdown().await;
}

/// A new connection is attested and a good record accepted.
async fn still_serves(sys: &System) {
    let mut again = Client::connect(sys.cfg.socket_path(), "shop_web")
        .await
        .unwrap();
    assert_eq!(
        again
            .send(&[rec(1, "/", 200, "1.2.3.4", "a@example.com")])
            .await
            .unwrap()
            .accepted,
        1
    );
}

/// An app killed while writing a frame leaves half a frame and EOF: a
/// disconnect (counted), not a malformed message for the dead-letter
/// queue; the sidecar serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_gone_mid_frame_is_a_disconnect_not_a_dead_letter() {
    let sys = system("cutoff", ben_bee::DEFAULT_TTL_NS).await;
    sys.deploy_dir(&shop()).await.unwrap();
    let mut gone = Client::connect(sys.cfg.socket_path(), "shop_web")
        .await
        .unwrap();
    // A 100-byte frame of which 3 bytes arrive.
    gone.send_frame_bytes(&[0, 0, 0, 100, 1, 2, 3])
        .await
        .unwrap();
    drop(gone);
    let cut_off = || sys.stats.shared.sidecar.cut_off.load(Ordering::Relaxed);
    for _ in 0..250 {
        if cut_off() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cut_off(), 1);
    still_serves(&sys).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sys.stats.dead_letters.load(Ordering::Relaxed), 0);
    sys.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_input_keeps_the_sidecar_running() {
    let sys = system("bad", ben_bee::DEFAULT_TTL_NS).await;
    sys.deploy_dir(&shop()).await.unwrap();
    let mut app = Client::connect(sys.cfg.socket_path(), "shop_web")
        .await
        .unwrap();
    let big = json!({"timestamp": "2026-01-01T10:00:00Z", "verb": "get", "url": "x".repeat(2 << 20), "code": "200", "remote_addr": "1.2.3.4", "customer": {"email": "a@b.c"}});
    let acc = app.send(&[big]).await.unwrap();
    assert_eq!(acc.accepted, 0);
    assert!(
        acc.errors[0].reason.contains("over the"),
        "{:?}",
        acc.errors
    );
    // A garbage frame: refused, connection closed.
    app.send_frame_bytes(&[0, 0, 0, 3, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    assert!(app.send(&[json!({})]).await.is_err());
    // The sidecar still serves new connections.
    still_serves(&sys).await;
    assert!(sys.stats.dead_letters.load(Ordering::Relaxed) >= 2);
    // Each is kept with its reason, for `ben up` to show.
    let kept = sys.stats.first_dead_letters.lock().unwrap().clone();
    assert!(
        kept.iter()
            .any(|l| l.starts_with("from sidecar") && l.contains("over the")),
        "{kept:?}"
    );
    assert!(kept.iter().any(|l| l.contains("bad frame")), "{kept:?}");
    sys.shutdown().await;
}

/// The CyberMesh loop: flow records on `ben.mesh.flows` become sealed
/// anomalies on `ai.anomalies.v1` (and evidence on `ai.evidence.v1`) at
/// the next tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cybermesh_loop_publishes_signed_anomalies() {
    let sys = system("mesh", ben_bee::DEFAULT_TTL_NS).await;
    let mut anomalies = ben_bus::Bus::subscribe(sys.bus.as_ref(), "ai.anomalies.v1", None)
        .await
        .unwrap();
    let mut evidence = ben_bus::Bus::subscribe(sys.bus.as_ref(), "ai.evidence.v1", None)
        .await
        .unwrap();
    let csv = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh-detect/tests/data/example-flows.csv"),
    )
    .unwrap();
    let mut dlq = ben_bus::Bus::subscribe(sys.bus.as_ref(), "ben.dlq", None)
        .await
        .unwrap();
    let batch = |seq: u64, rows: Vec<Vec<u8>>| {
        sensor().seal_bytes(&ben_mesh_wire::FlowBatch {
            sensor: "sensor-e2e".into(),
            seq,
            rows,
            incarnation: 1,
        })
    };
    let rows = csv.lines().skip(1).map(|r| r.as_bytes().to_vec()).collect();
    let first = batch(1, rows);
    ben_bus::Bus::publish(sys.bus.as_ref(), "ben.mesh.flows", first.clone())
        .await
        .unwrap();
    ben_bus::Bus::publish(
        sys.bus.as_ref(),
        "ben.mesh.flows",
        batch(2, vec![b"not,a,flow".to_vec()]),
    )
    .await
    .unwrap();
    // The first batch again, as anyone on the bus could send it: refused
    // as a replay (its flows are not judged twice).
    ben_bus::Bus::publish(sys.bus.as_ref(), "ben.mesh.flows", first)
        .await
        .unwrap();
    let replay = flows_dead_letter(&mut dlq, "replay")
        .await
        .expect("the replayed batch is dead-lettered");
    assert!(replay.contains("batch 1 of sensor-e2e"), "{replay}");
    // A row as it travelled before flows were signed: refused, counted,
    // dead-lettered with the reason.
    let row = csv.lines().nth(1).unwrap().as_bytes().to_vec();
    ben_bus::Bus::publish(sys.bus.as_ref(), "ben.mesh.flows", row)
        .await
        .unwrap();
    let refused = flows_dead_letter(&mut dlq, "sensor's key")
        .await
        .expect("the unsigned row is dead-lettered");
    assert!(refused.contains("flows refused"), "{refused}");
    assert_eq!(
        sys.stats.shared.mesh.refused_flows.load(Ordering::Relaxed),
        2
    );
    let want = batch_names(&csv);
    assert!(want.len() >= 2, "{want:?}");
    let mut classes = Vec::new();
    for _ in 0..want.len() {
        let m = tokio::time::timeout(Duration::from_secs(5), anomalies.next())
            .await
            .expect("an anomaly")
            .unwrap();
        let env = pb::SignedEnvelope::decode(m.payload.as_slice()).unwrap();
        assert_eq!(env.kind, "anomaly");
        assert_eq!(env.signature.len(), 64);
        let ev = ben_mesh_detect::wire::AnomalyEvent::decode(env.payload.as_slice()).unwrap();
        assert!(ev.confidence > 0.70, "{ev:?}");
        classes.push(ev.class);
        let e = tokio::time::timeout(Duration::from_secs(5), evidence.next())
            .await
            .expect("its evidence")
            .unwrap();
        assert_eq!(
            pb::SignedEnvelope::decode(e.payload.as_slice())
                .unwrap()
                .kind,
            "evidence"
        );
    }
    assert_eq!(sys.stats.shared.mesh.flows.load(Ordering::Relaxed), 40);
    assert_eq!(
        sys.stats.shared.mesh.bad_rows.load(Ordering::Relaxed),
        1,
        "the bad row is counted"
    );
    assert_eq!(
        sys.stats.shared.mesh.published.load(Ordering::Relaxed),
        want.len() as u64,
        "{classes:?}"
    );
    sys.shutdown().await;
}

/// Streaming: a sensor's flows arrive a row per batch over 2.4 s (several
/// steps of the AI service); the windows stay open across batches, so each
/// attacker's window is judged as one: one anomaly per (source, window,
/// class), each published once, the first while rows are still going out
/// (a 5 s cycle would publish only after them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cybermesh_judges_a_window_split_over_many_batches_once() {
    let sys = system("mesh-stream", ben_bee::DEFAULT_TTL_NS).await;
    let mut anomalies = ben_bus::Bus::subscribe(sys.bus.as_ref(), "ai.anomalies.v1", None)
        .await
        .unwrap();
    let csv = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh-detect/tests/data/example-flows.csv"),
    )
    .unwrap();
    // Anomalies as they come, timed on arrival, while the rows go out.
    let t0 = std::time::Instant::now();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        // Everything the service publishes over the next 6 s (its windows
        // of these flows close 2 s of flow clock after their newest end).
        let until = tokio::time::Instant::now() + Duration::from_secs(6);
        while let Ok(Some(m)) = tokio::time::timeout_at(until, anomalies.next()).await {
            let env = pb::SignedEnvelope::decode(m.payload.as_slice()).unwrap();
            let ev = ben_mesh_detect::wire::AnomalyEvent::decode(env.payload.as_slice()).unwrap();
            got.push((t0.elapsed(), ev));
        }
        got
    });
    let mut sent_at = Vec::new();
    for (seq, row) in csv.lines().skip(1).enumerate() {
        let batch = sensor().seal_bytes(&ben_mesh_wire::FlowBatch {
            sensor: "sensor-e2e".into(),
            seq: seq as u64 + 1,
            rows: vec![row.as_bytes().to_vec()],
            incarnation: 1,
        });
        ben_bus::Bus::publish(sys.bus.as_ref(), "ben.mesh.flows", batch)
            .await
            .unwrap();
        sent_at.push(t0.elapsed());
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let got = reader.await.unwrap();
    let mut ids = std::collections::BTreeSet::new();
    for (_, ev) in &got {
        assert!(
            ids.insert((ev.id.clone(), ev.class.clone())),
            "{} published twice",
            ev.id
        );
    }
    // One anomaly per (source, window, class): what the detector finds
    // in the file judged whole.
    let mut named: Vec<_> = got
        .iter()
        .map(|(_, e)| {
            let src = e.source.as_ref().map(|s| s.ip.clone()).unwrap_or_default();
            (e.class.clone(), src)
        })
        .collect();
    named.sort();
    let want = batch_names(&csv);
    assert_eq!(named, want);
    // The first came while rows were still going out: judged on arrival,
    // not when the batches ended or a window closed.
    let (first, last_sent) = (got[0].0, *sent_at.last().unwrap());
    assert!(
        first < last_sent,
        "the first anomaly came at {first:?}, after the last batch ({last_sent:?})"
    );
    assert_eq!(sys.stats.shared.mesh.flows.load(Ordering::Relaxed), 40);
    assert_eq!(
        sys.stats.shared.mesh.published.load(Ordering::Relaxed),
        want.len() as u64
    );
    sys.shutdown().await;
}

/// What the built-in detector names in `csv` judged as one file (class,
/// source), sorted: what the AI service must publish for it, however the
/// flows arrive.
fn batch_names(csv: &str) -> Vec<(String, String)> {
    use ben_mesh_detect::{defaults, Baseline, Config, Detector, FlowTable, LgbmModel};
    let table = FlowTable::parse(csv).unwrap();
    let mut det = Detector::new(
        Config::default(),
        LgbmModel::parse(defaults::MODEL).unwrap(),
        defaults::MODEL_VERSION,
        &Baseline::parse(defaults::BASELINE).unwrap(),
        defaults::RULES,
        &table.feature_names,
    )
    .unwrap();
    let mut names: Vec<_> = det
        .run(&table)
        .detections
        .into_iter()
        .map(|d| {
            (
                d.event.class,
                d.event.source.map(|s| s.ip).unwrap_or_default(),
            )
        })
        .collect();
    names.sort();
    names
}

/// The reason of the next dead letter for `ben.mesh.flows` that says
/// `what`, within 5 s.
async fn flows_dead_letter(dlq: &mut ben_bus::Subscription, what: &str) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let m = dlq.next().await?;
            let env = pb::SignedEnvelope::decode(m.payload.as_slice()).ok()?;
            let dl = pb::DeadLetter::decode(env.payload.as_slice()).ok()?;
            if dl.subject == "ben.mesh.flows" && dl.reason.contains(what) {
                return Some(dl.reason);
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// A POST with the API token from the data dir; returns status and body.
async fn http_post(sys: &System, path: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let token = std::fs::read_to_string(sys.cfg.data_dir.join("api.token")).unwrap();
    let mut s = tokio::net::TcpStream::connect(sys.api_addr())
        .await
        .unwrap();
    s.write_all(
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        code,
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    )
}

/// Revocation through the API: the app's BEE is listed; revoking its
/// subject drops its connection within 1 s and refuses its next Hello —
/// also after the whole system restarts on the same data dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_app_is_dropped_within_a_second_and_refused() {
    assert_eq!(ben_sidecar::REVOKED, ben_control::bees::REVOKED);
    assert_eq!(ben_sidecar::ROSTER, ben_control::bees::ROSTER);
    let sys = system("revoke", 60_000_000_000).await;
    sys.deploy_dir(&shop()).await.unwrap();
    let mut app = Client::connect(sys.cfg.socket_path(), "shop_web")
        .await
        .unwrap();
    let subject = app.welcome().await.bee_subject;
    let acc = app
        .send(&[rec(0, "/", 200, "10.0.0.1", "a@example.com")])
        .await
        .unwrap();
    assert_eq!(acc.accepted, 1);
    // The sidecar reports it; the API lists it.
    let mut listed = serde_json::Value::Null;
    for _ in 0..100 {
        listed = serde_json::from_str(&http_get(&sys, "/api/v1/bees").await).unwrap();
        if listed["bees"].as_array().is_some_and(|b| !b.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bees = listed["bees"].as_array().cloned().unwrap_or_default();
    assert_eq!(bees.len(), 1, "{listed}");
    assert_eq!(bees[0]["subject"], subject.as_str(), "{listed}");
    assert_eq!(bees[0]["pid"], std::process::id(), "{listed}");

    let (code, body) = http_post(
        &sys,
        "/api/v1/bees/revoke",
        &json!({ "subject": subject }).to_string(),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let t0 = std::time::Instant::now();
    // The connection closes (the client's reader ends) within 1 s,
    // without the app sending anything.
    let closed = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            if app.signals.recv().await.is_none() {
                return;
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "still connected {:?} after the revocation",
        t0.elapsed()
    );
    // The next Hello is refused, naming the revocation.
    match Client::connect(sys.cfg.socket_path(), "shop_web").await {
        Err(ClientError::Refused(r)) => assert!(r.contains("revoked"), "{r}"),
        other => panic!("expected a refusal, got {:?}", other.err()),
    }
    let listed: serde_json::Value =
        serde_json::from_str(&http_get(&sys, "/api/v1/bees").await).unwrap();
    assert_eq!(listed["revoked"], json!([subject]), "{listed}");
    let (code, body) = http_post(&sys, "/api/v1/bees/revoke", r#"{"subject":"no such"}"#).await;
    assert_eq!(code, 400, "{body}");

    // Restarted on the same data dir: still refused, before any word from
    // control.
    let dir = sys.cfg.data_dir.clone();
    sys.shutdown().await;
    let sys = System::start(Config {
        data_dir: dir,
        api_addr: "127.0.0.1:0".parse().unwrap(),
        extra_selectors: vec![me()],
        mesh_every: Duration::from_millis(300),
        ..Config::default()
    })
    .await
    .expect("ben up starts again");
    match Client::connect(sys.cfg.socket_path(), "shop_web").await {
        Err(ClientError::Refused(r)) => assert!(r.contains("revoked"), "{r}"),
        other => panic!("expected a refusal after restart, got {:?}", other.err()),
    }
    sys.shutdown().await;
}
