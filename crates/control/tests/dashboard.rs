//! The dashboard's API through real HTTP on a real control plane: who may
//! read it (token, one-time login link, read-only session), its caches
//! (hit, miss, expiry, one loader under 100 concurrent requests), and its
//! live stream.

mod common;

use ben_bus::Bus;
use ben_control::{Config, SystemClock};
use common::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 exchange: status, the head's lines, the body.
async fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_ascii_lowercase(), body.to_string())
}

const BEARER: &str = "Bearer test-token-0123456789abcdef";

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::trim))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_token_or_a_login_session_reads_the_dashboard() {
    let env = Env::new("dash-auth", Arc::new(SystemClock));
    let h = env.start(env.config()).await;
    let addr = h.api_addr();
    for path in [
        "/api/dashboard/overview",
        "/api/dashboard/series",
        "/api/dashboard/anomalies",
        "/api/dashboard/anomalies/a1",
        "/api/dashboard/blocks",
        "/api/dashboard/enforcement",
        "/api/dashboard/intent",
        "/api/dashboard/search?limit=1",
        "/api/dashboard/stream",
    ] {
        let (code, _, body) = raw(addr, "GET", path, &[]).await;
        assert_eq!(code, 401, "GET {path} without a token: {body}");
        let (code, _, _) = raw(addr, "GET", path, &[("Cookie", "ben_session=forged")]).await;
        assert_eq!(code, 401, "GET {path} with a made-up session");
    }
    // The page and its script are public, and hold no data.
    let (code, head, page) = raw(addr, "GET", "/", &[]).await;
    assert_eq!(code, 200);
    assert!(header(&head, "content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(page.contains("/assets/app.js"), "{page}");
    let (code, _, _) = raw(addr, "GET", "/assets/app.js", &[]).await;
    assert_eq!(code, 200);

    // A login link: only with the token.
    let (code, _, _) = raw(addr, "POST", "/api/v1/login-link", &[]).await;
    assert_eq!(code, 401);
    let (code, _, body) = raw(
        addr,
        "POST",
        "/api/v1/login-link",
        &[("Authorization", BEARER)],
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let link: serde_json::Value = serde_json::from_str(&body).unwrap();
    let url = link["url"].as_str().unwrap();
    let path = &url[url.find("/login").unwrap()..];
    // The one ben up prints works the same way.
    let printed = h.login_link().unwrap();
    assert!(
        printed.starts_with(&format!("http://{addr}/login?code=")),
        "{printed}"
    );

    let (code, head, _) = raw(addr, "GET", path, &[]).await;
    assert_eq!(code, 303, "{head}");
    assert_eq!(header(&head, "location"), Some("/"));
    let cookie = header(&head, "set-cookie").unwrap().to_string();
    assert!(
        cookie.contains("httponly") && cookie.contains("samesite=strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    // Used once only; a wrong code is refused too.
    let (code, _, body) = raw(addr, "GET", path, &[]).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("benctl dashboard"), "{body}");
    let (code, _, _) = raw(addr, "GET", "/login?code=00", &[]).await;
    assert_eq!(code, 401);

    // The session reads…
    let (code, _, body) = raw(
        addr,
        "GET",
        "/api/dashboard/overview",
        &[("Cookie", &session)],
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let o: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        o["records"]["total"].is_u64() && o["chain"]["height"].is_u64(),
        "{o}"
    );
    let (code, _, _) = raw(addr, "GET", "/api/v1/status", &[("Cookie", &session)]).await;
    assert_eq!(code, 200);
    // …and changes nothing: a deploy, a rollback, a revocation, an upload
    // or a new login link need the token.
    for (method, path) in [
        ("POST", "/api/v1/deploy"),
        ("POST", "/api/v1/rollback"),
        ("POST", "/api/v1/bees/revoke"),
        ("POST", "/api/v1/login-link"),
        ("PUT", "/api/v1/artifacts/00"),
    ] {
        let (code, _, body) = raw(addr, method, path, &[("Cookie", &session)]).await;
        assert_eq!(code, 401, "{method} {path} with a session: {body}");
        assert!(body.contains("may only read"), "{body}");
    }
    h.shutdown().await;
}

/// A Lucius on the bus that counts the queries it answers, slowly.
async fn slow_lucius(bus: Arc<dyn Bus>, delay: Duration) -> Arc<AtomicUsize> {
    let n = Arc::new(AtomicUsize::new(0));
    let mut sub = bus.subscribe("ben.lucius.query", None).await.unwrap();
    let count = n.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let k = count.fetch_add(1, Ordering::SeqCst) + 1;
            let bus = bus.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let answer = serde_json::json!({ "records": [], "count": 0, "answer": k });
                let _ = bus.reply(&m, answer.to_string().into_bytes()).await;
            });
        }
    });
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_answers_are_cached_with_one_loader() {
    let env = Env::new("dash-cache", Arc::new(SystemClock));
    let mut cfg: Config = env.config();
    cfg.dashboard.live_ttl_ms = 300;
    // The sampler loads the overview once at start, then not for a minute.
    cfg.dashboard.sample_ms = 60_000;
    let h = env.start(cfg).await;
    let addr = h.api_addr();
    let lucius = slow_lucius(env.bus.clone(), Duration::from_millis(300)).await;
    let auth = [("Authorization", BEARER)];

    // Miss, then hit: Lucius is asked once.
    let (code, head, first) = raw(addr, "GET", "/api/dashboard/search?limit=1", &auth).await;
    assert_eq!(code, 200, "{first}");
    assert_eq!(header(&head, "x-ben-cache"), Some("miss"));
    let (code, head, second) = raw(addr, "GET", "/api/dashboard/search?limit=1", &auth).await;
    assert_eq!(code, 200);
    assert_eq!(header(&head, "x-ben-cache"), Some("hit"));
    assert_eq!(first, second);
    assert_eq!(lucius.load(Ordering::SeqCst), 1);
    // Another query is another key.
    let (_, head, _) = raw(addr, "GET", "/api/dashboard/search?limit=1&flag=x", &auth).await;
    assert_eq!(header(&head, "x-ben-cache"), Some("miss"));
    assert_eq!(lucius.load(Ordering::SeqCst), 2);

    // 100 requests at once for a key nobody asked yet: one loader runs,
    // all 100 get its answer.
    let asks: Vec<_> = (0..100)
        .map(|_| {
            tokio::spawn(async move {
                raw(
                    addr,
                    "GET",
                    "/api/dashboard/search?limit=7",
                    &[("Authorization", BEARER)],
                )
                .await
            })
        })
        .collect();
    let mut misses = 0;
    let mut bodies = std::collections::BTreeSet::new();
    for a in asks {
        let (code, head, body) = a.await.unwrap();
        assert_eq!(code, 200, "{body}");
        misses += usize::from(header(&head, "x-ben-cache") == Some("miss"));
        bodies.insert(body);
    }
    assert_eq!(
        lucius.load(Ordering::SeqCst),
        3,
        "one query reached Lucius for 100 requests"
    );
    assert_eq!(misses, 1, "one request loaded, 99 waited for it");
    assert_eq!(bodies.len(), 1, "{bodies:?}");

    // Live answers expire after their time to live.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let (_, head, _) = raw(addr, "GET", "/api/dashboard/overview", &auth).await;
    assert_eq!(header(&head, "x-ben-cache"), Some("miss"));
    let (_, head, _) = raw(addr, "GET", "/api/dashboard/overview", &auth).await;
    assert_eq!(header(&head, "x-ben-cache"), Some("hit"));
    tokio::time::sleep(Duration::from_millis(450)).await;
    let (_, head, _) = raw(addr, "GET", "/api/dashboard/overview", &auth).await;
    assert_eq!(header(&head, "x-ben-cache"), Some("miss"));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_not_cached_and_say_why() {
    let env = Env::new("dash-errors", Arc::new(SystemClock));
    let h = env.start(env.config()).await;
    let addr = h.api_addr();
    let auth = [("Authorization", BEARER)];
    // No Lucius on the bus: 503 with the reason, twice (not kept).
    for _ in 0..2 {
        let (code, head, body) = raw(addr, "GET", "/api/dashboard/search?limit=1", &auth).await;
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("Lucius did not answer"), "{body}");
        assert!(header(&head, "x-ben-cache").is_none());
    }
    let (code, _, body) = raw(addr, "GET", "/api/dashboard/search?nope=1", &auth).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("unknown query parameter"), "{body}");
    let (code, _, body) = raw(addr, "GET", "/api/dashboard/anomalies?limit=x", &auth).await;
    assert_eq!(code, 400, "{body}");
    let (code, _, body) = raw(addr, "GET", "/api/dashboard/anomalies/not-there", &auth).await;
    assert_eq!(code, 404, "{body}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_sends_the_overview_and_deploys_live() {
    let env = Env::new("dash-stream", Arc::new(SystemClock));
    let h = env.start(env.config()).await;
    let addr = h.api_addr();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!(
            "GET /api/dashboard/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {BEARER}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(seen.contains("event: overview") && seen.contains("event: deploy")) {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no overview and deploy events in 10 s:\n{seen}"))
            .unwrap();
        assert!(n > 0, "the stream ended:\n{seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        seen.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{seen}"
    );
    h.shutdown().await;
}

/// Over real HTTP: a reader that stops reading falls behind the stream's
/// buffer; when it reads again it gets `event: resync` (how many it
/// missed) and the stream goes on, instead of ending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_a_resync_over_http() {
    let env = Env::new("dash-slow", Arc::new(SystemClock));
    let mut cfg: Config = env.config();
    cfg.dashboard.stream_buffer = 8;
    cfg.dashboard.sample_ms = 60_000;
    let h = env.start(cfg).await;
    let addr = h.api_addr();
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(64 * 1024).unwrap();
    let mut s = sock.connect(addr).await.unwrap();
    s.write_all(
        format!(
            "GET /api/dashboard/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {BEARER}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // The reader reads nothing while 200 events of 64 KiB go out: the
    // socket's buffers fill, the server stops taking events for it, and it
    // falls more than 8 behind.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pad = "x".repeat(64 * 1024);
    let d = h.dashboard();
    for i in 0..200 {
        d.send("overview", &serde_json::json!({ "i": i, "pad": pad }));
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // Now it reads: somewhere in what comes, a resync, then newer events.
    let mut seen: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let resync_at = loop {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .expect("no resync within 20 s")
            .unwrap();
        assert!(n > 0, "the stream ended instead of resyncing");
        // Only the new bytes (and a needle's length before them) are
        // searched.
        let from = seen.len().saturating_sub(16);
        seen.extend_from_slice(&buf[..n]);
        if let Some(at) = find(&seen[from..], b"event: resync") {
            break from + at;
        }
    };
    let after = String::from_utf8_lossy(&seen[resync_at..]).to_string();
    assert!(
        after.contains("missed"),
        "{}",
        &after[..after.len().min(200)]
    );
    // The stream goes on: the next event after the resync arrives.
    d.send("deploy", &serde_json::json!({ "after": "resync" }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while find(&seen[resync_at..], b"\"after\":\"resync\"").is_none() {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .expect("nothing after the resync")
            .unwrap();
        assert!(n > 0, "the stream ended after the resync");
        seen.extend_from_slice(&buf[..n]);
    }
    drop(s);
    h.shutdown().await;
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
