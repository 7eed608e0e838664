//! # Lucius
//!
//! The observation store: records the proxy routed to observe
//! (`ben.data.lucius`) are redacted on ingest with the pack's Blot rules
//! (the same pipeline as a spine, so flags and metadata are stored too),
//! kept append-only and time-ordered, aged out by retention, and answered
//! on `ben.lucius.query` (request/reply, JSON).
//!
//! Lucius never stores a raw PII value (a record whose redaction fails
//! goes to the dead-letter subject) and never blocks the data path: its
//! store is bounded, and what it must evict early is counted
//! ([`Observations::evicted`]).
//!
//! Not built yet: the SQLite backend (this store is in memory, so it does
//! not survive a restart).

use ben_component::{subjects, Deps, IntentAgent, Load, Role};
use ben_spine::SpineRole;
use ben_wire::pb;
use prost::Message;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub const QUERY: &str = "ben.lucius.query";

/// Lucius redacts like a spine, from its own role's artifacts
/// (schemas, packs, settings).
pub struct LuciusRole(SpineRole);

impl Role for LuciusRole {
    const NAME: &'static str = "lucius";
    type Compiled = ben_intent::Evaluator;
    fn compile(
        &self,
        arts: &std::collections::BTreeMap<String, Vec<u8>>,
        version: &str,
    ) -> Result<Self::Compiled, String> {
        self.0.compile(arts, version)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Records kept at most.
    pub max_records: usize,
    /// Age after which records are dropped, ns.
    pub retention_ns: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_records: 1_000_000,
            retention_ns: 7 * 24 * 3600 * 1_000_000_000,
        }
    }
}

/// One stored observation (already redacted).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Observation {
    pub id: String,
    pub at_ns: i64,
    pub schema: String,
    pub schema_version: u32,
    pub app: String,
    pub intent: String,
    pub flags: Vec<String>,
    pub meta: serde_json::Value,
    pub record: serde_json::Value,
}

/// A query: all fields optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Query {
    pub schema: Option<String>,
    pub flag: Option<String>,
    pub since_ns: Option<i64>,
    pub limit: Option<usize>,
}

/// The in-memory, time-ordered, bounded store.
#[derive(Default)]
pub struct Observations {
    rows: Mutex<VecDeque<Observation>>,
    evicted: AtomicU64,
    expired: AtomicU64,
}

impl Observations {
    pub fn append(&self, o: Observation, cfg: &Config, now_ns: i64) {
        let Ok(mut rows) = self.rows.lock() else {
            return;
        };
        while rows
            .front()
            .is_some_and(|r| r.at_ns < now_ns.saturating_sub(cfg.retention_ns))
        {
            rows.pop_front();
            self.expired.fetch_add(1, Ordering::Relaxed);
        }
        while rows.len() >= cfg.max_records.max(1) {
            rows.pop_front();
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        rows.push_back(o);
    }

    pub fn count(&self) -> usize {
        self.rows.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Records evicted because the store was full (not by retention).
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    pub fn query(&self, q: &Query) -> Vec<Observation> {
        let Ok(rows) = self.rows.lock() else {
            return vec![];
        };
        rows.iter()
            .filter(|r| {
                q.schema.as_ref().is_none_or(|s| {
                    *s == r.schema || *s == format!("{}@v{}", r.schema, r.schema_version)
                })
            })
            .filter(|r| q.flag.as_ref().is_none_or(|f| r.flags.contains(f)))
            .filter(|r| q.since_ns.is_none_or(|t| r.at_ns >= t))
            .take(q.limit.unwrap_or(100))
            .cloned()
            .collect()
    }
}

/// Runs Lucius until the bus closes.
pub async fn run(
    cfg: Config,
    blot_key: Option<ben_blot::BlotKey>,
    deps: Deps,
    load: Arc<Load>,
    store: Arc<Observations>,
) -> Result<(), String> {
    let agent = IntentAgent::new(deps.clone(), LuciusRole(SpineRole::new(blot_key)));
    let active = agent.active.clone();
    tokio::spawn(agent.clone().run());
    agent.ready().await;
    let _heartbeats =
        ben_component::start_heartbeats(&deps, "lucius", active.clone(), load.clone());
    let mut queries = deps
        .bus
        .subscribe(QUERY, None)
        .await
        .map_err(|e| e.to_string())?;
    {
        let (deps, store) = (deps.clone(), store.clone());
        tokio::spawn(async move {
            while let Some(m) = queries.next().await {
                let answer = match serde_json::from_slice::<Query>(&m.payload) {
                    Ok(q) => {
                        serde_json::json!({ "records": store.query(&q), "count": store.count(), "evicted": store.evicted() })
                    }
                    Err(e) => serde_json::json!({ "error": format!("bad query: {e}") }),
                };
                let _ = deps
                    .bus
                    .reply(&m, serde_json::to_vec(&answer).unwrap_or_default())
                    .await;
            }
        });
    }
    let mut sub = deps
        .bus
        .subscribe(subjects::LUCIUS, Some("lucius"))
        .await
        .map_err(|e| e.to_string())?;
    while let Some(m) = sub.next().await {
        load.queue_depth
            .store(sub.rx.len() as u64, Ordering::Relaxed);
        let rec = match pb::Record::decode(m.payload.as_slice()) {
            Ok(r) => r,
            Err(e) => {
                deps.dead_letter(
                    subjects::LUCIUS,
                    format!("not a record: {e}"),
                    m.payload.len(),
                )
                .await;
                continue;
            }
        };
        let Some(loaded) = active.load() else {
            deps.dead_letter(
                subjects::LUCIUS,
                format!("record {} arrived before any intent is active", rec.id),
                m.payload.len(),
            )
            .await;
            continue;
        };
        match ben_spine::process(&loaded.compiled, &rec) {
            Ok(out) => {
                load.processed.fetch_add(1, Ordering::Relaxed);
                store.append(
                    Observation {
                        id: out.id,
                        at_ns: out.received_ns,
                        schema: out.schema,
                        schema_version: out.schema_version,
                        app: out.app,
                        intent: out.intent_version,
                        flags: out.flags,
                        meta: serde_json::from_slice(&out.meta).unwrap_or(serde_json::Value::Null),
                        record: serde_json::from_slice(&out.body)
                            .unwrap_or(serde_json::Value::Null),
                    },
                    &cfg,
                    deps.clock.now_ns(),
                );
            }
            Err(reason) => {
                deps.dead_letter(
                    subjects::LUCIUS,
                    format!("record {}: {reason}", rec.id),
                    m.payload.len(),
                )
                .await
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(at: i64, flags: &[&str]) -> Observation {
        Observation {
            id: at.to_string(),
            at_ns: at,
            schema: "http.request".into(),
            schema_version: 2,
            app: "a".into(),
            intent: "v".into(),
            flags: flags.iter().map(|s| s.to_string()).collect(),
            meta: serde_json::Value::Null,
            record: serde_json::Value::Null,
        }
    }

    #[test]
    fn retention_bounds_and_queries() {
        let s = Observations::default();
        let cfg = Config {
            max_records: 3,
            retention_ns: 100,
        };
        for t in 0..5 {
            s.append(obs(t, if t % 2 == 0 { &["x"] } else { &[] }), &cfg, t);
        }
        assert_eq!(s.count(), 3);
        assert_eq!(s.evicted(), 2);
        assert_eq!(
            s.query(&Query {
                flag: Some("x".into()),
                ..Query::default()
            })
            .len(),
            2
        );
        assert_eq!(
            s.query(&Query {
                since_ns: Some(4),
                ..Query::default()
            })
            .len(),
            1
        );
        assert_eq!(
            s.query(&Query {
                schema: Some("http.request@v2".into()),
                ..Query::default()
            })
            .len(),
            3
        );
        // Retention: far in the future, old rows expire.
        s.append(obs(1000, &[]), &cfg, 1000);
        assert_eq!(s.count(), 1);
        assert_eq!(s.evicted(), 2, "expiry is not eviction");
    }
}
