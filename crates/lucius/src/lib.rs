//! # Lucius
//!
//! The observation store: records the proxy routed to observe
//! (`ben.data.lucius`) are redacted on ingest with the pack's Blot rules
//! (the same pipeline as a spine, so flags and metadata are stored too),
//! kept append-only and time-ordered, aged out by retention, and answered
//! on `ben.lucius.query` (request/reply, JSON).
//!
//! Lucius never stores a raw PII value (a record whose redaction fails
//! goes to the dead-letter subject) and never blocks the data path: writes
//! go through a bounded queue to one writer task that inserts in batches
//! into SQLite (`.ben/lucius.db`, SQL kept portable to PostgreSQL), and
//! what does not fit the queue is counted ([`Observations::dropped`]).

use ben_component::{subjects, Deps, IntentAgent, Load, Role};
use ben_spine::SpineRole;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
    /// Observations queued for the writer at most (beyond: counted drops).
    pub queue: usize,
    /// Age after which records are deleted, ns.
    pub retention_ns: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            queue: 100_000,
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

/// An observation as the writer stores it: JSON columns already text.
struct Row {
    id: String,
    at_ns: i64,
    schema: String,
    schema_version: u32,
    app: String,
    intent: String,
    flags: String,
    meta: String,
    record: String,
}

fn json_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|_| "null".into())
}

impl From<Observation> for Row {
    fn from(o: Observation) -> Row {
        Row {
            flags: serde_json::to_string(&o.flags).unwrap_or_default(),
            meta: o.meta.to_string(),
            record: o.record.to_string(),
            id: o.id,
            at_ns: o.at_ns,
            schema: o.schema,
            schema_version: o.schema_version,
            app: o.app,
            intent: o.intent,
        }
    }
}

impl From<ben_wire::pb::Record> for Row {
    /// A record as a spine outputs it (redacted body and meta as JSON).
    fn from(r: ben_wire::pb::Record) -> Row {
        Row {
            flags: serde_json::to_string(&r.flags).unwrap_or_default(),
            meta: if r.meta.is_empty() {
                "null".into()
            } else {
                json_text(r.meta)
            },
            record: json_text(r.body),
            id: r.id,
            at_ns: r.received_ns,
            schema: r.schema,
            schema_version: r.schema_version,
            app: r.app,
            intent: r.intent_version,
        }
    }
}

/// A query: all fields optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Query {
    pub schema: Option<String>,
    pub flag: Option<String>,
    pub since_ns: Option<i64>,
    pub limit: Option<usize>,
}

/// The observation store: SQLite under the data dir, written by one
/// background task in batches. Ingest never blocks the data path: the
/// queue to the writer is bounded and what does not fit is counted in
/// [`Observations::dropped`].
pub struct Observations {
    pool: sqlx::SqlitePool,
    tx: tokio::sync::mpsc::Sender<Row>,
    rows: Arc<AtomicU64>,
    dropped: AtomicU64,
    expired: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

const SCHEMA_SQL: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS lucius_observations (
        id TEXT NOT NULL,
        at_ns BIGINT NOT NULL,
        schema_name TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        app TEXT NOT NULL,
        intent TEXT NOT NULL,
        flags TEXT NOT NULL,
        meta TEXT NOT NULL,
        record TEXT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS lucius_observations_at ON lucius_observations (at_ns)",
];

impl Observations {
    /// Opens (or creates) the store at `path` and starts its writer.
    pub async fn open(path: &std::path::Path, cfg: Config) -> Result<Arc<Observations>, String> {
        use sqlx::sqlite::{
            SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal);
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await
            .map_err(|e| format!("Lucius database {}: {e}", path.display()))?;
        for st in SCHEMA_SQL {
            sqlx::query(st)
                .execute(&pool)
                .await
                .map_err(|e| format!("Lucius schema: {e}"))?;
        }
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM lucius_observations")
            .fetch_one(&pool)
            .await
            .map_err(|e| e.to_string())?;
        let (tx, rx) = tokio::sync::mpsc::channel(cfg.queue.max(1));
        let obs = Arc::new(Observations {
            pool: pool.clone(),
            tx,
            rows: Arc::new(AtomicU64::new(n.max(0) as u64)),
            dropped: AtomicU64::new(0),
            expired: Arc::new(AtomicU64::new(0)),
            written: Arc::new(AtomicU64::new(0)),
        });
        tokio::spawn(writer(
            pool,
            rx,
            cfg,
            obs.rows.clone(),
            obs.expired.clone(),
            obs.written.clone(),
        ));
        Ok(obs)
    }

    /// Queues one observation; never waits.
    pub fn append(&self, o: Observation) {
        self.queue(o.into());
    }

    /// Queues a record as a spine pipeline output it; never waits.
    pub fn append_record(&self, r: ben_wire::pb::Record) {
        self.queue(r.into());
    }

    fn queue(&self, row: Row) {
        if self.tx.try_send(row).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Rows stored (after retention).
    pub fn count(&self) -> usize {
        self.rows.load(Ordering::Relaxed) as usize
    }

    /// Observations dropped because the writer queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Rows removed by retention.
    pub fn expired(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }

    /// Rows written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    pub async fn query(&self, q: &Query) -> Result<Vec<Observation>, String> {
        let mut sql = String::from("SELECT id, at_ns, schema_name, schema_version, app, intent, flags, meta, record FROM lucius_observations WHERE at_ns >= $1");
        let (name, version) = match q.schema.as_deref().map(|s| {
            s.split_once("@v")
                .map_or((s, None), |(n, v)| (n, v.parse::<i64>().ok()))
        }) {
            Some((n, v)) => (Some(n.to_string()), v),
            None => (None, None),
        };
        if name.is_some() {
            sql.push_str(" AND schema_name = $2");
        }
        if version.is_some() {
            sql.push_str(" AND schema_version = $3");
        }
        if q.flag.is_some() {
            sql.push_str(" AND flags LIKE $4");
        }
        sql.push_str(" ORDER BY at_ns LIMIT $5");
        let rows = sqlx::query(&sql)
            .bind(q.since_ns.unwrap_or(i64::MIN))
            .bind(name.unwrap_or_default())
            .bind(version.unwrap_or(0))
            .bind(
                q.flag
                    .as_ref()
                    .map(|f| format!("%\"{f}\"%"))
                    .unwrap_or_default(),
            )
            .bind(q.limit.unwrap_or(100).min(10_000) as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| format!("Lucius query: {e}"))?;
        use sqlx::Row;
        rows.iter()
            .map(|r| -> Result<Observation, sqlx::Error> {
                let text = |i: usize| -> Result<serde_json::Value, sqlx::Error> {
                    Ok(serde_json::from_str(&r.try_get::<String, _>(i)?)
                        .unwrap_or(serde_json::Value::Null))
                };
                Ok(Observation {
                    id: r.try_get(0)?,
                    at_ns: r.try_get(1)?,
                    schema: r.try_get(2)?,
                    schema_version: r.try_get::<i64, _>(3)? as u32,
                    app: r.try_get(4)?,
                    intent: r.try_get(5)?,
                    flags: serde_json::from_value(text(6)?).unwrap_or_default(),
                    meta: text(7)?,
                    record: text(8)?,
                })
            })
            .collect::<Result<_, _>>()
            .map_err(|e| format!("Lucius query: {e}"))
    }
}

/// Rows per multi-row INSERT (see the writer).
const ROWS_PER_INSERT: usize = 64;

/// `INSERT … VALUES (?,…,?),(…)` for `rows` rows. Anonymous `?`
/// parameters, not `$N`: SQLite looks a named parameter up by a linear
/// scan of the statement's names, so binding `$N` costs grow with the
/// square of the parameter count (100 rows = 900 parameters spent a
/// quarter of the data path's cycles there; with `?` it is free).
fn insert_sql(rows: usize) -> String {
    let mut sql = String::from("INSERT INTO lucius_observations (id, at_ns, schema_name, schema_version, app, intent, flags, meta, record) VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push('(');
        for c in 0..9 {
            if c > 0 {
                sql.push(',');
            }
            sql.push('?');
        }
        sql.push(')');
    }
    sql
}

/// Writes queued observations in batches; applies retention.
async fn writer(
    pool: sqlx::SqlitePool,
    mut rx: tokio::sync::mpsc::Receiver<Row>,
    cfg: Config,
    rows: Arc<AtomicU64>,
    expired: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
) {
    let mut last_retention = std::time::Instant::now();
    let full_sql = insert_sql(ROWS_PER_INSERT);
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 1000 {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        let newest = batch.iter().map(|o| o.at_ns).max().unwrap_or(0);
        let ok = async {
            let mut tx = pool.begin().await?;
            // Multi-row INSERTs: one round trip to the database thread
            // per chunk, not per row.
            for chunk in batch.chunks(ROWS_PER_INSERT) {
                let partial;
                let sql = if chunk.len() == ROWS_PER_INSERT {
                    &full_sql
                } else {
                    partial = insert_sql(chunk.len());
                    &partial
                };
                let mut q = sqlx::query(sql);
                for o in chunk {
                    q = q
                        .bind(&o.id)
                        .bind(o.at_ns)
                        .bind(&o.schema)
                        .bind(i64::from(o.schema_version))
                        .bind(&o.app)
                        .bind(&o.intent)
                        .bind(&o.flags)
                        .bind(&o.meta)
                        .bind(&o.record);
                }
                q.execute(&mut *tx).await?;
            }
            tx.commit().await
        }
        .await;
        if ok.is_ok() {
            rows.fetch_add(batch.len() as u64, Ordering::Relaxed);
            written.fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        if last_retention.elapsed() > std::time::Duration::from_secs(1) {
            last_retention = std::time::Instant::now();
            if let Ok(r) = sqlx::query("DELETE FROM lucius_observations WHERE at_ns < $1")
                .bind(newest.saturating_sub(cfg.retention_ns))
                .execute(&pool)
                .await
            {
                let n = r.rows_affected();
                expired.fetch_add(n, Ordering::Relaxed);
                rows.fetch_sub(n.min(rows.load(Ordering::Relaxed)), Ordering::Relaxed);
            }
        }
    }
}

/// Runs Lucius until the bus closes.
pub async fn run(
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
                    Ok(q) => match store.query(&q).await {
                        Ok(records) => {
                            serde_json::json!({ "records": records, "count": store.count(), "dropped": store.dropped(), "expired": store.expired() })
                        }
                        Err(e) => serde_json::json!({ "error": e }),
                    },
                    Err(e) => serde_json::json!({ "error": format!("bad query: {e}") }),
                };
                let _ = deps
                    .bus
                    .reply(&m, serde_json::to_vec(&answer).unwrap_or_default())
                    .await;
            }
        });
    }
    ben_component::consume(
        &deps,
        subjects::LUCIUS,
        "lucius",
        &active,
        &load,
        |loaded, rec, _| {
            store.append_record(ben_spine::process(&loaded.compiled, rec)?);
            Ok(())
        },
    )
    .await
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
            meta: serde_json::json!({"risk": "low"}),
            record: serde_json::json!({"path": "/"}),
        }
    }

    async fn until(f: impl Fn() -> bool) {
        for _ in 0..300 {
            if f() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("timed out");
    }

    #[tokio::test]
    async fn sqlite_store_queries_retention_and_reopen() {
        let dir = std::env::temp_dir().join(format!("ben-lucius-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("lucius.db");
        let cfg = Config {
            queue: 1000,
            retention_ns: 1_000,
        };
        let s = Observations::open(&path, cfg).await.unwrap();
        for t in 0..5 {
            s.append(obs(t, if t % 2 == 0 { &["x"] } else { &[] }));
        }
        until(|| s.written() == 5).await;
        assert_eq!(
            s.query(&Query {
                flag: Some("x".into()),
                ..Query::default()
            })
            .await
            .unwrap()
            .len(),
            3
        );
        assert_eq!(
            s.query(&Query {
                since_ns: Some(4),
                ..Query::default()
            })
            .await
            .unwrap()
            .len(),
            1
        );
        assert_eq!(
            s.query(&Query {
                schema: Some("http.request@v2".into()),
                ..Query::default()
            })
            .await
            .unwrap()
            .len(),
            5
        );
        assert_eq!(
            s.query(&Query {
                schema: Some("http.request@v1".into()),
                ..Query::default()
            })
            .await
            .unwrap()
            .len(),
            0
        );
        let got = s
            .query(&Query {
                limit: Some(1),
                ..Query::default()
            })
            .await
            .unwrap();
        assert_eq!(got[0], obs(0, &["x"]));
        // Reopened, the rows are still there.
        drop(s);
        let s = Observations::open(&path, cfg).await.unwrap();
        assert_eq!(s.count(), 5);
        // Retention: rows older than 1 µs before the newest go.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        s.append(obs(10_000, &[]));
        until(|| s.expired() == 5).await;
        assert_eq!(s.count(), 1);
    }

    #[tokio::test]
    async fn a_full_queue_counts_drops() {
        let dir = std::env::temp_dir().join(format!("ben-lucius-q-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = Observations::open(
            &dir.join("l.db"),
            Config {
                queue: 1,
                retention_ns: i64::MAX,
            },
        )
        .await
        .unwrap();
        for t in 0..2000 {
            s.append(obs(t, &[]));
        }
        assert!(
            s.dropped() > 0,
            "some appends must have found the queue full"
        );
        until(|| s.written() + s.dropped() == 2000).await;
    }
}
