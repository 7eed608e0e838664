//! The dashboard in headless Chromium against a real `ben up --demo`: log
//! in with the printed link, see the overview update live, follow the
//! blocked attacker from anomaly to ack, watch a deploy finalize component
//! by component (crates/dashboard-ui/web/test/browser.mjs does the
//! browsing and saves the screenshots).
//!
//! Needs Node.js, the app's npm packages and Debian's Chromium, which
//! `scripts/test` installs, then runs this with `--ignored`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn http(addr: &str, token: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    common::response(&out)
}

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboard-ui/web")
}

#[test]
#[ignore = "a browser test: scripts/test installs Chromium and the app's npm packages, then runs it with --ignored"]
fn the_dashboard_in_a_browser() {
    let web = web_dir();
    assert!(
        web.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed in {}: run `npm ci` there (scripts/test does)",
        web.display()
    );
    let dir = std::env::temp_dir().join(format!("ben-dashboard-browser-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut up = Command::new(env!("CARGO_BIN_EXE_ben"))
        .args([
            "up",
            "--demo",
            "--duration",
            "150",
            "--api",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&dir)
        .env("BEN_BLOT_KEY", "dashboard-browser-key-0123456789")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = up.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            let _ = tx.send(line);
        }
        all
    });
    // Wait for the link, the demo's deploy and the security path's ack.
    let mut login = None;
    let (mut deployed, mut acked) = (false, false);
    let start = Instant::now();
    while login.is_none() || !deployed || !acked {
        let left = Duration::from_secs(90).saturating_sub(start.elapsed());
        let Ok(line) = rx.recv_timeout(left) else {
            let _ = up.kill();
            panic!(
                "ben up did not get ready in 90 s (link {login:?}, deployed {deployed}, acked {acked}):\n{}",
                reader.join().unwrap_or_default()
            );
        };
        if let Some(l) = line.strip_prefix("ben up: dashboard ") {
            login = l.split_whitespace().next().map(str::to_string);
        }
        deployed |= line.contains("every component acked it");
        acked |= line.contains("enforcer-1 applied it");
    }
    let login = login.unwrap();
    let addr = login
        .strip_prefix("http://")
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_string();
    let token = std::fs::read_to_string(dir.join("api.token")).unwrap();
    let token = token.trim();

    // Stage the active bundle again as a new version; the browser deploys it.
    let (code, active) = http(&addr, token, "GET", "/api/v1/active", "");
    assert_eq!(code, 200, "{active}");
    let active: serde_json::Value = serde_json::from_str(&active).unwrap();
    let version = "browser-2";
    let stage = serde_json::json!({
        "version": version,
        "bundle": active["bundle"],
        "digest": active["digest"],
        "artifacts": active["artifacts"],
    });
    let (code, body) = http(&addr, token, "POST", "/api/v1/versions", &stage.to_string());
    assert!(
        code == 201 || code == 200,
        "staging {version}: {code} {body}"
    );
    let shots = std::env::var("BEN_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| web.join("screenshots"));
    let out = Command::new("node")
        .arg("test/browser.mjs")
        .current_dir(&web)
        .env("BEN_LOGIN", &login)
        .env("BEN_BASE", format!("http://{addr}"))
        .env("BEN_TOKEN", token)
        .env("BEN_VERSION", version)
        .env("BEN_SCREENSHOTS", &shots)
        .output()
        .expect("running node (scripts/test installs Node.js' packages; is node on PATH?)");
    let _ = up.kill();
    let _ = up.wait();
    let ben_out = reader.join().unwrap_or_default();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}\n--- ben up:\n{ben_out}"
    );
    println!("{stdout}");
    for shot in ["overview.png", "security-path.png", "deploy.png"] {
        let len = std::fs::metadata(shots.join(shot))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(
            len > 10_000,
            "screenshot {shot} missing or empty ({len} bytes)"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
