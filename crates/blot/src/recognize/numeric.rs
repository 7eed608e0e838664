//! Digit-led kinds: payment card, US SSN, phone (and dispatch to IPv4/IPv6).

use super::{at, is_digit, is_word, net, prev, prev2, span};
use crate::scan::{Kind, Span};

/// Most digit groups any layout here uses (a 19-digit card in fours is 5).
const MAX_GROUPS: usize = 8;

/// Runs of digits separated by single separator bytes.
struct Groups {
    start: [usize; MAX_GROUPS],
    end: [usize; MAX_GROUPS],
    len: usize,
}

impl Groups {
    fn digits(&self, k: usize) -> usize {
        (0..k).map(|g| self.end[g] - self.start[g]).sum()
    }
    fn glen(&self, g: usize) -> usize {
        self.end[g] - self.start[g]
    }
}

/// Collects digit groups from `i`. With `consistent`, the first separator
/// fixes the one every later gap must use. Stops early once `max_digits` is
/// passed: callers only try prefixes that fit.
fn groups(text: &[u8], i: usize, seps: &[u8], consistent: bool, max_digits: usize) -> Groups {
    let mut g = Groups {
        start: [0; MAX_GROUPS],
        end: [0; MAX_GROUPS],
        len: 0,
    };
    let mut j = i;
    let mut sep = 0u8;
    let mut total = 0;
    while g.len < MAX_GROUPS {
        let s = j;
        while is_digit(at(text, j)) && j - s <= max_digits {
            j += 1;
        }
        if j == s {
            break;
        }
        g.start[g.len] = s;
        g.end[g.len] = j;
        g.len += 1;
        total += j - s;
        if total > max_digits {
            break;
        }
        let c = at(text, j);
        if !seps.contains(&c) || !is_digit(at(text, j + 1)) {
            break;
        }
        if consistent {
            if sep == 0 {
                sep = c;
            } else if c != sep {
                break;
            }
        }
        j += 1;
    }
    g
}

/// A number may not continue a longer number on the left (`3.14159…`,
/// `2024-0…`).
fn left_ok(text: &[u8], i: usize) -> bool {
    let p = prev(text, i);
    if is_word(p) {
        return false;
    }
    !(matches!(p, b'.' | b'-') && is_digit(prev2(text, i)))
}

/// A number may not run on into more word bytes or decimals (`.5`). A dash
/// after it is allowed (`4111-…-1111-2`): the validator has already spoken,
/// and redacting a little more is safer than leaking.
pub(super) fn right_ok(text: &[u8], end: usize) -> bool {
    let c = at(text, end);
    if is_word(c) {
        return false;
    }
    !(c == b'.' && is_digit(at(text, end + 1)))
}

/// Everything that can start at a digit that starts a word. The length of
/// the leading digit run decides which parsers can possibly match, so most
/// numbers in logs (dates, times, counters) are rejected after a few bytes.
pub(super) fn at_digit(text: &[u8], i: usize) -> Option<Span> {
    let mut run = 0;
    while run < 20 && is_digit(at(text, i + run)) {
        run += 1;
    }
    let next = at(text, i + run);
    let mut best: Option<Span> = None;
    let mut offer = |s: Option<Span>| {
        if let Some(s) = s {
            if best.is_none_or(|b| s.end > b.end) {
                best = Some(s);
            }
        }
    };
    if run <= 4 && (next == b':' || (next.is_ascii_hexdigit() && !is_digit(next))) {
        if let Some(end) = net::ipv6_at_word(text, i) {
            offer(Some(span(i, end, Kind::Ipv6)));
        }
    }
    if run <= 3 && next == b'.' {
        if let Some(end) = net::ipv4_at(text, i) {
            offer(Some(span(i, end, Kind::Ipv4)));
        }
    }
    if !left_ok(text, i) {
        return best;
    }
    if run == 3 || run == 9 {
        offer(ssn(text, i).map(|e| span(i, e, Kind::UsSsn)));
    }
    if run == 4 || (13..=19).contains(&run) {
        offer(card(text, i).map(|e| span(i, e, Kind::Card)));
    }
    if run == 3 || (run == 1 && text[i] == b'1') {
        offer(nanp(text, i).map(|e| span(i, e, Kind::Phone)));
    }
    if text[i] == b'0' && (2..=5).contains(&run) {
        offer(national(text, i).map(|e| span(i, e, Kind::Phone)));
    }
    best
}

/// `+` starts an international number, or a `+1` NANP one.
pub(super) fn at_plus(text: &[u8], i: usize) -> Option<Span> {
    let p = prev(text, i);
    if is_word(p) {
        return None;
    }
    let a = international(text, i + 1);
    let b = nanp(text, i);
    let end = match (a, b) {
        (Some(a), Some(b)) => a.max(b),
        (x, y) => x.or(y)?,
    };
    Some(span(i, end, Kind::Phone))
}

/// `(` starts a NANP number written `(415) 555-2671`.
pub(super) fn at_paren(text: &[u8], i: usize) -> Option<Span> {
    if is_word(prev(text, i)) || !is_digit(at(text, i + 1)) {
        return None;
    }
    nanp(text, i).map(|e| span(i, e, Kind::Phone))
}

// ---------------------------------------------------------------- card

/// Payment card: 13–19 digits, contiguous or in the printed layouts (fours;
/// 4-6-5; 4-6-4) with one consistent space or dash, issuer digit 2–6 (or 1
/// for 15-digit UATP), Luhn-valid.
pub(super) fn card(text: &[u8], i: usize) -> Option<usize> {
    let g = groups(text, i, b" -", true, 19);
    let mut k = g.len;
    while k > 0 {
        let digits = g.digits(k);
        let end = g.end[k - 1];
        if (13..=19).contains(&digits) && card_layout(&g, k) && right_ok(text, end) {
            let mut buf = [0u8; 19];
            let mut n = 0;
            for gi in 0..k {
                for &d in &text[g.start[gi]..g.end[gi]] {
                    buf[n] = d - b'0';
                    n += 1;
                }
            }
            let ds = &buf[..n];
            if card_issuer_ok(ds) && luhn(ds) {
                return Some(end);
            }
        }
        k -= 1;
    }
    None
}

fn card_layout(g: &Groups, k: usize) -> bool {
    if k == 1 {
        return true;
    }
    let fours = (0..k - 1).all(|x| g.glen(x) == 4) && (1..=4).contains(&g.glen(k - 1));
    let amex_diners = k == 3 && g.glen(0) == 4 && g.glen(1) == 6 && matches!(g.glen(2), 4 | 5);
    fours || amex_diners
}

fn card_issuer_ok(ds: &[u8]) -> bool {
    match ds.first() {
        Some(2..=6) => true,
        Some(1) => ds.len() == 15,
        _ => false,
    }
}

/// The Luhn mod-10 check over digit values.
pub fn luhn(ds: &[u8]) -> bool {
    let mut sum = 0u32;
    for (k, &d) in ds.iter().rev().enumerate() {
        let mut v = u32::from(d);
        if k % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum % 10 == 0
}

// ---------------------------------------------------------------- SSN

/// US SSN written `AAA-GG-SSSS` or `AAA GG SSSS`, or nine bare digits right
/// after an `SSN` / `social security` label.
pub(super) fn ssn(text: &[u8], i: usize) -> Option<usize> {
    let d = |k: usize| is_digit(at(text, i + k));
    if !(d(0) && d(1) && d(2)) {
        return None;
    }
    let sep = at(text, i + 3);
    let end = if matches!(sep, b'-' | b' ') {
        if !(d(4) && d(5) && at(text, i + 6) == sep && d(7) && d(8) && d(9) && d(10)) {
            return None;
        }
        i + 11
    } else {
        if !(d(3) && d(4) && d(5) && d(6) && d(7) && d(8)) || is_digit(at(text, i + 9)) {
            return None;
        }
        if !ssn_label_before(text, i) {
            return None;
        }
        i + 9
    };
    if !right_ok(text, end) {
        return None;
    }
    // Field offsets: `AAA?GG?SSSS` with a separator, `AAAGGSSSS` without.
    let (g0, s0) = if end - i == 9 { (3, 5) } else { (4, 7) };
    let num = |a: usize, b: usize| {
        text[i + a..i + b]
            .iter()
            .fold(0u16, |acc, &c| acc * 10 + u16::from(c - b'0'))
    };
    let (area, group, serial) = (num(0, 3), num(g0, g0 + 2), num(s0, s0 + 4));
    ssn_valid(area, group, serial).then_some(end)
}

/// SSA rules: area 001–899 except 666, group 01–99, serial 0001–9999.
pub fn ssn_valid(area: u16, group: u16, serial: u16) -> bool {
    (1..=899).contains(&area) && area != 666 && group != 0 && serial != 0
}

fn ssn_label_before(text: &[u8], i: usize) -> bool {
    let from = i.saturating_sub(24);
    let mut win = [0u8; 24];
    let w = &text[from..i];
    for (k, &c) in w.iter().enumerate() {
        win[k] = c.to_ascii_lowercase();
    }
    let w = &win[..w.len()];
    contains(w, b"ssn") || contains(w, b"social security")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|x| x == needle)
}

// ---------------------------------------------------------------- phone

/// North American numbers: `(NXX) NXX-XXXX`, `NXX-NXX-XXXX`, `NXX.NXX.XXXX`,
/// `NXX NXX XXXX`, optionally after `1-`, `1 `, `+1 `; N is 2–9.
pub(super) fn nanp(text: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    let c = |k: usize| at(text, k);
    if c(j) == b'+' {
        if c(j + 1) != b'1' {
            return None;
        }
        j += 2;
        if matches!(c(j), b' ' | b'-' | b'.') {
            j += 1;
        }
    } else if c(j) == b'1'
        && matches!(c(j + 1), b' ' | b'-' | b'.')
        && (c(j + 2) == b'(' || is_digit(c(j + 2)))
    {
        j += 2;
    }
    let three = |k: usize| is_digit(c(k)) && is_digit(c(k + 1)) && is_digit(c(k + 2));
    let n_digit = |k: usize| matches!(c(k), b'2'..=b'9');
    let paren = c(j) == b'(';
    let area = if paren {
        if !(three(j + 1) && c(j + 4) == b')') {
            return None;
        }
        let a = j + 1;
        j += 5;
        if c(j) == b' ' {
            j += 1;
        }
        a
    } else {
        if !three(j) {
            return None;
        }
        let a = j;
        j += 3;
        a
    };
    let sep1 = if paren {
        0
    } else {
        let s = c(j);
        if !matches!(s, b'-' | b'.' | b' ') {
            return None;
        }
        j += 1;
        s
    };
    if !three(j) {
        return None;
    }
    let exch = j;
    j += 3;
    let sep2 = c(j);
    if !matches!(sep2, b'-' | b'.' | b' ') || (!paren && sep2 != sep1) {
        return None;
    }
    j += 1;
    if !(three(j) && is_digit(c(j + 3))) {
        return None;
    }
    j += 4;
    if !(n_digit(area) && n_digit(exch) && right_ok(text, j)) {
        return None;
    }
    if sep2 == b' ' && is_digit(c(j + 1)) && c(j) == b' ' {
        return None;
    }
    Some(j)
}

/// International display form: `+` (or `%2B`), country code 1–9…, then digit
/// groups with spaces, dashes, dots or a `(0)` trunk; 8–15 digits.
pub(super) fn international(text: &[u8], i: usize) -> Option<usize> {
    if !matches!(at(text, i), b'1'..=b'9') {
        return None;
    }
    let mut ends = [0usize; 10];
    let mut counts = [0usize; 10];
    let mut ng = 0;
    let mut digits = 0;
    let mut j = i;
    while ng < ends.len() {
        if at(text, j) == b'(' {
            let s = j + 1;
            let mut e = s;
            while is_digit(at(text, e)) && e - s < 4 {
                e += 1;
            }
            if e == s || at(text, e) != b')' {
                break;
            }
            // `(0)` is a trunk prefix dropped when dialling from abroad.
            if !(e - s == 1 && at(text, s) == b'0') {
                digits += e - s;
            }
            j = e + 1;
        } else {
            let s = j;
            while is_digit(at(text, j)) && j - s <= 15 {
                j += 1;
            }
            if j == s {
                break;
            }
            digits += j - s;
        }
        ends[ng] = j;
        counts[ng] = digits;
        ng += 1;
        if digits > 15 {
            break;
        }
        let s = at(text, j);
        let nx = at(text, j + 1);
        if matches!(s, b' ' | b'-' | b'.') && (is_digit(nx) || nx == b'(') {
            j += 1;
        } else if s == b'(' || (at(text, j - 1) == b')' && is_digit(s)) {
            // `+44 (0)20…` / `+44(0)20…`
        } else {
            break;
        }
    }
    let mut k = ng;
    while k > 0 {
        let end = ends[k - 1];
        if (8..=15).contains(&counts[k - 1]) && right_ok(text, end) {
            return Some(end);
        }
        k -= 1;
    }
    None
}

/// National numbers with a trunk `0`: `020 7946 0958`, `030 12345678`,
/// `01 23 45 67 89`, `07700-900123`; one consistent separator, 10–11 digits.
pub(super) fn national(text: &[u8], i: usize) -> Option<usize> {
    if !matches!(at(text, i + 1), b'1'..=b'9') {
        return None;
    }
    let g = groups(text, i, b" -.", true, 11);
    if g.len < 2 || !(2..=5).contains(&g.glen(0)) {
        return None;
    }
    let mut k = g.len;
    while k >= 2 {
        let digits = g.digits(k);
        let end = g.end[k - 1];
        if (10..=11).contains(&digits)
            && (1..k).all(|x| (2..=8).contains(&g.glen(x)))
            && right_ok(text, end)
        {
            return Some(end);
        }
        k -= 1;
    }
    None
}
