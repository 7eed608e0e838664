//! One test per recognizer: what it must find (exactly) and what it must not.

use ben_blot::{Kind, Scanner};

fn found(text: &str) -> Vec<(String, Kind)> {
    Scanner::new()
        .find(text)
        .unwrap()
        .into_iter()
        .map(|s| (text[s.start..s.end].to_string(), s.kind))
        .collect()
}

#[track_caller]
fn finds(text: &str, value: &str, kind: Kind) {
    let f = found(text);
    assert_eq!(f, vec![(value.to_string(), kind)], "in {text:?}");
}

#[track_caller]
fn nothing(text: &str) {
    assert_eq!(found(text), vec![], "in {text:?}");
}

#[test]
fn email() {
    finds(
        "mail ann.lee+x@example.co.uk.",
        "ann.lee+x@example.co.uk",
        Kind::Email,
    );
    finds(
        "<a href=\"mailto:bob@ex-ample.org\">",
        "bob@ex-ample.org",
        Kind::Email,
    );
    finds(
        "?email=ann%40example.com&x=1",
        "ann%40example.com",
        Kind::Email,
    );
    finds("«zoë: ann@example.com»", "ann@example.com", Kind::Email);
    finds(
        "{\"note\":\"hi\\nann@example.com\"}",
        "ann@example.com",
        Kind::Email,
    );
    nothing("@ann on twitter, user@localhost, a@b.c, x@host.42, foo@-bar.com");
    nothing("git@v1.2, ..@example");
}

#[test]
fn card() {
    finds("card 4111111111111111 ok", "4111111111111111", Kind::Card);
    finds(
        "card 4111 1111 1111 1111.",
        "4111 1111 1111 1111",
        Kind::Card,
    );
    finds("amex 3782-822463-10005;", "3782-822463-10005", Kind::Card);
    finds(
        "\"cc\":\"5500-0000-0000-0004\"",
        "5500-0000-0000-0004",
        Kind::Card,
    );
    finds("pan=6011000990139424&", "6011000990139424", Kind::Card);
    // Luhn failure, wrong issuer digit, glued to letters, decimals, mixed separators.
    nothing("card 4111111111111112 ok");
    nothing("ts 1714567890123 and 9111111111111111");
    nothing("id x4111111111111111 and 3.4111111111111111");
    nothing("4111-1111 1111-1111");
    nothing("sha 0123456789abcdef4111111111111111");
}

#[test]
fn iban() {
    finds(
        "IBAN: DE89370400440532013000.",
        "DE89370400440532013000",
        Kind::Iban,
    );
    finds(
        "to GB82 WEST 1234 5698 7654 32 today",
        "GB82 WEST 1234 5698 7654 32",
        Kind::Iban,
    );
    finds(
        "fr7630006000011234567890189",
        "fr7630006000011234567890189",
        Kind::Iban,
    );
    nothing("IBAN: DE89370400440532013001");
    nothing("XX89370400440532013000 and DE8937040044053201300");
}

#[test]
fn ssn() {
    finds("ssn 123-45-6789,", "123-45-6789", Kind::UsSsn);
    finds("SSN: 123 45 6789", "123 45 6789", Kind::UsSsn);
    finds("\"ssn\": \"123456789\"", "123456789", Kind::UsSsn);
    nothing("000-12-3456 666-12-3456 912-34-5678 123-00-4567 123-45-0000");
    nothing("order 123456789 shipped");
    nothing("2024-01-15 and 123-45-67890");
}

#[test]
fn phone() {
    finds(
        "call +1 (415) 555-2671 now",
        "+1 (415) 555-2671",
        Kind::Phone,
    );
    finds("call (415) 555-2671", "(415) 555-2671", Kind::Phone);
    finds("tel:+14155552671", "+14155552671", Kind::Phone);
    finds("ring 415.555.2671", "415.555.2671", Kind::Phone);
    finds("ring 1-800-555-0199.", "1-800-555-0199", Kind::Phone);
    finds("uk +44 20 7946 0958", "+44 20 7946 0958", Kind::Phone);
    finds("uk +44 (0)20 7946 0958", "+44 (0)20 7946 0958", Kind::Phone);
    finds("uk 020 7946 0958", "020 7946 0958", Kind::Phone);
    finds("fr 01 23 45 67 89", "01 23 45 67 89", Kind::Phone);
    nothing("on 2024-01-15 at 10:30:00, build 1.2.3, 123-456-7890, 555-1234");
    nothing("+12 and 01.02.2024");
}

#[test]
fn ip() {
    finds("from 192.168.1.20:8080", "192.168.1.20", Kind::Ipv4);
    finds("net 10.0.0.0/8", "10.0.0.0", Kind::Ipv4);
    finds(
        "http://[2001:db8::8a2e:370:7334]:443/",
        "2001:db8::8a2e:370:7334",
        Kind::Ipv6,
    );
    finds("lo ::1 up", "::1", Kind::Ipv6);
    finds(
        "v6 fe80::1ff:fe23:4567:890a%eth0",
        "fe80::1ff:fe23:4567:890a",
        Kind::Ipv6,
    );
    finds("m ::ffff:192.0.2.1.", "::ffff:192.0.2.1", Kind::Ipv6);
    finds(
        "full 2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        Kind::Ipv6,
    );
    nothing("version 1.2.3.4.5 and v1.2.3.4, 256.1.1.1, 01.2.3.4");
    nothing("at 10:30:45, mac 00:1a:2b:3c:4d:5e, std::vector, ad:: x");
}

#[test]
fn secrets() {
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abc_DEF-123";
    finds(&format!("tok {jwt} end"), jwt, Kind::Jwt);
    finds(&format!("Authorization: Bearer {jwt}"), jwt, Kind::Jwt);
    finds(
        "Authorization: Bearer 9f8e7d6c5b4a39281706f5e4d3c2b1a0",
        "9f8e7d6c5b4a39281706f5e4d3c2b1a0",
        Kind::BearerToken,
    );
    finds(
        "Authorization: Basic dXNlcjpwYXNzd29yZA==",
        "dXNlcjpwYXNzd29yZA==",
        Kind::BearerToken,
    );
    finds(
        "key AKIAIOSFODNN7EXAMPLE,",
        "AKIAIOSFODNN7EXAMPLE",
        Kind::AwsAccessKey,
    );
    finds(
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        Kind::AwsSecretKey,
    );
    finds(
        "?api_key=a1b2c3d4e5f6g7h8&x",
        "a1b2c3d4e5f6g7h8",
        Kind::BearerToken,
    );
    finds(
        "{\"access_token\": \"Xy7_kk29Lm0pQ\"}",
        "Xy7_kk29Lm0pQ",
        Kind::BearerToken,
    );
    finds(
        "gh ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
        "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
        Kind::BearerToken,
    );
    let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----";
    finds(&format!("key:\n{pem}\nok"), pem, Kind::PrivateKey);
    nothing("a bearer instrument; basic understanding; token=expired; token_type=Bearer");
    nothing("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----");
    nothing("sha1 da39a3ee5e6b4b0d3255bfef95601890afd80709 AKIA1234");
}

#[test]
fn redact_replaces_each_span_with_its_kind() {
    let s = Scanner::new();
    assert_eq!(
        s.redact("mail ann@example.com or call (415) 555-2671")
            .unwrap(),
        "mail [email] or call [phone]"
    );
    assert!(matches!(
        s.redact("nothing here").unwrap(),
        std::borrow::Cow::Borrowed(_)
    ));
}

/// The forms issue 20 saw leak: extensions, international prefixes, bare
/// digits that the words around them call a phone.
#[test]
fn phone_forms_that_leaked() {
    finds(
        "call 240-926-8599x528 today",
        "240-926-8599x528",
        Kind::Phone,
    );
    finds("fax (285)917-8128x657.", "(285)917-8128x657", Kind::Phone);
    finds(
        "desk 415-555-2671 ext. 45",
        "415-555-2671 ext. 45",
        Kind::Phone,
    );
    finds(
        "desk (415) 555-2671 x150!",
        "(415) 555-2671 x150",
        Kind::Phone,
    );
    finds("cell 001-878-469-0736", "001-878-469-0736", Kind::Phone);
    finds("at +1-878-469-0736x12", "+1-878-469-0736x12", Kind::Phone);
    finds("uk +44 115 496 0777", "+44 115 496 0777", Kind::Phone);
    finds("cz 00420 702 069 095", "00420 702 069 095", Kind::Phone);
    finds("call me on 3306824628", "3306824628", Kind::Phone);
    finds("\"mobile\": \"07814739817\"", "07814739817", Kind::Phone);
    finds("Cell: 8 (338) 421-11-70,", "8 (338) 421-11-70", Kind::Phone);
    finds("609 141 777 is my mobile", "609 141 777", Kind::Phone);
    finds("home (0161) 4960066", "(0161) 4960066", Kind::Phone);
    finds("sthlm 08-391 50 00", "08-391 50 00", Kind::Phone);
    finds(
        "Questions? Call us at 2146060546.",
        "2146060546",
        Kind::Phone,
    );
    finds(
        "SMS sent to 3779977318 (delivered)",
        "3779977318",
        Kind::Phone,
    );
}

/// What only looks like a phone stays: ids, order numbers, timestamps,
/// builds, versions, amounts, dates, hashes, even next to phone words.
#[test]
fn phone_lookalikes_stay() {
    nothing("order 3306824628 shipped; user id 8823455612; epoch 1709634151");
    nothing("please call about ticket 4059763844 tomorrow");
    nothing("phone case SKU 59688330728 in stock");
    nothing("api call 12 of 40 returned 1234567");
    nothing("call on 2024-03-05 at 10:22:31, build 20240305.1234, v2.13.4");
    nothing("call took 1234567ms; total USD 12,345,678.90; +28 1234 5678");
    nothing("sha 4bf92f3577b34da6a3ce929d0e0e4736 and 0012345678");
    nothing("phone 12 34");
    nothing("RPC call 1234567890 failed; API call took 12345678 ns");
    nothing("content-type text/plain; length 123456789");
}

/// Cards of 12 to 19 digits across issuer ranges, Luhn-checked.
#[test]
fn card_issuers_and_lengths() {
    finds("maestro 630480746464 ok", "630480746464", Kind::Card);
    finds("maestro 060475851386 ok", "060475851386", Kind::Card);
    finds("maestro 5018 8742 6804 ok", "5018 8742 6804", Kind::Card);
    finds(
        "visa 4437859150310904938",
        "4437859150310904938",
        Kind::Card,
    );
    finds("jcb 180063109707455", "180063109707455", Kind::Card);
    finds("diners 36114307067733", "36114307067733", Kind::Card);
    finds("mir 2202 7922 4637 2076", "2202 7922 4637 2076", Kind::Card);
    finds(
        "card 4111 1111 1111 1111 12/26",
        "4111 1111 1111 1111",
        Kind::Card,
    );
    // 12 digits outside Maestro's ranges, or failing Luhn, are not cards.
    nothing("id 411111111116 and 630480746465");
}

/// Issue 13: a card must start where its run of digit groups starts; the
/// digits of an IBAN with a bad checksum are not a card.
#[test]
fn card_starts_on_a_group_boundary() {
    nothing("IBAN DE89 3704 0044 0532 0130 01 is mistyped");
    nothing("to GB82 WEST 1234 5698 7654 3210 2 today");
    nothing("ref 12 4111 1111 1111 1111");
    finds(
        "VISA 4111 1111 1111 1111",
        "4111 1111 1111 1111",
        Kind::Card,
    );
}

/// The fuzz input of issue 20: a bare nine-digit number after a redacted
/// SSN used to see `[us_ssn]` as its `ssn` label, one more per pass, until
/// redaction gave up. Redaction must reach a fixed point.
#[test]
fn redaction_settles_after_ssn_labels() {
    let raw: &[u8] = b"403-03-8222\x00222222222~112222222\x00112222222~112222222\x00\x00222222222~112222222\xf9112222222\x002";
    let text = String::from_utf8_lossy(raw);
    let s = Scanner::new();
    let out = s.redact(&text).expect("redaction settles");
    assert!(s.find(&out).unwrap().is_empty(), "{out:?}");
    assert_eq!(out.matches("[us_ssn]").count(), 1, "{out:?}");
    // The same chain with a label that really is one: only its own number.
    let out = s
        .redact("ssn: 123456789 222222222 112222222 212222222")
        .unwrap();
    assert_eq!(out, "ssn: [us_ssn] 222222222 112222222 212222222");
    // Context words for phones are cut at placeholders the same way.
    let out = s
        .redact("phone 3306824628, 3306824628, 3306824628")
        .unwrap();
    assert_eq!(out, "phone [phone], 3306824628, 3306824628");
}

/// `text` with the spans of one scan replaced, no re-scan.
fn one_pass(s: &Scanner, text: &str) -> String {
    let mut out = String::new();
    let mut last = 0;
    for sp in s.find(text).unwrap() {
        out.push_str(&text[last..sp.start]);
        out.push_str(sp.kind.placeholder());
        last = sp.end;
    }
    out.push_str(&text[last..]);
    out
}

/// A second fuzz finding (30-minute run of the scan target): a context
/// window that starts inside a placeholder (`_ssn]` of `[us_ssn]`, its `[us`
/// just outside the 24 bytes) saw the label `ssn` on the re-scan only. The
/// window now recognises a placeholder straddling its start, so the first
/// pass already is the fixed point.
#[test]
fn redaction_settles_when_a_placeholder_straddles_the_window() {
    let s = Scanner::new();
    let t = "403-03-8222\u{0}222222222~R017633~112222222";
    assert_eq!(s.redact(t).unwrap(), one_pass(&s, t));
    // Found by the fuzzer: a placeholder at a window's start, a run of
    // dotted groups whose last group is a phone (redacting it must not
    // make the group before it one on the next scan), and sixteen
    // `eyJ…` segments chained by dots (a JWT at the end, then one more
    // before each placeholder, pass after pass).
    for raw in [
        &include_bytes!("data/fuzz-settle-straddle.bin")[..],
        &include_bytes!("data/fuzz-settle-run.bin")[..],
        &include_bytes!("data/fuzz-settle-jwt-chain.bin")[..],
    ] {
        let text = String::from_utf8_lossy(raw);
        let out = s.redact(&text).expect("redaction settles");
        assert!(s.find(&out).unwrap().is_empty());
        assert_eq!(out, one_pass(&s, &text));
    }
    let t = "01.01.01706 01.0667767";
    assert_eq!(s.redact(t).unwrap(), one_pass(&s, t));
    // A JWE-like chain of five segments is one token.
    let t = "tok eyJhbGciOiJSU0EtT0FFUCJ9.eyJzdWIiOiIxMjMifQ.a2V5.aXY.dGFn end";
    assert_eq!(s.redact(t).unwrap(), "tok [jwt] end");
}
