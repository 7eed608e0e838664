//! # The service registry (a JetStream KV bucket)
//!
//! Each process of a cluster puts its [`Entry`] under its id — role, pid,
//! intent version, time of its last heartbeat — about once a second into
//! the KV bucket [`crate::store::bucket_name`]`(prefix)` (stream
//! `KV_<bucket>`). The bucket keeps one value per key and has a max age
//! (the TTL): a process that stops writing (killed, hung, its machine
//! gone) disappears from the bucket once its last entry is older than the
//! TTL; one that stops cleanly deletes its entry. Any process can then
//! list the live components without asking the ledger.
//!
//! The registry is a view, not a source of truth: the ledger still decides
//! who must prepare a deploy from the signed heartbeats on core NATS.

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::time::Duration;

use async_nats::jetstream::{self, kv};

/// One live component, as it last described itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    /// `control`, `sidecar`, `proxy`, `spine`, `detector`, `lucius`.
    pub role: String,
    pub pid: u32,
    /// The active intent version it reported in its last heartbeat (empty:
    /// none yet, or a process without one, e.g. control).
    pub intent_version: String,
    /// Its clock at its last heartbeat (ns since the epoch); 0: none sent yet.
    pub heartbeat_ns: i64,
    /// Its clock when it wrote this entry (ns since the epoch).
    pub updated_ns: i64,
}

/// A handle on a cluster's registry bucket.
#[derive(Clone)]
pub struct Registry {
    kv: kv::Store,
    bucket: String,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("bucket", &self.bucket)
            .finish()
    }
}

/// KV keys may hold `A-Z a-z 0-9 - _ = / .` (and not start or end with `.`).
fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && !k.starts_with('.')
        && !k.ends_with('.')
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '=' | '/' | '.'))
}

impl Registry {
    /// Connects to `url` and opens the bucket, creating it with max age
    /// `ttl` if the server does not have it yet. A bucket that exists keeps
    /// the TTL it was created with.
    pub async fn open(url: &str, bucket: &str, ttl: Duration) -> Result<Registry, String> {
        let client = async_nats::ConnectOptions::new()
            .reconnect_delay_callback(|n| Duration::from_millis((100 * n as u64).min(2000)))
            .connect(url)
            .await
            .map_err(|e| format!("cannot connect to NATS at {url} (the registry): {e}"))?;
        Self::open_with(client, url, bucket, ttl).await
    }

    /// [`Registry::open`] on an existing connection.
    pub async fn open_with(
        client: async_nats::Client,
        url: &str,
        bucket: &str,
        ttl: Duration,
    ) -> Result<Registry, String> {
        if ttl < Duration::from_millis(100) {
            return Err(format!(
                "the registry {bucket}: a TTL of {ttl:?} is too short (at least 100 ms)"
            ));
        }
        let js = jetstream::new(client);
        if js.get_key_value(bucket).await.is_err() {
            // The KV bucket's stream, created directly with the KV layout
            // (what `create_key_value` would make): async-nats 0.51's
            // `create_key_value` first queries the account, and the reply of
            // a 2.9 server does not parse.
            crate::get_or_create_stream(&js, jetstream::stream::Config {
                name: format!("KV_{bucket}"),
                description: Some("Ben service registry: live components by id".into()),
                subjects: vec![format!("$KV.{bucket}.>")],
                max_messages_per_subject: 1,
                max_age: ttl,
                duplicate_window: ttl.min(Duration::from_secs(120)),
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: jetstream::stream::DiscardPolicy::New,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .map_err(|e| {
                format!(
                    "the registry {bucket} at {url}: cannot create it (does the server run with JetStream, `nats-server -js`?): {e}"
                )
            })?;
        }
        let kv = js
            .get_key_value(bucket)
            .await
            .map_err(|e| format!("the registry {bucket} at {url}: cannot open it: {e}"))?;
        Ok(Registry {
            kv,
            bucket: bucket.to_string(),
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Writes (replaces) `entry` under its id.
    pub async fn put(&self, entry: &Entry) -> Result<(), String> {
        if !valid_key(&entry.id) {
            return Err(format!(
                "the registry {}: `{}` cannot be a key (A-Z a-z 0-9 - _ = / .)",
                self.bucket, entry.id
            ));
        }
        let value = serde_json::to_vec(entry)
            .map_err(|e| format!("the registry {}: encoding {}: {e}", self.bucket, entry.id))?;
        self.kv
            .put(&entry.id, value.into())
            .await
            .map(|_| ())
            .map_err(|e| format!("the registry {}: writing {}: {e}", self.bucket, entry.id))
    }

    /// Removes `id` (a process that stops cleanly).
    pub async fn remove(&self, id: &str) -> Result<(), String> {
        if !valid_key(id) {
            return Ok(());
        }
        self.kv
            .delete(id)
            .await
            .map_err(|e| format!("the registry {}: removing {id}: {e}", self.bucket))
    }

    /// Every live entry, by id. A value that does not decode is an error
    /// naming its key (nothing but Ben writes this bucket).
    pub async fn list(&self) -> Result<Vec<Entry>, String> {
        let b = &self.bucket;
        let mut keys = match self.kv.keys().await {
            Ok(k) => k,
            Err(e) => return Err(format!("the registry {b}: listing keys: {e}")),
        };
        let mut ids = Vec::new();
        while let Some(k) = keys.next().await {
            ids.push(k.map_err(|e| format!("the registry {b}: listing keys: {e}"))?);
        }
        ids.sort();
        ids.dedup();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(v) = self
                .kv
                .get(id.as_str())
                .await
                .map_err(|e| format!("the registry {b}: reading {id}: {e}"))?
            else {
                continue; // expired or removed between the listing and the read
            };
            let e: Entry = serde_json::from_slice(&v)
                .map_err(|e| format!("the registry {b}: the value of {id} is not an entry: {e}"))?;
            out.push(e);
        }
        Ok(out)
    }
}

/// Deletes the registry bucket (for runs that used a throwaway prefix).
/// `Ok(false)`: there was none.
pub async fn delete_registry(url: &str, bucket: &str) -> Result<bool, String> {
    let client = async_nats::connect(url)
        .await
        .map_err(|e| format!("cannot connect to NATS at {url}: {e}"))?;
    let js = jetstream::new(client);
    if js.get_key_value(bucket).await.is_err() {
        return Ok(false);
    }
    js.delete_key_value(bucket)
        .await
        .map(|_| true)
        .map_err(|e| format!("deleting the registry {bucket}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(valid_key("spine-1"));
        assert!(valid_key("control"));
        assert!(!valid_key("a b"));
        assert!(!valid_key(""));
        assert!(!valid_key(".x"));
        assert!(!valid_key("x>"));
    }
}
