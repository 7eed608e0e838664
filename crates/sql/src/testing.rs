//! PostgreSQL for tests, never mocked (feature `test-support`; a
//! dev-dependency of the crates whose tests need it):
//!
//! * [`TestDb`]: a database of its own (`ben_test_<pid>_<nanos>_<n>`) on the
//!   machine's shared server at 127.0.0.1:5432 ([`SHARED`]: trust auth, user
//!   `postgres`), created through the `test` database and dropped when the
//!   value is dropped (also on a panic);
//! * [`PrivatePg`]: a PostgreSQL server of the test's own (initdb + pg_ctl
//!   in a temp dir, a free port; as `postgres` via `runuser` when run as
//!   root), which a test may stop and start. The shared server is never
//!   stopped.
//!
//! ```no_run
//! # async fn t() {
//! let db = ben_sql::testing::TestDb::create().await;
//! // … open the store under test on `db.url` …
//! drop(db); // DROP DATABASE … WITH (FORCE)
//! # }
//! ```
//!
//! These are test fixtures: what they cannot set up is a panic that says
//! what is missing.

use sqlx::{Connection, Executor, PgConnection};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The machine's shared PostgreSQL server (without a database name).
pub const SHARED: &str = "postgres://postgres@127.0.0.1:5432";

/// A name no other test (in this or another process) uses:
/// `ben_test_<pid>_<nanos>_<n>`.
pub fn unique_name() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "ben_test_{}_{}_{}",
        std::process::id(),
        ben_time::now_ns(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Runs `sql` on the shared server's `test` database.
pub async fn admin(sql: &str) -> Result<(), String> {
    admin_at(&format!("{SHARED}/test"), sql).await
}

/// Runs `sql` on the database at `url`.
pub async fn admin_at(url: &str, sql: &str) -> Result<(), String> {
    let mut c = PgConnection::connect(url).await.map_err(|e| {
        format!(
            "PostgreSQL at {url} is required for this test and is not reachable: {e}. \
             Start it (scripts/test does) and run again."
        )
    })?;
    c.execute(sql).await.map_err(|e| format!("{sql}: {e}"))?;
    let _ = c.close().await;
    Ok(())
}

/// [`admin`] from a thread and runtime of its own, so it can run where no
/// await can (`Drop`, possibly inside a test's runtime).
fn admin_blocking(sql: String) -> Result<(), String> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(admin(&sql))
    })
    .join()
    .map_err(|_| "admin thread panicked".to_string())?
}

/// A fresh database on the shared server, dropped with the value.
pub struct TestDb {
    pub name: String,
    /// `postgres://postgres@127.0.0.1:5432/<name>`
    pub url: String,
}

impl TestDb {
    /// Creates the database; panics, naming the server, when it cannot.
    pub async fn create() -> TestDb {
        let name = unique_name();
        if let Err(e) = admin(&format!("CREATE DATABASE {name}")).await {
            panic!("{e}");
        }
        TestDb {
            url: format!("{SHARED}/{name}"),
            name,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = admin_blocking(sql) {
            eprintln!("warning: could not drop test database {}: {e}", self.name);
        }
    }
}

/// Where the PostgreSQL server binaries are.
fn pg_bin(name: &str) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found
        .pop()
        .or_else(|| Some(Path::new("/usr/local/bin").join(name)).filter(|p| p.exists()))
        .unwrap_or_else(|| {
            panic!("no PostgreSQL `{name}` in /usr/lib/postgresql/*/bin or /usr/local/bin")
        })
}

/// The test runs as root (`id -u` says 0).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// initdb refuses to run as root: then the server runs as `postgres`.
fn as_server_user(bin: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

fn run(mut c: Command, what: &str) {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A PostgreSQL server of the test's own (stopped and its directory
/// removed when dropped).
pub struct PrivatePg {
    pub dir: PathBuf,
    pub port: u16,
}

impl PrivatePg {
    /// initdb + start on a free port; trust auth on 127.0.0.1.
    pub fn start() -> PrivatePg {
        let dir = std::env::temp_dir().join(unique_name());
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.arg("postgres:postgres").arg(&dir);
                    c
                },
                "chown of the private PostgreSQL dir",
            );
        }
        let mut c = as_server_user(&pg_bin("initdb"));
        c.arg("-D")
            .arg(dir.join("data"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync"]);
        run(c, "initdb");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free port for a private PostgreSQL: {e}"));
        let pg = PrivatePg { dir, port };
        pg.resume();
        pg
    }

    /// The server's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn resume(&self) {
        let mut c = as_server_user(&pg_bin("pg_ctl"));
        c.arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                self.port,
                self.dir.display()
            ))
            .args(["-w", "-t", "30", "start"]);
        run(c, "pg_ctl start");
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "private PostgreSQL did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (fast shutdown: connections are cut).
    pub fn stop(&self) {
        let mut c = as_server_user(&pg_bin("pg_ctl"));
        c.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w", "-t", "30", "stop"]);
        run(c, "pg_ctl stop");
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let mut c = as_server_user(&pg_bin("pg_ctl"));
        c.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"]);
        let _ = c.output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
