//! A Kafka-protocol broker of a test's own: tansu 0.6.0 (`scripts/test`
//! installs it once, with its SQLite storage engine, and says where in
//! `BEN_TANSU`), on a free loopback port, killed and restarted at will.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where `scripts/test` caches the broker when `BEN_TANSU` is unset.
pub fn default_bin() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/ben/tansu-0.6.0-libsql/bin/tansu")
}

/// The broker binary; a missing one fails the test with what to do.
pub fn bin() -> PathBuf {
    let p = std::env::var_os("BEN_TANSU")
        .map(PathBuf::from)
        .unwrap_or_else(default_bin);
    assert!(
        p.exists(),
        "no Kafka-protocol broker at {}: run scripts/test (it installs tansu 0.6.0 there once), or set BEN_TANSU",
        p.display()
    );
    p
}

/// One broker process; killed when dropped.
pub struct Broker {
    bin: PathBuf,
    port: u16,
    storage: String,
    log: PathBuf,
    /// A durable broker's directory, removed with it.
    dir: Option<PathBuf>,
    child: Mutex<Option<Child>>,
}

impl Broker {
    /// A broker keeping its data in memory (gone when it is killed).
    pub fn in_memory() -> Broker {
        Broker::start("memory://tansu/")
    }

    /// A broker keeping its data in a SQLite file of its own: what it
    /// stored outlives a kill.
    pub fn durable() -> Broker {
        let dir = std::env::temp_dir().join(format!(
            "ben-tansu-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).expect("the broker's directory");
        // tansu reads a sqlite:// path as relative to its working
        // directory: it runs in its own.
        let b = Broker::new("sqlite://tansu.db", Some(dir));
        b.restart();
        b
    }

    /// Starts a broker keeping its data in `storage` (`memory://tansu/`,
    /// `sqlite://FILE`) and waits until it listens.
    pub fn start(storage: &str) -> Broker {
        let b = Broker::new(storage, None);
        b.restart();
        b
    }

    fn new(storage: &str, dir: Option<PathBuf>) -> Broker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let log = std::env::temp_dir().join(format!("ben-tansu-{}-{port}.log", std::process::id()));
        Broker {
            bin: bin(),
            port,
            storage: storage.to_string(),
            log,
            dir,
            child: Mutex::new(None),
        }
    }

    /// `127.0.0.1:<port>`, for `bootstrap.servers`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What the broker wrote so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, and waits for it to be gone.
    pub fn kill(&self) {
        let mut c = self.child.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut ch) = c.take() {
            let _ = ch.kill();
            let _ = ch.wait();
        }
    }

    /// Starts it (again) on the same port and storage; waits until it
    /// accepts connections.
    pub fn restart(&self) {
        self.kill();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the broker's log file");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let mut cmd = Command::new(&self.bin);
        if let Some(d) = &self.dir {
            cmd.current_dir(d);
        }
        let child = cmd
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", &self.storage])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display()));
        *self.child.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the broker does not listen on {}: {}",
                self.addr(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
