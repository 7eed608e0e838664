//! Credentials: JWTs, bearer/basic credentials, vendor API tokens, AWS keys,
//! `key = value` secrets and PEM private-key blocks.

use super::{at, is_word, span};
use crate::scan::{Kind, Span};

fn b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// RFC 7235 token68 plus `=` padding.
fn token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
}

fn run(text: &[u8], mut j: usize, f: impl Fn(u8) -> bool) -> usize {
    while f(at(text, j)) {
        j += 1;
    }
    j
}

/// Like [`run`] but stops after `max` bytes.
fn run_max(text: &[u8], s: usize, max: usize, f: impl Fn(u8) -> bool) -> usize {
    let mut j = s;
    while j - s < max && f(at(text, j)) {
        j += 1;
    }
    j
}

fn starts_with_ci(text: &[u8], i: usize, lit: &[u8]) -> bool {
    text.get(i..i + lit.len())
        .is_some_and(|w| w.eq_ignore_ascii_case(lit))
}

/// Credential-looking: a digit, or upper and lower case with an upper past
/// the first byte. English words (`instrument`, `Understanding`) are not.
fn looks_secret(v: &[u8]) -> bool {
    let digit = v.iter().any(u8::is_ascii_digit);
    let lower = v.iter().any(u8::is_ascii_lowercase);
    let inner_upper = v.iter().skip(1).any(u8::is_ascii_uppercase);
    digit || (lower && inner_upper)
}

/// JWS compact form: `eyJ…` header (base64url of `{"`), `.`, `eyJ…` claims,
/// `.`, optional signature. Header ≥ 12 and claims ≥ 8 bytes. More
/// base64url segments after the signature (JWE's five parts, a token
/// glued to another) belong to the span: stopping before them would leave
/// a tail that the next pass, seeing a placeholder where segments were,
/// reads differently, one more token each pass (a fuzz input chained
/// sixteen and never settled).
pub(super) fn jwt(text: &[u8], i: usize) -> Option<usize> {
    if text.get(i..i + 3) != Some(b"eyJ") {
        return None;
    }
    let h = run(text, i, b64url);
    if h - i < 12 || at(text, h) != b'.' || text.get(h + 1..h + 4) != Some(b"eyJ") {
        return None;
    }
    let p = run(text, h + 1, b64url);
    if p - (h + 1) < 8 || at(text, p) != b'.' {
        return None;
    }
    let mut s = run(text, p + 1, b64url);
    while at(text, s) == b'.' && b64url(at(text, s + 1)) {
        s = run(text, s + 1, b64url);
    }
    if at(text, s) == b'=' {
        return None;
    }
    Some(s)
}

/// AWS access key id prefixes (IAM unique id prefixes).
const AWS_PREFIXES: [&[u8; 4]; 12] = [
    b"AKIA", b"ASIA", b"AIDA", b"AROA", b"AIPA", b"ANPA", b"ANVA", b"AGPA", b"ABIA", b"ACCA",
    b"APKA", b"ASCA",
];

/// An AWS access key id: a known prefix and 16 of `[A-Z0-9]`, 20 in all.
pub(super) fn aws_access_key(text: &[u8], i: usize) -> Option<usize> {
    let w = text.get(i..i + 20)?;
    if !AWS_PREFIXES.iter().any(|p| &w[..4] == p.as_slice()) {
        return None;
    }
    if !w[4..]
        .iter()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        || is_word(at(text, i + 20))
    {
        return None;
    }
    Some(i + 20)
}

/// Vendor token prefixes and the minimum length of what follows, with the
/// bytes the body may hold.
struct Vendor {
    prefix: &'static [u8],
    min: usize,
    max: usize,
    body: fn(u8) -> bool,
}

fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}
fn alnum_us(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}
fn alnum_dash(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

const VENDORS: &[Vendor] = &[
    // GitHub personal/OAuth/user/server/refresh tokens.
    Vendor {
        prefix: b"ghp_",
        min: 36,
        max: 255,
        body: alnum,
    },
    Vendor {
        prefix: b"gho_",
        min: 36,
        max: 255,
        body: alnum,
    },
    Vendor {
        prefix: b"ghu_",
        min: 36,
        max: 255,
        body: alnum,
    },
    Vendor {
        prefix: b"ghs_",
        min: 36,
        max: 255,
        body: alnum,
    },
    Vendor {
        prefix: b"ghr_",
        min: 36,
        max: 255,
        body: alnum,
    },
    Vendor {
        prefix: b"github_pat_",
        min: 22,
        max: 255,
        body: alnum_us,
    },
    Vendor {
        prefix: b"glpat-",
        min: 20,
        max: 255,
        body: b64url,
    },
    // Slack bot/user/app/refresh/session tokens.
    Vendor {
        prefix: b"xoxb-",
        min: 10,
        max: 255,
        body: alnum_dash,
    },
    Vendor {
        prefix: b"xoxp-",
        min: 10,
        max: 255,
        body: alnum_dash,
    },
    Vendor {
        prefix: b"xoxa-",
        min: 10,
        max: 255,
        body: alnum_dash,
    },
    Vendor {
        prefix: b"xoxr-",
        min: 10,
        max: 255,
        body: alnum_dash,
    },
    Vendor {
        prefix: b"xoxs-",
        min: 10,
        max: 255,
        body: alnum_dash,
    },
    // Stripe secret and restricted keys.
    Vendor {
        prefix: b"sk_live_",
        min: 16,
        max: 255,
        body: alnum,
    },
    Vendor {
        prefix: b"sk_test_",
        min: 16,
        max: 255,
        body: alnum,
    },
    Vendor {
        prefix: b"rk_live_",
        min: 16,
        max: 255,
        body: alnum,
    },
    Vendor {
        prefix: b"rk_test_",
        min: 16,
        max: 255,
        body: alnum,
    },
    // Google API key.
    Vendor {
        prefix: b"AIza",
        min: 35,
        max: 35,
        body: b64url,
    },
    // npm access token.
    Vendor {
        prefix: b"npm_",
        min: 36,
        max: 36,
        body: alnum,
    },
];

fn vendor_token(text: &[u8], i: usize) -> Option<usize> {
    // Every prefix's first two bytes, checked before any full comparison:
    // most words starting with `s`, `r`, `g`, … fail here.
    let (b0, b1) = (at(text, i), at(text, i + 1));
    if !matches!(
        (b0, b1),
        (b'g', b'h' | b'i' | b'l')
            | (b'x', b'o')
            | (b's' | b'r', b'k')
            | (b'A', b'I')
            | (b'n', b'p')
    ) {
        return None;
    }
    for v in VENDORS {
        if text.get(i..i + v.prefix.len()) != Some(v.prefix) {
            continue;
        }
        let s = i + v.prefix.len();
        let e = run_max(text, s, v.max + 1, v.body);
        let len = e - s;
        if (v.min..=v.max).contains(&len) && !is_word(at(text, e)) && at(text, e) != b'-' {
            return Some(e);
        }
    }
    None
}

/// `Bearer <token>` (token ≥ 16) or `Basic <credentials>` (≥ 8), any case;
/// the span is the credential. A JWT credential is reported as a JWT.
fn scheme_credential(text: &[u8], i: usize) -> Option<Span> {
    let (skip, min) = if starts_with_ci(text, i, b"bearer ") {
        (7, 16)
    } else if starts_with_ci(text, i, b"basic ") {
        (6, 8)
    } else {
        return None;
    };
    let mut s = i + skip;
    while at(text, s) == b' ' && s - i < skip + 4 {
        s += 1;
    }
    let e = run(text, s, token_byte);
    // Sentence dots are not part of a credential.
    let e = trim_dots(text, s, e);
    let v = &text[s..e];
    if let Some(je) = jwt(text, s) {
        if je == e {
            return Some(span(s, e, Kind::Jwt));
        }
    }
    if v.len() < min || !looks_secret(v) {
        return None;
    }
    Some(span(s, e, Kind::BearerToken))
}

fn trim_dots(text: &[u8], s: usize, mut e: usize) -> usize {
    while e > s && text[e - 1] == b'.' {
        e -= 1;
    }
    e
}

/// Secrets that start at a letter (or `_`) that starts a word.
pub(super) fn at_letter(text: &[u8], i: usize, fl: &mut super::Floors) -> Option<Span> {
    match text[i] {
        b'e' if i >= fl.jwt => {
            let found = jwt(text, i).map(|e| span(i, e, Kind::Jwt));
            if found.is_none() {
                // Any `eyJ` later in this base64url run sees the same run end
                // and fails the same way.
                fl.jwt = run(text, i, b64url);
            }
            found
        }
        b'A' => aws_access_key(text, i)
            .map(|e| span(i, e, Kind::AwsAccessKey))
            .or_else(|| vendor_token(text, i).map(|e| span(i, e, Kind::BearerToken))),
        b'B' | b'b' => scheme_credential(text, i),
        b'g' | b'x' | b's' | b'r' | b'n' => {
            vendor_token(text, i).map(|e| span(i, e, Kind::BearerToken))
        }
        _ => None,
    }
}

/// `-----BEGIN … PRIVATE KEY-----` through the matching END line. A block
/// with no END is redacted to the end of the text: truncated key material is
/// still key material.
pub(super) fn pem(text: &[u8], i: usize) -> Option<Span> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    if text.get(i..i + BEGIN.len()) != Some(BEGIN) {
        return None;
    }
    let ls = i + BEGIN.len();
    let le = run(text, ls, |b| {
        b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' '
    });
    if le - ls > 64 || text.get(le..le + 5) != Some(b"-----") {
        return None;
    }
    let label = &text[ls..le];
    if !(label.ends_with(b"PRIVATE KEY") || label.ends_with(b"PRIVATE KEY BLOCK")) {
        return None;
    }
    let body = le + 5;
    let rest = &text[body..];
    let mut from = 0;
    while let Some(k) = memchr::memmem::find(&rest[from..], b"-----END ") {
        let e = body + from + k + 9;
        if text.get(e..e + label.len()) == Some(label)
            && text.get(e + label.len()..e + label.len() + 5) == Some(b"-----")
        {
            return Some(span(i, e + label.len() + 5, Kind::PrivateKey));
        }
        from += k + 9;
    }
    Some(span(i, text.len(), Kind::PrivateKey))
}

/// What a `key = value` key name says about its value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyClass {
    AwsSecret,
    Secret,
}

fn classify_key(norm: &[u8]) -> Option<KeyClass> {
    let has = |n: &[u8]| norm.windows(n.len()).any(|w| w == n);
    if has(b"secretaccesskey") || (has(b"aws") && has(b"secret")) {
        return Some(KeyClass::AwsSecret);
    }
    const SUFFIXES: [&[u8]; 4] = [b"token", b"apikey", b"secret", b"secretkey"];
    SUFFIXES
        .iter()
        .any(|s| norm.ends_with(s))
        .then_some(KeyClass::Secret)
}

/// `api_key=…`, `"token": "…"`, `X-Api-Key: …`, `aws_secret_access_key = …`:
/// called at the `=` or `:`; looks back for the key name, forward for the
/// value. Values are ≥ 8 credential-looking bytes; a 40-byte value of a key
/// naming an AWS secret is an AWS secret key.
///
/// `floor`: a rejected value had no digit and no inner capital, so neither
/// has any suffix of it; triggers inside it are skipped (JWTs and AWS key
/// ids inside it are still found at their own word starts).
pub(super) fn keyword_value(text: &[u8], sep: usize, floor: &mut usize) -> Option<Span> {
    if sep < *floor {
        return None;
    }
    // Back: spaces, a closing quote (maybe `\"`), the key name.
    let mut k = sep;
    while k > 0 && text[k - 1] == b' ' && sep - k < 4 {
        k -= 1;
    }
    if k > 0 && matches!(text[k - 1], b'"' | b'\'') {
        k -= 1;
        if k > 0 && text[k - 1] == b'\\' {
            k -= 1;
        }
    }
    let key_end = k;
    while k > 0 && (is_word(text[k - 1]) || matches!(text[k - 1], b'-' | b'.')) && key_end - k < 64
    {
        k -= 1;
    }
    // Every key class ends in `…token`, `…secret`, `…key` (case-insensitive):
    // reject the rest (`10:22`, `status=`) before normalizing.
    if k == key_end || !matches!(text[key_end - 1] | 0x20, b'n' | b't' | b'y') {
        return None;
    }
    let mut norm = [0u8; 64];
    let mut n = 0;
    for &c in &text[k..key_end] {
        if c.is_ascii_alphanumeric() {
            norm[n] = c.to_ascii_lowercase();
            n += 1;
        }
    }
    let class = classify_key(&norm[..n])?;
    // Forward: spaces, an opening quote (maybe `\"`), the value.
    let mut j = sep + 1;
    while at(text, j) == b' ' && j - sep < 5 {
        j += 1;
    }
    if at(text, j) == b'\\' && matches!(at(text, j + 1), b'"' | b'\'') {
        j += 2;
    } else if matches!(at(text, j), b'"' | b'\'') {
        j += 1;
    }
    let s = j;
    let full = run(text, s, token_byte);
    let e = trim_dots(text, s, full);
    let v = &text[s..e];
    if v.len() < 8 {
        return None;
    }
    if jwt(text, s) == Some(e) {
        return Some(span(s, e, Kind::Jwt));
    }
    if aws_access_key(text, s) == Some(e) {
        return Some(span(s, e, Kind::AwsAccessKey));
    }
    if class == KeyClass::AwsSecret
        && v.len() == 40
        && v.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'/' || b == b'+')
    {
        return Some(span(s, e, Kind::AwsSecretKey));
    }
    if looks_secret(v) {
        return Some(span(s, e, Kind::BearerToken));
    }
    *floor = full;
    None
}
