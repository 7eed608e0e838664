//! Cluster mode end to end: `ben cluster up` (this package's binary) runs
//! every component as its own `ben run` process over the machine's real
//! NATS server (127.0.0.1:4222), under a subject prefix unique to each run.
//! The app is this test binary, attested by the kernel's view of it (the
//! cluster config's selector names its executable and uid).

mod common;

use ben_bus::Bus;
use ben_client::Client;
use ben_cluster::{self as cluster, ClusterConfig};
use ben_wire::pb;
use prost::Message;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Each test runs a whole cluster (7-8 processes); one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const BLOT_KEY: &str = "cluster test key 0123456789abcdef";

fn shop() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop")
}

fn rec(i: usize, url: &str, code: u16, ip: &str, email: &str) -> Value {
    json!({
        "timestamp": "2026-01-01T10:00:00Z", "verb": if code == 401 { "post" } else { "get" },
        "url": url, "code": code.to_string(), "size": 100 + i, "remote_addr": ip,
        "customer": {"email": email, "card": "4111 1111 1111 1111"},
        "comment": format!("call me at +1 415 555 {:04} or write {email}", i % 10000)
    })
}

/// Each running cluster's API token by its API's address, as read from
/// `api.token` in its data dir (where `benctl --data-dir` reads it).
static TOKENS: std::sync::Mutex<BTreeMap<SocketAddr, String>> =
    std::sync::Mutex::new(BTreeMap::new());

/// A minimal HTTP/1.1 request with the cluster's API token; returns the
/// status and the body.
async fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let token = TOKENS
        .lock()
        .unwrap()
        .get(&addr)
        .cloned()
        .unwrap_or_default();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    common::response(&out)
}

/// Every process's own `/metrics` (each on a port of its own, found
/// through `metrics_dir/<id>.json` as Prometheus' file_sd finds it),
/// scraped with the API token and parsed; and each refused without it.
async fn own_metrics(c: &Cluster) -> BTreeMap<String, prometheus_parse::Scrape> {
    let mut out = BTreeMap::new();
    let dir = c.cfg.metrics_dir();
    let token = std::fs::read_to_string(c.cfg.data_dir.join("api.token")).unwrap();
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = e.unwrap().path();
        let sd: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let id = sd[0]["labels"]["ben_process"].as_str().unwrap().to_string();
        let addr: SocketAddr = sd[0]["targets"][0].as_str().unwrap().parse().unwrap();
        TOKENS
            .lock()
            .unwrap()
            .insert(addr, token.trim().to_string());
        let (code, text) = http(addr, "GET", "/metrics", b"").await;
        assert_eq!(code, 200, "{id}'s /metrics: {text}");
        TOKENS.lock().unwrap().remove(&addr);
        let (code, _) = http(addr, "GET", "/metrics", b"").await;
        assert_eq!(code, 401, "{id}'s /metrics without the token");
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .unwrap_or_else(|e| panic!("{id}'s /metrics is not Prometheus text ({e}):\n{text}"));
        let mine = scrape.samples.iter().any(|s| {
            s.metric == "ben_records_processed_total"
                && s.labels.get("component") == Some(id.as_str())
        });
        assert!(mine, "{id}'s /metrics has no sample of its own:\n{text}");
        out.insert(id, scrape);
    }
    out
}

async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (code, body) = http(addr, "GET", path, b"").await;
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

struct Cluster {
    cfg: ClusterConfig,
    proc: tokio::process::Child,
    bus: Arc<dyn Bus>,
    keyring: ben_wire::Keyring,
    api: SocketAddr,
    log: PathBuf,
}

impl Cluster {
    /// Starts `ben cluster up` and waits until every process is healthy.
    async fn start(name: &str, spines: usize, spare: usize, extra: &str) -> Cluster {
        Self::start_with(name, spines, spare, "", extra).await
    }

    /// [`Cluster::start`] with `control` added to the `[control]` table.
    async fn start_with(
        name: &str,
        spines: usize,
        spare: usize,
        control: &str,
        extra: &str,
    ) -> Cluster {
        Self::start_all(name, spines, spare, "", control, "", extra, &[], 0).await
    }

    /// [`Cluster::start_with`] with `scale` added to the `[scale]` table.
    async fn start_scaled(
        name: &str,
        spines: usize,
        spare: usize,
        control: &str,
        scale: &str,
        extra: &str,
    ) -> Cluster {
        Self::start_all(name, spines, spare, "", control, scale, extra, &[], 0).await
    }

    /// [`Cluster::start_with`] with `top` added before the first table
    /// (top-level keys, e.g. `nats = "…"`).
    async fn start_full(
        name: &str,
        spines: usize,
        spare: usize,
        top: &str,
        control: &str,
        extra: &str,
    ) -> Cluster {
        Self::start_all(name, spines, spare, top, control, "", extra, &[], 0).await
    }

    /// Writes the config (`top` keys, then `[control]` + `control`,
    /// `[scale]` + `scale`, … `extra` last), provisions keys for `ids`
    /// beside the ones the cluster makes (a test's own producers) and
    /// starts the cluster, which runs `mesh` CyberMesh processes
    /// (validators, an enforcement agent) besides the data path's.
    #[allow(clippy::too_many_arguments)]
    async fn start_all(
        name: &str,
        spines: usize,
        spare: usize,
        top: &str,
        control: &str,
        scale: &str,
        extra: &str,
        ids: &[&str],
        mesh: usize,
    ) -> Cluster {
        let dir = std::env::temp_dir().join(format!("ben-cluster-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cluster.toml");
        let toml = format!(
            r#"prefix = "bencl-{name}-{pid}-{t}"
data_dir = "data"
{top}
[control]
api = "127.0.0.1:0"
prepare_timeout_ms = 20000
{control}
[scale]
spines = {spines}
spare = {spare}
{scale}
[[sidecar.selectors]]
app = "shop_web"
uid = {uid}
exe = "{exe}"
[supervisor]
stop_grace_ms = 5000
{extra}
"#,
            pid = std::process::id(),
            t = ben_time::now_ns(),
            uid = ben_bee::own_uid().unwrap(),
            exe = std::env::current_exe().unwrap().display(),
        );
        std::fs::write(&path, toml).unwrap();
        let cfg = ClusterConfig::load(&path).unwrap();
        // The tests' own sensor (it replays captures onto ben.mesh.flows).
        cluster::keys::provision(&cfg.key_dir, ids.iter().copied().chain(["sensor-test"])).unwrap();
        let log = dir.join("cluster.log");
        let out = std::fs::File::create(&log).unwrap();
        let proc = tokio::process::Command::new(env!("CARGO_BIN_EXE_ben"))
            .args(["cluster", "up", "--config"])
            .arg(&path)
            .env("BEN_BLOT_KEY", BLOT_KEY)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let bus = cluster::connect(&cfg).await.unwrap();
        let mut c = Cluster {
            keyring: ben_wire::Keyring::new(),
            api: "127.0.0.1:1".parse().unwrap(),
            cfg,
            proc,
            bus,
            log,
        };
        let detectors = scale
            .lines()
            .find_map(|l| l.trim().strip_prefix("detectors"))
            .and_then(|r| r.trim().strip_prefix('='))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap_or(1);
        let want = 4 + spines + detectors + mesh;
        c.wait("every process healthy", Duration::from_secs(90), |s| {
            s["components"]
                .as_object()
                .is_some_and(|m| m.len() == want && m.values().all(|v| v["healthy"] == true))
        })
        .await;
        c.keyring = cluster::keys::keyring(&c.cfg.key_dir).unwrap();
        c.api = std::fs::read_to_string(c.cfg.api_file())
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let token = std::fs::read_to_string(c.cfg.data_dir.join("api.token")).unwrap();
        // The token file is private, like the data dir.
        use std::os::unix::fs::PermissionsExt;
        for (p, want) in [
            (c.cfg.data_dir.join("api.token"), 0o600),
            (c.cfg.data_dir.clone(), 0o700),
            (c.cfg.key_dir.clone(), 0o700),
        ] {
            let m = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(m, want, "{} is {m:o}", p.display());
        }
        // Without the token the API refuses.
        let (code, body) = http(c.api, "POST", "/api/v1/deploy", b"{}").await;
        assert_eq!(code, 401, "{body}");
        TOKENS
            .lock()
            .unwrap()
            .insert(c.api, token.trim().to_string());
        // The ledger has registered every component (first heartbeats).
        for _ in 0..300 {
            let s = get_json(c.api, "/api/v1/status").await;
            if s["components"].as_array().map(Vec::len) == Some(want - 1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        c
    }

    /// The supervisor's status (over the bus).
    async fn status(&self) -> Value {
        match self
            .bus
            .request(cluster::STATUS, vec![], Duration::from_secs(2))
            .await
        {
            Ok(m) => serde_json::from_slice(&m.payload).unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    async fn wait(&mut self, what: &str, max: Duration, f: impl Fn(&Value) -> bool) -> Value {
        let until = Instant::now() + max;
        let mut last = Value::Null;
        while Instant::now() < until {
            if let Ok(Some(st)) = self.proc.try_wait() {
                panic!(
                    "ben cluster up exited ({st}) while waiting for {what}:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            last = self.status().await;
            if f(&last) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "timed out waiting for {what}; status {last:#}\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// Builds the shop bundle, uploads and stages it through the API, deploys
    /// it and waits until it is finalized.
    async fn deploy_shop(&self) -> String {
        self.deploy_bundle(&shop()).await
    }

    /// [`Cluster::deploy_shop`] for the bundle in `dir`.
    async fn deploy_bundle(&self, dir: &Path) -> String {
        let built = ben_intent::Bundle::load(dir).unwrap().build().unwrap();
        let mut artifacts = serde_json::Map::new();
        for a in &built.artifacts {
            let hash = a.hash.to_hex().to_string();
            let (code, body) = http(
                self.api,
                "PUT",
                &format!("/api/v1/artifacts/{hash}"),
                &a.bytes,
            )
            .await;
            assert!(code == 200 || code == 201, "{code} {body}");
            artifacts.insert(a.name.clone(), Value::String(hash));
        }
        let stage = json!({
            "version": built.version, "bundle": built.name,
            "digest": built.digest.to_hex().to_string(), "artifacts": artifacts,
        });
        let (code, body) = http(
            self.api,
            "POST",
            "/api/v1/versions",
            stage.to_string().as_bytes(),
        )
        .await;
        assert!(code == 200 || code == 201, "{code} {body}");
        let (code, body) = http(
            self.api,
            "POST",
            "/api/v1/deploy",
            json!({"version": built.version}).to_string().as_bytes(),
        )
        .await;
        assert!(code == 200 || code == 201 || code == 202, "{code} {body}");
        for _ in 0..600 {
            let s = get_json(self.api, "/api/v1/status").await;
            match s["deploy"]["phase"].as_str() {
                Some("finalized") => return built.version.clone(),
                Some("aborted") => panic!("deploy aborted: {s:#}"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        panic!("deploy did not finish");
    }

    /// SIGTERM to `ben cluster up`: every child stops, in order, and it
    /// exits 0.
    async fn stop(mut self) {
        // The children the supervisor runs (not processes listed from
        // their last metrics, such as a spine just scaled down).
        let pids: Vec<u32> = self.status().await["components"]
            .as_object()
            .map(|m| {
                m.values()
                    .filter(|v| v["supervised"] != false)
                    .filter_map(|v| v["pid"].as_u64().map(|p| p as u32))
                    .collect()
            })
            .unwrap_or_default();
        // Every running child keeps its entry in the registry (KV).
        let registered = |want_all: bool| {
            let (cfg, pids) = (self.cfg.clone(), pids.clone());
            async move {
                for _ in 0..30 {
                    let live: Vec<u32> = cluster::registry(&cfg)
                        .await
                        .unwrap()
                        .iter()
                        .map(|e| e.pid)
                        .collect();
                    if want_all == pids.iter().all(|p| live.contains(p))
                        && (want_all || live.is_empty())
                    {
                        return live;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                cluster::registry(&cfg)
                    .await
                    .unwrap()
                    .iter()
                    .map(|e| e.pid)
                    .collect()
            }
        };
        let live = registered(true).await;
        assert!(
            pids.iter().all(|p| live.contains(p)),
            "{pids:?} in {live:?}"
        );
        let pid = self.proc.id().unwrap();
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        let st = tokio::time::timeout(Duration::from_secs(40), self.proc.wait())
            .await
            .expect("ben cluster up stops")
            .unwrap();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(st.success(), "{st}\n{log}");
        assert!(log.contains("control (control) stopped"), "{log}");
        for p in &pids {
            assert!(
                !Path::new(&format!("/proc/{p}")).exists(),
                "process {p} survived the stop"
            );
        }
        // The run's prefix is thrown away: so is its JetStream stream.
        let nats = cluster::nats_bus(&self.cfg, None).await.unwrap();
        assert!(nats.delete_stream().await.unwrap(), "the stream existed");
        // A clean stop removed every registry entry; the buckets go too.
        let live = registered(false).await;
        assert!(live.is_empty(), "still registered after the stop: {live:?}");
        let (store, reg) = cluster::registry::delete_buckets(&self.cfg).await.unwrap();
        assert!(reg, "the registry bucket existed");
        assert!(store || self.cfg.store == cluster::StoreKind::Files);
    }
}

/// Verified heartbeats: (component, seq, intent version, arrival).
fn heartbeats(
    mut sub: ben_bus::Subscription,
    keyring: ben_wire::Keyring,
) -> tokio::sync::mpsc::UnboundedReceiver<(String, u64, String, Instant)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if let Ok(v) = ben_wire::open_bytes::<pb::Heartbeat>(&m.payload, &keyring) {
                let h = v.into_inner();
                if tx
                    .send((h.component, h.seq, h.intent_version, Instant::now()))
                    .is_err()
                {
                    break;
                }
            }
        }
    });
    rx
}

/// Counts what the spines emit (flags per name, records, PII found) and the
/// data-path dead letters, from the test's own subscriptions.
#[derive(Default)]
struct Seen {
    records: u64,
    flags: BTreeMap<String, u64>,
    versions: BTreeMap<String, u64>,
    pii: Vec<String>,
    dead_letters: Vec<(String, String, String)>,
}

fn watch(
    mut downstream: ben_bus::Subscription,
    mut dlq: ben_bus::Subscription,
) -> Arc<std::sync::Mutex<Seen>> {
    let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
    let s = seen.clone();
    tokio::spawn(async move {
        while let Some(m) = downstream.next().await {
            let batch = pb::RecordBatch::decode(m.payload.as_slice()).unwrap();
            let mut g = s.lock().unwrap();
            for r in batch.records {
                let body = String::from_utf8_lossy(&r.body).to_string();
                g.records += 1;
                *g.versions.entry(r.intent_version.clone()).or_default() += 1;
                if !r.values.is_empty() {
                    g.pii.push("raw field values left a spine".into());
                }
                for pii in [
                    "carol@example.com",
                    "mallory@example.com",
                    "4111 1111 1111 1111",
                    "415 555",
                ] {
                    if body.contains(pii) {
                        g.pii.push(body.clone());
                    }
                }
                for f in r.flags {
                    *g.flags.entry(f).or_default() += 1;
                }
            }
        }
    });
    let s = seen.clone();
    tokio::spawn(async move {
        while let Some(m) = dlq.next().await {
            // Signed by their writers; read here without verifying.
            let d = pb::SignedEnvelope::decode(m.payload.as_slice())
                .and_then(|e| pb::DeadLetter::decode(e.payload.as_slice()))
                .unwrap_or_default();
            s.lock()
                .unwrap()
                .dead_letters
                .push((d.subject, d.sender, d.reason));
        }
    });
    seen
}

/// The end-to-end data path of `crates/embedded/tests/e2e.rs` with every
/// component in its own process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_flow_with_every_component_in_its_own_process() {
    let _one = ONE_AT_A_TIME.lock().await;
    // The ledger and Lucius on the machine's real PostgreSQL, in a
    // database of this run's own.
    let db = ben_sql::testing::TestDb::create().await;
    let mut c =
        Cluster::start_with("flow", 2, 0, &format!("database_url = \"{}\"", db.url), "").await;
    let st = c.status().await;
    let pids: std::collections::BTreeSet<u64> = st["components"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids.len(), 7, "one process per component: {st:#}");
    assert!(!pids.contains(&(std::process::id() as u64)));

    let version = c.deploy_shop().await;
    let seen = watch(
        c.bus.subscribe("ben.data.detector.*", None).await.unwrap(),
        c.bus.subscribe("ben.dlq", None).await.unwrap(),
    );
    let mut app = Client::connect(&c.cfg.socket, "shop_web")
        .await
        .expect("attested");
    let w = app.welcome().await;
    assert!(w.bee_subject.starts_with("shop_web/"), "{}", w.bee_subject);
    assert_eq!(w.intent_version, version);

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

    // The brute-force signal crosses spine → detector → sidecar processes.
    let sig = tokio::time::timeout(Duration::from_secs(10), app.signals.recv())
        .await
        .expect("a signal arrives")
        .unwrap();
    assert_eq!(sig.name, "auth.bruteforce");
    assert_eq!(sig.severity, "high");
    assert_eq!(sig.key, vec!["203.0.113.9".to_string()]);
    assert_eq!(sig.app, "shop_web");
    assert_eq!(sig.intent_version, version);

    // Downstream: exactly 17 spine records, exact flags, all redacted.
    for _ in 0..500 {
        if seen.lock().unwrap().records >= 17 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.records, 17);
        assert!(s.pii.is_empty(), "PII downstream: {:?}", s.pii);
        assert_eq!(s.versions.get(&version), Some(&17));
        assert_eq!(s.flags.get("server_error"), Some(&10));
        assert_eq!(s.flags.get("internal"), Some(&10));
        assert_eq!(s.flags.get("admin_path"), Some(&7));
        assert_eq!(s.flags.get("login_failed"), Some(&7));
        assert_eq!(s.flags.len(), 4);
    }

    // Lucius (its own process) holds the 40 page views, redacted; asked
    // through the control process's API, which asks Lucius over NATS.
    let mut j = Value::Null;
    for _ in 0..100 {
        j = get_json(c.api, "/api/v1/lucius?limit=100").await;
        if j["count"] == 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(j["count"], 40, "{j}");
    let rows = j["records"].as_array().unwrap();
    assert_eq!(rows.len(), 40);
    assert!(rows
        .iter()
        .all(|r| r["intent"] == version.as_str() && r["flags"].as_array().unwrap().is_empty()));
    let text = j.to_string();
    assert!(!text.contains("@example.com"), "raw email in Lucius");
    assert!(!text.contains("4111 1111 1111 1111"), "raw card in Lucius");
    let j = get_json(c.api, "/api/v1/lucius?flag=server_error").await;
    assert_eq!(j["records"].as_array().map(Vec::len), Some(0));
    // Those rows and the ledger really live in this run's PostgreSQL.
    {
        use sqlx::Connection;
        let mut pg = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM lucius_observations")
            .fetch_one(&mut pg)
            .await
            .unwrap();
        assert_eq!(rows, 40, "Lucius rows in PostgreSQL");
        let finalized: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger_deploys")
            .fetch_one(&mut pg)
            .await
            .unwrap();
        assert!(finalized >= 1, "the deploy is recorded in PostgreSQL");
        let _ = pg.close().await;
    }

    // The supervisor's books balance: 57 accepted = 17 at the detector +
    // 40 in Lucius; one signal; nothing lost.
    let st = c
        .wait("the books to settle", Duration::from_secs(20), |s| {
            s["records"]["settled"] == true && s["records"]["accepted"] == 57
        })
        .await;
    let r = &st["records"];
    assert_eq!(
        (
            &r["to_detectors"],
            &r["to_lucius"],
            &r["lost"],
            &r["signals"]
        ),
        (&json!(17), &json!(40), &json!(0), &json!(1)),
        "{st:#}"
    );
    assert!(app.signals.try_recv().is_err(), "one signal per window");

    // Throughput across processes (debug build, shared 2-core machine):
    // spine-bound records, 100 per batch, until the detector has them all.
    let n = 4000;
    let t0 = Instant::now();
    for b in 0..n / 100 {
        let batch: Vec<Value> = (0..100)
            .map(|i| rec(b * 100 + i, "/checkout", 503, "10.9.9.9", "x@example.com"))
            .collect();
        assert_eq!(app.send(&batch).await.unwrap().accepted, 100);
    }
    let sent = t0.elapsed();
    let st = c
        .wait(
            "the burst to reach the detector",
            Duration::from_secs(120),
            |s| s["records"]["to_detectors"].as_u64() == Some(17 + n as u64),
        )
        .await;
    let all = t0.elapsed();
    println!(
        "cluster throughput: {n} records app→sidecar→proxy→spine→detector (4 processes on the path) in {:.2} s = {:.0} records/s (sent in {:.2} s); books {}",
        all.as_secs_f64(),
        n as f64 / all.as_secs_f64(),
        sent.as_secs_f64(),
        st["records"]
    );
    assert_eq!(st["records"]["dead_letters"], 0);
    // The control process serves every process's counters for Prometheus
    // (GET /metrics, behind the token): one sample per process.
    let (code, text) = http(c.api, "GET", "/metrics", b"").await;
    assert_eq!(code, 200, "{text}");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text");
    let components: std::collections::BTreeSet<&str> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "ben_records_processed_total")
        .filter_map(|s| s.labels.get("component"))
        .collect();
    for id in [
        "control",
        "sidecar-1",
        "proxy-1",
        "spine-1",
        "detector-1",
        "lucius-1",
    ] {
        assert!(
            components.contains(id),
            "{id} not in {components:?}\n{text}"
        );
    }
    let detector = scrape
        .samples
        .iter()
        .find(|s| s.metric == "ben_signals_emitted_total")
        .map(|s| s.value.clone());
    assert!(
        matches!(detector, Some(prometheus_parse::Value::Counter(v)) if v >= 1.0),
        "{text}"
    );
    // `ben cluster up` printed a one-time dashboard link; it logs a
    // browser in once.
    let log = std::fs::read_to_string(&c.log).unwrap_or_default();
    let link = log
        .lines()
        .find_map(|l| l.split("ben cluster up: dashboard ").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no dashboard link in the log:\n{log}"));
    let path = &link[link.find("/login").unwrap()..];
    let (code, _) = http(c.api, "GET", path, b"").await;
    assert_eq!(code, 303, "the printed link logs in");
    let (code, _) = http(c.api, "GET", path, b"").await;
    assert_eq!(code, 401, "once");
    assert!(!c.cfg.login_file().exists(), "the link's file is used up");
    // The control process serves the dashboard: the page, and the
    // overview with every process's counters and health.
    let (code, page) = http(c.api, "GET", "/", b"").await;
    assert_eq!(code, 200);
    assert!(page.contains("/assets/app.js"), "{page}");
    // (Its answer is at most a second old, the processes' metrics half a
    // second: it catches up within a few.)
    let t = Instant::now();
    let o = loop {
        let o = get_json(c.api, "/api/dashboard/overview").await;
        if o["records"]["total"].as_u64() >= Some(17 + n as u64) {
            break o;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the overview lags: {o:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let healthy: Vec<&str> = o["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["health"] == "ok")
        .filter_map(|c| c["id"].as_str())
        .collect();
    for id in ["sidecar-1", "proxy-1", "spine-1", "detector-1", "lucius-1"] {
        assert!(
            healthy.contains(&id),
            "{id} not healthy in the overview: {o:#}"
        );
    }
    // Each process's own port: every kind of this cluster.
    let own = own_metrics(&c).await;
    for id in ["sidecar-1", "proxy-1", "spine-1", "detector-1", "lucius-1"] {
        assert!(
            own.contains_key(id),
            "{id} has no metrics port: {:?}",
            own.keys()
        );
    }
    // Record ages as a histogram: every record that reached the detector.
    let ages = own["detector-1"]
        .samples
        .iter()
        .find(|s| s.metric == "ben_record_age_seconds")
        .map(|s| s.value.clone());
    match ages {
        Some(prometheus_parse::Value::Histogram(b)) => {
            let all = b
                .iter()
                .find(|x| x.less_than.is_infinite())
                .map(|x| x.count);
            assert!(all >= Some(17.0 + n as f64), "{b:?}");
        }
        other => panic!("detector-1's record ages are no histogram: {other:?}"),
    }
    let signals = own["detector-1"]
        .samples
        .iter()
        .find(|s| s.metric == "ben_signals_emitted_total")
        .map(|s| s.value.clone());
    assert!(
        matches!(signals, Some(prometheus_parse::Value::Counter(v)) if v >= 1.0),
        "{signals:?}"
    );
    TOKENS.lock().unwrap().remove(&c.api);
    let (code, _) = http(c.api, "GET", "/metrics", b"").await;
    assert_eq!(code, 401, "/metrics without the token");
    let targets = c.cfg.metrics_dir();
    c.stop().await;
    // A process that stopped takes its target away.
    let left = std::fs::read_dir(&targets).map_or(0, |d| d.count());
    assert_eq!(
        left, 0,
        "metrics target files left after the cluster stopped"
    );
}

/// kill -9 of a spine while records flow: the supervisor restarts it, the
/// restarted spine loads the active version before it consumes, and every
/// accepted record is delivered, dead-lettered or counted as lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_spine_is_restarted_and_no_record_is_lost_silently() {
    spine_stopped_under_traffic(Stop::Kill).await;
}

/// SIGTERM to a spine while records flow (what scaling down sends): it
/// drains — leaves the queue group, finishes what it held, exits — the
/// other spine takes the traffic, and not one record is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_spine_drains_and_loses_no_record() {
    spine_stopped_under_traffic(Stop::Term).await;
}

#[derive(Clone, Copy, PartialEq)]
enum Stop {
    Kill,
    Term,
}

async fn spine_stopped_under_traffic(how: Stop) {
    let _one = ONE_AT_A_TIME.lock().await;
    let tag = match how {
        Stop::Kill => "kill",
        Stop::Term => "term",
    };
    let mut c = Cluster::start(tag, 2, 0, "").await;
    let version = c.deploy_shop().await;
    let seen = watch(
        c.bus.subscribe("ben.data.detector.*", None).await.unwrap(),
        c.bus.subscribe("ben.dlq", None).await.unwrap(),
    );
    let mut beats = heartbeats(
        c.bus.subscribe("ben.health.heartbeat", None).await.unwrap(),
        c.keyring.clone(),
    );
    let mut app = Client::connect(&c.cfg.socket, "shop_web").await.unwrap();
    let victim = c.status().await["components"]["spine-1"]["pid"]
        .as_u64()
        .unwrap();

    let (batches, per) = (60usize, 50usize);
    // Big enough that the spine still holds batches when the signal lands
    // (without draining, SIGTERM loses some of them).
    const BURST: usize = 500;
    let mut accepted = 0u64;
    let mut killed_at = None;
    for b in 0..batches {
        let batch: Vec<Value> = (0..per)
            .map(|i| {
                rec(
                    b * per + i,
                    "/checkout",
                    503,
                    "10.1.2.3",
                    "carol@example.com",
                )
            })
            .collect();
        accepted += app.send(&batch).await.unwrap().accepted;
        if b == batches / 3 {
            // A burst, so the spine is likely to hold records when the
            // signal lands: kill -9 after it (what it held is lost, and
            // must be counted), SIGTERM in its middle (it drains while
            // more keep coming).
            // For SIGTERM the spine is paused through the first half, so
            // it has a backlog to drain when it gets the signal.
            let signal = |sig: &str| {
                std::process::Command::new("kill")
                    .args([sig, &victim.to_string()])
                    .status()
                    .unwrap()
            };
            for k in 0..10 {
                if k == 0 && how == Stop::Term {
                    signal("-STOP");
                }
                if k == 5 && how == Stop::Term {
                    signal("-TERM");
                    signal("-CONT");
                    killed_at = Some(Instant::now());
                }
                let burst: Vec<Value> = (0..BURST)
                    .map(|i| {
                        rec(
                            k * BURST + i,
                            "/checkout",
                            503,
                            "10.4.4.4",
                            "carol@example.com",
                        )
                    })
                    .collect();
                accepted += app.send(&burst).await.unwrap().accepted;
            }
            if how == Stop::Kill {
                signal("-9");
                killed_at = Some(Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let killed_at = killed_at.unwrap();
    assert_eq!(accepted, (batches * per + 10 * BURST) as u64);

    // Restarted: a new spine-1 incarnation heartbeats (seq starts at 1),
    // already running the active version.
    let restart = loop {
        let (id, seq, v, at) = tokio::time::timeout(Duration::from_secs(30), beats.recv())
            .await
            .expect("spine-1 heartbeats again")
            .unwrap();
        if id == "spine-1" && at > killed_at && seq == 1 {
            assert_eq!(v, version, "the restarted spine runs the active version");
            break at - killed_at;
        }
    };
    let st = c
        .wait(
            "the supervisor to count the restart",
            Duration::from_secs(10),
            |s| s["components"]["spine-1"]["restarts"] == 1,
        )
        .await;
    let sp = &st["components"]["spine-1"];
    let exit = match how {
        Stop::Kill => "killed by signal 9",
        Stop::Term => "exited with status 0",
    };
    assert_eq!(sp["last_exit"], exit, "{st:#}");
    assert_ne!(sp["pid"].as_u64(), Some(victim));

    // The restarted spine takes traffic.
    let mut more = 0u64;
    for b in 0..20 {
        let batch: Vec<Value> = (0..per)
            .map(|i| {
                rec(
                    b * per + i,
                    "/checkout",
                    503,
                    "10.1.2.3",
                    "carol@example.com",
                )
            })
            .collect();
        more += app.send(&batch).await.unwrap().accepted;
    }
    let total = accepted + more;
    let st = c
        .wait("the books to settle", Duration::from_secs(60), |s| {
            s["records"]["settled"] == true && s["records"]["accepted"].as_u64() == Some(total)
        })
        .await;
    let r = &st["records"];
    let n = |k: &str| r[k].as_u64().unwrap();
    // The books balance: nothing vanished without being counted.
    assert_eq!(
        n("to_detectors") + n("to_lucius") + n("dead_letters") + n("lost"),
        total,
        "{st:#}"
    );
    // And the count of lost records is right: the test's own view of what
    // the spines emitted and what was dead-lettered gives the same figure.
    let s = std::mem::take(&mut *seen.lock().unwrap());
    let dl_data = s
        .dead_letters
        .iter()
        .filter(|(subj, sender, _)| subj.starts_with("ben.data.") && !sender.starts_with("sidecar"))
        .count() as u64;
    assert_eq!(
        n("lost"),
        total - s.records - n("to_lucius") - dl_data,
        "{st:#}"
    );
    assert_eq!(
        s.records,
        n("to_detectors"),
        "the detector got all the spines emitted"
    );
    assert!(
        !s.dead_letters
            .iter()
            .any(|(_, _, reason)| reason.contains("before any intent is active")),
        "a restarted spine took records before loading the version: {:?}",
        s.dead_letters
    );
    assert_eq!(s.versions.keys().collect::<Vec<_>>(), vec![&version]);
    let after = st["components"]["spine-1"]["processed"]
        .as_u64()
        .unwrap_or(0);
    assert!(after > 0, "the restarted spine-1 processed nothing: {st:#}");
    if how == Stop::Term {
        assert_eq!(n("lost"), 0, "a draining spine lost records: {st:#}");
        assert_eq!(n("dead_letters"), 0, "{st:#}");
    }
    println!(
        "{} spine-1: restarted and heartbeating with {} after {:.0} ms; {} accepted, {} delivered, {} dead letters, {} lost (counted)",
        match how {
            Stop::Kill => "kill -9",
            Stop::Term => "SIGTERM",
        },
        version,
        restart.as_secs_f64() * 1e3,
        total,
        n("to_detectors") + n("to_lucius"),
        n("dead_letters"),
        n("lost"),
    );
    c.stop().await;
}

/// A spine process started after the deploy loads the active version
/// before it takes traffic: its very first heartbeat names the version,
/// the ledger sees it running it, and what it processes names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_activates_the_current_version_before_taking_traffic() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = Cluster::start("late", 1, 1, "").await;
    let version = c.deploy_shop().await;
    let seen = watch(
        c.bus.subscribe("ben.data.detector.*", None).await.unwrap(),
        c.bus.subscribe("ben.dlq", None).await.unwrap(),
    );
    let mut beats = heartbeats(
        c.bus.subscribe("ben.health.heartbeat", None).await.unwrap(),
        c.keyring.clone(),
    );
    // spine-2 is a spare id: keyed, not started by `cluster up`.
    let started = Instant::now();
    let mut late = tokio::process::Command::new(env!("CARGO_BIN_EXE_ben"))
        .args(["run", "spine", "--id", "spine-2", "--config"])
        .arg(&c.cfg.path)
        .env("BEN_BLOT_KEY", BLOT_KEY)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let first = loop {
        let (id, seq, v, at) = tokio::time::timeout(Duration::from_secs(30), beats.recv())
            .await
            .expect("spine-2 heartbeats")
            .unwrap();
        if id == "spine-2" {
            assert_eq!(seq, 1);
            break (v, at - started);
        }
    };
    assert_eq!(
        first.0, version,
        "first heartbeat already runs the active version"
    );
    // The ledger registers it as running the active version.
    let mut comp = Value::Null;
    for _ in 0..100 {
        let s = get_json(c.api, "/api/v1/status").await;
        if let Some(x) = s["components"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["id"] == "spine-2"))
        {
            comp = x.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(comp["intent_version"], version.as_str(), "{comp}");
    assert_eq!(comp["behind"], false, "{comp}");

    // Traffic spreads over spine-1 and the late spine-2 (queue group).
    let mut app = Client::connect(&c.cfg.socket, "shop_web").await.unwrap();
    let mut sent = 0;
    for b in 0..10 {
        let batch: Vec<Value> = (0..50)
            .map(|i| {
                rec(
                    b * 50 + i,
                    "/checkout",
                    503,
                    "10.1.2.3",
                    "carol@example.com",
                )
            })
            .collect();
        sent += app.send(&batch).await.unwrap().accepted;
    }
    let st = c
        .wait("spine-2 to process records", Duration::from_secs(30), |s| {
            s["records"]["to_detectors"].as_u64() == Some(sent)
                && s["components"]["spine-2"]["processed"].as_u64() > Some(0)
        })
        .await;
    assert_eq!(st["components"]["spine-2"]["supervised"], false);
    assert_eq!(st["components"]["spine-2"]["intent"], version.as_str());
    let s = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(s.records, sent);
    assert_eq!(s.versions.get(&version), Some(&sent));
    assert!(
        s.dead_letters.is_empty(),
        "no dead letters (none before the version loaded): {:?}",
        s.dead_letters
    );
    println!(
        "late joiner: spine-2 started → first heartbeat running {} after {:.0} ms; it processed {} of {sent} records",
        version,
        first.1.as_secs_f64() * 1e3,
        st["components"]["spine-2"]["processed"]
    );
    let _ = late.start_kill();
    let _ = late.wait().await;
    c.stop().await;
}

/// A spine that is alive but silent (SIGSTOP: no heartbeats) is killed by
/// the supervisor after `hung_after_ms` and restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_spine_is_killed_and_restarted() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = Cluster::start("hung", 2, 0, "hung_after_ms = 2500").await;
    let pid = c.status().await["components"]["spine-2"]["pid"]
        .as_u64()
        .unwrap();
    let t0 = Instant::now();
    std::process::Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .unwrap();
    let st = c
        .wait("spine-2 restarted", Duration::from_secs(30), |s| {
            let sp = &s["components"]["spine-2"];
            sp["restarts"] == 1 && sp["pid"].as_u64().is_some_and(|p| p != pid)
        })
        .await;
    let took = t0.elapsed();
    assert_eq!(
        st["components"]["spine-2"]["last_exit"],
        "killed by signal 9"
    );
    // hung_after counts from the last heartbeat, which came at most one
    // heartbeat interval (1 s) before the STOP.
    assert!(
        took >= Duration::from_millis(2500 - 1000),
        "killed before hung_after: {took:?}"
    );
    // The other components were left alone.
    assert_eq!(st["restarts"], 1, "{st:#}");
    c.wait("spine-2 healthy again", Duration::from_secs(30), |s| {
        s["components"]["spine-2"]["healthy"] == true
    })
    .await;
    println!(
        "hung spine-2 (SIGSTOP) killed and restarted after {:.1} s",
        took.as_secs_f64()
    );
    c.stop().await;
}

/// A burst of spine-bound records makes the supervisor start a spare spine
/// (queue depth above `high_water` for `window_ms`), which registers with
/// the ledger and takes records; once the burst is over and every spine is
/// near-empty, the one it added is stopped again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spine_burst_scales_up_then_back_down() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = Cluster::start_scaled(
        "scale",
        1,
        2,
        "",
        "max_spines = 2\nhigh_water = 2\nwindow_ms = 1500\ncooldown_ms = 2000",
        "",
    )
    .await;
    let version = c.deploy_shop().await;
    let st = c.status().await;
    assert_eq!(st["scale"]["kinds"]["spine"]["running"], 1, "{st:#}");
    assert_eq!(st["scale"]["kinds"]["spine"]["max"], 2, "{st:#}");
    assert_eq!(st["scale"]["kinds"]["proxy"]["scaled"], false, "{st:#}");

    // The burst (failing checkouts, which the shop routes to the spines):
    // several app connections sending large batches without
    // pause until the supervisor has added a spine (and a little after,
    // so it takes some of them).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for w in 0..4usize {
        let (socket, stop) = (c.cfg.socket.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let mut app = Client::connect(&socket, "shop_web").await.unwrap();
            let mut accepted = 0u64;
            let mut b = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let batch: Vec<Value> = (0..200)
                    .map(|i| {
                        rec(
                            (w * 1_000_000) + b * 200 + i,
                            "/checkout",
                            503,
                            "10.9.9.9",
                            "carol@example.com",
                        )
                    })
                    .collect();
                match app.send(&batch).await {
                    Ok(r) => accepted += r.accepted,
                    Err(_) => break,
                }
                b += 1;
            }
            accepted
        }));
    }
    let t0 = Instant::now();
    let up = c
        .wait(
            "a second spine started by scaling",
            Duration::from_secs(60),
            |s| s["scale"]["kinds"]["spine"]["running"] == 2,
        )
        .await;
    let took_up = t0.elapsed();
    let d = &up["scale"]["last_decision"];
    assert_eq!(d["kind"], "spine", "{up:#}");
    assert_eq!(d["direction"], "up", "{up:#}");
    assert_eq!(d["id"], "spine-2", "the lowest spare id: {up:#}");
    assert!(
        d["reason"]
            .as_str()
            .unwrap_or("")
            .contains("high-water mark 2"),
        "{up:#}"
    );
    assert_eq!(up["scale"]["kinds"]["spine"]["added"], json!(["spine-2"]));
    // spine-2 registers with the version active and processes records.
    let st = c
        .wait("spine-2 to process records", Duration::from_secs(60), |s| {
            let sp = &s["components"]["spine-2"];
            sp["healthy"] == true && sp["processed"].as_u64() > Some(0)
        })
        .await;
    assert_eq!(st["components"]["spine-2"]["intent"], version.as_str());
    let mut registered = Value::Null;
    for _ in 0..100 {
        let s = get_json(c.api, "/api/v1/status").await;
        if let Some(x) = s["components"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["id"] == "spine-2"))
        {
            registered = x.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        registered["intent_version"],
        version.as_str(),
        "{registered}"
    );

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut accepted = 0;
    for s in senders {
        accepted += s.await.unwrap();
    }
    let t1 = Instant::now();
    // After the burst: back to the configured count.
    let down = c
        .wait(
            "scaled back down to one spine",
            Duration::from_secs(60),
            |s| {
                s["scale"]["kinds"]["spine"]["running"] == 1
                    && s["scale"]["last_decision"]["direction"] == "down"
                    && s["scale"]["stopping"]
                        .as_array()
                        .is_some_and(|a| a.is_empty())
            },
        )
        .await;
    let took_down = t1.elapsed();
    let d = &down["scale"]["last_decision"];
    assert_eq!(d["id"], "spine-2", "{down:#}");
    assert!(
        d["reason"].as_str().unwrap_or("").contains("near-empty"),
        "{down:#}"
    );
    assert_eq!(down["scale"]["kinds"]["spine"]["added"], json!([]));
    assert!(down["scale"]["decisions"].as_u64() >= Some(2), "{down:#}");
    // Stopped, not crashed: no restart counted.
    assert_eq!(down["restarts"], 0, "{down:#}");
    let log = std::fs::read_to_string(&c.log).unwrap_or_default();
    assert!(log.contains("scaled down: spine-2 stopped"), "{log}");
    // Everything the burst sent is accounted for.
    let st = c
        .wait("the books to settle", Duration::from_secs(60), |s| {
            s["records"]["accepted"].as_u64() == Some(accepted)
                && s["records"]["in_flight"] == 0
                && s["records"]["settled"] == true
        })
        .await;
    println!(
        "burst of {accepted} records: spine-2 added after {:.1} s, removed {:.1} s after the burst; books {}",
        took_up.as_secs_f64(),
        took_down.as_secs_f64(),
        st["records"]
    );
    c.stop().await;
}

/// A private JetStream `nats-server` on `port` with its store in `dir`
/// (the shared server on 4222 is never touched); killed on drop.
struct PrivateNats {
    child: std::process::Child,
}

impl PrivateNats {
    fn start(port: u16, dir: &Path) -> PrivateNats {
        let child = std::process::Command::new("/usr/sbin/nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server at /usr/sbin/nats-server");
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        PrivateNats { child }
    }

    /// SIGKILL, and reaped.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The shop bundle in `to` with `status >= 500` changed to `threshold`.
fn copy_shop(to: &Path, threshold: u16) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["ben.toml", "ben.lock", "shop.bspec"] {
        let mut text = std::fs::read_to_string(shop().join(f)).unwrap();
        if f == "shop.bspec" {
            text = text.replace("status >= 500", &format!("status >= {threshold}"));
        }
        std::fs::write(to.join(f), text).unwrap();
    }
}

/// 40 page views (to Lucius), 10 server errors and 7 failed admin logins
/// from `attacker` (to the detector: one brute-force signal).
fn mixed_batch(attacker: &str) -> Vec<Value> {
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
        batch.push(rec(i, "/admin/login", 401, attacker, "mallory@example.com"));
    }
    batch
}

/// The NATS server itself dies (SIGKILL) and comes back on the same port
/// with the same store: every component process survives or is restarted,
/// the supervisor sees them all healthy again, records sent while NATS was
/// down are delivered, refused to the app or counted lost (the books
/// balance against what the app was told), new records flow end to end
/// and a new deploy finalizes.
///
/// A short outage (3 s, under `hung_after`): every process rides it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_recovers_after_the_nats_server_is_killed_and_restarted() {
    nats_outage("natsfault", Duration::from_secs(3), "").await;
}

/// An outage longer than `hung_after` (8 s against 3 s): the children's
/// silence is NATS's, not theirs, so the supervisor kills none of them
/// (killing them threw away the sidecar's count of what it had accepted:
/// records the app was told were accepted vanished from the books).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_recovers_after_a_nats_outage_longer_than_hung_after() {
    nats_outage("natslong", Duration::from_secs(8), "hung_after_ms = 3000").await;
}

/// Kills the cluster's private NATS server for `down`, restarts it, and
/// checks the recovery (see above); `extra` goes into `[supervisor]`.
/// Every process must ride the outage out: none is restarted.
async fn nats_outage(name: &str, down: Duration, extra: &str) {
    let _one = ONE_AT_A_TIME.lock().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = std::env::temp_dir().join(format!("ben-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let store = base.join("nats-store");
    std::fs::create_dir_all(&store).unwrap();
    let mut nats = PrivateNats::start(port, &store);
    let mut c = Cluster::start_full(
        name,
        2,
        0,
        &format!("nats = \"nats://127.0.0.1:{port}\""),
        "",
        extra,
    )
    .await;
    assert_eq!(c.cfg.nats, format!("nats://127.0.0.1:{port}"));
    let version = c.deploy_shop().await;
    let seen = watch(
        c.bus.subscribe("ben.data.detector.*", None).await.unwrap(),
        c.bus.subscribe("ben.dlq", None).await.unwrap(),
    );
    let mut app = Client::connect(&c.cfg.socket, "shop_web").await.unwrap();

    // Before the fault: the records flow end to end.
    let mut app_accepted = 0u64;
    let acc = app.send(&mixed_batch("203.0.113.9")).await.unwrap();
    assert_eq!((acc.accepted, acc.errors.len()), (57, 0));
    app_accepted += acc.accepted;
    let sig = tokio::time::timeout(Duration::from_secs(10), app.signals.recv())
        .await
        .expect("a signal before the fault")
        .unwrap();
    assert_eq!(
        (sig.name.as_str(), sig.key.clone()),
        ("auth.bruteforce", vec!["203.0.113.9".to_string()])
    );
    let st = c
        .wait("the first books to settle", Duration::from_secs(20), |s| {
            s["records"]["settled"] == true && s["records"]["accepted"] == 57
        })
        .await;
    assert_eq!(
        (
            &st["records"]["to_detectors"],
            &st["records"]["to_lucius"],
            &st["records"]["lost"]
        ),
        (&json!(17), &json!(40), &json!(0)),
        "{st:#}"
    );
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.records, 17);
        assert_eq!(s.flags.get("server_error"), Some(&10));
        assert_eq!(s.flags.get("login_failed"), Some(&7));
    }
    let pids_before: BTreeMap<String, u64> = st["components"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, v)| (id.clone(), v["pid"].as_u64().unwrap()))
        .collect();
    assert_eq!(pids_before.len(), 7, "{st:#}");

    // The fault: NATS is killed, stays down ~3 s, comes back on the same
    // port and store. The app keeps sending meanwhile.
    nats.kill();
    let killed_at = Instant::now();
    let restart = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            std::thread::sleep(down);
            (PrivateNats::start(port, &store), Instant::now())
        })
    };
    let (mut sent_down, mut refused_down, mut failed_sends, mut reconnects) = (0u64, 0u64, 0, 0);
    let mut b = 0usize;
    while !restart.is_finished() {
        let batch: Vec<Value> = (0..20)
            .map(|i| {
                if i % 2 == 0 {
                    rec(
                        b * 20 + i,
                        "/checkout",
                        503,
                        "10.5.5.5",
                        "carol@example.com",
                    )
                } else {
                    rec(
                        b * 20 + i,
                        "/products/2",
                        200,
                        "198.51.100.8",
                        "d@example.com",
                    )
                }
            })
            .collect();
        b += 1;
        sent_down += 20;
        match tokio::time::timeout(Duration::from_secs(30), app.send(&batch)).await {
            Ok(Ok(acc)) => {
                app_accepted += acc.accepted;
                refused_down += acc.errors.len() as u64;
                assert_eq!(acc.accepted + acc.errors.len() as u64, 20);
            }
            Ok(Err(_)) => {
                // The sidecar connection broke: none of the batch was
                // accepted as far as the app knows. Attest again.
                failed_sends += 1;
                refused_down += 20;
                app = loop {
                    match Client::connect(&c.cfg.socket, "shop_web").await {
                        Ok(a) => break a,
                        Err(e) => {
                            assert!(
                                killed_at.elapsed() < Duration::from_secs(60),
                                "the app cannot attest again: {e}"
                            );
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                };
                reconnects += 1;
            }
            Err(_) => panic!("a send blocked for 30 s while NATS was down"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(sent_down >= 20, "the app sent nothing while NATS was down");
    let (server, restarted_at) = restart.await.unwrap();
    nats = server;
    let down_for = restarted_at - killed_at;

    // Recovery: every component healthy again, each the same process or
    // a restarted one that is alive.
    let st = c
        .wait(
            "every process healthy after the NATS restart",
            Duration::from_secs(60),
            |s| {
                s["components"].as_object().is_some_and(|m| {
                    m.len() == 7
                        && m.values()
                            .all(|v| v["healthy"] == true && v["pid"].as_u64().is_some())
                })
            },
        )
        .await;
    let healthy_after = restarted_at.elapsed();
    let mut restarted = Vec::new();
    for (id, before) in &pids_before {
        let comp = &st["components"][id];
        let pid = comp["pid"].as_u64().unwrap();
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "{id} (pid {pid}) is not running: {st:#}"
        );
        if pid != *before {
            assert!(
                comp["restarts"].as_u64() > Some(0),
                "{id} has a new pid without a restart: {st:#}"
            );
            restarted.push(id.clone());
        }
    }
    assert_eq!(
        (restarted.as_slice(), &st["restarts"]),
        (&[][..], &json!(0)),
        "the NATS outage restarted processes: {st:#}"
    );

    // What was sent while NATS was down settles: delivered, or counted.
    let st = c
        .wait(
            "the books to settle after the outage",
            Duration::from_secs(60),
            |s| {
                s["records"]["settled"] == true
                    && s["records"]["accepted"].as_u64() == Some(app_accepted)
            },
        )
        .await;
    let r = &st["records"];
    let n = |r: &Value, k: &str| r[k].as_u64().unwrap();
    assert_eq!(
        n(r, "to_detectors") + n(r, "to_lucius") + n(r, "dead_letters") + n(r, "lost"),
        app_accepted,
        "{st:#}"
    );
    let lost_in_outage = n(r, "lost");
    // Only what was sent during the outage can be missing.
    assert!(
        lost_in_outage <= sent_down - refused_down,
        "lost {lost_in_outage} of {} accepted while NATS was down: {st:#}",
        sent_down - refused_down
    );
    // While it cannot reach NATS the sidecar tells the app, record by
    // record, instead of accepting into a client buffer.
    assert!(
        refused_down > failed_sends as u64 * 20,
        "no record was refused during a {:.0} s outage ({sent_down} sent): {st:#}",
        down_for.as_secs_f64()
    );
    let (det0, luc0) = (n(r, "to_detectors"), n(r, "to_lucius"));

    // New records from the app flow end to end again, with a signal.
    let recovered_at = Instant::now();
    let acc = loop {
        match app.send(&mixed_batch("203.0.113.77")).await {
            Ok(acc) => break acc,
            Err(e) => {
                assert!(
                    recovered_at.elapsed() < Duration::from_secs(30),
                    "the app cannot send after the restart: {e}"
                );
                app = Client::connect(&c.cfg.socket, "shop_web").await.unwrap();
                reconnects += 1;
            }
        }
    };
    assert_eq!((acc.accepted, acc.errors.len()), (57, 0));
    app_accepted += acc.accepted;
    let sig = loop {
        let s = tokio::time::timeout(Duration::from_secs(20), app.signals.recv())
            .await
            .expect("a signal after the NATS restart")
            .unwrap();
        if s.key == vec!["203.0.113.77".to_string()] {
            break s;
        }
    };
    assert_eq!(sig.name, "auth.bruteforce");
    assert_eq!(sig.intent_version, version);
    let st = c
        .wait(
            "the new records to be accounted for",
            Duration::from_secs(30),
            |s| {
                s["records"]["settled"] == true
                    && s["records"]["accepted"].as_u64() == Some(app_accepted)
            },
        )
        .await;
    let r = &st["records"];
    assert_eq!(
        (
            n(r, "to_detectors") - det0,
            n(r, "to_lucius") - luc0,
            n(r, "lost")
        ),
        (17, 40, lost_in_outage),
        "the post-restart batch is delivered in full: {st:#}"
    );
    assert_eq!(
        n(r, "to_detectors") + n(r, "to_lucius") + n(r, "dead_letters") + n(r, "lost"),
        app_accepted,
        "{st:#}"
    );
    let flowed_after = recovered_at.elapsed();

    // A new deploy finalizes after the restart (v2: 4xx are server
    // errors), and every component runs it.
    let v2_dir = base.join("shop-v2");
    copy_shop(&v2_dir, 400);
    let t0 = Instant::now();
    let v2 = c.deploy_bundle(&v2_dir).await;
    let deploy_took = t0.elapsed();
    assert_ne!(v2, version);
    c.wait("every component on v2", Duration::from_secs(20), |s| {
        s["components"].as_object().is_some_and(|m| {
            m.values()
                .all(|v| v["kind"] == "control" || v["intent"] == v2.as_str())
        })
    })
    .await;
    let before = seen.lock().unwrap().versions.get(&v2).copied();
    assert_eq!(before, None);
    let acc = app
        .send(&[rec(1, "/products/404", 404, "10.6.6.6", "e@example.com")])
        .await
        .unwrap();
    assert_eq!(acc.accepted, 1);
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if seen.lock().unwrap().versions.get(&v2) == Some(&1) {
            break;
        }
        assert!(
            Instant::now() < until,
            "a v2 record did not reach the detector"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    println!(
        "{name}: NATS killed and restarted after {:.1} s: all 7 processes healthy {:.1} s after the restart (restarted: {restarted:?}); sent while down {sent_down}, refused/failed {refused_down} ({failed_sends} broken sends, {reconnects} re-attestations), lost (counted) {lost_in_outage}; new batch end to end in {:.1} s; v2 deploy finalized in {:.1} s",
        down_for.as_secs_f64(),
        healthy_after.as_secs_f64(),
        flowed_after.as_secs_f64(),
        deploy_took.as_secs_f64(),
    );
    c.stop().await;
    nats.kill();
    let _ = std::fs::remove_dir_all(&base);
}

/// Revocation in cluster mode: the sidecar process reports the app's BEE
/// to the control process (listed by the API); revoking its subject there
/// closes the app's connection within 1 s and its next Hello is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_app_is_dropped_and_refused_across_processes() {
    let _one = ONE_AT_A_TIME.lock().await;
    let c = Cluster::start("revoke", 1, 0, "").await;
    c.deploy_shop().await;
    let mut app = Client::connect(&c.cfg.socket, "shop_web")
        .await
        .expect("attested");
    let subject = app.welcome().await.bee_subject;
    let mut listed = Value::Null;
    for _ in 0..100 {
        listed = get_json(c.api, "/api/v1/bees").await;
        if listed["bees"].as_array().is_some_and(|b| !b.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed["bees"][0]["subject"], subject.as_str(), "{listed}");
    assert_eq!(listed["bees"][0]["sidecar"], "sidecar-1", "{listed}");
    let body = json!({ "subject": subject }).to_string();
    let (code, answer) = http(c.api, "POST", "/api/v1/bees/revoke", body.as_bytes()).await;
    assert_eq!(code, 200, "{answer}");
    let t0 = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(1), async {
        while app.signals.recv().await.is_some() {}
    })
    .await;
    assert!(
        closed.is_ok(),
        "still connected {:?} after the revocation",
        t0.elapsed()
    );
    match Client::connect(&c.cfg.socket, "shop_web").await {
        Err(ben_client::ClientError::Refused(r)) => assert!(r.contains("revoked"), "{r}"),
        other => panic!("expected a refusal, got {:?}", other.err()),
    }
    c.stop().await;
}

/// Two detectors; one is stopped (SIGTERM) under traffic and restarted by
/// the supervisor: while it leaves, the partitions it served stay served
/// (it goes silent and serves on until the other detector has taken them),
/// so no record is lost and the books balance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detector_stopped_under_traffic_hands_its_partitions_over() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = Cluster::start_scaled("detterm", 1, 0, "", "detectors = 2", "").await;
    c.deploy_shop().await;
    let mut app = Client::connect(&c.cfg.socket, "shop_web").await.unwrap();
    let victim = c.status().await["components"]["detector-1"]["pid"]
        .as_u64()
        .expect("detector-1 runs");
    let mut accepted = 0u64;
    for b in 0..100usize {
        let batch: Vec<Value> = (0..20)
            .map(|i| {
                rec(
                    b * 20 + i,
                    "/checkout",
                    503,
                    &format!("10.1.{}.{}", b % 7, i),
                    "carol@example.com",
                )
            })
            .collect();
        accepted += app.send(&batch).await.unwrap().accepted;
        if b == 20 {
            std::process::Command::new("kill")
                .args(["-TERM", &victim.to_string()])
                .status()
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(accepted, 2000);
    let st = c
        .wait("the books to settle", Duration::from_secs(60), |s| {
            s["records"]["settled"] == true && s["records"]["accepted"].as_u64() == Some(accepted)
        })
        .await;
    let r = &st["records"];
    let n = |k: &str| r[k].as_u64().unwrap();
    assert_eq!(
        st["components"]["detector-1"]["last_exit"], "exited with status 0",
        "{st:#}"
    );
    assert_eq!(n("lost"), 0, "records lost while a detector left: {st:#}");
    assert_eq!(n("to_detectors") + n("dead_letters"), accepted, "{st:#}");
    c.stop().await;
}

/// Each validator's announced commits: (validator, height, anomalies
/// admitted, when it arrived), verified against the cluster's keyring.
type Commits = Arc<std::sync::Mutex<Vec<(String, u64, u32, Instant)>>>;

fn watch_commits(bus: Arc<dyn Bus>, keyring: ben_wire::Keyring) -> Commits {
    let seen: Commits = Arc::default();
    let out = seen.clone();
    tokio::spawn(async move {
        let mut sub = bus
            .subscribe(ben_mesh_wire::COMMITS_SUBJECT, None)
            .await
            .unwrap();
        while let Some(m) = sub.next().await {
            let c = ben_wire::open_bytes::<ben_mesh_wire::CommitEvent>(&m.payload, &keyring)
                .expect("a commit signed by a validator")
                .into_inner();
            out.lock().unwrap().push((
                c.validator,
                c.height,
                c.anomalies.len() as u32,
                Instant::now(),
            ));
        }
    });
    seen
}

/// The highest height announced by `who` (any validator: None) since `t`.
fn top(seen: &Commits, who: Option<&str>, since: Instant) -> u64 {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(v, _, _, at)| who.is_none_or(|w| w == v) && *at >= since)
        .map(|(_, h, _, _)| *h)
        .max()
        .unwrap_or(0)
}

async fn wait_for(what: &str, max: Duration, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + max;
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `sig` to `pid`; false when there is no such process.
fn signal(pid: u64, sig: &str) -> bool {
    std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// CyberMesh in cluster mode: the AI service, four validators and an
/// enforcement agent, each its own process. A recorded port scan's flows
/// go through the whole loop (anomaly → block → policy → ack → feedback
/// lifecycle COMMITTED). The validators agree over their own TCP links,
/// take signed anomalies from NATS and write each block once to
/// PostgreSQL. One killed with SIGKILL
/// is restarted by the supervisor, catches up and votes again; with one
/// killed and another frozen (two of four: no quorum) nothing commits,
/// and commits resume when the killed one returns while the frozen one is
/// still away; thawed, it catches up too. PostgreSQL stopped: every
/// validator retries, then halts (the status line says HALTED) and nothing
/// commits; restarted, the chain resumes. The tables end with every height
/// once, no gap, and every anomaly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_run_as_processes_and_ride_out_kills() {
    let _one = ONE_AT_A_TIME.lock().await;
    // A PostgreSQL of the test's own: it goes away near the end.
    let pg = ben_sql::testing::PrivatePg::start();
    let db_url = pg.url();
    let addrs = validator_addrs();
    // Restarts wait 3 s: long enough to see what a missing validator does.
    let extra = format!(
        "backoff_initial_ms = 3000\nbackoff_max_ms = 3000\n[validators]\naddrs = [{}]\n[enforcer]\nbackend = \"dry-run\"\n[mesh]\nevery_ms = 1000\n",
        addrs.join(", ")
    );
    let mut c = Cluster::start_all(
        "validators",
        1,
        0,
        "",
        &format!("database_url = \"{db_url}\""),
        "",
        &extra,
        &[],
        6,
    )
    .await;
    let (mut acks, seen, t0) = mesh_committing(&c).await;
    let line = cluster::status_line(&c.status().await);
    assert!(line.contains("| chain height "), "{line}");

    // Signed anomalies from the AI service's key: committed once each.
    publish_anomalies(&c, "cl-an", 9, 0..20).await;
    wait_for("20 anomalies committed", Duration::from_secs(30), || {
        let s = seen.lock().unwrap();
        s.iter()
            .filter(|(v, ..)| v == "validator-1")
            .map(|(_, _, a, _)| *a)
            .sum::<u32>()
            >= 20
    })
    .await;

    // The agent checked each block policy against the validators' keys
    // and acks each source once (a dry run), though four validators
    // announce it; `benctl mesh enforcement | validators` show it all.
    let applied = applied_acks(&c, &mut acks, 20).await;
    assert_eq!(applied.len(), 20, "{applied:?}");
    let e = get_json(c.api, "/api/v1/mesh/enforcement").await;
    assert_eq!(e["entries"].as_array().map(Vec::len), Some(20), "{e}");
    let v = get_json(c.api, "/api/v1/mesh/validators").await;
    assert_eq!(v["validators"].as_array().map(Vec::len), Some(4), "{v}");

    // The whole loop across processes: a recorded port scan's flows on
    // ben.mesh.flows → the AI service's anomaly → the validators' block →
    // the agent's ack → the feedback loop's lifecycle, COMMITTED, acked.
    let blocked_in = scan_through_the_loop(&c, &mut acks).await;
    // 20 test anomalies' sources and the scanner, in the agent's books
    // and on the status line.
    let st = c
        .wait(
            "the agent's entries in the status",
            Duration::from_secs(10),
            |s| s["blocked"] == 21,
        )
        .await;
    let line = cluster::status_line(&st);
    assert!(line.contains("| blocked 21"), "{line}");

    let pid_of = |st: &Value, id: &str| st["components"][id]["pid"].as_u64();
    let voted = |id: &'static str| {
        let url = db_url.clone();
        async move {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let v: Option<i64> = sqlx::query_scalar("SELECT voted FROM validators WHERE id = $1")
                .bind(id)
                .fetch_optional(&pool)
                .await
                .unwrap();
            pool.close().await;
            v.unwrap_or(0)
        }
    };

    // SIGKILL one: restarted, it catches up and votes again.
    let st = c.status().await;
    let old = pid_of(&st, "validator-2").unwrap();
    assert!(signal(old, "-KILL"));
    let killed = Instant::now();
    c.wait("validator-2 restarted", Duration::from_secs(30), |s| {
        pid_of(s, "validator-2").is_some_and(|p| p != old)
    })
    .await;
    let back = Instant::now();
    assert!(
        back - killed >= Duration::from_millis(2_500),
        "restarted before its back-off"
    );
    let others = top(&seen, None, t0);
    let votes = voted("validator-2").await;
    wait_for("validator-2 caught up", Duration::from_secs(30), || {
        top(&seen, Some("validator-2"), back) >= others + 3
    })
    .await;
    let caught_up = back.elapsed();
    let t = Instant::now();
    loop {
        if voted("validator-2").await >= votes + 3 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "validator-2 does not vote again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // One killed and one frozen: no quorum, nothing commits.
    let st = c.status().await;
    let (three, four) = (
        pid_of(&st, "validator-3").unwrap(),
        pid_of(&st, "validator-4").unwrap(),
    );
    assert!(signal(three, "-KILL"));
    assert!(signal(four, "-STOP"));
    let down = Instant::now();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let stuck = top(&seen, None, t0);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let st = c.status().await;
    assert_eq!(
        pid_of(&st, "validator-3"),
        None,
        "validator-3 came back before its back-off"
    );
    assert_eq!(top(&seen, None, t0), stuck, "committed without a quorum");
    assert!(down.elapsed() < Duration::from_millis(3_000));
    // validator-3 returns (validator-4 still frozen): commits resume.
    c.wait("validator-3 restarted", Duration::from_secs(30), |s| {
        pid_of(s, "validator-3").is_some()
    })
    .await;
    let returned = Instant::now();
    wait_for(
        "commits resumed with three of four",
        Duration::from_secs(60),
        || top(&seen, None, t0) >= stuck + 3,
    )
    .await;
    let resumed = returned.elapsed();
    // validator-4 thaws (or, frozen past hung_after, was killed and
    // restarted): it catches up.
    let _ = signal(four, "-CONT");
    let thawed = Instant::now();
    let now_top = top(&seen, None, t0);
    wait_for("validator-4 caught up", Duration::from_secs(40), || {
        top(&seen, Some("validator-4"), thawed) >= now_top + 2
    })
    .await;
    let thaw_took = thawed.elapsed();

    // PostgreSQL goes away: the validators retry, then halt, visibly
    // (status line), and nothing commits; back, the chain resumes with no
    // height lost or skipped.
    pg.stop();
    let st = c
        .wait("every validator halted", Duration::from_secs(60), |s| {
            s["halted"].as_array().map(Vec::len) == Some(4)
        })
        .await;
    let line = cluster::status_line(&st);
    assert!(line.contains("HALTED: validator-1"), "{line}");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let halted_at = top(&seen, None, t0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(top(&seen, None, t0), halted_at, "committed while halted");
    pg.resume();
    let resumed_pg = Instant::now();
    c.wait("the halt lifted", Duration::from_secs(60), |s| {
        s["halted"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    wait_for("commits after the outage", Duration::from_secs(60), || {
        top(&seen, None, t0) >= halted_at + 3
    })
    .await;
    let pg_back = resumed_pg.elapsed();

    // The tables: every height once from 1, no gap; every anomaly once.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let pool = sqlx::PgPool::connect(&db_url).await.unwrap();
    let heights: Vec<i64> = sqlx::query_scalar("SELECT height FROM blocks ORDER BY height")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(heights.len() as u64 >= stuck, "{} blocks", heights.len());
    assert!(
        heights.iter().enumerate().all(|(i, h)| *h == i as i64 + 1),
        "heights with a gap: {heights:?}"
    );
    let anomalies: i64 =
        sqlx::query_scalar("SELECT count(*) FROM anomalies WHERE id LIKE 'cl-an-%'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(anomalies, 20);
    pool.close().await;
    println!(
        "cluster closed loop: scan flows replayed -> ack applied in {:.2} s",
        blocked_in.as_secs_f64()
    );
    println!(
        "PostgreSQL down: every validator halted at height {halted_at}; back, 3 more heights in {:.2} s",
        pg_back.as_secs_f64()
    );
    println!(
        "validator processes: killed validator-2 back after {:.1} s, caught up {:.2} s later; no commit for {:.1} s with two of four away (height {stuck}); 3 more heights {:.2} s after validator-3 returned; validator-4 caught up {:.2} s after thawing; {} heights in PostgreSQL, no gap",
        (back - killed).as_secs_f64(),
        caught_up.as_secs_f64(),
        (returned - down).as_secs_f64(),
        resumed.as_secs_f64(),
        thaw_took.as_secs_f64(),
        heights.len()
    );
    // The CyberMesh kinds' own metrics ports.
    let own = own_metrics(&c).await;
    for id in ["validator-1", "validator-4", "mesh-1", "enforcer-1"] {
        assert!(
            own.contains_key(id),
            "{id} has no metrics port: {:?}",
            own.keys()
        );
    }
    let height = own["validator-1"]
        .samples
        .iter()
        .find(|s| s.metric == "ben_mesh_chain_height")
        .map(|s| s.value.clone());
    assert!(
        matches!(height, Some(prometheus_parse::Value::Gauge(h)) if h >= 1.0),
        "validator-1's chain height: {height:?}"
    );
    c.stop().await;
}

/// The agent's acks subscribed, every validator's commits watched, and
/// every validator seen committing: (acks, commits, since when).
async fn mesh_committing(c: &Cluster) -> (ben_bus::Subscription, Commits, Instant) {
    let acks = c
        .bus
        .subscribe(ben_mesh_wire::ACK_SUBJECT, None)
        .await
        .unwrap();
    let seen = watch_commits(c.bus.clone(), c.keyring.clone());
    let t0 = Instant::now();
    wait_for(
        "every validator committing",
        Duration::from_secs(60),
        || (1..=4).all(|i| top(&seen, Some(&format!("validator-{i}")), t0) >= 2),
    )
    .await;
    (acks, seen, t0)
}

/// Signed anomalies, as if the AI service (`mesh-1`) had published them:
/// ids `<tag>-<k>`, sources `10.<net>.0.<k+1>`.
async fn publish_anomalies(c: &Cluster, tag: &str, net: u8, ks: std::ops::Range<u32>) {
    let (ai, _) = cluster::keys::load(&c.cfg.key_dir, "mesh-1").unwrap();
    let now_us = ben_time::now_ns() / 1_000;
    for k in ks {
        let ev = ben_mesh_detect::wire::AnomalyEvent {
            id: format!("{tag}-{k}"),
            class: "portscan".into(),
            confidence: 0.9,
            source: Some(ben_mesh_detect::wire::Endpoint {
                ip: format!("10.{net}.0.{}", k + 1),
                port: 0,
            }),
            window_end_us: now_us,
            ..Default::default()
        };
        c.bus
            .publish(ben_mesh_detect::wire::ANOMALIES_SUBJECT, ai.seal_bytes(&ev))
            .await
            .unwrap();
    }
}

/// Acks until `n` targets were acked `applied` (a dry run), within 20 s:
/// how often each target was acked.
async fn applied_acks(
    c: &Cluster,
    acks: &mut ben_bus::Subscription,
    n: usize,
) -> BTreeMap<String, usize> {
    let mut applied = BTreeMap::new();
    let t = Instant::now();
    while applied.len() < n && t.elapsed() < Duration::from_secs(20) {
        let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(1), acks.next()).await else {
            continue;
        };
        let a = ben_wire::open_bytes::<ben_mesh_wire::PolicyAck>(&m.payload, &c.keyring)
            .expect("an ack signed by the agent")
            .into_inner();
        assert_eq!(
            (a.status.as_str(), a.backend.as_str()),
            ("applied", "dry-run"),
            "{a:?}"
        );
        *applied.entry(a.target).or_insert(0) += 1;
    }
    applied
}

/// A recorded port scan's flows replayed on `ben.mesh.flows` go through
/// the whole loop: the AI service's anomaly, the validators' block, the
/// agent's ack, the feedback lifecycle COMMITTED and acked. Returns the
/// time from the replay to the ack.
async fn scan_through_the_loop(c: &Cluster, acks: &mut ben_bus::Subscription) -> Duration {
    let scanner = "203.0.113.66";
    let mut anomalies = c
        .bus
        .subscribe(ben_mesh_detect::wire::ANOMALIES_SUBJECT, None)
        .await
        .unwrap();
    let capture = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mesh/portscan.pcap"),
    )
    .unwrap();
    // One replay: the AI service keeps its windows open across the
    // batches the replay arrives in and judges it as it comes (before
    // streaming, a replay straddling two of its batches was split and
    // this test replayed up to three times).
    let (_, rows) = ben_mesh_flows::replay_rows(&capture, ben_time::now_ns() as u64).unwrap();
    let replayed = Instant::now();
    let (sensor, _) = cluster::keys::load(&c.cfg.key_dir, "sensor-test").unwrap();
    let mut seq = ben_mesh_sensor::Numbering::starting_at(ben_time::now_ns() as u64);
    for batch in ben_mesh_sensor::seal_batches(
        &sensor,
        "sensor-test",
        &mut seq,
        rows,
        ben_mesh_sensor::batch_bytes(c.bus.max_payload()),
    ) {
        c.bus.publish(ben_mesh_ai::FLOWS, batch).await.unwrap();
    }
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    let scan = loop {
        let Ok(m) = tokio::time::timeout_at(until, anomalies.next()).await else {
            // What the AI service took (`processed`: flows judged) and
            // refused (dead letters), for whoever reads the failure.
            panic!(
                "no anomaly for the scan: {:#}",
                c.status().await["components"]["mesh-1"]
            );
        };
        let a = ben_wire::open_bytes::<ben_mesh_detect::wire::AnomalyEvent>(
            &m.unwrap().payload,
            &c.keyring,
        )
        .expect("signed by the AI service")
        .into_inner();
        if a.source.as_ref().is_some_and(|s| s.ip == scanner) {
            break a;
        }
    };
    let t = Instant::now();
    let acked = loop {
        let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(1), acks.next()).await else {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "no ack for the scanner"
            );
            continue;
        };
        let a = ben_wire::open_bytes::<ben_mesh_wire::PolicyAck>(&m.payload, &c.keyring)
            .unwrap()
            .into_inner();
        if a.target == scanner {
            break a;
        }
    };
    assert_eq!(acked.status, "applied", "{acked:?}");
    let blocked_in = replayed.elapsed();
    let t = Instant::now();
    let life = loop {
        let a = get_json(c.api, &format!("/api/v1/mesh/anomalies/{}", scan.id)).await;
        if a["lifecycle"]["state"] == "COMMITTED"
            && a["lifecycle"]["acks"]
                .as_array()
                .is_some_and(|x| !x.is_empty())
        {
            break a;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "lifecycle: {a}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(life["height"].as_u64().unwrap() >= 1, "{life}");
    assert_eq!(life["policies"][0]["target"], scanner, "{life}");
    let th = get_json(c.api, "/api/v1/mesh/thresholds").await;
    assert!(th["counts"]["COMMITTED"].as_u64() >= Some(1), "{th}");
    blocked_in
}

/// Four free loopback addresses for `[validators] addrs`, quoted.
fn validator_addrs() -> Vec<String> {
    (0..4)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("\"{}\"", l.local_addr().unwrap())
        })
        .collect()
}

/// Live capture in cluster mode: `[sensor]` runs `ben sensor` as a process
/// of its own, capturing on a victim's interface in a network namespace;
/// a port scan from another namespace reaches the AI service's process as
/// the sensor's signed flows over NATS and is named, while a benign client
/// loading pages is not; the status line shows what the sensor captured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_scan_is_named_across_processes() {
    let _one = ONE_AT_A_TIME.lock().await;
    let lan = std::sync::Arc::new(
        ben_mesh_sensor::lab::Lan::new().expect("a LAN of network namespaces (root)"),
    );
    let addrs = validator_addrs();
    let extra = format!(
        "[validators]\naddrs = [{}]\n[enforcer]\nbackend = \"dry-run\"\n[mesh]\n[sensor]\niface = \"evictim\"\nnetns = \"{}\"\nidle_timeout_ms = 2000\n",
        addrs.join(", "),
        lan.ns("victim")
    );
    // Four validators, the AI service, the agent and the sensor.
    let c = Cluster::start_all("sensor", 1, 0, "", "", "", &extra, &[], 7).await;
    let mut anomalies = c
        .bus
        .subscribe(ben_mesh_detect::wire::ANOMALIES_SUBJECT, None)
        .await
        .unwrap();
    // The sensor process is healthy; its ring takes packets once bound:
    // page loads until its count shows them.
    let t = Instant::now();
    loop {
        let l = lan.clone();
        tokio::task::spawn_blocking(move || l.browse().join())
            .await
            .unwrap()
            .unwrap()
            .expect("the benign client loads pages");
        let st = c.status().await;
        if st["captured"].as_u64() > Some(0) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the sensor captured nothing: {}",
            cluster::status_line(&st)
        );
    }
    let benign = lan.clone();
    let browsing = tokio::task::spawn_blocking(move || benign.browse().join());
    let l = lan.clone();
    tokio::task::spawn_blocking(move || l.scan(2))
        .await
        .unwrap()
        .expect("the scan runs");
    let scanned = Instant::now();
    let (scanner, user) = (lan.ip(2), lan.ip(4));
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    let named = loop {
        let Ok(Some(m)) = tokio::time::timeout_at(until, anomalies.next()).await else {
            panic!(
                "no anomaly for the live scan: {}",
                cluster::status_line(&c.status().await)
            );
        };
        let a = ben_wire::open_bytes::<ben_mesh_detect::wire::AnomalyEvent>(&m.payload, &c.keyring)
            .expect("signed by the AI service")
            .into_inner();
        let src = a.source.as_ref().map(|s| s.ip.clone()).unwrap_or_default();
        assert_ne!(src, user, "the benign client was named: {a:?}");
        if src == scanner {
            break a;
        }
    };
    let took = scanned.elapsed();
    browsing.await.unwrap().unwrap().expect("pages load");
    // Nothing names the benign client in the next second either.
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(Some(m)) = tokio::time::timeout_at(until, anomalies.next()).await {
        let a = ben_wire::open_bytes::<ben_mesh_detect::wire::AnomalyEvent>(&m.payload, &c.keyring)
            .unwrap()
            .into_inner();
        assert!(
            a.source.as_ref().is_none_or(|s| s.ip != user),
            "the benign client was named: {a:?}"
        );
    }
    let line = cluster::status_line(&c.status().await);
    assert!(line.contains("| captured "), "{line}");
    assert!(line.contains("kernel drops 0"), "{line}");
    println!(
        "cluster live capture: {} named ({}) {:.2} s after the scan ended; {line}",
        scanner,
        named.class,
        took.as_secs_f64()
    );
    // The sensor's own metrics port: what it captured.
    let own = own_metrics(&c).await;
    let captured = own["sensor-1"]
        .samples
        .iter()
        .find(|s| s.metric == "ben_mesh_frames_captured_total")
        .map(|s| s.value.clone());
    assert!(
        matches!(captured, Some(prometheus_parse::Value::Counter(v)) if v >= 1.0),
        "sensor-1's captured frames: {captured:?}"
    );
    c.stop().await;
}

/// CyberMesh's eight topics on Kafka (`[bus] kind = "kafka"`; a tansu
/// broker of the test's own), everything else on NATS, each component its
/// own process: signed anomalies published to Kafka are committed by the
/// four validators, whose block policies the agent applies and acks; a
/// recorded scan goes through the whole loop (flows on NATS → the AI
/// service's anomaly on Kafka → block → ack → feedback lifecycle
/// COMMITTED). The agent killed with SIGKILL while anomalies keep coming
/// is restarted and resumes from its committed offsets: every new source
/// is acked. A wildcard over a Kafka topic and a missing broker are
/// refused with the reason.
#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_loop_runs_on_kafka_across_processes() {
    let _one = ONE_AT_A_TIME.lock().await;
    let broker = ben_bus_kafka::testing::Broker::in_memory();
    let addrs = validator_addrs();
    let topics = format!(
        "k{}x{}.",
        std::process::id(),
        ben_time::now_ns() % 1_000_000_000
    );
    let extra = format!(
        "backoff_initial_ms = 1000\nbackoff_max_ms = 1000\n[validators]\naddrs = [{}]\n[enforcer]\nbackend = \"dry-run\"\n[mesh]\nevery_ms = 1000\n[bus]\nkind = \"kafka\"\nbrokers = \"{}\"\ntopic_prefix = \"{topics}\"\n",
        addrs.join(", "),
        broker.addr()
    );
    let mut c = Cluster::start_all("kafka", 1, 0, "", "", "", &extra, &[], 6).await;
    // The topics are Kafka's: the test's own bus is the split one.
    let e = c
        .bus
        .subscribe("control.>", None)
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("carried on Kafka"), "{e}");
    let (mut acks, _, _) = mesh_committing(&c).await;
    publish_anomalies(&c, "ka-an", 8, 0..10).await;
    let applied = applied_acks(&c, &mut acks, 10).await;
    assert_eq!(applied.len(), 10, "{applied:?}");
    let blocked_in = scan_through_the_loop(&c, &mut acks).await;

    // A forged anomaly (a sensor's key may not sign one): every validator
    // dead-letters it on ai.dlq.v1, on Kafka, and the supervisor counts
    // those dead letters on its status line.
    let before = c.status().await["other_dead_letters"]
        .as_u64()
        .expect("the count");
    let (sensor, _) = cluster::keys::load(&c.cfg.key_dir, "sensor-test").unwrap();
    let forged = ben_mesh_detect::wire::AnomalyEvent {
        id: "ka-forged".into(),
        class: "portscan".into(),
        confidence: 0.9,
        ..Default::default()
    };
    c.bus
        .publish(
            ben_mesh_detect::wire::ANOMALIES_SUBJECT,
            sensor.seal_bytes(&forged),
        )
        .await
        .unwrap();
    let st = c
        .wait(
            "the validators' dead letters counted",
            Duration::from_secs(20),
            |s| s["other_dead_letters"].as_u64() >= Some(before + 4),
        )
        .await;
    let line = cluster::status_line(&st);
    assert!(line.contains("| other dead letters "), "{line}");

    // The agent killed: anomalies keep coming; restarted, it reads on from
    // the offsets it committed and acks the new sources.
    let pid_of = |st: &Value, id: &str| st["components"][id]["pid"].as_u64();
    let st = c.status().await;
    let old = pid_of(&st, "enforcer-1").expect("the agent's pid");
    assert!(signal(old, "-KILL"));
    let killed = Instant::now();
    publish_anomalies(&c, "ka-down", 7, 0..10).await;
    c.wait("the agent restarted", Duration::from_secs(30), |s| {
        pid_of(s, "enforcer-1").is_some_and(|p| p != old)
    })
    .await;
    let mut resumed = BTreeMap::new();
    let t = Instant::now();
    while resumed.len() < 10 && t.elapsed() < Duration::from_secs(40) {
        for (target, n) in applied_acks(&c, &mut acks, 1).await {
            if target.starts_with("10.7.0.") {
                *resumed.entry(target).or_insert(0) += n;
            }
        }
    }
    assert_eq!(resumed.len(), 10, "acked after the restart: {resumed:?}");
    let back = killed.elapsed();
    println!(
        "CyberMesh on Kafka across processes: scan replayed -> ack applied in {:.2} s; agent killed with 10 anomalies on their way: all 10 sources acked {:.1} s after the kill",
        blocked_in.as_secs_f64(),
        back.as_secs_f64()
    );
    c.stop().await;

    // No broker: a process on Kafka says so and does not start.
    let cfg = ClusterConfig::parse(
        Path::new("/tmp/k.toml"),
        "prefix = \"kafka-none\"\n[bus]\nkind = \"kafka\"\nbrokers = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let e = cluster::connect(&cfg).await.err().expect("no broker");
    assert!(e.contains("127.0.0.1:1"), "{e}");
}
