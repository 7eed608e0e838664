//! Several detectors give the same signals as one: the same records
//! through `ben up` with one detector and with three give the same
//! signals, for two playbooks grouping by different keys (detector traffic
//! is partitioned by each playbook's group key, each partition served by
//! one detector). And windows outlive a deploy that does not change the
//! playbooks.

use ben_bee::Selector;
use ben_client::Client;
use ben_embedded::{Config, System};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn shop() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop")
}

/// A second playbook, grouping by path instead of client IP.
const ERRORS: &str = r#"
playbook site_errors on http.request v2 {
  when count(server_error) by path within 60s >= 3
  signal "site.errors" severity medium
}
"#;

/// examples/shop plus the second playbook; `changed`: the pack gets one
/// more meta (a new version with the same playbooks).
fn bundle(name: &str, changed: bool) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ben-detectors-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["ben.toml", "tests.bspec", "ben.lock"] {
        std::fs::copy(shop().join(f), dir.join(f)).unwrap();
    }
    let src = std::fs::read_to_string(shop().join("shop.bspec")).unwrap();
    let src = if changed {
        src.replace("  meta risk", "  meta tier = \"web\"\n  meta risk")
    } else {
        src
    };
    std::fs::write(dir.join("shop.bspec"), src).unwrap();
    std::fs::write(dir.join("errors.bspec"), ERRORS).unwrap();
    dir
}

fn me() -> Selector {
    Selector::this_process("shop_web").unwrap()
}

fn rec(url: &str, code: u16, ip: &str) -> serde_json::Value {
    json!({"timestamp": "2026-01-01T10:00:00Z", "verb": "post", "url": url,
           "code": code.to_string(), "remote_addr": ip,
           "customer": {"email": "x@example.com"}})
}

/// IP j fails to log in j times (j = 0..20: 15 reach 5); path p gets p
/// server errors (p = 0..10: 7 reach 3); interleaved, so that every batch
/// holds many groups of both playbooks.
fn input() -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for round in 0..20 {
        for j in 0..20 {
            if round < j {
                out.push(rec("/login", 401, &format!("203.0.113.{j}")));
            }
        }
        for p in 0..10 {
            if round < p {
                out.push(rec(&format!("/shop/{p}"), 503, "10.9.9.9"));
            }
        }
    }
    out
}

async fn start(name: &str, detectors: usize) -> System {
    let dir = std::env::temp_dir().join(format!("ben-detectors-sys-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::env::set_var("BEN_BLOT_KEY", "e2e test key 0123456789abcdef");
    let sys = System::start(Config {
        data_dir: dir,
        api_addr: "127.0.0.1:0".parse().unwrap(),
        extra_selectors: vec![me()],
        counts: BTreeMap::from([("detector", detectors)]),
        ..Config::default()
    })
    .await
    .expect("ben up starts");
    sys.deploy_dir(&bundle(name, false))
        .await
        .expect("deploy finalizes");
    // Every partition served, each by one detector.
    let n = ben_component::subjects::DETECTOR_PARTITIONS;
    for _ in 0..500 {
        let served = sys.stats.shared.detector.partitions.lock().unwrap().clone();
        let all: Vec<u32> = served.values().flatten().copied().collect();
        if served.len() == detectors
            && all.len() == n as usize
            && all.iter().collect::<BTreeSet<_>>().len() == n as usize
        {
            return sys;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "partitions not settled: {:?}",
        sys.stats.shared.detector.partitions.lock().unwrap()
    );
}

/// Sends `records` in batches of 7; returns the signals the app got, as
/// (name, key).
async fn signals(sys: &System, records: &[serde_json::Value]) -> BTreeSet<(String, String)> {
    let mut app = Client::connect(sys.cfg.socket_path(), "shop_web")
        .await
        .expect("attested");
    for chunk in records.chunks(7) {
        let acc = app.send(chunk).await.unwrap();
        assert_eq!(acc.accepted as usize, chunk.len(), "{:?}", acc.errors);
    }
    sys.drain(Duration::from_secs(10)).await;
    let mut got = BTreeSet::new();
    while let Ok(Some(s)) =
        tokio::time::timeout(Duration::from_millis(300), app.signals.recv()).await
    {
        assert!(
            got.insert((s.name.clone(), s.key.join(","))),
            "one signal per group and window: {s:?}"
        );
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_detector_and_three_give_the_same_signals() {
    let records = input();
    let one = start("one", 1).await;
    let with_one = signals(&one, &records).await;
    one.shutdown().await;
    let three = start("three", 3).await;
    let with_three = signals(&three, &records).await;
    three.shutdown().await;
    let count = |name: &str| with_one.iter().filter(|(n, _)| n == name).count();
    assert_eq!(count("auth.bruteforce"), 15, "{with_one:?}");
    assert_eq!(count("site.errors"), 7, "{with_one:?}");
    assert_eq!(with_three, with_one);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_outlive_a_deploy_that_keeps_the_playbooks() {
    let sys = start("deploy", 2).await;
    let fail = |ip: &str| rec("/login", 401, ip);
    // Three of five failures, then a version that changes only a pack.
    let before = signals(
        &sys,
        &[
            fail("198.51.100.1"),
            fail("198.51.100.1"),
            fail("198.51.100.1"),
        ],
    )
    .await;
    assert!(before.is_empty(), "{before:?}");
    sys.deploy_dir(&bundle("deploy-v2", true))
        .await
        .expect("v2 deploys");
    let after = signals(&sys, &[fail("198.51.100.1"), fail("198.51.100.1")]).await;
    assert_eq!(
        after,
        BTreeSet::from([("auth.bruteforce".to_string(), "198.51.100.1".to_string())]),
        "the window kept the three failures from before the deploy"
    );
    sys.shutdown().await;
}
