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
//! into SQLite (`.ben/lucius.db`, embedded mode) or PostgreSQL
//! ([`Config::database_url`], cluster mode) — the same SQL on both — and
//! what does not fit the queue is counted ([`Observations::dropped`]), as is
//! what the database refused ([`Observations::failed`]).

mod db;

use ben_component::{subjects, Deps, IntentAgent, Load, Role};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub const QUERY: &str = "ben.lucius.query";

/// Lucius redacts like a spine ([`ben_intent::Evaluator::from_artifacts`]),
/// from its own role's artifacts (schemas, packs, settings), with its
/// hmac key.
pub struct LuciusRole(Option<ben_blot::BlotKey>);

impl Role for LuciusRole {
    const NAME: &'static str = "lucius";
    type Compiled = ben_intent::Evaluator;
    fn compile(
        &self,
        arts: &std::collections::BTreeMap<String, Vec<u8>>,
        version: &str,
    ) -> Result<Self::Compiled, String> {
        ben_intent::Evaluator::from_artifacts(arts, version, self.0.clone())
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Observations queued for the writer at most (beyond: counted drops).
    pub queue: usize,
    /// Age after which records are deleted, ns.
    pub retention_ns: i64,
    /// `postgres://user@host:port/db` stores observations in PostgreSQL
    /// (cluster mode); unset (or empty) keeps the SQLite file given to
    /// [`Observations::open`]. `sqlite:PATH` names a SQLite file.
    pub database_url: Option<String>,
    /// How long a database operation waits for a connection before it
    /// fails (the batch is then counted in [`Observations::failed`]).
    pub db_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            queue: 100_000,
            retention_ns: 7 * 24 * 3600 * 1_000_000_000,
            database_url: None,
            db_timeout_ms: 5_000,
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

/// The observation store: SQLite under the data dir or PostgreSQL, written
/// by one background task in batches. Ingest never blocks the data path: the
/// queue to the writer is bounded and what does not fit is counted in
/// [`Observations::dropped`].
pub struct Observations {
    pool: sqlx::AnyPool,
    what: String,
    tx: tokio::sync::mpsc::Sender<Row>,
    rows: Arc<AtomicU64>,
    dropped: AtomicU64,
    expired: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    last_error: Arc<std::sync::Mutex<Option<String>>>,
}

impl Observations {
    /// Opens (or creates) the store and starts its writer: PostgreSQL when
    /// `cfg.database_url` names it, else the SQLite file at `path`.
    pub async fn open(path: &std::path::Path, cfg: Config) -> Result<Arc<Observations>, String> {
        let timeout = std::time::Duration::from_millis(cfg.db_timeout_ms.max(1));
        let (pool, what, server) = db::open(cfg.database_url.as_deref(), path, timeout).await?;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM lucius_observations")
            .fetch_one(&pool)
            .await
            .map_err(|e| format!("Lucius database {what}: counting rows: {e}"))?;
        let (tx, rx) = tokio::sync::mpsc::channel(cfg.queue.max(1));
        let obs = Arc::new(Observations {
            pool: pool.clone(),
            what,
            tx,
            rows: Arc::new(AtomicU64::new(n.max(0) as u64)),
            dropped: AtomicU64::new(0),
            expired: Arc::new(AtomicU64::new(0)),
            written: Arc::new(AtomicU64::new(0)),
            failed: Arc::new(AtomicU64::new(0)),
            last_error: Arc::default(),
        });
        tokio::spawn(writer(
            pool,
            server,
            rx,
            cfg,
            Counters {
                rows: obs.rows.clone(),
                expired: obs.expired.clone(),
                written: obs.written.clone(),
                failed: obs.failed.clone(),
                last_error: obs.last_error.clone(),
                what: obs.what.clone(),
            },
        ));
        Ok(obs)
    }

    /// The database: a SQLite path or a PostgreSQL URL without password.
    pub fn database(&self) -> &str {
        &self.what
    }

    /// Observations the database refused or could not take (unreachable);
    /// they are not stored.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// The last database error, with the database named.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
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
        let (name, version) = match q.schema.as_deref().map(|s| {
            s.split_once("@v")
                .map_or((s, None), |(n, v)| (n, v.parse::<i64>().ok()))
        }) {
            Some((n, v)) => (Some(n.to_string()), v),
            None => (None, None),
        };
        // Placeholders numbered in the order they are bound: the same text
        // for SQLite and PostgreSQL.
        let mut sql = String::from("SELECT id, at_ns, schema_name, schema_version, app, intent, flags, meta, record FROM lucius_observations WHERE at_ns >= $1");
        let mut n = 1;
        let mut next = || {
            n += 1;
            n
        };
        if name.is_some() {
            sql.push_str(&format!(" AND schema_name = ${}", next()));
        }
        if version.is_some() {
            sql.push_str(&format!(" AND schema_version = ${}", next()));
        }
        if q.flag.is_some() {
            // Exact, case-sensitive membership in the JSON array of flag
            // names, on both backends: the column with its `[` turned into
            // `,` contains `,"<name>"` (the name JSON-escaped) exactly when
            // the array holds that name — inside a JSON string a `"` is
            // always escaped, so `,"` only starts an element. `replace`
            // matches literally (LIKE would read `_` and `%` in a flag
            // name as wildcards, and SQLite's LIKE ignores case).
            sql.push_str(&format!(
                " AND replace(',' || substr(flags, 2), ${}, '') <> ',' || substr(flags, 2)",
                next()
            ));
        }
        sql.push_str(&format!(" ORDER BY at_ns, id LIMIT ${}", next()));
        let mut query = sqlx::query(&sql).bind(q.since_ns.unwrap_or(i64::MIN));
        if let Some(name) = name {
            query = query.bind(name);
        }
        if let Some(version) = version {
            query = query.bind(version);
        }
        if let Some(f) = &q.flag {
            query = query.bind(flag_needle(f));
        }
        let rows = query
            .bind(q.limit.unwrap_or(100).min(10_000) as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| format!("Lucius query on {}: {e}", self.what))?;
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

/// What the flag filter looks for in the stored JSON array (see
/// [`Observations::query`]): `,` and the flag name as a JSON string.
fn flag_needle(flag: &str) -> String {
    // Serializing a string cannot fail.
    format!(",{}", serde_json::to_string(flag).unwrap_or_default())
}

/// The writer's shared counters.
struct Counters {
    rows: Arc<AtomicU64>,
    expired: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    last_error: Arc<std::sync::Mutex<Option<String>>>,
    what: String,
}

impl Counters {
    fn error(&self, doing: &str, e: &sqlx::Error) {
        if let Ok(mut l) = self.last_error.lock() {
            *l = Some(format!("Lucius database {}: {doing}: {e}", self.what));
        }
    }
}

/// Rows per multi-row INSERT at most: one round trip to the database per
/// chunk, not per row.
const ROWS_PER_INSERT: usize = 1024;

/// The INSERT statements the writer uses: one per power of two up to
/// [`ROWS_PER_INSERT`] rows. A batch of any size is cut into these sizes
/// (475 rows = 256 + 128 + 64 + 16 + 8 + 2 + 1), so the database sees at
/// most eleven distinct statements and each is parsed once per connection
/// (sqlx keeps them prepared). Building a statement for each batch's exact
/// size had SQLite parse a new 4,000-parameter statement for nearly every
/// batch: a sixth of Lucius's CPU at 50k records/s.
struct Inserts {
    /// `sql[k]` inserts `1 << k` rows.
    sql: Vec<String>,
}

impl Inserts {
    fn new(numbered: bool) -> Inserts {
        let sql = (0..=ROWS_PER_INSERT.trailing_zeros())
            .map(|k| insert_sql(1 << k, numbered))
            .collect();
        Inserts { sql }
    }

    /// The chunk sizes `rows` is cut into, largest first.
    fn chunks(rows: usize) -> impl Iterator<Item = usize> {
        let full = rows / ROWS_PER_INSERT;
        let rest = rows % ROWS_PER_INSERT;
        std::iter::repeat_n(ROWS_PER_INSERT, full).chain(
            (0..ROWS_PER_INSERT.trailing_zeros())
                .rev()
                .map(|k| 1usize << k)
                .filter(move |size| rest & size != 0),
        )
    }

    fn for_rows(&self, rows: usize) -> &str {
        &self.sql[rows.trailing_zeros() as usize]
    }
}

/// `INSERT … VALUES (…),(…)` for `rows` rows. SQLite gets anonymous `?`
/// parameters, PostgreSQL `$N`: SQLite looks a named parameter up by a
/// linear scan of the statement's names, so binding `$N` there costs the
/// square of the parameter count (100 rows = 900 parameters spent a
/// quarter of the embedded data path's cycles; with `?` it is free).
fn insert_sql(rows: usize, numbered: bool) -> String {
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
            if numbered {
                sql.push_str(&format!("${}", i * 9 + c + 1));
            } else {
                sql.push('?');
            }
        }
        sql.push(')');
    }
    sql
}

/// Inserts one batch in one transaction, as multi-row INSERTs.
async fn insert(
    conn: &mut sqlx::AnyConnection,
    batch: &[Row],
    inserts: &Inserts,
) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let mut tx = conn.begin().await?;
    let mut at = 0;
    for size in Inserts::chunks(batch.len()) {
        let mut q = sqlx::query(inserts.for_rows(size));
        for o in &batch[at..at + size] {
            q = q
                .bind(o.id.as_str())
                .bind(o.at_ns)
                .bind(o.schema.as_str())
                .bind(i64::from(o.schema_version))
                .bind(o.app.as_str())
                .bind(o.intent.as_str())
                .bind(o.flags.as_str())
                .bind(o.meta.as_str())
                .bind(o.record.as_str());
        }
        q.execute(&mut *tx).await?;
        at += size;
    }
    tx.commit().await
}

/// Writes queued observations in batches; applies retention. Keeps one
/// connection of the pool for itself (its prepared statements stay warm);
/// after an error it takes a fresh one.
async fn writer(
    pool: sqlx::AnyPool,
    server: bool,
    mut rx: tokio::sync::mpsc::Receiver<Row>,
    cfg: Config,
    c: Counters,
) {
    let mut last_retention = std::time::Instant::now();
    let inserts = Inserts::new(server);
    let mut conn: Option<sqlx::pool::PoolConnection<sqlx::Any>> = None;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 4096 {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        let newest = batch.iter().map(|o| o.at_ns).max().unwrap_or(0);
        let written = async {
            let mut cn = match conn.take() {
                Some(cn) => cn,
                None => pool.acquire().await?,
            };
            insert(&mut cn, &batch, &inserts).await?;
            Ok::<_, sqlx::Error>(cn)
        }
        .await;
        match written {
            Ok(cn) => {
                conn = Some(cn);
                c.rows.fetch_add(batch.len() as u64, Ordering::Relaxed);
                c.written.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                c.failed.fetch_add(batch.len() as u64, Ordering::Relaxed);
                c.error(&format!("writing {} observations", batch.len()), &e);
            }
        }
        if last_retention.elapsed() > std::time::Duration::from_secs(1) {
            last_retention = std::time::Instant::now();
            match sqlx::query("DELETE FROM lucius_observations WHERE at_ns < $1")
                .bind(newest.saturating_sub(cfg.retention_ns))
                .execute(&pool)
                .await
            {
                Ok(r) => {
                    let n = r.rows_affected();
                    c.expired.fetch_add(n, Ordering::Relaxed);
                    c.rows
                        .fetch_sub(n.min(c.rows.load(Ordering::Relaxed)), Ordering::Relaxed);
                }
                Err(e) => c.error("applying retention", &e),
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
    let agent = IntentAgent::new(deps.clone(), LuciusRole(blot_key));
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
                        // The counts as of before the query: rows are counted
                        // once committed, so the query sees at least `count`
                        // of them (read after it, a count could include rows
                        // the query ran too early to see).
                        let (count, dropped, expired, failed) = (
                            store.count(),
                            store.dropped(),
                            store.expired(),
                            store.failed(),
                        );
                        match store.query(&q).await {
                            Ok(records) => {
                                serde_json::json!({ "records": records, "count": count, "dropped": dropped, "expired": expired, "failed": failed })
                            }
                            Err(e) => serde_json::json!({ "error": e }),
                        }
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
    ben_component::consume(
        &deps,
        subjects::LUCIUS,
        "lucius",
        &active,
        &load,
        |loaded, rec, _| {
            store.append_record(loaded.compiled.process_record(rec)?);
            Ok(())
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_cut_into_the_prepared_statement_sizes() {
        let ins = Inserts::new(false);
        assert_eq!(ins.sql.len(), 11);
        for rows in [1, 2, 3, 475, 1023, 1024, 1025, 4096, 4095, 2500] {
            let sizes: Vec<usize> = Inserts::chunks(rows).collect();
            assert_eq!(sizes.iter().sum::<usize>(), rows, "{rows}: {sizes:?}");
            assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
            for s in sizes {
                assert!(s.is_power_of_two() && s <= ROWS_PER_INSERT, "{s}");
                let sql = ins.for_rows(s);
                assert_eq!(sql.matches('?').count(), s * 9, "{s}");
            }
        }
        assert_eq!(Inserts::chunks(0).count(), 0);
        assert_eq!(
            Inserts::chunks(475).collect::<Vec<_>>(),
            [256, 128, 64, 16, 8, 2, 1]
        );
        let pg = Inserts::new(true);
        assert!(pg
            .for_rows(2)
            .ends_with("($1,$2,$3,$4,$5,$6,$7,$8,$9),($10,$11,$12,$13,$14,$15,$16,$17,$18)"));
    }

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

    use ben_sql::testing::TestDb;

    /// SQLite in a temp dir, or a fresh PostgreSQL database.
    async fn backend(pg: bool, name: &str) -> (std::path::PathBuf, Option<TestDb>) {
        let dir = std::env::temp_dir().join(format!(
            "ben-lucius-{name}-{}-{}",
            if pg { "pg" } else { "sqlite" },
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let db = if pg {
            Some(TestDb::create().await)
        } else {
            None
        };
        (dir.join("lucius.db"), db)
    }

    macro_rules! on_both {
        ($name:ident) => {
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(false).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(true).await
                }
            }
        };
    }

    on_both!(store_queries_retention_and_reopen);
    async fn store_queries_retention_and_reopen(pg: bool) {
        let (path, db) = backend(pg, "store").await;
        let cfg = Config {
            queue: 1000,
            retention_ns: 1_000,
            database_url: db.as_ref().map(|d| d.url.clone()),
            ..Config::default()
        };
        let s = Observations::open(&path, cfg.clone()).await.unwrap();
        if pg {
            assert!(s.database().starts_with("postgres://"), "{}", s.database());
            assert!(!path.exists(), "no SQLite file when PostgreSQL is named");
        }
        // One batch of five.
        for t in 0..5 {
            s.append(obs(t, if t % 2 == 0 { &["x"] } else { &[] }));
        }
        until(|| s.written() == 5).await;
        assert_eq!(s.failed(), 0, "{:?}", s.last_error());
        let q = |query: Query| {
            let s = s.clone();
            async move { s.query(&query).await.unwrap() }
        };
        let by_flag = q(Query {
            flag: Some("x".into()),
            ..Query::default()
        })
        .await;
        assert_eq!(
            by_flag.iter().map(|o| o.at_ns).collect::<Vec<_>>(),
            [0, 2, 4]
        );
        let since = q(Query {
            since_ns: Some(3),
            ..Query::default()
        })
        .await;
        assert_eq!(since.iter().map(|o| o.at_ns).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(
            q(Query {
                schema: Some("http.request@v2".into()),
                ..Query::default()
            })
            .await
            .len(),
            5
        );
        assert_eq!(
            q(Query {
                schema: Some("http.request".into()),
                flag: Some("x".into()),
                since_ns: Some(1),
                ..Query::default()
            })
            .await
            .len(),
            2
        );
        assert_eq!(
            q(Query {
                schema: Some("http.request@v1".into()),
                ..Query::default()
            })
            .await
            .len(),
            0
        );
        let got = q(Query {
            limit: Some(1),
            ..Query::default()
        })
        .await;
        assert_eq!(got, [obs(0, &["x"])]);
        // Reopened, the rows are still there.
        drop(s);
        let s = Observations::open(&path, cfg.clone()).await.unwrap();
        assert_eq!(s.count(), 5);
        // Retention: rows older than 1 µs before the newest go.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        s.append(obs(10_000, &[]));
        until(|| s.expired() == 5).await;
        assert_eq!(s.count(), 1);
        let left = s.query(&Query::default()).await.unwrap();
        assert_eq!(left, [obs(10_000, &[])]);
        drop(db);
    }

    on_both!(the_flag_filter_matches_names_exactly);
    /// `_` and `%` in a flag name are characters, not wildcards, and case
    /// counts (an unescaped `LIKE` matched `adminXpath` for `admin_path`,
    /// and on SQLite `Admin_Path` too).
    async fn the_flag_filter_matches_names_exactly(pg: bool) {
        let (path, db) = backend(pg, "flags").await;
        let s = Observations::open(
            &path,
            Config {
                retention_ns: i64::MAX,
                database_url: db.as_ref().map(|d| d.url.clone()),
                ..Config::default()
            },
        )
        .await
        .unwrap();
        let stored: [&[&str]; 8] = [
            &["admin_path"],
            &["adminXpath"],
            &["Admin_Path"],
            &["x", "admin_path_2"],
            &["a%b"],
            &["aXb", "login_failed"],
            &[],
            &["server_error", "admin_path"],
        ];
        for (t, flags) in stored.iter().enumerate() {
            s.append(obs(t as i64, flags));
        }
        until(|| s.written() == stored.len() as u64).await;
        let by = |flag: &str| {
            let s = s.clone();
            let flag = flag.to_string();
            async move {
                s.query(&Query {
                    flag: Some(flag),
                    ..Query::default()
                })
                .await
                .unwrap()
                .iter()
                .map(|o| o.at_ns)
                .collect::<Vec<_>>()
            }
        };
        assert_eq!(by("admin_path").await, [0, 7]);
        assert_eq!(by("Admin_Path").await, [2]);
        assert_eq!(by("a%b").await, [4]);
        assert_eq!(by("a_b").await, [] as [i64; 0]);
        assert_eq!(by("%").await, [] as [i64; 0]);
        assert_eq!(by("_").await, [] as [i64; 0]);
        assert_eq!(by("admin").await, [] as [i64; 0]);
        assert_eq!(by("x").await, [3]);
        assert_eq!(by("login_failed").await, [5]);
        assert_eq!(by("\"").await, [] as [i64; 0]);
        assert_eq!(by("").await, [] as [i64; 0]);
        drop(db);
    }

    on_both!(a_full_queue_counts_drops);
    async fn a_full_queue_counts_drops(pg: bool) {
        let (path, db) = backend(pg, "queue").await;
        let s = Observations::open(
            &path,
            Config {
                queue: 1,
                retention_ns: i64::MAX,
                database_url: db.as_ref().map(|d| d.url.clone()),
                ..Config::default()
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
        assert_eq!(s.count() as u64, s.written());
        drop(db);
    }

    /// Lucius replicas starting together on one fresh database all come up
    /// (the migration race is retried) and share the rows.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_opening_one_fresh_postgres_database_at_once_all_start() {
        let db = TestDb::create().await;
        let cfg = Config {
            database_url: Some(db.url.clone()),
            ..Config::default()
        };
        let opens = (0..6).map(|_| {
            let cfg = cfg.clone();
            async move { Observations::open(std::path::Path::new("unused.db"), cfg).await }
        });
        let all: Vec<Arc<Observations>> = futures_join_all(opens).await;
        all[0].append(obs(1, &["x"]));
        until(|| all[0].written() == 1).await;
        let seen = all[5].query(&Query::default()).await.unwrap();
        assert_eq!(seen, [obs(1, &["x"])]);
        drop(all);
        drop(db);
    }

    /// Runs the futures together on this runtime; every one must succeed.
    async fn futures_join_all<F>(fs: impl Iterator<Item = F>) -> Vec<Arc<Observations>>
    where
        F: std::future::Future<Output = Result<Arc<Observations>, String>> + Send + 'static,
    {
        let handles: Vec<_> = fs.map(tokio::spawn).collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap().unwrap());
        }
        out
    }

    #[tokio::test]
    async fn bad_database_urls_are_refused_with_the_reason() {
        let path = std::env::temp_dir().join(format!("ben-lucius-bad-{}", std::process::id()));
        let open = |url: &str| {
            let cfg = Config {
                database_url: Some(url.into()),
                db_timeout_ms: 500,
                ..Config::default()
            };
            let path = path.join("l.db");
            async move { Observations::open(&path, cfg).await.err().unwrap() }
        };
        let e = open("mysql://u:secret@h/db").await;
        assert!(
            e.contains("unsupported scheme") && !e.contains("secret"),
            "{e}"
        );
        // A server that is not there: named, password hidden.
        let e = open("postgres://u:secret@127.0.0.1:1/db").await;
        assert!(e.contains("127.0.0.1:1") && !e.contains("secret"), "{e}");
    }
}
