//! What `ben up` leaves on disk is private, and its API needs the token:
//! the data dir 0700 (narrowed when it existed wider), every file in it
//! 0600 — the ledger's and Lucius's databases with their `-wal`/`-shm`
//! files, the Blot key, the files store, `api.token` — after a deploy and
//! records written, whatever the umask; every endpoint but the health
//! check answers 401 without the token.

use ben_embedded::{Config, System};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every directory and file under `dir` (sockets left out: apps connect to
/// them), with its mode.
fn walk(dir: &Path, out: &mut Vec<(PathBuf, bool, u32)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        let p = e.path();
        if t.is_socket() {
            continue;
        }
        out.push((p.clone(), t.is_dir(), mode(&p)));
        if t.is_dir() {
            walk(&p, out);
        }
    }
}

/// Status and body of a request with `token` (or none).
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (code, body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_is_private_and_the_api_needs_the_token() {
    let dir = std::env::temp_dir().join(format!("ben-private-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // As an older Ben left it: world-readable.
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The blot key from the data dir (made on first use), not the env.
    std::env::remove_var("BEN_BLOT_KEY");
    let sys = System::start(Config {
        data_dir: dir.clone(),
        api_addr: "127.0.0.1:0".parse().unwrap(),
        mesh_every: Duration::from_millis(300),
        ..Config::default()
    })
    .await
    .expect("ben up starts");
    let shop = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop");
    sys.deploy_dir(&shop).await.expect("deploy");

    // The API: 401 without the token or with a wrong one, 200 with it.
    let token = std::fs::read_to_string(dir.join("api.token")).unwrap();
    let api = sys.api_addr();
    let (code, body) = http(api, "POST", "/api/v1/deploy", None).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("api.token"), "{body}");
    let (code, _) = http(api, "GET", "/api/v1/lucius", Some("wrong-token-0123456789")).await;
    assert_eq!(code, 401);
    let (code, body) = http(api, "GET", "/api/v1/status", Some(&token)).await;
    assert_eq!(code, 200, "{body}");
    let (code, _) = http(api, "GET", "/api/v1/health", None).await;
    assert_eq!(code, 200);
    // Lucius has written (its table exists, WAL files with it).
    let (code, body) = http(api, "GET", "/api/v1/lucius?limit=1", Some(&token)).await;
    assert_eq!(code, 200, "{body}");

    assert_eq!(mode(&dir), 0o700, "the data dir");
    let mut seen = Vec::new();
    walk(&dir, &mut seen);
    let names: Vec<String> = seen
        .iter()
        .map(|(p, _, _)| p.strip_prefix(&dir).unwrap().display().to_string())
        .collect();
    for must in [
        "api.token",
        "ledger.db",
        "ledger.db-wal",
        "ledger.db-shm",
        "lucius.db",
        "lucius.db-wal",
        "lucius.db-shm",
        "blot.key",
        "store",
    ] {
        assert!(names.iter().any(|n| n == must), "no {must} in {names:?}");
    }
    assert!(
        seen.iter().filter(|(_, d, _)| !d).count() > 10,
        "store blobs are there too: {names:?}"
    );
    for (p, is_dir, m) in &seen {
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*m, want, "{} is {m:o}, not {want:o}", p.display());
    }
    // The sidecar's socket is open to any process that reaches it
    // (attestation decides); reaching it is the directory's business.
    assert_eq!(mode(&sys.cfg.socket_path()), 0o666, "the sidecar socket");
    sys.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
