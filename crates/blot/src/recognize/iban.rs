//! IBAN (ISO 13616): country code, two check digits, country-length BBAN,
//! mod-97 = 1. Electronic form or the printed form in groups of four.

use super::{at, is_word};

/// IBAN length per country (SWIFT IBAN registry).
const LENGTHS: &[(&[u8; 2], u8)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BI", 27),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DJ", 27),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FK", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"LY", 25),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MN", 20),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NI", 28),
    (b"NL", 18),
    (b"NO", 15),
    (b"OM", 23),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"RU", 33),
    (b"SA", 24),
    (b"SC", 31),
    (b"SD", 18),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"SO", 23),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
    (b"YE", 30),
];

/// The IBAN length for a country code (either case), if it has IBANs.
pub fn country_length(cc: [u8; 2]) -> Option<usize> {
    let cc = [cc[0].to_ascii_uppercase(), cc[1].to_ascii_uppercase()];
    LENGTHS
        .binary_search_by(|(c, _)| c.as_slice().cmp(cc.as_slice()))
        .ok()
        .map(|k| usize::from(LENGTHS[k].1))
}

/// ISO 7064 MOD 97-10 over an IBAN in electronic form (upper case,
/// no spaces): move the first four characters to the end, letters → 10..35.
pub fn mod97_ok(iban: &[u8]) -> bool {
    if iban.len() < 5 {
        return false;
    }
    let mut r = 0u32;
    for &c in iban[4..].iter().chain(&iban[..4]) {
        r = match c {
            b'0'..=b'9' => (r * 10 + u32::from(c - b'0')) % 97,
            b'A'..=b'Z' => (r * 100 + u32::from(c - b'A' + 10)) % 97,
            _ => return false,
        };
    }
    r == 1
}

/// An IBAN at `i` (two letters and two digits already seen); returns its end.
///
/// The registry length is tried first. A value of another length (15–34
/// characters, upper case, electronic or in groups of four) whose mod-97
/// check still holds is an IBAN too: generators and typists get the length
/// wrong, and a checksum-valid account number is personal data whatever its
/// length (one random string in 97 passes, and the shape itself is rare).
pub(super) fn iban(text: &[u8], i: usize) -> Option<usize> {
    let len = country_length([text[i], text[i + 1]])?;
    registry_length(text, i, len).or_else(|| any_length(text, i))
}

/// The value at `i` read as exactly `len` characters.
fn registry_length(text: &[u8], i: usize, len: usize) -> Option<usize> {
    let grouped = at(text, i + 4) == b' ';
    let mut buf = [0u8; 34];
    let mut n = 0;
    let mut j = i;
    while n < len {
        if grouped && n > 0 && n % 4 == 0 {
            if at(text, j) != b' ' {
                return None;
            }
            j += 1;
        }
        let c = at(text, j);
        if !c.is_ascii_alphanumeric() {
            return None;
        }
        buf[n] = c.to_ascii_uppercase();
        n += 1;
        j += 1;
    }
    if is_word(at(text, j)) {
        return None;
    }
    mod97_ok(&buf[..n]).then_some(j)
}

/// The whole upper-case run at `i` (electronic, or groups of four with one
/// space, the last group 1–4), 15–34 characters, mod-97 = 1.
fn any_length(text: &[u8], i: usize) -> Option<usize> {
    let ok = |c: u8| c.is_ascii_uppercase() || c.is_ascii_digit();
    let grouped = at(text, i + 4) == b' ';
    let mut buf = [0u8; 34];
    let mut n = 0;
    let mut j = i;
    loop {
        let s = j;
        while ok(at(text, j)) && j - s < 35 {
            j += 1;
        }
        let g = j - s;
        if is_word(at(text, j)) || (grouped && (g == 0 || g > 4)) || n + g > 34 {
            // A lower-case tail, an over-long group or run: not this shape.
            if grouped && n >= 15 && s > i {
                j = s - 1;
                break;
            }
            return None;
        }
        buf[n..n + g].copy_from_slice(&text[s..j]);
        n += g;
        if !grouped || g < 4 || at(text, j) != b' ' || !ok(at(text, j + 1)) {
            break;
        }
        j += 1;
    }
    ((15..=34).contains(&n) && mod97_ok(&buf[..n])).then_some(j)
}
