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
//!
//! **Browsers** log in with a one-time link instead (`ben up` prints one,
//! `benctl dashboard` asks for a new one with the token): `GET
//! /login?code=…` trades a code, usable once within [`LOGIN_CODE_TTL`],
//! for a session cookie (`HttpOnly`, `SameSite=Strict`, valid for
//! [`SESSION_TTL`]). A session may only **read** (GET and HEAD): every
//! change — staging, deploys, revocations — needs the token, so a page that
//! tricks a logged-in browser into sending a request changes nothing. The
//! dashboard's page and its script need no token: they hold no data.

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

/// Where a browser trades a one-time code for a session.
pub const LOGIN: &str = "/login";

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "ben_session";

/// How long a login code may be used (once).
pub const LOGIN_CODE_TTL: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// How long a browser session lasts.
pub const SESSION_TTL: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// Codes and sessions held at most (the oldest go first).
const MAX_HELD: usize = 1_000;

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

/// One-time login codes and browser sessions, held as BLAKE3 hashes with
/// when they expire (a monotonic clock: a shell, not a core).
#[derive(Default)]
pub struct Logins {
    held: std::sync::Mutex<LoginBook>,
}

#[derive(Default)]
struct LoginBook {
    codes: std::collections::HashMap<blake3::Hash, std::time::Instant>,
    sessions: std::collections::HashMap<blake3::Hash, std::time::Instant>,
}

fn prune(
    m: &mut std::collections::HashMap<blake3::Hash, std::time::Instant>,
    now: std::time::Instant,
) {
    m.retain(|_, until| *until > now);
    while m.len() >= MAX_HELD {
        let Some(oldest) = m.iter().min_by_key(|(_, u)| **u).map(|(k, _)| *k) else {
            break;
        };
        m.remove(&oldest);
    }
}

/// 32 random bytes as hex, from the operating system.
fn random_hex() -> Result<String, String> {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).map_err(|e| format!("no randomness for a login code: {e}"))?;
    Ok(hex::encode(b))
}

impl Logins {
    /// A new one-time code, usable once within [`LOGIN_CODE_TTL`].
    pub fn code(&self) -> Result<String, String> {
        let code = random_hex()?;
        let now = std::time::Instant::now();
        let mut b = self.held.lock().map_err(|_| "login book poisoned")?;
        prune(&mut b.codes, now);
        b.codes
            .insert(blake3::hash(code.as_bytes()), now + LOGIN_CODE_TTL);
        Ok(code)
    }

    /// Trades an unused, unexpired `code` for a session id; `None` for any
    /// other code (each is usable once).
    pub fn redeem(&self, code: &str) -> Option<String> {
        let now = std::time::Instant::now();
        let mut b = self.held.lock().ok()?;
        let until = b.codes.remove(&blake3::hash(code.as_bytes()))?;
        if until <= now {
            return None;
        }
        let session = random_hex().ok()?;
        prune(&mut b.sessions, now);
        b.sessions
            .insert(blake3::hash(session.as_bytes()), now + SESSION_TTL);
        Some(session)
    }

    /// Whether `session` is a live session.
    fn session(&self, session: &[u8]) -> bool {
        let now = std::time::Instant::now();
        self.held.lock().is_ok_and(|b| {
            b.sessions
                .get(&blake3::hash(session))
                .is_some_and(|until| *until > now)
        })
    }
}

/// What the API checks each request against: the token's BLAKE3 hash, or
/// nothing (no token configured: loopback only), and the browser sessions.
#[derive(Clone)]
pub(crate) struct Gate {
    token: Option<Arc<blake3::Hash>>,
    logins: Arc<Logins>,
}

impl Gate {
    pub(crate) fn new(token: Option<&ApiToken>, logins: Arc<Logins>) -> Gate {
        Gate {
            token: token.map(|t| Arc::new(blake3::hash(t.0.as_bytes()))),
            logins,
        }
    }
}

/// Paths anyone may fetch: the health check, the login, and the
/// dashboard's page and script (no data in them).
fn public(path: &str) -> bool {
    path == HEALTH || path == LOGIN || ben_dashboard_ui::file(path).is_some()
}

/// The value of the session cookie in a `Cookie` header, if any.
fn session_cookie(headers: &axum::http::HeaderMap) -> Option<&[u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let (name, value) = pair.split_at_checked(SESSION_COOKIE.len() + 1)?;
            (name.strip_suffix(b"=")? == SESSION_COOKIE.as_bytes()).then_some(value)
        })
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

/// Lets a request through with the right bearer token, a browser session
/// for reads, or to a public path; answers 401 otherwise.
pub(crate) async fn require_token(State(gate): State<Gate>, req: Request, next: Next) -> Response {
    let Some(expected) = gate.token.as_ref() else {
        return next.run(req).await;
    };
    if public(req.uri().path()) {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|h| bearer(h.as_bytes()));
    if given.is_none() {
        if let Some(s) = session_cookie(req.headers()) {
            let read = matches!(
                *req.method(),
                axum::http::Method::GET | axum::http::Method::HEAD
            );
            return match (gate.logins.session(s), read) {
                (true, true) => next.run(req).await,
                (true, false) => unauthorized(
                    "a browser session may only read; staging, deploys and revocations need the API token (benctl sends it)",
                ),
                (false, _) => unauthorized(
                    "this browser session has expired or is unknown to this Ben: open a new login link (`benctl dashboard` prints one)",
                ),
            };
        }
    }
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
    fn login_codes_are_used_once() {
        let l = Logins::default();
        let code = l.code().unwrap();
        assert_eq!(code.len(), 64);
        let s = l.redeem(&code).unwrap();
        assert!(l.session(s.as_bytes()));
        assert!(l.redeem(&code).is_none(), "a code works once");
        assert!(l.redeem("not-a-code").is_none());
        assert!(!l.session(b"not-a-session"));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(header::COOKIE, "a=1; ben_session=abc; b=2".parse().unwrap());
        assert_eq!(session_cookie(&h), Some(&b"abc"[..]));
        h.insert(header::COOKIE, "ben_sessionx=abc".parse().unwrap());
        assert_eq!(session_cookie(&h), None);
        h.insert(header::COOKIE, "ben_session=".parse().unwrap());
        assert_eq!(session_cookie(&h), Some(&b""[..]));
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
