//! # SQL shared by the ledger (`ben-control`) and Lucius
//!
//! Both keep their state in SQLite (embedded mode) or PostgreSQL (cluster
//! mode) through sqlx's `Any` driver with one SQL text. What they share is
//! here: applying migrations kept in the repo (one table of applied ids
//! per store), telling a concurrent-DDL conflict from a real error, and
//! naming a database URL without its password. With the `test-support`
//! feature, [`testing`] has the PostgreSQL fixtures their tests share.

#[cfg(feature = "test-support")]
pub mod testing;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor, Row};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// A migration: id (applied in order), name, SQL text (`;`-separated
/// statements, `--` comment lines allowed).
pub type Migration = (i64, &'static str, &'static str);

/// Splits a migration into statements (`--` comment lines dropped).
pub fn statements(sql: &str) -> Vec<String> {
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

/// Another process did the same DDL at the same time: a unique-key clash
/// (23505), a duplicate table (42P07) or row type (42710: two `CREATE
/// TABLE IF NOT EXISTS` racing), or a serialization failure (40001).
pub fn is_conflict(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| matches!(c.as_ref(), "23505" | "40001" | "42P07" | "42710"))
}

/// `url` with the password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}://{user}:***{}", &url[..s], &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

/// Connect options for the SQLite file `path` (created with its directory
/// if missing). The path goes into a `sqlite://` URL, so what a URL path
/// cannot hold as is gets percent-encoded (sqlx decodes it).
pub fn sqlite_options(path: &Path) -> Result<AnyConnectOptions, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let abs =
        std::path::absolute(path).map_err(|e| format!("SQLite path {}: {e}", path.display()))?;
    AnyConnectOptions::from_str(&format!("sqlite://{}?mode=rwc", url_path(&abs)))
        .map_err(|e| format!("SQLite path {}: {e}", path.display()))
}

/// Percent-encodes what a URL path cannot hold as is.
fn url_path(p: &Path) -> String {
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

/// A pool on `opts` (drivers installed). Each SQLite connection gets WAL,
/// `synchronous = NORMAL` (a commit survives a process crash without an
/// fsync each) and a busy timeout, then `sqlite_pragmas`; SQLite-only,
/// so set here, not in the migrations. `acquire_timeout` bounds how long
/// an operation waits for a connection, so an unreachable server fails a
/// step instead of stalling it.
pub async fn pool(
    opts: AnyConnectOptions,
    max_connections: u32,
    acquire_timeout: Duration,
    sqlite_pragmas: &'static [&'static str],
) -> Result<AnyPool, sqlx::Error> {
    sqlx::any::install_default_drivers();
    AnyPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(acquire_timeout)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if conn.backend_name().eq_ignore_ascii_case("sqlite") {
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    conn.execute("PRAGMA busy_timeout = 5000").await?;
                    for p in sqlite_pragmas {
                        conn.execute(*p).await?;
                    }
                }
                Ok(())
            })
        })
        .connect_with(opts)
        .await
}

/// Applies the `migrations` not yet recorded in `table` (created if
/// missing), each in one transaction with its record.
pub async fn migrate(
    pool: &AnyPool,
    table: &str,
    migrations: &[Migration],
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (id BIGINT PRIMARY KEY, name TEXT NOT NULL)"
    ))
    .execute(pool)
    .await?;
    let applied: Vec<i64> = sqlx::query(&format!("SELECT id FROM {table}"))
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| r.try_get::<i64, _>(0))
        .collect::<Result<_, _>>()?;
    for (id, name, sql) in migrations {
        if applied.contains(id) {
            continue;
        }
        let mut tx = pool.begin().await?;
        for st in statements(sql) {
            sqlx::query(&st).execute(&mut *tx).await?;
        }
        sqlx::query(&format!("INSERT INTO {table} (id, name) VALUES ($1, $2)"))
            .bind(id)
            .bind(*name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

/// [`migrate`], retried a few times on a [conflict](is_conflict): several
/// processes opening one fresh server database race on the same DDL; the
/// loser re-reads what is applied and goes on.
pub async fn migrate_retrying(
    pool: &AnyPool,
    table: &str,
    migrations: &[Migration],
) -> Result<(), sqlx::Error> {
    let mut attempt = 0;
    loop {
        match migrate(pool, table, migrations).await {
            Err(e) if attempt < 5 && is_conflict(&e) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_and_drop_comments() {
        let s = statements(
            "-- a; comment\nCREATE TABLE a (x TEXT);\n\n-- b\nCREATE INDEX i ON a (x);\n",
        );
        assert_eq!(s, ["CREATE TABLE a (x TEXT)", "CREATE INDEX i ON a (x)"]);
    }

    #[test]
    fn sqlite_paths_are_encoded_into_the_url() {
        assert_eq!(url_path(Path::new("/a b/%?#")), "/a%20b/%25%3F%23");
        let dir = std::env::temp_dir().join(format!("ben sql {}", std::process::id()));
        let opts = sqlite_options(&dir.join("a#b.db")).unwrap();
        let url = format!("{opts:?}");
        assert!(
            url.contains("ben%20sql") && url.contains("a%23b.db"),
            "{url}"
        );
        assert!(dir.is_dir(), "the directory is created");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite:x.db"), "sqlite:x.db");
    }
}
