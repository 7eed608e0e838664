//! The cluster's artifact store and service registry (`[store]`,
//! `[registry]` in the config).
//!
//! * [`open_store`]: the store every process of the cluster uses — the
//!   NATS object store bucket of the prefix (the default; artifacts the
//!   control process stages there are fetched by components on any
//!   machine) or the files store in `store_dir` (`kind = "files"`).
//! * [`announce`]: each process keeps its [`Entry`] in the registry KV
//!   bucket (role, pid, the intent version and time of its last heartbeat)
//!   fresh every second. The heartbeat it reports is the one the process
//!   itself just published: the process's bus is wrapped in a tap that
//!   reads (and verifies, like any receiver) its own outgoing signed
//!   heartbeats, so nothing in the components changes and nothing extra
//!   crosses the network. Heartbeats stay on core NATS for the ledger.
//! * [`registry`]: the live components, read from the bucket (no ledger
//!   needed) — `ben cluster status --config FILE`.

use super::config::StoreKind;
use super::ClusterConfig;
use ben_bus::{BoxFuture, Bus, BusError, Message, PublishReport, Subscription};
use ben_bus_nats::registry::{Entry, Registry};
use ben_bus_nats::store::{bucket_name, NatsStore, StoreConfig};
use ben_component::subjects;
use ben_store::{FileStore, Store};
use ben_wire::{pb, Keyring};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often a process rewrites its registry entry.
pub const REGISTRY_EVERY: Duration = Duration::from_secs(1);

/// The store of this cluster, by `[store] kind`.
pub async fn open_store(cfg: &ClusterConfig) -> Result<Arc<dyn Store>, String> {
    match cfg.store {
        StoreKind::Files => {
            Ok(Arc::new(FileStore::open(&cfg.store_dir).map_err(|e| {
                format!("opening the store {}: {e}", cfg.store_dir.display())
            })?))
        }
        StoreKind::Nats => Ok(Arc::new(
            NatsStore::connect(&StoreConfig::for_prefix(&cfg.nats, &cfg.prefix))
                .await
                .map_err(|e| format!("opening the store: {e}"))?,
        )),
    }
}

/// The name of the cluster's object store and registry buckets.
pub fn bucket(cfg: &ClusterConfig) -> String {
    bucket_name(&cfg.prefix)
}

async fn open_registry(cfg: &ClusterConfig) -> Result<Registry, String> {
    Registry::open(&cfg.nats, &bucket(cfg), cfg.registry_ttl).await
}

/// The live components of the cluster, by id, from the registry bucket.
pub async fn registry(cfg: &ClusterConfig) -> Result<Vec<Entry>, String> {
    open_registry(cfg).await?.list().await
}

/// The last heartbeat this process published.
#[derive(Default)]
struct Last(Mutex<Option<pb::Heartbeat>>);

/// A bus that remembers the heartbeats published through it.
struct Tap {
    inner: Arc<dyn Bus>,
    keyring: Arc<Keyring>,
    last: Arc<Last>,
}

impl Bus for Tap {
    fn publish<'a>(
        &'a self,
        subject: &'a str,
        payload: Vec<u8>,
    ) -> BoxFuture<'a, Result<PublishReport, BusError>> {
        if subject == subjects::HEARTBEAT {
            if let Ok(hb) = ben_wire::open_bytes::<pb::Heartbeat>(&payload, &self.keyring) {
                if let Ok(mut l) = self.last.0.lock() {
                    *l = Some(hb.into_inner());
                }
            }
        }
        self.inner.publish(subject, payload)
    }

    fn publish_keyed<'a>(
        &'a self,
        subject: &'a str,
        key: &'a [u8],
        payload: Vec<u8>,
    ) -> BoxFuture<'a, Result<PublishReport, BusError>> {
        self.inner.publish_keyed(subject, key, payload)
    }

    fn connected(&self) -> bool {
        self.inner.connected()
    }

    fn max_payload(&self) -> Option<usize> {
        self.inner.max_payload()
    }

    fn errors(&self) -> ben_bus::BusErrors {
        self.inner.errors()
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), BusError>> {
        self.inner.flush()
    }

    fn subscribe<'a>(
        &'a self,
        subject: &'a str,
        queue: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Subscription, BusError>> {
        self.inner.subscribe(subject, queue)
    }

    fn request<'a>(
        &'a self,
        subject: &'a str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Message, BusError>> {
        self.inner.request(subject, payload, timeout)
    }

    fn reply<'a>(
        &'a self,
        to: &'a Message,
        payload: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        self.inner.reply(to, payload)
    }
}

/// Keeps this process's registry entry fresh; [`Announced::stop`]
/// removes it (a clean stop), dropping it only stops the writes (the
/// entry then expires after the TTL).
pub struct Announced {
    task: Option<tokio::task::JoinHandle<()>>,
    registry: Option<Registry>,
    id: String,
}

impl Announced {
    pub async fn stop(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if let Some(r) = self.registry.take() {
            if let Err(e) = r.remove(&self.id).await {
                eprintln!("{}: {e}", self.id);
            }
        }
    }
}

impl Drop for Announced {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Wraps `bus` so the heartbeats this process publishes are seen, and
/// starts writing its entry (`id`, `role`) every [`REGISTRY_EVERY`]. The
/// registry is a view: if its bucket cannot be opened the process runs
/// without it (the reason goes to stderr), and a failed write is retried
/// on the next tick.
pub async fn announce(
    cfg: &ClusterConfig,
    id: &str,
    role: &'static str,
    bus: Arc<dyn Bus>,
    keyring: Arc<Keyring>,
) -> (Arc<dyn Bus>, Announced) {
    let last = Arc::new(Last::default());
    let tapped: Arc<dyn Bus> = Arc::new(Tap {
        inner: bus,
        keyring,
        last: last.clone(),
    });
    let registry = match open_registry(cfg).await {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("{id}: running without the service registry: {e}");
            None
        }
    };
    let task = registry.clone().map(|reg| {
        let id = id.to_string();
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                let hb = last.0.lock().ok().and_then(|l| l.clone());
                let entry = Entry {
                    id: id.clone(),
                    role: role.to_string(),
                    pid: std::process::id(),
                    intent_version: hb
                        .as_ref()
                        .map(|h| h.intent_version.clone())
                        .unwrap_or_default(),
                    heartbeat_ns: hb.as_ref().map(|h| h.at_ns).unwrap_or(0),
                    updated_ns: ben_time::now_ns(),
                };
                match reg.put(&entry).await {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        eprintln!("{id}: {e} (retrying every second)");
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(REGISTRY_EVERY).await;
            }
        })
    });
    (
        tapped,
        Announced {
            task,
            registry,
            id: id.to_string(),
        },
    )
}

/// One line per live component, for `ben cluster status`.
pub fn registry_lines(entries: &[Entry], now_ns: i64) -> Vec<String> {
    entries
        .iter()
        .map(|e| {
            let beat = if e.heartbeat_ns == 0 {
                "no heartbeat yet".to_string()
            } else {
                format!(
                    "last heartbeat {:.1}s ago",
                    (now_ns - e.heartbeat_ns).max(0) as f64 / 1e9
                )
            };
            let version = if e.intent_version.is_empty() {
                "-"
            } else {
                e.intent_version.as_str()
            };
            format!(
                "{:<12} {:<9} pid {:<8} intent {:<16} {beat}",
                e.id,
                e.role,
                e.pid,
                version.chars().take(16).collect::<String>()
            )
        })
        .collect()
}

/// Deletes the cluster's object store and registry buckets (runs with a
/// throwaway prefix). Returns whether each existed.
pub async fn delete_buckets(cfg: &ClusterConfig) -> Result<(bool, bool), String> {
    let b = bucket(cfg);
    let store = ben_bus_nats::store::delete_bucket(&cfg.nats, &b).await?;
    let reg = ben_bus_nats::registry::delete_registry(&cfg.nats, &b).await?;
    Ok((store, reg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let e = Entry {
            id: "spine-1".into(),
            role: "spine".into(),
            pid: 42,
            intent_version: "abcdef0123456789abcdef".into(),
            heartbeat_ns: 1_000_000_000,
            updated_ns: 1_000_000_000,
        };
        let l = registry_lines(&[e], 3_500_000_000);
        assert!(l[0].contains("spine-1"), "{}", l[0]);
        assert!(l[0].contains("abcdef0123456789 "), "{}", l[0]);
        assert!(l[0].contains("2.5s ago"), "{}", l[0]);
    }
}
