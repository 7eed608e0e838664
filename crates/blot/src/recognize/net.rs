//! IP addresses: dotted-quad IPv4 and RFC 4291 text IPv6.

use super::{at, is_digit, is_word, prev, prev2};

/// One IPv4 octet at `j`: 1–3 digits, ≤ 255, no leading zero. Returns the end.
fn octet(text: &[u8], j: usize) -> Option<usize> {
    let mut e = j;
    let mut v = 0u32;
    while is_digit(at(text, e)) && e - j < 4 {
        v = v * 10 + u32::from(at(text, e) - b'0');
        e += 1;
    }
    let len = e - j;
    if len == 0 || len > 3 || v > 255 || (len > 1 && at(text, j) == b'0') {
        return None;
    }
    Some(e)
}

/// The end of a dotted quad starting at `j`, without boundary checks.
fn quad(text: &[u8], j: usize) -> Option<usize> {
    let mut e = octet(text, j)?;
    for _ in 0..3 {
        if at(text, e) != b'.' {
            return None;
        }
        e = octet(text, e + 1)?;
    }
    Some(e)
}

/// IPv4 at a word start: not after `digit.` (version `1.2.3.4.5`), not
/// followed by a word byte or `.digit`.
pub(super) fn ipv4_at(text: &[u8], i: usize) -> Option<usize> {
    if prev(text, i) == b'.' && is_word(prev2(text, i)) {
        return None;
    }
    let e = quad(text, i)?;
    let c = at(text, e);
    if is_word(c) || (c == b'.' && is_digit(at(text, e + 1))) {
        return None;
    }
    Some(e)
}

/// IPv6 starting at a word start, if a `:` is near enough to make it worth it.
pub(super) fn ipv6_at_word(text: &[u8], i: usize) -> Option<usize> {
    let window = &text[i..text.len().min(i + 5)];
    if !window.contains(&b':') {
        return None;
    }
    let p = prev(text, i);
    if p == b':' || p == b'.' {
        return None;
    }
    ipv6(text, i)
}

/// RFC 4291 §2.2 text form: eight 1–4 hex-digit groups, or fewer with one
/// `::`, optionally ending in a dotted quad. A `::` form must have two groups
/// or a digit in its one group, so C++-ish `ad::` and a bare `::` are not
/// addresses.
pub(super) fn ipv6(text: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    let mut groups = 0u32;
    let mut double = false;
    let mut has_digit = false;
    if at(text, j) == b':' {
        if at(text, j + 1) != b':' {
            return None;
        }
        double = true;
        j += 2;
    }
    loop {
        let s = j;
        while at(text, j).is_ascii_hexdigit() && j - s < 5 {
            j += 1;
        }
        let len = j - s;
        if len == 0 {
            break;
        }
        if at(text, j) == b'.' && is_digit(at(text, j + 1)) {
            // Embedded IPv4 tail (`::ffff:192.0.2.1`), worth two groups.
            if groups > 6 {
                return None;
            }
            j = quad(text, s)?;
            groups += 2;
            has_digit = true;
            break;
        }
        if len > 4 || is_word(at(text, j)) {
            return None;
        }
        has_digit |= text[s..j].iter().any(u8::is_ascii_digit);
        groups += 1;
        if groups > 8 {
            return None;
        }
        if at(text, j) == b':' {
            if at(text, j + 1) == b':' {
                if double {
                    return None;
                }
                double = true;
                j += 2;
                continue;
            }
            if at(text, j + 1).is_ascii_hexdigit() {
                j += 1;
                continue;
            }
        }
        break;
    }
    let count_ok = if double { groups <= 7 } else { groups == 8 };
    if !count_ok || groups == 0 || (double && groups < 2 && !has_digit) {
        return None;
    }
    let c = at(text, j);
    if is_word(c) || (c == b'.' && is_digit(at(text, j + 1))) {
        return None;
    }
    Some(j)
}
