//! Nothing is silent after "accepted": a publish the bus refuses — the
//! sidecar forwarding a batch, a component's outbox, the CyberMesh loop —
//! is counted and shows in `ben up`'s status line; the sidecar tells the
//! app instead of accepting what it could not forward.

use ben_bee::Selector;
use ben_bus::{BoxFuture, Bus, BusError, Message, PublishReport, Subscription};
use ben_client::Client;
use ben_embedded::{Config, System};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Subjects whose publishes the bus refuses right now.
static REFUSED: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

fn refuse(subjects: &[&'static str]) {
    *REFUSED.lock().unwrap() = subjects.to_vec();
}

/// The system's bus, refusing publishes on the [`REFUSED`] subjects.
struct Refusing(Arc<dyn Bus>);

impl Bus for Refusing {
    fn publish<'a>(
        &'a self,
        subject: &'a str,
        payload: Vec<u8>,
    ) -> BoxFuture<'a, Result<PublishReport, BusError>> {
        if REFUSED.lock().unwrap().contains(&subject) {
            return Box::pin(async { Err(BusError::Closed) });
        }
        self.0.publish(subject, payload)
    }
    fn subscribe<'a>(
        &'a self,
        subject: &'a str,
        queue: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Subscription, BusError>> {
        self.0.subscribe(subject, queue)
    }
    fn request<'a>(
        &'a self,
        subject: &'a str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Message, BusError>> {
        self.0.request(subject, payload, timeout)
    }
    fn reply<'a>(
        &'a self,
        to: &'a Message,
        payload: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        self.0.reply(to, payload)
    }
}

fn shop() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop")
}

fn me() -> Selector {
    Selector::this_process("shop_web").unwrap()
}

/// A record the pack routes to a spine (a server error).
fn server_error() -> serde_json::Value {
    json!({"timestamp": "2026-01-01T10:00:00Z", "verb": "get", "url": "/checkout",
           "code": "503", "remote_addr": "10.1.2.3", "customer": {"email": "c@example.com"}})
}

fn publish_errors(line: &str) -> u64 {
    line.split(" | ")
        .find_map(|p| p.strip_prefix("publish errors "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no publish errors in the status line: {line}"))
}

async fn eventually(sys: &System, what: &str, want: u64) -> String {
    for _ in 0..500 {
        let line = sys.status_line().await;
        if publish_errors(&line) == want {
            return line;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}: {}", sys.status_line().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_publishes_are_counted_and_shown() {
    let dir = std::env::temp_dir().join(format!("ben-pub-errors-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::env::set_var("BEN_BLOT_KEY", "e2e test key 0123456789abcdef");
    // Flows are taken only from a sensor's key.
    let sensor = ben_wire::Signer::from_secret([9; 32]);
    let sys = System::start(Config {
        data_dir: dir,
        api_addr: "127.0.0.1:0".parse().unwrap(),
        extra_selectors: vec![me()],
        mesh_every: Duration::from_millis(200),
        bus_layer: Some(|bus| Arc::new(Refusing(bus))),
        trust: vec![("sensor-t".into(), sensor.public())],
        ..Config::default()
    })
    .await
    .expect("ben up starts");
    sys.deploy_dir(&shop()).await.expect("deploy finalizes");
    assert_eq!(publish_errors(&sys.status_line().await), 0);
    let mut app = Client::connect(sys.cfg.socket_path(), "shop_web")
        .await
        .expect("attested");

    // The proxy's outbox: accepted by the sidecar, refused on the way to
    // the spines.
    refuse(&["ben.data.spine"]);
    let acc = app.send(&[server_error()]).await.unwrap();
    assert_eq!(acc.accepted, 1);
    eventually(&sys, "the proxy's refused batch", 1).await;

    // The sidecar: the batch is not accepted, the app is told, and the
    // refusal is counted.
    refuse(&["ben.data.proxy"]);
    let acc = app.send(&[server_error(), server_error()]).await.unwrap();
    assert_eq!(acc.accepted, 0);
    assert_eq!(acc.errors.len(), 2);
    assert!(
        acc.errors[1].reason.contains("could not forward"),
        "{:?}",
        acc.errors
    );
    eventually(&sys, "the sidecar's refused batch", 2).await;
    assert_eq!(sys.stats.totals().rejected, 2);

    // The CyberMesh loop: an anomaly and its evidence.
    refuse(&["ai.anomalies.v1", "ai.evidence.v1"]);
    let csv = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh-detect/tests/data/example-flows.csv"),
    )
    .unwrap();
    let rows = csv.lines().skip(1).map(|r| r.as_bytes().to_vec()).collect();
    let batch = sensor.seal_bytes(&ben_mesh_wire::FlowBatch {
        sensor: "sensor-t".into(),
        seq: 1,
        rows,
        incarnation: 1,
    });
    sys.bus.publish("ben.mesh.flows", batch).await.unwrap();
    // Each anomaly published is two refused publishes (event, evidence).
    let mut published = 0;
    for _ in 0..500 {
        published = sys.stats.shared.mesh.published.load(Ordering::Relaxed);
        if published > 0 && publish_errors(&sys.status_line().await) == 2 + 2 * published {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(published > 0, "the flows give anomalies");
    assert_eq!(
        publish_errors(&sys.status_line().await),
        2 + 2 * published,
        "the mesh loop's refused anomalies and evidence"
    );

    // Once the bus takes them again, records flow and the count stays.
    refuse(&[]);
    let acc = app.send(&[server_error()]).await.unwrap();
    assert_eq!(acc.accepted, 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(publish_errors(&sys.status_line().await), 2 + 2 * published);
    sys.shutdown().await;
}
