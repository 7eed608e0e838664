//! Email addresses, found from their `@` (or URL-encoded `%40`).

use super::{at, span};
use crate::scan::{Kind, Span};

/// Local-part bytes accepted in free text (RFC 5322 dot-atom, common subset).
fn local_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn label_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

/// `at_pos` is the `@` (or `%` of `%40`), `dom` the first domain byte.
///
/// Local part: the run of local bytes left of the `@`, trimmed of leading
/// dots, never across a `\n`-style escape; it must not end with a dot.
/// Domain: two or more dot-separated labels of `[A-Za-z0-9-]`, none starting
/// or ending with `-`, at most 63 bytes each; the last label (TLD) is 2+
/// letters. A trailing sentence dot is not part of it.
pub(super) fn at_sign(text: &[u8], at_pos: usize, dom: usize, floor: &mut usize) -> Option<Span> {
    // Left: the local part, never left of the previous `@`/`%40` (the floor),
    // so the backward walks of all triggers together touch each byte once.
    let lo = *floor;
    *floor = dom;
    let mut s = at_pos;
    while s > lo && local_byte(text[s - 1]) {
        if matches!(text[s - 1], b'n' | b't' | b'r') && s >= 2 && text[s - 2] == b'\\' {
            break;
        }
        s -= 1;
    }
    while s < at_pos && text[s] == b'.' {
        s += 1;
    }
    if s == at_pos || text[at_pos - 1] == b'.' {
        return None;
    }
    if let Some(k) = text[s..at_pos].windows(2).rposition(|w| w == b"..") {
        s += k + 2;
        if s >= at_pos {
            return None;
        }
    }
    // Right: labels. Remember where each valid prefix of labels ends, so a
    // bad last label (`a@b.com.42`) falls back to the longest good domain.
    let mut j = dom;
    let mut labels = 0;
    let mut best_end = None;
    loop {
        let ls = j;
        while label_byte(at(text, j)) && j - ls <= 63 {
            j += 1;
        }
        // A dash right after the address (`a@b.com- next`) is punctuation,
        // not the end of a label: the label stops before it.
        let mut le = j;
        while le > ls && text[le - 1] == b'-' {
            le -= 1;
        }
        let label = &text[ls..le];
        if label.is_empty() || label.len() > 63 || label[0] == b'-' {
            break;
        }
        labels += 1;
        if labels >= 2 {
            let alpha = label.iter().take_while(|b| b.is_ascii_alphabetic()).count();
            if alpha == label.len() && alpha >= 2 {
                best_end = Some(le);
            } else if alpha >= 2 && label[alpha] == b'-' {
                // `a@b.com-0`: a dash glued to the TLD ends the address.
                best_end = Some(ls + alpha);
            }
        }
        if le < j {
            break;
        }
        if at(text, j) == b'.' && label_byte(at(text, j + 1)) {
            j += 1;
            continue;
        }
        break;
    }
    let end = best_end?;
    Some(span(s, end, Kind::Email))
}
