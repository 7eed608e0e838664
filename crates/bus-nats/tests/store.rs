//! The NATS object store as Ben's artifact store, and the KV registry,
//! against the machine's NATS server (127.0.0.1:4222, started with `-js`),
//! in buckets unique to each run and deleted at its end.

use ben_bus_nats::registry::{delete_registry, Entry, Registry};
use ben_bus_nats::store::{bucket_name, delete_bucket, NatsStore, StoreConfig};
use ben_store::{Key, Store, StoreError};
use std::time::{Duration, Instant};

const URL: &str = "nats://127.0.0.1:4222";

fn unique(tag: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("benst-{tag}-{}-{t}", std::process::id())
}

/// Deletes the bucket even when the test fails.
struct Cleanup {
    bucket: String,
    kv: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (bucket, kv) = (self.bucket.clone(), self.kv);
        // A fresh runtime on its own thread: drop may run inside the test's.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let r = if kv {
                    delete_registry(URL, &bucket).await
                } else {
                    delete_bucket(URL, &bucket).await
                };
                if let Err(e) = r {
                    eprintln!("cleanup: {e}");
                }
            })
        })
        .join();
    }
}

async fn store(tag: &str) -> (NatsStore, Cleanup) {
    let cfg = StoreConfig {
        timeout: Duration::from_secs(5),
        ..StoreConfig::for_prefix(URL, &unique(tag))
    };
    let s = NatsStore::connect(&cfg)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let c = Cleanup {
        bucket: s.bucket().to_string(),
        kv: false,
    };
    (s, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_round_trip_dedupe_and_missing() {
    let (s, _c) = store("rt").await;
    let k = s.put(b"pack bytes").unwrap();
    assert_eq!(k, Key::of(b"pack bytes"));
    assert!(s.has(&k).unwrap());
    assert_eq!(s.get(&k).unwrap(), b"pack bytes");
    // The same bytes again: the same key, still intact.
    assert_eq!(s.put(b"pack bytes").unwrap(), k);
    assert_eq!(s.get(&k).unwrap(), b"pack bytes");
    // Bigger than one chunk (128 KiB) and than a NATS message (1 MiB).
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let kb = s.put(&big).unwrap();
    assert_eq!(s.get(&kb).unwrap(), big);
    // Empty blobs are blobs too.
    let ke = s.put(b"").unwrap();
    assert_eq!(s.get(&ke).unwrap(), b"");

    let missing = Key::of(b"never stored");
    assert!(!s.has(&missing).unwrap());
    let err = s.get(&missing).unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    assert_eq!(
        err.to_string(),
        format!("no artifact {missing} in the store")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_object_is_refused_never_served() {
    let (s, _c) = store("tamper").await;
    let k = s.put(b"original artifact").unwrap();
    // Different bytes under the key, through the raw object store API.
    let client = async_nats::connect(URL).await.unwrap();
    let os = async_nats::jetstream::new(client)
        .get_object_store(s.bucket())
        .await
        .unwrap();
    let mut evil: &[u8] = b"tampered artifact";
    os.put(k.as_str(), &mut evil).await.unwrap();
    let err = s.get(&k).unwrap_err();
    match &err {
        StoreError::Corrupt { key, actual } => {
            assert_eq!(key, &k);
            assert_eq!(actual, Key::of(b"tampered artifact").as_str());
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    assert!(err.to_string().contains("will not be served"), "{err}");
    // A put of the real bytes repairs it (as in the files store).
    assert_eq!(s.put(b"original artifact").unwrap(), k);
    assert_eq!(s.get(&k).unwrap(), b"original artifact");
}

/// The bridge holds on a current-thread runtime too: the client runs on
/// the store's own thread, so a caller blocking this one cannot starve it.
#[test]
fn works_from_a_current_thread_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (s, _c) = store("ct").await;
        let k = s.put(b"x").unwrap();
        assert_eq!(s.get(&k).unwrap(), b"x");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_is_a_clear_error() {
    let cfg = StoreConfig {
        url: "nats://127.0.0.1:1".into(),
        bucket: bucket_name("nowhere"),
        timeout: Duration::from_secs(3),
    };
    let err = NatsStore::connect(&cfg).await.unwrap_err();
    assert!(
        err.contains("127.0.0.1:1") || err.contains("BEN_nowhere"),
        "{err}"
    );
}

fn entry(id: &str, role: &str, version: &str) -> Entry {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    Entry {
        id: id.into(),
        role: role.into(),
        pid: std::process::id(),
        intent_version: version.into(),
        heartbeat_ns: now,
        updated_ns: now,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_entries_appear_refresh_and_expire() {
    let bucket = bucket_name(&unique("reg"));
    let _c = Cleanup {
        bucket: bucket.clone(),
        kv: true,
    };
    let ttl = Duration::from_secs(2);
    let reg = Registry::open(URL, &bucket, ttl)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(reg.list().await.unwrap().is_empty());
    let spine = entry("spine-1", "spine", "v1");
    reg.put(&spine).await.unwrap();
    reg.put(&entry("proxy-1", "proxy", "")).await.unwrap();
    // Another process's view of the same bucket.
    let other = Registry::open(URL, &bucket, ttl).await.unwrap();
    let seen = other.list().await.unwrap();
    assert_eq!(
        seen.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["proxy-1", "spine-1"]
    );
    assert_eq!(seen[1], spine);
    // A clean stop removes its entry at once.
    reg.remove("proxy-1").await.unwrap();
    let ids: Vec<String> = other
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, ["spine-1"]);
    // Kept fresh, spine-1 outlives the TTL; a silent detector-1 does not.
    reg.put(&entry("detector-1", "detector", "v1"))
        .await
        .unwrap();
    let start = Instant::now();
    let mut gone = None;
    while start.elapsed() < Duration::from_secs(10) {
        reg.put(&entry("spine-1", "spine", "v2")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ids: Vec<String> = other
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        if !ids.iter().any(|i| i == "detector-1") {
            assert_eq!(ids, ["spine-1"]);
            gone = Some(start.elapsed());
            break;
        }
    }
    let gone = gone.expect("detector-1 expired within 10 s of its last write");
    assert!(
        gone >= Duration::from_millis(1500),
        "expired too early: {gone:?}"
    );
    let live = other.list().await.unwrap();
    assert_eq!(live[0].intent_version, "v2");
    // Bad ids are refused, not sent.
    let err = reg.put(&entry("a b", "spine", "")).await.unwrap_err();
    assert!(err.contains("cannot be a key"), "{err}");
}
