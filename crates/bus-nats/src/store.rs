//! # Artifacts in the NATS object store
//!
//! [`NatsStore`] implements [`ben_store::Store`] on a JetStream object
//! store bucket (one per cluster prefix, [`bucket_name`]): the object's
//! name is its BLAKE3 key. Like the files store, `get` re-hashes what it
//! read and refuses bytes whose hash is not the key
//! ([`StoreError::Corrupt`]) — whatever wrote them, the object store's own
//! SHA-256 digest only says the bytes are the ones written under that
//! name, not that they are the artifact the key names.
//!
//! ## Sync trait, async client
//!
//! [`Store`] is synchronous and is called from async code (the intent
//! agent fetching artifacts, the ledger checking `has`), while async-nats
//! is async. The store therefore owns a **dedicated thread with its own
//! single-threaded tokio runtime and its own NATS connection**; each call
//! sends a job to that thread and blocks on a reply channel (bounded by
//! [`StoreConfig::timeout`]). Because the client never runs on the
//! caller's runtime, a blocked caller cannot starve it, whatever kind of
//! runtime the caller is on (no `block_on` inside a runtime, no
//! `block_in_place`, which panics on a current-thread runtime). The cost
//! is that a call occupies the calling thread for one round trip;
//! artifacts are read at prepare time and written at stage time, never on
//! the data path (the HTTP API already writes through `spawn_blocking`).
//! When the last handle is dropped the job channel closes and the thread
//! ends.

use ben_store::{Key, Store, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};

use async_nats::jetstream;
use jetstream::object_store::{self, GetErrorKind, ObjectStore};

/// Where the store lives.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// e.g. `nats://127.0.0.1:4222`
    pub url: String,
    /// The object store bucket ([`bucket_name`] of the cluster prefix).
    pub bucket: String,
    /// How long one put/get/has may take before it is an error.
    pub timeout: Duration,
}

impl StoreConfig {
    /// The bucket of cluster `prefix` on the server at `url`.
    pub fn for_prefix(url: &str, prefix: &str) -> StoreConfig {
        StoreConfig {
            url: url.to_string(),
            bucket: bucket_name(prefix),
            timeout: Duration::from_secs(30),
        }
    }
}

/// `BEN_<prefix>` with every character a bucket name cannot hold (only
/// `A-Z a-z 0-9 _ -` are allowed) replaced by `_` — and then a hash of the
/// prefix, so two prefixes never share a bucket. Used for the object store
/// (stream `OBJ_<bucket>`) and the registry KV (stream `KV_<bucket>`).
pub fn bucket_name(prefix: &str) -> String {
    let clean: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean == prefix && !prefix.is_empty() {
        format!("BEN_{clean}")
    } else {
        format!("BEN_{clean}_{:08x}", crate::fnv1a(prefix) as u32)
    }
}

type Reply<T> = std::sync::mpsc::SyncSender<T>;

enum Job {
    Put(Vec<u8>, Reply<Result<Key, StoreError>>),
    Get(Key, Reply<Result<Vec<u8>, StoreError>>),
    Has(Key, Reply<Result<bool, StoreError>>),
}

/// Content-addressed blobs in a NATS object store bucket.
#[derive(Clone)]
pub struct NatsStore {
    jobs: mpsc::UnboundedSender<Job>,
    bucket: Arc<str>,
    timeout: Duration,
}

impl std::fmt::Debug for NatsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsStore")
            .field("bucket", &self.bucket)
            .finish()
    }
}

impl NatsStore {
    /// Connects (on the store's own thread) and opens the bucket, creating
    /// it if the server does not have it yet.
    pub async fn connect(cfg: &StoreConfig) -> Result<NatsStore, String> {
        let (ready_tx, ready_rx) = oneshot::channel::<Result<(), String>>();
        let (jobs, mut rx) = mpsc::unbounded_channel::<Job>();
        let c = cfg.clone();
        std::thread::Builder::new()
            .name(format!("ben-store-{}", cfg.bucket))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("starting the store's runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let os = match open_bucket(&c).await {
                        Ok(os) => os,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    while let Some(job) = rx.recv().await {
                        let os = os.clone();
                        let c = c.clone();
                        tokio::spawn(async move { serve(&os, &c, job).await });
                    }
                });
            })
            .map_err(|e| format!("starting the store's thread: {e}"))?;
        match tokio::time::timeout(cfg.timeout, ready_rx).await {
            Ok(Ok(Ok(()))) => Ok(NatsStore {
                jobs,
                bucket: cfg.bucket.as_str().into(),
                timeout: cfg.timeout,
            }),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(format!(
                "the object store {} at {}: its thread ended while connecting",
                cfg.bucket, cfg.url
            )),
            Err(_) => Err(format!(
                "the object store {} at {}: not open after {:?}",
                cfg.bucket, cfg.url, cfg.timeout
            )),
        }
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn remote(&self, reason: impl std::fmt::Display) -> StoreError {
        StoreError::Remote {
            store: format!("NATS object store {}", self.bucket),
            reason: reason.to_string(),
        }
    }

    /// Sends `job` to the store's thread and waits for its answer.
    fn call<T>(&self, job: impl FnOnce(Reply<T>) -> Job) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.jobs
            .send(job(tx))
            .map_err(|_| self.remote("the store's connection thread has ended"))?;
        // The job itself is bounded by `timeout`; a little more here so its
        // own timeout error is what the caller sees.
        rx.recv_timeout(self.timeout + Duration::from_secs(1))
            .map_err(|e| match e {
                std::sync::mpsc::RecvTimeoutError::Timeout => {
                    self.remote(format!("no answer within {:?}", self.timeout))
                }
                std::sync::mpsc::RecvTimeoutError::Disconnected => {
                    self.remote("the store's connection thread has ended")
                }
            })
    }
}

impl Store for NatsStore {
    fn put(&self, bytes: &[u8]) -> Result<Key, StoreError> {
        self.call(|r| Job::Put(bytes.to_vec(), r))?
    }

    fn get(&self, key: &Key) -> Result<Vec<u8>, StoreError> {
        self.call(|r| Job::Get(key.clone(), r))?
    }

    fn has(&self, key: &Key) -> Result<bool, StoreError> {
        self.call(|r| Job::Has(key.clone(), r))?
    }
}

async fn open_bucket(c: &StoreConfig) -> Result<ObjectStore, String> {
    let client = async_nats::ConnectOptions::new()
        .reconnect_delay_callback(|n| Duration::from_millis((100 * n as u64).min(2000)))
        .connect(&c.url)
        .await
        .map_err(|e| format!("cannot connect to NATS at {} (the store): {e}", c.url))?;
    let js = jetstream::new(client);
    if let Ok(os) = js.get_object_store(&c.bucket).await {
        return Ok(os);
    }
    let refused = match js
        .create_object_store(object_store::Config {
            bucket: c.bucket.clone(),
            description: Some("Ben artifacts (content-addressed, BLAKE3 names)".into()),
            ..Default::default()
        })
        .await
    {
        Ok(os) => return Ok(os),
        Err(e) => e,
    };
    // Another process may have created it at the same moment (see
    // `get_or_create_stream`): take that one.
    if let Some(os) =
        crate::created_meanwhile(|| async { js.get_object_store(&c.bucket).await.ok() }).await
    {
        return Ok(os);
    }
    Err(format!(
        "the object store {} at {}: cannot open or create it (does the server run with JetStream, `nats-server -js`?): {refused}",
        c.bucket, c.url
    ))
}

async fn serve(os: &ObjectStore, c: &StoreConfig, job: Job) {
    let remote = |reason: String| StoreError::Remote {
        store: format!("NATS object store {}", c.bucket),
        reason,
    };
    let timed_out = || remote(format!("no answer from {} within {:?}", c.url, c.timeout));
    match job {
        Job::Put(bytes, reply) => {
            let r = tokio::time::timeout(c.timeout, put(os, &bytes, &remote))
                .await
                .unwrap_or_else(|_| Err(timed_out()));
            let _ = reply.send(r);
        }
        Job::Get(key, reply) => {
            let r = tokio::time::timeout(c.timeout, get(os, &key, &remote))
                .await
                .unwrap_or_else(|_| Err(timed_out()));
            let _ = reply.send(r);
        }
        Job::Has(key, reply) => {
            let r = match tokio::time::timeout(c.timeout, os.info(key.as_str())).await {
                Ok(Ok(info)) => Ok(!info.deleted),
                Ok(Err(e)) if e.kind() == object_store::InfoErrorKind::NotFound => Ok(false),
                Ok(Err(e)) => Err(remote(format!("looking up {key}: {e}"))),
                Err(_) => Err(timed_out()),
            };
            let _ = reply.send(r);
        }
    }
}

async fn put(
    os: &ObjectStore,
    bytes: &[u8],
    remote: &impl Fn(String) -> StoreError,
) -> Result<Key, StoreError> {
    let key = Key::of(bytes);
    match os.info(key.as_str()).await {
        // Already there, and intact: identical artifacts are stored once.
        Ok(i) if !i.deleted && get(os, &key, remote).await.is_ok() => return Ok(key),
        _ => {}
    }
    // A put under an existing name replaces the object (a corrupt one is
    // repaired, as in the files store).
    let mut reader: &[u8] = bytes;
    os.put(key.as_str(), &mut reader)
        .await
        .map_err(|e| remote(format!("writing {key}: {e}")))?;
    Ok(key)
}

async fn get(
    os: &ObjectStore,
    key: &Key,
    remote: &impl Fn(String) -> StoreError,
) -> Result<Vec<u8>, StoreError> {
    let mut object = match os.get(key.as_str()).await {
        Ok(o) => o,
        Err(e) if e.kind() == GetErrorKind::NotFound => {
            return Err(StoreError::NotFound(key.clone()))
        }
        Err(e) => return Err(remote(format!("reading {key}: {e}"))),
    };
    let mut bytes = Vec::with_capacity(object.info().size.min(16 << 20)); // a hint from the server, not trusted
    object
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| remote(format!("reading {key}: {e}")))?;
    let actual = Key::of(&bytes);
    if actual != *key {
        return Err(StoreError::Corrupt {
            key: key.clone(),
            actual: actual.to_string(),
        });
    }
    Ok(bytes)
}

/// Deletes the bucket of `cfg` and everything in it (for runs that used a
/// throwaway prefix). `Ok(false)`: there was none.
pub async fn delete_bucket(url: &str, bucket: &str) -> Result<bool, String> {
    let client = async_nats::connect(url)
        .await
        .map_err(|e| format!("cannot connect to NATS at {url}: {e}"))?;
    let js = jetstream::new(client);
    if js.get_object_store(bucket).await.is_err() {
        return Ok(false);
    }
    js.delete_object_store(bucket)
        .await
        .map(|_| true)
        .map_err(|e| format!("deleting the object store {bucket}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_are_valid_and_unique() {
        assert_eq!(bucket_name("shop-prod"), "BEN_shop-prod");
        let a = bucket_name("shop.prod");
        let b = bucket_name("shop_prod");
        assert_ne!(a, b);
        assert!(a.starts_with("BEN_shop_prod_"), "{a}");
        for p in ["a.b.c", "é", "", "x/y", "a b"] {
            let n = bucket_name(p);
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                "{n}"
            );
        }
    }
}
