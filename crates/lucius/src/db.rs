//! Lucius's database: a SQLite file (embedded mode) or PostgreSQL (cluster
//! mode, SQL kept to what CockroachDB accepts), both through sqlx's `Any`
//! driver so one set of statements serves both (`$n` placeholders, BIGINT
//! and TEXT columns). The migrations in `migrations/` are the same text on
//! both backends.

use sqlx::any::AnyConnectOptions;
use sqlx::AnyPool;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

const MIGRATIONS: &[ben_sql::Migration] = &[(
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
            let what = ben_sql::redact(u);
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
            ben_sql::redact(u)
        ))
        }
    };
    if sqlite_path.as_os_str().is_empty() {
        return Err("Lucius database: empty SQLite path".into());
    }
    let what = sqlite_path.display().to_string();
    let opts = ben_sql::sqlite_options(&sqlite_path)?;
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
    let (opts, server, what) = target(url, path)?;
    // SQLite: a writer and a reader (WAL); a server: a few. Checkpoint
    // every ~40 MB of WAL instead of every 4 MB: the same pages are
    // copied, with a tenth of the syncs (at 200k rows/s the default
    // checkpointed 20 times a second).
    let pool = ben_sql::pool(
        opts,
        if server { 4 } else { 2 },
        acquire_timeout,
        &["PRAGMA wal_autocheckpoint = 10000"],
    )
    .await
    .map_err(|e| {
        format!("Lucius database {what}: {e} (is it reachable, and does the database exist?)")
    })?;
    ben_sql::migrate_retrying(&pool, "lucius_migrations", MIGRATIONS)
        .await
        .map_err(|e| format!("Lucius database {what}: applying migrations: {e}"))?;
    Ok((pool, what, server))
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
        assert_eq!(ben_sql::statements(MIGRATIONS[0].2).len(), 2);
    }
}
