//! What the `ben` binary's test files share.

/// An HTTP/1.1 response read whole (`Connection: close`): its status
/// (0 when there is none) and its body.
pub fn response(out: &str) -> (u16, String) {
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}
