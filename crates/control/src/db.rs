//! The ledger's durable state in SQL: SQLite (a file under the data dir)
//! in embedded mode, PostgreSQL in cluster mode (SQL kept to what
//! CockroachDB also accepts). Both go through sqlx's `Any` driver, so there
//! is ONE set of statements: `$n` placeholders (SQLite and PostgreSQL both
//! take them), `BIGINT`/`TEXT` columns, `ON CONFLICT … DO UPDATE`, no
//! backend-specific functions. The migrations in `migrations/` are the same
//! text on both backends (the ledger has no binary columns, so there is no
//! BLOB/BYTEA split to make).

use crate::ledger::{ComponentDeployState, DeployPhase, DeployRecord, VersionMeta};
use crate::ControlError;
use ben_ledger::{Event, Staged};
use ben_sql::redact;
use sqlx::any::AnyConnectOptions;
use sqlx::{AnyPool, Row};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Schema migrations, applied in order, each once. The same files run on
/// SQLite and PostgreSQL.
const MIGRATIONS: &[ben_sql::Migration] = &[(
    1,
    "0001_ledger",
    include_str!("../migrations/0001_ledger.sql"),
)];

/// Where a database lives: what `database_url` (or its absence) names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file (embedded mode).
    Sqlite(PathBuf),
    /// A PostgreSQL / CockroachDB URL (`postgres://…`, cluster mode).
    Postgres(String),
}

impl Database {
    /// `url` when given (`postgres://…` / `postgresql://…`, or
    /// `sqlite:PATH`), else the SQLite file `default_path`. An empty `url`
    /// counts as none.
    pub fn from_url(url: Option<&str>, default_path: PathBuf) -> Result<Database, String> {
        let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(Database::Sqlite(default_path));
        };
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("postgres" | "postgresql") => {
                // Parse now so a malformed URL is refused with its reason
                // before anything connects.
                AnyConnectOptions::from_str(url)
                    .map_err(|e| format!("database URL {} is not a valid URL: {e}", redact(url)))?;
                Ok(Database::Postgres(url.to_string()))
            }
            Some("sqlite") => {
                let path = url
                    .trim_start_matches("sqlite://")
                    .trim_start_matches("sqlite:");
                let path = path.split('?').next().unwrap_or_default();
                if path.is_empty() {
                    return Err(format!("database URL {url} names no SQLite file"));
                }
                Ok(Database::Sqlite(PathBuf::from(path)))
            }
            _ => Err(format!(
                "database URL {} has an unsupported scheme; use postgres://user@host:port/db \
                 (cluster mode) or leave it unset for SQLite under the data dir",
                redact(url)
            )),
        }
    }

    /// The path, or the URL without its password: safe for logs and errors.
    pub fn describe(&self) -> String {
        match self {
            Database::Sqlite(p) => p.display().to_string(),
            Database::Postgres(u) => redact(u),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Database::Postgres(_))
    }

    /// A pool on it: SQLite gets one connection (one writer, WAL), the
    /// server a few. `acquire_timeout` bounds how long an operation waits
    /// for a connection, so an unreachable server fails a step instead of
    /// stalling it.
    pub async fn connect(
        &self,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<AnyPool, String> {
        let opts = match self {
            Database::Postgres(url) => AnyConnectOptions::from_str(url)
                .map_err(|e| format!("database URL {}: {e}", redact(url)))?,
            Database::Sqlite(path) => {
                // Made 0600 before SQLite opens it, so its -wal and -shm
                // files (which take the database's mode) are private too.
                crate::private::file(path)?;
                ben_sql::sqlite_options(path)?
            }
        };
        // SQLite: one writer; a server: a few.
        let max = if self.is_postgres() {
            max_connections
        } else {
            1
        };
        ben_sql::pool(opts, max, acquire_timeout, &[])
            .await
            .map_err(|e| e.to_string())
    }
}

pub(crate) struct Db {
    pool: AnyPool,
    what: String,
}

/// Everything restored at start.
pub(crate) struct Loaded {
    pub staged: Vec<Staged>,
    pub meta: BTreeMap<String, VersionMeta>,
    pub active: Option<String>,
    pub history: Vec<Event>,
    /// The most recent deploy (any outcome).
    pub last_deploy: Option<DeployRecord>,
    pub next_deploy_id: i64,
}

impl Db {
    pub async fn open(db: &Database, acquire_timeout: Duration) -> Result<Db, ControlError> {
        let what = db.describe();
        let pool = db
            .connect(4, acquire_timeout)
            .await
            .map_err(|reason| ControlError::Open {
                what: what.clone(),
                reason,
            })?;
        let db = Db { pool, what };
        db.migrate_retrying()
            .await
            .map_err(|e| ControlError::Open {
                what: db.what.clone(),
                reason: format!("applying migrations: {e}"),
            })?;
        Ok(db)
    }

    /// The path or the URL without its password.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// Applies the migrations (retried when another process races on the
    /// same DDL of a fresh server database).
    async fn migrate_retrying(&self) -> Result<(), ControlError> {
        Ok(ben_sql::migrate_retrying(&self.pool, "ben_migrations", MIGRATIONS).await?)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn load(&self, roles: &[(String, Vec<String>)]) -> Result<Loaded, ControlError> {
        let mut meta = BTreeMap::new();
        let mut staged: BTreeMap<String, Staged> = BTreeMap::new();
        for r in sqlx::query("SELECT version, bundle, digest, staged_ns FROM ledger_versions")
            .fetch_all(&self.pool)
            .await?
        {
            let version: String = r.try_get(0)?;
            meta.insert(
                version.clone(),
                VersionMeta {
                    bundle: r.try_get(1)?,
                    digest: r.try_get(2)?,
                    staged_ns: r.try_get(3)?,
                },
            );
            staged.insert(
                version.clone(),
                Staged {
                    version,
                    artifacts: BTreeMap::new(),
                    roles: BTreeMap::new(),
                },
            );
        }
        for r in sqlx::query("SELECT version, name, hash FROM ledger_artifacts")
            .fetch_all(&self.pool)
            .await?
        {
            let v: String = r.try_get(0)?;
            if let Some(s) = staged.get_mut(&v) {
                s.artifacts.insert(r.try_get(1)?, r.try_get(2)?);
            }
        }
        for r in sqlx::query("SELECT version, role, artifact FROM ledger_roles")
            .fetch_all(&self.pool)
            .await?
        {
            let v: String = r.try_get(0)?;
            if let Some(s) = staged.get_mut(&v) {
                s.roles
                    .entry(r.try_get(1)?)
                    .or_default()
                    .insert(r.try_get(2)?);
            }
        }
        // A role with no artifacts has no rows; every role is listed.
        for s in staged.values_mut() {
            for (role, _) in roles {
                s.roles.entry(role.to_string()).or_default();
            }
        }
        let history = sqlx::query("SELECT at_ns, version, what FROM ledger_history ORDER BY seq")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(Event {
                    at_ns: r.try_get(0)?,
                    version: r.try_get(1)?,
                    what: r.try_get(2)?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let active = sqlx::query("SELECT value FROM ledger_state WHERE name = $1")
            .bind("active")
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get::<String, _>(0))
            .transpose()?;
        let last_id: Option<i64> = sqlx::query("SELECT MAX(id) FROM ledger_deploys")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        let last_deploy = match last_id {
            Some(id) => self.deploy(id).await?,
            None => None,
        };
        Ok(Loaded {
            staged: staged.into_values().collect(),
            meta,
            active,
            history,
            last_deploy,
            next_deploy_id: last_id.unwrap_or(0) + 1,
        })
    }

    /// One deploy record with its components.
    pub async fn deploy(&self, id: i64) -> Result<Option<DeployRecord>, ControlError> {
        let Some(r) = sqlx::query(
            "SELECT id, version, phase, reason, started_ns, ended_ns FROM ledger_deploys WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let phase: String = r.try_get(2)?;
        let components = sqlx::query(
            "SELECT component, role, state, reason FROM ledger_deploy_components WHERE deploy_id = $1 ORDER BY component",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|c| {
            Ok(ComponentDeployState {
                id: c.try_get(0)?,
                role: c.try_get(1)?,
                state: c.try_get(2)?,
                reason: c.try_get(3)?,
                prepared_ns: None,
                active_ns: None,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(Some(DeployRecord {
            id: r.try_get(0)?,
            version: r.try_get(1)?,
            phase: DeployPhase::parse(&phase),
            reason: r.try_get(3)?,
            started_ns: r.try_get(4)?,
            ended_ns: r.try_get(5)?,
            components,
        }))
    }

    /// The most recent deploy of `version`.
    pub async fn last_deploy_of(
        &self,
        version: &str,
    ) -> Result<Option<DeployRecord>, ControlError> {
        let id: Option<i64> = sqlx::query("SELECT MAX(id) FROM ledger_deploys WHERE version = $1")
            .bind(version)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        match id {
            Some(id) => self.deploy(id).await,
            None => Ok(None),
        }
    }

    /// Finalized versions, most recent first (a version appears once).
    pub async fn finalized(&self) -> Result<Vec<String>, ControlError> {
        let rows =
            sqlx::query("SELECT version FROM ledger_deploys WHERE phase = $1 ORDER BY id DESC")
                .bind(DeployPhase::Finalized.as_str())
                .fetch_all(&self.pool)
                .await?;
        let mut out: Vec<String> = Vec::new();
        for r in rows {
            let v: String = r.try_get(0)?;
            if !out.contains(&v) {
                out.push(v);
            }
        }
        Ok(out)
    }

    pub async fn insert_version(&self, s: &Staged, meta: &VersionMeta) -> Result<(), ControlError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO ledger_versions (version, bundle, digest, staged_ns) VALUES ($1, $2, $3, $4)",
        )
        .bind(&s.version)
        .bind(&meta.bundle)
        .bind(&meta.digest)
        .bind(meta.staged_ns)
        .execute(&mut *tx)
        .await?;
        for (name, hash) in &s.artifacts {
            sqlx::query("INSERT INTO ledger_artifacts (version, name, hash) VALUES ($1, $2, $3)")
                .bind(&s.version)
                .bind(name)
                .bind(hash)
                .execute(&mut *tx)
                .await?;
        }
        for (role, names) in &s.roles {
            for name in names {
                sqlx::query(
                    "INSERT INTO ledger_roles (version, role, artifact) VALUES ($1, $2, $3)",
                )
                .bind(&s.version)
                .bind(role)
                .bind(name)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Writes what one ledger step changed, in one transaction: new audit
    /// lines (from `first_seq`), the deploy record (its components only
    /// when `with_components`), and the active version.
    pub async fn persist_step(
        &self,
        first_seq: usize,
        events: &[Event],
        deploy: Option<&DeployRecord>,
        with_components: bool,
        active: Option<&str>,
    ) -> Result<(), ControlError> {
        let mut tx = self.pool.begin().await?;
        for (i, e) in events.iter().enumerate() {
            sqlx::query(
                "INSERT INTO ledger_history (seq, at_ns, version, what) VALUES ($1, $2, $3, $4)",
            )
            .bind((first_seq + i) as i64)
            .bind(e.at_ns)
            .bind(&e.version)
            .bind(&e.what)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(d) = deploy {
            sqlx::query(
                "INSERT INTO ledger_deploys (id, version, phase, reason, started_ns, ended_ns) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (id) DO UPDATE SET phase = excluded.phase, reason = excluded.reason, ended_ns = excluded.ended_ns",
            )
            .bind(d.id)
            .bind(&d.version)
            .bind(d.phase.as_str())
            .bind(&d.reason)
            .bind(d.started_ns)
            .bind(d.ended_ns)
            .execute(&mut *tx)
            .await?;
            if with_components {
                sqlx::query("DELETE FROM ledger_deploy_components WHERE deploy_id = $1")
                    .bind(d.id)
                    .execute(&mut *tx)
                    .await?;
                for c in &d.components {
                    sqlx::query(
                        "INSERT INTO ledger_deploy_components (deploy_id, component, role, state, reason) VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(d.id)
                    .bind(&c.id)
                    .bind(&c.role)
                    .bind(&c.state)
                    .bind(&c.reason)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        if let Some(v) = active {
            sqlx::query(
                "INSERT INTO ledger_state (name, value) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            )
            .bind("active")
            .bind(v)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ben_sql::statements;

    #[test]
    fn database_urls_choose_the_backend_or_are_refused() {
        let def = PathBuf::from("/data/ledger.db");
        let d = |u: Option<&str>| Database::from_url(u, def.clone());
        assert_eq!(d(None), Ok(Database::Sqlite(def.clone())));
        assert_eq!(d(Some(" ")), Ok(Database::Sqlite(def.clone())));
        assert_eq!(
            d(Some("sqlite:/x/l.db?mode=rwc")),
            Ok(Database::Sqlite("/x/l.db".into()))
        );
        let pg = d(Some("postgresql://ben:pw@db:5432/ben")).unwrap();
        assert!(pg.is_postgres());
        assert_eq!(pg.describe(), "postgresql://ben:***@db:5432/ben");
        assert_eq!(redact("postgres://ben@db/ben"), "postgres://ben@db/ben");
        let e = d(Some("mysql://ben:pw@db/ben")).unwrap_err();
        assert!(e.contains("unsupported scheme") && !e.contains("pw"), "{e}");
        assert!(d(Some("sqlite:")).is_err());
    }

    #[test]
    fn statements_split_and_drop_comments() {
        let s = statements(
            "-- a; comment\nCREATE TABLE a (x TEXT);\n\n-- b\nCREATE INDEX i ON a (x);\n",
        );
        assert_eq!(s, ["CREATE TABLE a (x TEXT)", "CREATE INDEX i ON a (x)"]);
        assert_eq!(statements(MIGRATIONS[0].2).len(), 8);
    }
}
