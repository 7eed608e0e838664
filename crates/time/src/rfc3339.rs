//! RFC 3339 timestamps ↔ nanoseconds since the Unix epoch, proleptic
//! Gregorian calendar, by hand (no clock, no locale).
//!
//! Parsing is strict about the calendar — months 1–12, the days each month
//! has (29 February only in leap years), hours 0–23, minutes 0–59 — and
//! takes `T`, `t` or a space between date and time, a fraction of any
//! length (digits past nanoseconds are dropped) and `Z` or `±HH:MM`. A leap
//! second (`:60`) reads as `:59`. Printing is always UTC (`Z`).

const NS: i64 = 1_000_000_000;

/// Parses an RFC 3339 timestamp (`2026-01-01T00:00:00Z`,
/// `2026-01-01T01:00:00.5+01:00`) into nanoseconds since the epoch; the
/// offset is required. `None` for anything else, or a time out of range.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    parse(s, false)
}

/// As [`parse_rfc3339`], but a timestamp without an offset
/// (`2023-11-14 22:13:20`, as flow exports write them) is read as UTC.
pub fn parse_rfc3339_utc_default(s: &str) -> Option<i64> {
    parse(s, true)
}

fn parse(s: &str, utc_default: bool) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo)
        || d == 0
        || d > days_in_month(y, mo)
        || h > 23
        || mi > 59
        || sec > 60
    {
        return None;
    }
    let mut i = 19;
    let mut frac: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &b[start..i];
        if digits.is_empty() {
            return None;
        }
        for k in 0..9 {
            frac = frac * 10 + digits.get(k).map_or(0, |c| i64::from(c - b'0'));
        }
    }
    let offset_s = match b.get(i) {
        None if utc_default => 0,
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&c @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if c == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec.min(59) - offset_s;
    secs.checked_mul(NS)?.checked_add(frac)
}

/// Formats nanoseconds since the epoch as RFC 3339 UTC, with a fraction
/// only when it is non-zero, trailing zeros trimmed
/// (`2026-01-01T00:00:00.25Z`).
pub fn format_rfc3339(ns: i64) -> String {
    let mut s = date_time(ns.div_euclid(NS));
    let frac = ns.rem_euclid(NS);
    if frac != 0 {
        let f = format!("{frac:09}");
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Formats nanoseconds since the epoch as RFC 3339 UTC with exactly three
/// fraction digits, truncated (`2026-01-01T00:00:00.123Z`): columns that
/// line up, for listings.
pub fn format_rfc3339_millis(ns: i64) -> String {
    let mut s = date_time(ns.div_euclid(NS));
    let ms = ns.rem_euclid(NS) / 1_000_000;
    s.push('.');
    push_digits(&mut s, ms / 10);
    s.push((b'0' + (ms % 10) as u8) as char);
    s.push('Z');
    s
}

/// `YYYY-MM-DDTHH:MM:SS` of `secs` since the epoch.
fn date_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    // By hand for the years records carry (the data path formats one
    // timestamp per record); `format!` for the rest.
    if (0..=9999).contains(&y) {
        let mut s = String::with_capacity(30);
        push_digits(&mut s, y / 100);
        push_digits(&mut s, y % 100);
        s.push('-');
        push_digits(&mut s, i64::from(m));
        s.push('-');
        push_digits(&mut s, i64::from(d));
        s.push('T');
        push_digits(&mut s, sod / 3600);
        s.push(':');
        push_digits(&mut s, (sod / 60) % 60);
        s.push(':');
        push_digits(&mut s, sod % 60);
        s
    } else {
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            sod / 3600,
            (sod / 60) % 60,
            sod % 60
        )
    }
}

/// Two decimal digits of `v` (0..=99).
fn push_digits(s: &mut String, v: i64) {
    s.push((b'0' + (v / 10) as u8) as char);
    s.push((b'0' + (v % 10) as u8) as char);
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01 (the inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T2026: i64 = 1_767_225_600 * NS;

    #[test]
    fn parses_utc_offsets_and_fractions() {
        assert_eq!(parse_rfc3339("2026-01-01T00:00:00Z"), Some(T2026));
        assert_eq!(parse_rfc3339("2026-01-01t00:00:00z"), Some(T2026));
        assert_eq!(parse_rfc3339("2026-01-01 00:00:00Z"), Some(T2026));
        assert_eq!(parse_rfc3339("2026-01-01T01:00:00+01:00"), Some(T2026));
        assert_eq!(parse_rfc3339("2025-12-31T23:30:00-00:30"), Some(T2026));
        assert_eq!(
            parse_rfc3339("2026-01-01T00:00:00.25Z"),
            Some(T2026 + NS / 4)
        );
        assert_eq!(
            parse_rfc3339("2026-01-01T00:00:00.000000001Z"),
            Some(T2026 + 1)
        );
        // Digits past nanoseconds are dropped, not rounded.
        assert_eq!(
            parse_rfc3339("2026-01-01T00:00:00.1234567899Z"),
            Some(T2026 + 123_456_789)
        );
        // Before the epoch.
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59.5Z"), Some(-NS / 2));
        // A leap second reads as :59.
        assert_eq!(
            parse_rfc3339("2016-12-31T23:59:60Z"),
            parse_rfc3339("2016-12-31T23:59:59Z")
        );
    }

    #[test]
    fn refuses_dates_that_do_not_exist_and_malformed_text() {
        for bad in [
            "2026-02-31T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-00-01T00:00:00Z",
            "2026-01-00T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:60:00Z",
            "2026-01-01T00:00:61Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00+0100",
            "2026-01-01T00:00:00+24:00",
            "2026-01-01T00:00:00+01:60",
            "2026-01-01T00:00:00Zjunk",
            "+026-01-01T00:00:00Z",
            "2026-1-01T00:00:00Z",
            "2026-01-01X00:00:00Z",
            "yesterday",
            "",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn leap_years() {
        let day = 86_400 * NS;
        for (leap, year) in [(true, 2024), (true, 2000), (false, 1900), (false, 2023)] {
            let feb29 = parse_rfc3339(&format!("{year}-02-29T00:00:00Z"));
            assert_eq!(feb29.is_some(), leap, "{year}");
            let feb28 = parse_rfc3339(&format!("{year}-02-28T00:00:00Z")).unwrap();
            let mar1 = parse_rfc3339(&format!("{year}-03-01T00:00:00Z")).unwrap();
            assert_eq!(mar1 - feb28, if leap { 2 * day } else { day }, "{year}");
        }
        assert_eq!(
            format_rfc3339(parse_rfc3339("2000-02-29T12:00:00Z").unwrap()),
            "2000-02-29T12:00:00Z"
        );
    }

    #[test]
    fn utc_default_reads_a_missing_offset_as_utc_only_there() {
        assert_eq!(
            parse_rfc3339_utc_default("2026-01-01 00:00:00"),
            Some(T2026)
        );
        assert_eq!(
            parse_rfc3339_utc_default("2026-01-01T01:00:00+01:00"),
            Some(T2026)
        );
        assert_eq!(parse_rfc3339_utc_default("2026-02-31 00:00:00"), None);
        assert_eq!(parse_rfc3339_utc_default("2026-01-01 00:00:00 "), None);
        assert_eq!(parse_rfc3339("2026-01-01 00:00:00"), None);
    }

    #[test]
    fn formats_utc() {
        assert_eq!(format_rfc3339(T2026), "2026-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(T2026 + NS / 4), "2026-01-01T00:00:00.25Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(format_rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_millis(1_767_225_600_123_000_000),
            "2026-01-01T00:00:00.123Z"
        );
        assert_eq!(
            format_rfc3339_millis(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            format_rfc3339_millis(T2026 + 7_999_999),
            "2026-01-01T00:00:00.007Z"
        );
    }

    proptest::proptest! {
        /// The hand-written digits agree with `format!` and parse back,
        /// across the whole range (years past 9999 take the `format!` path).
        #[test]
        fn formatted_times_parse_back(ns in proptest::prelude::any::<i64>()) {
            let text = format_rfc3339(ns);
            let secs = ns.div_euclid(NS);
            let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
            let sod = secs.rem_euclid(86_400);
            let head = format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", sod / 3600, (sod / 60) % 60, sod % 60);
            proptest::prop_assert!(text.starts_with(&head), "{} vs {}", text, head);
            let millis = format_rfc3339_millis(ns);
            proptest::prop_assert!(millis.starts_with(&head), "{} vs {}", millis, head);
            if (0..=9999).contains(&y) {
                proptest::prop_assert_eq!(parse_rfc3339(&text), Some(ns));
                proptest::prop_assert_eq!(parse_rfc3339(&millis), Some(ns - ns.rem_euclid(1_000_000)));
            }
        }

        /// Arbitrary text never panics the parser.
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,40}") {
            let _ = parse_rfc3339(&s);
            let _ = parse_rfc3339_utc_default(&s);
        }
    }
}
