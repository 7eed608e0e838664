//! The API token: who may call the HTTP API.
//!
//! Every endpoint but `GET /api/v1/health` needs `Authorization: Bearer
//! <token>`; a missing or wrong token gets 401 with what to do. The token
//! is [`TOKEN_FILE`] in the data dir, made by [`token_file`] on first start
//! (64 hex digits from the caller's randomness, mode 0600) and read by
//! `benctl` from there; an operator may give one instead
//! ([`crate::Config::api_token`]). Tokens are compared as BLAKE3 hashes,
//! whose equality is constant-time, so neither the token's bytes nor its
//! length leak through timing. An API without a token listens only on a
//! loopback address ([`crate::start`] refuses anything else).

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The token file's name in the data dir.
pub const TOKEN_FILE: &str = "api.token";

/// The endpoint that needs no token.
pub const HEALTH: &str = "/api/v1/health";

/// Shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// An API token. Its `Debug` does not show it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct ApiToken(String);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(***)")
    }
}

impl ApiToken {
    /// A token from text (surrounding whitespace removed): at least
    /// [`MIN_TOKEN_LEN`] visible ASCII characters, as a header carries them.
    pub fn new(text: &str) -> Result<ApiToken, String> {
        let t = text.trim();
        if t.len() < MIN_TOKEN_LEN || !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "an API token must be at least {MIN_TOKEN_LEN} visible ASCII characters (no spaces)"
            ));
        }
        Ok(ApiToken(t.to_string()))
    }

    /// The token, for a client to send.
    pub fn reveal(&self) -> &str {
        &self.0
    }
}

/// `DATA_DIR/api.token`.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_FILE)
}

/// The token in `DATA_DIR/api.token`; when there is none, a new one from
/// `random` (hex) is written there with mode 0600 first. An existing file
/// readable by others is narrowed to 0600.
pub fn token_file(data_dir: &Path, random: [u8; 32]) -> Result<ApiToken, String> {
    let path = token_path(data_dir);
    let hex = hex::encode(random);
    // Loses nothing if another process made it first: both read it below.
    crate::private::create_new(&path, hex.as_bytes())?;
    crate::private::narrow(&path, crate::private::FILE_MODE)?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("reading the API token {}: {e}", path.display()))?;
    ApiToken::new(&text).map_err(|e| {
        format!(
            "the API token in {}: {e}; delete the file to have a new one made",
            path.display()
        )
    })
}

/// What the API checks each request against: the token's BLAKE3 hash, or
/// nothing (no token configured: loopback only).
#[derive(Clone)]
pub(crate) struct Gate(Option<Arc<blake3::Hash>>);

impl Gate {
    pub(crate) fn new(token: Option<&ApiToken>) -> Gate {
        Gate(token.map(|t| Arc::new(blake3::hash(t.0.as_bytes()))))
    }
}

/// The token of an `Authorization: Bearer <token>` value (the scheme is
/// case-insensitive, RFC 9110); empty for any other scheme.
fn bearer(value: &[u8]) -> &[u8] {
    match value.split_at_checked(7) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => rest.trim_ascii(),
        _ => b"",
    }
}

fn unauthorized(message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

/// Lets a request through with the right bearer token (or to the health
/// endpoint); answers 401 otherwise.
pub(crate) async fn require_token(State(gate): State<Gate>, req: Request, next: Next) -> Response {
    let Some(expected) = gate.0.as_ref() else {
        return next.run(req).await;
    };
    if req.uri().path() == HEALTH {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|h| bearer(h.as_bytes()));
    match given {
        None => unauthorized(
            "this endpoint needs Ben's API token: send `Authorization: Bearer <token>`. The token is in api.token in Ben's data dir (benctl reads it from there, from --data-dir D or $BEN_DATA_DIR for `ben up --data-dir D`, or takes --token / $BEN_API_TOKEN)",
        ),
        // blake3::Hash compares in constant time.
        Some(t) if blake3::hash(t) == **expected => next.run(req).await,
        Some(_) => unauthorized(
            "the API token does not match this Ben's: use the one in api.token in the data dir this Ben runs with (`benctl --data-dir D`, $BEN_DATA_DIR, --token or $BEN_API_TOKEN)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn token_file_is_made_once_private_and_kept() {
        let d = std::env::temp_dir().join(format!("ben-token-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        crate::private::dir(&d).unwrap();
        let t = token_file(&d, [7; 32]).unwrap();
        assert_eq!(t.reveal(), "07".repeat(32));
        let p = token_path(&d);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        // A second start keeps it (other randomness is not used).
        assert_eq!(token_file(&d, [9; 32]).unwrap(), t);
        // Widened by hand: narrowed again.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        token_file(&d, [9; 32]).unwrap();
        assert_eq!(mode(&p), 0o600);
        std::fs::write(&p, "short").unwrap();
        assert!(token_file(&d, [9; 32])
            .unwrap_err()
            .contains("delete the file"));
        assert!(format!("{t:?}").contains("***") && !format!("{t:?}").contains("0707"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer(b"Bearer abc"), b"abc");
        assert_eq!(bearer(b"bearer  abc "), b"abc");
        assert_eq!(bearer(b"BEARER abc"), b"abc");
        assert_eq!(bearer(b"Basic abc"), b"");
        assert_eq!(bearer(b"Bear"), b"");
        assert_eq!(bearer(b""), b"");
    }

    #[test]
    fn tokens_are_checked() {
        assert!(ApiToken::new("short").is_err());
        assert!(ApiToken::new("has a space in it, long").is_err());
        assert_eq!(
            ApiToken::new("  abcdefghijklmnop\n").unwrap().reveal(),
            "abcdefghijklmnop"
        );
    }
}
