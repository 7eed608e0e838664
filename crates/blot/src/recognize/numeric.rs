//! Digit-led kinds: payment card, US SSN, phone (and dispatch to IPv4/IPv6).

use super::{at, is_digit, is_word, net, prev, prev2, span, window_after, window_before};
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
    let offer = |best: &mut Option<Span>, s: Option<Span>| {
        if let Some(s) = s {
            if best.is_none_or(|b| s.end > b.end) && (s.kind == Kind::UsSsn || starts_run(text, s))
            {
                *best = Some(s);
            }
        }
    };
    if run == 3 || run == 9 {
        offer(&mut best, ssn(text, i).map(|e| span(i, e, Kind::UsSsn)));
    }
    if run == 4 || (12..=19).contains(&run) {
        offer(&mut best, card(text, i).map(|e| span(i, e, Kind::Card)));
    }
    if run == 3 || (run == 1 && text[i] == b'1') {
        offer(&mut best, nanp(text, i).map(|e| span(i, e, Kind::Phone)));
    }
    if text[i] == b'0' && at(text, i + 1) == b'0' && run >= 3 {
        offer(&mut best, intl_00(text, i).map(|e| span(i, e, Kind::Phone)));
    }
    if text[i] == b'0' && (2..=5).contains(&run) {
        offer(
            &mut best,
            national(text, i).map(|e| span(i, e, Kind::Phone)),
        );
    }
    // Cheap checks first: a lone short number (`status=200 `) or an ISO
    // date (`2024-03-05T…`, in every log line) never reaches 8 digits of
    // phone, so its context is not read.
    let after = at(text, i + run + 1);
    let grouped = matches!(next, b' ' | b'-' | b'.' | b'/') && (is_digit(after) || after == b'(');
    let iso_date = run == 4
        && matches!(next, b'-' | b'/' | b'.')
        && is_digit(after)
        && is_digit(at(text, i + 6))
        && at(text, i + 7) == next
        && !is_digit(at(text, i + 10));
    let may_reach_8 = run >= 8 || ((grouped || next == b'(') && !iso_date);
    if best.is_none() && may_reach_8 && run <= 15 {
        // Context words are read only when no format matched on its own,
        // and only for runs that can hold the 8–15 digits asked for.
        offer(
            &mut best,
            contextual(text, i).map(|e| span(i, e, Kind::Phone)),
        );
    }
    best
}

/// Whether a card or phone number written in space-separated groups starts
/// its run of groups: it is not the tail of a longer grouped number
/// (`12 4111 1111 …`) or of an IBAN (`DE89 3704 0044 …` with a bad checksum
/// is not a card). Dash and dot runs are already covered by [`left_ok`].
/// The end is not held to the run's end: a card followed by its expiry
/// (`… 1111 12/26`) is still a card. SSNs keep their own strict 3-2-4
/// layout and are not held to this.
fn starts_run(text: &[u8], s: Span) -> bool {
    let i = s.start;
    if prev(text, i) != b' ' || !text[i..s.end].contains(&b' ') {
        return true;
    }
    let p2 = prev2(text, i);
    if is_digit(p2) {
        return false;
    }
    // Walk back over upper-case groups of four to an IBAN head (`GB82 WEST …`).
    let ok = |c: u8| c.is_ascii_uppercase() || c.is_ascii_digit();
    let mut j = i - 1; // the space
    for _ in 0..9 {
        let mut k = j;
        while k > 0 && ok(text[k - 1]) && j - k < 4 {
            k -= 1;
        }
        let g = &text[k..j];
        if g.len() != 4 || (k > 0 && is_word(text[k - 1])) {
            return true;
        }
        if g[0].is_ascii_uppercase()
            && g[1].is_ascii_uppercase()
            && g[2].is_ascii_digit()
            && g[3].is_ascii_digit()
        {
            return false;
        }
        if k == 0 || text[k - 1] != b' ' {
            return true;
        }
        j = k - 1;
    }
    true
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
    let e = nanp(text, i)
        .or_else(|| national_paren(text, i))
        .or_else(|| contextual(text, i))?;
    Some(span(i, e, Kind::Phone))
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
        if (12..=19).contains(&digits) && card_layout(&g, k) && right_ok(text, end) {
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

/// Issuer ranges (ISO/IEC 7812 IINs) by length. 13–19 digits: the payment
/// networks' first digits 2–6 (Visa, Mastercard, Amex, Discover, Diners,
/// JCB, UnionPay, Maestro, MIR, RuPay, Verve, …), 1 with 15 digits (UATP,
/// JCB's old 1800), 81/82 (UnionPay, RuPay), 9792 (Troy). 12 digits only
/// Maestro's ranges, where cards that short are issued.
fn card_issuer_ok(ds: &[u8]) -> bool {
    let n = ds.len();
    let p = |len: usize| {
        ds.iter()
            .take(len)
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d))
    };
    let maestro = matches!(p(2), 56..=58)
        || matches!(
            p(4),
            5018 | 5020 | 5038 | 5893 | 6304 | 6390 | 6759 | 6761..=6763 | 604 // 0604
        );
    if n == 12 {
        return maestro;
    }
    match ds.first() {
        Some(2..=6) => true,
        Some(1) => n == 15,
        Some(8) => matches!(p(2), 81 | 82) && n >= 16,
        Some(9) => p(4) == 9792 && n == 16,
        Some(0) => maestro,
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
    let w = window_before(text, i, 24);
    let mut win = [0u8; 24];
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
    } else if c(j) == b'0'
        && c(j + 1) == b'0'
        && c(j + 2) == b'1'
        && matches!(c(j + 3), b' ' | b'-' | b'.')
    {
        // `001-…`: the international prefix most of the world dials.
        j += 4;
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
    if !n_digit(area) || !n_digit(exch) {
        return None;
    }
    if sep2 == b' ' && is_digit(c(j + 1)) && c(j) == b' ' {
        return None;
    }
    let j = extension(text, j);
    right_ok(text, j).then_some(j)
}

/// The end of an extension after a number ending at `end` (`x528`,
/// ` x150`, ` ext. 45`, `, ext 7`, ` extension 12`), or `end` if none.
pub(super) fn extension(text: &[u8], end: usize) -> usize {
    let mut j = end;
    if at(text, j) == b',' && at(text, j + 1) == b' ' {
        j += 1;
    }
    if at(text, j) == b' ' {
        j += 1;
    }
    let word_end = {
        let mut k = j;
        while at(text, k).is_ascii_alphabetic() && k - j < 9 {
            k += 1;
        }
        k
    };
    let w = &text[j.min(text.len())..word_end.min(text.len())];
    let is_ext = w.eq_ignore_ascii_case(b"x")
        || w.eq_ignore_ascii_case(b"ext")
        || w.eq_ignore_ascii_case(b"extn")
        || w.eq_ignore_ascii_case(b"extension");
    if !is_ext {
        return end;
    }
    let mut k = word_end;
    if at(text, k) == b'.' {
        k += 1;
    }
    if matches!(at(text, k), b' ' | b':') && w.len() > 1 {
        k += 1;
    }
    let s = k;
    while is_digit(at(text, k)) && k - s < 7 {
        k += 1;
    }
    if k == s || k - s > 6 || !right_ok(text, k) {
        return end;
    }
    k
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
    if !country_code_ok(text, i) {
        return None;
    }
    let mut k = ng;
    while k > 0 {
        let end = extension(text, ends[k - 1]);
        if (8..=15).contains(&counts[k - 1]) && right_ok(text, end) {
            return Some(end);
        }
        k -= 1;
    }
    None
}

/// Whether the digits at `i` begin an assigned country calling code (ITU-T
/// E.164 list): every one-digit zone but 0, and the two-digit codes and
/// three-digit zones in use. Spare codes (`+28…`, `+83…`, `+89…`) are not
/// phone numbers.
fn country_code_ok(text: &[u8], i: usize) -> bool {
    let d = |k: usize| at(text, i + k).wrapping_sub(b'0');
    let (a, b) = (d(0), d(1));
    if a > 9 || b > 9 {
        return matches!(a, 1 | 7);
    }
    match a {
        1 | 7 => true,
        2 => b != 8,
        3 | 4 | 5 | 6 | 9 => true,
        8 => !matches!(b, 3 | 9),
        _ => false,
    }
}

/// `00` international prefix: `0044 20 7946 0958`, `00420 702 069 095`.
/// Written with at least one separator (a bare `00…` run is more often a
/// zero-padded id).
fn intl_00(text: &[u8], i: usize) -> Option<usize> {
    let end = international(text, i + 2)?;
    text[i..end]
        .iter()
        .any(|&c| matches!(c, b' ' | b'-' | b'.' | b'('))
        .then_some(end)
}

/// National numbers with a trunk `0`: `020 7946 0958`, `030 12345678`,
/// `01 23 45 67 89`, `07700-900123`, `08-391 50 00`; 9–11 digits in groups,
/// the area code 2–5 digits; the separator after the area code may differ
/// from the one used after it (`08-170 669 07`), which is then consistent.
pub(super) fn national(text: &[u8], i: usize) -> Option<usize> {
    if !matches!(at(text, i + 1), b'1'..=b'9') {
        return None;
    }
    let area = text[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    if !(2..=5).contains(&area) {
        return None;
    }
    let first = at(text, i + area);
    if !matches!(first, b' ' | b'-' | b'.') || !is_digit(at(text, i + area + 1)) {
        return None;
    }
    let end = subscriber(text, i + area + 1, area)?;
    // `093-00-8255`: the SSN layout is an id (a rejected SSN), not a phone.
    let ssn_shape = end - i == 11
        && area == 3
        && at(text, i + 6) == first
        && (i + 4..i + 6)
            .chain(i + 7..i + 11)
            .all(|k| is_digit(at(text, k)));
    (!ssn_shape).then_some(end)
}

/// `(0161) 4960066`, `(0406)-812415`, `(021) 299 7220`: a trunk-0 area code
/// in parentheses, then the subscriber number; 9–11 digits in all.
fn national_paren(text: &[u8], i: usize) -> Option<usize> {
    if at(text, i + 1) != b'0' || !matches!(at(text, i + 2), b'1'..=b'9') {
        return None;
    }
    let area = text[i + 1..]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    if !(2..=5).contains(&area) || at(text, i + 1 + area) != b')' {
        return None;
    }
    let mut j = i + 2 + area;
    if matches!(at(text, j), b' ' | b'-') {
        j += 1;
    }
    if !is_digit(at(text, j)) {
        return None;
    }
    subscriber(text, j, area)
}

/// The subscriber part at `j` after an area code of `area` digits: groups
/// of 2–8 digits with one consistent separator, 9–11 digits with the area
/// code, then an optional extension.
fn subscriber(text: &[u8], j: usize, area: usize) -> Option<usize> {
    let g = groups(text, j, b" -.", true, 11);
    let mut k = g.len;
    while k >= 1 {
        let digits = area + g.digits(k);
        let end = extension(text, g.end[k - 1]);
        if (9..=11).contains(&digits)
            && (0..k).all(|x| (2..=8).contains(&g.glen(x)))
            && right_ok(text, end)
            && !run_goes_on(text, g.end[k - 1])
        {
            return Some(end);
        }
        k -= 1;
    }
    None
}

/// Whether another digit group follows `end` with a group separator — or
/// a `[kind]` placeholder where one was: redacting the group after a
/// number must not make the number a phone on the next scan (redaction
/// would then peel a run of groups one pass at a time and never settle).
fn run_goes_on(text: &[u8], end: usize) -> bool {
    matches!(at(text, end), b' ' | b'-' | b'.' | b'/')
        && (is_digit(at(text, end + 1)) || text.get(end + 1..).is_some_and(super::placeholder_at))
}

// ---------------------------------------------------------------- context

/// Words that say the number next to them is a phone number, before it
/// (`call me on 3306824628`, `phone: …`, `"mobile": "…"`).
const BEFORE: &[&[u8]] = &[
    b"phone",
    b"phones",
    b"telephone",
    b"tel",
    b"tlf",
    b"telefon",
    b"telefono",
    b"cell",
    b"cellphone",
    b"cellular",
    b"mobile",
    b"mob",
    b"mobil",
    b"handy",
    b"fax",
    b"call",
    b"ring",
    b"dial",
    b"text",
    b"sms",
    b"whatsapp",
    b"reach",
    b"contact",
    b"landline",
    b"hotline",
    b"helpline",
    b"msisdn",
    b"ph",
    b"voicemail",
];

/// Words that say so after it (`3306824628 (mobile)`, `… is my cell`).
const AFTER: &[&[u8]] = &[
    b"phone",
    b"telephone",
    b"tel",
    b"cell",
    b"cellphone",
    b"mobile",
    b"fax",
    b"whatsapp",
    b"landline",
];

/// Words that, between a context word and a number, say the number is
/// something else (`call about ticket 4059763844`, `phone case SKU …`).
const STOP: &[&[u8]] = &[
    b"order",
    b"invoice",
    b"ticket",
    b"case",
    b"ref",
    b"reference",
    b"id",
    b"build",
    b"version",
    b"account",
    b"acct",
    b"po",
    b"tracking",
    b"transaction",
    b"txn",
    b"pin",
    b"code",
    b"zip",
    b"sku",
    b"serial",
    b"item",
    b"amount",
    b"total",
    b"qty",
    b"count",
    b"duration",
    b"times",
    b"ms",
    b"took",
    b"elapsed",
    b"latency",
    b"timeout",
    b"length",
    b"len",
    b"size",
    b"bytes",
    b"ns",
    b"sec",
    b"secs",
    b"seconds",
    b"port",
    b"pid",
    b"uid",
    b"ids",
];

/// Words that, right before a context word, give it another sense
/// (`not phones: …`, `RPC call 1234567890 failed`, `API call …`).
const NEGATING: &[&[u8]] = &[
    b"not",
    b"api",
    b"rpc",
    b"grpc",
    b"http",
    b"function",
    b"method",
    b"syscall",
    b"sdk",
];

/// Calls `f` with each word of `w` (ASCII letters), last first, lower-cased;
/// stops when `f` returns false. An over-long word is passed as `b""`.
fn words_rev(w: &[u8], mut f: impl FnMut(&[u8]) -> bool) {
    let mut e = w.len();
    while e > 0 {
        while e > 0 && !w[e - 1].is_ascii_alphabetic() {
            e -= 1;
        }
        let mut s = e;
        while s > 0 && w[s - 1].is_ascii_alphabetic() {
            s -= 1;
        }
        if s < e {
            let mut buf = [0u8; 12];
            let n = e - s;
            if n <= buf.len() {
                for (k, &c) in w[s..e].iter().enumerate() {
                    buf[k] = c.to_ascii_lowercase();
                }
                if !f(&buf[..n]) {
                    return;
                }
            } else if !f(b"") {
                return;
            }
        }
        e = s;
    }
}

/// A phone context word shortly before `i`, with no digits and no
/// [`STOP`] word between it and the number.
fn context_before(text: &[u8], i: usize) -> bool {
    let w = window_before(text, i, 40);
    // Only the stretch after the last digit counts.
    let w = match w.iter().rposition(u8::is_ascii_digit) {
        Some(d) => &w[d + 1..],
        None => w,
    };
    // 0: looking for a context word; 1: found, checking it is not negated.
    let mut state = 0;
    let mut found = false;
    words_rev(w, |word| {
        if state == 1 {
            // `not phones: 123-456-7890`, `RPC call 1234567890`
            found = !NEGATING.contains(&word);
            return false;
        }
        if BEFORE.contains(&word) {
            found = true;
            state = 1;
            return true;
        }
        !STOP.contains(&word)
    });
    found
}

/// A phone context word among the first four words after `end`, no digits
/// between (`… is my mobile`).
fn context_after(text: &[u8], end: usize) -> bool {
    let w = window_after(text, end, 32);
    let w = match w.iter().position(u8::is_ascii_digit) {
        Some(d) => &w[..d],
        None => w,
    };
    let mut k = 0;
    for _ in 0..4 {
        while k < w.len() && !w[k].is_ascii_alphabetic() {
            k += 1;
        }
        let s = k;
        while k < w.len() && w[k].is_ascii_alphabetic() {
            k += 1;
        }
        if s == k || k - s > 12 {
            return false;
        }
        let mut buf = [0u8; 12];
        for (n, &c) in w[s..k].iter().enumerate() {
            buf[n] = c.to_ascii_lowercase();
        }
        if AFTER.contains(&&buf[..k - s]) {
            return true;
        }
    }
    false
}

/// A bare run of digit groups that the words around it call a phone
/// number: `call me on 3306824628`, `Cell: 8 (338) 421-11-70`,
/// `609 141 777 is my mobile`. 8–15 digits in groups of one separator
/// (` `, `-`, `.`, `/`) each, parenthesised groups allowed, an optional
/// extension; dates (`2024-03-05`, `05.03.2024`) are not phones.
pub(super) fn contextual(text: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    let mut digits = 0;
    let mut lens = [0usize; 8];
    let mut seps = [0u8; 8];
    let mut ng = 0;
    let mut last_end = j;
    loop {
        let paren = at(text, j) == b'(';
        let s = if paren { j + 1 } else { j };
        let mut e = s;
        while is_digit(at(text, e)) && e - s < 16 {
            e += 1;
        }
        if e == s || (paren && at(text, e) != b')') {
            if ng == 0 {
                return None;
            }
            // `… 3779977318 (delivered)`: the run ended before this.
            j = last_end;
            break;
        }
        digits += e - s;
        if digits > 15 || ng == lens.len() {
            return None;
        }
        lens[ng] = e - s;
        ng += 1;
        j = if paren { e + 1 } else { e };
        last_end = j;
        let c = at(text, j);
        let sep_then =
            |k: usize| is_digit(at(text, k)) || (at(text, k) == b'(' && is_digit(at(text, k + 1)));
        if matches!(c, b' ' | b'-' | b'.' | b'/') && sep_then(j + 1) {
            seps[ng - 1] = c;
            j += 1;
        } else if paren && sep_then(j) {
            seps[ng - 1] = b')';
        } else {
            break;
        }
    }
    if !(8..=15).contains(&digits) || is_date(&lens[..ng], &seps[..ng]) {
        return None;
    }
    let end = extension(text, j);
    if !right_ok(text, end) {
        return None;
    }
    (context_before(text, i) || context_after(text, end)).then_some(end)
}

/// `2024-03-05`, `05.03.2024`, `03/05/2024`, `2024 03 05`.
fn is_date(lens: &[usize], seps: &[u8]) -> bool {
    lens.len() == 3
        && seps[0] == seps[1]
        && (matches!(lens, [4, 1 | 2, 1 | 2]) || matches!(lens, [1 | 2, 1 | 2, 4]))
}
