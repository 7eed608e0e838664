//! The persistence worker: every committed block into SQL, in order, one
//! transaction per block (the seed's `blocks`, `transactions`,
//! `anomalies` and `validators` tables), through a queue of 1,024.
//!
//! A block that fails is retried three times with back-off; then the
//! worker reports itself **halted** (the validator stops taking part until
//! it is not: no votes, no commits, an error in its log and its counters)
//! and keeps retrying that same block: none is ever skipped. Writes are
//! idempotent (`ON CONFLICT DO NOTHING`), so several validators may share
//! one database, and a block written twice is written once.
//!
//! SQLite in `ben up` (a file per validator), PostgreSQL (or anything that
//! speaks its SQL) in cluster mode.

use crate::state::{Applied, Reputation};
use ben_mesh_consensus::{Block, Hash, Height, Millis};
use sqlx::any::AnyConnectOptions;
use sqlx::AnyPool;
use sqlx::Row;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Blocks waiting for the database.
pub const QUEUE: usize = 1_024;
/// Attempts before the worker halts the validator.
pub const ATTEMPTS: u32 = 3;

const MIGRATIONS: &[ben_sql::Migration] = &[(
    1,
    "the seed's tables",
    "CREATE TABLE IF NOT EXISTS blocks (
        height BIGINT PRIMARY KEY,
        block_hash TEXT NOT NULL,
        state_root TEXT NOT NULL,
        previous_hash TEXT NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS transactions (
        id TEXT PRIMARY KEY,
        block_height BIGINT NOT NULL REFERENCES blocks (height),
        position BIGINT NOT NULL,
        type TEXT NOT NULL,
        payload TEXT NOT NULL,
        reason TEXT
    );
    CREATE TABLE IF NOT EXISTS anomalies (
        id TEXT PRIMARY KEY,
        transaction_id TEXT NOT NULL REFERENCES transactions (id),
        type TEXT NOT NULL,
        confidence DOUBLE PRECISION NOT NULL,
        lifecycle_state TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS validators (
        id TEXT PRIMARY KEY,
        proposed BIGINT NOT NULL,
        voted BIGINT NOT NULL,
        active INTEGER NOT NULL,
        height BIGINT NOT NULL
    );",
)];

/// One committed block as the tables hold it.
#[derive(Clone, Debug)]
pub struct Record {
    /// Its height.
    pub height: Height,
    /// Its time.
    pub time: Millis,
    /// Its id.
    pub block: Hash,
    /// Its parent's id.
    pub parent: Hash,
    /// State root after it.
    pub root: Hash,
    /// Its transactions, in order.
    pub payload: ben_mesh_consensus::Payload,
    /// Admitted anomalies: transaction index, id, class, confidence.
    pub admitted: Vec<(usize, String, String, f64)>,
    /// Refused transactions: index and reason.
    pub refused: Vec<(usize, String)>,
    /// Admitted policy requests, by transaction index.
    pub requests: Vec<usize>,
    /// Every validator's reputation after it, by index.
    pub reputation: Vec<(u16, Reputation)>,
}

impl Record {
    /// The record of `block`, which the state machine applied as `a`,
    /// leaving `reputation`.
    pub fn new(block: &Block, a: &Applied, reputation: Vec<(u16, Reputation)>) -> Record {
        Record {
            height: block.height,
            time: block.time,
            block: block.id,
            parent: block.parent,
            root: a.root,
            payload: block.payload.clone(),
            admitted: a
                .admitted
                .iter()
                .zip(&a.detail)
                .map(|(id, (i, class, conf))| (*i, id.clone(), class.clone(), *conf))
                .collect(),
            refused: a.refused.clone(),
            requests: a.requests.iter().map(|(i, _)| *i).collect(),
            reputation,
        }
    }
}

/// What the worker reports.
#[derive(Default)]
pub struct Status {
    /// The highest height written.
    pub persisted: AtomicU64,
    /// Failed attempts so far.
    pub failures: AtomicU64,
    /// Set after [`ATTEMPTS`] failures of one block, cleared when it is
    /// written: the validator does not take part meanwhile.
    pub halted: AtomicBool,
    /// The last error.
    pub last_error: Mutex<Option<String>>,
}

/// Where a validator's tables live.
#[derive(Clone, Debug)]
pub enum Target {
    /// A SQLite file (`ben up`).
    Sqlite(std::path::PathBuf),
    /// A server URL (`postgres://…`, cluster mode).
    Url(String),
}

/// The worker's queue.
pub struct Persistence {
    queue: mpsc::Sender<Record>,
    /// What it reports.
    pub status: Arc<Status>,
    halt: watch::Receiver<bool>,
    /// The highest height the tables held when it started.
    pub start_height: Height,
    worker: tokio::task::AbortHandle,
}

impl Drop for Persistence {
    /// The worker goes with its validator, as in a crash: what it had not
    /// written is in the validator's chain file, and the next start writes
    /// it (above [`Persistence::start_height`]).
    fn drop(&mut self) {
        self.worker.abort();
    }
}

impl Persistence {
    /// Opens `target`, applies the migrations and starts the worker.
    pub async fn start(target: &Target) -> Result<Persistence, String> {
        let (opts, what) = match target {
            Target::Sqlite(p) => {
                // 0600 before SQLite opens it: its -wal and -shm files
                // take the database file's mode.
                ben_control::private::file(p)?;
                (ben_sql::sqlite_options(p)?, p.display().to_string())
            }
            Target::Url(u) => {
                let what = ben_sql::redact(u);
                let o = AnyConnectOptions::from_str(u)
                    .map_err(|e| format!("validator database {what}: {e}"))?;
                (o, what)
            }
        };
        let pool = ben_sql::pool(opts, 2, Duration::from_secs(2), &[])
            .await
            .map_err(|e| {
                format!(
                    "validator database {what}: {e} (is it reachable, and does the database exist?)"
                )
            })?;
        ben_sql::migrate_retrying(&pool, "validator_migrations", MIGRATIONS)
            .await
            .map_err(|e| format!("validator database {what}: applying migrations: {e}"))?;
        let start_height: i64 = sqlx::query("SELECT COALESCE(MAX(height), 0) FROM blocks")
            .fetch_one(&pool)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| format!("validator database {what}: reading its height: {e}"))?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let status = Arc::new(Status::default());
        status
            .persisted
            .store(start_height as u64, Ordering::Relaxed);
        let (halt_tx, halt) = watch::channel(false);
        let worker = tokio::spawn(work(pool, rx, status.clone(), halt_tx, what)).abort_handle();
        Ok(Persistence {
            queue: tx,
            status,
            halt,
            start_height: start_height as u64,
            worker,
        })
    }

    /// Queues a committed block (waits while the queue is full).
    pub async fn push(&self, r: Record) -> Result<(), String> {
        self.queue
            .send(r)
            .await
            .map_err(|_| "the persistence worker stopped".to_string())
    }

    /// Returns at once when the worker is not halted, else when it is
    /// running again.
    pub async fn until_running(&self) {
        let mut h = self.halt.clone();
        while *h.borrow_and_update() {
            if h.changed().await.is_err() {
                return;
            }
        }
    }

    /// Whether the worker is halted.
    pub fn halted(&self) -> bool {
        *self.halt.borrow()
    }
}

async fn work(
    pool: AnyPool,
    mut rx: mpsc::Receiver<Record>,
    status: Arc<Status>,
    halt: watch::Sender<bool>,
    what: String,
) {
    while let Some(r) = rx.recv().await {
        let mut attempt = 0u32;
        loop {
            match write(&pool, &r).await {
                Ok(()) => {
                    status.persisted.store(r.height, Ordering::Relaxed);
                    if status.halted.swap(false, Ordering::Relaxed) {
                        tracing::warn!(database = %what, height = r.height, "validator database back: block written, the validator takes part again");
                        let _ = halt.send(false);
                    }
                    break;
                }
                Err(e) => {
                    attempt += 1;
                    status.failures.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut l) = status.last_error.lock() {
                        *l = Some(e.clone());
                    }
                    if attempt == ATTEMPTS {
                        status.halted.store(true, Ordering::Relaxed);
                        let _ = halt.send(true);
                        tracing::error!(database = %what, height = r.height, error = %e, "block not persisted after {ATTEMPTS} attempts: the validator stops voting and committing until it is (retrying)");
                    } else if attempt < ATTEMPTS {
                        tracing::warn!(database = %what, height = r.height, attempt, error = %e, "block not persisted; retrying");
                    }
                    let wait = Duration::from_millis(100 << attempt.min(4));
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// Writes `r` in one transaction. Idempotent: a block already there (by
/// another validator sharing the database, or before a crash) is checked
/// to be the same block, and an error names the difference otherwise.
async fn write(pool: &AnyPool, r: &Record) -> Result<(), String> {
    let e = |e: sqlx::Error| e.to_string();
    let mut tx = pool.begin().await.map_err(e)?;
    let height = r.height as i64;
    let hash = r.block.hex();
    let new = sqlx::query(
        "INSERT INTO blocks (height, block_hash, state_root, previous_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(height)
    .bind(&hash)
    .bind(r.root.hex())
    .bind(r.parent.hex())
    .bind(r.time as i64)
    .execute(&mut *tx)
    .await
    .map_err(e)?
    .rows_affected();
    if new == 0 {
        let there: String = sqlx::query("SELECT block_hash FROM blocks WHERE height = $1")
            .bind(height)
            .fetch_one(&mut *tx)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(e)?;
        if there != hash {
            return Err(format!(
                "height {} holds block {there} in the database, this validator committed {hash}: \
                 two chains share one database (check each validator set has its own)",
                r.height
            ));
        }
    }
    let refused: std::collections::HashMap<usize, &str> = r
        .refused
        .iter()
        .map(|(i, why)| (*i, why.as_str()))
        .collect();
    for (i, payload) in r.payload.iter().enumerate() {
        let id = format!("{}-{i}", r.height);
        let why = refused.get(&i).copied();
        sqlx::query(
            "INSERT INTO transactions (id, block_height, position, type, payload, reason) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(&id)
        .bind(height)
        .bind(i as i64)
        .bind(if why.is_some() {
            "refused"
        } else if r.requests.contains(&i) {
            "policy_request"
        } else {
            "anomaly"
        })
        .bind(hex::encode(payload))
        .bind(why)
        .execute(&mut *tx)
        .await
        .map_err(e)?;
    }
    for (i, anomaly, class, confidence) in &r.admitted {
        sqlx::query(
            "INSERT INTO anomalies (id, transaction_id, type, confidence, lifecycle_state) \
             VALUES ($1, $2, $3, $4, 'COMMITTED') ON CONFLICT DO NOTHING",
        )
        .bind(anomaly)
        .bind(format!("{}-{i}", r.height))
        .bind(class)
        .bind(*confidence)
        .execute(&mut *tx)
        .await
        .map_err(e)?;
    }
    for (index, rep) in &r.reputation {
        // Newer heights win: validators sharing the database write in
        // their own order.
        sqlx::query(
            "INSERT INTO validators (id, proposed, voted, active, height) VALUES ($1, $2, $3, 1, $4) \
             ON CONFLICT (id) DO UPDATE SET proposed = excluded.proposed, voted = excluded.voted, \
             height = excluded.height WHERE validators.height < excluded.height",
        )
        .bind(format!("validator-{}", index + 1))
        .bind(rep.proposed as i64)
        .bind(rep.voted as i64)
        .bind(height)
        .execute(&mut *tx)
        .await
        .map_err(e)?;
    }
    tx.commit().await.map_err(e)
}
