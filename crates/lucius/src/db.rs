//! Lucius's database: a SQLite file (embedded mode) or PostgreSQL (cluster
//! mode, SQL kept to what CockroachDB accepts), both through sqlx's `Any`
//! driver so one set of statements serves both (`$n` placeholders, BIGINT
//! and TEXT columns). The migrations in `migrations/` are the same text on
//! both backends.

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor, Row};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "0001_observations",
    include_str!("../migrations/0001_observations.sql"),
)];

/// `database_url` when given (`postgres://…`, `postgresql://…` or
/// `sqlite:PATH`), else the SQLite file `path`. Returns the connect
/// options, whether it is a server, and a description without password.
fn target(url: Option<&str>, path: &Path) -> Result<(AnyConnectOptions, bool, String), String> {
    let url = url.map(str::trim).filter(|u| !u.is_empty());
    let scheme = url
        .and_then(|u| u.split_once(':'))
        .map(|(s, _)| s.to_ascii_lowercase());
    let sqlite_path: PathBuf = match (url, scheme.as_deref()) {
        (None, _) => path.to_path_buf(),
        (Some(u), Some("postgres" | "postgresql")) => {
            let what = redact(u);
            let opts = AnyConnectOptions::from_str(u)
                .map_err(|e| format!("Lucius database URL {what} is not valid: {e}"))?;
            return Ok((opts, true, what));
        }
        (Some(u), Some("sqlite")) => {
            let p = u
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            PathBuf::from(p.split('?').next().unwrap_or_default())
        }
        (Some(u), _) => {
            return Err(format!(
            "Lucius database URL {} has an unsupported scheme; use postgres://user@host:port/db \
                 or leave it unset for SQLite under the data dir",
            redact(u)
        ))
        }
    };
    if sqlite_path.as_os_str().is_empty() {
        return Err("Lucius database: empty SQLite path".into());
    }
    if let Some(dir) = sqlite_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let what = sqlite_path.display().to_string();
    let abs = std::path::absolute(&sqlite_path).map_err(|e| format!("SQLite path {what}: {e}"))?;
    let opts = AnyConnectOptions::from_str(&format!("sqlite://{}?mode=rwc", encode_path(&abs)))
        .map_err(|e| format!("SQLite path {what}: {e}"))?;
    Ok((opts, false, what))
}

/// Opens the pool and applies the migrations; returns it with the
/// database's description (path, or URL without password) and whether it
/// is a server (PostgreSQL) rather than SQLite.
pub(crate) async fn open(
    url: Option<&str>,
    path: &Path,
    acquire_timeout: Duration,
) -> Result<(AnyPool, String, bool), String> {
    sqlx::any::install_default_drivers();
    let (opts, server, what) = target(url, path)?;
    let pool = AnyPoolOptions::new()
        // SQLite: a writer and a reader (WAL); a server: a few.
        .max_connections(if server { 4 } else { 2 })
        .acquire_timeout(acquire_timeout)
        .after_connect(|conn, _| {
            Box::pin(async move {
                if conn.backend_name().eq_ignore_ascii_case("sqlite") {
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    conn.execute("PRAGMA busy_timeout = 5000").await?;
                    // Checkpoint every ~40 MB of WAL instead of every 4 MB:
                    // the same pages are copied, with a tenth of the syncs
                    // (at 200k rows/s the default checkpointed 20 times a
                    // second).
                    conn.execute("PRAGMA wal_autocheckpoint = 10000").await?;
                }
                Ok(())
            })
        })
        .connect_with(opts)
        .await
        .map_err(|e| {
            format!("Lucius database {what}: {e} (is it reachable, and does the database exist?)")
        })?;
    migrate_retrying(&pool)
        .await
        .map_err(|e| format!("Lucius database {what}: applying migrations: {e}"))?;
    Ok((pool, what, server))
}

/// Lucius replicas opening a fresh server database at once race on the
/// same DDL: the loser sees a unique-key clash, "type … already exists" (42710: two
/// CREATE TABLE IF NOT EXISTS racing on the row type) or a serialization failure,
/// re-reads what is applied and goes on.
async fn migrate_retrying(pool: &AnyPool) -> Result<(), sqlx::Error> {
    let mut attempt = 0;
    loop {
        match migrate(pool).await {
            Err(e)
                if attempt < 3
                    && e.as_database_error()
                        .and_then(|d| d.code())
                        .is_some_and(|c| {
                            matches!(c.as_ref(), "23505" | "40001" | "42P07" | "42710")
                        }) =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            r => return r,
        }
    }
}

async fn migrate(pool: &AnyPool) -> Result<(), sqlx::Error> {
    pool.execute(
        "CREATE TABLE IF NOT EXISTS lucius_migrations (id BIGINT PRIMARY KEY, name TEXT NOT NULL)",
    )
    .await?;
    let applied: Vec<i64> = sqlx::query("SELECT id FROM lucius_migrations")
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| r.try_get::<i64, _>(0))
        .collect::<Result<_, _>>()?;
    for (id, name, sql) in MIGRATIONS {
        if applied.contains(id) {
            continue;
        }
        let mut tx = pool.begin().await?;
        for st in statements(sql) {
            sqlx::query(&st).execute(&mut *tx).await?;
        }
        sqlx::query("INSERT INTO lucius_migrations (id, name) VALUES ($1, $2)")
            .bind(id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

/// Splits a migration into statements (`--` comment lines dropped).
fn statements(sql: &str) -> Vec<String> {
    let text: String = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    text.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}://{user}:***{}", &url[..s], &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

/// Percent-encodes what a URL path cannot hold as is (sqlx decodes it).
fn encode_path(p: &Path) -> String {
    let mut out = String::new();
    for b in p.as_os_str().as_encoded_bytes() {
        match *b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => {
                out.push(*b as char)
            }
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_chosen_refused_and_redacted() {
        let p = std::env::temp_dir()
            .join("ben-lucius-url-test")
            .join("l.db");
        let p = p.as_path();
        let (_, server, what) = target(Some("postgres://u:pw@h:5/db"), p).unwrap();
        assert!(server);
        assert_eq!(what, "postgres://u:***@h:5/db");
        let (_, server, what) = target(None, p).unwrap();
        assert!(!server);
        assert_eq!(what, p.display().to_string());
        let (_, server, _) = target(Some("  "), p).unwrap();
        assert!(!server);
        let e = target(Some("mysql://u:pw@h/db"), p).unwrap_err();
        assert!(e.contains("unsupported scheme") && !e.contains("pw"), "{e}");
        assert_eq!(statements(MIGRATIONS[0].2).len(), 2);
        assert_eq!(encode_path(Path::new("/a b/%?#")), "/a%20b/%25%3F%23");
    }
}
