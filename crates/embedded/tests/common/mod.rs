//! Helpers the `ben up` tests share.

use ben_embedded::System;

/// A minimal HTTP/1.1 GET with the API token from the data dir (where
/// benctl reads it); returns the body.
pub async fn http_get(sys: &System, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let token = std::fs::read_to_string(sys.cfg.data_dir.join("api.token")).unwrap();
    let mut s = tokio::net::TcpStream::connect(sys.api_addr())
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}
