//! `ben up` through the real binary: while it runs, the API refuses a
//! request without the token (401) and takes one with the token from the
//! data dir (or from `BEN_API_TOKEN`); the data dir and the token file are
//! private.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

/// One HTTP/1.1 request; the status code.
fn status(addr: &str, method: &str, path: &str, token: Option<&str>) -> u16 {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Starts `ben up` on an ephemeral port; returns the child and the API's
/// address from its first line.
fn ben_up(dir: &std::path::Path, token: Option<&str>) -> (std::process::Child, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ben"));
    c.args([
        "up",
        "--duration",
        "20",
        "--api",
        "127.0.0.1:0",
        "--data-dir",
    ])
    .arg(dir)
    .env("BEN_BLOT_KEY", "api-token-cli-test-key-0123456789")
    .env_remove("BEN_API_TOKEN")
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if let Some(t) = token {
        c.env("BEN_API_TOKEN", t);
    }
    let mut child = c.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("ben up printed its API").unwrap();
        if let Some(rest) = line.strip_prefix("ben up: API http://") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep reading so ben up never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

#[test]
fn ben_up_refuses_the_api_without_its_token() {
    let dir = std::env::temp_dir().join(format!("ben-api-token-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut child, addr) = ben_up(&dir, None);
    let token = std::fs::read_to_string(dir.join("api.token")).unwrap();
    assert_eq!(status(&addr, "POST", "/api/v1/deploy", None), 401);
    assert_eq!(
        status(
            &addr,
            "GET",
            "/api/v1/status",
            Some("wrong-token-0123456789")
        ),
        401
    );
    assert_eq!(
        status(&addr, "GET", "/api/v1/status", Some(token.trim())),
        200
    );
    assert_eq!(status(&addr, "GET", "/api/v1/health", None), 200);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("api.token")), 0o600);
    let _ = child.kill();
    let _ = child.wait();

    // The operator's own token instead.
    let own = "operator-chosen-token-0123456789";
    let (mut child, addr) = ben_up(&dir, Some(own));
    assert_eq!(
        status(&addr, "GET", "/api/v1/status", Some(token.trim())),
        401
    );
    assert_eq!(status(&addr, "GET", "/api/v1/status", Some(own)), 200);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
