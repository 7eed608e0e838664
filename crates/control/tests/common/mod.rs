//! Shared set-up: a real in-process bus, a FileStore in a temp dir, the
//! ledger on SQLite (temp dir) or PostgreSQL (a database of the test's own,
//! see `pg`), the example bundle built with ben-intent, simulated
//! components.

#![allow(dead_code)]

pub mod pg;

pub use pg::Backend;
use serde_json::Value;

use ben_bus::{Bus, InProcessBus};
use ben_control::ledger::{DeployRecord, StageRequest, StatusReport};
use ben_control::testkit::{self, Behaviour, SimComponent, SimSpec};
use ben_control::{Clock, Config, Deps, Handle, LedgerClient};
use ben_store::{FileStore, Store};
use ben_wire::{Keyring, Signer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The API token the tests' control planes are given ([`Env::config`]);
/// [`Http::req`] sends it.
pub const TEST_TOKEN: &str = "test-token-0123456789abcdef";

pub fn tmp(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "ben-control-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub struct Env {
    pub dir: PathBuf,
    pub bus: Arc<InProcessBus>,
    pub store: Arc<FileStore>,
    pub ledger_signer: Arc<Signer>,
    pub clock: Arc<dyn Clock>,
    /// None: SQLite under `dir`.
    pub database_url: Option<String>,
    backend: Option<Backend>,
}

/// Runs an `async fn(Backend)` test on SQLite and on PostgreSQL: the tests
/// are `<name>::sqlite` and `<name>::postgres`.
#[macro_export]
macro_rules! on_both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::Backend::postgres().await).await
            }
        }
    };
}

impl Env {
    pub fn new(name: &str, clock: Arc<dyn Clock>) -> Env {
        Env::on(name, clock, Backend::Sqlite)
    }

    /// The ledger's database on `backend` (kept, and dropped, with the Env).
    pub fn on(name: &str, clock: Arc<dyn Clock>, backend: Backend) -> Env {
        let dir = tmp(name);
        Env {
            database_url: backend.url(),
            backend: Some(backend),
            bus: Arc::new(InProcessBus::default()),
            store: Arc::new(FileStore::open(dir.join("store")).unwrap()),
            ledger_signer: Arc::new(Signer::from_secret([7; 32])),
            dir,
            clock,
        }
    }

    pub fn config(&self) -> Config {
        Config {
            data_dir: self.dir.clone(),
            database_url: self.database_url.clone(),
            api_addr: "127.0.0.1:0".parse().unwrap(),
            api_token: Some(ben_control::auth::ApiToken::new(TEST_TOKEN).unwrap()),
            roles: ben_control::testkit::roles(),
            ..Config::default()
        }
    }

    /// The key component `id` signs with (the ledger trusts `<role>-<n>`
    /// for n < 100).
    pub fn signer(&self, id: &str) -> Signer {
        testkit::sim_signer(id)
    }

    /// The keyring a component trusts: the ledger's key.
    pub fn ledger_keys(&self) -> Keyring {
        let mut keys = Keyring::new();
        keys.trust(
            ben_wire::LEDGER_ID,
            ben_wire::Role::Ledger,
            self.ledger_signer.public(),
        );
        keys
    }

    pub fn deps(&self) -> Deps {
        let keyring = testkit::sim_keyring(100);
        Deps {
            bus: self.bus.clone(),
            store: self.store.clone(),
            signer: self.ledger_signer.clone(),
            keyring,
            clock: self.clock.clone(),
        }
    }

    pub async fn start(&self, cfg: Config) -> Handle {
        ben_control::start(cfg, self.deps()).await.unwrap()
    }

    pub async fn sim(&self, id: &str, role: &str, behaviour: Behaviour) -> SimComponent {
        let ledger_keys = self.ledger_keys();
        testkit::spawn(
            SimSpec {
                id: id.into(),
                role: role.into(),
                behaviour,
                heartbeat_every: Duration::from_millis(50),
            },
            self.bus.clone() as Arc<dyn Bus>,
            self.store.clone() as Arc<dyn Store>,
            Arc::new(self.signer(id)),
            ledger_keys,
            self.clock.clone(),
        )
        .await
        .unwrap()
    }
}

pub fn shop() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop")
}

/// The example bundle's artifacts, with `settings` replaced by `tag` when
/// given (a second, distinct version).
pub fn bundle(tag: Option<&str>) -> (String, Vec<(String, Vec<u8>)>) {
    let built = ben_intent::Bundle::load(shop()).unwrap().build().unwrap();
    let mut arts: Vec<(String, Vec<u8>)> = built
        .artifacts
        .iter()
        .map(|a| (a.name.clone(), a.bytes.clone()))
        .collect();
    let mut version = built.version.clone();
    if let Some(t) = tag {
        for (n, b) in arts.iter_mut() {
            if n == "settings" {
                *b = serde_json::to_vec(&serde_json::json!({ "tag": t })).unwrap();
            }
        }
        version = format!("{version}-{t}");
    }
    (version, arts)
}

/// Puts the artifacts in the store and returns the stage request.
pub fn stage_request(store: &dyn Store, version: &str, arts: &[(String, Vec<u8>)]) -> StageRequest {
    let mut artifacts = BTreeMap::new();
    for (n, b) in arts {
        let k = store.put(b).unwrap();
        artifacts.insert(n.clone(), k.to_string());
    }
    StageRequest {
        version: version.into(),
        bundle: "shop".into(),
        digest: ben_control::bundle_digest(&artifacts),
        artifacts,
    }
}

pub async fn wait_status(
    client: &LedgerClient,
    what: &str,
    pred: impl Fn(&StatusReport) -> bool,
) -> StatusReport {
    let t0 = Instant::now();
    loop {
        let s = client.status(None).await.unwrap();
        if pred(&s) {
            return s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}; last status: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn wait_registered(client: &LedgerClient, n: usize) -> StatusReport {
    wait_status(client, &format!("{n} components"), |s| {
        s.components.len() == n
    })
    .await
}

/// Waits until deploy `id` has ended.
pub async fn wait_deploy(client: &LedgerClient, id: i64) -> DeployRecord {
    let s = wait_status(client, &format!("deploy {id} to end"), |s| {
        s.deploy
            .as_ref()
            .is_some_and(|d| d.id == id && d.phase.is_over())
    })
    .await;
    s.deploy.unwrap()
}

pub const ROLES: [&str; 5] = ["sidecar", "proxy", "spine", "detector", "lucius"];

/// The HTTP API as benctl sees it.
pub struct Http {
    pub base: String,
}

impl Http {
    /// A request with [`TEST_TOKEN`].
    pub async fn req(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> (u16, Value) {
        self.req_as(Some(TEST_TOKEN), method, path, body).await
    }

    /// A request with `token` as its bearer token, or none.
    pub async fn req_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let method = method.to_string();
        let auth = token.map(|t| format!("Bearer {t}"));
        tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let auth = auth.as_deref();
            let res = match (method.as_str(), body) {
                ("GET", _) => with(agent.get(&url), auth).call(),
                ("DELETE", _) => with(agent.delete(&url), auth).call(),
                ("PUT", Some(b)) => with(agent.put(&url), auth).send(&b[..]),
                ("POST", Some(b)) => with(agent.post(&url), auth).send(&b[..]),
                ("POST", None) => with(agent.post(&url), auth).send_empty(),
                _ => unreachable!(),
            };
            let mut r = res.unwrap();
            let code = r.status().as_u16();
            let text = r.body_mut().read_to_string().unwrap();
            let v = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{method} {url}: not JSON ({e}): {text:?}"));
            (code, v)
        })
        .await
        .unwrap()
    }

    pub async fn json(&self, method: &str, path: &str, v: Value) -> (u16, Value) {
        self.req(method, path, Some(v.to_string().into_bytes()))
            .await
    }

    /// Polls status until deploy `id` ended.
    pub async fn wait(&self, id: i64) -> Value {
        let t0 = Instant::now();
        loop {
            let (code, s) = self.req("GET", "/api/v1/status", None).await;
            assert_eq!(code, 200);
            let d = &s["deploy"];
            if d["id"] == id && !matches!(d["phase"].as_str(), Some("preparing" | "activating")) {
                return s;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "{s:#}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `r` with an `Authorization` header when there is one.
fn with<B>(r: ureq::RequestBuilder<B>, auth: Option<&str>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(a) => r.header("authorization", a),
        None => r,
    }
}
