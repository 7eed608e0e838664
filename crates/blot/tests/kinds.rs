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
