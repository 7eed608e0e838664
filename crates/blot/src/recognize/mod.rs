//! The single-pass byte scanner behind [`crate::Scanner`].
//!
//! One loop walks the text once. Most bytes cost one table lookup: a byte
//! only matters if it starts a word (`[A-Za-z0-9_]` after a non-word byte) or
//! is one of a few trigger bytes (`@ % + ( - : =`). At a trigger the loop asks
//! only the recognizers that can start there (a digit never asks the JWT
//! recognizer), each of which reads a bounded stretch of bytes and validates
//! (Luhn, mod-97, area rules, octet ranges, …) before it reports a span. After
//! a span the loop resumes at its end, so no byte is matched twice and the
//! work stays linear in the text length.

mod email;
mod iban;
mod net;
mod numeric;
mod secrets;

/// Public re-exports of the format checks.
pub(crate) mod validators {
    pub use super::iban::{country_length as iban_length, mod97_ok as iban_mod97};
    pub use super::numeric::{luhn, ssn_valid};
}

use crate::scan::{Kind, Span};

const W: u8 = 1; // word byte: [A-Za-z0-9_]
const T: u8 = 2; // trigger byte

const fn class_table() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut b = 0usize;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || c == b'_' {
            t[b] = W;
        }
        b += 1;
    }
    t[b'@' as usize] = T;
    t[b'%' as usize] = T;
    t[b'+' as usize] = T;
    t[b'(' as usize] = T;
    t[b'-' as usize] = T;
    t[b':' as usize] = T;
    t[b'=' as usize] = T;
    t
}

static CLASS: [u8; 256] = class_table();

/// `[A-Za-z0-9_]`.
#[inline]
pub(crate) fn is_word(b: u8) -> bool {
    CLASS[b as usize] == W
}

#[inline]
pub(crate) fn is_digit(b: u8) -> bool {
    b.is_ascii_digit()
}

/// The byte at `i`, or 0 past the end (0 is a non-word byte, so bounds
/// checks become boundary checks).
#[inline]
pub(crate) fn at(text: &[u8], i: usize) -> u8 {
    text.get(i).copied().unwrap_or(0)
}

/// The byte before `i` as far as token boundaries go: a JSON/C escape such as
/// the two bytes `\n` counts as a line break, so `"\n4111…"` in a doubly
/// encoded log still starts a token. 0 at the start of the text.
#[inline]
pub(crate) fn prev(text: &[u8], i: usize) -> u8 {
    if i == 0 {
        return 0;
    }
    let p = text[i - 1];
    if matches!(p, b'n' | b't' | b'r') && i >= 2 && text[i - 2] == b'\\' {
        return b'\n';
    }
    p
}

/// The byte two before `i` (the one before `prev`), 0 if none.
#[inline]
pub(crate) fn prev2(text: &[u8], i: usize) -> u8 {
    if i < 2 {
        0
    } else {
        text[i - 2]
    }
}

/// Up to `n` bytes before `i`, for context words (`SSN`, `phone`, …), cut
/// after the last `[kind]` placeholder in them.
///
/// The cut is what makes redaction settle. The scanner never looks back
/// past a span it found (it restarts after each), so on the first pass a
/// context window never holds an earlier value; on a re-scan of the output
/// that value is a placeholder, and `[us_ssn]` must not then count as the
/// label `ssn` for the next number (which would redact it, and then the
/// next, one per pass). Cutting at placeholders gives both passes the same
/// window.
///
/// A placeholder that straddles the window's start (`…_ssn]` with its `[us`
/// just outside) counts too: the search reaches back one placeholder length
/// further than the window.
pub(crate) fn window_before(text: &[u8], i: usize, n: usize) -> &[u8] {
    let from = i.saturating_sub(n);
    let reach = from.saturating_sub(LONGEST_PLACEHOLDER);
    let cut = match last_placeholder_end(&text[reach..i]) {
        Some(e) => (reach + e).max(from),
        None => from,
    };
    &text[cut..i]
}

/// Up to `n` bytes from `i` on, cut before the first `[kind]` placeholder
/// that starts in them (even one that runs past their end).
pub(crate) fn window_after(text: &[u8], i: usize, n: usize) -> &[u8] {
    let w = text.get(i..text.len().min(i + n)).unwrap_or(&[]);
    let mut k = 0;
    while let Some(o) = memchr::memchr(b'[', &w[k..]) {
        let s = k + o;
        if placeholder_at(&text[i + s..]) {
            return &w[..s];
        }
        k = s + 1;
    }
    w
}

/// Length of the longest `[kind]` placeholder (`[aws_access_key]`).
const LONGEST_PLACEHOLDER: usize = 16;

/// Whether `w` starts with a `[kind]` placeholder.
fn placeholder_at(w: &[u8]) -> bool {
    Kind::ALL
        .iter()
        .any(|k| w.starts_with(k.placeholder().as_bytes()))
}

/// The end of the last `[kind]` placeholder in `w`, if any.
fn last_placeholder_end(w: &[u8]) -> Option<usize> {
    let mut end = w.len();
    while let Some(e) = memchr::memrchr(b']', &w[..end]) {
        if let Some(s) = memchr::memrchr(b'[', &w[..e]) {
            let name = &w[s + 1..e];
            if Kind::ALL.iter().any(|k| k.name().as_bytes() == name) {
                return Some(e + 1);
            }
        }
        end = e;
    }
    None
}

/// Appends `s`, merging it with earlier spans it overlaps, so the list stays
/// sorted and disjoint and covers the union of everything found (redacting
/// more is always safe; redacting less never is).
pub(crate) fn push(out: &mut Vec<Span>, mut s: Span) {
    while let Some(last) = out.last().copied() {
        if last.end <= s.start {
            break;
        }
        out.pop();
        let kind = if last.end - last.start >= s.end - s.start {
            last.kind
        } else {
            s.kind
        };
        s = Span {
            start: last.start.min(s.start),
            end: last.end.max(s.end),
            kind,
        };
    }
    out.push(s);
}

/// Where earlier failed attempts already looked, so a later attempt that
/// could only see a suffix of the same run (and so must fail the same way)
/// is skipped. This keeps adversarial input (`token=token=…`,
/// `eyJa-eyJa-…`, `x%40x%40…`) linear. Indices are into the current slice.
#[derive(Default)]
pub(crate) struct Floors {
    /// Email local parts never extend left of this.
    pub email: usize,
    /// `key=value` triggers before this sit inside a value already rejected.
    pub kv: usize,
    /// `eyJ` starts before this sit inside a header run already rejected.
    pub jwt: usize,
}

impl Floors {
    fn shift(&mut self, by: usize) {
        self.email = self.email.saturating_sub(by);
        self.kv = self.kv.saturating_sub(by);
        self.jwt = self.jwt.saturating_sub(by);
    }
}

fn span(start: usize, end: usize, kind: Kind) -> Span {
    Span { start, end, kind }
}

/// Scans `text`, appending every PII span in order.
///
/// After a span, scanning restarts on the text *after* it, which the
/// recognizers see as starting at a boundary. That is exactly what a second
/// scan of the redacted output sees (the `[kind]` placeholder ends in `]`, a
/// boundary byte), so the bytes after a span are judged the same way in both:
/// nothing is left that a re-scan of the output would still call PII.
pub(crate) fn scan(text: &[u8], out: &mut Vec<Span>) {
    let mut base = 0;
    let mut t = text;
    let mut i = 0;
    let mut fl = Floors::default();
    while i < t.len() {
        let b = t[i];
        let found = match CLASS[b as usize] {
            0 => {
                i += 1;
                continue;
            }
            W => {
                let found = if is_word(prev(t, i)) {
                    None
                } else {
                    word_start(t, i, &mut fl)
                };
                if found.is_none() {
                    // `\n4111…`: the escape letter is not part of the next token.
                    if matches!(b, b'n' | b't' | b'r') && i > 0 && t[i - 1] == b'\\' {
                        i += 1;
                        continue;
                    }
                    i += 1;
                    while i < t.len() && is_word(t[i]) {
                        i += 1;
                    }
                    continue;
                }
                found
            }
            _ => trigger(t, i, &mut fl),
        };
        match found {
            Some(s) if s.end > s.start && s.end <= t.len() => {
                let end = base + s.end;
                push(
                    out,
                    Span {
                        start: base + s.start,
                        end,
                        kind: s.kind,
                    },
                );
                fl.shift(end - base);
                base = end;
                t = &text[base..];
                i = 0;
            }
            _ => i += 1,
        }
    }
}

/// Recognizers that start at a word start.
fn word_start(text: &[u8], i: usize, fl: &mut Floors) -> Option<Span> {
    let b = text[i];
    if is_digit(b) {
        return numeric::at_digit(text, i);
    }
    let b1 = at(text, i + 1);
    // IBAN: two letters, two check digits.
    if b.is_ascii_alphabetic()
        && b1.is_ascii_alphabetic()
        && is_digit(at(text, i + 2))
        && is_digit(at(text, i + 3))
    {
        if let Some(end) = iban::iban(text, i) {
            return Some(span(i, end, Kind::Iban));
        }
    }
    if let Some(s) = secrets::at_letter(text, i, fl) {
        return Some(s);
    }
    if b.is_ascii_hexdigit() {
        if let Some(end) = net::ipv6_at_word(text, i) {
            return Some(span(i, end, Kind::Ipv6));
        }
    }
    None
}

/// Recognizers that start at (or around) a punctuation trigger byte.
fn trigger(text: &[u8], i: usize, fl: &mut Floors) -> Option<Span> {
    match text[i] {
        b'@' => email::at_sign(text, i, i + 1, &mut fl.email),
        b'%' => {
            // URL-encoded `@` (`%40`) and `+` (`%2B`).
            let (a, c) = (at(text, i + 1), at(text, i + 2));
            if a == b'4' && c == b'0' {
                email::at_sign(text, i, i + 3, &mut fl.email)
            } else if a == b'2' && (c == b'B' || c == b'b') && !is_word(prev(text, i)) {
                numeric::international(text, i + 3).map(|end| span(i, end, Kind::Phone))
            } else {
                None
            }
        }
        b'+' => numeric::at_plus(text, i),
        b'(' => numeric::at_paren(text, i),
        b'-' => secrets::pem(text, i),
        b':' => {
            if at(text, i + 1) == b':' {
                let p = prev(text, i);
                if !is_word(p) && p != b':' && p != b'.' {
                    if let Some(end) = net::ipv6(text, i) {
                        return Some(span(i, end, Kind::Ipv6));
                    }
                }
                return None;
            }
            secrets::keyword_value(text, i, &mut fl.kv)
        }
        b'=' => secrets::keyword_value(text, i, &mut fl.kv),
        _ => None,
    }
}
